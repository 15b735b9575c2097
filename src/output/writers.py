"""Result files of a run: ``estimates.csv``, ``covariance.csv`` (:mod:`.estimates`),
``fit.json`` (here), the report (:mod:`.report`, a :class:`~.document.Document`) as
``report.md``, ``report.html`` and ``tables.tex`` as ``--formats`` asks (:func:`report_files`),
and its figures as PNG files beside it.

Figures have varying names; a later run removes an earlier run's result files it does not
write: every name in :data:`RESULT_FILES`, and every figure (``*.png``) the earlier run's
manifest names (:func:`removable`).

A resumed run's files compare byte for byte with an uninterrupted run's, ``fit.json`` (keys
sorted) but for its ``seconds``.  The files of one run appear together or not at all: they are written as one
set (``write_file_set``) with ``manifest.json`` last, naming each file's SHA-256 and the
task, so a reader can tell a complete set (:func:`result_set_is_complete`); temporaries an
interrupted earlier write of these files left behind are removed first.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..inference import Comparison
from ..models.base import MixtureModel
from ..progress.atomic import (TMP_PREFIX, FileSet, remove_stray_temporaries, sha256_bytes,
                               sha256_file, write_file_set)
from .conclusions import conclusion_sections
from .estimates import (covariance_rows, csv_bytes, estimates_rows, format_number, interval_summary,
                        primary_method)
from .document import FIGURE_NAME, Document, Section, to_markdown
from .render_html import to_html
from .render_latex import to_latex
from .report import (comparison_of, disagreements, not_comparable, report_document,
                     report_language, starts_json)

__all__ = ["write_all", "format_number", "estimates_rows", "disagreements", "not_comparable",
           "comparison_of", "Comparison", "remove_stray_temporaries", "result_set_is_complete",
           "MANIFEST", "RESULT_FILES", "REPORT_FILES", "result_files", "result_set",
           "report_files", "removable", "manifest_bytes", "write_file_set"]

MANIFEST = "manifest.json"
#: the report's file for each of --formats
REPORT_FILES = {"md": "report.md", "html": "report.html", "tex": "tables.tex"}
#: every result file a run may write (a later run without one removes the earlier one's;
#: enumeration.csv and criteria.png only with several K, see src/output/enumeration.py;
#: the figures src.output.plots draws; other figures are found in the earlier manifest)
RESULT_FILES = ("estimates.csv", "covariance.csv", "fit.json", "posteriors.csv",
                *REPORT_FILES.values(),
                "enumeration.csv", "criteria.png", "profile.png", "scatter.png", "density.png",
                "regression.png", "posterior.png")



def _fit_json(model, record, fit, se, options, fingerprint) -> dict[str, Any]:
    from ..estimation.results import as_count
    from ..selection.criteria import approximate

    n, p, ll = as_count(fit["n_obs"]), int(fit["n_params"]), float(fit["loglik"])
    out = {
        "loglik": ll, "n_obs": n, "n_params": p,
        "aic": -2 * ll + 2 * p, "bic": -2 * ll + p * math.log(n),
        "n_iter": int(fit["n_iter"]), "converged": bool(fit["converged"]),
        "seconds": float(fit["seconds"]), "se_method": options.se_method,
        "se_primary": primary_method(se, options),
        "model": options.model, "components": options.components,
        # starts count from 1 for the user (fit["best_start"] is the 0-based index)
        "best_start": int(fit["best_start"]) + 1, "start_logliks": list(fit["start_logliks"]),
        "warnings": list(fit.get("warnings", [])),
        **starts_json(fit),
        "data": {k: record.get(k) for k in ("source", "path", "sha256", "n_rows", "columns")},
        "fingerprint": fingerprint,
    }
    if record.get("weight_column") is not None:   # n_obs is then the sum of the weights
        out["weights"] = {"column": record["weight_column"], "type": record.get("weight_type"),
                          "sum": float(record.get("weight_sum", n)),
                          "n_zero_weight": int(record.get("n_zero_weight", 0))}
        out["criteria_approximate"] = approximate(record.get("weight_type"))
    for m, r in se.items():
        extra = dict(r.get("extra", {}))
        out[f"se_{m}"] = {"notes": list(r.get("notes", [])), **extra}
        if "max_fraction_missing_info" in extra:
            out["max_fraction_missing_info"] = extra["max_fraction_missing_info"]
    return out


def write_all(model: MixtureModel, record: Mapping[str, Any], fit: Mapping[str, Any],
              se: Mapping[str, Any], options: Any, *, fingerprint: Mapping[str, Any],
              conclusions: Any = None) -> list[str]:
    """Write every result file into ``options.results_dir``; return their paths.

    One :class:`~src.progress.atomic.FileSet`: the files that need no figure (estimates,
    covariance, posteriors.csv, fit.json) are handed to its writing threads first, so they
    are written and fsynced while the report is made (and while the figures the drawing
    process is still making are waited for), then the figures and the report."""
    from .enumeration import remove_subsets

    out_dir = Path(options.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    old = removable(out_dir)
    strays = _has_temporaries(out_dir)   # (each name's pattern is compiled: only when needed)
    with FileSet(out_dir) as fset:
        files, report = _result_parts(model, record, fit, se, options, fingerprint=fingerprint,
                                      conclusions=conclusions)
        for name, data in files.items():
            fset.add(name, data)
        files.update(report_files(report(), options))
        for name, data in files.items():
            if name not in fset:
                fset.add(name, data)
        manifest = _manifest(options.task_name, files, sha256=fset.sha256)
        written = fset.commit((MANIFEST, manifest), remove=old,
                              strays=tuple(dict.fromkeys((*old, *files, MANIFEST)))
                              if strays else None)
    remove_subsets(out_dir, options.task_name, keep=())  # an earlier enumeration's k*/ folders
    return [str(p) for p in written]


def _has_temporaries(folder: Path) -> bool:
    """Whether ``folder`` holds any file named like a temporary of an interrupted write."""
    try:
        with os.scandir(folder) as entries:
            return any(e.name.startswith(TMP_PREFIX) for e in entries)
    except OSError:
        return False


def result_files(model: MixtureModel, record: Mapping[str, Any], fit: Mapping[str, Any],
                 se: Mapping[str, Any], options: Any, *, fingerprint: Mapping[str, Any],
                 sections: Sequence[Section] = (),
                 figures: Mapping[str, Any] | None = None,
                 conclusions: Any = None) -> dict[str, bytes]:
    """The result files of one fit, by name: estimates.csv, covariance.csv (with standard
    errors), fit.json, the figures, and the report in each of ``options.formats``
    (report.md, report.html, tables.tex).

    ``sections``: report sections to add (:class:`~.document.Section`, placed by their
    ``after``, see :func:`~.report.report_document`); ``figures``: ``{file name: (png,
    caption)}`` or ``{file name: Plot}``, shown in the report's "Figures" section.  Every
    figure of the report (these and any :class:`~.document.Figure` inside ``sections``) is
    written as its PNG file.  ``conclusions``: what
    :func:`src.pipeline.conclusions.conclusions_of` found (fit.json keys, report sections,
    figures, posteriors.csv).
    """
    files, doc = result_set(model, record, fit, se, options, fingerprint=fingerprint,
                            sections=sections, figures=figures, conclusions=conclusions)
    return {**files, **report_files(doc, options)}


def result_set(model: MixtureModel, record: Mapping[str, Any], fit: Mapping[str, Any],
               se: Mapping[str, Any], options: Any, *, fingerprint: Mapping[str, Any],
               sections: Sequence[Section] = (),
               figures: Mapping[str, Any] | None = None,
               conclusions: Any = None) -> tuple[dict[str, bytes], Document]:
    """:func:`result_files` in two parts: the files but the report and its figures, and the
    report as a :class:`~.document.Document` (for a caller that adds to it, as the
    enumeration does, before :func:`report_files`)."""
    files, report = _result_parts(model, record, fit, se, options, fingerprint=fingerprint,
                                  sections=sections, figures=figures, conclusions=conclusions)
    return files, report()


def _result_parts(model: MixtureModel, record: Mapping[str, Any], fit: Mapping[str, Any],
                  se: Mapping[str, Any], options: Any, *, fingerprint: Mapping[str, Any],
                  sections: Sequence[Section] = (),
                  figures: Mapping[str, Any] | None = None,
                  conclusions: Any = None) -> tuple[dict[str, bytes], Callable[[], Document]]:
    """:func:`result_set` with the report still to be made: the files, and a function making
    the report (the first to look at the figures, which the drawing process may still be
    making: :func:`src.output.plots.figures`)."""
    header, rows = estimates_rows(model, fit, se, options)
    files = {"estimates.csv": csv_bytes(header, rows)}
    cov = covariance_rows(se, options, model=model)
    if cov is not None:
        files["covariance.csv"] = csv_bytes(*cov)
    fitj = _fit_json(model, record, fit, se, options, dict(fingerprint))
    fitj.update(conclusions.json if conclusions is not None
                else interval_summary(model, se, options))
    # a phrase in the run's language: the report's, not fit.json's (the same in any --lang)
    description = fitj.pop("interval_description", None)
    shown: list[Mapping[str, Any]] = [figures or {}]
    if conclusions is not None:
        files.update(conclusions.files)
        sections = [*conclusion_sections({**fitj, "interval_description": description},
                                         report_language(options)), *sections]
        shown.insert(0, conclusions.figures)
    if "structural" in fitj:   # three-step estimation: its rows after the measurement model's
        from .structural import structural_rows
        files["estimates.csv"] = csv_bytes(header, rows + structural_rows(fitj["structural"], header))
    # keys sorted: the same bytes (but for "seconds") however the results were gathered or resumed
    files["fit.json"] = (json.dumps(fitj, indent=2, allow_nan=True, default=str, sort_keys=True)
                         + "\n").encode()

    def report() -> Document:
        figs = {k: v for part in shown for k, v in part.items()} if conclusions is not None \
            else figures
        return report_document(model, record, fit, se, options, fitj, header, rows,
                               sections=sections, figures=figs)

    return files, report


def report_files(doc: Document, options: Any) -> dict[str, bytes]:
    """The report's files: each figure's PNG (by its name), then report.md, report.html,
    tables.tex for the formats in ``options.formats`` (default md and html)."""
    formats = getattr(options, "formats", None) or ("md", "html")
    files = dict(doc.figures())
    render = {"md": to_markdown, "html": to_html, "tex": to_latex}
    for form, name in REPORT_FILES.items():
        if form in formats:
            files[name] = render[form](doc).encode("utf-8")
    return files


def removable(folder: str | Path) -> tuple[str, ...]:
    """The names a new set in ``folder`` removes when it does not write them: every name in
    :data:`RESULT_FILES`, and the figures (plain ``*.png`` names) the manifest there lists
    (an earlier run's, whichever task)."""
    names = list(RESULT_FILES)
    try:
        manifest = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
        listed = manifest.get("files") or {}
    except (OSError, ValueError, AttributeError):
        listed = {}
    if isinstance(listed, dict):
        names += sorted(n for n in listed if isinstance(n, str) and FIGURE_NAME.match(n)
                        and n not in names)
    return tuple(names)


def _manifest(task_name: str, files: Mapping[str, bytes],
              sha256: Callable[[str], str] | None = None) -> bytes:
    """The manifest of ``files``; ``sha256(name)``: their digests where already known."""
    digest = sha256 or (lambda name: sha256_bytes(files[name]))
    entries = {name: {"sha256": digest(name), "bytes": len(data)} for name, data in files.items()}
    return (json.dumps({"task_name": task_name, "files": entries}, indent=2, sort_keys=True)
            + "\n").encode()


def result_set_is_complete(folder: str | Path, task_name: str) -> bool:
    """True when ``folder`` holds a complete result set of ``task_name``: its manifest is
    there and every file it names is there with the recorded SHA-256 (a subfolder's
    manifest it names, ``k3/manifest.json``, complete in turn)."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        if manifest.get("task_name") != task_name or not manifest.get("files"):
            return False
        return all(sha256_file(folder / name) == entry["sha256"]
                   and (Path(name).name != MANIFEST or Path(name).parent == Path(".")
                        or result_set_is_complete(folder / Path(name).parent, task_name))
                   for name, entry in manifest["files"].items())
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return False


#: the manifest of a set of result files (task name, SHA-256 and size of each)
manifest_bytes = _manifest
