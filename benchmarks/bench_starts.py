"""Starting values: how often a default run reaches the best known maximum, before and after.

For each case, 20 seeds (1..20) are fitted with the default settings twice: **before** =
``--n-candidates 0`` (the previous policy: ``--n-starts`` random starts, each run to
convergence) and **after** = the default multi-stage search (:mod:`src.estimation.starts`).
A run *reaches* the best known maximum when its log-likelihood is within 1e-3 of it; the
best known maximum is the best unflagged start of one 1,000-start run with the same model
options (1,000 candidates of every kind, each run to convergence, seed 0), cached in
``benchmarks/out/starts/reference.json`` (``--recompute-reference`` redoes it).  A run that
ends *above* the reference by more than 1e-3 is counted and reported (the reference was not
the best).  Times: wall time of each default fit (in process, 1 BLAS thread, SQUAREM as the
script's default), before and after alternating per seed; the table gives the medians and
the median of the per-seed ratios after / before.  With ``--baseline-tree DIR`` (a copy of
``src/`` from before this search existed, e.g. ``git archive 39cb999 src | tar -x -C DIR``)
a worker process running that code fits each seed too, between the two, so the **today**
column is the previous release's own default time (its driver also re-scanned the BLAS
libraries twice per start) and the ratio after / today is the issue's target (<= 2).

Cases (generators and seeds fixed here): iris K=3 (full covariances, the 4 measurements),
Old Faithful K=2, 3, 4 (full), a simulated overlapping 2-D Gaussian mixture (K=4, N=600),
a simulated LCA (K=3, 8 binary items, N=1000, overlapping profiles) and a simulated
mixture of 3 crossing regression lines (N=300).

Run: ``PYTHONPATH=. .venv/bin/python benchmarks/bench_starts.py [--seeds 20]
[--cases "iris K=3,faithful K=4"] [--baseline-tree /tmp/today]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from src.estimation.em import fit_em   # only what the baseline tree has too
from src.models.gmm import GaussianMixtureModel
from src.models.lca import LatentClassModel
from src.models.mixreg import MixtureRegressionModel
from src.utils.rng import stream

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out" / "starts"
REACHED = 1e-3
#: the script's defaults for the EM (src/config.py)
DEFAULTS = dict(n_starts=10, tol=1e-8, max_iter=1000, accelerate="squarem", chunk_size=4096)


def _gmm(X: np.ndarray, K: int):
    m = GaussianMixtureModel(K)
    m.setup(GaussianMixtureModel.meta_for_array(X))
    return m, {"X": X}


def iris(K: int = 3):
    X = pd.read_csv(ROOT / "src/data/builtin/iris.csv").iloc[:, :4].to_numpy(float)
    return _gmm(X, K)


def faithful(K: int):
    X = pd.read_csv(ROOT / "src/data/builtin/faithful.csv").to_numpy(float)
    return _gmm(X, K)


def sim_gmm():
    """4 overlapping 2-D Gaussians with unequal, correlated covariances, N = 600."""
    rng = stream(1, "bench-starts-gmm")
    means = np.array([[0.0, 0.0], [2.0, 1.0], [0.5, 2.5], [3.0, 3.0]])
    n = 600
    z = rng.choice(4, size=n, p=[0.35, 0.3, 0.2, 0.15])
    A = rng.normal(size=(4, 2, 2)) * 0.6 + np.eye(2) * 0.5
    X = means[z] + np.einsum("nij,nj->ni", A[z], rng.standard_normal((n, 2)))
    return _gmm(X, 4)


def sim_lca():
    """3 classes, 8 binary items, overlapping profiles, N = 1000."""
    rng = stream(1, "bench-starts-lca")
    p = np.array([[0.8, 0.8, 0.7, 0.7, 0.6, 0.3, 0.3, 0.2],
                  [0.3, 0.4, 0.7, 0.8, 0.8, 0.7, 0.3, 0.3],
                  [0.2, 0.2, 0.3, 0.3, 0.4, 0.6, 0.8, 0.8]])
    n = 1000
    z = rng.choice(3, size=n, p=[0.45, 0.35, 0.2])
    Y = (rng.random((n, 8)) < p[z]).astype(np.int64)
    m = LatentClassModel(3)
    m.setup(LatentClassModel.meta_from_array(Y))
    return m, {"Y": Y}


def sim_mixreg():
    """3 crossing lines y = a + b x + e (sigmas 0.5, 0.7, 0.4), x ~ U(0, 10), N = 300."""
    rng = stream(1, "bench-starts-mixreg")
    n = 300
    x = rng.uniform(0, 10, n)
    z = rng.choice(3, size=n, p=[0.4, 0.35, 0.25])
    a, b, s = np.array([0.0, 5.0, 2.0]), np.array([1.0, -0.5, 0.2]), np.array([0.5, 0.7, 0.4])
    y = a[z] + b[z] * x + s[z] * rng.standard_normal(n)
    X = np.column_stack([np.ones(n), x])
    m = MixtureRegressionModel(3)
    m.setup({"predictors": ["intercept", "x"], "target": "y", "intercept": True,
             **MixtureRegressionModel.shifts_of(X, y, True)})
    return m, {"X": X, "y": y}


CASES = {
    "iris K=3": iris,
    "faithful K=2": lambda: faithful(2),
    "faithful K=3": lambda: faithful(3),
    "faithful K=4": lambda: faithful(4),
    "sim gmm K=4": sim_gmm,
    "sim lca K=3": sim_lca,
    "sim mixreg K=3": sim_mixreg,
}


def fit(model, data, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        res = fit_em(model, data, **{**DEFAULTS, **kw})
        return res, time.perf_counter() - t0


def reference(name: str, recompute: bool) -> dict:
    """Best unflagged log-likelihood of a 1,000-start run (cached)."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "reference.json"
    cache = json.loads(path.read_text()) if path.exists() else {}
    from src.models.gmm import DEGENERATE_FRACTION  # what counts as degenerate changes the best
    key = f"{name} | {json.dumps(DEFAULTS, sort_keys=True)} | {DEGENERATE_FRACTION}"
    if key not in cache or recompute:
        model, data = CASES[name]()
        res, sec = fit(model, data, n_starts=1000, n_candidates=1000, seed=0)
        cache[key] = {"loglik": res.loglik, "seconds": sec, "maxima": res.replication["maxima"][:8],
                      "flags": res.flags, "kind": res.start_kinds[res.best_start]}
        path.write_text(json.dumps(cache, indent=2, sort_keys=True))
    return cache[key]


