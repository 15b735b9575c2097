"""The report's sections on what a fit means: classification quality, goodness of fit
(latent class models), standard deviations and correlations (Gaussian mixtures), how the
intervals were made and how many rows were used.

:func:`conclusion_sections` turns the ``fit.json`` keys that
:func:`src.pipeline.conclusions.conclusions_of` computed into
:class:`~.document.Section` blocks placed after the report's ``fit`` and ``estimates``
sections, in the report's language.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from ..utils.messages import register
from .document import Callout, KeyValues, Paragraph, Section, Table
from .report import tr

__all__ = ["conclusion_sections"]

register({
    "concl.classification": {"en": "Classification quality", "zh": "分类质量"},
    "concl.class": {"en": "class", "zh": "类别"},
    "concl.weight": {"en": "weight", "zh": "权重"},
    "concl.n_weights": {"en": "n (weights)", "zh": "人数（权重）"},
    "concl.n_posteriors": {"en": "n (posteriors)", "zh": "人数（后验）"},
    "concl.n_modal": {"en": "n (modal)", "zh": "人数（众数类）"},
    "concl.share_modal": {"en": "share (modal)", "zh": "比例（众数类）"},
    "concl.avepp": {"en": "AvePP", "zh": "平均后验概率"},
    "concl.occ": {"en": "OCC", "zh": "正确分类比值"},
    "concl.counts_caption": {
        "en": "Class sizes three ways (estimated weights, sums of posterior probabilities, "
              "most likely class), average posterior probability of the rows assigned to "
              "each class (AvePP) and odds of correct classification (OCC, Nagin; > 5 is good)",
        "zh": "三种方式的类别规模（估计权重、后验概率之和、最可能类别）、归入各类的行的平均后验概率（AvePP）与正确分类比值（OCC，Nagin；> 5 为好）"},
    "concl.avepp_caption": {
        "en": "Average posterior probabilities by most likely class (row: assigned class)",
        "zh": "按最可能类别的平均后验概率（行：归入的类别）"},
    "concl.entropy": {"en": "Relative entropy", "zh": "相对熵"},
    "concl.smallest": {"en": "Smallest class weight", "zh": "最小类别权重"},
    "concl.rows_used": {"en": "Rows used", "zh": "使用的行数"},
    "concl.rows_dropped": {"en": "Rows dropped (missing values)", "zh": "删除的行数（缺失值）"},
    "concl.rows_dropped_weighted": {"en": "Rows dropped (missing values or weight 0)",
                                    "zh": "删除的行数（缺失值或权重为 0）"},
    "concl.weight_sum": {"en": "Sum of the weights of the rows used", "zh": "所用行的权重之和"},
    "concl.posteriors_file": {
        "en": "Each row's posterior class probabilities and most likely class are in "
              "posteriors.csv (rows in input order, named by {id}).",
        "zh": "每行的后验类别概率与最可能类别见 posteriors.csv（按输入顺序，以 {id} 标识）。"},
    "concl.row_position": {"en": "their 0-based position in the input",
                           "zh": "其在输入中从 0 开始的位置"},
    "concl.id_column": {"en": "column {column}", "zh": "列 {column}"},
    "concl.gof": {"en": "Goodness of fit", "zh": "拟合优度"},
    "concl.g2": {"en": "Likelihood-ratio G2", "zh": "似然比 G2"},
    "concl.x2": {"en": "Pearson X2", "zh": "Pearson X2"},
    "concl.df": {"en": "Degrees of freedom (cells - 1 - parameters)", "zh": "自由度（格子数 - 1 - 参数数）"},
    "concl.df_polca": {"en": "Degrees of freedom, poLCA's convention", "zh": "自由度（poLCA 约定）"},
    "concl.p_g2": {"en": "p-value of G2 (chi-square)", "zh": "G2 的 p 值（卡方）"},
    "concl.p_x2": {"en": "p-value of X2 (chi-square)", "zh": "X2 的 p 值（卡方）"},
    "concl.p_g2_boot": {"en": "p-value of G2 (parametric bootstrap, {n} replicates)",
                        "zh": "G2 的 p 值（参数自助法，{n} 次重复）"},
    "concl.p_x2_boot": {"en": "p-value of X2 (parametric bootstrap, {n} replicates)",
                        "zh": "X2 的 p 值（参数自助法，{n} 次重复）"},
    "concl.cells": {"en": "Response patterns possible / observed", "zh": "可能 / 观测到的应答模式数"},
    "concl.complete": {"en": "Rows with every answer observed", "zh": "所有题目均有应答的行数"},
    "concl.bvr": {"en": "Bivariate residuals", "zh": "双变量残差"},
    "concl.bvr_caption": {
        "en": "Bivariate residuals (Pearson X2 of each item pair's two-way table over its df); "
              "above {threshold} suggests local dependence. {shown}",
        "zh": "双变量残差（每对题目二维表的 Pearson X2 除以其自由度）；大于 {threshold} 提示局部依赖。{shown}"},
    "concl.bvr_all": {"en": "Every pair is shown.", "zh": "列出全部题目对。"},
    "concl.bvr_top": {"en": "The {n} largest of {total} pairs are shown; fit.json has all.",
                      "zh": "列出 {total} 对中最大的 {n} 对；全部见 fit.json。"},
    "concl.item": {"en": "item", "zh": "题目"},
    "concl.item_1": {"en": "item 1", "zh": "题目 1"},
    "concl.item_2": {"en": "item 2", "zh": "题目 2"},
    "concl.category": {"en": "answer", "zh": "应答"},
    "concl.profile": {"en": "Response probabilities by class", "zh": "各类别的应答概率"},
    "concl.profile_caption": {
        "en": "Probability of each answer by class (class weights in the header)",
        "zh": "各类别中每个应答的概率（表头为类别权重）"},
    "concl.profile_caption_se": {
        "en": "Probability of each answer by class, its standard error in brackets (none on "
              "the boundary; class weights in the header)",
        "zh": "各类别中每个应答的概率，括号内为其标准误（边界上的概率无标准误；表头为类别权重）"},
    "concl.derived": {"en": "Standard deviations and correlations", "zh": "标准差与相关系数"},
    "concl.derived_caption": {
        "en": "Per-class standard deviations and correlations with delta-method standard "
              "errors; {level:g}% intervals on the log scale (SD) and Fisher's z scale "
              "(correlations)",
        "zh": "各类别的标准差与相关系数及 delta 方法标准误；{level:g}% 区间在对数尺度（标准差）与 Fisher z 尺度（相关系数）上计算"},
    "concl.parameter": {"en": "parameter", "zh": "参数"},
    "concl.estimate": {"en": "estimate", "zh": "估计值"},
    "concl.se": {"en": "se", "zh": "标准误"},
    "concl.ci_lower": {"en": "ci_lower", "zh": "区间下限"},
    "concl.ci_upper": {"en": "ci_upper", "zh": "区间上限"},
    "concl.intervals": {"en": "Intervals", "zh": "区间"},
})

#: bivariate residual pairs shown in the report (largest first); fit.json has every pair
MAX_BVR_ROWS = 15


def _f(x: Any, digits: int = 4) -> str:
    if x is None:
        return ""
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}f}"


def _g(x: Any) -> str:
    if x is None:
        return ""
    return f"{float(x):.6g}"


def _p(x: Any) -> str:
    if x is None:
        return ""
    x = float(x)
    return "< 0.0001" if x < 1e-4 else f"{x:.4f}"


def _classification(c: Mapping[str, Any], rows: Mapping[str, Any], lang: str) -> Section:
    K = int(c["n_components"])
    counts, props = c["counts"], c["proportions"]
    avepp = c["average_posterior"]
    occ = c.get("odds_correct") or [None] * K
    header = [tr(lang, f"concl.{k}") for k in ("class", "weight", "n_weights", "n_posteriors",
                                                  "n_modal", "share_modal", "avepp", "occ")]
    body = [[str(k + 1), _f(props["weights"][k]), _f(counts["weights"][k], 1),
             _f(counts["posteriors"][k], 1),
             (str(int(counts["modal"][k])) if float(counts["modal"][k]).is_integer()
              else _f(counts["modal"][k], 1)),
             _f(props["modal"][k]), _f(avepp[k][k]), _f(occ[k], 2)] for k in range(K)]
    weighted = rows.get("weight_sum") is not None
    row_pairs = [(tr(lang, "concl.rows_used"), str(rows["n_used"])),
                 (tr(lang, "concl.rows_dropped_weighted" if weighted else "concl.rows_dropped"),
                  str(rows["n_dropped"]))]
    if weighted:
        from ..estimation.results import as_count
        row_pairs.append((tr(lang, "concl.weight_sum"), str(as_count(rows["weight_sum"]))))
    blocks: list[Any] = [
        KeyValues([(tr(lang, "concl.entropy"), _f(c.get("entropy"))),
                   (tr(lang, "concl.smallest"), _f(c.get("smallest_class"))),
                   *row_pairs]),
        Table(header, body, caption=tr(lang, "concl.counts_caption"))]
    if K > 1:
        blocks.append(Table([tr(lang, "concl.class")] + [str(k + 1) for k in range(K)],
                            [[str(k + 1)] + [_f(v) for v in avepp[k]] for k in range(K)],
                            caption=tr(lang, "concl.avepp_caption")))
    blocks += [Callout(w) for w in c.get("warnings", [])]
    blocks += [Callout(n, "note") for n in c.get("notes", [])]
    who = (tr(lang, "concl.id_column", column=rows["id_column"]) if rows.get("id_column")
           else tr(lang, "concl.row_position"))
    blocks.append(Paragraph(tr(lang, "concl.posteriors_file", id=who)))
    return Section("classification", tr(lang, "concl.classification"), blocks, after="fit")


def _goodness(g: Mapping[str, Any], bvr: Mapping[str, Any] | None, lang: str) -> Section:
    pairs = [(tr(lang, "concl.g2"), _g(g.get("g2"))), (tr(lang, "concl.x2"), _g(g.get("x2"))),
             (tr(lang, "concl.df"), str(g.get("df"))),
             (tr(lang, "concl.df_polca"), str(g.get("df_polca")))]
    if g.get("p_value_g2") is not None:
        pairs += [(tr(lang, "concl.p_g2"), _p(g["p_value_g2"])),
                  (tr(lang, "concl.p_x2"), _p(g["p_value_x2"]))]
    boot = g.get("bootstrap")
    if boot:
        pairs += [(tr(lang, "concl.p_g2_boot", n=boot["n_used"]), _p(boot.get("p_value_g2"))),
                  (tr(lang, "concl.p_x2_boot", n=boot["n_used"]), _p(boot.get("p_value_x2")))]
    pairs += [(tr(lang, "concl.cells"), f"{g.get('n_cells')} / {g.get('n_patterns')}"),
              (tr(lang, "concl.complete"), f"{g.get('n_complete')} / {g.get('n_rows')}")]
    blocks: list[Any] = [KeyValues(pairs)]
    blocks += [Callout(n, "note") for n in g.get("notes", [])]
    if boot:
        blocks += [Callout(n, "note") for n in boot.get("notes", [])]
    if bvr and bvr.get("pairs"):
        ranked = sorted(bvr["pairs"], key=lambda p: -(p["bvr"] if p["bvr"] is not None else -1))
        shown = ranked[:MAX_BVR_ROWS]
        more = (tr(lang, "concl.bvr_all") if len(shown) == len(ranked)
                else tr(lang, "concl.bvr_top", n=len(shown), total=len(ranked)))
        blocks.append(Table([tr(lang, "concl.item_1"), tr(lang, "concl.item_2"), "n", "df", "X2",
                             "BVR"],
                            [[str(p["item_1"]), str(p["item_2"]), str(p["n"]), str(p["df"]),
                              _f(p["x2"], 3), _f(p["bvr"], 3) + (" *" if p["flagged"] else "")]
                             for p in shown], align="llrrrr",
                            caption=tr(lang, "concl.bvr_caption", threshold=bvr["threshold"],
                                       shown=more)))
    return Section("goodness", tr(lang, "concl.gof"), blocks, after="classification")


def _profile(table: Mapping[str, Any], lang: str) -> Section:
    classes, weights = table["classes"], table["weights"]
    header = [tr(lang, "concl.item"), tr(lang, "concl.category")] + [
        f"{tr(lang, 'concl.class')} {k} ({_f(w, 3)})" for k, w in zip(classes, weights)]
    with_se = any(s is not None for r in table["rows"] for s in r.get("se") or ())

    def cell(p: Any, s: Any) -> str:
        return _f(p) if s is None else f"{_f(p)} ({_f(s)})"

    body = [[str(r["item"]), str(r["category"])]
            + [cell(p, s) for p, s in zip(r["probs"], r.get("se") or [None] * len(r["probs"]))]
            for r in table["rows"]]
    caption = tr(lang, "concl.profile_caption_se" if with_se else "concl.profile_caption")
    return Section("profile", tr(lang, "concl.profile"),
                   [Table(header, body, align="ll" + "r" * len(classes), caption=caption)],
                   after="goodness")


def _derived(d: Mapping[str, Any], lang: str) -> Section:
    header = [tr(lang, f"concl.{k}") for k in ("parameter", "estimate", "se", "ci_lower",
                                                  "ci_upper")]
    body = [[r["name"], _g(r["estimate"]), _g(r["se"]), _g(r["ci_lower"]), _g(r["ci_upper"])]
            for r in d["rows"]]
    return Section("derived", tr(lang, "concl.derived"),
                   [Table(header, body, caption=tr(lang, "concl.derived_caption",
                                                   level=100 * float(d["ci_level"])))],
                   after="estimates")


def _intervals(j: Mapping[str, Any], lang: str) -> Section | None:
    blocks: list[Any] = []
    if j.get("interval_description"):
        blocks.append(Paragraph(j["interval_description"]))
    blocks += [Callout(n, "note") for n in j.get("interval_notes") or []]
    if not blocks:
        return None
    return Section("intervals", None, blocks, after="estimates")


def conclusion_sections(fitj: Mapping[str, Any], lang: str) -> list[Section]:
    """The report sections of the conclusions in ``fitj`` (fit.json's keys), in ``lang``."""
    out: list[Section] = []
    intervals = _intervals(fitj, lang)
    if intervals is not None:
        out.append(intervals)
    if "derived" in fitj:
        out.append(_derived(fitj["derived"], lang))
    if "classification" in fitj:
        out.append(_classification(fitj["classification"], fitj["rows"], lang))
    if "goodness_of_fit" in fitj:
        out.append(_goodness(fitj["goodness_of_fit"], fitj.get("bivariate_residuals"), lang))
    if "response_probabilities" in fitj:
        out.append(_profile(fitj["response_probabilities"], lang))
    if "structural" in fitj:   # three-step estimation (--structural)
        from .structural import structural_section
        out.append(structural_section(fitj["structural"], lang))
    return out
