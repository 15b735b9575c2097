"""Per-row posteriors: ``posteriors.csv``, or partitioned Parquet for data larger than memory.

One row per input row the model kept, in input order (rows dropped by ``--drop-missing``
are absent; the data record counts them, ``n_dropped``).  Columns:

* the row's name: with ``--id COLUMN`` a column named as that column, holding its values
  (a text file's cells as written, a missing id empty); otherwise ``row``, the row's 0-based
  position in the input as pandas counts (dropped rows counted, so positions may skip);
* ``p1`` .. ``pK``: the posterior probability of each class (``MixtureModel.e_step``: the
  responsibilities at the estimate), classes counted from 1 in the estimate's canonical
  order, as in ``estimates.csv``; full precision (shortest round-trip text);
* ``class``: the modal class, 1..K (the first one on a tie).

Repeated ids are written as they come (each row keeps its line).  The posteriors are
computed ``chunk_size`` rows at a time, so the bytes do not depend on the chunk size beyond
the model's own rounding.

For partitioned input, :func:`write_posteriors_parquet` takes the partitions in input order
and writes one file per partition, ``part-00000000.parquet``, ``part-00000001.parquet``...:
reading the files in sorted order and their rows in file order gives the input order.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..inference.classification import responsibility_chunks
from ..models.base import Data, MixtureModel, Params
from .estimates import format_number

__all__ = ["POSTERIORS_CSV", "posterior_columns", "posteriors_csv", "write_posteriors_parquet",
           "part_name"]

#: the file name in the results folder
POSTERIORS_CSV = "posteriors.csv"
#: the name of the first column without ``--id``
ROW_COLUMN = "row"


def posterior_columns(n_components: int, id_column: str | None = None) -> list[str]:
    """``[id_column or "row", "p1", ..., "pK", "class"]``."""
    return ([str(id_column) if id_column is not None else ROW_COLUMN]
            + [f"p{k + 1}" for k in range(int(n_components))] + ["class"])


def _id_text(value: Any) -> str:
    """An id as text: integers as integers, other floats in full, missing empty."""
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        f = float(value)
        if f != f:
            return ""
        return str(int(f)) if f.is_integer() and abs(f) < 2 ** 53 else format_number(f)
    if isinstance(value, (np.integer, np.bool_)):
        return str(value.item())
    return str(value)


def _field(text: str) -> str:
    """A CSV field as the csv module writes it (quoted when it holds , " or a line end)."""
    if any(ch in text for ch in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _id_fields(labels: np.ndarray) -> list[str]:
    if labels.dtype.kind in "iu":
        return list(map(str, labels.tolist()))
    return [_field(_id_text(v)) for v in labels.tolist()]


def posteriors_csv(model: MixtureModel, data: Data, params: Params,
                   ids: Sequence[Any] | np.ndarray | None = None, *,
                   id_column: str | None = None, chunk_size: int = 4096) -> bytes:
    """The bytes of ``posteriors.csv`` (UTF-8, ``\\n`` line ends, as ``estimates.csv``).

    ``ids``: one name per row of ``data`` (the pipeline's ``Prepared.row_labels``: the
    ``--id`` values or the input positions); None: 0..n-1.  ``id_column``: the ``--id``
    column's name (``Prepared.id_column``), which heads the first column (None: ``row``).
    """
    n = int(next(iter(data.values())).shape[0])
    labels = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids)
    if labels.shape[0] != n:
        raise ValueError(f"{labels.shape[0]} ids for {n} rows")
    lines = [",".join(_field(c) for c in posterior_columns(model.n_components, id_column))]
    for a, tau in responsibility_chunks(model, data, params, chunk_size):
        names = _id_fields(labels[a:a + tau.shape[0]])
        modal = (tau.argmax(axis=1) + 1).tolist()
        # repr of a Python float is format_number's text (shortest round trip; nan, inf)
        lines.extend(f"{name},{','.join(map(repr, row))},{c}"
                     for name, row, c in zip(names, tau.tolist(), modal))
    lines.append("")
    return "\n".join(lines).encode("utf-8")


def part_name(index: int) -> str:
    """The file of partition ``index`` (0-based): names sort in partition order."""
    if not 0 <= int(index) < 10 ** 8:
        raise ValueError(f"partition index {index} out of range 0..99999999")
    return f"part-{int(index):08d}.parquet"


def _table(names: Sequence[str], labels: np.ndarray, tau: np.ndarray, schema: Any = None) -> Any:
    import pyarrow as pa

    columns = [pa.array(labels.tolist() if labels.dtype == object else labels, from_pandas=True)]
    columns += [pa.array(tau[:, k]) for k in range(tau.shape[1])]
    columns.append(pa.array((tau.argmax(axis=1) + 1).astype(np.int64)))
    table = pa.Table.from_arrays(columns, names=list(names))
    return table if schema is None else table.cast(schema)


def write_posteriors_parquet(parts: Iterable[tuple[Sequence[Any] | np.ndarray, Data]],
                             model: MixtureModel, params: Params, folder: str | Path, *,
                             id_column: str | None = None,
                             chunk_size: int = 4096) -> list[Path]:
    """Write the posteriors of partitioned data as Parquet files in ``folder``, one per
    partition, and return their paths in order.

    ``parts``: ``(ids, data)`` per partition in input order (ids: the partition's row names,
    as for :func:`posteriors_csv`; data: its arrays).  Each file has the columns of
    :func:`posterior_columns` (the id's type taken from the first partition, ``p1..pK``
    float64, ``class`` int64) and one row group per ``chunk_size`` rows, so memory is bounded
    by a partition.  Each file is written under a temporary name and renamed when complete;
    files ``part-*.parquet`` already in ``folder`` beyond the last partition are removed, so
    the folder holds exactly this result.
    """
    import pyarrow.parquet as pq

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = posterior_columns(model.n_components, id_column)
    schema = None
    written: list[Path] = []
    for index, (ids, part) in enumerate(parts):
        labels = np.asarray(ids)
        n = int(next(iter(part.values())).shape[0])
        if labels.shape[0] != n:
            raise ValueError(f"partition {index}: {labels.shape[0]} ids for {n} rows")
        path = folder / part_name(index)
        tmp = folder / f".{path.name}.tmp"
        writer = None
        try:
            for a, tau in responsibility_chunks(model, part, params, chunk_size):
                table = _table(names, labels[a:a + tau.shape[0]], tau, schema)
                if writer is None:
                    schema = table.schema
                    writer = pq.ParquetWriter(tmp, schema)
                writer.write_table(table)
            if writer is None:  # an empty partition: an empty file (the schema so far)
                empty = _table(names, labels[:0], np.zeros((0, model.n_components)), schema)
                writer = pq.ParquetWriter(tmp, empty.schema)
                writer.write_table(empty)
        finally:
            if writer is not None:
                writer.close()
        os.replace(tmp, path)
        written.append(path)
    keep = {p.name for p in written}
    for old in folder.glob("part-*.parquet"):
        if old.name not in keep:
            old.unlink()
    return written
