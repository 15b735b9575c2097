"""Finite-difference checks of a model's analytic derivatives, shared by the model tests."""

from __future__ import annotations

import numpy as np


def _step(theta: np.ndarray, p: int, h: float) -> np.ndarray:
    e = np.zeros_like(theta)
    e[p] = h
    return e


def assert_score_matches_fd(model, data, params, h: float = 1e-6) -> None:
    """Analytic complete score = central differences of log_joint through from_free."""
    theta = model.to_free(params)
    S = model.complete_score(data, params)
    for p in range(theta.size):
        e = _step(theta, p, h)
        fd = (model.log_joint(data, model.from_free(theta + e))
              - model.log_joint(data, model.from_free(theta - e))) / (2 * h)
        np.testing.assert_allclose(S[:, :, p], fd, rtol=1e-6, atol=1e-6)


def assert_information_matches_fd(model, data, params, h: float = 1e-6) -> None:
    """Analytic complete information = -differences of the resp-weighted score; symmetric."""
    theta = model.to_free(params)
    resp, _ = model.e_step(data, params)
    info = model.complete_information(data, params, resp)
    fd = np.empty_like(info)
    for p in range(theta.size):
        e = _step(theta, p, h)
        up = np.einsum("nk,nkp->p", resp, model.complete_score(data, model.from_free(theta + e)))
        dn = np.einsum("nk,nkp->p", resp, model.complete_score(data, model.from_free(theta - e)))
        fd[:, p] = -(up - dn) / (2 * h)
    np.testing.assert_allclose(info, fd, rtol=1e-5, atol=1e-5 * np.abs(info).max())
    np.testing.assert_allclose(info, info.T)


class DerivativeChecks:
    """Mixin for a model's test class: with ``_setup() -> (model, data, params)`` it runs
    both finite-difference checks."""

    def _setup(self):
        raise NotImplementedError

    def test_score_matches_finite_differences(self):
        """Analytic complete score = central differences of log_joint through from_free."""
        assert_score_matches_fd(*self._setup())

    def test_information_matches_finite_differences(self):
        """Analytic complete information = -differences of the resp-weighted score."""
        assert_information_matches_fd(*self._setup())
