"""How well a fitted mixture classifies its rows (fit.json's ``classification``, the report).

With ``tau_ik`` the posterior probability of class ``k`` for row ``i`` (the model's
responsibilities, ``MixtureModel.e_step``), ``c(i) = argmax_k tau_ik`` the modal class (the
first class on a tie), ``pi_k`` the estimated class weights and ``n`` the rows:

* class counts and proportions three ways (Mplus's "estimated model", "estimated posterior
  probabilities", "most likely class membership"): ``weights`` ``n pi_k``, ``posteriors``
  ``sum_i tau_ik`` and ``modal`` ``#{i : c(i) = k}`` (proportions: divided by ``n``);
* ``average_posterior``: the K x K matrix of average posterior probabilities by modal class,
  row ``k`` the mean of ``tau_i.`` over the rows with ``c(i) = k`` (a class that is no row's
  modal class has a row of NaN, and a note);
* ``odds_correct``: Nagin's odds of correct classification,
  ``OCC_k = (AvePP_k / (1 - AvePP_k)) / (pi_k / (1 - pi_k))`` with ``AvePP_k`` the diagonal of
  ``average_posterior`` (inf when ``AvePP_k`` is 1; None for K = 1); Nagin suggests OCC > 5;
* ``entropy`` (relative: ``1 - EN / (n ln K)``, None for K = 1) and ``smallest_class`` (the
  smallest estimated weight) with the definitions of :func:`src.selection.criteria.criteria`,
  so they are the numbers of ``enumeration.csv`` (to rounding);
* ``warnings`` (in the run's language) when ``smallest_class`` is under
  :data:`SMALL_CLASS` (0.05) or a class's ``AvePP_k`` is below :data:`LOW_AVEPP` (0.7).

The posteriors are computed once per fit (:func:`posteriors_of`, a :class:`Posteriors`) and
handed to every consumer (this summary, ``posteriors.csv``, the figures) through their
``resp=`` argument; without it each computes them itself, ``chunk_size`` rows at a time.  A
model with ``row_patterns(data)`` (latent class models: ``(patterns, counts, inverse)`` of the
distinct answer patterns, or None) has them computed on its distinct patterns only, and the
summary sums over patterns weighted by their counts: the same numbers as row by row, up to
rounding (sums in another order).

Row weights (:data:`~src.models.base.WEIGHT_KEY` in the data): ``n`` is the sum of the
weights and every sum over rows is weighted (counts by posteriors and by modal class,
``average_posterior``, the entropy), so integer weights give the replicated rows' numbers;
the posteriors themselves stay one per row (``posteriors.csv``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np

from ..estimation.results import as_count
from ..models.base import Data, MixtureModel, Params, split_weight
from ..selection.criteria import smallest_class
from ..utils.messages import register, t

__all__ = ["classification_summary", "ResponsibilitySums", "summarise_responsibilities", "responsibility_chunks",
           "Posteriors", "posteriors_of", "as_posteriors", "relative_entropy", "SMALL_CLASS", "LOW_AVEPP"]

#: a warning when the smallest estimated class weight is under this
SMALL_CLASS = 0.05
#: a warning when a class's average posterior probability (by modal class) is below this
LOW_AVEPP = 0.7

register({
    "classification.small_class": {
        "en": "The smallest class (class {k}) has an estimated weight of {weight:.4f}, under "
              "{limit}; a class this small may be spurious or poorly estimated.",
        "zh": "最小的类别（第 {k} 类）的估计权重为 {weight:.4f}，低于 {limit}；这么小的类别可能是虚假的或估计不准。"},
    "classification.low_avepp": {
        "en": "Class {k} has an average posterior probability of {value:.4f} among the rows "
              "assigned to it, below {limit}; those rows are not clearly told apart from the "
              "other classes.",
        "zh": "第 {k} 类在归入该类的行中的平均后验概率为 {value:.4f}，低于 {limit}；这些行与其他类别区分得不清楚。"},
    "classification.empty_modal": {
        "en": "Class {k} is no row's most likely class, so its row of average posterior "
              "probabilities is empty (NaN).",
        "zh": "没有任何一行最可能属于第 {k} 类，因此该类的平均后验概率行为空（NaN）。"},
})


def _n_rows(data: Data) -> int:
    return int(next(iter(data.values())).shape[0])


def responsibility_chunks(model: MixtureModel, data: Data, params: Params,
                          chunk_size: int = 4096) -> Iterator[tuple[int, np.ndarray]]:
    """``(first row, responsibilities (m, K))`` of ``chunk_size`` rows at a time, in row
    order, from ``model.e_step``."""
    data = split_weight(data)[0]
    n, size = _n_rows(data), max(int(chunk_size), 1)
    for a in range(0, n, size):
        resp, _ = model.e_step({k: v[a:a + size] for k, v in data.items()}, params)
        yield a, np.asarray(resp, dtype=float)


@dataclass(frozen=True)
class Posteriors:
    """The posterior class probabilities of every row, computed once (:func:`posteriors_of`).

    ``tau`` (m, K): one row per data row (``inverse`` None), or per distinct row pattern,
    with ``inverse`` (n,) naming each data row's pattern (row ``i`` has ``tau[inverse[i]]``)
    and ``counts`` (m,) how many rows have each pattern (with row weights: the sum of their
    weights; without patterns, ``counts`` may hold the row weights).  :meth:`chunks` and
    :meth:`rows` give them row by row in input order; :meth:`weighted` the compact form for
    sums, :attr:`total` the n of the summaries."""

    tau: np.ndarray
    inverse: np.ndarray | None = None
    counts: np.ndarray | None = None

    @property
    def n_rows(self) -> int:
        return int(self.tau.shape[0] if self.inverse is None else self.inverse.shape[0])

    @property
    def total(self) -> float:
        """The number of rows, or the sum of their weights."""
        return float(self.n_rows) if self.counts is None else float(self.counts.sum())

    @property
    def n_components(self) -> int:
        return int(self.tau.shape[1])

    def chunks(self, chunk_size: int = 4096) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, posteriors (m, K))`` of ``chunk_size`` rows at a time, in row order
        (patterns expanded one chunk at a time, so memory is bounded by the chunk)."""
        size = max(int(chunk_size), 1)
        for a in range(0, self.n_rows, size):
            if self.inverse is None:
                yield a, self.tau[a:a + size]
            else:
                yield a, self.tau[self.inverse[a:a + size]]

    def rows(self) -> np.ndarray:
        """Every row's posteriors, (n, K), in row order."""
        return self.tau if self.inverse is None else self.tau[self.inverse]

    def weighted(self) -> tuple[np.ndarray, np.ndarray | None]:
        """``(tau, counts)``: sums over rows are ``counts @ f(tau)`` (counts None: one each)."""
        return self.tau, self.counts


