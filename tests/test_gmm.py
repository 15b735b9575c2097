"""The Gaussian mixture against scikit-learn, closed forms and finite differences."""

from __future__ import annotations

import warnings

import numdifftools as nd
import numpy as np
import pandas as pd
import pytest
from sklearn.mixture import GaussianMixture
from sklearn.mixture._gaussian_mixture import _compute_precision_cholesky

import src.models.gmm as gmm_module
from src.data import load_table
from src.estimation import fit_em
from src.models.base import ModelWarning
from src.models.gmm import GaussianMixtureModel, gmm_n_free_parameters
from src.utils.errors import DataError
from src.utils.messages import set_language
from src.utils.rng import stream

COV_TYPES = ["full", "diag", "spherical"]
COV_KEY = {"full": "cov", "diag": "cov", "spherical": "var"}


@pytest.fixture(autouse=True)
def english():
    set_language("en")
    yield
    set_language(None)


def clusters(n: int = 400, D: int = 3, K: int = 3, seed: int = 0, spread: float = 3.0) -> np.ndarray:
    """Rows from K Gaussian clusters with random correlations (test data)."""
    rng = stream(seed, "test-data")
    centres = rng.normal(0.0, spread, (K, D))
    z = rng.integers(0, K, n)
    A = rng.normal(size=(K, D, D)) * 0.5 + np.eye(D)
    return centres[z] + np.einsum("nd,nde->ne", rng.normal(size=(n, D)), A[z])


def model_for(X: np.ndarray, K: int, cov: str, **options) -> tuple[GaussianMixtureModel, dict]:
    model = GaussianMixtureModel(K, covariance=cov, **options)
    model.setup(model.meta_for_array(X))
    return model, {"X": X}


def to_sklearn(params: dict, cov: str, reg_covar: float = 1e-6) -> GaussianMixture:
    K = params["weight"].size
    gm = GaussianMixture(K, covariance_type=cov, reg_covar=reg_covar)
    gm.weights_ = params["weight"].copy()
    gm.means_ = params["mean"].copy()
    gm.covariances_ = params[COV_KEY[cov]].copy()
    gm.precisions_cholesky_ = _compute_precision_cholesky(gm.covariances_, cov)
    return gm


def em_steps(model, data, params, n_steps):
    """Plain EM through e_step_stats/m_step; returns final params and log-likelihoods."""
    lls = []
    for _ in range(n_steps):
        stats, ll = model.e_step_stats(data, params)
        lls.append(ll)
        params = model.m_step(stats)
    return params, lls


