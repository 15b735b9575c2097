"""The one walk over a model's :class:`~src.models.base.ParamSpec` declarations.

:class:`FreeParameterisation` is built once from ``param_specs()`` and the number of classes
and gives two views of the parameters:

* the **natural-scale free vector** (standard errors, SQUAREM): spec by spec, class by class;
  K-1 weights, every real/positive entry, the vech (``i <= j``) of each covariance, the first
  ``C_j - 1`` probabilities of each row, every entry of a ``logit`` parameter's K-1
  non-reference classes.  The last weight and the last categories are derived (1 - the
  sum), the reference class's logit row is 0, so every reported entry is linear in the
  free ones.  A ``derived`` parameter (a summary the model computes) has no free entries.
* the **unconstrained vector** (the generic numerical M-step): every parameter except the
  weights, class by class; identity for real entries, log for positive ones, log-Cholesky
  for covariances, log-ratios to the last category for probability rows, identity for
  every class's logit row (re-referenced on the way back).

It also checks the constraints (:meth:`FreeParameterisation.violation`), so the model,
SQUAREM and the numerical M-step agree on one definition of the parameter space.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator, Mapping, Sequence

import numpy as np
from scipy.special import logsumexp

if TYPE_CHECKING:  # base.py imports this module; the specs are only read here
    from .base import Params, ParamSpec

__all__ = ["FreeParameterisation", "n_free_of_class", "columns_separate"]


@dataclass(frozen=True)
class _Block:
    """Where one spec sits in the free vector and which entries of a class are free."""

    spec: "ParamSpec"
    start: int
    stop: int
    index: tuple[np.ndarray, np.ndarray] | None  # (rows, cols) of a class's free entries


def _free_index(spec: ParamSpec) -> tuple[np.ndarray, np.ndarray] | None:
    """Row/column indices of one class's free entries (row-major); None: every entry."""
    if spec.constraint == "covariance":
        return np.triu_indices(spec.shape[0])
    if spec.constraint == "probability":
        rows = [j for j, size in enumerate(spec.sizes) for _ in range(size - 1)]
        cols = [c for size in spec.sizes for c in range(size - 1)]
        return np.array(rows, dtype=int), np.array(cols, dtype=int)
    return None


def columns_separate(rows_at: Callable[[np.ndarray], np.ndarray], owner: np.ndarray,
                     x: np.ndarray, steps: np.ndarray, *, skip: Sequence[int] = (),
                     finite: bool = False) -> bool:
    """Whether column k of ``rows_at(x)`` (an (n, K) ``log_joint``) depends on class k's
    entries only: moving all of class k's entries of ``x`` (``owner == k``, not in ``skip``)
    by ``steps`` leaves every other column bitwise unchanged, for every k (K + 1 calls).
    ``finite``: also False when a value at ``x``, or a moved class's own column, is not
    finite.  The test behind differencing every class's entry at once (the generic M-step,
    the numerical derivatives of Louis and the sandwich)."""
    with np.errstate(all="ignore"):
        base = rows_at(x)
        if finite and not np.all(np.isfinite(base)):
            return False
        n_classes = base.shape[1]
        for k in range(n_classes):
            moved_entries = [j for j in np.flatnonzero(owner == k) if j not in skip]
            if not moved_entries:
                continue
            e = np.zeros(x.size)
            e[moved_entries] = steps[moved_entries]
            moved = rows_at(x + e)
            others = np.arange(n_classes) != k
            if not np.array_equal(moved[:, others], base[:, others], equal_nan=True):
                return False
            if finite and not np.all(np.isfinite(moved[:, k])):
                return False
    return True


def n_free_of_class(spec: ParamSpec) -> int:
    """How many free entries one class has of ``spec``: every entry, the vech of a
    covariance, C_j - 1 per probability row, none of a ``derived`` parameter.  (A ``simplex``
    has one per class but K - 1 in all; a ``logit`` has none for its reference class.)"""
    if spec.constraint == "derived":
        return 0
    if spec.constraint == "covariance":
        return spec.shape[0] * (spec.shape[0] + 1) // 2
    if spec.constraint == "probability":
        return int(sum(s - 1 for s in spec.sizes))
    return int(np.prod(spec.shape, dtype=int))


