"""The import itself: one transaction, batches, rejects, and the report.

An import validates every row, streams the file in batches, and on the first bad row
(unless ``skip_invalid``) writes nothing at all. Errors name the file, line and column.
Re-importing the same file changes nothing. Memory stays bounded: the id maps of users
and items, the keys seen (users/items files), and one batch; events are merged in a
temporary SQLite table, not in Python.
"""

from __future__ import annotations

import csv
import json
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from sqlite_utils import Database

from ..errors import InputError
from ..store import catalog, now_iso
from ..store import outcomes as outcome_store
from . import readers
from .options import ImportOptions, Shaper, check_header, mapping_renames
from .presets import PresetRun, Skip, get_preset
from .readers import Record
from .rows import (ERASED, REQUIRED, ErasedIds, Reading, event_row, item_row, merge_rows,
                   new_item_row, new_user_row, user_row)
from .outcomes import CUSTOMER_COLUMNS as OUTCOME_COLUMNS
from .outcomes import EVENT_KINDS, OPT_OUT_REASONS, Outcome, OutcomeParser
from .unsubscribes import CUSTOMER_COLUMNS, OptOutParser
from .values import RowError

Kind = Literal["users", "items", "events", "unsubscribes", "outcomes"]
KINDS: tuple[str, ...] = ("users", "items", "events", "unsubscribes", "outcomes")
Progress = Callable[[int, int], None]
BATCH_SIZE = 5000


@dataclass
class ImportReport:
    """What an import did; plain fields, so ``to_dict()`` is its JSON form.

    ``rows`` counts data rows read. For events, ``inserted`` / ``updated`` / ``unchanged``
    count events after repeats were merged (``merged`` rows were repeats added to an
    earlier identical event; ``quantity`` is the units of this file's events). For
    unsubscribes, ``inserted`` counts opt-outs recorded, ``updated`` consent flags switched
    off and ``unchanged`` opt-outs already on record. For outcomes, ``inserted`` counts
    outcomes recorded and ``unchanged`` ones already on record; ``events_created`` the click
    and purchase events they added and ``opt_outs`` the consents they switched off
    (unsubscribed, complained, hard bounces). ``skipped`` rows are not errors (no
    customer, an unpaid order, a postage line) and are counted by reason; ``reasons``
    counts rejected rows by reason, most common first.
    """

    kind: str
    source: str
    rows: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    merged: int = 0
    quantity: float = 0.0
    returns: int = 0
    rejected: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    users_created: int = 0
    items_created: int = 0
    consent_kept: int = 0
    events_created: int = 0
    opt_outs: int = 0
    reject_path: str | None = None
    reject_samples: list[str] = field(default_factory=list)  # first few rejections
    reasons: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, counts: catalog.WriteCounts) -> None:
        self.inserted += counts.inserted
        self.updated += counts.updated
        self.unchanged += counts.unchanged

    @property
    def imported(self) -> int:
        """Rows (events: distinct events) now in the store as the file says."""
        return self.inserted + self.updated + self.unchanged

    def failure(self) -> str | None:
        """One line saying why nothing was imported from a file that had rows, else None."""
        if self.rows == 0 or self.imported:
            return None
        if self.rejected:
            reason, count = next(iter(self.reasons.items()))
            first = self.reject_samples[0] if self.reject_samples else ""
            return (f"all {self.rows:,} rows were rejected; most common reason ({count:,} "
                    f"rows): {reason}; first: {first}")
        if not self.skipped:
            return None
        reason, count = max(self.skipped.items(), key=lambda kv: kv[1])
        return f"no row imported: all {self.rows:,} rows skipped, most for {reason} ({count:,})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- rejects -----------------------------------------------------------------------------

class _RejectWriter:
    """Writes rejected rows (original columns + ``_reason``) to a temp file, renamed on success."""

    def __init__(self, path: Path, header: list[str] | None) -> None:
        self.path, self.header = path, header
        self.tmp = path.with_name(path.name + ".partial")
        self.handle: Any = None
        self.writer: Any = None
        self.jsonl = path.suffix.lower() in (".jsonl", ".ndjson", ".json")

    def write(self, record: Record, reason: str) -> None:
        if self.handle is None:
            self.handle = open(self.tmp, "w", encoding="utf-8", newline="")
            if not self.jsonl:
                columns = list(self.header or (record.raw or {}).keys() or ["_raw"])
                if "_raw" not in columns:
                    columns.append("_raw")
                self.writer = csv.DictWriter(self.handle, [*columns, "_reason"],
                                             extrasaction="ignore")
                self.writer.writeheader()
        row: dict[str, Any] = dict(record.raw) if record.raw is not None else {}
        if record.raw is None or record.error:
            row["_raw"] = record.text
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


