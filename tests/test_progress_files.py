"""Damaged, foreign and locked progress files, with real runs of the main script.

A run is killed in the middle of EM (so both the progress file and its backup hold a
checkpoint with artifacts), then the progress file is damaged in each way a disk, an
editor or another tool could damage it.  With a good backup the rerun warns, keeps the
damaged file as ``*.damaged`` and ends with the uninterrupted run's results; without one it
exits 3 with one sentence and leaves the damaged file where it was.  A run resumed in its
output phase writes the same ``fit.json`` bytes (but for timings) as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
from pathlib import Path

import pytest

from tests.helpers import (ALL_SE, ALL_SE_DEBUG, FAST, TASK, assert_one_sentence,
                           assert_same_results, check_rc, copy_run, progress_path, read_progress,
                           reference_run, results_dir, run_script, start_script, stop,
                           try_read_progress, wait_for)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return reference_run(tmp_path_factory.getbasetemp() / "refs", ALL_SE_DEBUG)


@pytest.fixture(scope="module")
def killed_template(tmp_path_factory):
    """A run killed in EM: progress file, backup and checkpoint artifacts on disk."""
    folder = tmp_path_factory.mktemp("killed_in_em")
    proc = run_script(folder, *ALL_SE, fault="kill:model_estimation:10")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return folder


def _checksum(doc: dict) -> str:
    body = json.dumps({k: v for k, v in doc.items() if k != "checksum"}, sort_keys=True,
                      separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def _rewrite(path: Path, change) -> None:
    """Edit the JSON and store it with a correct checksum (a well-formed file)."""
    doc = json.loads(path.read_text())
    change(doc)
    doc["checksum"] = _checksum(doc)
    path.write_text(json.dumps(doc))


def _refs(doc: dict) -> set[str]:
    files = {f["file"] for r in doc["phase_results"].values() for f in r.get("files", [])}
    if doc.get("checkpoint"):
        files |= {f["file"] for f in doc["checkpoint"]["state"].get("files", [])}
    return files


def _damage(kind: str, cwd: Path) -> str:
    """Damage ``progress/{TASK}_progress.json`` in one way; return a word the message must hold."""
    path = progress_path(cwd)
    raw = path.read_bytes()
    if kind == "empty":
        path.write_bytes(b"")
        return "empty"
    if kind == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
        return "JSON"
    if kind == "not_json":
        path.write_bytes(b"\x00\x13 this is not JSON at all {{{")
        return "JSON"
    if kind == "wrong_shape":
        path.write_text(json.dumps({"task_name": TASK, "completed_phases": "all of them"}))
        return "fields"
    if kind == "checksum":
        doc = json.loads(raw)
        doc["step_count"] += 1  # a hand edit: the recorded checksum no longer matches
        path.write_text(json.dumps(doc))
        return "checksum"
    if kind == "future_schema":
        _rewrite(path, lambda d: d.update(schema_version=d["schema_version"] + 98))
        return "newer version"
    if kind == "missing_artifact":
        doc = json.loads(raw)
        backup = progress_path(cwd).with_name(path.name + ".bak")
        keep = _refs(json.loads(backup.read_text())) if backup.exists() else set()
        gone = _refs(doc) - keep
        assert gone, "the progress file should reference an artifact of its own"
        for name in gone:
            (cwd / "progress" / f"{TASK}_artifacts" / name).unlink()
        return "artifact"
    if kind == "foreign":
        _rewrite(path, lambda d: d.update(task_name="someone_else"))
        return "someone_else"
    raise AssertionError(kind)


KINDS = ["empty", "truncated", "not_json", "wrong_shape", "checksum", "future_schema",
         "missing_artifact", "foreign"]


@pytest.mark.parametrize("kind", KINDS)
def test_damaged_file_with_good_backup_resumes(tmp_path, killed_template, reference, kind):
    copy_run(killed_template, tmp_path)
    _damage(kind, tmp_path)
    damaged_bytes = progress_path(tmp_path).read_bytes()
    proc = run_script(tmp_path, *ALL_SE)
    check_rc(proc, 0)
    assert "Warning: progress file" in proc.stdout and "backup" in proc.stdout, proc.stdout
    assert "Traceback" not in proc.stderr
    kept = progress_path(tmp_path).with_name(f"{TASK}_progress.json.damaged")
    assert kept.read_bytes() == damaged_bytes
    assert_same_results(tmp_path, reference)
    assert read_progress(tmp_path)["status"] == "completed"


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "missing_artifact"])
def test_damaged_file_without_backup_exits_3_and_keeps_it(tmp_path, killed_template, kind):
    copy_run(killed_template, tmp_path)
    progress_path(tmp_path).with_name(f"{TASK}_progress.json.bak").unlink()
    word = _damage(kind, tmp_path)
    damaged_bytes = progress_path(tmp_path).read_bytes()
    proc = run_script(tmp_path, *ALL_SE)
    check_rc(proc, 3)
    assert_one_sentence(proc.stderr)
    assert word in proc.stderr
    assert progress_path(tmp_path).read_bytes() == damaged_bytes  # never destroyed
    assert not [f for f in (tmp_path / "results").rglob("*") if f.is_file()]  # no result written


def test_missing_checkpoint_artifact_without_backup_restarts_only_that_phase(
        tmp_path, killed_template, reference):
    """Without a backup, a missing checkpoint artifact costs only the running phase: it starts again and the results equal an uninterrupted run's."""
    copy_run(killed_template, tmp_path)
    progress_path(tmp_path).with_name(f"{TASK}_progress.json.bak").unlink()
    _damage("missing_artifact", tmp_path)
    proc = run_script(tmp_path, *ALL_SE)
    check_rc(proc, 0)
    assert "checkpoint of phase 'model_estimation'" in proc.stdout and "dropped" in proc.stdout
    assert "Phase 'data_preparation' already completed, skipping" in proc.stdout
    assert_same_results(tmp_path, reference)


