"""What a ``--data`` value points at: a built-in data set, one file, a folder, a pattern, nothing.

:func:`classify_source` only looks (it never raises); :mod:`src.data.loading` reads
``builtin`` and ``file`` as one table.  A folder or glob of Parquet files is partitioned
input: :func:`parquet_files` lists its files (every one, sorted) for
:mod:`src.data.partitions`, which reads them chunk by chunk.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = ["SourceInfo", "SourceKind", "classify_source", "parquet_files", "PARQUET_SUFFIXES",
           "TEXT_SUFFIXES"]

SourceKind = Literal["builtin", "file", "folder", "glob", "missing", "other"]

PARQUET_SUFFIXES = (".parquet", ".pq")
TEXT_SUFFIXES = (".csv", ".tsv", ".txt")
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zip")
#: stop counting a folder's files after this many entries (a huge folder must not stall a run)
_SCAN_LIMIT = 100_000


@dataclass(frozen=True)
class SourceInfo:
    """One data source as given: its kind and, for a folder or pattern, the data files seen.

    ``files`` lists the CSV/TSV/Parquet files found (sorted, at most a few), ``n_parquet``
    and ``n_text`` count them all (folders are searched with their subfolders, as
    partitioned Parquet data sets nest ``key=value`` folders).
    """

    kind: SourceKind
    text: str
    path: Path | None = None
    name: str | None = None          # the built-in data set's name
    n_parquet: int = 0
    n_text: int = 0
    files: tuple[Path, ...] = field(default_factory=tuple)
    truncated: bool = False          # the folder scan stopped at _SCAN_LIMIT entries


def _data_kind(name: str) -> str | None:
    """``parquet``, ``text`` or None from a file name (a compression suffix is looked through)."""
    lower = name.lower()
    for comp in _COMPRESSED:
        if lower.endswith(comp):
            lower = lower[: -len(comp)]
            break
    if lower.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if lower.endswith(TEXT_SUFFIXES):
        return "text"
    return None


def _count(paths: list[Path], *, truncated: bool = False) -> dict[str, object]:
    n = {"parquet": 0, "text": 0}
    found: list[Path] = []
    for p in paths:
        kind = _data_kind(p.name)
        if kind is not None:
            n[kind] += 1
            found.append(p)
    return {"n_parquet": n["parquet"], "n_text": n["text"], "files": tuple(sorted(found)[:5]),
            "truncated": truncated}


def _scan_folder(path: Path) -> dict[str, object]:
    paths: list[Path] = []
    seen = 0
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]
        for f in files:
            seen += 1
            if seen > _SCAN_LIMIT:
                return _count(paths, truncated=True)
            if not f.startswith((".", "_")):
                paths.append(Path(root) / f)
    return _count(paths)


def classify_source(source: str | os.PathLike[str]) -> SourceInfo:
    """Say what ``source`` is, without reading any file's contents.

    ``builtin:NAME`` is a built-in data set; an existing regular file is ``file``; an existing
    folder is ``folder``; a path with ``*``, ``?`` or ``[`` that does not exist as written is
    ``glob``; anything else that exists (a device, a socket) is ``other``; otherwise ``missing``.
    Hidden and ``_``-prefixed entries (``_SUCCESS``, ``.crc``) are not counted, as Parquet
    writers leave them beside the data.
    """
    text = str(source)
    if text.startswith("builtin:"):
        return SourceInfo("builtin", text, name=text[len("builtin:"):])
    path = Path(text).expanduser()
    if path.is_file():
        return SourceInfo("file", text, path.resolve())
    if path.is_dir():
        return SourceInfo("folder", text, path.resolve(), **_scan_folder(path))  # type: ignore[arg-type]
    if path.exists():
        return SourceInfo("other", text, path)
    if any(c in text for c in "*?["):
        matches = [Path(p) for p in glob.glob(os.path.expanduser(text), recursive=True)]
        return SourceInfo("glob", text, None, **_count([p for p in matches if p.is_file()]))  # type: ignore[arg-type]
    return SourceInfo("missing", text, path)


def _hidden(name: str) -> bool:
    return name.startswith((".", "_"))


def _walk_parquet(folder: Path) -> list[Path]:
    """Every Parquet file under ``folder`` (subfolders too), hidden and ``_`` entries skipped."""
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not _hidden(d)]
        found.extend(Path(root) / f for f in files
                     if not _hidden(f) and f.lower().endswith(PARQUET_SUFFIXES))
    return found


def parquet_files(info: SourceInfo) -> list[Path]:
    """The Parquet files of a ``file``, ``folder`` or ``glob`` source: absolute, sorted by
    path (as text), each once.

    A folder is searched with its subfolders (``key=value`` folders of partitioned data
    sets); a pattern's matches that are folders are searched the same way.  Names starting
    with ``.`` or ``_`` (``_SUCCESS``, ``.crc``, ``_metadata``) are skipped, and so are
    files not named ``.parquet`` / ``.pq``, except a single file given as it is.
    """
    if info.kind == "file" and info.path is not None:
        return [info.path]
    if info.kind == "folder" and info.path is not None:
        paths = _walk_parquet(info.path)
    elif info.kind == "glob":
        paths = []
        for match in glob.glob(os.path.expanduser(info.text), recursive=True):
            m = Path(match)
            if m.is_dir():
                paths.extend(_walk_parquet(m))
            elif m.is_file() and not _hidden(m.name) and m.name.lower().endswith(PARQUET_SUFFIXES):
                paths.append(m)
    else:
        return []
    return sorted({p.resolve() for p in paths}, key=str)
