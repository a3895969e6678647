"""Batch ranking: many users at once through the served blend, rules applied, best first.

``load_ranker(db)`` brings the latest model back as a ``Ranker`` bound to the store's catalog;
``rank_campaign`` ranks an audience (or one batch of it) and writes the ``recommendations``
table; ``recommendations_for`` reads them back as ``ItemFacts`` for the drafting code.

A Ranker loads the model and the items once; each call then reads only the profiles and the
events of the users it ranks, so ranking a small batch stays cheap however big the shop is,
and one Ranker can serve every batch of a campaign (``rank_campaign(..., ranker=r)``).

Scores never come from LightFM's ``predict``: user and item representations, one blocked
matrix multiply with the blend's item-only terms (item bias, popularity, and segment
popularity through one-hot user columns) folded into extra inner dimensions, the buy-again
term and exclusions scattered into the block, then an exact top-k (``topk.py``).
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import scipy.sparse as sp
from sqlite_utils import Database

from ..errors import PushgenError
from ..messages import ItemFacts
from ..store import ranking as store
from .events import EventLog
from .explain import explain
from .model_store import load_served
from .repeat import Purchases, buy_again_strength, not_due, purchases
from .rules import RankRules, check_repeat, check_rules, finish_rows, item_facts, item_mask, \
    NoEligibleItems, no_items_message, pinned_positions
from .topk import INVALID, group_count, padded_width, topk_rows
from .training import ServedModel, load_log

try:  # optional: caps BLAS threads while ranking workers each run their own GEMM
    from threadpoolctl import threadpool_limits as _threadpool_limits
except ImportError:  # pragma: no cover
    _threadpool_limits = None

SOURCES = ("model", "cold_features", "segment_popularity")
BLOCK_USERS = 1024


# -- the catalog as seen at ranking time -----------------------------------------------------------
class Catalog:
    """The items (all of them, loaded once) and access to the profiles and events of the users
    being ranked; ``today`` is the day of the newest event (the data's "now")."""

    def __init__(self, items: Sequence[Mapping[str, Any]],
                 user_rows: Callable[[Sequence[int]], list[Mapping[str, Any]]],
                 events: Callable[[Sequence[int]], EventLog], today: int) -> None:
        self.items = sorted(items, key=lambda r: int(r["id"]))
        self.item_ids = np.array([int(it["id"]) for it in self.items], np.int64)
        self.item_sku_pos = {str(it.get("sku")): j for j, it in enumerate(self.items)}
        cats = [it.get("category") or "" for it in self.items]
        self.categories = sorted(set(cats))
        code = {c: j for j, c in enumerate(self.categories)}
        self.item_cat = np.array([code[c] for c in cats], np.int64)
        self._user_rows, self._events, self.today = user_rows, events, int(today)

    def item_positions(self, item_ids: np.ndarray) -> np.ndarray:
        """Catalog positions of ``item_ids`` (-1 for ids not in the catalog)."""
        item_ids = np.asarray(item_ids, np.int64)
        if not len(self.item_ids):
            return np.full(len(item_ids), -1, np.int64)
        pos = np.clip(np.searchsorted(self.item_ids, item_ids), 0, len(self.item_ids) - 1)
        return np.where(self.item_ids[pos] == item_ids, pos, -1)

    def user_rows(self, user_ids: Sequence[int]) -> list[Mapping[str, Any]]:
        """Profile rows in the order of ``user_ids``; an unknown id is a PushgenError."""
        rows = {int(r["id"]): r for r in self._user_rows(user_ids)}
        try:
            return [rows[int(u)] for u in user_ids]
        except KeyError as exc:
            raise PushgenError(f"user id {exc.args[0]} is not in the database") from None

    def events(self, user_ids: Sequence[int]) -> EventLog:
        return self._events(user_ids)

    @classmethod
    def from_store(cls, db: Database) -> "Catalog":
        today = store.latest_event_ts(db)
        return cls(store.item_rows(db), lambda ids: store.user_rows(db, list(ids)),
                   lambda ids: load_log(db, list(ids)), (today or 0) // 86_400)

    @classmethod
    def in_memory(cls, users: Sequence[Mapping[str, Any]], items: Sequence[Mapping[str, Any]],
                  log: EventLog | None = None, today: int | None = None) -> "Catalog":
        log = log if log is not None else EventLog.empty()
        by_id = {int(u["id"]): u for u in users}
        by_user = np.argsort(log.user, kind="stable")      # time order kept within a user
        sorted_users = log.user[by_user]

        def events(ids: Sequence[int]) -> EventLog:
            wanted = np.unique(np.asarray(list(ids), np.int64))
            lo = np.searchsorted(sorted_users, wanted, "left")
            hi = np.searchsorted(sorted_users, wanted, "right")
            take = np.concatenate([by_user[a:b] for a, b in zip(lo, hi) if b > a] or
                                  [np.empty(0, np.int64)])
            return log.subset(np.sort(take))

        day = today if today is not None else (int(log.day.max()) if len(log) else 0)
        return cls(items, lambda ids: [by_id[int(u)] for u in ids if int(u) in by_id], events,
                   day)


@dataclass
class RankResult:
    """Top-k lists of many users: ``items`` are positions in ``catalog.items`` (-1 = none)."""

    user_ids: np.ndarray
    items: np.ndarray
    scores: np.ndarray
    sources: np.ndarray           # one of SOURCES per user
    pinned: np.ndarray | None = None   # bool (users, k): slot filled by a pinned sku
    repeat: str = "never"
    batch: "UserBatch | None" = None   # what the reasons are written from


@dataclass
class RankSummary:
    campaign: str
    campaign_id: int
    model_id: int | None
    users: int
    rows: int
    by_source: dict[str, int]
    no_items: int
    seconds: float
    repeat: str = "never"
    note: str = ""               # the model's plain line when popularity ranks as well
    # with ``rank_campaign(keep=True)``: what was stored, per user, as recommendations_for
    # would read it back (best first, score and reason filled)
    lists: dict[int, list[ItemFacts]] | None = None


@dataclass
class UserBatch:
    """The users of one ranking call, as the ranker needs them."""

    ids: np.ndarray               # store ids, in request order
    rows: list[Mapping[str, Any]]
    user_emb: np.ndarray          # (users, dim)
    sources: np.ndarray           # per user, one of SOURCES
    segment: np.ndarray           # row of the popularity table
    log: EventLog                 # their events
    purchases: Purchases
    p_row: np.ndarray             # purchases as (batch row, catalog position)
    p_col: np.ndarray
    strength: np.ndarray          # buy-again strength of each purchase
    wait: np.ndarray              # bool: bought and not due (or returned)


def _blas_threads(n: int):
    return _threadpool_limits(limits=n, user_api="blas") if _threadpool_limits else nullcontext()


def _sparse_rows(n_rows: int, rows: np.ndarray, cols: np.ndarray, values: np.ndarray | None,
                 n_cols: int) -> sp.csr_matrix:
    v = np.ones(len(rows), np.float32) if values is None else values.astype(np.float32)
    m = sp.csr_matrix((v, (rows, cols)), shape=(n_rows, n_cols))
    m.sum_duplicates()
    return m


# -- the ranker ------------------------------------------------------------------------------------
class Ranker:
    """A served model bound to a catalog; ``rank`` scores many users at once."""

    def __init__(self, served: ServedModel, catalog: Catalog, *, model_id: int | None = None
                 ) -> None:
        self.served, self.catalog, self.model_id = served, catalog, model_id
        self.model, self.space, self.blend = served.model, served.space, served.blend
        self.pop_z = served.popularity.z_segments(catalog.item_ids)      # (segments, items)
        self._item_repr: tuple[np.ndarray, np.ndarray] | None = None
        # The last rules' allowed items and pinned positions, and the (rules, k) already
        # checked against the store: the same for every batch of a campaign.
        self._allowed: tuple[str, np.ndarray, list[int]] | None = None
        self._checked: set[tuple[str, int]] = set()
        self._popular: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # explain's
        self._facts: dict[int, ItemFacts] = {}   # catalog position -> facts, score 0
        # Parallel ranking workers (needs threadpoolctl to pin BLAS to one thread each).
        self.workers = min(2, os.cpu_count() or 1) if _threadpool_limits else 1

    @property
    def note(self) -> str:
        return self.blend.note

    def repeat_mode(self, rules: RankRules | None) -> str:
        mode = rules.repeat if rules is not None and rules.repeat is not None \
            else self.blend.repeat_default
        check_repeat(mode)
        return mode

    def facts(self, j: int, score: float, reason: str) -> ItemFacts:
        """The facts of catalog item ``j`` with a user's score and reason; the strings and
        attributes are shared by every user (read-only)."""
        b = self._facts.get(j)
        if b is None:
            b = self._facts[j] = item_facts(self.catalog.items[j])
        return b.scored(score, reason)

    def allowed(self, rules: RankRules) -> tuple[np.ndarray, list[int]]:
        """(mask of the catalog items ``rules`` allow, positions of its pinned items), cached
        for the last rules; the mask is a copy the caller may change."""
        key = repr(rules)
        if self._allowed is None or self._allowed[0] != key:
            cat = self.catalog
            self._allowed = (key, item_mask(cat.items, rules),
                             pinned_positions(cat.items, cat.item_sku_pos, rules))
        return self._allowed[1].copy(), list(self._allowed[2])

    def item_representations(self) -> tuple[np.ndarray, np.ndarray]:
        """(biases, embeddings) of the catalog's items (new items from catalog features)."""
        if self._item_repr is None:
            feats = self.space.item_matrix(self.catalog.items)
            b, e = self.model.get_item_representations(feats)
            self._item_repr = (np.ascontiguousarray(b, np.float32),
                               np.ascontiguousarray(e, np.float32))
        return self._item_repr

    def users(self, user_ids: Sequence[int]) -> UserBatch:
        """Profiles, representations, segments and purchases of ``user_ids``."""
        ids = np.asarray([int(u) for u in user_ids], np.int64)
        rows = self.catalog.user_rows(ids.tolist())
        feats = self.space.user_matrix(rows)
        _, emb = self.model.get_user_representations(feats)
        known = self.space.user_index.positions([int(r["id"]) for r in rows]) >= 0
        has_meta = np.diff(feats.indptr) > 0
        sources = np.where(known, "model", np.where(has_meta, "cold_features",
                                                    "segment_popularity"))
        log = self.catalog.events(ids.tolist()) if len(ids) else EventLog.empty()
        p = purchases(log)
        order = np.argsort(ids, kind="stable")
        r = order[np.clip(np.searchsorted(ids, p.user, sorter=order), 0, max(len(ids) - 1, 0))] \
            if len(p) else np.empty(0, np.int64)
        c = self.catalog.item_positions(p.item)
        ok = c >= 0
        strength = buy_again_strength(p).astype(np.float32)
        wait = not_due(p, self.served.cycles, self.catalog.today)
        return UserBatch(ids, rows, np.asarray(emb, np.float32), np.asarray(sources, str),
                         self.served.popularity.segment_of(rows), log, p, r[ok], c[ok],
                         strength[ok], wait[ok])

    # -- scoring -------------------------------------------------------------------------------
    def _plan(self, cand: np.ndarray, width: int, repeat: str) -> dict[str, Any]:
        """The item side of the GEMM for candidate columns ``cand`` (padded to ``width``)."""
        w = self.blend.weights_for(repeat)
        bias, emb = self.item_representations()
        a = np.float32(w.hybrid / self.blend.hybrid_scale)
        segmented = bool(w.popularity) and w.pop_kind == "segment" and self.pop_z.shape[0] > 1
        dim = emb.shape[1] if w.hybrid else 0
        n_seg = self.pop_z.shape[0] if segmented else 0
        # The item-only terms ride in the GEMM as extra inner dimensions (users get a 1, or
        # their segment's one-hot, there), padded to a multiple of 8: an odd inner size or a
        # separate pass over the score block both measured slower in OpenBLAS on 2 cores.
        inner = -(-(dim + 1 + n_seg) // 8) * 8
        item_all = np.zeros((inner, len(self.catalog.items)), np.float32)
        if dim:
            item_all[:dim] = a * emb.T
        item_all[dim] = a * bias
        if w.popularity and not segmented:
            item_all[dim] += np.float32(w.popularity) * self.pop_z[0]
        if segmented:
            item_all[dim + 1:dim + 1 + n_seg] = np.float32(w.popularity) * self.pop_z
        item_t = np.zeros((inner, width), np.float32)
        item_t[:, :len(cand)] = item_all[:, cand]
        item_t[dim, len(cand):] = INVALID                # padding columns never win
        col_of = np.full(len(self.catalog.items), -1, np.int64)
        col_of[cand] = np.arange(len(cand))
        pop_cols = np.full((self.pop_z.shape[0], width), INVALID, np.float32)
        pop_cols[:, :len(cand)] = self.pop_z[:, cand]
        return {"w": w, "dim": dim, "n_seg": n_seg, "inner": inner, "item_t": item_t,
                "item_all": item_all, "col_of": col_of, "pop_cols": pop_cols, "width": width,
                "repeat": repeat}

    def _user_side(self, plan: dict[str, Any], batch: UserBatch, start: int, stop: int,
                   out: np.ndarray | None = None) -> np.ndarray:
        dim, n = plan["dim"], stop - start
        aug = out if out is not None else np.zeros((n, plan["inner"]), np.float32)
        if out is not None:
            aug[:, dim + 1:] = 0.0
        if dim:
            aug[:, :dim] = batch.user_emb[start:stop]
        aug[:, dim] = 1.0
        if plan["n_seg"]:
            aug[np.arange(n), dim + 1 + batch.segment[start:stop]] = 1.0
        return aug

    def _fill(self, plan: dict[str, Any], batch: UserBatch, start: int, stop: int,
              scores: np.ndarray, extra: sp.csr_matrix | None) -> None:
        """Blend scores of users ``start:stop`` in place: popularity rows for users the
        model cannot score, the buy-again term, and the repeat mode's exclusions."""
        pop_rows = np.flatnonzero(batch.sources[start:stop] == "segment_popularity")
        if len(pop_rows):
            scores[pop_rows] = plan["pop_cols"][batch.segment[start:stop][pop_rows]]
        sel = (batch.p_row >= start) & (batch.p_row < stop)
        rr, cc = batch.p_row[sel] - start, plan["col_of"][batch.p_col[sel]]
        keep = cc >= 0
        w, repeat = plan["w"], plan["repeat"]
        if w.buy_again and keep.any():    # one purchase row per (user, item): no duplicates
            scores[rr[keep], cc[keep]] += np.float32(w.buy_again) * batch.strength[sel][keep]
        if repeat != "always":
            out = keep if repeat == "never" else keep & batch.wait[sel]
            scores[rr[out], cc[out]] = INVALID
        if extra is not None and extra.nnz:
            sub = extra[start:stop]
            r2 = np.repeat(np.arange(stop - start), np.diff(sub.indptr))
            c2 = plan["col_of"][sub.indices]
            ok = c2 >= 0
            scores[r2[ok], c2[ok]] = INVALID

    def score_rows(self, user_ids: Sequence[int], repeat: str | None = None) -> np.ndarray:
        """Dense served scores (users x catalog items), no business rules; items the repeat
        mode keeps out score ``INVALID``. For evaluation."""
        mode = repeat or self.blend.repeat_default
        batch = self.users(user_ids)
        cand = np.arange(len(self.catalog.items))
        plan = self._plan(cand, len(cand), mode)
        scores = self._user_side(plan, batch, 0, len(batch.ids)) @ plan["item_t"]
        self._fill(plan, batch, 0, len(batch.ids), scores, None)
        return scores

    def rank(self, user_ids: Sequence[int], k: int = 5, rules: RankRules | None = None,
             exclude: Mapping[int, Iterable[int]] | sp.spmatrix | None = None,
             progress: Callable[[int], None] | None = None,
             block_size: int = BLOCK_USERS) -> RankResult:
        """Top-``k`` items for every user, rules applied, best first.

        ``exclude`` maps a user id to item ids never to show that user (or is a sparse matrix:
        one row per user of ``user_ids``, columns = catalog item positions). Users the model
        knows are scored by the blend ('model'); new users with known profile features from
        those ('cold_features'); the rest by popularity in their segment
        ('segment_popularity'). Scores are computed in blocks of ``block_size`` users.
        """
        rules = rules or RankRules()
        repeat = self.repeat_mode(rules)
        cat = self.catalog
        batch = self.users(user_ids)
        n_users = len(batch.ids)
        mask, pinned = self.allowed(rules)
        mask[pinned] = False
        cand = np.flatnonzero(mask)                     # column -> item position
        k = max(min(k, len(cand) + len(pinned)), 1)     # no wider than what can be shown
        diversity = rules.max_per_category is not None and rules.max_per_category > 0
        k_cand = min(len(cand), k * 5 if diversity else k)
        width = padded_width(len(cand), k_cand)
        groups = group_count(len(cand), k_cand)
        plan = self._plan(cand, width, repeat)
        pinned_t = plan["item_all"][:, pinned]
        extra = self._explicit(batch, exclude)
        out_items = np.full((n_users, k), -1, np.int64)
        out_scores = np.zeros((n_users, k), np.float32)
        out_pinned = np.zeros((n_users, k), bool)
        local = threading.local()

        def run_block(start: int) -> int:
            stop = min(start + block_size, n_users)
            n = stop - start
            if not hasattr(local, "buf"):   # per-thread buffers, reused block after block
                local.buf = np.empty((min(block_size, n_users), width), np.float32)
                local.aug = np.zeros((min(block_size, n_users), plan["inner"]), np.float32)
            scores = local.buf[:n]
            aug = self._user_side(plan, batch, start, stop, local.aug[:n])
            np.matmul(aug, plan["item_t"], out=scores)
            self._fill(plan, batch, start, stop, scores, extra)
            top, vals = topk_rows(scores, k_cand, groups)
            items = np.where(top >= 0, cand[np.maximum(top, 0)], -1)
            if pinned or diversity:
                p_scores = aug @ pinned_t if pinned else None
                pop_rows = np.flatnonzero(batch.sources[start:stop] == "segment_popularity")
                if pinned and len(pop_rows):
                    p_scores[pop_rows] = self.pop_z[batch.segment[start:stop][pop_rows]][
                        :, pinned]
                excluded = self._excluded_sets(plan, batch, start, stop, extra)
                finish_rows(items, vals, pinned, p_scores, excluded, cat.item_cat,
                            rules.max_per_category, k, out_items[start:stop],
                            out_scores[start:stop], out_pinned[start:stop])
            else:
                m = min(k, items.shape[1])   # fewer candidates than k: the rest stays empty
                out_items[start:stop, :m] = items[:, :m]
                out_scores[start:stop, :m] = vals[:, :m]
            return n

        starts = range(0, n_users, block_size)
        if self.workers > 1 and len(starts) > 1:
            # Each worker runs its own single-threaded GEMM and top-k on its own block: on 2
            # cores this beats one 2-thread GEMM followed by a 1-thread top-k (measured).
            with _blas_threads(1), ThreadPoolExecutor(self.workers) as pool:
                for done in pool.map(run_block, starts):
                    if progress:
                        progress(done)
        else:
            for start in starts:
                done = run_block(start)
                if progress:
                    progress(done)
        return RankResult(batch.ids, out_items, out_scores, batch.sources, out_pinned, repeat,
                          batch)

    def _explicit(self, batch: UserBatch, exclude: Any) -> sp.csr_matrix | None:
        n_items = len(self.catalog.items)
        if exclude is None:
            return None
        if sp.issparse(exclude):
            if exclude.shape != (len(batch.ids), n_items):
                raise PushgenError(f"exclude matrix has shape {exclude.shape}, expected "
                                   f"{(len(batch.ids), n_items)}")
            return sp.csr_matrix(exclude, dtype=np.float32)
        pos = {int(u): r for r, u in enumerate(batch.ids.tolist())}
        rows, cols = [], []
        for uid, item_ids in exclude.items():
            r = pos.get(int(uid))
            if r is None:
                continue
            for c in self.catalog.item_positions(np.fromiter(item_ids, np.int64)).tolist():
                if c >= 0:
                    rows.append(r)
                    cols.append(c)
        return _sparse_rows(len(batch.ids), np.array(rows, np.int64), np.array(cols, np.int64),
                            None, n_items)

    def _excluded_sets(self, plan: dict[str, Any], batch: UserBatch, start: int, stop: int,
                       extra: sp.csr_matrix | None) -> list[set[int]]:
        """Catalog positions kept out for each user of the block (for pinned skus)."""
        out: list[set[int]] = [set() for _ in range(stop - start)]
        repeat = plan["repeat"]
        if repeat != "always":
            sel = (batch.p_row >= start) & (batch.p_row < stop)
            if repeat == "due":
                sel &= batch.wait
            for r, c in zip((batch.p_row[sel] - start).tolist(), batch.p_col[sel].tolist()):
                out[r].add(c)
        if extra is not None and extra.nnz:
            sub = extra[start:stop]
            for r in range(stop - start):
                out[r].update(sub.indices[sub.indptr[r]:sub.indptr[r + 1]].tolist())
        return out

    def reasons(self, result: RankResult) -> list[list[str]]:
        """A short human-readable reason for every recommended item of ``result``."""
        return explain(self, result)


def load_ranker(db: Database, model_id: int | None = None) -> Ranker:
    """The model ``model_id`` (latest if None) as a Ranker bound to the store's catalog."""
    served, rec = load_served(db, model_id)
    return Ranker(served, Catalog.from_store(db), model_id=rec.id)


# -- campaigns -----------------------------------------------------------------------------------
def rank_campaign(db: Database, campaign: str, *, k: int = 5, rules: RankRules | None = None,
                  user_ids: Sequence[int] | None = None, model_id: int | None = None,
                  progress: Callable[[int], None] | None = None,
                  batch_users: int = 20_000, ranker: Ranker | None = None,
                  keep: bool = False) -> RankSummary:
    """Rank ``user_ids`` (default: every user) for ``campaign`` and store the lists.

    Rows of those users are replaced batch by batch, so a rerun (or a resumed run) never
    duplicates. Pass a ``ranker`` (``load_ranker(db)``) to rank many batches of a campaign
    without loading the model each time. ``keep``: the summary also holds the stored lists
    (``RankSummary.lists``), so a caller drafting them need not read them back. If the
    rules leave no item for any user, raises a PushgenError and leaves the campaign's
    stored recommendations untouched.
    """
    if not campaign.strip():
        raise PushgenError("a campaign needs a name (--campaign NAME)")
    started = time.perf_counter()
    rules = rules or RankRules()
    ranker = ranker or load_ranker(db, model_id)
    if (repr(rules), k) not in ranker._checked:       # once per campaign run, not per batch
        check_rules(db, rules, k)
        ranker._checked.add((repr(rules), k))
    repeat = ranker.repeat_mode(rules)
    ids = list(user_ids) if user_ids is not None else store.user_ids_all(db)
    cat = ranker.catalog
    mask, pinned = ranker.allowed(rules)
    if ids and not mask.any() and not pinned:
        raise PushgenError(no_items_message(campaign, rules, repeat, len(cat.items)))
    by_source = {s: 0 for s in SOURCES}
    rows_written = no_items = 0
    cid: int | None = None
    held: list[int] = []     # users of leading batches without any row: written only later
    lists: dict[int, list[ItemFacts]] | None = {} if keep else None
    for start in range(0, len(ids), batch_users):
        batch = ids[start:start + batch_users]
        res = ranker.rank(batch, k, rules, progress=progress)
        reasons = ranker.reasons(res)
        rows = []
        for r, uid in enumerate(res.user_ids.tolist()):
            src = str(res.sources[r])
            n = 0
            for slot, j in enumerate(res.items[r].tolist()):
                if j < 0:
                    break
                score, reason = float(res.scores[r, slot]), reasons[r][slot]
                rows.append((uid, slot + 1, int(cat.items[j]["id"]), score, reason, src,
                             ranker.model_id))
                if lists is not None:
                    lists.setdefault(uid, []).append(ranker.facts(j, score, reason))
                n += 1
            if n:
                by_source[src] += 1
            else:
                no_items += 1
        if cid is None and not rows:
            held.extend(batch)
            continue
        if cid is None:
            cid = store.get_or_create_campaign(db, campaign, model_id=ranker.model_id)
            batch, held = held + list(batch), []
        rows_written += store.replace_recommendations(db, cid, batch, rows)
    if cid is None:
        if ids:
            raise NoEligibleItems(no_items_message(campaign, rules, repeat, len(cat.items),
                                                  ranked=True))
        cid = store.get_or_create_campaign(db, campaign, model_id=ranker.model_id)
    return RankSummary(campaign, cid, ranker.model_id, len(ids), rows_written,
                       {s: n for s, n in by_source.items() if n}, no_items,
                       round(time.perf_counter() - started, 2), repeat, ranker.note, lists)


def recommend(ranker: Ranker, user_ids: Sequence[int], k: int = 5,
              rules: RankRules | None = None) -> dict[int, list[ItemFacts]]:
    """Rank ``user_ids`` in memory (nothing is stored): best first, with score and reason,
    e.g. to preview a template for one customer."""
    res = ranker.rank(user_ids, k, rules or RankRules())
    reasons = ranker.reasons(res)
    out: dict[int, list[ItemFacts]] = {}
    for r, uid in enumerate(res.user_ids.tolist()):
        out[uid] = [ranker.facts(j, float(res.scores[r, slot]), reasons[r][slot])
                    for slot, j in enumerate(res.items[r].tolist()) if j >= 0]
    return out


def recommendations_for(db: Database, campaign_id: int,
                        user_ids: Sequence[int]) -> dict[int, list[ItemFacts]]:
    """Stored recommendations per user (best first) with score and reason filled.

    An item's facts are read once per call and shared by every customer it is recommended
    to (the same strings, the same attributes dict: read-only), as are equal reasons: less
    work here, and a batch of contexts pickles each description once."""
    out: dict[int, list[ItemFacts]] = {}
    bases: dict[int, ItemFacts] = {}
    reasons: dict[str, str] = {}
    for row in store.recommendation_rows(db, campaign_id, user_ids):
        b = bases.get(row["item_id"])
        if b is None:
            b = bases[row["item_id"]] = item_facts(row)
        reason = reasons.setdefault(row["reason"], row["reason"])
        out.setdefault(row["user_id"], []).append(b.scored(float(row["score"]), reason))
    return out
