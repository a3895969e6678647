"""Offline evaluation: splits, baselines and the served blend behind one scorer interface.

Every model is a ``Scorer``: ``fit(data)`` then ``scores(user_positions, protocol)`` (users x
items). The comparison is a loop over scorers, all measured by ``metrics.evaluate_scores``
(ties broken at random with a fixed seed). Two protocols:

- "repeats allowed": every item is ranked and every test item counts (buying again counts);
- "new items only": each user's training items leave both the ranking and the truth.

Splits: ``time`` (default; the last share of the distinct days is the test part, test users
have events on both sides), ``random`` (a random share of the (user, item) pairs), and the
cold-start splits ``cold-users`` and ``cold-items`` (a share of the users or items with all
their events; cold items are ranked among the held-out items only).

The "served blend" row runs exactly what ``pushgen train`` does (validation on the latest days
of the training part, blend choice, refit) and scores with the same ``Ranker`` code as
``pushgen rank``; the "hybrid" row is that refitted LightFM model alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np
import scipy.sparse as sp
from sqlite_utils import Database

from ..errors import PushgenError
from ..store import ranking as store
from .events import EventLog, day_cut, day_label, interaction_weights
from .features import FeatureConfig, fit_feature_space
from .metrics import Metrics, evaluate_scores
from .rank import Catalog, Ranker
from .repeat import buy_again_strength, purchases
from .training import ServedModel, TrainParams, check_params, fit_lightfm, fit_served, \
    load_log

SPLITS = ("time", "random", "cold-users", "cold-items")
PROTOCOLS = {"repeat": "repeats allowed", "new": "new items only"}
EvalProgress = Callable[[str, int, int], None]   # (what, done, total)


# -- data and splits -------------------------------------------------------------------------------
@dataclass
class EvalData:
    """Users, items (sorted by id) and train/test interactions as positions into them."""

    users: list[Mapping[str, Any]]
    items: list[Mapping[str, Any]]
    train: sp.csr_matrix                   # weights of the training interactions
    test: sp.csr_matrix                    # 1 = positive in the test part
    exclude: sp.csr_matrix | None = None   # "new items only": left out (default: train > 0)
    candidates: np.ndarray | None = None   # rank only these items (cold-items split)
    log: EventLog | None = None            # training events (buy-again, the served blend)
    eval_users: np.ndarray | None = None   # positions evaluated (default: any test positive)
    protocols: tuple[str, ...] = ("repeat", "new")
    today: int | None = None               # last training day (the served blend's "now")
    note: str = ""

    def item_categories(self) -> np.ndarray:
        codes: dict[str, int] = {}
        return np.array([codes.setdefault(str(it.get("category")), len(codes))
                         for it in self.items], np.int64)

    def seen(self) -> sp.csr_matrix:
        if self.exclude is not None:
            return self.exclude
        return sp.csr_matrix((self.train > 0).astype(np.float32))


def split_store_events(users: Sequence[Mapping[str, Any]], items: Sequence[Mapping[str, Any]],
                       log: EventLog, params: TrainParams, split: str, fraction: float = 0.2,
                       seed: int = 42, max_users: int | None = None) -> EvalData:
    """Split events into training and test parts under one of ``SPLITS``; with
    ``max_users``, a random sample of that many test customers is scored."""
    if split not in SPLITS:
        raise PushgenError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    users = sorted(users, key=lambda r: int(r["id"]))
    items = sorted(items, key=lambda r: int(r["id"]))
    user_ids = np.array([int(u["id"]) for u in users], np.int64)
    item_ids = np.array([int(i["id"]) for i in items], np.int64)
    log = log.subset(np.isin(log.user, user_ids) & np.isin(log.item, item_ids))
    rng = np.random.default_rng(seed)
    protocols: tuple[str, ...] = ("repeat", "new")
    note = ""
    if split == "time":
        cut, n_before, n_after = day_cut(log, fraction)
        if n_after == 0:
            raise PushgenError(f"time split: the events span {n_before} distinct day(s), too "
                               "few to hold out the last ones; try --split random")
        test_ev = log.day >= cut
        note = f"test from {day_label(cut)} ({n_after} of {n_before + n_after} days)"
    elif split == "random":
        u, i, _ = interaction_weights(log, params.event_weights, params.rating_threshold)
        held = rng.random(len(u)) < fraction
        key = u * (int(item_ids.max()) + 1) + i
        ev_key = log.user * (int(item_ids.max()) + 1) + log.item
        test_ev = np.isin(ev_key, key[held])
    else:
        ids = log.user if split == "cold-users" else log.item
        uniq = np.unique(ids)
        held = rng.choice(uniq, size=max(1, int(round(len(uniq) * fraction))), replace=False)
        test_ev = np.isin(ids, held)
        protocols = ("repeat",)     # nothing of a held-out user or item is in training
    train_log, test_log = log.subset(~test_ev), log.subset(test_ev)
    tu, ti, tw = interaction_weights(train_log, params.event_weights, params.rating_threshold,
                                     params.half_life_days)
    vu, vi, _ = interaction_weights(test_log, params.event_weights, params.rating_threshold)
    shape = (len(users), len(items))
    train = sp.csr_matrix((tw, (np.searchsorted(user_ids, tu), np.searchsorted(item_ids, ti))),
                          shape=shape)
    test = sp.csr_matrix((np.ones(len(vu), np.float32),
                          (np.searchsorted(user_ids, vu), np.searchsorted(item_ids, vi))),
                         shape=shape)
    has_test = np.diff(test.indptr) > 0
    if split in ("time", "random"):
        eval_users = np.flatnonzero(has_test & (np.diff(train.indptr) > 0))
    else:
        eval_users = np.flatnonzero(has_test)
    cand = np.searchsorted(item_ids, np.unique(test_log.item)) if split == "cold-items" else None
    if max_users is not None and len(eval_users) > max_users:
        eval_users = np.sort(rng.choice(eval_users, max_users, replace=False))
        note = f"{note}; " if note else ""
        note += f"a random {max_users:,} of the test customers"
    if not len(eval_users):
        raise PushgenError(f"{split} split: no customer has events on both sides of the split; "
                           "try another --split or --fraction")
    today = int(train_log.day.max()) if len(train_log) else None
    return EvalData(users, items, train, test, None, cand, train_log, eval_users, protocols,
                    today, note)


# -- scorers ---------------------------------------------------------------------------------------
class Scorer(Protocol):
    name: str

    def fit(self, data: EvalData) -> "Scorer": ...

    def scores(self, user_positions: np.ndarray, protocol: str) -> np.ndarray: ...


class RandomScorer:
    name = "random"

    def __init__(self, seed: int = 42) -> None:
        self.seed = seed

    def fit(self, data: EvalData) -> "RandomScorer":
        self.n_items = len(data.items)
        self.rng = np.random.default_rng(self.seed)
        return self

    def scores(self, user_positions: np.ndarray, protocol: str = "repeat") -> np.ndarray:
        return self.rng.random((len(user_positions), self.n_items), dtype=np.float32)


class ConstantScorer:
    """Every item scores the same: must measure exactly like random (tie-breaking check)."""

    name = "constant"

    def fit(self, data: EvalData) -> "ConstantScorer":
        self.n_items = len(data.items)
        return self

    def scores(self, user_positions: np.ndarray, protocol: str = "repeat") -> np.ndarray:
        return np.ones((len(user_positions), self.n_items), np.float32)


class PopularityScorer:
    """Items by the number of users who interacted with them in training."""

    name = "popularity"

    def fit(self, data: EvalData) -> "PopularityScorer":
        self.pop = np.asarray((data.train > 0).sum(axis=0), np.float32).ravel()
        return self

    def scores(self, user_positions: np.ndarray, protocol: str = "repeat") -> np.ndarray:
        return np.broadcast_to(self.pop, (len(user_positions), len(self.pop)))


class BuyAgainScorer:
    """The user's own purchases first (more purchase days first), then popularity."""

    name = "buy-again"

    def fit(self, data: EvalData) -> "BuyAgainScorer":
        pop = np.asarray((data.train > 0).sum(axis=0), np.float64).ravel()
        self.pop = (np.log1p(pop) / max(np.log1p(pop).max(), 1e-9)).astype(np.float32)
        user_ids = np.array([int(u["id"]) for u in data.users], np.int64)
        item_ids = np.array([int(i["id"]) for i in data.items], np.int64)
        p = purchases(data.log if data.log is not None else EventLog.empty())
        strength = buy_again_strength(p)
        ok = strength > 0
        self.own = sp.csr_matrix((strength[ok].astype(np.float32),
                                  (np.searchsorted(user_ids, p.user[ok]),
                                   np.searchsorted(item_ids, p.item[ok]))),
                                 shape=(len(user_ids), len(item_ids)))
        return self

    def scores(self, user_positions: np.ndarray, protocol: str = "repeat") -> np.ndarray:
        return self.pop[None, :] + 10.0 * self.own[user_positions].toarray()


