"""Popularity, overall and within profile segments, on one standardised log scale.

A segment is an (age band, gender) pair of the profile; users with an incomplete profile
belong to segment 0, the whole shop. Popularity counts the distinct users with a positive
interaction. The blend uses ``log(1 + count)`` standardised over the catalog, so a weight means
the same on every shop; a segment's count is smoothed towards the shop's with a few
pseudo-users, so a small segment does not rank by a handful of purchases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

SEGMENT_FIELDS: tuple[str, ...] = ("age_band", "gender")
_PSEUDO_USERS = 20.0


def segment_key(user: Mapping[str, Any]) -> str:
    """"25-34|female" for a complete profile, "" (the whole shop) otherwise."""
    attrs = user.get("attributes")
    if not isinstance(attrs, dict):
        return ""
    parts = [attrs.get(f) for f in SEGMENT_FIELDS]
    if any(p is None or p == "" for p in parts):
        return ""
    return "|".join(str(p).strip().lower() for p in parts)


def segment_label(key: str) -> str:
    """Human words for a segment: "women aged 25-34", "shoppers like you" for the shop."""
    if not key:
        return "shoppers like you"
    age, gender = key.split("|", 1)
    who = {"f": "women", "female": "women", "woman": "women", "w": "women",
           "m": "men", "male": "men", "man": "men"}.get(gender, "shoppers")
    return f"{who} aged {age}"


@dataclass
class Popularity:
    """Distinct-user counts per item overall and per segment (segment 0 = the whole shop)."""

    item_ids: np.ndarray          # store ids, sorted
    counts: np.ndarray            # (items,)
    segments: list[str]           # keys; segments[0] == ""
    segment_counts: np.ndarray    # (segments, items)
    segment_users: np.ndarray     # (segments,) users with any positive interaction

    @classmethod
    def fit(cls, users: Sequence[Mapping[str, Any]], pair_users: np.ndarray,
            pair_items: np.ndarray, item_ids: np.ndarray) -> "Popularity":
        """From unique positive (user, item) pairs; ``item_ids`` is the catalog (sorted)."""
        item_ids = np.asarray(item_ids, np.int64)
        seg_of = {int(u["id"]): segment_key(u) for u in users}
        keys = [""] + sorted({k for k in seg_of.values() if k})
        code = {k: j for j, k in enumerate(keys)}
        col = np.searchsorted(item_ids, pair_items)
        ok = (col < len(item_ids)) & (item_ids[np.minimum(col, len(item_ids) - 1)] == pair_items)
        col, pu = col[ok], pair_users[ok]
        seg = np.array([code[seg_of.get(int(u), "")] for u in pu.tolist()], np.int64)
        counts = np.bincount(col, minlength=len(item_ids)).astype(np.float64)
        seg_counts = np.zeros((len(keys), len(item_ids)))
        np.add.at(seg_counts, (seg, col), 1.0)
        seg_counts[0] = counts
        active = np.unique(pu)
        seg_users = np.zeros(len(keys))
        np.add.at(seg_users, np.array([code[seg_of.get(int(u), "")] for u in active.tolist()],
                                      np.int64), 1.0)
        seg_users[0] = len(active)
        return cls(item_ids, counts, keys, seg_counts, seg_users)

    def segment_of(self, users: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Row of each user's segment (0 when the shop has no segments or the user none)."""
        if len(self.segments) == 1:
            return np.zeros(len(users), np.int64)
        code = {k: j for j, k in enumerate(self.segments)}
        return np.array([code.get(segment_key(u), 0) for u in users], np.int64)

    def aligned(self, values: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        """Columns of ``values`` for ``item_ids`` (0 for items unknown at training time)."""
        item_ids = np.asarray(item_ids, np.int64)
        out = np.zeros(values.shape[:-1] + (len(item_ids),))
        if not len(self.item_ids):
            return out
        pos = np.clip(np.searchsorted(self.item_ids, item_ids), 0, len(self.item_ids) - 1)
        hit = self.item_ids[pos] == item_ids
        out[..., hit] = values[..., pos[hit]]
        return out

    def _log_scale(self) -> tuple[float, float]:
        lp = np.log1p(self.counts)
        return float(lp.mean()) if len(lp) else 0.0, float(lp.std()) if len(lp) and \
            lp.std() > 0 else 1.0

    def z(self, item_ids: np.ndarray) -> np.ndarray:
        """Standardised log popularity of ``item_ids``, shop-wide: (items,)."""
        mean, std = self._log_scale()
        return ((np.log1p(self.aligned(self.counts, item_ids)) - mean) / std).astype(np.float32)

    def z_segments(self, item_ids: np.ndarray) -> np.ndarray:
        """The same scale within each segment: (segments, items); row 0 equals ``z``."""
        mean, std = self._log_scale()
        total = max(self.segment_users[0], 1.0)
        share = self.counts / total
        n = self.segment_users[:, None]
        est = (self.segment_counts + _PSEUDO_USERS * share[None, :]) * total / (n + _PSEUDO_USERS)
        est[0] = self.counts
        return ((np.log1p(self.aligned(est, item_ids)) - mean) / std).astype(np.float32)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"pop_item_ids": self.item_ids, "pop_counts": self.counts,
                "pop_segment_counts": self.segment_counts,
                "pop_segment_users": self.segment_users}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], segments: list[str]
                    ) -> "Popularity":
        return cls(np.asarray(arrays["pop_item_ids"], np.int64),
                   np.asarray(arrays["pop_counts"], np.float64), list(segments),
                   np.asarray(arrays["pop_segment_counts"], np.float64),
                   np.asarray(arrays["pop_segment_users"], np.float64))
