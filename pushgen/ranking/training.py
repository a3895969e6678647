"""Training: fit LightFM on the shop's events, validate on the most recent days, pick the blend.

``fit_served(users, items, log, params)`` is the whole procedure on in-memory data, so
``model_store.train`` (the store), ``evaluate`` (a training part) and the benchmarks run
exactly the same steps:

1. Hold out the last ``holdout`` share of the distinct event days (skipped, with a note, when
   there are too few days or customers active on both sides).
2. Fit the hybrid on the earlier days with early stopping on the held-out days, and the
   no-feature model for the same number of epochs (a baseline for the table).
3. Choose the blend (``blend.choose_weights``) and the default repeat mode on the held-out days,
   and build the comparison table: popularity, buy-again, no features, hybrid, the blend.
4. Refit the hybrid on every day with the chosen number of epochs; popularity and repurchase
   cycles come from every day too.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import scipy.sparse as sp
from lightfm import LightFM
from sqlite_utils import Database

from ..errors import PushgenError
from ..store import ranking as store
from .blend import DUE_TOLERANCE, Blend, BlendInputs, BlendWeights, blend_scores, \
    choose_weights, hybrid_scale
from .events import DEFAULT_EVENT_WEIGHTS, PURCHASE, EventLog, day_cut, day_label, \
    interaction_weights
from .features import DEFAULT_USER_FIELDS, USER_COLUMN_FIELDS, FeatureConfig, FeatureSpace, \
    fit_feature_space
from .metrics import Metrics, evaluate_scores, lift
from .popularity import Popularity
from .repeat import Cycles, Purchases, buy_again_strength, default_repeat, learn_cycles, \
    not_due, purchases

LOSSES = ("warp", "bpr", "logistic", "warp-kos")
MIN_HOLDOUT_DAYS = 5         # fewer distinct days than this: no validation
MIN_HOLDOUT_USERS = 100      # fewer customers active before and in the held-out days: none
MAX_VALIDATION_USERS = 10_000   # a sample of them is plenty to compare rankers
BLEND_CELLS = 1_500_000      # users x items scored per weight set while choosing the blend

Progress = Callable[[int, int, dict[str, float]], None]   # (epochs done, planned, metrics)
Stage = Callable[[str], None]


@dataclass
class TrainParams:
    """Everything that decides a model; stored with it in ``models.params``."""

    loss: str = "warp"
    components: int = 32
    epochs: int = 20                     # the most epochs; early stopping on the held-out
                                         # days picks the number (exactly this many without)
    learning_rate: float = 0.05
    learning_schedule: str = "adagrad"
    item_alpha: float = 1e-6
    user_alpha: float = 1e-6
    max_sampled: int = 30
    threads: int = 2
    seed: int = 42
    event_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    rating_threshold: float = 4.0        # rating events count when value >= this
    half_life_days: float | None = None  # exponential time decay of event weights
    user_features: tuple[str, ...] = ()  # extra user attributes on top of the defaults
    meta_weight: float | None = 0.25     # see features.py: total weight of metadata per row
    cold_meta_weight: float | None = 0.25  # None: every feature weighs 1
    normalize_rows: bool = False
    text_tokens: bool = True             # words of item titles and descriptions as features
    min_token_items: int = 5             # ... when on at least this many items
    holdout: float = 0.15                # share of the most recent days held out (0: none)
    eval_every: int = 2
    patience: int = 2
    eval_k: int = 10

    def feature_config(self) -> FeatureConfig:
        fields = tuple(dict.fromkeys(DEFAULT_USER_FIELDS + tuple(self.user_features)))
        return FeatureConfig(user_fields=fields, meta_weight=self.meta_weight,
                             cold_meta_weight=self.cold_meta_weight,
                             normalize_rows=self.normalize_rows, text_tokens=self.text_tokens,
                             min_token_items=self.min_token_items)

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
        if not (math.isfinite(self.holdout) and 0 <= self.holdout < 1):
            raise PushgenError(f"--holdout is a share of the days between 0 and 1, e.g. 0.15 "
                               f"(0 skips validation; got {self.holdout})")
        if self.eval_every < 1 or self.patience < 1 or self.eval_k < 1 or self.max_sampled < 1 \
                or self.min_token_items < 1:
            raise PushgenError("eval_every, patience, eval_k, max_sampled and min_token_items "
                               "must be at least 1")
        for kind, weight in self.event_weights.items():
            if not str(kind).strip():
                raise PushgenError("--event-weight: the event kind is empty, e.g. purchase=5")
            if not isinstance(weight, (int, float)) or not math.isfinite(weight):
                raise PushgenError(f"--event-weight {kind}={weight}: the weight must be a number")
            if weight < 0 and kind != "return":
                raise PushgenError(f"--event-weight {kind}={weight}: the weight must be 0 or "
                                   "more (only return events count against an item)")
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
class ServedModel:
    """A trained model and everything ``rank`` serves with it."""

    model: LightFM
    space: FeatureSpace
    params: TrainParams
    blend: Blend
    popularity: Popularity
    cycles: Cycles
    validation: dict[str, Any]     # the comparison table on the held-out days (or why none)
    metrics: dict[str, Any]        # counts and seconds

    @property
    def n_users(self) -> int:
        return len(self.space.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.space.item_ids)


# -- LightFM -----------------------------------------------------------------------------------
_ARRAYS = ("user_embeddings", "user_biases", "item_embeddings", "item_biases")


def new_model(params: TrainParams) -> LightFM:
    return LightFM(no_components=params.components, loss=params.loss,
                   learning_rate=params.learning_rate,
                   learning_schedule=params.learning_schedule, item_alpha=params.item_alpha,
                   user_alpha=params.user_alpha, max_sampled=params.max_sampled,
                   random_state=np.random.RandomState(params.seed))


def fit_lightfm(params: TrainParams, interactions: sp.coo_matrix, weights: sp.coo_matrix | None,
                user_features: sp.csr_matrix, item_features: sp.csr_matrix, epochs: int,
                progress: Callable[[int, dict[str, float]], None] | None = None,
                validate: Callable[[LightFM], float] | None = None
                ) -> tuple[LightFM, int, float | None]:
    """Fit epoch by epoch; with ``validate`` (a score, higher is better) evaluate every
    ``eval_every`` epochs, keep the best snapshot and stop after ``patience`` evaluations
    without gain. Returns the model, its number of epochs and its validation score."""
    model = new_model(params)
    best_score: float | None = None
    best_epoch, best_arrays, stale = epochs, None, 0
    for epoch in range(1, epochs + 1):
        model.fit_partial(interactions, user_features=user_features,
                          item_features=item_features, sample_weight=weights, epochs=1,
                          num_threads=params.threads)
        note: dict[str, float] = {}
        if validate and (epoch % params.eval_every == 0 or epoch == epochs):
            score = validate(model)
            note = {f"p@{params.eval_k}": score}
            if best_score is None or score > best_score:
                best_score, best_epoch, stale = score, epoch, 0
                best_arrays = {a: getattr(model, a).copy() for a in _ARRAYS}
            else:
                stale += 1
        if progress:
            progress(epoch, note)
        if validate and stale >= params.patience:
            break
    if best_arrays is not None:
        for a, v in best_arrays.items():
            setattr(model, a, v)
    return model, best_epoch, best_score


@dataclass
class _Fit:
    """LightFM inputs over one set of events: rows = users with interactions (``space``
    order), item rows = the whole catalog (items without interactions are cold)."""

    space: FeatureSpace
    user_features: sp.csr_matrix
    item_features: sp.csr_matrix
    interactions: sp.coo_matrix
    weights: sp.coo_matrix
    user_ids: np.ndarray      # sorted; row r of user_features is user_ids[r]

    def representations(self, model: LightFM, rows: np.ndarray | None = None
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(user embeddings of ``rows``, item biases, item embeddings) as float32."""
        fu = self.user_features if rows is None else self.user_features[rows]
        _, ue = model.get_user_representations(fu)
        ib, ie = model.get_item_representations(self.item_features)
        return (np.asarray(ue, np.float32), np.asarray(ib, np.float32),
                np.asarray(ie, np.float32))


