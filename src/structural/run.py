"""Steps 2 and 3 for one fitted measurement model, as the pipeline stores them.

:func:`three_step` takes the measurement model, its rows (``data``, with row weights under
``WEIGHT_KEY``), its estimate and the structural columns; it returns a dict of JSON values
and arrays (the phase's result): the classification-error matrix, step 3's free and
reported estimates with their sandwich covariance, and the warnings of the estimate (BCH
probabilities outside [0, 1], variances <= 0, an ML maximisation that did not converge).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..models.base import Data, MixtureModel, Params, split_weight
from ..utils.messages import register, t
from .assignment import assign, classification_error
from .data import StructuralData
from .estimate import step3

__all__ = ["three_step", "posteriors", "step23", "out_of_range"]

register({
    "structural.prob_outside": {
        "en": "The BCH-weighted probabilities of {column} in class {k} leave [0, 1] ({values}): the classification error is large for that class, so these estimates are not probabilities; consider --correction ml.",
        "zh": "类别 {k} 中 {column} 的 BCH 加权概率超出 [0, 1]（{values}）：该类别的分类误差较大，这些估计值不是概率；可考虑使用 --correction ml。"},
    "structural.var_nonpositive": {
        "en": "The BCH-weighted variance of {column} in class {k} is {value:.4g} (not positive): the classification error is large for that class; consider --correction ml.",
        "zh": "类别 {k} 中 {column} 的 BCH 加权方差为 {value:.4g}（非正）：该类别的分类误差较大；可考虑使用 --correction ml。"},
    "structural.ml_not_converged": {
        "en": "The ML correction's maximisation stopped after {n} Newton steps without converging; the step-3 estimates may be inaccurate.",
        "zh": "ML 校正的最大化在 {n} 次牛顿迭代后停止且未收敛；第 3 步的估计值可能不准确。"},
})


def posteriors(model: MixtureModel, data: Data, params: Params,
               chunk_size: int = 4096) -> np.ndarray:
    """Every row's posterior class probabilities (n, K) at ``params``."""
    from ..inference.classification import posteriors_of

    return posteriors_of(model, data, params, chunk_size).rows()


def step23(tau: np.ndarray, c: np.ndarray | None, sdata: StructuralData, K: int, *,
           correction: str, assignment: str, weight_type: str = "frequency",
           fixed_weights: np.ndarray | None = None) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    """``(step-3 model, Step3, W, D)`` from the posteriors ``tau`` of the kept rows."""
    W = assign(tau, assignment)
    D = classification_error(tau, W, c)
    obs = np.flatnonzero(sdata.observed)
    sm = sdata.model(K, correction, fixed_weights=fixed_weights)
    res = step3(sm, W[obs], D, correction, weights=None if c is None else c[obs],
                weight_type=weight_type)
    return sm, res, W, D


def out_of_range(sm: Any, theta: np.ndarray) -> list[str]:
    """Sentences on BCH estimates outside their space (probabilities, variances)."""
    from .models import DistalModel

    if not isinstance(sm, DistalModel):
        return []
    out = []
    par = sm.unpack(theta)
    for kind, j, _, _ in sm.blocks:
        col = sm.columns[j]
        for k in range(sm.K):
            if kind == "categorical":
                p = par[j][k]
                if np.any(p < 0) or np.any(p > 1):
                    out.append(t("structural.prob_outside", column=col, k=k + 1,
                                 values=", ".join(f"{v:.4g}" for v in p)))
            elif par[j][1][k] <= 0:
                out.append(t("structural.var_nonpositive", column=col, k=k + 1,
                             value=float(par[j][1][k])))
    return out


def three_step(model: MixtureModel, data: Data, params: Params, sdata: StructuralData, *,
               correction: str, assignment: str = "modal", weight_type: str = "frequency",
               chunk_size: int = 4096) -> dict[str, Any]:
    """Steps 2 and 3: the result dict (module docstring)."""
    _, c = split_weight(data)
    tau = posteriors(model, data, params, chunk_size)
    K = int(model.n_components)
    sm, res, W, D = step23(tau, c, sdata, K, correction=correction, assignment=assignment,
                           weight_type=weight_type)
    J = sm.jacobian()
    cov_rep = J @ res.cov @ J.T
    warnings = out_of_range(sm, res.theta)
    if not res.converged:
        warnings.append(t("structural.ml_not_converged", n=res.n_iter))
    obs = sdata.observed
    return {
        "kind": sdata.kind, "correction": correction, "assignment": assignment,
        "columns": list(sdata.columns),
        "distal_type": sdata.distal_type if sdata.kind == "distal" else None,
        "reference": int(sdata.reference) if sdata.kind == "covariates" else None,
        "D": D, "theta": res.theta, "cov_free": res.cov,
        "names": sm.names(), "free_names": sm.free_names(), "scales": sm.scales(),
        "estimates": sm.reported(res.theta),
        "se_step3": np.sqrt(np.clip(np.diag(cov_rep), 0, None)),
        "loglik": res.loglik, "n_iter": int(res.n_iter), "converged": bool(res.converged),
        "n_rows": int(obs.size), "n_step3": int(obs.sum()),
        "assigned": W.sum(axis=0) if c is None else (W * c[:, None]).sum(axis=0),
        "warnings": warnings, "notes": [],
    }
