"""The served scorer: a blend of the personal model, popularity and buy-again.

    score(user, item) = hybrid * lightfm(user, item) / scale
                      + popularity * z_log_popularity(item)      (shop-wide or user's segment)
                      + buy_again * log(1 + days the user bought the item)

The LightFM score is divided by its typical spread across a user's items (``scale``), and the
popularity is standardised, so the weights are comparable and carry over from the model
trained on the earlier days to the one retrained on every day. The weights are chosen on the
held-out days (``choose_weights``), once for lists where bought items may come back and once
for lists of new items only; the personal model keeps a weight only when it ranks measurably
better than the same blend without it (mean per-user gain above two standard errors and 5%),
and among blends within one standard error of the best the one leaning most on popularity
is served.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import scipy.sparse as sp

from .metrics import Metrics, paired_gain, quantized
from .repeat import REPEAT_MODES
from .topk import INVALID

POP_KINDS = ("overall", "segment")
_POP_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
_REPEAT_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 1000.0)   # 1000: bought items first
# The personal model must add 5% p@k and two standard errors: LightFM's own run-to-run noise
# (2-thread training, about +-0.004 p@10) and the drift from the held-out days to the next
# ones are not in the standard error. On a 167-item grocery file a +4% "gain" on the held-out
# days became -6% on the following months; popularity is the robust choice there.
_MIN_GAIN = 0.05
DUE_TOLERANCE = 0.01      # "due" is the default unless waiting costs more than 1% p@k


@dataclass(frozen=True)
class BlendWeights:
    hybrid: float = 1.0
    popularity: float = 0.0
    pop_kind: str = "overall"
    buy_again: float = 0.0

    def describe(self) -> str:
        """"popularity + 0.5 x buy-again", "personal model + 2 x popularity (segment)"."""
        pop = "popularity" + (" in the customer's segment" if self.pop_kind == "segment" else "")
        parts = []
        for name, w in (("personal model", self.hybrid), (pop, self.popularity),
                        ("buy-again", self.buy_again)):
            if not w:
                continue
            if name == "buy-again" and w >= 1000:
                parts.insert(0, "bought items first, then")
            else:
                parts.append(name if w == 1 else f"{w:g} x {name}")
        return " + ".join(parts).replace("then +", "then") or "popularity"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "BlendWeights":
        return cls(**{k: d[k] for k in ("hybrid", "popularity", "pop_kind", "buy_again")
                      if k in d})


@dataclass
class Blend:
    """What ``rank`` serves: weights per protocol, the default repeat mode, the note."""

    repeat: BlendWeights          # lists where bought items may come back ("due", "always")
    new: BlendWeights             # lists of new items only ("never")
    repeat_default: str = "never"
    hybrid_scale: float = 1.0
    personal: bool = True         # the LightFM model measurably adds to popularity
    note: str = ""                # one plain line for train, rank and draft ("" = nothing)
    repeat_reason: str = ""

    def weights_for(self, repeat: str) -> BlendWeights:
        return self.new if repeat == "never" else self.repeat

    def to_dict(self) -> dict[str, Any]:
        return {"repeat": self.repeat.to_dict(), "new": self.new.to_dict(),
                "repeat_default": self.repeat_default, "hybrid_scale": self.hybrid_scale,
                "personal": self.personal, "note": self.note,
                "repeat_reason": self.repeat_reason}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Blend":
        return cls(BlendWeights.from_dict(d["repeat"]), BlendWeights.from_dict(d["new"]),
                   str(d.get("repeat_default", "never")), float(d.get("hybrid_scale", 1.0)),
                   bool(d.get("personal", True)), str(d.get("note", "")),
                   str(d.get("repeat_reason", "")))

    @classmethod
    def personal_only(cls, repeat_default: str, hybrid_scale: float = 1.0) -> "Blend":
        """The blend when nothing could be validated: the personal model, plus bought items
        first where they may come back."""
        return cls(BlendWeights(1.0, 0.0, "overall", 1.0), BlendWeights(1.0, 0.0), repeat_default,
                   hybrid_scale)


@dataclass
class BlendInputs:
    """Everything a blend needs for a set of users (rows) over the catalog (columns)."""

    hybrid: np.ndarray          # (users, items) LightFM scores already divided by the scale
    pop: np.ndarray             # (segments, items) standardised log popularity; row 0 = shop
    segment: np.ndarray         # (users,) row of ``pop`` of each user
    buy_again: sp.csr_matrix    # (users, items) repeat strength of bought items
    not_due: sp.csr_matrix      # (users, items) 1: bought and its cycle has not passed
    bought: sp.csr_matrix       # (users, items) 1: bought


def _set(scores: np.ndarray, m: sp.csr_matrix, value: float) -> None:
    if m.nnz:
        rr = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
        scores[rr, m.indices] = value


def blend_scores(inp: BlendInputs, rows: np.ndarray, w: BlendWeights, repeat: str
                 ) -> np.ndarray:
    """Dense blend scores of ``rows``; items the repeat mode keeps out score ``INVALID``."""
    n_items = inp.pop.shape[1]
    s = np.zeros((len(rows), n_items), np.float32)
    if w.hybrid:
        s += np.float32(w.hybrid) * inp.hybrid[rows]
    if w.popularity:
        pop = inp.pop[inp.segment[rows]] if w.pop_kind == "segment" else inp.pop[:1]
        s += np.float32(w.popularity) * pop
    if w.buy_again and inp.buy_again.nnz:
        s += np.float32(w.buy_again) * inp.buy_again[rows].toarray().astype(np.float32)
    if repeat == "never":
        _set(s, inp.bought[rows], INVALID)
    elif repeat == "due":
        _set(s, inp.not_due[rows], INVALID)
    return s


@dataclass
class Choice:
    weights: BlendWeights
    metrics: Metrics
    impersonal: BlendWeights      # the best blend without the personal model
    impersonal_metrics: Metrics
    personal: bool


class _Search:
    """p@k of weight sets on one protocol, cached by weights.

    The users, their truth and the random tie-breaking are fixed once, so every weight set is
    measured on exactly the same draw (common random numbers: comparisons are not blurred by
    tie-breaking noise) and only the scores are recomputed.
    """

    def __init__(self, inp: BlendInputs, truth: sp.csr_matrix, exclude: sp.csr_matrix | None,
                 repeat: str, k: int, users: np.ndarray | None, seed: int) -> None:
        self.inp, self.repeat, self.k = inp, repeat, k
        rows = np.arange(truth.shape[0]) if users is None else np.asarray(users)
        t = truth[rows].toarray() > 0
        excluded = exclude[rows].toarray() > 0 if exclude is not None else np.zeros_like(t)
        t &= ~excluded
        keep = t.any(axis=1)
        self.rows, self.truth, self.excluded = rows[keep], t[keep], excluded[keep]
        self.noise = np.random.default_rng(seed).random(self.truth.shape) * 0.49
        self.cache: dict[BlendWeights, Metrics] = {}

    def __call__(self, w: BlendWeights) -> Metrics:
        if w not in self.cache:
            scores = blend_scores(self.inp, self.rows, w, self.repeat)
            invalid = scores <= INVALID
            s = quantized(scores, invalid)
            s += self.noise
            s[invalid | self.excluded] = -np.inf
            k = min(self.k, s.shape[1])
            top = np.argpartition(s, s.shape[1] - k, axis=1)[:, s.shape[1] - k:]
            ok = np.take_along_axis(s, top, axis=1) > -np.inf
            hits = (np.take_along_axis(self.truth, top, axis=1) & ok).sum(axis=1)
            per_user = hits / self.k
            self.cache[w] = Metrics(w.describe(), float(per_user.mean()) if len(per_user)
                                    else 0.0, np.nan, np.nan, np.nan, np.nan, None,
                                    len(per_user), per_user=per_user)
        return self.cache[w]

    def best(self, current: BlendWeights, candidates: list[BlendWeights]) -> BlendWeights:
        """The candidate with the highest p@k; ``current`` unless one is strictly better."""
        best, best_p = current, self(current).precision
        for w in candidates:
            p = self(w).precision
            if p > best_p + 1e-12:
                best, best_p = w, p
        return best


def choose_weights(inp: BlendInputs, truth: sp.csr_matrix, exclude: sp.csr_matrix | None,
                   repeat: str, k: int = 10, users: np.ndarray | None = None,
                   seed: int = 42) -> Choice:
    """The best blend on one protocol (a coarse coordinate search of the weights).

    ``repeat`` is the mode the lists are scored under ("always" lets bought items in with the
    buy-again term; "never" with ``exclude`` = seen items is the new-items-only protocol).
    """
    search = _Search(inp, truth, exclude, repeat, k, users, seed)
    kinds = list(POP_KINDS if inp.pop.shape[0] > 1 else POP_KINDS[:1])
    rep = list(_REPEAT_GRID) if repeat != "never" and inp.buy_again.nnz else [0.0]
    base = BlendWeights(0.0, 1.0, "overall", 0.0)
    impersonal = search.best(base, [BlendWeights(0.0, 1.0, kd, r) for kd in kinds for r in rep])
    cur = search.best(BlendWeights(1.0, 0.0, "overall", 0.0),
                      [BlendWeights(1.0, 0.0, "overall", r) for r in rep])
    for _ in range(2):
        cur = search.best(cur, [dataclasses.replace(cur, popularity=p, pop_kind=kd)
                                for kd in kinds for p in _POP_GRID])
        cur = search.best(cur, [dataclasses.replace(cur, buy_again=r) for r in rep])
    # One-standard-error rule: of the blends within one standard error of the best, serve
    # the one that leans most on popularity (the most robust part).
    best = search(cur)
    near = [w for w, m in search.cache.items() if w.hybrid and w.popularity > cur.popularity
            and best.precision - m.precision <= paired_gain(best.per_user, m.per_user)[1]]
    if near:
        cur = max(near, key=lambda w: (w.popularity, search(w).precision))
    m, m0 = search(cur), search(impersonal)
    gain, se = paired_gain(m.per_user, m0.per_user)
    personal = gain > 2 * se and gain > _MIN_GAIN * m0.precision
    return Choice(cur if personal else impersonal, m if personal else m0, impersonal, m0,
                  personal)


def hybrid_scale(user_emb: np.ndarray, item_emb: np.ndarray, item_bias: np.ndarray,
                 sample: int = 2000, seed: int = 0) -> float:
    """Typical spread of LightFM scores across one user's items (mean per-user std)."""
    if not len(user_emb) or not len(item_emb):
        return 1.0
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(user_emb), size=min(sample, len(user_emb)), replace=False)
    s = user_emb[rows] @ item_emb.T + item_bias[None, :]
    spread = float(s.std(axis=1).mean())
    return spread if np.isfinite(spread) and spread > 1e-9 else 1.0


__all__ = ["BlendWeights", "Blend", "BlendInputs", "Choice", "blend_scores", "choose_weights",
           "hybrid_scale", "REPEAT_MODES", "POP_KINDS", "DUE_TOLERANCE"]
