"""Confidence intervals, z statistics and p-values of the reported parameters.

Which parameters are bounded is read from their declarations (:class:`~src.models.base.ParamSpec`),
so a user model gets the same treatment as the built-in families:

==========================================  =========  =========================================
parameter (constraint)                      scale      z and p-value against 0
==========================================  =========  =========================================
``real`` (means, coefficients)              identity   yes
``covariance`` off the diagonal             identity   yes
``covariance`` diagonal (variances)         log        no (0 is not a null hypothesis there)
``positive`` (variances, sigmas, rates)     log        no
``simplex`` (weights)                       logit      no
``probability``                             logit      no
==========================================  =========  =========================================

**Wald intervals** (standard errors from an information matrix) are computed on the scale of
the table, ``g(theta) +- z_q * se * g'(theta)`` (the delta method), and mapped back with
``g^-1``, so an interval never leaves the parameter space; for an unbounded parameter this
is the usual ``theta +- z_q * se``, and for a bounded one with a small standard error it
differs from it by O(se^2).  ``z_q`` is the normal quantile of the level (``--ci-level``).
An estimate on the boundary of a bounded space (a weight or probability within ``tol`` of 0
or 1, a variance <= 0) gets no interval: the log or logit is infinite there.

**Percentile intervals** (bootstrap) are the ``(1 - level)/2`` and ``(1 + level)/2``
quantiles of the replicate estimates (numpy's default, linear interpolation); they lie
inside the space by construction.  BCa intervals are not offered: their acceleration needs a
jackknife, one refit per row.

Everything here is a pure function of arrays, so a different level never needs the
standard errors again.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from scipy.special import expit, logit, ndtr, ndtri   # (not scipy.stats: 0.5 s to import)

from ..models.base import MixtureModel
from ..utils.messages import register, t

__all__ = ["SCALES", "BOUNDARY_TOL", "normal_quantile", "parameter_scales", "wald_intervals",
           "percentile_intervals", "z_and_p", "interval_table", "reported_covariance",
           "interval_method"]

#: the scales of :func:`parameter_scales`: unbounded, (0, inf), (0, 1)
SCALES = ("identity", "log", "logit")
#: a weight or probability this close to 0 or 1 is on the boundary (as for standard errors)
BOUNDARY_TOL = 1e-8

register({
    "ci.boundary": {
        "en": "{names} lie on the boundary of the parameter space (0 or 1), so they have no "
              "confidence interval.",
        "zh": "{names} 位于参数空间的边界（0 或 1），因此没有置信区间。"},
    "ci.no_replicates": {
        "en": "The bootstrap replicates were not kept, so the intervals are given at level "
              "0.95 only; recompute the standard errors for level {level:g}.",
        "zh": "未保存自助法重复的估计值，因此只能给出 0.95 水平的区间；如需 {level:g} 水平，"
              "请重新计算标准误。"},
    "ci.method.wald": {
        "en": "Wald intervals at level {level:g} (weights and probabilities on the logit scale, "
              "variances and standard deviations on the log scale, mapped back)",
        "zh": "置信水平 {level:g} 的 Wald 区间（权重和概率在 logit 尺度、方差和标准差在对数尺度上"
              "计算后变换回原尺度）"},
    "ci.method.percentile": {
        "en": "bootstrap percentile intervals at level {level:g} ({n} replicates)",
        "zh": "置信水平 {level:g} 的自助法百分位区间（{n} 次重复）"},
})


def normal_quantile(level: float) -> float:
    """``z_q`` of a two-sided interval at ``level`` (1.959963984540054 for 0.95)."""
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"the confidence level must lie strictly between 0 and 1, got {level!r}")
    return float(ndtri(0.5 + 0.5 * level))   # scipy.stats.norm.ppf's own function


def parameter_scales(model: MixtureModel) -> list[str]:
    """The scale (``identity``, ``log`` or ``logit``) of every reported parameter, in
    :meth:`~src.models.base.MixtureModel.reported_names` order, from its constraint."""
    out = []
    for _name, spec, _k, idx, _free in model._reported_entries():
        c = spec.constraint
        if c in ("simplex", "probability"):
            out.append("logit")
        elif c == "positive" or (c == "covariance" and idx[0] == idx[1]):
            out.append("log")
        else:
            out.append("identity")
    return out


def wald_intervals(estimates: np.ndarray, se: np.ndarray, scales: list[str] | np.ndarray,
                   level: float = 0.95, tol: float = BOUNDARY_TOL
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(lower, upper, on_boundary)`` of Wald intervals on each parameter's scale.

    estimates, se : arrays of shape (R,); scales : one of :data:`SCALES` per parameter.
    ``on_boundary`` (bool, (R,)): bounded estimates on the edge of their space, whose bounds
    are NaN (no interval).  A NaN standard error gives NaN bounds too.
    """
    est = np.asarray(estimates, dtype=float)
    se = np.asarray(se, dtype=float)
    scales = np.asarray(scales)
    bad = [s for s in set(scales.tolist()) if s not in SCALES]
    if bad:
        raise ValueError(f"unknown interval scale {bad[0]!r}; expected one of {SCALES}")
    z = normal_quantile(level)
    lo = np.full(est.shape, np.nan)
    hi = np.full(est.shape, np.nan)
    ident = scales == "identity"
    lo[ident] = est[ident] - z * se[ident]
    hi[ident] = est[ident] + z * se[ident]
    log = scales == "log"
    lgt = scales == "logit"
    boundary = (log & ~(est > 0)) | (lgt & ~((est > tol) & (est < 1.0 - tol)))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        m = log & ~boundary
        half = z * se[m] / est[m]                     # z * se on the log scale
        lo[m] = est[m] * np.exp(-half)
        hi[m] = est[m] * np.exp(half)
        m = lgt & ~boundary
        centre = logit(est[m])
        half = z * se[m] / (est[m] * (1.0 - est[m]))  # z * se on the logit scale
        lo[m] = expit(centre - half)
        hi[m] = expit(centre + half)
    return lo, hi, boundary


