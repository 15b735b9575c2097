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
* several starts (in process, or one per worker through an executor), the best kept:
  many cheap candidates, the best run to convergence (:mod:`src.estimation.starts`);
* **lockstep** for models whose rows compress (built-in LCA: the distinct answer patterns
  with their counts, :meth:`~src.models.lca.LatentClassModel.compressed_rows`): one EM-map
  evaluation of such data costs less than Python's overhead per evaluation, so the
  candidates run in groups of :data:`CANDIDATE_GROUP` (fixed by candidate number) and the
  final starts all together, every step one stacked evaluation of all active starts
  (``em_map_batch``) and their SQUAREM proposals together (:func:`squarem.proposals`).
  Each start makes the same transitions as alone; its numbers can differ from a lone run
  in the last bits, so the groups never depend on workers or interruptions: this path
  runs in process (an executor is not used), is checkpointed after every group of
  candidates and every step of the final starts, and resumes bitwise-identically;
* **row weights** (:data:`~src.models.base.WEIGHT_KEY` in the data dict: a row of weight w
  stands for w identical rows): the EM map, :func:`final_stats` and ``n_obs`` (the sum of
  the weights) honour them; starting values ignore them (:mod:`src.estimation.starts`);
  integer weights give the replicated rows' estimates (to rounding: the sums run in
  another order);
* each finished start checked for a degenerate maximum (:meth:`MixtureModel.degeneracies`:
  a collapsed covariance, too few rows, a regression sigma at its floor); flagged starts
  are never chosen while an unflagged one exists, and the replication of the chosen
  maximum is summarised (:class:`~src.estimation.results.FitResult`).

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

import hashlib
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from threadpoolctl import ThreadpoolController

from src.models import checks
from src.models.base import Data, MixtureModel, ModelWarning, Params, split_weight
from src.utils.checkpointing import Checkpointer, NullCheckpointer, check_arrays, require
from src.utils.errors import ModelError
from src.utils.messages import register, t
from src.utils.rng import stream

from . import squarem, starts
from .results import FitResult, as_count

__all__ = ["fit_em", "run_start", "run_candidate", "em_map", "start_params", "draw_random_params",
           "final_stats", "replication_summary", "n_observations", "REPLICATION_ABS_TOL"]

#: replication: log-likelihoods within max(this, 100 * tol * |best|) reach the same maximum
REPLICATION_ABS_TOL = 1e-3

register({
    "em.not_converged": {
        "en": "start {start} did not converge in {max_iter} iterations (last relative change "
              "{change:.3g}, tol {tol:g}); increase --max-iter or loosen --tol",
        "zh": "第 {start} 个起点在 {max_iter} 次迭代内未收敛（最后的相对变化 {change:.3g}，"
              "容差 {tol:g}）；请增大 --max-iter 或放宽 --tol",
    },
    "em.starts_not_converged": {
        "en": "{count} of {total} starts did not converge within --max-iter",
        "zh": "{total} 个起点中有 {count} 个未在 --max-iter 内收敛",
    },
    "em.flagged_excluded": {
        "en": "{count} of {total} starts ended at a degenerate solution ({kinds}) and were not "
              "chosen",
        "zh": "{total} 个起点中有 {count} 个收敛到退化解（{kinds}），未被选用",
    },
    "em.all_flagged": {
        "en": "every one of the {total} starts ended at a degenerate solution ({kinds}), so the "
              "best of them is reported; use fewer classes, more starts, or a larger reg_covar "
              "or sigma_floor",
        "zh": "全部 {total} 个起点都收敛到退化解（{kinds}），因此报告其中最好的一个；请减少类别数、"
              "增加起点，或增大 reg_covar 或 sigma_floor",
    },
    "em.not_replicated": {
        "en": "the best log-likelihood {loglik:.6f} was reached by only one of {total} starts, "
              "so it may be a local maximum; increase --n-starts (and --n-candidates)",
        "zh": "最佳对数似然 {loglik:.6f} 在 {total} 个起点中只被一个起点达到，可能是局部极大值；"
              "请增大 --n-starts（以及 --n-candidates）",
    },
    "em.no_finite_start": {
        "en": "Every random start of {model} ended with a non-finite log-likelihood; check the "
              "data, or the model's log_joint and starting values.",
        "zh": "{model} 的所有随机起点都以非有限的对数似然结束；请检查数据，或模型的 log_joint 和初始值。",
    },
})

ACCELERATIONS = ("none", "squarem")

#: (controller, len(sys.modules) when made): finding the BLAS libraries costs milliseconds,
#: as much as a hundred EM iterations on small data
_CONTROLLER: list[Any] = [None, -1]


def _one_blas_thread() -> Any:
    """``threadpool_limits(1, "blas")`` without rescanning the loaded libraries every time
    (the controller is made again whenever modules were imported since)."""
    if _CONTROLLER[1] != len(sys.modules):
        _CONTROLLER[:] = [ThreadpoolController(), len(sys.modules)]
    return _CONTROLLER[0].limit(limits=1, user_api="blas")


# ------------------------------------------------------------------ the EM map
def _slice(data: Data, a: int, b: int) -> Data:
    return {k: v[a:b] for k, v in data.items()}


def _n_rows(data: Data) -> int:
    return int(next(iter(data.values())).shape[0])


def is_engine(data: Any) -> bool:
    """True when ``data`` is a row engine (:mod:`src.estimation.engines`: rows in partitions,
    streamed or on a Dask cluster) rather than a data dict in memory."""
    return not isinstance(data, dict) and hasattr(data, "reduce_stats")


def n_observations(data: Data) -> float:
    """The n of the criteria: the number of rows, or the sum of the row weights
    (:data:`~src.models.base.WEIGHT_KEY`: a row with weight w stands for w rows)."""
    if is_engine(data):
        total = getattr(data, "weight_sum", None)
        return int(data.n_obs) if total is None else float(total)
    rows, w = split_weight(data)
    return _n_rows(rows) if w is None else as_count(w.sum())


