"""The main script's command line and the checks made before any work.

Unknown or abbreviated flags, missing values, ``--version``; a user model file without the
class asked for; an output folder that cannot be written (and the check leaving no folder
behind); a missing data file with saved progress; a column named twice; ``--sep`` reaching
the loader and the loader's notes; stale task files removed as a run starts; a closed output
pipe (exit 141); SIGINT while Python is still importing.  Each bad input is exit 2 (130 for
SIGINT) and one sentence.  Most run ``main(argv)`` in-process; start-up needs a real process.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from src import __version__
from tests.helpers import (FAST, ROOT, SCRIPT, assert_one_sentence, progress_path, script_env,
                           wait_for)
from tests.inprocess import run_main

FAITHFUL = ROOT / "src" / "data" / "builtin" / "faithful.csv"
QUICK = FAST + ("--se-method", "none", "--lang", "en")


@pytest.mark.parametrize("argv,sentence", [
    (("--n-start", "2"), "Unknown option --n-start; did you mean --n-starts?"),
    (("--component", "3"), "Unknown option --component; did you mean --components?"),
    (("--covarience=diag",), "Unknown option --covarience; did you mean --covariance?"),
    (("--n-starts",), "Option --n-starts needs a value, e.g. --n-starts VALUE."),
    (("--debug=yes",), "Option --debug takes no value."),
    (("--n-starts", "two"), "Option 'n_starts' must be an integer, got 'two'."),
    (("--se-method", "lois"), "Option 'se_method' must be one of louis, numerical, bootstrap, sandwich, "
                              "all, none, got 'lois'."),
    (("stray",), "Unexpected argument 'stray'"),
])
def test_bad_flag_is_one_sentence_with_the_closest_flag(tmp_path, argv, sentence):
    """A misspelt or abbreviated flag, a missing or bad value: exit 2 and one sentence."""
    res = run_main(tmp_path, "--lang", "en", *argv)
    assert res.returncode == 2
    assert_one_sentence(res.stderr)
    assert sentence in res.stderr
    assert res.stdout == "" and list(tmp_path.iterdir()) == []


def test_bad_flag_in_chinese(tmp_path):
    """With --lang zh the closest-flag sentence is in Chinese."""
    res = run_main(tmp_path, "--n-start", "2", "--lang", "zh")
    assert res.returncode == 2
    assert_one_sentence(res.stderr)
    assert "未知选项 --n-start；您是想用 --n-starts 吗？" in res.stderr


def test_version(tmp_path):
    """--version prints the program and the package version and exits 0."""
    res = run_main(tmp_path, "--version")
    assert res.returncode == 0 and res.stdout.strip() == f"02_run_estimation.py {__version__}"


def test_model_file_without_the_class_lists_the_subclasses(tmp_path):
    """file.py:Nope names the missing class and the MixtureModel subclasses in the file."""
    (tmp_path / "m.py").write_text(
        "from src.models.base import MixtureModel\n"
        "class First(MixtureModel):\n    pass\n"
        "class Second(First):\n    pass\n"
        "class Plain:\n    pass\n")
    res = run_main(tmp_path, *QUICK, "--model", "m.py:Nope")
    assert res.returncode == 2
    assert_one_sentence(res.stderr)
    assert "There is no class 'Nope' in m.py" in res.stderr
    assert "First, Second" in res.stderr and "Plain" not in res.stderr
    res = run_main(tmp_path, *QUICK, "--model", "m.py:Plain")  # exists, wrong base class
    assert res.returncode == 2 and "'Plain' in m.py is not a subclass" in res.stderr
    assert not (tmp_path / "progress").exists()


def test_unwritable_output_dir_is_refused_before_any_work(tmp_path):
    """An --output-dir that cannot be created is exit 2 before the tracker starts."""
    res = run_main(tmp_path, *QUICK, "--output-dir", "/proc/em-pipeline-test/out")
    assert res.returncode == 2
    assert_one_sentence(res.stderr)
    assert "--output-dir /proc/em-pipeline-test/out cannot be written" in res.stderr
    assert "started" not in res.stdout
    assert not progress_path(tmp_path).exists()


def test_missing_data_file_is_exit_2_even_with_saved_progress(tmp_path):
    """A data file that is gone is exit 2 naming it, not exit 3 'inputs changed'."""
    shutil.copy(FAITHFUL, tmp_path / "data.csv")
    assert run_main(tmp_path, *QUICK, "--n-starts", "1", "--data", "data.csv").returncode == 0
    (tmp_path / "data.csv").unlink()
    before = progress_path(tmp_path).read_bytes()
    res = run_main(tmp_path, *QUICK, "--n-starts", "1", "--data", "data.csv")
    assert res.returncode == 2
    assert_one_sentence(res.stderr)
    assert "data.csv does not exist" in res.stderr
    assert progress_path(tmp_path).read_bytes() == before


def test_column_named_twice_is_one_sentence(tmp_path):
    """--columns a,a is exit 2 naming the column (it was an AttributeError, exit 1)."""
    res = run_main(tmp_path, *QUICK, "--columns", "eruptions,eruptions")
    assert res.returncode == 2
    assert_one_sentence(res.stderr)
    assert "'eruptions'" in res.stderr and "once" in res.stderr


def test_sep_reaches_the_loader(tmp_path):
    """--sep is the loader's separator: a comma file read with --sep semicolon is one column."""
    shutil.copy(FAITHFUL, tmp_path / "data.csv")
    ok = run_main(tmp_path, *QUICK, "--no-progress-tracking", "--data", "data.csv",
                  "--sep", "comma")
    assert ok.returncode == 0, ok.stderr
    res = run_main(tmp_path, *QUICK, "--no-progress-tracking", "--data", "data.csv",
                   "--sep", "semicolon", "--output-dir", "other")
    assert res.returncode == 2
    assert_one_sentence(res.stderr)
    assert "eruptions,waiting" in res.stderr


