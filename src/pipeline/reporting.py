"""From the computations' own signals to the console's events (:mod:`src.utils.console`).

The EM start search (:func:`src.estimation.em.fit_em`) reports iterations of the final
starts worked on in this process only; how many candidates and final starts are finished --
also those run on workers -- shows in the states it checkpoints after each of them.
:func:`fit_progress` wraps the fit's Checkpointer so that each such state also becomes a
:meth:`~src.utils.console.Reporter.unit` event (with the units restored from the resumed
state, so they do not count toward the rate), and gives the ``on_iteration`` callback.
Nothing the fit computes or saves changes: states pass through untouched.
"""

from __future__ import annotations

import math
from typing import Any, Callable

__all__ = ["fit_progress", "FitProgress"]


def fit_progress(checkpoint: Any, reporter: Any, k: int | None = None
                 ) -> tuple[Any, Callable[[int, int, float], None] | None]:
    """``(checkpoint, on_iteration)`` for :func:`~src.estimation.em.fit_em`: with a
    reporter, ``checkpoint`` wrapped in a :class:`FitProgress` and its iteration callback
    (``k``: shown when several K are fitted); without one, unchanged and None."""
    if reporter is None:
        return checkpoint, None
    if k is not None:
        reporter.working_on(k)
    view = FitProgress(checkpoint, reporter, k)
    return view, view.on_iteration


class FitProgress:
    """A Checkpointer passing everything to ``inner`` that tells ``reporter`` how many
    candidates and final starts of one fit are finished, and the best log-likelihood."""

    def __init__(self, inner: Any, reporter: Any, k: int | None = None) -> None:
        self.inner, self.reporter, self.k = inner, reporter, k
        self._restored = {"candidates": 0, "finished": 0}
        self._counts = {"candidates": -1, "finished": -1}
        self._seen: dict[str, set[str]] = {"candidates": set(), "finished": set()}
        self._best: float | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def resume_state(self) -> Any:
        state = self.inner.resume_state()
        if _is_fit_state(state):
            for part in self._restored:
                self._restored[part] = len(state.get(part) or {})
        return state

    def checkpoint(self, state: dict[str, Any], *, force: bool = False) -> bool:
        if _is_fit_state(state):
            self._observe(state)
        return self.inner.checkpoint(state, force=force)

    def on_iteration(self, start: int, iteration: int, loglik: float) -> None:
        self.reporter.iteration(start, iteration, loglik, k=self.k)

    def _observe(self, state: dict[str, Any]) -> None:
        config = state.get("config") or {}
        n_cand = int(config.get("n_candidates", 0) or 0)
        n_final = int(config.get("n_starts", 0) or 0) + len(config.get("extra_starts") or [])
        cands, finished = state.get("candidates") or {}, state.get("finished") or {}
        if n_cand and len(cands) != self._counts["candidates"]:
            self._counts["candidates"] = len(cands)
            self._update_best("candidates", cands, "best_ll")
            self.reporter.unit("candidates", len(cands), n_cand, kind="candidate", k=self.k,
                               best_loglik=self._best, restored=self._restored["candidates"])
        stage_two = not n_cand or len(cands) >= n_cand
        if stage_two and n_final and len(finished) != self._counts["finished"]:
            self._counts["finished"] = len(finished)
            self._update_best("finished", finished, "loglik")
            self.reporter.unit("starts", len(finished), n_final, kind="start", k=self.k,
                               best_loglik=self._best, restored=self._restored["finished"])

    def _update_best(self, part: str, units: dict[str, Any], key: str) -> None:
        seen = self._seen[part]
        for name, unit in units.items():
            if name in seen:
                continue
            seen.add(name)
            try:
                ll = float(unit.get(key))
            except (AttributeError, TypeError, ValueError):
                continue
            if math.isfinite(ll) and (self._best is None or ll > self._best):
                self._best = ll


def _is_fit_state(state: Any) -> bool:
    return isinstance(state, dict) and state.get("kind") == "em_fit"
