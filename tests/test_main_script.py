"""The main script's flags, run as a real subprocess (or in-process) in a fresh working directory.

Fingerprints (a changed option or data file is refused with exit 3 naming the change;
``--recompute-changed`` keeps what still matches; ``--restart`` starts over), task names
that try to leave the progress folder, ``--progress-dir``, ``--no-progress-tracking``,
``--auto-cleanup-progress``, ``--check-progress``, ``--clean-progress`` and the language;
progress that does not fit the pipeline (an unknown phase, a forged standard-error
checkpoint) and result sets that are no longer whole.
"""

from __future__ import annotations

import csv
import json
import re

import pytest

from tests.helpers import (FAST, ROOT, TASK, assert_one_sentence, assert_same_results, check_rc,
                           copy_run, fit_json, progress_path, read_progress, reference_run,
                           results_dir, run_script, skip_line, write_progress)
from tests.inprocess import run_main

PHASES = ["data_preparation", "model_estimation", "standard_error_computation", "result_output"]
LOUIS = FAST + ("--se-method", "louis")
QUICK = FAST + ("--se-method", "none")


@pytest.fixture(scope="module")
def louis_run(tmp_path_factory):
    """A completed run with Louis standard errors (copied, never changed in place)."""
    return reference_run(tmp_path_factory.getbasetemp() / "refs", LOUIS)


def test_rerun_of_completed_run_skips_every_phase(tmp_path, louis_run):
    copy_run(louis_run, tmp_path)
    before = (results_dir(tmp_path) / "estimates.csv").read_bytes()
    proc = run_script(tmp_path, *LOUIS)
    check_rc(proc, 0)
    for phase in PHASES:
        assert skip_line(phase) in proc.stdout
    assert "started" not in proc.stdout
    assert (results_dir(tmp_path) / "estimates.csv").read_bytes() == before
    zh = run_script(tmp_path, *LOUIS, lang="zh_CN.UTF-8")  # default language from LANG
    check_rc(zh, 0)
    for phase in PHASES[:-1]:
        assert skip_line(phase, "zh") in zh.stdout
    # the files are written again in Chinese without asking; no number changes
    assert "report_language: 'en' -> 'zh'" in zh.stdout
    assert (results_dir(tmp_path) / "estimates.csv").read_bytes() == before
    assert "## 拟合" in (results_dir(tmp_path) / "report.md").read_text(encoding="utf-8") or \
        "拟合" in (results_dir(tmp_path) / "report.md").read_text(encoding="utf-8")


def test_output_options_of_a_completed_run_rewrite_only_the_files(tmp_path, louis_run):
    """--ci-level, --formats and --no-plots after a completed run redo result_output alone (no --recompute-changed needed); other inputs are still refused."""
    copy_run(louis_run, tmp_path)
    before = (results_dir(tmp_path) / "estimates.csv").read_text(encoding="utf-8")
    proc = run_script(tmp_path, *LOUIS, "--ci-level", "0.9", "--formats", "md", "--no-plots")
    check_rc(proc, 0)
    for phase in PHASES[:-1]:
        assert skip_line(phase) in proc.stdout
    after = (results_dir(tmp_path) / "estimates.csv").read_text(encoding="utf-8")
    assert after != before and after.splitlines()[0] == before.splitlines()[0]
    names = {p.name for p in results_dir(tmp_path).iterdir()}
    assert "report.html" not in names and not any(n.endswith(".png") for n in names)
    refused = run_script(tmp_path, *LOUIS, "--ci-level", "0.9", "--tol", "1e-6")
    check_rc(refused, 3)


