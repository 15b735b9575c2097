"""Figures of a run, drawn headless (matplotlib's Agg canvas; pyplot is never imported, so
no backend is chosen for the caller) and returned as PNG bytes.

The PNG carries no date and no software version (``metadata``), and every figure is drawn
under matplotlib's default settings (a user's ``matplotlibrc`` is ignored), so the same
numbers give the same bytes: a resumed run's figures are byte-identical to an uninterrupted
run's.  Figure text is English (the bundled font has no Chinese glyphs; a CJK font, when
installed, is used for column and item names); captions follow ``--lang``.

One call gives every figure of a fit: :func:`figures` ``(model, data, params, resp)`` ->
``{file name: Plot}``.  Which figures a model gets is what its family declares,
``MixtureModel.figures`` (as it declares its summaries), each name one entry of
:data:`FIGURES` and one file ``<name>.png``:

==============  =======================================================================
``profile``     item-response probabilities by class (``LatentClassModel``: its
                summary ``response_patterns`` implies it)
``scatter``     pairwise scatter with each component's ellipse (Gaussian mixtures of 2+
                columns)
``density``     the one column's histogram with the mixture density (one column)
``regression``  the data with each class's line (mixtures of regressions)
every model     ``posterior.png``: histogram of the largest posterior probability per row
==============  =======================================================================

A figure that does not apply to the data (``scatter`` of one column) is left out.

Speed (issue 10's budget for all outputs): margins are fixed from the figure's size and
the measured width of its tick labels, titles and legends (no ``tight_layout``, which lays
every tick out once more); points are drawn as markers of one colour per class in
interleaved random batches (Agg stamps a marker; a scatter collection rasterises each
point); the scatter matrix puts ticks on the outer panels only, as R's ``pairs()``.
:func:`preload` imports matplotlib in a background thread while the fit runs.

Large data: histograms and densities use every row; scatter plots draw at most
:data:`MAX_POINTS` rows, a fixed random subset (``src.utils.rng.stream(0,
"plot-points")``, so always the same rows for the same n) drawn in random order so no
class hides another; lines, ellipses and axis ranges come from the parameters and all rows.
"""

from __future__ import annotations

import contextlib
import io
import math
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from src.inference.classification import Posteriors, as_posteriors
from src.utils.messages import register, t
from src.utils.rng import stream

__all__ = ["criteria_plot", "Plot", "figures", "FIGURES", "profile_plot", "scatter_plot",
           "density_plot", "regression_plot", "posterior_plot", "posterior_histogram",
           "ellipse_geometry", "subsample", "covariances", "preload", "MAX_POINTS", "MAX_COLUMNS",
           "ELLIPSE_LEVEL", "DPI"]

_LABELS = {"aic": "AIC", "bic": "BIC", "sabic": "SABIC", "caic": "CAIC", "icl": "ICL"}

#: most rows drawn in a scatter plot
MAX_POINTS = 5000
#: most columns in the GMM scatter matrix (the first ones)
MAX_COLUMNS = 6
#: probability mass inside each component's ellipse (in the plane of the two columns)
ELLIPSE_LEVEL = 0.95
#: pixels per inch of every figure: a figure of w x h inches is (w * DPI) x (h * DPI) pixels
DPI = 100
#: widest figure (inches): many items make narrow bars rather than a huge image
_MAX_WIDTH = 24.0
#: fonts with Chinese glyphs, used after DejaVu Sans when installed
_CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Zen Hei",
              "WenQuanYi Micro Hei", "SimHei", "Microsoft YaHei", "PingFang SC", "Heiti SC")

register({
    "plots.profile_binary": {
        "en": "Item-response profile: for each item the probability of its second category "
              "({what}), one line per class.",
        "zh": "题目反应概况：每个题目取第二个类别（{what}）的概率，每个类别一条线。"},
    "plots.profile_stacked": {
        "en": "Item-response profile: one panel per class; each bar stacks an item's "
              "category probabilities in the item's category order.",
        "zh": "题目反应概况：每个潜在类别一个面板；每根柱子按题目的类别顺序堆叠各类别的概率。"},
    "plots.scatter": {
        "en": "Pairwise scatter plots of the data coloured by modal class, with each "
              "component's mean (x) and ellipse holding {level:.0%} of its mass{columns}; "
              "on the diagonal, each column's histogram with the weighted component densities.",
        "zh": "按众数类别着色的数据两两散点图，标出每个分量的均值（x）和包含其 {level:.0%} "
              "概率质量的椭圆{columns}；对角线为各列的直方图及加权分量密度。"},
    "plots.scatter_columns": {
        "en": " (the first {shown} of {total} columns)",
        "zh": "（{total} 列中的前 {shown} 列）"},
    "plots.density": {
        "en": "Histogram of {column} (all {n} rows) with the mixture density (black) and "
              "each weighted component (coloured).",
        "zh": "{column} 的直方图（全部 {n} 行），以及混合密度（黑色）和各加权分量（彩色）。"},
    "plots.regression_line": {
        "en": "{target} against {predictor}, coloured by modal class, with each class's "
              "regression line.",
        "zh": "{target} 对 {predictor} 的散点图，按众数类别着色，并画出每个类别的回归线。"},
    "plots.regression_fitted": {
        "en": "Observed {target} against its fitted value under the row's modal class, "
              "coloured by that class; the diagonal is observed = fitted.",
        "zh": "观测的 {target} 对其在所属众数类别下的拟合值，按该类别着色；对角线为观测值 = 拟合值。"},
    "plots.regression_density": {
        "en": "Histogram of {target} (all {n} rows) with the mixture density (black) and "
              "each class's weighted normal density (coloured).",
        "zh": "{target} 的直方图（全部 {n} 行），以及混合密度（黑色）和各类别的加权正态密度（彩色）。"},
    "plots.posterior": {
        "en": "Largest posterior class probability of each of the {n} rows, stacked by modal "
              "class (mean {mean:.3f}); the dashed line marks 0.7.",
        "zh": "{n} 行中每行最大的后验类别概率，按众数类别堆叠（平均 {mean:.3f}）；虚线标出 0.7。"},
    "plots.subsample": {
        "en": " Points: a fixed random {shown} of the {total} rows.",
        "zh": " 散点：{total} 行中固定随机抽取的 {shown} 行。"},
})


