"""Every option of a run, declared once: default, type, range, help, what it changes.

The option table is :data:`CORE_OPTIONS` (the run's own options) plus the options each
built-in model family declares (``MixtureModel.option_specs``) plus those of each
standard-error method (``src.inference.SE_METHODS``).  :class:`RunOptions` is generated
from it, and so are the TOML keys, the command-line flags (``src.pipeline.cli``), the
Python API's keywords (``src.api``) and the fingerprints (:func:`phase_fingerprints`).

Defaults < TOML config file (``--config``, same names with underscores) < command-line
flags.  Workers, scheduler, save interval, folders, language and debug change no number
and are left out of the fingerprints.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from pathlib import Path
from typing import Any, Iterable, Mapping

from . import __version__
from .estimation.starts import DEFAULT_CANDIDATE_ITER, DEFAULT_N_CANDIDATES
from .inference import DEFAULT_SE_METHOD, SE_METHODS
from .models.base import MixtureModel
from .models.registry import BUILTIN_MODELS, DEFAULT_MODEL, family_options, options_of
from .progress.paths import DEFAULT_TASK
from .utils.errors import UsageError
from .utils.messages import register, t
from .utils.options import Option, check_names, check_value

__all__ = ["RunOptions", "OPTIONS", "CORE_OPTIONS", "load_config", "build_options",
           "make_options", "phase_fingerprints", "PHASES", "SE_CHOICES", "DEFAULT_SEED"]

PHASES = ("data_preparation", "model_estimation", "standard_error_computation", "result_output")
DEFAULT_SEED = 20241101
#: --se-method: one registered method, every one of them, or none
SE_CHOICES = (*SE_METHODS, "all", "none")

register({
    "config.missing": {"en": "Config file {path} does not exist; check the path given to --config.",
                       "zh": "配置文件 {path} 不存在；请检查 --config 的路径。"},
    "config.toml": {"en": "Config file {path} is not valid TOML ({detail}); fix the file.",
                    "zh": "配置文件 {path} 不是有效的 TOML（{detail}）；请修正该文件。"},
    "config.where": {"en": "in config file {path}", "zh": "配置文件 {path} "},
    "config.duplicate_column": {
        "en": "Option 'columns' names column '{column}' more than once; give each column once.",
        "zh": "选项 'columns' 多次列出列 '{column}'；每列只需给出一次。"},
    "config.empty_columns": {
        "en": "Option 'columns' is empty; give column names, e.g. --columns a,b.",
        "zh": "选项 'columns' 为空；请给出列名，例如 --columns a,b。"},
})

_DATA, _EST, _SE, _EXEC, _PROG = ("data and model", "estimation", "standard errors",
                                  "execution and output", "progress tracking")
_D, _M, _S = "data_preparation", "model_estimation", "standard_error_computation"

#: the run's own options (families and SE methods add theirs, see OPTIONS)
CORE_OPTIONS: tuple[Option, ...] = (
    # data and model
    Option("data", str, None, "CSV, TSV or Parquet file (default: built-in Old Faithful data)",
           nullable=True, group=_DATA, metavar="FILE"),
    Option("columns", list, None, "comma-separated columns to use (default: all)", nullable=True,
           group=_DATA, fingerprint=_D, metavar="A,B,..."),
    Option("sep", str, None, "column separator of a text file: one character, tab, comma or "
           "semicolon (default: detected)", nullable=True, group=_DATA, fingerprint=_D),
    Option("encoding", str, None, "text encoding of a text file, e.g. utf-8, gbk (default: "
           "detected)", nullable=True, group=_DATA, fingerprint=_D),
    Option("drop_missing", bool, False, "drop rows with a missing value", group=_DATA,
           fingerprint=_D),
    Option("model", str, DEFAULT_MODEL, f"{', '.join(BUILTIN_MODELS)} or path/to/file.py:ClassName",
           group=_DATA, fingerprint=_D),
    Option("components", int, 2, "number of latent classes K", low=1, group=_DATA, fingerprint=_M),
    # estimation
    Option("n_starts", int, 10, "starts run to convergence (the best candidates)", low=1,
           group=_EST, fingerprint=_M),
    Option("n_candidates", int, DEFAULT_N_CANDIDATES, "cheap candidate starts (hierarchical, "
           "k-means++, random, random partitions) ranked after --candidate-iter EM iterations; "
           "0: --n-starts random starts only", low=0, group=_EST, fingerprint=_M),
    Option("candidate_iter", int, DEFAULT_CANDIDATE_ITER, "EM iterations of each candidate "
           "start before the best --n-starts go on", low=1, group=_EST, fingerprint=_M),
    Option("tol", float, 1e-8, "relative log-likelihood change to stop", low=0, low_open=True,
           group=_EST, fingerprint=_M),
    Option("max_iter", int, 1000, "EM iterations per start", low=1, group=_EST, fingerprint=_M),
    Option("seed", int, DEFAULT_SEED, "seed of every random stream", low=0, high=2**63 - 1,
           group=_EST, fingerprint=_M),
    Option("accelerate", str, "squarem", "EM acceleration", choices=("none", "squarem"),
           group=_EST, fingerprint=_M),
    Option("chunk_size", int, 4096, "rows per chunk", low=1, group=_EST, fingerprint=_M),
    # standard errors
    Option("se_method", str, DEFAULT_SE_METHOD, "standard-error method", choices=SE_CHOICES,
           group=_SE, fingerprint=_S),
    Option("primary_se", str, DEFAULT_SE_METHOD, "with several methods: the one in the 'se' column",
           choices=tuple(SE_METHODS), group=_SE, fingerprint=_S),
    # execution and output (change no number)
    Option("workers", int, 1, "local worker processes", low=1, group=_EXEC),
    Option("scheduler", str, None, "address of an existing Dask scheduler", nullable=True,
           group=_EXEC, metavar="ADDRESS"),
    Option("output_dir", str, None, "results folder (default results/TASK_NAME)", nullable=True,
           group=_EXEC, metavar="DIR"),
    Option("lang", str, None, "message language (default: zh when LANG starts with zh)",
           choices=("en", "zh"), nullable=True, group=_EXEC),
    Option("debug", bool, False, "show tracebacks and debug logs", group=_EXEC),
    # progress tracking (change no number)
    Option("no_progress_tracking", bool, False, "traditional mode: write no progress files at all",
           group=_PROG),
    Option("auto_cleanup_progress", bool, False,
           "remove the task's progress files once the run completes", group=_PROG),
    Option("task_name", str, DEFAULT_TASK, "task name", group=_PROG),
    Option("progress_dir", str, "progress", "progress folder", group=_PROG, metavar="DIR"),
    Option("save_interval", float, 10.0, "seconds between checkpoint writes", low=0, group=_PROG),
    Option("restart", bool, False, "discard earlier progress and start over", group=_PROG),
    Option("recompute_changed", bool, False,
           "keep the phases whose inputs are unchanged and recompute the rest", group=_PROG),
)


def _all_options() -> tuple[Option, ...]:
    out: dict[str, Option] = {}
    for opt in (*CORE_OPTIONS, *family_options(),
                *(o for m in SE_METHODS.values() for o in m.options)):
        if opt.name in out and out[opt.name] != opt:
            raise RuntimeError(f"option {opt.name!r} is declared twice, differently")
        out.setdefault(opt.name, opt)
    return tuple(out.values())


#: every option of a run, by name
OPTIONS: dict[str, Option] = {o.name: o for o in _all_options()}


class _RunOptionsMethods:
    """The behaviour of :class:`RunOptions` (its fields come from :data:`OPTIONS`)."""

    def validate(self) -> "RunOptions":
        """Check and normalise every value; raise UsageError naming the option."""
        for name, opt in OPTIONS.items():
            setattr(self, name, check_value(opt, getattr(self, name)))
        if self.columns is not None:
            if not self.columns:
                raise UsageError(t("config.empty_columns"))
            seen: set[str] = set()
            for col in self.columns:
                if col in seen:
                    raise UsageError(t("config.duplicate_column", column=col))
                seen.add(col)
        return self

    @property
    def results_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path("results") / self.task_name

    def se_methods(self) -> list[str]:
        """The standard-error methods this run computes, in registry order."""
        if self.se_method == "none":
            return []
        if self.se_method == "all":
            return list(SE_METHODS)
        return [self.se_method]

    def model_options(self, cls: type[MixtureModel] | None = None) -> dict[str, Any]:
        """The options the model family reads (its ``prepare_data`` and constructor).

        ``cls`` is the family's class (default: every built-in family's options, which a
        user model that declares none may read).  An option a user model declares that is
        not in the option table takes its declared default."""
        specs = options_of(cls) if cls is not None else family_options()
        return {"drop_missing": self.drop_missing,
                **{o.name: getattr(self, o.name, o.default) for o in specs}}

    def replace(self, **changes: Any) -> "RunOptions":
        """A validated copy with ``changes`` (names checked like the API's keywords)."""
        check_names(changes, OPTIONS, t("api.where", function="replace()"))
        return dataclasses.replace(self, **changes).validate()


RunOptions = dataclasses.make_dataclass(
    "RunOptions",
    [(o.name, o.annotation, dataclasses.field(default=o.default)) for o in OPTIONS.values()],
    bases=(_RunOptionsMethods,))
RunOptions.__module__ = __name__  # pickles by reference, like a class written out here
RunOptions.__doc__ = ("Options of a run (script and API); one field per entry of OPTIONS, "
                      "whose names are also the TOML keys.")

register({"api.where": {"en": "for {function}", "zh": "{function} 的参数"}})


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a TOML config; every key must be an option name (dashes allowed)."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(t("config.missing", path=p))
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(t("config.toml", path=p, detail=exc)) from None
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        key_u = key.replace("-", "_")
        if key_u not in OPTIONS:
            check_names([key], OPTIONS, t("config.where", path=p))
        if key_u == "columns" and isinstance(value, str):
            value = [c.strip() for c in value.split(",") if c.strip()]
        flat[key_u] = check_value(OPTIONS[key_u], value)
    return flat


def make_options(values: Mapping[str, Any], where: str, allowed: Iterable[str] | None = None
                 ) -> "RunOptions":
    """Validated RunOptions from ``values``; an unknown name gets the closest valid one.

    ``allowed`` limits the names (the API's ``fit`` takes only what changes a fit);
    ``where`` completes the error sentence ("for fit()")."""
    check_names(values, list(allowed) if allowed is not None else OPTIONS, where)
    return RunOptions(**values).validate()


def build_options(config: Mapping[str, Any], flags: Mapping[str, Any]) -> "RunOptions":
    """Defaults, then the config file, then the flags that were given (not None)."""
    merged = dict(config)
    merged.update({k: v for k, v in flags.items() if v is not None})
    return make_options(merged, t("api.where", function="RunOptions"))


def phase_fingerprints(options: "RunOptions", *, data_sha256: str, model_file_sha256: str | None,
                       environment: Mapping[str, Any],
                       model_class: type[MixtureModel] | None = None) -> dict[str, dict[str, Any]]:
    """What each phase's result depends on; each phase includes the phases before it.

    The options counted are the core options with a ``fingerprint`` phase, the options of
    the model family (``model_class``; default every built-in family's; without a phase:
    model_estimation) and those of the standard-error methods that run; ``primary_se``
    only when several methods run."""
    methods = options.se_methods()
    counted = [o for o in CORE_OPTIONS if o.fingerprint is not None]
    counted += options_of(model_class) if model_class is not None else family_options()
    counted += [o for m in methods for o in SE_METHODS[m].options]
    parts: dict[str, dict[str, Any]] = {p: {} for p in PHASES}
    for opt in counted:
        if opt.name == "primary_se" and len(methods) < 2:
            continue  # it only picks which of several methods fills the 'se' column
        value = getattr(options, opt.name, opt.default)  # a user model's own option: default
        parts[opt.fingerprint or "model_estimation"][opt.name] = value
    data = {"version": __version__, "environment": dict(environment), "data_sha256": data_sha256,
            "model_file_sha256": model_file_sha256, **parts["data_preparation"]}
    est = {**data, **parts["model_estimation"]}
    se = {**est, **parts["standard_error_computation"]}
    return {"data_preparation": data, "model_estimation": est,
            "standard_error_computation": se, "result_output": {**se, **parts["result_output"]}}
