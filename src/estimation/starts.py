"""Starting values that find the global maximum: many cheap candidates, the best run to the end.

The strategy is Mplus's ``STARTS = n m`` and Biernacki, Celeux & Govaert's (2003) emEM,
with mclust's deterministic hierarchical start among the candidates:

1. **Candidates.** ``n_candidates`` starting points (at least ``n_starts``) of several kinds,
   candidate ``i`` (0-based; shown from 1) drawing only from ``stream(seed, "candidate", i)``:

   * candidate 0, ``hierarchical``: Ward's agglomerative clustering of the model's start
     features (:meth:`MixtureModel.start_features`) of at most :data:`HC_SUBSAMPLE` rows (all
     rows when there are fewer, so it is deterministic), cut at K clusters by undoing the
     last K-1 merges; one M-step from that hard partition gives the starting values (as
     mclust starts EM from its hierarchical partition);
   * then in turn ``kmeans++`` (K centres chosen by k-means++ seeding on the features, every
     row assigned to its nearest centre, one M-step), ``random`` (the model's own random
     starting values, :meth:`MixtureModel.init_params`: what every start was before) and
     ``partition`` (every row put in a class drawn uniformly, one M-step).

   The hard partitions are of at most :data:`START_SUBSAMPLE` rows (:data:`HC_SUBSAMPLE`
   for Ward's method, which is quadratic in them): all rows when there are fewer, else a
   subsample drawn first from the candidate's stream; the features and the M-step see only
   those rows, so memory stays bounded whatever the data's size.  For a built-in model
   whose rows compress (LCA's answer patterns, ``row_patterns``) the k-means++ distances,
   the nearest centres and the M-step are computed once per distinct row: the same numbers
   (whole-number features and counts add up exactly), a fraction of the work.

   A model without start features (the default for user models) gets ``partition``
   instead of ``hierarchical`` and ``kmeans++``.  Each candidate runs ``candidate_iter``
   EM-map evaluations (plain EM or SQUAREM, as the final runs; a candidate that
   converges sooner stops there).
2. **Final runs.** The ``n_starts`` candidates with the highest log-likelihood after their
   short run (ties: the lower index) continue to convergence, from the state they reached
   (so their iterations count towards ``max_iter``).  Final start 1 is the best candidate.
3. **Extra starts** (``extra_starts``: given starting values, e.g. the BLRT's K-1
   estimate and splits of it) are *added*, never instead: they skip the candidate stage
   and run to convergence beside the ``n_starts`` best candidates, numbered after the drawn
   candidates (candidate ``n_candidates + j`` for extra start ``j``).

**Row weights** (:data:`~src.models.base.WEIGHT_KEY`) are ignored by the starting values
(subsamples, features, partitions and their M-step see the rows unweighted): a start need
only be valid, and the candidates' short EM runs and the final runs use the weights.

``n_candidates = 0`` is the previous policy: ``n_starts`` starts from the model's random
starting values (``stream(seed, "start", s)``), each run to convergence; it gives the
numbers earlier versions gave.  With one class every starting point gives the same
estimate, so K = 1 always uses that policy.

Why these kinds: random starting values often stop at local or spurious maxima (a component
collapsed onto a few identical values); k-means++ seeds spread the centres out; the
hierarchical start is the one mclust users trust, and being deterministic it makes the
search reproducible across seeds; random partitions are cheap diversity for every model.
The short runs cost ``n_candidates * candidate_iter`` evaluations; ranking after a few
iterations is what emEM found to pick the starts that reach the global maximum.
"""

from __future__ import annotations


import numpy as np

from src.models.base import Data, MixtureModel, Params, split_weight
from src.utils.rng import stream

__all__ = ["DEFAULT_N_CANDIDATES", "DEFAULT_CANDIDATE_ITER", "HC_SUBSAMPLE", "START_SUBSAMPLE",
           "KINDS", "candidate_kind", "candidate_params", "features", "has_features",
           "subsample", "ward_labels", "cut_linkage", "kmeanspp_centres", "nearest_centre",
           "random_partition", "params_from_labels"]

#: default ``--n-candidates``: cheap candidate starts (0: random starts only, as before)
DEFAULT_N_CANDIDATES = 50
#: default ``--candidate-iter``: EM-map evaluations of each candidate before ranking
DEFAULT_CANDIDATE_ITER = 10
#: rows the hierarchical start clusters at most (Ward's method is quadratic in them)
HC_SUBSAMPLE = 1000
#: rows the k-means++ and partition candidates use at most (features and M-step)
START_SUBSAMPLE = 10_000
#: the kinds of candidate, as recorded per start
KINDS = ("hierarchical", "kmeans++", "random", "partition")
_CYCLE = ("kmeans++", "random", "partition")


def candidate_kind(i: int, has_features: bool) -> str:
    """The kind of candidate ``i`` (0-based): hierarchical first, then the cycle."""
    kind = "hierarchical" if i == 0 else _CYCLE[(i - 1) % len(_CYCLE)]
    if not has_features and kind in ("hierarchical", "kmeans++"):
        return "partition"
    return kind


