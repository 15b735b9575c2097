"""Local worker processes never outlive their run, and what a killed run left is removed.

A driver subprocess creates a ``ProcessExecutor`` with 2 workers, keeps both busy, and is
killed with SIGKILL; every process it started (forkserver, workers, resource tracker) must
then go, and the next executor removes the task file the driver left in memory.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from src.parallel.executors import ProcessExecutor
from src.parallel import cleanup

ROOT = Path(__file__).resolve().parents[1]

DRIVER = textwrap.dedent('''
    import functools, os, sys, threading, time
    sys.path.insert(0, {root!r})
    import numpy as np
    from src.parallel.executors import ProcessExecutor

    def busy(marker_dir, data, i):
        open(os.path.join(marker_dir, f"started-{{os.getpid()}}"), "w").close()
        time.sleep(300)
        return float(data.sum())

    def make():
        return ProcessExecutor(2)

    def main():
        if sys.argv[2] == "thread":   # the executor is made in a thread that then ends
            box = []
            t = threading.Thread(target=lambda: box.append(make()))
            t.start(); t.join()
            ex = box[0]
        else:
            ex = make()
        assert dict(ex.map_unordered(pow, [(2, 3), (3, 2)])) == {{0: 8, 1: 9}}
        fn = functools.partial(busy, sys.argv[1], np.ones(100_000))
        print("mapping", flush=True)
        for _ in ex.map_unordered(fn, [(i,) for i in range(2)]):
            pass

    if __name__ == "__main__":
        main()
''')


def _wait_for(condition, what: str, limit: float = 120.0) -> None:
    """Poll ``condition`` until true (the limit only guards against a hung test)."""
    end = time.monotonic() + limit
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def _mapped_semaphores(pid: int) -> set[str]:
    """The named semaphores (``/dev/shm/sem.*``) process ``pid`` has mapped.

    glibc maps a semaphore through a temporary name and links the real name to it, so the
    names are found by the inodes of the mappings.
    """
    with open(f"/proc/{pid}/maps") as fh:
        inodes = {int(line.split()[4]) for line in fh if "/dev/shm/sem." in line}
    found = set()
    for entry in os.scandir("/dev/shm"):
        try:
            if entry.name.startswith("sem.") and entry.inode() in inodes:
                found.add(entry.path)
        except OSError:
            pass
    return found


def _run_and_kill(tmp_path: Path, where: str, group: bool = False, env: dict | None = None
                  ) -> tuple[list[str], list[psutil.Process], set[str]]:
    """Start the driver, wait until both workers are busy, SIGKILL it (or its whole process
    group); its task files, descendants and mapped semaphores."""
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(root=str(ROOT)))
    markers = tmp_path / "markers"
    markers.mkdir()
    proc = subprocess.Popen([sys.executable, str(script), str(markers), where], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=group, env=env)
    try:
        _wait_for(lambda: len(list(markers.iterdir())) == 2 or proc.poll() is not None,
                  "both workers busy")
        assert proc.poll() is None, proc.stderr.read()
        descendants = psutil.Process(proc.pid).children(recursive=True)
        files = cleanup.task_files_of(proc.pid)
        files += [e.path for e in os.scandir(cleanup.task_dir())  # multiprocessing's own folder
                  if e.name.startswith(f"em-mp-{proc.pid}-") and e.is_dir()]
        semaphores = _mapped_semaphores(proc.pid) if sys.platform.startswith("linux") else set()
    finally:
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    return files, descendants, semaphores


def _assert_all_gone(descendants: list[psutil.Process]) -> None:
    _, alive = psutil.wait_procs(descendants, timeout=15)
    for p in alive:  # leave nothing behind, even when failing
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    assert not alive, [(p.pid, p.name()) for p in alive]


@pytest.mark.parametrize("where", ["main", "thread"])
def test_sigkilled_driver_leaves_no_process_and_its_task_file_is_removed(tmp_path, where):
    """After SIGKILL of a driver with 2 busy workers nothing it started survives, and the next executor deletes its task file."""
    files, descendants, _ = _run_and_kill(tmp_path, where)
    assert len(descendants) >= 4  # forkserver, 2 workers, resource tracker
    assert files, "the driver's task files should carry its pid"
    _assert_all_gone(descendants)
    with ProcessExecutor(2):  # (another run's new executor may have removed them already)
        assert not [f for f in files if os.path.exists(f)]


def test_a_killed_run_leaves_no_multiprocessing_folder(tmp_path):
    """multiprocessing's temporary folder of a killed driver is ours (em-mp-PID-*), not a pymp-* in TMPDIR, and the next executor removes it."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    files, descendants, _ = _run_and_kill(tmp_path, "main", env={**os.environ, "TMPDIR": str(tmp)})
    _assert_all_gone(descendants)
    assert not list(tmp.glob("pymp-*"))
    folders = [f for f in files if os.path.basename(f).startswith("em-mp-")]
    assert len(folders) == 1  # a folder while the driver ran (another process's executor,
    # e.g. a concurrent test's or run's, may have removed it since: the property under test too)
    with ProcessExecutor(2):
        assert not os.path.exists(folders[0])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and /dev/shm")
def test_semaphores_of_a_killed_process_group_are_unlinked_by_the_next_executor(tmp_path):
    """When the whole process group dies (resource tracker included) the next executor unlinks the named semaphores the driver had."""
    files, descendants, semaphores = _run_and_kill(tmp_path, "main", group=True)
    _assert_all_gone(descendants)
    # nobody of the dead group is left to unlink them (another process's executor starting
    # meanwhile, e.g. a concurrent run, may already have: that is the behaviour under test too)
    assert semaphores
    with ProcessExecutor(2):
        assert not [p for p in semaphores | set(files) if os.path.exists(p)]


def test_only_files_of_dead_or_reused_pids_are_removed(tmp_path):
    """remove_stale_task_files deletes files of dead pids, reused pids and old unnamed files, never a live run's."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    # in a folder of this test's own (the shared task folder is cleaned by every executor
    # that starts, a concurrent test's too); "mine" is a real task file moved there
    folder = tmp_path / "tasks"
    folder.mkdir()
    mine = Path(cleanup.write_task_file(b"x"))
    shutil.move(mine, folder / mine.name)
    files = {"mine": folder / mine.name,
             "live": folder / f"em-part-{live.pid}-test.pkl",
             "dead": folder / f"em-task-{dead.pid}-test.pkl",
             "reused": folder / f"em-task-{live.pid}-old.pkl",  # written before `live` began
             "legacy": folder / "em-task-0ld_test.pkl"}     # the old unnamed format, old
    try:
        for name in ("live", "dead", "reused", "legacy"):
            files[name].write_bytes(b"x")
        for name in ("reused", "legacy"):
            os.utime(files[name], (1e9, 1e9))
        removed = cleanup.remove_stale_task_files(str(folder))
        assert {files["dead"], files["reused"], files["legacy"]} <= {Path(p) for p in removed}
        assert [n for n, f in files.items() if f.exists()] == ["mine", "live"]
    finally:
        live.kill()
        live.wait()
        for f in files.values():
            f.unlink(missing_ok=True)