class FreeParameterisation:
    """Natural-scale free vector and unconstrained vector of one model (see module doc)."""

    def __init__(self, specs: Sequence[ParamSpec], n_components: int) -> None:
        self.specs = list(specs)
        self.n_components = K = int(n_components)
        self._blocks: list[_Block] = []
        pos = 0
        for spec in self.specs:
            if spec.constraint == "logit" and not 0 <= spec.reference < K:
                raise ValueError(f"{spec.name}: reference class {spec.reference} out of range "
                                 f"for {K} classes")
            n = (K - 1) if spec.constraint == "simplex" else K * n_free_of_class(spec)
            if spec.constraint == "logit":
                n = (K - 1) * n_free_of_class(spec)
            self._blocks.append(_Block(spec, pos, pos + n, _free_index(spec)))
            pos += n
        self.size = pos
        self.unconstrained_specs = [s for s in self.specs
                                    if s.constraint not in ("simplex", "derived")]
        self.unconstrained_size = K * sum(n_free_of_class(s) for s in self.unconstrained_specs)

    def free_classes(self) -> np.ndarray:
        """The class each entry of the free vector (:meth:`to_free`) belongs to, -1 for the
        K - 1 class weights: the last weight is one minus their sum, so they are every
        class's.  Lets numerical derivatives move one entry of every class at once when
        each class's term depends on its own parameters only."""
        K = self.n_components
        parts = []
        for b in self._blocks:
            spec = b.spec
            if spec.constraint == "simplex":
                parts.append(np.full(K - 1, -1))
            elif spec.constraint == "logit":
                classes = np.delete(np.arange(K), spec.reference)
                parts.append(np.repeat(classes, n_free_of_class(spec)))
            elif spec.constraint != "derived":
                parts.append(np.repeat(np.arange(K), n_free_of_class(spec)))
        return np.concatenate(parts).astype(int) if parts else np.zeros(0, dtype=int)

    def unconstrained_classes(self) -> np.ndarray:
        """The class each entry of the unconstrained vector (:meth:`to_unconstrained`)
        belongs to: spec by spec, class by class, as that vector is laid out."""
        K = self.n_components
        parts = [np.repeat(np.arange(K), n_free_of_class(s)) for s in self.unconstrained_specs]
        return np.concatenate(parts).astype(int) if parts else np.zeros(0, dtype=int)

    def same_as(self, specs: Sequence[ParamSpec], n_components: int) -> bool:
        """True when this parameterisation was built from these declarations."""
        return n_components == self.n_components and list(specs) == self.specs

    def slice(self, name: str) -> slice:
        """Where parameter ``name`` sits in the free vector."""
        for b in self._blocks:
            if b.spec.name == name:
                return slice(b.start, b.stop)
        raise KeyError(f"no parameter named {name!r}")

    # ------------------------------------------------------ natural scale
    def to_free(self, params: Mapping[str, np.ndarray]) -> np.ndarray:
        """The free vector: spec by spec, class by class."""
        K = self.n_components
        parts = []
        for b in self._blocks:
            spec = b.spec
            v = np.asarray(params[spec.name], dtype=float)
            if spec.constraint == "simplex":
                parts.append(v[: K - 1])
            elif spec.constraint == "derived":
                continue
            elif spec.constraint == "logit":
                ref = spec.reference
                parts.append(np.delete(v.reshape(K, -1) - v.reshape(K, -1)[ref], ref, axis=0).ravel())
            elif b.index is not None:
                parts.append(v[:, b.index[0], b.index[1]].ravel())
            else:
                parts.append(v.reshape(K, -1).ravel())
        return np.concatenate(parts) if parts else np.zeros(0)

    def from_free(self, theta: np.ndarray) -> Params:
        """Inverse of :meth:`to_free`; fills the derived entries (last weight, last category)."""
        theta = np.asarray(theta, dtype=float)
        if theta.shape != (self.size,):
            raise ValueError(f"expected {self.size} free parameters, got shape {theta.shape}")
        K = self.n_components
        out: Params = {}
        for b in self._blocks:
            spec = b.spec
            if spec.constraint == "simplex":
                w = np.empty(K)
                w[: K - 1] = theta[b.start : b.stop]
                w[K - 1] = 1.0 - w[: K - 1].sum()
                out[spec.name] = w
                continue
            if spec.constraint == "derived":
                out[spec.name] = np.full((K,) + tuple(spec.shape), 1.0 / K)
                continue
            if spec.constraint == "logit":
                arr = np.zeros((K, int(np.prod(spec.shape, dtype=int))))
                arr[np.arange(K) != spec.reference] = theta[b.start : b.stop].reshape(K - 1, -1)
                out[spec.name] = arr.reshape((K,) + tuple(spec.shape))
                continue
            block = theta[b.start : b.stop].reshape(K, -1)
            if spec.constraint == "covariance":
                a, c = b.index
                arr = np.zeros((K,) + tuple(spec.shape))
                arr[:, a, c] = block
                arr[:, c, a] = block
            elif spec.constraint == "probability":
                a, c = b.index
                arr = np.zeros((K,) + tuple(spec.shape))
                arr[:, a, c] = block
                for j, size in enumerate(spec.sizes):
                    arr[:, j, size - 1] = 1.0 - arr[:, j, : size - 1].sum(axis=1)
            else:
                arr = block.reshape((K,) + tuple(spec.shape)).copy()
            out[spec.name] = arr
        return out

    def entries(self) -> Iterator[tuple[ParamSpec, int, tuple[int, ...], bool]]:
        """(spec, class, index within the class, is_free) of every reported entry, in order.

        The free entries come in :meth:`to_free` order within each spec; derived entries
        (the last weight, each row's last category) sit where they belong.
        """
        K = self.n_components
        for spec in self.specs:
            if spec.constraint == "simplex":
                for k in range(K):
                    yield spec, k, (), k < K - 1
                continue
            if spec.constraint == "derived":
                continue
            for k in range(K):
                if spec.constraint == "logit":
                    for idx in np.ndindex(*spec.shape):
                        yield spec, k, tuple(idx), k != spec.reference
                    continue
                if spec.constraint == "covariance":
                    D = spec.shape[0]
                    for i in range(D):
                        for j in range(i, D):
                            yield spec, k, (i, j), True
                elif spec.constraint == "probability":
                    for j, size in enumerate(spec.sizes):
                        for c in range(size):
                            yield spec, k, (j, c), c < size - 1
                else:
                    for idx in np.ndindex(*spec.shape):
                        yield spec, k, tuple(idx), True

    # ------------------------------------------------------ constraints
    def violation(self, params: Mapping[str, np.ndarray]) -> str | None:
        """None when every constraint holds, else a short description of the first failure."""
        for spec in self.specs:
            v = np.asarray(params[spec.name], dtype=float)
            if not np.all(np.isfinite(v)):
                return f"{spec.name} has a value that is not finite"
            if spec.constraint == "simplex":
                if np.any(v < 0) or abs(v.sum() - 1.0) > 1e-8:
                    return f"{spec.name} must be non-negative and sum to 1 (sum {v.sum():.17g})"
            elif spec.constraint == "positive":
                if np.any(v <= 0):
                    return f"{spec.name} must be positive (smallest {v.min():.6g})"
            elif spec.constraint == "covariance":
                for k, c in enumerate(v):
                    try:
                        np.linalg.cholesky(c)
                    except np.linalg.LinAlgError:
                        return f"{spec.name} of class {k + 1} is not positive definite"
            elif spec.constraint == "probability":
                if np.any(v < 0) or np.any(v > 1):
                    return f"{spec.name} must lie between 0 and 1"
            elif spec.constraint == "logit":
                if np.any(v[spec.reference] != 0):
                    return (f"{spec.name} of the reference class {spec.reference + 1} must be 0 "
                            "(re-reference the coefficients)")
        return None

    # ------------------------------------------------------ unconstrained scale
    def to_unconstrained(self, params: Mapping[str, np.ndarray]) -> np.ndarray:
        """Every non-weight parameter on the unconstrained scale, spec by spec, class by class."""
        parts = [_to_u(s, np.asarray(params[s.name], dtype=float)[k])
                 for s in self.unconstrained_specs for k in range(self.n_components)]
        return np.concatenate(parts) if parts else np.zeros(0)

    def from_unconstrained(self, u: np.ndarray) -> Params:
        """Inverse of :meth:`to_unconstrained` (every parameter but the weights)."""
        out: Params = {}
        pos = 0
        for s in self.unconstrained_specs:
            arr = np.zeros((self.n_components,) + tuple(s.shape))
            n = n_free_of_class(s)
            for k in range(self.n_components):
                arr[k] = _from_u(s, u[pos : pos + n])
                pos += n
            if s.constraint == "logit":   # every class's row, the reference's taken back to 0
                arr = arr - arr[s.reference]
            out[s.name] = arr
        for s in self.specs:
            if s.constraint == "derived":
                out[s.name] = np.full((self.n_components,) + tuple(s.shape), 1.0 / self.n_components)
        return out


