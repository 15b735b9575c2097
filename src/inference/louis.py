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

Row weights w_i (``data[WEIGHT_KEY]``) multiply every row's terms, both sums above: with
integer frequency weights this is the information of the data with each row replicated
w_i times.  Every sum is additive over rows, so one pass is :func:`louis_parts` over any
iterable of chunks (a partition's), the passes' dicts add up, and :func:`louis_from_parts`
finishes; :func:`louis_plan` fixes what the passes share (the strategies, the steps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np
from scipy import linalg
from scipy.linalg import blas
from threadpoolctl import threadpool_limits

from ..models.base import Data, MixtureModel, Params, split_weight
from ..estimation.em import is_engine
from . import derivatives as dv
from .results import SEResult, boundary_parameters, invert_information, wald_result

__all__ = ["louis_information", "louis_se", "max_fraction_missing_info", "MOMENTS", "SCORES",
           "MASKED_SCORES", "LouisPlan", "louis_plan", "louis_parts", "louis_from_parts",
           "louis_passes", "score_outer_of_parts", "SCORE_WEIGHT_POWER"]


def _score_rows(chunk_size: int, K: int, P: int) -> int:
    """Rows per score block: at most ``chunk_size``, and about 8 MB of scores (cache-sized)."""
    return int(max(16, min(int(chunk_size), (1 << 20) // max(K * P, 1))))


class _ScoreVariance:
    """Accumulates sum_i w_i [sum_k r_ik s_ik s_ik' - g_i g_i'] block by block of rows.

    Class k's score is usually zero outside its own parameters and the weights; the
    columns that are nonzero somewhere in a block are found per class, so the first term
    costs K n c_k^2 instead of K n P^2.  g g' is one symmetric rank-n update (BLAS syrk,
    upper triangle, accumulated in place), of sqrt(w_i) g_i with row weights.
    """

    def __init__(self, P: int) -> None:
        self.first = np.zeros((P, P))
        self.ggt = np.zeros((P, P), order="F")

    def add(self, S: np.ndarray, resp: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
        """Adds a block; returns its observed scores g_i = sum_k r_ik s_ik (n, P)."""
        K = S.shape[1]
        nz = np.any(S, axis=0)  # (K, P)
        rw = dv.weighted_resp(resp, w)
        for k in range(K):
            cols = np.flatnonzero(nz[k])
            if cols.size:
                A = S[:, k, cols]
                self.first[np.ix_(cols, cols)] += (rw[:, k, None] * A).T @ A
        G = np.einsum("nk,nkp->np", resp, S)
        Gw = G if w is None else G * np.sqrt(w)[:, None]
        self.ggt = blas.dsyrk(1.0, Gw.T, beta=1.0, c=self.ggt, trans=0, lower=0, overwrite_c=1)
        return G

    def total(self) -> np.ndarray:
        return self.first - _symmetric(self.ggt)


def _symmetric(upper: np.ndarray) -> np.ndarray:
    """The symmetric matrix whose upper triangle is ``upper``'s."""
    upper = np.triu(upper)
    return upper + np.triu(upper, 1).T


#: the ways to Louis' second term, tried in this order until one gives a finite matrix
MOMENTS = "moments"            # the model's weighted moments (no per-row scores), when it has them
SCORES = "scores"              # per-row complete scores
MASKED_SCORES = "masked scores"  # per-row scores with every r_ik = 0 term dropped


def _moments_take_weights(model: MixtureModel) -> bool:
    """True when the model's ``score_variance_moments`` is known to be a sum of products
    r_ik r_il over rows (the Gaussian mixture's: only the pairs k < l are kept, the rest
    follows from sum_k r_ik = 1), so ``resp * sqrt(w)`` gives the moments weighted by w_i.
    Other models' moments are not used with row weights (the per-row scores are)."""
    from ..models.gmm_derivatives import GaussianDerivatives
    return getattr(type(model), "score_variance_moments", None) is \
        GaussianDerivatives.score_variance_moments


def _strategies(model: MixtureModel, analytic: bool, use_fast: bool,
                mask_zero_resp: bool, weighted: bool = False) -> list[str]:
    """The strategies :func:`louis_information` tries, in order.

    Moments first when the model offers them (and its derivatives are analytic, and, with
    row weights, its moments take them: :func:`_moments_take_weights`); then the per-row
    scores; then, if those are not finite, the scores with the r_ik = 0 terms masked, which
    vanish even where s_ik is infinite (an impossible class for a row).
    """
    plan = []
    if use_fast and analytic and hasattr(model, "score_variance_moments") \
            and hasattr(model, "score_variance_from_moments") \
            and (not weighted or _moments_take_weights(model)):
        plan.append(MOMENTS)
    if not mask_zero_resp:
        plan.append(SCORES)
    plan.append(MASKED_SCORES)
    return plan


@dataclass(frozen=True)
class LouisPlan:
    """What every pass of Louis' method over the rows needs, fixed before the first one.

    ``strategies``: the ways to the second term, in the order to try them (one pass each,
    until one gives a finite matrix).  ``steps_s``/``steps_h``: finite-difference steps of
    the complete scores and information (None with analytic derivatives).  ``skip_idx``:
    the free parameters on the boundary (score columns zeroed, NaN in the result).
    ``groups``: the entries each finite difference moves together
    (:func:`~src.inference.derivatives.difference_groups`; None with analytic derivatives).
    """

    strategies: tuple[str, ...]
    steps_s: np.ndarray | None
    steps_h: np.ndarray | None
    skip_idx: np.ndarray
    n_free: int
    groups: dv.DifferenceGroups | None = None


def louis_plan(model: MixtureModel, data: Data, params: Params, *, chunk_size: int = 4096,
               skip: set[int] | frozenset = frozenset(), mask_zero_resp: bool = False,
               use_fast: bool = True, weighted: bool | None = None) -> LouisPlan:
    """The :class:`LouisPlan` of ``data`` (in memory; the derivatives' steps of a model
    without analytic ones come from the natural scales of these rows, weighted when they
    carry weights).  ``weighted``: whether the rows the passes see carry weights (default:
    whether ``data`` does)."""
    theta = model.to_free(params)
    K = model.n_components
    rows, w = split_weight(data)
    weighted = (w is not None) if weighted is None else bool(weighted)
    steps_s = steps_h = groups = None
    analytic = dv.has_analytic_score(model, rows, params) and model.complete_information(
        {k: v[:1] for k, v in rows.items()}, params, np.full((1, K), 1.0 / K)) is not None
    if not analytic:   # fourth-order differences (module doc of derivatives)
        groups = dv.difference_groups(model, data, params, skip=skip)
        u = dv.natural_scales(model, data, params, chunk_size=chunk_size, skip=skip,
                              groups=groups)
        steps_s = dv.difference_steps(model, theta, u, dv.SCORE_STEP[dv.SCORE_ORDER],
                                      dv.SCORE_ORDER, skip)
        steps_h = dv.difference_steps(model, theta, u, dv.HESSIAN_STEP[dv.HESSIAN_ORDER],
                                      dv.HESSIAN_ORDER, skip)
    return LouisPlan(tuple(_strategies(model, analytic, use_fast, mask_zero_resp, weighted)),
                     steps_s, steps_h, np.array(sorted(skip), dtype=int), int(theta.size),
                     groups)


#: per-row score weights of the sandwich's B = sum_i c_i g_i g_i': c_i = w_i**power
SCORE_WEIGHT_POWER = {"frequency": 1, "sampling": 2}


def louis_parts(model: MixtureModel, chunks: Iterable[Data], params: Params, plan: LouisPlan,
                strategy: str, *, score_power: int | None = None,
                score_rows: int | None = None) -> dict[str, np.ndarray] | None:
    """One pass of Louis' method over ``chunks`` (data dicts, with or without row weights):
    sums that add up over chunks and partitions.

    Returns ``{"I_c": (P, P), "V": (P, P)}`` (the weighted complete information and the
    second term sum_i w_i [sum_k r_ik s_ik s_ik' - g_i g_i']) or, with ``strategy`` MOMENTS,
    ``{"I_c", "moments"}`` (the model's additive moments; None when it declines them for
    some chunk: go on to the next strategy).  With ``score_power`` (1 or 2) also ``"B"`` =
    sum_i w_i**score_power g_i g_i' (upper triangle accumulated; symmetric on return), g_i
    the observed score of row i (zero-responsibility terms dropped): the sandwich's middle;
    with MOMENTS and a model offering ``louis_outer_moments`` (the Gaussian mixture, when it
    does not decline them: by its shape and parameters, so for every chunk alike) B's
    moments come from Louis' monomials instead, as ``"outer_moments"``
    (:func:`score_outer_of_parts` finishes either).  Sum the dicts of several passes (partitions, in a fixed order) key by key and give the
    total to :func:`louis_from_parts`.  ``score_rows``: rows per score block (default
    :func:`_score_rows` of the first chunk's length).
    """
    P = plan.n_free
    I_c = np.zeros((P, P))
    acc = _ScoreVariance(P)
    B = np.zeros((P, P), order="F") if score_power is not None else None
    moments = outer = None
    skip_idx = plan.skip_idx
    # B's moments with Louis' (decided at the first chunk; the model declines for all or none)
    carry = None if (strategy == MOMENTS and B is not None
                     and callable(getattr(model, "louis_outer_moments", None))) else False
    for chunk in chunks:
        chunk, w = split_weight(chunk)
        resp, _ = model.e_step(chunk, params)
        if strategy == MOMENTS:
            both = None
            if carry is not False:
                both = model.louis_outer_moments(
                    chunk, params, resp, w, None if w is None else w ** score_power)
                if carry and both is None:
                    return None
                carry = both is not None
            if both is not None:
                part = both[0]
                outer = both[1] if outer is None else outer + both[1]
            else:
                part = model.score_variance_moments(
                    chunk, params, resp if w is None else resp * np.sqrt(w)[:, None])
            if part is None:
                return None
            moments = part if moments is None else moments + part
        if strategy != MOMENTS or (B is not None and not carry):
            n = resp.shape[0]
            rows = score_rows or _score_rows(max(n, 1), model.n_components, P)
            for a in range(0, n, rows):
                block = {key: v[a:a + rows] for key, v in chunk.items()}
                r = resp[a:a + rows]
                wb = None if w is None else w[a:a + rows]
                S = dv.complete_score(model, block, params, plan.steps_s, order=dv.SCORE_ORDER,
                                      groups=plan.groups)  # (n, K, P)
                if skip_idx.size:
                    S[:, :, skip_idx] = 0.0
                if strategy == MASKED_SCORES:  # r_ik = 0 terms vanish even where s_ik is infinite
                    S = np.where(r[:, :, None] > 0, S, 0.0)
                if strategy != MOMENTS:
                    G = acc.add(S, r, wb)
                if B is not None:
                    if strategy == MOMENTS or not np.all(np.isfinite(G)):
                        with np.errstate(invalid="ignore"):  # zero-responsibility terms dropped
                            G = np.einsum("nk,nkp->np", r, np.where(r[:, :, None] > 0, S, 0.0))
                    c = None if wb is None else wb ** (0.5 * score_power)
                    Gc = G if c is None else G * c[:, None]
                    B = blas.dsyrk(1.0, Gc.T, beta=1.0, c=B, trans=0, lower=0, overwrite_c=1)
        Ic_chunk = np.array(dv.complete_information(model, chunk, params,
                                                    dv.weighted_resp(resp, w), plan.steps_h,
                                                    order=dv.HESSIAN_ORDER,
                                                    groups=plan.groups))
        if skip_idx.size:
            Ic_chunk[skip_idx, :] = 0.0
            Ic_chunk[:, skip_idx] = 0.0
        I_c += Ic_chunk
    out: dict[str, np.ndarray] = {"I_c": I_c}
    if strategy == MOMENTS:
        out["moments"] = moments if moments is not None else np.zeros(0)
    else:
        out["V"] = acc.total()
    if carry:
        out["outer_moments"] = outer
    elif B is not None:
        out["B"] = _symmetric(B)
    return out


def score_outer_of_parts(model: MixtureModel, params: Params, parts: Mapping[str, np.ndarray],
                         plan: LouisPlan) -> np.ndarray:
    """The sandwich's B (P, P) from summed :func:`louis_parts` taken with ``score_power``:
    ``"B"`` itself, or the model's ``score_outer_from_moments`` of ``"outer_moments"``
    (rows and columns of the boundary parameters zeroed)."""
    if "B" in parts:
        return np.asarray(parts["B"], dtype=float)
    B = np.array(model.score_outer_from_moments(params, parts["outer_moments"]), dtype=float)
    B[plan.skip_idx, :] = 0.0
    B[:, plan.skip_idx] = 0.0
    return B


def _one_pass(model: MixtureModel, data: Data, params: Params, strategy: str, *,
              chunk_size: int, steps_s: np.ndarray | None, steps_h: np.ndarray | None,
              skip_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(I_c, V)`` from one pass over the rows of ``data``, V the second term by
    ``strategy`` (None when the model declines the moments for some chunk)."""
    P = model.to_free(params).size
    plan = LouisPlan((strategy,), steps_s, steps_h, np.asarray(skip_idx, dtype=int), P)
    parts = louis_parts(model, dv.iter_chunks(data, chunk_size), params, plan, strategy,
                        score_rows=_score_rows(chunk_size, model.n_components, P))
    if parts is None:
        return None
    if strategy != MOMENTS:
        return parts["I_c"], parts["V"]
    V = np.array(model.score_variance_from_moments(params, parts["moments"]), dtype=float)
    V[plan.skip_idx, :] = 0.0
    V[:, plan.skip_idx] = 0.0
    return parts["I_c"], V


def louis_from_parts(model: MixtureModel, params: Params, parts: Mapping[str, np.ndarray],
                     plan: LouisPlan) -> tuple[np.ndarray, np.ndarray]:
    """``(I_obs, I_c)`` from the summed :func:`louis_parts` of every row (NaN rows and columns
    for the boundary parameters)."""
    I_c = np.array(parts["I_c"], dtype=float)
    if "moments" in parts:
        V = np.array(model.score_variance_from_moments(params, parts["moments"]), dtype=float)
        V[plan.skip_idx, :] = 0.0
        V[:, plan.skip_idx] = 0.0
    else:
        V = np.array(parts["V"], dtype=float)
    I_c = 0.5 * (I_c + I_c.T)
    I_obs = I_c - 0.5 * (V + V.T)
    for j in plan.skip_idx:
        I_obs[j, :] = I_obs[:, j] = np.nan
        I_c[j, :] = I_c[:, j] = np.nan
    return I_obs, I_c


def louis_passes(model: MixtureModel, data: Data, params: Params, plan: LouisPlan, *,
                 chunk_size: int = 4096, score_power: int | None = None
                 ) -> tuple[dict[str, np.ndarray], str]:
    """``(parts, strategy)``: the first of the plan's strategies whose second term is finite
    (the last one's whatever it is), by :func:`louis_parts` over ``data``'s chunks."""
    result = None
    for strategy in plan.strategies:
        rows = _score_rows(chunk_size, model.n_components, plan.n_free)
        if is_engine(data):   # each partition's sums (on its worker), added in partition order
            parts = _sum_parts(data.map_partitions(_partition_parts, model, params, plan,
                                                   strategy, score_power, rows))
        else:
            parts = louis_parts(model, dv.iter_chunks(data, chunk_size), params, plan, strategy,
                                score_power=score_power, score_rows=rows)
        if parts is None:
            continue
        result = (parts, strategy)
        V = parts.get("V")
        if V is None:
            V = np.array(model.score_variance_from_moments(params, parts["moments"]), dtype=float)
            V[plan.skip_idx, :] = 0.0
            V[:, plan.skip_idx] = 0.0
        if np.all(np.isfinite(V)):
            break
    return result


def _partition_parts(chunks: Iterable[Data], model: MixtureModel, params: Params,
                     plan: LouisPlan, strategy: str, score_power: int | None,
                     score_rows: int) -> dict[str, np.ndarray] | None:
    """:func:`louis_parts` of one partition's chunks (a row engine maps it)."""
    return louis_parts(model, chunks, params, plan, strategy, score_power=score_power,
                       score_rows=score_rows)


def _sum_parts(parts: list[dict[str, np.ndarray] | None]) -> dict[str, np.ndarray] | None:
    """The partitions' :func:`louis_parts` added key by key in partition order (None when
    the model declined the moments anywhere)."""
    if any(p is None for p in parts):
        return None
    total = dict(parts[0])
    for part in parts[1:]:
        total = {k: total[k] + v for k, v in part.items()}
    return total


def louis_information(model: MixtureModel, data: Data, params: Params, *,
                      chunk_size: int = 4096,
                      skip: set[int] | frozenset = frozenset(),
                      mask_zero_resp: bool = False,
                      use_fast: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(I_obs, I_c)``, each (P, P), accumulated chunk by chunk.

    Row weights (``data[WEIGHT_KEY]``) multiply every row's terms.  Parameters in ``skip``
    (on the boundary) have their score columns zeroed and their rows and columns set to
    NaN, so a non-finite derivative there cannot spread to the others.  The second term is
    computed by the first of :func:`_strategies` that gives a finite matrix (the last one's
    result is kept whatever it is): the model's optional ``score_variance_moments(data,
    params, resp)`` (additive over chunks; None: declined) and
    ``score_variance_from_moments(params, moments)`` unless ``use_fast`` is False, then the
    per-row scores, then the per-row scores with zero-responsibility terms masked (at once
    when ``mask_zero_resp``).  The pieces: :func:`louis_plan`, :func:`louis_parts` (additive:
    map it over partitions and sum), :func:`louis_from_parts`.
    """
    head = data
    if is_engine(data):   # the plan from a few rows: the families' derivatives are analytic
        head = dv.head_rows(data)
    plan = louis_plan(model, head, params, chunk_size=chunk_size, skip=skip,
                      mask_zero_resp=mask_zero_resp, use_fast=use_fast,
                      weighted=getattr(data, "weight_sum", None) is not None
                      if is_engine(data) else None)
    parts, _ = louis_passes(model, data, params, plan, chunk_size=chunk_size)
    return louis_from_parts(model, params, parts, plan)


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
