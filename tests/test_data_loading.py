"""Loading CSV / TSV / Parquet / built-in data and the DataError sentences."""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from src.data import (DEFAULT_SOURCE, builtin_path, check_enough_rows, file_sha256, load_table,
                      numeric_matrix)
from src.data.sources import classify_source
from src.utils.errors import DataError, PipelineError, UsageError
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
        with pytest.raises(DataError, match="no built-in data set 'wine'.*builtin:faithful"):
            load_table("builtin:wine")

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
        with pytest.raises(DataError, match=r"bad.parquet is not a Parquet file: it holds plain text"):
            load_table(str(tmp_path / "bad.parquet"))
        with pytest.raises(DataError, match=r"empty.csv is empty \(no header line"):
            load_table(write_csv(tmp_path / "empty.csv", ""))
        with pytest.raises(DataError, match=r"header.csv has a header \(columns: a, b\) but no data rows"):
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
        """Text in a numeric column names the column, the first bad value and its 0-based row position."""
        path = write_csv(tmp_path / "d.csv", "a,b\n1,2\n3,4\n5,oops\n6,also\n")
        frame, _ = load_table(path)
        with pytest.raises(DataError, match=r"Column 'b' of d.csv has the non-numeric value "
                                            r"'oops' in row 2 \(0-based, as pandas counts\); "):
            numeric_matrix(frame, ["a", "b"], drop_missing=False, source="d.csv")

    def test_infinite(self, tmp_path):
        """An infinite value names the column and the row's 0-based position, as frame.iloc takes it."""
        frame, _ = load_table(write_csv(tmp_path / "d.csv", "a,b\n1,2\n3,inf\n"))
        with pytest.raises(DataError, match=r"Column 'b' of d.csv has an infinite value in row 1 "
                                            r"\(0-based, as pandas counts\);"):
            numeric_matrix(frame, ["a", "b"], drop_missing=False, source="d.csv")
        assert np.isinf(frame.iloc[1]["b"])

    def test_missing_values_and_drop_missing(self, tmp_path):
        """Missing values are counted and --drop-missing suggested; with it rows are dropped."""
        frame, _ = load_table(write_csv(tmp_path / "d.csv", "a,b\n1,2\n,4\n5,\n7,8\n"))
        with pytest.raises(DataError, match=r"^2 rows of d.csv have a missing value \(the first is "
                                            r"row 1, 0-based as pandas counts, column 'a'\)"
                                            r".*--drop-missing"):
            numeric_matrix(frame, ["a", "b"], drop_missing=False, source="d.csv")
        X, keep = numeric_matrix(frame, ["a", "b"], drop_missing=True, source="d.csv")
        np.testing.assert_array_equal(keep, [True, False, False, True])
        np.testing.assert_array_equal(X, [[1.0, 2.0], [7.0, 8.0]])

    def test_all_missing_rows_and_columns(self, tmp_path):
        """All-missing rows, an all-missing column and no complete row are each explained."""
        frame, _ = load_table(write_csv(tmp_path / "d.csv", "a,b,c\n1,2,\n,,\n3,,\n4,5,\n"))
        with pytest.raises(DataError, match=r"^1 rows of d.csv have no value in any selected column "
                                            r"\(the first is row 1, 0-based as pandas counts\)"):
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
        with pytest.raises(DataError, match=r"d.csv 有 1 行含缺失值（第一处在位置为 1 的行.*从 0 开始"
                                            r".*--drop-missing"):
            numeric_matrix(frame, ["a", "b"], drop_missing=False, source="d.csv")
        with pytest.raises(DataError, match="数据文件 .* 不存在"):
            load_table(str(tmp_path / "nope.csv"))
        with pytest.raises(DataError, match="请减少类别数或增加数据"):
            check_enough_rows(1, 5, "s")


