"""Analytic derivatives of the Gaussian mixture, for Louis' method and the numerical Hessian.

:class:`GaussianDerivatives` is mixed into :class:`~src.models.gmm.GaussianMixtureModel`:
the complete-data score per row and class, the expected complete-data information from
per-class sums, and the variance of the complete score from weighted moments of degree
<= 4 (so Louis' method needs no (n, K, P) array; see benchmarks/README_se.md).  All in the
free parameterisation of :meth:`MixtureModel.to_free`.
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np

from .base import Data, Params

__all__ = ["GaussianDerivatives"]


class GaussianDerivatives:
    """Derivative methods; needs the host's ``_factors``, ``covariance``, ``shift`` etc."""

    def _layout(self, params: Params):
        """What every derivative needs: centred means, precisions, covariance directions
        V (D*D, Pc), and the offsets of the mean and covariance blocks (the class weights'
        part comes from :meth:`MixtureModel.weight_score` / ``weight_information``)."""
        K, D = self.n_components, self.n_features
        V = self._cov_directions()
        return (np.asarray(params["mean"], dtype=float) - self.shift,
                self._precisions(params), V, V.shape[1], K - 1, K - 1 + K * D)

    def _precisions(self, params: Params) -> np.ndarray:
        """Inverse covariances (K, D, D) for every covariance type."""
        fac, _ = self._factors(params)
        if self.covariance == "full":
            return fac @ fac.transpose(0, 2, 1)
        isd2 = fac * fac if self.covariance == "diag" else np.outer(fac * fac, np.ones(self.n_features))
        return isd2[:, :, None] * np.eye(self.n_features)[None]

    def _cov_directions(self) -> np.ndarray:
        """V (D*D, Pc): column p is vec of the symmetric direction of free covariance entry p."""
        D = self.n_features
        if self.covariance == "full":
            a, b = np.triu_indices(D)
            V = np.zeros((D * D, a.size))
            V[a * D + b, np.arange(a.size)] = 1.0
            V[b * D + a, np.arange(a.size)] = 1.0
        elif self.covariance == "diag":
            V = np.zeros((D * D, D))
            V[np.arange(D) * (D + 1), np.arange(D)] = 1.0
        else:
            V = np.eye(D).reshape(D * D, 1)
        return V

    def complete_score(self, data: Data, params: Params) -> np.ndarray:
        """d log p(x_i, z_i=k) / d theta_free, shape (n, K, P), on any subset of rows.

        Weights: :meth:`MixtureModel.weight_score` (1/w_k for the class's own free weight,
        -1/w_K for every free weight in the last class).  Means: Lambda r.  Covariance
        entry p with direction E_p: tr(G E_p) with G = (Lambda r r' Lambda - Lambda) / 2,
        r = x - mean.
        """
        X = np.asarray(data["X"], dtype=float)
        K, D = self.n_components, self.n_features
        muc, lam, V, Pc, om, oc = self._layout(params)
        out = np.zeros((X.shape[0], K, self.n_free_parameters()))
        out[:, :, :K - 1] = self.weight_score(params)[None]
        Xc = X - self.shift
        for k in range(K):
            u = (Xc - muc[k]) @ lam[k]
            out[:, k, om + k * D: om + (k + 1) * D] = u
            G = 0.5 * (u[:, :, None] * u[:, None, :] - lam[k][None])
            out[:, k, oc + k * Pc: oc + (k + 1) * Pc] = G.reshape(-1, D * D) @ V
        return out

    def observed_scores(self, data: Data, params: Params, resp: np.ndarray) -> np.ndarray:
        """g_i = sum_k resp_ik s_ik (n, P) without the (n, K, P) complete scores.

        Class k's score is zero outside the weights and its own mean and covariance, so its
        blocks of g_i are resp_ik times :meth:`complete_score`'s (Lambda r; for covariance
        entry (a, b) (u_a u_b - Lambda_ab), halved on the diagonal, u = Lambda r) and the
        weights' part is the responsibility-weighted weight scores, terms with resp_ik = 0
        dropped (they vanish even where a score is infinite).  The sandwich's middle.
        """
        X = np.asarray(data["X"], dtype=float)
        resp = np.asarray(resp, dtype=float)
        K, D = self.n_components, self.n_features
        muc, lam, _, Pc, om, oc = self._layout(params)
        out = np.empty((X.shape[0], self.n_free_parameters()))
        ws = self.weight_score(params)                               # (K, K-1)
        with np.errstate(invalid="ignore"):
            out[:, :om] = np.where(resp[:, :, None] > 0, resp[:, :, None] * ws[None], 0.0).sum(axis=1)
        Xc = X - self.shift
        a, b = np.triu_indices(D)
        half = np.where(a == b, 0.5, 1.0)
        for k in range(K):
            r = resp[:, k, None]
            u = (Xc - muc[k]) @ lam[k]
            out[:, om + k * D: om + (k + 1) * D] = r * u
            L = lam[k]
            if self.covariance == "full":
                c = (u[:, a] * u[:, b] - L[a, b]) * half
            elif self.covariance == "diag":
                c = 0.5 * (u * u - np.diag(L))
            else:
                c = 0.5 * ((u * u).sum(axis=1, keepdims=True) - np.trace(L))
            out[:, oc + k * Pc: oc + (k + 1) * Pc] = r * c
        return out

    def complete_information(self, data: Data, params: Params, resp: np.ndarray) -> np.ndarray:
        """sum_i sum_k resp_ik * (-Hessian of log p(x_i, z_i=k)) in the free parameters (P, P).

        Weights: :meth:`MixtureModel.weight_information` of R = sum resp.  Per class the
        rest needs only R, s = sum resp r and M = sum resp r r'; with
        A = Lambda M Lambda: mean-mean R Lambda; mean-cov Lambda E_q Lambda s;
        cov-cov (tr(E_p Lambda E_q A) + tr(E_p A E_q Lambda) - R tr(E_p Lambda E_q Lambda)) / 2.
        """
        X = np.asarray(data["X"], dtype=float)
        resp = np.asarray(resp, dtype=float)
        K, D = self.n_components, self.n_features
        muc, lam, V, Pc, om, oc = self._layout(params)
        info = np.zeros((self.n_free_parameters(),) * 2)
        Xc = X - self.shift
        R = resp.sum(axis=0)
        info[:K - 1, :K - 1] = self.weight_information(params, R)
        for k in range(K):
            diff = Xc - muc[k]
            s = resp[:, k] @ diff
            M = (diff * resp[:, k][:, None]).T @ diff
            L = lam[k]
            A = L @ M @ L
            mk = slice(om + k * D, om + (k + 1) * D)
            ck = slice(oc + k * Pc, oc + (k + 1) * Pc)
            info[mk, mk] = R[k] * L
            cross = np.einsum("ja,b->jab", L, L @ s).reshape(D, D * D) @ V
            info[mk, ck] = cross
            info[ck, mk] = cross.T
            T = 0.5 * (np.einsum("bc,da->abcd", L, A) + np.einsum("bc,da->abcd", A, L)
                       - R[k] * np.einsum("bc,da->abcd", L, L))
            info[ck, ck] = V.T @ T.reshape(D * D, D * D) @ V
        return info

    def score_variance_moments(self, data: Data, params: Params,
                               resp: np.ndarray) -> np.ndarray | None:
        """Additive statistics of Louis' second term: (K(K-1)/2, C(D+4, 4)) weighted moments.

        s_ik = S_k phi(x_i) is linear in phi = [1, x, x_a x_b (a <= b)] (centred data), so
        sum_i [sum_k r_ik s_ik s_ik' - g_i g_i'] = sum_kl S_k M_kl S_l' with
        M_kl = sum_i r_ik (delta_kl - r_il) phi_i phi_i'.  As the r_i sum to one,
        M_kk = -sum_{l != k} M_kl, so only the K(K-1)/2 moments weighted by r_ik r_il (k < l)
        are kept: the entries of those M_kl are weighted moments of degree <= 4, one GEMM per
        block of rows, about 7x fewer multiply-adds than the (n, K, P) scores at D=10, K=5.
        None when the per-row scores are cheaper (few parameters per class, large D).
        """
        if not self._variance_moments_pay():
            return None  # the scores themselves are cheaper (diagonal covariances, large D)
        resp = np.asarray(resp, dtype=float)
        ku, lu = np.triu_indices(self.n_components, 1)
        if ku.size == 0:
            return np.zeros((0, _n_monomials(self.n_features)))
        return self._pair_moments(data, resp[:, ku] * resp[:, lu])    # k < l

    def _variance_moments_pay(self) -> bool:
        """True when Louis' moments cost fewer multiply-adds than the (n, K, P) scores."""
        K, P = self.n_components, self.n_free_parameters()
        Pk = (P - K + 1) // K
        return K * (K - 1) // 2 * _n_monomials(self.n_features) <= K * Pk * Pk + P * P // 2

    def _outer_moments_pay(self, params: Params) -> bool:
        """True when B's moments cost fewer multiply-adds than the (n, P) observed scores'
        outer products and every weight score is finite."""
        K, P = self.n_components, self.n_free_parameters()
        return (K * (K + 1) // 2 * _n_monomials(self.n_features) <= P * P // 2
                and bool(np.all(np.isfinite(self.weight_score(params)))))

    def louis_outer_moments(self, data: Data, params: Params, resp: np.ndarray,
                            w: np.ndarray | None = None, c: np.ndarray | None = None
                            ) -> tuple[np.ndarray, np.ndarray] | None:
        """``(louis, outer)``: :meth:`score_variance_moments` with ``resp * sqrt(w)`` and
        :meth:`score_outer_moments` with ``c``, from one pass over the rows: the
        K(K-1)/2 + K(K+1)/2 weight columns share each block's monomials in one GEMM (the
        sandwich's B then costs Louis' pass no second E-step or monomials; Louis' part is
        its own GEMM, bitwise :meth:`score_variance_moments`'s).  None when either declines."""
        if not (self._variance_moments_pay() and self._outer_moments_pay(params)):
            return None
        K = self.n_components
        resp = np.asarray(resp, dtype=float)
        rs = resp if w is None else resp * np.sqrt(np.asarray(w, dtype=float))[:, None]
        ku, lu = np.triu_indices(K, 1)
        return self._pair_moments(data, rs[:, ku] * rs[:, lu], _outer_weights(resp, c))

    def _pair_moments(self, data: Data, W: np.ndarray, *more: np.ndarray) -> np.ndarray:
        """sum_i W_ij mono(x_i) (J, C(D+4, 4)): the degree-<=4 monomials of the centred
        rows weighted by each column of W (n, J), one GEMM per block of rows.  With ``more``
        weight matrices, a tuple: each one's moments by its own GEMM on the same monomials."""
        D = self.n_features
        X = np.asarray(data["X"], dtype=float)
        starts, _ = _moment_plan(D)
        m = 1 + D + D * (D + 1) // 2
        n_mono = int(starts[-1])
        Ws = (W,) + more
        moms = [np.zeros((V.shape[1], n_mono)) for V in Ws]
        phi = np.empty(m * _MOMENT_BLOCK)
        mono = np.empty(n_mono * _MOMENT_BLOCK)
        a, b = np.triu_indices(D)
        for s in range(0, X.shape[0], _MOMENT_BLOCK):
            xc = (X[s:s + _MOMENT_BLOCK] - self.shift).T          # (D, n)
            n = xc.shape[1]
            F = phi[: m * n].reshape(m, n)                         # phi' (m, n)
            F[0] = 1.0
            F[1:D + 1] = xc
            np.multiply(xc[a], xc[b], out=F[D + 1:])
            Mo = mono[: n_mono * n].reshape(n_mono, n)             # monomials' (n_mono, n)
            for p in range(m):
                lo, hi = starts[p], starts[p + 1]
                np.multiply(F[p], F[m - (hi - lo):], out=Mo[lo:hi])
            for V, mom in zip(Ws, moms):
                mom += V[s:s + _MOMENT_BLOCK].T @ Mo.T
        return tuple(moms) if more else moms[0]

    def score_outer_moments(self, data: Data, params: Params, resp: np.ndarray,
                            c: np.ndarray | None = None) -> np.ndarray | None:
        """Additive statistics of B = sum_i c_i g_i g_i' (the sandwich's middle, g_i the
        observed score): the (K(K+1)/2, C(D+4, 4)) moments weighted by c_i r_ik r_il,
        k <= l (g_i g_i' = sum_kl r_ik r_il S_k phi_i phi_i' S_l').  None when the (n, P)
        scores are cheaper (few parameters per class, large D) or a weight score is not
        finite (a class of weight 0: the scores drop its terms)."""
        if not self._outer_moments_pay(params):
            return None
        return self._pair_moments(data, _outer_weights(np.asarray(resp, dtype=float), c))

    def score_outer_from_moments(self, params: Params, moments: np.ndarray) -> np.ndarray:
        """sum_i c_i g_i g_i' (P, P) from summed :meth:`score_outer_moments`."""
        moments = np.asarray(moments, dtype=float)
        B = self._pairs_quadratic(params, lambda j, k, l: moments[j])
        return 0.5 * (B + B.T)

    def _pairs_quadratic(self, params: Params,
                         pair_moments: Callable[[int, int, int], np.ndarray]) -> np.ndarray:
        """(P, P): sum over class pairs k <= l (``np.triu_indices`` order, j-th) of
        S_k M_kl S_l' at class k's and class l's parameter rows (and its transpose for k != l),
        M_kl the monomials' matrix of ``pair_moments(j, k, l)``."""
        K, D = self.n_components, self.n_features
        _, mono_index = _moment_plan(D)
        S = self._score_maps(params)                               # (K, P, m)
        om, Pk = K - 1, (S.shape[1] - K + 1) // K
        Dc = Pk - D
        rows = [np.r_[np.arange(om), om + k * D + np.arange(D),
                      om + K * D + k * Dc + np.arange(Dc)] for k in range(K)]
        out = np.zeros((S.shape[1],) * 2)
        ku, lu = np.triu_indices(K)
        for j in range(ku.size):
            k, l = ku[j], lu[j]
            part = S[k][rows[k]] @ pair_moments(j, k, l)[mono_index] @ S[l][rows[l]].T
            out[np.ix_(rows[k], rows[l])] += part
            if k != l:
                out[np.ix_(rows[l], rows[k])] += part.T
        return out

    def score_variance_from_moments(self, params: Params, moments: np.ndarray) -> np.ndarray:
        """sum_i [sum_k r_ik s_ik s_ik' - g_i g_i'] (P, P) from summed ``score_variance_moments``."""
        K = self.n_components
        ku, lu = np.triu_indices(K, 1)
        full = np.zeros((K, K, np.asarray(moments).shape[1]))  # moments of r_ik (delta_kl - r_il)
        full[ku, lu] = full[lu, ku] = -np.asarray(moments, dtype=float)
        full[np.arange(K), np.arange(K)] = -full.sum(axis=1)
        return self._pairs_quadratic(params, lambda j, k, l: full[k, l])

    def complete_score_variance(self, data: Data, params: Params,
                                resp: np.ndarray) -> np.ndarray | None:
        """sum_i [sum_k r_ik s_ik s_ik' - g_i g_i'], g_i = sum_k r_ik s_ik, shape (P, P)."""
        mom = self.score_variance_moments(data, params, resp)
        return None if mom is None else self.score_variance_from_moments(params, mom)

    def _score_maps(self, params: Params) -> np.ndarray:
        """S (K, P, m): the complete score of class k is S[k] @ phi(x), phi = [1, x, vech xx']."""
        K, D = self.n_components, self.n_features
        muc, lam, V, Pc, om, oc = self._layout(params)
        a, b = np.triu_indices(D)
        m = 1 + D + a.size
        S = np.zeros((K, self.n_free_parameters(), m))
        S[:, :K - 1, 0] = self.weight_score(params)
        for k in range(K):
            L = lam[k]
            nu = L @ muc[k]
            S[k, om + k * D: om + (k + 1) * D, 0] = -nu
            S[k, om + k * D: om + (k + 1) * D, 1:D + 1] = L
            # G = (L (x - mu)(x - mu)' L - L) / 2 as a (D, D, m) map of phi
            G = np.empty((D, D, m))
            G[:, :, 0] = 0.5 * (np.outer(nu, nu) - L)
            lin = -0.5 * (L[:, None, :] * nu[None, :, None] + nu[:, None, None] * L[None, :, :])
            G[:, :, 1:D + 1] = lin
            A = L[:, a][:, None, :] * L[:, b][None, :, :]      # A[p,q,t] = L[p,a_t] L[q,b_t]
            G[:, :, D + 1:] = 0.5 * (A + A.transpose(1, 0, 2)) * np.where(a == b, 0.5, 1.0)
            S[k, oc + k * Pc: oc + (k + 1) * Pc] = V.T @ G.reshape(D * D, m)
        return S