def baseline_worker(name: str) -> None:
    """Run in a process whose ``src`` is the baseline tree: one default fit per seed read
    from stdin, its log-likelihood and time written as one JSON line."""
    model, data = CASES[name]()
    fit(model, data, seed=0, n_starts=2)  # warm-up: lazy imports
    print("ready", flush=True)
    for line in sys.stdin:
        res, sec = fit(model, data, seed=int(line))
        print(json.dumps({"loglik": res.loglik, "seconds": sec}), flush=True)


class Baseline:
    """The baseline tree's worker for one case (None when no tree is given)."""

    def __init__(self, tree: str | None, name: str) -> None:
        self.proc = None
        if tree:
            env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{ROOT / 'benchmarks'}"}
            code = f"import bench_starts as b; b.baseline_worker({name!r})"
            self.proc = subprocess.Popen([sys.executable, "-c", code], env=env, text=True,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=tree)
            assert self.proc.stdout.readline().strip() == "ready"

    def fit(self, seed: int) -> tuple[float, float] | None:
        if self.proc is None:
            return None
        self.proc.stdin.write(f"{seed}\n")
        self.proc.stdin.flush()
        out = json.loads(self.proc.stdout.readline())
        return out["loglik"], out["seconds"]

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stdin.close()
            self.proc.wait()


