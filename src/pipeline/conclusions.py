"""What a fit means, for the result files: per-row posteriors, classification quality,
goodness of fit, derived parameters, the intervals' method, and the figures.

One call per K in ``result_output`` (:func:`conclusions_of`); it gathers the pure functions of
:mod:`src.inference.classification`, :mod:`src.inference.goodness`,
:mod:`src.output.estimates`, :mod:`src.output.posteriors` and :mod:`src.output.plots` and
hands the writers a :class:`Conclusions`: keys for ``fit.json``, report sections
(:mod:`src.output.conclusions`), figures and extra files.  Which parts apply is decided by
what the model declares: goodness of fit against the saturated table for latent class models,
standard deviations and correlations for Gaussian mixtures (what the family declares,
:mod:`src.inference.summaries`), the rest for every model.

The posteriors of every row are computed once per K
(:func:`src.inference.classification.posteriors_of`: on the distinct answer patterns for a
model with ``row_patterns``) and shared by the classification summary, ``posteriors.csv``
and the figures.  With partitioned input the family's summaries read the answer patterns'
table summed over the partitions (:func:`src.pipeline.partitioned.pattern_table`; with
covariates it carries each pattern's sum of class probabilities), and a part that could not
be computed is said in a note of the classification section, never skipped silently.

The parametric-bootstrap p-values of G2 and X2 (``--gof-bootstrap B``) are the only long
part: replicates run on the run's executor and are checkpointed one by one (the
``result_output`` phase's checkpoint), so a killed run resumes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ..config import RunOptions
from ..inference.classification import classification_summary, posteriors_of
from ..inference.summaries import model_summaries
from ..output.estimates import interval_summary, primary_method
from ..output.posteriors import POSTERIORS_CSV, posteriors_csv
from ..selection.blrt import FIT_OPTION_KEYS
from .phases import Prepared

__all__ = ["Conclusions", "conclusions_of", "KeptReplicates", "with_kept_replicates"]


@dataclass
class Conclusions:
    """What :func:`conclusions_of` found: ``json`` (keys added to fit.json, from which the
    report's sections are made), ``figures`` ({file: Plot}), ``files`` ({name: bytes},
    e.g. posteriors.csv)."""

    json: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)


def _params(fit: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in fit["params"].items()}


def conclusions_of(prepared: Prepared, fit: Mapping[str, Any], se: Mapping[str, Any],
                   options: RunOptions, *, checkpoint: Any = None, executor: Any = None,
                   reporter: Any = None, k: int | None = None,
                   gof_bootstrap_replicates: int | None = None) -> Conclusions:
    """The conclusions of one fit (one K) on the prepared data.

    ``gof_bootstrap_replicates``: B of the goodness-of-fit bootstrap (default
    ``options.gof_bootstrap``; the enumeration runs it for the selected K only)."""
    model, data, params = prepared.model, prepared.data, _params(fit)
    chunk = int(options.chunk_size)
    out = Conclusions()
    record = prepared.record
    n_obs = prepared.n_obs
    out.json["rows"] = {"n_used": n_obs,
                        "n_dropped": int(record.get("n_dropped", int(record.get("n_rows", n_obs)) - n_obs)),
                        "id_column": prepared.id_column}
    if record.get("weight_column") is not None:   # the rows used stand for this many
        out.json["rows"]["weight_sum"] = float(record.get("weight_sum", n_obs))
    # the posteriors of every row, once (on the distinct answer patterns when the model
    # groups its rows): the classification summary, posteriors.csv and the figures share them
    if prepared.partitioned:   # one pass: posteriors/ as Parquet, the classification sums
        from .partitioned import partitioned_conclusions

        out.json["classification"], out.json["posteriors"] = partitioned_conclusions(
            prepared, params, options)
        data = prepared.sample   # the figures: the sample's rows
        post = posteriors_of(model, data, params, chunk)
        from .partitioned import pattern_table

        # the family's summaries read no rows but this table (LCA: every row as answer
        # patterns with counts, with covariates their class probabilities' sums) or none
        summary_data = pattern_table(prepared, params)
    else:   # the posteriors the drawing process was sent, if they are this fit's
        from ..output import background

        post = background.posteriors_for(model, data, params, chunk)
        if post is None:
            post = posteriors_of(model, data, params, chunk)
        out.json["classification"] = classification_summary(model, data, params,
                                                            chunk_size=chunk, resp=post)
        summary_data = data
    intervals = interval_summary(model, se, options)
    out.json.update(intervals)
    primary = primary_method(se, options)

    def progress(index: int, status: str, done: int, total: int) -> None:
        reporter.unit("G2/X2", done, total, kind="replicate", k=k)

    B = options.gof_bootstrap if gof_bootstrap_replicates is None else gof_bootstrap_replicates
    not_computed: list[str] = []   # what a summary could not compute, said in the report
    out.json.update(model_summaries(
        model, summary_data, params, n_params=int(fit["n_params"]),
        se=se[primary] if primary is not None else None, ci_level=options.ci_level,
        seed=options.seed, gof_replicates=B,
        fit_options={name: getattr(options, name) for name in FIT_OPTION_KEYS},
        executor=executor, checkpoint=checkpoint,
        on_replicate=progress if reporter is not None else None, notes=not_computed))
    if not_computed:
        out.json["classification"].setdefault("notes", []).extend(not_computed)
    if hasattr(model, "design_names"):   # --covariates: the one-step model's block
        from ..output.covariates import covariates_json
        from ..output.estimates import estimates_rows

        header, rows = estimates_rows(model, fit, se, options)
        out.json["covariates"] = covariates_json(model, header, rows, params["weight"],
                                                 out.json)
    if not prepared.partitioned:
        out.files[POSTERIORS_CSV] = posteriors_csv(model, data, params, prepared.row_labels,
                                                   id_column=prepared.id_column,
                                                   chunk_size=chunk, resp=post)
    if options.plots:
        from ..output.plots import figures

        out.figures = figures(model, data, params, post)
    return out


class KeptReplicates:
    """The phase's checkpoint for the goodness-of-fit bootstrap, seeded with the replicates an
    earlier ``result_output`` of this task kept (``kept``: its final state), so redoing the
    results for an output-only change (``--ci-level``, ``--formats``, the language) refits
    nothing already refitted.  The phase's own saved state wins; ``last`` is the final state,
    stored in the phase's result for the next time."""

    def __init__(self, checkpoint: Any, kept: Mapping[str, Any] | None) -> None:
        self.inner, self.kept, self.last = checkpoint, kept, None
        self.used_kept = False

    def resume_state(self) -> Any:
        own = self.inner.resume_state() if self.inner is not None else None
        if own:
            self.last = own
            return own
        if self.kept:
            self.used_kept = True
            self.last = self.kept
        return self.kept

    def checkpoint(self, state: Any, *, force: bool = False) -> bool:
        self.last = state
        return self.inner.checkpoint(state, force=force) if self.inner is not None else False


def with_kept_replicates(compute: Any, checkpoint: Any, kept: Mapping[str, Any] | None
                         ) -> tuple[Any, Any]:
    """``compute(checkpoint)`` with :class:`KeptReplicates`; kept replicates of other
    settings or another estimate (CheckpointInvalid) are set aside and the bootstrap runs
    afresh.  Returns (result, the bootstrap's final state or None)."""
    from ..utils.checkpointing import CheckpointInvalid

    keeper = KeptReplicates(checkpoint, kept)
    try:
        return compute(keeper), keeper.last
    except CheckpointInvalid:
        if not keeper.used_kept:
            raise
    keeper = KeptReplicates(checkpoint, None)
    return compute(keeper), keeper.last
