"""Monte-Carlo study of three-step estimation: known covariate effects, naive vs BCH vs ML.

Replication ``r``: N rows, K = 3 latent classes, 6 binary items (class-conditional
probabilities 0.8/0.2 in three patterns: a moderate separation, relative entropy about 0.6),
one covariate ``z ~ N(0, 1)`` with class membership a multinomial logit (class 1 the
reference) of true slopes ``TRUE_SLOPES``.  The measurement model is fitted by EM from the
truth (one start, so the classes keep the truth's labels, as usual in simulation studies;
then aligned to it), its covariance by Louis' method; step 3 by each correction with its
corrected (Bakk-Oberski-Vermunt) standard errors.  Everything from ``stream(seed, "sim", r)``.

Run ``python -m tests.structural_simulation 200`` for the table of docs/structural.md.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd

from src.estimation.em import fit_em
from src.inference.align import align_params
from src.inference.louis import louis_se
from src.models import logit
from src.models.lca import LatentClassModel
from src.structural.corrected import corrected_covariance
from src.structural.data import StructuralData
from src.structural.run import three_step
from src.utils.rng import stream

__all__ = ["TRUE_BETA", "TRUE_SLOPES", "replicate", "study"]

TRUE_BETA = np.array([[0.0, 0.0], [0.5, 1.0], [0.0, -1.0]])   # (K, intercept + slope)
TRUE_SLOPES = TRUE_BETA[1:, 1]
ITEMS = np.array([[.8] * 6, [.2] * 6, [.8, .8, .8, .2, .2, .2]])
CORRECTIONS = ("none", "bch", "ml")


def replicate(r: int, n: int = 1000, seed: int = 20261202) -> dict[str, np.ndarray]:
    """``{correction: (slopes (2,), corrected SEs (2,))}`` of replication ``r``."""
    rng = stream(seed, "sim", r)
    z = rng.normal(size=n)
    Z = np.c_[np.ones(n), z]
    p = logit.probabilities(Z, TRUE_BETA)
    x = (rng.random(n)[:, None] > p.cumsum(1)[:, :-1]).sum(1)
    Y = (rng.random((n, ITEMS.shape[1])) < ITEMS[x]).astype(int)
    frame = pd.DataFrame(Y.astype(str), columns=[f"i{j}" for j in range(Y.shape[1])])
    data, meta = LatentClassModel.prepare_data(frame, {"source": "simulation"})
    model = LatentClassModel(3)
    model.setup(meta)
    # the truth in the model's coding (codes "0", "1" in that order), weights at the mean
    truth = {"weight": p.mean(0), "prob": np.stack([1 - ITEMS, ITEMS], axis=2)}
    fit = fit_em(model, data, n_starts=1, seed=seed, init_params=truth, tol=1e-10,
                 max_iter=5000)
    params = align_params(model, truth, fit.params)
    cov1 = louis_se(model, data, params).cov_free
    sdata = StructuralData.from_frame(pd.DataFrame({"z": z}), "covariates")
    out = {}
    for correction in CORRECTIONS:
        res = three_step(model, data, params, sdata, correction=correction)
        sm = sdata.model(3, correction)
        cov, _ = corrected_covariance(model, data, params, sdata, sm, res["theta"],
                                      res["cov_free"], cov1, correction=correction,
                                      assignment="modal")
        slopes = np.asarray(res["theta"])[[1, 3]]
        out[correction] = (slopes, np.sqrt(np.diag(cov))[[1, 3]])
    return out


def study(R: int, n: int = 1000, seed: int = 20261202) -> pd.DataFrame:
    """Bias, its Monte-Carlo SE, |bias| / MC SE, coverage of 95% Wald intervals, mean SE and
    SD of the estimates, per correction and slope, over replications 0..R-1."""
    reps = [replicate(r, n, seed) for r in range(R)]
    rows = []
    for correction in CORRECTIONS:
        est = np.array([rep[correction][0] for rep in reps])
        se = np.array([rep[correction][1] for rep in reps])
        cover = np.abs(est - TRUE_SLOPES) <= 1.959963984540054 * se
        for j, name in enumerate(("beta[2,z]", "beta[3,z]")):
            bias = est[:, j].mean() - TRUE_SLOPES[j]
            mcse = est[:, j].std(ddof=1) / np.sqrt(R)
            rows.append({"correction": correction, "parameter": name, "true": TRUE_SLOPES[j],
                         "mean": est[:, j].mean(), "bias": bias, "mc_se": mcse,
                         "bias_in_mc_se": bias / mcse, "coverage": cover[:, j].mean(),
                         "mean_se": se[:, j].mean(), "sd": est[:, j].std(ddof=1)})
    return pd.DataFrame(rows)


if __name__ == "__main__":
    R = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    t0 = time.time()
    table = study(R)
    with pd.option_context("display.width", 200, "display.precision", 4):
        print(table.to_string(index=False))
    print(f"{R} replications of N = 1000 in {time.time() - t0:.0f} s")
