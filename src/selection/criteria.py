"""Information criteria and classification statistics of a fitted mixture (lower is better).

With ``LL`` the maximised log-likelihood, ``p`` the number of free parameters and ``n`` the
number of rows:

    AIC   = -2 LL + 2 p
    BIC   = -2 LL + p ln n
    SABIC = -2 LL + p ln((n + 2) / 24)           (Sclove's sample-size adjusted BIC)
    CAIC  = -2 LL + p (ln n + 1)
    ICL   = BIC - 2 sum_i ln tau_{i, c(i)}       (c(i): the modal class of row i)

ICL is mclust's hard-assignment ICL on the lower-is-better scale (mclust prints its
negative, 2 LL - p ln n + 2 sum_i ln tau_{i,c(i)}).  The relative entropy is
``1 - EN / (n ln K)`` with ``EN = -sum_i sum_k tau_ik ln tau_ik`` (1: every row sure of its
class; undefined, None, for K = 1), and ``smallest_class`` the smallest estimated class
weight (the one definition every warning about small classes uses).  The posteriors
``tau`` are computed chunk by chunk in row order, so memory is bounded by the chunk size
and the sums are the same on every run.

Row weights (:data:`~src.models.base.WEIGHT_KEY`): ``n`` is the sum of the weights and the
sums over rows (EN, the ICL's modal term) are weighted, so integer frequency weights give the
replicated rows' criteria.  With sampling weights the same formulas are only approximate
(the pipeline marks them so: :func:`approximate`).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from ..models.base import Data, MixtureModel, Params, split_weight

__all__ = ["information_criteria", "classification", "criteria", "smallest_class", "CRITERIA",
           "n_of", "approximate"]

#: the information criteria, in the order tables show them
CRITERIA = ("aic", "bic", "sabic", "caic", "icl")


def n_of(data: Data) -> float:
    """The n of the criteria: the rows of ``data``, or the sum of their weights (``data``
    may be a row engine over partitions)."""
    from ..estimation.em import is_engine, n_observations

    if is_engine(data):
        return float(n_observations(data))
    rows, w = split_weight(data)
    return float(next(iter(rows.values())).shape[0]) if w is None else float(w.sum())


def approximate(weight_type: str | None) -> bool:
    """True when the information criteria are approximate: sampling (survey) weights, whose
    sum is not a number of independent rows and whose weighted log-likelihood is a
    pseudo-likelihood."""
    return weight_type == "sampling"


def information_criteria(loglik: float, n_params: int, n_obs: float) -> dict[str, float]:
    """AIC, BIC, SABIC and CAIC of a fit (lower is better); ``n_obs`` may be a sum of
    weights."""
    dev, p, n = -2.0 * float(loglik), int(n_params), float(n_obs)
    return {"aic": dev + 2.0 * p, "bic": dev + p * math.log(n),
            "sabic": dev + p * math.log((n + 2) / 24.0), "caic": dev + p * (math.log(n) + 1.0)}


def classification(model: MixtureModel, data: Data, params: Params,
                   chunk_size: int = 4096) -> dict[str, float]:
    """``{"entropy_sum": EN, "modal_log_sum": sum_i ln tau_{i,c(i)}, "n_obs"}`` from the
    posteriors of ``params``, chunk by chunk (``tau ln tau`` is 0 where ``tau`` is 0); with
    row weights the sums are weighted and ``n_obs`` is their sum.  Over a row engine's
    partitions: each partition's sums, added in partition order."""
    from ..estimation.em import is_engine

    if is_engine(data):
        en, modal = 0.0, 0.0
        for part in data.map_partitions(_classification_of_chunks, model, params):
            en, modal = en + part["entropy_sum"], modal + part["modal_log_sum"]
        return {"entropy_sum": en, "modal_log_sum": modal, "n_obs": n_of(data)}
    rows, w = split_weight(data)
    n = int(next(iter(rows.values())).shape[0])
    en, modal = 0.0, 0.0
    for a in range(0, n, int(chunk_size)):
        lj = model.log_joint({k: v[a:a + chunk_size] for k, v in rows.items()}, params)
        top = lj.max(axis=1, keepdims=True)
        lse = top[:, 0] + np.log(np.exp(lj - top).sum(axis=1))
        log_tau = lj - lse[:, None]
        tau = np.exp(log_tau)
        ent = tau * np.where(tau > 0, log_tau, 0.0)
        if w is None:
            en -= float(ent.sum())
            modal += float(log_tau.max(axis=1).sum())
        else:
            wa = w[a:a + chunk_size]
            en -= float(wa @ ent.sum(axis=1))
            modal += float(wa @ log_tau.max(axis=1))
    return {"entropy_sum": en, "modal_log_sum": modal, "n_obs": n if w is None else float(w.sum())}


def _classification_of_chunks(chunks: Any, model: MixtureModel, params: Params) -> dict[str, float]:
    """:func:`classification` of one partition's chunks (a row engine maps it)."""
    en, modal = 0.0, 0.0
    for chunk in chunks:
        n = int(next(iter(split_weight(chunk)[0].values())).shape[0])
        part = classification(model, chunk, params, max(n, 1))
        en, modal = en + part["entropy_sum"], modal + part["modal_log_sum"]
    return {"entropy_sum": en, "modal_log_sum": modal}


def criteria(model: MixtureModel, data: Data, params: Params, *, loglik: float,
             n_params: int, chunk_size: int = 4096) -> dict[str, Any]:
    """Every criterion of one fitted K: ``aic, bic, sabic, caic, icl, entropy,
    smallest_class`` (``entropy`` None for K = 1).  ``n`` is the sum of the row weights
    when ``data`` has them (:func:`n_of`)."""
    n = n_of(data)
    k = int(model.n_components)
    out: dict[str, Any] = information_criteria(loglik, n_params, n)
    cls = classification(model, data, params, chunk_size)
    out["icl"] = out["bic"] - 2.0 * cls["modal_log_sum"]
    out["entropy"] = None if k < 2 else 1.0 - cls["entropy_sum"] / (n * math.log(k))
    out["smallest_class"] = smallest_class(params)
    return out


def smallest_class(params: Mapping[str, Any]) -> float:
    """The smallest estimated class weight."""
    return float(np.min(np.asarray(params["weight"], dtype=float)))
