"""Classification quality (src/inference/classification.py) against its definitions
computed by hand: counts and proportions three ways, average posterior probabilities by
modal class, Nagin's odds of correct classification, entropy and smallest class (the
numbers of enumeration.csv), warnings and notes, and independence from the chunk size.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import entr
from scipy.stats import norm

from src.estimation import fit_em
from src.inference.classification import (LOW_AVEPP, SMALL_CLASS, classification_summary,
                                          summarise_responsibilities)
from src.models.gmm import GaussianMixtureModel
from src.selection.criteria import criteria
from src.utils import messages
from src.utils.messages import templates

FAITHFUL = Path(__file__).resolve().parents[1] / "src" / "data" / "builtin" / "faithful.csv"

#: five points on a line and a two-class 1-D Gaussian mixture
X5 = np.array([[-2.0], [-0.5], [0.2], [1.0], [3.0]])
P5 = {"weight": np.array([0.3, 0.7]), "mean": np.array([[-1.0], [1.5]]),
      "cov": np.array([[[1.0]], [[2.0]]])}


def _model(X: np.ndarray, K: int) -> GaussianMixtureModel:
    model = GaussianMixtureModel(K, covariance="full")
    model.setup(GaussianMixtureModel.meta_for_array(X))
    return model


def _tau_by_hand(X: np.ndarray, p: dict) -> list[list[float]]:
    """Posteriors row by row: w_k N(x; mu_k, var_k) / sum_j w_j N(x; mu_j, var_j)."""
    out = []
    for x in X[:, 0]:
        joint = [p["weight"][k] * norm.pdf(x, p["mean"][k, 0], math.sqrt(p["cov"][k, 0, 0]))
                 for k in range(len(p["weight"]))]
        out.append([j / sum(joint) for j in joint])
    return out


@pytest.fixture(scope="module")
def faithful3():
    frame = pd.read_csv(FAITHFUL)
    data, meta = GaussianMixtureModel.prepare_data(frame, {})
    model = GaussianMixtureModel(3)
    model.setup(meta)
    fit = fit_em(model, data, n_starts=2, seed=1)
    return model, data, fit.params


class TestDefinitions:
    def test_counts_three_ways_by_hand(self):
        """Counts and proportions are n*weight, the column sums of the posteriors and the modal-class tallies."""
        s = classification_summary(_model(X5, 2), {"X": X5}, P5)
        tau = _tau_by_hand(X5, P5)
        n = len(tau)
        post = [sum(row[k] for row in tau) for k in range(2)]
        modal = [sum(1 for row in tau if max(range(2), key=row.__getitem__) == k) for k in range(2)]
        assert s["n_obs"] == 5 and s["n_components"] == 2
        assert s["counts"]["weights"] == pytest.approx([0.3 * 5, 0.7 * 5], rel=1e-15)
        assert s["counts"]["posteriors"] == pytest.approx(post, rel=1e-12)
        assert s["counts"]["modal"] == modal == [2, 3]
        assert s["proportions"]["weights"] == pytest.approx([0.3, 0.7], rel=1e-15)
        assert s["proportions"]["posteriors"] == pytest.approx([p / n for p in post], rel=1e-12)
        assert s["proportions"]["modal"] == pytest.approx([m / n for m in modal], rel=1e-15)

    def test_average_posterior_and_odds_of_correct_classification_by_hand(self):
        """AvePP row k averages the posteriors of the rows whose modal class is k; OCC is Nagin's ratio of odds."""
        s = classification_summary(_model(X5, 2), {"X": X5}, P5)
        tau = _tau_by_hand(X5, P5)
        for k in range(2):
            rows = [row for row in tau if max(range(2), key=row.__getitem__) == k]
            expected = [sum(r[j] for r in rows) / len(rows) for j in range(2)]
            assert s["average_posterior"][k] == pytest.approx(expected, rel=1e-12)
            a, w = expected[k], P5["weight"][k]
            assert s["odds_correct"][k] == pytest.approx((a / (1 - a)) / (w / (1 - w)), rel=1e-11)
        assert all(sum(row) == pytest.approx(1.0, abs=1e-14) for row in s["average_posterior"])

    def test_entropy_and_smallest_class_are_enumeration_csv_numbers(self, faithful3):
        """Entropy and smallest class equal src.selection.criteria's (enumeration.csv, to rounding) and the hand formulas."""
        model, data, params = faithful3
        s = classification_summary(model, data, params, chunk_size=100)
        crit = criteria(model, data, params, loglik=-1.0, n_params=1, chunk_size=100)
        assert s["entropy"] == pytest.approx(crit["entropy"], rel=1e-12)
        assert s["smallest_class"] == crit["smallest_class"] == float(params["weight"].min())
        resp, _ = model.e_step(data, params)
        en = float(entr(resp).sum())  # -sum tau ln tau, 0 ln 0 = 0
        assert s["entropy"] == pytest.approx(1 - en / (resp.shape[0] * math.log(3)), rel=1e-10)

    def test_responsibilities_given_directly_agree(self, faithful3):
        """summarise_responsibilities on the whole (n, K) matrix gives the summary's counts and matrix."""
        model, data, params = faithful3
        resp, _ = model.e_step(data, params)
        direct = summarise_responsibilities(resp, params["weight"])
        s = classification_summary(model, data, params)
        assert direct["counts"]["modal"] == s["counts"]["modal"]
        np.testing.assert_allclose(direct["counts"]["posteriors"], s["counts"]["posteriors"],
                                   rtol=1e-12)
        np.testing.assert_allclose(direct["average_posterior"], s["average_posterior"], rtol=1e-12)

    def test_one_class(self):
        """With one class every row is sure of it: AvePP 1, entropy and odds undefined (None)."""
        p = {"weight": np.array([1.0]), "mean": np.array([[0.0]]), "cov": np.array([[[1.0]]])}
        s = classification_summary(_model(X5, 1), {"X": X5}, p)
        assert s["average_posterior"] == [[1.0]] and s["counts"]["modal"] == [5]
        assert s["entropy"] is None and s["odds_correct"] is None
        assert s["smallest_class"] == 1.0 and s["warnings"] == [] and s["notes"] == []