_REASON_HEAD = re.compile(r"^(.*?)(?: ?['\"(\d]|$)")


def _reason_key(field: str | None, message: str) -> str:
    """'column 'ts': bad date' for "bad date '27-04-2015' (...)": rows with the same
    problem count together whatever their values."""
    head = _REASON_HEAD.match(message)
    words = (head.group(1) if head and head.group(1) else message).strip().rstrip(":,;")
    return f"column '{field}': {words}" if field else words


# --- one handler per kind ------------------------------------------------------------------

class _Handler:
    """Parses target rows of one kind, buffers them, writes a batch at a time."""

    def __init__(self, db: Database, report: ImportReport, reading: Reading, source: str,
                 options: ImportOptions) -> None:
        self.db, self.report, self.reading, self.source = db, report, reading, source
        self.options = options
        self.batch: list[Any] = []

    def parse(self, rec: dict[str, Any], line: int) -> Any:
        raise NotImplementedError

    def add(self, parsed: Any, line: int) -> None:
        self.batch.append(parsed)

    def flush(self) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        self.flush()

    def close(self) -> None:
        """Always called, also after an error."""


class _Upserts(_Handler):
    """users / items: upserts by key; a key twice in one file is an error."""

    def __init__(self, *args: Any, kind: str) -> None:
        super().__init__(*args)
        self.kind = kind
        self.key = "external_id" if kind == "users" else "sku"
        self.seen: dict[str, int] = {}
        self.guard_consent = kind == "users" and catalog.has_consent_events(self.db)
        self.erased = ErasedIds(self.db) if kind == "users" else None

    def parse(self, rec: dict[str, Any], line: int) -> dict[str, Any] | Skip:
        row = (user_row if self.kind == "users" else item_row)(rec, self.reading)
        if self.erased is not None and self.erased(row["external_id"]):
            return ERASED
        first = self.seen.get(row[self.key])
        if first is not None:
            raise RowError(self.key, f"duplicate {self.key} {row[self.key]!r} (first on line {first})")
        self.seen[row[self.key]] = line
        return row

    def add(self, parsed: Any, line: int) -> None:
        self.batch.append((parsed, line))

    def _keep_opt_outs(self, rows: list[tuple[dict[str, Any], int]]
                       ) -> list[tuple[int, str, int, str, str, str | None]]:
        """A consent the file switches on stays off when the customer opted out later than
        the file says they consented (or the file does not say when): the opt-out was
        recorded from the sending platform and a shop export may simply be older."""
        wanted = [(row, line) for row, line in rows
                  if any(row.get(f"consent_{c}") == 1 for c in catalog.CONSENT_CHANNELS)]
        if not wanted:
            return []
        ids = catalog.ids_for_keys(self.db, "users", [r["external_id"] for r, _ in wanted])
        latest = catalog.latest_consent(self.db, ids.values())
        lifted = []
        for row, line in wanted:
            uid = ids.get(row["external_id"])
            for channel in catalog.CONSENT_CHANNELS:
                if uid is None or row.get(f"consent_{channel}") != 1:
                    continue
                last = latest.get((uid, channel))
                if last is None or last[0] == 1:
                    continue
                given = (row.get("_consent_at") or {}).get(channel)
                if given is not None and given > last[1]:
                    lifted.append((uid, channel, 1, given, f"{Path(self.source).name}:{line}",
                                   "consent given again"))
                else:
                    del row[f"consent_{channel}"]
                    self.report.consent_kept += 1
        return lifted

    def flush(self) -> None:
        if not self.batch:
            return
        lifted = self._keep_opt_outs(self.batch) if self.guard_consent else []
        rows = [row for row, _ in self.batch]
        for row in rows:
            row.pop("_consent_at", None)
        write = catalog.upsert_users if self.kind == "users" else catalog.upsert_items
        self.report.add(write(self.db, rows))
        catalog.record_consent(self.db, lifted)
        self.batch = []


