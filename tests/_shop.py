"""Small trained demo shops for the tests (built once per test module, copied per test), and
readers of what a test wrote."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

from pushgen.config import load_campaign_config
from pushgen.demo import build_demo_shop
from pushgen.ranking import TrainParams, train
from pushgen.store import open_store


def build_shop(folder: Path, *, users: int = 300, items: int = 80, seed: int = 3,
               events: int | None = None, epochs: int = 5, components: int = 16) -> Path:
    """``folder``/shop.db: a demo shop (``events`` default: 20 per user) with a trained model."""
    db = open_store(folder / "shop.db")
    build_demo_shop(db, seed=seed, n_users=users, n_items=items,
                    n_events=users * 20 if events is None else events)
    train(db, TrainParams(epochs=epochs, components=components, threads=1))  # reproducible
    db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.conn.close()
    return folder


def copy_shop(folder: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "shop"
    shutil.copytree(folder, dest)
    return dest / "shop.db"


def rows(db_path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    con = sqlite3.connect(db_path)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def drafts(db_path: Path, campaign: str) -> list[dict]:
    """Every draft of a campaign with its user, as dicts (content, items, checks decoded)."""
    out = []
    for (did, uid, ext, name, locale, email, phone, content, items, checks, passed, generator,
         flag, meta, tname) in rows(db_path, """
            SELECT d.id, u.id, u.external_id, u.name, d.locale, u.email, u.phone, d.content,
                   d.items, d.checks, d.passed, d.generator, d.flag, d.llm_meta,
                   d.template_name
            FROM drafts d JOIN users u ON u.id = d.user_id JOIN campaigns c
            ON c.id = d.campaign_id WHERE c.name = ? ORDER BY d.id""", (campaign,)):
        out.append({"id": did, "user_id": uid, "external_id": ext, "name": name,
                    "locale": locale, "email": email, "phone": phone,
                    "content": json.loads(content), "items": json.loads(items),
                    "checks": json.loads(checks), "passed": bool(passed),
                    "generator": generator, "flag": flag, "template_name": tname,
                    "meta": json.loads(meta) if meta else None})
    return out


def config(name: str, channel: str, limit: int | None = None, **settings):
    cfg = load_campaign_config(None, name=name, channel=channel)
    cfg.audience.limit = limit
    for k, v in settings.items():
        setattr(cfg.settings, k, v)
    return cfg