class TestChunks:
    @pytest.mark.parametrize("chunk_size", [3, 17, 100])
    def test_summary_does_not_depend_on_the_chunk_size(self, faithful3, chunk_size):
        """Chunks of 3, 17 or 100 rows give the one-chunk summary to rounding (modal counts exactly)."""
        model, data, params = faithful3
        whole = classification_summary(model, data, params, chunk_size=10 ** 6)
        part = classification_summary(model, data, params, chunk_size=chunk_size)
        assert part["counts"]["modal"] == whole["counts"]["modal"]
        for key in ("weights", "posteriors"):
            np.testing.assert_allclose(part["counts"][key], whole["counts"][key], rtol=1e-12)
        np.testing.assert_allclose(part["average_posterior"], whole["average_posterior"],
                                   rtol=1e-11, atol=1e-300)
        np.testing.assert_allclose(part["odds_correct"], whole["odds_correct"], rtol=1e-10)
        assert part["entropy"] == pytest.approx(whole["entropy"], rel=1e-12)
        assert part["smallest_class"] == whole["smallest_class"]


class TestWarnings:
    def test_empty_modal_class_small_class_and_json(self):
        """A class far from every row is nobody's modal class: NaN row, a note, a small-class warning; json.dumps writes it."""
        p = {"weight": np.array([0.02, 0.98]), "mean": np.array([[40.0], [0.0]]),
             "cov": np.array([[[1.0]], [[4.0]]])}
        s = classification_summary(_model(X5, 2), {"X": X5}, p)
        assert s["counts"]["modal"] == [0, 5]
        assert all(math.isnan(v) for v in s["average_posterior"][0])
        assert s["average_posterior"][1][1] == pytest.approx(1.0, abs=1e-12)
        assert math.isnan(s["odds_correct"][0])
        assert len(s["notes"]) == 1 and "Class 1" in s["notes"][0]
        assert len(s["warnings"]) == 1 and "class 1" in s["warnings"][0]
        assert s["smallest_class"] == 0.02 < SMALL_CLASS
        text = json.dumps(s, allow_nan=True)
        assert json.loads(text)["counts"]["modal"] == [0, 5]

    def test_low_average_posterior_warning_in_english_and_chinese(self):
        """Two overlapping classes get one warning each (AvePP below 0.7), in the run's language."""
        rng = np.random.default_rng(3)
        X = rng.normal(0.0, 1.0, (200, 1))
        p = {"weight": np.array([0.5, 0.5]), "mean": np.array([[-0.2], [0.2]]),
             "cov": np.array([[[1.0]], [[1.0]]])}
        s = classification_summary(_model(X, 2), {"X": X}, p)
        diag = [s["average_posterior"][k][k] for k in range(2)]
        assert all(d < LOW_AVEPP for d in diag)
        assert [w.split()[:2] for w in s["warnings"]] == [["Class", "1"], ["Class", "2"]]
        saved = list(messages._LANG)
        try:
            messages.set_language("zh")
            zh = classification_summary(_model(X, 2), {"X": X}, p)
        finally:
            messages._LANG[:] = saved
        assert zh["warnings"][0].startswith("第 1 类")
        for key in ("classification.small_class", "classification.low_avepp",
                    "classification.empty_modal"):
            assert set(templates()[key]) == {"en", "zh"}


