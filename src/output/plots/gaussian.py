"""Gaussian mixtures: the pairwise scatter with each component's ellipse (``scatter.png``,
2+ columns) and one column's density with its components (``density.png``)."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from . import layout as L
from .captions import t
from .spec import DRAW, Spec

__all__ = ["covariances", "ellipse_geometry", "ellipse_range", "density_data", "density_spec",
           "density_plot", "scatter_data", "scatter_spec", "scatter_plot", "MAX_COLUMNS",
           "ELLIPSE_LEVEL"]

#: most columns in the GMM scatter matrix (the first ones)
MAX_COLUMNS = 6
#: probability mass inside each component's ellipse (in the plane of the two columns)
ELLIPSE_LEVEL = 0.95


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


def ellipse_range(lo: float, hi: float, means: np.ndarray, variances: np.ndarray,
                  level: float = ELLIPSE_LEVEL) -> tuple[float, float]:
    """An axis range holding the data (from ``lo`` to ``hi``) and every component's ellipse
    (its shadow on this axis is mean +- r sd, r^2 = -2 log(1 - level)), widened by 5% each
    side; an ellipse may push the range at most half the data's range beyond the data (a
    flat component stays cut)."""
    lo, hi = float(lo), float(hi)
    span = hi - lo if hi > lo else 1.0
    r = math.sqrt(-2.0 * math.log1p(-level))
    sd = np.sqrt(np.clip(np.asarray(variances, dtype=float), 0.0, None))
    e_lo = float(np.min(np.asarray(means, dtype=float) - r * sd))
    e_hi = float(np.max(np.asarray(means, dtype=float) + r * sd))
    lo, hi = min(lo, max(e_lo, lo - 0.5 * span)), max(hi, min(e_hi, hi + 0.5 * span))
    pad = 0.05 * (hi - lo) if hi > lo else 1.0
    return lo - pad, hi + pad


def _histogram(ax: Any, x: np.ndarray) -> np.ndarray:
    """Histogram (as a density) of every value of ``x``; its bin edges."""
    edges = np.linspace(*L.data_range(np.min(x), np.max(x)), L.n_bins(x.size) + 1)
    counts, _ = np.histogram(x, edges)
    dens = counts / (x.size * np.diff(edges))
    ax.stairs(dens, edges, fill=True, color="0.85")
    ax.set_xlim(edges[0], edges[-1])
    return edges


def _components(ax: Any, edges: np.ndarray, weight: np.ndarray, means: np.ndarray,
                sds: np.ndarray, colors: Sequence[Any]) -> None:
    """The weighted normal components and their sum over the histogram's range."""
    grid = np.linspace(edges[0], edges[-1], 400)
    comps = [weight[k] * L.normal_pdf(grid, means[k], sds[k]) for k in range(weight.size)]
    for k, comp in enumerate(comps):
        ax.plot(grid, comp, color=colors[k], linewidth=1.2)
    ax.plot(grid, np.sum(comps, axis=0), color="black", linewidth=1.4)


# ----------------------------------------------------------------------- density
def density_data(x: np.ndarray, column: str) -> Spec:
    """The density figure's first-stage :class:`~.spec.Spec`: the column."""
    return Spec("density", {"column": str(column)},
                {"x": np.asarray(x, dtype=float).reshape(-1)}, "", frozenset({"column", "x"}))


def density_spec(x: np.ndarray, weight: np.ndarray, means: np.ndarray, sds: np.ndarray,
                 column: str, caption_key: str = "plots.density") -> Spec:
    """The density figure's :class:`~.spec.Spec` (arguments as :func:`density_plot`)."""
    spec = density_data(x, column)
    spec.arrays.update(weight=np.asarray(weight, dtype=float).reshape(-1),
                       means=np.asarray(means, dtype=float).reshape(-1),
                       sds=np.asarray(sds, dtype=float).reshape(-1))
    spec.caption = t(caption_key, column=column, target=column, n=spec.arrays["x"].size)
    return spec


def density_plot(x: np.ndarray, weight: np.ndarray, means: np.ndarray, sds: np.ndarray,
                 column: str, caption_key: str = "plots.density") -> L.Plot:
    """One column: histogram of every row with the mixture density and each weighted
    component ``weight[k] N(means[k], sds[k]^2)``; ``x`` (n,), the rest (K,)."""
    from .spec import render

    return render(density_spec(x, weight, means, sds, column, caption_key))


