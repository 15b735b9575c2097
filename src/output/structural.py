"""Three-step estimation in the results: fit.json's ``structural`` block, the structural rows
of ``estimates.csv`` and the report's section (docs/structural.md, docs/results.md).

Structural parameters are named apart from the measurement model's: ``structural.beta[k,name]``
(covariates; class 1 the reference), ``distal.mean[k,col]``, ``distal.var[k,col]``,
``distal.prob[k,col,code]``, ``distal.weight[k]`` (the ML correction's class proportions).
Their rows follow the measurement model's in ``estimates.csv``, with the same columns
(``se_<method>`` columns empty); ``covariance.csv`` stays the measurement model's, and the
structural covariance is in fit.json (``structural.covariance``).

Intervals at ``--ci-level``: Wald on each parameter's scale (identity for coefficients and
means, log for variances, logit for probabilities) from the corrected or step-3 standard
errors, or bootstrap percentile intervals (``--structural-se bootstrap``).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from ..inference.intervals import percentile_intervals, wald_intervals, z_and_p
from ..utils.messages import register
from .covariates import odds_ratio_entry, odds_ratio_table
from .document import Callout, KeyValues, Section, Table
from .estimates import format_number
from .report import tr

__all__ = ["structural_json", "structural_rows", "structural_section"]

#: the prefix of step 3's covariate coefficients (``structural.beta[k,name]``)
_BETA = "structural.beta["

register({
    "st.title": {"en": "Three-step estimation", "zh": "三步法估计"},
    "st.kind.covariates": {"en": "covariates of the class (multinomial logit, class {ref} the reference)",
                           "zh": "类别的协变量（多项 logit，以类别 {ref} 为参照）"},
    "st.kind.distal.gaussian": {"en": "distal outcomes, Gaussian per class (class-specific variances)",
                                "zh": "远端结果，各类别内为正态分布（各类别方差不同）"},
    "st.kind.distal.categorical": {"en": "distal outcomes, categorical per class",
                                   "zh": "远端结果，各类别内为分类分布"},
    "st.correction.none": {"en": "none (naive three-step: the assignment taken as the class; biased towards no difference between classes)",
                           "zh": "无（朴素三步法：把归类当作真实类别；会低估类别间差异）"},
    "st.correction.bch": {"en": "BCH (Bolck, Croon & Hagenaars 2004; Vermunt 2010): rows weighted by W D^-1",
                          "zh": "BCH（Bolck、Croon 与 Hagenaars 2004；Vermunt 2010）：以 W D^-1 为行权重"},
    "st.correction.ml": {"en": "ML (Vermunt 2010): maximum likelihood with P(assigned class | class) = D held fixed",
                         "zh": "ML（Vermunt 2010）：固定 P(归类 | 类别) = D 的最大似然"},
    "st.se.corrected": {"en": "corrected for step 1 (Bakk, Oberski & Vermunt 2014: step 3's sandwich plus the measurement model's covariance by {method}, carried through D)",
                        "zh": "计入第 1 步的校正标准误（Bakk、Oberski 与 Vermunt 2014：第 3 步三明治标准误加上经 D 传递的测量模型协方差（{method}））"},
    "st.se.bootstrap": {"en": "bootstrap of all three steps ({n} of {B} replicates; percentile intervals)",
                        "zh": "三个步骤整体的自助法（{B} 次重复中 {n} 次成功；百分位区间）"},
    "st.se.step3": {"en": "sandwich of step 3 alone (step 1 treated as known)",
                    "zh": "仅第 3 步的三明治标准误（视第 1 步为已知）"},
    "st.model": {"en": "Structural model", "zh": "结构模型"},
    "st.correction": {"en": "Correction", "zh": "校正"},
    "st.assignment": {"en": "Assignment (step 2)", "zh": "归类（第 2 步）"},
    "st.assignment.modal": {"en": "modal (most likely class)", "zh": "众数（最可能类别）"},
    "st.assignment.soft": {"en": "soft (posterior probabilities)", "zh": "软归类（后验概率）"},
    "st.se": {"en": "Standard errors", "zh": "标准误"},
    "st.rows": {"en": "Rows in step 3 / in step 1", "zh": "第 3 步 / 第 1 步的行数"},
    "st.columns": {"en": "Columns", "zh": "列"},
    "st.loglik": {"en": "Step-3 log-likelihood (ML)", "zh": "第 3 步对数似然（ML）"},
    "st.D_caption": {"en": "Classification-error matrix D: row = class k, column = assigned class s, d_sk = sum_i tau_ik P(W_i = s | y_i) / sum_i tau_ik",
                     "zh": "分类误差矩阵 D：行 = 类别 k，列 = 归入的类别 s，d_sk = sum_i tau_ik P(W_i = s | y_i) / sum_i tau_ik"},
    "st.class": {"en": "class", "zh": "类别"},
    "st.assigned": {"en": "assigned {s}", "zh": "归入 {s}"},
    "st.estimates_caption": {"en": "Structural estimates ({level:g}% intervals); their rows follow the measurement model's in estimates.csv",
                             "zh": "结构模型估计值（{level:g}% 区间）；在 estimates.csv 中位于测量模型参数之后"},
    "st.odds_caption": {"en": "Odds ratios exp(beta) against class {ref} per unit of each covariate, with {level:g}% intervals",
                        "zh": "相对于类别 {ref} 的比值比 exp(beta)（协变量每增加一个单位），及 {level:g}% 区间"},
    "st.tests_caption": {"en": "Wald tests of step 3", "zh": "第 3 步的 Wald 检验"},
    "st.hypothesis": {"en": "hypothesis", "zh": "假设"},
})


def _rows_table(result: Mapping[str, Any], level: float) -> list[dict[str, Any]]:
    names = list(result["names"])
    est = np.asarray(result["estimates"], dtype=float)
    se = np.asarray(result["se"], dtype=float)
    scales = np.asarray(result["scales"])
    if result["se_method"] == "bootstrap":
        reps = np.asarray(result["replicates"], dtype=float).reshape(-1, len(names))
        lo, hi = percentile_intervals(reps, level)
    else:
        lo, hi, _ = wald_intervals(est, se, scales, level)
    z, p = z_and_p(est, se)
    out = []
    for i, name in enumerate(names):
        ident = scales[i] == "identity"
        out.append({"parameter": name, "estimate": float(est[i]), "se": float(se[i]),
                    "z": float(z[i]) if ident else None, "p_value": float(p[i]) if ident else None,
                    "ci_lower": float(lo[i]), "ci_upper": float(hi[i])})
    return out


def structural_json(result: Mapping[str, Any], options: Any) -> dict[str, Any]:
    """fit.json's ``structural`` block from the phase's result."""
    level = float(getattr(options, "ci_level", 0.95))
    D = np.asarray(result["D"], dtype=float)
    extra = dict(result.get("extra") or {})
    out = {
        "kind": result["kind"], "correction": result["correction"],
        "assignment": result["assignment"], "columns": list(result["columns"]),
        "distal_type": result.get("distal_type"), "k": int(result["k"]),
        **({"reference_class": int(result["reference"]) + 1}
           if result.get("reference") is not None else {}),
        "D": D.tolist(),
        "D_definition": "D[k][s] = d_sk = sum_i c_i tau_ik W_is / sum_i c_i tau_ik "
                        "(row: class k, column: assigned class s)",
        "assigned": np.asarray(result["assigned"], dtype=float).tolist(),
        "se_method": result["se_method"], **extra,
        "n_rows": int(result["n_rows"]), "n_step3": int(result["n_step3"]),
        "loglik": result.get("loglik"), "n_iter": int(result.get("n_iter", 0)),
        "converged": bool(result.get("converged", True)),
        "ci_level": level, "estimates": _rows_table(result, level),
        "covariance": np.asarray(result["cov"], dtype=float).tolist(),
        "tests": list(result.get("tests") or []),
        "notes": list(result.get("notes") or []), "warnings": list(result.get("warnings") or []),
    }
    return out


def structural_rows(block: Mapping[str, Any], header: Sequence[str]) -> list[list[str]]:
    """estimates.csv rows of the structural parameters (the columns of ``header``)."""
    rows = []
    for r in block["estimates"]:
        row = [r["parameter"], format_number(r["estimate"]), format_number(r["se"]),
               format_number(r["z"]) if r["z"] is not None else "",
               format_number(r["p_value"]) if r["p_value"] is not None else "",
               format_number(r["ci_lower"]), format_number(r["ci_upper"])]
        rows.append(row + [""] * (len(header) - len(row)))
    return rows


def _g(x: Any) -> str:
    if x is None:
        return ""
    x = float(x)
    return "nan" if math.isnan(x) else f"{x:.6g}"


def _float(x: Any) -> float:
    return math.nan if x is None else float(x)


def _p(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return "< 0.0001" if float(x) < 1e-4 else f"{float(x):.4f}"


def structural_section(block: Mapping[str, Any], lang: str) -> Section:
    """The report's section on three-step estimation."""
    kind = block["kind"] if block["kind"] == "covariates" else f"distal.{block['distal_type']}"
    if block["se_method"] == "corrected":
        se_text = tr(lang, "st.se.corrected", method=block.get("measurement_se_method", ""))
    elif block["se_method"] == "bootstrap":
        se_text = tr(lang, "st.se.bootstrap", n=block.get("n_ok", 0), B=block.get("n_bootstrap", 0))
    else:
        se_text = tr(lang, "st.se.step3")
    ref = block.get("reference_class", 1)
    pairs = [(tr(lang, "st.model"), tr(lang, f"st.kind.{kind}", ref=ref)),
             (tr(lang, "st.columns"), ", ".join(block["columns"])),
             (tr(lang, "st.correction"), tr(lang, f"st.correction.{block['correction']}")),
             (tr(lang, "st.assignment"), tr(lang, f"st.assignment.{block['assignment']}")),
             (tr(lang, "st.se"), se_text),
             (tr(lang, "st.rows"), f"{block['n_step3']} / {block['n_rows']}")]
    if block.get("loglik") is not None:
        pairs.append((tr(lang, "st.loglik"), f"{block['loglik']:.6f}"))
    K = len(block["D"])
    blocks: list[Any] = [KeyValues(pairs)]
    blocks += [Callout(w) for w in block.get("warnings", [])]
    blocks.append(Table([tr(lang, "st.class")] + [tr(lang, "st.assigned", s=s + 1) for s in range(K)],
                        [[str(k + 1)] + [f"{v:.4f}" for v in row]
                         for k, row in enumerate(block["D"])],
                        caption=tr(lang, "st.D_caption")))
    level = 100 * float(block["ci_level"])
    head = [tr(lang, f"concl.{k}") for k in ("parameter", "estimate", "se")]
    lims = [tr(lang, "concl.ci_lower"), tr(lang, "concl.ci_upper")]
    blocks.append(Table([*head, "z", "p_value", *lims],
                        [[r["parameter"], _g(r["estimate"]), _g(r["se"]), _g(r["z"]),
                          _p(r["p_value"]), _g(r["ci_lower"]), _g(r["ci_upper"])]
                         for r in block["estimates"]],
                        caption=tr(lang, "st.estimates_caption", level=level)))
    if block["kind"] == "covariates":   # the one-step model's table (src/output/covariates.py)
        entries = [odds_ratio_entry(int(k), name, *(_float(r[f]) for f in (
                       "estimate", "se", "ci_lower", "ci_upper", "p_value")))
                   for r in block["estimates"] if not r["parameter"].endswith(",intercept]")
                   for k, name in [r["parameter"][len(_BETA):-1].split(",", 1)]]
        if entries:
            blocks.append(odds_ratio_table(
                entries, tr(lang, "st.odds_caption", level=level, ref=ref), lang))
    if block.get("tests"):
        blocks.append(Table([tr(lang, "st.hypothesis"), "chi2", "df", "p_value"],
                            [[x["hypothesis"], _g(x["chi2"]), str(x["df"]), _p(x["p_value"])]
                             for x in block["tests"]], caption=tr(lang, "st.tests_caption")))
    blocks += [Callout(n, "note") for n in block.get("notes", [])]
    return Section("structural", tr(lang, "st.title"), blocks, after="estimates")
