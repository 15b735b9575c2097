"""The report's section on the one-step covariate model: odds ratios with intervals.

For every class but the reference and every column of the design, the coefficient
``beta[k,name]`` of ``estimates.csv`` becomes the odds ratio ``exp(beta)``: the factor by
which the odds of class k against the reference class change per unit of the covariate
(for the intercept: the odds when every covariate is 0).  The interval is the coefficient's
interval of ``estimates.csv`` (Wald at ``--ci-level``, or the bootstrap's percentile
interval) mapped by ``exp``, so it is exactly as valid as that one; the p-value is the
coefficient's (against beta = 0, i.e. an odds ratio of 1).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from ..utils.messages import register
from .document import Paragraph, Section, Table
from .report import tr

__all__ = ["covariate_section", "odds_ratio_rows", "odds_ratio_entry", "odds_ratio_table",
           "covariates_json"]

register({
    "cov.title": {"en": "Covariates of class membership", "zh": "类别归属的协变量"},
    "cov.text": {
        "en": "Class membership is a multinomial logit of {names}, estimated jointly with the "
              "measurement model (one step). Class {ref} is the reference class: its coefficients "
              "are fixed at 0, and each odds ratio exp(beta) is the factor by which the odds of "
              "the class against class {ref} change per unit of the covariate (for the intercept: "
              "the odds when every covariate is 0). The class weights in the other tables are the "
              "average predicted class probabilities.",
        "zh": "类别归属是 {names} 的多项 logit 模型，与测量模型一起估计（一步法）。类别 {ref} 为参照类别："
              "其系数固定为 0；每个比值比 exp(beta) 表示协变量每增加一个单位时，该类别相对于类别 {ref} 的"
              "优势乘以的倍数（截距：所有协变量为 0 时的优势）。其他表格中的类别权重为平均预测类别概率。"},
    "cov.caption": {
        "en": "Odds ratios against class {ref} with {level:g}% intervals (the coefficients' "
              "intervals mapped by exp); p-values against an odds ratio of 1",
        "zh": "相对于类别 {ref} 的比值比及 {level:g}% 区间（系数区间经 exp 变换）；p 值针对比值比为 1 的假设"},
    "cov.no_se": {"en": "Without standard errors (--se-method none) there are no intervals.",
                  "zh": "未计算标准误（--se-method none），因此没有区间。"},
    "cov.class": {"en": "class", "zh": "类别"},
    "cov.covariate": {"en": "covariate", "zh": "协变量"},
    "cov.beta": {"en": "beta", "zh": "系数"},
    "cov.se": {"en": "se", "zh": "标准误"},
    "cov.odds_ratio": {"en": "odds ratio", "zh": "比值比"},
    "cov.lower": {"en": "lower", "zh": "下限"},
    "cov.upper": {"en": "upper", "zh": "上限"},
    "cov.p": {"en": "p", "zh": "p 值"},
})


def _num(cell: str | None) -> float:
    try:
        return float(cell) if cell not in (None, "") else math.nan
    except ValueError:
        return math.nan


def _exp(x: float) -> float:
    if math.isnan(x):
        return math.nan
    return math.exp(x) if x < 709.0 else math.inf


def odds_ratio_rows(model: Any, header: Sequence[str], rows: Sequence[Sequence[str]]
                    ) -> list[dict[str, Any]]:
    """One dict per non-reference class and design column (class 1-based): ``class``,
    ``covariate``, ``beta``, ``se``, ``odds_ratio``, ``lower``, ``upper`` (NaN without an
    interval), ``p_value``, from estimates.csv's ``header`` and ``rows``."""
    col = {name: i for i, name in enumerate(header)}
    by_name = {row[col["parameter"]]: row for row in rows}

    def cell(row: Sequence[str], name: str) -> float:
        return _num(row[col[name]]) if name in col else math.nan

    out = []
    for k in range(model.n_components):
        if k == model.reference:
            continue
        for name in model.design_names:
            row = by_name.get(f"beta[{k + 1},{name}]")
            if row is None:
                continue
            out.append(odds_ratio_entry(k + 1, name, *(cell(row, f) for f in (
                "estimate", "se", "ci_lower", "ci_upper", "p_value"))))
    return out


