"""Ranking metrics at k, computed in blocks of users with score ties broken at random.

Used by training (early stopping and the validation table) and by evaluation alike, so both
measure the same thing. Ties matter: a scorer that gives many items the same score (every
unseen item, for a popularity or no-feature model under item cold start) must score as a
random ranking of them, not as whatever order the items happen to have. Each score is nudged
by a random amount below half its float32 spacing (fixed seed), which orders equal scores at
random and never reorders different ones. AUC counts ties as half (Mann-Whitney).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp

from ..errors import PushgenError
from .topk import INVALID, topk_rows

ScoreFn = Callable[[np.ndarray], np.ndarray]


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
    per_user: np.ndarray | None = field(default=None, repr=False)   # precision of each user

    def as_dict(self) -> dict[str, Any]:
        return {"precision": self.precision, "recall": self.recall, "ndcg": self.ndcg,
                "auc": self.auc, "coverage": self.coverage, "diversity": self.diversity,
                "users": self.users}


def quantized(scores: np.ndarray, invalid: np.ndarray | None = None) -> np.ndarray:
    """Scores as whole multiples of a millionth of each row's largest magnitude (float64);
    ``invalid`` entries come out below every other score of their row.

    Equal scores are not always bit-equal: BLAS kernels round edge columns of a matrix
    product differently, so a model's constant score for every unseen item comes out with
    position-dependent noise in the last bits, which is the item-order bias again.
    """
    q = np.array(scores, np.float64)
    any_invalid = invalid is not None and invalid.any()
    if any_invalid:
        q[invalid] = 0.0
    scale = np.maximum(q.max(axis=1, keepdims=True), -q.min(axis=1, keepdims=True)) \
        if q.shape[1] else np.ones((len(q), 1))
    scale[scale <= 0] = 1.0
    q *= 1e6 / scale
    q += 0.5
    np.floor(q, out=q)
    if any_invalid:
        lowest = q.min(axis=1, keepdims=True) - 1.0
        q[invalid] = np.broadcast_to(lowest, q.shape)[invalid]
    return q


def tie_broken(quantized_scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Whole-number scores plus a random fraction below 0.5: ties in random order, distinct
    scores in their order."""
    noise = rng.random(quantized_scores.shape)
    noise *= 0.49
    noise += quantized_scores
    return noise


def _block(scores: np.ndarray, truth: sp.csr_matrix, exclude: sp.csr_matrix | None, k: int,
           not_candidate: np.ndarray | None, rng: np.random.Generator, with_auc: bool
           ) -> tuple[np.ndarray, ...]:
    """Per-user precision, recall, NDCG, AUC, the top-k and positives of one block."""
    n_items = scores.shape[1]
    excluded = np.zeros(scores.shape, bool)
    if exclude is not None and exclude.nnz:
        rr = np.repeat(np.arange(exclude.shape[0]), np.diff(exclude.indptr))
        excluded[rr, exclude.indices] = True
    if not_candidate is not None:
        excluded[:, not_candidate] = True
    invalid = np.asarray(scores) <= INVALID            # the scorer's own exclusions
    q = quantized(scores, invalid | excluded)
    s = tie_broken(q, rng)
    s[invalid | excluded] = -np.inf                     # never shown
    top, _ = topk_rows(s, k, 0)
    pos = truth.toarray().astype(bool) & ~excluded
    n_pos = pos.sum(axis=1)
    hits = np.take_along_axis(pos, np.maximum(top, 0), axis=1) & (top >= 0)
    precision = hits.sum(axis=1) / k
    recall = hits.sum(axis=1) / np.maximum(n_pos, 1)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits * discounts).sum(axis=1)
    idcg = np.cumsum(discounts)[np.clip(np.minimum(n_pos, k) - 1, 0, None)]
    ndcg = dcg / np.where(n_pos > 0, idcg, 1.0)
    if not with_auc:
        return precision, recall, ndcg, np.full(len(precision), np.nan), top, n_pos
    # Mann-Whitney AUC over the candidate items (ties count half); excluded ones at the bottom.
    from scipy.stats import rankdata   # here: importing scipy.stats costs drafting 2 s

    ranks = rankdata(np.where(excluded, -np.inf, q), axis=1)
    n_excl = excluded.sum(axis=1)
    n_neg = n_items - n_excl - n_pos
    sum_pos_ranks = np.where(pos, ranks, 0).sum(axis=1)
    auc = (sum_pos_ranks - n_pos * (n_pos + 1) / 2 - n_pos * n_excl) / np.maximum(
        n_pos * n_neg, 1)
    return precision, recall, ndcg, auc, top, n_pos


