"""The four phases of a run, one function each, called by ``scripts/02_run_estimation.py``.

Each phase takes what the previous ones produced and returns a value the progress tracker
can store (JSON values and numpy arrays).  Long phases take a ``checkpoint``
(:class:`~src.utils.checkpointing.Checkpointer`) and a ``reporter`` for live progress.
The input data are not stored: the data phase records the file's path and hashes and
:func:`materialise` reads them again on resume (a changed file is refused).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from .config import RunOptions
from .models.base import MixtureModel
from .models.registry import get_model_class
from .utils.checkpointing import Checkpointer, NullCheckpointer
from .utils.errors import DataError, FingerprintMismatch, ModelError
from .utils.messages import register, t

__all__ = ["Prepared", "prepare_data", "materialise", "estimate_model",
           "compute_standard_errors", "write_results", "build_model"]

register({
    "phase.data_changed": {
        "en": "The data file {path} no longer gives the data this progress was computed from (parsed hash {old} -> {new}); rerun with --recompute-changed or --restart.",
        "zh": "数据文件 {path} 的内容已与保存进度时不同（解析后哈希 {old} -> {new}）；请使用 --recompute-changed 或 --restart 重新运行。"},
    "phase.model": {"en": "{detail}", "zh": "{detail}"},
    "phase.needs_data": {
        "en": "Model '{model}' has no built-in data set; give a file with --data.",
        "zh": "模型 '{model}' 没有内置数据集；请用 --data 指定数据文件。"},
    "phase.se_unavailable": {
        "en": "Standard errors by '{method}' are not available in this version; choose another --se-method.",
        "zh": "本版本尚不支持 '{method}' 标准误；请选择其他 --se-method。"},
})

_CACHE: dict[str, tuple[dict[str, np.ndarray], dict[str, Any]]] = {}


@dataclass
class Prepared:
    """The data of a run, ready for the model: arrays, metadata, the set-up model."""

    model: MixtureModel
    data: dict[str, np.ndarray]
    meta: dict[str, Any]
    record: dict[str, Any]

    @property
    def n_obs(self) -> int:
        return int(next(iter(self.data.values())).shape[0])


# ------------------------------------------------------------------ data
def build_model(options: RunOptions, meta: dict[str, Any]) -> MixtureModel:
    """Instantiate the model named by ``--model`` and set it up for the data."""
    try:
        cls = get_model_class(options.model)
    except ValueError as exc:
        raise ModelError(t("phase.model", detail=str(exc))) from None
    opts = {k: v for k, v in options.model_options().items() if k != "drop_missing"}
    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        opts = {k: v for k, v in opts.items() if k in params}
    try:
        model = cls(options.components, **opts)
    except ValueError as exc:
        raise ModelError(t("phase.model", detail=str(exc))) from None
    model.setup(meta)
    return model


def _hash_data(data: dict[str, np.ndarray], meta: dict[str, Any]) -> str:
    h = hashlib.sha256()
    for key in sorted(data):
        arr = np.ascontiguousarray(data[key])
        h.update(key.encode() + str(arr.dtype).encode() + str(arr.shape).encode())
        h.update(arr.tobytes())
    h.update(json.dumps(meta, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _load(options: RunOptions) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, Any]]:
    from .data.loading import load_table

    try:
        cls = get_model_class(options.model)
    except ValueError as exc:
        raise ModelError(t("phase.model", detail=str(exc))) from None
    if options.data is None and options.model == "lca":
        raise DataError(t("phase.needs_data", model=options.model))
    as_text = bool(getattr(cls, "reads_text", cls.name == "lca"))
    frame, record = load_table(options.data, columns=options.columns, as_text=as_text)
    try:
        data, meta = cls.prepare_data(frame, {**options.model_options(), "source": record["source"]})
    except (DataError, ModelError):
        raise
    except ValueError as exc:
        raise DataError(str(exc)) from None
    return data, meta, record


def prepare_data(options: RunOptions) -> dict[str, Any]:
    """Phase ``data_preparation``: load, select, validate; return a small record."""
    from .data.loading import check_enough_rows

    data, meta, record = _load(options)
    model = build_model(options, meta)
    n_obs = int(next(iter(data.values())).shape[0])
    check_enough_rows(n_obs, model.n_free_parameters(), record["source"])
    parsed = _hash_data(data, meta)
    _CACHE[parsed] = (data, meta)
    return {**record, "n_obs": n_obs, "meta": meta, "parsed_sha256": parsed}


def materialise(record: dict[str, Any], options: RunOptions) -> Prepared:
    """The arrays behind a data record: from memory, or read again and checked."""
    cached = _CACHE.get(record["parsed_sha256"])
    if cached is None:
        data, meta, _ = _load(options)
        parsed = _hash_data(data, meta)
        if parsed != record["parsed_sha256"]:
            raise FingerprintMismatch(t("phase.data_changed", path=record.get("path"),
                                        old=record["parsed_sha256"][:12], new=parsed[:12]))
        _CACHE[parsed] = (data, meta)
        cached = (data, meta)
    data, meta = cached
    return Prepared(build_model(options, meta), data, meta, record)


# ------------------------------------------------------------ estimation
@contextmanager
def run_executor(options: RunOptions, needed: bool = True) -> Iterator[Any]:
    """One executor for a whole run (None in process), so worker processes start while
    the data are read and stay warm for the random starts and the bootstrap."""
    if not needed or (options.workers <= 1 and not options.scheduler):
        yield None
        return
    from .parallel.executors import make_executor
    executor = make_executor(workers=options.workers, scheduler=options.scheduler)
    try:
        yield executor
    finally:
        executor.close()


def estimate_model(prepared: Prepared, options: RunOptions,
                   checkpoint: Checkpointer | None = None, reporter: Any = None,
                   executor: Any = None) -> dict[str, Any]:
    """Phase ``model_estimation``: EM from several random starts; returns FitResult.to_dict().

    ``executor`` runs the starts (default: one made from ``--workers``/``--scheduler``)."""
    from .estimation.em import fit_em

    with _own_executor(options, executor) as executor:
        fit = fit_em(prepared.model, prepared.data, n_starts=options.n_starts, tol=options.tol,
                     max_iter=options.max_iter, seed=options.seed, accelerate=options.accelerate,
                     chunk_size=options.chunk_size, checkpoint=checkpoint or NullCheckpointer(),
                     executor=executor,
                     on_iteration=reporter.iteration if reporter is not None else None)
    return fit.to_dict()


@contextmanager
def _own_executor(options: RunOptions, given: Any, needed: bool = True) -> Iterator[Any]:
    if given is not None:
        yield given
    else:
        with run_executor(options, needed) as executor:
            yield executor


# ------------------------------------------------------- standard errors
class _MethodCheckpoint:
    """Namespaces one SE method's checkpoints inside the phase's state."""

    def __init__(self, parent: Checkpointer, method: str, done: dict[str, Any]) -> None:
        self.parent, self.method, self.done = parent, method, done

    def resume_state(self) -> dict[str, Any] | None:
        state = self.parent.resume_state()
        if state and state.get("method") == self.method:
            return state.get("inner")
        return None

    def checkpoint(self, state: dict[str, Any], *, force: bool = False) -> bool:
        return self.parent.checkpoint({"done": dict(self.done), "method": self.method,
                                       "inner": state}, force=force)


def se_methods(options: RunOptions) -> list[str]:
    if options.se_method == "none":
        return []
    if options.se_method == "all":
        return ["louis", "numerical", "bootstrap"]
    return [options.se_method]


def compute_standard_errors(prepared: Prepared, fit: dict[str, Any], options: RunOptions,
                            checkpoint: Checkpointer | None = None,
                            reporter: Any = None, executor: Any = None) -> dict[str, Any]:
    """Phase ``standard_error_computation``: ``{method: SEResult.to_dict()}``.

    ``executor`` runs bootstrap replicates (default: one made from the options)."""
    methods = se_methods(options)
    if not methods:
        return {}
    try:
        from .inference import SE_METHODS, compute_standard_errors as compute
    except ImportError:
        raise ModelError(t("phase.se_unavailable", method=options.se_method)) from None
    checkpoint = checkpoint or NullCheckpointer()
    state = checkpoint.resume_state() or {}
    done: dict[str, Any] = dict(state.get("done", {}))
    params = {k: np.asarray(v) for k, v in fit["params"].items()}
    todo = [m for m in methods if m not in done]
    for method in todo:
        if method not in SE_METHODS:
            raise ModelError(t("phase.se_unavailable", method=method))
    # Started first, so the workers come up while Louis and the numerical Hessian run.
    with _own_executor(options, executor, "bootstrap" in todo) as executor:
        for method in todo:
            kwargs: dict[str, Any] = {}
            if method == "bootstrap":
                kwargs = dict(n_bootstrap=options.n_bootstrap, kind=options.bootstrap,
                              seed=options.seed, tol=options.tol, max_iter=options.max_iter,
                              accelerate=options.accelerate, chunk_size=options.chunk_size,
                              checkpoint=_MethodCheckpoint(checkpoint, method, done),
                              executor=executor,
                              on_replicate=(lambda r, status, d, n: reporter.unit("bootstrap", d, n))
                              if reporter is not None else None)
            elif method == "louis":
                kwargs = dict(chunk_size=options.chunk_size)
            result = compute(method, prepared.model, prepared.data, params, **kwargs)
            done[method] = result.to_dict()
            checkpoint.checkpoint({"done": dict(done), "method": None, "inner": None}, force=True)
    return done


# ---------------------------------------------------------------- output
def write_results(prepared: Prepared, fit: dict[str, Any], se: dict[str, Any],
                  options: RunOptions, fingerprint: dict[str, Any] | None = None) -> dict[str, Any]:
    """Phase ``result_output``: estimates.csv, covariance.csv, fit.json, report.md."""
    from .output.writers import write_all

    files = write_all(prepared.model, prepared.record, fit, se, options,
                      fingerprint=fingerprint or {})
    return {"output_dir": str(options.results_dir), "files": files, "written_at": time.time()}


def output_is_current(result: dict[str, Any], options: RunOptions) -> bool:
    """True while the files a completed ``result_output`` wrote are still where asked."""
    from pathlib import Path

    return (Path(result["output_dir"]) == options.results_dir
            and all(Path(f).is_file() for f in result["files"]))


# ----------------------------------------------------------- fingerprints
def input_hashes(options: RunOptions) -> dict[str, Any]:
    """Hashes of the inputs read from disk, for :func:`src.config.phase_fingerprints`."""
    from pathlib import Path

    from .data.loading import DEFAULT_SOURCE, builtin_path, file_sha256
    from .models.registry import model_source_hash
    from .progress.fingerprint import environment_fingerprint

    source = options.data or DEFAULT_SOURCE
    if source.startswith("builtin:"):
        try:
            path = builtin_path(source.split(":", 1)[1])
        except DataError:
            path = None
    else:
        path = Path(source)
    data_sha = file_sha256(path) if path is not None and path.is_file() else "missing"
    try:
        model_sha = model_source_hash(options.model)
    except OSError:
        model_sha = None
    return {"data_sha256": data_sha, "model_file_sha256": model_sha,
            "environment": environment_fingerprint()}