class TestAgainstScikitLearn:
    @pytest.mark.parametrize("cov", COV_TYPES)
    @pytest.mark.parametrize("reg_covar", [1e-6, 1e-2])
    def test_one_em_step_and_loglik_match(self, cov, reg_covar):
        """From the same parameters, one E+M step and the log-likelihood equal scikit-learn's."""
        X = clusters()
        model, data = model_for(X, 3, cov, reg_covar=reg_covar)
        params = model.init_params(data, stream(1, "start", 0))
        params, _ = em_steps(model, data, params, 3)  # an iterate away from the start
        gm = to_sklearn(params, cov, reg_covar)
        ll_sklearn = gm.score(X) * X.shape[0]
        stats, ll = model.e_step_stats(data, params)
        assert ll == pytest.approx(ll_sklearn, rel=1e-8)
        assert model.loglik(data, params) == pytest.approx(ll_sklearn, rel=1e-8)
        _, log_resp = gm._e_step(X)
        gm._m_step(X, log_resp)
        new = model.m_step(stats)
        np.testing.assert_allclose(new["weight"], gm.weights_, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(new["mean"], gm.means_, rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(new[COV_KEY[cov]], gm.covariances_, rtol=1e-8, atol=1e-10)

    def test_log_joint_matches_weighted_log_prob(self):
        """log p(x, z=k) equals scikit-learn's weighted log-probabilities on Old Faithful."""
        frame, _ = load_table(None)
        model = GaussianMixtureModel(2)
        data, meta = model.prepare_data(frame, {})
        model.setup(meta)
        params = model.init_params(data, stream(3, "start", 0))
        expected = to_sklearn(params, "full")._estimate_weighted_log_prob(data["X"])
        np.testing.assert_allclose(model.log_joint(data, params), expected, rtol=1e-10)

    @pytest.mark.parametrize("cov", COV_TYPES)
    def test_best_of_starts_reaches_sklearn_maximum_on_faithful(self, cov):
        """On Old Faithful (K=2) our random starts reach scikit-learn's fitted maximum."""
        frame, _ = load_table(None)
        model = GaussianMixtureModel(2, covariance=cov)
        data, meta = model.prepare_data(frame, {})
        model.setup(meta)
        best = max(em_steps(model, data, model.init_params(data, stream(0, "start", s)), 400)[1][-1]
                   for s in range(4))
        gm = GaussianMixture(2, covariance_type=cov, reg_covar=1e-6, tol=1e-12, max_iter=2000,
                             n_init=4, random_state=0).fit(data["X"])
        assert best == pytest.approx(gm.score(data["X"]) * 272, rel=1e-9)

    def test_parameter_count_matches(self):
        """The free-parameter count equals scikit-learn's for every covariance type."""
        for cov in COV_TYPES:
            model, _ = model_for(clusters(n=20, D=4), 3, cov)
            gm = GaussianMixture(3, covariance_type=cov)
            gm.means_ = np.zeros((3, 4))
            assert model.n_free_parameters() == gm._n_parameters() == gmm_n_free_parameters(3, 4, cov)


class TestClosedForms:
    @pytest.mark.parametrize("cov", COV_TYPES)
    def test_one_class_is_sample_mean_and_ml_covariance(self, cov):
        """With one class, one M-step gives the sample mean and the ML (1/n) covariance."""
        X = clusters(n=300, D=3, K=2)
        model, data = model_for(X, 1, cov, reg_covar=0.0)
        params = model.init_params(data, stream(0, "start", 0))
        fitted, _ = em_steps(model, data, params, 1)
        S = np.cov(X, rowvar=False, bias=True)
        np.testing.assert_allclose(fitted["mean"][0], X.mean(axis=0), rtol=1e-12)
        expected = {"full": S, "diag": np.diag(S), "spherical": np.trace(S) / 3}[cov]
        np.testing.assert_allclose(fitted[COV_KEY[cov]][0], expected, rtol=1e-10)
        assert fitted["weight"][0] == pytest.approx(1.0)

    @pytest.mark.parametrize("cov", COV_TYPES)
    def test_far_from_zero_data_keep_their_digits(self, cov):
        """Data shifted by 1e8 give the same estimates (centred statistics)."""
        X = clusters(n=300, D=2, K=2, spread=4.0)
        shift = 1e8
        model, data = model_for(X, 2, cov)
        model_s, data_s = model_for(X + shift, 2, cov)
        start = model.init_params(data, stream(5, "start", 0))
        start_s = {k: v.copy() for k, v in start.items()}
        start_s["mean"] = start_s["mean"] + shift
        a, _ = em_steps(model, data, start, 30)
        b, _ = em_steps(model_s, data_s, start_s, 30)
        np.testing.assert_allclose(b["mean"] - shift, a["mean"], atol=1e-6)
        np.testing.assert_allclose(b[COV_KEY[cov]], a[COV_KEY[cov]], rtol=1e-6)
        np.testing.assert_allclose(b["weight"], a["weight"], rtol=1e-6)

    @pytest.mark.parametrize("cov", COV_TYPES)
    def test_em_never_lowers_the_loglik(self, cov):
        """Over 50 EM steps on overlapping clusters the log-likelihood never decreases."""
        X = clusters(n=500, D=3, K=4, spread=1.5, seed=2)
        model, data = model_for(X, 4, cov)
        params = model.init_params(data, stream(2, "start", 1))
        _, lls = em_steps(model, data, params, 50)
        steps = np.diff(lls)
        assert np.all(steps >= -1e-10 * np.abs(lls[1:])), steps.min()
        assert lls[-1] > lls[0] + 1.0  # it really moved

    @pytest.mark.parametrize("cov", COV_TYPES)
    def test_statistics_add_over_chunks_and_blocks(self, cov, monkeypatch):
        """Statistics of two chunks add up to those of all rows, whatever the block size."""
        X = clusters(n=101)
        model, data = model_for(X, 3, cov)
        params = model.init_params(data, stream(0, "start", 2))
        whole, ll = model.e_step_stats(data, params)
        first, ll1 = model.e_step_stats({"X": X[:40]}, params)
        second, ll2 = model.e_step_stats({"X": X[40:]}, params)
        monkeypatch.setattr(gmm_module, "_BLOCK", 7)
        blocked, llb = model.e_step_stats(data, params)
        resp, _ = model.e_step(data, params)
        direct = model.suff_stats(data, resp)
        assert ll1 + ll2 == pytest.approx(ll, rel=1e-13) and llb == pytest.approx(ll, rel=1e-13)
        for key in whole:
            np.testing.assert_allclose(first[key] + second[key], whole[key], rtol=1e-11, atol=1e-11)
            np.testing.assert_allclose(blocked[key], whole[key], rtol=1e-11, atol=1e-11)
            np.testing.assert_allclose(direct[key], whole[key], rtol=1e-11, atol=1e-11)


class TestDerivatives:
    @staticmethod
    def setup_case(cov, K=3, D=3, n=25):
        X = clusters(n=n, D=D, K=K, seed=4)
        model, data = model_for(X, K, cov)
        params, _ = em_steps(model, data, model.init_params(data, stream(4, "start", 0)), 5)
        return model, data, params

    @pytest.mark.parametrize("cov", COV_TYPES)
    def test_score_matches_finite_differences(self, cov):
        """The analytic complete-data score equals central differences of log_joint."""
        model, data, params = self.setup_case(cov)
        theta = model.to_free(params)
        score = model.complete_score(data, params)
        assert score.shape == (25, 3, theta.size)
        numeric = np.empty_like(score)
        for p in range(theta.size):
            h = 1e-6 * max(1.0, abs(theta[p]))
            up, down = theta.copy(), theta.copy()
            up[p] += h
            down[p] -= h
            numeric[:, :, p] = (model.log_joint(data, model.from_free(up))
                                - model.log_joint(data, model.from_free(down))) / (2 * h)
        np.testing.assert_allclose(score, numeric, rtol=1e-5, atol=1e-6)

    @pytest.mark.parametrize("cov", COV_TYPES)
    def test_information_matches_numerical_hessian(self, cov):
        """The complete information equals minus the numerical Hessian of sum resp * log_joint."""
        model, data, params = self.setup_case(cov, K=2, D=2, n=30)
        resp, _ = model.e_step(data, params)
        theta = model.to_free(params)

        def weighted(th):
            return float((resp * model.log_joint(data, model.from_free(th))).sum())

        numeric = -nd.Hessian(weighted, step=1e-4)(theta)
        info = model.complete_information(data, params, resp)
        np.testing.assert_allclose(info, info.T, atol=1e-12)
        np.testing.assert_allclose(info, numeric, rtol=1e-5, atol=1e-5 * np.abs(numeric).max())

    @pytest.mark.parametrize("cov", COV_TYPES)
    def test_weight_parts_are_the_base_class_ones(self, cov):
        """The class-weight parts of the score, the information and the score maps are exactly MixtureModel.weight_score and weight_information."""
        model, data, params = self.setup_case(cov)
        resp, _ = model.e_step(data, params)
        K = model.n_components
        ws = model.weight_score(params)
        score = model.complete_score(data, params)[:, :, :K - 1]
        assert np.array_equal(score, np.broadcast_to(ws, score.shape))
        info = model.complete_information(data, params, resp)
        assert np.array_equal(info[:K - 1, :K - 1], model.weight_information(params, resp.sum(axis=0)))
        assert np.array_equal(model._score_maps(params)[:, :K - 1, 0], ws)

    def test_an_empty_class_at_weight_zero_adds_no_weight_information(self):
        """A last class of weight 0 with no responsibility mass adds 0 to the weight information, not NaN."""
        model, data, params = self.setup_case("full")
        params = {**params, "weight": np.array([0.25, 0.75, 0.0])}
        resp = np.zeros((data["X"].shape[0], 3))
        resp[::2, 0] = resp[1::2, 1] = 1.0
        nk = resp.sum(axis=0)
        info = model.complete_information(data, params, resp)
        assert np.isfinite(info).all()
        np.testing.assert_array_equal(info[:2, :2], np.diag(nk[:2] / params["weight"][:2] ** 2))

    def test_information_adds_over_row_subsets(self):
        """The information of all rows is the sum over two subsets (chunk-friendly)."""
        model, data, params = self.setup_case("full")
        resp, _ = model.e_step(data, params)
        whole = model.complete_information(data, params, resp)
        parts = (model.complete_information({"X": data["X"][:10]}, params, resp[:10])
                 + model.complete_information({"X": data["X"][10:]}, params, resp[10:]))
        np.testing.assert_allclose(parts, whole, rtol=1e-10, atol=1e-10)


class TestParameters:
    def test_names(self):
        """Reported names follow the documented scheme for each covariance type, by column name (x1, x2 without names)."""
        X = clusters(n=20, D=2, K=2)
        names = {cov: model_for(X, 2, cov)[0].reported_names() for cov in COV_TYPES}
        head = ["weight[1]", "weight[2]", "mean[1,x1]", "mean[1,x2]", "mean[2,x1]", "mean[2,x2]"]
        assert names["full"] == head + ["cov[1,x1,x1]", "cov[1,x1,x2]", "cov[1,x2,x2]",
                                        "cov[2,x1,x1]", "cov[2,x1,x2]", "cov[2,x2,x2]"]
        assert names["diag"] == head + ["cov[1,x1,x1]", "cov[1,x2,x2]", "cov[2,x1,x1]",
                                        "cov[2,x2,x2]"]
        assert names["spherical"] == head + ["var[1]", "var[2]"]

    @pytest.mark.parametrize("cov", COV_TYPES)
    def test_free_and_reported_are_consistent(self, cov):
        """to_free/from_free round-trip; free names, values and the Jacobian agree."""
        X = clusters(n=50, D=3)
        model, data = model_for(X, 3, cov)
        params = model.init_params(data, stream(0, "start", 0))
        theta = model.to_free(params)
        back = model.from_free(theta)
        for key in params:
            np.testing.assert_allclose(back[key], params[key], rtol=1e-15, atol=1e-15)
        free_names = model.free_names()
        assert len(free_names) == theta.size == model.n_free_parameters()
        reported = dict(zip(model.reported_names(), model.reported_values(params)))
        assert [reported[n] for n in free_names] == pytest.approx(list(theta))
        J = model.reported_jacobian()
        assert model.reported_values(params) == pytest.approx(
            J @ theta + np.isin(model.reported_names(), ["weight[3]"]).astype(float))
        assert "weight[3]" not in free_names and "weight[3]" in reported

    def test_canonical_order(self):
        """Classes sort by the first column's mean, ties broken by the second column."""
        model, _ = model_for(clusters(n=20, D=2), 3, "spherical")
        params = {"weight": np.array([0.2, 0.3, 0.5]),
                  "mean": np.array([[1.0, 5.0], [-2.0, 0.0], [1.0, -1.0]]),
                  "var": np.array([1.0, 2.0, 3.0])}
        perm = model.canonical_order(params)
        assert list(perm) == [1, 2, 0]
        ordered = model.permute(params, perm)
        assert list(ordered["var"]) == [2.0, 3.0, 1.0]

    def test_options_are_checked(self):
        """An unknown covariance type or a negative reg_covar is a one-sentence ValueError."""
        with pytest.raises(ValueError, match="covariance must be one of"):
            GaussianMixtureModel(2, covariance="tied")
        with pytest.raises(ValueError, match="reg_covar"):
            GaussianMixtureModel(2, reg_covar=-1)
        with pytest.raises(ValueError, match="n_components"):
            GaussianMixtureModel(0)


class TestStartsAndSimulation:
    @pytest.mark.parametrize("cov", COV_TYPES)
    def test_init_is_valid_distinct_and_reproducible(self, cov):
        """Random starts are valid, use distinct rows, and repeat with the same stream."""
        X = np.repeat(clusters(n=30), 5, axis=0)  # many duplicated rows
        model, data = model_for(X, 4, cov)
        a = model.init_params(data, stream(9, "start", 3))
        b = model.init_params(data, stream(9, "start", 3))
        assert model.in_parameter_space(a)
        assert len(np.unique(a["mean"], axis=0)) == 4
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])

    def test_start_features_are_standardised_columns(self):
        """The features the data-driven starts cluster are the columns as z-scores (scikit-learn's StandardScaler)."""
        from sklearn.preprocessing import StandardScaler

        X = clusters(n=50) * [1.0, 100.0, 0.01]
        model, data = model_for(X, 2, "full")
        np.testing.assert_allclose(model.start_features(data), StandardScaler().fit_transform(X),
                                   rtol=1e-12, atol=1e-12)

    @pytest.mark.parametrize("cov", COV_TYPES)
    def test_sample_reproduces_the_parameters(self, cov):
        """Simulated data have the model's weights, means and covariances (large sample)."""
        model, _ = model_for(clusters(n=20, D=2), 2, cov)
        params = {"weight": np.array([0.3, 0.7]), "mean": np.array([[-10.0, 0.0], [10.0, 5.0]])}
        covs = {"full": np.array([[[2.0, 0.8], [0.8, 1.0]], [[1.0, -0.3], [-0.3, 0.5]]]),
                "diag": np.array([[2.0, 1.0], [1.0, 0.5]]), "spherical": np.array([2.0, 0.5])}
        params[COV_KEY[cov]] = covs[cov]
        template = {"X": np.zeros((20000, 2))}
        sim = model.sample(params, template, stream(0, "bootstrap", 0))["X"]
        again = model.sample(params, template, stream(0, "bootstrap", 0))["X"]
        np.testing.assert_array_equal(sim, again)
        assert sim.shape == (20000, 2)
        left = sim[:, 0] < 0
        assert left.mean() == pytest.approx(0.3, abs=0.015)
        np.testing.assert_allclose(sim[left].mean(axis=0), [-10.0, 0.0], atol=0.1)
        full = {"full": covs["full"][0], "diag": np.diag(covs["diag"][0]),
                "spherical": 2.0 * np.eye(2)}[cov]
        np.testing.assert_allclose(np.cov(sim[left], rowvar=False), full, atol=0.15)


