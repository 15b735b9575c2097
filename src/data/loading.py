"""Reading the input table (CSV, TSV, Parquet or a built-in data set) and checking it.

Every problem a user can fix is a :class:`~src.utils.errors.DataError` (exit 2) whose
message is one sentence, in the user's language, naming the file or column and the fix.
A data row is named by its 0-based position below the header, as pandas counts ("row 4"
is the fifth data row); a line of the file (a ragged line) by its 1-based line number, the
header being line 1.

What is read (:func:`load_table`), and what it says when it cannot:

* **sources** (:mod:`src.data.sources`): ``builtin:NAME`` or one file.  A folder or a
  file pattern is recognised and its CSV/Parquet files counted, then refused: a folder or
  pattern of Parquet files is partitioned input, read chunk by chunk by
  :mod:`src.data.partitions`, never as one table; several CSV files are not read at all.
* **the id column** (``id_column``, ``--id``): read beside ``columns``, never one of them
  (:mod:`src.data.rows` has the rules and the kept rows' input positions).
* **format** from the extension: .csv/.txt, .tsv, .parquet/.pq (.gz/.bz2/.xz/.zip/.zst
  after a text extension are decompressed).
* **text files** (:mod:`src.data.sniffing`, from the first 64 KiB), unless ``sep`` /
  ``encoding`` are given, which override detection:

  - *encoding*: UTF-8 when the bytes are valid UTF-8 (a byte-order mark is dropped), UTF-16
    with a UTF-16 byte-order mark, otherwise cp1252 (Windows Latin-1; Latin-1 when cp1252
    cannot decode a byte).  If a later part of the file is not valid UTF-8 the file is read
    again as cp1252.
  - *separator*: the extension's (``,``; tab for .tsv), unless the header line has a single
    field with it and several with ``;``, tab or ``,`` (and the first data line splits with
    that one too): then the one giving most header fields.
  - *decimal comma*: with ``;`` as separator, numbers are read with ``decimal=","`` when
    the sampled data lines have numbers like ``1,5`` and none like ``1.5``.
  - each detection adds a one-line note to ``record["notes"]`` for the caller to print.
  - a given ``sep`` that leaves one column whose name splits with another separator (by the
    rule above) is an error saying which separator to use; a given
    ``encoding`` that cannot decode the file names the byte, its line and an encoding that can.
* **refused, one sentence each**: a missing file, a folder, a pattern, an unreadable file
  (permissions), an empty file, binary content (NUL or control bytes; Parquet, ZIP/xlsx,
  gzip, PDF signatures are named), a header with no data rows, a line with a different
  number of fields than the header, a .parquet file that is not Parquet or is truncated, a
  column name twice in the header (pandas would rename it ``a.1``) or twice in ``columns``.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from src.data.rows import check_id_column
from src.data.sniffing import (FALLBACK_ENCODINGS, TextDialect, content_kind, first_decode_error,
                               looks_binary, sniff_text)
from src.data.sources import SourceInfo, classify_source
from src.utils.errors import DataError, PipelineError
from src.utils.messages import register, t

__all__ = ["BUILTIN_DATASETS", "DEFAULT_SOURCE", "load_table", "resolve_source", "file_sha256",
           "builtin_path", "numeric_matrix", "check_enough_rows", "check_parquet_file", "chunk_of"]

_BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"
#: name after ``builtin:`` -> file in ``src/data/builtin``
BUILTIN_DATASETS: dict[str, str] = {"faithful": "faithful.csv", "iris": "iris.csv"}
DEFAULT_SOURCE = "builtin:faithful"

_FORMATS = {".csv": "csv", ".tsv": "tsv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet"}
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zip")
_RAGGED = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")

register({
    "data.file_missing": {
        "en": "The data file {path} does not exist; check the path.",
        "zh": "数据文件 {path} 不存在，请检查路径。"},
    "data.folder": {
        "en": "{path} is a folder holding {n_parquet} Parquet and {n_text} CSV/TSV files (such as "
              "{example}), not a single file; a folder of Parquet files is partitioned input, "
              "read part by part through the partitioned path (src.data.partitions), not loaded "
              "as one table.",
        "zh": "{path} 是一个文件夹，其中有 {n_parquet} 个 Parquet 文件和 {n_text} 个 CSV/TSV 文件（如 "
              "{example}），而不是单个文件；由 Parquet 文件组成的文件夹是分区输入，应通过分区路径"
              "（src.data.partitions）逐块读取，而不是作为一张表整体读入。"},
    "data.folder_text": {
        "en": "{path} is a folder holding {n_text} CSV/TSV files (such as {example}), not a single "
              "file; several CSV/TSV files are not read as one data set, so give one file with "
              "--data or write them as Parquet files in a folder.",
        "zh": "{path} 是一个文件夹，其中有 {n_text} 个 CSV/TSV 文件（如 {example}），而不是单个文件；"
              "多个 CSV/TSV 文件不会作为一个数据集读取，请用 --data 指定一个文件，或把它们写成一个文件夹中的 "
              "Parquet 文件。"},
    "data.folder_no_data": {
        "en": "{path} is a folder with no CSV, TSV or Parquet file in it, not a data file; give "
              "one file with --data.",
        "zh": "{path} 是一个文件夹，其中没有 CSV、TSV 或 Parquet 文件，不是数据文件；请用 --data 指定一个文件。"},
    "data.glob": {
        "en": "{path} is a file pattern matching {n_parquet} Parquet and {n_text} CSV/TSV files; "
              "a pattern of Parquet files is partitioned input, read part by part through the "
              "partitioned path (src.data.partitions), not loaded as one table.",
        "zh": "{path} 是一个文件名模式，匹配 {n_parquet} 个 Parquet 文件和 {n_text} 个 CSV/TSV 文件；"
              "匹配 Parquet 文件的模式是分区输入，应通过分区路径（src.data.partitions）逐块读取，"
              "而不是作为一张表整体读入。"},
    "data.glob_text": {
        "en": "{path} is a file pattern matching {n_text} CSV/TSV files; several CSV/TSV files "
              "are not read as one data set, so give one file with --data or write them as "
              "Parquet files in a folder.",
        "zh": "{path} 是一个文件名模式，匹配 {n_text} 个 CSV/TSV 文件；多个 CSV/TSV 文件不会作为一个"
              "数据集读取，请用 --data 指定一个文件，或把它们写成一个文件夹中的 Parquet 文件。"},
    "data.not_regular": {
        "en": "{path} is not a regular file (it is a device, pipe or socket); give a CSV, TSV or "
              "Parquet file.",
        "zh": "{path} 不是普通文件（而是设备、管道或套接字）；请指定 CSV、TSV 或 Parquet 文件。"},
    "data.cannot_open": {
        "en": "Cannot read the data file {path} ({reason}); check that it is there and that you "
              "may read it.",
        "zh": "无法读取数据文件 {path}（{reason}）；请检查文件是否存在以及是否有读取权限。"},
    "data.unknown_builtin": {
        "en": "There is no built-in data set {name!r}; the built-in data sets are: {available}.",
        "zh": "没有名为 {name!r} 的内置数据集；可用的内置数据集：{available}。"},
    "data.bad_extension": {
        "en": "Cannot tell the format of {path}: use a file ending in .csv, .tsv or .parquet.",
        "zh": "无法判断 {path} 的格式：请使用 .csv、.tsv 或 .parquet 文件。"},
    "data.unreadable": {
        "en": "Could not read {path} as {kind}: {reason}.",
        "zh": "无法按 {kind} 格式读取 {path}：{reason}。"},
    "data.ragged_line": {
        "en": "Line {line} of {path} (lines counted from 1, the header being line 1) has {saw} "
              "fields but the header has {expected}; check the separator and the quoting on that "
              "line.",
        "zh": "{path} 第 {line} 行（行号从 1 开始，表头为第 1 行）有 {saw} 个字段，而表头有 {expected} 个；"
              "请检查该行的分隔符和引号。"},
    "data.not_parquet": {
        "en": "The data file {path} is not a Parquet file: it holds {what}; export it again as "
              "Parquet or give it the extension that matches its format.",
        "zh": "数据文件 {path} 不是 Parquet 文件，其中是{what}；请重新导出为 Parquet，或使用与其格式相符的扩展名。"},
    "data.parquet_truncated": {
        "en": "The Parquet file {path} is truncated or damaged (its closing 'PAR1' signature is "
              "missing); write it again.",
        "zh": "Parquet 文件 {path} 不完整或已损坏（缺少结尾的 'PAR1' 标记）；请重新写出该文件。"},
    "data.no_rows": {
        "en": "{source} has no data rows.",
        "zh": "{source} 中没有数据行。"},
    "data.header_only": {
        "en": "{source} has a header (columns: {columns}) but no data rows; check that the file "
              "was written completely.",
        "zh": "{source} 只有表头（列：{columns}），没有数据行；请检查文件是否完整写出。"},
    "data.duplicate_header": {
        "en": "{source} has the column name {column!r} {count} times in its header (columns "
              "{positions}); rename the copies so that every column name is unique.",
        "zh": "{source} 的表头中列名 {column!r} 出现了 {count} 次（第 {positions} 列）；请重命名，使每个列名唯一。"},
    "data.duplicate_selection": {
        "en": "Column {column!r} is selected {count} times (columns: {columns}); list each "
              "column once.",
        "zh": "列 {column!r} 被选择了 {count} 次（所选列：{columns}）；每列只需列出一次。"},
    "data.note.text_options_ignored": {
        "en": "--sep and --encoding apply to CSV/TSV files only, so they were not used for the "
              "Parquet file {path}.",
        "zh": "--sep 和 --encoding 只适用于 CSV/TSV 文件，因此读取 Parquet 文件 {path} 时未使用。"},
    "data.missing_column": {
        "en": "Column {column!r} is not in {source}; the available columns are: {available}.",
        "zh": "{source} 中没有列 {column!r}；可用的列：{available}。"},
    "data.non_numeric": {
        "en": "Column {column!r} of {source} has the non-numeric value {value!r} in row {row} "
              "(0-based, as pandas counts); this model needs numbers there.",
        "zh": "{source} 的列 {column!r} 在位置为 {row} 的行（从 0 开始计数，与 pandas 一致）中有非数值 "
              "{value!r}；该模型在此需要数字。"},
    "data.infinite": {
        "en": "Column {column!r} of {source} has an infinite value in row {row} (0-based, as "
              "pandas counts); remove or replace it.",
        "zh": "{source} 的列 {column!r} 在位置为 {row} 的行（从 0 开始计数，与 pandas 一致）中有无穷大值，"
              "请删除或替换。"},
    "data.column_all_missing": {
        "en": "Column {column!r} of {source} has no values at all; select other columns.",
        "zh": "{source} 的列 {column!r} 全部缺失，请选择其他列。"},
    "data.all_missing_rows": {
        "en": "{count} rows of {source} have no value in any selected column (the first is row "
              "{row}, 0-based as pandas counts); remove them or use --drop-missing.",
        "zh": "{source} 有 {count} 行在所选列中全部缺失（第一行的位置是 {row}，从 0 开始计数，与 pandas "
              "一致）；请删除这些行，或使用 --drop-missing。"},
    "data.missing_values": {
        "en": "{count} rows of {source} have a missing value (the first is row {row}, 0-based as "
              "pandas counts, column {column!r}); fill them in or use --drop-missing to drop those "
              "rows.",
        "zh": "{source} 有 {count} 行含缺失值（第一处在位置为 {row} 的行、列 {column!r}；行位置从 0 "
              "开始计数，与 pandas 一致）；请补全，或使用 --drop-missing 删除这些行。"},
    "data.no_complete_rows": {
        "en": "No row of {source} has a value in every selected column, so nothing is left after "
              "dropping missing values.",
        "zh": "{source} 中没有一行在所选列中完整无缺，删除缺失值后不剩任何数据。"},
    "data.constant_column": {
        "en": "Column {column!r} of {source} is constant (every value is {value}), so a Gaussian "
              "model cannot use it; leave that column out.",
        "zh": "{source} 的列 {column!r} 是常数（所有值都是 {value}），高斯模型无法使用，请去掉这一列。"},
    "data.too_few_rows": {
        "en": "{source} has {n_rows} usable rows but the model has {n_params} free parameters; "
              "use fewer components or more data.",
        "zh": "{source} 只有 {n_rows} 行可用数据，而模型有 {n_params} 个自由参数；"
              "请减少类别数或增加数据。"},
})


def builtin_path(name: str) -> Path:
    """Path of the built-in data set ``name`` (e.g. ``faithful``)."""
    if name not in BUILTIN_DATASETS:
        raise DataError(t("data.unknown_builtin", name=name,
                          available=", ".join(f"builtin:{n}" for n in sorted(BUILTIN_DATASETS))))
    return _BUILTIN_DIR / BUILTIN_DATASETS[name]


def _open_error(path: Path | str, exc: OSError) -> DataError:
    reason = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    return DataError(t("data.cannot_open", path=str(path), reason=reason.rstrip(".")))


def file_sha256(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, read in chunks (the data part of a run's fingerprint).

    A file that cannot be opened (permissions) is a DataError naming it.
    """
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(chunk_size), b""):
                digest.update(block)
    except OSError as exc:
        raise _open_error(path, exc) from None
    return digest.hexdigest()


