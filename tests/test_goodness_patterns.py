"""G2/X2 and bivariate residuals on the answer patterns the model already found
(src/inference/goodness.py, _known_patterns) are bit for bit those of every row."""

from __future__ import annotations

import numpy as np
import pandas as pd

from src.estimation import fit_em
from src.inference import goodness
from src.inference.classification import posteriors_of
from src.models.base import WEIGHT_KEY
from src.models.lca import LatentClassModel
from src.utils.rng import stream


def _fitted(missing: float):
    rng = stream(4, "test-goodness-patterns")
    Y = rng.integers(1, 4, size=(3000, 5)).astype(str).astype(object)
    Y[rng.random(Y.shape) < missing] = None
    data, meta = LatentClassModel.prepare_data(pd.DataFrame(Y, columns=list("abcde")), {})
    model = LatentClassModel(2)
    model.setup(meta)
    fit = fit_em(model, data, seed=1, n_starts=1, n_candidates=0, max_iter=20)
    return model, data, fit.params


def test_patterns_give_the_rows_numbers_exactly():
    """With and without missing answers, the pattern path (after posteriors_of found the patterns) equals the row-by-row path (unit row weights) exactly."""
    for missing in (0.0, 0.05):
        model, data, params = _fitted(missing)
        posteriors_of(model, data, params)          # as the run: the patterns are found once
        assert goodness._known_patterns(model, data, None) is not None
        rows = {**data, WEIGHT_KEY: np.ones(data["Y"].shape[0])}   # every row on its own
        assert (goodness.lca_fit_statistics(model, data, params, n_params=11)
                == goodness.lca_fit_statistics(model, rows, params, n_params=11))
        assert (goodness.bivariate_residuals(model, data, params)
                == goodness.bivariate_residuals(model, rows, params))
        by_rows = goodness.pattern_statistics(model, data["Y"], params)
        by_patterns = goodness.pattern_statistics(model, data["Y"], params,
                                                  patterns=goodness._known_patterns(model, data, None))
        assert by_rows == by_patterns and by_rows["n_complete"] < 3000 + (missing == 0)