def em_map(model: MixtureModel, data: Data, params: Params, chunk_size: int = 4096,
           pool: ThreadPoolExecutor | None = None, check: bool = False) -> tuple[Params, float]:
    """One evaluation of the EM map: ``(M(params), loglik(params))``.

    Closed-form models: chunk statistics summed in chunk order (``pool`` only computes
    chunks concurrently; the sum order is fixed).  Others: the generic numerical M-step.
    ``check`` (the first evaluation of a start): the model's outputs are checked
    (:mod:`src.models.checks`) so a broken model stops here with one sentence; a user
    model's ``log_joint`` is then evaluated once more per chunk to be checked in full.
    Exceptions raised inside a user model always become a ModelError naming the method.
    Row weights (:data:`~src.models.base.WEIGHT_KEY` in ``data``) weight every row's
    statistics and log-likelihood (``e_step_stats_weighted``); the model never sees the key.
    """
    if is_engine(data):   # rows in partitions: one pass of the engine, the M-step here
        from .engines import engine_em_map, require_closed_form
        require_closed_form(model)
        if getattr(model, "m_step_rows", None) is not None:
            stats, ll = data.reduce_stats(model, params)
            with checks.guarded(model, "m_step"):
                new = model.m_step_rows(stats, params, row_sums(data))
        else:
            new, ll = engine_em_map(model, data, params)
        if check:
            checks.check_params(model, new, "m_step")
        return new, ll
    summer = row_sums(data, chunk_size) if getattr(model, "m_step_rows", None) else None
    data, row_weights = split_weight(data)
    if not model.has_closed_form_m_step:
        with checks.guarded(model, "log_joint"):
            from .numeric_mstep import generic_em_map   # scipy.optimize: only when needed
            return generic_em_map(model, data, params, check=check, weights=row_weights)
    compact = _compressed(model, data, row_weights)
    rows, weights = (data, row_weights) if compact is None else compact
    n = _n_rows(rows)
    bounds = [(a, min(a + chunk_size, n)) for a in range(0, n, chunk_size)]
    strict = check and not checks.is_builtin(model)

    def one(b: tuple[int, int]) -> tuple[Mapping[str, Any], float]:
        chunk = _slice(rows, *b)
        with checks.guarded(model, "e_step_stats"):
            if strict:
                checks.check_log_joint(model, model.log_joint(chunk, params), b[1] - b[0], b[0])
            if weights is not None:
                return model.e_step_stats_weighted(chunk, params, weights[b[0]:b[1]])
            return model.e_step_stats(chunk, params)

    results = pool.map(one, bounds) if pool is not None and len(bounds) > 1 else map(one, bounds)
    total: dict[str, Any] | None = None
    ll = 0.0
    for b, out in zip(bounds, results):
        if check:
            stats, chunk_ll = checks.check_e_step_stats(model, out, b, total)
            if not np.isfinite(chunk_ll):
                if compact is not None:   # name the row of the data, not the pattern
                    checks.diagnose_loglik(model, data, params, (0, _n_rows(data)), chunk_ll)
                checks.diagnose_loglik(model, _slice(rows, *b), params, b, chunk_ll)
        else:
            stats, chunk_ll = out
        ll += float(chunk_ll)
        total = dict(stats) if total is None else {k: total[k] + v for k, v in stats.items()}
    with checks.guarded(model, "m_step"):
        new = model.m_step(total) if summer is None else model.m_step_rows(total, params, summer)
    if check:
        checks.check_params(model, new, "m_step")
    return new, ll


def row_sums(data: Any, chunk_size: int = 4096) -> Callable[..., Any]:
    """``total(fn, *args)``: ``fn(rows, w, *args)`` summed (``+``, in a fixed order) over the
    chunks of ``data``'s rows (``w`` their row weights or None): in memory chunks of
    ``chunk_size`` rows as :func:`em_map` cuts them; a row engine's partitions' chunks in
    partition order (``fn`` and ``args`` travel to the workers).

    It is what a model whose M-step passes over the rows gets: one declaring
    ``m_step_rows(stats, params, row_sum)`` has it called instead of ``m_step(stats)``
    (the covariate model's Newton steps evaluate each trial beta on the rows), and one
    declaring ``summarise_params(params, row_sum)`` has its chosen estimate completed by it
    before the canonical order (the covariate model's average predicted class
    probabilities)."""
    if is_engine(data):
        def total_engine(fn: Callable[..., Any], *args: Any) -> Any:
            return _add_in_order(data.map_partitions(_sum_chunks, fn, args))
        return total_engine
    rows, w = split_weight(data)
    n = _n_rows(rows)

    def total(fn: Callable[..., Any], *args: Any) -> Any:
        return _add_in_order(fn(_slice(rows, a, min(a + chunk_size, n)),
                                None if w is None else w[a:a + chunk_size], *args)
                             for a in range(0, n, chunk_size))
    return total


def _sum_chunks(chunks: Any, fn: Callable[..., Any], args: tuple) -> Any:
    """One partition's ``fn(rows, w, *args)`` over its chunks, added in order (None: no rows)."""
    return _add_in_order(fn(*split_weight(chunk), *args) for chunk in chunks)


def _add_in_order(parts: Any) -> Any:
    total = None
    for part in parts:
        if part is not None:
            total = part if total is None else total + part
    return total


def _compressed(model: MixtureModel, data: Data,
                weights: np.ndarray | None = None) -> tuple[Data, np.ndarray] | None:
    """``(rows, weights)`` when the model evaluates its E-step on distinct rows weighted by
    their counts (a built-in model's ``compressed_rows``, e.g. LCA's answer patterns; with
    row ``weights`` a pattern's count is the sum of its rows' weights), else None.  Only
    built-in models: the compressed E-step is not part of the user-model API.  ``data``
    without the weight key (:func:`~src.models.base.split_weight`)."""
    get = getattr(model, "compressed_rows", None)
    if get is None or not checks.is_builtin(model) or is_engine(data):
        return None
    return get(data) if weights is None else get(data, weights=weights)


