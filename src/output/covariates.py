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

__all__ = ["covariate_section", "odds_ratio_rows"]

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
            beta = cell(row, "estimate")
            out.append({"class": k + 1, "covariate": name, "beta": beta, "se": cell(row, "se"),
                        "odds_ratio": _exp(beta), "lower": _exp(cell(row, "ci_lower")),
                        "upper": _exp(cell(row, "ci_upper")), "p_value": cell(row, "p_value")})
    return out


def _g(x: float) -> str:
    return "" if math.isnan(x) else f"{x:.4g}"


def covariate_section(model: Any, header: Sequence[str], rows: Sequence[Sequence[str]],
                      fitj: Mapping[str, Any], lang: str) -> Section | None:
    """The section (placed after the estimates), or None for a model without covariates."""
    if not hasattr(model, "design_names") or not hasattr(model, "reference"):
        return None
    ref = model.reference + 1
    names = ", ".join(model.covariates)
    table_rows = [[str(r["class"]), r["covariate"], _g(r["beta"]), _g(r["se"]),
                   _g(r["odds_ratio"]), _g(r["lower"]), _g(r["upper"]),
                   "" if math.isnan(r["p_value"]) else f"{r['p_value']:.3g}"]
                  for r in odds_ratio_rows(model, header, rows)]
    head = [tr(lang, f"cov.{k}") for k in ("class", "covariate", "beta", "se", "odds_ratio",
                                              "lower", "upper", "p")]
    level = 100 * float(fitj.get("ci_level") or 0.95)
    blocks: list[Any] = [Paragraph(tr(lang, "cov.text", names=names, ref=ref)),
                         Table(head, table_rows, align="ll" + "r" * 6,
                               caption=tr(lang, "cov.caption", ref=ref, level=level))]
    if not fitj.get("interval_method"):
        blocks.append(Paragraph(tr(lang, "cov.no_se")))
    return Section("covariates", tr(lang, "cov.title"), blocks, after="estimates")
