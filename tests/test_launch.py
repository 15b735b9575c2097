"""The drawing process started by the script before its imports (src/output/launch.py): the
flags that start it, the run adopting it (figures drawn there), and a process started for a
run that draws nothing there ended by the run, by stop(), or with the script (SIGKILL too)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from src.output import background, launch
from tests.helpers import start_driver

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_early_left():
    yield
    launch.discard_early()
    background.stop()


@pytest.mark.parametrize("argv, expected", [
    ([], True),
    (["--data", "x.csv", "--components", "3"], True),
    (["--components=4", "--formats", "md"], True),
    (["--no-plots"], False),
    (["--components", "1-4"], False),
    (["--components=2,3"], False),
    (["--check-progress"], False),
    (["--clean-progress"], False),
    (["--help"], False),
    (["-h"], False),
    (["--version"], False),
    (["--task-name", "a", "--", "--no-plots"], True),   # after "--": not a flag
    (["--components", "1-4", "--components", "2"], True),   # argparse: the last one counts
    (["--components=3", "--components", "2,3"], False),
    (["--components"], True),   # (no value: the parse error comes later)
])
def test_wanted_reads_the_command_line(argv, expected):
    """A drawing process is started early unless the flags say no figure is drawn in one (no plots, several K, a command that fits nothing)."""
    assert launch.wanted(argv) is expected


def _gone(pid: int, timeout: float = 10.0) -> bool:
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return True
    _, alive = psutil.wait_procs([proc], timeout=timeout)
    return not alive or proc.status() == psutil.STATUS_ZOMBIE


def test_start_adopts_the_early_process():
    """background.start() takes the process started early (the same pid), which becomes ready and ends with stop()."""
    assert launch.start_early([])
    pid = launch.early_pid()
    assert pid is not None and psutil.Process(pid).ppid() == os.getpid()
    assert not launch.start_early([])   # one at a time
    assert background.start()
    assert background.helper_pid() == pid and launch.early_pid() is None
    assert background.wait_ready(120)
    background.stop()
    assert _gone(pid)


def test_flags_that_draw_nothing_start_nothing():
    assert not launch.start_early(["--no-plots"])
    assert launch.early_pid() is None


def test_stop_ends_an_early_process_nobody_took():
    """stop() (called by every run as it leaves) kills a process nobody adopted."""
    assert launch.start_early([])
    pid = launch.early_pid()
    background.stop()
    assert launch.early_pid() is None and _gone(pid)


def _options(tmp_path, **kw):
    from src.config import RunOptions

    return RunOptions(model="gmm", n_starts=2, n_candidates=4, se_method="louis",
                      progress_dir=str(tmp_path / "progress"),
                      output_dir=str(tmp_path / "results"), no_progress_tracking=True,
                      **kw).validate()


def test_a_run_draws_in_the_early_process(tmp_path):
    """A whole run after start_early takes its figures from that process and leaves no child."""
    from src.pipeline import run
    from src.utils.console import Reporter

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    assert launch.start_early([])
    pid = launch.early_pid()
    seen = []

    class Watch(Reporter):
        def phase_started(self, phase):
            seen.append((phase, background.helper_pid()))
            super().phase_started(phase)

    run(_options(tmp_path), Watch(stream=open(os.devnull, "w"), live=False))
    assert ("model_estimation", pid) in seen
    assert background.last_source() == "helper"
    assert _gone(pid)
    assert not [p for p in psutil.Process().children(recursive=True)
                if p.pid not in before and p.status() != psutil.STATUS_ZOMBIE]


def test_a_run_without_plots_ends_the_early_process_before_its_fit(tmp_path):
    """Flags said plots, the options say none (as a --config file can): the run ends the process before it fits."""
    from src.pipeline import run
    from src.utils.console import Reporter

    assert launch.start_early([])
    pid = launch.early_pid()
    at_fit = []

    class Watch(Reporter):
        def phase_started(self, phase):
            if phase == "model_estimation":
                at_fit.append(_gone(pid, timeout=0.0))
            super().phase_started(phase)

    run(_options(tmp_path, plots=False), Watch(stream=open(os.devnull, "w"), live=False))
    assert at_fit == [True]
    assert background.last_source("posteriors.csv") == "thread"
    assert not list((tmp_path / "results").rglob("*.png"))


DRIVER = """
import sys, time
sys.path.insert(0, {root!r})
from src.output import launch
assert launch.start_early([])
print(launch.early_pid(), flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("wait_ready", [False, True])
def test_no_early_process_outlives_a_sigkilled_script(tmp_path, wait_ready):
    """The script is SIGKILLed while the process it started early is starting up or idle: that process is gone within seconds."""
    proc, helper = start_driver(tmp_path, DRIVER.format(root=str(ROOT)))
    pid = helper.pid
    try:
        if wait_ready:   # matplotlib imported, the first figure drawn: waiting for requests
            helper.cpu_percent()
            for _ in range(100):
                if helper.cpu_percent(interval=0.1) == 0.0:
                    break
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert _gone(pid)


def _drawing_processes_of(pid: int) -> list[psutil.Process]:
    """Drawing processes (of src/output/launch.spawn) whose parent was ``pid``."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if cmd and "serve(int(sys.argv[2]))" in " ".join(cmd) and cmd[-1] == str(pid):
            if p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
    return found


def test_the_script_with_a_usage_error_leaves_no_process(tmp_path):
    """The script starts the process early, then refuses a bad flag: exit 2, one sentence, and the process it started ends with it."""
    env = {**os.environ, "LANG": "C.UTF-8"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "02_run_estimation.py"),
                             "--max-iter", "zero"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in err and err.strip() and err.strip().count("\n") == 0
    left = _drawing_processes_of(proc.pid)
    _, alive = psutil.wait_procs(left, timeout=10)
    assert not alive
