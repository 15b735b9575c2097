"""Partitioned Parquet input through the main script: the in-memory results (to rounding),
posteriors as Parquet, the sample-then-refine search, a SIGKILL and resume, a Dask cluster,
and changed files refused.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from src.utils.rng import stream
from tests.test_executors import dask_cluster  # noqa: F401  (the session's Dask cluster)
from tests.helpers import (assert_one_sentence, check_rc, fit_json, reference_run, results_dir,
                           run_files, run_script)
from tests.inprocess import run_main

FAST = ("--n-starts", "2", "--n-candidates", "6", "--no-plots", "--formats", "md",
        "--save-interval", "0", "--tol", "1e-13")


def _frame(n: int = 6000) -> pd.DataFrame:
    rng = stream(11, "test-partitioned")
    z = rng.random(n) < 0.4
    x = np.where(z[:, None], rng.normal([0.0, 0.0], 1.0, (n, 2)),
                 rng.normal([3.0, 1.5], 0.8, (n, 2)))
    return pd.DataFrame({"a": x[:, 0], "b": x[:, 1]})


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The same rows as one Parquet file and as a folder of three files (row groups of 1000)."""
    base = tmp_path_factory.mktemp("partitioned-inputs")
    frame = _frame()
    frame.to_parquet(base / "all.parquet")
    folder = base / "parts"
    (folder / "year=1").mkdir(parents=True)
    for i, (a, b) in enumerate([(0, 2500), (2500, 4000), (4000, 6000)]):
        target = folder / ("year=1" if i == 2 else "") / f"p{i}.parquet"   # sorted: p0, p1, year=1/p2
        frame.iloc[a:b].to_parquet(target, row_group_size=1000)
    return base


def _reference(tmp_path_factory, args) -> Path:
    """One uninterrupted run of ``args`` for the session; tests read or copy it, never write."""
    return reference_run(tmp_path_factory.getbasetemp() / "refs", args)


@pytest.fixture(scope="module")
def one_file_run(tmp_path_factory, inputs) -> Path:
    """The run on the one Parquet file (the in-memory results), shared by the tests that compare with it."""
    return _reference(tmp_path_factory, ("--data", str(inputs / "all.parquet"), *FAST))


@pytest.fixture(scope="module")
def sampled_run(tmp_path_factory, inputs) -> Path:
    """The run on the folder of files with the search on a sample of 800 rows, shared likewise."""
    return _reference(tmp_path_factory,
                      ("--data", str(inputs / "parts"), "--sample-rows", "800", *FAST))


def _estimates(folder) -> pd.DataFrame:
    return pd.read_csv(results_dir(folder) / "estimates.csv")


def test_folder_of_files_gives_the_in_memory_results(tmp_path, inputs, one_file_run):
    """A folder of Parquet files gives the one-file run's estimates and SEs (to the convergence tolerance) and its posteriors as Parquet.

    The two runs differ only in the last bits of the GMM's centring (the column means merged
    from the chunks' means), so they stop at iterates that agree to what --tol allows; the
    engines' bitwise agreement from the same point is tests/test_engines.py's."""
    mem, part = one_file_run, tmp_path / "part"
    part.mkdir()
    proc = run_script(part, "--data", str(inputs / "parts"), *FAST)
    check_rc(proc, 0)
    assert "3 files, 3 partitions, 6000 rows" in proc.stdout + proc.stderr
    a, b = _estimates(mem), _estimates(part)
    assert list(a["parameter"]) == list(b["parameter"])
    assert abs(fit_json(part)["loglik"] - fit_json(mem)["loglik"]) <= 1e-11 * abs(fit_json(mem)["loglik"])
    for col in ("estimate", "se"):
        np.testing.assert_allclose(b[col], a[col], rtol=1e-6, atol=1e-8)
    post_csv = pd.read_csv(results_dir(mem) / "posteriors.csv")
    post_pq = pd.read_parquet(results_dir(part) / "posteriors")
    assert list(post_pq.columns) == list(post_csv.columns)
    assert list(post_pq["row"]) == list(range(6000))
    np.testing.assert_allclose(post_pq[["p1", "p2"]], post_csv[["p1", "p2"]], atol=1e-7)
    assert (post_pq["class"] == post_csv["class"]).all()
    fj = fit_json(part)
    assert fj["posteriors"] == {"files": 3, "folder": "posteriors", "format": "parquet"}
    assert fj["classification"]["counts"]["modal"] == \
        fit_json(mem)["classification"]["counts"]["modal"]


def test_sample_search_then_refinement_reaches_the_maximum(one_file_run, sampled_run):
    """With a sample smaller than the data the search runs on the sample and the refined estimate is the full-data maximum."""
    mem, part = one_file_run, sampled_run
    fa, fb = fit_json(mem), fit_json(part)
    assert abs(fa["loglik"] - fb["loglik"]) < 1e-6 * abs(fa["loglik"])
    np.testing.assert_allclose(_estimates(part)["estimate"], _estimates(mem)["estimate"],
                               rtol=1e-4, atol=1e-4)
    assert fb["search"]["sample_rows"] == 800 and fb["search"]["refine_iter"] >= 1
    report = (results_dir(part) / "report.md").read_text(encoding="utf-8")
    assert "on a random sample of 800 of the 6000 rows" in report


def test_killed_partitioned_run_resumes_to_identical_files(tmp_path, inputs, sampled_run):
    """A partitioned run SIGKILLed during the refinement resumes to the uninterrupted run's files."""
    args = ("--data", str(inputs / "parts"), "--sample-rows", "800", *FAST)
    ref, run = sampled_run, tmp_path / "run"
    run.mkdir()
    killed = run_script(run, *args, fault="kill:model_estimation:12")
    assert killed.returncode == -9
    check_rc(run_script(run, *args), 0)
    got, want = run_files(results_dir(run)), run_files(results_dir(ref))
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name] == want[name], name