def has_features(model: MixtureModel) -> bool:
    """True when the model's class defines :meth:`MixtureModel.start_features`."""
    return type(model).start_features is not MixtureModel.start_features


def features(model: MixtureModel, data: Data) -> np.ndarray | None:
    """The model's start features as a finite float (n, d) matrix, or None when it has none."""
    F = model.start_features(data)
    if F is None:
        return None
    F = np.asarray(F, dtype=float)
    if F.ndim == 1:
        F = F[:, None]
    if F.ndim != 2 or F.shape[0] != _n_rows(data) or F.shape[1] == 0 or not np.all(np.isfinite(F)):
        return None
    return F


def _n_rows(data: Data) -> int:
    return int(next(iter(data.values())).shape[0])


# ------------------------------------------------------------ hard partitions
def cut_linkage(Z: np.ndarray, n: int, k: int) -> np.ndarray:
    """Labels 0..k-1 of ``n`` points from a scipy linkage matrix: the first n-k merges joined.

    Always exactly ``min(k, n)`` clusters (scipy's ``fcluster(..., "maxclust")`` may give
    fewer when merge heights tie); clusters are numbered in the order of their first row.
    """
    parent = np.arange(2 * n - 1)
    m = max(n - k, 0)
    if m:   # merge t joins two current clusters into node n + t
        parent[Z[:m, 0].astype(np.int64)] = n + np.arange(m)
        parent[Z[:m, 1].astype(np.int64)] = n + np.arange(m)
    root = parent
    while True:   # pointer jumping: every node to the last cluster it belongs to
        up = root[root]
        if np.array_equal(up, root):
            break
        root = up
    _, first, inverse = np.unique(root[:n], return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))      # cluster numbers by first row
    return order[inverse].astype(np.int64)


def subsample(n: int, m: int, rng: np.random.Generator) -> np.ndarray | None:
    """None (every row) when ``n <= m``, else ``m`` sorted rows drawn without replacement."""
    if n <= m:
        return None
    return np.sort(rng.choice(n, size=m, replace=False))


def ward_labels(F: np.ndarray, k: int) -> np.ndarray:
    """Labels of Ward's agglomerative clustering of the rows of ``F`` cut at ``k`` clusters."""
    from scipy.cluster.hierarchy import linkage

    if F.shape[0] < 2:
        return np.zeros(F.shape[0], dtype=np.int64)
    return cut_linkage(linkage(F, method="ward"), F.shape[0], k)


def kmeanspp_centres(F: np.ndarray, k: int, rng: np.random.Generator,
                     inverse: np.ndarray | None = None) -> np.ndarray:
    """Row indices of ``k`` centres by k-means++ seeding (Arthur & Vassilvitskii 2007).

    The first centre is a uniform draw (``rng.integers(n)``); each next one is drawn with
    probability proportional to the squared distance to the nearest centre so far
    (``rng.random() * total`` located in the cumulative sums); when every row coincides
    with a centre, a uniform draw.  ``inverse`` given: ``F`` holds the distinct rows and
    row i is ``F[inverse[i]]``; the distances are computed once per distinct row (the same
    numbers, so the same draws and centres as on the rows themselves).
    """
    n = F.shape[0] if inverse is None else inverse.size

    def feature(c: int) -> np.ndarray:
        return F[c] if inverse is None else F[inverse[c]]

    # small whole-number features (one-hot answers): every distance and every partial sum
    # is an exact integer, so |x|^2 + |c|^2 - 2 x.c and any order of summation give the
    # same numbers as the squared differences added row by row
    exact = inverse is not None and _small_integers(F)
    norms = (F * F).sum(axis=1) if exact else None

    def dist2(f: np.ndarray) -> np.ndarray:
        if exact:
            return norms + float(f @ f) - 2.0 * (F @ f)
        return ((F - f) ** 2).sum(axis=1)

    chosen = [int(rng.integers(n))]
    d2 = dist2(feature(chosen[0]))
    for _ in range(1, k):
        rows = d2 if inverse is None else d2[inverse]
        total = float(rows.sum())
        if total > 0:
            c = int(np.searchsorted(np.cumsum(rows), rng.random() * total, side="right"))
            c = min(c, n - 1)
        else:
            c = int(rng.integers(n))
        chosen.append(c)
        d2 = np.minimum(d2, dist2(feature(c)))
    return np.array(chosen, dtype=np.int64)


def _small_integers(F: np.ndarray) -> bool:
    """True when every entry of ``F`` is a whole number of magnitude below 2**10 (so the
    squared distances of up to 2**20 rows add up exactly in double precision)."""
    return bool(F.size and F.shape[1] <= 2 ** 10 and np.all(np.abs(F) < 2 ** 10)
                and np.array_equal(F, np.round(F)))


