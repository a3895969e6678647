"""Per-customer send times: own hour in own timezone, inside the window, never in quiet hours."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings, strategies as st

from pushgen.errors import PushgenError
from pushgen.sendtime import (Customer, parse_quiet_hours, parse_send_window, plan, plan_all,
                              preferred_hour, local_hour_counts)

UTC = dt.timezone.utc
DAY = parse_send_window("2026-12-01T00:00/2026-12-02T00:00", ZoneInfo("UTC"))
QUIET = parse_quiet_hours("21:00-09:00")


def history(tz: str, local_hour: int, n: int = 8) -> list[str]:
    z = ZoneInfo(tz)
    return [dt.datetime(2026, 10, d + 1, local_hour, 17, tzinfo=z).astimezone(UTC).isoformat()
            for d in range(n)]


def test_shanghai_customer_active_at_20_gets_12_utc():
    plans, stats = plan_all([Customer(1, "Asia/Shanghai", "all", history("Asia/Shanghai", 20))],
                            DAY, shop_tz=ZoneInfo("UTC"), quiet=None)
    p = plans[1]
    assert p.send_at == dt.datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert p.source == "own" and "own history: usually active 20:00-21:00 local" in p.reason
    assert stats["own"] == 1 and stats["shop_timezone"] == 0


def test_new_york_night_owl_gets_9_local_with_quiet_hours():
    plans, _ = plan_all([Customer(1, "America/New_York", "all",
                                  history("America/New_York", 23))],
                        DAY, shop_tz=ZoneInfo("UTC"), quiet=QUIET)
    p = plans[1]
    assert p.local_time.hour == 9 and p.local_time.tzinfo.key == "America/New_York"
    assert p.send_at == dt.datetime(2026, 12, 1, 14, 0, tzinfo=UTC)   # EST is UTC-5
    assert "quiet hours 21:00-09:00" in p.reason


def test_fallbacks_segment_then_shop_and_shop_timezone():
    people = [Customer(1, "Europe/Berlin", "women aged 25-34", history("Europe/Berlin", 18)),
              Customer(2, "Europe/Berlin", "women aged 25-34", history("Europe/Berlin", 18, 2)),
              Customer(3, None, "men aged 55+", []),
              Customer(4, "Not/AZone", "men aged 55+", [])]
    plans, stats = plan_all(people, DAY, shop_tz=ZoneInfo("Europe/London"), quiet=None)
    assert plans[1].source == "own" and plans[2].source == "segment"
    assert "segment women aged 25-34" in plans[2].reason
    assert plans[2].local_time.hour == 18
    assert plans[3].source == "shop" and plans[3].timezone == "Europe/London"
    assert stats == {"own": 1, "segment": 1, "shop": 2, "shop_timezone": 2}


def test_window_parsing_and_errors():
    w = parse_send_window("2026-12-01", ZoneInfo("Asia/Shanghai"))
    assert w.start == dt.datetime(2026, 11, 30, 16, 0, tzinfo=UTC)
    assert w.end - w.start == dt.timedelta(days=1)
    for bad in ("2026-12-02/2026-12-01", "tomorrow", "2026-12-01T00:00/2027-03-01T00:00"):
        with pytest.raises(PushgenError):
            parse_send_window(bad, ZoneInfo("UTC"))
    for bad in ("21-9", "25:00-09:00", "9pm-9am"):
        with pytest.raises(PushgenError):
            parse_quiet_hours(bad)
    assert parse_quiet_hours("off") is None


def test_window_inside_quiet_hours_is_a_clear_error():
    night = parse_send_window("2026-12-01T22:00/2026-12-02T06:00", ZoneInfo("UTC"))
    with pytest.raises(PushgenError, match="entirely inside quiet hours"):
        plan(night, ZoneInfo("UTC"), 20, quiet=QUIET, source="own", why="own history")


def test_preferred_hour_needs_enough_events():
    counts = local_hour_counts(history("UTC", 7, 3), ZoneInfo("UTC"))
    assert preferred_hour(counts, 5) is None and preferred_hour(counts, 3) == 7


@settings(max_examples=200, deadline=None)
@given(tz=st.sampled_from(["UTC", "Asia/Shanghai", "America/New_York", "Asia/Kolkata",
                           "Pacific/Chatham", "America/St_Johns", "Australia/Lord_Howe",
                           "Europe/London", "Pacific/Kiritimati", "America/Adak"]),
       hours=st.lists(st.integers(0, 23), min_size=0, max_size=30),
       start_hour=st.integers(0, 47), length=st.integers(1, 72),
       quiet=st.sampled_from(["21:00-09:00", "22:30-07:15", "00:00-06:00", "20:00-08:00"]))
def test_no_send_time_falls_in_quiet_hours_or_outside_the_window(tz, hours, start_hour,
                                                                  length, quiet):
    q = parse_quiet_hours(quiet)
    start = dt.datetime(2026, 12, 1, tzinfo=UTC) + dt.timedelta(hours=start_hour)
    window = parse_send_window(f"{start.isoformat()}/"
                               f"{(start + dt.timedelta(hours=length)).isoformat()}",
                               ZoneInfo("UTC"))
    stamps = [dt.datetime(2026, 10, 1 + i % 28, h, tzinfo=UTC).isoformat()
              for i, h in enumerate(hours)]
    try:
        plans, _ = plan_all([Customer(1, tz, "s", stamps)], window, shop_tz=ZoneInfo("UTC"),
                            quiet=q)
    except PushgenError as exc:
        assert "entirely inside quiet hours" in str(exc)
        t, z = window.start, ZoneInfo(tz)
        while t < window.end:                    # and it is true at every quarter hour
            assert q.contains(t.astimezone(z))
            t += dt.timedelta(minutes=15)
        return
    p = plans[1]
    assert window.start <= p.send_at < window.end
    assert not q.contains(p.send_at.astimezone(ZoneInfo(tz)))


@pytest.mark.parametrize("text", ["9999-12-31", "9999-12-30T00:00/9999-12-31T00:00"])
def test_send_window_at_the_end_of_time_is_one_line_not_an_overflow(text):
    with pytest.raises(PushgenError, match="year is out of range"):
        parse_send_window(text, ZoneInfo("Pacific/Kiritimati"))
