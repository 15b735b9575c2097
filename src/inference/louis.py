"""Observed information by Louis' method (Louis 1982, JRSS B 44:226-233).

    I_obs = sum_i sum_k r_ik (-H_ik)  -  sum_i [ sum_k r_ik s_ik s_ik'  -  g_i g_i' ],
    g_i = sum_k r_ik s_ik,

with s_ik and H_ik the score and Hessian of log p(y_i, z_i=k | theta) in the free
parameterisation and r_ik the responsibilities at the estimate.  The first term is the
complete information I_c; the second the conditional variance of the complete score.  Rows
are processed in chunks with two GEMMs each, so memory is bounded by the chunk size
(chunk x K x P), not by N.  The largest eigenvalue of I_c^{-1}(I_c - I_obs) is the largest
fraction of missing information (EM's rate of convergence).
"""

from __future__ import annotations

import numpy as np
from scipy import linalg
from scipy.linalg import blas
from threadpoolctl import threadpool_limits

from ..models.base import Data, MixtureModel, Params
from . import derivatives as dv
from .results import SEResult, boundary_parameters, invert_information, wald_result

__all__ = ["louis_information", "louis_se", "max_fraction_missing_info"]


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


def louis_information(model: MixtureModel, data: Data, params: Params, *,
                      chunk_size: int = 4096,
                      skip: set[int] | frozenset = frozenset(),
                      mask_zero_resp: bool = False,
                      use_fast: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(I_obs, I_c)``, each (P, P), accumulated chunk by chunk.

    Parameters in ``skip`` (on the boundary) have their score columns zeroed and their rows
    and columns set to NaN, so a non-finite derivative there cannot spread to the others.
    Optional model methods ``score_variance_moments(data, params, resp)`` (additive over
    chunks; None: not available) and ``score_variance_from_moments(params, moments)`` give
    the second term without per-row scores; when it is not finite outside ``skip``, the
    per-row path below is used instead (as with ``use_fast=False``).
    """
    theta = model.to_free(params)
    P = theta.size
    K = model.n_components
    I_c = np.zeros((P, P))
    steps_s = steps_h = None
    if not dv.has_analytic_score(model, data, params) or \
            model.complete_information({k: v[:1] for k, v in data.items()}, params,
                                       np.full((1, K), 1.0 / K)) is None:
        u = dv.natural_scales(model, data, params, chunk_size=chunk_size, skip=skip)
        steps_s = dv.feasible_steps(model, theta, dv.EPS ** (1 / 3) * u, factor=1.0, skip=skip)
        steps_h = dv.feasible_steps(model, theta, dv.EPS ** (1 / 4) * u, factor=2.0, skip=skip)
        for j in skip:  # never used: the columns are discarded
            steps_s[j] = steps_h[j] = max(abs(theta[j]), 1.0)
    skip_idx = np.array(sorted(skip), dtype=int)
    rows = _score_rows(chunk_size, K, P)
    acc = _ScoreVariance(P)
    fast = getattr(model, "score_variance_moments", None) if use_fast and steps_s is None else None
    if not hasattr(model, "score_variance_from_moments"):
        fast = None
    moments, n_fast = None, 0
    for chunk in dv.iter_chunks(data, chunk_size):
        resp, _ = model.e_step(chunk, params)
        part = fast(chunk, params, resp) if fast is not None else None
        if part is not None:
            moments = part if moments is None else moments + part
            n_fast += 1
        elif n_fast:  # declined after all: start again on the per-row path
            return louis_information(model, data, params, chunk_size=chunk_size, skip=skip,
                                     use_fast=False)
        else:
            fast = None
        for a in range(0, resp.shape[0] if fast is None else 0, rows):
            block = {key: v[a:a + rows] for key, v in chunk.items()}
            r = resp[a:a + rows]
            S = dv.complete_score(model, block, params, steps_s)  # (n, K, P)
            if skip_idx.size:
                S[:, :, skip_idx] = 0.0
            if mask_zero_resp:  # r_ik = 0 terms vanish even where s_ik is infinite
                S = np.where(r[:, :, None] > 0, S, 0.0)
            acc.add(S, r)
        Ic_chunk = np.array(dv.complete_information(model, chunk, params, resp, steps_h))
        if skip_idx.size:
            Ic_chunk[skip_idx, :] = 0.0
            Ic_chunk[:, skip_idx] = 0.0
        I_c += Ic_chunk
    if fast is not None:
        V_fast = np.array(model.score_variance_from_moments(params, moments), dtype=float)
        V_fast[skip_idx, :] = 0.0
        V_fast[:, skip_idx] = 0.0
        if not np.all(np.isfinite(V_fast)):
            return louis_information(model, data, params, chunk_size=chunk_size, skip=skip,
                                     use_fast=False)
        V = V_fast
    else:
        V = acc.total()
    if not mask_zero_resp and not np.all(np.isfinite(V)):
        return louis_information(model, data, params, chunk_size=chunk_size, skip=skip,
                                 mask_zero_resp=True)
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
