"""The progress file as a document: its fields, its checksum, and reading it without trust.

:func:`serialise` writes the canonical JSON with a SHA-256 checksum over every other
field; :func:`parse` checks it and raises :class:`Damaged` (with a reason in the user's
language) or :class:`FutureSchema` (written by a newer version).
"""

from __future__ import annotations

import json
from typing import Any

from ..utils.messages import register, t
from .atomic import sha256_bytes

__all__ = ["SCHEMA_VERSION", "REQUIRED_FIELDS", "Damaged", "FutureSchema", "serialise", "parse"]

SCHEMA_VERSION = 1
REQUIRED_FIELDS = ("task_name", "current_phase", "completed_phases", "phase_results",
                   "start_time", "last_update", "step_count", "is_resumed", "schema_version")

register({
    "reason.empty": {"en": "is empty", "zh": "为空"},
    "reason.json": {"en": "is not valid JSON (it may be truncated)", "zh": "不是有效的 JSON（可能被截断）"},
    "reason.shape": {"en": "does not have the fields of a progress file", "zh": "缺少进度文件应有的字段"},
    "reason.checksum": {"en": "fails its checksum", "zh": "校验和不匹配"},
    "reason.foreign": {"en": "belongs to task {other!r}", "zh": "属于任务 {other!r}"},
    "reason.missing": {"en": "is missing", "zh": "不存在"},
})


class Damaged(Exception):
    """The document cannot be used; ``reason`` completes 'Progress file X ...'."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FutureSchema(Exception):
    """The document was written by a newer schema version (``found``)."""

    def __init__(self, found: int) -> None:
        super().__init__(found)
        self.found = found


def _canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


def serialise(doc: dict[str, Any]) -> bytes:
    """The bytes of the progress file: ``doc`` plus its checksum, indented for people."""
    out = dict(doc)
    out["checksum"] = sha256_bytes(_canonical(doc))
    return json.dumps(out, sort_keys=True, indent=1, allow_nan=False).encode("utf-8")


def parse(raw: bytes, task_name: str) -> dict[str, Any]:
    """The checked document of task ``task_name``, or Damaged / FutureSchema."""
    if not raw.strip():
        raise Damaged(t("reason.empty"))
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise Damaged(t("reason.json")) from None
    if not isinstance(doc, dict) or not all(k in doc for k in REQUIRED_FIELDS + ("checksum",)):
        raise Damaged(t("reason.shape"))
    version = doc.get("schema_version")
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise FutureSchema(version)
    checksum = doc.pop("checksum")
    if sha256_bytes(_canonical(doc)) != checksum:
        raise Damaged(t("reason.checksum"))
    if doc["task_name"] != task_name:
        raise Damaged(t("reason.foreign", other=doc["task_name"]))
    if not (isinstance(doc["completed_phases"], list) and isinstance(doc["phase_results"], dict)):
        raise Damaged(t("reason.shape"))
    return doc
