"""Tests of the notebook API: fit() on arrays and frames, results object, predictions,
options checked like the script's, the same numbers as the script, and what a fit means
(posteriors, classification, summaries, inference table, figures, result files) equal to
the script's files on the same data and options."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit, logsumexp
from scipy.stats import multivariate_normal, norm, poisson

from src.api import MixtureResults, fit, run
from src.output.writers import format_number
from src.utils.errors import UsageError
from src.utils.rng import stream
from tests.inprocess import run_main
from tests.test_em import PoissonMixture

FAITHFUL = Path(__file__).resolve().parents[1] / "src" / "data" / "builtin" / "faithful.csv"
CARCINOMA = Path(__file__).resolve().parent / "reference" / "carcinoma.csv"


class FramePoisson(PoissonMixture):
    """The test Poisson mixture, readable from a one-column data frame (a user model)."""

    @classmethod
    def prepare_data(cls, frame, options):
        return {"y": frame.iloc[:, 0].to_numpy(dtype=float)}, {"column": str(frame.columns[0])}


@pytest.fixture(scope="module")
def faithful_fit() -> tuple[pd.DataFrame, MixtureResults]:
    df = pd.read_csv(FAITHFUL)
    return df, fit(df, "gmm", 2, n_starts=3)


class TestFitGmm:
    def test_faithful_published_loglik(self, faithful_fit):
        """Old Faithful, 2 full-covariance components: mclust's log-likelihood -1130.264."""
        _, res = faithful_fit
        assert res.converged
        assert res.loglik == pytest.approx(-1130.264, abs=1e-3)
        assert res.bic == pytest.approx(-2 * res.loglik + 11 * np.log(272))
        assert res.aic == pytest.approx(-2 * res.loglik + 22)

    def test_loglik_and_probabilities_by_scipy(self, faithful_fit):
        """The log-likelihood and predict_proba equal a direct scipy computation."""
        df, res = faithful_fit
        X = df.to_numpy(dtype=float)
        p = res.params
        dens = np.column_stack([p["weight"][k] * multivariate_normal(p["mean"][k], p["cov"][k]).pdf(X)
                                for k in range(2)])
        assert res.loglik == pytest.approx(np.log(dens.sum(axis=1)).sum(), rel=1e-10)
        np.testing.assert_allclose(res.predict_proba(), dens / dens.sum(axis=1, keepdims=True),
                                   rtol=1e-8, atol=1e-12)
        np.testing.assert_array_equal(res.predict(), np.argmax(dens, axis=1) + 1)  # classes from 1

    def test_estimates_frame(self, faithful_fit):
        """estimates is indexed by the model's reported names and holds the parameter values."""
        _, res = faithful_fit
        est = res.estimates
        assert list(est.index) == res.model.reported_names() and list(est.columns) == ["estimate"]
        assert est.loc["weight[1]", "estimate"] + est.loc["weight[2]", "estimate"] == pytest.approx(1)
        assert est.loc["mean[1,eruptions]", "estimate"] == res.params["mean"][0, 0]
        assert res.params["mean"][0, 0] < res.params["mean"][1, 0]  # canonical order

    def test_new_data_and_array_input(self, faithful_fit):
        """predict_proba on new rows equals the training rows' values; arrays work like frames."""
        df, res = faithful_fit
        np.testing.assert_allclose(res.predict_proba(df.iloc[:10]), res.predict_proba()[:10],
                                   rtol=1e-12)
        with pytest.raises(ValueError, match="not in the data"):
            res.predict_proba(df.rename(columns={"waiting": "w"}))
        arr = fit(df.to_numpy(), "gmm", 2, n_starts=3)
        assert arr.loglik == pytest.approx(res.loglik, rel=1e-9)
        assert arr.model.columns == ["x1", "x2"]

    def test_columns_and_model_options(self):
        """columns selects columns; model options reach the model (diagonal covariances)."""
        df = pd.read_csv(FAITHFUL).assign(noise=lambda d: np.arange(len(d)) % 7)
        res = fit(df, "gmm", 2, columns=["eruptions", "waiting"], covariance="diag", n_starts=2)
        assert res.params["cov"].shape == (2, 2)
        assert res.model.n_free_parameters() == 1 + 4 + 4
        with pytest.raises(ValueError, match="not in the data"):
            fit(df, "gmm", 2, columns=["nope"])

    def test_summary_and_standard_errors(self, faithful_fit):
        """summary() reports the fit; Louis standard errors agree with the numerical Hessian."""
        _, res = faithful_fit
        louis = res.standard_errors("louis")
        numeric = res.standard_errors("numerical")
        np.testing.assert_allclose(louis["se"], numeric["se"], rtol=1e-3)
        text = res.summary()
        assert "Log-likelihood: -1130.26" in text and "cov[2,waiting,waiting]" in text and " se" in text


