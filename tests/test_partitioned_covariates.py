"""One-step covariate models over partitioned Parquet input: the scan and chunks against the
in-memory data phase, the pipeline's estimates, standard errors and posteriors against a
one-file run, the answer patterns' goodness of fit against the in-memory run's, the
refinement over an engine, Dask with one and two workers, and the covariates' errors naming
the file and the global row.

Data: an LCA with three covariates (two covariate values missing, so every run uses
``--drop-missing``) and a Gaussian mixture with two covariates whose values are multiples
of 2^-8 in files and chunks of 256 rows, so the centring shift merged from the chunks'
means is the in-memory mean bit for bit and its runs can be compared bitwise too.  Each
family's one-file and folder runs are made once per module (in process) and shared.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from src.config import RunOptions
from src.estimation import fit_em
from src.utils.errors import DataError, UsageError
from tests.helpers import assert_one_sentence, results_dir
from tests.inprocess import run_main
from tests.test_covariates import gmm_data, lca_data
from tests.test_executors import dask_cluster  # noqa: F401  (the session's Dask cluster)

ITEMS = [f"q{j + 1}" for j in range(6)]
LCA_COVS = ["x1", "x2", "x3"]
GMM_COVS = ["x1", "x2"]
#: rows of the LCA files (the folder's three files, in sorted order); rows 5 and 450 lack x2
LCA_CUTS = (400, 700)
LCA_N = 1200
MISSING = (5, 450)
#: the GMM's files hold 512 rows each, read in chunks of 256
GMM_N, GMM_CUTS, GMM_CHUNK = 1536, (512, 1024), 256
FAST = ("--n-starts", "2", "--n-candidates", "6", "--no-plots", "--formats", "md",
        "--save-interval", "0", "--tol", "1e-10")
SE = ("--se-method", "all", "--bootstrap", "poisson", "--n-bootstrap", "3")
LCA_ARGS = ("--model", "lca", "--components", "3", "--covariates", ",".join(LCA_COVS),
            "--drop-missing", *FAST)
GMM_ARGS = ("--model", "gmm", "--components", "3", "--covariates", ",".join(GMM_COVS),
            "--chunk-size", str(GMM_CHUNK), *FAST)


def lca_frame() -> pd.DataFrame:
    """Six binary items (codes 1, 2) whose classes follow a logit of three covariates."""
    Y, X, _, _ = lca_data(LCA_N, seed=21, J=len(ITEMS))
    frame = pd.DataFrame(Y + 1, columns=ITEMS)
    for j, name in enumerate(LCA_COVS):
        frame[name] = X[:, j]
    frame.loc[list(MISSING), "x2"] = np.nan
    return frame


def gmm_frame() -> pd.DataFrame:
    """Two Gaussian columns (multiples of 2^-8) whose classes follow a logit of two covariates."""
    Y, X, _, _ = gmm_data(GMM_N, seed=22)
    frame = pd.DataFrame(np.round(Y * 256) / 256, columns=["y1", "y2"])
    for j, name in enumerate(GMM_COVS):
        frame[name] = X[:, j]
    return frame


def write(folder, frame: pd.DataFrame, cuts, row_group: int) -> None:
    """``frame`` as one file ``all.parquet`` and as a folder ``parts`` of files cut at ``cuts``."""
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / "all.parquet",
                   row_group_size=row_group)
    (folder / "parts").mkdir()
    edges = [0, *cuts, len(frame)]
    for i, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        pq.write_table(pa.Table.from_pandas(frame.iloc[a:b], preserve_index=False),
                       folder / "parts" / f"part-{i}.parquet", row_group_size=row_group)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    base = tmp_path_factory.mktemp("partitioned-covariates")
    write(base / "lca", lca_frame(), LCA_CUTS, 100)
    write(base / "gmm", gmm_frame(), GMM_CUTS, 128)
    return base


def _pair(base, data, args):
    """The one-file run and the folder run of ``args`` (in process), their folders."""
    out = []
    for name, where in (("mem", data / "all.parquet"), ("part", data / "parts")):
        run = base / name
        run.mkdir()
        proc = run_main(run, "--data", str(where), *args)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out.append(run)
    return tuple(out)


@pytest.fixture(scope="module")
def lca_runs(inputs, tmp_path_factory):
    return _pair(tmp_path_factory.mktemp("lca-runs"), inputs / "lca", (*LCA_ARGS, *SE))


@pytest.fixture(scope="module")
def gmm_runs(inputs, tmp_path_factory):
    return _pair(tmp_path_factory.mktemp("gmm-runs"), inputs / "gmm",
                 (*GMM_ARGS, "--se-method", "louis"))


def _estimates(run) -> pd.DataFrame:
    return pd.read_csv(results_dir(run) / "estimates.csv")


def _fit(run) -> dict:
    return json.loads((results_dir(run) / "fit.json").read_text(encoding="utf-8"))


def _options(data, args, extra=()) -> RunOptions:
    """The run options of the command line ``--data data *args *extra``."""
    from src.pipeline.cli import parse

    return parse(["--data", str(data), *args, *extra])[1]


# ------------------------------------------------------------- the data phase
class TestScan:
    @pytest.mark.parametrize("family", ["lca", "gmm"])
    def test_scan_and_chunks_are_the_in_memory_data(self, inputs, family):
        """The scan's meta, counts and every chunk's arrays (Z included, fast path or not) are the in-memory data phase's, and the sample carries Z."""
        import src.data.partitions as partitions
        from src.pipeline.partitioned import materialise_partitioned, prepare_partitioned
        from src.pipeline.phases import _read, prepare_frame

        data = inputs / family
        args = LCA_ARGS if family == "lca" else GMM_ARGS
        mem_opts = _options(data / "all.parquet", args)
        frame, record, cls = _read(mem_opts)
        memory = prepare_frame(frame, mem_opts, cls, record)
        opts = _options(data / "parts", args)
        record = prepare_partitioned(opts)
        assert record["meta"] == memory.meta            # the covariates' names included
        assert record["n_obs"] == memory.n_obs and record["n_dropped"] == memory.record["n_dropped"]
        assert record["covariates"] == memory.record["covariates"]
        assert record["columns"] == memory.record["columns"]
        prepared = materialise_partitioned(record, opts)
        saved = partitions.FAST_CHUNKS
        try:
            for fast in (True, False):
                partitions.FAST_CHUNKS = fast
                chunks = [c for i in range(prepared.data.n_partitions)
                          for c in prepared.data.reader.chunks(i)]
                got = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
                assert list(got) == list(memory.data)
                for key, value in memory.data.items():
                    assert got[key].dtype == value.dtype and np.array_equal(got[key], value)
                assert all(c["Z"].flags.c_contiguous for c in chunks)
        finally:
            partitions.FAST_CHUNKS = saved
        assert list(prepared.sample) == list(memory.data)
        for key, value in memory.data.items():   # --sample-rows >= N: every row in order
            assert np.array_equal(prepared.sample[key], value)
        assert prepared.model.covariates == memory.model.covariates

    def test_fast_path_weights_and_missing_covariates(self, tmp_path):
        """The passes' fast path reads the covariates too (an integer column among them): with row weights (zeros, a missing one) and missing covariates under --drop-missing its chunks are the slow path's bit for bit and the in-memory arrays; a missing covariate without --drop-missing met in a pass raises the scan's sentence."""
        import src.data.partitions as partitions
        from src.data.partitions import _fast_chunk, _fast_plan, _read_chunks, kept_chunks
        from src.pipeline.partitioned import materialise_partitioned, prepare_partitioned
        from src.pipeline.phases import _read, prepare_frame

        frame = gmm_frame()
        rng = np.random.default_rng(5)
        frame["k"] = rng.integers(0, 5, size=len(frame))
        frame["w"] = rng.integers(0, 4, size=len(frame)).astype(float)
        frame.loc[[3, 700], "w"] = np.nan
        frame.loc[[10, 11, 900], "x2"] = np.nan
        write(tmp_path, frame, GMM_CUTS, 128)
        args = ("--model", "gmm", "--components", "3", "--covariates", "x1,x2,k",
                "--weights", "w", "--drop-missing", "--chunk-size", "100")
        mem_opts = _options(tmp_path / "all.parquet", args)
        table, record, cls = _read(mem_opts)
        memory = prepare_frame(table, mem_opts, cls, record)
        opts = _options(tmp_path / "parts", args)
        prepared = materialise_partitioned(prepare_partitioned(opts), opts)
        reader = prepared.data.reader
        passes = {}
        saved = partitions.FAST_CHUNKS
        try:
            for fast in (True, False):
                partitions.FAST_CHUNKS = fast
                passes[fast] = [c for p in reader.partitions
                                for c in kept_chunks(reader.text, p, reader.cls, reader.options,
                                                     reader.meta, 100, columns=reader.columns,
                                                     weight_column="w")]
        finally:
            partitions.FAST_CHUNKS = saved
        assert len(passes[True]) == len(passes[False]) > 0
        for (r1, _, d1), (r2, _, d2) in zip(passes[True], passes[False]):
            assert np.array_equal(r1, r2) and list(d1) == list(d2) == ["X", "__weight__", "Z"]
            assert all(d1[k].tobytes() == d2[k].tobytes() for k in d1)
        got = {k: np.concatenate([d[k] for _, _, d in passes[True]]) for k in memory.data}
        assert all(np.array_equal(got[k], memory.data[k]) for k in memory.data)
        plan = _fast_plan(reader.cls, reader.columns, reader.options)
        covs = ["x1", "x2", "k"]
        took = [fast for p in reader.partitions
                for fast in _read_chunks(p, ["y1", "y2", "w", *covs], 100, lambda c: isinstance(
                    _fast_chunk(plan, c, "w", True, (), covs), tuple))]
        assert took and all(took)
        strict = {**reader.options, "drop_missing": False}
        first = next(p for p in reader.partitions if p.first_row == 0)
        with pytest.raises(DataError, match=r"'x2'.*part-0\.parquet.* row 10 "):
            list(kept_chunks(reader.text, first, reader.cls, strict,
                             {**reader.meta}, 100, columns=reader.columns))

    def test_the_design_key_is_the_models(self):
        """The data layer's name for the design is the covariate model's."""
        from src.data.partitions import Z_KEY
        from src.models.covariates import Z_KEY as MODEL_Z_KEY

        assert Z_KEY == MODEL_Z_KEY

    def test_missing_covariate_without_drop_missing_names_file_and_row(self, inputs, tmp_path):
        """Without --drop-missing a missing covariate stops the folder run with one sentence naming the column, its file and the global row (the one-file run names the same row)."""
        args = [a for a in LCA_ARGS if a != "--drop-missing"]
        part = run_main(tmp_path, "--data", str(inputs / "lca" / "parts"), *args)
        assert part.returncode == 2
        assert_one_sentence(part.stderr)
        assert "'x2'" in part.stderr and "part-0.parquet" in part.stderr
        assert "row 5 " in part.stderr and "--drop-missing" in part.stderr
        mem = run_main(tmp_path, "--data", str(inputs / "lca" / "all.parquet"), *args,
                       "--task-name", "mem")
        assert mem.returncode == 2 and "row 5 " in mem.stderr

    def test_bad_values_and_design_errors_as_in_memory(self, tmp_path):
        """Text in a covariate names its file and global row; a constant or dependent covariate gives the in-memory sentence; a covariate in --columns is refused; without --columns the covariates are not model columns."""
        from src.data.partitions import PartitionedSource, scan
        from src.models.lca import LatentClassModel

        frame = lca_frame().dropna().reset_index(drop=True)
        frame["x4"] = 2 * frame["x1"] - frame["x3"]
        frame["one"] = 1.0
        text = frame.assign(x3=frame["x3"].map(repr))   # numbers stored as text are read
        text.loc[650, "x3"] = "n/a"
        write(tmp_path / "t", text, LCA_CUTS, 100)
        write(tmp_path / "d", frame, LCA_CUTS, 100)
        opts = {"drop_missing": False}
        with pytest.raises(DataError) as err:
            scan(str(tmp_path / "t" / "parts"), LatentClassModel, opts, chunk_rows=64,
                 columns=ITEMS, covariates=["x1", "x3"])
        assert "'x3'" in str(err.value) and "part-1.parquet" in str(err.value)
        assert "row 650 " in str(err.value) and "'n/a'" in str(err.value)
        source = str(tmp_path / "d" / "parts")
        for covs, name in ((["x1", "x3", "x4"], "'x4'"), (["one", "x1"], "'one'")):
            from src.api import fit

            with pytest.raises(DataError) as memory:
                fit(frame.astype({c: str for c in ITEMS}), "lca", 3, columns=ITEMS,
                    covariates=covs, n_starts=1)
            with pytest.raises(DataError) as parts:
                scan(source, LatentClassModel, opts, chunk_rows=64, columns=ITEMS,
                     covariates=covs)
            assert name in str(parts.value)
            assert str(parts.value).replace(source, "SRC") == \
                str(memory.value).replace("the data", "SRC")
        with pytest.raises(UsageError, match="'x1'"):
            scan(source, LatentClassModel, opts, chunk_rows=64, columns=[*ITEMS, "x1"],
                 covariates=["x1"])
        bare = scan(PartitionedSource.open(source), LatentClassModel, opts, chunk_rows=500,
                    columns=None, covariates=LCA_COVS, id_column="x4")
        assert bare.columns == [*ITEMS, "one"] and bare.meta["covariates"] == LCA_COVS


