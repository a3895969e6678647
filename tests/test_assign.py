"""A/B and hold-out assignment: one variant per customer, reproducible, stored, on weight."""

from __future__ import annotations

import pytest

from pushgen.assign import assign, check_split, draw, variant_for
from pushgen.errors import PushgenError
from pushgen.store import now_iso, open_store
from pushgen.store.assignments import split


def shop(tmp_path, n=4000):
    db = open_store(tmp_path / "s.db")
    now = now_iso()
    db["users"].insert_all([{"external_id": f"C{i}", "created_at": now, "updated_at": now}
                            for i in range(n)])
    cid = db["campaigns"].insert({"name": "xmas", "channel": "email", "created_at": now,
                                  "updated_at": now}).last_pk
    users = [(r[0], r[1]) for r in db.execute("SELECT id, external_id FROM users")]
    return db, cid, users


def test_split_follows_weights_and_holdout_and_is_stable(tmp_path):
    db, cid, users = shop(tmp_path)
    got = assign(db, cid, "xmas", users, weights=[0.5, 0.5], holdout=0.1, seed=1)
    assert len(got) == len(users) and set(got.values()) == {0, 1, 2}
    counts = split(db, cid)
    n = len(users)
    assert abs(counts[0] / n - 0.1) < 0.02
    assert abs(counts[1] / n - 0.45) < 0.03 and abs(counts[2] / n - 0.45) < 0.03
    # Stored: changing the weights later moves nobody; a fresh database reproduces it.
    again = assign(db, cid, "xmas", users, weights=[0.9, 0.1], holdout=0.3, seed=1)
    assert again == got
    other = open_store(tmp_path / "t.db")
    other["users"].insert_all([{"id": u, "external_id": e, "created_at": "x",
                                "updated_at": "x"} for u, e in users])
    ocid = other["campaigns"].insert({"name": "xmas", "channel": "email", "created_at": "x",
                                      "updated_at": "x"}).last_pk
    assert assign(other, ocid, "xmas", users, weights=[0.5, 0.5], holdout=0.1, seed=1) == got
    # Another seed or campaign draws anew.
    assert draw("xmas", "C1", 1) != draw("xmas", "C1", 2) != draw("easter", "C1", 2)


def test_uneven_weights_and_errors():
    assert [variant_for(u, check_split([3, 1], 0), 0) for u in (0.1, 0.74, 0.76)] == [1, 1, 2]
    for weights, holdout in (([], 0), ([-1, 2], 0), ([0, 0], 0), ([1], 1.0), ([1], -0.1)):
        with pytest.raises(PushgenError):
            check_split(weights, holdout)