class TestOtherModels:
    def test_user_model_class_one_class_is_sample_mean(self):
        """A user's MixtureModel subclass works from the API; one class gives the sample mean."""
        y = stream(4, "test-data", 5).poisson(3.0, 500)
        res = fit(pd.DataFrame({"count": y}), FramePoisson, 1, n_starts=1)
        assert res.params["rate"][0] == pytest.approx(y.mean(), rel=1e-12)
        assert res.loglik == pytest.approx(poisson(y.mean()).logpmf(y).sum(), rel=1e-12)

    def test_mixreg_one_class_is_ols(self):
        """mixreg with one class and a target gives the least-squares coefficients."""
        rng = stream(5, "test-data", 6)
        x = rng.normal(size=300)
        df = pd.DataFrame({"x": x, "y": 1.0 + 2.0 * x + rng.normal(scale=0.5, size=300)})
        res = fit(df, "mixreg", 1, target="y", n_starts=1)
        ols = np.linalg.lstsq(np.column_stack([np.ones(300), x]), df["y"].to_numpy(), rcond=None)[0]
        np.testing.assert_allclose(res.params["coef"][0], ols, rtol=1e-8)

    def test_lca_from_text_frame(self):
        """lca reads a frame of codes; class probabilities sum to one per row."""
        rng = stream(6, "test-data", 7)
        z = rng.random(400) < 0.5
        items = {f"q{j}": np.where(rng.random(400) < np.where(z, 0.85, 0.2), "yes", "no")
                 for j in range(5)}
        res = fit(pd.DataFrame(items), "lca", 2, n_starts=3)
        proba = res.predict_proba()
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
        assert res.converged and res.estimates.shape[0] == len(res.model.reported_names())


class TestOptions:
    def test_misspelt_keyword_names_the_closest(self):
        """A misspelt keyword is a UsageError naming the closest valid option."""
        df = pd.read_csv(FAITHFUL)
        with pytest.raises(UsageError, match="Unknown option 'n_start' for fit\\(\\); did you mean 'n_starts'\\?"):
            fit(df, "gmm", 2, n_start=2)
        with pytest.raises(UsageError, match="did you mean 'covariance'"):
            fit(df, "gmm", 2, covarience="diag")
        with pytest.raises(UsageError, match="'se_method'"):  # a script option fit() does not take
            fit(df, "gmm", 2, se_method="bootstrap")

    def test_bad_choice_names_the_valid_ones(self):
        """covariance='ful' is one sentence listing full, diag, spherical (was a KeyError)."""
        with pytest.raises(UsageError, match="'covariance' must be one of full, diag, spherical, got 'ful'"):
            fit(pd.read_csv(FAITHFUL), "gmm", 2, covariance="ful")
        with pytest.raises(UsageError, match="'n_starts' must be >= 1"):
            fit(pd.read_csv(FAITHFUL), "gmm", 2, n_starts=0)

    def test_column_named_twice(self):
        """columns=['a', 'a'] is one sentence naming the column."""
        with pytest.raises(UsageError, match="'waiting' more than once"):
            fit(pd.read_csv(FAITHFUL), "gmm", 2, columns=["waiting", "waiting"])

    def test_standard_errors_options_are_checked(self, faithful_fit):
        """standard_errors() takes the method's own options only, with the closest name."""
        _, res = faithful_fit
        with pytest.raises(UsageError, match="did you mean 'n_bootstrap'"):
            res.standard_errors("bootstrap", n_bootstrp=10)
        with pytest.raises(UsageError, match="'method' must be one of louis, numerical, bootstrap"):
            res.standard_errors("luis")

    def test_best_start_counts_from_one(self, faithful_fit):
        """best_start and summary() count starts from 1, as the console does."""
        _, res = faithful_fit
        assert res.best_start == res.fit_result.best_start + 1
        assert 1 <= res.best_start <= len(res.start_logliks)
        assert f"best of 3 starts (start {res.best_start})" in res.summary()


