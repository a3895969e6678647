"""The demo shop: deterministic, realistic in shape, and carrying taste signal."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from datetime import timedelta
from pathlib import Path

import pytest

from pushgen.demo import CATEGORIES, DEMO_DAYS, build_demo_shop, demo_end, generate_demo_data
from pushgen.errors import PushgenError
from pushgen.ingest import import_rows
from pushgen.store import catalog, open_store

SMALL = dict(n_users=300, n_items=80, n_events=6000)


def content(db) -> dict[str, list[tuple]]:
    """Everything but the wall-clock created_at / updated_at columns."""
    return {
        "users": db.execute("SELECT external_id, name, email, phone, locale, timezone, consent_email, "
                            "consent_sms, consent_push, attributes FROM users ORDER BY id").fetchall(),
        "items": db.execute("SELECT sku, title, description, category, brand, price, currency, sale_price, "
                            "stock, url, image_url, active, attributes FROM items ORDER BY id").fetchall(),
        "events": db.execute("SELECT u.external_id, i.sku, kind, value, ts FROM events e JOIN users u "
                             "ON u.id = e.user_id JOIN items i ON i.id = e.item_id ORDER BY e.id").fetchall(),
    }


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """The default-size demo shop, built once for the shape tests."""
    db = open_store(tmp_path_factory.mktemp("demo") / "demo.db")
    summary = build_demo_shop(db)
    return db, summary


def test_same_seed_same_data_other_seed_differs(tmp_path: Path):
    a = open_store(tmp_path / "a.db")
    b = open_store(tmp_path / "b.db")
    c = open_store(tmp_path / "c.db")
    build_demo_shop(a, seed=11, **SMALL)
    build_demo_shop(b, seed=11, **SMALL)
    build_demo_shop(c, seed=12, **SMALL)
    assert content(a) == content(b)
    assert len(content(a)["events"]) > 1000
    other = content(c)
    for table in ("users", "items", "events"):
        assert content(a)[table] != other[table]


def test_rerun_is_unchanged_and_other_data_is_refused(tmp_path: Path, monkeypatch):
    db = open_store(tmp_path / "d.db")
    first = build_demo_shop(db, seed=3, **SMALL)
    before = content(db)
    # Built again on a later day: the database remembers where its history ends.
    later = demo_end() + timedelta(days=12)
    monkeypatch.setattr("pushgen.demo.demo_end", lambda now=None: later)
    again = build_demo_shop(db, seed=3, **SMALL)
    assert first.inserted == first.users + first.items + first.events
    assert again.changed == 0 and again.reports["events"].unchanged == first.events
    with pytest.raises(PushgenError, match="already holds other data"):
        build_demo_shop(db, seed=4, **SMALL)
    assert content(db) == before

    real = open_store(tmp_path / "real.db")
    import_rows(real, "users", [{"external_id": "customer-1"}])
    with pytest.raises(PushgenError, match="already holds other data"):
        build_demo_shop(real, **SMALL)
    assert catalog.catalog_counts(real)["users"] == 1


def test_demo_shape(shop):
    db, summary = shop
    counts = catalog.catalog_counts(db)
    assert (counts["users"], counts["items"]) == (2000, 400)
    assert counts["events"] == summary.events == sum(summary.events_by_kind.values())
    assert 36_000 <= summary.events <= 44_000
    assert set(summary.events_by_kind) == {"view", "cart", "purchase"}
    assert summary.events_by_kind["view"] > summary.events_by_kind["cart"] > summary.events_by_kind["purchase"]
    assert summary.seconds < 10

    users = list(catalog.iter_users(db))
    zh = [u for u in users if u["locale"] == "zh-CN"]
    assert 0.25 < len(zh) / len(users) < 0.35
    assert all(re.fullmatch(r"[\u4e00-\u9fff]{2,3}", u["name"]) for u in zh)
    assert all(re.fullmatch(r"[A-Z][a-z]+ [A-Z][a-z]+", u["name"]) for u in users if u["locale"] == "en-US")
    assert all(re.fullmatch(r"\+[1-9]\d{9,13}", u["phone"]) for u in users)  # E.164
    assert all(u["email"].endswith("@example.com") for u in users)
    assert len({u["email"] for u in users}) == len(users)
    for key, values in (("age_band", {"18-24", "25-34", "35-44", "45-54", "55+"}),
                        ("gender", {"female", "male", "unspecified"}),
                        ("region", {"north", "south", "east", "west"}),
                        ("tier", {"bronze", "silver", "gold"})):
        assert {u["attributes"][key] for u in users} == values
    for channel, n in catalog.consent_counts(db).items():
        assert 0.78 < n / len(users) < 0.92, channel

    items = list(catalog.iter_items(db))
    assert set(Counter(i["category"] for i in items)) == set(CATEGORIES) and len(CATEGORIES) == 8
    assert all(i["url"] == f"https://shop.example/p/{i['sku']}" for i in items)
    assert all(i["image_url"].startswith("https://") and i["title"] and i["description"] for i in items)
    assert all(re.search(r"[\u4e00-\u9fff]", i["attributes"]["title_zh"]) for i in items)
    assert all(isinstance(i["attributes"]["tags"], list) and i["attributes"]["tags"] for i in items)
    on_sale = [i for i in items if i["sale_price"] is not None]
    assert 0.2 < len(on_sale) / len(items) < 0.4
    assert all(0 < i["sale_price"] < i["price"] for i in on_sale)
    assert 0 < counts["items_out_of_stock"] < 60
    assert 0 < len(items) - counts["items_active"] < 30

    first, last = catalog.event_time_range(db)
    end = demo_end()                      # the history ends today (00:00 UTC), not on a fixed day
    assert (end - timedelta(days=DEMO_DAYS, hours=2)).isoformat() <= first
    assert last < end.isoformat() and last > (end - timedelta(days=1)).isoformat()


def test_purchases_follow_profile_tastes():
    data = generate_demo_data()
    users = {u["external_id"]: u for u in data.users}
    items = {i["sku"]: i for i in data.items}
    by_age: dict[str, Counter] = defaultdict(Counter)
    by_gender: dict[str, Counter] = defaultdict(Counter)
    spend: dict[str, list[float]] = defaultdict(list)
    for e in data.events:
        if e["kind"] not in ("cart", "purchase"):
            continue
        u, i = users[e["user"]], items[e["item"]]
        by_age[u["age_band"]][i["category"]] += 1
        by_gender[u["gender"]][i["category"]] += 1
        spend[u["tier"]].append(i["price"])

    def share(counter: Counter, category: str) -> float:
        return counter[category] / sum(counter.values())

    assert share(by_age["55+"], "tea") > 2 * share(by_age["18-24"], "tea")
    assert share(by_age["18-24"], "electronics") > 2 * share(by_age["55+"], "electronics")
    assert share(by_age["55+"], "books") > 1.5 * share(by_age["18-24"], "books")
    assert share(by_gender["female"], "skincare") > 2 * share(by_gender["male"], "skincare")
    mean = {tier: sum(p) / len(p) for tier, p in spend.items()}
    assert mean["gold"] > 1.2 * mean["bronze"]


def test_personal_taste_beyond_profile():
    """Users with the same profile still differ: their own history predicts them better."""
    data = generate_demo_data()
    per_user: dict[str, Counter] = defaultdict(Counter)
    items = {i["sku"]: i for i in data.items}
    for e in data.events:
        per_user[e["user"]][items[e["item"]]["brand"]] += 1
    # For active users, the top brand gets far more than an even share of their events.
    active = [c for c in per_user.values() if sum(c.values()) >= 30]
    assert len(active) > 100
    top_share = sum(max(c.values()) / sum(c.values()) for c in active) / len(active)
    assert top_share > 3 / 32  # 32 brands: an even spread would be ~0.03
    assert top_share > 0.12
