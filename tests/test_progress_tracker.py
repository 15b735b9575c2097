"""The tracker in-process: what it stores, when it writes, what it keeps on disk.

Real files in a temporary folder, no mocks: results with arrays, DataFrames, nested dicts
and non-finite floats come back equal bit for bit; values that cannot be stored without
pickling make their phase run again; the save policy, the backup, the artifact garbage
collection, the lock, the fields of the progress file and the state saved on the way out.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pandas as pd
import pytest

from src.utils.errors import FingerprintMismatch, TaskRunning, UsageError
from src.utils.estimation_progress import (SCHEMA_VERSION, EstimationProgressTracker,
                                           estimation_progress, resume_estimation_phase,
                                           task_paths, validate_task_name)
from src.progress.save_policy import IntervalPolicy
from tests.helpers import ALL_SE_DEBUG, reference_run


def _session(folder, messages=None, **kw):
    kw.setdefault("save_interval", 0)
    return estimation_progress(task_name="t", progress_dir=folder,
                               notify=(messages.append if messages is not None else lambda m: None),
                               **kw)


def _doc(folder, name="t_progress.json"):
    return json.loads((folder / name).read_text())


def _refs(doc):
    files = {f["file"] for r in doc["phase_results"].values() for f in r.get("files", [])}
    if doc.get("checkpoint"):
        files |= {f["file"] for f in doc["checkpoint"]["state"].get("files", [])}
    return files


def _rich_result():
    return {
        "matrix": np.arange(12, dtype=np.float64).reshape(3, 4) / 7.0,
        "ints": np.array([1, -2, 2**40], dtype=np.int64),
        "flags": np.array([True, False]),
        "with_nan": np.array([1.5, np.nan, np.inf, -np.inf]),
        "frame": pd.DataFrame({"a": [0.1, np.nan, 3.0], "b": ["x", "y", "z"]},
                              index=pd.Index([10, 20, 30], name="row")),
        "nested": {"deep": {"list": [1, 2.5, None, "s", True], "nan": math.nan,
                            "inf": math.inf, "ninf": -math.inf, "tiny": 5e-324}},
        "np_float": np.float64(0.1), "np_int": np.int32(7), "np_bool": np.bool_(True),
        "int_keys": {1: "one", 2: "two"},
        "empty": np.zeros((0, 3)),
    }


def _assert_same(a, b):
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()
    elif isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b)
    elif isinstance(a, dict):
        assert set(a) == set(b)
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b)
    else:
        assert a == b and type(b) in (type(a), int, float, bool), (a, b)


def test_rich_results_round_trip(tmp_path):
    original = _rich_result()
    with _session(tmp_path) as tr:
        resume_estimation_phase(tr, "p", lambda: original)
    messages = []

    def must_not_run():
        raise AssertionError("a completed phase ran again")

    with _session(tmp_path, messages) as tr:
        again = resume_estimation_phase(tr, "p", must_not_run)
    _assert_same(original, again)
    assert "Phase 'p' already completed, skipping" in messages
    assert not any(f.suffix == ".pkl" for f in (tmp_path / "t_artifacts").iterdir())


def test_unstorable_result_makes_the_phase_run_again(tmp_path):
    calls = []

    def phase():
        calls.append(1)
        return {"fine": np.ones(2), "odd": {1, 2}}

    messages = []
    with _session(tmp_path, messages) as tr:
        resume_estimation_phase(tr, "odd_phase", phase)
        resume_estimation_phase(tr, "next", lambda: 5)
    assert any("cannot be stored" in m for m in messages)
    assert "unstorable" in _doc(tmp_path)["phase_results"]["odd_phase"]
    with _session(tmp_path) as tr:
        assert resume_estimation_phase(tr, "odd_phase", phase)["odd"] == {1, 2}
        assert resume_estimation_phase(tr, "next", lambda: 6) == 5
    assert len(calls) == 2


def test_interval_policy_with_an_explicit_clock():
    p = IntervalPolicy(5)
    assert p.should_save(100.0)  # nothing saved yet
    p.saved(100.0)
    assert not p.should_save(100.0) and not p.should_save(104.999)
    assert p.should_save(105.0)
    zero = IntervalPolicy(0)
    zero.saved(1.0)
    assert zero.should_save(1.0)
    with pytest.raises(ValueError):
        IntervalPolicy(-1)


def test_checkpoints_wait_for_the_interval_but_boundaries_always_write(tmp_path):
    with _session(tmp_path, save_interval=3600) as tr:
        tr.begin_phase("slow")
        assert _doc(tmp_path)["current_phase"] == "slow"  # the boundary wrote
        before = (tmp_path / "t_progress.json").read_bytes()
        written = [tr.checkpoint({"i": i}) for i in range(50)]
        assert written == [False] * 50
        assert (tmp_path / "t_progress.json").read_bytes() == before
        assert tr.checkpoint({"i": 50}, force=True)
        assert _doc(tmp_path)["checkpoint"]["state"]["value"] == {"i": 50}
        tr.checkpoint({"i": 51})
        tr.complete_phase("slow", {"done": True})
        assert _doc(tmp_path)["completed_phases"] == ["slow"]
    with _session(tmp_path, save_interval=0) as tr:
        tr.begin_phase("fast")
        assert all(tr.checkpoint({"i": i}) for i in range(5))


def test_interrupt_saves_the_latest_unsaved_checkpoint(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with _session(tmp_path, save_interval=3600) as tr:
            tr.begin_phase("work")
            for i in range(10):
                tr.checkpoint({"i": i, "x": np.full(3, float(i))})
            raise KeyboardInterrupt
    doc = _doc(tmp_path)
    assert doc["status"] == "interrupted" and doc["end_reason"] == "SIGINT"
    with _session(tmp_path) as tr:
        tr.begin_phase("work")
        state = tr.resume_state()
        assert state["i"] == 9 and state["x"].tolist() == [9.0] * 3


def test_exception_is_recorded(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with _session(tmp_path) as tr:
            resume_estimation_phase(tr, "boom", lambda: 1 / 0)
    doc = _doc(tmp_path)
    assert doc["status"] == "failed" and doc["end_reason"].startswith("ZeroDivisionError")
    assert doc["current_phase"] == "boom" and doc["completed_phases"] == []


def test_backup_is_the_previous_file(tmp_path):
    with _session(tmp_path) as tr:
        tr.begin_phase("p")
        for i in range(4):
            before = (tmp_path / "t_progress.json").read_bytes()
            tr.checkpoint({"i": i, "a": np.arange(i + 1)})
            assert (tmp_path / "t_progress.json.bak").read_bytes() == before
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".tmp-")]


def test_temporaries_a_killed_write_left_are_removed_at_the_next_start(tmp_path):
    """Stray temporaries of the task's own files go when it starts again; another task's stay."""
    with _session(tmp_path) as tr:
        resume_estimation_phase(tr, "a", lambda: 1)
    stray = [".tmp-t_progress.json.k2j4h5g6", ".tmp-t_progress.json.bak.a1b2c3d4",
             ".tmp-t.owner.json.zz9yy8xx", ".tmp-t_progress.json.12345"]
    other = [".tmp-u_progress.json.k2j4h5g6", ".tmp-t_progress.json.note"]
    for name in stray + other:
        (tmp_path / name).write_bytes(b"{")
    with _session(tmp_path) as tr:
        assert resume_estimation_phase(tr, "a", lambda: 2) == 1
    assert sorted(p.name for p in tmp_path.glob(".tmp-*")) == sorted(other)


def test_artifacts_are_collected(tmp_path):
    folder = tmp_path / "t_artifacts"
    with _session(tmp_path) as tr:
        resume_estimation_phase(tr, "first", lambda: {"a": np.arange(4.0)})
        tr.begin_phase("second")
        for i in range(30):
            tr.checkpoint({"x": np.full(100, float(i))})
            on_disk = {f.name for f in folder.iterdir()}
            wanted = _refs(_doc(tmp_path)) | _refs(_doc(tmp_path, "t_progress.json.bak"))
            assert on_disk == wanted
        tr.complete_phase("second", {"b": np.ones(2)})
    on_disk = {f.name for f in folder.iterdir()}
    assert len(on_disk) <= 4  # two results and at most one checkpoint of each kept file
    assert _refs(_doc(tmp_path)) <= on_disk


def test_progress_file_has_every_spec_field(tmp_path):
    with _session(tmp_path) as tr:
        resume_estimation_phase(tr, "data_preparation", lambda: {"n": 3})
        resume_estimation_phase(tr, "model_estimation", lambda: {"w": np.ones(2)})
    doc = _doc(tmp_path)
    types = {"task_name": str, "current_phase": str, "completed_phases": list,
             "phase_results": dict, "start_time": float, "last_update": float,
             "step_count": int, "is_resumed": bool, "schema_version": int}
    for field, kind in types.items():
        assert isinstance(doc[field], kind), field
    assert doc["task_name"] == "t" and doc["schema_version"] == SCHEMA_VERSION
    assert doc["completed_phases"] == ["data_preparation", "model_estimation"]
    assert doc["step_count"] == 2 and doc["is_resumed"] is False
    assert doc["last_update"] >= doc["start_time"]
    assert doc["status"] == "completed" and doc["end_reason"] is None
    first_start = doc["start_time"]
    with _session(tmp_path) as tr:
        pass
    doc = _doc(tmp_path)
    assert doc["is_resumed"] is True and doc["start_time"] == first_start


def test_size_of_a_typical_progress_file(tmp_path_factory):
    """Measured, printed, and bounded loosely (the user's document says 1-10 KB)."""
    run = reference_run(tmp_path_factory.getbasetemp() / "refs", ALL_SE_DEBUG)
    path = run / "progress" / "main_estimation_progress.json"
    artifacts = sum(f.stat().st_size for f in (run / "progress" / "main_estimation_artifacts").iterdir())
    print(f"\nprogress file after a run with --se-method all: {path.stat().st_size} bytes "
          f"(+ {artifacts} bytes of .npz artifacts)")
    assert 0 < path.stat().st_size < 100_000


def test_second_tracker_of_a_task_is_refused(tmp_path):
    first = EstimationProgressTracker("t", 0, tmp_path, notify=lambda m: None).start()
    try:
        with pytest.raises(TaskRunning, match=f"process {os.getpid()}"):
            EstimationProgressTracker("t", 0, tmp_path, notify=lambda m: None).start()
        EstimationProgressTracker("other", 0, tmp_path, notify=lambda m: None).start().finish("completed")
    finally:
        first.finish("completed")
    EstimationProgressTracker("t", 0, tmp_path, notify=lambda m: None).start().finish("completed")


def test_disabled_tracker_touches_no_file(tmp_path):
    folder = tmp_path / "never"
    with _session(folder, enabled=False) as tr:
        assert resume_estimation_phase(tr, "p", lambda: np.ones(3)).sum() == 3
        tr.begin_phase("q")
        assert tr.checkpoint({"a": 1}, force=True) is False
    assert not folder.exists()


def test_fingerprints_refuse_or_recompute(tmp_path):
    fp = {"a": {"x": 1}, "b": {"x": 1, "y": 1}}
    with _session(tmp_path, fingerprints=fp) as tr:
        resume_estimation_phase(tr, "a", lambda: 1)
        resume_estimation_phase(tr, "b", lambda: 2)
    changed = {"a": {"x": 1}, "b": {"x": 1, "y": 2}}
    with pytest.raises(FingerprintMismatch, match=r"y: 1 -> 2.*affects b"):
        with _session(tmp_path, fingerprints=changed):
            pass
    messages = []
    with _session(tmp_path, messages, fingerprints=changed, recompute_changed=True) as tr:
        assert resume_estimation_phase(tr, "a", lambda: 10) == 1
        assert resume_estimation_phase(tr, "b", lambda: 20) == 20
    assert any("recomputing b" in m for m in messages)


def test_a_phase_outside_the_known_phases_is_refused_at_once(tmp_path):
    """Given ``phases=``, an unknown name is a ValueError before anything is stored, so the
    next run resumes cleanly (it used to find its own progress file damaged, exit 3)."""
    ran = []
    with pytest.raises(ValueError, match=r"'typo'.*\(a, b\).*src\.config\.PHASES"):
        with _session(tmp_path, phases=["a", "b"]) as tr:
            resume_estimation_phase(tr, "a", lambda: 1)
            resume_estimation_phase(tr, "typo", lambda: ran.append("typo"))
    assert ran == []
    doc = _doc(tmp_path)
    assert (doc["current_phase"], doc["completed_phases"], doc["status"]) == ("a", ["a"], "failed")
    with _session(tmp_path, phases=["a", "b"]) as tr:
        with pytest.raises(ValueError, match="typo"):
            tr.begin_phase("typo")
        with pytest.raises(ValueError, match="typo"):
            tr.complete_phase("typo", 1)
        assert resume_estimation_phase(tr, "a", lambda: 2) == 1   # resumed, not damaged
        assert resume_estimation_phase(tr, "b", lambda: 3) == 3
    with _session(tmp_path / "off", enabled=False, phases=["a"]) as tr:
        with pytest.raises(ValueError, match="typo"):   # the same mistake untracked
            resume_estimation_phase(tr, "typo", lambda: ran.append("typo"))
    assert ran == []


@pytest.mark.parametrize("name", ["../x", "/abs", "", "a" * 101, "a/b", ".hidden", "a\x00b", "é"])
def test_task_names_that_could_escape_are_refused(tmp_path, name):
    with pytest.raises(UsageError):
        validate_task_name(name)
    with pytest.raises(UsageError):
        EstimationProgressTracker(name, 0, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_allowed_task_names_stay_inside_the_folder(tmp_path):
    for name in ["a" * 100, "A.b_c-9", "0"]:
        assert validate_task_name(name) == name
        for path in task_paths(tmp_path, name).values():
            assert path.parent == tmp_path