# ------------------------------------------------------------------------ fingerprints
@pytest.mark.parametrize("flags,names,affected", [
    (("--components", "3"), ["components: 2 -> 3"], "model_estimation"),
    (("--se-method", "numerical"), ["se_method: 'louis' -> 'numerical'"], "standard_error_computation"),
    (("--tol", "1e-6", "--seed", "7"), ["tol: 1e-08 -> 1e-06", "seed: 20241101 -> 7"], "model_estimation"),
])
def test_changed_option_is_refused_naming_it(tmp_path, louis_run, flags, names, affected):
    copy_run(louis_run, tmp_path)
    before = progress_path(tmp_path).read_bytes()
    args = list(LOUIS)
    for i in range(0, len(flags), 2):
        if flags[i] in args:
            args[args.index(flags[i]) + 1] = flags[i + 1]
        else:
            args += flags[i:i + 2]
    proc = run_main(tmp_path, *args, "--lang", "en")  # exit 3 from a subprocess: below
    check_rc(proc, 3)
    assert_one_sentence(proc.stderr)
    for name in names:
        assert name in proc.stderr
    assert f"affects {affected}" in proc.stderr
    assert "data_preparation" not in proc.stderr.split("affects")[1]
    assert progress_path(tmp_path).read_bytes() == before  # refused runs change nothing


def test_options_that_do_not_change_numbers_are_not_fingerprinted(tmp_path, louis_run):
    copy_run(louis_run, tmp_path)
    proc = run_main(tmp_path, *LOUIS, "--save-interval", "3", "--workers", "1", "--lang", "en")
    check_rc(proc, 0)
    assert skip_line("standard_error_computation") in proc.stdout
    assert skip_line("result_output") in proc.stdout


def test_result_files_are_written_again_when_missing_or_wanted_elsewhere(tmp_path, louis_run):
    copy_run(louis_run, tmp_path)
    want = (results_dir(louis_run) / "estimates.csv").read_bytes()
    proc = run_script(tmp_path, *LOUIS, "--output-dir", "elsewhere")
    check_rc(proc, 0)
    assert skip_line("standard_error_computation") in proc.stdout
    assert skip_line("result_output") not in proc.stdout
    assert (tmp_path / "elsewhere" / "estimates.csv").read_bytes() == want
    for f in results_dir(tmp_path).iterdir():
        f.unlink()
    check_rc(run_script(tmp_path, *LOUIS), 0)
    assert (results_dir(tmp_path) / "estimates.csv").read_bytes() == want


def test_recompute_changed_reuses_the_estimation(tmp_path, tmp_path_factory, louis_run):
    numerical = FAST + ("--se-method", "numerical")
    fresh = reference_run(tmp_path_factory.getbasetemp() / "refs", numerical)
    copy_run(louis_run, tmp_path)
    proc = run_script(tmp_path, *numerical, "--recompute-changed")
    check_rc(proc, 0)
    assert "se_method" in proc.stdout  # says what changed
    assert skip_line("data_preparation") in proc.stdout
    assert skip_line("model_estimation") in proc.stdout
    assert skip_line("standard_error_computation") not in proc.stdout
    assert "Phase 'standard_error_computation' started" in proc.stdout
    assert (results_dir(tmp_path) / "estimates.csv").read_bytes() == \
        (results_dir(fresh) / "estimates.csv").read_bytes()
    assert fit_json(tmp_path)["se_method"] == "numerical"
    assert read_progress(tmp_path)["phase_fingerprints"]["standard_error_computation"]["se_method"] \
        == "numerical"


def test_restart_starts_over(tmp_path, louis_run):
    copy_run(louis_run, tmp_path)
    proc = run_script(tmp_path, *LOUIS, "--components", "3", "--restart")
    check_rc(proc, 0)
    assert "skipping" not in proc.stdout and "Resuming" not in proc.stdout
    fit = fit_json(tmp_path)
    assert fit["components"] == 3 and fit["n_params"] == 2 + 3 * 2 + 3 * 3
    doc = read_progress(tmp_path)
    assert doc["is_resumed"] is False and doc["status"] == "completed"


def test_changed_data_file_is_refused(tmp_path):
    data = tmp_path / "data.csv"
    rows = list(csv.reader((ROOT / "src" / "data" / "builtin" / "faithful.csv").open()))
    data.write_text("\n".join(",".join(r) for r in rows) + "\n")
    check_rc(run_script(tmp_path, *QUICK, "--data", "data.csv"), 0)
    rows[5][0] = str(float(rows[5][0]) + 0.5)  # one value edited
    data.write_text("\n".join(",".join(r) for r in rows) + "\n")
    proc = run_script(tmp_path, *QUICK, "--data", "data.csv")
    check_rc(proc, 3)
    assert_one_sentence(proc.stderr)
    assert "data_sha256" in proc.stderr and "affects data_preparation" in proc.stderr


