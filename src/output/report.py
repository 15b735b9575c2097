"""The report of a run as a :class:`~.document.Document` (rendered to ``report.md``,
``report.html`` and ``tables.tex`` by :mod:`.writers`), and the agreement of the
standard-error methods as the registry (:data:`src.inference.SE_METHODS`) says: see
:class:`src.inference.Comparison`.

Its fixed texts are registered in English and Chinese (:func:`src.utils.messages.register`)
and written in the report's language: ``--lang`` (``options.lang``), else the current one.

Sections (keys, in order): ``overview`` (no heading: data, model, EM, starts, standard
errors, warnings and notes), ``fit`` (log-likelihood, parameters, AIC, BIC), ``estimates``
(the table of estimates.csv), ``agreement`` (with several SE methods), then the sections
other parts add (:func:`report_document`'s ``sections``), ``figures`` and ``closing``.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from ..inference import SE_METHODS, Comparison
from ..models.registry import option_phrases
from ..utils.messages import get_language, register, template
from .document import (Bullet, Bullets, Callout, Document, Figure, KeyValues, Paragraph, Section,
                       Table, figure_blocks, to_markdown)

__all__ = ["disagreements", "not_comparable", "comparison_of", "report_document",
           "report_markdown", "starts_json", "report_language", "tr", "listed", "estimates_table"]

MESSAGES = {
    "report.title": {"en": "Estimation report: {task}", "zh": "估计报告：{task}"},
    "report.data": {"en": "Data: {source} ({n} rows, columns {columns})",
                    "zh": "数据：{source}（{n} 行，列 {columns}）"},
    "report.data_weighted": {
        "en": "Data: {source} ({rows} rows, columns {columns}), weighted by column {column} "
              "({kind} weights, sum {n})",
        "zh": "数据：{source}（{rows} 行，列 {columns}），按列 {column} 加权（{kind}权重，总和 {n}）"},
    "report.weight.frequency": {"en": "frequency", "zh": "频数"},
    "report.weight.sampling": {"en": "sampling", "zh": "抽样"},
    "report.n_weighted": {"en": "n (sum of the weights)", "zh": "n（权重之和）"},
    "report.criteria_approximate": {
        "en": "With sampling weights the log-likelihood is a weighted pseudo-likelihood and n the "
              "sum of the weights, so AIC and BIC (and the enumeration's criteria) are approximate.",
        "zh": "使用抽样权重时，对数似然是加权的伪似然，n 为权重之和，因此 AIC 与 BIC（以及类别数比较的准则）只是近似值。"},
    "report.model": {"en": "Model: {model} with {k} classes{phrases}",
                     "zh": "模型：{model}，{k} 个类别{phrases}"},
    "report.em": {"en": "EM: {n} iterations, {state} (tol {tol}, acceleration {acc})",
                  "zh": "EM：{n} 次迭代，{state}（容差 {tol}，加速 {acc}）"},
    "report.converged": {"en": "converged", "zh": "已收敛"},
    "report.not_converged": {"en": "NOT converged", "zh": "未收敛"},
    "report.search": {
        "en": "the best {n} of {m} candidate starts (hierarchical, k-means++, random, random "
              "partitions; {it} EM iterations each) run to convergence",
        "zh": "{m} 个候选起点（层次聚类、k-means++、随机、随机划分；各 {it} 次 EM 迭代）中最好的 "
              "{n} 个迭代至收敛"},
    "report.sample_search": {
        "en": "; on a random sample of {m} of the {n} rows (--sample-rows; best log-likelihood "
              "{ll} on the sample), the best start then refined on all rows in {it} iterations",
        "zh": "；在 {n} 行中随机抽取的 {m} 行样本上进行（--sample-rows；样本上的最佳对数似然 {ll}），"
              "最佳起点随后在全部数据上迭代 {it} 次"},
    "report.random_starts": {"en": "{n} random starts run to convergence",
                             "zh": "{n} 个随机起点迭代至收敛"},
    "report.given_starts": {"en": ", plus {n} given starting values",
                            "zh": "，另加 {n} 组给定初值"},
    "report.starts": {"en": "Starts: {how}; the chosen one is start {best}",
                      "zh": "起点：{how}；选中的是第 {best} 个起点"},
    "report.replication": {
        "en": "Best log-likelihood {ll} reached by {n} of {pool} starts{all} (within {tol}); "
              "distinct maxima (starts): {maxima}{more}",
        "zh": "最佳对数似然 {ll} 由 {pool} 个起点中的 {n} 个达到{all}（容差 {tol}）；"
              "不同的极大值（起点数）：{maxima}{more}"},
    "report.pool_all": {"en": " (every start degenerate: all compared)",
                        "zh": "（所有起点均退化：全部参与比较）"},
    "report.more_maxima": {"en": ", and {n} more", "zh": "，另有 {n} 个"},
    "report.degenerate": {
        "en": "Degenerate starts (never chosen while a proper one exists), by kind: {kinds}",
        "zh": "退化起点（只要存在正常起点就不会被选中），按类型：{kinds}"},
    "report.se": {"en": "Standard errors: {method}", "zh": "标准误：{method}"},
    "report.missing_info": {"en": "Largest fraction of missing information: {value}",
                            "zh": "最大缺失信息比例：{value}"},
    "report.fit": {"en": "Fit", "zh": "拟合"},
    "report.loglik": {"en": "Log-likelihood", "zh": "对数似然"},
    "report.n_params": {"en": "Parameters", "zh": "参数个数"},
    "report.n_obs": {"en": "Rows", "zh": "行数"},
    "report.fit_note": {"en": "Lower AIC and BIC are better.", "zh": "AIC 与 BIC 越小越好。"},
    "report.estimates": {"en": "Estimates", "zh": "估计值"},
    "report.agreement": {"en": "Agreement of the {n} standard errors", "zh": "{n}种标准误的一致性"},
    "report.not_comparable": {
        "en": "Not comparable (a standard error is NaN in at least one method): {names}.",
        "zh": "无法比较（至少一种方法的标准误为 NaN）：{names}。"},
    "report.agree": {"en": "{who} standard errors agree within {within}.",
                     "zh": "{who}标准误在{within}内一致。"},
    "report.agree_rest": {
        "en": "{who} standard errors agree within {within} for the other {n} parameters.",
        "zh": "其余 {n} 个参数的{who}标准误在{within}内一致。"},
    "report.within_mc": {"en": "Monte-Carlo error", "zh": "蒙特卡洛误差"},
    "report.within_tol": {"en": "their relative tolerance", "zh": "相对容差"},
    "report.and": {"en": " and ", "zh": "和"},
    "report.comma": {"en": ", ", "zh": "、"},
    "report.figures": {"en": "Figures", "zh": "图"},
    "report.closing": {"en": "Classes are in the model's canonical order (see docs/architecture.md).",
                       "zh": "类别按模型的规范顺序排列（见 docs/architecture.md）。"},
    "report.yes": {"en": "yes", "zh": "是"},
    "report.no": {"en": "no", "zh": "否"},
}
register(MESSAGES)

_COUNT_WORDS = {"en": {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"},
                "zh": {2: "两", 3: "三", 4: "四", 5: "五", 6: "六"}}


def report_language(options: Any) -> str:
    """The report's language: ``options.lang`` when given, else the current language."""
    lang = getattr(options, "lang", None)
    return lang if lang in ("en", "zh") else get_language()


