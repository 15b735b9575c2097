"""Louis' method on a Gaussian mixture, in units of one EM iteration (target <= 20).

N=1e5 (default), D=10, K=5, full covariances (P=329), 1 BLAS thread; the same data as
``bench_se.py``.  Both times are measured in this process, in interleaved rounds; the
figure is the median of the rounds' ratios.  ``--check`` also runs the generic per-row path of ``louis_information``
(the model's dense complete_score) and prints the largest relative difference of I_obs.

Run: ``PYTHONPATH=. python benchmarks/bench_louis_gmm.py [--n 100000] [--check]``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from threadpoolctl import threadpool_limits

from src.estimation.em import em_map, fit_em
from src.inference import louis
from src.models.gmm import GaussianMixtureModel
from src.utils.rng import stream


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def fitted(n: int, D: int = 10, K: int = 5):
    """The benchmark mixture of ``bench_se.py``: data, model and the EM estimate."""
    rng = stream(0, "bench-se-gmm")
    centers = rng.normal(0.0, 4.0, (K, D))
    z = rng.integers(0, K, n)
    X = centers[z] + rng.normal(size=(n, D)) @ np.diag(rng.uniform(0.5, 1.5, D))
    model = GaussianMixtureModel(K)
    model.setup(GaussianMixtureModel.meta_for_array(X))
    init = {"weight": np.full(K, 1.0 / K), "mean": centers, "cov": np.array([np.eye(D)] * K)}
    fit = fit_em(model, {"X": X}, init_params=init, tol=1e-10, max_iter=5000)
    return model, {"X": X}, fit.params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--check", action="store_true", help="compare with the generic path")
    args = ap.parse_args()
    model, data, params = fitted(args.n)
    with threadpool_limits(1):
        # interleaved (3 EM iterations, one Louis) rounds: on a shared machine the load
        # drifts, so each round's ratio compares times taken a moment apart
        iters, louis_times = [], []
        for _ in range(args.repeats):
            iters.append(median_time(lambda: em_map(model, data, params), 3))
            louis_times.append(median_time(lambda: louis.louis_se(model, data, params), 1))
        ratios = np.array(louis_times) / np.array(iters)
        out = {"n": args.n, "P": int(model.to_free(params).size),
               "em_iteration_s": float(np.median(iters)), "louis_s": float(np.median(louis_times)),
               "louis_in_em_iterations": float(np.median(ratios)),
               "ratio_min_max": [float(ratios.min()), float(ratios.max())]}
        if args.check:
            fast, fast_c = louis.louis_information(model, data, params)
            slow, slow_c = louis.louis_information(model, data, params, use_fast=False)
            scale = np.abs(slow).max()
            out["max_abs_diff_I_obs_over_max"] = float(np.abs(fast - slow).max() / scale)
            d = np.sqrt(np.outer(np.diag(slow), np.diag(slow)))
            out["max_diff_I_obs_over_sqrt_diag"] = float(np.abs(fast - slow).max() / d.min())
            out["max_abs_diff_I_c_over_max"] = float(np.abs(fast_c - slow_c).max() / np.abs(slow_c).max())
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
