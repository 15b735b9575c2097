"""Complete-data score and information: the model's closed forms, else finite differences.

Every derivative is taken in the free parameterisation of :meth:`MixtureModel.to_free`.
Numerical derivatives difference ``model.log_joint`` through ``from_free``; their step for
free parameter j is a fixed fraction of its *natural scale* ``u_j = sqrt(N / I_c,jj)`` (the
spread of one observation's information: sigma/sqrt(w) for a mean, sqrt(p(1-p)/w) for a
probability), shrunk until the perturbed point stays in the parameter space.  So steps
suit data on any scale without tuning.

Row weights (``data[WEIGHT_KEY]``, :func:`src.models.base.split_weight`) multiply every
per-row term: the information sums ``w_i r_ik (-H_ik)``, N is the sum of the weights (so the
natural scales, and the steps, are those of the data with each row replicated ``w_i``
times), and the model's methods get the rows without the key.  Per-row scores are per row
(unweighted): callers weight them.

*Precision.*  A difference's rounding error (eps |log_joint| / h per row for a score,
/ h^2 for the information) changes with the last bits of the point, so two estimates equal
to 1e-13 (weighted rows and the rows they stand for, fitted separately) would get standard
errors differing by that error, amplified by the fraction of missing information.  So every
difference is combined row by row before the sum over rows (weights and responsibilities
applied after), differences are of higher order (Richardson's combinations of central
differences at h, 2h, 3h: :data:`RICHARDSON`) so that larger steps keep the truncation
small, and steps are powers of two (the same for scales equal to rounding).  Louis' method
takes scores of order 4 (steps eps^(1/5) u) and the information of order 6 (steps
eps^(1/7) u): weighted = replicated to ~3e-11 where the old three-point ones reached 1e-8.

*Separable classes.*  When column k of ``log_joint`` depends only on class k's parameters
(and the shared class weights), checked bitwise at the estimate (:func:`difference_groups`),
one difference moves the a-th entry of every class at once and column k is read as class
k's: a score or information costs as much as for one class (K times fewer evaluations for
the score, K^2 for the information).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np

from ..models.base import Data, MixtureModel, Params, split_weight
from ..models.parameterisation import columns_separate
from ..utils.errors import ModelError
from ..utils.messages import register, t

register({
    "derivatives.partitioned_needs_analytic": {
        "en": "Model {model} has no analytic complete-data information, which standard errors on "
              "partitioned input need (numerical derivatives need every row in memory); give a "
              "single file without --stream, or use --se-method louis or bootstrap.",
        "zh": "模型 {model} 没有解析的完全数据信息矩阵，而分区输入上的标准误需要它（数值导数需要全部数据在内存中）；"
              "请改用单个文件且不加 --stream，或使用 --se-method louis 或 bootstrap。"},
})

__all__ = ["complete_score", "complete_information", "natural_scales", "feasible_steps",
           "difference_steps", "DifferenceGroups", "difference_groups", "single_groups",
           "iter_chunks", "n_rows", "has_analytic_score", "weighted_resp", "total_weight",
           "head_rows", "EPS", "SCORE_STEP", "HESSIAN_STEP"]

EPS = float(np.finfo(float).eps)


def n_rows(data: Data) -> int:
    return int(next(iter(data.values())).shape[0])


def total_weight(data: Data) -> float:
    """The number of rows the data stand for: the sum of the row weights, else the rows."""
    _, w = split_weight(data)
    return float(n_rows(data)) if w is None else float(w.sum())


def weighted_resp(resp: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    """``resp * w[:, None]`` (``resp`` itself when unweighted)."""
    return resp if w is None else resp * w[:, None]


def iter_chunks(data: Data, chunk_size: int) -> Iterator[Data]:
    """Consecutive row slices of every array (memory bounded by ``chunk_size``)."""
    n = n_rows(data)
    step = max(int(chunk_size), 1)
    for start in range(0, n, step):
        yield {k: v[start:start + step] for k, v in data.items()}


def _head(chunks: Iterable[Data]) -> Data | None:
    """The first few rows of a partition, or None when it keeps none (a row engine maps it)."""
    for chunk in chunks:
        return {k: np.asarray(v)[:8] for k, v in chunk.items()}
    return None


def head_rows(data: Any) -> Data:
    """A few rows of ``data``: itself when in memory, else those of the first partition of
    the row engine (:mod:`src.estimation.engines`) that keeps any."""
    from ..estimation.em import is_engine

    if not is_engine(data):
        return data
    return next(h for h in data.map_partitions(_head) if h is not None)


def _information_diagonal(chunks: Iterable[Data], model: MixtureModel,
                          params: Params) -> np.ndarray | None:
    """The diagonal of the (weighted) complete information summed over ``chunks``, or None
    when the model has no analytic one."""
    diag = None
    for chunk in chunks:
        chunk, w = split_weight(chunk)
        resp, _ = model.e_step(chunk, params)
        info = model.complete_information(chunk, params, weighted_resp(resp, w))
        if info is None:
            return None
        diag = np.diag(info).copy() if diag is None else diag + np.diag(info)
    return diag


def has_analytic_score(model: MixtureModel, data: Data, params: Params) -> bool:
    """True when the model's ``complete_score`` returns an array (tried on one row)."""
    one = {k: v[:1] for k, v in split_weight(head_rows(data))[0].items()}
    return model.complete_score(one, params) is not None


