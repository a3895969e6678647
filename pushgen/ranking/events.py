"""The shop's events as numpy columns, and what training and ranking read from them.

``EventLog`` holds events in time order (user and item store ids, kind, value, time). From it
come the implicit-feedback weights LightFM trains on (``interaction_weights``), the split of
the days into a training and a held-out part (``day_cut``). A ``return`` event (a returned
purchase) is negative signal: its default weight cancels a purchase.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

DAY = 86_400
# A click (from a campaign outcome, or a shop's click log) says more than a view, less than
# a cart; a return cancels its purchase.
DEFAULT_EVENT_WEIGHTS: dict[str, float] = {"purchase": 5.0, "cart": 3.0, "click": 2.0,
                                           "view": 1.0, "rating": 1.0, "return": -5.0}
PURCHASE, RETURN, RATING = "purchase", "return", "rating"


@dataclass
class EventLog:
    """Events in time order; ``kind`` holds codes into ``kinds`` (-1: none)."""

    user: np.ndarray    # int64 store ids
    item: np.ndarray    # int64 store ids
    kind: np.ndarray    # int16 codes
    value: np.ndarray   # float64
    ts: np.ndarray      # int64 seconds since 1970, UTC
    kinds: list[str]

    def __len__(self) -> int:
        return len(self.user)

    @property
    def day(self) -> np.ndarray:
        return self.ts // DAY

    @classmethod
    def empty(cls) -> "EventLog":
        return cls(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int16),
                   np.empty(0), np.empty(0, np.int64), [])

    @classmethod
    def from_columns(cls, cols: Mapping[str, Any]) -> "EventLog":
        return cls(np.asarray(cols["user"], np.int64), np.asarray(cols["item"], np.int64),
                   np.asarray(cols["kind"], np.int16), np.asarray(cols["value"], np.float64),
                   np.asarray(cols["ts"], np.int64), list(cols["kinds"]))

    @classmethod
    def from_tuples(cls, events: Sequence[tuple]) -> "EventLog":
        """From ``(user_id, item_id, kind, value, ts)`` tuples; ``ts`` an ISO string or seconds."""
        kinds = sorted({str(e[2]) for e in events})
        code = {k: i for i, k in enumerate(kinds)}
        ts = np.array([_seconds(e[4]) for e in events], np.int64)
        order = np.argsort(ts, kind="stable")
        return cls(np.array([e[0] for e in events], np.int64)[order],
                   np.array([e[1] for e in events], np.int64)[order],
                   np.array([code[str(e[2])] for e in events], np.int16)[order],
                   np.array([float(e[3]) for e in events], np.float64)[order], ts[order], kinds)

    def code(self, kind: str) -> int:
        return self.kinds.index(kind) if kind in self.kinds else -2

    def is_kind(self, kind: str) -> np.ndarray:
        return self.kind == self.code(kind)

    def subset(self, mask: np.ndarray) -> "EventLog":
        return EventLog(self.user[mask], self.item[mask], self.kind[mask], self.value[mask],
                        self.ts[mask], self.kinds)


def _seconds(ts: Any) -> int:
    if isinstance(ts, (int, float, np.integer)):
        return int(ts)
    d = _dt.datetime.fromisoformat(str(ts).replace("Z", "+00:00"))
    if d.tzinfo is None:
        d = d.replace(tzinfo=_dt.timezone.utc)
    return int(d.timestamp())


def event_weights_per_event(log: EventLog, weights: Mapping[str, float],
                            rating_threshold: float, half_life_days: float | None = None,
                            now: int | None = None) -> np.ndarray:
    """The weight of every event: ``weights[kind]`` (unknown kinds 0), ratings only from
    ``rating_threshold``, and with ``half_life_days`` halved for every that many days of age."""
    table = np.array([float(weights.get(k, 0.0)) for k in log.kinds] + [0.0], np.float64)
    w = table[np.where(log.kind >= 0, log.kind, len(log.kinds))]
    rating = log.is_kind(RATING)
    if rating.any():
        w = np.where(rating & (log.value < rating_threshold), 0.0, w)
    if half_life_days and len(log):
        ref = int(log.ts.max()) if now is None else now
        w = w * np.power(0.5, (ref - log.ts) / DAY / half_life_days)
    return w


def interaction_weights(log: EventLog, weights: Mapping[str, float], rating_threshold: float,
                        half_life_days: float | None = None
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Summed implicit-feedback weight per (user, item): unique ``(user_ids, item_ids, weights)``
    with weight > 0 (a returned purchase cancels the purchase's weight)."""
    w = event_weights_per_event(log, weights, rating_threshold, half_life_days)
    keep = w != 0
    if not keep.any():
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    users, items, w = log.user[keep], log.item[keep], w[keep]
    width = int(items.max()) + 1
    uniq, inv = np.unique(users * width + items, return_inverse=True)
    sums = np.bincount(inv.ravel(), weights=w)
    pos = sums > 1e-9
    return uniq[pos] // width, uniq[pos] % width, sums[pos].astype(np.float32)


def day_cut(log: EventLog, fraction: float) -> tuple[int, int, int]:
    """The first held-out day when the last ``fraction`` of the distinct event days are held
    out; returns ``(cut_day, days_before, days_after)`` (days are UTC days since 1970)."""
    days = np.unique(log.day)
    n_held = int(round(len(days) * fraction))
    if len(days) < 2 or n_held < 1 or n_held >= len(days):
        return int(days[-1]) + 1 if len(days) else 0, len(days), 0
    cut = int(days[len(days) - n_held])
    return cut, len(days) - n_held, n_held


def day_label(day: int) -> str:
    return (_dt.date(1970, 1, 1) + _dt.timedelta(days=int(day))).isoformat()
