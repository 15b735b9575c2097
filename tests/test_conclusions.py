"""What a fit means, end to end through the main script (issue 10): the file set of each
family (gmm on the built-in data, lca on poLCA's carcinoma data, mixreg of waiting), per-row
posteriors, classification quality, LCA goodness of fit and bivariate residuals, GMM standard
deviations and correlations, figures, report forms and languages, a SIGKILL inside the
goodness-of-fit bootstrap of ``result_output``, two workers, and several K.

Every number is checked against an independent computation from the run's own
``estimates.csv`` and ``covariance.csv`` (scipy densities, the saturated table and two-way
tables counted by hand, closed-form delta-method derivatives), never against the code that
wrote it.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import shutil
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.special import logsumexp

from tests.helpers import (assert_same_files, check_rc, read_progress, results_dir,
                           run_script, skip_line)
from tests.inprocess import run_main

ROOT = Path(__file__).resolve().parents[1]
FAITHFUL = ROOT / "src" / "data" / "builtin" / "faithful.csv"
CARCINOMA = ROOT / "tests" / "reference" / "carcinoma.csv"
PNG = b"\x89PNG\r\n\x1a\n"

COMMON = ("--n-starts", "2", "--n-candidates", "4", "--se-method", "louis")
GMM = COMMON
#: LCA with an 8-replicate goodness-of-fit bootstrap, every replicate checkpointed
LCA = ("--model", "lca", "--data", str(CARCINOMA), *COMMON, "--gof-bootstrap", "8",
       "--save-interval", "0")
MIXREG = ("--model", "mixreg", "--target", "waiting", *COMMON)
ARGS = {"gmm": GMM, "lca": LCA, "mixreg": MIXREG}
FIGURES = {"gmm": ["posterior.png", "scatter.png"], "lca": ["posterior.png", "profile.png"],
           "mixreg": ["posterior.png", "regression.png"]}
FILES = ["covariance.csv", "estimates.csv", "fit.json", "manifest.json", "posteriors.csv",
         "report.html", "report.md"]
PHASES = ["data_preparation", "model_estimation", "standard_error_computation",
          "result_output"]


# ------------------------------------------------------------------ helpers
def estimates(folder: Path) -> dict[str, dict[str, str]]:
    with open(folder / "estimates.csv", newline="", encoding="utf-8") as fh:
        return {row["parameter"]: row for row in csv.DictReader(fh)}


def values(folder: Path) -> dict[str, float]:
    return {name: float(row["estimate"]) for name, row in estimates(folder).items()}


def covariance(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "covariance.csv", index_col=0)


def posteriors(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "posteriors.csv")


def fitj(folder: Path) -> dict:
    return json.loads((folder / "fit.json").read_text(encoding="utf-8"))


def softmax(log_joint: np.ndarray) -> np.ndarray:
    return np.exp(log_joint - logsumexp(log_joint, axis=1, keepdims=True))


def gmm_log_joint(est: dict[str, float], K: int) -> np.ndarray:
    """log w_k + log N(x; mu_k, Sigma_k) of the built-in data, by scipy."""
    frame = pd.read_csv(FAITHFUL)
    cols = list(frame.columns)
    X = frame.to_numpy(float)

    def cov(k, a, b):
        return est.get(f"cov[{k},{a},{b}]", est.get(f"cov[{k},{b},{a}]"))

    out = []
    for k in range(1, K + 1):
        mu = [est[f"mean[{k},{c}]"] for c in cols]
        S = [[cov(k, a, b) for b in cols] for a in cols]
        out.append(math.log(est[f"weight[{k}]"]) + stats.multivariate_normal(mu, S).logpdf(X))
    return np.column_stack(out)


def lca_items() -> pd.DataFrame:
    return pd.read_csv(CARCINOMA, dtype=str)


def lca_pattern_logprob(est: dict[str, float], K: int, answers: pd.DataFrame) -> np.ndarray:
    """log w_k + sum_j log P(item j = answer | k) of each row of ``answers`` (n, K)."""
    out = np.zeros((len(answers), K))
    for k in range(1, K + 1):
        out[:, k - 1] = math.log(est[f"weight[{k}]"])
        for item in answers.columns:
            with np.errstate(divide="ignore"):
                out[:, k - 1] += np.log([est[f"prob[{k},{item},{a}]"] for a in answers[item]])
    return out


def mixreg_log_joint(est: dict[str, float], K: int) -> np.ndarray:
    frame = pd.read_csv(FAITHFUL)
    x, y = frame["eruptions"].to_numpy(), frame["waiting"].to_numpy()
    return np.column_stack([
        math.log(est[f"weight[{k}]"]) + stats.norm.logpdf(
            y, est[f"coef[{k},intercept]"] + est[f"coef[{k},eruptions]"] * x, est[f"sigma[{k}]"])
        for k in range(1, K + 1)])


def expected_posteriors(family: str, folder: Path, K: int = 2) -> np.ndarray:
    est = values(folder)
    if family == "gmm":
        return softmax(gmm_log_joint(est, K))
    if family == "lca":
        return softmax(lca_pattern_logprob(est, K, lca_items()))
    return softmax(mixreg_log_joint(est, K))


def pngs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.png"))


# ----------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One uninterrupted run per family, each in its own folder: {family: working folder}."""
    base = tmp_path_factory.mktemp("conclusions")
    out = {}
    for family, args in ARGS.items():
        folder = base / family
        folder.mkdir()
        check_rc(run_main(folder, *args), 0)
        out[family] = folder
    return out