def start_params(model: MixtureModel, data: Data, seed: int, start: int) -> Params:
    """Random starting values of start ``start``, drawn from ``stream(seed, "start", start)``."""
    return draw_random_params(model, data, stream(seed, "start", start))


def draw_random_params(model: MixtureModel, data: Data, rng: np.random.Generator) -> Params:
    """The model's random starting values (its ``init_params`` or the generic ones), checked.
    Row weights are ignored: starting values need only be valid."""
    data = split_weight(data)[0]
    overrides = type(model).init_params is not MixtureModel.init_params
    if model.has_closed_form_m_step or overrides:
        with checks.guarded(model, "init_params"):
            params = model.init_params(data, rng)
        checks.check_params(model, params, "init_params" if overrides else "m_step")
        return params
    with checks.guarded(model, "log_joint"):
        from .numeric_mstep import generic_init_params
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
    new_params, ll = em_map(model, data, st["params"], opts["chunk_size"], pool,
                            check=st["n_eval"] == 0)
    return _transition(model, st, new_params, ll, opts)


def _needs_proposal(st: Mapping[str, Any], new_params: Params, ll: float
                    ) -> tuple[tuple[Params, Params, Params], float | None, float] | None:
    """``(cycle, step, step_max)`` when :func:`_transition` will ask SQUAREM for a proposal
    (a new cycle: step None; a backtracking one: the step to try), else None."""
    phase = st["phase"]
    if phase == "sq1":
        return (st["sq"]["p0"], st["params"], new_params), None, st["sq"]["step_max"]
    if phase == "sq2":
        sq = st["sq"]
        if sq["a"] > 1.0 and not (np.isfinite(ll) and ll >= sq["l1"]):
            return (sq["p0"], sq["p1"], sq["p2"]), 0.5 * (sq["a"] + 1.0), sq["step_max"]
    return None


def _transition(model: MixtureModel, st: Mapping[str, Any], new_params: Params, ll: float,
                opts: Mapping[str, Any],
                proposal: tuple[float | None, float, Params] | None = None) -> dict[str, Any]:
    """The next state (a new dict) once the EM map at ``st["params"]`` gave ``(new_params,
    ll)``: plain EM or one step of the SQUAREM cycle (module :mod:`squarem`).
    ``proposal``: SQUAREM's ``(a_first, a, candidate)`` for this step when already computed
    (:func:`squarem.proposals`, for several starts at once)."""
    st = dict(st)
    params = st["params"]
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
        if proposal is None:
            a0, a, cand = squarem.first_proposal(model, sq["p0"], params, new_params,
                                                 sq["step_max"])
        else:
            a0, a, cand = proposal
        st["sq"] = {"step_max": sq["step_max"], "p0": sq["p0"], "p1": params, "p2": new_params,
                    "l1": ll, "a_first": a0, "a": a}
        st["params"] = cand
        st["phase"] = "sq2"
    elif phase == "sq2":
        sq = st["sq"]
        if sq["a"] > 1.0 and not (np.isfinite(ll) and ll >= sq["l1"]):
            if proposal is None:
                a, cand = squarem.propose(model, sq["p0"], sq["p1"], sq["p2"],
                                          0.5 * (sq["a"] + 1.0))
            else:
                a, cand = proposal[1], proposal[2]
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


def _run(model: MixtureModel, data: Data, options: Mapping[str, Any], st: dict[str, Any],
         until: int | None = None,
         on_state: Callable[[dict[str, Any]], None] | None = None,
         on_iteration: Callable[[int, int, float], None] | None = None) -> dict[str, Any]:
    """Advance a start state until it is done (or has made ``until`` evaluations)."""
    n_threads = int(options.get("n_threads", 1))
    pool = ThreadPoolExecutor(n_threads) if n_threads > 1 else None
    seen: set[tuple[Any, ...]] = set()
    try:
        with _one_blas_thread():
            while not st["done"] and (until is None or st["n_eval"] < until):
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    st = _advance(model, data, st, options, pool)
                _collect(st, caught, seen)
                if on_iteration is not None and st["best_ll"] is not None:
                    on_iteration(int(st["start"]), st["n_eval"], st["best_ll"])
                if on_state is not None:
                    on_state(st)
    finally:
        if pool is not None:
            pool.shutdown()
    return st


def run_start(model: MixtureModel, data: Data, options: Mapping[str, Any], start: int,
              state: Mapping[str, Any] | None = None,
              on_state: Callable[[dict[str, Any]], None] | None = None,
              on_iteration: Callable[[int, int, float], None] | None = None) -> dict[str, Any]:
    """Run start ``start`` to the end (top level, picklable: workers call it too).

    ``options``: tol, max_iter, seed, accelerate, chunk_size, n_threads, init_params.
    ``state`` resumes a start saved by ``on_state`` (called after every evaluation with a
    fresh dict), or continues a candidate (:func:`run_candidate`) or an extra start; without
    it the start draws random starting values from ``stream(seed, "start", start)``.
    Returns the start's result: params (model order), loglik, n_iter, converged, trace,
    warnings, change, kind, flags (:meth:`MixtureModel.degeneracies` at the estimate).
    """
    st = _first_state(model, data, options, start) if state is None else dict(state)
    st = _run(model, data, options, st, None, on_state, on_iteration)
    return _result(model, data, options, st)