# ------------------------------------------------------------------ the pipeline
def _same_estimates(part, mem, tolerances) -> None:
    a, b = _estimates(mem), _estimates(part)
    assert list(a["parameter"]) == list(b["parameter"])
    assert any(p.startswith("beta[2,") for p in a["parameter"])
    assert np.array_equal(b["estimate"].to_numpy(), a["estimate"].to_numpy())
    for column, rtol in tolerances.items():
        np.testing.assert_allclose(b[column], a[column], rtol=rtol, atol=1e-300)


class TestPipeline:
    def test_lca_estimates_ses_and_posteriors_as_in_memory(self, lca_runs):
        """An LCA with covariates over a folder of files (--drop-missing dropping two rows for a missing covariate) gives the one-file run's estimates bit for bit, its Louis, numerical and sandwich SEs to 1e-10 and Poisson-bootstrap SEs to 1e-5, its posteriors and classification."""
        mem, part = lca_runs
        _same_estimates(part, mem, {"se_louis": 1e-10, "se_numerical": 1e-8,
                                    "se_sandwich": 1e-10, "se_bootstrap": 1e-5})
        fa, fb = _fit(mem), _fit(part)
        assert fb["loglik"] == fa["loglik"] and fb["n_obs"] == fa["n_obs"] == LCA_N - 2
        assert fb["rows"]["n_dropped"] == fa["rows"]["n_dropped"] == 2
        ca, cb = fa["classification"]["counts"], fb["classification"]["counts"]
        assert cb["modal"] == ca["modal"] and cb.keys() == ca.keys()
        for key in ca:   # sums over rows: added per partition, to rounding
            np.testing.assert_allclose(cb[key], ca[key], rtol=1e-12)
        csv = pd.read_csv(results_dir(mem) / "posteriors.csv")
        got = pd.read_parquet(results_dir(part) / "posteriors")
        assert list(got.columns) == list(csv.columns)
        assert list(got["row"]) == [r for r in range(LCA_N) if r not in MISSING]
        np.testing.assert_allclose(got[["p1", "p2", "p3"]], csv[["p1", "p2", "p3"]],
                                   rtol=1e-12, atol=1e-15)
        report = (results_dir(part) / "report.md").read_text(encoding="utf-8")
        assert "## Covariates of class membership" in report

    def test_gmm_estimates_and_louis_ses_as_in_memory(self, gmm_runs):
        """A Gaussian mixture with covariates over a folder of files gives the one-file run's estimates bit for bit (the same shift, chunks and sample) and its Louis SEs to 1e-10."""
        mem, part = gmm_runs
        _same_estimates(part, mem, {"se": 1e-10})
        assert _fit(part)["loglik"] == _fit(mem)["loglik"]
        assert _fit(part)["posteriors"]["files"] == 3

    def test_dask_scheduler_gives_the_in_process_bits(self, inputs, lca_runs, tmp_path,
                                                      dask_cluster):  # noqa: F811
        """With --scheduler the covariate model's class-size summary, Louis SEs and posteriors' pass read the design on Dask workers and give the in-process folder run's estimates and Louis SEs bit for bit."""
        _, part = lca_runs
        proc = run_main(tmp_path, "--data", str(inputs / "lca" / "parts"), *LCA_ARGS,
                        "--se-method", "louis", "--scheduler", dask_cluster.scheduler_address)
        assert proc.returncode == 0, proc.stderr[-3000:]
        got, want = _estimates(tmp_path), _estimates(part)
        assert np.array_equal(got["estimate"].to_numpy(), want["estimate"].to_numpy())
        assert np.array_equal(got["se"].to_numpy(), want["se_louis"].to_numpy())
        for key in ("goodness_of_fit", "bivariate_residuals"):   # the table summed on workers
            assert _fit(tmp_path)[key] == _fit(part)[key]


