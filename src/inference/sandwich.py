"""Sandwich (robust, Huber-White) standard errors, with row weights for survey data.

    cov = A^-1 B A^-1,   A = sum_i w_i I_i  (Louis' observed information, weighted),
                         B = sum_i c_i g_i g_i',

in the free parameterisation, with g_i = sum_k r_ik s_ik the observed score of row i
(Fisher's identity; the ``g_i`` of :mod:`.louis`) at the estimate and

* unweighted rows: c_i = 1 (the usual robust sandwich, White 1982; valid when the model is
  misspecified, and close to Louis' when it is not);
* frequency weights: c_i = w_i (a row standing for w_i identical independent rows: with
  integer weights this is exactly the sandwich of the data with each row replicated);
* sampling weights (survey design): c_i = w_i^2, each row an independent cluster (a
  primary sampling unit with replacement; no strata, no finite-population correction):
  the linearisation variance of the weighted estimating equations sum_i w_i g_i = 0
  (Binder 1983), as Mplus' MLR with weights and R's ``survey`` with ``ids = ~1`` compute it.

No small-sample factor n/(n-1) is applied (HC0).  A and B come from one pass over the rows
(:func:`src.inference.louis.louis_parts` with ``score_power``), so partitioned data can sum
the passes of their partitions and finish with :func:`sandwich_covariance`.  When Louis'
pass takes the Gaussian mixture's moments (no per-row scores), B's moments (weighted by
c_i r_ik r_il) are made on the same monomials (the model's ``louis_outer_moments``; Louis'
own part bitwise unchanged); when the model
declines those (diagonal covariances at large D, a class of weight 0) but has
``observed_scores(data, params, resp)``, B has its own pass (:func:`score_outer_parts`: its
g_i in blocks of rows, no (n, K, P) complete scores).  At N = 1e5, D = 10, K = 5, full
covariances: 1.4 s (per-row scores) -> 0.8 s (B's own pass) -> 0.6-0.7 s (one pass;
docs/standard_errors.md).  Boundary
parameters and directions where A is singular get NaN standard errors with a note, as with
Louis' method; a parameter whose scores are not finite is dropped too.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
from threadpoolctl import threadpool_limits

from ..models.base import Data, MixtureModel, Params, split_weight
from . import derivatives as dv
from scipy.linalg import blas

from ..estimation.em import is_engine
from .louis import (MOMENTS, SCORE_WEIGHT_POWER, louis_from_parts, louis_passes, louis_plan,
                    max_fraction_missing_info, score_outer_of_parts)
from .results import NOT_FINITE, SEResult, boundary_parameters, invert_information, wald_result

__all__ = ["sandwich_se", "sandwich_covariance", "score_outer_parts", "WEIGHT_TYPES"]

#: what a row weight means (``--weight-type``): c_i = w_i**SCORE_WEIGHT_POWER[type] in B
WEIGHT_TYPES = tuple(SCORE_WEIGHT_POWER)


def sandwich_covariance(A: np.ndarray, B: np.ndarray, dropped: dict[int, str] | None = None
                        ) -> tuple[np.ndarray, dict[int, str]]:
    """``(cov, dropped)``: A^-1 B A^-1 on the parameters A identifies (NaN elsewhere).

    ``dropped``: parameters already known to be unidentified (index -> reason); those with
    non-finite entries of B are added (the most first, until the rest is finite), then A is inverted as Louis' information is
    (:func:`~src.inference.results.invert_information`).
    """
    B = np.asarray(B, dtype=float)
    dropped = dict(dropped or {})
    while True:  # drop the row with the most non-finite entries until B is finite
        keep = np.array([i for i in range(B.shape[0]) if i not in dropped], dtype=int)
        bad = (~np.isfinite(B[np.ix_(keep, keep)])).sum(axis=1)
        if keep.size == 0 or not bad.any():
            break
        dropped[int(keep[int(np.argmax(bad))])] = NOT_FINITE
    Ainv, dropped = invert_information(A, dropped)
    keep = np.array([i for i in range(B.shape[0]) if i not in dropped], dtype=int)
    cov = np.full_like(Ainv, np.nan)
    if keep.size:
        Ak = Ainv[np.ix_(keep, keep)]
        C = Ak @ B[np.ix_(keep, keep)] @ Ak
        cov[np.ix_(keep, keep)] = 0.5 * (C + C.T)
    return cov, dropped


def has_observed_scores(model: MixtureModel) -> bool:
    """True when the model computes the observed scores g_i itself (``observed_scores``)."""
    return callable(getattr(model, "observed_scores", None))


def _first_rows(data: Data) -> tuple[Data, np.ndarray | None]:
    """(rows, weights) of the first 8 rows (of the first partition that keeps any): what
    the models decline moments by does not depend on the rows, so a few suffice."""
    rows, w = split_weight(dv.head_rows(data))
    return {k: v[:8] for k, v in rows.items()}, None if w is None else w[:8]


def _louis_uses_moments(model: MixtureModel, data: Data, params: Params, plan) -> bool:
    """True when Louis' first pass will take the model's moments (no per-row scores to
    share with B): its plan starts with them and the model does not decline them for the
    first rows (the Gaussian mixture declines by the shape of its parameters alone)."""
    if plan.strategies[0] != MOMENTS:
        return False
    rows, _ = _first_rows(data)
    resp, _ = model.e_step(rows, params)
    return model.score_variance_moments(rows, params, resp) is not None


def _louis_carries_outer(model: MixtureModel, data: Data, params: Params, power: int) -> bool:
    """True when Louis' moment pass can take B's moments in the same GEMM: the model offers
    ``louis_outer_moments`` and does not decline them for the first rows (it declines by
    its shape and parameters alone, so for every chunk alike)."""
    if not callable(getattr(model, "louis_outer_moments", None)):
        return False
    rows, w = _first_rows(data)
    resp, _ = model.e_step(rows, params)
    return model.louis_outer_moments(rows, params, resp, w,
                                     None if w is None else w ** power) is not None


def score_outer_parts(model: MixtureModel, chunks: Iterable[Data], params: Params,
                      skip_idx: np.ndarray, score_power: int) -> np.ndarray:
    """B = sum_i w_i**score_power g_i g_i' (P, P) over ``chunks`` (with or without row
    weights); rows and columns ``skip_idx`` (boundary parameters) zeroed.  Additive over
    chunks and partitions.

    From the model's ``score_outer_moments`` when it offers them (weighted moments of the
    rows, finished once by ``score_outer_from_moments``), otherwise from its
    ``observed_scores`` in blocks of rows of about 16 MB (upper triangle accumulated by
    BLAS syrk)."""
    P = model.to_free(params).size
    B = np.zeros((P, P), order="F")
    block = max(64, (1 << 21) // max(P, 1))
    moments = None
    use_moments = callable(getattr(model, "score_outer_moments", None))
    for chunk in chunks:
        rows, w = split_weight(chunk)
        resp, _ = model.e_step(rows, params)
        if use_moments:
            part = model.score_outer_moments(rows, params, resp,
                                             None if w is None else w ** score_power)
            if part is not None:
                moments = part if moments is None else moments + part
                continue
            use_moments = False
        for a in range(0, resp.shape[0], block):
            G = model.observed_scores({k: v[a:a + block] for k, v in rows.items()}, params,
                                      resp[a:a + block])
            if skip_idx.size:
                G[:, skip_idx] = 0.0
            if w is not None:
                G *= (w[a:a + block] ** (0.5 * score_power))[:, None]
            B = blas.dsyrk(1.0, G.T, beta=1.0, c=B, trans=0, lower=0, overwrite_c=1)
    upper = np.triu(B)
    out = upper + np.triu(upper, 1).T
    if moments is not None:
        out = out + np.asarray(model.score_outer_from_moments(params, moments), dtype=float)
    out[skip_idx, :] = 0.0
    out[:, skip_idx] = 0.0
    return out


def _partition_score_outer(chunks: Iterable[Data], model: MixtureModel, params: Params,
                           skip_idx: np.ndarray, score_power: int) -> np.ndarray:
    """:func:`score_outer_parts` of one partition's chunks (a row engine maps it)."""
    return score_outer_parts(model, chunks, params, skip_idx, score_power)


