"""Figures of a run, drawn headless (matplotlib's Agg canvas; pyplot is never imported, so
no backend is chosen for the caller) and returned as PNG bytes.

The PNG carries no date and no software version, and every figure is drawn under
matplotlib's default settings (a user's ``matplotlibrc`` is ignored), so the same numbers
give the same bytes: a resumed run's figures are byte-identical to an uninterrupted run's,
and a figure drawn in the drawing process (:mod:`src.output.background`) to one drawn
here.  Figure text is English (the bundled font has no Chinese glyphs; a CJK font, when installed, is
used for column and item names); captions follow ``--lang``.

One call gives every figure of a fit: :func:`figures` ``(model, data, params, resp)`` ->
``{file name: Plot}``.  Which figures a model gets is what its family declares,
``MixtureModel.figures`` (as it declares its summaries), each name one entry of
:data:`FIGURES` and one file ``<name>.png``:

==============  =======================================================================
``profile``     item-response probabilities by class (``LatentClassModel``: its
                summary ``response_patterns`` implies it) -- :mod:`.profile`
``scatter``     pairwise scatter with each component's ellipse (Gaussian mixtures of 2+
                columns) -- :mod:`.gaussian`
``density``     the one column's histogram with the mixture density (one column)
                -- :mod:`.gaussian`
``regression``  the data with each class's line (mixtures of regressions) --
                :mod:`.regression`
every model     ``posterior.png``: histogram of the largest posterior probability per row
                -- :mod:`.posterior`
==============  =======================================================================

A figure that does not apply to the data (``scatter`` of one column) is left out.  With
several K, :mod:`.criteria` draws the information criteria against K.

Each figure is a *spec* (:mod:`.spec`: plain arrays and names gathered in the run) and a
drawing function in two stages (what the data alone give, then the estimate's part);
:mod:`.layout` holds what the drawings share (margins fixed from measured text, points as
markers).  A run with plots starts the drawing process as it begins (matplotlib is imported
there, on another core, while the data are read), sends it the first stages once the data
are read (:func:`src.output.background.submit_data`: drawn while the model is fitted) and
the rest as soon as the estimate is known (:func:`src.output.background.submit_fit`), and
:func:`figures` collects the PNGs it drew meanwhile; drawn here when the process is not
there or failed.

Large data: histograms and densities use every row; scatter plots draw at most
:data:`MAX_POINTS` rows, a fixed random subset (``src.utils.rng.stream(0,
"plot-points")``, so always the same rows for the same n) drawn in random order so no
class hides another; lines, ellipses and axis ranges come from the parameters and all rows.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Mapping

import numpy as np

from .criteria import criteria_plot, criteria_spec
from .gaussian import (ELLIPSE_LEVEL, MAX_COLUMNS, covariances, density_data, density_plot,
                       density_spec, ellipse_geometry, ellipse_range, scatter_data, scatter_plot,
                       scatter_spec)
from .layout import DPI, MAX_POINTS, Plot, subsample
from .posterior import posterior_data, posterior_histogram, posterior_plot, posterior_spec
from .profile import profile_data, profile_plot, profile_spec
from .regression import regression_data, regression_plot, regression_spec
from .spec import Spec, render

__all__ = ["criteria_plot", "criteria_spec", "Plot", "Spec", "figures", "figure_specs",
           "figure_data_specs", "FIGURES", "SPECS", "DATA_SPECS",
           "profile_plot", "scatter_plot", "density_plot", "regression_plot", "posterior_plot",
           "posterior_histogram", "ellipse_geometry", "subsample", "covariances", "preload",
           "render", "MAX_POINTS", "MAX_COLUMNS", "ELLIPSE_LEVEL", "DPI"]


def _ellipse_range(x: np.ndarray, means: np.ndarray, variances: np.ndarray,
                   level: float = ELLIPSE_LEVEL) -> tuple[float, float]:
    """:func:`.gaussian.ellipse_range` of the data ``x``."""
    return ellipse_range(np.min(x), np.max(x), means, variances, level)


# --------------------------------------------------------------- background import
_PRELOAD: threading.Thread | None = None
_PRELOAD_LOCK = threading.Lock()

#: what the first figure imports (Figure, the Agg canvas, fonts and their cache, artists,
#: tickers, Pillow's PNG writer)
PRELOAD_MODULES = ("matplotlib.figure", "matplotlib.backends.backend_agg",
                   "matplotlib.font_manager", "matplotlib.lines", "matplotlib.patches",
                   "matplotlib.ticker", "PIL.Image", "PIL.PngImagePlugin")


def _import_matplotlib() -> None:
    """Import :data:`PRELOAD_MODULES`; a failure is left for the drawing to report."""
    import importlib

    for name in PRELOAD_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # pragma: no cover - drawing raises it again, in the main thread
            return


def preload() -> threading.Thread:
    """Start importing matplotlib in a daemon thread (once per process) and return it.

    For figures drawn in this process (several K: every K's figures and the criteria
    plot).  The import (0.3-1 s) runs on the second core while a fit works in NumPy, which
    releases the GIL; a fit that holds the GIL (LCA's EM on a few hundred answer patterns
    is Python-bound) is delayed by about the import instead.  Nothing is drawn or
    configured in the thread; :func:`figures` and :func:`criteria_plot` wait for it."""
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


# ------------------------------------------------------------------------ dispatcher
def _weights(params: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.asarray(params["weight"], dtype=float).reshape(-1)


def _profile(model: Any, data: Mapping[str, np.ndarray], params: Mapping[str, np.ndarray],
             post: Any) -> Spec | None:
    return profile_spec(params["prob"], _weights(params), model.items, model.categories)


def _gmm_parts(model: Any, data: Mapping[str, np.ndarray], params: Mapping[str, np.ndarray]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    w = _weights(params)
    return (np.asarray(data["X"], dtype=float), w, covariances(model, params),
            np.asarray(params["mean"], dtype=float).reshape(w.size, -1))


def _scatter(model: Any, data: Mapping[str, np.ndarray], params: Mapping[str, np.ndarray],
             post: Any) -> Spec | None:
    X, w, covs, means = _gmm_parts(model, data, params)
    if X.shape[1] < 2:
        return None
    return scatter_spec(X, model.columns, w, means, covs, post.rows().argmax(axis=1))


def _density(model: Any, data: Mapping[str, np.ndarray], params: Mapping[str, np.ndarray],
             post: Any) -> Spec | None:
    X, w, covs, means = _gmm_parts(model, data, params)
    if X.shape[1] != 1:
        return None
    return density_spec(X[:, 0], w, means[:, 0], np.sqrt(covs[:, 0, 0]), model.columns[0])


def _regression(model: Any, data: Mapping[str, np.ndarray], params: Mapping[str, np.ndarray],
                post: Any) -> Spec | None:
    return regression_spec(data["X"], data["y"], model.predictors,
                           str(model.meta.get("target", "y")), _weights(params), params["coef"],
                           params["sigma"], post.rows().argmax(axis=1))


#: figure name (``MixtureModel.figures``; the file is ``<name>.png``) -> function
#: ``(model, data, params, posteriors) -> Spec``, or None when it does not apply to the
#: data.  The names are :data:`src.models.base.FIGURE_NAMES` (a family declaring another
#: is an error when its class is defined).
SPECS: dict[str, Callable[..., Spec | None]] = {
    "profile": _profile,
    "scatter": _scatter,
    "density": _density,
    "regression": _regression,
}


def _data_columns(model: Any, data: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.asarray(data["X"], dtype=float)


#: figure name -> function ``(model, data) -> Spec`` of the figure's first stage (what the
#: data alone give: :attr:`Spec.stage1`), or None when it does not apply to the data; the
#: same decision as :data:`SPECS`
DATA_SPECS: dict[str, Callable[..., Spec | None]] = {
    "profile": lambda model, data: profile_data(model.items, model.categories,
                                                model.n_components),
    "scatter": lambda model, data: (scatter_data(_data_columns(model, data), model.columns,
                                                 model.n_components)
                                    if _data_columns(model, data).shape[1] >= 2 else None),
    "density": lambda model, data: (density_data(_data_columns(model, data)[:, 0],
                                                 model.columns[0])
                                    if _data_columns(model, data).shape[1] == 1 else None),
    "regression": lambda model, data: regression_data(data["X"], data["y"], model.predictors,
                                                      str(model.meta.get("target", "y"))),
}


def _drawn(spec_of: Callable[..., Spec | None]) -> Callable[..., Plot | None]:
    def draw(model: Any, data: Mapping[str, np.ndarray], params: Mapping[str, np.ndarray],
             post: Any) -> Plot | None:
        spec = spec_of(model, data, params, post)
        return None if spec is None else render(spec)
    draw.__doc__ = f"{spec_of.__name__} drawn: a Plot or None."
    return draw


#: figure name -> function ``(model, data, params, posteriors) -> Plot`` or None (the
#: :data:`SPECS` drawn in this process)
FIGURES: dict[str, Callable[..., Plot | None]] = {name: _drawn(f) for name, f in SPECS.items()}


def figure_specs(model: Any, data: Mapping[str, np.ndarray], params: Mapping[str, np.ndarray],
                 resp: Any) -> dict[str, Spec]:
    """The :class:`~.spec.Spec` of every figure :func:`figures` draws, by file name, in its
    order (arguments as :func:`figures`)."""
    from src.inference.classification import as_posteriors

    post = as_posteriors(resp)
    out: dict[str, Spec] = {}
    for name in getattr(model, "figures", ()) or ():
        spec = SPECS[name](model, data, params, post)
        if spec is not None:
            out[f"{name}.png"] = spec
    out["posterior.png"] = posterior_spec(post)
    return out


def figure_data_specs(model: Any, data: Mapping[str, np.ndarray]) -> dict[str, Spec]:
    """The first stage of every figure :func:`figures` draws (what the data alone give),
    by file name, in its order: the same figures as :func:`figure_specs` of this model and
    data, whose ``stage1`` keys and values these are."""
    out: dict[str, Spec] = {}
    for name in getattr(model, "figures", ()) or ():
        spec = DATA_SPECS[name](model, data)
        if spec is not None:
            out[f"{name}.png"] = spec
    out["posterior.png"] = posterior_data(int(next(iter(data.values())).shape[0]),
                                          int(model.n_components))
    return out


def figures(model: Any, data: Mapping[str, np.ndarray], params: Mapping[str, np.ndarray],
            resp: Any) -> Mapping[str, Plot]:
    """Every figure of a fitted model: ``{file name: Plot}`` in a fixed order.

    ``model`` set up (``setup(meta)`` done), ``data`` its arrays (``prepared.data``),
    ``params`` the estimate, ``resp`` the posterior class probabilities of the same rows in
    the same order: (n, K), or the :class:`~src.inference.classification.Posteriors` of
    :func:`~src.inference.classification.posteriors_of` (computed once per fit).  The
    figures the family declares (``model.figures``, in that order; see :data:`FIGURES`),
    those that apply to the data, then for every model, user models too,
    ``posterior.png``.  Write ``plot.png`` bytes as they are; ``plot.caption`` is in the
    current language.

    When the run sent these figures to the drawing process
    (:func:`src.output.background.submit`, the same model and data objects, equal estimate
    and posteriors), its PNGs are taken: the mapping returned then
    (:class:`~src.output.background.Figures`) waits for each figure the first time it is
    looked up (the run writes the files that need no figure meanwhile); a figure the
    process could not draw is drawn here.  Otherwise they are drawn here, now.
    """
    from .. import background

    done = background.collect_figures(model, data, params, resp)
    if done is not None:
        return done
    background._LAST["figures"] = "here"
    _preloaded()
    return {name: render(spec) for name, spec in figure_specs(model, data, params, resp).items()}
