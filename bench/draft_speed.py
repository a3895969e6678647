"""Drafting speed: template SMS end to end, and LLM drafting against a local slow server.

    python bench/draft_speed.py --users 100000 --llm-drafts 1000

1. Template path: a demo shop of --users customers is built and a model trained (cached in
   --workdir between runs), then ``draft_campaign`` drafts an SMS campaign for every
   consented user: audience + rank + render + check + store, on a fresh copy of the shop
   each time. Back to back in the same run: one process (``--workers 1``) and the default
   (one worker process per CPU rendering and checking while the main process ranks and
   writes), and the ratio; ``--baseline-src DIR`` adds a row for another checkout of
   pushgen (e.g. the code before a change). Each run is a child process; its peak memory
   is the largest sum of the resident memory of the drafting process and its workers,
   sampled every 20 ms (``main MB``: the drafting process alone, exact).
2. Memory: the same default drafting on a --memory-users shop (20k), on the --users shop
   with the audience limited to --memory-users customers, and on the whole --users shop:
   peak MB of each, the ratio of the two shops (target: at most 1.2x) and of the two
   audiences of one shop (what the audience size alone adds).
3. LLM path: --llm-drafts SMS drafts through the real openai client against the test
   suite's fake Chat Completions server with --latency seconds per call at --concurrency,
   compared with the ideal n * latency / concurrency; then the same campaign is redrafted
   (--regenerate) and the number of HTTP calls counted (all must be cache hits).

4. LLM copy blocks (the default LLM mode) on the same --users shop for email and SMS,
   against the fake server (--latency per call, --concurrency): LLM calls per 1,000 drafts,
   drafts/s end to end, and the time spent waiting on calls against the ideal
   calls * latency / concurrency; every prompt the server received is searched for every
   customer's first name (there must be none).
5. A batch round trip: --batch-users customers of the same shop drafted through the fake
   Files + Batches API (submit, the server finishes the batch, collect), with zero live
   calls; batch_ok=1 when every customer got an LLM draft.

Ends with: RESULT template_drafts_per_s=… llm_ratio_to_ideal=… llm_calls_rerun=… peak_mb=…
llm_calls_per_1000_drafts=… blocks_drafts_per_s=… batch_ok=1|0 peak_mb_20k=… peak_mb_100k=…
(template_drafts_per_s and peak_mb: the default drafting of the --users shop;
peak_mb_<N>k: the same at N thousand users.)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the fake OpenAI server lives with the tests


def _shop(workdir: Path, users: int, events_per_user: int) -> Path:
    from pushgen.demo import build_demo_shop
    from pushgen.ranking import TrainParams, train
    from pushgen.store import open_store

    db_path = workdir / f"shop-{users}.db"
    if db_path.exists():
        return db_path
    tmp = db_path.with_suffix(".building.db")
    for p in workdir.glob(tmp.name + "*"):
        p.unlink()
    db = open_store(tmp)
    t = time.perf_counter()
    build_demo_shop(db, seed=11, n_users=users, n_items=400, n_events=events_per_user * users)
    print(f"built shop: {users:,} users in {time.perf_counter() - t:.1f} s", flush=True)
    t = time.perf_counter()
    train(db, TrainParams(epochs=5))
    print(f"trained model in {time.perf_counter() - t:.1f} s", flush=True)
    db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.conn.close()
    tmp.rename(db_path)
    # the model artifact path is stored relative to the database folder: still valid
    return db_path


def _peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM; unlike ru_maxrss it is not inherited
    from the parent across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants (a process that ends while it
    is read counts 0)."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
                    break
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total


class _TreePeak:
    """Samples the process tree's resident memory every 20 ms in a thread."""

    def __init__(self) -> None:
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_rss_mb(os.getpid()))
            self._stop.wait(0.02)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return max(self.peak, _peak_rss_mb())