def run_case(name: str, seeds: list[int], recompute: bool, tree: str | None = None) -> dict:
    ref = reference(name, recompute)
    best = ref["loglik"]
    model, data = CASES[name]()
    fit(model, data, seed=0, n_candidates=2, n_starts=2)  # warm-up: lazy imports
    baseline = Baseline(tree, name)
    rows = []
    try:
        for i, seed in enumerate(seeds):
            order = ("before", "today", "after") if i % 2 == 0 else ("after", "today", "before")
            out = {}
            for which in order:
                if which == "today":
                    got = baseline.fit(seed)
                    if got is not None:
                        out["today"] = (got[0], got[1], "random", False)
                    continue
                kw = {"n_candidates": 0} if which == "before" else {}
                res, sec = fit(model, data, seed=seed, **kw)
                out[which] = (res.loglik, sec, res.start_kinds[res.best_start], bool(res.flags))
            rows.append(out)
    finally:
        baseline.close()
    summary = {"case": name, "reference": best, "reference_seconds": ref["seconds"]}
    if tree:
        lls = np.array([r["today"][0] for r in rows])
        summary["today_reached"] = int(np.sum(np.abs(lls - best) <= REACHED))
        summary["today_seconds"] = float(np.median([r["today"][1] for r in rows]))
        summary["today_ratio"] = float(np.median([r["after"][1] / r["today"][1] for r in rows]))
    for which in ("before", "after"):
        lls = np.array([r[which][0] for r in rows])
        summary[f"{which}_reached"] = int(np.sum(np.abs(lls - best) <= REACHED))
        summary[f"{which}_above"] = int(np.sum(lls > best + REACHED))
        summary[f"{which}_seconds"] = float(np.median([r[which][1] for r in rows]))
        summary[f"{which}_maxima"] = sorted({round(float(v), 3) for v in lls}, reverse=True)
    summary["time_ratio"] = float(np.median([r["after"][1] / r["before"][1] for r in rows]))
    kinds: dict[str, int] = {}
    for r in rows:
        kinds[r["after"][2]] = kinds.get(r["after"][2], 0) + 1
    summary["after_best_kinds"] = kinds
    summary["n_seeds"] = len(seeds)
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--recompute-reference", action="store_true")
    ap.add_argument("--json", default=str(OUT / "results.json"))
    ap.add_argument("--baseline-tree", default=None,
                    help="a folder holding the previous release's src/ (timed as 'today')")
    args = ap.parse_args()
    from src.estimation.starts import DEFAULT_CANDIDATE_ITER, DEFAULT_N_CANDIDATES

    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    seeds = list(range(1, args.seeds + 1))
    tree = args.baseline_tree
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, {platform.node()}, nproc {os.cpu_count()}, "
          f"load {os.getloadavg()[0]:.2f}, python {sys.version.split()[0]}, numpy {np.__version__}; "
          f"defaults n_starts {DEFAULTS['n_starts']}, n_candidates {DEFAULT_N_CANDIDATES}, "
          f"candidate_iter {DEFAULT_CANDIDATE_ITER}", flush=True)
    print("| case | best known | today: reached | before: reached | after: reached | today s | "
          "before s | after s | after/today | after/before | after's best start kind |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    results = []
    for name in names:
        s = run_case(name, seeds, args.recompute_reference, tree)
        results.append(s)
        above = "".join(f" ({s[w + '_above']} above)" for w in ("before", "after") if s[w + "_above"])
        today = (f"{s['today_seconds']:.3f}", f"{s['today_ratio']:.2f}") if tree else ("", "")
        today_reached = f"{s['today_reached']}/{s['n_seeds']}" if tree else ""
        print(f"| {name} | {s['reference']:.5f} | {today_reached} | {s['before_reached']}/{s['n_seeds']} | "
              f"{s['after_reached']}/{s['n_seeds']}{above} | {today[0]} | {s['before_seconds']:.3f} | "
              f"{s['after_seconds']:.3f} | {today[1]} | {s['time_ratio']:.2f} | "
              f"{', '.join(f'{k} {v}' for k, v in sorted(s['after_best_kinds'].items()))} |",
              flush=True)
    print(f"# load at the end {os.getloadavg()[0]:.2f}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