class LightFMScorer:
    """LightFM through pushgen's feature code; ``features=False`` is pure CF (identities only).

    ``epochs_from`` takes the number of epochs the served blend's validation chose (so the
    baseline gets the same training budget)."""

    def __init__(self, params: TrainParams | None = None, features: bool = True,
                 name: str | None = None, epochs_from: "ServedScorer | None" = None,
                 progress: Callable[[int, int], None] | None = None) -> None:
        self.params = params or TrainParams()
        self.features = features
        self.name = name or ("hybrid" if features else "no features")
        self.epochs_from = epochs_from
        self.progress = progress

    def fit(self, data: EvalData) -> "LightFMScorer":
        train = sp.csr_matrix(data.train)
        train.eliminate_zeros()            # an explicit 0 is no interaction
        train = train.tocoo()
        cfg = self.params.feature_config() if self.features else \
            FeatureConfig.identities_only()
        users_seen, items_seen = np.unique(train.row), np.unique(train.col)
        space = fit_feature_space(data.users, data.items,
                                  [int(data.users[p]["id"]) for p in users_seen],
                                  [int(data.items[p]["id"]) for p in items_seen], cfg)
        fu, fi = space.user_matrix(data.users), space.item_matrix(data.items)
        ones = sp.coo_matrix((np.ones(train.nnz, np.float32), (train.row, train.col)),
                             shape=train.shape)
        epochs = self.params.epochs
        if self.epochs_from is not None and self.epochs_from.served is not None:
            epochs = int(self.epochs_from.served.metrics["epochs"])
        report = (lambda e, _n: self.progress(e, epochs)) if self.progress else None
        model, _, _ = fit_lightfm(self.params, ones, train, fu, fi, epochs, report)
        _, self.user_emb = model.get_user_representations(fu)
        self.item_bias, self.item_emb = model.get_item_representations(fi)
        self.space = space
        return self

    def scores(self, user_positions: np.ndarray, protocol: str = "repeat") -> np.ndarray:
        return self.user_emb[user_positions] @ self.item_emb.T + self.item_bias[None, :]


