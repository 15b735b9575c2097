"""When to write a checkpoint, kept apart from how (Orbax's SaveDecisionPolicy idea).

Phase boundaries always write; inside a phase, :class:`IntervalPolicy` allows a write when
``save_interval`` seconds have passed since the last one, so a killed run loses at most
max(save_interval, one unit of work).
"""

from __future__ import annotations

__all__ = ["IntervalPolicy"]


class IntervalPolicy:
    """Write at most every ``interval`` seconds (0 writes at every checkpoint)."""

    def __init__(self, interval: float) -> None:
        interval = float(interval)
        if not interval >= 0:
            raise ValueError(f"save_interval must be >= 0 seconds, got {interval}")
        self.interval = interval
        self._last: float | None = None

    def should_save(self, now: float) -> bool:
        return self._last is None or now - self._last >= self.interval

    def saved(self, now: float) -> None:
        self._last = now
