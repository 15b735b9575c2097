"""Real signals sent to a real process a few milliseconds apart.

A small child script tracks a phase with ``estimation_progress`` and checkpoints a few
megabytes at every step (so writes take milliseconds and signals land inside them, inside
the final save, and after it).  A first signal is followed 0-20 ms later by a second: the
process must exit with the code of the signal that arrived first (SIGINT 130, SIGHUP 129,
SIGTERM 143), never die by the signal, and leave a whole progress file labelled by that same
signal.  Which one arrived first is the kernel's: when the child is not scheduled between
the two sends (a loaded machine) both are pending at once, and a process with other threads
(OpenBLAS) may take them on different threads, so the test requires exit code and label to
name the same one of the two, not the one sent first.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from src.progress.document import parse
from src.utils.estimation_progress import Terminated
from tests.helpers import ROOT, script_env

CHILD = r"""
import sys
sys.path.insert(0, sys.argv[2])
import numpy as np
from src.utils.estimation_progress import Terminated, estimation_progress

big = np.random.default_rng(0).random(400_000)  # ~3 MB per checkpoint: writes take ms
try:
    with estimation_progress(task_name="sig", save_interval=0, progress_dir=sys.argv[1],
                             notify=lambda m: None) as tracker:
        tracker.begin_phase("work")
        tracker.checkpoint({"i": 0, "x": big})
        print("ready", flush=True)
        i = 0
        while True:
            i += 1
            tracker.checkpoint({"i": i, "x": big + i})
except KeyboardInterrupt:
    sys.exit(130)
except Terminated as exc:
    sys.exit(exc.exit_code)
"""

CODES = {"SIGINT": 130, "SIGHUP": 129, "SIGTERM": 143}
PAIRS = [("SIGTERM", "SIGTERM"), ("SIGTERM", "SIGINT"), ("SIGINT", "SIGTERM"), ("SIGHUP", "SIGTERM")]
GAPS_MS = [0, 5, 10, 20]


def _run(tmp_path, first, second, gap_ms, delay_ms):
    progress = tmp_path / "progress"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(progress), str(ROOT)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=script_env())
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        time.sleep(delay_ms / 1000)  # land the first signal anywhere in the loop
        proc.send_signal(getattr(signal, first))
        time.sleep(gap_ms / 1000)
        proc.send_signal(getattr(signal, second))
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, err, progress


@pytest.mark.parametrize("gap_ms", GAPS_MS)
def test_second_signal_never_skips_or_relabels_the_final_save(tmp_path, gap_ms):
    """For each gap, every pair of signals ends with one exit code and the same label, whole, never killed by the second."""
    for n, (first, second) in enumerate(PAIRS):
        delay_ms = 7 * (n % 2)
        folder = tmp_path / str(n)
        folder.mkdir()
        code, err, progress = _run(folder, first, second, gap_ms, delay_ms)
        where = f"{first} then {second} after {gap_ms} ms (first after {delay_ms} ms)"
        seen = {code: name for name, code in CODES.items()}.get(code)  # the one that arrived first
        assert seen in (first, second) and code == CODES[seen], f"{where}: exit {code}\n{err}"
        assert "Traceback" not in err, f"{where}:\n{err}"
        doc = parse((progress / "sig_progress.json").read_bytes(), "sig")
        assert doc["status"] == "interrupted" and doc["end_reason"] == seen, where
        assert doc["checkpoint"]["phase"] == "work"


def test_terminated_names_its_signal_and_exit_code():
    """Terminated carries the signal's name and 128 + its number (SIGTERM by default)."""
    assert (Terminated().signame, Terminated().exit_code) == ("SIGTERM", 143)
    hup = Terminated("SIGHUP")
    assert (hup.signame, hup.exit_code) == ("SIGHUP", 129)
    assert isinstance(hup, BaseException) and not isinstance(hup, Exception)
