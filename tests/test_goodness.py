"""Goodness of fit (src/inference/goodness.py) against hand computations over every cell,
poLCA's published carcinoma maxima, direct two-way tables and finite differences.

poLCA's carcinoma help page publishes the maximised log-likelihoods of the 2- and 3-class
models (-317.2568, -293.705); with every answer observed, ``G2 = 2 (LL_saturated - LL)``,
so G2 follows from them to the printed digits.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from src.estimation import fit_em
from src.inference.goodness import (bivariate_residuals, gmm_derived, gmm_derived_jacobian,
                                    gmm_derived_values, gof_bootstrap, lca_fit_statistics,
                                    pattern_statistics, response_probability_table)
from src.inference.louis import louis_se
from src.models.gmm import GaussianMixtureModel
from src.models.lca import LatentClassModel
from src.utils.checkpointing import CheckpointInvalid
from src.utils.rng import stream

REFERENCE = Path(__file__).parent / "reference"
FAITHFUL = Path(__file__).resolve().parents[1] / "src" / "data" / "builtin" / "faithful.csv"


class MemoryCheckpointer:
    """A real Checkpointer that keeps every state in memory (what the tracker would write)."""

    def __init__(self, resume=None):
        self._resume = resume
        self.states = []

    def resume_state(self):
        return self._resume

    def checkpoint(self, state, *, force=False):
        self.states.append(json.loads(json.dumps(state)))   # as read back from disk
        return True


class ReversedExecutor:
    """Runs units in process, last first (results must not depend on completion order)."""

    workers = 1

    def map_unordered(self, fn, args_list):
        for i in reversed(range(len(args_list))):
            yield i, fn(*args_list[i])


def lca(sizes, K, params=None, seed=0):
    """A set-up LCA model for items of these sizes, and parameters (random unless given)."""
    Y0 = np.array([[s - 1 for s in sizes]])
    model = LatentClassModel(K)
    model.setup(LatentClassModel.meta_from_array(Y0))
    if params is None:
        params = model.init_params({"Y": Y0}, stream(seed, "test-params"))
        params["weight"] = np.linspace(1.0, 2.0, K) / np.linspace(1.0, 2.0, K).sum()
    return model, params


def simulate(model, params, n, seed, missing=0.0):
    rng = stream(seed, "test-data")
    template = np.zeros((n, len(model.sizes)), dtype=np.int64)
    if missing:
        template[rng.random(template.shape) < missing] = -1
        template[(template < 0).all(axis=1), 0] = 0
    return model.sample(params, {"Y": template}, rng)


def by_hand(model, params, Y, n_params):
    """G2, X2, df and Cochran's figures enumerating every cell of the table explicitly."""
    w, prob = params["weight"], params["prob"]
    complete = Y[(Y >= 0).all(axis=1)]
    n = complete.shape[0]
    g2 = x2 = 0.0
    expected = []
    cells = list(itertools.product(*[range(s) for s in model.sizes]))
    for cell in cells:
        p = sum(w[k] * math.prod(prob[k, j, c] for j, c in enumerate(cell)) for k in range(w.size))
        o = int(np.sum((complete == np.array(cell)).all(axis=1)))
        e = n * p
        expected.append(e)
        if e > 0 or o > 0:                     # a cell of probability 0 never observed adds 0
            x2 += (o - e) ** 2 / e
        if o:
            g2 += 2 * o * math.log(o / e)
    expected = np.array(expected)
    return {"g2": g2, "x2": x2, "df": len(cells) - 1 - n_params, "n": n,
            "share": float(np.mean(expected < 5)), "min": float(expected.min())}


def strict_json(value):
    return json.loads(json.dumps(value, allow_nan=False))


