"""Buy-again: who bought what how often and how recently, and each item's repurchase cycle.

Purchases count once per (user, item, day), so a basket line repeated in an export is not
three purchases. An item's cycle is the median gap in days between a customer's consecutive
purchases of it, shrunk towards the shop-wide median when few customers bought it twice. A
purchase that was returned (a ``return`` event on or after its day) is no buy-again signal and
is never "due".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .events import PURCHASE, RETURN, EventLog

REPEAT_MODES = ("never", "due", "always")
REPEAT_SHARE_MIN = 0.05    # below this share of repeat purchases, bought items stay out
_SHRINK = 3.0              # pseudo-gaps of the shop-wide median in an item's cycle
_DEFAULT_CYCLE = 30.0      # days, when nobody ever bought anything twice


@dataclass
class Purchases:
    """One row per (user, item) bought: distinct purchase days, last day, own cycle, returned."""

    user: np.ndarray       # store ids
    item: np.ndarray       # store ids
    days: np.ndarray       # number of distinct purchase days
    last_day: np.ndarray   # day of the latest purchase
    own_cycle: np.ndarray  # median gap of this user's purchases of the item (nan below 2 days)
    returned: np.ndarray   # bool: returned on or after the latest purchase

    def __len__(self) -> int:
        return len(self.user)


def purchases(log: EventLog) -> Purchases:
    """Per (user, item) purchase summary from the log's purchase and return events."""
    buy = log.is_kind(PURCHASE)
    u, i, d = log.user[buy], log.item[buy], log.day[buy]
    if not len(u):
        e = np.empty(0, np.int64)
        return Purchases(e, e, e, e, np.empty(0), np.empty(0, bool))
    key = np.unique(np.stack([u, i, d], axis=1), axis=0)     # sorted by user, item, day
    u, i, d = key[:, 0], key[:, 1], key[:, 2]
    start = np.r_[True, (u[1:] != u[:-1]) | (i[1:] != i[:-1])]
    group = np.cumsum(start) - 1
    first = np.flatnonzero(start)
    n = np.diff(np.r_[first, len(u)])
    last = np.r_[first[1:], len(u)] - 1
    gaps = np.diff(d).astype(float)
    gaps_ok = ~start[1:]
    own = np.full(len(first), np.nan)
    if gaps_ok.any():
        g_group, g_val = group[1:][gaps_ok], gaps[gaps_ok]
        order = np.lexsort((g_val, g_group))
        g_group, g_val = g_group[order], g_val[order]
        g_start = np.flatnonzero(np.r_[True, g_group[1:] != g_group[:-1]])
        g_n = np.diff(np.r_[g_start, len(g_group)])
        lo = g_val[g_start + (g_n - 1) // 2]
        hi = g_val[g_start + g_n // 2]
        own[g_group[g_start]] = (lo + hi) / 2
    pu, pi, last_day = u[first], i[first], d[last]
    returned = np.zeros(len(first), bool)
    ret = log.is_kind(RETURN)
    if ret.any():
        latest_return: dict[tuple[int, int], int] = {}
        for a, b, day in zip(log.user[ret].tolist(), log.item[ret].tolist(),
                             log.day[ret].tolist()):
            latest_return[(a, b)] = max(day, latest_return.get((a, b), day))
        returned = np.array([latest_return.get((a, b), -1) >= ld for a, b, ld in
                             zip(pu.tolist(), pi.tolist(), last_day.tolist())], bool)
    return Purchases(pu, pi, n, last_day, own, returned)


@dataclass
class Cycles:
    """Per-item repurchase cycles in days (``item_ids`` sorted) and the shop's repeat share."""

    item_ids: np.ndarray
    days: np.ndarray
    shop_days: float
    repeat_share: float     # share of purchases on a return visit that buy an item again

    def of(self, item_ids: np.ndarray) -> np.ndarray:
        """Cycle of each item id (the shop-wide one for items never bought twice)."""
        item_ids = np.asarray(item_ids, np.int64)
        if not len(self.item_ids):
            return np.full(len(item_ids), self.shop_days)
        pos = np.clip(np.searchsorted(self.item_ids, item_ids), 0, len(self.item_ids) - 1)
        hit = self.item_ids[pos] == item_ids
        return np.where(hit, self.days[pos], self.shop_days)

    def to_dict(self) -> dict[str, Any]:
        return {"shop_days": self.shop_days, "repeat_share": self.repeat_share}

    @classmethod
    def from_parts(cls, d: Mapping[str, Any], item_ids: np.ndarray, days: np.ndarray
                   ) -> "Cycles":
        return cls(np.asarray(item_ids, np.int64), np.asarray(days, np.float64),
                   float(d["shop_days"]), float(d["repeat_share"]))


def learn_cycles(log: EventLog) -> Cycles:
    """Item cycles and the repeat share from the purchases in ``log``."""
    buy = log.is_kind(PURCHASE)
    u, i, d = log.user[buy], log.item[buy], log.day[buy]
    if not len(u):
        return Cycles(np.empty(0, np.int64), np.empty(0), _DEFAULT_CYCLE, 0.0)
    key = np.unique(np.stack([u, i, d], axis=1), axis=0)
    u, i, d = key[:, 0], key[:, 1], key[:, 2]
    same = np.r_[False, (u[1:] == u[:-1]) & (i[1:] == i[:-1])]
    gap_item, gap = i[same], (d[1:] - d[:-1])[same[1:]].astype(float)
    # Repeat share: purchases after the customer's first purchase day that buy again.
    _, user_row = np.unique(u, return_inverse=True)
    first_day = np.full(user_row.max() + 1, np.iinfo(np.int64).max)
    np.minimum.at(first_day, user_row, d)
    later = d > first_day[user_row]
    share = float(same[later].mean()) if later.any() else 0.0
    if not len(gap):
        return Cycles(np.empty(0, np.int64), np.empty(0), _DEFAULT_CYCLE, share)
    shop = float(np.median(gap))
    items, inv = np.unique(gap_item, return_inverse=True)
    days = np.empty(len(items))
    counts = np.bincount(inv)
    order = np.argsort(inv, kind="stable")
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    sorted_gaps = gap[order]
    for j, (s, c) in enumerate(zip(starts.tolist(), counts.tolist())):
        med = float(np.median(sorted_gaps[s:s + c]))
        # Geometric shrinkage towards the shop's median: one odd gap does not make a cycle.
        days[j] = float(np.exp((c * np.log(max(med, 1.0)) + _SHRINK * np.log(max(shop, 1.0)))
                               / (c + _SHRINK)))
    return Cycles(items, days, max(shop, 1.0), share)


def default_repeat(cycles: Cycles) -> str:
    """"never" when customers rarely buy the same item again, else "due"."""
    return "due" if cycles.repeat_share >= REPEAT_SHARE_MIN else "never"


def buy_again_strength(p: Purchases) -> np.ndarray:
    """The blend's repeat-purchase feature: log(1 + purchase days); 0 once returned."""
    return np.where(p.returned, 0.0, np.log1p(p.days))


def cycle_of(p: Purchases, cycles: Cycles) -> np.ndarray:
    """The cycle that decides "due": the customer's own (shrunk towards the item's) when they
    bought the item on two days or more, else the item's."""
    item = cycles.of(p.item)
    own = p.own_cycle
    n_gaps = np.maximum(p.days - 1, 0)
    mixed = np.exp((n_gaps * np.log(np.maximum(np.nan_to_num(own, nan=1.0), 1.0))
                    + _SHRINK * np.log(np.maximum(item, 1.0))) / (n_gaps + _SHRINK))
    return np.where(n_gaps > 0, mixed, item)


def not_due(p: Purchases, cycles: Cycles, today: int) -> np.ndarray:
    """Bought items that must wait: the cycle has not passed since the last purchase, or the
    purchase was returned."""
    return p.returned | ((today - p.last_day) < cycle_of(p, cycles))


# -- words for the reviewer --------------------------------------------------------------------
def _every(days: float) -> str:
    d = max(1, int(round(days)))
    if d == 1:
        return "every day"
    if d < 14:
        return f"every ~{d} days"
    if d < 60:
        return f"every ~{round(d / 7)} weeks"
    if d < 730:
        return f"every ~{round(d / 30.4)} months"
    return f"every ~{round(d / 365)} years"


def _ago(days: int) -> str:
    if days <= 0:
        return "today"
    if days == 1:
        return "yesterday"
    if days < 60:
        return f"{days} days ago"
    if days < 730:
        return f"{round(days / 30.4)} months ago"
    return f"{round(days / 365)} years ago"


def buy_again_reason(n_days: int, own_cycle: float, item_cycle: float, since: int) -> str:
    """"You usually buy this every ~2 weeks; last bought 20 days ago"."""
    if n_days >= 2 and np.isfinite(own_cycle):
        return f"You usually buy this {_every(own_cycle)}; last bought {_ago(since)}"
    return (f"You bought this {_ago(since)}; shoppers usually buy it again "
            f"{_every(item_cycle)}")