def evaluate_scores(name: str, score_fn: ScoreFn, truth: sp.spmatrix,
                    exclude: sp.spmatrix | None = None, k: int = 10,
                    item_categories: np.ndarray | None = None,
                    candidates: np.ndarray | None = None, users: np.ndarray | None = None,
                    seed: int = 42, block: int = 1024, with_auc: bool = True,
                    progress: Callable[[int], None] | None = None) -> Metrics:
    """Metrics of ``score_fn(user_positions)`` over the users with a positive in ``truth``.

    ``exclude`` (users x items) takes items out of both the ranking and the truth (for
    example each user's training items under the "new items only" protocol); ``candidates``
    restricts every ranking to those item positions (item cold start); ``users`` restricts the
    users; ``with_auc=False`` skips the AUC (a full sort of every row). Scores at or below
    ``topk.INVALID`` are the scorer's own exclusions: never in a list, still counted in the
    truth.
    """
    if k < 1:
        raise PushgenError(f"k must be at least 1 (got {k})")
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    truth = sp.csr_matrix(truth)
    exclude = sp.csr_matrix(exclude) if exclude is not None else None
    has = np.diff(truth.indptr) > 0
    if users is not None:
        keep = np.zeros(len(has), bool)
        keep[users] = True
        has &= keep
    todo = np.flatnonzero(has)
    not_cand = None
    if candidates is not None:
        not_cand = np.ones(truth.shape[1], bool)
        not_cand[candidates] = False
    parts: list[list[np.ndarray]] = [[], [], [], []]
    seen = np.zeros(truth.shape[1], bool)
    div: list[np.ndarray] = []
    for start in range(0, len(todo), block):
        u = todo[start:start + block]
        p, r, n, a, top, n_pos = _block(score_fn(u), truth[u],
                                        exclude[u] if exclude is not None else None, k,
                                        not_cand, rng, with_auc)
        ok = n_pos > 0            # every positive may be excluded (e.g. all seen in training)
        for lst, v in zip(parts, (p, r, n, a)):
            lst.append(v[ok])
        seen[top[ok][top[ok] >= 0]] = True
        if item_categories is not None:
            cats = np.where(top >= 0, item_categories[np.maximum(top, 0)], -1)[ok]
            kk = top.shape[1]
            same = (cats[:, :, None] == cats[:, None, :]).sum(axis=(1, 2)) - kk
            div.append(1.0 - same / max(kk * (kk - 1), 1))
        if progress:
            progress(len(u))
    per = [np.concatenate(x) if x else np.empty(0) for x in parts]
    vals = [float(v.mean()) if len(v) else 0.0 for v in per]
    n_cand = len(candidates) if candidates is not None else truth.shape[1]
    return Metrics(name, *vals, coverage=float(seen.sum() / max(n_cand, 1)),
                   diversity=float(np.concatenate(div).mean()) if div else None,
                   users=len(per[0]), seconds=round(time.perf_counter() - started, 2),
                   per_user=per[0])


def paired_gain(better: np.ndarray, base: np.ndarray) -> tuple[float, float]:
    """Mean per-user gain of ``better`` over ``base`` and its standard error."""
    d = np.asarray(better, float) - np.asarray(base, float)
    if len(d) < 2:
        return float(d.mean()) if len(d) else 0.0, float("inf")
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))


def lift(value: float, base: float) -> float | None:
    """Relative change over ``base`` (0.12 = 12% better), None when base is 0."""
    return value / base - 1.0 if base > 0 else None