def tr(lang: str, key: str, /, **fields: Any) -> str:
    """The report phrase ``key`` (registered in :data:`MESSAGES` or by another module with
    :func:`~src.utils.messages.register`) in ``lang``, with ``fields`` filled in: as
    :func:`~src.utils.messages.t`, for a given language rather than the current one."""
    texts = MESSAGES.get(key) or template(key)
    if texts is None:
        return key
    return (texts.get(lang) or texts["en"]).format(**fields)


def comparison_of(name: str, methods: Mapping[str, Any] | None = None) -> Comparison | None:
    """How method ``name`` is compared: its registry entry's ``agreement``; None: not compared."""
    entry = (SE_METHODS if methods is None else methods).get(name)
    return getattr(entry, "agreement", None)


def _compared(se: Mapping[str, Any],
              methods: Mapping[str, Any] | None) -> list[tuple[str, Comparison]]:
    """The methods in ``se`` that reports compare, in registry order."""
    registry = SE_METHODS if methods is None else methods
    out = []
    for name in registry:
        rule = comparison_of(name, registry) if name in se else None
        if rule is not None:
            out.append((name, rule))
    return out


def _replicates(options: Any, option: str) -> int:
    """A Monte-Carlo method's number of replicates: the run option ``option`` (an int given
    instead of run options is that number, as the older ``disagreements(se, n_bootstrap)``)."""
    if isinstance(options, (int, np.integer)):
        return int(options)
    return int(getattr(options, option))


