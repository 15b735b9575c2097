"""Per-row posteriors (src/output/posteriors.py) and the --id column (src/data/rows.py, the
data phase): posteriors equal the responsibilities computed with scipy's logsumexp on the
model's log_joint and sum to one; ids and input positions survive --drop-missing in input
order; partitioned Parquet parts read back in sorted order equal the CSV; --id's errors.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from scipy.special import logsumexp

from src.config import RunOptions
from src.data.rows import kept_rows
from src.estimation import fit_em
from src.models.gmm import GaussianMixtureModel
from src.models.lca import LatentClassModel
from src.models.mixreg import MixtureRegressionModel
from src.output.posteriors import (part_name, posterior_columns, posteriors_csv,
                                   write_posteriors_parquet)
from src.pipeline import phases
from src.utils.errors import DataError, UsageError
from tests.helpers import assert_one_sentence, read_progress, results_dir
from tests.inprocess import run_main

ROOT = Path(__file__).resolve().parents[1]
FAITHFUL = ROOT / "src" / "data" / "builtin" / "faithful.csv"
CARCINOMA = Path(__file__).parent / "reference" / "carcinoma.csv"


def _fitted(family: str):
    if family == "gmm":
        frame, cls, opts = pd.read_csv(FAITHFUL), GaussianMixtureModel, {}
    elif family == "lca":
        frame, cls, opts = pd.read_csv(CARCINOMA, dtype=str), LatentClassModel, {}
    else:
        frame, cls, opts = pd.read_csv(FAITHFUL), MixtureRegressionModel, {"target": "waiting"}
    data, meta = cls.prepare_data(frame, opts)
    model = cls(2)
    model.setup(meta)
    return model, data, fit_em(model, data, n_starts=2, seed=5).params


def _read(blob: bytes, id_type=None) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(blob),
                       dtype=None if id_type is None else {0: id_type}, keep_default_na=False)


class TestPosteriors:
    @pytest.mark.parametrize("family", ["gmm", "lca", "mixreg"])
    def test_equal_responsibilities_and_sum_to_one(self, family):
        """p1..pK equal exp(log_joint - logsumexp(log_joint)) (scipy) to 1e-12, sum to one, class is the argmax."""
        model, data, params = _fitted(family)
        got = _read(posteriors_csv(model, data, params, chunk_size=100))
        lj = model.log_joint(data, params)
        tau = np.exp(lj - logsumexp(lj, axis=1, keepdims=True))
        assert list(got.columns) == ["row", "p1", "p2", "class"] == posterior_columns(2)
        assert got["row"].tolist() == list(range(tau.shape[0]))
        p = got[["p1", "p2"]].to_numpy()
        np.testing.assert_allclose(p, tau, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=0, atol=1e-12)
        assert (got["class"].to_numpy() == tau.argmax(axis=1) + 1).all()

    def test_full_precision_and_chunk_size(self):
        """Every value reads back as the responsibility's float64, with chunks of 7 rows or one chunk."""
        model, data, params = _fitted("gmm")
        resp, _ = model.e_step(data, params)
        a = posteriors_csv(model, data, params, chunk_size=7)
        b = posteriors_csv(model, data, params, chunk_size=10 ** 6)
        pa, pb = _read(a)[["p1", "p2"]].to_numpy(), _read(b)[["p1", "p2"]].to_numpy()
        np.testing.assert_allclose(pa, pb, rtol=1e-14, atol=1e-300)
        assert (pb == resp).all()  # the text reads back to the same float64
        first = b.decode().splitlines()[1].split(",")
        assert [float(v) for v in first[1:3]] == resp[0].tolist()
        assert all(len(v) <= 24 for v in first)  # shortest text, not 17 digits padded

    def test_ids_text_quoting_and_missing(self):
        """Ids are written as given (quoted, as csv reads them, when one holds a comma or quote; a missing id empty) under the id column's name."""
        X = np.array([[0.0], [1.0], [5.0], [6.0]])
        model = GaussianMixtureModel(2)
        model.setup(GaussianMixtureModel.meta_for_array(X))
        params = {"weight": np.array([0.5, 0.5]), "mean": np.array([[0.5], [5.5]]),
                  "cov": np.array([[[1.0]], [[1.0]]])}
        ids = np.array(["a,b", 'say "hi"', np.nan, "007"], dtype=object)
        blob = posteriors_csv(model, {"X": X}, params, ids, id_column="who, really")
        rows = list(csv.reader(io.StringIO(blob.decode())))
        assert rows[0] == ["who, really", "p1", "p2", "class"]
        assert [r[0] for r in rows[1:]] == ["a,b", 'say "hi"', "", "007"]
        assert [r[3] for r in rows[1:]] == ["1", "1", "2", "2"]
        plain = posteriors_csv(model, {"X": X}, params, np.array(["a", "b", None, "007"], dtype=object))
        assert [line.split(",")[0] for line in plain.decode().splitlines()] == ["row", "a", "b", "", "007"]
        floats = posteriors_csv(model, {"X": X}, params, np.array([1.0, 2.5, np.nan, 4.0]))
        assert [line.split(",")[0] for line in floats.decode().splitlines()[1:]] == ["1", "2.5", "", "4"]


    @pytest.mark.parametrize("family", ["gmm", "lca"])
    def test_given_posteriors_write_the_same_file(self, family):
        """With resp= (posteriors_of: LCA's patterns expanded) the file reads back as the one computed row by row, to rounding, with the same classes."""
        from src.inference.classification import posteriors_of

        model, data, params = _fitted(family)
        post = posteriors_of(model, data, params)
        given = _read(posteriors_csv(model, data, params, chunk_size=100, resp=post))
        computed = _read(posteriors_csv(model, data, params, chunk_size=100))
        assert list(given.columns) == list(computed.columns)
        assert given["row"].tolist() == computed["row"].tolist()
        np.testing.assert_allclose(given[["p1", "p2"]].to_numpy(), computed[["p1", "p2"]].to_numpy(),
                                   rtol=1e-12, atol=1e-15)
        assert (given["class"] == computed["class"]).all()
        as_array = posteriors_csv(model, data, params, resp=post.rows())
        assert as_array == posteriors_csv(model, data, params, resp=post)
        with pytest.raises(ValueError, match="posteriors of 3 rows"):
            posteriors_csv(model, data, params, resp=post.rows()[:3])

    def test_csv_of_posteriors_in_two_halves_and_cancelled(self):
        """csv_of_posteriors is write_csv_table of csv_table (rows, or answer patterns with inverse); cancelled() is asked before each block of rows: False changes nothing, True raises Cancelled."""
        from src.output.posteriors import Cancelled, csv_of_posteriors, csv_table, write_csv_table

        rng = np.random.default_rng(4)
        patterns = rng.dirichlet([1.0, 1.0, 1.0], 40)
        inverse = rng.integers(0, 40, 5000)
        labels = np.arange(5000) * 2
        whole = csv_of_posteriors(labels, patterns, inverse, "id")
        assert whole == csv_of_posteriors(labels, patterns[inverse], None, "id", chunk_size=7)
        asked = []
        prepared = csv_table(labels, patterns, inverse, "id")
        assert write_csv_table(prepared, lambda: asked.append(1)) == whole and asked == [1]
        with pytest.raises(Cancelled):
            write_csv_table(prepared, lambda: True)

    def test_text_within_the_size_bound_or_grown(self):
        """The text fits the size bound csv_table gives (longest numbers, text needing quotes); with a bound too small, or none, the same bytes come from a buffer grown as they are written."""
        import dataclasses

        from src.output.posteriors import csv_table, write_csv_table

        tau = np.array([[2.2250738585072014e-308, 1.0], [0.1, 0.9], [1 / 3, 2 / 3]] * 50)
        for labels in (np.array([-9223372036854775808, 2 ** 63 - 1, 0] * 50),
                       np.array(['"', 'a,"b"', None] * 50, dtype=object),
                       -np.arange(150) / 7.0):
            prepared = csv_table(labels, tau, None, "id")
            text = write_csv_table(prepared)
            assert prepared.size_bound is not None and len(text) <= prepared.size_bound
            for bound in (len(text) - 1, 10, None):
                assert write_csv_table(dataclasses.replace(prepared, size_bound=bound)) == text


    @pytest.mark.parametrize("K", [1, 2, 3, 5])
    def test_rows_of_answer_patterns_written_from_the_patterns_text(self, K):
        """Rows given as distinct patterns and their inverse (LCA) are written from each pattern's text (dictionary columns): byte for byte the file of the rows themselves -- awkward floats (the smallest normal and subnormal, 1 - 1e-16, 1/3, ties), ids of every kind -- within the size bound; ids that need quotes, many patterns or none take the rows' own path."""
        import dataclasses

        import pyarrow as pa

        from src.output.posteriors import _pattern_table, csv_table, write_csv_table

        rng = np.random.default_rng(K)
        odd = [2.2250738585072014e-308, 5e-324, 1 - 1e-16, 1 / 3, 0.0, 1.0, 0.5, 1e-7, 123.25]
        patterns = np.concatenate([rng.dirichlet(np.ones(K), 60),
                                   np.array(odd)[rng.integers(0, len(odd), (9, K))]])
        inverse = rng.integers(0, patterns.shape[0], 3000)
        for labels in (np.arange(3000) * 7, np.linspace(-1, 1, 3000),
                       np.array(["r%d" % i if i % 11 else None for i in range(3000)], dtype=object),
                       np.array(["a,b" if i == 5 else "x" for i in range(3000)], dtype=object)):
            prepared = csv_table(labels, patterns, inverse, "id")
            rows = csv_table(labels, patterns[inverse], None, "id")
            dictionary = pa.types.is_dictionary(prepared.table.column(1).type)
            assert dictionary == (labels.dtype != object or labels[5] != "a,b")
            text = write_csv_table(prepared)
            assert text == write_csv_table(rows)
            assert len(text) <= prepared.size_bound
            assert write_csv_table(dataclasses.replace(prepared, size_bound=None)) == text
        many = rng.integers(0, 2000, 3000)   # as many patterns as rows: the rows' own path
        wide = rng.dirichlet(np.ones(K), 2000)
        prepared = csv_table(np.arange(3000), wide, many)
        assert not pa.types.is_dictionary(prepared.table.column(1).type)
        assert write_csv_table(prepared) == write_csv_table(csv_table(np.arange(3000), wide[many], None))
        empty = csv_table(np.arange(0), np.zeros((0, K)), np.zeros(0, dtype=np.int64))
        assert write_csv_table(empty) == ",".join(posterior_columns(K)).encode() + b"\n"
        # a pattern's text is Arrow's own: the dictionary's values are its CSV fields
        options = csv_table(np.arange(3), patterns, np.arange(3)).options
        table = _pattern_table(K, pa.array([0, 1, 2]), patterns[:3], np.arange(3), options)
        for k in range(K):
            got = table.column(k + 1).chunk(0).dictionary.to_pylist()
            assert [float(v) for v in got] == patterns[:3, k].tolist()


