"""The store: one SQLite file, WAL, foreign keys, and old databases upgraded in place."""

from pathlib import Path

import pytest
from sqlite_utils import Database

from pushgen.store import StoreError, migrations, now_iso, open_store, table_counts


def test_old_database_upgrades_in_place_keeping_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = Database(path)
    migrations.apply(old, stop_before="0002_ranking")       # a database from the first release
    old["users"].insert({"external_id": "u1", "name": "王芳", "created_at": now_iso(),
                         "updated_at": now_iso()})
    assert "drafts" not in old.table_names()
    old.conn.close()

    db = open_store(path)
    names = set(db.table_names())
    assert {"users", "items", "events", "models", "campaigns", "recommendations", "drafts",
            "review_events", "llm_cache", "_migrations"} <= names
    applied = [r["name"] for r in db["_migrations"].rows]
    assert applied[:3] == ["0001_catalog", "0002_ranking", "0003_drafts"]
    assert applied == [m.name for m in migrations._migrations]     # every later one too
    assert "0100_rank_model_identity" in applied
    assert db.execute("SELECT name FROM users").fetchone()[0] == "王芳"
    open_store(path)                                         # a second open applies nothing
    assert db["_migrations"].count == len(applied)
    assert "push_token" in db["users"].columns_dict and "consent_events" in db.table_names()


def test_wal_and_foreign_keys(tmp_path: Path) -> None:
    db = open_store(tmp_path / "p.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    with pytest.raises(Exception, match="FOREIGN KEY"):
        db.execute("INSERT INTO events (user_id, item_id, kind, ts) VALUES (99, 99, 'view', 'x')")
    assert table_counts(db)["events"] == 0


def test_bad_paths_are_clear_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_text("not sqlite")
    with pytest.raises(StoreError, match="not a pushgen database"):
        open_store(junk)
    with pytest.raises(StoreError, match="not a database file"):
        open_store(tmp_path)
    with pytest.raises(StoreError, match="no such database"):
        open_store(tmp_path / "missing.db", create=False)
    assert not (tmp_path / "missing.db").exists()
