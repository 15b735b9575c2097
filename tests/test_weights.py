"""Row weights (``--weights COLUMN --weight-type``): integer frequency weights against the rows
replicated, for every family, in estimation, criteria, classification, goodness of fit and the
script; the data layer's checks.  Standard errors with weights: tests/test_weighted_se.py."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from src.config import RunOptions
from src.estimation.em import em_map, final_stats, fit_em
from src.inference.classification import classification_summary
from src.inference.goodness import bivariate_residuals, lca_fit_statistics
from src.models.base import WEIGHT_KEY, replicate_rows, split_weight
from src.models.registry import get_model_class
from src.pipeline.checks import check_weight_options
from src.pipeline.phases import prepare_frame
from src.selection.criteria import criteria
from src.utils.errors import DataError, UsageError
from tests.inprocess import run_main

USER_MODEL = "examples/user_models/exponential_mixture.py:ExponentialMixture"


# ------------------------------------------------------------------ data
def _gmm_frame(rng: np.random.Generator, n: int = 240) -> pd.DataFrame:
    X = np.r_[rng.normal(0.0, 1.0, (n // 2, 3)), rng.normal(3.0, 1.0, (n - n // 2, 3))]
    return pd.DataFrame(X, columns=["a", "b", "c"])


def _lca_frame(rng: np.random.Generator, n: int = 300, missing: float = 0.1) -> pd.DataFrame:
    z = rng.random(n) < 0.6
    p = np.where(z[:, None], [0.85, 0.8, 0.2, 0.7, 0.9], [0.2, 0.3, 0.75, 0.2, 0.3])
    Y = (rng.random((n, 5)) < p).astype(int).astype(str).astype(object)
    Y[rng.random((n, 5)) < missing] = np.nan
    return pd.DataFrame(Y, columns=list("pqrst"))


def _mixreg_frame(rng: np.random.Generator, n: int = 240) -> pd.DataFrame:
    x = rng.normal(size=n)
    y = np.where(rng.random(n) < 0.5, 1.0 + 2.0 * x, -1.0 - x) + 0.3 * rng.normal(size=n)
    return pd.DataFrame({"x": x, "y": y})


def _exp_frame(rng: np.random.Generator, n: int = 240) -> pd.DataFrame:
    return pd.DataFrame({"x": np.r_[rng.exponential(0.5, n // 2), rng.exponential(8.0, n - n // 2)]})


CASES = {   # name: (model, family options, frame maker, relative tolerance of the estimates)
    "gmm_full": ("gmm", {"covariance": "full"}, _gmm_frame, 1e-12),
    "gmm_diag": ("gmm", {"covariance": "diag"}, _gmm_frame, 1e-12),
    "lca_missing": ("lca", {}, _lca_frame, 0.0),
    "mixreg": ("mixreg", {"target": "y"}, _mixreg_frame, 1e-12),
    # the generic numerical M-step: L-BFGS-B then Newton steps on finite differences, the
    # maximiser of Q to ~1e-13; a weighted sum and the replicated rows' sum round Q's
    # differences apart in the last bits (measured: 1.5e-13 here, 5e-14..1.5e-13 over seeds)
    "user_model": (USER_MODEL, {}, _exp_frame, 1e-11),
}


def _setup(case: str, seed: int = 7):
    """(model, data of the distinct rows, integer weights, data of the rows replicated)."""
    name, opts, make, _ = CASES[case]
    rng = np.random.default_rng(seed)
    frame = make(rng)
    cls = get_model_class(name)
    data, meta = cls.prepare_data(frame, {**opts, "drop_missing": False, "source": "test"})
    model = cls(2, **opts)
    model.setup(meta)
    w = rng.integers(1, 5, size=len(frame))
    weighted = {**data, WEIGHT_KEY: w.astype(float)}
    replicated = {k: np.repeat(v, w, axis=0) for k, v in data.items()}
    return model, weighted, w, replicated


def _close(a: dict, b: dict, rtol: float) -> None:
    for key in a:
        x, y = np.asarray(a[key], dtype=float), np.asarray(b[key], dtype=float)
        if rtol == 0.0:
            assert np.array_equal(x, y), key
        else:
            np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * np.abs(y).max(), err_msg=key)


def _replicated_fit(model, replicated):
    """A start found on the replicated rows, then both fits from it."""
    init = fit_em(model, replicated, n_starts=2, n_candidates=6, seed=3, max_iter=15).params
    return init, fit_em(model, replicated, init_params=init, tol=1e-10, max_iter=300)


# ------------------------------------------------------------ estimation
class TestEstimation:
    @pytest.mark.parametrize("case", sorted(CASES))
    def test_integer_weights_give_the_replicated_fit(self, case):
        """EM from one start on weighted rows reaches the replicated rows' estimate and log-likelihood (LCA bitwise)."""
        model, weighted, w, replicated = _setup(case)
        init, want = _replicated_fit(model, replicated)
        got = fit_em(model, weighted, init_params=init, tol=1e-10, max_iter=300)
        rtol = CASES[case][3]
        _close(got.params, want.params, rtol)
        if rtol == 0.0:
            assert got.loglik == want.loglik and got.n_iter == want.n_iter
        else:
            assert got.loglik == pytest.approx(want.loglik, rel=1e-12)
        assert got.n_obs == want.n_obs == int(w.sum())
        assert got.bic == pytest.approx(want.bic, rel=1e-12)

    @pytest.mark.parametrize("case", sorted(CASES))
    def test_one_em_map_and_final_stats(self, case):
        """One EM-map evaluation and the summed statistics of weighted rows are those of the replicated rows."""
        model, weighted, _, replicated = _setup(case)
        init = fit_em(model, replicated, n_starts=1, n_candidates=0, seed=1, max_iter=3).params
        (new_w, ll_w), (new_r, ll_r) = em_map(model, weighted, init), em_map(model, replicated, init)
        assert ll_w == pytest.approx(ll_r, rel=1e-13)
        # one generic numerical M-step agrees to about 1e-13 (see CASES)
        _close(new_w, new_r, CASES[case][3])
        if model.has_closed_form_m_step:
            _close(final_stats(model, weighted, init), final_stats(model, replicated, init), 1e-12)

    @pytest.mark.parametrize("case", ["gmm_full", "gmm_diag", "lca_missing", "mixreg"])
    def test_generic_weighted_e_step(self, case):
        """The base class's generic e_step_stats_weighted (suff_stats of w-weighted responsibilities) gives the replicated rows' statistics."""
        from src.models.base import MixtureModel

        model, weighted, _, replicated = _setup(case)
        params = fit_em(model, replicated, n_starts=1, n_candidates=0, seed=1, max_iter=3).params
        rows, w = split_weight(weighted)
        got, ll = MixtureModel.e_step_stats_weighted(model, rows, params, w)
        want, ll_r = model.e_step_stats(replicated, params)
        assert ll == pytest.approx(ll_r, rel=1e-13)
        _close(got, want, 1e-12)

    def test_lca_lockstep_uses_weighted_patterns(self):
        """A frequency table of answer patterns (each row distinct) fits in lockstep to the replicated rows' estimate, bitwise."""
        model, _, _, _ = _setup("lca_missing")
        pats = np.array(list(itertools.product([0, 1], repeat=5)))
        rng = np.random.default_rng(5)
        counts = rng.integers(0, 40, size=len(pats))
        keep = counts > 0
        table = {"Y": pats[keep], WEIGHT_KEY: counts[keep].astype(float)}
        replicated = replicate_rows(table)
        assert replicated["Y"].shape[0] == counts.sum() and WEIGHT_KEY not in replicated
        a = fit_em(model, table, n_starts=3, n_candidates=0, seed=11)
        b = fit_em(model, replicated, n_starts=3, n_candidates=0, seed=11)
        _close(a.params, b.params, 0.0)
        assert a.loglik == b.loglik and a.start_logliks == b.start_logliks

    def test_weights_scale_invariance_and_fractions(self):
        """Weights multiplied by a constant give the same estimate; non-integer weights are accepted and n is their sum."""
        model, weighted, w, _ = _setup("gmm_full")
        init = fit_em(model, weighted, n_starts=1, n_candidates=0, seed=2, max_iter=5).params
        half = {**weighted, WEIGHT_KEY: weighted[WEIGHT_KEY] * 0.5}
        a = fit_em(model, weighted, init_params=init, tol=1e-12, max_iter=500)
        b = fit_em(model, half, init_params=init, tol=1e-12, max_iter=500)
        _close(a.params, b.params, 1e-9)
        assert b.loglik == pytest.approx(0.5 * a.loglik, rel=1e-12)
        assert b.n_obs == pytest.approx(0.5 * w.sum())


