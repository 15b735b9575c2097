"""Several K: the information criteria against K (``criteria.png``)."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from . import layout as L
from .spec import DRAW, Spec, render

__all__ = ["criteria_spec", "criteria_plot"]

_LABELS = {"aic": "AIC", "bic": "BIC", "sabic": "SABIC", "caic": "CAIC", "icl": "ICL"}


def criteria_spec(rows: Sequence[Mapping[str, Any]], selected: int, rule: str) -> Spec:
    """The criteria figure's :class:`~.spec.Spec` (arguments as :func:`criteria_plot`)."""
    ks = [int(r["k"]) for r in rows]
    values = {name: [float(r[name]) if r.get(name) is not None else math.nan for r in rows]
              for name in _LABELS}
    return Spec("criteria", {"ks": ks, "selected": int(selected), "rule": str(rule)},
                {name: np.array(v, dtype=float) for name, v in values.items()})


def criteria_plot(rows: Sequence[Mapping[str, Any]], selected: int, rule: str) -> bytes:
    """The information criteria against K (lower is better), the selected K marked."""
    from . import _preloaded

    _preloaded()
    return render(criteria_spec(rows, selected, rule)).png


def draw_criteria(meta: dict[str, Any], arrays: dict[str, np.ndarray]):
    yield   # (drawn in the run: nothing to do before the estimates)
    ks, selected, rule = meta["ks"], meta["selected"], meta["rule"]
    with L.style():
        fig = L.figure(6.4, 4.2)
        ax = fig.add_subplot(1, 1, 1)
        markers = "osD^v"
        for (name, label), marker in zip(_LABELS.items(), markers):
            ax.plot(ks, [float(v) for v in arrays[name]], marker=marker, label=label,
                    linewidth=1.2, markersize=4)
        ax.axvline(selected, color="0.4", linestyle="--", linewidth=1)
        ax.set_xticks(ks)
        ax.set_xlabel("number of classes K")
        ax.set_ylabel("criterion (lower is better)")
        title = f"Information criteria by K; selected K = {selected} ({rule.upper()})"
        L.title(ax, title)
        ax.legend(fontsize=8)
        L.single_axes_margins(fig, ax, title=title)
        return L.finish(fig)


DRAW["criteria"] = draw_criteria