class TestHandComputation:
    SIZES = (2, 3, 2)

    def test_g2_x2_df_match_every_cell(self):
        """G2, X2 (empty cells included) and df equal the sums over all 12 cells, with missing answers."""
        model, params = lca(self.SIZES, 2, seed=1)
        Y = simulate(model, params, 300, seed=2, missing=0.1)["Y"]
        fit = fit_em(model, {"Y": Y}, n_starts=3, n_candidates=0, tol=1e-10, seed=3)
        res = strict_json(lca_fit_statistics(model, {"Y": Y}, fit.params, n_params=fit.n_params))
        hand = by_hand(model, fit.params, Y, fit.n_params)
        assert res["n_rows"] == 300 and res["n_complete"] == hand["n"] < 300
        assert res["n_cells"] == 12 and res["df"] == hand["df"] == 12 - 1 - 9
        assert res["df_polca"] == min(300, 11) - 9
        assert res["g2"] == pytest.approx(hand["g2"], rel=1e-10)
        assert res["x2"] == pytest.approx(hand["x2"], rel=1e-10)
        assert res["sparse_rule"] is None or res["sparse_rule"] == "cells"
        assert res["share_expected_below_5"] == pytest.approx(hand["share"], abs=1e-15)
        assert res["min_expected"] == pytest.approx(hand["min"], rel=1e-12)
        assert any(str(hand["n"]) in note for note in res["notes"])   # rows used are reported

    def test_blocks_change_nothing(self, monkeypatch):
        """Enumerating the cells and reading the rows in tiny blocks gives the same figures."""
        from src.inference import goodness

        model, params = lca((2, 3, 2, 3), 2, seed=17)
        data = simulate(model, params, 900, seed=18, missing=0.05)
        whole = lca_fit_statistics(model, data, params, n_params=13)
        bvr = bivariate_residuals(model, data, params)
        assert whole["sparse_rule"] != "mean"
        monkeypatch.setattr(goodness, "_CELLS", 4)
        monkeypatch.setattr(goodness, "_ROWS", 7)
        blocks = lca_fit_statistics(model, data, params, n_params=13)
        hand = by_hand(model, params, data["Y"], 13)
        assert blocks["share_expected_below_5"] == whole["share_expected_below_5"] == hand["share"]
        assert blocks["min_expected"] == pytest.approx(whole["min_expected"], rel=1e-12)
        assert blocks["x2"] == pytest.approx(whole["x2"], rel=1e-12)
        assert [p["bvr"] for p in bivariate_residuals(model, data, params)["pairs"]] == \
            pytest.approx([p["bvr"] for p in bvr["pairs"]], rel=1e-12)

    def test_p_values_when_not_sparse(self):
        """A large table with every expected count at least 5 gets chi-square p-values on df."""
        prob = np.zeros((2, 3, 3))
        prob[0, :, :2] = [[0.7, 0.3], [0.3, 0.3], [0.6, 0.4]]
        prob[0, 1, 2] = 0.4
        prob[1, :, :2] = [[0.2, 0.8], [0.5, 0.2], [0.3, 0.7]]
        prob[1, 1, 2] = 0.3
        params = {"weight": np.array([0.55, 0.45]), "prob": prob}
        model, _ = lca(self.SIZES, 2, params=params)
        Y = simulate(model, params, 3000, seed=4)["Y"]
        res = lca_fit_statistics(model, {"Y": Y}, params, n_params=7)
        hand = by_hand(model, params, Y, 7)
        assert hand["min"] >= 5 and res["sparse"] is False
        assert res["p_value_g2"] == pytest.approx(stats.chi2.sf(hand["g2"], 4), rel=1e-9)
        assert res["p_value_x2"] == pytest.approx(stats.chi2.sf(hand["x2"], 4), rel=1e-9)
        assert res["notes"] == [] and res["bootstrap_suggested"] is False

    def test_sparse_by_cochran_rule(self):
        """A cell expected below 1 makes the table sparse (Cochran), so no p-value and the bootstrap is offered."""
        model, params = lca(self.SIZES, 1, seed=5)
        params["prob"][0, 0, :2] = [0.999, 0.001]
        Y = simulate(model, params, 400, seed=6)["Y"]
        res = lca_fit_statistics(model, {"Y": Y}, params, n_params=5)
        hand = by_hand(model, params, Y, 5)
        assert hand["min"] < 1 and res["mean_expected"] >= 5
        assert res["sparse"] is True and res["sparse_rule"] == "cells"
        assert res["p_value_g2"] is None and res["p_value_x2"] is None
        assert res["bootstrap_suggested"] and "--gof-bootstrap" in res["notes"][-1]

    def test_no_p_value_without_degrees_of_freedom(self):
        """Two binary items and two classes leave df = 4 - 1 - 5 < 0: statistics but no p-value."""
        model, params = lca((2, 2), 2, seed=7)
        Y = simulate(model, params, 500, seed=8)["Y"]
        res = lca_fit_statistics(model, {"Y": Y}, params, n_params=5)
        assert res["df"] == -2 and res["df_polca"] == -2
        assert res["p_value_g2"] is None and not res["bootstrap_suggested"]
        assert res["g2"] == pytest.approx(by_hand(model, params, Y, 5)["g2"], rel=1e-10)

    def test_huge_table(self):
        """A table of 2**64 cells gets its exact integer df and G2/X2 over the observed patterns only."""
        model, params = lca((2,) * 64, 1, seed=19)
        Y = simulate(model, params, 60, seed=20)["Y"]
        Y[30:] = Y[:30]                                  # every pattern seen twice
        res = strict_json(lca_fit_statistics(model, {"Y": Y}, params, n_params=64))
        assert res["n_cells"] == 2**64 and res["df"] == 2**64 - 65 and res["df_polca"] == 60 - 64
        log_p = np.log(params["prob"][0, np.arange(64), Y[:30]]).sum(axis=1)
        assert res["n_patterns"] == 30
        assert res["g2"] == pytest.approx(2 * np.sum(2 * (np.log(2 / 60) - log_p)), rel=1e-12)
        e = 60 * np.exp(log_p)
        assert res["x2"] == pytest.approx(np.sum((2 - e) ** 2 / e) + 60 - e.sum(), rel=1e-12)
        assert res["sparse_rule"] == "mean" and res["p_value_x2"] is None

    def test_no_complete_row(self):
        """Without a row of complete answers the statistics are None with a note."""
        model, params = lca(self.SIZES, 1, seed=9)
        Y = np.array([[0, -1, 1], [-1, 2, 0]])
        res = strict_json(lca_fit_statistics(model, {"Y": Y}, params, n_params=5))
        assert res["n_complete"] == 0 and res["g2"] is None and res["x2"] is None
        assert len(res["notes"]) == 1


