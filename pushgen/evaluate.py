"""Offline evaluation: splits, ranking metrics, and baselines behind one scorer interface.

Every model (random, popularity, LightFM without features, the pushgen hybrid) is a
``Scorer``: ``fit(data)`` then ``scores(user_positions) -> (users x items)``. The comparison
table is a loop over scorers, all measured by the same batch code: train items are excluded
from each user's ranking, top-k comes from ``topk.topk_rows``, AUC is the Mann-Whitney
statistic over the non-train items.
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np
import scipy.sparse as sp
from scipy.stats import rankdata
from sqlite_utils import Database

from .errors import PushgenError
from .features import FeatureConfig, fit_feature_space
from .topk import INVALID, topk_rows

SPLITS = ("random", "time", "cold-users", "cold-items")


# -- metrics ---------------------------------------------------------------------------------------
@dataclass
class Metrics:
    name: str
    precision: float
    recall: float
    ndcg: float
    auc: float
    coverage: float
    diversity: float | None
    users: int
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"precision": self.precision, "recall": self.recall, "ndcg": self.ndcg,
                "auc": self.auc, "coverage": self.coverage, "diversity": self.diversity,
                "users": self.users}


def _block_metrics(scores: np.ndarray, test: sp.csr_matrix, train: sp.csr_matrix | None,
                   k: int, candidates: np.ndarray | None) -> tuple[np.ndarray, ...]:
    """Per-user precision, recall, NDCG, AUC and the top-k of one block of users."""
    scores = np.array(scores, dtype=np.float32, copy=True)
    n_items = scores.shape[1]
    excluded = np.zeros(scores.shape, bool)
    if train is not None:
        rr = np.repeat(np.arange(train.shape[0]), np.diff(train.indptr))
        excluded[rr, train.indices] = True
    if candidates is not None:
        not_cand = np.ones(n_items, bool)
        not_cand[candidates] = False
        excluded[:, not_cand] = True
    scores[excluded] = INVALID
    top, _ = topk_rows(scores, k, 0)
    pos = test.toarray().astype(bool) & ~excluded
    n_pos = pos.sum(axis=1)
    hits = np.take_along_axis(pos, np.maximum(top, 0), axis=1) & (top >= 0)
    precision = hits.sum(axis=1) / k
    recall = hits.sum(axis=1) / np.maximum(n_pos, 1)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits * discounts).sum(axis=1)
    idcg = np.cumsum(discounts)[np.minimum(n_pos, k) - 1]
    ndcg = dcg / np.where(n_pos > 0, idcg, 1.0)
    # Mann-Whitney AUC over the non-excluded items (excluded ones tie at the bottom).
    ranks = rankdata(scores, axis=1)
    n_excl = excluded.sum(axis=1)
    n_neg = n_items - n_excl - n_pos
    sum_pos_ranks = np.where(pos, ranks, 0).sum(axis=1)
    auc = (sum_pos_ranks - n_pos * (n_pos + 1) / 2 - n_pos * n_excl) / np.maximum(
        n_pos * n_neg, 1)
    return precision, recall, ndcg, auc, top, n_pos


def evaluate_scores(name: str, score_fn: Callable[[np.ndarray], np.ndarray],
                    test: sp.csr_matrix, train: sp.csr_matrix | None, k: int = 10,
                    item_categories: np.ndarray | None = None,
                    candidates: np.ndarray | None = None, block: int = 1024) -> Metrics:
    """Metrics of ``score_fn(user_positions)`` for every user with a test positive."""
    if k < 1:
        raise PushgenError(f"k must be at least 1 (got {k})")
    started = time.perf_counter()
    test = sp.csr_matrix(test)
    train = sp.csr_matrix(train) if train is not None else None
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    parts: list[list[np.ndarray]] = [[], [], [], []]
    seen = np.zeros(test.shape[1], bool)
    div: list[np.ndarray] = []
    for start in range(0, len(users), block):
        u = users[start:start + block]
        p, r, n, a, top, n_pos = _block_metrics(score_fn(u), test[u],
                                                train[u] if train is not None else None,
                                                k, candidates)
        keep = n_pos > 0           # a positive may be excluded (also in train)
        for lst, v in zip(parts, (p, r, n, a)):
            lst.append(v[keep])
        seen[top[top >= 0]] = True
        if item_categories is not None:
            cats = np.where(top >= 0, item_categories[np.maximum(top, 0)], -1)
            same = (cats[:, :, None] == cats[:, None, :]).sum(axis=(1, 2)) - k
            div.append(1.0 - same / max(k * (k - 1), 1))
    n_cand = len(candidates) if candidates is not None else test.shape[1]
    vals = [float(np.concatenate(x).mean()) if x and len(np.concatenate(x)) else 0.0
            for x in parts]
    return Metrics(name, *vals, coverage=float(seen.sum() / max(n_cand, 1)),
                   diversity=float(np.concatenate(div).mean()) if div else None,
                   users=int(sum(len(x) for x in parts[0])),
                   seconds=round(time.perf_counter() - started, 2))


def batch_metrics(user_emb: np.ndarray, item_bias: np.ndarray, item_emb: np.ndarray,
                  test: sp.csr_matrix, train: sp.csr_matrix | None, k: int = 10
                  ) -> dict[str, float]:
    """precision/recall/NDCG/AUC at k of dot-product scores (used for validation in train)."""
    m = evaluate_scores("model", lambda u: user_emb[u] @ item_emb.T + item_bias[None, :],
                        test, train, k)
    return {f"precision_at_{k}": m.precision, f"recall_at_{k}": m.recall,
            f"ndcg_at_{k}": m.ndcg, "auc": m.auc}


# -- data and splits -------------------------------------------------------------------------------
@dataclass
class EvalData:
    """Rows plus train/test interactions as positions into ``users`` and ``items``."""

    users: list[Mapping[str, Any]]
    items: list[Mapping[str, Any]]
    train: sp.csr_matrix          # weights
    test: sp.csr_matrix           # 1 = positive
    candidates: np.ndarray | None = None   # rank only these items (cold-items split)
    exclude: sp.csr_matrix | None = None   # items left out of each user's ranking (default train)

    def item_categories(self) -> np.ndarray:
        codes: dict[str, int] = {}
        return np.array([codes.setdefault(str(it.get("category")), len(codes))
                         for it in self.items], np.int64)


def split_masks(user: np.ndarray, item: np.ndarray, ts: np.ndarray | None, split: str,
                fraction: float = 0.2, seed: int = 42) -> np.ndarray:
    """Boolean "goes to test" for each interaction under a random, time or cold split."""
    rng = np.random.default_rng(seed)
    if split == "random":
        return rng.random(len(user)) < fraction
    if split == "time":
        if ts is None:
            raise PushgenError("time split needs event timestamps")
        cut = np.quantile(ts, 1 - fraction)
        return ts > cut
    if split in ("cold-users", "cold-items"):
        ids = user if split == "cold-users" else item
        uniq = np.unique(ids)
        held = rng.choice(uniq, size=max(1, int(round(len(uniq) * fraction))), replace=False)
        return np.isin(ids, held)
    raise PushgenError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")


def make_eval_data(users: Sequence[Mapping[str, Any]], items: Sequence[Mapping[str, Any]],
                   user_ids: np.ndarray, item_ids: np.ndarray, weights: np.ndarray,
                   test_mask: np.ndarray, cold_items: bool = False) -> EvalData:
    """Train/test matrices from interactions given as store ids and a test mask."""
    upos = {int(u["id"]): i for i, u in enumerate(users)}
    ipos = {int(it["id"]): j for j, it in enumerate(items)}
    r = np.array([upos[int(u)] for u in user_ids], np.int64)
    c = np.array([ipos[int(i)] for i in item_ids], np.int64)
    shape = (len(users), len(items))
    tr = ~test_mask
    train = sp.csr_matrix((weights[tr].astype(np.float32), (r[tr], c[tr])), shape=shape)
    test = sp.csr_matrix((np.ones(test_mask.sum(), np.float32), (r[test_mask], c[test_mask])),
                         shape=shape)
    cand = np.unique(c[test_mask]) if cold_items else None
    return EvalData(list(users), list(items), train, test, cand)


# -- scorers ---------------------------------------------------------------------------------------
class Scorer(Protocol):
    name: str

    def fit(self, data: EvalData) -> "Scorer": ...

    def scores(self, user_positions: np.ndarray) -> np.ndarray: ...


class RandomScorer:
    name = "random"

    def __init__(self, seed: int = 42) -> None:
        self.seed = seed

    def fit(self, data: EvalData) -> "RandomScorer":
        self.n_items = len(data.items)
        self.rng = np.random.default_rng(self.seed)
        return self

    def scores(self, user_positions: np.ndarray) -> np.ndarray:
        return self.rng.random((len(user_positions), self.n_items), dtype=np.float32)


class PopularityScorer:
    name = "popularity"

    def fit(self, data: EvalData) -> "PopularityScorer":
        self.pop = np.asarray((data.train > 0).sum(axis=0), np.float32).ravel()
        return self

    def scores(self, user_positions: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.pop, (len(user_positions), len(self.pop)))


class LightFMScorer:
    """LightFM through pushgen's feature code; ``features=False`` is pure CF (identities only)."""

    def __init__(self, params: Any = None, features: bool = True, name: str | None = None,
                 progress: Callable[[int, int, dict[str, float]], None] | None = None) -> None:
        from .ranker import TrainParams

        self.params = params or TrainParams()
        self.features = features
        self.name = name or ("pushgen hybrid" if features else "lightfm (no features)")
        self.progress = progress

    def fit(self, data: EvalData) -> "LightFMScorer":
        from .ranker import fit_arrays

        train = data.train.tocoo()
        cfg = self.params.feature_config() if self.features else FeatureConfig(
            user_fields=(), item_fields=())
        users_seen = np.unique(train.row)
        items_seen = np.unique(train.col)
        space = fit_feature_space(data.users, data.items,
                                  [int(data.users[p]["id"]) for p in users_seen],
                                  [int(data.items[p]["id"]) for p in items_seen], cfg)
        fu, fi = space.user_matrix(data.users), space.item_matrix(data.items)
        ones = sp.coo_matrix((np.ones(train.nnz, np.float32), (train.row, train.col)),
                             shape=train.shape)
        model, _ = fit_arrays(self.params, ones, train, fu, fi, self.progress)
        _, self.user_emb = model.get_user_representations(fu)
        self.item_bias, self.item_emb = model.get_item_representations(fi)
        self.space = space
        return self

    def scores(self, user_positions: np.ndarray) -> np.ndarray:
        return self.user_emb[user_positions] @ self.item_emb.T + self.item_bias[None, :]


