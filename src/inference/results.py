"""SEResult and the step shared by Louis and the numerical Hessian: information -> SEs.

An information matrix of the free parameters is inverted on the parameters it identifies:
free parameters on the boundary of their space (a probability of 0 or 1, a class whose
weight is 0), with a non-finite row, or loading on a null direction of the matrix are
dropped; their variances are NaN and one sentence in ``notes`` names them and says why.
Null directions are judged after scaling the matrix by its diagonal, so the data's units
(a column in grams or in tonnes) never decide what is identified.
Reported standard errors follow by the exact delta method ``J C J'`` with
``J = model.reported_jacobian()``; their Wald intervals are computed on each parameter's
scale (logit, log or identity, :mod:`.intervals`), so they stay inside the parameter space.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import ndtri   # (scipy.stats.norm.ppf's function; not scipy.stats: 0.5 s to import)

from ..models.base import MixtureModel, Params
from ..utils.messages import register, t
from .intervals import parameter_scales, wald_intervals

register({
    "se.reason.empty": {"en": "class {k} is empty", "zh": "第 {k} 类为空"},
    "se.reason.weight": {"en": "a class weight is on the boundary (0 or 1)",
                         "zh": "某个类别权重位于边界（0 或 1）"},
    "se.reason.prob": {"en": "a probability is on the boundary (0 or 1)",
                       "zh": "某个概率位于边界（0 或 1）"},
    "se.reason.not_finite": {"en": "the information about them is not finite",
                             "zh": "关于它们的信息量不是有限值"},
    "se.reason.not_pd": {"en": "the information matrix is not positive definite along them",
                         "zh": "信息矩阵在这些方向上不是正定的"},
    "se.reason.singular": {"en": "the information matrix is singular along them (not identified)",
                           "zh": "信息矩阵在这些方向上奇异（不可识别）"},
    "se.nan": {"en": "Standard errors of {names} (and derived parameters) are NaN because {reason}.",
               "zh": "{names}（及其派生参数）的标准误为 NaN，原因：{reason}。"},
})

__all__ = ["SEResult", "wald_result", "invert_information", "boundary_parameters"]

#: 95% two-sided normal quantile for Wald intervals
Z95 = float(ndtri(0.975))
NOT_FINITE = "se.reason.not_finite"  # reasons are message keys, rendered in _nan_notes


@dataclass
class SEResult:
    """Standard errors of every reported parameter, and the free-parameter covariance.

    estimates, se, ci_lower, ci_upper : arrays of shape (R,) in ``names`` order.
    cov_free : array of shape (P, P) in ``free_names`` order (NaN rows for dropped parameters).
    replicates : None, or the bootstrap's replicate estimates of every reported parameter,
        shape (B_ok, R) (the successful replicates in index order; percentile intervals at
        any level come from them, :func:`src.inference.intervals.interval_table`).
    notes : one sentence each (NaN standard errors and why, failed replicates, ...).
    extra : method-specific figures (``max_fraction_missing_info``, ``n_bootstrap``, ...).
    """

    method: str
    names: list[str]
    estimates: np.ndarray
    se: np.ndarray
    ci_lower: np.ndarray
    ci_upper: np.ndarray
    free_names: list[str]
    cov_free: np.ndarray
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    replicates: np.ndarray | None = None

    _ARRAYS = ("estimates", "se", "ci_lower", "ci_upper", "cov_free")

    def to_dict(self) -> dict[str, Any]:
        """JSON scalars/lists plus numpy arrays (what the progress tracker stores)."""
        out: dict[str, Any] = {"method": self.method, "names": list(self.names),
                               "free_names": list(self.free_names), "notes": list(self.notes),
                               "extra": dict(self.extra)}
        for key in self._ARRAYS:
            out[key] = np.asarray(getattr(self, key), dtype=float)
        if self.replicates is not None:
            out["replicates"] = np.asarray(self.replicates, dtype=float)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SEResult":
        kwargs = {key: np.asarray(d[key], dtype=float) for key in cls._ARRAYS}
        if d.get("replicates") is not None:
            rep = np.asarray(d["replicates"], dtype=float)
            if rep.ndim != 2 or rep.shape[1] != len(d["names"]):
                raise ValueError(f"the replicates have shape {rep.shape}, not (B, {len(d['names'])})")
            kwargs["replicates"] = rep
        return cls(method=str(d["method"]), names=list(d["names"]),
                   free_names=list(d["free_names"]), notes=list(d.get("notes", [])),
                   extra=dict(d.get("extra", {})), **kwargs)

    def table(self):
        """The reported parameters as a pandas DataFrame (estimate, se, ci_lower, ci_upper)."""
        import pandas as pd
        return pd.DataFrame({"estimate": self.estimates, "se": self.se,
                             "ci_lower": self.ci_lower, "ci_upper": self.ci_upper},
                            index=pd.Index(self.names, name="parameter"))


def boundary_parameters(model: MixtureModel, params: Params, tol: float = 1e-8) -> dict[int, str]:
    """Free-parameter indices on the boundary of their space -> the reason, in words.

    * every free parameter of a class whose weight is <= tol (an empty class);
    * the free probabilities of an item in a class where any category (free or the derived
      last one) is within tol of 0 or 1.
    """
    names = model.free_names()
    index = {n: i for i, n in enumerate(names)}
    out: dict[int, str] = {}
    K = model.n_components
    empty: set[int] = set()
    for spec in model.param_specs():
        if spec.constraint == "simplex":
            w = np.asarray(params[spec.name], dtype=float)
            empty = {k for k in range(K) if w[k] <= tol}
    for name, spec, k, idx, is_free in model._reported_entries():
        if not is_free or K == 1:
            continue
        if k in empty:
            out[index[name]] = t("se.reason.empty", k=k + 1)
        elif spec.constraint == "simplex" and empty:
            out[index[name]] = t("se.reason.weight")
    for spec in model.param_specs():
        if spec.constraint != "probability":
            continue
        p = np.asarray(params[spec.name], dtype=float)
        for k in range(K):
            for j, size in enumerate(spec.sizes):
                row = p[k, j, :size]
                if np.any(row <= tol) or np.any(row >= 1 - tol):
                    for name, s2, k2, idx, is_free in model._reported_entries():
                        if is_free and s2.name == spec.name and k2 == k and idx[0] == j:
                            out.setdefault(index[name], t("se.reason.prob"))
    return out


def invert_information(info: np.ndarray, dropped: dict[int, str] | None = None,
                       rcond: float = 1e-10) -> tuple[np.ndarray, dict[int, str]]:
    """Covariance = inverse of ``info`` on the identified parameters; NaN elsewhere.

    ``dropped`` are parameters already known to be unidentified (index -> reason).  Rows with
    non-finite entries are dropped.  Then the rest is judged in units that do not matter:
    scaled by its diagonal, ``C = D^-1/2 I D^-1/2`` (a parameter with a diagonal <= 0 is
    dropped at once), and while C is not positive definite (smallest eigenvalue <= rcond *
    largest) the parameter loading most on C's weakest direction is dropped.  Since
    measuring a column in other units rescales I by a diagonal matrix, which C does not
    see, what is identified never depends on the data's units.  Returns ``(cov, dropped)``.
    """
    info = np.asarray(info, dtype=float)
    P = info.shape[0]
    dropped = dict(dropped or {})
    for i in range(P):
        if i not in dropped and not np.isfinite(info[i, i]):
            dropped[i] = NOT_FINITE
    cov = np.full((P, P), np.nan)
    while True:
        keep = np.array([i for i in range(P) if i not in dropped], dtype=int)
        if keep.size == 0:
            break
        sub = 0.5 * (info[np.ix_(keep, keep)] + info[np.ix_(keep, keep)].T)
        if not np.all(np.isfinite(sub)):  # drop the row with the most non-finite entries
            bad = keep[int(np.argmax((~np.isfinite(sub)).sum(axis=1)))]
            dropped[int(bad)] = NOT_FINITE
            continue
        diag = np.diag(sub)
        if np.any(diag <= 0):  # no information (or negative) about a parameter on its own
            worst = int(np.argmin(diag))
            dropped[int(keep[worst])] = t("se.reason.not_pd" if diag[worst] < 0
                                          else "se.reason.singular")
            continue
        isd = 1.0 / np.sqrt(diag)
        evals, evecs = np.linalg.eigh(sub * np.outer(isd, isd))
        scale = float(evals[-1])  # >= 1: the largest eigenvalue of a matrix with unit diagonal
        if evals[0] > rcond * scale:
            cov[np.ix_(keep, keep)] = isd[:, None] * ((evecs / evals) @ evecs.T) * isd[None, :]
            break
        worst = keep[int(np.argmax(np.abs(evecs[:, 0])))]
        reason = t("se.reason.not_pd" if evals[0] < -rcond * scale else "se.reason.singular")
        dropped[int(worst)] = reason
    return cov, dropped


def _nan_notes(free_names: list[str], dropped: dict[int, str]) -> list[str]:
    """One sentence per distinct reason naming the free parameters that got NaN."""
    by_reason: dict[str, list[str]] = {}
    for i in sorted(dropped):
        by_reason.setdefault(dropped[i], []).append(free_names[i])
    return [t("se.nan", names=", ".join(names),
              reason=t(reason) if reason == NOT_FINITE else reason)
            for reason, names in by_reason.items()]


def wald_result(method: str, model: MixtureModel, params: Params, cov_free: np.ndarray,
                dropped: dict[int, str], extra: dict[str, Any] | None = None,
                notes: list[str] | None = None) -> SEResult:
    """Assemble an SEResult with Wald 95% intervals from a free-parameter covariance
    (bounded parameters' intervals on the logit or log scale; none on the boundary)."""
    J = model.reported_jacobian()
    est = model.reported_values(params)
    C0 = np.where(np.isfinite(cov_free), cov_free, 0.0)
    cov_rep = J @ C0 @ J.T
    var = np.clip(np.diag(cov_rep), 0.0, None)
    se = np.sqrt(var)
    bad_cols = np.zeros(J.shape[1], dtype=bool)
    bad_cols[list(dropped)] = True
    se[np.any(J[:, bad_cols] != 0, axis=1)] = np.nan
    all_notes = _nan_notes(model.free_names(), dropped) + list(notes or [])
    lo, hi, _ = wald_intervals(est, se, parameter_scales(model), 0.95)
    return SEResult(method=method, names=model.reported_names(), estimates=est, se=se,
                    ci_lower=lo, ci_upper=hi,
                    free_names=model.free_names(), cov_free=cov_free, notes=all_notes,
                    extra=dict(extra or {}))
