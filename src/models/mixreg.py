"""Mixture of linear regressions with Gaussian errors (``--model mixreg``).

``log p(y_i, z_i = k) = log w_k + log N(y_i; x_i' coef_k, sigma_k^2)``.

* Options: ``target`` (required, the response column; every other selected column is a
  predictor), ``intercept`` (default True: a column of ones named ``intercept`` comes
  first), ``sigma_floor`` (default 1e-4 x the standard deviation of the target): sigma is
  never estimated below it, and reaching it raises a :class:`ModelWarning`, since an
  unbounded likelihood (a class fitting a few rows exactly) is the usual cause.
  ``drop_missing`` drops rows with a missing value instead of failing.
* M-step: weighted least squares per class from additive statistics (``nk``, X'WX,
  X'Wy, y'Wy).  The statistics are centred on fixed shifts (the column means of the data
  passed to :meth:`prepare_data`, kept in ``meta``) so data far from zero loses no digits;
  the intercept absorbs the shift exactly.
* Canonical order: increasing first coefficient (ties: the next coefficients).
* Free parameterisation: K-1 weights, then coef class by class, then sigma (natural scale).
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping

import numpy as np

from src.utils.errors import DataError
from src.utils.messages import register, t

from src.utils.options import Option

from .base import Data, MixtureModel, ModelWarning, Params, ParamSpec
from .base import responsibilities as _responsibilities

__all__ = ["MixtureRegressionModel"]

LOG_2PI = float(np.log(2.0 * np.pi))

register({
    "option.report.target": {"en": "response {value}", "zh": "因变量 {value}"},
    "mixreg.no_target": {
        "en": "The regression mixture needs a target column: set --target to one of {available}.",
        "zh": "回归混合模型需要目标列：请将 --target 设为以下之一：{available}。"},
    "mixreg.bad_target": {
        "en": "--target {target!r} is not a selected column; the selected columns are: {available}.",
        "zh": "--target {target!r} 不在所选列中；所选列为：{available}。"},
    "mixreg.no_predictors": {
        "en": "The regression mixture has no predictor: select columns besides the target or "
              "turn the intercept on.",
        "zh": "回归混合模型没有自变量：请选择目标列之外的列或开启截距。"},
    "mixreg.intercept_name": {
        "en": "A predictor column is named 'intercept', which clashes with the intercept; rename it.",
        "zh": "有一个自变量列名为 'intercept'，与截距冲突；请重命名。"},
    "mixreg.constant": {
        "en": "Predictor {column!r} is constant, so it cannot be told apart from the intercept; "
              "remove it.",
        "zh": "自变量 {column!r} 为常数，无法与截距区分；请移除它。"},
    "mixreg.collinear": {
        "en": "The predictors are linearly dependent (the design has rank {rank} for {p} columns); "
              "remove a redundant column.",
        "zh": "自变量线性相关（设计矩阵的秩为 {rank}，共 {p} 列）；请移除多余的列。"},
    "mixreg.sigma_floor": {
        "en": "The error standard deviation of component {k} collapsed to the floor {floor:.3g} "
              "(the component fits a few rows almost exactly); use fewer components, more "
              "starts, or a larger sigma_floor.",
        "zh": "成分 {k} 的误差标准差降到下限 {floor:.3g}（该成分几乎完全拟合少数几行）；"
              "请减少成分数、增加随机起点或提高 sigma_floor。"},
    "mixreg.singular": {
        "en": "Component {k} has too little data to determine its coefficients (weighted "
              "design of rank < {p}); a minimum-norm solution was used: use fewer components.",
        "zh": "成分 {k} 的数据不足以确定其系数（加权设计矩阵秩小于 {p}），已使用最小范数解；"
              "请减少成分数。"},
})




class MixtureRegressionModel(MixtureModel):
    """Gaussian mixture of linear regressions; data ``{"X": (N, P), "y": (N,)}``."""

    name = "mixreg"
    figures = ("regression",)
    has_closed_form_m_step = True
    option_specs = (
        Option("target", str, None, "mixreg: the response column", nullable=True,
               group="model options", fingerprint="data_preparation", report="response {}"),
        Option("intercept", bool, True, "mixreg: no intercept", group="model options",
               fingerprint="data_preparation"),
        Option("sigma_floor", float, None, "mixreg: smallest error SD (default 1e-4 x SD of "
               "target)", nullable=True, low=0, group="model options",
               fingerprint="data_preparation"),
    )

    # ------------------------------------------------------------------ data
    @classmethod
    def prepare_data(cls, frame: Any, options: Mapping[str, Any]) -> tuple[Data, dict[str, Any]]:
        """Design matrix (intercept first when on) and target; numeric, no missing values.

        A chunk of partitioned input (``options["_chunk"]``) leaves the constant-predictor
        and rank checks to :meth:`merge_meta`, over every row.
        """
        from src.data.loading import numeric_matrix

        columns = [str(c) for c in frame.columns]
        target = options.get("target")
        if not target:
            raise DataError(t("mixreg.no_target", available=", ".join(columns)))
        if str(target) not in columns:
            raise DataError(t("mixreg.bad_target", target=str(target), available=", ".join(columns)))
        target = str(target)
        intercept = bool(options.get("intercept", True))
        predictors = [c for c in columns if c != target]
        if intercept and "intercept" in predictors:
            raise DataError(t("mixreg.intercept_name"))
        if not predictors and not intercept:
            raise DataError(t("mixreg.no_predictors"))
        values, keep = numeric_matrix(frame, [target] + predictors,
                                   drop_missing=bool(options.get("drop_missing", False)),
                                   source=str(options.get("source", "the data")))
        y, Z = values[:, 0].copy(), values[:, 1:]
        whole = not options.get("_chunk")
        if intercept:
            for j, name in enumerate(predictors):
                if whole and Z.shape[0] > 1 and np.all(Z[:, j] == Z[0, j]):
                    raise DataError(t("mixreg.constant", column=name))
            X = np.column_stack([np.ones(y.size), Z])
        else:
            X = np.ascontiguousarray(Z)
        rank = int(np.linalg.matrix_rank(X)) if whole else X.shape[1]
        if rank < X.shape[1]:
            raise DataError(t("mixreg.collinear", rank=rank, p=X.shape[1]))
        meta = {"predictors": (["intercept"] if intercept else []) + predictors,
                "target": target, "intercept": intercept, "n_dropped": int((~keep).sum())}
        meta.update(cls.shifts_of(X, y, intercept))
        return {"X": X, "y": y}, meta

    @staticmethod
    def shifts_of(X: np.ndarray, y: np.ndarray, intercept: bool) -> dict[str, Any]:
        """Centring shifts (column means; none without an intercept) and the target's scale."""
        X = np.asarray(X, dtype=float)
        y = np.asarray(y, dtype=float)
        if y.size == 0:   # a chunk of partitioned input that kept no row
            return {"x_shift": [0.0] * X.shape[1], "y_shift": 0.0, "y_scale": 1.0}
        x_shift = X.mean(axis=0) if intercept else np.zeros(X.shape[1])
        if intercept:
            x_shift[0] = 0.0
        return {"x_shift": [float(v) for v in x_shift],
                "y_shift": float(y.mean()) if intercept else 0.0,
                "y_scale": float(y.std()) if y.size > 1 and y.std() > 0 else 1.0}

    # ------------------------------------- partitioned input (src.data.partitions)
    @classmethod
    def fast_chunk(cls, columns: list[str], options: Mapping[str, Any]) -> Any:
        """The target and predictors' matrix; ``y`` its first column, ``X`` the others after
        the intercept's ones, as :meth:`prepare_data` makes them (None for options it
        refuses: the chunk then goes through it)."""
        target = options.get("target")
        columns = [str(c) for c in columns]
        intercept = bool(options.get("intercept", True))
        if not target or str(target) not in columns:
            return None
        predictors = [c for c in columns if c != str(target)]
        if (intercept and "intercept" in predictors) or (not predictors and not intercept):
            return None

        def make(values: np.ndarray) -> Data:
            y, Z = values[:, 0].copy(), values[:, 1:]
            X = np.column_stack([np.ones(y.size), Z]) if intercept else np.ascontiguousarray(Z)
            return {"X": X, "y": y}

        return [str(target)] + predictors, make

    @classmethod
    def chunk_meta(cls, data: Data, meta: dict[str, Any]) -> dict[str, Any]:
        """A chunk's meta plus what the checks over every row need: its rows ``_n``, the
        target's mean ``_y_mean`` and sum of squared deviations ``_y_m2``, the design's
        column ranges ``_min`` / ``_max`` and its QR factor ``_r`` (an array)."""
        out = dict(meta)
        X, y = np.asarray(data["X"], dtype=float), np.asarray(data["y"], dtype=float)
        out["_n"] = int(y.size)
        if y.size:
            mean = float(y.mean())
            out["_y_mean"], out["_y_m2"] = mean, float(((y - mean) ** 2).sum())
            out["_min"] = [float(v) for v in X.min(axis=0)]
            out["_max"] = [float(v) for v in X.max(axis=0)]
            out["_r"] = np.linalg.qr(X, mode="r")
        return out

    @classmethod
    def merge_meta(cls, metas: list[dict[str, Any]], counts: list[int], *,
                   source: str = "the data") -> dict[str, Any]:
        """Chunks' meta merged: the shifts the row-weighted means of theirs, ``y_scale`` the
        pooled standard deviation of the target, ``n_dropped`` summed; a constant predictor
        or a design of deficient rank over every kept row is the error :meth:`prepare_data`
        gives for whole data (the rank from the chunks' stacked QR factors, with
        ``matrix_rank``'s tolerance)."""
        import math

        from src.data.partitions import merge_equal

        intercept = bool(metas[0].get("intercept", True)) if metas else True
        out = merge_equal(metas, counts, source=source, model=cls.name, skip=("y_scale",),
                          averaged=("x_shift", "y_shift") if intercept else ())
        rows = [m for m, c in zip(metas, counts) if int(c) > 0 and "_r" in m]
        total = sum(int(m["_n"]) for m in rows)
        out["y_scale"] = 1.0
        if not rows:
            return out
        mean = math.fsum(m["_n"] * m["_y_mean"] for m in rows) / total
        m2 = math.fsum([m["_y_m2"] for m in rows] +
                       [m["_n"] * (m["_y_mean"] - mean) ** 2 for m in rows])
        sd = math.sqrt(m2 / total)
        out["y_scale"] = sd if total > 1 and sd > 0 else 1.0
        if intercept and total > 1:
            low = np.min([m["_min"] for m in rows], axis=0)
            high = np.max([m["_max"] for m in rows], axis=0)
            for j, name in enumerate(out["predictors"][1:], start=1):
                if low[j] == high[j]:
                    raise DataError(t("mixreg.constant", column=name))
        R = None
        for m in rows:
            R = m["_r"] if R is None else np.linalg.qr(np.vstack([R, m["_r"]]), mode="r")
        s = np.linalg.svd(R, compute_uv=False)
        p = R.shape[1]
        rank = int((s > s.max() * max(total, p) * np.finfo(float).eps).sum()) if s.size else 0
        if rank < p:
            raise DataError(t("mixreg.collinear", rank=rank, p=p))
        return out

    def setup(self, meta: Mapping[str, Any]) -> None:
        super().setup(meta)
        self.predictors = [str(p) for p in meta["predictors"]]
        P = len(self.predictors)
        self.x_shift = np.asarray(meta.get("x_shift", np.zeros(P)), dtype=float)
        self.y_shift = float(meta.get("y_shift", 0.0))
        floor = self.options.get("sigma_floor")
        self.sigma_floor = float(floor) if floor is not None else 1e-4 * float(meta.get("y_scale", 1.0))

    def _require_setup(self) -> None:
        if not hasattr(self, "predictors"):
            raise ValueError("call setup(meta) with the meta from prepare_data before using the model")

    # ------------------------------------------------------------- the model
    def param_specs(self) -> list[ParamSpec]:
        self._require_setup()
        return [ParamSpec("weight", (), "simplex"),
                ParamSpec("coef", (len(self.predictors),), "real", labels=(self.predictors,)),
                ParamSpec("sigma", (), "positive")]

    @staticmethod
    def residuals(data: Data, params: Params) -> np.ndarray:
        """y_i - x_i' coef_k, shape (n, K)."""
        return np.asarray(data["y"])[:, None] - np.asarray(data["X"]) @ np.asarray(params["coef"]).T

    def log_joint(self, data: Data, params: Params) -> np.ndarray:
        sigma = np.asarray(params["sigma"], dtype=float)
        with np.errstate(divide="ignore"):
            lw = np.log(np.asarray(params["weight"], dtype=float))
        r = self.residuals(data, params) / sigma[None, :]
        return lw - np.log(sigma) - 0.5 * LOG_2PI - 0.5 * r * r

    def init_params(self, data: Data, rng: np.random.Generator) -> Params:
        """Each class: least squares on a small random subset of rows; equal weights.

        sigma = the root mean squared residual to the nearest of the K lines (floored).
        """
        self._require_setup()
        X, y = np.asarray(data["X"]), np.asarray(data["y"])
        n, P = X.shape
        K = self.n_components
        m = min(n, max(2 * P, P + 2))
        coef = np.empty((K, P))
        for k in range(K):
            idx = rng.choice(n, size=m, replace=False)
            coef[k] = np.linalg.lstsq(X[idx], y[idx], rcond=None)[0]
        r2 = (y[:, None] - X @ coef.T) ** 2
        s = max(float(np.sqrt(r2.min(axis=1).mean())), self.sigma_floor)
        return {"weight": np.full(K, 1.0 / K), "coef": coef, "sigma": np.full(K, s)}

    # ------------------------------------------------- starts and degeneracy
    def start_features(self, data: Data) -> np.ndarray:
        """The predictors (intercept left out) and the target, standardised, for data-driven
        starts: rows close in (x, y) start in the same class."""
        self._require_setup()
        X = np.asarray(data["X"], dtype=float)
        if self.predictors and self.predictors[0] == "intercept":
            X = X[:, 1:]
        F = np.column_stack([X, np.asarray(data["y"], dtype=float)])
        sd = F.std(axis=0)
        return (F - F.mean(axis=0)) / np.where(sd > 0, sd, 1.0)

    def degeneracies(self, params: Params, stats: Mapping[str, Any]) -> list[str]:
        """``sigma_floor`` (a component's sigma at ``sigma_floor``: it fits a few rows almost
        exactly, the unbounded likelihood's spurious maximum) and ``few_rows`` (an effective
        number of rows ``nk`` below P + 1, too few for P coefficients and a positive
        residual variance), one per offending component."""
        self._require_setup()
        nk = np.asarray(stats["nk"], dtype=float)
        sigma = np.asarray(params["sigma"], dtype=float)
        P = len(self.predictors)
        out: list[str] = []
        for k in range(sigma.size):
            if sigma[k] <= self.sigma_floor * (1.0 + 1e-9):
                out.append("sigma_floor")
            if nk[k] < P + 1:
                out.append("few_rows")
        return out

    # ------------------------------------------------------ closed-form M-step
    def suff_stats(self, data: Data, resp: np.ndarray) -> dict[str, np.ndarray]:
        """``nk`` (K,), ``xwx`` (K,P,P), ``xwy`` (K,P), ``ywy`` (K,) on the shifted scale."""
        self._require_setup()
        Xc = np.asarray(data["X"], dtype=float) - self.x_shift[None, :]
        yc = np.asarray(data["y"], dtype=float) - self.y_shift
        resp = np.asarray(resp, dtype=float)
        n, P = Xc.shape
        K = resp.shape[1]
        wx = (resp[:, :, None] * Xc[:, None, :]).reshape(n, K * P)
        return {"nk": resp.sum(axis=0),
                "xwx": (wx.T @ Xc).reshape(K, P, P),
                "xwy": resp.T @ (Xc * yc[:, None]),
                "ywy": resp.T @ (yc * yc)}

    def e_step_stats(self, data: Data, params: Params) -> tuple[dict[str, np.ndarray], float]:
        lj = self.log_joint(data, params)
        resp, ll = _responsibilities(lj)
        return self.suff_stats(data, resp), ll

    def e_step_stats_weighted(self, data: Data, params: Params,
                              weights: np.ndarray) -> tuple[dict[str, np.ndarray], float]:
        """:meth:`e_step_stats` of rows standing for ``weights`` identical rows each."""
        lj = self.log_joint(data, params)
        m = lj.max(axis=1, keepdims=True)
        m[~np.isfinite(m)] = 0.0
        e = np.exp(lj - m)
        s = e.sum(axis=1, keepdims=True)
        w = np.asarray(weights, dtype=np.float64)
        with np.errstate(divide="ignore"):
            ll = float(w @ (np.log(s[:, 0]) + m[:, 0]))
        return self.suff_stats(data, e * (w[:, None] / s)), ll

    def m_step(self, stats: Mapping[str, np.ndarray]) -> Params:
        """Weighted least squares per class; sigma^2 = weighted RSS / nk, floored."""
        self._require_setup()
        nk = np.asarray(stats["nk"], dtype=float)
        xwx, xwy, ywy = (np.asarray(stats[k], dtype=float) for k in ("xwx", "xwy", "ywy"))
        K, P = xwy.shape
        coef = np.zeros((K, P))
        sigma = np.empty(K)
        for k in range(K):
            try:
                np.linalg.cholesky(xwx[k])
                b = np.linalg.solve(xwx[k], xwy[k])
            except np.linalg.LinAlgError:
                warnings.warn(t("mixreg.singular", k=k + 1, p=P), ModelWarning, stacklevel=2)
                b = np.linalg.lstsq(xwx[k], xwy[k], rcond=None)[0]
            rss = max(float(ywy[k] - b @ xwy[k]), 0.0)
            s = np.sqrt(rss / nk[k]) if nk[k] > 0 else 0.0
            if not s > self.sigma_floor:
                warnings.warn(t("mixreg.sigma_floor", k=k + 1, floor=self.sigma_floor),
                              ModelWarning, stacklevel=2)
                s = self.sigma_floor
            if P and self.predictors[0] == "intercept":   # undo the centring
                b = b.copy()
                b[0] += self.y_shift - float(self.x_shift @ b)
            coef[k] = b
            sigma[k] = s
        return {"weight": nk / nk.sum(), "coef": coef, "sigma": sigma}

    # -------------------------------------------------------------- simulation
    def sample(self, params: Params, data: Data, rng: np.random.Generator) -> Data:
        """New targets from the model; the predictors are kept."""
        X = np.asarray(data["X"], dtype=float)
        n = X.shape[0]
        w = np.asarray(params["weight"], dtype=float)
        z = np.minimum(np.searchsorted(np.cumsum(w), rng.random(n) * w.sum(), side="right"),
                       w.size - 1)
        coef = np.asarray(params["coef"], dtype=float)
        sigma = np.asarray(params["sigma"], dtype=float)
        y = np.einsum("np,np->n", X, coef[z]) + sigma[z] * rng.standard_normal(n)
        return {"X": X.copy(), "y": y}

    def canonical_order(self, params: Params) -> np.ndarray:
        """Increasing first coefficient; ties broken by the next ones, then the index."""
        coef = np.asarray(params["coef"], dtype=float)
        keys = [np.arange(coef.shape[0])] + [coef[:, p] for p in range(coef.shape[1] - 1, -1, -1)]
        return np.lexsort(keys)

    # ------------------------------------------------------ analytic derivatives
    def _layout(self) -> tuple[int, int, int]:
        K, P = self.n_components, len(self.predictors)
        return K, P, K - 1 + K * P + K

    def complete_score(self, data: Data, params: Params) -> np.ndarray:
        """d log p(y_i, z_i=k) / d theta_free, (n, K, P_free)."""
        K, P, nfree = self._layout()
        X = np.asarray(data["X"], dtype=float)
        sigma = np.asarray(params["sigma"], dtype=float)
        r = self.residuals(data, params)
        S = np.zeros((X.shape[0], K, nfree))
        S[:, :, : K - 1] = self.weight_score(params)[None]
        base = K - 1
        for k in range(K):
            S[:, k, base + k * P: base + (k + 1) * P] = X * (r[:, k] / sigma[k] ** 2)[:, None]
            S[:, k, base + K * P + k] = -1.0 / sigma[k] + r[:, k] ** 2 / sigma[k] ** 3
        return S

    def complete_information(self, data: Data, params: Params, resp: np.ndarray) -> np.ndarray:
        """sum_ik resp_ik (-Hessian of log p(y_i, z_i=k)) in the free parameters."""
        K, P, nfree = self._layout()
        X = np.asarray(data["X"], dtype=float)
        sigma = np.asarray(params["sigma"], dtype=float)
        resp = np.asarray(resp, dtype=float)
        r = self.residuals(data, params)
        nk = resp.sum(axis=0)
        info = np.zeros((nfree, nfree))
        info[: K - 1, : K - 1] = self.weight_information(params, nk)
        base = K - 1
        for k in range(K):
            c = slice(base + k * P, base + (k + 1) * P)
            s = base + K * P + k
            wk = resp[:, k]
            info[c, c] = (X * wk[:, None]).T @ X / sigma[k] ** 2
            cross = 2.0 * (X.T @ (wk * r[:, k])) / sigma[k] ** 3
            info[c, s] = cross
            info[s, c] = cross
            info[s, s] = -nk[k] / sigma[k] ** 2 + 3.0 * float(wk @ r[:, k] ** 2) / sigma[k] ** 4
        return info
