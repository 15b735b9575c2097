"""Python API for notebooks: ``fit(data, model=...)`` returns a :class:`MixtureResults`.

In the spirit of statsmodels (a model's results are their own object with ``params``,
``loglik``, ``summary()``) and scikit-learn (``predict_proba``/``predict``).  The same
pieces as the scripts: the model's ``prepare_data`` builds the arrays from a data frame,
:func:`src.estimation.em.fit_em` fits, :mod:`src.inference` computes standard errors.

    >>> from src.api import fit
    >>> res = fit(X, "gmm", 3, covariance="diag")
    >>> res.estimates, res.bic, res.predict()
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import pandas as pd

from src.estimation.em import fit_em
from src.estimation.results import FitResult
from src.models.base import Data, MixtureModel, Params
from src.models.registry import get_model_class

__all__ = ["fit", "MixtureResults"]

#: meta entries that are statistics of the rows (centring shifts...), not their coding
_ROW_STATISTICS = {"shift", "x_shift", "y_shift", "y_scale", "n_dropped", "source"}
#: options read by prepare_data only, never by the model's constructor
_PREPARE_ONLY = {"drop_missing", "source", "n_components"}


def _as_frame(data: Any, columns: list[str] | None) -> pd.DataFrame:
    """A DataFrame from a frame or an array (columns x1..xD), restricted to ``columns``."""
    if isinstance(data, pd.DataFrame):
        frame = data
    else:
        arr = np.asarray(data)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise ValueError(f"data must be a 2-D array or a DataFrame, got {arr.ndim} dimensions")
        frame = pd.DataFrame(arr, columns=[f"x{j + 1}" for j in range(arr.shape[1])])
    if columns is not None:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(f"column(s) {', '.join(map(str, missing))} not in the data; "
                             f"available: {', '.join(map(str, frame.columns))}")
        frame = frame[list(columns)]
    return frame


def _model_class(model: str | type[MixtureModel]) -> type[MixtureModel]:
    if isinstance(model, type) and issubclass(model, MixtureModel):
        return model
    return get_model_class(str(model))


def _constructor_options(cls: type[MixtureModel], options: dict[str, Any]) -> dict[str, Any]:
    """The options the class's constructor accepts (all of them if it takes **kwargs)."""
    opts = {k: v for k, v in options.items() if k not in _PREPARE_ONLY}
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return opts
    return {k: v for k, v in opts.items() if k in params}


def fit(data: Any, model: str | type[MixtureModel] = "gmm", n_components: int = 2, *,
        columns: list[str] | None = None, seed: int = 0, n_starts: int = 10, tol: float = 1e-8,
        max_iter: int = 1000, accelerate: str = "none", chunk_size: int = 4096,
        **model_options: Any) -> "MixtureResults":
    """Fit a mixture model by EM to an array or DataFrame and return its results.

    ``model``: a built-in name (``gmm``, ``lca``, ``mixreg``), ``path/file.py:Class`` or a
    MixtureModel subclass.  ``model_options`` go to ``prepare_data`` and the constructor
    (e.g. ``covariance="diag"``, ``target="y"``, ``drop_missing=True``).
    """
    cls = _model_class(model)
    frame = _as_frame(data, columns)
    prep = {**model_options, "n_components": int(n_components)}
    arrays, meta = cls.prepare_data(frame, prep)
    m = cls(int(n_components), **_constructor_options(cls, model_options))
    m.setup(meta)
    result = fit_em(m, arrays, n_starts=n_starts, tol=tol, max_iter=max_iter, seed=seed,
                    accelerate=accelerate, chunk_size=chunk_size)
    return MixtureResults(m, arrays, meta, result, prep)


