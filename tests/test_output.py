"""Result files of a real run: estimates.csv, covariance.csv, fit.json, report.md.

Checked against what the run itself stored (the fitted parameters in its progress
artifacts), against formulas (AIC, BIC, the number of free parameters) and against an
independent computation: the Old Faithful log-likelihood at the written estimates, by scipy.
"""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from src.config import RunOptions
from src.output.writers import estimates_rows, format_number
from src.progress.artifacts import decode
from src.utils.rng import stream
from tests.helpers import ALL_SE_DEBUG, ROOT, fit_json, reference_run, results_dir

K, D = 2, 2
COLUMNS = ["eruptions", "waiting"]  # parameters are named by column: mean[1,waiting]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return reference_run(tmp_path_factory.getbasetemp() / "refs", ALL_SE_DEBUG)


@pytest.fixture(scope="module")
def stored(run):
    """Phase results as the run stored them (decoded from the progress file and artifacts)."""
    doc = json.loads((run / "progress" / "main_estimation_progress.json").read_text())
    folder = run / "progress" / "main_estimation_artifacts"
    return {p: decode(r, folder) for p, r in doc["phase_results"].items()}


def _table(run):
    text = (results_dir(run) / "estimates.csv").read_text()
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0], rows[1:]


def expected_names():
    names = [f"weight[{k}]" for k in range(1, K + 1)]
    names += [f"mean[{k},{c}]" for k in range(1, K + 1) for c in COLUMNS]
    names += [f"cov[{k},{a},{b}]" for k in range(1, K + 1) for i, a in enumerate(COLUMNS)
              for b in COLUMNS[i:]]
    return names


def test_estimates_columns_and_names(run):
    header, rows = _table(run)
    assert header == ["parameter", "estimate", "se", "z", "p_value", "ci_lower", "ci_upper",
                      "se_louis", "se_numerical", "se_bootstrap", "se_sandwich"]
    assert [r[0] for r in rows] == expected_names()
    assert all(len(r) == len(header) for r in rows)


def test_numbers_are_shortest_round_trip_text_equal_to_the_stored_values(run, stored):
    header, rows = _table(run)
    for row in rows:
        for cell in row[1:]:
            # shortest text that reads back to the same float (z, p empty for bounded ones)
            assert cell == "" or repr(float(cell)) == cell
    params = {k: np.asarray(v) for k, v in stored["model_estimation"]["params"].items()}
    value = {r[0]: float(r[1]) for r in rows}
    for name, x in value.items():
        parts = name[name.index("[") + 1:-1].split(",")
        idx = [int(parts[0]) - 1] + [COLUMNS.index(c) for c in parts[1:]]
        kind = name.split("[")[0]
        assert x == params[kind][tuple(idx)], name  # exact, not approximate
    louis = stored["standard_error_computation"]["louis"]
    assert [float(r[2]) for r in rows] == [float(s) for s in np.asarray(louis["se"])]
    assert [r[2] for r in rows] == [r[header.index("se_louis")] for r in rows]


def test_canonical_order_and_intervals(run):
    header, rows = _table(run)
    v = {r[0]: {h: float(c) for h, c in zip(header[1:], r[1:]) if c} for r in rows}
    # gmm: increasing mean of the first column
    assert v["mean[1,eruptions]"]["estimate"] < v["mean[2,eruptions]"]["estimate"]
    assert math.isclose(v["weight[1]"]["estimate"] + v["weight[2]"]["estimate"], 1.0,
                        rel_tol=0, abs_tol=1e-12)
    for r in v.values():
        assert r["se"] > 0 and r["ci_lower"] < r["estimate"] < r["ci_upper"]


def test_loglik_matches_an_independent_computation(run):
    """The written estimates reproduce fit.json's log-likelihood, computed here by scipy."""
    _, rows = _table(run)
    v = {r[0]: float(r[1]) for r in rows}
    data = np.loadtxt(ROOT / "src" / "data" / "builtin" / "faithful.csv", delimiter=",", skiprows=1)
    parts = []
    for k in range(1, K + 1):
        mean = [v[f"mean[{k},{c}]"] for c in COLUMNS]
        cov = np.array([[v[f"cov[{k},{COLUMNS[min(i, j)]},{COLUMNS[max(i, j)]}]"] for j in range(D)]
                        for i in range(D)])
        parts.append(math.log(v[f"weight[{k}]"]) + multivariate_normal(mean, cov).logpdf(data))
    loglik = float(logsumexp(np.stack(parts), axis=0).sum())
    assert math.isclose(fit_json(run)["loglik"], loglik, rel_tol=1e-11)