def _child_template(db_path: str, channel: str, workers: str, limit: str) -> None:
    """Runs in a fresh process: draft one campaign, print JSON with timing and peak RSS
    (``workers``: 'default' or a number; an old checkout without the option gets none;
    ``limit``: audience size, 0 for all)."""
    from pushgen.campaign import draft_campaign
    from pushgen.config import load_campaign_config
    from pushgen.store import open_store

    db = open_store(db_path)
    name = f"bench-{channel}-{time.time_ns()}"
    base_rss = _peak_rss_mb()
    kwargs = {} if workers == "default" else {"workers": int(workers)}
    config = load_campaign_config(None, name=name, channel=channel)
    config.audience.limit = int(limit) or None
    sampler = _TreePeak()
    t = time.perf_counter()
    report = draft_campaign(db, name, config, **kwargs)
    seconds = time.perf_counter() - t
    peak = sampler.stop()
    print(json.dumps({"drafted": report.drafted, "seconds": seconds, "peak_mb": peak,
                      "main_mb": _peak_rss_mb(), "rss_after_imports_mb": base_rss,
                      "passed": report.passed, "workers": getattr(report, "workers", 1)}))


def _fresh_copy(db_path: Path, into: Path) -> Path:
    """The shop and its model artifacts copied into ``into`` (each run drafts a clean
    copy, so earlier runs' drafts never slow a later one)."""
    for p in db_path.parent.glob(db_path.name + "*"):
        shutil.copy(p, into / p.name)
    models = db_path.parent / "pushgen-models"
    if models.is_dir():
        shutil.copytree(models, into / "pushgen-models")
    return into / db_path.name


def _template(db_path: Path, channel: str, workers: str = "default",
              src: Path | None = None, limit: int = 0) -> dict:
    """One template drafting run in a child process (``src``: another pushgen checkout)."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")])
    with tempfile.TemporaryDirectory(dir=db_path.parent) as tmp:
        copy = _fresh_copy(db_path, Path(tmp))
        out = subprocess.run([sys.executable, __file__, "--child", str(copy), channel,
                              workers, str(limit)], check=True, capture_output=True,
                             text=True, env=env, cwd=src or ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _serve(latency: float, conn, auto_finish: bool = False) -> None:
    """Child process: the fake OpenAI server, so it does not share our GIL. On "stop" it
    answers with its peak concurrency; on a list of names, with how many received prompts
    contain one of them (and how many prompts it received)."""
    import re

    from fake_openai import FakeOpenAI, all_text

    with FakeOpenAI(latency=latency, auto_finish=auto_finish) as server:
        conn.send(server.url)
        while True:
            msg = conn.recv()
            if msg == "stop":
                conn.send(server.max_in_flight)
                return
            latin = [n for n in msg if n.isascii()]
            pattern = re.compile(r"(?<!\w)(" + "|".join(map(re.escape, latin)) + r")(?!\w)")
            others = [n for n in msg if not n.isascii()]
            texts = [all_text(r) for r in server.requests]
            hits = sum(1 for t in texts if pattern.search(t) or any(n in t for n in others))
            conn.send((hits, len(texts)))


def _server(latency: float, auto_finish: bool = False):
    import multiprocessing as mp

    parent, child = mp.Pipe()
    proc = mp.get_context("fork").Process(target=_serve, args=(latency, child, auto_finish),
                                          daemon=True)
    proc.start()
    return proc, parent, parent.recv()


def _llm(workdir: Path, n: int, latency: float, concurrency: int) -> dict:
    from pushgen.campaign import LLMOptions, draft_campaign
    from pushgen.config import load_campaign_config
    from pushgen.demo import build_demo_shop
    from pushgen.ranking import TrainParams, train
    from pushgen.store import open_store

    db_path = workdir / f"llm-{time.time_ns()}.db"
    db = open_store(db_path)
    # enough users that n of them consent to SMS and have a phone
    users = int(n * 1.4) + 50
    build_demo_shop(db, seed=5, n_users=users, n_items=400, n_events=users * 10)
    # Demo first names repeat, and two users with the same name and items share one prompt
    # (and one call). Make every prompt distinct so the benchmark makes n real calls.
    db.execute("UPDATE users SET name = name || ' ' || id")
    db.conn.commit()
    train(db, TrainParams(epochs=5))
    cfg = load_campaign_config(None, name="llm-bench", channel="sms")
    cfg.settings.allowed_profile_fields = ["name", "locale"]
    cfg.audience.limit = n
    proc, parent, url = _server(latency)
    try:
        opts = LLMOptions(model="bench-model", base_url=url, concurrency=concurrency,
                          mode="per-user")
        client = opts.generator(db)   # built (and openai imported) before timing
        t = time.perf_counter()
        first = draft_campaign(db, "llm-bench", cfg, generator="llm", llm=opts,
                               batch_size=n, llm_client=client)
        elapsed = time.perf_counter() - t
        calls_first = client.calls
        t = time.perf_counter()
        again = draft_campaign(db, "llm-bench", cfg, generator="llm", llm=opts,
                               regenerate=True, batch_size=n, llm_client=client)
        rerun_seconds = time.perf_counter() - t
        calls_rerun = client.calls - calls_first
        parent.send("stop")
        in_flight = parent.recv()
    finally:
        proc.terminate()
    ideal = first.drafted * latency / concurrency
    return {"drafted": first.drafted, "elapsed": elapsed, "ideal": ideal,
            "ratio": elapsed / ideal if ideal else float("nan"), "calls": calls_first,
            "calls_rerun": calls_rerun, "rerun_seconds": rerun_seconds,
            "redrafted": again.drafted, "max_in_flight": in_flight,
            "fallbacks": first.fallbacks}


def _first_names(db_path: Path) -> list[str]:
    """Every customer's first name (as a greeting would use it) not found in catalog text."""
    import sqlite3

    from pushgen.messages import Recipient

    con = sqlite3.connect(db_path)
    try:
        names = {Recipient(0, "", n).first_name for (n,) in
                 con.execute("SELECT DISTINCT name FROM users WHERE name IS NOT NULL")}
        catalog = " ".join(t for (t,) in con.execute(
            "SELECT title || ' ' || coalesce(description, '') || ' ' || attributes FROM items"))
    finally:
        con.close()
    return sorted(n for n in names if n and len(n) >= 2 and n not in catalog)


