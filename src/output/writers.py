"""Result files of a run: ``estimates.csv``, ``covariance.csv``, ``fit.json``, ``report.md``.

Numbers are written at full precision (the shortest text that reads back to the same
float, Python's ``repr``), so a resumed run's ``estimates.csv`` can be compared byte for
byte with an uninterrupted run's, and ``fit.json`` (keys sorted) likewise but for its
``seconds``.  The files of one run appear together or not at all: they are written as one
set (``write_file_set``) with ``manifest.json`` last, naming each file's SHA-256 and the
task, so a reader can tell a complete set (:func:`result_set_is_complete`); temporaries an
interrupted earlier write of these files left behind are removed first.

The report's agreement section compares the standard-error methods as the registry
(:data:`src.inference.SE_METHODS`) says: see :class:`src.inference.Comparison`.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..inference import SE_METHODS, Comparison
from ..models.base import MixtureModel
from ..models.registry import option_phrases
from ..progress.atomic import remove_stray_temporaries, sha256_bytes, sha256_file, write_file_set

__all__ = ["write_all", "format_number", "estimates_rows", "disagreements", "not_comparable",
           "comparison_of", "Comparison", "remove_stray_temporaries", "result_set_is_complete",
           "MANIFEST", "RESULT_FILES", "result_files", "manifest_bytes"]

MANIFEST = "manifest.json"
#: every result file a run may write (a later run without one removes the earlier one's;
#: the last two only with several K, see src/output/enumeration.py)
RESULT_FILES = ("estimates.csv", "covariance.csv", "fit.json", "report.md", "enumeration.csv",
                "criteria.png")

#: standard-error methods in the order the registry lists them (columns se_<method>)
SE_ORDER = tuple(SE_METHODS)


def format_number(x: Any) -> str:
    """Shortest round-trip text of a float; empty for None."""
    if x is None:
        return ""
    f = float(x)
    if math.isnan(f):
        return "nan"
    return repr(f)


def _primary(se: Mapping[str, Any], options: Any) -> str | None:
    if not se:
        return None
    if options.se_method in se:
        return options.se_method
    return options.primary_se if options.primary_se in se else next(iter(se))


def estimates_rows(model: MixtureModel, fit: Mapping[str, Any], se: Mapping[str, Any],
                   options: Any) -> tuple[list[str], list[list[str]]]:
    """Header and rows of estimates.csv."""
    params = {k: np.asarray(v) for k, v in fit["params"].items()}
    names = model.reported_names()
    values = model.reported_values(params)
    primary = _primary(se, options)
    header = ["parameter", "estimate", "se", "ci_lower", "ci_upper"]
    extra = [m for m in SE_ORDER if m in se] if options.se_method == "all" else []
    header += [f"se_{m}" for m in extra]
    rows = []
    for i, name in enumerate(names):
        row = [name, format_number(values[i])]
        if primary is not None:
            p = se[primary]
            row += [format_number(np.asarray(p["se"])[i]), format_number(np.asarray(p["ci_lower"])[i]),
                    format_number(np.asarray(p["ci_upper"])[i])]
        else:
            row += ["", "", ""]
        row += [format_number(np.asarray(se[m]["se"])[i]) for m in extra]
        rows.append(row)
    return header, rows


def _csv_bytes(header: list[str], rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


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


def _listed(words: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


_COUNT_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


def _agreement_heading(se: Mapping[str, Any], methods: Mapping[str, Any] | None = None) -> str:
    n = len(_compared(se, methods))
    return f"## Agreement of the {_COUNT_WORDS.get(n, str(n))} standard errors"


def _agreement(se: Mapping[str, Any], options: Any,
               methods: Mapping[str, Any] | None = None) -> list[str]:
    """The report's lines on agreement: disagreements, parameters not comparable, and a
    claim of agreement only for the parameters that were compared."""
    compared = _compared(se, methods)
    if not compared:
        return []
    dis = disagreements(se, options, methods)
    nan = not_comparable(se, methods)
    ref = next((m for m, c in compared if c.reference), None)
    total = len(se[ref]["names"]) if ref is not None else 0
    lines = [f"- {d}" for d in dis]
    if nan:
        lines.append(f"Not comparable (a standard error is NaN in at least one method): {', '.join(nan)}.")
    if not dis:
        who = _listed([c.label for _, c in compared])
        within = ("Monte-Carlo error" if any(c.monte_carlo for _, c in compared)
                  else "their relative tolerance")
        if not nan:
            lines.append(f"{who} standard errors agree within {within}.")
        elif total > len(nan):
            lines.append(f"{who} standard errors agree within {within} "
                         f"for the other {total - len(nan)} parameters.")
    return lines


def _fit_json(model, record, fit, se, options, fingerprint) -> dict[str, Any]:
    n, p, ll = int(fit["n_obs"]), int(fit["n_params"]), float(fit["loglik"])
    out = {
        "loglik": ll, "n_obs": n, "n_params": p,
        "aic": -2 * ll + 2 * p, "bic": -2 * ll + p * math.log(n),
        "n_iter": int(fit["n_iter"]), "converged": bool(fit["converged"]),
        "seconds": float(fit["seconds"]), "se_method": options.se_method,
        "se_primary": _primary(se, options),
        "model": options.model, "components": options.components,
        # starts count from 1 for the user (fit["best_start"] is the 0-based index)
        "best_start": int(fit["best_start"]) + 1, "start_logliks": list(fit["start_logliks"]),
        "warnings": list(fit.get("warnings", [])),
        **_starts_json(fit),
        "data": {k: record.get(k) for k in ("source", "path", "sha256", "n_rows", "columns")},
        "fingerprint": fingerprint,
    }
    for m, r in se.items():
        extra = dict(r.get("extra", {}))
        out[f"se_{m}"] = {"notes": list(r.get("notes", [])), **extra}
        if "max_fraction_missing_info" in extra:
            out["max_fraction_missing_info"] = extra["max_fraction_missing_info"]
    return out


def _starts_json(fit: Mapping[str, Any]) -> dict[str, Any]:
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


def _search_lines(fitj: Mapping[str, Any], options: Any) -> list[str]:
    """The report's lines on the starts: how they were found, replication, degenerate ones."""
    search, rep, flags = fitj.get("search") or {}, fitj.get("replication") or {}, fitj.get("flags") or {}
    n_starts = int(search.get("n_starts", options.n_starts))
    if search.get("n_candidates"):
        how = (f"the best {n_starts} of {search['n_candidates']} candidate starts (hierarchical, "
               f"k-means++, random, random partitions; {search['candidate_iter']} EM iterations "
               f"each) run to convergence")
    else:
        how = f"{n_starts} random starts run to convergence"
    if search.get("n_extra"):
        how += f", plus {search['n_extra']} given starting values"
    lines = [f"- Starts: {how}; the chosen one is start {fitj['best_start']}"]
    if rep:
        maxima = ", ".join(f"{ll:.6f} ({c})" for ll, c in rep.get("maxima", [])[:6])
        more = len(rep.get("maxima", [])) - 6
        pool = "" if rep.get("pool") != "all" else " (every start degenerate: all compared)"
        lines.append(f"- Best log-likelihood {rep['best_loglik']:.6f} reached by {rep['n_reached']} "
                     f"of {rep['n_pool']} starts{pool} (within {rep['tol']:.3g}); distinct maxima "
                     f"(starts): {maxima}" + (f", and {more} more" if more > 0 else ""))
    if flags:
        lines.append("- Degenerate starts (never chosen while a proper one exists), by kind: "
                     + ", ".join(f"{k} {v}" for k, v in sorted(flags.items())))
    return lines