def _estimates_csv(path: Path) -> dict[str, str]:
    with open(path, newline="") as fh:
        return {row["parameter"]: row["estimate"] for row in csv.DictReader(fh)}


class TestSameAsScript:
    @pytest.mark.parametrize("script_args,api_kwargs", [
        (("--n-starts", "3"), dict(n_starts=3)),
        (("--n-starts", "2", "--covariance", "diag", "--seed", "7", "--accelerate", "none",
          "--columns", "waiting,eruptions"),
         dict(n_starts=2, covariance="diag", seed=7, accelerate="none",
              columns=["waiting", "eruptions"])),
    ])
    def test_fit_gives_the_scripts_estimates(self, tmp_path, script_args, api_kwargs):
        """api.fit on the built-in data and the script with the same options: the same bits."""
        res = run_main(tmp_path, *script_args, "--se-method", "none", "--no-progress-tracking",
                       "--output-dir", "out")
        assert res.returncode == 0, res.stderr
        script = _estimates_csv(tmp_path / "out" / "estimates.csv")
        api = fit(pd.read_csv(FAITHFUL), "gmm", 2, **api_kwargs)
        assert {k: format_number(v) for k, v in api.estimates["estimate"].items()} == script
        by_path = fit("builtin:faithful", "gmm", 2, **api_kwargs)
        assert by_path.loglik == api.loglik

    def test_run_is_the_script(self, tmp_path, monkeypatch, capsys):
        """api.run with the script's option names writes the script's files and numbers."""
        monkeypatch.chdir(tmp_path)
        res = run(n_starts=2, se_method="louis", task_name="from_api", output_dir="api")
        assert "Done: results in api" in capsys.readouterr().out
        assert (tmp_path / "progress" / "from_api_progress.json").is_file()
        script = run_main(tmp_path, "--n-starts", "2", "--task-name", "from_script",
                          "--output-dir", "script", "--lang", "en")
        assert script.returncode == 0, script.stderr
        assert (tmp_path / "api" / "estimates.csv").read_bytes() == \
            (tmp_path / "script" / "estimates.csv").read_bytes()
        assert res.se_result is not None and res.best_start >= 1
        _same_files(tmp_path / "api", tmp_path / "again", res.write(tmp_path / "again"))
        with pytest.raises(UsageError, match="did you mean 'task_name'"):
            run(task_nam="x")


class TestDataNotes:
    @staticmethod
    def _european_csv(path: Path) -> Path:
        """The faithful data with ';' between fields and ',' as the decimal mark."""
        rows = FAITHFUL.read_text().splitlines()
        lines = [rows[0].replace(",", ";")] + [r.replace(",", ";").replace(".", ",") for r in rows[1:]]
        path.write_text("\n".join(lines) + "\n")
        return path

    def test_fit_from_a_file_keeps_the_loaders_notes(self, tmp_path):
        """fit() on a file exposes how it was read (notes) and summary() shows them."""
        res = fit(self._european_csv(tmp_path / "eu.csv"), "gmm", 2, n_starts=2)
        assert any("semicolon-separated" in n for n in res.notes)
        assert any("decimal comma" in n for n in res.notes)
        assert "Note: " in res.summary() and "decimal comma" in res.summary()
        assert fit(pd.read_csv(FAITHFUL), "gmm", 2, n_starts=1).notes == []

    def test_run_keeps_the_notes_after_a_resume(self, tmp_path, monkeypatch, capsys):
        """run() exposes the notes, also when a rerun skips the data phase."""
        monkeypatch.chdir(tmp_path)
        self._european_csv(tmp_path / "eu.csv")
        first = run(data="eu.csv", n_starts=2, se_method="none", task_name="eu", lang="en")
        assert "decimal comma" in capsys.readouterr().out
        again = run(data="eu.csv", n_starts=2, se_method="none", task_name="eu", lang="en")
        assert "already completed" in capsys.readouterr().out
        assert again.notes == first.notes and any("decimal comma" in n for n in first.notes)


