"""Numerical-Hessian standard errors, and Louis against them on every built-in model."""

from __future__ import annotations

import numpy as np
import pytest

from src.estimation.em import fit_em
from src.inference.louis import louis_se
from src.inference.numerical import numerical_hessian, numerical_se
from src.models.gmm import GaussianMixtureModel
from src.models.lca import LatentClassModel
from src.models.mixreg import MixtureRegressionModel
from src.utils.rng import stream
from tests.test_louis import Gauss1D, Gauss1DNumeric, fitted_1d


def _rel(a, b):
    return float(np.max(np.abs(a - b) / np.abs(b)))


def gmm_case(covariance):
    rng = stream(21, "test-data")
    X = np.vstack([rng.multivariate_normal([0.0, 0.0], [[1.0, 0.4], [0.4, 0.8]], 260),
                   rng.multivariate_normal([2.5, 1.5], [[0.6, -0.2], [-0.2, 1.2]], 190)])
    X = X * np.array([1.0, 100.0]) + np.array([0.0, 5000.0])  # far from zero, unequal scales
    model = GaussianMixtureModel(2, covariance=covariance, reg_covar=0.0)
    model.setup(GaussianMixtureModel.meta_for_array(X))
    return model, {"X": X}


def lca_case():
    rng = stream(22, "test-data")
    n, K = 900, 2
    probs = [np.array([[0.8, 0.2], [0.25, 0.75]]) for _ in range(5)]
    probs.append(np.array([[0.6, 0.3, 0.1], [0.2, 0.3, 0.5]]))
    z = (rng.random(n) < 0.4).astype(int)
    Y = np.column_stack([[rng.choice(p.shape[1], p=p[k]) for k in z] for p in probs])
    Y[rng.random(Y.shape) < 0.05] = -1  # some missing answers
    Y[(Y < 0).all(axis=1), 0] = 0
    model = LatentClassModel(K)
    model.setup(LatentClassModel.meta_from_array(Y))
    return model, {"Y": Y.astype(np.int64)}


def mixreg_case():
    rng = stream(23, "test-data")
    n = 500
    x = rng.normal(10.0, 2.0, n)
    z = rng.random(n) < 0.45
    y = np.where(z, 1.0 + 2.0 * x, 8.0 - 0.5 * x) + rng.normal(0, np.where(z, 1.0, 0.7))
    X = np.column_stack([np.ones(n), x])
    meta = {"predictors": ["intercept", "x"], "target": "y", "intercept": True}
    meta.update(MixtureRegressionModel.shifts_of(X, y, True))
    model = MixtureRegressionModel(2)
    model.setup(meta)
    return model, {"X": X, "y": y}


CASES = {"gmm-full": lambda: gmm_case("full"), "gmm-diag": lambda: gmm_case("diag"),
         "gmm-spherical": lambda: gmm_case("spherical"), "lca": lca_case, "mixreg": mixreg_case}

#: Louis (analytic) against central differences of the analytic observed score: Louis'
#: identity holds at any point, so they differ only by the differences' error, O(eps^(2/3)).
#: Largest relative SE difference reached (numpy 2.4, scipy 1.17): gmm-full 2.8e-10,
#: gmm-diag 2.3e-10, gmm-spherical 1.7e-10, lca 2.5e-10, mixreg 8.9e-11; 1e-8 leaves 35x.
AGREEMENT_RTOL = {"gmm-full": 1e-8, "gmm-diag": 1e-8, "gmm-spherical": 1e-8, "lca": 1e-8,
                  "mixreg": 1e-8}


class TestLouisAgainstNumerical:
    @pytest.mark.parametrize("case", sorted(CASES))
    def test_builtin_models_agree(self, case):
        """Louis and the numerical Hessian agree to 1e-8 relative (analytic derivatives on both sides)."""
        model, data = CASES[case]()
        fit = fit_em(model, data, n_starts=3, tol=1e-10, max_iter=20000, seed=1)
        assert fit.converged
        a = louis_se(model, data, fit.params, chunk_size=128)
        b = numerical_se(model, data, fit.params)
        assert not a.notes and not b.notes
        positive = a.se > 0
        assert positive.sum() >= model.n_free_parameters()
        assert _rel(a.se[positive], b.se[positive]) < AGREEMENT_RTOL[case]
        assert 0.0 < a.extra["max_fraction_missing_info"] < 1.0


