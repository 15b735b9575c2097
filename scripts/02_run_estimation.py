#!/usr/bin/env python
"""Run the estimation pipeline with progress tracking and automatic resume.

    python scripts/02_run_estimation.py                  # built-in data, resumes if interrupted
    python scripts/02_run_estimation.py --no-progress-tracking
    python scripts/02_run_estimation.py --check-progress | --clean-progress

Thin wiring: the flags come from the option table (``src/pipeline/cli.py``), the run from
``src/pipeline/`` (the Python API ``src.api`` runs the same code).  Phases are wired in
``_run_estimation_with_tracking`` (data_preparation, model_estimation, model_selection
(only with several --components), standard_error_computation, result_output).  Exit codes: 0 done; 2 bad input or usage;
3 progress that cannot be resumed; 130/143/129 interrupted (SIGINT/SIGTERM/SIGHUP); 141
the reader of the output went away (``--check-progress | head -1``), quietly.
"""

from __future__ import annotations

import gc

# No garbage collection while the modules load: their ~1e5 objects live as long as the
# process, yet three full collections went through them while numpy, pandas and SciPy
# were imported (0.1-0.15 s of a 1.5 s run); frozen below once loaded, so later full
# collections skip them too.
gc.disable()

import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, ROOT)

from src.utils.argv import last_value  # noqa: E402  (light: no numpy)
from src.utils.messages import register, set_language, t  # noqa: E402

register({
    "main.interrupted_starting": {"en": "Interrupted by SIGINT while starting; nothing was done.",
                                  "zh": "启动时被 SIGINT 中断；尚未执行任何操作。"},
})


def _interrupted_while_starting(signum, frame) -> None:
    """SIGINT while Python imports numpy/scipy: one sentence and exit 130, no traceback."""
    try:
        set_language(last_value(sys.argv[1:], "--lang", ("en", "zh")))
        text = t("main.interrupted_starting")
    except Exception:
        text = "Interrupted by SIGINT while starting; nothing was done."
    os.write(2, (text + "\n").encode("utf-8", "replace"))
    os._exit(130)


if __name__ == "__main__":  # before the heavy imports below
    signal.signal(signal.SIGINT, _interrupted_while_starting)
    # the drawing process starts on the second core while this one imports (the run adopts
    # it, or ends it when it draws nothing there: src/output/launch.py)
    from src.output.launch import start_early

    start_early(sys.argv[1:])

import logging  # noqa: E402
from typing import Any  # noqa: E402

from src.pipeline import cli, run_estimation_with_tracking  # noqa: E402
from src.pipeline import run as run_pipeline  # noqa: E402
from src.pipeline.checks import check_folder  # noqa: E402
from src.progress import files as progress_files  # noqa: E402
from src.utils.console import Reporter  # noqa: E402
from src.utils.errors import PipelineError  # noqa: E402
from src.utils.exiting import EXIT_BROKEN_PIPE, exit_now  # noqa: E402
from src.utils.estimation_progress import Terminated, validate_task_name  # noqa: E402

gc.freeze()   # what the imports made: never collected again (see the top of the file)
gc.enable()

register({
    "main.interrupted": {"en": "Interrupted by {sig}; progress saved, rerun the same command to resume.",
                         "zh": "被 {sig} 中断；进度已保存，重新运行同一命令即可继续。"},
    "main.interrupted_untracked": {"en": "Interrupted by {sig}; nothing was saved (--no-progress-tracking).",
                                   "zh": "被 {sig} 中断；未保存任何进度（--no-progress-tracking）。"},
    "main.unexpected": {"en": "Unexpected error: {err}; rerun with --debug to see the traceback.",
                        "zh": "意外错误：{err}；使用 --debug 重新运行以查看详细信息。"},
})


def _run_estimation_with_tracking(tracker, options, reporter: Reporter) -> dict[str, Any]:
    """The phases of a run, each through resume_estimation_phase (skipped when done).

    They are wired in ``src/pipeline/tracked.py`` (shared with the Python API); add a
    phase there with one call:
    ``resume_estimation_phase(tracker, "new_phase_name", new_phase_function, *args)``.
    """
    return run_estimation_with_tracking(tracker, options, reporter)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:  # from here on a SIGINT is a KeyboardInterrupt, answered below in one sentence
        signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:  # not the main thread
        pass
    debug = "--debug" in argv
    reporter: Reporter | None = None
    tracked = "--no-progress-tracking" not in argv
    try:
        try:
            args, options = cli.parse(argv)
        except SystemExit as exc:  # --help, --version
            return int(exc.code or 0)
        debug, tracked = options.debug, not options.no_progress_tracking
        set_language(options.lang)
        logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                            format="%(levelname)s %(name)s: %(message)s")
        validate_task_name(options.task_name)
        if args.check_progress or args.clean_progress:
            check_folder("--progress-dir", options.progress_dir)
            print(progress_files.render_check(options.progress_dir, args.task_name)
                  if args.check_progress else progress_files.clean(options.progress_dir, None))
            sys.stdout.flush()  # a closed pipe is found here, not at the interpreter's exit
            return 0
        reporter = Reporter()
        run_pipeline(options, reporter, wiring=_run_estimation_with_tracking)
        return 0
    except PipelineError as exc:
        _close(reporter)
        if debug:
            raise
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        _close(reporter)
        print(t("main.interrupted" if tracked else "main.interrupted_untracked", sig="SIGINT"),
              file=sys.stderr)
        return 130
    except Terminated as exc:  # SIGTERM (143) or SIGHUP (129)
        _close(reporter)
        print(t("main.interrupted" if tracked else "main.interrupted_untracked",
                sig=getattr(exc, "signame", "SIGTERM")), file=sys.stderr)
        return int(getattr(exc, "exit_code", 143))
    except BrokenPipeError:
        # The reader went away (`--check-progress | head -1`): stop quietly, as
        # manage_progress.py does.  stdout goes to devnull so that no later write or the
        # interpreter's final flush fails again (Python's documented recipe).
        _silence_stdout()
        _close(reporter)
        return EXIT_BROKEN_PIPE
    except Exception as exc:  # last resort: one sentence, never a traceback without --debug
        _close(reporter)
        if debug:
            raise
        print(t("main.unexpected", err=f"{type(exc).__name__}: {exc}"), file=sys.stderr)
        return 1


def _close(reporter: Reporter | None) -> None:
    if reporter is not None:
        reporter.close()


def _silence_stdout() -> None:
    """Point file descriptor 1 at devnull (stdout that is not a real file is left alone)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


if __name__ == "__main__":
    exit_now(main())   # without the interpreter's teardown of every module (0.2-0.3 s)