def disagreements(se: Mapping[str, Any], options: Any,
                  methods: Mapping[str, Any] | None = None) -> list[str]:
    """Parameters whose standard errors disagree with the reference method's beyond what
    chance explains, by each method's :class:`Comparison` (``methods``: the registry).

    Built in: Louis is the reference; numerical differs by more than 1e-3 relative (both
    are deterministic); bootstrap by more than 3 Monte-Carlo standard deviations
    (SE/sqrt(2B)) plus a 10% finite-sample allowance.  ``options``: the run options (for
    the number of replicates), or that number itself.
    """
    out: list[str] = []
    compared = _compared(se, methods)
    ref = next(((m, c) for m, c in compared if c.reference), None)
    if ref is None:
        return out
    names = se[ref[0]]["names"]
    lo = np.asarray(se[ref[0]]["se"], dtype=float)
    for m, rule in compared:
        if m == ref[0] or (rule.rel_tol is None and not rule.monte_carlo):
            continue
        other = np.asarray(se[m]["se"], dtype=float)
        if rule.monte_carlo:
            root = math.sqrt(2 * _replicates(options, rule.replicates))
        for i, n in enumerate(names):
            if not (np.isfinite(lo[i]) and np.isfinite(other[i])):
                continue
            if rule.monte_carlo:
                if not lo[i] > 0:
                    continue
                allowed = rule.sds * lo[i] / root + rule.slack * lo[i]
            else:
                allowed = rule.rel_tol * max(lo[i], 1e-300)
            if abs(other[i] - lo[i]) > allowed:
                out.append(f"{n}: {ref[1].label} {lo[i]:.6g} vs {rule.label} {other[i]:.6g}")
    return out


def not_comparable(se: Mapping[str, Any], methods: Mapping[str, Any] | None = None) -> list[str]:
    """Parameters whose standard error is NaN (or infinite) in at least one of the methods
    compared by :func:`disagreements`: they cannot count as agreeing."""
    compared = [m for m, _ in _compared(se, methods)]
    if not compared:
        return []
    names = list(se[compared[0]]["names"])
    bad = np.zeros(len(names), dtype=bool)
    for m in compared:
        bad |= ~np.isfinite(np.asarray(se[m]["se"], dtype=float))
    return [n for n, b in zip(names, bad) if b]


def listed(words: Sequence[str], lang: str = "en") -> str:
    """``a``, ``a and b``, ``a, b and c`` (Chinese: ``a、b和c``)."""
    words = list(words)
    if len(words) == 1:
        return words[0]
    return tr(lang, "report.comma").join(words[:-1]) + tr(lang, "report.and") + words[-1]


def _agreement_section(se: Mapping[str, Any], options: Any, lang: str) -> Section | None:
    """Disagreements, parameters not comparable, and a claim of agreement only for the
    parameters that were compared (None with fewer than two methods compared)."""
    compared = _compared(se, None)
    if options.se_method != "all" or len(compared) < 2:
        return None
    dis = disagreements(se, options)
    nan = not_comparable(se)
    ref = next((m for m, c in compared if c.reference), None)
    total = len(se[ref]["names"]) if ref is not None else 0
    blocks: list[Any] = [Bullets(dis)] if dis else []
    if nan:
        blocks.append(Paragraph(tr(lang, "report.not_comparable", names=", ".join(nan))))
    if not dis:
        who = listed([c.label for _, c in compared], lang)
        within = tr(lang, "report.within_mc" if any(c.monte_carlo for _, c in compared)
                    else "report.within_tol")
        if not nan:
            blocks.append(Paragraph(tr(lang, "report.agree", who=who, within=within)))
        elif total > len(nan):
            blocks.append(Paragraph(tr(lang, "report.agree_rest", who=who, within=within,
                                       n=total - len(nan))))
    n = len(compared)
    title = tr(lang, "report.agreement", n=_COUNT_WORDS[lang].get(n, str(n)))
    return Section("agreement", title, blocks)


