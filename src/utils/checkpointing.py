"""The small interface through which long computations save and resume their state.

The engine and the inference code depend only on this protocol; the progress tracker
(:mod:`src.utils.estimation_progress`) implements it, and :class:`NullCheckpointer`
is the do-nothing version used when progress tracking is off.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["Checkpointer", "NullCheckpointer"]


class Checkpointer(Protocol):
    """What a phase sees of the tracker.

    ``state`` is a dict of JSON scalars, lists, dicts and numpy arrays.  The tracker
    keeps a reference to the last state until it is written, so pass objects that you
    will not mutate afterwards.
    """

    def resume_state(self) -> dict[str, Any] | None:
        """The last state checkpointed in the current phase, or None when starting fresh."""

    def checkpoint(self, state: dict[str, Any], *, force: bool = False) -> bool:
        """Record ``state`` after one unit of work; written when the save policy says so
        (or ``force``).  Returns True when the state was written to disk."""


class NullCheckpointer:
    """Checkpointer that remembers nothing (progress tracking off, tests, the API)."""

    def resume_state(self) -> dict[str, Any] | None:
        return None

    def checkpoint(self, state: dict[str, Any], *, force: bool = False) -> bool:
        return False