def percentile_intervals(replicates: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """``(lower, upper)``: the ``(1 -+ level)/2`` quantiles of each column of ``replicates``
    (shape (B, R), one row per successful replicate); NaN with fewer than 2 rows."""
    rep = np.asarray(replicates, dtype=float)
    normal_quantile(level)  # checks the level
    if rep.ndim != 2 or rep.shape[0] < 2:
        n = rep.shape[1] if rep.ndim == 2 else 0
        return np.full(n, np.nan), np.full(n, np.nan)
    half = 50.0 * float(level)  # exact for levels such as 0.9 (95.0, not 1 - 0.9 = 0.09999...)
    lo, hi = np.percentile(rep, [50.0 - half, 50.0 + half], axis=0)
    return np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)


def z_and_p(estimates: np.ndarray, se: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``z = estimate / se`` and the two-sided normal p-value ``2 * (1 - Phi(|z|))``."""
    est = np.asarray(estimates, dtype=float)
    se = np.asarray(se, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = est / se
    return z, 2.0 * ndtr(-np.abs(z))   # scipy.stats.norm.sf's own function


def _get(result: Any, key: str, default: Any = None) -> Any:
    if isinstance(result, Mapping):
        return result.get(key, default)
    return getattr(result, key, default)


def interval_method(result: Any) -> str:
    """``percentile`` for a result carrying bootstrap replicates (or made by the bootstrap),
    ``wald`` otherwise."""
    if _get(result, "replicates") is not None or _get(result, "method") == "bootstrap":
        return "percentile"
    return "wald"


def interval_table(model: MixtureModel, result: Any, level: float = 0.95) -> dict[str, Any]:
    """Intervals, z and p-values of every reported parameter from one method's result.

    ``result``: an :class:`~src.inference.results.SEResult` or its ``to_dict()`` (names,
    estimates, se; ``replicates`` (B, R) for percentile intervals).  Returns a dict of arrays
    of shape (R,) in ``names`` order: ``estimate``, ``se``, ``z``, ``p_value`` (NaN for
    bounded parameters), ``ci_lower``, ``ci_upper`` (NaN where there is none), ``bounded``
    and ``on_boundary`` (bool; on_boundary only for Wald intervals), and ``names``,
    ``interval_method`` (``wald`` or ``percentile``), ``ci_level``, ``description`` (a
    phrase in the current language) and ``notes`` (sentences: estimates on the boundary
    without an interval, ...).
    """
    names = list(_get(result, "names"))
    est = np.asarray(_get(result, "estimates"), dtype=float)
    se = np.asarray(_get(result, "se"), dtype=float)
    scales = parameter_scales(model)
    if len(scales) != len(names):
        raise ValueError(f"the result names {len(names)} parameters, the model {len(scales)}")
    bounded = np.array([s != "identity" for s in scales], dtype=bool)
    z, p = z_and_p(est, se)
    z[bounded] = np.nan
    p[bounded] = np.nan
    method = interval_method(result)
    notes: list[str] = []
    on_boundary = np.zeros(len(names), dtype=bool)
    if method == "percentile":
        rep = _get(result, "replicates")
        if rep is not None:
            lo, hi = percentile_intervals(rep, level)
            n_rep = int(np.asarray(rep).shape[0])
        else:  # a result stored before replicates were kept: its own 0.95 intervals
            n_rep = int((_get(result, "extra") or {}).get("n_ok", 0))
            lo = np.asarray(_get(result, "ci_lower"), dtype=float)
            hi = np.asarray(_get(result, "ci_upper"), dtype=float)
            if not np.isclose(level, 0.95, rtol=0, atol=1e-12):
                lo, hi = np.full_like(lo, np.nan), np.full_like(hi, np.nan)
                notes.append(t("ci.no_replicates", level=level))
        description = t("ci.method.percentile", level=level, n=n_rep)
    else:
        lo, hi, on_boundary = wald_intervals(est, se, scales, level)
        noted = on_boundary.copy()
        if model.n_components == 1:  # the one weight is 1 by definition: no interval, no note
            noted &= np.array([s.constraint != "simplex" for _, s, *_ in model._reported_entries()])
        if noted.any():
            notes.append(t("ci.boundary", names=", ".join(n for n, b in zip(names, noted) if b)))
        description = t("ci.method.wald", level=level)
    return {"names": names, "estimate": est, "se": se, "z": z, "p_value": p,
            "ci_lower": np.asarray(lo, dtype=float), "ci_upper": np.asarray(hi, dtype=float),
            "bounded": bounded, "on_boundary": on_boundary, "interval_method": method,
            "ci_level": float(level), "description": description, "notes": notes}


def reported_covariance(model: MixtureModel, cov_free: np.ndarray) -> np.ndarray:
    """Covariance of every reported parameter, ``J C J'`` with ``J = model.reported_jacobian()``.

    A free parameter with a NaN variance (dropped as unidentified) makes every reported
    parameter that depends on it NaN in its row and column; the rest is exact and exactly
    symmetric.
    """
    J = model.reported_jacobian()
    C = np.asarray(cov_free, dtype=float)
    bad_free = ~np.isfinite(np.diag(C)) if C.size else np.zeros(0, dtype=bool)
    C0 = np.where(np.isfinite(C), C, 0.0)
    out = J @ C0 @ J.T
    out = 0.5 * (out + out.T)
    bad = np.any(J[:, bad_free] != 0, axis=1)
    out[bad, :] = np.nan
    out[:, bad] = np.nan
    return out