class TestDegenerateComponents:
    def test_empty_component_warns_and_stays_valid(self):
        """A class with no responsibility gets a warning naming it and valid parameters."""
        X = clusters(n=60, D=2, K=2)
        model, data = model_for(X, 3, "full")
        resp = np.zeros((60, 3))
        resp[:30, 0] = 1.0
        resp[30:, 1] = 1.0
        with pytest.warns(ModelWarning, match="component 3 has almost no rows"):
            params = model.m_step(model.suff_stats(data, resp))
        assert model.in_parameter_space(params)
        assert np.isfinite(model.loglik(data, params))

    @pytest.mark.parametrize("cov", COV_TYPES)
    def test_collapsed_component_warns_and_stays_valid(self, cov):
        """A class sitting on one repeated point warns (with advice) and stays valid."""
        X = np.vstack([clusters(n=50, D=2, K=1), np.full((5, 2), 3.0)])
        model, data = model_for(X, 2, cov)
        resp = np.zeros((55, 2))
        resp[:50, 0] = 1.0
        resp[50:, 1] = 1.0
        with pytest.warns(ModelWarning, match="component 2 has collapsed.*increase reg_covar"):
            params = model.m_step(model.suff_stats(data, resp))
        assert model.in_parameter_space(params)

    @staticmethod
    def collapsed(cov, scatter="roundoff", scale=1.0, reg_covar=0.0):
        """Class 1: 50 spread rows; class 2: 5 copies of one point, its scatter exactly zero
        (integer rows around a zero mean) or zero plus rounding (the point off the mean)."""
        if scatter == "roundoff":
            X = np.vstack([clusters(n=50, D=2, K=1), np.full((5, 2), 3.0)])
        else:
            Y = np.round(clusters(n=25, D=2, K=1) * 4)
            X = np.vstack([Y, -Y, np.zeros((5, 2))])
        X = X * scale
        model, data = model_for(X, 2, cov, reg_covar=reg_covar)
        resp = np.zeros((55, 2))
        resp[:50, 0] = 1.0
        resp[50:, 1] = 1.0
        return model, data, model.suff_stats(data, resp)

    @pytest.mark.parametrize("scatter", ["roundoff", "zero"])
    @pytest.mark.parametrize("cov", COV_TYPES)
    def test_singular_without_regularisation_is_repaired(self, cov, scatter):
        """With reg_covar=0 a collapsed class is ridged with a warning, whether its scatter is exactly zero or rounding."""
        model, data, stats = self.collapsed(cov, scatter)
        with pytest.warns(ModelWarning, match="component 2 has a singular covariance even after "
                                              "adding reg_covar=0") as record:
            params = model.m_step(stats)
        assert len(record) == 1
        assert model.in_parameter_space(params)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert np.isfinite(model.loglik(data, params))
        # ridged up to 1e-9 of the data's variances (the smallest scaled eigenvalue)
        var = data["X"].var(axis=0)
        c = params[COV_KEY[cov]][1]
        scaled = {"full": lambda: np.linalg.eigvalsh(c / np.sqrt(np.outer(var, var)))[0],
                  "diag": lambda: np.min(c / var), "spherical": lambda: c / var.mean()}[cov]()
        assert scaled == pytest.approx(1e-9, rel=1e-4)

    @pytest.mark.parametrize("cov", COV_TYPES)
    def test_collapse_is_judged_in_the_data_units(self, cov):
        """Rescaling the data by 1e-6 or 1e6 gives the same warning and a covariance scaled by the square."""
        ref = None
        for scale in (1e-6, 1.0, 1e6):
            model, data, stats = self.collapsed(cov, "roundoff", scale=scale)
            with warnings.catch_warnings(record=True) as record:
                warnings.simplefilter("always")
                params = model.m_step(stats)
            got = ([str(w.message) for w in record], params[COV_KEY[cov]] / scale ** 2)
            if ref is None:
                ref = got
            assert got[0] == ref[0] and len(got[0]) == 1
            # rounding of the collapsed scatter (1e-15 of the data's variance) differs with the units
            np.testing.assert_allclose(got[1], ref[1], rtol=1e-6, atol=1e-13)

    def test_linearly_dependent_columns_start_ridged(self):
        """With a column the exact sum of two others and reg_covar=0, starts are ridged on the data's scale and EM warns instead of failing."""
        Y = np.round(clusters(n=64, D=2, K=2) * 8)      # integers, 64 rows: exact moments
        X = np.column_stack([Y, Y[:, 0] + Y[:, 1]])
        model, data = model_for(X, 2, "full", reg_covar=0.0)
        start = model.init_params(data, stream(0, "start", 0))
        var = X.var(axis=0)
        scaled = np.linalg.eigvalsh(start["cov"][0] / np.sqrt(np.outer(var, var)))[0]
        assert scaled == pytest.approx(1e-9, rel=1e-3)
        fit = fit_em(model, data, n_starts=2, seed=0, max_iter=50)
        assert fit.warnings and all("singular covariance even after adding reg_covar=0" in w
                                    for w in fit.warnings if "did not converge" not in w)

    def test_reg_covar_negligible_for_the_units_is_not_enough(self):
        """reg_covar=1e-6 on data in units of 1e6 cannot keep a collapsed class valid: it is ridged, and the warning says so."""
        model, data, stats = self.collapsed("full", "roundoff", scale=1e6, reg_covar=1e-6)
        with pytest.warns(ModelWarning, match="component 2 has a singular covariance even after "
                                              "adding reg_covar=1e-06"):
            params = model.m_step(stats)
        assert np.linalg.eigvalsh(params["cov"][1])[0] > 1e-10 * np.diag(params["cov"][0]).min()


