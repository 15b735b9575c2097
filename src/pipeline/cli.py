"""The command line of ``scripts/02_run_estimation.py``, generated from the option table.

Every flag comes from an :class:`~src.utils.options.Option` in :data:`src.config.OPTIONS`
(help, default, choices), plus the actions ``--config``, ``--check-progress``,
``--clean-progress`` and ``--version``.  Abbreviations are off; an unknown flag is one
sentence with the closest valid flag ("unknown option --n-start; did you mean
--n-starts?"), in English or Chinese (``--lang``), raised as a UsageError (exit 2).
"""

from __future__ import annotations

import argparse
import difflib
from typing import Any, Sequence

from .. import __version__
from ..config import OPTIONS, build_options, check_option, load_config
from ..utils.argv import last_value
from ..utils.errors import UsageError
from ..utils.messages import register, set_language, t
from ..utils.options import Option

__all__ = ["build_parser", "parse", "PROG"]

PROG = "02_run_estimation.py"

register({
    "cli.unknown": {"en": "Unknown option {flag}; did you mean {close}?",
                    "zh": "未知选项 {flag}；您是想用 {close} 吗？"},
    "cli.unknown_far": {"en": "Unknown option {flag}; run with --help to list the options.",
                        "zh": "未知选项 {flag}；使用 --help 查看所有选项。"},
    "cli.unexpected": {"en": "Unexpected argument '{value}'; every value follows its option, e.g. --data file.csv.",
                       "zh": "多余的参数 '{value}'；每个值都应跟在其选项之后，例如 --data file.csv。"},
    "cli.needs_value": {"en": "Option {flag} needs a value, e.g. {flag} VALUE.",
                        "zh": "选项 {flag} 需要一个值，例如 {flag} VALUE。"},
    "cli.no_value": {"en": "Option {flag} takes no value.",
                     "zh": "选项 {flag} 不接受值。"},
    "cli.other": {"en": "Bad command line: {detail}; run with --help to list the options.",
                  "zh": "命令行有误：{detail}；使用 --help 查看所有选项。"},
})

_ACTIONS = ("config", "check_progress", "clean_progress")
_GROUP_ORDER = ("progress tracking", "data and model", "model options", "estimation",
                "class enumeration", "standard errors", "execution and output")


class _Parser(argparse.ArgumentParser):
    """argparse that raises one translated sentence instead of printing the usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        flag = message.split(":", 1)[0].replace("argument ", "", 1).split("/")[0]
        if ": expected one argument" in message:
            raise UsageError(t("cli.needs_value", flag=flag))
        if ": ignored explicit argument" in message:
            raise UsageError(t("cli.no_value", flag=flag))
        raise UsageError(t("cli.other", detail=message))


def _help(opt: Option) -> str:
    if opt.type is bool:
        return opt.help
    if opt.default is not None and "default" not in opt.help:
        shown = ",".join(opt.default) if isinstance(opt.default, (list, tuple)) else opt.default
        return f"{opt.help} (default {shown})"
    return opt.help


def _metavar(opt: Option) -> str:
    if opt.metavar:
        return opt.metavar
    if opt.choices:
        return "{" + ",".join(opt.choices) + "}"
    return {int: "N", float: "X"}.get(opt.type, "TEXT")


def build_parser() -> argparse.ArgumentParser:
    """Every flag, generated from the option table, grouped as in ``--help``."""
    p = _Parser(prog=PROG, allow_abbrev=False,
                description="Fit a latent-variable model by EM, compute standard errors, write "
                            "results; progress is saved so an interrupted run resumes where it "
                            "stopped.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    groups = {name: p.add_argument_group(name) for name in _GROUP_ORDER}
    g = groups["progress tracking"]
    g.add_argument("--check-progress", action="store_true", help="print the progress status and exit")
    g.add_argument("--clean-progress", action="store_true", help="remove all progress files and exit")
    groups["data and model"].add_argument(
        "--config", metavar="FILE", help="TOML file with any option below (underscores for dashes)")
    for opt in OPTIONS.values():
        if opt.cli_flag == "":
            continue
        group = groups.get(opt.group) or groups.setdefault(opt.group, p.add_argument_group(opt.group))
        if opt.type is bool:
            group.add_argument(opt.cli_flag, dest=opt.name, default=None, help=_help(opt),
                               action="store_false" if opt.default is True else "store_true")
        else:
            group.add_argument(opt.cli_flag, dest=opt.name, default=None, help=_help(opt),
                               metavar=_metavar(opt))
    return p


def _lang_in(argv: Sequence[str]) -> str | None:
    """The last valid value of ``--lang`` in ``argv`` (for parse errors)."""
    return last_value(argv, "--lang", ("en", "zh"))


def _unknown(parser: argparse.ArgumentParser, extras: list[str]) -> UsageError:
    first = extras[0]
    if not first.startswith("-") or first == "-":
        return UsageError(t("cli.unexpected", value=first))
    flag = first.split("=", 1)[0]
    flags = [f for f in parser._option_string_actions if f.startswith("--")]
    close = difflib.get_close_matches(flag, flags, n=1, cutoff=0.6)
    if close:
        return UsageError(t("cli.unknown", flag=flag, close=close[0]))
    return UsageError(t("cli.unknown_far", flag=flag))


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, Any]:
    """``(args, RunOptions)`` from the command line (defaults < ``--config`` < flags).

    Raises UsageError (one sentence) for an unknown flag, a missing or bad value."""
    argv = list(argv)
    set_language(_lang_in(argv) or None)
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        raise _unknown(parser, extras)
    config = load_config(args.config) if args.config else {}
    flags: dict[str, Any] = {}
    for name, value in vars(args).items():
        if name in _ACTIONS or value is None:
            continue
        opt = OPTIONS[name]
        if opt.type is list:
            value = [c.strip() for c in value.split(",") if c.strip()]
        flags[name] = check_option(name, value, from_text=True)
    return args, build_options(config, flags)