def _fit_inputs(users: Sequence[Mapping[str, Any]], items: Sequence[Mapping[str, Any]],
                item_ids: np.ndarray, u: np.ndarray, i: np.ndarray, w: np.ndarray,
                config: FeatureConfig, user_by_id: Mapping[int, Mapping[str, Any]],
                like: FeatureSpace | None = None) -> _Fit:
    trained = np.unique(u)
    space = fit_feature_space(users, items, trained.tolist(), np.unique(i).tolist(), config,
                              like)
    fu = space.user_matrix([user_by_id[int(x)] for x in trained])
    fi = space.item_matrix(items)
    row, col = np.searchsorted(trained, u), np.searchsorted(item_ids, i)
    shape = (len(trained), len(item_ids))
    ones = sp.coo_matrix((np.ones(len(w), np.float32), (row, col)), shape=shape)
    weights = sp.coo_matrix((w.astype(np.float32), (row, col)), shape=shape)
    return _Fit(space, fu, fi, ones, weights, trained)


# -- inputs of the blend -------------------------------------------------------------------------
def _pairs_matrix(u: np.ndarray, i: np.ndarray, values: np.ndarray | None, user_ids: np.ndarray,
                  item_ids: np.ndarray) -> sp.csr_matrix:
    """(users x items) CSR of pairs whose user is in ``user_ids`` (sorted)."""
    r = np.searchsorted(user_ids, u)
    ok = (r < len(user_ids)) & (user_ids[np.minimum(r, len(user_ids) - 1)] == u)
    c = np.searchsorted(item_ids, i[ok])
    v = np.ones(int(ok.sum()), np.float32) if values is None else values[ok].astype(np.float32)
    m = sp.csr_matrix((v, (r[ok], c)), shape=(len(user_ids), len(item_ids)))
    m.sum_duplicates()
    return m


