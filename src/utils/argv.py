"""Flag values read from a command line before it is parsed, with argparse's rules.

Three things need a flag before :func:`src.pipeline.cli.parse` runs (or when it fails): the
script's message for a SIGINT while it imports (``--lang``), the language of a parse error
(``--lang``), and whether to start the drawing process before the imports
(``--components``).  They read the value argparse would take: ``--flag value`` or
``--flag=value``, the last one given winning, nothing after ``--``.  No imports: the script
calls this before NumPy is loaded.
"""

from __future__ import annotations

from typing import Collection, Sequence

__all__ = ["flag_values", "last_value"]


def flag_values(argv: Sequence[str], flag: str) -> list[str]:
    """Every value given to ``flag`` in ``argv``, in order (``--flag value`` and
    ``--flag=value``; a ``--flag`` at the end has none), up to a ``--``."""
    values = []
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg.startswith(flag + "="):
            values.append(arg[len(flag) + 1:])
        elif arg == flag and i + 1 < len(argv):
            values.append(argv[i + 1])
    return values


def last_value(argv: Sequence[str], flag: str,
               allowed: Collection[str] | None = None) -> str | None:
    """The value argparse takes for ``flag`` (the last one given), or None when there is
    none; with ``allowed``, the last allowed one (a parse error's language when a later
    value is wrong)."""
    values = [v for v in flag_values(argv, flag) if allowed is None or v in allowed]
    return values[-1] if values else None
