"""Result files of a run over several numbers of classes.

The results folder holds, for the selected K, the files a single-K run writes
(``estimates.csv``, ``covariance.csv``, ``fit.json`` with an ``enumeration`` entry,
the report opening with the enumeration, :func:`enumeration_document`), plus
``enumeration.csv`` (one row per K) and ``criteria.png`` (unless ``--no-plots``); each K
also has its own folder ``k{K}/`` with exactly the files a run of that K alone would write.

**One set.** Each ``k{K}/`` folder is written as a set of its own (``write_file_set``, its
own ``manifest.json``), then the top-level set, whose ``manifest.json`` is written last and
names every top-level file and each ``k{K}/manifest.json`` with their SHA-256; so the top
manifest vouches for every file of the run (``result_set_is_complete`` follows it into the
folders).  A crash between the folders and the top set leaves a top manifest that no
longer matches, which a reader (and the next run) sees.  ``k{K}/`` folders of an earlier
run of the same task that this run did not write are removed (only our files in them).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..models.base import MixtureModel
from ..progress.atomic import remove_stray_temporaries, write_file_set
from ..selection.criteria import approximate
from ..utils.messages import register
from .document import Bullets, Callout, Document, Figure, Section, Strong, Table
from .plots import criteria_plot
from .report import report_language, tr
from .writers import (MANIFEST, format_number, manifest_bytes, removable, report_files,
                      result_files, result_set)

__all__ = ["write_enumeration", "enumeration_csv", "enumeration_sections",
           "enumeration_document", "remove_subsets", "COLUMNS", "ENUMERATION_CSV", "PLOT"]

ENUMERATION_CSV = "enumeration.csv"
PLOT = "criteria.png"
#: the columns of enumeration.csv, in order
COLUMNS = ("k", "loglik", "n_params", "aic", "bic", "sabic", "caic", "icl", "entropy",
           "smallest_class", "best_replicated", "n_starts", "blrt_p", "lmr_p", "vlmr_p",
           "selected")
_SUBSET = re.compile(r"k[0-9]+\Z")
_CRITERIA = {"bic": "BIC", "aic": "AIC", "sabic": "SABIC", "caic": "CAIC", "icl": "ICL"}

register({
    "report.enum.title": {"en": "Class enumeration: {task}", "zh": "类别数选择：{task}"},
    "report.enum.fitted": {"en": "Numbers of classes fitted: {ks}", "zh": "拟合的类别数：{ks}"},
    "report.enum.rule": {"en": "Rule: {rule}; ", "zh": "准则：{rule}；"},
    "report.enum.selected": {"en": "selected K = {k}", "zh": "选定 K = {k}"},
    "report.enum.rule_lowest": {"en": "lowest {criterion}", "zh": "{criterion} 最小"},
    "report.enum.rule_blrt": {
        "en": "BLRT at alpha = {alpha}: the smallest K whose comparison with the next K is not "
              "significant (p > alpha)",
        "zh": "BLRT，alpha = {alpha}：与下一个 K 的比较不显著（p > alpha）的最小 K"},
    "report.enum.tests": {"en": "Tests ({tests}) compare each K with the previous K of the list: {pairs}",
                   "zh": "检验（{tests}）将每个 K 与列表中的前一个 K 比较：{pairs}"},
    "report.enum.no_tests": {"en": "none", "zh": "无"},
    "report.enum.vlmr": {"en": "VLMR, adjusted LMR", "zh": "VLMR、校正 LMR"},
    "report.enum.blrt": {"en": "BLRT with up to {b} replicates", "zh": "BLRT，最多 {b} 次重复"},
    "report.enum.blrt_stop": {"en": " stopping once settled", "zh": "，结论确定即停止"},
    "report.enum.folders": {
        "en": "Each K's estimates and fit are in its folder (k{first}/ ... k{last}/); the files "
              "at the top of this folder and the report below are those of K = {k}",
        "zh": "每个 K 的估计与拟合在其文件夹中（k{first}/ … k{last}/）；本文件夹顶层的文件和"
              "下面的报告属于 K = {k}"},
    "report.enum.table": {"en": "Criteria by number of classes", "zh": "各类别数的准则"},
    "report.enum.header": {
        "en": "K|log-likelihood|parameters|AIC|BIC|SABIC|CAIC|ICL|entropy|smallest class|"
              "best replicated|starts|BLRT p|LMR p|VLMR p|selected",
        "zh": "K|对数似然|参数个数|AIC|BIC|SABIC|CAIC|ICL|熵|最小类别|最佳解重现|起点数|"
              "BLRT p|LMR p|VLMR p|选定"},
    "report.enum.table_note": {
        "en": "Lower is better for every criterion; entropy is the relative entropy (1: every "
              "row sure of its class).",
        "zh": "各准则均越小越好；熵为相对熵（1：每一行都确定属于其类别）。"},
    "report.enum.plot": {"en": "Information criteria by number of classes",
                  "zh": "各类别数的信息准则"},
})


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return format_number(value)


def enumeration_csv(rows: list[Mapping[str, Any]]) -> bytes:
    """``enumeration.csv``: one row per K, numbers at full precision, empty for none."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in COLUMNS])
    return buf.getvalue().encode("utf-8")


