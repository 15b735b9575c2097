"""BLRT benchmark: a sweep K = 1..4 of a 3-class LCA against StepMix's ``blrt_sweep``, as ratios.

Data: 3-class LCA, 10 binary items, N = 1e4 (bench_se.py's generator, its own stream).  A sweep
tests 1 vs 2, 2 vs 3 and 3 vs 4 classes with B = 100 replicates each.

Rows (1 process and 1 BLAS thread each unless said; interleaved rounds, StepMix first in odd
rounds and last in even ones; each ratio taken within a round, medians over rounds):

* ``stepmix_1p``: ``stepmix.bootstrap.blrt_sweep`` (per comparison it fits both models to the
  data, then refits both cold to each of the B data sets simulated from the smaller one, each
  fit with its ``n_init`` random starts, default 1), plain EM.
* ``ours_equal_1p`` (**equal work**): per comparison both models fitted to the data, then each
  replicate's fits from ``n_init`` cold random starts (``n_starts = n_init, n_candidates = 0``),
  no warm starts or splits (``warm=False``), all B replicates (no early stopping), plain EM, the
  same tolerance.
* ``ours_default_1p`` (**our defaults**): each K fitted once with the run's default search
  (``n_starts = 10``, ``n_candidates = 50``, ``candidate_iter = 10``, tol 1e-8, SQUAREM), the
  replicates with the same search plus the warm starts (the K-1 estimate, splits of the
  replicate's K-1 fit) and early stopping at alpha = 0.05.  More search per replicate than
  StepMix's single start, fewer replicates.
* ``ours_default_2w``: the same on 2 local worker processes (started before the clock).
* ``ours_warm_equal_1p``: StepMix's search (``n_init`` cold starts, plain EM) plus our warm
  starts and early stopping: what warm starts and stopping save at equal search.

Our rows run the project's code as a user gets it: the LCA's E-step on its distinct answer
patterns and, for such data, the starts of a fit in lockstep (benchmarks/README.md, BLRT).

Tolerance: ours stops when ``|l_t - l_{t-1}| < tol |l_t|`` (tol 1e-8, our default); StepMix
when the change of the *mean* log-likelihood is below ``abs_tol``, so it gets ``tol * |l| / N``
with ``l`` our 3-class log-likelihood (the translation of bench_se.py, reversed: StepMix's
default 1e-10 would run every null refit to max_iter = 1000).

Run: ``PYTHONPATH=. python benchmarks/bench_blrt.py [--quick] [--rounds 1] [--n 1e4] [--replicates 100]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import time
import warnings

import numpy as np
from threadpoolctl import threadpool_limits

from src.estimation.em import fit_em
from src.models.lca import LatentClassModel
from src.parallel.executors import make_executor
from src.selection.blrt import blrt_test
from src.utils.rng import stream

ALPHA = 0.05
#: our default search (src/config.py and src/estimation/starts.py defaults)
DEFAULT_SEARCH = {"n_starts": 10, "n_candidates": 50, "candidate_iter": 10, "tol": 1e-8,
                  "max_iter": 1000, "accelerate": "squarem"}


def lca_data(n: int, items: int = 10) -> np.ndarray:
    """bench_se.py's 3-class LCA (weights 0.5/0.3/0.2), drawn from its own stream."""
    rng = stream(0, "bench-blrt-lca")
    weights = np.array([0.5, 0.3, 0.2])
    probs = np.array([np.linspace(0.85, 0.7, items), np.linspace(0.2, 0.8, items),
                      np.linspace(0.15, 0.3, items)])
    z = rng.choice(3, size=n, p=weights)
    return (rng.random((n, items)) < probs[z]).astype(np.int64)


def lca(k: int, Y: np.ndarray) -> LatentClassModel:
    m = LatentClassModel(k)
    m.setup(LatentClassModel.meta_from_array(Y))
    return m


def run_stepmix(Y: np.ndarray, kmax: int, B: int, n_init: int, abs_tol: float) -> dict:
    from stepmix import StepMix
    from stepmix.bootstrap import blrt_sweep

    model = StepMix(n_components=1, measurement="binary", verbose=0, progress_bar=0,
                    n_init=n_init, abs_tol=abs_tol, max_iter=1000, random_state=7)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        df = blrt_sweep(model, Y, low=1, high=kmax, n_repetitions=B, random_state=7,
                        verbose=False)
    return {"p": [float(p) for p in df["p"]]}


def run_ours(Y: np.ndarray, kmax: int, B: int, search: dict, *, warm: bool, early_stop: bool,
             refit_each_comparison: bool, executor=None) -> dict:
    """Observed fits and the K-1 vs K tests for K = 2..kmax; p-values, replicates used, ..."""
    data = {"Y": Y}
    fits: dict[int, dict] = {}

    def fit(k: int) -> dict:
        return fit_em(lca(k, Y), data, seed=11 + k, **search).to_dict()

    out = {"p": [], "n_done": [], "stopped": [], "n_refitted": [], "statistic": []}
    for k in range(2, kmax + 1):
        if refit_each_comparison:  # as blrt_sweep: both models fitted for every comparison
            small, big = fit(k - 1), fit(k)
        else:  # as the pipeline: every K fitted once
            for j in (k - 1, k):
                if j not in fits:
                    fits[j] = fit(j)
            small, big = fits[k - 1], fits[k]
        res = blrt_test(lca(k - 1, Y), lca(k, Y), data, small, big, n_replicates=B, seed=5,
                        alpha=ALPHA, early_stop=early_stop, fit_options=search, warm=warm,
                        executor=executor)
        out["p"].append(res.p_value)
        out["n_done"].append(res.n_done)
        out["stopped"].append(res.stop_rule)
        out["n_refitted"].append(res.n_refitted)
        out["statistic"].append(res.statistic)
    return out


