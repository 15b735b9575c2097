"""The phases of a run, one function each (wired in :mod:`src.pipeline.tracked`); with
several K (``--components 1-4``) :mod:`src.pipeline.enumeration` adds ``model_selection`` and
runs estimation, standard errors and output per K.

Each phase takes what the previous ones produced and returns a value the progress tracker
can store (JSON values and numpy arrays).  Long phases take a ``checkpoint``
(:class:`~src.utils.checkpointing.Checkpointer`) and a ``reporter`` for live progress.
The input data are not stored: the data phase records the file's path and hashes and
:func:`materialise` reads them again on resume (a changed file is refused).

Nothing here names a model family or a standard-error method: the family's class and
``src.inference.SE_METHODS`` say what they read and need.  The Python API
(:mod:`src.api`) uses the same functions on an in-memory table (:func:`prepare_frame`,
:func:`fit_model`, :func:`se_arguments`).
"""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..config import RunOptions
from ..models.base import MixtureModel
from ..models.registry import constructor_options, get_model_class
from ..utils.console import KINDS
from ..utils.checkpointing import Checkpointer, CheckpointInvalid, NullCheckpointer, require
from ..utils.errors import DataError, FingerprintMismatch, ModelError
from ..utils.messages import register, t

__all__ = ["Prepared", "model_class", "check_model_needs", "check_se_supported", "build_model", "prepare_frame",
           "prepare_data", "materialise", "run_executor", "fit_model", "estimate_model",
           "se_arguments", "compute_standard_errors", "needs_workers", "write_results",
           "write_enumeration_results", "output_is_current", "input_hashes"]

register({
    "phase.data_changed": {
        "en": "The data file {path} no longer gives the data this progress was computed from (parsed hash {old} -> {new}); rerun with --recompute-changed or --restart.",
        "zh": "数据文件 {path} 的内容已与保存进度时不同（解析后哈希 {old} -> {new}）；请使用 --recompute-changed 或 --restart 重新运行。"},
    "phase.needs_data": {
        "en": "Model '{model}' has no built-in data set; give a file with --data.",
        "zh": "模型 '{model}' 没有内置数据集；请用 --data 指定数据文件。"},
    "phase.se_unsupported": {
        "en": "Model '{model}' does not support standard errors by '{method}'; choose --se-method from {methods} or none.",
        "zh": "模型 '{model}' 不支持 '{method}' 标准误；请从 {methods} 或 none 中选择 --se-method。"},
})

#: parsed hash -> (data, meta, row positions, id column, id values of the kept rows)
_CACHE: dict[str, tuple[dict[str, np.ndarray], dict[str, Any], Any, Any, Any]] = {}
#: (parsed hash, structural columns) -> the kept rows' --structural columns
_STRUCTURAL: dict[tuple[str, tuple[str, ...]], Any] = {}


def _structural_key(parsed: str, options: RunOptions) -> tuple[str, tuple[str, ...]] | None:
    from ..structural.data import structural_columns

    cols = structural_columns(options)
    return (parsed, tuple(cols)) if cols else None