def compare(data: EvalData, scorers: Sequence[Scorer], k: int = 10,
            on_scorer: Callable[[str], None] | None = None) -> list[Metrics]:
    """Fit and evaluate every scorer on the same split; one Metrics row each."""
    cats = data.item_categories()
    has_cats = len(set(cats.tolist())) > 1
    rows = []
    for s in scorers:
        if on_scorer:
            on_scorer(s.name)
        started = time.perf_counter()
        s.fit(data)
        excl = data.exclude if data.exclude is not None else data.train
        m = evaluate_scores(s.name, s.scores, data.test, excl, k,
                            cats if has_cats else None, data.candidates)
        m.seconds = round(time.perf_counter() - started, 2)
        rows.append(m)
    return rows


def default_scorers(params: Any = None) -> list[Scorer]:
    return [RandomScorer(), PopularityScorer(), LightFMScorer(params, features=False),
            LightFMScorer(params, features=True)]


def check_evaluate_args(split: str, k: int, fraction: float) -> None:
    """One-line PushgenError for an impossible split, list length or held-out fraction."""
    if split not in SPLITS:
        raise PushgenError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    if k < 1:
        raise PushgenError(f"--k must be at least 1 (got {k})")
    if not 0 < fraction < 1:
        raise PushgenError("--fraction must be between 0 and 1, e.g. 0.2")


