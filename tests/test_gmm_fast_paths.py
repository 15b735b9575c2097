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
