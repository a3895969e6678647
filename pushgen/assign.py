"""A/B variants and hold-out groups: every customer of a campaign gets exactly one.

The draw is a hash of (campaign, customer id, seed) mapped to [0, 1): random in effect,
reproducible (the same campaign, customer and seed always give the same answer) and stored
in ``assignments`` the first time, so later changes of weights never move a customer who
already got a message. A share ``holdout`` of customers gets variant 0: no message; their
purchases in the campaign window measure what would have happened anyway.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from sqlite_utils import Database

from .errors import PushgenError
from .store import now_iso
from .store import assignments as store


def check_split(weights: Sequence[float], holdout: float) -> list[float]:
    """Normalised variant weights; a one-line error for impossible values."""
    if not weights:
        raise PushgenError("[ab] weights: give at least one weight, e.g. [0.5, 0.5]")
    if any(not isinstance(w, (int, float)) or w < 0 for w in weights) or sum(weights) <= 0:
        raise PushgenError(f"[ab] weights {list(weights)}: use numbers of 0 or more with a "
                           "positive sum, e.g. [0.5, 0.5]")
    if not 0 <= holdout < 1:
        raise PushgenError(f"holdout {holdout}: use a share between 0 and 1, e.g. 0.1")
    total = float(sum(weights))
    return [w / total for w in weights]


def draw(campaign: str, external_id: str, seed: int = 0) -> float:
    """A uniform number in [0, 1) fixed by (campaign, customer, seed)."""
    digest = hashlib.sha256(f"{seed}\x1f{campaign}\x1f{external_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def variant_for(u: float, weights: Sequence[float], holdout: float) -> int:
    """Variant 1..N for draw ``u`` (0 = hold-out), with normalised ``weights``."""
    if u < holdout:
        return 0
    x = (u - holdout) / (1 - holdout)
    acc = 0.0
    for i, w in enumerate(weights, start=1):
        acc += w
        if x < acc:
            return i
    return len(weights)


def assign(db: Database, campaign_id: int, campaign: str, users: Sequence[tuple[int, str]],
           *, weights: Sequence[float], holdout: float = 0.0, seed: int = 0) -> dict[int, int]:
    """The variant (0 = hold-out) of each (user id, external id); new ones are stored."""
    norm = check_split(weights, holdout)
    ids = [u for u, _ in users]
    have = store.assigned(db, campaign_id, ids)
    new = [(uid, variant_for(draw(campaign, ext, seed), norm, holdout))
           for uid, ext in users if uid not in have]
    if new:
        store.store_assignments(db, campaign_id, new, now_iso())
        have.update(new)
    return have


__all__ = ["assign", "draw", "variant_for", "check_split"]
