"""What the results say of the one-step covariate model: fit.json's covariates block (against
estimates.csv), G2/X2 and bivariate residuals with each row's class probabilities (by
brute force), the response-probability table, Gaussian SDs and correlations (delta method
against differences), the parametric bootstrap, and the report in English and Chinese."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pandas as pd
import pytest

from src.api import fit, run
from src.inference.goodness import gmm_derived_values
from src.models import logit
from tests.test_covariates import frame_of

COVS = ["x1", "x2", "x3"]


@pytest.fixture(scope="module")
def lca_run(tmp_path_factory):
    """The script's one-step LCA (Louis SEs, reference class 2) and its files."""
    folder = tmp_path_factory.mktemp("covariates_outputs")
    frame_of(500, 4).to_csv(folder / "d.csv", index=False)
    out = folder / "out"
    res = run(data=str(folder / "d.csv"), model="lca", components=3, covariates=COVS,
              reference_class=2, n_starts=2, seed=3, se_method="louis", plots=False,
              no_progress_tracking=True, output_dir=str(out), lang="en")
    est = pd.read_csv(out / "estimates.csv", dtype={"parameter": str}).set_index("parameter")
    est.attrs["text"] = (out / "estimates.csv").read_text(encoding="utf-8")
    fitj = json.loads((out / "fit.json").read_text(encoding="utf-8"))
    return res, est, fitj, (out / "report.md").read_text(encoding="utf-8")


def _num(x):
    return math.nan if x is None else x


class TestFitJsonBlock:
    def test_coefficients_and_odds_ratios_are_estimates_csv(self, lca_run):
        """fit.json's covariates block: every beta row with estimates.csv's numbers, the
        reference class's 0, odds ratios exp(beta) with exp of the interval, and the average
        predicted class probabilities."""
        res, est, fitj, _ = lca_run
        block = fitj["covariates"]
        assert block["names"] == COVS and block["design"] == ["intercept", *COVS]
        assert block["reference_class"] == 2 and block["interval_method"] == "wald"
        assert [c["parameter"] for c in block["coefficients"]] == [
            f"beta[{k},{c}]" for k in (1, 2, 3) for c in ("intercept", *COVS)]
        for c in block["coefficients"]:
            row = est.loc[c["parameter"]]
            for f in ("estimate", "se", "z", "p_value", "ci_lower", "ci_upper"):
                assert _num(c[f]) == pytest.approx(row[f], rel=0, abs=0, nan_ok=True), f
        assert all(c["estimate"] == 0 for c in block["coefficients"] if c["class"] == 2)
        ref = est.loc[[f"beta[2,{c}]" for c in ("intercept", *COVS)]]
        assert (ref["se"] == 0).all() and ref["z"].isna().all() and ref["p_value"].isna().all()
        fixed = [cells for cells in csv.reader(est.attrs["text"].splitlines())
                 if cells[0].startswith("beta[2,")]
        assert len(fixed) == 4 and all(cells[3:5] == ["", ""] for cells in fixed)  # not "nan"
        odds = block["odds_ratios"]
        assert {(o["class"], o["covariate"]) for o in odds} == {
            (k, c) for k in (1, 3) for c in ("intercept", *COVS)}
        for o in odds:
            row = est.loc[f"beta[{o['class']},{o['covariate']}]"]
            assert o["odds_ratio"] == pytest.approx(math.exp(row["estimate"]), rel=1e-15)
            assert o["lower"] == pytest.approx(math.exp(row["ci_lower"]), rel=1e-15)
            assert o["upper"] == pytest.approx(math.exp(row["ci_upper"]), rel=1e-15)
            assert o["p_value"] == row["p_value"]
        pi = logit.probabilities(res.data["Z"], res.params["beta"]).mean(axis=0)
        np.testing.assert_allclose(block["average_class_probabilities"], pi, rtol=1e-10)


