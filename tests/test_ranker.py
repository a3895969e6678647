"""Ranker: planted structure, business rules, cold start, artifacts, campaigns."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from pushgen.errors import PushgenError
from pushgen.messages import ItemFacts
from pushgen.ranking import (EventLog, RankRules, TrainParams, load_ranker, rank_campaign,
                             recommendations_for, train)
from pushgen.ranking.events import interaction_weights
from pushgen.store import ranking as rank_store

from _ranker_helpers import CATS, PROFILES, add_user, item_id, make_shop

FAST = TrainParams(components=16, epochs=15, threads=2)
load_model = load_ranker


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """A trained shop shared by the read-only tests of this module."""
    path = tmp_path_factory.mktemp("shop") / "pushgen.db"
    db = make_shop(path)
    add_user(db, 100, PROFILES["alpha"])   # added after training: profile only
    record = train(db, FAST)
    add_user(db, 101, PROFILES["gamma"])
    add_user(db, 102, {})                    # nothing known at all
    db["users"].update(102, {"locale": "fr-FR"})
    return db, record, load_model(db)


def categories(ranker, res, row):
    return [ranker.catalog.items[j]["category"] for j in res.items[row] if j >= 0]


def test_recovers_planted_taste(shop):
    _, _, ranker = shop
    res = ranker.rank([1, 2, 21, 22, 41, 42], k=3)
    for row, cat in enumerate(["alpha", "alpha", "beta", "beta", "gamma", "gamma"]):
        assert categories(ranker, res, row) == [cat] * 3
    assert list(res.sources) == ["model"] * 6
    assert (np.diff(res.scores, axis=1) <= 1e-6).all()    # best first


def test_cold_user_scored_from_profile(shop):
    _, record, ranker = shop
    assert 100 not in ranker.space.user_index and record.n_users == 60
    res = ranker.rank([100, 101], k=3)
    assert list(res.sources) == ["cold_features", "cold_features"]
    assert categories(ranker, res, 0) == ["alpha"] * 3
    assert categories(ranker, res, 1) == ["gamma"] * 3


def test_user_without_known_features_gets_segment_popularity(shop):
    _, _, ranker = shop
    res = ranker.rank([102], k=4)
    assert list(res.sources) == ["segment_popularity"]
    assert (res.items[0] >= 0).all()


def test_drops_purchased_inactive_and_out_of_stock(shop):
    db, _, ranker = shop
    bought = {r[0] for r in db.execute(
        "SELECT item_id FROM events WHERE user_id = 1 AND kind = 'purchase'").fetchall()}
    assert bought
    res = ranker.rank([1], k=30)
    got = {ranker.catalog.items[j]["id"] for j in res.items[0] if j >= 0}
    assert not got & bought
    for cat in CATS:
        assert item_id(cat, 8) not in got and item_id(cat, 9) not in got   # inactive, no stock
    assert ranker.blend.repeat_default == "never"     # nobody here buys anything twice
    kept = ranker.rank([1], k=30, rules=RankRules(repeat="always", drop_inactive=False,
                                                  drop_out_of_stock=False))
    got_all = {ranker.catalog.items[j]["id"] for j in kept.items[0] if j >= 0}
    assert bought <= got_all and item_id("alpha", 8) in got_all


def test_category_rules(shop):
    _, _, ranker = shop
    res = ranker.rank([1], k=5, rules=RankRules(include_categories=["Gamma"]))
    assert set(categories(ranker, res, 0)) == {"gamma"}
    res = ranker.rank([1], k=10, rules=RankRules(exclude_categories=["alpha"]))
    assert "alpha" not in categories(ranker, res, 0) and len(categories(ranker, res, 0)) == 10


def test_price_and_discount_rules(shop):
    _, _, ranker = shop
    res = ranker.rank([1, 30], k=30, rules=RankRules(min_price=40, max_price=60))
    for row in range(2):
        for j in res.items[row][res.items[row] >= 0]:
            it = ranker.catalog.items[j]
            price = it["sale_price"] if it["sale_price"] is not None else it["price"]
            assert 40 <= price <= 60
    res = ranker.rank([1], k=30, rules=RankRules(min_discount=25))
    skus = [ranker.catalog.items[j]["sku"] for j in res.items[0] if j >= 0]
    assert skus and all(s.split("-")[1] in {"0", "3", "6"} for s in skus)   # 30% off items


def test_max_per_category_diversifies(shop):
    _, _, ranker = shop
    res = ranker.rank([1], k=5, rules=RankRules(max_per_category=2))
    cats = categories(ranker, res, 0)
    assert len(cats) == 5 and max(cats.count(c) for c in set(cats)) <= 2
    assert cats[:2] == ["alpha", "alpha"]


def test_pinned_first_and_blocked_never(shop):
    _, _, ranker = shop
    rules = RankRules(pinned=["GA-5"], blocked=["AL-0", "AL-1", "AL-2"])
    res = ranker.rank([1, 2], k=4, rules=rules)
    for row in range(2):
        skus = [ranker.catalog.items[j]["sku"] for j in res.items[row] if j >= 0]
        assert skus[0] == "GA-5" and len(skus) == 4
        assert not {"AL-0", "AL-1", "AL-2"} & set(skus)
        assert res.pinned[row, 0] and not res.pinned[row, 1:].any()
    with pytest.raises(PushgenError, match="NOPE"):
        ranker.rank([1], k=3, rules=RankRules(pinned=["NOPE"]))


def test_explicit_exclusions(shop):
    _, _, ranker = shop
    first = ranker.rank([1], k=3)
    top_id = ranker.catalog.items[first.items[0, 0]]["id"]
    again = ranker.rank([1], k=3, exclude={1: [top_id]})
    assert top_id not in [ranker.catalog.items[j]["id"] for j in again.items[0]]


def test_rank_campaign_writes_replaces_and_reads_back(shop):
    db, record, _ = shop
    summary = rank_campaign(db, "spring", k=3, user_ids=[1, 21, 100, 102])
    assert summary.by_source == {"model": 2, "cold_features": 1, "segment_popularity": 1}
    assert summary.rows == 12 and summary.model_id == record.id
    again = rank_campaign(db, "spring", k=2, user_ids=[1, 21, 100, 102])
    assert again.campaign_id == summary.campaign_id
    n = db.execute("SELECT count(*) FROM recommendations WHERE campaign_id = ?",
                   [summary.campaign_id]).fetchone()[0]
    assert n == 8                                     # replaced, not duplicated
    recs = recommendations_for(db, summary.campaign_id, [1, 102])
    assert set(recs) == {1, 102} and len(recs[1]) == 2
    first = recs[1][0]
    assert isinstance(first, ItemFacts) and first.category == "alpha"
    assert first.reason.startswith("You bought ") and first.title
    assert recs[1][0].score >= recs[1][1].score
    assert recs[102][0].reason.startswith("Popular")


def test_save_load_round_trip_identical(shop):
    db, record, ranker = shop
    again = load_model(db, record.id)
    a = ranker.rank([1, 21, 41, 100, 102], k=5)
    b = again.rank([1, 21, 41, 100, 102], k=5)
    assert (a.items == b.items).all() and np.allclose(a.scores, b.scores)


def test_missing_and_corrupt_artifacts(tmp_path):
    db = make_shop(tmp_path / "pushgen.db")
    with pytest.raises(PushgenError, match="pushgen train"):
        load_model(db)
    record = train(db, TrainParams(components=8, epochs=2))
    record.path.write_bytes(b"not a zip file")
    with pytest.raises(PushgenError) as err:
        load_model(db)
    assert str(record.path) in str(err.value) and "corrupt" in str(err.value)
    assert "pushgen train" in str(err.value)
    record.path.unlink()
    with pytest.raises(PushgenError, match="missing"):
        load_model(db)
    with pytest.raises(PushgenError, match="no model with id 99"):
        load_model(db, 99)


def test_changed_artifact_is_refused_by_its_content_hash(tmp_path):
    db = make_shop(tmp_path / "pushgen.db")
    record = train(db, TrainParams(components=8, epochs=2))
    with np.load(record.path) as z:
        arrays = dict(z)
    arrays["item_embeddings"] = arrays["item_embeddings"][:-1]
    np.savez(record.path, **arrays)
    with pytest.raises(PushgenError, match="does not match model 1 of this database"):
        load_model(db)


def test_two_databases_in_one_folder_never_share_a_model(tmp_path):
    """Issue 8: training b.db overwrote a.db's model-1.npz, and a.db then served b's model."""
    a = make_shop(tmp_path / "a.db")
    b = make_shop(tmp_path / "b.db", seed=11)
    add_user(b, 100, PROFILES["alpha"])
    b.execute("INSERT INTO events (user_id, item_id, kind, value, ts) VALUES "
              "(100, 1, 'purchase', 1, '2026-01-09T10:00:00+00:00')")
    b.conn.commit()
    ra = train(a, TrainParams(components=8, epochs=2))
    rb = train(b, TrainParams(components=8, epochs=2))
    assert ra.id == rb.id == 1 and ra.path != rb.path
    assert ra.path.is_file() and rb.path.is_file()
    assert rank_store.database_id(a) != rank_store.database_id(b)
    assert load_model(a).space.user_ids == list(range(1, 61))
    assert 100 in load_model(b).space.user_ids
    # A's row pointed at b's file (an older pushgen's layout): refused, not served.
    a.execute("UPDATE models SET path = ? WHERE id = 1", [rb.path.relative_to(tmp_path).as_posix()])
    a.conn.commit()
    with pytest.raises(PushgenError, match="content hash differs"):
        load_model(a)


def ts(days_ago: float) -> str:
    t = dt.datetime(2026, 1, 31, tzinfo=dt.timezone.utc) - dt.timedelta(days=days_ago)
    return t.isoformat()


def weights(events, params):
    return interaction_weights(EventLog.from_tuples(events), params.event_weights,
                               params.rating_threshold, params.half_life_days)


def test_interaction_weights_kinds_ratings_returns_and_decay():
    events = [(1, 10, "purchase", 1, ts(0)), (1, 10, "view", 1, ts(0)),
              (1, 11, "rating", 3, ts(0)), (1, 12, "rating", 5, ts(0)),
              (2, 10, "cart", 1, ts(10)), (2, 11, "view", 1, ts(0)), (2, 13, "unknown", 1, ts(0)),
              (3, 10, "purchase", 1, ts(5)), (3, 10, "return", 1, ts(4))]
    u, i, w = weights(events, TrainParams())
    got = {(a, b): c for a, b, c in zip(u.tolist(), i.tolist(), w.tolist())}
    # A returned purchase cancels it: user 3's item 10 is no positive at all.
    assert got == {(1, 10): 6.0, (1, 12): 1.0, (2, 10): 3.0, (2, 11): 1.0}
    _, _, wd = weights(events, TrainParams(half_life_days=10))
    got = dict(zip(zip(u.tolist(), i.tolist()), wd.tolist()))
    assert got[(2, 10)] == pytest.approx(1.5) and got[(1, 10)] == pytest.approx(6.0)
    u, i, w = weights(events, TrainParams(event_weights={"purchase": 1, "view": 0}))
    assert list(zip(u.tolist(), i.tolist())) == [(1, 10), (3, 10)]


def test_train_without_events_is_a_clear_error(tmp_path):
    from pushgen.store import open_store

    db = open_store(tmp_path / "pushgen.db")
    with pytest.raises(PushgenError, match="no usable events"):
        train(db, FAST)


# -- failed saves and validation ------------------------------------------------------------------
def test_failed_artifact_write_leaves_no_row_and_latest_skips_broken_rows(tmp_path, monkeypatch):
    db = make_shop(tmp_path / "pushgen.db")
    good = train(db, TrainParams(components=8, epochs=2))

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(PushgenError, match="cannot write the model artifact"):
        train(db, TrainParams(components=8, epochs=2))
    monkeypatch.undo()
    assert rank_store.model_count(db) == 1
    assert not list((tmp_path / "pushgen-models").rglob("*.tmp"))
    # A broken row left by an older version (empty path) is never the "latest" model.
    db["models"].insert({"version": "x", "path": "", "created_at": "2026-01-01",
                         "params": "{}", "metrics": "{}"})
    assert load_model(db).model_id == good.id
    summary = rank_campaign(db, "after-failure", k=2, user_ids=[1])
    assert summary.model_id == good.id and summary.rows == 2


@pytest.mark.parametrize("change, message", [
    ({"epochs": 0}, "--epochs must be at least 1"),
    ({"components": 0}, "--components must be at least 1"),
    ({"threads": 0}, "--threads must be at least 1"),
    ({"learning_rate": 0.0}, "--lr must be greater than 0"),
    ({"half_life_days": 0.0}, "--half-life"),
    ({"meta_weight": -1.0}, "--meta-weight must be 0 or more"),
    ({"loss": "hinge"}, "unknown loss 'hinge'"),
    ({"event_weights": {"purchase": -1.0}}, "must be 0 or more"),
    ({"holdout": 1.0}, "--holdout is a share of the days"),
    ({"event_weights": {"": 1.0}}, "kind is empty"),
    ({"user_features": ("shoe_size",)}, "known attributes: age_band"),
])
def test_train_refuses_bad_params_and_writes_nothing(tmp_path, change, message):
    db = make_shop(tmp_path / "pushgen.db")
    seen = []
    with pytest.raises(PushgenError, match=message.replace("(", r"\(")):
        train(db, TrainParams(**{"components": 8, "epochs": 2, **change}),
              progress=lambda *a: seen.append(a))
    assert seen == [] and rank_store.model_count(db) == 0


def test_unused_event_kind_is_only_a_warning(tmp_path):
    from pushgen.ranking import check_params

    db = make_shop(tmp_path / "pushgen.db")
    warnings = check_params(db, TrainParams(event_weights={"purchase": 5, "wishlist": 2}))
    assert len(warnings) == 1 and "no 'wishlist' events" in warnings[0]
    assert "purchase" in warnings[0]          # lists the kinds that are present


def test_rules_leaving_no_item_keep_existing_recommendations(shop):
    db, _, _ = shop
    first = rank_campaign(db, "keep-me", k=2, user_ids=[1, 21])
    assert first.rows == 4
    with pytest.raises(PushgenError, match="no eligible item.*existing recommendations are kept"):
        rank_campaign(db, "keep-me", k=2, user_ids=[1, 21], rules=RankRules(min_price=10_000))
    # Every eligible item already bought by the user: nothing left after ranking either.
    not_bought = [f"AL-{n}" for n in range(10)
              if n not in (8, 9) and item_id("alpha", n) not in
              {r[0] for r in db.execute("SELECT item_id FROM events WHERE user_id = 1 AND "
                                        "kind = 'purchase'").fetchall()}]
    with pytest.raises(PushgenError, match="no user has an eligible item"):
        rank_campaign(db, "keep-me", k=2, user_ids=[1],
                      rules=RankRules(include_categories=["alpha"], blocked=not_bought))
    assert rank_store.recommendation_total(db, first.campaign_id) == 4


def test_top_k_beyond_the_catalog_is_no_wider_than_the_catalog(shop):
    db, _, ranker = shop
    n = len(ranker.catalog.items)
    res = ranker.rank([1, 2], k=50_000)
    assert res.items.shape[0] == 2 and res.items.shape[1] <= n   # not 50,000 wide


def test_a_campaign_needs_a_name(shop):
    db, _, ranker = shop
    with pytest.raises(PushgenError, match="needs a name"):
        rank_campaign(db, "  ", k=3, ranker=ranker)
