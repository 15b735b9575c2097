"""Bootstrap likelihood-ratio test (BLRT) of K-1 against K classes.

McLachlan (1987); Nylund, Asparouhov & Muthen (2007).  The statistic is
``T = 2 (LL_K - LL_{K-1})`` of the fits to the observed data.  Its null distribution is
simulated: replicate ``r`` (0-based inside, shown from 1) draws a data set from the K-1
estimate with ``model_small.sample(params, data, rng)`` (an LCA replicate keeps each row's
missing answers, a regression mixture its predictors, as the parametric bootstrap does),
fits both models to it and keeps ``T*_r = 2 (LL*_K - LL*_{K-1})``.  The p-value is
``p = (1 + #{T*_r >= T}) / (B + 1)`` over the replicates used.  (The larger model may
have more than one class more, as when a list of K compares each with the previous one;
"K-1" below stands for the smaller.)

**Search.** A replicate's fits search at least as hard as the observed fits: the same
candidate and start policy (``fit_options``: ``n_starts``, ``n_candidates``,
``candidate_iter``, ``tol``, ``max_iter``, ``accelerate``, ``chunk_size``), with warm
starting values *added* (``fit_em(extra_starts=...)``), never instead:

* the K-1 fit gets the observed K-1 estimate;
* the K fit gets one split of every class of the replicate's own K-1 estimate
  (:func:`split_starts`).  (Not the observed K estimate: on data simulated from K-1
  classes it is one more start that only the replicates would get, pushing T* up and the
  test towards conservative; and a class of it can be empty there.)

A split of class j: the rows' responsibilities for class j are projected on the main
direction of their features (the leading eigenvector of the class's responsibility-weighted
covariance of the model's ``start_features``; for a model without them, of its class-j
complete-data scores), cut at the weighted mean; the two halves become two classes and one
M-step gives the K-class starting values (a Gaussian class splits into two along its main
axis, an LCA class by its strongest local dependence).  A replicate whose ``T*`` comes out
negative (its K fit found less than its K-1 fit, a search failure that would bias p
downward) is refitted with twice the starts and candidates from a fresh seed; the better K
fit is kept and such replicates are counted (``n_refitted``).

**Randomness and resuming.** Replicate r draws everything from ``stream(seed, "blrt", K, r)``:
its data, then the seeds of its fits; it depends on the K-1 estimate, not on the K one.
Each replicate is a unit of work on the executor (``map_unordered``); every finished
replicate is checkpointed; a resumed test computes only the missing ones.  The state names
the options and the K-1 estimate it was made with (not B, alpha or early stopping, which
only decide how many replicates are used, nor the K estimate, which only changes T), so a
state of other options raises :class:`~src.utils.checkpointing.CheckpointInvalid`.

**Early stopping** (``early_stop=True``) is decided on the replicates in index order only:
after every replicate, the test looks at the longest run 1..r of finished replicates and
stops as soon as the decision at ``alpha`` is settled by one of

* *curtailment*: even if every one of the B - r replicates not yet used came out at or
  above T (or every one below), the p-value of all B would stay on the same side of
  ``alpha`` (exact: the decision is the one all B replicates would give);
* *tail bound* (a clear rejection): none of T*_1..T*_r reaches T, ``(1 + 0) / (r + 1) <=
  alpha`` (so at least 19 replicates at alpha = 0.05), and Cantelli's one-sided inequality
  ``P(T* >= T) <= s^2 / (s^2 + (T - m)^2)``, with the mean m and variance s^2 of T*_1..T*_r
  replaced by their 99.9% upper confidence limits (normal theory), is at most alpha / 2
  (at r = 19 and T* with mean 11 and SD 4.7, a chi-square with 11 degrees of freedom, this
  needs T above about 71, where that chi-square's tail is about 1e-10).

The p-value reported is then the one of replicates 1..r.  Since the rule reads only
replicates 1..r, the result is the same whatever the completion order, the number of
workers or the interruptions.  Replicates that raise (e.g. a simulation that fails) are
left out and counted; replicates whose fits did not converge are kept and counted.

**Row weights.**  Frequency weights: the replicates simulate the rows as many times as
they stand for (:func:`~src.models.base.replicate_rows`: ``round(sum w)`` rows, unweighted),
so integer weights give the replicated rows' test.  Sampling weights are refused before the
run (:func:`src.pipeline.checks.check_weight_options`).
"""

