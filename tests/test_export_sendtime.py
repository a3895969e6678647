"""Per-customer send times in real exports: own hour in own timezone, inside the window,
never inside quiet hours; the shop's timezone for customers without one, named."""

from __future__ import annotations

import csv
import datetime as dt
import json
import tempfile
from email import policy
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pushgen import export as ex
from pushgen import review as rv
from pushgen.cli import app
from pushgen.errors import PushgenError
from pushgen.sendtime import parse_quiet_hours

from _review_helpers import USERS, make_shop

ANA, WANG, BOB = USERS
UTC = dt.timezone.utc
DAY = dt.datetime.now(UTC).date() + dt.timedelta(days=3)
WINDOW = f"{DAY}T00:00:00Z/{DAY + dt.timedelta(days=1)}T00:00:00Z"


def set_history(db, user_id: int, tz: str | None, local_hours: list[int]) -> None:
    """The customer's timezone, and events at these local hours on past days."""
    db.execute("UPDATE users SET timezone = ? WHERE id = ?", [tz, user_id])
    db.execute("DELETE FROM events WHERE user_id = ?", [user_id])
    zone = ZoneInfo(tz) if tz and tz != "Not/AZone" else UTC
    for n, hour in enumerate(local_hours):
        when = dt.datetime(2026, 9, 1 + n % 28, hour, 17, tzinfo=zone).astimezone(UTC)
        db.execute("INSERT INTO events (user_id, item_id, kind, value, quantity, ts) VALUES "
                   "(?, 1, 'view', 1, 1, ?)", [user_id, when.isoformat()])
    db.conn.commit()


@pytest.fixture
def db(db_path):
    db = make_shop(db_path)
    for campaign in ("news", "spring", "app"):
        rv.approve_all_passing(db, campaign, actor="lead")
    set_history(db, ANA[0], "Asia/Shanghai", [20] * 8)
    set_history(db, BOB[0], "America/New_York", [23] * 8)
    set_history(db, WANG[0], None, [7])             # no timezone, too little history
    return db


def _csv_rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return {r["external_id"]: r for r in csv.DictReader(fh)}


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_shanghai_at_20_gets_12_utc_and_new_york_night_owl_gets_9_local(db, tmp_path):
    rep = ex.export_campaign(db, "spring", "sms", fmt="csv", out_dir=tmp_path / "o",
                             send_window=WINDOW, timezone="Europe/London")
    rows = _csv_rows(rep.path)
    ana, bob, wang = rows["u-ana"], rows["u-bob"], rows["u-wang"]
    assert ana["send_at"] == f"{DAY}T12:00:00Z"
    assert ana["send_time_reason"] == "own history: usually active 20:00-21:00 local"
    local = _utc(bob["send_at"]).astimezone(ZoneInfo("America/New_York"))
    assert (local.hour, local.minute) == (9, 0)
    assert "23:00 is inside quiet hours 21:00-09:00, so after they end" in \
        bob["send_time_reason"]
    # Wang: no timezone -> the shop's; too few events of her own or her segment's
    assert wang["send_time_reason"].startswith("shop-wide history")
    assert (rep.shop_timezone, rep.shop_timezone_customers) == ("Europe/London", 1)
    assert rep.send_sources == {"own": 2, "segment": 0, "shop": 1}
    assert rep.quiet_hours == "21:00-09:00" and sum(rep.send_hours) == 3
    stored = dict(db.execute("SELECT user_id, send_at FROM send_times").fetchall())
    assert stored[ANA[0]] == f"{DAY}T12:00:00Z" and len(stored) == 3