_SLOW_IMPORT = """
import importlib.abc, os, sys, time

class _Slow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "scipy":
            open(os.environ["EM_TEST_MARKER"], "w").close()
            time.sleep(30)
        return None

sys.meta_path.insert(0, _Slow())
"""


@pytest.mark.parametrize("lang,sentence", [("en", "Interrupted by SIGINT while starting"),
                                           ("zh", "启动时被 SIGINT 中断")])
def test_sigint_while_importing_is_exit_130_in_one_sentence(tmp_path, lang, sentence):
    """SIGINT while Python imports scipy: exit 130 and one sentence, no traceback."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_SLOW_IMPORT)
    marker = tmp_path / "importing-scipy"
    env = script_env(extra={"PYTHONPATH": str(hook), "EM_TEST_MARKER": str(marker)})
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--lang", lang, *FAST], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(marker.exists, proc=proc, timeout=60, what="the scipy import")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert_one_sentence(err)
    assert sentence in err
    assert sorted(os.listdir(tmp_path)) == ["hook", "importing-scipy"]  # nothing else written


_DESCRIBED = '''
import numpy as np
from src.models.base import MixtureModel, ParamSpec
from src.utils.options import Option


class Rates(MixtureModel):
    """An exponential mixture that describes itself: one own option, Louis only."""

    name = "rates"
    option_specs = (Option("rate_scale", float, 2.0, "rates: scale of the data"),)
    se_methods = ("louis",)

    @classmethod
    def prepare_data(cls, frame, options):
        return ({"x": frame.iloc[:, 0].to_numpy(dtype=float) * options["rate_scale"]},
                {"column": str(frame.columns[0])})

    def param_specs(self):
        return [ParamSpec("weight", (), "simplex"), ParamSpec("rate", (), "positive")]

    def log_joint(self, data, params):
        rate = params["rate"][None, :]
        return np.log(params["weight"])[None, :] + np.log(rate) - rate * data["x"][:, None]
'''


def test_user_model_describes_its_options_and_methods(tmp_path):
    """A user model's own option takes its default; an SE method it does not list is exit 2."""
    (tmp_path / "rates.py").write_text(_DESCRIBED)
    spec = "rates.py:Rates"
    res = run_main(tmp_path, *QUICK, "--model", spec, "--se-method", "bootstrap",
                   "--columns", "waiting")
    assert res.returncode == 2
    assert_one_sentence(res.stderr)
    assert "does not support standard errors by 'bootstrap'" in res.stderr and "louis" in res.stderr
    assert not (tmp_path / "progress").exists()
    ok = run_main(tmp_path, "--n-starts", "1", "--lang", "en", "--model", spec,
                  "--columns", "waiting", "--components", "1", "--output-dir", "out")
    assert ok.returncode == 0, ok.stderr
    rate = float((tmp_path / "out" / "estimates.csv").read_text().splitlines()[2].split(",")[1])
    mean = sum(float(r.split(",")[1]) for r in FAITHFUL.read_text().splitlines()[1:]) / 272
    assert rate == pytest.approx(1 / (2.0 * mean), rel=1e-6)  # data scaled by the default 2.0


