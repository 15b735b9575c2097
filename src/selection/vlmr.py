"""Vuong-Lo-Mendell-Rubin likelihood-ratio test of K-1 against K classes, and its adjusted version.

Vuong (1989, Theorem 3.3); Lo, Mendell & Rubin (2001).  With f the K-class model (p_K free
parameters), g the K-1-class model (p_{K-1}) and ``LR = 2 (LL_K - LL_{K-1})``, Vuong's
theorem refers LR to the distribution of ``sum_j lambda_j Z_j^2`` (Z_j independent standard
normals), the lambda_j being the eigenvalues of his joint matrix

    W = [[ S_ff I_f^-1,   S_fg I_g^-1 ],
         [-S_gf I_f^-1,  -S_gg I_g^-1 ]]      ((p_K + p_{K-1}) square)

with S_ab = sum_i g_i^a (g_i^b)' the outer products of the per-row observed scores of both
models, cross-model products included (g_i = sum_k tau_ik s_ik, Fisher's identity, with
s_ik the complete-data score of :func:`src.inference.derivatives.complete_score`), and I_f,
I_g the observed informations (Louis' method, :func:`src.inference.louis.louis_information`).
(Vuong writes W with -A^-1 B; A = -I/n and B = S/n give the form above.)  W is similar to
the symmetric ``M^1/2 D M^1/2`` with ``M = L^1/2 S L^1/2``, L = diag(I_f^-1, I_g^-1) and
D = diag(+1, -1), so its eigenvalues are real; some are negative, so the p-value method takes
signed weights: Imhof's (1961) numerical inversion of the characteristic function
(:func:`weighted_chi2_sf`), checked against a Monte-Carlo simulation of the same weighted sum
from a fixed stream (``stream(seed, "vlmr", K)``, :data:`N_MONTE_CARLO` draws); when they
disagree by more than 5 Monte-Carlo standard errors + 0.001 the Monte-Carlo value is used and
a note says so.  ``vlmr_p = P(sum lambda_j Z_j^2 >= LR)``.

LMR's ad hoc adjusted statistic ``LR / (1 + 1 / ((p_K - p_{K-1}) ln n))`` is referred to the
same distribution (``lmr_p``).

Parameters on the boundary of their space (an LCA probability of 0 or 1, an empty class)
are held fixed: their scores and informations are left out, with a note.  When a remaining
information is not positive definite (or not finite) the p-values are NaN with a note; the
statistics are still reported.  Caveat (Jeffries 2003): the regularity conditions of Vuong's
theorem fail for K-1 against K classes (the smaller model sits on the boundary of the
larger, where its parameters are not identified), so these p-values are approximate at best;
the bootstrap likelihood-ratio test (:mod:`.blrt`) is preferred.

Row weights (frequency weights: a row stands for w identical rows): the log-likelihoods,
the informations and S are weighted sums (``S = sum_i w_i g_i g_i'``) and n is the sum of the
weights, so integer weights give the replicated rows' test.  Sampling weights are refused
before the run (:func:`src.pipeline.checks.check_weight_options`).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from scipy import integrate, stats

from ..inference import derivatives as dv
from ..inference.louis import louis_information
from ..inference.results import boundary_parameters
from ..models.base import Data, MixtureModel, Params, split_weight
from ..utils.messages import register, t
from ..utils.rng import stream

__all__ = ["vlmr_test", "weighted_chi2_sf", "weighted_chi2_sf_mc", "vuong_matrix",
           "vuong_weights", "observed_score_rows", "lmr_adjusted", "N_MONTE_CARLO"]

#: Monte-Carlo draws of the weighted sum (cross-check, and fallback)
N_MONTE_CARLO = 100_000
#: eigenvalues below this fraction of the largest (in absolute value) are taken as 0
ZERO_WEIGHT = 1e-10
#: a scaled information whose smallest eigenvalue is below this fraction of its largest is singular
RCOND = 1e-10

register({
    "vlmr.boundary": {"en": "VLMR/LMR: {n} parameters on the boundary of their space ({names}) are held fixed.",
                      "zh": "VLMR/LMR：{n} 个位于参数空间边界的参数（{names}）被视为固定。"},
    "vlmr.singular": {"en": "VLMR/LMR: the {k}-class model's information matrix is singular or not positive definite, so the p-values are NaN.",
                      "zh": "VLMR/LMR：{k} 类模型的信息矩阵奇异或非正定，因此 p 值为 NaN。"},
    "vlmr.not_finite": {"en": "VLMR/LMR: the per-row scores of the {k}-class model are not finite, so the p-values are NaN.",
                        "zh": "VLMR/LMR：{k} 类模型的逐行得分不是有限值，因此 p 值为 NaN。"},
    "vlmr.monte_carlo": {"en": "VLMR/LMR: Imhof's integral ({imhof:.4g}) disagreed with the Monte-Carlo simulation ({mc:.4g}), so the Monte-Carlo p-values are reported.",
                         "zh": "VLMR/LMR：Imhof 积分（{imhof:.4g}）与蒙特卡罗模拟（{mc:.4g}）不一致，因此报告蒙特卡罗 p 值。"},
    "vlmr.negative": {"en": "VLMR/LMR: the {k1}-class log-likelihood is below the {k0}-class one (LR {lr:.4g}); the {k1}-class fit missed its maximum.",
                      "zh": "VLMR/LMR：{k1} 类模型的对数似然低于 {k0} 类模型（LR {lr:.4g}）；{k1} 类拟合未达到最大值。"},
})


# ------------------------------------------------------ weighted chi-squares
def _normalised(weights: Any, x: float) -> tuple[np.ndarray, float]:
    lam = np.asarray(weights, dtype=float).ravel()
    scale = float(np.max(np.abs(lam))) if lam.size else 0.0
    if scale == 0.0 or not np.isfinite(scale):
        return np.zeros(0), float(x)
    lam = lam / scale
    return lam[np.abs(lam) > ZERO_WEIGHT], float(x) / scale


def weighted_chi2_sf(weights: Any, x: float) -> float:
    """``P(sum_j w_j Z_j^2 > x)`` for real (signed) weights, by Imhof's (1961) formula.

        P = 1/2 + (1/pi) int_0^inf sin(theta(u)) / (u rho(u)) du,
        theta(u) = 1/2 sum_j arctan(w_j u) - x u / 2,  rho(u) = prod_j (1 + w_j^2 u^2)^(1/4).

    The integral runs on [0, a] by adaptive quadrature and on [a, inf) as two Fourier
    integrals (QUADPACK's QAWF) of the slowly varying amplitudes sin(phi)/(u rho) and
    cos(phi)/(u rho), phi = theta + x u / 2.  Weights are scaled by the largest |w_j|;
    those below 1e-10 of it are 0.  One weight: the chi-square's closed form.  NaN when
    ``x`` or a weight is not finite.
    """
    if not np.isfinite(x) or not np.all(np.isfinite(np.asarray(weights, dtype=float))):
        return float("nan")
    lam, x = _normalised(weights, x)
    if lam.size == 0:
        return 1.0 if x < 0 else 0.0
    if lam.size == 1:
        w = lam[0]
        return float(stats.chi2.sf(x / w, 1)) if w > 0 else float(stats.chi2.cdf(x / w, 1))

    def phi(u: float) -> float:
        return 0.5 * float(np.sum(np.arctan(lam * u)))

    def amplitude(u: float) -> float:
        return u * math.exp(0.25 * float(np.sum(np.log1p((lam * u) ** 2))))

    def full(u: float) -> float:
        if u == 0.0:
            return 0.5 * (float(lam.sum()) - x)
        return math.sin(phi(u) - 0.5 * x * u) / amplitude(u)

    omega = 0.5 * x
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        if abs(omega) < 1e-8:
            total = integrate.quad(full, 0.0, np.inf, limit=1000, epsabs=1e-12)[0]
        else:
            a = max(1.0, 10.0 / abs(omega))
            head = integrate.quad(full, 0.0, a, limit=2000, epsabs=1e-12, epsrel=1e-10)[0]
            # sin(phi - omega u) = sin(phi) cos(omega u) - cos(phi) sin(omega u)
            c = integrate.quad(lambda u: math.sin(phi(u)) / amplitude(u), a, np.inf,
                               weight="cos", wvar=abs(omega), limlst=200)[0]
            s = integrate.quad(lambda u: math.cos(phi(u)) / amplitude(u), a, np.inf,
                               weight="sin", wvar=abs(omega), limlst=200)[0]
            total = head + c - math.copysign(1.0, omega) * s
    return float(min(max(0.5 + total / math.pi, 0.0), 1.0))


def weighted_chi2_sf_mc(weights: Any, xs: Any, rng: np.random.Generator,
                        n_draws: int = N_MONTE_CARLO, block: int = 10_000) -> np.ndarray:
    """Monte-Carlo ``P(sum_j w_j Z_j^2 >= x)`` for each x in ``xs`` (the same draws for all)."""
    lam = np.asarray(weights, dtype=float).ravel()
    xs = np.atleast_1d(np.asarray(xs, dtype=float))
    hits = np.zeros(xs.size)
    done = 0
    while done < n_draws:
        m = min(block, n_draws - done)
        q = (rng.standard_normal((m, lam.size)) ** 2) @ lam
        hits += (q[:, None] >= xs[None, :]).sum(axis=0)
        done += m
    return hits / n_draws


# ---------------------------------------------------------------- Vuong's W
def vuong_matrix(S: np.ndarray, info_big: np.ndarray, info_small: np.ndarray) -> np.ndarray:
    """Vuong's W from the joint score outer products ``S`` (big's parameters first) and the
    two observed informations (module doc)."""
    p = info_big.shape[0]
    Ib, Is = np.linalg.inv(info_big), np.linalg.inv(info_small)
    W = np.empty_like(S, dtype=float)
    W[:p, :p] = S[:p, :p] @ Ib
    W[:p, p:] = S[:p, p:] @ Is
    W[p:, :p] = -S[p:, :p] @ Ib
    W[p:, p:] = -S[p:, p:] @ Is
    return W


def _inv_sqrt(info: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh(0.5 * (info + info.T))
    return (vecs / np.sqrt(vals)) @ vecs.T


def vuong_weights(S: np.ndarray, info_big: np.ndarray, info_small: np.ndarray) -> np.ndarray:
    """The eigenvalues of :func:`vuong_matrix` (real), largest first, from the symmetric
    similar matrix ``M^1/2 D M^1/2``."""
    p, q = info_big.shape[0], info_small.shape[0]
    L = np.zeros((p + q, p + q))
    L[:p, :p] = _inv_sqrt(info_big)
    L[p:, p:] = _inv_sqrt(info_small)
    M = L @ (0.5 * (S + S.T)) @ L
    vals, vecs = np.linalg.eigh(0.5 * (M + M.T))
    root = (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T
    D = np.concatenate([np.ones(p), -np.ones(q)])
    return np.sort(np.linalg.eigvalsh((root * D) @ root))[::-1]


def _score_steps(model: MixtureModel, data: Data, params: Params, skip: set[int],
                 chunk_size: int) -> np.ndarray | None:
    """Finite-difference steps for models without analytic scores (as Louis' method takes)."""
    if dv.has_analytic_score(model, data, params):
        return None
    theta = model.to_free(params)
    u = dv.natural_scales(model, data, params, chunk_size=chunk_size, skip=skip)
    steps = dv.feasible_steps(model, theta, dv.EPS ** (1 / 3) * u, factor=1.0, skip=skip)
    for j in skip:
        steps[j] = max(abs(theta[j]), 1.0)
    return steps


def observed_score_rows(model: MixtureModel, data: Data, params: Params,
                        steps: np.ndarray | None = None) -> np.ndarray:
    """Per-row observed scores g_i = sum_k tau_ik s_ik (n, P); zero-responsibility terms dropped
    (row weights, if any, are not applied here)."""
    data = split_weight(data)[0]
    resp, _ = model.e_step(data, params)
    S = dv.complete_score(model, data, params, steps)
    with np.errstate(invalid="ignore"):
        S = np.where(resp[:, :, None] > 0, S, 0.0)
    return np.einsum("nk,nkp->np", resp, S)


def _positive_definite(info: np.ndarray) -> bool:
    if info.size == 0:
        return True
    if not np.all(np.isfinite(info)):
        return False
    d = np.diag(info)
    if np.any(d <= 0):
        return False
    isd = 1.0 / np.sqrt(d)
    vals = np.linalg.eigvalsh(0.5 * (info + info.T) * np.outer(isd, isd))
    return bool(vals[0] > RCOND * vals[-1])


def _loglik(model: MixtureModel, data: Data, params: Params, chunk_size: int) -> float:
    """The (weighted) log-likelihood, chunk by chunk."""
    total = 0.0
    for chunk in dv.iter_chunks(data, chunk_size):
        rows, w = split_weight(chunk)
        total += (model.loglik(rows, params) if w is None
                  else float(w @ model.loglik_rows(rows, params)))
    return total


def lmr_adjusted(lr: float, p_big: int, p_small: int, n: float) -> float:
    """Lo, Mendell & Rubin's adjusted statistic LR / (1 + 1 / ((p_K - p_{K-1}) ln n))."""
    return float(lr / (1.0 + 1.0 / ((p_big - p_small) * math.log(n))))


# ------------------------------------------------------------------- the test
def vlmr_test(model_small: MixtureModel, model_big: MixtureModel, data: Data,
              params_small: Params, params_big: Params, *, seed: int,
              chunk_size: int = 4096, n_monte_carlo: int = N_MONTE_CARLO) -> dict[str, Any]:
    """VLMR and LMR tests of ``model_small`` (K-1 classes) against ``model_big`` (K).

    Returns ``lr``, ``vlmr_p``, ``lmr_statistic``, ``lmr_p``, ``weights`` (eigenvalues of W,
    largest first), ``method`` (``"imhof"`` or ``"monte carlo"``), ``notes``, and
    ``vlmr_p_mc``/``lmr_p_mc`` (the Monte-Carlo values), ``n_monte_carlo``, ``n_obs``,
    ``n_params_small``/``n_params_big``, ``n_fixed_small``/``n_fixed_big`` (boundary
    parameters held fixed).  Never raises for a singular information: NaN p-values, a note.
    """
    k0, k1 = model_small.n_components, model_big.n_components
    ps = {k: np.asarray(v, dtype=float) for k, v in params_small.items()}
    pb = {k: np.asarray(v, dtype=float) for k, v in params_big.items()}
    weighted = split_weight(data)[1] is not None
    n = dv.total_weight(data) if weighted else dv.n_rows(data)
    P_small, P_big = model_small.n_free_parameters(), model_big.n_free_parameters()
    ll_small = _loglik(model_small, data, ps, chunk_size)
    ll_big = _loglik(model_big, data, pb, chunk_size)
    lr = 2.0 * (ll_big - ll_small)
    lmr = lmr_adjusted(lr, P_big, P_small, n)
    notes: list[str] = []
    if lr < 0:
        notes.append(t("vlmr.negative", k0=k0, k1=k1, lr=lr))
    out: dict[str, Any] = {"lr": float(lr), "vlmr_p": float("nan"), "lmr_statistic": lmr,
                           "lmr_p": float("nan"), "weights": [], "method": "imhof",
                           "notes": notes, "vlmr_p_mc": float("nan"), "lmr_p_mc": float("nan"),
                           "n_monte_carlo": int(n_monte_carlo), "n_obs": n,
                           "n_params_small": P_small, "n_params_big": P_big}

    parts = []
    for model, params, k in ((model_big, pb, k1), (model_small, ps, k0)):
        bnd = boundary_parameters(model, params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            I_obs, _ = louis_information(model, data, params, chunk_size=chunk_size, skip=set(bnd))
        keep = np.array([j for j in range(I_obs.shape[0]) if j not in bnd], dtype=int)
        steps = _score_steps(model, data, params, set(bnd), chunk_size)
        parts.append((model, params, k, bnd, I_obs[np.ix_(keep, keep)], keep, steps))
    out["n_fixed_big"], out["n_fixed_small"] = len(parts[0][3]), len(parts[1][3])
    fixed = [model.free_names()[j] for model, _, _, bnd, *_ in parts for j in sorted(bnd)]
    if fixed:
        shown = ", ".join(fixed[:6]) + (", ..." if len(fixed) > 6 else "")
        notes.append(t("vlmr.boundary", n=len(fixed), names=shown))
    for model, _, k, _, info, *_ in parts:
        if not _positive_definite(info):
            notes.append(t("vlmr.singular", k=k))
            return out

    p_b, p_s = parts[0][5].size, parts[1][5].size
    S = np.zeros((p_b + p_s, p_b + p_s))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for chunk in dv.iter_chunks(data, chunk_size):
            rows, w = split_weight(chunk)
            G = np.concatenate([observed_score_rows(model, rows, params, steps)[:, keep]
                                for model, params, _, _, _, keep, steps in parts], axis=1)
            S += G.T @ (G if w is None else G * w[:, None])
    if not np.all(np.isfinite(S)):
        bad = k1 if not np.all(np.isfinite(S[:p_b, :p_b])) else k0
        notes.append(t("vlmr.not_finite", k=bad))
        return out
    weights = vuong_weights(S, parts[0][4], parts[1][4])
    out["weights"] = [float(w) for w in weights]
    rng = stream(seed, "vlmr", k1)
    mc = weighted_chi2_sf_mc(weights, [lr, lmr], rng, n_monte_carlo)
    out["vlmr_p_mc"], out["lmr_p_mc"] = float(mc[0]), float(mc[1])
    exact = [weighted_chi2_sf(weights, lr), weighted_chi2_sf(weights, lmr)]
    agree = all(np.isfinite(e) and abs(e - m) <= 5.0 * math.sqrt(max(m * (1 - m), 1.0 / n_monte_carlo)
                                                                / n_monte_carlo) + 1e-3
                for e, m in zip(exact, mc))
    if agree:
        out["vlmr_p"], out["lmr_p"] = exact
    else:
        out["vlmr_p"], out["lmr_p"], out["method"] = float(mc[0]), float(mc[1]), "monte carlo"
        notes.append(t("vlmr.monte_carlo", imhof=exact[0], mc=mc[0]))
    return out
