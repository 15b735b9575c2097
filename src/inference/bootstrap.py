"""Bootstrap standard errors: refit replicates by EM, align them to the estimate, take SDs.

Replicate ``r`` draws every random number from ``stream(seed, "bootstrap", r)``: resampled
rows (``nonparametric``) or data simulated from the estimate by ``model.sample``
(``parametric``: an LCA replicate keeps each row's missing answers, a regression mixture its
predictors); or (``poisson``) every row keeps its place and gets the weight Poisson(1),
drawn by fixed blocks of global row numbers (:mod:`.poisson`: the same weights however the
rows are split into files or chunks, so partitioned data get the same replicates), rows of
weight 0 dropping out.

Row weights (``data[WEIGHT_KEY]``, ``weight_type``): a nonparametric replicate of frequency
weights gives the rows the counts of the replicated data's bootstrap, Multinomial(round(sum
w), w / sum w) (rows drawn 0 times left out); of sampling weights it draws n rows uniformly,
each keeping its weight (rows are the independent units).  A Poisson replicate gives row i
the weight Poisson(w_i) with frequency weights (the sum of the Poisson(1) weights of the w_i
rows it stands for) and w_i * Poisson(1) with sampling weights.  A parametric replicate
simulates each row once and keeps its weight (with frequency weights the w_i rows a row
stands for get one simulated answer, not w_i: prefer the nonparametric or Poisson kinds).

Each replicate is refitted by EM, by default from the estimate (``start="estimate"``: one
start, the usual shortcut) or, with ``start="random"``, from ``n_starts`` random starts
seeded from that same stream (after the data), keeping the best, as a fresh fit would and as
StepMix's bootstrap does; then its classes are matched to the estimate's (:mod:`.align`) and
its free parameters are kept.  SE = the replicates' standard deviation (ddof=1) of each
reported parameter; 95% percentile intervals (the replicate estimates are kept in the
result, ``replicates``, for intervals at other levels).

Replicates that do not converge or raise are counted, left out and reported.  Replicates
whose refit warned (a ridged, collapsed or empty component, no convergence) are counted by
kind of warning (its message key, whatever the language it was written in) and reported in
one note and in ``extra``; the warnings are part of each replicate's checkpointed record.  A checkpoint
after every replicate records the finished ones; a resumed run computes only the missing
ones, and since each replicate depends only on (seed, r) and the results are combined in
index order, the output does not depend on order, worker count or interruptions.
"""

from __future__ import annotations

import functools
import hashlib
import re
import warnings
from typing import Any, Callable

import numpy as np

from ..estimation.starts import DEFAULT_CANDIDATE_ITER, DEFAULT_N_CANDIDATES
from ..models.base import WEIGHT_KEY, Data, MixtureModel, Params, split_weight
from ..parallel.protocol import units_finished
from ..utils.checkpointing import Checkpointer, NullCheckpointer, check_arrays, require
from ..utils.messages import register, t, templates
from ..utils.rng import stream
from .align import align_by_posteriors
from .intervals import percentile_intervals
from .poisson import poisson_weights_at
from .results import SEResult

__all__ = ["bootstrap_se", "bootstrap_replicate", "BOOTSTRAP_KINDS", "BOOTSTRAP_STARTS",
           "message_kind"]

BOOTSTRAP_KINDS = ("nonparametric", "parametric", "poisson")
#: where a replicate's EM starts: the estimate (one start) or ``n_starts`` random starts
BOOTSTRAP_STARTS = ("estimate", "random")
register({
    "boot.all_nan": {"en": "All standard errors are NaN because only {ok} of {B} bootstrap replicates succeeded (at least 2 are needed).",
                     "zh": "所有标准误均为 NaN：{B} 次自助法重复中只有 {ok} 次成功（至少需要 2 次）。"},
    "boot.nc": {"en": "{n} did not converge within max_iter", "zh": "{n} 次未在 max_iter 内收敛"},
    "boot.err": {"en": "{n} raised an error (first, replicate {r}: {msg})",
                 "zh": "{n} 次出错（第一次为第 {r} 次重复：{msg}）"},
    "boot.left_out": {"en": "{n} of {B} bootstrap replicates were left out: {parts}.",
                      "zh": "{B} 次自助法重复中有 {n} 次被排除：{parts}。"},
    "boot.warned": {"en": "{n} of {B} bootstrap replicates warned while being refitted (those that converged are kept): {parts}.",
                    "zh": "{B} 次自助法重复中有 {n} 次在重新拟合时发出警告（其中收敛的仍被保留）：{parts}。"},
    "boot.warned_kind": {"en": "{n} × “{text}”", "zh": "{n} 次“{text}”"},
    "boot.warned_sep": {"en": "; ", "zh": "；"},
    "boot.warn": {"en": "Warning: {pct:.1f}% of the bootstrap replicates failed (more than 5%), so the bootstrap standard errors may be biased; raise max_iter or check the model.",
                  "zh": "警告：{pct:.1f}% 的自助法重复失败（超过 5%），自助法标准误可能有偏；请增大 max_iter 或检查模型。"},
})

