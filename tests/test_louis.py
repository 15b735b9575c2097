"""Louis' observed information: closed forms, agreement with the numerical Hessian, boundaries.

The small test models below (tests/test_em.py's 1-D Gaussian mixture with and without
analytic derivatives, a full-covariance Gaussian mixture with numerical derivatives only) are
shared by the other inference tests.
"""

from __future__ import annotations

import numpy as np
import pytest

from src.inference import compute_standard_errors
from src.inference.louis import louis_information, louis_se
from src.inference.numerical import numerical_se
from src.inference.results import SEResult, invert_information
from src.models.base import MixtureModel, ParamSpec
from src.utils.rng import stream
from tests.test_em import Gauss1D as Gauss1DModel

LOG2PI = np.log(2 * np.pi)


class Gauss1D(Gauss1DModel):
    """tests/test_em.py's 1-D Gaussian mixture, with analytic derivatives and sampling."""

    def sample(self, params, data, rng):
        n = data["x"].shape[0]
        z = rng.choice(self.n_components, size=n, p=params["weight"])
        return {"x": rng.normal(params["mean"][z], np.sqrt(params["var"][z]))}

    def complete_score(self, data, params):
        x = data["x"][:, None]
        K = self.n_components
        w, m, v = params["weight"], params["mean"], params["var"]
        n = x.shape[0]
        S = np.zeros((n, K, 3 * K - 1))
        with np.errstate(divide="ignore"):
            for k in range(K - 1):  # d log w_k / d w_j for free j < K
                S[:, k, k] = 1.0 / w[k]
                S[:, K - 1, k] = -1.0 / w[K - 1]
        off = K - 1
        for k in range(K):
            S[:, k, off + k] = (x[:, 0] - m[k]) / v[k]
            S[:, k, off + K + k] = -0.5 / v[k] + 0.5 * (x[:, 0] - m[k]) ** 2 / v[k] ** 2
        return S

    def complete_information(self, data, params, resp):
        x = data["x"]
        K = self.n_components
        w, m, v = params["weight"], params["mean"], params["var"]
        P = 3 * K - 1
        info = np.zeros((P, P))
        nk = resp.sum(0)
        with np.errstate(divide="ignore", invalid="ignore"):
            for a in range(K - 1):
                info[a, a] += nk[a] / w[a] ** 2
                for b in range(K - 1):
                    info[a, b] += nk[K - 1] / w[K - 1] ** 2
        off = K - 1
        for k in range(K):
            r = resp[:, k]
            d = x - m[k]
            i_m, i_v = off + k, off + K + k
            info[i_m, i_m] = nk[k] / v[k]
            info[i_m, i_v] = info[i_v, i_m] = (r @ d) / v[k] ** 2
            info[i_v, i_v] = -0.5 * nk[k] / v[k] ** 2 + (r @ d ** 2) / v[k] ** 3
        return info


class Gauss1DNumeric(Gauss1D):
    """The same model without analytic derivatives (the generic numerical path)."""

    name = "gauss1d_numeric_test"

    def complete_score(self, data, params):
        return None

    def complete_information(self, data, params, resp):
        return None


class GaussFull(MixtureModel):
    """D-dimensional full-covariance Gaussian mixture; derivatives only numerical."""

    name = "gaussfull_test"
    has_closed_form_m_step = True

    def __init__(self, n_components, dim=2, **options):
        super().__init__(n_components, dim=dim, **options)
        self.dim = dim

    def param_specs(self):
        D = self.dim
        return [ParamSpec("weight", (), "simplex"), ParamSpec("mean", (D,)),
                ParamSpec("cov", (D, D), "covariance")]

    def log_joint(self, data, params):
        X = data["X"]
        out = np.empty((X.shape[0], self.n_components))
        for k in range(self.n_components):
            L = np.linalg.cholesky(params["cov"][k])
            z = np.linalg.solve(L, (X - params["mean"][k]).T)
            out[:, k] = (np.log(params["weight"][k]) - 0.5 * (z ** 2).sum(0)
                         - np.log(np.diag(L)).sum() - 0.5 * self.dim * LOG2PI)
        return out

    def suff_stats(self, data, resp):
        X = data["X"]
        return {"n": resp.sum(0), "s1": resp.T @ X,
                "s2": np.einsum("nk,ni,nj->kij", resp, X, X)}

    def m_step(self, stats):
        n = stats["n"]
        m = stats["s1"] / n[:, None]
        cov = stats["s2"] / n[:, None, None] - np.einsum("ki,kj->kij", m, m)
        return {"weight": n / n.sum(), "mean": m, "cov": cov}


