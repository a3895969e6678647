"""Validation and the served blend on shops with planted structure (real LightFM, small data).

Each shop is built so that one kind of scorer must win: popularity (nobody has a taste of
their own), the personal model (four groups each buying only their own category) or buy-again
(everyone rebuys staples on a cycle). Assertions keep wide margins: 2-thread LightFM training
is not bit-for-bit deterministic.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.sparse as sp

from pushgen.cli.app import app
from pushgen.errors import PushgenError
from pushgen.ranking import (EventLog, RankRules, TrainParams, load_ranker, load_served,
                             model_record, rank_campaign, train)
from pushgen.ranking.blend import BlendWeights
from pushgen.ranking.evaluate import EvalData, LightFMScorer, compare
from pushgen.ranking.repeat import buy_again_reason, learn_cycles, not_due, purchases
from pushgen.ranking.topk import INVALID
from pushgen.store import ranking as rank_store

from _ranker_helpers import make_shop, planted_shop

PARAMS = TrainParams(components=16)
CYCLE_REASON = re.compile(r"^You usually buy this every ~\d+ (days|weeks); last bought "
                          r"(today|yesterday|\d+ days ago)$")


@pytest.fixture(scope="module")
def shops(tmp_path_factory):
    """One trained database per planted kind (built once: read-only tests)."""
    out = {}
    for kind in ("popular", "taste", "repeat"):
        path = tmp_path_factory.mktemp(kind) / "shop.db"
        db = planted_shop(path, kind)
        out[kind] = (db, train(db, PARAMS))
    return out


def rows_by_name(record) -> dict[str, dict]:
    return {r["name"]: r for r in record.validation["rows"]}


def test_popularity_wins_when_nobody_has_a_taste(shops):
    db, record = shops["popular"]
    blend = record.blend
    assert not blend["personal"]
    assert blend["repeat"]["hybrid"] == 0 and blend["new"]["hybrid"] == 0
    assert blend["note"].startswith("On your data, popularity ranks as well as the personal "
                                    "model; using popularity")
    rows = rows_by_name(record)
    for protocol in ("repeat", "new"):
        served, pop = rows["served blend"][protocol], rows["popularity"][protocol]
        assert served["precision"] >= pop["precision"] * 0.98


def test_personal_model_wins_on_planted_taste(shops):
    db, record = shops["taste"]
    blend = record.blend
    assert blend["personal"] and blend["repeat"]["hybrid"] > 0 and blend["new"]["hybrid"] > 0
    assert blend["note"] == ""
    rows = rows_by_name(record)
    for protocol in ("repeat", "new"):
        assert rows["hybrid"][protocol]["precision"] > 2 * rows["popularity"][protocol][
            "precision"]
        assert rows["served blend"][protocol]["lift"] > 1.0     # more than twice popularity
    ranker = load_ranker(db)
    res = ranker.rank([1, 2, 3, 4], k=5, rules=RankRules(repeat="always"))
    for r, uid in enumerate(res.user_ids.tolist()):
        group = ("north", "south", "east", "west")[uid % 4]
        cats = [ranker.catalog.items[j]["category"] for j in res.items[r] if j >= 0]
        assert cats.count(group) >= 4, (uid, cats)


def test_buy_again_items_come_back_with_their_cycle(shops):
    db, record = shops["repeat"]
    ranker = load_ranker(db)
    assert ranker.blend.repeat_default in ("due", "always")
    assert record.validation["repeat_share"] > 0.5
    assert ranker.blend.repeat.buy_again > 0
    users = list(range(1, 41))
    res = ranker.rank(users, k=5)
    reasons = ranker.reasons(res)
    bought = {}
    for uid, item in db.execute("SELECT user_id, item_id FROM events WHERE kind = 'purchase' "
                                "AND user_id <= 40").fetchall():
        bought.setdefault(uid, set()).add(item)
    n_cycle = 0
    for r, uid in enumerate(res.user_ids.tolist()):
        for slot, j in enumerate(res.items[r].tolist()):
            if CYCLE_REASON.match(reasons[r][slot]):
                n_cycle += 1
                assert ranker.catalog.items[j]["id"] in bought[uid]
    assert n_cycle >= 40                    # about three staples a customer, with reasons
    never = ranker.rank(users, k=5, rules=RankRules(repeat="never"))
    for r, uid in enumerate(never.user_ids.tolist()):
        got = {ranker.catalog.items[j]["id"] for j in never.items[r] if j >= 0}
        assert not got & bought[uid] and len(got) == 5


def test_due_waits_for_the_cycle_and_always_does_not(shops):
    db, _ = shops["repeat"]
    ranker = load_ranker(db)
    batch = ranker.users(list(range(1, 301)))
    today = ranker.catalog.today
    p = batch.purchases
    # Staples bought on the last day of the data: their cycle has certainly not passed.
    fresh = [(int(u), int(i)) for u, i, d, ret in zip(p.user, p.item, p.last_day, p.returned)
             if d == today and not ret and ranker.served.cycles.of(np.array([i]))[0] > 3]
    assert len(fresh) >= 10
    users = sorted({u for u, _ in fresh})
    k = 40                                  # the whole catalog: only the rules keep items out
    due = ranker.rank(users, k=k, rules=RankRules(repeat="due"))
    always = ranker.rank(users, k=k, rules=RankRules(repeat="always"))
    row = {u: r for r, u in enumerate(users)}
    for u, i in fresh:
        assert i not in {ranker.catalog.items[j]["id"] for j in due.items[row[u]] if j >= 0}
        assert i in {ranker.catalog.items[j]["id"] for j in always.items[row[u]] if j >= 0}


def test_validation_table_is_stored_and_read_back(shops):
    db, record = shops["taste"]
    row = rank_store.get_model(db, record.id)
    assert row["validation"] == record.validation and row["blend"] == record.blend
    again = model_record(db)
    assert again.validation == record.validation
    served, rec = load_served(db)
    assert served.validation == record.validation and rec.sha256 == record.sha256
    v = record.validation
    assert [r["name"] for r in v["rows"]] == ["popularity", "buy-again", "no features",
                                              "hybrid", "served blend"]
    for r in v["rows"]:
        for key in ("precision", "recall", "ndcg", "lift"):
            assert key in r["repeat"]
    assert "new" not in v["rows"][1]                    # buy-again is popularity there
    assert v["users"] >= 100 and v["days"] >= 1 and v["epochs"] >= 1


def test_cli_train_prints_the_table_and_the_popularity_line(runner, tmp_path):
    path = tmp_path / "pop.db"
    planted_shop(path, "popular")
    result = runner.invoke(app, ["train", "--db", str(path), "--components", "16"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    for text in ("Held-out days from", "popularity", "buy-again", "no features", "hybrid",
                 "served blend", "vs pop", "popularity ranks as well as the personal model"):
        assert text in out, text
    ranked = runner.invoke(app, ["rank", "--db", str(path), "--campaign", "c", "--top-k", "3"])
    assert ranked.exit_code == 0, ranked.output
    assert "popularity ranks as well as the personal model" in " ".join(ranked.output.split())
    bad = runner.invoke(app, ["rank", "--db", str(path), "--campaign", "c", "--repeat", "often"])
    assert bad.exit_code == 1 and "--repeat often: use one of never, due, always" in bad.output


def test_batch_ranking_equals_the_dense_blend(tmp_path):
    """The GEMM with folded popularity (segment one-hot columns) and the scattered buy-again
    term rank exactly like the blend written out in full."""
    db = make_shop(tmp_path / "shop.db")
    train(db, TrainParams(components=8, epochs=3))
    ranker = load_ranker(db)
    for w in (BlendWeights(1.0, 0.5, "segment", 2.0), BlendWeights(1.0, 1.0, "overall", 0.5),
              BlendWeights(0.0, 1.0, "segment", 1000.0)):
        ranker.blend.repeat = w
        users = list(range(1, 61))
        batch = ranker.users(users)
        bias, emb = ranker.item_representations()
        want = w.hybrid * (batch.user_emb @ emb.T + bias) / ranker.blend.hybrid_scale
        seg = batch.segment if w.pop_kind == "segment" else np.zeros(len(users), int)
        want = want + w.popularity * ranker.pop_z[seg]
        want[batch.p_row, batch.p_col] += w.buy_again * batch.strength
        got = ranker.score_rows(users, "always")
        assert np.allclose(got, want, atol=1e-3)
        res = ranker.rank(users, k=5, rules=RankRules(repeat="always", drop_inactive=False,
                                                      drop_out_of_stock=False))
        best = np.sort(-want, axis=1)[:, :5]
        assert np.allclose(-best, res.scores, atol=1e-3)
        never = ranker.score_rows(users, "never")
        assert (never[batch.p_row, batch.p_col] == INVALID).all()


def test_rank_campaign_reuses_one_ranker_for_many_batches(shops):
    db, _ = shops["taste"]
    ranker = load_ranker(db)
    whole = rank_campaign(db, "whole", k=3, user_ids=list(range(1, 61)))
    parts = [rank_campaign(db, "parts", k=3, user_ids=list(range(s, s + 20)), ranker=ranker)
             for s in (1, 21, 41)]
    assert sum(p.rows for p in parts) == whole.rows == 180
    a = db.execute("SELECT user_id, rank, item_id, reason FROM recommendations WHERE "
                   "campaign_id = ? ORDER BY 1, 2", [whole.campaign_id]).fetchall()
    b = db.execute("SELECT user_id, rank, item_id, reason FROM recommendations WHERE "
                   "campaign_id = ? ORDER BY 1, 2", [parts[0].campaign_id]).fetchall()
    assert a == b


def test_title_words_beat_category_only_for_new_items():
    """Taste follows a word of the title; every item is in one category. Items never seen in
    training can only be told apart by their words."""
    rng = np.random.default_rng(5)
    words = ["spicy", "sweet", "smoky", "sour"]
    fillers = ["crunchy", "bites", "mix", "snack", "bar", "chips"]
    n_items, n_users = 160, 240
    items = [{"id": j + 1, "sku": f"S{j}", "category": "snacks", "attributes": {},
              "title": f"{words[j % 4].title()} {rng.choice(fillers).title()} {j}"}
             for j in range(n_items)]
    users = [{"id": u + 1, "attributes": {}} for u in range(n_users)]
    rows, cols = [], []
    for u in range(n_users):
        liked = [j for j in range(n_items) if j % 4 == u % 4]
        for j in rng.choice(liked, size=12, replace=False):
            rows.append(u)
            cols.append(int(j))
    m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n_users, n_items))
    cold = np.sort(rng.choice(n_items, size=n_items // 4, replace=False))
    is_cold = np.zeros(n_items, bool)
    is_cold[cold] = True
    train_m = m.multiply(~is_cold[None, :]).tocsr()
    test_m = m.multiply(is_cold[None, :]).tocsr()
    data = EvalData(users, items, train_m, test_m, candidates=cold, protocols=("repeat",))
    params = TrainParams(components=16, epochs=10)
    got = {x.name: x for x in compare(data, [
        LightFMScorer(params, name="words"),
        LightFMScorer(TrainParams(components=16, epochs=10, text_tokens=False),
                      name="category only")], k=5).rows["repeat"]}
    assert got["words"].auc > 0.8
    assert got["category only"].auc == pytest.approx(0.5, abs=0.05)


def test_returned_purchases_are_never_due_and_give_no_buy_again():
    day = "2026-02-{:02d}T10:00:00+00:00"
    log = EventLog.from_tuples([
        (1, 10, "purchase", 1, day.format(1)), (1, 10, "purchase", 1, day.format(8)),
        (1, 10, "purchase", 1, day.format(15)), (1, 10, "return", 1, day.format(16)),
        (1, 11, "purchase", 1, day.format(1)), (1, 11, "purchase", 1, day.format(3)),
        (2, 11, "purchase", 1, day.format(2)), (2, 11, "purchase", 1, day.format(4))])
    p = purchases(log)
    cycles = learn_cycles(log)
    got = {(int(u), int(i)): (int(n), bool(r)) for u, i, n, r in
           zip(p.user, p.item, p.days, p.returned)}
    assert got == {(1, 10): (3, True), (1, 11): (2, False), (2, 11): (2, False)}
    today = int(log.day.max()) + 30                  # a month later: every cycle has passed
    wait = dict(zip(zip(p.user.tolist(), p.item.tolist()), not_due(p, cycles, today).tolist()))
    assert wait[(1, 10)] and not wait[(1, 11)]
    assert cycles.repeat_share > 0.5


def test_buy_again_reason_reads_like_a_person_wrote_it():
    assert buy_again_reason(3, 14.0, 14.0, 20) == \
        "You usually buy this every ~2 weeks; last bought 20 days ago"
    assert buy_again_reason(4, 1.0, 3.0, 1) == \
        "You usually buy this every day; last bought yesterday"
    assert buy_again_reason(1, float("nan"), 91.0, 40) == \
        "You bought this 40 days ago; shoppers usually buy it again every ~3 months"


def test_bad_repeat_in_rules_is_a_clear_error(shops):
    db, _ = shops["taste"]
    with pytest.raises(PushgenError, match="repeat 'sometimes': use one of never, due, always"):
        rank_campaign(db, "x", k=3, rules=RankRules(repeat="sometimes"))
