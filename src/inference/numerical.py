"""Standard errors from a finite-difference Hessian of the observed log-likelihood.

Same free parameterisation as Louis' method.  When the model has analytic complete scores,
the observed score is ``sum_i sum_k r_ik s_ik`` (Fisher's identity), so the Hessian is the
central difference of that gradient: 2P gradient evaluations, step ``eps^(1/3) u_j`` with
``u_j`` the parameter's natural scale (see :mod:`.derivatives`), then symmetrised.
Otherwise ``numdifftools.Hessian`` differences the log-likelihood itself, with Richardson
extrapolation over steps that start at ``u_j / 100`` (shrunk to stay in the space).
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from ..models.base import Data, MixtureModel, Params
from . import derivatives as dv
from .results import SEResult, boundary_parameters, invert_information, wald_result

__all__ = ["observed_score", "numerical_hessian", "numerical_se"]


def observed_score(model: MixtureModel, data: Data, theta: np.ndarray, *,
                   chunk_size: int = 4096) -> np.ndarray:
    """Gradient of the observed log-likelihood at free vector ``theta`` (Fisher's identity)."""
    params = model.from_free(theta)
    g = np.zeros(theta.size)
    for chunk in dv.iter_chunks(data, chunk_size):
        resp, _ = model.e_step(chunk, params)
        S = model.complete_score(chunk, params)
        S = np.where(resp[:, :, None] > 0, S, 0.0)
        g += np.einsum("nk,nkp->p", resp, S)
    return g


def numerical_hessian(model: MixtureModel, data: Data, params: Params, *,
                      chunk_size: int = 4096,
                      skip: set[int] | frozenset = frozenset()) -> np.ndarray:
    """Hessian (P, P) of the observed log-likelihood; NaN rows/columns for ``skip``."""
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
        import numdifftools as nd
        idx = np.array(active)
        base = dv.feasible_steps(model, theta, 1e-2 * u, factor=2.0, skip=skip)[idx]

        def loglik(sub: np.ndarray) -> float:
            t = theta.copy()
            t[idx] = sub
            return model.loglik(data, model.from_free(t))

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
