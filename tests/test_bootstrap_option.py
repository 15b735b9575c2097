"""--bootstrap-start through the main script: declared once by the SE method, saved, and
treated on resume like every other option."""

from __future__ import annotations

import json

from tests.helpers import FAST
from tests.inprocess import run_main

BOOT = FAST + ("--se-method", "bootstrap", "--n-bootstrap", "4", "--lang", "en")


def _bootstrap_extra(run_dir):
    return json.loads(next(run_dir.rglob("fit.json")).read_text(encoding="utf-8"))["se_bootstrap"]


def test_changed_start_is_refused_then_recomputed(tmp_path):
    """A finished run rerun with another --bootstrap-start is refused naming the option, and --recompute-changed redoes only the standard errors with it."""
    first = run_main(tmp_path, *BOOT)
    assert first.returncode == 0, first.stderr
    assert _bootstrap_extra(tmp_path)["bootstrap_start"] == "estimate"
    refused = run_main(tmp_path, *BOOT, "--bootstrap-start", "random")
    assert refused.returncode == 3
    assert "bootstrap_start: 'estimate' -> 'random'" in refused.stderr
    again = run_main(tmp_path, *BOOT, "--bootstrap-start", "random", "--recompute-changed")
    assert again.returncode == 0, again.stderr
    assert "Phase 'model_estimation' already completed, skipping" in again.stdout
    extra = _bootstrap_extra(tmp_path)
    assert (extra["bootstrap_start"], extra["bootstrap_n_starts"], extra["n_ok"]) == ("random", 2, 4)
