"""Figures of a run, drawn headless (matplotlib's Agg canvas; pyplot is never imported, so
no backend is chosen for the caller) and returned as PNG bytes.

The PNG carries no date and no software version (``metadata``), so the same numbers give the
same bytes: a resumed run's ``criteria.png`` is byte-identical to an uninterrupted run's.
"""

from __future__ import annotations

import io
import math
from typing import Any, Mapping, Sequence

__all__ = ["criteria_plot"]

_LABELS = {"aic": "AIC", "bic": "BIC", "sabic": "SABIC", "caic": "CAIC", "icl": "ICL"}


def criteria_plot(rows: Sequence[Mapping[str, Any]], selected: int, rule: str) -> bytes:
    """The information criteria against K (lower is better), the selected K marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ks = [int(r["k"]) for r in rows]
    fig = Figure(figsize=(6.4, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    markers = "osD^v"
    for (name, label), marker in zip(_LABELS.items(), markers):
        ys = [float(r[name]) if r.get(name) is not None else math.nan for r in rows]
        ax.plot(ks, ys, marker=marker, label=label, linewidth=1.2, markersize=4)
    ax.axvline(selected, color="0.4", linestyle="--", linewidth=1)
    ax.set_xticks(ks)
    ax.set_xlabel("number of classes K")
    ax.set_ylabel("criterion (lower is better)")
    ax.set_title(f"Information criteria by K; selected K = {selected} ({rule.upper()})",
                 fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
