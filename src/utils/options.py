"""Options that describe themselves, and the one validator every entry point uses.

An :class:`Option` states a name, its type, its default, its choices or range, a help line
and the phase whose result it changes (in the spirit of scikit-learn's
``_parameter_constraints``).  The run's own options (:mod:`src.config`), each model family
(``MixtureModel.option_specs``) and each standard-error method (``src.inference.SE_METHODS``)
list theirs; RunOptions, TOML keys, command-line flags, the Python API's keywords and the
fingerprints are all built from these lists, so an option is declared once.

:func:`check_value` turns a value into the option's type or raises a one-sentence
UsageError; :func:`check_names` refuses unknown names, suggesting the closest valid one.
"""

from __future__ import annotations

import difflib
import numbers
from dataclasses import dataclass
from typing import Any, Iterable

from .errors import UsageError
from .messages import register, t

__all__ = ["Option", "check_value", "check_names", "closest"]

register({
    "options.type": {"en": "Option '{option}' must be {expected}, got {value!r}.",
                     "zh": "选项 '{option}' 应为{expected}，实际为 {value!r}。"},
    "options.choice": {"en": "Option '{option}' must be one of {choices}, got {value!r}.",
                       "zh": "选项 '{option}' 必须是 {choices} 之一，实际为 {value!r}。"},
    "options.range": {"en": "Option '{option}' must be {rule}, got {value!r}.",
                      "zh": "选项 '{option}' 必须{rule}，实际为 {value!r}。"},
    "options.unknown": {"en": "Unknown option '{name}' {where}; did you mean '{close}'?",
                        "zh": "{where}中有未知选项 '{name}'；您是想用 '{close}' 吗？"},
    "options.unknown_far": {"en": "Unknown option '{name}' {where}; valid options are: {valid}.",
                            "zh": "{where}中有未知选项 '{name}'；有效选项为：{valid}。"},
    "options.expected.bool": {"en": "true or false", "zh": "true 或 false"},
    "options.expected.int": {"en": "an integer", "zh": "整数"},
    "options.expected.float": {"en": "a number", "zh": "数字"},
    "options.expected.str": {"en": "a string", "zh": "字符串"},
    "options.expected.list": {"en": "a list of column names", "zh": "列名列表"},
})

_TYPES = {bool: "bool", int: "int", float: "float", str: "str", list: "list"}


@dataclass(frozen=True)
class Option:
    """One option: what it is, what values it takes, where it shows up.

    ``type`` is one of bool, int, float, str, list (of non-empty strings); ``nullable``
    allows None (for "not set").  ``low``/``high`` bound numbers (``low_open``: strictly
    greater).  ``flag``: the command-line flag ("" for none; default ``--name-with-dashes``;
    a bool whose default is True gets a flag that turns it off, e.g. ``--no-intercept``).
    ``fingerprint``: the first phase whose result depends on the option (None: results
    never depend on it).  ``report``: a phrase for reports, ``{}`` replaced by the value.
    """

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    nullable: bool = False
    low: float | None = None
    low_open: bool = False
    high: float | None = None
    high_open: bool = False
    flag: str | None = None
    group: str = "options"
    fingerprint: str | None = None
    report: str | None = None
    metavar: str | None = None

    def __post_init__(self) -> None:
        if self.type not in _TYPES:
            raise TypeError(f"option {self.name!r}: type must be one of bool, int, float, str, "
                            f"list, got {self.type!r}")

    @property
    def cli_flag(self) -> str:
        """The flag on the command line ("" when the option has none)."""
        if self.flag is not None:
            return self.flag
        dashed = self.name.replace("_", "-")
        return f"--no-{dashed}" if self.type is bool and self.default is True else f"--{dashed}"

    @property
    def annotation(self) -> Any:
        return self.type | None if self.nullable else self.type

    def rule(self) -> str | None:
        """The range as text (``>= 1``, ``> 0``, ``between 0 and 2**63-1``), or None."""
        if self.low is not None and self.high is not None:
            if self.low_open and self.high_open:
                return f"strictly between {_num(self.low)} and {_num(self.high)}"
            return f"between {_num(self.low)} and {_num(self.high)}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {_num(self.low)}"
        if self.high is not None:
            return f"<= {_num(self.high)}"
        return None


def _num(x: float) -> str:
    return "2**63-1" if x == 2**63 - 1 else f"{x:g}"


def check_value(option: Option, value: Any, *, from_text: bool = False) -> Any:
    """``value`` converted to the option's type (integers to float where a number is
    expected, NumPy scalars to Python ones, and with ``from_text`` command-line text to
    numbers); a UsageError naming the option when it does not fit."""
    if value is None and option.nullable:
        return None
    value = _convert(option, value, from_text)
    if option.choices is not None and value not in option.choices:
        raise UsageError(t("options.choice", option=option.name, value=value,
                           choices=", ".join(option.choices)))
    if option.type in (int, float):
        too_low = option.low is not None and (value <= option.low if option.low_open
                                              else value < option.low)
        too_high = option.high is not None and (value >= option.high if option.high_open
                                                else value > option.high)
        if too_low or too_high or value != value:  # NaN is never in range
            raise UsageError(t("options.range", option=option.name, rule=option.rule() or "a number",
                               value=value))
    return value


def _convert(option: Option, value: Any, from_text: bool) -> Any:
    kind = option.type
    ok = False
    if kind is bool:
        ok = isinstance(value, bool) or type(value).__name__ == "bool_"
        value = bool(value) if ok else value
    elif kind is int:
        if from_text and isinstance(value, str):
            value = _parse(value, int)
        ok = isinstance(value, numbers.Integral) and not _is_bool(value)
        value = int(value) if ok else value
    elif kind is float:
        if from_text and isinstance(value, str):
            value = _parse(value, float)
        ok = isinstance(value, numbers.Real) and not _is_bool(value)
        value = float(value) if ok else value
    elif kind is str:
        ok = isinstance(value, str)
    elif kind is list:
        if isinstance(value, tuple):
            value = list(value)
        ok = isinstance(value, list) and all(isinstance(v, str) and v for v in value)
    if not ok:
        raise UsageError(t("options.type", option=option.name,
                           expected=t(f"options.expected.{_TYPES[kind]}"), value=value))
    return value


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool) or type(value).__name__ == "bool_"


def _parse(text: str, kind: type) -> Any:
    try:
        return kind(text.strip())
    except ValueError:
        return text


def closest(name: str, valid: Iterable[str]) -> str | None:
    """The valid name most like ``name`` (difflib), or None when nothing is close."""
    match = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return match[0] if match else None


def check_names(names: Iterable[str], valid: Iterable[str], where: str) -> None:
    """A UsageError for the first name not in ``valid``, with the closest valid name.

    ``where`` completes the sentence: "in config file run.toml", "for fit()".
    """
    valid = list(valid)
    for name in names:
        if name not in valid:
            close = closest(name, valid)
            if close is not None:
                raise UsageError(t("options.unknown", name=name, where=where, close=close))
            raise UsageError(t("options.unknown_far", name=name, where=where,
                               valid=", ".join(sorted(valid))))
