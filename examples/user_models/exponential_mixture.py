"""A mixture of exponential distributions: a user-defined model (see docs/models.md).

Select it with ``--model examples/user_models/exponential_mixture.py:ExponentialMixture``
(one positive numeric column, e.g. ``--columns waiting``) or from Python with
``src.api.fit(x, "examples/user_models/exponential_mixture.py:ExponentialMixture", 2)``.

It writes only what defines the model: how to read the data, the parameters and the
complete-data log-likelihood (plus ``sample`` for the parametric bootstrap).  The engine
supplies the rest: random starts, a numerical M-step, numerical derivatives for Louis'
standard errors, names such as ``rate[1]`` and the canonical order (decreasing weight).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from src.models.base import Data, MixtureModel, Params, ParamSpec
from src.utils.errors import DataError


class ExponentialMixture(MixtureModel):
    """``p(x_i, z_i = k) = weight_k * rate_k * exp(-rate_k * x_i)`` for x_i > 0."""

    name = "exponential_mixture"

    @classmethod
    def prepare_data(cls, frame: Any, options: Mapping[str, Any]) -> tuple[Data, dict[str, Any]]:
        """One numeric column of positive values -> ``{"x": (N,)}``."""
        from src.data.loading import numeric_matrix

        if frame.shape[1] != 1:
            raise DataError(f"the exponential mixture needs exactly one column, got {frame.shape[1]}; "
                            "select one with --columns")
        column = str(frame.columns[0])
        values, _ = numeric_matrix(frame, [column], drop_missing=bool(options.get("drop_missing")),
                                   source=str(options.get("source", "the data")))
        x = values[:, 0]
        if np.any(x <= 0):
            raise DataError(f"column {column!r} has {int(np.sum(x <= 0))} values that are not "
                            "positive; an exponential mixture needs positive values")
        return {"x": x}, {"column": column}

    def param_specs(self) -> list[ParamSpec]:
        return [ParamSpec("weight", (), "simplex"), ParamSpec("rate", (), "positive")]

    def log_joint(self, data: Data, params: Params) -> np.ndarray:
        x = data["x"][:, None]
        rate = np.asarray(params["rate"])[None, :]
        with np.errstate(divide="ignore"):
            return np.log(params["weight"])[None, :] + np.log(rate) - rate * x

    def sample(self, params: Params, data: Data, rng: np.random.Generator) -> Data:
        """As many new values as there are rows (parametric bootstrap)."""
        n = data["x"].shape[0]
        w = np.asarray(params["weight"])
        z = rng.choice(w.size, size=n, p=w / w.sum())
        return {"x": rng.exponential(1.0 / np.asarray(params["rate"])[z])}