def as_posteriors(resp: "Posteriors | np.ndarray") -> Posteriors:
    """``resp`` as :class:`Posteriors` (an (n, K) array: one row per data row)."""
    if isinstance(resp, Posteriors):
        return resp
    tau = np.asarray(resp, dtype=float)
    return Posteriors(tau.reshape(tau.shape[0], -1))


def posteriors_of(model: MixtureModel, data: Data, params: Params,
                  chunk_size: int = 4096) -> Posteriors:
    """The posteriors of every row of ``data`` at ``params`` (``model.e_step``), once.

    A model with ``row_patterns(data)`` returning ``(patterns, counts, inverse)`` (latent
    class models: the distinct answer patterns) has them computed on the patterns only;
    otherwise (or when it returns None) row by row, ``chunk_size`` rows at a time.  Row
    weights become the patterns' counts (sums of weights) or the rows' counts."""
    data, w = split_weight(data)
    grouped = getattr(model, "row_patterns", None)
    found = None
    if callable(grouped):
        found = grouped(data) if w is None else grouped(data, weights=w)
    if found is not None:
        patterns, counts, inverse = found
        tau = np.concatenate([r for _, r in responsibility_chunks(model, patterns, params,
                                                                  chunk_size)])
        return Posteriors(tau, np.asarray(inverse, dtype=np.int64).reshape(-1),
                          np.asarray(counts, dtype=float).reshape(-1))
    K = int(model.n_components)
    parts = [r for _, r in responsibility_chunks(model, data, params, chunk_size)]
    return Posteriors(np.concatenate(parts) if parts else np.zeros((0, K)), None, w)


