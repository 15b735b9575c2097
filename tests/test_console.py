"""Tests of the progress display: plain lines, counting and time left, phase changes, zh, a run."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from rich.console import Console

from src.config import PHASES
from src.estimation.em import fit_em
from src.models.gmm import GaussianMixtureModel
from src.pipeline.reporting import FitProgress
from src.utils.checkpointing import NullCheckpointer
from src.utils.console import Reporter, format_duration
from src.utils.messages import set_language
from src.utils.rng import stream
from tests.helpers import FAST, check_rc, run_script


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def english():
    set_language("en")
    yield
    set_language(None)


def plain(plain_every: float = 5.0) -> tuple[Reporter, io.StringIO, Clock]:
    buf, clock = io.StringIO(), Clock()
    return Reporter(buf, live=False, plain_every=plain_every, clock=clock), buf, clock


def live() -> tuple[Reporter, io.StringIO, Clock]:
    buf, clock = io.StringIO(), Clock()
    console = Console(file=buf, force_terminal=True, width=200, color_system=None)
    return Reporter(console=console, clock=clock, refresh_per_second=0), buf, clock


def progress_lines(text: str) -> list[str]:
    return [line for line in text.splitlines()
            if any(line.startswith(p + ":") or line.startswith(p + "：") for p in PHASES)]


# ------------------------------------------------------------------ plain lines
class TestPlainLines:
    def test_at_most_one_line_every_plain_every_seconds(self):
        """An event every second with plain_every 5 prints at seconds 1, 6, 11, 16 only."""
        rep, buf, clock = plain(5.0)
        rep.phase_started("model_estimation")
        shown = []
        last = None
        for second in range(1, 20):
            clock.now = float(second)
            rep.iteration(0, second, -100.0 + second)
            if last is None or second - last >= 5:
                shown.append(second)
                last = second
        lines = progress_lines(buf.getvalue())
        assert shown == [1, 6, 11, 16]
        assert [int(re.search(r"iteration (\d+),", ln).group(1)) for ln in lines] == shown

    def test_first_event_of_a_phase_is_shown_at_once(self):
        """A new phase's first event is printed even one second after the previous line."""
        rep, buf, clock = plain(5.0)
        rep.phase_started("model_estimation")
        clock.now = 1.0
        rep.iteration(0, 1, -10.0)
        rep.phase_started("standard_error_computation")
        clock.now = 2.0
        rep.unit("bootstrap", 1, 20, kind="bootstrap")
        lines = progress_lines(buf.getvalue())
        assert len(lines) == 2
        assert lines[1].startswith("standard_error_computation: ")
        assert "bootstrap replicates 1/20 (5%)" in lines[1]

    def test_every_line_starts_with_its_phase(self):
        """Each plain progress line starts with the phase that was running when it was made."""
        rep, buf, clock = plain(0.0)
        for phase in ("model_estimation", "model_selection", "standard_error_computation"):
            rep.phase_started(phase)
            for i in range(1, 4):
                clock.now += 1
                rep.unit("x", i, 3)
        current = None
        for line in buf.getvalue().splitlines():
            m = re.match(r"Phase '(\w+)' started", line)
            if m:
                current = m.group(1)
                continue
            assert line.startswith(f"{current}: "), line