@dataclass(frozen=True)
class Plot:
    """One figure: its PNG bytes, a one-paragraph caption (current language), pixel size."""

    png: bytes
    caption: str
    width: int
    height: int


# --------------------------------------------------------------- background import
_PRELOAD: threading.Thread | None = None
_PRELOAD_LOCK = threading.Lock()


#: what the first figure imports (Figure, the Agg canvas, fonts and their cache, artists,
#: tickers, savefig's PNG writer)
_PRELOAD_MODULES = ("matplotlib.figure", "matplotlib.backends.backend_agg",
                    "matplotlib.font_manager", "matplotlib.lines", "matplotlib.patches",
                    "matplotlib.ticker", "PIL.Image", "PIL.PngImagePlugin")


def _import_matplotlib() -> None:
    """Import :data:`_PRELOAD_MODULES`; a failure is left for the drawing to report."""
    import importlib

    for name in _PRELOAD_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # pragma: no cover - drawing raises it again, in the main thread
            return


def preload() -> threading.Thread:
    """Start importing matplotlib in a daemon thread (once per process) and return it.

    A run with plots calls this as the fit starts (:mod:`src.pipeline.tracked`; after the
    data are read, which holds the GIL): the import (0.3-1 s) then runs on the second core
    while the fit works in NumPy, which releases the GIL, and :func:`figures` finds
    matplotlib imported (Gaussian mixtures at N = 1e5: the fit no slower, measured).  A fit
    that holds the GIL (LCA's EM on a few hundred answer patterns is Python-bound) is
    delayed by about the import instead: the import leaves ``result_output`` but the run
    takes as long as without.  Nothing is drawn or configured in the thread;
    :func:`figures` and :func:`criteria_plot` wait for it before drawing."""
    global _PRELOAD
    with _PRELOAD_LOCK:
        if _PRELOAD is None:
            _PRELOAD = threading.Thread(target=_import_matplotlib, name="plots-preload",
                                        daemon=True)
            _PRELOAD.start()
        return _PRELOAD


def _preloaded() -> None:
    """Wait for :func:`preload`'s thread, if one was started (no import runs twice)."""
    thread = _PRELOAD
    if thread is not None and thread is not threading.current_thread():
        thread.join()


# ------------------------------------------------------------------ drawing helpers
@contextlib.contextmanager
def _style() -> Iterator[None]:
    """matplotlib's defaults (whatever the user's matplotlibrc), plus CJK fonts if present."""
    import matplotlib
    from matplotlib import font_manager

    rc = {k: v for k, v in matplotlib.rcParamsDefault.items() if k != "backend"}
    installed = {f.name for f in font_manager.fontManager.ttflist}
    rc["font.family"] = ["sans-serif"]
    rc["font.sans-serif"] = ["DejaVu Sans"] + [f for f in _CJK_FONTS if f in installed]
    with matplotlib.rc_context(rc), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from")
        yield


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _finish(fig: Any, caption: str) -> Plot:
    """Render to PNG without date or software, and wrap with the caption (the figure's
    margins are already set, :func:`_margins`)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    w, h = fig.get_size_inches()
    return Plot(buf.getvalue(), caption, int(round(w * DPI)), int(round(h * DPI)))


# ------------------------------------------------------------------ fixed margins
#: points per inch
_PT = 72.0
#: space (inches) kept free at every edge of the figure beyond the text
_EDGE = 0.1


def _text_size(fig: Any, texts: Sequence[str], size: float) -> tuple[float, float]:
    """Largest width and height (inches) of the lines of ``texts`` at ``size`` points in the
    current font (the figure's own renderer, so the numbers are what is drawn)."""
    from matplotlib.font_manager import FontProperties

    renderer = fig.canvas.get_renderer()
    prop = FontProperties(size=size)
    # a line's height is at least that of tall and descending letters (a text of digits or
    # lower-case letters only would measure shorter than the line matplotlib lays out)
    _, height, _ = renderer.get_text_width_height_descent("Ag|", prop, ismath=False)
    width = 0.0
    for text in texts:
        for line in str(text).split("\n"):
            if line:
                w, h, _ = renderer.get_text_width_height_descent(line, prop, ismath=False)
                width, height = max(width, w), max(height, h)
    return width / fig.dpi, height / fig.dpi


def _tick_texts(axis: Any) -> list[str]:
    """The major tick labels ``axis`` will show (its locator and formatter on its limits)."""
    if not axis.get_tick_params().get("label1On", True):
        return []
    lo, hi = sorted(axis.get_view_interval())
    eps = 1e-9 * max(hi - lo, 1e-300)
    locs = [v for v in axis.get_majorticklocs() if lo - eps <= v <= hi + eps]
    return [s for s in axis.get_major_formatter().format_ticks(locs)]


def _tick_room(fig: Any, axis: Any, size: float, across: bool) -> float:
    """Inches the tick marks and labels of ``axis`` take from the axes' edge: label widths
    (``across``: a y axis) or heights, plus tick length and pad (matplotlib's defaults)."""
    texts = _tick_texts(axis)
    w, h = _text_size(fig, texts, size)
    label = (w if across else h) if texts else 0.0
    return label + (3.5 + 3.5) / _PT


def _label_room(fig: Any, text: str, size: float) -> float:
    """Inches an axis label takes (its height plus matplotlib's 4-point label pad)."""
    return (_text_size(fig, [text], size)[1] * max(1, str(text).count("\n") + 1)
            + 4.0 / _PT) if text else 0.0


def _margins(fig: Any, *, left: float, right: float, bottom: float, top: float,
             wspace: float | None = None, hspace: float | None = None) -> None:
    """Place the subplot grid with margins given in inches (plus :data:`_EDGE`)."""
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=(left + _EDGE) / w, right=1.0 - (right + _EDGE) / w,
                        bottom=(bottom + _EDGE) / h, top=1.0 - (top + _EDGE) / h,
                        wspace=wspace, hspace=hspace)


