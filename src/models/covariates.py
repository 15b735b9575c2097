"""The one-step covariate model: class membership as a multinomial logit of covariates.

:class:`CovariateMixture` wraps any family instance (built-in or a user model whose class
weights are the ``weight`` simplex parameter and enter ``log_joint`` as ``log weight_k``)::

    log p(y_i, z_i = k | x_i) = log f_k(y_i | theta)  +  log pi_ik,
    pi_ik = softmax(z_i' beta)_k,   z_i = (1, x_i1, ..., x_ic)

``f_k`` is the inner family's class density (its ``log_joint`` evaluated with every weight 1,
so ``log weight_k`` adds exactly 0).  ``beta`` (K, q) has the row of the reference class
(``reference``, 0-based) fixed at 0; the fixed ``weight`` parameter is gone.

Parameters: ``beta`` (constraint ``logit``: free = the other K-1 rows, reported as
``beta[k,name]`` with the intercept first), then the inner family's parameters without
``weight``, then ``weight`` (constraint ``derived``): the **average predicted class
probabilities** ``sum_i w_i pi_ik / sum_i w_i``, not free and not reported, carried so that
everything that reads class sizes (the canonical order, ``smallest_class``, the
classification table, the figures) reads them.  The EM driver refreshes it on the rows at
the end of every fit (:meth:`summarise_params`); inside EM it is the average posterior
(equal to it at a maximum: the intercept's score equation).

Data: the inner family's data dict plus ``Z`` (n, q), the design (intercept first), row-aligned
so chunks, resampled rows, row weights and partitions carry it.

Estimation (generalised EM, :func:`src.estimation.em.em_map`): the E-step statistics are the
inner family's (from the posteriors under the per-row class probabilities) plus the logit's
additive sums: ``S = (w R)' Z`` and the normaliser ``sum_i w_i lse(z_i' beta)`` with its
gradient and Hessian at the current beta.  The M-step updates the inner parameters by the
inner family's M-step and beta by at most ``newton_steps`` Newton steps with step-halving
(:func:`src.models.logit.newton`), so Q never falls; every trial beta is evaluated by a pass
over the rows' ``Z`` that the EM driver supplies (``row_sum``: the same chunks, or a row
engine's partitions).  An inner family without a closed-form M-step is maximised by the
generic numerical M-step, beta included.

Classes are put in the inner family's canonical order (with the average predicted class
probabilities as its weights), then beta is re-referenced to the reference class
(:meth:`permute`), so the reference is a class of the canonical order (class 1 by
default), also after a bootstrap replicate is aligned.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from src.utils.messages import register
from src.utils.messages import t as _t

from . import logit
from .base import Data, MixtureModel, Params, ParamSpec

__all__ = ["CovariateMixture", "Z_KEY", "COVARIATES_META"]

#: the key of the design matrix (n, q) in the data dict (intercept first)
Z_KEY = "Z"
#: the key of the covariate names in the data's meta (the data layer sets it)
COVARIATES_META = "covariates"
_PHRASE = {"en": "class membership a multinomial logit of {names} (one step; class {ref} the "
                 "reference)",
           "zh": "类别归属为 {names} 的多项 logit（一步法；以类别 {ref} 为参照）"}
register({"covariates.phrase": _PHRASE,
          "covariates.new_rows": {
              "en": "Class probabilities of new rows are not available for the covariate model "
                    "(--covariates); use the fitted rows' posteriors, or the coefficients with "
                    "the new rows' covariates (src.models.logit.probabilities).",
              "zh": "协变量模型（--covariates）不提供新数据行的类别概率；请使用已拟合行的后验概率，"
                    "或用系数与新行的协变量计算（src.models.logit.probabilities）。"}})
_S, _LSE, _GRAD, _HESS, _ZZ, _M3 = ("_beta_S", "_beta_lse", "_beta_grad", "_beta_hess",
                                    "_beta_zz", "_beta_m3")
_OWN = (_S, _LSE, _GRAD, _HESS, _ZZ, _M3)


#: what the E-step makes of a chunk's rows once and keeps while the array lives (a latent
#: class model's one-hot answers, the design's outer products): key (kind, id of the array
#: owning the memory, address, shape, strides) -> (weakref to the owner, the arrays)
_ROWS: dict[tuple, tuple[Any, tuple[np.ndarray, ...]]] = {}
#: at most this many bytes are kept (beyond: made again at every pass)
ROW_CACHE_BYTES = 256 << 20
_ROWS_LOCK = threading.Lock()   # chunks may be computed on threads (fit_em's n_threads)


def _owner(a: np.ndarray) -> np.ndarray:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _row_cached(kind: tuple, a: np.ndarray,
                make: Callable[[np.ndarray], tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
    """``make(a)``, kept for the same rows of the same array: the EM driver cuts the same
    chunks from the same arrays at every pass.  The data must not change in place while in
    use (as for the latent class model's own pattern cache)."""
    owner = _owner(a)
    key = (kind, id(owner), a.__array_interface__["data"][0], a.shape, a.strides)
    hit = _ROWS.get(key)
    if hit is not None and hit[0]() is owner:
        return hit[1]
    value = make(a)
    nbytes = sum(v.nbytes for v in value)
    with _ROWS_LOCK:
        for old in [k for k, entry in _ROWS.items() if entry[0]() is None]:
            del _ROWS[old]
        size = sum(v.nbytes for entry in _ROWS.values() for v in entry[1])
        while _ROWS and size + nbytes > ROW_CACHE_BYTES:
            size -= sum(v.nbytes for v in _ROWS.pop(next(iter(_ROWS)))[1])
        if nbytes <= ROW_CACHE_BYTES:
            try:
                _ROWS[key] = (weakref.ref(owner), value)
            except TypeError:   # an array that takes no weak reference: not kept
                pass
    return value


def _onehot_of(inner: Any) -> Callable[[np.ndarray], tuple[np.ndarray, ...]]:
    def make(Y: np.ndarray) -> tuple[np.ndarray, ...]:
        O, observed = inner.one_hot(Y)
        return O, observed.astype(float)
    return make


def _outer_of(Z: np.ndarray) -> tuple[np.ndarray, ...]:
    """The design's outer products, each row's ``|z_i|^3``, and their sums over the rows
    (the unweighted statistics of the bounds, the same at every pass)."""
    outer = logit.outer_products(Z)
    norm3 = np.sqrt(np.einsum("ij,ij->i", Z, Z)) ** 3
    return outer, norm3, logit.unpack_outer(outer.sum(axis=0), Z.shape[1]), np.array(norm3.sum())


def _lca_stats(inner: Any, O: np.ndarray, observed: np.ndarray,
               R: np.ndarray) -> dict[str, np.ndarray]:
    """A latent class model's statistics (``nk``, ``counts``, ``mass``: its ``suff_stats``)
    from responsibilities ``R`` given as (K, n)."""
    counts = np.zeros((R.shape[0], len(inner.items), inner.cmax))
    counts[:, inner.flat_item, inner.flat_cat] = R @ O
    return {"nk": R.sum(axis=1), "counts": counts, "mass": R @ observed}


def _normaliser_rows(rows: Data, w: np.ndarray | None, beta: np.ndarray,
                     reference: int, order: int = 2) -> logit.Terms:
    """One chunk's ``sum_i w_i lse(z_i' beta)`` with gradient and Hessian (``order`` 2) or
    alone (0): a row-sum term."""
    return logit.normaliser(rows[Z_KEY], beta, w, reference, order)


def _pi_sum_rows(rows: Data, w: np.ndarray | None, beta: np.ndarray) -> np.ndarray:
    """One chunk's ``sum_i w_i pi_i`` (K,)."""
    pi = logit.probabilities(rows[Z_KEY], beta)
    return pi.sum(axis=0) if w is None else w @ pi


class CovariateMixture(MixtureModel):
    """A family's mixture whose class weights are a multinomial logit of covariates.

    ``inner``: the family instance (K classes); ``covariates``: the covariate names (the
    design's columns after the intercept); ``reference``: the class whose coefficients are 0
    (0-based, a class of the canonical order); ``newton_steps`` / ``newton_tol``: the logit's
    Newton steps per M-step and their stopping rule (:func:`src.models.logit.newton`).
    """

    name = "covariates"
    summaries = ()
    figures = ()

    def __new__(cls, inner: MixtureModel | None = None, *args: Any, **kwargs: Any):
        """A family that flags degenerate maxima (its ``degeneracies``) gets the subclass that
        passes them on; the others none, so the EM driver makes no pass for them."""
        if (cls is CovariateMixture and inner is not None
                and type(inner).degeneracies is not MixtureModel.degeneracies):
            cls = _FlaggedCovariateMixture
        return super().__new__(cls)

    def __init__(self, inner: MixtureModel, covariates: Sequence[str], reference: int = 0,
                 newton_steps: int = 1, newton_tol: float = 0.0) -> None:
        K = inner.n_components
        super().__init__(K)
        if not 0 <= int(reference) < K:
            raise ValueError(f"the reference class must be one of 1..{K}, got {int(reference) + 1}")
        self.inner = inner
        self.covariates = [str(c) for c in covariates]
        self.design_names = [logit.INTERCEPT] + self.covariates
        self.reference = int(reference)
        self.newton_steps = int(newton_steps)
        self.newton_tol = float(newton_tol)
        self.name = inner.name                           # the family, as fit.json names it
        self.has_closed_form_m_step = inner.has_closed_form_m_step
        self.figures = tuple(getattr(inner, "figures", ()))
        #: the family's summaries (G2/X2, SDs and correlations...), computed for the covariate
        #: model with each row's class probabilities (:mod:`src.inference.goodness`)
        self.summaries = tuple(getattr(inner, "summaries", ()))
        self.se_methods = inner.se_methods
        self.options = {**inner.options, "covariates": list(self.covariates),
                        "reference_class": self.reference + 1}
        self.meta = dict(getattr(inner, "meta", {}) or {})

    def __getattr__(self, name: str) -> Any:
        """The inner family's descriptive attributes (``items``, ``categories``, ``columns``,
        ``covariance``...: what the figures and summaries read), never its methods (the
        family's own fast paths over its parameters, e.g. ``compressed_rows`` or
        ``em_map_batch``, do not apply to the wrapper's)."""
        if name.startswith("__") or name in ("inner", "_parameterisation"):
            raise AttributeError(name)
        inner = self.__dict__.get("inner")
        if inner is None:
            raise AttributeError(name)
        value = getattr(inner, name)
        if callable(value):
            raise AttributeError(f"{type(self).__name__!r} has no attribute {name!r} "
                                 f"(the family's method is not the covariate model's)")
        return value

    # ------------------------------------------------------------------ set-up
    @classmethod
    def prepare_data(cls, frame: Any, options: Mapping[str, Any]) -> tuple[Data, dict[str, Any]]:
        """The data layer makes the covariate model's data (the family's arrays and ``Z``:
        :func:`src.pipeline.phases.prepare_frame`); new rows alone cannot be (their
        covariates are read beside them), so this refuses in one sentence."""
        from src.utils.errors import DataError

        raise DataError(_t("covariates.new_rows"))

    def setup(self, meta: Mapping[str, Any]) -> None:
        """The inner family's set-up, with the data's meta without the covariate names."""
        self.meta = dict(meta)
        self.inner.setup({k: v for k, v in meta.items() if k != COVARIATES_META})

    @property
    def q(self) -> int:
        return len(self.design_names)

    def _beta_spec(self) -> ParamSpec:
        return ParamSpec("beta", (self.q,), "logit", labels=(self.design_names,),
                         reference=self.reference)

    def _inner_specs(self) -> list[ParamSpec]:
        return [s for s in self.inner.param_specs() if s.name != "weight"]

    def param_specs(self) -> list[ParamSpec]:
        inner = self._inner_specs()
        key = tuple(map(id, inner))
        cached = self.__dict__.get("_specs")
        if cached is None or cached[0] != key:   # made again when the family's change
            specs = [self._beta_spec(), *inner, ParamSpec("weight", (), "derived")]
            cached = self.__dict__["_specs"] = (key, specs, [sp.name for sp in specs],
                                                self.inner.parameterisation().slice("weight"))
        return list(cached[1])

    def _weight_slice(self) -> slice:
        self.param_specs()
        return self.__dict__["_specs"][3]

    # ---------------------------------------------------------------- pieces
    @staticmethod
    def _split(data: Data) -> tuple[Data, np.ndarray]:
        return {k: v for k, v in data.items() if k != Z_KEY}, np.asarray(data[Z_KEY], dtype=float)

    def _inner_params(self, params: Params, weight: np.ndarray | None = None) -> Params:
        """The inner family's parameters: ours without beta, with ``weight`` (default every
        weight 1, so ``log weight_k`` adds 0 to its log_joint)."""
        p = {k: v for k, v in params.items() if k not in ("beta", "weight")}
        p["weight"] = np.ones(self.n_components) if weight is None else np.asarray(weight, float)
        return p

    @property
    def family(self) -> MixtureModel:
        """The wrapped family (what the summaries of its own kind are computed with)."""
        return self.inner

    def family_params(self, params: Params, weight: np.ndarray) -> Params:
        """The family's parameters with fixed class weights ``weight`` (e.g. the average
        predicted class probabilities of some rows): the family's mixture of those rows."""
        return self._inner_params(params, weight)

    def _valid_weight(self, params: Params) -> np.ndarray:
        w = np.asarray(params.get("weight", np.full(self.n_components, 1.0 / self.n_components)),
                       dtype=float)
        if w.shape != (self.n_components,) or not np.all(np.isfinite(w)) or np.any(w <= 0):
            return np.full(self.n_components, 1.0 / self.n_components)
        return w / w.sum()

    def _from_inner(self, inner_params: Params, beta: np.ndarray) -> Params:
        out = {k: np.asarray(v, dtype=float) for k, v in inner_params.items() if k != "weight"}
        out["beta"] = logit.rereference(beta, self.reference)
        out["weight"] = np.asarray(inner_params["weight"], dtype=float)
        self.param_specs()
        return {k: out[k] for k in self.__dict__["_specs"][2]}

    def _intercept_beta(self, weight: np.ndarray) -> np.ndarray:
        """beta with no covariate effect and class probabilities ``weight``."""
        beta = np.zeros((self.n_components, self.q))
        lw = np.log(np.maximum(np.asarray(weight, dtype=float), 1e-12))
        beta[:, 0] = lw - lw[self.reference]
        return beta

    # ------------------------------------------------------------- the model
    def log_joint(self, data: Data, params: Params) -> np.ndarray:
        rows, Z = self._split(data)
        lj = np.asarray(self.inner.log_joint(rows, self._inner_params(params)), dtype=float)
        return lj + logit.log_probabilities(Z, params["beta"])

    def class_probabilities(self, data: Data, params: Params) -> np.ndarray:
        """``pi_ik`` (n, K): each row's predicted class probabilities from its covariates."""
        return logit.probabilities(np.asarray(data[Z_KEY], dtype=float), params["beta"])

    def init_params(self, data: Data, rng: np.random.Generator) -> Params:
        """The inner family's random starting values; beta with no covariate effect and the
        inner starting weights as class probabilities."""
        rows, _ = self._split(data)
        inner = self.inner
        if inner.has_closed_form_m_step or type(inner).init_params is not MixtureModel.init_params:
            p = inner.init_params(rows, rng)
        else:
            from src.estimation.numeric_mstep import generic_init_params
            p = generic_init_params(inner, rows, rng)
        return self._from_inner(p, self._intercept_beta(p["weight"]))

    def start_features(self, data: Data) -> np.ndarray | None:
        return self.inner.start_features(self._split(data)[0])

    def canonical_order(self, params: Params) -> np.ndarray:
        """The inner family's canonical order, its weights the average predicted class
        probabilities."""
        return self.inner.canonical_order(self._inner_params(params, self._valid_weight(params)))

    def permute(self, params: Params, perm: Sequence[int]) -> Params:  # type: ignore[override]
        """Reorder classes (new class ``i`` is old ``perm[i]``), then re-reference beta to the
        reference class (the same probabilities)."""
        out = MixtureModel.permute(params, perm)
        if "beta" in out:
            out["beta"] = logit.rereference(out["beta"], self.reference)
        return out

    def in_parameter_space(self, params: Params) -> bool:
        beta = np.asarray(params["beta"], dtype=float)
        if not np.all(np.isfinite(beta)) or np.any(beta[self.reference] != 0):
            return False
        w = np.asarray(params["weight"], dtype=float)
        if not np.all(np.isfinite(w)):
            return False
        return bool(self.inner.in_parameter_space(self._inner_params(params,
                                                                     self._valid_weight(params))))

    # ------------------------------------------------------ E-step and M-step
    def _e_stats(self, data: Data, params: Params,
                 w: np.ndarray | None) -> tuple[dict[str, np.ndarray], float]:
        """One chunk's statistics (classes along the first axis of the (K, n) arrays: numpy
        reduces over a short last axis far more slowly)."""
        rows, Z = self._split(data)
        beta = np.asarray(params["beta"], dtype=float)
        outer, norm3, zz, m3 = _row_cached(("outer",), Z, _outer_of)
        norm, log_pi = logit.normaliser_with_log_probabilities(Z, beta, w, self.reference,
                                                               outer=outer)
        onehot = self._onehot(rows)
        if onehot is not None:   # a latent class model: its one-hot answers made once
            lj = self._lca_log_density(onehot[0], params["prob"])
            lj += log_pi
        else:
            lj_inner = self.inner.log_joint(rows, self._inner_params(params))
            lj = np.asarray(lj_inner, dtype=float).T + log_pi
        m = lj.max(axis=0)
        m[~np.isfinite(m)] = 0.0
        e = np.exp(lj - m)
        s = e.sum(axis=0)
        with np.errstate(divide="ignore"):
            ll_rows = np.log(s) + m
        R = e / (s if w is None else s / w)                    # (K, n), times the row weights
        if onehot is not None:
            stats = _lca_stats(self.inner, onehot[0], onehot[1], R)
        else:
            stats = dict(self.inner.suff_stats(rows, R.T))
        stats[_S] = R @ Z
        stats[_LSE] = np.array(norm.value)
        stats[_GRAD] = norm.grad
        stats[_HESS] = norm.hess
        stats[_ZZ] = zz if w is None else logit.unpack_outer(w @ outer, Z.shape[1])  # the bounds
        stats[_M3] = m3 if w is None else np.array(w @ norm3)
        return stats, float(ll_rows.sum() if w is None else w @ ll_rows)

    def _onehot(self, rows: Data) -> tuple[np.ndarray, np.ndarray] | None:
        """The built-in latent class model's one-hot answers of these rows (cached), else
        None (every other family: its own log_joint and suff_stats)."""
        inner = self.inner
        if type(inner).__name__ != "LatentClassModel" or len(rows) != 1 or "Y" not in rows:
            return None
        from .lca import LatentClassModel

        if type(inner) is not LatentClassModel:
            return None
        sizes = inner.sizes
        key = self.__dict__.get("_onehot_key")
        if key is None or key[0] is not sizes:   # made once per set-up of the family
            key = self.__dict__["_onehot_key"] = (sizes, ("onehot", tuple(int(c) for c in sizes)))
        return _row_cached(key[1], rows["Y"], _onehot_of(inner))

    def _lca_log_density(self, O: np.ndarray, prob: np.ndarray) -> np.ndarray:
        """A latent class model's ``log f_k(y_i)`` as a (K, n) array from the one-hot answers
        (its ``log_joint`` with every weight 1, transposed; ``-inf`` where an observed answer
        has probability 0), the log-probabilities made once per parameter
        array (every chunk of a pass sees the same ``prob`` object; arrays of parameters
        are never changed in place)."""
        hit = self.__dict__.get("_log_prob")
        if hit is None or hit[0] is not prob:
            inner = self.inner
            pf = np.asarray(prob, dtype=float)[:, inner.flat_item, inner.flat_cat]
            zero = pf <= 0.0
            with np.errstate(divide="ignore"):
                lp = np.log(np.where(zero, 1.0, pf))
            hit = self.__dict__["_log_prob"] = (prob, lp, zero.astype(float) if zero.any() else None)
        lj = hit[1] @ O.T
        if hit[2] is not None:
            lj[(hit[2] @ O.T) > 0] = -np.inf
        return lj

    def e_step_stats(self, data: Data, params: Params) -> tuple[dict[str, np.ndarray], float]:
        return self._e_stats(data, params, None)

    def e_step_stats_weighted(self, data: Data, params: Params,
                              weights: np.ndarray) -> tuple[dict[str, np.ndarray], float]:
        return self._e_stats(data, params, np.asarray(weights, dtype=np.float64))

    def suff_stats(self, data: Data, resp: np.ndarray) -> dict[str, np.ndarray]:
        """The inner family's statistics plus ``S = resp' Z`` (what :meth:`m_step` needs)."""
        rows, Z = self._split(data)
        stats = dict(self.inner.suff_stats(rows, resp))
        stats[_S] = np.asarray(resp, dtype=float).T @ Z
        return stats

    def _inner_m_step(self, stats: Mapping[str, Any]) -> Params:
        return self.inner.m_step({k: v for k, v in stats.items() if k not in _OWN})

    def m_step(self, stats: Mapping[str, np.ndarray]) -> Params:
        """Without the rows (starting values from a partition): the inner M-step and beta
        with no covariate effect (intercepts the log-ratios of the class masses)."""
        inner = self._inner_m_step(stats)
        return self._from_inner(inner, self._intercept_beta(inner["weight"]))

    def m_step_rows(self, stats: Mapping[str, np.ndarray], params: Params,
                    row_sum: Callable[..., Any]) -> Params:
        """The generalised M-step: the inner M-step, and beta by Newton with step-halving on
        ``Q(beta) = sum_k beta_k' S_k - sum_i w_i lse(z_i' beta)`` from the current beta
        (whose value, gradient and Hessian the E-step summed), each trial beta's normaliser
        summed over the rows by ``row_sum(fn, *args)`` (the EM driver's passes)."""
        inner = self._inner_m_step(stats)
        S = np.asarray(stats[_S], dtype=float)
        ref = self.reference
        beta0 = logit.rereference(params["beta"], ref)
        lin = logit.linear_terms(S, beta0, ref)
        start = logit.Terms(lin.value - float(stats[_LSE]), lin.grad - stats[_GRAD],
                            -np.asarray(stats[_HESS], dtype=float))

        def eval_fn(beta: np.ndarray) -> logit.Terms:
            return logit.linear_terms(S, beta, ref) - row_sum(_normaliser_rows, beta, ref)

        def value_fn(beta: np.ndarray) -> float:
            return (logit.linear_terms(S, beta, ref, order=0).value
                    - row_sum(_normaliser_rows, beta, ref, 0).value)

        bound = logit.bohning_bound(stats[_ZZ], self.n_components) if _ZZ in stats else None
        third = logit.third_derivative_bound(stats[_M3]) if _M3 in stats else None
        res = logit.newton(eval_fn, beta0, max_steps=self.newton_steps, tol=self.newton_tol,
                           reference=ref, start=start, value_fn=value_fn, bound=bound,
                           third=third)
        return self._from_inner(inner, res.beta)

    def summarise_params(self, params: Params, row_sum: Callable[..., Any]) -> Params:
        """``params`` with ``weight`` the average predicted class probabilities over the rows
        (``row_sum`` as for :meth:`m_step_rows`)."""
        total = np.asarray(row_sum(_pi_sum_rows, np.asarray(params["beta"], dtype=float)),
                           dtype=float)
        return {**params, "weight": total / total.sum()}

    # ------------------------------------------------------------ simulation
    def sample(self, params: Params, data: Data, rng: np.random.Generator) -> Data:
        """Classes drawn from each row's pi_i, then the inner family's answers given the
        class (its ``sample`` with all the weight on that class); ``Z`` kept."""
        rows, Z = self._split(data)
        n = Z.shape[0]
        pi = logit.probabilities(Z, params["beta"])
        u = rng.random(n)
        z = np.minimum((u[:, None] > np.cumsum(pi, axis=1)).sum(axis=1), self.n_components - 1)
        out: dict[str, np.ndarray] | None = None
        for k in range(self.n_components):
            idx = np.flatnonzero(z == k)
            if idx.size == 0:
                continue
            one = np.zeros(self.n_components)
            one[k] = 1.0
            part = self.inner.sample(self._inner_params(params, one),
                                     {key: v[idx] for key, v in rows.items()}, rng)
            if out is None:
                out = {key: np.empty((n,) + np.asarray(v).shape[1:], dtype=np.asarray(v).dtype)
                       for key, v in part.items()}
            for key, v in part.items():
                out[key][idx] = v
        assert out is not None
        return {**out, Z_KEY: Z}

    # -------------------------------------------------- free parameterisation
    def _n_beta(self) -> int:
        return (self.n_components - 1) * self.q

    def n_free_parameters(self) -> int:
        return self._n_beta() + self.inner.n_free_parameters() - (self.n_components - 1)

    def to_free(self, params: Params) -> np.ndarray:
        """beta's K-1 free rows, then the inner family's free vector without its weights."""
        K = self.n_components
        # the weights are dropped: any valid ones do (equal shares)
        inner = self.inner.to_free(self._inner_params(params, np.full(K, 1.0 / K)))
        ws = self._weight_slice()
        return np.concatenate([logit.to_free(params["beta"], self.reference),
                               inner[:ws.start], inner[ws.stop:]])

    def from_free(self, theta: np.ndarray) -> Params:
        theta = np.asarray(theta, dtype=float)
        if theta.shape != (self.n_free_parameters(),):
            raise ValueError(f"expected {self.n_free_parameters()} free parameters, "
                             f"got shape {theta.shape}")
        K, nb = self.n_components, self._n_beta()
        beta = logit.from_free(theta[:nb], K, self.q, self.reference)
        ws = self._weight_slice()
        rest = theta[nb:]
        inner_theta = np.concatenate([rest[:ws.start], np.full(K - 1, 1.0 / K), rest[ws.start:]])
        inner = self.inner.from_free(inner_theta)
        return self._from_inner(inner, beta)

    def _reported_entries(self):
        spec = self._beta_spec()
        for k in range(self.n_components):
            for c, label in enumerate(self.design_names):
                yield f"beta[{k + 1},{label}]", spec, k, (c,), k != self.reference
        for entry in self.inner._reported_entries():
            if entry[1].name != "weight":
                yield entry

    def reported_jacobian(self) -> np.ndarray:
        """Block-diagonal: beta (identity on the free rows, 0 for the reference's), then the
        inner family's without its weight rows and columns."""
        K, q, nb = self.n_components, self.q, self._n_beta()
        inner_entries = list(self.inner._reported_entries())
        keep_rows = [r for r, e in enumerate(inner_entries) if e[1].name != "weight"]
        ws = self._weight_slice()
        keep_cols = [c for c in range(self.inner.n_free_parameters()) if not ws.start <= c < ws.stop]
        Ji = self.inner.reported_jacobian()[np.ix_(keep_rows, keep_cols)]
        J = np.zeros((K * q + Ji.shape[0], nb + Ji.shape[1]))
        col = 0
        for k in range(K):
            if k == self.reference:
                continue
            J[k * q:(k + 1) * q, col:col + q] = np.eye(q)
            col += q
        J[K * q:, nb:] = Ji
        return J

    # ------------------------------------------------------ analytic derivatives
    def complete_score(self, data: Data, params: Params) -> np.ndarray | None:
        """d log p(y_i, z_i=k) / d theta (n, K, P): beta's ``(e_k - pi_i) (x) z_i`` on its
        free rows, then the inner family's score without its weight columns (None when
        the inner family has no analytic score: numerical derivatives then)."""
        rows, Z = self._split(data)
        inner = self.inner.complete_score(rows, self._inner_params(params, self._valid_weight(params)))
        if inner is None:
            return None
        K, q = self.n_components, self.q
        fc = logit.free_classes(K, self.reference)
        pi = logit.probabilities(Z, params["beta"])
        n = Z.shape[0]
        d = np.eye(K)[None, :, fc] - pi[:, None, fc]                    # (n, K, K-1)
        Sb = (d[:, :, :, None] * Z[:, None, None, :]).reshape(n, K, (K - 1) * q)
        ws = self._weight_slice()
        Si = np.delete(np.asarray(inner, dtype=float), np.arange(ws.start, ws.stop), axis=2)
        return np.concatenate([Sb, Si], axis=2)

    def complete_information(self, data: Data, params: Params,
                             resp: np.ndarray) -> np.ndarray | None:
        """sum_ik resp_ik (-Hessian) (P, P): block-diagonal, beta's the logit normaliser's
        Hessian with each row's mass ``sum_k resp_ik``, then the inner family's without its
        weight rows and columns."""
        rows, Z = self._split(data)
        inner = self.inner.complete_information(
            rows, self._inner_params(params, self._valid_weight(params)), resp)
        if inner is None:
            return None
        ws = self._weight_slice()
        drop = np.arange(ws.start, ws.stop)
        Ii = np.delete(np.delete(np.asarray(inner, dtype=float), drop, axis=0), drop, axis=1)
        Ib = logit.normaliser(Z, params["beta"], np.asarray(resp, dtype=float).sum(axis=1),
                              self.reference).hess
        nb = self._n_beta()
        out = np.zeros((nb + Ii.shape[0],) * 2)
        out[:nb, :nb] = Ib
        out[nb:, nb:] = Ii
        return out

    def report_phrases(self, lang: str = "en") -> list[str]:
        """The report's phrase on the model line (:func:`src.models.registry.option_phrases`)."""
        from src.utils.messages import template

        text = (template("covariates.phrase") or {}).get(lang) or _PHRASE["en"]
        return [text.format(names=", ".join(self.covariates), ref=self.reference + 1)]

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "n_components": self.n_components, **self.options}


class _FlaggedCovariateMixture(CovariateMixture):
    """:class:`CovariateMixture` of a family with ``degeneracies`` (its flags, e.g. a Gaussian
    mixture's collapsed covariance)."""

    def degeneracies(self, params: Params, stats: Mapping[str, Any]) -> list[str]:
        return self.inner.degeneracies(self._inner_params(params, self._valid_weight(params)),
                                       {k: v for k, v in stats.items() if k not in _OWN})
