"""From a ``--model`` value to a model class, and what the families say about themselves.

``--model`` is a built-in name or ``path/to/file.py:ClassName``.  Each family class
describes itself (``option_specs``, ``reads_text``, ``needs_data``, ``se_methods``; see
:class:`~src.models.base.MixtureModel`); :func:`family_options` gathers the built-in
families' options for the option table, so adding a family is one entry in
:data:`BUILTIN_MODELS` plus its module.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any, Mapping

from src.utils.errors import ModelError
from src.utils.messages import register, t
from src.utils.options import Option

from .base import MixtureModel

__all__ = ["BUILTIN_MODELS", "DEFAULT_MODEL", "get_model_class", "model_source_hash",
           "builtin_classes", "family_options", "options_of", "constructor_options",
           "option_phrases"]

#: name -> "module:Class" (imported lazily so one broken family does not break the others)
BUILTIN_MODELS: dict[str, str] = {
    "gmm": "src.models.gmm:GaussianMixtureModel",
    "lca": "src.models.lca:LatentClassModel",
    "mixreg": "src.models.mixreg:MixtureRegressionModel",
}
#: the model of a run that names none
DEFAULT_MODEL = "gmm"

register({
    "registry.unknown": {
        "en": "Unknown model '{spec}': use one of {names} or path/to/file.py:ClassName.",
        "zh": "未知模型 '{spec}'：请使用 {names} 之一，或 path/to/file.py:ClassName。"},
    "registry.no_file": {
        "en": "Model file {path} does not exist; check the path before ':{cls}'.",
        "zh": "模型文件 {path} 不存在；请检查 ':{cls}' 前面的路径。"},
    "registry.import_failed": {
        "en": "Model file {path} failed to import ({detail}); fix the file.",
        "zh": "模型文件 {path} 导入失败（{detail}）；请修正该文件。"},
    "registry.no_class": {
        "en": "There is no class '{cls}' in {path}; the MixtureModel subclasses defined there are: {found}.",
        "zh": "{path} 中没有类 '{cls}'；其中定义的 MixtureModel 子类有：{found}。"},
    "registry.no_class_none": {
        "en": "There is no class '{cls}' in {path}, and the file defines no subclass of src.models.base.MixtureModel.",
        "zh": "{path} 中没有类 '{cls}'，该文件也没有定义 src.models.base.MixtureModel 的子类。"},
    "registry.not_subclass": {
        "en": "'{cls}' in {path} is not a subclass of src.models.base.MixtureModel; derive it from MixtureModel.",
        "zh": "{path} 中的 '{cls}' 不是 src.models.base.MixtureModel 的子类；请让它继承 MixtureModel。"},
    "registry.option_clash": {
        "en": "Model families declare option '{option}' differently ({a} and {b}); give one of them another name.",
        "zh": "模型族对选项 '{option}' 的声明不一致（{a} 与 {b}）；请给其中一个改名。"},
})


def _is_file_spec(spec: str) -> bool:
    return ":" in spec and spec.rsplit(":", 1)[0].endswith(".py")


def get_model_class(spec: str) -> type[MixtureModel]:
    """Resolve a built-in name or ``file.py:ClassName`` to a MixtureModel subclass.

    Raises ModelError (a ValueError) with one sentence saying what was expected.
    """
    if spec in BUILTIN_MODELS:
        module_name, cls_name = BUILTIN_MODELS[spec].split(":")
        return getattr(importlib.import_module(module_name), cls_name)
    if not _is_file_spec(spec):
        raise ModelError(t("registry.unknown", spec=spec, names=", ".join(BUILTIN_MODELS)))
    path_text, cls_name = spec.rsplit(":", 1)
    path = Path(path_text)
    if not path.is_file():
        raise ModelError(t("registry.no_file", path=path_text, cls=cls_name))
    module_name = "user_model_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except ModelError:  # a class the family checks refused: that sentence, as it is
        raise
    except Exception as exc:  # the user's code: report, do not crash
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise ModelError(t("registry.import_failed", path=path_text, detail=detail)) from exc
    cls = getattr(module, cls_name, None)
    if cls is None:
        found = [name for name, obj in vars(module).items()
                 if isinstance(obj, type) and issubclass(obj, MixtureModel)
                 and obj.__module__ == module_name]
        if found:
            raise ModelError(t("registry.no_class", cls=cls_name, path=path_text,
                               found=", ".join(found)))
        raise ModelError(t("registry.no_class_none", cls=cls_name, path=path_text))
    if not (isinstance(cls, type) and issubclass(cls, MixtureModel)):
        raise ModelError(t("registry.not_subclass", cls=cls_name, path=path_text))
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


# ------------------------------------------------------- self-descriptions
def builtin_classes() -> dict[str, type[MixtureModel]]:
    """Every built-in family's class, by name."""
    return {name: get_model_class(name) for name in BUILTIN_MODELS}


def family_options() -> tuple[Option, ...]:
    """The options of every built-in family, each once (families may share one, declared
    identically); a clash is a programming error, raised at import."""
    seen: dict[str, Option] = {}
    for cls in builtin_classes().values():
        for opt in cls.option_specs:
            if opt.name in seen and seen[opt.name] != opt:
                raise ModelError(t("registry.option_clash", option=opt.name, a=seen[opt.name],
                                   b=opt))
            seen.setdefault(opt.name, opt)
    return tuple(seen.values())


def options_of(cls: type[MixtureModel]) -> tuple[Option, ...]:
    """The options ``cls`` reads: its declared ``option_specs``; a class that declares
    none (a user model) may read any built-in family's option."""
    return tuple(cls.option_specs) or family_options()


def constructor_options(cls: type[MixtureModel], values: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``values`` that ``cls``'s constructor accepts (all with ``**kwargs``)."""
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(values)
    return {k: v for k, v in values.items() if k in params}


def option_phrases(model: MixtureModel, lang: str = "en") -> list[str]:
    """Phrases describing a fitted model's options for reports ("full covariances"): the
    option's ``report`` template, or in ``lang`` the message ``option.report.<name>`` when
    one is registered (``{value}`` filled in)."""
    from ..utils.messages import template

    out = []
    for opt in type(getattr(model, "inner", model)).option_specs:   # a wrapper: its family's
        value = model.options.get(opt.name, opt.default)
        if opt.report and value is not None:
            text = (template(f"option.report.{opt.name}") or {}).get(lang)
            out.append(text.format(value=value) if text else opt.report.format(value))
    extra = getattr(model, "report_phrases", None)   # e.g. the covariate model's covariates
    return out + (list(extra(lang)) if callable(extra) else [])
