"""Damaged, forged and ill-typed progress: what is kept, what runs again, what is refused.

Real files written by a real tracker, then damaged the way a disk, an editor or a hostile
user could: an artifact corrupted or missing (only what depends on it runs again, the
damaged file is kept as ``*.damaged``), artifact names that are paths to crafted files,
numbers JSON does not allow, absurd nesting, fields of the wrong type under a recomputed
checksum, and checkpoint contents that do not fit the phase (``CheckpointInvalid``).
A good backup is used with a warning; without one the run stops with exit 3 and one
sentence; never a crash with exit 1.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil

import numpy as np
import pytest

from src.progress.document import MAX_DEPTH
from src.utils.checkpointing import CheckpointInvalid
from src.utils.errors import FingerprintMismatch, ProgressCorrupt
from src.utils.estimation_progress import estimation_progress, resume_estimation_phase
from tests.helpers import FAST, check_rc, read_progress, reference_run, results_dir, run_script

A = {"m": np.array([1.0, 2.0, 3.0])}
B = {"m": np.array([[0.5, -0.5], [4.0, 8.0]])}


def _session(folder, messages=None, **kw):
    kw.setdefault("save_interval", 0)
    return estimation_progress(task_name="t", progress_dir=folder,
                               notify=(messages.append if messages is not None else lambda m: None),
                               **kw)


def _checksum(doc: dict) -> str:
    body = json.dumps({k: v for k, v in doc.items() if k != "checksum"}, sort_keys=True,
                      separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def _load(folder, name="t_progress.json"):
    return json.loads((folder / name).read_text())


def _store(folder, doc, name="t_progress.json"):
    """Write ``doc`` with a correct checksum (a well-formed file of someone else's making)."""
    doc = dict(doc)
    doc["checksum"] = _checksum(doc)
    (folder / name).write_text(json.dumps(doc))


def _made(folder):
    """Phases a and b completed (arrays), c running with a checkpoint; main and backup."""
    with pytest.raises(RuntimeError):
        with _session(folder) as tr:
            resume_estimation_phase(tr, "a", lambda: A)
            resume_estimation_phase(tr, "b", lambda: B)
            tr.begin_phase("c")
            tr.checkpoint({"i": 3, "x": np.arange(4.0)})
            raise RuntimeError("stopped")
    assert (folder / "t_progress.json.bak").exists()
    return folder


def _artifact(folder, prefix):
    (path,) = [p for p in (folder / "t_artifacts").iterdir() if p.name.startswith(prefix)]
    return path


def _never(name):
    def run():
        raise AssertionError(f"phase {name} ran again")
    return run


def _same(x, y):
    assert set(x) == set(y) and all(np.array_equal(x[k], y[k]) for k in x)


# ------------------------------------------------------------ artifact damage
@pytest.mark.parametrize("how", ["corrupt", "missing"])
def test_bad_checkpoint_artifact_keeps_completed_phases(tmp_path, how):
    """Only the running phase's checkpoint is lost: a and b are skipped, c starts over."""
    _made(tmp_path)
    bad = _artifact(tmp_path, "checkpoint-c-")
    damaged_bytes = bad.read_bytes()[:-7] + b"garbage"
    if how == "corrupt":
        bad.write_bytes(damaged_bytes)
    else:
        bad.unlink()
    messages = []
    with _session(tmp_path, messages) as tr:
        _same(resume_estimation_phase(tr, "a", _never("a")), A)
        _same(resume_estimation_phase(tr, "b", _never("b")), B)
        tr.begin_phase("c")
        assert tr.resume_state() is None
        tr.complete_phase("c", {"done": True})
    warnings = [m for m in messages if m.startswith("Warning")]
    assert len(warnings) == 1 and "checkpoint of phase 'c'" in warnings[0], messages
    assert "starts again from its beginning" in warnings[0]
    kept = bad.with_name(bad.name + ".damaged")
    assert kept.exists() == (how == "corrupt")
    if how == "corrupt":
        assert kept.read_bytes() == damaged_bytes
    assert _load(tmp_path)["completed_phases"] == ["a", "b", "c"]


@pytest.mark.parametrize("phase,again", [("b", ["b", "c"]), ("a", ["a", "b", "c"])])
@pytest.mark.parametrize("how", ["corrupt", "missing"])
def test_bad_result_artifact_recomputes_that_phase_and_later_ones(tmp_path, phase, again, how):
    """A bad result of a completed phase costs that phase and the later ones, nothing before."""
    _made(tmp_path)
    bad = _artifact(tmp_path, f"result-{phase}-")
    if how == "corrupt":
        bad.write_bytes(b"\x00" * bad.stat().st_size)
    else:
        bad.unlink()
    messages, ran = [], []

    def runs(name, value):
        def run():
            ran.append(name)
            return value
        return run

    with _session(tmp_path, messages) as tr:
        _same(resume_estimation_phase(tr, "a", runs("a", A)), A)
        _same(resume_estimation_phase(tr, "b", runs("b", B)), B)
        tr.begin_phase("c")
        assert tr.resume_state() is None
        ran.append("c")
        tr.complete_phase("c", {"done": True})
    assert ran == again
    (warning,) = [m for m in messages if m.startswith("Warning")]
    assert f"result of phase '{phase}'" in warning and f"{', '.join(again)} will be computed again" in warning
    assert (bad.with_name(bad.name + ".damaged").exists()) == (how == "corrupt")
    with _session(tmp_path) as tr:  # and the next run finds everything whole again
        for name in "abc":
            resume_estimation_phase(tr, name, _never(name))


def test_malformed_marker_in_a_checkpoint_drops_only_the_checkpoint(tmp_path):
    """A checkpoint whose stored value cannot be decoded is dropped like a bad artifact."""
    _made(tmp_path)
    for name in ("t_progress.json", "t_progress.json.bak"):
        _typed_edit(tmp_path, lambda d: d["checkpoint"]["state"]["value"].update(
            i={"__float__": "1e5"}), name)
    messages = []
    with _session(tmp_path, messages) as tr:
        _same(resume_estimation_phase(tr, "b", _never("b")), B)
        tr.begin_phase("c")
        assert tr.resume_state() is None
    assert sum("checkpoint of phase 'c'" in m for m in messages) == 1, messages


def test_damaged_artifacts_are_never_collected(tmp_path):
    """A `*.damaged` artifact survives every later write (garbage collection leaves it)."""
    _made(tmp_path)
    bad = _artifact(tmp_path, "result-b-")
    bad.write_bytes(b"broken")
    with _session(tmp_path) as tr:
        for name in "ab":
            resume_estimation_phase(tr, name, lambda: {"m": np.ones(5)})
        tr.begin_phase("c")
        for i in range(5):
            tr.checkpoint({"i": i, "x": np.full(3, float(i))})
    assert bad.with_name(bad.name + ".damaged").read_bytes() == b"broken"


# ------------------------------------------------------------ forged artifact paths
def _crafted(path):
    """A well-formed .npz with forged means, and its SHA-256."""
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, a0=np.array([666.0, 666.0, 666.0]))
    path.write_bytes(buf.getvalue())
    return hashlib.sha256(buf.getvalue()).hexdigest()