# --------------------------------------------------------- the answer patterns
def _close(a, b, rel: float = 1e-10, path: str = "") -> None:
    """Two JSON values equal: numbers to ``rel`` (ints and everything else exactly)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for key in a:
            _close(a[key], b[key], rel, f"{path}.{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, rel, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert b == pytest.approx(a, rel=rel, abs=1e-300), path
    else:
        assert type(a) is type(b) and a == b, path


SUMMARY_KEYS = ("goodness_of_fit", "bivariate_residuals", "response_probabilities")


class TestAnswerPatterns:
    def test_lca_goodness_of_fit_as_in_memory(self, lca_runs):
        """A covariate LCA over a folder of files gives the one-file run's G2, X2, df, notes, bivariate residuals and response-probability table (with SEs) to 1e-10, and its report shows them."""
        mem, part = lca_runs
        a, b = _fit(mem), _fit(part)
        for key in SUMMARY_KEYS:
            assert key in a and key in b, key
            _close(a[key], b[key], path=key)
        g = b["goodness_of_fit"]
        assert g["df"] == a["goodness_of_fit"]["df"] and g["n_complete"] == LCA_N - 2
        assert g["g2"] > 0 and g["n_params_model"] == b["n_params"]
        assert not b["classification"].get("notes")   # nothing left out
        report = (results_dir(part) / "report.md").read_text(encoding="utf-8")
        assert "## Goodness of fit" in report and "## Response probabilities by class" in report

    def test_missing_answers_weights_and_short_chunks(self, tmp_path):
        """With missing answers, row weights and chunks of 7 rows (files ending in a one-row chunk), the pattern table summed over partitions (class-probability sums included) gives the in-memory summaries to 1e-10."""
        from src.inference.summaries import model_summaries
        from src.pipeline.partitioned import pattern_table

        frame = lca_frame().dropna().reset_index(drop=True)
        rng = np.random.default_rng(8)
        answers = np.array(frame[ITEMS], dtype=float)
        answers[rng.random(answers.shape) < 0.06] = np.nan
        frame[ITEMS] = answers
        frame["w"] = rng.integers(1, 4, size=len(frame)).astype(float)
        write(tmp_path, frame, (400, 701), 100)
        args = ("--model", "lca", "--components", "3", "--covariates", ",".join(LCA_COVS),
                "--weights", "w", "--chunk-size", "7")
        prepared = _materialised(tmp_path / "parts", args)
        memory = _memory(tmp_path / "all.parquet", args)
        params = fit_em(memory.model, memory.data, n_starts=1, max_iter=20, seed=2).params
        options = dict(n_params=memory.model.n_free_parameters(), se=None, ci_level=0.95,
                       seed=1)
        want = model_summaries(memory.model, memory.data, params, **options)
        table = pattern_table(prepared, params)
        assert table["__weight__"].sum() == frame["w"].sum()
        assert (table["Y"] < 0).any(axis=1).any()   # patterns with missing answers kept
        got = model_summaries(prepared.model, table, params, **options)
        assert list(got) == list(want) == list(SUMMARY_KEYS)
        _close(want, got)
        assert want["goodness_of_fit"]["n_complete"] < want["goodness_of_fit"]["n_rows"]


