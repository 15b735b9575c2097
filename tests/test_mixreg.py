"""Regression mixture: data checks, OLS closed form, recovery, a direct optimiser, derivatives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize

from tests.derivative_checks import DerivativeChecks
from src.estimation import fit_em
from src.models.base import ModelWarning
from src.models.mixreg import MixtureRegressionModel
from src.models.registry import get_model_class
from src.utils.errors import DataError
from src.utils.rng import stream


def two_lines(n: int, seed: int, offset: float = 0.0) -> pd.DataFrame:
    """y = 2 + 3 x1 - x2 (sd 0.3, 40%) or -5 - x1 + 0.5 x2 (sd 0.6), optionally far from 0."""
    rng = stream(seed, "test", 0)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    z = rng.random(n) < 0.4
    y = np.where(z, 2 + 3 * x1 - x2, -5 - x1 + 0.5 * x2) + np.where(z, 0.3, 0.6) * rng.normal(size=n)
    return pd.DataFrame({"x1": x1 + offset, "y": y + offset, "x2": x2})


def build(frame: pd.DataFrame, K: int, **options) -> tuple[MixtureRegressionModel, dict]:
    data, meta = MixtureRegressionModel.prepare_data(frame, {"target": "y", **options})
    model = MixtureRegressionModel(K, **{k: v for k, v in options.items() if k == "sigma_floor"})
    model.setup(meta)
    return model, data


class TestData:
    def test_design_and_names(self):
        """Intercept first, the target removed, names coef[k,name] and sigma[k]."""
        frame = two_lines(20, seed=1)
        model, data = build(frame, 2)
        np.testing.assert_array_equal(data["X"][:, 0], 1.0)
        np.testing.assert_array_equal(data["X"][:, 1:], frame[["x1", "x2"]].to_numpy())
        np.testing.assert_array_equal(data["y"], frame["y"].to_numpy())
        assert model.meta["predictors"] == ["intercept", "x1", "x2"]
        assert model.reported_names() == [
            "weight[1]", "weight[2]", "coef[1,intercept]", "coef[1,x1]", "coef[1,x2]",
            "coef[2,intercept]", "coef[2,x1]", "coef[2,x2]", "sigma[1]", "sigma[2]"]
        model, data = build(frame, 1, intercept=False)
        assert data["X"].shape == (20, 2) and model.free_names() == ["coef[1,x1]", "coef[1,x2]", "sigma[1]"]
        assert get_model_class("mixreg") is MixtureRegressionModel

    def test_unusable_data_is_one_sentence(self):
        """Target missing or unknown, text, missing values, constant or collinear predictors."""
        frame = two_lines(10, seed=2)
        with pytest.raises(DataError, match="--target"):
            MixtureRegressionModel.prepare_data(frame, {})
        with pytest.raises(DataError, match="'income' is not a selected column"):
            MixtureRegressionModel.prepare_data(frame, {"target": "income"})
        bad = frame.astype(object)
        bad.loc[3, "x2"] = "abc"
        with pytest.raises(DataError, match="non-numeric"):
            MixtureRegressionModel.prepare_data(bad, {"target": "y"})
        holes = frame.copy()
        holes.loc[[2, 5], "x1"] = np.nan
        with pytest.raises(DataError, match="2 rows"):
            MixtureRegressionModel.prepare_data(holes, {"target": "y"})
        data, _ = MixtureRegressionModel.prepare_data(holes, {"target": "y", "drop_missing": True})
        assert data["X"].shape == (8, 3)
        with pytest.raises(DataError, match="'c' is constant"):
            MixtureRegressionModel.prepare_data(frame.assign(c=4.0), {"target": "y"})
        with pytest.raises(DataError, match="linearly dependent"):
            MixtureRegressionModel.prepare_data(frame.assign(s=frame.x1 + frame.x2), {"target": "y"})


class TestClosedForms:
    @pytest.mark.parametrize("offset", [0.0, 1e6])
    def test_one_class_is_ordinary_least_squares(self, offset):
        """K = 1: coef = OLS (numpy lstsq), sigma = sqrt(RSS / n), loglik in closed form."""
        frame = two_lines(300, seed=3, offset=offset)
        model, data = build(frame, 1)
        fit = fit_em(model, data, n_starts=1, tol=1e-12, seed=0)
        X, y = data["X"], data["y"]
        Xc = X - np.r_[0.0, X[:, 1:].mean(axis=0)]          # OLS on a centred design
        b = np.linalg.lstsq(Xc, y, rcond=None)[0]
        b[0] -= X[:, 1:].mean(axis=0) @ b[1:]
        rss = float(np.sum((y - X @ b) ** 2))
        np.testing.assert_allclose(fit.params["coef"][0], b, rtol=1e-9)
        sigma = np.sqrt(rss / y.size)
        assert fit.params["sigma"][0] == pytest.approx(sigma, rel=1e-8)
        assert fit.loglik == pytest.approx(-0.5 * y.size * (np.log(2 * np.pi * sigma ** 2) + 1), rel=1e-10)

    def test_two_separated_lines_are_recovered(self):
        """Two lines: estimates within 4 standard errors of the truth, canonical order."""
        model, data = build(two_lines(2000, seed=4), 2)
        fit = fit_em(model, data, n_starts=5, tol=1e-10, seed=1)
        p = fit.params
        np.testing.assert_allclose(p["coef"], [[-5, -1, 0.5], [2, 3, -1]], atol=4 * 0.6 / np.sqrt(1200) * 1.5)
        np.testing.assert_allclose(p["sigma"], [0.6, 0.3], atol=0.05)
        np.testing.assert_allclose(p["weight"], [0.6, 0.4], atol=4 * np.sqrt(0.24 / 2000))

    def test_estimate_is_a_maximum_of_the_observed_loglik(self):
        """Nelder-Mead on the observed loglik, started off the EM estimate, climbs to the same top."""
        model, data = build(two_lines(400, seed=5), 2)
        fit = fit_em(model, data, n_starts=4, tol=1e-12, seed=2)
        theta = model.to_free(fit.params)

        def negll(t):
            par = model.from_free(t)
            if not model.in_parameter_space(par):
                return np.inf
            return -model.loglik(data, par)

        res = minimize(negll, theta + 0.01, method="Nelder-Mead",
                       options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 4000})
        assert res.success
        assert -res.fun == pytest.approx(fit.loglik, rel=1e-9)
        assert -res.fun <= fit.loglik + 1e-10 * abs(fit.loglik)
        resp, _ = model.e_step(data, fit.params)        # observed score is zero at the MLE
        grad = np.einsum("nk,nkp->p", resp, model.complete_score(data, fit.params))
        assert np.max(np.abs(grad)) < 1e-3

    def test_em_never_lowers_the_loglik(self):
        """Plain EM iterations of a three-line mixture from a random start never lower the log-likelihood."""
        model, data = build(two_lines(500, seed=6), 3)
        params = model.init_params(data, stream(0, "start", 0))
        prev = -np.inf
        for _ in range(150):
            stats, ll = model.e_step_stats(data, params)
            assert ll >= prev - 1e-10 * abs(ll)
            prev = ll
            params = model.m_step(stats)

    def test_sigma_floor_warns_and_holds(self):
        """A component fitted exactly by 3 rows stops at the floor with a warning naming it."""
        model, data = build(two_lines(50, seed=7), 2, sigma_floor=0.01)
        resp = np.zeros((50, 2))
        resp[:, 0] = 1.0
        resp[:3] = [[0.0, 1.0]] * 3
        with pytest.warns(ModelWarning, match="component 2 collapsed to the floor 0.01"):
            params = model.m_step(model.suff_stats(data, resp))
        assert params["sigma"][1] == 0.01 and params["sigma"][0] > 0.01

    def test_sample_keeps_predictors(self):
        """Simulation keeps the predictors and draws residuals with the model's mean 0 and sigma."""
        model, data = build(two_lines(20000, seed=8), 1)
        params = {"weight": np.array([1.0]), "coef": np.array([[1.0, 2.0, -1.0]]), "sigma": np.array([0.5])}
        new = model.sample(params, data, stream(0, "bootstrap", 1))
        np.testing.assert_array_equal(new["X"], data["X"])
        resid = new["y"] - data["X"] @ params["coef"][0]
        assert abs(resid.std() - 0.5) < 4 * 0.5 / np.sqrt(2 * 20000)
        assert abs(resid.mean()) < 4 * 0.5 / np.sqrt(20000)