def test_jsonl_and_eml_carry_each_messages_own_time(db, tmp_path):
    rep = ex.export_campaign(db, "app", "push", fmt="jsonl", out_dir=tmp_path / "o",
                             send_window=WINDOW, quiet_hours="off")
    lines = {x["external_id"]: x for x in map(json.loads, rep.path.read_text().splitlines())}
    ana = lines["u-ana"]
    assert (ana["send_at"], ana["timezone"]) == (f"{DAY}T12:00:00Z", "Asia/Shanghai")
    assert ana["send_at_local"] == f"{DAY}T20:00:00+08:00"
    # push has no quiet hours by default: the night owl gets 23:00 New York time
    bob = _utc(lines["u-bob"]["send_at"]).astimezone(ZoneInfo("America/New_York"))
    assert bob.hour == 23 and rep.quiet_hours is None
    eml = ex.export_campaign(db, "news", "email", fmt="eml", out_dir=tmp_path / "e",
                             send_window=WINDOW)
    plans = dict(db.execute("SELECT draft_id, send_at FROM send_times").fetchall())
    for draft in eml.draft_ids:
        msg = BytesParser(policy=policy.default).parsebytes(
            (eml.path / f"{draft}.eml").read_bytes())
        assert parsedate_to_datetime(msg["Date"]) == _utc(plans[draft])


def test_cli_export_names_the_default_timezone_and_refuses_send_at(db, db_path, runner,
                                                                   tmp_path):
    r = runner.invoke(app, ["export", "sms", "-c", "spring", "--out", str(tmp_path / "o"),
                            "--send-window", WINDOW, "--timezone", "Europe/London",
                            "--db", str(db_path)], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "1 customer(s) have no known timezone: planned in the shop's default timezone " \
           "Europe/London" in r.output
    assert "2 from the customer's own history" in r.output and "quiet hours 21:00-09:00" \
        in r.output
    r = runner.invoke(app, ["export", "push", "-c", "app", "--out", str(tmp_path / "o"),
                            "--send-at", "2026-12-01T09:00Z", "--db", str(db_path)])
    assert r.exit_code == 1 and "--send-window" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["export", "push", "-c", "app", "--out", str(tmp_path / "o"),
                            "--quiet-hours", "late", "--db", str(db_path)])
    assert r.exit_code == 1 and "quiet_hours 'late'" in r.output


ZONES = [None, "Not/AZone", "UTC", "Asia/Shanghai", "America/New_York", "Asia/Kolkata",
         "Pacific/Chatham", "America/St_Johns", "Australia/Lord_Howe", "Pacific/Kiritimati",
         "America/Adak", "Europe/London"]


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(zones=st.lists(st.sampled_from(ZONES), min_size=3, max_size=3),
       hours=st.lists(st.lists(st.integers(0, 23), max_size=12), min_size=3, max_size=3),
       quiet=st.sampled_from(["21:00-09:00", "22:30-07:15", "00:00-06:00", "20:00-08:00"]),
       start=st.integers(0, 47), length=st.integers(1, 60),
       shop_tz=st.sampled_from(["UTC", "Asia/Tokyo", "America/Los_Angeles"]))
def test_no_exported_sms_falls_inside_quiet_hours(db, tmp_path, zones, hours, quiet, start,
                                                  length, shop_tz):
    for user, tz, local in zip(USERS, zones, hours):
        set_history(db, user[0], tz, local)
    begin = dt.datetime.combine(DAY, dt.time(0), UTC) + dt.timedelta(hours=start)
    window = f"{begin.isoformat()}/{(begin + dt.timedelta(hours=length)).isoformat()}"
    out = Path(tempfile.mkdtemp(dir=tmp_path))
    try:
        rep = ex.export_campaign(db, "spring", "sms", fmt="csv", out_dir=out, again=True,
                                 send_window=window, quiet_hours=quiet, timezone=shop_tz)
    except PushgenError as exc:      # only when the window is all night somewhere
        assert "entirely inside quiet hours" in str(exc)
        return
    q = parse_quiet_hours(quiet)
    rows = _csv_rows(rep.path)
    assert len(rows) == 3
    for user, tz in zip(USERS, zones):
        zone = ZoneInfo(tz if tz not in (None, "Not/AZone") else shop_tz)
        send = _utc(rows[user[1]]["send_at"])
        assert begin <= send < begin + dt.timedelta(hours=length)
        assert not q.contains(send.astimezone(zone)), (user[1], tz, send)