def simple_em(model, data, params, tol=1e-10, max_iter=5000):
    """Plain EM to a tight relative log-likelihood tolerance (an independent short loop)."""
    prev = -np.inf
    for _ in range(max_iter):
        resp, ll = model.e_step(data, params)
        params = model.m_step(model.suff_stats(data, resp))
        if abs(ll - prev) <= tol * abs(ll):
            break
        prev = ll
    return params


def two_component_data(n=400, seed=1):
    rng = stream(seed, "test-data")
    z = rng.random(n) < 0.35
    x = np.where(z, rng.normal(-1.5, 0.8, n), rng.normal(1.8, 1.1, n))
    return {"x": x}


def fitted_1d(model_cls=Gauss1D, n=400, seed=1):
    data = two_component_data(n, seed)
    model = model_cls(2)
    init = {"weight": np.array([0.5, 0.5]), "mean": np.array([-1.0, 1.0]),
            "var": np.array([1.0, 1.0])}
    return model, data, simple_em(model, data, init)


def _rel(a, b):
    return np.max(np.abs(a - b) / np.abs(b))


class TestClosedForm:
    def test_one_class_1d(self):
        """One class: SE(mean) = sqrt(s/n), SE(var) = sqrt(2 s^2/n), SE(weight) = 0."""
        x = stream(3, "test-data").normal(5.0, 2.0, 300)
        model = Gauss1D(1)
        params = {"weight": np.array([1.0]), "mean": np.array([x.mean()]),
                  "var": np.array([x.var()])}
        res = louis_se(model, {"x": x}, params)
        s, n = x.var(), x.size
        assert res.names == ["weight[1]", "mean[1]", "var[1]"]
        np.testing.assert_allclose(res.se, [0.0, np.sqrt(s / n), np.sqrt(2 * s ** 2 / n)],
                                   rtol=1e-12)

    def test_one_class_full_covariance_numeric(self):
        """One full-covariance class, numerical derivatives: SE(cov_ij) = sqrt((s_ij^2 + s_ii s_jj)/n)."""
        X = stream(4, "test-data").multivariate_normal([1.0, -2.0], [[2.0, 0.6], [0.6, 0.5]], 500)
        model = GaussFull(1, dim=2)
        S = np.cov(X.T, bias=True)
        params = {"weight": np.array([1.0]), "mean": X.mean(0)[None], "cov": S[None]}
        res = louis_se(model, {"X": X}, params)
        n = X.shape[0]
        expect = [0.0, np.sqrt(S[0, 0] / n), np.sqrt(S[1, 1] / n),
                  np.sqrt(2 * S[0, 0] ** 2 / n), np.sqrt((S[0, 1] ** 2 + S[0, 0] * S[1, 1]) / n),
                  np.sqrt(2 * S[1, 1] ** 2 / n)]
        assert res.names == ["weight[1]", "mean[1,1]", "mean[1,2]", "cov[1,1,1]", "cov[1,1,2]",
                             "cov[1,2,2]"]
        np.testing.assert_allclose(res.se, expect, rtol=1e-6, atol=1e-15)


class TestAgreement:
    # Relative SE differences reached (numpy 2.4, scipy 1.17) and the tolerance, ~20x above:
    #   Gauss1D, analytic on both sides (Louis; differences of the analytic score): 4.7e-10
    #   Gauss1DNumeric, numerical on both sides (Richardson-differenced log_joint; numdifftools):
    #   7.5e-10 (1.6e-7 before the row-wise Richardson differences)
    @pytest.mark.parametrize("model_cls, rtol", [(Gauss1D, 1e-8), (Gauss1DNumeric, 2e-8)])
    def test_louis_matches_numerical(self, model_cls, rtol):
        """Louis and the numerical Hessian agree to 1e-8 relative with analytic derivatives, 2e-8 without."""
        model, data, params = fitted_1d(model_cls)
        a = louis_se(model, data, params)
        b = numerical_se(model, data, params)
        assert np.all(np.isfinite(a.se)) and not a.notes
        assert _rel(a.se, b.se) < rtol
        assert 0.0 < a.extra["max_fraction_missing_info"] < 1.0

    def test_analytic_matches_numeric_derivatives(self):
        """The analytic and generic numerical Louis paths give the same information (6.5e-11 of its largest entry reached)."""
        model, data, params = fitted_1d(Gauss1D)
        I_a, Ic_a = louis_information(model, data, params)
        I_n, Ic_n = louis_information(Gauss1DNumeric(2), data, params)
        np.testing.assert_allclose(I_n, I_a, rtol=0, atol=2e-9 * np.abs(I_a).max())
        np.testing.assert_allclose(Ic_n, Ic_a, rtol=0, atol=2e-9 * np.abs(Ic_a).max())

    def test_chunking_does_not_change_result(self):
        """Accumulating over chunks of 37 rows gives the information of one chunk."""
        model, data, params = fitted_1d(Gauss1D)
        a, _ = louis_information(model, data, params, chunk_size=37)
        b, _ = louis_information(model, data, params, chunk_size=10 ** 6)
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-9)

    def test_full_covariance_two_classes(self):
        """Two full-covariance classes, numerical derivatives only: Louis and numdifftools agree to 3e-8."""
        rng = stream(5, "test-data")
        X = np.vstack([rng.multivariate_normal([0, 0], [[1, 0.3], [0.3, 1]], 200),
                       rng.multivariate_normal([3, 1], [[0.5, 0], [0, 2]], 150)])
        model = GaussFull(2, dim=2)
        init = {"weight": np.array([0.5, 0.5]), "mean": np.array([[0.0, 0.0], [3.0, 1.0]]),
                "cov": np.array([np.eye(2), np.eye(2)])}
        params = simple_em(model, {"X": X}, init)
        a = louis_se(model, {"X": X}, params)
        b = numerical_se(model, {"X": X}, params)
        assert _rel(a.se, b.se) < 3e-8  # numerical on both sides: 1.3e-9 reached