def copy_of(run: Path, dst: Path) -> Path:
    shutil.copytree(run, dst)
    return dst


# -------------------------------------------------------------------- tests
@pytest.mark.parametrize("family", ["gmm", "lca", "mixreg"])
class TestEachFamily:
    def test_file_set_and_figures(self, runs, family):
        """The results folder holds the tables, posteriors, reports and the family's PNG figures, each named in report.md and the manifest."""
        import matplotlib.image

        out = results_dir(runs[family])
        assert sorted(p.name for p in out.iterdir()) == sorted(FILES + FIGURES[family])
        manifest = json.loads((out / "manifest.json").read_text())["files"]
        report = (out / "report.md").read_text(encoding="utf-8")
        for name in FIGURES[family]:
            assert (out / name).read_bytes()[:8] == PNG
            image = matplotlib.image.imread(out / name)
            assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
            assert f"]({name})" in report and name in manifest

    def test_posteriors_are_the_rows_responsibilities(self, runs, family):
        """posteriors.csv has one row per used row in input order, the scipy posteriors of estimates.csv's parameters summing to one, and class = argmax + 1."""
        out = results_dir(runs[family])
        post, fit = posteriors(out), fitj(out)
        n = fit["n_obs"]
        assert list(post.columns) == ["row", "p1", "p2", "class"]
        assert len(post) == n == fit["rows"]["n_used"] and fit["rows"]["n_dropped"] == 0
        assert post["row"].tolist() == list(range(n))
        P = post[["p1", "p2"]].to_numpy()
        np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(post["class"].to_numpy(), P.argmax(axis=1) + 1)
        np.testing.assert_allclose(P, expected_posteriors(family, out), rtol=0, atol=1e-9)

    def test_classification_agrees_with_posteriors_csv(self, runs, family):
        """fit.json's counts three ways, AvePP, OCC, entropy and smallest class equal their definitions on posteriors.csv and the estimated weights."""
        out = results_dir(runs[family])
        post, cls = posteriors(out), fitj(out)["classification"]
        P, modal = post[["p1", "p2"]].to_numpy(), post["class"].to_numpy() - 1
        n, K = P.shape
        w = np.array([values(out)[f"weight[{k}]"] for k in (1, 2)])
        assert cls["n_obs"] == n and cls["n_components"] == K
        np.testing.assert_allclose(cls["counts"]["posteriors"], P.sum(axis=0), rtol=1e-12)
        assert cls["counts"]["modal"] == np.bincount(modal, minlength=K).tolist()
        np.testing.assert_allclose(cls["counts"]["weights"], n * w, rtol=1e-12)
        for how in ("weights", "posteriors", "modal"):
            np.testing.assert_allclose(cls["proportions"][how],
                                       np.asarray(cls["counts"][how]) / n, rtol=1e-12)
        avepp = np.array([P[modal == k].mean(axis=0) for k in range(K)])
        np.testing.assert_allclose(cls["average_posterior"], avepp, rtol=1e-10, atol=1e-15)
        d = np.diag(avepp)
        np.testing.assert_allclose(cls["odds_correct"], d / (1 - d) / (w / (1 - w)), rtol=1e-6)
        with np.errstate(divide="ignore", invalid="ignore"):
            plogp = np.where(P > 0, P * np.log(P), 0.0)
        assert cls["entropy"] == pytest.approx(1 + plogp.sum() / (n * math.log(K)), rel=1e-10)
        assert cls["smallest_class"] == pytest.approx(w.min(), rel=1e-15)


