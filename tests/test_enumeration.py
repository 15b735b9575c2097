"""Class enumeration end to end: ``--components 1-3`` through the script, its files, resume
after SIGKILL anywhere, worker-count invariance, extending the range with
``--recompute-changed`` (only the new K is fitted), and the tracker's ``stale_result``.

Every K's folder is checked against a run of that K alone (the same numbers by another
path), the criteria against their closed forms, and every resumed or re-run enumeration
against an uninterrupted one byte for byte (``fit.json`` but for timings).
"""

from __future__ import annotations

import csv
import shutil
import signal
from pathlib import Path

import pytest

from src.output.enumeration import COLUMNS
from src.output.writers import result_set_is_complete
from src.selection.criteria import information_criteria
from src.utils.errors import FingerprintMismatch
from src.utils.estimation_progress import estimation_progress
from tests.helpers import (TASK, assert_same_files, check_rc, read_progress,
                           reference_proc, results_dir, run_script, skip_line)
from tests.inprocess import run_main

#: a small enumeration: 3 K, VLMR/LMR, a 5-replicate BLRT (no early stop), Louis SEs
BASE = ("--n-starts", "2", "--n-candidates", "4", "--blrt", "5", "--no-blrt-early-stop",
        "--se-method", "louis", "--save-interval", "0")
ENUM = ("--components", "1-3", *BASE)
PHASES = ["data_preparation", "model_estimation", "model_selection",
          "standard_error_computation", "result_output"]


def read_rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "enumeration.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted enumeration every other run is compared with."""
    folder, proc = reference_proc(tmp_path_factory.getbasetemp() / "enum-refs", ENUM)
    return results_dir(folder), proc


