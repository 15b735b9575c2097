"""The inference table: intervals on each parameter's scale at --ci-level, z and p-values,
percentile intervals from the stored bootstrap replicates, covariance.csv of every reported
parameter, and parameters named by column.

Checked against independent computations: scipy.stats.norm for z, p and quantiles, the
logit/log transforms written out with the math module, numpy.percentile of the replicates,
and J C J' with J built by hand from the definitions of the derived parameters.
"""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
from scipy import stats

from src.config import RunOptions
from src.estimation.em import fit_em
from src.inference.intervals import (interval_table, parameter_scales, percentile_intervals,
                                     wald_intervals, z_and_p)
from src.inference.louis import louis_se
from src.models.gmm import GaussianMixtureModel
from src.models.registry import get_model_class
from src.output.estimates import covariance_rows, estimates_rows, interval_summary
from src.progress.artifacts import decode
from tests.helpers import ALL_SE_DEBUG, ROOT, check_rc, copy_run, reference_run, results_dir, run_script
from tests.test_numerical_se import lca_case

COLUMNS = ["eruptions", "waiting"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The Old Faithful run with all three SE methods (shared with test_output)."""
    return reference_run(tmp_path_factory.getbasetemp() / "refs", ALL_SE_DEBUG)


@pytest.fixture(scope="module")
def stored(run):
    doc = json.loads((run / "progress" / "main_estimation_progress.json").read_text())
    folder = run / "progress" / "main_estimation_artifacts"
    return {p: decode(r, folder) for p, r in doc["phase_results"].items()}


@pytest.fixture(scope="module")
def model(stored):
    from src.pipeline.phases import build_model

    return build_model(RunOptions().validate(), stored["data_preparation"]["meta"])


def read_csv(path) -> tuple[list[str], dict[str, dict[str, str]]]:
    rows = list(csv.reader(io.StringIO(path.read_text())))
    return rows[0], {r[0]: dict(zip(rows[0], r)) for r in rows[1:]}


def gmm_names() -> list[str]:
    names = ["weight[1]", "weight[2]"]
    names += [f"mean[{k},{c}]" for k in (1, 2) for c in COLUMNS]
    names += [f"cov[{k},{a},{b}]" for k in (1, 2) for i, a in enumerate(COLUMNS)
              for b in COLUMNS[i:]]
    return names


def unbounded(name: str) -> bool:
    if name.startswith("mean["):
        return True
    if name.startswith("cov["):
        _, a, b = name[4:-1].split(",")
        return a != b
    return False


def expit(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


class TestTransformedScale:
    def test_bounded_intervals_stay_inside_the_space(self):
        """Weights/probabilities near 0 or 1 and variances near 0, with standard errors far larger than the estimate, keep their intervals inside [0, 1] and [0, inf) (strictly while the bound is representable)."""
        est = np.array([1e-4, 0.02, 0.5, 0.98, 1 - 1e-5, 0.03, 1e-6, 0.3, 5.0])
        se = np.array([0.3, 0.4, 2.0, 0.5, 0.1, 0.2, 1e-3, 10.0, 50.0])
        scales = ["logit"] * 6 + ["log"] * 3
        for level in (0.5, 0.9, 0.95, 0.999):
            lo, hi, edge = wald_intervals(est, se, scales, level)
            assert not edge.any()
            assert np.all(lo <= est) and np.all(est <= hi)
            assert np.all(lo[:6] >= 0) and np.all(hi[:6] <= 1), (lo, hi)
            assert np.all(lo[6:] >= 0)  # an upper bound may overflow to inf
            z = stats.norm.ppf(0.5 + level / 2)
            left = (est - z * se < 0) | ((np.arange(9) < 6) & (est + z * se > 1))
            assert left.all()  # the plain Wald interval would have left the space
            assert 0 < lo[5] and hi[5] < 1 and 0 < lo[2] and hi[2] < 1 and 0 < lo[7]

    def test_bounds_are_the_back_transformed_wald_bounds(self):
        """Each bound is expit(logit(p) -+ z se / (p(1-p))) or v exp(-+ z se / v), written out with math."""
        est = np.array([0.13, 0.71, 2.5, -3.0])
        se = np.array([0.05, 0.2, 0.7, 0.4])
        lo, hi, _ = wald_intervals(est, se, ["logit", "logit", "log", "identity"], 0.9)
        z = stats.norm.ppf(0.95)
        for i in range(2):
            p = est[i]
            g, s = math.log(p / (1 - p)), se[i] / (p * (1 - p))
            assert lo[i] == pytest.approx(expit(g - z * s), rel=1e-14)
            assert hi[i] == pytest.approx(expit(g + z * s), rel=1e-14)
        assert lo[2] == pytest.approx(math.exp(math.log(2.5) - z * 0.7 / 2.5), rel=1e-14)
        assert hi[2] == pytest.approx(math.exp(math.log(2.5) + z * 0.7 / 2.5), rel=1e-14)
        assert (lo[3], hi[3]) == (-3.0 - z * 0.4, -3.0 + z * 0.4)

    @pytest.mark.parametrize("scale,est", [("logit", 0.3), ("logit", 0.9), ("log", 4.0),
                                           ("log", 0.01)])
    def test_small_standard_errors_give_the_wald_interval(self, scale, est):
        """For an interior estimate the transformed interval differs from est -+ z se by O(se^2): relative error falling with se."""
        z = stats.norm.ppf(0.975)
        errors = []
        for rel in (1e-2, 1e-3, 1e-4):
            se = rel * est
            lo, hi, _ = wald_intervals(np.array([est]), np.array([se]), [scale], 0.95)
            errors.append(max(abs(lo[0] - (est - z * se)), abs(hi[0] - (est + z * se))) / (z * se))
        assert errors[-1] < 1e-3
        assert errors[1] < errors[0] / 5 and errors[2] < errors[1] / 5

    def test_boundary_estimates_have_no_interval(self):
        """A probability of exactly 0 or 1 (or a weight of 0) has NaN bounds and is flagged; an interior one is not."""
        est = np.array([0.0, 1.0, 0.4, 0.0])
        lo, hi, edge = wald_intervals(est, np.array([0.1, 0.1, 0.1, 0.1]),
                                      ["logit", "logit", "logit", "identity"])
        assert edge.tolist() == [True, True, False, False]
        assert np.isnan(lo[:2]).all() and np.isnan(hi[:2]).all() and np.isfinite(lo[2:]).all()

    def test_scales_follow_the_declarations_of_a_user_model(self):
        """A user model's positive parameter gets the log scale and a weight the logit scale, from their ParamSpec constraints."""
        cls = get_model_class(f"{ROOT / 'examples/user_models/exponential_mixture.py'}:ExponentialMixture")
        m = cls(2)
        m.setup({"columns": ["waiting"]})
        assert [(n, s) for n, s in zip(m.reported_names(), parameter_scales(m))] == [
            ("weight[1]", "logit"), ("weight[2]", "logit"), ("rate[1]", "log"), ("rate[2]", "log")]


class TestEstimatesTable:
    def test_names_by_column_through_the_main_script(self, run):
        """The script names Gaussian-mixture parameters by the data's columns, in estimates.csv and covariance.csv alike."""
        header, rows = read_csv(results_dir(run) / "estimates.csv")
        assert header[:7] == ["parameter", "estimate", "se", "z", "p_value", "ci_lower", "ci_upper"]
        assert list(rows) == gmm_names()
        cov_header, _ = read_csv(results_dir(run) / "covariance.csv")
        assert set(cov_header[1:]) <= set(gmm_names())

    def test_z_and_p_against_scipy(self, run):
        """z = estimate / se and p = 2 P(Z > |z|) by scipy.stats.norm for unbounded parameters; both empty for weights and variances."""
        _, rows = read_csv(results_dir(run) / "estimates.csv")
        for name, row in rows.items():
            if unbounded(name):
                z = float(row["estimate"]) / float(row["se"])
                assert float(row["z"]) == pytest.approx(z, rel=1e-15)
                assert float(row["p_value"]) == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-12, abs=1e-300)
            else:
                assert row["z"] == "" and row["p_value"] == "", name
        # an off-diagonal covariance is the one with a p-value that is not 0 to double precision
        z = float(rows["cov[1,eruptions,waiting]"]["z"])
        assert float(rows["cov[1,eruptions,waiting]"]["p_value"]) == pytest.approx(
            2 * stats.norm.cdf(-abs(z)), rel=1e-12)
        assert 0 < float(rows["cov[1,eruptions,waiting]"]["p_value"]) < 0.05

    def test_ci_level_through_the_script(self, run, tmp_path):
        """--ci-level 0.9 rewrites only the results: unbounded widths shrink by z(0.95)/z(0.975), bounded intervals stay nested in the 0.95 ones."""
        copy_run(run, tmp_path)
        check_rc(run_script(tmp_path, *ALL_SE_DEBUG, "--ci-level", "0.9", "--recompute-changed"), 0)
        _, wide = read_csv(results_dir(run) / "estimates.csv")
        _, narrow = read_csv(results_dir(tmp_path) / "estimates.csv")
        ratio = stats.norm.ppf(0.95) / stats.norm.ppf(0.975)
        for name in gmm_names():
            w, n = wide[name], narrow[name]
            assert n["estimate"] == w["estimate"] and n["se"] == w["se"] and n["z"] == w["z"]
            lo9, hi9, lo95, hi95 = (float(n["ci_lower"]), float(n["ci_upper"]),
                                    float(w["ci_lower"]), float(w["ci_upper"]))
            if unbounded(name):
                assert (hi9 - lo9) / (hi95 - lo95) == pytest.approx(ratio, rel=1e-10), name
            else:
                assert lo95 < lo9 < float(n["estimate"]) < hi9 < hi95, name

    def test_percentile_intervals_are_percentiles_of_the_stored_replicates(self, stored, model):
        """Bootstrap intervals at levels 0.9 and 0.95 are numpy.percentile of the replicate estimates kept in the run's progress."""
        boot = stored["standard_error_computation"]["bootstrap"]
        rep = np.asarray(boot["replicates"])
        assert rep.shape == (boot["extra"]["n_ok"], len(gmm_names()))
        np.testing.assert_allclose(rep.std(axis=0, ddof=1), boot["se"], rtol=1e-15)
        for level, q in ((0.9, [5, 95]), (0.95, [2.5, 97.5])):
            options = RunOptions(se_method="bootstrap", ci_level=level).validate()
            header, rows = estimates_rows(model, stored["model_estimation"],
                                          {"bootstrap": boot}, options)
            lo, hi = np.percentile(rep, q, axis=0)
            assert [float(r[header.index("ci_lower")]) for r in rows] == lo.tolist()
            assert [float(r[header.index("ci_upper")]) for r in rows] == hi.tolist()
            summary = interval_summary(model, {"bootstrap": boot}, options)
            assert summary["interval_method"] == "percentile" and summary["ci_level"] == level
        np.testing.assert_array_equal(percentile_intervals(rep, 0.95)[0], boot["ci_lower"])

    def test_summary_names_the_wald_method_and_level(self, stored, model):
        """interval_summary says Wald at the run's level, for fit.json and the report."""
        options = RunOptions(se_method="louis", ci_level=0.8).validate()
        s = interval_summary(model, stored["standard_error_computation"], options)
        assert s["interval_method"] == "wald" and s["ci_level"] == 0.8
        assert s["interval_se_method"] == "louis" and "0.8" in s["interval_description"]
        assert s["interval_notes"] == []
        assert interval_summary(model, {}, options)["interval_method"] is None