def purchase_matrices(p: Purchases, cycles: Cycles, today: int, user_ids: np.ndarray,
                      item_ids: np.ndarray) -> tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix]:
    """(buy-again strength, not due, bought) as users x items matrices."""
    strength = buy_again_strength(p)
    wait = not_due(p, cycles, today).astype(np.float32)
    return (_pairs_matrix(p.user, p.item, strength, user_ids, item_ids),
            _pairs_matrix(p.user, p.item, wait, user_ids, item_ids),
            _pairs_matrix(p.user, p.item, None, user_ids, item_ids))


def _drop_zeros(m: sp.csr_matrix) -> sp.csr_matrix:
    m.eliminate_zeros()
    return m


# -- the procedure -------------------------------------------------------------------------------
def fit_served(users: Sequence[Mapping[str, Any]], items: Sequence[Mapping[str, Any]],
               log: EventLog, params: TrainParams, progress: Progress | None = None,
               on_stage: Stage | None = None) -> ServedModel:
    """Validate on the most recent days, choose the blend, refit on every day (see module)."""
    started = time.perf_counter()
    items = sorted(items, key=lambda r: int(r["id"]))
    item_ids = np.array([int(r["id"]) for r in items], np.int64)
    user_by_id = {int(r["id"]): r for r in users}
    known = np.isin(log.user, np.fromiter(user_by_id, np.int64, len(user_by_id))) & \
        np.isin(log.item, item_ids)
    log = log.subset(known)
    u, i, w = interaction_weights(log, params.event_weights, params.rating_threshold,
                                  params.half_life_days)
    if len(w) == 0:
        raise PushgenError("no usable events to train on: import events first "
                           "(`pushgen import events FILE`) or check --event-weight")
    planned = [params.epochs, params.epochs, params.epochs]   # validation, baseline, final
    done = [0, 0, 0]

    def stage_progress(stage: int) -> Callable[[int, dict[str, float]], None]:
        def report(epoch: int, note: dict[str, float]) -> None:
            done[stage] = epoch
            if progress:
                progress(sum(done), sum(planned), note)
        return report

    validation, blend, epochs, space = _validate(users, items, item_ids, user_by_id, log,
                                                 params, stage_progress, planned, on_stage)
    if not validation.get("rows"):
        planned[0] = planned[1] = 0
    if on_stage:
        on_stage("training on every day")
    planned[2] = epochs
    fit = _fit_inputs(users, items, item_ids, u, i, w, params.feature_config(), user_by_id,
                      space)
    model, _, _ = fit_lightfm(params, fit.interactions, fit.weights, fit.user_features,
                              fit.item_features, epochs, stage_progress(2))
    ue, ib, ie = fit.representations(model)
    blend.hybrid_scale = hybrid_scale(ue, ie, ib, seed=params.seed)
    popularity = Popularity.fit(users, u, i, item_ids)
    cycles = learn_cycles(log)
    metrics = {"interactions": int(len(w)), "epochs": epochs,
               "train_seconds": round(time.perf_counter() - started, 2)}
    return ServedModel(model, fit.space, params, blend, popularity, cycles, validation, metrics)