class MixtureResults:
    """A fitted mixture: estimates, fit statistics, class probabilities, standard errors."""

    def __init__(self, model: MixtureModel, data: Data, meta: dict[str, Any], fit: FitResult,
                 prepare_options: dict[str, Any] | None = None) -> None:
        self.model = model
        self.data = data
        self.meta = meta
        self.fit_result = fit
        self._prepare_options = dict(prepare_options or {})
        self.se_result: Any = None

    # ------------------------------------------------------------ statistics
    @property
    def params(self) -> Params:
        return self.fit_result.params

    @property
    def loglik(self) -> float:
        return self.fit_result.loglik

    @property
    def aic(self) -> float:
        return self.fit_result.aic

    @property
    def bic(self) -> float:
        return self.fit_result.bic

    @property
    def n_iter(self) -> int:
        return self.fit_result.n_iter

    @property
    def converged(self) -> bool:
        return self.fit_result.converged

    @property
    def estimates(self) -> pd.DataFrame:
        """Every reported parameter (index ``weight[1]``, ``mean[1,x1]``...), column ``estimate``."""
        return pd.DataFrame({"estimate": self.model.reported_values(self.params)},
                            index=pd.Index(self.model.reported_names(), name="parameter"))

    # ------------------------------------------------------------ prediction
    def _rows(self, new_data: Any) -> Data:
        if new_data is None:
            return self.data
        names = self.meta.get("columns") or self.meta.get("items")
        frame = _as_frame(new_data, list(names) if names and isinstance(new_data, pd.DataFrame)
                          else None)
        arrays, meta = type(self.model).prepare_data(
            frame, {k: v for k, v in self._prepare_options.items() if k != "n_components"})
        for key in sorted(set(meta) | set(self.meta)):
            if key not in _ROW_STATISTICS and meta.get(key) != self.meta.get(key):
                raise ValueError(f"the new data are coded differently from the fitted data "
                                 f"({key!r} differs); give the same columns and categories")
        return arrays

    def predict_proba(self, new_data: Any = None) -> np.ndarray:
        """Per-row class probabilities, shape (n_rows, K), classes in canonical order."""
        rows = self._rows(new_data)
        n = next(iter(rows.values())).shape[0]
        out = np.empty((n, self.model.n_components))
        for a in range(0, n, 4096):
            out[a:a + 4096] = self.model.e_step({k: v[a:a + 4096] for k, v in rows.items()},
                                                self.params)[0]
        return out

    def predict(self, new_data: Any = None) -> np.ndarray:
        """Most probable class of each row (0-based, canonical order)."""
        return np.argmax(self.predict_proba(new_data), axis=1)

    # ------------------------------------------------------ standard errors
    def standard_errors(self, method: str = "louis", **options: Any) -> pd.DataFrame:
        """Standard errors by ``louis``, ``numerical`` or ``bootstrap`` (src.inference).

        Returns a DataFrame (estimate, se, ci_lower, ci_upper); the full SEResult is kept
        in ``self.se_result``.
        """
        try:
            from src.inference import compute_standard_errors
        except ImportError as exc:
            raise ImportError(f"standard errors need the src.inference package, which failed "
                              f"to import: {exc}") from exc
        se = compute_standard_errors(method, self.model, self.data, self.params, **options)
        self.se_result = se
        return pd.DataFrame({"estimate": se.estimates, "se": se.se, "ci_lower": se.ci_lower,
                             "ci_upper": se.ci_upper}, index=pd.Index(se.names, name="parameter"))

    # ---------------------------------------------------------------- text
    def summary(self) -> str:
        """A plain-text report: model, fit statistics, starts, warnings, estimates."""
        f = self.fit_result
        lines = [
            f"Model: {self.model.name or type(self.model).__name__}, "
            f"{self.model.n_components} classes, {f.n_obs} rows, {f.n_params} free parameters",
            f"Log-likelihood: {f.loglik:.6f}   AIC: {f.aic:.4f}   BIC: {f.bic:.4f}",
            f"EM iterations: {f.n_iter} ({'converged' if f.converged else 'NOT converged'}), "
            f"best of {len(f.start_logliks)} starts (start {f.best_start}), {f.seconds:.2f} s",
        ]
        lines += [f"Warning: {w}" for w in f.warnings]
        table = self.estimates
        if self.se_result is not None and list(self.se_result.names) == list(table.index):
            table = table.assign(se=self.se_result.se)
        lines += ["", table.to_string(float_format=lambda v: f"{v:.6g}")]
        return "\n".join(lines)

    def __repr__(self) -> str:
        f = self.fit_result
        return (f"<MixtureResults {self.model.name} K={self.model.n_components} "
                f"loglik={f.loglik:.4f} bic={f.bic:.4f}>")
