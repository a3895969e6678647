"""When each message should arrive: the customer's usual active hour, in their own timezone.

A customer's preferred hour is the local hour in which most of their events happened (at
least ``min_events`` of them); with too little history their segment's hour is used, else the
shop's. The send time is that hour on a day inside the campaign's send window, never inside
quiet hours in the customer's local time: a preferred hour inside quiet hours moves to the
end of the quiet hours (an SMS for a night owl goes out at 09:00, not at 23:00). Every plan
carries a reason a reviewer can read ("own history: usually active 19:00-20:00 local").

Times are ``datetime`` objects with ``tzinfo``; naive window times are read in the shop's
default timezone. Timezones are IANA names (``zoneinfo``).
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from .errors import PushgenError

UTC = _dt.timezone.utc
MIN_EVENTS = 5
DEFAULT_SMS_QUIET_HOURS = "21:00-09:00"
_HM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True)
class QuietHours:
    """Local quiet hours ``start``-``end`` in minutes after midnight (may wrap midnight)."""

    start: int
    end: int

    def contains(self, local: _dt.datetime) -> bool:
        m = local.hour * 60 + local.minute
        if self.start == self.end:
            return False
        if self.start < self.end:
            return self.start <= m < self.end
        return m >= self.start or m < self.end

    def __str__(self) -> str:
        return f"{self.start // 60:02d}:{self.start % 60:02d}-{self.end // 60:02d}:{self.end % 60:02d}"


@dataclass(frozen=True)
class SendWindow:
    """The instants ``[start, end)`` in which messages may be sent (both aware)."""

    start: _dt.datetime
    end: _dt.datetime


@dataclass
class SendPlan:
    """One customer's send time (UTC) and why."""

    send_at: _dt.datetime
    local_time: _dt.datetime
    timezone: str
    source: str          # own | segment | shop
    reason: str


def parse_quiet_hours(text: str | None) -> QuietHours | None:
    """``"21:00-09:00"`` -> QuietHours; None or ``""`` / ``"off"`` -> None."""
    if text is None or text.strip().lower() in ("", "off", "none"):
        return None
    parts = text.replace(" ", "").split("-")
    if len(parts) != 2 or not all(_HM.match(p) for p in parts):
        raise PushgenError(f"quiet_hours {text!r}: use HH:MM-HH:MM, e.g. 21:00-09:00, or off")
    (h1, m1), (h2, m2) = (map(int, _HM.match(p).groups()) for p in parts)  # type: ignore[union-attr]
    return QuietHours(h1 * 60 + m1, h2 * 60 + m2)


def zone(name: str | None) -> ZoneInfo | None:
    """The IANA zone ``name``, or None when it is empty or unknown."""
    if not name or not str(name).strip():
        return None
    try:
        return ZoneInfo(str(name).strip())
    except (ZoneInfoNotFoundError, ValueError):
        return None


def shop_zone(name: str) -> ZoneInfo:
    """The shop's default timezone; an unknown name is a user error."""
    z = zone(name)
    if z is None:
        raise PushgenError(f"unknown timezone {name!r}: use an IANA name such as "
                           "Europe/Berlin, America/New_York or UTC")
    return z


def _instant(text: str, tz: ZoneInfo) -> _dt.datetime:
    try:
        d = _dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise PushgenError(f"send_window: bad time {text!r} (use ISO 8601, e.g. "
                           "2026-12-01T08:00)") from None
    return d.replace(tzinfo=tz) if d.tzinfo is None else d


def parse_send_window(text: str, tz: ZoneInfo) -> SendWindow:
    """``"2026-12-01T00:00/2026-12-02T00:00"`` or a day ``"2026-12-01"`` (that whole day);
    times without an offset are read in ``tz`` (the shop's timezone)."""
    text = text.strip()
    if "/" in text:
        a, b = text.split("/", 1)
        start, end = _instant(a, tz), _instant(b, tz)
    else:
        try:
            day = _dt.date.fromisoformat(text)
        except ValueError:
            raise PushgenError(f"send_window {text!r}: use START/END in ISO 8601 or a day "
                               "(2026-12-01)") from None
        start = _dt.datetime.combine(day, _dt.time(0), tz)
        try:
            end = start + _dt.timedelta(days=1)
        except OverflowError:
            end = start     # refused just below
    if start.year >= 9999 or end.year >= 9999:   # later arithmetic would overflow
        raise PushgenError(f"send_window {text!r}: the year is out of range")
    if end <= start:
        raise PushgenError(f"send_window {text!r}: the end must be after the start")
    if end - start > _dt.timedelta(days=31):
        raise PushgenError(f"send_window {text!r}: at most 31 days")
    return SendWindow(start.astimezone(UTC), end.astimezone(UTC))


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=UTC)
# UTC offsets are looked up per quarter hour: every timezone changes its offset on a UTC
# quarter hour (Lord Howe on the half hour, Chatham on the hour), so this is exact.
_BUCKET = 900