def _validate(users, items, item_ids, user_by_id, log: EventLog, params: TrainParams,
              stage_progress, planned: list[int], on_stage: Stage | None
              ) -> tuple[dict[str, Any], Blend, int, FeatureSpace | None]:
    """Steps 1-3 of the module docstring: (validation table, blend, epochs for the refit, the
    hybrid's feature space whose vocabulary the refit reuses)."""
    cycles_all = learn_cycles(log)
    share_all, repeat_guess = cycles_all.repeat_share, default_repeat(cycles_all)

    def skipped(why: str) -> tuple[dict[str, Any], Blend, int, None]:
        note = (f"No validation: {why}. Serving the personal model for {params.epochs} epochs "
                "without a comparison.")
        blend = Blend.personal_only(repeat_guess)
        blend.note = note
        blend.repeat_reason = _repeat_reason(repeat_guess, share_all, None)
        return {"skipped": why, "repeat_share": share_all}, blend, params.epochs, None

    if params.holdout <= 0:
        return skipped("--holdout is 0")
    cut, n_before, n_after = day_cut(log, params.holdout)
    if n_before + n_after < MIN_HOLDOUT_DAYS or n_after == 0:
        return skipped(f"events span only {n_before + n_after} distinct days (at least "
                       f"{MIN_HOLDOUT_DAYS} are needed)")
    early = log.day < cut
    log_tr, log_va = log.subset(early), log.subset(~early)
    u, i, w = interaction_weights(log_tr, params.event_weights, params.rating_threshold,
                                  params.half_life_days)
    vu, vi, _ = interaction_weights(log_va, params.event_weights, params.rating_threshold)
    val_users = np.intersect1d(np.unique(u), np.unique(vu))
    if len(val_users) < MIN_HOLDOUT_USERS:
        return skipped(f"only {len(val_users)} customers have events both before and in the "
                       f"last {n_after} days (at least {MIN_HOLDOUT_USERS} are needed)")
    rng = np.random.default_rng(params.seed)
    if len(val_users) > MAX_VALIDATION_USERS:
        val_users = np.sort(rng.choice(val_users, MAX_VALIDATION_USERS, replace=False))
    cycles = learn_cycles(log_tr)
    primary = "repeat" if default_repeat(cycles) != "never" else "new"
    truth = _pairs_matrix(vu, vi, None, val_users, item_ids)
    seen = _pairs_matrix(u, i, None, val_users, item_ids)
    k = params.eval_k
    excl = {"repeat": None, "new": seen}

    if on_stage:
        on_stage(f"validating on the days from {day_label(cut)}")
    fit = _fit_inputs(users, items, item_ids, u, i, w, params.feature_config(), user_by_id)
    rows = np.searchsorted(fit.user_ids, val_users)

    def hybrid_matrix(model: LightFM, f: _Fit) -> np.ndarray:
        ue, ib, ie = f.representations(model, np.searchsorted(f.user_ids, val_users))
        return ue @ ie.T + ib[None, :]

    def validate(model: LightFM) -> float:
        h = hybrid_matrix(model, fit)
        return evaluate_scores("hybrid", lambda r: h[r], truth, excl[primary], k,
                               seed=params.seed, with_auc=False).precision

    model, epochs, _ = fit_lightfm(params, fit.interactions, fit.weights, fit.user_features,
                                   fit.item_features, params.epochs, stage_progress(0), validate)
    planned[0] = min(params.epochs, epochs + params.eval_every * params.patience)
    planned[1] = epochs
    h = hybrid_matrix(model, fit)
    ue, ib, ie = fit.representations(model, rows)
    scale = hybrid_scale(ue, ie, ib, seed=params.seed)
    if fit.space.has_metadata:
        if on_stage:
            on_stage("validating: LightFM without features")
        cf_fit = _fit_inputs(users, items, item_ids, u, i, w, FeatureConfig.identities_only(),
                             user_by_id)
        cf_model, _, _ = fit_lightfm(params, cf_fit.interactions, cf_fit.weights,
                                     cf_fit.user_features, cf_fit.item_features, epochs,
                                     stage_progress(1))
        cf = hybrid_matrix(cf_model, cf_fit)
    else:
        cf = h          # no profile or catalog features: the hybrid is the plain model
        planned[1] = 0

    if on_stage:
        on_stage("choosing the blend")
    pop = Popularity.fit(users, u, i, item_ids)
    val_rows = [user_by_id[int(x)] for x in val_users]
    today = int(log_tr.day.max())
    strength, wait, bought = purchase_matrices(purchases(log_tr), cycles, today, val_users,
                                               item_ids)
    inp = BlendInputs((h / scale).astype(np.float32), pop.z_segments(item_ids),
                      pop.segment_of(val_rows), _drop_zeros(strength), _drop_zeros(wait),
                      bought)
    n_fit = max(500, BLEND_CELLS // max(len(item_ids), 1))
    fit_users = np.sort(rng.choice(len(val_users), min(n_fit, len(val_users)), replace=False))
    choice = {"repeat": choose_weights(inp, truth, None, "always", k, fit_users, params.seed),
              "new": choose_weights(inp, truth, seen, "always", k, fit_users, params.seed)}

    def run(name: str, fn, protocol: str, on: sp.csr_matrix = truth) -> Metrics:
        return evaluate_scores(name, fn, on, excl[protocol], k, seed=params.seed,
                               with_auc=False)

    # Default repeat mode: never when customers rarely buy again; else due, unless waiting
    # for each item's cycle ranks clearly worse on this shop's held-out days. Buying again is
    # about purchases: they are the truth here when enough customers made one.
    repeat_default, due_cost = default_repeat(cycles), None
    wr = choice["repeat"].weights
    if repeat_default == "due":
        bought_va = log_va.subset(log_va.is_kind(PURCHASE))
        buys = _pairs_matrix(bought_va.user, bought_va.item, None, val_users, item_ids)
        buys.data[:] = 1.0
        on = buys if (np.diff(buys.indptr) > 0).sum() >= MIN_HOLDOUT_USERS else truth
        always = run("always", lambda r: blend_scores(inp, r, wr, "always"), "repeat", on)
        due = run("due", lambda r: blend_scores(inp, r, wr, "due"), "repeat", on)
        due_cost = -(lift(due.precision, always.precision) or 0.0)
        if due_cost > DUE_TOLERANCE:
            repeat_default = "always"

    # What `rank` serves: the repeat-protocol lists use the default mode (with the new-items
    # weights when that mode is "never"); new-items lists are what repeat = "never" serves.
    served_mode = {"repeat": repeat_default, "new": "never"}
    served_w = {"repeat": choice["new" if repeat_default == "never" else "repeat"].weights,
                "new": choice["new"].weights}
    table_rows = []
    scorers: list[tuple[str, Any]] = [
        ("popularity", lambda r, p: blend_scores(inp, r, BlendWeights(0, 1), "always")),
        ("buy-again", lambda r, p: blend_scores(inp, r, BlendWeights(0, 1, "overall", 1000),
                                                "always")),
        ("no features", lambda r, p: cf[r]),
        ("hybrid", lambda r, p: h[r]),
        ("served blend", lambda r, p: blend_scores(inp, r, served_w[p], served_mode[p])),
    ]
    for name, fn in scorers:
        row: dict[str, Any] = {"name": name}
        for protocol in ("repeat", "new"):
            if name == "buy-again" and protocol == "new":
                continue     # without bought items, buy-again is popularity
            m = run(name, lambda r, fn=fn, p=protocol: fn(r, p), protocol)
            row[protocol] = {"precision": m.precision, "recall": m.recall, "ndcg": m.ndcg,
                             "users": m.users}
        table_rows.append(row)
    for row in table_rows:
        for protocol in ("repeat", "new"):
            if protocol in row:
                row[protocol]["lift"] = lift(row[protocol]["precision"],
                                             table_rows[0][protocol]["precision"])

    main = choice[primary]
    blend = Blend(choice["repeat"].weights, choice["new"].weights, repeat_default, scale,
                  main.personal)
    served = next(r for r in table_rows if r["name"] == "served blend")[primary]
    hybrid = next(r for r in table_rows if r["name"] == "hybrid")[primary]
    if not main.personal:
        gain = lift(hybrid["precision"], served["precision"]) or 0.0
        evidence = (f"p@{k} on the held-out days: {served['precision']:.3f}, personal model "
                    f"alone {hybrid['precision']:.3f}")
        if gain > 0:
            evidence += f", {gain:.0%} better but short of the 5% it must add to be trusted"
        blend.note = (f"On your data, popularity ranks as well as the personal model; using "
                      f"{main.weights.describe()} ({evidence}).")
    blend.repeat_reason = _repeat_reason(repeat_default, cycles.repeat_share, due_cost)
    validation = {"holdout_from": day_label(cut), "days": n_after, "users": int(len(val_users)),
                  "k": k, "primary": primary, "rows": table_rows, "epochs": epochs,
                  "repeat_share": cycles.repeat_share, "repeat_default": repeat_default,
                  "weights": {p: c.weights.describe() for p, c in choice.items()},
                  "personal": {p: c.personal for p, c in choice.items()}}
    return validation, blend, epochs, fit.space


def _repeat_reason(mode: str, share: float, due_cost: float | None) -> str:
    said = f"{share:.0%} of purchases on a return visit buy an item bought before"
    if mode == "never":
        return (f'Bought items stay out of the lists (repeat = "never"): only {said}; '
                'a campaign can set repeat = "due" or "always".')
    if mode == "due":
        return (f'Bought items come back once their repurchase cycle has passed '
                f'(repeat = "due"): {said}.')
    return (f'Bought items may come back at any time (repeat = "always"): {said}, and waiting '
            f'for each item\'s cycle ranked {due_cost:.0%} worse on the held-out days; a '
            'campaign can set repeat = "due".')


# -- the store -----------------------------------------------------------------------------------
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


def load_log(db: Database, user_ids: Sequence[int] | None = None) -> EventLog:
    return EventLog.from_columns(store.event_arrays(db, user_ids))


__all__ = ["TrainParams", "ServedModel", "LOSSES", "fit_served", "fit_lightfm", "new_model",
           "check_params", "load_log", "purchase_matrices"]
