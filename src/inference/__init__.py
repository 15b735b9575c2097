"""Standard errors three ways, chosen by name (like statsmodels' ``cov_type``).

    louis      observed information by Louis' method
    numerical  finite-difference Hessian of the observed log-likelihood
    bootstrap  refitted bootstrap replicates (nonparametric, parametric or Poisson-weighted;
               each refit from the estimate or from random starts)
    sandwich   robust A^-1 B A^-1: Louis' information A, the rows' score outer products B
               (w_i^2-weighted with sampling weights: the default SE with them)

Each method describes itself in :data:`SE_METHODS` (an :class:`SEMethod`): its function,
a one-line description for reports, its own options (flags, TOML keys, fingerprints) and
which run options its function reads.  The pipeline, the option table and the writers
read these descriptions, so adding a method is one entry here (plus its module and tests).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..models.base import Data, MixtureModel, Params
from ..utils.options import Option
from .bootstrap import BOOTSTRAP_KINDS, BOOTSTRAP_STARTS, bootstrap_se
from .louis import louis_se
from .numerical import numerical_se
from .results import SEResult
from .sandwich import sandwich_se

__all__ = ["SE_METHODS", "DEFAULT_SE_METHOD", "SEMethod", "Comparison", "SEResult",
           "compute_standard_errors",
           "louis_se", "numerical_se", "bootstrap_se", "sandwich_se", "default_se_method"]


@dataclass(frozen=True)
class Comparison:
    """How the report compares one method's standard errors with the reference method's.

    ``label``: the method in a sentence ("Louis").  ``reference``: the others are compared
    with it.  Deterministic methods give ``rel_tol``: they disagree beyond that relative
    difference.  Monte-Carlo methods give ``replicates``, the run option holding their
    number of replicates B: they disagree beyond ``sds`` Monte-Carlo standard deviations
    (SE/sqrt(2B)) plus a ``slack`` fraction (finite-sample bias) of the reference SE.
    """

    label: str
    reference: bool = False
    rel_tol: float | None = None
    replicates: str | None = None
    sds: float = 3.0
    slack: float = 0.10

    @property
    def monte_carlo(self) -> bool:
        return self.replicates is not None


@dataclass(frozen=True)
class SEMethod:
    """One standard-error method, as the pipeline and the option table see it.

    ``reads`` maps the function's keyword to the run option it takes (``{"kind":
    "bootstrap"}``).  ``checkpointed``: the function takes ``checkpoint=`` and resumes from
    it.  ``parallel``: it takes ``executor=`` (the run starts worker processes for it).
    ``progress``: the keyword of a callback ``(index, status, n_done, n_total)`` called as
    each unit finishes (the console shows ``n_done/n_total``).  ``agreement``: how reports
    compare its standard errors with the other methods' (None: not compared).
    ``sample_keyword`` and ``partitioned_options``: what it needs on partitioned input (the
    bootstrap: the sample to align classes on, and the Poisson kind).
    """

    name: str
    function: Callable[..., SEResult]
    description: str
    options: tuple[Option, ...] = ()
    reads: Mapping[str, str] = field(default_factory=dict)
    checkpointed: bool = False
    parallel: bool = False
    progress: str | None = None
    agreement: Comparison | None = None
    #: partitioned input: the keyword that gets the run's in-memory sample of rows (None:
    #: not needed), and the option values the method needs there (``{option: value}``)
    sample_keyword: str | None = None
    partitioned_options: Mapping[str, str] = field(default_factory=dict)
    #: the keyword that gets the kept rows' global (input) row numbers (None: not needed)
    row_numbers_keyword: str | None = None


_SE = "standard errors"

#: name -> method, in the order reports list them (``--se-method all`` runs them in this order)
SE_METHODS: dict[str, SEMethod] = {m.name: m for m in (
    SEMethod("louis", louis_se, "observed information by Louis' method",
             reads={"chunk_size": "chunk_size"}, agreement=Comparison("Louis", reference=True)),
    SEMethod("numerical", numerical_se, "finite-difference Hessian of the observed log-likelihood",
             reads={"chunk_size": "chunk_size"}, agreement=Comparison("numerical", rel_tol=1e-3)),
    SEMethod("bootstrap", bootstrap_se, "standard deviation of refitted bootstrap replicates",
             options=(
                 Option("n_bootstrap", int, 200, "bootstrap replicates", low=2, group=_SE,
                        fingerprint="standard_error_computation"),
                 Option("bootstrap", str, "nonparametric", "bootstrap kind", group=_SE,
                        choices=tuple(BOOTSTRAP_KINDS), fingerprint="standard_error_computation"),
                 Option("bootstrap_start", str, "estimate",
                        "where each replicate's EM starts: the estimate (one start), or "
                        "--n-starts random starts of its own, keeping the best", group=_SE,
                        choices=tuple(BOOTSTRAP_STARTS), fingerprint="standard_error_computation"),
             ),
             reads={"n_bootstrap": "n_bootstrap", "kind": "bootstrap", "start": "bootstrap_start",
                    "n_starts": "n_starts", "n_candidates": "n_candidates",
                    "candidate_iter": "candidate_iter", "seed": "seed", "tol": "tol",
                    "max_iter": "max_iter", "accelerate": "accelerate", "chunk_size": "chunk_size",
                    "weight_type": "weight_type"},
             checkpointed=True, parallel=True, progress="on_replicate",
             agreement=Comparison("bootstrap", replicates="n_bootstrap"),
             sample_keyword="align_data", partitioned_options={"bootstrap": "poisson"},
             row_numbers_keyword="row_numbers"),
    # Not compared with Louis in reports (agreement None): under misspecification or with
    # sampling weights it estimates another variance, and when the model holds its distance
    # from Louis' is sampling noise of fourth moments of the scores, O(1/sqrt(n)) with a
    # constant that depends on the data, which no fixed tolerance describes honestly.
    SEMethod("sandwich", sandwich_se, "robust sandwich A^-1 B A^-1 (A: Louis' observed "
             "information; B: the rows' score outer products, w_i^2-weighted with sampling "
             "weights)",
             reads={"chunk_size": "chunk_size", "weight_type": "weight_type"}, agreement=None),
)}
#: the method of ``--se-method`` and ``--primary-se`` when none is given (unweighted data
#: and frequency weights; with sampling weights :func:`default_se_method` gives sandwich)
DEFAULT_SE_METHOD = "louis"
#: the default method with sampling weights (Louis' information treats them as frequencies)
SAMPLING_WEIGHTS_SE_METHOD = "sandwich"


def default_se_method(weights: str | None, weight_type: str | None) -> str:
    """The standard-error method used when none is given: sandwich with sampling weights
    (``--weights`` given and ``--weight-type sampling``), else Louis."""
    if weights is not None and weight_type == "sampling":
        return SAMPLING_WEIGHTS_SE_METHOD
    return DEFAULT_SE_METHOD


def compute_standard_errors(method: str, model: MixtureModel, data: Data, params: Params,
                            **options: Any) -> SEResult:
    """Standard errors by ``method`` (a key of SE_METHODS); ``options`` go to that function."""
    if method not in SE_METHODS:
        raise ValueError(f"unknown se method {method!r}; use one of {', '.join(SE_METHODS)}")
    return SE_METHODS[method].function(model, data, params, **options)