class TestCarcinoma:
    @pytest.mark.parametrize("K, published", [(2, -317.2568), (3, -293.705)])
    def test_published_maxima(self, K, published):
        """G2 is 2 (LL_saturated - LL) at poLCA's published maxima; X2 sums all 128 cells; df 112/104."""
        frame = pd.read_csv(REFERENCE / "carcinoma.csv", dtype=str)
        data, meta = LatentClassModel.prepare_data(frame, {})
        model = LatentClassModel(K)
        model.setup(meta)
        fit = fit_em(model, data, n_starts=10, tol=1e-12, max_iter=20000, seed=2,
                     accelerate="squarem")
        res = lca_fit_statistics(model, data, fit.params, n_params=fit.n_params)
        _, counts = np.unique(data["Y"], axis=0, return_counts=True)
        saturated = float(np.sum(counts * np.log(counts / 118)))
        half_ulp = 0.5 * 10.0 ** -len(str(published).split(".")[1])
        assert abs(res["g2"] - 2 * (saturated - published)) <= 2 * 2 * half_ulp
        assert res["g2"] == pytest.approx(2 * (saturated - fit.loglik), rel=1e-9)
        hand = by_hand(model, fit.params, data["Y"], fit.n_params)
        assert res["x2"] == pytest.approx(hand["x2"], rel=1e-10)
        npar = K * 7 + K - 1
        assert (res["df"], res["df_polca"]) == (128 - 1 - npar, min(118, 127) - npar)
        assert res["n_patterns"] == 20 and res["sparse_rule"] == "mean"
        assert res["p_value_g2"] is None and res["bootstrap_suggested"]


