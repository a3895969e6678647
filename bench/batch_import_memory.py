"""Peak memory of reading LLM batch results back (``pushgen draft --import-batch-results``).

On the demo shop (``--users`` customers, built and trained once into ``--workdir``), each run
takes a fresh copy, writes the per-customer push requests with ``--batch-file``, answers
them the way ``vllm run-batch`` would (the fake endpoint's echo as the model), and imports
the answers, which also drafts every customer. Measured in a child process: its peak
resident memory (``ru_maxrss``) and seconds, for this checkout and for ``--baseline-src``
(another checkout) back to back in the same run. ``--repeat N`` writes each answer line N
times (repeats are counted as already imported) to show how memory follows the file size.

Ends with: RESULT batch_import_peak_mb=… baseline_peak_mb=… ratio=…
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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))      # the fake endpoint's echo lives with the tests
sys.path.insert(0, str(ROOT / "bench"))


def _answers(requests: Path, results: Path, repeat: int) -> int:
    """What ``vllm run-batch -i requests -o results`` writes, with the fake's echo."""
    import fake_openai as fake

    n = 0
    with requests.open(encoding="utf-8") as src, results.open("w", encoding="utf-8") as out:
        for raw in src:
            req = json.loads(raw)
            body = fake.completion(req["body"], json.dumps(fake.echo_fields(req["body"])))
            line = json.dumps({"id": f"r{n}", "custom_id": req["custom_id"], "error": None,
                               "response": {"status_code": 200, "request_id": f"q{n}",
                                            "body": body}}) + "\n"
            out.write(line * repeat)
            n += 1
    return n


def _child(db: str, results: str) -> None:
    """One import in this process; prints its peak memory and time as JSON."""
    from pushgen.cli import app

    t = time.perf_counter()
    try:
        app(["draft", "-c", "bench", "--channel", "push", "--generator", "llm", "--model", "m",
             "--llm-mode", "per-user", "--import-batch-results", results, "--db", db],
            standalone_mode=False)
    finally:
        print(json.dumps({"seconds": time.perf_counter() - t,
                          "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def _run(shop: Path, repeat: int, src: Path | None) -> dict:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")])
    with tempfile.TemporaryDirectory(dir=shop.parent) as tmp:
        work = Path(tmp)
        for p in shop.parent.glob(shop.name + "*"):
            shutil.copy(p, work / p.name)
        shutil.copytree(shop.parent / "pushgen-models", work / "pushgen-models")
        db, requests, results = work / shop.name, work / "requests.jsonl", work / "results.jsonl"
        subprocess.run([sys.executable, "-c", "from pushgen.cli import main; main()", "draft",
                        "-c", "bench", "--channel", "push", "--generator", "llm", "--model", "m",
                        "--llm-mode", "per-user", "--batch-file", str(requests), "--db", str(db)],
                       check=True, capture_output=True, env=env, cwd=src or ROOT)
        lines = _answers(requests, results, repeat)
        out = subprocess.run([sys.executable, __file__, "--child", str(db), str(results)],
                             check=True, capture_output=True, text=True, env=env,
                             cwd=src or ROOT)
        got = json.loads(out.stdout.strip().splitlines()[-1])
        got.update(requests=lines, lines=lines * repeat, mb=results.stat().st_size / 2**20)
        return got


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--events-per-user", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--baseline-src", type=Path, default=None,
                    help="another pushgen checkout measured in the same run")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/pushgen-bench"))
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    from draft_speed import _shop

    shop = _shop(args.workdir, args.users, args.events_per_user)
    print(f"\nImporting per-customer push answers, {args.users:,}-user demo shop "
          "(import + drafting; peak: the importing process)")
    print(f"{'run':<24} {'requests':>9} {'lines':>9} {'file MB':>8} {'seconds':>8} "
          f"{'peak MB':>8} {'ratio':>6}")
    base = _run(shop, args.repeat, args.baseline_src) if args.baseline_src else None
    this = _run(shop, args.repeat, None)
    for label, r in (((f"baseline ({args.baseline_src.name})", base),) if base else ()) + \
            (("this checkout", this),):
        ratio = r["peak_mb"] / base["peak_mb"] if base else 1.0
        print(f"{label:<24} {r['requests']:>9,} {r['lines']:>9,} {r['mb']:>8.1f} "
              f"{r['seconds']:>8.1f} {r['peak_mb']:>8.0f} {ratio:>6.2f}")
    line = f"RESULT batch_import_peak_mb={this['peak_mb']:.0f}"
    if base:
        line += (f" baseline_peak_mb={base['peak_mb']:.0f} "
                 f"ratio={this['peak_mb'] / base['peak_mb']:.2f}")
    print(line)


if __name__ == "__main__":
    main()