# ------------------------------------------------------------------ counting
class TestCounting:
    def test_percent_and_time_left_follow_the_rate_so_far(self):
        """Percentages are floored done/total and the time left is remaining x elapsed / done."""
        rep, _, clock = plain()
        rep.phase_started("model_estimation")
        times = [3.0, 5.0, 9.0, 10.0, 16.0, 21.0]
        total = 7
        for done, when in enumerate(times, 1):
            clock.now = when
            rep.unit("candidates", done, total, kind="candidate")
            s = rep.snapshot()
            assert s["percent"] == (100 * done) // total
            if done < 2:
                assert s["eta"] is None
            else:
                assert s["eta"] == pytest.approx((total - done) * when / done)
        clock.now = 30.0   # between events the rate falls with the time that passes
        assert rep.snapshot()["eta"] == pytest.approx((total - 6) * 30.0 / 6)
        rep.unit("candidates", 7, total, kind="candidate")
        assert rep.snapshot()["percent"] == 100 and rep.snapshot()["eta"] is None

    def test_units_restored_from_a_checkpoint_do_not_count(self):
        """After a resume the rate counts only this process's units: 6/20 restored, 3 more in 30 s leave 11 x 10 s."""
        rep, _, clock = plain()
        rep.phase_started("standard_error_computation")
        clock.now = 10.0
        rep.unit("bootstrap", 7, 20, kind="bootstrap")
        assert rep.snapshot()["eta"] is None  # one unit of this process only
        clock.now = 20.0
        rep.unit("bootstrap", 8, 20, kind="bootstrap")
        assert rep.snapshot()["eta"] == pytest.approx(12 * 20.0 / 2)
        clock.now = 30.0
        rep.unit("bootstrap", 9, 20, kind="bootstrap")
        assert rep.snapshot()["eta"] == pytest.approx(11 * 30.0 / 3)

    def test_a_counter_begun_with_its_restored_units_times_from_then(self):
        """A first event with done == restored starts the clock of that counter there."""
        rep, _, clock = plain()
        rep.phase_started("model_estimation")
        clock.now = 40.0
        rep.unit("starts", 4, 10, kind="start", restored=4)
        for done, when in ((5, 50.0), (6, 60.0)):
            clock.now = when
            rep.unit("starts", done, 10, kind="start", restored=4)
        assert rep.snapshot()["eta"] == pytest.approx(4 * 20.0 / 2)

    def test_next_counter_times_from_the_end_of_the_previous(self):
        """The final starts' rate is timed from the last candidate, not from the phase start."""
        rep, _, clock = plain()
        rep.phase_started("model_estimation")
        for done in (1, 2):
            clock.now = 50.0 * done
            rep.unit("candidates", done, 2, kind="candidate")
        for done, when in ((1, 110.0), (2, 120.0)):
            clock.now = when
            rep.unit("starts", done, 5, kind="start")
        assert rep.snapshot()["label"] == "starts"
        assert rep.snapshot()["eta"] == pytest.approx(3 * 20.0 / 2)

    def test_best_loglik_change_and_k(self):
        """The best log-likelihood is the highest seen for this K, the change is against the start's previous evaluation, a new K starts afresh."""
        rep, _, clock = plain()
        rep.phase_started("model_estimation")
        rep.unit("candidates", 1, 4, kind="candidate", k=2, best_loglik=-50.0)
        rep.iteration(0, 1, -60.0, k=2)
        rep.iteration(0, 2, -55.5, k=2)
        s = rep.snapshot()
        assert (s["k"], s["best_loglik"], s["start"], s["iteration"]) == (2, -50.0, 1, 2)
        assert s["change"] == pytest.approx(4.5)
        rep.iteration(1, 1, -40.0, k=2)
        assert rep.snapshot()["best_loglik"] == -40.0 and rep.snapshot()["change"] is None
        rep.working_on(3)
        s = rep.snapshot()
        assert (s["k"], s["best_loglik"], s["done"], s["start"]) == (3, None, None, None)
        rep.iteration(0, 1, -70.0, k=3)
        s = rep.snapshot()
        assert (s["k"], s["best_loglik"], s["done"]) == (3, -70.0, None)
        assert rep.lines()[0].startswith("model_estimation: K = 3; ")

    def test_durations(self):
        """Durations read as seconds, minutes and seconds, or hours and minutes."""
        assert [format_duration(x) for x in (0.2, 42.4, 185, 7620)] == \
            ["< 1 s", "42 s", "3 min 05 s", "2 h 07 min"]


# ------------------------------------------------------------------ phases
class TestPhaseChange:
    def test_new_phase_drops_the_previous_one(self):
        """After phase_started nothing of the previous phase (K, counter, iteration) is left."""
        rep, _, clock = plain()
        rep.phase_started("model_estimation")
        rep.unit("starts", 3, 10, kind="start", k=2, best_loglik=-5.0)
        rep.iteration(3, 7, -5.0, k=2)
        rep.phase_started("standard_error_computation")
        s = rep.snapshot()
        assert s["phase"] == "standard_error_computation"
        assert all(s[key] is None for key in ("k", "done", "start", "best_loglik", "eta"))
        assert rep.lines() == ["standard_error_computation: < 1 s in this phase"]

    def test_live_display_never_shows_a_stale_phase(self):
        """On a terminal, everything drawn after the new phase's line names only the new phase."""
        rep, buf, clock = live()
        rep.phase_started("model_estimation")
        rep.unit("starts", 3, 10, kind="start")
        rep.iteration(3, 7, -5.0)
        rep.refresh()
        before = buf.getvalue()
        assert "model_estimation: " in before and "start 4, iteration 7" in before
        rep.phase_started("standard_error_computation")
        rep.unit("bootstrap", 1, 20, kind="bootstrap")
        rep.refresh()
        after = buf.getvalue()[len(before):]
        tail = after[after.index("Phase 'standard_error_computation' started"):]
        assert "model_estimation" not in tail and "iteration" not in tail
        assert "standard_error_computation: " in tail and "bootstrap replicates 1/20" in tail
        rep.close()
        assert rep.lines() == []
        assert buf.getvalue().rstrip("\r").endswith("\x1b[?25h")  # display erased, cursor back

    def test_phase_finished_clears_the_display(self):
        """Once its phase ended, the display shows nothing until the next one starts."""
        rep, _, _ = live()
        rep.phase_started("model_estimation")
        rep.unit("starts", 1, 2, kind="start")
        rep.phase_finished("model_estimation")
        assert rep.lines() == [] and rep.snapshot()["done"] is None
        rep.close()


