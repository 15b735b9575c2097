"""``scripts/manage_progress.py``: check, list and clean, run as real subprocesses.

The progress folder holds a completed task (a real run), a task interrupted by SIGTERM
(a tracker driven in-process) and, where needed, a task killed by SIGKILL or one whose lock
the test process holds (running now).
"""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest

from src.utils.estimation_progress import EstimationProgressTracker
from tests.helpers import (FAST, TASK, assert_one_sentence, check_rc, copy_run, reference_run,
                           run_manage, run_script)

PHASES = ["data_preparation", "model_estimation", "standard_error_computation", "result_output"]


@pytest.fixture(scope="module")
def completed(tmp_path_factory):
    return reference_run(tmp_path_factory.getbasetemp() / "refs", FAST + ("--se-method", "louis"))


def _tracker(folder, task):
    return EstimationProgressTracker(task, 0, folder / "progress", notify=lambda m: None)


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
    left = sorted(p.name for p in (store / "progress").iterdir())
    assert not any(n.startswith("second") for n in left)
    assert f"{TASK}_progress.json" in left
    check_rc(run_manage(store, "clean"), 0)
    assert list((store / "progress").iterdir()) == []
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
    assert list((tmp_path / "custom").iterdir()) == []


def test_check_shows_a_damaged_file_from_its_backup(store):
    path = store / "progress" / "second_progress.json"
    path.write_bytes(path.read_bytes()[:40])
    proc = run_manage(store, "check", "--task", "second")
    check_rc(proc, 0)
    assert "not valid JSON" in proc.stdout and "shown from its backup" in proc.stdout
    assert "current phase:     data_preparation" in proc.stdout
    assert path.read_bytes()  # looking never changes anything
