"""Tests of the notebook API: fit() on arrays and frames, results object, predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import multivariate_normal, poisson

from src.api import MixtureResults, fit
from src.utils.rng import stream
from tests.test_em import PoissonMixture

FAITHFUL = Path(__file__).resolve().parents[1] / "src" / "data" / "builtin" / "faithful.csv"


class FramePoisson(PoissonMixture):
    """The test Poisson mixture, readable from a one-column data frame (a user model)."""

    @classmethod
    def prepare_data(cls, frame, options):
        return {"y": frame.iloc[:, 0].to_numpy(dtype=float)}, {"column": str(frame.columns[0])}


@pytest.fixture(scope="module")
def faithful_fit() -> tuple[pd.DataFrame, MixtureResults]:
    df = pd.read_csv(FAITHFUL)
    return df, fit(df, "gmm", 2, n_starts=3)


class TestFitGmm:
    def test_faithful_published_loglik(self, faithful_fit):
        """Old Faithful, 2 full-covariance components: mclust's log-likelihood -1130.264."""
        _, res = faithful_fit
        assert res.converged
        assert res.loglik == pytest.approx(-1130.264, abs=1e-3)
        assert res.bic == pytest.approx(-2 * res.loglik + 11 * np.log(272))
        assert res.aic == pytest.approx(-2 * res.loglik + 22)

    def test_loglik_and_probabilities_by_scipy(self, faithful_fit):
        """The log-likelihood and predict_proba equal a direct scipy computation."""
        df, res = faithful_fit
        X = df.to_numpy(dtype=float)
        p = res.params
        dens = np.column_stack([p["weight"][k] * multivariate_normal(p["mean"][k], p["cov"][k]).pdf(X)
                                for k in range(2)])
        assert res.loglik == pytest.approx(np.log(dens.sum(axis=1)).sum(), rel=1e-10)
        np.testing.assert_allclose(res.predict_proba(), dens / dens.sum(axis=1, keepdims=True),
                                   rtol=1e-8, atol=1e-12)
        np.testing.assert_array_equal(res.predict(), np.argmax(dens, axis=1))

    def test_estimates_frame(self, faithful_fit):
        """estimates is indexed by the model's reported names and holds the parameter values."""
        _, res = faithful_fit
        est = res.estimates
        assert list(est.index) == res.model.reported_names() and list(est.columns) == ["estimate"]
        assert est.loc["weight[1]", "estimate"] + est.loc["weight[2]", "estimate"] == pytest.approx(1)
        assert est.loc["mean[1,1]", "estimate"] == res.params["mean"][0, 0]
        assert res.params["mean"][0, 0] < res.params["mean"][1, 0]  # canonical order

    def test_new_data_and_array_input(self, faithful_fit):
        """predict_proba on new rows equals the training rows' values; arrays work like frames."""
        df, res = faithful_fit
        np.testing.assert_allclose(res.predict_proba(df.iloc[:10]), res.predict_proba()[:10],
                                   rtol=1e-12)
        with pytest.raises(ValueError, match="not in the data"):
            res.predict_proba(df.rename(columns={"waiting": "w"}))
        arr = fit(df.to_numpy(), "gmm", 2, n_starts=3)
        assert arr.loglik == pytest.approx(res.loglik, rel=1e-9)
        assert arr.model.columns == ["x1", "x2"]

    def test_columns_and_model_options(self):
        """columns selects columns; model options reach the model (diagonal covariances)."""
        df = pd.read_csv(FAITHFUL).assign(noise=lambda d: np.arange(len(d)) % 7)
        res = fit(df, "gmm", 2, columns=["eruptions", "waiting"], covariance="diag", n_starts=2)
        assert res.params["cov"].shape == (2, 2)
        assert res.model.n_free_parameters() == 1 + 4 + 4
        with pytest.raises(ValueError, match="not in the data"):
            fit(df, "gmm", 2, columns=["nope"])

    def test_summary_and_standard_errors(self, faithful_fit):
        """summary() reports the fit; Louis standard errors agree with the numerical Hessian."""
        _, res = faithful_fit
        louis = res.standard_errors("louis")
        numeric = res.standard_errors("numerical")
        np.testing.assert_allclose(louis["se"], numeric["se"], rtol=1e-3)
        text = res.summary()
        assert "Log-likelihood: -1130.26" in text and "cov[2,2,2]" in text and " se" in text


class TestOtherModels:
    def test_user_model_class_one_class_is_sample_mean(self):
        """A user's MixtureModel subclass works from the API; one class gives the sample mean."""
        y = stream(4, "test-data", 5).poisson(3.0, 500)
        res = fit(pd.DataFrame({"count": y}), FramePoisson, 1, n_starts=1)
        assert res.params["rate"][0] == pytest.approx(y.mean(), rel=1e-12)
        assert res.loglik == pytest.approx(poisson(y.mean()).logpmf(y).sum(), rel=1e-12)

    def test_mixreg_one_class_is_ols(self):
        """mixreg with one class and a target gives the least-squares coefficients."""
        rng = stream(5, "test-data", 6)
        x = rng.normal(size=300)
        df = pd.DataFrame({"x": x, "y": 1.0 + 2.0 * x + rng.normal(scale=0.5, size=300)})
        res = fit(df, "mixreg", 1, target="y", n_starts=1)
        ols = np.linalg.lstsq(np.column_stack([np.ones(300), x]), df["y"].to_numpy(), rcond=None)[0]
        np.testing.assert_allclose(res.params["coef"][0], ols, rtol=1e-8)

    def test_lca_from_text_frame(self):
        """lca reads a frame of codes; class probabilities sum to one per row."""
        rng = stream(6, "test-data", 7)
        z = rng.random(400) < 0.5
        items = {f"q{j}": np.where(rng.random(400) < np.where(z, 0.85, 0.2), "yes", "no")
                 for j in range(5)}
        res = fit(pd.DataFrame(items), "lca", 2, n_starts=3)
        proba = res.predict_proba()
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
        assert res.converged and res.estimates.shape[0] == len(res.model.reported_names())
