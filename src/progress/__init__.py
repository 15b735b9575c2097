"""The progress layer: durable progress files, resume, locks, signals, artifacts.

It stands beside the pipeline (data -> models -> estimation -> inference -> output): the
phases call it, it imports none of them.  Modules, one concern each:

    tracker.py      EstimationProgressTracker, estimation_progress(), resume_estimation_phase():
                    lifecycle, phases, the checkpoint protocol, writing
    recovery.py     reading saved progress without trust: main file or backup, salvaging
                    what damaged artifacts spare, refusing in one sentence, changed inputs
    document.py     the progress file's fields, checksum and validation
    paths.py        task and phase names, the files of a task, refusing symbolic links
    lock.py         one run per task (OS lock + owner file)
    signals.py      SIGTERM/SIGHUP/SIGINT as exceptions, deferred during a write
    artifacts.py    arrays and data frames beside the JSON (.npz / Parquet, never pickle)
    atomic.py       atomic, durable file writes
    fingerprint.py  what a phase's result depends on
    save_policy.py  when to write
    faults.py       fault injection for crash tests
    files.py        inspecting and cleaning progress files (manage_progress.py)

``src.utils.estimation_progress`` re-exports the public names (the import path of the
user's document).
"""

from ..utils.checkpointing import CheckpointInvalid
from .paths import (DEFAULT_TASK, ProgressPathUnsafe, check_task_paths, task_paths,
                    validate_task_name)
from .signals import Terminated
from .tracker import (SCHEMA_VERSION, EstimationProgressTracker, estimation_progress,
                      resume_estimation_phase)

__all__ = ["EstimationProgressTracker", "estimation_progress", "resume_estimation_phase",
           "Terminated", "CheckpointInvalid", "SCHEMA_VERSION", "DEFAULT_TASK", "task_paths",
           "validate_task_name", "check_task_paths", "ProgressPathUnsafe"]
