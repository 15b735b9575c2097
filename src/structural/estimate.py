"""Step 3 of three-step estimation with the measurement model held fixed (pure numpy).

Given the assignment ``W`` (n, K) and the classification-error matrix ``D``
(:mod:`.assignment`), a structural model (:mod:`.models`) is estimated on its rows ``i`` (with
row weights ``c_i``, 1 without ``--weights``) by one of three corrections:

* ``none`` (naive three-step): the assignment taken as the class, ``max sum_i c_i sum_k
  W_ik log f_ik``;
* ``bch`` (Bolck, Croon & Hagenaars 2004; Vermunt 2010; for distal outcomes Bakk, Tekle &
  Vermunt 2013): the same with the BCH weights ``w = W D^{-1}`` in place of ``W`` (weights
  that may be negative);
* ``ml`` (Vermunt 2010): ``max sum_i c_i log sum_k P(W_i | X = k) f_ik`` with ``P(W_i | X =
  k) = exp(sum_s W_is log D[k, s])`` fixed (covariates: ``f_ik = P(X = k | z_i)``; distal
  outcomes: ``f_ik = P(X = k) p(y_i | X = k)`` with the class proportions free).  Newton's
  method on this log-likelihood, its Hessian exact (the complete-data Hessians weighted by
  the posteriors ``r_ik`` plus their scores' covariance), with a step on the complete-data
  information wherever the observed one is not negative definite, and step-halving so
  that the log-likelihood never falls.

Standard errors of step 3 alone are **sandwich** ones, ``A^-1 B A^-1``: ``A`` minus the
derivative of the estimating equations (``sum_ik c_i w_ik S_ik`` for naive and BCH, the
score ``sum_ik c_i r_ik S_ik`` for ML), ``B = sum_i c_i psi_i psi_i'`` (frequency weights;
``c_i^2`` for sampling weights): valid with negative BCH weights, where the weighted
"likelihood" is no likelihood.  :mod:`.corrected` adds the uncertainty of step 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .assignment import targets
from .models import StructuralModel

__all__ = ["CORRECTIONS", "Step3", "step3", "estimating_functions", "sandwich",
           "maximise_ml", "ml_terms"]

#: --correction
CORRECTIONS = ("none", "bch", "ml")


@dataclass
class Step3:
    """Step 3's estimate: ``theta`` (free), the sandwich ``cov`` of theta, the targets
    ``targets`` (n, K: W, the BCH weights, or the ML posteriors), ``loglik`` (ML's, else
    None), ``n_iter`` and ``converged`` (ML's Newton; 0 and True otherwise)."""

    theta: np.ndarray
    cov: np.ndarray
    targets: np.ndarray
    loglik: float | None = None
    n_iter: int = 0
    converged: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def _c(weights: np.ndarray | None, n: int) -> np.ndarray:
    return np.ones(n) if weights is None else np.asarray(weights, dtype=float)


def ml_terms(model: StructuralModel, log_a: np.ndarray, theta: np.ndarray,
             c: np.ndarray) -> tuple[float, np.ndarray]:
    """``(sum_i c_i log sum_k a_ik f_ik, posteriors r (n, K))``."""
    L = log_a + model.log_f(theta)
    top = np.max(L, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        lse = top[:, 0] + np.log(np.sum(np.exp(L - top), axis=1))
        r = np.exp(L - lse[:, None])
    return float(c @ lse), r


def _observed(model: StructuralModel, theta: np.ndarray, r: np.ndarray, c: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(per-row scores psi (n, P), gradient, observed Hessian, complete-data Hessian)."""
    S = model.score(theta)
    S = np.where(r[:, :, None] > 0, S, 0.0)
    psi = np.einsum("nk,nkp->np", r, S)
    g = c @ psi
    Hc = model.hess(theta, c[:, None] * r)
    outer = np.einsum("nk,nkp,nkq->pq", c[:, None] * r, S, S) - np.einsum("n,np,nq->pq", c, psi, psi)
    return psi, g, Hc + outer, Hc


def _solve_pd(A: np.ndarray, g: np.ndarray) -> np.ndarray | None:
    try:
        L = np.linalg.cholesky(0.5 * (A + A.T))
    except np.linalg.LinAlgError:
        return None
    return np.linalg.solve(L.T, np.linalg.solve(L, g))


def maximise_ml(model: StructuralModel, log_a: np.ndarray, theta0: np.ndarray,
                c: np.ndarray, *, tol: float = 1e-32, max_iter: int = 500
                ) -> tuple[np.ndarray, float, int, bool]:
    """``(theta, loglik, steps, converged)`` of the ML correction's log-likelihood from
    ``theta0``: Newton steps (the complete-data information's where the observed one is
    not positive definite), halved until feasible and higher (below the log-likelihood's
    rounding: the full step while it makes the gradient smaller); converged when the Newton
    decrement ``g'd / 2 <= tol (1 + |loglik|)`` or no step makes the gradient smaller."""
    theta = np.asarray(theta0, dtype=float).copy()
    ll, r = ml_terms(model, log_a, theta, c)
    converged = False
    steps = 0
    while steps < max_iter:
        _, g, H, Hc = _observed(model, theta, r, c)
        d = _solve_pd(-H, g)
        if d is None or float(g @ d) <= 0:
            d = _solve_pd(-Hc, g)
        if d is None:
            break
        decrement = 0.5 * float(g @ d)
        if not np.isfinite(decrement):
            break
        if decrement <= tol * (1.0 + abs(ll)):
            converged = True
            break
        t, accepted = 1.0, False
        for _ in range(60):
            trial = theta + t * d
            if model.feasible(trial):
                ll_t, r_t = ml_terms(model, log_a, trial, c)
                # a strict rise: a step that leaves the log-likelihood where it is (its
                # rounding, near the maximum) goes to the gradient test below instead --
                # accepted, tiny steps of equal log-likelihood stalled Newton short of the
                # maximum (500 of them, |g| 1e-7, not converged)
                if np.isfinite(ll_t) and ll_t > ll:
                    accepted = True
                    break
            t *= 0.5
        if not accepted and decrement <= 1e-8 * (1.0 + abs(ll)):
            # the rise is below the log-likelihood's rounding: take the full step while it
            # makes the gradient smaller (Newton's last steps), else stop there
            trial = theta + d
            if model.feasible(trial):
                ll_t, r_t = ml_terms(model, log_a, trial, c)
                g_t = _observed(model, trial, r_t, c)[1]
                accepted = bool(np.isfinite(ll_t)) and np.linalg.norm(g_t) < np.linalg.norm(g)
            if not accepted:
                converged = True
                break
        elif not accepted:
            break
        theta, ll, r = trial, ll_t, r_t
        steps += 1
    return theta, ll, steps, converged


def estimating_functions(model: StructuralModel, theta: np.ndarray, correction: str,
                         targets: np.ndarray, c: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
    """``(psi (n, P), A (P, P))``: each row's estimating function (without its weight) and
    minus the derivative of ``sum_i c_i psi_i``.  ``targets``: W or the BCH weights (naive,
    BCH) or ``log a`` (ML)."""
    if correction == "ml":
        _, r = ml_terms(model, targets, theta, c)
        psi, _, H, _ = _observed(model, theta, r, c)
        return psi, -H
    S = model.score(theta)
    psi = np.einsum("nk,nkp->np", targets, S)
    return psi, -model.hess(theta, c[:, None] * targets)


def sandwich(psi: np.ndarray, A: np.ndarray, c: np.ndarray,
             weight_type: str = "frequency") -> np.ndarray:
    """``A^-1 B A^-1`` with ``B = sum_i c_i psi_i psi_i'`` (``c_i^2`` for sampling
    weights); NaN when A is singular."""
    cb = c if weight_type == "frequency" else c ** 2
    B = (psi * cb[:, None]).T @ psi
    try:
        Ainv = np.linalg.inv(A)
    except np.linalg.LinAlgError:
        return np.full(A.shape, np.nan)
    cov = Ainv @ B @ Ainv.T
    return 0.5 * (cov + cov.T)


def step3(model: StructuralModel, W: np.ndarray, D: np.ndarray, correction: str, *,
          weights: np.ndarray | None = None, weight_type: str = "frequency",
          tol: float = 1e-32, max_iter: int = 500) -> Step3:
    """Step 3 on the model's rows: ``W`` (n, K) their assignments, ``D`` the classification
    error of the whole measurement sample, ``weights`` their row weights (None: 1)."""
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {CORRECTIONS}, got {correction!r}")
    W = np.asarray(W, dtype=float)
    c = _c(weights, W.shape[0])
    if correction in ("none", "bch"):
        weights_ = targets(correction, W, D)
        theta = model.fit_weighted(c[:, None] * weights_)
        psi, A = estimating_functions(model, theta, correction, weights_, c)
        return Step3(theta, sandwich(psi, A, c, weight_type), weights_)
    log_a = targets("ml", W, D)
    # start: one EM step from flat class-conditional densities (r_ik proportional to a_ik)
    theta0 = model.fit_weighted(c[:, None] * _normalise(log_a))
    theta, ll, steps, converged = maximise_ml(model, log_a, theta0, c, tol=tol,
                                              max_iter=max_iter)
    psi, A = estimating_functions(model, theta, "ml", log_a, c)
    _, r = ml_terms(model, log_a, theta, c)
    return Step3(theta, sandwich(psi, A, c, weight_type), r, ll, steps, converged,
                 {"log_a": log_a})


def _normalise(log_a: np.ndarray) -> np.ndarray:
    top = np.max(log_a, axis=1, keepdims=True)
    e = np.exp(log_a - top)
    return e / e.sum(axis=1, keepdims=True)