class TestScript:
    def test_files_table_and_selection(self, reference):
        """enumeration.csv has the columns, the closed-form criteria and one selected K (lowest BIC)."""
        out, proc = reference
        rows = read_rows(out)
        assert list(rows[0]) == list(COLUMNS)
        assert [int(r["k"]) for r in rows] == [1, 2, 3]
        for r in rows:
            ic = information_criteria(float(r["loglik"]), int(r["n_params"]), 272)
            for name, value in ic.items():
                assert float(r[name]) == pytest.approx(value, rel=1e-13)
            assert float(r["icl"]) >= float(r["bic"]) - 1e-9
            assert int(r["n_starts"]) == 2 and r["best_replicated"] in ("true", "false")
        assert rows[0]["entropy"] == "" and 0 < float(rows[1]["entropy"]) <= 1
        assert all(rows[0][c] == "" for c in ("blrt_p", "lmr_p", "vlmr_p"))
        assert all(0 < float(r[c]) <= 1 for r in rows[1:] for c in ("blrt_p", "lmr_p", "vlmr_p"))
        best = min(rows, key=lambda r: float(r["bic"]))
        assert [r["selected"] for r in rows].count("true") == 1 and best["selected"] == "true"
        sel = int(best["k"])
        assert f"Selected K = {sel} of 1, 2, 3 by BIC" in proc.stdout
        for name in ("estimates.csv", "covariance.csv"):  # the top is the selected K's
            assert (out / name).read_bytes() == (out / f"k{sel}" / name).read_bytes()
        others = [k for k in (1, 2, 3) if k != sel]
        assert not any((out / f"k{k}" / "covariance.csv").exists() for k in others)
        assert (out / "criteria.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        report = (out / "report.md").read_text()
        assert "1 vs 2, 2 vs 3" in report and f"**selected K = {sel}**" in report

    def test_each_k_folder_is_a_single_k_run(self, reference, tmp_path):
        """k2/ holds exactly the estimates and report a run of K = 2 alone writes."""
        out, _ = reference
        single = run_main(tmp_path, "--components", "2", *BASE, "--output-dir", "one")
        check_rc(single, 0)
        for name in ("estimates.csv", "covariance.csv", "report.md"):
            assert (out / "k2" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()

    def test_one_manifest_covers_every_folder(self, reference, tmp_path):
        """The top manifest vouches for the k{K}/ files too: editing one breaks the set."""
        out, _ = reference
        copy = tmp_path / "copy"
        shutil.copytree(out, copy)
        assert result_set_is_complete(copy, TASK)
        with open(copy / "k1" / "estimates.csv", "a") as fh:
            fh.write("edited\n")
        assert not result_set_is_complete(copy, TASK)

    def test_two_workers_give_the_same_files(self, reference, tmp_path):
        """Fits, BLRT replicates and standard errors on 2 workers: the same files."""
        out, _ = reference
        check_rc(run_main(tmp_path, *ENUM, "--workers", "2"), 0)
        assert_same_files(results_dir(tmp_path), out)


# (phase, write after which the run dies, phases completed then)
KILLS = [("model_estimation", 25, PHASES[:1]),        # inside the fit of K = 2
         ("model_selection", 5, PHASES[:2]),          # inside the BLRT of 1 against 2
         ("standard_error_computation", 1, PHASES[:3])]


@pytest.mark.parametrize("phase,n,done", KILLS, ids=[f"{p}-{n}" for p, n, _ in KILLS])
def test_sigkill_mid_enumeration_resumes_to_identical_files(reference, tmp_path, phase, n, done):
    """A run killed inside the enumeration resumes to the same files, timings aside."""
    out, _ = reference
    killed = run_script(tmp_path, *ENUM, fault=f"kill:{phase}:{n}")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    saved = read_progress(tmp_path)
    assert saved["current_phase"] == phase and saved["completed_phases"] == done
    resumed = run_main(tmp_path, *ENUM)
    check_rc(resumed, 0)
    for p in PHASES:
        assert (skip_line(p) in resumed.stdout) == (p in done)
    if phase == "model_estimation":  # K = 1 was not fitted again
        assert "Fitting K = 1 " not in resumed.stdout and "Fitting K = 3 " in resumed.stdout
    assert_same_files(results_dir(tmp_path), out)
    assert read_progress(tmp_path)["completed_phases"] == PHASES


def test_extending_the_range_fits_only_the_new_k(reference, tmp_path):
    """1-3 then 1-4 with --recompute-changed fits only K = 4 and gives a fresh 1-4 run's files;
    back to 1-3 fits nothing and removes k4/."""
    out, _ = reference
    shutil.copytree(out.parents[1] / "progress", tmp_path / "progress")
    shutil.copytree(out, results_dir(tmp_path))
    wider = ("--components", "1-4", *BASE)
    refused = run_main(tmp_path, *wider)
    check_rc(refused, 3)
    extended = run_main(tmp_path, *wider, "--recompute-changed")
    check_rc(extended, 0)
    fitted = [line for line in extended.stdout.splitlines() if line.startswith("Fitting K = ")]
    assert fitted == ["Fitting K = 4 (4 of 4)"]
    assert "Fits for K = 1, 2, 3 kept from the earlier run" in extended.stdout
    assert "Tests of 1-2, 2-3 kept from the earlier run" in extended.stdout
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    check_rc(run_main(fresh, *wider), 0)
    assert_same_files(results_dir(tmp_path), results_dir(fresh))

    back = run_main(tmp_path, *ENUM, "--recompute-changed")
    check_rc(back, 0)
    assert "Fitting K = " not in back.stdout
    assert not (results_dir(tmp_path) / "k4").exists()
    assert_same_files(results_dir(tmp_path), out)


class TestStaleResult:
    def test_recompute_changed_offers_the_dropped_result(self, tmp_path):
        """A result dropped for changed inputs is offered once with its old fingerprint."""
        def session(fp, **kw):
            return estimation_progress(task_name="t", progress_dir=tmp_path, save_interval=0,
                                       notify=lambda m: None, phases=("a", "b"),
                                       fingerprints={"a": {"x": 1}, "b": {"x": 1, "y": fp}}, **kw)

        with session(1) as tracker:
            tracker.begin_phase("a")
            tracker.complete_phase("a", {"v": 1})
            tracker.begin_phase("b")
            tracker.complete_phase("b", {"v": [1.5, 2.5]})
            assert tracker.stale_result("b") is None
        with pytest.raises(FingerprintMismatch):
            with session(2):
                pass
        with session(2, recompute_changed=True) as tracker:
            assert tracker.is_completed("a") and not tracker.is_completed("b")
            assert tracker.stale_result("a") is None
            result, fingerprint = tracker.stale_result("b")
            assert result == {"v": [1.5, 2.5]} and fingerprint == {"x": 1, "y": 1}
        with session(2, recompute_changed=True) as tracker:  # not dropped again: nothing stale
            assert tracker.stale_result("b") is None


def test_single_k_runs_keep_four_phases(tmp_path):
    """One K never enters model_selection and writes no enumeration files."""
    proc = run_main(tmp_path, "--components", "2", "--n-starts", "2", "--se-method", "none")
    check_rc(proc, 0)
    assert read_progress(tmp_path)["completed_phases"] == [p for p in PHASES
                                                           if p != "model_selection"]
    out = results_dir(tmp_path)
    assert not (out / "enumeration.csv").exists() and not list(out.glob("k*"))


class TestRules:
    @staticmethod
    def _rows(bic, blrt_p):
        return [{"k": k, "bic": b, "aic": b, "blrt_p": p} for k, b, p in zip((1, 2, 3, 4), bic, blrt_p)]

    def test_criterion_takes_the_lowest_and_the_smaller_k_on_ties(self):
        """The lowest criterion wins; a tie goes to the smaller K; NaN never wins."""
        from src.pipeline.enumeration import choose

        assert choose(self._rows([5.0, 3.0, 4.0, 9.0], [None] * 4), "bic", 0.05) == (2, [])
        assert choose(self._rows([5.0, 3.0, 3.0, 9.0], [None] * 4), "bic", 0.05) == (2, [])
        assert choose(self._rows([float("nan"), 3.0, 1.0, 2.0], [None] * 4), "aic", 0.05)[0] == 3

    def test_blrt_takes_the_smallest_k_not_rejected_against_the_next(self):
        """BLRT rule: the first non-significant comparison stops; all significant: the largest K, noted."""
        from src.pipeline.enumeration import choose

        assert choose(self._rows([0] * 4, [None, 0.01, 0.20, 0.01]), "blrt", 0.05) == (2, [])
        assert choose(self._rows([0] * 4, [None, 0.30, 0.01, 0.01]), "blrt", 0.05) == (1, [])
        k, notes = choose(self._rows([0] * 4, [None, 0.01, 0.05, 0.04]), "blrt", 0.05)
        assert k == 4 and "largest K" in notes[0]  # p = alpha rejects (p <= alpha)
        k, notes = choose(self._rows([0] * 4, [None, float("nan"), 0.5, 0.01]), "blrt", 0.05)
        assert k == 2 and "K = 1 against K = 2 has no p-value" in notes[0]

    def test_warnings_name_each_problem_and_k(self):
        """Not replicated, spurious starts excluded and a class below 5% are each said for their K."""
        from src.pipeline.enumeration import warnings_of

        fits = {"fits": {"2": {"flags": {}, "start_flags": []},
                         "3": {"flags": {"singular_covariance": 2},
                               "start_flags": [[], ["singular_covariance"], ["singular_covariance"]]}}}
        rows = [{"k": 2, "best_replicated": False, "smallest_class": 0.3},
                {"k": 3, "best_replicated": True, "smallest_class": 0.02}]
        out = warnings_of(fits, rows)
        assert out == ["K = 2: the best log-likelihood was reached by only one start; increase --n-starts.",
                       "K = 3: 2 start(s) with a spurious or degenerate solution (singular_covariance) were excluded.",
                       "K = 3: the smallest class has weight 0.0200, below 5%."]

    def test_a_saved_state_of_other_k_is_refused(self):
        """A checkpoint for other K raises CheckpointInvalid (the tracker then starts the phase over)."""
        from src.config import RunOptions
        from src.pipeline import phases
        from src.pipeline.enumeration import estimate_models
        from src.utils.checkpointing import CheckpointInvalid, NullCheckpointer

        class Saved(NullCheckpointer):
            def resume_state(self):
                return {"kind": "enumeration", "keys": ["1", "2"], "done": {}, "unit": None,
                        "inner": None}

        opts = RunOptions(components="1-3", n_starts=1, n_candidates=0).validate()
        prepared = phases.materialise(phases.prepare_data(opts), opts)
        with pytest.raises(CheckpointInvalid, match="this run for"):
            estimate_models(prepared, opts, Saved())


def test_se_for_all_and_a_later_single_k_run(tmp_path):
    """--se-for all gives every K its covariance.csv; a single-K run into the folder removes k*/ but
    not a folder that is not ours."""
    args = ("--n-starts", "2", "--n-candidates", "4", "--no-vlmr", "--output-dir", "out")
    check_rc(run_main(tmp_path, "--components", "1,3", *args, "--se-for", "all"), 0)
    out = tmp_path / "out"
    assert [int(r["k"]) for r in read_rows(out)] == [1, 3]
    assert (out / "k1" / "covariance.csv").is_file() and (out / "k3" / "covariance.csv").is_file()
    assert read_rows(out)[1]["vlmr_p"] == "" and "2 vs" not in (out / "report.md").read_text()
    (out / "k7").mkdir()
    (out / "k7" / "estimates.csv").write_text("mine\n")
    check_rc(run_main(tmp_path, "--components", "2", *args, "--no-progress-tracking"), 0)
    assert not (out / "k1").exists() and not (out / "k3").exists()
    assert (out / "k7" / "estimates.csv").read_text() == "mine\n"
    assert not (out / "enumeration.csv").exists() and result_set_is_complete(out, TASK)


def test_a_single_k_fit_is_kept_when_a_range_follows(tmp_path):
    """K = 2 alone, then 1-3 with --recompute-changed: K = 2 is not fitted again and its
    folder equals the single run's estimates."""
    args = ("--n-starts", "2", "--n-candidates", "4", "--se-method", "none", "--no-vlmr")
    check_rc(run_main(tmp_path, "--components", "2", *args), 0)
    single = (results_dir(tmp_path) / "estimates.csv").read_bytes()
    wider = run_main(tmp_path, "--components", "1-3", *args, "--recompute-changed")
    check_rc(wider, 0)
    assert "Fits for K = 2 kept from the earlier run" in wider.stdout
    assert [line for line in wider.stdout.splitlines() if line.startswith("Fitting K = ")] == \
        ["Fitting K = 1 (1 of 3)", "Fitting K = 3 (3 of 3)"]
    assert (results_dir(tmp_path) / "k2" / "estimates.csv").read_bytes() == single