class TestBivariateResiduals:
    def test_against_direct_tables(self):
        """Each pair's BVR is the Pearson X2 of its two-way table on rows observing both, over its df."""
        sizes = (2, 3, 2, 4)
        model, params = lca(sizes, 3, seed=10)
        Y = simulate(model, params, 250, seed=11, missing=0.15)["Y"]
        res = strict_json(bivariate_residuals(model, {"Y": Y}, params))
        w, prob = params["weight"], params["prob"]
        pairs = {(p["item_1"], p["item_2"]): p for p in res["pairs"]}
        assert len(pairs) == 6
        for j, l in itertools.combinations(range(4), 2):
            rows = Y[(Y[:, j] >= 0) & (Y[:, l] >= 0)]
            x2 = 0.0
            for a in range(sizes[j]):
                for b in range(sizes[l]):
                    o = np.sum((rows[:, j] == a) & (rows[:, l] == b))
                    e = len(rows) * sum(w[k] * prob[k, j, a] * prob[k, l, b] for k in range(3))
                    x2 += (o - e) ** 2 / e
            df = (sizes[j] - 1) * (sizes[l] - 1)
            got = pairs[(model.items[j], model.items[l])]
            assert got["n"] == len(rows) and got["df"] == df
            assert got["bvr"] == pytest.approx(x2 / df, rel=1e-10)

    def test_flags_a_locally_dependent_pair(self):
        """An item copied into another is the one pair flagged under a model of independence."""
        model, params = lca((2, 2, 2), 1, seed=12)
        Y = simulate(model, params, 400, seed=13)["Y"]
        Y[:, 2] = Y[:, 0]
        fit = fit_em(model, {"Y": Y}, n_starts=1, n_candidates=0, seed=1)
        res = bivariate_residuals(model, {"Y": Y}, fit.params)
        flagged = [(p["item_1"], p["item_2"]) for p in res["pairs"] if p["flagged"]]
        assert flagged == [("item1", "item3")] and res["n_flagged"] == 1
        assert res["max_bvr"] > 100


class TestResponseTable:
    def test_classes_as_columns(self):
        """Rows are item/category with one probability (and standard error) per class."""
        model, params = lca((2, 3), 2, seed=14)
        se = {f"prob[2,item2,{c}]": 0.1 * c for c in (1, 2, 3)}
        res = strict_json(response_probability_table(model, params, se=se))
        assert res["classes"] == [1, 2] and len(res["rows"]) == 5
        row = res["rows"][3]
        assert (row["item"], row["category"]) == ("item2", "2")
        assert row["probs"] == pytest.approx(list(params["prob"][:, 1, 1]), abs=0)
        assert row["se"] == [None, pytest.approx(0.2)]


class TestBootstrap:
    OPTIONS = {"n_starts": 1, "n_candidates": 0, "tol": 1e-7, "max_iter": 300}

    @staticmethod
    def _setup():
        model, params = lca((2, 2, 3, 2), 2, seed=15)
        data = simulate(model, params, 120, seed=16, missing=0.05)
        fit = fit_em(model, data, n_starts=2, n_candidates=0, tol=1e-8, seed=1)
        return model, data, fit.params

    def test_resume_order_and_workers_change_nothing(self):
        """Resuming after 2 replicates, reversed completion and 2 worker processes give the same p-values."""
        from src.parallel.local import ProcessExecutor

        model, data, params = self._setup()
        kw = dict(fit_options=self.OPTIONS)
        ck = MemoryCheckpointer()
        full = gof_bootstrap(model, data, params, 5, 3, checkpoint=ck, **kw)
        assert full["n_used"] == 5 and len(ck.states) == 6
        stars = full["g2_star"]
        assert full["p_value_g2"] == (1 + sum(s >= full["g2"] for s in stars)) / 6
        assert full["x2"] == pytest.approx(pattern_statistics(model, data["Y"], params)["x2"])
        seen = []
        resumed = gof_bootstrap(model, data, params, 5, 3, checkpoint=MemoryCheckpointer(ck.states[1]),
                                on_replicate=lambda r, *_: seen.append(r), **kw)
        assert sorted(seen) == [2, 3, 4]
        assert resumed == full
        assert gof_bootstrap(model, data, params, 5, 3, executor=ReversedExecutor(), **kw) == full
        with ProcessExecutor(2) as ex:
            assert gof_bootstrap(model, data, params, 5, 3, executor=ex, **kw) == full
        assert strict_json(full) == full

    def test_checkpoint_of_another_seed_is_refused(self):
        """A saved state made with another seed raises CheckpointInvalid."""
        model, data, params = self._setup()
        ck = MemoryCheckpointer()
        gof_bootstrap(model, data, params, 1, 3, checkpoint=ck, fit_options=self.OPTIONS)
        with pytest.raises(CheckpointInvalid):
            gof_bootstrap(model, data, params, 1, 4, checkpoint=MemoryCheckpointer(ck.states[-1]),
                          fit_options=self.OPTIONS)


