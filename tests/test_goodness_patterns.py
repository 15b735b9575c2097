"""G2/X2 and bivariate residuals on the answer patterns the model already found
(src/inference/goodness.py, _known_patterns) are bit for bit those of every row; on pattern
tables summed over pieces of the rows (as partitions give them) they are the rows' to
rounding, with and without covariates."""

from __future__ import annotations

import numpy as np
import pytest
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


def _covariate_fit(missing: float):
    """A one-step covariate LCA fitted briefly, on answers with some missing, and its data."""
    from tests.test_covariates import lca_data, lca_model

    Y, _, Z, names = lca_data(1500, seed=6, J=5)
    rng = stream(6, "test-goodness-patterns-missing")
    Y = np.where(rng.random(Y.shape) < missing, -1, Y)
    model = lca_model(np.where(Y < 0, 0, Y), names)
    data = {"Y": Y, "Z": Z}
    return model, data, fit_em(model, data, seed=2, n_starts=1, max_iter=15).params


def test_pattern_tables_of_pieces_give_the_rows_numbers():
    """Pattern tables of uneven pieces of the rows (an empty and a one-row piece among them) merged give the rows' G2/X2 and bivariate residuals to 1e-12, without and with covariates, row weights and missing answers."""
    for model, data, params in (_fitted(0.05), _covariate_fit(0.05)):
        n = data["Y"].shape[0]
        cuts = [0, 0, 1, n // 2, n // 2 + 1, n]
        w = stream(9, "test-goodness-patterns-weights").integers(1, 4, size=data["Y"].shape[0])
        for rows in (data, {**data, WEIGHT_KEY: w.astype(float)}):
            pieces = [{k: v[a:b] for k, v in rows.items()} for a, b in zip(cuts[:-1], cuts[1:])]
            table = goodness.merge_pattern_tables(
                model, [goodness.pattern_table_of(model, p, params) for p in pieces])
            assert table[WEIGHT_KEY].sum() == (w.sum() if WEIGHT_KEY in rows else n)
            assert (goodness.CLASS_MASS_KEY in table) == ("Z" in data)
            for fn in (lambda d: goodness.lca_fit_statistics(model, d, params, n_params=11),
                       lambda d: goodness.bivariate_residuals(model, d, params)):
                want, got = fn(rows), fn(table)
                assert want.keys() == got.keys()
                for key, value in want.items():
                    if isinstance(value, float):
                        assert got[key] == pytest.approx(value, rel=1e-12), key
                    elif key == "pairs":
                        for p, q in zip(value, got[key]):
                            assert p.keys() == q.keys() and p["n"] == q["n"]
                            assert q["x2"] == pytest.approx(p["x2"], rel=1e-12)
                    else:
                        assert got[key] == value, key


def test_summaries_without_rows_say_what_is_missing():
    """Without rows or a pattern table, a latent class model's summaries give the response-probability table and a note saying G2, X2 and the bivariate residuals were not computed."""
    from src.inference.summaries import model_summaries

    model, _, params = _fitted(0.0)
    notes: list[str] = []
    out = model_summaries(model, None, params, n_params=11, se=None, ci_level=0.95, seed=1,
                          notes=notes)
    assert list(out) == ["response_probabilities"]
    assert len(notes) == 1 and "G2, X2 and the bivariate residuals" in notes[0]
