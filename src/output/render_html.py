"""``report.html``: the report (:class:`~.document.Document`) as one self-contained HTML5 page.

Everything is inside the file: the style sheet inline, the figures as base64 ``data:`` URIs;
no script, no font, no link to anything outside (the only links are ``#section`` anchors of
the contents list), so the page reads the same offline, attached to a mail or archived.
"""

from __future__ import annotations

import base64
from html import escape

from .document import (Bullet, Bullets, Callout, Document, Figure, KeyValues, Paragraph, Table,
                       Text, callout_label, colon, png_size, section_ids, spans)

__all__ = ["to_html", "STYLE"]

#: the page's style sheet (system fonts only)
STYLE = """\
body{margin:0;background:#fff;color:#1b1b1b;font:15px/1.5 system-ui,-apple-system,"Segoe UI",\
Roboto,"Noto Sans","PingFang SC","Microsoft YaHei",sans-serif}
main{max-width:72rem;margin:0 auto;padding:1.5rem 2rem 3rem}
h1{font-size:1.6rem;margin:1.5rem 0 .8rem;border-bottom:2px solid #d0d7de;padding-bottom:.3rem}
h2{font-size:1.25rem;margin:1.6rem 0 .6rem;border-bottom:1px solid #d0d7de;padding-bottom:.2rem}
h3{font-size:1.05rem;margin:1.2rem 0 .5rem}
nav.contents{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:.4rem 1rem;\
margin:1rem 0}
nav.contents ul{margin:.2rem 0;padding-left:1.2rem}
a{color:#0a58ca}
ul{padding-left:1.4rem}
.table-wrap{overflow-x:auto;margin:.8rem 0}
table{border-collapse:collapse;font-size:.9rem;font-variant-numeric:tabular-nums}
caption{caption-side:top;text-align:left;font-weight:600;padding:.2rem 0 .4rem}
th,td{padding:.25rem .6rem;border-bottom:1px solid #e1e4e8;vertical-align:top}
thead th{border-top:2px solid #1b1b1b;border-bottom:1px solid #1b1b1b;text-align:left}
tbody tr:last-child td,tbody tr:last-child th{border-bottom:2px solid #1b1b1b}
tbody tr:nth-child(even){background:#f6f8fa}
table.kv th{text-align:left;font-weight:600}
.r{text-align:right}.c{text-align:center}.l{text-align:left}
p.table-note{font-size:.85rem;color:#57606a;margin:.2rem 0 .8rem}
.callout{border-left:4px solid #9a6700;background:#fff8c5;padding:.4rem .8rem;margin:.6rem 0}
.callout.note{border-color:#0969da;background:#ddf4ff}
figure{margin:1rem 0}
figure img{max-width:100%;height:auto;border:1px solid #e1e4e8}
figcaption{font-size:.9rem;color:#57606a;margin-top:.3rem}
"""


def _inline(text: Text) -> str:
    if type(text) is str:   # most cells: no bold span
        return escape(text)
    return "".join(f"<strong>{escape(s)}</strong>" if bold else escape(s)
                   for s, bold in spans(text))


def _table(block: Table) -> list[str]:
    out = ['<div class="table-wrap">', "<table>"]
    if block.caption:
        out.append(f"<caption>{escape(block.caption)}</caption>")
    out.append("<thead><tr>" + "".join(f'<th class="{a}" scope="col">{_inline(h)}</th>'
                                       for h, a in zip(block.header, block.align))
               + "</tr></thead>")
    out.append("<tbody>")
    for row in block.rows:
        out.append("<tr>" + "".join(f'<td class="{a}">{_inline(c)}</td>'
                                    for c, a in zip(row, block.align)) + "</tr>")
    out += ["</tbody>", "</table>", "</div>"]
    return out + [f'<p class="table-note">{_inline(n)}</p>' for n in block.notes]


def _key_values(block: KeyValues) -> list[str]:
    out = ['<div class="table-wrap">', '<table class="kv">']
    if block.caption:
        out.append(f"<caption>{escape(block.caption)}</caption>")
    out.append("<tbody>")
    out += [f'<tr><th scope="row">{_inline(k)}</th><td class="r">{_inline(v)}</td></tr>'
            for k, v in block.pairs]
    out += ["</tbody>", "</table>", "</div>"]
    return out + [f'<p class="table-note">{_inline(n)}</p>' for n in block.notes]


def _figure(block: Figure) -> list[str]:
    width, height = png_size(block.png)
    data = base64.b64encode(block.png).decode("ascii")
    return ["<figure>",
            f'<img src="data:image/png;base64,{data}" alt="{escape(block.caption)}" '
            f'width="{width}" height="{height}">',
            f"<figcaption>{escape(block.caption)}</figcaption>" if block.caption else "",
            "</figure>"]


def _block(block, lang: str) -> list[str]:
    if isinstance(block, Paragraph):
        return [f"<p>{_inline(block.text)}</p>"]
    if isinstance(block, Bullets):
        out = ["<ul>"]
        for item in block.items:
            if isinstance(item, Bullet) and item.sub:
                out.append(f"<li>{_inline(item.text)}<ul>"
                           + "".join(f"<li>{_inline(s)}</li>" for s in item.sub) + "</ul></li>")
            else:
                out.append(f"<li>{_inline(item.text if isinstance(item, Bullet) else item)}</li>")
        return out + ["</ul>"]
    if isinstance(block, KeyValues):
        return _key_values(block)
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Figure):
        return [line for line in _figure(block) if line]
    if isinstance(block, Callout):
        label = escape(callout_label(block, lang) + colon(lang).strip())
        return [f'<p class="callout {block.kind}"><strong>{label}</strong> '
                f"{_inline(block.text)}</p>"]
    raise TypeError(f"not a report block: {block!r}")


def to_html(doc: Document) -> str:
    """The page: title, a contents list when there are three titled sections or more, then
    each section (``<section id=...>`` with its heading and blocks)."""
    ids = section_ids(doc, "s-")
    titled = [(i, s) for i, s in zip(ids, doc.sections) if s.title]
    out = ["<!DOCTYPE html>", f'<html lang="{escape(doc.lang)}">', "<head>",
           '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{escape(doc.title)}</title>", f"<style>\n{STYLE}</style>", "</head>",
           "<body>", "<main>", f"<h1>{escape(doc.title)}</h1>"]
    if len(titled) >= 3:
        contents = {"en": "Contents", "zh": "目录"}.get(doc.lang, "Contents")
        out += [f'<nav class="contents" aria-label="{contents}">', "<ul>"]
        out += [f'<li class="level{s.level}"><a href="#{i}">{escape(s.title)}</a></li>'
                for i, s in titled]
        out += ["</ul>", "</nav>"]
    for sid, sec in zip(ids, doc.sections):
        out.append(f'<section id="{sid}">')
        if sec.title:
            out.append(f"<h{sec.level}>{escape(sec.title)}</h{sec.level}>")
        for block in sec.blocks:
            out += _block(block, doc.lang)
        out.append("</section>")
    out += ["</main>", "</body>", "</html>"]
    return "\n".join(out) + "\n"