class TestGaussianDerived:
    @staticmethod
    def _fit(covariance):
        frame = pd.read_csv(FAITHFUL)
        data, meta = GaussianMixtureModel.prepare_data(frame, {})
        model = GaussianMixtureModel(2, covariance=covariance)
        model.setup(meta)
        fit = fit_em(model, data, n_starts=2, tol=1e-10, seed=1)
        return model, data, fit.params

    @pytest.mark.parametrize("covariance", ["full", "diag", "spherical"])
    def test_jacobian_against_finite_differences(self, covariance):
        """The analytic Jacobian of the sds and correlations equals central differences in the free parameters."""
        model, _, params = self._fit(covariance)
        theta = model.to_free(params)
        J = gmm_derived_jacobian(model, params)
        fd = np.zeros_like(J)
        for i in range(theta.size):
            h = 1e-6 * max(1.0, abs(theta[i]))
            up, down = theta.copy(), theta.copy()
            up[i] += h
            down[i] -= h
            fd[:, i] = (gmm_derived_values(model, model.from_free(up))[1]
                        - gmm_derived_values(model, model.from_free(down))[1]) / (2 * h)
        np.testing.assert_allclose(J, fd, rtol=1e-6, atol=1e-9)

    def test_delta_method_standard_errors(self):
        """Standard errors are sqrt(diag(J C J')) under Louis' covariance; intervals stay inside the space."""
        model, data, params = self._fit("full")
        se = louis_se(model, data, params)
        res = strict_json(gmm_derived(model, params, se.cov_free, ci_level=0.9))
        names = [r["name"] for r in res["rows"]]
        assert names == ["sd[1,eruptions]", "sd[1,waiting]", "cor[1,eruptions,waiting]",
                         "sd[2,eruptions]", "sd[2,waiting]", "cor[2,eruptions,waiting]"]
        J = gmm_derived_jacobian(model, params)
        expected = np.sqrt(np.diag(J @ se.cov_free @ J.T))
        np.testing.assert_allclose([r["se"] for r in res["rows"]], expected, rtol=1e-12)
        cov = params["cov"][0]
        assert res["rows"][2]["estimate"] == pytest.approx(cov[0, 1] / math.sqrt(cov[0, 0] * cov[1, 1]))
        z = stats.norm.ppf(0.95)
        for r in res["rows"]:
            assert r["ci_lower"] < r["estimate"] < r["ci_upper"]
            if r["kind"] == "cor":
                assert -1 < r["ci_lower"] and r["ci_upper"] < 1
                mid = math.atanh(r["estimate"])
                assert math.atanh(r["ci_upper"]) - mid == pytest.approx(z * r["se"] / (1 - r["estimate"] ** 2))
            else:
                assert r["ci_lower"] > 0

    def test_missing_covariance_and_unnamed_columns(self):
        """Columns are numbered from 1 without names, and a NaN free variance leaves its derived values without SE."""
        model, data, params = self._fit("diag")
        model.meta = {}
        P = model.n_free_parameters()
        C = np.eye(P) * 1e-4
        C[-1, :] = C[:, -1] = np.nan          # the last free parameter: class 2's second variance
        res = strict_json(gmm_derived(model, params, C))
        assert [r["name"] for r in res["rows"]] == ["sd[1,1]", "sd[1,2]", "sd[2,1]", "sd[2,2]"]
        assert [r["se"] is None for r in res["rows"]] == [False, False, False, True]
