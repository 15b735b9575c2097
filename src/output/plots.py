"""Figures of a run, drawn headless (matplotlib's Agg canvas; pyplot is never imported, so
no backend is chosen for the caller) and returned as PNG bytes.

The PNG carries no date and no software version (``metadata``), and every figure is drawn
under matplotlib's default settings (a user's ``matplotlibrc`` is ignored), so the same
numbers give the same bytes: a resumed run's figures are byte-identical to an uninterrupted
run's.  Figure text is English (the bundled font has no Chinese glyphs; a CJK font, when
installed, is used for column and item names); captions follow ``--lang``.

One call gives every figure of a fit: :func:`figures` ``(model, data, params, resp)`` ->
``{file name: Plot}``, chosen by ``model.name``:

============  =========================================================================
``lca``       ``profile.png``: item-response probabilities by class
``gmm``       ``scatter.png`` (2+ columns) or ``density.png`` (one column)
``mixreg``    ``regression.png``: the data with each class's line
every model   ``posterior.png``: histogram of the largest posterior probability per row
============  =========================================================================

Large data: histograms and densities use every row; scatter plots draw at most
:data:`MAX_POINTS` rows, a fixed random subset (``src.utils.rng.stream(0,
"plot-points")``, so always the same rows for the same n) drawn in random order so no
class hides another; lines, ellipses and axis ranges come from the parameters and all rows.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from src.utils.messages import register, t
from src.utils.rng import stream

__all__ = ["criteria_plot", "Plot", "figures", "profile_plot", "scatter_plot", "density_plot",
           "regression_plot", "posterior_plot", "posterior_histogram", "ellipse_geometry", "subsample", "covariances",
           "MAX_POINTS", "MAX_COLUMNS", "ELLIPSE_LEVEL", "DPI"]

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
    """Lay out, render to PNG without date or software, and wrap with the caption."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tight_layout's "not compatible" notes
        fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    w, h = fig.get_size_inches()
    return Plot(buf.getvalue(), caption, int(round(w * DPI)), int(round(h * DPI)))


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
            ax.set_title("Item-response probabilities by class", fontsize=10)
            ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
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
                    ax.set_xticklabels([])
            axes[0].set_title("Item-response probabilities by class (stacked categories)",
                              fontsize=10)
            handles, labels = axes[0].get_legend_handles_labels()
            axes[0].legend(handles[::-1], labels[::-1], fontsize=8, loc="upper left",
                           bbox_to_anchor=(1.01, 1.0),
                           title="answer" if shared else "in item order", title_fontsize=8)
            caption = t("plots.profile_stacked")
        for ax in axes:
            ax.set_xticks(x)
        axes[-1].set_xticklabels([str(i) for i in items], rotation=45 if rotate else 0,
                                 ha="right" if rotate else "center", fontsize=8)
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
        ax.set_title(f"Density of {column}: data and mixture (n = {x.size})", fontsize=10)
        return _finish(fig, t(caption_key, column=column, target=column, n=x.size))