#: share of failed replicates above which the notes carry a warning
FAIL_WARNING_SHARE = 0.05


def replicate_data(model: MixtureModel, data: Data, params: Params, kind: str,
                   rng: np.random.Generator, weight_type: str = "frequency") -> Data:
    """One bootstrap data set: rows drawn with replacement (with row weights: by
    ``weight_type``, module doc), or simulated from ``params`` (each row keeping its weight)."""
    rows, w = split_weight(data)
    if kind == "nonparametric" and w is not None and weight_type == "frequency":
        counts = rng.multinomial(max(int(round(float(w.sum()))), 1), w / w.sum())
        keep = np.flatnonzero(counts)
        return {**{k: np.asarray(v)[keep] for k, v in rows.items()},
                WEIGHT_KEY: counts[keep].astype(np.float64)}
    if kind == "nonparametric":
        n = next(iter(data.values())).shape[0]
        idx = rng.integers(0, n, size=n)
        return {k: np.asarray(v)[idx] for k, v in data.items()}
    out = model.sample(params, rows, rng)
    if w is not None:
        out = {**out, WEIGHT_KEY: w}
    return out


def poisson_replicate_data(data: Data, seed: int, r: int, *, weight_type: str = "frequency",
                           row_numbers: np.ndarray | None = None) -> Data:
    """Replicate ``r`` of the Poisson bootstrap: the rows whose weight is not 0, weighted.

    ``row_numbers``: the rows' global row numbers (default 0, 1, ...: their positions),
    which key the draws (:func:`src.inference.poisson.poisson_weights_at`).
    """
    rows, w = split_weight(data)
    n = int(next(iter(rows.values())).shape[0])
    numbers = np.arange(n, dtype=np.int64) if row_numbers is None else np.asarray(row_numbers)
    m = poisson_weights_at(seed, r, numbers, w, weight_type=weight_type)
    keep = np.flatnonzero(m > 0)
    return {**{k: np.asarray(v)[keep] for k, v in rows.items()}, WEIGHT_KEY: m[keep]}


def bootstrap_replicate(model: MixtureModel, data: Data, params: Params,
                        opts: dict[str, Any], r: int) -> dict[str, Any]:
    """Replicate ``r`` (top level, so workers can run it): status, aligned free params, ...

    Never raises: an exception becomes ``status="error"`` with its message.  ``warnings``:
    the refit's warnings (model warnings and non-convergence, as FitResult.warnings); other
    Python warnings of the refit are not shown.  ``opts["start"] == "random"``: the refit's
    ``opts["n_starts"]`` starts are seeded by a number drawn from the replicate's stream
    after its data, so they depend on (seed, r) only.
    """
    from ..estimation.em import fit_em, is_engine
    try:
        rng = stream(opts["seed"], "bootstrap", r)
        engine = is_engine(data)
        if opts["kind"] == "poisson" and engine:   # rows in partitions: reweighted on every pass
            from ..estimation.reweighted import poisson_replicate_engine
            data_b = poisson_replicate_engine(data, opts["seed"], r,
                                              opts.get("weight_type", "frequency"))
        elif opts["kind"] == "poisson":
            data_b = poisson_replicate_data(data, opts["seed"], r,
                                            weight_type=opts.get("weight_type", "frequency"),
                                            row_numbers=opts.get("row_numbers"))
        else:
            data_b = replicate_data(model, data, params, opts["kind"], rng,
                                    opts.get("weight_type", "frequency"))
        if opts.get("start", "estimate") == "random":
            starts = {"n_starts": opts["n_starts"], "seed": int(rng.integers(0, 2**63 - 1)),
                      "n_candidates": opts.get("n_candidates", DEFAULT_N_CANDIDATES),
                      "candidate_iter": opts.get("candidate_iter", DEFAULT_CANDIDATE_ITER)}
        else:
            starts = {"n_starts": 1, "seed": opts["seed"], "init_params": params}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fit = fit_em(model, data_b, tol=opts["tol"], max_iter=opts["max_iter"],
                             accelerate=opts["accelerate"], chunk_size=opts["chunk_size"],
                             **starts)
        finally:
            if engine:
                data_b.close()
        aligned_on = opts.get("align_data") if engine else data   # partitions: their sample
        free = model.to_free(align_by_posteriors(model, aligned_on, params, fit.params,
                                                   opts["chunk_size"]))
        if not np.all(np.isfinite(free)):
            status = "error"
            message = "the refitted parameters are not finite"
        else:
            status = "ok" if fit.converged else "not_converged"
            message = "" if fit.converged else f"no convergence in {fit.n_iter} iterations"
        return {"status": status, "free": free, "loglik": float(fit.loglik),
                "n_iter": int(fit.n_iter), "message": message,
                "warnings": [str(w) for w in fit.warnings]}
    except Exception as exc:  # a replicate's failure is data, not a crash of the bootstrap
        return {"status": "error", "free": None, "loglik": float("nan"), "n_iter": 0,
                "message": f"{type(exc).__name__}: {exc}", "warnings": []}


