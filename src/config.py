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
import numbers
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Iterable, Mapping

from . import __version__
from .estimation.starts import DEFAULT_CANDIDATE_ITER, DEFAULT_N_CANDIDATES
from .inference import DEFAULT_SE_METHOD, SE_METHODS, default_se_method
from .models.base import MixtureModel
from .models.registry import BUILTIN_MODELS, DEFAULT_MODEL, family_options, options_of
from .progress.paths import DEFAULT_TASK
from .structural import RESAMPLED, STRUCTURAL_SE
from .utils.errors import UsageError
from .utils.messages import get_language, register, t
from .utils.options import Option, check_names, check_value

__all__ = ["RunOptions", "OPTIONS", "CORE_OPTIONS", "load_config", "build_options",
           "make_options", "phase_fingerprints", "PHASES", "SE_CHOICES", "DEFAULT_SEED",
           "SELECT_CHOICES", "FORMAT_CHOICES", "parse_components", "check_option"]

#: the phases in order; model_selection runs only when several K are given (--components)
PHASES = ("data_preparation", "model_estimation", "model_selection", "standard_error_computation",
          "structural_estimation", "result_output")
DEFAULT_SEED = 20241101
#: --se-method: one registered method, every one of them, or none
SE_CHOICES = (*SE_METHODS, "all", "none")
#: --select: the rule that chooses K among several (information criteria, or the BLRT)
SELECT_CHOICES = ("bic", "aic", "sabic", "caic", "icl", "blrt")

register({
    "config.missing": {"en": "Config file {path} does not exist; check the path given to --config.",
                       "zh": "配置文件 {path} 不存在；请检查 --config 的路径。"},
    "config.toml": {"en": "Config file {path} is not valid TOML ({detail}); fix the file.",
                    "zh": "配置文件 {path} 不是有效的 TOML（{detail}）；请修正该文件。"},
    "config.where": {"en": "in config file {path}", "zh": "配置文件 {path} "},
    "config.duplicate_column": {
        "en": "Option 'columns' names column '{column}' more than once; give each column once.",
        "zh": "选项 'columns' 多次列出列 '{column}'；每列只需给出一次。"},
    "config.components": {
        "en": "Option 'components' must be one K >= 1, a range such as 1-6 or an increasing list without duplicates such as 2,3,5, got {value!r}.",
        "zh": "选项 'components' 应为一个 K >= 1、一个范围（如 1-6）或一个递增且不重复的列表（如 2,3,5），实际为 {value!r}。"},
    "config.select_blrt": {
        "en": "Option 'select' is 'blrt' but 'blrt' is 0; give --blrt B (bootstrap replicates, e.g. 100) or choose another rule with --select.",
        "zh": "选项 'select' 为 'blrt' 但 'blrt' 为 0；请用 --blrt B 给出自助法重复次数（例如 100），或用 --select 选择其他准则。"},
    "config.empty_columns": {
        "en": "Option 'columns' is empty; give column names, e.g. --columns a,b.",
        "zh": "选项 'columns' 为空；请给出列名，例如 --columns a,b。"},
})

_DATA, _EST, _SEL, _SE, _OUT, _EXEC, _PROG = ("data and model", "estimation", "class enumeration",
                                              "standard errors", "results",
                                              "execution and output", "progress tracking")
_D, _M, _C, _S, _R = ("data_preparation", "model_estimation", "model_selection",
                      "standard_error_computation", "result_output")
#: three-step estimation's options and phase (counted in fingerprints only with --structural)
_STR, _T = "three-step estimation", "structural_estimation"
#: --formats: the report's forms (report.md, report.html, LaTeX tables)
FORMAT_CHOICES = ("md", "html", "tex")