@dataclass
class Prepared:
    """The data of a run, ready for the model: arrays, metadata, the set-up model.

    ``row_positions``: each kept row's 0-based position in the input, as pandas counts
    (rows dropped by ``--drop-missing`` counted; None when a user's family dropped rows by
    a rule of its own); ``id_column`` and ``row_ids``: the ``--id`` column and its values
    on the kept rows (None without ``--id``).  ``record["n_dropped"]``: the rows dropped.
    """

    model: MixtureModel
    data: dict[str, np.ndarray]
    meta: dict[str, Any]
    record: dict[str, Any]
    row_positions: np.ndarray | None = None
    id_column: str | None = None
    row_ids: np.ndarray | None = None
    #: partitioned input (``data`` is then a row engine): the start search's random sample
    #: of rows in memory and their global row numbers (:mod:`src.pipeline.partitioned`)
    sample: dict[str, np.ndarray] | None = None
    sample_positions: np.ndarray | None = None
    #: --structural: the kept rows' covariate or distal columns (a DataFrame, never modelled)
    structural: Any = None

    @property
    def partitioned(self) -> bool:
        """True when ``data`` is a row engine over partitions, not arrays in memory."""
        return self.sample is not None

    @property
    def n_obs(self) -> int:
        if self.partitioned:
            return int(self.data.n_obs)
        return int(next(iter(self.data.values())).shape[0])

    def close(self) -> None:
        """Let go of the row engine (a Dask engine's client and held partitions)."""
        if self.partitioned:
            self.data.close()

    @property
    def row_labels(self) -> np.ndarray:
        """What names each kept row in ``posteriors.csv``: its id with ``--id``, else its
        input position (0..n-1 of the kept rows when the positions are unknown)."""
        if self.row_ids is not None:
            return self.row_ids
        if self.row_positions is not None:
            return self.row_positions
        return np.arange(self.n_obs, dtype=np.int64)


# ------------------------------------------------------------------ model
def model_class(options: RunOptions) -> type[MixtureModel]:
    """The class named by ``--model`` (ModelError, one sentence, when it cannot be loaded)."""
    return get_model_class(options.model)


def check_model_needs(cls: type[MixtureModel], options: RunOptions) -> None:
    """What the family says it needs: a data file, supported standard-error methods."""
    if options.data is None and cls.needs_data:
        raise DataError(t("phase.needs_data", model=options.model))
    check_se_supported(cls, options.se_methods(), options.model)


def check_se_supported(cls: type[MixtureModel], methods: list[str], label: str) -> None:
    """ModelError when the family says it does not support one of ``methods``."""
    from ..inference import SE_METHODS

    supported = cls.se_methods if cls.se_methods is not None else tuple(SE_METHODS)
    for method in methods:
        if method not in supported:
            raise ModelError(t("phase.se_unsupported", model=label, method=method,
                               methods=", ".join(supported)))


#: --model -> the family class the covariate model wrapped (a class given to the API has
#: no name to load it by again; build_model is asked for another K with the wrapper's class)
_FAMILIES: dict[str, type] = {}


def build_model(options: RunOptions, meta: dict[str, Any],
                cls: type[MixtureModel] | None = None, k: int | None = None) -> MixtureModel:
    """Instantiate the model (``cls``, default the one named by ``--model``) for the data,
    with ``k`` classes (default: ``--components``; with several K, the largest)."""
    from ..models.covariates import COVARIATES_META, CovariateMixture
    if isinstance(cls, type) and issubclass(cls, CovariateMixture):   # a fitted model's class
        cls = _FAMILIES.get(str(options.model))
    cls = cls or model_class(options)
    opts = {k: v for k, v in options.model_options(cls).items() if k != "drop_missing"}
    k = int(k) if k is not None else max(options.k_list())
    try:
        model = cls(k, **constructor_options(cls, opts))
    except ValueError as exc:
        raise ModelError(str(exc)) from None
    if meta.get(COVARIATES_META) is not None:   # --covariates: the one-step covariate model
        from ..data.covariates import check_reference_class
        check_reference_class(options.reference_class, k)
        _FAMILIES[str(options.model)] = cls
        model = CovariateMixture(model, meta[COVARIATES_META],
                                 reference=int(options.reference_class) - 1)
    model.setup(meta)
    return model


