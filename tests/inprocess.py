"""Calling the main script's ``main(argv)`` inside the test process (fast: no interpreter
start-up, no re-import of numpy/scipy), with its output captured and the message
language put back afterwards."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
from dataclasses import dataclass
from pathlib import Path

from src.utils import messages
from tests.helpers import SCRIPT

_MODULE = None


def script_module():
    """``scripts/02_run_estimation.py`` imported as a module (once)."""
    global _MODULE
    if _MODULE is None:
        spec = importlib.util.spec_from_file_location("run_estimation_script", SCRIPT)
        _MODULE = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(_MODULE)
    return _MODULE


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def run_main(cwd: Path, *argv: str) -> Result:
    """``main(argv)`` in ``cwd``; returns its exit code and what it printed."""
    main = script_module().main
    out, err = io.StringIO(), io.StringIO()
    before, lang = Path.cwd(), list(messages._LANG)
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(argv))
    finally:
        os.chdir(before)
        messages._LANG[:] = lang
    return Result(code, out.getvalue(), err.getvalue())
