"""Python API for notebooks: ``fit(data, model=...)`` returns a :class:`MixtureResults`.

In the spirit of statsmodels (a model's results are their own object with ``params``,
``loglik``, ``summary()``) and scikit-learn (``predict_proba``/``predict``).  It runs the
pipeline's own code (:mod:`src.pipeline`) with the script's options and defaults
(:data:`src.config.OPTIONS`: seed 20241101, SQUAREM, ...), so the same options give the
same numbers as ``scripts/02_run_estimation.py``; a misspelt keyword is refused with the
closest valid name.

    >>> from src.api import fit
    >>> res = fit(X, "gmm", 3, covariance="diag")
    >>> res.estimates, res.bic, res.predict()      # estimates indexed weight[1], mean[1,eruptions], ...
    >>> res.posteriors, res.classification         # posteriors.csv; fit.json's classification
    >>> res.standard_errors("louis", ci_level=0.9) # estimates.csv's se, z, p_value, ci_lower, ci_upper
    >>> res.summaries(), res.figures()             # G2/X2 (LCA), SDs and correlations (GMM); plots
    >>> res.write("out")                           # every result file the script writes
    >>> enum = fit(X, "gmm", "1-4")                # several K: an Enumeration
    >>> enum.table, enum.selected_k, enum[3].bic   # one row per K; K = 3's MixtureResults
    >>> res = fit(df, "lca", 3, columns=items, structural="distal", distal=["income"])
    >>> st = res.structural(correction="bch", se="corrected")   # three-step estimation
    >>> st.estimates, st.wald, st.D, st.summary()  # estimates.csv's structural rows, tests

:func:`run` is the whole script from Python (progress files, resume, result files).
Classes, starts and replicates count from 1 in everything shown (``predict()``,
``best_start``, parameter names); rows keep their position in the input, 0-based.
Parameters are named by column where the columns have names (``mean[1,waiting]``,
``cov[1,eruptions,waiting]``, ``prob[1,item,code]``, ``coef[1,name]``).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from src.api_structural import STRUCTURAL_KEYWORDS, StructuralResults
from src.config import OPTIONS, SE_CHOICES, RunOptions, make_options
from src.estimation.results import FitResult, as_count
from src.models.base import Data, MixtureModel, Params
from src.models.registry import family_options, get_model_class
from src.pipeline import phases
from src.utils.errors import DataError, ModelError, UsageError
from src.utils.messages import get_language, register, set_language, t
from src.utils.options import Option, check_names, check_value

if TYPE_CHECKING:
    from src.inference.results import SEResult
    from src.output.plots import Plot

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
    + [o.name for o in family_options()] + ["id", "workers", "scheduler"]
    + list(STRUCTURAL_KEYWORDS)))


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
    keyword raises UsageError naming the closest valid one.  ``id``: a column carried
    through as each row's name (``posteriors``' index, as ``--id``), never modelled; with a
    DataFrame and no ``columns`` the model takes every other column.  ``weights``: a column
    of row weights (as ``--weights``; ``weight_type="frequency"`` or ``"sampling"``), never
    modelled either.  Three-step estimation (docs/structural.md): ``structural``
    (``"covariates"`` or ``"distal"``), ``distal`` (columns), ``distal_type``,
    ``correction``, ``assignment``, ``structural_se``; the structural columns are read
    beside the model's and never modelled, and :meth:`MixtureResults.structural` estimates
    steps 2 and 3 with these options.

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
    carried = [c for c in (options.get("id"), options.get("weights")) if c is not None]
    carried += list(options.get("covariates") or [])   # one-step or step 3's: not modelled
    if options.get("structural") == "distal":   # distal outcomes: read beside, never modelled
        carried += list(options.get("distal") or [])
    if (carried and columns is None and isinstance(data, pd.DataFrame)
            and any(c in data.columns for c in carried)):
        columns = [c for c in data.columns if c not in carried]
    opts = RunOptions(**options, model=label, components=k,
                      columns=list(columns) if columns is not None else None).validate()
    from src.pipeline.checks import check_weight_options
    check_weight_options(opts)
    from src.data.covariates import check_covariate_options, one_step_covariates
    check_covariate_options(opts)
    # the --weights column is read beside the model's columns (and taken out by prepare_frame)
    with_weights = (opts.columns if opts.columns is None or opts.weights is None
                    or opts.weights in opts.columns else [*opts.columns, opts.weights])
    from src.structural.data import structural_columns
    beside = [*(one_step_covariates(opts) or []), *structural_columns(opts)]
    if with_weights is not None and beside:   # read beside them too
        with_weights = [*with_weights, *dict.fromkeys(c for c in beside if c not in with_weights)]
    if isinstance(data, (str, Path)):
        from src.data.loading import load_table

        frame, record = load_table(str(data), columns=with_weights, as_text=bool(cls.reads_text),
                                   sep=opts.sep, encoding=opts.encoding, id_column=opts.id)
    else:
        frame = _as_frame(data, with_weights if with_weights is None or opts.id is None
                          else [*with_weights, opts.id])
        record = {"source": "the data", "n_rows": int(len(frame)),
                  "columns": [str(c) for c in frame.columns]}
    prepared = phases.prepare_frame(frame, opts, cls, record)
    if opts.enumerating:
        from src.pipeline import enumeration

        fits = enumeration.estimate_models(prepared, opts)
        selection = enumeration.select_model(prepared, fits, opts)
        return Enumeration.build(prepared, fits, selection, {}, opts, list(record.get("notes", [])))
    result = phases.fit_model(prepared, opts)
    res = MixtureResults(prepared.model, prepared.data, prepared.meta, result, opts,
                         prepared=prepared)
    res.notes = list(record.get("notes", []))
    return res


def run(**options: Any) -> "MixtureResults":
    """The main script's run from Python, with its option names (``data=``,
    ``components=``, ``se_method=``, ``task_name=``...): the same checks, progress files,
    resume, result files and numbers as ``scripts/02_run_estimation.py``."""
    from src.pipeline import run as run_pipeline

    opts = make_options(options, t("api.where", function="run()"))
    with _language(opts.lang):   # as the script's --lang: messages, notes and the report
        out = run_pipeline(opts)
    prepared = out["prepared"]
    if "enumeration" in out:
        enum = out["enumeration"]
        built = Enumeration.build(prepared, enum["fits"], enum["selection"], enum["se"]["by_k"],
                                  opts, list(prepared.record.get("notes", [])))
        if out.get("structural"):   # the selected K's three-step estimate
            built.selected.structural_result = StructuralResults(out["structural"], opts)
        return built
    res = MixtureResults(prepared.model, prepared.data, prepared.meta,
                         FitResult.from_dict(out["fit"]), opts, prepared=prepared)
    res.notes = list(prepared.record.get("notes", []))  # also after a resume: part of the record
    for result in _se_results(out["se"], opts):
        res.se_result = result
    if out.get("structural"):   # --structural: the phase's three-step estimate
        res.structural_result = StructuralResults(out["structural"], opts)
    return res


class MixtureResults:
    """A fitted mixture: estimates, fit statistics, class probabilities, standard errors,
    what the fit means (posteriors, classification quality, the family's summaries,
    figures), the script's result files, and ``notes`` on how a data file was read.

    ``prepared``: the pipeline's :class:`~src.pipeline.phases.Prepared` (the rows' names for
    ``posteriors``, the data record for ``write``); made from ``data`` when not given.
    """

    def __init__(self, model: MixtureModel, data: Data, meta: dict[str, Any], fit: FitResult,
                 options: RunOptions | None = None, *,
                 prepared: phases.Prepared | None = None) -> None:
        self.model = model
        self.data = data
        self.meta = meta
        self.fit_result = fit
        self.options = options if options is not None else RunOptions().validate()
        if prepared is None:
            n = int(next(iter(data.values())).shape[0])
            prepared = phases.Prepared(model, data, meta, {"source": "the data", "n_rows": n})
        self.prepared = prepared
        #: standard errors by method, in the order computed; the last is ``se_result``
        self._se: dict[str, Any] = {}
        self._cache: dict[Any, Any] = {}
        #: how a data file was read, one sentence each (a detected separator, encoding or
        #: decimal comma); empty for arrays and frames
        self.notes: list[str] = []
        #: the last three-step estimate (:meth:`structural`, or the script's with run());
        #: ``write`` writes it
        self.structural_result: StructuralResults | None = None

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
        """Every reported parameter (index ``weight[1]``, ``mean[1,eruptions]``...), column
        ``estimate``."""
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

    def _responsibilities(self, rows: Data) -> np.ndarray:
        from src.inference.classification import responsibility_chunks

        chunks = [r for _, r in responsibility_chunks(self.model, rows, self.params,
                                                      self.options.chunk_size)]
        return (np.concatenate(chunks) if chunks
                else np.empty((0, self.model.n_components)))

    def predict_proba(self, new_data: Any = None) -> np.ndarray:
        """Per-row class probabilities, shape (n_rows, K): column ``j`` is class ``j + 1``
        (classes in canonical order); rows in input order.  On the fitted rows, the numbers
        of ``posteriors.csv``."""
        if new_data is not None:
            return self._responsibilities(self._rows(new_data))
        if "resp" not in self._cache:
            self._cache["resp"] = self._responsibilities(self.data)
        return self._cache["resp"].copy()

    def predict(self, new_data: Any = None) -> np.ndarray:
        """Most probable class of each row, counted from 1 as in ``weight[1]`` (canonical order)."""
        return np.argmax(self.predict_proba(new_data), axis=1) + 1

    @property
    def posteriors(self) -> pd.DataFrame:
        """``posteriors.csv`` as a DataFrame: one row per fitted row, indexed as there (the
        ``id`` column's values, else ``row``, the 0-based input position with rows dropped
        by ``drop_missing`` counted), columns ``p1``..``pK`` (:meth:`predict_proba`) and
        ``class`` (:meth:`predict`)."""
        tau = self.predict_proba()
        frame = pd.DataFrame(tau, columns=[f"p{k + 1}" for k in range(tau.shape[1])],
                             index=pd.Index(self.prepared.row_labels,
                                            name=self.prepared.id_column or "row"))
        frame["class"] = (tau.argmax(axis=1) + 1).astype(np.int64)
        return frame

    # ------------------------------------------------------ classification
    @property
    def classification(self) -> dict[str, Any]:
        """Classification quality, fit.json's ``classification``: counts and proportions
        three ways (``weights``, ``posteriors``, ``modal``), ``average_posterior`` (by modal
        class), ``odds_correct``, ``entropy``, ``smallest_class``, warnings and notes
        (:func:`src.inference.classification.classification_summary`)."""
        if "classification" not in self._cache:
            from src.inference.classification import classification_summary

            self._cache["classification"] = classification_summary(
                self.model, self.data, self.params, chunk_size=self.options.chunk_size)
        return self._cache["classification"]

    @property
    def class_sizes(self) -> pd.DataFrame:
        """One row per class (index ``class``, 1..K): counts and proportions three ways
        (``count_weights`` = n * weight, ``count_posteriors`` = sum of posteriors,
        ``count_modal`` = rows whose modal class it is; ``proportion_*`` likewise), the
        class's average posterior probability among its modal rows (``avepp``) and its odds
        of correct classification (``odds_correct``)."""
        c = self.classification
        K = int(c["n_components"])
        out = {f"{what}_{way}": c[key][way] for what, key in (("count", "counts"),
                                                              ("proportion", "proportions"))
               for way in ("weights", "posteriors", "modal")}
        out["avepp"] = np.diag(np.asarray(c["average_posterior"], dtype=float))
        out["odds_correct"] = c["odds_correct"] if c["odds_correct"] is not None else [np.nan] * K
        return pd.DataFrame(out, index=pd.RangeIndex(1, K + 1, name="class"))

    @property
    def average_posterior(self) -> pd.DataFrame:
        """The average posterior probability matrix: row ``k`` (index ``modal_class``) the
        mean posteriors of the rows whose modal class is ``k``, columns the classes 1..K."""
        m = np.asarray(self.classification["average_posterior"], dtype=float)
        classes = range(1, m.shape[0] + 1)
        return pd.DataFrame(m, index=pd.Index(classes, name="modal_class"),
                            columns=pd.Index(classes, name="class"))

    # ------------------------------------------------------ standard errors
    @property
    def se_result(self) -> "SEResult | None":
        """The last computed standard errors (:class:`~src.inference.results.SEResult`);
        assigning one adds it to :attr:`se_results`, assigning None clears them."""
        return next(reversed(self._se.values())) if self._se else None

    @se_result.setter
    def se_result(self, value: "SEResult | None") -> None:
        if value is None:
            self._se.clear()
            return
        self._se.pop(value.method, None)
        self._se[value.method] = value

    @property
    def se_results(self) -> dict[str, "SEResult"]:
        """Every method's standard errors computed so far, by method (``write`` puts them
        all in estimates.csv, ``se_result``'s in the ``se`` column)."""
        return dict(self._se)

    def standard_errors(self, method: str | None = None, *, ci_level: float | None = None,
                        **options: Any) -> pd.DataFrame:
        """Standard errors by ``method`` (``louis`` by default, ``numerical``, ``bootstrap``),
        as :meth:`inference_table` at ``ci_level``.

        ``options``: the run options the method reads (``n_bootstrap``, ``bootstrap``,
        ``seed``... with the script's defaults; ``workers`` for parallel methods).  The
        SEResult is kept in ``se_result``.
        """
        from src.inference import SE_METHODS

        method = check_value(_METHOD, method if method is not None else self.options.primary_se)
        level = self._level(ci_level)
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
        return self.inference_table(level)

    def inference_table(self, ci_level: float | None = None) -> pd.DataFrame:
        """estimates.csv's columns for ``se_result`` at ``ci_level`` (default the options',
        0.95): ``estimate``, ``se``, ``z`` and ``p_value`` (two-sided, against 0; NaN for
        bounded parameters), ``ci_lower``, ``ci_upper`` (Wald on the logit/log scale for
        bounded parameters, bootstrap percentile; NaN on the boundary).  ``attrs``: the
        ``interval_method``, ``ci_level``, ``se_method`` and ``notes``.  Standard errors are
        computed first by the default method when there are none."""
        from src.inference.intervals import interval_table

        level = self._level(ci_level)
        if self.se_result is None:
            self.standard_errors()
        se = self.se_result
        table = interval_table(self.model, se, level)
        frame = pd.DataFrame({k: np.asarray(table[k], dtype=float)
                              for k in ("estimate", "se", "z", "p_value", "ci_lower", "ci_upper")},
                             index=pd.Index(table["names"], name="parameter"))
        frame.attrs.update(interval_method=table["interval_method"], ci_level=table["ci_level"],
                           se_method=se.method, notes=list(table["notes"]))
        return frame

    def _level(self, ci_level: float | None) -> float:
        return float(self.options.ci_level if ci_level is None
                     else check_value(OPTIONS["ci_level"], ci_level))

    # ------------------------------------------------- three-step estimation
    def structural(self, kind: str | None = None, *, data: Any = None,
                   ci_level: float | None = None, **options: Any) -> StructuralResults:
        """Three-step estimation with this fit as the measurement model held fixed: the
        script's ``--structural`` (docs/structural.md), the same numbers.

        ``kind``: ``"covariates"`` or ``"distal"`` (default fit()'s ``structural``).
        ``options`` (default fit()'s, then the script's): ``covariates`` / ``distal``
        (the columns), ``distal_type``, ``correction`` (``none``, ``bch``, ``ml``),
        ``assignment`` (``modal``, ``soft``), ``se`` (or ``structural_se``: ``corrected``,
        ``bootstrap``, ``step3``), ``reference_class``, ``n_bootstrap``, ``workers``,
        ``scheduler``.  The columns are those fit() kept (``fit(..., structural=...,
        distal=...)``), or read from ``data``: a DataFrame with the rows given to fit(), in
        their order.  ``corrected`` standard errors use :attr:`se_result`, computed first by
        the fit's method when there is none.  Returns a
        :class:`~src.api_structural.StructuralResults` (``estimates``, ``wald``, ``D``,
        ``summary()``), also kept in :attr:`structural_result` for :meth:`write`."""
        from src.api_structural import structural_of

        self.structural_result = structural_of(self, kind, data=data, ci_level=ci_level,
                                               **options)
        return self.structural_result

    # --------------------------------------------------------- conclusions
    def summaries(self, gof_bootstrap: int = 0, *, ci_level: float | None = None) -> dict[str, Any]:
        """The family's summaries, as fit.json has them: for latent class models
        ``goodness_of_fit`` (G2, X2, df; with ``gof_bootstrap`` = B > 0 their
        parametric-bootstrap p-values, B refits, on the fit's ``workers``),
        ``bivariate_residuals`` and ``response_probabilities``; for Gaussian mixtures
        ``derived`` (per-class SDs and correlations with delta-method SEs at ``ci_level``,
        from ``se_result``: call :meth:`standard_errors` first).  Empty for other families."""
        from src.inference.summaries import model_summaries
        from src.selection.blrt import FIT_OPTION_KEYS

        B = check_value(OPTIONS["gof_bootstrap"], gof_bootstrap)
        se = self.se_result.to_dict() if self.se_result is not None else None
        opts = self.options
        with phases.run_executor(opts, B > 0) as executor:
            return model_summaries(
                self.model, self.data, self.params, n_params=int(self.fit_result.n_params),
                se=se, ci_level=self._level(ci_level), seed=opts.seed, gof_replicates=B,
                fit_options={name: getattr(opts, name) for name in FIT_OPTION_KEYS},
                executor=executor)

    def figures(self) -> dict[str, "Plot"]:
        """The script's figures, ``{file name: Plot}`` (``png`` bytes, ``caption``, pixel
        ``width`` and ``height``): LCA ``profile.png``; GMM ``scatter.png`` (or
        ``density.png`` for one column); mixreg ``regression.png``; every model
        ``posterior.png``.  ``IPython.display.Image(plot.png)`` shows one."""
        if "figures" not in self._cache:
            from src.output.plots import figures

            self._cache["figures"] = figures(self.model, self.data, self.params,
                                             self.predict_proba())
        return dict(self._cache["figures"])

    def _se_dicts(self) -> dict[str, Any]:
        return {m: r.to_dict() for m, r in self._se.items()}

    def write(self, folder: str | Path, *, formats: Sequence[str] | None = None,
              plots: bool | None = None, ci_level: float | None = None,
              gof_bootstrap: int = 0, lang: str | None = None,
              task_name: str | None = None) -> list[str]:
        """Write every result file of the script into ``folder`` with the script's writers:
        estimates.csv, covariance.csv (with standard errors), posteriors.csv, fit.json,
        the figures (``plots``), report.md / report.html / tables.tex (``formats``, default
        md and html), manifest.json; return the paths.  Defaults are the fit's options;
        ``lang`` (en, zh) the report's language.  The standard errors are ``se_results``
        (none computed: none written, as ``--se-method none``).  fit.json's ``fingerprint``
        is empty (no progress tracking) and ``seconds`` the fit's."""
        from src.output.writers import write_all
        from src.pipeline.conclusions import conclusions_of

        se = self._se_dicts()
        opts = _output_options(self.options, folder, se, self.se_result, formats=formats,
                               plots=plots, ci_level=ci_level, gof_bootstrap=gof_bootstrap,
                               lang=lang, task_name=task_name)
        fit = self.fit_result.to_dict()
        with _language(opts.lang), phases.run_executor(opts, opts.gof_bootstrap > 0) as executor:
            found = conclusions_of(self.prepared, fit, se, opts, executor=executor)
            _add_structural(found, self.structural_result, opts)
            return write_all(self.model, self.prepared.record, fit, se, opts, fingerprint={},
                             conclusions=found)

    # ---------------------------------------------------------------- text
    def _rows_text(self) -> str:
        """``N rows``, or with row weights ``n = sum of the weights of N rows``."""
        if self.prepared.record.get("weight_column") is None:
            return f"{self.fit_result.n_obs} rows"
        n_rows = int(next(iter(self.data.values())).shape[0])
        return (f"n = {as_count(self.fit_result.n_obs)} (sum of the "
                f"{self.prepared.record.get('weight_type')} weights of {n_rows} rows)")

    def summary(self) -> str:
        """A plain-text report: model, fit statistics, starts, classification quality,
        notes on reading the data, warnings, estimates (with standard errors, z, p-values
        and intervals when computed)."""
        f = self.fit_result
        c = self.classification
        lines = [
            f"Model: {self.model.name or type(self.model).__name__}, "
            f"{self.model.n_components} classes, {self._rows_text()}, {f.n_params} free parameters",
            f"Log-likelihood: {f.loglik:.6f}   AIC: {f.aic:.4f}   BIC: {f.bic:.4f}",
            f"EM iterations: {f.n_iter} ({'converged' if f.converged else 'NOT converged'}), "
            f"best of {len(f.start_logliks)} starts (start {self.best_start}), {f.seconds:.2f} s",
            "Classification: entropy " + ("-" if c["entropy"] is None else f"{c['entropy']:.4f}")
            + f", smallest class {c['smallest_class']:.4f}",
        ]
        lines += [f"Note: {n}" for n in self.notes]
        lines += [f"Warning: {w}" for w in [*f.warnings, *c["warnings"]]]
        table = self.estimates
        if self.se_result is not None and list(self.se_result.names) == list(table.index):
            table = self.inference_table()
            lines.append(f"Standard errors: {self.se_result.method}; intervals: "
                         f"{table.attrs['interval_method']} at level {table.attrs['ci_level']:g}")
        lines += ["", table.to_string(float_format=lambda v: f"{v:.6g}", na_rep="")]
        return "\n".join(lines)

    def __repr__(self) -> str:
        f = self.fit_result
        return (f"<MixtureResults {self.model.name} K={self.model.n_components} "
                f"loglik={f.loglik:.4f} bic={f.bic:.4f}>")


