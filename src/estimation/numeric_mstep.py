"""Generic M-step and starting values for models without a closed-form M-step.

A user's model need only define ``log_joint``; this module derives the rest from its
:class:`~src.models.base.ParamSpec` declarations.  The class weights have their closed form
(mean responsibilities); every other parameter maximises the expected complete-data
log-likelihood ``Q = sum_ik resp_ik log p(y_i, z_i = k)`` numerically (L-BFGS-B) over the
unconstrained view of :class:`src.models.parameterisation.FreeParameterisation`: identity
for real entries, log for positive ones, log-Cholesky for covariance matrices and a softmax
(last category as reference) for probability rows.
The optimiser starts from the current parameters and its answer is kept only when it
does not lower Q, so EM stays monotone (a generalised EM step).  Such models hold the
N x K responsibilities in memory.  With row weights ``w`` (a row standing for ``w_i``
identical rows) Q and the class weights use ``w_i * resp_ik``, so integer weights maximise
the replicated rows' Q.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp

from src.models import checks
from src.models.base import Data, MixtureModel, Params, ParamSpec

__all__ = ["generic_em_map", "generic_init_params", "generic_params_from_resp"]


def _weight_spec(model: MixtureModel) -> ParamSpec | None:
    return next((s for s in model.param_specs() if s.constraint == "simplex"), None)


def _maximise_q(model: MixtureModel, data: Data, resp: np.ndarray, weights: np.ndarray | None,
                u0: np.ndarray, row_weights: np.ndarray | None = None) -> Params:
    """Parameters maximising Q(resp) over the non-weight parameters, started at ``u0``.

    ``weights``: the class weights; ``resp``: already multiplied by the ``row_weights``
    (whose sum scales Q as the number of rows does without them)."""
    wspec = _weight_spec(model)
    free = model.parameterisation()
    n = resp.shape[0]

    def assemble(u: np.ndarray) -> Params:
        p = free.from_unconstrained(u)
        if wspec is not None:
            p[wspec.name] = weights
        return p

    total = n if row_weights is None else float(row_weights.sum())

    def negq(u: np.ndarray) -> float:
        with np.errstate(all="ignore"):
            lj = model.log_joint(data, assemble(u))
            val = -float(np.sum(resp * np.where(resp > 0, lj, 0.0))) / total
        return val if np.isfinite(val) else np.inf

    f0 = negq(u0)
    best = u0
    if u0.size:
        with np.errstate(all="ignore"):  # inf - inf in finite differences at impossible points
            res = minimize(negq, u0, method="L-BFGS-B", jac="3-point",
                           options={"maxiter": 500, "ftol": 1e-15, "gtol": 1e-10})
        if np.all(np.isfinite(res.x)) and (res.fun <= f0 or not np.isfinite(f0)):
            best = res.x
    return assemble(best)


def generic_em_map(model: MixtureModel, data: Data, params: Params,
                   check: bool = False, weights: np.ndarray | None = None) -> tuple[Params, float]:
    """One EM-map evaluation: ``(M(params), loglik(params))`` without a closed form.

    ``check``: first evaluation of a start; ``log_joint``'s values are checked
    (:func:`src.models.checks.check_log_joint`) before they are used.  ``weights``: row
    weights (``data`` without the weight key): the weighted Q and log-likelihood.
    """
    lj = model.log_joint(data, params)
    if check:
        checks.check_log_joint(model, lj, next(iter(data.values())).shape[0])
    lse = logsumexp(lj, axis=1)
    resp = np.exp(lj - lse[:, None])
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64)
        resp = resp * w[:, None]
        class_weights = resp.sum(axis=0) / float(w.sum())
        ll = float(w @ lse)
    else:
        class_weights = resp.sum(axis=0) / resp.shape[0]
        ll = float(lse.sum())
    new = _maximise_q(model, data, resp, class_weights,
                      model.parameterisation().to_unconstrained(params), weights)
    return new, ll


def generic_init_params(model: MixtureModel, data: Data, rng: np.random.Generator) -> Params:
    """Random soft responsibilities (Dirichlet), then the generic M-step from a neutral point.

    The neutral point (real 0, positive 1, identity covariance, uniform probabilities) is
    unconstrained 0.  ``log_joint``'s type and shape are checked there once (its values
    may be non-finite at a point the user did not choose).
    """
    n = next(iter(data.values())).shape[0]
    return generic_params_from_resp(model, data, rng.dirichlet(np.ones(model.n_components), size=n))


def generic_params_from_resp(model: MixtureModel, data: Data, resp: np.ndarray) -> Params:
    """The generic M-step for given responsibilities (n, K), from the neutral point.

    Used for random soft responsibilities (:func:`generic_init_params`) and for the hard
    partitions of :mod:`src.estimation.starts`.
    """
    n = next(iter(data.values())).shape[0]
    weights = resp.sum(axis=0) / n
    u0 = np.zeros(model.parameterisation().unconstrained_size)
    probe = model.parameterisation().from_unconstrained(u0)
    wspec = _weight_spec(model)
    if wspec is not None:
        probe[wspec.name] = weights
    with np.errstate(all="ignore"):
        lj = model.log_joint(data, probe)
    checks.check_log_joint(model, lj, n, values=False)
    return _maximise_q(model, data, resp, weights, u0)
