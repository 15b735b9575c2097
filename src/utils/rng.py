"""Random streams derived from the run's seed.

Every random draw in the pipeline comes from :func:`stream`, so that a unit of work
(a random start, a bootstrap replicate) gets the same numbers whatever the order,
the number of workers or the interruptions.  A unit is named by a purpose and one or more
integer indices: ``stream(seed, "start", s)``, ``stream(seed, "blrt", k, r)`` (replicate
``r`` of the test of ``k - 1`` against ``k`` classes).  The spawn key is
``(crc32(purpose), *indices)``, so one index gives the same stream as before several were
allowed, and different numbers of indices never collide for the same purpose in practice
(SeedSequence hashes the whole key).
"""

from __future__ import annotations

import zlib

import numpy as np

__all__ = ["stream", "seed_sequence"]


def seed_sequence(seed: int, purpose: str, index: int = 0, *more: int) -> np.random.SeedSequence:
    """SeedSequence for unit ``(index, *more)`` of ``purpose`` (e.g. "start", "bootstrap")."""
    tag = zlib.crc32(purpose.encode("utf-8"))
    return np.random.SeedSequence(int(seed), spawn_key=(tag, int(index), *(int(i) for i in more)))


def stream(seed: int, purpose: str, index: int = 0, *more: int) -> np.random.Generator:
    """A fresh Generator for unit ``(index, *more)`` of ``purpose`` derived from ``seed``."""
    return np.random.default_rng(seed_sequence(seed, purpose, index, *more))
