"""Step 3's structural models, over the rows of step 3 (pure numpy).

Each model has a free parameter vector ``theta`` (natural scale) and gives, for every row i
and class k, ``log f_ik(theta)``, its gradient ``S_ik`` (the complete-data score) and the sum
of its Hessians weighted by any targets ``R``; the estimators of :mod:`.estimate` need
nothing else:

* :class:`CovariateModel`: ``f_ik = P(X_i = k | z_i)``, a multinomial logit with class 1 the
  reference (:mod:`src.models.logit`); free: ``beta[k, :]`` of the other classes, class by
  class, the intercept first.
* :class:`DistalModel`: the distal outcomes given the class, columns independent given the
  class: ``gaussian`` (a mean and a variance per class: class-specific variances, StepMix's
  ``continuous``/``gaussian_diag``) or ``categorical`` (a probability per class and code;
  the last code's is 1 minus the others').  With ``with_weights`` (the ML correction) the
  class proportions ``P(X = k)`` are free parameters too and ``log f_ik`` includes
  ``log pi_k``; naive and BCH estimates of a distal outcome need no class proportions.

Reported names (``estimates.csv``): ``structural.beta[k,name]`` (k = 2..K; class 1 is the
reference), ``distal.weight[k]``, ``distal.mean[k,col]``, ``distal.var[k,col]``,
``distal.prob[k,col,code]``.  ``scales()`` gives each reported entry's interval scale
(:mod:`src.inference.intervals`), ``jacobian()`` the exact (linear) map from the free
parameters to the reported ones.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..models import logit

__all__ = ["StructuralModel", "CovariateModel", "DistalModel", "DISTAL_TYPES"]

#: --distal-type
DISTAL_TYPES = ("gaussian", "categorical")


class StructuralModel:
    """What every step-3 model gives; ``n_rows``, ``K``, ``n_free`` are set by subclasses."""

    K: int
    n_free: int

    def log_f(self, theta: np.ndarray) -> np.ndarray:          # (n, K)
        raise NotImplementedError

    def score(self, theta: np.ndarray) -> np.ndarray:          # (n, K, P)
        raise NotImplementedError

    def hess(self, theta: np.ndarray, R: np.ndarray) -> np.ndarray:   # (P, P)
        """``sum_ik R_ik d2 log f_ik / d theta d theta'``."""
        raise NotImplementedError

    def fit_weighted(self, R: np.ndarray) -> np.ndarray:
        """The theta maximising ``sum_ik R_ik log f_ik`` (R: weights times targets)."""
        raise NotImplementedError

    def feasible(self, theta: np.ndarray) -> bool:
        return bool(np.all(np.isfinite(theta)))

    def names(self) -> list[str]:
        raise NotImplementedError

    def free_names(self) -> list[str]:
        raise NotImplementedError

    def scales(self) -> list[str]:
        raise NotImplementedError

    def jacobian(self) -> np.ndarray:                          # (R, P)
        raise NotImplementedError

    def offset(self) -> np.ndarray:                            # (R,)
        """The constant part of the reported values (1 for a derived last category)."""
        return np.zeros(len(self.names()))

    def reported(self, theta: np.ndarray) -> np.ndarray:
        return self.jacobian() @ np.asarray(theta, dtype=float) + self.offset()


# ------------------------------------------------------------------------ covariates
class CovariateModel(StructuralModel):
    """Multinomial logit of the class on the covariates (``Z``: the design, intercept first)."""

    def __init__(self, Z: np.ndarray, covariate_names: Sequence[str], K: int,
                 reference: int = 0) -> None:
        self.Z = np.asarray(Z, dtype=float)
        self.labels = list(covariate_names)
        self.K, self.q = int(K), self.Z.shape[1]
        self.reference = int(reference)
        self.n_free = (self.K - 1) * self.q

    def beta(self, theta: np.ndarray) -> np.ndarray:
        return logit.from_free(theta, self.K, self.q, self.reference)

    def log_f(self, theta):
        return logit.log_probabilities(self.Z, self.beta(theta))

    def score(self, theta):
        p = logit.probabilities(self.Z, self.beta(theta))
        fc = logit.free_classes(self.K, self.reference)
        S = np.empty((self.Z.shape[0], self.K, self.n_free))
        for k in range(self.K):
            e = (fc == k).astype(float)[None, :] - p[:, fc]       # (n, K-1)
            S[:, k, :] = (e[:, :, None] * self.Z[:, None, :]).reshape(self.Z.shape[0], -1)
        return S

    def hess(self, theta, R):
        return logit.normaliser(self.Z, self.beta(theta), np.asarray(R).sum(axis=1),
                                self.reference).hess * -1.0

    def fit_weighted(self, R, start: np.ndarray | None = None, tol: float = 1e-20):
        beta0 = self.beta(np.zeros(self.n_free) if start is None else start)
        res = logit.newton(lambda b: logit.objective(self.Z, b, R, None, self.reference),
                           beta0, max_steps=200, tol=tol, reference=self.reference)
        return logit.to_free(res.beta, self.reference)

    def _classes(self) -> list[int]:
        return [int(k) for k in logit.free_classes(self.K, self.reference)]

    def names(self):
        return [f"structural.beta[{k + 1},{c}]" for k in self._classes() for c in self.labels]

    free_names = names

    def scales(self):
        return ["identity"] * self.n_free

    def jacobian(self):
        return np.eye(self.n_free)


