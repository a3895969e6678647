"""Sources: CSV, JSON Lines, Parquet and xlsx files read as numbered records, with limits.

Each reader yields ``Record(line, raw)`` where ``line`` is what a person finds in the file
(the physical line of a CSV or JSONL record, the spreadsheet row of an xlsx cell, the
1-based row of a Parquet file) and ``raw`` maps the file's own column names to values.
A record the reader could not parse carries ``error`` instead, so ``--skip-invalid`` can
reject it and go on. Problems with the whole file (wrong encoding, unreadable format) are
an ``InputError`` at once.
"""

from __future__ import annotations

import codecs
import csv
import importlib
import json
import os
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..errors import InputError
from .values import MAX_VALUE_CHARS

# A physical line longer than this is refused before it is held in memory (a file with no
# line breaks, a runaway value). Several maximal values still fit on one line.
MAX_LINE_BYTES = 8 * 2**20
# JSON Lines objects are flat rows: nesting deeper than this is not a users/items/events row.
MAX_JSON_DEPTH = 32
# csv's own limit only guards memory against a runaway quoted value; the per-value limit
# (MAX_VALUE_CHARS, same for every format) is checked with the column's name.
CSV_FIELD_LIMIT = 4 * MAX_VALUE_CHARS
csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))

FORMATS: dict[str, str] = {
    ".csv": "csv", ".tsv": "csv", ".txt": "csv",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
    ".parquet": "parquet", ".pq": "parquet",
    ".xlsx": "xlsx", ".xlsm": "xlsx",
}
DELIMITERS = (",", ";", "\t", "|")
EXTRA_HINT = "pip install 'pushgen[formats]'"


@dataclass
class Record:
    line: int
    raw: dict[str, Any] | None      # as in the file (original column names)
    error: str | None = None        # the record could not be parsed at all
    text: str | None = None         # the raw line, for rejects of unparseable lines
    field: str | None = None        # the column the parse error is about, when known


class ByteCounter:
    """Bytes read so far, for progress bars (approximate for Parquet and xlsx)."""

    def __init__(self, total: int) -> None:
        self.done, self.total = 0, total


