"""``scripts/manage_progress.py``: check, list and clean, run as real subprocesses.

The progress folder holds a completed task (a real run), a task interrupted by SIGTERM
(a tracker driven in-process) and, where needed, a task killed by SIGKILL or one whose lock
the test process holds (running now).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from src.progress import files as progress_files
from src.utils.estimation_progress import EstimationProgressTracker
from tests.helpers import (FAST, MANAGE, ROOT, TASK, assert_one_sentence, check_rc, copy_run,
                           reference_run, run_manage, run_script, script_env)

PHASES = ["data_preparation", "model_estimation", "standard_error_computation", "result_output"]


@pytest.fixture(scope="module")
def completed(tmp_path_factory):
    return reference_run(tmp_path_factory.getbasetemp() / "refs", FAST + ("--se-method", "louis"))


def _tracker(folder, task):
    return EstimationProgressTracker(task, 0, folder / "progress", notify=lambda m: None)


def _left(folder):
    """Entries left in a progress folder, lock files apart (clean never deletes one)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def _interrupted_task(folder, task="second"):
    tr = _tracker(folder, task).start()
    tr.begin_phase("data_preparation")
    tr.checkpoint({"rows": np.arange(5.0)}, force=True)
    tr.finish("interrupted", "SIGTERM")


@pytest.fixture
def store(tmp_path, completed):
    copy_run(completed, tmp_path, results=False)
    _interrupted_task(tmp_path)
    return tmp_path


def test_check_all_tasks(store):
    proc = run_manage(store, "check")
    check_rc(proc, 0)
    out = proc.stdout
    assert f"Task '{TASK}'" in out and "Task 'second'" in out
    assert "completed phases:  " + ", ".join(PHASES) in out
    assert "last run ended:    completed" in out
    assert "last run ended:    interrupted (SIGTERM)" in out
    assert out.count("running now:       no") == 2


def test_check_one_task_json(store):
    proc = run_manage(store, "check", "--task", "second", "--json")
    check_rc(proc, 0)
    [info] = json.loads(proc.stdout)
    assert info["task_name"] == "second" and info["running"] is False
    assert info["current_phase"] == "data_preparation" and info["completed_phases"] == []
    assert info["status"] == "interrupted" and info["end_reason"] == "SIGTERM"
    assert info["step_count"] == 1 and info["checkpoints"] == 1
    assert info["elapsed_seconds"] >= 0 and info["last_update"] >= info["start_time"]
    names = {os.path.basename(f["path"]) for f in info["files"]}
    assert {"second_progress.json", "second_progress.json.bak", "second_artifacts"} <= names


def test_list_json_and_text(store):
    proc = run_manage(store, "list", "--json")
    check_rc(proc, 0)
    rows = json.loads(proc.stdout)
    by_name = {os.path.basename(r["path"]): r for r in rows}
    for task in (TASK, "second"):
        assert by_name[f"{task}_progress.json"]["bytes"] > 0
        assert by_name[f"{task}_artifacts"]["bytes"] > 0  # npz files inside
        assert by_name[f"{task}_progress.json.bak"]["task_name"] == task
    assert all(r["age_seconds"] >= 0 for r in rows)
    assert not any(n.endswith(".lock") for n in by_name)
    text = run_manage(store, "list")
    check_rc(text, 0)
    assert len(text.stdout.strip().splitlines()) == len(rows)


def test_clean_one_task_then_all(store):
    proc = run_manage(store, "clean", "--task", "second")
    check_rc(proc, 0)
    left = _left(store / "progress")
    assert not any(n.startswith("second") for n in left)
    assert f"{TASK}_progress.json" in left
    check_rc(run_manage(store, "clean"), 0)
    assert _left(store / "progress") == []
    assert "No progress files" in run_manage(store, "check").stdout


def test_clean_refuses_a_running_task(store):
    tr = _tracker(store, "busy").start()
    try:
        check = run_manage(store, "check", "--task", "busy")
        assert f"running now:       yes, pid {os.getpid()}" in check.stdout
        refused = run_manage(store, "clean")
        check_rc(refused, 3)
        assert_one_sentence(refused.stderr)
        assert "busy" in refused.stderr and str(os.getpid()) in refused.stderr
        assert (store / "progress" / f"{TASK}_progress.json").exists()  # nothing removed
        check_rc(run_manage(store, "clean", "--task", "second"), 0)  # others can go
    finally:
        tr.finish("completed")
    check_rc(run_manage(store, "clean", "--task", "busy"), 0)


def test_killed_run_shows_as_killed(tmp_path):
    proc = run_script(tmp_path, *FAST, "--se-method", "none", fault="kill:model_estimation:3")
    assert proc.returncode == -signal.SIGKILL
    [info] = json.loads(run_manage(tmp_path, "check", "--json").stdout)
    assert info["status"] == "killed" and info["running"] is False
    assert info["completed_phases"] == ["data_preparation"]


