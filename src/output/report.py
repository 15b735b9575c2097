"""``report.md``: the run in words and tables, and the agreement of the standard-error
methods as the registry (:data:`src.inference.SE_METHODS`) says: see
:class:`src.inference.Comparison`.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from ..inference import SE_METHODS, Comparison
from ..models.registry import option_phrases

__all__ = ["disagreements", "not_comparable", "comparison_of", "report_markdown", "starts_json"]


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


def report_markdown(model, record, fit, se, options, fitj, header, rows) -> str:
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


