"""A/B variants and hold-out groups: every customer of a campaign gets exactly one.

The draw is a hash of (campaign, customer id, seed) mapped to [0, 1): random in effect,
reproducible (the same campaign, customer and seed always give the same answer) and stored
in ``assignments`` the first time, so later changes of weights never move a customer who
already got a message. A share ``holdout`` of customers gets variant 0: no message; their
purchases in the campaign window measure what would have happened anyway.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

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
           *, weights: Sequence[float], holdout: float = 0.0, seed: int = 0,
           persist: bool = True) -> dict[int, int]:
    """The variant (0 = hold-out) of each (user id, external id); new ones are stored
    (``persist=False``: drawn the same way but not stored, e.g. for a dry run)."""
    norm = check_split(weights, holdout)
    ids = [u for u, _ in users]
    have = store.assigned(db, campaign_id, ids)
    new = [(uid, variant_for(draw(campaign, ext, seed), norm, holdout))
           for uid, ext in users if uid not in have]
    if new:
        if persist:
            store.store_assignments(db, campaign_id, new, now_iso())
        have.update(new)
    return have


@dataclass
class Split:
    """How one campaign run splits its audience: variant weights, the hold-out share, what
    each variant sends (``picks``: ranked | random; ``templates``: a template name or None
    for the campaign's), and after ``assign_audience`` the variant of each customer."""

    weights: list[float]
    holdout: float = 0.0
    picks: list[str] = field(default_factory=list)
    templates: list[str | None] = field(default_factory=list)
    seed: int = 0
    # user id -> variant (0 = hold-out) of the customers not in variant 1; ``variant_of``
    # reads it. Variant 1 is left out: in a one-variant campaign that is everybody, and a
    # map of 100k customers took 5 MB of the drafting process.
    assigned: dict[int, int] = field(default_factory=dict)
    held_out: int = 0          # customers of this run's audience in the hold-out group

    def variant_of(self, user_id: int) -> int:
        """The variant ``assign_audience`` gave this customer (0 = hold-out)."""
        return self.assigned.get(user_id, 1)

    @property
    def variants(self) -> int:
        return len(self.weights)

    def pick(self, variant: int) -> str:
        return self.picks[variant - 1] if 0 < variant <= len(self.picks) else "ranked"

    def template(self, variant: int) -> str | None:
        return self.templates[variant - 1] if 0 < variant <= len(self.templates) else None


def split_for(ab: Any, variants: int = 1) -> Split:
    """The split of a campaign from its ``[ab]`` settings (``config.ABSettings``) and
    ``--variants``: N variants drawn evenly, or the configured weights; the number of
    variants is the one every setting agrees on."""
    sizes = {"--variants": variants if variants > 1 else 0, "[ab] weights": len(ab.weights),
             "[ab] picks": len(ab.picks), "[ab] templates": len(ab.templates)}
    given = {k: n for k, n in sizes.items() if n}
    n = max(given.values(), default=1)
    wrong = [f"{k} {v}" for k, v in given.items() if v != n]
    if wrong:
        raise PushgenError("the number of variants disagrees: " + ", ".join(
            f"{k} has {v}" for k, v in given.items()) + "; give one entry per variant")
    weights = list(ab.weights) or [1.0] * n
    check_split(weights, ab.holdout)
    return Split(weights=weights, holdout=float(ab.holdout),
                 picks=list(ab.picks) or ["ranked"] * n,
                 templates=list(ab.templates) or [None] * n, seed=int(ab.seed))


def assign_audience(db: Database, campaign_id: int, campaign: str, user_ids: Sequence[int],
                    split: Split, *, persist: bool = True) -> list[int]:
    """Give every customer of ``user_ids`` their variant (stored once, reproducible) and
    return those who get a message, in order; the hold-out count goes to ``split``."""
    externals = store.external_ids(db, user_ids)
    variants = assign(db, campaign_id, campaign, [(u, externals[u]) for u in user_ids],
                      weights=split.weights, holdout=split.holdout, seed=split.seed,
                      persist=persist)
    split.assigned = {u: v for u, v in variants.items() if v != 1}
    kept = [u for u in user_ids if split.variant_of(u) != 0]
    split.held_out = len(user_ids) - len(kept)
    return kept


def random_pick(pool: Sequence[Any], k: int, campaign: str, external_id: str,
                seed: int = 0) -> list[Any]:
    """``k`` distinct entries of ``pool`` drawn for one customer: random, and the same on
    every rerun (seeded by campaign, customer and seed)."""
    rng = random.Random(f"{seed}\x1f{campaign}\x1f{external_id}\x1fpick")
    return [pool[i] for i in rng.sample(range(len(pool)), min(k, len(pool)))]


__all__ = ["assign", "draw", "variant_for", "check_split", "Split", "split_for",
           "assign_audience", "random_pick"]