def _forge_names(folder, tmp_path, kind):
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    digest = _crafted(outside / f"evil-{'0' * 16}.npz")
    if kind == "absolute":
        name = str(outside / f"evil-{'0' * 16}.npz")
    elif kind == "relative":
        name = f"../outside/evil-{'0' * 16}.npz"
    else:  # a bare name of the right form whose digest is not the file's
        shutil.copy(outside / f"evil-{'0' * 16}.npz", folder / "t_artifacts" / f"result-a-{'0' * 16}.npz")
        name = f"result-a-{'0' * 16}.npz"
    for file in ("t_progress.json", "t_progress.json.bak"):
        doc = _load(folder, file)
        doc["phase_results"]["a"]["files"] = [{"file": name, "sha256": digest, "role": "arrays"}]
        _store(folder, doc, file)


@pytest.mark.parametrize("kind", ["absolute", "relative", "wrong_digest"])
def test_forged_artifact_names_never_reach_a_result(tmp_path, kind):
    """An artifact name that is a path (or does not match its checksum) is damage: exit 3, no forged value."""
    folder = _made(tmp_path / "p")
    _forge_names(folder, tmp_path, kind)
    with pytest.raises(ProgressCorrupt) as err:
        with _session(folder) as tr:
            resume_estimation_phase(tr, "a", lambda: A)
    assert "\n" not in str(err.value) and "t_progress.json" in str(err.value)
    assert err.value.exit_code == 3