class TestLatentClassFit:
    def test_goodness_of_fit_by_hand(self, runs):
        """G2 and X2 against the saturated table of all 2^7 patterns (empty cells in X2), both dfs, no chi-square p on a sparse table, bootstrap p-values from the replicates."""
        out = results_dir(runs["lca"])
        gof, est = fitj(out)["goodness_of_fit"], values(out)
        items = lca_items()
        N = len(items)
        patterns = pd.DataFrame(list(itertools.product("12", repeat=items.shape[1])),
                                columns=items.columns)
        expected = N * np.exp(logsumexp(lca_pattern_logprob(est, 2, patterns), axis=1))
        observed = (items.agg("".join, axis=1).value_counts()
                    .reindex(patterns.agg("".join, axis=1), fill_value=0).to_numpy())
        seen = observed > 0
        g2 = 2 * np.sum(observed[seen] * np.log(observed[seen] / expected[seen]))
        x2 = np.sum((observed - expected) ** 2 / expected)
        assert gof["g2"] == pytest.approx(g2, rel=1e-9)
        assert gof["x2"] == pytest.approx(x2, rel=1e-9)
        assert (gof["n_cells"], gof["n_complete"], gof["n_params"]) == (128, N, 15)
        assert gof["df"] == 128 - 1 - 15 and gof["df_polca"] == min(N, 127) - 15
        assert gof["sparse"] and gof["p_value_g2"] is None and gof["p_value_x2"] is None
        boot = gof["bootstrap"]
        assert boot["n_bootstrap"] == boot["n_used"] == 8
        for stat in ("g2", "x2"):
            star = np.array(boot[f"{stat}_star"])
            assert len(star) == 8 and np.all(np.isfinite(star))
            p = (1 + np.sum(star >= gof[stat])) / (len(star) + 1)
            assert boot[f"p_value_{stat}"] == pytest.approx(p, rel=1e-15)

    def test_bivariate_residuals_by_hand(self, runs):
        """Each item pair's BVR is the Pearson X2 of its observed two-way table against the model-implied one, divided by its df."""
        out = results_dir(runs["lca"])
        bvr, est = fitj(out)["bivariate_residuals"], values(out)
        items = lca_items()
        N, w = len(items), [est["weight[1]"], est["weight[2]"]]
        pairs = {(p["item_1"], p["item_2"]): p for p in bvr["pairs"]}
        assert set(pairs) == set(itertools.combinations(items.columns, 2))
        for (a, b), pair in pairs.items():
            x2 = 0.0
            for u, v in itertools.product("12", repeat=2):
                e = N * sum(w[k - 1] * est[f"prob[{k},{a},{u}]"] * est[f"prob[{k},{b},{v}]"]
                            for k in (1, 2))
                o = np.sum((items[a] == u) & (items[b] == v))
                x2 += (o - e) ** 2 / e
            assert pair["df"] == 1 and pair["n"] == N
            assert pair["x2"] == pytest.approx(x2, rel=1e-8, abs=1e-10)
            assert pair["bvr"] == pytest.approx(x2, rel=1e-8, abs=1e-10)
        assert bvr["max_bvr"] == max(p["bvr"] for p in pairs.values())

    def test_response_probabilities_are_the_estimates(self, runs):
        """The class-by-item table holds estimates.csv's prob[k,item,code] for every item and code."""
        out = results_dir(runs["lca"])
        table, est = fitj(out)["response_probabilities"], values(out)
        assert table["classes"] == [1, 2]
        assert len(table["rows"]) == 7 * 2
        for row in table["rows"]:
            assert row["probs"] == [est[f"prob[{k},{row['item']},{row['category']}]"]
                                    for k in (1, 2)]

    def test_report_shows_each_probability_with_its_standard_error(self, runs):
        """report.md's response-probability table: each class's cell is the probability and,
        in brackets, its standard error as estimates.csv gives them (4 decimals), the
        probability alone where the SE is missing (on the boundary); the caption says so."""
        out = results_dir(runs["lca"])
        est = estimates(out)
        report = (out / "report.md").read_text(encoding="utf-8")
        section = report.split("## Response probabilities by class", 1)[1].split("\n## ", 1)[0]
        assert "standard error in brackets" in section
        cells = {}
        for line in section.splitlines():
            parts = [p.strip() for p in line.strip().strip("|").split("|")]
            if len(parts) == 4 and parts[0] not in ("item", "---", ":---") and \
                    not set(parts[0]) <= set("-:"):
                cells[parts[0], parts[1]] = parts[2:]
        assert len(cells) == 7 * 2
        both = alone = 0
        for (item, code), row in cells.items():
            for k, text in zip((1, 2), row):
                e = est[f"prob[{k},{item},{code}]"]
                p, se = float(e["estimate"]), float(e["se"]) if e["se"] else math.nan
                if math.isfinite(se):
                    assert text == f"{p:.4f} ({se:.4f})", (item, code, k, text)
                    both += 1
                else:
                    assert text == f"{p:.4f}", (item, code, k, text)
                    alone += 1
        assert both > 0


