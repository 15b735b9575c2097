"""VLMR and LMR: Imhof's weighted chi-square against closed forms and Monte Carlo, Vuong's W
against a direct per-row construction, the LMR adjustment, singular and boundary cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from src.models.lca import LatentClassModel
from src.selection.vlmr import (lmr_adjusted, vlmr_test, vuong_matrix, vuong_weights,
                                weighted_chi2_sf, weighted_chi2_sf_mc)
from src.utils.rng import stream
from tests.test_louis import Gauss1D, Gauss1DNumeric, simple_em, two_component_data

SIGNED = [([2.0, 1.0, 0.5, -0.3], 3.0), ([1.0, -1.0], 0.5), ([1.0, -1.0], -2.0),
          ([3.0, 0.01], 10.0), ([0.5, 0.4, -0.9, -0.2, 0.1, 0.05], 1.5),
          (list(np.linspace(-1.0, 2.0, 40)), 12.0), ([-0.5, -2.0, 0.3], -1.0)]


def fitted_pair(n=150, seed=1):
    """Gauss1D with one and two classes fitted to two-component data (tight plain EM)."""
    data = two_component_data(n, seed)
    x = data["x"]
    small, big = Gauss1D(1), Gauss1D(2)
    ps = {"weight": np.array([1.0]), "mean": np.array([x.mean()]), "var": np.array([x.var()])}
    pb = simple_em(big, data, {"weight": np.array([0.5, 0.5]), "mean": np.array([-1.0, 1.0]),
                               "var": np.array([1.0, 1.0])})
    return small, big, data, ps, pb


def direct_weights(models, data, params):
    """W built row by row: scores by central differences of each row's log-likelihood, the
    informations by numdifftools' Hessian of the log-likelihood, then W's eigenvalues."""
    import numdifftools as nd

    scores, infos = [], []
    for model, p in zip(models, params):
        theta = model.to_free(p)
        h = 1e-6 * np.maximum(np.abs(theta), 1.0)
        cols = []
        for j in range(theta.size):
            e = np.zeros(theta.size)
            e[j] = h[j]
            cols.append((model.loglik_rows(data, model.from_free(theta + e))
                         - model.loglik_rows(data, model.from_free(theta - e))) / (2 * h[j]))
        scores.append(np.array(cols).T)
        H = nd.Hessian(lambda th, m=model: m.loglik(data, m.from_free(th)))(theta)
        infos.append(-np.atleast_2d(H))
    G = np.concatenate(scores, axis=1)
    S = np.zeros((G.shape[1], G.shape[1]))
    for i in range(G.shape[0]):  # the slow way, one row at a time
        S += np.outer(G[i], G[i])
    p = infos[0].shape[0]
    Ib, Is = np.linalg.inv(infos[0]), np.linalg.inv(infos[1])
    W = np.block([[S[:p, :p] @ Ib, S[:p, p:] @ Is], [-S[p:, :p] @ Ib, -S[p:, p:] @ Is]])
    return np.sort(np.linalg.eigvals(W).real)[::-1], W, S, infos


class TestWeightedChiSquare:
    @pytest.mark.parametrize("weights, x", SIGNED)
    def test_imhof_matches_monte_carlo_with_signed_weights(self, weights, x):
        """Imhof's p-value is within 4.5 standard errors of 400,000 Monte-Carlo draws of the same signed weighted sum."""
        rng = np.random.default_rng(20261201)
        q = (rng.standard_normal((400_000, len(weights))) ** 2) @ np.asarray(weights)
        mc = float(np.mean(q > x))
        se = np.sqrt(mc * (1 - mc) / q.size)
        assert abs(weighted_chi2_sf(weights, x) - mc) <= 4.5 * se + 1e-6

    @pytest.mark.parametrize("m, c, x", [(3, 1.0, 7.8147), (5, 2.5, 4.0), (12, 0.7, 30.0),
                                         (3, -1.0, -2.0), (4, -0.5, 1.0)])
    def test_equal_weights_match_the_chi_square(self, m, c, x):
        """Equal weights c give the scaled chi-square's tail (P(c chi2_m > x)) to 1e-8."""
        expect = stats.chi2.sf(x / c, m) if c > 0 else stats.chi2.cdf(x / c, m)
        assert weighted_chi2_sf([c] * m, x) == pytest.approx(expect, abs=1e-8)

    def test_monte_carlo_helper_is_reproducible_and_agrees(self):
        """The Monte-Carlo helper gives the same numbers from the same stream and agrees with Imhof."""
        w, xs = [1.5, -0.4, 0.8], [0.5, 2.0]
        a = weighted_chi2_sf_mc(w, xs, stream(3, "vlmr", 2), 50_000)
        b = weighted_chi2_sf_mc(w, xs, stream(3, "vlmr", 2), 50_000)
        assert np.array_equal(a, b)
        for x, p in zip(xs, a):
            assert abs(weighted_chi2_sf(w, x) - p) < 5 * np.sqrt(p * (1 - p) / 50_000)

    def test_regular_nested_case_is_one_chi_square(self):
        """For N(mu, v) against N(0, v) (a regular nested pair) W's eigenvalues are one 1 and zeros: LR ~ chi2_1."""
        x = stream(5, "test-data").normal(size=4000)
        mu, v, v0 = x.mean(), x.var(), np.mean(x ** 2)
        G = np.c_[(x - mu) / v, -0.5 / v + 0.5 * (x - mu) ** 2 / v ** 2,
                  -0.5 / v0 + 0.5 * x ** 2 / v0 ** 2]
        I_big = np.diag([x.size / v, x.size / (2 * v * v)])
        I_small = np.array([[x.size / (2 * v0 * v0)]])
        w = vuong_weights(G.T @ G, I_big, I_small)
        np.testing.assert_allclose(w, [1.0, 0.0, 0.0], atol=0.05)
        np.testing.assert_allclose(np.sort(np.linalg.eigvals(vuong_matrix(G.T @ G, I_big, I_small)).real)[::-1],
                                   w, atol=1e-8)