def _result(model: MixtureModel, data: Data, options: Mapping[str, Any],
            st: Mapping[str, Any]) -> dict[str, Any]:
    """A finished start's result (see :func:`run_start`) from its last state."""
    params = st["best_params"]
    with _one_blas_thread():
        flags = start_flags(model, data, params, int(options.get("chunk_size", 4096)))
    return {"start": int(st["start"]), "params": params, "loglik": float(st["best_ll"]),
            "n_iter": int(st["n_eval"]), "converged": bool(st["converged"]),
            "trace": list(st["trace"]), "warnings": list(st["warnings"]),
            "change": st["change"], "kind": str(st.get("kind", "random")), "flags": flags}


def _first_state(model: MixtureModel, data: Data, options: Mapping[str, Any],
                 start: int) -> dict[str, Any]:
    """The state of start ``start`` from the given starting values (``init_params``) or
    random ones (``stream(seed, "start", start)``), as :func:`run_start` begins it."""
    init = options.get("init_params")
    with _one_blas_thread():
        p = _as_params(init) if init is not None else start_params(
            model, data, options["seed"], start)
    st = _new_start_state(start, p, options["accelerate"])
    st["kind"] = "given" if init is not None else "random"
    return st


def run_candidate(model: MixtureModel, data: Data, options: Mapping[str, Any],
                  candidate: int) -> dict[str, Any]:
    """Candidate ``candidate``'s state after its short run (top level: workers call it too).

    Starting values from :func:`src.estimation.starts.candidate_params` (its stream
    ``stream(seed, "candidate", candidate)``), then ``options["candidate_iter"]``
    evaluations (fewer when it converges).  The state is a start state (plus ``kind``),
    which :func:`run_start` continues.
    """
    st = _candidate_state(model, data, options, candidate)
    return _run(model, data, options, st, int(options["candidate_iter"]))


def _candidate_state(model: MixtureModel, data: Data, options: Mapping[str, Any],
                     candidate: int) -> dict[str, Any]:
    """Candidate ``candidate``'s first state: its starting values, checked, and its kind."""
    seen: set[tuple[Any, ...]] = set()
    with _one_blas_thread():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with checks.guarded(model, "m_step"):
                p, kind = starts.candidate_params(model, data, options["seed"], candidate)
            checks.check_params(model, p, "m_step")
    st = _new_start_state(candidate, _as_params(p), options["accelerate"])
    st["kind"] = kind
    _collect(st, caught, seen)
    return st


# ------------------------------------------------- several starts in lockstep
#: the lockstep path runs the candidates in groups of this many, fixed by candidate number
CANDIDATE_GROUP = 10
#: lockstep only up to this many distinct rows: beyond, an evaluation costs more than
#: Python's overhead and the starts are better spread over workers
LOCKSTEP_MAX_ROWS = 16384


def lockstep(model: MixtureModel, data: Data) -> bool:
    """True when :func:`fit_em` runs the starts of ``model`` on ``data`` in lockstep.

    That is a built-in model with a batched EM map (``em_map_batch``: one evaluation of
    several parameter sets as a few stacked array operations) whose rows compress
    (``compressed_rows``: LCA's answer patterns) to at most :data:`LOCKSTEP_MAX_ROWS`
    distinct rows, so one evaluation is cheap and Python's overhead per evaluation would
    dominate.  Depends on the model and the data only.
    """
    if getattr(model, "em_map_batch", None) is None or not model.has_closed_form_m_step:
        return False
    compact = _compressed(model, *split_weight(data))
    return compact is not None and _n_rows(compact[0]) <= LOCKSTEP_MAX_ROWS


def _check_first(model: MixtureModel, data: Data, params: Params, new: Params, ll: float,
                 chunk_size: int) -> None:
    """A start's first evaluation in lockstep: anything non-finite is diagnosed as
    :func:`em_map` does on its own (the single evaluation raises the model's error)."""
    if np.isfinite(ll) and all(np.all(np.isfinite(v)) for v in new.values()):
        return
    em_map(model, data, params, chunk_size, None, check=True)


def _run_group(model: MixtureModel, data: Data, options: Mapping[str, Any],
               states: Sequence[dict[str, Any]], until: int | None = None,
               on_step: Callable[[list[dict[str, Any]]], None] | None = None,
               on_iteration: Callable[[int, int, float], None] | None = None
               ) -> list[dict[str, Any]]:
    """Advance several start states in lockstep until each is done (or has made ``until``
    evaluations): every step evaluates the EM map of all active states at once
    (``model.em_map_batch``), then moves each state as :func:`_advance` would.

    Each state goes through the same transitions as on its own; its numbers can differ
    from a lone run's in the last bits (stacked matrix products), so the groups are fixed
    by the caller (never by workers or interruptions).  ``on_step(states)`` after every
    step; ``on_iteration(start, evaluation, loglik)`` for every active state.
    """
    states = [dict(st) for st in states]
    seen: list[set[tuple[Any, ...]]] = [set() for _ in states]
    chunk = int(options["chunk_size"])
    rows, w = split_weight(data)
    weighted = {} if w is None else {"weights": w}
    with _one_blas_thread():
        while True:
            active = [i for i, st in enumerate(states)
                      if not st["done"] and (until is None or st["n_eval"] < until)]
            if not active:
                break
            plist = [states[i]["params"] for i in active]
            news, lls, notes = model.em_map_batch(rows, plist, chunk, **weighted)
            for j, i in enumerate(active):
                if states[i]["n_eval"] == 0:
                    _check_first(model, data, plist[j], news[j], float(lls[j]), chunk)
            asks = {}   # SQUAREM proposals of this step, computed together
            for j, i in enumerate(active):
                ask = _needs_proposal(states[i], news[j], float(lls[j]))
                if ask is not None:
                    asks[j] = ask
            props = {}
            if asks:
                cycles, steps, step_maxs = (list(x) for x in zip(*asks.values()))
                props = dict(zip(asks, squarem.proposals(model, cycles, steps, step_maxs)))
            slices = []
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                for j, i in enumerate(active):
                    st = states[i]
                    fresh = [w for w in notes[j] if w not in st["warnings"]]
                    if fresh:
                        st = dict(st)
                        st["warnings"] = st["warnings"] + fresh
                    n0 = len(caught)
                    states[i] = _transition(model, st, news[j], float(lls[j]), options,
                                            props.get(j))
                    slices.append((i, n0, len(caught)))
            for i, a, b in slices:
                if b > a:
                    _collect(states[i], caught[a:b], seen[i])
                if on_iteration is not None and states[i]["best_ll"] is not None:
                    on_iteration(int(states[i]["start"]), states[i]["n_eval"], states[i]["best_ll"])
            if on_step is not None:
                on_step(states)
    return states


