"""The structural columns of three-step estimation: covariates or distal outcomes.

They are read beside the model's columns and never enter the measurement model (the data
layer takes them out of the table first: :func:`split_structural`).  :class:`StructuralData`
holds them for the rows the measurement model kept, as step 3 uses them:

* covariates: numbers (a text file's cells read as numbers); the design is the intercept,
  then the columns in the order given;
* distal outcomes, ``gaussian``: numbers; ``categorical``: codes read as text, ordered as
  latent class items are (numeric-looking codes numerically, then the rest as text).

A row with a missing structural value is left out of step 3 (it still counts in step 1 and
in the classification-error matrix) and a note says how many; a value that is not a finite
number is a DataError naming the column and its row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..utils.errors import DataError, UsageError
from ..utils.messages import register, t
from .models import CovariateModel, DistalModel

__all__ = ["StructuralData", "structural_columns", "split_structural", "check_structural_columns"]

register({
    "structural.not_numeric": {
        "en": "The {role} column {column!r} of {source} has the value {value!r} in row {row} "
              "(0-based, as pandas counts), which is not a finite number; correct it, or "
              "leave the cell empty to leave the row out of step 3.",
        "zh": "{source} 的{role}列 {column!r} 在位置为 {row} 的行（从 0 开始计数，与 pandas 一致）中的值 {value!r} "
              "不是有限数；请更正该值，或留空以便在第 3 步中排除该行。"},
    "structural.role.covariates": {"en": "covariate", "zh": "协变量"},
    "structural.role.distal": {"en": "distal outcome", "zh": "远端结果"},
    "structural.missing_column": {
        "en": "The {flag} column {column!r} is not in {source}; the available columns are: {available}.",
        "zh": "{source} 中没有 {flag} 指定的列 {column!r}；可用的列：{available}。"},
    "structural.in_columns": {
        "en": "The {flag} column {column!r} is also one of the model's columns (--columns {columns}); "
              "structural columns never enter the measurement model, so leave it out of --columns.",
        "zh": "{flag} 指定的列 {column!r} 同时也是模型的列（--columns {columns}）；结构变量不进入测量模型，"
              "请把它从 --columns 中去掉。"},
    "structural.is_special": {
        "en": "The {flag} column {column!r} is also the {other} column; give them in two columns.",
        "zh": "{flag} 指定的列 {column!r} 同时也是 {other} 列；请使用两个不同的列。"},
    "structural.no_columns": {
        "en": "--structural {kind} needs its columns: give {flag} COLUMN[,COLUMN...].",
        "zh": "--structural {kind} 需要给出相应的列：请使用 {flag} 列名[,列名...]。"},
    "structural.note.dropped": {
        "en": "{count} of the {n} rows have a missing {role} value (the first: row {row}) and are left out of step 3; step 1 and the classification-error matrix use every row.",
        "zh": "{n} 行中有 {count} 行的{role}值缺失（第一行：位置 {row}），在第 3 步中被排除；第 1 步与分类误差矩阵使用全部行。"},
    "structural.too_few": {
        "en": "Only {n} rows have every {role} value, fewer than the {p} parameters of step 3; check the columns {columns}.",
        "zh": "只有 {n} 行的{role}值完整，少于第 3 步的 {p} 个参数；请检查列 {columns}。"},
    "structural.constant": {
        "en": "The covariate column {column!r} has one value on every row used, so its coefficient cannot be estimated beside the intercept; leave it out of --covariates.",
        "zh": "协变量列 {column!r} 在所用的每一行上取值相同，在截距之外无法估计其系数；请把它从 --covariates 中去掉。"},
})

#: the flag naming each kind's columns
FLAGS = {"covariates": "--covariates", "distal": "--distal"}


def structural_columns(options: Any) -> list[str]:
    """The columns ``--structural`` reads (none without it)."""
    kind = getattr(options, "structural", None)
    if kind is None:
        return []
    cols = getattr(options, "covariates" if kind == "covariates" else "distal", None)
    return [str(c) for c in (cols or [])]


def check_structural_columns(options: Any, available: Sequence[str] | None, source: str) -> None:
    """UsageError/DataError when ``--structural`` lacks its columns, names a model column
    (``--columns``), the ``--id`` or ``--weights`` column, or one not in the table."""
    kind = getattr(options, "structural", None)
    if kind is None:
        return
    flag = FLAGS[kind]
    cols = structural_columns(options)
    if not cols:
        raise UsageError(t("structural.no_columns", kind=kind, flag=flag))
    model_cols = [str(c) for c in (options.columns or [])]
    for col in cols:
        if col in model_cols:
            raise UsageError(t("structural.in_columns", flag=flag, column=col,
                               columns=",".join(model_cols)))
        for other, name in (("--id", options.id), ("--weights", options.weights)):
            if name is not None and str(name) == col:
                raise UsageError(t("structural.is_special", flag=flag, column=col, other=other))
    if available is not None:
        names = [str(c) for c in available]
        for col in cols:
            if col not in names:
                raise DataError(t("structural.missing_column", flag=flag, column=col,
                                  source=source, available=", ".join(names) or "-"))


def split_structural(frame: pd.DataFrame, options: Any, source: str
                     ) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """``(the model's frame, the structural columns of every input row)``; without
    ``--structural`` the frame as it is and None."""
    cols = structural_columns(options)
    if not cols:
        return frame, None
    check_structural_columns(options, list(frame.columns), source)
    names = {str(c): c for c in frame.columns}
    keep = [names[c] for c in cols]
    return frame.drop(columns=keep), frame[keep].reset_index(drop=True)


def _numbers(col: pd.Series, role: str, name: str, source: str,
             positions: np.ndarray | None) -> np.ndarray:
    if pd.api.types.is_bool_dtype(col.dtype):
        values = col.astype(float).to_numpy()
    elif pd.api.types.is_numeric_dtype(col.dtype):
        values = col.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        text = col.astype(object).where(col.notna(), None)
        values = pd.to_numeric(text.map(lambda v: v.strip() if isinstance(v, str) else v)
                               .replace("", None), errors="coerce").to_numpy(dtype=np.float64,
                                                                             na_value=np.nan)
    present = col.notna().to_numpy() & ~col.astype(object).map(
        lambda v: isinstance(v, str) and v.strip() == "").to_numpy()
    bad = np.flatnonzero(present & ~np.isfinite(values))
    if bad.size:
        i = int(bad[0])
        row = int(positions[i]) if positions is not None else i
        value = col.iloc[i]
        raise DataError(t("structural.not_numeric", role=t(f"structural.role.{role}"),
                          column=name, source=source, value=value.item()
                          if hasattr(value, "item") else value, row=row))
    values = np.array(values, dtype=np.float64)   # a writable copy
    values[~present] = np.nan
    return values


def _codes(col: pd.Series) -> tuple[np.ndarray, list[str]]:
    """(codes 0..C-1, -1 missing; the ordered code texts) of a categorical column."""
    from ..models.lca import order_codes

    present = np.array(col.notna().to_numpy(), dtype=bool)   # a writable copy
    text = np.full(len(col), "", dtype=object)

    def as_text(v: Any) -> str:
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            return str(int(v))
        return str(v).strip()

    text[present] = [as_text(v) for v in col.to_numpy(dtype=object)[present]]
    present &= text != ""
    order = order_codes(set(text[present].tolist()))
    index = {c: i for i, c in enumerate(order)}
    codes = np.full(len(col), -1, dtype=np.int64)
    codes[present] = [index[v] for v in text[present]]
    return codes, order


@dataclass
class StructuralData:
    """The structural columns of the rows step 1 kept (in their order).

    ``values`` (n, J) float (NaN missing; categorical: the code index), ``observed`` (n,)
    rows with every value, ``codes`` the code texts of each categorical column."""

    kind: str
    columns: list[str]
    values: np.ndarray
    observed: np.ndarray
    distal_type: str = "gaussian"
    codes: list[list[str] | None] | None = None

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, kind: str, distal_type: str = "gaussian", *,
                   source: str = "the data", positions: np.ndarray | None = None
                   ) -> "StructuralData":
        """From the kept rows' structural columns (``positions``: their input rows, for
        messages)."""
        cols = [str(c) for c in frame.columns]
        values = np.empty((len(frame), len(cols)))
        codes: list[list[str] | None] = []
        for j, c in enumerate(frame.columns):
            if kind == "distal" and distal_type == "categorical":
                idx, order = _codes(frame[c])
                values[:, j] = np.where(idx >= 0, idx, np.nan)
                codes.append(order)
            else:
                values[:, j] = _numbers(frame[c], kind, str(c), source, positions)
                codes.append(None)
        observed = np.all(np.isfinite(values), axis=1)
        return cls(kind, cols, values, observed, distal_type, codes)

    def notes(self, positions: np.ndarray | None = None) -> list[str]:
        missing = np.flatnonzero(~self.observed)
        if missing.size == 0:
            return []
        first = int(missing[0]) if positions is None else int(positions[missing[0]])
        return [t("structural.note.dropped", count=int(missing.size), n=int(self.observed.size),
                  role=t(f"structural.role.{self.kind}"), row=first)]

    #: covariates: the reference class (0-based; ``--reference-class`` minus 1)
    reference: int = 0

    def model(self, K: int, correction: str, rows: np.ndarray | None = None,
              fixed_weights: np.ndarray | None = None) -> Any:
        """Step 3's model on ``rows`` (default: the observed rows; indices into the kept
        rows): the covariate logit, or the distal outcomes (with free class proportions
        under the ML correction)."""
        rows = np.flatnonzero(self.observed) if rows is None else np.asarray(rows)
        vals = self.values[rows]
        if self.kind == "covariates":
            from ..models.logit import design
            Z, names = design(vals, self.columns)
            return CovariateModel(Z, names, K, reference=self.reference)
        kinds = [self.distal_type] * len(self.columns)
        return DistalModel(vals, self.columns, kinds, K, self.codes or [None] * len(kinds),
                           with_weights=(correction == "ml" and fixed_weights is None),
                           fixed_weights=fixed_weights)

    def check(self, K: int, correction: str) -> None:
        """DataError when too few rows are left, or a covariate is constant on them."""
        m = self.model(K, correction)
        n = int(self.observed.sum())
        if n <= m.n_free:
            raise DataError(t("structural.too_few", n=n, p=m.n_free,
                              role=t(f"structural.role.{self.kind}"),
                              columns=", ".join(self.columns)))
        if self.kind == "covariates":
            vals = self.values[self.observed]
            for j, c in enumerate(self.columns):
                if np.ptp(vals[:, j]) == 0:
                    raise DataError(t("structural.constant", column=c))


def take(sdata: StructuralData, idx: np.ndarray) -> StructuralData:
    """The structural data of rows ``idx`` (a bootstrap replicate's rows)."""
    idx = np.asarray(idx)
    return StructuralData(sdata.kind, list(sdata.columns), sdata.values[idx],
                          sdata.observed[idx], sdata.distal_type, sdata.codes, sdata.reference)


register({
    "structural.unmatched": {
        "en": "Model '{model}' kept rows of {source} by a rule of its own, so the structural columns cannot be matched to its rows; remove the rows it drops from the file, or run without --structural.",
        "zh": "模型 '{model}' 按其自身规则保留了 {source} 中的部分行，因此无法把结构变量对应到这些行；请先从文件中删除它会丢弃的行，或不使用 --structural。"},
})


def kept_structural(frame: pd.DataFrame, positions: np.ndarray | None, options: Any,
                    source: str) -> pd.DataFrame:
    """The structural columns of the rows the model kept (``positions``: their input rows);
    a DataError when the positions are unknown (a family dropping rows by its own rule)."""
    if positions is None:
        raise DataError(t("structural.unmatched", model=options.model, source=source))
    return frame.iloc[np.asarray(positions)].reset_index(drop=True)
