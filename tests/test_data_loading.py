"""Loading CSV / TSV / Parquet / built-in data and the DataError sentences."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from src.data import (DEFAULT_SOURCE, builtin_path, check_enough_rows, file_sha256, load_table,
                      numeric_matrix)
from src.utils.errors import DataError, PipelineError
from src.utils.messages import set_language


@pytest.fixture(autouse=True)
def english():
    set_language("en")
    yield
    set_language(None)


@pytest.fixture
def table() -> pd.DataFrame:
    return pd.DataFrame({"x": [1.5, 2.0, -3.25, 4.0], "y": [10, 20, 30, 45], "g": ["a", "b", "a", "c"]})


def write_csv(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


class TestLoadTable:
    def test_builtin_default(self):
        """No source means builtin:faithful: 272 rows, hashed, absolute path recorded."""
        frame, record = load_table(None)
        again, record2 = load_table(DEFAULT_SOURCE)
        assert frame.shape == (272, 2) and list(frame.columns) == ["eruptions", "waiting"]
        pd.testing.assert_frame_equal(frame, again)
        path = Path(record["path"])
        assert path.is_absolute() and path == builtin_path("faithful")
        assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert record == record2 | {"source": DEFAULT_SOURCE}
        assert record["n_rows"] == 272 and record["columns"] == ["eruptions", "waiting"]
        assert frame["waiting"].iloc[0] == 79 and frame["eruptions"].iloc[0] == pytest.approx(3.6)

    def test_unknown_builtin(self):
        """An unknown built-in name lists the available ones."""
        with pytest.raises(DataError, match="no built-in data set 'iris'.*builtin:faithful"):
            load_table("builtin:iris")

    def test_csv_tsv_parquet_agree(self, tmp_path, table):
        """The same table read from CSV, TSV and Parquet gives the same frame and record."""
        table.to_csv(tmp_path / "t.csv", index=False)
        table.to_csv(tmp_path / "t.tsv", index=False, sep="\t")
        table.to_parquet(tmp_path / "t.parquet", index=False)
        frames = {ext: load_table(str(tmp_path / f"t.{ext}"), columns=["y", "x"])
                  for ext in ("csv", "tsv", "parquet")}
        for ext, (frame, record) in frames.items():
            assert list(frame.columns) == ["y", "x"]
            np.testing.assert_allclose(frame.to_numpy(dtype=float), table[["y", "x"]].to_numpy(float))
            assert record["format"] == ext and record["n_rows"] == 4
            assert record["sha256"] == file_sha256(tmp_path / f"t.{ext}")
        full, record = load_table(tmp_path / "t.csv")
        assert record["columns"] == ["x", "y", "g"] and list(full["g"]) == ["a", "b", "a", "c"]

    @pytest.mark.parametrize("ext", ["csv", "parquet"])
    def test_missing_column_lists_available(self, tmp_path, table, ext):
        """A missing column is named, with the available columns."""
        path = tmp_path / f"t.{ext}"
        table.to_csv(path, index=False) if ext == "csv" else table.to_parquet(path, index=False)
        with pytest.raises(DataError, match=r"Column 'z' is not in .*available columns are: x, y, g"):
            load_table(str(path), columns=["x", "z"])

    def test_missing_file_bad_extension_unreadable(self, tmp_path):
        """A missing file, an unknown extension and a damaged file each get one sentence."""
        with pytest.raises(DataError, match="does not exist; check the path") as err:
            load_table(str(tmp_path / "nope.csv"))
        assert err.value.exit_code == 2 and isinstance(err.value, (PipelineError, ValueError))
        with pytest.raises(DataError, match=r"\.csv, \.tsv or \.parquet"):
            load_table(write_csv(tmp_path / "t.xlsx", "a\n1\n"))
        (tmp_path / "bad.parquet").write_bytes(b"this is not parquet at all")
        with pytest.raises(DataError, match="Could not read .*bad.parquet as PARQUET"):
            load_table(str(tmp_path / "bad.parquet"))
        with pytest.raises(DataError, match="Could not read .*empty.csv as CSV"):
            load_table(write_csv(tmp_path / "empty.csv", ""))
        (tmp_path / "latin.csv").write_bytes("name\nJos\xe9\n".encode("latin-1"))
        with pytest.raises(DataError, match="Could not read"):
            load_table(str(tmp_path / "latin.csv"))
        with pytest.raises(DataError, match="has no data rows"):
            load_table(write_csv(tmp_path / "header.csv", "a,b\n"))

    def test_as_text_keeps_codes_and_missing(self, tmp_path):
        """As text, codes stay as written and empty cells are missing, in CSV and Parquet."""
        path = write_csv(tmp_path / "items.csv", "q1,q2\n1,01\n2,\n,NA\n")
        frame, _ = load_table(path, as_text=True)
        assert list(frame["q1"].iloc[:2]) == ["1", "2"] and pd.isna(frame["q1"].iloc[2])
        assert frame["q2"].iloc[0] == "01" and pd.isna(frame["q2"].iloc[1])
        assert frame["q2"].iloc[2] == "NA"  # a code, not a missing value
        pq = tmp_path / "items.parquet"
        pd.DataFrame({"q1": [1.0, 2.0, np.nan], "q2": pd.array([3, None, 1], dtype="Int64"),
                      "q3": ["yes", None, "no"], "q4": [0.5, 1.0, 2.0]}).to_parquet(pq)
        frame, _ = load_table(str(pq), as_text=True)
        assert list(frame["q1"].iloc[:2]) == ["1", "2"] and pd.isna(frame["q1"].iloc[2])
        assert frame["q2"].iloc[0] == "3" and pd.isna(frame["q2"].iloc[1])
        assert frame["q3"].iloc[0] == "yes" and pd.isna(frame["q3"].iloc[1])
        assert list(frame["q4"]) == ["0.5", "1.0", "2.0"]

    def test_file_sha256_streams(self, tmp_path):
        """The streamed hash equals hashlib's over the whole content, across chunk borders."""
        blob = bytes(range(256)) * 41
        (tmp_path / "b.bin").write_bytes(blob)
        assert file_sha256(tmp_path / "b.bin", chunk_size=1000) == hashlib.sha256(blob).hexdigest()