def final_stats(model: MixtureModel, data: Data, params: Params,
                chunk_size: int = 4096) -> dict[str, Any]:
    """Summed sufficient statistics at ``params`` (closed-form models), always with ``nk``.

    ``nk`` (K,) is the responsibility mass of each class (its effective number of rows;
    with row weights, the weighted mass).
    """
    if is_engine(data):   # each partition's sums, added in partition order
        parts = data.map_partitions(_chunks_final_stats, model, params)
        out = dict(parts[0])
        for part in parts[1:]:
            out = {k: out[k] + v for k, v in part.items()}
        return out
    return _chunks_final_stats([data], model, params, chunk_size)


def _chunks_final_stats(chunks: Any, model: MixtureModel, params: Params,
                        chunk_size: int = 1 << 62) -> dict[str, Any]:
    """:func:`final_stats` over data dicts in order (each cut into ``chunk_size`` rows)."""
    total: dict[str, Any] | None = None
    nk = np.zeros(model.n_components)
    for part in chunks:
        stats = _final_stats_dict(model, part, params, chunk_size)
        nk = nk + stats.pop("nk")
        total = stats if total is None else {k: total[k] + v for k, v in stats.items()}
    out = dict(total or {})
    out["nk"] = nk
    return out


def _final_stats_dict(model: MixtureModel, data: Data, params: Params,
                      chunk_size: int) -> dict[str, Any]:
    data, w = split_weight(data)
    n = _n_rows(data)
    total: dict[str, Any] | None = None
    nk = np.zeros(model.n_components)
    for a in range(0, n, chunk_size):
        b = min(a + chunk_size, n)
        chunk = _slice(data, a, b)
        if model.has_closed_form_m_step:
            stats, _ = (model.e_step_stats(chunk, params) if w is None
                        else model.e_step_stats_weighted(chunk, params, w[a:b]))
            total = dict(stats) if total is None else {k: total[k] + v for k, v in stats.items()}
            if "nk" in stats:
                continue
        resp, _ = model.e_step(chunk, params)
        nk = nk + (resp.sum(axis=0) if w is None else w[a:b] @ resp)
    out = dict(total or {})
    out.setdefault("nk", nk)
    return out


def start_flags(model: MixtureModel, data: Data, params: Params, chunk_size: int = 4096) -> list[str]:
    """The distinct degeneracy kinds of a start's estimate, sorted (empty: none)."""
    if type(model).degeneracies is MixtureModel.degeneracies:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with checks.guarded(model, "degeneracies"):
            stats = final_stats(model, data, params, chunk_size)
            kinds = model.degeneracies(params, stats)
    return sorted({str(k) for k in kinds})


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


_RESULT_FIELDS = {"params", "loglik", "n_iter", "converged", "trace", "warnings", "change",
                  "kind", "flags"}
_STATE_FIELDS = {"start", "phase", "params", "n_eval", "prev_ll", "trace", "best_params",
                 "best_ll", "change", "done", "converged", "warnings"}


def _check_state(cur: Any, config: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]],
                 what: str) -> None:
    """CheckpointInvalid unless ``cur`` is a start state of this fit (``what`` names it)."""
    number = (int, float)
    require(isinstance(cur, Mapping) and _STATE_FIELDS <= set(cur), f"{what} lacks fields")
    phases = ("em",) if config["accelerate"] == "none" else ("sq0", "sq1", "sq2")
    require(cur["phase"] in phases, f"{what} is in step {cur['phase']!r}")
    check_arrays(cur["params"], shapes, f"{what} params")
    check_arrays(cur["best_params"], shapes, f"{what} best params")
    require(isinstance(cur["n_eval"], int) and isinstance(cur["trace"], list)
            and isinstance(cur["warnings"], list) and isinstance(cur["done"], bool)
            and isinstance(cur["converged"], bool)
            and isinstance(cur.get("kind", ""), str)
            and all(cur[k] is None or isinstance(cur[k], number)
                    for k in ("prev_ll", "best_ll", "change")),
            f"{what} has fields of the wrong type")
    if config["accelerate"] != "none":
        sq = cur.get("sq")
        require(isinstance(sq, Mapping) and isinstance(sq.get("step_max"), number),
                f"the SQUAREM state of {what} is missing")
        for k in ("p0", "p1", "p2"):
            if cur["phase"] != "sq0" and (k == "p0" or cur["phase"] == "sq2"):
                check_arrays(sq.get(k), shapes, f"SQUAREM {k}")
        for k in ("l1", "a_first", "a"):
            require(cur["phase"] != "sq2" or isinstance(sq.get(k), number),
                    f"SQUAREM {k} is missing")


def _unit_key(key: Any, n_units: int, what: str, units: str) -> int:
    """A saved unit's key (its 0-based number as text) checked to be below ``n_units``."""
    shown = _shown_start(key)
    require(isinstance(key, str) and key.isascii() and key.isdigit() and int(key) < n_units,
            f"{what} {shown} is out of range ({units} 1 to {n_units})")
    return int(key)