def evaluate_store(db: Database, split: str = "random", k: int = 10, params: Any = None,
                   fraction: float = 0.2, seed: int = 42,
                   on_scorer: Callable[[str], None] | None = None) -> list[Metrics]:
    """Split the store's interactions, then compare the baselines with the pushgen hybrid."""
    from .ranker import TrainParams, check_params, interaction_weights
    from .store import ranking as store

    params = params or TrainParams()
    check_evaluate_args(split, k, fraction)
    check_params(db, params)
    users, items, events = store.user_rows(db), store.item_rows(db), store.event_rows(db)
    u, i, w = interaction_weights(events, params)
    if len(w) < 10:
        raise PushgenError("too few events to evaluate (need at least 10 usable interactions)")
    ts = None
    if split == "time":
        last: dict[tuple[int, int], float] = {}
        for e in events:
            t = _dt.datetime.fromisoformat(e[4].replace("Z", "+00:00")).timestamp()
            key = (e[0], e[1])
            last[key] = max(last.get(key, t), t)
        ts = np.array([last[(int(a), int(b))] for a, b in zip(u, i)])
    test = split_masks(u, i, ts, split, fraction, seed)
    data = make_eval_data(users, items, u, i, w, test, cold_items=split == "cold-items")
    return compare(data, default_scorers(params), k, on_scorer)
