"""Generic M-step and starting values for models without a closed-form M-step.

A user's model need only define ``log_joint``; this module derives the rest from its
:class:`~src.models.base.ParamSpec` declarations.  The class weights have their closed form
(mean responsibilities); every other parameter maximises the expected complete-data
log-likelihood ``Q = sum_ik resp_ik log p(y_i, z_i = k)`` numerically (L-BFGS-B) over an
unconstrained transform: identity for real entries, log for positive ones, log-Cholesky
for covariance matrices and a softmax (last category as reference) for probability rows.
The optimiser starts from the current parameters and its answer is kept only when it
does not lower Q, so EM stays monotone (a generalised EM step).  Such models hold the
N x K responsibilities in memory.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp

from src.models.base import Data, MixtureModel, Params, ParamSpec

__all__ = ["generic_em_map", "generic_init_params", "pack_unconstrained", "unpack_unconstrained"]


def _weight_spec(model: MixtureModel) -> ParamSpec | None:
    return next((s for s in model.param_specs() if s.constraint == "simplex"), None)


def _other_specs(model: MixtureModel) -> list[ParamSpec]:
    return [s for s in model.param_specs() if s.constraint != "simplex"]


def _to_u(spec: ParamSpec, v: np.ndarray) -> np.ndarray:
    """One class's value on the unconstrained scale (flat)."""
    if spec.constraint == "positive":
        return np.log(np.ravel(v))
    if spec.constraint == "covariance":
        L = np.linalg.cholesky(v)
        L[np.diag_indices_from(L)] = np.log(np.diag(L))
        return L[np.tril_indices(spec.shape[0])]
    if spec.constraint == "probability":
        out = []
        for j, s in enumerate(spec.sizes):
            p = np.clip(v[j, :s], 1e-300, None)
            out.append(np.log(p[: s - 1]) - np.log(p[s - 1]))
        return np.concatenate(out) if out else np.zeros(0)
    return np.ravel(v).astype(float)


def _n_u(spec: ParamSpec) -> int:
    if spec.constraint == "covariance":
        return spec.shape[0] * (spec.shape[0] + 1) // 2
    if spec.constraint == "probability":
        return int(sum(s - 1 for s in spec.sizes))
    return int(np.prod(spec.shape, dtype=int))


def _from_u(spec: ParamSpec, u: np.ndarray) -> np.ndarray:
    if spec.constraint == "positive":
        return np.exp(u).reshape(spec.shape)
    if spec.constraint == "covariance":
        D = spec.shape[0]
        L = np.zeros((D, D))
        L[np.tril_indices(D)] = u
        L[np.diag_indices(D)] = np.exp(np.diag(L))
        return L @ L.T
    if spec.constraint == "probability":
        out = np.zeros(spec.shape)
        pos = 0
        for j, s in enumerate(spec.sizes):
            logits = np.append(u[pos : pos + s - 1], 0.0)
            out[j, :s] = np.exp(logits - logsumexp(logits))
            pos += s - 1
        return out
    return np.asarray(u, dtype=float).reshape(spec.shape)


def pack_unconstrained(model: MixtureModel, params: Params) -> np.ndarray:
    """Unconstrained vector of every non-weight parameter, spec by spec, class by class."""
    parts = [_to_u(s, np.asarray(params[s.name], dtype=float)[k])
             for s in _other_specs(model) for k in range(model.n_components)]
    return np.concatenate(parts) if parts else np.zeros(0)


def unpack_unconstrained(model: MixtureModel, u: np.ndarray) -> Params:
    """Inverse of :func:`pack_unconstrained` (without the weights)."""
    out: Params = {}
    pos = 0
    for s in _other_specs(model):
        arr = np.zeros((model.n_components,) + tuple(s.shape))
        for k in range(model.n_components):
            n = _n_u(s)
            arr[k] = _from_u(s, u[pos : pos + n])
            pos += n
        out[s.name] = arr
    return out


def _default_u(model: MixtureModel) -> np.ndarray:
    """A neutral point: real 0, positive 1, identity covariance, uniform probabilities."""
    return np.zeros(sum(_n_u(s) for s in _other_specs(model)) * model.n_components)


def _maximise_q(model: MixtureModel, data: Data, resp: np.ndarray, weights: np.ndarray | None,
                u0: np.ndarray) -> Params:
    """Parameters maximising Q(resp) over the non-weight parameters, started at ``u0``."""
    wspec = _weight_spec(model)
    n = resp.shape[0]

    def assemble(u: np.ndarray) -> Params:
        p = unpack_unconstrained(model, u)
        if wspec is not None:
            p[wspec.name] = weights
        return p

    def negq(u: np.ndarray) -> float:
        with np.errstate(all="ignore"):
            lj = model.log_joint(data, assemble(u))
            val = -float(np.sum(resp * np.where(resp > 0, lj, 0.0))) / n
        return val if np.isfinite(val) else np.inf

    f0 = negq(u0)
    best = u0
    if u0.size:
        res = minimize(negq, u0, method="L-BFGS-B", jac="3-point",
                       options={"maxiter": 500, "ftol": 1e-15, "gtol": 1e-10})
        if np.all(np.isfinite(res.x)) and (res.fun <= f0 or not np.isfinite(f0)):
            best = res.x
    return assemble(best)


def generic_em_map(model: MixtureModel, data: Data, params: Params) -> tuple[Params, float]:
    """One EM-map evaluation: ``(M(params), loglik(params))`` without a closed form."""
    lj = model.log_joint(data, params)
    lse = logsumexp(lj, axis=1)
    resp = np.exp(lj - lse[:, None])
    weights = resp.sum(axis=0) / resp.shape[0]
    new = _maximise_q(model, data, resp, weights, pack_unconstrained(model, params))
    return new, float(lse.sum())


def generic_init_params(model: MixtureModel, data: Data, rng: np.random.Generator) -> Params:
    """Random soft responsibilities (Dirichlet), then the generic M-step from a neutral point."""
    n = next(iter(data.values())).shape[0]
    resp = rng.dirichlet(np.ones(model.n_components), size=n)
    weights = resp.sum(axis=0) / n
    return _maximise_q(model, data, resp, weights, _default_u(model))
