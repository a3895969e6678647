"""Ranking quality on real grocery purchases: what pushgen serves by default vs baselines.

    python bench/ranker_groceries.py [PATH_TO_GROCERIES_FOLDER]

Data: ``Groceries_dataset.csv`` (``Member_number,Date,itemDescription``; DD-MM-YYYY; lines
repeated for quantity, names with trailing spaces). Protocol (issue 8): rows deduplicated on
(member, date, item); the distinct dates sorted, the first 80% are the training part, the
rest the test; test users are members with at least one training and one test item; p@10
averaged over test users. "repeats allowed" ranks every item against every test item; "new
only" removes the member's training items from both the ranking and the truth.

"default" is exactly what ``pushgen train`` + ``pushgen rank`` serve: the training part is
imported into a fresh pushgen database (``import_rows``), trained with default
``TrainParams`` (validation on its latest days, blend choice, refit), and each test member's
list comes from ``Ranker.rank`` with default rules (new-only: ``repeat="never"``). The other
rows come from ``pushgen.ranking.evaluate``'s scorers on the same split. Seeds are fixed;
2-thread LightFM training is not bit-for-bit deterministic (p@10 moves by about 0.004).
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pushgen.ingest import import_rows  # noqa: E402
from pushgen.ranking import RankRules, TrainParams, load_ranker, train  # noqa: E402
from pushgen.ranking.evaluate import (BuyAgainScorer, EvalData, LightFMScorer,  # noqa: E402
                                      PopularityScorer, compare)
from pushgen.ranking.events import interaction_weights  # noqa: E402
from pushgen.ranking.training import load_log  # noqa: E402
from pushgen.store import open_store  # noqa: E402


def read(path: Path) -> tuple[list[tuple[str, str, str]], dict[tuple[str, str, str], int]]:
    """Distinct (member, ISO date, item) rows and the number of lines of each (quantity)."""
    qty: dict[tuple[str, str, str], int] = {}
    with open(path / "Groceries_dataset.csv", newline="", encoding="utf-8") as f:
        r = csv.reader(f)
        next(r)
        for member, date, item in r:
            dd, mm, yyyy = date.strip().split("-")
            key = (member.strip(), f"{yyyy}-{mm}-{dd}", item.strip())
            qty[key] = qty.get(key, 0) + 1
    return sorted(qty), qty


def slug(name: str) -> str:
    return "G-" + "".join(c if c.isalnum() else "-" for c in name.lower())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", nargs="?", default=str(REPO.parent / "shared/data/groceries"))
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    k = args.k
    rows, qty = read(Path(args.path))
    dates = sorted({d for _, d, _ in rows})
    cut = dates[int(len(dates) * 0.8)]
    train_rows = [r for r in rows if r[1] < cut]
    test_rows = [r for r in rows if r[1] >= cut]
    members = sorted({m for m, _, _ in rows}, key=int)
    names = sorted({i for _, _, i in rows})
    print(f"{len(rows):,} distinct (member, date, item) rows, {len(members):,} members, "
          f"{len(names)} items, {len(dates)} dates; test from {cut}")

    with tempfile.TemporaryDirectory() as tmp:
        db = open_store(Path(tmp) / "groceries.db")
        import_rows(db, "users", [{"external_id": m} for m in members])
        import_rows(db, "items", [{"sku": slug(n), "title": n} for n in names])
        import_rows(db, "events", [{"user": m, "item": slug(i), "kind": "purchase",
                                    "value": qty[(m, d, i)], "ts": f"{d}T12:00:00Z"}
                                   for m, d, i in train_rows])
        started = time.perf_counter()
        record = train(db, TrainParams())
        train_secs = time.perf_counter() - started
        ranker = load_ranker(db)
        users = {u["external_id"]: int(u["id"]) for u in
                 db.execute("SELECT id, external_id FROM users").fetchall()
                 for u in [{"id": u[0], "external_id": u[1]}]}
        items = {r[1]: int(r[0]) for r in db.execute("SELECT id, sku FROM items").fetchall()}
        seen: dict[int, set[int]] = {}
        for m, _, i in train_rows:
            seen.setdefault(users[m], set()).add(items[slug(i)])
        truth: dict[int, set[int]] = {}
        for m, _, i in test_rows:
            if users[m] in seen:
                truth.setdefault(users[m], set()).add(items[slug(i)])
        test_users = sorted(truth)

        def served_p10(rules: RankRules, new_only: bool) -> tuple[float, int]:
            res = ranker.rank(test_users, k, rules)
            hits, n = [], 0
            for r, uid in enumerate(res.user_ids.tolist()):
                t = truth[uid] - seen[uid] if new_only else truth[uid]
                if not t:
                    continue
                got = {int(ranker.catalog.items[j]["id"]) for j in res.items[r] if j >= 0}
                hits.append(len(got & t) / k)
                n += 1
            return float(np.mean(hits)), n

        default_rep, n_rep = served_p10(RankRules(), False)
        default_new, n_new = served_p10(RankRules(repeat="never"), True)

        # Baselines on the same split, through pushgen's evaluation code.
        user_rows = db.execute("SELECT id, external_id FROM users ORDER BY id").fetchall()
        user_list = [{"id": r[0], "external_id": r[1], "attributes": {}} for r in user_rows]
        item_list = [{"id": r[0], "sku": r[1], "title": r[2], "attributes": {}} for r in
                     db.execute("SELECT id, sku, title FROM items ORDER BY id").fetchall()]
        uid = np.array([u["id"] for u in user_list])
        iid = np.array([i["id"] for i in item_list])
        log = load_log(db)
        params = TrainParams()
        tu, ti, tw = interaction_weights(log, params.event_weights, params.rating_threshold)
        shape = (len(uid), len(iid))
        train_m = sp.csr_matrix((tw, (np.searchsorted(uid, tu), np.searchsorted(iid, ti))),
                                shape=shape)
        pairs = [(u, i) for u, s in truth.items() for i in s]
        test_m = sp.csr_matrix((np.ones(len(pairs), np.float32),
                                ([np.searchsorted(uid, u) for u, _ in pairs],
                                 [np.searchsorted(iid, i) for _, i in pairs])), shape=shape)
        data = EvalData(user_list, item_list, train_m, test_m, log=log,
                        eval_users=np.searchsorted(uid, test_users))
        lightfm = LightFMScorer(TrainParams(epochs=10), features=False,
                                name="LightFM WARP, 32 comp., 10 epochs")
        base = compare(data, [PopularityScorer(), BuyAgainScorer(), lightfm], k=k)

    by = {p: {m.name: m for m in rows} for p, rows in base.rows.items()}
    print("\nWhat `pushgen train` printed on its own held-out days (inside the training part):")
    val = record.validation
    if val.get("rows"):
        for row in val["rows"]:
            rep, new = row.get("repeat"), row.get("new")
            print(f"  {row['name']:<14} repeats {rep['precision']:.3f}"
                  + (f"  new {new['precision']:.3f}" if new else ""))
        print(f"  served: {val['weights']}")
    print(f"  {record.blend.get('note') or '(the personal model adds to popularity)'}")
    print(f"  {record.blend.get('repeat_reason')}")
    print(f"\nTest part: {n_rep:,} members (repeats allowed), {n_new:,} (new only); "
          f"training took {train_secs:.1f} s")
    print(f"{'model':<40} {'p@10 repeats allowed':>21} {'p@10 new only':>14}")
    table = [("popularity", by["repeat"]["popularity"].precision,
              by["new"]["popularity"].precision),
             ("buy-again (own purchases, then popularity)", by["repeat"]["buy-again"].precision,
              None),
             (lightfm.name, by["repeat"][lightfm.name].precision,
              by["new"][lightfm.name].precision),
             ("pushgen default (train + rank)", default_rep, default_new)]
    for name, rep, new in table:
        print(f"{name:<40} {rep:21.4f} {'-' if new is None else f'{new:.4f}':>14}")
    pop_rep, pop_new = table[0][1], table[0][2]
    print(f"default vs popularity: {default_rep / pop_rep - 1:+.1%} (repeats allowed), "
          f"{default_new / pop_new - 1:+.1%} (new only); target: no worse than -2%")
    print(f"RESULT default_p10={default_rep:.4f} pop_p10={pop_rep:.4f} "
          f"buyagain_p10={table[1][1]:.4f} lightfm_p10={table[2][1]:.4f} "
          f"new_default_p10={default_new:.4f} new_pop_p10={pop_new:.4f}")


if __name__ == "__main__":
    main()
