"""The pushgen store: one SQLite file, opened and migrated in one place.

Every SQL statement in pushgen lives in this package: ``schema`` (tables and migrations),
``catalog`` (users, items, events), ``ranking`` (models, campaigns, recommendations),
``drafts`` (drafts, LLM cache) and ``reviews`` (review events, exports). Other modules
call these functions and never write SQL themselves.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from ..errors import PushgenError
from .schema import migrations

DEFAULT_DB = "pushgen.db"


class StoreError(PushgenError):
    """A problem with the database the user can act on (missing file, bad state...)."""


def default_db_path() -> Path:
    """``$PUSHGEN_DB`` if set, else ``./pushgen.db``."""
    return Path(os.environ.get("PUSHGEN_DB") or DEFAULT_DB)


def open_store(path: str | os.PathLike[str] | None = None, *, create: bool = True) -> Database:
    """Open (creating if needed) and migrate the database at ``path``.

    WAL journal and foreign keys are switched on for every connection.
    """
    p = Path(path) if path is not None else default_db_path()
    if not create and not p.exists():
        raise StoreError(f"{p}: no such database (run `pushgen demo` or `pushgen import` first)")
    if p.parent and not p.parent.exists():
        raise StoreError(f"{p}: folder {p.parent} does not exist")
    if not str(path if path is not None else p).strip() or p.is_dir():
        raise StoreError(f"{p}: not a database file (give --db a file name, e.g. shop.db)")
    try:
        db = Database(p)
        db.conn.execute("PRAGMA busy_timeout = 10000")
        db.enable_wal()
        # In WAL mode NORMAL never corrupts the file; a power cut may lose the last commits,
        # which pushgen redoes on rerun (imports are idempotent, campaigns resume).
        db.conn.execute("PRAGMA synchronous = NORMAL")
        db.conn.execute("PRAGMA foreign_keys = ON")
        migrations.apply(db)
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{p}: not a pushgen database ({exc})") from None
    return db


def now_iso() -> str:
    """Current UTC time as ISO 8601 with seconds, e.g. ``2026-11-28T10:19:58+00:00``."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def dumps(obj: Any) -> str:
    """JSON for storage: UTF-8 kept readable (Chinese stays Chinese), stable key order."""
    return json.dumps(obj, ensure_ascii=False, sort_keys=True)


def loads(text: str | None, default: Any = None) -> Any:
    return default if text is None or text == "" else json.loads(text)


def get_meta(db: Database, key: str) -> str | None:
    """A value of the ``meta`` table (facts about the database itself), or None."""
    row = db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
    return row[0] if row else None


def set_meta(db: Database, key: str, value: str) -> None:
    """Set a ``meta`` value (inside the caller's transaction, if any)."""
    db.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
               "ON CONFLICT(key) DO UPDATE SET value = excluded.value", [key, value])


def db_folder(db: Database) -> Path:
    """Folder holding the database file (model artifacts are saved next to it)."""
    row = db.execute("PRAGMA database_list").fetchone()
    return Path(row[2]).parent if row and row[2] else Path.cwd()


_MAIN_TABLES = ("users", "items", "events", "models", "campaigns", "recommendations",
                "drafts", "review_events", "exports", "consent_events", "llm_cache")


def table_counts(db: Database) -> dict[str, int]:
    """Row count of every pushgen table: the main ones first, then the rest by name
    (bookkeeping tables such as ``_migrations`` and ``meta`` left out)."""
    have = [n for n in db.table_names() if not n.startswith(("_", "sqlite_")) and n != "meta"]
    names = [n for n in _MAIN_TABLES if n in have] + sorted(set(have) - set(_MAIN_TABLES))
    return {n: db.execute(f"SELECT count(*) FROM [{n}]").fetchone()[0] for n in names}


__all__ = ["StoreError", "open_store", "default_db_path", "now_iso", "dumps", "loads",
           "get_meta", "set_meta",
           "db_folder", "table_counts", "migrations", "Database"]