def epoch_seconds(ts: str | int) -> int:
    """Seconds since 1970 (UTC) of an ISO 8601 timestamp (UTC when naive); ints pass."""
    if isinstance(ts, (int, np.integer)):
        return int(ts)
    d = _dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return int((d - _EPOCH).total_seconds())


def _epochs(timestamps: Sequence[str | int]) -> np.ndarray:
    values = np.asarray(timestamps)
    if values.dtype.kind in "iu":
        return values.astype(np.int64).reshape(-1)
    return np.array([epoch_seconds(t) for t in timestamps], np.int64)


def local_hours(epochs: np.ndarray, tz: ZoneInfo) -> np.ndarray:
    """The local hour (0-23) in ``tz`` of each of ``epochs``: offsets are computed once per
    quarter hour present, so millions of events cost a few thousand zone lookups."""
    epochs = np.asarray(epochs, np.int64)
    if not len(epochs):
        return np.zeros(0, np.int64)
    buckets, inverse = np.unique(epochs // _BUCKET, return_inverse=True)
    offsets = np.array([int(_dt.datetime.fromtimestamp(int(b) * _BUCKET, tz).utcoffset()
                            .total_seconds()) for b in buckets], np.int64)
    return (epochs + offsets[inverse.reshape(-1)]) % 86400 // 3600


def local_hour_counts(timestamps: Iterable[str | int], tz: ZoneInfo) -> np.ndarray:
    """How many of ``timestamps`` (ISO 8601, UTC when naive, or epoch seconds) fall in each
    local hour 0-23."""
    epochs = np.array([epoch_seconds(t) for t in timestamps], np.int64)
    return np.bincount(local_hours(epochs, tz), minlength=24).astype(np.int64)


def preferred_hours(counts: np.ndarray, min_events: int = MIN_EVENTS) -> np.ndarray:
    """``preferred_hour`` of every row of a (rows, 24) matrix at once; -1 for rows with
    fewer than ``min_events`` events."""
    counts = np.asarray(counts, np.float64).reshape(-1, 24)
    smooth = counts + 0.25 * (np.roll(counts, 1, axis=1) + np.roll(counts, -1, axis=1))
    best = counts.max(axis=1, keepdims=True)
    # argmax takes the first maximum: the earliest of the busiest hours with the busiest
    # neighbours.
    hours = np.argmax(np.where(counts == best, smooth, -np.inf), axis=1)
    return np.where(counts.sum(axis=1) >= max(min_events, 1), hours, -1)


def preferred_hour(counts: np.ndarray, min_events: int = MIN_EVENTS) -> int | None:
    """The busiest local hour, or None with fewer than ``min_events`` events. Ties go to the
    hour whose neighbours are busier, then to the earlier hour."""
    counts = np.asarray(counts, np.float64)
    if counts.sum() < max(min_events, 1):
        return None
    smooth = counts + 0.25 * (np.roll(counts, 1) + np.roll(counts, -1))
    best = counts.max()
    candidates = [h for h in range(24) if counts[h] == best]
    return max(candidates, key=lambda h: (smooth[h], -h))


def _hours(h: int) -> str:
    return f"{h:02d}:00-{(h + 1) % 24:02d}:00"


STEP = _dt.timedelta(minutes=15)


def _best_time(window: SendWindow, tz: ZoneInfo, want_minute: int,
               quiet: QuietHours | None) -> tuple[_dt.datetime, int] | None:
    """The quarter hour inside the window, outside quiet hours, closest to the wanted local
    minute of the day (earliest on ties), and its distance in minutes."""
    t = window.start
    if t.minute % 15 or t.second or t.microsecond:
        t = t.replace(minute=t.minute - t.minute % 15, second=0, microsecond=0) + STEP
    best: tuple[_dt.datetime, int] | None = None
    candidates = [window.start] if t != window.start else []
    while t < window.end:
        candidates.append(t)
        t += STEP
    for c in candidates:
        local = c.astimezone(tz)
        if quiet is not None and quiet.contains(local):
            continue
        m = local.hour * 60 + local.minute
        dist = min(abs(m - want_minute), 1440 - abs(m - want_minute))
        if best is None or dist < best[1]:
            best = (c, dist)
            if dist == 0:
                break
    return best


def plan(window: SendWindow, tz: ZoneInfo, hour: int, *, quiet: QuietHours | None,
         source: str, why: str,
         _cache: dict[tuple, tuple[_dt.datetime, int] | None] | None = None) -> SendPlan:
    """The send time for a customer in ``tz`` who prefers local ``hour``.

    Candidates are the quarter hours inside the window outside quiet hours; the one closest
    to the wanted time of day wins (earliest on ties). A wanted hour inside quiet hours
    becomes the end of the quiet hours.
    """
    want = hour * 60
    moved = ""
    if quiet is not None and quiet.contains(_dt.datetime(2000, 1, 1, hour, 0)):
        want = quiet.end
        moved = f"; {hour:02d}:00 is inside quiet hours {quiet}, so after they end"
    key = (tz.key, want)
    if _cache is not None and key in _cache:
        best = _cache[key]
    else:
        best = _best_time(window, tz, want, quiet)
        if _cache is not None:
            _cache[key] = best
    if best is None:
        raise PushgenError(f"the send window {window.start.isoformat()} to "
                           f"{window.end.isoformat()} lies entirely inside quiet hours {quiet} "
                           f"for customers in {tz.key}: widen the window")
    send_at, dist = best
    local = send_at.astimezone(tz)
    off = "" if dist == 0 else f"; {local:%H:%M} local is the closest the window allows"
    return SendPlan(send_at.astimezone(UTC), local, tz.key, source,
                    f"{why}: usually active {_hours(hour)} local{moved}{off}")


@dataclass
class Customer:
    """What send-time planning needs to know about one customer."""

    user_id: int
    timezone: str | None
    segment: str
    timestamps: Sequence[str | int]   # ISO 8601 (UTC when naive) or epoch seconds


def plan_all(customers: Iterable[Customer], window: SendWindow, *, shop_tz: ZoneInfo,
             quiet: QuietHours | None, min_events: int = MIN_EVENTS
             ) -> tuple[dict[int, SendPlan], dict[str, int]]:
    """Send plans for every customer, and counts: own / segment / shop history, and customers
    given the shop's timezone because theirs is missing or unknown."""
    people = list(customers)
    n = len(people)
    stats = {"own": 0, "segment": 0, "shop": 0, "shop_timezone": 0}
    known: dict[str | None, ZoneInfo | None] = {}
    zones: list[ZoneInfo] = []
    for c in people:
        if c.timezone not in known:
            known[c.timezone] = zone(c.timezone)
        z = known[c.timezone]
        if z is None:
            z = shop_tz
            stats["shop_timezone"] += 1
        zones.append(z)
    # Every event's local hour, zone by zone, then counts per customer in one bincount.
    per_customer = [_epochs(c.timestamps) for c in people]
    sizes = np.array([len(e) for e in per_customer], np.int64)
    owner = np.repeat(np.arange(n), sizes)
    epochs = np.concatenate(per_customer) if n else np.zeros(0, np.int64)
    hours = np.zeros(len(epochs), np.int64)
    zone_of = np.repeat(np.array([z.key for z in zones], object), sizes)
    for key in {z.key for z in zones}:
        mask = zone_of == key
        hours[mask] = local_hours(epochs[mask], ZoneInfo(key))
    counts = np.bincount(owner * 24 + hours, minlength=n * 24).reshape(n, 24)
    segments = sorted({c.segment for c in people})
    seg_index = np.array([segments.index(c.segment) for c in people], np.int64) \
        if n else np.zeros(0, np.int64)
    seg_counts = np.zeros((len(segments), 24), np.int64)
    np.add.at(seg_counts, seg_index, counts)
    own_hours = preferred_hours(counts, min_events)
    seg_hours = preferred_hours(seg_counts, min_events)
    shop_hour = int(preferred_hours(counts.sum(axis=0), 1)[0]) if n else -1
    if shop_hour < 0:
        shop_hour = 12   # no history anywhere: midday
    plans: dict[int, SendPlan] = {}
    cache: dict[tuple, tuple[_dt.datetime, int] | None] = {}
    for i, c in enumerate(people):
        if own_hours[i] >= 0:
            hour, source, why = int(own_hours[i]), "own", "own history"
        elif seg_hours[seg_index[i]] >= 0:
            hour, source, why = int(seg_hours[seg_index[i]]), "segment", f"segment {c.segment}"
        else:
            hour, source, why = shop_hour, "shop", "shop-wide history"
        stats[source] += 1
        plans[c.user_id] = plan(window, zones[i], hour, quiet=quiet, source=source, why=why,
                                _cache=cache)
    return plans, stats


__all__ = ["QuietHours", "SendWindow", "SendPlan", "Customer", "parse_quiet_hours",
           "parse_send_window", "zone", "shop_zone", "local_hour_counts", "preferred_hour",
           "preferred_hours", "local_hours", "epoch_seconds",
           "plan", "plan_all", "MIN_EVENTS", "DEFAULT_SMS_QUIET_HOURS"]
