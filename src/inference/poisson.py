"""Poisson bootstrap weights, keyed by global row numbers (not by how rows are split).

Replicate ``r`` of the Poisson bootstrap (``--bootstrap poisson``) gives row i a random
weight m_i and refits the data with them; rows whose weight is 0 drop out of that replicate.
With N rows, independent Poisson(1) counts are the large-N limit of the multinomial counts
of the ordinary bootstrap (Hanley & MacGibbon 2006; Chamandy et al. 2012), and unlike them
they need no pass over the other rows: each row's count is drawn on its own, so a
partitioned data set gets its weights partition by partition, and the estimates' spread
is the ordinary bootstrap's up to O(1/N) (the replicate's total weight varies by
sqrt(N), which only rescales the weighted log-likelihood).

**Fixed blocks of global row numbers.** Row g (0-based, in input order) belongs to block
b = g // 65536; block b's uniforms are the first numbers of ``stream(seed, "poisson", r, b)``
(``Generator.random``), row g taking number g - 65536 b, and its count is the Poisson inverse
CDF at that uniform.  So the weights of a row depend on (seed, r, g) and its own weight
only: whatever the files, partitions or chunks, every split of the rows gives the same
weights (:func:`poisson_weights` of any run of rows, :func:`poisson_weights_at` of any rows).

**With row weights w_i.** Sampling weights: m_i = w_i * Poisson(1) (the row is one
independent unit, scaled: variance w_i^2, as the sandwich's w_i^2). Frequency weights:
m_i = Poisson(w_i), the sum of w_i independent Poisson(1) counts, which is exactly how the
Poisson bootstrap treats the w_i identical rows the row stands for (variance w_i, as the
sandwich's w_i; w_i * Poisson(1) would count each row's w_i copies as one unit and inflate
the variance w_i-fold).  Non-integer frequency weights use Poisson(w_i) too (mean and
variance w_i).  Both are inverse CDFs of the same uniform, so a row of weight 1 gets the
same count either way.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special

from ..utils.rng import stream

__all__ = ["poisson_weights", "poisson_weights_at", "BLOCK_ROWS", "POISSON_PURPOSE"]

#: rows per block of uniforms: block b holds the global rows [b * BLOCK_ROWS, (b + 1) * BLOCK_ROWS)
BLOCK_ROWS = 65536
#: the purpose of the blocks' random streams: ``stream(seed, POISSON_PURPOSE, r, b)``
POISSON_PURPOSE = "poisson"
#: P(Poisson(1) <= k) for k = 0, 1, ...: the inverse CDF of Poisson(1) by binary search
_CDF1 = special.pdtr(np.arange(40.0), 1.0)


def _uniforms(seed: int, r: int, rows: np.ndarray) -> np.ndarray:
    """The uniform of every global row number in ``rows`` (int64, any order; increasing
    rows, the usual case, need no sort)."""
    out = np.empty(rows.size)
    if rows.size == 0:
        return out
    blocks = rows // BLOCK_ROWS
    if rows.size == 1 or np.all(rows[1:] >= rows[:-1]):
        order = None
        sorted_blocks = blocks
    else:
        order = np.argsort(blocks, kind="stable")
        sorted_blocks = blocks[order]
    starts = np.flatnonzero(np.r_[True, sorted_blocks[1:] != sorted_blocks[:-1]])
    ends = np.r_[starts[1:], rows.size]
    for a, e in zip(starts, ends):
        b = int(sorted_blocks[a])
        idx = slice(a, e) if order is None else order[a:e]
        offsets = rows[idx] - b * BLOCK_ROWS
        u = stream(seed, POISSON_PURPOSE, r, b).random(int(offsets.max()) + 1)
        out[idx] = u[offsets]
    return out


def _count_below(table: np.ndarray, u: np.ndarray) -> np.ndarray:
    """How many entries of the increasing ``table`` are < u, for each u (as float): the
    smallest k with table[k] >= u.  Short tables by one comparison per entry below max(u)
    (several times faster than a binary search per value), long ones by binary search."""
    if table.size > 64 or u.size < 64:
        return np.searchsorted(table, u, side="left").astype(float)
    k = np.zeros(u.shape, dtype=np.int32)
    for c in table[:int(np.searchsorted(table, u.max(), side="left"))]:
        k += u > c
    return k.astype(float)


#: at most this many distinct means: one CDF table each (else the vectorised inversion)
_MAX_TABLES = 4096


def _cdf_table(mean: float) -> np.ndarray:
    """P(Poisson(mean) <= k) for k = 0, 1, ... until it is 1.0 in floating point."""
    size = int(mean + 12.0 * np.sqrt(mean) + 48.0)
    while True:
        table = special.pdtr(np.arange(float(size)), mean)
        if table[-1] >= 1.0:
            return table
        size *= 2


def _poisson_quantile(u: np.ndarray, mean: np.ndarray | None) -> np.ndarray:
    """The smallest k >= 0 with P(Poisson(mean) <= k) >= u (mean None: 1), as float.

    P is ``scipy.special.pdtr`` throughout: by a table per distinct mean (binary search)
    when there are few, else by scipy.stats.poisson.ppf's inversion, corrected until the
    rule holds; so both give the same k.
    """
    if mean is None:
        return _count_below(_CDF1, u)
    mean = np.broadcast_to(np.asarray(mean, dtype=float), u.shape)
    codes, values = pd.factorize(mean)   # hashed: O(n), distinct means in order of appearance
    if values.size <= _MAX_TABLES:
        if values.size == 1:
            lam = float(values[0])
            return _count_below(_CDF1 if lam == 1.0 else _cdf_table(lam), u)
        out = np.empty(u.shape)
        order = np.argsort(codes.astype(np.int16), kind="stable")   # a radix sort
        bounds = np.r_[0, np.cumsum(np.bincount(codes, minlength=values.size))]
        for j, lam in enumerate(values):
            idx = order[bounds[j]:bounds[j + 1]]
            table = _CDF1 if lam == 1.0 else _cdf_table(float(lam))
            out[idx] = _count_below(table, u[idx])
        return out
    # scipy.stats.poisson.ppf's rule: a first guess from the inverse of the CDF in the
    # mean, then one step down where the CDF there already reaches u
    with np.errstate(invalid="ignore"):
        k = np.ceil(special.pdtrik(u, mean))
    k = np.where(np.isfinite(k), np.maximum(k, 0.0), 0.0)
    below = np.maximum(k - 1.0, 0.0)
    k = np.where((k > 0) & (special.pdtr(below, mean) >= u), below, k)
    # the guess can be off by more than one where the CDF is flat in floating point
    for _ in range(64):
        low = (k > 0) & (special.pdtr(k - 1.0, mean) >= u)
        high = special.pdtr(k, mean) < u
        if not (low.any() or high.any()):
            break
        k = np.where(low, k - 1.0, np.where(high, k + 1.0, k))
    return k


def poisson_weights_at(seed: int, r: int, rows: np.ndarray, base: np.ndarray | None = None,
                       *, weight_type: str = "frequency") -> np.ndarray:
    """Replicate ``r``'s weights (float64) of the global row numbers ``rows`` (module doc).

    ``base``: the rows' own weights (None: all 1): frequency weights give Poisson(w_i),
    sampling weights w_i * Poisson(1).
    """
    rows = np.asarray(rows, dtype=np.int64).ravel()
    if rows.size and rows.min() < 0:
        raise ValueError("row numbers must be >= 0")
    if weight_type not in ("frequency", "sampling"):
        raise ValueError(f"weight_type must be frequency or sampling, got {weight_type!r}")
    u = _uniforms(int(seed), int(r), rows)
    if base is None:
        return _poisson_quantile(u, None)
    base = np.asarray(base, dtype=np.float64).ravel()
    if base.shape != rows.shape:
        raise ValueError(f"base has {base.size} weights for {rows.size} rows")
    if weight_type == "sampling":
        return base * _poisson_quantile(u, None)
    return _poisson_quantile(u, base)


def poisson_weights(seed: int, r: int, first_row: int, n: int, base: np.ndarray | None = None,
                    *, weight_type: str = "frequency") -> np.ndarray:
    """Replicate ``r``'s weights (float64, shape (n,)) of the global rows ``first_row`` ..
    ``first_row + n - 1``; the same numbers however those rows are split (module doc)."""
    return poisson_weights_at(seed, r, np.arange(int(first_row), int(first_row) + int(n),
                                                 dtype=np.int64), base, weight_type=weight_type)
