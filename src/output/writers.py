"""Result files of a run: ``estimates.csv``, ``covariance.csv`` (:mod:`.estimates`),
``fit.json`` (here), ``report.md`` (:mod:`.report`).

A resumed run's files compare byte for byte with an uninterrupted run's, ``fit.json`` (keys
sorted) but for its ``seconds``.  The files of one run appear together or not at all: they are written as one
set (``write_file_set``) with ``manifest.json`` last, naming each file's SHA-256 and the
task, so a reader can tell a complete set (:func:`result_set_is_complete`); temporaries an
interrupted earlier write of these files left behind are removed first.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

from ..inference import Comparison
from ..models.base import MixtureModel
from ..progress.atomic import remove_stray_temporaries, sha256_bytes, sha256_file, write_file_set
from .estimates import covariance_rows, csv_bytes, estimates_rows, format_number, primary_method
from .report import comparison_of, disagreements, not_comparable, report_markdown, starts_json

__all__ = ["write_all", "format_number", "estimates_rows", "disagreements", "not_comparable",
           "comparison_of", "Comparison", "remove_stray_temporaries", "result_set_is_complete",
           "MANIFEST", "RESULT_FILES", "result_files", "manifest_bytes"]

MANIFEST = "manifest.json"
#: every result file a run may write (a later run without one removes the earlier one's;
#: the last two only with several K, see src/output/enumeration.py)
RESULT_FILES = ("estimates.csv", "covariance.csv", "fit.json", "report.md", "enumeration.csv",
                "criteria.png")



def _fit_json(model, record, fit, se, options, fingerprint) -> dict[str, Any]:
    n, p, ll = int(fit["n_obs"]), int(fit["n_params"]), float(fit["loglik"])
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
    for m, r in se.items():
        extra = dict(r.get("extra", {}))
        out[f"se_{m}"] = {"notes": list(r.get("notes", [])), **extra}
        if "max_fraction_missing_info" in extra:
            out["max_fraction_missing_info"] = extra["max_fraction_missing_info"]
    return out


def write_all(model: MixtureModel, record: Mapping[str, Any], fit: Mapping[str, Any],
              se: Mapping[str, Any], options: Any, *, fingerprint: Mapping[str, Any]) -> list[str]:
    """Write every result file into ``options.results_dir``; return their paths."""
    from .enumeration import remove_subsets

    out_dir = Path(options.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stray_temporaries(out_dir, (*RESULT_FILES, MANIFEST))
    files = result_files(model, record, fit, se, options, fingerprint=fingerprint)
    manifest = _manifest(options.task_name, files)
    written = write_file_set(out_dir, files, manifest=(MANIFEST, manifest), remove=RESULT_FILES)
    remove_subsets(out_dir, options.task_name, keep=())  # an earlier enumeration's k*/ folders
    return [str(p) for p in written]


def result_files(model: MixtureModel, record: Mapping[str, Any], fit: Mapping[str, Any],
                 se: Mapping[str, Any], options: Any, *,
                 fingerprint: Mapping[str, Any]) -> dict[str, bytes]:
    """The result files of one fit, by name: estimates.csv, covariance.csv (with standard
    errors), fit.json, report.md."""
    header, rows = estimates_rows(model, fit, se, options)
    files = {"estimates.csv": csv_bytes(header, rows)}
    cov = covariance_rows(se, options)
    if cov is not None:
        files["covariance.csv"] = csv_bytes(*cov)
    fitj = _fit_json(model, record, fit, se, options, dict(fingerprint))
    # keys sorted: the same bytes (but for "seconds") however the results were gathered or resumed
    files["fit.json"] = (json.dumps(fitj, indent=2, allow_nan=True, default=str, sort_keys=True)
                         + "\n").encode()
    files["report.md"] = report_markdown(model, record, fit, se, options, fitj, header, rows).encode()
    return files


def _manifest(task_name: str, files: Mapping[str, bytes]) -> bytes:
    entries = {name: {"sha256": sha256_bytes(data), "bytes": len(data)} for name, data in files.items()}
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
