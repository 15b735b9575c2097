"""Ordered map-reduce over data partitions: a fixed left fold by partition index, persisted partitions.

The Dask half of the bitwise comparison is in ``tests/test_executors.py`` (its cluster fixture);
the helpers here build partitions whose floating-point sum depends on the order of addition.
"""

from __future__ import annotations

import itertools
import os
import time

import numpy as np
import pytest

from src.parallel import cleanup
from src.parallel.executors import (DaskExecutor, Executor, InProcessExecutor, Partitions,
                                    ProcessExecutor, make_executor)
from src.parallel.protocol import add_stats, fold_in_order

N_PARTS = 8
MAGNITUDES = [1.0, 1e16, 1e16, 1.0, 1e-3, 1.0, 1e16, 1e-6]


def order_sensitive_partitions(n: int = N_PARTS, rows: int = 50) -> list[dict[str, np.ndarray]]:
    """Partitions whose sums span 22 orders of magnitude; later ones finish first (shorter delays)."""
    rng = np.random.default_rng(11)
    parts = []
    for i in range(n):
        x = rng.normal(size=(rows, 3)) * MAGNITUDES[i % len(MAGNITUDES)]
        parts.append({"X": x, "delay": np.array(0.1 * (n - 1 - i) / n)})
    return parts


def moments(part: dict[str, np.ndarray], centre: np.ndarray, scale: float) -> dict[str, np.ndarray]:
    """E-step-like additive statistics of one partition (sleeps its delay first)."""
    time.sleep(float(part["delay"]))
    z = (part["X"] - centre) * scale
    w = np.exp(-np.abs(z).clip(max=50.0)).sum(1)
    return {"n": np.array([len(z)], float), "s1": z.sum(0), "s2": z.T @ z, "w": w @ z}


def fold(results: list[dict], order: list[int]) -> dict:
    acc = results[order[0]]
    for i in order[1:]:
        acc = add_stats(acc, results[i])
    return acc


def identical(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) and a[k].dtype == b[k].dtype
                                        for k in a)


def reference(parts: list, broadcast: tuple) -> dict:
    """The sequential left fold by index, checked to differ in other orders (order matters)."""
    results = [moments(p, *broadcast) for p in [dict(q, delay=np.array(0.0)) for q in parts]]
    ref = fold(results, list(range(len(results))))
    assert not identical(fold(results, list(reversed(range(len(results))))), ref), \
        "these partitions must be order-sensitive"
    pairs = [add_stats(results[i], results[i + 1]) for i in range(0, len(results) - 1, 2)]
    assert not identical(fold(pairs, list(range(len(pairs)))), ref), "a tree is another order"
    return ref


BROADCASTS = [(np.array([0.5, -1.0, 2.0]), 1.0), (np.array([1e3, 0.0, -7.0]), 0.1)]


def test_fold_in_order_folds_from_the_left_by_index():
    """Pairs arriving in any order are folded as ((r0 + r1) + r2) + r3, whatever the arrival order."""
    seen = []
    for perm in itertools.permutations(range(4)):
        seen.append(fold_in_order(((i, f"r{i}") for i in perm), 4,
                                  lambda a, b: f"({a}+{b})"))
    assert set(seen) == {"(((r0+r1)+r2)+r3)"}
    with pytest.raises(RuntimeError, match="3 of 4"):
        fold_in_order(((i, i) for i in (2, 0, 1)), 4, add_stats)


@pytest.mark.parametrize("workers", [1, 2])
def test_local_map_reduce_is_the_index_order_fold_with_persisted_partitions(workers):
    """In process and with 2 processes (partitions finishing out of order) the result is bitwise the index-order fold, call after call."""
    parts = order_sensitive_partitions()
    with make_executor(workers) as ex:
        assert isinstance(ex, Executor)
        with ex.persist_partitions(parts) as handle:
            assert len(handle) == N_PARTS
            for broadcast in BROADCASTS:
                got = ex.map_reduce(moments, handle, broadcast=broadcast)
                assert identical(got, reference(parts, broadcast))
        # raw partitions (persisted for this call only) give the same
        got = ex.map_reduce(moments, parts, broadcast=BROADCASTS[0])
        assert identical(got, reference(parts, BROADCASTS[0]))


def test_process_partitions_are_shared_files_removed_on_release_and_close():
    """Processes map persisted partitions from this run's task files, deleted on release and at close."""
    parts = order_sensitive_partitions(n=3)
    before = set(cleanup.task_files_of(os.getpid()))
    with ProcessExecutor(2) as ex:
        handle = ex.persist_partitions(parts)
        files = set(cleanup.task_files_of(os.getpid())) - before
        assert len([f for f in files if "em-part-" in f]) == 3
        assert identical(ex.map_reduce(moments, handle, broadcast=BROADCASTS[1]),
                         reference(parts, BROADCASTS[1]))
        handle.release()
        assert not [f for f in files if "em-part-" in f and os.path.exists(f)]
        with pytest.raises(ValueError, match="released"):
            ex.map_reduce(moments, handle, broadcast=BROADCASTS[1])
        kept = ex.persist_partitions(parts)
        assert kept.ref[1][0] in cleanup.task_files_of(os.getpid())
    assert set(cleanup.task_files_of(os.getpid())) == before


def fail_on_second(part, *_):
    if part["i"] == 1:
        raise ArithmeticError("partition one")
    return {"n": np.ones(1)}


@pytest.mark.parametrize("workers", [1, 2])
def test_errors_and_foreign_handles(workers):
    """A partition's error reaches the driver; a handle persisted by another executor is refused."""
    parts = [{"i": np.array(i)} for i in range(3)]
    with make_executor(workers) as ex, InProcessExecutor() as other:
        with pytest.raises(ArithmeticError, match="partition one"):
            ex.map_reduce(fail_on_second, parts)
        with pytest.raises(ValueError, match="another executor"):
            ex.map_reduce(fail_on_second, other.persist_partitions(parts))
        with pytest.raises(ValueError, match="at least one partition"):
            ex.map_reduce(fail_on_second, [])


def test_executors_are_equals():
    """Processes and Dask implement the protocol without inheriting the in-process executor."""
    for cls in (ProcessExecutor, DaskExecutor):
        assert InProcessExecutor not in cls.__mro__ and Executor in cls.__mro__
    assert isinstance(InProcessExecutor(), Executor)
    assert Partitions(None, 0, [], lambda: None).released is False
