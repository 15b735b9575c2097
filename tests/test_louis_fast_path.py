"""The moment-based Louis path for Gaussian mixtures equals the per-row path; the order of the paths."""

from __future__ import annotations

import numpy as np
import pytest

from src.estimation.em import fit_em
from src.inference.louis import (MASKED_SCORES, MOMENTS, SCORES, _one_pass, _strategies,
                                 louis_information)
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


class DeclinesShortChunks(GaussianMixtureModel):
    """A Gaussian mixture whose moments are declined for chunks under 128 rows (the last one here)."""

    def score_variance_moments(self, data, params, resp):
        if data["X"].shape[0] < 128:
            return None
        return super().score_variance_moments(data, params, resp)


def test_moments_declined_on_a_later_chunk_give_the_per_row_result():
    """When the moments are declined half-way through the rows, the result is exactly the per-row one."""
    model, data, params = _fitted("full", n=600)
    late = DeclinesShortChunks(2, covariance="full")
    late.setup(model.meta)
    got = louis_information(late, data, params, chunk_size=256)       # chunks 256, 256, 88
    want = louis_information(model, data, params, chunk_size=256, use_fast=False)
    assert _one_pass(late, data, params, MOMENTS, **_pass_options(256)) is None
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_masked_scores_are_the_last_resort():
    """An impossible class for some rows (an LCA probability of 0) makes the scores infinite; the masked scores are used."""
    from tests.test_numerical_se import lca_case
    model, data = lca_case()
    fit = fit_em(model, data, n_starts=2, tol=1e-8, seed=1)
    params = {k: v.copy() for k, v in fit.params.items()}
    params["prob"][0, 0, :2] = [1.0, 0.0]
    with np.errstate(all="ignore"):
        assert _strategies(model, True, True, False) == [SCORES, MASKED_SCORES]
        _, V = _one_pass(model, data, params, SCORES, **_pass_options(200))
        assert not np.all(np.isfinite(V))
        I_c, V = _one_pass(model, data, params, MASKED_SCORES, **_pass_options(200))
        I_obs, I_c2 = louis_information(model, data, params, chunk_size=200)
    assert np.all(np.isfinite(I_obs))
    np.testing.assert_array_equal(I_c2, 0.5 * (I_c + I_c.T))
    np.testing.assert_array_equal(I_obs, I_c2 - 0.5 * (V + V.T))


def _pass_options(chunk_size):
    return dict(chunk_size=chunk_size, steps_s=None, steps_h=None, skip_idx=np.array([], dtype=int))
