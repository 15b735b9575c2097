"""Progress folders that cannot be written: the run goes on, untracked, after one warning.

Real conditions only, each one the kernel refuses: a folder under ``/proc/self``, a file
where the folder should be, the folder replaced by a file mid-run (ENOTDIR), a file-size
limit (``RLIMIT_FSIZE``: EFBIG, works unprivileged), and, where user namespaces allow it
(``unshare -rm``), a read-only bind mount (EROFS) and a 64 KB tmpfs that fills up
(ENOSPC).  ``chmod`` is used only when not running as root (root ignores it).  Reading a
read-only folder (``--check-progress``) must work, and after a run whose writes failed
nobody reports it as still running.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from src.progress import files as progress_files
from src.progress.document import parse
from src.utils.estimation_progress import estimation_progress, resume_estimation_phase
from tests.helpers import FAST, ROOT, SCRIPT, check_rc, results_dir, run_script, script_env

WARNING = "cannot be written"

#: a tracked run: phase a, then checkpoints of growing size in b; prints what it saw
CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import numpy as np
from src.progress.document import parse
from src.utils.estimation_progress import Terminated, estimation_progress, resume_estimation_phase

folder, steps = sys.argv[2], int(sys.argv[3])
messages = []
try:
    with estimation_progress(task_name="t", save_interval=0, progress_dir=folder,
                             notify=messages.append) as tracker:
        a = resume_estimation_phase(tracker, "a", lambda: {"m": np.arange(10.0)})
        tracker.begin_phase("b")
        for i in range(steps):
            tracker.checkpoint({"i": i, "x": np.full(1000 * (i + 1), float(i))})
        tracker.complete_phase("b", {"n": steps})
except Terminated as exc:
    sys.exit(exc.exit_code)
try:
    with open(folder + "/t_progress.json", "rb") as fh:
        on_disk = parse(fh.read(), "t")
except Exception as exc:
    on_disk = {"error": repr(exc)}
print(json.dumps({"messages": messages, "a": a["m"].tolist(), "on_disk": on_disk}, default=str))
"""


def _child(folder, steps=40, prefix=(), preexec=None):
    proc = subprocess.run([*prefix, sys.executable, "-c", CHILD, str(ROOT), str(folder), str(steps)],
                          capture_output=True, text=True, timeout=120, env=script_env(),
                          preexec_fn=preexec)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _one_warning(messages):
    warnings = [m for m in messages if WARNING in m]
    assert len(warnings) == 1, messages
    assert warnings[0].startswith("Warning: the progress folder") and "\n" not in warnings[0]


def _session(folder, messages, **kw):
    return estimation_progress(task_name="t", progress_dir=folder, save_interval=0,
                               notify=messages.append, **kw)


def _namespaces_work(tmp_path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = tmp_path / "probe"
    probe.mkdir()
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o size=16k tmpfs "$0"',
                           str(probe)], capture_output=True, timeout=30)
    return proc.returncode == 0


@pytest.fixture
def namespaces(tmp_path):
    if not _namespaces_work(tmp_path):
        pytest.skip("no user and mount namespaces here (unshare -rm)")


# ------------------------------------------------------------------- at start
def test_proc_self_as_progress_dir_warns_and_the_run_completes(tmp_path):
    """--progress-dir /proc/self: one warning about the folder, not 'already running', results written."""
    proc = run_script(tmp_path, *FAST, "--se-method", "none", "--progress-dir", "/proc/self")
    check_rc(proc, 0)
    assert WARNING in proc.stdout and "/proc/self" in proc.stdout, proc.stdout
    assert "already running" not in proc.stdout + proc.stderr
    assert (results_dir(tmp_path) / "estimates.csv").is_file()


def test_file_in_the_way_of_the_progress_folder(tmp_path):
    """A regular file where the progress folder should be: warning, phases still run, file untouched."""
    blocker = tmp_path / "progress"
    blocker.write_text("not a folder")
    messages = []
    with _session(blocker, messages) as tr:
        assert resume_estimation_phase(tr, "a", lambda: 41) + 1 == 42
        tr.begin_phase("b")
        assert tr.checkpoint({"i": 1}, force=True) is False
    _one_warning(messages)
    assert blocker.read_text() == "not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only (chmod) folder anyway")
