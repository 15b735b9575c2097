"""The EM engine: one driver for every model, SQUAREM acceleration, the fit result."""

from .em import em_map, fit_em, run_start, start_params
from .results import FitResult

__all__ = ["fit_em", "run_start", "em_map", "start_params", "FitResult"]