# ------------------------------------------------------------------------- task names
HOSTILE = ["../x", "/abs/path/x", "", "a" * 101, "a/b", ".hidden", "x\\..\\y", "-dash"]


@pytest.mark.parametrize("name", HOSTILE, ids=["dotdot", "absolute", "empty", "101chars", "slash",
                                               "hidden", "backslash", "dash"])
def test_hostile_task_name_is_refused(tmp_path, name):
    work = tmp_path / "work"
    work.mkdir()
    if name.startswith("/"):
        name = str(tmp_path / "abs" / "x")
    proc = run_main(work, *QUICK, f"--task-name={name}", "--lang", "en")  # a subprocess: below
    check_rc(proc, 2)
    assert_one_sentence(proc.stderr)
    assert "Task name" in proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["work"]
    assert list(work.iterdir()) == []


def test_hostile_task_name_message_in_chinese(tmp_path):
    proc = run_script(tmp_path, *QUICK, "--task-name", "../x", lang="zh_CN.UTF-8")
    check_rc(proc, 2)
    assert "任务名" in proc.stderr


def test_relative_progress_dir_and_longest_task_name(tmp_path):
    name = "T" + "x" * 98 + "9"  # 100 characters: the longest allowed
    proc = run_main(tmp_path, *QUICK, "--task-name", name, "--progress-dir", "sub/prog")
    check_rc(proc, 0)
    assert progress_path(tmp_path, name, "sub/prog").is_file()
    assert not (tmp_path / "progress").exists()
    assert (results_dir(tmp_path, name) / "estimates.csv").is_file()


def test_absolute_progress_dir_check_and_clean(tmp_path):
    work, store = tmp_path / "work", tmp_path / "store"
    work.mkdir()
    proc = run_main(work, *QUICK, "--progress-dir", str(store))
    check_rc(proc, 0)
    assert (store / f"{TASK}_progress.json").is_file()
    assert not (work / "progress").exists()
    check = run_main(work, "--check-progress", "--progress-dir", str(store), "--lang", "en")
    check_rc(check, 0)
    assert f"Task '{TASK}'" in check.stdout and "completed" in check.stdout
    assert "running now:       no" in check.stdout
    clean = run_main(work, "--clean-progress", "--progress-dir", str(store), "--lang", "en")
    check_rc(clean, 0)
    assert [p.name for p in store.iterdir()] == [f"{TASK}.lock"]  # lock files stay
    empty = run_main(work, "--check-progress", "--progress-dir", str(store), "--lang", "en")
    assert "No progress files" in empty.stdout


def test_no_progress_tracking_writes_no_file(tmp_path):
    proc = run_main(tmp_path, *QUICK, "--no-progress-tracking")
    check_rc(proc, 0)
    assert not (tmp_path / "progress").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]
    assert (results_dir(tmp_path) / "fit.json").is_file()


def test_auto_cleanup_removes_the_task_files(tmp_path):
    other = tmp_path / "progress" / "other_task_progress.json"
    other.parent.mkdir()
    other.write_text("{}")  # another task's file is not touched
    proc = run_main(tmp_path, *QUICK, "--auto-cleanup-progress", "--lang", "en")
    check_rc(proc, 0)
    assert "removed" in proc.stdout
    assert sorted(p.name for p in (tmp_path / "progress").iterdir()) == [
        f"{TASK}.lock", "other_task_progress.json"]  # lock files stay (a run may wait on one)
    assert (results_dir(tmp_path) / "estimates.csv").is_file()


def test_help_lists_every_spec_flag(tmp_path):
    proc = run_main(tmp_path, "--help")
    check_rc(proc, 0)
    for flag in ("--no-progress-tracking", "--auto-cleanup-progress", "--check-progress",
                 "--clean-progress", "--config", "--data", "--columns", "--model", "--components",
                 "--se-method", "--n-bootstrap", "--n-starts", "--tol", "--max-iter", "--seed",
                 "--task-name", "--progress-dir", "--save-interval", "--output-dir", "--restart",
                 "--recompute-changed", "--debug", "--lang"):
        assert flag in proc.stdout
    assert "class enumeration:" in proc.stdout  # the group of --select, --blrt, --alpha, --no-vlmr
    for flag in ("--select", "--blrt", "--alpha", "--no-vlmr", "--no-blrt-early-stop", "--se-for"):
        assert flag in proc.stdout


