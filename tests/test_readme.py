"""The README's examples run as written, one after another, from the repository's folder.

The script examples run in-process in a folder that links the repository's ``src``,
``tests`` and ``examples`` (so the relative paths are the README's), with a few flags
appended that make them fast (fewer starts, bootstrap, BLRT and goodness-of-fit replicates, one
process); the Python example runs as written.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex

from tests.helpers import ROOT
from tests.inprocess import run_main

README = ROOT / "README.md"
FASTER = ("--n-starts", "2", "--n-bootstrap", "4", "--blrt", "4", "--gof-bootstrap", "4",
          "--workers", "1", "--lang", "en")


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def script_examples() -> list[list[str]]:
    """Every ``scripts/02_run_estimation.py`` command of the README's bash blocks but the
    quick start, as argument lists (continuation lines joined, comments dropped)."""
    out = []
    for block in _blocks("bash"):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            words = shlex.split(line, comments=True)
            if "scripts/02_run_estimation.py" in words and "&&" not in words:
                out.append(words[words.index("scripts/02_run_estimation.py") + 1:])
    return out


def _workdir(tmp_path):
    for name in ("src", "tests", "examples"):
        (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


def test_each_example_has_its_own_task_name():
    """Every example names a task, and no two share one (a rerun would be refused)."""
    examples = script_examples()
    assert len(examples) >= 4
    names = [args[args.index("--task-name") + 1] for args in examples]
    assert len(set(names)) == len(names)


def test_script_examples_run_one_after_another(tmp_path):
    """The script examples all finish (exit 0) when run in order in one folder."""
    work = _workdir(tmp_path)
    for args in script_examples():
        res = run_main(work, *args, *FASTER)
        assert res.returncode == 0, (args, res.stderr)
        task = args[args.index("--task-name") + 1]
        assert (work / "results" / task / "estimates.csv").is_file()


def test_python_example_runs(tmp_path, monkeypatch):
    """The README's Python example runs as written."""
    (block,) = _blocks("python")
    monkeypatch.chdir(_workdir(tmp_path))
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(block, "README.md", "exec"), {})
    assert (tmp_path / "results" / "from_python" / "estimates.csv").is_file()
