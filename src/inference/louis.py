"""Observed information by Louis' method (Louis 1982, JRSS B 44:226-233).

    I_obs = sum_i sum_k r_ik (-H_ik)  -  sum_i [ sum_k r_ik s_ik s_ik'  -  g_i g_i' ],
    g_i = sum_k r_ik s_ik,

with s_ik and H_ik the score and Hessian of log p(y_i, z_i=k | theta) in the free
parameterisation and r_ik the responsibilities at the estimate.  The first term is the
complete information I_c; the second the conditional variance of the complete score.  Rows
are processed in chunks with two GEMMs each, so memory is bounded by the chunk size
(chunk x K x P), not by N.  The second term comes from the first strategy of a fixed list
that gives a finite matrix: the model's weighted moments (no per-row scores), the per-row
scores, the per-row scores without their zero-responsibility terms.  The largest eigenvalue
of I_c^{-1}(I_c - I_obs) is the largest fraction of missing information (EM's rate of
convergence).
"""

from __future__ import annotations

import numpy as np
from scipy import linalg
from scipy.linalg import blas
from threadpoolctl import threadpool_limits

from ..models.base import Data, MixtureModel, Params
from . import derivatives as dv
from .results import SEResult, boundary_parameters, invert_information, wald_result

__all__ = ["louis_information", "louis_se", "max_fraction_missing_info", "MOMENTS", "SCORES",
           "MASKED_SCORES"]