def feasible_steps(model: MixtureModel, theta: np.ndarray, steps: np.ndarray,
                   factor: float = 2.0, skip: set[int] | frozenset = frozenset()) -> np.ndarray:
    """Halve each step until ``theta +- factor * step`` along its axis is in the space."""
    h = np.array(steps, dtype=float)
    for j in range(theta.size):
        if j in skip:
            continue
        for _ in range(60):
            ok = True
            for sign in (1.0, -1.0):
                t = theta.copy()
                t[j] += sign * factor * h[j]
                if not model.in_parameter_space(model.from_free(t)):
                    ok = False
                    break
            if ok:
                break
            h[j] *= 0.5
    return h


@dataclass(frozen=True)
class DifferenceGroups:
    """Which free entries one finite difference moves together (module doc, *Separable
    classes*).

    ``seen[g, k]``: the entry of group g whose move column k of ``log_joint`` feels (-1:
    none).  Without separability every group is one entry, felt by every column; with it,
    group g moves the g-th entry of every class at once (column k feels its own class's)
    and each class weight is a group of its own (every column feels it).
    """

    seen: np.ndarray
    n_free: int
    separable: bool

    def __len__(self) -> int:
        return int(self.seen.shape[0])

    def entries(self, g: int) -> np.ndarray:
        """The distinct entries group ``g`` moves."""
        row = self.seen[g]
        return np.unique(row[row >= 0])

    def move(self, g: int, steps: np.ndarray) -> np.ndarray:
        """The displacement (P,) moving group ``g``'s entries by their ``steps``."""
        e = np.zeros(self.n_free)
        idx = self.entries(g)
        e[idx] = steps[idx]
        return e


def single_groups(n_free: int, n_components: int,
                  skip: set[int] | frozenset = frozenset()) -> DifferenceGroups:
    """One group per free entry not in ``skip``, felt by every column (no separability)."""
    entries = [j for j in range(n_free) if j not in skip]
    seen = np.repeat(np.array(entries, dtype=int)[:, None], n_components, axis=1)
    return DifferenceGroups(seen.reshape(len(entries), n_components), n_free, False)


def _class_owners(model: MixtureModel, P: int) -> np.ndarray | None:
    """Each free entry's class (-1: shared), when the model keeps the generic free vector."""
    if type(model).to_free is not MixtureModel.to_free \
            or type(model).from_free is not MixtureModel.from_free:
        return None
    owner = model.parameterisation().free_classes()
    return owner if owner.size == P else None


def difference_groups(model: MixtureModel, data: Data, params: Params, *,
                      skip: set[int] | frozenset = frozenset()) -> DifferenceGroups:
    """The groups of :class:`DifferenceGroups` for ``model`` at ``params``: separable when
    moving all of class k's free entries (1e-3 of max(|theta_j|, 1), kept in the parameter
    space) leaves every other column of ``log_joint`` bitwise unchanged on the rows of
    ``data``, for every k (K + 1 evaluations); one entry per group otherwise.  Entries in
    ``skip`` are moved by no group."""
    rows, _ = split_weight(data)
    theta = model.to_free(params)
    P, K = theta.size, model.n_components
    owner = _class_owners(model, P)
    if owner is None or K < 2 or not np.any(owner >= 0):
        return single_groups(P, K, skip)
    steps = feasible_steps(model, theta, 1e-3 * np.maximum(np.abs(theta), 1.0), factor=2.0,
                           skip=skip)
    if not columns_separate(lambda x: model.log_joint(rows, model.from_free(x)), owner, theta,
                            steps, skip=tuple(skip)):
        return single_groups(P, K, skip)
    shared = [j for j in np.flatnonzero(owner < 0) if j not in skip]
    seen = [np.full(K, j) for j in shared]
    per_class = [np.flatnonzero(owner == k) for k in range(K)]
    for a in range(max(c.size for c in per_class)):
        row = np.array([c[a] if a < c.size and c[a] not in skip else -1 for c in per_class])
        if np.any(row >= 0):
            seen.append(row)
    return DifferenceGroups(np.array(seen, dtype=int).reshape(len(seen), K), P, True)


