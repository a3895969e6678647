"""SQL of the ranker: reads of users, items and events; models, campaigns, recommendations."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

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


def event_rows(db: Database) -> list[tuple[int, int, str, float, str]]:
    """All events as ``(user_id, item_id, kind, value, ts)`` in time order."""
    return db.execute(
        "SELECT user_id, item_id, kind, value, ts FROM events ORDER BY ts, id").fetchall()


def user_ids_all(db: Database) -> list[int]:
    return [r[0] for r in db.execute("SELECT id FROM users ORDER BY id").fetchall()]


# -- models -------------------------------------------------------------------------------------
def insert_model(db: Database, *, version: str, path: str, params: dict[str, Any],
                 metrics: dict[str, Any], n_users: int, n_items: int,
                 write_artifact: Callable[[int], None] | None = None) -> int:
    """Record a trained model; returns its id.

    ``path`` may hold ``{id}`` (filled with the new id). ``write_artifact(id)`` runs inside the
    same transaction: if it raises, the row is rolled back, so a row never exists without its
    artifact.
    """
    with db.conn:
        cur = db.conn.execute(
            "INSERT INTO models (version, path, created_at, params, metrics, n_users, n_items) "
            "VALUES (?, '', ?, ?, ?, ?, ?)",
            (version, now_iso(), dumps(params), dumps(metrics), n_users, n_items))
        model_id = int(cur.lastrowid)
        db.conn.execute("UPDATE models SET path = ? WHERE id = ?",
                        (path.replace("{id}", str(model_id)), model_id))
        if write_artifact is not None:
            write_artifact(model_id)
    return model_id


def set_model_path(db: Database, model_id: int, path: str) -> None:
    with db.conn:
        db.conn.execute("UPDATE models SET path = ? WHERE id = ?", (path, model_id))


def delete_model(db: Database, model_id: int) -> None:
    with db.conn:
        db.conn.execute("DELETE FROM models WHERE id = ?", (model_id,))


def _model_dict(row: Any, names: list[str]) -> dict[str, Any]:
    d = dict(zip(names, row))
    d["params"], d["metrics"] = loads(d["params"], {}), loads(d["metrics"], {})
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
