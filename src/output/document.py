"""The report as a structured document, rendered to Markdown (``report.md``), self-contained
HTML (``report.html``, :mod:`.render_html`) and LaTeX tables (``tables.tex``,
:mod:`.render_latex`), so every form holds the same content.

A :class:`Document` has a title and :class:`Section` s; a section holds blocks:

- :class:`Paragraph` -- a sentence or two;
- :class:`Bullets` -- a list (an item may carry sub-items, :class:`Bullet`);
- :class:`KeyValues` -- labelled values ("Log-likelihood: -1130.26"), a two-column table in
  HTML and LaTeX;
- :class:`Table` -- header, rows of display strings, alignment (``"l"``/``"r"``/``"c"`` per
  column), optional caption and notes;
- :class:`Figure` -- a PNG (bytes) with its file name and caption: written beside the
  report, linked from ``report.md``, embedded in ``report.html``;
- :class:`Callout` -- a warning or a note.

Text is a ``str``, a :class:`Strong` (bold) or a tuple of both ("Rule: ...; ", Strong("selected
K = 3")).  Cells hold text already formatted for display, so every renderer shows the same
digits.  Renderers are pure functions of the document: the same document gives the same
bytes (no dates, no versions), so a resumed run's report is byte-identical.

Sections are placed by :meth:`Document.insert`: a section with ``after="fit"`` follows the
section keyed ``fit`` (and earlier sections inserted after it); one without ``after`` goes
before the closing section (key ``closing``) or at the end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping, Sequence, Union

__all__ = ["Strong", "Text", "Paragraph", "Bullet", "Bullets", "KeyValues", "Table", "Figure",
           "Callout", "Block", "Section", "Document", "plain", "to_markdown", "FIGURE_NAME",
           "png_size"]

#: a figure's file name: a plain name ending in .png, no folder (written beside the report)
FIGURE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\.png\Z")


@dataclass(frozen=True)
class Strong:
    """Bold text."""

    text: str


#: a piece of text: plain, bold, or a sequence of both
Text = Union[str, Strong, tuple]


def plain(text: Text) -> str:
    """The characters of ``text`` without its emphasis."""
    if isinstance(text, str):
        return text
    if isinstance(text, Strong):
        return text.text
    return "".join(plain(part) for part in text)


def spans(text: Text) -> list[tuple[str, bool]]:
    """``text`` as ``[(characters, bold), ...]``."""
    if isinstance(text, str):
        return [(text, False)]
    if isinstance(text, Strong):
        return [(text.text, True)]
    return [s for part in text for s in spans(part)]


@dataclass(frozen=True)
class Paragraph:
    text: Text


@dataclass(frozen=True)
class Bullet:
    """A list item with sub-items."""

    text: Text
    sub: tuple = ()


@dataclass(frozen=True)
class Bullets:
    """A list; each item a :data:`Text` or a :class:`Bullet`."""

    items: tuple

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", tuple(self.items))


@dataclass(frozen=True)
class KeyValues:
    """Labelled values, e.g. the fit statistics; ``caption`` names it as a table (LaTeX
    falls back to the section's title)."""

    pairs: tuple
    caption: str | None = None
    notes: tuple = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "pairs", tuple(tuple(p) for p in self.pairs))
        object.__setattr__(self, "notes", tuple(self.notes))


@dataclass(frozen=True)
class Table:
    """A table of display strings; ``align`` one letter per column (``l``, ``r``, ``c``;
    default: ``l`` for the first column, ``r`` for the others)."""

    header: tuple
    rows: tuple
    align: str | None = None
    caption: str | None = None
    notes: tuple = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "header", tuple(self.header))
        object.__setattr__(self, "rows", tuple(tuple(r) for r in self.rows))
        object.__setattr__(self, "notes", tuple(self.notes))
        align = self.align or ("l" + "r" * (len(self.header) - 1))
        if len(align) != len(self.header) or set(align) - set("lrc"):
            raise ValueError(f"align must give l, r or c for each of the {len(self.header)} "
                             f"columns, got {self.align!r}")
        object.__setattr__(self, "align", align)
        for row in self.rows:
            if len(row) != len(self.header):
                raise ValueError(f"a table row has {len(row)} cells, the header "
                                 f"{len(self.header)}: {row!r}")


@dataclass(frozen=True)
class Figure:
    """A PNG written beside the report as ``name``, shown with ``caption``."""

    name: str
    png: bytes = field(repr=False)
    caption: str = ""

    def __post_init__(self) -> None:
        if not FIGURE_NAME.match(self.name):
            raise ValueError(f"a figure's file name is a plain name ending in .png, "
                             f"got {self.name!r}")
        if not self.png.startswith(b"\x89PNG\r\n\x1a\n"):
            raise ValueError(f"figure {self.name!r} is not a PNG image")


@dataclass(frozen=True)
class Callout:
    """A warning or a note; ``label`` is the word before the colon (default: the
    document language's "Warning" or "Note")."""

    text: Text
    kind: str = "warning"
    label: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("warning", "note"):
            raise ValueError(f"a callout is a warning or a note, got {self.kind!r}")


Block = Union[Paragraph, Bullets, KeyValues, Table, Figure, Callout]

_CALLOUT_LABELS = {"warning": {"en": "Warning", "zh": "警告"}, "note": {"en": "Note", "zh": "注"}}


def callout_label(block: Callout, lang: str) -> str:
    if block.label is not None:
        return block.label
    words = _CALLOUT_LABELS[block.kind]
    return words.get(lang, words["en"])


