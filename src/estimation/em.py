"""The one EM driver: random starts, the iteration loop, convergence, acceleration, checkpoints.

A model supplies the maths (:class:`~src.models.base.MixtureModel`); this module supplies
everything else, once for every model:

* the **EM map** ``params -> (M(params), loglik(params))``: rows in chunks of ``chunk_size``,
  each chunk's fused E-step returning additive sufficient statistics that are summed in a
  fixed order (bitwise reproducible for a given chunk size; other chunk sizes agree to
  rounding), then the closed-form M-step; or the generic numerical M-step
  (:mod:`src.estimation.numeric_mstep`) for models without one;
* a start as a **state machine advanced one EM-map evaluation at a time** (plain EM or
  SQUAREM), so a checkpoint can be taken after any evaluation and a resumed run continues
  bitwise-identically;
* several starts (in process, or one per worker through an executor), the best kept.

Threads: BLAS runs at one thread during the fit (threadpoolctl; numpy and scipy load two
OpenBLAS copies here that otherwise compete for the cores).  ``n_threads > 1`` computes the
chunks of one EM map on a thread pool (summed in chunk order, so bitwise the same); it did
not pay on the 2-core benchmark machine (benchmarks/README.md), so the default is 1 and the
cores go to random starts and bootstrap replicates (processes, through an executor).

The reported estimate of a start is the last *accepted* point whose log-likelihood was
evaluated, so ``loglik`` is exactly the log-likelihood of ``params``.
Convergence: ``|l_t - l_{t-1}| < tol * |l_t|`` between consecutive accepted points.
"""

from __future__ import annotations

import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Mapping

import numpy as np
from threadpoolctl import threadpool_limits

from src.models import checks
from src.models.base import Data, MixtureModel, ModelWarning, Params
from src.utils.checkpointing import Checkpointer, NullCheckpointer, check_arrays, require
from src.utils.errors import ModelError
from src.utils.messages import register, t
from src.utils.rng import stream

from . import squarem
from .numeric_mstep import generic_em_map, generic_init_params
from .results import FitResult

__all__ = ["fit_em", "run_start", "em_map", "start_params"]

register({
    "em.not_converged": {
        "en": "start {start} did not converge in {max_iter} iterations (last relative change "
              "{change:.3g}, tol {tol:g}); increase --max-iter or loosen --tol",
        "zh": "第 {start} 个起点在 {max_iter} 次迭代内未收敛（最后的相对变化 {change:.3g}，"
              "容差 {tol:g}）；请增大 --max-iter 或放宽 --tol",
    },
    "em.starts_not_converged": {
        "en": "{count} of {total} random starts did not converge within --max-iter",
        "zh": "{total} 个随机起点中有 {count} 个未在 --max-iter 内收敛",
    },
    "em.no_finite_start": {
        "en": "Every random start of {model} ended with a non-finite log-likelihood; check the "
              "data, or the model's log_joint and starting values.",
        "zh": "{model} 的所有随机起点都以非有限的对数似然结束；请检查数据，或模型的 log_joint 和初始值。",
    },
})

ACCELERATIONS = ("none", "squarem")


# ------------------------------------------------------------------ the EM map
def _slice(data: Data, a: int, b: int) -> Data:
    return {k: v[a:b] for k, v in data.items()}


def _n_rows(data: Data) -> int:
    return int(next(iter(data.values())).shape[0])


