"""Store phase results and checkpoint states that JSON alone cannot hold.

:func:`encode` turns a nested structure of dicts, lists, JSON scalars, numpy arrays and
pandas DataFrames into pure JSON plus side files: all arrays of one structure go into one
``.npz`` (``allow_pickle=False``), each DataFrame into a Parquet file.  Side files are
named by their content hash, so a file is never rewritten in place and the JSON that
references it (with its SHA-256) can always be checked.  :func:`decode` reverses it.
Nothing is ever pickled.

The JSON is not trusted: :func:`decode` accepts only bare file names of the form
:func:`encode` produces (``{stem}-{16 hex}.npz|.parquet``, the hex being the start of the
recorded SHA-256) inside the given folder, never a path or a symbolic link, and reads each
file once (hash checked on the bytes it then loads).  :func:`collect_garbage` deletes
unreferenced files without following symbolic links; :func:`set_aside` keeps a damaged
artifact as ``NAME.damaged`` (never deleted by the garbage collection).
"""

from __future__ import annotations

import io
import math
import os
import re
import stat
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .atomic import atomic_write_bytes, sha256_bytes

__all__ = ["encode", "decode", "references", "collect_garbage", "set_aside", "ArtifactError",
           "Unstorable", "ARTIFACT_NAME", "DAMAGED_SUFFIX"]

#: the stem given to :func:`encode` (the tracker uses ``result-PHASE`` / ``checkpoint-PHASE``)
STEM_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,120}")
#: every artifact file name :func:`encode` produces, and the only ones :func:`decode` accepts
ARTIFACT_NAME = re.compile(r"(?P<stem>[A-Za-z0-9][A-Za-z0-9._-]{0,120})-(?P<digest>[0-9a-f]{16})"
                           r"(?P<ext>\.npz|\.parquet)")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FRAME_ROLE = re.compile(r"f[0-9]{1,6}")
DAMAGED_SUFFIX = ".damaged"


class ArtifactError(Exception):
    """A referenced side file is missing or does not match its recorded hash."""


class Unstorable(TypeError):
    """A value of a type that cannot be stored without pickling."""


def encode(obj: Any, folder: Path, stem: str) -> tuple[Any, list[dict[str, str]]]:
    """Return ``(json_value, artifacts)``; side files are written into ``folder``.

    ``artifacts`` lists ``{"file": name, "sha256": digest}`` for every side file used.
    """
    if not STEM_PATTERN.fullmatch(stem):
        raise ValueError(f"artifact stem {stem!r} is not a safe file name part")
    arrays: dict[str, np.ndarray] = {}
    frames: list[tuple[str, Any]] = []

    def walk(x: Any) -> Any:
        if x is None or isinstance(x, (bool, str)):
            return x
        if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
            return int(x)
        if isinstance(x, (float, np.floating)):
            f = float(x)
            return f if math.isfinite(f) else {"__float__": repr(f)}
        if isinstance(x, np.bool_):
            return bool(x)
        if isinstance(x, np.ndarray):
            if x.dtype == object:
                raise Unstorable("a numpy array of Python objects")
            key = f"a{len(arrays)}"
            arrays[key] = x
            return {"__ndarray__": key}
        if isinstance(x, dict):
            if all(isinstance(k, str) for k in x):
                return {k: walk(v) for k, v in x.items()}
            return {"__items__": [[walk(k), walk(v)] for k, v in x.items()]}
        if isinstance(x, (list, tuple)):
            return [walk(v) for v in x]
        if type(x).__name__ == "DataFrame" and hasattr(x, "to_parquet"):
            frames.append((f"f{len(frames)}", x))
            return {"__dataframe__": frames[-1][0]}
        raise Unstorable(f"a value of type {type(x).__name__}")

    value = walk(obj)
    artifacts: list[dict[str, str]] = []
    if arrays:
        buf = io.BytesIO()
        np.savez(buf, allow_pickle=False, **arrays)
        artifacts.append(_put(folder, stem, ".npz", buf.getvalue(), "arrays"))
    for key, frame in frames:
        buf = io.BytesIO()
        frame.to_parquet(buf, index=True)
        artifacts.append(_put(folder, stem, ".parquet", buf.getvalue(), key))
    return {"value": value, "files": artifacts}, artifacts


def _put(folder: Path, stem: str, ext: str, data: bytes, role: str) -> dict[str, str]:
    digest = sha256_bytes(data)
    name = f"{stem}-{digest[:16]}{ext}"
    path = folder / name
    try:
        st = os.lstat(path)
        present = stat.S_ISREG(st.st_mode) and st.st_size == len(data)
    except FileNotFoundError:
        present = False
    if not present:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data, sync_dir=False)
    return {"file": name, "sha256": digest, "role": role}


def _checked_entry(entry: Any) -> tuple[str, str, str]:
    """``(file, sha256, role)`` of a side-file entry, or ArtifactError when it is not one
    :func:`encode` could have written (a path, a foreign name, a mismatched digest)."""
    if not isinstance(entry, dict):
        raise ArtifactError("an artifact entry is not an object")
    name, digest, role = entry.get("file"), entry.get("sha256"), entry.get("role")
    if not (isinstance(name, str) and isinstance(digest, str) and isinstance(role, str)):
        raise ArtifactError("an artifact entry lacks its file name, checksum or role")
    match = ARTIFACT_NAME.fullmatch(name)
    if match is None:
        raise ArtifactError(f"artifact name {name!r} is not a file name this pipeline writes")
    if not _SHA256.fullmatch(digest) or match["digest"] != digest[:16]:
        raise ArtifactError(f"artifact name {name!r} does not match its recorded checksum")
    if (role == "arrays") != (match["ext"] == ".npz") or (
            role != "arrays" and not _FRAME_ROLE.fullmatch(role)):
        raise ArtifactError(f"artifact {name!r} has an unknown role {role!r}")
    return name, digest, role


