"""Latent class model: data coding, closed forms, StepMix, published poLCA values, derivatives."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import linear_sum_assignment

from tests.derivative_checks import DerivativeChecks
from src.estimation import fit_em
from src.models.lca import LatentClassModel, order_codes
from src.models.registry import get_model_class
from src.utils.errors import DataError
from src.utils.rng import stream

REFERENCE = Path(__file__).parent / "reference"

TRUE_WEIGHT = np.array([0.5, 0.3, 0.2])
SIZES = (2, 3, 4, 2, 3)


def true_prob(rng: np.random.Generator) -> np.ndarray:
    """A well-separated 3-class, 5-item model (items with 2-4 categories)."""
    prob = np.zeros((3, len(SIZES), max(SIZES)))
    for k in range(3):
        for j, s in enumerate(SIZES):
            a = np.full(s, 0.3)
            a[(k + j) % s] = 3.0
            prob[k, j, :s] = rng.dirichlet(a)
    return prob


def simulate(n: int, seed: int, missing: float = 0.0) -> tuple[pd.DataFrame, np.ndarray]:
    """Simulated answers as a text frame (codes "1".."C"), optionally with missing cells."""
    rng = stream(seed, "test", 0)
    prob = true_prob(rng)
    meta = {"items": [f"q{j + 1}" for j in range(len(SIZES))],
            "categories": [[str(c + 1) for c in range(s)] for s in SIZES]}
    model = LatentClassModel(3)
    model.setup(meta)
    Y = model.sample({"weight": TRUE_WEIGHT, "prob": prob}, {"Y": np.zeros((n, len(SIZES)), int)}, rng)["Y"]
    text = (Y + 1).astype(str).astype(object)
    if missing:
        hole = rng.random(Y.shape) < missing
        hole[hole.all(axis=1), 0] = False
        text[hole] = np.nan
    return pd.DataFrame(text, columns=meta["items"]), prob


def build(frame: pd.DataFrame, K: int) -> tuple[LatentClassModel, dict]:
    data, meta = LatentClassModel.prepare_data(frame, {})
    model = LatentClassModel(K)
    model.setup(meta)
    return model, data


def brute_force_loglik(Y: np.ndarray, w: np.ndarray, prob: np.ndarray) -> float:
    """Row by row, item by item, skipping missing answers (independent of the model code)."""
    total = 0.0
    for row in Y:
        lik = 0.0
        for k in range(w.size):
            p = w[k]
            for j, y in enumerate(row):
                if y >= 0:
                    p *= prob[k, j, y]
            lik += p
        total += np.log(lik)
    return total


class TestData:
    def test_codes_are_text_in_documented_order(self):
        """Codes stay text: numeric ones numerically, then the others lexicographically."""
        frame = pd.DataFrame({"a": ["2", "1", "x", "10", "9", "1"],
                              "b": ["yes", "no", None, "no", "", "yes"]})
        data, meta = LatentClassModel.prepare_data(frame, {})
        assert meta["categories"] == [["1", "2", "9", "10", "x"], ["no", "yes"]]
        assert data["Y"].tolist() == [[1, 1], [0, 0], [4, -1], [3, 0], [2, -1], [0, 1]]
        assert order_codes({"b", "a", "-1", "0.5"}) == ["-1", "0.5", "a", "b"]
        model = LatentClassModel(2)
        model.setup(meta)
        names = model.reported_names()
        assert names[:2] == ["weight[1]", "weight[2]"]
        assert names[2:9] == ["prob[1,a,1]", "prob[1,a,2]", "prob[1,a,9]", "prob[1,a,10]",
                              "prob[1,a,x]", "prob[1,b,no]", "prob[1,b,yes]"]
        assert model.free_names()[1:6] == ["prob[1,a,1]", "prob[1,a,2]", "prob[1,a,9]",
                                           "prob[1,a,10]", "prob[1,b,no]"]

    def test_numeric_frame_keeps_integer_codes(self):
        """A float column holding whole numbers (NaN-promoted ints) gives codes "1", "2"."""
        frame = pd.DataFrame({"a": [1.0, 2.0, np.nan], "b": [3, 1, 1]})
        data, meta = LatentClassModel.prepare_data(frame, {})
        assert meta["categories"] == [["1", "2"], ["1", "3"]]
        assert data["Y"].tolist() == [[0, 1], [1, 0], [-1, 0]]

    def test_all_missing_rows_are_an_error(self):
        """Rows without any answer are one DataError naming how many there are and the first one's 0-based position."""
        frame = pd.DataFrame({"a": ["1", None, "2", ""], "b": ["1", np.nan, "2", None]})
        with pytest.raises(DataError, match=r"2 rows have every answer missing \(the first is row 1, "
                                            r"0-based as pandas counts\)"):
            LatentClassModel.prepare_data(frame, {})
        with pytest.raises(DataError, match="no answers"):
            LatentClassModel.prepare_data(pd.DataFrame({"a": ["1", "2"], "b": [None, None]}), {})

    def test_registry(self):
        """The name "lca" finds the latent class model."""
        assert get_model_class("lca") is LatentClassModel


