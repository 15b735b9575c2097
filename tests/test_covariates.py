"""One-step covariate model: StepMix, derivatives, Louis = numerical, weights, chunks, engines,
relabelling, known effects, the pipeline (options, resume, workers, report)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import linear_sum_assignment

from src.estimation import fit_em
from src.estimation.em import em_map
from src.models import logit
from src.models.covariates import CovariateMixture
from src.models.gmm import GaussianMixtureModel
from src.models.lca import LatentClassModel
from src.utils.rng import stream
from tests.derivative_checks import assert_information_matches_fd, assert_score_matches_fd

K = 3
BETA = np.array([[0.0, 0.0, 0.0, 0.0], [0.4, 1.0, -0.6, 0.3], [-0.3, -0.8, 0.5, 0.0]])


def covariates(n: int, seed: int, c: int = 3) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Covariates (n, c), their design and names."""
    X = stream(seed, "test", 10).normal(size=(n, c))
    Z, names = logit.design(X, [f"x{j + 1}" for j in range(c)])
    return X, Z, names


def draw_classes(Z: np.ndarray, beta: np.ndarray, seed: int) -> np.ndarray:
    pi = logit.probabilities(Z, beta)
    u = stream(seed, "test", 11).random(Z.shape[0])
    return (u[:, None] > np.cumsum(pi, axis=1)).sum(axis=1)


