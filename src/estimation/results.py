"""The outcome of an EM fit: the best start's estimate plus a record of every start.

A :class:`FitResult` is what ``model_estimation`` hands to the later phases and what the
progress tracker stores (through :meth:`FitResult.to_dict`, JSON scalars/lists plus numpy
arrays), so it holds plain data only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

__all__ = ["FitResult", "as_count"]


def as_count(n: Any) -> int | float:
    """A number of rows as JSON shows it: an int when whole (every unweighted count, and
    sums of integer weights), else a float (a sum of non-integer weights)."""
    value = float(n)
    return int(value) if value.is_integer() else value


@dataclass
class FitResult:
    """Result of :func:`src.estimation.em.fit_em`.

    params : the best start's estimate, classes in the model's canonical order.
    loglik : observed-data log-likelihood at ``params``.
    n_iter : EM-map evaluations used by the best start (a SQUAREM cycle counts each one,
      and so do its candidate-stage evaluations).
    best_start : 0-based index of the chosen start in the ``start_*`` lists.
    start_* : one entry per start run to convergence (the final stage of
      :mod:`src.estimation.starts`), in start order: the best candidate first, then the
      next ones, then the extra starts; under ``n_candidates = 0`` start ``s`` is random
      start ``s``.
    start_ids : each start's candidate number, 0-based (shown from 1): drawn candidates
      ``0..n_candidates-1``, extra starts after them (``n_candidates = 0``: the random
      start's number, extra starts after the ``n_starts`` random ones).
    start_kinds : each start's kind: ``hierarchical``, ``kmeans++``, ``random``,
      ``partition`` (see :data:`src.estimation.starts.KINDS`), ``extra`` (given by the
      caller) or ``given`` (``init_params``).
    start_flags : each start's degeneracy kinds (sorted, distinct; empty: a proper
      maximum), from :meth:`MixtureModel.degeneracies`: ``singular_covariance``,
      ``few_rows``, ``sigma_floor``.
    loglik_trace : accepted log-likelihoods of the best start, one per accepted evaluation.
    n_obs : the n of the criteria: the number of rows, or with row weights their sum (an
      int when whole, see :func:`as_count`).
    flags : ``{kind: number of starts flagged with it}`` (kinds with a count only).
    replication : the replication summary, stable keys:

      * ``best_loglik``: the chosen start's log-likelihood (= ``loglik``);
      * ``n_reached``: starts of the pool within ``tol`` of it (the chosen one included);
      * ``n_pool``: starts compared: the unflagged ones with a finite log-likelihood, or
        every finite one when all are flagged (``pool`` says which: ``unflagged`` / ``all``);
      * ``tol``: ``max(1e-3, 100 * em_tol * |best_loglik|)``: EM stops when one iteration
        changes the log-likelihood by less than ``em_tol * |loglik|``, and at a linear rate
        as slow as 0.99 per iteration the distance left to the maximum is up to 100 such
        steps; 1e-3 is Mplus's printed precision;
      * ``maxima``: ``[[loglik, count], ...]``, the distinct maxima of the pool, best
        first: sorted log-likelihoods grouped while within ``tol`` of their group's best;
      * ``replicated``: ``n_reached >= 2`` (a single start is never called replicated).
    search : the settings that produced the starts: ``n_candidates`` (0: random starts
      only), ``candidate_iter``, ``n_starts``, ``n_extra``.
    """

    params: dict[str, np.ndarray]
    loglik: float
    n_iter: int
    converged: bool
    best_start: int
    start_logliks: list[float]
    start_n_iter: list[int]
    start_converged: list[bool]
    loglik_trace: list[float]
    n_obs: int | float
    n_params: int
    seconds: float
    warnings: list[str] = field(default_factory=list)
    start_ids: list[int] = field(default_factory=list)
    start_kinds: list[str] = field(default_factory=list)
    start_flags: list[list[str]] = field(default_factory=list)
    flags: dict[str, int] = field(default_factory=dict)
    replication: dict[str, Any] = field(default_factory=dict)
    search: dict[str, Any] = field(default_factory=dict)

    @property
    def best_replicated(self) -> bool:
        """True when at least two starts reached the chosen maximum (within its tolerance)."""
        return bool(self.replication.get("replicated", False))

    @property
    def aic(self) -> float:
        """Akaike information criterion, -2 loglik + 2 p."""
        return -2.0 * self.loglik + 2.0 * self.n_params

    @property
    def bic(self) -> float:
        """Bayesian information criterion, -2 loglik + p ln n."""
        return -2.0 * self.loglik + self.n_params * math.log(self.n_obs)

    def to_dict(self) -> dict[str, Any]:
        """JSON scalars/lists plus numpy arrays (``params``), as the tracker stores them."""
        return {
            "params": {k: np.asarray(v) for k, v in self.params.items()},
            "loglik": float(self.loglik),
            "n_iter": int(self.n_iter),
            "converged": bool(self.converged),
            "best_start": int(self.best_start),
            "start_logliks": [float(x) for x in self.start_logliks],
            "start_n_iter": [int(x) for x in self.start_n_iter],
            "start_converged": [bool(x) for x in self.start_converged],
            "loglik_trace": [float(x) for x in self.loglik_trace],
            "n_obs": as_count(self.n_obs),
            "n_params": int(self.n_params),
            "seconds": float(self.seconds),
            "warnings": [str(w) for w in self.warnings],
            "start_ids": [int(x) for x in self.start_ids],
            "start_kinds": [str(x) for x in self.start_kinds],
            "start_flags": [[str(k) for k in f] for f in self.start_flags],
            "flags": {str(k): int(v) for k, v in self.flags.items()},
            "replication": _replication_json(self.replication),
            "search": {str(k): (int(v) if isinstance(v, (int, np.integer)) else v)
                       for k, v in self.search.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FitResult":
        """Inverse of :meth:`to_dict` (accepts lists where arrays were stored)."""
        return cls(
            params={k: np.asarray(v, dtype=float) for k, v in d["params"].items()},
            loglik=float(d["loglik"]),
            n_iter=int(d["n_iter"]),
            converged=bool(d["converged"]),
            best_start=int(d["best_start"]),
            start_logliks=[float(x) for x in d["start_logliks"]],
            start_n_iter=[int(x) for x in d["start_n_iter"]],
            start_converged=[bool(x) for x in d["start_converged"]],
            loglik_trace=[float(x) for x in d["loglik_trace"]],
            n_obs=as_count(d["n_obs"]),
            n_params=int(d["n_params"]),
            seconds=float(d["seconds"]),
            warnings=[str(w) for w in d.get("warnings", [])],
            start_ids=[int(x) for x in d.get("start_ids", [])],
            start_kinds=[str(x) for x in d.get("start_kinds", [])],
            start_flags=[[str(k) for k in f] for f in d.get("start_flags", [])],
            flags={str(k): int(v) for k, v in d.get("flags", {}).items()},
            replication=_replication_json(d.get("replication", {})),
            search=dict(d.get("search", {})),
        )


def _replication_json(rep: Mapping[str, Any]) -> dict[str, Any]:
    """The replication summary with JSON types (floats, ints, lists)."""
    out: dict[str, Any] = {}
    for key, value in rep.items():
        if key in ("best_loglik", "tol"):
            out[key] = float(value)
        elif key in ("n_reached", "n_pool"):
            out[key] = int(value)
        elif key == "replicated":
            out[key] = bool(value)
        elif key == "maxima":
            out[key] = [[float(ll), int(c)] for ll, c in value]
        else:
            out[key] = value
    return out
