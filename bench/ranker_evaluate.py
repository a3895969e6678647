"""How long `pushgen evaluate` takes next to `pushgen train`, on the demo shop.

    python bench/ranker_evaluate.py [--users 100000] [--db demo.db] [--split time]

Builds the demo shop (``pushgen.demo.build_demo_shop``, seed 7, 20 events a customer) unless
``--db`` names one that is already built, then times ``train`` (validation on the latest days,
blend choice, refit: what ``pushgen train`` runs) and ``evaluate_store`` (the same procedure on
the training part, LightFM without features, then scoring every row on both protocols). The
target (issue 8): evaluate within 3x the time of training the models it compares.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pushgen.demo import build_demo_shop  # noqa: E402
from pushgen.ranking import TrainParams, evaluate_store, train  # noqa: E402
from pushgen.store import open_store  # noqa: E402
from pushgen.store import ranking as rank_store  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--items", type=int, default=400)
    ap.add_argument("--db", help="an existing demo database to reuse (built if missing)")
    ap.add_argument("--split", default="time")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    path = Path(args.db) if args.db else Path(tmp.name) / "demo.db"
    db = open_store(path)
    if not rank_store.user_ids_all(db):
        t = time.perf_counter()
        build_demo_shop(db, seed=7, n_users=args.users, n_items=args.items,
                        n_events=20 * args.users)
        print(f"built the demo shop ({args.users:,} customers) in {time.perf_counter() - t:.0f} s",
              flush=True)
    n_users = len(rank_store.user_ids_all(db))
    n_events = db.execute("SELECT count(*) FROM events").fetchone()[0]
    params = TrainParams()
    t = time.perf_counter()
    record = train(db, params)
    train_secs = time.perf_counter() - t
    v = record.validation
    print(f"train: {train_secs:.1f} s ({record.metrics['epochs']} epochs chosen; "
          f"{v.get('weights', v.get('skipped'))})", flush=True)
    t = time.perf_counter()
    result = evaluate_store(db, args.split, 10, params)
    eval_secs = time.perf_counter() - t
    fits = result.fit_seconds
    fit_total = sum(fits.values())
    lightfm_fits = fits.get("served blend", 0) + fits.get("no features", 0)
    print(f"\n{n_users:,} customers, {n_events:,} events, {args.split} split; "
          f"{', '.join(f'{p}: {n:,} test customers' for p, n in result.users.items())}")
    print(f"{'step':<58} {'seconds':>8}")
    for name, secs in fits.items():
        print(f"{'  evaluate: fit ' + name:<58} {secs:8.1f}")
    print(f"{'  evaluate: scoring every row on both protocols':<58} "
          f"{eval_secs - fit_total:8.1f}")
    print(f"{'evaluate, total':<58} {eval_secs:8.1f}")
    print(f"{'training the compared LightFM models (inside evaluate)':<58} {lightfm_fits:8.1f}")
    print(f"{'pushgen train on every day (for scale)':<58} {train_secs:8.1f}")
    print(f"evaluate / training its models: {eval_secs / lightfm_fits:.2f}x; "
          f"evaluate / pushgen train: {eval_secs / train_secs:.2f}x (target: at most 3x)")
    for protocol, rows in result.rows.items():
        print(f"\n{protocol}: " + ", ".join(f"{m.name} {m.precision:.3f}" for m in rows))
    print(f"\nRESULT evaluate_seconds={eval_secs:.1f} train_seconds={train_secs:.1f} "
          f"model_fit_seconds={lightfm_fits:.1f} ratio_to_fits={eval_secs / lightfm_fits:.2f} "
          f"ratio_to_train={eval_secs / train_secs:.2f}")


if __name__ == "__main__":
    main()