def _report(model, record, fit, se, options, fitj, header, rows) -> str:
    lines = [f"# Estimation report: {options.task_name}", "",
             f"- Data: {record.get('source')} ({fitj['n_obs']} rows, columns {', '.join(record.get('columns') or [])})",
             f"- Model: {options.model} with {options.components} classes"
             + "".join(f", {p}" for p in option_phrases(model)),
             f"- Log-likelihood: {fitj['loglik']:.6f}; AIC {fitj['aic']:.4f}; BIC {fitj['bic']:.4f} (lower is better)",
             f"- EM: {fitj['n_iter']} iterations, {'converged' if fitj['converged'] else 'NOT converged'}"
             f" (tol {options.tol}, acceleration {options.accelerate})",
             *_search_lines(fitj, options),
             f"- Standard errors: {options.se_method}", ""]
    lines[3:3] = [f"  - {note}" for note in record.get("notes") or []]  # how the file was read
    for w in fitj["warnings"]:
        lines.append(f"> Warning: {w}")
    for m, r in se.items():
        for note in r.get("notes", []):
            lines.append(f"> {m}: {note}")
    if "max_fraction_missing_info" in fitj:
        lines.append(f"- Largest fraction of missing information: {fitj['max_fraction_missing_info']:.4f}")
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(_short(c) for c in row) + " |")
    if options.se_method == "all" and len(_compared(se, None)) > 1:
        lines += ["", _agreement_heading(se), ""]
        lines += _agreement(se, options)
    lines += ["", "Classes are in the model's canonical order (see docs/architecture.md)."]
    return "\n".join(lines) + "\n"


def _short(cell: str) -> str:
    try:
        return f"{float(cell):.6g}"
    except ValueError:
        return cell


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
    files = {"estimates.csv": _csv_bytes(header, rows)}
    primary = _primary(se, options)
    if primary is not None:
        names = list(se[primary]["free_names"])
        cov = np.asarray(se[primary]["cov_free"], dtype=float)
        cov = 0.5 * (cov + cov.T)  # an inverse from a solver can differ from symmetric in the last bit
        crow = [[names[i]] + [format_number(v) for v in cov[i]] for i in range(len(names))]
        files["covariance.csv"] = _csv_bytes(["parameter"] + names, crow)
    fitj = _fit_json(model, record, fit, se, options, dict(fingerprint))
    # keys sorted: the same bytes (but for "seconds") however the results were gathered or resumed
    files["fit.json"] = (json.dumps(fitj, indent=2, allow_nan=True, default=str, sort_keys=True)
                         + "\n").encode()
    files["report.md"] = _report(model, record, fit, se, options, fitj, header, rows).encode()
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
