#!/usr/bin/env python
"""Look at and manage progress files.

    python scripts/manage_progress.py check [--task NAME] [--json]   # status of current progress
    python scripts/manage_progress.py list [--json]                  # every progress file
    python scripts/manage_progress.py clean [--task NAME]            # remove progress files

``--progress-dir DIR`` (default ``progress``) and ``--lang en|zh`` work before or after the
sub-command.  ``clean`` works under each task's lock, so it refuses a task that is running;
it leaves the lock files in place.  Exit codes: 0 done, 2 usage, 3 a task is running or its
files are symbolic links, 141 when the reader of the output went away (``| head``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from src.progress import files as progress_files  # noqa: E402
from src.utils.errors import PipelineError  # noqa: E402
from src.utils.exiting import EXIT_BROKEN_PIPE, exit_now  # noqa: E402
from src.utils.estimation_progress import validate_task_name  # noqa: E402
from src.utils.messages import set_language  # noqa: E402

DEFAULT_PROGRESS_DIR = "progress"


def _add_common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """The options every position accepts.  Only the top-level parser has defaults: a
    sub-parser's default would overwrite a value given before the sub-command."""
    default = DEFAULT_PROGRESS_DIR if top else argparse.SUPPRESS
    parser.add_argument("--progress-dir", default=default,
                        help=f"progress folder (default {DEFAULT_PROGRESS_DIR})")
    parser.add_argument("--lang", default=None if top else argparse.SUPPRESS, help="en or zh")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="manage_progress.py", description=__doc__.splitlines()[0])
    _add_common(p, top=True)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="status of current progress")
    c.add_argument("--task", help="one task (default: all)")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    li = sub.add_parser("list", help="list all progress files")
    li.add_argument("--json", action="store_true", help="machine-readable output")
    cl = sub.add_parser("clean", help="remove progress files (not the lock files)")
    cl.add_argument("--task", help="only this task (default: all)")
    for parser in (c, li, cl):
        _add_common(parser, top=False)
    return p


def _run(args: argparse.Namespace) -> int:
    try:
        set_language(args.lang)
        task = getattr(args, "task", None)
        if task is not None:
            validate_task_name(task)
        if args.command == "check":
            print(progress_files.render_check(args.progress_dir, task, as_json=args.json))
        elif args.command == "list":
            print(progress_files.render_list(args.progress_dir, as_json=args.json))
        else:
            print(progress_files.clean(args.progress_dir, task))
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return 0
    except (PipelineError, ValueError) as exc:
        print(str(exc), file=sys.stderr)
        return getattr(exc, "exit_code", 2)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except BrokenPipeError:
        # The reader went away (`list | head`): stop quietly.  Point stdout at devnull so
        # the interpreter's final flush does not fail again (Python's documented recipe).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    exit_now(main())   # without the interpreter's teardown of every module (0.2-0.3 s)
