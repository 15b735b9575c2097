"""Standard-error benchmarks, side by side in one run, reported as ratios.

1. Louis' method against the numerical Hessian on a Gaussian mixture, N=1e5, D=10, K=5,
   full covariances (P=329); Louis' time in units of one EM iteration (target <= 20).
   (``bench_louis_gmm.py`` times Louis alone, in interleaved rounds, and checks it against
   the per-row path.)  The numerical Hessian needs 2P gradient evaluations; by default 20
   of them are timed and the total extrapolated (``--full-numerical`` runs all 658).
2. A 100-replicate nonparametric bootstrap of a 3-class LCA (10 binary items, N=1e4)
   against StepMix 3.0's ``bootstrap_stats`` on the same data (target <= 0.2 of StepMix's
   time, ours on 2 worker processes).
3. The bootstrap's speed-up from 1 to 2 workers (target >= 1.8).

Run: ``PYTHONPATH=. python benchmarks/bench_se.py [--quick] [--full-numerical]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
from threadpoolctl import threadpool_limits

from src.estimation.em import em_map, fit_em
from src.inference.bootstrap import bootstrap_se
from src.inference.louis import louis_se
from src.inference.numerical import observed_score
from src.models.gmm import GaussianMixtureModel
from src.models.lca import LatentClassModel
from src.parallel.executors import make_executor
from src.utils.rng import stream


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def bench_louis(n: int, full_numerical: bool) -> dict:
    rng = stream(0, "bench-se-gmm")
    D, K = 10, 5
    centers = rng.normal(0.0, 4.0, (K, D))
    z = rng.integers(0, K, n)
    X = centers[z] + rng.normal(size=(n, D)) @ np.diag(rng.uniform(0.5, 1.5, D))
    model = GaussianMixtureModel(K)
    model.setup(GaussianMixtureModel.meta_for_array(X))
    data = {"X": X}
    init = {"weight": np.full(K, 1.0 / K), "mean": centers, "cov": np.array([np.eye(D)] * K)}
    fit = fit_em(model, data, init_params=init, tol=1e-10, max_iter=5000)
    params = fit.params
    with threadpool_limits(1):
        t_iter = median_time(lambda: em_map(model, data, params), 5)
        theta = model.to_free(params)
        t_grad = median_time(lambda: observed_score(model, data, theta), 3)
    t_louis = median_time(lambda: louis_se(model, data, params), 3)
    P = theta.size
    out = {"n": n, "D": D, "K": K, "P": P, "em_converged": fit.converged,
           "em_iteration_s": t_iter, "louis_s": t_louis, "louis_in_em_iterations": t_louis / t_iter,
           "gradient_evaluation_s": t_grad,
           "louis_max_fraction_missing_info": louis_se(model, data, params).extra[
               "max_fraction_missing_info"]}
    if full_numerical:
        from src.inference.numerical import numerical_se
        t0 = time.perf_counter()
        num = numerical_se(model, data, params)
        out["numerical_s"] = time.perf_counter() - t0
        lou = louis_se(model, data, params)
        out["max_rel_diff_se"] = float(np.nanmax(np.abs(num.se - lou.se) / lou.se))
        out["numerical_measured"] = True
    else:
        out["numerical_s"] = 2 * P * t_grad  # 2P gradient evaluations, each timed above
        out["numerical_measured"] = False
    out["numerical_over_louis"] = out["numerical_s"] / t_louis
    return out


def lca_data(n: int) -> tuple[LatentClassModel, dict, np.ndarray]:
    rng = stream(0, "bench-se-lca")
    J, K = 10, 3
    weights = np.array([0.5, 0.3, 0.2])
    probs = np.array([np.linspace(0.85, 0.7, J), np.linspace(0.2, 0.8, J),
                      np.linspace(0.15, 0.3, J)])  # P(answer = 1) per class and item
    z = rng.choice(K, size=n, p=weights)
    Y = (rng.random((n, J)) < probs[z]).astype(np.int64)
    model = LatentClassModel(K)
    model.setup(LatentClassModel.meta_from_array(Y))
    return model, {"Y": Y}, Y


def bench_bootstrap(n: int, B: int) -> dict:
    model, data, Y = lca_data(n)
    fit = fit_em(model, data, n_starts=10, tol=1e-8, max_iter=5000, seed=1)
    params = fit.params
    out = {"n": n, "B": B, "items": Y.shape[1], "K": model.n_components}
    t0 = time.perf_counter()
    one = bootstrap_se(model, data, params, n_bootstrap=B, seed=3)
    out["ours_1_worker_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with make_executor(2) as ex:
        two = bootstrap_se(model, data, params, n_bootstrap=B, seed=3, executor=ex)
    out["ours_2_workers_s"] = time.perf_counter() - t0  # including starting the pool
    with make_executor(2) as ex:
        ex.wait_ready()  # workers already up, as when the pipeline starts them early
        t1 = time.perf_counter()
        bootstrap_se(model, data, params, n_bootstrap=B, seed=3, executor=ex)
        out["ours_2_workers_warm_s"] = time.perf_counter() - t1
    out["identical_1_vs_2_workers"] = bool(np.array_equal(one.se, two.se))
    out["speedup_1_to_2_workers"] = out["ours_1_worker_s"] / out["ours_2_workers_s"]
    out["speedup_1_to_2_workers_warm"] = out["ours_1_worker_s"] / out["ours_2_workers_warm_s"]
    out["n_failed"] = one.extra["n_failed"]

    from stepmix import StepMix
    # StepMix's defaults (one start per fit and per replicate, abs_tol 1e-10, max_iter 1000)
    sm = StepMix(n_components=3, measurement="binary", verbose=0, progress_bar=0, random_state=1)
    sm.fit(Y)
    t0 = time.perf_counter()
    stats = sm.bootstrap_stats(Y, n_repetitions=B, progress_bar=False)
    out["stepmix_s"] = time.perf_counter() - t0
    out["ours_over_stepmix"] = out["ours_2_workers_s"] / out["stepmix_s"]
    out["ours_warm_over_stepmix"] = out["ours_2_workers_warm_s"] / out["stepmix_s"]
    # same quantity both ways: the bootstrap SD of the class weights (sorted, label-free)
    out["weight_se_ours_sorted"] = sorted(np.round(one.se[:3], 5).tolist())
    out["weight_se_stepmix_sorted"] = sorted(np.round(np.asarray(stats["cw_std"]).ravel(), 5).tolist())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    ap.add_argument("--full-numerical", action="store_true",
                    help="time all 2P gradient evaluations instead of extrapolating")
    args = ap.parse_args()
    n_gmm, n_lca, B = (10_000, 2_000, 20) if args.quick else (100_000, 10_000, 100)
    report = {"date": time.strftime("%Y-%m-%d"), "machine": platform.platform(),
              "cpus": os.cpu_count(), "python": platform.python_version(),
              "louis_vs_numerical": bench_louis(n_gmm, args.full_numerical),
              "bootstrap_lca": bench_bootstrap(n_lca, B)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