def _fixed(value: Any, digits: int, lang: str = "en") -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return tr(lang, "report.yes" if value else "report.no")
    return f"{float(value):.{digits}f}"


def _p(value: Any) -> str:
    """A p-value for the report: 3 decimals, ``<0.001`` below."""
    if value is None:
        return ""
    v = float(value)
    return "<0.001" if 0 <= v < 0.0005 else f"{v:.3f}"


def _rule_text(selection: Mapping[str, Any], lang: str) -> str:
    rule = selection["rule"]
    if rule == "blrt":
        return tr(lang, "report.enum.rule_blrt", alpha=f"{selection['alpha']:g}")
    return tr(lang, "report.enum.rule_lowest", criterion=_CRITERIA[rule])


def enumeration_sections(selection: Mapping[str, Any], options: Any,
                         plot: bytes | None = None) -> list[Section]:
    """The report's opening: what was fitted, the rule, the selected K, the pairs
    compared (section ``enumeration``); the table of criteria, warnings and notes, and the
    plot when given (section ``criteria``)."""
    lang = report_language(options)
    ks, sel = selection["ks"], selection["selected"]
    pairs = ", ".join(f"{a} vs {b}" for a, b in selection["pairs"])
    tests = []
    if options.vlmr:
        tests.append(tr(lang, "report.enum.vlmr"))
    if options.blrt > 0:
        tests.append(tr(lang, "report.enum.blrt", b=options.blrt)
                     + (tr(lang, "report.enum.blrt_stop") if options.blrt_early_stop else ""))
    items = [tr(lang, "report.enum.fitted", ks=", ".join(map(str, ks))),
             (tr(lang, "report.enum.rule", rule=_rule_text(selection, lang)),
              Strong(tr(lang, "report.enum.selected", k=sel))),
             tr(lang, "report.enum.tests", tests="; ".join(tests) if tests else tr(lang, "report.enum.no_tests"),
                pairs=pairs),
             tr(lang, "report.enum.folders", first=ks[0], last=ks[-1], k=sel)]
    rows = []
    for r in selection["rows"]:
        rows.append([str(r["k"]), _fixed(r["loglik"], 4), str(r["n_params"]),
                     *(_fixed(r[c], 2) for c in ("aic", "bic", "sabic", "caic", "icl")),
                     _fixed(r["entropy"], 3), _fixed(r["smallest_class"], 3),
                     _fixed(r["best_replicated"], 0, lang), str(r["n_starts"]),
                     *(_p(r[c]) for c in ("blrt_p", "lmr_p", "vlmr_p")),
                     Strong(tr(lang, "report.yes")) if r["selected"] else ""])
    header = tr(lang, "report.enum.header").split("|")
    blocks: list[Any] = [Table(header, rows, align="r" * (len(header) - 1) + "c",
                               notes=[tr(lang, "report.enum.table_note")])]
    blocks += [Callout(w, "warning") for w in selection.get("warnings", [])]
    blocks += [Callout(n, "note") for n in selection.get("notes", [])]
    if getattr(options, "weights", None) is not None and approximate(options.weight_type):
        blocks.append(Callout(tr(lang, "report.criteria_approximate"), "note"))
    if plot is not None:
        blocks.append(Figure(PLOT, plot, tr(lang, "report.enum.plot")))
    return [Section("enumeration", None, [Bullets(items)]),
            Section("criteria", tr(lang, "report.enum.table"), blocks)]


def enumeration_document(selection: Mapping[str, Any], options: Any, report: Document,
                         plot: bytes | None = None) -> Document:
    """The top-level report of an enumeration: :func:`enumeration_sections`, then the
    selected K's ``report`` as a part of its own (its title a level-1 heading)."""
    lang = report_language(options)
    return Document(tr(lang, "report.enum.title", task=options.task_name),
                    [*enumeration_sections(selection, options, plot),
                     Section("report", report.title, level=1), *report.sections], lang=lang)