class TestClosedForms:
    def test_one_class_is_the_observed_frequencies(self):
        """K = 1: prob = frequencies among observed answers; loglik = sum of log frequencies."""
        frame, _ = simulate(500, seed=1, missing=0.2)
        model, data = build(frame, 1)
        fit = fit_em(model, data, n_starts=1, tol=1e-12, seed=0)
        Y = data["Y"]
        expected_ll = 0.0
        for j, codes in enumerate(model.categories):
            obs = Y[:, j][Y[:, j] >= 0]
            freq = np.bincount(obs, minlength=len(codes)) / obs.size
            np.testing.assert_allclose(fit.params["prob"][0, j, :len(codes)], freq, rtol=1e-12)
            expected_ll += float(np.sum(np.log(freq[obs])))
        assert fit.loglik == pytest.approx(expected_ll, rel=1e-12)
        assert fit.params["weight"].tolist() == [1.0]

    def test_log_joint_matches_brute_force_with_missing(self):
        """The vectorised likelihood equals a row-by-row loop that skips missing answers."""
        frame, prob = simulate(200, seed=2, missing=0.3)
        model, data = build(frame, 3)
        params = {"weight": TRUE_WEIGHT, "prob": prob}
        assert model.loglik(data, params) == pytest.approx(
            brute_force_loglik(data["Y"], TRUE_WEIGHT, prob), rel=1e-12)

    def test_zero_probability_gives_minus_infinity_not_nan(self):
        """An observed answer of probability 0 makes that class impossible for the row."""
        model, data = build(pd.DataFrame({"a": ["1", "2", "1"], "b": ["1", "1", None]}), 2)
        prob = np.array([[[1.0, 0.0], [0.5, 0.5]], [[0.3, 0.7], [1.0, 0.0]]])
        lj = model.log_joint(data, {"weight": np.array([0.5, 0.5]), "prob": prob})
        assert not np.isnan(lj).any()
        assert lj[1, 0] == -np.inf and np.isfinite(lj[1, 1])
        assert lj[0, 0] == pytest.approx(np.log(0.5 * 1.0 * 0.5))
        assert lj[2, 1] == pytest.approx(np.log(0.5 * 0.3))

    def test_em_never_lowers_the_loglik(self):
        """Plain EM iterations with missing answers, from a random start: monotone."""
        frame, _ = simulate(800, seed=3, missing=0.15)
        model, data = build(frame, 3)
        params = model.init_params(data, stream(0, "start", 0))
        prev = -np.inf
        for _ in range(200):
            stats, ll = model.e_step_stats(data, params)
            assert ll >= prev - 1e-10 * abs(ll)
            prev = ll
            params = model.m_step(stats)
        assert model.in_parameter_space(params)

    def test_sample_keeps_missing_pattern(self):
        """Simulation keeps each row's missing answers and reproduces the probabilities."""
        frame, prob = simulate(20000, seed=4, missing=0.25)
        model, data = build(frame, 1)
        params = {"weight": np.array([1.0]), "prob": prob[:1]}
        new = model.sample(params, data, stream(0, "bootstrap", 0))["Y"]
        np.testing.assert_array_equal(new < 0, data["Y"] < 0)
        for j, s in enumerate(SIZES):
            obs = new[:, j][new[:, j] >= 0]
            freq = np.bincount(obs, minlength=s) / obs.size
            se = np.sqrt(prob[0, j, :s] * (1 - prob[0, j, :s]) / obs.size)
            assert np.all(np.abs(freq - prob[0, j, :s]) < 4.5 * se + 1e-12)


