"""Standard errors from a finite-difference Hessian of the observed log-likelihood.

Same free parameterisation as Louis' method.  When the model has analytic complete scores,
the observed score is ``sum_i sum_k r_ik s_ik`` (Fisher's identity), so the Hessian is the
central difference of that gradient: 2P gradient evaluations, step ``eps^(1/3) u_j`` with
``u_j`` the parameter's natural scale (see :mod:`.derivatives`), then symmetrised.
Otherwise ``numdifftools.Hessian`` differences the log-likelihood itself (less its value at
the estimate, row by row, so its size never cancels), with Richardson extrapolation over
steps that start at ``u_j / 100`` (shrunk to stay in the space).

With row weights (``data[WEIGHT_KEY]``) both are of the weighted log-likelihood
sum_i w_i log p(y_i); the natural scales are the replicated data's (see
:mod:`.derivatives`).  :func:`observed_score_of_chunks` and :func:`loglik_of_chunks` are the
additive pieces (one partition's chunks each), for engines that hold the rows elsewhere.
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from typing import Iterable

from ..models.base import Data, MixtureModel, Params, split_weight
from . import derivatives as dv
from .results import SEResult, boundary_parameters, invert_information, wald_result
from ..utils.errors import ModelError
from ..utils.messages import t

__all__ = ["observed_score", "observed_score_of_chunks", "loglik_of_chunks", "numerical_hessian",
           "numerical_se"]


def observed_score(model: MixtureModel, data: Data, theta: np.ndarray, *,
                   chunk_size: int = 4096) -> np.ndarray:
    """Gradient of the (weighted) observed log-likelihood at free vector ``theta`` (Fisher's
    identity); over a row engine's partitions, added in partition order."""
    from ..estimation.em import is_engine

    if is_engine(data):
        g = np.zeros(theta.size)
        for part in data.map_partitions(_score_of_partition, model, theta):
            g = g + part
        return g
    return observed_score_of_chunks(model, dv.iter_chunks(data, chunk_size), theta)


def _score_of_partition(chunks: Iterable[Data], model: MixtureModel,
                        theta: np.ndarray) -> np.ndarray:
    return observed_score_of_chunks(model, chunks, theta)


def observed_score_of_chunks(model: MixtureModel, chunks: Iterable[Data],
                             theta: np.ndarray) -> np.ndarray:
    """sum_i w_i sum_k r_ik s_ik over ``chunks`` (w_i = 1 without weights): additive."""
    params = model.from_free(theta)
    g = np.zeros(theta.size)
    for chunk in chunks:
        chunk, w = split_weight(chunk)
        resp, _ = model.e_step(chunk, params)
        S = model.complete_score(chunk, params)
        S = np.where(resp[:, :, None] > 0, S, 0.0)
        g += np.einsum("nk,nkp->p", dv.weighted_resp(resp, w), S)
    return g


def loglik_of_chunks(model: MixtureModel, chunks: Iterable[Data], params: Params) -> float:
    """sum_i w_i log p(y_i) over ``chunks`` (w_i = 1 without weights): additive."""
    total = 0.0
    for chunk in chunks:
        chunk, w = split_weight(chunk)
        total += (model.loglik(chunk, params) if w is None
                  else float(w @ model.loglik_rows(chunk, params)))
    return total


def numerical_hessian(model: MixtureModel, data: Data, params: Params, *,
                      chunk_size: int = 4096,
                      skip: set[int] | frozenset = frozenset()) -> np.ndarray:
    """Hessian (P, P) of the (weighted) observed log-likelihood; NaN rows/columns for ``skip``."""
    theta = model.to_free(params)
    P = theta.size
    u = dv.natural_scales(model, data, params, chunk_size=chunk_size, skip=skip)
    H = np.full((P, P), np.nan)
    active = [j for j in range(P) if j not in skip]
    if dv.has_analytic_score(model, data, params):
        h = dv.feasible_steps(model, theta, dv.EPS ** (1 / 3) * u, factor=1.0, skip=skip)
        for j in active:
            e = np.zeros(P)
            e[j] = h[j]
            gp = observed_score(model, data, theta + e, chunk_size=chunk_size)
            gm = observed_score(model, data, theta - e, chunk_size=chunk_size)
            H[:, j] = (gp - gm) / (2.0 * h[j])
        H = 0.5 * (H + H.T)
    elif active:
        from ..estimation.em import is_engine
        if is_engine(data):
            raise ModelError(t("derivatives.partitioned_needs_analytic",
                               model=type(model).__name__))
        import numdifftools as nd
        idx = np.array(active)
        base = dv.feasible_steps(model, theta, 1e-2 * u, factor=2.0, skip=skip)[idx]

        rows, w = split_weight(data)
        ll0 = model.loglik_rows(rows, params)

        def loglik(sub: np.ndarray) -> float:
            """l(theta) - l(estimate), row by row before the sum (so the log-likelihood's
            size never cancels in the differences; a row of weight w counts w times)."""
            t = theta.copy()
            t[idx] = sub
            diff = model.loglik_rows(rows, model.from_free(t)) - ll0
            return float(diff.sum() if w is None else w @ diff)

        gen = nd.MaxStepGenerator(base_step=base, step_ratio=2.0, num_steps=8)
        H[np.ix_(idx, idx)] = nd.Hessian(loglik, step=gen)(theta[idx])
    for j in skip:
        H[j, :] = H[:, j] = np.nan
    return H


def numerical_se(model: MixtureModel, data: Data, params: Params, *,
                 chunk_size: int = 4096) -> SEResult:
    """Standard errors from the inverse of minus the numerical Hessian at the estimate."""
    with threadpool_limits(1):
        bnd = boundary_parameters(model, params)
        H = numerical_hessian(model, data, params, chunk_size=chunk_size, skip=set(bnd))
        cov, dropped = invert_information(-H, bnd)
    method = ("finite differences of analytic scores"
              if dv.has_analytic_score(model, data, params) else "numdifftools")
    return wald_result("numerical", model, params, cov, dropped,
                       extra={"hessian_method": method})