class TestClosedForms:
    def test_one_class_gaussian(self):
        """One full-covariance class: SE(mean_j)=sqrt(s_jj/n), SE(s_ij)=sqrt((s_ij^2+s_ii s_jj)/n)."""
        X = stream(24, "test-data").multivariate_normal(
            [1.0, -2.0, 3.0], [[2.0, 0.6, 0.1], [0.6, 0.5, 0.0], [0.1, 0.0, 1.0]], 400)
        n = X.shape[0]
        model = GaussianMixtureModel(1, covariance="full", reg_covar=0.0)
        model.setup(GaussianMixtureModel.meta_for_array(X))
        S = np.cov(X.T, bias=True)
        params = {"weight": np.array([1.0]), "mean": X.mean(0)[None], "cov": S[None]}
        expect = {"weight[1]": 0.0}
        for j in range(3):
            expect[f"mean[1,x{j + 1}]"] = np.sqrt(S[j, j] / n)
            for i in range(j + 1):
                expect[f"cov[1,x{i + 1},x{j + 1}]"] = np.sqrt((S[i, j] ** 2 + S[i, i] * S[j, j]) / n)
        for fn in (louis_se, numerical_se):
            res = fn(model, {"X": X}, params)
            got = dict(zip(res.names, res.se))
            assert set(got) == set(expect)
            for name, value in expect.items():
                assert got[name] == pytest.approx(value, rel=1e-6, abs=1e-14), (fn.__name__, name)

    def test_one_class_regression_is_ols(self):
        """One-class regression: coefficient SEs are OLS's sigma_ml^2 (X'X)^-1; sigma's is sigma/sqrt(2n)."""
        model, data = mixreg_case()
        one = MixtureRegressionModel(1)
        one.setup(model.meta)
        X, y = data["X"], data["y"]
        beta = np.linalg.lstsq(X, y, rcond=None)[0]
        s2 = np.mean((y - X @ beta) ** 2)
        params = {"weight": np.array([1.0]), "coef": beta[None], "sigma": np.array([np.sqrt(s2)])}
        res = louis_se(one, data, params)
        expect = np.concatenate([[0.0], np.sqrt(np.diag(s2 * np.linalg.inv(X.T @ X))),
                                 [np.sqrt(s2 / (2 * y.size))]])
        np.testing.assert_allclose(res.se, expect, rtol=1e-8)


class TestNumericalPaths:
    def test_numdifftools_path_matches_gradient_path(self):
        """Without analytic scores numdifftools differences the log-likelihood: the same SEs to 2e-8."""
        model, data, params = fitted_1d(Gauss1D)
        a = numerical_se(model, data, params)
        b = numerical_se(Gauss1DNumeric(2), data, params)
        assert a.extra["hessian_method"] != b.extra["hessian_method"]
        assert _rel(b.se, a.se) < 2e-8  # 7.9e-10 reached

    def test_hessian_symmetric_and_negative_definite(self):
        """At a maximum the numerical Hessian is symmetric and negative definite."""
        model, data, params = fitted_1d(Gauss1D)
        H = numerical_hessian(model, data, params)
        np.testing.assert_array_equal(H, H.T)
        assert np.all(np.linalg.eigvalsh(H) < 0)

    def test_boundary_probability_is_named(self):
        """An LCA probability of exactly 0: NaN for that item in that class and a note."""
        model, data = lca_case()
        fit = fit_em(model, data, n_starts=2, tol=1e-10, max_iter=20000, seed=1)
        params = {k: v.copy() for k, v in fit.params.items()}
        params["prob"][0, 0, :2] = [1.0, 0.0]
        for fn in (louis_se, numerical_se):
            res = fn(model, data, params)
            se = dict(zip(res.names, res.se))
            bad = [n for n in res.names if np.isnan(se[n])]
            assert bad and all(n.startswith("prob[1,item1,") for n in bad), bad
            assert any("boundary" in n and "prob[1,item1,1]" in n for n in res.notes)


def unit_factors(names: list[str], c: np.ndarray, columns: list[str]) -> np.ndarray:
    """How each reported Gaussian-mixture parameter scales when column j is multiplied by c_j."""
    out = []
    for name in names:
        idx = [columns.index(v) for v in name[name.index("[") + 1:-1].split(",")[1:]]
        if name.startswith("var["):
            out.append(c[0] ** 2)              # spherical: every column scaled alike
        else:
            out.append(float(np.prod(c[idx])) if idx else 1.0)
    return np.array(out)


def rescaled(model, data, params, c):
    """The same model, data and estimate with column j measured in units c_j times smaller."""
    X = data["X"] * c
    other = GaussianMixtureModel(model.n_components, covariance=model.covariance, reg_covar=0.0)
    other.setup(GaussianMixtureModel.meta_for_array(X, model.columns))
    key = {"full": "cov", "diag": "cov", "spherical": "var"}[model.covariance]
    factor = {"full": np.outer(c, c), "diag": c ** 2, "spherical": c[0] ** 2}[model.covariance]
    return other, {"X": X}, {"weight": params["weight"], "mean": params["mean"] * c,
                             key: params[key] * factor}


