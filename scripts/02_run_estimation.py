#!/usr/bin/env python
"""Run the estimation pipeline with progress tracking and automatic resume.

    python scripts/02_run_estimation.py                  # built-in data, resumes if interrupted
    python scripts/02_run_estimation.py --no-progress-tracking
    python scripts/02_run_estimation.py --check-progress | --clean-progress

Phases (wired in ``_run_estimation_with_tracking``): data_preparation, model_estimation,
standard_error_computation, result_output.  Exit codes: 0 done; 2 bad input or usage;
3 progress that cannot be resumed; 130/143 interrupted (SIGINT/SIGTERM) after saving.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from src import phases  # noqa: E402
from src.config import build_options, load_config, phase_fingerprints  # noqa: E402
from src.progress import files as progress_files  # noqa: E402
from src.utils.console import Reporter  # noqa: E402
from src.utils.errors import PipelineError, UsageError  # noqa: E402
from src.utils.estimation_progress import (Terminated, estimation_progress,  # noqa: E402
                                           resume_estimation_phase, validate_task_name)
from src.utils.messages import register, set_language, t  # noqa: E402

register({
    "main.done": {"en": "Done: results in {out} (log-likelihood {ll:.6f}, {n_iter} EM iterations).",
                  "zh": "完成：结果保存在 {out}（对数似然 {ll:.6f}，EM 迭代 {n_iter} 次）。"},
    "main.interrupted": {"en": "Interrupted by {sig}; progress saved, rerun the same command to resume.",
                         "zh": "被 {sig} 中断；进度已保存，重新运行同一命令即可继续。"},
    "main.unexpected": {"en": "Unexpected error: {err}; rerun with --debug to see the traceback.",
                        "zh": "意外错误：{err}；使用 --debug 重新运行以查看详细信息。"},
    "main.not_a_folder": {"en": "{flag} {path} cannot be a folder because {blocker} is a file; choose another path.",
                          "zh": "{flag} {path} 无法作为文件夹，因为 {blocker} 是一个文件；请选择其他路径。"},
    "main.cleaned_after": {"en": "Progress files of task '{task}' removed (--auto-cleanup-progress).",
                           "zh": "已删除任务 '{task}' 的进度文件（--auto-cleanup-progress）。"},
})


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="02_run_estimation.py",
        description="Fit a latent-variable model by EM, compute standard errors, write results; "
                    "progress is saved so an interrupted run resumes where it stopped.")
    g = p.add_argument_group("progress tracking")
    g.add_argument("--no-progress-tracking", action="store_true", default=None,
                   help="traditional mode: write no progress files at all")
    g.add_argument("--auto-cleanup-progress", action="store_true", default=None,
                   help="remove the task's progress files once the run completes")
    g.add_argument("--check-progress", action="store_true", help="print the progress status and exit")
    g.add_argument("--clean-progress", action="store_true", help="remove all progress files and exit")
    g.add_argument("--task-name", help="task name (default main_estimation)")
    g.add_argument("--progress-dir", help="progress folder (default progress)")
    g.add_argument("--save-interval", type=float, help="seconds between checkpoint writes (default 10)")
    g.add_argument("--restart", action="store_true", default=None, help="discard earlier progress and start over")
    g.add_argument("--recompute-changed", action="store_true", default=None,
                   help="keep the phases whose inputs are unchanged and recompute the rest")
    d = p.add_argument_group("data and model")
    d.add_argument("--config", help="TOML file with any option below (underscores for dashes)")
    d.add_argument("--data", help="CSV or Parquet file (default: built-in Old Faithful data)")
    d.add_argument("--columns", help="comma-separated columns to use (default: all)")
    d.add_argument("--drop-missing", action="store_true", default=None, help="drop rows with a missing value")
    d.add_argument("--model", help="gmm, lca, mixreg or path/to/file.py:ClassName (default gmm)")
    d.add_argument("--components", type=int, help="number of latent classes K (default 2)")
    d.add_argument("--covariance", help="gmm covariance: full, diag or spherical (default full)")
    d.add_argument("--reg-covar", type=float, help="added to covariance diagonals (default 1e-6)")
    d.add_argument("--target", help="mixreg: the response column")
    d.add_argument("--no-intercept", dest="intercept", action="store_false", default=None,
                   help="mixreg: no intercept")
    d.add_argument("--sigma-floor", type=float, help="mixreg: smallest error SD (default 1e-4 x SD of target)")
    e = p.add_argument_group("estimation")
    e.add_argument("--n-starts", type=int, help="random starts (default 10)")
    e.add_argument("--tol", type=float, help="relative log-likelihood change to stop (default 1e-8)")
    e.add_argument("--max-iter", type=int, help="EM iterations per start (default 1000)")
    e.add_argument("--seed", type=int, help="seed of every random stream (default 20241101)")
    e.add_argument("--accelerate", help="none or squarem (default squarem)")
    e.add_argument("--chunk-size", type=int, help="rows per chunk (default 4096)")
    s = p.add_argument_group("standard errors")
    s.add_argument("--se-method", help="louis, bootstrap, numerical, all or none (default louis)")
    s.add_argument("--primary-se", help="with --se-method all: the method in the 'se' column (default louis)")
    s.add_argument("--n-bootstrap", type=int, help="bootstrap replicates (default 200)")
    s.add_argument("--bootstrap", help="nonparametric or parametric (default nonparametric)")
    x = p.add_argument_group("execution and output")
    x.add_argument("--workers", type=int, help="local worker processes (default 1)")
    x.add_argument("--scheduler", help="address of an existing Dask scheduler")
    x.add_argument("--output-dir", help="results folder (default results/TASK_NAME)")
    x.add_argument("--lang", help="en or zh (default: zh when LANG starts with zh)")
    x.add_argument("--debug", action="store_true", default=None, help="show tracebacks and debug logs")
    return p


def _phase(reporter: Reporter, name: str, fn):
    def run(*args: Any, **kwargs: Any) -> Any:
        reporter.phase_started(name)
        return fn(*args, **kwargs)
    return run


def _run_estimation_with_tracking(tracker, options, reporter: Reporter) -> dict[str, Any]:
    """The four phases; each runs through resume_estimation_phase (skipped when done)."""
    record = resume_estimation_phase(tracker, "data_preparation",
                                     _phase(reporter, "data_preparation", phases.prepare_data), options)
    prepared = phases.materialise(record, options)
    needed = not tracker.is_completed("model_estimation") or (
        "bootstrap" in phases.se_methods(options)
        and not tracker.is_completed("standard_error_computation"))
    with phases.run_executor(options, needed) as executor:  # workers warm up during the fit
        fit = resume_estimation_phase(tracker, "model_estimation",
                                      _phase(reporter, "model_estimation", phases.estimate_model),
                                      prepared, options, tracker, reporter, executor)
        se = resume_estimation_phase(tracker, "standard_error_computation",
                                     _phase(reporter, "standard_error_computation",
                                            phases.compute_standard_errors),
                                     prepared, fit, options, tracker, reporter, executor)
    if tracker.is_completed("result_output") and not phases.output_is_current(
            tracker.get_phase_result("result_output"), options):
        tracker.invalidate_phase("result_output")  # its files were removed or moved
    output = resume_estimation_phase(tracker, "result_output",
                                     _phase(reporter, "result_output", phases.write_results),
                                     prepared, fit, se, options,
                                     tracker.fingerprints.get("result_output"))
    return {"fit": fit, "se": se, "output": output}


def _check_folder(flag: str, path: Path) -> None:
    """UsageError unless ``path`` is, or can be made, a folder (no file in the way)."""
    blocker = Path(path)
    while not blocker.exists() and blocker != blocker.parent:
        blocker = blocker.parent
    if blocker.exists() and not blocker.is_dir():
        raise UsageError(t("main.not_a_folder", flag=flag, path=path, blocker=blocker))


def _options_from_args(args: argparse.Namespace):
    config = load_config(args.config) if args.config else {}
    flags = {k: v for k, v in vars(args).items()
             if k not in ("config", "check_progress", "clean_progress")}
    if flags.get("columns") is not None:
        flags["columns"] = [c.strip() for c in flags["columns"].split(",") if c.strip()]
        if not flags["columns"]:
            raise UsageError("--columns is empty; give comma-separated column names, e.g. --columns a,b")
    return build_options(config, flags)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    debug = bool(args.debug)
    try:
        set_language(args.lang)
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    reporter = Reporter()
    try:
        options = _options_from_args(args)
        set_language(options.lang)
        validate_task_name(options.task_name)
        if not options.no_progress_tracking:
            _check_folder("--progress-dir", Path(options.progress_dir))
        if args.check_progress:
            print(progress_files.render_check(options.progress_dir, args.task_name))
            return 0
        if args.clean_progress:
            print(progress_files.clean(options.progress_dir, None))
            return 0
        _check_folder("--output-dir", options.results_dir)
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=1)  # thread policy: BLAS single-threaded, parallel over units
        fingerprints = phase_fingerprints(options, **phases.input_hashes(options))
        with estimation_progress(task_name=options.task_name, save_interval=options.save_interval,
                                 progress_dir=options.progress_dir,
                                 enabled=not options.no_progress_tracking,
                                 fingerprints=fingerprints, restart=options.restart,
                                 recompute_changed=options.recompute_changed,
                                 notify=reporter.message) as tracker:
            result = _run_estimation_with_tracking(tracker, options, reporter)
        reporter.close()
        if options.auto_cleanup_progress and not options.no_progress_tracking:
            progress_files.clean(options.progress_dir, options.task_name)
            reporter.message(t("main.cleaned_after", task=options.task_name))
        fit = result["fit"]
        for note in [*fit.get("warnings", []),
                     *(n for r in result["se"].values() for n in r.get("notes", []))]:
            reporter.message(note)
        reporter.message(t("main.done", out=result["output"]["output_dir"], ll=fit["loglik"],
                           n_iter=fit["n_iter"]))
        return 0
    except PipelineError as exc:
        reporter.close()
        if debug:
            raise
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        reporter.close()
        print(t("main.interrupted", sig="SIGINT"), file=sys.stderr)
        return 130
    except Terminated:
        reporter.close()
        print(t("main.interrupted", sig="SIGTERM"), file=sys.stderr)
        return 143
    except Exception as exc:  # last resort: one sentence, never a traceback without --debug
        reporter.close()
        if debug:
            raise
        print(t("main.unexpected", err=f"{type(exc).__name__}: {exc}"), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