class TestStarts:
    def test_start_features_are_predictors_and_target_standardised(self):
        """The data-driven starts cluster the predictors (no intercept) and the target as z-scores."""
        frame = two_lines(60, seed=3)
        model, data = build(frame, 2)
        F = model.start_features(data)
        raw = frame[["x1", "x2", "y"]].to_numpy()
        np.testing.assert_allclose(F, (raw - raw.mean(axis=0)) / raw.std(axis=0), rtol=1e-12)

    def test_candidate_search_recovers_the_two_lines(self):
        """The candidate search (12 candidates, 3 final starts) recovers both lines' coefficients, replicated and unflagged."""
        model, data = build(two_lines(2000, seed=4), 2)
        fit = fit_em(model, data, seed=2, n_starts=3, n_candidates=12)
        np.testing.assert_allclose(fit.params["coef"], [[-5, -1, 0.5], [2, 3, -1]], atol=0.1)
        assert fit.flags == {} and fit.replication["replicated"]


class TestDerivatives(DerivativeChecks):
    def _setup(self):
        model, data = build(two_lines(40, seed=9), 3)
        params = {"weight": np.array([0.5, 0.3, 0.2]),
                  "coef": np.array([[1.0, 2.0, -0.5], [-2.0, 0.5, 1.0], [0.3, -1.0, 0.2]]),
                  "sigma": np.array([1.5, 0.8, 2.0])}
        return model, data, params

    def test_canonical_order_sorts_first_coefficient(self):
        """Classes sort by increasing first coefficient (the intercept)."""
        model, _, params = self._setup()
        order = model.canonical_order(params)
        assert order.tolist() == [1, 2, 0]
        assert model.permute(params, order)["coef"][:, 0].tolist() == [-2.0, 0.3, 1.0]