def test_gmm_sds_and_correlations_by_the_delta_method(runs):
    """derived holds sd = sqrt(var) and cor = cov / (sd sd) with SEs J C J' from covariance.csv's closed-form gradients and log-scale / Fisher-z intervals."""
    out = results_dir(runs["gmm"])
    derived, est, C = fitj(out)["derived"], values(out), covariance(out)
    z = stats.norm.ppf(0.975)
    rows = {r["name"]: r for r in derived["rows"]}
    assert derived["ci_level"] == 0.95 and len(rows) == 6
    for k in (1, 2):
        for col in ("eruptions", "waiting"):
            r, v = rows[f"sd[{k},{col}]"], f"cov[{k},{col},{col}]"
            sd = math.sqrt(est[v])
            se = math.sqrt(C.loc[v, v]) / (2 * sd)
            assert r["estimate"] == pytest.approx(sd, rel=1e-12)
            assert r["se"] == pytest.approx(se, rel=1e-8)
            assert r["ci_lower"] == pytest.approx(sd * math.exp(-z * se / sd), rel=1e-8)
            assert r["ci_upper"] == pytest.approx(sd * math.exp(z * se / sd), rel=1e-8)
        names = [f"cov[{k},eruptions,eruptions]", f"cov[{k},eruptions,waiting]",
                 f"cov[{k},waiting,waiting]"]
        a, c, b = (est[n] for n in names)
        rho = c / math.sqrt(a * b)
        grad = np.array([-rho / (2 * a), 1 / math.sqrt(a * b), -rho / (2 * b)])
        se = math.sqrt(grad @ C.loc[names, names].to_numpy() @ grad)
        r = rows[f"cor[{k},eruptions,waiting]"]
        assert r["estimate"] == pytest.approx(rho, rel=1e-12)
        assert r["se"] == pytest.approx(se, rel=1e-8)
        half = z * se / (1 - rho ** 2)
        assert r["ci_lower"] == pytest.approx(math.tanh(math.atanh(rho) - half), rel=1e-8)
        assert r["ci_upper"] == pytest.approx(math.tanh(math.atanh(rho) + half), rel=1e-8)
    fit = fitj(out)
    assert fit["interval_method"] == "wald" and fit["ci_level"] == 0.95


