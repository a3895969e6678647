"""A/B variants and hold-out groups from drafting to export, and the demo's closed loop.

Real pieces: a small demo shop with a trained LightFM model, the real campaign run,
review, export, outcome import and report.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from pushgen import export as ex
from pushgen import review as rv
from pushgen.campaign import draft_campaign
from pushgen.config import ABSettings, load_campaign_config
from pushgen.errors import InputError, PushgenError
from pushgen.store import open_store

from _shop import build_shop, copy_shop
from _shop import rows as _rows

DAY = (dt.datetime.now(dt.timezone.utc).date() + dt.timedelta(days=2)).isoformat()


@pytest.fixture(scope="module")
def trained_shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_shop(tmp_path_factory.mktemp("abshop"), seed=5)


@pytest.fixture
def shop(trained_shop: Path, tmp_path: Path) -> Path:
    return copy_shop(trained_shop, tmp_path)


def _cfg(name: str, channel: str, **ab):
    cfg = load_campaign_config(None, name=name, channel=channel)
    cfg.ab = ABSettings(**ab)
    return cfg


def test_split_holdout_reruns_and_export_of_assigned_variants(shop: Path, tmp_path: Path):
    pristine = shutil.copytree(shop.parent, tmp_path / "pristine") / "shop.db"
    db = open_store(shop)
    report = draft_campaign(db, "ab", _cfg("ab", "sms", weights=[0.5, 0.5], holdout=0.2))
    assigned = dict(_rows(shop, "SELECT user_id, variant FROM assignments"))
    eligible = len(assigned)
    counts = {v: sum(1 for x in assigned.values() if x == v) for v in (0, 1, 2)}
    assert report.split == counts and report.holdout == counts[0]
    assert report.audience == eligible - counts[0]
    assert 0.12 < counts[0] / eligible < 0.28          # 20% hold-out, ~230 customers
    assert 0.28 < counts[1] / eligible < 0.52 and 0.28 < counts[2] / eligible < 0.52
    drafts = _rows(shop, "SELECT user_id, variant FROM drafts")
    assert len(drafts) == len({u for u, _ in drafts}) == report.drafted  # one each
    assert all(assigned[u] == v != 0 for u, v in drafts)
    assert {v for _, v in drafts} == {1, 2}
    # reruns change nothing; a regenerate keeps every customer's variant
    assert draft_campaign(db, "ab", _cfg("ab", "sms", weights=[0.5, 0.5],
                                         holdout=0.2)).drafted == 0
    draft_campaign(db, "ab", _cfg("ab", "sms", weights=[0.5, 0.5], holdout=0.2),
                   regenerate=True)
    assert dict(_rows(shop, "SELECT user_id, variant FROM assignments")) == assigned
    # the same campaign in another copy of the shop draws the same split
    other = open_store(pristine)
    draft_campaign(other, "ab", _cfg("ab", "sms", weights=[0.5, 0.5], holdout=0.2))
    assert dict(_rows(pristine, "SELECT user_id, variant FROM assignments")) == assigned

    rv.approve_all_passing(db, "ab", actor="lead")
    rep = ex.export_campaign(db, "ab", "sms", fmt="csv", out_dir=tmp_path / "out",
                             send_window=DAY, allow_demo_sender=True)
    with open(rep.path, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    ids = dict(_rows(shop, "SELECT external_id, id FROM users"))
    assert {r["variant"] for r in rows} == {"1", "2"}          # both variants go out
    assert all(assigned[ids[r["external_id"]]] == int(r["variant"]) for r in rows)
    assert len(rows) == report.drafted and rep.skipped_holdout == 0


def test_random_pick_variant_and_templates_per_variant(shop: Path):
    db = open_store(shop)
    draft_campaign(db, "ctl", _cfg("ctl", "push", picks=["ranked", "random"],
                                   templates=["default", "default"]))
    recs = {}
    for uid, sku in _rows(shop, "SELECT r.user_id, i.sku FROM recommendations r JOIN items i "
                                "ON i.id = r.item_id WHERE r.rank = 1"):
        recs[uid] = sku
    ranked = random = same = 0
    for uid, variant, items in _rows(shop, "SELECT user_id, variant, items FROM drafts"):
        lead = json.loads(items)[0]
        if variant == 1:
            ranked += 1
            assert lead["sku"] == recs[uid] and "Random" not in lead["reason"]
        else:
            random += 1
            same += lead["sku"] == recs[uid]
            assert lead["reason"].startswith("Random pick") and lead["score"] == 0.0
    assert ranked > 50 and random > 50 and same < random / 5
    # the random draw is the customer's own: a regenerate picks the same items
    before = _rows(shop, "SELECT id, items FROM drafts WHERE variant = 2 ORDER BY id")
    draft_campaign(db, "ctl", _cfg("ctl", "push", picks=["ranked", "random"],
                                   templates=["default", "default"]), regenerate=True)
    assert _rows(shop, "SELECT id, items FROM drafts WHERE variant = 2 ORDER BY id") == before


def test_ab_settings_are_checked(shop: Path, tmp_path: Path):
    db = open_store(shop)
    with pytest.raises(PushgenError, match="number of variants disagrees"):
        draft_campaign(db, "x", _cfg("x", "sms", weights=[0.5, 0.5]), variants=3)
    for text, field in (("[ab]\npicks = ['ranked', 'lucky']\n", "ab.picks"),
                        ("[ab]\nholdout = 1.5\n", "ab"),
                        ("[ab]\nweights = [0.5, 0.5]\npicks = ['ranked']\n", "ab.picks"),
                        ("[ab]\nsplit = 2\n", "'split' in [ab]"),
                        ("[send]\nquiet_hours = '9pm-9am'\n", "send.quiet_hours"),
                        ("[send]\ntimezone = 'Mars/Base'\n", "send.timezone"),
                        ("[results]\nattribution_days = 0\n", "results.attribution_days")):
        path = tmp_path / "c.toml"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(InputError) as err:
            load_campaign_config(path, name="x")
        assert field in str(err.value) and str(path) in str(err.value)


def test_demo_loop_ranked_beats_random_and_the_hold_out(shop: Path):
    from pushgen.cli.data import DEMO_AB, run_demo_loop
    from pushgen.results.report import campaign_results

    out = io.StringIO()
    run_demo_loop(shop, Console(file=out, width=200))
    text = out.getvalue()
    assert "Results of demo-ab" in text and "uplift of all variants over the hold-out" in text
    db = open_store(shop)
    r = campaign_results(db, DEMO_AB)
    ranked, random = r.groups["variant"]
    assert random.label == "variant 2 (random pick)"
    # The ranker's lead items match the customers' hidden tastes far better than random
    # picks, and the simulation converts on taste: conversions concentrate on the messages
    # whose lead item the customer likes. (With ~115 messages per arm the conversion counts
    # themselves are too noisy for a fixed margin; the default demo shows it: README.)
    from pushgen.demo import hidden_tastes

    _, users, items, z = hidden_tastes(db)
    msgs = _rows(shop, "SELECT u.external_id, json_extract(d.items, '$[0].sku'), d.variant, "
                       "EXISTS (SELECT 1 FROM outcomes o WHERE o.draft_id = d.id AND "
                       "o.event = 'converted') FROM drafts d JOIN users u ON u.id = d.user_id "
                       "JOIN campaigns c ON c.id = d.campaign_id WHERE c.name = 'demo-ab' "
                       "AND d.exported_at IS NOT NULL")
    taste = {v: [z[users[e], items[s]] for e, s, var, _ in msgs if var == v] for v in (1, 2)}
    assert sum(taste[1]) / len(taste[1]) > sum(taste[2]) / len(taste[2]) + 0.5
    converted = [z[users[e], items[s]] for e, s, _, c in msgs if c]
    every = [z[users[e], items[s]] for e, s, _, _ in msgs]
    assert len(converted) == r.funnel["converted"] > 5
    assert sum(converted) / len(converted) > sum(every) / len(every)
    assert ranked.counts["converted"] > 0
    # every simulated conversion is also one of the shop's purchases in the window (a hold-out
    # of ~25 customers is too small for the uplift's sign to be more than chance here; the
    # default demo's 189 show it: README)
    assert r.uplift[0].treated.successes >= r.funnel["converted"] > 0
    assert r.uplift[0].holdout.trials == r.split[0] > 0
    assert r.funnel["converted"] > 0 and r.revenue > 0 and sum(r.send_hours) == r.recipients
    # the files it wrote are the platform's report and the shop's orders
    folder = shop.parent / "demo-exports"
    assert (folder / "demo-ab-outcomes.csv").exists() and (folder / "demo-ab-orders.csv").exists()
    before = _rows(shop, "SELECT count(*) FROM outcomes")[0][0]
    again = io.StringIO()
    run_demo_loop(shop, Console(file=again, width=200))      # a rerun changes nothing
    assert _rows(shop, "SELECT count(*) FROM outcomes")[0][0] == before
    assert "imported 0 new" in again.getvalue()


def test_send_times_learn_the_demo_customers_daily_rhythm(shop: Path):
    """Demo customers are active around a personal local hour: the planner finds it."""
    from pushgen.demo import hidden_tastes

    db = open_store(shop)
    data, users, _, _ = hidden_tastes(db)
    ids = dict(_rows(shop, "SELECT external_id, id FROM users"))
    options = ex.send_options("email", send_window=DAY, quiet_hours="off")
    plans, stats = ex.plan_send_times(db, list(ids.values()), options)
    assert stats["shop_timezone"] == 0 and stats["own"] > 200
    close = total = 0
    for ext, uid in ids.items():
        p = plans[uid]
        if p.source != "own":
            continue
        total += 1
        want = int(data.active_hour[users[ext]])
        close += min(abs(p.local_time.hour - want), 24 - abs(p.local_time.hour - want)) <= 1
    assert close / total > 0.8, (close, total)