class ServedScorer:
    """What ``pushgen train`` + ``pushgen rank`` serve, trained on the training part."""

    name = "served blend"

    def __init__(self, params: TrainParams | None = None,
                 progress: Callable[[int, int], None] | None = None) -> None:
        self.params = params or TrainParams()
        self.progress = progress
        self.served: ServedModel | None = None

    def fit(self, data: EvalData) -> "ServedScorer":
        if data.log is None:
            raise PushgenError("the served blend needs the training events (EvalData.log)")
        report = (lambda done, total, _m: self.progress(done, total)) if self.progress else None
        self.served = fit_served(data.users, data.items, data.log, self.params, report)
        catalog = Catalog.in_memory(data.users, data.items, data.log, data.today)
        self.ranker = Ranker(self.served, catalog)
        self.user_ids = np.array([int(u["id"]) for u in data.users], np.int64)
        return self

    def scores(self, user_positions: np.ndarray, protocol: str = "repeat") -> np.ndarray:
        mode = "never" if protocol == "new" else None
        return self.ranker.score_rows(self.user_ids[user_positions].tolist(), mode)


class HybridOfServed:
    """The LightFM model inside the served blend, alone (no popularity, no buy-again)."""

    name = "hybrid"

    def __init__(self, served: ServedScorer) -> None:
        self.served = served

    def fit(self, data: EvalData) -> "HybridOfServed":
        r = self.served.ranker
        bias, emb = r.item_representations()
        self.item_bias, self.item_emb = bias, emb
        self.user_ids = self.served.user_ids
        return self

    def scores(self, user_positions: np.ndarray, protocol: str = "repeat") -> np.ndarray:
        batch = self.served.ranker.users(self.user_ids[user_positions].tolist())
        return batch.user_emb @ self.item_emb.T + self.item_bias[None, :]


# -- the comparison --------------------------------------------------------------------------------
@dataclass
class Comparison:
    """Metrics rows per protocol (same scorers, same users) and how long it all took."""

    split: str
    k: int
    rows: dict[str, list[Metrics]]
    users: dict[str, int]
    note: str = ""
    seconds: float = 0.0
    fit_seconds: dict[str, float] = field(default_factory=dict)
    served: ServedModel | None = None


