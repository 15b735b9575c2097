"""Three-step estimation with the measurement model held fixed (docs/structural.md).

A layer after inference in the data flow: it reads a fitted measurement model and its
posteriors, and estimates a structural model of the latent class:

* :mod:`.assignment`  step 2: modal or soft assignment, the classification-error matrix D,
  BCH weights, the ML correction's P(W | X)
* :mod:`.models`      step 3's models: covariates (multinomial logit of the class) and
  distal outcomes (Gaussian or categorical per class)
* :mod:`.estimate`    step 3 with the correction none / bch / ml and sandwich standard errors
* :mod:`.corrected`   standard errors that also account for step 1 (Bakk, Oberski & Vermunt 2014)
* :mod:`.bootstrap`   the bootstrap of all three steps (checkpointed replicates, any executor)
* :mod:`.data`        the structural columns: covariates and distal outcomes as arrays
* :mod:`.run`         the whole of steps 2 and 3 for one fitted measurement model
"""

from .assignment import ASSIGNMENTS, assign, bch_weights, classification_error, log_emission
from .estimate import CORRECTIONS, step3
from .models import DISTAL_TYPES, CovariateModel, DistalModel

__all__ = ["ASSIGNMENTS", "CORRECTIONS", "DISTAL_TYPES", "STRUCTURAL_KINDS", "STRUCTURAL_SE",
           "RESAMPLED", "assign",
           "bch_weights", "classification_error", "log_emission", "step3", "CovariateModel",
           "DistalModel"]

#: --structural
STRUCTURAL_KINDS = ("covariates", "distal")
#: --structural-se: corrected for step 1 (Bakk-Oberski-Vermunt), the bootstrap of the three
#: steps (RESAMPLED), or step 3's sandwich alone
RESAMPLED = "bootstrap"
STRUCTURAL_SE = ("corrected", RESAMPLED, "step3")
