"""The small interface through which long computations save and resume their state.

The engine and the inference code depend only on this protocol; the progress tracker
(:mod:`src.utils.estimation_progress`) implements it, and :class:`NullCheckpointer`
is the do-nothing version used when progress tracking is off.

A saved state comes from disk and is not trusted: the tracker checks the file (checksum,
schema, artifacts) but cannot know what a phase's state must look like.  The phase does:
when the state it resumes from does not fit (wrong keys, shapes, dtypes, other options) it
raises :class:`CheckpointInvalid`, and ``resume_estimation_phase`` drops the checkpoint
with one warning and runs the phase again from its beginning.  :func:`require` and
:func:`check_arrays` are the small helpers for those checks.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol

import numpy as np

__all__ = ["Checkpointer", "NullCheckpointer", "CheckpointInvalid", "require", "check_arrays"]


class CheckpointInvalid(ValueError):
    """The state a phase resumed from does not fit it; the message says what (one phrase)."""


def require(condition: Any, what: str) -> None:
    """CheckpointInvalid(``what``) unless ``condition`` holds."""
    if not condition:
        raise CheckpointInvalid(what)


def check_arrays(value: Any, shapes: Mapping[str, tuple[int, ...]], what: str) -> dict[str, np.ndarray]:
    """``value`` as a dict of finite-or-not float arrays with exactly ``shapes``' keys and shapes.

    Raises CheckpointInvalid naming ``what`` and the first key that does not fit.
    """
    require(isinstance(value, Mapping), f"{what} is not a mapping of arrays")
    require(set(value) == set(shapes), f"{what} has keys {sorted(value)}, expected {sorted(shapes)}")
    out: dict[str, np.ndarray] = {}
    for key, shape in shapes.items():
        arr = value[key]
        require(isinstance(arr, (np.ndarray, list, int, float)) and not isinstance(arr, bool),
                f"{what}[{key!r}] is not numeric")
        arr = np.asarray(arr)
        require(arr.dtype.kind in "biuf", f"{what}[{key!r}] has dtype {arr.dtype}, expected numbers")
        require(arr.shape == tuple(shape), f"{what}[{key!r}] has shape {arr.shape}, expected {tuple(shape)}")
        out[key] = arr.astype(float)
    return out


class Checkpointer(Protocol):
    """What a phase sees of the tracker.

    ``state`` is a dict of JSON scalars, lists, dicts and numpy arrays.  The tracker
    keeps a reference to the last state until it is written, so pass objects that you
    will not mutate afterwards.
    """

    def resume_state(self) -> dict[str, Any] | None:
        """The last state checkpointed in the current phase, or None when starting fresh.

        Check it before use and raise :class:`CheckpointInvalid` when it does not fit."""

    def checkpoint(self, state: dict[str, Any], *, force: bool = False) -> bool:
        """Record ``state`` after one unit of work; written when the save policy says so
        (or ``force``).  Returns True when the state was written to disk."""


class NullCheckpointer:
    """Checkpointer that remembers nothing (progress tracking off, tests, the API)."""

    def resume_state(self) -> dict[str, Any] | None:
        return None

    def checkpoint(self, state: dict[str, Any], *, force: bool = False) -> bool:
        return False
