"""Tests of the EM driver on small models defined here (closed-form and generic M-steps)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, as_completed

import numpy as np
import pytest
from scipy.special import gammaln

from src.estimation import FitResult, em_map, fit_em, start_params
from src.models.base import MixtureModel, ParamSpec
from src.utils.checkpointing import CheckpointInvalid
from src.utils.rng import stream


# ------------------------------------------------------------------ test models
class PoissonMixture(MixtureModel):
    """1-D Poisson mixture with a closed-form M-step; data {"y": (N,)}."""

    name = "poisson_test"
    has_closed_form_m_step = True

    def param_specs(self):
        return [ParamSpec("weight", (), "simplex"), ParamSpec("rate", (), "positive")]

    def log_joint(self, data, params):
        y = data["y"][:, None]
        lam = params["rate"][None, :]
        return np.log(params["weight"])[None, :] + y * np.log(lam) - lam - gammaln(y + 1)

    def suff_stats(self, data, resp):
        return {"nk": resp.sum(axis=0), "sy": resp.T @ data["y"]}

    def m_step(self, stats):
        nk = stats["nk"]
        return {"weight": nk / nk.sum(), "rate": stats["sy"] / nk}


class PoissonMixtureGeneric(PoissonMixture):
    """The same model without its closed form: exercises the generic numerical M-step."""

    has_closed_form_m_step = False


class Gauss1D(MixtureModel):
    """1-D Gaussian mixture with a closed-form M-step; data {"x": (N,)}."""

    name = "gauss1d_test"
    has_closed_form_m_step = True

    def param_specs(self):
        return [ParamSpec("weight", (), "simplex"), ParamSpec("mean", ()),
                ParamSpec("var", (), "positive")]

    def log_joint(self, data, params):
        x = data["x"][:, None]
        m, v = params["mean"][None, :], params["var"][None, :]
        with np.errstate(divide="ignore"):  # a weight of 0 (boundary tests): log 0 = -inf
            return (np.log(params["weight"])[None, :] - 0.5 * np.log(2 * np.pi * v)
                    - 0.5 * (x - m) ** 2 / v)

    def suff_stats(self, data, resp):
        x = data["x"]
        return {"nk": resp.sum(axis=0), "sx": resp.T @ x, "sxx": resp.T @ (x * x)}

    def m_step(self, stats):
        nk = stats["nk"]
        mean = stats["sx"] / nk
        return {"weight": nk / nk.sum(), "mean": mean,
                "var": np.maximum(stats["sxx"] / nk - mean ** 2, 1e-6)}

    def canonical_order(self, params):
        return np.argsort(params["mean"], kind="stable")


class GaussND(MixtureModel):
    """D-dim Gaussian mixture defined by log_joint only (covariance spec, generic M-step)."""

    name = "gaussnd_test"

    def __init__(self, n_components, dim=2):
        super().__init__(n_components)
        self.dim = dim

    def param_specs(self):
        return [ParamSpec("weight", (), "simplex"), ParamSpec("mean", (self.dim,)),
                ParamSpec("cov", (self.dim, self.dim), "covariance")]

    def log_joint(self, data, params):
        X = data["X"]
        out = np.empty((X.shape[0], self.n_components))
        for k in range(self.n_components):
            L = np.linalg.cholesky(params["cov"][k])
            z = np.linalg.solve(L, (X - params["mean"][k]).T)
            out[:, k] = (np.log(params["weight"][k]) - np.log(np.diag(L)).sum()
                         - 0.5 * self.dim * np.log(2 * np.pi) - 0.5 * (z * z).sum(axis=0))
        return out


def poisson_data(n=600, seed=1):
    rng = stream(seed, "test-data", 0)
    z = rng.random(n) < 0.4
    return {"y": np.where(z, rng.poisson(2.0, n), rng.poisson(7.0, n)).astype(float)}


def gauss_data(n=800, seed=2, sep=1.5):
    rng = stream(seed, "test-data", 1)
    z = rng.random(n) < 0.5
    return {"x": np.where(z, rng.normal(0.0, 1.0, n), rng.normal(sep, 1.0, n))}


class MemoryCheckpointer:
    """Checkpointer keeping every state handed to it (the tracker's contract, in memory)."""

    def __init__(self, resume=None):
        self.states = []
        self.forced = []
        self._resume = resume

    def resume_state(self):
        return self._resume

    def checkpoint(self, state, *, force=False):
        self.states.append(state)
        self.forced.append(force)
        return force


class ThreadExecutor:
    """An executor with the project's map_unordered interface, yielding in completion order."""

    def map_unordered(self, fn, arg_tuples):
        with ThreadPoolExecutor(2) as pool:
            futs = {pool.submit(fn, *args): i for i, args in enumerate(arg_tuples)}
            for fut in as_completed(futs):
                yield futs[fut], fut.result()


def _same(a: FitResult, b: FitResult) -> bool:
    return (a.loglik == b.loglik and a.n_iter == b.n_iter and a.start_logliks == b.start_logliks
            and all(np.array_equal(a.params[k], b.params[k]) for k in a.params))


# ------------------------------------------------------------------------ tests
class TestEMDriver:
    def test_one_class_poisson_is_sample_mean(self):
        """With one class the closed-form fit is the sample mean (the Poisson MLE)."""
        data = poisson_data()
        res = fit_em(PoissonMixture(1), data, n_starts=2)
        assert res.converged
        assert res.params["rate"][0] == pytest.approx(data["y"].mean(), rel=1e-12)
        ll = float(np.sum(data["y"] * np.log(data["y"].mean()) - data["y"].mean()
                          - gammaln(data["y"] + 1)))
        assert res.loglik == pytest.approx(ll, rel=1e-12)

    def test_em_map_matches_direct_computation(self):
        """One EM map equals responsibilities and weighted means computed by hand."""
        data = poisson_data(n=300)
        p = {"weight": np.array([0.3, 0.7]), "rate": np.array([1.5, 6.0])}
        new, ll = em_map(PoissonMixture(2), data, p, chunk_size=64)
        y = data["y"]
        dens = p["weight"] * np.exp(y[:, None] * np.log(p["rate"]) - p["rate"] - gammaln(y + 1)[:, None])
        resp = dens / dens.sum(axis=1, keepdims=True)
        assert ll == pytest.approx(np.log(dens.sum(axis=1)).sum(), rel=1e-12)
        np.testing.assert_allclose(new["rate"], resp.T @ y / resp.sum(axis=0), rtol=1e-12)
        np.testing.assert_allclose(new["weight"], resp.mean(axis=0), rtol=1e-12)

    @pytest.mark.parametrize("accelerate", ["none", "squarem"])
    def test_loglik_never_falls(self, accelerate):
        """Accepted log-likelihoods never fall by more than 1e-10 relative, per evaluation."""
        seen = []
        res = fit_em(Gauss1D(3), gauss_data(), n_starts=3, tol=1e-12, max_iter=400,
                     accelerate=accelerate, on_iteration=lambda s, i, ll: seen.append((s, ll)))
        tr = np.array(res.loglik_trace)
        assert len(tr) > 10
        assert np.all(np.diff(tr) >= -1e-10 * np.abs(tr[1:]))
        for s in range(3):
            lls = np.array([ll for ss, ll in seen if ss == s])
            assert np.all(np.diff(lls) >= -1e-10 * np.abs(lls[1:]))

    @pytest.mark.parametrize("accelerate", ["none", "squarem"])
    def test_resume_is_bitwise_identical(self, accelerate):
        """Resuming from any checkpointed state gives exactly the uninterrupted result."""
        data = gauss_data(n=300)
        kw = dict(n_starts=3, tol=1e-9, max_iter=200, accelerate=accelerate, chunk_size=64)
        rec = MemoryCheckpointer()
        full = fit_em(Gauss1D(2), data, checkpoint=rec, **kw)
        assert len(rec.states) > 20 and sum(rec.forced) == 3
        picks = sorted(set(np.linspace(0, len(rec.states) - 2, 12).astype(int)))
        for i in picks:
            again = fit_em(Gauss1D(2), data, checkpoint=MemoryCheckpointer(rec.states[i]), **kw)
            assert _same(full, again), f"state {i} resumed differently"
            assert again.loglik_trace == full.loglik_trace

    def test_resume_rejects_other_options(self):
        """A saved state from a run with other EM options is refused with a sentence."""
        data = gauss_data(n=200)
        rec = MemoryCheckpointer()
        fit_em(Gauss1D(2), data, n_starts=1, checkpoint=rec)
        with pytest.raises(ValueError, match="other EM options"):
            fit_em(Gauss1D(2), data, n_starts=1, tol=1e-6, checkpoint=MemoryCheckpointer(rec.states[3]))

    def test_chunk_sizes_agree(self):
        """Different chunk sizes agree to rounding; the same chunk size is bitwise repeatable."""
        data = gauss_data(n=1000)
        kw = dict(n_starts=2, n_candidates=6, tol=0.0, max_iter=60)
        a = fit_em(Gauss1D(2), data, chunk_size=4096, **kw)
        b = fit_em(Gauss1D(2), data, chunk_size=97, **kw)
        c = fit_em(Gauss1D(2), data, chunk_size=97, **kw)
        assert abs(a.loglik - b.loglik) <= 1e-12 * abs(a.loglik)
        for k in a.params:
            np.testing.assert_allclose(a.params[k], b.params[k], rtol=1e-10)
        assert _same(b, c)

    def test_thread_pool_over_chunks_is_bitwise_identical(self):
        """Chunks computed on a thread pool give the sequential result bit for bit."""
        data = gauss_data(n=1000)
        kw = dict(n_starts=2, n_candidates=6, max_iter=100, chunk_size=50)
        assert _same(fit_em(Gauss1D(2), data, **kw), fit_em(Gauss1D(2), data, n_threads=2, **kw))

    def test_starts_are_reproducible(self):
        """Start s draws the same values whatever the number of starts."""
        data = poisson_data()
        a = fit_em(PoissonMixture(2), data, n_starts=1, seed=5)
        b = fit_em(PoissonMixture(2), data, n_starts=3, seed=5)
        assert a.start_logliks[0] == b.start_logliks[0]
        p0 = start_params(PoissonMixture(2), data, 5, 1)
        p1 = start_params(PoissonMixture(2), data, 5, 1)
        assert np.array_equal(p0["rate"], p1["rate"])
        assert b.loglik == max(b.start_logliks)
        assert len(b.start_logliks) == len(b.start_n_iter) == 3
        assert np.all(np.isfinite(b.start_logliks)) and min(b.start_n_iter) >= 1
        p2 = start_params(PoissonMixture(2), data, 5, 2)
        assert not np.array_equal(p2["rate"], p0["rate"])  # other starts draw other values

    def test_non_convergence_is_a_warning(self):
        """Hitting max_iter is reported in warnings, not raised."""
        res = fit_em(Gauss1D(2), gauss_data(), n_starts=2, max_iter=3)
        assert not res.converged and res.n_iter == 3
        assert any("did not converge in 3 iterations" in w for w in res.warnings)
        assert any("of 2 starts did not converge" in w for w in res.warnings)

    def test_not_converged_names_the_start_from_one(self):
        """The non-convergence warning counts starts from 1 (the only start is start 1)."""
        init = {"weight": np.array([0.5, 0.5]), "mean": np.array([0.0, 1.5]), "var": np.ones(2)}
        res = fit_em(Gauss1D(2), gauss_data(), init_params=init, max_iter=3)
        assert res.best_start == 0
        assert any(w.startswith("start 1 did not converge") for w in res.warnings), res.warnings

    def test_damaged_saved_start_is_named_from_one(self):
        """A saved finished start that lacks fields is refused naming it counted from 1."""
        data = gauss_data(n=200)
        rec = MemoryCheckpointer()
        fit_em(Gauss1D(2), data, n_starts=2, n_candidates=0, max_iter=5, checkpoint=rec)
        state = next(s for s in rec.states if "0" in s["finished"])
        damaged = {**state, "finished": {"0": {k: v for k, v in state["finished"]["0"].items()
                                               if k != "trace"}}}
        with pytest.raises(ValueError, match=r"^finished start 1 lacks fields"):
            fit_em(Gauss1D(2), data, n_starts=2, n_candidates=0, max_iter=5,
                   checkpoint=MemoryCheckpointer(damaged))
        out_of_range = {**state, "finished": {"2": state["finished"]["0"]}}
        with pytest.raises(ValueError, match=r"^finished start 3 is out of range \(starts 1 to 2\)"):
            fit_em(Gauss1D(2), data, n_starts=2, n_candidates=0, max_iter=5,
                   checkpoint=MemoryCheckpointer(out_of_range))
        not_a_number = {**state, "finished": {"\u00b2": state["finished"]["0"]}}  # "²".isdigit()
        with pytest.raises(CheckpointInvalid, match=r"^finished start '\u00b2' is out of range"):
            fit_em(Gauss1D(2), data, n_starts=2, n_candidates=0, max_iter=5,
                   checkpoint=MemoryCheckpointer(not_a_number))

    def test_init_params_single_start_and_canonical_order(self):
        """init_params gives one start from those values; classes come out in canonical order."""
        data = gauss_data(sep=4.0)
        init = {"weight": np.array([0.5, 0.5]), "mean": np.array([4.0, 0.0]), "var": np.ones(2)}
        res = fit_em(Gauss1D(2), data, n_starts=7, init_params=init)
        assert len(res.start_logliks) == 1
        assert res.params["mean"][0] < res.params["mean"][1]
        assert res.loglik == pytest.approx(Gauss1D(2).loglik(data, res.params), rel=1e-12)

    def test_executor_path_matches_in_process(self):
        """Starts run through an executor give the in-process numbers; each is checkpointed."""
        data = poisson_data()
        rec = MemoryCheckpointer()
        a = fit_em(PoissonMixture(2), data, n_starts=4, executor=ThreadExecutor(), checkpoint=rec)
        b = fit_em(PoissonMixture(2), data, n_starts=4)
        assert _same(a, b) and rec.forced.count(True) == 4 and rec.forced[-4:] == [True] * 4
        partial = {k: v for k, v in rec.states[-3].items()}
        c = fit_em(PoissonMixture(2), data, n_starts=4, executor=ThreadExecutor(),
                   checkpoint=MemoryCheckpointer(partial))
        assert _same(a, c)

    def test_fit_result_roundtrip(self):
        """FitResult survives to_dict/from_dict and computes AIC/BIC from the definitions."""
        res = fit_em(PoissonMixture(2), poisson_data(), n_starts=2)
        back = FitResult.from_dict(res.to_dict())
        assert back.loglik == res.loglik and np.array_equal(back.params["rate"], res.params["rate"])
        assert res.n_params == 3
        assert res.aic == pytest.approx(-2 * res.loglik + 6)
        assert res.bic == pytest.approx(-2 * res.loglik + 3 * np.log(600))


class TestGenericMStep:
    def test_generic_matches_closed_form(self):
        """The numerical M-step reaches the closed-form fit from the same starting values."""
        data = poisson_data()
        init = start_params(PoissonMixture(2), data, 0, 0)
        a = fit_em(PoissonMixture(2), data, init_params=init, tol=1e-10)
        b = fit_em(PoissonMixtureGeneric(2), data, init_params=init, tol=1e-10)
        assert b.loglik == pytest.approx(a.loglik, rel=1e-9)
        np.testing.assert_allclose(b.params["rate"], a.params["rate"], rtol=1e-4)

    def test_generic_one_class_gaussian_is_sample_moments(self):
        """One class with a covariance spec: the MLE is the sample mean and (biased) covariance."""
        rng = stream(3, "test-data", 2)
        X = rng.multivariate_normal([1.0, -2.0], [[2.0, 0.6], [0.6, 1.0]], size=400)
        res = fit_em(GaussND(1), {"X": X}, n_starts=1, tol=1e-12)
        np.testing.assert_allclose(res.params["mean"][0], X.mean(axis=0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(res.params["cov"][0], np.cov(X.T, bias=True), rtol=1e-4)

    def test_generic_random_starts_and_monotone(self):
        """Generic random starts run and EM with the numerical M-step does not fall."""
        res = fit_em(PoissonMixtureGeneric(2), poisson_data(n=300), n_starts=2, max_iter=50,
                     tol=1e-8)
        tr = np.array(res.loglik_trace)
        assert np.all(np.diff(tr) >= -1e-10 * np.abs(tr[1:]))
        assert np.isfinite(res.loglik)


class TestProcessExecutor:
    def test_worker_processes_give_in_process_numbers(self):
        """Starts run in worker processes (the project's ProcessExecutor) match the in-process fit."""
        from src.parallel.executors import ProcessExecutor

        data = poisson_data()
        with ProcessExecutor(2) as ex:
            a = fit_em(PoissonMixture(2), data, n_starts=3, executor=ex)
        assert _same(a, fit_em(PoissonMixture(2), data, n_starts=3))


def _gmm(n_components, X, **options):
    from src.models.gmm import GaussianMixtureModel

    m = GaussianMixtureModel(n_components, **options)
    m.setup(GaussianMixtureModel.meta_for_array(X))
    return m


def _sklearn_from(params, reg_covar, max_iter, tol):
    from sklearn.mixture import GaussianMixture

    prec = np.linalg.inv(params["cov"])
    return GaussianMixture(len(params["weight"]), covariance_type="full", reg_covar=reg_covar,
                           max_iter=max_iter, tol=tol, weights_init=params["weight"],
                           means_init=params["mean"], precisions_init=prec,
                           init_params="random_from_data", random_state=0)


class TestAgainstScikitLearn:
    """Our gmm fit against scikit-learn's GaussianMixture from the same starting values."""

    @staticmethod
    def _data():
        rng = stream(11, "test-data", 3)
        means = np.array([[0.0, 0.0, 0.0], [2.0, 1.0, 0.0], [0.5, 3.0, 1.0]])
        z = rng.integers(0, 3, 600)
        return means[z] + rng.normal(size=(600, 3)) @ np.array([[1, .3, 0], [0, 1, .2], [0, 0, .8]])

    def test_same_iterate_same_loglik(self):
        """After n EM steps both tools hold the same iterate and its log-likelihood (1e-8)."""
        import warnings as _w

        X = self._data()
        m = _gmm(3, X, reg_covar=1e-4)
        init = start_params(m, {"X": X}, 0, 0)
        n = 25
        ours = fit_em(m, {"X": X}, init_params=init, tol=0.0, max_iter=n + 1)
        with _w.catch_warnings():
            _w.simplefilter("ignore")
            sk = _sklearn_from(init, 1e-4, n, 0.0).fit(X)
        sk_params = {"weight": sk.weights_, "mean": sk.means_, "cov": sk.covariances_}
        sk_params = m.permute(sk_params, m.canonical_order(sk_params))
        assert ours.loglik == pytest.approx(sk.score(X) * X.shape[0], rel=1e-8)
        for k in ("weight", "mean", "cov"):
            np.testing.assert_allclose(ours.params[k], sk_params[k], rtol=1e-6, atol=1e-9)

    @pytest.mark.parametrize("accelerate", ["none", "squarem"])
    def test_converged_loglik_matches(self, accelerate):
        """Converged to a tight tolerance (translated to sklearn's criterion) both agree to 1e-8."""
        X = self._data()
        m = _gmm(3, X)
        init = start_params(m, {"X": X}, 0, 1)
        ours = fit_em(m, {"X": X}, init_params=init, tol=1e-13, max_iter=5000, accelerate=accelerate)
        sk_tol = 1e-13 * abs(ours.loglik) / X.shape[0]
        sk = _sklearn_from(init, 1e-6, 5000, sk_tol).fit(X)
        assert ours.converged and sk.converged_
        assert ours.loglik == pytest.approx(sk.score(X) * X.shape[0], rel=1e-8)


class TestLogSumExp:
    """models.base's column-by-column log-sum-exp and responsibilities against scipy's
    logsumexp (the E-step every family without its own uses)."""

    @pytest.mark.parametrize("K", [1, 2, 3, 7, 8, 12])
    def test_against_scipy(self, K):
        """Rows of very different scales: log-sum-exp within 1e-15 relative of scipy's, responsibilities scipy's softmax within 1e-15 (exp(lj - lse) loses 1e-12 on log-joints of -1e4) and summing to one, the log-likelihood their sum."""
        from scipy.special import logsumexp, softmax

        from src.models.base import logsumexp_rows, responsibilities

        rng = stream(4, "test-logsumexp")
        lj = rng.normal(scale=50.0, size=(3000, K)) - rng.uniform(0, 1e4, size=(3000, 1))
        expected = logsumexp(lj, axis=1)
        np.testing.assert_allclose(logsumexp_rows(lj), expected, rtol=1e-15, atol=0)
        resp, ll = responsibilities(lj)
        np.testing.assert_allclose(resp, softmax(lj, axis=1), rtol=0, atol=1e-15)
        np.testing.assert_allclose(resp.sum(axis=1), 1.0, rtol=0, atol=4e-16 * K)
        assert ll == pytest.approx(float(expected.sum()), rel=1e-15)

    def test_rows_without_probability_and_infinite_entries(self):
        """A row of -inf gives -inf (no warning, as scipy), a row with one finite entry that entry, NaN stays NaN; responsibilities of a row of -inf are NaN and its log-likelihood -inf."""
        import warnings

        from scipy.special import logsumexp

        from src.models.base import logsumexp_rows, responsibilities

        lj = np.array([[-np.inf, -np.inf], [0.5, -np.inf], [np.nan, 0.0], [-800.0, -801.0]])
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = logsumexp_rows(lj)
        np.testing.assert_array_equal(got[:2], [-np.inf, 0.5])
        assert np.isnan(got[2]) and np.isnan(logsumexp(lj, axis=1)[2])
        assert got[3] == pytest.approx(logsumexp(lj[3]), rel=1e-15)
        with np.errstate(invalid="ignore"):
            resp, ll = responsibilities(lj[[0, 1]])
        assert np.isnan(resp[0]).all() and ll == -np.inf
        np.testing.assert_array_equal(resp[1], [1.0, 0.0])

    def test_generic_e_step_and_weighted_stats(self):
        """The generic e_step, loglik, loglik_rows and e_step_stats_weighted of a model agree with scipy's logsumexp and softmax."""
        from scipy.special import logsumexp, softmax

        model = PoissonMixtureGeneric(3)
        rng = stream(5, "test-logsumexp-model")
        data = {"y": rng.poisson(4.0, size=500).astype(float)}
        params = {"weight": np.array([0.2, 0.3, 0.5]), "rate": np.array([1.0, 4.0, 9.0])}
        lj = model.log_joint(data, params)
        lse = logsumexp(lj, axis=1)
        resp, ll = model.e_step(data, params)
        np.testing.assert_allclose(resp, softmax(lj, axis=1), rtol=0, atol=1e-15)
        assert ll == pytest.approx(lse.sum(), rel=1e-14)
        assert model.loglik(data, params) == pytest.approx(lse.sum(), rel=1e-14)
        np.testing.assert_allclose(model.loglik_rows(data, params), lse, rtol=1e-15)
        w = rng.uniform(0.5, 2.0, size=500)
        stats, wll = model.e_step_stats_weighted(data, params, w)
        ref = model.suff_stats(data, softmax(lj, axis=1) * w[:, None])
        for key in ref:
            np.testing.assert_allclose(stats[key], ref[key], rtol=1e-13)
        assert wll == pytest.approx(float(w @ lse), rel=1e-14)
