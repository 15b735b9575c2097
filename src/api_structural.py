"""Three-step estimation from the Python API: ``MixtureResults.structural(...)``.

The script's phase ``structural_estimation`` (:func:`src.pipeline.structural.estimate_structural`)
run on a fitted :class:`~src.api.MixtureResults`, so the same options give the numbers of
``scripts/02_run_estimation.py --structural ...`` (docs/structural.md)::

    >>> res = fit(frame, "lca", 3, structural="distal", distal=["income"])
    >>> st = res.structural()                      # BCH, modal, corrected SEs (the defaults)
    >>> st.estimates, st.wald, st.D                # estimates.csv's rows, Wald tests, D
    >>> res.structural(correction="ml", se="step3").summary()
    >>> res2 = fit(frame[items], "lca", 3)         # columns not kept by fit(): give the rows
    >>> res2.structural("covariates", covariates=["age"], data=frame)

The structural columns come from ``fit(..., structural=..., distal=... | covariates=...)``
(read beside the model's, never modelled), or from ``data``: a DataFrame with the rows of the
data given to ``fit()``, in the same order (rows dropped by the fit are dropped here too).
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import pandas as pd

from .utils.errors import DataError, UsageError
from .utils.messages import register, t

if TYPE_CHECKING:
    from .api import MixtureResults

__all__ = ["StructuralResults", "structural_of", "STRUCTURAL_KEYWORDS"]

register({
    "api.structural_kind": {
        "en": "Give the structural model: structural(\"covariates\", covariates=[...]) or structural(\"distal\", distal=[...]); fit() was not given structural=.",
        "zh": "请给出结构模型：structural(\"covariates\", covariates=[...]) 或 structural(\"distal\", distal=[...])；fit() 未给出 structural=。"},
    "api.structural_columns": {
        "en": "The structural column(s) {missing} were not kept by fit(); give data= (the rows given to fit(), in the same order) or fit(..., structural=..., {flag}=...).",
        "zh": "fit() 没有保留结构变量列 {missing}；请给出 data=（与 fit() 相同的行、相同顺序），或使用 fit(..., structural=..., {flag}=...)。"},
    "api.structural_rows": {
        "en": "data= has {n} rows but the data given to fit() had {expected}; give the same rows in the same order.",
        "zh": "data= 有 {n} 行，而 fit() 所用数据有 {expected} 行；请给出相同顺序的相同行。"},
    "api.structural_model_column": {
        "en": "The structural column {column!r} is one of the measurement model's columns; structural columns never enter it, so fit the model without it.",
        "zh": "结构变量列 {column!r} 是测量模型的列之一；结构变量不进入测量模型，请在拟合时去掉该列。"},
    "api.structural_one_step": {
        "en": "The measurement model already has the covariates of class membership in one step (covariates=); three-step covariates need a model fitted without them.",
        "zh": "测量模型已以一步法包含类别归属的协变量（covariates=）；三步法协变量需要不含协变量的测量模型。"},
    "api.se_twice": {"en": "Give the structural standard errors once, as se or as structural_se.",
                     "zh": "结构模型标准误只需给出一次：se 或 structural_se。"},
})

#: fit()'s keywords of three-step estimation (the script's --structural options)
STRUCTURAL_KEYWORDS = ("structural", "correction", "assignment", "distal", "distal_type",
                       "structural_se")
#: what structural() takes besides ``kind``, ``data`` and ``ci_level``
_METHOD_KEYWORDS = ("covariates", "distal", "distal_type", "correction", "assignment",
                    "structural_se", "se", "reference_class", "n_bootstrap", "workers",
                    "scheduler")


def _float(x: Any) -> float:
    return math.nan if x is None else float(x)


class StructuralResults:
    """Three-step estimates: fit.json's ``structural`` block as frames.

    ``estimates`` (index ``parameter``: ``structural.beta[k,name]``, ``distal.mean[k,col]``...;
    columns ``estimate``, ``se``, ``z``, ``p_value``, ``ci_lower``, ``ci_upper``: estimates.csv's
    structural rows), ``wald`` (the Wald tests), ``D`` (the classification-error matrix),
    ``covariance``, ``odds_ratios`` (covariates), ``notes``, ``warnings``; ``block``: the
    whole fit.json block; ``result``: the phase's result, from which ``MixtureResults.write``
    writes the block again at its ``ci_level``.
    """

    def __init__(self, result: Mapping[str, Any], options: Any) -> None:
        from .output.structural import structural_json

        self.result = dict(result)
        self.options = options
        self.block: dict[str, Any] = structural_json(self.result, options)

    # ------------------------------------------------------------ frames
    @property
    def estimates(self) -> pd.DataFrame:
        rows = self.block["estimates"]
        cols = ("estimate", "se", "z", "p_value", "ci_lower", "ci_upper")
        return pd.DataFrame({c: np.array([_float(r[c]) for r in rows]) for c in cols},
                            index=pd.Index([r["parameter"] for r in rows], name="parameter"))

    @property
    def wald(self) -> pd.DataFrame:
        """One row per test (index ``hypothesis``): ``chi2``, ``df``, ``p_value``."""
        tests = self.block.get("tests") or []
        return pd.DataFrame({"chi2": [_float(x["chi2"]) for x in tests],
                             "df": [int(x["df"]) for x in tests],
                             "p_value": [_float(x["p_value"]) for x in tests]},
                            index=pd.Index([x["hypothesis"] for x in tests], name="hypothesis"))

    @property
    def D(self) -> pd.DataFrame:
        """D[k, s] = P(assigned class s | class k): rows the class, columns the assignment."""
        D = np.asarray(self.block["D"], dtype=float)
        classes = range(1, D.shape[0] + 1)
        return pd.DataFrame(D, index=pd.Index(classes, name="class"),
                            columns=pd.Index(classes, name="assigned"))

    @property
    def covariance(self) -> pd.DataFrame:
        names = list(self.estimates.index)
        return pd.DataFrame(np.asarray(self.block["covariance"], dtype=float), index=names,
                            columns=names)

    @property
    def odds_ratios(self) -> pd.DataFrame:
        """Covariates: ``exp`` of each coefficient and of its interval (the report's table;
        the intercepts left out); empty for distal outcomes."""
        est = self.estimates
        if self.kind != "covariates":
            return est.iloc[:0][["estimate", "ci_lower", "ci_upper"]].rename(
                columns={"estimate": "odds_ratio"})
        est = est[~est.index.str.endswith(",intercept]")]
        with np.errstate(over="ignore"):
            return pd.DataFrame({"odds_ratio": np.exp(est["estimate"]),
                                 "ci_lower": np.exp(est["ci_lower"]),
                                 "ci_upper": np.exp(est["ci_upper"])}, index=est.index)

    # ------------------------------------------------------------ scalars
    kind = property(lambda self: str(self.block["kind"]))
    correction = property(lambda self: str(self.block["correction"]))
    assignment = property(lambda self: str(self.block["assignment"]))
    se_method = property(lambda self: str(self.block["se_method"]))
    notes = property(lambda self: list(self.block.get("notes") or []))
    warnings = property(lambda self: list(self.block.get("warnings") or []))

    def summary(self) -> str:
        """Plain text: the model, correction, assignment, standard errors, D, the estimates
        with intervals, odds ratios (covariates), the Wald tests, warnings and notes."""
        b = self.block
        what = ", ".join(b["columns"])
        kind = (f"covariates {what} (class {b.get('reference_class', 1)} the reference)"
                if self.kind == "covariates" else f"distal {b['distal_type']} {what}")
        se = self.se_method + (f" (measurement model by {b['measurement_se_method']})"
                               if "measurement_se_method" in b else "")
        fmt = lambda v: f"{v:.6g}"   # noqa: E731
        lines = [f"Three-step estimation: {kind}; correction {self.correction}, "
                 f"{self.assignment} assignment; standard errors {se}; level {b['ci_level']:g}",
                 f"Rows in step 3 / step 1: {b['n_step3']} / {b['n_rows']}", "",
                 "Classification-error matrix D (row: class, column: assigned class)",
                 self.D.to_string(float_format=lambda v: f"{v:.4f}"), "",
                 self.estimates.to_string(float_format=fmt, na_rep="")]
        if self.kind == "covariates":
            lines += ["", "Odds ratios", self.odds_ratios.to_string(float_format=fmt)]
        if len(self.wald):
            lines += ["", "Wald tests", self.wald.to_string(float_format=fmt)]
        lines += [f"Warning: {w}" for w in self.warnings]
        lines += [f"Note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"<StructuralResults {self.kind} correction={self.correction} "
                f"se={self.se_method} n_params={len(self.block['estimates'])}>")


def _options(res: "MixtureResults", kind: str | None, options: Mapping[str, Any],
             ci_level: float | None) -> Any:
    """The run options of the three-step estimate: the fit's, with ``options``."""
    changes = {k: v for k, v in options.items() if k != "se" and v is not None}
    if options.get("se") is not None:
        if options.get("structural_se") is not None:
            raise UsageError(t("api.se_twice"))
        changes["structural_se"] = options["se"]
    kind = kind if kind is not None else res.options.structural
    if kind is None:
        raise UsageError(t("api.structural_kind"))
    changes["structural"] = kind
    if ci_level is not None:
        changes["ci_level"] = ci_level
    return res.options.replace(**changes)