from __future__ import annotations

import functools
import hashlib
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..models.base import Data, MixtureModel, Params, replicate_rows
from ..parallel.protocol import units_finished
from ..utils.checkpointing import Checkpointer, NullCheckpointer, require
from ..utils.messages import register, t
from ..utils.rng import stream

__all__ = ["blrt_test", "blrt_replicate", "BLRTResult", "split_starts", "settled",
           "FIT_OPTION_KEYS", "TAIL_CONFIDENCE", "TAIL_FRACTION"]

#: the search options a replicate's fits take from ``fit_options``
FIT_OPTION_KEYS = ("n_starts", "n_candidates", "candidate_iter", "tol", "max_iter",
                   "accelerate", "chunk_size")
#: confidence of the upper limits of T*'s mean and variance in the tail-bound rule
TAIL_CONFIDENCE = 0.999
#: the tail-bound rule stops when Cantelli's bound is at most this fraction of alpha
TAIL_FRACTION = 0.5
#: a refit after a negative T* multiplies the starts and candidates by this
REFIT_FACTOR = 2

register({
    "blrt.failed": {"en": "{n} of {r} bootstrap replicates of the {k0}- against {k1}-class test were left out because they raised an error (first, replicate {first}: {msg}).",
                    "zh": "{k0} 类对 {k1} 类检验的 {r} 次自助法重复中有 {n} 次出错而被排除（第一次为第 {first} 次重复：{msg}）。"},
    "blrt.not_converged": {"en": "{n} of {r} bootstrap replicates of the {k0}- against {k1}-class test have a fit that did not converge within max_iter (kept); raise max_iter.",
                           "zh": "{k0} 类对 {k1} 类检验的 {r} 次自助法重复中有 {n} 次的拟合未在 max_iter 内收敛（仍保留）；请增大 max_iter。"},
    "blrt.refitted": {"en": "{n} of {r} bootstrap replicates of the {k0}- against {k1}-class test gave a negative statistic and were refitted with {factor}x the starts; {still} stayed negative.",
                      "zh": "{k0} 类对 {k1} 类检验的 {r} 次自助法重复中有 {n} 次统计量为负，已用 {factor} 倍的起点重新拟合；仍为负的有 {still} 次。"},
    "blrt.negative_observed": {"en": "The observed {k1}-class log-likelihood is below the {k0}-class one (statistic {stat:.4g}): the {k1}-class fit missed its maximum; increase --n-starts.",
                               "zh": "观测数据上 {k1} 类模型的对数似然低于 {k0} 类模型（统计量 {stat:.4g}）：{k1} 类拟合未达到最大值；请增大 --n-starts。"},
    "blrt.stopped": {"en": "The {k0}- against {k1}-class test stopped after {r} of {B} bootstrap replicates because the decision at alpha = {alpha:g} was settled ({rule}).",
                     "zh": "{k0} 类对 {k1} 类检验在 {B} 次自助法重复中的第 {r} 次后停止，因为在 alpha = {alpha:g} 下的结论已确定（{rule}）。"},
    "blrt.rule.curtailed": {"en": "the remaining replicates could not change it", "zh": "其余重复无法改变结论"},
    "blrt.rule.tail": {"en": "no replicate reached the statistic and a distribution-free tail bound puts its p-value far below alpha",
                       "zh": "没有重复达到观测统计量，且无分布假设的尾部界限表明其 p 值远小于 alpha"},
    "blrt.too_few": {"en": "Only {ok} bootstrap replicates of the {k0}- against {k1}-class test succeeded, so its p-value is NaN.",
                     "zh": "{k0} 类对 {k1} 类检验只有 {ok} 次自助法重复成功，因此其 p 值为 NaN。"},
})