#: options that count in the fingerprints only when the input is partitioned
PARTITIONED_ONLY = ("stream", "hash_data", "sample_rows")
#: options that count in the fingerprints only with --covariates (as --weights)
COVARIATES_ONLY = ("covariates", "reference_class")
#: options that count in the fingerprints only with --structural (three-step estimation)
STRUCTURAL_ONLY = ("structural", "correction", "assignment", "distal", "distal_type",
                   "structural_se")

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
    Option("weights", str, None, "column of row weights (never a model column; rows of weight "
           "0 are dropped; default: every row weight 1)", nullable=True, group=_DATA,
           fingerprint=_D, metavar="COLUMN"),
    Option("weight_type", str, "frequency", "with --weights: frequency (a row stands for w "
           "identical rows; n = sum of weights) or sampling (survey weights: sandwich standard "
           "errors, approximate information criteria)", choices=("frequency", "sampling"),
           group=_DATA, fingerprint=_D),
    Option("covariates", list, None, "columns of covariates of class membership (never model "
           "columns): the class weights become a multinomial logit of them, estimated with the "
           "model in one step (with --structural covariates: step 3's covariates instead)",
           nullable=True, group=_DATA, fingerprint=_D, metavar="A,B,.."),
    Option("reference_class", int, 1, "with --covariates: the class (of the canonical order) "
           "whose logit coefficients are 0; the others' are log odds against it", low=1,
           group=_DATA, fingerprint=_M, metavar="K"),
    Option("stream", bool, False, "read a Parquet file chunk by chunk on every pass instead of "
           "into memory (a folder or glob of Parquet files always is): memory bounded by "
           "--chunk-size, for data larger than memory", group=_DATA, fingerprint=_D),
    Option("hash_data", bool, False, "partitioned input: fingerprint every byte of the files "
           "(default: their Parquet metadata: sizes, row counts, footers)", group=_DATA,
           fingerprint=_D),
    Option("sample_rows", int, 100_000, "partitioned input: rows of the random sample the "
           "start search runs on before the best start is refined on all rows", low=100,
           group=_DATA, fingerprint=_M),
    Option("model", str, DEFAULT_MODEL, f"{', '.join(BUILTIN_MODELS)} or path/to/file.py:ClassName",
           group=_DATA, fingerprint=_D),
    Option("components", int, 2, "number of latent classes K: one K, a range 1-6 or a list 2,3,5 "
           "(several: each K is fitted and one is selected)", low=1, group=_DATA, fingerprint=_M,
           metavar="K|A-B|A,B,.."),
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
    # class enumeration (with several K only)
    Option("select", str, "bic", "rule that chooses K: an information criterion (lowest) or "
           "blrt (the smallest K not rejected against the next)", choices=SELECT_CHOICES,
           group=_SEL, fingerprint=_C),
    Option("blrt", int, 0, "bootstrap replicates of each BLRT comparison of consecutive K "
           "(0: no BLRT)", low=0, group=_SEL, fingerprint=_C, metavar="B"),
    Option("blrt_early_stop", bool, True, "run every BLRT replicate (default: stop once the "
           "decision at --alpha is settled, replicates in index order)", group=_SEL,
           fingerprint=_C),
    Option("alpha", float, 0.05, "significance level of the BLRT rule and its early stop",
           low=0, low_open=True, high=0.5, group=_SEL, fingerprint=_C),
    Option("vlmr", bool, True, "no Vuong-Lo-Mendell-Rubin and adjusted LMR tests of "
           "consecutive K (default: computed)", group=_SEL, fingerprint=_C),
    # standard errors
    Option("se_method", str, None, f"standard-error method (default {DEFAULT_SE_METHOD}; "
           f"{default_se_method('w', 'sampling')} with --weight-type sampling)",
           choices=SE_CHOICES, nullable=True, group=_SE, fingerprint=_S),
    Option("primary_se", str, DEFAULT_SE_METHOD, "with several methods: the one in the 'se' column",
           choices=tuple(SE_METHODS), group=_SE, fingerprint=_S),
    Option("se_for", str, "selected", "with several K: standard errors for the selected K or "
           "for all", choices=("selected", "all"), group=_SE, fingerprint=_S),
    # three-step estimation (src/structural, docs/structural.md; only with --structural)
    Option("structural", str, None, "three-step estimation of a structural model with the "
           "measurement model held fixed: covariates of the class (--covariates) or distal "
           "outcomes (--distal)", choices=("covariates", "distal"), nullable=True,
           group=_STR, fingerprint=_T),
    Option("correction", str, "bch", "with --structural: the three-step correction: none "
           "(naive), bch (Bolck-Croon-Hagenaars weights) or ml (Vermunt's maximum likelihood)",
           choices=("none", "bch", "ml"), group=_STR, fingerprint=_T),
    Option("assignment", str, "modal", "with --structural: class assignment of step 2",
           choices=("modal", "soft"), group=_STR, fingerprint=_T),
    Option("distal", list, None, "with --structural distal: the distal outcome columns "
           "(never model columns)", nullable=True, group=_STR, fingerprint=_D,
           metavar="COLUMN[,..]"),
    Option("distal_type", str, "gaussian", "with --structural distal: gaussian (a mean and "
           "variance per class) or categorical (probabilities per class)",
           choices=("gaussian", "categorical"), group=_STR, fingerprint=_T),
    Option("structural_se", str, "corrected", "with --structural: standard errors of step 3: "
           "corrected (also for step 1's uncertainty, Bakk-Oberski-Vermunt; needs --se-method), "
           "bootstrap (all three steps, --n-bootstrap replicates) or step3 (sandwich of step 3 "
           "alone)", choices=STRUCTURAL_SE, group=_STR, fingerprint=_T),
    # results (what is written; change no estimate)
    Option("ci_level", float, 0.95, "confidence level of the intervals in estimates.csv",
           low=0, low_open=True, high=1, high_open=True, group=_OUT, fingerprint=_R),
    Option("id", str, None, "column carried into posteriors.csv as each row's id (default: "
           "the row's 0-based position in the input)", nullable=True, group=_OUT,
           fingerprint=_R, metavar="COLUMN"),
    Option("gof_bootstrap", int, 0, "LCA: parametric-bootstrap replicates for the p-values "
           "of G2 and X2 (0: none; offered when the table is sparse)", low=0, group=_OUT,
           fingerprint=_R, metavar="B"),
    Option("plots", bool, True, "write no plots (default: PNG figures in the results folder "
           "and the report)", group=_OUT, fingerprint=_R),
    Option("formats", list, ("md", "html"), "report forms, comma-separated: md, html, tex "
           "(LaTeX booktabs tables)", group=_OUT, fingerprint=_R, metavar="md,html,.."),
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
#: options that only matter when several K are given (left out of single-K fingerprints)
_ENUMERATION_ONLY = frozenset({o.name for o in CORE_OPTIONS if o.fingerprint == _C} | {"se_for"})


