"""The LightFM hybrid ranker: train, save/load, batch top-k with business rules, reasons.

``train(db, TrainParams())`` fits a model on the store's events and saves a versioned artifact
next to the database; ``load_model(db)`` brings it back as a ``Ranker``; ``rank_campaign(db,
name)`` ranks an audience and writes the ``recommendations`` table; ``recommendations_for``
reads them back as ``ItemFacts`` for the drafting code.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import scipy.sparse as sp
from lightfm import LightFM
from sqlite_utils import Database

from .errors import PushgenError
from .features import USER_COLUMN_FIELDS, DEFAULT_USER_FIELDS, FeatureConfig, FeatureSpace, fit_feature_space
from .messages import ItemFacts
from .store import db_folder, loads
from .store import ranking as store
from .topk import INVALID, padded_width, group_count, topk_rows

try:  # optional: caps BLAS threads while ranking workers each run their own GEMM
    from threadpoolctl import threadpool_limits as _threadpool_limits
except ImportError:  # pragma: no cover
    _threadpool_limits = None

ARTIFACT_VERSION = "pushgen-lightfm-1"
MODELS_FOLDER = "pushgen-models"
DEFAULT_EVENT_WEIGHTS: dict[str, float] = {"purchase": 5.0, "cart": 3.0, "view": 1.0,
                                           "rating": 1.0}
SEGMENT_FIELDS: tuple[str, ...] = ("age_band", "gender")
LOSSES = ("warp", "bpr", "logistic", "warp-kos")
SOURCES = ("model", "cold_features", "segment_popularity")
BLOCK_USERS = 1024

EpochProgress = Callable[[int, int, dict[str, float]], None]


# -- records -------------------------------------------------------------------------------------
@dataclass
class TrainParams:
    """Everything that decides a model; stored with it in ``models.params``."""

    loss: str = "warp"
    components: int = 32
    epochs: int = 20
    learning_rate: float = 0.05
    learning_schedule: str = "adagrad"
    item_alpha: float = 1e-6
    user_alpha: float = 1e-6
    max_sampled: int = 30
    threads: int = 2
    seed: int = 42
    event_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    rating_threshold: float = 4.0         # rating events count when value >= this
    half_life_days: float | None = None  # exponential time decay of event weights
    user_features: tuple[str, ...] = ()  # extra user attributes on top of the defaults
    meta_weight: float | None = 0.25     # see features.py: total weight of metadata per row
    cold_meta_weight: float | None = 0.25  # None: every feature weighs 1
    normalize_rows: bool = False
    title_tokens: bool = False
    validation: float = 0.0              # fraction of interactions held out for validation
    early_stopping: bool = False
    eval_every: int = 5
    patience: int = 2
    eval_k: int = 10

    def feature_config(self) -> FeatureConfig:
        fields = tuple(dict.fromkeys(DEFAULT_USER_FIELDS + tuple(self.user_features)))
        return FeatureConfig(user_fields=fields, meta_weight=self.meta_weight,
                             cold_meta_weight=self.cold_meta_weight,
                             normalize_rows=self.normalize_rows,
                             title_tokens=self.title_tokens)

    def validate(self) -> None:
        """Raise a one-line PushgenError for an impossible setting (before any work starts)."""
        if self.loss not in LOSSES:
            raise PushgenError(f"unknown loss {self.loss!r}: use {', '.join(LOSSES)}")
        for name, value in (("--epochs", self.epochs), ("--components", self.components),
                            ("--threads", self.threads)):
            if not isinstance(value, int) or value < 1:
                raise PushgenError(f"{name} must be at least 1 (got {value})")
        if not math.isfinite(self.learning_rate) or self.learning_rate <= 0:
            raise PushgenError(f"--lr must be greater than 0, e.g. 0.05 (got {self.learning_rate})")
        for name, value in (("--item-alpha", self.item_alpha), ("--user-alpha", self.user_alpha)):
            if not math.isfinite(value) or value < 0:
                raise PushgenError(f"{name} must be 0 or more (got {value})")
        if self.half_life_days is not None and (not math.isfinite(self.half_life_days)
                                                or self.half_life_days <= 0):
            raise PushgenError(f"--half-life must be a number of days greater than 0 "
                      f"(got {self.half_life_days})")
        for name, value in (("--meta-weight", self.meta_weight),
                            ("cold meta weight", self.cold_meta_weight)):
            if value is not None and (not math.isfinite(value) or value < 0):
                raise PushgenError(f"{name} must be 0 or more, e.g. 0.25 (got {value})")
        if not 0 <= self.validation < 1:
            raise PushgenError("--validation must be a fraction between 0 and 1, e.g. 0.1")
        if self.eval_every < 1 or self.patience < 1 or self.eval_k < 1 or self.max_sampled < 1:
            raise PushgenError("eval_every, patience, eval_k and max_sampled must be at least 1")
        for kind, weight in self.event_weights.items():
            if not str(kind).strip():
                raise PushgenError("--event-weight: the event kind is empty, e.g. purchase=5")
            if not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
                raise PushgenError(f"--event-weight {kind}={weight}: the weight must be 0 or more")
        if not any(w > 0 for w in self.event_weights.values()):
            raise PushgenError("--event-weight: every weight is 0, so no event would count")
        for f in self.user_features:
            if not str(f).strip():
                raise PushgenError("--user-feature: the attribute name is empty, e.g. region")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["user_features"] = list(self.user_features)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainParams":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "user_features" in known:
            known["user_features"] = tuple(known["user_features"])
        return cls(**known)


@dataclass
class ModelRecord:
    """A row of ``models`` plus the artifact's absolute path."""

    id: int
    path: Path
    version: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    n_users: int
    n_items: int
    created_at: str = ""


