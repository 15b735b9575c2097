#!/usr/bin/env python
"""Look at and manage progress files.

    python scripts/manage_progress.py check [--task NAME] [--json]   # status of current progress
    python scripts/manage_progress.py list [--json]                  # every progress file
    python scripts/manage_progress.py clean [--task NAME]            # remove progress files

``--progress-dir DIR`` works with every sub-command (default ``progress``).  ``clean``
refuses a task that is running.  Exit codes: 0 done, 2 usage, 3 a task is running.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from src.progress import files as progress_files  # noqa: E402
from src.utils.errors import PipelineError  # noqa: E402
from src.utils.estimation_progress import validate_task_name  # noqa: E402
from src.utils.messages import set_language  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--progress-dir", default="progress", help="progress folder (default progress)")
    common.add_argument("--lang", help="en or zh")
    p = argparse.ArgumentParser(prog="manage_progress.py", description=__doc__.splitlines()[0],
                                parents=[common])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", parents=[common], help="status of current progress")
    c.add_argument("--task", help="one task (default: all)")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    li = sub.add_parser("list", parents=[common], help="list all progress files")
    li.add_argument("--json", action="store_true", help="machine-readable output")
    cl = sub.add_parser("clean", parents=[common], help="remove progress files")
    cl.add_argument("--task", help="only this task (default: all)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
        return 0
    except (PipelineError, ValueError) as exc:
        print(str(exc), file=sys.stderr)
        return getattr(exc, "exit_code", 2)


if __name__ == "__main__":
    sys.exit(main())
