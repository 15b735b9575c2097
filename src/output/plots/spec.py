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

Two stages.  A drawing function is a generator: it reads what depends on the data only
(``Spec.stage1``: the keys of ``meta`` and ``arrays`` known once the data are read -- column
and item names, the data columns) and builds that much of the figure (the canvas, the axes,
histograms of the data, labels), yields, then reads the estimate's keys and finishes (points
coloured by class, ellipses, curves, legend, margins, PNG).  The drawing process runs the
first stage while the model is fitted (:func:`start`) and the second once the estimate is
known (:func:`finish`); :func:`render` runs both at once.  Either way the same artists are
made in the same order, so the bytes are the same.

:func:`pack` / :func:`unpack`: a JSON header and the arrays' raw bytes (little-endian
numeric dtypes only, no pickle), so the receiving side runs no code it was sent.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Generator, Mapping

import numpy as np

from .layout import Plot

__all__ = ["Spec", "Drawing", "render", "start", "ahead", "finish", "DRAW", "pack", "unpack",
           "FormatError"]

#: a drawing: ``(meta, arrays)`` -> a generator that yields once (between its stages) and
#: returns ``(png, width, height)``; ``meta`` and ``arrays`` gain the estimate's keys by then
Draw = Callable[[dict[str, Any], dict[str, np.ndarray]], Generator[None, None, tuple[bytes, int, int]]]
#: kind -> drawing function; each figure module adds its own
DRAW: dict[str, Draw] = {}

_MAGIC = b"EMFIG1\n"
_LENGTHS = struct.Struct("<QQ")
#: dtype kinds an array may have (bool, signed and unsigned integers, floats)
_KINDS = "biuf"


class FormatError(ValueError):
    """Bytes that are not a message of :func:`pack`."""


@dataclass
class Spec:
    """One figure to draw: ``kind`` names the drawing function (:data:`DRAW`), ``meta``
    (JSON values) and ``arrays`` (numeric arrays) are its inputs, ``caption`` its caption;
    ``stage1`` names the keys (of either) the first stage reads, known before the estimate."""

    kind: str
    meta: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    caption: str = ""
    stage1: frozenset = frozenset()

    def first(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(meta, arrays) of the first stage."""
        return ({k: v for k, v in self.meta.items() if k in self.stage1},
                {k: v for k, v in self.arrays.items() if k in self.stage1})

    def second(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(meta, arrays) the second stage adds."""
        return ({k: v for k, v in self.meta.items() if k not in self.stage1},
                {k: v for k, v in self.arrays.items() if k not in self.stage1})


@dataclass
class Drawing:
    """A figure whose first stage is done (:func:`start`)."""

    steps: Generator[None, None, tuple[bytes, int, int]]
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]


#: whether the first stage running now runs ahead of its second (:func:`start`'s ``ahead``)
_AHEAD = [False]


def start(kind: str, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray], *,
          ahead: bool = False) -> Drawing:
    """Run the first stage of a ``kind`` figure on the data's ``meta`` and ``arrays``.

    ``ahead``: the second stage comes later (the drawing process, while the model is
    fitted), so work that only shortens the second stage is worth doing now
    (:func:`ahead`); with both stages at once (:func:`render`) it would only add to them."""
    meta, arrays = dict(meta), dict(arrays)   # the drawing reads these again after its yield
    steps = DRAW[kind](meta, arrays)
    _AHEAD[0] = ahead
    try:
        next(steps)
    finally:
        _AHEAD[0] = False
    return Drawing(steps, meta, arrays)


def ahead() -> bool:
    """Whether the first stage now running (called from a drawing function before its
    yield) runs ahead of its second stage (:func:`start`)."""
    return _AHEAD[0]


def finish(drawing: Drawing, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
           ) -> tuple[bytes, int, int]:
    """Run the second stage with the estimate's ``meta`` and ``arrays``: the PNG and its
    pixel size."""
    drawing.meta.update(meta)
    drawing.arrays.update(arrays)
    try:
        next(drawing.steps)
    except StopIteration as done:
        return done.value
    raise RuntimeError("a drawing function yielded more than once")


def render(spec: Spec) -> Plot:
    """Draw ``spec`` in this process (both stages)."""
    png, width, height = finish(start(spec.kind, spec.meta, spec.arrays), {}, {})
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


def unpack(head: bytes, rest: bytes | bytearray | memoryview
           ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(meta, arrays) of a message whose first :data:`HEAD_SIZE` bytes are ``head`` and the
    rest ``rest``; the arrays are read-only views of ``rest``."""
    if len(head) != HEAD_SIZE or not head.startswith(_MAGIC):
        raise FormatError("not a figure message")
    header_size, body_size = _LENGTHS.unpack(head[len(_MAGIC):])
    if len(rest) != header_size + body_size:
        raise FormatError("a truncated figure message")
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
