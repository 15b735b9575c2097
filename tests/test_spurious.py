"""Spurious and degenerate maxima: flagged by the model, never chosen while a proper one exists.

Flags checked against independent computations (responsibilities by scipy, moments by
numpy), on the iris collapse the issue reported, on constructed cases (duplicated points,
an exactly fitted line), and in fit.json and the report.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import multivariate_normal

from src.estimation.em import fit_em, run_start
from src.models.gmm import DEGENERATE_FRACTION, GaussianMixtureModel
from src.models.lca import LatentClassModel
from src.models.mixreg import MixtureRegressionModel
from src.utils.rng import stream

ROOT = Path(__file__).resolve().parent.parent


def gmm(X, K, covariance="full"):
    m = GaussianMixtureModel(K, covariance=covariance)
    m.setup(GaussianMixtureModel.meta_for_array(X))
    return m, {"X": X}


def iris():
    return pd.read_csv(ROOT / "src/data/builtin/iris.csv").iloc[:, :4].to_numpy(float)


def duplicated_points():
    """A 2-D normal cloud of 200 rows plus 12 copies of one point."""
    rng = stream(4, "test-dup")
    X = np.vstack([rng.standard_normal((200, 2)) * [1.0, 2.0], np.repeat([[0.7, -1.1]], 12, axis=0)])
    return X


@pytest.fixture(scope="module")
def iris_100():
    """Iris, K=3 full, 100 random starts with seed 1 (the issue's --n-starts 100 --seed 1)."""
    model, data = gmm(iris(), 3)
    return model, data, fit_em(model, data, n_starts=100, n_candidates=0, seed=1,
                               accelerate="squarem")


class TestIrisCollapse:
    def test_the_collapsed_iris_start_is_flagged_and_not_chosen(self, iris_100):
        """Iris, 100 random starts, seed 1: the -99.17 starts (a component on identical petal widths) are flagged and -180.18548 is chosen."""
        model, data, res = iris_100
        lls = np.array(res.start_logliks)
        spurious = np.flatnonzero(lls > -100)
        assert spurious.size >= 1 and lls[spurious].max() == pytest.approx(-99.17, abs=0.01)
        assert all("singular_covariance" in res.start_flags[s] for s in spurious)
        assert res.loglik == pytest.approx(-180.18548, abs=1e-4)
        assert res.flags["singular_covariance"] >= spurious.size
        assert any("degenerate solution" in w and "not chosen" in w for w in res.warnings)

    def test_the_collapse_is_a_near_zero_variance_computed_independently(self, iris_100):
        """At the flagged iris estimate one component's variance, from scipy's responsibilities, is below 1e-4 of the data's in some direction (far below DEGENERATE_FRACTION)."""
        model, data, res = iris_100
        s = int(np.argmax(res.start_logliks))
        opts = {"tol": 1e-8, "max_iter": 1000, "seed": 1, "accelerate": "squarem", "chunk_size": 4096}
        p = run_start(model, data, opts, s)["params"]
        X = data["X"]
        dens = np.column_stack([p["weight"][k] * multivariate_normal(p["mean"][k], p["cov"][k]).pdf(X)
                                for k in range(3)])
        resp = dens / dens.sum(axis=1, keepdims=True)
        S = np.cov(X.T, bias=True)
        ratios = []
        for k in range(3):
            w = resp[:, k] / resp[:, k].sum()
            mu = w @ X
            C = (X - mu).T @ ((X - mu) * w[:, None])
            ratios.append(np.linalg.eigvals(np.linalg.solve(S, C)).real.min())
        assert min(ratios) < 1e-4


    def test_faithful_thin_component_is_flagged(self):
        """Old Faithful K=4: the -1103.88 maximum (1 of 1,000 starts), a 9-row component with a variance 1.5e-4 of the data's in one direction, is flagged; -1106.03 is chosen."""
        X = pd.read_csv(ROOT / "src/data/builtin/faithful.csv").to_numpy(float)
        model, data = gmm(X, 4)
        thin = {"weight": np.array([0.032286, 0.09915, 0.224986, 0.643578]),
                "mean": np.array([[1.824017, 45.938548], [1.836184, 53.78617],
                                  [2.15726, 56.031715], [4.290827, 79.981971]]),
                "cov": np.array([[[0.004881, -0.080972], [-0.080972, 1.49658]],
                                 [[0.00388, -0.154328], [-0.154328, 18.310645]],
                                 [[0.070194, 0.279293], [0.279293, 32.157025]],
                                 [[0.168515, 0.922341], [0.922341, 35.844508]]])}
        res = fit_em(model, data, seed=1, accelerate="squarem", extra_starts=[thin])
        assert res.start_logliks[-1] == pytest.approx(-1103.8832, abs=1e-3)
        assert res.start_flags[-1] == ["singular_covariance"]
        assert res.loglik == pytest.approx(-1106.0302, abs=1e-3)


class TestConstructedCases:
    def test_duplicated_points_start_is_flagged_and_never_chosen(self):
        """A start on 12 duplicated points reaches a higher, singular maximum; it is flagged and a proper one chosen."""
        X = duplicated_points()
        model, data = gmm(X, 2)
        on_dup = {"weight": np.array([0.94, 0.06]), "mean": np.array([[0.0, 0.0], [0.7, -1.1]]),
                  "cov": np.array([np.cov(X.T), 1e-4 * np.eye(2)])}
        res = fit_em(model, data, seed=2, n_starts=4, n_candidates=12, candidate_iter=5,
                     extra_starts=[on_dup])
        assert "singular_covariance" in res.start_flags[-1]
        assert res.start_logliks[-1] > res.loglik + 10      # higher, and still not chosen
        assert not res.start_flags[res.best_start]
        assert res.replication["pool"] == "unflagged"

    def test_every_start_flagged_chooses_the_best_with_a_warning(self):
        """Data that are three repeated points: every K=3 start collapses, the best is reported with a warning."""
        X = np.repeat(np.array([[0.0, 0.0], [1.0, 2.0], [3.0, 1.0]]), 30, axis=0)
        model, data = gmm(X, 3)
        res = fit_em(model, data, seed=1, n_starts=3, n_candidates=6, candidate_iter=3)
        assert all(res.start_flags)
        assert res.loglik == max(res.start_logliks)
        assert res.replication["pool"] == "all"
        assert any(w.startswith("every one of the 3 starts ended at a degenerate solution")
                   for w in res.warnings)

    def test_a_single_flagged_start_is_recorded_without_a_search_warning(self):
        """One start (init_params) ending degenerate: its flag is recorded; no warning about other starts is added."""
        X = duplicated_points()
        model, data = gmm(X, 2)
        on_dup = {"weight": np.array([0.94, 0.06]), "mean": np.array([[0.0, 0.0], [0.7, -1.1]]),
                  "cov": np.array([np.cov(X.T), 1e-4 * np.eye(2)])}
        res = fit_em(model, data, init_params=on_dup)
        assert res.start_flags == [["singular_covariance"]] and res.flags == {"singular_covariance": 1}
        assert not any("degenerate solution" in w or "only one of" in w for w in res.warnings)
        assert res.replication["pool"] == "all" and res.replication["n_reached"] == 1

    @pytest.mark.parametrize("covariance", ["full", "diag", "spherical"])
    def test_gmm_degeneracies_against_moments(self, covariance):
        """gmm flags a component whose variance is below DEGENERATE_FRACTION (1e-3) of the data's, and one with too few rows."""
        rng = stream(1, "test-degen")
        X = rng.standard_normal((300, 2)) * [2.0, 0.5]
        model, _ = gmm(X, 2, covariance)
        n = X.shape[0]
        nk = np.array([297.0, 3.0])
        sx = np.array([X[:297].sum(axis=0), X[297:].sum(axis=0)])
        stats = {"nk": nk, "sx": sx - nk[:, None] * model.shift}
        Xc = X - model.shift
        full = np.array([Xc[:297].T @ Xc[:297], Xc[297:].T @ Xc[297:]])
        stats["sxx"] = {"full": full, "diag": np.array([np.diag(f) for f in full]),
                        "spherical": np.array([np.trace(f) for f in full])}[covariance]
        var = np.var(X, axis=0)
        tiny = 0.5 * DEGENERATE_FRACTION * var
        good = {"full": np.cov(X.T, bias=True), "diag": var, "spherical": var.mean()}[covariance]
        bad = {"full": np.diag(tiny), "diag": tiny, "spherical": tiny.mean()}[covariance]
        key = "var" if covariance == "spherical" else "cov"
        params = {"weight": nk / n, "mean": np.zeros((2, 2)), key: np.array([good, bad])}
        kinds = model.degeneracies(params, stats)
        needed = 3 if covariance == "full" else 2
        assert "singular_covariance" in kinds
        assert ("few_rows" in kinds) == (3 < needed)
        params[key] = np.array([good, 10 * bad])                # 5x the fraction
        assert model.degeneracies(params, {**stats, "nk": np.array([150.0, 150.0])}) == []

    def test_mixreg_exact_line_is_flagged_at_its_sigma_floor(self):
        """Mixture of regressions: a start on 8 rows lying exactly on a line ends with sigma at the floor, flagged and not chosen."""
        rng = stream(3, "test-mixreg-floor")
        n = 200
        x = rng.uniform(0, 10, n)
        y = np.where(rng.random(n) < 0.5, 1 + 0.5 * x, 6 - 0.3 * x) + rng.normal(0, 0.8, n)
        x = np.concatenate([x, np.linspace(1, 9, 8)])
        y = np.concatenate([y, 2.0 + 1.5 * np.linspace(1, 9, 8)])
        X = np.column_stack([np.ones(x.size), x])
        model = MixtureRegressionModel(3)
        model.setup({"predictors": ["intercept", "x"], "target": "y", "intercept": True,
                     **MixtureRegressionModel.shifts_of(X, y, True)})
        data = {"X": X, "y": y}
        exact = {"weight": np.array([0.48, 0.48, 0.04]),
                 "coef": np.array([[1.0, 0.5], [6.0, -0.3], [2.0, 1.5]]),
                 "sigma": np.array([0.8, 0.8, 1e-3])}
        res = fit_em(model, data, seed=1, n_starts=3, n_candidates=9, candidate_iter=4,
                     extra_starts=[exact])
        assert "sigma_floor" in res.start_flags[-1]
        assert res.start_logliks[-1] > res.loglik
        assert not res.start_flags[res.best_start]
        assert model.degeneracies(exact | {"sigma": np.array([0.8, 0.8, model.sigma_floor])},
                                  {"nk": np.array([100.0, 100.0, 8.0])}) == ["sigma_floor"]
        assert model.degeneracies(exact, {"nk": np.array([100.0, 105.0, 2.5])}) == ["few_rows"]

    def test_lca_boundary_probabilities_are_proper(self):
        """An LCA estimate with probabilities of exactly 0 and 1 is not flagged."""
        rng = stream(2, "test-lca-boundary")
        z = rng.integers(2, size=400)
        Y = np.column_stack([z, z, (rng.random(400) < 0.3 + 0.4 * z)]).astype(np.int64)
        model = LatentClassModel(2)
        model.setup(LatentClassModel.meta_from_array(Y))
        res = fit_em(model, {"Y": Y}, seed=1, n_starts=3, n_candidates=6, candidate_iter=3)
        assert np.any(res.params["prob"] == 0.0) or np.any(res.params["prob"] == 1.0)
        assert res.start_flags == [[]] * len(res.start_flags) and res.flags == {}


class TestOutput:
    def test_fit_json_and_report_give_replication_and_flags(self, tmp_path):
        """fit.json holds the replication summary and the flag counts; the report states both."""
        from src.config import RunOptions
        from src.output.writers import write_all

        X = duplicated_points()
        model, data = gmm(X, 2)
        on_dup = {"weight": np.array([0.94, 0.06]), "mean": np.array([[0.0, 0.0], [0.7, -1.1]]),
                  "cov": np.array([np.cov(X.T), 1e-4 * np.eye(2)])}
        res = fit_em(model, data, seed=2, n_starts=4, n_candidates=12, candidate_iter=5,
                     extra_starts=[on_dup])
        options = RunOptions(se_method="none", output_dir=str(tmp_path), n_starts=4,
                             n_candidates=12, candidate_iter=5).validate()
        record = {"source": "constructed", "columns": ["x1", "x2"], "n_rows": X.shape[0]}
        write_all(model, record, res.to_dict(), {}, options, fingerprint={})
        fit = json.loads((tmp_path / "fit.json").read_text())
        rep = fit["replication"]
        assert rep["best_loglik"] == res.loglik and rep["n_reached"] == res.replication["n_reached"]
        assert rep["maxima"] == res.replication["maxima"] and rep["tol"] == pytest.approx(1e-3)
        assert fit["flags"] == {"singular_covariance": 1}
        assert fit["start_candidates"][-1] == 13 and fit["start_kinds"][-1] == "extra"
        assert fit["search"] == {"n_candidates": 12, "candidate_iter": 5, "n_starts": 4, "n_extra": 1}
        report = (tmp_path / "report.md").read_text()
        assert f"reached by {rep['n_reached']} of {rep['n_pool']} starts" in report
        assert "Degenerate starts (never chosen while a proper one exists), by kind: singular_covariance 1" in report
        assert "the best 4 of 12 candidate starts" in report
