"""What the user sees while a run goes on: live progress on a terminal, plain lines otherwise.

On a terminal, a ``rich`` status line shows the phase, the EM start and iteration with its
log-likelihood (or the bootstrap replicate) and the elapsed time.  When the output is not
a terminal (a log file, CI), the same events become plain lines, at most one every few
seconds for iterations, so logs stay short.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from .messages import register, t

__all__ = ["Reporter"]

register({
    "console.phase": {"en": "Phase '{phase}' started", "zh": "阶段 '{phase}' 开始"},
    "console.iter": {"en": "{phase}: start {start}, iteration {it}, log-likelihood {ll:.6f} ({elapsed:.1f} s)",
                     "zh": "{phase}：第 {start} 次初始化，第 {it} 次迭代，对数似然 {ll:.6f}（{elapsed:.1f} 秒）"},
    "console.unit": {"en": "{phase}: {what} {done}/{total} ({elapsed:.1f} s)",
                     "zh": "{phase}：{what} {done}/{total}（{elapsed:.1f} 秒）"},
})


class Reporter:
    """Receives progress events from the phases and shows them."""

    def __init__(self, stream: TextIO | None = None, *, live: bool | None = None,
                 plain_every: float = 5.0) -> None:
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.plain_every = plain_every
        self.t0 = time.monotonic()
        self.phase = ""
        self._last_plain = 0.0
        self._status = None
        if self.live:
            from rich.console import Console
            self._console = Console(file=self.stream)

    # ------------------------------------------------------------ events
    def message(self, text: str) -> None:
        if self.live:
            self._console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.stream, flush=True)

    def phase_started(self, phase: str) -> None:
        self.phase = phase
        self.message(t("console.phase", phase=phase))

    def iteration(self, start: int, iteration: int, loglik: float) -> None:
        text = t("console.iter", phase=self.phase, start=start + 1, it=iteration, ll=loglik,
                 elapsed=time.monotonic() - self.t0)
        self._progress(text)

    def unit(self, what: str, done: int, total: int) -> None:
        text = t("console.unit", phase=self.phase, what=what, done=done, total=total,
                 elapsed=time.monotonic() - self.t0)
        self._progress(text, final=done == total)

    def close(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    # ----------------------------------------------------------- helpers
    def _progress(self, text: str, final: bool = False) -> None:
        if self.live:
            if self._status is None:
                self._status = self._console.status(text)
                self._status.start()
            else:
                self._status.update(text)
            return
        now = time.monotonic()
        if final or now - self._last_plain >= self.plain_every:
            self._last_plain = now
            print(text, file=self.stream, flush=True)
