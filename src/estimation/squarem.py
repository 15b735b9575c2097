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
           "first_proposal", "proposals", "update_step_max"]

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
    return _propose(model, *_vectors(model, p0, p1, p2), p2, a)


def first_proposal(model: MixtureModel, p0: Params, p1: Params, p2: Params,
                   step_max: float) -> tuple[float, float, Params]:
    """``(a_first, a_used, candidate)``: :func:`first_step` then :func:`propose`, with the
    free vectors computed once (the same numbers)."""
    f0, r, v = _vectors(model, p0, p1, p2)
    a0 = step_length(r, v, step_max)
    if a0 < 1.0 + MIN_EXCESS:
        return a0, 1.0, p2
    a, cand = _propose(model, f0, r, v, p2, a0)
    return a0, a, cand


def _propose(model: MixtureModel, f0: np.ndarray, r: np.ndarray, v: np.ndarray, p2: Params,
             a: float) -> tuple[float, Params]:
    while a >= 1.0 + MIN_EXCESS:
        theta = f0 + 2.0 * a * r + a * a * v
        if np.all(np.isfinite(theta)):
            cand = model.from_free(theta)
            if model.in_parameter_space(cand):
                return a, cand
        a = 0.5 * (a + 1.0)
    return 1.0, p2


def proposals(model: MixtureModel, cycles: list[tuple[Params, Params, Params]],
              steps: list[float | None], step_maxs: list[float]
              ) -> list[tuple[float, float, Params]]:
    """Several cycles' proposals at once: per cycle ``(a_first, a_used, candidate)``.

    ``cycles``: the iterates (p0, p1, p2); ``steps[i]``: the step to try (a backtracking
    cycle, whose ``a_first`` is then returned as None), or None for a new cycle, whose
    step is :func:`step_length` with ``step_maxs[i]``.  Each cycle gets exactly what
    :func:`first_proposal` (new) or :func:`propose` (given step) gives it; a model with
    ``to_free_batch``, ``from_free_batch`` and ``in_parameter_space_batch`` has its free
    vectors, candidates and constraint checks computed for all cycles together.
    """
    n = len(cycles)
    batch = all(hasattr(model, f) for f in ("to_free_batch", "from_free_batch",
                                             "in_parameter_space_batch"))
    if batch:
        F0, F1, F2 = np.split(model.to_free_batch([c[i] for i in range(3) for c in cycles]), 3)
    else:
        F0, F1, F2 = (np.array([model.to_free(c[i]) for c in cycles]) for i in range(3))
    R = F1 - F0
    V = F2 - 2.0 * F1 + F0
    first: list[float | None] = [None] * n
    a = np.empty(n)
    for i in range(n):
        if steps[i] is None:
            first[i] = step_length(R[i], V[i], step_maxs[i])
            a[i] = first[i]
        else:
            a[i] = steps[i]
    out: list[tuple[float, float, Params] | None] = [None] * n
    pending = np.flatnonzero(a >= 1.0 + MIN_EXCESS)
    for i in np.flatnonzero(a < 1.0 + MIN_EXCESS):
        out[i] = (first[i], 1.0, cycles[i][2])
    while pending.size:
        ap = a[pending][:, None]
        theta = F0[pending] + 2.0 * ap * R[pending] + ap * ap * V[pending]
        finite = np.all(np.isfinite(theta), axis=1)
        ok = np.zeros(pending.size, dtype=bool)
        cands: list[Params | None] = [None] * pending.size
        rows = np.flatnonzero(finite)
        if rows.size:
            if batch:
                made = model.from_free_batch(theta[rows])
                inside = model.in_parameter_space_batch(made)
            else:
                made = [model.from_free(theta[r]) for r in rows]
                inside = [model.in_parameter_space(c) for c in made]
            for r, c, good in zip(rows, made, inside):
                cands[r], ok[r] = c, bool(good)
        for r in np.flatnonzero(ok):
            i = pending[r]
            out[i] = (first[i], float(a[i]), cands[r])
        rest = pending[~ok]
        a[rest] = 0.5 * (a[rest] + 1.0)
        for i in rest[a[rest] < 1.0 + MIN_EXCESS]:
            out[i] = (first[i], 1.0, cycles[i][2])
        pending = rest[a[rest] >= 1.0 + MIN_EXCESS]
    return out  # type: ignore[return-value]


def update_step_max(step_max: float, a_first: float, failed: bool) -> float:
    """Adapt the step bound after a cycle (the SQUAREM package's rule)."""
    if failed:
        return max(STEP_MAX0, step_max / MSTEP) if a_first >= step_max else step_max
    return step_max * MSTEP if a_first >= step_max else step_max
