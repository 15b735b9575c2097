"""Starting the drawing process (:mod:`.background`), early when the script can.

A user's run spends its first second or so importing NumPy, pandas, SciPy and the project,
on one core; the drawing process spends about as long starting (an interpreter, NumPy,
matplotlib, a first figure for the fonts).  The script (``scripts/02_run_estimation.py``)
calls :func:`start_early` before its own imports, so the two start side by side, and
:func:`src.output.background.start` adopts the process (:func:`take_early`) instead of
starting one inside the run, where its start-up would take CPU from the run's reading of
the data and its fit.

Whether a run will draw is known only once its options are parsed (a ``--config`` file can
turn plots off or ask for several K): :func:`start_early` decides from the command line
alone and may be wrong the safe way -- a process started for nothing is ended by
:func:`src.output.background.stop`, which every run calls, or sees end-of-file and exits
when the script ends without a run (a usage error, ``--help``).  It never outlives the
script: it exits at end-of-file on its stdin and asks the kernel for SIGKILL when the
script's main thread ends (:func:`src.output.helper.serve`).

Light on purpose: no NumPy or project imports, so calling it costs a fork and exec.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from ..utils.argv import last_value

__all__ = ["spawn", "wanted", "start_early", "early_pid", "take_early", "discard_early"]

#: the project's root (the folder holding ``src``), put on the drawing process's path
ROOT = str(Path(__file__).resolve().parents[2])
#: flags after which the script fits nothing or draws nothing in a drawing process
_NOT_DRAWING = ("--no-plots", "--check-progress", "--clean-progress", "--help", "-h",
                "--version")

_EARLY: subprocess.Popen | None = None


def spawn() -> subprocess.Popen:
    """Start a drawing process (:func:`src.output.helper.serve`, one BLAS thread), its
    stdin and stdout pipes to this process, stderr discarded."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "from src.output.helper import serve; serve(int(sys.argv[2]))")
    # the run's "go" signal (SIGUSR1, helper.GO_SIGNAL) blocked in the new process until
    # serve() has its handler (a signal mask is kept across exec): by default it would end it
    go = getattr(signal, "SIGUSR1", None)
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {go}) if go is not None else None
    try:
        return subprocess.Popen([sys.executable, "-c", code, ROOT, str(os.getpid())],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, env=env, bufsize=0, close_fds=True)
    finally:
        if old is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


def wanted(argv: Sequence[str]) -> bool:
    """Whether a run with these command-line flags may want a drawing process: not with
    ``--no-plots``, several components (``--components 1-4`` or ``2,3``: their figures are
    drawn in the run), or a flag after which nothing is fitted.  Options from ``--config``
    are not read (the run ends a process it does not need)."""
    argv = list(argv)
    flags = argv[:argv.index("--")] if "--" in argv else argv
    if any(arg in _NOT_DRAWING for arg in flags):
        return False
    components = last_value(argv, "--components")
    return components is None or not any(c in components for c in "-,")


def start_early(argv: Sequence[str]) -> bool:
    """Start the drawing process now when the flags say the run may draw (:func:`wanted`);
    True when one was started.  Any failure to start is left for the run (it tries again,
    and draws in its own process if that fails too)."""
    global _EARLY
    if _EARLY is not None or not wanted(argv):
        return False
    try:
        _EARLY = spawn()
    except (OSError, ValueError, subprocess.SubprocessError):
        return False
    return True


def early_pid() -> int | None:
    """The pid of the process :func:`start_early` started and nobody took yet (None: none)."""
    proc = _EARLY
    return None if proc is None else proc.pid


def take_early() -> subprocess.Popen | None:
    """The process :func:`start_early` started, if it still runs (then it is the caller's
    to end); None otherwise (one that ended is reaped)."""
    global _EARLY
    proc, _EARLY = _EARLY, None
    if proc is None:
        return None
    if proc.poll() is None:
        return proc
    _close(proc)
    return None


def discard_early() -> None:
    """End a process :func:`start_early` started and nobody took (killed: it holds nothing
    but its own start-up)."""
    proc = take_early()
    if proc is not None:
        proc.kill()
        _close(proc)


def _close(proc: subprocess.Popen) -> None:
    """Close the pipes to an ended (or killed) process and reap it."""
    for pipe in (proc.stdin, proc.stdout):
        try:
            if pipe is not None:
                pipe.close()
        except OSError:
            pass
    proc.wait()