def _single_axes_margins(fig: Any, ax: Any, *, title: str = "", title_size: float = 10,
                         right: float = 0.15, tick_size: float = 10,
                         x_rotated: bool = False, x_tick_size: float | None = None) -> None:
    """Margins of a one-panel figure from its tick labels, axis labels and title."""
    x_size = tick_size if x_tick_size is None else x_tick_size
    left = _tick_room(fig, ax.yaxis, tick_size, True) + _label_room(fig, ax.get_ylabel(), 10)
    if x_rotated:   # labels at 45 degrees, anchored at their right end
        w, h = _text_size(fig, _tick_texts(ax.xaxis), x_size)
        bottom = math.sqrt(0.5) * (w + h) + 7.0 / _PT
        left = max(left, math.sqrt(0.5) * (w + h) - 0.3)
    else:
        bottom = _tick_room(fig, ax.xaxis, x_size, False)
    bottom += _label_room(fig, ax.get_xlabel(), 10)
    lines = title.count("\n") + 1 if title else 0
    top = (_text_size(fig, [title], title_size)[1] * 1.2 * lines + 6.0 / _PT) if title else 0.1
    _margins(fig, left=left, right=max(right, 0.2), bottom=bottom, top=top)


def _legend_width(fig: Any, legend: Any) -> float:
    """The drawn width (inches) of ``legend``."""
    return legend.get_window_extent(fig.canvas.get_renderer()).width / fig.dpi


def _inner_ticks(lo: float, hi: float) -> Any:
    """At most 4 round ticks on [lo, hi], none in the outer 10% at either end (the labels of
    neighbouring panels of a scatter matrix would run into each other)."""
    from matplotlib.ticker import FixedLocator, MaxNLocator

    ticks = MaxNLocator(4).tick_values(lo, hi)
    pad = 0.1 * (hi - lo)
    inner = [float(v) for v in ticks if lo + pad <= v <= hi - pad]
    if len(inner) < 2:
        inner = [float(v) for v in ticks if lo <= v <= hi]
    return FixedLocator(inner)


def _points(ax: Any, x: np.ndarray, y: np.ndarray, groups: np.ndarray, colors: Sequence[Any],
            size: float, alpha: float = 0.6, batches: int = 8) -> None:
    """Points coloured by group as markers (one Line2D per group and batch): the rows come in
    ``batches`` consecutive batches of the (random) order given, each drawn group by group,
    so no group lies wholly on top of another.  ``size``: marker area (points^2)."""
    n = x.size
    bounds = np.linspace(0, n, min(batches, max(n, 1)) + 1).astype(int)
    diameter = math.sqrt(size)
    for a, b in zip(bounds[:-1], bounds[1:]):
        g = groups[a:b]
        for k, color in enumerate(colors):
            sel = np.flatnonzero(g == k) + a
            if sel.size:
                ax.plot(x[sel], y[sel], linestyle="none", marker="o", markersize=diameter,
                        markeredgewidth=0, color=color, alpha=alpha)


def _colors(K: int) -> list[tuple[float, ...]]:
    """One colour per class: tab10 up to 10 classes, tab20 up to 20, then turbo."""
    import matplotlib

    if K <= 10:
        cmap = matplotlib.colormaps["tab10"]
        return [cmap(k) for k in range(K)]
    if K <= 20:
        cmap = matplotlib.colormaps["tab20"]
        return [cmap(k) for k in range(K)]
    cmap = matplotlib.colormaps["turbo"]
    return [cmap(k / (K - 1)) for k in range(K)]


def _class_label(k: int, weight: Sequence[float]) -> str:
    return f"class {k + 1} ({100 * float(weight[k]):.1f}%)"


def _n_bins(n: int) -> int:
    """Rice's rule, 2 n^(1/3), kept within 10..100."""
    return int(min(100, max(10, math.ceil(2 * max(n, 1) ** (1 / 3)))))


def _range(x: np.ndarray) -> tuple[float, float]:
    """The data's range widened by 5% each side (a constant column: +-1)."""
    lo, hi = float(np.min(x)), float(np.max(x))
    pad = 0.05 * (hi - lo) if hi > lo else 1.0
    return lo - pad, hi + pad


