"""Every model family runs end to end through the main script, with every SE method."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "02_run_estimation.py"


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--lang", "en", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)


def estimates(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as fh:
        return {row["parameter"]: row for row in csv.DictReader(fh)}


class TestModelsThroughScript:
    def test_lca_carcinoma_all_se(self, tmp_path):
        """LCA on poLCA's carcinoma data reaches its published log-likelihood, with three SEs."""
        r = run(tmp_path, "--model", "lca", "--data", str(ROOT / "tests/reference/carcinoma.csv"),
                "--components", "2", "--se-method", "all", "--n-bootstrap", "20", "--n-starts", "5",
                "--output-dir", "out")
        assert r.returncode == 0, r.stderr
        fit = json.loads((tmp_path / "out/fit.json").read_text())
        assert fit["loglik"] == pytest.approx(-317.2568, abs=1e-3)
        est = estimates(tmp_path / "out/estimates.csv")
        assert "prob[1,A,1]" in est and "prob[2,G,2]" in est
        assert {"se_louis", "se_numerical", "se_bootstrap"} <= set(next(iter(est.values())))

    def test_mixreg_on_builtin_data(self, tmp_path):
        """A mixture of regressions of waiting on eruptions runs on the built-in data."""
        r = run(tmp_path, "--model", "mixreg", "--target", "waiting", "--components", "2",
                "--se-method", "numerical", "--output-dir", "out", "--no-progress-tracking")
        assert r.returncode == 0, r.stderr
        est = estimates(tmp_path / "out/estimates.csv")
        assert {"coef[1,intercept]", "coef[1,eruptions]", "sigma[2]"} <= set(est)
        assert not (tmp_path / "progress").exists()

    def test_user_model_file(self, tmp_path):
        """A user-defined model given as file.py:Class runs with Louis SEs from numerical derivatives."""
        spec = f"{ROOT / 'examples/user_models/exponential_mixture.py'}:ExponentialMixture"
        r = run(tmp_path, "--model", spec, "--columns", "waiting", "--components", "1",
                "--output-dir", "out")
        assert r.returncode == 0, r.stderr
        est = estimates(tmp_path / "out/estimates.csv")
        rate = float(est["rate[1]"]["estimate"])
        waiting = [float(row["waiting"]) for row in csv.DictReader(open(ROOT / "src/data/builtin/faithful.csv"))]
        n, mean = len(waiting), sum(waiting) / len(waiting)
        assert rate == pytest.approx(1 / mean, rel=1e-6)
        assert float(est["rate[1]"]["se"]) == pytest.approx(rate / n ** 0.5, rel=1e-4)

    def test_lca_without_data_is_usage_error(self, tmp_path):
        """LCA has no built-in data: one sentence, exit 2, no traceback."""
        r = run(tmp_path, "--model", "lca")
        assert r.returncode == 2
        assert "--data" in r.stderr and "Traceback" not in r.stderr


def test_workers_do_not_change_results(tmp_path):
    """Random starts and bootstrap replicates on 2 worker processes give the 1-worker bytes."""
    common = ["--se-method", "bootstrap", "--n-bootstrap", "16", "--n-starts", "4",
              "--no-progress-tracking"]
    one = run(tmp_path, *common, "--output-dir", "one")
    two = run(tmp_path, *common, "--workers", "2", "--output-dir", "two")
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    assert (tmp_path / "one/estimates.csv").read_bytes() == (tmp_path / "two/estimates.csv").read_bytes()