class TestCovarianceOfEveryParameter:
    def test_gmm_last_weight_rows_are_j_c_j(self, stored, model):
        """covariance.csv holds weight[2] = 1 - weight[1]: its row is minus weight[1]'s (its variance equal), and the free block is the stored covariance."""
        louis = stored["standard_error_computation"]["louis"]
        header, rows = covariance_rows({"louis": louis}, RunOptions(se_method="louis").validate(),
                                       model=model)
        names = header[1:]
        assert names == gmm_names() == [r[0] for r in rows]
        C = np.array([[float(v) for v in r[1:]] for r in rows])
        free = list(louis["free_names"])
        S = np.asarray(louis["cov_free"])
        S = 0.5 * (S + S.T)
        idx = [names.index(n) for n in free]
        np.testing.assert_allclose(C[np.ix_(idx, idx)], S, rtol=1e-14, atol=0)
        w1, w2 = names.index("weight[1]"), names.index("weight[2]")
        others = [i for i in range(len(names)) if i not in (w1, w2)]
        np.testing.assert_allclose(C[w2, others], -C[w1, others], rtol=1e-14)
        assert C[w2, w2] == pytest.approx(C[w1, w1], rel=1e-14)
        assert C[w2, w1] == pytest.approx(-C[w1, w1], rel=1e-14)
        np.testing.assert_array_equal(C, C.T)
        np.testing.assert_allclose(np.sqrt(np.diag(C)), louis["se"], rtol=1e-12)

    def test_lca_last_category_rows_are_j_c_j(self):
        """For LCA, each item's last category and the last weight get covariances from J C J' with J written out from the definitions (minus the sum of the free ones)."""
        lca, data = lca_case()
        fit = fit_em(lca, data, n_starts=2, tol=1e-10, max_iter=20000, seed=1)
        res = louis_se(lca, data, fit.params)
        header, rows = covariance_rows({"louis": res.to_dict()}, RunOptions(se_method="louis").validate(),
                                       model=lca)
        names = header[1:]
        assert names == lca.reported_names()
        C = np.array([[float(v) for v in r[1:]] for r in rows])
        free = res.free_names
        J = np.zeros((len(names), len(free)))
        for r, name in enumerate(names):
            if name in free:
                J[r, free.index(name)] = 1.0
            elif name.startswith("weight["):
                J[r, [free.index(n) for n in free if n.startswith("weight[")]] = -1.0
            else:  # prob[k,item,last] = 1 - sum of the item's other categories in class k
                prefix = name[: name.rindex(",") + 1]
                J[r, [free.index(n) for n in free if n.startswith(prefix)]] = -1.0
        expect = J @ res.cov_free @ J.T
        assert any(n not in free for n in names if n.startswith("prob["))
        np.testing.assert_allclose(C, expect, rtol=1e-10, atol=1e-15 * np.abs(expect).max())
        np.testing.assert_allclose(np.sqrt(np.diag(C)), res.se, rtol=1e-12)