def em_map(model: MixtureModel, data: Data, params: Params, chunk_size: int = 4096,
           pool: ThreadPoolExecutor | None = None, check: bool = False) -> tuple[Params, float]:
    """One evaluation of the EM map: ``(M(params), loglik(params))``.

    Closed-form models: chunk statistics summed in chunk order (``pool`` only computes
    chunks concurrently; the sum order is fixed).  Others: the generic numerical M-step.
    ``check`` (the first evaluation of a start): the model's outputs are checked
    (:mod:`src.models.checks`) so a broken model stops here with one sentence; a user
    model's ``log_joint`` is then evaluated once more per chunk to be checked in full.
    Exceptions raised inside a user model always become a ModelError naming the method.
    """
    if not model.has_closed_form_m_step:
        with checks.guarded(model, "log_joint"):
            return generic_em_map(model, data, params, check=check)
    n = _n_rows(data)
    bounds = [(a, min(a + chunk_size, n)) for a in range(0, n, chunk_size)]
    strict = check and not checks.is_builtin(model)

    def one(b: tuple[int, int]) -> tuple[Mapping[str, Any], float]:
        chunk = _slice(data, *b)
        with checks.guarded(model, "e_step_stats"):
            if strict:
                checks.check_log_joint(model, model.log_joint(chunk, params), b[1] - b[0], b[0])
            return model.e_step_stats(chunk, params)

    results = pool.map(one, bounds) if pool is not None and len(bounds) > 1 else map(one, bounds)
    total: dict[str, Any] | None = None
    ll = 0.0
    for b, out in zip(bounds, results):
        if check:
            stats, chunk_ll = checks.check_e_step_stats(model, out, b, total)
            if not np.isfinite(chunk_ll):
                checks.diagnose_loglik(model, _slice(data, *b), params, b, chunk_ll)
        else:
            stats, chunk_ll = out
        ll += float(chunk_ll)
        total = dict(stats) if total is None else {k: total[k] + v for k, v in stats.items()}
    with checks.guarded(model, "m_step"):
        new = model.m_step(total)
    if check:
        checks.check_params(model, new, "m_step")
    return new, ll


def start_params(model: MixtureModel, data: Data, seed: int, start: int) -> Params:
    """Random starting values of start ``start``, drawn from ``stream(seed, "start", start)``."""
    rng = stream(seed, "start", start)
    overrides = type(model).init_params is not MixtureModel.init_params
    if model.has_closed_form_m_step or overrides:
        with checks.guarded(model, "init_params"):
            params = model.init_params(data, rng)
        checks.check_params(model, params, "init_params" if overrides else "m_step")
        return params
    with checks.guarded(model, "log_joint"):
        return generic_init_params(model, data, rng)


# ------------------------------------------------- one start, one evaluation at a time
def _as_params(d: Mapping[str, Any]) -> Params:
    return {k: np.asarray(v, dtype=float) for k, v in d.items()}


def _new_start_state(start: int, params: Params, accelerate: str) -> dict[str, Any]:
    st: dict[str, Any] = {"start": start, "phase": "em" if accelerate == "none" else "sq0",
                          "params": params, "n_eval": 0, "prev_ll": None, "trace": [],
                          "best_params": params, "best_ll": None, "change": None,
                          "done": False, "converged": False, "warnings": []}
    if accelerate == "squarem":
        st["sq"] = {"step_max": squarem.STEP_MAX0}
    return st


def _accept(st: dict[str, Any], params: Params, ll: float, tol: float) -> None:
    """Record an accepted evaluation (new lists: states already handed out stay intact)."""
    prev = st["prev_ll"]
    if prev is not None:
        change = abs(ll - prev) / abs(ll) if ll != 0 else abs(ll - prev)
        st["change"] = change
        if change < tol:
            st["done"] = st["converged"] = True
    st["trace"] = st["trace"] + [ll]
    st["prev_ll"] = ll
    st["best_params"] = params
    st["best_ll"] = ll