class _Rows:
    """``log_joint`` of one block of rows around ``theta`` and its row-wise differences read
    per class: a combination of values is formed row by row before any sum over rows."""

    def __init__(self, model: MixtureModel, rows: Data, theta: np.ndarray) -> None:
        self.model, self.rows, self.theta = model, rows, theta

    def at(self, d: np.ndarray) -> np.ndarray:
        return self.model.log_joint(self.rows, self.model.from_free(self.theta + d))


def _column_sums(resp: np.ndarray, d: np.ndarray) -> np.ndarray:
    """sum_i resp_ik d_ik per class (K,), zero-responsibility terms left out (0 * inf)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return np.einsum("nk,nk->k", resp, np.where(resp > 0, d, 0.0))


def _add_pairs(H: np.ndarray, a: np.ndarray, b: np.ndarray, values: np.ndarray) -> None:
    """H[a_k, b_k] (and H[b_k, a_k]) += values_k where both entries exist."""
    ok = (a >= 0) & (b >= 0)
    np.add.at(H, (a[ok], b[ok]), values[ok])
    off = ok & (a != b)
    np.add.at(H, (b[off], a[off]), values[off])


#: Richardson's weights of a central difference at steps s * h (error even in s h): the
#: combination of differences of ``order`` 2, 4 or 6
RICHARDSON = {2: ((1.0, 1.0),), 4: ((1.0, 4.0 / 3.0), (2.0, -1.0 / 3.0)),
              6: ((1.0, 1.5), (2.0, -0.6), (3.0, 0.1))}


def _check_order(order: int) -> None:
    if order not in RICHARDSON:
        raise ValueError(f"order must be one of {sorted(RICHARDSON)}, got {order!r}")


def _first_difference(f: _Rows, ea: np.ndarray, order: int) -> np.ndarray:
    """Row-wise h f' along ``ea`` (without the division by h)."""
    out = 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        for s, c in RICHARDSON[order]:
            out = out + (c / (2.0 * s)) * (f.at(s * ea) - f.at(-s * ea))
    return out


def _second_difference(f: _Rows, ea: np.ndarray, l0: np.ndarray, order: int) -> np.ndarray:
    """Row-wise h^2 f'' along ``ea`` (without the division by h^2)."""
    out = 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        for s, c in RICHARDSON[order]:
            out = out + (c / (s * s)) * ((f.at(s * ea) - l0) + (f.at(-s * ea) - l0))
    return out


def _crude_diagonal(model: MixtureModel, data: Data, params: Params, theta: np.ndarray,
                    h: np.ndarray, which: list[int], chunk_size: int,
                    groups: DifferenceGroups) -> np.ndarray:
    """-d2 Q / d theta_j2 for j in ``which`` by second differences with steps ``h`` (else 0)."""
    diag = np.zeros(theta.size)
    todo = [g for g in range(len(groups)) if np.isin(groups.entries(g), which).any()]
    for chunk in iter_chunks(data, chunk_size):
        chunk, w = split_weight(chunk)
        resp = weighted_resp(model.e_step(chunk, params)[0], w)
        f = _Rows(model, chunk, theta)
        l0 = f.at(np.zeros(theta.size))
        for g in todo:
            seen = groups.seen[g]
            cols = _column_sums(resp, _second_difference(f, groups.move(g, h), l0, 2))
            ok = seen >= 0
            np.add.at(diag, seen[ok], -cols[ok] / h[seen[ok]] ** 2)
    return diag


#: crude steps are 1e-4 of the natural scale they find; one within 10x of that is kept
_CRUDE, _ROUNDS = 1e-4, 8