class TestChinese:
    def test_lines_in_chinese(self):
        """With --lang zh the phase line, counter, time left and iteration are in Chinese."""
        set_language("zh")
        rep, buf, clock = plain(0.0)
        rep.phase_started("model_estimation")
        for done, when in ((1, 10.0), (2, 20.0)):
            clock.now = when
            rep.unit("candidates", done, 8, kind="candidate", best_loglik=-12.5)
        rep.iteration(0, 3, -12.0)
        text = buf.getvalue()
        assert "阶段 'model_estimation' 开始" in text
        last = progress_lines(text)[-1]
        assert last.startswith("model_estimation：本阶段已用 20 秒")
        assert "候选起点 2/8（25%）" in last and "预计还需 1 分 00 秒" in last
        assert "最佳对数似然 -12.000000" in last and "第 1 个起点，第 3 次迭代" in last
        assert rep.lines()[0] == "model_estimation：本阶段已用 20 秒"


# ------------------------------------------------------------------ fit events
class MemoryCheckpointer:
    """Checkpointer keeping every state handed to it and resuming from a given one."""

    def __init__(self, resume=None):
        self.states, self._resume = [], resume

    def resume_state(self):
        return self._resume

    def checkpoint(self, state, *, force=False):
        self.states.append(state)
        return force


def two_groups(n=300):
    """A two-class Gaussian mixture set up for its 2-column data, and the data."""
    rng = stream(7, "test-data", 0)
    z = rng.random(n) < 0.4
    X = np.where(z[:, None], rng.normal(0.0, 1.0, (n, 2)), rng.normal(3.0, 1.0, (n, 2)))
    model = GaussianMixtureModel(2)
    model.setup(model.meta_for_array(X))
    return model, {"X": X}


class CountingReporter(Reporter):
    """A real Reporter that also keeps the unit events it received."""

    def __init__(self):
        super().__init__(io.StringIO(), live=False, plain_every=0.0)
        self.units = []

    def unit(self, what, done, total, **kw):
        self.units.append((kw.get("kind"), done, total, kw.get("restored"), kw.get("best_loglik")))
        super().unit(what, done, total, **kw)


class TestFitProgress:
    def test_counts_candidates_and_starts_and_leaves_the_fit_alone(self):
        """Every candidate and final start is counted once, the best log-likelihood is the fit's, and the fit equals one without a reporter."""
        model, data = two_groups()
        opts = dict(n_starts=3, n_candidates=8, candidate_iter=5, seed=3)
        rep = CountingReporter()
        rep.phase_started("model_estimation")
        inner = MemoryCheckpointer()
        watched = fit_em(model, data, checkpoint=FitProgress(inner, rep), **opts)
        plain_fit = fit_em(model, data, checkpoint=NullCheckpointer(), **opts)
        assert watched.loglik == plain_fit.loglik
        assert all(np.array_equal(watched.params[k], plain_fit.params[k]) for k in plain_fit.params)
        cands = [u for u in rep.units if u[0] == "candidate"]
        starts = [u for u in rep.units if u[0] == "start"]
        assert [u[1] for u in cands] == list(range(1, 9)) and {u[2] for u in cands} == {8}
        assert [u[1] for u in starts] == [0, 1, 2, 3] and {u[2] for u in starts} == {3}
        assert starts[-1][4] == pytest.approx(watched.loglik)
        assert all(u[3] == 0 for u in rep.units)
        assert inner.states and all(s["kind"] == "em_fit" for s in inner.states)

    def test_resumed_units_are_reported_as_restored(self):
        """A fit resumed after 5 of 8 candidates reports those 5 as restored and counts on from 6."""
        model, data = two_groups()
        opts = dict(n_starts=3, n_candidates=8, candidate_iter=5, seed=3)
        first = MemoryCheckpointer()
        fit_em(model, data, checkpoint=first, **opts)
        saved = next(s for s in first.states if len(s["candidates"]) == 5)
        rep = CountingReporter()
        rep.phase_started("model_estimation")
        fit_em(model, data, checkpoint=FitProgress(MemoryCheckpointer(saved), rep), **opts)
        cands = [u for u in rep.units if u[0] == "candidate"]
        assert [u[1] for u in cands] == [6, 7, 8] and {u[3] for u in cands} == {5}


# ------------------------------------------------------------------ a whole run
def test_run_through_a_pipe_names_the_running_phase(tmp_path):
    """Off a terminal every progress line of the main script names the phase it was made in."""
    proc = run_script(tmp_path, *FAST, "--se-method", "bootstrap", "--n-bootstrap", "20")
    check_rc(proc, 0)
    current, seen = None, set()
    for line in proc.stdout.splitlines():
        m = re.match(r"Phase '(\w+)' started", line)
        if m:
            current = m.group(1)
        elif line in progress_lines(line):
            assert line.startswith(f"{current}: "), line
            seen.add(current)
    assert {"model_estimation", "standard_error_computation"} <= seen
    started = proc.stdout.index("Phase 'standard_error_computation' started")
    assert not any(ln.startswith("model_estimation:") for ln in proc.stdout[started:].splitlines())