def _ellipse_range(x: np.ndarray, means: np.ndarray, variances: np.ndarray,
                   level: float = ELLIPSE_LEVEL) -> tuple[float, float]:
    """An axis range holding the data and every component's ellipse (its shadow on this axis
    is mean +- r sd, r^2 = -2 log(1 - level)), widened by 5% each side; an ellipse may push
    the range at most half the data's range beyond the data (a flat component stays cut)."""
    lo, hi = float(np.min(x)), float(np.max(x))
    span = hi - lo if hi > lo else 1.0
    r = math.sqrt(-2.0 * math.log1p(-level))
    sd = np.sqrt(np.clip(np.asarray(variances, dtype=float), 0.0, None))
    e_lo = float(np.min(np.asarray(means, dtype=float) - r * sd))
    e_hi = float(np.max(np.asarray(means, dtype=float) + r * sd))
    lo, hi = min(lo, max(e_lo, lo - 0.5 * span)), max(hi, min(e_hi, hi + 0.5 * span))
    pad = 0.05 * (hi - lo) if hi > lo else 1.0
    return lo - pad, hi + pad


def _normal_pdf(x: np.ndarray, mean: float, sd: float) -> np.ndarray:
    z = (x - mean) / sd
    return np.exp(-0.5 * z * z) / (sd * math.sqrt(2 * math.pi))


def subsample(n: int, max_points: int = MAX_POINTS) -> np.ndarray:
    """Row indices drawn in a scatter plot: all n rows (n <= max_points) or max_points of
    them, in a random order fixed by ``stream(0, "plot-points")`` (the same for the same n)."""
    rng = stream(0, "plot-points")
    if n <= max_points:
        return rng.permutation(n)
    return rng.choice(n, size=max_points, replace=False)


def _marker_size(shown: int) -> float:
    """Scatter marker area (points^2): larger for few points, small for thousands."""
    return 14.0 if shown <= 500 else 7.0 if shown <= 2000 else 3.0


def _subsample_note(n: int, shown: int) -> str:
    return t("plots.subsample", shown=shown, total=n) if shown < n else ""


def ellipse_geometry(cov: np.ndarray, level: float = ELLIPSE_LEVEL) -> tuple[float, float, float]:
    """(width, height, angle in degrees) of the ellipse ``(x-m)' cov^-1 (x-m) <= r^2`` that
    holds ``level`` of a bivariate normal's mass, as ``matplotlib.patches.Ellipse`` takes them.

    ``r^2 = -2 log(1 - level)`` (the chi-square quantile with 2 degrees of freedom: 5.99 at
    0.95, i.e. 2.45 standard deviations along each principal axis).  Closed form for a 2 x 2
    covariance ``[[a, b], [b, c]]``: eigenvalues ``(a+c)/2 +- sqrt(((a-c)/2)^2 + b^2)``,
    the larger one's axis at ``atan2(2b, a-c) / 2``; width = 2 r sqrt(larger eigenvalue).
    """
    cov = np.asarray(cov, dtype=float)
    a, b, c = float(cov[0, 0]), float(cov[0, 1]), float(cov[1, 1])
    r2 = -2.0 * math.log1p(-level)
    mid, rad = 0.5 * (a + c), math.hypot(0.5 * (a - c), b)
    big, small = mid + rad, max(mid - rad, 0.0)
    angle = 0.5 * math.degrees(math.atan2(2.0 * b, a - c))
    return 2.0 * math.sqrt(r2 * big), 2.0 * math.sqrt(r2 * small), angle