# ------------------------------------------------- criteria and summaries
class TestResults:
    @pytest.mark.parametrize("case", ["gmm_full", "lca_missing", "mixreg"])
    def test_criteria_use_the_sum_of_weights(self, case):
        """AIC/BIC/SABIC/CAIC/ICL and entropy of weighted rows equal the replicated rows' (n = sum of weights)."""
        model, weighted, w, replicated = _setup(case)
        _, fit = _replicated_fit(model, replicated)
        kw = dict(loglik=fit.loglik, n_params=fit.n_params)
        got, want = criteria(model, weighted, fit.params, **kw), criteria(model, replicated, fit.params, **kw)
        for key in ("aic", "bic", "sabic", "caic", "icl", "entropy", "smallest_class"):
            assert got[key] == pytest.approx(want[key], rel=1e-12), key
        n, p = w.sum(), fit.n_params
        assert got["bic"] == pytest.approx(-2 * fit.loglik + p * math.log(n), rel=1e-14)

    @pytest.mark.parametrize("case", ["gmm_full", "lca_missing"])
    def test_classification_counts_are_weighted(self, case):
        """Class counts (by weights, posteriors and modal class), AvePP, OCC and entropy of weighted rows equal the replicated rows'."""
        model, weighted, w, replicated = _setup(case)
        _, fit = _replicated_fit(model, replicated)
        got = classification_summary(model, weighted, fit.params)
        want = classification_summary(model, replicated, fit.params)
        assert got["n_obs"] == want["n_obs"] == int(w.sum())
        assert got["counts"]["modal"] == want["counts"]["modal"]
        for key in ("weights", "posteriors"):
            np.testing.assert_allclose(got["counts"][key], want["counts"][key], rtol=1e-12)
        np.testing.assert_allclose(got["average_posterior"], want["average_posterior"], rtol=1e-12)
        np.testing.assert_allclose(got["odds_correct"], want["odds_correct"], rtol=1e-10)
        assert got["entropy"] == pytest.approx(want["entropy"], rel=1e-12)

    def test_goodness_of_fit_counts_weights(self):
        """G2, X2, N' and the bivariate residuals of weighted rows equal the replicated rows'; halving every weight halves G2 and X2."""
        model, weighted, w, replicated = _setup("lca_missing")
        _, fit = _replicated_fit(model, replicated)
        got = lca_fit_statistics(model, weighted, fit.params, n_params=fit.n_params)
        want = lca_fit_statistics(model, replicated, fit.params, n_params=fit.n_params)
        for key in ("n_rows", "n_complete", "n_patterns", "df", "df_polca", "sparse"):
            assert got[key] == want[key], key
        for key in ("g2", "x2", "p_value_g2", "p_value_x2"):
            if want[key] is None:
                assert got[key] is None
            else:
                assert got[key] == pytest.approx(want[key], rel=1e-12), key
        half = {**weighted, WEIGHT_KEY: weighted[WEIGHT_KEY] * 0.5}
        halved = lca_fit_statistics(model, half, fit.params, n_params=fit.n_params)
        assert halved["n_rows"] == pytest.approx(0.5 * w.sum())
        assert halved["g2"] == pytest.approx(0.5 * got["g2"], rel=1e-12)
        assert halved["x2"] == pytest.approx(0.5 * got["x2"], rel=1e-12)
        bvr_w = bivariate_residuals(model, weighted, fit.params)
        bvr_r = bivariate_residuals(model, replicated, fit.params)
        for a, b in zip(bvr_w["pairs"], bvr_r["pairs"]):
            assert a["n"] == b["n"] and a["x2"] == pytest.approx(b["x2"], rel=1e-10)


