"""Standard errors of step 3 that also account for step 1 (Bakk, Oberski & Vermunt 2014).

Step 3's estimate solves ``G(theta3; theta1) = sum_i c_i psi_i(theta3; theta1) = 0``, where
the measurement estimate ``theta1`` enters through the posteriors, hence D (and, with soft
assignment, the assignments themselves; modal assignments are held at the estimate's, since
they change only by jumps).  By the implicit function theorem ``d theta3 / d theta1 = A^-1
dG/dtheta1`` with ``A = -dG/dtheta3``, and::

    Cov(theta3) = Sigma_3 + (d theta3/d theta1) Sigma_1 (d theta3/d theta1)'

``Sigma_3`` the step-3 sandwich, ``Sigma_1`` the measurement model's covariance from the
standard-error phase (its primary method).  ``dG/dtheta1`` is taken by central differences,
each step a fixed fraction of the parameter's natural scale
(:func:`src.inference.derivatives.natural_scales`), one pass over the posteriors per side.
Measurement parameters whose variance is NaN (on the boundary) are held fixed, with a note.
Naive modal three-step has ``dG/dtheta1 = 0``: its corrected SEs are the step-3 ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..models.base import Data, MixtureModel, Params, split_weight
from ..utils.messages import register, t
from .assignment import assign, classification_error, targets
from .data import StructuralData
from .estimate import estimating_functions
from .run import posteriors

__all__ = ["step1_jacobian", "corrected_covariance"]

register({
    "structural.corrected_fixed": {
        "en": "{n} measurement parameters without a standard error (on the boundary) were held fixed in the corrected standard errors.",
        "zh": "{n} 个没有标准误的测量参数（位于边界）在校正标准误中被视为固定。"},
})


def _G(model: MixtureModel, data: Data, params: Params, sdata: StructuralData, sm: Any,
       theta3: np.ndarray, W_hat: np.ndarray, *, correction: str, assignment: str,
       chunk_size: int) -> np.ndarray:
    """``sum_i c_i psi_i(theta3)`` with the posteriors at ``params``."""
    _, c = split_weight(data)
    tau = posteriors(model, data, params, chunk_size)
    W = W_hat if assignment == "modal" else assign(tau, assignment)
    D = classification_error(tau, W, c)
    obs = np.flatnonzero(sdata.observed)
    cs = np.ones(obs.size) if c is None else c[obs]
    psi, _ = estimating_functions(sm, theta3, correction, targets(correction, W, D)[obs], cs)
    return cs @ psi


def step1_jacobian(model: MixtureModel, data: Data, params: Params, sdata: StructuralData,
                   sm: Any, theta3: np.ndarray, A: np.ndarray, *, correction: str,
                   assignment: str, chunk_size: int = 4096,
                   skip: set[int] | frozenset = frozenset()) -> np.ndarray:
    """``d theta3 / d theta1`` (P3, P1) by central differences of G (module docstring)."""
    from ..inference import derivatives as dv

    theta1 = model.to_free(params)
    P1 = theta1.size
    u = dv.natural_scales(model, data, params, chunk_size=chunk_size, skip=skip)
    h = dv.feasible_steps(model, theta1, dv.EPS ** (1 / 3) * u, factor=1.0, skip=skip)
    W_hat = assign(posteriors(model, data, params, chunk_size), "modal")
    dG = np.zeros((theta3.size, P1))
    for j in range(P1):
        if j in skip:
            continue
        sides = []
        for sign in (1.0, -1.0):
            th = theta1.copy()
            th[j] += sign * h[j]
            sides.append(_G(model, data, model.from_free(th), sdata, sm, theta3, W_hat,
                            correction=correction, assignment=assignment,
                            chunk_size=chunk_size))
        dG[:, j] = (sides[0] - sides[1]) / (2.0 * h[j])
    return np.linalg.solve(A, dG)


def corrected_covariance(model: MixtureModel, data: Data, params: Params,
                         sdata: StructuralData, sm: Any, theta3: np.ndarray, cov3: np.ndarray,
                         cov1: np.ndarray, *, correction: str, assignment: str,
                         chunk_size: int = 4096) -> tuple[np.ndarray, list[str]]:
    """``(Sigma_3 + J Sigma_1 J', notes)`` (free parameters of step 3)."""
    cov1 = np.asarray(cov1, dtype=float)
    skip = {j for j in range(cov1.shape[0]) if not np.isfinite(cov1[j, j])}
    notes = [t("structural.corrected_fixed", n=len(skip))] if skip else []
    _, c = split_weight(data)
    tau = posteriors(model, data, params, chunk_size)
    W = assign(tau, assignment)
    D = classification_error(tau, W, c)
    obs = np.flatnonzero(sdata.observed)
    cs = np.ones(obs.size) if c is None else c[obs]
    _, A = estimating_functions(sm, theta3, correction, targets(correction, W, D)[obs], cs)
    J = step1_jacobian(model, data, params, sdata, sm, theta3, A, correction=correction,
                       assignment=assignment, chunk_size=chunk_size, skip=skip)
    S1 = np.where(np.isfinite(cov1), cov1, 0.0)
    cov = cov3 + J @ S1 @ J.T
    return 0.5 * (cov + cov.T), notes
