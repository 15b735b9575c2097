"""Information criteria and classification statistics (src/selection/criteria.py) against
poLCA's published fits, scikit-learn's GaussianMixture and a direct computation.

poLCA's conventions (R/poLCA.R): ``npar = R * sum_j (K_j - 1) + (R - 1)``,
``aic = -2 llik + 2 npar``, ``bic = -2 llik + log(N) npar``.  Its carcinoma help page
publishes the maximised log-likelihoods (-317.2568, -293.705, -289.2858 for 2-4 classes);
the AIC and BIC poLCA prints for them are these formulas at those maxima, so they are
checked to the precision the published digits allow.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from src.estimation import fit_em
from src.models.gmm import GaussianMixtureModel
from src.models.lca import LatentClassModel
from src.selection.criteria import classification, criteria, information_criteria
from src.utils.rng import stream

REFERENCE = Path(__file__).parent / "reference"
FAITHFUL = Path(__file__).resolve().parents[1] / "src" / "data" / "builtin" / "faithful.csv"


def _gmm(K: int, covariance: str = "full"):
    X = pd.read_csv(FAITHFUL).to_numpy(dtype=float)
    model = GaussianMixtureModel(K, covariance=covariance)
    data, meta = GaussianMixtureModel.prepare_data(pd.read_csv(FAITHFUL), {})
    model.setup(meta)
    return model, data, X


class TestFormulas:
    def test_closed_forms(self):
        """AIC, BIC, SABIC and CAIC are the documented closed forms."""
        ic = information_criteria(-100.0, 7, 250)
        assert ic["aic"] == 214.0
        assert ic["bic"] == pytest.approx(200 + 7 * math.log(250), rel=1e-15)
        assert ic["sabic"] == pytest.approx(200 + 7 * math.log(252 / 24), rel=1e-15)
        assert ic["caic"] == pytest.approx(200 + 7 * (math.log(250) + 1), rel=1e-15)


class TestPoLCA:
    @pytest.mark.parametrize("K, published", [(2, -317.2568), (3, -293.705), (4, -289.2858)])
    def test_carcinoma_aic_bic(self, K, published):
        """Our parameter count is poLCA's npar and our AIC/BIC are poLCA's at its published maxima."""
        frame = pd.read_csv(REFERENCE / "carcinoma.csv", dtype=str)
        data, meta = LatentClassModel.prepare_data(frame, {})
        model = LatentClassModel(K)
        model.setup(meta)
        fit = fit_em(model, data, n_starts=10, tol=1e-12, max_iter=20000, seed=2,
                     accelerate="squarem")
        n, items = 118, 7
        npar = K * items * (2 - 1) + (K - 1)  # poLCA: R * sum(K_j - 1) + (R - 1)
        assert fit.n_params == model.n_free_parameters() == npar
        ours = criteria(model, data, fit.params, loglik=fit.loglik, n_params=fit.n_params)
        polca_aic = -2 * published + 2 * npar
        polca_bic = -2 * published + math.log(n) * npar
        half_ulp = 0.5 * 10.0 ** -len(str(published).split(".")[1])  # the printed digits
        assert abs(ours["aic"] - polca_aic) <= 2 * half_ulp + 1e-9
        assert abs(ours["bic"] - polca_bic) <= 2 * half_ulp + 1e-9


class TestScikitLearn:
    @staticmethod
    def _sklearn_mixture(model, params, covariance: str):
        from sklearn.mixture import GaussianMixture

        K = model.n_components
        gm = GaussianMixture(n_components=K, covariance_type=covariance)
        gm.weights_ = np.asarray(params["weight"])
        gm.means_ = np.asarray(params["mean"])
        if covariance == "full":
            cov = np.asarray(params["cov"])
            gm.precisions_cholesky_ = np.stack(
                [np.linalg.inv(np.linalg.cholesky(c)).T for c in cov])
        elif covariance == "diag":
            cov = np.asarray(params["cov"])
            gm.precisions_cholesky_ = 1.0 / np.sqrt(cov)
        else:
            cov = np.asarray(params["var"])
            gm.precisions_cholesky_ = 1.0 / np.sqrt(cov)
        gm.covariances_ = cov
        return gm

    @pytest.mark.parametrize("covariance", ["full", "diag", "spherical"])
    def test_bic_aic_equal_sklearn_on_the_same_solution(self, covariance):
        """GaussianMixture.bic/aic with its parameters set to our estimate equal ours."""
        model, data, X = _gmm(3, covariance)
        fit = fit_em(model, data, n_starts=3, seed=1, accelerate="squarem")
        gm = self._sklearn_mixture(model, fit.params, covariance)
        ours = criteria(model, data, fit.params, loglik=fit.loglik, n_params=fit.n_params)
        assert ours["bic"] == pytest.approx(gm.bic(X), rel=1e-10)
        assert ours["aic"] == pytest.approx(gm.aic(X), rel=1e-10)


class TestClassification:
    def test_icl_entropy_smallest_class_by_direct_computation(self):
        """ICL, relative entropy and smallest class equal a scipy computation of the posteriors."""
        model, data, X = _gmm(3)
        fit = fit_em(model, data, n_starts=3, seed=4, accelerate="squarem")
        p = fit.params
        log_dens = np.column_stack([np.log(p["weight"][k])
                                    + multivariate_normal(p["mean"][k], p["cov"][k]).logpdf(X)
                                    for k in range(3)])
        log_tau = log_dens - logsumexp(log_dens, axis=1, keepdims=True)
        n, ll = X.shape[0], float(logsumexp(log_dens, axis=1).sum())
        bic = -2 * ll + fit.n_params * math.log(n)
        icl = bic - 2 * log_tau.max(axis=1).sum()
        en = -(np.exp(log_tau) * log_tau).sum()
        ours = criteria(model, data, p, loglik=fit.loglik, n_params=fit.n_params, chunk_size=50)
        assert ours["icl"] == pytest.approx(icl, rel=1e-10)
        assert ours["entropy"] == pytest.approx(1 - en / (n * math.log(3)), rel=1e-9)
        assert ours["smallest_class"] == p["weight"].min()
        assert ours["icl"] >= ours["bic"]

    def test_chunks_do_not_change_the_sums(self):
        """Chunk sizes 1, 7 and all rows give the same entropy and modal sums."""
        model, data, _ = _gmm(2)
        params = model.init_params(data, stream(3, "test", 0))
        whole = classification(model, data, params, chunk_size=10**6)
        for size in (1, 7):
            part = classification(model, data, params, chunk_size=size)
            assert part["entropy_sum"] == pytest.approx(whole["entropy_sum"], rel=1e-12)
            assert part["modal_log_sum"] == pytest.approx(whole["modal_log_sum"], rel=1e-12)

    def test_one_class_has_no_entropy_and_icl_is_bic(self):
        """With K = 1 every posterior is 1: the entropy is undefined and ICL equals BIC."""
        model, data, _ = _gmm(1)
        fit = fit_em(model, data, n_starts=1, seed=1)
        ours = criteria(model, data, fit.params, loglik=fit.loglik, n_params=fit.n_params)
        assert ours["entropy"] is None
        assert ours["icl"] == ours["bic"] and ours["smallest_class"] == 1.0

    def test_certain_rows_give_entropy_one(self):
        """Classes far apart make every posterior 0 or 1: relative entropy 1, ICL = BIC."""
        rng = stream(5, "test", 1)
        X = np.concatenate([rng.normal(0, 1, (60, 1)), rng.normal(1e4, 1, (40, 1))])
        model = GaussianMixtureModel(2)
        data, meta = GaussianMixtureModel.prepare_data(pd.DataFrame(X, columns=["x"]), {})
        model.setup(meta)
        fit = fit_em(model, data, n_starts=2, seed=1)
        ours = criteria(model, data, fit.params, loglik=fit.loglik, n_params=fit.n_params)
        assert ours["entropy"] == pytest.approx(1.0, abs=1e-12)
        assert ours["icl"] == pytest.approx(ours["bic"], abs=1e-9)
        assert ours["smallest_class"] == pytest.approx(0.4, abs=1e-12)
