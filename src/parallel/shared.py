"""Objects in a memory-backed file whose arrays workers map instead of copying.

``dump_shared`` pickles an object (protocol 5) with its contiguous buffers (numpy arrays)
out of band, each at a 64-byte aligned offset; ``load_shared`` maps the file read-only and
unpickles with those buffers, so every worker reading a partition shares one copy of it
in memory (the arrays it gets are read-only).  Layout: ``<QQ`` (pickle length, number of
buffers), one ``<QQ`` (offset, length) per buffer, the pickle, the aligned buffers.
"""

from __future__ import annotations

import mmap
import pickle
import struct
from typing import Any, BinaryIO

import cloudpickle

__all__ = ["dump_shared", "load_shared"]

_ALIGN = 64


def dump_shared(obj: Any, fh: BinaryIO) -> None:
    """Write ``obj`` to the open binary file ``fh`` (see the module docstring)."""
    buffers: list[pickle.PickleBuffer] = []
    head = cloudpickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    raws = [b.raw() for b in buffers]
    offset = 16 + 16 * len(raws) + len(head)
    table = []
    for raw in raws:
        offset = -(-offset // _ALIGN) * _ALIGN
        table.append((offset, raw.nbytes))
        offset += raw.nbytes
    fh.write(struct.pack("<QQ", len(head), len(raws)))
    for entry in table:
        fh.write(struct.pack("<QQ", *entry))
    fh.write(head)
    for (start, _), raw in zip(table, raws):
        fh.seek(start)
        fh.write(raw)


def load_shared(path: str) -> Any:
    """The object written by ``dump_shared`` to ``path``, its buffers mapped from the file."""
    with open(path, "rb") as fh:
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    view = memoryview(mm)
    n_head, n_buf = struct.unpack_from("<QQ", mm, 0)
    table = [struct.unpack_from("<QQ", mm, 16 + 16 * i) for i in range(n_buf)]
    start = 16 + 16 * n_buf
    return pickle.loads(view[start:start + n_head], buffers=[view[o:o + n] for o, n in table])
