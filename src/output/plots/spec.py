"""A figure as data: what to draw (:class:`Spec`), drawn by :func:`render` into a
:class:`~.layout.Plot`, and the byte format that carries specs to another process.

Every figure is made in two steps: a *spec* function (in the run) gathers what the figure
shows from the model, data and estimate as plain values -- a ``kind`` (which drawing
function), ``meta`` (JSON: names, counts, flags, floats), ``arrays`` (numeric NumPy arrays)
and the caption in the current language -- and a drawing function (``DRAW[kind]``) turns
``meta`` and ``arrays`` into PNG bytes.  The drawing functions compute what they need from the
arrays themselves (subsamples, histograms, ranges), so a spec carries raw arrays and the
run does little work; drawn in this process or in the drawing process
(:mod:`src.output.background`), the same spec gives the same bytes.

:func:`pack` / :func:`unpack`: a JSON header and the arrays' raw bytes (little-endian
numeric dtypes only, no pickle), so the receiving side runs no code it was sent.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from .layout import Plot

__all__ = ["Spec", "render", "DRAW", "pack", "unpack", "FormatError"]

#: kind -> drawing function ``(meta, arrays) -> (png, width, height)``; each figure module
#: adds its own
DRAW: dict[str, Callable[[Mapping[str, Any], Mapping[str, np.ndarray]], tuple[bytes, int, int]]] = {}

_MAGIC = b"EMFIG1\n"
_LENGTHS = struct.Struct("<QQ")
#: dtype kinds an array may have (bool, signed and unsigned integers, floats)
_KINDS = "biuf"


class FormatError(ValueError):
    """Bytes that are not a message of :func:`pack`."""


@dataclass
class Spec:
    """One figure to draw: ``kind`` names the drawing function (:data:`DRAW`), ``meta``
    (JSON values) and ``arrays`` (numeric arrays) are its inputs, ``caption`` its caption."""

    kind: str
    meta: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    caption: str = ""


def render(spec: Spec) -> Plot:
    """Draw ``spec`` in this process."""
    png, width, height = DRAW[spec.kind](spec.meta, spec.arrays)
    return Plot(png, spec.caption, width, height)


# ------------------------------------------------------------------- byte format
def pack(meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> list[Any]:
    """A message as a list of buffers (write them in order): the magic line, the lengths of
    header and body, a JSON header (``meta`` and each array's name, dtype and shape) and
    the arrays' bytes in C order.  Arrays are not copied when already C-contiguous."""
    parts: list[Any] = []
    described = []
    size = 0
    for name, arr in arrays.items():
        arr = np.asarray(arr)
        if arr.dtype.kind not in _KINDS:
            raise TypeError(f"array {name!r} has dtype {arr.dtype}; only numbers travel")
        arr = np.asarray(arr, dtype=arr.dtype.newbyteorder("<"), order="C")
        described.append([str(name), arr.dtype.str, list(arr.shape)])
        if arr.nbytes:
            parts.append(memoryview(arr).cast("B"))
        size += arr.nbytes
    header = json.dumps({"meta": meta, "arrays": described}, allow_nan=True).encode("utf-8")
    return [_MAGIC + _LENGTHS.pack(len(header), size), header, *parts]


def message_size(head: bytes) -> int:
    """Bytes of the message after its first ``len(_MAGIC) + 16`` bytes (``head``)."""
    if len(head) != HEAD_SIZE or not head.startswith(_MAGIC):
        raise FormatError("not a figure message")
    header, body = _LENGTHS.unpack(head[len(_MAGIC):])
    return header + body


#: bytes of a message's fixed start (magic line and the two lengths)
HEAD_SIZE = len(_MAGIC) + _LENGTHS.size


def unpack(head: bytes, rest: bytes | bytearray | memoryview) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(meta, arrays) of a message whose first :data:`HEAD_SIZE` bytes are ``head`` and the
    rest ``rest``; the arrays are read-only views of ``rest``."""
    header_size, body_size = _LENGTHS.unpack(head[len(_MAGIC):])
    if not head.startswith(_MAGIC) or len(rest) != header_size + body_size:
        raise FormatError("a truncated or foreign figure message")
    view = memoryview(rest)
    try:
        header = json.loads(bytes(view[:header_size]).decode("utf-8"))
        meta, described = header["meta"], header["arrays"]
        arrays: dict[str, np.ndarray] = {}
        at = header_size
        for name, dtype, shape in described:
            dt = np.dtype(dtype)
            if dt.kind not in _KINDS:
                raise FormatError(f"array {name!r} of dtype {dt}")
            count = int(np.prod(shape, dtype=np.int64))
            nbytes = count * dt.itemsize
            if at + nbytes > len(view):
                raise FormatError("a truncated figure message")
            arrays[name] = np.frombuffer(view[at:at + nbytes], dtype=dt, count=count).reshape(tuple(shape))
            at += nbytes
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, FormatError):
            raise
        raise FormatError(f"a damaged figure message ({exc})") from None
    return meta, arrays