def _check_saved(saved: Any, config: Mapping[str, Any], model: MixtureModel, n_starts: int,
                 n_candidates: int = 0, final: Any = None, n_units: int | None = None) -> None:
    """CheckpointInvalid unless ``saved`` is an EM state this fit can resume.

    Same options; finished starts among this fit's final starts (``final``: their unit
    numbers; None: not known yet, any unit below ``n_units``, default ``n_starts``);
    finished candidates below ``n_candidates`` (a ranked candidate kept only as its rank,
    ``slim``, is not a final start); every field present with the model's parameter shapes.
    """
    shapes = {s.name: (model.n_components, *s.shape) for s in model.param_specs()}
    number = (int, float)
    require(isinstance(saved, Mapping) and saved.get("kind") == "em_fit", "it is not an EM state")
    require(saved.get("config") == dict(config), "it was made with other EM options")
    require(isinstance(saved.get("seconds", 0.0), number), "its time is not a number")
    cands = saved.get("candidates", {})
    require(isinstance(cands, Mapping), "its finished candidates are not a mapping")
    for key, st in cands.items():
        i = _unit_key(key, n_candidates, "candidate", "candidates")
        if isinstance(st, Mapping) and st.get("slim") is True:   # ranked, not promoted
            require(isinstance(st.get("start"), int) and isinstance(st.get("kind"), str)
                    and (st.get("best_ll") is None or isinstance(st.get("best_ll"), number))
                    and (final is None or i not in final),
                    f"candidate {i + 1} has fields of the wrong type")
        else:
            _check_state(st, config, shapes, f"candidate {i + 1}")
        require(st["start"] == i, f"candidate {i + 1} is numbered {st['start']!r}")
    finished = saved.get("finished", {})
    require(isinstance(finished, Mapping), "its finished starts are not a mapping")
    if final is None:
        final_units = list(range(n_starts if n_units is None else n_units))
    else:
        final_units = [int(u) for u in final]
    n_units = max(final_units, default=-1) + 1
    for key, res in finished.items():
        shown = _shown_start(key)
        u = _unit_key(key, max(n_units, n_starts), "finished start", "starts")
        require(u in final_units, f"finished start {shown} is not one of this fit's final starts")
        require(isinstance(res, Mapping) and _RESULT_FIELDS <= set(res),
                f"finished start {shown} lacks fields")
        check_arrays(res["params"], shapes, f"start {shown} params")
        require(isinstance(res["loglik"], number) and isinstance(res["n_iter"], int)
                and isinstance(res["trace"], list) and isinstance(res["warnings"], list)
                and isinstance(res["kind"], str) and isinstance(res["flags"], list)
                and all(isinstance(f, str) for f in res["flags"]),
                f"finished start {shown} has fields of the wrong type")
    cur = saved.get("current")
    if cur and config.get("lockstep"):   # the final starts under way, in lockstep
        require(isinstance(cur, Mapping) and isinstance(cur.get("group"), Mapping),
                "its current starts are not a group")
        for key, st in cur["group"].items():
            shown = _shown_start(key)
            u = _unit_key(key, max(n_units, n_starts), "current start", "starts")
            require(u in final_units and key not in finished,
                    f"current start {shown} is not one of this fit's unfinished final starts")
            _check_state(st, config, shapes, f"current start {shown}")
            require(st["start"] == u, f"current start {shown} is numbered {st['start']!r}")
    elif cur:
        require(isinstance(cur, Mapping), "its current start lacks fields")
        require(isinstance(cur.get("start"), int) and cur["start"] in final_units
                and str(cur["start"]) not in finished, "its current start is out of range")
        _check_state(cur, config, shapes, "its current start")


def _digest(params: Params) -> str:
    """A short fingerprint of given starting values (so a saved state knows its extras)."""
    h = hashlib.sha256()
    for key in sorted(params):
        arr = np.ascontiguousarray(np.asarray(params[key], dtype=float))
        h.update(key.encode() + str(arr.shape).encode() + arr.tobytes())
    return h.hexdigest()[:16]