def _score_outer(model: MixtureModel, data: Data, params: Params, skip_idx: np.ndarray,
                 score_power: int, chunk_size: int) -> np.ndarray:
    """B over every row of ``data`` (in memory, or partitions summed in partition order)."""
    if is_engine(data):
        parts = data.map_partitions(_partition_score_outer, model, params, skip_idx, score_power)
        total = parts[0]
        for part in parts[1:]:
            total = total + part
        return total
    return score_outer_parts(model, dv.iter_chunks(data, chunk_size), params, skip_idx,
                             score_power)


def sandwich_se(model: MixtureModel, data: Data, params: Params, *, chunk_size: int = 4096,
                weight_type: str = "frequency") -> SEResult:
    """Sandwich standard errors A^-1 B A^-1 (module doc); ``weight_type`` says what the row
    weights in ``data`` are (``frequency``: c_i = w_i, ``sampling``: c_i = w_i^2; ignored
    for unweighted data).  ``extra``: the weight type used (None unweighted), the number of
    independent units (rows, or the sum of frequency weights) and, as with Louis,
    ``max_fraction_missing_info``."""
    if weight_type not in SCORE_WEIGHT_POWER:
        raise ValueError(f"weight_type must be one of {WEIGHT_TYPES}, got {weight_type!r}")
    from ..estimation.em import n_observations

    engine = is_engine(data)   # rows in partitions: the plan from a few rows, passes summed
    weighted = (getattr(data, "weight_sum", None) is not None if engine
                else split_weight(data)[1] is not None)
    with threadpool_limits(1):
        bnd = boundary_parameters(model, params)
        plan = louis_plan(model, dv.head_rows(data), params, chunk_size=chunk_size,
                          skip=set(bnd), weighted=weighted)
        power = SCORE_WEIGHT_POWER[weight_type]
        if has_observed_scores(model) and _louis_uses_moments(model, data, params, plan) \
                and not _louis_carries_outer(model, data, params, power):
            # Louis' pass makes no per-row scores: B from the model's own pass
            parts, _ = louis_passes(model, data, params, plan, chunk_size=chunk_size)
            parts = {**parts, "B": _score_outer(model, data, params, plan.skip_idx, power,
                                                chunk_size)}
        else:   # B in Louis' pass: per-row scores, or the model's moments in Louis' GEMM
            parts, _ = louis_passes(model, data, params, plan, chunk_size=chunk_size,
                                    score_power=power)
        A, I_c = louis_from_parts(model, params, parts, plan)
        cov, dropped = sandwich_covariance(A, score_outer_of_parts(model, params, parts, plan),
                                           bnd)
        keep = np.array([i for i in range(A.shape[0]) if i not in dropped], dtype=int)
        frac = max_fraction_missing_info(A, I_c, keep)
    n_rows = int(data.n_obs) if engine else int(next(iter(split_weight(data)[0].values())).shape[0])
    units = (float(n_rows) if not weighted or weight_type == "sampling"
             else float(n_observations(data)))
    return wald_result("sandwich", model, params, cov, dropped,
                       extra={"weight_type": weight_type if weighted else None,
                              "n_units": units, "max_fraction_missing_info": frac})