def _structural_frame(res: "MixtureResults", opts: Any, data: Any) -> Any:
    """The kept rows' structural columns: from ``data`` when given, else those fit() kept."""
    from .models.covariates import CovariateMixture
    from .structural.data import FLAGS, kept_structural, structural_columns

    if opts.structural == "covariates" and isinstance(res.model, CovariateMixture):
        raise UsageError(t("api.structural_one_step"))
    cols = structural_columns(opts)
    kept = res.prepared.structural
    if data is None:
        have = [] if kept is None else [str(c) for c in kept.columns]
        missing = [c for c in cols if c not in have]
        if missing or not cols:
            raise DataError(t("api.structural_columns", missing=", ".join(missing) or "-",
                              flag=FLAGS[opts.structural][2:]))
        return kept[[{str(c): c for c in kept.columns}[c] for c in cols]]
    model_cols = [str(c) for c in (res.meta.get("columns") or res.meta.get("items") or [])]
    for c in cols:
        if c in model_cols:
            raise UsageError(t("api.structural_model_column", column=c))
    frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
    expected = res.prepared.record.get("n_rows")
    if expected is not None and len(frame) != int(expected):
        raise DataError(t("api.structural_rows", n=len(frame), expected=int(expected)))
    names = {str(c): c for c in frame.columns}
    missing = [c for c in cols if c not in names]
    if missing:
        raise DataError(t("api.columns", missing=", ".join(missing),
                          available=", ".join(map(str, frame.columns))))
    picked = frame[[names[c] for c in cols]].reset_index(drop=True)
    picked.columns = cols
    return kept_structural(picked, res.prepared.row_positions, opts,
                           str(res.prepared.record.get("source") or "the data"))