def fit_em(model: MixtureModel, data: Data, *, n_starts: int = 10,
           n_candidates: int = starts.DEFAULT_N_CANDIDATES,
           candidate_iter: int = starts.DEFAULT_CANDIDATE_ITER, tol: float = 1e-8,
           max_iter: int = 1000, seed: int = 0, accelerate: str = "none",
           chunk_size: int = 4096, init_params: Params | None = None,
           extra_starts: Sequence[Params] = (),
           checkpoint: Checkpointer | None = None, executor: Any = None,
           on_iteration: Callable[[int, int, float], None] | None = None,
           n_threads: int = 1) -> FitResult:
    """Fit ``model`` to ``data`` by EM from many starting points; keep the best proper maximum.

    The search (:mod:`src.estimation.starts`): ``max(n_candidates, n_starts)`` candidates of
    several kinds run ``candidate_iter`` evaluations each, then the ``n_starts`` best run to
    convergence; ``n_candidates = 0`` (and K = 1): ``n_starts`` random starts, as before.
    ``extra_starts``: given starting values run to convergence as well (added to the
    ``n_starts``, never instead), numbered after the drawn candidates (or random starts).
    ``init_params`` given: one start from those values (plus any extra starts).
    The chosen start is the one with the highest log-likelihood among those that
    :meth:`MixtureModel.degeneracies` does not flag (all flagged: the best, with a warning).

    ``checkpoint``: resume from its state and checkpoint after every candidate and every
    evaluation of a final start (every finished start with ``force``).  ``executor``: run
    each candidate and each final start on a worker (``map_unordered``); the results do not
    depend on it (a model run in lockstep, see the module doc, does not use it).
    ``on_iteration(start, evaluation, loglik)`` (in process, final starts
    only): ``start`` is the 0-based place in ``start_*``, as ``best_start``.  ``n_threads``: chunks of one EM map computed on that many threads (BLAS
    stays at 1 thread).
    """
    if accelerate not in ACCELERATIONS:
        raise ValueError(f"accelerate must be one of {ACCELERATIONS}, got {accelerate!r}")
    for name, value, low in (("n_starts", n_starts, 1), ("max_iter", max_iter, 1),
                             ("chunk_size", chunk_size, 1), ("n_threads", n_threads, 1),
                             ("n_candidates", n_candidates, 0),
                             ("candidate_iter", candidate_iter, 1)):
        if int(value) < low:
            raise ValueError(f"{name} must be at least {low}, got {value}")
    if not tol >= 0:
        raise ValueError(f"tol must be a non-negative number, got {tol}")
    checkpoint = checkpoint if checkpoint is not None else NullCheckpointer()
    n_starts = 1 if init_params is not None else int(n_starts)
    use_candidates = int(n_candidates) > 0 and init_params is None and model.n_components > 1
    n_drawn = max(int(n_candidates), n_starts) if use_candidates else n_starts
    extras = [_as_params(p) for p in extra_starts]
    shapes = {s.name: (model.n_components, *s.shape) for s in model.param_specs()}
    for j, p in enumerate(extras):
        try:
            check_arrays(p, shapes, f"extra start {j + 1}")
        except ValueError as exc:
            raise ValueError(f"{exc} (extra_starts must hold this model's parameters)") from None
    options = {"tol": float(tol), "max_iter": int(max_iter), "seed": int(seed),
               "accelerate": accelerate, "chunk_size": int(chunk_size),
               "n_threads": int(n_threads), "candidate_iter": int(candidate_iter),
               "init_params": None if init_params is None else _as_params(init_params)}
    config = {k: v for k, v in options.items() if k not in ("init_params", "n_threads")}
    config["n_starts"] = n_starts
    config["n_candidates"] = n_drawn if use_candidates else 0
    config["extra_starts"] = [_digest(p) for p in extras]
    grouped = lockstep(model, data)
    if grouped:
        config["lockstep"] = CANDIDATE_GROUP
    t0 = time.perf_counter()

    saved = checkpoint.resume_state()
    cands: dict[str, dict[str, Any]] = {}
    finished: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    seconds_before = 0.0
    n_cand = n_drawn if use_candidates else 0
    if saved:
        # the final starts are known only once the candidates are; checked again below
        _check_saved(saved, config, model, n_starts, n_cand,
                     n_units=n_drawn + len(extras))
        cands = {str(k): _restore(v) for k, v in saved.get("candidates", {}).items()}
        finished = {str(k): _restore(v) for k, v in saved.get("finished", {}).items()}
        current = saved.get("current") or None
        if current is not None:
            current = ({"group": {str(u): _restore(v) for u, v in current["group"].items()}}
                       if grouped else _restore(current))
        seconds_before = float(saved.get("seconds", 0.0))

    def save(cur: dict[str, Any] | None, force: bool = False) -> None:
        checkpoint.checkpoint({"kind": "em_fit", "config": config, "candidates": dict(cands),
                               "finished": dict(finished), "current": cur,
                               "seconds": seconds_before + time.perf_counter() - t0},
                              force=force)

    # stage 1: the candidates' short runs
    if use_candidates:
        require(not finished or len(cands) == n_drawn,
                "it has finished starts before its candidates")
        todo = [i for i in range(n_drawn) if str(i) not in cands]
        if grouped:   # in process, in groups fixed by candidate number
            for g in range(0, n_drawn, CANDIDATE_GROUP):
                group = [i for i in todo if g <= i < g + CANDIDATE_GROUP]
                if not group:
                    continue
                states = _run_group(model, data, options,
                                    [_candidate_state(model, data, options, i) for i in group],
                                    until=int(candidate_iter))
                for i, st in zip(group, states):
                    cands[str(i)] = st
                save(None)
        elif executor is not None and todo:
            tasks = [(model, data, options, i) for i in todo]
            for idx, st in executor.map_unordered(run_candidate, tasks):
                cands[str(todo[idx])] = st
                save(None)
        else:
            for i in todo:
                cands[str(i)] = run_candidate(model, data, options, i)
                save(None)
        final = _best_candidates(cands, n_drawn, n_starts)
        for i in range(n_drawn):   # the others' states are no longer needed: keep their rank
            st = cands[str(i)]
            if i not in final and not st.get("slim"):
                cands[str(i)] = {"start": i, "kind": st.get("kind", ""), "best_ll": st["best_ll"],
                                 "n_eval": st["n_eval"], "slim": True}
    else:
        final = list(range(n_starts))
    final += [n_drawn + j for j in range(len(extras))]
    if saved:
        _check_saved(saved, config, model, n_starts, n_cand, final=final)

    def initial(u: int) -> dict[str, Any] | None:
        """The state a final start begins from (None: random starting values)."""
        if u >= n_drawn:
            st = _new_start_state(u, extras[u - n_drawn], accelerate)
            st["kind"] = "extra"
            return st
        if not use_candidates:
            return None
        st = dict(cands[str(u)])
        if not st["done"]:  # warnings of the short run describe a passing state
            st["warnings"] = []
        return st

    # stage 2: the final starts, to convergence
    missing = [u for u in final if str(u) not in finished]
    if grouped and missing:   # in process, every final start in one lockstep group
        resumed = current["group"] if current is not None else {}
        group = [resumed[str(u)] if str(u) in resumed else
                 (initial(u) or _first_state(model, data, options, u)) for u in missing]

        def step(states: list[dict[str, Any]]) -> None:
            ended = False
            for st in states:
                if st["done"] and str(st["start"]) not in finished:
                    finished[str(st["start"])] = _result(model, data, options, st)
                    ended = True
            cur = {str(st["start"]): st for st in states if not st["done"]}
            save({"group": cur} if cur else None, force=ended)

        shown = None
        if on_iteration is not None:
            places = {u: final.index(u) for u in missing}
            shown = lambda u, i, ll: on_iteration(places[u], i, ll)  # noqa: E731
        step(group)   # a start that was done when saved
        _run_group(model, data, options, group, None, step, shown)
    elif executor is not None and missing:
        tasks = [(model, data, options, u, initial(u)) for u in missing]
        for idx, res in executor.map_unordered(run_start, tasks):
            finished[str(missing[idx])] = res
            save(None, force=True)
    else:
        for u in missing:
            resume = current if current is not None and int(current["start"]) == u else None
            shown = None   # progress names the start as results do: its place among the final ones
            if on_iteration is not None:
                place = final.index(u)
                shown = lambda s, i, ll, place=place: on_iteration(place, i, ll)  # noqa: E731
            res = run_start(model, data, options, u, state=resume or initial(u),
                            on_state=lambda st: save(st), on_iteration=shown)
            finished[str(u)] = res
            save(None, force=True)

    search = {"n_candidates": n_cand, "candidate_iter": int(candidate_iter),
              "n_starts": n_starts, "n_extra": len(extras)}
    return _assemble(model, data, [finished[str(u)] for u in final], final, options, search,
                     seconds_before + time.perf_counter() - t0)


