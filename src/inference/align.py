"""Label switching: match a bootstrap replicate's classes to the estimate's.

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
from scipy.optimize import linear_sum_assignment

from ..models.base import MixtureModel, Params

__all__ = ["class_distance", "align_to", "align_params"]


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
    rows, cols = linear_sum_assignment(cost)
    perm = np.empty(cost.shape[0], dtype=int)
    perm[rows] = cols
    return perm


def align_params(model: MixtureModel, reference: Params, replicate: Params) -> Params:
    """The replicate's parameters relabelled to match the reference's classes."""
    return model.permute(replicate, align_to(reference, replicate))