# ------------------------------------------------------------------ result
@dataclass
class BLRTResult:
    """Outcome of :func:`blrt_test`.

    statistic : observed T = 2 (LL_K - LL_{K-1}).
    p_value : (1 + #{T* >= T}) / (m + 1) over the m successful replicates among 1..n_done.
    n_done : replicates used (1..n_done in index order); n_requested : B.
    t_star : T* of replicates 1..n_done in index order (None where a replicate failed).
    n_refitted : replicates refitted after a negative T*.
    """

    statistic: float
    p_value: float
    n_done: int
    n_requested: int
    stopped_early: bool
    t_star: list[float | None]
    n_refitted: int
    notes: list[str] = field(default_factory=list)
    k_small: int = 0
    k_big: int = 0
    alpha: float = 0.05
    stop_rule: str | None = None
    n_failed: int = 0
    n_not_converged: int = 0
    n_negative: int = 0

    @property
    def reject(self) -> bool:
        """True when p <= alpha: K classes fit significantly better than K-1."""
        return bool(np.isfinite(self.p_value) and self.p_value <= self.alpha)

    def to_dict(self) -> dict[str, Any]:
        """JSON scalars and lists (NaN p-value kept as float NaN)."""
        return {"statistic": float(self.statistic), "p_value": float(self.p_value),
                "n_done": int(self.n_done), "n_requested": int(self.n_requested),
                "stopped_early": bool(self.stopped_early),
                "t_star": [None if x is None else float(x) for x in self.t_star],
                "n_refitted": int(self.n_refitted), "notes": [str(n) for n in self.notes],
                "k_small": int(self.k_small), "k_big": int(self.k_big),
                "alpha": float(self.alpha), "stop_rule": self.stop_rule,
                "n_failed": int(self.n_failed), "n_not_converged": int(self.n_not_converged),
                "n_negative": int(self.n_negative), "reject": self.reject}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "BLRTResult":
        """Inverse of :meth:`to_dict`."""
        keys = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in keys})


# ------------------------------------------------------------------ splits
def _rows(data: Data) -> int:
    return int(next(iter(data.values())).shape[0])


def _responsibilities(model: MixtureModel, data: Data, params: Params,
                      chunk_size: int) -> np.ndarray:
    n, step = _rows(data), max(int(chunk_size), 1)
    return np.concatenate([model.e_step({k: v[a:a + step] for k, v in data.items()}, params)[0]
                           for a in range(0, n, step)])


def _start_features(model: MixtureModel, data: Data, n: int) -> np.ndarray | None:
    """The model's start features as a finite (n, d) matrix, or None."""
    get = getattr(model, "start_features", None)
    try:
        F = get(data) if get is not None else None
    except NotImplementedError:
        F = None
    if F is None:
        return None
    F = np.asarray(F, dtype=float)
    F = F[:, None] if F.ndim == 1 else F
    return F if F.ndim == 2 and F.shape[0] == n and np.all(np.isfinite(F)) else None


def _score_features(model: MixtureModel, data: Data, params: Params, resp: np.ndarray,
                    j: int) -> np.ndarray | None:
    """Class ``j``'s complete-data scores (without the weights), each column standardised."""
    from ..inference import derivatives as dv   # (not at import: workers start faster)

    S = dv.complete_score(model, data, params)[:, j, model.n_components - 1:]
    S = np.where(resp[:, j, None] > 0, S, 0.0)
    keep = np.all(np.isfinite(S), axis=0) & np.any(S != 0, axis=0)
    if not keep.any():
        return None
    F = S[:, keep]
    sd = F.std(axis=0)
    return F / np.where(sd > 0, sd, 1.0)


def _split_column(R: np.ndarray, c: int, F: np.ndarray) -> np.ndarray | None:
    """``R`` with column ``c`` cut in two along the main direction of its rows' features."""
    w = R[:, c]
    total = w.sum()
    if not total > 0:
        return None
    mean = (w @ F) / total
    C = ((F - mean) * w[:, None]).T @ (F - mean) / total
    _, vecs = np.linalg.eigh(C)
    upper = (F - mean) @ vecs[:, -1] > 0
    if not (w[upper].sum() > 0 and w[~upper].sum() > 0):
        return None
    return np.concatenate([np.delete(R, c, axis=1), (w * upper)[:, None],
                           (w * ~upper)[:, None]], axis=1)


