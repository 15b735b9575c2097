"""Mixtures of regressions: the data with each class's line (``regression.png``)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from . import layout as L
from .captions import t
from .gaussian import _small_int, density_spec
from .spec import DRAW, Spec

__all__ = ["regression_spec", "regression_plot"]


def regression_spec(X: np.ndarray, y: np.ndarray, predictors: Sequence[str], target: str,
                    weight: np.ndarray, coef: np.ndarray, sigma: np.ndarray,
                    modal: np.ndarray) -> Spec:
    """The regression figure's :class:`~.spec.Spec` (arguments as :func:`regression_plot`)."""
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float).reshape(-1)
    coef = np.asarray(coef, dtype=float)
    weight = np.asarray(weight, dtype=float)
    predictors = [str(p) for p in predictors]
    slopes = [p for p, name in enumerate(predictors) if name != "intercept"]
    if not slopes:
        return density_spec(y, weight, coef[:, 0], np.asarray(sigma, dtype=float), target,
                            caption_key="plots.regression_density")
    n = y.size
    arrays = {"y": y, "weight": weight, "coef": coef, "modal": _small_int(modal)}
    if len(slopes) == 1:
        arrays["x"] = X[:, slopes[0]]
        caption = t("plots.regression_line", target=target, predictor=predictors[slopes[0]])
    else:
        arrays["X"] = X
        caption = t("plots.regression_fitted", target=target)
    return Spec("regression", {"predictors": predictors, "target": str(target)}, arrays,
                caption + L.subsample_note(n, min(n, L.MAX_POINTS)))


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


def draw_regression(meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
                    ) -> tuple[bytes, int, int]:
    from matplotlib.lines import Line2D

    y, weight, coef, modal = arrays["y"], arrays["weight"], arrays["coef"], arrays["modal"]
    predictors, target = meta["predictors"], meta["target"]
    slopes = [p for p, name in enumerate(predictors) if name != "intercept"]
    K, n = weight.size, y.size
    colors = L.colors(K)
    idx = L.subsample(n)
    groups = modal[idx]
    with L.style():
        fig = L.figure(6.4, 5.0)
        ax = fig.add_subplot(1, 1, 1)
        handles = []
        if len(slopes) == 1:
            p = slopes[0]
            x = arrays["x"]
            L.points(ax, x[idx], y[idx], groups, colors, L.marker_size(idx.size))
            lo, hi = L.data_range(np.min(x), np.max(x))
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
            ax.set_xlim(lo, hi)
            ax.set_xlabel(str(predictors[p]))
            ax.set_ylabel(str(target))
            ax.set_title(f"{target} against {predictors[p]} with each class's line", fontsize=10)
        else:
            X = arrays["X"]
            fitted = np.einsum("ij,ij->i", X[idx], coef[modal[idx]])
            L.points(ax, fitted, y[idx], groups, colors, L.marker_size(idx.size))
            lo = min(float(fitted.min()), float(y[idx].min()))
            hi = max(float(fitted.max()), float(y[idx].max()))
            ax.plot([lo, hi], [lo, hi], color="0.3", linestyle="--", linewidth=1)
            handles = [Line2D([], [], color=colors[k], marker="o", linestyle="none",
                              label=L.class_label(k, weight)) for k in range(K)]
            ax.set_xlabel(f"fitted {target} (modal class)")
            ax.set_ylabel(f"observed {target}")
            ax.set_title(f"Observed against fitted {target} by modal class", fontsize=10)
        if idx.size < n:
            ax.set_title(ax.get_title() + f"\n({idx.size} of {n} rows shown)", fontsize=10)
        ax.legend(handles=handles, fontsize=8)
        L.single_axes_margins(fig, ax, title=ax.get_title())
        return L.finish(fig)


DRAW["regression"] = draw_regression
