"""The one interface every mixture model implements.

A model is defined by its complete-data log-likelihood ``log p(y_i, z_i = k | theta)``
(:meth:`MixtureModel.log_joint`).  Everything else has a generic default built from the
parameter declarations (:class:`ParamSpec`): the free parameterisation used for standard
errors, the names of the reported parameters, class permutation, and (in the engine) a
numerical M-step and numerical derivatives.  A family adds closed forms where it has them:
``suff_stats`` + ``m_step`` (an M-step over additive sufficient statistics, so rows can be
processed in chunks) and ``complete_score`` / ``complete_information`` (analytic
derivatives for Louis' method).

Conventions
-----------
* data : ``dict[str, ndarray]``; every array's first axis is the row (observation).
* params : ``dict[str, ndarray]``; every array's first axis is the latent class.
* free parameters : one vector on the natural scale; see :meth:`MixtureModel.to_free`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
from scipy.special import logsumexp

Data = dict[str, np.ndarray]
Params = dict[str, np.ndarray]

class ModelWarning(UserWarning):
    """A model's advice to the user (e.g. a component regularised against singularity).

    Models emit it with ``warnings.warn(sentence, ModelWarning)``; the EM driver collects
    the distinct sentences into the fit result.
    """


#: constraint kinds a parameter may declare
CONSTRAINTS = ("simplex", "real", "positive", "covariance", "probability")


@dataclass(frozen=True)
class ParamSpec:
    """Declares one parameter array of a model (without the leading class axis).

    constraint:
      * ``simplex``: the class weights, shape ``()``; free: the first K-1 weights.
      * ``real`` / ``positive``: every entry is free (natural scale).
      * ``covariance``: shape ``(D, D)`` symmetric positive definite; free: the entries
        with ``i <= j`` (vech, row-major upper triangle).
      * ``probability``: shape ``(J, C)``; row ``j`` is a distribution over its first
        ``sizes[j]`` entries (the rest are padding, fixed at 0); free: the first
        ``sizes[j] - 1`` entries of each row.
    labels: one sequence of text labels per axis of ``shape`` used in reported names;
      ``None`` means 1-based integers.
    """

    name: str
    shape: tuple[int, ...]
    constraint: str = "real"
    labels: tuple[Sequence[str], ...] | None = None
    sizes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.constraint not in CONSTRAINTS:
            raise ValueError(f"unknown constraint {self.constraint!r}; expected one of {CONSTRAINTS}")

    def axis_labels(self) -> list[list[str]]:
        if self.labels is not None:
            return [list(map(str, ax)) for ax in self.labels]
        return [[str(i + 1) for i in range(n)] for n in self.shape]


class MixtureModel(ABC):
    """Base class of a finite mixture model with K latent classes.

    Subclasses set ``name`` (the registry key used by ``--model``), implement
    :meth:`prepare_data`, :meth:`setup`, :meth:`param_specs` and :meth:`log_joint`, and
    may override the optional closed forms.
    """

    name: ClassVar[str] = ""
    #: True when suff_stats/m_step are implemented (enables chunked, memory-bounded EM)
    has_closed_form_m_step: ClassVar[bool] = False

    def __init__(self, n_components: int, **options: Any) -> None:
        if int(n_components) < 1:
            raise ValueError(f"n_components must be at least 1, got {n_components}")
        self.n_components = int(n_components)
        self.options = dict(options)
        self.meta: dict[str, Any] = {}

    # ----------------------------------------------------------------- data
    @classmethod
    def prepare_data(cls, frame: "Any", options: Mapping[str, Any]) -> tuple[Data, dict[str, Any]]:
        """Turn the selected columns (a pandas DataFrame) into this model's arrays.

        Returns ``(data, meta)``; ``meta`` is JSON-serialisable (column names, category
        codes, ...) and is passed to :meth:`setup`.  Raises ``ValueError`` with one
        sentence naming the column and the problem for unusable data.
        """
        raise NotImplementedError(f"model {cls.name!r} does not read data frames")

    def setup(self, meta: Mapping[str, Any]) -> None:
        """Fix dimensions and labels from the data's ``meta``."""
        self.meta = dict(meta)

    # ----------------------------------------------------------- the model
    @abstractmethod
    def param_specs(self) -> list[ParamSpec]:
        """The parameters, in the order used by the free parameter vector."""

    @abstractmethod
    def log_joint(self, data: Data, params: Params) -> np.ndarray:
        """``log p(y_i, z_i = k | params)``, array of shape (n_rows, n_components)."""

    def init_params(self, data: Data, rng: np.random.Generator) -> Params:
        """A random starting point: random soft responsibilities, then one M-step."""
        n = next(iter(data.values())).shape[0]
        resp = rng.dirichlet(np.ones(self.n_components), size=n)
        if self.has_closed_form_m_step:
            return self.m_step(self.suff_stats(data, resp))
        raise NotImplementedError(
            f"model {self.name!r} has no closed-form M-step; the engine supplies init_params")

    # ------------------------------------------- optional closed-form M-step
    def suff_stats(self, data: Data, resp: np.ndarray) -> dict[str, np.ndarray]:
        """Additive sufficient statistics of a chunk given responsibilities (n, K)."""
        raise NotImplementedError

    def m_step(self, stats: Mapping[str, np.ndarray]) -> Params:
        """Parameters maximising the expected complete-data log-likelihood."""
        raise NotImplementedError

    # ------------------------------------------- optional analytic derivatives
    def complete_score(self, data: Data, params: Params) -> np.ndarray | None:
        """d log p(y_i, z_i=k) / d theta_free, shape (n, K, P); None: use numerical."""
        return None

    def complete_information(self, data: Data, params: Params, resp: np.ndarray) -> np.ndarray | None:
        """sum_i sum_k resp_ik * (-d2 log p(y_i, z_i=k) / d theta d theta'), shape (P, P)."""
        return None

    # ------------------------------------------------------- simulation
    def sample(self, params: Params, data: Data, rng: np.random.Generator) -> Data:
        """Simulate a data set like ``data`` (same rows; covariates/missingness kept)."""
        raise NotImplementedError(f"model {self.name!r} cannot simulate data")

    # ---------------------------------------------------- label handling
    def canonical_order(self, params: Params) -> np.ndarray:
        """Permutation putting classes in this model's documented canonical order.

        Default: decreasing weight, ties broken by the original index.
        """
        w = np.asarray(params["weight"], dtype=float)
        return np.lexsort((np.arange(w.size), -w))

    @staticmethod
    def permute(params: Params, perm: Sequence[int]) -> Params:
        """Reorder classes: new class ``i`` is old class ``perm[i]`` (first axis)."""
        perm = np.asarray(perm, dtype=int)
        return {k: np.asarray(v)[perm].copy() for k, v in params.items()}

    def in_parameter_space(self, params: Params) -> bool:
        """True when every constraint holds (used to backtrack accelerated steps)."""
        for spec in self.param_specs():
            v = np.asarray(params[spec.name], dtype=float)
            if not np.all(np.isfinite(v)):
                return False
            if spec.constraint == "simplex":
                if np.any(v < 0) or abs(v.sum() - 1.0) > 1e-8:
                    return False
            elif spec.constraint == "positive":
                if np.any(v <= 0):
                    return False
            elif spec.constraint == "covariance":
                for c in v:
                    try:
                        np.linalg.cholesky(c)
                    except np.linalg.LinAlgError:
                        return False
            elif spec.constraint == "probability":
                if np.any(v < 0) or np.any(v > 1):
                    return False
        return True

    # -------------------------------------- free parameterisation (generic)
    def to_free(self, params: Params) -> np.ndarray:
        """Free parameter vector: spec by spec, class by class (see ParamSpec)."""
        out: list[np.ndarray] = []
        K = self.n_components
        for spec in self.param_specs():
            v = np.asarray(params[spec.name], dtype=float)
            if spec.constraint == "simplex":
                out.append(v[: K - 1])
                continue
            for k in range(K):
                out.append(_free_of_class(spec, v[k]))
        return np.concatenate(out) if out else np.zeros(0)

    def from_free(self, theta: np.ndarray) -> Params:
        """Inverse of :meth:`to_free` (fills derived entries: last weight, last category)."""
        theta = np.asarray(theta, dtype=float)
        K = self.n_components
        params: Params = {}
        pos = 0
        for spec in self.param_specs():
            if spec.constraint == "simplex":
                w = np.empty(K)
                w[: K - 1] = theta[pos : pos + K - 1]
                w[K - 1] = 1.0 - w[: K - 1].sum()
                pos += K - 1
                params[spec.name] = w
                continue
            arr = np.zeros((K,) + spec.shape)
            for k in range(K):
                n = _n_free_of_class(spec)
                arr[k] = _class_of_free(spec, theta[pos : pos + n])
                pos += n
            params[spec.name] = arr
        if pos != theta.size:
            raise ValueError(f"expected {pos} free parameters, got {theta.size}")
        return params

    def n_free_parameters(self) -> int:
        """Number of free parameters P (for AIC/BIC and the information matrix)."""
        K = self.n_components
        return sum((K - 1) if s.constraint == "simplex" else K * _n_free_of_class(s)
                   for s in self.param_specs())

    def free_names(self) -> list[str]:
        """Names of the free parameters, same order as :meth:`to_free`."""
        names: list[str] = []
        for name, spec, k, idx, free in self._reported_entries():
            if free:
                names.append(name)
        return names

    # ------------------------------------------------ reported parameters
    def reported_names(self) -> list[str]:
        """Every reported parameter (free and derived), e.g. ``weight[1]``, ``cov[1,1,2]``."""
        return [e[0] for e in self._reported_entries()]

    def reported_values(self, params: Params) -> np.ndarray:
        """Values in the order of :meth:`reported_names`."""
        return np.array([float(np.asarray(params[spec.name])[(k,) + idx])
                         for _, spec, k, idx, _ in self._reported_entries()])

    def reported_jacobian(self) -> np.ndarray:
        """d reported / d free (R x P); exact, since every derived entry is linear."""
        names = self.reported_names()
        free = self.free_names()
        col = {n: i for i, n in enumerate(free)}
        J = np.zeros((len(names), len(free)))
        K = self.n_components
        for r, (name, spec, k, idx, is_free) in enumerate(self._reported_entries()):
            if is_free:
                J[r, col[name]] = 1.0
            elif spec.constraint == "simplex":  # last weight = 1 - sum of the others
                for kk in range(K - 1):
                    J[r, col[_entry_name(spec, kk, ())]] = -1.0
            elif spec.constraint == "probability":  # last category of an item
                j = idx[0]
                for c in range(spec.sizes[j] - 1):
                    J[r, col[_entry_name(spec, k, (j, c))]] = -1.0
        return J

    def _reported_entries(self):
        """(name, spec, class, index within class, is_free) for every reported entry."""
        K = self.n_components
        for spec in self.param_specs():
            if spec.constraint == "simplex":
                for k in range(K):
                    yield _entry_name(spec, k, ()), spec, k, (), k < K - 1
                continue
            for k in range(K):
                if spec.constraint == "covariance":
                    D = spec.shape[0]
                    for i in range(D):
                        for j in range(i, D):
                            yield _entry_name(spec, k, (i, j)), spec, k, (i, j), True
                elif spec.constraint == "probability":
                    for j, size in enumerate(spec.sizes):
                        for c in range(size):
                            yield _entry_name(spec, k, (j, c)), spec, k, (j, c), c < size - 1
                else:
                    for idx in np.ndindex(*spec.shape):
                        yield _entry_name(spec, k, idx), spec, k, tuple(idx), True

    # ------------------------------------------------------ conveniences
    def e_step_stats(self, data: Data, params: Params) -> tuple[dict[str, np.ndarray], float]:
        """E-step of one chunk fused with its sufficient statistics: ``(stats, loglik)``.

        Override for speed; the default is ``suff_stats(data, e_step(...)[0])``.
        """
        resp, ll = self.e_step(data, params)
        return self.suff_stats(data, resp), ll

    def e_step(self, data: Data, params: Params) -> tuple[np.ndarray, float]:
        """Responsibilities (n, K) and the observed log-likelihood of these rows."""
        lj = self.log_joint(data, params)
        lse = logsumexp(lj, axis=1)
        return np.exp(lj - lse[:, None]), float(lse.sum())

    def loglik(self, data: Data, params: Params) -> float:
        """Observed-data log-likelihood sum_i log sum_k p(y_i, z_i = k)."""
        return float(logsumexp(self.log_joint(data, params), axis=1).sum())

    def loglik_rows(self, data: Data, params: Params) -> np.ndarray:
        return logsumexp(self.log_joint(data, params), axis=1)

    def describe(self) -> dict[str, Any]:
        """Options that change the numbers (for fingerprints and fit.json)."""
        return {"model": self.name, "n_components": self.n_components, **self.options}


