"""Three-step estimation from the Python API (MixtureResults.structural): the script's numbers
(api.run on the same data), write() with the structural rows, the columns from fit() or
data=, and the errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from src.api import fit, run
from src.utils.errors import DataError, UsageError
from tests.test_structural import frame_of

ITEMS = [f"i{j}" for j in range(6)]
COMMON = dict(model="lca", components=3, columns=ITEMS, n_starts=2, seed=5)


def _script(folder, data, **options):
    """api.run (the script) without progress files; its estimates.csv and fit.json."""
    res = run(data=str(data), **COMMON, no_progress_tracking=True, output_dir=str(folder),
              plots=False, lang="en", **options)
    est = pd.read_csv(folder / "estimates.csv", dtype={"parameter": str}).set_index("parameter")
    return res, est, json.loads((folder / "fit.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """One data set, the script's BCH distal run (corrected SEs by Louis) and its ML
    covariate run (step-3 SEs), and one API fit with the distal column kept."""
    folder = tmp_path_factory.mktemp("api_structural")
    frame = frame_of(600, 11)
    frame.to_csv(folder / "d.csv", index=False)
    distal = _script(folder / "distal", folder / "d.csv", structural="distal", distal=["income"],
                     se_method="louis")
    covs = _script(folder / "covs", folder / "d.csv", structural="covariates",
                   covariates=["age", "sex"], correction="ml", structural_se="step3",
                   se_method="none")
    data = pd.read_csv(folder / "d.csv")
    res = fit(data, COMMON["model"], COMMON["components"], columns=ITEMS,
              n_starts=COMMON["n_starts"], seed=COMMON["seed"], structural="distal",
              distal=["income"])
    return folder, data, distal, covs, res


def _same(api: pd.DataFrame, script: pd.DataFrame) -> None:
    rows = script.loc[list(api.index)]
    for col in ("estimate", "se", "z", "p_value", "ci_lower", "ci_upper"):
        np.testing.assert_allclose(api[col].to_numpy(), rows[col].to_numpy(dtype=float),
                                   rtol=1e-12, atol=0, equal_nan=True, err_msg=col)


class TestSameAsScript:
    def test_distal_bch_corrected(self, case):
        """fit(..., structural="distal") then structural(): the script's structural rows,
        Wald tests and D to 1e-12, with Louis' measurement SEs computed on the way."""
        _, _, (script_res, est, fitj), _, res = case
        st = res.structural()
        assert list(st.estimates.index) == [f"distal.{p}[{k},income]" for p in ("mean", "var")
                                            for k in (1, 2, 3)]
        _same(st.estimates, est)
        assert st.se_method == "corrected" and st.block["measurement_se_method"] == "louis"
        np.testing.assert_allclose(st.D.to_numpy(), fitj["structural"]["D"], rtol=1e-12)
        np.testing.assert_allclose(st.wald["chi2"].to_numpy(),
                                   [x["chi2"] for x in fitj["structural"]["tests"]], rtol=1e-12)
        assert res.se_result is not None and res.se_result.method == "louis"
        assert script_res.structural_result is not None   # run() carries the phase's
        _same(script_res.structural_result.estimates, est)
        text = st.summary()
        assert "correction bch" in text and "Wald tests" in text and "distal.var[3,income]" in text

    def test_covariates_ml_from_data(self, case):
        """Columns not kept by fit() come from data=: the ML covariate run's rows and odds
        ratios exp(beta) with their intervals."""
        _, data, _, (_, est, fitj), res = case
        st = res.structural("covariates", covariates=["age", "sex"], data=data,
                            correction="ml", se="step3")
        _same(st.estimates, est)
        assert list(st.wald.index) == ["beta[*,age] = 0", "beta[*,sex] = 0"]
        odds = st.odds_ratios
        assert list(odds.index) == [f"structural.beta[{k},{c}]" for k in (2, 3)
                                    for c in ("age", "sex")]
        np.testing.assert_allclose(odds["ci_upper"], np.exp(est.loc[odds.index, "ci_upper"]),
                                   rtol=1e-12)
        assert st.block["loglik"] == pytest.approx(fitj["structural"]["loglik"], rel=1e-12)

    def test_write_has_the_structural_rows(self, case, tmp_path):
        """write() after structural(): estimates.csv is the script's, byte for byte (Louis
        rows, then the structural rows); fit.json has the block and the report its section."""
        folder, _, _, _, res = case
        res.structural()
        res.write(tmp_path, plots=False, lang="en")
        assert (tmp_path / "estimates.csv").read_bytes() == \
            (folder / "distal" / "estimates.csv").read_bytes()
        fitj = json.loads((tmp_path / "fit.json").read_text(encoding="utf-8"))
        assert fitj["structural"]["correction"] == "bch"
        assert "## Three-step estimation" in (tmp_path / "report.md").read_text(encoding="utf-8")


class TestErrors:
    def test_bad_requests_are_one_sentence(self, case):
        """A misspelt keyword, a column fit() did not keep, a model column, rows that are
        not the fit's, a reference class beyond K, covariates on a one-step model: each
        refused naming what to do."""
        _, data, _, _, res = case
        with pytest.raises(UsageError, match="did you mean 'correction'"):
            res.structural(corection="ml")
        with pytest.raises(DataError, match="'?age'? were not kept by fit"):
            res.structural("covariates", covariates=["age"])
        with pytest.raises(UsageError, match="'i1' is one of the measurement model's columns"):
            res.structural("distal", distal=["i1"], data=data)
        with pytest.raises(DataError, match="has 5 rows"):
            res.structural("distal", distal=["income"], data=data.iloc[:5])
        with pytest.raises(UsageError, match="reference"):   # a class of the 3: refused
            res.structural("covariates", covariates=["age"], data=data, reference_class=4)
        with pytest.raises(UsageError, match="once"):
            res.structural(se="step3", structural_se="step3")
        plain = fit(data[ITEMS], "lca", 2, n_starts=1)
        with pytest.raises(UsageError, match="covariates=\\[...\\]"):
            plain.structural()
        one_step = fit(data[ITEMS + ["age"]], "lca", 2, covariates=["age"], n_starts=1)
        with pytest.raises(UsageError, match="one step"):
            one_step.structural("covariates", covariates=["sex"], data=data)