# --------------------------------------------------------------- reading the data
def _semicolon_decimal_comma(path, *, bad_row: int | None = None, encoding: str = "utf-8"):
    """The faithful data written the European way: ';' between fields, ',' as decimal mark."""
    rows = FAITHFUL.read_text().splitlines()
    lines = [rows[0].replace(",", ";")]
    for i, row in enumerate(rows[1:]):
        a, b = row.split(",")
        lines.append(f"{a.replace('.', ',')};{'é' if i == bad_row else b}")
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))


def test_data_notes_are_shown_when_the_data_phase_runs(tmp_path):
    """The loader's notes are printed when data_preparation runs (not when a rerun skips it) and kept in the report."""
    _semicolon_decimal_comma(tmp_path / "eu.csv")
    res = run_main(tmp_path, *QUICK, "--data", "eu.csv")
    assert res.returncode == 0, res.stderr
    assert "eu.csv as semicolon-separated" in res.stdout
    assert "with a decimal comma" in res.stdout
    assert res.stdout.index("semicolon-separated") < res.stdout.index("Phase 'model_estimation'")
    report = (tmp_path / "results" / "main_estimation" / "report.md").read_text()
    assert "eu.csv as semicolon-separated" in report  # kept with the results too
    again = run_main(tmp_path, *QUICK, "--data", "eu.csv")
    assert again.returncode == 0 and "Phase 'data_preparation' already completed" in again.stdout
    assert "semicolon-separated" not in again.stdout


def test_data_notes_come_before_the_error_they_explain(tmp_path):
    """A file read as cp1252 whose column then is not numeric: the note, then one sentence."""
    _semicolon_decimal_comma(tmp_path / "eu.csv", bad_row=4, encoding="cp1252")
    res = run_main(tmp_path, *QUICK, "--data", "eu.csv")
    assert res.returncode == 2
    assert_one_sentence(res.stderr)
    assert "non-numeric value 'é'" in res.stderr
    assert "eu.csv as cp1252 because it is not valid UTF-8" in res.stdout


# ------------------------------------------------------------- start of every run
def _stale_task_file(pid: int, age: float) -> Path:
    from src.parallel.cleanup import task_dir

    path = Path(task_dir()) / f"em-task-{pid}-testcli{os.getpid()}.pkl"
    path.write_bytes(b"left behind")
    past = time.time() - age
    os.utime(path, (past, past))
    return path


def test_every_run_removes_task_files_of_dead_runs(tmp_path):
    """A run without workers removes the task files a dead run left, and keeps a live run's."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = _stale_task_file(dead.pid, age=3600)  # older than any process with that pid now
    live = _stale_task_file(os.getppid(), age=0)
    try:
        res = run_main(tmp_path, *QUICK, "--no-progress-tracking")
        assert res.returncode == 0, res.stderr
        assert not stale.exists()
        assert live.exists()
    finally:
        for path in (stale, live):
            path.unlink(missing_ok=True)


# ------------------------------------------------------------- closed output pipe
def test_check_progress_into_a_closed_pipe_is_quiet_exit_141(tmp_path):
    """--check-progress | head -0: exit 141 and nothing on stderr (was 'Unexpected error', exit 1)."""
    progress = tmp_path / "progress"
    progress.mkdir()
    (progress / "main_estimation_progress.json").write_text("{}")
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--check-progress"], cwd=tmp_path,
                            env=script_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the script writes
    err = proc.stderr.read()
    proc.wait(timeout=60)
    proc.stderr.close()
    assert proc.returncode == 141, err
    assert err == b""


# -------------------------------------------------------- the up-front folder check
def test_refused_run_leaves_no_output_folder(tmp_path):
    """A run refused with exit 3 (inputs changed) leaves no folder from the writability check."""
    assert run_main(tmp_path, *QUICK, "--output-dir", "first").returncode == 0
    res = run_main(tmp_path, *QUICK, "--components", "3", "--output-dir", "new/deeper")
    assert res.returncode == 3
    assert_one_sentence(res.stderr)
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first", "progress"]
