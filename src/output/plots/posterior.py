"""Every model: the histogram of each row's largest posterior probability (``posterior.png``)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import layout as L
from .captions import t
from .spec import DRAW, Spec

__all__ = ["posterior_histogram", "posterior_data", "posterior_spec", "posterior_plot", "BINS"]

#: bins of the histogram, from 1/K to 1
BINS = 40


def _histogram(tau: np.ndarray, weights: np.ndarray | None, bins: int = BINS
               ) -> tuple[np.ndarray, np.ndarray]:
    K = tau.shape[1]
    modal = tau.argmax(axis=1)
    top = np.take_along_axis(tau, modal[:, None], axis=1)[:, 0]
    lo = 1.0 / K if K > 1 else 0.0
    edges = np.linspace(lo, 1.0, bins + 1)
    # each value's bin by arithmetic, then moved by one where rounding put it beside its
    # bin: searchsorted's bins (edges[b] <= top < edges[b + 1]) at half its cost
    b = ((top - lo) * (bins / (1.0 - lo))).astype(np.int64)
    np.clip(b, 0, bins - 1, out=b)
    b -= (top < edges[b]) & (b > 0)
    b += (top >= edges[b + 1]) & (b < bins - 1)
    counts = np.bincount(modal * bins + b, weights=weights, minlength=K * bins)
    return edges, np.rint(counts).astype(np.int64).reshape(K, bins)


def posterior_histogram(resp: Any, bins: int = BINS) -> tuple[np.ndarray, np.ndarray]:
    """(edges (bins+1,), counts (K, bins)): every row's largest posterior probability
    binned on equal bins from 1/K (K = 1: 0) to 1, by modal class; numpy.histogram's
    convention (left-closed bins, the last one closed).  ``resp``: (n, K), or
    :class:`~src.inference.classification.Posteriors` (distinct patterns counted as often
    as they occur)."""
    from src.inference.classification import as_posteriors

    tau, weights = as_posteriors(resp).weighted()
    return _histogram(tau, weights, bins)


def posterior_data(n_rows: int, n_classes: int | None = None) -> Spec:
    """The histogram's first-stage :class:`~.spec.Spec`: how many rows and classes."""
    meta: dict[str, Any] = {"n": int(n_rows)}
    if n_classes is not None:
        meta["K"] = int(n_classes)
    return Spec("posterior", meta, {}, "", frozenset(meta))


def posterior_spec(resp: Any) -> Spec:
    """The histogram's :class:`~.spec.Spec`: the posteriors (of the distinct patterns with
    their counts, when so given) and their mean largest probability."""
    from src.inference.classification import as_posteriors

    post = as_posteriors(resp)
    n = post.n_rows
    tau, weights = post.weighted()
    top = tau.max(axis=1)
    if not n:
        mean = math.nan
    else:
        mean = float(top.mean() if weights is None else weights @ top / n)
    spec = posterior_data(n, tau.shape[1])
    spec.meta["mean"] = mean
    spec.arrays["tau"] = tau
    if weights is not None:
        spec.arrays["weights"] = weights
    spec.caption = t("plots.posterior", n=n, mean=mean)
    return spec


def posterior_plot(resp: Any) -> L.Plot:
    """Histogram of every row's largest posterior probability, stacked by modal class.

    ``resp`` (n, K) or :class:`~src.inference.classification.Posteriors`.  40 equal bins
    from 1/K (the smallest possible largest posterior) to 1 (K = 1: from 0); a dashed line
    at 0.7, the usual threshold of a clear assignment.
    """
    from .spec import render

    return render(posterior_spec(resp))


def _title(n: int, mean: float) -> str:
    return f"Largest posterior probability per row (n = {n}, mean {mean:.3f})"


def draw_posterior(meta: dict[str, Any], arrays: dict[str, np.ndarray]):
    """The histogram's two stages.  With the number of classes known in the first (``K``),
    the layout is the data's: the x range is 1/K to 1 and the left margin holds the widest
    count (1.05 n), so the first stage lays the figure out and, run ahead of the estimate
    (:func:`~.spec.ahead`), draws what does not depend on it (the axes, the x axis and its
    label); the second stage then draws the rest on that picture -- the class outlines, the
    line at 0.7, the spines, the y axis, the title and the legend, in a whole draw's order.
    Drawn at once it is drawn in the same two steps (the same bytes either way).  Counts
    whose labels are wider than the margin held for them (few rows: decimals) get the
    layout of their own ticks, drawn whole."""
    from .spec import ahead

    n, K = int(meta["n"]), meta.get("K")
    laid_out = K is not None
    picture = None
    reserve = [str(int(1.05 * max(n, 1)))]   # the widest count label
    with L.style():
        fig = L.figure(6.4, 4.2)
        ax = fig.add_subplot(1, 1, 1)
        line = ax.axvline(0.7, color="0.3", linestyle="--", linewidth=1)
        ax.set_xlabel("largest posterior probability")
        ax.set_ylabel("rows")
        L.make_ticks(ax.xaxis)
        L.make_ticks(ax.yaxis)
        if laid_out:
            L.plain_numbers(ax)
            ax.set_xlim(1.0 / int(K) if int(K) > 1 else 0.0, 1.0)
            L.single_axes_margins(fig, ax, title=_title(n, 0.0), y_texts=reserve)
            if ahead():
                picture = L.background(fig, [line, *ax.spines.values(), ax.yaxis])
    yield
    mean, tau = float(meta["mean"]), arrays["tau"]
    laid_out = laid_out and int(meta["K"]) == tau.shape[1]   # (else the x range differs)
    K = tau.shape[1]
    edges, counts = _histogram(tau, arrays.get("weights"))
    colors = L.colors(K)
    with L.style():
        bottom = np.zeros(edges.size - 1)
        steps = []
        for k in range(K):   # one filled step outline per class, stacked
            steps.append(L.filled_steps(ax, bottom + counts[k], edges, baseline=bottom.copy(),
                                        color=colors[k], label=f"class {k + 1}"))
            bottom += counts[k]
        ax.set_xlim(edges[0], 1.0)
        ax.set_ylim(0, max(float(bottom.max()), 1.0) * 1.05)
        title = _title(n, mean)
        L.title(ax, title)
        legend = ax.legend(fontsize=8, title="modal class", title_fontsize=8, loc="upper left")
        if laid_out and (L.text_size(fig, L.tick_texts(ax.yaxis), 10)[0]
                         > L.text_size(fig, reserve, 10)[0]):
            laid_out = False   # (a handful of rows: ticks with decimals)
        if not laid_out:
            L.single_axes_margins(fig, ax, title=title)
            return L.finish(fig)
        later = [*steps, line, *ax.spines.values(), ax.yaxis, ax.title, legend]
        if picture is None:   # drawn at once: the same two steps
            picture = L.background(fig, later)
        return L.finish_over(fig, picture, later)


DRAW["posterior"] = draw_posterior