def _estimate_digest(model: MixtureModel, params: Params) -> str:
    return hashlib.sha256(np.ascontiguousarray(model.to_free(params)).tobytes()).hexdigest()[:16]


def _check_saved(saved: Any, config: dict[str, Any], n_free: int) -> None:
    """CheckpointInvalid unless ``saved`` is a bootstrap state of these options and this
    estimate whose replicates have a status, ``n_free`` free parameters each and, when they
    record warnings, a list of sentences.  Replicates are named from 1, as users count them."""
    require(isinstance(saved, dict) and saved.get("kind") == "bootstrap", "it is not a bootstrap state")
    require(saved.get("config") == config, "it was made with other options or another estimate")
    reps = saved.get("replicates", {})
    require(isinstance(reps, dict), "its replicates are not a mapping")
    for key, rec in reps.items():
        require(isinstance(key, str) and key.isdigit(), f"replicate {key!r} is not numbered")
        name = f"replicate {int(key) + 1}"
        require(isinstance(rec, dict) and rec.get("status") in ("ok", "not_converged", "error")
                and {"free", "loglik", "n_iter", "message"} <= set(rec),
                f"{name} lacks fields")
        if "warnings" in rec:
            require(isinstance(rec["warnings"], list)
                    and all(isinstance(w, str) for w in rec["warnings"]),
                    f"{name}'s warnings are not a list of sentences")
        if rec["status"] != "error":
            check_arrays({"free": rec["free"]}, {"free": (n_free,)}, name)