def _one_m_step(model: MixtureModel, data: Data, resp: np.ndarray, chunk_size: int) -> Params:
    if model.has_closed_form_m_step:
        total = None
        n = resp.shape[0]
        for a in range(0, n, chunk_size):
            chunk = {k: v[a:a + chunk_size] for k, v in data.items()}
            s = model.suff_stats(chunk, resp[a:a + chunk_size])
            total = dict(s) if total is None else {k: total[k] + v for k, v in s.items()}
        return model.m_step(total)
    from ..estimation.numeric_mstep import generic_params_from_resp
    return generic_params_from_resp(model, data, resp)


def split_starts(model_small: MixtureModel, model_big: MixtureModel, data: Data,
                 params_small: Params, *, chunk_size: int = 4096) -> list[Params]:
    """Starting values for ``model_big`` from splits of the classes of ``params_small``.

    One per class j of ``params_small``: class j's responsibilities are cut in two along
    the main direction of its rows' features (module doc); when ``model_big`` has more than
    one class more, the largest resulting class is cut again (with the features of the
    class it came from) until there are enough; then one M-step.  Fewer starts when a cut
    leaves a half empty or gives non-finite values; deterministic, no random numbers.
    """
    k0, k1 = model_small.n_components, model_big.n_components
    resp = _responsibilities(model_small, data, params_small, chunk_size)
    shared = _start_features(model_small, data, resp.shape[0])
    cache: dict[int, np.ndarray | None] = {}

    def features(j: int) -> np.ndarray | None:
        if shared is not None:
            return shared
        if j not in cache:
            cache[j] = _score_features(model_small, data, params_small, resp, j)
        return cache[j]

    out: list[Params] = []
    for j in range(k0):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                R, origin = resp, list(range(k0))
                c = j
                while R is not None and R.shape[1] < k1:
                    F = features(origin[c])
                    R = None if F is None else _split_column(R, c, F)
                    if R is not None:
                        origin = [o for i, o in enumerate(origin) if i != c] + [origin[c]] * 2
                        c = int(np.argmax(R.sum(axis=0)))
                if R is None:
                    continue
                params = _one_m_step(model_big, data, R, chunk_size)
        except (ValueError, np.linalg.LinAlgError, FloatingPointError):
            continue
        if all(np.all(np.isfinite(np.asarray(v, dtype=float))) for v in params.values()):
            out.append({k: np.asarray(v, dtype=float) for k, v in params.items()})
    return out


# --------------------------------------------------------------- the fits
def _fit(model: MixtureModel, data: Data, options: Mapping[str, Any], seed: int,
         extra: Sequence[Params]):
    """``fit_em`` with the run's search options and ``extra`` starting values added."""
    from ..estimation.em import fit_em
    kw = {k: options[k] for k in FIT_OPTION_KEYS if k in options}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit_em(model, data, seed=seed, extra_starts=list(extra), **kw)