def test_forged_main_file_falls_back_on_a_good_backup(tmp_path):
    """With a good backup the forged file is set aside and the genuine result comes back."""
    folder = _made(tmp_path / "p")
    digest = _crafted(tmp_path / "evil.npz")
    doc = _load(folder)
    doc["phase_results"]["a"]["files"] = [{"file": str(tmp_path / "evil.npz"), "sha256": digest,
                                           "role": "arrays"}]
    _store(folder, doc)
    forged = (folder / "t_progress.json").read_bytes()
    messages = []
    with _session(folder, messages) as tr:
        _same(resume_estimation_phase(tr, "a", _never("a")), A)
    assert any("resumes from its backup" in m for m in messages), messages
    assert (folder / "t_progress.json.damaged").read_bytes() == forged


# ------------------------------------------------------------ schema and strict JSON
def _raw_edit(folder, field, literal, name="t_progress.json"):
    """Put ``literal`` (raw JSON text) as the value of ``field``, keeping the old checksum."""
    doc = _load(folder, name)
    doc[field] = "__SENTINEL__"
    (folder / name).write_text(json.dumps(doc).replace('"__SENTINEL__"', literal))


def _typed_edit(folder, change, name="t_progress.json"):
    doc = _load(folder, name)
    change(doc)
    _store(folder, doc, name)


