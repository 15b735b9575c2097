"""One-step covariate model benchmark: LCA with covariates against StepMix's one-step fit.

Data: N = 1e4 rows, 10 binary items, K = 3 classes whose membership is a multinomial logit
of 3 standard-normal covariates (this file's generator, its own stream).

**Equal work.** Both sides fit the same ``--starts`` starting points, one after the other, in
1 process with 1 BLAS thread, to the same stopping rule:

* the starts: for start s, responsibilities drawn from Dirichlet(1) (``stream(seed,
  "bench_covariates", s)``) and tiny random coefficients N(0, 1e-3) for every class (StepMix's
  own initialisation of its covariate model).  StepMix initialises its measurement model from
  these responsibilities (its ``_initialize_parameters``, overridden here to take them) and
  its coefficients are set to the drawn ones; ours starts from the same item probabilities
  (one M-step from the same responsibilities: counts over mass, StepMix's Bernoulli M-step)
  and the same coefficients re-referenced to class 1 (the same class probabilities);
* the stopping rule: ``|l_t - l_{t-1}| < tol |l_t|`` with ``tol`` 1e-8 (ours: ``--tol``;
  StepMix: ``rel_tol = tol`` with ``abs_tol = 0``, its test on the mean log-likelihood, the
  same relative change); ``max_iter`` 1000 both.

Times: wall-clock (``seconds``) and the process's CPU time (``cpu_seconds``: on a shared,
loaded machine the CPU time is the steadier measure of work; with one BLAS thread both sides
use one core, so the two agree on a quiet machine).

Rows: ``stepmix`` (StepMix 3.0: per EM iteration one Newton-Raphson step of its covariate
model with the pseudo-inverse of the over-parameterised Hessian), ``ours_squarem`` (our
defaults: SQUAREM, one Newton step with step-halving per EM iteration), ``ours_plain`` (plain
EM).  Each row's time is the sum over the starts; the ratio is ours / StepMix's, taken within
a round (rounds interleaved, StepMix first in odd rounds), the median over rounds reported.
Both sides' best log-likelihoods are printed (they reach the same maximum).

Run: ``PYTHONPATH=. python benchmarks/bench_covariates.py [--n 10000] [--starts 5]
[--rounds 3] [--json benchmarks/out/covariates/covariates.json]``.
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

from src.estimation.em import fit_em
from src.models import logit
from src.models.covariates import CovariateMixture
from src.models.lca import LatentClassModel
from src.utils.rng import stream

K, J, C = 3, 10, 3
BETA = np.array([[0.0, 0.0, 0.0, 0.0], [0.5, 1.0, -0.7, 0.3], [-0.4, -0.8, 0.6, -0.5]])


def simulate(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Y (n, J) 0/1, covariates X (n, C), design Z (n, C + 1))."""
    rng = stream(seed, "bench_covariates_data", 0)
    X = rng.normal(size=(n, C))
    Z, _ = logit.design(X)
    pi = logit.probabilities(Z, BETA)
    z = (rng.random(n)[:, None] > np.cumsum(pi, axis=1)).sum(axis=1)
    p = np.empty((K, J))
    p[0], p[1] = 0.8, 0.25
    p[2, : J // 2], p[2, J // 2:] = 0.85, 0.15
    Y = (rng.random((n, J)) < p[z]).astype(np.int64)
    return Y, X, Z


def starts(n: int, n_starts: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per start: responsibilities (n, K) and every class's coefficients (K, C + 1)."""
    out = []
    for s in range(n_starts):
        rng = stream(seed, "bench_covariates", s)
        out.append((rng.dirichlet(np.ones(K), size=n), rng.normal(0.0, 1e-3, size=(K, C + 1))))
    return out


def stepmix_class():
    from stepmix.stepmix import StepMix

    class GivenStart(StepMix):
        """StepMix started from given responsibilities and covariate coefficients."""

        def _initialize_parameters(self, X, random_state):
            resp = self.start_resp_
            self.log_resp_ = np.log(np.clip(resp, 1e-15, 1 - 1e-15))
            self.weights_ = np.ones(self.n_components) / self.n_components
            self._initialize_parameters_measurement(X, random_state)

        def _initialize_parameters_structural(self, Y, random_state=None, init_emission=True):
            super()._initialize_parameters_structural(Y, random_state, init_emission)
            self._sm.parameters["beta"] = self.start_beta_.copy()

    return GivenStart


def run_stepmix(Y, X, start_list, tol, max_iter) -> dict:
    cls = stepmix_class()
    lls, iters = [], []
    t0, c0 = time.perf_counter(), time.process_time()
    for resp, beta in start_list:
        sm = cls(n_components=K, measurement="binary", structural="covariate", n_steps=1,
                 n_init=1, max_iter=max_iter, abs_tol=0.0, rel_tol=tol, random_state=0,
                 verbose=0, progress_bar=0)
        sm.start_resp_, sm.start_beta_ = resp, beta
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sm.fit(Y.astype(float), X)
        lls.append(float(sm.lower_bound_) * Y.shape[0])
        iters.append(int(sm.n_iter_))
    return {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
            "logliks": lls, "iterations": iters}


def our_model(Y) -> CovariateMixture:
    inner = LatentClassModel(K)
    inner.setup(LatentClassModel.meta_from_array(Y))
    return CovariateMixture(inner, [f"x{c + 1}" for c in range(C)])


def our_starts(model, Y, start_list) -> list[dict]:
    """Our starting values: the inner M-step from the same responsibilities (the items'
    answer-1 shares, as StepMix's Bernoulli M-step) and the same coefficients."""
    out = []
    for resp, beta in start_list:
        inner = model.inner.m_step(model.inner.suff_stats({"Y": Y}, resp))
        out.append({"beta": logit.rereference(beta, 0), "prob": inner["prob"],
                    "weight": logit.probabilities(np.ones((1, C + 1)), beta)[0]})
    return out


def run_ours(Y, Z, start_list, tol, max_iter, accelerate) -> dict:
    model = our_model(Y)
    data = {"Y": Y, "Z": Z}
    inits = our_starts(model, Y, start_list)
    lls, iters = [], []
    t0, c0 = time.perf_counter(), time.process_time()
    for init in inits:
        fit = fit_em(model, data, init_params=init, tol=tol, max_iter=max_iter,
                     accelerate=accelerate)
        lls.append(float(fit.loglik))
        iters.append(int(fit.n_iter))
    return {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
            "logliks": lls, "iterations": iters}


def bench(n: int, n_starts: int, rounds: int, tol: float, max_iter: int) -> dict:
    Y, X, Z = simulate(n)
    start_list = starts(n, n_starts)
    rows: dict[str, list[dict]] = {"stepmix": [], "ours_squarem": [], "ours_plain": []}
    stepmix_class()   # StepMix and SciPy's linear algebra loaded before the thread limit
    import scipy.linalg  # noqa: F401
    with threadpool_limits(1):
        run_ours(Y[:500], Z[:500], starts(500, 1), tol, 5, "none")   # imports, caches warm
        run_stepmix(Y[:500], Z[:500, 1:], starts(500, 1), tol, 5)
        for r in range(rounds):
            order = ["stepmix", "ours_squarem", "ours_plain"]
            if r % 2:
                order = order[1:] + order[:1]
            for name in order:
                if name == "stepmix":
                    rows[name].append(run_stepmix(Y, X, start_list, tol, max_iter))
                else:
                    acc = "squarem" if name == "ours_squarem" else "none"
                    rows[name].append(run_ours(Y, Z, start_list, tol, max_iter, acc))
                print(f"round {r + 1} {name}: {rows[name][-1]['seconds']:.3f} s (CPU "
                      f"{rows[name][-1]['cpu_seconds']:.3f} s), iterations "
                      f"{rows[name][-1]['iterations']}", file=sys.stderr)
    out: dict = {"n": n, "items": J, "classes": K, "covariates": C, "starts": n_starts,
                 "rounds": rounds, "tol": tol, "max_iter": max_iter,
                 "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    for name, runs in rows.items():
        secs = [x["seconds"] for x in runs]
        cpu = [x["cpu_seconds"] for x in runs]
        out[name] = {"seconds_median": float(np.median(secs)), "seconds": secs,
                     "cpu_seconds_median": float(np.median(cpu)), "cpu_seconds": cpu,
                     "iterations": runs[-1]["iterations"],
                     "best_loglik": max(runs[-1]["logliks"]),
                     "per_iteration_ms": 1e3 * float(np.median(secs)) / sum(runs[-1]["iterations"])}
    for name in ("ours_squarem", "ours_plain"):
        ratios = [a["seconds"] / b["seconds"] for a, b in zip(rows[name], rows["stepmix"])]
        cpu = [a["cpu_seconds"] / b["cpu_seconds"] for a, b in zip(rows[name], rows["stepmix"])]
        out[f"ratio_{name}"] = {"median": float(np.median(ratios)), "rounds": ratios,
                                "cpu_median": float(np.median(cpu)), "cpu_rounds": cpu}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=float, default=1e4)
    ap.add_argument("--starts", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tol", type=float, default=1e-8)
    ap.add_argument("--max-iter", type=int, default=1000)
    ap.add_argument("--json", default=None, help="also write the report here")
    args = ap.parse_args()
    out = bench(int(args.n), args.starts, args.rounds, args.tol, args.max_iter)
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