class TestOptionsOfTheOutput:
    def test_no_plots_removes_an_earlier_runs_figures(self, runs, tmp_path):
        """Rerun with --no-plots (no other flag), only result_output is rewritten: no PNG is left and the report shows no figure, the tables unchanged."""
        work = copy_of(runs["gmm"], tmp_path / "w")
        out, ref = results_dir(work), results_dir(runs["gmm"])
        assert pngs(out) == FIGURES["gmm"]
        again = run_main(work, *GMM, "--no-plots")
        check_rc(again, 0)
        for phase in PHASES:
            assert (skip_line(phase) in again.stdout) == (phase != "result_output")
        assert pngs(out) == []
        assert ".png" not in (out / "report.md").read_text() + (out / "report.html").read_text()
        for name in ("estimates.csv", "covariance.csv", "posteriors.csv"):
            assert (out / name).read_bytes() == (ref / name).read_bytes()

    def test_formats_md_tex(self, runs, tmp_path):
        """Rerun with --formats md,tex (no other flag) writes report.md and a booktabs tables.tex and removes report.html."""
        work = copy_of(runs["gmm"], tmp_path / "w")
        out = results_dir(work)
        again = run_main(work, *GMM, "--formats", "md,tex")
        check_rc(again, 0)
        assert skip_line("model_estimation") in again.stdout
        assert (out / "report.md").is_file() and not (out / "report.html").exists()
        tex = (out / "tables.tex").read_text(encoding="utf-8")
        assert "\\toprule" in tex and "\\bottomrule" in tex
        assert (out / "report.md").read_bytes() == (results_dir(runs["gmm"]) / "report.md").read_bytes()

    def test_chinese_report(self, runs, tmp_path):
        """--lang zh gives Chinese section titles in report.md and report.html, the same tables and posteriors."""
        check_rc(run_main(tmp_path, *GMM, "--lang", "zh"), 0)
        out, ref = results_dir(tmp_path), results_dir(runs["gmm"])
        md = (out / "report.md").read_text(encoding="utf-8")
        titles = [ln[3:] for ln in md.splitlines() if ln.startswith("## ")]
        assert {"拟合", "分类质量", "估计值", "图"} <= set(titles)
        assert all(any("\u4e00" <= ch <= "\u9fff" for ch in title) for title in titles), titles
        html = (out / "report.html").read_text(encoding="utf-8")
        assert "分类质量" in html and "Classification quality" not in html
        for name in ("estimates.csv", "covariance.csv", "posteriors.csv", *FIGURES["gmm"]):
            assert (out / name).read_bytes() == (ref / name).read_bytes()