def test_restart_after_damage_keeps_the_damaged_file(tmp_path, killed_template):
    """The exit-3 message offers --restart and promises the damaged file is kept."""
    copy_run(killed_template, tmp_path)
    progress_path(tmp_path).with_name(f"{TASK}_progress.json.bak").unlink()
    _damage("truncated", tmp_path)
    damaged_bytes = progress_path(tmp_path).read_bytes()
    refused = run_script(tmp_path, *FAST, "--se-method", "none")
    check_rc(refused, 3)
    assert "--restart" in refused.stderr and "kept" in refused.stderr
    check_rc(run_script(tmp_path, *FAST, "--se-method", "none", "--restart"), 0)
    kept = progress_path(tmp_path).with_name(f"{TASK}_progress.json.damaged")
    assert kept.read_bytes() == damaged_bytes
    assert read_progress(tmp_path)["status"] == "completed"


# ------------------------------------------------------------------- one task, one run
def test_second_run_refused_while_lock_held_in_process(tmp_path):
    from src.utils.estimation_progress import EstimationProgressTracker

    tracker = EstimationProgressTracker(progress_dir=tmp_path / "progress", notify=lambda m: None)
    tracker.start()
    try:
        proc = run_script(tmp_path, *FAST)
    finally:
        tracker.finish("completed")
    check_rc(proc, 3)
    assert_one_sentence(proc.stderr)
    assert f"process {os.getpid()}" in proc.stderr and TASK in proc.stderr


def test_second_run_refused_then_killed_run_does_not_block(tmp_path):
    slow = FAST + ("--se-method", "bootstrap", "--n-bootstrap", "20000")  # killed long before its end
    first = start_script(tmp_path, *slow)
    try:
        wait_for(lambda: (try_read_progress(progress_path(tmp_path)) or {}).get("current_phase")
                 == "standard_error_computation", proc=first, timeout=120, what="the SE phase")
        second = run_script(tmp_path, *slow)
        check_rc(second, 3)
        assert_one_sentence(second.stderr)
        assert f"process {first.pid}" in second.stderr
    finally:
        stop(first)  # SIGKILL: the OS drops the lock with the process
    assert first.returncode == -signal.SIGKILL
    # a cheaper rerun of the same task: its estimation is reused, its SE phase recomputed
    third = run_script(tmp_path, *FAST, "--se-method", "none", "--recompute-changed")
    check_rc(third, 0)
    assert "Phase 'model_estimation' already completed, skipping" in third.stdout


def test_deleted_progress_file_resumes_from_backup(tmp_path, killed_template, reference):
    copy_run(killed_template, tmp_path)
    progress_path(tmp_path).unlink()
    proc = run_script(tmp_path, *ALL_SE)
    check_rc(proc, 0)
    assert "is missing; the run resumes from its backup" in proc.stdout
    assert not progress_path(tmp_path).with_name(f"{TASK}_progress.json.damaged").exists()
    assert_same_results(tmp_path, reference)


def _fit_text_but_seconds(run: Path) -> str:
    text = (results_dir(run) / "fit.json").read_text(encoding="utf-8")
    return re.sub(r'"seconds": [^,\n]*', '"seconds": _', text)


def test_fit_json_after_a_resume_is_byte_identical_but_for_seconds(tmp_path, reference):
    """A run killed as its output phase began (so its results are read back from disk) then resumed writes the uninterrupted run's fit.json bytes but for its seconds."""
    proc = run_script(tmp_path, *ALL_SE, fault="kill:result_output:1")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    check_rc(run_script(tmp_path, *ALL_SE), 0)
    assert _fit_text_but_seconds(tmp_path) == _fit_text_but_seconds(reference)