def test_dask_cluster_gives_the_streaming_results(tmp_path, inputs, sampled_run,
                                                  dask_cluster):  # noqa: F811
    """With --scheduler the partitions' E-steps run on Dask workers and the files equal the in-process run's."""
    here, there = sampled_run, tmp_path / "there"
    there.mkdir()
    args = ("--data", str(inputs / "parts"), "--sample-rows", "800", *FAST)
    check_rc(run_script(there, *args, "--scheduler", dask_cluster.scheduler_address), 0)
    got, want = run_files(results_dir(there)), run_files(results_dir(here))
    for name in ("estimates.csv", "covariance.csv"):
        assert got[name] == want[name], name
    assert fit_json(there)["loglik"] == fit_json(here)["loglik"]


def test_changed_files_are_refused_on_resume(tmp_path, inputs):
    """Rewriting a file of a partitioned input between runs stops the resumed run with one sentence."""
    data = tmp_path / "data"
    shutil.copytree(inputs / "parts", data)
    args = ("--data", str(data), *FAST)
    check_rc(run_script(tmp_path, *args, fault="kill:model_estimation:3"), -9)
    frame = pd.read_parquet(data / "p1.parquet")
    frame["a"] = frame["a"] + 1.0
    frame.to_parquet(data / "p1.parquet", row_group_size=1000)
    proc = run_script(tmp_path, *args)
    assert proc.returncode != 0
    assert_one_sentence(proc.stderr)
    assert "--recompute-changed" in proc.stderr or "--restart" in proc.stderr


def test_poisson_bootstrap_over_partitions_equals_the_in_memory_one(tmp_path, inputs):
    """The Poisson bootstrap over a folder of files reweights the same rows as in memory, so its SEs agree with the one-file run's."""
    mem, part = tmp_path / "mem", tmp_path / "part"
    mem.mkdir(), part.mkdir()
    se = ("--se-method", "bootstrap", "--bootstrap", "poisson", "--n-bootstrap", "4")
    check_rc(run_script(mem, "--data", str(inputs / "all.parquet"), *FAST, *se), 0)
    check_rc(run_script(part, "--data", str(inputs / "parts"), *FAST, *se), 0)
    a, b = _estimates(mem), _estimates(part)
    np.testing.assert_allclose(b["se"], a["se"], rtol=1e-5)


def test_nonparametric_bootstrap_on_partitions_is_refused(tmp_path, inputs):
    """Asking partitioned input for the row-resampling bootstrap stops at once with one sentence naming --bootstrap poisson."""
    proc = run_main(tmp_path, "--data", str(inputs / "parts"), "--se-method", "bootstrap",
                    "--lang", "en")
    assert proc.returncode != 0
    assert_one_sentence(proc.stderr)
    assert "--bootstrap poisson" in proc.stderr


def test_class_enumeration_over_partitions_matches_in_memory(tmp_path, inputs):
    """Fitting K = 1..2 over a folder of files gives the one-file run's criteria and choice (VLMR skipped with a note)."""
    mem, part = tmp_path / "mem", tmp_path / "part"
    mem.mkdir(), part.mkdir()
    args = (*FAST, "--components", "1-2")
    check_rc(run_script(mem, "--data", str(inputs / "all.parquet"), *args), 0)
    check_rc(run_script(part, "--data", str(inputs / "parts"), *args), 0)
    a = pd.read_csv(results_dir(mem) / "enumeration.csv")
    b = pd.read_csv(results_dir(part) / "enumeration.csv")
    for col in ("loglik", "bic", "icl", "entropy"):
        np.testing.assert_allclose(b[col], a[col], rtol=1e-9)
    assert list(b["selected"]) == list(a["selected"])
    assert b["vlmr_p"].isna().all() and not a["vlmr_p"].isna().all()
    assert any("VLMR/LMR tests were not computed" in n
               for n in fit_json(part)["enumeration"]["notes"])


def test_lca_goodness_of_fit_over_partitions_equals_in_memory(tmp_path):
    """poLCA's carcinoma data split into two files give the one-file run's G2, X2 and bivariate residuals (the pattern table summed over partitions)."""
    from tests.helpers import ROOT

    frame = pd.read_csv(ROOT / "tests" / "reference" / "carcinoma.csv")
    (tmp_path / "d").mkdir()
    frame.to_parquet(tmp_path / "all.parquet")
    frame.iloc[:60].to_parquet(tmp_path / "d" / "a.parquet")
    frame.iloc[60:].to_parquet(tmp_path / "d" / "b.parquet")
    mem, part = tmp_path / "mem", tmp_path / "part"
    mem.mkdir(), part.mkdir()
    args = ("--model", "lca", *FAST)
    check_rc(run_script(mem, "--data", str(tmp_path / "all.parquet"), *args), 0)
    check_rc(run_script(part, "--data", str(tmp_path / "d"), *args), 0)
    a, b = fit_json(mem), fit_json(part)
    assert b["goodness_of_fit"]["g2"] == pytest.approx(a["goodness_of_fit"]["g2"], rel=1e-9)
    assert b["goodness_of_fit"]["x2"] == pytest.approx(a["goodness_of_fit"]["x2"], rel=1e-9)
    assert b["goodness_of_fit"]["n_patterns"] == a["goodness_of_fit"]["n_patterns"] == 20
    assert json_close(a["bivariate_residuals"], b["bivariate_residuals"])


def json_close(a, b, rel: float = 1e-9) -> bool:
    """Two JSON values equal, numbers to ``rel``."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(json_close(a[k], b[k], rel) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(json_close(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=rel, nan_ok=True)
    return a == b