class TestParquet:
    def test_parts_in_sorted_order_equal_the_csv(self, tmp_path):
        """Partitions written as part files read back, files sorted and rows in file order, as the whole data's CSV."""
        model, data, params = _fitted("gmm")
        X = data["X"]
        cuts = [0, 50, 51, 51, 200, X.shape[0]]  # one partition is empty
        parts = ((np.arange(a, b, dtype=np.int64) * 10, {"X": X[a:b]})
                 for a, b in zip(cuts[:-1], cuts[1:]))
        (tmp_path / part_name(9)).write_bytes(b"stale")  # left by a larger earlier run
        paths = write_posteriors_parquet(parts, model, params, tmp_path, chunk_size=32)
        assert [p.name for p in paths] == [part_name(i) for i in range(5)]
        files = sorted(tmp_path.glob("*.parquet"))
        assert files == paths and not list(tmp_path.glob(".*"))
        tables = [pq.read_table(f).to_pandas() for f in files]
        got = pd.concat(tables, ignore_index=True)
        want = _read(posteriors_csv(model, data, params, np.arange(X.shape[0]) * 10))
        assert list(got.columns) == list(want.columns)
        assert got["row"].tolist() == want["row"].tolist()
        assert (got[["p1", "p2"]].to_numpy() == want[["p1", "p2"]].to_numpy()).all()
        assert got["class"].tolist() == want["class"].tolist()
        assert pq.ParquetFile(files[3]).metadata.num_row_groups == 5  # 149 rows in chunks of 32

    def test_string_ids_keep_their_type(self, tmp_path):
        """Text ids stay text in every part, a missing one null."""
        model, data, params = _fitted("gmm")
        X = data["X"][:6]
        ids = np.array(["a", "b", None, "d", "e", "f"], dtype=object)
        parts = [(ids[:3], {"X": X[:3]}), (ids[3:], {"X": X[3:]})]
        paths = write_posteriors_parquet(parts, model, params, tmp_path, id_column="pid")
        table = pd.concat([pq.read_table(p).to_pandas() for p in paths], ignore_index=True)
        assert table["pid"].tolist()[:2] == ["a", "b"] and table["pid"].isna().tolist()[2]
        assert table.columns.tolist() == ["pid", "p1", "p2", "class"]