#: the ``method`` of standard_errors(): one registered method
_METHOD = Option("method", str, None, "standard-error method",
                 choices=tuple(c for c in SE_CHOICES if c not in ("all", "none")))


@contextmanager
def _language(lang: str | None) -> Iterator[None]:
    """Messages in ``lang`` inside the block (None: the current language), as ``--lang``."""
    before = get_language()
    if lang is not None:
        set_language(lang)
    try:
        yield
    finally:
        if lang is not None:
            set_language(before)


def _output_options(options: RunOptions, folder: str | Path, se: Mapping[str, Any],
                    primary: Any, *, formats: Sequence[str] | None, plots: bool | None,
                    ci_level: float | None, gof_bootstrap: int, lang: str | None,
                    task_name: str | None) -> RunOptions:
    """The run options of ``write``: the fit's, the output's, and the standard errors in
    ``se`` as the script names them (none, one method, or all with ``primary`` in 'se')."""
    changes: dict[str, Any] = {"output_dir": str(folder), "gof_bootstrap": gof_bootstrap}
    for name, value in (("formats", list(formats) if formats is not None else None),
                        ("plots", plots), ("ci_level", ci_level), ("lang", lang),
                        ("task_name", task_name)):
        if value is not None:
            changes[name] = value
    if not se:
        changes["se_method"] = "none"
    elif len(se) == 1:
        changes["se_method"] = next(iter(se))
    else:
        changes.update(se_method="all", primary_se=primary.method)
    return options.replace(**changes)


