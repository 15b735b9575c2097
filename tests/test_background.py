"""The drawing process and the CSV thread (src/output/background.py): figures drawn there and
posteriors.csv written by the thread are the bytes made in the run, a dead or missing helper
or a failed thread falls back to making them in the run, the helper never outlives the run
(SIGKILL included), and its messages carry numbers only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from src.estimation import fit_em
from src.inference.classification import posteriors_of
from src.models.gmm import GaussianMixtureModel
from src.models.lca import LatentClassModel
from src.models.mixreg import MixtureRegressionModel
from src.output import background
from src.output.plots import Spec, figure_specs, posterior_spec, render
from src.output.posteriors import posteriors_csv
from src.output.plots.spec import FormatError, HEAD_SIZE, message_size, pack, unpack
from src.utils.rng import stream
from tests.helpers import start_driver

ROOT = Path(__file__).resolve().parents[1]
BUILTIN = ROOT / "src" / "data" / "builtin"


def _fit(model_cls, frame, K, options=None, **fit_options):
    data, meta = model_cls.prepare_data(frame, options or {})
    model = model_cls(K, **(options or {}))
    model.setup(meta)
    fit = fit_em(model, data, seed=1, **{"n_starts": 1, "n_candidates": 0, **fit_options})
    return model, data, fit.params, posteriors_of(model, data, fit.params)


@pytest.fixture(scope="module")
def fits():
    """A scatter matrix, a one-column density, an LCA profile and a regression fit."""
    iris = pd.read_csv(BUILTIN / "iris.csv").iloc[:, :4]
    faithful = pd.read_csv(BUILTIN / "faithful.csv")
    carcinoma = pd.read_csv(ROOT / "tests" / "reference" / "carcinoma.csv", dtype=str)
    rng = stream(1, "test-plots-background")
    x = rng.uniform(0, 10, 200)
    y = np.where(rng.integers(0, 2, 200) == 1, 1 + 2 * x, 8 - 0.5 * x) + rng.normal(0, 1, 200)
    return {
        "gmm4": _fit(GaussianMixtureModel, iris, 3),
        "gmm1": _fit(GaussianMixtureModel, faithful[["waiting"]], 2),
        "lca": _fit(LatentClassModel, carcinoma, 3, max_iter=50),
        "mixreg": _fit(MixtureRegressionModel, pd.DataFrame({"x": x, "y": y}), 2, {"target": "y"}),
    }


@pytest.fixture()
def helper():
    """A running drawing process, ended after the test."""
    assert background.start()
    yield background.helper_pid()
    background.stop()


def _bytes(plots):
    return {name: (p.png, p.caption, p.width, p.height) for name, p in plots.items()}


@pytest.mark.parametrize("first_stage", [True, False])
def test_helper_draws_the_bytes_drawn_here(fits, helper, first_stage):
    """Every figure the helper draws (its first stage sent with the data, or both stages with the estimate) is byte for byte the figure drawn in this process from the same fit."""
    from src.output.plots import figures

    for case, (model, data, params, post) in fits.items():
        here = {name: render(spec) for name, spec in figure_specs(model, data, params, post).items()}
        assert background.start()
        if first_stage:
            assert background.submit_data(model, data)
        assert background.submit(model, data, params, post), case
        got = figures(model, data, params, post)
        assert background.last_source() == "helper", case
        assert list(got) == list(here) and _bytes(got) == _bytes(here), case


def test_first_stage_specs_are_the_full_specs_first_stage(fits):
    """figure_data_specs (data only) gives the figures of figure_specs, with the same kind and the same first-stage values."""
    from src.output.plots import figure_data_specs

    for case, (model, data, params, post) in fits.items():
        first = figure_data_specs(model, data)
        full = figure_specs(model, data, params, post)
        assert list(first) == list(full), case
        for name, spec in full.items():
            assert first[name].kind == spec.kind and first[name].stage1 == spec.stage1, case
            (m1, a1), (m2, a2) = first[name].first(), spec.first()
            assert m1 == m2 and set(a1) == set(a2), case
            assert all(np.array_equal(a1[k], a2[k]) for k in a1), case
            assert set(spec.first()[0]) | set(spec.second()[0]) == set(spec.meta), case


def _text_ids(n):
    """Text row names, some needing quotes (comma, quote, line end), one missing."""
    ids = np.array([f"id{i}" for i in range(n)], dtype=object)
    ids[1], ids[2], ids[3], ids[4] = "a,b", 'say "hi"', "two\nlines", None
    return ids


CSV_CASES = {   # case: (fit, row names of n rows, id column)
    "numbers with gaps": ("gmm1", lambda n: np.arange(n, dtype=np.int64) * 3 + 1, None),
    "numbers, --id": ("gmm4", lambda n: np.arange(n, dtype=np.int64) + 100, "id, no"),
    "floats with a missing one": ("mixreg", lambda n: np.where(np.arange(n) == 2, np.nan,
                                                               np.arange(n) / 2.0), "key"),
    "text needing quotes": ("gmm1", _text_ids, "who"),
    "answer patterns, text": ("lca", _text_ids, "person"),
    "answer patterns, numbers": ("lca", lambda n: np.arange(n, dtype=np.int64), None),
}


@pytest.mark.parametrize("case", list(CSV_CASES))
def test_thread_writes_the_posteriors_csv_written_here(fits, case):
    """posteriors.csv from the thread submit starts (numeric and text row names, quotes needed, an --id column, LCA's answer patterns) is byte for byte the file written here, and taken once."""
    fit, make_labels, id_column = CSV_CASES[case]
    model, data, params, post = fits[fit]
    labels = make_labels(post.n_rows)

    def csv():
        return posteriors_csv(model, data, params, labels, id_column=id_column, chunk_size=100,
                              resp=post)

    background.stop()
    here = csv()
    assert background.last_source("posteriors.csv") == "here"
    assert background.submit(model, data, params, post, row_labels=labels, id_column=id_column,
                             chunk_size=100, figures=False)
    assert csv() == here and background.last_source("posteriors.csv") == "thread"
    assert csv() == here and background.last_source("posteriors.csv") == "here"   # taken once
    assert background._JOB is None   # (forgotten once taken)


def test_other_row_names_are_written_here(fits):
    """Asked for with other row names, id column or chunk size, posteriors.csv is written here (those bytes); the thread's file is still taken for the names it was started with."""
    model, data, params, post = fits["gmm1"]
    labels = np.arange(post.n_rows, dtype=np.int64)
    background.stop()
    here = {key: posteriors_csv(model, data, params, ids, id_column=col, chunk_size=size,
                                resp=post)
            for key, (ids, col, size) in {"same": (labels, None, 100),
                                          "shifted": (labels + 1, None, 100),
                                          "floats": (labels.astype(float), None, 100),
                                          "column": (labels, "id", 100),
                                          "chunk": (labels, None, 50)}.items()}
    assert background.submit(model, data, params, post, row_labels=labels, chunk_size=100,
                             figures=False)
    for key, (ids, col, size) in {"shifted": (labels + 1, None, 100),
                                  "floats": (labels.astype(float), None, 100),
                                  "column": (labels, "id", 100),
                                  "chunk": (labels, None, 50)}.items():
        got = posteriors_csv(model, data, params, ids, id_column=col, chunk_size=size, resp=post)
        assert got == here[key] and background.last_source("posteriors.csv") == "here", key
    got = posteriors_csv(model, data, params, labels.copy(), chunk_size=100, resp=post)
    assert got == here["same"] and background.last_source("posteriors.csv") == "thread"


def test_a_failed_thread_falls_back_to_writing_here(fits, monkeypatch):
    """A CSV thread that raised is not taken: the file is written here, the bytes written without any thread (the failure, e.g. memory running out in the thread alone, stands in as Arrow's writer failing in threads other than the main one)."""
    from src.output import posteriors

    model, data, params, post = fits["gmm1"]
    labels = _text_ids(post.n_rows)
    background.stop()
    expected = posteriors_csv(model, data, params, labels, id_column="who", resp=post)
    write = posteriors.write_csv_table

    def fails_in_threads(prepared, cancelled=None):
        if threading.current_thread() is not threading.main_thread():
            raise MemoryError("no room for the text")
        return write(prepared, cancelled)

    monkeypatch.setattr(posteriors, "write_csv_table", fails_in_threads)
    assert background.submit(model, data, params, post, row_labels=labels, id_column="who",
                             figures=False)
    thread = background._JOB.csv
    assert posteriors_csv(model, data, params, labels, id_column="who", resp=post) == expected
    assert background.last_source("posteriors.csv") == "here"
    assert isinstance(thread.error, MemoryError)


def test_stop_ends_a_csv_thread_not_collected(fits):
    """stop() tells a CSV thread nobody collected to stop, and no such thread is left."""
    model, data, params, post = fits["lca"]
    labels = np.arange(post.n_rows)
    assert background.submit(model, data, params, post, row_labels=labels, figures=False)
    thread = background._JOB.csv
    background.stop()
    assert not thread.alive() and background._JOB is None
    assert not [t for t in threading.enumerate() if t.name == "posteriors-csv"]


def test_submit_fit_without_figures_starts_the_csv_alone(fits):
    """submit_fit(figures=False) with no drawing process computes the posteriors (given to posteriors_for) and starts the CSV thread; without row names it does nothing."""
    model, data, params, post = fits["lca"]
    background.stop()
    labels = np.arange(post.n_rows, dtype=np.int64)
    here = posteriors_csv(model, data, params, labels, chunk_size=128, resp=post)
    assert not background.submit_fit(model, data, params, 128)
    assert background._JOB is None
    assert background.submit_fit(model, data, params, 128, row_labels=labels, figures=False)
    got = background.posteriors_for(model, data, params, 128)
    assert got is not None and np.array_equal(got.tau, post.tau)
    assert background.collect_figures(model, data, params, got) is None
    assert posteriors_csv(model, data, params, labels, chunk_size=128, resp=got) == here
    assert background.last_source("posteriors.csv") == "thread"


def test_figures_mapping_waits_on_lookup_and_is_taken_once(fits, helper):
    """collect_figures returns a Figures mapping in the specs' order, taken once; looking figures up in any order gives the bytes drawn here."""
    model, data, params, post = fits["lca"]
    assert background.submit(model, data, params, post)
    got = background.collect_figures(model, data, params, post)
    assert isinstance(got, background.Figures) and list(got) == ["profile.png", "posterior.png"]
    assert background.collect_figures(model, data, params, post) is None   # taken once
    here = {n: render(s) for n, s in figure_specs(model, data, params, post).items()}
    assert _bytes({n: got[n] for n in reversed(list(got))}) == _bytes(here)


def test_posteriors_for_gives_what_submit_fit_computed(fits, helper):
    """posteriors_for returns the posteriors submit_fit computed (equal to posteriors_of) for the same fit and chunk size, and None for another estimate or chunk size."""
    model, data, params, post = fits["gmm1"]
    assert background.submit_fit(model, data, params, 128)
    got = background.posteriors_for(model, data, params, 128)
    assert got is not None and np.array_equal(got.tau, posteriors_of(model, data, params, 128).tau)
    assert background.posteriors_for(model, data, params, 64) is None
    moved = {k: np.asarray(v) * (1.001 if k == "mean" else 1.0) for k, v in params.items()}
    assert background.posteriors_for(model, data, moved, 128) is None


def test_other_numbers_are_drawn_here(fits, helper):
    """A job for one estimate is not taken for another: figures() draws the other estimate here."""
    from src.output.plots import figures

    model, data, params, post = fits["gmm1"]
    assert background.submit(model, data, params, post)
    moved = {k: np.array(v, dtype=float) * (1.001 if k == "mean" else 1.0) for k, v in params.items()}
    got = figures(model, data, moved, post)
    assert background.last_source() == "here"
    assert got["density.png"].png == render(figure_specs(model, data, moved, post)["density.png"]).png
    assert background.collect_figures(model, data, params, post) is not None  # the first job's


def test_a_killed_helper_falls_back_to_drawing_here(fits, helper):
    """SIGKILL the helper after the figures were sent: figures() draws them here, the same bytes."""
    from src.output.plots import figures

    model, data, params, post = fits["lca"]
    here = _bytes({n: render(s) for n, s in figure_specs(model, data, params, post).items()})
    assert background.submit(model, data, params, post)
    os.kill(helper, signal.SIGKILL)
    got = figures(model, data, params, post)
    assert _bytes(got) == here
    assert background.last_source() in ("here", "helper")  # (it may have answered first)
    assert not background.running() or background.helper_pid() != helper


DRIVER = """
import sys, time
sys.path.insert(0, {root!r})
from src.output import background
assert background.start()
print(background.helper_pid(), flush=True)
time.sleep(120)
"""


def test_no_helper_outlives_a_sigkilled_run(tmp_path):
    """A process that started the helper is SIGKILLed: the helper is gone within seconds."""
    proc, helper = start_driver(tmp_path, DRIVER.format(root=str(ROOT)))
    proc.kill()
    proc.wait()
    proc.stdout.close()
    gone, alive = psutil.wait_procs([helper], timeout=10)
    assert not alive


@pytest.mark.parametrize("warm", [False, True])
def test_a_run_draws_in_the_helper_and_ends_it(tmp_path, warm):
    """A whole run with plots (the helper started by run(), or already running and kept) takes its figures from the helper, the bytes drawn here from its fit, writes posteriors.csv as written here, and leaves no child process."""
    from src.config import RunOptions
    from src.output.plots import figures
    from src.pipeline import run
    from src.utils.console import Reporter

    options = RunOptions(model="gmm", n_starts=2, n_candidates=4, se_method="louis",
                         progress_dir=str(tmp_path / "progress"), output_dir=str(tmp_path / "results"),
                         no_progress_tracking=True).validate()
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    if warm:   # the helper started and ready before the run (which keeps it)
        assert background.start() and background.wait_ready(120)
    result = run(options, Reporter(stream=open(os.devnull, "w"), live=False))
    assert background.last_source() == "helper"
    assert background.last_source("posteriors.csv") == "thread"
    assert background.helper_pid() is None
    left = [p for p in psutil.Process().children(recursive=True)
            if p.pid not in before and p.status() != psutil.STATUS_ZOMBIE]
    assert not left
    assert not [t for t in threading.enumerate() if t.name == "posteriors-csv" and t.is_alive()]
    prepared = result["prepared"]
    params = {k: np.asarray(v) for k, v in result["fit"]["params"].items()}
    here = figures(prepared.model, prepared.data, params,
                   posteriors_of(prepared.model, prepared.data, params, options.chunk_size))
    for name, plot in here.items():
        assert (Path(options.results_dir) / name).read_bytes() == plot.png
    assert (Path(options.results_dir) / "posteriors.csv").read_bytes() == posteriors_csv(
        prepared.model, prepared.data, params, prepared.row_labels, chunk_size=options.chunk_size)


def test_a_run_without_plots_writes_posteriors_csv_in_a_thread(tmp_path):
    """A whole run with --no-plots starts no drawing process yet takes posteriors.csv from the thread begun with the estimate: the bytes written here, no thread left."""
    from src.config import RunOptions
    from src.pipeline import run
    from src.utils.console import Reporter

    options = RunOptions(model="gmm", n_starts=2, n_candidates=4, se_method="louis",
                         plots=False, progress_dir=str(tmp_path / "progress"),
                         output_dir=str(tmp_path / "results"),
                         no_progress_tracking=True).validate()
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    result = run(options, Reporter(stream=open(os.devnull, "w"), live=False))
    assert background.last_source("posteriors.csv") == "thread"
    assert not [p for p in psutil.Process().children(recursive=True)
                if p.pid not in before and p.status() != psutil.STATUS_ZOMBIE]
    assert not [t for t in threading.enumerate() if t.name == "posteriors-csv" and t.is_alive()]
    assert not list(Path(options.results_dir).glob("*.png"))
    prepared = result["prepared"]
    params = {k: np.asarray(v) for k, v in result["fit"]["params"].items()}
    assert (Path(options.results_dir) / "posteriors.csv").read_bytes() == posteriors_csv(
        prepared.model, prepared.data, params, prepared.row_labels, chunk_size=options.chunk_size)


# ------------------------------------------------------------------ the byte format
def _roundtrip(meta, arrays):
    message = b"".join(bytes(p) for p in pack(meta, arrays))
    head, rest = message[:HEAD_SIZE], message[HEAD_SIZE:]
    assert message_size(head) == len(rest)
    return unpack(head, rest)


def test_messages_carry_numbers_and_json():
    """Arrays of every numeric kind and shape (empty, 0-d, strided, big-endian) and JSON meta come back equal."""
    arrays = {"f": np.arange(12.0).reshape(3, 4)[:, ::2], "i8": np.array([-1, 0, 5], np.int8),
              "u": np.array([[1, 2]], np.uint32), "b": np.array([True, False]),
              "empty": np.zeros((0, 3)), "scalar": np.float64(np.pi),
              "big": np.array([1.5, -2.0], dtype=">f8")}
    meta = {"names": ["a", "é,\n"], "x": 0.1, "nan": float("nan"), "n": 3}
    got_meta, got = _roundtrip(meta, arrays)
    assert got_meta["names"] == meta["names"] and got_meta["x"] == 0.1 and np.isnan(got_meta["nan"])
    for name, value in arrays.items():
        assert got[name].shape == np.shape(value) and np.array_equal(got[name], value), name


def test_messages_refuse_objects_and_damage():
    """Object arrays are not packed; a truncated or foreign message raises FormatError."""
    with pytest.raises(TypeError):
        pack({}, {"o": np.array([object()])})
    message = b"".join(bytes(p) for p in pack({"a": 1}, {"x": np.arange(4.0)}))
    head, rest = message[:HEAD_SIZE], message[HEAD_SIZE:]
    with pytest.raises(FormatError):
        unpack(head, rest[:-1])
    with pytest.raises(FormatError):
        message_size(b"x" * HEAD_SIZE)


def test_spec_drawn_from_a_message_is_the_same_figure(fits):
    """A spec packed and unpacked (read-only arrays) draws the bytes of the original spec."""
    model, data, params, post = fits["gmm4"]
    for name, spec in figure_specs(model, data, params, post).items():
        meta, arrays = _roundtrip(spec.meta, spec.arrays)
        assert render(Spec(spec.kind, meta, arrays, spec.caption)) == render(spec), name


def test_partitioned_input_draws_the_sample_in_the_helper(tmp_path):
    """Partitioned input: the helper draws the figures of the search sample, the bytes drawn here from it."""
    from src.config import RunOptions
    from src.output.plots import figures
    from src.pipeline import run
    from src.utils.console import Reporter

    rng = stream(12, "test-background-partitioned")
    z = rng.random(3000) < 0.4
    frame = pd.DataFrame(np.where(z[:, None], rng.normal(0.0, 1.0, (3000, 2)),
                                  rng.normal(3.0, 0.8, (3000, 2))), columns=["a", "b"])
    (tmp_path / "parts").mkdir()
    frame.iloc[:1500].to_parquet(tmp_path / "parts" / "p0.parquet")
    frame.iloc[1500:].to_parquet(tmp_path / "parts" / "p1.parquet")
    options = RunOptions(model="gmm", data=str(tmp_path / "parts"), n_starts=2, n_candidates=4,
                         progress_dir=str(tmp_path / "progress"),
                         output_dir=str(tmp_path / "results"), no_progress_tracking=True).validate()
    result = run(options, Reporter(stream=open(os.devnull, "w"), live=False))
    assert background.last_source() == "helper"
    prepared = result["prepared"]
    params = {k: np.asarray(v) for k, v in result["fit"]["params"].items()}
    here = figures(prepared.model, prepared.sample, params,
                   posteriors_of(prepared.model, prepared.sample, params, options.chunk_size))
    assert list(here) == ["scatter.png", "posterior.png"]
    for name, plot in here.items():
        assert (Path(options.results_dir) / name).read_bytes() == plot.png


# ------------------------------------------------------------------ two drawing processes
def _spawn_helper(split: bool) -> subprocess.Popen:
    """A drawing process as launch.spawn starts it (the go signal blocked until serve()
    handles it), with SPLIT set to ``split``."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import src.output.helper as h; "
            "h.SPLIT = sys.argv[3] == '1'; h.serve(int(sys.argv[2]))")
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    try:
        return subprocess.Popen([sys.executable, "-c", code, str(ROOT), str(os.getpid()),
                                 "1" if split else "0"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _drawn_by(proc, specs, job, go=False):
    """Send the first stages of ``specs`` then their second stages; {name: (answer, png)}.
    ``go``: send the go signal every 5 ms until the first answer comes (as the run does when
    it is done computing); "early": once, before the first stages (the process ready)."""
    import select

    from src.output.helper import read_message, write_all

    fd_in, fd_out = proc.stdin.fileno(), proc.stdout.fileno()
    if go == "early":
        meta, _ = read_message(fd_out)
        assert meta.get("ready") is True
        os.kill(proc.pid, signal.SIGUSR1)
        go = False
    items, arrays = background._items(specs, "first")
    write_all(fd_in, pack({"op": "prepare", "job": job, "items": items}, arrays))
    items, arrays = background._items(specs, "second")
    write_all(fd_in, pack({"op": "finish", "job": job + 1,
                           "items": [item + [job] for item in items]}, arrays))
    answers = {}
    while len(answers) < len(specs):
        while go and not answers and not select.select([fd_out], [], [], 0.005)[0]:
            os.kill(proc.pid, signal.SIGUSR1)
        meta, blobs = read_message(fd_out)
        if not meta.get("ready"):
            answers[meta["item"]] = (meta, blobs["bytes"].tobytes())
    return answers


@pytest.mark.parametrize("split, processes", [(True, 2), (False, 1)])
def test_figures_are_drawn_by_the_helper_and_its_fork(fits, split, processes):
    """A finish message's figures are drawn by the helper (the first) and a fork of it (the others): two pids, the helper's among them; without SPLIT all by the helper. The bytes are those drawn here either way."""
    proc = _spawn_helper(split)
    try:
        for number, case in enumerate(("gmm4", "lca")):
            model, data, params, post = fits[case]
            specs = figure_specs(model, data, params, post)
            assert len(specs) == 2
            answers = _drawn_by(proc, specs, 10 * number + 1)
            pids = {meta["pid"] for meta, _ in answers.values()}
            assert proc.pid in pids and len(pids) == processes
            for name, spec in specs.items():
                assert answers[name][0]["error"] is None
                assert answers[name][1] == render(spec).png, (case, name)
    finally:
        proc.stdin.close()
        assert proc.wait(60) == 0
        proc.stdout.close()


@pytest.mark.parametrize("go", [False, True, "early"])
def test_the_fork_waits_for_the_go_or_the_helpers_own_figure(fits, go):
    """Without the run's go signal the fork begins its figure only once the helper has drawn its own (the run is still computing); with it (the run is done computing), at once, also when the go came before the figures: the two second stages overlap."""
    proc = _spawn_helper(True)
    try:
        model, data, params, post = fits["gmm4"]
        specs = figure_specs(model, data, params, post)
        answers = _drawn_by(proc, specs, 1, go=go)
        (own, _), (forked, _) = (answers[name] for name in specs)
        assert own["pid"] == proc.pid and forked["pid"] != proc.pid
        assert own["error"] is None and forked["error"] is None
        if go:
            assert forked["began"] < own["ended"]
        else:
            assert forked["began"] >= own["ended"]
    finally:
        proc.stdin.close()
        assert proc.wait(60) == 0
        proc.stdout.close()


def test_an_early_go_signal_does_not_end_the_drawing_process():
    """The go signal sent while the drawing process starts (before serve() handles it) waits, blocked, and does nothing: the process answers ready and draws."""
    from src.output import launch
    from src.output.helper import read_message, write_all

    proc = launch.spawn()
    try:
        for _ in range(5):
            os.kill(proc.pid, signal.SIGUSR1)
        meta, _ = read_message(proc.stdout.fileno())
        assert meta.get("ready") is True
        spec = posterior_spec(np.array([[0.9, 0.1], [0.3, 0.7]]))
        items, arrays = background._items({"posterior.png": spec}, "all")
        write_all(proc.stdin.fileno(), pack({"op": "finish", "job": 1,
                                             "items": [item + [None] for item in items]}, arrays))
        os.kill(proc.pid, signal.SIGUSR1)
        meta, blobs = read_message(proc.stdout.fileno())
        assert meta["error"] is None and blobs["bytes"].tobytes() == render(spec).png
        assert proc.poll() is None
    finally:
        proc.stdin.close()
        assert proc.wait(60) == 0
        proc.stdout.close()


FORK_DIES = """
import json, os, sys
sys.path.insert(0, {root!r})
import numpy as np
from src.output import helper
from src.output.plots.spec import DRAW

def die(meta, arrays):
    yield
    os._exit(3)

DRAW["die"] = die
tau = {{"tau": np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])}}
work = [("posterior.png", "posterior", {{"n": 3, "mean": 0.7}}, tau, None),
        ("die.png", "die", {{}}, {{}}, None)]
read_end, write_end = os.pipe()
helper._finish_all(write_end, 7, work)
os.close(write_end)
seen = []
while True:
    message = helper.read_message(read_end)
    if message is None:
        break
    seen.append([message[0]["item"], message[0]["error"], message[0].get("pid") == os.getpid()])
print(json.dumps(seen))
"""


def test_a_fork_that_dies_leaves_its_figures_to_the_run(tmp_path):
    """The fork drawing the second figure dies: the first figure is answered, the second with an error (the run then draws it itself)."""
    import json

    script = tmp_path / "dies.py"
    script.write_text(FORK_DIES.format(root=str(ROOT)))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen[0] == ["posterior.png", None, True]
    assert seen[1][0] == "die.png" and "ended early" in seen[1][1]
    assert len(seen) == 2


@pytest.mark.parametrize("finish_too", [False, True])
def test_the_warm_up_figure_follows_a_prepare_but_not_a_finish(fits, finish_too):
    """The drawing process draws its small warm-up figure once idle even when a run's first stages came while it imported matplotlib (they are drawn first); not once it has finished figures (the ready answer says which). Either way the figures' bytes are those drawn here."""
    import select

    from src.output.helper import read_message, write_all

    model, data, params, post = fits["lca"]
    specs = figure_specs(model, data, params, post)
    proc = _spawn_helper(True)
    try:
        fd_in, fd_out = proc.stdin.fileno(), proc.stdout.fileno()
        items, arrays = background._items(specs, "first")
        write_all(fd_in, pack({"op": "prepare", "job": 1, "items": items}, arrays))
        if finish_too:   # the estimate known before the process is ready
            items, arrays = background._items(specs, "second")
            write_all(fd_in, pack({"op": "finish", "job": 2,
                                   "items": [item + [1] for item in items]}, arrays))
            os.kill(proc.pid, signal.SIGUSR1)   # the run's go: it waits for the figures
        answers, ready = {}, None
        while ready is None or (finish_too and len(answers) < len(specs)):
            assert select.select([fd_out], [], [], 120)[0], "no answer within 120 s"
            meta, blobs = read_message(fd_out)
            if meta.get("ready"):
                ready = meta
            else:
                answers[meta["item"]] = blobs["bytes"].tobytes()
        assert ready["warmed"] is (not finish_too)
        if not finish_too:   # the first stages kept: the second stages finish them
            items, arrays = background._items(specs, "second")
            write_all(fd_in, pack({"op": "finish", "job": 2,
                                   "items": [item + [1] for item in items]}, arrays))
            os.kill(proc.pid, signal.SIGUSR1)
            while len(answers) < len(specs):
                meta, blobs = read_message(fd_out)
                answers[meta["item"]] = blobs["bytes"].tobytes()
        for name, spec in specs.items():
            assert answers[name] == render(spec).png, name
    finally:
        proc.stdin.close()
        proc.wait(30)