# ------------------------------------------------------------ the data layer
def _prepare(frame: pd.DataFrame, **options) -> "object":
    opts = RunOptions(**options).validate()
    cls = get_model_class(opts.model)
    return prepare_frame(frame, opts, cls, {"source": "t.csv", "n_rows": len(frame),
                                            "columns": [str(c) for c in frame.columns]})


class TestDataLayer:
    def test_weight_column_taken_out_and_zero_rows_dropped(self):
        """The weight column is not modelled, rows of weight 0 are dropped with a note, and the kept rows keep their input positions."""
        frame = _gmm_frame(np.random.default_rng(1), 40)
        frame["w"] = np.r_[0.0, 2.0, 0.0, np.full(37, 1.5)]
        prepared = _prepare(frame, weights="w")
        rows, w = split_weight(prepared.data)
        assert prepared.meta["columns"] == ["a", "b", "c"]
        np.testing.assert_array_equal(w, np.r_[2.0, np.full(37, 1.5)])
        np.testing.assert_array_equal(rows["X"], frame[["a", "b", "c"]].to_numpy()[[1, *range(3, 40)]])
        np.testing.assert_array_equal(prepared.row_positions, [1, *range(3, 40)])
        rec = prepared.record
        assert (rec["weight_column"], rec["weight_type"], rec["weight_sum"]) == ("w", "frequency", 57.5)
        assert rec["n_dropped"] == 2 and rec["n_zero_weight"] == 2
        assert any("2 rows of t.csv have weight 0" in note and "row 0" in note for note in rec["notes"])
        # the same arrays as a file without those rows (the family's meta from the rows used)
        again = _prepare(frame.drop(index=[0, 2]).drop(columns="w").reset_index(drop=True))
        assert again.meta == prepared.meta

    def test_missing_weights_follow_drop_missing(self):
        """A missing weight is an error naming its row, or with --drop-missing a dropped row; --id stays aligned."""
        frame = _gmm_frame(np.random.default_rng(2), 30)
        frame["w"] = 1.0
        frame.loc[4, "w"] = np.nan
        frame.loc[7, "a"] = np.nan
        frame["id"] = [f"r{i}" for i in range(30)]
        with pytest.raises(DataError, match=r"--weights column 'w' of t.csv has a missing value in row 4.*--drop-missing"):
            _prepare(frame, weights="w", id="id")
        prepared = _prepare(frame, weights="w", id="id", drop_missing=True)
        kept = [i for i in range(30) if i not in (4, 7)]
        np.testing.assert_array_equal(prepared.row_positions, kept)
        assert list(prepared.row_ids) == [f"r{i}" for i in kept]
        assert prepared.record["n_dropped"] == 2

    @pytest.mark.parametrize("value, what", [("-1", "the negative value -1.0"),
                                             ("x", "the non-numeric value 'x'"),
                                             ("inf", "the infinite value inf")])
    def test_bad_weights_refused_in_one_sentence(self, value, what):
        """A negative, non-numeric or infinite weight is a DataError naming the column, the first bad row and the fix."""
        frame = _gmm_frame(np.random.default_rng(3), 12)
        weights: list = [1.0] * 12
        weights[5] = value if value == "x" else float(value)
        weights[9] = -2.0
        frame["w"] = weights
        with pytest.raises(DataError) as info:
            _prepare(frame, weights="w")
        text = str(info.value)
        assert text.startswith("The --weights column 'w' of t.csv has ")
        assert f"{what} in row 5 " in text and "finite number >= 0" in text
        assert "\n" not in text

    def test_weight_column_rules(self):
        """The weight column may not be a model column, the id column or absent; all weights 0 is refused."""
        frame = _gmm_frame(np.random.default_rng(4), 10)
        frame["w"] = 0.0
        with pytest.raises(UsageError, match="also one of the model's columns"):
            _prepare(frame, weights="w", columns=["a", "w"])
        with pytest.raises(UsageError, match="also the --id column"):
            _prepare(frame, weights="w", id="w", columns=["a", "b"])
        with pytest.raises(DataError, match="--weights column 'v' is not in t.csv"):
            _prepare(frame, weights="v")
        with pytest.raises(DataError, match="Every row of t.csv has weight 0"):
            _prepare(frame, weights="w")

    def test_sampling_weights_refuse_blrt_and_vlmr(self):
        """Sampling weights with the BLRT or the VLMR tests are refused before the run; frequency weights are not."""
        base = dict(weights="w", components="1-3")
        with pytest.raises(UsageError, match="--blrt simulates independent rows"):
            check_weight_options(RunOptions(**base, weight_type="sampling", blrt=20).validate())
        with pytest.raises(UsageError, match="add --no-vlmr"):
            check_weight_options(RunOptions(**base, weight_type="sampling").validate())
        check_weight_options(RunOptions(**base, weight_type="sampling", vlmr=False).validate())
        check_weight_options(RunOptions(**base, blrt=20).validate())

    def test_unweighted_fingerprints_do_not_name_weights(self):
        """Runs without --weights keep the fingerprints they had; --weights and --weight-type enter data_preparation's."""
        from src.config import phase_fingerprints

        def data_fp(**o):
            return phase_fingerprints(RunOptions(**o).validate(), data_sha256="x",
                                      model_file_sha256=None, environment={})["data_preparation"]
        assert "weights" not in data_fp() and "weight_type" not in data_fp(weight_type="sampling")
        fp = data_fp(weights="w", weight_type="sampling")
        assert fp["weights"] == "w" and fp["weight_type"] == "sampling"


