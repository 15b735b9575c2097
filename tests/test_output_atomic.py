"""The result files of a run appear together or not at all (``write_all``, ``write_file_set``).

The numbers come from a real run's stored phase results; the failures are real: a file-size
limit (``setrlimit``, ``write`` fails with EFBIG as on a full disk) that stops the second
file half-way, and a folder standing at the name of the last file to be renamed.  In both
cases the files of the previous run stay byte for byte, and no temporary file is left.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from src.config import RunOptions
from src.output.writers import MANIFEST, result_set_is_complete, write_all
from src.pipeline.phases import build_model
from src.progress.artifacts import decode
from src.progress.atomic import TMP_PREFIX
from tests.helpers import FAST, reference_run
from tests.test_atomic import file_size_limit

OLD = {"estimates.csv": b"parameter,estimate\nold,1.0\n", "covariance.csv": b"parameter,old\nold,2.0\n",
       "fit.json": b'{"old": true}\n', "report.md": b"# an older run\n"}


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """Phase results of a real run with Louis standard errors (decoded from its progress)."""
    run = reference_run(tmp_path_factory.getbasetemp() / "refs", FAST + ("--se-method", "louis"))
    doc = json.loads((run / "progress" / "main_estimation_progress.json").read_text())
    folder = run / "progress" / "main_estimation_artifacts"
    return {p: decode(r, folder) for p, r in doc["phase_results"].items()}


def _write(stored, folder: Path, **opts) -> list[str]:
    options = RunOptions(n_starts=2, output_dir=str(folder), **opts).validate()
    record = stored["data_preparation"]
    model = build_model(options, record["meta"])
    se = stored["standard_error_computation"] if options.se_method != "none" else {}
    return write_all(model, record, stored["model_estimation"], se, options, fingerprint={})


def _old_set(folder: Path) -> dict[str, bytes]:
    """An earlier run's complete set: its files and its manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    files = dict(OLD)
    for name, data in OLD.items():
        (folder / name).write_bytes(data)
    manifest = json.dumps({"task_name": "older", "files": {
        n: {"sha256": hashlib.sha256(d).hexdigest(), "bytes": len(d)} for n, d in OLD.items()}})
    (folder / MANIFEST).write_text(manifest)
    files[MANIFEST] = manifest.encode()
    return files


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_write_failing_on_the_second_file_keeps_the_old_set(tmp_path, stored):
    """A full disk half-way through the set leaves the previous run's files as they were."""
    sizes = {Path(p).name: Path(p).stat().st_size for p in _write(stored, tmp_path / "probe")}
    limit = sizes["estimates.csv"]  # the first file fits exactly, a larger later one does not
    assert max(sizes[n] for n in ("covariance.csv", "fit.json", "report.md")) > limit
    folder = tmp_path / "results"
    old = _old_set(folder)
    with file_size_limit(limit), pytest.raises(OSError):
        _write(stored, folder)
    assert _snapshot(folder) == old
    assert not [p for p in os.listdir(folder) if p.startswith(TMP_PREFIX)]


def test_rename_failing_midway_puts_the_old_files_back(tmp_path, stored):
    """A folder at ``report.md`` makes its rename fail after the others: they are put back."""
    folder = tmp_path / "results"
    old = _old_set(folder)
    (folder / "report.md").unlink()
    del old["report.md"]
    (folder / "report.md").mkdir()
    (folder / "report.md" / "notes.txt").write_text("a user's folder")
    with pytest.raises(OSError):
        _write(stored, folder)
    assert _snapshot(folder) == old
    assert (folder / "report.md" / "notes.txt").read_text() == "a user's folder"
    assert not [p for p in os.listdir(folder) if p.startswith(TMP_PREFIX)]


def test_manifest_names_every_file_with_its_checksum_and_task(tmp_path, stored):
    """The manifest, written last, lets a reader tell a complete set from a mixed one."""
    folder = tmp_path / "results"
    written = _write(stored, folder, task_name="mytask")
    assert [Path(p).name for p in written] == ["estimates.csv", "covariance.csv", "fit.json",
                                               "report.md", "report.html", MANIFEST]
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["task_name"] == "mytask"
    assert set(manifest["files"]) == {"estimates.csv", "covariance.csv", "fit.json", "report.md",
                                      "report.html"}
    for name, entry in manifest["files"].items():
        data = (folder / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert result_set_is_complete(folder, "mytask")
    assert not result_set_is_complete(folder, "another_task")
    (folder / "fit.json").write_text("{}")  # a file of another run beside the others
    assert not result_set_is_complete(folder, "mytask")
    _write(stored, folder, task_name="mytask")
    (folder / MANIFEST).unlink()
    assert not result_set_is_complete(folder, "mytask")


def test_a_smaller_set_removes_the_files_the_old_one_had(tmp_path, stored):
    """A run without standard errors leaves no covariance.csv of an earlier run behind."""
    folder = tmp_path / "results"
    _old_set(folder)
    _write(stored, folder, se_method="none")
    assert sorted(os.listdir(folder)) == sorted(["estimates.csv", "fit.json", "report.md",
                                                 "report.html", MANIFEST])
    assert result_set_is_complete(folder, "main_estimation")


def test_symlinks_planted_in_the_output_folder_are_not_followed(tmp_path, stored):
    """Symlinks at a result name or at an old temporary name neither receive data nor remain."""
    folder = tmp_path / "results"
    folder.mkdir()
    victims = [tmp_path / "victim1", tmp_path / "victim2"]
    for v in victims:
        v.write_bytes(b"precious")
    (folder / "estimates.csv").symlink_to(victims[0])
    (folder / f"{TMP_PREFIX}fit.json.{os.getpid()}").symlink_to(victims[1])
    _write(stored, folder)
    assert all(v.read_bytes() == b"precious" for v in victims)
    for name in ("estimates.csv", "covariance.csv", "fit.json", "report.md", MANIFEST):
        assert not (folder / name).is_symlink(), name
    assert result_set_is_complete(folder, "main_estimation")


def test_a_rerun_removes_stray_temporaries_of_the_result_files_only(tmp_path, stored):
    """Temporaries a killed write of the result files left (a symlink removed, not followed) go; other .tmp- entries stay."""
    folder = tmp_path / "results"
    folder.mkdir()
    target = tmp_path / "target"
    target.write_bytes(b"precious")
    strays = [f"{TMP_PREFIX}estimates.csv.a1b2c3d4", f"{TMP_PREFIX}{MANIFEST}.12345",
              f"{TMP_PREFIX}report.md.zz_9x8y7"]
    for name in strays[:2]:
        (folder / name).write_bytes(b"half a file")
    (folder / strays[2]).symlink_to(target)
    kept = [f"{TMP_PREFIX}other", f"{TMP_PREFIX}estimates.csv.toolong123",
            f"{TMP_PREFIX}estimates.csvx.a1b2c3d4", f"{TMP_PREFIX}data.csv.a1b2c3d4"]
    for name in kept:
        (folder / name).write_bytes(b"not a result file's")
    (folder / f"{TMP_PREFIX}fit.json.abcdefgh").mkdir()  # a folder is never removed
    _write(stored, folder)
    left = sorted(p for p in os.listdir(folder) if p.startswith(TMP_PREFIX))
    assert left == sorted(kept + [f"{TMP_PREFIX}fit.json.abcdefgh"])
    assert target.read_bytes() == b"precious"
    assert result_set_is_complete(folder, "main_estimation")
