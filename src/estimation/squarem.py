"""SQUAREM acceleration of the EM map (Varadhan and Roland 2008, scheme S3).

One cycle from ``p0``: ``p1 = M(p0)``, ``p2 = M(p1)``, ``r = p1 - p0``, ``v = p2 - 2 p1 + p0``,
step ``alpha = -||r|| / ||v||`` (kept at most -1), extrapolation
``p' = p0 - 2 alpha r + alpha^2 v``, then a stabilising EM step ``M(p')`` that starts the
next cycle.  Vectors are the model's natural-scale free parameters
(:meth:`MixtureModel.to_free`, i.e. :class:`src.models.parameterisation.FreeParameterisation`,
built once per model and cached).

Here ``a = -alpha >= 1`` is stored (as in the SQUAREM R package); ``a = 1`` gives ``p2``, the
plain EM step.  A candidate outside the parameter space, or whose log-likelihood is below
``l(p1)``, is backtracked halfway toward the plain step (``a -> (a + 1) / 2``) until it is
accepted; below ``1 + MIN_EXCESS`` the plain step ``p2`` itself is used, whose
log-likelihood cannot fall.  The step bound ``step_max`` adapts (x4 after a full-length
accepted step, /4 after a failure at full length) and is part of the checkpoint state.

This module holds the pure pieces; :mod:`src.estimation.em` runs the cycle one EM-map
evaluation at a time so it can checkpoint between any two evaluations.
"""

from __future__ import annotations

import numpy as np

from src.models.base import MixtureModel, Params

__all__ = ["STEP_MAX0", "MSTEP", "MIN_EXCESS", "step_length", "first_step", "propose",
           "update_step_max"]

#: initial upper bound of a (the first cycle is two plain EM steps)
STEP_MAX0 = 1.0
#: factor by which step_max grows after a full-length accepted step (or shrinks on failure)
MSTEP = 4.0
#: a step with a < 1 + MIN_EXCESS is replaced by the plain EM step p2
MIN_EXCESS = 0.01


def step_length(r: np.ndarray, v: np.ndarray, step_max: float) -> float:
    """Scheme S3 step length a = ||r|| / ||v||, clipped to [1, step_max]."""
    nr = float(np.linalg.norm(r))
    nv = float(np.linalg.norm(v))
    a = nr / nv if nv > 0 else step_max
    if not np.isfinite(a):
        a = step_max
    return float(min(max(a, 1.0), step_max))


def _vectors(model: MixtureModel, p0: Params, p1: Params, p2: Params) -> tuple[np.ndarray, ...]:
    f0, f1, f2 = model.to_free(p0), model.to_free(p1), model.to_free(p2)
    return f0, f1 - f0, f2 - 2.0 * f1 + f0


def first_step(model: MixtureModel, p0: Params, p1: Params, p2: Params, step_max: float) -> float:
    """The cycle's S3 step length from its three iterates, clipped to [1, step_max]."""
    _, r, v = _vectors(model, p0, p1, p2)
    return step_length(r, v, step_max)


def propose(model: MixtureModel, p0: Params, p1: Params, p2: Params,
            a: float) -> tuple[float, Params]:
    """The candidate for step ``a``, backtracked halfway toward p2 while outside the space.

    Returns ``(a_used, candidate)``; ``a_used == 1.0`` means the candidate is ``p2`` itself.
    """
    if a < 1.0 + MIN_EXCESS:
        return 1.0, p2
    f0, r, v = _vectors(model, p0, p1, p2)
    while a >= 1.0 + MIN_EXCESS:
        theta = f0 + 2.0 * a * r + a * a * v
        if np.all(np.isfinite(theta)):
            cand = model.from_free(theta)
            if model.in_parameter_space(cand):
                return a, cand
        a = 0.5 * (a + 1.0)
    return 1.0, p2


def update_step_max(step_max: float, a_first: float, failed: bool) -> float:
    """Adapt the step bound after a cycle (the SQUAREM package's rule)."""
    if failed:
        return max(STEP_MAX0, step_max / MSTEP) if a_first >= step_max else step_max
    return step_max * MSTEP if a_first >= step_max else step_max
