"""Goodness of fit: what the estimate says about the data it was fitted to.

Latent class models (:class:`~src.models.lca.LatentClassModel`)
------------------------------------------------------------------
**G2 and X2** (:func:`lca_fit_statistics`) compare the observed counts of the response
patterns with the model against the saturated multinomial over all ``prod(C_j)`` patterns,
on the ``N'`` rows whose every answer is observed (poLCA's ``Nobs``; the other rows take part
in the fit but not here).  With ``O`` a pattern's count and ``E = N' P(pattern)`` its
expected count::

    G2 = 2 sum_{O > 0} O ln(O / E)
    X2 = sum_{all cells} (O - E)^2 / E = sum_{O > 0} (O - E)^2 / E + (N' - sum_{O > 0} E)

The cells never observed add their expected counts, ``N' - sum_{O>0} E``, since the
pattern probabilities sum to 1 (the cells are never enumerated for the statistics; this is
poLCA's ``Chisq``).  ``df = prod(C_j) - 1 - p`` (a Python int, possibly huge);
``df_polca = min(N, prod(C_j) - 1) - p`` is poLCA's ``resid.df`` (N: the rows of the fit).

**Sparse tables.**  Chi-square p-values are given only when ``df > 0`` and the table is not
sparse.  It is sparse when

* the mean expected count ``N' / prod(C_j)`` is below 5 (decided without enumerating), or
* else (then ``prod(C_j) <= N'/5``, so enumerating costs less than one E-step) by Cochran's
  rule on every cell: some expected count is below 1, or more than 20% are below 5 (cells
  of model probability 0, possible at boundary estimates, count as below 1).

A sparse table gets no p-values and a note offering ``--gof-bootstrap B``:
:func:`gof_bootstrap` simulates B data sets from the estimate (``model.sample``: each row
keeps its missing answers), refits each with the run's search plus the estimate as an extra
start (as the BLRT does), recomputes G2 and X2 and reports ``p = (1 + #{T* >= T}) / (B' + 1)``
over the B' replicates that did not fail.

**Bivariate residuals** (:func:`bivariate_residuals`, Latent GOLD's BVR): for items j < l,
the Pearson X2 of their two-way table on the ``n_jl`` rows observing both, against the
model-implied counts ``n_jl sum_k w_k p_kj(a) p_kl(b)``, divided by ``(C_j - 1)(C_l - 1)``.
Values above 3.84 (the 95% point of a chi-square with 1 df, Latent GOLD's rule of thumb)
suggest local dependence between the two items.

**Row weights** (:data:`~src.models.base.WEIGHT_KEY`; e.g. a table of response patterns
with their frequencies): a pattern's observed count is the sum of its rows' weights (any
non-negative number), ``N`` and ``N'`` are sums of weights, and the bivariate residuals'
two-way tables count weights, so integer weights give the replicated rows' statistics.  The
bootstrap simulates the rows as many times as they stand for
(:func:`~src.models.base.replicate_rows`: ``round(sum w)`` rows).  With sampling weights
the chi-square p-values are only approximate (no design correction).

**Response probabilities** (:func:`response_probability_table`): one row per item and
category, one column per class.

**Covariates of class membership** (the one-step model, :mod:`src.models.covariates`): class
weights differ by row, ``pi_ik``, so the model-implied probability of a pattern is the average
over the rows, and a pattern's expected count on the complete rows is
``E(u) = sum_{i complete} w_i sum_k pi_ik P(u | k) = N' sum_k pibar_k P(u | k)`` with
``pibar`` the average predicted class probabilities of the complete rows: the latent class
family's statistics with ``pibar`` as its weights (:func:`table_view`).  The bivariate
residuals' expected two-way tables average the same way over the rows observing both items
(``sum_i w_i pi_ik`` per pair).  Their ``df`` counts the parameters of the pattern table's
model, the family's own (its K-1 weights instead of the coefficients): the estimate
maximises the likelihood given the covariates, not the table's, so G2 is at least the
table's minimum and its chi-square p-value is only approximate (a note says so); the
parametric bootstrap (the covariate model's ``sample``: classes drawn from each row's
``pi_i``, refits of the covariate model) is calibrated.

**A pattern table instead of the rows** (:func:`pattern_table_of`, summed over chunks and
partitions by :func:`merge_pattern_tables`; partitioned input): the distinct answer patterns,
missing answers included, each with its count (sum of row weights, :data:`WEIGHT_KEY`) and,
for a covariate model, the sum over its rows of ``w_i pi_ik`` (:data:`CLASS_MASS_KEY`).  Every
statistic here is a sum over rows of something that depends on the row only through its
answers, its weight and (covariates) ``w_i pi_ik``, so the table gives the rows' numbers (to
rounding: the sums are formed in another order).

Gaussian mixtures
-----------------
:func:`gmm_derived`: each class's standard deviations ``sd[k,col] = sqrt(S_jj)`` and (full
covariances) correlations ``cor[k,a,b] = S_ab / sqrt(S_aa S_bb)``, with delta-method
standard errors ``sqrt(diag(J C J'))`` from the exact Jacobian ``J`` of these nonlinear
functions with respect to the free parameters (:func:`gmm_derived_jacobian`) and the
free-parameter covariance ``C`` of any standard-error method.  Intervals are Wald
intervals on the log scale (sd) and Fisher's z scale (correlations), mapped back, so they
stay inside (0, inf) and (-1, 1).

Every public function returns JSON-able values (non-finite numbers become ``None``).
"""

from __future__ import annotations

import functools
import hashlib
import math
import warnings
from typing import Any, Callable, Mapping

import numpy as np
from scipy.special import chdtrc, logsumexp, ndtri   # (scipy.stats' own functions, without its import)

from ..models.base import WEIGHT_KEY, Data, MixtureModel, Params, replicate_rows, split_weight
from ..selection.blrt import FIT_OPTION_KEYS
from ..parallel.protocol import units_finished
from ..utils.checkpointing import Checkpointer, NullCheckpointer, require
from ..utils.messages import register, t
from ..utils.rng import stream