def bootstrap_se(model: MixtureModel, data: Data, params: Params, *, n_bootstrap: int = 200,
                 kind: str = "nonparametric", seed: int = 0, tol: float = 1e-8,
                 max_iter: int = 1000, accelerate: str = "none", chunk_size: int = 4096,
                 start: str = "estimate", n_starts: int = 10,
                 n_candidates: int = DEFAULT_N_CANDIDATES,
                 candidate_iter: int = DEFAULT_CANDIDATE_ITER,
                 weight_type: str = "frequency", row_numbers: np.ndarray | None = None,
                 align_data: Data | None = None,
                 checkpoint: Checkpointer | None = None, executor: Any = None,
                 on_replicate: Callable[[int, str, int, int], None] | None = None) -> SEResult:
    """Bootstrap standard errors and percentile intervals from ``n_bootstrap`` replicates.

    ``start``: each replicate's EM starts from the estimate (``"estimate"``, one start: less
    work, the usual shortcut) or from ``n_starts`` random starts of its own, keeping the best
    (``"random"``: a fresh fit per replicate, searching as the estimate's fit did:
    ``n_starts``, ``n_candidates`` and ``candidate_iter`` are read only then).
    ``weight_type``: what the row weights in ``data`` are (``frequency`` or ``sampling``;
    not read by the parametric bootstrap nor for unweighted data).  ``row_numbers``: the rows' global row numbers
    keying the Poisson draws (default their positions 0..n-1).  ``data`` may be a row
    engine (partitioned input): then only ``kind="poisson"``, each replicate refitted over
    the partitions reweighted by global row number, in process (the engine's workers do
    the passes), its classes aligned on the rows of ``align_data`` (the run's sample).
    ``checkpoint``: resumed from its state, checkpointed after every replicate.
    ``executor``: runs replicates (``map_unordered``); default in process.
    ``on_replicate(index, status, n_done, n_total)`` is called as each replicate finishes.
    """
    if kind not in BOOTSTRAP_KINDS:
        raise ValueError(f"bootstrap kind must be one of {BOOTSTRAP_KINDS}, got {kind!r}")
    if start not in BOOTSTRAP_STARTS:
        raise ValueError(f"bootstrap start must be one of {BOOTSTRAP_STARTS}, got {start!r}")
    if int(n_bootstrap) < 2:
        raise ValueError(f"n_bootstrap must be at least 2, got {n_bootstrap}")
    if start == "random" and int(n_starts) < 1:
        raise ValueError(f"n_starts must be at least 1, got {n_starts}")
    B = int(n_bootstrap)
    checkpoint = checkpoint if checkpoint is not None else NullCheckpointer()
    opts = {"kind": kind, "seed": int(seed), "tol": float(tol), "max_iter": int(max_iter),
            "accelerate": accelerate, "chunk_size": int(chunk_size), "start": start}
    if start == "random":  # the saved config names what the replicates depend on
        opts.update(n_starts=int(n_starts), n_candidates=int(n_candidates),
                    candidate_iter=int(candidate_iter))
    config = dict(opts, estimate=_estimate_digest(model, params))
    if weight_type not in ("frequency", "sampling"):
        raise ValueError(f"weight_type must be frequency or sampling, got {weight_type!r}")
    from ..estimation.em import is_engine

    engine = is_engine(data)   # rows in partitions: only the Poisson bootstrap, in process
    if engine and kind != "poisson":
        raise ValueError(f"the {kind} bootstrap needs the rows in memory; partitioned input "
                         "is bootstrapped with kind 'poisson'")
    weighted = (getattr(data, "weight_sum", None) is not None) if engine else WEIGHT_KEY in data
    if weighted and kind != "parametric":  # the weights' meaning changes the replicates
        opts["weight_type"] = config["weight_type"] = weight_type
    if engine:
        executor = None   # each replicate's passes run on the engine (its workers)
        opts["align_data"] = align_data
    if kind == "poisson":
        if row_numbers is not None:
            row_numbers = np.asarray(row_numbers, dtype=np.int64)
            opts["row_numbers"] = row_numbers
            config["row_numbers"] = hashlib.sha256(row_numbers.tobytes()).hexdigest()[:16]

    done: dict[str, dict[str, Any]] = {}
    saved = checkpoint.resume_state()
    if saved:
        _check_saved(saved, config, model.n_free_parameters())  # CheckpointInvalid: start over
        done = {str(k): dict(v) for k, v in saved.get("replicates", {}).items() if int(k) < B}

    missing = [r for r in range(B) if str(r) not in done]
    if missing:
        fn = functools.partial(bootstrap_replicate, model, data, params, opts)
        with units_finished(executor, fn, missing) as finished:
            for r, rec in finished:
                done[str(r)] = rec
                checkpoint.checkpoint({"kind": "bootstrap", "config": config,
                                       "replicates": dict(done)})
                if on_replicate is not None:
                    on_replicate(r, rec["status"], len(done), B)
        checkpoint.checkpoint({"kind": "bootstrap", "config": config, "replicates": dict(done)},
                              force=True)
    return _summarise(model, params, done, B, kind, opts)


