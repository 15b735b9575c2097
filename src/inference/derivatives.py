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
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import numpy as np

from ..models.base import Data, MixtureModel, Params, split_weight
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
           "iter_chunks", "n_rows", "has_analytic_score", "weighted_resp", "total_weight",
           "head_rows", "EPS"]

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


def _q_value(model: MixtureModel, data: Data, theta: np.ndarray, resp: np.ndarray) -> float:
    """Q(theta) = sum_ik resp_ik log p(y_i, z_i=k | theta) with resp held fixed (``data``
    without weights: weighted rows come as weighted ``resp``)."""
    lj = model.log_joint(data, model.from_free(theta))
    mask = resp > 0  # 0 * (-inf) would be NaN; such terms contribute nothing
    return float(np.sum(resp[mask] * lj[mask]))


def _q_difference(resp: np.ndarray, terms: list[tuple[float, np.ndarray]]) -> float:
    """sum_ik resp_ik (sum_t c_t lj_t,ik): a finite difference of Q taken row by row before
    the sum, so Q's size never cancels (a row's difference is the same whatever rows come
    with it: a row of weight w gives w times a row's, to rounding of the sum only)."""
    mask = resp > 0  # 0 * (-inf) would be NaN; such terms contribute nothing
    with np.errstate(invalid="ignore"):
        d = sum(c * lj for c, lj in terms)
    return float(np.sum(resp[mask] * d[mask]))


def _crude_diagonal(model: MixtureModel, data: Data, params: Params, theta: np.ndarray,
                    h: np.ndarray, which: list[int], chunk_size: int) -> np.ndarray:
    """-d2 Q / d theta_j2 for j in ``which`` by second differences with steps ``h`` (else 0)."""
    diag = np.zeros(theta.size)
    for chunk in iter_chunks(data, chunk_size):
        chunk, w = split_weight(chunk)
        resp, _ = model.e_step(chunk, params)
        resp = weighted_resp(resp, w)
        l0 = model.log_joint(chunk, model.from_free(theta))
        for j in which:
            e = np.zeros(theta.size)
            e[j] = h[j]
            lp = model.log_joint(chunk, model.from_free(theta + e))
            lm = model.log_joint(chunk, model.from_free(theta - e))
            diag[j] -= _q_difference(resp, [(1.0, lp), (-2.0, l0), (1.0, lm)]) / h[j] ** 2
    return diag


#: crude steps are 1e-4 of the natural scale they find; one within 10x of that is kept
_CRUDE, _ROUNDS = 1e-4, 8


def natural_scales(model: MixtureModel, data: Data, params: Params, *, chunk_size: int = 4096,
                   skip: set[int] | frozenset = frozenset()) -> np.ndarray:
    """``u_j = sqrt(N / I_c,jj)``: each free parameter's natural scale (see module doc).

    I_c's diagonal comes from the model's analytic complete information when it has one,
    otherwise from crude second differences of Q, which are accurate enough for a scale.
    Their first step, 1e-4 * max(|theta_j|, 1), can be far off the parameter's scale (a
    mean near 0 of data in units of 1e6: the difference is lost in rounding), so the step
    is redone at 1e-4 of the scale found (grown 1000x where the curvature came out <= 0)
    until it is within 10x of that, at most 8 rounds: the scale then does not depend on
    the data's units.  Falls back to max(|theta_j|, 1) where the diagonal is not positive.
    With row weights N is their sum and I_c weighted (the replicated data's scales).
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
            part = _crude_diagonal(model, data, params, theta, h, which, chunk_size)
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


def complete_score(model: MixtureModel, data: Data, params: Params,
                   steps: np.ndarray | None = None) -> np.ndarray:
    """d log p(y_i, z_i=k) / d theta_free, array of shape (n, K, P).

    The model's closed form when it returns one; otherwise central differences of
    ``log_joint`` with ``steps`` (default: eps^(1/3) times the natural scales of ``data``).
    Row weights in ``data`` are ignored (the scores are per row); they only set the scales.
    """
    rows, _ = split_weight(data)
    s = model.complete_score(rows, params)
    if s is not None:
        return np.asarray(s, dtype=float)
    theta = model.to_free(params)
    if steps is None:
        steps = feasible_steps(model, theta,
                               EPS ** (1 / 3) * natural_scales(model, data, params), factor=1.0)
    n = n_rows(rows)
    out = np.empty((n, model.n_components, theta.size))
    for j in range(theta.size):
        e = np.zeros(theta.size)
        e[j] = steps[j]
        lp = model.log_joint(rows, model.from_free(theta + e))
        lm = model.log_joint(rows, model.from_free(theta - e))
        with np.errstate(invalid="ignore"):
            out[:, :, j] = (lp - lm) / (2.0 * steps[j])
    return out


def complete_information(model: MixtureModel, data: Data, params: Params, resp: np.ndarray,
                         steps: np.ndarray | None = None) -> np.ndarray:
    """sum_ik resp_ik * (-d2 log p(y_i, z_i=k) / d theta d theta'), shape (P, P).

    The model's closed form when it returns one; otherwise minus the central-difference
    Hessian of Q(theta) = sum_ik resp_ik log_joint_ik(theta) with ``resp`` fixed, with
    ``steps`` (default: eps^(1/4) times the natural scales), each difference taken row by
    row before the sum (:func:`_q_difference`).  Row weights in ``data`` multiply ``resp``
    (sum_ik w_i resp_ik (-H_ik)).
    """
    rows, w = split_weight(data)
    resp = weighted_resp(np.asarray(resp, dtype=float), w)
    info = model.complete_information(rows, params, resp)
    if info is not None:
        return np.asarray(info, dtype=float)
    theta = model.to_free(params)
    P = theta.size
    if steps is None:
        steps = feasible_steps(model, theta,
                               EPS ** (1 / 4) * natural_scales(model, data, params), factor=1.0)

    def lj(t: np.ndarray) -> np.ndarray:
        return model.log_joint(rows, model.from_free(t))

    l0 = lj(theta)
    H = np.empty((P, P))
    E = np.diag(steps)
    for j in range(P):
        H[j, j] = _q_difference(resp, [(1.0, lj(theta + E[j])), (-2.0, l0),
                                       (1.0, lj(theta - E[j]))]) / steps[j] ** 2
        for k in range(j):
            v = _q_difference(resp, [(1.0, lj(theta + E[j] + E[k])), (-1.0, lj(theta + E[j] - E[k])),
                                     (-1.0, lj(theta - E[j] + E[k])), (1.0, lj(theta - E[j] - E[k]))]
                              ) / (4.0 * steps[j] * steps[k])
            H[j, k] = H[k, j] = v
    return -H