def compare(data: EvalData, scorers: Sequence[Scorer], k: int = 10, seed: int = 42,
            progress: EvalProgress | None = None) -> Comparison:
    """Fit every scorer, then measure it on every protocol of ``data``."""
    started = time.perf_counter()
    cats = data.item_categories()
    has_cats = len(set(cats.tolist())) > 1
    rows: dict[str, list[Metrics]] = {p: [] for p in data.protocols}
    fit_seconds: dict[str, float] = {}
    n_eval = len(data.eval_users) if data.eval_users is not None else \
        int((np.diff(sp.csr_matrix(data.test).indptr) > 0).sum())
    for s in scorers:
        if progress:
            progress(f"training {s.name}", 0, 0)
        t = time.perf_counter()
        s.fit(data)
        fit_seconds[s.name] = round(time.perf_counter() - t, 2)
        for protocol in data.protocols:
            done = [0]

            def tick(n: int) -> None:
                done[0] += n
                if progress:
                    progress(f"scoring {s.name} ({PROTOCOLS[protocol]})", done[0], n_eval)

            t = time.perf_counter()
            m = evaluate_scores(s.name, lambda u, s=s, p=protocol: s.scores(u, p), data.test,
                                data.seen() if protocol == "new" else None, k,
                                cats if has_cats else None, data.candidates, data.eval_users,
                                seed=seed, progress=tick)
            m.seconds = round(fit_seconds[s.name] + time.perf_counter() - t, 2)
            rows[protocol].append(m)
    served = next((s.served for s in scorers if isinstance(s, ServedScorer)), None)
    return Comparison("", k, rows, {p: (r[0].users if r else 0) for p, r in rows.items()},
                      data.note, round(time.perf_counter() - started, 2), fit_seconds, served)


def default_scorers(params: TrainParams | None = None,
                    progress: Callable[[str], Callable[[int, int], None]] | None = None
                    ) -> list[Scorer]:
    """random, popularity, buy-again, LightFM without features, the hybrid, the served blend
    (the served blend is fitted first: the other LightFM rows reuse its number of epochs)."""
    params = params or TrainParams()
    served = ServedScorer(params, progress("served blend") if progress else None)
    return [RandomScorer(params.seed), PopularityScorer(), BuyAgainScorer(), served,
            LightFMScorer(params, False, "no features", served,
                          progress("no features") if progress else None),
            HybridOfServed(served)]


def _ordered(rows: list[Metrics]) -> list[Metrics]:
    order = ["random", "popularity", "buy-again", "no features", "hybrid", "served blend"]
    return sorted(rows, key=lambda m: order.index(m.name) if m.name in order else len(order))


def check_evaluate_args(split: str, k: int, fraction: float) -> None:
    """One-line PushgenError for an impossible split, list length or held-out fraction."""
    if split not in SPLITS:
        raise PushgenError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    if k < 1:
        raise PushgenError(f"--k must be at least 1 (got {k})")
    if not 0 < fraction < 1:
        raise PushgenError("--fraction must be between 0 and 1, e.g. 0.2")


def evaluate_store(db: Database, split: str = "time", k: int = 10,
                   params: TrainParams | None = None, fraction: float = 0.2, seed: int = 42,
                   progress: EvalProgress | None = None, max_users: int | None = 20_000
                   ) -> Comparison:
    """Split the store's events, then compare the baselines, the hybrid and the served blend
    (scored on at most ``max_users`` test customers, a fixed random sample: plenty for p@k
    to two decimals, and scoring stays a fraction of the training time)."""
    params = params or TrainParams()
    check_evaluate_args(split, k, fraction)
    check_params(db, params)
    log = load_log(db)
    if len(log) < 10:
        raise PushgenError("too few events to evaluate (need at least 10)")
    data = split_store_events(store.user_rows(db), store.item_rows(db), log, params, split,
                              fraction, seed, max_users)

    def epoch_progress(name: str) -> Callable[[int, int], None]:
        return lambda done, total: progress(f"training {name}", done, total) if progress \
            else None

    result = compare(data, default_scorers(params, epoch_progress), k, seed, progress)
    result.split = split
    result.rows = {p: _ordered(r) for p, r in result.rows.items()}
    return result


__all__ = ["SPLITS", "PROTOCOLS", "EvalData", "Comparison", "Scorer", "RandomScorer",
           "ConstantScorer", "PopularityScorer", "BuyAgainScorer", "LightFMScorer",
           "ServedScorer", "HybridOfServed", "compare", "default_scorers", "evaluate_store",
           "split_store_events", "check_evaluate_args"]