_MOMENT_BLOCK = 512     # rows per block of the degree-4 moments (a (C(D+4,4), rows) array)


def _outer_weights(resp: np.ndarray, c: np.ndarray | None) -> np.ndarray:
    """c_i r_ik r_il for the class pairs k <= l (``np.triu_indices`` order): B's moment weights."""
    ku, lu = np.triu_indices(resp.shape[1])
    W = resp[:, ku] * resp[:, lu]
    if c is not None:
        W *= np.asarray(c, dtype=float)[:, None]
    return W


def _n_monomials(D: int) -> int:
    """C(D+4, 4): the monomials of degree <= 4 in D variables."""
    return (D + 1) * (D + 2) * (D + 3) * (D + 4) // 24


@functools.lru_cache(maxsize=8)
def _moment_plan(D: int) -> tuple[np.ndarray, np.ndarray]:
    """Layout of the degree-<=4 monomials of x as products of two entries of phi.

    phi = [1, x_1..x_D, x_a x_b (a <= b, row-major)] lists the multisets {i <= j} of
    {0..D} (0 standing for the constant) in lexicographic order.  A monomial {i<=j<=k<=l}
    is phi_(i,j) * phi_(k,l), and for a fixed first factor (i, j) the second runs over the
    suffix of phi starting at (j, j); ``starts[p]`` is where factor p's run begins in the
    monomial list.  ``mono_index[p, q]`` is the monomial of phi_p * phi_q.
    """
    pairs = [(i, j) for i in range(D + 1) for j in range(i, D + 1)]
    pos = {pq: t for t, pq in enumerate(pairs)}
    starts, index, n = [0], {}, 0
    for i, j in pairs:
        for k, l in pairs[pos[(j, j)]:]:
            index[(i, j, k, l)] = n
            n += 1
        starts.append(n)
    m = len(pairs)
    mono_index = np.empty((m, m), dtype=np.intp)
    for p, (i, j) in enumerate(pairs):
        for q, (k, l) in enumerate(pairs):
            mono_index[p, q] = index[tuple(sorted((i, j, k, l)))]
    return np.array(starts), mono_index
