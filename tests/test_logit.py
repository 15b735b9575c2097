"""Multinomial logit of class membership: scikit-learn, finite differences, weights, chunks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from src.models import logit
from src.utils.rng import stream

K, C = 3, 2


def simulate(n: int, seed: int = 1):
    """Covariates, true beta (reference row 0) and drawn classes."""
    rng = stream(seed, "test", 0)
    X = rng.normal(size=(n, C))
    Z, names = logit.design(X, ["age", "dose"])
    beta = np.array([[0.0, 0.0, 0.0], [0.5, 1.0, -0.5], [-0.3, -0.7, 0.8]])
    pi = logit.probabilities(Z, beta)
    u = rng.random(n)[:, None]
    y = (u > np.cumsum(pi, axis=1)).sum(axis=1)
    return X, Z, names, beta, y


def fit_newton(Z, R, w=None, reference=0):
    K_, q = R.shape[1], Z.shape[1]
    return logit.newton(lambda b: logit.objective(Z, b, R, w, reference),
                        np.zeros((K_, q)), max_steps=100, tol=1e-14, reference=reference)


def numeric_grad(f, x, h=1e-5):
    g = np.empty_like(x)
    for p in range(x.size):
        e = np.zeros_like(x)
        e[p] = h
        g[p] = (f(x + e) - f(x - e)) / (2 * h)
    return g


class TestDesign:
    def test_frame_and_array_give_intercept_first(self):
        """A frame's chosen columns and an array give the same Z with the intercept first."""
        frame = pd.DataFrame({"a": [1.0, 2.0], "b": [3, 4], "c": ["x", "y"]})
        Z, names = logit.design(frame, ["a", "b"])
        Z2, names2 = logit.design(frame[["a", "b"]].to_numpy(), ["a", "b"])
        np.testing.assert_array_equal(Z, [[1, 1, 3], [1, 2, 4]])
        np.testing.assert_array_equal(Z, Z2)
        assert names == names2 == ["intercept", "a", "b"]

    def test_free_vector_round_trip(self):
        """to_free re-references, from_free puts the reference row back at 0."""
        beta = np.arange(12.0).reshape(3, 4)
        for ref in range(3):
            free = logit.to_free(beta, ref)
            back = logit.from_free(free, 3, 4, ref)
            np.testing.assert_allclose(back, beta - beta[ref])
            np.testing.assert_allclose(logit.probabilities(np.ones((1, 4)), back),
                                       logit.probabilities(np.ones((1, 4)), beta))


class TestAgainstScikitLearn:
    def test_indicator_targets_match_unpenalised_multinomial(self):
        """Newton on 0/1 targets gives scikit-learn's unpenalised multinomial fit (differences
        from the reference class) and log-likelihood."""
        X, Z, _, _, y = simulate(3000)
        R = np.eye(K)[y]
        res = fit_newton(Z, R)
        assert res.converged
        sk = LogisticRegression(C=np.inf, tol=1e-12, max_iter=20000).fit(X, y)
        coef = np.column_stack([sk.intercept_, sk.coef_])
        np.testing.assert_allclose(res.beta, coef - coef[0], atol=2e-5)
        ll_sk = float(np.sum(np.log(sk.predict_proba(X)[np.arange(len(y)), y])))
        assert res.value == pytest.approx(ll_sk, rel=1e-9, abs=1e-7)
        assert res.value >= ll_sk - 1e-9

    def test_row_weights_match_sample_weight(self):
        """Row weights in the objective agree with scikit-learn's sample_weight."""
        X, Z, _, _, y = simulate(2000, seed=2)
        w = stream(2, "test", 1).uniform(0.2, 3.0, size=y.size)
        res = fit_newton(Z, np.eye(K)[y], w)
        sk = LogisticRegression(C=np.inf, tol=1e-12, max_iter=20000).fit(X, y, sample_weight=w)
        coef = np.column_stack([sk.intercept_, sk.coef_])
        np.testing.assert_allclose(res.beta, coef - coef[0], atol=2e-5)


