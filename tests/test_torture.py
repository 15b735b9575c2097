"""The torture test's short setting: real runs SIGKILLed at random moments, resumed, compared.

``benchmarks/torture.py`` runs the main script uninterrupted once, then SIGKILLs (the whole
process group) and restarts it until it completes, and checks the outputs against the
uninterrupted run, that no process and no temporary file is left.  Here: 4 configurations
x 3 kills (gmm and lca, 1 and 2 workers, ``--save-interval`` 0 and above 0), each in a
subprocess, each asserting the script reports success.  A self-test first makes sure the
checks do catch what they look for (a leftover process, temporary files, a changed
output), so a pass is not vacuous.  The long setting runs on demand (docs/progress.md).
``--snapshot``: each torture run copies ``src/`` and ``scripts/`` once at its start, so its
reference and its tortured runs use the same code even in a checkout being edited.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TORTURE = ROOT / "benchmarks" / "torture.py"

GMM = ("--n-starts", "3", "--se-method", "all", "--n-bootstrap", "30")
LCA = ("--model", "lca", "--n-starts", "3", "--se-method", "all", "--n-bootstrap", "30")

# id, workers, save interval, command arguments, seed of the kill delays
CONFIGS = [
    ("gmm-w1-si0", 1, 0, GMM, 11),
    ("gmm-w2-si0.3", 2, 0.3, GMM, 12),
    ("lca-w1-si0.3", 1, 0.3, LCA, 13),
    ("lca-w2-si0", 2, 0, LCA, 14),
]
KILLS = 3


def _torture(tmp_path: Path, *args: str, timeout: float = 300) -> tuple[subprocess.CompletedProcess, dict]:
    report = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if k != "EM_PIPELINE_FAULT"}
    proc = subprocess.run([sys.executable, str(TORTURE), "--work-dir", str(tmp_path / "work"),
                           "--keep", "--quiet", "--report-json", str(report), *args],
                          capture_output=True, text=True, timeout=timeout, env=env)
    data = json.loads(report.read_text()) if report.exists() else {}
    return proc, data


@pytest.mark.slow  # CI's first step runs it; its drift step (-m "not slow") leaves it out
@pytest.mark.parametrize("workers,save_interval,args,seed", [c[1:] for c in CONFIGS],
                         ids=[c[0] for c in CONFIGS])
def test_torture_short(tmp_path, workers, save_interval, args, seed):
    proc, rep = _torture(tmp_path, "--snapshot", "--kills", str(KILLS), "--seed", str(seed),
                         "--workers", str(workers), "--save-interval", str(save_interval),
                         "--", *args)
    assert proc.returncode == 0, f"torture failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    assert rep["ok"] and rep["kills"] == KILLS and rep["cycles_compared"] >= 1, proc.stdout
    assert rep["restarts"] >= KILLS


# ------------------------------------------------------------------ the checks catch things
FAKE = textwrap.dedent('''
    """A stand-in for the main script that leaves everything the torture test looks for."""
    import os, subprocess, sys, time
    from pathlib import Path
    out = Path("results/main_estimation"); out.mkdir(parents=True, exist_ok=True)
    prog = Path("progress"); prog.mkdir(exist_ok=True)
    (prog / ".tmp-main_estimation_progress.json.abcdefgh").write_text("half")
    Path(os.environ["TMPDIR"], "pymp-fake").mkdir(exist_ok=True)
    # em-{kind}-{pid}-...: what the torture test looks for; a kind the pipeline's clean-up
    # never removes, so an executor starting meanwhile (another test process's) cannot
    # delete this dead process's file before the check sees it
    shm = Path("/dev/shm", f"em-fake-{os.getpid()}-selftest.pkl")
    if Path("/dev/shm").is_dir():
        shm.write_bytes(b"x")
    # a child that leaves the session, so a group kill misses it
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    time.sleep(0.3)
    (out / "estimates.csv").write_text("parameter,estimate\\nmu,1.0\\n")
    (out / "fit.json").write_text('{"a": 1, "seconds": %f, "b": %d}' % (time.time(), 2 if Path.cwd().name == "reference" else 3))
''')


def test_checks_catch_leftovers_and_differences(tmp_path):
    fake = tmp_path / "fake.py"
    fake.write_text(FAKE)
    proc, rep = _torture(tmp_path, "--script", str(fake), "--kills", "1", "--seed", "1",
                         "--min-delay", "0.05", "--max-delay", "0.1", "--grace", "0.5", timeout=120)
    try:
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert not rep["ok"]
        assert rep["kills"] == 1
        # fit.json: "seconds" ignored, "b" differs (the fake writes 2 only in the reference)
        assert [m["file"] for m in rep["mismatches"]] == ["fit.json"]
        assert '"b": 3' in rep["mismatches"][0]["diff"]
        assert rep["ignored_keys"] == ["seconds"]
        assert len(rep["processes_left"]) >= 2  # the escaped child of the reference and the kill
        left = " ".join(f["path"] for f in rep["temp_files_left"])
        assert ".tmp-main_estimation_progress.json.abcdefgh" in left
        assert "pymp-fake" in left
        if Path("/dev/shm").is_dir():
            assert "-selftest.pkl" in left
    finally:  # the fake's files (the killed run's included: named by its pid)
        for f in rep.get("temp_files_left", []):
            if f["path"].startswith("/dev/shm/em-fake-") and f["path"].endswith("-selftest.pkl"):
                Path(f["path"]).unlink(missing_ok=True)