def scatter_plot(X: np.ndarray, columns: Sequence[str], weight: np.ndarray,
                 means: np.ndarray, covs: np.ndarray, modal: np.ndarray) -> Plot:
    """Pairwise scatter of a Gaussian mixture's data coloured by modal class.

    ``X`` (n, D) with D >= 2, ``means`` (K, D), ``covs`` (K, D, D), ``modal`` (n,) 0-based.
    Each component's mean (x) and its :data:`ELLIPSE_LEVEL` ellipse in the plane of the two
    columns (the 2 x 2 block of its covariance: the marginal of a normal is normal).  Two
    columns: one panel; more: the lower triangle of a matrix whose diagonal shows each
    column's histogram (all rows) with the weighted component densities.  At most
    :data:`MAX_COLUMNS` columns (the first ones, noted in the title); at most
    :data:`MAX_POINTS` points (:func:`subsample`).
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Ellipse

    X = np.asarray(X, dtype=float)
    n, D = X.shape
    m = min(D, MAX_COLUMNS)
    weight = np.asarray(weight, dtype=float)
    means = np.asarray(means, dtype=float)
    covs = np.asarray(covs, dtype=float)
    K = weight.size
    colors = np.array(_colors(K))
    idx = subsample(n)
    point_colors = colors[np.asarray(modal)[idx]]
    ranges = [_range(X[:, j]) for j in range(m)]
    title = f"Data by modal class, {ELLIPSE_LEVEL:.0%} ellipses"
    if D > m:
        title += f" (first {m} of {D} columns)"
    if idx.size < n:
        title += f"; {idx.size} of {n} rows shown"

    def pair(ax: Any, i: int, j: int) -> None:   # column j across, column i up
        ax.scatter(X[idx, j], X[idx, i], c=point_colors,
                   s=_marker_size(idx.size) * (1.0 if m == 2 else 0.5), linewidths=0, alpha=0.6)
        for k in range(K):
            sub = covs[k][np.ix_([j, i], [j, i])]
            w, h, ang = ellipse_geometry(sub)
            ax.add_patch(Ellipse((means[k, j], means[k, i]), w, h, angle=ang, fill=False,
                                 edgecolor=colors[k], linewidth=1.6))
            ax.plot(means[k, j], means[k, i], marker="x", color="black", markersize=6,
                    markeredgewidth=1.5)
        ax.set_xlim(*ranges[j])
        ax.set_ylim(*ranges[i])

    with _style():   # every artist is made inside: rcParams are read when it is created
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
        else:
            size = 1.6 * m + 1.0
            fig = _figure(size, size)
            sds = np.sqrt(np.stack([np.diag(c) for c in covs]))
            for i in range(m):
                for j in range(i + 1):
                    ax = fig.add_subplot(m, m, i * m + j + 1)
                    if i == j:
                        _draw_marginal(ax, X[:, i], weight, means[:, i], sds[:, i], colors)
                        ax.set_yticks([])
                    else:
                        pair(ax, i, j)
                    ax.tick_params(labelsize=7)
                    if i == m - 1:
                        ax.set_xlabel(str(columns[j]), fontsize=8)
                    else:
                        ax.set_xticklabels([])
                    if j == 0 and i > 0:
                        ax.set_ylabel(str(columns[i]), fontsize=8)
                    elif j > 0:
                        ax.set_yticklabels([])
            fig.legend(handles=handles, fontsize=8, loc="upper right")
            fig.suptitle(title, fontsize=10)
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
    colors = np.array(_colors(K))
    idx = subsample(n)
    with _style():
        fig = _figure(6.4, 5.0)
        ax = fig.add_subplot(1, 1, 1)
        handles = []
        if len(slopes) == 1:
            p = slopes[0]
            x = X[:, p]
            ax.scatter(x[idx], y[idx], c=colors[modal[idx]], s=_marker_size(idx.size),
                       linewidths=0, alpha=0.6)
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
            ax.scatter(fitted, y[idx], c=colors[modal[idx]], s=_marker_size(idx.size),
                       linewidths=0, alpha=0.6)
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
        return _finish(fig, caption + _subsample_note(n, idx.size))


# ----------------------------------------------------------------------- any model
def posterior_histogram(resp: np.ndarray, bins: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """(edges (bins+1,), counts (K, bins)): every row's largest posterior probability
    binned on equal bins from 1/K (K = 1: 0) to 1, by modal class; numpy.histogram's
    convention (left-closed bins, the last one closed)."""
    resp = np.asarray(resp, dtype=float)
    K = resp.shape[1]
    top = resp.max(axis=1)
    modal = resp.argmax(axis=1)
    edges = np.linspace(1.0 / K if K > 1 else 0.0, 1.0, bins + 1)
    b = np.clip(np.searchsorted(edges, top, side="right") - 1, 0, bins - 1)
    return edges, np.bincount(modal * bins + b, minlength=K * bins).reshape(K, bins)


def posterior_plot(resp: np.ndarray) -> Plot:
    """Histogram of every row's largest posterior probability, stacked by modal class.

    ``resp`` (n, K).  40 equal bins from 1/K (the smallest possible largest posterior) to 1
    (K = 1: from 0); a dashed line at 0.7, the usual threshold of a clear assignment.
    """
    resp = np.asarray(resp, dtype=float)
    n, K = resp.shape
    top = resp.max(axis=1)
    edges, counts = posterior_histogram(resp)
    nb = edges.size - 1
    colors = _colors(K)
    mean = float(top.mean()) if n else math.nan
    with _style():
        fig = _figure(6.4, 4.2)
        ax = fig.add_subplot(1, 1, 1)
        bottom = np.zeros(nb)
        for k in range(K):
            ax.bar(edges[:-1], counts[k], width=np.diff(edges), bottom=bottom, align="edge",
                   color=colors[k], linewidth=0, label=f"class {k + 1}")
            bottom += counts[k]
        ax.axvline(0.7, color="0.3", linestyle="--", linewidth=1)
        ax.set_xlim(edges[0], 1.0)
        ax.set_xlabel("largest posterior probability")
        ax.set_ylabel("rows")
        ax.set_title(f"Largest posterior probability per row (n = {n}, mean {mean:.3f})",
                     fontsize=10)
        ax.legend(fontsize=8, title="modal class", title_fontsize=8, loc="upper left")
        return _finish(fig, t("plots.posterior", n=n, mean=mean))


# ------------------------------------------------------------------------ dispatcher
def figures(model: Any, data: Mapping[str, np.ndarray], params: Mapping[str, np.ndarray],
            resp: np.ndarray) -> dict[str, Plot]:
    """Every figure of a fitted model: ``{file name: Plot}`` in a fixed order.

    ``model`` set up (``setup(meta)`` done), ``data`` its arrays (``prepared.data``),
    ``params`` the estimate, ``resp`` (n, K) the posterior class probabilities of the same
    rows in the same order.  By ``model.name``: ``"lca"`` -> ``profile.png``; ``"gmm"`` ->
    ``scatter.png`` (2+ columns) or ``density.png`` (1 column); ``"mixreg"`` ->
    ``regression.png``; then for every model, user models too, ``posterior.png``.
    Write ``plot.png`` bytes as they are; ``plot.caption`` is in the current language.
    """
    resp = np.asarray(resp, dtype=float)
    modal = resp.argmax(axis=1)
    out: dict[str, Plot] = {}
    name = getattr(model, "name", "")
    if name in ("lca", "gmm", "mixreg"):
        w = np.asarray(params["weight"], dtype=float)
    if name == "lca":
        out["profile.png"] = profile_plot(params["prob"], w, model.items, model.categories)
    elif name == "gmm":
        X = np.asarray(data["X"], dtype=float)
        covs = covariances(model, params)
        means = np.asarray(params["mean"], dtype=float).reshape(w.size, -1)
        if X.shape[1] == 1:
            out["density.png"] = density_plot(X[:, 0], w, means[:, 0], np.sqrt(covs[:, 0, 0]),
                                              model.columns[0])
        else:
            out["scatter.png"] = scatter_plot(X, model.columns, w, means, covs, modal)
    elif name == "mixreg":
        out["regression.png"] = regression_plot(
            data["X"], data["y"], model.predictors, str(model.meta.get("target", "y")), w,
            params["coef"], params["sigma"], modal)
    out["posterior.png"] = posterior_plot(resp)
    return out


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
