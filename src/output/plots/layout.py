"""What every figure shares: the Plot record, matplotlib's default style, the Agg canvas,
PNG bytes without date or software, and margins fixed from measured text.

Margins are fixed from the figure's size and the measured width of its tick labels, titles
and legends (no ``tight_layout``, which lays every tick out once more).  Points are drawn as
markers of one colour per class in interleaved batches (Agg stamps a marker; a scatter
collection rasterises each point).  Nothing here imports matplotlib at module level: the
modules are imported where a figure is drawn (in the run, or in the drawing process of
:mod:`src.output.background`).
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

__all__ = ["Plot", "DPI", "MAX_POINTS", "MAX_WIDTH"]

#: pixels per inch of every figure: a figure of w x h inches is (w * DPI) x (h * DPI) pixels
DPI = 100
#: most rows drawn in a scatter plot
MAX_POINTS = 5000
#: widest figure (inches): many items make narrow bars rather than a huge image
MAX_WIDTH = 24.0
#: fonts with Chinese glyphs, used after DejaVu Sans when installed
_CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Zen Hei",
              "WenQuanYi Micro Hei", "SimHei", "Microsoft YaHei", "PingFang SC", "Heiti SC")
#: zlib level of the PNG files (1: about half the time of the default 6 for a few
#: percent more bytes on these flat-coloured figures)
PNG_LEVEL = 1
#: points per inch
PT = 72.0
#: space (inches) kept free at every edge of the figure beyond the text
EDGE = 0.1


@dataclass(frozen=True)
class Plot:
    """One figure: its PNG bytes, a one-paragraph caption (current language), pixel size."""

    png: bytes
    caption: str
    width: int
    height: int


# ------------------------------------------------------------------ canvas and style
@contextlib.contextmanager
def style() -> Iterator[None]:
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


def figure(width: float, height: float) -> Any:
    """A matplotlib Figure of ``width`` x ``height`` inches on an Agg canvas (no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def finish(fig: Any) -> tuple[bytes, int, int]:
    """(PNG bytes without date or software, width, height in pixels) of ``fig`` (its
    margins already set, :func:`margins`).

    Rendered by the Agg canvas as ``savefig`` renders it, then written by Pillow: as RGB
    when every pixel is opaque (the figures' white background; one byte in four fewer to
    filter and compress, the same picture), at zlib level :data:`PNG_LEVEL`.  Measured on
    a 900 x 900 scatter matrix: 32 ms and 178 kB as matplotlib writes it (RGBA, level 6),
    15 ms and 175 kB so."""
    fig.canvas.draw()
    return encode(fig)


def encode(fig: Any) -> tuple[bytes, int, int]:
    """:func:`finish`'s PNG of what ``fig``'s canvas holds now, without drawing it."""
    from PIL import Image

    rgba = np.asarray(fig.canvas.buffer_rgba())
    opaque = bool(rgba[..., 3].min() == 255)
    image = Image.fromarray(np.ascontiguousarray(rgba[..., :3]) if opaque else rgba,
                            "RGB" if opaque else "RGBA")
    buf = io.BytesIO()
    image.save(buf, format="png", compress_level=PNG_LEVEL, dpi=(DPI, DPI))
    w, h = fig.get_size_inches()
    return buf.getvalue(), int(round(w * DPI)), int(round(h * DPI))


def background(fig: Any, hidden: Sequence[Any]) -> Any:
    """Draw ``fig`` without the artists ``hidden`` (made invisible for the draw) and keep
    the picture (a canvas region), for :func:`finish_over` to draw those artists on."""
    shown = [a.get_visible() for a in hidden]
    for a in hidden:
        a.set_visible(False)
    try:
        fig.canvas.draw()
        return fig.canvas.copy_from_bbox(fig.bbox)
    finally:
        for a, visible in zip(hidden, shown):
            a.set_visible(visible)


def finish_over(fig: Any, picture: Any, artists: Sequence[Any]) -> tuple[bytes, int, int]:
    """:func:`finish`'s PNG of ``fig`` drawn as the ``picture`` of :func:`background` with
    ``artists`` drawn on it, in the order given.

    The same bytes as drawing the whole figure when the figure is otherwise as it was for
    the picture and what a whole draw would draw after ``artists`` (spines, tick labels,
    titles) touches no pixel of theirs: the caller's to ensure."""
    renderer = fig.canvas.get_renderer()
    fig.canvas.restore_region(picture)
    for artist in artists:
        artist.draw(renderer)
    return encode(fig)


def warm_up() -> bytes:
    """Draw a small figure of what every figure is made of -- text at 10 and 8 points, a
    title, axis labels, markers, a filled step, a legend with a title -- into PNG bytes, so
    the first real figure of the process does not pay matplotlib's first-draw costs (the
    font's glyphs and metrics, Agg's and Pillow's set-up): measured, a figure's second stage
    84-115 ms of CPU in a fresh process, 45-60 ms after this (itself ~40 ms)."""
    with style():
        fig = figure(1.5, 1.2)
        ax = fig.add_subplot(1, 1, 1)
        ax.plot([0.0, 1.0], [0.0, 1.0], marker="o", label="class 1")
        filled_steps(ax, np.array([1.0, 2.0]), np.array([0.0, 0.5, 1.0]), color="C1",
                     label="class 2")
        ax.set_xlabel("x")
        ax.set_ylabel("rows")
        title(ax, "Ag 0.5 (n = 3)")
        ax.legend(fontsize=8, title="modal class", title_fontsize=8)
        return finish(fig)[0]


# ------------------------------------------------------------------ titles and ticks
def plain_numbers(ax: Any) -> None:
    """Tick labels of ``ax`` as plain numbers: no offset (``+1e6``) and no ``x1e6`` factor
    above or beside the axes (matplotlib's default for large or far-from-zero values), so
    nothing is ever drawn above the axes but the title (:func:`title`) and every label reads
    alone."""
    from matplotlib.ticker import ScalarFormatter

    for axis in (ax.xaxis, ax.yaxis):
        formatter = axis.get_major_formatter()
        if isinstance(formatter, ScalarFormatter):
            formatter.set_useOffset(False)
            formatter.set_scientific(False)


def title(ax: Any, text: str, size: float = 10) -> None:
    """Title ``ax`` with ``text`` at ``size`` points, placed at the axes' top edge (plus
    matplotlib's pad) and its numbers made plain (:func:`plain_numbers`).

    matplotlib places a title automatically at every draw: it lays out every tick label of
    the y axis once more to see whether an offset text or top tick labels are in the way
    (15-20 ms of a 60 ms figure).  With plain numbers and ticks at the bottom nothing is,
    and the automatic place is this one (the same pixels)."""
    plain_numbers(ax)
    ax.set_title(text, fontsize=size, y=1.0)


def make_ticks(axis: Any, count: int = 12) -> None:
    """Make ``count`` major tick objects of ``axis`` now, in a drawing's first stage.

    matplotlib makes them when the figure is first drawn, as copies of the axis's first
    tick (0.7 ms each); made beforehand they are the same objects, and the second stage,
    which the run waits for, does not pay for them.  A draw that needs fewer uses the first
    ones, one that needs more makes the rest."""
    axis.get_major_ticks(count)


# ------------------------------------------------------------------ fixed margins
def text_size(fig: Any, texts: Sequence[str], size: float) -> tuple[float, float]:
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


def tick_texts(axis: Any) -> list[str]:
    """The major tick labels ``axis`` will show (its locator and formatter on its limits)."""
    if not axis.get_tick_params().get("label1On", True):
        return []
    lo, hi = sorted(axis.get_view_interval())
    eps = 1e-9 * max(hi - lo, 1e-300)
    locs = [v for v in axis.get_majorticklocs() if lo - eps <= v <= hi + eps]
    return [s for s in axis.get_major_formatter().format_ticks(locs)]


def tick_room(fig: Any, axis: Any, size: float, across: bool,
              texts: Sequence[str] | None = None) -> float:
    """Inches the tick marks and labels of ``axis`` take from the axes' edge: label widths
    (``across``: a y axis) or heights, plus tick length and pad (matplotlib's defaults);
    ``texts``: these labels instead of the axis's own."""
    texts = tick_texts(axis) if texts is None else texts
    w, h = text_size(fig, texts, size)
    label = (w if across else h) if texts else 0.0
    return label + (3.5 + 3.5) / PT


def label_room(fig: Any, text: str, size: float) -> float:
    """Inches an axis label takes (its height plus matplotlib's 4-point label pad)."""
    return (text_size(fig, [text], size)[1] * max(1, str(text).count("\n") + 1)
            + 4.0 / PT) if text else 0.0


def margins(fig: Any, *, left: float, right: float, bottom: float, top: float,
            wspace: float | None = None, hspace: float | None = None) -> None:
    """Place the subplot grid with margins given in inches (plus :data:`EDGE`)."""
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=(left + EDGE) / w, right=1.0 - (right + EDGE) / w,
                        bottom=(bottom + EDGE) / h, top=1.0 - (top + EDGE) / h,
                        wspace=wspace, hspace=hspace)