def parse_components(value: Any) -> int | list[int]:
    """``--components`` as one K (an int) or the increasing list of several K.

    Takes an integer, text (``"3"``, ``"1-6"``, ``"2,3,5"``) or a sequence of integers
    (a TOML array, a Python list or range); one K however written (``"3-3"``, ``[3]``) is
    the int, so it behaves exactly as a single K.  UsageError (one sentence) otherwise."""
    def bad() -> UsageError:
        return UsageError(t("config.components", value=value))

    ks: list[int]
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        raise bad()
    if isinstance(value, numbers.Integral):
        ks = [int(value)]
    elif isinstance(value, str):
        text = value.strip()
        try:
            if re.fullmatch(r"\d+\s*-\s*\d+", text):
                low, high = (int(x) for x in text.split("-"))
                ks = list(range(low, high + 1)) if high >= low else []
            else:
                ks = [int(x) for x in text.split(",")]
        except ValueError:
            raise bad() from None
    elif isinstance(value, (list, tuple, range)):
        if not all(isinstance(x, numbers.Integral) and not isinstance(x, bool) for x in value):
            raise bad()
        ks = [int(x) for x in value]
    else:
        raise bad()
    if not ks or ks[0] < 1 or any(b <= a for a, b in zip(ks, ks[1:])):
        raise bad()
    return ks[0] if len(ks) == 1 else ks


def check_option(name: str, value: Any, *, from_text: bool = False) -> Any:
    """``value`` checked and converted for option ``name`` (``components`` has its own
    parser; every other option :func:`~src.utils.options.check_value`)."""
    if name == "components":
        return parse_components(value)
    return check_value(OPTIONS[name], value, from_text=from_text)


