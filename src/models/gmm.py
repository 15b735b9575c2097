"""Gaussian mixture: full, diagonal or spherical covariances.

Parameters (first axis the class): ``weight`` (K,), ``mean`` (K, D) and ``cov`` (K, D, D)
for ``full``, ``cov`` (K, D) holding the variances for ``diag`` (reported ``cov[k,col,col]``),
``var`` (K,) for ``spherical``.  ``reg_covar`` is added to the diagonal of every covariance
in the M-step, as in scikit-learn.

Speed: the K precision-Cholesky factors are stacked into one D x (K*D) matrix, so the
E-step of a block of rows is one matrix product, and the K weighted scatter matrices of
the M-step are one more.  Accuracy: data are centred on a fixed ``shift`` (the column
means, from ``meta``) before any sum, so data far from zero keep their digits.

Sufficient statistics (additive over chunks of rows), centred on ``shift``:
``nk`` (K,) responsibility sums, ``sx`` (K, D) weighted sums of ``x - shift``, ``sxx``
weighted sums of ``(x - shift)(x - shift)'`` as (K, D, D) / its diagonal (K, D) / its
trace (K,) for full / diag / spherical.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Mapping

import numpy as np
from scipy.linalg import solve_triangular

from src.data.loading import check_enough_rows, numeric_matrix
from src.utils.messages import register, t

from src.utils.options import Option

from .base import Data, MixtureModel, ModelWarning, Params, ParamSpec
from .gmm_derivatives import GaussianDerivatives

__all__ = ["GaussianMixtureModel", "COVARIANCE_TYPES", "gmm_n_free_parameters"]

COVARIANCE_TYPES = ("full", "diag", "spherical")
_LOG_2PI = float(np.log(2.0 * np.pi))
_SQRT_HALF = float(np.sqrt(0.5))
_BLOCK = 4096            # most rows per internal block (a chunk of the EM driver's default size) ...
_BLOCK_BYTES = 1 << 22   # ... and at most about this many bytes of work buffer (larger K * D: fewer rows)
_PAD_ROWS = 4            # the scatter GEMM's weighted rows padded to a multiple of this (BLAS kernels' unroll)
_QUAD_RATIO = 1.5        # the quadratic-feature E-step when its F features <= this * K * (D+1) ...
_QUAD_LIMIT = 1e4        # ... and every (mu_k - shift)' P_k (mu_k - shift) <= this (rounding: see _e_step_stats)
_EMPTY = 1e-10           # a class with nk below this fraction of the rows is "empty"
_SINGULAR = 1e-10        # a covariance whose smallest scaled eigenvalue is below this is singular
_FLOOR = 1e-9            # ... and is ridged up to this (scaled: divided by the data's variances)
#: a component is degenerate (a spurious maximum) when in some direction its variance is
#: below this fraction of the data's variance in that direction, or at most twice reg_covar
DEGENERATE_FRACTION = 1e-3

register({
    "option.report.covariance": {"en": "{value} covariances", "zh": "{value} 协方差矩阵"},
    "gmm.empty_component": {
        "en": "Gaussian component {k} has almost no rows assigned to it; use fewer components "
              "or more random starts.",
        "zh": "高斯分量 {k} 几乎没有分到任何数据行；请减少分量数或增加随机起点。"},
    "gmm.singular": {
        "en": "Gaussian component {k} has collapsed (singular covariance: its rows are too few "
              "distinct points, or lie on a line or plane because columns are linearly dependent) "
              "and is kept valid only by reg_covar={reg:g}; use fewer components, increase "
              "reg_covar or scale the data.",
        "zh": "高斯分量 {k} 已坍缩（协方差奇异：其数据行的不同点过少，或因列线性相关而落在一条直线或"
              "一个平面上），仅靠 reg_covar={reg:g} 维持有效；请减少分量数、增大 reg_covar 或对数据做缩放。"},
    "gmm.singular_after_reg": {
        "en": "Gaussian component {k} has a singular covariance even after adding reg_covar={reg:g}, "
              "so a larger value was added; increase reg_covar, use fewer components or scale the data.",
        "zh": "高斯分量 {k} 的协方差在加上 reg_covar={reg:g} 后仍然奇异，已自动加大对角线；"
              "请增大 reg_covar、减少分量数或对数据做缩放。"},
})


def gmm_n_free_parameters(n_components: int, n_features: int, covariance: str) -> int:
    """Free parameters of a K-class, D-column Gaussian mixture (for AIC/BIC, row checks)."""
    K, D = int(n_components), int(n_features)
    per_class = {"full": D * (D + 1) // 2, "diag": D, "spherical": 1}[covariance]
    return K - 1 + K * D + K * per_class


@functools.lru_cache(maxsize=64)
def _upper(D: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.triu_indices(D)``, kept (the quadratic features' order of the products x_a x_b)."""
    a, b = np.triu_indices(D)
    a.flags.writeable = b.flags.writeable = False
    return a, b


