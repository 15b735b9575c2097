"""Generic M-step and starting values for models without a closed-form M-step.

A user's model need only define ``log_joint``; this module derives the rest from its
:class:`~src.models.base.ParamSpec` declarations.  The class weights have their closed form
(mean responsibilities); every other parameter maximises the expected complete-data
log-likelihood ``Q = sum_ik resp_ik log p(y_i, z_i = k)`` numerically over the
unconstrained view of :class:`src.models.parameterisation.FreeParameterisation`: identity
for real entries, log for positive ones, log-Cholesky for covariance matrices and a softmax
(last category as reference) for probability rows.

L-BFGS-B does the search, then two Newton steps polish its answer (:func:`_polish`): the
optimiser stops at its own precision (about 1e-8 relative to the maximiser), where the
answer depends on the last bits of Q, so weighted rows and the rows they stand for would
reach different points and EM would amplify the gap.  The polish's gradient is a
fourth-order central difference, differenced row by row before the sum, with steps scaled
by each parameter's curvature, and its Hessian comes from second differences: the Newton
point is the maximiser to about 1e-13.  When column k of ``log_joint`` depends only on
class k's parameters (checked at every M-step: :meth:`_Objective.separable`, true for
most models) every difference moves one entry of every class at once and reads the
classes' columns apart, so a gradient or Hessian costs as much as for one class.

The start is the current parameters; the answer is kept only when it does not lower Q, so
EM stays monotone (a generalised EM step).  Such models hold the N x K responsibilities in
memory.  With row weights ``w`` (a row standing for ``w_i`` identical rows) Q and the class
weights use ``w_i * resp_ik``, so integer weights maximise the replicated rows' Q.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg
from scipy.optimize import minimize
from scipy.special import logsumexp

from src.models import checks
from src.models.base import Data, MixtureModel, Params, ParamSpec
from src.models.parameterisation import columns_separate

__all__ = ["generic_em_map", "generic_init_params", "generic_params_from_resp",
           "POLISH_MAX_PARAMS"]

_EPS = float(np.finfo(float).eps)
#: the Newton polish runs when the Hessian has at most this many entries per block (its
#: cost is about 2 * this evaluations of log_joint): 30 parameters per class, or in all
#: when the classes' columns are not separable
POLISH_MAX_PARAMS = 30
_NEWTON_STEPS = 2


def _weight_spec(model: MixtureModel) -> ParamSpec | None:
    return next((s for s in model.param_specs() if s.constraint == "simplex"), None)


class _Objective:
    """-Q / total at unconstrained points and its finite differences, row by row.

    ``groups``: the entries moved together by one difference.  Separable (column k of
    ``log_joint`` depends on class k's entries only): group a holds entry a of every class,
    and the change of column k is class k's entry's; otherwise one entry per group and the
    change of every column is its own.  Differences combine the rows' log_joint values
    before the sum over rows, so Q's own size does not enter their rounding error.
    """

    def __init__(self, model: MixtureModel, data: Data, resp: np.ndarray,
                 weights: np.ndarray | None, total: float) -> None:
        self.model, self.data, self.resp, self.total = model, data, resp, total
        self.weights = weights
        self.wspec = _weight_spec(model)
        self.free = model.parameterisation()
        self.pos = resp > 0
        self.owner = self.free.unconstrained_classes()
        self.set_groups(False)

    def assemble(self, u: np.ndarray) -> Params:
        p = self.free.from_unconstrained(u)
        if self.wspec is not None:
            p[self.wspec.name] = self.weights
        return p

    def rows(self, u: np.ndarray) -> np.ndarray:
        """log_joint at ``u`` with the zero-responsibility entries set to 0 (n, K)."""
        with np.errstate(all="ignore"):
            return np.where(self.pos, self.model.log_joint(self.data, self.assemble(u)), 0.0)

    def value(self, u: np.ndarray) -> float:
        with np.errstate(all="ignore"):
            val = -float(np.sum(self.resp * self.rows(u))) / self.total
        return val if np.isfinite(val) else np.inf

    def set_groups(self, separable: bool) -> None:
        P = self.owner.size
        self.separable_ = separable
        if separable:
            K = self.model.n_components
            per = P // K if K else 0
            # entries of class k in order of appearance; group a = the a-th entry of each class
            order = [np.flatnonzero(self.owner == k) for k in range(K)]
            self.groups = [np.array([order[k][a] for k in range(K)]) for a in range(per)]
        else:
            self.groups = [np.array([j]) for j in range(P)]

    def separable(self, u: np.ndarray, steps: np.ndarray) -> bool:
        """True when moving all of class k's entries leaves every other column's values
        bitwise unchanged, for every k (and every value is finite)."""
        K = self.model.n_components
        if K < 2 or self.owner.size == 0 or self.owner.size % K:
            return False
        return columns_separate(self.rows, self.owner, u, steps, finite=True)

    def _colsums(self, diff: np.ndarray) -> np.ndarray:
        """sum_i resp_ik diff_ik per class (K,), divided by -total."""
        with np.errstate(all="ignore"):
            return -np.einsum("nk,nk->k", self.resp, diff) / self.total

    def _share(self, group: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Each entry of ``group``'s part of the per-class sums ``cols``."""
        if self.separable_:
            return cols[self.owner[group]]
        return np.full(group.size, cols.sum())

    def _move(self, group: np.ndarray, steps: np.ndarray) -> np.ndarray:
        e = np.zeros(self.owner.size)
        e[group] = steps[group]
        return e

    def gradient(self, u: np.ndarray, steps: np.ndarray, order: int = 2) -> np.ndarray:
        """Central differences of order 2 (3 points) or 4 (5 points) with ``steps``."""
        g = np.empty(u.size)
        for grp in self.groups:
            e = self._move(grp, steps)
            with np.errstate(all="ignore"):
                d = self.rows(u + e) - self.rows(u - e)
                if order == 4:
                    d = (8.0 * d - (self.rows(u + 2 * e) - self.rows(u - 2 * e))) / 6.0
            g[grp] = self._share(grp, self._colsums(d)) / (2.0 * steps[grp])
        return g

    def hessian(self, u: np.ndarray, steps: np.ndarray) -> np.ndarray:
        """Second differences with ``steps`` (block diagonal by class when separable)."""
        P = u.size
        H = np.zeros((P, P))
        base = self.rows(u)
        moves = [self._move(grp, steps) for grp in self.groups]
        for a, grp in enumerate(self.groups):
            with np.errstate(all="ignore"):
                d = self.rows(u + moves[a]) - 2.0 * base + self.rows(u - moves[a])
            H[grp, grp] = self._share(grp, self._colsums(d)) / steps[grp] ** 2
            for b in range(a):
                other = self.groups[b]
                ea, eb = moves[a], moves[b]
                with np.errstate(all="ignore"):
                    d = ((self.rows(u + ea + eb) - self.rows(u + ea - eb))
                         - (self.rows(u - ea + eb) - self.rows(u - ea - eb)))
                val = self._share(grp, self._colsums(d)) / (4.0 * steps[grp] * steps[other])
                H[grp, other] = H[other, grp] = val
        return H


def _curvature_scales(obj: _Objective, u: np.ndarray) -> np.ndarray:
    """Each entry's natural scale 1 / sqrt(d2(-Q/total)/du_j^2): a crude second difference
    at 1e-4 * max(|u_j|, 1) (redone once at 1e-4 of the scale found when that is more
    than 10x away); max(|u_j|, 1) where the curvature is not positive."""
    s = np.maximum(np.abs(u), 1.0)
    base = obj.rows(u)
    for _ in range(2):
        h = 1e-4 * s
        d2 = np.empty(u.size)
        for grp in obj.groups:
            e = obj._move(grp, h)
            with np.errstate(all="ignore"):
                d = obj.rows(u + e) - 2.0 * base + obj.rows(u - e)
            d2[grp] = obj._share(grp, obj._colsums(d)) / h[grp] ** 2
        with np.errstate(all="ignore"):
            found = np.where(np.isfinite(d2) & (d2 > 0), 1.0 / np.sqrt(np.abs(d2)), s)
        redo = np.abs(np.log(found / s)) > np.log(10.0)
        s = found
        if not redo.any():
            break
    return s


def _polish(obj: _Objective, u: np.ndarray) -> np.ndarray | None:
    """Two Newton steps from ``u`` (None when the Hessian is not positive definite or a
    value is not finite): the gradient of order 4 with steps eps^(1/5) times the
    curvature scales, the Hessian (once, at ``u``) with steps eps^(1/4) times them."""
    s = _curvature_scales(obj, u)
    H = obj.hessian(u, _EPS ** 0.25 * s)
    if not np.all(np.isfinite(H)):
        return None
    try:
        factor = linalg.cho_factor(0.5 * (H + H.T))
    except linalg.LinAlgError:
        return None
    hg = _EPS ** 0.2 * s
    for _ in range(_NEWTON_STEPS):
        g = obj.gradient(u, hg, order=4)
        if not np.all(np.isfinite(g)):
            return None
        u = u - linalg.cho_solve(factor, g)
    return u if np.all(np.isfinite(u)) else None


def _maximise_q(model: MixtureModel, data: Data, resp: np.ndarray, weights: np.ndarray | None,
                u0: np.ndarray, row_weights: np.ndarray | None = None,
                polish: bool = True) -> Params:
    """Parameters maximising Q(resp) over the non-weight parameters, started at ``u0``.

    ``weights``: the class weights; ``resp``: already multiplied by the ``row_weights``
    (whose sum scales Q as the number of rows does without them).  ``polish``: Newton
    steps after L-BFGS-B (module doc; starting values go without)."""
    n = resp.shape[0]
    total = n if row_weights is None else float(row_weights.sum())
    obj = _Objective(model, data, resp, weights, total)
    f0 = obj.value(u0)
    best, f_best = u0, f0
    if u0.size:
        obj.set_groups(obj.separable(u0, 1e-3 * np.maximum(np.abs(u0), 1.0)))

        def jac(u: np.ndarray) -> np.ndarray:
            return obj.gradient(u, _EPS ** (1 / 3) * np.maximum(np.abs(u), 1.0))

        with np.errstate(all="ignore"):  # inf - inf in finite differences at impossible points
            res = minimize(obj.value, u0, jac=jac, method="L-BFGS-B",
                           options={"maxiter": 500, "ftol": 1e-15, "gtol": 1e-10})
        if np.all(np.isfinite(res.x)) and (res.fun <= f0 or not np.isfinite(f0)):
            best, f_best = res.x, float(res.fun)
        if polish and np.isfinite(f_best) and len(obj.groups) <= POLISH_MAX_PARAMS:
            u = _polish(obj, best)
            if u is not None:
                f = obj.value(u)   # kept when Q does not fall below the start's or L-BFGS-B's
                if f <= f0 and f <= f_best + 1e-12 * (abs(f_best) + 1.0):
                    best = u
    return obj.assemble(best)


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
    partitions of :mod:`src.estimation.starts`: starting values, so without the Newton
    polish.
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
    return _maximise_q(model, data, resp, weights, u0, polish=False)
