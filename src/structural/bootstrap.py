"""The bootstrap of all three steps: standard errors that account for step 1.

Replicate ``r`` draws its rows from ``stream(seed, "structural_bootstrap", r)`` as the
project's nonparametric bootstrap does (:func:`src.inference.bootstrap.replicate_data`:
rows with replacement; frequency weights as Multinomial counts, sampling weights kept with
their rows), refits the measurement model by EM from the estimate (one start), matches its
classes to the estimate's (:func:`src.inference.align.align_by_posteriors`), then redoes
step 2 (assignments, D) and step 3 (the same correction) on the replicate's rows.  SE = the
replicates' standard deviation (ddof=1) of each reported parameter; the replicate estimates
are kept for percentile intervals at any level.

Each replicate is one unit of work on the run's executor, checkpointed as it finishes; a
replicate depends only on (seed, r), and the results are combined in index order, so the
output does not depend on the workers or on interruptions.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable

import numpy as np

from ..inference.goodness import estimate_digest
from ..models.base import WEIGHT_KEY, Data, MixtureModel, Params, split_weight
from ..parallel.protocol import units_finished
from ..utils.checkpointing import Checkpointer, NullCheckpointer, require
from ..utils.rng import stream
from .data import StructuralData, take
from .run import posteriors, step23

__all__ = ["structural_replicate", "structural_bootstrap", "PURPOSE"]

#: the random stream of replicate r: stream(seed, PURPOSE, r)
PURPOSE = "structural_bootstrap"


def structural_replicate(model: MixtureModel, data: Data, params: Params,
                         sdata: StructuralData, opts: dict[str, Any], r: int) -> dict[str, Any]:
    """Replicate ``r``: ``{"status", "values" (reported step-3 estimates), "message"}``;
    never raises (an exception is ``status="error"``)."""
    from ..estimation.em import fit_em
    from ..inference.align import align_by_posteriors
    from ..inference.bootstrap import replicate_data

    try:
        rng = stream(opts["seed"], PURPOSE, r)
        rows, w = split_weight(data)
        n = int(next(iter(rows.values())).shape[0])
        index: dict[str, np.ndarray] = {"row": np.arange(n)}
        if w is not None:
            index[WEIGHT_KEY] = w
        drawn = replicate_data(model, index, params, "nonparametric", rng,
                               opts.get("weight_type", "frequency"))
        idx, wb = drawn["row"], drawn.get(WEIGHT_KEY)
        data_b = {k: np.asarray(v)[idx] for k, v in rows.items()}
        if wb is not None:
            data_b[WEIGHT_KEY] = np.asarray(wb, dtype=np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = fit_em(model, data_b, n_starts=1, seed=opts["seed"], init_params=params,
                         tol=opts["tol"], max_iter=opts["max_iter"],
                         accelerate=opts["accelerate"], chunk_size=opts["chunk_size"])
            aligned = align_by_posteriors(model, data, params, fit.params, opts["chunk_size"])
            tau = posteriors(model, data_b, aligned, opts["chunk_size"])
            sm, res, _, _ = step23(tau, wb, take(sdata, idx), int(model.n_components),
                                   correction=opts["correction"],
                                   assignment=opts["assignment"],
                                   weight_type=opts.get("weight_type", "frequency"))
        values = sm.reported(res.theta)
        if not np.all(np.isfinite(values)):
            return {"status": "error", "values": None,
                    "message": "the step-3 estimates are not finite"}
        ok = fit.converged and res.converged
        return {"status": "ok" if ok else "not_converged", "values": values,
                "message": "" if ok else "no convergence"}
    except Exception as exc:   # a replicate's failure is data, not a crash
        return {"status": "error", "values": None, "message": f"{type(exc).__name__}: {exc}"}


def _check(saved: Any, config: dict[str, Any], R: int) -> dict[str, dict[str, Any]]:
    require(isinstance(saved, dict) and saved.get("kind") == PURPOSE,
            "it is not a three-step bootstrap state")
    require(saved.get("config") == config, "it was made with other options or another estimate")
    reps = saved.get("replicates", {})
    require(isinstance(reps, dict), "its replicates are not a mapping")
    for key, rec in reps.items():
        require(isinstance(key, str) and key.isdigit(), f"replicate {key!r} is not numbered")
        require(isinstance(rec, dict) and rec.get("status") in ("ok", "not_converged", "error"),
                f"replicate {int(key) + 1} lacks a status")
        if rec["status"] != "error":
            v = np.asarray(rec.get("values"))
            require(v.shape == (R,) and v.dtype.kind == "f",
                    f"replicate {int(key) + 1}'s estimates do not fit")
    return {str(k): dict(v) for k, v in reps.items()}


def structural_bootstrap(model: MixtureModel, data: Data, params: Params,
                         sdata: StructuralData, *, n_bootstrap: int, seed: int,
                         correction: str, assignment: str, n_reported: int,
                         weight_type: str = "frequency", tol: float = 1e-8,
                         max_iter: int = 1000, accelerate: str = "squarem",
                         chunk_size: int = 4096, checkpoint: Checkpointer | None = None,
                         executor: Any = None,
                         on_replicate: Callable[[int, str, int, int], None] | None = None
                         ) -> dict[str, Any]:
    """``{"replicates" (B_ok, R), "se" (R,), "n_bootstrap", "n_ok", "n_failed",
    "first_error"}`` of ``n_bootstrap`` replicates (module docstring)."""
    B = int(n_bootstrap)
    checkpoint = checkpoint if checkpoint is not None else NullCheckpointer()
    opts = {"seed": int(seed), "tol": float(tol), "max_iter": int(max_iter),
            "accelerate": accelerate, "chunk_size": int(chunk_size), "correction": correction,
            "assignment": assignment}
    if WEIGHT_KEY in data:
        opts["weight_type"] = weight_type
    config = dict(opts, n_reported=int(n_reported), estimate=estimate_digest(model, params))
    saved = checkpoint.resume_state()
    done = _check(saved, config, int(n_reported)) if saved else {}
    done = {k: v for k, v in done.items() if int(k) < B}
    missing = [r for r in range(B) if str(r) not in done]
    if missing:
        fn = functools.partial(structural_replicate, model, data, params, sdata, opts)
        with units_finished(executor, fn, missing) as finished:
            for r, rec in finished:
                done[str(r)] = rec
                checkpoint.checkpoint({"kind": PURPOSE, "config": config,
                                       "replicates": dict(done)})
                if on_replicate is not None:
                    on_replicate(r, rec["status"], len(done), B)
        checkpoint.checkpoint({"kind": PURPOSE, "config": config, "replicates": dict(done)},
                              force=True)
    order = sorted(done, key=int)
    ok = [r for r in order if done[r]["status"] == "ok"]
    reps = np.array([np.asarray(done[r]["values"], dtype=float) for r in ok]).reshape(
        len(ok), int(n_reported))
    se = reps.std(axis=0, ddof=1) if len(ok) >= 2 else np.full(int(n_reported), np.nan)
    errors = [r for r in order if done[r]["status"] == "error"]
    return {"replicates": reps, "se": se, "n_bootstrap": B, "n_ok": len(ok),
            "n_failed": B - len(ok),
            "first_error": (f"replicate {int(errors[0]) + 1}: {done[errors[0]]['message']}"
                            if errors else None)}
