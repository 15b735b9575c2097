"""Latent class models: the item-response profile by class (``profile.png``)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from . import layout as L
from .captions import t
from .spec import DRAW, Spec

__all__ = ["profile_data", "profile_spec", "profile_plot"]


def _what(categories: Sequence[Sequence[str]]) -> str:
    """What a binary profile's y axis shows: the shared second code, or each item's."""
    sizes = [len(c) for c in categories]
    shared = all(list(c) == list(categories[0]) for c in categories)
    return (f"answer {categories[0][1]}" if shared and sizes[0] == 2
            else "each item's second code")


def profile_data(items: Sequence[Any], categories: Sequence[Sequence[Any]], n_classes: int
                 ) -> Spec:
    """The profile's first-stage :class:`~.spec.Spec`: item names, codes and the number of
    classes."""
    meta = {"items": [str(i) for i in items],
            "categories": [[str(c) for c in cats] for cats in categories],
            "n_classes": int(n_classes)}
    return Spec("profile", meta, {}, "", frozenset(meta))


def profile_spec(prob: np.ndarray, weight: np.ndarray, items: Sequence[Any],
                 categories: Sequence[Sequence[Any]]) -> Spec:
    """The profile's :class:`~.spec.Spec` (arguments as :func:`profile_plot`)."""
    prob = np.asarray(prob, dtype=float)
    spec = profile_data(items, categories, prob.shape[0])
    cats = spec.meta["categories"]
    binary = max(len(c) for c in cats) <= 2
    spec.caption = (t("plots.profile_binary", what=_what(cats)) if binary
                    else t("plots.profile_stacked"))
    spec.arrays.update(prob=prob, weight=np.asarray(weight, dtype=float))
    return spec


def profile_plot(prob: np.ndarray, weight: np.ndarray, items: Sequence[str],
                 categories: Sequence[Sequence[str]]) -> L.Plot:
    """Item-response profile of a latent class model.

    ``prob`` (K, J, Cmax) as ``LatentClassModel`` stores it (padded with zeros past each
    item's categories), ``weight`` (K,), ``items`` (J names), ``categories`` (each item's
    codes, in the model's order).  Every item binary: one line per class through the
    probability of each item's second category (the y label names the code when all items
    share their codes), as Mplus and poLCA users read profiles.  Any item with 3+
    categories: one panel per class, one stacked bar per item (categories bottom-up in the
    item's order, a sequential colour per position), as poLCA's ``plot()`` shows them.
    """
    from .spec import render

    return render(profile_spec(prob, weight, items, categories))


def _class_lines(ax: Any, x: np.ndarray, K: int, colors: Sequence[Any],
                 series: np.ndarray | None = None, weight: Sequence[float] | None = None
                 ) -> list[Any]:
    """A binary profile's line of each class (empty without ``series``); labelled with
    ``weight`` (default: every class at 100%, the widest label a class can have)."""
    from matplotlib.lines import Line2D

    lines = []
    for k in range(K):
        label = L.class_label(k, weight if weight is not None else [1.0] * K)
        line = Line2D(x if series is not None else [], series[k] if series is not None else [],
                      marker="os^Dv<>ph*"[k % 10], color=colors[k], linewidth=1.4,
                      markersize=5, label=label)
        lines.append(ax.add_line(line) if series is not None else line)
    return lines


def _legend_room(fig: Any, legend: Any) -> float:
    """The right margin (inches) of a legend placed just right of the axes."""
    return L.legend_width(fig, legend) + 0.012 * fig.get_size_inches()[0] + 4.0 / L.PT