# ---------------------------------------------------------------- --id and dropped rows
ROWS = [("a1", "3.6", "79"), ("a2", "1.8", "54"), ("a3", "", "74"), ("a4", "2.283", "62"),
        ("a5", "4.533", "85"), ("a6", "2.883", "55"), ("a7", "4.7", "88"), ("a8", "3.6", "85"),
        ("a9", "1.95", "51"), ("a10", "4.35", "85"), ("a11", "1.833", "54"), ("a12", "3.917", "84"),
        ("a13", "4.2", "78"), ("007", "1.75", "47"), ("a15", "4.7", ""), ("a16", "2.167", "52"),
        ("a17", "1.75", "62"), ("a18", "4.8", "84"), ("a19", "1.6", "52"), ("a20", "4.25", "79")]
KEPT = [i for i, r in enumerate(ROWS) if "" not in r]


def _write(folder: Path) -> Path:
    path = folder / "d.csv"
    path.write_text("pid,eruptions,waiting\n" + "".join(",".join(r) + "\n" for r in ROWS))
    return path


def _options(path: Path, **kw) -> RunOptions:
    return RunOptions(data=str(path), drop_missing=True, **kw).validate()


class TestIdColumn:
    def test_positions_and_ids_survive_dropped_rows(self, tmp_path):
        """Kept rows keep their input positions and ids in input order; the record counts the dropped ones."""
        path = _write(tmp_path)
        opts = _options(path, columns=["eruptions", "waiting"], id="pid")
        record = phases.prepare_data(opts)
        prepared = phases.materialise(record, opts)
        assert record["n_dropped"] == 2 and record["n_obs"] == 18
        assert record["columns"] == ["eruptions", "waiting"] and record["id_column"] == "pid"
        assert prepared.row_positions.tolist() == KEPT
        assert prepared.row_ids.tolist() == [ROWS[i][0] for i in KEPT]  # "007" as written
        assert prepared.data["X"][:, 1].tolist() == [float(ROWS[i][2]) for i in KEPT]
        plain = phases.materialise(record, _options(path, columns=["eruptions", "waiting"]))
        assert plain.row_ids is None and plain.row_labels.tolist() == KEPT

    def test_id_changes_neither_the_data_nor_their_hash(self, tmp_path):
        """The parsed data and their hash are the same with and without --id."""
        path = _write(tmp_path)
        cols = ["eruptions", "waiting"]
        phases._CACHE.clear()
        plain = phases.prepare_data(_options(path, columns=cols))
        phases._CACHE.clear()
        with_id = phases.prepare_data(_options(path, columns=cols, id="pid"))
        assert plain["parsed_sha256"] == with_id["parsed_sha256"]
        assert "id_column" not in plain and plain["columns"] == with_id["columns"]

    def test_parquet_input_ids_keep_their_type(self, tmp_path):
        """An integer id column of a Parquet file gives integer ids."""
        frame = pd.DataFrame({"x": [1.0, 2.0, np.nan, 4.0, 5.0, 9.0, 9.5, 10.0, 11.0, 12.5, 3.0, 8.0],
                              "key": np.arange(100, 112)})
        frame.to_parquet(tmp_path / "d.parquet")
        opts = _options(tmp_path / "d.parquet", columns=["x"], id="key")
        prepared = phases.materialise(phases.prepare_data(opts), opts)
        assert prepared.row_ids.dtype.kind == "i"
        assert prepared.row_ids.tolist() == [100, 101, 103, 104, 105, 106, 107, 108, 109, 110, 111]

    def test_lca_reads_the_id_as_text_and_repeated_ids_are_noted(self, tmp_path):
        """An LCA run carries its id column as text and says, once, that ids repeat; the
        note stays in the data's record, which the report lists."""
        frame = pd.read_csv(CARCINOMA, dtype=str)
        frame.insert(0, "case", [f"c{i // 2}" for i in range(len(frame))])
        frame.to_csv(tmp_path / "c.csv", index=False)
        items = [c for c in frame.columns if c != "case"]
        opts = RunOptions(data=str(tmp_path / "c.csv"), model="lca", columns=items, id="case").validate()

        class Notes:
            said: list = []

            def message(self, text):
                self.said.append(text)

        notes = Notes()
        record = phases.prepare_data(opts, reporter=notes)
        prepared = phases.materialise(record, opts)
        assert prepared.row_ids.tolist()[:3] == ["c0", "c0", "c1"]
        assert len(notes.said) == 1 and "'case'" in notes.said[0] and "59" in notes.said[0]
        assert record["notes"] == notes.said   # kept for the report (and a resumed run's)

    def test_rows_a_family_drops_by_its_own_rule(self):
        """Positions that cannot be told are None without --id and a DataError naming the model with it."""
        frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0]})
        assert kept_rows(frame, None, 3, model="mine.py:M", source="d.csv") == (None, None)
        positions, ids = kept_rows(frame.assign(x=[1.0, np.nan, 3.0, 4.0]), np.array(list("abcd")), 3,
                                   model="mine.py:M", source="d.csv")
        assert positions.tolist() == [0, 2, 3] and ids.tolist() == ["a", "c", "d"]
        with pytest.raises(DataError, match="'mine.py:M' kept 3 of the 4 rows"):
            kept_rows(frame, np.array(list("abcd")), 3, model="mine.py:M", source="d.csv")

    @pytest.mark.parametrize("kw, error, words", [
        ({"columns": ["waiting"], "id": "nope"}, DataError, ["'nope'", "pid, eruptions, waiting"]),
        ({"columns": ["pid", "waiting"], "id": "pid"}, UsageError, ["'pid'", "--columns"]),
    ])
    def test_errors(self, tmp_path, kw, error, words):
        """A missing id column and an id that is a model column are one-sentence errors."""
        with pytest.raises(error) as info:
            phases.prepare_data(_options(_write(tmp_path), **kw))
        assert all(w in str(info.value) for w in words), str(info.value)

    def test_main_script_carries_the_id(self, tmp_path):
        """The main script with --id and --drop-missing records the dropped rows and writes the ids in input order."""
        _write(tmp_path)
        proc = run_main(tmp_path, "--data", "d.csv", "--columns", "eruptions,waiting", "--id", "pid",
                        "--drop-missing", "--n-starts", "2", "--se-method", "none")
        assert proc.returncode == 0, proc.stderr
        record = read_progress(tmp_path)["phase_results"]["data_preparation"]["value"]
        assert record["n_dropped"] == 2 and record["id_column"] == "pid"
        bad = run_main(tmp_path, "--data", "d.csv", "--id", "nope", "--task-name", "other")
        assert bad.returncode == 2
        assert_one_sentence(bad.stderr)
        out = results_dir(tmp_path) / "posteriors.csv"
        got = _read(out.read_bytes(), id_type=str)
        assert got.columns[0] == "pid" and got["pid"].tolist() == [ROWS[i][0] for i in KEPT]
        fit = json.loads((results_dir(tmp_path) / "fit.json").read_text())
        assert fit["n_obs"] == len(got) == 18
        assert fit["rows"] == {"n_used": 18, "n_dropped": len(ROWS) - 18, "id_column": "pid"}

    def test_id_without_columns_models_every_other_column(self, tmp_path):
        """--id without --columns fits the other columns (the same posteriors as naming them), and adding --id to a task run without it is a changed input of data_preparation."""
        _write(tmp_path)
        flags = ("--data", "d.csv", "--drop-missing", "--n-starts", "2", "--se-method", "none")
        named = run_main(tmp_path, *flags, "--columns", "eruptions,waiting", "--id", "pid",
                         "--task-name", "named")
        bare = run_main(tmp_path, *flags, "--id", "pid", "--task-name", "bare")
        assert named.returncode == 0 and bare.returncode == 0, bare.stderr
        a = (results_dir(tmp_path, "named") / "posteriors.csv").read_bytes()
        b = (results_dir(tmp_path, "bare") / "posteriors.csv").read_bytes()
        assert a == b
        fp = read_progress(tmp_path, "bare")["phase_fingerprints"]["data_preparation"]
        assert fp["id"] == "pid"
