"""Standard errors three ways, chosen by name (like statsmodels' ``cov_type``).

    louis      observed information by Louis' method
    numerical  finite-difference Hessian of the observed log-likelihood
    bootstrap  refitted bootstrap replicates (nonparametric or parametric)
"""

from __future__ import annotations

from typing import Any, Callable

from ..models.base import Data, MixtureModel, Params
from .bootstrap import bootstrap_se
from .louis import louis_se
from .numerical import numerical_se
from .results import SEResult

__all__ = ["SE_METHODS", "SEResult", "compute_standard_errors", "louis_se", "numerical_se",
           "bootstrap_se"]

#: name -> (function, one-line description printed by reports)
SE_METHODS: dict[str, tuple[Callable[..., SEResult], str]] = {
    "louis": (louis_se, "observed information by Louis' method"),
    "numerical": (numerical_se, "finite-difference Hessian of the observed log-likelihood"),
    "bootstrap": (bootstrap_se, "standard deviation of refitted bootstrap replicates"),
}


def compute_standard_errors(method: str, model: MixtureModel, data: Data, params: Params,
                            **options: Any) -> SEResult:
    """Standard errors by ``method`` (a key of SE_METHODS); ``options`` go to that function."""
    if method not in SE_METHODS:
        raise ValueError(f"unknown se method {method!r}; use one of {', '.join(SE_METHODS)}")
    return SE_METHODS[method][0](model, data, params, **options)