def references(stored: Any) -> set[str]:
    """The side-file names a stored value refers to (ArtifactError when malformed)."""
    if not isinstance(stored, dict):
        raise ArtifactError("a stored value is not an object")
    files = stored.get("files", [])
    if not isinstance(files, list):
        raise ArtifactError("the artifact list of a stored value is not a list")
    return {_checked_entry(entry)[0] for entry in files}


def _read_regular(folder: Path, name: str) -> bytes:
    """The bytes of ``folder/name``, never through a symbolic link."""
    path = Path(folder) / name
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise ArtifactError(f"artifact {path} is missing") from None
    except OSError as exc:
        raise ArtifactError(f"artifact {path} cannot be read ({exc.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ArtifactError(f"artifact {path} is not a regular file")
        chunks = []
        while block := os.read(fd, 1 << 20):
            chunks.append(block)
        return b"".join(chunks)
    finally:
        os.close(fd)


def decode(stored: Any, folder: Path, *, verify: bool = True) -> Any:
    """Rebuild the structure written by :func:`encode`, checking every side file's hash."""
    if not isinstance(stored, dict) or "value" not in stored:
        raise ArtifactError("a stored value is not an object with a value")
    references(stored)  # every entry checked before any file is opened
    arrays: dict[str, np.ndarray] = {}
    frames: dict[str, Any] = {}
    for entry in stored.get("files", []):
        name, digest, role = _checked_entry(entry)
        data = _read_regular(folder, name)
        if verify and sha256_bytes(data) != digest:
            raise ArtifactError(f"artifact {Path(folder) / name} does not match its recorded checksum")
        if role == "arrays":
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        else:
            import pandas as pd
            frames[role] = pd.read_parquet(io.BytesIO(data))

    def walk(x: Any) -> Any:
        if isinstance(x, list):
            return [walk(v) for v in x]
        if isinstance(x, dict):
            if "__ndarray__" in x and len(x) == 1:
                if x["__ndarray__"] not in arrays:
                    raise ArtifactError(f"array {x['__ndarray__']} is missing from its artifact")
                return arrays[x["__ndarray__"]]
            if "__float__" in x and len(x) == 1:
                if x["__float__"] not in ("nan", "inf", "-inf"):
                    raise ArtifactError(f"stored float {x['__float__']!r} is not a non-finite value")
                return float(x["__float__"])
            if "__dataframe__" in x and len(x) == 1:
                if x["__dataframe__"] not in frames:
                    raise ArtifactError(f"data frame {x['__dataframe__']!r} is missing from its artifacts")
                return frames[x["__dataframe__"]]
            if "__items__" in x and len(x) == 1:
                items = x["__items__"]
                if not (isinstance(items, list)
                        and all(isinstance(i, list) and len(i) == 2 for i in items)):
                    raise ArtifactError("a stored mapping is not a list of key-value pairs")
                return {_hashable(walk(k)): walk(v) for k, v in items}
            return {k: walk(v) for k, v in x.items()}
        return x

    return walk(stored["value"])


def _hashable(x: Any) -> Any:
    return tuple(x) if isinstance(x, list) else x


def _open_folder(folder: Path) -> int | None:
    """A descriptor of ``folder`` itself (never of a link's target), or None when absent."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        return os.open(folder, flags)
    except FileNotFoundError:
        return None


def collect_garbage(folder: Path, keep: Iterable[str]) -> int:
    """Delete the entries of ``folder`` not in ``keep``; return how many.

    Never follows a symbolic link: a linked ``folder`` raises OSError (ELOOP/ENOTDIR)
    before anything is deleted, links inside it are removed as links, sub-folders and
    ``*.damaged`` files (set aside for the user) are left alone.
    """
    fd = _open_folder(Path(folder))
    if fd is None:
        return 0
    keep = set(keep)
    removed = 0
    try:
        with os.scandir(fd) as entries:
            names = [e.name for e in entries
                     if e.name not in keep and not e.name.endswith(DAMAGED_SUFFIX)
                     and not e.is_dir(follow_symlinks=False)]
        for name in names:
            try:
                os.unlink(name, dir_fd=fd)
                removed += 1
            except OSError:
                pass
    finally:
        os.close(fd)
    return removed


def set_aside(folder: Path, name: str) -> Path | None:
    """Rename the artifact ``folder/name`` to ``name.damaged`` (kept for the user, never
    collected); return the new path, or None when there was nothing (or no folder) to keep."""
    if not ARTIFACT_NAME.fullmatch(name):
        return None
    fd = _open_folder(Path(folder))
    if fd is None:
        return None
    try:
        if not stat.S_ISREG(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
            return None
        os.rename(name, name + DAMAGED_SUFFIX, src_dir_fd=fd, dst_dir_fd=fd)
        return Path(folder) / (name + DAMAGED_SUFFIX)
    except OSError:
        return None
    finally:
        os.close(fd)
