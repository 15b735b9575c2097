"""From a ``--model`` value to a model class: a built-in name or ``path/to/file.py:ClassName``."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path

from .base import MixtureModel

__all__ = ["BUILTIN_MODELS", "get_model_class", "model_source_hash"]

#: name -> "module:Class" (imported lazily so one broken family does not break the others)
BUILTIN_MODELS: dict[str, str] = {
    "gmm": "src.models.gmm:GaussianMixtureModel",
    "lca": "src.models.lca:LatentClassModel",
    "mixreg": "src.models.mixreg:MixtureRegressionModel",
}


def _is_file_spec(spec: str) -> bool:
    return ":" in spec and spec.rsplit(":", 1)[0].endswith(".py")


def get_model_class(spec: str) -> type[MixtureModel]:
    """Resolve a built-in name or ``file.py:ClassName`` to a MixtureModel subclass.

    Raises ValueError with one sentence saying what was expected.
    """
    if spec in BUILTIN_MODELS:
        module_name, cls_name = BUILTIN_MODELS[spec].split(":")
        return getattr(importlib.import_module(module_name), cls_name)
    if not _is_file_spec(spec):
        raise ValueError(
            f"unknown model {spec!r}: use one of {', '.join(sorted(BUILTIN_MODELS))} "
            "or path/to/file.py:ClassName")
    path_text, cls_name = spec.rsplit(":", 1)
    path = Path(path_text)
    if not path.is_file():
        raise ValueError(f"model file {path_text!r} does not exist")
    module_name = "user_model_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # the user's code: report, do not crash
        raise ValueError(f"model file {path_text!r} failed to import: {exc}") from exc
    cls = getattr(module, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, MixtureModel)):
        raise ValueError(
            f"{cls_name!r} in {path_text!r} is not a subclass of src.models.base.MixtureModel")
    try:  # let the class travel to Dask workers by value
        import cloudpickle
        cloudpickle.register_pickle_by_value(module)
    except Exception:
        pass
    return cls


def model_source_hash(spec: str) -> str | None:
    """SHA-256 of a user model file (part of the fingerprint); None for built-ins."""
    if spec in BUILTIN_MODELS or not _is_file_spec(spec):
        return None
    path = Path(spec.rsplit(":", 1)[0])
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