def _to_u(spec: ParamSpec, v: np.ndarray) -> np.ndarray:
    """One class's value on the unconstrained scale (flat)."""
    if spec.constraint == "positive":
        return np.log(np.ravel(v))
    if spec.constraint == "covariance":
        L = np.linalg.cholesky(v)
        L[np.diag_indices_from(L)] = np.log(np.diag(L))
        return L[np.tril_indices(spec.shape[0])]
    if spec.constraint == "probability":
        out = []
        for j, s in enumerate(spec.sizes):
            p = np.clip(v[j, :s], 1e-300, None)
            out.append(np.log(p[: s - 1]) - np.log(p[s - 1]))
        return np.concatenate(out) if out else np.zeros(0)
    return np.ravel(v).astype(float)


def _from_u(spec: ParamSpec, u: np.ndarray) -> np.ndarray:
    """One class's value from its unconstrained entries."""
    if spec.constraint == "positive":
        return np.exp(u).reshape(spec.shape)
    if spec.constraint == "covariance":
        D = spec.shape[0]
        L = np.zeros((D, D))
        L[np.tril_indices(D)] = u
        L[np.diag_indices(D)] = np.exp(np.diag(L))
        return L @ L.T
    if spec.constraint == "probability":
        out = np.zeros(spec.shape)
        pos = 0
        for j, s in enumerate(spec.sizes):
            logits = np.append(u[pos : pos + s - 1], 0.0)
            out[j, :s] = np.exp(logits - logsumexp(logits))
            pos += s - 1
        return out
    return np.asarray(u, dtype=float).reshape(spec.shape)
