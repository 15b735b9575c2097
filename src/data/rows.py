"""Which input rows a model kept, and the ``--id`` column carried beside them.

A row is named by its 0-based position in the input, as pandas counts (the first data row
is row 0), or, with ``--id COLUMN``, by that column's value.  The id column is carried
through, never modelled, so:

* it must be in the file: otherwise a DataError naming it and the available columns;
* it must not be one of the model's columns: ``--id x --columns a,x`` is a UsageError;
  without ``--columns`` every other column of the file enters the model.  With
  ``--columns``, ``--id`` changes only what the results are labelled with (a
  ``result_output`` option: the parsed data and their hash are the same with and without
  it); without, it also decides the model's columns, so it is then part of
  ``data_preparation``'s fingerprint too (:func:`src.config.phase_fingerprints`);
* its values are kept as they are (a text file's cell as written, so ``007`` stays
  ``007``; a Parquet column with its type); repeated ids are allowed (every row keeps its
  own line in ``posteriors.csv``), and :func:`id_notes` says how many repeat.

The ``--weights`` column (:func:`split_weights`) is taken out the same way: never a model
column (``--weights w --columns a,w`` is a UsageError; without ``--columns`` every other
column enters the model), every value a finite number >= 0 (a DataError naming the column,
the first bad row and what to do; a missing weight drops its row with ``--drop-missing``,
as a missing value does), and rows of weight 0 dropped with a note (they stand for no
row).  The kept rows' weights travel under :data:`~src.models.base.WEIGHT_KEY`.

Rows dropped by ``--drop-missing`` have no posterior; :func:`kept_positions` gives the input
positions of the rows a family kept (families drop exactly the rows with a missing value
in one of their columns, which is what it checks).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from src.utils.errors import DataError, UsageError
from src.utils.messages import register, t

__all__ = ["check_id_column", "split_id", "kept_positions", "kept_rows", "id_notes",
           "check_weight_column", "split_weights", "zero_weight_note"]

register({
    "data.missing_id": {
        "en": "The --id column {column!r} is not in {source}; the available columns are: {available}.",
        "zh": "{source} 中没有 --id 指定的列 {column!r}；可用的列：{available}。"},
    "data.id_in_columns": {
        "en": "The --id column {column!r} is also one of the model's columns (--columns {columns}); "
              "an id is carried through, not modelled, so leave it out of --columns.",
        "zh": "--id 指定的列 {column!r} 同时也是模型的列（--columns {columns}）；id 列只随结果输出、不参与建模，"
              "请把它从 --columns 中去掉。"},
    "data.id_unmatched": {
        "en": "Model '{model}' kept {n_kept} of the {n_rows} rows of {source} by a rule of its "
              "own, so the --id values cannot be matched to its rows; remove the rows it "
              "drops from the file, or run without --id.",
        "zh": "模型 '{model}' 按其自身规则保留了 {source} 的 {n_rows} 行中的 {n_kept} 行，因此无法把 --id "
              "的值对应到这些行；请先从文件中删除它会丢弃的行，或不使用 --id。"},
    "data.missing_weights": {
        "en": "The --weights column {column!r} is not in {source}; the available columns are: {available}.",
        "zh": "{source} 中没有 --weights 指定的列 {column!r}；可用的列：{available}。"},
    "data.weights_in_columns": {
        "en": "The --weights column {column!r} is also one of the model's columns (--columns {columns}); "
              "weights are not modelled, so leave it out of --columns.",
        "zh": "--weights 指定的列 {column!r} 同时也是模型的列（--columns {columns}）；权重不参与建模，"
              "请把它从 --columns 中去掉。"},
    "data.weights_is_id": {
        "en": "The --weights column {column!r} is also the --id column; give the weights and the ids in two columns.",
        "zh": "--weights 指定的列 {column!r} 同时也是 --id 列；请把权重和 id 放在两个不同的列中。"},
    "data.bad_weight": {
        "en": "The --weights column {column!r} of {source} has {what} in row {row} "
              "(0-based, as pandas counts); every weight must be a finite number >= 0, so "
              "correct that value{fix}.",
        "zh": "{source} 的 --weights 列 {column!r} 在位置为 {row} 的行（从 0 开始计数，与 pandas 一致）中有"
              "{what}；每个权重都必须是 >= 0 的有限数，请更正该值{fix}。"},
    "data.bad_weight.text": {"en": "the non-numeric value {value!r}", "zh": "非数值 {value!r}"},
    "data.bad_weight.negative": {"en": "the negative value {value!r}", "zh": "负值 {value!r}"},
    "data.bad_weight.infinite": {"en": "the infinite value {value!r}", "zh": "无穷值 {value!r}"},
    "data.bad_weight.missing": {"en": "a missing value", "zh": "缺失值"},
    "data.bad_weight.fix_missing": {"en": " or drop such rows with --drop-missing",
                                    "zh": "，或用 --drop-missing 丢弃这些行"},
    "data.all_zero_weights": {
        "en": "Every row of {source} has weight 0 (or a missing weight) in the --weights column {column!r}, so no row is left to fit; check the column.",
        "zh": "{source} 的每一行在 --weights 列 {column!r} 中的权重都为 0（或缺失），没有可用于拟合的行；请检查该列。"},
    "data.weights_unmatched": {
        "en": "Model '{model}' kept {n_kept} of the {n_rows} rows of {source} by a rule of its "
              "own, so the --weights values cannot be matched to its rows; remove the rows it "
              "drops from the file, or run without --weights.",
        "zh": "模型 '{model}' 按其自身规则保留了 {source} 的 {n_rows} 行中的 {n_kept} 行，因此无法把 --weights "
              "的值对应到这些行；请先从文件中删除它会丢弃的行，或不使用 --weights。"},
    "data.note.zero_weights": {
        "en": "{count} rows of {source} have weight 0 in the --weights column {column!r} (the first: row {row}) and were dropped: they stand for no row.",
        "zh": "{source} 中有 {count} 行在 --weights 列 {column!r} 中的权重为 0（第一行：位置 {row}），已被丢弃：它们不代表任何行。"},
    "data.note.duplicate_ids": {
        "en": "The --id column {column!r} repeats {count} values (the first: {value!r}); every row "
              "keeps its own line in posteriors.csv, so the id there is not a unique key.",
        "zh": "--id 指定的列 {column!r} 有 {count} 个重复值（第一个：{value!r}）；posteriors.csv 中每行各占一行，"
              "因此其中的 id 不是唯一键。"},
})


def check_id_column(id_column: str | None, columns: Sequence[str] | None,
                    available: Sequence[str] | None, source: str) -> None:
    """The rules of ``--id`` (see the module docstring); ``available``: the table's columns
    (None: not known yet, only the rule about ``columns`` is checked)."""
    if id_column is None:
        return
    column = str(id_column)
    if columns is not None and column in [str(c) for c in columns]:
        raise UsageError(t("data.id_in_columns", column=column,
                           columns=",".join(str(c) for c in columns)))
    if available is None:
        return
    names = [str(c) for c in available]
    if column not in names:
        raise DataError(t("data.missing_id", column=column, source=source,
                          available=", ".join(names) or "-"))


def split_id(frame: pd.DataFrame, id_column: str | None, columns: Sequence[str] | None,
             source: str) -> tuple[pd.DataFrame, np.ndarray | None]:
    """``(the model's frame, the id values of every input row)``; without ``--id`` the frame
    as it is and None.  The rules of :func:`check_id_column` apply."""
    if id_column is None:
        return frame, None
    check_id_column(id_column, columns, list(frame.columns), source)
    column = str(id_column)
    ids = frame[column].to_numpy()
    return frame.drop(columns=[column]), ids


def kept_positions(frame: pd.DataFrame, n_kept: int) -> np.ndarray | None:
    """The 0-based input positions (int64) of the ``n_kept`` rows a family kept of ``frame``
    (the model's columns only).

    Every row when nothing was dropped; otherwise the rows with a value in every column
    (what ``--drop-missing`` keeps).  None when neither accounts for ``n_kept`` rows (a
    user's family that drops rows by a rule of its own)."""
    n = int(len(frame))
    if int(n_kept) == n:
        return np.arange(n, dtype=np.int64)
    complete = frame.notna().all(axis=1).to_numpy()
    if int(complete.sum()) == int(n_kept):
        return np.flatnonzero(complete).astype(np.int64)
    return None


def kept_rows(frame: pd.DataFrame, ids: np.ndarray | None, n_kept: int, *, model: str,
              source: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(input positions, id values)`` of the ``n_kept`` rows a family kept of ``frame``
    (:func:`kept_positions`; ids None without ``--id``).  With ids, positions that cannot be
    told are a DataError naming the model (never ids matched to the wrong rows)."""
    positions = kept_positions(frame, n_kept)
    if ids is None:
        return positions, None
    if positions is None:
        raise DataError(t("data.id_unmatched", model=model, n_kept=int(n_kept),
                          n_rows=int(len(frame)), source=source))
    return positions, ids[positions]


def id_notes(ids: np.ndarray | None, id_column: str | None) -> list[str]:
    """One-line notes on the id values (repeated ids), for the caller to print."""
    if ids is None or id_column is None or len(ids) == 0:
        return []
    values = pd.Series(ids)
    repeated = values.duplicated(keep="first").to_numpy() & values.notna().to_numpy()
    if not repeated.any():
        return []
    first: Any = values.iloc[int(np.flatnonzero(repeated)[0])]
    return [t("data.note.duplicate_ids", column=str(id_column), count=int(repeated.sum()),
              value=first.item() if hasattr(first, "item") else first)]


def check_weight_column(weight_column: str | None, columns: Sequence[str] | None,
                        available: Sequence[str] | None, source: str,
                        id_column: str | None = None) -> None:
    """The rules of ``--weights`` as :func:`check_id_column` has them for ``--id`` (and it
    may not be the id column); ``available`` None: not known yet."""
    if weight_column is None:
        return
    column = str(weight_column)
    if columns is not None and column in [str(c) for c in columns]:
        raise UsageError(t("data.weights_in_columns", column=column,
                           columns=",".join(str(c) for c in columns)))
    if id_column is not None and str(id_column) == column:
        raise UsageError(t("data.weights_is_id", column=column))
    if available is None:
        return
    names = [str(c) for c in available]
    if column not in names:
        raise DataError(t("data.missing_weights", column=column, source=source,
                          available=", ".join(names) or "-"))


def split_weights(frame: pd.DataFrame, weight_column: str | None, columns: Sequence[str] | None,
                  source: str, *, drop_missing: bool = False
                  ) -> tuple[pd.DataFrame, np.ndarray | None]:
    """``(the model's frame, the weight of every input row as float64)``; without
    ``--weights`` the frame as it is and None.

    Every weight must be a finite number >= 0 (else a DataError naming the column, the first
    bad row and the fix); a missing weight is NaN with ``drop_missing`` (its row is dropped
    as a row with a missing value is), else an error.  Rows of weight 0 are the caller's to
    drop (:func:`zero_weight_note` says so)."""
    if weight_column is None:
        return frame, None
    check_weight_column(weight_column, columns, list(frame.columns), source)
    column = str(weight_column)
    values = weight_values(frame[column], column, source, drop_missing)
    return frame.drop(columns=[column]), values


def weight_values(raw: pd.Series, column: str, source: str, drop_missing: bool, *,
                  by_label: bool = False) -> np.ndarray:
    """The weights of ``raw`` as float64 (NaN: missing, with ``drop_missing``), checked: a
    text, missing (without ``drop_missing``), infinite or negative weight is a DataError
    naming the column, the first bad row (its position, or with ``by_label`` its index label:
    partitioned input's global row number) and the fix."""
    if pd.api.types.is_bool_dtype(raw.dtype):
        values = raw.astype(float).to_numpy()
    elif pd.api.types.is_numeric_dtype(raw.dtype):
        values = raw.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    present = raw.notna().to_numpy()
    kinds = (("text", present & np.isnan(values)),
             ("missing", ~present if not drop_missing else np.zeros(len(values), bool)),
             ("infinite", np.isinf(values)),
             ("negative", values < 0))
    first = None
    for kind, bad in kinds:
        rows = np.flatnonzero(bad)
        if rows.size and (first is None or rows[0] < first[1]):
            first = (kind, int(rows[0]))
    if first is not None:
        kind, row = first
        value = raw.iloc[row]
        value = value.item() if hasattr(value, "item") else value
        raise DataError(t("data.bad_weight", column=column, source=source,
                          what=t(f"data.bad_weight.{kind}", value=value),
                          row=int(raw.index[row]) if by_label else row,
                          fix=t("data.bad_weight.fix_missing") if kind == "missing" else ""))
    return values.astype(np.float64)


def zero_weight_note(weights: np.ndarray, column: str, source: str) -> list[str]:
    """The note on rows of weight 0 (dropped: they stand for no row), for the caller to print."""
    zero = np.flatnonzero(weights == 0)
    if zero.size == 0:
        return []
    return [t("data.note.zero_weights", count=int(zero.size), source=source, column=str(column),
              row=int(zero[0]))]