def write_bytes(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


class TestDuplicateColumns:
    def test_selection_twice(self, tmp_path):
        """Selecting a column twice is one sentence naming it, in load_table and numeric_matrix."""
        path = write_csv(tmp_path / "d.csv", "a,b\n1,2\n3,4\n")
        with pytest.raises(DataError, match=r"^Column 'a' is selected 2 times \(columns: a, a\); "
                                            r"list each column once\.$") as err:
            load_table(path, columns=["a", "a"])
        assert err.value.exit_code == 2
        frame, _ = load_table(path)
        with pytest.raises(DataError, match="Column 'b' is selected 2 times"):
            numeric_matrix(frame, ["b", "a", "b"], drop_missing=False, source="d.csv")

    def test_header_twice_csv(self, tmp_path):
        """A name twice in a CSV header is named with its positions unless it is not used."""
        path = write_csv(tmp_path / "d.csv", "a,b,a\n1,2,3\n4,5,6\n")
        with pytest.raises(DataError, match=r"d.csv has the column name 'a' 2 times in its header "
                                            r"\(columns 1, 3\); rename"):
            load_table(path)
        with pytest.raises(DataError, match="column name 'a' 2 times"):
            load_table(path, columns=["b", "a.1"])
        frame, _ = load_table(path, columns=["b"])
        assert list(frame["b"]) == [2, 5]

    def test_header_twice_parquet(self, tmp_path):
        """A name twice in a Parquet schema is named too, not a pyarrow error."""
        import pyarrow as pa
        import pyarrow.parquet as pq
        pq.write_table(pa.table([pa.array([1, 2]), pa.array([3, 4]), pa.array([5, 6])],
                                names=["x", "y", "x"]), tmp_path / "d.parquet")
        with pytest.raises(DataError, match=r"column name 'x' 2 times in its header \(columns 1, 3\)"):
            load_table(str(tmp_path / "d.parquet"), columns=["x", "y"])
        frame, _ = load_table(str(tmp_path / "d.parquet"), columns=["y"])
        assert list(frame["y"]) == [3, 4]


class TestSources:
    def test_classify(self, tmp_path):
        """Sources are classified as builtin, file, folder, glob, other or missing, without reading them."""
        (tmp_path / "parts" / "year=2020").mkdir(parents=True)
        for name in ("parts/year=2020/p0.parquet", "parts/p1.parquet", "parts/t.csv.gz",
                     "parts/_SUCCESS", "parts/notes.md"):
            (tmp_path / name).write_bytes(b"")
        os.mkfifo(tmp_path / "pipe.csv")
        assert classify_source("builtin:faithful").kind == "builtin"
        assert classify_source(tmp_path / "parts" / "t.csv.gz").kind == "file"
        info = classify_source(tmp_path / "parts")
        assert (info.kind, info.n_parquet, info.n_text) == ("folder", 2, 1)
        info = classify_source(str(tmp_path / "parts" / "*.parquet"))
        assert (info.kind, info.n_parquet, info.n_text) == ("glob", 1, 0)
        assert classify_source(tmp_path / "pipe.csv").kind == "other"
        assert classify_source(tmp_path / "nope.csv").kind == "missing"

    def test_folder_says_what_it_holds(self, tmp_path):
        """A folder is said to be a folder, with its Parquet/CSV counts and that Parquet parts go through the partitioned path."""
        parts = tmp_path / "parts"
        parts.mkdir()
        for i in range(3):
            pd.DataFrame({"x": [1.0, 2.0]}).to_parquet(parts / f"part-{i}.parquet")
        write_csv(parts / "extra.csv", "x\n1\n")
        with pytest.raises(DataError, match=r"parts is a folder holding 3 Parquet and 1 CSV/TSV files "
                                            r"\(such as extra.csv\), not a single file; a folder of "
                                            r"Parquet files is partitioned input, read part by part "
                                            r"through the partitioned path") as err:
            load_table(str(parts))
        assert err.value.exit_code == 2 and "does not exist" not in str(err.value)
        with pytest.raises(DataError, match=r"parts is a folder holding 3 Parquet"):
            load_table(os.path.relpath(parts))  # a relative path names its example file too
        (tmp_path / "empty").mkdir()
        with pytest.raises(DataError, match="empty is a folder with no CSV, TSV or Parquet file"):
            load_table(str(tmp_path / "empty"))

    def test_pattern_and_pipe(self, tmp_path):
        """A file pattern and a named pipe each get their own sentence instead of 'does not exist'."""
        for i in range(2):
            write_csv(tmp_path / f"d{i}.csv", "x\n1\n")
        with pytest.raises(DataError, match=r"is a file pattern matching 2 CSV/TSV files; several "
                                            r"CSV/TSV files are not read as one data set"):
            load_table(str(tmp_path / "d*.csv"))
        os.mkfifo(tmp_path / "pipe.csv")
        with pytest.raises(DataError, match="pipe.csv is not a regular file"):
            load_table(str(tmp_path / "pipe.csv"))


    def test_resolve_source_is_public(self, tmp_path):
        """resolve_source gives the built-in default and a file's name and path, and refuses a folder in one sentence."""
        from src.data.loading import resolve_source

        assert resolve_source(None) == (DEFAULT_SOURCE, builtin_path("faithful"))
        path = Path(write_csv(tmp_path / "d.csv", "a\n1\n"))
        assert resolve_source(str(path)) == (str(path), path)
        (tmp_path / "empty").mkdir()
        with pytest.raises(DataError, match="empty is a folder with no CSV, TSV or Parquet file"):
            resolve_source(str(tmp_path / "empty"))


class TestDetection:
    def test_semicolon_separated(self, tmp_path):
        """A header with semicolons and no commas is read as semicolon-separated, with a note."""
        path = write_csv(tmp_path / "s.csv", "a;b;c\n1;2;3\n4;5;6\n")
        frame, record = load_table(path, columns=["c", "a"])
        assert list(frame.columns) == ["c", "a"] and list(frame["c"]) == [3, 6]
        assert record["sep"] == ";" and record["decimal"] == "." and record["encoding"] == "utf-8"
        assert len(record["notes"]) == 1
        assert record["notes"][0].startswith(f"Read {tmp_path / 's.csv'} as semicolon-separated")

    def test_single_column_with_semicolon_in_its_name(self, tmp_path):
        """A single column named with a semicolon stays one column when its values have none."""
        frame, record = load_table(write_csv(tmp_path / "one.csv", "score (0;10)\n5\n7\n"))
        assert list(frame.columns) == ["score (0;10)"] and record["notes"] == []
        frame, _ = load_table(str(tmp_path / "one.csv"), sep=",")
        assert frame["score (0;10)"].tolist() == [5, 7]

    def test_tabs_in_csv_and_commas_in_tsv(self, tmp_path):
        """A .csv that is tab-separated and a .tsv that is comma-separated are both read by their header."""
        frame, record = load_table(write_csv(tmp_path / "t.csv", "a\tb\n1\t2\n"))
        assert list(frame.columns) == ["a", "b"] and record["sep"] == "\t"
        assert "tab-separated" in record["notes"][0]
        frame, record = load_table(write_csv(tmp_path / "c.tsv", "a,b\n1,2\n"))
        assert list(frame.columns) == ["a", "b"] and record["sep"] == ","

    def test_decimal_comma(self, tmp_path):
        """Semicolon files whose numbers use commas are read with a decimal comma, with a note."""
        path = write_csv(tmp_path / "eu.csv", "x;y;g\n1,5;2;a\n-0,25;3;b\n")
        frame, record = load_table(path)
        assert frame["x"].tolist() == [1.5, -0.25] and frame["y"].tolist() == [2, 3]
        assert record["decimal"] == ","
        assert any("decimal comma ('1,5' as 1.5)" in n for n in record["notes"])
        X, _ = numeric_matrix(frame, ["x", "y"], drop_missing=False, source="eu.csv")
        np.testing.assert_array_equal(X, [[1.5, 2.0], [-0.25, 3.0]])

    def test_no_decimal_comma_when_points_are_used(self, tmp_path):
        """A semicolon file with decimal points keeps the decimal point."""
        frame, record = load_table(write_csv(tmp_path / "p.csv", "x;y\n1.5;2\n2,5;3\n"))
        assert record["decimal"] == "." and frame["x"].tolist() == ["1.5", "2,5"]

    def test_latin1_file(self, tmp_path):
        """A file that is not valid UTF-8 is read as cp1252 with a note."""
        path = write_bytes(tmp_path / "latin.csv", "name;score\nJosé;1,5\nZoë;2,0\n".encode("cp1252"))
        frame, record = load_table(path)
        assert frame["name"].tolist() == ["José", "Zoë"] and frame["score"].tolist() == [1.5, 2.0]
        assert record["encoding"] == "cp1252"
        assert any(n.startswith(f"Read {path} as cp1252 because it is not valid UTF-8")
                   for n in record["notes"])
        frame, record = load_table(path, encoding="latin-1")
        assert frame["name"].tolist() == ["José", "Zoë"] and record["encoding"] == "latin-1"
        assert not any("UTF-8" in n for n in record["notes"])

    def test_non_utf8_byte_after_the_sample(self, tmp_path):
        """A non-UTF-8 byte beyond the first 64 KiB makes the file be read again as cp1252."""
        body = "".join(f"{i},x\n" for i in range(20000)) + "20000,Jos\xe9\n"
        path = write_bytes(tmp_path / "late.csv", ("id,name\n" + body).encode("cp1252"))
        assert os.path.getsize(path) > 1 << 16
        frame, record = load_table(path)
        assert frame["name"].iloc[-1] == "José" and len(frame) == 20001
        assert record["encoding"] == "cp1252" and len(record["notes"]) == 1

    def test_utf8_bom_and_utf16(self, tmp_path):
        """A UTF-8 byte-order mark is dropped and a UTF-16 file is read by its byte-order mark."""
        frame, record = load_table(write_bytes(tmp_path / "b.csv", "\ufeffa,b\n1,2\n".encode("utf-8")))
        assert list(frame.columns) == ["a", "b"] and record["notes"] == []
        frame, record = load_table(write_bytes(tmp_path / "w.csv", "a;b\n1;é\n".encode("utf-16")))
        assert list(frame.columns) == ["a", "b"] and frame["b"].iloc[0] == "é"
        assert record["encoding"] == "utf-16" and "UTF-16" in record["notes"][0]

    def test_explicit_sep_overrides_detection(self, tmp_path):
        """An explicit separator wins over detection, and 'tab' names the tab."""
        path = write_csv(tmp_path / "mixed.csv", "a;b,c\n1;2,5\n")
        frame, record = load_table(path)
        assert list(frame.columns) == ["a;b", "c"] and record["notes"] == []
        frame, record = load_table(path, sep=";")
        assert list(frame.columns) == ["a", "b,c"] and frame["b,c"].iloc[0] == 2.5
        assert record["sep"] == ";" and record["decimal"] == ","
        frame, record = load_table(write_csv(tmp_path / "t.csv", "a\tb\n1\t2\n"), sep="tab")
        assert list(frame.columns) == ["a", "b"] and record["notes"] == []

    def test_explicit_sep_that_gives_one_column(self, tmp_path):
        """An explicit separator leaving one column named like 'a;b;c' says which separator to use."""
        path = write_csv(tmp_path / "s.csv", "a;b;c\n1;2;3\n")
        with pytest.raises(DataError, match=r"^Reading .*s.csv with --sep ',' gives one column named "
                                            r"'a;b;c'; the file looks semicolon-separated: use "
                                            r"--sep ';'\.$"):
            load_table(path, sep=",")
        with pytest.raises(DataError, match=r"gives one column named 'a,b'; the file looks "
                                            r"comma-separated: use --sep ','"):
            load_table(write_csv(tmp_path / "c.csv", "a,b\n1,2\n"), sep=";")

    def test_explicit_encoding_that_cannot_decode(self, tmp_path):
        """An explicit encoding that cannot decode the file names the byte, its line and one that can."""
        path = write_bytes(tmp_path / "l.csv", "name\nAnn\nJos\xe9\n".encode("cp1252"))
        with pytest.raises(DataError, match=r"l.csv is not valid utf-8 text \(byte 0xe9 in line 3, the header being line 1\); "
                                            r"it looks like cp1252: use --encoding cp1252"):
            load_table(path, encoding="utf-8")
        late = "id\n" + "1\n" * 40000 + "Jos\xe9\n"
        path = write_bytes(tmp_path / "late.csv", late.encode("cp1252"))
        with pytest.raises(DataError, match=r"byte 0xe9 in line 40002, the header being line 1\); it looks like cp1252"):
            load_table(path, encoding="utf-8")

    def test_explicit_encoding_on_utf8_and_unknown_names(self, tmp_path):
        """Reading UTF-8 as cp1252 on request adds a note; unknown encodings and separators are usage errors."""
        path = write_csv(tmp_path / "u.csv", "name\nJosé\n")
        frame, record = load_table(path, encoding="cp1252")
        assert frame["name"].iloc[0] == "JosÃ©" and "may look garbled" in record["notes"][0]
        with pytest.raises(UsageError, match="no text encoding called 'klingon'") as err:
            load_table(path, encoding="klingon")
        assert err.value.exit_code == 2
        with pytest.raises(UsageError, match="The separator '::' cannot be used"):
            load_table(path, sep="::")

    def test_text_options_on_parquet(self, tmp_path, table):
        """sep/encoding given for a Parquet file are reported as not used."""
        table.to_parquet(tmp_path / "t.parquet", index=False)
        _, record = load_table(str(tmp_path / "t.parquet"), sep=";")
        assert record["sep"] is None and "apply to CSV/TSV files only" in record["notes"][0]
        _, record = load_table(str(tmp_path / "t.parquet"))
        assert record["notes"] == [] and record["encoding"] is None


class TestUnreadable:
    def test_blank_and_header_only(self, tmp_path):
        """A blank file is empty and a header-only file names its columns, one sentence each."""
        with pytest.raises(DataError, match=r"^The data file .*blank.csv is empty \(no header line and "
                                            r"no data rows\); check that it was written completely\.$"):
            load_table(write_csv(tmp_path / "blank.csv", "\n\n  \n"))
        pd.DataFrame({"x": pd.Series([], dtype=float)}).to_parquet(tmp_path / "h.parquet")
        with pytest.raises(DataError, match=r"h.parquet has a header \(columns: x\) but no data rows"):
            load_table(str(tmp_path / "h.parquet"))

    def test_binary_content(self, tmp_path):
        """Binary junk, a ZIP (xlsx) and a Parquet file named .csv are said not to be CSV text."""
        with pytest.raises(DataError, match=r"junk.csv holds binary data, not CSV text"):
            load_table(write_bytes(tmp_path / "junk.csv", bytes(range(256)) * 8))
        with zipfile.ZipFile(tmp_path / "book.csv", "w") as zf:
            zf.writestr("xl/workbook.xml", "<workbook/>")
        with pytest.raises(DataError, match=r"book.csv holds a ZIP archive \(an Excel .xlsx workbook"):
            load_table(str(tmp_path / "book.csv"))
        pd.DataFrame({"x": [1.0]}).to_parquet(tmp_path / "p.csv")
        with pytest.raises(DataError, match=r"p.csv holds a Parquet file, not CSV text"):
            load_table(str(tmp_path / "p.csv"))

    def test_parquet_that_is_not_parquet(self, tmp_path):
        """A .parquet file holding junk, or cut short, is named as such."""
        with pytest.raises(DataError, match=r"x.parquet is not a Parquet file: it holds binary data"):
            load_table(write_bytes(tmp_path / "x.parquet", b"\x00\x01\x02" * 50))
        pd.DataFrame({"x": np.arange(100.0)}).to_parquet(tmp_path / "full.parquet")
        blob = (tmp_path / "full.parquet").read_bytes()
        with pytest.raises(DataError, match=r"^The Parquet file .*cut.parquet is truncated or damaged"):
            load_table(write_bytes(tmp_path / "cut.parquet", blob[: len(blob) // 2]))
        with pytest.raises(DataError, match=r"z.parquet is empty"):
            load_table(write_bytes(tmp_path / "z.parquet", b""))

    def test_ragged_line(self, tmp_path):
        """A line with more fields than the header is named by its line number, said to count from 1 with the header."""
        with pytest.raises(DataError, match=r"^Line 3 of .*r.csv \(lines counted from 1, the header "
                                            r"being line 1\) has 3 fields but the header has 2; "
                                            r"check the separator and the quoting on that line\.$"):
            load_table(write_csv(tmp_path / "r.csv", "a,b\n1,2\n3,4,5\n"))

    def test_permission_denied(self, tmp_path):
        """A file without read permission is one sentence naming it, also when hashing it."""
        path = tmp_path / "locked.csv"
        write_csv(path, "a\n1\n")
        path.chmod(0)
        try:
            try:
                path.read_bytes()
            except PermissionError:
                pass
            else:
                pytest.skip("this user reads files whatever their permissions (root)")
            with pytest.raises(DataError, match=r"^Cannot read the data file .*locked.csv "
                                                r"\(Permission denied\); check that it is there"):
                load_table(str(path))
            with pytest.raises(DataError, match="Cannot read the data file .*locked.csv"):
                file_sha256(path)
        finally:
            path.chmod(0o600)


class TestChineseNewMessages:
    def test_new_messages_in_chinese(self, tmp_path):
        """The folder, duplicate and separator sentences and notes come in Chinese with --lang zh."""
        set_language("zh")
        (tmp_path / "parts").mkdir()
        pd.DataFrame({"x": [1.0]}).to_parquet(tmp_path / "parts" / "p0.parquet")
        with pytest.raises(DataError, match="是一个文件夹，其中有 1 个 Parquet 文件.*是分区输入，应通过分区路径"):
            load_table(str(tmp_path / "parts"))
        path = write_csv(tmp_path / "s.csv", "a;b\n1,5;2\n")
        with pytest.raises(DataError, match="被选择了 2 次"):
            load_table(path, columns=["a", "a"])
        with pytest.raises(DataError, match="该文件看起来是以分号分隔的：请使用 --sep ';'"):
            load_table(path, sep=",")
        _, record = load_table(path)
        assert "按分号分隔读取" in record["notes"][0] and "小数逗号" in record["notes"][1]
