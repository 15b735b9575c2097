"""The generic numerical M-step (src/estimation/numeric_mstep.py): the maximiser of Q to
~1e-12 (Newton polish after L-BFGS-B), the same point for weighted rows and the rows they
stand for, separable and coupled classes, and never a lower Q than the start's."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp

from src.estimation.numeric_mstep import _maximise_q, _Objective, generic_em_map
from src.models.base import MixtureModel, ParamSpec
from src.utils.rng import stream
from tests.test_em import GaussND


class CoupledVariances(MixtureModel):
    """Two 1-D normals whose variances are coupled: class k's is v_k^1.5 v_l^0.5 (l the
    other class), so column k of log_joint depends on both classes' ``var``; the map from
    (v_1, v_2) to the variances is one to one, so Q's maximiser has them equal to the
    responsibility-weighted variances."""

    name = "coupled_test"

    def param_specs(self):
        return [ParamSpec("weight", (), "simplex"), ParamSpec("mean", ()),
                ParamSpec("var", (), "positive")]

    @staticmethod
    def variances(params):
        v = np.asarray(params["var"], dtype=float)
        return v ** 1.5 * v[::-1] ** 0.5

    def log_joint(self, data, params):
        x = data["x"][:, None]
        s2 = self.variances(params)[None, :]
        return (np.log(params["weight"])[None, :] - 0.5 * np.log(2 * np.pi * s2)
                - 0.5 * (x - params["mean"][None, :]) ** 2 / s2)


def _responsibilities(model, data, params, w=None):
    lj = model.log_joint(data, params)
    r = np.exp(lj - logsumexp(lj, axis=1)[:, None])
    return r if w is None else r * w[:, None]


def _weighted_moments(X, r):
    """Closed-form maximiser of a Gaussian Q: weighted means and covariances."""
    nk = r.sum(axis=0)
    mean = (r.T @ X) / nk[:, None]
    cov = np.stack([((X - mean[k]) * r[:, k, None]).T @ (X - mean[k]) / nk[k]
                    for k in range(nk.size)])
    return mean, cov


@pytest.fixture(scope="module")
def gauss():
    """A 2-D, 3-class Gaussian mixture written as a user model, its rows and a start."""
    rng = stream(51, "test-data")
    n = 600
    z = rng.integers(0, 3, n)
    X = np.array([[0.0, 0.0], [4.0, 1.0], [1.0, 5.0]])[z] + rng.normal(size=(n, 2)) * [1.0, 0.5]
    model = GaussND(3, dim=2)
    start = {"weight": np.array([0.3, 0.3, 0.4]),
             "mean": np.array([[0.5, 0.5], [3.0, 1.5], [1.5, 4.0]]),
             "cov": np.stack([np.eye(2)] * 3)}
    return model, X, start


def _mstep(model, data, params, w=None):
    """One generic M-step from ``params`` (responsibilities at ``params``)."""
    resp = _responsibilities(model, data, params, w)
    total = resp.shape[0] if w is None else float(w.sum())
    weights = resp.sum(axis=0) / total
    u0 = model.parameterisation().to_unconstrained(params)
    return _maximise_q(model, data, resp, weights, u0, w)


@pytest.mark.parametrize("weighted", [False, True])
def test_gaussian_m_step_is_the_closed_form_to_1e_11(gauss, weighted):
    """The numerical M-step of a Gaussian user model equals the weighted means and covariances to 1e-11 relative."""
    model, X, start = gauss
    w = stream(52, "test-weights").uniform(0.2, 3.0, X.shape[0]) if weighted else None
    got = _mstep(model, {"X": X}, start, w)
    mean, cov = _weighted_moments(X, _responsibilities(model, {"X": X}, start, w))
    np.testing.assert_allclose(got["mean"], mean, rtol=0, atol=1e-11 * np.abs(mean).max())
    np.testing.assert_allclose(got["cov"], cov, rtol=1e-11, atol=1e-11 * np.abs(cov).max())


def test_coupled_classes_are_not_separable_and_still_exact():
    """Columns that depend on another class's parameters are detected, and the M-step still reaches the closed-form variances to 1e-11."""
    rng = stream(53, "test-data")
    x = np.r_[rng.normal(0.0, 1.0, 300), rng.normal(4.0, 2.0, 200)]
    model = CoupledVariances(2)
    start = {"weight": np.array([0.5, 0.5]), "mean": np.array([0.5, 3.0]),
             "var": np.array([1.0, 1.5])}
    data = {"x": x}
    resp = _responsibilities(model, data, start)
    obj = _Objective(model, data, resp, resp.mean(axis=0), float(x.size))
    u0 = model.parameterisation().to_unconstrained(start)
    assert not obj.separable(u0, 1e-3 * np.maximum(np.abs(u0), 1.0))
    got = _mstep(model, data, start)
    nk = resp.sum(axis=0)
    mean = resp.T @ x / nk
    var = np.einsum("nk,nk->k", resp, (x[:, None] - mean) ** 2) / nk
    np.testing.assert_allclose(got["mean"], mean, rtol=1e-11)
    np.testing.assert_allclose(CoupledVariances.variances(got), var, rtol=1e-11)