@pytest.mark.parametrize("args", [("check", "--task", "../x"), ("clean", "--task", "a/b"),
                                  ("clean", "--task=.hidden")])
def test_hostile_task_is_refused(tmp_path, args):
    proc = run_manage(tmp_path, *args)
    check_rc(proc, 2)
    assert_one_sentence(proc.stderr)


def test_progress_dir_option_and_empty_folder(tmp_path):
    _interrupted_task(tmp_path, "elsewhere")
    (tmp_path / "progress").rename(tmp_path / "custom")
    proc = run_manage(tmp_path, "check", "--progress-dir", "custom")
    assert "Task 'elsewhere'" in proc.stdout
    assert "No progress files" in run_manage(tmp_path, "list").stdout  # default folder: none
    check_rc(run_manage(tmp_path, "clean", "--progress-dir", str(tmp_path / "custom")), 0)
    assert _left(tmp_path / "custom") == []


def test_check_shows_a_damaged_file_from_its_backup(store):
    path = store / "progress" / "second_progress.json"
    path.write_bytes(path.read_bytes()[:40])
    proc = run_manage(store, "check", "--task", "second")
    check_rc(proc, 0)
    assert "not valid JSON" in proc.stdout and "shown from its backup" in proc.stdout
    assert "current phase:     data_preparation" in proc.stdout
    assert path.read_bytes()  # looking never changes anything


# ------------------------------------------------ option position, lock, symlinks, temps
@pytest.mark.parametrize("command", ["check", "list", "clean"])
@pytest.mark.parametrize("before", [True, False])
def test_progress_dir_and_lang_work_before_or_after_the_sub_command(tmp_path, command, before):
    """--progress-dir and --lang are obeyed on either side of the sub-command, for every sub-command."""
    _interrupted_task(tmp_path, "elsewhere")
    (tmp_path / "progress").rename(tmp_path / "other")
    _interrupted_task(tmp_path, "default_one")  # ./progress must be left alone
    options = ["--progress-dir", "other", "--lang", "zh"]
    proc = run_manage(tmp_path, *(options + [command] if before else [command] + options))
    check_rc(proc, 0)
    if command == "check":
        assert "任务 'elsewhere'" in proc.stdout and "default_one" not in proc.stdout
    elif command == "list":
        assert "elsewhere_progress.json" in proc.stdout and "default_one" not in proc.stdout
    else:
        assert "已从 other 删除" in proc.stdout
        assert _left(tmp_path / "other") == []
    assert (tmp_path / "progress" / "default_one_progress.json").exists()


def test_main_script_check_and_clean_use_the_progress_dir_given(tmp_path):
    """02_run_estimation.py --progress-dir X --check-progress / --clean-progress act on X only."""
    _interrupted_task(tmp_path, "elsewhere")
    (tmp_path / "progress").rename(tmp_path / "other")
    _interrupted_task(tmp_path, "default_one")
    check = run_script(tmp_path, "--progress-dir", "other", "--check-progress")
    check_rc(check, 0)
    assert "Task 'elsewhere'" in check.stdout and "default_one" not in check.stdout
    check_rc(run_script(tmp_path, "--progress-dir", "other", "--clean-progress"), 0)
    assert _left(tmp_path / "other") == []
    assert (tmp_path / "progress" / "default_one_progress.json").exists()


def test_clean_keeps_the_lock_file_and_a_lone_lock_file_is_no_progress(store):
    """clean leaves {task}.lock in place (a run may hold it), and check/list then show no progress for it."""
    check_rc(run_manage(store, "clean", "--task", "second"), 0)
    assert (store / "progress" / "second.lock").exists()
    check = run_manage(store, "check", "--json")
    assert [i["task_name"] for i in json.loads(check.stdout)] == [TASK]
    rows = json.loads(run_manage(store, "list", "--json").stdout)
    assert rows and all(r["task_name"] == TASK for r in rows)


HOLDER = """
import sys
sys.path.insert(0, sys.argv[1])
from src.progress.lock import TaskLock
lock = TaskLock("second", sys.argv[2] + "/second.lock", sys.argv[2] + "/second.owner.json")
lock.acquire()
lock.write_owner()
print("held", flush=True)
sys.stdin.read()
lock.release()
"""