def _add_structural(found: Any, structural: StructuralResults | None,
                    options: RunOptions) -> None:
    """fit.json's ``structural`` block of a three-step estimate, at ``options``' level (the
    writers add its estimates.csv rows and report section)."""
    if structural is not None:
        from src.output.structural import structural_json

        found.json["structural"] = structural_json(structural.result, options)


def _se_results(se: Mapping[str, Any], options: RunOptions) -> list[Any]:
    """A run's standard errors (``{method: SEResult.to_dict()}``) as SEResults, the one
    its 'se' column shows last (so it becomes ``se_result``)."""
    from src.inference.results import SEResult
    from src.output.estimates import primary_method

    primary = primary_method(se, options)
    order = [m for m in se if m != primary] + ([primary] if primary is not None else [])
    return [SEResult.from_dict(se[m]) for m in order]


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
                                 options.replace(components=k), prepared=p)
            res.notes = list(notes)
            for result in _se_results(se_by_k.get(str(k), {}), options):
                res.se_result = result
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

    def write(self, folder: str | Path, *, formats: Sequence[str] | None = None,
              plots: bool | None = None, ci_level: float | None = None,
              gof_bootstrap: int = 0, lang: str | None = None,
              task_name: str | None = None) -> list[str]:
        """Write the script's files of several K into ``folder``: the selected K's result
        files, enumeration.csv, criteria.png and a folder ``k{K}/`` per K, each K with its
        conclusions (the goodness-of-fit bootstrap, ``gof_bootstrap`` = B, for the selected
        K only); return the paths.  Arguments as :meth:`MixtureResults.write`; each K's
        standard errors are its ``se_results``."""
        from src.output.enumeration import write_enumeration
        from src.pipeline.conclusions import conclusions_of

        selected = self.selected
        se_by_k = {str(k): m._se_dicts() for k, m in self.models.items()}
        opts = _output_options(self.options, folder, se_by_k[str(self.selected_k)],
                               selected.se_result, formats=formats, plots=plots,
                               ci_level=ci_level, gof_bootstrap=gof_bootstrap, lang=lang,
                               task_name=task_name)
        fits = {str(k): m.fit_result.to_dict() for k, m in self.models.items()}
        with _language(opts.lang), phases.run_executor(opts, opts.gof_bootstrap > 0) as executor:
            found = {k: conclusions_of(m.prepared, fits[str(k)], se_by_k[str(k)],
                                       opts.replace(components=k), executor=executor, k=k,
                                       gof_bootstrap_replicates=None if k == self.selected_k else 0)
                     for k, m in self.models.items()}
            _add_structural(found[self.selected_k], selected.structural_result, opts)
            return write_enumeration({k: m.model for k, m in self.models.items()},
                                     selected.prepared.record, fits, self.selection, se_by_k,
                                     opts, fingerprint={}, conclusions_by_k=found)

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