class TestEnumeration:
    def test_fit_with_a_range_is_the_scripts_enumeration(self, tmp_path):
        """fit(components="1-3") gives the script's enumeration.csv values, selected K, fits and files."""
        from src.api import Enumeration

        args = ("--n-starts", "2", "--n-candidates", "4", "--blrt", "5")
        res = run_main(tmp_path, "--components", "1-3", *args, "--se-method", "none",
                       "--no-progress-tracking", "--output-dir", "out")
        assert res.returncode == 0, res.stderr
        with open(tmp_path / "out" / "enumeration.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        enum = fit("builtin:faithful", "gmm", components="1-3", n_starts=2, n_candidates=4,
                   blrt=5)
        assert isinstance(enum, Enumeration) and list(enum.table.index) == [1, 2, 3]
        for row in rows:
            got = enum.table.loc[int(row["k"])]
            for col in ("loglik", "aic", "bic", "sabic", "caic", "icl", "entropy", "blrt_p",
                        "lmr_p", "vlmr_p"):
                want = float(row[col]) if row[col] else float("nan")
                assert format_number(got[col]) == format_number(want), col
            assert bool(got["selected"]) == (row["selected"] == "true")
        assert enum.selected_k == int(next(r["k"] for r in rows if r["selected"] == "true"))
        assert enum.selected is enum[enum.selected_k]
        k2 = _estimates_csv(tmp_path / "out" / "k2" / "estimates.csv")
        assert {k: format_number(v) for k, v in enum[2].estimates["estimate"].items()} == k2
        assert enum[1].model.n_components == 1 and "selected K" in enum.summary()
        with pytest.raises(KeyError, match="K = 5 was not fitted"):
            enum[5]
        written = {str(Path(f).relative_to(tmp_path / "api")) for f in enum.write(tmp_path / "api")}
        script = {str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*")
                  if p.is_file()}
        assert written == script
        for name in script - {"fit.json", "manifest.json", "k1/fit.json", "k2/fit.json",
                              "k3/fit.json", "k1/manifest.json", "k2/manifest.json",
                              "k3/manifest.json"}:
            assert (tmp_path / "api" / name).read_bytes() == (tmp_path / "out" / name).read_bytes(), name

    def test_one_k_in_any_form_is_a_single_fit(self):
        """components=3, "3-3" and [3] give the MixtureResults of K = 3; both names at once is refused."""
        df = pd.read_csv(FAITHFUL)
        one = [fit(df, "gmm", components=c, n_starts=2) for c in (3, "3-3", [3])]
        assert all(isinstance(r, MixtureResults) and r.model.n_components == 3 for r in one)
        assert one[0].loglik == one[1].loglik == one[2].loglik
        assert fit(df, "gmm", 3, n_starts=2).loglik == one[0].loglik
        with pytest.raises(UsageError, match="once"):
            fit(df, "gmm", 2, components=3)
        with pytest.raises(UsageError, match="components"):
            fit(df, "gmm", "3,2")


# ----------------------------------------------------------------- conclusions
def _json(value):
    """``value`` as fit.json holds it (NaN and inf kept, tuples as lists)."""
    return json.loads(json.dumps(value, allow_nan=True, default=str))


def _posteriors_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, index_col=0)


def _csv_or_nan(text: str) -> str:
    """An estimates.csv cell as format_number writes a float ('' where the API has NaN)."""
    return "nan" if text == "" else text


def _same_files(script: Path, api: Path, written: list[str]) -> None:
    """Every file of the script's folder is the API's, byte for byte, but fit.json (equal
    without its fingerprint and seconds) and manifest.json (the same names)."""
    assert sorted(Path(f).name for f in written) == sorted(p.name for p in script.iterdir())
    for f in script.iterdir():
        if f.name not in ("fit.json", "manifest.json"):
            assert (api / f.name).read_bytes() == f.read_bytes(), f.name
    mine, theirs = (json.loads((d / "fit.json").read_text()) for d in (api, script))
    assert mine.pop("fingerprint") == {}
    for d in (mine, theirs):
        d.pop("fingerprint", None)
        d.pop("seconds")
    assert mine == theirs
    names = [set(json.loads((d / "manifest.json").read_text())["files"]) for d in (api, script)]
    assert names[0] == names[1]


