"""The tables of a run: ``estimates.csv`` (every reported parameter with its standard error,
z, p-value and interval) and ``covariance.csv`` (the covariance of every reported parameter,
derived ones included), as CSV bytes.

Intervals are computed here, at the level of ``--ci-level``, from the standard errors (or
the bootstrap replicates) the run stored, so another level never recomputes them:
:mod:`src.inference.intervals`.  ``z`` and ``p_value`` (two-sided, against 0) are given for
unbounded parameters only and are empty for weights, probabilities, variances and sigmas;
an estimate on the boundary (a probability of 0 or 1) has empty interval bounds.

Numbers are written at full precision (the shortest text that reads back to the same float,
Python's ``repr``), so a resumed run's files compare byte for byte with an uninterrupted run's.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any, Mapping

import numpy as np

from ..inference import SE_METHODS
from ..inference.intervals import interval_table, reported_covariance
from ..models.base import MixtureModel

__all__ = ["format_number", "estimates_rows", "covariance_rows", "csv_bytes", "primary_method",
           "interval_summary", "primary_intervals", "SE_ORDER"]

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


def primary_method(se: Mapping[str, Any], options: Any) -> str | None:
    if not se:
        return None
    if options.se_method in se:
        return options.se_method
    return options.primary_se if options.primary_se in se else next(iter(se))


def _level(options: Any) -> float:
    return float(getattr(options, "ci_level", 0.95))


def primary_intervals(model: MixtureModel, se: Mapping[str, Any],
                      options: Any) -> dict[str, Any] | None:
    """The primary method's :func:`~src.inference.intervals.interval_table` at
    ``options.ci_level`` (None without standard errors)."""
    primary = primary_method(se, options)
    if primary is None:
        return None
    return interval_table(model, se[primary], _level(options))


def interval_summary(model: MixtureModel, se: Mapping[str, Any], options: Any) -> dict[str, Any]:
    """What fit.json and the report say about the intervals of estimates.csv.

    ``{"interval_method": "wald" | "percentile" | None, "ci_level": float,
    "interval_description": a phrase in the current language (or None), "interval_notes":
    [sentences], "interval_se_method": the primary SE method (or None)}``; the method is
    None without standard errors.
    """
    table = primary_intervals(model, se, options)
    if table is None:
        return {"interval_method": None, "ci_level": _level(options), "interval_description": None,
                "interval_notes": [], "interval_se_method": None}
    return {"interval_method": table["interval_method"], "ci_level": table["ci_level"],
            "interval_description": table["description"], "interval_notes": list(table["notes"]),
            "interval_se_method": primary_method(se, options)}


def estimates_rows(model: MixtureModel, fit: Mapping[str, Any], se: Mapping[str, Any],
                   options: Any) -> tuple[list[str], list[list[str]]]:
    """Header and rows of estimates.csv.

    Columns: parameter, estimate, se, z, p_value, ci_lower, ci_upper (the primary method's,
    intervals at ``options.ci_level``), then se_<method> of every method with
    ``--se-method all``.  z and p_value are empty for bounded parameters and for parameters
    held fixed (standard error exactly 0: no test against 0); the bounds are
    empty for an estimate on the boundary, "nan" where the standard error is NaN.
    """
    params = {k: np.asarray(v) for k, v in fit["params"].items()}
    names = model.reported_names()
    values = model.reported_values(params)
    table = primary_intervals(model, se, options)
    header = ["parameter", "estimate", "se", "z", "p_value", "ci_lower", "ci_upper"]
    extra = [m for m in SE_ORDER if m in se] if options.se_method == "all" else []
    header += [f"se_{m}" for m in extra]
    rows = []
    for i, name in enumerate(names):
        row = [name, format_number(values[i])]
        if table is not None:
            bounded, edge = bool(table["bounded"][i]), bool(table["on_boundary"][i])
            row.append(format_number(table["se"][i]))
            fixed = table["se"][i] == 0   # held at its value (a reference class's coefficients)
            row += ["", ""] if bounded or fixed else [format_number(table["z"][i]),
                                                      format_number(table["p_value"][i])]
            row += ["", ""] if edge else [format_number(table["ci_lower"][i]),
                                          format_number(table["ci_upper"][i])]
        else:
            row += ["", "", "", "", ""]
        row += [format_number(np.asarray(se[m]["se"])[i]) for m in extra]
        rows.append(row)
    return header, rows


def csv_bytes(header: list[str], rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")




def covariance_rows(se: Mapping[str, Any], options: Any, *,
                    model: MixtureModel | None = None) -> tuple[list[str], list[list[str]]] | None:
    """Header and rows of covariance.csv (the primary method's), or None without SEs.

    With ``model``: every reported parameter, named as in estimates.csv, derived ones (the
    last weight, each item's last category) included: ``J C J'`` with
    ``J = model.reported_jacobian()``.  Without: the free parameters' covariance ``C``.
    Rows and columns of parameters with a NaN standard error are NaN.
    """
    primary = primary_method(se, options)
    if primary is None:
        return None
    cov = np.asarray(se[primary]["cov_free"], dtype=float)
    if model is not None:
        names = model.reported_names()
        cov = reported_covariance(model, cov)  # exactly symmetric
    else:
        names = list(se[primary]["free_names"])
        cov = 0.5 * (cov + cov.T)  # an inverse from a solver can differ from symmetric in the last bit
    # repr of a float is format_number's text (nan, inf and -0.0 included), without a call
    # per entry: the matrix has a few thousand
    return ["parameter"] + names, [[names[i]] + list(map(repr, row))
                                   for i, row in enumerate(np.asarray(cov, dtype=float).tolist())]