class TestPrepareData:
    def test_faithful(self):
        """Old Faithful becomes a 272 x 2 matrix with column names and means as the shift."""
        frame, _ = load_table(None)
        data, meta = GaussianMixtureModel.prepare_data(frame, {"n_components": 2})
        assert data["X"].shape == (272, 2) and data["X"].dtype == np.float64
        assert meta["columns"] == ["eruptions", "waiting"]
        assert meta["shift"] == pytest.approx(list(frame.mean()))

    def test_constant_missing_and_too_few_rows(self):
        """A constant column, missing values and too few rows are DataErrors (exit 2)."""
        frame = pd.DataFrame({"a": [1.0, 2.0, 3.0, np.nan], "b": [5.0, 5.0, 5.0, 1.0]})
        with pytest.raises(DataError, match="use --drop-missing") as err:
            GaussianMixtureModel.prepare_data(frame, {"source": "t.csv"})
        assert err.value.exit_code == 2
        with pytest.raises(DataError, match="'b' of t.csv is constant"):
            GaussianMixtureModel.prepare_data(frame, {"source": "t.csv", "drop_missing": True})
        ok = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [1.0, 0.0, 2.0, 5.0]})
        data, meta = GaussianMixtureModel.prepare_data(ok, {})
        assert data["X"].shape == (4, 2)
        with pytest.raises(DataError, match="4 usable rows but the model has 11 free parameters"):
            GaussianMixtureModel.prepare_data(ok, {"n_components": 2})

    def test_setup_is_required(self):
        """Using the model before setup says what to call."""
        with pytest.raises(ValueError, match="call setup"):
            GaussianMixtureModel(2).param_specs()