__all__ = ["lca_fit_statistics", "pattern_statistics", "gof_bootstrap", "gof_replicate",
           "bivariate_residuals", "response_probability_table", "gmm_derived",
           "gmm_derived_values", "gmm_derived_jacobian", "SPARSE_MEAN", "SMALL_EXPECTED",
           "SMALL_SHARE", "MIN_EXPECTED", "BVR_THRESHOLD", "table_view", "estimate_digest",
           "CLASS_MASS_KEY", "pattern_table_of", "merge_pattern_tables"]

#: the table is sparse when the mean expected count per cell is below this
SPARSE_MEAN = 5.0
#: ... or (Cochran) more than SMALL_SHARE of the expected counts are below SMALL_EXPECTED
SMALL_EXPECTED = 5.0
SMALL_SHARE = 0.20
#: ... or some expected count is below this
MIN_EXPECTED = 1.0
#: a bivariate residual above this suggests local dependence (chi-square(1) 95% point)
BVR_THRESHOLD = 3.84
#: rows per block when one-hot answers are built (small blocks keep the products in cache)
_ROWS = 8192
#: cells per block when every cell of the table is enumerated
_CELLS = 65536
#: a pattern table's key (:func:`pattern_table_of`) for each pattern's sum over its rows of
#: ``w_i pi_ik`` (n_patterns, K): what a covariate model's expected counts need of the rows
CLASS_MASS_KEY = "__class_mass__"

register({
    "gof.no_complete": {
        "en": "No row has every answer observed, so G2 and X2 against the saturated table cannot be computed.",
        "zh": "没有任何一行的所有回答都被观测到，因此无法计算相对于饱和表的 G2 和 X2。"},
    "gof.incomplete_rows": {
        "en": "G2 and X2 use the {n} of {total} rows with every answer observed.",
        "zh": "G2 和 X2 只使用所有回答都被观测到的 {n} 行（共 {total} 行）。"},
    "gof.df": {
        "en": "The model has at least as many parameters as the table has free cells (df = {df}), so G2 and X2 have no p-value.",
        "zh": "模型参数个数不少于表中自由单元格数（df = {df}），因此 G2 和 X2 没有 p 值。"},
    "gof.sparse_mean": {
        "en": "The table of response patterns is sparse ({n} rows over {cells} cells, {mean:.3g} expected per cell, below {limit:g}), so chi-square p-values would be unreliable and are not given; {then}.",
        "zh": "回答模式表是稀疏的（{n} 行分布在 {cells} 个单元格中，每格期望频数 {mean:.3g}，低于 {limit:g}），卡方 p 值不可靠，因此不予给出；{then}。"},
    "gof.sparse_cells": {
        "en": "The table of response patterns is sparse ({share:.0%} of the expected counts are below {small:g}, smallest {min:.3g}; Cochran's rule allows at most {limit:.0%} below {small:g} and none below {floor:g}), so chi-square p-values would be unreliable and are not given; {then}.",
        "zh": "回答模式表是稀疏的（{share:.0%} 的期望频数低于 {small:g}，最小为 {min:.3g}；Cochran 规则要求低于 {small:g} 的不超过 {limit:.0%} 且没有低于 {floor:g} 的），卡方 p 值不可靠，因此不予给出；{then}。"},
    "gof.then_offer": {"en": "--gof-bootstrap B gives parametric-bootstrap p-values",
                       "zh": "使用 --gof-bootstrap B 可得到参数自助法 p 值"},
    "gof.then_used": {"en": "the p-values given are from the parametric bootstrap ({B} replicates)",
                      "zh": "所给 p 值来自参数自助法（{B} 次重复）"},
    "gof.boot_failed": {
        "en": "{n} of {B} goodness-of-fit bootstrap replicates were left out because they raised an error (first, replicate {r}: {msg}).",
        "zh": "{B} 次拟合优度自助法重复中有 {n} 次出错而被排除（第一次为第 {r} 次重复：{msg}）。"},
    "gof.boot_not_converged": {
        "en": "{n} of {B} goodness-of-fit bootstrap replicates have a refit that did not converge within max_iter (kept); raise max_iter.",
        "zh": "{B} 次拟合优度自助法重复中有 {n} 次重新拟合未在 max_iter 内收敛（仍保留）；请增大 max_iter。"},
    "gof.covariates": {
        "en": "Class membership depends on the covariates, so the expected pattern counts average each row's class probabilities (sum_i sum_k pi_ik P(pattern | k)); df counts the family's {p} parameters of the pattern table (its class weights instead of the {q} coefficients), and since the estimate maximises the likelihood given the covariates, not the table's, the chi-square p-values are approximate; the parametric bootstrap (--gof-bootstrap) is not.",
        "zh": "类别归属依赖于协变量，因此期望模式频数是各行类别概率的平均（sum_i sum_k pi_ik P(模式 | k)）；df 按应答模式表模型的 {p} 个参数计算（以类别权重代替 {q} 个系数），且估计值最大化的是给定协变量的似然而非该表的似然，因此卡方 p 值只是近似的；参数自助法（--gof-bootstrap）则不是。"},
    "gof.boot_none": {
        "en": "No goodness-of-fit bootstrap replicate succeeded, so the bootstrap p-values are not given.",
        "zh": "没有任何拟合优度自助法重复成功，因此不给出自助法 p 值。"},
})


def _num(x: Any) -> float | None:
    """A JSON number: float(x), or None when it is not finite."""
    x = float(x)
    return x if math.isfinite(x) else None


def _answers(data: Data) -> np.ndarray:
    return np.asarray(data["Y"])


def _count(x: float) -> int | float:
    """A count as JSON shows it (an int when whole: every unweighted count)."""
    x = float(x)
    return int(x) if x.is_integer() else x