class TestVLMR:
    def test_weights_match_a_direct_per_row_construction(self):
        """The weights equal the eigenvalues of W built row by row from differenced log-likelihoods and numdifftools' Hessians (1e-5 of the largest)."""
        small, big, data, ps, pb = fitted_pair()
        res = vlmr_test(small, big, data, ps, pb, seed=1)
        expect, W, S, infos = direct_weights((big, small), data, (pb, ps))
        got = np.array(res["weights"])
        assert got.size == expect.size == big.n_free_parameters() + small.n_free_parameters()
        np.testing.assert_allclose(got, expect, rtol=0, atol=1e-5 * np.abs(expect).max())
        assert np.any(got < -1e-3)  # signed weights, as Vuong's W for K-1 against K gives
        np.testing.assert_allclose(vuong_matrix(S, *infos), W, rtol=1e-12)
        assert res["method"] == "imhof" and not res["notes"]
        lr = 2 * (big.loglik(data, pb) - small.loglik(data, ps))
        assert res["lr"] == pytest.approx(lr, rel=1e-12)
        assert res["vlmr_p"] == pytest.approx(weighted_chi2_sf(expect, lr), abs=1e-4)

    def test_numerical_derivatives_give_the_analytic_weights(self):
        """A model without analytic scores (central differences of log_joint) gives the analytic model's weights and p-values to 1e-8 (4.6e-10 reached)."""
        small, big, data, ps, pb = fitted_pair()
        a = vlmr_test(small, big, data, ps, pb, seed=1)
        b = vlmr_test(Gauss1DNumeric(1), Gauss1DNumeric(2), data, ps, pb, seed=1)
        scale = np.abs(a["weights"]).max()
        np.testing.assert_allclose(b["weights"], a["weights"], rtol=0, atol=1e-8 * scale)
        for key in ("vlmr_p", "lmr_p"):
            assert b[key] == pytest.approx(a[key], abs=1e-8)

    def test_lmr_adjustment_by_its_formula(self):
        """LMR's statistic is LR / (1 + 1/((p_K - p_{K-1}) ln n)), referred to the same weighted chi-square."""
        small, big, data, ps, pb = fitted_pair()
        res = vlmr_test(small, big, data, ps, pb, seed=1)
        n, dp = data["x"].size, big.n_free_parameters() - small.n_free_parameters()
        assert dp == 3 and res["n_obs"] == n
        assert res["lmr_statistic"] == pytest.approx(res["lr"] / (1 + 1 / (dp * np.log(n))), rel=1e-14)
        assert lmr_adjusted(10.0, 8, 5, 100) == pytest.approx(10.0 / (1 + 1 / (3 * np.log(100))))
        assert res["lmr_p"] == pytest.approx(weighted_chi2_sf(res["weights"], res["lmr_statistic"]), abs=1e-12)
        assert res["lmr_p"] >= res["vlmr_p"]
        for key in ("vlmr_p", "lmr_p"):  # Imhof within Monte-Carlo error of the cross-check
            mc = res[key + "_mc"]
            assert abs(res[key] - mc) <= 5 * np.sqrt(max(mc * (1 - mc), 1e-5) / res["n_monte_carlo"]) + 1e-3

    def test_singular_information_gives_nan_and_a_note(self):
        """A K-class estimate that duplicates the one class (unidentified) gives NaN p-values and a note, not a crash."""
        small, big, data, ps, _ = fitted_pair()
        dup = {"weight": np.array([0.5, 0.5]), "mean": np.repeat(ps["mean"], 2),
               "var": np.repeat(ps["var"], 2)}
        res = vlmr_test(small, big, data, ps, dup, seed=1)
        assert np.isnan(res["vlmr_p"]) and np.isnan(res["lmr_p"])
        assert res["lr"] == pytest.approx(0.0, abs=1e-9)
        assert any("2-class model's information matrix is singular" in n for n in res["notes"])

    def test_boundary_probabilities_are_held_fixed(self):
        """An LCA estimate with probabilities of 0 holds them fixed with a note and still gives a finite p-value."""
        rng = stream(7, "test-data")
        z = rng.random(600) < 0.5
        Y = (rng.random((600, 5)) < np.where(z[:, None], 0.85, 0.15)).astype(np.int64)
        Y[z, 0] = 1  # item 1 is always 1 in the first class: a boundary probability
        from src.estimation.em import fit_em

        def model(k):
            m = LatentClassModel(k)
            m.setup(LatentClassModel.meta_from_array(Y))
            return m

        fits = [fit_em(model(k), {"Y": Y}, n_starts=3, seed=1, tol=1e-10) for k in (1, 2)]
        res = vlmr_test(model(1), model(2), {"Y": Y}, fits[0].params, fits[1].params, seed=2)
        assert res["n_fixed_big"] >= 1 and res["n_fixed_small"] == 0
        assert any("held fixed" in n for n in res["notes"])
        assert len(res["weights"]) == 5 + 11 - res["n_fixed_big"]
        assert res["vlmr_p"] < 1e-6 and np.isfinite(res["lmr_p"])