# ------------------------------------------------------------ the script
def test_script_with_a_frequency_table_equals_the_replicated_rows(tmp_path: Path):
    """The script on an LCA frequency table (random starts) writes the estimates, criteria and classification of the replicated rows."""
    pats = np.array(list(itertools.product([0, 1], repeat=4)))
    counts = np.random.default_rng(0).integers(1, 60, size=len(pats))
    counts[3] = 0
    table = pd.DataFrame(pats, columns=list("abcd"))
    table["n"] = counts
    table.to_csv(tmp_path / "table.csv", index=False)
    rows = table.loc[table.index.repeat(counts)].drop(columns="n")
    rows.sample(frac=1.0, random_state=1).to_csv(tmp_path / "rows.csv", index=False)
    common = ["--model", "lca", "--components", "2", "--n-candidates", "0", "--n-starts", "3",
              "--se-method", "none", "--no-plots", "--no-progress-tracking"]
    for name, extra in (("t", ["--data", "table.csv", "--weights", "n"]), ("r", ["--data", "rows.csv"])):
        res = run_main(tmp_path, *common, *extra, "--task-name", name)
        assert res.returncode == 0, res.stderr
    fit_t, fit_r = (json.loads((tmp_path / "results" / n / "fit.json").read_text()) for n in "tr")
    assert (tmp_path / "results" / "t" / "estimates.csv").read_bytes() == \
        (tmp_path / "results" / "r" / "estimates.csv").read_bytes()
    for key in ("loglik", "n_obs", "aic", "bic", "start_logliks", "n_iter"):
        assert fit_t[key] == fit_r[key], key
    assert fit_t["n_obs"] == int(counts.sum())
    assert fit_t["weights"] == {"column": "n", "type": "frequency", "sum": float(counts.sum()),
                                "n_zero_weight": 1}
    assert fit_t["criteria_approximate"] is False
    assert fit_t["classification"]["counts"]["modal"] == fit_r["classification"]["counts"]["modal"]
    np.testing.assert_allclose(fit_t["classification"]["counts"]["posteriors"],
                               fit_r["classification"]["counts"]["posteriors"], rtol=1e-12)
    assert fit_t["goodness_of_fit"]["g2"] == pytest.approx(fit_r["goodness_of_fit"]["g2"], rel=1e-12)
    assert fit_t["rows"] == {"n_used": 15, "n_dropped": 1, "id_column": None,
                             "weight_sum": float(counts.sum())}
    post = pd.read_csv(tmp_path / "results" / "t" / "posteriors.csv")
    assert list(post["row"]) == [i for i in range(16) if i != 3]   # one line per table row
    report = (tmp_path / "results" / "t" / "report.md").read_text()
    assert "weighted by column n (frequency weights, sum" in report