def _format_of(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSED:
        suffixes = suffixes[:-1]
    fmt = _FORMATS.get(suffixes[-1]) if suffixes else None
    if fmt is None:
        raise DataError(t("data.bad_extension", path=str(path)))
    return fmt


def _unsupported(info: SourceInfo) -> DataError:
    """The sentence for a source that exists but is not one readable file."""
    if info.kind in ("folder", "glob") and (info.n_parquet or info.n_text):
        example = info.files[0] if info.files else "-"
        if info.kind == "folder" and info.path is not None and info.files:
            example = os.path.relpath(info.files[0], info.path)
        key = f"data.{info.kind}" if info.n_parquet else f"data.{info.kind}_text"
        return DataError(t(key, path=info.text, n_parquet=info.n_parquet,
                           n_text=info.n_text, example=str(example)))
    if info.kind == "folder":
        return DataError(t("data.folder_no_data", path=info.text))
    if info.kind == "other":
        return DataError(t("data.not_regular", path=info.text))
    return DataError(t("data.file_missing", path=info.text))


def resolve_source(source: str | Path | None) -> tuple[str, Path]:
    """(display name, path) of a data source; anything but one existing file is a DataError.

    Reads nothing, so the pipeline can check ``--data`` before any work (``None``:
    ``builtin:faithful``).
    """
    if source is None or str(source) == "":
        source = DEFAULT_SOURCE
    info = classify_source(source)
    if info.kind == "builtin":
        return info.text, builtin_path(info.name or "")
    if info.kind == "file" and info.path is not None:
        return info.text, info.path
    raise _unsupported(info)


_resolve = resolve_source  # the older private name (src/pipeline/checks.py falls back to it)


def _check_unique(columns: Sequence[str]) -> None:
    """A DataError when the selection names a column twice (pandas would return a frame for it)."""
    for col in dict.fromkeys(columns):
        count = list(columns).count(col)
        if count > 1:
            raise DataError(t("data.duplicate_selection", column=col, count=count,
                              columns=", ".join(columns)))


def _check_header(raw_names: Sequence[str], columns: list[str] | None, source: str) -> None:
    """A DataError for a name repeated in the header when it matters (all columns, or selected).

    pandas renames the second ``a`` of a CSV header to ``a.1``, so selecting ``a.1`` counts.
    """
    names = [str(n) for n in raw_names]
    for name in dict.fromkeys(names):
        positions = [i + 1 for i, n in enumerate(names) if n == name]
        if len(positions) < 2 or name == "":
            continue
        mangled = re.compile(re.escape(name) + r"(\.\d+)?")
        if columns is None or any(mangled.fullmatch(c) for c in columns):
            raise DataError(t("data.duplicate_header", source=source, column=name,
                              count=len(positions), positions=", ".join(map(str, positions))))


def _check_columns(available: Sequence[str], columns: Sequence[str], source: str,
                   id_column: str | None = None) -> None:
    names = [str(c) for c in available]
    for col in columns:
        if str(col) not in names:
            key = "data.missing_id" if id_column is not None and str(col) == id_column \
                else "data.missing_column"
            raise DataError(t(key, column=str(col), source=source,
                              available=", ".join(names) or "-"))


def check_parquet_file(path: Path) -> None:
    """A DataError (one sentence naming ``path``) unless the file starts and ends with the
    Parquet signature: an empty file, another format (named) or a truncated file."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(4096)
        fh.seek(max(size - 4, 0))
        tail = fh.read(4)
    if size == 0:
        raise DataError(t("data.empty_file", path=str(path)))
    if not head.startswith(b"PAR1"):
        kind = content_kind(head) or ("binary" if looks_binary(head) else "text")
        raise DataError(t("data.not_parquet", path=str(path), what=t(f"data.looks.{kind}")))
    if size < 12 or tail != b"PAR1":
        raise DataError(t("data.parquet_truncated", path=str(path)))


def _read_parquet(path: Path, columns: list[str] | None, source: str,
                  id_column: str | None = None) -> pd.DataFrame:
    """A Parquet file, after checking its signatures (so a CSV named .parquet is said to be one)."""
    import pyarrow.parquet as pq

    check_parquet_file(path)
    header = list(pq.read_schema(path).names)
    _check_header(header, columns, source)
    if columns is not None:
        _check_columns(header, columns, source, id_column)
    return pd.read_parquet(path, columns=columns)


def _encodings_to_try(dialect: TextDialect) -> list[str]:
    """The detected encoding, then the later fallbacks (a file may turn non-UTF-8 after 64 KiB)."""
    if dialect.encoding_explicit or dialect.encoding not in FALLBACK_ENCODINGS:
        return [dialect.encoding]
    return list(FALLBACK_ENCODINGS[FALLBACK_ENCODINGS.index(dialect.encoding):])


def _read_text_as(path: Path, dialect: TextDialect, encoding: str, columns: list[str] | None,
                  as_text: bool, source: str, id_column: str | None = None) -> pd.DataFrame:
    opts: dict[str, Any] = {"sep": dialect.sep, "encoding": encoding, "decimal": dialect.decimal}
    try:
        first = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False, **opts)
    except pd.errors.EmptyDataError:
        raise DataError(t("data.empty_file", path=str(path))) from None
    _check_header(list(first.iloc[0]) if len(first) else [], columns, source)
    if columns is not None:
        _check_columns(list(pd.read_csv(path, nrows=0, **opts).columns), columns, source,
                       id_column)
    text_args: dict[str, Any] = (
        {"dtype": str, "keep_default_na": False, "na_values": [""]} if as_text else {})
    if id_column is not None and not as_text:  # the id as written: 007 stays 007
        text_args["converters"] = {id_column: str}
    try:
        return pd.read_csv(path, usecols=columns, **opts, **text_args)
    except pd.errors.ParserError as exc:
        ragged = _RAGGED.search(str(exc))
        if ragged is None:
            raise
        expected, line, saw = ragged.groups()
        raise DataError(t("data.ragged_line", path=str(path), line=line, saw=saw,
                          expected=expected)) from None


def _read_text(path: Path, fmt: str, columns: list[str] | None, as_text: bool, source: str,
               sep: str | None, encoding: str | None,
               id_column: str | None = None) -> tuple[pd.DataFrame, TextDialect]:
    """A CSV/TSV file read as sniffed (or as told), falling back to cp1252 on a late bad byte."""
    dialect = sniff_text(path, default_sep="\t" if fmt == "tsv" else ",", sep=sep,
                         encoding=encoding)
    tries = _encodings_to_try(dialect)
    for i, enc in enumerate(tries):
        try:
            frame = _read_text_as(path, dialect, enc, columns, as_text, source, id_column)
        except UnicodeDecodeError:
            if i + 1 < len(tries):
                continue
            if not dialect.encoding_explicit:
                raise
            found = first_decode_error(path, enc) or (0, 0)
            guess = next((e for e in FALLBACK_ENCODINGS if first_decode_error(path, e) is None),
                         "latin-1")
            raise DataError(t("data.wrong_encoding", path=str(path), encoding=enc, byte=found[0],
                              line=found[1], guess=guess)) from None
        if enc != dialect.encoding:
            old = t("data.note.not_utf8", path=str(path), encoding=dialect.encoding)
            dialect.notes = [n for n in dialect.notes if n != old]
            dialect.notes.append(t("data.note.not_utf8", path=str(path), encoding=enc))
            dialect.encoding = enc
        return frame, dialect
    raise AssertionError("unreachable")  # pragma: no cover


def _read(path: Path, fmt: str, columns: list[str] | None, as_text: bool, source: str,
          sep: str | None, encoding: str | None,
          id_column: str | None = None) -> tuple[pd.DataFrame, TextDialect | None]:
    """The file's frame and, for text files, how it was read; read errors become DataErrors."""
    try:
        if fmt == "parquet":
            return _read_parquet(path, columns, source, id_column), None
        return _read_text(path, fmt, columns, as_text, source, sep, encoding, id_column)
    except PipelineError:  # already one sentence (DataError, or UsageError for a bad sep/encoding)
        raise
    except (PermissionError, FileNotFoundError, IsADirectoryError) as exc:
        raise _open_error(path, exc) from None
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError,
            pd.errors.EmptyDataError, ImportError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(t("data.unreadable", path=str(path), kind=fmt.upper(),
                          reason=reason.rstrip("."))) from exc
    except Exception as exc:  # pyarrow raises its own error classes for damaged files
        if type(exc).__module__.startswith("pyarrow"):
            raise DataError(t("data.unreadable", path=str(path), kind=fmt.upper(),
                              reason=" ".join(str(exc).split()).rstrip("."))) from exc
        raise


def distinct_values(col: pd.Series, present: np.ndarray
                    ) -> tuple[np.ndarray, list[Any], bool] | None:
    """``(codes, distinct values, float column)`` of the ``present`` cells of ``col``, such
    that ``values[codes]`` gives each present cell's value, or None when the column's
    values may compare equal without being the same (mixed Python objects).

    Floats are told apart by their bits (``-0.0`` is not ``0.0``), so text made from each
    distinct value is the text of each cell; formatting a few distinct values instead of
    every cell is what makes reading codes as text fast."""
    dtype = col.dtype
    if pd.api.types.is_float_dtype(dtype):
        vals = np.ascontiguousarray(col.to_numpy(dtype=float, na_value=np.nan)[present])
        codes, bits = pd.factorize(vals.view(np.int64))
        return codes, list(np.asarray(bits, dtype=np.int64).view(np.float64)), True
    if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_integer_dtype(dtype) \
            or pd.api.types.infer_dtype(col, skipna=True) == "string":
        codes, uniques = pd.factorize(col.to_numpy(dtype=object)[present])
        return codes, list(uniques), False
    return None


def _as_text_column(col: pd.Series) -> pd.Series:
    """Values as text with missing kept missing; whole floats print without ``.0``.

    Each distinct value is formatted once (:func:`distinct_values`)."""
    missing = col.isna().to_numpy()
    out = np.empty(len(col), dtype=object)
    out[:] = np.nan
    present = ~missing
    found = distinct_values(col, present) if present.any() else None
    if found is not None:
        codes, uniques, is_float = found
        if is_float:
            vals = np.asarray(uniques, dtype=float)
            whole = np.all(np.isfinite(vals) & (vals == np.round(vals)))
            texts = [str(int(v)) if whole else repr(float(v)) for v in vals]
        else:
            texts = [str(v) for v in uniques]
        out[present] = np.array(texts, dtype=object)[codes]
    elif present.any():
        values = col.to_numpy(dtype=object)
        out[present] = [str(v) for v in values[present]]
    return pd.Series(out, index=col.index, name=col.name, dtype=object)


def load_table(source: str | Path | None, *, columns: list[str] | None = None,
               as_text: bool = False, sep: str | None = None,
               encoding: str | None = None,
               id_column: str | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a CSV/TSV/Parquet file or ``builtin:NAME`` (``None``: ``builtin:faithful``).

    Returns the frame restricted to ``columns`` (all when None, in the requested order)
    and a JSON-able record of where it came from and how it was read (source, absolute
    path, format, SHA-256 of the file's bytes, row count, columns, ``sep``/``encoding``/
    ``decimal`` for text files (None for Parquet), and ``notes``: one-line sentences on
    what was detected, for the caller to print).  ``as_text`` reads every cell as text
    (for categorical models, so the code ``1`` stays ``1``) with empty cells missing.
    ``sep`` / ``encoding`` override detection for text files (see the module docstring);
    ``sep`` may also be ``tab``, ``\\t``, ``comma``, ``semicolon``.

    ``id_column`` (``--id``) is read too, as the last column of the frame (a text file's
    cells as written), under the rules of :mod:`src.data.rows` (it must exist and not be
    one of ``columns``; ``columns`` must be given); ``record["columns"]`` names the model's
    columns only and ``record["id_column"]`` the id (that key only when there is one).
    """
    name, path = resolve_source(source)
    fmt = _format_of(path)
    cols = None if columns is None else [str(c) for c in columns]
    if cols is not None:
        _check_unique(cols)
    id_name = None if id_column is None else str(id_column)
    check_id_column(id_name, cols, None, name)
    read_cols = cols + [id_name] if cols is not None and id_name is not None else cols
    frame, dialect = _read(path, fmt, read_cols, as_text, name, sep, encoding, id_name)
    notes = list(dialect.notes) if dialect is not None else []
    if dialect is None and (sep is not None or encoding is not None):
        notes.append(t("data.note.text_options_ignored", path=str(path)))
    if read_cols is not None:
        frame = frame[read_cols]
    else:
        check_id_column(id_name, None, list(frame.columns), name)
    if as_text and fmt == "parquet":
        frame = pd.DataFrame({c: _as_text_column(frame[c]) for c in frame.columns})
    if len(frame) == 0:
        raise DataError(t("data.header_only", source=name,
                          columns=", ".join(str(c) for c in frame.columns) or "-"))
    record = {"source": name, "path": str(path), "format": fmt, "sha256": file_sha256(path),
              "n_rows": int(len(frame)),
              "columns": [str(c) for c in frame.columns if id_name is None or str(c) != id_name],
              "sep": dialect.sep if dialect else None,
              "encoding": dialect.encoding if dialect else None,
              "decimal": dialect.decimal if dialect else None, "notes": notes}
    if id_name is not None:
        record["id_column"] = id_name
    return frame, record


def _numeric_column(col: pd.Series, name: str, source: str,
                    rows: pd.Index | None = None) -> np.ndarray:
    """One column as float64 (NaN for missing); a DataError for text or infinite values.

    ``rows``: the rows' names in messages (a chunk's global row numbers); None: positions."""
    if pd.api.types.is_bool_dtype(col.dtype):
        values = col.astype(float).to_numpy()
    elif pd.api.types.is_numeric_dtype(col.dtype):
        values = col.to_numpy(dtype=float, na_value=np.nan)
    else:
        coerced = pd.to_numeric(col, errors="coerce")
        bad = np.flatnonzero(coerced.isna().to_numpy() & col.notna().to_numpy())
        if bad.size:
            raise DataError(t("data.non_numeric", column=name, source=source,
                              value=str(col.iloc[bad[0]]), row=_row(rows, bad[0])))
        values = coerced.to_numpy(dtype=float, na_value=np.nan)
    inf = np.flatnonzero(np.isinf(values))
    if inf.size:
        raise DataError(t("data.infinite", column=name, source=source, row=_row(rows, inf[0])))
    return values


def _row(rows: pd.Index | None, position: int) -> int:
    """The number by which a message names the row at ``position``."""
    return int(position) if rows is None else int(rows[int(position)])


def chunk_of(frame: pd.DataFrame) -> dict[str, Any] | None:
    """``frame.attrs["_chunk"]``: set when ``frame`` is one chunk of partitioned input
    (:mod:`src.data.partitions`), else None.

    A chunk is a dict with ``path`` (the Parquet file the rows come from); the frame's index
    holds the rows' global 0-based input positions.  :func:`numeric_matrix` then names that
    file and those positions in its sentences and leaves the checks that need every row (a
    column with no value, no complete row, a constant column) to the merge of the chunks'
    meta (``MixtureModel.merge_meta``).
    """
    chunk = frame.attrs.get("_chunk") if hasattr(frame, "attrs") else None
    return chunk if isinstance(chunk, dict) else None


def numeric_matrix(frame: pd.DataFrame, columns: Sequence[str], *, drop_missing: bool,
                   source: str, reject_constant: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The selected columns as a float64 matrix (rows, columns) and the kept-row mask.

    Rows with a missing value are dropped when ``drop_missing``, otherwise they are an
    error saying how many there are.  ``reject_constant`` (Gaussian models) makes a
    column with a single value an error naming it.  A chunk of partitioned input
    (:func:`chunk_of`) is named by its file and global row numbers, and its checks that
    need every row are left to the merge of the chunks.
    """
    chunk = chunk_of(frame)
    rows = frame.index if chunk is not None else None
    if chunk is not None:
        source = str(chunk.get("path") or source)
    columns = [str(c) for c in columns]
    _check_unique(columns)
    _check_columns(list(frame.columns), columns, source)
    if len(frame) == 0:
        raise DataError(t("data.no_rows", source=source))
    X = np.empty((len(frame), len(columns)), dtype=np.float64)
    for j, name in enumerate(columns):
        X[:, j] = _numeric_column(frame[name], name, source, rows)
    nan = np.isnan(X)
    if nan.any():   # else (the usual case) no row-by-row reductions: every row is kept
        for j, name in enumerate(columns):
            if chunk is None and nan[:, j].all():
                raise DataError(t("data.column_all_missing", column=name, source=source))
        keep = ~nan.any(axis=1)
        if not drop_missing:
            empty = np.flatnonzero(nan.all(axis=1))
            if empty.size:
                raise DataError(t("data.all_missing_rows", count=int(empty.size), source=source,
                                  row=_row(rows, empty[0])))
            if not keep.all():
                first = int(np.flatnonzero(~keep)[0])
                raise DataError(t("data.missing_values", count=int((~keep).sum()),
                                  source=source, row=_row(rows, first),
                                  column=columns[int(np.flatnonzero(nan[first])[0])]))
        if chunk is None and not keep.any():
            raise DataError(t("data.no_complete_rows", source=source))
        X = X[keep] if not keep.all() else X
    else:
        keep = np.ones(X.shape[0], dtype=bool)
    if reject_constant and chunk is None:
        for j, name in enumerate(columns):
            if X.shape[0] > 1 and np.all(X[:, j] == X[0, j]):
                raise DataError(t("data.constant_column", column=name, source=source,
                                  value=f"{X[0, j]:g}"))
    return X, keep


def check_enough_rows(n_rows: int, n_params: int, source: str) -> None:
    """A DataError when there are fewer rows than free parameters to estimate."""
    if int(n_rows) < int(n_params):
        raise DataError(t("data.too_few_rows", source=source, n_rows=int(n_rows),
                          n_params=int(n_params)))
