"""Coverage of 95% Louis-Wald intervals over 200 simulated two-component data sets.

Each data set (n=400, a 1-D two-component Gaussian mixture with known parameters) is fitted
by the real EM driver from the truth (so labels cannot switch) and every parameter's
interval is checked against the truth.  With 200 data sets the binomial standard error of a
95% coverage is sqrt(0.95 * 0.05 / 200) = 0.0154; each parameter's coverage must lie within
3 of them of 0.95, and the pooled coverage over the 5 free parameters too.
"""

from __future__ import annotations

import numpy as np
import pytest

from src.estimation.em import fit_em
from src.inference.louis import louis_se
from src.models.gmm import GaussianMixtureModel
from src.utils.rng import stream

TRUTH = {"weight": np.array([0.4, 0.6]), "mean": np.array([[-2.0], [2.0]]),
         "cov": np.array([[[1.0]], [[0.64]]])}
N_SETS, N_ROWS = 200, 400


def simulate(i: int) -> np.ndarray:
    rng = stream(2024, "coverage", i)
    z = rng.random(N_ROWS) < TRUTH["weight"][0]
    return np.where(z, rng.normal(-2.0, 1.0, N_ROWS), rng.normal(2.0, 0.8, N_ROWS))[:, None]


@pytest.mark.slow
def test_louis_wald_coverage():
    """95% Louis-Wald intervals cover the truth within 3 binomial SEs of 0.95, per parameter."""
    model = GaussianMixtureModel(2, covariance="full", reg_covar=0.0)
    model.setup(GaussianMixtureModel.meta_for_array(simulate(0)))
    truth = model.reported_values(TRUTH)
    free = model.reported_jacobian().any(axis=1)
    hits = np.zeros(truth.size)
    for i in range(N_SETS):
        X = simulate(i)
        model.setup(GaussianMixtureModel.meta_for_array(X))
        fit = fit_em(model, {"X": X}, init_params=TRUTH, tol=1e-9, max_iter=5000)
        assert fit.converged
        res = louis_se(model, {"X": X}, fit.params)
        assert np.all(np.isfinite(res.se))
        hits += (res.ci_lower <= truth) & (truth <= res.ci_upper)
    coverage = hits / N_SETS
    band = 3 * np.sqrt(0.95 * 0.05 / N_SETS)
    assert np.all(np.abs(coverage[free] - 0.95) <= band), dict(zip(model.reported_names(), coverage))
