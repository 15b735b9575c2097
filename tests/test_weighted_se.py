"""Standard errors with row weights, the sandwich, and the Poisson bootstrap.

Independent computations: the data with each row replicated w_i times (frequency weights),
per-row scores by finite differences of the per-row log-likelihood (the sandwich's middle),
the ordinary bootstrap and Louis' method (the Poisson bootstrap), and the weights of the
rows drawn in one piece (any split of the rows).  For user models, fits of weighted and of
replicated rows by the generic M-step, and numerical derivatives that move one entry of
every class at once against one entry at a time.
"""

from __future__ import annotations

import numpy as np
import pytest

from src.config import RunOptions
from src.estimation.em import fit_em
from src.inference import SE_METHODS, compute_standard_errors
from src.inference.bootstrap import bootstrap_se, replicate_data
from src.inference.louis import louis_information
from src.inference.poisson import BLOCK_ROWS, poisson_weights, poisson_weights_at
from src.inference.results import boundary_parameters
from src.inference.sandwich import sandwich_se
from src.models.base import WEIGHT_KEY
from src.models.gmm import GaussianMixtureModel
from src.models.registry import get_model_class
from src.utils.checkpointing import CheckpointInvalid
from src.utils.rng import stream
from tests.test_numerical_se import lca_case, mixreg_case

USER_MODEL = "examples/user_models/exponential_mixture.py:ExponentialMixture"


