"""The Gaussian mixture's fast sandwich (src/inference/sandwich.py with the model's
``observed_scores`` and ``score_outer_moments``) against the slow reference: Louis' pass
with per-row complete scores (n, K, P) and B = sum_i c_i g_i g_i' accumulated there; B's moments
carried in Louis' own moment pass against their separate pass."""

from __future__ import annotations

import numpy as np
import pytest

from src.estimation.em import fit_em
from src.estimation.engines import InMemoryEngine
from src.inference import derivatives as dv
from src.inference.louis import (SCORE_WEIGHT_POWER, louis_from_parts, louis_passes, louis_plan,
                              score_outer_of_parts)
from src.inference.results import boundary_parameters
from src.inference.sandwich import (_louis_uses_moments, _score_outer, sandwich_covariance,
                                   sandwich_se, score_outer_parts)
from src.models.base import WEIGHT_KEY, split_weight
from src.models.gmm import GaussianMixtureModel
from src.utils.rng import stream

COVARIANCES = ["full", "diag", "spherical"]


def _case(covariance: str, K: int = 3, D: int = 3, n: int = 900):
    rng = stream(61, "test-data", D)
    centres = np.array([[0.0, 0.0, 0.0, 1.0], [3.0, 1.0, -1.0, 0.0], [0.5, 4.0, 2.0, -2.0]])[:K, :D]
    X = centres[rng.integers(0, K, n)] + rng.normal(size=(n, D)) * np.linspace(0.6, 1.5, D)
    model = GaussianMixtureModel(K, covariance=covariance, reg_covar=0.0)
    model.setup(GaussianMixtureModel.meta_for_array(X))
    params = fit_em(model, {"X": X}, n_starts=1, seed=2, tol=1e-10, max_iter=400).params
    return model, {"X": X}, params


@pytest.fixture(scope="module")
def cases():
    return {cov: _case(cov) for cov in COVARIANCES}


def slow_sandwich(model, data, params, weight_type="frequency"):
    """The reference: Louis' pass over the per-row complete scores, B accumulated in it."""
    bnd = boundary_parameters(model, params)
    weighted = split_weight(data)[1] is not None
    plan = louis_plan(model, dv.head_rows(data), params, skip=set(bnd), weighted=weighted)
    slow_plan = plan.__class__(tuple(s for s in plan.strategies if s != "moments"),
                               plan.steps_s, plan.steps_h, plan.skip_idx, plan.n_free)
    parts, _ = louis_passes(model, data, params, slow_plan,
                            score_power=SCORE_WEIGHT_POWER[weight_type])
    A, _ = louis_from_parts(model, params, parts, slow_plan)
    cov, _ = sandwich_covariance(A, parts["B"], bnd)
    return cov, parts["B"]


def _assert_cov_close(got, want, rtol):
    d = np.sqrt(np.abs(np.diag(want)))
    assert np.array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    assert np.max((np.abs(got - want) / np.outer(d, d))[ok]) <= rtol


def _with_weights(data, weight_type):
    if weight_type is None:
        return data
    n = data["X"].shape[0]
    rng = stream(62, "test-weights")
    w = rng.integers(1, 5, n).astype(float) if weight_type == "frequency" else rng.uniform(0.2, 3.0, n)
    return {**data, WEIGHT_KEY: w}


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_observed_scores_are_the_responsibility_weighted_complete_scores(cases, covariance):
    """observed_scores equals sum_k r_ik s_ik from the (n, K, P) complete scores to 1e-13."""
    model, data, params = cases[covariance]
    resp, _ = model.e_step(data, params)
    want = np.einsum("nk,nkp->np", resp, model.complete_score(data, params))
    got = model.observed_scores(data, params, resp)
    assert np.abs(got - want).max() <= 1e-13 * np.abs(want).max()