def _advance(model: MixtureModel, data: Data, st: Mapping[str, Any], opts: Mapping[str, Any],
             pool: ThreadPoolExecutor | None) -> dict[str, Any]:
    """Evaluate the EM map once at ``st["params"]`` and return the next state (a new dict).

    The first evaluation of a start checks the model's outputs (see :func:`em_map`).
    """
    st = dict(st)
    params = st["params"]
    new_params, ll = em_map(model, data, params, opts["chunk_size"], pool,
                            check=st["n_eval"] == 0)
    st["n_eval"] = st["n_eval"] + 1
    phase = st["phase"]
    tol = opts["tol"]
    if phase == "em":
        _accept(st, params, ll, tol)
        st["params"] = new_params
    elif phase == "sq0":
        _accept(st, params, ll, tol)
        st["sq"] = {**st["sq"], "p0": params}
        st["params"] = new_params
        st["phase"] = "sq1"
    elif phase == "sq1":
        _accept(st, params, ll, tol)
        sq = st["sq"]
        a0 = squarem.first_step(model, sq["p0"], params, new_params, sq["step_max"])
        a, cand = squarem.propose(model, sq["p0"], params, new_params, a0)
        st["sq"] = {"step_max": sq["step_max"], "p0": sq["p0"], "p1": params, "p2": new_params,
                    "l1": ll, "a_first": a0, "a": a}
        st["params"] = cand
        st["phase"] = "sq2"
    elif phase == "sq2":
        sq = st["sq"]
        if sq["a"] > 1.0 and not (np.isfinite(ll) and ll >= sq["l1"]):
            a, cand = squarem.propose(model, sq["p0"], sq["p1"], sq["p2"], 0.5 * (sq["a"] + 1.0))
            st["sq"] = {**sq, "a": a}
            st["params"] = cand
        else:
            _accept(st, params, ll, tol)
            failed = sq["a"] < sq["a_first"]
            st["sq"] = {"step_max": squarem.update_step_max(sq["step_max"], sq["a_first"], failed)}
            st["params"] = new_params
            st["phase"] = "sq0"
    else:
        raise ValueError(f"unknown EM phase {phase!r} in the saved state")
    if not st["done"] and st["n_eval"] >= opts["max_iter"]:
        st["done"] = True
    return st


def _collect(st: dict[str, Any], caught: list[warnings.WarningMessage],
             seen: set[tuple[Any, ...]]) -> None:
    """Keep the distinct ModelWarning sentences; re-issue any other warning once per start.

    ``seen`` (one set per start) holds the warnings already re-issued, so a warning raised
    at every evaluation (e.g. NumPy's invalid value) is shown once, not thousands of times.
    """
    for w in caught:
        if issubclass(w.category, ModelWarning):
            text = str(w.message)
            if text not in st["warnings"]:
                st["warnings"] = st["warnings"] + [text]
        else:
            key = (w.category, str(w.message), w.filename, w.lineno)
            if key not in seen:
                seen.add(key)
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def run_start(model: MixtureModel, data: Data, options: Mapping[str, Any], start: int,
              state: Mapping[str, Any] | None = None,
              on_state: Callable[[dict[str, Any]], None] | None = None,
              on_iteration: Callable[[int, int, float], None] | None = None) -> dict[str, Any]:
    """Run random start ``start`` to the end (top level, picklable: workers call it too).

    ``options``: tol, max_iter, seed, accelerate, chunk_size, n_threads, init_params.
    ``state`` resumes a start saved by ``on_state`` (called after every evaluation with a
    fresh dict).  Returns the start's result: params (model order), loglik, n_iter,
    converged, trace, warnings, change.
    """
    if state is None:
        init = options.get("init_params")
        with threadpool_limits(limits=1, user_api="blas"):
            p = _as_params(init) if init is not None else start_params(
                model, data, options["seed"], start)
        st = _new_start_state(start, p, options["accelerate"])
    else:
        st = dict(state)
    n_threads = int(options.get("n_threads", 1))
    pool = ThreadPoolExecutor(n_threads) if n_threads > 1 else None
    seen: set[tuple[Any, ...]] = set()
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            while not st["done"]:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    st = _advance(model, data, st, options, pool)
                _collect(st, caught, seen)
                if on_iteration is not None and st["best_ll"] is not None:
                    on_iteration(start, st["n_eval"], st["best_ll"])
                if on_state is not None:
                    on_state(st)
    finally:
        if pool is not None:
            pool.shutdown()
    return {"start": start, "params": st["best_params"], "loglik": float(st["best_ll"]),
            "n_iter": int(st["n_eval"]), "converged": bool(st["converged"]),
            "trace": list(st["trace"]), "warnings": list(st["warnings"]),
            "change": st["change"]}


# -------------------------------------------------------------------- the driver
def _restore(d: Mapping[str, Any]) -> dict[str, Any]:
    """A saved start state or result with its parameter dicts as float arrays."""
    out = dict(d)
    for key in ("params", "best_params"):
        if key in out and out[key] is not None:
            out[key] = _as_params(out[key])
    if "sq" in out:
        out["sq"] = {k: (_as_params(v) if isinstance(v, Mapping) else v) for k, v in out["sq"].items()}
    return out


