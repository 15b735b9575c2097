"""Latent class analysis (``--model lca``): categorical indicators, local independence.

``log p(y_i, z_i = k) = log w_k + sum_j [y_ij observed] log prob[k, j, y_ij]``.

* Items may have any number of categories; each column's distinct codes are read as text
  (``1`` stays ``1``, ``x`` stays ``x``).  Category order within an item: codes that read
  as numbers first, in numeric order, then the other codes in lexicographic order.
* A missing answer (empty cell / NaN, stored as ``-1``) contributes nothing to its row's
  likelihood; the M-step divides each item's counts by that item's *observed*
  responsibility mass, so the chunk statistics carry per-item masses.
* Zero probabilities: exact maximum likelihood, no floor.  ``log 0 = -inf`` is handled
  explicitly (a class that gives an observed answer probability 0 gets log-density
  ``-inf`` for that row, never NaN).  Estimates of exactly 0 or 1 are boundary estimates;
  their standard errors are reported as NaN by the inference layer.
* Canonical order: decreasing weight (the base-class default).
* Speed (internal): the EM driver evaluates the E-step and the sufficient statistics on the
  *distinct answer patterns* weighted by their counts (:meth:`LatentClassModel.compressed_rows`,
  as Latent GOLD and Mplus do): N = 1e4 rows of 10 binary items hold at most 1024 patterns,
  and the likelihood is the same sum (agreeing to rounding, ~1e-13 relative).  Every public
  per-row method (``log_joint``, ``e_step``, ``suff_stats``, scores, ``sample``) stays per row.
  With row weights (an aggregated table of answer patterns and their frequencies) a
  pattern's count is the sum of its rows' weights: integer weights give exactly the counts,
  so the same numbers, as the rows replicated.
* Free parameterisation: K-1 weights, then class by class the first C_j - 1
  probabilities of each item (the last category is 1 - the sum).
"""

from __future__ import annotations

import warnings
import weakref
from typing import Any, Mapping

import numpy as np

from src.utils.errors import DataError
from src.utils.messages import register, t

from .base import Data, MixtureModel, ModelWarning, Params, ParamSpec
from .base import responsibilities as _responsibilities

__all__ = ["LatentClassModel", "order_codes"]

register({
    "lca.no_items": {
        "en": "The latent class model needs at least one item column; select some columns.",
        "zh": "潜在类别模型至少需要一个题目列；请选择列。"},
    "lca.empty_item": {
        "en": "Column {column!r} has no answers at all; remove it from the selected columns.",
        "zh": "列 {column!r} 没有任何回答；请将其从所选列中移除。"},
    "lca.all_missing_rows": {
        "en": "{count} rows have every answer missing (the first is row {row}, 0-based as pandas "
              "counts); remove them, since such a row carries no information about the classes.",
        "zh": "有 {count} 行所有回答都缺失（第一行的位置是 {row}，从 0 开始计数，与 pandas 一致）；"
              "请删除这些行，它们不含任何关于类别的信息。"},
    "lca.all_missing_rows_in": {
        "en": "{count} rows of {source} have every answer missing (the first is row {row}, the "
              "0-based position in the input); remove them, since such a row carries no "
              "information about the classes.",
        "zh": "{source} 中有 {count} 行所有回答都缺失（第一行是输入中从 0 开始的第 {row} 行）；"
              "请删除这些行，它们不含任何关于类别的信息。"},
    "lca.empty_class": {
        "en": "Latent class {k} is empty (no responsibility mass); use fewer classes or more starts.",
        "zh": "潜在类别 {k} 为空（责任权重为零）；请减少类别数或增加随机起点。"},
})


def order_codes(codes: set[str]) -> list[str]:
    """Documented category order: numeric-looking codes numerically, then the rest as text."""
    numeric, other = [], []
    for c in codes:
        try:
            v = float(c)
        except ValueError:
            v = np.nan
        if np.isfinite(v):
            numeric.append((v, c))
        else:
            other.append(c)
    return [c for _, c in sorted(numeric)] + sorted(other)