def starts_json(fit: Mapping[str, Any]) -> dict[str, Any]:
    """The search and its outcome (FitResult's keys, see src/estimation/results.py):
    ``search`` (n_candidates, candidate_iter, n_starts, n_extra), ``replication``
    (best_loglik, n_reached, n_pool, pool, tol, maxima [[loglik, count], ...], replicated),
    ``flags`` ({kind: starts}), per start ``start_kinds``, ``start_flags`` and
    ``start_candidates`` (each start's candidate number, from 1)."""
    return {"search": dict(fit.get("search", {})), "replication": dict(fit.get("replication", {})),
            "flags": dict(fit.get("flags", {})),
            "start_kinds": list(fit.get("start_kinds", [])),
            "start_flags": [list(f) for f in fit.get("start_flags", [])],
            "start_candidates": [int(u) + 1 for u in fit.get("start_ids", [])]}


def _search_lines(fitj: Mapping[str, Any], options: Any, lang: str) -> list[str]:
    """The report's lines on the starts: how they were found, replication, degenerate ones."""
    search, rep, flags = fitj.get("search") or {}, fitj.get("replication") or {}, fitj.get("flags") or {}
    n_starts = int(search.get("n_starts", options.n_starts))
    if search.get("n_candidates"):
        how = tr(lang, "report.search", n=n_starts, m=search["n_candidates"],
                 it=search["candidate_iter"])
    else:
        how = tr(lang, "report.random_starts", n=n_starts)
    if search.get("n_extra"):
        how += tr(lang, "report.given_starts", n=search["n_extra"])
    if search.get("sample_rows"):   # partitioned input: the search ran on a sample
        how += tr(lang, "report.sample_search", m=search["sample_rows"], n=fitj["n_obs"],
                  ll=f"{search['sample_loglik']:.6f}", it=search.get("refine_iter", 0))
    lines = [tr(lang, "report.starts", how=how, best=fitj["best_start"])]
    if rep:
        maxima = ", ".join(f"{ll:.6f} ({c})" for ll, c in rep.get("maxima", [])[:6])
        more = len(rep.get("maxima", [])) - 6
        lines.append(tr(lang, "report.replication", ll=f"{rep['best_loglik']:.6f}",
                        n=rep["n_reached"], pool=rep["n_pool"],
                        all=tr(lang, "report.pool_all") if rep.get("pool") == "all" else "",
                        tol=f"{rep['tol']:.3g}", maxima=maxima,
                        more=tr(lang, "report.more_maxima", n=more) if more > 0 else ""))
    if flags:
        lines.append(tr(lang, "report.degenerate",
                        kinds=", ".join(f"{k} {v}" for k, v in sorted(flags.items()))))
    return lines


def _short(cell: str) -> str:
    """A number of estimates.csv shown with 6 significant digits; other text as it is."""
    try:
        return f"{float(cell):.6g}"
    except ValueError:
        return cell


def estimates_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> Table:
    """The rows of estimates.csv as the report shows them (6 significant digits), the
    parameter names left-aligned and the numbers right-aligned."""
    return Table(list(header), [[_short(c) for c in row] for row in rows])