def colon(lang: str) -> str:
    """The colon after a label: ``": "``, or the full-width ``"："`` in Chinese."""
    return "：" if lang == "zh" else ": "


@dataclass(frozen=True)
class Section:
    """A titled part of the report (``title`` None: blocks without a heading).

    ``key``: a short name other sections are placed after and HTML/LaTeX anchors are made
    from.  ``level``: 1 for a part as large as a report (the enumeration's report of the
    selected K), 2 for a section, 3 below.  ``after``: the key of the section it follows
    when inserted (:meth:`Document.insert`)."""

    key: str
    title: str | None
    blocks: tuple = ()
    level: int = 2
    after: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(self.blocks))
        if self.level not in (1, 2, 3):
            raise ValueError(f"a section's level is 1, 2 or 3, got {self.level}")


@dataclass(frozen=True)
class Document:
    """The report: a title, sections, its language (``en`` or ``zh``)."""

    title: str
    sections: tuple = ()
    lang: str = "en"

    def __post_init__(self) -> None:
        object.__setattr__(self, "sections", tuple(self.sections))

    def insert(self, sections: Iterable[Section]) -> "Document":
        """A copy with ``sections`` placed: each after the section its ``after`` names (and
        after the ones inserted there before it), else before the section keyed
        ``closing``, else at the end.  An unknown ``after`` is an error."""
        out = list(self.sections)
        for sec in sections:
            if sec.after is None:
                at = next((i for i, s in enumerate(out) if s.key == "closing"), len(out))
            else:
                keys = [s.key for s in out]
                if sec.after not in keys:
                    raise ValueError(f"section {sec.key!r} goes after {sec.after!r}, which the "
                                     f"report lacks; it has {', '.join(keys)}")
                at = keys.index(sec.after) + 1
                while at < len(out) and out[at].after == sec.after:
                    at += 1
            out.insert(at, sec)
        return replace(self, sections=tuple(out))

    def blocks(self) -> Iterable[tuple[Section, Block]]:
        for sec in self.sections:
            for block in sec.blocks:
                yield sec, block

    def figures(self) -> dict[str, bytes]:
        """Every figure's PNG by file name, in order; one name used for two different
        images is an error."""
        out: dict[str, bytes] = {}
        for _, block in self.blocks():
            if isinstance(block, Figure):
                if out.get(block.name, block.png) != block.png:
                    raise ValueError(f"two different figures are named {block.name!r}")
                out[block.name] = block.png
        return out


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height in pixels, from the PNG's header."""
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


# ------------------------------------------------------------------ Markdown
def _md(text: Text) -> str:
    if type(text) is str:   # most cells: no bold span
        return text
    return "".join(f"**{s}**" if bold and s else s for s, bold in spans(text))


def _md_cell(text: Text) -> str:
    return _md(text).replace("|", "\\|").replace("\n", " ")


def _md_block(block: Block, lang: str) -> list[str]:
    if isinstance(block, Paragraph):
        return [_md(block.text)]
    if isinstance(block, Bullets):
        lines = []
        for item in block.items:
            if isinstance(item, Bullet):
                lines.append(f"- {_md(item.text)}")
                lines += [f"  - {_md(s)}" for s in item.sub]
            else:
                lines.append(f"- {_md(item)}")
        return lines
    if isinstance(block, KeyValues):
        lines = [f"- {_md(k)}{colon(lang)}{_md(v)}" for k, v in block.pairs]
        return lines + [line for n in block.notes for line in ("", _md(n))]
    if isinstance(block, Table):
        rule = {"l": "---", "r": "---:", "c": ":---:"}
        lines = ([f"Table: {block.caption}", ""] if block.caption else [])
        lines += ["| " + " | ".join(_md_cell(h) for h in block.header) + " |",
                  "|" + "".join(rule[a] + "|" for a in block.align)]
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
        return lines + [line for n in block.notes for line in ("", _md(n))]
    if isinstance(block, Figure):
        return [f"![{block.caption}]({block.name})"]
    if isinstance(block, Callout):
        return [f"> {callout_label(block, lang)}{colon(lang)}{_md(block.text)}"]
    raise TypeError(f"not a report block: {block!r}")


def to_markdown(doc: Document) -> str:
    """``report.md``: headings ``#`` (title and level-1 sections), ``##``, ``###``; blocks
    separated by a blank line; figures as links to the PNG files beside it."""
    lines = [f"# {doc.title}", ""]
    for sec in doc.sections:
        if sec.title:
            lines += ["#" * sec.level + " " + sec.title, ""]
        for block in sec.blocks:
            lines += _md_block(block, doc.lang) + [""]
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def section_ids(doc: Document, prefix: str = "") -> list[str]:
    """An anchor per section, unique in the document, made of its key."""
    seen: dict[str, int] = {}
    out = []
    for sec in doc.sections:
        base = prefix + (re.sub(r"[^A-Za-z0-9_-]+", "-", sec.key).strip("-") or "section")
        n = seen.get(base, 0) + 1
        seen[base] = n
        out.append(base if n == 1 else f"{base}-{n}")
    return out


def figure_blocks(figures: Mapping[str, tuple[bytes, str]] | Sequence[Figure] | None) -> list[Figure]:
    """``{name: (png, caption)}`` (or figures already made) as :class:`Figure` blocks."""
    if not figures:
        return []
    if isinstance(figures, Mapping):
        return [Figure(name, png, caption) for name, (png, caption) in figures.items()]
    return list(figures)