def _best_candidates(cands: Mapping[str, Mapping[str, Any]], n_drawn: int, n_starts: int) -> list[int]:
    """The ``n_starts`` candidates with the highest log-likelihood after their short run,
    best first (ties, and non-finite values last: by number)."""
    def key(i: int) -> tuple[float, int]:
        ll = cands[str(i)]["best_ll"]
        ll = float(ll) if ll is not None else -np.inf
        return (-ll if np.isfinite(ll) else np.inf, i)
    return sorted(range(n_drawn), key=key)[:n_starts]


def replication_summary(lls: Sequence[float], best: int, pool: Sequence[int], tol: float,
                        pool_name: str) -> dict[str, Any]:
    """The replication summary (keys documented in :class:`FitResult`).

    ``lls``: every start's log-likelihood; ``best``: the chosen start; ``pool``: the starts
    compared; ``tol``: the EM tolerance, from which the replication tolerance follows.
    """
    best_ll = float(lls[best])
    rep_tol = max(REPLICATION_ABS_TOL, 100.0 * float(tol) * abs(best_ll))
    values = sorted((float(lls[s]) for s in pool if np.isfinite(lls[s])), reverse=True)
    maxima: list[list[Any]] = []
    for v in values:
        if maxima and maxima[-1][0] - v <= rep_tol:
            maxima[-1][1] += 1
        else:
            maxima.append([v, 1])
    reached = sum(1 for s in pool if np.isfinite(lls[s]) and abs(float(lls[s]) - best_ll) <= rep_tol)
    return {"best_loglik": best_ll, "n_reached": int(reached), "n_pool": len(values),
            "pool": pool_name, "tol": rep_tol, "maxima": maxima, "replicated": reached >= 2}


def _assemble(model: MixtureModel, data: Data, results: Sequence[Mapping[str, Any]],
              units: Sequence[int], options: Mapping[str, Any], search: Mapping[str, Any],
              seconds: float) -> FitResult:
    """Best unflagged start (highest finite loglik, ties: lowest index) in canonical class
    order; every start flagged: the best of them, with a warning."""
    n = len(results)
    lls = [float(r["loglik"]) for r in results]
    flags = [list(r.get("flags", [])) for r in results]
    finite = [s for s in range(n) if np.isfinite(lls[s])]
    if not finite:
        raise ModelError(t("em.no_finite_start", model=type(model).__name__))
    proper = [s for s in finite if not flags[s]]
    pool = proper or finite
    best = max(pool, key=lambda s: (lls[s], -s))
    res = results[best]
    params = _as_params(res["params"])
    if getattr(model, "summarise_params", None) is not None:   # see row_sums
        params = model.summarise_params(params, row_sums(data, options["chunk_size"]))
    params = model.permute(params, model.canonical_order(params))
    counts: dict[str, int] = {}
    for f in flags:
        for kind in f:
            counts[kind] = counts.get(kind, 0) + 1
    kinds = ", ".join(f"{k}: {counts[k]}" for k in sorted(counts))
    notes = list(res["warnings"])
    if not res["converged"]:
        notes.append(t("em.not_converged", start=best + 1, max_iter=options["max_iter"],
                       change=float(res["change"]) if res["change"] is not None else float("nan"),
                       tol=options["tol"]))
    others = sum(1 for s in range(n) if s != best and not results[s]["converged"])
    if others:
        notes.append(t("em.starts_not_converged", count=others, total=n))
    n_flagged = sum(1 for f in flags if f)
    if not proper:
        if n > 1:   # one start: the model's own warning says what happened
            notes.append(t("em.all_flagged", total=n, kinds=kinds))
    elif n_flagged:
        notes.append(t("em.flagged_excluded", count=n_flagged, total=n, kinds=kinds))
    rep = replication_summary(lls, best, pool, options["tol"], "unflagged" if proper else "all")
    if n > 1 and model.n_components > 1 and not rep["replicated"]:
        notes.append(t("em.not_replicated", loglik=lls[best], total=n))
    return FitResult(params=params, loglik=lls[best], n_iter=int(res["n_iter"]),
                     converged=bool(res["converged"]), best_start=best, start_logliks=lls,
                     start_n_iter=[int(r["n_iter"]) for r in results],
                     start_converged=[bool(r["converged"]) for r in results],
                     loglik_trace=list(res["trace"]), n_obs=n_observations(data),
                     n_params=model.n_free_parameters(), seconds=seconds, warnings=notes,
                     start_ids=[int(u) for u in units],
                     start_kinds=[str(r.get("kind", "random")) for r in results],
                     start_flags=flags, flags=counts, replication=rep, search=dict(search))