# ----------------------------------------------------------------------- distal outcomes
class DistalModel(StructuralModel):
    """Distal outcomes given the class: Gaussian or categorical columns, independent given
    the class.  ``Y`` (n, J): floats for Gaussian columns, codes 0..C_j-1 for categorical
    ones; ``codes[j]``: the original codes of a categorical column (None for a Gaussian)."""

    def __init__(self, Y: np.ndarray, columns: Sequence[str], kinds: Sequence[str], K: int,
                 codes: Sequence[Sequence[str] | None], with_weights: bool = False,
                 fixed_weights: np.ndarray | None = None) -> None:
        self.Y = np.asarray(Y, dtype=float).reshape(len(Y), -1)
        self.columns, self.kinds = [str(c) for c in columns], list(kinds)
        self.codes = [None if c is None else [str(x) for x in c] for c in codes]
        self.K = int(K)
        self.with_weights = bool(with_weights)
        #: ML with the class proportions held at these (StepMix's convention; tests only)
        self.fixed_weights = None if fixed_weights is None else np.asarray(fixed_weights, float)
        self.blocks: list[tuple[str, int, int, int]] = []   # (kind, column, offset, size/class)
        off = (self.K - 1) if self.with_weights else 0
        self.onehot: dict[int, np.ndarray] = {}
        for j, kind in enumerate(self.kinds):
            if kind == "gaussian":
                self.blocks.append((kind, j, off, 2))
                off += 2 * self.K
            elif kind == "categorical":
                C = len(self.codes[j])
                y = self.Y[:, j].astype(np.int64)
                self.onehot[j] = (y[:, None] == np.arange(C)[None, :]).astype(float)
                self.blocks.append((kind, j, off, C - 1))
                off += (C - 1) * self.K
            else:
                raise ValueError(f"distal type must be one of {DISTAL_TYPES}, got {kind!r}")
        self.n_free = off

    # ---- parameters
    def unpack(self, theta: np.ndarray) -> dict:
        theta = np.asarray(theta, dtype=float)
        out: dict = {}
        if self.with_weights:
            w = theta[:self.K - 1]
            out["weight"] = np.append(w, 1.0 - w.sum())
        elif self.fixed_weights is not None:
            out["weight"] = self.fixed_weights
        for kind, j, off, size in self.blocks:
            block = theta[off:off + size * self.K]
            if kind == "gaussian":
                out[j] = (block[:self.K], block[self.K:])
            else:
                p = block.reshape(self.K, size)
                out[j] = np.concatenate([p, 1.0 - p.sum(axis=1, keepdims=True)], axis=1)
        return out

    def feasible(self, theta):
        if not np.all(np.isfinite(theta)):
            return False
        par = self.unpack(theta)
        if self.with_weights and np.any(par["weight"] <= 0):
            return False
        for kind, j, _, _ in self.blocks:
            if kind == "gaussian" and np.any(par[j][1] <= 0):
                return False
            if kind == "categorical" and np.any(par[j] <= 0):
                return False
        return True

    # ---- log f, score, Hessian
    def log_f(self, theta):
        par = self.unpack(theta)
        n = self.Y.shape[0]
        out = np.zeros((n, self.K))
        if "weight" in par:
            with np.errstate(divide="ignore", invalid="ignore"):
                out += np.log(par["weight"])[None, :]
        for kind, j, _, _ in self.blocks:
            if kind == "gaussian":
                mu, var = par[j]
                with np.errstate(divide="ignore", invalid="ignore"):
                    out += (-0.5 * np.log(2 * np.pi * var)[None, :]
                            - 0.5 * (self.Y[:, j:j + 1] - mu[None, :]) ** 2 / var[None, :])
            else:
                with np.errstate(divide="ignore", invalid="ignore"):
                    out += self.onehot[j] @ np.log(par[j]).T
        return out

    def score(self, theta):
        par = self.unpack(theta)
        n, K = self.Y.shape[0], self.K
        S = np.zeros((n, K, self.n_free))
        if self.with_weights:
            w = par["weight"]
            for k in range(K - 1):
                S[:, k, k] = 1.0 / w[k]
            S[:, K - 1, :K - 1] = -1.0 / w[K - 1]
        for kind, j, off, size in self.blocks:
            if kind == "gaussian":
                mu, var = par[j]
                r = self.Y[:, j:j + 1] - mu[None, :]                     # (n, K)
                for k in range(K):
                    S[:, k, off + k] = r[:, k] / var[k]
                    S[:, k, off + K + k] = -0.5 / var[k] + 0.5 * r[:, k] ** 2 / var[k] ** 2
            else:
                p, oh = par[j], self.onehot[j]
                for k in range(K):
                    cols = slice(off + k * size, off + (k + 1) * size)
                    S[:, k, cols] = oh[:, :size] / p[k, :size] - (oh[:, size] / p[k, size])[:, None]
        return S

    def hess(self, theta, R):
        par = self.unpack(theta)
        R = np.asarray(R, dtype=float)
        K = self.K
        H = np.zeros((self.n_free, self.n_free))
        mass = R.sum(axis=0)                                            # (K,)
        if self.with_weights:
            w = par["weight"]
            for k in range(K - 1):
                H[k, k] -= mass[k] / w[k] ** 2
            H[:K - 1, :K - 1] -= mass[K - 1] / w[K - 1] ** 2
        for kind, j, off, size in self.blocks:
            if kind == "gaussian":
                mu, var = par[j]
                r = self.Y[:, j:j + 1] - mu[None, :]
                for k in range(K):
                    a, b = off + k, off + K + k
                    H[a, a] += -mass[k] / var[k]
                    cross = -float(R[:, k] @ r[:, k]) / var[k] ** 2
                    H[a, b] += cross
                    H[b, a] += cross
                    H[b, b] += 0.5 * mass[k] / var[k] ** 2 - float(R[:, k] @ r[:, k] ** 2) / var[k] ** 3
            else:
                p, oh = par[j], self.onehot[j]
                counts = R.T @ oh                                       # (K, C)
                for k in range(K):
                    cols = slice(off + k * size, off + (k + 1) * size)
                    block = -counts[k, size] / p[k, size] ** 2 * np.ones((size, size))
                    block -= np.diag(counts[k, :size] / p[k, :size] ** 2)
                    H[cols, cols] += block
        return H

    def fit_weighted(self, R, start=None):
        R = np.asarray(R, dtype=float)
        mass = R.sum(axis=0)
        theta = np.empty(self.n_free)
        if self.with_weights:
            theta[:self.K - 1] = (mass / mass.sum())[:self.K - 1]
        for kind, j, off, size in self.blocks:
            if kind == "gaussian":
                y = self.Y[:, j]
                mu = (R.T @ y) / mass
                var = np.einsum("nk,nk->k", R, (y[:, None] - mu[None, :]) ** 2) / mass
                theta[off:off + self.K] = mu
                theta[off + self.K:off + 2 * self.K] = var
            else:
                p = (R.T @ self.onehot[j]) / mass[:, None]
                theta[off:off + size * self.K] = p[:, :size].ravel()
        return theta

    # ---- names
    def _entries(self) -> list[tuple[str, str, np.ndarray, float]]:
        """(name, scale, row of the Jacobian, offset) of every reported entry."""
        P, K = self.n_free, self.K
        rows: list[tuple[str, str, np.ndarray, float]] = []

        def unit(i: int) -> np.ndarray:
            e = np.zeros(P)
            e[i] = 1.0
            return e

        if self.with_weights:
            for k in range(K):
                row = unit(k) if k < K - 1 else -np.r_[np.ones(K - 1), np.zeros(P - K + 1)]
                rows.append((f"distal.weight[{k + 1}]", "logit", row, 0.0 if k < K - 1 else 1.0))
        for kind, j, off, size in self.blocks:
            col = self.columns[j]
            if kind == "gaussian":
                rows += [(f"distal.mean[{k + 1},{col}]", "identity", unit(off + k), 0.0)
                         for k in range(K)]
                rows += [(f"distal.var[{k + 1},{col}]", "log", unit(off + K + k), 0.0)
                         for k in range(K)]
            else:
                codes = self.codes[j]
                for k in range(K):
                    base = off + k * size
                    for c, code in enumerate(codes):
                        if c < size:
                            rows.append((f"distal.prob[{k + 1},{col},{code}]", "logit",
                                         unit(base + c), 0.0))
                        else:
                            row = np.zeros(P)
                            row[base:base + size] = -1.0
                            rows.append((f"distal.prob[{k + 1},{col},{code}]", "logit", row, 1.0))
        return rows

    def names(self):
        return [e[0] for e in self._entries()]

    def free_names(self):
        J = self.jacobian()
        names = self.names()
        return [names[int(np.flatnonzero(J[:, p] == 1.0)[0])] for p in range(self.n_free)]

    def scales(self):
        return [e[1] for e in self._entries()]

    def jacobian(self):
        return np.array([e[2] for e in self._entries()]).reshape(-1, self.n_free)

    def offset(self):
        return np.array([e[3] for e in self._entries()])