def structural_of(res: "MixtureResults", kind: str | None = None, *, data: Any = None,
                  ci_level: float | None = None, **options: Any) -> StructuralResults:
    """Steps 2 and 3 on ``res`` (:meth:`src.api.MixtureResults.structural`)."""
    from .pipeline import phases
    from .pipeline.structural import estimate_structural
    from .structural import RESAMPLED
    from .utils.options import check_names

    check_names(options, _METHOD_KEYWORDS, t("api.where", function="structural()"))
    opts = _options(res, kind, options, ci_level)
    frame = _structural_frame(res, opts, data)
    prepared = dataclasses.replace(res.prepared, structural=frame)
    if opts.structural_se == "corrected" and res.se_result is None and opts.se_methods():
        methods = opts.se_methods()   # the script's measurement SEs: its primary method
        res.standard_errors(opts.primary_se if len(methods) > 1 else methods[0])
    se = res._se_dicts()
    if res.se_result is not None:   # the one structural() uses: the last computed
        opts_se = opts.replace(se_method=res.se_result.method)
    else:
        opts_se = opts
    with phases.run_executor(opts_se, opts_se.structural_se == RESAMPLED) as executor:
        result = estimate_structural(prepared, res.fit_result.to_dict(), None, se, opts_se,
                                     executor=executor)
    return StructuralResults(result, opts_se)