def _blocks(db_path: Path, latency: float, concurrency: int, channels: list[str]) -> dict:
    """Copy blocks on the big shop, one campaign per channel; then the privacy count."""
    from pushgen.campaign import LLMOptions, draft_campaign
    from pushgen.config import load_campaign_config
    from pushgen.store import open_store

    db = open_store(db_path)
    proc, conn, url = _server(latency)
    out: dict = {"channels": {}}
    try:
        opts = LLMOptions(model="bench-model", base_url=url, concurrency=concurrency)
        gen = opts.generator(db)
        for channel in channels:
            name = f"blocks-{channel}-{time.time_ns()}"
            cfg = load_campaign_config(None, name=name, channel=channel)
            calls0, wait0 = gen.live_calls, gen.live_seconds
            t = time.perf_counter()
            rep = draft_campaign(db, name, cfg, generator="llm", llm=opts, llm_client=gen)
            seconds = time.perf_counter() - t
            calls, waited = gen.live_calls - calls0, gen.live_seconds - wait0
            ideal = calls * latency / concurrency
            out["channels"][channel] = {
                "drafted": rep.drafted, "llm_drafts": rep.llm_drafts, "calls": calls,
                "seconds": seconds, "waited": waited, "ideal": ideal,
                "ratio": waited / ideal if ideal else float("nan"),
                "per_1000": calls * 1000 / max(rep.drafted, 1), "fallbacks": rep.fallbacks,
                "passed": rep.passed}
        names = _first_names(db_path)
        conn.send(names)
        out["prompts_with_names"], out["prompts"] = conn.recv()
        out["names_checked"] = len(names)
        conn.send("stop")
        conn.recv()
    finally:
        proc.terminate()
    return out


def _batch(db_path: Path, n: int) -> dict:
    """A batch round trip through the fake Files + Batches API for n customers (push)."""
    from pushgen.campaign import LLMOptions
    from pushgen.campaign_batch import draft_campaign_batch
    from pushgen.config import load_campaign_config
    from pushgen.store import open_store

    db = open_store(db_path)
    proc, conn, url = _server(0.0, auto_finish=True)
    try:
        name = f"batch-{time.time_ns()}"
        cfg = load_campaign_config(None, name=name, channel="push")
        cfg.audience.limit = n
        opts = LLMOptions(model="bench-model", base_url=url)
        t = time.perf_counter()
        sent = draft_campaign_batch(db, name, cfg, llm=opts, action="submit")
        got = draft_campaign_batch(db, name, cfg, llm=opts, action="collect")
        seconds = time.perf_counter() - t
        conn.send("stop")
        conn.recv()
    finally:
        proc.terminate()
    report = got.report
    ok = (report is not None and bool(sent.submitted) and got.missing == 0
          and report.llm_drafts == report.drafted == n and report.llm_calls > 0)
    return {"submitted": sum(r.requests for r in sent.submitted),
            "drafted": report.drafted if report else 0,
            "llm_drafts": report.llm_drafts if report else 0, "seconds": seconds, "ok": ok}