def nearest_centre(F: np.ndarray, centres: np.ndarray,
                   inverse: np.ndarray | None = None) -> np.ndarray:
    """Label of each row: its nearest centre (squared Euclidean; ties: the lower label).

    ``inverse`` given: ``F`` holds the distinct rows (see :func:`kmeanspp_centres`),
    ``centres`` are row indices, and the labels are of the rows."""
    C = F[centres] if inverse is None else F[inverse[centres]]
    d2 = (F * F).sum(axis=1)[:, None] - 2.0 * F @ C.T + (C * C).sum(axis=1)[None, :]
    labels = np.argmin(d2, axis=1).astype(np.int64)
    return labels if inverse is None else labels[inverse]


def random_partition(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Every row in a class drawn uniformly from 0..k-1."""
    return rng.integers(k, size=n).astype(np.int64)


def params_from_labels(model: MixtureModel, data: Data, labels: np.ndarray,
                       inverse: np.ndarray | None = None) -> Params:
    """Starting values from a hard partition of the rows of ``data``: one M-step
    (closed-form or generic).  ``inverse`` given: ``data`` holds the distinct rows (row i
    is ``inverse[i]``) and each class's responsibilities are its counts of each distinct
    row: the same sums (exact, being counts) as over the rows."""
    sub = data
    K = model.n_components
    if inverse is not None:
        m = _n_rows(data)
        resp = np.bincount(inverse * K + labels, minlength=m * K).reshape(m, K).astype(float)
    else:
        resp = np.zeros((labels.size, K))
        resp[np.arange(labels.size), labels] = 1.0
    if model.has_closed_form_m_step:
        return away_from_zero(model, model.m_step(model.suff_stats(sub, resp)))
    from .numeric_mstep import generic_params_from_resp
    return away_from_zero(model, generic_params_from_resp(model, sub, resp))


#: share of the uniform distribution mixed into a partition's category probabilities
PROBABILITY_FLOOR_SHARE = 1e-3


def away_from_zero(model: MixtureModel, params: Params) -> Params:
    """``params`` with every ``probability`` parameter mixed with the uniform distribution
    over its categories (share :data:`PROBABILITY_FLOOR_SHARE`): a class built from a part of
    the rows (a subsample, a cluster) has probability 0 for the answers it did not see, which
    would make a row giving such answers in every class impossible (log-likelihood -inf)."""
    out = dict(params)
    for spec in model.param_specs():
        if spec.constraint != "probability" or spec.name not in out:
            continue
        arr = np.asarray(out[spec.name], dtype=float)
        C = arr.shape[-1]
        sizes = np.asarray(spec.sizes if spec.sizes is not None else [C] * arr.shape[-2])
        valid = np.arange(C)[None, :] < sizes[:, None]              # (J, C)
        uniform = np.where(valid, 1.0 / sizes[:, None], 0.0)
        e = PROBABILITY_FLOOR_SHARE
        out[spec.name] = (1.0 - e) * arr + e * uniform[None, :, :]
    return out


def _distinct_rows(model: MixtureModel, data: Data, cache: bool) -> tuple[Data, np.ndarray] | None:
    """``(distinct rows, inverse)`` of a built-in model whose rows compress (LCA's answer
    patterns: ``row_patterns``), else None."""
    from src.models.checks import is_builtin

    get = getattr(model, "row_patterns", None)
    if get is None or not is_builtin(model):
        return None
    out = get(data, cache=cache)
    return None if out is None else (out[0], out[2])


def candidate_params(model: MixtureModel, data: Data, seed: int, i: int) -> tuple[Params, str]:
    """Starting values of candidate ``i`` and its kind, from ``stream(seed, "candidate", i)``.

    Draws, in order: the subsample (only when the data have more rows than it holds), then
    the kind's own draws.  A model whose ``start_features`` returns None gets a partition.
    Row weights are ignored (see the module docstring).
    """
    data = split_weight(data)[0]
    kind = candidate_kind(i, has_features(model))
    rng = stream(seed, "candidate", i)
    K = model.n_components
    n = _n_rows(data)
    if kind == "random":
        from .em import draw_random_params
        return draw_random_params(model, data, rng), kind
    rows = subsample(n, HC_SUBSAMPLE if kind == "hierarchical" else START_SUBSAMPLE, rng)
    sub = data if rows is None else {key: v[rows] for key, v in data.items()}
    # k-means++ and partitions on the distinct rows when they compress (the same numbers)
    packed = None if kind == "hierarchical" else _distinct_rows(model, sub, cache=rows is None)
    base, inverse = (sub, None) if packed is None else packed
    F = features(model, base) if kind != "partition" else None
    if F is None:
        kind = "partition"
        labels = random_partition(_n_rows(sub), K, rng)
    elif kind == "hierarchical":
        labels = ward_labels(F, K)
    else:
        labels = nearest_centre(F, kmeanspp_centres(F, K, rng, inverse), inverse)
    return params_from_labels(model, base, labels, inverse), kind