def single_axes_margins(fig: Any, ax: Any, *, title: str = "", title_size: float = 10,
                        right: float = 0.15, tick_size: float = 10,
                        x_rotated: bool = False, x_tick_size: float | None = None,
                        y_texts: Sequence[str] | None = None) -> None:
    """Margins of a one-panel figure from its tick labels, axis labels and title
    (``y_texts``: room for these y tick labels instead of the axis's own)."""
    x_size = tick_size if x_tick_size is None else x_tick_size
    left = (tick_room(fig, ax.yaxis, tick_size, True, y_texts)
            + label_room(fig, ax.get_ylabel(), 10))
    if x_rotated:   # labels at 45 degrees, anchored at their right end
        w, h = text_size(fig, tick_texts(ax.xaxis), x_size)
        bottom = math.sqrt(0.5) * (w + h) + 7.0 / PT
        left = max(left, math.sqrt(0.5) * (w + h) - 0.3)
    else:
        bottom = tick_room(fig, ax.xaxis, x_size, False)
    bottom += label_room(fig, ax.get_xlabel(), 10)
    lines = title.count("\n") + 1 if title else 0
    top = (text_size(fig, [title], title_size)[1] * 1.2 * lines + 6.0 / PT) if title else 0.1
    margins(fig, left=left, right=max(right, 0.2), bottom=bottom, top=top)


