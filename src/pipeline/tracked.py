"""The tracked pipeline: the phases wired through the progress tracker, and a whole run.

:func:`run_estimation_with_tracking` is where phases are wired (the main script's
``_run_estimation_with_tracking()`` calls it).  Adding a phase is one call there::

    new_result = resume_estimation_phase(tracker, "new_phase_name", new_phase_function, *args)

and its name in :data:`src.config.PHASES` (the tracker treats a progress file naming a
phase that is not there as damaged).

:func:`run` is a whole run with the options of ``scripts/02_run_estimation.py``: the
up-front checks, the fingerprints, the progress context, the phases, clean-up and the
closing messages.  The script and ``src.api.run`` both call it.
"""

from __future__ import annotations

from typing import Any, Callable

from ..config import PHASES, RunOptions, phase_fingerprints
from ..progress import estimation_progress, resume_estimation_phase
from ..utils.console import Reporter
from ..utils.messages import register, t
from . import phases
from .checks import check_before_run

__all__ = ["run_estimation_with_tracking", "run"]

register({
    "main.done": {"en": "Done: results in {out} (log-likelihood {ll:.6f}, {n_iter} EM iterations).",
                  "zh": "完成：结果保存在 {out}（对数似然 {ll:.6f}，EM 迭代 {n_iter} 次）。"},
    "main.cleaned_after": {"en": "Progress files of task '{task}' removed (--auto-cleanup-progress).",
                           "zh": "已删除任务 '{task}' 的进度文件（--auto-cleanup-progress）。"},
})

Phases = Callable[[Any, RunOptions, Reporter], dict[str, Any]]


def _announced(reporter: Reporter, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` that first tells the reporter the phase started (not called when skipped)."""
    def run_phase(*args: Any, **kwargs: Any) -> Any:
        reporter.phase_started(name)
        return fn(*args, **kwargs)
    return run_phase


def run_estimation_with_tracking(tracker: Any, options: RunOptions,
                                 reporter: Reporter) -> dict[str, Any]:
    """The four phases; each runs through resume_estimation_phase (skipped when done)."""
    record = resume_estimation_phase(tracker, "data_preparation",
                                     _announced(reporter, "data_preparation", phases.prepare_data),
                                     options, reporter)
    prepared = phases.materialise(record, options)
    workers = phases.needs_workers(options, tracker.is_completed("model_estimation"),
                                   tracker.is_completed("standard_error_computation"))
    with phases.run_executor(options, workers) as executor:  # workers warm up during the fit
        fit = resume_estimation_phase(tracker, "model_estimation",
                                      _announced(reporter, "model_estimation", phases.estimate_model),
                                      prepared, options, tracker, reporter, executor)
        se = resume_estimation_phase(tracker, "standard_error_computation",
                                     _announced(reporter, "standard_error_computation",
                                                phases.compute_standard_errors),
                                     prepared, fit, options, tracker, reporter, executor)
    if tracker.is_completed("result_output") and not phases.output_is_current(
            tracker.get_phase_result("result_output"), options):
        tracker.invalidate_phase("result_output")  # its files were removed or moved
    output = resume_estimation_phase(tracker, "result_output",
                                     _announced(reporter, "result_output", phases.write_results),
                                     prepared, fit, se, options,
                                     tracker.fingerprints.get("result_output"))
    return {"fit": fit, "se": se, "output": output, "prepared": prepared}


def run(options: RunOptions, reporter: Reporter | None = None, *,
        wiring: Phases = run_estimation_with_tracking) -> dict[str, Any]:
    """A whole run: checks, fingerprints, progress context, ``wiring``, closing messages.

    Returns ``{"fit", "se", "output", "prepared"}``.  Raises the pipeline's errors
    (one sentence each), KeyboardInterrupt and ``Terminated`` for the caller to map to
    exit codes.  Task files that dead runs left in ``/dev/shm`` go first (those of runs
    still going are kept)."""
    from threadpoolctl import threadpool_limits

    from ..parallel.cleanup import remove_stale_task_files
    from ..progress import files as progress_files

    remove_stale_task_files()
    reporter = reporter or Reporter()
    cls = check_before_run(options)
    fingerprints = phase_fingerprints(options, **phases.input_hashes(options), model_class=cls)
    with threadpool_limits(limits=1):  # BLAS single-threaded; parallel over units of work
        with estimation_progress(task_name=options.task_name, save_interval=options.save_interval,
                                 progress_dir=options.progress_dir,
                                 enabled=not options.no_progress_tracking,
                                 fingerprints=fingerprints, restart=options.restart,
                                 recompute_changed=options.recompute_changed,
                                 notify=reporter.message, phases=PHASES) as tracker:
            result = wiring(tracker, options, reporter)
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
    return result
