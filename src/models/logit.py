"""The multinomial logit of class membership, with a reference class (pure numpy/scipy).

``pi_ik(beta) = softmax(z_i' beta)_k`` with ``beta`` of shape (K, q) whose row ``reference`` is
fixed at 0.  The **free parameterisation** is the other K-1 rows, row-major: free index
``j * q + c`` is class ``free_classes[j]`` (the classes other than the reference, in order) and
covariate ``c``.

The objective ``sum_i w_i sum_k R_ik log pi_ik(beta)`` splits into a linear part and a
normaliser::

    sum_k beta_k' S_k   -   sum_i m_i lse(z_i' beta),   S = (w R)' Z  (K, q),  m_i = w_i sum_k R_ik

Both are sums over rows, so every function here returns a sum over the rows it is given:
map it over chunks or partitions and add the results (:class:`Terms` adds with ``+`` and
``sum``).  ``R`` is any (n, K) array of "targets": posterior probabilities (rows summing to 1),
or BCH-weighted indicators, which may be negative.  Nothing here assumes ``R >= 0`` or rows
summing to 1; only the Hessian's sign depends on it: it is negative semi-definite when every
``m_i >= 0`` (then the objective is concave); otherwise :func:`newton` shifts it until it is
(a damped Newton step) and still never lets the objective fall.

Functions:
  :func:`design`            intercept + covariate columns -> (Z, names)
  :func:`probabilities`     (n, K) class probabilities
  :func:`linear_stats`      S = (w R)' Z, additive
  :func:`normaliser`        sum_i m_i lse(z_i' beta) with gradient and Hessian (free), additive
  :func:`objective`         the whole objective with gradient and Hessian (free), additive
  :func:`newton`            Newton's method with step-halving on a caller's ``eval_fn``
  :func:`to_free`, :func:`from_free`, :func:`rereference`
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

import numpy as np

__all__ = [
    "INTERCEPT", "Terms", "NewtonResult", "design", "probabilities", "log_probabilities",
    "linear_stats", "linear_terms", "normaliser", "objective", "newton", "to_free", "from_free",
    "free_classes", "rereference", "NOISE", "normaliser_with_log_probabilities",
    "bohning_bound", "outer_products", "unpack_outer", "third_derivative_bound",
]

#: the name of the intercept column that :func:`design` puts first
INTERCEPT = "intercept"


@dataclass(frozen=True)
class Terms:
    """A value with its gradient (p,) and Hessian (p, p) in the free parameterisation.

    ``Terms`` add elementwise (``a + b``, ``sum(list_of_terms)``), so the terms of chunks of rows
    sum to the terms of all rows.  ``grad`` / ``hess`` are None when not asked for."""

    value: float
    grad: np.ndarray | None = None
    hess: np.ndarray | None = None

    def __add__(self, other: "Terms") -> "Terms":
        if isinstance(other, (int, float)) and other == 0:
            return self
        return Terms(self.value + other.value, _add(self.grad, other.grad), _add(self.hess, other.hess))

    __radd__ = __add__

    def __sub__(self, other: "Terms") -> "Terms":
        return self + other.scaled(-1.0)

    def scaled(self, c: float) -> "Terms":
        return Terms(c * self.value, None if self.grad is None else c * self.grad,
                     None if self.hess is None else c * self.hess)

    def as_tuple(self) -> tuple[float, np.ndarray | None, np.ndarray | None]:
        return self.value, self.grad, self.hess


def _add(a, b):
    if a is None or b is None:
        return None
    return a + b


# ----------------------------------------------------------------------------------------------
# design and the parameterisation


def design(frame_or_array, names: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """The design matrix: a column of ones first, then the covariates, float64 (n, q).

    ``frame_or_array``: a pandas DataFrame (``names`` are its columns to take; default all), or
    an (n,) / (n, c) array (``names`` name its columns; default ``z1..zc``).  Returns ``(Z,
    names)`` with ``names[0] == INTERCEPT``.  Values must be finite numbers (the data layer
    checks and says which row is not)."""
    if hasattr(frame_or_array, "columns"):
        cols = list(frame_or_array.columns) if names is None else list(names)
        X = np.asarray(frame_or_array[cols].to_numpy(dtype=np.float64), dtype=np.float64)
    else:
        X = np.asarray(frame_or_array, dtype=np.float64)
        if X.ndim == 1:
            X = X[:, None]
        cols = [f"z{c + 1}" for c in range(X.shape[1])] if names is None else list(names)
        if len(cols) != X.shape[1]:
            raise ValueError(f"design: {len(cols)} names for {X.shape[1]} columns")
    if X.ndim != 2:
        raise ValueError(f"design: expected a 2-d array of covariates, got shape {X.shape}")
    Z = np.empty((X.shape[0], X.shape[1] + 1), dtype=np.float64)
    Z[:, 0] = 1.0
    Z[:, 1:] = X
    return Z, [INTERCEPT] + [str(c) for c in cols]


def free_classes(K: int, reference: int = 0) -> np.ndarray:
    """The classes other than ``reference`` (0-based), in order: the free rows of beta
    (a read-only array, made once per (K, reference))."""
    return _free_classes(int(K), int(reference))


@lru_cache(maxsize=256)
def _free_classes(K: int, reference: int) -> np.ndarray:
    if not 0 <= reference < K:
        raise ValueError(f"reference class {reference} out of range for K = {K}")
    out = np.delete(np.arange(K, dtype=np.intp), reference)
    out.flags.writeable = False
    return out


def to_free(beta: np.ndarray, reference: int = 0) -> np.ndarray:
    """The free vector ((K-1) q,) of ``beta`` (K, q) re-referenced to ``reference``
    (``beta - beta[reference]``: the same probabilities), row-major."""
    beta = np.asarray(beta, dtype=np.float64)
    K = beta.shape[0]
    return (beta[free_classes(K, reference)] - beta[reference]).ravel()


def from_free(free: np.ndarray, K: int, q: int, reference: int = 0) -> np.ndarray:
    """``beta`` (K, q) from the free vector, the reference row 0."""
    beta = np.zeros((K, q), dtype=np.float64)
    beta[free_classes(K, reference)] = np.asarray(free, dtype=np.float64).reshape(K - 1, q)
    return beta


def rereference(beta: np.ndarray, reference: int) -> np.ndarray:
    """``beta - beta[reference]``: the same probabilities with row ``reference`` at 0."""
    beta = np.asarray(beta, dtype=np.float64)
    return beta - beta[reference]


# ----------------------------------------------------------------------------------------------
# probabilities


def _eta_t(Z: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """``(Z beta')'`` as a C-contiguous (K, n) array: reductions over the classes then run
    along the long axis (numpy reduces (n, K) arrays along a short last axis 50x slower)."""
    return np.asarray(beta, dtype=np.float64) @ np.asarray(Z, dtype=np.float64).T


def _lse_t(eta_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lse (n,), probabilities (K, n)) of the columns of ``eta_t`` (K, n), stable."""
    top = eta_t.max(axis=0)
    e = np.exp(eta_t - top)
    s = e.sum(axis=0)
    return np.log(s) + top, e / s


def log_probabilities(Z: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """``log pi_ik`` (n, K) (a transposed view of a (K, n) array)."""
    eta_t = _eta_t(Z, beta)
    lse, _ = _lse_t(eta_t)
    return (eta_t - lse).T


def probabilities(Z: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """``pi_ik = softmax(z_i' beta)_k`` (n, K) (a transposed view of a (K, n) array)."""
    return _lse_t(_eta_t(Z, beta))[1].T


# ----------------------------------------------------------------------------------------------
# the objective, in additive pieces


def linear_stats(Z: np.ndarray, R: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """``S = (w R)' Z`` (K, q): the statistic of the objective's linear part (additive over
    rows; ``R`` any real targets)."""
    R = np.asarray(R, dtype=np.float64)
    if w is not None:
        R = R * np.asarray(w, dtype=np.float64)[:, None]
    return R.T @ np.asarray(Z, dtype=np.float64)


def linear_terms(S: np.ndarray, beta: np.ndarray, reference: int = 0, order: int = 2) -> Terms:
    """``sum_k beta_k' S_k`` with its gradient (the free rows of S, re-referenced: the
    reference row of ``beta`` is taken as 0) and zero Hessian."""
    S = np.asarray(S, dtype=np.float64)
    K, q = S.shape
    fc = free_classes(K, reference)
    b = rereference(beta, reference)
    value = float(np.sum(b * S))
    grad = S[fc].ravel().copy() if order >= 1 else None
    hess = np.zeros(((K - 1) * q,) * 2) if order >= 2 else None
    return Terms(value, grad, hess)


def outer_products(Z: np.ndarray) -> np.ndarray:
    """Each row's ``z_a z_b`` for ``a <= b`` (row-major upper triangle), (n, q (q + 1) / 2):
    given to :func:`normaliser` (``outer``), the Hessian is one matrix product."""
    Z = np.asarray(Z, dtype=np.float64)
    a, b = _triu(Z.shape[1])
    return Z[:, a] * Z[:, b]


def unpack_outer(v: np.ndarray, q: int) -> np.ndarray:
    """The symmetric (q, q) matrix of a row of :func:`outer_products`' layout."""
    a, b = _triu(q)
    out = np.empty((q, q))
    out[a, b] = v
    out[b, a] = v
    return out


@lru_cache(maxsize=64)
def _full_of_triu(q: int) -> np.ndarray:
    """For each entry (i, j) of a q x q matrix (row-major), its place in the upper triangle."""
    a, b = _triu(q)
    place = np.empty((q, q), dtype=np.intp)
    place[a, b] = np.arange(a.size)
    place[b, a] = np.arange(a.size)
    out = place.ravel()
    out.flags.writeable = False
    return out


@lru_cache(maxsize=64)
def _triu(q: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.triu_indices(q)
    a.flags.writeable = b.flags.writeable = False
    return a, b


def normaliser(Z: np.ndarray, beta: np.ndarray, mass: np.ndarray | None = None,
               reference: int = 0, order: int = 2, outer: np.ndarray | None = None) -> Terms:
    """``sum_i m_i lse(z_i' beta)`` with gradient ``sum_i m_i pi_ik z_i`` (free classes k) and
    Hessian ``sum_i m_i pi_ia (delta_ac - pi_ic) z_i z_i'`` in the free parameterisation;
    ``mass`` = ``m`` (n,) (default 1 per row; any real numbers, e.g. ``w_i * sum_k R_ik``).
    ``beta``'s reference row is taken as 0.  Additive over rows.  ``outer``: the rows'
    :func:`outer_products` when the caller keeps them (the same numbers to rounding,
    faster)."""
    return _normaliser(Z, beta, mass, reference, order, False, outer)[0]


def normaliser_with_log_probabilities(Z: np.ndarray, beta: np.ndarray,
                                      mass: np.ndarray | None = None, reference: int = 0,
                                      order: int = 2, outer: np.ndarray | None = None
                                      ) -> tuple[Terms, np.ndarray]:
    """:func:`normaliser` and ``log pi`` (K, n) from one evaluation of the probabilities."""
    return _normaliser(Z, beta, mass, reference, order, True, outer)  # type: ignore[return-value]


def _normaliser(Z: np.ndarray, beta: np.ndarray, mass: np.ndarray | None, reference: int,
                order: int, log_pi: bool, outer: np.ndarray | None = None
                ) -> tuple[Terms, np.ndarray | None]:
    Z = np.asarray(Z, dtype=np.float64)
    b = np.asarray(beta, dtype=np.float64)
    K = b.shape[0]
    q = Z.shape[1]
    if b[reference].any():
        b = b - b[reference]
    eta_t = b @ Z.T                                           # (K, n)
    top = eta_t.max(axis=0)
    e = np.exp(eta_t - top)
    s = e.sum(axis=0)
    lse = np.log(s)
    lse += top
    m = None if mass is None else np.asarray(mass, dtype=np.float64)
    value = float(lse.sum() if m is None else lse @ m)
    grad = hess = None
    if order >= 1:
        fc = free_classes(K, reference)
        Pf = e[fc] / s                                        # (K-1, n)
        Pm = Pf if m is None else Pf * m
        grad = (Pm @ Z).ravel()
    if order >= 2:
        p = (K - 1) * q
        hess = np.empty((p, p))
        pairs = [(a, c) for a in range(K - 1) for c in range(a, K - 1)]
        # d2/dbeta_a dbeta_c of lse = pi_a (delta_ac - pi_c) z z'
        C = np.empty((len(pairs), Z.shape[0]))
        for j, (a, c) in enumerate(pairs):
            if a == c:
                np.multiply(Pm[a], 1.0 - Pf[c], out=C[j])
            else:
                np.multiply(Pm[a], Pf[c], out=C[j])
                np.negative(C[j], out=C[j])
        V = (C @ outer)[:, _full_of_triu(q)].reshape(-1, q, q) if outer is not None else None
        Zt = Z.T
        for j, (a, c) in enumerate(pairs):
            block = V[j] if V is not None else (Zt * C[j]) @ Z
            hess[a * q:(a + 1) * q, c * q:(c + 1) * q] = block
            if c != a:
                hess[c * q:(c + 1) * q, a * q:(a + 1) * q] = block.T
    if log_pi:
        eta_t -= lse
        return Terms(value, grad, hess), eta_t
    return Terms(value, grad, hess), None


def objective(Z: np.ndarray, beta: np.ndarray, R: np.ndarray, w: np.ndarray | None = None,
              reference: int = 0, order: int = 2) -> Terms:
    """``sum_i w_i sum_k R_ik log pi_ik(beta)`` with gradient and Hessian in the free
    parameterisation (``beta``'s reference row taken as 0); additive over rows.  ``R`` (n, K)
    any real targets, ``w`` (n,) row weights or None."""
    R = np.asarray(R, dtype=np.float64)
    mass = R @ np.ones(R.shape[1])
    if w is not None:
        mass = mass * np.asarray(w, dtype=np.float64)
    lin = linear_terms(linear_stats(Z, R, w), beta, reference, order)
    return lin - normaliser(Z, beta, mass, reference, order)


# ----------------------------------------------------------------------------------------------
# Newton's method


#: relative rounding of an objective's value (sums over many rows): :func:`newton` does not
#: compare values closer than this
NOISE = 1e-13


@dataclass(frozen=True)
class NewtonResult:
    """``beta`` (K, q) reached (reference row 0), its objective ``value``, the number of
    accepted ``steps``, whether the Newton decrement fell below ``tol`` (``converged``), and
    the number of objective evaluations (``evaluations``)."""

    beta: np.ndarray
    value: float
    steps: int
    converged: bool
    evaluations: int


def _ascent_direction(grad: np.ndarray, hess: np.ndarray) -> np.ndarray:
    """``(-H + lambda I)^{-1} g`` with the smallest ``lambda`` of 0, 1e-8 |H|, ... that makes
    ``-H + lambda I`` positive definite (Cholesky)."""
    A = -np.asarray(hess, dtype=np.float64)
    A = 0.5 * (A + A.T)
    scale = max(float(np.max(np.abs(np.diag(A)))) if A.size else 0.0, 1e-12)
    shift = 0.0
    for _ in range(40):
        try:
            L = np.linalg.cholesky(A + shift * np.eye(A.shape[0]) if shift else A)
        except np.linalg.LinAlgError:
            shift = scale * 1e-8 if shift == 0.0 else shift * 10.0
            continue
        y = np.linalg.solve(L, grad)
        return np.linalg.solve(L.T, y)
    return grad / scale


def third_derivative_bound(m3: float) -> float:
    """``T`` for :func:`newton`'s ``third`` from ``m3 = sum_i m_i |z_i|^3`` (masses >= 0): along
    any step d the third derivative of ``sum_i m_i lse(z_i' beta)`` is a sum of third
    cumulants of ``u_ik = z_i' d_k`` (with 0 for the reference), each at most ``r^3 /
    (6 sqrt 3)`` for a range ``r <= 2 |z_i| max_k |d_k|``, so ``T = 8 m3 / (6 sqrt 3)``."""
    return 8.0 * float(m3) / (6.0 * np.sqrt(3.0))


def bohning_bound(zz: np.ndarray, K: int) -> np.ndarray:
    """``B = (I - 1 1'/K) / 2 (x) sum_i m_i z_i z_i'`` ((K-1) q square, free parameterisation):
    an upper bound of ``-H`` of the objective at every beta when every row's mass ``m_i =
    w_i sum_k R_ik`` is >= 0 (Boehning 1992), for :func:`newton`'s ``bound``.  ``zz``: the
    (q, q) sum ``sum_i m_i z_i z_i'``."""
    zz = np.asarray(zz, dtype=np.float64)
    q = zz.shape[0]
    out = np.empty(((K - 1) * q, (K - 1) * q))
    for a in range(K - 1):
        for c in range(K - 1):
            out[a * q:(a + 1) * q, c * q:(c + 1) * q] = ((0.5 if a == c else 0.0) - 0.5 / K) * zz
    return out


def newton(eval_fn: Callable[[np.ndarray], tuple], beta0: np.ndarray, max_steps: int = 25,
           tol: float = 1e-10, reference: int = 0, max_halvings: int = 30,
           start: "Terms | tuple | None" = None,
           value_fn: Callable[[np.ndarray], float] | None = None,
           bound: np.ndarray | None = None, third: float | None = None) -> NewtonResult:
    """Maximise an objective of ``beta`` (K, q) by Newton's method with step-halving.

    ``eval_fn(beta) -> (value, grad, hess)`` (or a :class:`Terms`) in the free parameterisation
    of ``reference``; the caller decides how to pass over the rows (in memory, chunks,
    partitions).  Each step solves ``(-H) d = g`` (``-H`` shifted towards the identity when it
    is not positive definite), then halves ``d`` until the objective does not fall (at most
    ``max_halvings`` times; if none is accepted the iteration stops where it is), so the
    returned value is never below the starting value.  Stops when the Newton decrement
    ``g' d / 2 <= tol * (1 + |value|)`` or after ``max_steps`` accepted steps.  A step whose
    decrement (its predicted gain) is below the rounding of the value,
    :data:`NOISE` ``* (1 + |value|)``, cannot be judged by comparing values: it is taken in
    full without an evaluation (near the maximum the quadratic model is exact to that
    order, so the gradient keeps improving where the values cannot tell) and ends the
    iteration as converged; ``value`` is then the last evaluated one plus the decrement.

    ``start``: ``(value, grad, hess)`` at ``beta0`` when the caller has them already (one
    evaluation fewer).  ``value_fn(beta) -> value``: a cheaper evaluation of the value alone;
    given, trial points are judged by it and ``eval_fn`` is called only where a next step
    needs the derivatives (so with ``max_steps = 1`` and ``start``, never).
    ``evaluations`` counts the calls of both.

    ``bound``: a matrix ``B >= -H(beta)`` for every beta (:func:`bohning_bound`).  A full step
    whose guaranteed gain ``g' d - d' B d / 2`` (Taylor's theorem with the bound on the
    Hessian) is >= 0 cannot lower the objective: it is taken without evaluating it, and
    ``value`` grows by that guaranteed gain (a lower bound of the true one).  ``third``: a
    constant ``T`` with ``|d^3/dt^3 objective(beta + t d)| <= T max_k |d_k|^3`` for every beta
    and step (:func:`third_derivative_bound`); the full Newton step's gain is then at least
    ``g' d / 2 - T max_k |d_k|^3 / 6`` (Taylor's theorem), which certifies small steps the
    same way (near the maximum, almost every step)."""
    beta0 = np.asarray(beta0, dtype=np.float64)
    K, q = beta0.shape
    fc = free_classes(K, reference)

    def call(b):
        out = eval_fn(b)
        return out.as_tuple() if isinstance(out, Terms) else out

    beta = rereference(beta0, reference)
    if start is None:
        value, grad, hess = call(beta)
        evaluations = 1
    else:
        value, grad, hess = start.as_tuple() if isinstance(start, Terms) else start
        evaluations = 0
    steps = 0
    converged = False
    while True:
        d = _ascent_direction(grad, hess)
        decrement = 0.5 * float(grad @ d)
        if not np.isfinite(decrement) or decrement <= tol * (1.0 + abs(value)):
            converged = bool(np.isfinite(decrement))
            break
        if steps >= max_steps:
            break
        step = d.reshape(K - 1, q)
        if decrement <= NOISE * (1.0 + abs(value)):
            beta = beta.copy()
            beta[fc] += step
            value += decrement
            steps += 1
            converged = True
            break
        if bound is not None or third is not None:
            gain = -np.inf
            if bound is not None:
                gain = 2.0 * decrement - 0.5 * float(d @ (bound @ d))
            if third is not None:
                reach = float(np.sqrt((step * step).sum(axis=1).max()))
                gain = max(gain, decrement - float(third) * reach ** 3 / 6.0)
            if gain >= 0.0:   # certified: no evaluation needed
                beta = beta.copy()
                beta[fc] += step
                value += gain
                steps += 1
                if steps >= max_steps:
                    break
                value, grad, hess = call(beta)
                evaluations += 1
                continue
        accepted = False
        t = 1.0
        for _ in range(max_halvings + 1):
            trial = beta.copy()
            trial[fc] += t * step
            if value_fn is None:
                v, g, h = call(trial)
            else:
                v = float(value_fn(trial))
            evaluations += 1
            if np.isfinite(v) and v >= value:
                accepted = True
                break
            t *= 0.5
        if not accepted:
            break
        beta, value = trial, v
        steps += 1
        if value_fn is None:
            grad, hess = g, h
        elif steps >= max_steps:
            break
        else:
            value, grad, hess = call(beta)
            evaluations += 1
    return NewtonResult(beta, float(value), steps, converged, evaluations)
