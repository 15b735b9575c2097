"""Messages to the user in English or Chinese.

Each module that talks to the user registers its own templates with :func:`register`
(``{key: {"en": ..., "zh": ...}}``) and renders them with :func:`t`.  The language is set
once at the edge (``--lang``); the default is ``zh`` when ``LANG`` starts with ``zh``.
"""

from __future__ import annotations

import os
from types import MappingProxyType
from typing import Any, Mapping

__all__ = ["register", "t", "template", "templates", "set_language", "get_language",
           "default_language"]

_TEMPLATES: dict[str, dict[str, str]] = {}
_LANG: list[str] = []


def default_language() -> str:
    """``zh`` when the LANG environment variable starts with ``zh``, else ``en``."""
    return "zh" if os.environ.get("LANG", "").lower().startswith("zh") else "en"


def set_language(lang: str | None) -> None:
    if lang not in (None, "en", "zh"):
        raise ValueError(f"--lang must be en or zh, got {lang!r}")
    _LANG[:] = [lang or default_language()]


def get_language() -> str:
    return _LANG[0] if _LANG else default_language()


def register(templates: Mapping[str, Mapping[str, str]]) -> None:
    """Add message templates; a key registered twice must not change its text."""
    for key, texts in templates.items():
        if "en" not in texts:
            raise ValueError(f"message {key!r} has no English text")
        _TEMPLATES[key] = dict(texts)


def template(key: str) -> Mapping[str, str] | None:
    """The texts of message ``key``, ``{language: text}`` (read-only), or None when it is not
    registered: for code that renders one message in a given language, without the copy of
    every template :func:`templates` makes (~350 of them, 4 ms)."""
    texts = _TEMPLATES.get(key)
    return None if texts is None else MappingProxyType(texts)


def templates() -> Mapping[str, Mapping[str, str]]:
    """Every registered template, ``{key: {language: text}}``, as a read-only snapshot.

    For code that reads messages back (e.g. counting warnings by key whatever the language
    they were written in); registering goes through :func:`register` only.
    """
    return MappingProxyType({key: MappingProxyType(dict(texts)) for key, texts in _TEMPLATES.items()})


def t(key: str, /, **fields: Any) -> str:
    """The message ``key`` in the current language, with ``fields`` filled in."""
    texts = _TEMPLATES.get(key)
    if texts is None:
        return key + (": " + ", ".join(f"{k}={v}" for k, v in fields.items()) if fields else "")
    template = texts.get(get_language()) or texts["en"]
    return template.format(**fields)
