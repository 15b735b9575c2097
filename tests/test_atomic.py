"""``src/progress/atomic.py``: temporary files that cannot be hijacked and never outlive a failure.

A folder shared with other accounts may hold anything at the old predictable temporary
names (``.tmp-NAME.PID``); writes must neither follow a symlink planted there nor leave one
in place of the file.  A real failure (the file-size limit of ``setrlimit``, which makes
``write`` fail with EFBIG as on a full disk) must leave no temporary file behind.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
from pathlib import Path

import pytest

from src.progress.atomic import (TMP_PREFIX, atomic_write_bytes, replace_with_link,
                                 temp_pattern)


@contextlib.contextmanager
def file_size_limit(limit: int):
    """Writes beyond ``limit`` bytes fail with EFBIG in this process (SIGXFSZ ignored)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(TMP_PREFIX))


def test_symlink_planted_at_the_old_temporary_name_is_not_followed(tmp_path):
    """A symlink at ``.tmp-NAME.PID`` neither receives the data nor becomes the file."""
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    folder = tmp_path / "shared"
    folder.mkdir()
    target = folder / "estimates.csv"
    (folder / f"{TMP_PREFIX}{target.name}.{os.getpid()}").symlink_to(victim)
    atomic_write_bytes(target, b"new results\n")
    assert victim.read_bytes() == b"precious"
    assert not target.is_symlink() and target.read_bytes() == b"new results\n"


def test_symlink_at_the_target_is_replaced_not_written_through(tmp_path):
    """A symlink at the target name is replaced by a regular file; its target is untouched."""
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    target = tmp_path / "fit.json"
    target.symlink_to(victim)
    atomic_write_bytes(target, b"{}\n")
    assert victim.read_bytes() == b"precious"
    assert not target.is_symlink() and target.read_bytes() == b"{}\n"


def test_failed_write_removes_its_temporary_and_keeps_the_old_file(tmp_path):
    """A write that fails half-way (EFBIG) leaves the old file and no temporary file."""
    target = tmp_path / "report.md"
    target.write_bytes(b"old")
    with file_size_limit(1000), pytest.raises(OSError):
        atomic_write_bytes(target, b"x" * 5000)
    assert target.read_bytes() == b"old"
    assert _temps(tmp_path) == []


def test_written_files_get_the_usual_permissions(tmp_path):
    """Written files get the usual permissions (0644 less the umask), not mkstemp's 0600."""
    target = tmp_path / "estimates.csv"
    atomic_write_bytes(target, b"a\n")
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o644 & ~mask


def test_backup_link_ignores_a_dangling_symlink_at_the_old_temporary_name(tmp_path):
    """A dangling symlink at ``.tmp-BACKUP.PID`` is neither created through nor renamed into the backup."""
    main = tmp_path / "t_progress.json"
    main.write_bytes(b"progress v1")
    backup = tmp_path / "t_progress.json.bak"
    victim = tmp_path / "elsewhere" / "created-by-the-run"
    victim.parent.mkdir()
    (tmp_path / f"{TMP_PREFIX}{backup.name}.{os.getpid()}").symlink_to(victim)
    replace_with_link(main, backup)
    assert not victim.exists()
    assert not backup.is_symlink() and backup.read_bytes() == b"progress v1"
    assert os.path.samestat(backup.stat(), main.stat())  # a hard link, not a copy


def test_backup_of_a_symlinked_progress_file_is_refused(tmp_path):
    """A progress file that is a symlink is not linked or copied into the backup."""
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"someone else's file")
    main = tmp_path / "t_progress.json"
    main.symlink_to(victim)
    backup = tmp_path / "t_progress.json.bak"
    with pytest.raises(OSError):
        replace_with_link(main, backup)
    assert not os.path.lexists(backup)
    assert _temps(tmp_path) == []


def test_temp_pattern_matches_only_the_temporaries_of_one_file():
    """The cleaner's pattern matches this file's temporaries (new and old naming), not another task's."""
    pattern = temp_pattern("a_progress.json")
    assert pattern.match(".tmp-a_progress.json.k3j_x9q2")
    assert pattern.match(".tmp-a_progress.json.12345")  # the old naming, by pid
    assert not pattern.match(".tmp-a_progress.json.x_progress.json.k3j_x9q2")
    assert not pattern.match(".tmp-ab_progress.json.k3j_x9q2")
    assert not pattern.match("a_progress.json")


def test_backup_that_already_is_the_file_leaves_no_temporary(tmp_path):
    """When the backup already is a link to the progress file (a run killed between backup and write), rotating it again leaves no temporary."""
    main, backup = tmp_path / "t_progress.json", tmp_path / "t_progress.json.bak"
    main.write_bytes(b"{}")
    os.link(main, backup)
    replace_with_link(main, backup)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t_progress.json", "t_progress.json.bak"]
    assert backup.read_bytes() == b"{}"


def _set(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_file_set_puts_files_in_place_in_the_order_added_with_the_manifest_last(tmp_path):
    """FileSet writes each file in its threads, renames them in the order added, the manifest last, and gives each file's SHA-256."""
    from src.progress.atomic import FileSet, sha256_bytes

    files = {"b.csv": b"1,2\n" * 100_000, "a.json": b"{}\n", "c.png": b"\x89PNG"}
    with FileSet(tmp_path) as fset:
        for name, data in files.items():
            fset.add(name, data)
        assert "a.json" in fset and fset.sha256("b.csv") == sha256_bytes(files["b.csv"])
        written = fset.commit(("manifest.json", b"m\n"), remove=["old.txt"])
    assert [p.name for p in written] == [*files, "manifest.json"]
    assert _set(tmp_path) == {**files, "manifest.json": b"m\n"}


def test_file_set_left_without_commit_removes_its_temporaries(tmp_path):
    """An error while the set is being made (before commit) leaves the earlier files as they were and no temporary."""
    from src.progress.atomic import FileSet

    (tmp_path / "a.csv").write_bytes(b"old")
    with pytest.raises(RuntimeError), FileSet(tmp_path) as fset:
        fset.add("a.csv", b"new" * 1000)
        fset.add("b.csv", b"more")
        raise RuntimeError("the report failed")
    assert _set(tmp_path) == {"a.csv": b"old"}


def test_file_set_write_failing_in_its_thread_is_raised_by_commit(tmp_path):
    """A write its thread could not finish (EFBIG, as on a full disk) is raised by commit; the old files stay and no temporary is left."""
    from src.progress.atomic import FileSet

    (tmp_path / "a.csv").write_bytes(b"old")
    with FileSet(tmp_path) as fset:
        fset.add("a.csv", b"small")
        with file_size_limit(1000):
            fset.add("b.csv", b"x" * 5000)
            with pytest.raises(OSError):
                fset.commit(("manifest.json", b"m\n"))
    assert _set(tmp_path) == {"a.csv": b"old"}


def test_file_set_removes_stray_temporaries_but_its_own(tmp_path):
    """commit(strays=...) removes what an interrupted earlier write of those names left, never the set's own temporaries."""
    from src.progress.atomic import FileSet

    stray = tmp_path / f"{TMP_PREFIX}a.csv.zz_9x8y7"
    stray.write_bytes(b"half a file")
    with FileSet(tmp_path) as fset:
        fset.add("a.csv", b"new")
        fset.commit(("manifest.json", b"m\n"), strays=["a.csv", "manifest.json"])
    assert _set(tmp_path) == {"a.csv": b"new", "manifest.json": b"m\n"}
