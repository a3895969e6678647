"""SQL of the ranker: reads of users, items and events; models, campaigns, recommendations."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import numpy as np
from sqlite_utils import Database

from . import dumps, loads, now_iso

_CHUNK = 900  # stay under SQLite's bound-variable limit in IN (...) lists


def _chunks(ids: Sequence[int]) -> Iterable[Sequence[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start:start + _CHUNK]


# -- reads of the catalog --------------------------------------------------------------------
def user_rows(db: Database, user_ids: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """Users with ``attributes`` parsed, ordered by id (all users, or just ``user_ids``)."""
    sql = "SELECT id, external_id, name, locale, attributes FROM users"
    if user_ids is None:
        cur = [db.execute(sql + " ORDER BY id")]
    else:
        cur = [db.execute(f"{sql} WHERE id IN ({','.join('?' * len(c))}) ORDER BY id", list(c))
               for c in _chunks(list(user_ids))]
    out = []
    for c in cur:
        for uid, ext, name, locale, attrs in c.fetchall():
            out.append({"id": uid, "external_id": ext, "name": name, "locale": locale,
                        "attributes": loads(attrs, {}) or {}})
    out.sort(key=lambda r: r["id"])
    return out


def item_rows(db: Database) -> list[dict[str, Any]]:
    """Every item with ``attributes`` parsed, ordered by id."""
    cols = ("id, sku, title, description, category, brand, price, currency, sale_price, stock, "
            "url, image_url, active, attributes")
    cur = db.execute(f"SELECT {cols} FROM items ORDER BY id")
    names = [d[0] for d in cur.description]
    rows = []
    for r in cur.fetchall():
        row = dict(zip(names, r))
        row["attributes"] = loads(row["attributes"], {}) or {}
        rows.append(row)
    return rows


def event_arrays(db: Database, user_ids: Sequence[int] | None = None
                 ) -> dict[str, Any]:
    """Events as columns, in time order: ``user``, ``item``, ``kind`` (codes into ``kinds``),
    ``value`` and ``ts`` (seconds since 1970, UTC), for every user or just ``user_ids``.

    SQLite parses the ISO timestamps (with their offsets) and the kinds become small integers
    in SQL, so a few million events load as numbers without a Python object per field.
    """
    if user_ids is None:
        kinds = [r[0] for r in db.execute("SELECT DISTINCT kind FROM events ORDER BY kind")]
    else:  # only these users' kinds: a scan of every event per batch would grow with the shop
        kinds = sorted({r[0] for c in _chunks(list(user_ids)) for r in db.execute(
            f"SELECT DISTINCT kind FROM events WHERE user_id IN ({','.join('?' * len(c))})",
            list(c))})
    case = "CASE kind " + " ".join("WHEN ? THEN %d" % i for i in range(len(kinds))) + \
        " ELSE -1 END" if kinds else "-1"
    sql = (f"SELECT user_id, item_id, {case}, value, CAST(strftime('%s', ts) AS INTEGER) "
           "FROM events")
    if user_ids is None:
        cursors = [db.execute(sql + " ORDER BY ts, id", kinds)]
    else:
        cursors = [db.execute(f"{sql} WHERE user_id IN ({','.join('?' * len(c))}) "
                              "ORDER BY ts, id", [*kinds, *c]) for c in _chunks(list(user_ids))]
    parts: list[np.ndarray] = []
    for cur in cursors:
        while True:
            rows = cur.fetchmany(100_000)
            if not rows:
                break
            parts.append(np.array(rows, dtype=np.float64).reshape(-1, 5))
    a = np.concatenate(parts) if parts else np.empty((0, 5))
    if user_ids is not None and len(cursors) > 1:
        a = a[np.argsort(a[:, 4], kind="stable")]
    return {"user": a[:, 0].astype(np.int64), "item": a[:, 1].astype(np.int64),
            "kind": a[:, 2].astype(np.int16), "value": a[:, 3], "ts": a[:, 4].astype(np.int64),
            "kinds": kinds}


def latest_event_ts(db: Database) -> int | None:
    """Seconds since 1970 of the newest event (the data's "today"), None without events."""
    row = db.execute("SELECT CAST(strftime('%s', max(ts)) AS INTEGER) FROM events").fetchone()
    return int(row[0]) if row and row[0] is not None else None


def user_ids_all(db: Database) -> list[int]:
    return [r[0] for r in db.execute("SELECT id FROM users ORDER BY id").fetchall()]


# -- models -------------------------------------------------------------------------------------
def database_id(db: Database) -> str:
    """The database's own random identity (created by migration 0100_rank_model_identity)."""
    return str(db.execute("SELECT id FROM database_identity LIMIT 1").fetchone()[0])


def database_tag(db: Database) -> str:
    """The identity's short form that file and folder names carry (model folders,
    temporary exports)."""
    return database_id(db)[:12]


def insert_model(db: Database, *, version: str, params: dict[str, Any],
                 metrics: dict[str, Any], validation: dict[str, Any], blend: dict[str, Any],
                 n_users: int, n_items: int,
                 write_artifact: Callable[[int], tuple[str, str]]) -> int:
    """Record a trained model; returns its id.

    ``write_artifact(id)`` runs inside the same transaction and returns the artifact's path
    (relative to the database's folder) and its sha256: if it raises, the row is rolled back,
    so a row never exists without its artifact.
    """
    with db.conn:
        cur = db.conn.execute(
            "INSERT INTO models (version, path, created_at, params, metrics, validation, blend, "
            "n_users, n_items) VALUES (?, '', ?, ?, ?, ?, ?, ?, ?)",
            (version, now_iso(), dumps(params), dumps(metrics), dumps(validation), dumps(blend),
             n_users, n_items))
        model_id = int(cur.lastrowid)
        path, sha256 = write_artifact(model_id)
        db.conn.execute("UPDATE models SET path = ?, sha256 = ? WHERE id = ?",
                        (path, sha256, model_id))
    return model_id


def _model_dict(row: Any, names: list[str]) -> dict[str, Any]:
    d = dict(zip(names, row))
    for key in ("params", "metrics", "validation", "blend"):
        d[key] = loads(d.get(key), {})
    return d


def get_model(db: Database, model_id: int) -> dict[str, Any] | None:
    cur = db.execute("SELECT * FROM models WHERE id = ?", [model_id])
    row = cur.fetchone()
    return _model_dict(row, [d[0] for d in cur.description]) if row else None


def latest_model(db: Database) -> dict[str, Any] | None:
    """The newest model that has an artifact path (rows of failed saves are skipped)."""
    rows = models_with_path(db, limit=1)
    return rows[0] if rows else None


def models_with_path(db: Database, limit: int | None = None) -> list[dict[str, Any]]:
    """Models with a non-empty artifact path, newest first."""
    sql = "SELECT * FROM models WHERE path != '' ORDER BY id DESC"
    cur = db.execute(sql + (f" LIMIT {int(limit)}" if limit else ""))
    names = [d[0] for d in cur.description]
    return [_model_dict(r, names) for r in cur.fetchall()]


def model_count(db: Database) -> int:
    return int(db.execute("SELECT count(*) FROM models").fetchone()[0])


def event_kind_counts(db: Database) -> dict[str, int]:
    """Number of events per kind."""
    return dict(db.execute("SELECT kind, count(*) FROM events GROUP BY kind").fetchall())


def user_attribute_names(db: Database) -> list[str]:
    """Every key used in any user's ``attributes`` JSON, sorted."""
    return [r[0] for r in db.execute(
        "SELECT DISTINCT j.key FROM users, json_each(CASE WHEN json_valid(users.attributes) "
        "AND json_type(users.attributes) = 'object' THEN users.attributes ELSE '{}' END) j "
        "ORDER BY j.key").fetchall()]


def item_categories(db: Database) -> list[str]:
    """Distinct non-empty item categories, sorted."""
    return [r[0] for r in db.execute(
        "SELECT DISTINCT category FROM items WHERE category IS NOT NULL AND category != '' "
        "ORDER BY category").fetchall()]


def item_skus(db: Database) -> list[str]:
    return [r[0] for r in db.execute("SELECT sku FROM items").fetchall()]


def users_external_ids(db: Database, user_ids: Sequence[int]) -> dict[int, str]:
    """Internal id -> external id of the given users."""
    out: dict[int, str] = {}
    for c in _chunks(list(user_ids)):
        out.update(db.execute(f"SELECT id, external_id FROM users WHERE id IN "
                              f"({','.join('?' * len(c))})", list(c)).fetchall())
    return out


def recommendation_total(db: Database, campaign_id: int) -> int:
    return int(db.execute("SELECT count(*) FROM recommendations WHERE campaign_id = ?",
                          [campaign_id]).fetchone()[0])


# -- campaigns ---------------------------------------------------------------------------------
def get_or_create_campaign(db: Database, name: str, *, channel: str | None = None,
                           model_id: int | None = None) -> int:
    """Id of the campaign called ``name``, created if missing; ``model_id`` is recorded."""
    now = now_iso()
    with db.conn:
        row = db.conn.execute("SELECT id FROM campaigns WHERE name = ?", (name,)).fetchone()
        if row is None:
            cur = db.conn.execute(
                "INSERT INTO campaigns (name, channel, model_id, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?)", (name, channel, model_id, now, now))
            return int(cur.lastrowid)
        if model_id is not None:
            db.conn.execute("UPDATE campaigns SET model_id = ?, updated_at = ? WHERE id = ?",
                            (model_id, now, row[0]))
        return int(row[0])


def campaign_id(db: Database, name: str) -> int | None:
    row = db.execute("SELECT id FROM campaigns WHERE name = ?", [name]).fetchone()
    return int(row[0]) if row else None


# -- recommendations ---------------------------------------------------------------------------
def replace_recommendations(db: Database, campaign_id: int, user_ids: Sequence[int],
                            rows: Iterable[tuple]) -> int:
    """Replace the campaign's rows of ``user_ids`` by ``rows`` in one transaction.

    ``rows``: ``(user_id, rank, item_id, score, reason, source, model_id)``. Returns the number
    of rows written. Re-running with the same users is idempotent.
    """
    now = now_iso()
    n = 0
    with db.conn:
        for chunk in _chunks(list(user_ids)):
            db.conn.execute(
                f"DELETE FROM recommendations WHERE campaign_id = ? AND user_id IN "
                f"({','.join('?' * len(chunk))})", [campaign_id, *chunk])
        cur = db.conn.executemany(
            "INSERT INTO recommendations (campaign_id, user_id, rank, item_id, score, reason, "
            "source, model_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ((campaign_id, *r, now) for r in rows))
        n = cur.rowcount
    return n


def recommendation_rows(db: Database, campaign_id: int,
                        user_ids: Sequence[int]) -> list[dict[str, Any]]:
    """Stored recommendations of the users joined with item facts, by user then rank."""
    out: list[dict[str, Any]] = []
    for chunk in _chunks(list(user_ids)):
        cur = db.execute(
            "SELECT r.user_id, r.rank, r.score, r.reason, r.source, r.model_id, i.id AS item_id, "
            "i.sku, i.title, i.description, i.category, i.brand, i.price, i.currency, "
            "i.sale_price, i.url, i.image_url, i.attributes "
            "FROM recommendations r JOIN items i ON i.id = r.item_id "
            f"WHERE r.campaign_id = ? AND r.user_id IN ({','.join('?' * len(chunk))}) "
            "ORDER BY r.user_id, r.rank", [campaign_id, *chunk])
        names = [d[0] for d in cur.description]
        out.extend(dict(zip(names, r)) for r in cur.fetchall())
    return out


def recommendation_counts(db: Database, campaign_id: int) -> dict[str, int]:
    """Number of recommended users per source for a campaign."""
    return {s: n for s, n in db.execute(
        "SELECT source, count(DISTINCT user_id) FROM recommendations WHERE campaign_id = ? "
        "GROUP BY source", [campaign_id]).fetchall()}
