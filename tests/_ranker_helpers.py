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


# -- shops with planted structure for the validation and blend tests ---------------------------
DAY0 = "2026-03-01"


def _ts(day: int, hour: int = 10) -> str:
    import datetime as dt

    d = dt.date.fromisoformat(DAY0) + dt.timedelta(days=day)
    return f"{d.isoformat()}T{hour:02d}:00:00+00:00"


def planted_shop(path: Path, kind: str, *, n_users: int = 300, n_items: int = 40,
                 days: int = 60, seed: int = 1) -> Database:
    """A shop where one kind of scorer must win, with purchases spread over ``days`` days.

    - "popular": everyone buys from the same skewed popularity; no personal taste at all.
    - "taste": four groups of customers, each buying only its own category (equal sizes, so
      popularity says nothing); profiles carry the group.
    - "repeat": every customer rebuys three staple items on a fixed cycle (7 or 14 days) and
      buys a few random items once.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    db = open_store(path)
    groups = ("north", "south", "east", "west")
    items = []
    for j in range(n_items):
        cat = groups[j % 4] if kind == "taste" else "grocery"
        items.append({"id": j + 1, "sku": f"SKU-{j}", "title": f"Product {j}", "category": cat,
                      "price": 10.0 + j, "stock": 10, "active": 1, "attributes": {},
                      "created_at": TS.format(1), "updated_at": TS.format(1)})
    db["items"].insert_all(items)
    users, events = [], []
    pop = 1.0 / np.arange(1, n_items + 1) ** 1.2
    pop /= pop.sum()
    for u in range(1, n_users + 1):
        g = groups[u % 4]
        attrs = {"region": g} if kind == "taste" else {}
        users.append(user_row(u, attrs))
        seen: set[tuple[int, int]] = set()

        def buy(item: int, day: int) -> None:
            if 0 <= day < days and (item, day) not in seen:
                seen.add((item, day))
                events.append({"user_id": u, "item_id": item, "kind": "purchase", "value": 1,
                               "ts": _ts(day)})

        if kind == "popular":
            for _ in range(15):
                buy(int(rng.choice(n_items, p=pop)) + 1, int(rng.integers(days)))
        elif kind == "taste":
            own = [j + 1 for j in range(n_items) if groups[j % 4] == g]
            for _ in range(12):
                buy(int(rng.choice(own)), int(rng.integers(days)))
        else:
            for staple in rng.choice(n_items, size=3, replace=False):
                cycle = 7 if staple % 2 == 0 else 14
                day = int(rng.integers(cycle))
                while day < days:
                    buy(int(staple) + 1, day)
                    day += cycle + int(rng.integers(-1, 2))
            for _ in range(4):
                buy(int(rng.integers(n_items)) + 1, int(rng.integers(days)))
    db["users"].insert_all(users)
    db["events"].insert_all(events)
    return db