def test_script_sampling_weights_mark_criteria_approximate(tmp_path: Path):
    """Sampling weights: fit.json says the criteria are approximate and the report says why."""
    frame = _gmm_frame(np.random.default_rng(9), 60)
    frame["w"] = np.random.default_rng(10).uniform(0.5, 3.0, 60)
    frame.to_csv(tmp_path / "s.csv", index=False)
    res = run_main(tmp_path, "--data", "s.csv", "--weights", "w", "--weight-type", "sampling",
                   "--n-starts", "1", "--n-candidates", "4", "--se-method", "none", "--no-plots",
                   "--no-progress-tracking")
    assert res.returncode == 0, res.stderr
    fit = json.loads((tmp_path / "results" / "main_estimation" / "fit.json").read_text())
    assert fit["criteria_approximate"] is True and fit["weights"]["type"] == "sampling"
    assert fit["n_obs"] == pytest.approx(frame["w"].sum(), rel=1e-12)
    assert fit["bic"] == pytest.approx(-2 * fit["loglik"] + fit["n_params"] * math.log(frame["w"].sum()))
    report = (tmp_path / "results" / "main_estimation" / "report.md").read_text()
    assert "AIC and BIC (and the enumeration's criteria) are approximate" in report


# ------------------------------------------------------------ tests of K
class TestTestsOfK:
    def _pair(self):
        rng = np.random.default_rng(21)
        shift = 1.2 * (rng.random(80) < 0.5)[:, None]   # overlapping classes: p not 0
        frame = pd.DataFrame(rng.normal(size=(80, 2)) + shift, columns=["a", "b"])
        cls = get_model_class("gmm")
        data, meta = cls.prepare_data(frame, {"covariance": "diag", "source": "t"})
        models = []
        for k in (1, 2):
            m = cls(k, covariance="diag")
            m.setup(meta)
            models.append(m)
        w = rng.integers(1, 4, size=len(frame))
        weighted = {**data, WEIGHT_KEY: w.astype(float)}
        replicated = {k: np.repeat(v, w, axis=0) for k, v in data.items()}
        fits = [fit_em(m, replicated, n_starts=2, n_candidates=4, seed=1, tol=1e-10) for m in models]
        return models, weighted, replicated, fits

    def test_vlmr_with_frequency_weights_is_the_replicated_rows_test(self):
        """The VLMR and LMR statistics, eigenvalue weights and p-values of weighted rows equal the replicated rows'."""
        from src.selection.vlmr import vlmr_test

        (small, big), weighted, replicated, (fs, fb) = self._pair()
        got = vlmr_test(small, big, weighted, fs.params, fb.params, seed=3, n_monte_carlo=2000)
        want = vlmr_test(small, big, replicated, fs.params, fb.params, seed=3, n_monte_carlo=2000)
        assert got["n_obs"] == want["n_obs"]
        assert got["lr"] == pytest.approx(want["lr"], rel=1e-10)
        assert got["lmr_statistic"] == pytest.approx(want["lmr_statistic"], rel=1e-10)
        np.testing.assert_allclose(got["weights"], want["weights"], rtol=1e-9, atol=1e-12)
        assert 0 < want["vlmr_p"] < 1   # an Imhof value, not a clipped 0
        assert got["vlmr_p"] == pytest.approx(want["vlmr_p"], rel=1e-7)
        assert got["lmr_p"] == pytest.approx(want["lmr_p"], rel=1e-7)

    def test_blrt_with_frequency_weights_simulates_the_replicated_rows(self):
        """BLRT replicates of weighted rows simulate round(sum w) rows: the same T* as the replicated rows'."""
        from src.selection.blrt import blrt_test

        (small, big), weighted, replicated, (fs, fb) = self._pair()
        opts = dict(n_replicates=2, seed=4, early_stop=False,
                    fit_options={"n_starts": 1, "n_candidates": 3, "max_iter": 200})
        got = blrt_test(small, big, weighted, fs.to_dict(), fb.to_dict(), **opts)
        want = blrt_test(small, big, replicated, fs.to_dict(), fb.to_dict(), **opts)
        assert got.t_star == want.t_star and got.p_value == want.p_value
        np.testing.assert_array_equal(replicate_rows(weighted)["X"], replicated["X"])


def test_api_fit_takes_a_weight_column():
    """fit(frame, weights="w") models every other column, with n the sum of the weights, as the script does."""
    from src.api import fit

    frame = _gmm_frame(np.random.default_rng(12), 60)[["a", "b"]]
    frame["w"] = np.random.default_rng(13).integers(0, 4, 60)
    res = fit(frame, "gmm", 2, weights="w", n_starts=1, n_candidates=4, seed=2)
    kept = frame["w"].to_numpy() > 0
    assert res.meta["columns"] == ["a", "b"]
    assert res.fit_result.n_obs == int(frame["w"].sum())
    assert len(res.posteriors) == int(kept.sum())
    assert res.classification["n_obs"] == int(frame["w"].sum())
    assert f"n = {int(frame['w'].sum())} (sum of the frequency weights of {int(kept.sum())} rows)" \
        in res.summary()
    by_columns = fit(frame, "gmm", 2, weights="w", columns=["a", "b"], n_starts=1,
                     n_candidates=4, seed=2)
    assert by_columns.loglik == res.loglik