def _summarise(model: MixtureModel, params: Params, done: dict[str, dict[str, Any]],
               B: int, kind: str, opts: dict[str, Any]) -> SEResult:
    """SDs and percentile intervals over the successful replicates, in index order."""
    order = sorted(done, key=int)
    ok = [r for r in order if done[r]["status"] == "ok"]
    n_nc = sum(done[r]["status"] == "not_converged" for r in order)
    errors = [r for r in order if done[r]["status"] == "error"]
    est = model.reported_values(params)
    R, P = est.size, model.n_free_parameters()
    notes: list[str] = []
    free = np.array([np.asarray(done[r]["free"], dtype=float) for r in ok]).reshape(len(ok), P)
    # every reported parameter of every successful replicate: kept for intervals at any level
    rep = np.array([model.reported_values(model.from_free(f)) for f in free]).reshape(len(ok), R)
    if len(ok) >= 2:
        se = rep.std(axis=0, ddof=1)
        lo, hi = percentile_intervals(rep, 0.95)  # other levels: intervals.interval_table
        cov = np.cov(free, rowvar=False, ddof=1).reshape(P, P)
    else:
        se = lo = hi = np.full(R, np.nan)
        cov = np.full((P, P), np.nan)
        notes.append(t("boot.all_nan", ok=len(ok), B=B))
    n_failed = B - len(ok)
    if n_failed:
        parts = []
        if n_nc:
            parts.append(t("boot.nc", n=n_nc))
        if errors:
            parts.append(t("boot.err", n=len(errors), r=int(errors[0]) + 1,  # counted from 1
                           msg=done[errors[0]]["message"]))
        notes.append(t("boot.left_out", n=n_failed, B=B, parts="; ".join(parts)))
        if n_failed > FAIL_WARNING_SHARE * B:
            notes.append(t("boot.warn", pct=100.0 * n_failed / B))
    n_warned, by_kind, examples = _warning_counts(done, order)
    if n_warned:
        parts = t("boot.warned_sep").join(t("boot.warned_kind", n=by_kind[k], text=examples[k])
                                          for k in by_kind)
        notes.append(t("boot.warned", n=n_warned, B=B, parts=parts))
    extra = {"n_bootstrap": B, "n_ok": len(ok), "n_failed": n_failed,
             "n_not_converged": n_nc, "n_errors": len(errors), "bootstrap_kind": kind,
             "bootstrap_start": opts["start"], "n_warned": n_warned, "n_warned_by_kind": by_kind}
    if opts["start"] == "random":
        extra["bootstrap_n_starts"] = opts["n_starts"]
    if "weight_type" in opts:
        extra["bootstrap_weight_type"] = opts["weight_type"]
    return SEResult(method="bootstrap", names=model.reported_names(), estimates=est, se=se,
                    ci_lower=np.asarray(lo, dtype=float), ci_upper=np.asarray(hi, dtype=float),
                    free_names=model.free_names(), cov_free=cov, notes=notes, extra=extra,
                    replicates=rep)


def _warning_counts(done: dict[str, dict[str, Any]],
                    order: list[str]) -> tuple[int, dict[str, int], dict[str, str]]:
    """Replicates that warned; per kind, how many (each once) and the first one's sentence.

    Kinds are in order of first appearance (replicates in index order); the sentence is
    rendered again in the current language when its message is known.
    """
    n_warned, by_kind, examples = 0, {}, {}
    for r in order:
        texts = [str(w) for w in done[r].get("warnings", [])]
        n_warned += bool(texts)
        kinds = {}
        for text in texts:
            kinds.setdefault(*message_kind(text))
        for kind, text in kinds.items():
            by_kind[kind] = by_kind.get(kind, 0) + 1
            examples.setdefault(kind, text.rstrip(".。"))
    return n_warned, by_kind, examples


_FIELD = re.compile(r"\{(\w+)(?:![rsa])?(?::[^{}]*)?\}")
_PATTERNS: list[tuple[int, str, re.Pattern[str]]] = []
_PATTERNS_OF: list[int] = [-1]  # the number of registered messages _PATTERNS was built from


def _patterns() -> list[tuple[int, str, re.Pattern[str]]]:
    """(literal length, key, regex) of every registered template, in every language."""
    registered = templates()
    if _PATTERNS_OF[0] != len(registered):
        _PATTERNS.clear()
        for key, texts in registered.items():
            for template in texts.values():
                regex, literal, names, pos = "", 0, [], 0
                for m in _FIELD.finditer(template):
                    text = template[pos:m.start()].replace("{{", "{").replace("}}", "}")
                    regex += re.escape(text)
                    literal += len(text)
                    name = m.group(1)
                    regex += f"(?P={name})" if name in names else f"(?P<{name}>.+?)"
                    names.append(name)
                    pos = m.end()
                text = template[pos:].replace("{{", "{").replace("}}", "}")
                _PATTERNS.append((literal + len(text), key, re.compile(regex + re.escape(text), re.S)))
        _PATTERNS.sort(key=lambda p: -p[0])
        _PATTERNS_OF[0] = len(registered)
    return _PATTERNS


def _number(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def message_kind(text: str) -> tuple[str, str]:
    """``(key, text)``: the message key whose template (in any language) gives ``text``, and
    the sentence rendered again in the current language; ``(text, text)`` when unknown.

    The most specific template (most fixed characters) that matches wins; one whose fixed
    text is under half of ``text`` is not trusted.  Used to count warnings by kind whatever
    the language a worker wrote them in.
    """
    for literal, key, pattern in _patterns():
        m = pattern.fullmatch(text)
        if m is None or 2 * literal < len(text):  # mostly filled-in fields: too generic to trust
            continue
        try:
            again = t(key, **{k: _number(v) for k, v in m.groupdict().items()})
        except (ValueError, KeyError, IndexError, TypeError):
            again = text
        return key, again
    return text, text
