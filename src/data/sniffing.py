"""Looking at the first 64 KiB of a CSV/TSV file: its encoding, separator and decimal mark.

The rules (they are also in :mod:`src.data.loading`'s docstring, which users read):

* **content**: a file holding a NUL byte or more than 1% control bytes is not CSV text: a
  DataError says what it looks like (Parquet, ZIP/xlsx, gzip, PDF, xls... from its first bytes).
* **encoding** (unless given): a UTF-16 byte-order mark means UTF-16; text that is valid
  UTF-8 is UTF-8 (a UTF-8 byte-order mark is dropped); otherwise cp1252 (Windows Latin-1),
  or Latin-1 when cp1252 cannot decode it, with a note.
* **separator** (unless given): the extension's (``,`` for .csv/.txt, tab for .tsv), except
  when the header line splits into a single field with it but into several with ``;``, tab
  or ``,`` (and the first data line splits with that one too): then the one giving the most
  header fields, with a note.
* **decimal mark**: with ``;`` as separator (found or given), numbers are read with a
  decimal comma when the sampled data lines have numbers like ``1,5`` and none like ``1.5``.

A given separator that leaves a single column whose name would be detected as above as
split by another separator is an error naming both.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator

from src.utils.errors import DataError, UsageError
from src.utils.messages import get_language, register, t

__all__ = ["SAMPLE_BYTES", "TextDialect", "sniff_text", "open_bytes", "read_head", "content_kind",
           "looks_binary", "first_decode_error", "normalize_sep", "sep_label", "FALLBACK_ENCODINGS"]

SAMPLE_BYTES = 1 << 16
_CANDIDATES = (";", "\t", ",")
#: tried in turn when the whole file turns out not to be valid in the detected encoding
FALLBACK_ENCODINGS = ("utf-8", "cp1252", "latin-1")
_SEP_ALIASES = {"\\t": "\t", "tab": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
_SEP_NAMES = {"en": {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"},
              "zh": {",": "逗号", ";": "分号", "\t": "制表符", "|": "竖线"}}
_MAGIC = ((b"PAR1", "parquet"), (b"PK\x03\x04", "zip"), (b"\x1f\x8b", "gzip"), (b"%PDF", "pdf"),
          (b"\xd0\xcf\x11\xe0", "xls"), (b"\xfd7zXZ\x00", "compressed"),
          (b"\x28\xb5\x2f\xfd", "compressed"))
_COMMA_NUMBER = re.compile(r"^\s*[-+]?\d*,\d+\s*$")
_POINT_NUMBER = re.compile(r"^\s*[-+]?(\d+\.\d*|\.\d+)([eE][-+]?\d+)?\s*$")

register({
    "data.looks.parquet": {"en": "a Parquet file", "zh": "Parquet 文件"},
    "data.looks.zip": {"en": "a ZIP archive (an Excel .xlsx workbook is one)",
                       "zh": "ZIP 压缩包（Excel .xlsx 工作簿即是）"},
    "data.looks.gzip": {"en": "gzip-compressed data", "zh": "gzip 压缩数据"},
    "data.looks.pdf": {"en": "a PDF document", "zh": "PDF 文档"},
    "data.looks.xls": {"en": "an old-style Office file (Excel .xls)", "zh": "旧版 Office 文件（Excel .xls）"},
    "data.looks.compressed": {"en": "compressed data (bzip2, xz or zstd)",
                              "zh": "压缩数据（bzip2、xz 或 zstd）"},
    "data.looks.text": {"en": "plain text (perhaps CSV)", "zh": "纯文本（可能是 CSV）"},
    "data.looks.binary": {"en": "binary data", "zh": "二进制数据"},
    "data.not_text": {
        "en": "The data file {path} holds {what}, not CSV text; export it as CSV or Parquet, "
              "or give it the extension that matches its format.",
        "zh": "数据文件 {path} 中是{what}，而不是 CSV 文本；请导出为 CSV 或 Parquet，或使用与其格式相符的扩展名。"},
    "data.empty_file": {
        "en": "The data file {path} is empty (no header line and no data rows); check that it "
              "was written completely.",
        "zh": "数据文件 {path} 是空的（没有表头行，也没有数据行）；请检查文件是否完整写出。"},
    "data.unknown_encoding": {
        "en": "There is no text encoding called {encoding!r}; use for example utf-8, cp1252 or "
              "latin-1, or leave --encoding out to detect it.",
        "zh": "没有名为 {encoding!r} 的文本编码；请使用例如 utf-8、cp1252 或 latin-1，或不指定 --encoding 以自动识别。"},
    "data.bad_sep": {
        "en": "The separator {sep!r} cannot be used; give one character such as ',', ';' or "
              "'\\t' (or tab), or leave --sep out to detect it.",
        "zh": "分隔符 {sep!r} 不可用；请给出一个字符，如 ','、';' 或 '\\t'（或 tab），或不指定 --sep 以自动识别。"},
    "data.wrong_encoding": {
        "en": "The data file {path} is not valid {encoding} text (byte 0x{byte:02x} in line "
              "{line}, the header being line 1); it looks like {guess}: use --encoding {guess} or leave --encoding out.",
        "zh": "数据文件 {path} 不是有效的 {encoding} 文本（第 {line} 行的字节 0x{byte:02x}，表头为第 1 行）；"
              "它看起来是 {guess}：请使用 --encoding {guess}，或不指定 --encoding。"},
    "data.wrong_sep": {
        "en": "Reading {path} with --sep {sep} gives one column named {column!r}; the file "
              "looks {guess_name}-separated: use --sep {guess}.",
        "zh": "用 --sep {sep} 读取 {path} 只得到一列，列名为 {column!r}；该文件看起来是以{guess_name}分隔的："
              "请使用 --sep {guess}。"},
    "data.note.sep": {
        "en": "Read {path} as {sep_name}-separated because its header line has no {default_name}s "
              "between names; give --sep to choose another separator.",
        "zh": "{path} 的表头行中列名之间没有{default_name}，因此按{sep_name}分隔读取；可用 --sep 指定其他分隔符。"},
    "data.note.not_utf8": {
        "en": "Read {path} as {encoding} because it is not valid UTF-8; give --encoding to "
              "choose another encoding.",
        "zh": "{path} 不是有效的 UTF-8 文本，因此按 {encoding} 编码读取；可用 --encoding 指定其他编码。"},
    "data.note.bom": {
        "en": "Read {path} as UTF-16 because it starts with a UTF-16 byte-order mark.",
        "zh": "{path} 以 UTF-16 字节顺序标记开头，因此按 UTF-16 读取。"},
    "data.note.decimal": {
        "en": "Read numbers in {path} with a decimal comma ({example!r} as {value}) because the "
              "file is semicolon-separated and its numbers use commas.",
        "zh": "{path} 以分号分隔且数字使用逗号，因此按小数逗号读取数字（{example!r} 读作 {value}）。"},
    "data.note.mojibake": {
        "en": "{path} is valid UTF-8 but was read as {encoding} as asked, so accented text may "
              "look garbled; leave --encoding out to read it as UTF-8.",
        "zh": "{path} 是有效的 UTF-8 文本，但按要求以 {encoding} 读取，带重音的文字可能显示为乱码；"
              "不指定 --encoding 即按 UTF-8 读取。"},
})


@dataclass
class TextDialect:
    """How to read one text file, and why (the ``notes`` a caller may print, one line each)."""

    sep: str
    encoding: str
    decimal: str = "."
    sep_explicit: bool = False
    encoding_explicit: bool = False
    lines: list[str] = field(default_factory=list)   # the sampled non-blank lines, header first
    notes: list[str] = field(default_factory=list)


def normalize_sep(sep: str) -> str:
    """The separator character for ``sep``; ``\\t`` (backslash t), ``tab``, ``semicolon``... accepted."""
    sep = _SEP_ALIASES.get(sep.lower(), sep) if isinstance(sep, str) else sep
    if not isinstance(sep, str) or len(sep) != 1 or sep in "\r\n\"":
        raise UsageError(t("data.bad_sep", sep=sep))
    return sep


def sep_label(sep: str) -> str:
    """How a separator is written in a message: ``','``, ``'\\t'``."""
    return repr(sep)


def _sep_name(sep: str) -> str:
    names = _SEP_NAMES.get(get_language(), _SEP_NAMES["en"])
    return names.get(sep, repr(sep))


@contextlib.contextmanager
def open_bytes(path: Path) -> Iterator[BinaryIO]:
    """``path`` opened for reading bytes, decompressed for .gz/.bz2/.xz/.zip (.zst with ``zstandard``).

    OSError (missing permission, damaged archive) is left to the caller; a ZIP archive is read
    from its first file, as pandas does.
    """
    suffix = path.suffix.lower()
    with contextlib.ExitStack() as stack:
        if suffix == ".gz":
            import gzip
            fh = stack.enter_context(gzip.open(path, "rb"))
        elif suffix == ".bz2":
            import bz2
            fh = stack.enter_context(bz2.open(path, "rb"))
        elif suffix == ".xz":
            import lzma
            fh = stack.enter_context(lzma.open(path, "rb"))
        elif suffix == ".zip":
            import zipfile
            try:
                zf = stack.enter_context(zipfile.ZipFile(path))
            except zipfile.BadZipFile as exc:
                raise OSError(str(exc)) from exc
            members = [i for i in zf.infolist() if not i.is_dir()]
            fh = stack.enter_context(zf.open(members[0])) if members else io.BytesIO()
        elif suffix == ".zst":
            import zstandard  # ImportError: pandas cannot read it either
            raw = stack.enter_context(open(path, "rb"))
            fh = stack.enter_context(zstandard.ZstdDecompressor().stream_reader(raw))
        else:
            fh = stack.enter_context(open(path, "rb"))
        yield fh  # type: ignore[misc]


def read_head(path: Path, n: int = SAMPLE_BYTES) -> tuple[bytes, bool]:
    """The first ``n`` bytes of ``path`` (decompressed) and whether that is the whole file."""
    try:
        with open_bytes(path) as fh:
            data = fh.read(n + 1)
    except ImportError:  # .zst without zstandard: no sample, pandas will say what is missing
        return b"", False
    return data[:n], len(data) <= n


def first_decode_error(path: Path, encoding: str) -> tuple[int, int] | None:
    """(byte value, line number) of the first byte of ``path`` that ``encoding`` cannot decode."""
    decoder = codecs.getincrementaldecoder(encoding)()
    line = 1
    with open_bytes(path) as fh:
        while True:
            block = fh.read(SAMPLE_BYTES)
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as exc:
                return (exc.object[exc.start] if exc.start < len(exc.object) else 0,
                        line + exc.object[:exc.start].count(b"\n"))
            if not block:
                return None
            line += block.count(b"\n")


def content_kind(head: bytes) -> str | None:
    """What the first bytes say a file is (``parquet``, ``zip``, ``gzip``...), None for no signature."""
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if head[:3] == b"BZh" and head[4:10] == b"1AY&SY":
        return "compressed"
    return None


def _decodes(data: bytes, encoding: str, final: bool) -> UnicodeDecodeError | None:
    try:
        codecs.getincrementaldecoder(encoding)().decode(data, final=final)
    except UnicodeDecodeError as exc:
        return exc
    return None


def _guess_encoding(sample: bytes, at_eof: bool) -> str:
    for enc in FALLBACK_ENCODINGS:
        if _decodes(sample, enc, at_eof) is None:
            return enc
    return "latin-1"  # pragma: no cover  (latin-1 decodes every byte)


def looks_binary(head: bytes) -> bool:
    """A NUL byte, or more than 1% control bytes other than tab, newline, CR, form feed: not text."""
    if b"\x00" in head:
        return True
    controls = sum(1 for b in head if b < 0x20 and b not in (9, 10, 12, 13)) + head.count(0x7F)
    return controls > max(1, len(head) // 100)


def _split(line: str, sep: str) -> list[str]:
    try:
        return next(csv.reader([line], delimiter=sep))
    except (csv.Error, StopIteration):
        return [line]


def _other_separator(lines: list[str], sep: str) -> str | None:
    """The candidate separator splitting the header into the most fields (>1), else None.

    The first data line (when sampled) must split with it too, so that a single column
    named like ``score (0;10)`` is left alone.
    """
    best, best_n = None, 1
    for cand in _CANDIDATES:
        if cand != sep and cand in lines[0]:
            n = len(_split(lines[0], cand))
            if n > best_n and (len(lines) < 2 or len(_split(lines[1], cand)) > 1):
                best, best_n = cand, n
    return best


def _decimal_comma(lines: list[str], sep: str) -> str | None:
    """The first comma-decimal number when data lines have some and no point-decimal ones."""
    example = None
    for line in lines[1:]:
        for value in _split(line, sep):
            if _POINT_NUMBER.match(value):
                return None
            if example is None and _COMMA_NUMBER.match(value):
                example = value.strip()
    return example


def sniff_text(path: Path, *, default_sep: str, sep: str | None = None,
               encoding: str | None = None) -> TextDialect:
    """How to read the CSV/TSV file ``path`` (see the module docstring); DataError when it is not text."""
    shown = str(path)
    if encoding is not None:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise UsageError(t("data.unknown_encoding", encoding=encoding)) from None
    explicit_sep = normalize_sep(sep) if sep is not None else None
    head, at_eof = read_head(path)
    if not head:
        if at_eof:
            raise DataError(t("data.empty_file", path=shown))
        return TextDialect(explicit_sep or default_sep, encoding or "utf-8",
                           sep_explicit=explicit_sep is not None,
                           encoding_explicit=encoding is not None)
    notes: list[str] = []
    wide = codecs.lookup(encoding).name.startswith(("utf-16", "utf-32")) if encoding else False
    if encoding is None and head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        wide = True
    if not wide and looks_binary(head):
        raise DataError(t("data.not_text", path=shown,
                          what=t(f"data.looks.{content_kind(head) or 'binary'}")))
    if encoding is not None:
        enc = encoding
    elif wide:
        enc = "utf-16"
        notes.append(t("data.note.bom", path=shown))
    else:
        enc = _guess_encoding(head, at_eof)
        if enc != "utf-8":
            notes.append(t("data.note.not_utf8", path=shown, encoding=enc))
    error = _decodes(head, enc, at_eof)
    if error is not None:
        bad = head[error.start] if error.start < len(head) else 0
        raise DataError(t("data.wrong_encoding", path=shown, encoding=enc, byte=bad,
                          line=head[:error.start].count(b"\n") + 1,
                          guess=_guess_encoding(head, at_eof)))
    if encoding is not None and not codecs.lookup(enc).name.startswith("utf") \
            and not head.isascii() and _decodes(head, "utf-8", at_eof) is None:
        notes.append(t("data.note.mojibake", path=shown, encoding=encoding))
    text = codecs.getincrementaldecoder(enc)().decode(head, final=at_eof).lstrip("\ufeff")
    raw_lines = text.splitlines()
    if not at_eof and raw_lines:
        raw_lines = raw_lines[:-1] or raw_lines  # the last sampled line may be cut short
    lines = [ln for ln in raw_lines if ln.strip()][:200]
    if not lines:
        if at_eof:
            raise DataError(t("data.empty_file", path=shown))
        lines = [text]

    if explicit_sep is not None:
        use_sep = explicit_sep
        fields = _split(lines[0], use_sep)
        other = _other_separator(lines, use_sep) if len(fields) == 1 else None
        if other is not None:
            raise DataError(t("data.wrong_sep", path=shown, sep=sep_label(use_sep),
                              column=fields[0], guess=sep_label(other),
                              guess_name=_sep_name(other)))
    else:
        use_sep = default_sep
        if len(_split(lines[0], default_sep)) == 1:
            other = _other_separator(lines, default_sep)
            if other is not None:
                notes.append(t("data.note.sep", path=shown, sep_name=_sep_name(other),
                               default_name=_sep_name(default_sep)))
                use_sep = other
    decimal = "."
    if use_sep == ";":
        example = _decimal_comma(lines, use_sep)
        if example is not None:
            decimal = ","
            notes.append(t("data.note.decimal", path=shown, example=example,
                           value=float(example.replace(",", "."))))
    return TextDialect(use_sep, enc, decimal, sep_explicit=explicit_sep is not None,
                       encoding_explicit=encoding is not None, lines=lines, notes=notes)