def relative_entropy(resp: "Posteriors | np.ndarray") -> float | None:
    """``1 - EN / (n ln K)`` with ``EN = -sum_i sum_k tau_ik ln tau_ik`` (``0 ln 0 = 0``):
    :func:`src.selection.criteria.criteria`'s ``entropy`` (enumeration.csv) from given
    posteriors; None for K = 1."""
    post = as_posteriors(resp)
    K, n = post.n_components, post.total
    if K < 2:
        return None
    tau, counts = post.weighted()
    with np.errstate(divide="ignore", invalid="ignore"):
        per = (tau * np.where(tau > 0, np.log(np.where(tau > 0, tau, 1.0)), 0.0)).sum(axis=1)
    en = -float(per.sum() if counts is None else counts @ per)
    return 1.0 - en / (n * math.log(K))


def _floats(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values]


class ResponsibilitySums:
    """The additive sums the classification summary is made of, over chunks of rows (each
    optionally weighted: a row, or a distinct pattern, standing for ``counts`` rows): so
    rows that never sit in memory together (partitioned input) are summarised chunk by chunk."""

    def __init__(self, n_components: int) -> None:
        K = int(n_components)
        self.n = 0.0
        self.post = np.zeros(K)
        self.modal = np.zeros(K)
        self.by_modal = np.zeros((K, K))
        self.entropy = 0.0   # -sum_i c_i sum_k tau_ik ln tau_ik

    def add(self, tau: np.ndarray, counts: np.ndarray | None = None) -> None:
        K = self.post.size
        tau = np.asarray(tau, dtype=float).reshape(-1, K)
        c = tau.argmax(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            per = (tau * np.where(tau > 0, np.log(np.where(tau > 0, tau, 1.0)), 0.0)).sum(axis=1)
        if counts is None:
            self.n += tau.shape[0]
            self.post += tau.sum(axis=0)
            self.modal += np.bincount(c, minlength=K)
            self._by_modal(c, tau)
            self.entropy -= float(per.sum())
        else:   # distinct patterns (or weighted rows), each standing for counts[p] rows
            counts = np.asarray(counts, dtype=float)
            self.n += float(counts.sum())
            self.post += counts @ tau
            self.modal += np.bincount(c, weights=counts, minlength=K)
            self._by_modal(c, tau * counts[:, None])
            self.entropy -= float(counts @ per)

    def _by_modal(self, c: np.ndarray, tau: np.ndarray) -> None:
        """Add each row of ``tau`` to ``by_modal``'s row of its modal class ``c``: one
        ``bincount`` per column (``np.add.at`` took 8 ms for 1e5 rows)."""
        K = self.post.size
        for j in range(K):
            self.by_modal[:, j] += np.bincount(c, weights=tau[:, j], minlength=K)

    def relative_entropy(self) -> float | None:
        """``1 - EN / (n ln K)`` (None for K = 1): :func:`relative_entropy` of the rows added."""
        K = self.post.size
        return None if K < 2 else 1.0 - self.entropy / (self.n * math.log(K))


def summarise_responsibilities(resp: "Posteriors | np.ndarray | Iterable[np.ndarray] | ResponsibilitySums",
                               weights: np.ndarray) -> dict[str, Any]:
    """The counts three ways, ``average_posterior``, ``odds_correct`` and their notes and
    AvePP warnings from responsibilities (an (n, K) array, a :class:`Posteriors`, an
    iterable of (m, K) chunks in row order, or their :class:`ResponsibilitySums`) and the
    estimated class weights (K,).  See the module docstring."""
    weights = np.asarray(weights, dtype=float).reshape(-1)
    K = weights.size
    if isinstance(resp, ResponsibilitySums):
        sums = resp
    else:
        sums = ResponsibilitySums(K)
        if isinstance(resp, Posteriors):
            sums.add(*resp.weighted())
        elif isinstance(resp, np.ndarray):
            sums.add(resp)
        else:
            for chunk in resp:
                sums.add(chunk)
    n, post, modal, by_modal = sums.n, sums.post, sums.modal, sums.by_modal
    with np.errstate(invalid="ignore", divide="ignore"):
        avepp = by_modal / modal[:, None]
        diag = np.diag(avepp).copy()
        occ = (diag / (1.0 - diag)) / (weights / (1.0 - weights))
    notes = [t("classification.empty_modal", k=k + 1) for k in range(K) if modal[k] == 0]
    warnings = [t("classification.low_avepp", k=k + 1, value=diag[k], limit=LOW_AVEPP)
                for k in range(K) if modal[k] > 0 and diag[k] < LOW_AVEPP]
    return {
        "n_obs": as_count(n), "n_components": int(K),
        "counts": {"weights": _floats(weights * n), "posteriors": _floats(post),
                   "modal": [as_count(v) for v in modal]},
        "proportions": {"weights": _floats(weights), "posteriors": _floats(post / n),
                        "modal": _floats(modal / n)},
        "average_posterior": [_floats(row) for row in avepp],
        "odds_correct": None if K < 2 else _floats(occ),
        "notes": notes, "warnings": warnings,
    }


def classification_summary(model: MixtureModel, data: Data, params: Params, *,
                           chunk_size: int = 4096,
                           resp: "Posteriors | np.ndarray | None" = None) -> dict[str, Any]:
    """Classification quality of ``params`` on ``data`` (JSON-able; NaN/inf as floats).

    ``resp``: the posteriors of ``data``'s rows at ``params`` when already computed (a
    :class:`Posteriors` from :func:`posteriors_of`, or an (n, K) array); None: computed here.

    Keys: ``n_obs``, ``n_components``, ``counts`` and ``proportions`` (each
    ``{"weights", "posteriors", "modal"}``: lists of K; classes in order 1..K),
    ``average_posterior`` (K lists of K: row = modal class, column = class),
    ``odds_correct`` (K floats, None for K = 1), ``entropy`` (None for K = 1),
    ``smallest_class``, ``thresholds`` (``{"smallest_class": 0.05, "average_posterior":
    0.7}``), ``warnings`` and ``notes`` (sentences in the run's language).
    """
    weights = np.asarray(params["weight"], dtype=float)
    if isinstance(resp, ResponsibilitySums):
        post: Any = resp
    else:
        post = (posteriors_of(model, data, params, chunk_size) if resp is None
                else as_posteriors(resp))
    out = summarise_responsibilities(post, weights)
    # entropy and smallest class with enumeration.csv's definitions (src.selection.criteria)
    out["entropy"] = (post.relative_entropy() if isinstance(post, ResponsibilitySums)
                      else relative_entropy(post))
    out["smallest_class"] = smallest_class(params)
    out["thresholds"] = {"smallest_class": SMALL_CLASS, "average_posterior": LOW_AVEPP}
    if out["smallest_class"] < SMALL_CLASS:
        k = int(np.argmin(weights))
        out["warnings"].insert(0, t("classification.small_class", k=k + 1,
                                    weight=out["smallest_class"], limit=SMALL_CLASS))
    return out
