"""Reading the input table (CSV, TSV, Parquet or a built-in data set) and checking it.

Every problem a user can fix is a :class:`~src.utils.errors.DataError` (exit 2) whose
message is one sentence, in the user's language, naming the file or column and the fix.
Rows are counted from 1 without the header line ("data row 5").
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from src.utils.errors import DataError
from src.utils.messages import register, t

__all__ = ["BUILTIN_DATASETS", "DEFAULT_SOURCE", "load_table", "file_sha256", "builtin_path",
           "numeric_matrix", "check_enough_rows"]

_BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"
#: name after ``builtin:`` -> file in ``src/data/builtin``
BUILTIN_DATASETS: dict[str, str] = {"faithful": "faithful.csv"}
DEFAULT_SOURCE = "builtin:faithful"

_FORMATS = {".csv": "csv", ".tsv": "tsv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet"}
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zip")

register({
    "data.file_missing": {
        "en": "The data file {path} does not exist; check the path.",
        "zh": "数据文件 {path} 不存在，请检查路径。"},
    "data.unknown_builtin": {
        "en": "There is no built-in data set {name!r}; the built-in data sets are: {available}.",
        "zh": "没有名为 {name!r} 的内置数据集；可用的内置数据集：{available}。"},
    "data.bad_extension": {
        "en": "Cannot tell the format of {path}: use a file ending in .csv, .tsv or .parquet.",
        "zh": "无法判断 {path} 的格式：请使用 .csv、.tsv 或 .parquet 文件。"},
    "data.unreadable": {
        "en": "Could not read {path} as {kind}: {reason}.",
        "zh": "无法按 {kind} 格式读取 {path}：{reason}。"},
    "data.no_rows": {
        "en": "{source} has no data rows.",
        "zh": "{source} 中没有数据行。"},
    "data.missing_column": {
        "en": "Column {column!r} is not in {source}; the available columns are: {available}.",
        "zh": "{source} 中没有列 {column!r}；可用的列：{available}。"},
    "data.non_numeric": {
        "en": "Column {column!r} of {source} has the non-numeric value {value!r} in data row {row}; "
              "this model needs numbers there.",
        "zh": "{source} 的列 {column!r} 在第 {row} 行数据中有非数值 {value!r}；该模型在此需要数字。"},
    "data.infinite": {
        "en": "Column {column!r} of {source} has an infinite value in data row {row}; "
              "remove or replace it.",
        "zh": "{source} 的列 {column!r} 在第 {row} 行数据中有无穷大值，请删除或替换。"},
    "data.column_all_missing": {
        "en": "Column {column!r} of {source} has no values at all; select other columns.",
        "zh": "{source} 的列 {column!r} 全部缺失，请选择其他列。"},
    "data.all_missing_rows": {
        "en": "{count} rows of {source} have no value in any selected column (the first is data row "
              "{row}); remove them or use --drop-missing.",
        "zh": "{source} 有 {count} 行在所选列中全部缺失（第一行是第 {row} 行数据）；"
              "请删除这些行，或使用 --drop-missing。"},
    "data.missing_values": {
        "en": "{count} rows of {source} have a missing value (the first is data row {row}, column "
              "{column!r}); fill them in or use --drop-missing to drop those rows.",
        "zh": "{source} 有 {count} 行含缺失值（第一处在第 {row} 行数据、列 {column!r}）；"
              "请补全，或使用 --drop-missing 删除这些行。"},
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


def file_sha256(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, read in chunks (the data part of a run's fingerprint)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def _format_of(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSED:
        suffixes = suffixes[:-1]
    fmt = _FORMATS.get(suffixes[-1]) if suffixes else None
    if fmt is None:
        raise DataError(t("data.bad_extension", path=str(path)))
    return fmt


def _resolve(source: str | Path | None) -> tuple[str, Path]:
    """(display name, path) of a data source; a missing file is a DataError."""
    if source is None or str(source) == "":
        source = DEFAULT_SOURCE
    text = str(source)
    if text.startswith("builtin:"):
        return text, builtin_path(text[len("builtin:"):])
    path = Path(text).expanduser()
    if not path.is_file():
        raise DataError(t("data.file_missing", path=text))
    return text, path.resolve()


def _check_columns(available: Sequence[str], columns: Sequence[str], source: str) -> None:
    names = [str(c) for c in available]
    for col in columns:
        if str(col) not in names:
            raise DataError(t("data.missing_column", column=str(col), source=source,
                              available=", ".join(names) or "-"))


def _read(path: Path, fmt: str, columns: list[str] | None, as_text: bool, source: str) -> pd.DataFrame:
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq
            header = list(pq.read_schema(path).names)
            if columns is not None:
                _check_columns(header, columns, source)
            return pd.read_parquet(path, columns=columns)
        sep = "\t" if fmt == "tsv" else ","
        header = list(pd.read_csv(path, sep=sep, nrows=0).columns)
        if columns is not None:
            _check_columns(header, columns, source)
        text_args: dict[str, Any] = (
            {"dtype": str, "keep_default_na": False, "na_values": [""]} if as_text else {})
        return pd.read_csv(path, sep=sep, usecols=columns, **text_args)
    except DataError:
        raise
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


def _as_text_column(col: pd.Series) -> pd.Series:
    """Values as text with missing kept missing; whole floats print without ``.0``."""
    missing = col.isna().to_numpy()
    values = col.to_numpy(dtype=object)
    out = np.empty(len(col), dtype=object)
    out[:] = np.nan
    present = ~missing
    if pd.api.types.is_float_dtype(col.dtype):
        vals = values[present].astype(float)
        whole = np.all(np.isfinite(vals) & (vals == np.round(vals)))
        out[present] = [str(int(v)) if whole else repr(float(v)) for v in vals]
    else:
        out[present] = [str(v) for v in values[present]]
    return pd.Series(out, index=col.index, name=col.name, dtype=object)


def load_table(source: str | Path | None, *, columns: list[str] | None = None,
               as_text: bool = False) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a CSV/TSV/Parquet file or ``builtin:NAME`` (``None``: ``builtin:faithful``).

    Returns the frame restricted to ``columns`` (all when None, in the requested order)
    and a JSON-able record of where it came from (source, absolute path, SHA-256 of the
    file's bytes, row count, columns).  ``as_text`` reads every cell as text (for
    categorical models, so the code ``1`` stays ``1``) with empty cells missing.
    """
    name, path = _resolve(source)
    fmt = _format_of(path)
    cols = None if columns is None else [str(c) for c in columns]
    frame = _read(path, fmt, cols, as_text, name)
    if cols is not None:
        frame = frame[cols]
    if as_text and fmt == "parquet":
        frame = pd.DataFrame({c: _as_text_column(frame[c]) for c in frame.columns})
    if len(frame) == 0:
        raise DataError(t("data.no_rows", source=name))
    record = {"source": name, "path": str(path), "format": fmt, "sha256": file_sha256(path),
              "n_rows": int(len(frame)), "columns": [str(c) for c in frame.columns]}
    return frame, record


