"""Result files of a run over several numbers of classes.

The results folder holds, for the selected K, the files a single-K run writes
(``estimates.csv``, ``covariance.csv``, ``fit.json`` with an ``enumeration`` entry,
``report.md`` opening with the enumeration), plus ``enumeration.csv`` (one row per K) and
``criteria.png``; each K also has its own folder ``k{K}/`` with exactly the files a run of
that K alone would write.

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
from typing import Any, Mapping

from ..models.base import MixtureModel
from ..progress.atomic import remove_stray_temporaries, write_file_set
from .plots import criteria_plot
from .writers import MANIFEST, RESULT_FILES, format_number, manifest_bytes, result_files

__all__ = ["write_enumeration", "enumeration_csv", "enumeration_report", "remove_subsets",
           "COLUMNS", "ENUMERATION_CSV", "PLOT"]

ENUMERATION_CSV = "enumeration.csv"
PLOT = "criteria.png"
#: the columns of enumeration.csv, in order
COLUMNS = ("k", "loglik", "n_params", "aic", "bic", "sabic", "caic", "icl", "entropy",
           "smallest_class", "best_replicated", "n_starts", "blrt_p", "lmr_p", "vlmr_p",
           "selected")
_SUBSET = re.compile(r"k[0-9]+\Z")
_RULES = {"bic": "lowest BIC", "aic": "lowest AIC", "sabic": "lowest SABIC",
          "caic": "lowest CAIC", "icl": "lowest ICL"}


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


def _fixed(value: Any, digits: int) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{float(value):.{digits}f}"


def _p(value: Any) -> str:
    """A p-value for the report: 3 decimals, ``<0.001`` below."""
    if value is None:
        return ""
    v = float(value)
    return "<0.001" if 0 <= v < 0.0005 else f"{v:.3f}"


def _rule_text(selection: Mapping[str, Any]) -> str:
    rule = selection["rule"]
    if rule == "blrt":
        return (f"BLRT at alpha = {selection['alpha']:g}: the smallest K whose comparison "
                f"with the next K is not significant (p > alpha)")
    return _RULES[rule]


def enumeration_report(selection: Mapping[str, Any], options: Any) -> list[str]:
    """The report's opening section: the table, the rule, the selected K, the pairs
    compared, warnings and notes, and the plot."""
    ks, sel = selection["ks"], selection["selected"]
    pairs = ", ".join(f"{a} vs {b}" for a, b in selection["pairs"])
    tests = []
    if options.vlmr:
        tests.append("VLMR, adjusted LMR")
    if options.blrt > 0:
        tests.append(f"BLRT with up to {options.blrt} replicates"
                     + (" stopping once settled" if options.blrt_early_stop else ""))
    lines = [f"# Class enumeration: {options.task_name}", "",
             f"- Numbers of classes fitted: {', '.join(map(str, ks))}",
             f"- Rule: {_rule_text(selection)}; **selected K = {sel}**",
             f"- Tests ({'; '.join(tests) if tests else 'none'}) compare each K with the "
             f"previous K of the list: {pairs}",
             f"- Each K's estimates and fit are in its folder (k{ks[0]}/ ... k{ks[-1]}/); "
             f"the files at the top of this folder and the report below are those of K = {sel}",
             "", "| K | log-likelihood | parameters | AIC | BIC | SABIC | CAIC | ICL | entropy "
             "| smallest class | best replicated | starts | BLRT p | LMR p | VLMR p | selected |",
             "|" + "---|" * 16]
    for r in selection["rows"]:
        cells = [str(r["k"]), _fixed(r["loglik"], 4), str(r["n_params"]),
                 *(_fixed(r[c], 2) for c in ("aic", "bic", "sabic", "caic", "icl")),
                 _fixed(r["entropy"], 3), _fixed(r["smallest_class"], 3),
                 _fixed(r["best_replicated"], 0), str(r["n_starts"]),
                 *(_p(r[c]) for c in ("blrt_p", "lmr_p", "vlmr_p")),
                 "**yes**" if r["selected"] else ""]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Lower is better for every criterion; entropy is the relative entropy "
              "(1: every row sure of its class).", ""]
    lines += [f"> Warning: {w}" for w in selection.get("warnings", [])]
    lines += [f"> Note: {n}" for n in selection.get("notes", [])]
    lines += ["", f"![Information criteria by number of classes]({PLOT})", ""]
    return lines


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
                      fingerprint: Mapping[str, Any]) -> list[str]:
    """Write every K's folder, then the top-level set (see the module docstring); return
    the paths written."""
    out_dir = Path(options.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stray_temporaries(out_dir, (*RESULT_FILES, MANIFEST))
    written: list[Path] = []
    subsets: dict[str, bytes] = {}
    for k in selection["ks"]:
        folder = out_dir / f"k{k}"
        folder.mkdir(exist_ok=True)
        remove_stray_temporaries(folder, (*RESULT_FILES, MANIFEST))
        files = result_files(models[k], record, fits[str(k)], se_by_k.get(str(k), {}),
                             options.replace(components=k), fingerprint=fingerprint)
        manifest = manifest_bytes(options.task_name, files)
        written += write_file_set(folder, files, manifest=(MANIFEST, manifest),
                                  remove=RESULT_FILES)
        subsets[f"k{k}/{MANIFEST}"] = manifest
    sel = int(selection["selected"])
    files = result_files(models[sel], record, fits[str(sel)], se_by_k.get(str(sel), {}),
                         options.replace(components=sel), fingerprint=fingerprint)
    files["fit.json"] = _fit_json_with_enumeration(files["fit.json"], selection, options)
    files["report.md"] = ("\n".join(enumeration_report(selection, options)).encode()
                          + b"\n" + files["report.md"])
    files[ENUMERATION_CSV] = enumeration_csv(selection["rows"])
    files[PLOT] = criteria_plot(selection["rows"], sel, selection["rule"])
    manifest = manifest_bytes(options.task_name, {**files, **subsets})
    written += write_file_set(out_dir, files, manifest=(MANIFEST, manifest), remove=RESULT_FILES)
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
        remove_stray_temporaries(folder, (*RESULT_FILES, MANIFEST))
        for name in (MANIFEST, *RESULT_FILES):  # the manifest first: the set is gone
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