def _smallest_scaled_eigenvalue(cov: np.ndarray, var_scale: np.ndarray) -> float | np.ndarray:
    """Smallest eigenvalue of ``S^-1/2 cov S^-1/2``, S = diag(var_scale): units do not matter.

    ``cov`` (D, D) gives a float; a stack (K, D, D) gives the K values (the same numbers)."""
    isd = 1.0 / np.sqrt(var_scale)
    lam = np.linalg.eigvalsh(cov * np.outer(isd, isd))[..., 0]
    return float(lam) if lam.ndim == 0 else lam


class GaussianMixtureModel(GaussianDerivatives, MixtureModel):
    """Mixture of K multivariate normal distributions.

    Options: ``covariance`` in ``full`` (default), ``diag``, ``spherical``; ``reg_covar``
    (default 1e-6) added to every covariance's diagonal in the M-step.
    """

    name = "gmm"
    summaries = ("sd_correlation",)
    figures = ("scatter", "density")
    has_closed_form_m_step = True
    option_specs = (
        Option("covariance", str, "full", "gmm: covariance structure", choices=COVARIANCE_TYPES,
               group="model options", fingerprint="model_estimation", report="{} covariances"),
        Option("reg_covar", float, 1e-6, "gmm: added to covariance diagonals", low=0,
               group="model options", fingerprint="model_estimation"),
    )

    def __init__(self, n_components: int, covariance: str = "full", reg_covar: float = 1e-6,
                 **options: Any) -> None:
        if covariance not in COVARIANCE_TYPES:
            raise ValueError(f"covariance must be one of {', '.join(COVARIANCE_TYPES)}, "
                             f"got {covariance!r}")
        reg_covar = float(reg_covar)
        if not (np.isfinite(reg_covar) and reg_covar >= 0):
            raise ValueError(f"reg_covar must be a number >= 0, got {reg_covar!r}")
        super().__init__(n_components, covariance=covariance, reg_covar=reg_covar, **options)
        self.covariance, self.reg_covar = covariance, reg_covar
        self.columns: list[str] = []
        self.shift = np.zeros(0)

    # ----------------------------------------------------------------- data
    @classmethod
    def prepare_data(cls, frame: Any, options: Mapping[str, Any]) -> tuple[Data, dict[str, Any]]:
        """Every column of ``frame`` as a float matrix ``X``; meta holds columns and shift.

        Missing values are an error unless ``options["drop_missing"]``; constant columns
        are an error.  When ``options`` names ``n_components``, too few rows are too.
        """
        source = str(options.get("source") or "the data")
        columns = [str(c) for c in frame.columns]
        X, keep = numeric_matrix(frame, columns, drop_missing=bool(options.get("drop_missing", False)),
                                 source=source, reject_constant=True)
        if options.get("n_components") is not None:
            check_enough_rows(X.shape[0], gmm_n_free_parameters(
                options["n_components"], X.shape[1], options.get("covariance", "full")), source)
        return {"X": X}, cls.meta_for_array(X, columns, n_dropped=int((~keep).sum()))

    @staticmethod
    def meta_for_array(X: np.ndarray, columns: list[str] | None = None, **extra: Any) -> dict[str, Any]:
        """``meta`` for a float matrix: column names (default x1..xD) and the centring shift."""
        X = np.asarray(X, dtype=float)
        names = list(columns) if columns is not None else [f"x{j + 1}" for j in range(X.shape[1])]
        return {"columns": names, "shift": [float(v) for v in X.mean(axis=0)], **extra}

    def setup(self, meta: Mapping[str, Any]) -> None:
        self.meta = dict(meta)
        self.columns = [str(c) for c in meta["columns"]]
        self.shift = np.asarray(meta["shift"], dtype=float).reshape(len(self.columns))
        self.__dict__.pop("_consts_cache", None)

    @property
    def n_features(self) -> int:
        if not self.columns:
            raise ValueError("the Gaussian mixture has no columns yet: call setup(meta) with the "
                             "meta returned by prepare_data (or meta_for_array)")
        return len(self.columns)

    # ----------------------------------------------------------- the model
    def param_specs(self) -> list[ParamSpec]:
        """Parameters named by column: ``mean[k,waiting]``, ``cov[k,eruptions,waiting]``
        (columns x1..xD when the data had no names; 1..D if names repeat)."""
        D = self.n_features
        cols = tuple(self.columns) if len(set(self.columns)) == D else tuple(map(str, range(1, D + 1)))
        specs = [ParamSpec("weight", (), "simplex"), ParamSpec("mean", (D,), "real", labels=(cols,))]
        if self.covariance == "full":
            specs.append(ParamSpec("cov", (D, D), "covariance", labels=(cols, cols)))
        elif self.covariance == "diag":  # labels make the names cov[k,col,col]
            specs.append(ParamSpec("cov", (D,), "positive", labels=([f"{c},{c}" for c in cols],)))
        else:
            specs.append(ParamSpec("var", (), "positive"))
        return specs

    def _factors(self, params: Params) -> tuple[np.ndarray, np.ndarray]:
        """Whitening factors and their log-determinants.

        full: U (K, D, D) upper triangular with U U' = inverse covariance; diag: inverse
        standard deviations (K, D); spherical: (K,).  Second value: log det U, shape (K,).
        """
        if self.covariance == "full":
            cov = np.asarray(params["cov"], dtype=float)
            K, D = cov.shape[0], cov.shape[1]
            U = np.empty_like(cov)
            logdet = np.empty(K)
            for k in range(K):
                try:
                    L = np.linalg.cholesky(cov[k])
                except np.linalg.LinAlgError:
                    raise ValueError(f"the covariance of component {k + 1} is not positive definite; "
                                     "increase reg_covar or use fewer components") from None
                U[k] = solve_triangular(L, np.eye(D), lower=True).T
                logdet[k] = -np.log(np.diag(L)).sum()
            return U, logdet
        var = np.asarray(params["cov" if self.covariance == "diag" else "var"], dtype=float)
        if np.any(~(var > 0)):
            raise ValueError("a variance of the Gaussian mixture is not positive; "
                             "increase reg_covar or use fewer components")
        isd = 1.0 / np.sqrt(var)
        logdet = np.log(isd).sum(axis=1) if self.covariance == "diag" else self.n_features * np.log(isd)
        return isd, logdet

    class _Consts:
        """What the block computations need from the parameters, computed once per parameter
        values (:meth:`_consts` caches it: an EM map evaluates every chunk at the same ones).

        ``const`` (K, 1): log w_k + log det U_k - D/2 log 2 pi; full: ``stacked`` = [U_1'..U_K' |
        -b] / sqrt(2) (K*D, D+1) with b_k = U_k'(mu_k - shift); diag: ``muc`` (K, D, 1) and ``fac``
        (K, D, 1) the inverse standard deviations / sqrt(2); spherical: ``muc`` and ``fac2`` (K, 1)
        the inverse variances / 2.  So the sum of squares is half the Mahalanobis distance and
        log p(x, z=k) = const - that sum.

        ``quad`` (K, F) or None: the coefficients of log p(x, z=k) on the quadratic features
        of :meth:`_Work.features` (the E-step's fast path; see :meth:`_e_step_stats`), None when
        that path is not used.  Read-only once built, so threads may share it.
        """

        def __init__(self, model: "GaussianMixtureModel", params: Params) -> None:
            K, D = model.n_components, model.n_features
            fac, logdet = model._factors(params)
            with np.errstate(divide="ignore"):
                logw = np.log(np.asarray(params["weight"], dtype=float))
            self.const = (logw + logdet - 0.5 * D * _LOG_2PI)[:, None]
            mu = np.asarray(params["mean"], dtype=float) - model.shift
            self.muc = mu[:, :, None]
            if model.covariance == "full":
                b = np.einsum("kd,kde->ke", mu, fac).reshape(K * D, 1)
                self.stacked = np.hstack([fac.transpose(0, 2, 1).reshape(K * D, D), -b]) * _SQRT_HALF
                prec = fac @ fac.transpose(0, 2, 1)             # U U' = the precision matrices
                lin = np.einsum("kab,kb->ka", prec, mu)         # P (mu - shift)
                a, b2 = _upper(D)
                quad = -prec[:, a, b2] * np.where(a == b2, 0.5, 1.0)
            else:
                prec = fac * fac if model.covariance == "diag" else np.outer(fac * fac, np.ones(D))
                lin = prec * mu
                if model.covariance == "diag":
                    self.fac = fac[:, :, None] * _SQRT_HALF
                    quad = -0.5 * prec
                else:
                    self.fac2 = (0.5 * fac * fac)[:, None]
                    quad = -0.5 * prec[:, :1]
            centre = np.einsum("ka,ka->k", mu, lin)               # (mu - shift)' P (mu - shift)
            self.quad = None
            if model._quadratic_path() and np.all(centre <= _QUAD_LIMIT):
                self.quad = np.hstack([quad, lin, self.const - 0.5 * centre[:, None]])

    def _quadratic_path(self) -> bool:
        """Whether the E-step's fast path pays for this K and D (see :meth:`_e_step_stats`)."""
        K, D = self.n_components, self.n_features
        n_quad = {"full": D * (D + 1) // 2, "diag": D, "spherical": 1}[self.covariance]
        return n_quad + D + 1 <= _QUAD_RATIO * K * (D + 1)

    def _consts(self, params: Params) -> "GaussianMixtureModel._Consts":
        """:class:`_Consts` of ``params``, cached for the last parameter values seen (compared
        byte for byte with the shift: a cheap test next to a chunk's work, never a stale hit)."""
        arrays = [np.asarray(params[name], dtype=float)
                  for name in ("weight", "mean", "var" if self.covariance == "spherical" else "cov")]
        key = (self.shift.tobytes(), *[(a.shape, a.tobytes()) for a in arrays])
        hit = self.__dict__.get("_consts_cache")
        if hit is not None and hit[0] == key:
            return hit[1]
        consts = self._Consts(self, params)
        self.__dict__["_consts_cache"] = (key, consts)      # one assignment: thread-safe
        return consts

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the cache of :meth:`_consts` (models travel to workers)."""
        state = dict(self.__dict__)
        state.pop("_consts_cache", None)
        return state

    class _Work:
        """Reusable buffers of the block computations (one per call: threads never share one).

        Rows are processed transposed: ``XA`` (D+1, n) holds ``(x - shift)'`` with a last
        row of ones, so for full covariances ``Y = [U_1'..U_K' | -b] XA`` is one GEMM giving
        the whitened residuals of every class, and the scatter matrices (with the weighted
        sums in their last row) are one more.  Long axes are contiguous, which keeps the
        per-row softmax over K classes vectorised.  Statistics accumulate block by block in
        ``acc`` (in block order: the same sums as adding the blocks' statistics).

        ``quad=True``: the quadratic features ``Phi`` (F, n) = [products x_a x_b, a <= b (full) /
        squares x_a^2 (diag) / sum of squares (spherical); x_1..x_D; 1], with ``XA`` its last
        D+1 rows; log p(x, z) = quad-coefficients @ Phi and the statistics = resp @ Phi'.
        """

        def __init__(self, model: "GaussianMixtureModel", n_rows: int, quad: bool = False):
            K, D = model.n_components, model.n_features
            self.K, self.D, self.shift, self.cov_type = K, D, model.shift, model.covariance
            self.m = K * (D + 1) + (-K * (D + 1)) % _PAD_ROWS  # rows of the scatter GEMM
            self.n_quad = {"full": D * (D + 1) // 2, "diag": D, "spherical": 1}[self.cov_type]
            rows = self.n_quad + D + 1 if quad else self.m + D + 1
            self.block = B = min(_BLOCK, max(n_rows, 1), max(256, _BLOCK_BYTES // (8 * rows)))
            self.quad = quad
            if quad:
                self.phi = np.empty((self.n_quad + D + 1) * B)
            else:
                self.xa = np.empty((D + 1) * B)
                self.buf = np.empty(self.m * B)
            self.acc: dict[str, np.ndarray] | None = None

        def rows(self, X: np.ndarray) -> np.ndarray:
            """``XA`` (D+1, n) for the rows ``X`` (n, D), in the reusable buffer."""
            n, D = X.shape[0], self.D
            if self.quad:
                XA = self.phi[: (self.n_quad + D + 1) * n].reshape(-1, n)[self.n_quad:]
            else:
                XA = self.xa[: (D + 1) * n].reshape(D + 1, n)
            np.subtract(X.T, self.shift[:, None], out=XA[:D])
            XA[D] = 1.0
            return XA

        def features(self, X: np.ndarray) -> np.ndarray:
            """``Phi`` (F, n) of the rows ``X`` (n, D), in the reusable buffer (``quad=True``)."""
            n, D = X.shape[0], self.D
            Phi = self.phi[: (self.n_quad + D + 1) * n].reshape(-1, n)
            XA = self.rows(X)
            if self.cov_type == "full":
                o = 0
                for a in range(D):                     # x_a x_b for b >= a, as np.triu_indices
                    np.multiply(XA[a], XA[a:D], out=Phi[o:o + D - a])
                    o += D - a
            elif self.cov_type == "diag":
                np.square(XA[:D], out=Phi[:D])
            else:
                np.einsum("an,an->n", XA[:D], XA[:D], out=Phi[0])
            return Phi

        def log_joint(self, XA: np.ndarray, c: "GaussianMixtureModel._Consts") -> np.ndarray:
            """log p(x_i, z_i=k) transposed, shape (K, n)."""
            K, D, n = self.K, self.D, XA.shape[1]
            Y = self.buf[: K * D * n].reshape(K, D, n)
            if self.cov_type == "full":
                np.matmul(c.stacked, XA, out=Y.reshape(K * D, n))
            else:
                np.subtract(XA[None, :D], c.muc, out=Y)
                if self.cov_type == "diag":
                    Y *= c.fac
            half = np.einsum("kdn,kdn->kn", Y, Y)      # half the Mahalanobis distances (full, diag)
            if self.cov_type == "spherical":
                half *= c.fac2
            return np.subtract(c.const, half, out=half)

        def add_stats(self, XA: np.ndarray, respT: np.ndarray) -> None:
            """Add the statistics of these rows, responsibilities transposed (K, n), to ``acc``."""
            K, D, n = self.K, self.D, XA.shape[1]
            Xc = XA[:D]
            nk = respT.sum(axis=1)
            if self.cov_type == "full":
                W = self.buf[: self.m * n].reshape(self.m, n)
                np.multiply(respT[:, None, :], XA[None], out=W[: K * (D + 1)].reshape(K, D + 1, n))
                W[K * (D + 1):] = 0.0                   # padding rows
                part = {"nk": nk, "G": W @ Xc.T}
            else:
                sq = Xc * Xc
                part = {"nk": nk, "sx": respT @ Xc.T,
                        "sxx": respT @ (sq.T if self.cov_type == "diag" else sq.sum(axis=0))}
            self._add(part)

        def add_feature_stats(self, Phi: np.ndarray, respT: np.ndarray) -> None:
            """Add ``respT @ Phi'`` (K, F): every statistic of these rows in one product."""
            self._add({"S": respT @ Phi.T})

        def _add(self, part: dict[str, np.ndarray]) -> None:
            if self.acc is None:
                self.acc = part
            else:
                for key, value in part.items():
                    self.acc[key] += value

        def result(self) -> dict[str, np.ndarray]:
            """The accumulated statistics (``nk``, ``sx``, ``sxx``)."""
            acc, K, D = self.acc, self.K, self.D
            if acc is None:       # no rows
                shape = {"full": (K, D, D), "diag": (K, D), "spherical": (K,)}[self.cov_type]
                return {"nk": np.zeros(K), "sx": np.zeros((K, D)), "sxx": np.zeros(shape)}
            if "S" in acc:
                S, q = acc["S"], self.n_quad
                out = {"nk": np.ascontiguousarray(S[:, -1]), "sx": np.ascontiguousarray(S[:, q:q + D])}
                if self.cov_type == "full":
                    a, b = _upper(D)
                    sxx = np.empty((K, D, D))
                    sxx[:, a, b] = S[:, :q]
                    sxx[:, b, a] = S[:, :q]
                    out["sxx"] = sxx
                else:
                    out["sxx"] = np.ascontiguousarray(S[:, :q] if self.cov_type == "diag" else S[:, 0])
                return out
            if self.cov_type != "full":
                return acc
            G = acc["G"][: K * (D + 1)].reshape(K, D + 1, D)
            return {"nk": acc["nk"], "sx": np.ascontiguousarray(G[:, D]),
                    "sxx": np.ascontiguousarray(G[:, :D])}

    def log_joint(self, data: Data, params: Params) -> np.ndarray:
        X = np.asarray(data["X"], dtype=float)
        c = self._consts(params)
        work = self._Work(self, X.shape[0])
        out = np.empty((X.shape[0], self.n_components))
        step = work.block
        for s in range(0, X.shape[0], step):
            out[s:s + step] = work.log_joint(work.rows(X[s:s + step]), c).T
        return out

    def suff_stats(self, data: Data, resp: np.ndarray) -> dict[str, np.ndarray]:
        X = np.asarray(data["X"], dtype=float)
        resp = np.asarray(resp, dtype=float)
        work = self._Work(self, X.shape[0])
        step = work.block
        for s in range(0, X.shape[0], step):
            work.add_stats(work.rows(X[s:s + step]), np.ascontiguousarray(resp[s:s + step].T))
        return work.result()

    def e_step_stats(self, data: Data, params: Params) -> tuple[dict[str, np.ndarray], float]:
        """Fused E-step: statistics of these rows and their log-likelihood, block by block."""
        return self._e_step_stats(data, params, None)

    def e_step_stats_weighted(self, data: Data, params: Params,
                              weights: np.ndarray) -> tuple[dict[str, np.ndarray], float]:
        """:meth:`e_step_stats` of rows each standing for ``weights[i]`` rows: the statistics of
        ``resp * w`` and the log-likelihood ``w @ loglik_rows``, fused as the unweighted one
        (the responsibilities' normalisation and the weights in one multiplication)."""
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        return self._e_step_stats(data, params, w)

    def _e_step_stats(self, data: Data, params: Params,
                      w: np.ndarray | None) -> tuple[dict[str, np.ndarray], float]:
        """The E-step of a chunk, block by block, by one of two paths.

        * quadratic features (when :meth:`_quadratic_path` says it pays, e.g. K=5, D=10 full, and
          every class mean lies within sqrt(_QUAD_LIMIT) = 100 of its own standard deviations
          of the shift): ``Phi`` = [x_a x_b; x; 1] of the centred rows is built once per block
          and both products use it: log p(x, z=k) = C_k . Phi (one GEMM for every class) and
          nk, sx, sxx = resp @ Phi' (one more).  Expanding (x-mu)'P(x-mu) cancels terms of size
          (mu-shift)'P(mu-shift), hence the limit: the rounding error stays below ~1e4 * eps
          (~1e-12) in a log-density;
        * whitened residuals (otherwise, and in the public :meth:`log_joint`): one GEMM gives
          U_k'(x - mu_k) for every class, exact to rounding however far the classes lie.
        """
        X = np.asarray(data["X"], dtype=float)
        if w is not None and w.shape[0] != X.shape[0]:
            raise ValueError(f"{w.shape[0]} weights for {X.shape[0]} rows")
        c = self._consts(params)
        quad = c.quad is not None
        work = self._Work(self, X.shape[0], quad=quad)
        ll, step = 0.0, work.block
        for s in range(0, X.shape[0], step):
            if quad:
                Phi = work.features(X[s:s + step])
                lj = c.quad @ Phi                     # (K, n); becomes the responsibilities
            else:
                XA = work.rows(X[s:s + step])
                lj = work.log_joint(XA, c)
            mx = lj.max(axis=0)
            lj -= mx
            np.exp(lj, out=lj)
            total_k = lj.sum(axis=0)
            if w is None:
                ll += float((mx + np.log(total_k)).sum())
                np.reciprocal(total_k, out=total_k)
            else:
                wb = w[s:s + step]
                ll += float(wb @ (mx + np.log(total_k)))
                np.divide(wb, total_k, out=total_k)
            lj *= total_k
            if quad:
                work.add_feature_stats(Phi, lj)
            else:
                work.add_stats(XA, lj)
        return work.result(), ll

    def m_step(self, stats: Mapping[str, np.ndarray]) -> Params:
        """Weights, means and regularised covariances from summed statistics.

        An empty class gets the overall mean and covariance.  Singularity is decided from the
        eigenvalues scaled by the data's variances (below ``_SINGULAR``), never from whether a
        factorisation fails, which depends on the LAPACK build: a class whose own scatter is
        singular is reported (kept valid by ``reg_covar``); one still singular after
        ``reg_covar`` is ridged up to ``_FLOOR``, with a warning.
        """
        nk, sx, sxx = (np.asarray(stats[key], dtype=float) for key in ("nk", "sx", "sxx"))
        K, D = sx.shape
        n = float(nk.sum())
        nk_safe = nk + 10 * np.finfo(float).eps  # as scikit-learn: no division by zero
        weight = nk_safe / nk_safe.sum()
        d = sx / nk_safe[:, None]
        d_tot = sx.sum(axis=0) / n
        empty = nk < _EMPTY * n
        for k in np.flatnonzero(empty):
            warnings.warn(t("gmm.empty_component", k=int(k) + 1), ModelWarning, stacklevel=2)
        d[empty] = d_tot
        reg = self.reg_covar
        params: Params = {"weight": weight, "mean": self.shift + d}
        tiny = np.finfo(float).tiny
        if self.covariance == "full":
            raw = sxx / nk_safe[:, None, None] - d[:, :, None] * d[:, None, :]
            tot = sxx.sum(axis=0) / n - np.outer(d_tot, d_tot)
            raw[empty] = tot
            raw = 0.5 * (raw + raw.transpose(0, 2, 1))
            var_scale = np.clip(np.diag(tot), tiny, None)       # the data's variance per column
            cov = raw + reg * np.eye(D)
            lams_raw = _smallest_scaled_eigenvalue(raw, var_scale)     # one LAPACK call per stack
            lams = _smallest_scaled_eigenvalue(cov, var_scale)
            for k in range(K):
                lam_raw, lam = float(lams_raw[k]), float(lams[k])
                self._warn_singular(k, lam, lam_raw, bool(empty[k]))
                if lam <= _SINGULAR:
                    cov[k] = self._ridge(cov[k], lam, var_scale, k)
            params["cov"] = cov
            return params
        if self.covariance == "diag":
            raw = sxx / nk_safe[:, None] - d * d
            tot = sxx.sum(axis=0) / n - d_tot * d_tot
            raw[empty] = tot
            var_scale, name = np.clip(tot, tiny, None), "cov"
        else:
            raw = (sxx / nk_safe - np.einsum("kd,kd->k", d, d)) / D
            tot = (sxx.sum() / n - d_tot @ d_tot) / D
            raw[empty] = tot
            var_scale, name = max(float(tot), tiny), "var"
        var = np.maximum(raw, 0.0) + reg
        for k in range(K):  # a diagonal covariance's scaled eigenvalues are var / var_scale
            lam_raw = float(np.min(raw[k] / var_scale))
            lam = float(np.min(var[k] / var_scale))
            if lam <= _SINGULAR:
                var[k] = np.maximum(var[k], _FLOOR * var_scale)
            self._warn_singular(k, lam, lam_raw, bool(empty[k]))
        params[name] = var
        return params

    def _warn_singular(self, k: int, lam: float, lam_raw: float, empty: bool) -> None:
        """The one warning that says how class ``k``'s covariance was kept valid, if any.

        ``lam_raw`` / ``lam``: smallest scaled eigenvalue before / after ``reg_covar``.
        """
        if lam <= _SINGULAR:
            warnings.warn(t("gmm.singular_after_reg", k=k + 1, reg=self.reg_covar), ModelWarning,
                          stacklevel=3)
        elif lam_raw <= _SINGULAR and not empty:
            warnings.warn(t("gmm.singular", k=k + 1, reg=self.reg_covar), ModelWarning, stacklevel=3)

    @staticmethod
    def _ridge(cov: np.ndarray, lam: float, var_scale: np.ndarray, k: int) -> np.ndarray:
        """``cov + r diag(var_scale)``, ``r`` lifting the smallest scaled eigenvalue ``lam`` to _FLOOR.

        So the decision and the repair are the same in any units and whatever LAPACK does
        with a singular matrix; the Cholesky check is only a safety net (tenfold ridge).
        """
        ridge = (_FLOOR - lam) * np.diag(var_scale)
        for _ in range(12):
            try:
                np.linalg.cholesky(cov + ridge)
            except np.linalg.LinAlgError:
                ridge = ridge * 10.0
                continue
            return cov + ridge
        raise ValueError(f"the covariance of component {k + 1} cannot be made positive definite; "
                         "scale the data")

    # ------------------------------------------------- starts and degeneracy
    def start_features(self, data: Data) -> np.ndarray:
        """The columns standardised (constant ones left at 0), for data-driven starts."""
        X = np.asarray(data["X"], dtype=float)
        sd = X.std(axis=0)
        return (X - X.mean(axis=0)) / np.where(sd > 0, sd, 1.0)

    def degeneracies(self, params: Params, stats: Mapping[str, Any]) -> list[str]:
        """``singular_covariance`` and ``few_rows``, one per offending component.

        * ``singular_covariance``: in some direction v the component's variance v'S_k v is
          below ``DEGENERATE_FRACTION`` (1e-3) of the data's variance v'S v there (the
          smallest generalised eigenvalue of (S_k, S); diagonal and spherical covariances
          compare each column's, or the mean, variance), or at most twice ``reg_covar``
          (the floor then holds up at least half of it): a component collapsed onto a few
          identical values or a line, the classic spurious maximum of an unbounded likelihood;
        * ``few_rows``: an effective number of rows (``nk``) too small to estimate a
          covariance: below D + 1 (full) or 2 (diagonal, spherical).
        """
        nk = np.asarray(stats["nk"], dtype=float)
        sx, sxx = np.asarray(stats["sx"], dtype=float), np.asarray(stats["sxx"], dtype=float)
        n = float(nk.sum())
        d_tot = sx.sum(axis=0) / n
        K, D = sx.shape
        out: list[str] = []
        reg = 2.0 * self.reg_covar
        if self.covariance == "full":
            tot = sxx.sum(axis=0) / n - np.outer(d_tot, d_tot)
            tot = 0.5 * (tot + tot.T)
            scale = np.clip(np.diag(tot), np.finfo(float).tiny, None)
            isd = 1.0 / np.sqrt(scale)
            S = tot * np.outer(isd, isd) + 1e-12 * np.eye(D)   # the data's correlation matrix
            L = np.linalg.cholesky(S)
        for k in range(K):
            if self.covariance == "full":
                cov = np.asarray(params["cov"][k], dtype=float)
                A = solve_triangular(L, cov * np.outer(isd, isd), lower=True)
                G = solve_triangular(L, A.T, lower=True)       # L^-1 C L^-T
                rel = float(np.linalg.eigvalsh(0.5 * (G + G.T))[0])
                low = float(np.linalg.eigvalsh(cov)[0])
                needed = D + 1
            else:
                if self.covariance == "diag":
                    var = np.asarray(params["cov"][k], dtype=float)
                    tot = sxx.sum(axis=0) / n - d_tot * d_tot
                else:
                    var = np.asarray([params["var"][k]], dtype=float)
                    tot = np.asarray([(sxx.sum() / n - d_tot @ d_tot) / D])
                rel = float(np.min(var / np.clip(tot, np.finfo(float).tiny, None)))
                low = float(np.min(var))
                needed = 2
            if rel < DEGENERATE_FRACTION or (reg > 0 and low <= reg):
                out.append("singular_covariance")
            if nk[k] < needed:
                out.append("few_rows")
        return out

    # --------------------------------------------------------- starting values
    def init_params(self, data: Data, rng: np.random.Generator) -> Params:
        """K distinct random rows as means, the data's covariance for every class, equal weights.

        Starting every class with the overall covariance makes the first E-step a soft
        nearest-mean assignment, which EM then sharpens; distinct rows avoid two identical
        classes, which EM could never separate.  A singular overall covariance (linearly
        dependent columns) is ridged as in :meth:`m_step`, which then warns.
        """
        X = np.asarray(data["X"], dtype=float)
        n, D = X.shape
        K = self.n_components
        cand = rng.permutation(n)[: min(n, 20 * K)]
        _, first = np.unique(X[cand], axis=0, return_index=True)
        chosen = cand[np.sort(first)][:K]
        if chosen.size < K:  # fewer distinct rows than classes: repeat some
            chosen = np.concatenate([chosen, rng.choice(n, size=K - chosen.size)])
        work = self._Work(self, n)  # the data's covariance, block by block (no n x D copy)
        S, m = np.zeros((D, D)), np.zeros(D)
        for s in range(0, n, work.block):
            Xc = work.rows(X[s:s + work.block])[:D]
            S += Xc @ Xc.T
            m += Xc.sum(axis=1)
        m /= n
        tot = S / n - np.outer(m, m)
        params: Params = {"weight": np.full(K, 1.0 / K), "mean": X[chosen].copy()}
        if self.covariance == "full":  # linearly dependent columns: ridged as in the M-step
            cov = tot + self.reg_covar * np.eye(D)
            var_scale = np.clip(np.diag(tot), np.finfo(float).tiny, None)
            lam = _smallest_scaled_eigenvalue(cov, var_scale)
            if lam <= _SINGULAR:
                cov = self._ridge(cov, lam, var_scale, 0)
            params["cov"] = np.repeat(cov[None], K, axis=0)
        elif self.covariance == "diag":
            params["cov"] = np.repeat((np.diag(tot) + self.reg_covar)[None], K, axis=0)
        else:
            params["var"] = np.full(K, np.trace(tot) / D + self.reg_covar)
        return params

    # ------------------------------------------------------------- simulation
    def sample(self, params: Params, data: Data, rng: np.random.Generator) -> Data:
        """As many rows as ``data``: classes drawn by weight, then normal draws."""
        n = np.asarray(data["X"]).shape[0]
        w = np.asarray(params["weight"], dtype=float)
        z = rng.choice(self.n_components, size=n, p=w / w.sum())
        e = rng.standard_normal((n, self.n_features))
        X = np.asarray(params["mean"], dtype=float)[z]
        if self.covariance == "full":
            for k in range(self.n_components):
                rows = z == k
                X[rows] += e[rows] @ np.linalg.cholesky(params["cov"][k]).T
        elif self.covariance == "diag":
            X += e * np.sqrt(np.asarray(params["cov"], dtype=float)[z])
        else:
            X += e * np.sqrt(np.asarray(params["var"], dtype=float)[z])[:, None]
        return {"X": X}

    def canonical_order(self, params: Params) -> np.ndarray:
        """Increasing mean of the first column; ties broken by the next columns, then index."""
        mean = np.asarray(params["mean"], dtype=float)
        keys = [np.arange(mean.shape[0])] + [mean[:, j] for j in range(mean.shape[1] - 1, -1, -1)]
        return np.lexsort(keys)

    # ------------------------------------- partitioned input (src.data.partitions)
    @classmethod
    def fast_chunk(cls, columns: list[str], options: Mapping[str, Any]) -> Any:
        """``X`` is the matrix of the model's columns as they are (:meth:`prepare_data`)."""
        return list(columns), lambda X: {"X": X}

    @classmethod
    def chunk_meta(cls, data: Data, meta: dict[str, Any]) -> dict[str, Any]:
        """A chunk's meta plus each column's smallest and largest kept value (``_min``,
        ``_max``), for the constant-column check over every row."""
        out = dict(meta)
        X = np.asarray(data["X"], dtype=float)
        if X.shape[0]:
            out["_min"] = [float(v) for v in X.min(axis=0)]
            out["_max"] = [float(v) for v in X.max(axis=0)]
        return out

    @classmethod
    def merge_meta(cls, metas: list[dict[str, Any]], counts: list[int], *,
                   source: str = "the data") -> dict[str, Any]:
        """Chunks' meta merged: ``shift`` the row-weighted mean of theirs (the column means
        of every kept row, to rounding), ``n_dropped`` summed; a column constant over every
        kept row is the error :meth:`prepare_data` gives for whole data."""
        from src.data.partitions import merge_equal
        from src.utils.errors import DataError

        out = merge_equal(metas, counts, source=source, model=cls.name, averaged=("shift",))
        ranged = [m for m, c in zip(metas, counts) if c > 0 and "_min" in m]
        if sum(int(c) for c in counts) > 1 and ranged:
            low = np.min([m["_min"] for m in ranged], axis=0)
            high = np.max([m["_max"] for m in ranged], axis=0)
            for j, name in enumerate(out["columns"]):
                if low[j] == high[j]:
                    raise DataError(t("data.constant_column", column=str(name), source=source,
                                       value=f"{low[j]:g}"))
        return out
