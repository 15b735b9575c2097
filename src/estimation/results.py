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

__all__ = ["FitResult"]


@dataclass
class FitResult:
    """Result of :func:`src.estimation.em.fit_em`.

    params : the best start's estimate, classes in the model's canonical order.
    loglik : observed-data log-likelihood at ``params``.
    n_iter : EM-map evaluations used by the best start (a SQUAREM cycle counts each one).
    start_* : one entry per random start, in start order.
    loglik_trace : accepted log-likelihoods of the best start, one per accepted evaluation.
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
    n_obs: int
    n_params: int
    seconds: float
    warnings: list[str] = field(default_factory=list)

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
            "n_obs": int(self.n_obs),
            "n_params": int(self.n_params),
            "seconds": float(self.seconds),
            "warnings": [str(w) for w in self.warnings],
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
            n_obs=int(d["n_obs"]),
            n_params=int(d["n_params"]),
            seconds=float(d["seconds"]),
            warnings=[str(w) for w in d.get("warnings", [])],
        )