def test_chmod_read_only_folder(tmp_path):
    """A folder without write permission: warning, the run goes on, --check-progress still reads it."""
    folder = tmp_path / "progress"
    with _session(folder, []) as tr:
        resume_estimation_phase(tr, "a", lambda: 1)
    folder.chmod(0o555)
    try:
        messages = []
        with _session(folder, messages) as tr:
            assert resume_estimation_phase(tr, "z", lambda: 2) == 2
        _one_warning(messages)
        assert "Task 't'" in progress_files.render_check(folder, None)
    finally:
        folder.chmod(0o755)


# ------------------------------------------------------------------- mid-run
def test_folder_replaced_by_a_file_mid_run(tmp_path):
    """Writes failing mid-run (ENOTDIR) give one warning; later checkpoints and the end stay quiet."""
    folder = tmp_path / "progress"
    messages = []
    with _session(folder, messages) as tr:
        resume_estimation_phase(tr, "a", lambda: {"m": np.ones(3)})
        folder.rename(tmp_path / "moved")
        folder.write_text("in the way")
        tr.begin_phase("b")
        written = [tr.checkpoint({"i": i}, force=True) for i in range(5)]
        tr.complete_phase("b", 2)
    assert written == [False] * 5
    _one_warning(messages)
    saved = parse((tmp_path / "moved" / "t_progress.json").read_bytes(), "t")
    assert saved["completed_phases"] == ["a"]  # the last good write is intact


def test_file_size_limit_mid_run(tmp_path):
    """RLIMIT_FSIZE (EFBIG on write): one warning, the run completes, the last good file is whole."""
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))

    out = _child(tmp_path / "progress", preexec=limit)
    _one_warning(out["messages"])
    assert out["a"] == list(map(float, range(10)))
    assert out["on_disk"]["current_phase"] == "b" and out["on_disk"]["status"] == "running"
    info = progress_files.task_info(tmp_path / "progress", "t")
    assert info["running"] is False and info["status"] != "running"


def test_signal_during_the_first_write_is_recorded(tmp_path):
    """A SIGTERM right after the start's write (a resumed run) is recorded as interrupted, not left 'running'."""
    folder = tmp_path / "progress"
    with pytest.raises(RuntimeError):
        with _session(folder, []) as tr:
            tr.begin_phase("b")
            raise RuntimeError("first run stops")
    proc = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(folder), "3"],
                          capture_output=True, text=True, timeout=120,
                          env=script_env(fault="term:b:1"))
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    doc = parse((folder / "t_progress.json").read_bytes(), "t")
    assert doc["status"] == "interrupted" and doc["end_reason"] == "SIGTERM"


# ------------------------------------------------------------------- namespaces
def test_full_disk(tmp_path, namespaces):
    """A 64 KB tmpfs that fills up (ENOSPC): one warning, the run completes, the last good file is whole."""
    folder = tmp_path / "small"
    folder.mkdir()
    mount = ["unshare", "-rm", "sh", "-c", f'mount -t tmpfs -o size=64k tmpfs {folder} && exec "$@"', "sh"]
    out = _child(folder, prefix=mount)
    _one_warning(out["messages"])
    assert "No space left" in " ".join(out["messages"])
    assert out["on_disk"]["current_phase"] == "b"


def test_read_only_mount(tmp_path, namespaces):
    """A read-only bind mount (EROFS): --check-progress reads it, a run warns once and completes."""
    folder = tmp_path / "progress"
    with _session(folder, []) as tr:
        resume_estimation_phase(tr, "a", lambda: 1)
    assert (folder / "t.lock").exists()
    before = sorted((p.name, p.read_bytes()) for p in folder.iterdir() if p.is_file())
    ro = f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder} && exec \"$@\""
    prefix = ["unshare", "-rm", "sh", "-c", ro, "sh"]
    check = subprocess.run([*prefix, sys.executable, str(SCRIPT), "--check-progress",
                            "--progress-dir", str(folder)], capture_output=True, text=True,
                           timeout=120, env=script_env(), cwd=tmp_path)
    check_rc(check, 0)
    assert "Task 't'" in check.stdout and "running now:       no" in check.stdout
    out = _child(folder, prefix=prefix)
    _one_warning(out["messages"])
    assert "Read-only" in " ".join(out["messages"])
    assert out["on_disk"]["completed_phases"] == ["a"]
    assert sorted((p.name, p.read_bytes()) for p in folder.iterdir() if p.is_file()) == before
