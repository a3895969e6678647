"""`pushgen report`: the numbers equal hand computations on a small planted campaign.

The campaign is planted row by row (customers, assignments, exported drafts, send times)
and its outcomes and the shop's purchases come in through the real import; every rate,
interval, p-value and the uplift are then computed here by hand (Wilson's closed form,
Newcombe's hybrid interval, scipy's chi-square test without continuity correction).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re

import numpy as np
import pytest
from scipy import stats as st

from pushgen.cli import app
from pushgen.ingest import import_rows
from pushgen.results.report import campaign_results
from pushgen.store import dumps, now_iso, open_store
from pushgen.store.assignments import store_assignments

Z = st.norm.ppf(0.975)
SEND = dt.datetime(2031, 3, 3, 10, 0, tzinfo=dt.timezone.utc)   # planted; "now" is passed


def iso(d: dt.datetime) -> str:
    return d.strftime("%Y-%m-%dT%H:%M:%SZ")


def wilson(k: int, n: int) -> tuple[float, float]:
    p = k / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / (1 + Z * Z / n)
    return centre - half, centre + half


def newcombe(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float, float]:
    p1, p2 = k1 / n1, k2 / n2
    (l1, u1), (l2, u2) = wilson(k1, n1), wilson(k2, n2)
    d = p1 - p2
    return d, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), \
        d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def chi2_p(k1: int, n1: int, k2: int, n2: int) -> float:
    table = np.array([[k1, n1 - k1], [k2, n2 - k2]])
    return st.chi2_contingency(table, correction=False).pvalue


@pytest.fixture
def planted(db_path):
    """100 customers: 1-40 variant 1 (39 and 40 never exported), 41-80 variant 2 (random
    pick), 81-100 hold-out. Customers 1-20 got LLM copy, the rest template copy."""
    db = open_store(db_path)
    now = now_iso()
    db["users"].insert_all([{"id": i, "external_id": f"c{i}", "locale": "zh-CN" if i % 2 else
                             "en-US", "created_at": now, "updated_at": now}
                            for i in range(1, 101)])
    db["items"].insert_all([{"id": 1, "sku": "SKU-A", "title": "A", "price": 10.0,
                             "created_at": now, "updated_at": now},
                            {"id": 2, "sku": "SKU-B", "title": "B", "price": 15.0,
                             "created_at": now, "updated_at": now}])
    config = {"name": "xmas", "channel": "email", "ab": {"picks": ["ranked", "random"]}}
    cid = db["campaigns"].insert({"name": "xmas", "channel": "email", "config": dumps(config),
                                  "created_at": now, "updated_at": now}).last_pk
    variant = {i: 1 if i <= 40 else 2 if i <= 80 else 0 for i in range(1, 101)}
    store_assignments(db, cid, list(variant.items()), now)
    drafts = {}
    for i in range(1, 81):
        llm = i <= 20
        drafts[i] = db["drafts"].insert({
            "campaign_id": cid, "user_id": i, "channel": "email", "variant": variant[i],
            "locale": "zh-CN" if i % 2 else "en-US", "content": "{}", "items": "[]",
            "generator": "llm" if llm else "template",
            "template_name": "email/blocks.en-US@v1" if llm else "email/default.en-US@v1",
            "model": "m1" if llm else None, "llm_meta": dumps({"mode": "blocks"}) if llm else None,
            "status": "exported" if i not in (39, 40) else "rejected",
            "exported_at": now if i not in (39, 40) else None,
            "created_at": now, "updated_at": now}).last_pk
    db["send_times"].insert_all([{
        "draft_id": drafts[i], "user_id": i, "send_at": iso(SEND),
        "local_time": "2031-03-03T18:00:00+08:00" if i % 2 else "2031-03-03T05:00:00-05:00",
        "timezone": "Asia/Shanghai" if i % 2 else "America/New_York", "source": "own",
        "reason": "own history"} for i in range(1, 81) if i not in (39, 40)])
    db.conn.commit()
    t = lambda hours: iso(SEND + dt.timedelta(hours=hours))   # noqa: E731
    # The shop's own orders: conversions 1-5 (same item and time as the platform reports),
    # organic buyers 6, 45, 46 and hold-out 85 in the window; 90 after it, 91 before it.
    shop = [{"user": f"c{i}", "item": "SKU-A", "kind": "purchase", "ts": t(2)}
            for i in range(1, 6)]
    shop += [{"user": f"c{i}", "item": "SKU-B", "kind": "purchase", "ts": t(30)}
             for i in (6, 45, 46, 85)]
    shop += [{"user": "c90", "item": "SKU-B", "kind": "purchase", "ts": t(24 * 10)},
             {"user": "c91", "item": "SKU-B", "kind": "purchase", "ts": t(-24)}]
    import_rows(db, "events", shop)
    rows = []
    for i in range(1, 37):
        rows.append({"draft_id": drafts[i], "event": "delivered", "ts": t(0)})
    for i in (37, 38):
        rows.append({"draft_id": drafts[i], "event": "bounced", "ts": t(0), "bounce": "hard"})
    for i in range(41, 81):
        rows.append({"draft_id": drafts[i], "event": "delivered", "ts": t(0)})
    for i in list(range(1, 16)) + list(range(41, 53)):
        rows.append({"draft_id": drafts[i], "event": "opened", "ts": t(1)})
    rows.append({"draft_id": drafts[1], "event": "opened", "ts": t(1.5)})    # opened twice
    for i in list(range(1, 9)) + [41, 42, 43]:
        rows.append({"draft_id": drafts[i], "event": "clicked", "ts": t(1.7)})
    for i, value in zip(range(1, 6), (10, 20, 30, 40, 50)):
        rows.append({"draft_id": drafts[i], "event": "converted", "ts": t(2), "value": value,
                     "item": "SKU-A"})
    # 41's purchase is known only from the platform: it must not count for the uplift
    rows.append({"draft_id": drafts[41], "event": "converted", "ts": t(3), "value": 15,
                 "item": "SKU-B"})
    report = import_rows(db, "outcomes", rows)
    assert report.inserted == len(rows) and report.events_created == 1
    return db


def test_rates_intervals_and_variant_test_equal_hand_computations(planted):
    r = campaign_results(planted, "xmas", now=SEND)
    assert r.split == {0: 20, 1: 40, 2: 40} and r.recipients == 78
    v1, v2 = r.groups["variant"]
    assert (v1.label, v2.label) == ("variant 1", "variant 2 (random pick)")
    assert (v1.recipients, v2.recipients) == (38, 40)
    assert [v1.counts[k] for k in ("delivered", "opened", "clicked", "converted", "bounced")] \
        == [36, 15, 8, 5, 2]
    assert [v2.counts[k] for k in ("delivered", "opened", "clicked", "converted")] == \
        [40, 12, 3, 1]
    conv = v1.rates["converted"]
    assert conv.rate == pytest.approx(5 / 38)
    assert (conv.low, conv.high) == pytest.approx(wilson(5, 38), abs=1e-12)
    assert v1.revenue == 150 and v1.revenue_per_recipient == pytest.approx(150 / 38)
    assert v2.revenue_per_recipient == pytest.approx(15 / 40)
    (c,) = [c for c in r.comparisons if c.dimension == "variant" and c.metric == "converted"]
    d, low, high = newcombe(1, 40, 5, 38)
    assert c.diff.diff == pytest.approx(d) and (c.diff.low, c.diff.high) == \
        pytest.approx((low, high), abs=1e-12)
    assert c.diff.p_value == pytest.approx(chi2_p(1, 40, 5, 38), rel=1e-9)
    assert not c.diff.significant and "not significant (could be chance)" in c.verdict
    # generators: LLM (customers 1-20) against the largest group, template
    gens = {g.label: g for g in r.groups["generator"]}
    assert gens["llm (blocks)"].recipients == 20 and gens["template"].recipients == 58
    (g,) = [c for c in r.comparisons if c.dimension == "generator"]
    assert (g.label, g.reference) == ("llm (blocks)", "template")
    assert g.diff.diff == pytest.approx(5 / 20 - 1 / 58)
    assert g.diff.p_value == pytest.approx(chi2_p(5, 20, 1, 58), rel=1e-9)
    versions = {x.label for x in r.groups["version"]}
    assert versions == {"m1 · email/blocks.en-US@v1", "email/default.en-US@v1"}
    assert {x.label: x.recipients for x in r.groups["locale"]} == {"zh-CN": 39, "en-US": 39}
    assert r.send_hours[18] == 39 and r.send_hours[5] == 39 and sum(r.send_hours) == 78


def test_uplift_counts_the_shops_purchases_of_every_assigned_customer(planted):
    r = campaign_results(planted, "xmas", now=SEND)
    assert r.window == {"start": "2031-03-03T10:00:00+00:00",
                        "end": "2031-03-10T10:00:00+00:00", "attribution_days": 7}
    overall, var1, var2 = r.uplift
    # treated: all 80 assigned (39 and 40 were never sent, they still count); buyers 1-6,
    # 45, 46 from the shop's data (41's purchase is platform-only); hold-out: 85 of 20
    assert (overall.treated.successes, overall.treated.trials) == (8, 80)
    assert (overall.holdout.successes, overall.holdout.trials) == (1, 20)
    d, low, high = newcombe(8, 80, 1, 20)
    assert overall.diff.diff == pytest.approx(0.05)
    assert (overall.diff.low, overall.diff.high) == pytest.approx((low, high), abs=1e-12)
    assert overall.diff.p_value == pytest.approx(chi2_p(8, 80, 1, 20), rel=1e-9)
    assert "not significant" in overall.verdict
    assert (var1.label, var1.treated.successes, var1.treated.trials) == ("variant 1", 6, 40)
    assert (var2.label, var2.treated.successes) == ("variant 2 (random pick)", 2)
    # a longer window reaches customer 90's purchase ten days after the send
    longer = campaign_results(planted, "xmas", attribution_days=11, now=SEND)
    assert longer.uplift[0].holdout.successes == 2
    assert any("window is open until 2031-03-10T10:00" in n for n in r.notes)
    later = campaign_results(planted, "xmas", now=SEND + dt.timedelta(days=8))
    assert not any("window is open" in n for n in later.notes)


def test_cli_table_json_and_html_report(planted, db_path, runner, tmp_path):
    r = runner.invoke(app, ["report", "-c", "xmas", "--db", str(db_path)],
                      env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "A/B split (customers): hold-out 20 · variant 1 40 · variant 2 (random pick) 40" \
        in r.output
    assert "variant 2 (random pick) vs variant 1, converted: -10.66 points" in r.output
    assert "not significant (could be chance)" in r.output
    assert "13.2% (" in r.output                        # 5 / 38 with its interval
    r = runner.invoke(app, ["report", "-c", "xmas", "--json", "--html",
                            str(tmp_path / "share.html"), "--db", str(db_path)])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["split"] == {"holdout": 20, "variant 1": 40, "variant 2": 40}
    v1 = data["groups"]["variant"][0]
    assert v1["rates"]["converted"]["successes"] == 5 and v1["recipients"] == 38
    assert data["uplift"][0]["diff"] == pytest.approx(0.05)
    assert data["definitions"] and data["funnel"]["converted"] == 6
    html = (tmp_path / "share.html").read_text(encoding="utf-8")
    assert "<script" not in html and "<link" not in html
    assert not re.findall(r"(?:src|href)=\"?https?:", html)
    assert html.count("<svg") == 5 and "13.2% [" in html and "Uplift over the hold-out" in html
    r = runner.invoke(app, ["report", "-c", "nope", "--db", str(db_path)])
    assert r.exit_code == 1 and "no campaign named 'nope'" in r.output
    r = runner.invoke(app, ["report", "-c", "xmas", "--html", str(tmp_path / "no" / "x.html"),
                            "--db", str(db_path)])
    assert r.exit_code == 1 and "does not exist" in r.output and "Traceback" not in r.output


def test_report_says_what_is_missing(db_path):
    db = open_store(db_path)
    now = now_iso()
    db["campaigns"].insert({"name": "empty", "channel": "sms", "created_at": now,
                            "updated_at": now})
    r = campaign_results(db, "empty")
    assert r.recipients == 0 and r.uplift == [] and "no message of this campaign" in r.notes[0]