def _fit_json_with_enumeration(data: bytes, selection: Mapping[str, Any],
                               options: Any) -> bytes:
    fitj = json.loads(data)
    fitj["enumeration"] = {
        "components": list(selection["ks"]), "selected": selection["selected"],
        "rule": selection["rule"], "alpha": selection["alpha"], "pairs": selection["pairs"],
        "rows": selection["rows"], "tests": selection["tests"],
        "warnings": list(selection.get("warnings", [])), "notes": list(selection.get("notes", [])),
        "se_for": options.se_for}
    return (json.dumps(fitj, indent=2, allow_nan=True, default=str, sort_keys=True)
            + "\n").encode()


def write_enumeration(models: Mapping[int, MixtureModel], record: Mapping[str, Any],
                      fits: Mapping[str, Any], selection: Mapping[str, Any],
                      se_by_k: Mapping[str, Any], options: Any, *,
                      fingerprint: Mapping[str, Any],
                      sections_by_k: Mapping[int, Sequence[Section]] | None = None,
                      figures_by_k: Mapping[int, Mapping[str, Any]] | None = None,
                      conclusions_by_k: Mapping[int, Any] | None = None) -> list[str]:
    """Write every K's folder, then the top-level set (see the module docstring); return
    the paths written.  ``sections_by_k``, ``figures_by_k``: each K's extra report sections
    and figures, as :func:`~.writers.result_files` takes them."""
    out_dir = Path(options.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sections_by_k, figures_by_k = sections_by_k or {}, figures_by_k or {}
    conclusions_by_k = conclusions_by_k or {}
    written: list[Path] = []
    subsets: dict[str, bytes] = {}
    for k in selection["ks"]:
        folder = out_dir / f"k{k}"
        folder.mkdir(exist_ok=True)
        files = result_files(models[k], record, fits[str(k)], se_by_k.get(str(k), {}),
                             options.replace(components=k), fingerprint=fingerprint,
                             sections=sections_by_k.get(k, ()), figures=figures_by_k.get(k),
                             conclusions=conclusions_by_k.get(k))
        old = removable(folder)
        remove_stray_temporaries(folder, (*old, *files, MANIFEST))
        manifest = manifest_bytes(options.task_name, files)
        written += write_file_set(folder, files, manifest=(MANIFEST, manifest), remove=old)
        subsets[f"k{k}/{MANIFEST}"] = manifest
    sel = int(selection["selected"])
    sel_options = options.replace(components=sel)
    files, report = result_set(models[sel], record, fits[str(sel)], se_by_k.get(str(sel), {}),
                               sel_options, fingerprint=fingerprint,
                               sections=sections_by_k.get(sel, ()), figures=figures_by_k.get(sel),
                               conclusions=conclusions_by_k.get(sel))
    files["fit.json"] = _fit_json_with_enumeration(files["fit.json"], selection, options)
    files[ENUMERATION_CSV] = enumeration_csv(selection["rows"])
    plot = (criteria_plot(selection["rows"], sel, selection["rule"])
            if getattr(options, "plots", True) else None)
    files.update(report_files(enumeration_document(selection, sel_options, report, plot),
                              options))
    old = removable(out_dir)
    remove_stray_temporaries(out_dir, (*old, *files, MANIFEST))
    manifest = manifest_bytes(options.task_name, {**files, **subsets})
    written += write_file_set(out_dir, files, manifest=(MANIFEST, manifest), remove=old)
    remove_subsets(out_dir, options.task_name, keep=[f"k{k}" for k in selection["ks"]])
    return [str(p) for p in written]


def remove_subsets(out_dir: Path, task_name: str, keep: Any = ()) -> list[Path]:
    """Remove the ``k{K}/`` folders of an earlier enumeration of ``task_name`` in
    ``out_dir`` that are not in ``keep``: our result files, their manifest and their
    temporaries; the folder itself when nothing else is left in it."""
    removed: list[Path] = []
    try:
        entries = sorted(os.scandir(out_dir), key=lambda e: e.name)
    except OSError:
        return removed
    for entry in entries:
        if (not _SUBSET.fullmatch(entry.name) or entry.name in keep
                or not entry.is_dir(follow_symlinks=False)):
            continue
        folder = Path(entry.path)
        try:
            manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(manifest, dict) or manifest.get("task_name") != task_name:
            continue
        names = removable(folder)  # read from the manifest before it goes
        remove_stray_temporaries(folder, (*names, MANIFEST))
        for name in (MANIFEST, *names):  # the manifest first: the set is gone
            path = folder / name
            try:
                if path.is_file() and not path.is_symlink():
                    os.unlink(path)
                    removed.append(path)
                elif path.is_symlink():
                    os.unlink(path)
            except OSError:
                pass
        try:
            os.rmdir(folder)
        except OSError:
            pass
    return removed