@pytest.mark.parametrize("flag,value", [("--progress-dir", "afile"), ("--output-dir", "afile/sub")])
def test_folder_option_blocked_by_a_file_is_a_usage_error(tmp_path, flag, value):
    (tmp_path / "afile").write_text("not a folder")
    proc = run_main(tmp_path, *QUICK, flag, value, "--lang", "en")
    check_rc(proc, 2)
    assert_one_sentence(proc.stderr)
    assert flag in proc.stderr and "afile" in proc.stderr
    assert (tmp_path / "afile").read_text() == "not a folder"


# ------------------------------------------------------------------------- test helpers
def test_same_results_compares_fit_json_bytes_but_for_seconds(tmp_path, louis_run):
    """assert_same_results ignores a changed "seconds" but not reordered fit.json keys."""
    copy_run(louis_run, tmp_path)
    fit_file = results_dir(tmp_path) / "fit.json"
    text = fit_file.read_text(encoding="utf-8")
    fit_file.write_text(re.sub(r'"seconds": [^,\n]*', '"seconds": 12345.5', text), encoding="utf-8")
    assert_same_results(tmp_path, louis_run)
    reordered = dict(reversed(json.loads(text).items()))  # the same values, keys not sorted
    fit_file.write_text(json.dumps(reordered, indent=2) + "\n", encoding="utf-8")
    with pytest.raises(AssertionError, match="fit.json differs"):
        assert_same_results(tmp_path, louis_run)


# ------------------------------------------------------------ progress that does not fit
def test_progress_naming_an_unknown_phase_is_damage(tmp_path, louis_run):
    """A progress file naming a phase the pipeline does not have is damaged: exit 3, one sentence."""
    copy_run(louis_run, tmp_path)
    doc = read_progress(tmp_path)
    doc["completed_phases"].append("bogus_phase")
    doc["phase_results"]["bogus_phase"] = doc["phase_results"]["result_output"]
    write_progress(tmp_path, doc)
    progress_path(tmp_path).with_name(f"{TASK}_progress.json.bak").unlink()
    res = run_main(tmp_path, *LOUIS, "--lang", "en")
    assert res.returncode == 3
    assert_one_sentence(res.stderr)
    assert "unknown phase 'bogus_phase'" in res.stderr


SE_ALL = FAST + ("--se-method", "all", "--n-bootstrap", "4", "--save-interval", "0")


@pytest.fixture(scope="module")
def se_checkpoint(tmp_path_factory):
    """A run killed in the standard-error phase with Louis done (its checkpoint saved)."""
    folder = tmp_path_factory.mktemp("se_killed")
    killed = run_script(folder, *SE_ALL, fault="kill:standard_error_computation:2")
    assert killed.returncode < 0, killed.stderr
    state = read_progress(folder)["checkpoint"]["state"]["value"]
    assert list(state["done"]) == ["louis"] and state["method"] is None
    return folder


def _forge_se_state(value, how):
    if how == "not_a_mapping":
        return ["louis"]
    if how == "done_not_a_mapping":
        value["done"] = ["louis"]
    elif how == "unknown_done":
        value["done"]["jackknife"] = value["done"].pop("louis")
    elif how == "result_not_a_mapping":
        value["done"]["louis"] = "louis"
    elif how == "other_parameters":
        value["done"]["louis"]["names"] = ["weight[1]"]
    elif how == "unknown_method":
        value["method"] = "jackknife"
    return value


@pytest.mark.parametrize("how", ["not_a_mapping", "done_not_a_mapping", "unknown_done",
                                 "result_not_a_mapping", "other_parameters", "unknown_method"])
