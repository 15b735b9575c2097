"""Tests of the notebook API: fit() on arrays and frames, results object, predictions,
options checked like the script's, and the same numbers as the script."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import multivariate_normal, poisson

from src.api import MixtureResults, fit, run
from src.output.writers import format_number
from src.utils.errors import UsageError
from src.utils.rng import stream
from tests.inprocess import run_main
from tests.test_em import PoissonMixture

FAITHFUL = Path(__file__).resolve().parents[1] / "src" / "data" / "builtin" / "faithful.csv"


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
        """fit(components="1-3") gives the script's enumeration.csv values, selected K and fits."""
        from src.api import Enumeration

        args = ("--n-starts", "2", "--n-candidates", "4", "--blrt", "5")
        res = run_main(tmp_path, "--components", "1-3", *args, "--se-method", "none",
                       "--no-progress-tracking", "--output-dir", "out")
        assert res.returncode == 0, res.stderr
        with open(tmp_path / "out" / "enumeration.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        enum = fit(pd.read_csv(FAITHFUL), "gmm", components="1-3", n_starts=2, n_candidates=4,
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
