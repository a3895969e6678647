"""Import speed and memory: a large events CSV through ``import_file``, against a baseline.

    python bench/import_speed.py --events 1000000 --baseline 99ac46e

Writes (once, cached in --workdir) an events CSV of --events rows with ISO timestamps over
--users customers and --items products, and a second file where every line appears twice.
Each measurement runs in a fresh child process (so its peak RSS is its own): the child
builds a database with the customers and products (not timed), imports the events file
(timed), then imports it again (timed: every event already there). A third child imports
the doubled file (repeats merged into quantities). With ``--baseline REV`` the same
children also run the ``pushgen`` package of that git revision (extracted to a temporary
folder), interleaved with the current code, so both see the same machine load; each case
keeps its best of ``--runs``. ``csv.reader`` over the file is the floor any CSV import pays.

Ends with: RESULT events_per_s=… reimport_events_per_s=… peak_mb=… ratio_to_baseline=…
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM, not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _write_events(path: Path, n: int, users: int, items: int, repeat: int) -> None:
    rng = random.Random(5)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write("user,item,kind,ts\n")
        kinds = ("view", "view", "view", "cart", "purchase")
        for i in range(n // repeat):
            line = (f"u{rng.randrange(users)},s{rng.randrange(items)},{rng.choice(kinds)},"
                    f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:{(i // 24) % 60:02d}:"
                    f"{(i // 1440) % 60:02d}Z\n")
            f.write(line * repeat)
    tmp.rename(path)


def _child(case: str, file: str, workdir: str, users: int, items: int) -> None:
    if case == "csv_read":
        t = time.perf_counter()
        with open(file, encoding="utf-8", newline="") as f:
            rows = sum(1 for _ in csv.reader(f)) - 1
        print(json.dumps({"rows": rows, "seconds": time.perf_counter() - t,
                          "peak_mb": _peak_rss_mb()}))
        return
    from pushgen.ingest import import_file, import_rows
    from pushgen.store import open_store

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        db = open_store(Path(tmp) / "bench.db")
        import_rows(db, "users", [{"external_id": f"u{i}"} for i in range(users)])
        import_rows(db, "items", [{"sku": f"s{i}", "title": f"Item {i}"} for i in range(items)])
        t = time.perf_counter()
        report = import_file(db, "events", file)
        seconds = time.perf_counter() - t
        peak = _peak_rss_mb()
        out = {"rows": report.rows, "inserted": report.inserted, "seconds": seconds,
               "peak_mb": peak}
        if case == "import_twice":
            t = time.perf_counter()
            again = import_file(db, "events", file)
            out["again_seconds"] = time.perf_counter() - t
            out["again_unchanged"] = again.unchanged
        db.conn.close()
    print(json.dumps(out))


def _run(case: str, file: Path, args: argparse.Namespace, pythonpath: str | None) -> dict:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    out = subprocess.run([sys.executable, __file__, "--child", case, str(file),
                          str(args.workdir), str(args.users), str(args.items)],
                         capture_output=True, text=True, check=True, cwd=args.workdir, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _best(runs: list[dict]) -> dict:
    best = dict(min(runs, key=lambda r: r["seconds"]))
    if "again_seconds" in best:
        best["again_seconds"] = min(r["again_seconds"] for r in runs)
    best["peak_mb"] = max(r["peak_mb"] for r in runs)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--items", type=int, default=2_000)
    ap.add_argument("--runs", type=int, default=1, help="best of this many runs per case")
    ap.add_argument("--baseline", metavar="REV",
                    help="also measure the pushgen package of this git revision")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/pushgen-import-bench"))
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        case, file, workdir, users, items = args.child
        _child(case, file, workdir, int(users), int(items))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    events = args.workdir / f"events-{args.events}-{args.users}-{args.items}.csv"
    doubled = args.workdir / f"events-{args.events}-{args.users}-{args.items}-x2.csv"
    for path, repeat in ((events, 1), (doubled, 2)):
        if not path.exists():
            _write_events(path, args.events, args.users, args.items, repeat)
    versions: dict[str, str | None] = {"current": str(ROOT)}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        if args.baseline:
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline, "pushgen"],
                                     capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
            versions = {f"baseline {args.baseline}": tmp, **versions}
        floor = _best([_run("csv_read", events, args, None) for _ in range(args.runs)])
        results: dict[str, dict[str, list[dict]]] = {v: {"twice": [], "doubled": []}
                                                     for v in versions}
        for _ in range(args.runs):
            for name, path in versions.items():
                results[name]["twice"].append(_run("import_twice", events, args, path))
            for name, path in versions.items():
                results[name]["doubled"].append(_run("import", doubled, args, path))

    print(f"{args.events:,} events, {args.users:,} users, {args.items:,} items (file "
          f"{events.stat().st_size / 1e6:.0f} MB); best of {args.runs}; csv.reader alone "
          f"{floor['seconds']:.1f} s")
    print("| code | case | seconds | rows/s | x csv.reader | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    summary: dict[str, dict[str, float]] = {}
    for name in versions:
        twice, doubled_run = _best(results[name]["twice"]), _best(results[name]["doubled"])
        rows = twice["rows"]
        cases = (("import into empty events", twice["seconds"], twice["peak_mb"]),
                 ("same file again (unchanged)", twice["again_seconds"], twice["peak_mb"]),
                 ("every line twice (merged)", doubled_run["seconds"], doubled_run["peak_mb"]))
        for label, seconds, peak in cases:
            print(f"| {name} | {label} | {seconds:.1f} | {rows / seconds:,.0f} | "
                  f"{seconds / floor['seconds']:.0f} | {peak:.0f} |")
        summary[name] = {"import": twice["seconds"], "again": twice["again_seconds"],
                         "peak": max(twice["peak_mb"], doubled_run["peak_mb"]), "rows": rows}
    cur = summary["current"]
    ratio = ""
    if args.baseline:
        base = summary[f"baseline {args.baseline}"]
        ratio = f" ratio_to_baseline={cur['import'] / base['import']:.2f}"
    print(f"RESULT events_per_s={cur['rows'] / cur['import']:.0f} "
          f"reimport_events_per_s={cur['rows'] / cur['again']:.0f} "
          f"peak_mb={cur['peak']:.0f}{ratio}")


if __name__ == "__main__":
    main()
