"""The worked user-defined model (docs/models.md): loading, likelihood, generic EM fit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from src.estimation import fit_em
from src.models.base import MixtureModel
from src.models.registry import get_model_class, model_source_hash
from src.utils.errors import DataError
from src.utils.rng import stream

SPEC = "examples/user_models/exponential_mixture.py:ExponentialMixture"


def load(n_components: int, x: np.ndarray) -> tuple[MixtureModel, dict]:
    cls = get_model_class(SPEC)
    data, meta = cls.prepare_data(pd.DataFrame({"t": x}), {})
    model = cls(n_components)
    model.setup(meta)
    return model, data


def draws(n: int, seed: int) -> np.ndarray:
    """70% rate 2, 30% rate 0.2 (mean 0.5 and 5)."""
    rng = stream(seed, "test", 0)
    z = rng.random(n) < 0.7
    return np.where(z, rng.exponential(0.5, n), rng.exponential(5.0, n))


def test_registry_loads_the_file():
    """``file.py:Class`` resolves to a MixtureModel subclass; its source is fingerprinted."""
    cls = get_model_class(SPEC)
    assert issubclass(cls, MixtureModel) and cls.__name__ == "ExponentialMixture"
    assert not cls.has_closed_form_m_step
    assert len(model_source_hash(SPEC)) == 64


def test_log_joint_is_the_exponential_density():
    """log_joint = log weight + scipy's exponential log-density."""
    x = draws(50, seed=1)
    model, data = load(2, x)
    params = {"weight": np.array([0.3, 0.7]), "rate": np.array([0.2, 2.0])}
    expected = np.log(params["weight"]) + stats.expon.logpdf(x[:, None], scale=1 / params["rate"])
    np.testing.assert_allclose(model.log_joint(data, params), expected, rtol=1e-13)
    assert model.reported_names() == ["weight[1]", "weight[2]", "rate[1]", "rate[2]"]


def test_bad_data_is_one_sentence():
    cls = get_model_class(SPEC)
    with pytest.raises(DataError, match="not positive"):
        cls.prepare_data(pd.DataFrame({"t": [1.0, -2.0, 3.0]}), {})
    with pytest.raises(DataError, match="exactly one column"):
        cls.prepare_data(pd.DataFrame({"a": [1.0], "b": [2.0]}), {})


def test_one_class_fit_is_the_closed_form():
    """K = 1 by the engine's generic M-step: rate = 1 / mean, loglik = n (log rate - 1)."""
    x = draws(400, seed=2)
    model, data = load(1, x)
    fit = fit_em(model, data, n_starts=2, tol=1e-12, seed=3)
    rate = 1.0 / x.mean()
    assert fit.params["rate"][0] == pytest.approx(rate, rel=1e-6)
    assert fit.loglik == pytest.approx(x.size * (np.log(rate) - 1.0), rel=1e-10)


def test_two_class_fit_recovers_the_rates():
    """K = 2: the generic EM finds the two rates and beats the one-class fit."""
    x = draws(3000, seed=4)
    model, data = load(2, x)
    fit = fit_em(model, data, n_starts=3, n_candidates=6, tol=1e-9, seed=5, max_iter=500)
    assert fit.params["weight"][0] >= fit.params["weight"][1]       # canonical order
    np.testing.assert_allclose(fit.params["rate"], [2.0, 0.2], rtol=0.2)
    np.testing.assert_allclose(fit.params["weight"], [0.7, 0.3], atol=0.08)
    truth = {"weight": np.array([0.7, 0.3]), "rate": np.array([2.0, 0.2])}
    assert fit.loglik >= model.loglik(data, truth)


def test_sample_keeps_the_row_count():
    model, data = load(2, draws(10000, seed=6))
    params = {"weight": np.array([1.0, 0.0]), "rate": np.array([4.0, 1.0])}
    new = model.sample(params, data, stream(0, "bootstrap", 0))
    assert new["x"].shape == data["x"].shape
    assert new["x"].mean() == pytest.approx(0.25, rel=4 / np.sqrt(10000))


def test_python_api_fits_the_file_model():
    """``src.api.fit`` with the ``file.py:Class`` spec gives the same closed form."""
    from src.api import fit

    x = draws(300, seed=7)
    res = fit(pd.DataFrame({"t": x}), SPEC, 1, n_starts=1, tol=1e-12)
    assert res.estimates.loc["rate[1]", "estimate"] == pytest.approx(1.0 / x.mean(), rel=1e-6)