class _Events(_Handler):
    """events: ids resolved per batch (after creating missing customers and products),
    rows staged in SQLite where repeats are summed, merged into ``events`` at the end."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.users = catalog.user_ids_by_external_id(self.db)
        self.items = catalog.item_ids_by_sku(self.db)
        self.create = self.options.create_missing
        self.created_users: set[str] = set()
        self.created_items: set[str] = set()
        self.new_users: dict[str, dict[str, Any]] = {}
        self.new_items: dict[str, dict[str, Any]] = {}
        # (side, key) -> digest of the user.* / item.* cells last merged for a customer or
        # product this import creates: most event files repeat them on every line, and an
        # identical repeat changes nothing (it cost one upsert per batch it appeared in).
        self.last_cells: dict[tuple[str, str], int] = {}
        self.erased = ErasedIds(self.db)
        catalog.begin_event_staging(self.db)

    def parse(self, rec: dict[str, Any], line: int) -> Any:
        event = event_row(rec, self.reading, line)
        if isinstance(event, Skip):
            return event
        user_new = item_new = None
        user_cells = item_cells = 0
        if event.user not in self.users and self.erased(event.user):
            return ERASED
        if event.user not in self.users or event.user in self.created_users:
            if not self.create:
                raise RowError("user", f"unknown user {event.user!r} (import users first, "
                                       "or add --create-missing)")
            user_cells = hash(repr(event.user_fields))
            if self.last_cells.get(("user", event.user)) != user_cells:
                user_new = new_user_row(event, self.reading)
        if event.item not in self.items or event.item in self.created_items:
            if not self.create:
                raise RowError("item", f"unknown item {event.item!r} (import items first, "
                                       "or add --create-missing)")
            item_cells = hash(repr(event.item_fields))
            if self.last_cells.get(("item", event.item)) != item_cells:
                item_new = new_item_row(event, self.reading)
        return event, user_new, item_new, user_cells, item_cells

    def add(self, parsed: Any, line: int) -> None:
        event, user_new, item_new, user_cells, item_cells = parsed
        # What the file says about a new customer or product: later rows win, empty
        # cells change nothing. A row whose cells equal the last merged ones for the same
        # customer or product came back from parse without one (it is already written or
        # queued as it is).
        if user_new is not None:
            self.new_users[event.user] = merge_rows(self.new_users.get(event.user), user_new)
            self.last_cells[("user", event.user)] = user_cells
        if item_new is not None:
            self.new_items[event.item] = merge_rows(self.new_items.get(event.item), item_new)
            self.last_cells[("item", event.item)] = item_cells
        if event.kind == "return":
            self.report.returns += 1
        self.batch.append(event)

    def _create(self, kind: str, pending: dict[str, dict[str, Any]], ids: dict[str, int],
                created: set[str]) -> None:
        if not pending:
            return
        write = catalog.upsert_users if kind == "users" else catalog.upsert_items
        counts = write(self.db, list(pending.values()))
        if kind == "users":
            self.report.users_created += counts.inserted
        else:
            self.report.items_created += counts.inserted
        fresh = [k for k in pending if k not in ids]
        ids.update(catalog.ids_for_keys(self.db, kind, fresh))
        created.update(fresh)
        pending.clear()

    def flush(self) -> None:
        self._create("users", self.new_users, self.users, self.created_users)
        self._create("items", self.new_items, self.items, self.created_items)
        if self.batch:
            users, items = self.users, self.items
            catalog.stage_events(self.db, ((users[e.user], items[e.item], e.kind, e.ts,
                                            e.quantity, e.value) for e in self.batch))
            self.batch = []

    def finish(self) -> None:
        self.flush()
        counts = catalog.merge_staged_events(self.db)
        self.report.add(counts)
        self.report.merged += counts.merged
        self.report.quantity += counts.quantity

    def close(self) -> None:
        try:
            catalog.end_event_staging(self.db)
        except Exception:  # noqa: BLE001 - the connection may be unusable after an error
            pass


class _OptOuts(_Handler):
    """unsubscribes: consent events for customers not yet opted out on that channel."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.parser = OptOutParser(self.db, self.reading.date_formats, ErasedIds(self.db),
                                   zone=self.reading.timezone)
        self.done: set[tuple[int, str]] = set()
        self.name = Path(self.source).name

    def parse(self, rec: dict[str, Any], line: int) -> Any:
        parsed = self.parser(rec)
        return parsed if parsed[0] else ERASED

    def add(self, parsed: Any, line: int) -> None:
        self.batch.append((parsed, line))

    def flush(self) -> None:
        if not self.batch:
            return
        latest = catalog.latest_consent(
            self.db, [uid for (pairs, _, _), _ in self.batch for uid, _ in pairs])
        writes = []
        for (pairs, at, reason), line in self.batch:
            for uid, channel in pairs:
                last = latest.get((uid, channel))
                if ((uid, channel) in self.done or (last is not None and
                                                    (last[0] == 0 or last[1] > at))):
                    # already opted out, or consented again after this opt-out
                    self.report.unchanged += 1
                    continue
                self.done.add((uid, channel))
                writes.append((uid, channel, 0, at, f"{self.name}:{line}", reason))
        self.report.inserted += len(writes)
        self.report.updated += catalog.record_consent(self.db, writes)
        self.batch = []


