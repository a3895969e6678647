"""Fixture data for the ranker tests: a small shop with planted taste structure.

Three categories (alpha, beta, gamma) of 10 items each. Users 1-20 buy and view only alpha,
21-40 only beta, 41-60 only gamma; each group shares a distinct profile (age band, gender,
tier), so profile features predict taste too.
"""

from __future__ import annotations

import random
from pathlib import Path

from sqlite_utils import Database

from pushgen.store import open_store

CATS = ("alpha", "beta", "gamma")
PROFILES = {
    "alpha": {"age_band": "18-24", "gender": "F", "region": "north", "tier": "gold"},
    "beta": {"age_band": "35-44", "gender": "M", "region": "south", "tier": "silver"},
    "gamma": {"age_band": "55+", "gender": "F", "region": "east", "tier": "bronze"},
}
TS = "2026-01-{:02d}T10:00:00+00:00"


def item_id(cat: str, n: int) -> int:
    return CATS.index(cat) * 10 + n + 1


def user_row(uid: int, attrs: dict, locale: str = "en-US") -> dict:
    return {"id": uid, "external_id": f"u{uid}", "name": f"User {uid}", "email": None,
            "locale": locale, "attributes": attrs, "created_at": TS.format(1),
            "updated_at": TS.format(1)}


def make_shop(path: Path, seed: int = 7) -> Database:
    """Create and fill a store at ``path``."""
    db = open_store(path)
    rng = random.Random(seed)
    items = []
    for cat in CATS:
        for n in range(10):
            price = 20.0 + 10 * n
            items.append({
                "id": item_id(cat, n), "sku": f"{cat[:2].upper()}-{n}",
                "title": f"{cat.title()} thing {n}", "category": cat, "brand": f"brand-{cat}",
                "price": price, "sale_price": price * 0.7 if n % 3 == 0 else None,
                "stock": 0 if n == 9 else 10, "active": 0 if n == 8 else 1,
                "attributes": {"tags": [cat, "tag-" + str(n % 2)]},
                "created_at": TS.format(1), "updated_at": TS.format(1)})
    db["items"].insert_all(items)
    users, events = [], []
    for g, cat in enumerate(CATS):
        for j in range(20):
            uid = g * 20 + j + 1
            users.append(user_row(uid, PROFILES[cat], "zh-CN" if j % 4 == 0 else "en-US"))
            picks = rng.sample(range(8), 5)
            for d, n in enumerate(picks):
                kind = "purchase" if d < 2 else ("cart" if d == 2 else "view")
                events.append({"user_id": uid, "item_id": item_id(cat, n), "kind": kind,
                               "value": 1, "ts": TS.format(d + 2)})
    db["users"].insert_all(users)
    db["events"].insert_all(events)
    return db


def add_user(db: Database, uid: int, attrs: dict) -> None:
    db["users"].insert(user_row(uid, attrs))