class TestGoodnessOfFitBootstrapResume:
    def test_sigkill_inside_result_output_resumes_to_identical_files(self, runs, tmp_path):
        """Killed after 4 of 8 bootstrap replicates of result_output, the run resumes from the 5th to the uninterrupted run's files (fit.json but for timings)."""
        killed = run_script(tmp_path, *LCA, fault="kill:result_output:5")
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        saved = read_progress(tmp_path)
        assert saved["current_phase"] == "result_output"
        assert saved["completed_phases"] == PHASES[:3]
        state = saved["checkpoint"]
        assert state["phase"] == "result_output"
        assert len(state["state"]["value"]["replicates"]) == 4
        assert not results_dir(tmp_path).exists()
        resumed = run_main(tmp_path, *LCA)
        check_rc(resumed, 0)
        for phase in PHASES:
            assert (skip_line(phase) in resumed.stdout) == (phase != "result_output")
        # the replicates saved before the kill are kept: the first one reported is the 5th
        assert "G2/X2 replicates 5/8" in resumed.stdout, resumed.stdout
        assert "G2/X2 replicates 1/8" not in resumed.stdout
        assert_same_files(results_dir(tmp_path), results_dir(runs["lca"]))
        assert read_progress(tmp_path)["completed_phases"] == PHASES

    def test_output_only_change_refits_no_replicate(self, runs, tmp_path):
        """--ci-level after a completed run redoes result_output with the replicates it kept: a kill armed at its first replicate checkpoint never fires, and the bootstrap p-values are those of the first run; more replicates refit only the new ones."""
        work = copy_of(runs["lca"], tmp_path / "w")
        first = fitj(results_dir(work))["goodness_of_fit"]["bootstrap"]
        # write 1 starts the phase and the last completes it: a refit replicate would be write 2, one more write 3
        again = run_script(work, *LCA, "--ci-level", "0.9", fault="kill:result_output:3")
        check_rc(again, 0)
        assert fitj(results_dir(work))["goodness_of_fit"]["bootstrap"] == first
        ten = [("10" if a == "8" and b == "--gof-bootstrap" else a) for b, a in zip(("",) + LCA, LCA)]
        more = run_main(work, *ten, "--ci-level", "0.9")
        check_rc(more, 0)
        assert "G2/X2 replicates 9/10" in more.stdout and "G2/X2 replicates 1/10" not in more.stdout
        boot = fitj(results_dir(work))["goodness_of_fit"]["bootstrap"]
        assert boot["g2_star"][:8] == first["g2_star"]

    def test_two_workers_give_the_same_files(self, runs, tmp_path):
        """Starts, standard errors and the bootstrap replicates on 2 workers give the 1-worker files."""
        check_rc(run_main(tmp_path, *LCA, "--workers", "2"), 0)
        assert_same_files(results_dir(tmp_path), results_dir(runs["lca"]))


def test_several_k_each_folder_and_the_selected_on_top(tmp_path):
    """With --components 1-3 each k{K}/ has K posterior columns of the scipy posteriors, and the top-level posteriors, figures, estimates and classification are the selected K's."""
    check_rc(run_main(tmp_path, "--components", "1-3", *COMMON), 0)
    out = results_dir(tmp_path)
    with open(out / "enumeration.csv", newline="") as fh:
        selected = [int(r["k"]) for r in csv.DictReader(fh) if r["selected"] == "true"]
    assert len(selected) == 1
    sel = selected[0]
    for K in (1, 2, 3):
        sub = out / f"k{K}"
        post = posteriors(sub)
        assert list(post.columns) == ["row", *[f"p{k}" for k in range(1, K + 1)], "class"]
        P = post.iloc[:, 1:K + 1].to_numpy()
        assert len(post) == 272
        np.testing.assert_allclose(P, softmax(gmm_log_joint(values(sub), K)), rtol=0, atol=1e-9)
        assert pngs(sub) == FIGURES["gmm"]
        assert fitj(sub)["classification"]["n_components"] == K
    top, chosen = fitj(out), fitj(out / f"k{sel}")
    for key in ("classification", "rows", "derived"):
        assert top.get(key) == chosen.get(key)
    for name in ("posteriors.csv", "estimates.csv", *FIGURES["gmm"]):
        assert (out / name).read_bytes() == (out / f"k{sel}" / name).read_bytes()
    assert set(pngs(out)) == {"criteria.png", *FIGURES["gmm"]}
