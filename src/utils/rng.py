"""Random streams derived from the run's seed.

Every random draw in the pipeline comes from :func:`stream`, so that a unit of work
(a random start, a bootstrap replicate) gets the same numbers whatever the order,
the number of workers or the interruptions.
"""

from __future__ import annotations

import zlib

import numpy as np

__all__ = ["stream", "seed_sequence"]


def seed_sequence(seed: int, purpose: str, index: int = 0) -> np.random.SeedSequence:
    """SeedSequence for unit ``index`` of ``purpose`` (e.g. "start", "bootstrap")."""
    tag = zlib.crc32(purpose.encode("utf-8"))
    return np.random.SeedSequence(int(seed), spawn_key=(tag, int(index)))


def stream(seed: int, purpose: str, index: int = 0) -> np.random.Generator:
    """A fresh Generator for unit ``index`` of ``purpose`` derived from ``seed``."""
    return np.random.default_rng(seed_sequence(seed, purpose, index))
