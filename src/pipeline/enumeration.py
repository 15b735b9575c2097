"""Several numbers of classes in one run (``--components 1-6`` or ``2,3,5``).

* ``model_estimation`` fits every K in turn (:func:`estimate_models`); each K's random starts
  are units of work on the executor, and the phase's checkpoint holds the finished K's fits
  plus the running K's own EM state (namespaced per K, as ``_MethodCheckpoint`` does for the
  standard-error methods).  A fit of one K depends on the run's settings but not on the other
  K, so with ``--recompute-changed`` the fits of an earlier run whose settings are unchanged
  (all of its fingerprint but ``components``) are kept: extending ``1-3`` to ``1-4`` fits
  only K = 4.
* ``model_selection`` (:func:`select_model`) computes each K's criteria, the tests of each K
  against the previous K of the list (VLMR/LMR, BLRT) and the K the rule (``--select``)
  chooses; each comparison is a checkpointed unit and kept on ``--recompute-changed`` like
  the fits.
* ``standard_error_computation`` (:func:`standard_errors_by_k`) for the selected K, or every
  K with ``--se-for all``.

With one K none of this runs: the phases are the four of a single-K run, unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any, Callable, Mapping

import numpy as np

from ..config import RunOptions
from ..utils.checkpointing import Checkpointer, CheckpointInvalid, NullCheckpointer, require
from ..utils.messages import register, t
from . import phases
from .phases import Prepared

__all__ = ["estimate_models", "select_model", "standard_errors_by_k", "prepared_for",
           "is_enumeration", "fit_settings", "pair_key", "SMALL_CLASS", "blrt_available",
           "vlmr_available"]

#: a class weight below this is reported ("smallest class below 5%")
SMALL_CLASS = 0.05
#: fingerprint entries a single comparison does not depend on (what it compares is its key)
_NOT_PER_UNIT = ("components", "select")

register({
    "enum.fitting": {"en": "Fitting K = {k} ({n} of {total})",
                     "zh": "拟合 K = {k}（第 {n} 个，共 {total} 个）"},
    "enum.reused": {"en": "Fits for K = {ks} kept from the earlier run (their settings are unchanged)",
                    "zh": "沿用先前运行中 K = {ks} 的拟合结果（其设置未变）"},
    "enum.testing": {"en": "Comparing K = {a} with K = {b}",
                     "zh": "比较 K = {a} 与 K = {b}"},
    "enum.tests_reused": {"en": "Tests of {pairs} kept from the earlier run (their settings are unchanged)",
                          "zh": "沿用先前运行中 {pairs} 的检验结果（其设置未变）"},
    "enum.selected": {"en": "Selected K = {k} by {rule}",
                      "zh": "按 {rule} 选定 K = {k}"},
    "enum.all_significant": {
        "en": "every BLRT comparison is significant at alpha = {alpha}, so the largest K fitted ({k}) is selected; consider larger K.",
        "zh": "所有 BLRT 比较在 alpha = {alpha} 下均显著，因此选定所拟合的最大 K（{k}）；可考虑更大的 K。"},
    "enum.no_p": {
        "en": "the BLRT of K = {a} against K = {b} has no p-value, so it decides nothing.",
        "zh": "K = {a} 对 K = {b} 的 BLRT 没有 p 值，因此不用于判断。"},
    "enum.no_criterion": {
        "en": "no K has a finite {rule}; the largest K fitted ({k}) is kept.",
        "zh": "没有任何 K 的 {rule} 为有限值；保留所拟合的最大 K（{k}）。"},
    "enum.not_replicated": {
        "en": "K = {k}: the best log-likelihood was reached by only one start; increase --n-starts.",
        "zh": "K = {k}：最优对数似然只被一个初始值达到；请增加 --n-starts。"},
    "enum.spurious": {
        "en": "K = {k}: {n} start(s) with a spurious or degenerate solution ({kinds}) were excluded.",
        "zh": "K = {k}：{n} 个初始值得到伪解或退化解（{kinds}），已排除。"},
    "enum.small_class": {
        "en": "K = {k}: the smallest class has weight {w:.4f}, below 5%.",
        "zh": "K = {k}：最小类别的权重为 {w:.4f}，低于 5%。"},
    "enum.test_failed": {
        "en": "{test} of K = {a} against K = {b} could not be computed ({detail}).",
        "zh": "K = {a} 对 K = {b} 的 {test} 无法计算（{detail}）。"},
    "enum.vlmr_partitioned": {
        "en": "The VLMR/LMR tests were not computed: they need every row's scores in memory, "
              "which partitioned input is not.",
        "zh": "未计算 VLMR/LMR 检验：它们需要内存中每一行的得分，而分区输入不在内存中。"},
    "enum.module_missing": {
        "en": "{test} is not available in this installation ({module} cannot be imported); its columns stay empty.",
        "zh": "此安装中没有 {test}（无法导入 {module}）；相应列留空。"},
})


# ------------------------------------------------------------------- helpers
def is_enumeration(result: Any) -> bool:
    """True for the ``model_estimation`` result of several K."""
    return isinstance(result, Mapping) and result.get("kind") == "enumeration"


def pair_key(a: int, b: int) -> str:
    """The key of the comparison of K = a with K = b (``"2-3"``)."""
    return f"{int(a)}-{int(b)}"


def fit_settings(fingerprint: Mapping[str, Any] | None) -> str | None:
    """What one K's fit (or one comparison) depends on besides its K: the phase's
    fingerprint without ``components`` (and ``select``, which only picks), hashed."""
    if fingerprint is None:
        return None
    rest = {k: v for k, v in fingerprint.items() if k not in _NOT_PER_UNIT}
    text = json.dumps(rest, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def prepared_for(prepared: Prepared, options: RunOptions, k: int) -> Prepared:
    """``prepared`` with its model set up for ``k`` classes."""
    model = phases.build_model(options, prepared.meta, type(prepared.model), k=k)
    return dataclasses.replace(prepared, model=model)


def _params(fit: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, dtype=float) for k, v in fit["params"].items()}


def _message(reporter: Any, text: str) -> None:
    if reporter is not None:
        reporter.message(text)


class _KCheckpoint:
    """Namespaces one unit's checkpoints (a K, a comparison) inside the phase's state:
    ``{**fixed, "done": {...}, "unit": key, "inner": state}``."""

    def __init__(self, parent: Checkpointer, key: str, done: dict[str, Any],
                 fixed: Mapping[str, Any]) -> None:
        self.parent, self.key, self.done, self.fixed = parent, key, done, dict(fixed)

    def resume_state(self) -> Any:
        state = self.parent.resume_state()
        if isinstance(state, dict) and state.get("unit") == self.key:
            return state.get("inner")
        return None

    def checkpoint(self, state: Any, *, force: bool = False) -> bool:
        return self.parent.checkpoint({**self.fixed, "done": dict(self.done), "unit": self.key,
                                       "inner": state}, force=force)


def _resumed(checkpoint: Checkpointer, kind: str, keys: list[str],
             check: Callable[[str, Any], None], partial: bool = False) -> dict[str, Any]:
    """The phase's saved state checked against this run: ``{"done", "unit", "inner"}``
    (``{}`` when fresh); CheckpointInvalid, one phrase, when it does not fit.
    ``partial``: a unit under way may already have an entry in ``done`` (a comparison
    whose VLMR is done and whose BLRT is not)."""
    state = checkpoint.resume_state()
    if state is None:
        return {}
    require(isinstance(state, dict) and state.get("kind") == kind,
            f"the saved state is not a {kind} state")
    require(state.get("keys") == keys, f"the saved state is for {state.get('keys')!r}, "
                                        f"this run for {keys!r}")
    done = state.get("done")
    require(isinstance(done, dict), "'done' is not a mapping")
    for key, value in done.items():
        require(key in keys, f"'done' names {key!r}, not one of this run's")
        check(key, value)
    unit = state.get("unit")
    require(unit is None or (unit in keys and (partial or unit not in done)),
            f"the unit under way {unit!r} is not one still to do")
    return state


# --------------------------------------------------------- model_estimation
def _check_fit(prepared: Prepared, options: RunOptions) -> Callable[[str, Any], None]:
    def check(key: str, fit: Any) -> None:
        from ..estimation.results import FitResult

        try:
            res = FitResult.from_dict(fit)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointInvalid(f"the saved fit of K = {key} cannot be read "
                                    f"({type(exc).__name__}: {exc})") from None
        model = prepared_for(prepared, options, int(key)).model
        require(res.params.keys() == {s.name for s in model.param_specs()}
                and all(v.shape[:1] == (int(key),) for v in res.params.values()),
                f"the saved fit of K = {key} does not describe {key} classes of this model")
    return check


def reusable_fits(stale: tuple[Any, Mapping | None] | None, settings: str | None
                  ) -> dict[str, Any]:
    """The fits of an earlier ``model_estimation`` result (``tracker.stale_result``) that
    were computed with ``settings``, by K (text): an enumeration's, or a single K's."""
    if stale is None or settings is None:
        return {}
    result, fingerprint = stale
    if is_enumeration(result):
        if result.get("settings") == settings:
            return {str(k): fit for k, fit in result["fits"].items()}
    elif isinstance(result, Mapping) and "params" in result and fingerprint is not None:
        k = fingerprint.get("components")
        if isinstance(k, int) and fit_settings(fingerprint) == settings:
            return {str(k): result}
    return {}


def estimate_models(prepared: Prepared, options: RunOptions,
                    checkpoint: Checkpointer | None = None, reporter: Any = None,
                    executor: Any = None, *, fingerprint: Mapping[str, Any] | None = None,
                    stale: tuple[Any, Mapping | None] | None = None) -> dict[str, Any]:
    """Phase ``model_estimation`` with several K: ``{"kind": "enumeration", "ks", "settings",
    "fits": {K: FitResult.to_dict()}}``.

    ``fingerprint``: the phase's (its ``settings`` mark which earlier fits can be kept);
    ``stale``: the result ``--recompute-changed`` dropped (``tracker.stale_result``)."""
    ks = options.k_list()
    keys = [str(k) for k in ks]
    settings = fit_settings(fingerprint)
    checkpoint = checkpoint or NullCheckpointer()
    state = _resumed(checkpoint, "enumeration", keys, _check_fit(prepared, options))
    done: dict[str, Any] = dict(state.get("done", {}))
    fixed = {"kind": "enumeration", "keys": keys}
    kept = {k: f for k, f in reusable_fits(stale, settings).items() if k in keys and k not in done}
    if kept:
        _check = _check_fit(prepared, options)
        try:
            for k, fit in kept.items():
                _check(k, fit)
        except CheckpointInvalid:
            kept = {}
    if kept:
        done.update(kept)
        _message(reporter, t("enum.reused", ks=", ".join(sorted(kept, key=int))))
        # at once: the earlier result is no longer on disk once this run has written
        checkpoint.checkpoint({**fixed, "done": dict(done), "unit": state.get("unit"),
                               "inner": state.get("inner")}, force=True)
    with phases._own_executor(options, executor, any(k not in done for k in keys)) as executor:
        for n, k in enumerate(ks, 1):
            key = str(k)
            if key in done:
                continue
            _message(reporter, t("enum.fitting", k=k, n=n, total=len(ks)))
            fit = phases.fit_model(prepared_for(prepared, options, k), options,
                                   _KCheckpoint(checkpoint, key, done, fixed), reporter, executor)
            done[key] = fit.to_dict()
            checkpoint.checkpoint({**fixed, "done": dict(done), "unit": None, "inner": None},
                                  force=True)
    return {"kind": "enumeration", "ks": list(ks), "settings": settings,
            "fits": {key: done[key] for key in keys}}


# ---------------------------------------------------------- model_selection
def blrt_available() -> str | None:
    """None when the BLRT module can be imported, else why not."""
    try:
        from ..selection import blrt  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return None


def vlmr_available() -> str | None:
    """None when the VLMR module can be imported, else why not."""
    try:
        from ..selection import vlmr  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return None


def _replicated(fit: Mapping[str, Any]) -> bool:
    """Whether at least two starts reached the best maximum (the fit's replication summary;
    without one, starts within 1e-3 of the best)."""
    rep = fit.get("replication") or {}
    if "replicated" in rep:
        return bool(rep["replicated"])
    lls = np.asarray(fit.get("start_logliks", []), dtype=float)
    lls = lls[np.isfinite(lls)]
    return bool(lls.size and np.sum(lls >= float(fit["loglik"]) - 1e-3) >= 2)


def criteria_rows(prepared: Prepared, fits: Mapping[str, Any], options: RunOptions
                  ) -> list[dict[str, Any]]:
    """One row per K: log-likelihood, parameters, criteria, replication, starts."""
    from ..selection.criteria import criteria

    rows = []
    for k in options.k_list():
        fit = fits["fits"][str(k)]
        model = prepared_for(prepared, options, k).model
        crit = criteria(model, prepared.data, _params(fit), loglik=float(fit["loglik"]),
                        n_params=int(fit["n_params"]), chunk_size=options.chunk_size)
        rows.append({"k": k, "loglik": float(fit["loglik"]), "n_params": int(fit["n_params"]),
                     **crit, "best_replicated": _replicated(fit),
                     "n_starts": len(fit.get("start_logliks", [])),
                     "blrt_p": None, "lmr_p": None, "vlmr_p": None, "selected": False})
    return rows


def _fit_options(options: RunOptions) -> dict[str, Any]:
    """The search settings a BLRT replicate's fits use: the observed fits' own."""
    names = ("n_starts", "n_candidates", "candidate_iter", "tol", "max_iter", "accelerate",
             "chunk_size")
    return {n: getattr(options, n) for n in names if hasattr(options, n)}


def _check_tests(key: str, entry: Any) -> None:
    require(isinstance(entry, dict) and set(entry) <= {"vlmr", "blrt", "notes"},
            f"the saved tests of {key} are not a mapping of vlmr/blrt results")


def _run_tests(prepared: Prepared, fits: Mapping[str, Any], options: RunOptions, a: int, b: int,
               entry: dict[str, Any], ck: Checkpointer, save: Callable[[], None],
               reporter: Any, executor: Any) -> None:
    """VLMR/LMR and the BLRT of K = a against K = b into ``entry`` (each saved when done)."""
    small, big = prepared_for(prepared, options, a), prepared_for(prepared, options, b)
    fit_a, fit_b = fits["fits"][str(a)], fits["fits"][str(b)]
    notes = entry.setdefault("notes", [])
    if options.vlmr and not options.partitioned and "vlmr" not in entry \
            and vlmr_available() is None:
        from ..selection.vlmr import vlmr_test

        try:
            entry["vlmr"] = dict(vlmr_test(small.model, big.model, prepared.data, _params(fit_a),
                                           _params(fit_b), seed=options.seed,
                                           chunk_size=options.chunk_size))
        except (ValueError, NotImplementedError, np.linalg.LinAlgError) as exc:
            entry["vlmr"] = None
            notes.append(t("enum.test_failed", test="VLMR", a=a, b=b, detail=exc))
        save()
    if options.blrt > 0 and "blrt" not in entry and blrt_available() is None:
        from ..selection.blrt import blrt_test

        progress = None
        if reporter is not None:
            def progress(index: int, status: str, done: int, total: int) -> None:
                reporter.unit(f"K={a} vs K={b}", done, total, kind="blrt")
        result = blrt_test(small.model, big.model, prepared.data, fit_a, fit_b,
                           n_replicates=options.blrt, seed=options.seed, alpha=options.alpha,
                           early_stop=options.blrt_early_stop, fit_options=_fit_options(options),
                           executor=executor, checkpoint=ck, on_replicate=progress)
        entry["blrt"] = result.to_dict()
        save()


def reusable_tests(stale: tuple[Any, Mapping | None] | None, settings: str | None
                   ) -> dict[str, Any]:
    """The comparisons of an earlier ``model_selection`` result computed with ``settings``."""
    if stale is None or settings is None:
        return {}
    result, _ = stale
    if isinstance(result, Mapping) and result.get("settings") == settings:
        return {k: v for k, v in (result.get("tests") or {}).items() if isinstance(v, dict)}
    return {}


def choose(rows: list[dict[str, Any]], rule: str, alpha: float) -> tuple[int, list[str]]:
    """The selected K and notes: the lowest criterion (ties: the smaller K), or for
    ``blrt`` the smallest K whose comparison with the next K is not significant at
    ``alpha`` (``p > alpha``: the BLRT rejects when ``p <= alpha``, exact for a Monte-Carlo
    p-value when ``alpha (B + 1)`` is an integer; every one significant: the largest K, with
    a note).  A comparison without a p-value decides nothing (noted)."""
    ks = [r["k"] for r in rows]
    if rule == "blrt":
        notes = []
        for i in range(len(rows) - 1):
            p = rows[i + 1]["blrt_p"]
            if p is None or not math.isfinite(p):
                notes.append(t("enum.no_p", a=ks[i], b=ks[i + 1]))
            elif p > alpha:
                return ks[i], notes
        return ks[-1], [*notes, t("enum.all_significant", alpha=alpha, k=ks[-1])]
    values = [r[rule] for r in rows]
    finite = [(v, i) for i, v in enumerate(values) if v is not None and math.isfinite(v)]
    if not finite:
        return ks[-1], [t("enum.no_criterion", rule=rule.upper(), k=ks[-1])]
    return ks[min(finite)[1]], []


def warnings_of(fits: Mapping[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """Per K: best not replicated, spurious starts excluded, smallest class below 5%."""
    out = []
    for row in rows:
        k, fit = row["k"], fits["fits"][str(row["k"])]
        if not row["best_replicated"]:
            out.append(t("enum.not_replicated", k=k))
        flags = fit.get("flags") or {}
        if flags:
            n = sum(1 for f in fit.get("start_flags", []) if f) or sum(flags.values())
            out.append(t("enum.spurious", k=k, n=n, kinds=", ".join(sorted(flags))))
        if row["smallest_class"] < SMALL_CLASS:
            out.append(t("enum.small_class", k=k, w=row["smallest_class"]))
    return out


def select_model(prepared: Prepared, fits: Mapping[str, Any], options: RunOptions,
                 checkpoint: Checkpointer | None = None, reporter: Any = None,
                 executor: Any = None, *, fingerprint: Mapping[str, Any] | None = None,
                 stale: tuple[Any, Mapping | None] | None = None) -> dict[str, Any]:
    """Phase ``model_selection``: ``{"ks", "pairs", "rows", "selected", "rule", "alpha",
    "tests", "notes", "warnings", "settings"}`` (rows as in ``enumeration.csv``).

    Each comparison (VLMR/LMR, then the BLRT with its replicates checkpointed) is saved when
    done; ``stale``/``fingerprint`` as in :func:`estimate_models`."""
    ks = options.k_list()
    pairs = [[a, b] for a, b in zip(ks, ks[1:])]
    keys = [pair_key(a, b) for a, b in pairs]
    settings = fit_settings(fingerprint)
    checkpoint = checkpoint or NullCheckpointer()
    state = _resumed(checkpoint, "selection", keys, _check_tests, partial=True)
    tests: dict[str, Any] = {k: dict(v) for k, v in state.get("done", {}).items()}
    fixed = {"kind": "selection", "keys": keys}
    notes: list[str] = []

    def save() -> None:
        checkpoint.checkpoint({**fixed, "done": dict(tests), "unit": None, "inner": None},
                              force=True)

    kept = {k: v for k, v in reusable_tests(stale, settings).items()
            if k in keys and k not in tests}
    if kept:
        tests.update(kept)
        _message(reporter, t("enum.tests_reused", pairs=", ".join(kept)))
        checkpoint.checkpoint({**fixed, "done": dict(tests), "unit": state.get("unit"),
                               "inner": state.get("inner")}, force=True)
    wanted = [("VLMR", options.vlmr, vlmr_available, "src.selection.vlmr"),
              ("BLRT", options.blrt > 0, blrt_available, "src.selection.blrt")]
    for name, on, available, module in wanted:
        if on and available() is not None:
            notes.append(t("enum.module_missing", test=name, module=module))
    if options.vlmr and options.partitioned:
        notes.append(t("enum.vlmr_partitioned"))
    rows = criteria_rows(prepared, fits, options)
    needs_executor = options.blrt > 0 and any("blrt" not in tests.get(k, {}) for k in keys)
    with phases._own_executor(options, executor, needs_executor) as executor:
        for (a, b), key in zip(pairs, keys):
            todo = [k for k in _wanted_tests(options) if k not in tests.get(key, {})]
            if not todo:
                continue
            entry = tests.setdefault(key, {})
            _message(reporter, t("enum.testing", a=a, b=b))
            _run_tests(prepared, fits, options, a, b, entry,
                       _KCheckpoint(checkpoint, key, tests, fixed), save, reporter, executor)
            save()
    for row, key in zip(rows[1:], keys):
        entry = tests.get(key, {})
        if entry.get("vlmr"):
            row["vlmr_p"], row["lmr_p"] = entry["vlmr"].get("vlmr_p"), entry["vlmr"].get("lmr_p")
        if entry.get("blrt"):
            row["blrt_p"] = entry["blrt"].get("p_value")
        notes += [str(n) for n in entry.get("notes", [])]
        notes += [str(n) for n in (entry.get("vlmr") or {}).get("notes", [])]
        notes += [str(n) for n in (entry.get("blrt") or {}).get("notes", [])]
    selected, why = choose(rows, options.select, options.alpha)
    for row in rows:
        row["selected"] = row["k"] == selected
    _message(reporter, t("enum.selected", k=selected, rule=options.select.upper()))
    return {"ks": list(ks), "pairs": pairs, "rows": rows, "selected": int(selected),
            "rule": options.select, "alpha": float(options.alpha), "tests": tests,
            "notes": [*why, *notes], "warnings": warnings_of(fits, rows), "settings": settings}


def _wanted_tests(options: RunOptions) -> list[str]:
    out = []
    if options.vlmr and not options.partitioned and vlmr_available() is None:
        out.append("vlmr")
    if options.blrt > 0 and blrt_available() is None:
        out.append("blrt")
    return out


# ------------------------------------------------ standard_error_computation
def _check_se(key: str, value: Any) -> None:
    require(isinstance(value, dict), f"the saved standard errors of K = {key} are not a mapping")


def se_ks(selection: Mapping[str, Any], options: RunOptions) -> list[int]:
    """The K whose standard errors are computed: the selected one, or all (``--se-for``)."""
    return options.k_list() if options.se_for == "all" else [int(selection["selected"])]


def standard_errors_by_k(prepared: Prepared, fits: Mapping[str, Any],
                         selection: Mapping[str, Any], options: RunOptions,
                         checkpoint: Checkpointer | None = None, reporter: Any = None,
                         executor: Any = None) -> dict[str, Any]:
    """Phase ``standard_error_computation`` with several K: ``{"by_k": {K: {method:
    SEResult.to_dict()}}}``, each K's methods checkpointed inside its own namespace."""
    keys = [str(k) for k in se_ks(selection, options)]
    checkpoint = checkpoint or NullCheckpointer()
    state = _resumed(checkpoint, "se_by_k", keys, _check_se)
    done: dict[str, Any] = dict(state.get("done", {}))
    fixed = {"kind": "se_by_k", "keys": keys}
    for key in keys:
        if key in done:
            continue
        prepared_k = prepared_for(prepared, options, int(key))
        done[key] = phases.compute_standard_errors(
            prepared_k, fits["fits"][key], options, _KCheckpoint(checkpoint, key, done, fixed),
            reporter, executor)
        checkpoint.checkpoint({**fixed, "done": dict(done), "unit": None, "inner": None},
                              force=True)
    return {"by_k": {key: done[key] for key in keys}}
