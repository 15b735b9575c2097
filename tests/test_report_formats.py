"""The report in its three forms (report.md, report.html, tables.tex), built from one document.

The numbers come from a real run's stored phase results, written again in process with other
options (formats, language, extra sections and figures).  The HTML is read back with the
standard library's parser, the LaTeX compiled with ``pdflatex`` and read back with
``pdftotext`` where they are installed, the figures with matplotlib, and every table is
compared with estimates.csv.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from src.config import RunOptions
from src.output.document import (Bullets, Callout, Document, Figure, KeyValues, Paragraph,
                                 Section, Strong, Table, png_size, to_markdown)
from src.output.enumeration import enumeration_document
from src.output.render_html import to_html
from src.output.render_latex import escape_latex, to_latex
from src.output.writers import MANIFEST, result_set_is_complete, write_all
from src.pipeline.phases import build_model
from src.progress.artifacts import decode
from tests.helpers import FAST, reference_run

#: names with every character LaTeX treats specially
NASTY = ["a_b", "50%", "x&y", "#1", "$5", "{z}", "~t", "^p", "back\\slash", "<0.001", "|v|",
         "[k]"]


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """Phase results of a real run with Louis standard errors (decoded from its progress)."""
    run = reference_run(tmp_path_factory.getbasetemp() / "refs", FAST + ("--se-method", "louis"))
    doc = json.loads((run / "progress" / "main_estimation_progress.json").read_text())
    folder = run / "progress" / "main_estimation_artifacts"
    return {p: decode(r, folder) for p, r in doc["phase_results"].items()}


def _png(width_in: float = 2.0, height_in: float = 1.5, color: str = "C0") -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(width_in, height_in), dpi=50)
    FigureCanvasAgg(fig)
    fig.add_subplot(1, 1, 1).plot([0, 1, 2], [1, 0, 2], color=color)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _write(stored, folder: Path, **opts) -> Path:
    sections = opts.pop("sections", ())
    figures = opts.pop("figures", None)
    options = RunOptions(n_starts=2, se_method="louis", output_dir=str(folder), **opts).validate()
    record = stored["data_preparation"]
    model = build_model(options, record["meta"])
    from src.output.writers import manifest_bytes, removable, result_files, write_file_set

    if not sections and not figures:
        write_all(model, record, stored["model_estimation"], stored["standard_error_computation"],
                  options, fingerprint={})
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    files = result_files(model, record, stored["model_estimation"],
                         stored["standard_error_computation"], options, fingerprint={},
                         sections=sections, figures=figures)
    write_file_set(folder, files, manifest=(MANIFEST, manifest_bytes(options.task_name, files)),
                   remove=removable(folder))
    return folder


class _Page(HTMLParser):
    """Tags, attributes, and the text of every table cell of an HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str]] = []
        self.tables: list[list[list[str]]] = []  # tables (kv ones too), rows, cells
        self.kv: list[bool] = []
        self._cell: list[str] | None = None
        self.doctype = ""
        self.open: list[str] = []  # elements not closed yet
        self.misnested: list[str] = []

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag not in ("meta", "img", "br", "hr", "link", "input"):  # void elements
            self.open.append(tag)
        self.attrs += [(tag, k, v or "") for k, v in attrs]
        if tag == "table":
            self.tables.append([])
            self.kv.append(("class", "kv") in attrs)
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if self.open and self.open[-1] == tag:
            self.open.pop()
        else:
            self.misnested.append(tag)
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _page(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    page.close()
    return page


def _md_tables(md: str) -> list[list[list[str]]]:
    """The pipe tables of report.md (header row and body rows, rule rows left out)."""
    tables, current = [], None
    for line in md.splitlines():
        if re.fullmatch(r"\|(:?-+:?\|)+", line):
            continue
        if line.startswith("|"):
            cells = [c.strip().replace("**", "") for c in line[1:-1].split(" | ")]
            if current is None:
                current = []
                tables.append(current)
            current.append([c.strip() for c in cells])
        else:
            current = None
    return tables


def _csv(folder: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO((folder / "estimates.csv").read_text())))


def _short(cell: str) -> str:
    """estimates.csv's number as the report shows it (6 significant digits)."""
    try:
        return f"{float(cell):.6g}"
    except ValueError:
        return cell