def test_forged_standard_error_checkpoint_is_dropped(tmp_path, tmp_path_factory, se_checkpoint,
                                                     how):
    """A forged standard-error checkpoint costs one warning; the results equal a clean run's."""
    ref = reference_run(tmp_path_factory.getbasetemp() / "refs", SE_ALL)
    copy_run(se_checkpoint, tmp_path)
    doc = read_progress(tmp_path)
    stored = doc["checkpoint"]["state"]
    stored["value"] = _forge_se_state(stored["value"], how)
    if how == "not_a_mapping":
        stored["files"] = []
    write_progress(tmp_path, doc)
    res = run_main(tmp_path, *SE_ALL, "--lang", "en")
    assert res.returncode == 0, res.stderr
    assert "checkpoint of phase 'standard_error_computation' does not fit" in res.stdout
    assert skip_line("model_estimation") in res.stdout
    assert_same_results(tmp_path, ref)


# ------------------------------------------------------------- result files on rerun
@pytest.mark.parametrize("tamper", ["edited", "manifest_removed", "mixed"])
def test_result_set_that_is_not_whole_is_written_again(tmp_path, louis_run, tamper):
    """An edited, unlisted or mixed result set is written again on rerun from the saved numbers."""
    copy_run(louis_run, tmp_path)
    out = results_dir(tmp_path)
    want = {p.name: p.read_bytes() for p in out.iterdir()}
    if tamper == "edited":
        (out / "estimates.csv").write_bytes(want["estimates.csv"] + b"weight[9],0.5\n")
    elif tamper == "manifest_removed":
        (out / "manifest.json").unlink()
    else:  # a report of another run beside this run's other files
        (out / "report.md").write_text("# Estimation report: something else\n")
    res = run_main(tmp_path, *LOUIS, "--lang", "en")
    assert res.returncode == 0, res.stderr
    assert skip_line("standard_error_computation") in res.stdout
    assert "Phase 'result_output' started" in res.stdout
    got = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(got) == set(want)
    for name in ("estimates.csv", "covariance.csv", "report.md"):
        assert got[name] == want[name], name
    again = run_main(tmp_path, *LOUIS, "--lang", "en")  # now whole: skipped
    assert skip_line("result_output") in again.stdout


def test_script_imports_leave_the_garbage_collector_on_with_the_modules_frozen(tmp_path):
    """The script turns collection off while its modules load (full collections went
    through them three times) and on again after, with what they made frozen: a script
    that left it off would let cycles pile up for a run of hours."""
    import subprocess
    import sys

    script = str(ROOT / "scripts" / "02_run_estimation.py")
    code = ("import gc, runpy; ns = runpy.run_path(%r, run_name='not_main'); "
            "print(gc.isenabled(), gc.get_freeze_count() > 10000, 'main' in ns)" % script)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True", "True"]


@pytest.mark.parametrize("model", ["gmm", "lca"])
def test_a_default_run_never_imports_scipy_stats_or_optimize(tmp_path, model):
    """scipy.stats and scipy.optimize took 0.5 s each to import, half of the script's start:
    the normal quantiles, p-values and chi-square tails come from scipy.special (the same
    functions scipy.stats calls), the Hungarian matching is imported where a bootstrap or an
    enumeration needs it.  A default run (Louis SEs, every result file and figure) of the
    built-in data (LCA: a small file of answers) loads neither."""
    import subprocess
    import sys

    args = list(FAST)
    if model == "lca":
        rows = ["a,b,c"] + [f"{i % 2 + 1},{(i // 2) % 2 + 1},{(i // 3) % 2 + 1}" for i in range(60)]
        (tmp_path / "answers.csv").write_text("\n".join(rows) + "\n")
        args += ["--model", "lca", "--data", "answers.csv"]
    script = str(ROOT / "scripts" / "02_run_estimation.py")
    code = ("import runpy, sys; ns = runpy.run_path(%r, run_name='not_main'); "
            "after_imports = sorted(m for m in ('scipy.stats', 'scipy.optimize') if m in sys.modules); "
            "rc = ns['main'](%r); "
            "print(rc, after_imports, sorted(m for m in ('scipy.stats', 'scipy.optimize') "
            "if m in sys.modules))" % (script, args))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "0 [] []", proc.stdout
    assert (tmp_path / "results" / TASK / "report.html").is_file()