def draw_density(meta: dict[str, Any], arrays: dict[str, np.ndarray]):
    from matplotlib.lines import Line2D

    x, column = arrays["x"], meta["column"]
    with L.style():
        fig = L.figure(6.4, 4.4)
        ax = fig.add_subplot(1, 1, 1)
        edges = _histogram(ax, x)
        ax.set_xlabel(str(column))
        ax.set_ylabel("density")
        title = f"Density of {column}: data and mixture (n = {x.size})"
        L.title(ax, title)
        L.make_ticks(ax.xaxis)
        L.make_ticks(ax.yaxis)
    yield
    weight, means, sds = arrays["weight"], arrays["means"], arrays["sds"]
    colors = L.colors(weight.size)
    with L.style():
        _components(ax, edges, weight, means, sds, colors)
        handles = [Line2D([], [], color="black", label="mixture")] + [
            Line2D([], [], color=colors[k], label=L.class_label(k, weight))
            for k in range(weight.size)]
        ax.legend(handles=handles, fontsize=8)
        L.single_axes_margins(fig, ax, title=title)
        return L.finish(fig)


# ----------------------------------------------------------------------- scatter
def _small_int(a: np.ndarray) -> np.ndarray:
    """Class numbers in the smallest integer type that holds them (fewer bytes to carry)."""
    a = np.asarray(a)
    top = int(a.max()) if a.size else 0
    return a.astype(np.int8 if top < 127 else np.int16 if top < 32767 else np.int64)


def scatter_data(X: np.ndarray, columns: Sequence[str], n_classes: int) -> Spec:
    """The scatter figure's first-stage :class:`~.spec.Spec`: the first
    :data:`MAX_COLUMNS` columns of every row, their names and the number of classes."""
    X = np.asarray(X, dtype=float)
    D = X.shape[1]
    m = min(D, MAX_COLUMNS)
    meta = {"columns": [str(c) for c in columns[:m]], "n_columns": D,
            "n_classes": int(n_classes)}
    return Spec("scatter", meta, {"X": X[:, :m] if m < D else X}, "", frozenset([*meta, "X"]))


def scatter_spec(X: np.ndarray, columns: Sequence[str], weight: np.ndarray,
                 means: np.ndarray, covs: np.ndarray, modal: np.ndarray) -> Spec:
    """The scatter figure's :class:`~.spec.Spec` (arguments as :func:`scatter_plot`): the
    first :data:`MAX_COLUMNS` columns of every row and their modal classes (the drawing
    takes the subsample and the histograms)."""
    spec = scatter_data(X, columns, np.asarray(weight).size)
    n, m = spec.arrays["X"].shape
    D = spec.meta["n_columns"]
    extra = t("plots.scatter_columns", shown=m, total=D) if D > m else ""
    spec.caption = (t("plots.scatter", level=ELLIPSE_LEVEL, columns=extra)
                    + L.subsample_note(n, min(n, L.MAX_POINTS)))
    spec.arrays.update(weight=np.asarray(weight, dtype=float),
                       means=np.asarray(means, dtype=float)[:, :m],
                       covs=np.asarray(covs, dtype=float)[:, :m, :m], modal=_small_int(modal))
    return spec


def scatter_plot(X: np.ndarray, columns: Sequence[str], weight: np.ndarray,
                 means: np.ndarray, covs: np.ndarray, modal: np.ndarray) -> L.Plot:
    """Pairwise scatter of a Gaussian mixture's data coloured by modal class.

    ``X`` (n, D) with D >= 2, ``means`` (K, D), ``covs`` (K, D, D), ``modal`` (n,) 0-based.
    Each component's mean (x) and its :data:`ELLIPSE_LEVEL` ellipse in the plane of the two
    columns (the 2 x 2 block of its covariance: the marginal of a normal is normal).  Two
    columns: one panel; more: the lower triangle of a matrix whose diagonal shows each
    column's histogram (all rows) with the weighted component densities; every panel of a
    column has that column's range across, every panel of a row its range up, and as in
    R's ``pairs()`` only the outer panels carry ticks and labels (the bottom row across,
    the first column up).  At most :data:`MAX_COLUMNS` columns (the first ones, noted in
    the title); at most :data:`~.layout.MAX_POINTS` points (:func:`~.layout.subsample`).
    """
    from .spec import render

    return render(scatter_spec(X, columns, weight, means, covs, modal))