def _overview(model, record, se, options, fitj, lang: str) -> Section:
    phrases = "".join(("，" if lang == "zh" else ", ") + p for p in option_phrases(model, lang))
    weights = fitj.get("weights")
    columns = ", ".join(record.get("columns") or [])
    data_line = (tr(lang, "report.data", source=record.get("source"), n=fitj["n_obs"],
                    columns=columns) if not weights else
                 tr(lang, "report.data_weighted", source=record.get("source"),
                    rows=record.get("n_obs", record.get("n_rows")), columns=columns,
                    column=weights["column"], kind=tr(lang, f"report.weight.{weights['type']}"),
                    n=fitj["n_obs"]))
    items: list[Any] = [
        Bullet(data_line, tuple(record.get("notes") or [])),  # how the file was read
        tr(lang, "report.model", model=options.model, k=options.components, phrases=phrases),
        tr(lang, "report.em", n=fitj["n_iter"],
           state=tr(lang, "report.converged" if fitj["converged"] else "report.not_converged"),
           tol=options.tol, acc=options.accelerate),
        *_search_lines(fitj, options, lang),
        tr(lang, "report.se", method=options.se_method)]
    if "max_fraction_missing_info" in fitj:
        items.append(tr(lang, "report.missing_info",
                        value=f"{fitj['max_fraction_missing_info']:.4f}"))
    blocks: list[Any] = [Bullets(items)]
    blocks += [Callout(w, "warning") for w in fitj["warnings"]]
    for m, r in se.items():
        blocks += [Callout(note, "note", label=m) for note in r.get("notes", [])]
    return Section("overview", None, blocks)


def _fit_section(fitj: Mapping[str, Any], lang: str) -> Section:
    pairs = [(tr(lang, "report.loglik"), f"{fitj['loglik']:.6f}"),
             (tr(lang, "report.n_params"), str(fitj["n_params"])),
             (tr(lang, "report.n_weighted" if fitj.get("weights") else "report.n_obs"),
              str(fitj["n_obs"])),
             ("AIC", f"{fitj['aic']:.4f}"), ("BIC", f"{fitj['bic']:.4f}")]
    notes = [tr(lang, "report.fit_note")]
    if fitj.get("criteria_approximate"):
        notes.append(tr(lang, "report.criteria_approximate"))
    return Section("fit", tr(lang, "report.fit"), [KeyValues(pairs, notes=notes)])


def report_document(model, record, fit, se, options, fitj, header, rows, *,
                    sections: Sequence[Section] = (),
                    figures: Mapping[str, Any] | Sequence[Figure] | None = None) -> Document:
    """The report of one fit.

    ``fitj``: fit.json's content; ``header``, ``rows``: estimates.csv's.  ``sections``:
    further sections, placed by their ``after`` (:meth:`Document.insert`; default: before
    the closing remark).  ``figures``: ``{file name: (png, caption)}`` (or objects with
    ``.png`` and ``.caption``, as :class:`src.output.plots.Plot`), shown in a section
    "Figures" and written beside the report; a figure already inside a section needs no
    entry here.
    """
    lang = report_language(options)
    doc = Document(tr(lang, "report.title", task=options.task_name), [
        _overview(model, record, se, options, fitj, lang),
        _fit_section(fitj, lang),
        Section("estimates", tr(lang, "report.estimates"), [estimates_table(header, rows)]),
        *([s] if (s := _agreement_section(se, options, lang)) is not None else []),
        Section("closing", None, [Paragraph(tr(lang, "report.closing"))]),
    ], lang=lang)
    extra = list(sections)
    from .covariates import covariate_section   # --covariates: odds ratios, the reference
    if (cov := covariate_section(model, header, rows, fitj, lang)) is not None:
        extra.append(cov)
    shown = figure_blocks(_as_pairs(figures))
    if shown:
        extra.append(Section("figures", tr(lang, "report.figures"), shown))
    return doc.insert(extra)


def _as_pairs(figures: Mapping[str, Any] | Sequence[Figure] | None) -> Any:
    if not figures or not isinstance(figures, Mapping):
        return figures
    return {name: (f if isinstance(f, tuple) else (f.png, f.caption))
            for name, f in figures.items()}


def report_markdown(model, record, fit, se, options, fitj, header, rows) -> str:
    """``report.md``'s text (:func:`report_document` rendered as Markdown)."""
    return to_markdown(report_document(model, record, fit, se, options, fitj, header, rows))