def _as_text(col: Any) -> tuple[np.ndarray, np.ndarray]:
    """(codes as stripped text, missing mask) of one column; whole floats lose their ``.0``."""
    import pandas as pd

    from src.data.loading import distinct_values

    missing = col.isna().to_numpy()
    present = ~missing
    found = distinct_values(col, present) if present.any() else None
    if found is not None:   # each distinct value formatted once (fast; the same text)
        codes, uniques, is_float = found
        if is_float:
            v = np.asarray(uniques, dtype=float)
            whole = np.all(np.isfinite(v) & (v == np.round(v)))
            texts = [str(int(x)) if whole else repr(float(x)) for x in v]
        else:
            texts = [str(x).strip() for x in uniques]
        text = np.array(texts + [""], dtype=object)
        blank = np.array([x == "" for x in texts] + [True], dtype=bool)
        index = np.full(len(col), len(texts), dtype=np.int64)   # missing: the last, ""
        index[present] = codes
        return text[index], blank[index]
    values = col.to_numpy(dtype=object)
    out = np.empty(len(col), dtype=object)
    if pd.api.types.is_float_dtype(col.dtype) and present.any():
        v = values[present].astype(float)
        whole = np.all(np.isfinite(v) & (v == np.round(v)))
        out[present] = [str(int(x)) if whole else repr(float(x)) for x in v]
    else:
        out[present] = [str(x).strip() for x in values[present]]
    missing = missing | np.array([o is None or o == "" for o in out], dtype=bool)
    out[missing] = ""
    return out, missing




#: a pattern whose class densities add up to less than this is redone relative to the largest
_TINY = 1e-280
#: compress only when the distinct patterns are at most this share of the rows
COMPRESS_MAX_SHARE = 0.5
#: the patterns' one-hot matrix is kept (not rebuilt per evaluation) up to this many entries
ONEHOT_CACHE_MAX = 1 << 22
#: the compressed forms of the last few answer arrays (keyed on the array object)
_PATTERNS: dict[int, tuple[Any, tuple[int, ...], Any]] = {}
_PATTERNS_MAX = 8
#: the patterns' summed row weights of the last few (answers, weights) arrays
_WEIGHTED: dict[tuple[int, int], tuple[Any, Any, np.ndarray]] = {}


