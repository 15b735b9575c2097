"""The ``--covariates`` columns of the one-step covariate model, read beside the model's.

Like the ``--weights`` column (:mod:`src.data.rows`), a covariate column is never a model
column (``--covariates x --columns a,x`` is a UsageError; without ``--columns`` every other
column enters the model), never the ``--id`` or ``--weights`` column, and must be in the
table.  Every value must be a finite number (booleans count as 0/1; a text file's cells are
read as numbers): otherwise a DataError names the column, the first bad row (0-based, as
pandas counts) and what to do.  A missing value is an error too unless ``--drop-missing``,
which drops the row as a missing model value does.

The kept rows' covariates travel in the data dict as the design ``Z`` (intercept first,
:data:`src.models.covariates.Z_KEY`) and their names in the meta
(:data:`src.models.covariates.COVARIATES_META`), from which
:func:`src.pipeline.phases.build_model` wraps the family in
:class:`~src.models.covariates.CovariateMixture`.  With ``--structural covariates`` the
same columns are step 3's (three-step estimation, :mod:`src.structural`) and no one-step
model is built; with ``--structural distal`` the covariate model is the measurement model.

Partitioned input (:mod:`src.data.partitions`) applies the same rules chunk by chunk
(:func:`covariate_values` naming the file and the global row), gathers what
:func:`check_design` needs over every kept row (:class:`DesignSummary`), and carries the
names in the merged meta, so every later pass reads the covariates beside the model's
columns and gives each chunk's ``Z`` as the in-memory path builds it.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from src.utils.errors import DataError, UsageError
from src.utils.messages import register, t

__all__ = ["one_step_covariates", "check_covariate_columns", "split_covariates",
           "covariate_values", "check_design", "DesignSummary", "check_design_summary",
           "covariate_names", "family_meta", "check_reference_class",
           "check_covariate_options"]

register({
    "covariates.in_columns": {
        "en": "The --covariates column {column!r} is also one of the model's columns (--columns {columns}); "
              "covariates explain the classes and are not modelled, so leave it out of --columns.",
        "zh": "--covariates 指定的列 {column!r} 同时也是模型的列（--columns {columns}）；协变量用于解释类别、"
              "不作为模型的观测变量，请把它从 --columns 中去掉。"},
    "covariates.is_special": {
        "en": "The --covariates column {column!r} is also the {other} column; give them in two columns.",
        "zh": "--covariates 指定的列 {column!r} 同时也是 {other} 列；请使用两个不同的列。"},
    "covariates.twice": {
        "en": "--covariates names the column {column!r} twice; give each covariate once.",
        "zh": "--covariates 两次列出列 {column!r}；每个协变量只需给出一次。"},
    "covariates.missing_column": {
        "en": "The --covariates column {column!r} is not in {source}; the available columns are: {available}.",
        "zh": "{source} 中没有 --covariates 指定的列 {column!r}；可用的列：{available}。"},
    "covariates.bad_value": {
        "en": "The --covariates column {column!r} of {source} has {what} in row {row} (0-based, as "
              "pandas counts); every covariate must be a finite number, so correct that value{fix}.",
        "zh": "{source} 的 --covariates 列 {column!r} 在位置为 {row} 的行（从 0 开始计数，与 pandas 一致）中有"
              "{what}；每个协变量都必须是有限数，请更正该值{fix}。"},
    "covariates.bad.text": {"en": "the non-numeric value {value!r}", "zh": "非数值 {value!r}"},
    "covariates.bad.infinite": {"en": "the infinite value {value!r}", "zh": "无穷值 {value!r}"},
    "covariates.bad.missing": {"en": "a missing value", "zh": "缺失值"},
    "covariates.fix_missing": {"en": " or drop such rows with --drop-missing",
                               "zh": "，或用 --drop-missing 丢弃这些行"},
    "covariates.reference": {
        "en": "--reference-class {reference} is not a class of the model with {k} classes; "
              "choose a class from 1 to {k}.",
        "zh": "--reference-class {reference} 不是 {k} 个类别的模型中的类别；请选择 1 到 {k} 之间的类别。"},
    "covariates.constant": {
        "en": "The --covariates column {column!r} of {source} has one value on every row used, "
              "so its effect cannot be told from the intercept; leave it out of --covariates.",
        "zh": "{source} 的 --covariates 列 {column!r} 在所用的每一行上取值相同，其效应无法与截距区分；"
              "请把它从 --covariates 中去掉。"},
    "covariates.dependent": {
        "en": "The --covariates columns of {source} are linearly dependent (with the intercept) "
              "on the rows used: {column!r} is a combination of the others; leave it out of "
              "--covariates.",
        "zh": "{source} 的 --covariates 列在所用的行上（与截距一起）线性相关：{column!r} 是其他列的线性组合；"
              "请把它从 --covariates 中去掉。"},
    "covariates.unmatched": {
        "en": "Model '{model}' kept {n_kept} of the {n_rows} rows of {source} by a rule of its "
              "own, so the --covariates values cannot be matched to its rows; remove the rows "
              "it drops from the file, or run without --covariates.",
        "zh": "模型 '{model}' 按其自身规则保留了 {source} 的 {n_rows} 行中的 {n_kept} 行，因此无法把 "
              "--covariates 的值对应到这些行；请先从文件中删除它会丢弃的行，或不使用 --covariates。"},
})


def one_step_covariates(options: Any) -> list[str] | None:
    """The covariate columns of the one-step model: ``--covariates`` unless ``--structural
    covariates`` (then the columns are step 3's), else None."""
    names = getattr(options, "covariates", None)
    if not names or getattr(options, "structural", None) == "covariates":
        return None
    return [str(c) for c in names]


def check_covariate_columns(names: Sequence[str] | None, columns: Sequence[str] | None,
                            available: Sequence[str] | None, source: str,
                            id_column: str | None = None,
                            weight_column: str | None = None) -> None:
    """The rules of the module docstring (``available`` None: not known yet, only the rules
    about the other options are checked)."""
    if not names:
        return
    model_cols = [str(c) for c in (columns or [])]
    seen: set[str] = set()
    for col in map(str, names):
        if col in seen:
            raise UsageError(t("covariates.twice", column=col))
        seen.add(col)
        if col in model_cols:
            raise UsageError(t("covariates.in_columns", column=col, columns=",".join(model_cols)))
        for other, name in (("--id", id_column), ("--weights", weight_column)):
            if name is not None and str(name) == col:
                raise UsageError(t("covariates.is_special", column=col, other=other))
    if available is not None:
        have = [str(c) for c in available]
        for col in map(str, names):
            if col not in have:
                raise DataError(t("covariates.missing_column", column=col, source=source,
                                  available=", ".join(have) or "-"))


def _values(raw: pd.Series) -> np.ndarray:
    if pd.api.types.is_bool_dtype(raw.dtype):
        return raw.astype(float).to_numpy()
    if pd.api.types.is_numeric_dtype(raw.dtype):
        return raw.to_numpy(dtype=np.float64, na_value=np.nan)
    text = raw.astype(object).map(lambda v: v.strip() if isinstance(v, str) else v)
    return pd.to_numeric(text.replace("", None), errors="coerce").to_numpy(dtype=np.float64,
                                                                          na_value=np.nan)


def split_covariates(frame: pd.DataFrame, names: Sequence[str] | None,
                     columns: Sequence[str] | None, source: str, *, drop_missing: bool = False,
                     id_column: str | None = None, weight_column: str | None = None
                     ) -> tuple[pd.DataFrame, np.ndarray | None]:
    """``(the model's frame, the covariates of every input row (n, c) float64)``; without
    covariates the frame as it is and None.  A missing value is NaN with ``drop_missing``
    (the caller drops its row), else a DataError, as is a value that is not a finite
    number (the first bad row over all the columns, then the first column)."""
    if not names:
        return frame, None
    check_covariate_columns(names, columns, list(frame.columns), source, id_column,
                            weight_column)
    by_name = {str(c): c for c in frame.columns}
    keep = [by_name[str(c)] for c in names]
    return frame.drop(columns=keep), covariate_values(frame, keep, source, drop_missing)


def covariate_values(frame: pd.DataFrame, names: Sequence[Any], source: str,
                     drop_missing: bool = False, *, by_label: bool = False) -> np.ndarray:
    """The columns ``names`` of ``frame`` as an (n, c) float64 matrix, checked by the rules of
    the module docstring (NaN: a missing value, with ``drop_missing``).  The DataError names
    the first bad row: its position, or with ``by_label`` its index label (partitioned
    input's global row number, ``source`` then the file)."""
    X = np.empty((len(frame), len(names)))
    first = None
    for j, col in enumerate(names):
        raw = frame[col]
        values = _values(raw)
        present = raw.notna().to_numpy() & ~raw.astype(object).map(
            lambda v: isinstance(v, str) and v.strip() == "").to_numpy()
        kinds = (("text", present & np.isnan(values)),
                 ("missing", ~present if not drop_missing else np.zeros(len(values), bool)),
                 ("infinite", np.isinf(values)))
        for kind, bad in kinds:
            rows = np.flatnonzero(bad)
            if rows.size and (first is None or rows[0] < first[0]):
                first = (int(rows[0]), kind, str(col), raw)
        values = np.array(values, dtype=np.float64)
        values[~present] = np.nan
        X[:, j] = values
    if first is not None:
        row, kind, col, raw = first
        value = raw.iloc[row]
        value = value.item() if hasattr(value, "item") else value
        raise DataError(t("covariates.bad_value", column=col, source=source,
                          what=t(f"covariates.bad.{kind}", value=value),
                          row=int(raw.index[row]) if by_label else row,
                          fix=t("covariates.fix_missing") if kind == "missing" else ""))
    return X


def check_design(Z: np.ndarray, names: Sequence[str], source: str) -> None:
    """DataError when a covariate is constant on the rows used, or the design (intercept
    first, then ``names``) is linearly dependent: the first column that adds nothing is named."""
    Z = np.asarray(Z, dtype=np.float64)
    for j, name in enumerate(names, start=1):
        if Z.shape[0] and np.all(Z[:, j] == Z[0, j]):
            raise DataError(t("covariates.constant", column=str(name), source=source))
    centred = Z[:, 1:] - Z[:, 1:].mean(axis=0)       # the intercept taken out
    scale = np.sqrt((centred * centred).sum(axis=0))
    if centred.shape[1] > 1 and centred.shape[0]:
        r = np.abs(np.diag(np.linalg.qr(centred / scale, mode="r")))
        for j in range(1, r.size):
            if r[j] <= 1e-10 * max(float(r.max()), 1.0):
                raise DataError(t("covariates.dependent", column=str(names[j]), source=source))


class DesignSummary:
    """What :func:`check_design` needs of the kept rows' design, gathered chunk by chunk
    (partitioned input never holds the rows): each column's least and greatest value and
    the R factor of the design's QR decomposition (``Z'Z = R'R``), folded in row order by
    stacking and decomposing again (a small picklable value)."""

    def __init__(self) -> None:
        self.lo: np.ndarray | None = None
        self.hi: np.ndarray | None = None
        self.r: np.ndarray | None = None

    def add(self, Z: np.ndarray) -> "DesignSummary":
        """Fold in the rows of ``Z`` (n, q), the design with the intercept first."""
        Z = np.asarray(Z, dtype=np.float64)
        if Z.shape[0] == 0:
            return self
        lo, hi = Z.min(axis=0), Z.max(axis=0)
        r = np.linalg.qr(Z, mode="r")
        return self._fold(lo, hi, r)

    def merge(self, other: "DesignSummary | None") -> "DesignSummary":
        """Fold in another summary (of the rows after these)."""
        if other is None or other.r is None:
            return self
        return self._fold(other.lo, other.hi, other.r)

    def _fold(self, lo: np.ndarray, hi: np.ndarray, r: np.ndarray) -> "DesignSummary":
        if self.r is None:
            self.lo, self.hi, self.r = lo.copy(), hi.copy(), np.array(r)
        else:
            self.lo = np.minimum(self.lo, lo)
            self.hi = np.maximum(self.hi, hi)
            self.r = np.linalg.qr(np.vstack([self.r, r]), mode="r")
        return self


def check_design_summary(summary: DesignSummary, names: Sequence[str], source: str) -> None:
    """:func:`check_design`'s checks and sentences from a :class:`DesignSummary`: a covariate
    whose least and greatest values are equal is constant; the rank test reads the R factor
    (its block after the intercept is the R factor of the centred covariates, whose columns
    scaled to length 1 give the diagonal :func:`check_design` tests)."""
    if summary.r is None:
        return
    for j, name in enumerate(names, start=1):
        if summary.lo[j] == summary.hi[j]:
            raise DataError(t("covariates.constant", column=str(name), source=source))
    q = len(names) + 1
    R = np.zeros((q, q))
    R[:summary.r.shape[0]] = summary.r[:q]
    block = R[1:, 1:]
    scale = np.sqrt((block * block).sum(axis=0))
    if block.shape[1] > 1:
        r = np.abs(np.diag(block)) / scale
        for j in range(1, r.size):
            if r[j] <= 1e-10 * max(float(r.max()), 1.0):
                raise DataError(t("covariates.dependent", column=str(names[j]), source=source))


def covariate_names(meta: Mapping[str, Any] | None) -> list[str] | None:
    """The one-step model's covariate names a data meta holds (None: no covariates)."""
    from src.models.covariates import COVARIATES_META

    names = (meta or {}).get(COVARIATES_META)
    return None if names is None else [str(c) for c in names]


def family_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    """A data meta without the covariate names (what the family's own methods read)."""
    from src.models.covariates import COVARIATES_META

    return {k: v for k, v in meta.items() if k != COVARIATES_META}


def check_reference_class(reference: int, k: int) -> None:
    """UsageError when ``--reference-class`` is not one of the K classes."""
    if not 1 <= int(reference) <= int(k):
        raise UsageError(t("covariates.reference", reference=int(reference), k=int(k)))


def check_covariate_options(options: Any) -> None:
    """Before any work: the one-step model's columns against ``--columns``/``--id``/
    ``--weights`` and ``--reference-class`` against every K (partitioned input too: its
    scan reads the covariates beside the model's columns, :mod:`src.data.partitions`)."""
    names = one_step_covariates(options)
    if names is None:
        return
    check_covariate_columns(names, options.columns, None, str(options.data), options.id,
                            options.weights)
    check_reference_class(options.reference_class, min(options.k_list()))