CARCINOMA = Path(__file__).resolve().parent / "reference" / "carcinoma.csv"


@pytest.fixture(scope="module")
def carcinoma3():
    """poLCA's carcinoma data (118 rows, 20 distinct answer patterns) and a 3-class fit."""
    from src.models.lca import LatentClassModel

    frame = pd.read_csv(CARCINOMA, dtype=str)
    data, meta = LatentClassModel.prepare_data(frame, {})
    model = LatentClassModel(3)
    model.setup(meta)
    fit = fit_em(model, data, n_starts=3, seed=1)
    return model, data, fit.params


class TestPosteriorsOnce:
    def test_patterns_expand_to_every_rows_responsibilities(self, carcinoma3):
        """On LCA's 20 distinct patterns, expanded row by row (any chunk size), the posteriors are e_step's on all 118 rows."""
        from src.inference.classification import posteriors_of

        model, data, params = carcinoma3
        post = posteriors_of(model, data, params)
        assert post.tau.shape == (20, 3) and post.n_rows == 118 and post.counts.sum() == 118
        rows, _ = model.e_step(data, params)
        np.testing.assert_allclose(post.rows(), rows, rtol=1e-12, atol=1e-15)
        for size in (1, 7, 1000):
            chunks = list(post.chunks(size))
            assert [a for a, _ in chunks] == list(range(0, 118, size))
            np.testing.assert_array_equal(np.concatenate([c for _, c in chunks]), post.rows())

    def test_summary_on_patterns_equals_the_summary_on_rows(self, carcinoma3):
        """Summing over patterns weighted by their counts gives the row-by-row summary: modal counts exactly, the rest to rounding, entropy as criteria's."""
        from src.inference.classification import posteriors_of

        model, data, params = carcinoma3
        rows, _ = model.e_step(data, params)
        by_pattern = classification_summary(model, data, params)
        by_row = classification_summary(model, data, params, resp=rows)
        again = classification_summary(model, data, params, resp=posteriors_of(model, data, params))
        assert by_pattern == again
        assert by_pattern["n_obs"] == by_row["n_obs"] == 118
        assert by_pattern["counts"]["modal"] == by_row["counts"]["modal"]
        np.testing.assert_allclose(by_pattern["counts"]["posteriors"], by_row["counts"]["posteriors"],
                                   rtol=1e-12)
        np.testing.assert_allclose(by_pattern["average_posterior"], by_row["average_posterior"],
                                   rtol=1e-11, atol=1e-15)
        crit = criteria(model, data, params, loglik=-1.0, n_params=1)
        en = float(entr(rows).sum())
        assert by_pattern["entropy"] == pytest.approx(crit["entropy"], rel=1e-12)
        assert by_pattern["entropy"] == pytest.approx(1 - en / (118 * math.log(3)), rel=1e-12)

    def test_given_responsibilities_are_used_as_given(self):
        """resp= is what the summary counts: hand-made posteriors give their own modal counts and sums."""
        tau = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
        s = classification_summary(_model(X5[:3], 2), {"X": X5[:3]}, P5, resp=tau)
        assert s["counts"]["modal"] == [2, 1]
        assert s["counts"]["posteriors"] == pytest.approx([1.7, 1.3], rel=1e-15)
        assert s["average_posterior"][0] == pytest.approx([0.75, 0.25], rel=1e-15)
