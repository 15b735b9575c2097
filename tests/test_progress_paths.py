"""Task paths that are symbolic links, and names that only look safe.

Real folders and real symbolic links: a task whose files are links into another folder is
refused before anything is opened, written or deleted through them (exit 3, one sentence),
artifact garbage collection never follows a link, and task and phase names must match in
full (a trailing newline is not allowed).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from src.progress.artifacts import collect_garbage
from src.progress.paths import ProgressPathUnsafe, check_task_paths, validate_phase_name
from src.utils.errors import ProgressError, UsageError
from src.utils.estimation_progress import (estimation_progress, resume_estimation_phase,
                                           task_paths, validate_task_name)
from tests.helpers import FAST, assert_one_sentence, check_rc, run_script


def _session(folder, **kw):
    return estimation_progress(task_name="t", progress_dir=folder, save_interval=0,
                               notify=lambda m: None, **kw)


def _victim(tmp_path):
    """A folder of unrelated files that must survive."""
    victim = tmp_path / "victim"
    victim.mkdir()
    for name in ("thesis.tex", "data.csv", "notes.txt"):
        (victim / name).write_text(name)
    return victim


def _victim_intact(victim):
    return sorted(p.name for p in victim.iterdir()) == ["data.csv", "notes.txt", "thesis.tex"]


def test_symlinked_artifact_folder_is_refused_and_its_target_untouched(tmp_path):
    """A `{task}_artifacts` link to another folder is refused and no file there is deleted."""
    progress = tmp_path / "progress"
    progress.mkdir()
    victim = _victim(tmp_path)
    os.symlink(victim, progress / "t_artifacts")
    with pytest.raises(ProgressPathUnsafe, match="t_artifacts"):
        with _session(progress) as tr:
            resume_estimation_phase(tr, "a", lambda: {"x": np.arange(3.0)})
            tr.begin_phase("b")
            for i in range(3):
                tr.checkpoint({"y": np.full(2, float(i))})
    assert _victim_intact(victim)
    assert ProgressPathUnsafe.exit_code == 3 and issubclass(ProgressPathUnsafe, ProgressError)


@pytest.mark.parametrize("key", ["progress", "backup", "damaged", "artifacts", "lock", "owner"])
def test_every_task_path_that_is_a_symlink_is_refused(tmp_path, key):
    """Whichever of the task's six paths is a link, the run is refused and the target unchanged."""
    progress = tmp_path / "progress"
    progress.mkdir()
    target = tmp_path / "target"
    if key == "artifacts":
        target.mkdir()
        (target / "keep.npz").write_bytes(b"precious")
    else:
        target.write_bytes(b"precious")
    link = task_paths(progress, "t")[key]
    os.symlink(target, link)
    with pytest.raises(ProgressPathUnsafe) as err:
        check_task_paths(task_paths(progress, "t"))
    assert str(link) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ProgressPathUnsafe):
        with _session(progress) as tr:
            resume_estimation_phase(tr, "a", lambda: {"x": np.arange(3.0)})
    if key == "artifacts":
        assert [p.name for p in target.iterdir()] == ["keep.npz"]
        assert (target / "keep.npz").read_bytes() == b"precious"
    else:
        assert target.read_bytes() == b"precious"
    assert os.path.islink(link)


def test_no_symlink_passes_the_check(tmp_path):
    """A task with real files (or none yet) passes check_task_paths."""
    check_task_paths(task_paths(tmp_path, "t"))
    with _session(tmp_path) as tr:
        resume_estimation_phase(tr, "a", lambda: {"x": np.arange(3.0)})
    check_task_paths(task_paths(tmp_path, "t"))


def test_garbage_collection_never_follows_links(tmp_path):
    """collect_garbage refuses a linked folder and removes links inside a folder as links only."""
    victim = _victim(tmp_path)
    linked = tmp_path / "linked"
    os.symlink(victim, linked)
    with pytest.raises(OSError):
        collect_garbage(linked, keep=())
    assert _victim_intact(victim)
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(victim / "data.csv", real / "result-a-0123456789abcdef.npz")
    (real / "old-0123456789abcdef.npz").write_bytes(b"x")
    (real / "result-b-0123456789abcdef.npz.damaged").write_bytes(b"kept for the user")
    (real / "sub").mkdir()
    assert collect_garbage(real, keep=()) == 2
    assert sorted(p.name for p in real.iterdir()) == ["result-b-0123456789abcdef.npz.damaged", "sub"]
    assert _victim_intact(victim)


def test_main_script_refuses_a_symlinked_artifact_folder(tmp_path):
    """Through the main script the refusal is exit 3 with one sentence, the target untouched."""
    progress = tmp_path / "progress"
    progress.mkdir()
    victim = _victim(tmp_path)
    os.symlink(victim, progress / "main_estimation_artifacts")
    proc = run_script(tmp_path, *FAST, "--se-method", "none")
    check_rc(proc, 3)
    assert_one_sentence(proc.stderr)
    assert "symbolic link" in proc.stderr
    assert _victim_intact(victim)


@pytest.mark.parametrize("name", ["task\n", "a\n", "main_estimation\n"])
def test_names_ending_in_a_newline_are_refused(tmp_path, name):
    """`$` matches before a final newline; a full match does not, so 'x\\n' is refused."""
    with pytest.raises(UsageError):
        validate_task_name(name)
    with pytest.raises(UsageError):
        validate_phase_name(name)
    with pytest.raises(UsageError):
        with _session(tmp_path) as tr:
            resume_estimation_phase(tr, name, lambda: 1)


def test_phase_names_that_could_escape_the_artifact_folder_are_refused(tmp_path):
    """A phase name becomes part of an artifact file name, so '../x' is refused before any write."""
    with pytest.raises(UsageError):
        with _session(tmp_path / "p") as tr:
            resume_estimation_phase(tr, "../escape", lambda: {"x": np.ones(2)})
    assert not list(tmp_path.glob("*escape*")) and not list(tmp_path.rglob("*escape*"))
