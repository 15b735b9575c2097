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
from . import enumeration, phases
from .structural import estimate_structural
from .structural import needs_workers as structural_needs_workers
from .checks import check_before_run

__all__ = ["run_estimation_with_tracking", "run"]

register({
    "main.done": {"en": "Done: results in {out} (log-likelihood {ll:.6f}, {n_iter} EM iterations).",
                  "zh": "完成：结果保存在 {out}（对数似然 {ll:.6f}，EM 迭代 {n_iter} 次）。"},
    "main.selected": {"en": "Selected K = {k} of {ks} by {rule} (table in enumeration.csv, each K in k<K>/).",
                      "zh": "按 {rule} 从 {ks} 中选定 K = {k}（表见 enumeration.csv，各 K 见 k<K>/）。"},
    "main.cleaned_after": {"en": "Progress files of task '{task}' removed (--auto-cleanup-progress).",
                           "zh": "已删除任务 '{task}' 的进度文件（--auto-cleanup-progress）。"},
})

Phases = Callable[[Any, RunOptions, Reporter], dict[str, Any]]


def _announced(reporter: Reporter, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` that tells the reporter the phase started, and when it ended, so the display
    never shows it afterwards (not called when skipped)."""
    def run_phase(*args: Any, **kwargs: Any) -> Any:
        reporter.phase_started(name)
        try:
            return fn(*args, **kwargs)
        finally:
            reporter.phase_finished(name)
    return run_phase


def run_estimation_with_tracking(tracker: Any, options: RunOptions,
                                 reporter: Reporter) -> dict[str, Any]:
    """The phases; each runs through resume_estimation_phase (skipped when done).

    ``model_selection`` runs only with several K (``--components 1-4``): one K keeps the
    four phases of a single fit.  Returns ``{"fit", "se", "output", "prepared"}`` of the
    (selected) K, plus ``"enumeration"`` (``fits``, ``selection``, ``se``) with several.

    With plots and one K the figures are made in a second process
    (:mod:`src.output.background`): started by :func:`run`, before the data are read, so
    matplotlib is imported on another core meanwhile; sent what the data give for the
    figures once they are read (drawn during the fit) and the rest as soon as the estimate
    is known (the first figure drawn while the standard errors are computed, the others by
    a fork of it once they are done: ``drawing.hurry()``); ended when the run leaves,
    whichever way.  With one K (plots or not) ``posteriors.csv`` is written by a thread of
    this process begun with the estimate, beside the standard errors."""
    from ..output import background as drawing

    several = options.enumerating
    draw_ahead = options.plots and not several
    if draw_ahead and not tracker.is_completed("result_output"):
        drawing.start()
    try:
        record = resume_estimation_phase(tracker, "data_preparation",
                                         _announced(reporter, "data_preparation",
                                                    phases.prepare_data),
                                         options, reporter)
        prepared = phases.materialise(record, options)
        if tracker.is_completed("result_output") and not phases.output_is_current(
                tracker.get_phase_result("result_output"), options):
            tracker.invalidate_phase("result_output")  # its files were removed or moved
        output_due = options.plots and not tracker.is_completed("result_output")
        if not (draw_ahead and output_due):
            drawing.stop()
        elif not drawing.start():  # (running already unless result_output was invalidated)
            draw_ahead = False
        else:   # what the data alone give is drawn while the model is fitted
            drawing.submit_data(prepared.model, prepared.sample if prepared.partitioned
                                else prepared.data)
        workers = phases.needs_workers(options, tracker.is_completed("model_estimation"),
                                       tracker.is_completed("standard_error_computation"),
                                       not several or tracker.is_completed("model_selection"),
                                       tracker.is_completed("result_output")) \
            or structural_needs_workers(options, tracker.is_completed("structural_estimation"))
        if output_due and not draw_ahead:
            from ..output.plots import preload

            preload()  # matplotlib imported in a background thread while the model is fitted
        with phases.run_executor(options, workers) as executor:  # workers warm up during the fit
            fit = resume_estimation_phase(tracker, "model_estimation",
                                          _announced(reporter, "model_estimation",
                                                     phases.estimate_model),
                                          prepared, options, tracker, reporter, executor,
                                          **_reuse(tracker, "model_estimation", several))
            if draw_ahead and output_due:  # made while the standard errors are computed
                if prepared.partitioned:   # (posteriors/ is written in the output phase)
                    drawing.submit_fit(prepared.model, prepared.sample, fit["params"],
                                       options.chunk_size)
                else:
                    drawing.submit_fit(prepared.model, prepared.data, fit["params"],
                                       options.chunk_size, row_labels=prepared.row_labels,
                                       id_column=prepared.id_column)
            elif (not several and not prepared.partitioned
                  and not tracker.is_completed("result_output")):   # posteriors.csv alone
                drawing.submit_fit(prepared.model, prepared.data, fit["params"],
                                   options.chunk_size, row_labels=prepared.row_labels,
                                   id_column=prepared.id_column, figures=False)
            selection = None
            if several:
                selection = resume_estimation_phase(tracker, "model_selection",
                                                    _announced(reporter, "model_selection",
                                                               enumeration.select_model),
                                                    prepared, fit, options, tracker, reporter,
                                                    executor, **_reuse(tracker, "model_selection"))
            se = resume_estimation_phase(tracker, "standard_error_computation",
                                         _announced(reporter, "standard_error_computation",
                                                    _se_phase),
                                         prepared, fit, selection, options, tracker, reporter,
                                         executor)
            structural = None   # three-step estimation (--structural), after the SEs
            if options.structural is not None:
                structural = resume_estimation_phase(tracker, "structural_estimation",
                                                     _announced(reporter, "structural_estimation",
                                                                estimate_structural),
                                                     prepared, fit, selection, se, options,
                                                     tracker, reporter, executor)
            drawing.hurry()   # the SEs are done: the figures may take both cores (a
            #                   goodness-of-fit bootstrap, when asked for, shares them)
            output = resume_estimation_phase(tracker, "result_output",
                                             _announced(reporter, "result_output", _output_phase),
                                             prepared, fit, selection, se, options,
                                             tracker.fingerprints.get("result_output"), tracker,
                                             reporter, executor, structural)
    finally:
        drawing.stop()
    if not several:
        return {"fit": fit, "se": se, "output": output, "prepared": prepared,
                **({"structural": structural} if structural is not None else {})}
    k = int(selection["selected"])
    return {"fit": fit["fits"][str(k)], "se": se["by_k"].get(str(k), {}), "output": output,
            "prepared": enumeration.prepared_for(prepared, options, k),
            "enumeration": {"fits": fit, "selection": selection, "se": se},
            **({"structural": structural} if structural is not None else {})}


def _reuse(tracker: Any, phase: str, wanted: bool = True) -> dict[str, Any]:
    """The keywords that let a phase of several K keep the unchanged parts of the result
    ``--recompute-changed`` dropped: its fingerprint and that stale result."""
    if not wanted:
        return {}
    stale = getattr(tracker, "stale_result", None)
    return {"fingerprint": tracker.fingerprints.get(phase),
            "stale": stale(phase) if stale is not None else None}


def _se_phase(prepared: phases.Prepared, fit: dict[str, Any], selection: dict[str, Any] | None,
              options: RunOptions, checkpoint: Any, reporter: Reporter,
              executor: Any) -> dict[str, Any]:
    """Phase ``standard_error_computation``: one K's, or with several the selected K's
    (every K's with ``--se-for all``)."""
    if selection is None:
        return phases.compute_standard_errors(prepared, fit, options, checkpoint, reporter,
                                              executor)
    return enumeration.standard_errors_by_k(prepared, fit, selection, options, checkpoint,
                                            reporter, executor)


def _output_phase(prepared: phases.Prepared, fit: dict[str, Any],
                  selection: dict[str, Any] | None, se: dict[str, Any], options: RunOptions,
                  fingerprint: dict[str, Any] | None, checkpoint: Any = None,
                  reporter: Reporter | None = None, executor: Any = None,
                  structural: dict[str, Any] | None = None) -> dict[str, Any]:
    """Phase ``result_output``: one K's files, or with several the enumeration's (with the
    three-step estimates of ``structural_estimation`` when there are some)."""
    stale = getattr(checkpoint, "stale_result", None)
    earlier = stale("result_output") if stale is not None else None
    kept = earlier[0].get("gof_state") if earlier and isinstance(earlier[0], dict) else None
    kw = {"checkpoint": checkpoint, "executor": executor, "reporter": reporter, "kept": kept,
          "structural": structural}
    if selection is None:
        return phases.write_results(prepared, fit, se, options, fingerprint, **kw)
    return phases.write_enumeration_results(prepared, fit, selection, se, options, fingerprint,
                                            **kw)


def run(options: RunOptions, reporter: Reporter | None = None, *,
        wiring: Phases = run_estimation_with_tracking) -> dict[str, Any]:
    """A whole run: checks, fingerprints, progress context, ``wiring``, closing messages.

    Returns ``{"fit", "se", "output", "prepared"}``.  Raises the pipeline's errors
    (one sentence each), KeyboardInterrupt and ``Terminated`` for the caller to map to
    exit codes.  Task files that dead runs left in ``/dev/shm`` go first (those of runs
    still going are kept).  With plots and one K the drawing process starts first
    (:func:`run_estimation_with_tracking` ends it when the results are already there)."""
    from ..output import background as drawing

    if options.plots and not options.enumerating:
        drawing.start()
    try:
        return _run(options, reporter, wiring)
    finally:
        drawing.stop()


def _run(options: RunOptions, reporter: Reporter | None, wiring: Phases) -> dict[str, Any]:
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
                                 notify=reporter.message, phases=PHASES,
                                 rederivable=("result_output",)) as tracker:
            result = wiring(tracker, options, reporter)
    reporter.close()
    if options.auto_cleanup_progress and not options.no_progress_tracking:
        progress_files.clean(options.progress_dir, options.task_name)
        reporter.message(t("main.cleaned_after", task=options.task_name))
    fit = result["fit"]
    for note in [*fit.get("warnings", []),
                 *(n for r in result["se"].values() for n in r.get("notes", []))]:
        reporter.message(note)
    if "enumeration" in result:
        sel = result["enumeration"]["selection"]
        reporter.message(t("main.selected", k=sel["selected"], rule=sel["rule"].upper(),
                           ks=", ".join(map(str, sel["ks"]))))
    reporter.message(t("main.done", out=result["output"]["output_dir"], ll=fit["loglik"],
                       n_iter=fit["n_iter"]))
    return result