# --------------------------------------------------------------------------- LCA
def profile_plot(prob: np.ndarray, weight: np.ndarray, items: Sequence[str],
                 categories: Sequence[Sequence[str]]) -> Plot:
    """Item-response profile of a latent class model.

    ``prob`` (K, J, Cmax) as ``LatentClassModel`` stores it (padded with zeros past each
    item's categories), ``weight`` (K,), ``items`` (J names), ``categories`` (each item's
    codes, in the model's order).  Every item binary: one line per class through the
    probability of each item's second category (the y label names the code when all items
    share their codes), as Mplus and poLCA users read profiles.  Any item with 3+
    categories: one panel per class, one stacked bar per item (categories bottom-up in the
    item's order, a sequential colour per position), as poLCA's ``plot()`` shows them.
    """
    import matplotlib

    prob = np.asarray(prob, dtype=float)
    weight = np.asarray(weight, dtype=float)
    K, J = prob.shape[0], prob.shape[1]
    sizes = [len(c) for c in categories]
    shared = all(list(c) == list(categories[0]) for c in categories)
    colors = _colors(K)
    x = np.arange(J)
    rotate = J > 8 or max(len(str(i)) for i in items) > 6
    with _style():
        if max(sizes) <= 2:
            fig = _figure(min(max(6.4, 0.42 * J + 2.8), _MAX_WIDTH), 4.6)
            ax = fig.add_subplot(1, 1, 1)
            second = np.full((K, J), np.nan)     # an item with a single code has no second
            two = np.array(sizes) == 2
            if two.any():
                second[:, two] = prob[:, two, 1]
            for k in range(K):
                ax.plot(x, second[k], marker="os^Dv<>ph*"[k % 10], color=colors[k],
                        linewidth=1.4, markersize=5, label=_class_label(k, weight))
            what = (f"answer {categories[0][1]}" if shared and sizes[0] == 2
                    else "each item's second code")
            ax.set_ylabel(f"P({what})")
            ax.set_ylim(-0.03, 1.03)
            ax.set_xlim(-0.5, J - 0.5)
            ax.grid(axis="y", color="0.9")
            title = "Item-response probabilities by class"
            ax.set_title(title, fontsize=10)
            legend = ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
            axes = [ax]
            caption = t("plots.profile_binary", what=what)
        else:
            cmax = max(sizes)
            cmap = matplotlib.colormaps["viridis"]
            ccols = [cmap(0.9 * c / max(cmax - 1, 1)) for c in range(cmax)]
            fig = _figure(min(max(6.4, 0.36 * J + 3.2), _MAX_WIDTH), 1.55 * K + 1.3)
            axes = [fig.add_subplot(K, 1, k + 1) for k in range(K)]
            for k, ax in enumerate(axes):
                bottom = np.zeros(J)
                for c in range(cmax):
                    h = np.where(np.array(sizes) > c, prob[k, :, c], 0.0)
                    label = (str(categories[0][c]) if shared else f"category {c + 1}")
                    ax.bar(x, h, bottom=bottom, width=0.75, color=ccols[c],
                           edgecolor="white", linewidth=0.4, label=label if k == 0 else None)
                    bottom += h
                ax.set_ylim(0, 1)
                ax.set_xlim(-0.5, J - 0.5)
                ax.set_yticks([0, 0.5, 1])
                ax.set_ylabel(_class_label(k, weight).replace(" (", "\n("), fontsize=8)
                if k < K - 1:
                    ax.tick_params(labelbottom=False)
            title = "Item-response probabilities by class (stacked categories)"
            axes[0].set_title(title, fontsize=10)
            handles, labels = axes[0].get_legend_handles_labels()
            legend = axes[0].legend(handles[::-1], labels[::-1], fontsize=8, loc="upper left",
                                    bbox_to_anchor=(1.01, 1.0),
                                    title="answer" if shared else "in item order",
                                    title_fontsize=8)
            caption = t("plots.profile_stacked")
        for ax in axes:
            ax.set_xticks(x)
        axes[-1].set_xticklabels([str(i) for i in items], rotation=45 if rotate else 0,
                                 ha="right" if rotate else "center", fontsize=8)
        width = fig.get_size_inches()[0]
        _single_axes_margins(fig, axes[-1], title=title, x_rotated=rotate, x_tick_size=8,
                             right=_legend_width(fig, legend) + 0.012 * width + 4.0 / _PT)
        if len(axes) > 1:   # the class labels are two lines at 8 points
            left = (_tick_room(fig, axes[0].yaxis, 10, True)
                    + 2 * _text_size(fig, ["class"], 8)[1] * 1.2 + 4.0 / _PT)
            pars = fig.subplotpars
            fig.subplots_adjust(left=max(pars.left, (left + _EDGE) / width), hspace=0.12)
        return _finish(fig, caption)


# --------------------------------------------------------------------------- GMM
def covariances(model: Any, params: Mapping[str, np.ndarray]) -> np.ndarray:
    """The K full covariance matrices (K, D, D) of a Gaussian mixture of any covariance kind."""
    D = model.n_features
    if model.covariance == "full":
        return np.asarray(params["cov"], dtype=float).reshape(-1, D, D)
    if model.covariance == "diag":
        var = np.asarray(params["cov"], dtype=float).reshape(-1, D)
        return np.stack([np.diag(v) for v in var])
    var = np.asarray(params["var"], dtype=float).reshape(-1)
    return var[:, None, None] * np.eye(D)[None]


def _draw_marginal(ax: Any, x: np.ndarray, weight: np.ndarray, means: np.ndarray,
                   sds: np.ndarray, colors: Sequence[Any]) -> None:
    """Histogram of every value of ``x`` with the weighted normal components and their sum."""
    edges = np.linspace(*_range(x), _n_bins(x.size) + 1)
    counts, _ = np.histogram(x, edges)
    dens = counts / (x.size * np.diff(edges))
    ax.stairs(dens, edges, fill=True, color="0.85")
    grid = np.linspace(edges[0], edges[-1], 400)
    comps = [weight[k] * _normal_pdf(grid, means[k], sds[k]) for k in range(weight.size)]
    for k, comp in enumerate(comps):
        ax.plot(grid, comp, color=colors[k], linewidth=1.2)
    ax.plot(grid, np.sum(comps, axis=0), color="black", linewidth=1.4)
    ax.set_xlim(edges[0], edges[-1])


def density_plot(x: np.ndarray, weight: np.ndarray, means: np.ndarray, sds: np.ndarray,
                 column: str, caption_key: str = "plots.density") -> Plot:
    """One column: histogram of every row with the mixture density and each weighted
    component ``weight[k] N(means[k], sds[k]^2)``; ``x`` (n,), the rest (K,)."""
    x = np.asarray(x, dtype=float).reshape(-1)
    weight = np.asarray(weight, dtype=float).reshape(-1)
    means = np.asarray(means, dtype=float).reshape(-1)
    sds = np.asarray(sds, dtype=float).reshape(-1)
    colors = _colors(weight.size)
    with _style():
        fig = _figure(6.4, 4.4)
        ax = fig.add_subplot(1, 1, 1)
        _draw_marginal(ax, x, weight, means, sds, colors)
        from matplotlib.lines import Line2D
        handles = [Line2D([], [], color="black", label="mixture")] + [
            Line2D([], [], color=colors[k], label=_class_label(k, weight))
            for k in range(weight.size)]
        ax.legend(handles=handles, fontsize=8)
        ax.set_xlabel(str(column))
        ax.set_ylabel("density")
        title = f"Density of {column}: data and mixture (n = {x.size})"
        ax.set_title(title, fontsize=10)
        _single_axes_margins(fig, ax, title=title)
        return _finish(fig, t(caption_key, column=column, target=column, n=x.size))