@pytest.mark.parametrize("covariance", ["full", "diag"])
@pytest.mark.parametrize("weight_type", [None, "frequency", "sampling"])
def test_fast_sandwich_equals_the_slow_reference(cases, covariance, weight_type):
    """The sandwich covariance (full and diagonal covariances, no, frequency and sampling weights) equals the per-row-score reference to 1e-10."""
    model, data, params = cases[covariance]
    data = _with_weights(data, weight_type)
    plan = louis_plan(model, dv.head_rows(data), params)
    assert _louis_uses_moments(model, data, params, plan)   # the fast path is the one tested
    want, _ = slow_sandwich(model, data, params, weight_type or "frequency")
    got = sandwich_se(model, data, params, chunk_size=256, weight_type=weight_type or "frequency")
    _assert_cov_close(got.cov_free, want, 1e-10)


@pytest.mark.parametrize("weight_type", [None, "sampling"])
def test_moments_give_the_scores_outer_product(cases, weight_type):
    """B from the degree-4 moments (full covariances) equals G' diag(c) G of the observed scores to 1e-10."""
    model, data, params = cases["full"]
    data = _with_weights(data, weight_type)
    rows, w = split_weight(data)
    resp, _ = model.e_step(rows, params)
    c = None if w is None else w ** 2
    mom = model.score_outer_moments(rows, params, resp, c)
    assert mom is not None
    B = model.score_outer_from_moments(params, mom)
    G = model.observed_scores(rows, params, resp)
    want = (G * (1.0 if c is None else c[:, None])).T @ G
    d = np.sqrt(np.diag(want))
    assert np.max(np.abs(B - want) / np.outer(d, d)) <= 1e-10


def test_partitions_sum_to_the_in_memory_middle(cases):
    """B over a row engine's partitions (weighted rows cut unevenly) equals B over the rows in memory to 1e-12."""
    model, data, params = cases["full"]
    data = _with_weights(data, "frequency")
    skip = np.zeros(0, dtype=int)
    whole = score_outer_parts(model, dv.iter_chunks(data, 4096), params, skip, 1)
    cuts = [0, 100, 450, 900]
    parts = [{k: v[a:b] for k, v in data.items()} for a, b in zip(cuts[:-1], cuts[1:])]
    engine = InMemoryEngine(parts, chunk_rows=128)
    split = _score_outer(model, engine, params, skip, 1, 128)
    d = np.sqrt(np.diag(whole))
    assert np.max(np.abs(split - whole) / np.outer(d, d)) <= 1e-12


@pytest.mark.parametrize("weight_type", [None, "frequency", "sampling"])
def test_louis_pass_carries_the_middle_in_its_moments(cases, weight_type):
    """With full covariances Louis' moment pass takes B's moments on its monomials: B equals the separate pass's to 1e-12, over partitions too, and Louis' part is bitwise unchanged."""
    model, data, params = cases["full"]
    data = _with_weights(data, weight_type)
    power = SCORE_WEIGHT_POWER[weight_type or "frequency"]
    plan = louis_plan(model, dv.head_rows(data), params)
    skip = plan.skip_idx
    parts, strategy = louis_passes(model, data, params, plan, chunk_size=256, score_power=power)
    assert strategy == "moments" and "outer_moments" in parts and "B" not in parts
    alone, _ = louis_passes(model, data, params, plan, chunk_size=256)
    want = _score_outer(model, data, params, skip, power, 256)
    d = np.sqrt(np.diag(want))
    got = score_outer_of_parts(model, params, parts, plan)
    assert np.max(np.abs(got - want) / np.outer(d, d)) <= 1e-12
    for key in ("I_c", "moments"):   # Louis' own part bitwise (reports compare the methods)
        np.testing.assert_array_equal(parts[key], alone[key])
    cuts = [0, 100, 450, 900]
    engine = InMemoryEngine([{k: v[a:b] for k, v in data.items()}
                             for a, b in zip(cuts[:-1], cuts[1:])], chunk_rows=128)
    split, _ = louis_passes(model, engine, params, plan, chunk_size=128, score_power=power)
    got = score_outer_of_parts(model, params, split, plan)
    assert np.max(np.abs(got - want) / np.outer(d, d)) <= 1e-12