class TestHtml:
    def test_no_external_reference_and_each_figure_embedded(self, stored, tmp_path):
        """report.html refers to nothing outside itself and embeds the bytes of every figure written beside it."""
        pngs = {"extra_view.png": _png(), "inline.png": _png(color="C3")}
        inline = Section("views", "Views", [Figure("inline.png", pngs["inline.png"], "a view")],
                         after="fit")
        out = _write(stored, tmp_path / "r", sections=[inline],
                     figures={"extra_view.png": (pngs["extra_view.png"], "another view")})
        html = (out / "report.html").read_text(encoding="utf-8")
        page = _page(html)
        assert page.doctype.lower() == "doctype html" and page.tags[:2] == ["html", "head"]
        assert page.open == [] and page.misnested == []  # every element closed, in order
        assert ("meta", "charset", "utf-8") in page.attrs and "title" in page.tags
        assert not {"script", "link", "iframe", "object", "embed"} & set(page.tags)
        assert "@import" not in html and "url(" not in html
        refs = [(tag, k, v) for tag, k, v in page.attrs if k in ("src", "href", "srcset", "data")]
        assert refs and all(v.startswith("data:") or v.startswith("#") for _, _, v in refs), refs
        anchors = {v for tag, k, v in page.attrs if k == "id"}
        assert all(v[1:] in anchors for _, k, v in refs if v.startswith("#"))
        embedded = [base64.b64decode(v.split(",", 1)[1]) for tag, k, v in refs
                    if tag == "img" and v.startswith("data:image/png;base64,")]
        assert sorted(embedded) == sorted((out / n).read_bytes() for n in pngs)
        assert sorted(embedded) == sorted(pngs.values())
        md = (out / "report.md").read_text()
        assert "![a view](inline.png)" in md and "![another view](extra_view.png)" in md

    def test_tables_hold_the_values_of_report_md_and_estimates_csv(self, stored, tmp_path):
        """Every table of report.html has the cells of report.md's, and the estimates are those of estimates.csv to 6 digits."""
        out = _write(stored, tmp_path / "r")
        page = _page((out / "report.html").read_text(encoding="utf-8"))
        md = (out / "report.md").read_text()
        grids = [t for t, kv in zip(page.tables, page.kv) if not kv]
        assert grids == _md_tables(md)
        rows = _csv(out)
        assert grids[0] == [[_short(c) for c in r] if i else r for i, r in enumerate(rows)]
        fit = json.loads((out / "fit.json").read_text())
        (kv,) = [t for t, is_kv in zip(page.tables, page.kv) if is_kv]
        assert dict(kv)["Log-likelihood"] == f"{fit['loglik']:.6f}" == md.split(
            "- Log-likelihood: ")[1].split("\n")[0]
        assert float(dict(kv)["BIC"]) == pytest.approx(fit["bic"], abs=1e-4)

    def test_png_size_reads_the_header(self):
        """png_size gives the pixel size matplotlib reads back from the image."""
        from matplotlib.image import imread

        png = _png(3.0, 1.2)
        assert png_size(png) == (150, 60) == imread(io.BytesIO(png)).shape[1::-1]