class _RunOptionsMethods:
    """The behaviour of :class:`RunOptions` (its fields come from :data:`OPTIONS`)."""

    def validate(self) -> "RunOptions":
        """Check and normalise every value; raise UsageError naming the option."""
        for name in OPTIONS:
            setattr(self, name, check_option(name, getattr(self, name)))
        if self.columns is not None:
            if not self.columns:
                raise UsageError(t("config.empty_columns"))
            seen: set[str] = set()
            for col in self.columns:
                if col in seen:
                    raise UsageError(t("config.duplicate_column", column=col))
                seen.add(col)
        bad = [f for f in self.formats if f not in FORMAT_CHOICES]
        if bad or not self.formats:
            raise UsageError(t("options.choice", option="formats",
                               choices=", ".join(FORMAT_CHOICES), value=",".join(self.formats)))
        self.formats = sorted(set(self.formats), key=FORMAT_CHOICES.index)
        if self.enumerating and self.select == "blrt" and self.blrt == 0:
            raise UsageError(t("config.select_blrt"))
        if self.se_method is None:  # not given: sandwich with sampling weights, else Louis
            self.se_method = default_se_method(self.weights, self.weight_type)
        return self

    def k_list(self) -> list[int]:
        """The numbers of classes of this run, increasing (one entry for a single K)."""
        return list(self.components) if isinstance(self.components, list) else [self.components]

    @property
    def enumerating(self) -> bool:
        """True when several K are fitted and one is selected (``model_selection`` runs)."""
        return isinstance(self.components, list)

    @property
    def partitioned(self) -> bool:
        """True when the rows are read in partitions on every pass (a folder or glob of
        Parquet files, or ``--stream``) instead of into memory."""
        if self.stream:
            return True
        if not self.data or str(self.data).startswith("builtin:"):
            return False
        from .data.sources import classify_source
        return classify_source(self.data).kind in ("folder", "glob")

    @property
    def results_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path("results") / self.task_name

    def se_methods(self) -> list[str]:
        """The standard-error methods this run computes, in registry order."""
        if self.se_method is None:  # options not validated yet: the default it will get
            return [default_se_method(self.weights, self.weight_type)]
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
        flat[key_u] = check_option(key_u, value)
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
    only when several methods run, the class-enumeration options only with several K (so
    a single K's fingerprints are what they were before enumeration existed)."""
    methods = options.se_methods()
    counted = [o for o in CORE_OPTIONS if o.fingerprint is not None]
    counted += options_of(model_class) if model_class is not None else family_options()
    counted += [o for m in methods for o in SE_METHODS[m].options]
    parts: dict[str, dict[str, Any]] = {p: {} for p in PHASES}
    for opt in counted:
        if opt.name == "primary_se" and len(methods) < 2:
            continue  # it only picks which of several methods fills the 'se' column
        if opt.name in _ENUMERATION_ONLY and not options.enumerating:
            continue  # nothing is selected among one K
        if opt.name in COVARIATES_ONLY and getattr(options, "covariates", None) is None:
            continue  # runs without covariates keep the fingerprints they had before them
        if opt.name in ("weights", "weight_type") and options.weights is None:
            continue  # unweighted runs keep the fingerprints they had before weights existed
        if opt.name in PARTITIONED_ONLY and not options.partitioned:
            continue  # in-memory runs keep the fingerprints they had before partitions existed
        if opt.name in STRUCTURAL_ONLY and getattr(options, "structural", None) is None:
            continue  # runs without --structural keep the fingerprints they had before it
        value = getattr(options, opt.name, opt.default)  # a user model's own option: default
        parts[opt.fingerprint or "model_estimation"][opt.name] = value
    if options.id is not None and options.columns is None:
        parts["data_preparation"]["id"] = options.id  # it also decides the model's columns
    data = {"version": __version__, "environment": dict(environment), "data_sha256": data_sha256,
            "model_file_sha256": model_file_sha256, **parts["data_preparation"]}
    est = {**data, **parts["model_estimation"]}
    sel = {**est, **parts["model_selection"]}
    se = {**sel, **parts["standard_error_computation"]}
    if getattr(options, "structural", None) is not None and options.structural_se == RESAMPLED:
        parts["structural_estimation"]["n_bootstrap"] = options.n_bootstrap  # its replicates
    structural = {**se, **parts["structural_estimation"]}
    return {"data_preparation": data, "model_estimation": est, "model_selection": sel,
            "standard_error_computation": se, "structural_estimation": structural,
            # the files are written in the report's language (redone without asking when
            # only this phase's inputs change: src/pipeline/tracked.py)
            "result_output": {**structural, **parts["result_output"],
                              "report_language": options.lang or get_language()}}
