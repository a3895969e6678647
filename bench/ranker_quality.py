"""Ranking quality of pushgen's hybrid on MovieLens 100k, against popularity and pure CF.

    python bench/ranker_quality.py [PATH_TO_ML100K] [--sweep]

Data: the GroupLens MovieLens 100K set (F. Maxwell Harper and Joseph A. Konstan, 2015, The
MovieLens Datasets: History and Context, ACM TiiS 5(4)).

Protocol: train on ua.base, test on ua.test; ratings >= 4 are positives (the model trains on
the positives of ua.base); every item the user rated in ua.base is left out of the ranking.
Then an item cold-start split: 20% of the items with all their ratings go to test, and each
user's test items are ranked among the held-out items only (AUC of LightFM's paper protocol).
The hybrid uses pushgen's own feature and training code (user age band, gender, occupation;
item genres as tags, the words of the titles). The "served blend" row is what ``pushgen
train`` + ``rank`` serve when trained on ua.base (with its timestamps): validation on the
latest days of ua.base, blend choice, refit. Ties are broken at random, seeds are fixed
(2-thread LightFM training still moves p@10 by about 0.004 between runs). ``--sweep`` also
prints the weighting experiments.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pushgen.ranking import EventLog, TrainParams  # noqa: E402
from pushgen.ranking.evaluate import (EvalData, LightFMScorer, Metrics,  # noqa: E402
                                      PopularityScorer, ServedScorer, compare)

GENRES = ["unknown", "action", "adventure", "animation", "childrens", "comedy", "crime",
          "documentary", "drama", "fantasy", "film-noir", "horror", "musical", "mystery",
          "romance", "sci-fi", "thriller", "war", "western"]


def age_band(age: int) -> str:
    for hi, band in ((17, "under-18"), (24, "18-24"), (34, "25-34"), (44, "35-44"),
                     (49, "45-49"), (55, "50-55")):
        if age <= hi:
            return band
    return "56+"


def load(path: Path) -> tuple[list[dict], list[dict]]:
    users = []
    for line in (path / "u.user").read_text().splitlines():
        if not line.strip():
            continue
        uid, age, gender, occupation, _zip = line.split("|")
        users.append({"id": int(uid), "locale": None, "attributes": {
            "age_band": age_band(int(age)), "gender": gender, "occupation": occupation}})
    items = []
    for line in (path / "u.item").read_text(encoding="latin-1").splitlines():
        if not line.strip():
            continue
        f = line.split("|")
        tags = [g for g, flag in zip(GENRES, f[5:24]) if flag == "1"]
        items.append({"id": int(f[0]), "sku": f"ml-{f[0]}", "title": f[1], "category": None,
                      "attributes": {"tags": tags}})
    return users, items


def ratings(path: Path) -> np.ndarray:
    return np.loadtxt(path, dtype=np.int64, delimiter="\t")


def matrix(r: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    return sp.csr_matrix((np.ones(len(r), np.float32), (r[:, 0] - 1, r[:, 1] - 1)), shape=shape)


def rating_log(r: np.ndarray) -> EventLog:
    """Ratings as pushgen events (kind "rating", value = stars), in time order."""
    order = np.argsort(r[:, 3], kind="stable")
    r = r[order]
    return EventLog(r[:, 0], r[:, 1], np.zeros(len(r), np.int16), r[:, 2].astype(float),
                    r[:, 3], ["rating"])


def base_split(path: Path, users, items) -> EvalData:
    base, test = ratings(path / "ua.base"), ratings(path / "ua.test")
    shape = (len(users), len(items))
    log = rating_log(base)
    return EvalData(users, items, matrix(base[base[:, 2] >= 4], shape),
                    matrix(test[test[:, 2] >= 4], shape), exclude=matrix(base, shape), log=log,
                    protocols=("new",), today=int(log.day.max()))


def cold_item_split(path: Path, users, items, seed: int = 42) -> EvalData:
    data = ratings(path / "u.data")
    rng = np.random.default_rng(seed)
    held = rng.choice(len(items), size=len(items) // 5, replace=False) + 1
    cold = np.isin(data[:, 1], held)
    shape = (len(users), len(items))
    train, test = data[~cold], data[cold]
    return EvalData(users, items, matrix(train[train[:, 2] >= 4], shape),
                    matrix(test[test[:, 2] >= 4], shape), candidates=np.sort(held - 1),
                    exclude=matrix(train, shape), protocols=("new",))


def table(title: str, rows: list[Metrics]) -> None:
    print(f"\n{title}")
    print(f"{'model':<34} {'p@10':>7} {'recall@10':>10} {'ndcg@10':>8} {'auc':>7} "
          f"{'coverage':>9} {'secs':>6}")
    for m in rows:
        print(f"{m.name:<34} {m.precision:7.4f} {m.recall:10.4f} {m.ndcg:8.4f} {m.auc:7.4f} "
              f"{m.coverage:9.3f} {m.seconds:6.1f}")


def hybrid(params: TrainParams, name: str = "pushgen hybrid") -> LightFMScorer:
    return LightFMScorer(params, features=True, name=name)


def rows_of(result) -> list[Metrics]:
    return result.rows["new"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", nargs="?", default=str(REPO.parent / "shared/data/ml-100k"))
    ap.add_argument("--sweep", action="store_true", help="also print weighting experiments")
    args = ap.parse_args()
    path = Path(args.path)
    users, items = load(path)
    # 20 epochs for both LightFM rows: the same training budget (fair comparison).
    params = TrainParams(user_features=("occupation",), epochs=20)
    cf = LightFMScorer(params, features=False, name="lightfm (no features)")
    base = base_split(path, users, items)
    served = ServedScorer(params)
    rows = rows_of(compare(base, [PopularityScorer(), cf, hybrid(params), served], k=10))
    table("MovieLens 100k, ua.base -> ua.test, positives = rating >= 4", rows)
    if served.served is not None:
        v = served.served.validation
        print(f"served blend: {v.get('weights', {}).get('new', v.get('skipped'))}; "
              f"{served.served.metrics['epochs']} epochs; "
              f"{served.served.blend.note or 'the personal model adds to popularity'}")
    cold = rows_of(compare(cold_item_split(path, users, items),
                           [PopularityScorer(), LightFMScorer(params, features=False,
                                                              name="lightfm (no features)"),
                            hybrid(params)], k=10))
    table("Item cold start: 20% of items held out with all their ratings", cold)
    if args.sweep:
        sweep(base, params)
    by = {m.name: m for m in rows}
    cby = {m.name: m for m in cold}
    print(f"\nRESULT hybrid_p10={by['pushgen hybrid'].precision:.4f} "
          f"cf_p10={by['lightfm (no features)'].precision:.4f} "
          f"pop_p10={by['popularity'].precision:.4f} "
          f"served_p10={by['served blend'].precision:.4f} "
          f"cold_auc_hybrid={cby['pushgen hybrid'].auc:.4f} "
          f"cold_auc_cf={cby['lightfm (no features)'].auc:.4f}")


def sweep(base: EvalData, params: TrainParams) -> None:
    """The weighting experiments behind the defaults (README: "Feature weighting")."""
    variants = []
    for alpha in (0.1, 0.25, 0.5, 1.0, 2.0):
        variants.append((f"identity 1 + meta total {alpha}",
                         dataclasses.replace(params, meta_weight=alpha)))
    variants.append(("every feature weight 1, rows normalised",
                     dataclasses.replace(params, meta_weight=None, cold_meta_weight=None,
                                         normalize_rows=True)))
    variants.append(("identity 1 + meta total 0.25, no title words",
                     dataclasses.replace(params, text_tokens=False)))
    table("Weighting sweep (ua.base -> ua.test)",
          rows_of(compare(base, [hybrid(p, name) for name, p in variants], k=10)))


if __name__ == "__main__":
    main()