class TestNumericMatrix:
    def test_values_and_mask(self, table):
        """Numeric columns become a float64 matrix in the requested order with a full mask."""
        X, keep = numeric_matrix(table, ["y", "x"], drop_missing=False, source="t.csv")
        assert X.dtype == np.float64 and keep.all()
        np.testing.assert_array_equal(X, table[["y", "x"]].to_numpy(float))

    def test_numbers_written_as_text_are_accepted(self):
        """A text column of numbers (e.g. read as text) converts without error."""
        frame = pd.DataFrame({"a": ["1", "2.5", "-3e2"], "b": [True, False, True]})
        X, _ = numeric_matrix(frame, ["a", "b"], drop_missing=False, source="s")
        np.testing.assert_array_equal(X, [[1.0, 1.0], [2.5, 0.0], [-300.0, 1.0]])

    def test_non_numeric_names_column_value_row(self, tmp_path):
        """Text in a numeric column names the column, the first bad value and its row."""
        path = write_csv(tmp_path / "d.csv", "a,b\n1,2\n3,4\n5,oops\n6,also\n")
        frame, _ = load_table(path)
        with pytest.raises(DataError, match=r"Column 'b' of d.csv has the non-numeric value "
                                            r"'oops' in data row 3"):
            numeric_matrix(frame, ["a", "b"], drop_missing=False, source="d.csv")

    def test_infinite(self, tmp_path):
        """An infinite value names the column and row."""
        frame, _ = load_table(write_csv(tmp_path / "d.csv", "a,b\n1,2\n3,inf\n"))
        with pytest.raises(DataError, match="Column 'b' of d.csv has an infinite value in data row 2"):
            numeric_matrix(frame, ["a", "b"], drop_missing=False, source="d.csv")

    def test_missing_values_and_drop_missing(self, tmp_path):
        """Missing values are counted and --drop-missing suggested; with it rows are dropped."""
        frame, _ = load_table(write_csv(tmp_path / "d.csv", "a,b\n1,2\n,4\n5,\n7,8\n"))
        with pytest.raises(DataError, match=r"^2 rows of d.csv have a missing value \(the first is "
                                            r"data row 2, column 'a'\).*--drop-missing"):
            numeric_matrix(frame, ["a", "b"], drop_missing=False, source="d.csv")
        X, keep = numeric_matrix(frame, ["a", "b"], drop_missing=True, source="d.csv")
        np.testing.assert_array_equal(keep, [True, False, False, True])
        np.testing.assert_array_equal(X, [[1.0, 2.0], [7.0, 8.0]])

    def test_all_missing_rows_and_columns(self, tmp_path):
        """All-missing rows, an all-missing column and no complete row are each explained."""
        frame, _ = load_table(write_csv(tmp_path / "d.csv", "a,b,c\n1,2,\n,,\n3,,\n4,5,\n"))
        with pytest.raises(DataError, match=r"^1 rows of d.csv have no value in any selected column "
                                            r"\(the first is data row 2\)"):
            numeric_matrix(frame, ["a", "b"], drop_missing=False, source="d.csv")
        with pytest.raises(DataError, match="Column 'c' of d.csv has no values at all"):
            numeric_matrix(frame, ["a", "c"], drop_missing=True, source="d.csv")
        odd = pd.DataFrame({"a": [1.0, np.nan], "b": [np.nan, 2.0]})
        with pytest.raises(DataError, match="No row of o has a value in every selected column"):
            numeric_matrix(odd, ["a", "b"], drop_missing=True, source="o")

    def test_constant_column_only_when_asked(self, table):
        """A constant column is an error for Gaussian models only, and is named."""
        frame = table.assign(c=7.0)
        numeric_matrix(frame, ["x", "c"], drop_missing=False, source="t")
        with pytest.raises(DataError, match=r"Column 'c' of t is constant \(every value is 7\)"):
            numeric_matrix(frame, ["x", "c"], drop_missing=False, source="t", reject_constant=True)

    def test_missing_column(self, table):
        """A column absent from the frame is named with the available ones."""
        with pytest.raises(DataError, match="Column 'w' is not in t; the available columns are: x, y, g"):
            numeric_matrix(table, ["w"], drop_missing=False, source="t")

    def test_too_few_rows(self):
        """Fewer rows than free parameters says to use fewer components or more data."""
        check_enough_rows(5, 5, "s")
        with pytest.raises(DataError, match="has 4 usable rows .* 5 free parameters; use fewer "
                                            "components or more data") as err:
            check_enough_rows(4, 5, "s")
        assert err.value.exit_code == 2


class TestChinese:
    def test_messages_in_chinese(self, tmp_path):
        """With --lang zh the same errors come in Chinese, with the same facts."""
        set_language("zh")
        frame, _ = load_table(write_csv(tmp_path / "d.csv", "a,b\n1,2\n,4\n"))
        with pytest.raises(DataError, match=r"d.csv 有 1 行含缺失值.*--drop-missing"):
            numeric_matrix(frame, ["a", "b"], drop_missing=False, source="d.csv")
        with pytest.raises(DataError, match="数据文件 .* 不存在"):
            load_table(str(tmp_path / "nope.csv"))
        with pytest.raises(DataError, match="请减少类别数或增加数据"):
            check_enough_rows(1, 5, "s")
