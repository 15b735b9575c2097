"""The moment-based Louis path for Gaussian mixtures equals the per-row path."""

from __future__ import annotations

import numpy as np
import pytest

from src.estimation.em import fit_em
from src.inference.louis import louis_information
from src.models.gmm import GaussianMixtureModel


def _fitted(covariance: str, n: int = 600, seed: int = 3):
    rng = np.random.default_rng(seed)
    X = np.vstack([rng.normal([0, 0, 0], [1, 0.5, 2], size=(n // 2, 3)),
                   rng.normal([3, 1, -2], [0.7, 1.5, 1], size=(n - n // 2, 3))])
    model = GaussianMixtureModel(2, covariance=covariance)
    data, meta = {"X": X}, GaussianMixtureModel.meta_for_array(X)
    model.setup(meta)
    fit = fit_em(model, data, n_starts=3, tol=1e-10, seed=1)
    return model, data, fit.params


@pytest.mark.parametrize("covariance", ["full", "diag", "spherical"])
def test_fast_equals_per_row(covariance):
    """I_obs from the weighted moments equals I_obs from the dense per-row scores."""
    model, data, params = _fitted(covariance)
    fast_obs, fast_c = louis_information(model, data, params, chunk_size=128)
    slow_obs, slow_c = louis_information(model, data, params, chunk_size=128, use_fast=False)
    scale = np.abs(slow_obs).max()
    assert np.abs(fast_obs - slow_obs).max() <= 1e-11 * scale
    assert np.abs(fast_c - slow_c).max() <= 1e-11 * np.abs(slow_c).max()


def test_score_variance_against_complete_score():
    """complete_score_variance equals sum_i [sum_k r s s' - g g'] built from complete_score."""
    model, data, params = _fitted("full", n=200)
    resp, _ = model.e_step(data, params)
    S = model.complete_score(data, params)            # (n, K, P)
    g = np.einsum("nk,nkp->np", resp, S)
    direct = np.einsum("nk,nkp,nkq->pq", resp, S, S) - g.T @ g
    fast = model.complete_score_variance(data, params, resp)
    assert np.abs(fast - direct).max() <= 1e-10 * np.abs(direct).max()
