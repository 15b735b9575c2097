"""Partitioned Parquet input: files, chunks, the scan's meta and arrays against the in-memory path."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from src.data.loading import load_table
from src.data.partitions import PartitionedSource, kept_chunks, partition_chunks, sample, scan
from src.data.rows import kept_positions
from src.models.base import WEIGHT_KEY
from src.models.gmm import GaussianMixtureModel
from src.models.lca import LatentClassModel
from src.models.mixreg import MixtureRegressionModel
from src.utils.errors import DataError
from src.utils.rng import stream

#: raw rows of each file, in sorted order of the paths written below (row groups of 70 rows)
SIZES = (230, 41, 305, 120)
#: the files: a nested key=value folder, as partitioned writers leave them
NAMES = ("year=2019/part-0.parquet", "year=2019/part-1.parquet", "year=2020/part-0.parquet",
         "year=2021/part-0.pq")
GROUP_ROWS = 70


def write(root: Path, frames: list[pd.DataFrame], names: tuple[str, ...] = NAMES,
          group_rows: int = GROUP_ROWS) -> Path:
    """Each frame to its own Parquet file under ``root`` (several row groups each), plus the
    litter writers leave beside the data (skipped by the reader)."""
    for frame, name in zip(frames, names):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path,
                       row_group_size=group_rows)
    (root / "_SUCCESS").write_bytes(b"")
    (root / "year=2019" / ".part-0.parquet.crc").write_bytes(b"junk")
    (root / "_temporary").mkdir(exist_ok=True)
    (root / "_temporary" / "x.parquet").write_bytes(b"not parquet")
    return root


def whole(tmp_path: Path, frames: list[pd.DataFrame], **kwargs) -> pd.DataFrame:
    """The in-memory path's table: the files' rows in input order, written as one Parquet
    file and read by load_table."""
    path = tmp_path / "whole.parquet"
    pd.concat(frames, ignore_index=True).to_parquet(path, index=False)
    frame, _ = load_table(str(path), **kwargs)
    return frame


def gmm_frames(seed: int = 0, missing: bool = True) -> list[pd.DataFrame]:
    """Three numeric columns (one constant within each file), a few missing cells."""
    rng = stream(seed, "test-partitions", 0)
    frames = []
    for i, n in enumerate(SIZES):
        f = pd.DataFrame({"a": rng.normal(size=n) * 2 + 100, "b": rng.normal(size=n),
                          "c": np.full(n, float(i))})
        if missing:
            f.loc[rng.choice(n, 5, replace=False), "a"] = np.nan
            f.loc[rng.choice(n, 3, replace=False), "b"] = np.nan
        frames.append(f)
    return frames


def lca_frames(seed: int = 1) -> list[pd.DataFrame]:
    """Text and numeric codes; some codes (and one item's every answer) absent from some files."""
    rng = stream(seed, "test-partitions", 1)
    frames = []
    for i, n in enumerate(SIZES):
        q1 = rng.choice(["yes", "no"] if i != 1 else ["no"], size=n).astype(object)
        q2 = rng.choice([1, 2, 3] if i >= 2 else [1, 2], size=n).astype(float)
        q3 = rng.choice(["a", "b", "10", "2"] if i != 0 else ["b", "2"], size=n).astype(object)
        q2[rng.choice(n, 4, replace=False)] = np.nan
        q3[rng.choice(n, 4, replace=False)] = None
        if i == 3:
            q1[:] = None                              # an item with no answer in this file
        frames.append(pd.DataFrame({"q1": q1, "q2": q2, "q3": q3}))
    return frames


def mixreg_frames(seed: int = 2) -> list[pd.DataFrame]:
    """A target, a predictor and a group indicator constant within each file."""
    rng = stream(seed, "test-partitions", 2)
    frames = []
    for i, n in enumerate(SIZES):
        x = rng.normal(size=n) * 5 + 50
        g = np.full(n, float(i % 2))
        y = 3 + 0.5 * x + 2 * g + rng.normal(size=n)
        f = pd.DataFrame({"x": x, "y": y, "g": g})
        f.loc[rng.choice(n, 3, replace=False), "x"] = np.nan
        frames.append(f)
    return frames


def chunks_of(source: PartitionedSource, cls, options, scanned) -> list[dict[str, np.ndarray]]:
    return [c for p in source.partitions
            for c in partition_chunks(source, p, cls, options, scanned.meta, scanned.chunk_rows,
                                      columns=scanned.columns,
                                      weight_column=scanned.weight_column)]


def concat(chunks: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


# ------------------------------------------------------------------------ files
class TestSource:
    def test_files_partitions_and_rows(self, tmp_path):
        """A nested folder gives its Parquet files in sorted order (litter skipped), their rows, and partitions of whole row groups."""
        root = write(tmp_path / "data", gmm_frames())
        src = PartitionedSource.open(str(root))
        assert src.files == [str((root / n).resolve()) for n in NAMES]
        assert src.n_rows == sum(SIZES) and src.columns == ["a", "b", "c"]
        assert [(p.n_rows, p.first_row) for p in src.partitions] == \
            [(n, int(sum(SIZES[:i]))) for i, n in enumerate(SIZES)]
        grouped = PartitionedSource.open(str(root), target_rows=150)
        for p in grouped.partitions:
            assert p.n_rows <= 150 and p.row_groups == tuple(range(p.row_groups[0],
                                                                   p.row_groups[-1] + 1))
        assert [p.first_row for p in grouped.partitions] == \
            list(np.cumsum([0] + [p.n_rows for p in grouped.partitions])[:-1])
        assert [p.index for p in grouped.partitions] == list(range(len(grouped.partitions)))
        pattern = PartitionedSource.open(str(root / "year=2019" / "*.parquet"))
        assert pattern.files == src.files[:2] and pattern.n_rows == sum(SIZES[:2])
        folders = PartitionedSource.open(str(root / "year=20*"))
        assert folders.files == src.files

    def test_frames_are_the_rows_in_input_order(self, tmp_path):
        """Chunks of exactly chunk_rows rows (each file's last one shorter), concatenated, are pandas' reading of the files one after another."""
        frames = gmm_frames()
        root = write(tmp_path / "data", frames)
        expected = pd.concat([pd.read_parquet(root / n) for n in NAMES], ignore_index=True)
        for target, chunk in ((None, 64), (100, 64), (1, 33), (None, 1000)):
            src = PartitionedSource.open(str(root), target_rows=target)
            got = [(first, f) for p in src.partitions
                   for first, f in src.iter_frames(p, None, chunk)]
            joined = pd.concat([f for _, f in got])
            pd.testing.assert_frame_equal(joined.reset_index(drop=True), expected)
            assert list(joined.index) == list(range(sum(SIZES)))
            for first, f in got:
                file = int(np.searchsorted(np.cumsum(SIZES), first, side="right"))
                end = int(np.cumsum(SIZES)[file])
                assert len(f) == min(chunk, end - first)

    def test_chunk_boundaries_whatever_target_rows(self, tmp_path):
        """The chunks (first row, length) are the same for every target_rows, on each file's grid."""
        root = write(tmp_path / "data", gmm_frames())
        seen = []
        for target in (None, 1, 69, 71, 150, 10 ** 9):
            src = PartitionedSource.open(str(root), target_rows=target)
            seen.append([(first, len(f)) for p in src.partitions
                         for first, f in src.iter_frames(p, ["a"], 50)])
        starts = np.cumsum([0] + list(SIZES))
        grid = [(int(s + k), int(min(50, e - s - k))) for s, e in zip(starts[:-1], starts[1:])
                for k in range(0, int(e - s), 50)]
        assert all(s == grid for s in seen)

    def test_read_rows(self, tmp_path):
        """read_rows gives the rows with the given global numbers, indexed by them, as text too."""
        frames = gmm_frames()
        root = write(tmp_path / "data", frames)
        expected = pd.concat(frames, ignore_index=True)
        src = PartitionedSource.open(str(root), target_rows=100)
        rows = np.sort(stream(3, "test-partitions", 3).choice(sum(SIZES), 40, replace=False))
        got = src.read_rows(rows, ["b", "a"])
        pd.testing.assert_frame_equal(got, expected.loc[rows, ["b", "a"]], check_index_type=False)
        text = src.read_rows(rows[:3], ["c"], as_text=True)
        assert list(text["c"]) == [str(int(v)) for v in expected.loc[rows[:3], "c"]]

    def test_fingerprint_survives_a_copy_not_new_values(self, tmp_path):
        """A copy of the folder elsewhere (new paths and times) has the same fingerprint; a file rewritten with other values changes it."""
        frames = gmm_frames()
        root = write(tmp_path / "data", frames)
        copy = tmp_path / "elsewhere" / "copy"
        shutil.copytree(root, copy)
        os.utime(copy / NAMES[0], (1, 1))
        for hash_bytes in (False, True):
            a = PartitionedSource.open(str(root)).fingerprint(hash_bytes=hash_bytes)
            b = PartitionedSource.open(str(copy)).fingerprint(hash_bytes=hash_bytes)
            assert a == b and a["rows"] == sum(SIZES) and a["files"] == len(NAMES)
        changed = [f.copy() for f in frames]
        changed[2].loc[7, "b"] = 123.0
        write(copy, changed)
        for hash_bytes in (False, True):
            a = PartitionedSource.open(str(root)).fingerprint(hash_bytes=hash_bytes)
            b = PartitionedSource.open(str(copy)).fingerprint(hash_bytes=hash_bytes)
            assert a["sha256"] != b["sha256"]


# ----------------------------------------------------- the scan against memory
class TestScan:
    @pytest.mark.parametrize("target,chunk", [(None, 64), (90, 50), (None, 10 ** 6)])
    def test_gmm(self, tmp_path, target, chunk):
        """GMM: the scan's meta is prepare_data's of all rows (shift to 1e-12), the chunks are its arrays exactly, --drop-missing counts equal."""
        frames = gmm_frames()
        root = write(tmp_path / "data", frames)
        options = {"drop_missing": True}
        data, meta = GaussianMixtureModel.prepare_data(whole(tmp_path, frames),
                                                       {**options, "source": "x"})
        src = PartitionedSource.open(str(root), target_rows=target)
        scanned = scan(src, GaussianMixtureModel, options, chunk_rows=chunk)
        assert scanned.meta["columns"] == meta["columns"]
        assert scanned.meta["n_dropped"] == meta["n_dropped"] == scanned.n_dropped > 0
        np.testing.assert_allclose(scanned.meta["shift"], meta["shift"], rtol=1e-12)
        assert scanned.n_obs == data["X"].shape[0] and scanned.n_raw == sum(SIZES)
        assert sum(scanned.kept) == scanned.n_obs and scanned.weight_sum is None
        got = concat(chunks_of(src, GaussianMixtureModel, options, scanned))
        assert set(got) == {"X"} and np.array_equal(got["X"], data["X"])

    @pytest.mark.parametrize("target,chunk", [(None, 64), (40, 25)])
    def test_lca(self, tmp_path, target, chunk):
        """LCA: the merged categories are the in-memory ones (codes missing from some files, text codes, an item empty in one file) and the conformed codes equal its arrays."""
        frames = lca_frames()
        root = write(tmp_path / "data", frames)
        data, meta = LatentClassModel.prepare_data(whole(tmp_path, frames, as_text=True), {})
        src = PartitionedSource.open(str(root), target_rows=target)
        scanned = scan(src, LatentClassModel, {"drop_missing": False}, chunk_rows=chunk)
        assert scanned.meta == meta
        assert meta["categories"] == [["no", "yes"], ["1", "2", "3"], ["2", "10", "a", "b"]]
        got = concat(chunks_of(src, LatentClassModel, {}, scanned))
        assert np.array_equal(got["Y"], data["Y"])

    def test_mixreg(self, tmp_path):
        """mixreg: shifts and y_scale are the in-memory ones to 1e-12, the rest equal, X and y exactly (a predictor constant within each file is fine)."""
        frames = mixreg_frames()
        root = write(tmp_path / "data", frames)
        options = {"drop_missing": True, "target": "y", "intercept": True}
        data, meta = MixtureRegressionModel.prepare_data(whole(tmp_path, frames),
                                                         {**options, "source": "x"})
        src = PartitionedSource.open(str(root), target_rows=100)
        scanned = scan(src, MixtureRegressionModel, options, chunk_rows=60)
        for key in ("x_shift", "y_shift", "y_scale"):
            np.testing.assert_allclose(scanned.meta[key], meta[key], rtol=1e-12)
        rest = {k: v for k, v in meta.items() if k not in ("x_shift", "y_shift", "y_scale")}
        assert {k: scanned.meta[k] for k in rest} == rest and rest["n_dropped"] > 0
        got = concat(chunks_of(src, MixtureRegressionModel, options, scanned))
        assert np.array_equal(got["X"], data["X"]) and np.array_equal(got["y"], data["y"])

    def test_whole_data_checks(self, tmp_path):
        """Checks that need every row give the in-memory sentence: a constant GMM column, a collinear design, an LCA item never answered."""
        frames = gmm_frames(missing=False)
        for f in frames:
            f["c"] = 7.0
        write(tmp_path / "g", frames)
        with pytest.raises(DataError) as memory:
            GaussianMixtureModel.prepare_data(whole(tmp_path, frames), {"source": str(tmp_path / "g")})
        with pytest.raises(DataError) as parts:
            scan(str(tmp_path / "g"), GaussianMixtureModel, {}, chunk_rows=64)
        assert str(parts.value) == str(memory.value) and "'c'" in str(memory.value)
        frames = mixreg_frames()
        for f in frames:
            f["z"] = 2 * f["g"] + 1
        write(tmp_path / "m", frames)
        options = {"drop_missing": True, "target": "y"}
        with pytest.raises(DataError) as memory:
            MixtureRegressionModel.prepare_data(whole(tmp_path, frames), options)
        with pytest.raises(DataError) as parts:
            scan(str(tmp_path / "m"), MixtureRegressionModel, options, chunk_rows=64)
        assert str(parts.value) == str(memory.value) and "rank 3 for 4" in str(memory.value)
        frames = lca_frames()
        for f in frames:
            f["q1"] = None
        write(tmp_path / "l", frames)
        with pytest.raises(DataError) as memory:
            LatentClassModel.prepare_data(whole(tmp_path, frames, as_text=True), {})
        with pytest.raises(DataError) as parts:
            scan(str(tmp_path / "l"), LatentClassModel, {}, chunk_rows=64)
        assert str(parts.value) == str(memory.value) and "'q1'" in str(memory.value)

    def test_columns_and_id(self, tmp_path):
        """--columns picks and orders the model's columns, and --id is checked as load_table checks it (there, not a model column)."""
        frames = gmm_frames(missing=False)
        root = write(tmp_path / "data", frames)
        data, meta = GaussianMixtureModel.prepare_data(whole(tmp_path, frames, columns=["b", "a"]),
                                                       {"source": "x"})
        src = PartitionedSource.open(str(root))
        scanned = scan(src, GaussianMixtureModel, {}, chunk_rows=100, columns=["b", "a"],
                       id_column="c")
        assert scanned.columns == ["b", "a"] and scanned.meta["columns"] == ["b", "a"]
        assert np.array_equal(concat(chunks_of(src, GaussianMixtureModel, {}, scanned))["X"],
                              data["X"])
        assert scan(src, GaussianMixtureModel, {}, chunk_rows=100,
                    id_column="c").columns == ["a", "b"]
        with pytest.raises(DataError, match=r"The --id column 'nope' is not in .*data; the "
                                            r"available columns are: a, b, c"):
            scan(src, GaussianMixtureModel, {}, chunk_rows=100, id_column="nope")
        with pytest.raises(DataError, match=r"Column 'z' is not in .*data"):
            scan(src, GaussianMixtureModel, {}, chunk_rows=100, columns=["a", "z"])

    def test_kept_chunks_name_their_rows(self, tmp_path):
        """kept_chunks gives each chunk's kept rows as global input positions with their --id values; a file whose rows are all dropped gives no chunk."""
        frames = gmm_frames()
        for i, f in enumerate(frames):
            f["id"] = [f"r{i}-{j}" for j in range(len(f))]
        frames[1]["b"] = np.nan
        root = write(tmp_path / "data", frames)
        memory = whole(tmp_path, frames)
        data, _ = GaussianMixtureModel.prepare_data(memory[["a", "b", "c"]],
                                                    {"drop_missing": True, "source": "x"})
        kept = kept_positions(memory[["a", "b", "c"]], data["X"].shape[0])
        src = PartitionedSource.open(str(root))
        options = {"drop_missing": True}
        scanned = scan(src, GaussianMixtureModel, options, chunk_rows=64, id_column="id")
        assert scanned.kept[1] == 0 and scanned.n_dropped == sum(SIZES) - len(kept)
        assert list(partition_chunks(src, src.partitions[1], GaussianMixtureModel, options,
                                     scanned.meta, 64, columns=scanned.columns)) == []
        got = [c for p in src.partitions
               for c in kept_chunks(src, p, GaussianMixtureModel, options, scanned.meta, 64,
                                    columns=scanned.columns, extra=["id"])]
        assert np.array_equal(np.concatenate([r for r, _, _ in got]), kept)
        assert list(pd.concat([ids for _, ids, _ in got])["id"]) == list(memory["id"][kept])
        assert np.array_equal(np.concatenate([d["X"] for _, _, d in got]), data["X"])

    @pytest.mark.parametrize("model", ["gmm", "lca"])
    def test_weights_as_in_memory(self, tmp_path, model):
        """With --weights the scan and chunks give the in-memory data phase's meta, arrays, weights, counts and note (rows of weight 0 and missing weights left out)."""
        from src.config import RunOptions
        from src.pipeline.phases import prepare_frame

        frames = gmm_frames() if model == "gmm" else lca_frames()
        cls = GaussianMixtureModel if model == "gmm" else LatentClassModel
        rng = stream(4, "test-partitions", 4)
        for f in frames:
            f["w"] = rng.integers(0, 4, size=len(f)).astype(float)
            f.loc[rng.choice(len(f), 2, replace=False), "w"] = np.nan
        root = write(tmp_path / "data", frames)
        opts = RunOptions(model=model, components=2, weights="w", drop_missing=True).validate()
        memory = prepare_frame(whole(tmp_path, frames, as_text=cls.reads_text), opts, cls,
                               {"source": str(root)})
        src = PartitionedSource.open(str(root), target_rows=100)
        scanned = scan(src, cls, opts.model_options(cls), chunk_rows=50, weight_column="w")
        assert scanned.meta.keys() == memory.meta.keys()
        for key, value in memory.meta.items():
            if key == "shift":
                np.testing.assert_allclose(scanned.meta[key], value, rtol=1e-12)
            else:
                assert scanned.meta[key] == value
        record = memory.record
        assert scanned.n_obs == memory.n_obs and scanned.weight_sum == record["weight_sum"]
        assert scanned.n_zero_weight == record["n_zero_weight"] > 0
        assert scanned.n_dropped + scanned.n_zero_weight == record["n_dropped"]
        assert scanned.notes == [n for n in record["notes"] if "weight 0" in n]
        got = concat(chunks_of(src, cls, opts.model_options(cls), scanned))
        assert got.keys() == memory.data.keys()
        assert all(np.array_equal(got[k], memory.data[k]) for k in got)

# ------------------------------------------------------------------ the sample
class TestSample:
    def test_sample_is_the_seeds_rows_whatever_the_split(self, tmp_path):
        """The sample is the kept rows of ranks stream(seed, 'sample') draws, the same for any partitioning and chunking."""
        frames = lca_frames()
        root = write(tmp_path / "data", frames)
        memory = whole(tmp_path, frames, as_text=True)
        data, meta = LatentClassModel.prepare_data(memory, {})
        n_obs = data["Y"].shape[0]
        ranks = np.sort(stream(11, "sample").choice(n_obs, 100, replace=False))
        seen = []
        for target, chunk in ((None, 64), (30, 17), (None, 5000)):
            src = PartitionedSource.open(str(root), target_rows=target)
            scanned = scan(src, LatentClassModel, {}, chunk_rows=chunk)
            got, rows = sample(src, LatentClassModel, {}, scanned, 100, 11)
            assert np.array_equal(rows, ranks) and np.array_equal(got["Y"], data["Y"][ranks])
            seen.append(rows)
        other, _ = sample(src, LatentClassModel, {}, scanned, 100, 12)
        assert not np.array_equal(other["Y"], data["Y"][ranks])
        everything, rows = sample(src, LatentClassModel, {}, scanned, 10 ** 6, 11)
        assert np.array_equal(everything["Y"], data["Y"]) and np.array_equal(rows, np.arange(n_obs))

    def test_sample_of_kept_rows(self, tmp_path):
        """With --drop-missing the sample's row numbers are the kept rows' input positions."""
        frames = gmm_frames()
        root = write(tmp_path / "data", frames)
        memory = whole(tmp_path, frames)
        data, _ = GaussianMixtureModel.prepare_data(memory, {"drop_missing": True, "source": "x"})
        kept = kept_positions(memory, data["X"].shape[0])
        src = PartitionedSource.open(str(root), target_rows=100)
        scanned = scan(src, GaussianMixtureModel, {"drop_missing": True}, chunk_rows=40)
        got, rows = sample(src, GaussianMixtureModel, {"drop_missing": True}, scanned, 50, 5)
        ranks = np.sort(stream(5, "sample").choice(data["X"].shape[0], 50, replace=False))
        assert np.array_equal(rows, kept[ranks]) and np.array_equal(got["X"], data["X"][ranks])


# --------------------------------------------------------------- bad input
class TestErrors:
    def test_schema_mismatch_names_the_odd_file(self, tmp_path):
        """A file with other columns, or a column stored as text where the others hold numbers, is named in one sentence."""
        frames = gmm_frames()
        frames[2] = frames[2].rename(columns={"b": "bee"})
        root = write(tmp_path / "cols", frames)
        with pytest.raises(DataError, match=r"The Parquet file .*year=2020/part-0.parquet has the "
                                            r"columns a, bee, c but .*year=2019/part-0.parquet "
                                            r"has a, b, c; every file of"):
            PartitionedSource.open(str(root))
        frames = gmm_frames()
        frames[3]["b"] = frames[3]["b"].astype(str)
        root = write(tmp_path / "kinds", frames)
        with pytest.raises(DataError, match=r"Column 'b' holds text in the Parquet file "
                                            r".*year=2021/part-0.pq but numbers in"):
            PartitionedSource.open(str(root))

    def test_nothing_to_read(self, tmp_path):
        """A folder without Parquet files, a pattern matching none and a missing path each get one sentence."""
        (tmp_path / "csv").mkdir()
        (tmp_path / "csv" / "a.csv").write_text("x\n1\n")
        with pytest.raises(DataError, match=r"csv holds no Parquet file \(named .parquet or .pq; "
                                            r"1 CSV/TSV files are there\)"):
            PartitionedSource.open(str(tmp_path / "csv"))
        with pytest.raises(DataError, match="holds no Parquet file"):
            PartitionedSource.open(str(tmp_path / "csv" / "*.parquet"))
        with pytest.raises(DataError, match="does not exist"):
            PartitionedSource.open(str(tmp_path / "nope"))
        (tmp_path / "fake.parquet").write_text("a,b\n1,2\n")
        with pytest.raises(DataError, match="fake.parquet is not a Parquet file"):
            PartitionedSource.open(str(tmp_path / "fake.parquet"))

    def test_non_numeric_value_names_file_and_row(self, tmp_path):
        """A text value in a GMM column is named with its file and its global row, the row the in-memory sentence names."""
        frames = gmm_frames(missing=False)
        for f in frames:
            f["a"] = f["a"].map(repr)
        frames[2].loc[17, "a"] = "n/a?"
        root = write(tmp_path / "data", frames)
        with pytest.raises(DataError) as memory:
            GaussianMixtureModel.prepare_data(whole(tmp_path, frames), {"source": "x"})
        row = sum(SIZES[:2]) + 17
        assert f"in row {row} " in str(memory.value)
        with pytest.raises(DataError, match=rf"Column 'a' of .*year=2020/part-0.parquet has the "
                                            rf"non-numeric value 'n/a\?' in row {row} "):
            scan(str(root), GaussianMixtureModel, {}, chunk_rows=64)

    def test_row_errors_name_file_and_global_row(self, tmp_path):
        """A missing value without --drop-missing, an LCA row with no answer and a bad weight name the file and the global row."""
        frames = gmm_frames(missing=False)
        frames[1].loc[30, "b"] = np.nan
        root = write(tmp_path / "g", frames)
        with pytest.raises(DataError, match=rf"of .*year=2019/part-1.parquet have a missing value "
                                            rf"\(the first is row {SIZES[0] + 30},"):
            scan(str(root), GaussianMixtureModel, {}, chunk_rows=64)
        frames = lca_frames()
        frames[2].loc[3, ["q1", "q2", "q3"]] = None
        root = write(tmp_path / "l", frames)
        with pytest.raises(DataError, match=rf"1 rows of .*year=2020/part-0.parquet have every "
                                            rf"answer missing \(the first is row "
                                            rf"{SIZES[0] + SIZES[1] + 3},"):
            scan(str(root), LatentClassModel, {}, chunk_rows=64)
        frames = gmm_frames()
        for f in frames:
            f["w"] = 1.0
        frames[3].loc[5, "w"] = -2.0
        root = write(tmp_path / "w", frames)
        with pytest.raises(DataError, match=rf"--weights column 'w' of .*year=2021/part-0.pq has "
                                            rf"the negative value -2.0 in row {sum(SIZES[:3]) + 5} "):
            scan(str(root), GaussianMixtureModel, {"drop_missing": True}, chunk_rows=64,
                 weight_column="w")

    def test_load_table_refuses_partitioned_input(self, tmp_path):
        """load_table refuses a folder or a pattern of Parquet files, saying they go through the partitioned path."""
        root = write(tmp_path / "data", gmm_frames())
        for text in (str(root), str(root / "year=2019" / "*.parquet")):
            with pytest.raises(DataError, match="is partitioned input, read part by part through "
                                                "the partitioned path"):
                load_table(text)


# ------------------------------------------------------------ codes as text
def _text_cell_by_cell(col: pd.Series, strip: bool) -> list[object]:
    """The text of each cell formatted on its own (what the readers did before)."""
    present = col.notna().to_numpy()
    values = col.to_numpy(dtype=object)
    if pd.api.types.is_float_dtype(col.dtype) and present.any():
        v = values[present].astype(float)
        whole = np.all(np.isfinite(v) & (v == np.round(v)))
        texts = [str(int(x)) if whole else repr(float(x)) for x in v]
    else:
        texts = [str(x).strip() if strip else str(x) for x in values[present]]
    out: list[object] = [None] * len(col)
    for i, text in zip(np.flatnonzero(present), texts):
        out[i] = text
    return out


@pytest.mark.parametrize("col", [
    pd.Series([1.0, -0.0, 0.0, np.nan, 2.0]), pd.Series([1.5, -0.0, 0.0, np.nan, 1e20]),
    pd.Series([1, 2, 3]), pd.Series(pd.array([1, None, 3], dtype="Int64")),
    pd.Series(["a", None, " b", "a", "", "  "]), pd.Series(pd.array(["x", None, " "], dtype="string")),
    pd.Series([True, False, True]), pd.Series([1, "1", 1.0, None, " 1"], dtype=object),
    pd.Series([np.nan, np.nan]), pd.Series([np.inf, 1.0]),
    pd.Series(pd.array([1.0, None], dtype="Float64"))])
def test_codes_as_text_formatted_once_per_value(col):
    """Reading codes as text formats each distinct value once and gives every cell's own text (-0.0, mixed objects, blanks)."""
    from src.data.loading import _as_text_column
    from src.models.lca import _as_text

    expected = _text_cell_by_cell(col, strip=False)
    got = _as_text_column(col)
    assert [None if pd.isna(v) else v for v in got] == expected
    text, missing = _as_text(col)
    stripped = _text_cell_by_cell(col, strip=True)
    assert list(missing) == [v is None or v == "" for v in stripped]
    assert list(text) == [v if v is not None else "" for v in stripped]


# ------------------------------------------------ the passes' fast path (pyarrow -> numpy)
def _mixed_frames(seed: int = 7) -> list[pd.DataFrame]:
    """Floats with missing cells, integers (nullable in one file), float32, frequency weights
    with zeros and missing ones; the second file's rows all of weight 0, and the third file's
    first 30 rows each missing a value."""
    rng = stream(seed, "test-partitions", 7)
    frames = []
    for i, n in enumerate(SIZES):
        a = rng.normal(size=n) * 3 + 10
        b = rng.integers(-50, 50, size=n)
        f = pd.DataFrame({"a": a, "b": b, "c": rng.normal(size=n).astype(np.float32),
                          "w": rng.integers(0, 4, size=n).astype(float if i != 3 else np.int64)})
        f.loc[rng.choice(n, 4, replace=False), "a"] = np.nan
        if i == 0:
            f["b"] = pd.array(b, dtype="Int64")
            f.loc[[3, 77], "b"] = pd.NA
        if i != 3:
            f.loc[rng.choice(n, 2, replace=False), "w"] = np.nan
        if i == 1:
            f["w"] = 0.0
        if i == 2:
            f.loc[:29, "a"] = np.nan
        frames.append(f)
    return frames


def _passes(src: PartitionedSource, cls, options, scanned, chunk: int, fast: bool,
            extra=(), weight_column=None):
    """Every kept chunk of every partition, the fast path on or off."""
    import src.data.partitions as partitions

    saved = partitions.FAST_CHUNKS
    partitions.FAST_CHUNKS = fast
    try:
        return [c for p in src.partitions
                for c in kept_chunks(src, p, cls, options, scanned.meta, chunk,
                                     columns=scanned.columns, weight_column=weight_column,
                                     extra=extra)]
    finally:
        partitions.FAST_CHUNKS = saved


def _same_chunks(fast, slow) -> None:
    assert len(fast) == len(slow) > 0
    for (r1, l1, d1), (r2, l2, d2) in zip(fast, slow):
        assert np.array_equal(r1, r2)
        assert (l1 is None and l2 is None) or l1.equals(l2)
        assert list(d1) == list(d2)
        for k in d1:
            assert d1[k].dtype == d2[k].dtype and d1[k].flags.c_contiguous
            assert d1[k].shape == d2[k].shape and d1[k].tobytes() == d2[k].tobytes()


class TestFastPath:
    @pytest.mark.parametrize("weights,chunk,target", [(False, 64, None), (True, 64, None),
                                                      (True, 30, 100), (False, 1000, None)])
    def test_gmm_chunks_bitwise_as_prepare_data(self, tmp_path, weights, chunk, target):
        """The passes' fast path gives prepare_data's chunks bit for bit (--drop-missing, integer, nullable and float32 columns, weights with zeros and missing values, a file all of weight 0, a chunk whose rows are all dropped), with their rows and --id values."""
        from src.data.partitions import _fast_chunk, _fast_plan, _read_chunks

        frames = _mixed_frames()
        for i, f in enumerate(frames):
            f["id"] = [f"r{i}-{j}" for j in range(len(f))]
        root = write(tmp_path / "data", frames)
        src = PartitionedSource.open(str(root), target_rows=target)
        options = {"drop_missing": True}
        w = "w" if weights else None
        scanned = scan(src, GaussianMixtureModel, options, chunk_rows=chunk,
                       columns=["a", "b", "c"], weight_column=w, id_column="id")
        fast = _passes(src, GaussianMixtureModel, options, scanned, chunk, True, ("id",), w)
        slow = _passes(src, GaussianMixtureModel, options, scanned, chunk, False, ("id",), w)
        _same_chunks(fast, slow)
        if weights:
            second = [k for p, k in zip(src.partitions, scanned.kept) if p.path == src.files[1]]
            assert set(second) == {0} and WEIGHT_KEY in fast[0][2]
        assert sum(r.size for r, _, _ in fast) == scanned.n_obs
        plan = _fast_plan(GaussianMixtureModel, scanned.columns, options)
        assert plan is not None and plan.columns == ["a", "b", "c"]
        took = [fast for p in src.partitions
                for fast in _read_chunks(p, ["a", "b", "c", "w"], chunk,
                                         lambda c: isinstance(_fast_chunk(plan, c, w, True),
                                                              tuple))]
        assert took and all(took)

    @pytest.mark.parametrize("intercept", [True, False])
    def test_mixreg_chunks_bitwise(self, tmp_path, intercept):
        """mixreg's fast path gives prepare_data's design and target bit for bit, with and without the intercept, and the in-memory arrays over all rows."""
        frames = mixreg_frames()
        root = write(tmp_path / "data", frames)
        options = {"drop_missing": True, "target": "y", "intercept": intercept}
        data, _ = MixtureRegressionModel.prepare_data(whole(tmp_path, frames),
                                                      {**options, "source": "x"})
        src = PartitionedSource.open(str(root))
        scanned = scan(src, MixtureRegressionModel, options, chunk_rows=60)
        fast = _passes(src, MixtureRegressionModel, options, scanned, 60, True)
        _same_chunks(fast, _passes(src, MixtureRegressionModel, options, scanned, 60, False))
        got = concat([d for _, _, d in fast])
        assert np.array_equal(got["X"], data["X"]) and np.array_equal(got["y"], data["y"])

    def test_errors_as_the_scan(self, tmp_path):
        """A value the scan would refuse met in a pass (the files changed since) raises the scan's sentence, file and global row: a missing value, an infinite value, a negative or missing weight."""
        frames = gmm_frames(missing=False)
        for f in frames:
            f["w"] = 1.0
        root = write(tmp_path / "data", frames)
        scanned = scan(str(root), GaussianMixtureModel, {}, chunk_rows=64, weight_column="w")
        changes = [("a", 30, np.nan, {}), ("b", 31, np.inf, {"drop_missing": True}),
                   ("w", 32, -1.0, {}), ("w", 33, np.nan, {})]
        for column, row, value, options in changes:
            bad = [f.copy() for f in frames]
            bad[2].loc[row, column] = value
            write(tmp_path / "bad", bad)
            with pytest.raises(DataError) as expected:
                scan(str(tmp_path / "bad"), GaussianMixtureModel, options, chunk_rows=64,
                     weight_column="w")
            assert f"row {SIZES[0] + SIZES[1] + row}" in str(expected.value)
            with pytest.raises(DataError) as got:
                _passes(PartitionedSource.open(str(tmp_path / "bad")), GaussianMixtureModel,
                        options, scanned, 64, True, weight_column="w")
            assert str(got.value) == str(expected.value)

    def test_text_columns_and_other_families_take_the_slow_path(self, tmp_path):
        """Numbers stored as text, LCA and a subclass with its own prepare_data are read through prepare_data, as the scan reads them."""
        from src.data.partitions import _fast_plan

        frames = gmm_frames(missing=False)
        for f in frames:
            f["a"] = f["a"].map(repr)
        root = write(tmp_path / "data", frames)
        data, _ = GaussianMixtureModel.prepare_data(whole(tmp_path, frames), {"source": "x"})
        src = PartitionedSource.open(str(root))
        scanned = scan(src, GaussianMixtureModel, {}, chunk_rows=64)
        assert np.array_equal(concat(chunks_of(src, GaussianMixtureModel, {}, scanned))["X"],
                              data["X"])

        class Scaled(GaussianMixtureModel):
            @classmethod
            def prepare_data(cls, frame, options):
                data, meta = super().prepare_data(frame, options)
                return {"X": 2 * data["X"]}, meta

        assert _fast_plan(Scaled, ["a", "b"], {}) is None
        assert _fast_plan(LatentClassModel, ["a", "b"], {}) is None
        assert _fast_plan(GaussianMixtureModel, ["a", "b"], {}) is not None
        assert _fast_plan(MixtureRegressionModel, ["x", "y"], {}) is None   # no target

    def test_files_decoded_in_jemalloc_pool(self, tmp_path):
        """When pyarrow has jemalloc the chunks' Arrow memory is allocated there, not in the default pool (mimalloc keeps about twice the live bytes resident)."""
        from src.data.partitions import _read_chunks, _reading_pool

        pool = _reading_pool()
        if pool is None:
            pytest.skip("this pyarrow has no jemalloc")
        root = write(tmp_path / "data", gmm_frames())
        part = PartitionedSource.open(str(root)).partitions[0]
        before = pool.bytes_allocated()
        sizes = list(_read_chunks(part, ["a", "b", "c"], 64,
                                  lambda c: (c.table().nbytes, pool.bytes_allocated() - before)))
        assert all(held >= nbytes > 0 for nbytes, held in sizes)
