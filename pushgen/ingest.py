"""Import users, items and events from CSV or JSON Lines files (or from Python rows).

An import is one transaction: it validates every row, streams the file in batches, and on
the first bad row (unless ``skip_invalid``) writes nothing at all. Errors name the file,
line and column. Re-importing the same file changes nothing. Memory stays bounded: only
the id maps (users, items) and, for users/items, the set of keys seen are kept.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sqlite_utils import Database

from .errors import InputError
from .store import catalog

Kind = Literal["users", "items", "events"]
KINDS: tuple[str, ...] = ("users", "items", "events")
Progress = Callable[[int, int], None]

BATCH_SIZE = 5000
REQUIRED: dict[str, tuple[str, ...]] = {
    "users": ("external_id",),
    "items": ("sku", "title"),
    "events": ("user", "item", "kind", "ts"),
}
USER_TEXT = ("name", "email", "phone", "timezone")
USER_BOOLS = ("consent_email", "consent_sms", "consent_push")
ITEM_TEXT = ("description", "category", "brand")
ITEM_URLS = ("url", "image_url")
EVENT_COLUMNS = ("user", "item", "kind", "value", "ts")
CSV_SUFFIXES = {".csv"}
JSONL_SUFFIXES = {".jsonl", ".ndjson", ".json"}

_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f"}
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


@dataclass
class ImportReport:
    """What an import did. ``rows`` counts data rows read (rejected ones included)."""

    kind: str
    source: str
    rows: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    reject_path: str | None = None
    reject_samples: list[str] = field(default_factory=list)  # first few reasons
    seconds: float = 0.0

    def add(self, counts: catalog.WriteCounts) -> None:
        self.inserted += counts.inserted
        self.updated += counts.updated
        self.unchanged += counts.unchanged


class _RowError(Exception):
    """A bad value in one row; becomes an InputError once file and line are known."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


# --- value parsers -----------------------------------------------------------------------

def _text(value: Any) -> str | None:
    """Stripped text, or None for a missing / empty value."""
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    text = str(value).strip()
    return text or None


def _required(rec: dict[str, Any], name: str) -> str:
    value = _text(rec.get(name))
    if value is None:
        raise _RowError(name, "required value is empty")
    return value


