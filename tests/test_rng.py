"""Random streams: one per unit of work, named by a purpose and one or more indices."""

from __future__ import annotations

import numpy as np

from src.utils.rng import stream


def test_one_index_keeps_the_streams_of_earlier_versions():
    """stream(seed, purpose, i) draws what it drew before several indices were allowed."""
    expected = [0.96732437, 0.05177864, 0.51662885]  # stream(5, "start", 3), recorded 2026-11
    np.testing.assert_allclose(stream(5, "start", 3).random(3), expected, rtol=0, atol=5e-9)


def test_several_indices_name_distinct_reproducible_units():
    """(k, r) pairs give distinct streams, each the same every time it is asked for."""
    draws = {(k, r): stream(7, "blrt", k, r).random(4).tobytes() for k in (2, 3) for r in range(5)}
    assert len(set(draws.values())) == len(draws)
    assert stream(7, "blrt", 3, 4).random(4).tobytes() == draws[(3, 4)]
    assert stream(7, "blrt", 3).random(4).tobytes() != draws[(3, 0)]
