"""Why each item was chosen, in words a reviewer reads next to the draft.

Cheapest true statement first: a pinned sku; an item the customer buys again (with their
rhythm: "You usually buy this every ~2 weeks; last bought 20 days ago"); a past event in the
same category ("You bought X (skincare)"); popularity in the customer's segment or the shop;
then what the model used (their profile, or their history).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .events import PURCHASE, RATING
from .popularity import segment_label
from .repeat import buy_again_reason

if TYPE_CHECKING:
    from .rank import RankResult, Ranker, UserBatch

_KIND_STRENGTH = {PURCHASE: 4, "cart": 3, RATING: 2, "view": 1}


def _category_history(ranker: "Ranker", batch: "UserBatch") -> dict[tuple[int, int], tuple]:
    """(batch row, category) -> (strength, catalog position) of the user's strongest, then
    latest, positive event in that category."""
    log, cat = batch.log, ranker.catalog
    params = ranker.served.params
    if not len(log):
        return {}
    strength_of = np.array([_KIND_STRENGTH.get(k, 0) for k in log.kinds] + [0], np.int64)
    strength = strength_of[np.where(log.kind >= 0, log.kind, len(log.kinds))]
    rating = log.kind == log.code(RATING)
    strength = np.where(rating & (log.value < params.rating_threshold), 0, strength)
    pos = cat.item_positions(log.item)
    order = np.argsort(batch.ids, kind="stable")
    row = order[np.searchsorted(batch.ids, log.user, sorter=order)]
    ok = (strength > 0) & (pos >= 0)
    out: dict[tuple[int, int], tuple] = {}
    for r, j, s in zip(row[ok].tolist(), pos[ok].tolist(), strength[ok].tolist()):
        key = (r, int(cat.item_cat[j]))
        if key not in out or s >= out[key][0]:        # events are in time order
            out[key] = (s, j)
    return out


def _popular(ranker: "Ranker") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(standardised popularity per segment and item, the score of each segment's top-N-th
    item, which items a segment has counts for): fixed per ranker, computed once."""
    cached = ranker._popular
    if cached is None:
        cat, pop = ranker.catalog, ranker.served.popularity
        counts = ranker.pop_z                # standardised: only the order matters here
        n_items = len(cat.items)
        top_n = min(max(10, n_items // 10), max(n_items, 1))
        cut = (-np.sort(-counts, axis=1)[:, top_n - 1] if n_items
               else np.zeros(len(pop.segments)))
        cached = ranker._popular = (counts, cut,
                                    pop.aligned(pop.segment_counts, cat.item_ids) > 0)
    return cached


def explain(ranker: "Ranker", result: "RankResult") -> list[list[str]]:
    """Reasons for every recommended item of ``result`` (one list per user)."""
    cat, pop = ranker.catalog, ranker.served.popularity
    batch = result.batch if result.batch is not None else ranker.users(result.user_ids.tolist())
    hist = _category_history(ranker, batch)
    counts, cut, has_counts = _popular(ranker)
    personal = ranker.blend.weights_for(result.repeat).hybrid > 0
    bought: dict[tuple[int, int], int] = {}
    p = batch.purchases
    prow = np.full(len(p), -1, np.int64)
    if len(p):
        order = np.argsort(batch.ids, kind="stable")
        prow = order[np.searchsorted(batch.ids, p.user, sorter=order)]
    ppos = cat.item_positions(p.item)
    for idx, (r, j) in enumerate(zip(prow.tolist(), ppos.tolist())):
        if j >= 0 and not p.returned[idx]:
            bought[(r, j)] = idx
    cycles = ranker.served.cycles.of(p.item) if len(p) else np.empty(0)
    out: list[list[str]] = []
    for r in range(len(result.user_ids)):
        row: list[str] = []
        seg = int(batch.segment[r])
        label = segment_label(pop.segments[seg])
        for slot, j in enumerate(result.items[r].tolist()):
            if j < 0:
                break
            item = cat.items[j]
            category = item.get("category") or ""
            c = int(cat.item_cat[j])
            if result.pinned is not None and result.pinned[r, slot]:
                row.append("Featured by the shop")
            elif (r, j) in bought:
                i = bought[(r, j)]
                row.append(buy_again_reason(int(p.days[i]), float(p.own_cycle[i]),
                                            float(cycles[i]), cat.today - int(p.last_day[i])))
            elif category and (r, c) in hist:
                strength, pj = hist[(r, c)]
                title = cat.items[pj].get("title") or cat.items[pj].get("sku")
                row.append({4: f"You bought {title} ({category})",
                            3: f"You added {title} to your cart ({category})",
                            2: f"You rated {title} highly ({category})"}.get(
                                strength, f"Matches your interest in {category}"))
            elif seg > 0 and has_counts[seg, j] and counts[seg, j] >= cut[seg]:
                row.append(f"Popular with {label}")
            elif has_counts[0, j] and counts[0, j] >= cut[0]:
                row.append(f"Popular in {category}" if category else
                           "One of the shop's most popular items")
            elif result.sources[r] == "cold_features":
                row.append(f"Picked for your profile ({category})" if category else
                           "Picked for your profile")
            elif result.sources[r] == "segment_popularity" or not personal:
                row.append(f"Popular with {label}" if has_counts[seg, j] else
                           f"New in {category}" if category else "New in the shop")
            else:
                row.append(f"Picked for you from {category}" if category else
                           "Picked for you from what you bought and viewed")
        out.append(row)
    return out
