"""Evaluation metrics on a hand-computed case, splits, the comparison table, and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from pushgen.cli.app import app
from pushgen.errors import PushgenError
from pushgen.ranking import EventLog, TrainParams, train
from pushgen.ranking.evaluate import (ConstantScorer, EvalData, RandomScorer, compare,
                                      evaluate_store, split_store_events)
from pushgen.ranking.metrics import evaluate_scores

from _ranker_helpers import make_shop

SCORES = np.array([[0.9, 0.8, 0.1, 0.5], [0.1, 0.2, 0.3, 0.4]], np.float32)


def test_metrics_hand_computed():
    train = sp.csr_matrix(([1.0], ([0], [3])), shape=(2, 4))          # user 0 saw item 3
    test = sp.csr_matrix(([1.0, 1.0, 1.0], ([0, 1, 1], [1, 3, 0])), shape=(2, 4))
    m = evaluate_scores("hand", lambda u: SCORES[u], test, train, k=2,
                        item_categories=np.array([0, 1, 0, 1]))
    # user 0: top [0, 1] -> 1 hit; user 1: top [3, 2] -> 1 hit of 2 positives.
    assert m.precision == pytest.approx(0.5)
    assert m.recall == pytest.approx(0.75)
    ndcg0 = (1 / np.log2(3)) / 1.0
    ndcg1 = 1.0 / (1 + 1 / np.log2(3))
    assert m.ndcg == pytest.approx((ndcg0 + ndcg1) / 2)
    # AUC user 0: positive 1 (0.8) beats item 2 only of {0, 2} -> 0.5 (item 3 excluded);
    # user 1: positive 3 beats both negatives, positive 0 none -> 0.5.
    assert m.auc == pytest.approx(0.5)
    assert m.coverage == pytest.approx(1.0) and m.diversity == pytest.approx(1.0)
    assert m.users == 2


def test_excluded_items_never_count_and_candidates_restrict():
    train = sp.csr_matrix(([1.0], ([0], [0])), shape=(1, 4))
    test = sp.csr_matrix(([1.0], ([0], [1])), shape=(1, 4))
    m = evaluate_scores("x", lambda u: SCORES[:1][u * 0], test, train, k=1)
    assert m.precision == 1.0 and m.auc == 1.0          # item 0 (0.9) excluded
    m = evaluate_scores("x", lambda u: SCORES[:1][u * 0], test, None, k=1,
                        candidates=np.array([1, 2]))
    assert m.precision == 1.0 and m.auc == 1.0 and m.coverage == 0.5


def test_random_and_cold_splits():
    """The splits evaluate uses: random interactions; cold users / items held out whole."""
    events = [(u, 100 + i, "purchase", 1, f"2026-01-{1 + (u + i) % 28:02d}T10:00:00+00:00")
              for u in range(1, 11) for i in range(10)]
    users = [{"id": u, "attributes": {}} for u in range(1, 11)]
    items = [{"id": 100 + i, "sku": f"S{i}", "title": f"T{i}", "attributes": {}}
             for i in range(10)]
    log = EventLog.from_tuples(events)

    def split(kind: str, fraction: float):
        return split_store_events(users, items, log, TrainParams(), kind, fraction=fraction)

    rnd = split("random", 0.2)
    assert 5 < rnd.test.nnz < 40 and rnd.train.nnz + rnd.test.nnz == 100
    cold_users = split("cold-users", 0.2)
    held = np.flatnonzero(np.diff(cold_users.test.indptr) > 0)
    assert len(held) == 2 and cold_users.train[held].nnz == 0 and cold_users.test.nnz == 20
    assert cold_users.protocols == ("repeat",)
    cold_items = split("cold-items", 0.3)
    held_items = np.unique(cold_items.test.indices)
    assert len(held_items) == 3 and cold_items.train[:, held_items].nnz == 0
    assert sorted(cold_items.candidates.tolist()) == held_items.tolist()
    with pytest.raises(PushgenError, match="unknown split"):
        split("sideways", 0.2)


def test_constant_scores_measure_like_random():
    """Ties are broken at random: a scorer that gives every item the same score must not
    profit from the item order (here every positive sits among the first items)."""
    rng = np.random.default_rng(3)
    n_users, n_items = 2000, 100
    rows = np.repeat(np.arange(n_users), 5)
    cols = rng.integers(0, 10, size=len(rows))             # positives among items 0-9 only
    truth = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_users, n_items))
    data = EvalData([{"id": u} for u in range(n_users)], [{"id": i} for i in range(n_items)],
                    sp.csr_matrix((n_users, n_items)), truth, protocols=("repeat",))
    got = {m.name: m for m in compare(data, [ConstantScorer(), RandomScorer(7)], k=10)
           .rows["repeat"]}
    expected = float((truth[:, :10] > 0).sum(axis=1).mean()) / n_items   # = random's p@10
    for name in ("constant", "random"):
        assert got[name].precision == pytest.approx(expected, abs=0.004), name
    assert got["constant"].auc == pytest.approx(0.5)       # ties count half
    assert got["random"].auc == pytest.approx(0.5, abs=0.02)
    # Index-order tie-breaking (the old behaviour) would have scored every list full of hits.
    assert got["constant"].precision < 0.1


def test_time_split_splits_purchases_by_date_with_both_protocols():
    """An item bought before the cut and again after it stays in training; test users have
    history on both sides; "new only" leaves out training items."""
    day = "2026-01-{:02d}T10:00:00+00:00"
    events = [(1, 10, "purchase", 1, day.format(d)) for d in (1, 9)] + \
             [(1, 11, "purchase", 1, day.format(2)), (2, 12, "purchase", 1, day.format(3)),
              (3, 11, "purchase", 1, day.format(9)), (2, 11, "purchase", 1, day.format(4)),
              (4, 10, "purchase", 1, day.format(5)), (4, 12, "purchase", 1, day.format(10))]
    users = [{"id": u, "attributes": {}} for u in (1, 2, 3, 4)]
    items = [{"id": i, "sku": f"S{i}", "title": f"T{i}", "attributes": {}} for i in (10, 11, 12)]
    data = split_store_events(users, items, EventLog.from_tuples(events), TrainParams(), "time",
                              fraction=0.3)
    assert data.protocols == ("repeat", "new")
    assert data.train[0, 0] > 0 and data.test[0, 0] > 0    # item 10 of user 1: both sides
    assert sorted(data.eval_users.tolist()) == [0, 3]      # user 3 has no training history
    assert data.seen()[0, 0] > 0                            # "new only" drops it for user 1


def test_comparison_on_a_small_shop(tmp_path):
    db = make_shop(tmp_path / "pushgen.db")
    seen: list[str] = []
    result = evaluate_store(db, "random", k=3, params=TrainParams(components=16, epochs=15),
                            progress=lambda what, done, total: seen.append(what))
    names = [r.name for r in result.rows["repeat"]]
    assert names == ["random", "popularity", "buy-again", "no features", "hybrid",
                     "served blend"]
    assert set(result.rows) == {"repeat", "new"}
    by = {r.name: r for r in result.rows["new"]}
    assert by["hybrid"].auc > by["random"].auc + 0.2
    assert any(w.startswith("training hybrid") or w.startswith("training served") for w in seen)
    assert any(w.startswith("scoring") for w in seen)
    cold = evaluate_store(db, "cold-users", k=3, params=TrainParams(components=16, epochs=15))
    assert set(cold.rows) == {"repeat"}
    cby = {r.name: r for r in cold.rows["repeat"]}
    # New users: only the hybrid can use their profile (category taste is planted in it).
    assert cby["hybrid"].precision > cby["no features"].precision


# -- CLI ------------------------------------------------------------------------------------------
def test_cli_rank_without_model_is_a_clear_error(runner, db_path):
    make_shop(db_path)
    result = runner.invoke(app, ["rank", "--campaign", "spring", "--db", str(db_path)])
    assert result.exit_code == 1
    assert "run `pushgen train` first" in result.output
    assert "Traceback" not in result.output


def test_cli_train_rank_evaluate(runner, db_path):
    make_shop(db_path)
    result = runner.invoke(app, ["train", "--db", str(db_path), "--epochs", "5",
                                 "--components", "8", "--event-weight", "view=0.5",
                                 "--user-feature", "region", "--holdout", "0.2"])
    assert result.exit_code == 0, result.output
    assert "wrote model 1" in result.output and "/model-1-" in result.output
    assert "No validation: only 60 customers" in result.output   # too few to compare
    assert 'repeat = "never"' in result.output
    result = runner.invoke(app, ["rank", "--campaign", "spring", "--db", str(db_path),
                                 "--top-k", "3", "--max-per-category", "2", "--pin", "GA-5",
                                 "--exclude-category", "beta"])
    assert result.exit_code == 0, result.output
    assert "wrote 180 recommendations for 60 users" in result.output
    assert "model" in result.output and "GA-5" in result.output
    result = runner.invoke(app, ["evaluate", "--db", str(db_path), "--k", "3", "--epochs", "5"])
    assert result.exit_code == 0, result.output
    for name in ("served blend", "hybrid", "buy-again", "popularity", "repeats allowed",
                 "new items only", "time split"):
        assert name in result.output


def test_cli_bad_options(runner, db_path):
    make_shop(db_path)
    result = runner.invoke(app, ["train", "--db", str(db_path), "--event-weight", "purchase"])
    assert result.exit_code == 1 and "KIND=NUMBER" in result.output
    result = runner.invoke(app, ["evaluate", "--db", str(db_path), "--split", "nope"])
    assert result.exit_code == 1 and "--split" in result.output


def _clean_error(result, message: str) -> None:
    assert result.exit_code == 1, result.output
    assert message in result.output, result.output
    assert "Traceback" not in result.output and "training" not in result.output


@pytest.mark.parametrize("args, message", [
    (["train", "--epochs", "0"], "--epochs must be at least 1"),
    (["train", "--components", "0"], "--components must be at least 1"),
    (["train", "--threads", "0"], "--threads must be at least 1"),
    (["train", "--lr", "0"], "--lr must be greater than 0"),
    (["train", "--half-life", "-3"], "--half-life"),
    (["train", "--meta-weight", "-0.5"], "--meta-weight must be 0 or more"),
    (["train", "--loss", "hinge"], "unknown loss"),
    (["train", "--event-weight", "purchase=-2"], "must be 0 or more"),
    (["train", "--user-feature", "shoe_size"], "known attributes: age_band"),
    (["evaluate", "--k", "0"], "--k must be at least 1"),
    (["evaluate", "--epochs", "0"], "--epochs must be at least 1"),
    (["evaluate", "--components", "0"], "--components must be at least 1"),
    (["train", "--holdout", "1.5"], "--holdout is a share of the days"),
])
def test_cli_train_and_evaluate_validate_first(runner, db_path, args, message):
    db = make_shop(db_path)
    result = runner.invoke(app, [*args, "--db", str(db_path)])
    _clean_error(result, message)
    assert db.execute("SELECT count(*) FROM models").fetchone()[0] == 0


def test_cli_failed_train_then_rank_uses_a_clean_state(runner, db_path):
    make_shop(db_path)
    _clean_error(runner.invoke(app, ["train", "--epochs", "0", "--db", str(db_path)]),
                 "--epochs must be at least 1")
    result = runner.invoke(app, ["rank", "--campaign", "x", "--db", str(db_path)])
    assert result.exit_code == 1 and "run `pushgen train` first" in result.output


@pytest.fixture(scope="module")
def trained_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "pushgen.db"
    db = make_shop(path)
    train(db, TrainParams(components=8, epochs=3))
    return path


@pytest.mark.parametrize("args, message", [
    (["--include-category", "nosuch"], "known categories: alpha, beta, gamma"),
    (["--exclude-category", "nosuch"], "no such category"),
    (["--min-price", "100", "--max-price", "10"], "is above --max-price"),
    (["--min-discount", "150"], "between 0 and 100"),
    (["--pin", "AL-1", "--block", "AL-1"], "both pinned (--pin) and blocked"),
    (["--pin", "NOPE"], "--pin NOPE: not in the catalog"),
    (["--max-per-category", "0"], "--max-per-category must be at least 1"),
    (["--examples", "-1"], "--examples must be 0 or more"),
    (["--top-k", "0"], "--top-k must be at least 1"),
])
def test_cli_rank_refuses_impossible_rules(runner, trained_db, args, message):
    result = runner.invoke(app, ["rank", "--campaign", "bad", "--db", str(trained_db), *args])
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output
    assert "ranking" not in result.output          # refused before the progress bar


def test_cli_rank_keeps_recommendations_when_rules_leave_nothing(runner, trained_db):
    from pushgen.store import open_store

    ok = runner.invoke(app, ["rank", "--campaign", "kept", "--db", str(trained_db),
                             "--top-k", "2", "--examples", "1"])
    assert ok.exit_code == 0, ok.output
    assert "u1 " in ok.output                      # examples show the external id
    result = runner.invoke(app, ["rank", "--campaign", "kept", "--db", str(trained_db),
                                 "--min-price", "5000"])
    assert result.exit_code == 1 and "no eligible item" in result.output
    assert "existing recommendations are kept" in result.output
    db = open_store(trained_db, create=False)
    assert db.execute("SELECT count(*) FROM recommendations r JOIN campaigns c ON "
                      "c.id = r.campaign_id WHERE c.name = 'kept'").fetchone()[0] == 120
