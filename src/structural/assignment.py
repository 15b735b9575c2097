"""Step 2 of three-step estimation: class assignments and the classification-error matrix.

With the measurement model's posteriors ``tau`` (n, K), ``tau_ik = P(X_i = k | y_i)``:

* the **assignment** ``W`` (n, K) is modal (``W_is = 1`` for the most probable class, the
  first on ties; the default, as Vermunt 2010 and StepMix) or soft (``W = tau``);
* the **classification-error matrix** ``D`` (K, K), row = true class k, column = assigned
  class s::

      D[k, s] = d_sk = P(W = s | X = k) = sum_i c_i tau_ik W_is / sum_i c_i tau_ik

  (``c_i`` the row weights, 1 without ``--weights``).  Each row of D sums to 1.
* **BCH weights** (Bolck, Croon & Hagenaars 2004; Vermunt 2010): ``w = W D^{-1}`` (n, K),
  ``w_ik = sum_s W_is (D^{-1})_sk``.  They may be negative.  Since D's rows sum to 1, each
  row's weights sum to 1, and ``sum_i c_i w_ik = sum_i c_i tau_ik`` (the posterior class
  sizes), exactly.
* **ML emission** (Vermunt 2010): ``log a_ik = log P(W_i | X = k) = sum_s W_is log D[k, s]``
  (modal: ``log D[k, s_i]``; soft: StepMix's convention, the posterior-weighted log).
"""

from __future__ import annotations

import numpy as np

__all__ = ["ASSIGNMENTS", "assign", "classification_error", "bch_weights", "log_emission",
           "targets"]

#: --assignment
ASSIGNMENTS = ("modal", "soft")


def assign(tau: np.ndarray, assignment: str = "modal") -> np.ndarray:
    """The assignment W (n, K): one-hot of each row's most probable class (the first on
    ties), or the posteriors themselves (``soft``)."""
    tau = np.asarray(tau, dtype=float)
    if assignment == "soft":
        return tau.copy()
    if assignment != "modal":
        raise ValueError(f"assignment must be one of {ASSIGNMENTS}, got {assignment!r}")
    W = np.zeros_like(tau)
    W[np.arange(tau.shape[0]), np.argmax(tau, axis=1)] = 1.0
    return W


def classification_error(tau: np.ndarray, W: np.ndarray,
                         weights: np.ndarray | None = None) -> np.ndarray:
    """D (K, K) with ``D[k, s] = sum_i c_i tau_ik W_is / sum_i c_i tau_ik`` (rows: true
    class, columns: assigned class; each row sums to 1)."""
    tau = np.asarray(tau, dtype=float)
    cw = tau if weights is None else tau * np.asarray(weights, dtype=float)[:, None]
    sizes = cw.sum(axis=0)
    return (cw.T @ np.asarray(W, dtype=float)) / sizes[:, None]


def bch_weights(W: np.ndarray, D: np.ndarray) -> np.ndarray:
    """BCH weights ``W D^{-1}`` (n, K); ValueError when D is singular (the classes cannot
    be told apart by the assignments)."""
    D = np.asarray(D, dtype=float)
    if not np.all(np.isfinite(D)) or np.linalg.cond(D) > 1e12:
        raise ValueError("the classification-error matrix D is singular")
    return np.asarray(W, dtype=float) @ np.linalg.inv(D)


def log_emission(W: np.ndarray, D: np.ndarray) -> np.ndarray:
    """``log a_ik = sum_s W_is log D[k, s]`` (n, K); a zero entry of D gives -inf where a
    row is assigned to it (modal) and is left out where it weighs nothing (soft)."""
    W = np.asarray(W, dtype=float)
    with np.errstate(divide="ignore"):
        logD = np.log(np.asarray(D, dtype=float))
    finite = np.where(np.isfinite(logD), logD, 0.0)
    out = W @ finite.T
    if not np.all(np.isfinite(logD)):   # -inf where a row puts weight on an impossible cell
        hit = (W > 0).astype(float) @ (~np.isfinite(logD)).T.astype(float)
        out = np.where(hit > 0, -np.inf, out)
    return out


def targets(correction: str, W: np.ndarray, D: np.ndarray) -> np.ndarray:
    """What step 3 weighs each row's classes by (n, K): ``W`` (naive, ``none``), the BCH
    weights ``W D^-1`` (``bch``) or ``log a`` (``ml``, :func:`log_emission`)."""
    if correction == "none":
        return np.asarray(W, dtype=float)
    if correction == "bch":
        return bch_weights(W, D)
    return log_emission(W, D)