def scatter_plot(X: np.ndarray, columns: Sequence[str], weight: np.ndarray,
                 means: np.ndarray, covs: np.ndarray, modal: np.ndarray) -> Plot:
    """Pairwise scatter of a Gaussian mixture's data coloured by modal class.

    ``X`` (n, D) with D >= 2, ``means`` (K, D), ``covs`` (K, D, D), ``modal`` (n,) 0-based.
    Each component's mean (x) and its :data:`ELLIPSE_LEVEL` ellipse in the plane of the two
    columns (the 2 x 2 block of its covariance: the marginal of a normal is normal).  Two
    columns: one panel; more: the lower triangle of a matrix whose diagonal shows each
    column's histogram (all rows) with the weighted component densities; every panel of a
    column has that column's range across, every panel of a row its range up, and as in
    R's ``pairs()`` only the outer panels carry ticks and labels (the bottom row across,
    the first column up).  At most :data:`MAX_COLUMNS` columns (the first ones, noted in
    the title); at most :data:`MAX_POINTS` points (:func:`subsample`).
    """
    import matplotlib
    from matplotlib.lines import Line2D
    from matplotlib.patches import Ellipse
    from matplotlib.ticker import NullLocator

    X = np.asarray(X, dtype=float)
    n, D = X.shape
    m = min(D, MAX_COLUMNS)
    weight = np.asarray(weight, dtype=float)
    means = np.asarray(means, dtype=float)
    covs = np.asarray(covs, dtype=float)
    K = weight.size
    colors = _colors(K)
    idx = subsample(n)
    groups = np.asarray(modal)[idx]
    ranges = [_ellipse_range(X[:, j], means[:, j], covs[:, j, j]) for j in range(m)]
    title = f"Data by modal class, {ELLIPSE_LEVEL:.0%} ellipses"
    if D > m:
        title += f" (first {m} of {D} columns)"
    if idx.size < n:
        title += f"; {idx.size} of {n} rows shown"

    def pair(ax: Any, i: int, j: int) -> None:   # column j across, column i up
        _points(ax, X[idx, j], X[idx, i], groups, colors,
                _marker_size(idx.size) * (1.0 if m == 2 else 0.5))
        for k in range(K):
            sub = covs[k][np.ix_([j, i], [j, i])]
            w, h, ang = ellipse_geometry(sub)
            ax.add_patch(Ellipse((means[k, j], means[k, i]), w, h, angle=ang, fill=False,
                                 edgecolor=colors[k], linewidth=1.6 if m == 2 else 1.2))
        ax.plot(means[:, j], means[:, i], linestyle="none", marker="x", color="black",
                markersize=6 if m == 2 else 4.5, markeredgewidth=1.5 if m == 2 else 1.2)
        ax.set_xlim(*ranges[j])
        ax.set_ylim(*ranges[i])

    small = {"xtick.labelsize": 7, "ytick.labelsize": 7} if m > 2 else {}
    # every artist is made inside (rcParams are read when it is created, ticks when drawn)
    with _style(), matplotlib.rc_context(small):
        handles = [Line2D([], [], color=colors[k], marker="o", linestyle="-",
                          label=_class_label(k, weight)) for k in range(K)]
        if m == 2:
            fig = _figure(6.4, 5.4)
            ax = fig.add_subplot(1, 1, 1)
            pair(ax, 1, 0)
            ax.set_xlabel(str(columns[0]))
            ax.set_ylabel(str(columns[1]))
            ax.set_title(title, fontsize=10)
            ax.legend(handles=handles, fontsize=8)
            _single_axes_margins(fig, ax, title=title)
        else:
            size = 1.6 * m + 1.0
            fig = _figure(size, size)
            sds = np.sqrt(np.stack([np.diag(c) for c in covs]))
            outer_x: list[Any] = []
            outer_y: list[Any] = []
            for i in range(m):
                for j in range(i + 1):
                    ax = fig.add_subplot(m, m, i * m + j + 1)
                    if i == j:
                        _draw_marginal(ax, X[:, i], weight, means[:, i], sds[:, i], colors)
                        ax.yaxis.set_major_locator(NullLocator())
                    else:
                        pair(ax, i, j)
                        if j == 0:
                            ax.yaxis.set_major_locator(_inner_ticks(*ranges[i]))
                            ax.set_ylabel(str(columns[i]), fontsize=8)
                            outer_y.append(ax)
                        else:
                            ax.yaxis.set_major_locator(NullLocator())
                    if i == m - 1:
                        ax.xaxis.set_major_locator(_inner_ticks(*ranges[j]))
                        ax.set_xlabel(str(columns[j]), fontsize=8)
                        outer_x.append(ax)
                    else:
                        ax.xaxis.set_major_locator(NullLocator())
            fig.suptitle(title, fontsize=10)
            left = max(_tick_room(fig, a.yaxis, 7, True) for a in outer_y)
            bottom = max(_tick_room(fig, a.xaxis, 7, False) for a in outer_x)
            label = max(_label_room(fig, str(c), 8) for c in columns[:m])
            head = _text_size(fig, [title], 10)[1] + 0.12
            right = 0.1
            _margins(fig, left=left + label, right=right, bottom=bottom + label, top=head,
                     wspace=0.08, hspace=0.08)
            # the legend in the empty upper right triangle, below the title
            fig.legend(handles=handles, fontsize=8, loc="upper right",
                       bbox_to_anchor=(1.0 - (right + _EDGE) / size,
                                       1.0 - (head + _EDGE) / size))
        extra = t("plots.scatter_columns", shown=m, total=D) if D > m else ""
        caption = t("plots.scatter", level=ELLIPSE_LEVEL, columns=extra)
        return _finish(fig, caption + _subsample_note(n, idx.size))