def lca_data(n: int, seed: int = 1, J: int = 8, C: int = 2, beta: np.ndarray = BETA):
    """Answers (codes 0..C-1) whose classes follow the logit of three covariates."""
    X, Z, names = covariates(n, seed)
    z = draw_classes(Z, beta, seed)
    rng = stream(seed, "test", 12)
    prob = np.zeros((K, J, C))
    for k in range(K):
        for j in range(J):
            a = np.full(C, 0.4)
            a[(k + j) % C] = 3.0
            prob[k, j] = rng.dirichlet(a) if C > 2 else [0.85, 0.15][::1 if (k + j) % 2 else -1]
    if C == 2:
        prob[0, :, 1] = 0.85
        prob[1, :, 1] = 0.2
        prob[2, : J // 2, 1], prob[2, J // 2:, 1] = 0.9, 0.1
        prob[:, :, 0] = 1 - prob[:, :, 1]
    cum = np.cumsum(prob[z], axis=2)
    Y = (rng.random((n, J))[:, :, None] >= cum).sum(axis=2).clip(0, C - 1).astype(np.int64)
    return Y, X, Z, names


def lca_model(Y: np.ndarray, names: list[str], reference: int = 0, **kw) -> CovariateMixture:
    inner = LatentClassModel(K)
    inner.setup(LatentClassModel.meta_from_array(Y))
    return CovariateMixture(inner, names[1:], reference=reference, **kw)


def gmm_data(n: int, seed: int = 2):
    X, Z, names = covariates(n, seed, c=2)
    beta = np.array([[0.0, 0.0, 0.0], [0.3, 0.9, -0.5], [-0.2, -0.7, 0.6]])
    z = draw_classes(Z, beta, seed)
    means = np.array([[0.0, 0.0], [3.0, 0.5], [-1.0, 3.0]])
    sd = np.array([[1.0, 0.7], [0.8, 1.2], [1.1, 0.9]])
    Y = means[z] + sd[z] * stream(seed, "test", 13).normal(size=(n, 2))
    return Y, X, Z, names


def gmm_model(Y: np.ndarray, names: list[str], **kw) -> CovariateMixture:
    inner = GaussianMixtureModel(K, covariance="diag", reg_covar=1e-6)
    inner.setup({"columns": ["y1", "y2"], "shift": [0.0, 0.0]})
    return CovariateMixture(inner, names[1:], **kw)


def fitted_lca(n: int = 1500, seed: int = 1, **kw):
    Y, X, Z, names = lca_data(n, seed)
    model = lca_model(Y, names)
    data = {"Y": Y, "Z": Z}
    fit = fit_em(model, data, n_starts=3, tol=1e-12, max_iter=5000, seed=3, **kw)
    return model, data, fit


def stepmix_fit(X_meas, X_cov, measurement: str, n_init: int = 2, **params):
    """StepMix's one-step covariate model fitted tightly (n_steps=1, structural 'covariate')."""
    stepmix = pytest.importorskip("stepmix.stepmix")
    sm = stepmix.StepMix(n_components=K, measurement=measurement, structural="covariate",
                         n_steps=1, n_init=n_init, max_iter=20000, abs_tol=1e-14, rel_tol=0.0,
                         random_state=5, verbose=0, progress_bar=0,
                         structural_params={"method": "newton-raphson", "max_iter": 1},
                         measurement_params=params or None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sm.fit(X_meas, X_cov)
    return sm, sm.score(X_meas, X_cov) * X_meas.shape[0]


def matched_beta(ours_cost: np.ndarray, beta_sm: np.ndarray, reference: int) -> np.ndarray:
    """StepMix's beta with its classes matched to ours (cost[ours, theirs]) and re-referenced."""
    rows, cols = linear_sum_assignment(ours_cost)
    perm = np.empty(K, dtype=int)
    perm[rows] = cols
    b = beta_sm[perm]
    return b - b[reference]


class TestAgainstStepMix:
    """StepMix reports every class's coefficients (its Newton step uses a pseudo-inverse of the
    over-parameterised Hessian); the differences from the reference class are compared."""

    @pytest.mark.parametrize("categories, measurement", [(2, "binary"), (3, "categorical")])
    def test_lca_same_maximum_and_coefficients(self, categories, measurement):
        """LCA (binary and three-category items) with three covariates: the same maximised
        log-likelihood and coefficient differences as StepMix's one-step fit, to 1e-6."""
        Y, X, Z, names = lca_data(1500, seed=6, J=8, C=categories)
        model = lca_model(Y, names)
        fit = fit_em(model, {"Y": Y, "Z": Z}, n_starts=4, tol=1e-14, max_iter=20000, seed=2)
        sm, ll_sm = stepmix_fit(Y.astype(float), X, measurement)
        assert fit.loglik == pytest.approx(ll_sm, rel=1e-9)
        pars = sm.get_parameters()
        pis = pars["measurement"]["pis"]
        if measurement == "binary":
            theirs = pis                                           # P(answer 1)
            ours = fit.params["prob"][:, :, 1]
        else:
            theirs = pis.reshape(K, Y.shape[1], -1)[:, :, :categories].reshape(K, -1)
            ours = fit.params["prob"][:, :, :categories].reshape(K, -1)
        cost = ((ours[:, None, :] - theirs[None, :, :]) ** 2).sum(axis=2)
        beta_sm = matched_beta(cost, pars["structural"]["beta"], model.reference)
        np.testing.assert_allclose(fit.params["beta"], beta_sm, rtol=1e-6, atol=1e-6)

    def test_gaussian_same_maximum_and_coefficients(self):
        """A diagonal Gaussian mixture with two covariates: StepMix's gaussian_diag one-step
        fit (the same reg_covar) gives the same maximum and coefficient differences."""
        Y, X, Z, names = gmm_data(1500)
        model = gmm_model(Y, names)
        fit = fit_em(model, {"X": Y, "Z": Z}, n_starts=4, tol=1e-14, max_iter=20000, seed=2)
        sm, ll_sm = stepmix_fit(Y, X, "gaussian_diag", reg_covar=1e-6)
        assert fit.loglik == pytest.approx(ll_sm, rel=1e-9)
        pars = sm.get_parameters()
        theirs = pars["measurement"]["means"]
        cost = ((fit.params["mean"][:, None, :] - theirs[None, :, :]) ** 2).sum(axis=2)
        beta_sm = matched_beta(cost, pars["structural"]["beta"], model.reference)
        np.testing.assert_allclose(fit.params["beta"], beta_sm, rtol=1e-6, atol=1e-6)


class TestModel:
    def test_log_joint_is_inner_density_plus_log_pi(self):
        """log p(y, z=k | x) = the family's log density (weights 1) + log softmax(z'beta)_k."""
        Y, X, Z, names = lca_data(50)
        model = lca_model(Y, names)
        prob = stream(1, "test", 1).dirichlet(np.ones(2), size=(K, Y.shape[1]))
        params = {"beta": BETA, "prob": prob, "weight": np.full(K, 1 / K)}
        direct = np.log(prob[:, np.arange(Y.shape[1]), Y].prod(axis=2)).T   # (n, K)
        pi = np.exp(Z @ BETA.T)
        pi /= pi.sum(axis=1, keepdims=True)
        np.testing.assert_allclose(model.log_joint({"Y": Y, "Z": Z}, params),
                                   direct + np.log(pi), rtol=1e-12)

    def test_free_vector_round_trip_and_names(self):
        """to_free/from_free invert each other; names are beta[k,name] (intercept first) then
        the family's without weights; the reference's row is reported, not free."""
        Y, X, Z, names = lca_data(50)
        model = lca_model(Y, names, reference=1)
        rng = stream(1, "test", 2)
        beta = logit.rereference(rng.normal(size=(K, 4)), 1)
        params = {"beta": beta, "prob": rng.dirichlet(np.ones(2), size=(K, Y.shape[1])),
                  "weight": np.full(K, 1 / K)}
        back = model.from_free(model.to_free(params))
        for key in ("beta", "prob"):
            np.testing.assert_allclose(back[key], params[key], atol=1e-15)
        rep = model.reported_names()
        assert rep[:4] == ["beta[1,intercept]", "beta[1,x1]", "beta[1,x2]", "beta[1,x3]"]
        assert "beta[2,x1]" not in model.free_names() and "beta[3,x1]" in model.free_names()
        assert not any(n.startswith("weight") for n in rep)
        assert model.n_free_parameters() == 2 * 4 + K * Y.shape[1]
        other = {**params, "beta": 2 * beta, "prob": np.full_like(params["prob"], 0.5)}
        J = model.reported_jacobian()      # every reported value is affine in the free ones
        np.testing.assert_allclose(J @ (model.to_free(params) - model.to_free(other)),
                                   model.reported_values(params) - model.reported_values(other),
                                   atol=1e-12)

    def test_analytic_derivatives_match_finite_differences(self):
        """Complete score and information (beta and the family's parameters) equal central
        differences of log_joint through from_free."""
        Y, X, Z, names = gmm_data(200)
        model = gmm_model(Y, names)
        rng = stream(2, "test", 3)
        params = {"beta": logit.rereference(rng.normal(size=(K, 3)) * 0.5, 0),
                  "mean": rng.normal(size=(K, 2)), "cov": rng.uniform(0.5, 2, size=(K, 2)),
                  "weight": np.full(K, 1 / K)}
        data = {"X": Y, "Z": Z}
        assert_score_matches_fd(model, data, params)
        assert_information_matches_fd(model, data, params)

    def test_permute_rereferences_and_keeps_probabilities(self):
        """Relabelling moves every class's parameters and puts the reference row back at 0,
        so each row's class probabilities are permuted, not changed."""
        Y, X, Z, names = lca_data(30)
        model = lca_model(Y, names)
        params = {"beta": BETA, "prob": np.full((K, Y.shape[1], 2), 0.5),
                  "weight": np.array([0.5, 0.3, 0.2])}
        perm = [2, 0, 1]
        out = model.permute(params, perm)
        assert np.all(out["beta"][0] == 0)
        np.testing.assert_allclose(logit.probabilities(Z, out["beta"]),
                                   logit.probabilities(Z, BETA)[:, perm], rtol=1e-12)
        np.testing.assert_allclose(out["weight"], params["weight"][perm])


class TestEstimation:
    def test_generalised_em_never_lowers_loglik(self):
        """Each EM-map evaluation (inner M-step + one Newton step with halving) raises the
        observed log-likelihood."""
        Y, X, Z, names = lca_data(800, seed=6)
        model = lca_model(Y, names)
        data = {"Y": Y, "Z": Z}
        from src.estimation.em import draw_random_params
        p = draw_random_params(model, data, stream(6, "test", 4))
        last = -np.inf
        for _ in range(40):
            p, ll = em_map(model, data, p)
            assert ll >= last - 1e-9 * abs(ll)
            last = ll

    def test_known_effects_recovered(self):
        """Simulated data: the coefficients are within 4 Louis standard errors of the truth,
        the reference class is class 1 of the canonical order, the weight the average
        predicted probabilities."""
        from src.inference.louis import louis_se
        n = 6000
        Y, X, Z, names = lca_data(n, seed=7)
        model = lca_model(Y, names)
        data = {"Y": Y, "Z": Z}
        fit = fit_em(model, data, n_starts=3, tol=1e-10, seed=1)
        # the simulated classes: 0 answers 1 with 0.85, 1 with 0.2, 2 half and half
        truth_of = [int(np.argmin(np.abs(fit.params["prob"][:, 0, 1] - v))) for v in (0.85, 0.2)]
        truth_of.append(3 - sum(truth_of))
        ours = np.empty_like(BETA)
        ours[truth_of] = BETA
        ours -= ours[0]
        se = louis_se(model, data, fit.params)
        names_r = model.reported_names()
        se_beta = np.array([se.se[names_r.index(f"beta[{k + 1},{c}]")]
                            for k in range(K) for c in model.design_names]).reshape(K, -1)
        assert np.all(np.abs(fit.params["beta"] - ours)[1:] <= 4 * se_beta[1:])
        assert np.all(fit.params["beta"][0] == 0)
        avg = logit.probabilities(Z, fit.params["beta"]).mean(axis=0)
        np.testing.assert_allclose(fit.params["weight"], avg, rtol=1e-12)
        assert np.all(np.diff(fit.params["weight"]) <= 0)          # LCA: decreasing weight

    def test_integer_weights_equal_replicated_rows(self):
        """Integer row weights give the estimate of the rows repeated that often."""
        from src.models.base import WEIGHT_KEY
        Y, X, Z, names = lca_data(600, seed=8)
        w = stream(8, "test", 5).integers(1, 4, size=600)
        rep = np.repeat(np.arange(600), w)
        model = lca_model(Y, names)
        a = fit_em(model, {"Y": Y, "Z": Z, WEIGHT_KEY: w.astype(float)}, n_starts=2,
                   tol=1e-15, max_iter=20000, seed=1)
        b = fit_em(model, {"Y": Y[rep], "Z": Z[rep]}, n_starts=2, tol=1e-15, max_iter=20000,
                   seed=1)
        assert a.loglik == pytest.approx(b.loglik, rel=1e-10)
        np.testing.assert_allclose(a.params["beta"], b.params["beta"], atol=1e-6)

    def test_chunks_and_engine_agree(self):
        """Chunk size and an in-process row engine over partitions give the same fit (the
        Newton passes go over the same rows)."""
        from src.estimation.engines import InMemoryEngine
        Y, X, Z, names = lca_data(900, seed=9)
        model = lca_model(Y, names)
        data = {"Y": Y, "Z": Z}
        init = fit_em(model, data, n_starts=1, max_iter=3, seed=1).params
        kw = dict(init_params=init, tol=1e-12, max_iter=5000, accelerate="none")
        a = fit_em(model, data, chunk_size=4096, **kw)
        b = fit_em(model, data, chunk_size=128, **kw)
        parts = [{k: v[i:i + 300] for k, v in data.items()} for i in range(0, 900, 300)]
        with InMemoryEngine(parts) as engine:
            c = fit_em(model, engine, chunk_size=300, **kw)
        d = fit_em(model, data, chunk_size=300, **kw)
        assert a.loglik == pytest.approx(b.loglik, rel=1e-12)
        np.testing.assert_allclose(a.params["beta"], b.params["beta"], atol=1e-8)
        np.testing.assert_array_equal(c.params["beta"], d.params["beta"])
        assert c.loglik == d.loglik

    def test_threads_give_the_same_bits(self):
        """Chunks computed on two threads (the kept per-chunk arrays shared) give the bits of
        one thread."""
        Y, X, Z, names = lca_data(2000, seed=13)
        model = lca_model(Y, names)
        data = {"Y": Y, "Z": Z}
        a = fit_em(model, data, n_starts=2, n_candidates=4, seed=1, chunk_size=300)
        b = fit_em(model, data, n_starts=2, n_candidates=4, seed=1, chunk_size=300, n_threads=2)
        assert a.loglik == b.loglik
        np.testing.assert_array_equal(a.params["beta"], b.params["beta"])

    def test_squarem_reaches_the_same_maximum(self):
        """SQUAREM on the free vector reaches plain EM's maximum."""
        model, data, a = fitted_lca(accelerate="squarem")
        _, _, b = fitted_lca(accelerate="none")
        assert a.loglik == pytest.approx(b.loglik, rel=1e-10)
        np.testing.assert_allclose(a.params["beta"], b.params["beta"], atol=1e-5)


def family_frame(family: str, n: int = 800, seed: int = 11) -> tuple[pd.DataFrame, dict]:
    """Two classes whose membership follows two covariates, for another family."""
    rng = stream(seed, "test", 20)
    X = rng.normal(size=(n, 2))
    Z, _ = logit.design(X)
    z = draw_classes(Z, np.array([[0.0, 0.0, 0.0], [0.5, 1.2, -0.8]]), seed)
    frame = pd.DataFrame({"c1": X[:, 0], "c2": X[:, 1]})
    if family == "mixreg":
        x = rng.normal(size=n)
        frame["x"], frame["y"] = x, np.where(z == 0, 1 + 2 * x, -1 - x) + 0.5 * rng.normal(size=n)
        return frame, {"target": "y"}
    if family == "gmm":
        Y = np.where(z[:, None] == 0, rng.normal(size=(n, 2)), 0.7 * rng.normal(size=(n, 2)) + [3, 1])
        frame["a"], frame["b"] = Y[:, 0], Y[:, 1]
        return frame, {}
    frame["t"] = np.where(z == 0, rng.exponential(1.0, n), rng.exponential(0.2, n))
    return frame, {}


class TestFamilies:
    @pytest.mark.parametrize("family", [
        "mixreg", "gmm", "examples/user_models/exponential_mixture.py:ExponentialMixture"])
    def test_fit_and_louis_equals_numerical(self, family):
        """Mixture regression, a full-covariance Gaussian mixture and a user model without a
        closed-form M-step (the generic M-step maximises beta too): the coefficients near the
        simulated ones and Louis' standard errors equal the numerical Hessian's."""
        from src.api import fit
        from src.inference.louis import louis_se
        from src.inference.numerical import numerical_se
        frame, opts = family_frame(family)
        res = fit(frame, family, 2, covariates=["c1", "c2"], n_starts=2, n_candidates=4,
                  seed=1, **opts)
        beta = res.params["beta"]
        truth = np.array([0.5, 1.2, -0.8]) * (1 if beta[1, 1] > 0 else -1)
        a = louis_se(res.model, res.data, res.params)
        b = numerical_se(res.model, res.data, res.params)
        se = a.se[[res.model.reported_names().index(f"beta[2,{c}]") for c in ("c1", "c2")]]
        assert np.all(np.abs(beta[1, 1:] - truth[1:]) < 4 * se)
        np.testing.assert_allclose(a.se, b.se, rtol=1e-4, atol=1e-10)


class TestStandardErrors:
    def test_bootstrap_replicates_aligned_and_rereferenced(self):
        """Bootstrap replicates from random starts (labels permuted at random) are aligned and
        re-referenced: the reference rows stay 0 and the coefficients' bootstrap SEs are
        Louis' within Monte-Carlo error."""
        from src.inference.bootstrap import bootstrap_se
        from src.inference.louis import louis_se
        model, data, fit = fitted_lca(1500, seed=12)
        boot = bootstrap_se(model, data, fit.params, n_bootstrap=30, seed=3, start="random",
                            n_starts=2, n_candidates=4)
        louis = louis_se(model, data, fit.params)
        names = model.reported_names()
        ref = [names.index(f"beta[1,{c}]") for c in model.design_names]
        assert np.all(boot.replicates[:, ref] == 0)
        slopes = [names.index(f"beta[{k},x{j}]") for k in (2, 3) for j in (1, 2, 3)]
        ratio = boot.se[slopes] / louis.se[slopes]
        assert np.all((ratio > 0.6) & (ratio < 1.6)), ratio

    def test_louis_equals_numerical_hessian(self):
        """Louis' observed information (analytic complete score and information) equals the
        numerical Hessian of the observed log-likelihood."""
        from src.inference.louis import louis_se
        from src.inference.numerical import numerical_se
        model, data, fit = fitted_lca(1200, seed=10)
        a = louis_se(model, data, fit.params)
        b = numerical_se(model, data, fit.params)
        ok = np.isfinite(a.se) & np.isfinite(b.se) & (a.se > 0)
        assert ok.sum() > 20
        np.testing.assert_allclose(a.se[ok], b.se[ok], rtol=2e-4)


# ------------------------------------------------------------------ the pipeline
import json
import signal

from tests.helpers import (assert_one_sentence, assert_same_results, check_rc, read_progress,
                           run_script, skip_line)
from tests.inprocess import run_main

ITEMS = [f"q{j + 1}" for j in range(8)]
BASE = ("--model", "lca", "--components", "3", "--columns", ",".join(ITEMS),
        "--covariates", "x1,x2,x3", "--n-starts", "2", "--n-candidates", "4", "--no-plots",
        "--save-interval", "0")


def frame_of(n: int, seed: int) -> pd.DataFrame:
    """Answers coded 1/2 (text) and three numeric covariates."""
    Y, X, Z, names = lca_data(n, seed)
    frame = pd.DataFrame(Y + 1, columns=ITEMS)
    for j, c in enumerate(names[1:]):
        frame[c] = np.round(X[:, j], 6)
    return frame


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("covariates")
    frame_of(700, 3).to_csv(folder / "d.csv", index=False)
    return folder


def _run(tmp_path, data_dir, *args, **kw):
    return run_script(tmp_path, "--data", str(data_dir / "d.csv"), *BASE, *args, **kw)


def _results(tmp_path):
    folder = tmp_path / "results" / "main_estimation"
    return (pd.read_csv(folder / "estimates.csv").set_index("parameter"),
            json.loads((folder / "fit.json").read_text(encoding="utf-8")),
            (folder / "report.md").read_text(encoding="utf-8"))


class TestPipeline:
    def test_files_match_the_library_and_report_odds_ratios(self, tmp_path, data_dir):
        """The script's estimates equal fit_em on the same arrays; estimates.csv has beta[k,name]
        rows (reference class 2 all 0); the report's odds ratios are exp(beta) of them."""
        check_rc(_run(tmp_path, data_dir, "--reference-class", "2", "--se-method", "louis"), 0)
        est, fitj, report = _results(tmp_path)
        assert (est.loc[[f"beta[2,{c}]" for c in ("intercept", "x1", "x2", "x3")],
                        "estimate"] == 0).all()
        frame = pd.read_csv(data_dir / "d.csv")
        Y = frame[ITEMS].to_numpy() - 1
        Z, names = logit.design(frame[["x1", "x2", "x3"]])
        model = lca_model(Y, names, reference=1)
        fit = fit_em(model, {"Y": Y, "Z": Z}, n_starts=3, tol=1e-10, seed=1)
        for k in range(K):
            for c, name in enumerate(names):
                assert est.loc[f"beta[{k + 1},{name}]", "estimate"] == pytest.approx(
                    fit.params["beta"][k, c], abs=2e-4)
        assert fitj["loglik"] == pytest.approx(fit.loglik, rel=1e-8)
        assert "## Covariates of class membership" in report and "Class 2 is the reference" in report
        b = est.loc["beta[3,x1]"]
        row = next(ln for ln in report.splitlines() if ln.startswith("| 3 | x1 |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[4]) == pytest.approx(np.exp(b["estimate"]), rel=1e-3)
        assert float(cells[5]) == pytest.approx(np.exp(b["ci_lower"]), rel=1e-3)
        assert float(cells[6]) == pytest.approx(np.exp(b["ci_upper"]), rel=1e-3)

    def test_sigkill_then_resume_and_two_workers(self, tmp_path, data_dir):
        """Killed in the middle of model_estimation and again of the bootstrap, the reruns
        resume and write the files of an uninterrupted run; two workers write the same."""
        args = ("--se-method", "all", "--n-bootstrap", "6", "--debug")
        ref = tmp_path / "ref"
        ref.mkdir()
        check_rc(_run(ref, data_dir, *args), 0)
        killed = _run(tmp_path, data_dir, *args, fault="kill:model_estimation:5")
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        assert read_progress(tmp_path)["current_phase"] == "model_estimation"
        killed = _run(tmp_path, data_dir, *args, fault="kill:standard_error_computation:4")
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        resumed = _run(tmp_path, data_dir, *args)
        check_rc(resumed, 0)
        assert skip_line("model_estimation") in resumed.stdout
        assert_same_results(tmp_path, ref)
        two = tmp_path / "two"
        two.mkdir()
        check_rc(_run(two, data_dir, *args, "--workers", "2"), 0)
        assert_same_results(two, ref)

    def test_bad_covariate_values(self, tmp_path, data_dir):
        """Text in a covariate column is refused naming the column and row; a missing value
        too unless --drop-missing, which drops the row."""
        frame = pd.read_csv(data_dir / "d.csv")
        frame["x2"] = frame["x2"].astype(object)
        frame.loc[5, "x2"] = "abc"
        frame.to_csv(tmp_path / "text.csv", index=False)
        proc = run_main(tmp_path, "--data", str(tmp_path / "text.csv"), *BASE, "--lang", "en")
        check_rc(proc, 2)
        assert_one_sentence(proc.stderr)
        assert "'x2'" in proc.stderr and "row 5" in proc.stderr and "'abc'" in proc.stderr
        frame = pd.read_csv(data_dir / "d.csv")
        frame.loc[[7, 9], "x3"] = np.nan
        frame.to_csv(tmp_path / "gap.csv", index=False)
        proc = run_main(tmp_path, "--data", str(tmp_path / "gap.csv"), *BASE, "--lang", "en")
        check_rc(proc, 2)
        assert "row 7" in proc.stderr and "--drop-missing" in proc.stderr
        check_rc(run_script(tmp_path, "--data", str(tmp_path / "gap.csv"), *BASE,
                            "--drop-missing", "--se-method", "none"), 0)
        _, fitj, _ = _results(tmp_path)
        assert fitj["rows"]["n_dropped"] == 2 and fitj["n_obs"] == 698

    def test_constant_and_dependent_covariates_refused(self, data_dir):
        """A covariate constant on the rows used, or a combination of the others, is a
        DataError naming it."""
        from src.api import fit
        from src.utils.errors import DataError
        frame = pd.read_csv(data_dir / "d.csv").astype({c: str for c in ITEMS})
        frame["x4"] = 2 * frame["x1"] - frame["x2"]
        frame["one"] = 1.0
        for covs, name in ((["x1", "x2", "x4"], "'x4'"), (["one", "x1"], "'one'")):
            with pytest.raises(DataError, match=name):
                fit(frame, "lca", 3, columns=ITEMS, covariates=covs, n_starts=1)

    def test_covariate_that_is_a_model_column_refused(self, tmp_path, data_dir):
        """A covariate named in --columns is refused before any work, in one sentence."""
        proc = run_script(tmp_path, "--data", str(data_dir / "d.csv"), "--model", "lca",
                          "--columns", "q1,q2,q3,x1", "--covariates", "x1")
        check_rc(proc, 2)
        assert_one_sentence(proc.stderr)
        assert "'x1'" in proc.stderr and "--columns" in proc.stderr

    def test_distal_three_step_on_the_covariate_model(self, tmp_path, data_dir):
        """--structural distal with --covariates: the measurement model is the covariate model
        (its beta rows, the plain run's estimates) and the distal rows follow."""
        frame = pd.read_csv(data_dir / "d.csv")
        frame["inc"] = stream(14, "test", 21).normal(size=len(frame))
        frame.to_csv(tmp_path / "dd.csv", index=False)
        check_rc(run_script(tmp_path, "--data", str(tmp_path / "dd.csv"), *BASE, "--se-method",
                            "louis", "--structural", "distal", "--distal", "inc",
                            "--structural-se", "step3"), 0)
        est, fitj, _ = _results(tmp_path)
        assert "beta[2,x1]" in est.index and "distal.mean[3,inc]" in est.index
        plain = tmp_path / "plain"
        plain.mkdir()
        check_rc(_run(plain, data_dir, "--se-method", "louis"), 0)
        est0, _, _ = _results(plain)
        assert est.loc["beta[2,x1]", "estimate"] == est0.loc["beta[2,x1]", "estimate"]

    def test_api_fit_with_covariates(self, data_dir):
        """fit(frame, covariates=[...]) fits the one-step model (the other columns are items)."""
        from src.api import fit
        frame = pd.read_csv(data_dir / "d.csv").astype({c: str for c in ITEMS})
        res = fit(frame, "lca", 3, covariates=["x1", "x2", "x3"], n_starts=2, seed=1)
        assert list(res.estimates.index[:4]) == ["beta[1,intercept]", "beta[1,x1]",
                                                 "beta[1,x2]", "beta[1,x3]"]
        assert res.predict_proba().shape == (700, K)
        assert res.params["weight"] == pytest.approx(
            logit.probabilities(res.data["Z"], res.params["beta"]).mean(axis=0), rel=1e-10)

    def test_api_several_k_with_covariates(self, data_dir):
        """Several K with covariates: each K's model is the covariate model (K = 1 has no free
        coefficient), BIC chooses the simulated 3 classes."""
        from src.api import fit
        frame = pd.read_csv(data_dir / "d.csv").astype({c: str for c in ITEMS})
        enum = fit(frame, "lca", "1-3", covariates=["x1", "x2", "x3"], n_starts=2,
                   n_candidates=4, seed=1)
        assert enum.selected_k == 3
        assert enum[1].model.n_free_parameters() == len(ITEMS)
        assert enum[2].model.n_free_parameters() == 4 + 2 * len(ITEMS)
        assert "beta[2,x3]" in enum[3].estimates.index