def natural_scales(model: MixtureModel, data: Data, params: Params, *, chunk_size: int = 4096,
                   skip: set[int] | frozenset = frozenset(),
                   groups: DifferenceGroups | None = None) -> np.ndarray:
    """``u_j = sqrt(N / I_c,jj)``: each free parameter's natural scale (see module doc).

    I_c's diagonal comes from the model's analytic complete information when it has one,
    otherwise from crude second differences of Q, which are accurate enough for a scale.
    Their first step, 1e-4 * max(|theta_j|, 1), can be far off the parameter's scale (a
    mean near 0 of data in units of 1e6: the difference is lost in rounding), so the step
    is redone at 1e-4 of the scale found (grown 1000x where the curvature came out <= 0)
    until it is within 10x of that, at most 8 rounds: the scale then does not depend on
    the data's units.  Falls back to max(|theta_j|, 1) where the diagonal is not positive.
    With row weights N is their sum and I_c weighted (the replicated data's scales).
    ``groups``: the entries each difference moves (:func:`difference_groups`; default one
    entry each).
    """
    from ..estimation.em import is_engine, n_observations

    theta = model.to_free(params)
    P = theta.size
    if is_engine(data):   # rows in partitions: the analytic diagonal, summed in partition order
        parts = data.map_partitions(_information_diagonal, model, params)
        if any(p is None for p in parts):
            raise ModelError(t("derivatives.partitioned_needs_analytic", model=type(model).__name__))
        diag = np.zeros(P)
        for part in parts:
            diag = diag + part
        N = float(n_observations(data))
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.sqrt(N / diag)
        return np.where(np.isfinite(u) & (diag > 0), u, np.maximum(np.abs(theta), 1.0))
    N = total_weight(data)
    diag = np.zeros(P)
    analytic = True
    for chunk in iter_chunks(data, chunk_size):
        chunk, w = split_weight(chunk)
        resp, _ = model.e_step(chunk, params)
        info = model.complete_information(chunk, params, weighted_resp(resp, w))
        if info is None:
            analytic = False
            break
        diag += np.diag(info)
    if not analytic:
        h = feasible_steps(model, theta, _CRUDE * np.maximum(np.abs(theta), 1.0), factor=1.0,
                           skip=skip)
        which = [j for j in range(P) if j not in skip]
        for _ in range(_ROUNDS):
            part = _crude_diagonal(model, data, params, theta, h, which, chunk_size,
                                   groups or single_groups(P, model.n_components, skip))
            diag[which] = part[which]
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                target = np.where(diag > 0, _CRUDE * np.sqrt(N / diag), 1e3 * h)
            which = [j for j in which
                     if np.isfinite(target[j]) and not 0.1 <= target[j] / h[j] <= 10.0]
            if not which:
                break
            new = h.copy()
            new[which] = target[which]
            new = feasible_steps(model, theta, new, factor=1.0, skip=skip)
            which = [j for j in which if new[j] != h[j]]  # shrunk back: nothing more to learn
            h = new
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.sqrt(N / diag)
    fallback = np.maximum(np.abs(theta), 1.0)
    return np.where(np.isfinite(u) & (diag > 0), u, fallback)


#: step fractions of the natural scales: the 5-point score's (rounding eps / h and
#: truncation h^4 balance at eps^(1/5)) and the 5-point / 8-point information's (eps / h^2
#: and h^4 at eps^(1/6)); the 3-point ones of order 2
SCORE_STEP = {2: EPS ** (1 / 3), 4: EPS ** (1 / 5), 6: EPS ** (1 / 7)}
HESSIAN_STEP = {2: EPS ** (1 / 4), 4: EPS ** (1 / 6), 6: EPS ** (1 / 7)}
#: the orders Louis' method takes (src/inference/louis.py)
SCORE_ORDER, HESSIAN_ORDER = 4, 6


