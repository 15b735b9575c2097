"""What the user sees while a run goes on: a live display on a terminal, plain lines otherwise.

The phases send events to a :class:`Reporter`:

* :meth:`Reporter.phase_started` -- a phase begins; everything shown of the previous phase
  (its K, counter, iteration) is dropped at once, so the display never names a stale phase;
* :meth:`Reporter.unit` -- one unit of countable work finished (a candidate, a final start,
  a bootstrap or BLRT replicate): ``done`` of ``total``, optionally the K, the kind of unit
  and the best log-likelihood so far;
* :meth:`Reporter.iteration` -- one EM evaluation of a start worked on in this process;
* :meth:`Reporter.working_on` -- the fit of another K begins (with several K);
* :meth:`Reporter.phase_finished` -- the phase returned or raised: its display goes;
* :meth:`Reporter.message` -- a line that stays (notes, "Phase ... started");
* :meth:`Reporter.close` -- the run ended: the display is cleared.

The display (:meth:`Reporter.lines`) is the phase with the time spent in it, the K with
several K, ``done/total`` with a percentage, the best log-likelihood so far and the time left,
and the start being iterated with its log-likelihood and last change.  On a terminal a
``rich`` live display shows it (redrawn a few times a second, erased when the run ends);
otherwise the same content becomes one plain line, at most one every ``plain_every`` seconds
within a phase (the first event of a phase is shown at once), always starting with the phase.

The time left is ``(total - done) / rate``, the rate being the units finished *in this
process* over the time since the counter began: the phase's start, or the last message,
change of K or end of the previous counter, whichever is latest (a ``unit`` event with
``done == restored`` marks the beginning itself).  Units restored from a checkpoint do not
count: ``restored`` says how many there were; without it the first event is taken to finish
one unit, so ``done - 1`` were restored.  Nothing is shown until two units are finished here.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, TextIO

from .messages import register, t

__all__ = ["Reporter", "format_duration"]

register({
    "console.phase": {"en": "Phase '{phase}' started", "zh": "阶段 '{phase}' 开始"},
    "console.line": {"en": "{phase}: {parts}", "zh": "{phase}：{parts}"},
    "console.sep": {"en": "; ", "zh": "；"},
    "console.elapsed": {"en": "{time} in this phase", "zh": "本阶段已用 {time}"},
    "console.k": {"en": "K = {k}", "zh": "K = {k}"},
    "console.count": {"en": "{label} {done}/{total} ({pct}%)",
                      "zh": "{label} {done}/{total}（{pct}%）"},
    "console.best": {"en": "best log-likelihood {ll:.6f}", "zh": "最佳对数似然 {ll:.6f}"},
    "console.eta": {"en": "about {time} left", "zh": "预计还需 {time}"},
    "console.iter": {"en": "start {start}, iteration {it}, log-likelihood {ll:.6f}",
                     "zh": "第 {start} 个起点，第 {it} 次迭代，对数似然 {ll:.6f}"},
    "console.change": {"en": "change {d:+.3g}", "zh": "变化 {d:+.3g}"},
    "console.kind.candidate": {"en": "candidates", "zh": "候选起点"},
    "console.kind.start": {"en": "starts", "zh": "起点"},
    "console.kind.bootstrap": {"en": "bootstrap replicates", "zh": "自助法重复"},
    "console.kind.blrt": {"en": "BLRT {what} replicates", "zh": "BLRT {what} 自助法重复"},
    "console.kind.replicate": {"en": "{what} replicates", "zh": "{what} 重复"},
    "console.under_second": {"en": "< 1 s", "zh": "不到 1 秒"},
    "console.seconds": {"en": "{s} s", "zh": "{s} 秒"},
    "console.minutes": {"en": "{m} min {s:02d} s", "zh": "{m} 分 {s:02d} 秒"},
    "console.hours": {"en": "{h} h {m:02d} min", "zh": "{h} 小时 {m:02d} 分"},
})

#: the kinds of unit :meth:`Reporter.unit` names in the user's language (others: ``what``)
KINDS = ("candidate", "start", "bootstrap", "blrt", "replicate")


def format_duration(seconds: float) -> str:
    """``seconds`` rounded to whole seconds: ``< 1 s``, ``42 s``, ``3 min 05 s``, ``2 h 07 min``."""
    s = max(0, int(round(seconds)))
    if s < 1:
        return t("console.under_second")
    if s < 60:
        return t("console.seconds", s=s)
    if s < 3600:
        return t("console.minutes", m=s // 60, s=s % 60)
    return t("console.hours", h=s // 3600, m=(s % 3600) // 60)


@dataclass
class _Counter:
    """One kind of countable work in progress (its key is ``(kind, what, k)``)."""

    key: tuple[Any, ...]
    label: str
    done: int
    total: int
    baseline: int      # units already done when this process began counting
    began: float       # clock time the counting began


@dataclass
class _Iteration:
    start: int         # 0-based place among the final starts
    iteration: int
    loglik: float
    change: float | None


class Reporter:
    """Receives progress events from the phases and shows them (module docstring).

    ``stream``: where lines go (default stdout).  ``live``: a rich live display (default:
    when ``stream`` is a terminal).  ``plain_every``: seconds between plain lines within a
    phase.  ``clock``: seconds, monotonic (tests pass their own).  ``console``: the rich
    Console of the live display (default: one writing to ``stream``); given, it also sets
    ``stream`` and, unless ``live`` says otherwise, ``live`` (whether it is a terminal).
    ``refresh_per_second``: redraws of the live display (0: only on phase changes and
    :meth:`refresh`).
    """

    def __init__(self, stream: TextIO | None = None, *, live: bool | None = None,
                 plain_every: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 console: Any = None, refresh_per_second: float = 4.0) -> None:
        if console is not None:
            stream = console.file
        self.stream = stream or sys.stdout
        if live is None:
            live = console.is_terminal if console is not None else _isatty(self.stream)
        self.live = bool(live)
        self.plain_every = float(plain_every)
        self.clock = clock
        self.refresh_per_second = float(refresh_per_second)
        self._console = console
        if self.live and console is None:
            from rich.console import Console
            self._console = Console(file=self.stream)
        self._live: Any = None
        self._view = _View(self)
        self._lock = threading.RLock()
        self.t0 = clock()
        self._clear("")

    # ------------------------------------------------------------ events
    def message(self, text: str) -> None:
        """A line that stays (above the live display on a terminal)."""
        with self._lock:
            self._boundary = self.clock()
        if self.live:
            self._console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            print(text, file=self.stream, flush=True)

    def phase_started(self, phase: str) -> None:
        """``phase`` begins: what was shown of the previous one is dropped, then the line
        "Phase '...' started"."""
        with self._lock:
            self._clear(phase)
        self.message(t("console.phase", phase=phase))
        if self.live:
            self._ensure_live()
            self.refresh()

    def phase_finished(self, phase: str) -> None:
        """``phase`` ended (returned or raised): nothing of it is shown any longer."""
        with self._lock:
            if self.phase == phase:
                self._clear("")
        self.refresh()

    def working_on(self, k: int) -> None:
        """Work on ``k`` classes begins (with several K): what was shown of another K goes."""
        with self._lock:
            self._set_k(k)

    def iteration(self, start: int, iteration: int, loglik: float, *, k: int | None = None
                  ) -> None:
        """Evaluation ``iteration`` of start ``start`` (0-based place among the final starts)
        reached ``loglik``; ``k``: the number of classes, given when several are fitted."""
        with self._lock:
            self._set_k(k)
            loglik = float(loglik)
            prev = self._previous.get(start)
            change = loglik - prev if prev is not None and math.isfinite(prev) else None
            self._previous[start] = loglik
            self._iter = _Iteration(int(start), int(iteration), loglik, change)
            self._raise_best(loglik)
        self._show()

    def unit(self, what: str, done: int, total: int, *, kind: str | None = None,
             k: int | None = None, best_loglik: float | None = None,
             restored: int | None = None) -> None:
        """``done`` of ``total`` units of ``what`` are finished.

        ``kind`` (one of :data:`KINDS`) names the units in the user's language (``blrt``
        and ``replicate`` put ``what`` in the name); without it ``what`` is the name.
        ``k``: the number of classes, given when several are fitted.  ``best_loglik``: the
        best log-likelihood so far (the display keeps the highest seen for this K).
        ``restored``: units restored from a checkpoint (module docstring)."""
        with self._lock:
            self._set_k(k)
            now = self.clock()
            key = (kind, what, self._k)
            c = self._counter
            if c is None or c.key != key:
                base = int(restored) if restored is not None else max(int(done) - 1, 0)
                began = now if int(done) <= base else self._boundary
                c = self._counter = _Counter(key, _label(kind, what), int(done), int(total),
                                             min(base, int(done)), began)
            c.done, c.total = int(done), int(total)
            if best_loglik is not None:
                self._raise_best(float(best_loglik))
            if c.done >= c.total:
                self._boundary = now  # the next counter's time starts here
        self._show()

    def close(self) -> None:
        """The run ended (or failed): the live display is erased and the state dropped."""
        with self._lock:
            self._clear("")
        live, self._live = self._live, None
        if live is not None:
            live.stop()

    # ------------------------------------------------------------ views
    def snapshot(self) -> dict[str, Any]:
        """What the display shows, as numbers: phase, elapsed (s), k, label, done, total,
        percent (floored), eta (s, None until two units are finished in this process),
        best_loglik, start (1-based), iteration, loglik, change; None where nothing."""
        with self._lock:
            now = self.clock()
            out: dict[str, Any] = {"phase": self.phase, "elapsed": now - self._phase_t0,
                                   "k": self._k, "best_loglik": self._best}
            c = self._counter
            out.update(label=None, done=None, total=None, percent=None, eta=None)
            if c is not None:
                out.update(label=c.label, done=c.done, total=c.total,
                           percent=_percent(c.done, c.total), eta=_eta(c, now))
            it = self._iter
            out.update(start=None, iteration=None, loglik=None, change=None)
            if it is not None:
                out.update(start=it.start + 1, iteration=it.iteration, loglik=it.loglik,
                           change=it.change)
        return out

    def lines(self) -> list[str]:
        """The display as lines of text: the phase (with K and time), the counter, the
        iteration; just what applies."""
        s = self.snapshot()
        if not s["phase"] and s["done"] is None and s["start"] is None:
            return []
        sep = t("console.sep")
        head = [t("console.elapsed", time=format_duration(s["elapsed"]))]
        if s["k"] is not None:
            head.insert(0, t("console.k", k=s["k"]))
        out = [t("console.line", phase=s["phase"] or "-", parts=sep.join(head))]
        count = []
        if s["done"] is not None:
            count.append(t("console.count", label=s["label"], done=s["done"], total=s["total"],
                           pct=s["percent"]))
        if s["eta"] is not None:
            count.append(t("console.eta", time=format_duration(s["eta"])))
        if s["best_loglik"] is not None:
            count.append(t("console.best", ll=s["best_loglik"]))
        if count:
            out.append(sep.join(count))
        if s["start"] is not None:
            text = t("console.iter", start=s["start"], it=s["iteration"], ll=s["loglik"])
            if s["change"] is not None:
                text += sep + t("console.change", d=s["change"])
            out.append(text)
        return out

    def plain_line(self) -> str:
        """The display as the one line written off a terminal (starts with the phase)."""
        lines = self.lines()
        if not lines:
            return ""
        sep = t("console.sep")
        head, rest = lines[0], lines[1:]
        return sep.join([head, *rest]) if rest else head

    def refresh(self) -> None:
        """Redraw the live display now (nothing off a terminal)."""
        live = self._live
        if live is not None:
            live.refresh()

    # ----------------------------------------------------------- helpers
    def _clear(self, phase: str) -> None:
        now = self.clock()
        self.phase = phase
        self._phase_t0 = now
        self._boundary = now
        self._k: int | None = None
        self._reset_k_state()
        self._last_plain: float | None = None

    def _reset_k_state(self) -> None:
        self._counter: _Counter | None = None
        self._iter: _Iteration | None = None
        self._previous: dict[int, float] = {}
        self._best: float | None = None

    def _set_k(self, k: int | None) -> None:
        if k is not None and k != self._k:
            self._k = int(k)
            self._reset_k_state()
            self._boundary = self.clock()

    def _raise_best(self, loglik: float) -> None:
        if math.isfinite(loglik) and (self._best is None or loglik > self._best):
            self._best = loglik

    def _show(self) -> None:
        if self.live:
            self._ensure_live()
            return
        now = self.clock()
        with self._lock:
            if self._last_plain is not None and now - self._last_plain < self.plain_every:
                return
            self._last_plain = now
        print(self.plain_line(), file=self.stream, flush=True)

    def _ensure_live(self) -> None:
        if self._live is not None:
            return
        from rich.live import Live
        auto = self.refresh_per_second > 0
        self._live = Live(console=self._console, transient=True, auto_refresh=auto,
                          refresh_per_second=self.refresh_per_second if auto else 4,
                          get_renderable=lambda: self._view)
        self._live.start()

    def _renderable(self) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        lines = self.lines()
        s = self.snapshot()
        rows: list[Any] = []
        for i, line in enumerate(lines):
            text = Text(line, no_wrap=True, overflow="ellipsis",
                        style="bold" if i == 0 else "")
            if i == 1 and s["done"] is not None:
                grid = Table.grid(padding=(0, 1))
                grid.add_column(width=24)
                grid.add_column(no_wrap=True, overflow="ellipsis")
                grid.add_row(ProgressBar(total=max(s["total"], 1), completed=s["done"], width=24),
                             text)
                rows.append(grid)
            else:
                rows.append(text)
        return Group(*rows)


class _View:
    """The live display's renderable: built from the reporter's state each time it is
    drawn, also when rich redraws it below a printed message (never an old picture)."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter

    def __rich_console__(self, console: Any, options: Any) -> Any:
        yield self.reporter._renderable()


def _label(kind: str | None, what: str) -> str:
    if kind in KINDS:
        return t(f"console.kind.{kind}", what=what)
    return what


def _percent(done: int, total: int) -> int:
    """Percentage finished, floored (100 only when everything is done)."""
    if total <= 0:
        return 100
    return int(100 * min(done, total) // total)


def _eta(c: _Counter, now: float) -> float | None:
    """Seconds left at the rate of the units finished in this process (None: fewer than 2)."""
    n = c.done - c.baseline
    if n < 2 or c.done >= c.total or now <= c.began:
        return None
    return (c.total - c.done) * (now - c.began) / n


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