def bench(n: int, B: int, kmax: int, n_init: int, rounds: int) -> dict:
    Y = lca_data(n)
    limit = threadpool_limits(1)
    ref = fit_em(lca(3, Y), {"Y": Y}, seed=1, **DEFAULT_SEARCH)
    mean_ll = ref.loglik / n
    tol = DEFAULT_SEARCH["tol"]
    abs_tol = tol * abs(mean_ll)
    equal = {"n_starts": n_init, "n_candidates": 0, "tol": tol, "max_iter": 1000,
             "accelerate": "none"}
    rows = {
        "ours_equal_1p": dict(search=equal, warm=False, early_stop=False, refit_each_comparison=True),
        "ours_default_1p": dict(search=DEFAULT_SEARCH, warm=True, early_stop=True,
                                refit_each_comparison=False),
        "ours_warm_equal_1p": dict(search=equal, warm=True, early_stop=True,
                                   refit_each_comparison=False),
    }
    times: dict[str, list[float]] = {name: [] for name in ("stepmix_1p", *rows, "ours_default_2w")}
    results: dict[str, dict] = {}
    loads = []
    for rnd in range(rounds):
        loads.append(os.getloadavg()[0])

        def stepmix() -> None:
            t0 = time.perf_counter()
            results["stepmix_1p"] = run_stepmix(Y, kmax, B, n_init, abs_tol)
            times["stepmix_1p"].append(time.perf_counter() - t0)

        if rnd % 2 == 0:
            stepmix()
        for name, kw in rows.items():
            t0 = time.perf_counter()
            results[name] = run_ours(Y, kmax, B, **kw)
            times[name].append(time.perf_counter() - t0)
        with make_executor(2) as ex:
            ex.wait_ready()
            t0 = time.perf_counter()
            results["ours_default_2w"] = run_ours(Y, kmax, B, executor=ex, **rows["ours_default_1p"])
            times["ours_default_2w"].append(time.perf_counter() - t0)
        if rnd % 2 == 1:
            stepmix()
        loads.append(os.getloadavg()[0])
        print(f"# round {rnd + 1}/{rounds}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()),
              file=sys.stderr, flush=True)
    limit.restore_original_limits()

    def ratio(a: str, b: str = "stepmix_1p") -> dict:
        r = np.array(times[a]) / np.array(times[b])
        return {"median": float(np.median(r)), "min": float(r.min()), "max": float(r.max())}

    return {
        "n": n, "items": Y.shape[1], "B": B, "comparisons": [f"{k - 1} vs {k}" for k in range(2, kmax + 1)],
        "rounds": rounds, "stepmix_n_init": n_init, "ours_tol": tol, "stepmix_abs_tol": abs_tol,
        "mean_loglik_3_classes": mean_ll,
        "seconds_median": {k: float(np.median(v)) for k, v in times.items()},
        "seconds_all": times,
        "load_average_1min": {"min": min(loads), "max": max(loads)},
        "ratios_to_stepmix": {
            "ours_equal_1p (EQUAL WORK: n_init cold starts, plain EM, all B, no warm starts)": ratio("ours_equal_1p"),
            "ours_default_1p (OUR DEFAULTS: 10 starts + 50 candidates, SQUAREM, warm starts, early stop)": ratio("ours_default_1p"),
            "ours_default_2w (our defaults on 2 workers)": ratio("ours_default_2w"),
            "ours_warm_equal_1p (StepMix's search + warm starts + early stop)": ratio("ours_warm_equal_1p")},
        "speedup_1_to_2_workers_default": ratio("ours_default_1p", "ours_default_2w"),
        "results": results,
        "identical_1_vs_2_workers": results["ours_default_1p"] == results["ours_default_2w"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="N = 2000, B = 20: a smoke run")
    ap.add_argument("--n", type=float, default=None, help="rows (default 1e4)")
    ap.add_argument("--replicates", type=int, default=None, help="B per comparison (default 100)")
    ap.add_argument("--n-init", type=int, default=1, help="StepMix's n_init = our cold starts in the equal-work row")
    ap.add_argument("--kmax", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--json", default=None, help="also write the report here")
    args = ap.parse_args()
    n = int(args.n) if args.n else (2000 if args.quick else 10_000)
    B = args.replicates or (20 if args.quick else 100)
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.platform(),
              "cpus": os.cpu_count(), "python": platform.python_version(),
              "blrt_lca": bench(n, B, args.kmax, args.n_init, args.rounds)}
    text = json.dumps(report, indent=2, default=float)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text)
    print(text)


if __name__ == "__main__":
    main()