def difference_steps(model: MixtureModel, theta: np.ndarray, scales: np.ndarray, fraction: float,
                     order: int, skip: set[int] | frozenset = frozenset()) -> np.ndarray:
    """``fraction * scales`` rounded to the nearest power of two, then halved until every
    point a difference of ``order`` visits along one axis (+-h, +-2h, +-3h) is in the
    parameter space; entries in ``skip`` get max(|theta_j|, 1) (never used: their columns
    are discarded).  Powers of two make the steps of data whose scales differ by rounding
    (weighted rows and the rows they stand for) the same, and so their rounding errors."""
    _check_order(order)
    h = fraction * np.asarray(scales, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        rounded = np.exp2(np.round(np.log2(h)))
    h = np.where(np.isfinite(rounded) & (rounded > 0), rounded, h)
    h = feasible_steps(model, theta, h, factor=RICHARDSON[order][-1][0], skip=skip)
    for j in skip:
        h[j] = max(abs(theta[j]), 1.0)
    return h


def complete_score(model: MixtureModel, data: Data, params: Params,
                   steps: np.ndarray | None = None, *, order: int = 2,
                   groups: DifferenceGroups | None = None) -> np.ndarray:
    """d log p(y_i, z_i=k) / d theta_free, array of shape (n, K, P).

    The model's closed form when it returns one; otherwise central differences of
    ``log_joint`` of ``order`` 2 (3 points) or 4 (5 points: ``steps`` must keep +-2h in the
    space, :func:`difference_steps`) with ``steps`` (default: ``SCORE_STEP[order]`` times
    the natural scales of ``data``), moving the entries of each of ``groups`` together
    (default: one entry each).  Row weights in ``data`` are ignored (the scores are per
    row); they only set the scales.
    """
    _check_order(order)
    rows, _ = split_weight(data)
    s = model.complete_score(rows, params)
    if s is not None:
        return np.asarray(s, dtype=float)
    theta = model.to_free(params)
    K = model.n_components
    if groups is None:
        groups = single_groups(theta.size, K)
    if steps is None:
        steps = difference_steps(model, theta, natural_scales(model, data, params, groups=groups),
                                 SCORE_STEP[order], order)
    f = _Rows(model, rows, theta)
    out = np.zeros((n_rows(rows), K, theta.size))
    cols = np.arange(K)
    for g in range(len(groups)):
        e = groups.move(g, steps)
        d = _first_difference(f, e, order)
        seen = groups.seen[g]
        ok = seen >= 0
        with np.errstate(invalid="ignore", over="ignore"):
            out[:, cols[ok], seen[ok]] = d[:, ok] / steps[seen[ok]]
    return out


def complete_information(model: MixtureModel, data: Data, params: Params, resp: np.ndarray,
                         steps: np.ndarray | None = None, *, order: int = 4,
                         groups: DifferenceGroups | None = None) -> np.ndarray:
    """sum_ik resp_ik * (-d2 log p(y_i, z_i=k) / d theta d theta'), shape (P, P).

    The model's closed form when it returns one; otherwise minus the Hessian of
    Q(theta) = sum_ik resp_ik log_joint_ik(theta) with ``resp`` fixed, by central second
    differences of ``order`` 2, 4 or 6 (:data:`RICHARDSON`; ``steps`` must keep the points
    in the space, :func:`difference_steps`) along each axis and along each pair of axes
    (h_a e_a + h_b e_b gives h_a^2 H_aa + 2 h_a h_b H_ab + h_b^2 H_bb), with
    ``steps`` (default: ``HESSIAN_STEP[order]`` times the natural scales), each difference
    formed row by row before the sum and the entries of each of ``groups`` moved together
    (default: one entry each).  Row weights in ``data`` multiply ``resp`` after the
    differences (sum_ik w_i resp_ik (-H_ik)).
    """
    _check_order(order)
    rows, w = split_weight(data)
    resp = weighted_resp(np.asarray(resp, dtype=float), w)
    info = model.complete_information(rows, params, resp)
    if info is not None:
        return np.asarray(info, dtype=float)
    theta = model.to_free(params)
    P = theta.size
    if groups is None:
        groups = single_groups(P, model.n_components)
    if steps is None:
        steps = difference_steps(model, theta, natural_scales(model, data, params, groups=groups),
                                 HESSIAN_STEP[order], order)
    f = _Rows(model, rows, theta)
    l0 = f.at(np.zeros(P))
    H = np.zeros((P, P))
    moves = [groups.move(g, steps) for g in range(len(groups))]
    along = []   # row-wise h_a^2 f_aa of each group
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        for a in range(len(groups)):
            sa = groups.seen[a]
            along.append(_second_difference(f, moves[a], l0, order))
            _add_pairs(H, sa, sa, _column_sums(resp, along[a]) / steps[sa] ** 2)
            for b in range(a):   # along h_a e_a + h_b e_b: h_a^2 f_aa + 2 h_a h_b f_ab + h_b^2 f_bb
                sb = groups.seen[b]
                d = 0.5 * (_second_difference(f, moves[a] + moves[b], l0, order)
                           - along[a] - along[b])
                _add_pairs(H, sa, sb, _column_sums(resp, d) / (steps[sa] * steps[sb]))
    return -H