class TestLcaSummaries:
    def test_g2_x2_and_bvr_by_brute_force(self, lca_run):
        """G2 and X2 with expected counts sum_i sum_k pi_ik P(u | k), and the first pair's
        bivariate residual with each row's pi, equal their brute-force values; df counts
        the family's parameters and a note says why the p-values are approximate."""
        res, _, fitj, _ = lca_run
        g = fitj["goodness_of_fit"]
        Y, p = res.data["Y"], res.params
        pi = logit.probabilities(res.data["Z"], p["beta"])
        J = Y.shape[1]
        U, counts = np.unique(Y, axis=0, return_counts=True)
        Pu = np.array([[np.prod(p["prob"][k, np.arange(J), u]) for k in range(3)] for u in U])
        E = Pu @ pi.sum(axis=0)
        assert g["g2"] == pytest.approx(2 * np.sum(counts * np.log(counts / E)), rel=1e-10)
        x2 = np.sum((counts - E) ** 2 / E) + len(Y) - E.sum()
        assert g["x2"] == pytest.approx(x2, rel=1e-10)
        family = 3 * J + 2   # the latent class model's parameters with its K-1 weights
        assert g["n_params"] == family and g["df"] == 2 ** J - 1 - family
        assert g["n_params_model"] == fitj["n_params"]
        assert any("average each row's class probabilities" in n for n in g["notes"])
        pair = fitj["bivariate_residuals"]["pairs"][0]
        O = pd.crosstab(Y[:, 0], Y[:, 1]).to_numpy()
        Eb = np.einsum("ik,ka,kb->ab", pi, p["prob"][:, 0, :], p["prob"][:, 1, :])
        assert pair["x2"] == pytest.approx(np.sum((O - Eb) ** 2 / Eb), rel=1e-10)
        table = fitj["response_probabilities"]
        np.testing.assert_allclose(table["weights"], p["weight"], rtol=1e-12)
        assert table["rows"][0]["se"][0] is not None

    def test_parametric_bootstrap_refits_the_covariate_model(self, lca_run):
        """The goodness-of-fit bootstrap draws classes from each row's pi and refits the
        covariate model: every replicate succeeds and gives a p-value."""
        res, _, _, _ = lca_run
        boot = res.summaries(gof_bootstrap=3)["goodness_of_fit"]["bootstrap"]
        assert boot["n_used"] == 3 and boot["n_failed"] == 0
        assert 0 < boot["p_value_g2"] <= 1 and all(v is not None for v in boot["g2_star"])

    def test_report_sections_in_english_and_chinese(self, lca_run, tmp_path):
        """The report has the goodness of fit, response probabilities and odds ratios; the
        Chinese report too, in Chinese."""
        res, _, _, report = lca_run
        for title in ("## Goodness of fit", "## Response probabilities by class",
                      "## Covariates of class membership"):
            assert title in report
        res.write(tmp_path, lang="zh", plots=False, formats=["md"])
        zh = (tmp_path / "report.md").read_text(encoding="utf-8")
        for title in ("## 拟合优度", "## 各类别的应答概率", "## 类别归属的协变量"):
            assert title in zh
        assert "类别归属依赖于协变量" in zh


class TestGaussianSummaries:
    def test_sds_and_correlations_delta_method(self, tmp_path):
        """A full-covariance Gaussian mixture with a covariate: per-class SDs and correlations
        from its covariances, delta-method SEs equal to differences of them, in fit.json."""
        rng = np.random.default_rng(1)
        n = 400
        x = rng.normal(size=n)
        cls = (rng.random(n) < 1 / (1 + np.exp(-1.5 * x))).astype(int)
        Y = np.array([[0, 0], [3, 2]])[cls] + rng.multivariate_normal([0, 0], [[1, .5], [.5, 1]], n)
        res = fit(pd.DataFrame({"a": Y[:, 0], "b": Y[:, 1], "x": x}), "gmm", 2, covariates=["x"],
                  n_starts=2, covariance="full")
        res.standard_errors("louis")
        rows = res.summaries()["derived"]["rows"]
        m, theta = res.model, res.model.to_free(res.params)
        assert [r["name"] for r in rows] == [f"{w}[{k}" + s for k in (1, 2)
                                             for w, s in (("sd", ",a]"), ("sd", ",b]"),
                                                          ("cor", ",a,b]"))]
        S = res.params["cov"]
        np.testing.assert_allclose([r["estimate"] for r in rows if r["kind"] == "sd"],
                                   np.sqrt(np.diagonal(S, axis1=1, axis2=2)).ravel(), rtol=1e-12)

        def f(t):
            return gmm_derived_values(m, m.from_free(t))[1]

        h = 1e-6
        Jn = np.array([(f(theta + h * e) - f(theta - h * e)) / (2 * h)
                       for e in np.eye(theta.size)]).T
        se = np.sqrt(np.diag(Jn @ np.asarray(res.se_result.cov_free) @ Jn.T))
        np.testing.assert_allclose([r["se"] for r in rows], se, rtol=1e-5)
        res.write(tmp_path, plots=False, formats=["md"], lang="en")
        fitj = json.loads((tmp_path / "fit.json").read_text(encoding="utf-8"))
        assert [r["name"] for r in fitj["derived"]["rows"]] == [r["name"] for r in rows]
        assert fitj["covariates"]["names"] == ["x"]
        assert "## Standard deviations and correlations" in (tmp_path / "report.md").read_text(
            encoding="utf-8")
