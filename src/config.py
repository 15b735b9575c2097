"""Every option of a run: its default, its type, and where it comes from.

Defaults < TOML config file (``--config``, same names with underscores) < command-line
flags.  :func:`phase_fingerprints` says which options each phase's result depends on;
workers, scheduler, save interval, folders, language and debug are deliberately absent.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from . import __version__
from .utils.errors import UsageError
from .utils.messages import register, t

__all__ = ["RunOptions", "load_config", "phase_fingerprints", "PHASES", "SE_CHOICES"]

PHASES = ("data_preparation", "model_estimation", "standard_error_computation", "result_output")
SE_CHOICES = ("louis", "bootstrap", "numerical", "all", "none")
DEFAULT_SEED = 20241101

register({
    "config.missing": {"en": "Config file {path} does not exist; check the path given to --config.",
                       "zh": "配置文件 {path} 不存在；请检查 --config 的路径。"},
    "config.toml": {"en": "Config file {path} is not valid TOML ({detail}); fix the file.",
                    "zh": "配置文件 {path} 不是有效的 TOML（{detail}）；请修正该文件。"},
    "config.unknown": {"en": "Config file {path} has an unknown key '{option}'; valid keys are the option names with underscores (e.g. n_starts).",
                       "zh": "配置文件 {path} 含有未知的键 '{option}'；有效的键为下划线形式的选项名（如 n_starts）。"},
    "config.type": {"en": "Option '{option}' must be {expected}, got {value!r}.",
                    "zh": "选项 '{option}' 应为{expected}，实际为 {value!r}。"},
    "config.choice": {"en": "Option '{option}' must be one of {choices}, got {value!r}.",
                      "zh": "选项 '{option}' 必须是 {choices} 之一，实际为 {value!r}。"},
    "config.range": {"en": "Option '{option}' must be {rule}, got {value!r}.",
                     "zh": "选项 '{option}' 必须{rule}，实际为 {value!r}。"},
})


@dataclass
class RunOptions:
    """Options of ``scripts/02_run_estimation.py``; field names are the TOML keys."""

    # data
    data: str | None = None              # CSV/Parquet path; None: built-in Old Faithful
    columns: list[str] | None = None     # None: every column
    drop_missing: bool = False
    # model
    model: str = "gmm"
    components: int = 2
    covariance: str = "full"
    reg_covar: float = 1e-6
    target: str | None = None
    intercept: bool = True
    sigma_floor: float | None = None     # mixreg: None = 1e-4 x the target's SD
    # estimation
    n_starts: int = 10
    tol: float = 1e-8
    max_iter: int = 1000
    seed: int = DEFAULT_SEED
    accelerate: str = "squarem"
    chunk_size: int = 4096
    # standard errors
    se_method: str = "louis"
    primary_se: str = "louis"
    n_bootstrap: int = 200
    bootstrap: str = "nonparametric"
    # execution (not in fingerprints)
    workers: int = 1
    scheduler: str | None = None
    # progress and output (not in fingerprints)
    task_name: str = "main_estimation"
    progress_dir: str = "progress"
    save_interval: float = 10.0
    output_dir: str | None = None
    no_progress_tracking: bool = False
    auto_cleanup_progress: bool = False
    restart: bool = False
    recompute_changed: bool = False
    lang: str | None = None
    debug: bool = False

    def validate(self) -> "RunOptions":
        """Check types, choices and ranges; raise UsageError naming the option."""
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), f.type)
        _choice("covariance", self.covariance, ("full", "diag", "spherical"))
        _choice("se_method", self.se_method, SE_CHOICES)
        _choice("primary_se", self.primary_se, ("louis", "bootstrap", "numerical"))
        _choice("bootstrap", self.bootstrap, ("nonparametric", "parametric"))
        _choice("accelerate", self.accelerate, ("none", "squarem"))
        if self.lang is not None:
            _choice("lang", self.lang, ("en", "zh"))
        _range("components", self.components, self.components >= 1, ">= 1")
        _range("n_starts", self.n_starts, self.n_starts >= 1, ">= 1")
        _range("max_iter", self.max_iter, self.max_iter >= 1, ">= 1")
        _range("n_bootstrap", self.n_bootstrap, self.n_bootstrap >= 2, ">= 2")
        _range("chunk_size", self.chunk_size, self.chunk_size >= 1, ">= 1")
        _range("workers", self.workers, self.workers >= 1, ">= 1")
        _range("tol", self.tol, self.tol > 0, "> 0")
        _range("reg_covar", self.reg_covar, self.reg_covar >= 0, ">= 0")
        _range("save_interval", self.save_interval, self.save_interval >= 0, ">= 0")
        _range("seed", self.seed, 0 <= self.seed < 2**63, "between 0 and 2**63-1")
        return self

    @property
    def results_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path("results") / self.task_name

    def model_options(self) -> dict[str, Any]:
        """Options handed to the model class (only those it uses change its numbers)."""
        opts: dict[str, Any] = {"drop_missing": self.drop_missing}
        if self.model == "gmm":
            opts.update(covariance=self.covariance, reg_covar=self.reg_covar)
        elif self.model == "mixreg":
            opts.update(target=self.target, intercept=self.intercept)
            if self.sigma_floor is not None:
                opts["sigma_floor"] = self.sigma_floor
        elif self.model != "lca":  # a user model: give it everything it might read
            opts.update(covariance=self.covariance, reg_covar=self.reg_covar,
                        target=self.target, intercept=self.intercept)
        return opts


def _check_type(key: str, value: Any, annotation: str) -> None:
    ann = str(annotation)
    if value is None and "None" in ann:
        return
    if ann.startswith("bool"):
        ok, expected = isinstance(value, bool), "true or false"
    elif ann.startswith("int"):
        ok, expected = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif ann.startswith("float"):
        ok, expected = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif ann.startswith("list"):
        ok = isinstance(value, list) and all(isinstance(v, str) and v for v in value)
        expected = "a list of column names"
    elif ann.startswith("str"):
        ok, expected = isinstance(value, str), "a string"
    else:
        return
    if not ok:
        raise UsageError(t("config.type", option=key, expected=expected, value=value))


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(t("config.choice", option=key, choices=", ".join(choices), value=value))


def _range(key: str, value: Any, ok: bool, rule: str) -> None:
    if not ok:
        raise UsageError(t("config.range", option=key, rule=rule, value=value))


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a TOML config; every key must be an option name."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(t("config.missing", path=p))
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(t("config.toml", path=p, detail=exc)) from None
    names = {f.name for f in dataclasses.fields(RunOptions)}
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        key_u = key.replace("-", "_")
        if key_u not in names:
            raise UsageError(t("config.unknown", path=p, option=key))
        if key_u == "columns" and isinstance(value, str):
            value = [c.strip() for c in value.split(",") if c.strip()]
        if isinstance(value, int) and not isinstance(value, bool) and key_u in ("tol", "reg_covar", "save_interval"):
            value = float(value)
        flat[key_u] = value
    return flat


def build_options(config: Mapping[str, Any], flags: Mapping[str, Any]) -> RunOptions:
    """Defaults, then the config file, then the flags that were given (not None)."""
    merged = dict(config)
    merged.update({k: v for k, v in flags.items() if v is not None})
    return RunOptions(**merged).validate()


def phase_fingerprints(options: RunOptions, *, data_sha256: str, model_file_sha256: str | None,
                       environment: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """What each phase's result depends on; each phase includes the phases before it."""
    base = {"version": __version__, "environment": dict(environment)}
    data = {**base, "data_sha256": data_sha256, "columns": options.columns,
            "model": options.model, "model_file_sha256": model_file_sha256,
            "drop_missing": options.drop_missing, "target": options.target,
            "intercept": options.intercept, "sigma_floor": options.sigma_floor}
    est = {**data, "components": options.components, "covariance": options.covariance,
           "reg_covar": options.reg_covar, "tol": options.tol, "max_iter": options.max_iter,
           "n_starts": options.n_starts, "seed": options.seed,
           "accelerate": options.accelerate, "chunk_size": options.chunk_size}
    se = {**est, "se_method": options.se_method}
    if options.se_method == "all":
        se["primary_se"] = options.primary_se
    if options.se_method in ("bootstrap", "all"):
        se.update(n_bootstrap=options.n_bootstrap, bootstrap=options.bootstrap)
    return {"data_preparation": data, "model_estimation": est,
            "standard_error_computation": se, "result_output": dict(se)}
