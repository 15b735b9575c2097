"""Mixtures of regressions: the data with each class's line (``regression.png``)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from . import layout as L
from .captions import t
from .gaussian import _small_int, density_data, density_spec
from .spec import DRAW, Spec

__all__ = ["regression_data", "regression_spec", "regression_plot"]


def regression_data(X: np.ndarray, y: np.ndarray, predictors: Sequence[str], target: str
                    ) -> Spec:
    """The regression figure's first-stage :class:`~.spec.Spec`: the target, the predictor
    (one) or the design (several) and their names; an intercept-only design gives the
    target's density (:func:`~.gaussian.density_data`)."""
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float).reshape(-1)
    predictors = [str(p) for p in predictors]
    slopes = [p for p, name in enumerate(predictors) if name != "intercept"]
    if not slopes:
        return density_data(y, target)
    arrays = {"y": y}
    if len(slopes) == 1:
        arrays["x"] = X[:, slopes[0]]
    else:
        arrays["X"] = X
    meta = {"predictors": predictors, "target": str(target)}
    return Spec("regression", meta, arrays, "", frozenset([*meta, *arrays]))


def regression_spec(X: np.ndarray, y: np.ndarray, predictors: Sequence[str], target: str,
                    weight: np.ndarray, coef: np.ndarray, sigma: np.ndarray,
                    modal: np.ndarray) -> Spec:
    """The regression figure's :class:`~.spec.Spec` (arguments as :func:`regression_plot`)."""
    coef = np.asarray(coef, dtype=float)
    weight = np.asarray(weight, dtype=float)
    spec = regression_data(X, y, predictors, target)
    if spec.kind == "density":
        y = spec.arrays["x"]
        full = density_spec(y, weight, coef[:, 0], np.asarray(sigma, dtype=float), target,
                            caption_key="plots.regression_density")
        return full
    n = spec.arrays["y"].size
    if "x" in spec.arrays:
        slope = next(p for p in spec.meta["predictors"] if p != "intercept")
        caption = t("plots.regression_line", target=target, predictor=slope)
    else:
        caption = t("plots.regression_fitted", target=target)
    spec.arrays.update(weight=weight, coef=coef, modal=_small_int(modal))
    spec.caption = caption + L.subsample_note(n, min(n, L.MAX_POINTS))
    return spec


def regression_plot(X: np.ndarray, y: np.ndarray, predictors: Sequence[str], target: str,
                    weight: np.ndarray, coef: np.ndarray, sigma: np.ndarray,
                    modal: np.ndarray) -> L.Plot:
    """A mixture of regressions' data with each class's fit.

    ``X`` (n, P) the design as ``MixtureRegressionModel`` holds it (``predictors`` names its
    columns, ``intercept`` first when on), ``y`` (n,), ``coef`` (K, P), ``sigma`` (K,),
    ``modal`` (n,) 0-based.  One predictor besides the intercept: ``target`` against it
    with each class's line over the predictor's range.  Several: observed against fitted
    under each row's modal class, with the diagonal.  Intercept only: the density of the
    target with each class's weighted normal (as :func:`~.gaussian.density_plot`).
    """
    from .spec import render

    return render(regression_spec(X, y, predictors, target, weight, coef, sigma, modal))


def draw_regression(meta: dict[str, Any], arrays: dict[str, np.ndarray]):
    from matplotlib.lines import Line2D

    y, predictors, target = arrays["y"], meta["predictors"], meta["target"]
    slopes = [p for p, name in enumerate(predictors) if name != "intercept"]
    n = y.size
    idx = L.subsample(n)
    with L.style():
        fig = L.figure(6.4, 5.0)
        ax = fig.add_subplot(1, 1, 1)
        if len(slopes) == 1:
            p = slopes[0]
            x = arrays["x"]
            lo, hi = L.data_range(np.min(x), np.max(x))
            ax.set_xlim(lo, hi)
            ax.set_xlabel(str(predictors[p]))
            ax.set_ylabel(str(target))
            title = f"{target} against {predictors[p]} with each class's line"
        else:
            ax.set_xlabel(f"fitted {target} (modal class)")
            ax.set_ylabel(f"observed {target}")
            title = f"Observed against fitted {target} by modal class"
        if idx.size < n:
            title += f"\n({idx.size} of {n} rows shown)"
        L.title(ax, title)
        L.make_ticks(ax.xaxis)
        L.make_ticks(ax.yaxis)
    yield
    weight, coef, modal = arrays["weight"], arrays["coef"], arrays["modal"]
    K = weight.size
    colors = L.colors(K)
    groups = modal[idx]
    with L.style():
        handles = []
        if len(slopes) == 1:
            L.points(ax, x[idx], y[idx], groups, colors, L.marker_size(idx.size))
            grid = np.array([lo, hi])
            has_intercept = "intercept" in predictors
            for k in range(K):
                a = float(coef[k, list(predictors).index("intercept")]) if has_intercept else 0.0
                b = float(coef[k, p])
                ax.plot(grid, a + b * grid, color=colors[k], linewidth=2)
                line = (f"{a:.3g} {'-' if b < 0 else '+'} {abs(b):.3g} x" if has_intercept
                        else f"{b:.3g} x")
                handles.append(Line2D([], [], color=colors[k], marker="o",
                                      label=f"{L.class_label(k, weight)}: y = {line}"))
        else:
            X = arrays["X"]
            fitted = np.einsum("ij,ij->i", X[idx], coef[modal[idx]])
            L.points(ax, fitted, y[idx], groups, colors, L.marker_size(idx.size))
            lo = min(float(fitted.min()), float(y[idx].min()))
            hi = max(float(fitted.max()), float(y[idx].max()))
            ax.plot([lo, hi], [lo, hi], color="0.3", linestyle="--", linewidth=1)
            handles = [Line2D([], [], color=colors[k], marker="o", linestyle="none",
                              label=L.class_label(k, weight)) for k in range(K)]
        ax.legend(handles=handles, fontsize=8)
        L.single_axes_margins(fig, ax, title=ax.get_title())
        return L.finish(fig)


DRAW["regression"] = draw_regression