class TestSingular:
    def test_duplicate_classes_give_nan_and_note(self):
        """Two identical classes: the information is singular; NaN SEs, a note, no crash."""
        x = stream(6, "test-data").normal(0.0, 1.0, 200)
        model = Gauss1D(2)
        params = {"weight": np.array([0.5, 0.5]), "mean": np.full(2, x.mean()),
                  "var": np.full(2, x.var())}
        res = louis_se(model, {"x": x}, params)
        assert np.any(np.isnan(res.se))
        assert res.notes and all("NaN" in n for n in res.notes)
        assert "singular" in " ".join(res.notes) or "positive definite" in " ".join(res.notes)

    def test_empty_class_named(self):
        """A class with weight 0 gets NaN for its parameters and a note naming it."""
        x = stream(7, "test-data").normal(0.0, 1.0, 200)
        model = Gauss1D(2)
        params = {"weight": np.array([1.0, 0.0]), "mean": np.array([x.mean(), 3.0]),
                  "var": np.array([x.var(), 1.0])}
        res = louis_se(model, {"x": x}, params)
        se = dict(zip(res.names, res.se))
        assert np.isnan(se["mean[2]"]) and np.isnan(se["var[2]"])
        assert np.isfinite(se["mean[1]"])
        assert any("class 2 is empty" in n for n in res.notes)


class TestInvertInformation:
    @staticmethod
    def spd(P=6, seed=8):
        A = stream(seed, "test-data").normal(size=(P, P))
        return A @ A.T + P * np.eye(P)

    def test_units_do_not_decide_identification(self):
        """A well-conditioned information in units spanning 1e-8..1e8 is inverted whole, to rounding."""
        A = self.spd()
        d = np.logspace(-8, 8, A.shape[0])
        cov, dropped = invert_information(d[:, None] * A * d[None, :])
        assert dropped == {}
        np.testing.assert_allclose(cov, np.linalg.inv(A) / np.outer(d, d), rtol=1e-10)

    def test_null_direction_found_in_any_units(self):
        """A rank-deficient information is still singular along one parameter once rescaled by 1e-8..1e8."""
        B = stream(9, "test-data").normal(size=(6, 5))
        A = B @ B.T                              # rank 5
        d = np.logspace(-8, 8, 6)
        for scale in (np.ones(6), d):
            cov, dropped = invert_information(scale[:, None] * A * scale[None, :])
            assert len(dropped) == 1 and "singular" in next(iter(dropped.values()))
            keep = [i for i in range(6) if i not in dropped]
            assert np.all(np.isfinite(cov[np.ix_(keep, keep)]))

    def test_zero_and_negative_diagonal(self):
        """A parameter with no information is singular, one with negative information not positive definite."""
        A = self.spd()
        A[1, :] = A[:, 1] = 0.0
        A[4, :] = A[:, 4] = 0.0
        A[4, 4] = -1.0
        cov, dropped = invert_information(A)
        assert sorted(dropped) == [1, 4]
        assert "singular" in dropped[1] and "positive definite" in dropped[4]
        keep = [0, 2, 3, 5]
        np.testing.assert_allclose(cov[np.ix_(keep, keep)], np.linalg.inv(A[np.ix_(keep, keep)]),
                                   rtol=1e-12)


class TestResultAndDispatch:
    def test_round_trip_and_dispatch(self):
        """compute_standard_errors dispatches by name; SEResult survives to_dict/from_dict."""
        model, data, params = fitted_1d(Gauss1D)
        res = compute_standard_errors("louis", model, data, params)
        back = SEResult.from_dict(res.to_dict())
        np.testing.assert_array_equal(back.se, res.se)
        assert back.names == res.names and back.extra == res.extra
        with pytest.raises(ValueError, match="se method"):
            compute_standard_errors("jackknife", model, data, params)