def _match(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """Permutation of their classes that best matches ours (flattened probabilities)."""
    cost = ((ours[:, None, :] - theirs[None, :, :]) ** 2).sum(axis=2)
    return linear_sum_assignment(cost)[1]


class TestStepMix:
    @pytest.mark.parametrize("missing", [0.0, 0.1])
    def test_same_maximum_and_estimates(self, missing):
        """Same data, tight tolerances: same maximised loglik and matched parameters."""
        # imported here, not in the class body: a skip raised at collection would skip the module
        stepmix = pytest.importorskip("stepmix.stepmix")
        frame, _ = simulate(1500, seed=5, missing=missing)
        model, data = build(frame, 3)
        fit = fit_em(model, data, n_starts=6, tol=1e-11, max_iter=3000, seed=11)
        X = np.where(data["Y"] >= 0, data["Y"], np.nan).astype(float)
        sm = stepmix.StepMix(n_components=3, measurement="categorical_nan" if missing else "categorical",
                                  n_init=6, max_iter=3000, abs_tol=1e-9, rel_tol=0.0,
                                  random_state=3, verbose=0, progress_bar=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sm.fit(X)
        n = X.shape[0]
        ll_sm = sm.score(X) * n
        assert fit.loglik == pytest.approx(ll_sm, rel=1e-6)
        pars = sm.get_parameters()
        L = int(pars["measurement"]["max_n_outcomes"])
        pis = pars["measurement"]["pis"].reshape(3, len(SIZES), L)
        theirs = np.zeros_like(fit.params["prob"])
        theirs[:, :, :min(L, theirs.shape[2])] = pis[:, :, :theirs.shape[2]]
        perm = _match(fit.params["prob"].reshape(3, -1), theirs.reshape(3, -1))
        np.testing.assert_allclose(fit.params["prob"], theirs[perm], atol=2e-4)
        np.testing.assert_allclose(fit.params["weight"], pars["weights"][perm], atol=2e-4)
        # our likelihood evaluated at StepMix's estimate equals StepMix's own figure
        at_theirs = model.loglik(data, {"weight": pars["weights"], "prob": theirs})
        assert at_theirs == pytest.approx(ll_sm, rel=1e-10)


class TestPublished:
    @pytest.mark.parametrize("K, published, accelerate", [
        (2, -317.2568, "none"), (3, -293.705, "none"), (4, -289.2858, "squarem")])
    def test_carcinoma_best_loglik(self, K, published, accelerate):
        """poLCA's published maxima for Agresti's carcinoma data, to the printed digits."""
        frame = pd.read_csv(REFERENCE / "carcinoma.csv", dtype=str)
        model, data = build(frame, K)
        fit = fit_em(model, data, n_starts=10, tol=1e-12, max_iter=20000, seed=2,
                     accelerate=accelerate)
        decimals = len(str(published).split(".")[1])
        assert round(fit.loglik, decimals) == pytest.approx(published, abs=1e-12)
        assert np.all(np.diff(fit.params["weight"]) <= 0)     # canonical order


class TestDerivatives(DerivativeChecks):
    def _setup(self):
        frame, prob = simulate(60, seed=6, missing=0.2)
        model, data = build(frame, 3)
        rng = stream(1, "test", 9)
        params = model.init_params(data, rng)
        params["weight"] = np.array([0.45, 0.35, 0.2])
        return model, data, params

    def test_reported_jacobian_and_round_trip(self):
        """from_free(to_free) is the identity; derived entries get -1 per free sibling."""
        model, data, params = self._setup()
        back = model.from_free(model.to_free(params))
        np.testing.assert_allclose(back["prob"], params["prob"], atol=1e-15)
        J = model.reported_jacobian()
        names, free = model.reported_names(), model.free_names()
        row = names.index("prob[2,q3,4]")
        cols = [free.index(f"prob[2,q3,{c}]") for c in (1, 2, 3)]
        assert J[row, cols].tolist() == [-1.0, -1.0, -1.0]
        assert np.count_nonzero(J[row]) == 3
        assert J[names.index("weight[3]"), :2].tolist() == [-1.0, -1.0]
        assert J.shape == (len(names), model.n_free_parameters())


class PlainLCA(LatentClassModel):
    """A user subclass: not built in, so the EM driver takes it row by row, one start at a
    time (its M-step clips the rounding above 1 that user-model checks refuse)."""

    def m_step(self, stats):
        params = super().m_step(stats)
        return {**params, "prob": np.minimum(params["prob"], 1.0)}


class TestPatterns:
    def test_patterns_give_the_rows_loglik_and_statistics(self):
        """The E-step on distinct answer patterns weighted by their counts equals the rows' (loglik to 1e-10 relative, statistics to 1e-10), with missing answers."""
        frame, prob = simulate(3000, seed=3, missing=0.1)
        model, data = build(frame, 3)
        patterns, counts, inverse = model.row_patterns(data)
        assert counts.sum() == 3000 and patterns["Y"].shape[0] < 1500
        assert np.array_equal(patterns["Y"][inverse], data["Y"])
        assert model.compressed_rows(data)[0] is patterns      # cached on the array
        params = model.init_params(data, stream(1, "test", 1))
        ll = model.loglik(data, params)
        assert ll == pytest.approx(brute_force_loglik(data["Y"], params["weight"], params["prob"]), rel=1e-10)
        stats, ll_pat = model.e_step_stats_weighted(patterns, params, counts)
        assert ll_pat == pytest.approx(ll, rel=1e-10)
        resp, _ = model.e_step(data, params)
        rows = model.suff_stats(data, resp)
        for key in rows:
            np.testing.assert_allclose(stats[key], rows[key], rtol=1e-10, atol=1e-9)

    def test_batched_em_map_is_each_sets_own_em_map(self):
        """em_map_batch of several parameter sets (one with a probability of exactly 0) gives each set's row-by-row EM map."""
        frame, prob = simulate(2000, seed=4, missing=0.05)
        model, data = build(frame, 3)
        sets = [model.init_params(data, stream(2, "test", i)) for i in range(4)]
        sets.append({"weight": TRUE_WEIGHT, "prob": prob})
        zero = {k: v.copy() for k, v in sets[0].items()}
        zero["prob"][1, 0] = [1.0, 0.0, 0.0, 0.0]    # item 1 (2 categories): answer 2 impossible in class 2
        sets.append(zero)
        tiny = {k: v.copy() for k, v in sets[1].items()}  # every class below exp(-745) for some rows
        tiny["prob"][:, [0, 3], 0] = 1e-200                  # items 1 and 4 have 2 categories
        tiny["prob"][:, [0, 3], 1] = 1.0 - 1e-200
        sets.append(tiny)
        news, lls, notes = model.em_map_batch(data, sets, chunk_size=97)
        plain = PlainLCA(3)
        plain.setup({"items": model.items, "categories": model.categories})
        assert (plain.log_joint(data, tiny).max(axis=1) < -745).any()
        for params, new, ll, note in zip(sets, news, lls, notes):
            resp, row_ll = plain.e_step(data, params)
            direct = plain.m_step(plain.suff_stats(data, resp))
            assert ll == pytest.approx(row_ll, rel=1e-10) and note == []
            for key in direct:
                np.testing.assert_allclose(new[key], direct[key], rtol=1e-10, atol=1e-12)

    def test_lockstep_fit_finds_the_one_at_a_time_maximum(self):
        """The built-in model (patterns, starts in lockstep) and a user subclass (rows, one start at a time) reach the same maximum from the same candidates."""
        frame, _ = simulate(2000, seed=5)
        model, data = build(frame, 3)
        plain = PlainLCA(3)
        plain.setup({"items": model.items, "categories": model.categories})
        kw = dict(seed=2, n_starts=3, n_candidates=12, candidate_iter=5, accelerate="squarem", tol=1e-10)
        a, b = fit_em(model, data, **kw), fit_em(plain, data, **kw)
        assert a.start_ids == b.start_ids and a.start_kinds == b.start_kinds
        np.testing.assert_allclose(a.start_logliks, b.start_logliks, rtol=1e-9)
        assert a.loglik == pytest.approx(plain.loglik(data, a.params), rel=1e-10)
        for key in a.params:
            np.testing.assert_allclose(a.params[key], b.params[key], atol=1e-5)

    def test_no_compression_when_most_rows_are_distinct(self):
        """Data whose rows are mostly distinct are not compressed (the driver goes row by row)."""
        rng = stream(6, "test", 0)
        Y = rng.integers(0, 4, size=(300, 8))
        model = LatentClassModel(2)
        model.setup(LatentClassModel.meta_from_array(Y))
        assert model.compressed_rows({"Y": Y}) is None