def test_fit_json_fields_and_criteria(run):
    fit = fit_json(run)
    for field in ("loglik", "n_obs", "n_params", "aic", "bic", "n_iter", "converged", "seconds",
                  "se_method", "fingerprint"):
        assert field in fit, field
    n_rows = len((ROOT / "src" / "data" / "builtin" / "faithful.csv").read_text().strip().splitlines()) - 1
    assert fit["n_obs"] == n_rows == 272
    assert fit["n_params"] == (K - 1) + K * D + K * D * (D + 1) // 2 == 11
    ll, p, n = fit["loglik"], fit["n_params"], fit["n_obs"]
    assert math.isclose(fit["aic"], -2 * ll + 2 * p, rel_tol=1e-14)
    assert math.isclose(fit["bic"], -2 * ll + p * math.log(n), rel_tol=1e-14)
    assert fit["converged"] is True and isinstance(fit["n_iter"], int) and fit["n_iter"] > 0
    assert fit["seconds"] > 0 and fit["se_method"] == "all"
    fp = fit["fingerprint"]
    assert fp["components"] == K and fp["se_method"] == "all" and fp["n_bootstrap"] == 20
    assert "environment" in fp and "data_sha256" in fp


def test_covariance_csv_matches_the_standard_errors(run, stored):
    rows = list(csv.reader((results_dir(run) / "covariance.csv").open()))
    names = rows[0][1:]
    cov = np.array([[float(c) for c in r[1:]] for r in rows[1:]])
    assert [r[0] for r in rows[1:]] == names and cov.shape == (len(names), len(names))
    assert np.array_equal(cov, cov.T)  # exactly symmetric, as a covariance matrix file must be
    se = dict(zip(stored["standard_error_computation"]["louis"]["names"],
                  np.asarray(stored["standard_error_computation"]["louis"]["se"])))
    for i, name in enumerate(names):
        assert math.isclose(math.sqrt(cov[i, i]), se[name], rel_tol=1e-12)


def test_report_is_written(run):
    text = (results_dir(run) / "report.md").read_text()
    fit = fit_json(run)
    assert f"{fit['loglik']:.6f}" in text
    assert "| parameter | estimate | se |" in text and "cov[2,waiting,waiting]" in text


def test_without_standard_errors_the_se_columns_are_empty(stored):
    from src.pipeline.phases import build_model

    options = RunOptions(se_method="none").validate()
    model = build_model(options, stored["data_preparation"]["meta"])
    header, rows = estimates_rows(model, stored["model_estimation"], {}, options)
    assert header == ["parameter", "estimate", "se", "z", "p_value", "ci_lower", "ci_upper"]
    assert [r[0] for r in rows] == expected_names()
    assert all(r[2:] == ["", "", "", "", ""] for r in rows)


def test_format_number_round_trips():
    rng = stream(1, "test", 0)
    values = list(rng.standard_normal(200) * 10.0 ** rng.integers(-300, 300, 200))
    values += [0.0, -0.0, 5e-324, 1.7976931348623157e308, 0.1, 1 / 3, 1e16, -2.5e-8]
    for x in values:
        text = format_number(x)
        assert float(text) == x and text == repr(float(x))
    assert format_number(np.float64(0.1)) == "0.1"
    assert format_number(None) == "" and format_number(float("nan")) == "nan"


def _write_in_process(stored, folder, se):
    from src.output.writers import write_all
    from src.pipeline.phases import build_model

    options = RunOptions(n_starts=2, se_method="all", n_bootstrap=20,
                         output_dir=str(folder)).validate()
    record = stored["data_preparation"]
    model = build_model(options, record["meta"])
    write_all(model, record, stored["model_estimation"], se, options, fingerprint={"a": 1, "b": 2})
    return folder


def test_fit_json_bytes_do_not_depend_on_the_order_results_come_in(tmp_path, stored):
    """fit.json is the same bytes whatever order the SE methods and their figures are held in (as after a resume)."""
    se = stored["standard_error_computation"]
    shuffled = {m: {**r, "extra": dict(reversed(list(r.get("extra", {}).items())))}
                for m, r in reversed(list(se.items()))}
    assert list(shuffled["bootstrap"]["extra"]) != list(se["bootstrap"]["extra"])
    a = _write_in_process(stored, tmp_path / "a", se)
    b = _write_in_process(stored, tmp_path / "b", shuffled)
    assert (a / "fit.json").read_bytes() == (b / "fit.json").read_bytes()


def test_best_start_counts_from_one(run, stored):
    """fit.json names the best random start counting from 1, as everything a user sees."""
    fit = fit_json(run)
    assert fit["best_start"] == stored["model_estimation"]["best_start"] + 1
    assert 1 <= fit["best_start"] <= len(fit["start_logliks"])


