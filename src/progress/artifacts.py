"""Store phase results and checkpoint states that JSON alone cannot hold.

:func:`encode` turns a nested structure of dicts, lists, JSON scalars, numpy arrays and
pandas DataFrames into pure JSON plus side files: all arrays of one structure go into one
``.npz`` (``allow_pickle=False``), each DataFrame into a Parquet file.  Side files are
named by their content hash, so a file is never rewritten in place and the JSON that
references it (with its SHA-256) can always be checked.  :func:`decode` reverses it.
Nothing is ever pickled.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write_bytes, sha256_bytes, sha256_file

__all__ = ["encode", "decode", "ArtifactError", "Unstorable"]


class ArtifactError(Exception):
    """A referenced side file is missing or does not match its recorded hash."""


class Unstorable(TypeError):
    """A value of a type that cannot be stored without pickling."""


def encode(obj: Any, folder: Path, stem: str) -> tuple[Any, list[dict[str, str]]]:
    """Return ``(json_value, artifacts)``; side files are written into ``folder``.

    ``artifacts`` lists ``{"file": name, "sha256": digest}`` for every side file used.
    """
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
    if not (path.exists() and path.stat().st_size == len(data)):
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data, sync_dir=False)
    return {"file": name, "sha256": digest, "role": role}


def decode(stored: Any, folder: Path, *, verify: bool = True) -> Any:
    """Rebuild the structure written by :func:`encode`, checking every side file's hash."""
    files = stored.get("files", [])
    arrays: dict[str, np.ndarray] = {}
    frames: dict[str, Any] = {}
    for entry in files:
        path = Path(folder) / entry["file"]
        if not path.is_file():
            raise ArtifactError(f"artifact {path} is missing")
        if verify and sha256_file(path) != entry["sha256"]:
            raise ArtifactError(f"artifact {path} does not match its recorded checksum")
        if entry["role"] == "arrays":
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        else:
            import pandas as pd
            frames[entry["role"]] = pd.read_parquet(path)

    def walk(x: Any) -> Any:
        if isinstance(x, list):
            return [walk(v) for v in x]
        if isinstance(x, dict):
            if "__ndarray__" in x and len(x) == 1:
                if x["__ndarray__"] not in arrays:
                    raise ArtifactError(f"array {x['__ndarray__']} is missing from its artifact")
                return arrays[x["__ndarray__"]]
            if "__float__" in x and len(x) == 1:
                return float(x["__float__"])
            if "__dataframe__" in x and len(x) == 1:
                return frames[x["__dataframe__"]]
            if "__items__" in x and len(x) == 1:
                return {_hashable(walk(k)): walk(v) for k, v in x["__items__"]}
            return {k: walk(v) for k, v in x.items()}
        return x

    return walk(stored["value"])


def _hashable(x: Any) -> Any:
    return tuple(x) if isinstance(x, list) else x