def _score_rows(chunk_size: int, K: int, P: int) -> int:
    """Rows per score block: at most ``chunk_size``, and about 8 MB of scores (cache-sized)."""
    return int(max(16, min(int(chunk_size), (1 << 20) // max(K * P, 1))))


class _ScoreVariance:
    """Accumulates sum_i [sum_k r_ik s_ik s_ik' - g_i g_i'] block by block of rows.

    Class k's score is usually zero outside its own parameters and the weights; the
    columns that are nonzero somewhere in a block are found per class, so the first term
    costs K n c_k^2 instead of K n P^2.  g g' is one symmetric rank-n update (BLAS syrk,
    upper triangle, accumulated in place).
    """

    def __init__(self, P: int) -> None:
        self.first = np.zeros((P, P))
        self.ggt = np.zeros((P, P), order="F")

    def add(self, S: np.ndarray, resp: np.ndarray) -> None:
        K = S.shape[1]
        nz = np.any(S, axis=0)  # (K, P)
        for k in range(K):
            cols = np.flatnonzero(nz[k])
            if cols.size:
                A = S[:, k, cols]
                self.first[np.ix_(cols, cols)] += (resp[:, k, None] * A).T @ A
        G = np.einsum("nk,nkp->np", resp, S)
        self.ggt = blas.dsyrk(1.0, G.T, beta=1.0, c=self.ggt, trans=0, lower=0, overwrite_c=1)

    def total(self) -> np.ndarray:
        upper = np.triu(self.ggt)
        return self.first - (upper + np.triu(upper, 1).T)


#: the ways to Louis' second term, tried in this order until one gives a finite matrix
MOMENTS = "moments"            # the model's weighted moments (no per-row scores), when it has them
SCORES = "scores"              # per-row complete scores
MASKED_SCORES = "masked scores"  # per-row scores with every r_ik = 0 term dropped


def _strategies(model: MixtureModel, analytic: bool, use_fast: bool,
                mask_zero_resp: bool) -> list[str]:
    """The strategies :func:`louis_information` tries, in order.

    Moments first when the model offers them (and its derivatives are analytic); then the
    per-row scores; then, if those are not finite, the scores with the r_ik = 0 terms
    masked, which vanish even where s_ik is infinite (an impossible class for a row).
    """
    plan = []
    if use_fast and analytic and hasattr(model, "score_variance_moments") \
            and hasattr(model, "score_variance_from_moments"):
        plan.append(MOMENTS)
    if not mask_zero_resp:
        plan.append(SCORES)
    plan.append(MASKED_SCORES)
    return plan


def _one_pass(model: MixtureModel, data: Data, params: Params, strategy: str, *,
              chunk_size: int, steps_s: np.ndarray | None, steps_h: np.ndarray | None,
              skip_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(I_c, V)`` from one pass over the rows, V the second term by ``strategy``.

    None when the model declines the moments for some chunk (its
    ``score_variance_moments`` returned None): the caller goes on to the next strategy.
    """
    P = model.to_free(params).size
    I_c = np.zeros((P, P))
    acc = _ScoreVariance(P)
    moments = None
    rows = _score_rows(chunk_size, model.n_components, P)
    for chunk in dv.iter_chunks(data, chunk_size):
        resp, _ = model.e_step(chunk, params)
        if strategy == MOMENTS:
            part = model.score_variance_moments(chunk, params, resp)
            if part is None:
                return None
            moments = part if moments is None else moments + part
        else:
            for a in range(0, resp.shape[0], rows):
                block = {key: v[a:a + rows] for key, v in chunk.items()}
                r = resp[a:a + rows]
                S = dv.complete_score(model, block, params, steps_s)  # (n, K, P)
                if skip_idx.size:
                    S[:, :, skip_idx] = 0.0
                if strategy == MASKED_SCORES:  # r_ik = 0 terms vanish even where s_ik is infinite
                    S = np.where(r[:, :, None] > 0, S, 0.0)
                acc.add(S, r)
        Ic_chunk = np.array(dv.complete_information(model, chunk, params, resp, steps_h))
        if skip_idx.size:
            Ic_chunk[skip_idx, :] = 0.0
            Ic_chunk[:, skip_idx] = 0.0
        I_c += Ic_chunk
    if strategy != MOMENTS:
        return I_c, acc.total()
    V = np.array(model.score_variance_from_moments(params, moments), dtype=float)
    V[skip_idx, :] = 0.0
    V[:, skip_idx] = 0.0
    return I_c, V


def louis_information(model: MixtureModel, data: Data, params: Params, *,
                      chunk_size: int = 4096,
                      skip: set[int] | frozenset = frozenset(),
                      mask_zero_resp: bool = False,
                      use_fast: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(I_obs, I_c)``, each (P, P), accumulated chunk by chunk.

    Parameters in ``skip`` (on the boundary) have their score columns zeroed and their rows
    and columns set to NaN, so a non-finite derivative there cannot spread to the others.
    The second term is computed by the first of :func:`_strategies` that gives a finite
    matrix (the last one's result is kept whatever it is): the model's optional
    ``score_variance_moments(data, params, resp)`` (additive over chunks; None: declined) and
    ``score_variance_from_moments(params, moments)`` unless ``use_fast`` is False, then the
    per-row scores, then the per-row scores with zero-responsibility terms masked (at once
    when ``mask_zero_resp``).
    """
    theta = model.to_free(params)
    K = model.n_components
    steps_s = steps_h = None
    analytic = dv.has_analytic_score(model, data, params) and model.complete_information(
        {k: v[:1] for k, v in data.items()}, params, np.full((1, K), 1.0 / K)) is not None
    if not analytic:
        u = dv.natural_scales(model, data, params, chunk_size=chunk_size, skip=skip)
        steps_s = dv.feasible_steps(model, theta, dv.EPS ** (1 / 3) * u, factor=1.0, skip=skip)
        steps_h = dv.feasible_steps(model, theta, dv.EPS ** (1 / 4) * u, factor=2.0, skip=skip)
        for j in skip:  # never used: the columns are discarded
            steps_s[j] = steps_h[j] = max(abs(theta[j]), 1.0)
    skip_idx = np.array(sorted(skip), dtype=int)
    result = None
    for strategy in _strategies(model, analytic, use_fast, mask_zero_resp):
        out = _one_pass(model, data, params, strategy, chunk_size=chunk_size, steps_s=steps_s,
                        steps_h=steps_h, skip_idx=skip_idx)
        if out is not None:
            result = out
            if np.all(np.isfinite(out[1])):
                break
    I_c, V = result
    I_c = 0.5 * (I_c + I_c.T)
    I_obs = I_c - 0.5 * (V + V.T)
    for j in skip:
        I_obs[j, :] = I_obs[:, j] = np.nan
        I_c[j, :] = I_c[:, j] = np.nan
    return I_obs, I_c


def max_fraction_missing_info(I_obs: np.ndarray, I_c: np.ndarray, keep: np.ndarray) -> float:
    """Largest eigenvalue of I_c^{-1}(I_c - I_obs) on the identified parameters ``keep``."""
    if keep.size == 0:
        return float("nan")
    A = I_c[np.ix_(keep, keep)]
    B = I_obs[np.ix_(keep, keep)]
    try:
        evals = linalg.eigh(A - B, A, eigvals_only=True)
    except (linalg.LinAlgError, ValueError):
        return float("nan")
    return float(evals[-1])


def louis_se(model: MixtureModel, data: Data, params: Params, *,
             chunk_size: int = 4096) -> SEResult:
    """Standard errors from the inverse of Louis' observed information.

    Boundary parameters and directions where I_obs is singular or not positive definite
    get NaN standard errors with a note naming them; ``extra["max_fraction_missing_info"]``
    holds EM's rate of convergence.
    """
    with threadpool_limits(1):
        bnd = boundary_parameters(model, params)
        I_obs, I_c = louis_information(model, data, params, chunk_size=chunk_size,
                                       skip=set(bnd))
        cov, dropped = invert_information(I_obs, bnd)
        keep = np.array([i for i in range(I_obs.shape[0]) if i not in dropped], dtype=int)
        frac = max_fraction_missing_info(I_obs, I_c, keep)
    return wald_result("louis", model, params, cov, dropped,
                       extra={"max_fraction_missing_info": frac})