def _numeric_column(col: pd.Series, name: str, source: str) -> np.ndarray:
    """One column as float64 (NaN for missing); a DataError for text or infinite values."""
    if pd.api.types.is_bool_dtype(col.dtype):
        values = col.astype(float).to_numpy()
    elif pd.api.types.is_numeric_dtype(col.dtype):
        values = col.to_numpy(dtype=float, na_value=np.nan)
    else:
        coerced = pd.to_numeric(col, errors="coerce")
        bad = np.flatnonzero(coerced.isna().to_numpy() & col.notna().to_numpy())
        if bad.size:
            raise DataError(t("data.non_numeric", column=name, source=source,
                              value=str(col.iloc[bad[0]]), row=int(bad[0]) + 1))
        values = coerced.to_numpy(dtype=float, na_value=np.nan)
    inf = np.flatnonzero(np.isinf(values))
    if inf.size:
        raise DataError(t("data.infinite", column=name, source=source, row=int(inf[0]) + 1))
    return values


def numeric_matrix(frame: pd.DataFrame, columns: Sequence[str], *, drop_missing: bool,
                   source: str, reject_constant: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The selected columns as a float64 matrix (rows, columns) and the kept-row mask.

    Rows with a missing value are dropped when ``drop_missing``, otherwise they are an
    error saying how many there are.  ``reject_constant`` (Gaussian models) makes a
    column with a single value an error naming it.
    """
    columns = [str(c) for c in columns]
    _check_columns(list(frame.columns), columns, source)
    if len(frame) == 0:
        raise DataError(t("data.no_rows", source=source))
    X = np.empty((len(frame), len(columns)), dtype=np.float64)
    for j, name in enumerate(columns):
        X[:, j] = _numeric_column(frame[name], name, source)
    nan = np.isnan(X)
    for j, name in enumerate(columns):
        if nan[:, j].all():
            raise DataError(t("data.column_all_missing", column=name, source=source))
    keep = ~nan.any(axis=1)
    if not drop_missing:
        empty = np.flatnonzero(nan.all(axis=1))
        if empty.size:
            raise DataError(t("data.all_missing_rows", count=int(empty.size), source=source,
                              row=int(empty[0]) + 1))
        if not keep.all():
            first = int(np.flatnonzero(~keep)[0])
            raise DataError(t("data.missing_values", count=int((~keep).sum()), source=source,
                              row=first + 1, column=columns[int(np.flatnonzero(nan[first])[0])]))
    if not keep.any():
        raise DataError(t("data.no_complete_rows", source=source))
    X = X[keep] if not keep.all() else X
    if reject_constant:
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