class TestDerivatives:
    @pytest.mark.parametrize("reference", [0, 2])
    def test_gradient_and_hessian_match_finite_differences(self, reference):
        """Gradient and Hessian (free parameterisation) are the objective's central differences,
        with targets of any sign and row weights."""
        _, Z, _, beta, _ = simulate(300, seed=3)
        rng = stream(3, "test", 2)
        R = rng.normal(size=(300, K))                   # negative targets allowed
        w = rng.uniform(0.5, 2.0, size=300)
        q = Z.shape[1]
        x0 = logit.to_free(beta, reference)
        f = lambda x: logit.objective(Z, logit.from_free(x, K, q, reference), R, w, reference, 0).value
        t = logit.objective(Z, logit.from_free(x0, K, q, reference), R, w, reference)
        direct = float(np.sum(w[:, None] * R * logit.log_probabilities(Z, beta)))
        assert t.value == pytest.approx(direct, rel=1e-12)
        np.testing.assert_allclose(t.grad, numeric_grad(f, x0), rtol=1e-6, atol=1e-6)
        g = lambda x: logit.objective(Z, logit.from_free(x, K, q, reference), R, w, reference, 1).grad
        H = np.column_stack([numeric_grad(lambda x: g(x)[p], x0) for p in range(x0.size)])
        np.testing.assert_allclose(t.hess, H.T, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(t.hess, t.hess.T)

    def test_value_does_not_depend_on_reference_row(self):
        """The objective takes beta's reference row as 0 (beta re-referenced)."""
        _, Z, _, beta, y = simulate(100)
        R = np.eye(K)[y]
        a = logit.objective(Z, beta + 3.0, R, reference=1)
        b = logit.objective(Z, beta - beta[1], R, reference=1)
        assert a.value == pytest.approx(b.value, rel=1e-13)
        np.testing.assert_allclose(a.grad, b.grad, rtol=1e-12)


class TestAdditivity:
    def test_weights_equal_replicated_rows(self):
        """Integer row weights give the terms of the rows repeated that often."""
        _, Z, _, beta, y = simulate(200, seed=4)
        R = stream(4, "test", 3).dirichlet(np.ones(K), size=200)
        w = stream(4, "test", 4).integers(1, 4, size=200)
        rep = np.repeat(np.arange(200), w)
        a = logit.objective(Z, beta, R, w.astype(float))
        b = logit.objective(Z[rep], beta, R[rep])
        assert a.value == pytest.approx(b.value, rel=1e-12)
        np.testing.assert_allclose(a.grad, b.grad, rtol=1e-11)
        np.testing.assert_allclose(a.hess, b.hess, rtol=1e-11)

    def test_chunks_add_up(self):
        """Terms of chunks of rows summed equal the terms of all rows; linear part + normaliser
        pieces equal the objective."""
        _, Z, _, beta, y = simulate(500, seed=5)
        R = stream(5, "test", 5).normal(size=(500, K))
        whole = logit.objective(Z, beta, R)
        parts = sum(logit.objective(Z[i:i + 128], beta, R[i:i + 128]) for i in range(0, 500, 128))
        assert parts.value == pytest.approx(whole.value, rel=1e-12)
        np.testing.assert_allclose(parts.grad, whole.grad, rtol=1e-11, atol=1e-11)
        np.testing.assert_allclose(parts.hess, whole.hess, rtol=1e-11, atol=1e-11)
        S = sum(logit.linear_stats(Z[i:i + 128], R[i:i + 128]) for i in range(0, 500, 128))
        split = logit.linear_terms(S, beta) - logit.normaliser(Z, beta, R.sum(axis=1))
        assert split.value == pytest.approx(whole.value, rel=1e-12)


class TestNewton:
    def test_objective_never_falls_with_negative_targets(self):
        """With BCH-like targets (some negative) each accepted step keeps the objective from
        falling, and the result is a stationary point when the problem is concave."""
        _, Z, _, beta, y = simulate(1000, seed=6)
        R = np.eye(K)[y]
        D_inv = np.array([[1.3, -0.2, -0.1], [-0.15, 1.25, -0.1], [-0.1, -0.2, 1.3]])
        R = R @ D_inv                                   # rows sum to 1, entries may be < 0
        assert (R < 0).any()
        values = []

        def eval_fn(b):
            t = logit.objective(Z, b, R)
            values.append(t.value)
            return t

        res = logit.newton(eval_fn, np.zeros((K, 3)), max_steps=50, tol=1e-14)
        assert res.value >= values[0]
        assert res.converged
        np.testing.assert_allclose(logit.objective(Z, res.beta, R).grad, 0, atol=1e-5)

    def test_max_steps_limits_and_does_not_fall(self):
        """One Newton step from a poor start raises the objective and reports not converged."""
        _, Z, _, beta, y = simulate(500, seed=7)
        R = np.eye(K)[y]
        start = np.array([[0.0, 0, 0], [5.0, -5, 5], [-5.0, 5, -5]])
        v0 = logit.objective(Z, start, R, order=0).value
        res = logit.newton(lambda b: logit.objective(Z, b, R), start, max_steps=1)
        assert res.steps == 1 and not res.converged
        assert res.value > v0


class TestBound:
    def test_bohning_bound_dominates_the_hessian(self):
        """B - (-H) is positive semi-definite at random coefficients, for any reference."""
        _, Z, _, _, _ = simulate(300, seed=8)
        rng = stream(8, "test", 6)
        m = rng.uniform(0.1, 2.0, size=300)
        for ref in (0, 2):
            B = logit.bohning_bound((Z.T * m) @ Z, K)
            for _ in range(5):
                beta = rng.normal(scale=2.0, size=(K, 3))
                H = logit.normaliser(Z, beta, m, ref).hess          # = -(objective's Hessian)
                assert np.linalg.eigvalsh(B - H).min() >= -1e-9 * np.abs(B).max()

    def test_newton_with_bound_reaches_the_same_maximum(self):
        """Certified steps (no evaluation) and evaluated ones reach the same maximum, and the
        certified path evaluates the objective less often."""
        _, Z, _, _, y = simulate(2000, seed=9)
        R = np.eye(K)[y]
        B = logit.bohning_bound(Z.T @ Z, K)
        T = logit.third_derivative_bound(float((np.sqrt((Z * Z).sum(axis=1)) ** 3).sum()))
        f = lambda b: logit.objective(Z, b, R)
        a = logit.newton(f, np.zeros((K, 3)), max_steps=50, tol=1e-14)
        b = logit.newton(f, np.zeros((K, 3)), max_steps=50, tol=1e-14, bound=B, third=T)
        np.testing.assert_allclose(a.beta, b.beta, atol=1e-8)
        assert b.evaluations <= a.evaluations

    def test_third_derivative_bound_holds(self):
        """Along random steps the objective's third derivative (central differences) stays
        within T max_k |d_k|^3."""
        _, Z, _, _, _ = simulate(400, seed=10)
        rng = stream(10, "test", 7)
        m = rng.uniform(0.2, 1.5, size=400)
        T = logit.third_derivative_bound(float(m @ (np.sqrt((Z * Z).sum(axis=1)) ** 3)))
        for _ in range(20):
            beta = rng.normal(size=(K, 3))
            d = rng.normal(size=(K, 3))
            d[0] = 0
            h = 1e-2
            f = lambda t: logit.normaliser(Z, beta + t * d, m, 0, order=0).value
            third = (f(2 * h) - 2 * f(h) + 2 * f(-h) - f(-2 * h)) / (2 * h ** 3)
            assert abs(third) <= T * np.sqrt((d * d).sum(axis=1).max()) ** 3