def legend_width(fig: Any, legend: Any) -> float:
    """The drawn width (inches) of ``legend``."""
    return legend.get_window_extent(fig.canvas.get_renderer()).width / fig.dpi


def inner_ticks(lo: float, hi: float) -> Any:
    """At most 4 round ticks on [lo, hi], none in the outer 10% at either end (the labels of
    neighbouring panels of a scatter matrix would run into each other)."""
    from matplotlib.ticker import FixedLocator, MaxNLocator

    ticks = MaxNLocator(4).tick_values(lo, hi)
    pad = 0.1 * (hi - lo)
    inner = [float(v) for v in ticks if lo + pad <= v <= hi - pad]
    if len(inner) < 2:
        inner = [float(v) for v in ticks if lo <= v <= hi]
    return FixedLocator(inner)


# ------------------------------------------------------------------ shared pieces
def filled_steps(ax: Any, values: np.ndarray, edges: np.ndarray, *, baseline: Any = 0.0,
                 color: Any, label: str | None = None) -> Any:
    """A filled step outline (``ax.stairs(values, edges, baseline=baseline, fill=True,
    color=color, linewidth=0)``, the same patch drawn the same way) for axes whose limits
    are set by hand: it is not added to the data limits, which ``Axes.stairs`` works out
    from the outline's path segment by segment in Python (5 ms per 40-bin outline, the
    largest piece of a posterior histogram's drawing after its text)."""
    from matplotlib.patches import StepPatch

    patch = StepPatch(values, edges, baseline=baseline, fill=True, linewidth=0,
                      facecolor=color, label=label)
    ax.add_artist(patch)
    return patch


