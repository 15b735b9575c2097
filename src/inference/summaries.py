"""The family's own summaries of a fit, by what the family declares
(``MixtureModel.summaries``), so the pipeline names no family:

* ``response_patterns`` (categorical answers, :mod:`.goodness`): G2 and X2 against the
  saturated table with their degrees of freedom and, with ``gof_replicates`` > 0, their
  parametric-bootstrap p-values; Latent GOLD's bivariate residuals; the class-by-item
  response probabilities;
* ``sd_correlation`` (Gaussian covariances, :mod:`.goodness`): per-class standard
  deviations and correlations with delta-method standard errors (needs a covariance of the
  free parameters).

``data`` may be the rows, a pattern table (:func:`.goodness.pattern_table_of`: partitioned
input, :data:`PATTERN_SUMMARIES` read nothing else) or None when neither is at hand: then
what needs rows is not computed and a sentence saying so is added to ``notes`` (never a
silent skip).

A new family lists the names that apply to it; a new kind of summary is one entry here.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..models.base import Data, MixtureModel, Params
from ..utils.messages import register, t
from .goodness import (bivariate_residuals, gmm_derived, gof_bootstrap, lca_fit_statistics,
                       response_probability_table)

__all__ = ["SUMMARIES", "PATTERN_SUMMARIES", "model_summaries"]

#: the summaries computed from a table of the answer patterns (with partitioned input, the
#: pipeline sums one over the partitions: :func:`src.pipeline.partitioned.pattern_table`)
PATTERN_SUMMARIES = ("response_patterns",)

register({
    "summaries.no_patterns": {
        "en": "G2, X2 and the bivariate residuals were not computed: the answer patterns of "
              "the rows could not be tabulated.",
        "zh": "未计算 G2、X2 和双变量残差：无法将各行的回答模式汇总成表。"},
})


def _response_patterns(model: MixtureModel, data: Data | None, params: Params,
                       ctx: Mapping[str, Any]) -> dict[str, Any]:
    se = ctx["se"]
    named = dict(zip(se["names"], np.asarray(se["se"], dtype=float))) if se else None
    table = response_probability_table(model, params, se=named)   # reads no rows
    if data is None:
        ctx["notes"].append(t("summaries.no_patterns"))
        return {"response_probabilities": table}
    gof = lca_fit_statistics(model, data, params, n_params=ctx["n_params"],
                             bootstrap=ctx["gof_replicates"])
    if ctx["gof_replicates"] > 0:
        gof["bootstrap"] = gof_bootstrap(model, data, params, ctx["gof_replicates"], ctx["seed"],
                                         fit_options=ctx["fit_options"],
                                         executor=ctx["executor"], checkpoint=ctx["checkpoint"],
                                         on_replicate=ctx["on_replicate"])
    return {"goodness_of_fit": gof,
            "bivariate_residuals": bivariate_residuals(model, data, params),
            "response_probabilities": table}


def _sd_correlation(model: MixtureModel, data: Data | None, params: Params,
                    ctx: Mapping[str, Any]) -> dict[str, Any]:
    se = ctx["se"]
    if not se:
        return {}
    return {"derived": gmm_derived(model, params, np.asarray(se["cov_free"], dtype=float),
                                   ci_level=ctx["ci_level"])}


#: summary name -> function(model, data, params, context) -> fit.json keys
SUMMARIES: dict[str, Callable[..., dict[str, Any]]] = {
    "response_patterns": _response_patterns,
    "sd_correlation": _sd_correlation,
}


def model_summaries(model: MixtureModel, data: Data | None, params: Params, *, n_params: int,
                    se: Mapping[str, Any] | None, ci_level: float, seed: int,
                    gof_replicates: int = 0, fit_options: Mapping[str, Any] | None = None,
                    executor: Any = None, checkpoint: Any = None,
                    on_replicate: Callable[[int, str, int, int], None] | None = None,
                    names: Sequence[str] | None = None,
                    notes: list[str] | None = None) -> dict[str, Any]:
    """fit.json keys of every summary the family declares (``names``: only those of them).
    ``data``: the rows, a pattern table or None (module doc); ``se``: the primary
    standard-error result (``SEResult.to_dict()``) or None; ``gof_replicates``: B of the
    goodness-of-fit bootstrap (``fit_options``: the run's search for its refits); ``notes``:
    receives a sentence for each part not computed."""
    ctx = {"n_params": n_params, "se": se, "ci_level": ci_level, "seed": seed,
           "gof_replicates": int(gof_replicates), "fit_options": dict(fit_options or {}),
           "executor": executor, "checkpoint": checkpoint, "on_replicate": on_replicate,
           "notes": notes if notes is not None else []}
    out: dict[str, Any] = {}
    for name in getattr(model, "summaries", ()):
        if names is not None and name not in names:
            continue
        out.update(SUMMARIES[name](model, data, params, ctx))
    return out