# ------------------------------------------------------------ mixture of regressions
def regression_plot(X: np.ndarray, y: np.ndarray, predictors: Sequence[str], target: str,
                    weight: np.ndarray, coef: np.ndarray, sigma: np.ndarray,
                    modal: np.ndarray) -> Plot:
    """A mixture of regressions' data with each class's fit.

    ``X`` (n, P) the design as ``MixtureRegressionModel`` holds it (``predictors`` names its
    columns, ``intercept`` first when on), ``y`` (n,), ``coef`` (K, P), ``sigma`` (K,),
    ``modal`` (n,) 0-based.  One predictor besides the intercept: ``target`` against it
    with each class's line over the predictor's range.  Several: observed against fitted
    under each row's modal class, with the diagonal.  Intercept only: the density of the
    target with each class's weighted normal (as :func:`density_plot`).
    """
    from matplotlib.lines import Line2D

    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float).reshape(-1)
    coef = np.asarray(coef, dtype=float)
    weight = np.asarray(weight, dtype=float)
    modal = np.asarray(modal)
    slopes = [p for p, name in enumerate(predictors) if name != "intercept"]
    if not slopes:
        return density_plot(y, weight, coef[:, 0], np.asarray(sigma, dtype=float), target,
                            caption_key="plots.regression_density")
    K, n = weight.size, y.size
    colors = _colors(K)
    idx = subsample(n)
    groups = modal[idx]
    with _style():
        fig = _figure(6.4, 5.0)
        ax = fig.add_subplot(1, 1, 1)
        handles = []
        if len(slopes) == 1:
            p = slopes[0]
            x = X[:, p]
            _points(ax, x[idx], y[idx], groups, colors, _marker_size(idx.size))
            lo, hi = _range(x)
            grid = np.array([lo, hi])
            has_intercept = "intercept" in predictors
            for k in range(K):
                a = float(coef[k, list(predictors).index("intercept")]) if has_intercept else 0.0
                b = float(coef[k, p])
                ax.plot(grid, a + b * grid, color=colors[k], linewidth=2)
                line = (f"{a:.3g} {'-' if b < 0 else '+'} {abs(b):.3g} x" if has_intercept
                        else f"{b:.3g} x")
                handles.append(Line2D([], [], color=colors[k], marker="o",
                                      label=f"{_class_label(k, weight)}: y = {line}"))
            ax.set_xlim(lo, hi)
            ax.set_xlabel(str(predictors[p]))
            ax.set_ylabel(str(target))
            ax.set_title(f"{target} against {predictors[p]} with each class's line", fontsize=10)
            caption = t("plots.regression_line", target=target, predictor=predictors[p])
        else:
            fitted = np.einsum("ij,ij->i", X[idx], coef[modal[idx]])
            _points(ax, fitted, y[idx], groups, colors, _marker_size(idx.size))
            lo = min(float(fitted.min()), float(y[idx].min()))
            hi = max(float(fitted.max()), float(y[idx].max()))
            ax.plot([lo, hi], [lo, hi], color="0.3", linestyle="--", linewidth=1)
            handles = [Line2D([], [], color=colors[k], marker="o", linestyle="none",
                              label=_class_label(k, weight)) for k in range(K)]
            ax.set_xlabel(f"fitted {target} (modal class)")
            ax.set_ylabel(f"observed {target}")
            ax.set_title(f"Observed against fitted {target} by modal class", fontsize=10)
            caption = t("plots.regression_fitted", target=target)
        if idx.size < n:
            ax.set_title(ax.get_title() + f"\n({idx.size} of {n} rows shown)", fontsize=10)
        ax.legend(handles=handles, fontsize=8)
        _single_axes_margins(fig, ax, title=ax.get_title())
        return _finish(fig, caption + _subsample_note(n, idx.size))