def points(ax: Any, x: np.ndarray, y: np.ndarray, groups: np.ndarray, colors: Sequence[Any],
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


def point_lines(ax: Any, n: int, colors: Sequence[Any], size: float, alpha: float = 0.6,
                batches: int = 8) -> list[tuple[int, int, int, Any]]:
    """:func:`points` in two stages, for a drawing's first stage: the empty markers line of
    every batch and group of ``n`` rows, added to ``ax`` in :func:`points`'s order;
    :func:`fill_points` gives each its rows once the groups are known (a line left without
    rows is removed), so the figure is :func:`points`'s.  Returns ``(first row, last row,
    group, line)`` per line."""
    from matplotlib.lines import Line2D

    bounds = np.linspace(0, n, min(batches, max(n, 1)) + 1).astype(int)
    diameter = math.sqrt(size)
    out = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        for k, color in enumerate(colors):
            line = Line2D([], [], linestyle="none", marker="o", markersize=diameter,
                          markeredgewidth=0, color=color, alpha=alpha)
            ax.add_line(line)
            out.append((int(a), int(b), k, line))
    return out


def fill_points(lines: Sequence[tuple[int, int, int, Any]], x: np.ndarray, y: np.ndarray,
                groups: np.ndarray) -> None:
    """The second stage of :func:`point_lines`: each line's rows of its group."""
    for a, b, k, line in lines:
        sel = np.flatnonzero(groups[a:b] == k) + a
        if sel.size:
            line.set_data(x[sel], y[sel])
        else:
            line.remove()


def colors(K: int) -> list[tuple[float, ...]]:
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


def class_label(k: int, weight: Sequence[float]) -> str:
    return f"class {k + 1} ({100 * float(weight[k]):.1f}%)"


def n_bins(n: int) -> int:
    """Rice's rule, 2 n^(1/3), kept within 10..100."""
    return int(min(100, max(10, math.ceil(2 * max(n, 1) ** (1 / 3)))))


def data_range(lo: float, hi: float) -> tuple[float, float]:
    """The data's range [lo, hi] widened by 5% each side (a constant column: +-1)."""
    lo, hi = float(lo), float(hi)
    pad = 0.05 * (hi - lo) if hi > lo else 1.0
    return lo - pad, hi + pad


def normal_pdf(x: np.ndarray, mean: float, sd: float) -> np.ndarray:
    z = (x - mean) / sd
    return np.exp(-0.5 * z * z) / (sd * math.sqrt(2 * math.pi))


def subsample(n: int, max_points: int = MAX_POINTS) -> np.ndarray:
    """Row indices drawn in a scatter plot: all n rows (n <= max_points) or max_points of
    them, in a random order fixed by ``stream(0, "plot-points")`` (the same for the same n)."""
    from src.utils.rng import stream

    rng = stream(0, "plot-points")
    if n <= max_points:
        return rng.permutation(n)
    return rng.choice(n, size=max_points, replace=False)


def marker_size(shown: int) -> float:
    """Scatter marker area (points^2): larger for few points, small for thousands."""
    return 14.0 if shown <= 500 else 7.0 if shown <= 2000 else 3.0


def subsample_note(n: int, shown: int) -> str:
    from .captions import t

    return t("plots.subsample", shown=shown, total=n) if shown < n else ""
