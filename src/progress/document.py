"""The progress file as a document: its fields, its checksum, and reading it without trust.

:func:`serialise` writes the canonical JSON with a SHA-256 checksum over every other
field; :func:`parse` reads it strictly (no ``NaN``/``Infinity``, no number that overflows,
bounded nesting), checks the checksum and then the schema (types, ranges, phase names), and
raises :class:`Damaged` (with a reason in the user's language) or :class:`FutureSchema`
(written by a newer version).  A checksum only proves the file was written as a whole; the
schema check is what makes a well-formed but wrong file (a hand edit with a recomputed
checksum, another tool) damage instead of a crash later.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Collection

from ..utils.messages import register, t
from .artifacts import ArtifactError, references
from .atomic import sha256_bytes
from .paths import is_safe_name

__all__ = ["SCHEMA_VERSION", "REQUIRED_FIELDS", "STATUSES", "MAX_DEPTH", "Damaged", "FutureSchema",
           "serialise", "parse", "validate"]

SCHEMA_VERSION = 1
REQUIRED_FIELDS = ("task_name", "current_phase", "completed_phases", "phase_results",
                   "start_time", "last_update", "step_count", "is_resumed", "schema_version")
STATUSES = ("new", "running", "completed", "interrupted", "failed")
#: deepest nesting of a progress file (phase results included) that is read
MAX_DEPTH = 100
#: largest time stamp accepted (the year 5138): beyond it a time is not a time
_MAX_TIME = 1e11
_MAX_COUNT = 2**53

register({
    "reason.empty": {"en": "is empty", "zh": "为空"},
    "reason.json": {"en": "is not valid JSON (it may be truncated)", "zh": "不是有效的 JSON（可能被截断）"},
    "reason.shape": {"en": "does not have the fields of a progress file", "zh": "缺少进度文件应有的字段"},
    "reason.checksum": {"en": "fails its checksum", "zh": "校验和不匹配"},
    "reason.foreign": {"en": "belongs to task {other!r}", "zh": "属于任务 {other!r}"},
    "reason.missing": {"en": "is missing", "zh": "不存在"},
    "reason.unreadable": {"en": "cannot be read ({detail})", "zh": "无法读取（{detail}）"},
    "reason.number": {"en": "holds a number JSON does not allow or that overflows ({detail})",
                      "zh": "包含 JSON 不允许或溢出的数值（{detail}）"},
    "reason.deep": {"en": "is nested more than {depth} levels deep",
                    "zh": "嵌套层数超过 {depth} 层"},
    "reason.field": {"en": "has an invalid field {field} ({detail})",
                     "zh": "字段 {field} 无效（{detail}）"},
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


# ------------------------------------------------------------------ strict JSON
class _BadNumber(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _BadNumber(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _BadNumber(text[:20])
    return value


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_BRACKET = re.compile(r"[\[\]{}]")


def _depth(text: str) -> int:
    """Deepest bracket nesting of JSON text (strings removed first), stopping early once
    it exceeds :data:`MAX_DEPTH`."""
    depth = deepest = 0
    for m in _BRACKET.finditer(_STRING.sub("", text)):
        if m.group() in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_DEPTH:
                    break
        else:
            depth -= 1
    return deepest


def _load_strict(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Damaged(t("reason.json")) from None
    if _depth(text) > MAX_DEPTH:
        raise Damaged(t("reason.deep", depth=MAX_DEPTH))
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except _BadNumber as exc:
        raise Damaged(t("reason.number", detail=str(exc))) from None
    except RecursionError:
        raise Damaged(t("reason.deep", depth=MAX_DEPTH)) from None
    except ValueError as exc:  # JSONDecodeError, or an integer too long to convert
        if isinstance(exc, json.JSONDecodeError):
            raise Damaged(t("reason.json")) from None
        raise Damaged(t("reason.number", detail=str(exc)[:80])) from None


# ---------------------------------------------------------------------- schema
def _bad(field: str, detail: str) -> Damaged:
    return Damaged(t("reason.field", field=field, detail=detail))


def _int(doc: dict, field: str, low: int = 0, high: int = _MAX_COUNT) -> None:
    v = doc[field]
    if type(v) is not int or not low <= v <= high:
        raise _bad(field, f"expected an integer from {low} to {high}, got {v!r:.40}")


def _time(doc: dict, field: str) -> None:
    v = doc[field]
    if type(v) not in (int, float) or not 0 <= v <= _MAX_TIME:
        raise _bad(field, f"expected a time in seconds since 1970, got {v!r:.40}")


def _phase(field: str, v: Any, phases: Collection[str] | None) -> None:
    if not is_safe_name(v):
        raise _bad(field, f"{v!r:.40} is not a phase name")
    if phases is not None and v not in phases:
        raise _bad(field, f"unknown phase {v!r}")


def _stored(field: str, v: Any) -> None:
    """A stored result/state: ``{"value": ..., "files": [...]}`` (or ``{"unstorable": text}``)."""
    if not isinstance(v, dict):
        raise _bad(field, "not an object")
    if "unstorable" in v:
        if not isinstance(v["unstorable"], str):
            raise _bad(field, "unstorable without a reason")
        return
    if "value" not in v:
        raise _bad(field, "no value")
    try:
        references(v)
    except ArtifactError as exc:
        raise _bad(field, str(exc)) from None


def _fingerprint(field: str, v: Any) -> None:
    if v is not None and not (isinstance(v, dict) and all(isinstance(k, str) for k in v)):
        raise _bad(field, "not an object")


def validate(doc: dict[str, Any], phases: Collection[str] | None = None) -> None:
    """Damaged unless ``doc`` (checksum removed) has the schema the tracker writes.

    ``phases``: the phase names a run knows; None accepts any safe phase name.
    """
    _int(doc, "schema_version", 1, SCHEMA_VERSION)
    if doc["current_phase"] is not None:
        _phase("current_phase", doc["current_phase"], phases)
    completed = doc["completed_phases"]
    if not isinstance(completed, list) or len(set(map(repr, completed))) != len(completed):
        raise _bad("completed_phases", "expected a list of distinct phase names")
    for p in completed:
        _phase("completed_phases", p, phases)
    results = doc["phase_results"]
    if not isinstance(results, dict):
        raise _bad("phase_results", "not an object")
    for p, stored in results.items():
        _phase("phase_results", p, phases)
        _stored(f"phase_results.{p}", stored)
    fps = doc.get("phase_fingerprints", {})
    if not isinstance(fps, dict):
        raise _bad("phase_fingerprints", "not an object")
    for p, fp in fps.items():
        _phase("phase_fingerprints", p, phases)
        _fingerprint(f"phase_fingerprints.{p}", fp)
    ck = doc.get("checkpoint")
    if ck is not None:
        if not isinstance(ck, dict) or not all(k in ck for k in ("phase", "count", "state")):
            raise _bad("checkpoint", "expected an object with phase, count and state")
        _phase("checkpoint.phase", ck["phase"], phases)
        _int(ck, "count")
        _stored("checkpoint.state", ck["state"])
        if "unstorable" in ck["state"]:
            raise _bad("checkpoint.state", "not a stored state")
        _fingerprint("checkpoint.fingerprint", ck.get("fingerprint"))
    _time(doc, "start_time")
    _time(doc, "last_update")
    _int(doc, "step_count")
    if type(doc["is_resumed"]) is not bool:
        raise _bad("is_resumed", f"expected true or false, got {doc['is_resumed']!r:.40}")
    if "resume_count" in doc:
        _int(doc, "resume_count")
    if doc.get("status", "new") not in STATUSES:
        raise _bad("status", f"expected one of {', '.join(STATUSES)}")
    for field in ("end_reason", "host"):
        if doc.get(field) is not None and not isinstance(doc[field], str):
            raise _bad(field, "expected text")
    if doc.get("pid") is not None:
        _int(doc, "pid", 0, 2**31)


def parse(raw: bytes, task_name: str, phases: Collection[str] | None = None) -> dict[str, Any]:
    """The checked document of task ``task_name``, or Damaged / FutureSchema."""
    if not raw.strip():
        raise Damaged(t("reason.empty"))
    doc = _load_strict(raw)
    if not isinstance(doc, dict) or not all(k in doc for k in REQUIRED_FIELDS + ("checksum",)):
        raise Damaged(t("reason.shape"))
    version = doc.get("schema_version")
    if type(version) is int and version > SCHEMA_VERSION:
        raise FutureSchema(version)
    checksum = doc.pop("checksum")
    try:
        ok = sha256_bytes(_canonical(doc)) == checksum
    except (ValueError, RecursionError):  # cannot be the canonical form of anything we wrote
        ok = False
    if not ok:
        raise Damaged(t("reason.checksum"))
    if doc["task_name"] != task_name:
        raise Damaged(t("reason.foreign", other=doc["task_name"]))
    validate(doc, phases)
    return doc