# ---------------------------------------------------------------- G2 and X2
def pattern_statistics(model: MixtureModel, Y: np.ndarray, params: Params,
                       weights: np.ndarray | None = None,
                       patterns: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """G2 and X2 of the complete rows of ``Y`` (n, J) at ``params`` (see the module doc).

    Returns ``g2``, ``x2`` (floats; NaN when no row is complete), ``n_complete``,
    ``n_patterns`` (distinct observed patterns) and ``expected_observed`` (the expected
    count of the observed patterns together).  ``weights`` (n,): row weights, each
    pattern's count the sum of its rows' weights (``n_complete`` their sum).
    ``patterns``: ``(distinct rows, counts)`` of unweighted ``Y`` sorted as the rows'
    answers (the model's :func:`_known_patterns`), so they are not found again: the same
    numbers, bit for bit.
    """
    Y = np.asarray(Y)
    if patterns is not None and weights is None:
        U, c = patterns
        keep = (U >= 0).all(axis=1)
        patterns, counts = U[keep], np.asarray(c, dtype=float)[keep]
        n = int(counts.sum())
    else:
        keep = (Y >= 0).all(axis=1)
        complete = Y[keep]
        w = None if weights is None else np.asarray(weights, dtype=float)[keep]
        n = int(complete.shape[0]) if w is None else float(w.sum())
        patterns, counts = _distinct_rows(complete, _sizes(model), w)
    if patterns.shape[0] == 0:
        return {"g2": float("nan"), "x2": float("nan"), "n_complete": 0, "n_patterns": 0,
                "expected_observed": 0.0}
    counts = counts.astype(float)
    log_p = np.concatenate([logsumexp(model.log_joint({"Y": patterns[a:a + _ROWS]}, params), axis=1)
                            for a in range(0, patterns.shape[0], _ROWS)])
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        expected = n * np.exp(log_p)
        g2 = 2.0 * float(np.sum(counts * (np.log(counts / n) - log_p)))
        x2_seen = float(np.sum((counts - expected) ** 2 / expected))
    p_seen = float(np.exp(logsumexp(log_p))) if np.isfinite(log_p).any() else 0.0
    x2 = x2_seen + max(n * (1.0 - p_seen), 0.0)   # the cells never observed
    return {"g2": g2, "x2": x2, "n_complete": n, "n_patterns": int(patterns.shape[0]),
            "expected_observed": float(expected.sum())}


def table_view(model: MixtureModel, data: Data, params: Params
               ) -> tuple[MixtureModel, Data, Params, np.ndarray | None]:
    """``(family, rows, params, row weights)`` whose pattern table is the model's: the model
    itself, or for a covariate model (one whose ``class_probabilities`` depend on the row)
    its family with the class weights averaged over the complete rows (module doc), also
    when ``data`` is a pattern table carrying :data:`CLASS_MASS_KEY`."""
    rows, w = split_weight(data)
    carried = rows.get(CLASS_MASS_KEY)   # a pattern table's sums of w_i pi_ik
    pi = None if carried is not None else _row_class_probabilities(model, rows, params)
    if pi is None and carried is None:
        return model, rows, params, w
    keep = (_answers(rows) >= 0).all(axis=1)
    if carried is not None:
        mass = np.asarray(carried, dtype=float)[keep].sum(axis=0)
    else:
        mass = pi[keep].sum(axis=0) if w is None else w[keep] @ pi[keep]
    weight = (mass / mass.sum() if mass.sum() > 0
              else np.asarray(params["weight"], dtype=float))
    return model.family, {"Y": _answers(rows)}, model.family_params(params, weight), w


def _row_class_probabilities(model: MixtureModel, rows: Data, params: Params
                             ) -> np.ndarray | None:
    """Each row's class probabilities (n, K) when they depend on the row, else None."""
    fn = getattr(model, "class_probabilities", None)
    return np.asarray(fn(rows, params), dtype=float) if callable(fn) else None


def _statistics(model: MixtureModel, data: Data, params: Params) -> dict[str, Any]:
    """:func:`pattern_statistics` of ``data`` (weighted or not, covariates or not)."""
    fam, rows, p, w = table_view(model, data, params)
    return pattern_statistics(fam, _answers(rows), p, w, _known_patterns(fam, rows, w))


def _sizes(model: MixtureModel) -> list[int]:
    return [int(s) for s in model.sizes]


def _distinct_rows(Y: np.ndarray, sizes: list[int], weights: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(distinct rows, counts) of complete answers; one int64 key per row when the table's
    cells fit in one (much faster than comparing rows), else rows compared.  ``weights``:
    the counts are sums of the rows' weights."""
    if math.prod(sizes) < 2**62:
        place = np.array([math.prod(sizes[j + 1:]) for j in range(len(sizes))], dtype=np.int64)
        _, first, inverse, counts = np.unique(Y.astype(np.int64) @ place, return_index=True,
                                              return_inverse=True, return_counts=True)
        U = Y[first]
    else:
        U, inverse, counts = np.unique(Y, axis=0, return_inverse=True, return_counts=True)
    if weights is not None:
        counts = np.bincount(np.asarray(inverse).ravel(), weights=weights, minlength=U.shape[0])
    return U, counts


def _known_patterns(model: MixtureModel, rows: Data, weights: np.ndarray | None
                    ) -> tuple[np.ndarray, np.ndarray] | None:
    """``(distinct answer rows, counts)`` of unweighted ``rows`` as the model keeps them
    (``row_patterns``, cached on the array: found once by the fit or the posteriors), or
    None (weighted rows, or a model without them).  Their order is the rows' answers'
    (missing first), so the complete ones come in :func:`_distinct_rows`'s order."""
    grouped = getattr(model, "row_patterns", None)
    if weights is not None or not callable(grouped):
        return None
    found = grouped(rows)
    if found is None or "Y" not in found[0]:
        return None
    return np.asarray(found[0]["Y"]), np.asarray(found[1], dtype=float)


def pattern_table_of(model: MixtureModel, data: Data, params: Params) -> dict[str, np.ndarray]:
    """The rows of ``data`` as a pattern table: ``Y`` the distinct answer rows (missing
    answers too; sorted), :data:`WEIGHT_KEY` their counts (sums of the rows' weights) and,
    for a covariate model, :data:`CLASS_MASS_KEY` the sums of ``w_i pi_ik`` over each
    pattern's rows (n_patterns, K).  Tables of parts of the rows add up
    (:func:`merge_pattern_tables`); G2/X2 and the bivariate residuals of the whole table are
    the rows' (module doc).  ``params`` is read only for a covariate model."""
    rows, w = split_weight(data)
    Y = _answers(rows)
    counts = np.ones(Y.shape[0]) if w is None else w
    pi = _row_class_probabilities(model, rows, params)
    mass = None if pi is None else (pi if w is None else pi * w[:, None])
    return _grouped(_sizes(model), Y, counts, mass)


def merge_pattern_tables(model: MixtureModel, tables: Any) -> dict[str, np.ndarray]:
    """One pattern table of the rows of ``tables`` (:func:`pattern_table_of`'s, in order;
    empty dicts skipped): counts and class-probability sums added pattern by pattern.
    ``{}`` when there is none."""
    tables = [tab for tab in tables if tab]
    if not tables:
        return {}
    mass = ([np.asarray(tab[CLASS_MASS_KEY], dtype=float) for tab in tables]
            if CLASS_MASS_KEY in tables[0] else None)
    return _grouped(_sizes(model), np.concatenate([tab["Y"] for tab in tables]),
                    np.concatenate([np.asarray(tab[WEIGHT_KEY], dtype=float) for tab in tables]),
                    None if mass is None else np.concatenate(mass))


def _grouped(sizes: list[int], Y: np.ndarray, counts: np.ndarray, mass: np.ndarray | None
             ) -> dict[str, np.ndarray]:
    """Rows ``Y`` (codes, -1 missing) with ``counts`` (n,) and ``mass`` (n, K) or None summed
    over equal rows (one int64 key per row when the table with a "missing" code per item
    fits in one, else rows compared)."""
    ext = [s + 1 for s in sizes]
    if math.prod(ext) < 2**62:
        place = np.array([math.prod(ext[j + 1:]) for j in range(len(ext))], dtype=np.int64)
        _, first, inverse = np.unique((Y.astype(np.int64) + 1) @ place, return_index=True,
                                      return_inverse=True)
        U = Y[first]
    else:
        U, inverse = np.unique(Y, axis=0, return_inverse=True)
    inverse = np.asarray(inverse).ravel()
    m = U.shape[0]
    out = {"Y": np.ascontiguousarray(U),
           WEIGHT_KEY: np.bincount(inverse, weights=counts, minlength=m).astype(np.float64)}
    if mass is not None:
        out[CLASS_MASS_KEY] = np.stack(
            [np.bincount(inverse, weights=mass[:, k], minlength=m) for k in range(mass.shape[1])],
            axis=1).reshape(m, mass.shape[1])
    return out


def _cell_log_probs(model: MixtureModel, params: Params):
    """Yield log P(cell) for every cell of the full table, in blocks of at most _CELLS.

    log P(c) = logsumexp_k [log w_k + sum_j log p_kj(c_j)]: the last items form a block
    enumerated at once (an outer sum per class), the first ones are looped over.
    """
    sizes = _sizes(model)
    J = len(sizes)
    prob = np.asarray(params["prob"], dtype=float)
    with np.errstate(divide="ignore"):
        lp = np.log(prob)
        lw = np.log(np.asarray(params["weight"], dtype=float))
    K = lw.size
    s = J
    block = 1
    while s > 0 and block * sizes[s - 1] <= _CELLS:
        s -= 1
        block *= sizes[s]
    inner = np.zeros((K, 1))
    for j in range(s, J):
        inner = (inner[:, :, None] + lp[:, j, None, : sizes[j]]).reshape(K, -1)
    for outer in np.ndindex(*sizes[:s]):
        base = lw + sum((lp[:, j, c] for j, c in enumerate(outer)), np.zeros(K))
        yield logsumexp(base[:, None] + inner, axis=0)


def _sparseness(model: MixtureModel, params: Params, n: int, n_cells: int) -> dict[str, Any]:
    """Which rule (if any) makes the table sparse, and the figures it was decided on."""
    mean = n / n_cells
    out: dict[str, Any] = {"mean_expected": _num(mean), "share_expected_below_5": None,
                           "min_expected": None}
    if mean < SPARSE_MEAN:
        return dict(out, sparse=True, sparse_rule="mean")
    below = 0
    smallest = math.inf
    for log_p in _cell_log_probs(model, params):   # n_cells <= n / 5: cheaper than an E-step
        e = n * np.exp(log_p)
        below += int(np.count_nonzero(e < SMALL_EXPECTED))
        smallest = min(smallest, float(e.min()))
    share = below / n_cells
    sparse = share > SMALL_SHARE or smallest < MIN_EXPECTED
    return dict(out, share_expected_below_5=share, min_expected=_num(smallest),
                sparse=bool(sparse), sparse_rule="cells" if sparse else None)


def lca_fit_statistics(model: MixtureModel, data: Data, params: Params, *,
                       n_params: int, bootstrap: int = 0) -> dict[str, Any]:
    """G2 and X2 of a latent class estimate against the saturated multinomial (module doc).

    ``data["Y"]``: (N, J) answers coded 0..C_j-1, -1 missing; ``n_params``: the fit's number
    of free parameters p.  Returns (JSON-able):

    * ``n_rows`` N, ``n_complete`` N' (rows with every answer observed: the statistics'
      rows), ``n_cells`` prod(C_j) (int), ``n_patterns`` (distinct observed patterns),
      ``n_params`` p;
    * ``g2``, ``x2``; ``df`` = prod(C_j) - 1 - p and ``df_polca`` = min(N, prod(C_j) - 1) - p
      (ints); ``p_value_g2``, ``p_value_x2`` (chi-square with ``df``; None when df <= 0,
      the table is sparse or N' = 0);
    * ``sparse`` (bool), ``sparse_rule`` ("mean", "cells" or None), ``mean_expected``
      N'/prod(C_j), ``share_expected_below_5`` and ``min_expected`` (None unless the cells
      were enumerated); ``bootstrap_suggested`` (True when a p-value is missing only
      because the table is sparse);
    * ``notes``: sentences for the report (rows left out, why no p-value, ``--gof-bootstrap``).

    ``bootstrap``: B of the parametric bootstrap the caller runs (``gof_bootstrap``), so a
    sparse table's note says the p-values given come from it instead of offering it.
    Row weights: ``n_rows`` and ``n_complete`` are sums of weights (see the module doc).
    """
    fam, rows, fam_params, w = table_view(model, data, params)
    Y = _answers(rows)
    N = int(Y.shape[0]) if w is None else _count(w.sum())
    p = int(n_params) if fam is model else int(fam.n_free_parameters())
    n_cells = math.prod(_sizes(fam))
    df = n_cells - 1 - p
    df_polca = min(N, n_cells - 1) - p
    st = pattern_statistics(fam, Y, fam_params, w, _known_patterns(fam, rows, w))
    n = _count(st["n_complete"])
    out: dict[str, Any] = {"n_rows": N, "n_complete": n, "n_cells": n_cells,
                           "n_patterns": st["n_patterns"], "n_params": p,
                           "g2": _num(st["g2"]), "x2": _num(st["x2"]), "df": df,
                           "df_polca": df_polca, "p_value_g2": None, "p_value_x2": None,
                           "sparse": None, "sparse_rule": None, "mean_expected": None,
                           "share_expected_below_5": None, "min_expected": None,
                           "bootstrap_suggested": False, "notes": []}
    notes: list[str] = out["notes"]
    if fam is not model:   # covariates: averaged class weights, the table's parameters
        out["n_params_model"] = int(n_params)
        notes.append(t("gof.covariates", p=p, q=int(n_params) - p + fam.n_components - 1))
    if n == 0:
        notes.append(t("gof.no_complete"))
        return out
    if n < N:
        notes.append(t("gof.incomplete_rows", n=n, total=N))
    out.update(_sparseness(fam, fam_params, n, n_cells))
    if df <= 0:
        notes.append(t("gof.df", df=df))
    elif out["sparse"]:
        out["bootstrap_suggested"] = not bootstrap
        then = t("gof.then_used", B=bootstrap) if bootstrap else t("gof.then_offer")
        if out["sparse_rule"] == "mean":
            notes.append(t("gof.sparse_mean", n=n, cells=n_cells, mean=n / n_cells,
                           limit=SPARSE_MEAN, then=then))
        else:
            notes.append(t("gof.sparse_cells", share=out["share_expected_below_5"],
                           small=SMALL_EXPECTED, min=out["min_expected"] or 0.0,
                           limit=SMALL_SHARE, floor=MIN_EXPECTED, then=then))
    else:
        out["p_value_g2"] = _num(chdtrc(df, st["g2"]))   # = scipy.stats.chi2.sf(g2, df)
        out["p_value_x2"] = _num(chdtrc(df, st["x2"]))
    return out


# ------------------------------------------------------ parametric bootstrap
def _fit_config(fit_options: Mapping[str, Any]) -> dict[str, Any]:
    """The search options a refit reads (FIT_OPTION_KEYS), as JSON scalars."""
    out = {}
    for k in FIT_OPTION_KEYS:
        if k in fit_options and fit_options[k] is not None:
            v = fit_options[k]
            out[k] = v if isinstance(v, str) else (float(v) if k == "tol" else int(v))
    return out


def estimate_digest(model: MixtureModel, params: Params) -> str:
    """16 hex digits of the estimate's free vector: what a bootstrap's checkpoint was made
    from (its replicates are kept only for the same estimate)."""
    free = model.to_free({k: np.asarray(v, dtype=float) for k, v in params.items()})
    return hashlib.sha256(np.ascontiguousarray(free).tobytes()).hexdigest()[:16]


def gof_replicate(model: MixtureModel, data: Data, params: Params, opts: Mapping[str, Any],
                  r: int) -> dict[str, Any]:
    """Replicate ``r`` (top level, so workers can run it): G2* and X2* of a refitted simulation.

    Everything random comes from ``stream(seed, "gof", r)``: the data (``model.sample``,
    missing answers kept), then the seed of the refit, which searches with
    ``opts["fit_options"]`` plus the estimate as an extra start.  Never raises: an
    exception becomes ``status="error"`` with its message.
    """
    from ..estimation.em import fit_em
    try:
        rng = stream(opts["seed"], "gof", r)
        data_r = model.sample(params, data, rng)
        fit_seed = int(rng.integers(0, 2**63 - 1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = fit_em(model, data_r, seed=fit_seed, extra_starts=[params],
                         **opts["fit_options"])
        st = _statistics(model, data_r, fit.params)
        if not (math.isfinite(st["g2"]) and math.isfinite(st["x2"])):
            raise ValueError("the replicate's statistics are not finite (no complete row, or "
                             "an observed pattern of probability 0)")
        return {"status": "ok" if fit.converged else "not_converged", "g2": st["g2"],
                "x2": st["x2"], "loglik": float(fit.loglik), "n_iter": int(fit.n_iter),
                "message": "", "warnings": [str(w) for w in fit.warnings]}
    except Exception as exc:  # a replicate's failure is data, not a crash of the bootstrap
        return {"status": "error", "g2": None, "x2": None, "loglik": None, "n_iter": 0,
                "message": f"{type(exc).__name__}: {exc}", "warnings": []}


def _check_saved(saved: Any, config: Mapping[str, Any]) -> None:
    """CheckpointInvalid unless ``saved`` is a goodness-of-fit bootstrap state of these
    options and this estimate whose replicates have a status and, unless they failed,
    finite statistics (replicates named from 1)."""
    require(isinstance(saved, Mapping) and saved.get("kind") == "gof_bootstrap",
            "it is not a goodness-of-fit bootstrap state")
    require(saved.get("config") == dict(config), "it was made with other options or another estimate")
    reps = saved.get("replicates", {})
    require(isinstance(reps, Mapping), "its replicates are not a mapping")
    for key, rec in reps.items():
        require(isinstance(key, str) and key.isascii() and key.isdigit(),
                f"replicate {key!r} is not numbered")
        name = f"replicate {int(key) + 1}"
        require(isinstance(rec, Mapping) and rec.get("status") in ("ok", "not_converged", "error")
                and {"g2", "x2", "message"} <= set(rec), f"{name} lacks fields")
        if rec["status"] != "error":
            for s in ("g2", "x2"):
                v = rec[s]
                require(isinstance(v, (int, float)) and not isinstance(v, bool)
                        and math.isfinite(v), f"{name}'s {s} is not a finite number")


def _bootstrap_p(observed: float, stars: list[float]) -> float | None:
    if not stars or not math.isfinite(observed):
        return None
    return float((1 + sum(s >= observed for s in stars)) / (len(stars) + 1))


def gof_bootstrap(model: MixtureModel, data: Data, params: Params, B: int, seed: int, *,
                  fit_options: Mapping[str, Any], executor: Any = None,
                  checkpoint: Checkpointer | None = None,
                  on_replicate: Callable[[int, str, int, int], None] | None = None
                  ) -> dict[str, Any]:
    """Parametric-bootstrap p-values of G2 and X2 from ``B`` replicates (module doc).

    ``fit_options``: the run's search (``n_starts``, ``n_candidates``, ``candidate_iter``,
    ``tol``, ``max_iter``, ``accelerate``, ``chunk_size``; missing keys take fit_em's
    defaults); each refit adds the estimate as an extra start.  Replicate r (0-based here,
    shown from 1) depends only on (seed, r, options, estimate); ``executor`` runs replicates
    (``map_unordered``; default in process); ``checkpoint`` is resumed from and written
    after every replicate, so neither interruptions nor the number of workers change the
    result.  ``on_replicate(index, status, n_done, B)`` is called as each one finishes.

    Returns (JSON-able) ``n_bootstrap`` B, ``n_used`` (replicates that did not fail),
    ``n_failed``, ``n_not_converged`` (kept), ``g2``, ``x2`` (observed), ``p_value_g2``,
    ``p_value_x2`` (``(1 + #{T* >= T}) / (n_used + 1)``; None when none was used),
    ``g2_star``, ``x2_star`` (per replicate in index order, None where one failed), ``notes``.
    """
    B = int(B)
    if B < 1:
        raise ValueError(f"the goodness-of-fit bootstrap needs at least 1 replicate, got {B}")
    checkpoint = checkpoint if checkpoint is not None else NullCheckpointer()
    params = {k: np.asarray(v, dtype=float) for k, v in params.items()}
    opts = {"seed": int(seed), "fit_options": _fit_config(fit_options)}
    config = dict(opts, model=_jsonable(model.describe()), estimate=estimate_digest(model, params))

    done: dict[str, dict[str, Any]] = {}
    saved = checkpoint.resume_state()
    if saved:
        _check_saved(saved, config)  # CheckpointInvalid: the bootstrap starts over
        done = {str(k): dict(v) for k, v in saved["replicates"].items() if int(k) < B}

    def state() -> dict[str, Any]:
        return {"kind": "gof_bootstrap", "config": config, "replicates": dict(done)}

    missing = [r for r in range(B) if str(r) not in done]
    if missing:   # weighted rows simulated as the rows they stand for
        fn = functools.partial(gof_replicate, model, replicate_rows(data), params, opts)
        with units_finished(executor, fn, missing) as finished:
            for r, rec in finished:
                done[str(r)] = rec
                checkpoint.checkpoint(state())
                if on_replicate is not None:
                    on_replicate(r, rec["status"], len(done), B)
        checkpoint.checkpoint(state(), force=True)
    return _summarise(model, data, params, done, B)


def _summarise(model: MixtureModel, data: Data, params: Params,
               done: Mapping[str, Mapping[str, Any]], B: int) -> dict[str, Any]:
    st = _statistics(model, data, params)
    recs = [done[str(r)] for r in range(B)]
    used = [rec for rec in recs if rec["status"] != "error"]
    failed = [r for r, rec in enumerate(recs) if rec["status"] == "error"]
    n_nc = sum(rec["status"] == "not_converged" for rec in recs)
    notes = []
    if failed:
        notes.append(t("gof.boot_failed", n=len(failed), B=B, r=failed[0] + 1,
                       msg=recs[failed[0]]["message"]))
    if n_nc:
        notes.append(t("gof.boot_not_converged", n=n_nc, B=B))
    if not used:
        notes.append(t("gof.boot_none"))
    return {"n_bootstrap": B, "n_used": len(used), "n_failed": len(failed),
            "n_not_converged": int(n_nc), "g2": _num(st["g2"]), "x2": _num(st["x2"]),
            "p_value_g2": _bootstrap_p(st["g2"], [float(rec["g2"]) for rec in used]),
            "p_value_x2": _bootstrap_p(st["x2"], [float(rec["x2"]) for rec in used]),
            "g2_star": [None if rec["status"] == "error" else float(rec["g2"]) for rec in recs],
            "x2_star": [None if rec["status"] == "error" else float(rec["x2"]) for rec in recs],
            "notes": notes}


def _jsonable(value: Any) -> Any:
    """Tuples as lists, numpy scalars as Python ones (a checkpoint's config is compared
    with the state read back from JSON)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


# ------------------------------------------------------- bivariate residuals
def bivariate_residuals(model: MixtureModel, data: Data, params: Params) -> dict[str, Any]:
    """Latent GOLD's bivariate residual of every item pair (module doc).

    Returns ``items`` (names), ``threshold`` (3.84) and ``pairs``: one dict per pair j < l
    in item order with ``item_1``, ``item_2``, ``n`` (rows observing both), ``df``
    ((C_j - 1)(C_l - 1)), ``x2`` (Pearson X2 of the two-way table) and ``bvr`` (x2 / df;
    None when df or n is 0), ``flagged`` (bvr > threshold); ``n_flagged`` and ``max_bvr``.
    Row weights: the two-way tables and ``n`` count weights.  ``data`` may be a pattern table
    (:func:`pattern_table_of`).
    """
    data, row_w = split_weight(data)
    carried = data.get(CLASS_MASS_KEY)   # a pattern table's sums of w_i pi_ik
    pi = None if carried is not None else _row_class_probabilities(model, data, params)
    covariates = pi is not None or carried is not None   # covariates: (n, K), else None
    fam = model.family if covariates else model
    Y = _answers(data)
    known = _known_patterns(fam, data, row_w) if not covariates else None
    if known is not None:   # the distinct rows, each weighted by its count: the same sums
        Y, row_w = known
    sizes = np.asarray(_sizes(fam))
    off = np.asarray(fam.offsets)
    n_flat = int(sizes.sum())
    J = sizes.size
    w = np.asarray(params["weight"], dtype=float)
    K = w.size
    counts = np.zeros((n_flat, n_flat))
    both = np.zeros((J, J))
    mass = np.zeros((K, J, J)) if covariates else None   # sum_i w_i pi_ik obs_ij obs_il
    for a in range(0, Y.shape[0], _ROWS):
        O, observed = fam.one_hot(Y[a:a + _ROWS])
        obs = observed.astype(float)
        wa = np.ones((obs.shape[0], 1)) if row_w is None else row_w[a:a + _ROWS, None]
        if row_w is None:
            counts += O.T @ O
            both += obs.T @ obs
        else:
            counts += O.T @ (O * wa)
            both += obs.T @ (obs * wa)
        if mass is not None:
            piw = (np.asarray(carried[a:a + _ROWS], dtype=float) if carried is not None
                   else pi[a:a + _ROWS] * wa)
            mass += np.einsum("ik,ij,il->kjl", piw, obs, obs)
    prob = np.asarray(params["prob"], dtype=float)
    pf = prob[:, fam.flat_item, fam.flat_cat]                      # (K, n_flat)
    joint = (pf * w[:, None]).T @ pf                                # sum_k w_k p_k p_k'
    items = [str(x) for x in fam.items]
    pairs = []
    for j in range(J):
        for l in range(j + 1, J):
            rj = slice(off[j], off[j] + sizes[j])
            rl = slice(off[l], off[l] + sizes[l])
            n = float(both[j, l])
            df = int((sizes[j] - 1) * (sizes[l] - 1))
            O = counts[rj, rl]
            if mass is None:
                E = n * joint[rj, rl]
            else:   # each row's own class probabilities, over the rows observing both
                E = np.einsum("k,ka,kb->ab", mass[:, j, l], pf[:, rj], pf[:, rl])
            with np.errstate(divide="ignore", invalid="ignore"):
                terms = np.where(O == E, 0.0, (O - E) ** 2 / E)
            x2 = float(terms.sum())
            bvr = x2 / df if df > 0 and n > 0 else float("nan")
            pairs.append({"item_1": items[j], "item_2": items[l],
                          "n": int(round(n)) if row_w is None else _count(n), "df": df,
                          "x2": _num(x2), "bvr": _num(bvr),
                          "flagged": bool(bvr > BVR_THRESHOLD)})   # NaN: not flagged
    finite = [p["bvr"] for p in pairs if p["bvr"] is not None]
    return {"items": items, "threshold": BVR_THRESHOLD, "pairs": pairs,
            "n_flagged": sum(p["flagged"] for p in pairs),
            "max_bvr": max(finite) if finite else None}


# --------------------------------------------------- response probabilities
def response_probability_table(model: MixtureModel, params: Params, *,
                               se: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The class-by-item response probabilities: classes as columns, item/category rows.

    Returns ``classes`` ([1..K]), ``weights`` (K), ``rows``: one dict per item and category
    in the model's category order with ``item``, ``category`` (the code as written),
    ``probs`` (K) and, when ``se`` maps reported names (``prob[k,item,code]``, e.g.
    ``dict(zip(result.names, result.se))``) to standard errors, ``se`` (K; None where
    unknown or NaN).
    """
    prob = np.asarray(params["prob"], dtype=float)
    K = prob.shape[0]
    rows = []
    for j, item in enumerate(model.items):
        for c, code in enumerate(model.categories[j]):
            row: dict[str, Any] = {"item": str(item), "category": str(code),
                                   "probs": [_num(prob[k, j, c]) for k in range(K)]}
            if se is not None:
                row["se"] = [_num(se.get(f"prob[{k + 1},{item},{code}]", float("nan")))
                             for k in range(K)]
            rows.append(row)
    return {"classes": list(range(1, K + 1)),
            "weights": [_num(v) for v in np.asarray(params["weight"], dtype=float)],
            "rows": rows}


# ------------------------------------------------------- GMM derived values
def _columns(model: MixtureModel, D: int) -> list[str]:
    cols = (getattr(model, "meta", None) or {}).get("columns")
    if cols is not None and len(cols) == D:
        return [str(c) for c in cols]
    return [str(j + 1) for j in range(D)]


def _variance_layout(model: MixtureModel) -> tuple[str, int, int]:
    """(covariance kind, D, start of the covariance block in the free vector)."""
    kind = model.covariance
    name = "var" if kind == "spherical" else "cov"
    return kind, model.n_features, model.parameterisation().slice(name).start


def gmm_derived_values(model: MixtureModel, params: Params) -> tuple[list[dict[str, Any]], np.ndarray]:
    """(entries, values): each class's standard deviations and correlations.

    Entries in order, class by class: ``sd[k,col]`` per column (``sd[k]`` for spherical
    covariances), then for full covariances ``cor[k,a,b]`` for a < b (column names from
    ``model.meta["columns"]``, else 1-based).  Each entry: ``name``, ``class`` (from 1),
    ``kind`` ("sd" or "cor"), ``columns`` (names).
    """
    kind, D, _ = _variance_layout(model)
    cols = _columns(model, D)
    K = model.n_components
    entries: list[dict[str, Any]] = []
    values: list[float] = []
    for k in range(K):
        if kind == "spherical":
            entries.append({"name": f"sd[{k + 1}]", "class": k + 1, "kind": "sd", "columns": []})
            values.append(math.sqrt(float(np.asarray(params["var"], dtype=float)[k])))
            continue
        S = np.asarray(params["cov"], dtype=float)[k]
        var = np.diag(S) if kind == "full" else S
        for a in range(D):
            entries.append({"name": f"sd[{k + 1},{cols[a]}]", "class": k + 1, "kind": "sd",
                            "columns": [cols[a]]})
            values.append(math.sqrt(float(var[a])))
        if kind == "full":
            for a in range(D):
                for b in range(a + 1, D):
                    entries.append({"name": f"cor[{k + 1},{cols[a]},{cols[b]}]", "class": k + 1,
                                    "kind": "cor", "columns": [cols[a], cols[b]]})
                    values.append(float(S[a, b] / math.sqrt(S[a, a] * S[b, b])))
    return entries, np.asarray(values, dtype=float)


def gmm_derived_jacobian(model: MixtureModel, params: Params) -> np.ndarray:
    """Exact d(derived value) / d(free parameters), (R, P), in :func:`gmm_derived_values` order.

    d sd_a / d S_aa = 1 / (2 sd_a); for r = S_ab / (sd_a sd_b): d r / d S_ab = 1 / (sd_a sd_b),
    d r / d S_aa = -r / (2 S_aa), d r / d S_bb = -r / (2 S_bb).  Free covariance entries are
    the upper triangle (a <= b) of each class, row-major; a diagonal covariance's free
    entries are its variances; a spherical one's, its variance.
    """
    kind, D, start = _variance_layout(model)
    K = model.n_components
    P = model.n_free_parameters()
    rows: list[np.ndarray] = []
    if kind == "full":
        a_idx, b_idx = np.triu_indices(D)
        pos = {(int(a), int(b)): i for i, (a, b) in enumerate(zip(a_idx, b_idx))}
        m = len(pos)
    for k in range(K):
        if kind == "spherical":
            v = float(np.asarray(params["var"], dtype=float)[k])
            row = np.zeros(P)
            row[start + k] = 0.5 / math.sqrt(v)
            rows.append(row)
            continue
        S = np.asarray(params["cov"], dtype=float)[k]
        if kind == "diag":
            for a in range(D):
                row = np.zeros(P)
                row[start + k * D + a] = 0.5 / math.sqrt(float(S[a]))
                rows.append(row)
            continue
        base = start + k * m
        sd = np.sqrt(np.diag(S))
        for a in range(D):
            row = np.zeros(P)
            row[base + pos[(a, a)]] = 0.5 / sd[a]
            rows.append(row)
        for a in range(D):
            for b in range(a + 1, D):
                r = S[a, b] / (sd[a] * sd[b])
                row = np.zeros(P)
                row[base + pos[(a, b)]] = 1.0 / (sd[a] * sd[b])
                row[base + pos[(a, a)]] = -0.5 * r / S[a, a]
                row[base + pos[(b, b)]] = -0.5 * r / S[b, b]
                rows.append(row)
    return np.array(rows).reshape(len(rows), P)


def gmm_derived(model: MixtureModel, params: Params, cov_free: np.ndarray, *,
                ci_level: float = 0.95) -> dict[str, Any]:
    """Per-class standard deviations and correlations with delta-method standard errors.

    ``cov_free``: (P, P) covariance of the free parameters (``SEResult.cov_free``; NaN rows
    for parameters without one: their derived values get no standard error).  Returns
    (JSON-able) ``ci_level``, ``interval`` (how intervals are made) and ``rows``: per
    derived value ``name`` (``sd[k,col]``, ``cor[k,a,b]``), ``class``, ``kind``,
    ``columns``, ``estimate``, ``se``, ``ci_lower``, ``ci_upper`` (None where unknown).
    """
    entries, values = gmm_derived_values(model, params)
    Jac = gmm_derived_jacobian(model, params)
    C = np.asarray(cov_free, dtype=float)
    bad = ~np.isfinite(np.diag(C)) if C.size else np.zeros(0, dtype=bool)
    C0 = np.where(np.isfinite(C), C, 0.0)
    se = np.sqrt(np.clip(np.einsum("rp,pq,rq->r", Jac, C0, Jac), 0.0, None))
    se[np.any((Jac != 0) & bad[None, :], axis=1)] = np.nan
    z = float(ndtri(0.5 + float(ci_level) / 2.0))
    rows = []
    for e, v, s in zip(entries, values, se):
        lo = hi = float("nan")
        with np.errstate(divide="ignore", invalid="ignore"):
            if e["kind"] == "sd" and v > 0:
                half = z * s / v                                  # log scale
                lo, hi = v * math.exp(-half), v * math.exp(half)
            elif e["kind"] == "cor" and abs(v) < 1:
                half = z * s / (1.0 - v * v)                      # Fisher's z scale
                lo, hi = math.tanh(math.atanh(v) - half), math.tanh(math.atanh(v) + half)
        rows.append(dict(e, estimate=_num(v), se=_num(s), ci_lower=_num(lo), ci_upper=_num(hi)))
    return {"ci_level": float(ci_level),
            "interval": "Wald on the log scale (sd) and Fisher's z scale (cor), mapped back",
            "rows": rows}