# ------------------------------------------------------------------- data
def _hash_data(data: dict[str, np.ndarray], meta: dict[str, Any]) -> str:
    h = hashlib.sha256()
    for key in sorted(data):
        arr = np.ascontiguousarray(data[key])
        h.update(key.encode() + str(arr.dtype).encode() + str(arr.shape).encode())
        h.update(arr.tobytes())
    h.update(json.dumps(meta, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _read(options: RunOptions) -> tuple[Any, dict[str, Any], type[MixtureModel]]:
    """The table named by ``--data`` (read as the family asks), its record, the class."""
    from ..data.loading import load_table

    from ..data.rows import check_weight_column

    cls = model_class(options)
    check_model_needs(cls, options)
    columns = options.columns
    if options.weights is not None and columns is not None:   # read beside the model's columns
        check_weight_column(options.weights, columns, None, str(options.data), options.id)
        columns = [*columns, str(options.weights)]
    from ..data.covariates import check_covariate_columns, one_step_covariates
    covariates = one_step_covariates(options)
    if covariates and columns is not None:   # the one-step model's covariates: beside them
        check_covariate_columns(covariates, columns, None, str(options.data), options.id,
                                options.weights)
        columns = [*columns, *covariates]
    if options.structural is not None:   # covariates or distal outcomes: beside them too
        from ..structural.data import check_structural_columns, structural_columns
        check_structural_columns(options, None, str(options.data))
        if columns is not None:
            columns = [*columns, *structural_columns(options)]
    frame, record = load_table(options.data, columns=columns,
                               as_text=bool(cls.reads_text), sep=options.sep,
                               encoding=options.encoding, id_column=options.id)
    return frame, record, cls


def prepare_frame(frame: Any, options: RunOptions, cls: type[MixtureModel],
                  record: dict[str, Any]) -> Prepared:
    """The family's arrays, meta and set-up model from a table (script and API).

    A ValueError of the family becomes a DataError; fewer rows than free parameters is one.
    The ``--id`` column (``options.id``) and the ``--weights`` column are taken out of
    ``frame`` first (never model columns; :mod:`src.data.rows`); the record gains
    ``n_dropped`` and, with weights, ``weight_column``, ``weight_type``, ``weight_sum``
    (the kept rows'), ``n_zero_weight`` and its notes.  Rows of weight 0 (and, with
    ``--drop-missing``, of a missing weight) are dropped before the family's arrays are made
    again from the other rows (the whole table is validated first, so errors name input rows).
    """
    from ..data.loading import check_enough_rows
    from ..data.rows import kept_rows, split_id, split_weights, zero_weight_note
    from ..models.base import WEIGHT_KEY

    source = str(record.get("source") or "the data")
    if options.weights is not None:
        from ..data.rows import check_weight_column
        check_weight_column(options.weights, options.columns, None, source, options.id)
    frame, ids = split_id(frame, options.id, options.columns, source)
    from ..structural.data import split_structural
    frame, structural = split_structural(frame, options, source)   # never model columns
    n_input = int(len(frame))
    frame, weights = split_weights(frame, options.weights, options.columns, source,
                                   drop_missing=bool(options.drop_missing))
    from ..data.covariates import one_step_covariates, split_covariates
    covariates = one_step_covariates(options)   # --covariates (one step): never model columns
    frame, covs = split_covariates(frame, covariates, options.columns, source,
                                   drop_missing=bool(options.drop_missing),
                                   id_column=options.id, weight_column=options.weights)
    complete = None if covs is None else np.isfinite(covs).all(axis=1)

    def arrays(rows: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        try:
            return cls.prepare_data(rows, {**options.model_options(cls), "source": source})
        except (DataError, ModelError):
            raise
        except ValueError as exc:
            raise DataError(str(exc)) from None

    data, meta = arrays(frame)
    base = None   # the input rows left after dropping weight 0 / missing weights
    notes: list[str] = []
    if weights is not None:
        notes = zero_weight_note(weights, str(options.weights), source)
        used = weights > 0
        if not used.any():
            raise DataError(t("data.all_zero_weights", source=source, column=str(options.weights)))
        if complete is not None:   # rows with a missing covariate (--drop-missing) go too
            used = used & complete
        if not used.all():
            base = np.flatnonzero(used)
            frame = frame.iloc[base].reset_index(drop=True)
            ids = None if ids is None else ids[base]
            data, meta = arrays(frame)
    elif complete is not None and not complete.all():   # --drop-missing: a missing covariate
        base = np.flatnonzero(complete)
        frame = frame.iloc[base].reset_index(drop=True)
        ids = None if ids is None else ids[base]
        data, meta = arrays(frame)
    if covs is not None:
        from ..models.covariates import COVARIATES_META
        meta = {**meta, COVARIATES_META: list(covariates)}
    model = build_model(options, meta, cls)
    n_obs = int(next(iter(data.values())).shape[0])
    if weights is None:
        positions, kept_ids = kept_rows(frame, ids, n_obs, model=options.model, source=source)
        if base is not None and positions is not None:   # input rows, as with weights
            positions = base[positions]
        check_enough_rows(n_obs, model.n_free_parameters(), source)
    else:
        from ..data.rows import kept_positions
        positions = kept_positions(frame, n_obs)
        if positions is None:
            raise DataError(t("data.weights_unmatched", model=options.model, n_kept=n_obs,
                              n_rows=n_input, source=source))
        kept_ids = None if ids is None else ids[positions]
        w = weights[base][positions] if base is not None else weights[positions]
        data = {**data, WEIGHT_KEY: np.ascontiguousarray(w, dtype=np.float64)}
        positions = base[positions] if base is not None else positions
        frequency = options.weight_type == "frequency"
        check_enough_rows(float(w.sum()) if frequency else n_obs, model.n_free_parameters(), source)
        record = {**record, "columns": [c for c in record.get("columns", [])
                                        if str(c) != str(options.weights)],
                  "weight_column": str(options.weights), "weight_type": options.weight_type,
                  "weight_sum": float(w.sum()), "n_zero_weight": int((weights == 0).sum()),
                  "notes": [*record.get("notes", []), *notes]}
    record = {**record, "n_dropped": n_input - n_obs}
    if covs is not None:   # the design of the kept rows (intercept first), row-aligned
        from ..models.covariates import Z_KEY
        from ..models.logit import design
        if positions is None:
            raise DataError(t("covariates.unmatched", model=options.model, n_kept=n_obs,
                              n_rows=n_input, source=source))
        data = {**data, Z_KEY: np.ascontiguousarray(design(covs[positions], covariates)[0])}
        from ..data.covariates import check_design
        check_design(data[Z_KEY], covariates, source)
        record = {**record, "covariates": list(covariates),
                  "columns": [c for c in record.get("columns", [])
                              if str(c) not in covariates]}
    if structural is not None:
        from ..structural.data import kept_structural
        structural = kept_structural(structural, positions, options, source)
        record = {**record, "columns": [c for c in record.get("columns", [])
                                        if str(c) not in [str(x) for x in structural.columns]]}
    return Prepared(model, data, meta, record, positions,
                    None if ids is None else str(options.id), kept_ids, structural=structural)


def prepare_data(options: RunOptions, reporter: Any = None) -> dict[str, Any]:
    """Phase ``data_preparation``: load, select, validate; return a small record.

    The loader's notes (a detected separator, encoding or decimal comma) go to
    ``reporter`` as soon as the file is read, so they come before an error they may
    explain.  They are shown when this phase runs: a resumed run that skips it does not
    show them again (they stay in the record, ``record["notes"]``, which the report lists
    under the data and the API exposes; the note on repeated ids too)."""
    from ..data.rows import id_notes

    if options.partitioned:
        from .partitioned import prepare_partitioned
        return prepare_partitioned(options, reporter)
    frame, record, cls = _read(options)
    if reporter is not None:
        for note in record.get("notes", []):
            reporter.message(note)
    prepared = prepare_frame(frame, options, cls, record)
    ids = id_notes(prepared.row_ids, prepared.id_column)
    if reporter is not None:
        for note in prepared.record.get("notes", [])[len(record.get("notes", [])):]:
            reporter.message(note)   # the data's own (rows of weight 0 dropped)
        for note in ids:
            reporter.message(note)
    if ids:   # kept with the others: the report shows them, also after a resume
        prepared.record["notes"] = [*prepared.record.get("notes", []), *ids]
    parsed = _hash_data(prepared.data, prepared.meta)
    _CACHE[parsed] = (prepared.data, prepared.meta, prepared.row_positions,
                      prepared.id_column, prepared.row_ids)
    if prepared.structural is not None:
        _STRUCTURAL[_structural_key(parsed, options)] = prepared.structural
    return {**prepared.record, "n_obs": prepared.n_obs, "meta": prepared.meta,
            "parsed_sha256": parsed}


def materialise(record: dict[str, Any], options: RunOptions) -> Prepared:
    """The arrays behind a data record: from memory, or read again and checked (also when
    this run's ``--id`` is not the one they were kept with: the ids are read again).
    Partitioned input: a row engine and a sample (:mod:`src.pipeline.partitioned`)."""
    if record.get("partitioned"):
        from .partitioned import materialise_partitioned
        return materialise_partitioned(record, options)
    cached = _CACHE.get(record["parsed_sha256"])
    key = _structural_key(record["parsed_sha256"], options)
    if cached is None or cached[3] != options.id or (key is not None and key not in _STRUCTURAL):
        frame, _, cls = _read(options)
        again = prepare_frame(frame, options, cls, record)
        parsed = _hash_data(again.data, again.meta)
        if parsed != record["parsed_sha256"]:
            raise FingerprintMismatch(t("phase.data_changed", path=record.get("path"),
                                        old=record["parsed_sha256"][:12], new=parsed[:12]))
        cached = (again.data, again.meta, again.row_positions, again.id_column, again.row_ids)
        _CACHE[parsed] = cached
        if key is not None:
            _STRUCTURAL[key] = again.structural
    data, meta, positions, id_column, ids = cached
    return Prepared(build_model(options, meta), data, meta, record, positions, id_column, ids,
                    structural=_STRUCTURAL.get(key) if key is not None else None)


# ------------------------------------------------------------- estimation
@contextmanager
def run_executor(options: RunOptions, needed: bool = True) -> Iterator[Any]:
    """One executor for a whole run (None in process), so worker processes start while
    the data are read and stay warm for the random starts and the bootstrap."""
    if not needed or (options.workers <= 1 and not options.scheduler):
        yield None
        return
    from ..parallel.executors import make_executor
    executor = make_executor(workers=options.workers, scheduler=options.scheduler)
    try:
        yield executor
    finally:
        executor.close()


@contextmanager
def _own_executor(options: RunOptions, given: Any, needed: bool = True) -> Iterator[Any]:
    if given is not None:
        yield given
    else:
        with run_executor(options, needed) as executor:
            yield executor


def fit_model(prepared: Prepared, options: RunOptions, checkpoint: Checkpointer | None = None,
              reporter: Any = None, executor: Any = None) -> Any:
    """EM from ``--n-candidates`` cheap candidates, the ``--n-starts`` best to convergence
    (``src.estimation.em.fit_em``); a FitResult."""
    from ..estimation.em import fit_em
    from .reporting import fit_progress

    checkpoint, on_iteration = fit_progress(
        checkpoint or NullCheckpointer(), reporter,
        prepared.model.n_components if options.enumerating else None)
    with _own_executor(options, executor) as executor:
        if prepared.partitioned:
            from ..estimation.partitioned import fit_partitioned
            return fit_partitioned(prepared.model, prepared.data, prepared.sample,
                                   n_starts=options.n_starts, n_candidates=options.n_candidates,
                                   candidate_iter=options.candidate_iter, tol=options.tol,
                                   max_iter=options.max_iter, seed=options.seed,
                                   accelerate=options.accelerate, chunk_size=options.chunk_size,
                                   checkpoint=checkpoint, executor=executor,
                                   on_iteration=on_iteration)
        return fit_em(prepared.model, prepared.data, n_starts=options.n_starts,
                      n_candidates=options.n_candidates, candidate_iter=options.candidate_iter,
                      tol=options.tol,
                      max_iter=options.max_iter, seed=options.seed, accelerate=options.accelerate,
                      chunk_size=options.chunk_size, checkpoint=checkpoint,
                      executor=executor, on_iteration=on_iteration)


def estimate_model(prepared: Prepared, options: RunOptions,
                   checkpoint: Checkpointer | None = None, reporter: Any = None,
                   executor: Any = None, **reuse: Any) -> dict[str, Any]:
    """Phase ``model_estimation``: :func:`fit_model` as a dict the tracker stores.

    ``executor`` runs the starts (default: one made from ``--workers``/``--scheduler``).
    With several K, :func:`src.pipeline.enumeration.estimate_models` (``reuse``: its
    ``fingerprint`` and ``stale`` keywords)."""
    if options.enumerating:
        from .enumeration import estimate_models
        return estimate_models(prepared, options, checkpoint, reporter, executor, **reuse)
    return fit_model(prepared, options, checkpoint, reporter, executor).to_dict()


# ------------------------------------------------------- standard errors
def _se_state(state: Any, methods: list[str], model: MixtureModel) -> dict[str, Any]:
    """The phase's resumed state ``{"done", "method", "inner"}`` checked against this run
    (``{}`` when there is none): CheckpointInvalid, one phrase, when it does not fit.

    ``done`` maps methods of this run to results naming this model's parameters;
    ``method`` (the one under way) is None or a method of this run; ``inner`` is that
    method's own state, which the method checks."""
    from ..inference.results import SEResult

    if state is None:
        return {}
    require(isinstance(state, dict), f"the standard-error state is a {type(state).__name__}, "
                                      "not a mapping")
    done = state.get("done", {})
    require(isinstance(done, dict), f"'done' is a {type(done).__name__}, not a mapping")
    for name, result in done.items():
        require(name in methods, f"'done' names {name!r}, not one of this run's methods "
                                 f"({', '.join(methods)})")
        require(isinstance(result, dict), f"the saved result of {name!r} is not a mapping")
        try:
            se = SEResult.from_dict(result)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointInvalid(f"the saved result of {name!r} cannot be read "
                                    f"({type(exc).__name__}: {exc})") from None
        require(se.method == name and se.names == model.reported_names()
                and se.free_names == model.free_names()
                and all(getattr(se, k).shape == (len(se.names),)
                        for k in ("estimates", "se", "ci_lower", "ci_upper"))
                and se.cov_free.shape == (len(se.free_names),) * 2,
                f"the saved result of {name!r} does not describe this model's parameters")
    method = state.get("method")
    require(method is None or (isinstance(method, str) and method in methods),
            f"'method' is {method!r}, not None or one of this run's methods ({', '.join(methods)})")
    return state


class _MethodCheckpoint:
    """Namespaces one SE method's checkpoints inside the phase's state."""

    def __init__(self, parent: Checkpointer, method: str, done: dict[str, Any],
                 methods: list[str], model: MixtureModel) -> None:
        self.parent, self.method, self.done = parent, method, done
        self.methods, self.model = methods, model

    def resume_state(self) -> dict[str, Any] | None:
        """The method's own state when the saved one is this method's (checked first)."""
        state = _se_state(self.parent.resume_state(), self.methods, self.model)
        if state and state.get("method") == self.method:
            return state.get("inner")
        return None

    def checkpoint(self, state: dict[str, Any], *, force: bool = False) -> bool:
        return self.parent.checkpoint({"done": dict(self.done), "method": self.method,
                                       "inner": state}, force=force)


def se_arguments(method: str, options: RunOptions, *, checkpoint: Checkpointer | None = None,
                 executor: Any = None, reporter: Any = None,
                 k: int | None = None) -> dict[str, Any]:
    """The keyword arguments of ``method``'s function, as its description says (``k``:
    shown with its progress when several K are fitted)."""
    from ..inference import SE_METHODS

    desc = SE_METHODS[method]
    kwargs: dict[str, Any] = {kw: getattr(options, name) for kw, name in desc.reads.items()}
    if desc.checkpointed and checkpoint is not None:
        kwargs["checkpoint"] = checkpoint
    if desc.parallel:
        kwargs["executor"] = executor
    if desc.progress and reporter is not None:
        kwargs[desc.progress] = lambda index, status, done, total: reporter.unit(
            method, done, total, kind=method if method in KINDS else "replicate", k=k)
    return kwargs


def compute_standard_errors(prepared: Prepared, fit: dict[str, Any], options: RunOptions,
                            checkpoint: Checkpointer | None = None,
                            reporter: Any = None, executor: Any = None) -> dict[str, Any]:
    """Phase ``standard_error_computation``: ``{method: SEResult.to_dict()}``.

    ``executor`` runs parallel methods' units (default: one made from the options)."""
    from ..inference import SE_METHODS

    methods = options.se_methods()
    if not methods:
        return {}
    check_se_supported(type(prepared.model), methods, options.model)
    checkpoint = checkpoint or NullCheckpointer()
    state = _se_state(checkpoint.resume_state(), methods, prepared.model)
    done: dict[str, Any] = dict(state.get("done", {}))
    params = {k: np.asarray(v) for k, v in fit["params"].items()}
    todo = [m for m in methods if m not in done]
    # Started first, so the workers come up while the sequential methods run.
    with _own_executor(options, executor, any(SE_METHODS[m].parallel for m in todo)) as executor:
        for method in todo:
            kwargs = se_arguments(method, options, executor=executor, reporter=reporter,
                                  k=prepared.model.n_components if options.enumerating else None,
                                  checkpoint=_MethodCheckpoint(checkpoint, method, done, methods,
                                                               prepared.model))
            keyword = SE_METHODS[method].sample_keyword
            if prepared.partitioned and keyword is not None:   # e.g. classes aligned on it
                kwargs[keyword] = prepared.sample
            numbers = SE_METHODS[method].row_numbers_keyword
            if numbers is not None and not prepared.partitioned \
                    and prepared.row_positions is not None:   # rows keep their input numbers
                kwargs[numbers] = prepared.row_positions
            result = SE_METHODS[method].function(prepared.model, prepared.data, params, **kwargs)
            done[method] = result.to_dict()
            checkpoint.checkpoint({"done": dict(done), "method": None, "inner": None}, force=True)
    return done


def needs_workers(options: RunOptions, fit_done: bool, se_done: bool,
                  selection_done: bool = True, output_done: bool = True) -> bool:
    """Whether the rest of the run has work for worker processes."""
    from ..inference import SE_METHODS

    return (not fit_done or (not selection_done and options.blrt > 0)
            or (not se_done and any(SE_METHODS[m].parallel for m in options.se_methods()))
            or (not output_done and options.gof_bootstrap > 0))


# ---------------------------------------------------------------- output
def write_results(prepared: Prepared, fit: dict[str, Any], se: dict[str, Any],
                  options: RunOptions, fingerprint: dict[str, Any] | None = None, *,
                  checkpoint: Checkpointer | None = None, executor: Any = None,
                  reporter: Any = None, kept: dict[str, Any] | None = None,
                  structural: dict[str, Any] | None = None) -> dict[str, Any]:
    """Phase ``result_output``: estimates.csv, covariance.csv, posteriors.csv, fit.json,
    the figures and the report (:mod:`src.pipeline.conclusions` says what the fit means;
    its goodness-of-fit bootstrap is the phase's only checkpointed work, and its replicates
    are kept in the result (``gof_state``) for an output-only redo: ``kept``)."""
    from ..output.writers import write_all
    from .conclusions import conclusions_of, with_kept_replicates

    found, gof = with_kept_replicates(
        lambda cp: conclusions_of(prepared, fit, se, options, checkpoint=cp, executor=executor,
                                  reporter=reporter), checkpoint, kept)
    _add_structural(found, structural, options)
    files = write_all(prepared.model, prepared.record, fit, se, options,
                      fingerprint=fingerprint or {}, conclusions=found)
    return {"output_dir": str(options.results_dir), "files": files, "written_at": time.time(),
            **({"gof_state": gof} if gof else {})}


def write_enumeration_results(prepared: Prepared, fits: dict[str, Any],
                              selection: dict[str, Any], se: dict[str, Any],
                              options: RunOptions,
                              fingerprint: dict[str, Any] | None = None, *,
                              checkpoint: Checkpointer | None = None, executor: Any = None,
                              reporter: Any = None, kept: dict[str, Any] | None = None,
                              structural: dict[str, Any] | None = None) -> dict[str, Any]:
    """Phase ``result_output`` with several K: the selected K's files, enumeration.csv,
    criteria.png and a folder ``k{K}/`` per K (``src.output.enumeration``), each with its
    conclusions (the goodness-of-fit bootstrap for the selected K only)."""
    from ..output.enumeration import write_enumeration
    from .conclusions import conclusions_of, with_kept_replicates
    from .enumeration import prepared_for

    selected = int(selection["selected"])
    preps = {k: prepared_for(prepared, options, k) for k in options.k_list()}

    def one(k: int, cp: Any) -> Any:
        return conclusions_of(preps[k], fits["fits"][str(k)], se["by_k"].get(str(k), {}),
                              options.replace(components=k), checkpoint=cp, executor=executor,
                              reporter=reporter, k=k,
                              gof_bootstrap_replicates=None if k == selected else 0)

    found = {k: one(k, None) for k in options.k_list() if k != selected}
    found[selected], gof = with_kept_replicates(lambda cp: one(selected, cp), checkpoint, kept)
    _add_structural(found[selected], structural, options)
    files = write_enumeration({k: p.model for k, p in preps.items()}, prepared.record,
                              fits["fits"], selection, se["by_k"], options,
                              fingerprint=fingerprint or {}, conclusions_by_k=found)
    return {"output_dir": str(options.results_dir), "files": files, "written_at": time.time(),
            **({"gof_state": gof} if gof else {})}


def _add_structural(found: Any, structural: dict[str, Any] | None, options: RunOptions) -> None:
    """fit.json's ``structural`` block (three-step estimation), from which the writers add
    its estimates.csv rows and report section (:mod:`src.output.structural`)."""
    if structural:
        from ..output.structural import structural_json
        found.json["structural"] = structural_json(structural, options)


def output_is_current(result: dict[str, Any], options: RunOptions) -> bool:
    """True while the files a completed ``result_output`` wrote are still where asked and
    form one whole result set of this task (its manifest and their SHA-256 agree), so a
    mixed, edited or partly removed set is written again."""
    from ..output.writers import result_set_is_complete

    return (Path(result["output_dir"]) == options.results_dir
            and all(Path(f).is_file() for f in result["files"])
            and result_set_is_complete(result["output_dir"], options.task_name))


# ----------------------------------------------------------- fingerprints
def input_hashes(options: RunOptions) -> dict[str, Any]:
    """Hashes of the inputs read from disk, for :func:`src.config.phase_fingerprints`."""
    from ..data.loading import DEFAULT_SOURCE, builtin_path, file_sha256
    from ..models.registry import model_source_hash
    from ..progress.fingerprint import environment_fingerprint

    source = options.data or DEFAULT_SOURCE
    if options.partitioned:
        from .partitioned import input_fingerprint
        try:
            data_sha: str | None = input_fingerprint(options)
        except DataError:
            data_sha = "missing"
        path = None
    elif source.startswith("builtin:"):
        try:
            path = builtin_path(source.split(":", 1)[1])
        except DataError:
            path = None
    else:
        path = Path(source)
    if not options.partitioned:
        data_sha = file_sha256(path) if path is not None and path.is_file() else "missing"
    try:
        model_sha = model_source_hash(options.model)
    except OSError:
        model_sha = None
    return {"data_sha256": data_sha, "model_file_sha256": model_sha,
            "environment": environment_fingerprint()}