def test_nan_standard_errors_are_not_counted_as_agreement(tmp_path, stored):
    """Parameters with a NaN SE in any method are listed as not comparable, and agreement is claimed only for the rest."""
    se = {m: dict(r) for m, r in stored["standard_error_computation"].items()}
    names = list(se["louis"]["names"])
    numerical = np.array(se["louis"]["se"], dtype=float)  # equal to Louis but for one NaN
    numerical[names.index("cov[1,eruptions,waiting]")] = np.nan
    bootstrap = np.array(se["louis"]["se"], dtype=float)
    bootstrap[names.index("weight[1]")] = np.nan
    se["numerical"]["se"], se["bootstrap"]["se"] = numerical, bootstrap
    report = (_write_in_process(stored, tmp_path, se) / "report.md").read_text()
    section = report.split("## Agreement of the three standard errors", 1)[1]
    assert "Not comparable (a standard error is NaN in at least one method): weight[1], cov[1,eruptions,waiting]." in section
    assert (f"agree within Monte-Carlo error for the other {len(names) - 2} parameters."
            in section), section


def test_full_agreement_is_claimed_when_every_parameter_was_compared(tmp_path, stored):
    """With every SE finite and equal across methods, the report claims agreement for all and lists nothing as not comparable."""
    se = {m: dict(r) for m, r in stored["standard_error_computation"].items()}
    for m in ("numerical", "bootstrap"):
        se[m]["se"] = np.array(se["louis"]["se"], dtype=float)
    report = (_write_in_process(stored, tmp_path, se) / "report.md").read_text()
    assert "Louis, numerical and bootstrap standard errors agree within Monte-Carlo error.\n" in report
    assert "Not comparable" not in report


def _se(**columns):
    """SE results of a few methods on the parameters a, b, c, d (what disagreements reads)."""
    return {m: {"names": ["a", "b", "c", "d"], "se": np.array(v, dtype=float)}
            for m, v in columns.items()}


def test_built_in_methods_are_compared_as_before():
    """Louis is the reference; numerical disagrees beyond 1e-3 relative, bootstrap beyond 3 Monte-Carlo SDs plus 10%."""
    from src.output.writers import disagreements, not_comparable

    se = _se(louis=[1.0, 1.0, 1.0, np.nan], numerical=[1.0009, 1.01, 1.0, 1.0],
             bootstrap=[1.0, 1.0, 2.0, 1.0])  # B = 50: 3/sqrt(100) + 0.1 = 0.4 allowed
    expected = ["b: Louis 1 vs numerical 1.01", "c: Louis 1 vs bootstrap 2"]
    assert disagreements(se, 50) == expected
    assert disagreements(se, RunOptions(n_bootstrap=50).validate()) == expected
    assert not_comparable(se) == ["d"]
    assert disagreements({k: v for k, v in se.items() if k != "louis"}, 50) == []


def test_a_new_method_is_compared_as_its_registry_entry_declares():
    """An SE method whose registry entry declares a comparison (deterministic or Monte-Carlo) is compared and named by it, with no change to the writers."""
    from types import SimpleNamespace

    from src.inference import SE_METHODS, Comparison, SEMethod
    from src.output.writers import comparison_of, disagreements, not_comparable

    fn = SE_METHODS["louis"].function
    registry = {
        "louis": SE_METHODS["louis"],
        "sandwich": SEMethod("sandwich", fn, "robust", agreement=Comparison("sandwich",
                                                                          rel_tol=1e-2)),
        "jackknife": SEMethod("jackknife", fn, "jackknife", agreement=Comparison(
            "jackknife", replicates="n_jackknife", sds=2.0, slack=0.0)),
        "plain": SEMethod("plain", fn, "not compared"),
    }
    se = _se(louis=[1.0, 2.0, 4.0, np.nan], sandwich=[1.005, 2.1, 4.0, 1.0],
             jackknife=[1.3, 2.0, 4.5, 1.0], plain=[np.nan] * 4)  # 2/sqrt(2*50) = 0.2 allowed
    assert disagreements(se, SimpleNamespace(n_jackknife=50), registry) == [
        "b: Louis 2 vs sandwich 2.1", "a: Louis 1 vs jackknife 1.3"]
    assert not_comparable(se, registry) == ["d"]
    assert comparison_of("plain", registry) is None
    assert comparison_of("sandwich", registry) == Comparison("sandwich", rel_tol=1e-2)
    assert comparison_of("bootstrap") == Comparison("bootstrap", replicates="n_bootstrap")