def main() -> None:
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        _child_template(*sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=100_000, help="demo shop size for the "
                    "template run")
    ap.add_argument("--events-per-user", type=int, default=10)
    ap.add_argument("--llm-drafts", type=int, default=1000, help="per-user LLM drafts "
                    "(0 to skip)")
    ap.add_argument("--latency", type=float, default=0.2, help="seconds per LLM call")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--channels", default="sms", help="comma list for the template run")
    ap.add_argument("--blocks-channels", default="email,sms",
                    help="comma list for the LLM copy-blocks run ('' to skip)")
    ap.add_argument("--batch-users", type=int, default=2000)
    ap.add_argument("--memory-users", type=int, default=20_000,
                    help="smaller shop whose peak memory the --users shop is compared with "
                         "(0 to skip)")
    ap.add_argument("--workers", default="default",
                    help="worker processes of the parallel template run (default: one per CPU)")
    ap.add_argument("--baseline-src", type=Path, default=None,
                    help="another pushgen checkout (folder holding its pushgen/ package) "
                         "whose template drafting is measured in the same run")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/pushgen-bench"))
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)

    db_path = _shop(args.workdir, args.users, args.events_per_user)
    small_path = (_shop(args.workdir, args.memory_users, args.events_per_user)
                  if args.memory_users and args.memory_users != args.users else None)
    print(f"\nTemplate drafting, {args.users:,}-user demo shop (rank + render + check + "
          "store), back to back")
    head = (f"{'channel':<8} {'run':<22} {'drafts':>8} {'seconds':>8} {'drafts/s':>9} "
            f"{'ratio':>6} {'peak MB':>8} {'main MB':>8} {'MB after imports':>17}")
    print(head)

    def row(channel: str, label: str, r: dict, base: dict | None) -> None:
        rate = r["drafted"] / r["seconds"]
        ratio = rate / (base["drafted"] / base["seconds"]) if base else 1.0
        print(f"{channel:<8} {label:<22} {r['drafted']:>8,} {r['seconds']:>8.1f} {rate:>9,.0f} "
              f"{ratio:>6.2f} {r['peak_mb']:>8.0f} {r['main_mb']:>8.0f} "
              f"{r['rss_after_imports_mb']:>17.0f}", flush=True)

    results = {}
    for channel in args.channels.split(","):
        single = _template(db_path, channel, "1")
        row(channel, "1 process", single, None)
        if args.baseline_src is not None:
            row(channel, f"baseline ({args.baseline_src.name})",
                _template(db_path, channel, "default", args.baseline_src), single)
        r = _template(db_path, channel, args.workers)
        results[channel] = r
        row(channel, f"{r['workers']} processes" if r["workers"] > 1
            else "default (1 process)", r, single)
    memory: dict[int, float] = {}
    sms = results.get("sms") or next(iter(results.values()))
    if small_path is not None:
        channel = "sms" if "sms" in results else next(iter(results))
        small = _template(small_path, channel, args.workers)
        limited = _template(db_path, channel, args.workers, limit=args.memory_users)
        big = results[channel]
        memory = {args.memory_users: small["peak_mb"], args.users: big["peak_mb"]}
        print(f"\nPeak memory of the default template drafting ({channel}; peak MB: the "
              "drafting process and its workers, main MB: the drafting process)")
        print(f"{'shop users':>10} {'audience':>9} {'drafts':>8} {'peak MB':>8} {'main MB':>8}")
        for users, audience, r in ((args.memory_users, "all", small),
                                   (args.users, f"{args.memory_users:,}", limited),
                                   (args.users, "all", big)):
            print(f"{users:>10,} {audience:>9} {r['drafted']:>8,} {r['peak_mb']:>8.0f} "
                  f"{r['main_mb']:>8.0f}")
        print(f"ratio {args.users:,} / {args.memory_users:,}-user shop: "
              f"{big['peak_mb'] / small['peak_mb']:.2f}; same {args.users:,}-user shop, whole "
              f"audience / {args.memory_users:,} users: {big['peak_mb'] / limited['peak_mb']:.2f}")

    llm = _llm(args.workdir, args.llm_drafts, args.latency, args.concurrency) \
        if args.llm_drafts else None
    if llm:
        print(f"\nLLM drafting via the openai client, {args.latency * 1000:.0f} ms per call, "
              f"concurrency {args.concurrency}")
        print(f"{'drafts':>7} {'calls':>6} {'elapsed s':>10} {'ideal s':>8} {'ratio':>6} "
              f"{'max in flight':>14} {'rerun calls':>12} {'rerun s':>8}")
        print(f"{llm['drafted']:>7,} {llm['calls']:>6,} {llm['elapsed']:>10.2f} "
              f"{llm['ideal']:>8.2f} {llm['ratio']:>6.2f} {llm['max_in_flight']:>14} "
              f"{llm['calls_rerun']:>12} {llm['rerun_seconds']:>8.2f}")
    channels = [c for c in args.blocks_channels.split(",") if c]
    # the LLM runs draft into their own copy: the cached shop stays clean for the next run
    llm_dir = tempfile.TemporaryDirectory(dir=args.workdir)
    llm_shop = _fresh_copy(db_path, Path(llm_dir.name))
    blocks = _blocks(llm_shop, args.latency, args.concurrency, channels) if channels else None
    if blocks:
        print(f"\nLLM copy blocks, {args.users:,}-user shop (400 items, 2 locales), "
              f"{args.latency * 1000:.0f} ms per call, concurrency {args.concurrency}")
        print(f"{'channel':<8} {'drafts':>8} {'calls':>6} {'per 1000':>9} {'seconds':>8} "
              f"{'drafts/s':>9} {'call wait s':>12} {'ideal s':>8} {'ratio':>6} "
              f"{'fallbacks':>10}")
        for channel, r in blocks["channels"].items():
            print(f"{channel:<8} {r['drafted']:>8,} {r['calls']:>6,} {r['per_1000']:>9.1f} "
                  f"{r['seconds']:>8.1f} {r['drafted'] / r['seconds']:>9,.0f} "
                  f"{r['waited']:>12.2f} {r['ideal']:>8.2f} {r['ratio']:>6.2f} "
                  f"{r['fallbacks']:>10,}")
        print(f"prompts received: {blocks['prompts']:,}; prompts containing any of the "
              f"{blocks['names_checked']:,} customers' first names: "
              f"{blocks['prompts_with_names']}")
    batch = _batch(llm_shop, args.batch_users) if args.batch_users else None
    llm_dir.cleanup()
    if batch:
        print(f"\nBatch round trip (fake Files + Batches API), {args.batch_users:,} push "
              f"customers: {batch['submitted']:,} requests submitted, {batch['drafted']:,} "
              f"drafts written ({batch['llm_drafts']:,} by the LLM) in {batch['seconds']:.1f} s,"
              f" 0 live calls: {'ok' if batch['ok'] else 'FAILED'}")
    line = f"RESULT template_drafts_per_s={sms['drafted'] / sms['seconds']:.0f}"
    if llm:
        line += (f" llm_ratio_to_ideal={llm['ratio']:.2f} "
                 f"llm_calls_rerun={llm['calls_rerun']}")
    line += f" peak_mb={sms['peak_mb']:.0f}"
    if blocks:
        worst = max(r["per_1000"] for r in blocks["channels"].values())
        total = sum(r["drafted"] for r in blocks["channels"].values())
        seconds = sum(r["seconds"] for r in blocks["channels"].values())
        line += (f" llm_calls_per_1000_drafts={worst:.1f} blocks_drafts_per_s={total / seconds:.0f}"
                 f" blocks_prompts_with_names={blocks['prompts_with_names']}")
    if batch:
        line += f" batch_ok={int(batch['ok'])}"
    for users, mb in sorted(memory.items()):
        line += f" peak_mb_{users // 1000}k={mb:.0f}"
    print(line)


if __name__ == "__main__":
    main()