# ---------------------------------------------------------------- helpers
def responsibilities(lj: np.ndarray) -> tuple[np.ndarray, float]:
    """(resp, loglik) from log-joint densities (n, K); faster than scipy's logsumexp.

    A row whose every class has probability zero gives loglik -inf (never NaN).
    """
    m = lj.max(axis=1, keepdims=True)
    m[~np.isfinite(m)] = 0.0
    e = np.exp(lj - m)
    s = e.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        ll = float((np.log(s) + m).sum())
    return e / s, ll


def _entry_name(spec: ParamSpec, k: int, idx: tuple[int, ...]) -> str:
    labels = spec.axis_labels()
    parts = [str(k + 1)] + [labels[a][i] for a, i in enumerate(idx)]
    return f"{spec.name}[{','.join(parts)}]"


def _n_free_of_class(spec: ParamSpec) -> int:
    if spec.constraint == "covariance":
        D = spec.shape[0]
        return D * (D + 1) // 2
    if spec.constraint == "probability":
        return int(sum(s - 1 for s in spec.sizes))
    return int(np.prod(spec.shape, dtype=int))


def _free_of_class(spec: ParamSpec, v: np.ndarray) -> np.ndarray:
    if spec.constraint == "covariance":
        return v[np.triu_indices(spec.shape[0])]
    if spec.constraint == "probability":
        return np.concatenate([v[j, : s - 1] for j, s in enumerate(spec.sizes)]) \
            if spec.sizes else np.zeros(0)
    return np.ravel(v)


def _class_of_free(spec: ParamSpec, t: np.ndarray) -> np.ndarray:
    if spec.constraint == "covariance":
        D = spec.shape[0]
        c = np.zeros((D, D))
        iu = np.triu_indices(D)
        c[iu] = t
        c.T[iu] = t
        return c
    if spec.constraint == "probability":
        out = np.zeros(spec.shape)
        pos = 0
        for j, s in enumerate(spec.sizes):
            out[j, : s - 1] = t[pos : pos + s - 1]
            out[j, s - 1] = 1.0 - t[pos : pos + s - 1].sum()
            pos += s - 1
        return out
    return np.reshape(t, spec.shape)