def test_separable_model_is_detected(gauss):
    """A model whose column k depends on class k's parameters only is found separable (one difference per entry of a class)."""
    model, X, start = gauss
    resp = _responsibilities(model, {"X": X}, start)
    obj = _Objective(model, {"X": X}, resp, resp.mean(axis=0), float(X.shape[0]))
    u0 = model.parameterisation().to_unconstrained(start)
    assert obj.separable(u0, 1e-3 * np.maximum(np.abs(u0), 1.0))
    obj.set_groups(True)
    assert len(obj.groups) == u0.size // 3


@pytest.mark.parametrize("which", ["gauss", "coupled"])
def test_integer_weights_give_the_replicated_m_step_to_1e_12(gauss, which):
    """One EM map of integer-weighted rows equals that of the replicated rows to 1e-12 relative (separable and coupled models)."""
    if which == "gauss":
        model, X, start = gauss
        data = {"X": X}
    else:
        rng = stream(54, "test-data")
        model = CoupledVariances(2)
        data = {"x": np.r_[rng.normal(0.0, 1.0, 150), rng.normal(4.0, 2.0, 100)]}
        start = {"weight": np.array([0.5, 0.5]), "mean": np.array([0.5, 3.0]),
                 "var": np.array([1.0, 1.5])}
    n = next(iter(data.values())).shape[0]
    w = stream(55, "test-weights").integers(1, 5, n)
    replicated = {k: np.repeat(v, w, axis=0) for k, v in data.items()}
    got, ll_w = generic_em_map(model, data, start, weights=w.astype(float))
    want, ll_r = generic_em_map(model, replicated, start)
    assert ll_w == pytest.approx(ll_r, rel=1e-13)
    for key in want:
        scale = np.abs(want[key]).max()
        np.testing.assert_allclose(got[key], want[key], rtol=1e-12, atol=1e-12 * scale, err_msg=key)


def test_q_never_falls_and_a_maximiser_stays_put(gauss):
    """From the maximiser of Q the M-step returns it to 1e-12 and Q does not fall; from a poor start Q rises."""
    model, X, start = gauss
    data = {"X": X}
    resp = _responsibilities(model, data, start)
    weights = resp.mean(axis=0)
    free = model.parameterisation()
    obj = _Objective(model, data, resp, weights, float(X.shape[0]))
    u0 = free.to_unconstrained(start)
    first = _maximise_q(model, data, resp, weights, u0)
    u1 = free.to_unconstrained(first)
    assert obj.value(u1) < obj.value(u0)
    again = _maximise_q(model, data, resp, weights, u1)
    assert obj.value(free.to_unconstrained(again)) <= obj.value(u1)
    np.testing.assert_allclose(again["cov"], first["cov"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(again["mean"], first["mean"], rtol=0, atol=1e-12 * np.abs(first["mean"]).max())
