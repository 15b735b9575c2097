"""The Gaussian mixture's fast paths: weighted E-step, cached factors, block sizes, threads."""

from __future__ import annotations

import pickle
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

import src.models.gmm as gmm_module
from src.estimation.em import em_map
from src.models.base import MixtureModel
from src.models.gmm import GaussianMixtureModel
from src.utils.rng import stream

COV_TYPES = ["full", "diag", "spherical"]


def problem(cov: str, n: int = 300, D: int = 3, K: int = 3, seed: int = 1):
    """A model set up on clustered rows, its data and EM-moved parameters."""
    rng = stream(seed, "test-data")
    z = rng.integers(0, K, n)
    X = rng.normal(0.0, 3.0, (K, D))[z] + rng.normal(size=(n, D)) @ (np.eye(D) + 0.3 * rng.normal(size=(D, D)))
    model = GaussianMixtureModel(K, covariance=cov)
    model.setup(model.meta_for_array(X))
    data = {"X": X}
    params = model.init_params(data, stream(seed, "start", 0))
    for _ in range(3):
        params, _ = em_map(model, data, params)
    return model, data, params


def assert_stats_close(a: dict, b: dict, rtol: float = 1e-11) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=rtol, atol=rtol * np.abs(b[key]).max())


class TestWeighted:
    @pytest.mark.parametrize("cov", COV_TYPES)
    def test_weighted_equals_the_generic_base_class_version(self, cov):
        """The fused weighted E-step gives the generic MixtureModel.e_step_stats_weighted's statistics."""
        model, data, params = problem(cov)
        w = stream(2, "test-weights").uniform(0.1, 3.0, data["X"].shape[0])
        fast, ll = model.e_step_stats_weighted(data, params, w)
        generic, ll_generic = MixtureModel.e_step_stats_weighted(model, data, params, w)
        assert ll == pytest.approx(ll_generic, rel=1e-12)
        assert_stats_close(fast, generic)

    @pytest.mark.parametrize("cov", COV_TYPES)
    def test_integer_weights_equal_replicated_rows(self, cov):
        """Integer weights give the statistics and log-likelihood of each row repeated w times."""
        model, data, params = problem(cov, n=120)
        w = stream(3, "test-weights").integers(1, 5, data["X"].shape[0])
        stats, ll = model.e_step_stats_weighted(data, params, w.astype(float))
        rep, ll_rep = model.e_step_stats({"X": np.repeat(data["X"], w, axis=0)}, params)
        assert ll == pytest.approx(ll_rep, rel=1e-12)
        assert_stats_close(stats, rep)

    def test_unit_weights_equal_the_unweighted_e_step(self):
        """Weights of one give the unweighted statistics."""
        model, data, params = problem("full")
        stats, ll = model.e_step_stats_weighted(data, params, np.ones(data["X"].shape[0]))
        plain, ll_plain = model.e_step_stats(data, params)
        assert ll == pytest.approx(ll_plain, rel=1e-14)
        assert_stats_close(stats, plain, rtol=1e-14)

    def test_wrong_number_of_weights_is_refused(self):
        """As many weights as rows are required."""
        model, data, params = problem("full")
        with pytest.raises(ValueError, match="weights for"):
            model.e_step_stats_weighted(data, params, np.ones(5))


