"""EM on data that live in partitions: the start search on a sample, the refinement on all rows.

Data larger than memory are seen through a row engine (:mod:`src.estimation.engines`: the
in-process streaming engine, or :mod:`src.parallel.dask_engine` on a cluster), whose one
evaluation of the EM map is a full pass over the rows.  Running the whole multi-start search
(:mod:`src.estimation.starts`: 50 candidates, 10 starts to convergence) on such data would
cost hundreds of passes, so the search runs on a **random sample** of the rows held in
memory, and the best start of the sample is **refined on the full data** by EM (with SQUAREM
when asked) to convergence.  A sample of every row (``--sample-rows`` at least N) is the data
in input order: its search is the in-memory fit, and nothing is left to refine.

What the sample is: :func:`src.data.partitions.sample` (a simple random sample without replacement of ``--sample-rows`` kept rows, the row numbers
drawn from ``stream(seed, "sample")``), so it does not depend on how the files are split or on
the number of workers.

Checkpoints: the search's state, then (once it is done) its result and the refinement's
state, in one phase state ``{"stage", "search", "inner"}``; a resumed run continues the
stage it was in, bitwise.
"""

from __future__ import annotations

from typing import Any, Callable

from src.models.base import Data, MixtureModel
from src.utils.checkpointing import Checkpointer, NullCheckpointer, require

from .em import fit_em, n_observations
from .results import FitResult

__all__ = ["fit_partitioned"]



class _Stage:
    """One stage's view of the phase's checkpoint (the other stage's part kept as it is)."""

    def __init__(self, parent: Checkpointer, stage: str, search: dict[str, Any] | None,
                 resumed: dict[str, Any] | None) -> None:
        self.parent, self.stage, self.search, self.resumed = parent, stage, search, resumed

    def resume_state(self) -> dict[str, Any] | None:
        return self.resumed

    def checkpoint(self, state: dict[str, Any], *, force: bool = False) -> bool:
        return self.parent.checkpoint({"kind": "partitioned_fit", "stage": self.stage,
                                       "search": self.search, "inner": state}, force=force)


def _saved(checkpoint: Checkpointer) -> dict[str, Any]:
    saved = checkpoint.resume_state()
    if not saved:
        return {}
    require(isinstance(saved, dict) and saved.get("kind") == "partitioned_fit",
            "it is not the state of a fit over partitions")
    require(saved.get("stage") in ("search", "refine"),
            f"its stage is {saved.get('stage')!r}, not 'search' or 'refine'")
    require(saved["stage"] == "search" or isinstance(saved.get("search"), dict),
            "it refines a start without the search's result")
    return saved


def fit_partitioned(model: MixtureModel, engine: Any, sample: Data, *,
                    checkpoint: Checkpointer | None = None, executor: Any = None,
                    on_iteration: Callable[[int, int, float], None] | None = None,
                    **options: Any) -> FitResult:
    """Fit ``model`` to the rows behind ``engine``: the start search of :func:`fit_em` on
    ``sample`` (in memory; ``executor`` runs its starts), then EM from its best estimate on
    ``engine`` (every evaluation one pass over the partitions) to convergence.

    ``options``: :func:`fit_em`'s keywords (n_starts, n_candidates, candidate_iter, tol,
    max_iter, seed, accelerate, chunk_size).  The result describes the refined estimate
    (its log-likelihood, iterations, trace, ``n_obs`` of all rows); the starts' records
    (``start_*``, ``replication``) are the search's, on the sample, and ``search`` gains
    ``sample_rows`` and ``sample_loglik``.
    """
    checkpoint = checkpoint if checkpoint is not None else NullCheckpointer()
    saved = _saved(checkpoint)
    n_sample = int(next(iter(sample.values())).shape[0])
    if saved.get("stage") == "refine":
        searched = FitResult.from_dict(saved["search"])
    else:
        stage = _Stage(checkpoint, "search", None, saved.get("inner") if saved else None)
        searched = fit_em(model, sample, checkpoint=stage, executor=executor, **options)
        saved = {}
    if n_sample >= int(engine.n_obs):   # the sample is every row, in input order: done
        return searched
    record = searched.to_dict()
    refine_options = {k: v for k, v in options.items()
                      if k not in ("n_starts", "n_candidates", "candidate_iter", "extra_starts")}
    stage = _Stage(checkpoint, "refine", record, saved.get("inner") if saved else None)
    checkpoint.checkpoint({"kind": "partitioned_fit", "stage": "refine", "search": record,
                           "inner": saved.get("inner") if saved else None}, force=True)
    refined = fit_em(model, engine, init_params=searched.params, n_starts=1,
                     checkpoint=stage, on_iteration=on_iteration, **refine_options)
    notes = list(dict.fromkeys(list(searched.warnings) + list(refined.warnings)))
    search = {**searched.search, "sample_rows": n_sample,
              "sample_loglik": float(searched.loglik), "refine_iter": int(refined.n_iter)}
    lls = list(searched.start_logliks)
    return FitResult(params=refined.params, loglik=refined.loglik,
                     n_iter=int(searched.n_iter) + int(refined.n_iter),
                     converged=refined.converged, best_start=searched.best_start,
                     start_logliks=lls, start_n_iter=list(searched.start_n_iter),
                     start_converged=list(searched.start_converged),
                     loglik_trace=list(refined.loglik_trace), n_obs=n_observations(engine),
                     n_params=refined.n_params, seconds=searched.seconds + refined.seconds,
                     warnings=notes, start_ids=list(searched.start_ids),
                     start_kinds=list(searched.start_kinds),
                     start_flags=[list(f) for f in searched.start_flags],
                     flags=dict(searched.flags), replication=dict(searched.replication),
                     search=search)