def blrt_replicate(model_small: MixtureModel, model_big: MixtureModel, data: Data,
                   params_small: Params, opts: Mapping[str, Any],
                   r: int) -> dict[str, Any]:
    """Replicate ``r`` (top level, so workers can run it): its T* and how its fits went.

    Never raises: an exception becomes ``status="error"`` with its message.
    """
    K = model_big.n_components
    try:
        rng = stream(opts["seed"], "blrt", K, r)
        data_r = model_small.sample(params_small, data, rng)
        seeds = [int(s) for s in rng.integers(0, 2**63 - 1, size=3)]
        fit_options = opts["fit_options"]
        warm = opts.get("warm", True)
        small = _fit(model_small, data_r, fit_options, seeds[0], [params_small] if warm else [])
        extra = []
        if warm:
            extra = split_starts(model_small, model_big, data_r, small.params,
                                 chunk_size=int(fit_options.get("chunk_size", 4096)))
        big = _fit(model_big, data_r, fit_options, seeds[1], extra)
        refitted = False
        if warm and big.loglik < small.loglik:
            more = dict(fit_options)
            for key in ("n_starts", "n_candidates"):
                if key in more:
                    more[key] = REFIT_FACTOR * int(more[key])
            again = _fit(model_big, data_r, more, seeds[2], extra)
            refitted = True
            if again.loglik > big.loglik:
                big = again
        t_star = 2.0 * (big.loglik - small.loglik)
        if not np.isfinite(t_star):
            raise ValueError("the replicate's log-likelihoods are not finite")
        converged = bool(small.converged and big.converged)
        return {"status": "ok" if converged else "not_converged", "t_star": float(t_star),
                "loglik_small": float(small.loglik), "loglik_big": float(big.loglik),
                "n_iter_small": int(small.n_iter), "n_iter_big": int(big.n_iter),
                "refitted": refitted, "message": "",
                "warnings": [str(w) for w in list(small.warnings) + list(big.warnings)]}
    except Exception as exc:  # a replicate's failure is data, not a crash of the test
        return {"status": "error", "t_star": None, "loglik_small": None, "loglik_big": None,
                "n_iter_small": 0, "n_iter_big": 0, "refitted": False,
                "message": f"{type(exc).__name__}: {exc}", "warnings": []}


# ------------------------------------------------------------ the decision
def _p_value(T: float, stars: np.ndarray) -> float:
    if stars.size == 0 or not np.isfinite(T):
        return float("nan")
    return float((1 + np.count_nonzero(stars >= T)) / (stars.size + 1))


def settled(T: float, stars: Sequence[float], n_used: int, B: int, alpha: float) -> str | None:
    """The rule that settles the decision at ``alpha`` after replicates 1..``n_used``, or None.

    ``stars``: the T* of the successful replicates among them (module doc: ``"curtailed"``
    when the remaining ``B - n_used`` cannot change the decision, ``"tail"`` for a clear
    rejection by Cantelli's bound).
    """
    stars = np.asarray(stars, dtype=float)
    m = stars.size
    if not np.isfinite(T):
        return None
    c = int(np.count_nonzero(stars >= T))
    rest = B - n_used
    if (1 + c + rest) / (m + rest + 1) <= alpha or (1 + c) / (m + rest + 1) > alpha:
        return "curtailed" if rest > 0 else None
    if c == 0 and m >= 2 and 1.0 / (m + 1) <= alpha:
        from scipy import stats
        mean, sd = float(stars.mean()), float(stars.std(ddof=1))
        z = float(stats.norm.ppf(TAIL_CONFIDENCE))
        mean_up = mean + z * sd / math.sqrt(m)
        var_up = sd ** 2 * (m - 1) / float(stats.chi2.ppf(1 - TAIL_CONFIDENCE, m - 1))
        if T > mean_up:
            bound = var_up / (var_up + (T - mean_up) ** 2)
            if bound <= TAIL_FRACTION * alpha:
                return "tail"
    return None


def _prefix(done: Mapping[str, Mapping[str, Any]], B: int) -> int:
    """Length of the run 1..r of finished replicates (0-based keys 0..r-1)."""
    r = 0
    while r < B and str(r) in done:
        r += 1
    return r


def _stars(done: Mapping[str, Mapping[str, Any]], r: int) -> list[float]:
    return [float(done[str(i)]["t_star"]) for i in range(r) if done[str(i)]["status"] != "error"]


def _decision(T: float, done: Mapping[str, Mapping[str, Any]], B: int, alpha: float,
              early_stop: bool) -> tuple[int, str | None]:
    """(replicates used, stopping rule): the first r in 1..prefix at which the decision is
    settled, else the prefix (all B when every replicate is done)."""
    r_max = _prefix(done, B)
    if early_stop:
        stars: list[float] = []
        for r in range(1, r_max + 1):
            rec = done[str(r - 1)]
            if rec["status"] != "error":
                stars.append(float(rec["t_star"]))
            rule = settled(T, stars, r, B, alpha)
            if rule is not None:
                return r, rule
    return r_max, None


# ------------------------------------------------------------- checkpoints
def _digest(model: MixtureModel, params: Params) -> str:
    free = np.ascontiguousarray(model.to_free({k: np.asarray(v, dtype=float) for k, v in params.items()}))
    return hashlib.sha256(free.tobytes()).hexdigest()[:16]