class TestBoundary:
    def test_probability_on_the_boundary_has_no_interval_and_a_note(self):
        """An LCA item with probabilities exactly 1 and 0 in a class: empty bounds in estimates.csv and a note naming both, other probabilities inside (0, 1)."""
        lca, data = lca_case()
        fit = fit_em(lca, data, n_starts=2, tol=1e-10, max_iter=20000, seed=1)
        params = {k: v.copy() for k, v in fit.params.items()}
        params["prob"][0, 0, :2] = [1.0, 0.0]
        res = louis_se(lca, data, params).to_dict()
        table = interval_table(lca, res, 0.95)
        edge = [n for n, b in zip(table["names"], table["on_boundary"]) if b]
        assert edge == ["prob[1,item1,1]", "prob[1,item1,2]"]
        assert len(table["notes"]) == 1 and all(n in table["notes"][0] for n in edge)
        options = RunOptions(se_method="louis").validate()
        header, rows = estimates_rows(lca, {"params": params}, {"louis": res}, options)
        by_name = {r[0]: dict(zip(header, r)) for r in rows}
        for name in edge:
            assert by_name[name]["ci_lower"] == by_name[name]["ci_upper"] == ""
            assert by_name[name]["z"] == by_name[name]["p_value"] == ""
        for name, row in by_name.items():
            if name.startswith("prob[") and row["ci_lower"] not in ("", "nan"):
                assert 0 < float(row["ci_lower"]) < float(row["estimate"]) < float(row["ci_upper"]) < 1
        assert interval_summary(lca, {"louis": res}, options)["interval_notes"] == table["notes"]

    def test_one_class_weight_has_no_interval_and_no_note(self):
        """With one class the weight is 1 by definition: no interval and no boundary note; the mean still has z and p."""
        X = np.random.default_rng(0).normal(size=(50, 2))
        gmm = GaussianMixtureModel(1)
        gmm.setup(GaussianMixtureModel.meta_for_array(X, ["a", "b"]))
        fit = fit_em(gmm, {"X": X}, n_starts=1, seed=0)
        res = louis_se(gmm, {"X": X}, fit.params)
        table = interval_table(gmm, res, 0.95)
        assert table["names"][:3] == ["weight[1]", "mean[1,a]", "mean[1,b]"]
        assert table["on_boundary"][0] and not table["notes"]
        z, p = z_and_p(res.estimates, res.se)
        assert table["z"][1] == z[1] and table["p_value"][1] == p[1] and np.isnan(table["z"][0])


def test_replicates_of_another_shape_are_refused(stored):
    """A stored bootstrap result whose replicates do not have one column per parameter cannot be read (a resumed run recomputes it)."""
    from src.inference.results import SEResult

    boot = dict(stored["standard_error_computation"]["bootstrap"])
    assert SEResult.from_dict(boot).replicates.shape == np.asarray(boot["replicates"]).shape
    boot["replicates"] = np.asarray(boot["replicates"])[:, :-1]
    with pytest.raises(ValueError, match="replicates have shape"):
        SEResult.from_dict(boot)