@pytest.fixture(scope="module")
def faithful_pair(tmp_path_factory) -> tuple[Path, MixtureResults]:
    """The script on Old Faithful (Louis SEs, level 0.9) and the API with the same options."""
    tmp = tmp_path_factory.mktemp("faithful")
    res = run_main(tmp, "--n-starts", "2", "--se-method", "louis", "--ci-level", "0.9",
                   "--no-progress-tracking", "--output-dir", "out", "--lang", "en")
    assert res.returncode == 0, res.stderr
    api = fit("builtin:faithful", "gmm", 2, n_starts=2)
    api.standard_errors("louis")
    return tmp / "out", api


@pytest.fixture(scope="module")
def carcinoma_pair(tmp_path_factory) -> tuple[Path, MixtureResults]:
    """The script on poLCA's carcinoma data (2 classes, Louis SEs, level 0.9, 3 G2/X2
    bootstrap replicates) and the API's fit with the same options."""
    tmp = tmp_path_factory.mktemp("carcinoma")
    res = run_main(tmp, "--model", "lca", "--data", str(CARCINOMA), "--n-starts", "2",
                   "--se-method", "louis", "--ci-level", "0.9", "--gof-bootstrap", "3",
                   "--no-progress-tracking", "--output-dir", "out", "--lang", "en")
    assert res.returncode == 0, res.stderr
    api = fit(CARCINOMA, "lca", 2, n_starts=2)
    api.standard_errors("louis")
    return tmp / "out", api


