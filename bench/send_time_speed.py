"""How fast per-customer send times are planned for an export (``export.plan_send_times``).

A synthetic store of N customers (8 timezones, one in eight without one) with E events
each over 90 days. ``plan_send_times`` reads every customer's timezone, profile and event
times (SQLite turns the ISO text into seconds) and plans each send time: local hours by
zone in numpy, offsets once per quarter hour, preferred hours for all customers at once.
The baseline, measured in the same run on the same customers and events, is the direct
way (pushgen's first cut): parse each ISO timestamp and convert it with ``astimezone``,
then find each customer's hour and plan it one by one.

    python bench/send_time_speed.py [--customers 100000] [--events 20]

Prints a table and ends with a ``RESULT`` line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sys
import tempfile
import time
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pushgen.export import plan_send_times, send_options  # noqa: E402
from pushgen.store import open_store  # noqa: E402

ZONES = [None, "America/New_York", "America/Chicago", "America/Los_Angeles",
         "Asia/Shanghai", "Asia/Kolkata", "Europe/Berlin", "Australia/Sydney"]


def build(path: Path, customers: int, events: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    db = open_store(path)
    now = "2026-11-01T00:00:00+00:00"
    base = dt.datetime(2026, 8, 1, tzinfo=dt.timezone.utc)
    with db.conn:
        db.conn.executemany(
            "INSERT INTO users (id, external_id, timezone, attributes, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(i, f"c{i}", rng.choice(ZONES), '{"age_band": "25-34", "gender": "f"}', now, now)
             for i in range(1, customers + 1)])
        db.conn.execute("INSERT INTO items (id, sku, title, created_at, updated_at) "
                        "VALUES (1, 'SKU', 'Item', ?, ?)", [now, now])
        rows = []
        for i in range(1, customers + 1):
            hour = rng.randrange(24)
            for d in rng.sample(range(90), min(events, 90)):
                when = base + dt.timedelta(days=d, hours=hour, seconds=rng.randrange(3600))
                rows.append((i, 1, "view", when.isoformat()))
            if len(rows) > 200_000:
                db.conn.executemany("INSERT OR IGNORE INTO events (user_id, item_id, kind, ts) "
                                    "VALUES (?, ?, ?, ?)", rows)
                rows = []
        db.conn.executemany("INSERT OR IGNORE INTO events (user_id, item_id, kind, ts) "
                            "VALUES (?, ?, ?, ?)", rows)
    db.conn.close()


def baseline(db, ids: list[int], options) -> tuple[float, dict[int, object]]:
    """The first cut: ISO strings converted one by one, then each customer on their own."""
    import numpy as np

    from pushgen.sendtime import plan, preferred_hour, zone

    started = time.perf_counter()
    profiles = dict(db.execute("SELECT id, timezone FROM users").fetchall())
    stamps: dict[int, list[str]] = {u: [] for u in ids}
    for uid, ts in db.execute("SELECT user_id, ts FROM events"):
        stamps[uid].append(ts)
    shop = ZoneInfo(options.shop_timezone)
    counts = {}
    for u in ids:
        tz = zone(profiles[u]) or shop
        c = np.zeros(24, np.int64)
        for ts in stamps[u]:
            c[dt.datetime.fromisoformat(ts).astimezone(tz).hour] += 1
        counts[u] = (tz, c)
    plans, cache = {}, {}
    for u in ids:
        tz, c = counts[u]
        hour = preferred_hour(c, options.min_events)
        plans[u] = plan(options.window, tz, 12 if hour is None else hour, quiet=options.quiet,
                        source="own", why="own history", _cache=cache)
    return time.perf_counter() - started, plans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.db"
        build(path, args.customers, args.events)
        db = open_store(path)
        ids = [r[0] for r in db.execute("SELECT id FROM users ORDER BY id")]
        n_events = db.execute("SELECT count(*) FROM events").fetchone()[0]
        options = send_options("sms", send_window="2026-12-01", now=dt.datetime(
            2026, 11, 1, tzinfo=dt.timezone.utc))
        base_s, base_plans = baseline(db, ids, options)
        started = time.perf_counter()
        plans, stats = plan_send_times(db, ids, options)
        plan_s = time.perf_counter() - started
    assert len(plans) == len(ids)
    same = sum(plans[u].send_at == base_plans[u].send_at for u in ids)  # type: ignore[attr-defined]
    print(f"{len(ids):,} customers, {n_events:,} events, 8 timezones, SMS quiet hours")
    print(f"{'read, local hours, preferred hours, plans':<58} {'seconds':>8} {'speed-up':>9}")
    print(f"{'baseline: one timestamp, one customer at a time':<58} {base_s:8.2f} "
          f"{'1.00x':>9}")
    print(f"{'plan_send_times':<58} {plan_s:8.2f} {base_s / plan_s:8.2f}x")
    print(f"same send time as the baseline: {same:,} of {len(ids):,} customers; "
          f"sources: {stats}")
    print(f"RESULT customers={len(ids)} events={n_events} baseline_s={base_s:.2f} "
          f"plan_s={plan_s:.2f} speedup={base_s / plan_s:.2f} same={same}")


if __name__ == "__main__":
    main()
