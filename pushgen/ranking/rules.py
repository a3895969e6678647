"""Business rules of a ranking: which items may be shown, pinned and blocked skus, diversity.

``RankRules`` is what a campaign's ``[rank]`` section sets (``config._RANK_KEYS`` is kept in
step with its fields by a test). ``repeat`` says whether items the customer already bought may
come back: "never", "due" (once the item's repurchase cycle has passed) or "always"; None
follows the default the model chose from the shop's data at training time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from sqlite_utils import Database

from ..errors import PushgenError
from ..messages import ItemFacts
from ..store import loads
from ..store import ranking as store
from .repeat import REPEAT_MODES


@dataclass
class RankRules:
    """Business rules applied while ranking (keyword arguments of a campaign's [rank])."""

    repeat: str | None = None             # never | due | always; None: the model's default
    drop_inactive: bool = True
    drop_out_of_stock: bool = True
    include_categories: list[str] = field(default_factory=list)
    exclude_categories: list[str] = field(default_factory=list)
    min_price: float | None = None        # on the current (sale) price
    max_price: float | None = None
    min_discount: float | None = None     # whole percent, e.g. 20
    max_per_category: int | None = None   # diversity: at most N items of a category per list
    pinned: list[str] = field(default_factory=list)   # skus always first (if sellable)
    blocked: list[str] = field(default_factory=list)  # skus never recommended


def check_repeat(repeat: str | None) -> None:
    if repeat is not None and repeat not in REPEAT_MODES:
        raise PushgenError(f"repeat {repeat!r}: use one of {', '.join(REPEAT_MODES)} "
                           "(never: no bought item; due: once its cycle has passed; "
                           "always: any)")


def check_rules(db: Database, rules: RankRules, k: int = 5) -> list[str]:
    """Refuse impossible ranking rules with one clear line; returns warnings.

    Checked before any ranking starts: list length, repeat mode, unknown categories, price
    range, discount range, a sku both pinned and blocked, the per-category cap, unknown
    pinned skus.
    """
    if k < 1:
        raise PushgenError(f"--top-k must be at least 1 (got {k})")
    check_repeat(rules.repeat)
    known = store.item_categories(db)
    known_lower = {c.lower() for c in known}
    for flag, cats in (("--include-category", rules.include_categories),
                       ("--exclude-category", rules.exclude_categories)):
        unknown = [c for c in cats if c.lower() not in known_lower]
        if unknown:
            raise PushgenError(f"{flag} {', '.join(unknown)}: no such category; known "
                               f"categories: {', '.join(known) or 'none'}")
    for flag, v in (("--min-price", rules.min_price), ("--max-price", rules.max_price)):
        if v is not None and (not math.isfinite(v) or v < 0):
            raise PushgenError(f"{flag} must be 0 or more (got {v})")
    if rules.min_price is not None and rules.max_price is not None \
            and rules.min_price > rules.max_price:
        raise PushgenError(f"--min-price {rules.min_price:g} is above --max-price "
                           f"{rules.max_price:g}: no item can match")
    if rules.min_discount is not None and not 0 <= rules.min_discount <= 100:
        raise PushgenError(f"--min-discount is a percentage between 0 and 100 "
                           f"(got {rules.min_discount:g})")
    if rules.max_per_category is not None and rules.max_per_category < 1:
        raise PushgenError(f"--max-per-category must be at least 1 (got "
                           f"{rules.max_per_category})")
    both = sorted(set(rules.pinned) & set(rules.blocked))
    if both:
        raise PushgenError(f"sku {', '.join(both)} is both pinned (--pin) and blocked "
                           "(--block): choose one")
    skus = set(store.item_skus(db))
    missing = [x for x in rules.pinned if x not in skus]
    if missing:
        raise PushgenError(f"--pin {', '.join(missing)}: not in the catalog")
    return [f"--block {x}: not in the catalog (nothing to block)"
            for x in rules.blocked if x not in skus]


def item_facts(item: Mapping[str, Any], score: float = 0.0, reason: str = "") -> ItemFacts:
    attrs = item.get("attributes")
    if isinstance(attrs, str):
        attrs = loads(attrs, {}) or {}
    return ItemFacts(sku=item["sku"], title=item["title"], price=item.get("price"),
                     currency=item.get("currency") or "USD", sale_price=item.get("sale_price"),
                     category=item.get("category"), brand=item.get("brand"),
                     description=item.get("description"), url=item.get("url"),
                     image_url=item.get("image_url"), score=float(score), reason=reason,
                     attributes=dict(attrs or {}))


def _sellable(item: Mapping[str, Any], rules: RankRules) -> bool:
    return bool(item.get("active", 1) or not rules.drop_inactive) and not (
        rules.drop_out_of_stock and item.get("stock") is not None and item["stock"] <= 0)


def item_mask(items: Sequence[Mapping[str, Any]], rules: RankRules) -> np.ndarray:
    """Which catalog items the rules allow (before pinning and per-user exclusions)."""
    ok = np.ones(len(items), bool)
    inc = {c.lower() for c in rules.include_categories}
    exc = {c.lower() for c in rules.exclude_categories}
    blocked = set(rules.blocked)
    for j, it in enumerate(items):
        facts = item_facts(it)
        cat = (it.get("category") or "").lower()
        price = facts.current_price
        if (not _sellable(it, rules) or (inc and cat not in inc) or cat in exc
                or it.get("sku") in blocked
                or (rules.min_price is not None and (price is None or price < rules.min_price))
                or (rules.max_price is not None and (price is None or price > rules.max_price))
                or (rules.min_discount is not None
                    and facts.discount_pct < rules.min_discount)):
            ok[j] = False
    return ok


def pinned_positions(items: Sequence[Mapping[str, Any]], sku_pos: Mapping[str, int],
                     rules: RankRules) -> list[int]:
    """Catalog positions of the pinned skus that can be sold, in the order given."""
    out: list[int] = []
    blocked = set(rules.blocked)
    for sku in rules.pinned:
        j = sku_pos.get(sku)
        if j is None:
            raise PushgenError(f"pinned sku {sku!r} is not in the catalog")
        if _sellable(items[j], rules) and sku not in blocked and j not in out:
            out.append(j)
    return out


def finish_rows(items: np.ndarray, vals: np.ndarray, pinned: list[int],
                p_scores: np.ndarray | None, excluded_rows: list[set[int]],
                item_cat: np.ndarray, max_per_category: int | None, k: int,
                out_items: np.ndarray, out_scores: np.ndarray, out_pinned: np.ndarray) -> None:
    """Pinned skus first, then the per-category cap (greedy over the ranked candidates)."""
    cap = max_per_category or None
    for r in range(len(items)):
        excluded = excluded_rows[r]
        chosen: list[int] = []
        scores: list[float] = []
        per_cat: dict[int, int] = {}
        n_pinned = 0
        for pi, j in enumerate(pinned):
            if j in excluded or len(chosen) >= k:
                continue
            chosen.append(j)
            scores.append(float(p_scores[r, pi]))
            per_cat[item_cat[j]] = per_cat.get(item_cat[j], 0) + 1
            n_pinned += 1
        for j, s in zip(items[r].tolist(), vals[r].tolist()):
            if len(chosen) >= k or j < 0:
                break
            c = item_cat[j]
            if cap is not None and per_cat.get(c, 0) >= cap:
                continue
            per_cat[c] = per_cat.get(c, 0) + 1
            chosen.append(j)
            scores.append(s)
        out_items[r, :len(chosen)] = chosen
        out_scores[r, :len(chosen)] = scores
        out_pinned[r, :n_pinned] = True


class NoEligibleItems(PushgenError):
    """Ranking left every one of these users without an item (each bought all the allowed
    ones, say): for one batch of a campaign not an error while another batch has some."""


def no_items_message(campaign: str, rules: RankRules, repeat: str, n_items: int,
                     ranked: bool = False) -> str:
    active = [name for name, on in (
        ("--include-category", rules.include_categories),
        ("--exclude-category", rules.exclude_categories),
        ("--min-price", rules.min_price is not None), ("--max-price", rules.max_price is not None),
        ("--min-discount", rules.min_discount is not None), ("--block", rules.blocked),
        (f"bought items kept out (repeat = {repeat}; --repeat always to allow them)",
         ranked and repeat != "always")) if on]
    why = "no user has an eligible item left" if ranked else \
        f"the rules leave no eligible item of the {n_items} in the catalog"
    return (f"campaign {campaign!r}: {why} (inactive and out-of-stock items never count"
            f"{'; rules: ' + ', '.join(active) if active else ''}); nothing was written, "
            "existing recommendations are kept. Loosen the rules.")
