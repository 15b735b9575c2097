"""The import path the user's document gives for progress tracking.

    from src.utils.estimation_progress import (EstimationProgressTracker,
                                               estimation_progress, resume_estimation_phase)

The implementation lives in the :mod:`src.progress` package.
"""

from ..progress import (SCHEMA_VERSION, CheckpointInvalid, EstimationProgressTracker, Terminated,
                        estimation_progress, resume_estimation_phase, task_paths,
                        validate_task_name)

__all__ = ["EstimationProgressTracker", "estimation_progress", "resume_estimation_phase",
           "Terminated", "CheckpointInvalid", "SCHEMA_VERSION", "task_paths", "validate_task_name"]