class TestFactorsCache:
    @pytest.mark.parametrize("cov", COV_TYPES)
    def test_log_joint_is_the_normal_density(self, cov):
        """log_joint equals log w_k + scipy's multivariate normal log-density, before and after a cache hit."""
        model, data, params = problem(cov, n=50)
        covs = {"full": params.get("cov"), "diag": None, "spherical": None}[cov]
        if cov == "diag":
            covs = np.stack([np.diag(v) for v in params["cov"]])
        elif cov == "spherical":
            covs = np.stack([v * np.eye(3) for v in params["var"]])
        expected = np.column_stack([
            np.log(params["weight"][k]) + multivariate_normal(params["mean"][k], covs[k]).logpdf(data["X"])
            for k in range(3)])
        for _ in range(2):
            np.testing.assert_allclose(model.log_joint(data, params), expected, rtol=1e-12, atol=1e-12)

    def test_changed_parameters_are_seen(self):
        """New parameter values, also when changed in place in the same arrays, give new factors."""
        model, data, params = problem("full")
        before = model.log_joint(data, params)
        params["cov"][1] *= 2.0                    # in place: the same dict and arrays
        params["mean"][0] += 0.5
        after = model.log_joint(data, params)
        fresh = GaussianMixtureModel(3, covariance="full")
        fresh.setup(model.meta)
        np.testing.assert_array_equal(after, fresh.log_joint(data, params))
        assert not np.allclose(before, after)

    def test_a_new_shift_is_seen(self):
        """setup with another centring shift drops the factors computed for the old one."""
        model, data, params = problem("full")
        model.log_joint(data, params)
        moved = {"X": data["X"] + 100.0}
        model.setup(model.meta_for_array(moved["X"]))
        shifted = {**params, "mean": params["mean"] + 100.0}
        fresh = GaussianMixtureModel(3, covariance="full")
        fresh.setup(model.meta)
        np.testing.assert_array_equal(model.log_joint(moved, shifted), fresh.log_joint(moved, shifted))

    def test_pickle_leaves_the_cache_behind_and_computes_the_same(self):
        """A pickled model carries no cached factors and gives the same bits."""
        model, data, params = problem("full")
        stats, ll = model.e_step_stats(data, params)
        blob = pickle.dumps(model)
        assert b"_consts_cache" not in blob
        copy = pickle.loads(blob)
        stats2, ll2 = copy.e_step_stats(data, params)
        assert ll2 == ll
        for key in stats:
            np.testing.assert_array_equal(stats2[key], stats[key])


class TestBlocks:
    @pytest.mark.parametrize("cov", COV_TYPES)
    def test_block_size_changes_only_rounding(self, cov, monkeypatch):
        """Statistics and log-likelihood agree to rounding whatever the rows per block."""
        model, data, params = problem(cov, n=1000)
        whole, ll = model.e_step_stats(data, params)
        for block in (1, 64, 333):
            monkeypatch.setattr(gmm_module, "_BLOCK", block)
            stats, ll_b = model.e_step_stats(data, params)
            assert ll_b == pytest.approx(ll, rel=1e-13)
            assert_stats_close(stats, whole)

    def test_many_columns_use_smaller_blocks(self):
        """The work buffer stays near its byte budget when K * D is large."""
        model = GaussianMixtureModel(20, covariance="full")
        model.setup(model.meta_for_array(np.random.default_rng(0).normal(size=(10, 60))))
        work = model._Work(model, 100_000)
        assert work.block < gmm_module._BLOCK
        assert work.buf.nbytes <= 1.01 * gmm_module._BLOCK_BYTES

    def test_responsibilities_sum_to_one_with_extreme_densities(self):
        """Rows far from every class (log-densities near -1e6) still give nk summing to n and a finite log-likelihood."""
        model, data, params = problem("full")
        far = {"X": np.vstack([data["X"], data["X"][:3] + 3e3])}
        stats, ll = model.e_step_stats(far, params)
        assert np.isfinite(ll)
        assert stats["nk"].sum() == pytest.approx(far["X"].shape[0], rel=1e-13)
        lj = model.log_joint(far, params)
        assert ll == pytest.approx(float(logsumexp(lj, axis=1).sum()), rel=1e-13)


class TestThreads:
    def test_threads_share_the_model_and_give_the_same_bits(self):
        """An EM map computed on a pool of threads equals the one computed in turn, bit for bit."""
        model, data, params = problem("full", n=3000)
        alone, ll = em_map(model, data, params, 256)
        model.__dict__.pop("_consts_cache", None)     # the threads race to fill the cache
        with ThreadPoolExecutor(2) as pool:
            pooled, ll_pool = em_map(model, data, params, 256, pool)
        assert ll_pool == ll
        for key in alone:
            np.testing.assert_array_equal(pooled[key], alone[key])


