"""Label switching: match a bootstrap replicate's classes to the estimate's.

The bootstrap matches classes by what they do on the data (:func:`align_by_posteriors`):
replicate class ``a`` goes with estimate class ``b`` when the rows the estimate puts in
``b`` are the rows the replicate puts in ``a``, i.e. the permutation maximising
``sum_i tau_ib(estimate) tau_ia(replicate)`` on the observed rows.  This needs no scale for
the parameters and cannot be misled by an entry that is nearly equal across classes (Old
Faithful's two waiting-time variances, 33.7 and 36.0, made the parameter distance below
swap the classes of 2 replicates in 50, and the bootstrap SE of a mean 13 times too large).

Without data, :func:`align_to` compares parameters:

Distance between replicate class ``a`` and estimate class ``b`` (generic over models,
since every parameter array's first axis is the class):

    d(a, b) = sum over parameter arrays p and entries e of
              ((rep[p][a, e] - est[p][b, e]) / s[p, e])^2,

where ``s[p, e]`` is the standard deviation of entry ``e`` across the estimate's classes.
Standardising by the spread *between classes* makes each entry count by how well it tells
the classes apart, whatever its unit (a mean in thousands, a probability, a weight).
Entries equal in every class (s = 0 or within rounding of it, e.g. padding of LCA items)
carry no information and are left out; "within rounding" is relative to the entry's size,
so an entry in tiny units still counts.  The permutation minimising the total distance is found by the Hungarian
algorithm (``scipy.optimize.linear_sum_assignment``), exact for any K in O(K^3), instead of
trying all K! permutations.
"""

from __future__ import annotations

import numpy as np

from ..models.base import Data, MixtureModel, Params, split_weight

__all__ = ["class_distance", "align_to", "align_params", "posterior_agreement",
           "align_by_posteriors"]


def class_distance(reference: Params, replicate: Params) -> np.ndarray:
    """Matrix (K, K): entry [b, a] = distance of replicate class a to reference class b."""
    K = next(iter(reference.values())).shape[0]
    cost = np.zeros((K, K))
    for name, ref in reference.items():
        ref = np.asarray(ref, dtype=float).reshape(K, -1)
        rep = np.asarray(replicate[name], dtype=float).reshape(K, -1)
        spread = ref.std(axis=0)
        use = spread > 1e-12 * np.abs(ref).max(axis=0)  # relative: any units
        if not np.any(use):
            continue
        r = ref[:, use] / spread[use]
        q = rep[:, use] / spread[use]
        cost += ((r[:, None, :] - q[None, :, :]) ** 2).sum(axis=2)
    return cost


def align_to(reference: Params, replicate: Params) -> np.ndarray:
    """Permutation ``perm`` with replicate class ``perm[b]`` matched to reference class b."""
    cost = class_distance(reference, replicate)
    if not np.all(np.isfinite(cost)):
        cost = np.where(np.isfinite(cost), cost, np.nanmax(cost[np.isfinite(cost)], initial=0) * 10 + 1)
    from scipy.optimize import linear_sum_assignment   # (0.5 s to import: where it is used)

    rows, cols = linear_sum_assignment(cost)
    perm = np.empty(cost.shape[0], dtype=int)
    perm[rows] = cols
    return perm


def align_params(model: MixtureModel, reference: Params, replicate: Params) -> Params:
    """The replicate's parameters relabelled to match the reference's classes."""
    return model.permute(replicate, align_to(reference, replicate))


def posterior_agreement(model: MixtureModel, data: Data, reference: Params, replicate: Params,
                        chunk_size: int = 4096) -> np.ndarray:
    """Matrix (K, K): entry [b, a] = sum over rows of w_i tau_ib(reference) tau_ia(replicate)
    (w_i the row weights, 1 without them)."""
    rows, w = split_weight(data)
    n = int(next(iter(rows.values())).shape[0])
    K = model.n_components
    agree = np.zeros((K, K))
    for a in range(0, n, chunk_size):
        part = {k: v[a:a + chunk_size] for k, v in rows.items()}
        ref, _ = model.e_step(part, reference)
        rep, _ = model.e_step(part, replicate)
        ref = np.nan_to_num(ref)
        if w is not None:
            ref = ref * w[a:a + chunk_size, None]
        agree += ref.T @ np.nan_to_num(rep)
    return agree


def align_by_posteriors(model: MixtureModel, data: Data, reference: Params,
                        replicate: Params, chunk_size: int = 4096) -> Params:
    """The replicate's parameters relabelled so that each class holds the rows the
    reference's class of the same number holds (most posterior agreement, Hungarian);
    the parameter distance decides only when the posteriors cannot (no rows)."""
    agree = posterior_agreement(model, data, reference, replicate, chunk_size)
    if not np.any(agree > 0):
        return align_params(model, reference, replicate)
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(-agree)
    perm = np.empty(agree.shape[0], dtype=int)
    perm[rows] = cols
    return model.permute(replicate, perm)
