"""Merging the chunks' metas of partitioned input (the default of
:meth:`~src.models.base.MixtureModel.merge_meta`, and the families' helpers)."""

from __future__ import annotations

import json
import math
from typing import Any, Mapping, Sequence

import numpy as np

from src.utils.errors import DataError
from src.utils.messages import register, t

__all__ = ["merge_equal", "weighted_mean"]

register({
    "partitions.meta_differs": {
        "en": "The chunks of {source} give model {model!r} different {key!r} ({first} and {other}), "
              "so they cannot be fitted as one data set; make the files agree or fit them "
              "separately.",
        "zh": "{source} 的各数据块为模型 {model!r} 给出了不同的 {key!r}（{first} 与 {other}），"
              "无法作为一个数据集拟合；请使各文件一致，或分别拟合。"},
})


def weighted_mean(values: Sequence[Any], counts: Sequence[int]) -> Any:
    """The count-weighted mean of numbers or of equal-length lists of numbers (each entry
    summed with ``math.fsum``, so the order of the chunks changes nothing); chunks with
    count 0 are left out."""
    pairs = [(v, int(c)) for v, c in zip(values, counts) if int(c) > 0]
    total = sum(c for _, c in pairs)
    if not pairs:
        return values[0] if values else None
    if isinstance(pairs[0][0], (list, tuple, np.ndarray)):
        width = len(pairs[0][0])
        return [math.fsum(float(v[j]) * c for v, c in pairs) / total for j in range(width)]
    return math.fsum(float(v) * c for v, c in pairs) / total


def _show(value: Any) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def merge_equal(metas: Sequence[Mapping[str, Any]], counts: Sequence[int], *,
                source: str = "the data", model: str = "", summed: Sequence[str] = ("n_dropped",),
                averaged: Sequence[str] = (), skip: Sequence[str] = ()) -> dict[str, Any]:
    """The default merge of chunks' meta (:meth:`~src.models.base.MixtureModel.merge_meta`).

    ``summed`` keys are added up over every chunk, ``averaged`` ones are the count-weighted
    mean (:func:`weighted_mean`) over the chunks that kept rows, ``skip`` ones and those
    starting with ``_`` are left out (the caller fills them), and every other key must be
    equal in all chunks that kept rows (all chunks when none did): otherwise a DataError
    naming the key.
    """
    metas = [dict(m) for m in metas]
    counts = [int(c) for c in counts]
    if not metas:
        return {}
    with_rows = [m for m, c in zip(metas, counts) if c > 0] or metas
    out: dict[str, Any] = {}
    for key in metas[0]:
        if key.startswith("_") or key in skip:
            continue
        if key in summed:
            out[key] = sum(int(m.get(key, 0) or 0) for m in metas)
        elif key in averaged:
            out[key] = weighted_mean([m[key] for m in metas], counts)
        else:
            first = with_rows[0].get(key)
            for m in with_rows[1:]:
                if m.get(key) != first:
                    raise DataError(t("partitions.meta_differs", source=source, model=model,
                                      key=key, first=_show(first), other=_show(m.get(key))))
            out[key] = first
    return out