def _pdflatex(tmp_path: Path, tex: str, name: str = "tables.tex") -> str:
    """Compile ``tex`` inside a minimal article with booktabs; the PDF's text."""
    if not shutil.which("pdflatex"):
        pytest.skip("pdflatex is not installed")
    (tmp_path / name).write_text(tex, encoding="utf-8")
    (tmp_path / "doc.tex").write_text("\\documentclass{article}\n\\usepackage{booktabs}\n"
                                      f"\\begin{{document}}\n\\input{{{name}}}\n\\end{{document}}\n")
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    if not shutil.which("pdftotext"):
        return ""
    return subprocess.run(["pdftotext", "-layout", "doc.pdf", "-"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=True).stdout


class TestLatex:
    def test_special_characters_are_escaped_and_compile(self, tmp_path):
        """Names with LaTeX's special characters are escaped, set as they read, in booktabs rules."""
        doc = Document("Odd names", [Section("odd", "Odd names", [
            Table(["name", "value"], [[n, f"{i}.5"] for i, n in enumerate(NASTY)],
                  notes=["note with 5% & more"]),
            KeyValues([("AIC_1", "-12.5"), ("p", "7.5e-06")])])])
        tex = to_latex(doc)
        assert escape_latex("a_b & 50% #1 $5 {z}") == r"a\_b \& 50\% \#1 \$5 \{z\}"
        assert r"\textasciitilde{}t" in tex and r"\textasciicircum{}p" in tex
        assert r"back\textbackslash{}slash" in tex and "{}[k]" in tex
        assert r"$-$12.5" in tex and r"$7.5\times10^{-6}$" in tex
        assert tex.count(r"\toprule") == tex.count(r"\bottomrule") == 2
        assert tex.count(r"\midrule") == 1  # the key-value table has no header
        text = _pdflatex(tmp_path, tex)
        if text:  # OT1 sets ~ and ^ as accents and draws \_ as a rule, which has no text
            words = text.replace("\u02dc", "~").replace("\u02c6", "^").split()
            for name in NASTY:
                assert name.replace("_", "") in words, (name, text)
            assert "note with 5% & more" in " ".join(words)
            assert "\u221212.5" in words and "10\u22126" in words  # minus signs, not hyphens

    def test_tables_tex_of_a_run_compiles_and_holds_the_estimates(self, stored, tmp_path):
        """--formats tex writes tables.tex: the fit and estimates tables, which compile and show estimates.csv's values."""
        out = _write(stored, tmp_path / "r", formats=["tex"])
        assert not (out / "report.md").exists() and not (out / "report.html").exists()
        tex = (out / "tables.tex").read_text()
        assert r"\label{tab:fit}" in tex and r"\label{tab:estimates}" in tex
        assert r"\caption{Estimates}" in tex and r"p\_value & ci\_lower" in tex
        (tmp_path / "tex").mkdir()
        text = _pdflatex(tmp_path / "tex", tex)
        if text:
            for row in _csv(out)[1:]:
                line = next(ln for ln in text.splitlines() if ln.split()[:1] == [row[0]])
                shown = line.split()[1:]
                want = [_short(c) for c in row[1:] if c]
                assert [s.replace("−", "-") for s in shown[:2]] == want[:2], (line, row)


class TestFilesAndFormats:
    def test_formats_choose_the_files_and_remove_the_others(self, stored, tmp_path):
        """--formats md writes report.md only; report.html and tables.tex of an earlier run go."""
        folder = tmp_path / "r"
        _write(stored, folder, formats=["md", "html", "tex"])
        assert {"report.md", "report.html", "tables.tex"} <= set(p.name for p in folder.iterdir())
        _write(stored, folder, formats=["md"])
        names = {p.name for p in folder.iterdir()}
        assert "report.md" in names and not {"report.html", "tables.tex"} & names
        assert set(json.loads((folder / MANIFEST).read_text())["files"]) == {
            "estimates.csv", "covariance.csv", "fit.json", "report.md"}
        assert result_set_is_complete(folder, "main_estimation")

    def test_figures_of_an_earlier_run_are_removed_by_its_manifest(self, stored, tmp_path):
        """A figure the earlier run's manifest names goes when the next run does not write it; a user's PNG stays."""
        folder = tmp_path / "r"
        _write(stored, folder, figures={"any_name.png": (_png(), "one")})
        assert (folder / "any_name.png").is_file()
        (folder / "mine.png").write_bytes(_png(color="C5"))
        _write(stored, folder)
        names = {p.name for p in folder.iterdir()}
        assert "any_name.png" not in names and "mine.png" in names
        assert "any_name.png" not in (folder / "report.md").read_text()
        assert result_set_is_complete(folder, "main_estimation")

    def test_the_same_results_give_the_same_bytes(self, stored, tmp_path):
        """Writing the same results twice gives byte-identical report files (nothing depends on the time)."""
        a = _write(stored, tmp_path / "a", formats=["md", "html", "tex"])
        b = _write(stored, tmp_path / "b", formats=["md", "html", "tex"])
        for name in ("report.md", "report.html", "tables.tex"):
            assert (a / name).read_bytes() == (b / name).read_bytes(), name


class TestSections:
    def test_a_section_goes_after_its_anchor(self, stored, tmp_path):
        """An added section follows the section it names (in order of adding), else comes before the closing remark."""
        first = Section("one", "First added", [Paragraph("one")], after="fit")
        second = Section("two", "Second added", [Bullets(["two", ("bold ", Strong("two"))])],
                         after="fit")
        last = Section("three", "Third added", [Callout("careful", "warning")])
        md = (_write(stored, tmp_path / "r", sections=[first, second, last])
              / "report.md").read_text()
        heads = [ln for ln in md.splitlines() if ln.startswith("## ")]
        assert heads == ["## Fit", "## First added", "## Second added", "## Estimates",
                         "## Third added"]
        assert md.index("> Warning: careful") < md.index("Classes are in the model's canonical")
        assert "- bold **two**" in md
        doc = Document("t", [Section("a", "A")])
        with pytest.raises(ValueError, match="lacks"):
            doc.insert([Section("b", "B", after="nope")])

    def test_tables_check_their_shape(self):
        """A row of the wrong length or an alignment of the wrong length is refused."""
        with pytest.raises(ValueError, match="cells"):
            Table(["a", "b"], [["1"]])
        with pytest.raises(ValueError, match="align"):
            Table(["a", "b"], [["1", "2"]], align="l")
        with pytest.raises(ValueError, match="png"):
            Figure("../up.png", _png())


_CJK = re.compile(r"[\u4e00-\u9fff]")


class TestChinese:
    def test_report_headings_and_labels_in_chinese(self, stored, tmp_path):
        """With lang zh the report's headings, labels and sentences are Chinese in every form."""
        out = _write(stored, tmp_path / "zh", lang="zh", formats=["md", "html", "tex"])
        md = (out / "report.md").read_text(encoding="utf-8")
        assert md.startswith("# 估计报告：main_estimation\n")
        for head in ("## 拟合", "## 估计值"):
            assert f"\n{head}\n" in md
        assert "- 对数似然：-" in md and "- 对数似然: " not in md  # a full-width colon
        assert "类别按模型的规范顺序排列" in md and "AIC 与 BIC 越小越好。" in md
        assert "协方差矩阵" in md and "covariances" not in md  # the family's option phrase
        html = (out / "report.html").read_text(encoding="utf-8")
        assert '<html lang="zh">' in html and "<h2>拟合</h2>" in html
        assert r"\caption{估计值}" in (out / "tables.tex").read_text(encoding="utf-8")
        english = (_write(stored, tmp_path / "en", lang="en") / "report.md").read_text()
        assert not _CJK.search(english)
        assert _md_tables(md) == _md_tables(english)  # the same numbers

    def test_enumeration_opening_in_chinese(self):
        """The enumeration's opening has Chinese labels and the selected K in bold, the report of K below it."""
        rows = [{"k": k, "loglik": -100.0 + k, "n_params": 3 * k, "aic": 1.0, "bic": 2.0,
                 "sabic": 3.0, "caic": 4.0, "icl": 5.0, "entropy": None if k == 1 else 0.9,
                 "smallest_class": 0.5, "best_replicated": True, "n_starts": 2, "blrt_p": None,
                 "lmr_p": None if k == 1 else 0.0001, "vlmr_p": None, "selected": k == 2}
                for k in (1, 2)]
        selection = {"ks": [1, 2], "selected": 2, "rule": "bic", "alpha": 0.05,
                     "pairs": [[1, 2]], "rows": rows, "warnings": ["w"], "notes": []}
        report = Document("估计报告：t", [Section("fit", "拟合", [Paragraph("x")])], lang="zh")
        for lang, label, head in (("zh", "**选定 K = 2**", "对数似然"),
                                  ("en", "**selected K = 2**", "log-likelihood")):
            options = RunOptions(components=[1, 2], lang=lang).validate()
            doc = enumeration_document(selection, options, report, _png())
            md = to_markdown(doc)
            assert label in md and f"| K | {head} |" in md and "| <0.001 |" in md
            assert "\n# 估计报告：t\n" in md and md.index("criteria.png") < md.index("# 估计报告")
            assert _md_tables(md)[0] == [t for t, kv in zip(_page(to_html(doc)).tables,
                                                            _page(to_html(doc)).kv) if not kv][0]