@dataclass
class RankRules:
    """Business rules applied while ranking (keyword arguments of a campaign's [rank])."""

    drop_purchased: bool = True
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


@dataclass
class RankResult:
    """Top-k lists of many users: ``items`` are positions in ``catalog.items`` (-1 = none)."""

    user_ids: np.ndarray
    items: np.ndarray
    scores: np.ndarray
    sources: np.ndarray           # one of SOURCES per user
    pinned: np.ndarray | None = None   # bool (users, k): slot filled by a pinned sku


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


# -- interactions --------------------------------------------------------------------------------
def _parse_ts(ts: str) -> float:
    d = _dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    if d.tzinfo is None:
        d = d.replace(tzinfo=_dt.timezone.utc)
    return d.timestamp()


def interaction_weights(events: Sequence[tuple], params: TrainParams
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Events ``(user_id, item_id, kind, value, ts)`` -> summed implicit-feedback weights.

    Each event weighs ``event_weights[kind]`` (unknown kinds 0); ratings only when
    ``value >= rating_threshold``; with ``half_life_days`` older events count less.
    Returns unique ``(user_ids, item_ids, weights)`` with weight > 0.
    """
    if not events:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    users = np.fromiter((e[0] for e in events), np.int64, len(events))
    items = np.fromiter((e[1] for e in events), np.int64, len(events))
    kw = params.event_weights
    w = np.fromiter(
        (0.0 if (e[2] == "rating" and float(e[3]) < params.rating_threshold)
         else float(kw.get(e[2], 0.0)) for e in events), np.float64, len(events))
    if params.half_life_days:
        ts = np.fromiter((_parse_ts(e[4]) for e in events), np.float64, len(events))
        age_days = (ts.max() - ts) / 86400.0
        w = w * np.power(0.5, age_days / params.half_life_days)
    keep = w > 0
    users, items, w = users[keep], items[keep], w[keep]
    key = np.stack([users, items], axis=1)
    uniq, inv = np.unique(key, axis=0, return_inverse=True)
    sums = np.bincount(inv.ravel(), weights=w)
    return uniq[:, 0], uniq[:, 1], sums.astype(np.float32)


# -- the catalog as seen at ranking time ---------------------------------------------------------
class Catalog:
    """Current users, items and events, indexed for ranking, rules and reasons."""

    def __init__(self, users: Sequence[Mapping[str, Any]], items: Sequence[Mapping[str, Any]],
                 events: Sequence[tuple], event_weights: Mapping[str, float] | None = None,
                 rating_threshold: float = 4.0) -> None:
        self.users, self.items = list(users), list(items)
        self.user_pos = {int(u["id"]): i for i, u in enumerate(self.users)}
        self.item_pos = {int(it["id"]): i for i, it in enumerate(self.items)}
        self.item_sku_pos = {str(it.get("sku")): i for i, it in enumerate(self.items)}
        n_u, n_i = len(self.users), len(self.items)
        cats = [it.get("category") or "" for it in self.items]
        self.categories = sorted(set(cats))
        cat_code = {c: j for j, c in enumerate(self.categories)}
        self.item_cat = np.array([cat_code[c] for c in cats], np.int64)
        self.segment_of_user, self.segment_labels = self._segments()
        ev = [(self.user_pos.get(e[0]), self.item_pos.get(e[1]), e[2], e[3], e[4])
              for e in events]
        ev = [e for e in ev if e[0] is not None and e[1] is not None]
        self.ev_user = np.fromiter((e[0] for e in ev), np.int64, len(ev))
        self.ev_item = np.fromiter((e[1] for e in ev), np.int64, len(ev))
        kinds = [e[2] for e in ev]
        positive = [not (e[2] == "rating" and float(e[3]) < rating_threshold) for e in ev]
        kind_rank = {"purchase": 4, "cart": 3, "rating": 2, "view": 1}
        self.ev_rank = np.array([kind_rank.get(k, 0) if p else 0
                                 for k, p in zip(kinds, positive)], np.int64)
        weights = dict(event_weights or DEFAULT_EVENT_WEIGHTS)
        ev_w = np.array([weights.get(k, 0.0) if p else 0.0 for k, p in zip(kinds, positive)])
        bought = self.ev_rank == 4
        self.purchased = sp.csr_matrix(
            (np.ones(int(bought.sum()), np.int8), (self.ev_user[bought], self.ev_item[bought])),
            shape=(n_u, n_i))
        self.purchased.sum_duplicates()
        # Popularity: overall and per segment (weighted event counts).
        self.global_pop = np.bincount(self.ev_item, weights=ev_w, minlength=n_i)
        n_seg = len(self.segment_labels)
        seg_pop = np.zeros((n_seg, n_i))
        if len(ev):
            np.add.at(seg_pop, (self.segment_of_user[self.ev_user], self.ev_item), ev_w)
        self.segment_pop = seg_pop
        self._history: dict[int, tuple[int, int]] | None = None

    def _segments(self) -> tuple[np.ndarray, list[str]]:
        keys: dict[tuple, int] = {(): 0}
        labels = ["shoppers like you"]
        seg = np.zeros(len(self.users), np.int64)
        for i, u in enumerate(self.users):
            attrs = u.get("attributes") or {}
            key = tuple(str(attrs.get(f)) for f in SEGMENT_FIELDS if attrs.get(f) not in (None, ""))
            if len(key) < len(SEGMENT_FIELDS):
                continue   # incomplete profile: the whole shop is the segment
            if key not in keys:
                keys[key] = len(labels)
                labels.append(segment_label(attrs))
            seg[i] = keys[key]
        return seg, labels

    @classmethod
    def from_store(cls, db: Database, params: TrainParams | None = None) -> "Catalog":
        p = params or TrainParams()
        return cls(store.user_rows(db), store.item_rows(db), store.event_rows(db),
                   p.event_weights, p.rating_threshold)

    def history(self) -> dict[int, tuple[int, int]]:
        """``user_pos * n_categories + category`` -> (strongest kind rank, item position).

        The strongest (then latest) positive event of each user in each category; used for
        "You bought X" reasons. Built once, vectorised.
        """
        if self._history is None:
            n_c = max(len(self.categories), 1)
            key = self.ev_user * n_c + self.item_cat[self.ev_item]
            ok = self.ev_rank > 0
            key, rank, item = key[ok], self.ev_rank[ok], self.ev_item[ok]
            order = np.lexsort((np.arange(len(key)), rank, key))   # events are in time order
            key, rank, item = key[order], rank[order], item[order]
            last = np.r_[key[1:] != key[:-1], True] if len(key) else np.zeros(0, bool)
            self._history = dict(zip(key[last].tolist(),
                                     zip(rank[last].tolist(), item[last].tolist())))
        return self._history


def segment_label(attrs: Mapping[str, Any]) -> str:
    """Human words for a profile segment: "women aged 25-34", "gold members aged 35-44"."""
    gender = str(attrs.get("gender") or "").strip().lower()
    who = {"f": "women", "female": "women", "woman": "women", "w": "women",
           "m": "men", "male": "men", "man": "men"}.get(gender, "shoppers")
    age = attrs.get("age_band")
    return f"{who} aged {age}" if age not in (None, "") else who


def _blas_threads(n: int):
    return _threadpool_limits(limits=n, user_api="blas") if _threadpool_limits else nullcontext()


# -- the ranker ----------------------------------------------------------------------------------
class Ranker:
    """A trained model bound to a catalog; ``rank`` scores many users at once."""

    def __init__(self, model: LightFM, space: FeatureSpace, catalog: Catalog | None = None,
                 *, model_id: int | None = None, params: TrainParams | None = None) -> None:
        self.model, self.space = model, space
        self.model_id, self.params = model_id, params or TrainParams()
        self._catalog = catalog
        self._item_repr: tuple[np.ndarray, np.ndarray] | None = None
        self.db: Database | None = None
        # Parallel ranking workers (needs threadpoolctl to pin BLAS to one thread each).
        self.workers = min(2, os.cpu_count() or 1) if _threadpool_limits else 1

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            if self.db is None:
                raise PushgenError("ranker has no catalog: pass one or load it with load_model")
            self._catalog = Catalog.from_store(self.db, self.params)
        return self._catalog

    def item_representations(self) -> tuple[np.ndarray, np.ndarray]:
        """(biases, embeddings) of the catalog's items (new items from catalog features)."""
        if self._item_repr is None:
            feats = self.space.item_matrix(self.catalog.items)
            b, e = self.model.get_item_representations(feats)
            self._item_repr = (np.ascontiguousarray(b, np.float32),
                               np.ascontiguousarray(e, np.float32))
        return self._item_repr

    def user_representations(self, user_pos: np.ndarray
                             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(biases, embeddings, source) for catalog user positions; profile-only for new users."""
        rows = [self.catalog.users[p] for p in user_pos]
        feats = self.space.user_matrix(rows)
        b, e = self.model.get_user_representations(feats)
        known = np.array([int(r["id"]) in self.space.user_index for r in rows], bool)
        has_meta = np.diff(feats.indptr) > 0
        source = np.where(known, "model", np.where(has_meta, "cold_features",
                                                   "segment_popularity"))
        return np.asarray(b, np.float32), np.asarray(e, np.float32), source

    def _item_mask(self, rules: RankRules) -> np.ndarray:
        items = self.catalog.items
        ok = np.ones(len(items), bool)
        inc = {c.lower() for c in rules.include_categories}
        exc = {c.lower() for c in rules.exclude_categories}
        blocked = set(rules.blocked)
        for j, it in enumerate(items):
            facts = _facts(it)
            cat = (it.get("category") or "").lower()
            if ((rules.drop_inactive and not it.get("active", 1))
                    or (rules.drop_out_of_stock and it.get("stock") is not None
                        and it["stock"] <= 0)
                    or (inc and cat not in inc) or cat in exc or it.get("sku") in blocked
                    or (rules.min_price is not None and (facts.current_price is None
                                                        or facts.current_price < rules.min_price))
                    or (rules.max_price is not None and (facts.current_price is None
                                                        or facts.current_price > rules.max_price))
                    or (rules.min_discount is not None
                        and facts.discount_pct < rules.min_discount)):
                ok[j] = False
        return ok

    def _pinned_positions(self, rules: RankRules) -> list[int]:
        cat = self.catalog
        out = []
        for sku in rules.pinned:
            j = cat.item_sku_pos.get(sku)
            if j is None:
                raise PushgenError(f"pinned sku {sku!r} is not in the catalog")
            it = cat.items[j]
            sellable = (it.get("active", 1) or not rules.drop_inactive) and not (
                rules.drop_out_of_stock and it.get("stock") is not None and it["stock"] <= 0)
            if sellable and sku not in set(rules.blocked) and j not in out:
                out.append(j)
        return out

    def rank(self, user_ids: Sequence[int], k: int = 5, rules: RankRules | None = None,
             exclude: Mapping[int, Iterable[int]] | sp.spmatrix | None = None,
             progress: Callable[[int], None] | None = None,
             block_size: int = BLOCK_USERS) -> RankResult:
        """Top-``k`` items for every user, rules applied, best first.

        ``exclude`` maps a user id to item ids never to show that user (or is a sparse matrix:
        one row per user of ``user_ids``, columns = catalog item positions). Users the model knows
        are scored by the model ('model'); new users with known profile features from those
        ('cold_features'); the rest by popularity in their segment ('segment_popularity').
        Scores are computed in blocks of ``block_size`` users (bounded memory).
        """
        rules = rules or RankRules()
        cat = self.catalog
        n_items = len(cat.items)
        try:
            upos = np.array([cat.user_pos[int(u)] for u in user_ids], np.int64)
        except KeyError as exc:
            raise PushgenError(f"user id {exc.args[0]} is not in the database") from None
        n_users = len(upos)
        mask = self._item_mask(rules)
        pinned = self._pinned_positions(rules)
        mask[pinned] = False
        cand = np.flatnonzero(mask)                    # column -> item position
        col_of = np.full(n_items, -1, np.int64)
        col_of[cand] = np.arange(len(cand))
        diversity = rules.max_per_category is not None and rules.max_per_category > 0
        k_cand = min(len(cand), k * 5 if diversity else k)
        width = padded_width(len(cand), k_cand)
        groups = group_count(len(cand), k_cand)

        bias, emb = self.item_representations()
        # The item bias rides in the GEMM as an extra inner dimension (users get a 1 there),
        # padded to a multiple of 8: an odd inner size (dim+1) or a separate bias-add pass
        # over the score block both measured slower in OpenBLAS on 2 cores.
        dim = emb.shape[1]
        inner = -(-(dim + 1) // 8) * 8
        item_t = np.zeros((inner, width), np.float32)
        item_t[:dim, :len(cand)] = emb[cand].T
        item_t[dim, :] = INVALID                             # padding columns never win
        item_t[dim, :len(cand)] = bias[cand]
        pinned_t = np.ascontiguousarray(emb[pinned].T)
        pop_all = _popularity_scores(cat)
        pop_cols = np.full((cat.segment_pop.shape[0], width), INVALID, np.float32)
        pop_cols[:, :len(cand)] = pop_all[:, cand]
        # Python-bound work first (feature rows of the users), then the numeric blocks.
        user_bias, user_emb, sources = self.user_representations(upos)
        excl = self._exclusions(upos, exclude, rules)
        out_items = np.full((n_users, k), -1, np.int64)
        out_scores = np.zeros((n_users, k), np.float32)
        out_pinned = np.zeros((n_users, k), bool)
        local = threading.local()

        def run_block(start: int) -> int:
            stop = min(start + block_size, n_users)
            blk, ub, ue = upos[start:stop], user_bias[start:stop], user_emb[start:stop]
            if not hasattr(local, "buf"):   # per-thread buffers, reused block after block
                local.buf = np.empty((min(block_size, n_users), width), np.float32)
                local.user_aug = np.zeros((min(block_size, n_users), inner), np.float32)
                local.user_aug[:, dim] = 1.0
            scores, user_aug = local.buf[:len(blk)], local.user_aug[:len(blk)]
            user_aug[:, :dim] = ue
            np.matmul(user_aug, item_t, out=scores)
            pop_rows = np.flatnonzero(sources[start:stop] == "segment_popularity")
            if len(pop_rows):
                scores[pop_rows] = pop_cols[cat.segment_of_user[blk[pop_rows]]]
            # Exclusions: CSR rows of this block, mapped to candidate columns, set invalid.
            sub = excl[start:stop]
            rr = np.repeat(np.arange(len(blk)), np.diff(sub.indptr))
            cc = col_of[sub.indices]
            keep = cc >= 0
            scores[rr[keep], cc[keep]] = INVALID
            top, vals = topk_rows(scores, k_cand, groups)
            items = np.where(top >= 0, cand[np.maximum(top, 0)], -1)
            vals = vals + ub[:, None]
            p_scores = None
            if pinned:
                p_scores = ue @ pinned_t + bias[pinned] + ub[:, None]
                if len(pop_rows):
                    p_scores[pop_rows] = pop_all[cat.segment_of_user[blk[pop_rows]]][:, pinned]
            if pinned or diversity:
                self._finish_rows(blk, items, vals, pinned, p_scores, sub, rules, k,
                                  out_items[start:stop], out_scores[start:stop],
                                  out_pinned[start:stop])
            else:
                n = min(k, items.shape[1])   # fewer candidates than k: the rest stays empty
                out_items[start:stop, :n] = items[:, :n]
                out_scores[start:stop, :n] = vals[:, :n]
            return stop - start

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
        return RankResult(np.asarray(user_ids, np.int64), out_items, out_scores,
                          np.asarray(sources, str), out_pinned)

    def _exclusions(self, upos: np.ndarray, exclude: Any, rules: RankRules) -> sp.csr_matrix:
        cat = self.catalog
        n_items = len(cat.items)
        if rules.drop_purchased:
            m = cat.purchased[upos]
        else:
            m = sp.csr_matrix((len(upos), n_items), dtype=np.int8)
        if sp.issparse(exclude):
            if exclude.shape != (len(upos), n_items):
                raise PushgenError(f"exclude matrix has shape {exclude.shape}, expected "
                                   f"{(len(upos), n_items)}")
            m = (m + sp.csr_matrix(exclude, dtype=np.int8)).tocsr() if m.nnz else \
                sp.csr_matrix(exclude, dtype=np.int8)
        elif exclude:
            pos = {int(u): i for i, u in enumerate(cat.users[p]["id"] for p in upos)}
            rows, cols = [], []
            for uid, item_ids in exclude.items():
                i = pos.get(int(uid))
                if i is None:
                    continue
                for it in item_ids:
                    j = cat.item_pos.get(int(it))
                    if j is not None:
                        rows.append(i)
                        cols.append(j)
            extra = sp.csr_matrix((np.ones(len(rows), np.int8), (rows, cols)),
                                  shape=(len(upos), n_items))
            m = (m + extra).tocsr()
        return m

    def _finish_rows(self, blk, items, vals, pinned, p_scores, excl, rules, k,
                     out_items, out_scores, out_pinned) -> None:
        """Pinned skus first, then the per-category cap (greedy over the candidates)."""
        cap = rules.max_per_category if rules.max_per_category else None
        item_cat = self.catalog.item_cat
        for r in range(len(blk)):
            excluded = set(excl.indices[excl.indptr[r]:excl.indptr[r + 1]].tolist())
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
                if len(chosen) >= k:
                    break
                if j < 0:
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

    # -- reasons ---------------------------------------------------------------------------------
    def reasons(self, result: RankResult) -> list[list[str]]:
        """A short human-readable reason for every recommended item of ``result``."""
        return explain(self.catalog, result)


def _popularity_scores(cat: Catalog) -> np.ndarray:
    """Segment popularity with a little shop-wide popularity to break ties (segments x items)."""
    g = cat.global_pop / max(cat.global_pop.max(), 1e-9)
    seg = cat.segment_pop / np.maximum(cat.segment_pop.max(axis=1, keepdims=True), 1e-9)
    return (seg + 0.1 * g[None, :]).astype(np.float32)


def explain(cat: Catalog, result: RankResult) -> list[list[str]]:
    """Reasons, cheapest true statement first: a past event in the same category, else the
    segment's popularity, else the shop's."""
    hist = cat.history()
    n_c = max(len(cat.categories), 1)
    upos = np.array([cat.user_pos[int(u)] for u in result.user_ids], np.int64)
    seg = cat.segment_of_user[upos]
    pop = _popularity_scores(cat)
    # "Popular with X" only for items in the segment's top 10% (at least 10 items).
    top_n = max(10, len(cat.items) // 10)
    seg_rank_cut = -np.sort(-cat.segment_pop, axis=1)[:, min(top_n, len(cat.items)) - 1]
    glob_cut = -np.sort(-cat.global_pop)[min(top_n, len(cat.items)) - 1] if len(cat.items) else 0
    out: list[list[str]] = []
    for r in range(len(upos)):
        row: list[str] = []
        label = cat.segment_labels[seg[r]]
        for slot, j in enumerate(result.items[r].tolist()):
            if j < 0:
                break
            item = cat.items[j]
            category = item.get("category") or "this range"
            if result.pinned is not None and result.pinned[r, slot]:
                row.append("Featured by the shop")
                continue
            past = hist.get(int(upos[r]) * n_c + int(cat.item_cat[j]))
            if past is not None:
                rank, pj = past
                title = cat.items[pj].get("title") or cat.items[pj].get("sku")
                if rank == 4:
                    row.append(f"You bought {title} ({category})")
                elif rank == 3:
                    row.append(f"You added {title} to your cart ({category})")
                elif rank == 2:
                    row.append(f"You rated {title} highly ({category})")
                else:
                    row.append(f"Matches your interest in {category}")
            elif seg[r] > 0 and cat.segment_pop[seg[r], j] > 0 and \
                    cat.segment_pop[seg[r], j] >= seg_rank_cut[seg[r]]:
                row.append(f"Popular with {label}")
            elif cat.global_pop[j] > 0 and cat.global_pop[j] >= glob_cut:
                row.append(f"Popular in {category}")
            elif result.sources[r] == "cold_features":
                row.append(f"Picked for your profile ({category})")
            elif result.sources[r] == "segment_popularity":
                row.append(f"Popular with {label}" if pop[seg[r], j] > 0 else
                           f"New in {category}")
            else:
                row.append(f"Picked for you from {category}")
        out.append(row)
    return out


def _facts(item: Mapping[str, Any], score: float = 0.0, reason: str = "") -> ItemFacts:
    attrs = item.get("attributes")
    if isinstance(attrs, str):
        attrs = loads(attrs, {}) or {}
    return ItemFacts(sku=item["sku"], title=item["title"], price=item.get("price"),
                     currency=item.get("currency") or "USD", sale_price=item.get("sale_price"),
                     category=item.get("category"), brand=item.get("brand"),
                     description=item.get("description"), url=item.get("url"),
                     image_url=item.get("image_url"), score=float(score), reason=reason,
                     attributes=dict(attrs or {}))


# -- training ------------------------------------------------------------------------------------
def _new_model(params: TrainParams) -> LightFM:
    return LightFM(no_components=params.components, loss=params.loss,
                   learning_rate=params.learning_rate,
                   learning_schedule=params.learning_schedule, item_alpha=params.item_alpha,
                   user_alpha=params.user_alpha, max_sampled=params.max_sampled,
                   random_state=np.random.RandomState(params.seed))


_ARRAYS = ("user_embeddings", "user_biases", "item_embeddings", "item_biases")


def fit_arrays(params: TrainParams, interactions: sp.coo_matrix, weights: sp.coo_matrix | None,
               user_features: sp.csr_matrix, item_features: sp.csr_matrix,
               progress: EpochProgress | None = None,
               validate: Callable[[LightFM], dict[str, float]] | None = None
               ) -> tuple[LightFM, dict[str, Any]]:
    """Fit epoch by epoch; with ``validate``, evaluate every ``eval_every`` epochs and keep the
    best snapshot (stopping after ``patience`` evaluations without gain if early stopping)."""
    model = _new_model(params)
    best: dict[str, Any] = {}
    best_arrays = None
    stale = 0
    for epoch in range(1, params.epochs + 1):
        model.fit_partial(interactions, user_features=user_features,
                          item_features=item_features, sample_weight=weights, epochs=1,
                          num_threads=params.threads)
        metrics: dict[str, float] = {}
        if validate and (epoch % params.eval_every == 0 or epoch == params.epochs):
            metrics = validate(model)
            key = f"precision_at_{params.eval_k}"
            if not best or metrics[key] > best[key]:
                best = {**metrics, "best_epoch": epoch}
                best_arrays = {a: getattr(model, a).copy() for a in _ARRAYS}
                stale = 0
            else:
                stale += 1
        if progress:
            progress(epoch, params.epochs, metrics)
        if params.early_stopping and validate and stale >= params.patience:
            break
    if best_arrays is not None:
        for a, v in best_arrays.items():
            setattr(model, a, v)
    return model, best


def check_params(db: Database, params: TrainParams) -> list[str]:
    """Validate ``params`` against the store; returns warnings (raises PushgenError on errors).

    Errors: any impossible setting (see ``TrainParams.validate``), or a ``--user-feature`` no
    user has. Warnings: ``--event-weight`` kinds with no events in the store.
    """
    params.validate()
    known = sorted(set(store.user_attribute_names(db)) | USER_COLUMN_FIELDS)
    missing = [f for f in params.user_features if f not in known]
    if missing:
        raise PushgenError(f"--user-feature {', '.join(missing)}: no user has this attribute; "
                           f"known attributes: {', '.join(known) or 'none'}")
    counts = store.event_kind_counts(db)
    unused = [k for k, w in params.event_weights.items()
              if w > 0 and k not in counts and DEFAULT_EVENT_WEIGHTS.get(k) != w]
    return [f"--event-weight {k}: no {k!r} events in the store (kinds present: "
            f"{', '.join(sorted(counts)) or 'none'})" for k in unused]


def train(db: Database, params: TrainParams | None = None,
          progress: EpochProgress | None = None) -> ModelRecord:
    """Train on every event in the store, save the artifact, record it in ``models``."""
    from .evaluate import batch_metrics

    params = params or TrainParams()
    check_params(db, params)
    started = time.perf_counter()
    users, items = store.user_rows(db), store.item_rows(db)
    u_ids, i_ids, w = interaction_weights(store.event_rows(db), params)
    if len(w) == 0:
        raise PushgenError("no usable events to train on: import events first "
                           "(`pushgen import events FILE`) or check --event-weight")
    trained_users = np.unique(u_ids)
    space = fit_feature_space(users, items, trained_users.tolist(),
                              np.unique(i_ids).tolist(), params.feature_config())
    user_by_id = {int(u["id"]): u for u in users}
    fu = space.user_matrix([user_by_id[int(u)] for u in trained_users])
    fi = space.item_matrix(items)        # every catalog item is a column (new ones cold)
    row = np.searchsorted(trained_users, u_ids)
    item_col = {int(it["id"]): j for j, it in enumerate(items)}
    col = np.array([item_col[int(i)] for i in i_ids], np.int64)
    shape = (len(trained_users), len(items))

    rng = np.random.default_rng(params.seed)
    validate = None
    held = np.zeros(len(w), bool)
    if params.validation > 0 or params.early_stopping:
        frac = params.validation or 0.1
        held = rng.random(len(w)) < frac
        if held.all() or not held.any():
            held[:] = False
        else:
            train_m = sp.csr_matrix((np.ones((~held).sum(), np.float32),
                                     (row[~held], col[~held])), shape=shape)
            test_m = sp.csr_matrix((np.ones(held.sum(), np.float32), (row[held], col[held])),
                                   shape=shape)

            def validate(model: LightFM) -> dict[str, float]:
                ub, ue = model.get_user_representations(fu)
                ib, ie = model.get_item_representations(fi)
                return batch_metrics(ue, ib, ie, test_m, train_m, k=params.eval_k)
    tr = ~held
    interactions = sp.coo_matrix((np.ones(tr.sum(), np.float32), (row[tr], col[tr])), shape=shape)
    weights = sp.coo_matrix((w[tr], (row[tr], col[tr])), shape=shape)
    model, best = fit_arrays(params, interactions, weights, fu, fi, progress, validate)
    metrics = {"interactions": int(len(w)), "train_seconds": round(time.perf_counter() - started, 2),
               **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in best.items()}}
    return save_model(db, model, space, params, metrics)


# -- artifact ------------------------------------------------------------------------------------
def save_model(db: Database, model: LightFM, space: FeatureSpace, params: TrainParams,
               metrics: dict[str, Any]) -> ModelRecord:
    """Write ``<db folder>/pushgen-models/model-<id>.npz`` and its ``models`` row together.

    The artifact is written to a temporary name and renamed inside the transaction that
    inserts the row; any failure rolls the row back and removes the temporary file, so a
    ``models`` row never points at a missing artifact.
    """
    if any(getattr(model, a, None) is None for a in _ARRAYS):
        raise PushgenError("the model was never fitted (epochs must be at least 1)")
    folder = db_folder(db) / MODELS_FOLDER
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PushgenError(f"{folder}: cannot create the models folder ({exc})") from None
    shapes = {a: list(getattr(model, a).shape) for a in _ARRAYS}
    written: list[Path] = []

    def write(model_id: int) -> None:
        meta = {"version": ARTIFACT_VERSION, "model_id": model_id, "params": params.to_dict(),
                "features": space.to_dict(), "shapes": shapes}
        tmp = folder / f"model-{model_id}.tmp.npz"
        written.append(tmp)
        np.savez(tmp, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8),
                 **{a: getattr(model, a) for a in _ARRAYS})
        final = folder / f"model-{model_id}.npz"
        tmp.replace(final)
        written.append(final)

    try:
        model_id = store.insert_model(db, version=ARTIFACT_VERSION,
                                      path=f"{MODELS_FOLDER}/model-{{id}}.npz",
                                      params=params.to_dict(), metrics=metrics,
                                      n_users=len(space.user_ids), n_items=len(space.item_ids),
                                      write_artifact=write)
    except BaseException as exc:
        for f in written:      # the row was rolled back: leave no orphan file behind
            f.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise PushgenError(f"{folder}: cannot write the model artifact ({exc})") from None
        raise
    return ModelRecord(model_id, folder / f"model-{model_id}.npz", ARTIFACT_VERSION,
                       params.to_dict(), metrics, len(space.user_ids), len(space.item_ids))


def model_record(db: Database, model_id: int | None = None) -> ModelRecord:
    """The ``models`` row ``model_id``, or the newest one whose artifact file exists."""
    if model_id is None:
        rows = store.models_with_path(db)
        row = next((r for r in rows if (db_folder(db) / r["path"]).is_file()),
                   rows[0] if rows else None)
    else:
        row = store.get_model(db, model_id)
    if row is None:
        if model_id is None:
            raise PushgenError("no trained model in this database: run `pushgen train` first")
        raise PushgenError(f"no model with id {model_id}: see `pushgen train` "
                           "(or omit --model to use the latest)")
    return ModelRecord(row["id"], db_folder(db) / row["path"], row["version"], row["params"],
                       row["metrics"], row["n_users"] or 0, row["n_items"] or 0,
                       row["created_at"])


def load_model(db: Database, model_id: int | None = None) -> Ranker:
    """The model ``model_id`` (latest if None) as a Ranker bound to the store's catalog.

    Refuses a missing, corrupt or mismatched artifact with a PushgenError saying what to do.
    """
    rec = model_record(db, model_id)
    path = rec.path
    fix = "rerun `pushgen train`"
    if not rec.path.name or not path.is_file():
        raise PushgenError(f"{path}: model artifact of model {rec.id} is missing; {fix}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {a: np.asarray(z[a], np.float32) for a in _ARRAYS}
            meta = json.loads(bytes(z["meta"]).decode())
    except Exception as exc:  # zip, key, JSON or decode errors all mean "corrupt"
        raise PushgenError(f"{path}: model artifact is corrupt or unreadable "
                           f"({type(exc).__name__}: {exc}); {fix}") from None
    if meta.get("version") != ARTIFACT_VERSION:
        raise PushgenError(f"{path}: artifact version {meta.get('version')!r} is not "
                           f"{ARTIFACT_VERSION!r}; {fix}")
    if meta.get("model_id") != rec.id:
        raise PushgenError(f"{path}: artifact belongs to model {meta.get('model_id')}, "
                           f"not {rec.id}; {fix}")
    try:
        space = FeatureSpace.from_dict(meta["features"])
        params = TrainParams.from_dict(meta["params"])
    except (KeyError, TypeError, ValueError) as exc:
        raise PushgenError(f"{path}: artifact mappings are invalid ({exc}); {fix}") from None
    expect = {"user_embeddings": (space.n_user_features, params.components),
              "user_biases": (space.n_user_features,),
              "item_embeddings": (space.n_item_features, params.components),
              "item_biases": (space.n_item_features,)}
    for a, shape in expect.items():
        if arrays[a].shape != shape:
            raise PushgenError(f"{path}: {a} has shape {arrays[a].shape}, the mappings need "
                               f"{shape}; {fix}")
    model = _new_model(params)
    model._initialize(params.components, space.n_item_features, space.n_user_features)
    for a, v in arrays.items():
        setattr(model, a, v)
    ranker = Ranker(model, space, model_id=rec.id, params=params)
    ranker.db = db
    return ranker


# -- campaigns -----------------------------------------------------------------------------------
def check_rules(db: Database, rules: RankRules, k: int = 5) -> list[str]:
    """Refuse impossible ranking rules with one clear line; returns warnings.

    Checked before any ranking starts: list length, unknown categories, price range, discount
    range, a sku both pinned and blocked, the per-category cap, unknown pinned skus.
    """
    if k < 1:
        raise PushgenError(f"--top-k must be at least 1 (got {k})")
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


def rank_campaign(db: Database, campaign: str, *, k: int = 5, rules: RankRules | None = None,
                  user_ids: Sequence[int] | None = None, model_id: int | None = None,
                  progress: Callable[[int], None] | None = None,
                  batch_users: int = 20_000) -> RankSummary:
    """Rank ``user_ids`` (default: every user) for ``campaign`` and store the lists.

    Rows of those users are replaced batch by batch, so a rerun (or a resumed run) never
    duplicates. Returns counts by source. If the rules leave no item for any user, raises a
    PushgenError and leaves the campaign's stored recommendations untouched.
    """
    started = time.perf_counter()
    rules = rules or RankRules()
    check_rules(db, rules, k)
    ranker = load_model(db, model_id)
    ids = list(user_ids) if user_ids is not None else store.user_ids_all(db)
    cat = ranker.catalog
    if ids and not ranker._item_mask(rules).any() and not ranker._pinned_positions(rules):
        raise PushgenError(_no_items_message(campaign, rules, len(cat.items)))
    by_source = {s: 0 for s in SOURCES}
    rows_written = no_items = 0
    cid: int | None = None
    held: list[int] = []     # users of leading batches without any row: written only later
    for start in range(0, len(ids), batch_users):
        batch = ids[start:start + batch_users]
        res = ranker.rank(batch, k, rules, progress=progress)
        reasons = explain(cat, res)
        rows = []
        for r, uid in enumerate(res.user_ids.tolist()):
            src = str(res.sources[r])
            n = 0
            for slot, j in enumerate(res.items[r].tolist()):
                if j < 0:
                    break
                rows.append((uid, slot + 1, int(cat.items[j]["id"]), float(res.scores[r, slot]),
                             reasons[r][slot], src, ranker.model_id))
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
            raise PushgenError(_no_items_message(campaign, rules, len(cat.items), ranked=True))
        cid = store.get_or_create_campaign(db, campaign, model_id=ranker.model_id)
    return RankSummary(campaign, cid, ranker.model_id, len(ids), rows_written,
                       {s: n for s, n in by_source.items() if n}, no_items,
                       round(time.perf_counter() - started, 2))


def _no_items_message(campaign: str, rules: RankRules, n_items: int, ranked: bool = False
                      ) -> str:
    active = [name for name, on in (
        ("--include-category", rules.include_categories),
        ("--exclude-category", rules.exclude_categories),
        ("--min-price", rules.min_price is not None), ("--max-price", rules.max_price is not None),
        ("--min-discount", rules.min_discount is not None), ("--block", rules.blocked),
        ("drop purchased (--keep-purchased to allow)", ranked and rules.drop_purchased)) if on]
    why = "no user has an eligible item left" if ranked else \
        f"the rules leave no eligible item of the {n_items} in the catalog"
    return (f"campaign {campaign!r}: {why} (inactive and out-of-stock items never count"
            f"{'; rules: ' + ', '.join(active) if active else ''}); nothing was written, "
            "existing recommendations are kept. Loosen the rules.")


def recommendations_for(db: Database, campaign_id: int,
                        user_ids: Sequence[int]) -> dict[int, list[ItemFacts]]:
    """Stored recommendations per user (best first) with score and reason filled."""
    out: dict[int, list[ItemFacts]] = {}
    for row in store.recommendation_rows(db, campaign_id, user_ids):
        out.setdefault(row["user_id"], []).append(_facts(row, row["score"], row["reason"]))
    return out


__all__ = ["TrainParams", "ModelRecord", "RankRules", "RankResult", "RankSummary", "Catalog",
           "Ranker", "train", "load_model", "model_record", "save_model", "rank_campaign",
           "recommendations_for", "interaction_weights", "check_params", "check_rules", "LOSSES", "explain", "ARTIFACT_VERSION"]