# ---------------------------------------------------------------- cases
def gmm_case(n=160):
    rng = stream(41, "test-data")
    X = np.vstack([rng.multivariate_normal([0.0, 0.0], [[1.0, 0.4], [0.4, 0.8]], n // 2),
                   rng.multivariate_normal([2.5, 1.5], [[0.6, -0.2], [-0.2, 1.2]], n - n // 2)])
    model = GaussianMixtureModel(2, covariance="full", reg_covar=0.0)
    model.setup(GaussianMixtureModel.meta_for_array(X))
    return model, {"X": X}


def user_case(n=160):
    rng = stream(42, "test-data")
    x = np.where(rng.random(n) < 0.6, rng.exponential(0.5, n), rng.exponential(5.0, n))
    cls = get_model_class(USER_MODEL)
    model = cls(2)
    model.setup({})
    return model, {"x": x}


def estimate(model, data, seed):
    """The maximum-likelihood estimate: EM; for the exponential mixture by its closed-form
    M-step (weight = mean responsibility, rate = sum r / sum r x; the generic numerical
    M-step gives the same point, slower)."""
    if "x" not in data:
        return fit_em(model, data, n_starts=3, seed=seed, tol=1e-12, max_iter=5000).params
    rows = {"x": data["x"]}
    w = data.get(WEIGHT_KEY, np.ones(data["x"].shape[0]))
    params = {"weight": np.array([0.5, 0.5]), "rate": np.array([3.0, 0.3])}
    for _ in range(5000):
        resp = model.e_step(rows, params)[0] * w[:, None]
        new = {"weight": resp.sum(0) / resp.sum(), "rate": resp.sum(0) / (resp.T @ rows["x"])}
        done = all(np.allclose(new[k], params[k], rtol=1e-14, atol=0) for k in params)
        params = new
        if done:
            break
    return params


def rows_of(case, n):
    model, data = case()
    return model, {k: v[:n] for k, v in data.items()}


CASES = {
    "gmm": gmm_case,
    "lca-missing": lambda: rows_of(lca_case, 200),
    "mixreg": lambda: rows_of(mixreg_case, 160),
    "user-model": user_case,
}


def weighted_and_replicated(case):
    """The case's rows with integer weights 1..4, the replicated rows, and an estimate."""
    model, data = CASES[case]()
    n = next(iter(data.values())).shape[0]
    w = stream(43, "test-weights").integers(1, 5, n).astype(float)
    weighted = {**data, WEIGHT_KEY: w}
    replicated = {k: np.repeat(v, w.astype(int), axis=0) for k, v in data.items()}
    return model, weighted, replicated, estimate(model, replicated, 1)


def assert_same_se(a, b, rtol):
    """Standard errors (NaN in the same places) and free covariances equal to ``rtol``."""
    assert np.array_equal(np.isnan(a.se), np.isnan(b.se))
    ok = ~np.isnan(b.se)
    np.testing.assert_allclose(a.se[ok], b.se[ok], rtol=rtol, atol=0)
    d = np.sqrt(np.abs(np.diag(b.cov_free)))
    scale = np.outer(d, d)
    fin = np.isfinite(b.cov_free)
    assert np.array_equal(fin, np.isfinite(a.cov_free))
    assert np.all(np.abs(a.cov_free - b.cov_free)[fin] <= rtol * scale[fin])


# ------------------------------------------------- frequency weights = replication
@pytest.mark.parametrize("case", list(CASES))
def test_integer_frequency_weights_give_the_replicated_datas_standard_errors(case):
    """Louis, numerical and sandwich SEs of integer-weighted rows equal those of the replicated rows to 1e-8."""
    model, weighted, replicated, params = weighted_and_replicated(case)
    for method in ("louis", "numerical", "sandwich"):
        a = compute_standard_errors(method, model, weighted, params, chunk_size=64)
        b = compute_standard_errors(method, model, replicated, params, chunk_size=64)
        assert np.isfinite(b.se).sum() > 0, method
        assert_same_se(a, b, 1e-8)


@pytest.fixture(scope="module")
def generic_fits():
    """The example user model (no closed-form M-step) fitted by the generic M-step to
    integer-weighted rows and to the replicated rows, from one start found on the latter."""
    model, data = user_case()
    assert not model.has_closed_form_m_step
    n = data["x"].shape[0]
    w = stream(43, "test-weights").integers(1, 5, n)
    weighted = {**data, WEIGHT_KEY: w.astype(float)}
    replicated = {"x": np.repeat(data["x"], w)}
    init = fit_em(model, replicated, n_starts=1, n_candidates=0, seed=3, max_iter=10).params
    fit_w = fit_em(model, weighted, init_params=init, tol=1e-10, max_iter=500)
    fit_r = fit_em(model, replicated, init_params=init, tol=1e-10, max_iter=500)
    return model, (weighted, fit_w.params), (replicated, fit_r.params)


#: weighted = replicated at the two generic fits (estimates equal to ~1e-13, each method's
#: own finite differences at each), reached on four data sets (relative to the SEs'
#: product, covariances): Louis 5e-11, sandwich 1e-10, numerical (numdifftools on the
#: log-likelihood) 3.3e-10; up to 1e-8 / 1.3e-7 before Louis' differences were of higher
#: order (src/inference/derivatives.py)
GENERIC_FIT_RTOL = {"louis": 3e-10, "sandwich": 3e-10, "numerical": 1e-9}


@pytest.mark.parametrize("method", list(GENERIC_FIT_RTOL))
def test_generic_m_step_fits_of_weighted_and_replicated_rows_give_the_same_standard_errors(
        generic_fits, method):
    """A user model fitted by the generic M-step to integer-weighted rows and to the replicated rows gets Louis, numerical and sandwich SEs equal to 3e-10 (numerical 1e-9)."""
    model, (weighted, pw), (replicated, pr) = generic_fits
    theta = model.to_free(pr)
    assert np.max(np.abs(model.to_free(pw) - theta) / np.maximum(np.abs(theta), 1.0)) < 1e-11
    a = compute_standard_errors(method, model, weighted, pw, chunk_size=64)
    b = compute_standard_errors(method, model, replicated, pr, chunk_size=64)
    assert np.all(np.isfinite(b.se)) and not a.notes and not b.notes
    assert_same_se(a, b, GENERIC_FIT_RTOL[method])


def test_separable_classes_differenced_together_give_the_one_entry_at_a_time_derivatives():
    """Moving one entry of every class at once (classes found separable) gives the complete scores and information of moving one entry at a time, to rounding of the sums, with fewer log_joint calls; coupled classes are not grouped."""
    from src.inference import derivatives as dv
    from tests.test_em import GaussND
    from tests.test_numeric_mstep import CoupledVariances

    class Counted(GaussND):
        calls = 0

        def log_joint(self, data, params):
            Counted.calls += 1
            return super().log_joint(data, params)

    rng = stream(56, "test-data")
    X = rng.normal(size=(120, 2)) + np.where(rng.random(120)[:, None] < 0.5, 0.0, 3.0)
    model = Counted(3, dim=2)
    params = {"weight": np.array([0.3, 0.3, 0.4]),
              "mean": np.array([[0.0, 0.0], [3.0, 3.0], [1.5, 1.0]]),
              "cov": np.stack([np.eye(2), [[1.0, 0.3], [0.3, 0.8]], 2.0 * np.eye(2)])}
    data = {"X": X}
    theta = model.to_free(params)
    grouped = dv.difference_groups(model, data, params)
    single = dv.single_groups(theta.size, 3)
    assert grouped.separable and len(grouped) == 2 + 5 and len(single) == theta.size
    u = dv.natural_scales(model, data, params)
    hs = dv.difference_steps(model, theta, u, dv.SCORE_STEP[4], 4)
    hh = dv.difference_steps(model, theta, u, dv.HESSIAN_STEP[6], 6)
    resp = model.e_step(data, params)[0]
    out = {}
    for name, groups in (("grouped", grouped), ("single", single)):
        Counted.calls = 0
        out[name] = (dv.complete_score(model, data, params, hs, order=4, groups=groups),
                     dv.complete_information(model, data, params, resp, hh, order=6,
                                             groups=groups), Counted.calls)
    np.testing.assert_array_equal(out["grouped"][0], out["single"][0])
    info = out["single"][1]
    np.testing.assert_allclose(out["grouped"][1], info, rtol=0, atol=1e-13 * np.abs(info).max())
    assert out["grouped"][2] * 4 < out["single"][2]
    coupled = CoupledVariances(2)
    cparams = {"weight": np.array([0.5, 0.5]), "mean": np.array([0.0, 3.0]),
               "var": np.array([1.0, 1.5])}
    assert not dv.difference_groups(coupled, {"x": X[:, 0]}, cparams).separable


# ------------------------------------------------------------- the sandwich
def per_row_scores(model, data, params, rel_step=1e-5):
    """g_i = d log p(y_i) / d theta by central differences of the per-row log-likelihood."""
    rows = {k: v for k, v in data.items() if k != WEIGHT_KEY}
    theta = model.to_free(params)
    G = np.empty((next(iter(rows.values())).shape[0], theta.size))
    for j in range(theta.size):
        h = rel_step * max(abs(theta[j]), 1.0)
        e = np.zeros(theta.size)
        e[j] = h
        G[:, j] = (model.loglik_rows(rows, model.from_free(theta + e))
                   - model.loglik_rows(rows, model.from_free(theta - e))) / (2 * h)
    return G


@pytest.mark.parametrize("case", ["gmm", "user-model"])
@pytest.mark.parametrize("weight_type", [None, "sampling", "frequency"])
def test_sandwich_is_a_inverse_b_a_inverse_of_finite_difference_scores(case, weight_type):
    """The sandwich equals A^-1 (sum c_i g_i g_i') A^-1 with g_i from finite differences of each row's log-likelihood (c_i = 1, w_i^2, w_i)."""
    model, data = CASES[case](n=40)
    params = estimate(model, data, 2)
    c = np.ones(40)
    if weight_type is not None:
        w = stream(44, "test-weights").uniform(0.2, 3.0, 40)
        data = {**data, WEIGHT_KEY: w}
        c = w ** 2 if weight_type == "sampling" else w
    G = per_row_scores(model, data, params)
    A, _ = louis_information(model, data, params)
    Ainv = np.linalg.inv(A)
    want = Ainv @ ((G * c[:, None]).T @ G) @ Ainv
    got = sandwich_se(model, data, params, weight_type=weight_type or "frequency")
    assert not boundary_parameters(model, params) and not got.notes
    d = np.sqrt(np.diag(want))
    assert np.max(np.abs(got.cov_free - want) / np.outer(d, d)) < 1e-6


def test_sandwich_agrees_with_louis_on_a_large_correctly_specified_sample():
    """On 20000 rows drawn from the model the sandwich SEs equal Louis' within 4 of their own sampling SDs (estimated from the rows' scores)."""
    rng = stream(45, "test-data")
    n = 20000
    z = rng.random(n) < 0.4
    X = np.where(z[:, None], rng.multivariate_normal([0.0, 0.0], [[1.0, 0.3], [0.3, 1.0]], n),
                 rng.multivariate_normal([3.0, 1.0], [[0.5, 0.0], [0.0, 2.0]], n))
    model = GaussianMixtureModel(2, covariance="full", reg_covar=0.0)
    model.setup(GaussianMixtureModel.meta_for_array(X))
    data = {"X": X}
    params = fit_em(model, data, n_starts=2, seed=3, tol=1e-12).params
    louis = compute_standard_errors("louis", model, data, params)
    sand = compute_standard_errors("sandwich", model, data, params)
    se_l = np.sqrt(np.diag(louis.cov_free))
    se_s = np.sqrt(np.diag(sand.cov_free))
    # sampling SD of the sandwich SE: its variance is sum_i u_ij^2, u_i = A^-1 g_i, so the
    # variance's relative SD is sqrt(n var(u^2)) / sum(u^2) and the SE's half of it
    A, _ = louis_information(model, data, params)
    resp, _ = model.e_step(data, params)
    G = np.einsum("nk,nkp->np", resp, model.complete_score(data, params))
    U2 = (G @ np.linalg.inv(A)) ** 2
    rel_sd = 0.5 * np.sqrt(n * U2.var(axis=0)) / U2.sum(axis=0)
    assert np.all(rel_sd < 0.05)  # the comparison means something
    assert np.all(np.abs(se_s / se_l - 1) <= 4 * rel_sd)
    assert SE_METHODS["sandwich"].agreement is None  # reports do not hold it to Louis'


def test_sampling_weights_make_sandwich_the_default_method():
    """Without --se-method, sampling weights give sandwich; frequency weights, no weights or an explicit method keep theirs."""
    assert RunOptions(weights="w", weight_type="sampling").validate().se_method == "sandwich"
    assert RunOptions(weights="w").validate().se_method == "louis"
    assert RunOptions(weight_type="sampling").validate().se_method == "louis"
    assert RunOptions(weights="w", weight_type="sampling",
                      se_method="louis").validate().se_method == "louis"
    assert RunOptions(weights="w", weight_type="sampling").se_methods() == ["sandwich"]


# ---------------------------------------------------------- Poisson weights
def test_poisson_weights_do_not_depend_on_how_the_rows_are_split():
    """Any split of the global rows into runs (across the 65536-row blocks) gives the same weights, with and without base weights."""
    first, n = 3 * BLOCK_ROWS - 1000, 2 * BLOCK_ROWS + 5000
    base = stream(46, "test-weights").integers(1, 6, n).astype(float)
    for weight_type in ("frequency", "sampling"):
        for b in (None, base):
            whole = poisson_weights(7, 3, first, n, b, weight_type=weight_type)
            for seed in range(3):
                cuts = np.sort(stream(47, "test-split", seed).choice(np.arange(1, n), 9,
                                                                     replace=False))
                bounds = [0, *cuts.tolist(), n]
                parts = [poisson_weights(7, 3, first + a, e - a,
                                         None if b is None else b[a:e], weight_type=weight_type)
                         for a, e in zip(bounds[:-1], bounds[1:])]
                np.testing.assert_array_equal(np.concatenate(parts), whole)
            rows = stream(48, "test-split").permutation(n)[:999]   # any rows, any order
            np.testing.assert_array_equal(
                poisson_weights_at(7, 3, first + rows, None if b is None else b[rows],
                                   weight_type=weight_type), whole[rows])
    # the block's stream: row g is number g mod 65536 of stream(seed, "poisson", r, g // 65536)
    u = stream(7, "poisson", 3, 4).random(10)
    want = np.searchsorted(np.cumsum(np.exp(-1.0) / np.cumprod(np.r_[1.0, np.arange(1.0, 30)])),
                           u)
    np.testing.assert_array_equal(poisson_weights(7, 3, 4 * BLOCK_ROWS, 10), want)
    assert not np.array_equal(poisson_weights(7, 3, 0, 100), poisson_weights(7, 4, 0, 100))


def test_poisson_weights_have_the_poisson_distribution():
    """Counts of Poisson(1), Poisson(w) (frequency) and w*Poisson(1) (sampling) match their probabilities within 5 SDs over 400000 rows."""
    from scipy import stats
    n = 400_000
    m = poisson_weights(11, 0, 0, n)
    for k in range(6):
        p = stats.poisson.pmf(k, 1.0)
        assert abs(np.mean(m == k) - p) <= 5 * np.sqrt(p * (1 - p) / n)
    w = np.where(np.arange(n) % 2 == 0, 3.0, 0.5)
    f = poisson_weights(11, 0, 0, n, w)
    for lam, sel in ((3.0, w == 3.0), (0.5, w == 0.5)):
        for k in range(6):
            p = stats.poisson.pmf(k, lam)
            assert abs(np.mean(f[sel] == k) - p) <= 5 * np.sqrt(p * (1 - p) / sel.sum())
    s = poisson_weights(11, 0, 0, n, w, weight_type="sampling")
    np.testing.assert_array_equal(s, w * m)     # the same uniforms: w * (the unweighted counts)
    np.testing.assert_array_equal(poisson_weights(11, 0, 0, n, np.ones(n)), m)


# ------------------------------------------------------- the Poisson bootstrap
def one_dimensional(n=1000, seed=49):
    rng = stream(seed, "test-data")
    z = rng.random(n) < 0.4
    x = np.where(z, rng.normal(-2.0, 1.0, n), rng.normal(2.0, 0.8, n))[:, None]
    model = GaussianMixtureModel(2, covariance="full", reg_covar=0.0)
    model.setup(GaussianMixtureModel.meta_for_array(x))
    return model, {"X": x}


def mc_allowance(se, B, pair):
    """Monte-Carlo allowance for an SE from B replicates: its SD is about SE / sqrt(2(B-1));
    the difference of two independent ones has SD SE / sqrt(B-1) (``pair``).  4 SDs, plus
    8% for finite-sample differences between the bootstraps and Louis (n = 1000)."""
    sd = se / np.sqrt(B - 1) if pair else se / np.sqrt(2 * (B - 1))
    return 4 * sd + 0.08 * se


def test_poisson_bootstrap_agrees_with_the_ordinary_bootstrap_and_louis():
    """B=150 Poisson-bootstrap SEs are within Monte-Carlo error of the ordinary bootstrap's and of Louis'."""
    model, data = one_dimensional()
    params = fit_em(model, data, n_starts=2, seed=1, tol=1e-10).params
    B = 150
    pois = bootstrap_se(model, data, params, n_bootstrap=B, kind="poisson", seed=5, tol=1e-8)
    ordinary = bootstrap_se(model, data, params, n_bootstrap=B, seed=5, tol=1e-8)
    louis = compute_standard_errors("louis", model, data, params)
    assert pois.extra["n_ok"] == B and pois.extra["bootstrap_kind"] == "poisson"
    ok = louis.se > 0
    assert np.all(np.abs(pois.se - ordinary.se)[ok] <= mc_allowance(louis.se, B, True)[ok])
    assert np.all(np.abs(pois.se - louis.se)[ok] <= mc_allowance(louis.se, B, False)[ok])


@pytest.mark.parametrize("weight_type", ["frequency", "sampling"])
def test_weighted_poisson_bootstrap_estimates_the_weights_variance(weight_type):
    """With frequency weights the Poisson bootstrap (Poisson(w_i)) matches the replicated rows' Louis SEs, with sampling weights (w_i Poisson(1)) the w_i^2 sandwich, within Monte-Carlo error."""
    model, data = one_dimensional(n=500)
    w = stream(50, "test-weights").integers(1, 4, 500).astype(float)
    weighted = {**data, WEIGHT_KEY: w}
    params = fit_em(model, weighted, n_starts=2, seed=1, tol=1e-10).params
    B = 120
    pois = bootstrap_se(model, weighted, params, n_bootstrap=B, kind="poisson", seed=6,
                        tol=1e-8, weight_type=weight_type)
    if weight_type == "frequency":
        ref = compute_standard_errors("louis", model, weighted, params)
    else:
        ref = sandwich_se(model, weighted, params, weight_type="sampling")
        # sampling weights spread the estimates more than the same weights as frequencies
        assert np.all(ref.se[1:] > 1.1 * compute_standard_errors("louis", model, weighted,
                                                                   params).se[1:])
    ok = ref.se > 0
    assert pois.extra["n_ok"] == B and pois.extra["bootstrap_weight_type"] == weight_type
    assert np.all(np.abs(pois.se - ref.se)[ok] <= mc_allowance(ref.se, B, False)[ok])


class ReversedExecutor:
    """Runs tasks in process, last first (results must not depend on completion order)."""

    def map_unordered(self, fn, args_list):
        for i in reversed(range(len(args_list))):
            yield i, fn(*args_list[i])


class MemoryCheckpointer:
    """A real Checkpointer keeping every state in memory."""

    def __init__(self, resume=None):
        self._resume, self.states = resume, []

    def resume_state(self):
        return self._resume

    def checkpoint(self, state, *, force=False):
        self.states.append(state)
        return True


def test_poisson_bootstrap_resumes_and_ignores_order():
    """An interrupted Poisson bootstrap resumes, and reversed completion gives, bitwise the same result."""
    model, data = one_dimensional(n=300)
    data = {**data, WEIGHT_KEY: np.linspace(0.5, 2.0, 300)}
    params = fit_em(model, data, n_starts=1, seed=1, tol=1e-10).params
    kw = dict(n_bootstrap=6, kind="poisson", seed=8, weight_type="sampling")
    full = bootstrap_se(model, data, params, **kw)
    ck = MemoryCheckpointer()

    def stop(r, status, n_done, n_total):
        if n_done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        bootstrap_se(model, data, params, checkpoint=ck, on_replicate=stop, **kw)
    resumed = bootstrap_se(model, data, params, checkpoint=MemoryCheckpointer(ck.states[-1]), **kw)
    reversed_ = bootstrap_se(model, data, params, executor=ReversedExecutor(), **kw)
    for other in (resumed, reversed_):
        np.testing.assert_array_equal(other.se, full.se)
        np.testing.assert_array_equal(other.cov_free, full.cov_free)
    # another weight type is another bootstrap: the saved replicates are refused
    with pytest.raises(CheckpointInvalid):
        bootstrap_se(model, data, params, checkpoint=MemoryCheckpointer(ck.states[-1]),
                     **{**kw, "weight_type": "frequency"})


def test_nonparametric_replicate_of_frequency_weights_draws_the_replicated_counts():
    """A nonparametric replicate of frequency-weighted rows has round(sum w) rows in all, as the replicated data's resample."""
    model, data = one_dimensional(n=200)
    w = stream(51, "test-weights").integers(1, 5, 200).astype(float)
    rep = replicate_data(model, {**data, WEIGHT_KEY: w}, {}, "nonparametric",
                         stream(1, "bootstrap", 0), "frequency")
    assert rep[WEIGHT_KEY].sum() == w.sum() and np.all(rep[WEIGHT_KEY] >= 1)
    rep = replicate_data(model, {**data, WEIGHT_KEY: w}, {}, "nonparametric",
                         stream(1, "bootstrap", 0), "sampling")
    assert rep["X"].shape[0] == 200 and set(rep[WEIGHT_KEY]) <= set(w)