def draw_scatter(meta: dict[str, Any], arrays: dict[str, np.ndarray]):
    """The scatter's two stages.  Run ahead of the estimate (:func:`~.spec.ahead`), the
    first stage also lays the figure out for the axis ranges of the data alone (each
    column's range plus 5%: what :func:`ellipse_range` gives when every ellipse lies within
    the data, as with 1e5 rows it nearly always does) and draws it without the class-dependent
    artists (:func:`~.layout.background`).  When the estimate's ranges are those, the second
    stage draws only the points, ellipses, centres, the diagonal's panels and the legend on
    that picture (:func:`~.layout.finish_over`; measured, 138-193 -> 93-128 ms for a
    5-column matrix); otherwise it lays the figure out again and draws it whole.  The bytes are the
    same: inside the data's range nothing drawn later in a whole draw (spines, ticks, labels
    outside the axes, 5% away) touches the points or ellipses (tested)."""
    import matplotlib
    from matplotlib.lines import Line2D
    from matplotlib.patches import Ellipse
    from matplotlib.ticker import NullLocator

    from .spec import ahead

    X, columns, D, K = arrays["X"], meta["columns"], int(meta["n_columns"]), int(meta["n_classes"])
    n, m = X.shape
    colors = L.colors(K)
    idx = L.subsample(n)
    lows, highs = X.min(axis=0), X.max(axis=0)
    title = f"Data by modal class, {ELLIPSE_LEVEL:.0%} ellipses"
    if D > m:
        title += f" (first {m} of {D} columns)"
    if idx.size < n:
        title += f"; {idx.size} of {n} rows shown"
    small = {"xtick.labelsize": 7, "ytick.labelsize": 7} if m > 2 else {}
    panels: dict[tuple[int, int], Any] = {}
    edges: dict[int, np.ndarray] = {}
    pieces: dict[tuple[int, int], tuple[list[Any], list[Any], Any]] = {}
    placed: dict[str, float] = {}

    def empty_pair(ax: Any) -> tuple[list[Any], list[Any], Any]:
        """The artists of a scatter panel, in their order, without positions yet."""
        points = L.point_lines(ax, idx.size, colors,
                               L.marker_size(idx.size) * (1.0 if m == 2 else 0.5))
        ellipses = [Ellipse((0.0, 0.0), 1.0, 1.0, fill=False, edgecolor=colors[k],
                            linewidth=1.6 if m == 2 else 1.2) for k in range(K)]
        for ellipse in ellipses:
            ax.add_patch(ellipse)
        centres = Line2D([], [], linestyle="none", marker="x", color="black",
                         markersize=6 if m == 2 else 4.5, markeredgewidth=1.5 if m == 2 else 1.2)
        ax.add_line(centres)
        return points, ellipses, centres

    def arrange(ranges: Sequence[tuple[float, float]]) -> None:
        """Axis ranges, tick positions and margins for the columns' ``ranges``."""
        if m == 2:
            ax = panels[1, 0]
            ax.set_xlim(*ranges[0])
            ax.set_ylim(*ranges[1])
            L.single_axes_margins(fig, ax, title=title)
            return
        outer_x: list[Any] = []
        outer_y: list[Any] = []
        for i in range(m):
            for j in range(i + 1):
                ax = panels[i, j]
                if i != j:
                    ax.set_xlim(*ranges[j])
                    ax.set_ylim(*ranges[i])
                    if j == 0:
                        ax.yaxis.set_major_locator(L.inner_ticks(*ranges[i]))
                        outer_y.append(ax)
                if i == m - 1:
                    ax.xaxis.set_major_locator(L.inner_ticks(*ranges[j]))
                    outer_x.append(ax)
        left = max(L.tick_room(fig, a.yaxis, 7, True) for a in outer_y)
        bottom = max(L.tick_room(fig, a.xaxis, 7, False) for a in outer_x)
        label = max(L.label_room(fig, str(c), 8) for c in columns[:m])
        placed["head"] = L.text_size(fig, [title], 10)[1] + 0.12
        placed["right"] = 0.1
        L.margins(fig, left=left + label, right=placed["right"], bottom=bottom + label,
                  top=placed["head"], wspace=0.08, hspace=0.08)

    # every artist is made inside (rcParams are read when it is created, ticks when drawn)
    with L.style(), matplotlib.rc_context(small):
        if m == 2:
            fig = L.figure(6.4, 5.4)
            ax = panels[1, 0] = fig.add_subplot(1, 1, 1)
            pieces[1, 0] = empty_pair(ax)
            ax.set_xlabel(str(columns[0]))
            ax.set_ylabel(str(columns[1]))
            L.title(ax, title)
            L.make_ticks(ax.xaxis)
            L.make_ticks(ax.yaxis)
        else:
            size = 1.6 * m + 1.0
            fig = L.figure(size, size)
            for i in range(m):
                for j in range(i + 1):
                    ax = panels[i, j] = fig.add_subplot(m, m, i * m + j + 1)
                    L.plain_numbers(ax)
                    if i == j:
                        edges[i] = _histogram(ax, X[:, i])
                        ax.yaxis.set_major_locator(NullLocator())
                    else:
                        pieces[i, j] = empty_pair(ax)
                        if j == 0:
                            ax.set_ylabel(str(columns[i]), fontsize=8)
                            L.make_ticks(ax.yaxis, 5)   # inner_ticks: at most 4
                        else:
                            ax.yaxis.set_major_locator(NullLocator())
                    if i == m - 1:
                        ax.set_xlabel(str(columns[j]), fontsize=8)
                        L.make_ticks(ax.xaxis, 5)
                    else:
                        ax.xaxis.set_major_locator(NullLocator())
            fig.suptitle(title, fontsize=10)
        guess = [L.data_range(lows[j], highs[j]) for j in range(m)]
        picture = None
        if ahead():
            arrange(guess)
            hidden = [e for _, ellipses, _ in pieces.values() for e in ellipses]
            hidden += [panels[i, i] for i in range(m) if (i, i) in panels]
            picture = L.background(fig, hidden)
    yield
    weight, means, covs = arrays["weight"], arrays["means"], arrays["covs"]
    groups = arrays["modal"][idx]
    ranges = [ellipse_range(lows[j], highs[j], means[:, j], covs[:, j, j]) for j in range(m)]
    if ranges != guess:
        picture = None

    def pair(i: int, j: int) -> None:   # column j across, column i up
        points, ellipses, centres = pieces[i, j]
        L.fill_points(points, X[idx, j], X[idx, i], groups)
        for k, ellipse in enumerate(ellipses):
            w, h, ang = ellipse_geometry(covs[k][np.ix_([j, i], [j, i])])
            ellipse.set_center((means[k, j], means[k, i]))
            ellipse.set_width(w)
            ellipse.set_height(h)
            ellipse.set_angle(ang)
        centres.set_data(means[:, j], means[:, i])

    with L.style(), matplotlib.rc_context(small):
        if picture is None:
            arrange(ranges)
        handles = [Line2D([], [], color=colors[k], marker="o", linestyle="-",
                          label=L.class_label(k, weight)) for k in range(K)]
        if m == 2:
            pair(1, 0)
            legend = panels[1, 0].legend(handles=handles, fontsize=8)
        else:
            sds = np.sqrt(np.stack([np.diag(c) for c in covs]))
            for i in range(m):
                for j in range(i + 1):
                    if i == j:
                        _components(panels[i, i], edges[i], weight, means[:, i], sds[:, i],
                                    colors)
                    else:
                        pair(i, j)
            size = fig.get_size_inches()[0]
            # the legend in the empty upper right triangle, below the title
            legend = fig.legend(handles=handles, fontsize=8, loc="upper right",
                                bbox_to_anchor=(1.0 - (placed["right"] + L.EDGE) / size,
                                                1.0 - (placed["head"] + L.EDGE) / size))
        if picture is None:
            return L.finish(fig)
        drawn: list[Any] = []
        for (i, j), ax in panels.items():   # (in the order the axes were made)
            if i == j:
                drawn.append(ax)
            else:
                points, ellipses, centres = pieces[i, j]
                mine = {id(a) for a in (*(line for *_, line in points), *ellipses, centres)}
                drawn += sorted((a for a in ax.get_children() if id(a) in mine),
                                key=lambda a: a.get_zorder())
        return L.finish_over(fig, picture, [*drawn, legend])


DRAW["density"] = draw_density
DRAW["scatter"] = draw_scatter
