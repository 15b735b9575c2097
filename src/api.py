"""Python API for notebooks: ``fit(data, model=...)`` returns a :class:`MixtureResults`.

In the spirit of statsmodels (a model's results are their own object with ``params``,
``loglik``, ``summary()``) and scikit-learn (``predict_proba``/``predict``).  It runs the
pipeline's own code (:mod:`src.pipeline`) with the script's options and defaults
(:data:`src.config.OPTIONS`: seed 20241101, SQUAREM, ...), so the same options give the
same numbers as ``scripts/02_run_estimation.py``; a misspelt keyword is refused with the
closest valid name.

    >>> from src.api import fit
    >>> res = fit(X, "gmm", 3, covariance="diag")
    >>> res.estimates, res.bic, res.predict()      # estimates indexed weight[1], mean[1,1], ...
    >>> enum = fit(X, "gmm", "1-4")                # several K: an Enumeration
    >>> enum.table, enum.selected_k, enum[3].bic   # one row per K; K = 3's MixtureResults

:func:`run` is the whole script from Python (progress files, resume, result files).
Classes, starts and replicates count from 1 in everything shown (``predict()``,
``best_start``, parameter names); rows keep their position in the input, 0-based.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from src.config import OPTIONS, SE_CHOICES, RunOptions, make_options
from src.estimation.results import FitResult
from src.models.base import Data, MixtureModel, Params
from src.models.registry import family_options, get_model_class
from src.pipeline import phases
from src.utils.errors import DataError, ModelError, UsageError
from src.utils.messages import register, t
from src.utils.options import Option, check_names, check_value

__all__ = ["fit", "run", "MixtureResults", "Enumeration", "FIT_OPTIONS"]

register({
    "api.columns": {"en": "Column(s) {missing} not in the data; available: {available}.",
                    "zh": "数据中没有列 {missing}；可用的列：{available}。"},
    "api.dims": {"en": "data must be a 2-D array or a DataFrame, got {ndim} dimensions.",
                 "zh": "data 必须是二维数组或 DataFrame，实际为 {ndim} 维。"},
    "api.components_twice": {
        "en": "Give the number of classes once, as n_components or as components.",
        "zh": "类别数只需给出一次：n_components 或 components。"},
    "api.no_k": {"en": "K = {k} was not fitted; the fitted K are {ks}.",
                 "zh": "未拟合 K = {k}；已拟合的 K 为 {ks}。"},
    "api.coded": {"en": "The new data are coded differently from the fitted data ({key!r} differs); give the same columns and categories.",
                  "zh": "新数据的编码与拟合所用数据不同（{key!r} 不同）；请使用相同的列和类别。"},
})

#: meta entries that are statistics of the rows (centring shifts...), not their coding
_ROW_STATISTICS = {"shift", "x_shift", "y_shift", "y_scale", "n_dropped", "source"}
#: options fit() takes as keywords: what changes a fit (data reading, the family's
#: options, estimation, the choice among several K) and where it runs; the data, model,
#: K and columns are arguments
FIT_OPTIONS: tuple[str, ...] = tuple(dict.fromkeys(
    [name for name, o in OPTIONS.items()
     if o.fingerprint in ("data_preparation", "model_estimation", "model_selection")
     and name not in ("model", "components", "columns")]
    + [o.name for o in family_options()] + ["workers", "scheduler"]))


def _as_frame(data: Any, columns: list[str] | None) -> pd.DataFrame:
    """A DataFrame from a frame or an array (columns x1..xD), restricted to ``columns``."""
    if isinstance(data, pd.DataFrame):
        frame = data
    else:
        arr = np.asarray(data)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise DataError(t("api.dims", ndim=arr.ndim))
        frame = pd.DataFrame(arr, columns=[f"x{j + 1}" for j in range(arr.shape[1])])
    if columns is not None:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise DataError(t("api.columns", missing=", ".join(map(str, missing)),
                              available=", ".join(map(str, frame.columns))))
        frame = frame[list(columns)]
    return frame


def _model_class(model: str | type[MixtureModel]) -> tuple[type[MixtureModel], str]:
    """The class and the name recorded in the options (a class given directly: its path)."""
    if isinstance(model, type) and issubclass(model, MixtureModel):
        return model, f"{model.__module__}:{model.__qualname__}"
    return get_model_class(str(model)), str(model)


def fit(data: Any, model: str | type[MixtureModel] = "gmm", n_components: Any = None, *,
        columns: list[str] | None = None, components: Any = None,
        **options: Any) -> "MixtureResults | Enumeration":
    """Fit a mixture model by EM and return its results (no standard errors yet).

    ``data``: an array (columns ``x1..xD``), a DataFrame, or a file path / ``builtin:NAME``
    read as the script reads ``--data``.  ``model``: a built-in name (``gmm``, ``lca``,
    ``mixreg``), ``path/file.py:Class`` or a MixtureModel subclass.  ``n_components`` (or
    ``components``, the script's name): one K, or several as ``--components`` takes them
    (``"1-6"``, ``"2,3,5"``, ``[2, 3, 5]``, ``range(1, 7)``); default 2, the script's.
    ``options``: any of :data:`FIT_OPTIONS` (the script's option names with underscores:
    ``n_starts``, ``seed``, ``covariance``, ``target``, ``drop_missing``, and with several
    K ``select``, ``blrt``, ``alpha``, ``vlmr``...); defaults are the script's.  An unknown
    keyword raises UsageError naming the closest valid one.

    One K gives a :class:`MixtureResults`; several an :class:`Enumeration` (the table, the
    selected K and each K's MixtureResults), computed by the script's own phases.
    """
    cls, label = _model_class(model)
    check_names(options, FIT_OPTIONS, t("api.where", function="fit()"))
    if n_components is not None and components is not None:
        raise UsageError(t("api.components_twice"))
    k = components if components is not None else n_components
    if k is None:
        k = OPTIONS["components"].default
    opts = RunOptions(**options, model=label, components=k,
                      columns=list(columns) if columns is not None else None).validate()
    if isinstance(data, (str, Path)):
        from src.data.loading import load_table

        frame, record = load_table(str(data), columns=opts.columns, as_text=bool(cls.reads_text),
                                   sep=opts.sep, encoding=opts.encoding)
    else:
        frame = _as_frame(data, opts.columns)
        record = {"source": "the data", "n_rows": int(len(frame)),
                  "columns": [str(c) for c in frame.columns]}
    prepared = phases.prepare_frame(frame, opts, cls, record)
    if opts.enumerating:
        from src.pipeline import enumeration

        fits = enumeration.estimate_models(prepared, opts)
        selection = enumeration.select_model(prepared, fits, opts)
        return Enumeration.build(prepared, fits, selection, {}, opts, list(record.get("notes", [])))
    result = phases.fit_model(prepared, opts)
    res = MixtureResults(prepared.model, prepared.data, prepared.meta, result, opts)
    res.notes = list(record.get("notes", []))
    return res


def run(**options: Any) -> "MixtureResults":
    """The main script's run from Python, with its option names (``data=``,
    ``components=``, ``se_method=``, ``task_name=``...): the same checks, progress files,
    resume, result files and numbers as ``scripts/02_run_estimation.py``."""
    from src.pipeline import run as run_pipeline
    from src.inference.results import SEResult

    opts = make_options(options, t("api.where", function="run()"))
    out = run_pipeline(opts)
    prepared = out["prepared"]
    if "enumeration" in out:
        enum = out["enumeration"]
        return Enumeration.build(prepared, enum["fits"], enum["selection"], enum["se"]["by_k"],
                                 opts, list(prepared.record.get("notes", [])))
    res = MixtureResults(prepared.model, prepared.data, prepared.meta,
                         FitResult.from_dict(out["fit"]), opts)
    res.notes = list(prepared.record.get("notes", []))  # also after a resume: part of the record
    if out["se"]:
        primary = opts.se_method if opts.se_method in out["se"] else opts.primary_se
        res.se_result = SEResult.from_dict(out["se"][primary])
    return res


class MixtureResults:
    """A fitted mixture: estimates, fit statistics, class probabilities, standard errors,
    and ``notes`` on how a data file was read."""

    def __init__(self, model: MixtureModel, data: Data, meta: dict[str, Any], fit: FitResult,
                 options: RunOptions | None = None) -> None:
        self.model = model
        self.data = data
        self.meta = meta
        self.fit_result = fit
        self.options = options if options is not None else RunOptions().validate()
        self.se_result: Any = None
        #: how a data file was read, one sentence each (a detected separator, encoding or
        #: decimal comma); empty for arrays and frames
        self.notes: list[str] = []

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
    def best_start(self) -> int:
        """The random start that gave the estimate, counted from 1 (as on the console)."""
        return self.fit_result.best_start + 1

    @property
    def start_logliks(self) -> list[float]:
        """Final log-likelihood of each random start (start 1 first)."""
        return list(self.fit_result.start_logliks)

    @property
    def estimates(self) -> pd.DataFrame:
        """Every reported parameter (index ``weight[1]``, ``mean[1,1]``...), column ``estimate``."""
        return pd.DataFrame({"estimate": self.model.reported_values(self.params)},
                            index=pd.Index(self.model.reported_names(), name="parameter"))

    # ------------------------------------------------------------ prediction
    def _rows(self, new_data: Any) -> Data:
        if new_data is None:
            return self.data
        names = self.meta.get("columns") or self.meta.get("items")
        frame = _as_frame(new_data, list(names) if names and isinstance(new_data, pd.DataFrame)
                          else None)
        cls = type(self.model)
        try:
            arrays, meta = cls.prepare_data(
                frame, {**self.options.model_options(cls), "source": "the new data"})
        except (DataError, ModelError):
            raise
        except ValueError as exc:
            raise DataError(str(exc)) from None
        for key in sorted(set(meta) | set(self.meta)):
            if key not in _ROW_STATISTICS and meta.get(key) != self.meta.get(key):
                raise DataError(t("api.coded", key=key))
        return arrays

    def predict_proba(self, new_data: Any = None) -> np.ndarray:
        """Per-row class probabilities, shape (n_rows, K): column ``j`` is class ``j + 1``
        (classes in canonical order); rows in input order."""
        rows = self._rows(new_data)
        n = next(iter(rows.values())).shape[0]
        out = np.empty((n, self.model.n_components))
        for a in range(0, n, 4096):
            out[a:a + 4096] = self.model.e_step({k: v[a:a + 4096] for k, v in rows.items()},
                                                self.params)[0]
        return out

    def predict(self, new_data: Any = None) -> np.ndarray:
        """Most probable class of each row, counted from 1 as in ``weight[1]`` (canonical order)."""
        return np.argmax(self.predict_proba(new_data), axis=1) + 1

    # ------------------------------------------------------ standard errors
    def standard_errors(self, method: str | None = None, **options: Any) -> pd.DataFrame:
        """Standard errors by ``method`` (``louis`` by default, ``numerical``, ``bootstrap``).

        ``options``: the run options the method reads (``n_bootstrap``, ``bootstrap``,
        ``seed``... with the script's defaults; ``workers`` for parallel methods).  Returns a
        DataFrame (estimate, se, ci_lower, ci_upper); the SEResult is kept in ``se_result``.
        """
        from src.inference import SE_METHODS

        method = check_value(_METHOD, method if method is not None else self.options.primary_se)
        desc = SE_METHODS[method]
        allowed = {*desc.reads.values(), *(o.name for o in desc.options),
                   *(("workers", "scheduler") if desc.parallel else ())}
        check_names(options, sorted(allowed), t("api.where", function=f"standard_errors({method!r})"))
        opts = self.options.replace(**options, se_method=method)
        phases.check_se_supported(type(self.model), [method], opts.model)
        with phases.run_executor(opts, desc.parallel) as executor:
            kwargs = phases.se_arguments(method, opts, executor=executor)
            se = desc.function(self.model, self.data, self.params, **kwargs)
        self.se_result = se
        return pd.DataFrame({"estimate": se.estimates, "se": se.se, "ci_lower": se.ci_lower,
                             "ci_upper": se.ci_upper}, index=pd.Index(se.names, name="parameter"))

    # ---------------------------------------------------------------- text
    def summary(self) -> str:
        """A plain-text report: model, fit statistics, starts, notes on reading the data,
        warnings, estimates."""
        f = self.fit_result
        lines = [
            f"Model: {self.model.name or type(self.model).__name__}, "
            f"{self.model.n_components} classes, {f.n_obs} rows, {f.n_params} free parameters",
            f"Log-likelihood: {f.loglik:.6f}   AIC: {f.aic:.4f}   BIC: {f.bic:.4f}",
            f"EM iterations: {f.n_iter} ({'converged' if f.converged else 'NOT converged'}), "
            f"best of {len(f.start_logliks)} starts (start {self.best_start}), {f.seconds:.2f} s",
        ]
        lines += [f"Note: {n}" for n in self.notes]
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


#: the ``method`` of standard_errors(): one registered method
_METHOD = Option("method", str, None, "standard-error method",
                 choices=tuple(c for c in SE_CHOICES if c not in ("all", "none")))


def _primary_se(se: Mapping[str, Any], options: RunOptions) -> Any:
    """The SEResult a run shows in its 'se' column (None without standard errors)."""
    from src.inference.results import SEResult

    if not se:
        return None
    primary = options.se_method if options.se_method in se else options.primary_se
    return SEResult.from_dict(se[primary if primary in se else next(iter(se))])


class Enumeration:
    """Several numbers of classes fitted to the same data, and the one the rule chose.

    ``table``: one row per K (index ``k``), the columns of ``enumeration.csv`` (criteria,
    entropy, smallest class, replication, test p-values, ``selected``); ``selected_k``;
    ``models``: each K's :class:`MixtureResults` (``enum[3]`` is K = 3's); ``selected``:
    the selected K's; ``selection``: the rule, the pairs compared, the tests' full results,
    warnings and notes.
    """

    def __init__(self, models: dict[int, MixtureResults], selection: dict[str, Any],
                 options: RunOptions) -> None:
        from src.output.enumeration import COLUMNS

        self.models = models
        self.selection = selection
        self.options = options
        rows = [{c: (np.nan if r.get(c) is None else r.get(c)) for c in COLUMNS}
                for r in selection["rows"]]
        table = pd.DataFrame(rows, columns=list(COLUMNS)).set_index("k")
        floats = [c for c in table.columns if c not in ("n_params", "n_starts",
                                                          "best_replicated", "selected")]
        self.table = table.astype({c: float for c in floats})

    @classmethod
    def build(cls, prepared: Any, fits: Mapping[str, Any], selection: dict[str, Any],
              se_by_k: Mapping[str, Any], options: RunOptions, notes: list[str]) -> "Enumeration":
        """From the phases' results (fits of several K, the selection, standard errors by K)."""
        from src.pipeline.enumeration import prepared_for

        models: dict[int, MixtureResults] = {}
        for k in options.k_list():
            p = prepared_for(prepared, options, k)
            res = MixtureResults(p.model, p.data, p.meta, FitResult.from_dict(fits["fits"][str(k)]),
                                 options.replace(components=k))
            res.notes = list(notes)
            res.se_result = _primary_se(se_by_k.get(str(k), {}), options)
            models[k] = res
        return cls(models, selection, options)

    @property
    def selected_k(self) -> int:
        """The number of classes the rule (``select``) chose."""
        return int(self.selection["selected"])

    @property
    def selected(self) -> MixtureResults:
        """The selected K's fitted model."""
        return self.models[self.selected_k]

    @property
    def rule(self) -> str:
        return str(self.selection["rule"])

    @property
    def warnings(self) -> list[str]:
        """Per K: best not replicated, spurious starts excluded, smallest class below 5%."""
        return list(self.selection.get("warnings", []))

    @property
    def notes(self) -> list[str]:
        return list(self.selection.get("notes", []))

    def __getitem__(self, k: int) -> MixtureResults:
        if k not in self.models:
            raise KeyError(t("api.no_k", k=k, ks=", ".join(map(str, self.models))))
        return self.models[k]

    def summary(self) -> str:
        """The table, the rule and the selected K, warnings and notes."""
        lines = [f"Class enumeration: K = {', '.join(map(str, self.models))}; selected K = "
                 f"{self.selected_k} by {self.rule.upper()}", "",
                 self.table.to_string(float_format=lambda v: f"{v:.6g}"), ""]
        lines += [f"Warning: {w}" for w in self.warnings]
        lines += [f"Note: {n}" for n in self.notes]
        return "\n".join(lines).rstrip("\n")

    def __repr__(self) -> str:
        return (f"<Enumeration K={list(self.models)} selected={self.selected_k} "
                f"by {self.rule}>")