def draw_profile(meta: dict[str, Any], arrays: dict[str, np.ndarray]):
    """The profile's two stages.  Binary items: the whole layout is the data's (the y range
    is 0-1, the right margin holds a legend of classes at 100%, the widest their labels can
    be), so the first stage also lays it out, and when run ahead of the estimate
    (:func:`~.spec.ahead`) draws it without the class lines and legend, which the second
    stage draws on that picture (:func:`~.layout.finish_over`; the lines stay 3% of the
    range inside the axes, off the spines drawn after them in a whole draw: the same
    bytes)."""
    import matplotlib

    from .spec import ahead

    items, categories, K = meta["items"], meta["categories"], int(meta["n_classes"])
    J = len(items)
    sizes = [len(c) for c in categories]
    shared = all(list(c) == list(categories[0]) for c in categories)
    x = np.arange(J)
    rotate = J > 8 or max(len(str(i)) for i in items) > 6
    binary = max(sizes) <= 2
    with L.style():
        if binary:
            fig = L.figure(min(max(6.4, 0.42 * J + 2.8), L.MAX_WIDTH), 4.6)
            ax = fig.add_subplot(1, 1, 1)
            ax.set_ylabel(f"P({_what(categories)})")
            ax.set_ylim(-0.03, 1.03)
            ax.set_xlim(-0.5, J - 0.5)
            ax.grid(axis="y", color="0.9")
            title = "Item-response probabilities by class"
            L.title(ax, title)
            L.make_ticks(ax.yaxis)
            axes = [ax]
        else:
            fig = L.figure(min(max(6.4, 0.36 * J + 3.2), L.MAX_WIDTH), 1.55 * K + 1.3)
            axes = [fig.add_subplot(K, 1, k + 1) for k in range(K)]
            for k, ax in enumerate(axes):
                ax.set_ylim(0, 1)
                ax.set_xlim(-0.5, J - 0.5)
                ax.set_yticks([0, 0.5, 1])
                L.make_ticks(ax.yaxis, 3)
                if k < K - 1:
                    ax.tick_params(labelbottom=False)
            title = "Item-response probabilities by class (stacked categories)"
            L.title(axes[0], title)
        for ax in axes:
            ax.set_xticks(x)
        axes[-1].set_xticklabels([str(i) for i in items], rotation=45 if rotate else 0,
                                 ha="right" if rotate else "center", fontsize=8)
        colors = L.colors(K)
        picture = None
        if binary:
            widest = ax.legend(handles=_class_lines(ax, x, K, colors), fontsize=8,
                               loc="center left", bbox_to_anchor=(1.01, 0.5))
            L.single_axes_margins(fig, ax, title=title, x_rotated=rotate, x_tick_size=8,
                                  right=_legend_room(fig, widest))
            widest.remove()
            if ahead():
                picture = L.background(fig, [])
    yield
    prob, weight = arrays["prob"], arrays["weight"]
    with L.style():
        if binary:
            second = np.full((K, J), np.nan)     # an item with a single code has no second
            two = np.array(sizes) == 2
            if two.any():
                second[:, two] = prob[:, two, 1]
            lines = _class_lines(ax, x, K, colors, second, weight)
            legend = ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
            if picture is not None:
                return L.finish_over(fig, picture, [*lines, legend])
            return L.finish(fig)
        else:
            cmax = max(sizes)
            cmap = matplotlib.colormaps["viridis"]
            ccols = [cmap(0.9 * c / max(cmax - 1, 1)) for c in range(cmax)]
            for k, ax in enumerate(axes):
                bottom = np.zeros(J)
                for c in range(cmax):
                    h = np.where(np.array(sizes) > c, prob[k, :, c], 0.0)
                    label = (str(categories[0][c]) if shared else f"category {c + 1}")
                    ax.bar(x, h, bottom=bottom, width=0.75, color=ccols[c],
                           edgecolor="white", linewidth=0.4, label=label if k == 0 else None)
                    bottom += h
                ax.set_ylabel(L.class_label(k, weight).replace(" (", "\n("), fontsize=8)
            handles, labels = axes[0].get_legend_handles_labels()
            legend = axes[0].legend(handles[::-1], labels[::-1], fontsize=8, loc="upper left",
                                    bbox_to_anchor=(1.01, 1.0),
                                    title="answer" if shared else "in item order",
                                    title_fontsize=8)
        width = fig.get_size_inches()[0]
        L.single_axes_margins(fig, axes[-1], title=title, x_rotated=rotate, x_tick_size=8,
                              right=_legend_room(fig, legend))
        if len(axes) > 1:   # the class labels are two lines at 8 points
            left = (L.tick_room(fig, axes[0].yaxis, 10, True)
                    + 2 * L.text_size(fig, ["class"], 8)[1] * 1.2 + 4.0 / L.PT)
            pars = fig.subplotpars
            fig.subplots_adjust(left=max(pars.left, (left + L.EDGE) / width), hspace=0.12)
        return L.finish(fig)


DRAW["profile"] = draw_profile