# ----------------------------------------------------------------------- any model
def posterior_histogram(resp: "np.ndarray | Posteriors", bins: int = 40
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(edges (bins+1,), counts (K, bins)): every row's largest posterior probability
    binned on equal bins from 1/K (K = 1: 0) to 1, by modal class; numpy.histogram's
    convention (left-closed bins, the last one closed).  ``resp``: (n, K), or
    :class:`~src.inference.classification.Posteriors` (distinct patterns counted as often
    as they occur)."""
    tau, weights = as_posteriors(resp).weighted()
    K = tau.shape[1]
    top = tau.max(axis=1)
    modal = tau.argmax(axis=1)
    edges = np.linspace(1.0 / K if K > 1 else 0.0, 1.0, bins + 1)
    b = np.clip(np.searchsorted(edges, top, side="right") - 1, 0, bins - 1)
    counts = np.bincount(modal * bins + b, weights=weights, minlength=K * bins)
    return edges, np.rint(counts).astype(np.int64).reshape(K, bins)


def posterior_plot(resp: "np.ndarray | Posteriors") -> Plot:
    """Histogram of every row's largest posterior probability, stacked by modal class.

    ``resp`` (n, K) or :class:`~src.inference.classification.Posteriors`.  40 equal bins
    from 1/K (the smallest possible largest posterior) to 1 (K = 1: from 0); a dashed line
    at 0.7, the usual threshold of a clear assignment.
    """
    post = as_posteriors(resp)
    n, K = post.n_rows, post.n_components
    tau, weights = post.weighted()
    top = tau.max(axis=1)
    edges, counts = posterior_histogram(post)
    colors = _colors(K)
    if not n:
        mean = math.nan
    else:
        mean = float(top.mean() if weights is None else weights @ top / n)
    with _style():
        fig = _figure(6.4, 4.2)
        ax = fig.add_subplot(1, 1, 1)
        bottom = np.zeros(edges.size - 1)
        for k in range(K):   # one filled step outline per class, stacked
            ax.stairs(bottom + counts[k], edges, baseline=bottom.copy(), fill=True,
                      color=colors[k], linewidth=0, label=f"class {k + 1}")
            bottom += counts[k]
        ax.axvline(0.7, color="0.3", linestyle="--", linewidth=1)
        ax.set_xlim(edges[0], 1.0)
        ax.set_ylim(0, max(float(bottom.max()), 1.0) * 1.05)
        ax.set_xlabel("largest posterior probability")
        ax.set_ylabel("rows")
        title = f"Largest posterior probability per row (n = {n}, mean {mean:.3f})"
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8, title="modal class", title_fontsize=8, loc="upper left")
        _single_axes_margins(fig, ax, title=title)
        return _finish(fig, t("plots.posterior", n=n, mean=mean))


# ------------------------------------------------------------------------ dispatcher
def _weights(params: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.asarray(params["weight"], dtype=float).reshape(-1)


def _profile(model: Any, data: Mapping[str, np.ndarray], params: Mapping[str, np.ndarray],
             post: Posteriors) -> Plot | None:
    return profile_plot(params["prob"], _weights(params), model.items, model.categories)


def _gmm_parts(model: Any, data: Mapping[str, np.ndarray], params: Mapping[str, np.ndarray]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    w = _weights(params)
    return (np.asarray(data["X"], dtype=float), w, covariances(model, params),
            np.asarray(params["mean"], dtype=float).reshape(w.size, -1))


def _scatter(model: Any, data: Mapping[str, np.ndarray], params: Mapping[str, np.ndarray],
             post: Posteriors) -> Plot | None:
    X, w, covs, means = _gmm_parts(model, data, params)
    if X.shape[1] < 2:
        return None
    return scatter_plot(X, model.columns, w, means, covs, post.rows().argmax(axis=1))


def _density(model: Any, data: Mapping[str, np.ndarray], params: Mapping[str, np.ndarray],
             post: Posteriors) -> Plot | None:
    X, w, covs, means = _gmm_parts(model, data, params)
    if X.shape[1] != 1:
        return None
    return density_plot(X[:, 0], w, means[:, 0], np.sqrt(covs[:, 0, 0]), model.columns[0])


def _regression(model: Any, data: Mapping[str, np.ndarray], params: Mapping[str, np.ndarray],
                post: Posteriors) -> Plot | None:
    return regression_plot(data["X"], data["y"], model.predictors,
                           str(model.meta.get("target", "y")), _weights(params), params["coef"],
                           params["sigma"], post.rows().argmax(axis=1))


#: figure name (``MixtureModel.figures``; the file is ``<name>.png``) -> function
#: ``(model, data, params, posteriors) -> Plot``, or None when it does not apply to the data.
#: The names are :data:`src.models.base.FIGURE_NAMES` (a family declaring another is an
#: error when its class is defined).
FIGURES: dict[str, Callable[..., Plot | None]] = {
    "profile": _profile,
    "scatter": _scatter,
    "density": _density,
    "regression": _regression,
}


def figures(model: Any, data: Mapping[str, np.ndarray], params: Mapping[str, np.ndarray],
            resp: "np.ndarray | Posteriors") -> dict[str, Plot]:
    """Every figure of a fitted model: ``{file name: Plot}`` in a fixed order.

    ``model`` set up (``setup(meta)`` done), ``data`` its arrays (``prepared.data``),
    ``params`` the estimate, ``resp`` the posterior class probabilities of the same rows in
    the same order: (n, K), or the :class:`~src.inference.classification.Posteriors` of
    :func:`~src.inference.classification.posteriors_of` (computed once per fit).  The
    figures the family declares (``model.figures``, in that order; see :data:`FIGURES`),
    those that apply to the data, then for every model, user models too,
    ``posterior.png``.  Write ``plot.png`` bytes as they are; ``plot.caption`` is in the
    current language.
    """
    _preloaded()
    post = as_posteriors(resp)
    out: dict[str, Plot] = {}
    for name in getattr(model, "figures", ()) or ():
        plot = FIGURES[name](model, data, params, post)
        if plot is not None:
            out[f"{name}.png"] = plot
    out["posterior.png"] = posterior_plot(post)
    return out


def criteria_plot(rows: Sequence[Mapping[str, Any]], selected: int, rule: str) -> bytes:
    """The information criteria against K (lower is better), the selected K marked."""
    _preloaded()
    ks = [int(r["k"]) for r in rows]
    with _style():
        fig = _figure(6.4, 4.2)
        ax = fig.add_subplot(1, 1, 1)
        markers = "osD^v"
        for (name, label), marker in zip(_LABELS.items(), markers):
            ys = [float(r[name]) if r.get(name) is not None else math.nan for r in rows]
            ax.plot(ks, ys, marker=marker, label=label, linewidth=1.2, markersize=4)
        ax.axvline(selected, color="0.4", linestyle="--", linewidth=1)
        ax.set_xticks(ks)
        ax.set_xlabel("number of classes K")
        ax.set_ylabel("criterion (lower is better)")
        title = f"Information criteria by K; selected K = {selected} ({rule.upper()})"
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
        _single_axes_margins(fig, ax, title=title)
        return _finish(fig, "").png