def _check_saved(saved: Any, config: Mapping[str, Any]) -> None:
    """CheckpointInvalid unless ``saved`` is a BLRT state of these options and estimates
    whose replicates each have a status and a T* (replicates named from 1)."""
    require(isinstance(saved, Mapping) and saved.get("kind") == "blrt", "it is not a BLRT state")
    require(saved.get("config") == dict(config), "it was made with other options or other estimates")
    reps = saved.get("replicates", {})
    require(isinstance(reps, Mapping), "its replicates are not a mapping")
    for key, rec in reps.items():
        require(isinstance(key, str) and key.isascii() and key.isdigit(), f"replicate {key!r} is not numbered")
        name = f"replicate {int(key) + 1}"
        require(isinstance(rec, Mapping) and rec.get("status") in ("ok", "not_converged", "error")
                and {"t_star", "refitted", "message"} <= set(rec), f"{name} lacks fields")
        if rec["status"] != "error":
            require(isinstance(rec["t_star"], (int, float)) and not isinstance(rec["t_star"], bool)
                    and math.isfinite(rec["t_star"]), f"{name}'s statistic is not a finite number")
        require(isinstance(rec.get("warnings", []), list), f"{name}'s warnings are not a list")


def _fit_config(fit_options: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k in FIT_OPTION_KEYS:
        if k in fit_options:
            v = fit_options[k]
            out[k] = v if isinstance(v, str) else (float(v) if k == "tol" else int(v))
    return out


# ------------------------------------------------------------------ driver
def blrt_test(model_small: MixtureModel, model_big: MixtureModel, data: Data,
              fit_small: Mapping[str, Any], fit_big: Mapping[str, Any], *, n_replicates: int,
              seed: int, alpha: float = 0.05, early_stop: bool = True,
              fit_options: Mapping[str, Any] | None = None, warm: bool = True,
              executor: Any = None, checkpoint: Checkpointer | None = None,
              on_replicate: Callable[[int, str, int, int], None] | None = None) -> BLRTResult:
    """Bootstrap likelihood-ratio test of ``model_small`` (K-1 classes) against ``model_big``.

    ``fit_small``/``fit_big``: the observed fits (``FitResult.to_dict()``: ``params``,
    ``loglik``).  ``fit_options``: the search of every replicate fit (:data:`FIT_OPTION_KEYS`,
    as the observed fits used).  ``warm=False`` (benchmarks at equal work with tools that
    refit cold): no warm starts or splits added, no refit of a negative T*.  ``checkpoint``:
    resumed from its state, checkpointed after every replicate.  ``executor``: runs
    replicates (``map_unordered``); default in process.  ``on_replicate(index, status,
    n_finished, n_requested)`` is called as each replicate finishes.
    """
    B = int(n_replicates)
    if B < 1:
        raise ValueError(f"n_replicates must be at least 1, got {n_replicates}")
    if not 0 < float(alpha) < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    k0, k1 = model_small.n_components, model_big.n_components
    if k1 <= k0:
        raise ValueError(f"the larger model must have more classes ({k0} and {k1} given)")
    checkpoint = checkpoint if checkpoint is not None else NullCheckpointer()
    params_small = {k: np.asarray(v, dtype=float) for k, v in fit_small["params"].items()}
    T = 2.0 * (float(fit_big["loglik"]) - float(fit_small["loglik"]))
    opts = {"seed": int(seed), "fit_options": _fit_config(fit_options or {}), "warm": bool(warm)}
    config = {"k_small": k0, "k_big": k1, **opts,
              "models": [model_small.describe(), model_big.describe()],
              "estimate": _digest(model_small, params_small)}
    config = _jsonable(config)

    done: dict[str, dict[str, Any]] = {}
    saved = checkpoint.resume_state()
    if saved:
        _check_saved(saved, config)  # CheckpointInvalid: the test starts over
        done = {str(k): dict(v) for k, v in saved.get("replicates", {}).items() if int(k) < B}

    def state() -> dict[str, Any]:
        return {"kind": "blrt", "config": config, "replicates": dict(done)}

    n_used, rule = _decision(T, done, B, alpha, early_stop)
    missing = [r for r in range(B) if str(r) not in done]
    if missing and rule is None:
        # weighted rows simulated as the rows they stand for (round(sum w) rows)
        fn = functools.partial(blrt_replicate, model_small, model_big, replicate_rows(data),
                               params_small, opts)
        for wave in _waves(missing, executor, alpha, early_stop):
            with units_finished(executor, fn, wave) as finished:
                for r, rec in finished:
                    done[str(r)] = rec
                    checkpoint.checkpoint(state())
                    if on_replicate is not None:
                        on_replicate(r, rec["status"], len(done), B)
                    n_used, rule = _decision(T, done, B, alpha, early_stop)
                    if rule is not None:
                        break
            if rule is not None:
                break
        checkpoint.checkpoint(state(), force=True)
        n_used, rule = _decision(T, done, B, alpha, early_stop)
    return _summarise(T, done, n_used, rule, B, alpha, k0, k1)


def _waves(missing: list[int], executor: Any, alpha: float, early_stop: bool) -> list[list[int]]:
    """The missing replicates in the groups handed to the executor, in index order.

    Without early stopping, or in process, one group.  With it, groups of the fewest
    replicates that can settle a rejection (19 at alpha = 0.05), at least 4 per worker: a
    pool that batches units (local workers take up to 8 at a time) then computes few
    replicates past the stop.  Which replicates are used never depends on the groups.
    """
    workers = int(getattr(executor, "workers", 1) or 1)
    if not early_stop or executor is None or workers <= 1:
        return [missing]
    size = max(math.ceil(1.0 / alpha) - 1, 4 * workers)
    return [missing[i:i + size] for i in range(0, len(missing), size)]


def _jsonable(x: Any) -> Any:
    """Tuples as lists and numpy scalars as Python ones, as a saved state reads back."""
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def _summarise(T: float, done: Mapping[str, Mapping[str, Any]], n_used: int, rule: str | None,
               B: int, alpha: float, k0: int, k1: int) -> BLRTResult:
    recs = [done[str(r)] for r in range(n_used)]
    ok = [rec for rec in recs if rec["status"] != "error"]
    stars = np.array([float(rec["t_star"]) for rec in ok])
    p = _p_value(T, stars)
    notes: list[str] = []
    if T < 0:
        notes.append(t("blrt.negative_observed", k0=k0, k1=k1, stat=T))
    failed = [(r, rec) for r, rec in enumerate(recs) if rec["status"] == "error"]
    if failed:
        notes.append(t("blrt.failed", n=len(failed), r=n_used, k0=k0, k1=k1,
                       first=failed[0][0] + 1, msg=failed[0][1]["message"]))
    n_nc = sum(rec["status"] == "not_converged" for rec in recs)
    if n_nc:
        notes.append(t("blrt.not_converged", n=n_nc, r=n_used, k0=k0, k1=k1))
    n_ref = sum(bool(rec.get("refitted")) for rec in recs)
    n_neg = sum(1 for rec in ok if float(rec["t_star"]) < 0)
    if n_ref:
        notes.append(t("blrt.refitted", n=n_ref, r=n_used, k0=k0, k1=k1, factor=REFIT_FACTOR,
                       still=n_neg))
    if not ok:
        notes.append(t("blrt.too_few", ok=0, k0=k0, k1=k1))
    if rule is not None:
        notes.append(t("blrt.stopped", k0=k0, k1=k1, r=n_used, B=B, alpha=alpha,
                       rule=t(f"blrt.rule.{rule}")))
    return BLRTResult(statistic=T, p_value=p, n_done=n_used, n_requested=B,
                      stopped_early=rule is not None and n_used < B,
                      t_star=[None if rec["status"] == "error" else float(rec["t_star"])
                              for rec in recs],
                      n_refitted=n_ref, notes=notes, k_small=k0, k_big=k1, alpha=float(alpha),
                      stop_rule=rule, n_failed=len(failed), n_not_converged=n_nc,
                      n_negative=n_neg)
