"""This engine's Gaussian mixture against scikit-learn's GaussianMixture, side by side.

Same data (D=10, K=5, full covariances, generated from a seed in every process), same
starting values (our ``gmm`` start 0), same ``reg_covar``.  Every measurement runs in its
own subprocess, so peak memory is that process's peak resident set (``ru_maxrss``).

* time per iteration: median over timed EM iterations (ours: one ``em_map``; scikit-learn:
  its own loop body ``_e_step`` + ``_m_step``), wall and CPU time of the process (one thread
  each: CPU time is what a loaded machine's time slicing does not inflate);
* time to converge: one ``fit`` call each, to the same criterion.  Ours stops when
  ``|l_t - l_{t-1}| < tol |l_t|``; scikit-learn when the change of the *mean* log-likelihood
  is below its ``tol``, so it gets ``tol * |l*| / N`` with ``l*`` our converged log-likelihood;
* thread settings: ``1`` (threadpoolctl limits BLAS to one thread in the whole process: the
  headline, with plain EM on both sides) and ``default`` (no limit: a measure of scikit-learn's
  oversubscription of 2 cores by two OpenBLAS copies and libgomp, not of EM speed).  Our
  driver always runs BLAS at one thread (the project's policy); ``ours-2t`` also computes
  chunks on 2 threads.  SQUAREM rows are reported beside the plain ones, labelled.
* rounds: every task runs once per round, in alternating order; each ratio is taken within a
  round and the median (min-max) over rounds is reported, so the load of a shared machine
  hits both sides of a ratio alike.

Usage: ``python benchmarks/bench_gmm_vs_sklearn.py [--sizes 1e4 1e5 1e6] [--repeats 3] [--json F]``;
``--only periter`` measures the time per iteration alone (no fits), ``--periter-tools ours sklearn``
leaves out the 2-thread row.
``--unset-openblas-coretype`` removes OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE from the
workers' environment (both tools alike).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
D, K, SEED, REG = 10, 5, 20261128, 1e-6


def make_data(n: int) -> np.ndarray:
    """N rows of a 5-component, 10-dimensional mixture (generated in blocks: small peak).

    The components overlap (means ~ N(0, 0.8^2), covariances I + 0.2 A A'/D), so EM needs
    about 150 iterations at tol 1e-8: a slow-converging problem, as real data often are.
    """
    rng = np.random.default_rng(SEED)
    means = rng.normal(0.0, 0.8, size=(K, D))
    chols = []
    for _ in range(K):
        A = rng.normal(size=(D, D))
        chols.append(np.linalg.cholesky(0.2 * A @ A.T / D + np.eye(D)))
    weights = np.array([0.3, 0.25, 0.2, 0.15, 0.1])
    X = np.empty((n, D))
    block = 100_000
    for a in range(0, n, block):
        b = min(a + block, n)
        z = rng.choice(K, size=b - a, p=weights)
        e = rng.normal(size=(b - a, D))
        for k in range(K):
            rows = z == k
            X[a:b][rows] = means[k] + e[rows] @ chols[k].T
    return X


def _our_model(X: np.ndarray):
    sys.path.insert(0, str(ROOT))
    from src.models.gmm import GaussianMixtureModel

    m = GaussianMixtureModel(K, covariance="full", reg_covar=REG)
    m.setup(GaussianMixtureModel.meta_for_array(X))
    return m


def _init(model, X):
    from src.estimation.em import start_params

    return start_params(model, {"X": X}, SEED, 0)


def _sklearn(init, max_iter, tol):
    from sklearn.mixture import GaussianMixture

    return GaussianMixture(K, covariance_type="full", reg_covar=REG, max_iter=max_iter, tol=tol,
                           weights_init=init["weight"], means_init=init["mean"],
                           precisions_init=np.linalg.inv(init["cov"]),
                           init_params="random_from_data", random_state=0)


def worker(cfg: dict) -> dict:
    """One measurement in this process; returns figures and the peak RSS."""
    import warnings
    from threadpoolctl import threadpool_info, threadpool_limits

    X = make_data(cfg["n"])
    with np.load(cfg["init"]) as f:  # computed by the parent: scikit-learn's process imports no
        init = {k: f[k] for k in f.files}  # module of ours, so its peak RSS is its own
    if cfg["tool"] == "sklearn":  # load every library before threadpoolctl sets its limits
        import sklearn.mixture  # noqa: F401
    else:
        model = _our_model(X)
    limit = threadpool_limits(1) if cfg["threads"] == "1" else None
    tool, out = cfg["tool"], {}
    n_threads = 2 if tool == "ours-2t" else 1
    if cfg["mode"] == "periter":
        n_timed = int(max(10, min(40, 2e6 / cfg["n"])))
        times, cpu = [], []
        if tool.startswith("ours"):
            from concurrent.futures import ThreadPoolExecutor
            from src.estimation.em import em_map

            pool = ThreadPoolExecutor(n_threads) if n_threads > 1 else None
            with threadpool_limits(1):
                p = init
                for i in range(n_timed + 2):
                    t0, c0 = time.perf_counter(), time.process_time()
                    p, _ = em_map(model, {"X": X}, p, 4096, pool)
                    times.append(time.perf_counter() - t0)
                    cpu.append(time.process_time() - c0)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                gm = _sklearn(init, 1, 0.0).fit(X)
            for i in range(n_timed + 2):
                t0, c0 = time.perf_counter(), time.process_time()
                _, log_resp = gm._e_step(X)
                gm._m_step(X, log_resp)
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
        out["ms_per_iter"] = 1e3 * statistics.median(times[2:])
        # CPU time of the process: what a loaded machine's time slicing does not inflate (both
        # tools run one thread here; with ours-2t it adds the two threads' times)
        out["cpu_ms_per_iter"] = 1e3 * statistics.median(cpu[2:])
        out["n_timed"] = n_timed
    else:
        warm = X[:500]  # first calls import lazily (both tools): keep that out of the timing
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if tool.startswith("ours"):
                from src.estimation.em import fit_em
                fit_em(model, {"X": warm}, init_params=init, max_iter=2, n_threads=n_threads)
            else:
                _sklearn(init, 2, 0.0).fit(warm)
        if tool.startswith("ours"):
            t0 = time.perf_counter()
            res = fit_em(model, {"X": X}, init_params=init, tol=cfg["tol"], max_iter=cfg["max_iter"],
                         accelerate=cfg["accelerate"], n_threads=n_threads)
            out.update(seconds=time.perf_counter() - t0, n_iter=res.n_iter, loglik=res.loglik,
                       converged=res.converged)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t0 = time.perf_counter()
                gm = _sklearn(init, cfg["max_iter"], cfg["sk_tol"]).fit(X)
                out["seconds"] = time.perf_counter() - t0
            out.update(n_iter=int(gm.n_iter_), loglik=float(gm.score(X) * X.shape[0]),
                       converged=bool(gm.converged_))
    out["blas"] = [f"{i['prefix']}:{i.get('architecture')}:{i['num_threads']}" for i in threadpool_info()]
    if limit is not None:
        limit.restore_original_limits()
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return out


def run(cfg: dict, env: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(cfg)], env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {cfg} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def med(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def ratio_summary(num: list[dict], den: list[dict], key: str) -> dict:
    """Median (min, max) over rounds of ``num[i][key] / den[i][key]``: ratios taken within a
    round, a moment apart, so the drifting load of a shared machine hits both alike."""
    r = [a[key] / b[key] for a, b in zip(num, den)]
    return {"median": statistics.median(r), "min": min(r), "max": max(r)}


#: what each thread setting measures (printed with its rows)
THREADS_MEANING = {
    "1": "1 BLAS thread in both processes: the speed of the EM code (headline)",
    "default": "no thread limit: measures the oversubscription of scikit-learn's process (numpy's "
               "and scipy's OpenBLAS, 2 threads each, plus libgomp, on 2 cores), not EM speed; "
               "ours limits BLAS to 1 thread inside its driver either way",
}


def interleaved(tasks: list[tuple[str, dict]], rounds: int, env: dict, first: str) -> dict[str, list[dict]]:
    """Run every task once per round, in alternating order (``first`` leads in round 1)."""
    out: dict[str, list[dict]] = {name: [] for name, _ in tasks}
    lead = [tk for tk in tasks if tk[0] == first]
    rest = [tk for tk in tasks if tk[0] != first]
    for rnd in range(rounds):
        order = lead + rest if rnd % 2 == 0 else rest + lead
        for name, cfg in order:
            row = run(cfg, env)
            row["load"] = os.getloadavg()[0]
            out[name].append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", type=float, default=[1e4, 1e5])
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    ap.add_argument("--tol", type=float, default=1e-8)
    ap.add_argument("--max-iter", type=int, default=3000)
    ap.add_argument("--converge-max-n", type=float, default=1e5,
                    help="run the time-to-converge comparison only up to this N")
    ap.add_argument("--memory-iters", type=int, default=10,
                    help="above --converge-max-n, peak memory comes from a fit of this many iterations")
    ap.add_argument("--threads", nargs="+", default=["1", "default"], choices=["1", "default"])
    ap.add_argument("--unset-openblas-coretype", action="store_true")
    ap.add_argument("--only", choices=["all", "periter"], default="all",
                    help="periter: the time per iteration alone, no fits")
    ap.add_argument("--periter-tools", nargs="+", default=["ours", "ours-2t", "sklearn"],
                    choices=["ours", "ours-2t", "sklearn"])
    ap.add_argument("--json", help="also write every measurement and summary to this file")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    env = dict(os.environ)
    if args.unset_openblas_coretype:
        env.pop("OPENBLAS_CORETYPE", None)
        env.pop("OPENBLAS_L2_SIZE", None)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  python {platform.python_version()}  "
          f"nproc {os.cpu_count()}  load {os.getloadavg()}  "
          f"OPENBLAS_CORETYPE={env.get('OPENBLAS_CORETYPE')}  "
          f"OPENBLAS_L2_SIZE={env.get('OPENBLAS_L2_SIZE')}")
    print("# ratios = ours / scikit-learn, taken within each round; median (min-max) over rounds")
    report: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "nproc": os.cpu_count(), "cells": []}
    tmp = tempfile.mkdtemp(prefix="bench_gmm_")
    for n in [int(s) for s in args.sizes]:
        X = make_data(n)
        init_path = os.path.join(tmp, f"init_{n}.npz")
        np.savez(init_path, **_init(_our_model(X), X))
        del X
        for threads in args.threads:
            base = {"n": n, "threads": threads, "init": init_path}
            cell: dict = {"n": n, "threads": threads, "meaning": THREADS_MEANING[threads]}
            tools = [t for t in ("ours", "ours-2t", "sklearn") if t in args.periter_tools or t == "sklearn"]
            per = interleaved([(t, {**base, "tool": t, "mode": "periter"}) for t in tools],
                              args.repeats, env, "ours")
            print(f"\nN={n:.0e} threads={threads}: {THREADS_MEANING[threads]}\n"
                  f"  blas={per['sklearn'][0]['blas']}")
            cell["per_iteration_ms"] = {t: med(rows, "ms_per_iter") for t, rows in per.items()}
            cell["per_iteration_cpu_ms"] = {t: med(rows, "cpu_ms_per_iter") for t, rows in per.items()}
            cell["per_iteration_ratio"], cell["per_iteration_cpu_ratio"] = {}, {}
            for t in tools[:-1]:
                r = ratio_summary(per[t], per["sklearn"], "ms_per_iter")
                rc = ratio_summary(per[t], per["sklearn"], "cpu_ms_per_iter")
                cell["per_iteration_ratio"][t], cell["per_iteration_cpu_ratio"][t] = r, rc
                print(f"  per-iteration {t:8s} {med(per[t], 'ms_per_iter'):9.2f} ms vs sklearn "
                      f"{med(per['sklearn'], 'ms_per_iter'):9.2f} ms   ratio {r['median']:.3f} "
                      f"({r['min']:.3f}-{r['max']:.3f});  CPU time {med(per[t], 'cpu_ms_per_iter'):.2f} "
                      f"vs {med(per['sklearn'], 'cpu_ms_per_iter'):.2f} ms ratio {rc['median']:.3f} "
                      f"({rc['min']:.3f}-{rc['max']:.3f})")
            if args.only == "periter":
                loads = [r["load"] for rows in per.values() for r in rows]
                cell["load_average_1min"] = {"min": min(loads), "max": max(loads),
                                             "median": statistics.median(loads)}
                cell["raw"] = {"per_iteration": per}
                print(f"  load average (1 min) during this cell: {min(loads):.2f}-{max(loads):.2f}")
                report["cells"].append(cell)
                sys.stdout.flush()
                if args.json:
                    Path(args.json).write_text(json.dumps(report, indent=1), encoding="utf-8")
                continue
            converge = n <= args.converge_max_n
            fit_cfg = {**base, "mode": "fit", "tol": args.tol if converge else 0.0,
                       "max_iter": args.max_iter if converge else args.memory_iters}
            # scikit-learn's tol is on the mean log-likelihood: tol * |l*| / N, with l* our
            # plain-EM optimum from a first run (the same criterion, checked by the iterations)
            first = run({**fit_cfg, "tool": "ours", "accelerate": "none"}, env)
            sk_tol = args.tol * abs(first["loglik"]) / n if converge else 0.0
            fits = interleaved(
                [("ours plain", {**fit_cfg, "tool": "ours", "accelerate": "none"}),
                 ("ours squarem", {**fit_cfg, "tool": "ours", "accelerate": "squarem"}),
                 ("ours-2t squarem", {**fit_cfg, "tool": "ours-2t", "accelerate": "squarem"}),
                 ("sklearn plain", {**fit_cfg, "tool": "sklearn", "sk_tol": sk_tol})],
                args.repeats, env, "ours plain")
            skf = fits["sklearn plain"]
            what = "converge" if converge else f"{args.memory_iters} iterations"
            cell["fit"] = {"what": what, "sk_tol": sk_tol}
            for name, rows in fits.items():
                rt = ratio_summary(rows, skf, "seconds")
                rm = ratio_summary(rows, skf, "peak_rss_mb")
                label = (" (reference)" if name == "sklearn plain" else
                         " (beside: SQUAREM, fewer EM-map evaluations)" if "squarem" in name else
                         " (HEADLINE: plain vs plain)" if threads == "1" else
                         " (oversubscription, not speed)")
                cell["fit"][name] = {"seconds": med(rows, "seconds"), "n_iter": rows[0]["n_iter"],
                                     "loglik": rows[0]["loglik"], "converged": rows[0]["converged"],
                                     "peak_rss_mb": med(rows, "peak_rss_mb"),
                                     "time_ratio": rt, "rss_ratio": rm}
                print(f"  fit ({what}) {name:16s} {med(rows, 'seconds'):8.2f} s "
                      f"({rows[0]['n_iter']} it, ll {rows[0]['loglik']:.6f}, conv {rows[0]['converged']})"
                      f"  time ratio {rt['median']:6.3f} ({rt['min']:.3f}-{rt['max']:.3f})"
                      f"  peak RSS {med(rows, 'peak_rss_mb'):7.1f} MB ratio {rm['median']:5.2f}{label}")
            loads = [r["load"] for rows in (*per.values(), *fits.values()) for r in rows]
            cell["load_average_1min"] = {"min": min(loads), "max": max(loads),
                                         "median": statistics.median(loads)}
            cell["raw"] = {"per_iteration": per, "fit": fits}
            print(f"  load average (1 min) during this cell: {min(loads):.2f}-{max(loads):.2f}")
            report["cells"].append(cell)
            sys.stdout.flush()
            if args.json:
                Path(args.json).write_text(json.dumps(report, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
