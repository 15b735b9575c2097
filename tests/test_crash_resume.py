"""A real run killed (SIGKILL, SIGTERM, SIGINT, an exception) and rerun gives the same results.

Kills land through the documented fault hook (``EM_PIPELINE_FAULT=ACTION:PHASE:N``: right
after the N-th progress write while PHASE is current; write 1 starts the phase), and by
signals sent from outside.  Every resumed run must end with an ``estimates.csv``
byte-identical to an uninterrupted run's and a ``fit.json`` identical but for timings.
"""

from __future__ import annotations

import signal

import pytest

from tests.helpers import (ALL_SE_DEBUG, FAST, assert_one_sentence, assert_same_results, check_rc,
                           progress_path, read_progress, reference_proc, reference_run, run_script,
                           skip_line, start_script, stop, try_read_progress, wait_for,
                           writes_in_phase)

PHASES = ["data_preparation", "model_estimation", "standard_error_computation", "result_output"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run every resumed run is compared with."""
    return reference_proc(tmp_path_factory.getbasetemp() / "refs", ALL_SE_DEBUG)


# (phase, write after which the process dies, phases completed at that moment, resumes inside?, lang)
KILL_POINTS = [
    ("data_preparation", 1, [], False, "en"),
    ("data_preparation", 2, ["data_preparation"], False, "zh"),
    ("model_estimation", 1, ["data_preparation"], False, "en"),
    ("model_estimation", 6, ["data_preparation"], True, "en"),        # first EM start
    ("model_estimation", 30, ["data_preparation"], True, "zh"),       # second EM start
    ("standard_error_computation", 1, PHASES[:2], False, "en"),
    ("standard_error_computation", 3, PHASES[:2], True, "en"),        # Louis, numerical done
    ("standard_error_computation", 12, PHASES[:2], True, "zh"),       # inside the bootstrap
    ("result_output", 1, PHASES[:3], False, "en"),
    ("result_output", 2, PHASES, False, "en"),
]


@pytest.mark.parametrize("phase,n,done,inside,lang", KILL_POINTS,
                         ids=[f"{p}-{n}" for p, n, *_ in KILL_POINTS])
def test_sigkill_then_rerun_gives_identical_results(tmp_path, reference, phase, n, done, inside, lang):
    ref_dir, ref_proc = reference
    killed = run_script(tmp_path, *ALL_SE_DEBUG, fault=f"kill:{phase}:{n}")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    saved = read_progress(tmp_path)
    assert saved["current_phase"] == phase
    assert saved["completed_phases"] == done
    assert saved["status"] == "running"  # SIGKILL leaves no chance to record anything
    if inside:
        assert saved["checkpoint"]["phase"] == phase
    if phase == "standard_error_computation" and n == 12:
        assert saved["checkpoint"]["state"]["value"]["method"] == "bootstrap"

    resumed = run_script(tmp_path, *ALL_SE_DEBUG, "--lang", lang)
    check_rc(resumed, 0)
    for p in PHASES:
        assert (skip_line(p, lang) in resumed.stdout) == (p in done), (p, resumed.stdout)
    if inside:  # it went on from the saved checkpoint instead of redoing the phase
        assert writes_in_phase(resumed.stderr, phase) < writes_in_phase(ref_proc.stderr, phase)
    # the report is in the language of the run that wrote it; the numbers are the same
    assert_same_results(tmp_path, ref_dir, same_language=lang == "en" or "result_output" in done)
    final = read_progress(tmp_path)
    assert final["status"] == "completed" and final["completed_phases"] == PHASES
    assert final["is_resumed"] is True and final["resume_count"] == 1


@pytest.mark.parametrize("action,phase,n,code,sig", [
    ("term", "model_estimation", 10, 143, "SIGTERM"),
    ("int", "standard_error_computation", 12, 130, "SIGINT"),
])
def test_signal_saves_state_and_resumes(tmp_path, reference, action, phase, n, code, sig):
    ref_dir, _ = reference
    stopped = run_script(tmp_path, *ALL_SE_DEBUG, fault=f"{action}:{phase}:{n}")
    check_rc(stopped, code)
    assert f"Interrupted by {sig}" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    saved = read_progress(tmp_path)
    assert saved["status"] == "interrupted" and saved["end_reason"] == sig
    assert saved["current_phase"] == phase and saved["checkpoint"]["phase"] == phase
    resumed = run_script(tmp_path, *ALL_SE_DEBUG)
    check_rc(resumed, 0)
    assert skip_line("data_preparation") in resumed.stdout
    assert_same_results(tmp_path, ref_dir)


def test_exception_saves_state_then_resumes(tmp_path, reference):
    ref_dir, _ = reference
    failed = run_script(tmp_path, *ALL_SE_DEBUG[:-1], fault="raise:model_estimation:8")
    check_rc(failed, 1)
    assert_one_sentence(failed.stderr)
    saved = read_progress(tmp_path)
    assert saved["status"] == "failed" and "RuntimeError" in saved["end_reason"]
    assert saved["checkpoint"]["phase"] == "model_estimation"
    check_rc(run_script(tmp_path, *ALL_SE_DEBUG), 0)
    assert_same_results(tmp_path, ref_dir)


# ------------------------------------------------------------- signals from outside
SLOW = FAST + ("--se-method", "bootstrap", "--n-bootstrap", "60", "--save-interval", "0")


@pytest.fixture(scope="module")
def slow_reference(tmp_path_factory):
    return reference_run(tmp_path_factory.getbasetemp() / "refs", SLOW)


def _in_bootstrap(path):
    doc = try_read_progress(path)
    return bool(doc and doc["current_phase"] == "standard_error_computation" and doc["checkpoint"])


@pytest.mark.parametrize("sig,code,name", [(signal.SIGTERM, 143, "SIGTERM"),
                                           (signal.SIGINT, 130, "SIGINT")])
def test_external_signal_during_bootstrap(tmp_path, slow_reference, sig, code, name):
    proc = start_script(tmp_path, *SLOW)
    try:
        wait_for(lambda: _in_bootstrap(progress_path(tmp_path)), proc=proc, timeout=120,
                 what="the bootstrap phase")
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        stop(proc)
    assert proc.returncode == code, err
    assert f"Interrupted by {name}" in err and "Traceback" not in err
    saved = read_progress(tmp_path)
    assert saved["status"] == "interrupted" and saved["end_reason"] == name
    assert saved["completed_phases"] == PHASES[:2]
    resumed = run_script(tmp_path, *SLOW)
    check_rc(resumed, 0)
    assert skip_line("model_estimation") in resumed.stdout
    assert_same_results(tmp_path, slow_reference)