def file_format(path: str | os.PathLike[str]) -> str:
    """'csv', 'jsonl', 'parquet' or 'xlsx' from the file name; InputError otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix in FORMATS:
        return FORMATS[suffix]
    if suffix == ".xls":
        raise InputError("old Excel .xls files cannot be read: save the sheet as .xlsx or CSV",
                         file=str(path))
    raise InputError(f"unknown file type {suffix or '(none)'!r} (use .csv, .tsv, .jsonl, "
                     ".ndjson, .parquet or .xlsx)", file=str(path))


def resolve_encoding(name: str) -> str:
    """A codec name Python knows whose line breaks are single ``\\n`` bytes."""
    try:
        info = codecs.lookup(name)
    except LookupError:
        raise InputError(f"unknown encoding {name!r} (e.g. utf-8, gb18030, big5, cp1252)") from None
    if info.name in ("utf-8", "utf-8-sig"):
        return "utf-8"
    if "\n,;".encode(info.name) != b"\n,;":
        raise InputError(f"encoding {name!r} is not supported: save the file as UTF-8 "
                         "(UTF-16 and UTF-32 exports must be converted)")
    return info.name


def _need(module: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise InputError(f"reading {what} files needs the optional libraries: "
                         f"{EXTRA_HINT}") from None


def _cr_only(handle: IO[bytes]) -> bool:
    """Whether lines end with a bare CR (classic Mac OS, some old exports): the first 64 KB
    hold a CR and no LF."""
    head = handle.read(65536)
    handle.seek(0)
    return b"\r" in head and b"\n" not in head


def _split_at_cr(handle: IO[bytes]) -> Iterator[bytes]:
    """The lines of a CR-only file, CR kept (a line over MAX_LINE_BYTES is yielded whole
    for the caller to refuse)."""
    rest = b""
    while chunk := handle.read(1 << 16):
        rest += chunk
        *lines, rest = rest.split(b"\r")
        for line in lines:
            yield line + b"\r"
        if len(rest) > MAX_LINE_BYTES:
            yield rest
            return
    if rest:
        yield rest


def _lines(path: Path, encoding: str, counter: ByteCounter) -> Iterator[str]:
    """Decoded physical lines (line ends kept: LF, CRLF or a bare CR), UTF-8 BOM dropped,
    length-limited."""
    source = str(path)
    with open(path, "rb") as handle:
        number = 0
        cr_lines = _split_at_cr(handle) if _cr_only(handle) else None
        while True:
            raw = (next(cr_lines, b"") if cr_lines is not None
                   else handle.readline(MAX_LINE_BYTES + 1))
            if not raw:
                return
            number += 1
            counter.done += len(raw)
            if len(raw) > MAX_LINE_BYTES:
                raise InputError(f"line longer than {MAX_LINE_BYTES // 2**20} MB (not a CSV or "
                                 "JSON Lines file, or line breaks are missing)",
                                 file=source, line=number)
            if number == 1:
                if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
                    raise InputError("the file is UTF-16 (Excel 'Unicode text'): save it as "
                                     "'CSV UTF-8' instead", file=source, line=1)
                if encoding == "utf-8" and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
            try:
                yield raw.decode(encoding)
            except UnicodeDecodeError as exc:
                label = "UTF-8" if encoding == "utf-8" else encoding
                raise InputError(
                    f"not valid {label} text (byte 0x{raw[exc.start]:02x} at byte "
                    f"{exc.start + 1} of the line); give the file's encoding with --encoding "
                    "(e.g. gb18030, big5, cp1252)", file=source, line=number) from None


def sniff_delimiter(path: Path, encoding: str) -> str:
    """The delimiter among , ; tab | that splits the first lines into the most columns,
    the same number on every line; ',' when none splits the header."""
    with open(path, "rb") as handle:
        head = handle.read(65536)
    textual = head.decode(encoding, errors="replace").lstrip("\ufeff")
    lines = textual.splitlines(keepends=True)
    if len(head) == 65536 and len(lines) > 1:
        lines = lines[:-1]  # the last line may be cut
    lines = lines[:50]
    best, best_score = ",", (0.0, 0)
    for candidate in DELIMITERS:
        try:
            rows = [r for r in csv.reader(lines, delimiter=candidate) if r]
        except csv.Error:
            continue
        if not rows or len(rows[0]) < 2:
            continue
        width = len(rows[0])
        score = (sum(len(r) == width for r in rows) / len(rows), width)
        if score > best_score:
            best, best_score = candidate, score
    return best


def _check_header(names: list[str], source: str) -> list[str]:
    seen: set[str] = set()
    for index, name in enumerate(names, 1):
        if not name:
            raise InputError(f"column {index} of the header has no name", file=source, line=1)
        if name in seen:
            raise InputError("column appears twice in the header", file=source, line=1,
                             field=name)
        seen.add(name)
    return names


def _csv_error(exc: csv.Error, start: int) -> str:
    message = str(exc)
    if "unexpected end of data" in message:
        return (f"bad CSV: the file ends inside a quoted value (an unclosed quote on line "
                f"{start}?)")
    if "field larger than field limit" in message:
        return (f"bad CSV: a value longer than {CSV_FIELD_LIMIT:,} characters (an unclosed "
                "quote?)")
    if "expected after" in message:
        return (f"bad CSV: {message} (a stray quote inside a value, or an unclosed quote "
                "on an earlier line)")
    return f"bad CSV: {message}"


def csv_source(path: Path, *, encoding: str, delimiter: str | None,
               counter: ByteCounter) -> tuple[list[str], Iterator[Record]]:
    source = str(path)
    delim = delimiter or sniff_delimiter(path, encoding)
    # strict: a quote in the wrong place is an error, never silently glued to a value.
    reader = csv.reader(_lines(path, encoding, counter), delimiter=delim, strict=True)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise InputError("the file is empty (expected a header line)", file=source, line=1) from None
    except csv.Error as exc:
        raise InputError(_csv_error(exc, 1), file=source, line=1) from None
    # A delimiter after the last column (a stray empty column, common in spreadsheet
    # exports) is dropped when its cells are empty too.
    spare = 0
    while len(header) > 1 and header[-1] == "":
        header.pop()
        spare += 1
    _check_header(header, source)
    width = len(header)

    def records() -> Iterator[Record]:
        last = reader.line_num
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                line, last = last + 1, reader.line_num
                yield Record(line, None, _csv_error(exc, line))
                continue
            line, last = last + 1, reader.line_num
            if spare and len(values) == width + spare and not "".join(values[width:]).strip():
                values = values[:width]
            if len(values) != width:
                if not values or all(not v.strip() for v in values):
                    continue  # a blank line
                yield Record(line, dict(zip(header, values)),
                             f"{len(values)} values but the header has {width} columns",
                             delim.join(values))
                continue
            yield Record(line, dict(zip(header, values)))

    return header, records()


class _JsonValueError(ValueError):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise _JsonValueError("key appears twice in this object (which value is "
                                      "meant?)", name)
            seen.add(name)
    return obj


def _json_int(textual: str) -> int:
    if len(textual.lstrip("-")) > 40:
        raise _JsonValueError(f"number of {len(textual):,} digits (at most 40)")
    return int(textual)


def _json_float(textual: str) -> float:
    if len(textual) > 40:
        raise _JsonValueError(f"number of {len(textual):,} characters (at most 40)")
    return float(textual)


def _json_constant(name: str) -> Any:
    raise _JsonValueError(f"{name} is not a number")


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_int=_json_int,
                            parse_float=_json_float, parse_constant=_json_constant)


def _json_depth_error(textual: str) -> str | None:
    """Where nesting goes deeper than MAX_JSON_DEPTH (checked before parsing, so a
    hostile line never reaches the recursive parser)."""
    depth, in_string, escaped = 0, False, False
    for position, char in enumerate(textual, 1):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return f"JSON nested deeper than {MAX_JSON_DEPTH} levels (at column {position})"
        elif char in "]}":
            depth -= 1
    return None


_LONG_NUMBER = re.compile(r'(?:"((?:[^"\\]|\\.)*)"\s*:\s*)?(-?[\d.eE+-]{41,})')


def parse_json_line(textual: str) -> tuple[Any, str | None, str | None]:
    """(object, error, field): strict JSON for one line."""
    if textual.count("[") + textual.count("{") > MAX_JSON_DEPTH:
        problem = _json_depth_error(textual)
        if problem:
            return None, problem, None
    try:
        return _DECODER.decode(textual), None, None
    except json.JSONDecodeError as exc:
        return None, f"bad JSON: {exc.msg} (column {exc.colno})", None
    except _JsonValueError as exc:
        if exc.field is None:   # a number too long: say where, and under which key
            found = _LONG_NUMBER.search(textual)
            if found is not None:
                return (None, f"bad JSON: {exc} (at column {found.start(2) + 1})",
                        found.group(1))
        return None, f"bad JSON: {exc}", exc.field
    except RecursionError:
        return None, f"JSON nested deeper than {MAX_JSON_DEPTH} levels", None


def jsonl_source(path: Path, *, encoding: str, counter: ByteCounter) -> Iterator[Record]:
    for number, line in enumerate(_lines(path, encoding, counter), 1):
        stripped = line.strip()
        if not stripped:
            continue
        if number == 1 and stripped.startswith("["):
            raise InputError("expected JSON Lines (one JSON object per line), not a JSON array",
                             file=str(path), line=1)
        obj, error, field = parse_json_line(stripped)
        if error is not None:
            yield Record(number, None, error, stripped[:1000], field)
        elif not isinstance(obj, dict):
            yield Record(number, None, "expected a JSON object on this line", stripped[:1000])
        else:
            yield Record(number, obj)


def parquet_source(path: Path, *, counter: ByteCounter) -> tuple[list[str], Iterator[Record]]:
    """Rows of a Parquet file, streamed in record batches (pyarrow)."""
    pq = _need("pyarrow.parquet", "Parquet")
    import pyarrow as pa

    source = str(path)
    try:
        handle = pq.ParquetFile(source)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"not a readable Parquet file ({exc})", file=source) from None
    header = _check_header([str(n).strip() for n in handle.schema_arrow.names], source)
    total = handle.metadata.num_rows or 1

    def records() -> Iterator[Record]:
        number = 0
        try:
            for batch in handle.iter_batches(batch_size=4096):
                for row in batch.to_pylist():
                    number += 1
                    # NaN is how pandas writes a missing float: read it as missing.
                    yield Record(number, {k: (None if isinstance(v, float) and v != v else v)
                                          for k, v in row.items()})
                counter.done = counter.total * number // total
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"cannot read the Parquet file after row {number} ({exc})",
                             file=source, line=number + 1) from None
        finally:
            handle.close()

    return header, records()


def xlsx_source(path: Path, *, sheet: str | None,
                counter: ByteCounter) -> tuple[list[str], Iterator[Record]]:
    """Rows of one sheet (the first, or ``sheet``), read in openpyxl's read-only mode.
    Line numbers are the sheet's row numbers, as Excel shows them."""
    openpyxl = _need("openpyxl", ".xlsx")
    from openpyxl.utils.exceptions import InvalidFileException

    source = str(path)
    try:
        book = openpyxl.load_workbook(source, read_only=True, data_only=True)
    except (zipfile.BadZipFile, InvalidFileException, KeyError, OSError, ValueError) as exc:
        raise InputError(f"not a readable .xlsx file ({exc})", file=source) from None
    try:
        if sheet is not None:
            if sheet not in book.sheetnames:
                raise InputError(f"no sheet {sheet!r} (sheets: {', '.join(book.sheetnames)})",
                                 file=source)
            ws = book[sheet]
        else:
            ws = book.worksheets[0]
        rows = ws.iter_rows(values_only=True)
        first = next(rows, None)
        cells = list(first or ())
        while cells and (cells[-1] is None or str(cells[-1]).strip() == ""):
            cells.pop()
        if not cells:
            raise InputError("the sheet is empty (expected a header row)", file=source, line=1)
        header = _check_header(["" if c is None else str(c).strip() for c in cells], source)
    except BaseException:
        book.close()
        raise
    width = len(header)
    total = ws.max_row or 0

    def records() -> Iterator[Record]:
        number = 1
        try:
            for row in rows:
                number += 1
                values = list(row)
                extra = [v for v in values[width:] if v is not None and str(v).strip()]
                if all(v is None or (isinstance(v, str) and not v.strip()) for v in values):
                    continue
                raw = dict(zip(header, values + [None] * (width - len(values))))
                if extra:
                    yield Record(number, raw, f"{len(extra)} values right of the last "
                                              "named column")
                    continue
                yield Record(number, raw)
                if total and number % 4096 == 0:
                    counter.done = counter.total * number // total
        finally:
            book.close()
            counter.done = counter.total

    return header, records()


__all__ = ["Record", "ByteCounter", "file_format", "resolve_encoding", "sniff_delimiter",
           "csv_source", "jsonl_source", "parquet_source", "xlsx_source", "parse_json_line",
           "MAX_LINE_BYTES", "MAX_JSON_DEPTH", "FORMATS", "DELIMITERS", "EXTRA_HINT"]