def _bool(value: Any, name: str, default: int) -> int:
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return int(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return 1
    if text in _FALSE:
        return 0
    raise _RowError(name, f"bad boolean {value!r} (use 1/0, true/false or yes/no)")


def _number(value: Any, name: str, *, minimum: float | None = 0.0) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise _RowError(name, f"bad number {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        text = str(value).strip()
        if not _NUMBER.match(text):
            raise _RowError(name, f"bad number {value!r}")
        number = float(text)
    if not math.isfinite(number):
        raise _RowError(name, f"bad number {value!r}")
    if minimum is not None and number < minimum:
        raise _RowError(name, f"bad number {value!r} (must be >= {minimum:g})")
    return number


def _integer(value: Any, name: str) -> int | None:
    number = _number(value, name, minimum=None)
    if number is None:
        return None
    if not number.is_integer():
        raise _RowError(name, f"bad number {value!r} (expected a whole number)")
    return int(number)


def _url(value: Any, name: str) -> str | None:
    text = _text(value)
    if text is not None and not text.lower().startswith(("http://", "https://")):
        raise _RowError(name, f"bad URL {text!r} (must start with http:// or https://)")
    return text


def parse_timestamp(value: Any, name: str = "ts") -> str:
    """ISO 8601 date or datetime -> UTC ISO string (``2026-03-01T14:30:00+00:00``).

    A date means midnight UTC; a datetime without an offset is taken as UTC.
    """
    text = _text(value)
    if text is None:
        raise _RowError(name, "required value is empty")
    try:
        if len(text) <= 10:
            day = _dt.date.fromisoformat(text)
            moment = _dt.datetime(day.year, day.month, day.day, tzinfo=_dt.timezone.utc)
        else:
            moment = _dt.datetime.fromisoformat(text)
    except ValueError:
        raise _RowError(name, f"bad date {text!r} (use ISO 8601, e.g. 2026-03-01 or "
                              "2026-03-01T14:30:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    return moment.astimezone(_dt.timezone.utc).isoformat()


def _tags(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, list):
        tags = [str(t).strip() for t in value]
    else:
        text = str(value)
        tags = [t.strip() for t in re.split(r"[|,]", text)]
    tags = [t for t in tags if t]
    return tags or None


def _attribute(value: Any) -> Any:
    """Free-form profile / catalog attribute: empty means 'remove'."""
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


# --- row validators: raw record (target column names) -> store row -------------------------

def _user_row(rec: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"external_id": _required(rec, "external_id")}
    attributes: dict[str, Any] = {}
    for name, value in rec.items():
        if name == "external_id":
            continue
        if name in USER_TEXT:
            row[name] = _text(value)
            if name == "email" and row[name] is not None and not _EMAIL.match(row[name]):
                raise _RowError(name, f"bad email address {row[name]!r}")
        elif name == "locale":
            row[name] = (_text(value) or "en-US").replace("_", "-")
        elif name in USER_BOOLS:
            # An empty consent cell means no consent: never assume permission.
            row[name] = _bool(value, name, 0)
        elif name == "attributes" and isinstance(value, dict):
            attributes.update({k: _attribute(v) for k, v in value.items()})
        else:
            attributes[name] = _attribute(value)
    if attributes:
        row["attributes"] = attributes
    return row


def _item_row(rec: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"sku": _required(rec, "sku"), "title": _required(rec, "title")}
    attributes: dict[str, Any] = {}
    for name, value in rec.items():
        if name in ("sku", "title"):
            continue
        if name in ITEM_TEXT:
            row[name] = _text(value)
        elif name in ITEM_URLS:
            row[name] = _url(value, name)
        elif name in ("price", "sale_price"):
            row[name] = _number(value, name)
        elif name == "stock":
            row[name] = _integer(value, name)
        elif name == "currency":
            currency = (_text(value) or "USD").upper()
            if not _CURRENCY.match(currency):
                raise _RowError(name, f"bad currency {value!r} (use a 3-letter code like USD)")
            row[name] = currency
        elif name == "active":
            row[name] = _bool(value, name, 1)
        elif name == "tags":
            attributes["tags"] = _tags(value)
        elif name == "attributes" and isinstance(value, dict):
            attributes.update({k: _attribute(v) for k, v in value.items()})
        else:
            attributes[name] = _attribute(value)
    price, sale = row.get("price"), row.get("sale_price")
    if price is not None and sale is not None and sale > price:
        # A sale price above the price would turn into a negative discount in copy.
        raise _RowError("sale_price", f"sale price {sale:g} is above the price {price:g}")
    if attributes:
        row["attributes"] = attributes
    return row


class _EventParser:
    def __init__(self, db: Database) -> None:
        self.users = catalog.user_ids_by_external_id(db)
        self.items = catalog.item_ids_by_sku(db)

    def __call__(self, rec: dict[str, Any]) -> tuple[int, int, str, float, str]:
        user, item = _required(rec, "user"), _required(rec, "item")
        user_id = self.users.get(user)
        if user_id is None:
            raise _RowError("user", f"unknown user {user!r} (import users first)")
        item_id = self.items.get(item)
        if item_id is None:
            raise _RowError("item", f"unknown item {item!r} (import items first)")
        kind = _required(rec, "kind").lower()
        value = _number(rec.get("value"), "value", minimum=None)
        ts = parse_timestamp(rec.get("ts"))
        return (user_id, item_id, kind, 1.0 if value is None else value, ts)


# --- sources -----------------------------------------------------------------------------

@dataclass
class _Record:
    line: int
    raw: dict[str, Any] | None      # as in the file (original column names)
    error: str | None = None        # the line could not be parsed at all
    text: str | None = None         # the raw line, for rejects of unparseable lines


class _ByteCounter:
    def __init__(self, total: int) -> None:
        self.done, self.total = 0, total


def _text_lines(path: Path, counter: _ByteCounter) -> Iterator[str]:
    """Decoded lines (line ends kept), BOM dropped, byte count kept for progress."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            counter.done += len(raw)
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError("not UTF-8 text (re-save the file as UTF-8; GBK or Latin-1 "
                                 "exports must be converted)", file=str(path), line=number) from None


def _csv_source(path: Path, counter: _ByteCounter) -> tuple[list[str], Iterator[_Record]]:
    reader = csv.reader(_text_lines(path, counter))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise InputError("the file is empty (expected a header line)", file=str(path), line=1) from None
    except csv.Error as exc:
        raise InputError(f"bad CSV: {exc}", file=str(path), line=1) from None
    seen: set[str] = set()
    for name in header:
        if not name:
            raise InputError("the header has an empty column name", file=str(path), line=1)
        if name in seen:
            raise InputError("column appears twice in the header", file=str(path), line=1, field=name)
        seen.add(name)

    def records() -> Iterator[_Record]:
        last = reader.line_num
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise InputError(f"bad CSV: {exc}", file=str(path), line=last + 1) from None
            line, last = last + 1, reader.line_num
            if not values or all(not v.strip() for v in values):
                continue
            raw = dict(zip(header, values))
            if len(values) > len(header):
                yield _Record(line, raw, f"{len(values)} values but the header has "
                                         f"{len(header)} columns")
                continue
            for name in header[len(values):]:
                raw[name] = ""
            yield _Record(line, raw)

    return header, records()


def _jsonl_source(path: Path, counter: _ByteCounter) -> Iterator[_Record]:
    for number, text in enumerate(_text_lines(path, counter), 1):
        stripped = text.strip()
        if not stripped:
            continue
        if number == 1 and stripped.startswith("["):
            raise InputError("expected JSON Lines (one JSON object per line), not a JSON array",
                             file=str(path), line=1)
        try:
            obj = json.loads(stripped)
        except json.JSONDecodeError as exc:
            yield _Record(number, None, f"bad JSON: {exc.msg}", stripped)
            continue
        if not isinstance(obj, dict):
            yield _Record(number, None, "expected a JSON object on this line", stripped)
            continue
        yield _Record(number, obj)


# --- rejects -----------------------------------------------------------------------------

class _RejectWriter:
    """Writes rejected rows (original columns + ``_reason``) to a temp file, renamed on success."""

    def __init__(self, path: Path, header: list[str] | None) -> None:
        self.path, self.header = path, header
        self.tmp = path.with_name(path.name + ".partial")
        self.handle: Any = None
        self.writer: Any = None
        self.jsonl = path.suffix.lower() in JSONL_SUFFIXES

    def write(self, record: _Record, reason: str) -> None:
        if self.handle is None:
            self.handle = open(self.tmp, "w", encoding="utf-8", newline="")
            if not self.jsonl:
                columns = list(self.header or (record.raw or {}).keys() or ["_raw"])
                if "_raw" not in columns and record.raw is None:
                    columns.append("_raw")
                self.writer = csv.DictWriter(self.handle, [*columns, "_reason"],
                                             extrasaction="ignore")
                self.writer.writeheader()
        row = dict(record.raw) if record.raw is not None else {"_raw": record.text}
        row["_reason"] = reason
        if self.jsonl:
            self.handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        else:
            self.writer.writerow({k: v if not isinstance(v, (dict, list)) else
                                  json.dumps(v, ensure_ascii=False) for k, v in row.items()})

    def close(self, ok: bool) -> bool:
        """Close; keep the file (True) only when the import succeeded and rows were written."""
        if self.handle is None:
            return False
        self.handle.close()
        if ok:
            os.replace(self.tmp, self.path)
            return True
        self.tmp.unlink(missing_ok=True)
        return False


# --- the import --------------------------------------------------------------------------

def _mapping_renames(mapping: dict[str, str] | None) -> dict[str, str]:
    """``{target: source}`` -> ``{source: target}``."""
    renames: dict[str, str] = {}
    for target, source in (mapping or {}).items():
        target, source = target.strip(), source.strip()
        if not target or not source:
            raise InputError(f"bad column mapping {target!r}={source!r} (use target=source)")
        if source in renames:
            raise InputError(f"column {source!r} is mapped twice")
        renames[source] = target
    return renames


def _rename(raw: dict[str, Any], renames: dict[str, str]) -> dict[str, Any]:
    if not renames:
        return raw
    out: dict[str, Any] = {}
    for name, value in raw.items():
        target = renames.get(name, name)
        if name not in renames and name in renames.values():
            continue  # shadowed by a mapped column
        out[target] = value
    return out


def _check_header(kind: str, header: list[str], renames: dict[str, str], source: str) -> None:
    for src in renames:
        if src not in header:
            raise InputError(f"mapped column not found (columns: {', '.join(header)})",
                             file=source, line=1, field=src)
    for src, target in renames.items():
        if target in header and target not in renames:
            raise InputError(f"both column {target!r} and mapped column {src!r} are present "
                             "(drop one, or map it elsewhere)", file=source, line=1, field=target)
    mapped = [renames.get(h, h) for h in header]
    for name in REQUIRED[kind]:
        if name not in mapped:
            raise InputError(f"required column missing (columns: {', '.join(header)}; "
                             f"rename one with --map {name}=<column>)",
                             file=source, line=1, field=name)


def _run(db: Database, kind: str, source: str, header: list[str] | None,
         records: Iterable[_Record], *, renames: dict[str, str], skip_invalid: bool,
         reject_path: Path | None, progress: Callable[[], None] | None) -> ImportReport:
    if kind not in KINDS:
        raise InputError(f"unknown import kind {kind!r} (use users, items or events)")
    if skip_invalid and reject_path is not None and not reject_path.parent.is_dir():
        raise InputError(f"folder {reject_path.parent} for the reject file does not exist")
    report = ImportReport(kind=kind, source=source)
    started = time.perf_counter()
    rejects = _RejectWriter(reject_path, header) if skip_invalid and reject_path else None
    key = {"users": "external_id", "items": "sku"}.get(kind)
    seen: dict[str, int] = {}
    batch: list[Any] = []
    ok = False
    try:
        with db.atomic():
            parse: Callable[[dict[str, Any]], Any]
            if kind == "events":
                parse = _EventParser(db)
                write = catalog.insert_events
            else:
                parse = _user_row if kind == "users" else _item_row
                write = catalog.upsert_users if kind == "users" else catalog.upsert_items
            for record in records:
                report.rows += 1
                try:
                    if record.error is not None:
                        raise _RowError(None, record.error)
                    assert record.raw is not None
                    rec = _rename(record.raw, renames)
                    if header is None:  # JSON Lines / Python rows: no header to check up front
                        for name in REQUIRED[kind]:
                            if name not in rec:
                                raise _RowError(name, "required column missing")
                    row = parse(rec)
                    if key is not None:
                        first = seen.get(row[key])
                        if first is not None:
                            raise _RowError(key, f"duplicate {key} {row[key]!r} "
                                                 f"(first on line {first})")
                        seen[row[key]] = record.line
                except _RowError as exc:
                    error = InputError(exc.message, file=source, line=record.line, field=exc.field)
                    if not skip_invalid:
                        raise error from None
                    report.rejected += 1
                    if len(report.reject_samples) < 5:
                        report.reject_samples.append(str(error))
                    if rejects is not None:
                        where = f"line {record.line}" + (f", column {exc.field}" if exc.field else "")
                        rejects.write(record, f"{where}: {exc.message}")
                    continue
                batch.append(row)
                if len(batch) >= BATCH_SIZE:
                    report.add(write(db, batch))
                    batch = []
                    if progress:
                        progress()
            report.add(write(db, batch))
        ok = True
    finally:
        if rejects is not None and rejects.close(ok):
            report.reject_path = str(reject_path)
    if progress:
        progress()
    report.seconds = time.perf_counter() - started
    return report


def file_format(path: str | os.PathLike[str]) -> str:
    """'csv' or 'jsonl' from the file name; InputError for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    raise InputError(f"unknown file type {suffix or '(none)'!r} (use .csv, .jsonl or .ndjson)",
                     file=str(path))


def default_reject_path(path: str | os.PathLike[str]) -> Path:
    """``users.csv`` -> ``users.rejects.csv`` next to it (same format as the input)."""
    p = Path(path)
    return p.with_name(f"{p.stem}.rejects{p.suffix}")


def import_file(db: Database, kind: Kind, path: str | os.PathLike[str], *,
                mapping: dict[str, str] | None = None, skip_invalid: bool = False,
                reject_path: str | os.PathLike[str] | None = None,
                progress: Progress | None = None) -> ImportReport:
    """Import a users / items / events file (.csv, .jsonl, .ndjson, .json lines).

    ``mapping`` is ``{target: source}`` (e.g. ``{"title": "product_name"}``). Without
    ``skip_invalid`` the first bad row raises InputError and nothing is written; with it,
    good rows are written and bad ones go to ``reject_path`` with a ``_reason`` column.
    ``progress(bytes_read, total_bytes)`` is called after every batch.
    """
    p = Path(path)
    source = str(path)
    if kind not in KINDS:
        raise InputError(f"unknown import kind {kind!r} (use users, items or events)")
    fmt = file_format(p)
    if not p.is_file():
        raise InputError("no such file", file=source)
    rejects = Path(reject_path) if reject_path is not None else None
    if rejects is not None and rejects.resolve() == p.resolve():
        raise InputError("the reject file must not be the input file", file=source)
    renames = _mapping_renames(mapping)
    counter = _ByteCounter(p.stat().st_size)
    header: list[str] | None
    if fmt == "csv":
        header, records = _csv_source(p, counter)
        _check_header(kind, header, renames, source)
    else:
        header, records = None, _jsonl_source(p, counter)
    tick = (lambda: progress(counter.done, counter.total)) if progress else None
    catalog.tune_for_bulk_load(db)
    return _run(db, kind, source, header, records, renames=renames,
                skip_invalid=skip_invalid, reject_path=rejects, progress=tick)


def import_rows(db: Database, kind: Kind, rows: Iterable[dict[str, Any]], *,
                source: str = "<rows>", mapping: dict[str, str] | None = None,
                skip_invalid: bool = False, reject_path: str | os.PathLike[str] | None = None,
                progress: Progress | None = None) -> ImportReport:
    """Import Python dicts with the same validation as files; "line" = 1-based row number.

    ``progress(rows_done, total_rows)`` is called after every batch (total is 0 when
    ``rows`` has no length).
    """
    total = len(rows) if hasattr(rows, "__len__") else 0  # type: ignore[arg-type]
    state = {"done": 0}

    def records() -> Iterator[_Record]:
        for number, raw in enumerate(rows, 1):
            state["done"] = number
            if not isinstance(raw, dict):
                yield _Record(number, None, "expected a dict", repr(raw))
            else:
                yield _Record(number, raw)

    tick = (lambda: progress(state["done"], total)) if progress else None
    return _run(db, kind, source, None, records(), renames=_mapping_renames(mapping),
                skip_invalid=skip_invalid,
                reject_path=Path(reject_path) if reject_path is not None else None,
                progress=tick)


__all__ = ["ImportReport", "import_file", "import_rows", "parse_timestamp", "file_format",
           "default_reject_path", "BATCH_SIZE", "KINDS", "REQUIRED"]
