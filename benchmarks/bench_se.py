"""Standard-error benchmarks, side by side in one run, reported as ratios.

1. Louis' method against the numerical Hessian on a Gaussian mixture, N=1e5, D=10, K=5,
   full covariances (P=329); Louis' time in units of one EM iteration (target <= 20).
   (``bench_louis_gmm.py`` times Louis alone, in interleaved rounds, and checks it against
   the per-row path.)  The numerical Hessian needs 2P gradient evaluations; by default 3
   of them are timed and the total extrapolated (``--full-numerical`` runs all 658).
2. A 100-replicate nonparametric bootstrap of a 3-class LCA (10 binary items, N=1e4)
   against StepMix 3.0's ``bootstrap_stats`` on the same data, compared at equal work: the
   same B, a random start per replicate on both sides (StepMix cannot start a replicate from
   the estimate: it clones the estimator and initialises again), the same tolerance
   (StepMix's ``abs_tol`` on the mean log-likelihood translated to our relative ``tol``; a
   check from shared starting values shows both stop after the same iterations), 1 process
   and 1 BLAS thread each, plain EM: the headline ratio.  Beside it, labelled: ours from the
   estimate (less work by design), with SQUAREM, and on 2 worker processes.
3. The bootstrap's speed-up from 1 to 2 workers, cold and warm.

Run: ``PYTHONPATH=. python benchmarks/bench_se.py [--quick] [--part bootstrap] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings

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


class LastState:
    """A Checkpointer that keeps the last state only (to read the replicates' iterations)."""

    def __init__(self) -> None:
        self.state: dict | None = None

    def resume_state(self) -> None:
        return None

    def checkpoint(self, state: dict, *, force: bool = False) -> bool:
        self.state = state
        return True


def mean_iterations(ck: LastState) -> float:
    return float(np.mean([rec["n_iter"] for rec in ck.state["replicates"].values()]))


def criterion_check(model: LatentClassModel, data: dict, Y: np.ndarray, abs_tol: float,
                    tol: float) -> dict:
    """Both tools from the same starting values: do the two criteria stop alike?

    StepMix's first iteration (its random start, then one M-step) gives the values ours starts
    from, so ours' evaluations + 1 should equal StepMix's iterations."""
    from stepmix import StepMix

    kw = dict(n_components=3, measurement="binary", verbose=0, progress_bar=0, abs_tol=abs_tol)
    out = {}
    for rs in (1, 2, 3):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            one = StepMix(random_state=rs, max_iter=1, **kw).fit(Y).get_parameters()
            full = StepMix(random_state=rs, **kw).fit(Y)
        pis = np.asarray(one["measurement"]["pis"])
        init = {"weight": np.asarray(one["weights"]), "prob": np.stack([1 - pis, pis], axis=-1)}
        ours = fit_em(model, data, init_params=init, tol=tol, max_iter=5000)
        out[f"random_state_{rs}"] = {"stepmix_iterations": int(full.n_iter_),
                                     "ours_iterations_plus_1": int(ours.n_iter) + 1,
                                     "loglik_stepmix": float(full.score(Y) * Y.shape[0]),
                                     "loglik_ours": float(ours.loglik)}
    return out


#: the bootstrap rows: (name, start policy, acceleration, workers)
ROWS = (("ours_cold_1p", "random", "none", 1), ("ours_warm_1p", "estimate", "none", 1),
        ("ours_warm_1p_squarem", "estimate", "squarem", 1),
        ("ours_cold_2w", "random", "none", 2), ("ours_warm_2w", "estimate", "none", 2))


def bench_bootstrap(n: int, B: int, rounds: int, abs_tol: float = 1e-10) -> dict:
    """StepMix's ``bootstrap_stats`` and ours on the same data, B and tolerance, in rounds.

    Every round times StepMix and each of our rows once (StepMix first in rounds 1, 3, ...,
    last in rounds 2, 4, ...); a ratio is taken within a round and the medians over rounds are reported, so
    the drifting load of a shared machine hits both sides of each ratio alike.  The whole
    section runs at 1 BLAS thread in this process (our workers limit their own)."""
    from stepmix import StepMix

    model, data, Y = lca_data(n)
    limit = threadpool_limits(1)
    fit = fit_em(model, data, n_starts=10, tol=1e-8, max_iter=5000, seed=1)
    params = fit.params
    mean_ll = fit.loglik / n
    tol = abs_tol / abs(mean_ll)  # StepMix: |change of the mean loglik| < abs_tol; ours relative
    out = {"n": n, "B": B, "items": Y.shape[1], "K": model.n_components, "rounds": rounds,
           "stepmix_abs_tol": abs_tol, "mean_loglik": mean_ll, "ours_tol": tol,
           "start_policy": {"stepmix": "1 random start per replicate (n_init=1, its default)",
                            "ours_cold": "1 random start per replicate (start='random', n_starts=1)",
                            "ours_warm": "from the estimate (start='estimate'): less work by design"},
           "criterion_check": criterion_check(model, data, Y, abs_tol, tol)}
    sm = StepMix(n_components=3, measurement="binary", verbose=0, progress_bar=0, random_state=1,
                 abs_tol=abs_tol, n_init=1)
    sm.fit(Y)

    def stepmix():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return sm.bootstrap_stats(Y, n_repetitions=B, progress_bar=False)

    def ours(start, accelerate, executor, ck):
        return bootstrap_se(model, data, params, n_bootstrap=B, seed=3, tol=tol, max_iter=1000,
                            start=start, n_starts=1, accelerate=accelerate, executor=executor,
                            checkpoint=ck)

    times: dict[str, list[float]] = {name: [] for name, *_ in ROWS}
    times["stepmix_1p"], times["pool_start"], loads = [], [], []
    results, iters = {}, {}
    for rnd in range(rounds):
        loads.append(os.getloadavg()[0])

        def run_stepmix():
            t0 = time.perf_counter()
            results["stepmix_1p"] = stepmix()
            times["stepmix_1p"].append(time.perf_counter() - t0)

        if rnd % 2 == 0:
            run_stepmix()
        for name, start, acc, workers in ROWS:
            if workers == 1:
                ck = LastState()
                t0 = time.perf_counter()
                results[name] = ours(start, acc, None, ck)
                times[name].append(time.perf_counter() - t0)
                iters[name] = mean_iterations(ck)
        t0 = time.perf_counter()
        with make_executor(2) as ex:
            ex.wait_ready()  # workers already up, as when the pipeline starts them early
            times["pool_start"].append(time.perf_counter() - t0)
            for name, start, acc, workers in ROWS:
                if workers == 2:
                    ck = LastState()
                    t0 = time.perf_counter()
                    results[name] = ours(start, acc, ex, ck)
                    times[name].append(time.perf_counter() - t0)
                    iters[name] = mean_iterations(ck)
        if rnd % 2 == 1:
            run_stepmix()
        loads.append(os.getloadavg()[0])
        print(f"# round {rnd + 1}/{rounds}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()),
              file=sys.stderr, flush=True)
    limit.restore_original_limits()

    def ratio(a: str, b: str) -> dict:
        r = np.array(times[a]) / np.array(times[b])
        return {"median": float(np.median(r)), "min": float(r.min()), "max": float(r.max())}

    out["seconds_median"] = {k: float(np.median(v)) for k, v in times.items()}
    out["seconds_all"] = times
    out["load_average_1min"] = {"min": min(loads), "max": max(loads),
                                "median": float(np.median(loads))}
    out["ratios_to_stepmix"] = {
        "ours_cold_1p (HEADLINE: equal work, 1 process each, random start per replicate, plain EM)":
            ratio("ours_cold_1p", "stepmix_1p"),
        "ours_warm_1p (less work by design: from the estimate, plain EM)":
            ratio("ours_warm_1p", "stepmix_1p"),
        "ours_warm_1p_squarem (less work by design: from the estimate, SQUAREM)":
            ratio("ours_warm_1p_squarem", "stepmix_1p"),
        "ours_cold_2w (2 workers vs StepMix's 1 process, random start)":
            ratio("ours_cold_2w", "stepmix_1p"),
        "ours_warm_2w (2 workers, from the estimate)": ratio("ours_warm_2w", "stepmix_1p")}
    out["speedup_1_to_2_workers"] = {  # 1-process time / 2-worker time, workers already up
        "cold": ratio("ours_cold_1p", "ours_cold_2w"), "warm": ratio("ours_warm_1p", "ours_warm_2w")}
    out["pool_start_s"] = float(np.median(times["pool_start"]))
    out["mean_iterations_per_replicate"] = iters
    out["identical_1_vs_2_workers"] = {
        "cold": bool(np.array_equal(results["ours_cold_1p"].se, results["ours_cold_2w"].se)),
        "warm": bool(np.array_equal(results["ours_warm_1p"].se, results["ours_warm_2w"].se))}
    out["n_failed"] = {name: results[name].extra["n_failed"] for name, *_ in ROWS}
    # the same quantity every way: the bootstrap SD of the class weights (sorted, label-free);
    # independent resamples differ by Monte-Carlo error, about SD / sqrt(2B) for each
    sm_w = sorted(np.asarray(results["stepmix_1p"]["cw_std"]).ravel().tolist())
    out["weight_sd_sorted"] = {"stepmix": np.round(sm_w, 5).tolist(),
                               **{name: np.round(sorted(results[name].se[:3]), 5).tolist()
                                  for name, *_ in ROWS if name.endswith("1p") or "squarem" in name}}
    out["weight_sd_monte_carlo_error"] = np.round(np.array(sm_w) / np.sqrt(2 * B), 5).tolist()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    ap.add_argument("--full-numerical", action="store_true",
                    help="time all 2P gradient evaluations instead of extrapolating")
    ap.add_argument("--part", choices=("all", "louis", "bootstrap"), default="all")
    ap.add_argument("--rounds", type=int, default=None,
                    help="interleaved bootstrap rounds (default 5; 1 with --quick)")
    args = ap.parse_args()
    n_gmm, n_lca, B = (10_000, 2_000, 20) if args.quick else (100_000, 10_000, 100)
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 5)
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.platform(),
              "cpus": os.cpu_count(), "python": platform.python_version()}
    if args.part in ("all", "louis"):
        report["louis_vs_numerical"] = bench_louis(n_gmm, args.full_numerical)
    if args.part in ("all", "bootstrap"):
        report["bootstrap_lca"] = bench_bootstrap(n_lca, B, rounds)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