def _shown_start(key: Any) -> str:
    """A saved start's key (its 0-based index as text) as messages name it: from 1."""
    if isinstance(key, str) and key.isascii() and key.isdigit():
        return str(int(key) + 1)
    return repr(key)


def _check_saved(saved: Any, config: Mapping[str, Any], model: MixtureModel, n_starts: int) -> None:
    """CheckpointInvalid unless ``saved`` is an EM state this fit can resume (same options,
    starts in range, every field present with the model's parameter shapes)."""
    shapes = {s.name: (model.n_components, *s.shape) for s in model.param_specs()}
    number = (int, float)
    require(isinstance(saved, Mapping) and saved.get("kind") == "em_fit", "it is not an EM state")
    require(saved.get("config") == dict(config), "it was made with other EM options")
    require(isinstance(saved.get("seconds", 0.0), number), "its time is not a number")
    finished = saved.get("finished", {})
    require(isinstance(finished, Mapping), "its finished starts are not a mapping")
    for key, res in finished.items():
        shown = _shown_start(key)
        require(isinstance(key, str) and key.isascii() and key.isdigit() and int(key) < n_starts,
                f"finished start {shown} is out of range (starts 1 to {n_starts})")
        require(isinstance(res, Mapping) and {"params", "loglik", "n_iter", "converged", "trace",
                                               "warnings", "change"} <= set(res),
                f"finished start {shown} lacks fields")
        check_arrays(res["params"], shapes, f"start {shown} params")
        require(isinstance(res["loglik"], number) and isinstance(res["n_iter"], int)
                and isinstance(res["trace"], list) and isinstance(res["warnings"], list),
                f"finished start {shown} has fields of the wrong type")
    cur = saved.get("current")
    if cur:
        require(isinstance(cur, Mapping) and {"start", "phase", "params", "n_eval", "prev_ll",
                                              "trace", "best_params", "best_ll", "change", "done",
                                              "converged", "warnings"} <= set(cur),
                "its current start lacks fields")
        require(isinstance(cur["start"], int) and 0 <= cur["start"] < n_starts
                and str(cur["start"]) not in finished, "its current start is out of range")
        phases = ("em",) if config["accelerate"] == "none" else ("sq0", "sq1", "sq2")
        require(cur["phase"] in phases, f"its current start is in step {cur['phase']!r}")
        check_arrays(cur["params"], shapes, "current params")
        check_arrays(cur["best_params"], shapes, "current best params")
        require(isinstance(cur["n_eval"], int) and isinstance(cur["trace"], list)
                and isinstance(cur["warnings"], list)
                and all(cur[k] is None or isinstance(cur[k], number)
                        for k in ("prev_ll", "best_ll", "change")),
                "its current start has fields of the wrong type")
        if config["accelerate"] != "none":
            sq = cur.get("sq")
            require(isinstance(sq, Mapping) and isinstance(sq.get("step_max"), number),
                    "its SQUAREM state is missing")
            for k in ("p0", "p1", "p2"):
                if cur["phase"] != "sq0" and (k == "p0" or cur["phase"] == "sq2"):
                    check_arrays(sq.get(k), shapes, f"SQUAREM {k}")
            for k in ("l1", "a_first", "a"):
                require(cur["phase"] != "sq2" or isinstance(sq.get(k), number),
                        f"SQUAREM {k} is missing")