class _Outcomes(_Handler):
    """outcomes: one row per (draft, event, time, item); clicks and conversions with an
    item become events; unsubscribes, complaints and hard bounces switch consent off."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.parser = OutcomeParser(self.db, self.reading.date_formats,
                                    self.reading.decimal_comma, ErasedIds(self.db),
                                    zone=self.reading.timezone)
        self.name = Path(self.source).name
        self.now = now_iso()

    def parse(self, rec: dict[str, Any], line: int) -> Any:
        return self.parser(rec)

    def add(self, parsed: Any, line: int) -> None:
        self.batch.append((parsed, line))

    def flush(self) -> None:
        if not self.batch:
            return
        rows: list[tuple[Outcome, int, str]] = []
        for o, line in self.batch:
            source = f"{self.name}:{line}"
            oid = outcome_store.insert_outcome(self.db, {
                "draft_id": o.draft_id, "user_id": o.user_id, "event": o.event, "ts": o.ts,
                "detail": o.detail, "value": o.value, "item_id": o.item_id, "source": source,
                "imported_at": self.now})
            if oid is None:
                self.report.unchanged += 1
                continue
            self.report.inserted += 1
            kind = EVENT_KINDS.get(o.event)
            if kind and o.item_id is not None and outcome_store.add_outcome_event(
                    self.db, oid, o.user_id, o.item_id, kind, o.ts):
                self.report.events_created += 1
            if o.opts_out:
                rows.append((o, line, source))
        if rows:
            latest = catalog.latest_consent(self.db, [o.user_id for o, _, _ in rows])
            writes, done = [], set()
            for o, _, source in rows:
                last = latest.get((o.user_id, o.channel))
                if (o.user_id, o.channel) in done or (
                        last is not None and (last[0] == 0 or last[1] > o.ts)):
                    continue      # already opted out, or consented again since
                done.add((o.user_id, o.channel))
                writes.append((o.user_id, o.channel, 0, o.ts, source,
                               OPT_OUT_REASONS[o.event]))
            catalog.record_consent(self.db, writes)
            self.report.opt_outs += len(writes)
        self.batch = []


# --- the loop ------------------------------------------------------------------------------

def _run(db: Database, kind: str, source: str, header: list[str] | None,
         records: Iterator[Record], shaper: Shaper, options: ImportOptions, *,
         reading: Reading, preset: PresetRun | None, skip_invalid: bool,
         reject_path: Path | None, progress: Callable[[], None] | None) -> ImportReport:
    if skip_invalid and reject_path is not None and not reject_path.parent.is_dir():
        raise InputError(f"folder {reject_path.parent} for the reject file does not exist")
    report = ImportReport(kind=kind, source=source)
    started = time.perf_counter()
    rejects = _RejectWriter(reject_path, header) if skip_invalid and reject_path else None
    # A row without a customer is skipped as anonymous, not refused: JSON Lines may omit it.
    required = tuple(n for n in REQUIRED[kind] if not (kind == "events" and n == "user"))
    reasons: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    ok = False
    handler: _Handler | None = None
    try:
        with db.atomic():
            args = (db, report, reading, source, options)
            if kind == "events":
                handler = _Events(*args)
            elif kind == "unsubscribes":
                handler = _OptOuts(*args)
            elif kind == "outcomes":
                handler = _Outcomes(*args)
            else:
                handler = _Upserts(*args, kind=kind)
            for record in records:
                report.rows += 1
                try:
                    if record.error is not None:
                        raise RowError(record.field, record.error)
                    assert record.raw is not None
                    rec = shaper(record.raw)
                    if header is None:  # JSON Lines / Python rows: no header to check up front
                        for name in required:
                            if name not in rec:
                                raise RowError(name, "required column missing")
                    shaped = preset(rec) if preset is not None else [rec]
                    if isinstance(shaped, Skip):
                        skipped[shaped.reason] += 1
                        continue
                    parsed = []
                    for target in shaped:
                        one = handler.parse(target, record.line)
                        if isinstance(one, Skip):
                            skipped[one.reason] += 1
                        else:
                            parsed.append(one)
                    for one in parsed:
                        handler.add(one, record.line)
                except RowError as exc:
                    where = shaper.display(exc.field)
                    error = InputError(exc.message, file=source, line=record.line, field=where)
                    if not skip_invalid:
                        raise error from None
                    report.rejected += 1
                    reasons[_reason_key(where, exc.message)] += 1
                    if len(report.reject_samples) < 5:
                        report.reject_samples.append(str(error))
                    if rejects is not None:
                        at = f"line {record.line}" + (f", column {where}" if where else "")
                        rejects.write(record, f"{at}: {exc.message}")
                    continue
                if len(handler.batch) >= BATCH_SIZE:
                    handler.flush()
                    if progress:
                        progress()
            handler.finish()
        ok = True
    finally:
        if handler is not None:
            handler.close()
        close = getattr(records, "close", None)
        if close is not None:
            close()
        if rejects is not None and rejects.close(ok):
            report.reject_path = str(reject_path)
    report.reasons = dict(reasons.most_common())
    report.skipped = dict(skipped.most_common())
    if progress:
        progress()
    report.seconds = time.perf_counter() - started
    return report


def default_reject_path(path: str | os.PathLike[str]) -> Path:
    """``users.csv`` -> ``users.rejects.csv`` next to it (``.jsonl`` stays JSON Lines;
    rejects of Parquet and xlsx files are CSV)."""
    p = Path(path)
    suffix = p.suffix if readers.FORMATS.get(p.suffix.lower()) in ("csv", "jsonl") else ".csv"
    return p.with_name(f"{p.stem}.rejects{suffix}")


def _options(options: ImportOptions | None, mapping: dict[str, str] | None,
             settings: dict[str, Any]) -> ImportOptions:
    if options is not None and settings:
        raise TypeError("give either options=ImportOptions(...) or keyword settings, not both")
    opts = options or ImportOptions(**settings)
    if mapping:
        opts.mapping = {**opts.mapping, **mapping}
    return opts


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise InputError(f"unknown import kind {kind!r} (use {', '.join(KINDS)})")


def import_file(db: Database, kind: Kind, path: str | os.PathLike[str], *,
                mapping: dict[str, str] | None = None, skip_invalid: bool = False,
                reject_path: str | os.PathLike[str] | None = None,
                progress: Progress | None = None, options: ImportOptions | None = None,
                **settings: Any) -> ImportReport:
    """Import a users / items / events / unsubscribes / outcomes file (.csv, .tsv, .jsonl,
    .parquet, .xlsx).

    ``mapping`` is ``{target: source}`` (e.g. ``{"title": "product_name"}``); any other
    reading option is an ``ImportOptions`` field, given as ``options=`` or as keywords
    (``constants={"kind": "purchase"}, date_formats=("%d-%m-%Y",), create_missing=True``).
    Without ``skip_invalid`` the first bad row raises InputError and nothing is written;
    with it, good rows are written and bad ones go to ``reject_path`` with a ``_reason``
    column. ``progress(bytes_read, total_bytes)`` is called after every batch.
    """
    _check_kind(kind)
    opts = _options(options, mapping, settings)
    p = Path(path)
    source = str(path)
    fmt = readers.file_format(p)
    if not p.is_file():
        raise InputError("no such file", file=source)
    rejects = Path(reject_path) if reject_path is not None else None
    if rejects is not None and rejects.resolve() == p.resolve():
        raise InputError("the reject file must not be the input file", file=source)
    if opts.preset is not None:
        if kind != "events":
            raise InputError(f"--preset reads order exports: use it with `import events`, "
                             f"not {kind}")
        if opts.mapping or opts.constants:
            raise InputError("--preset fixes the columns: it cannot be combined with --map "
                             "or --set")
    preset = get_preset(opts.preset) if opts.preset else None
    counter = readers.ByteCounter(p.stat().st_size)
    encoding = readers.resolve_encoding(opts.encoding) if fmt in ("csv", "jsonl") else "utf-8"
    header: list[str] | None
    if fmt == "csv":
        header, records = readers.csv_source(p, encoding=encoding, delimiter=opts.delimiter,
                                             counter=counter)
    elif fmt == "parquet":
        header, records = readers.parquet_source(p, counter=counter)
    elif fmt == "xlsx":
        header, records = readers.xlsx_source(p, sheet=opts.sheet, counter=counter)
    else:
        header, records = None, readers.jsonl_source(p, encoding=encoding, counter=counter)
    formats = opts.date_formats
    if preset is not None:
        if header is None:
            raise InputError("--preset reads CSV, Parquet or xlsx exports (with a header)",
                             file=source)
        renames = preset.resolve(header, source)
        formats = tuple(dict.fromkeys(formats + preset.date_formats))
        opts.create_missing = True
    else:
        renames = mapping_renames(opts.mapping)
        if header is not None:
            check_header(header, renames, opts.constants, REQUIRED[kind], source,
                         any_of={"unsubscribes": CUSTOMER_COLUMNS,
                                 "outcomes": OUTCOME_COLUMNS}.get(kind, ()))
    shaper = Shaper(renames, dict(opts.constants), opts.nulls, opts.trim)
    tick = (lambda: progress(counter.done, counter.total)) if progress else None
    catalog.tune_for_bulk_load(db)
    return _run(db, kind, source, header, records, shaper, opts,
                reading=Reading(opts.decimal_comma, formats, opts.timezone),
                preset=PresetRun(preset) if preset else None, skip_invalid=skip_invalid,
                reject_path=rejects, progress=tick)


def import_rows(db: Database, kind: Kind, rows: Iterable[dict[str, Any]], *,
                source: str = "<rows>", mapping: dict[str, str] | None = None,
                skip_invalid: bool = False, reject_path: str | os.PathLike[str] | None = None,
                progress: Progress | None = None, options: ImportOptions | None = None,
                **settings: Any) -> ImportReport:
    """Import Python dicts with the same validation as files; "line" = 1-based row number.

    ``progress(rows_done, total_rows)`` is called after every batch (total is 0 when
    ``rows`` has no length). Presets read files only.
    """
    _check_kind(kind)
    opts = _options(options, mapping, settings)
    if opts.preset is not None:
        raise InputError("presets read export files: use import_file")
    total = len(rows) if hasattr(rows, "__len__") else 0  # type: ignore[arg-type]
    state = {"done": 0}

    def records() -> Iterator[Record]:
        for number, raw in enumerate(rows, 1):
            state["done"] = number
            if not isinstance(raw, dict):
                yield Record(number, None, "expected a dict", repr(raw)[:1000])
            else:
                yield Record(number, raw)

    tick = (lambda: progress(state["done"], total)) if progress else None
    shaper = Shaper(mapping_renames(opts.mapping), dict(opts.constants), opts.nulls, opts.trim)
    return _run(db, kind, source, None, records(), shaper, opts,
                reading=Reading(opts.decimal_comma, opts.date_formats, opts.timezone),
                preset=None,
                skip_invalid=skip_invalid,
                reject_path=Path(reject_path) if reject_path is not None else None,
                progress=tick)


__all__ = ["ImportReport", "import_file", "import_rows", "default_reject_path", "KINDS",
           "BATCH_SIZE", "Kind"]