class TestQuadraticPath:
    @staticmethod
    def both_paths(model, data, params, monkeypatch, weights=None):
        """(quadratic-feature path, whitened path) results of the same E-step."""
        model.__dict__.pop("_consts_cache", None)
        assert model._consts(params).quad is not None
        fast = (model.e_step_stats(data, params) if weights is None
                else model.e_step_stats_weighted(data, params, weights))
        monkeypatch.setattr(gmm_module, "_QUAD_LIMIT", -1.0)
        model.__dict__.pop("_consts_cache", None)
        assert model._consts(params).quad is None
        slow = (model.e_step_stats(data, params) if weights is None
                else model.e_step_stats_weighted(data, params, weights))
        monkeypatch.undo()
        model.__dict__.pop("_consts_cache", None)
        return fast, slow

    @pytest.mark.parametrize("cov", COV_TYPES)
    def test_quadratic_features_equal_whitened_residuals(self, cov, monkeypatch):
        """Both E-step paths give the same statistics and log-likelihood to rounding (K=5, D=4)."""
        model, data, params = problem(cov, D=4, K=5)
        (fast, ll), (slow, ll_slow) = self.both_paths(model, data, params, monkeypatch)
        assert ll == pytest.approx(ll_slow, rel=1e-13)
        assert_stats_close(fast, slow, rtol=1e-12)

    def test_weighted_quadratic_path(self, monkeypatch):
        """The weighted E-step's two paths agree to rounding."""
        model, data, params = problem("full", D=4, K=5)
        w = stream(4, "test-weights").uniform(0.5, 2.0, data["X"].shape[0])
        (fast, ll), (slow, ll_slow) = self.both_paths(model, data, params, monkeypatch, w)
        assert ll == pytest.approx(ll_slow, rel=1e-13)
        assert_stats_close(fast, slow, rtol=1e-12)

    def test_a_tight_class_far_from_the_centre_keeps_its_digits(self, monkeypatch):
        """A class 80 of its own standard deviations from the data's mean still agrees to 1e-10."""
        rng = stream(5, "test-data")
        X = np.vstack([rng.normal(size=(600, 4)), 5.0 + 0.1 * rng.normal(size=(150, 4))])
        model = GaussianMixtureModel(5, covariance="full")
        model.setup(model.meta_for_array(X))
        data = {"X": X}
        params = model.init_params(data, stream(5, "start", 0))
        params["mean"][0] = X[600:].mean(axis=0)
        params["cov"][0] = np.cov(X[600:], rowvar=False)
        params, _ = em_map(model, data, params)
        c = model._consts(params)
        centre = (params["mean"] - model.shift)
        assert c.quad is not None
        assert max(float(m @ np.linalg.solve(S, m)) for m, S in zip(centre, params["cov"])) > 1e3
        (fast, ll), (slow, ll_slow) = self.both_paths(model, data, params, monkeypatch)
        assert ll == pytest.approx(ll_slow, rel=1e-12)
        assert_stats_close(fast, slow, rtol=1e-10)

    def test_a_class_beyond_the_limit_uses_whitened_residuals(self):
        """A collapsed class far from the centre (beyond _QUAD_LIMIT) sends the E-step to the exact path."""
        model, data, params = problem("full", D=4, K=5)
        params = {**params, "cov": params["cov"].copy(), "mean": params["mean"].copy()}
        params["mean"][2] = model.shift + 50.0
        params["cov"][2] = 1e-4 * np.eye(4)
        assert model._consts(params).quad is None
        stats, ll = model.e_step_stats(data, params)
        resp, ll_rows = model.e_step(data, params)
        assert ll == pytest.approx(ll_rows, rel=1e-13)
        assert_stats_close(stats, model.suff_stats(data, resp))

    @pytest.mark.parametrize("K, D, cov, used", [(5, 10, "full", True), (2, 10, "full", False),
                                                 (3, 2, "full", True), (2, 10, "diag", True),
                                                 (1, 5, "diag", False), (2, 5, "spherical", True)])
    def test_the_path_is_chosen_by_its_cost(self, K, D, cov, used):
        """The quadratic features are used when they are not much more than K*(D+1) rows."""
        model = GaussianMixtureModel(K, covariance=cov)
        model.setup(model.meta_for_array(np.random.default_rng(0).normal(size=(50, D))))
        assert model._quadratic_path() is used