class TestPosteriors:
    def test_posteriors_are_the_scripts_file_and_scipys(self, faithful_pair):
        """posteriors equals posteriors.csv to the bit and the normalised scipy densities."""
        out, res = faithful_pair
        post = res.posteriors
        pd.testing.assert_frame_equal(post, _posteriors_csv(out / "posteriors.csv"),
                                      check_exact=True)
        X, p = pd.read_csv(FAITHFUL).to_numpy(dtype=float), res.params
        dens = np.column_stack([p["weight"][k] * multivariate_normal(p["mean"][k], p["cov"][k]).pdf(X)
                                for k in range(2)])
        np.testing.assert_allclose(post[["p1", "p2"]], dens / dens.sum(axis=1, keepdims=True),
                                   rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(post[["p1", "p2"]].sum(axis=1), 1.0, rtol=1e-14)
        np.testing.assert_array_equal(post["class"], res.predict())
        assert list(post.index) == list(range(272)) and post.index.name == "row"

    def test_id_and_dropped_rows_as_the_script(self, tmp_path):
        """fit(id=, drop_missing=True) names rows by the id and skips dropped ones, as the script's file."""
        df = pd.read_csv(FAITHFUL)
        df.insert(0, "name", [f"r{i:03d}" for i in range(len(df))])
        df.loc[5, "waiting"] = np.nan
        df.to_csv(tmp_path / "named.csv", index=False)
        script = run_main(tmp_path, "--data", "named.csv", "--columns", "eruptions,waiting",
                          "--id", "name", "--drop-missing", "--n-starts", "2", "--se-method",
                          "none", "--no-progress-tracking", "--output-dir", "out")
        assert script.returncode == 0, script.stderr
        res = fit(df, "gmm", 2, id="name", drop_missing=True, n_starts=2)
        assert res.model.columns == ["eruptions", "waiting"]
        post = res.posteriors
        assert post.index.name == "name" and "r005" not in post.index and len(post) == 271
        pd.testing.assert_frame_equal(post, _posteriors_csv(tmp_path / "out" / "posteriors.csv"),
                                      check_exact=True)
        by_position = fit(df.drop(columns="name"), "gmm", 2, drop_missing=True, n_starts=2)
        assert list(by_position.posteriors.index) == [i for i in range(272) if i != 5]


class TestClassification:
    def test_classification_is_fit_json_and_its_definitions(self, faithful_pair):
        """classification equals fit.json's; class_sizes and average_posterior follow their definitions."""
        out, res = faithful_pair
        assert _json(res.classification) == json.loads((out / "fit.json").read_text())["classification"]
        tau, w = res.predict_proba(), res.params["weight"]
        modal = tau.argmax(axis=1)
        sizes = res.class_sizes
        assert list(sizes.index) == [1, 2] and sizes.index.name == "class"
        np.testing.assert_allclose(sizes["count_weights"], 272 * w, rtol=1e-14)
        np.testing.assert_allclose(sizes["count_posteriors"], tau.sum(axis=0), rtol=1e-12)
        np.testing.assert_array_equal(sizes["count_modal"], np.bincount(modal, minlength=2))
        np.testing.assert_allclose(sizes["proportion_modal"], np.bincount(modal) / 272, rtol=1e-14)
        avepp = np.array([tau[modal == k].mean(axis=0) for k in range(2)])
        np.testing.assert_allclose(res.average_posterior.to_numpy(), avepp, rtol=1e-12)
        d = np.diag(avepp)
        np.testing.assert_allclose(sizes["avepp"], d, rtol=1e-12)
        np.testing.assert_allclose(sizes["odds_correct"], d / (1 - d) / (w / (1 - w)), rtol=1e-9)


class TestInferenceTable:
    def test_level_0_9_is_estimates_csv_and_scipys(self, faithful_pair):
        """inference_table(0.9) gives estimates.csv's cells; z, p and intervals match scipy by hand."""
        out, res = faithful_pair
        table = res.inference_table(0.9)
        with open(out / "estimates.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert [r["parameter"] for r in rows] == list(table.index)
        for row in rows:
            got = table.loc[row["parameter"]]
            for col in ("estimate", "se", "z", "p_value", "ci_lower", "ci_upper"):
                assert format_number(got[col]) == _csv_or_nan(row[col]), (row["parameter"], col)
        assert table.attrs["interval_method"] == "wald" and table.attrs["ci_level"] == 0.9
        assert table.attrs["se_method"] == "louis"
        q = norm.ppf(0.95)
        means = table.loc[[n for n in table.index if n.startswith("mean[")]]
        np.testing.assert_allclose(means["z"], means["estimate"] / means["se"], rtol=1e-14)
        np.testing.assert_allclose(means["p_value"], 2 * norm.sf(np.abs(means["z"])), rtol=1e-12)
        np.testing.assert_allclose(means["ci_lower"], means["estimate"] - q * means["se"], rtol=1e-14)
        w = table.loc["weight[1]"]
        assert np.isnan(w["z"]) and np.isnan(w["p_value"])
        half = q * w["se"] / (w["estimate"] * (1 - w["estimate"]))
        assert w["ci_lower"] == pytest.approx(expit(logit(w["estimate"]) - half), rel=1e-12)
        assert 0 < w["ci_lower"] < w["estimate"] < w["ci_upper"] < 1
        assert res.standard_errors("louis", ci_level=0.9).equals(table)

    def test_bootstrap_intervals_are_percentiles(self):
        """Bootstrap standard errors give percentile intervals: numpy's quantiles of the replicates."""
        res = fit("builtin:faithful", "gmm", 2, n_starts=2)
        table = res.standard_errors("bootstrap", n_bootstrap=6, ci_level=0.8)
        rep = res.se_result.replicates
        assert table.attrs["interval_method"] == "percentile" and rep.shape[1] == len(table)
        np.testing.assert_array_equal(table["ci_lower"], np.percentile(rep, 10, axis=0))
        np.testing.assert_array_equal(table["ci_upper"], np.percentile(rep, 90, axis=0))
        np.testing.assert_allclose(table["se"], rep.std(axis=0, ddof=1), rtol=1e-12)

    def test_boundary_probabilities_are_empty_as_in_estimates_csv(self, carcinoma_pair):
        """Carcinoma's 0/1 probabilities have no interval; every cell equals estimates.csv's at 0.9."""
        out, res = carcinoma_pair
        table = res.inference_table(0.9)
        with open(out / "estimates.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        for row in rows:
            got = table.loc[row["parameter"]]
            for col in ("estimate", "se", "z", "p_value", "ci_lower", "ci_upper"):
                assert format_number(got[col]) == _csv_or_nan(row[col]), (row["parameter"], col)
        edge = table[(table["estimate"] == 0) | (table["estimate"] == 1)]
        assert len(edge) > 0 and edge["ci_lower"].isna().all()
        inner = table.dropna(subset=["ci_lower"])
        assert ((inner["ci_lower"] > 0) & (inner["ci_upper"] < 1)).all()


class TestSummaries:
    def test_gmm_sds_and_correlations_are_fit_json(self, faithful_pair):
        """summaries()'s derived SDs and correlations are fit.json's and the covariances' by hand."""
        out, res = faithful_pair
        derived = res.summaries(ci_level=0.9)["derived"]
        assert _json(derived) == json.loads((out / "fit.json").read_text())["derived"]
        rows = {r["name"]: r for r in derived["rows"]}
        S = res.params["cov"][0]
        assert rows["sd[1,waiting]"]["estimate"] == pytest.approx(np.sqrt(S[1, 1]), rel=1e-14)
        assert rows["cor[1,eruptions,waiting]"]["estimate"] == pytest.approx(
            S[0, 1] / np.sqrt(S[0, 0] * S[1, 1]), rel=1e-14)
        se_var = res.inference_table().loc["cov[1,waiting,waiting]", "se"]
        assert rows["sd[1,waiting]"]["se"] == pytest.approx(se_var / (2 * np.sqrt(S[1, 1])), rel=1e-10)

    def test_lca_fit_and_bootstrap_are_fit_json_and_by_hand(self, carcinoma_pair):
        """LCA summaries with gof_bootstrap=3 equal fit.json's; G2, X2 (empty cells too) and df by hand."""
        out, res = carcinoma_pair
        got = _json(res.summaries(3, ci_level=0.9))
        saved = json.loads((out / "fit.json").read_text())
        for key in ("goodness_of_fit", "bivariate_residuals", "response_probabilities"):
            assert got[key] == saved[key], key
        gof = got["goodness_of_fit"]
        assert gof["bootstrap"]["n_bootstrap"] == 3
        patterns, first, counts = np.unique(res.data["Y"], axis=0, return_index=True,
                                            return_counts=True)
        logp = logsumexp(res.model.log_joint({"Y": res.data["Y"][first]}, res.params), axis=1)
        expected = 118 * np.exp(logp)
        assert gof["g2"] == pytest.approx(2 * np.sum(counts * np.log(counts / expected)), rel=1e-10)
        x2 = np.sum((counts - expected) ** 2 / expected) + (118 - expected.sum())
        assert gof["x2"] == pytest.approx(x2, rel=1e-9)
        assert (gof["df"], gof["df_polca"]) == (128 - 1 - 15, 118 - 15)
        assert "goodness_of_fit" in res.summaries() and "bootstrap" not in res.summaries()["goodness_of_fit"]


class TestFiguresAndFiles:
    def test_figures_are_the_scripts_pngs(self, faithful_pair):
        """figures() gives the script's PNG files, read back by matplotlib at their pixel size."""
        import matplotlib.image as mpimg

        out, res = faithful_pair
        figs = res.figures()
        assert list(figs) == ["scatter.png", "posterior.png"]
        for name, plot in figs.items():
            assert plot.png == (out / name).read_bytes() and plot.caption
            assert mpimg.imread(io.BytesIO(plot.png), format="png").shape[:2] == (plot.height, plot.width)

    def test_write_gives_the_scripts_files(self, faithful_pair, tmp_path):
        """write(ci_level=0.9) writes the script's files; formats, plots and lang choose the report and figures."""
        from src.utils.messages import get_language

        out, res = faithful_pair
        _same_files(out, tmp_path / "api", res.write(tmp_path / "api", ci_level=0.9, lang="en"))
        before = get_language()
        fewer = res.write(tmp_path / "api", formats=["md", "tex"], plots=False, lang="zh")
        assert (tmp_path / "api" / "report.md").read_text(encoding="utf-8").startswith("# 估计报告")
        assert get_language() == before
        names = sorted(Path(f).name for f in fewer)
        assert names == ["covariance.csv", "estimates.csv", "fit.json", "manifest.json",
                         "posteriors.csv", "report.md", "tables.tex"]
        assert sorted(p.name for p in (tmp_path / "api").iterdir()) == names

    def test_lca_write_with_the_gof_bootstrap(self, carcinoma_pair, tmp_path):
        """write(gof_bootstrap=3, ci_level=0.9) on carcinoma writes the script's files."""
        out, res = carcinoma_pair
        _same_files(out, tmp_path / "api",
                    res.write(tmp_path / "api", ci_level=0.9, gof_bootstrap=3, lang="en"))