def _pattern_keys(Y: np.ndarray, sizes: np.ndarray) -> np.ndarray | None:
    """One int64 key per row (mixed radix over the items, missing = digit 0), or None when
    the radix product would overflow."""
    radix = sizes.astype(np.int64) + 1
    if float(np.prod(radix.astype(float))) >= 2.0 ** 62:
        return None
    place = np.concatenate([np.cumprod(radix[::-1])[::-1][1:], [1]]).astype(np.int64)
    return (Y + 1) @ place


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b with 0 wherever a == 0 (so 0/0 is 0; a > 0 with b == 0 stays inf)."""
    out = np.zeros(np.broadcast(a, b).shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(a, b, out=out, where=np.broadcast_to(a != 0, out.shape))
    return out


class LatentClassModel(MixtureModel):
    """Latent class model for categorical items; data ``{"Y": (N, J) int64}``, -1 = missing."""

    name = "lca"
    summaries = ("response_patterns",)
    has_closed_form_m_step = True
    #: the data layer reads the columns as text (so code ``1`` stays ``1``)
    reads_text = True
    #: the built-in data set is continuous: a file of answers is required
    needs_data = True

    # ------------------------------------------------------------------ data
    @classmethod
    def prepare_data(cls, frame: Any, options: Mapping[str, Any]) -> tuple[Data, dict[str, Any]]:
        """Every column of ``frame`` is an item; codes become 0-based indices, -1 missing.

        A chunk of partitioned input (``options["_chunk"]``, :mod:`src.data.partitions`) may
        have an item with no answer (its categories ``[]``): :meth:`merge_meta` checks the
        items over the whole data; rows are named by the frame's index (global positions).
        """
        import pandas as pd

        chunk = options.get("_chunk")
        if frame.shape[1] == 0:
            raise DataError(t("lca.no_items"))
        n, J = frame.shape
        Y = np.full((n, J), -1, dtype=np.int64)
        categories: list[list[str]] = []
        for j, column in enumerate(frame.columns):
            text, missing = _as_text(frame.iloc[:, j])
            codes = order_codes(set(text[~missing]))
            if not codes and not chunk:
                raise DataError(t("lca.empty_item", column=str(column)))
            found, distinct = pd.factorize(text[~missing])   # each code looked up once
            where = {c: i for i, c in enumerate(codes)}
            Y[~missing, j] = np.array([where[c] for c in distinct], dtype=np.int64)[found]
            categories.append(codes)
        empty = np.flatnonzero((Y < 0).all(axis=1))
        if empty.size and chunk:
            raise DataError(t("lca.all_missing_rows_in", count=int(empty.size),
                              source=str(chunk.get("path")), row=int(frame.index[empty[0]])))
        if empty.size:
            raise DataError(t("lca.all_missing_rows", count=int(empty.size), row=int(empty[0])))
        return {"Y": Y}, {"items": [str(c) for c in frame.columns], "categories": categories}

    @classmethod
    def merge_meta(cls, metas: list[dict[str, Any]], counts: list[int], *,
                   source: str = "the data") -> dict[str, Any]:
        """Chunks' meta merged: each item's categories the union of the chunks' codes, in
        the documented order (:func:`order_codes`); an item with no answer in any chunk is
        the error :meth:`prepare_data` gives for whole data."""
        from src.data.partitions import merge_equal

        out = merge_equal(metas, counts, source=source, model=cls.name, skip=("categories",))
        items = out.get("items", [])
        categories = []
        for j, item in enumerate(items):
            codes = order_codes({str(c) for m in metas for c in m["categories"][j]})
            if not codes:
                raise DataError(t("lca.empty_item", column=str(item)))
            categories.append(codes)
        out["categories"] = categories
        return out

    @classmethod
    def conform_data(cls, data: Data, meta_local: Mapping[str, Any],
                     meta_global: Mapping[str, Any]) -> Data:
        """A chunk's answers re-coded from its own categories to the merged ones."""
        local, merged = meta_local["categories"], meta_global["categories"]
        if [list(c) for c in local] == [list(c) for c in merged]:
            return data
        Y = np.array(data["Y"], dtype=np.int64, copy=True)
        for j, (own, whole) in enumerate(zip(local, merged)):
            if list(own) == list(whole):
                continue
            index = {str(c): i for i, c in enumerate(whole)}
            mapping = np.array([index[str(c)] for c in own] + [-1], dtype=np.int64)
            Y[:, j] = mapping[Y[:, j]]   # -1 (missing) picks the last entry, -1
        return {**data, "Y": Y}

    @staticmethod
    def meta_from_array(Y: np.ndarray) -> dict[str, Any]:
        """Meta for an integer array already coded 0..C_j-1 (-1 missing): codes "1".."C_j"."""
        Y = np.asarray(Y)
        sizes = [max(int(Y[:, j].max()) + 1, 1) for j in range(Y.shape[1])]
        return {"items": [f"item{j + 1}" for j in range(Y.shape[1])],
                "categories": [[str(c + 1) for c in range(s)] for s in sizes]}

    def setup(self, meta: Mapping[str, Any]) -> None:
        """Fix items, categories and the flat one-hot layout used by every computation."""
        super().setup(meta)
        self.items = [str(x) for x in meta["items"]]
        self.categories = [[str(c) for c in cats] for cats in meta["categories"]]
        sizes = np.array([len(c) for c in self.categories], dtype=np.int64)
        self.sizes = sizes
        self.cmax = int(sizes.max())
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.n_flat = int(sizes.sum())
        self.flat_item = np.repeat(np.arange(sizes.size), sizes)
        self.flat_cat = np.arange(self.n_flat) - self.offsets[self.flat_item]
        is_free = self.flat_cat < sizes[self.flat_item] - 1
        self.free_flat = np.flatnonzero(is_free)
        self.last_of_free = self.offsets[self.flat_item[self.free_flat]] + \
            sizes[self.flat_item[self.free_flat]] - 1
        self.valid = np.arange(self.cmax)[None, :] < sizes[:, None]   # (J, Cmax)
        # the free probabilities of a class, row-major (as the free parameterisation lists them)
        self._free_j = np.repeat(np.arange(sizes.size), sizes - 1)
        self._free_c = np.concatenate([np.arange(s - 1) for s in sizes]).astype(np.int64)

    def _require_setup(self) -> None:
        if not hasattr(self, "sizes"):
            raise ValueError("call setup(meta) with the meta from prepare_data (or "
                             "LatentClassModel.meta_from_array) before using the model")

    # ------------------------------------------------------------- the model
    def param_specs(self) -> list[ParamSpec]:
        self._require_setup()
        cached = self.__dict__.get("_specs")
        if cached is None or cached[0] is not self.sizes:   # built once per setup
            padded = [str(c + 1) for c in range(self.cmax)]
            specs = [ParamSpec("weight", (), "simplex"),
                     ParamSpec("prob", (len(self.items), self.cmax), "probability",
                               labels=(self.items, padded), sizes=tuple(int(s) for s in self.sizes))]
            cached = self.__dict__["_specs"] = (self.sizes, specs)
        return list(cached[1])

    def one_hot(self, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(O, observed): O (n, sum C_j) float one-hot of the answers, zero rows for missing."""
        self._require_setup()
        Y = np.asarray(Y)
        n = Y.shape[0]
        observed = Y >= 0
        O = np.zeros((n, self.n_flat))
        # a missing answer writes 0 into its own item's first cell: no boolean gather needed
        flat = np.arange(n)[:, None] * self.n_flat + self.offsets[None, :] + np.maximum(Y, 0)
        O.ravel()[flat.ravel()] = observed.ravel()
        return O, observed

    def _log_joint_onehot(self, O: np.ndarray, params: Params) -> np.ndarray:
        prob = np.asarray(params["prob"], dtype=float)
        w = np.asarray(params["weight"], dtype=float)
        pf = prob[:, self.flat_item, self.flat_cat]                 # (K, n_flat)
        zero = pf <= 0.0
        with np.errstate(divide="ignore"):
            lp = np.log(np.where(zero, 1.0, pf))
            lw = np.log(w)
        lj = O @ lp.T + lw[None, :]
        if zero.any():  # an observed answer of probability 0: log-density -inf, not NaN
            lj[(O @ zero.T.astype(float)) > 0] = -np.inf
        return lj

    def log_joint(self, data: Data, params: Params) -> np.ndarray:
        O, _ = self.one_hot(data["Y"])
        return self._log_joint_onehot(O, params)

    # ------------------------------------- free vector (fast paths, same numbers)
    def to_free(self, params: Params) -> np.ndarray:
        """As the base class (K-1 weights, then class by class the free probabilities),
        without its walk over the declarations (SQUAREM calls it at every cycle)."""
        w = np.asarray(params["weight"], dtype=float)
        p = np.asarray(params["prob"], dtype=float)
        K = self.n_components
        if w.shape != (K,) or p.shape != (K, len(self.items), self.cmax):
            return super().to_free(params)
        return np.concatenate([w[: K - 1], p[:, self._free_j, self._free_c].ravel()])

    def from_free(self, theta: np.ndarray) -> Params:
        """As the base class; each item's last category is 1 minus the others added in
        order (the base class's sum for items of fewer than 9 categories, so the same
        numbers; larger items take the base class's path)."""
        theta = np.asarray(theta, dtype=float)
        K = self.n_components
        if self.cmax > 8 or theta.shape != (self.n_free_parameters(),):
            return super().from_free(theta)
        w = np.empty(K)
        w[: K - 1] = theta[: K - 1]
        w[K - 1] = 1.0 - w[: K - 1].sum()
        prob = np.zeros((K, len(self.items), self.cmax))
        prob[:, self._free_j, self._free_c] = theta[K - 1:].reshape(K, -1)
        total = prob[:, :, 0].copy()
        for c in range(1, self.cmax - 1):
            total += prob[:, :, c]
        last = self.sizes - 1
        J = np.arange(len(self.items))
        prob[:, J, last] = 1.0 - np.where(last > 0, total, 0.0)
        return {"weight": w, "prob": prob}

    def to_free_batch(self, params_list: list[Params]) -> np.ndarray:
        """:meth:`to_free` of several parameter sets, one row each (SQUAREM in lockstep)."""
        K = self.n_components
        W = np.stack([np.asarray(p["weight"], dtype=float) for p in params_list])
        P = np.stack([np.asarray(p["prob"], dtype=float) for p in params_list])
        if W.shape[1:] != (K,) or P.shape[1:] != (K, len(self.items), self.cmax):
            return np.array([self.to_free(p) for p in params_list])
        return np.concatenate([W[:, : K - 1],
                               P[:, :, self._free_j, self._free_c].reshape(len(W), -1)], axis=1)

    def from_free_batch(self, theta: np.ndarray) -> list[Params]:
        """:meth:`from_free` of each row of ``theta`` (the same numbers, row by row)."""
        theta = np.asarray(theta, dtype=float)
        K, n = self.n_components, theta.shape[0]
        if self.cmax > 8 or theta.ndim != 2 or theta.shape[1] != self.n_free_parameters():
            return [self.from_free(row) for row in theta]
        W = np.empty((n, K))
        W[:, : K - 1] = theta[:, : K - 1]
        for i in range(n):
            W[i, K - 1] = 1.0 - W[i, : K - 1].sum()
        prob = np.zeros((n, K, len(self.items), self.cmax))
        prob[:, :, self._free_j, self._free_c] = theta[:, K - 1:].reshape(n, K, -1)
        total = prob[..., 0].copy()
        for c in range(1, self.cmax - 1):
            total += prob[..., c]
        last = self.sizes - 1
        prob[:, :, np.arange(len(self.items)), last] = 1.0 - np.where(last > 0, total, 0.0)
        return [{"weight": W[i], "prob": prob[i]} for i in range(n)]

    def in_parameter_space_batch(self, params_list: list[Params]) -> np.ndarray:
        """:meth:`in_parameter_space` of several parameter sets (a boolean per set)."""
        W = np.stack([np.asarray(p["weight"], dtype=float) for p in params_list])
        P = np.stack([np.asarray(p["prob"], dtype=float) for p in params_list]).reshape(len(W), -1)
        return (np.isfinite(W).all(axis=1) & np.isfinite(P).all(axis=1) & ~(W < 0).any(axis=1)
                & (np.abs(np.array([w.sum() for w in W]) - 1.0) <= 1e-8)
                & ~(P < 0).any(axis=1) & ~(P > 1).any(axis=1))

    def in_parameter_space(self, params: Params) -> bool:
        """The base class's constraints (finite; weights >= 0 summing to 1 within 1e-8;
        probabilities in [0, 1]) checked in a few array operations."""
        w = np.asarray(params["weight"], dtype=float)
        p = np.asarray(params["prob"], dtype=float)
        return bool(np.isfinite(w).all() and np.isfinite(p).all() and not (w < 0).any()
                    and abs(w.sum() - 1.0) <= 1e-8 and not (p < 0).any() and not (p > 1).any())

    def init_params(self, data: Data, rng: np.random.Generator) -> Params:
        """Equal weights; each item's probabilities in each class drawn from Dirichlet(1)."""
        self._require_setup()
        K = self.n_components
        g = rng.standard_gamma(1.0, size=(K, len(self.items), self.cmax)) * self.valid[None]
        g = np.maximum(g, 1e-12) * self.valid[None]
        return {"weight": np.full(K, 1.0 / K), "prob": g / g.sum(axis=2, keepdims=True)}

    # ------------------------------------------------------------- starts
    def start_features(self, data: Data) -> np.ndarray:
        """The one-hot answers (a missing answer all zeros), for data-driven starts.

        No :meth:`degeneracies`: probabilities on the boundary are proper maxima.
        """
        O = data.get("onehot") if isinstance(data, Mapping) else None
        if O is None:
            return self.one_hot(data["Y"])[0]
        O = O.view()   # the patterns' cached one-hot matrix, read only
        O.flags.writeable = False
        return O

    # ------------------------------------------------------ closed-form M-step
    def _stats(self, O: np.ndarray, observed: np.ndarray, resp: np.ndarray) -> dict[str, np.ndarray]:
        K = self.n_components
        counts = np.zeros((K, len(self.items), self.cmax))
        counts[:, self.flat_item, self.flat_cat] = resp.T @ O
        return {"nk": resp.sum(axis=0), "counts": counts,
                "mass": resp.T @ observed.astype(float)}

    def suff_stats(self, data: Data, resp: np.ndarray) -> dict[str, np.ndarray]:
        """``nk`` (K,), ``counts`` (K, J, Cmax), ``mass`` (K, J) observed mass per item."""
        if "onehot" in data:   # answer patterns (compressed_rows) carry theirs
            return self._stats(data["onehot"], data["observed"], resp)
        O, observed = self.one_hot(data["Y"])
        return self._stats(O, observed, resp)

    def e_step_stats(self, data: Data, params: Params) -> tuple[dict[str, np.ndarray], float]:
        """Fused E-step: one one-hot matrix serves the densities and the statistics."""
        O, observed = self.one_hot(data["Y"])
        lj = self._log_joint_onehot(O, params)
        resp, ll = _responsibilities(lj)
        return self._stats(O, observed, resp), ll

    # ------------------------------------------- compressed rows (EM driver)
    def compressed_rows(self, data: Data, weights: np.ndarray | None = None
                        ) -> tuple[Data, np.ndarray] | None:
        """``(patterns, counts)``: the distinct rows of ``data["Y"]`` and how often each occurs
        (with row ``weights``: the sum of its rows' weights).

        Internal to the EM driver (:func:`src.estimation.em.em_map`), which then calls
        :meth:`e_step_stats_weighted` on chunks of ``patterns``: the same log-likelihood and
        statistics as the rows themselves, summed in another order.  ``patterns`` holds
        ``Y`` (sorted by a mixed-radix key, so the order depends on the answers only) and,
        when small enough, their one-hot matrix ``onehot`` and ``observed`` mask, built once.
        None when compression does not pay (more than :data:`COMPRESS_MAX_SHARE` of the
        rows distinct).  Cached on the array object (the data must not be changed in place
        while it is in use; a new array is a new entry).
        """
        out = self.row_patterns(data, weights=weights)
        return None if out is None else out[:2]

    def row_patterns(self, data: Data, cache: bool = True, weights: np.ndarray | None = None
                     ) -> tuple[Data, np.ndarray, np.ndarray] | None:
        """``(patterns, counts, inverse)``: :meth:`compressed_rows` plus each row's pattern
        (``patterns["Y"][inverse]`` is ``data["Y"]``), for the candidate starts
        (:mod:`src.estimation.starts`).  ``cache=False``: not kept (a one-off subsample).
        ``weights`` (n,): row weights; ``counts`` are then each pattern's sum of weights."""
        out = self._row_patterns(data, cache, weights is not None)
        if out is None or weights is None:
            return out
        w = np.asarray(weights, dtype=np.float64)
        Y = data["Y"]
        key = (id(Y), id(w))
        hit = _WEIGHTED.get(key)
        if hit is not None and hit[0]() is Y and hit[1]() is w and hit[2].shape == out[1].shape:
            return out[0], hit[2], out[2]
        counts = np.bincount(out[2], weights=w, minlength=out[1].size)
        if cache:
            for old in [k for k, entry in _WEIGHTED.items()
                        if entry[0]() is None or entry[1]() is None]:
                del _WEIGHTED[old]
            if len(_WEIGHTED) >= _PATTERNS_MAX:
                _WEIGHTED.pop(next(iter(_WEIGHTED)))
            _WEIGHTED[key] = (weakref.ref(Y), weakref.ref(w), counts)
        return out[0], counts, out[2]

    def _row_patterns(self, data: Data, cache: bool, weighted: bool = False
                      ) -> tuple[Data, np.ndarray, np.ndarray] | None:
        """The patterns of ``data["Y"]`` (weighted rows: whatever their share of the rows,
        as a table of patterns and frequencies is made of distinct rows)."""
        self._require_setup()
        Y = data.get("Y") if isinstance(data, Mapping) else None
        if not isinstance(Y, np.ndarray) or Y.ndim != 2 or len(data) != 1:
            return None
        sig = (*(int(c) for c in self.sizes), bool(weighted))
        hit = _PATTERNS.get(id(Y))
        if hit is not None and hit[0]() is Y and hit[1] == sig:
            return hit[2]
        out = self._compress(Y, 1.0 if weighted else COMPRESS_MAX_SHARE)
        if cache:
            for key in [key for key, entry in _PATTERNS.items() if entry[0]() is None]:
                del _PATTERNS[key]   # arrays gone: their patterns go too
            if len(_PATTERNS) >= _PATTERNS_MAX:
                _PATTERNS.pop(next(iter(_PATTERNS)))
            _PATTERNS[id(Y)] = (weakref.ref(Y), sig, out)
        return out

    def _compress(self, Y: np.ndarray, max_share: float = COMPRESS_MAX_SHARE
                  ) -> tuple[Data, np.ndarray, np.ndarray] | None:
        n = Y.shape[0]
        if n < 2:
            return None
        keys = _pattern_keys(Y, self.sizes)
        if keys is not None:
            _, first, inverse, counts = np.unique(keys, return_index=True, return_inverse=True,
                                                  return_counts=True)
            U = Y[first]
        else:
            U, inverse, counts = np.unique(Y, axis=0, return_inverse=True, return_counts=True)
        if U.shape[0] > max_share * n:
            return None
        U = np.ascontiguousarray(U, dtype=np.int64)
        patterns: dict[str, np.ndarray] = {"Y": U}
        F = self.n_flat
        if U.shape[0] * (F + 1 + U.shape[1]) <= ONEHOT_CACHE_MAX:
            O, observed = self.one_hot(U)
            missing = not observed.all()
            aug = np.empty((U.shape[0], F + 1 + (U.shape[1] if missing else 0)))
            aug[:, :F] = O
            aug[:, F] = 1.0
            if missing:
                aug[:, F + 1:] = observed
            patterns["onehot"] = aug[:, :F]
            patterns["observed"] = observed.astype(float)
            patterns["aug"] = aug   # [one-hot | 1 | observed (if any answer is missing)]
        return patterns, counts.astype(float), np.asarray(inverse, dtype=np.int64).ravel()

    def _augmented(self, rows: Data) -> np.ndarray:
        """``[one-hot | 1 | observed]`` of pattern rows (the last block only when answers
        are missing in the data)."""
        if "aug" in rows:
            return rows["aug"]
        O, observed = self.one_hot(rows["Y"])
        return np.hstack([O, np.ones((O.shape[0], 1)), observed.astype(float)])

    def em_map_batch(self, data: Data, params_list: list[Params], chunk_size: int = 4096,
                     weights: np.ndarray | None = None
                     ) -> tuple[list[Params], np.ndarray, list[list[str]]]:
        """The EM map of several parameter sets at once, on the answer patterns (internal
        to the EM driver's lockstep path, :func:`src.estimation.em.fit_em`).

        Returns ``(new parameters, log-likelihoods (L,), notes)``: per set, the M-step's
        estimate, the log-likelihood at the given values and the ModelWarning sentences
        its M-step gives (an empty class).  The same formulas as :meth:`e_step_stats` and
        :meth:`m_step`, with the L x K classes side by side in two matrix products per
        chunk of patterns (so a set's numbers can differ from its lone evaluation in the
        last bits).  ``weights``: row weights (the patterns' counts are their sums).
        """
        self._require_setup()
        comp = self.compressed_rows(data, weights=weights)
        if comp is None:
            raise ValueError("em_map_batch needs data whose answer patterns compress")
        rows, weights = comp
        L, K, F, J = len(params_list), self.n_components, self.n_flat, len(self.items)
        P = np.stack([np.asarray(p["prob"], dtype=float) for p in params_list])
        W = np.stack([np.asarray(p["weight"], dtype=float) for p in params_list])
        # columns class-major (k * L + l), so the sums over classes run along a long axis
        pf = P[:, :, self.flat_item, self.flat_cat].transpose(1, 0, 2).reshape(K * L, F)
        zero = pf <= 0.0
        has_zero = bool(zero.any())
        A = np.empty((F + 1, K * L))
        with np.errstate(divide="ignore"):
            A[:F] = np.log(np.where(zero, 1.0, pf) if has_zero else pf).T
            A[F] = np.log(W.T).ravel()
        Z = zero.T.astype(float) if has_zero else None
        n = rows["Y"].shape[0]
        ll = np.zeros(L)
        S = None
        with np.errstate(divide="ignore", invalid="ignore"):
            for a in range(0, n, chunk_size):
                b = min(a + chunk_size, n)
                aug = self._augmented({k: v[a:b] for k, v in rows.items()})
                lj = aug[:, :F + 1] @ A                         # (rows, K*L)
                if has_zero:   # an observed answer of probability 0: -inf, not NaN
                    lj[(aug[:, :F] @ Z) > 0] = -np.inf
                l3 = lj.reshape(b - a, K, L)
                # log-densities are <= 0, so exp cannot overflow; rows whose every class
                # underflows (sum below TINY) are redone relative to their largest class
                e = np.exp(l3)
                s = e[:, 0].copy()
                for k in range(1, K):
                    s += e[:, k]
                low = ~(s >= _TINY)
                shift = None
                if low.any():
                    r = np.flatnonzero(low.any(axis=1))
                    sub = l3[r]
                    mx = sub.max(axis=1)
                    mx[~np.isfinite(mx)] = 0.0
                    mx = np.where(low[r], mx, 0.0)
                    e[r] = np.exp(sub - mx[:, None, :])
                    s[r] = e[r].sum(axis=1)
                    shift = (r, mx)
                w = weights[a:b]
                logs = np.log(s)
                if shift is not None:
                    logs[shift[0]] += shift[1]
                ll += w @ logs
                np.multiply(e, (w[:, None] / s)[:, None, :], out=e)
                lj = e.reshape(b - a, K * L)
                part = lj.T @ aug                                # (K*L, F + 1 [+ J])
                S = part if S is None else S + part
        S = S.reshape(K, L, -1).transpose(1, 0, 2)               # (L, K, F + 1 [+ J])
        nk = S[:, :, F]
        counts = np.zeros((L, K, J, self.cmax))
        counts[:, :, self.flat_item, self.flat_cat] = S[:, :, :F]
        mass = S[:, :, F + 1:] if S.shape[2] > F + 1 else np.broadcast_to(nk[:, :, None], (L, K, J))
        ok = mass > 0
        prob = np.zeros_like(counts)
        np.divide(counts, mass[..., None], out=prob, where=ok[..., None] & self.valid)
        prob = np.where(ok[..., None], prob, self.valid / self.sizes[:, None])
        with np.errstate(divide="ignore", invalid="ignore"):
            weight = nk / nk.sum(axis=1, keepdims=True)
        empty = nk <= 0
        notes = [[t("lca.empty_class", k=int(k) + 1) for k in np.flatnonzero(empty[i])]
                 if empty[i].any() else [] for i in range(L)]
        return [{"weight": weight[i], "prob": prob[i]} for i in range(L)], ll, notes

    def e_step_stats_weighted(self, data: Data, params: Params,
                              weights: np.ndarray) -> tuple[dict[str, np.ndarray], float]:
        """:meth:`e_step_stats` of rows that each stand for ``weights`` identical rows."""
        O = data.get("onehot")
        if O is None:
            O, observed = self.one_hot(data["Y"])
            observed = observed.astype(float)
        else:
            observed = data["observed"]
        lj = self._log_joint_onehot(O, params)
        m = lj.max(axis=1, keepdims=True)
        m[~np.isfinite(m)] = 0.0
        e = np.exp(lj - m)
        s = e.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore"):
            ll = float(weights @ (np.log(s[:, 0]) + m[:, 0]))
        R = e * (weights[:, None] / s)
        K = self.n_components
        counts = np.zeros((K, len(self.items), self.cmax))
        counts[:, self.flat_item, self.flat_cat] = R.T @ O
        return {"nk": R.sum(axis=0), "counts": counts, "mass": R.T @ observed}, ll

    def m_step(self, stats: Mapping[str, np.ndarray]) -> Params:
        """weight = nk / N; prob[k,j,c] = counts / observed mass (uniform when the mass is 0)."""
        self._require_setup()
        nk = np.asarray(stats["nk"], dtype=float)
        mass = np.asarray(stats["mass"], dtype=float)
        counts = np.asarray(stats["counts"], dtype=float)
        for k in np.flatnonzero(nk <= 0):
            warnings.warn(t("lca.empty_class", k=int(k) + 1), ModelWarning, stacklevel=2)
        ok = mass > 0
        prob = np.zeros_like(counts)
        np.divide(counts, mass[:, :, None], out=prob, where=ok[:, :, None] & self.valid[None])
        uniform = self.valid / self.sizes[:, None]
        prob = np.where(ok[:, :, None], prob, uniform[None])
        return {"weight": nk / nk.sum(), "prob": prob}

    # -------------------------------------------------------------- simulation
    def sample(self, params: Params, data: Data, rng: np.random.Generator) -> Data:
        """New answers from the model; each row keeps its pattern of missing answers."""
        Y = np.asarray(data["Y"])
        n, J = Y.shape
        w = np.asarray(params["weight"], dtype=float)
        z = np.minimum(np.searchsorted(np.cumsum(w), rng.random(n) * w.sum(), side="right"),
                       w.size - 1)
        u = rng.random((n, J))
        cum = np.cumsum(np.asarray(params["prob"], dtype=float)[z], axis=2)   # (n, J, Cmax)
        cat = np.minimum((u[:, :, None] >= cum).sum(axis=2), self.sizes[None, :] - 1)
        return {"Y": np.where(Y >= 0, cat, -1).astype(np.int64)}

    # ------------------------------------------------------ analytic derivatives
    def _n_free_prob(self) -> int:
        return int(self.free_flat.size)

    def complete_score(self, data: Data, params: Params) -> np.ndarray:
        """d log p(y_i, z_i=k) / d theta_free, (n, K, P); a missing answer contributes 0."""
        O, _ = self.one_hot(data["Y"])
        K = self.n_components
        prob = np.asarray(params["prob"], dtype=float)
        m = self._n_free_prob()
        S = np.zeros((O.shape[0], K, K - 1 + K * m))
        S[:, :, : K - 1] = self.weight_score(params)[None]
        for k in range(K):
            pf = prob[k, self.flat_item, self.flat_cat]
            col = K - 1 + k * m
            S[:, k, col:col + m] = (_ratio(O[:, self.free_flat], pf[self.free_flat])
                                    - _ratio(O[:, self.last_of_free], pf[self.last_of_free]))
        return S

    def complete_information(self, data: Data, params: Params, resp: np.ndarray) -> np.ndarray:
        """sum_ik resp_ik (-Hessian of log p(y_i, z_i=k)) in the free parameters, (P, P)."""
        O, _ = self.one_hot(data["Y"])
        K = self.n_components
        prob = np.asarray(params["prob"], dtype=float)
        resp = np.asarray(resp, dtype=float)
        nk = resp.sum(axis=0)
        m = self._n_free_prob()
        info = np.zeros((K - 1 + K * m,) * 2)
        info[: K - 1, : K - 1] = self.weight_information(params, nk)
        counts = resp.T @ O                                            # (K, n_flat)
        item = self.flat_item[self.free_flat]
        same_item = item[:, None] == item[None, :]
        for k in range(K):
            pf = prob[k, self.flat_item, self.flat_cat]
            diag = _ratio(counts[k, self.free_flat], pf[self.free_flat] ** 2)
            last = _ratio(counts[k, self.last_of_free], pf[self.last_of_free] ** 2)
            col = K - 1 + k * m
            with np.errstate(invalid="ignore"):  # 0 * inf on the boundary: NaN, as meant
                info[col:col + m, col:col + m] = np.diag(diag) + same_item * last[:, None]
        return info

    # ------------------------------------------------------- reported names
    def _reported_entries(self):
        """As the base class, but ``prob[k,item,code]`` with each item's own codes."""
        for name, spec, k, idx, free in super()._reported_entries():
            if spec.constraint == "probability":
                j, c = idx
                name = f"prob[{k + 1},{self.items[j]},{self.categories[j][c]}]"
            yield name, spec, k, idx, free

    def reported_jacobian(self) -> np.ndarray:
        """d reported / d free: exact columns, since every reported value is affine in theta."""
        P = self.n_free_parameters()
        base = self.reported_values(self.from_free(np.zeros(P)))
        J = np.empty((base.size, P))
        for i in range(P):
            e = np.zeros(P)
            e[i] = 1.0
            J[:, i] = self.reported_values(self.from_free(e)) - base
        return J
