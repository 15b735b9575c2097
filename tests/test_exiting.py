"""Leaving the process without the interpreter's teardown (src/utils/exiting.py): what the
interpreter would still do is done -- threads that are not daemons joined, atexit handlers
run, buffered output flushed -- and the exit status is the one asked for (141, quietly, when
the reader of standard output went away)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: the children's standard streams buffered, as a user's are (not PYTHONUNBUFFERED)
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}

CHILD = """
import atexit, sys, threading, time
sys.path.insert(0, {root!r})
from src.utils.exiting import exit_now

out = {out!r}
def late():
    time.sleep(0.3)
    open(out + ".thread", "w").write("joined")
threading.Thread(target=late).start()          # not a daemon: joined before the exit
atexit.register(lambda: open(out + ".atexit", "w").write("ran"))
sys.stdout.write("buffered, no newline")      # still in the buffer: flushed
sys.stderr.write("to stderr")
exit_now({code})
raise SystemExit("not reached")
"""


def _child(tmp_path: Path, code: int) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path / "marker"
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(root=str(ROOT), out=str(out), code=code))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, env=ENV)
    return proc, out


def test_exit_now_does_what_the_interpreter_would_do_first(tmp_path):
    """Exit status as asked; a thread that is not a daemon finished; atexit handlers ran; stdout and stderr flushed."""
    for code in (0, 3):
        proc, out = _child(tmp_path, code)
        assert proc.returncode == code
        assert proc.stdout == "buffered, no newline"
        assert proc.stderr == "to stderr"
        assert Path(str(out) + ".thread").read_text() == "joined"
        assert Path(str(out) + ".atexit").read_text() == "ran"


def test_a_reader_gone_gives_141_quietly(tmp_path):
    """Standard output's reader closed before the final flush: status 141, nothing on stderr about it."""
    script = tmp_path / "pipe.py"
    script.write_text(
        f"import sys, time\nsys.path.insert(0, {str(ROOT)!r})\n"
        "from src.utils.exiting import exit_now\n"
        "time.sleep(0.5)\n"          # the reader is gone by now
        "sys.stdout.write('x' * 100)\n"   # buffered: fails at the final flush
        "exit_now(0)\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=ENV)
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 141
    assert err == b""
