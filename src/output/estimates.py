"""The tables of a run: ``estimates.csv`` (every reported parameter with its standard error
and interval) and ``covariance.csv`` (the free parameters' covariance), as CSV bytes.

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
from ..models.base import MixtureModel

__all__ = ["format_number", "estimates_rows", "covariance_rows", "csv_bytes", "primary_method",
           "SE_ORDER"]

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


def estimates_rows(model: MixtureModel, fit: Mapping[str, Any], se: Mapping[str, Any],
                   options: Any) -> tuple[list[str], list[list[str]]]:
    """Header and rows of estimates.csv."""
    params = {k: np.asarray(v) for k, v in fit["params"].items()}
    names = model.reported_names()
    values = model.reported_values(params)
    primary = primary_method(se, options)
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


def csv_bytes(header: list[str], rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")




def covariance_rows(se: Mapping[str, Any], options: Any) -> tuple[list[str], list[list[str]]] | None:
    """Header and rows of covariance.csv (the primary method's), or None without SEs."""
    primary = primary_method(se, options)
    if primary is None:
        return None
    names = list(se[primary]["free_names"])
    cov = np.asarray(se[primary]["cov_free"], dtype=float)
    cov = 0.5 * (cov + cov.T)  # an inverse from a solver can differ from symmetric in the last bit
    return ["parameter"] + names, [[names[i]] + [format_number(v) for v in cov[i]]
                                   for i in range(len(names))]