def fit_em(model: MixtureModel, data: Data, *, n_starts: int = 10, tol: float = 1e-8,
           max_iter: int = 1000, seed: int = 0, accelerate: str = "none",
           chunk_size: int = 4096, init_params: Params | None = None,
           checkpoint: Checkpointer | None = None, executor: Any = None,
           on_iteration: Callable[[int, int, float], None] | None = None,
           n_threads: int = 1) -> FitResult:
    """Fit ``model`` to ``data`` by EM from several random starts; keep the best.

    ``init_params`` given: one start from those values.  ``checkpoint``: resume from its
    state and checkpoint after every evaluation (every finished start with ``force``).
    ``executor``: run each start on a worker (``map_unordered``).  ``n_threads``: chunks
    of one EM map computed on that many threads (BLAS stays at 1 thread).
    """
    if accelerate not in ACCELERATIONS:
        raise ValueError(f"accelerate must be one of {ACCELERATIONS}, got {accelerate!r}")
    for name, value, low in (("n_starts", n_starts, 1), ("max_iter", max_iter, 1),
                             ("chunk_size", chunk_size, 1), ("n_threads", n_threads, 1)):
        if int(value) < low:
            raise ValueError(f"{name} must be at least {low}, got {value}")
    if not tol >= 0:
        raise ValueError(f"tol must be a non-negative number, got {tol}")
    checkpoint = checkpoint if checkpoint is not None else NullCheckpointer()
    n_starts = 1 if init_params is not None else int(n_starts)
    options = {"tol": float(tol), "max_iter": int(max_iter), "seed": int(seed),
               "accelerate": accelerate, "chunk_size": int(chunk_size),
               "n_threads": int(n_threads),
               "init_params": None if init_params is None else _as_params(init_params)}
    config = {k: v for k, v in options.items() if k not in ("init_params", "n_threads")}
    config["n_starts"] = n_starts
    t0 = time.perf_counter()

    saved = checkpoint.resume_state()
    finished: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    seconds_before = 0.0
    if saved:
        _check_saved(saved, config, model, n_starts)  # CheckpointInvalid: the phase starts over
        finished = {str(k): _restore(v) for k, v in saved.get("finished", {}).items()}
        current = _restore(saved["current"]) if saved.get("current") else None
        seconds_before = float(saved.get("seconds", 0.0))

    def save(cur: dict[str, Any] | None, force: bool = False) -> None:
        checkpoint.checkpoint({"kind": "em_fit", "config": config, "finished": dict(finished),
                               "current": cur,
                               "seconds": seconds_before + time.perf_counter() - t0},
                              force=force)

    missing = [s for s in range(n_starts) if str(s) not in finished]
    if executor is not None and missing:
        tasks = [(model, data, options, s) for s in missing]
        for idx, res in executor.map_unordered(run_start, tasks):
            finished[str(missing[idx])] = res
            save(None, force=True)
    else:
        for s in missing:
            resume = current if current is not None and int(current["start"]) == s else None
            res = run_start(model, data, options, s, state=resume,
                            on_state=lambda st: save(st), on_iteration=on_iteration)
            finished[str(s)] = res
            save(None, force=True)

    return _assemble(model, data, finished, n_starts, options,
                     seconds_before + time.perf_counter() - t0)


def _assemble(model: MixtureModel, data: Data, finished: Mapping[str, Mapping[str, Any]],
              n_starts: int, options: Mapping[str, Any], seconds: float) -> FitResult:
    """Best start (highest finite loglik, ties: lowest index) in canonical class order."""
    results = [finished[str(s)] for s in range(n_starts)]
    lls = [float(r["loglik"]) for r in results]
    finite = [s for s in range(n_starts) if np.isfinite(lls[s])]
    if not finite:
        raise ModelError(t("em.no_finite_start", model=type(model).__name__))
    best = max(finite, key=lambda s: (lls[s], -s))
    res = results[best]
    params = _as_params(res["params"])
    params = model.permute(params, model.canonical_order(params))
    notes = list(res["warnings"])
    if not res["converged"]:
        notes.append(t("em.not_converged", start=best + 1, max_iter=options["max_iter"],
                       change=float(res["change"]) if res["change"] is not None else float("nan"),
                       tol=options["tol"]))
    others = sum(1 for s in range(n_starts) if s != best and not results[s]["converged"])
    if others:
        notes.append(t("em.starts_not_converged", count=others, total=n_starts))
    return FitResult(params=params, loglik=lls[best], n_iter=int(res["n_iter"]),
                     converged=bool(res["converged"]), best_start=best, start_logliks=lls,
                     start_n_iter=[int(r["n_iter"]) for r in results],
                     start_converged=[bool(r["converged"]) for r in results],
                     loglik_trace=list(res["trace"]), n_obs=_n_rows(data),
                     n_params=model.n_free_parameters(), seconds=seconds, warnings=notes)