def test_clean_refuses_while_another_process_holds_the_lock(store):
    """A task whose lock a second process holds is refused with exit 3 naming that process, and nothing is deleted."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(ROOT), str(store / "progress")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env=script_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        before = sorted(p.name for p in (store / "progress").iterdir())
        refused = run_manage(store, "clean", "--task", "second")
        check_rc(refused, 3)
        assert_one_sentence(refused.stderr)
        assert f"process {holder.pid}" in refused.stderr
        check_rc(run_manage(store, "clean"), 3)  # cleaning everything is refused as a whole
        assert sorted(p.name for p in (store / "progress").iterdir()) == before
    finally:
        holder.communicate("", timeout=30)
    assert holder.returncode == 0
    check_rc(run_manage(store, "clean", "--task", "second"), 0)
    assert not (store / "progress" / "second_progress.json").exists()


def test_clean_holds_the_task_lock_while_it_deletes(store):
    """While clean deletes a task's files it holds the task's lock: a run of that task started meanwhile exits 3 naming the cleaner."""
    seen = []

    def start_a_run(tasks):
        seen.append(tasks)
        seen.append(run_script(store, *FAST, "--se-method", "none", "--task-name", "second"))

    progress_files.clean(store / "progress", "second", while_locked=start_a_run)
    tasks, proc = seen
    assert tasks == ["second"]
    check_rc(proc, 3)
    assert f"process {os.getpid()}" in proc.stderr
    assert not (store / "progress" / "second_progress.json").exists()
    assert not (store / "progress" / "second_artifacts").exists()


def test_clean_never_follows_a_symlinked_artifacts_folder(store, tmp_path_factory):
    """A task whose artifacts folder is a symlink is refused (exit 3) and the link's target keeps its files."""
    target = tmp_path_factory.mktemp("someone_elses")
    (target / "data.npz").write_bytes(b"precious")
    artifacts = store / "progress" / "second_artifacts"
    shutil.rmtree(artifacts)
    artifacts.symlink_to(target, target_is_directory=True)
    for args in (("clean", "--task", "second"), ("clean",)):
        proc = run_manage(store, *args)
        check_rc(proc, 3)
        assert_one_sentence(proc.stderr)
        assert "second_artifacts" in proc.stderr and "symbolic link" in proc.stderr
    assert (target / "data.npz").read_bytes() == b"precious"
    assert artifacts.is_symlink()
    assert (store / "progress" / "second_progress.json").exists()


def test_clean_removes_stray_temporary_files_without_following_them(store, tmp_path_factory):
    """clean removes a task's leftover temporaries (progress, backup, owner), symlinks as links, and no other task's."""
    victim = tmp_path_factory.mktemp("victim") / "file"
    victim.write_bytes(b"precious")
    folder = store / "progress"
    (folder / ".tmp-second_progress.json.k3j_x9q2").write_bytes(b"half a write")
    (folder / ".tmp-second_progress.json.bak.a1b2c3d4").symlink_to(victim)
    (folder / ".tmp-second.owner.json.zz11yy22").write_bytes(b"{}")
    other = folder / ".tmp-second2_progress.json.abcdefgh"
    other.write_bytes(b"another task's write")
    check_rc(run_manage(store, "clean", "--task", "second"), 0)
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".tmp-second.")
                or p.name.startswith(".tmp-second_")]
    assert victim.read_bytes() == b"precious"
    assert other.exists()


def test_check_reports_a_file_that_fails_its_checksum(store):
    """A hand-edited progress file (valid JSON, wrong checksum) is reported as damaged and the good backup is shown, saying so."""
    path = store / "progress" / "second_progress.json"
    doc = json.loads(path.read_text())
    doc["step_count"] += 5
    path.write_text(json.dumps(doc))
    proc = run_manage(store, "check", "--task", "second")
    check_rc(proc, 0)
    assert "damaged (fails its checksum)" in proc.stdout
    assert "shown from its backup, which passes its checks" in proc.stdout
    [info] = json.loads(run_manage(store, "check", "--task", "second", "--json").stdout)
    assert info["read_from"] == "backup" and info["problem"] == "damaged (fails its checksum)"
    assert info["step_count"] != doc["step_count"]  # the edited number is not shown


def test_check_with_no_good_copy_shows_no_content(store):
    """With both the progress file and its backup unusable (their artifacts gone), check shows why and no phases."""
    shutil.rmtree(store / "progress" / "second_artifacts")
    proc = run_manage(store, "check", "--task", "second")
    check_rc(proc, 0)
    assert "progress file: damaged (refers to a missing or changed artifact" in proc.stdout
    assert "backup:        damaged (refers to a missing or changed artifact" in proc.stdout
    assert "current phase" not in proc.stdout


def test_list_into_a_closed_pipe_exits_quietly(store):
    """``manage_progress.py list | head -0`` ends without a traceback or an error message (exit 141, like SIGPIPE)."""
    proc = subprocess.Popen([sys.executable, str(MANAGE), "list"], cwd=store, env=script_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before anything is written
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert proc.returncode == 141, err
    assert err == ""


def test_clean_with_an_unusable_lock_path_refuses_in_one_sentence(store):
    """A folder where a task's lock file should be makes clean refuse with exit 3 in one sentence, removing nothing."""
    lock = store / "progress" / "second.lock"
    lock.unlink(missing_ok=True)
    lock.mkdir()
    before = sorted(p.name for p in (store / "progress").iterdir())
    proc = run_manage(store, "clean")
    check_rc(proc, 3)
    assert_one_sentence(proc.stderr)
    assert "second.lock" in proc.stderr
    assert sorted(p.name for p in (store / "progress").iterdir()) == before