DAMAGE = {
    "nan": lambda f: _raw_edit(f, "step_count", "NaN"),
    "infinity": lambda f: _raw_edit(f, "last_update", "Infinity"),
    "overflow": lambda f: _raw_edit(f, "start_time", "1e999"),
    "long_int": lambda f: _raw_edit(f, "step_count", "9" * 5000),
    "deep": lambda f: _raw_edit(f, "end_reason", "[" * 200_000 + "]" * 200_000),
    "just_too_deep": lambda f: _raw_edit(f, "end_reason", "[" * MAX_DEPTH + "]" * MAX_DEPTH),
    "step_count_text": lambda f: _typed_edit(f, lambda d: d.update(step_count="abc")),
    "start_time_null": lambda f: _typed_edit(f, lambda d: d.update(start_time=None)),
    "is_resumed_text": lambda f: _typed_edit(f, lambda d: d.update(is_resumed="yes")),
    "negative_count": lambda f: _typed_edit(f, lambda d: d["checkpoint"].update(count=-1)),
    "phase_path": lambda f: _typed_edit(f, lambda d: d.update(completed_phases=["../x"])),
    "phase_newline": lambda f: _typed_edit(f, lambda d: d.update(current_phase="c\n")),
    "results_list": lambda f: _typed_edit(f, lambda d: d.update(phase_results=[1, 2])),
    "status_odd": lambda f: _typed_edit(f, lambda d: d.update(status="sleeping")),
    "bool_version": lambda f: _typed_edit(f, lambda d: d.update(schema_version=True)),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_schema_damage_without_backup_is_exit_3(tmp_path, kind):
    """Numbers JSON forbids, absurd nesting and wrong types are damage (exit 3, one sentence), never a crash."""
    _made(tmp_path)
    (tmp_path / "t_progress.json.bak").unlink()
    DAMAGE[kind](tmp_path)
    before = (tmp_path / "t_progress.json").read_bytes()
    with pytest.raises(ProgressCorrupt) as err:
        with _session(tmp_path):
            pass
    assert "\n" not in str(err.value) and "no usable backup" in str(err.value)
    assert (tmp_path / "t_progress.json").read_bytes() == before  # never destroyed


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_schema_damage_with_good_backup_resumes_from_it(tmp_path, kind):
    """The same damage with a good backup: one warning, the backup is used, the file kept aside."""
    _made(tmp_path)
    DAMAGE[kind](tmp_path)
    before = (tmp_path / "t_progress.json").read_bytes()
    messages = []
    with _session(tmp_path, messages) as tr:
        _same(resume_estimation_phase(tr, "a", _never("a")), A)
        _same(resume_estimation_phase(tr, "b", _never("b")), B)
    assert any(m.startswith("Warning: progress file") and "backup" in m for m in messages), messages
    assert (tmp_path / "t_progress.json.damaged").read_bytes() == before


def test_nesting_up_to_the_limit_is_read(tmp_path):
    """A phase result nested deeply but within MAX_DEPTH round-trips (the limit is not too tight)."""
    value = 1.5
    for _ in range(MAX_DEPTH - 10):
        value = [value]
    with _session(tmp_path) as tr:
        resume_estimation_phase(tr, "deep", lambda: value)
    with _session(tmp_path) as tr:
        assert resume_estimation_phase(tr, "deep", _never("deep")) == value


def test_unknown_phase_names_are_damage_when_the_phases_are_known(tmp_path):
    """A tracker given its phase names treats a file naming another phase as damage."""
    _made(tmp_path)
    (tmp_path / "t_progress.json.bak").unlink()
    with pytest.raises(ProgressCorrupt, match="unknown phase"):
        with _session(tmp_path, phases=["a", "b"]):
            pass
    with _session(tmp_path, phases=["a", "b", "c"]) as tr:
        _same(resume_estimation_phase(tr, "a", _never("a")), A)


# ------------------------------------------------------------ checkpoint contents
def test_checkpoint_that_does_not_fit_is_dropped_and_the_phase_runs_again(tmp_path):
    """A phase raising CheckpointInvalid about its resumed state gets one warning and a fresh start."""
    _made(tmp_path)
    calls = []

    def phase_c(tracker):
        state = tracker.resume_state()
        calls.append(state)
        if state is not None and state.get("x", np.zeros(0)).shape != (7,):
            raise CheckpointInvalid("x has shape (4,), expected (7,)")
        return {"fresh": state is None}

    messages = []
    with _session(tmp_path, messages) as tr:
        resume_estimation_phase(tr, "a", _never("a"))
        resume_estimation_phase(tr, "b", _never("b"))
        assert resume_estimation_phase(tr, "c", phase_c, tr) == {"fresh": True}
    assert len(calls) == 2 and calls[0]["i"] == 3 and calls[1] is None
    (warning,) = [m for m in messages if m.startswith("Warning")]
    assert "checkpoint of phase 'c' does not fit" in warning and "expected (7,)" in warning
    kept = json.loads((tmp_path / "t_progress.json.damaged").read_text())
    assert kept["checkpoint"]["phase"] == "c"


def test_checkpoint_invalid_without_a_resumed_state_is_a_bug(tmp_path):
    """CheckpointInvalid from a phase that resumed nothing is not swallowed."""
    def phase():
        raise CheckpointInvalid("no state was given")

    with pytest.raises(CheckpointInvalid):
        with _session(tmp_path) as tr:
            resume_estimation_phase(tr, "p", phase)


@pytest.fixture(scope="module")
def em_states():
    """Every state a small real EM fit checkpoints."""
    from src.estimation.em import fit_em
    from tests.test_em import Gauss1D, MemoryCheckpointer, gauss_data

    data = gauss_data(n=200)
    rec = MemoryCheckpointer()
    fit_em(Gauss1D(2), data, n_starts=2, tol=1e-8, max_iter=50, checkpoint=rec)
    # the states taken inside a start (after the candidate stage): a few evaluations in
    running = [s for s in rec.states if s.get("current")]
    return data, running, Gauss1D, MemoryCheckpointer


@pytest.mark.parametrize("forge", ["shape", "keys", "start", "kind", "dtype"])
def test_em_driver_refuses_a_state_that_does_not_fit(em_states, forge):
    """fit_em raises CheckpointInvalid for a saved state of the wrong shape, keys, range or type."""
    from src.estimation.em import fit_em

    data, states, Gauss1D, MemoryCheckpointer = em_states
    state = json.loads(json.dumps(states[5], default=lambda a: a.tolist()))
    cur = state["current"]
    cur["params"] = {k: np.asarray(v) for k, v in cur["params"].items()}
    cur["best_params"] = {k: np.asarray(v) for k, v in cur["best_params"].items()}
    if forge == "shape":
        cur["params"]["mean"] = np.zeros(3)
    elif forge == "keys":
        del cur["params"]["var"]
    elif forge == "start":
        cur["start"] = 7
    elif forge == "kind":
        state["kind"] = "bootstrap"
    else:
        cur["best_params"]["mean"] = np.array(["a", "b"])
    with pytest.raises(CheckpointInvalid):
        fit_em(Gauss1D(2), data, n_starts=2, tol=1e-8, max_iter=50,
               checkpoint=MemoryCheckpointer(state))


def test_bootstrap_refuses_replicates_of_the_wrong_size():
    """bootstrap_se raises CheckpointInvalid for saved replicates with the wrong number of parameters."""
    from src.inference.bootstrap import bootstrap_se
    from tests.test_em import Gauss1D, MemoryCheckpointer, gauss_data

    model = Gauss1D(2)
    data = gauss_data(n=200)
    params = {"weight": np.array([0.5, 0.5]), "mean": np.array([0.0, 1.5]), "var": np.ones(2)}
    rec = MemoryCheckpointer()
    bootstrap_se(model, data, params, n_bootstrap=3, seed=1, max_iter=30, checkpoint=rec)
    state = dict(rec.states[1])
    state["replicates"] = {k: dict(v) for k, v in state["replicates"].items()}
    first = next(iter(state["replicates"]))
    state["replicates"][first]["status"] = "ok"
    state["replicates"][first]["free"] = np.zeros(2)
    with pytest.raises(CheckpointInvalid, match=f"replicate {int(first) + 1}"):
        bootstrap_se(model, data, params, n_bootstrap=3, seed=1, max_iter=30,
                     checkpoint=MemoryCheckpointer(state))


def test_main_script_drops_a_forged_em_checkpoint_and_gives_the_same_results(tmp_path,
                                                                             tmp_path_factory):
    """A forged EM checkpoint of the wrong shape costs one warning; the results equal a clean run's."""
    args = (*FAST, "--se-method", "none", "--save-interval", "0")
    ref = reference_run(tmp_path_factory.getbasetemp() / "refs", args)
    run = tmp_path / "run"
    run.mkdir()
    killed = run_script(run, *args, fault="kill:model_estimation:6")
    assert killed.returncode < 0
    progress = run / "progress"
    doc = read_progress(run)
    entry = doc["checkpoint"]["state"]["files"][0]
    with np.load(progress / "main_estimation_artifacts" / entry["file"]) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays = {k: (np.zeros(arrays[k].shape + (3,)) if arrays[k].ndim == 2 else v)
              for k, v in arrays.items()}  # every matrix gains an axis
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **arrays)
    digest = hashlib.sha256(buf.getvalue()).hexdigest()
    name = f"checkpoint-model_estimation-{digest[:16]}.npz"
    (progress / "main_estimation_artifacts" / name).write_bytes(buf.getvalue())
    doc["checkpoint"]["state"]["files"][0] = {**entry, "file": name, "sha256": digest}
    doc.pop("checksum")
    doc["checksum"] = _checksum(doc)
    (progress / "main_estimation_progress.json").write_text(json.dumps(doc))
    resumed = run_script(run, *args)
    check_rc(resumed, 0)
    assert "checkpoint of phase 'model_estimation' does not fit" in resumed.stdout
    assert "Traceback" not in resumed.stderr
    got = (results_dir(run) / "estimates.csv").read_bytes()
    assert got == (results_dir(ref) / "estimates.csv").read_bytes()


# ------------------------------------------------------------ messages
def test_resume_message_names_the_backup_when_it_was_used(tmp_path):
    """'Resuming task ... from X' names the file actually read: the backup after damage."""
    _made(tmp_path)
    (tmp_path / "t_progress.json").write_text("{ truncated")
    messages = []
    with _session(tmp_path, messages):
        pass
    (resumed,) = [m for m in messages if m.startswith("Resuming task")]
    assert resumed.split(" from ")[1].startswith(str(tmp_path / "t_progress.json.bak"))


def test_mismatch_message_offers_a_new_task_name_restart_and_recompute(tmp_path):
    """The inputs-changed refusal names --task-name NEW, --restart and --recompute-changed."""
    with _session(tmp_path, fingerprints={"a": {"x": 1}}) as tr:
        resume_estimation_phase(tr, "a", lambda: 1)
    with pytest.raises(FingerprintMismatch) as err:
        with _session(tmp_path, fingerprints={"a": {"x": 2}}):
            pass
    text = str(err.value)
    assert "--task-name" in text and "--restart" in text and "--recompute-changed" in text
    assert "\n" not in text