# ------------------------------------------------------------- the refinement
def _materialised(data, args, *extra):
    from src.pipeline.partitioned import materialise_partitioned, prepare_partitioned

    opts = _options(data, args, extra)
    return materialise_partitioned(prepare_partitioned(opts), opts)


def _memory(data, args, *extra):
    from src.pipeline.phases import _read, prepare_frame

    opts = _options(data, args, extra)
    frame, record, cls = _read(opts)
    return prepare_frame(frame, opts, cls, record)


REFINE = dict(max_iter=6, tol=1e-300, accelerate="none")


class TestRefinement:
    def test_one_file_streamed_is_the_in_memory_fit_bitwise(self, inputs):
        """Generalised EM over one streamed file (the Newton passes and the class-size summary over the engine) gives the in-memory fit's bits with the same chunks."""
        chunk = ("--chunk-size", str(GMM_CHUNK))
        prepared = _materialised(inputs / "gmm" / "all.parquet", GMM_ARGS, *chunk, "--stream")
        memory = _memory(inputs / "gmm" / "all.parquet", GMM_ARGS, *chunk)
        init = fit_em(memory.model, memory.data, n_starts=1, max_iter=3, seed=1).params
        a = fit_em(memory.model, memory.data, init_params=init, chunk_size=GMM_CHUNK, **REFINE)
        b = fit_em(prepared.model, prepared.data, init_params=init, chunk_size=GMM_CHUNK,
                   **REFINE)
        assert b.loglik == a.loglik and a.n_iter == b.n_iter == REFINE["max_iter"]
        for key, value in a.params.items():
            assert np.array_equal(b.params[key], value), key

    def test_folder_refinement_agrees_to_1e12(self, inputs):
        """Over a folder of files (chunks on the raw rows' grid, restarting at each file, two rows dropped) the LCA's generalised EM from the same start agrees with the in-memory fit to 1e-12 relative."""
        prepared = _materialised(inputs / "lca" / "parts", LCA_ARGS, "--chunk-size", "200")
        memory = _memory(inputs / "lca" / "all.parquet", LCA_ARGS, "--chunk-size", "200")
        init = fit_em(memory.model, memory.data, n_starts=1, max_iter=3, seed=1).params
        a = fit_em(memory.model, memory.data, init_params=init, chunk_size=200, **REFINE)
        b = fit_em(prepared.model, prepared.data, init_params=init, chunk_size=200, **REFINE)
        assert b.loglik == pytest.approx(a.loglik, rel=1e-12)
        for key, value in a.params.items():
            np.testing.assert_allclose(b.params[key], value, rtol=1e-12, atol=1e-13)

    def test_one_and_two_dask_workers_give_the_streaming_bits(self, inputs,
                                                              dask_cluster):  # noqa: F811
        """The refinement on Dask with one worker and with two (the design read on the workers) gives the in-process streaming engine's bits."""
        from distributed import Client
        from src.parallel.dask_engine import DaskEngine

        prepared = _materialised(inputs / "lca" / "parts", LCA_ARGS, "--chunk-size", "150")
        model, engine = prepared.model, prepared.data
        init = fit_em(model, prepared.sample, n_starts=1, max_iter=3, seed=1).params
        want = fit_em(model, engine, init_params=init, **REFINE)
        with Client(dask_cluster.scheduler_address, set_as_default=False) as client:
            one = sorted(client.scheduler_info()["workers"])[:1]
            for workers in (one, None):
                with DaskEngine(client, engine.reader, persist=True, workers=workers) as dask:
                    got = fit_em(model, dask, init_params=init, **REFINE)
                assert got.loglik == want.loglik
                for key, value in want.params.items():
                    assert np.array_equal(got.params[key], value), key