class TestUnits:
    """What is identified, and the standard errors, do not depend on the data's units."""

    WINE = ["alcohol", "malic_acid", "ash", "alcalinity_of_ash", "magnesium", "proline"]

    @pytest.mark.parametrize("covariance", ["full", "diag"])
    def test_wine_with_proline_in_its_own_units(self, covariance):
        """Six wine columns with proline (values ~1e3) give finite SEs, and dividing proline by 1000 divides its SEs by 1000 (cov by 1e6)."""
        from sklearn.datasets import load_wine
        X = load_wine(as_frame=True).frame[self.WINE].to_numpy()
        model = GaussianMixtureModel(2, covariance=covariance, reg_covar=0.0)
        model.setup(GaussianMixtureModel.meta_for_array(X, self.WINE))
        fit = fit_em(model, {"X": X}, n_starts=2, tol=1e-10, max_iter=5000, seed=1)
        c = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1e-3])
        other, data_c, params_c = rescaled(model, {"X": X}, fit.params, c)
        f = unit_factors(model.reported_names(), c, model.columns)
        # Louis: analytic, so equal to rounding (1e-14 reached); numerical: 2e-10 reached
        for fn, rtol in ((louis_se, 1e-12), (numerical_se, 1e-8)):
            a = fn(model, {"X": X}, fit.params)
            b = fn(other, data_c, params_c)
            assert not a.notes and not b.notes, (fn.__name__, a.notes, b.notes)
            free = model.reported_jacobian().any(axis=1)
            assert np.all(a.se[free] > 0)
            np.testing.assert_allclose(b.se, a.se * f, rtol=rtol, err_msg=fn.__name__)

    @pytest.mark.parametrize("covariance", ["full", "diag", "spherical"])
    def test_simulated_columns_of_very_different_units(self, covariance):
        """Columns in units 1e-3, 1 and 1e4 (all 1e4 for spherical) give the SEs of unit columns times the units."""
        rng = stream(25, "test-data")
        Z = np.vstack([rng.multivariate_normal([0, 0, 0], np.eye(3) + 0.3, 250),
                       rng.multivariate_normal([2.5, -1, 1], np.eye(3) * 0.5, 200)])
        model = GaussianMixtureModel(2, covariance=covariance, reg_covar=0.0)
        model.setup(GaussianMixtureModel.meta_for_array(Z))
        fit = fit_em(model, {"X": Z}, n_starts=2, tol=1e-10, max_iter=5000, seed=1)
        c = np.full(3, 1e4) if covariance == "spherical" else np.array([1e-3, 1.0, 1e4])
        other, data_c, params_c = rescaled(model, {"X": Z}, fit.params, c)
        f = unit_factors(model.reported_names(), c, model.columns)
        # reached: Louis 2e-15 (analytic), numerical 5e-11 (steps follow the natural scales)
        for fn, rtol in ((louis_se, 1e-12), (numerical_se, 1e-8)):
            a = fn(model, {"X": Z}, fit.params)
            b = fn(other, data_c, params_c)
            assert not a.notes and not b.notes, (fn.__name__, a.notes, b.notes)
            np.testing.assert_allclose(b.se, a.se * f, rtol=rtol, err_msg=fn.__name__)

    @pytest.mark.parametrize("c", [1e-6, 1e6])
    def test_numerical_derivatives_in_any_units(self, c):
        """Without analytic derivatives too (a mean at 0, the hardest case), data in units 1e-6 or 1e6 times smaller give the SEs times the units."""
        model, data, params = fitted_1d(Gauss1DNumeric)
        shift = -params["mean"][0]  # mean[1] = 0: no step can be taken relative to its value
        data, params = {"x": data["x"] + shift}, dict(params, mean=params["mean"] + shift)
        scaled = {"weight": params["weight"], "mean": params["mean"] * c, "var": params["var"] * c ** 2}
        factor = np.array([1.0, 1.0, c, c, c ** 2, c ** 2])  # weight[1,2], mean[1,2], var[1,2]
        # reached: Louis (Richardson-differenced log_joint) 5.5e-10, numdifftools 1.0e-9
        for fn, rtol in ((louis_se, 1e-8), (numerical_se, 2e-8)):
            a = fn(Gauss1DNumeric(2), data, params)
            b = fn(Gauss1DNumeric(2), {"x": data["x"] * c}, scaled)
            assert not b.notes, (fn.__name__, b.notes)
            np.testing.assert_allclose(b.se, a.se * factor, rtol=rtol, err_msg=fn.__name__)
