"""``tables.tex``: the report's tables (:class:`~.document.Table` and
:class:`~.document.KeyValues` blocks: the estimates, the fit and whatever tables the other
sections add) as LaTeX ``booktabs`` tables, for a paper.

Each is a ``table`` float with its caption (the block's, else its section's title), a
``\\label{tab:...}`` made of the section's key, and ``\\toprule``/``\\midrule``/``\\bottomrule``.
Every character LaTeX treats specially (``\\ { } $ & % # _ ~ ^ < > |``) is escaped; a
number's minus sign is set as a minus and ``1.5e-06`` as 1.5 times 10 to the -6.  The file
compiles with ``pdflatex`` in a document that loads ``booktabs`` (``\\input{tables.tex}``);
a Chinese report (``--lang zh``) needs ``xelatex`` with ``\\usepackage{ctex}``.
"""

from __future__ import annotations

import re

from .document import Document, KeyValues, Table, Text, section_ids, spans

__all__ = ["to_latex", "escape_latex"]

_SPECIAL = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&",
            "%": r"\%", "#": r"\#", "_": r"\_", "~": r"\textasciitilde{}",
            "^": r"\textasciicircum{}", "<": r"$<$", ">": r"$>$", "|": r"$\vert$"}
_SPECIAL_RE = re.compile("|".join(re.escape(c) for c in _SPECIAL))
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\Z")


def escape_latex(text: str) -> str:
    """``text`` with LaTeX's special characters escaped (set as they read)."""
    return _SPECIAL_RE.sub(lambda m: _SPECIAL[m.group()], text)


def _number(text: str) -> str:
    """A number as LaTeX sets it: a minus sign (not a hyphen), ``1.5e-06`` as
    ``$1.5\\times10^{-6}$``."""
    mantissa, _, exponent = text.lower().partition("e")
    minus = mantissa.startswith("-")
    mantissa = mantissa.lstrip("+-")
    if not exponent:
        return ("$-$" if minus else "") + mantissa
    return rf"${'-' if minus else ''}{mantissa}\times10^{{{int(exponent)}}}$"


def _cell(text: Text) -> str:
    out = []
    for s, bold in spans(text):
        body = s.strip()
        body = _number(body) if _NUMBER.match(body) else escape_latex(s)
        out.append(rf"\textbf{{{body}}}" if bold and body else body)
    cell = "".join(out)
    return "{}" + cell if cell.startswith("[") else cell  # \\ would read [..] as its option


def _row(cells) -> str:
    return "    " + " & ".join(_cell(c) for c in cells) + r" \\"


def _float(caption: str, label: str, spec: str, header, rows, notes) -> list[str]:
    size = r"\small" if len(spec) <= 8 else r"\scriptsize"
    out = [r"\begin{table}[htbp]", r"  \centering", f"  {size}",
           rf"  \caption{{{escape_latex(caption)}}}", rf"  \label{{{label}}}",
           rf"  \begin{{tabular}}{{{spec}}}", r"    \toprule"]
    if header is not None:
        out += [_row(header), r"    \midrule"]
    out += [_row(r) for r in rows]
    out += [r"    \bottomrule", r"  \end{tabular}"]
    for note in notes:
        out.append(rf"  \par\smallskip{{\footnotesize {_cell(note)}}}")
    return out + [r"\end{table}"]


def to_latex(doc: Document) -> str:
    """Every table of ``doc`` as a booktabs ``table`` float, in the report's order, after a
    comment naming the report and what the file needs."""
    out = [f"% Tables of the report: {doc.title}".replace("\n", " "),
           r"% Needs \usepackage{booktabs}; include with \input{tables.tex}."]
    if doc.lang == "zh":
        out.append(r"% Chinese text: compile with xelatex and \usepackage{ctex}.")
    used: dict[str, int] = {}
    for sid, sec in zip(section_ids(doc), doc.sections):
        for block in sec.blocks:
            if not isinstance(block, (Table, KeyValues)):
                continue
            n = used[sid] = used.get(sid, 0) + 1
            label = "tab:" + sid.lower() + ("" if n == 1 else f"-{n}")
            caption = block.caption or sec.title or doc.title
            out.append("")
            if isinstance(block, Table):
                out += _float(caption, label, block.align, block.header, block.rows, block.notes)
            else:
                out += _float(caption, label, "lr", None, block.pairs, block.notes)
    return "\n".join(out) + "\n"