def odds_ratio_entry(k: int, covariate: str, beta: float, se: float, lower: float,
                     upper: float, p_value: float) -> dict[str, Any]:
    """One coefficient as an odds ratio (``lower``/``upper``: the coefficient's interval;
    NaN for none): ``class``, ``covariate``, ``beta``, ``se``, ``odds_ratio``, ``lower``,
    ``upper`` (mapped by exp), ``p_value``.  The one-step model's and step 3's."""
    return {"class": int(k), "covariate": covariate, "beta": beta, "se": se,
            "odds_ratio": _exp(beta), "lower": _exp(lower), "upper": _exp(upper),
            "p_value": p_value}


def odds_ratio_table(entries: Sequence[Mapping[str, Any]], caption: str, lang: str) -> Table:
    """The report's table of odds ratios (:func:`odds_ratio_entry` rows): class, covariate,
    beta, se, odds ratio, its interval, p."""
    body = [[str(r["class"]), r["covariate"], _g(r["beta"]), _g(r["se"]),
             _g(r["odds_ratio"]), _g(r["lower"]), _g(r["upper"]),
             "" if math.isnan(r["p_value"]) else f"{r['p_value']:.3g}"] for r in entries]
    head = [tr(lang, f"cov.{k}") for k in ("class", "covariate", "beta", "se", "odds_ratio",
                                              "lower", "upper", "p")]
    return Table(head, body, align="ll" + "r" * 6, caption=caption)


def _json(x: float) -> float | None:
    return x if math.isfinite(x) else None


def covariates_json(model: Any, header: Sequence[str], rows: Sequence[Sequence[str]],
                    weight: Sequence[float], fitj: Mapping[str, Any]) -> dict[str, Any] | None:
    """fit.json's ``covariates`` block from estimates.csv's ``header`` and ``rows`` (the same
    numbers): ``names`` (the covariates), ``design`` (intercept first), ``reference_class``
    (1-based), ``coefficients`` (every ``beta[k,name]`` row: ``parameter``, ``class``,
    ``covariate``, ``estimate``, ``se``, ``z``, ``p_value``, ``ci_lower``, ``ci_upper``; the
    reference class's are 0 with no standard error), ``odds_ratios`` (the report's table: the
    other classes' ``exp(beta)`` with ``lower``/``upper`` and ``p_value``), ``ci_level``,
    ``interval_method`` (None without standard errors) and ``average_class_probabilities``
    (``weight``: sum_i w_i pi_ik / sum_i w_i).  None for a model without covariates."""
    if not hasattr(model, "design_names") or not hasattr(model, "reference"):
        return None
    col = {name: i for i, name in enumerate(header)}
    by_name = {row[col["parameter"]]: row for row in rows}
    fields = ("estimate", "se", "z", "p_value", "ci_lower", "ci_upper")
    coefficients = []
    for k in range(model.n_components):
        for name in model.design_names:
            parameter = f"beta[{k + 1},{name}]"
            row = by_name.get(parameter)
            if row is None:
                continue
            coefficients.append({"parameter": parameter, "class": k + 1, "covariate": name,
                                 **{f: _json(_num(row[col[f]])) if f in col else None
                                    for f in fields}})
    odds = [{key: (_json(v) if isinstance(v, float) else v) for key, v in r.items()}
            for r in odds_ratio_rows(model, header, rows)]
    return {"names": list(model.covariates), "design": list(model.design_names),
            "reference_class": int(model.reference) + 1, "coefficients": coefficients,
            "odds_ratios": odds, "ci_level": float(fitj.get("ci_level") or 0.95),
            "interval_method": fitj.get("interval_method"),
            "average_class_probabilities": [float(v) for v in weight]}


def _g(x: float) -> str:
    return "" if math.isnan(x) else f"{x:.4g}"


def covariate_section(model: Any, header: Sequence[str], rows: Sequence[Sequence[str]],
                      fitj: Mapping[str, Any], lang: str) -> Section | None:
    """The section (placed after the estimates), or None for a model without covariates."""
    if not hasattr(model, "design_names") or not hasattr(model, "reference"):
        return None
    ref = model.reference + 1
    names = ", ".join(model.covariates)
    level = 100 * float(fitj.get("ci_level") or 0.95)
    blocks: list[Any] = [Paragraph(tr(lang, "cov.text", names=names, ref=ref)),
                         odds_ratio_table(odds_ratio_rows(model, header, rows),
                                          tr(lang, "cov.caption", ref=ref, level=level), lang)]
    if not fitj.get("interval_method"):
        blocks.append(Paragraph(tr(lang, "cov.no_se")))
    return Section("covariates", tr(lang, "cov.title"), blocks, after="estimates")
