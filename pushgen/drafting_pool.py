"""Template drafts of one batch, in this process or in worker processes on the other cores.

``template_rows`` renders each message context with the campaign's template, runs the
channel rules and fact guards and returns the rows ``store.drafts.write_drafts`` takes.
``draft_campaign`` calls it directly (one process) or hands batches to a ``TemplatePool``:
worker processes render and check chunks of a batch while the drafting process ranks the
next batch, and writes finished batches in the order it submitted them, each in its own
transaction, so a parallel run commits exactly what a single-process run commits. While
the drafting process would wait for a batch, it drafts chunks no worker has taken; the
chunks of a worker that dies go back in the queue.

A worker is a fresh ``python`` running ``serve()`` that talks over its stdin and stdout
(length-prefixed pickles). It never opens the database (it gets the catalog's titles for
the product guard once, and plain contexts per batch), imports only the template and guard
modules, runs in its own session so Ctrl-C reaches only the drafting process (which keeps
every committed batch), and exits when its stdin closes, which happens also when the
drafting process is killed with ``kill -9``. Unlike ``multiprocessing``, nothing re-imports
the caller's main script.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
import traceback
from collections import deque
from json.encoder import encode_basestring as _encode_str
from pathlib import Path
from typing import IO, Any, Sequence

from .errors import PushgenError
from .messages import CheckResult, Message, MessageContext, checks_pass

# Below this many users a run drafts in one process: a worker (a fresh Python importing
# Jinja and the guards) starts in about half a second and the pipeline needs a few batches
# to fill (measured on 2 cores: 3,000 users no faster with a worker, 6,000 users 1.35x).
MIN_PARALLEL_USERS = 6000
# Contexts per chunk, the unit a worker (or this process) drafts at a time.
CHUNK = 500
# Batches in flight per worker before the drafting process waits for the oldest: ranking a
# few batches ahead keeps a worker's queue from running dry while this process ranks and
# writes (20k users, 1 worker: 2,700 drafts/s with 1 batch ahead, 3,100 with 3; more than
# 3 changed nothing). Each batch in flight holds its contexts and rows (a few MB).
BATCHES_AHEAD = 3
# Pipe buffer for a worker's stdin and stdout (Linux; the default is 64 KiB). A chunk's
# rows are ~2 MB: with the default the reader thread needs ~30 reads per reply, each
# waiting for the GIL this process is busy with, while the worker blocks on its write
# (20k users: 3,100 -> 3,300 drafts/s with 1 MiB, the most an unprivileged user may set).
PIPE_BYTES = 1 << 20


# -- one batch ------------------------------------------------------------------------------------
# The encoding of ``store.dumps`` (a test holds them equal): workers encode their rows
# without importing the store (sqlite-utils and numpy would double a worker's memory).
# One encoder, built once: json.dumps with these options builds a new one on every call.
_encode = json.JSONEncoder(ensure_ascii=False, sort_keys=True).encode


# Encoded checks, reused: most drafts' checks say the same words ("no emoji"), and encoding
# them is a quarter of a template draft's cost. Bounded; in this process's memory only.
_CHECKS_JSON: dict[tuple[str, bool, str, str], str] = {}


def _encode_checks(checks: Sequence[CheckResult]) -> str:
    """``_encode([c.to_dict() for c in checks])``, from the cache where it can."""
    parts = []
    for c in checks:
        key = (c.name, c.ok, c.message, c.severity)
        text = _CHECKS_JSON.get(key)
        if text is None:
            text = _encode(c.to_dict())
            if len(_CHECKS_JSON) < 20_000:
                _CHECKS_JSON[key] = text
        parts.append(text)
    return "[" + ", ".join(parts) + "]"


# An item's JSON in a draft: everything but its score and reason is the same in every
# draft that recommends it, so that part is encoded once (per process, per item facts
# object) and the two per-customer values are spliced in. Marks that catalog text cannot
# fake: an encoding holding them more than once is not split. At most 1,024 entries (a
# chunk of 500 drafts recommends a few hundred items; each entry holds ~2 KB).
_ITEM_PARTS: dict[tuple[Any, ...], tuple[Any, tuple[str, str, str] | None]] = {}
_REASON_MARK, _SCORE_MARK = "\ue000pushgen-reason\ue000", "\ue000pushgen-score\ue000"


def _encode_item(item: Any) -> str:
    """``_encode(item.to_dict())``, from cached parts where it can."""
    key = (item.sku, item.title, item.price, item.currency, item.sale_price, item.category,
           item.brand, item.description, item.url, item.image_url, id(item.attributes))
    hit = _ITEM_PARTS.get(key)
    if hit is None or hit[0] is not item.attributes:
        d = item.to_dict()
        d["reason"], d["score"] = _REASON_MARK, _SCORE_MARK
        text = _encode(d)
        r, sc = _encode(_REASON_MARK), _encode(_SCORE_MARK)
        parts = None
        if text.count(r) == 1 and text.count(sc) == 1 and text.index(r) < text.index(sc):
            head, rest = text.split(r)
            mid, tail = rest.split(sc)
            parts = (head, mid, tail)
        if len(_ITEM_PARTS) >= 1024:
            _ITEM_PARTS.clear()
        hit = _ITEM_PARTS[key] = (item.attributes, parts)
    parts = hit[1]
    reason, score = item.reason, item.score
    if parts is None or type(reason) is not str or type(score) is not float \
            or not math.isfinite(score):
        return _encode(item.to_dict())
    # what the encoder writes for a str and a finite float
    return parts[0] + _encode_str(reason) + parts[1] + float.__repr__(score) + parts[2]


def draft_row(campaign_id: int, ctx: MessageContext, message: Message,
              checks: list[CheckResult], *, encode: bool = False,
              **provenance: Any) -> dict[str, Any]:
    """The ``drafts`` row of one checked message (``store.drafts.write_drafts``);
    ``encode``: content, items and checks as their JSON text (smaller to keep and send)."""
    content: Any = message.fields
    if encode:
        content = _encode(content)
        items: Any = "[" + ", ".join(_encode_item(i) for i in ctx.items) + "]"
        results: Any = _encode_checks(checks)
    else:
        items = [i.to_dict() for i in ctx.items]
        results = [c.to_dict() for c in checks]
    return {
        "campaign_id": campaign_id, "user_id": ctx.recipient.user_id,
        "channel": message.channel, "variant": ctx.variant, "locale": ctx.recipient.locale,
        "content": content, "items": items, "checks": results, "passed": checks_pass(checks),
        **provenance,
    }


class Checker:
    """Runs channel rules + fact guards with one ``generate.guards.Guard`` (the catalog
    indexed once per run)."""

    def __init__(self, guard: Any) -> None:
        self._guard = guard

    def __call__(self, message: Message, ctx: MessageContext, forbidden: list[str]
                 ) -> list[CheckResult]:
        return self._guard.check(message, ctx, forbidden_values=forbidden)


def template_rows(campaign_id: int, contexts: Sequence[MessageContext], check: Checker,
                  forbidden: dict[int, list[str]], template_dirs: Sequence[Any] | None
                  ) -> list[dict[str, Any]]:
    """Render, check and turn into (encoded) rows every context of one batch."""
    from .generate.templates import render

    rows = []
    for ctx in contexts:
        rendered = render(ctx, template=ctx.settings.template, template_dirs=template_dirs)
        checks = check(rendered.message, ctx, forbidden.get(ctx.recipient.user_id, []))
        rows.append(draft_row(campaign_id, ctx, rendered.message, checks, encode=True,
                              generator="template", template_name=f"{rendered.template_name}@"
                                                                  f"{rendered.template_version}"))
    return rows


# -- how many processes ---------------------------------------------------------------------------
def default_workers() -> int:
    """Processes that draft when none are asked for: one per CPU this process may use."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # pragma: no cover - not on Linux
        return max(os.cpu_count() or 1, 1)


def plan_workers(requested: int | None, users: int, batch_size: int) -> int:
    """How many processes draft, this one included: ``requested`` (None: one per CPU, but
    one for audiences under MIN_PARALLEL_USERS), and 1 when there is a single batch."""
    if requested is not None and requested < 1:
        raise PushgenError(f"--workers must be at least 1 (got {requested})")
    if requested is None:
        requested = default_workers() if users >= MIN_PARALLEL_USERS else 1
    return 1 if users <= batch_size else requested


# -- the wire: length-prefixed pickles ------------------------------------------------------------
_LENGTH = struct.Struct("<Q")


def _send(stream: IO[bytes], obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LENGTH.pack(len(data)))
    stream.write(data)
    stream.flush()


def _receive(stream: IO[bytes]) -> Any:
    """The next object, or EOFError when the other side has closed the pipe."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        raise EOFError
    size = _LENGTH.unpack(head)[0]
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)


# -- inside a worker ------------------------------------------------------------------------------
def serve() -> None:
    """A worker's main loop: set-up, then one chunk in, its rows (or its error) out, until
    stdin closes."""
    from .generate.guards import Guard

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr          # a stray print must never corrupt the replies
    try:
        titles, template_dirs = _receive(inp)
        check = Checker(Guard(titles))
        while True:
            campaign_id, contexts, forbidden = _receive(inp)
            try:
                reply: tuple[str, Any] = ("rows", template_rows(
                    campaign_id, contexts, check, forbidden, template_dirs))
            except PushgenError as exc:        # a template mistake: the user's to fix
                reply = ("error", PushgenError(str(exc)))
            except Exception:                  # a bug: keep its traceback
                reply = ("error", RuntimeError("drafting worker failed:\n"
                                               + traceback.format_exc()))
            _send(out, reply)
    except (EOFError, BrokenPipeError):
        return                                 # the drafting process is done or gone


# -- in the drafting process ----------------------------------------------------------------------
class _Job:
    """One chunk of a batch: drafted by a worker, or by the drafting process itself."""

    def __init__(self, payload: tuple[int, list[MessageContext], dict[int, list[str]]]) -> None:
        self.payload: tuple[Any, ...] | None = payload
        self.rows: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self.done = threading.Event()

    def finish(self, rows: Any = None, error: BaseException | None = None) -> None:
        self.payload = None                     # the contexts are no longer needed
        self.rows, self.error = rows or [], error
        self.done.set()


class _Batch:
    """The chunks of one submitted batch, committed together."""

    def __init__(self, tag: Any, jobs: list[_Job]) -> None:
        self.tag, self.jobs = tag, jobs

    def first_open(self) -> _Job | None:
        return next((j for j in self.jobs if not j.done.is_set()), None)

    def result(self) -> tuple[list[dict[str, Any]], Any]:
        for job in self.jobs:
            if job.error is not None:
                raise job.error
        return [row for job in self.jobs for row in job.rows], self.tag


def _widen_pipes(*streams: IO[bytes] | None) -> None:
    """Raise the kernel buffer of these pipes to PIPE_BYTES where the system allows it."""
    try:
        import fcntl
        set_size = fcntl.F_SETPIPE_SZ           # type: ignore[attr-defined]  # Linux only
    except (ImportError, AttributeError):      # pragma: no cover - not on Linux
        return
    for stream in streams:
        if stream is None:
            continue
        try:
            fcntl.fcntl(stream.fileno(), set_size, PIPE_BYTES)
        except OSError:                         # pragma: no cover - a lower system limit
            pass


class _Worker:
    """One worker process with a writer thread (pickles and sends chunks, so handing one
    over never blocks) and a reader thread (receives the rows, in order)."""

    def __init__(self, setup: tuple[Any, ...], pool: "TemplatePool") -> None:
        root = str(Path(__file__).resolve().parents[1])   # the same pushgen as ours
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from pushgen.drafting_pool import serve; serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True,
            start_new_session=True)
        _widen_pipes(self.proc.stdin, self.proc.stdout)
        self.alive = True
        self.outstanding: deque[_Job] = deque()     # guarded by the pool's lock
        self._pool = pool
        self._outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._outbox.put(setup)
        self._writer = threading.Thread(target=self._write, daemon=True,
                                        name="pushgen-draft-writer")
        self._reader = threading.Thread(target=self._read, daemon=True,
                                        name="pushgen-draft-reader")
        self._writer.start()
        self._reader.start()

    def send(self, job: _Job) -> None:
        """Hand ``job`` over (the caller holds the pool's lock and added it to
        ``outstanding``)."""
        self._outbox.put(job.payload)

    def _write(self) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            while (payload := self._outbox.get()) is not None:
                _send(stdin, payload)
        except (OSError, ValueError):
            pass                                # the reader reports the dead worker
        finally:
            try:
                stdin.close()
            except OSError:
                pass

    def _read(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        while True:
            try:
                kind, value = _receive(stdout)
            except (EOFError, OSError, ValueError, pickle.UnpicklingError):
                break
            job = self._pool._answered(self)
            if job is not None:
                job.finish(value, None) if kind == "rows" else job.finish(None, value)
        self._pool._died(self, self.proc.wait())

    def close(self, kill: bool) -> None:
        self._outbox.put(None)                  # stdin closes: the worker ends its loop
        if kill and self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:      # pragma: no cover - a stuck worker
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=5)
        self._writer.join(timeout=5)


class TemplatePool:
    """``workers`` processes, plus this one when it would otherwise wait, that turn batches
    of contexts into checked, encoded draft rows.

    ``submit`` splits a batch into chunks of ``chunk`` contexts and returns at once;
    ``next_done`` gives whole batches back in submission order. While ``full`` the caller
    should wait for the oldest (``next_done(wait=True)``), and while it waits this process
    drafts chunks no worker has taken yet, so both sides stay busy whichever is faster.
    Each worker holds at most two chunks (one drafting, one on its way); memory stays flat.
    """

    def __init__(self, workers: int, catalog_titles: dict[str, list[str]],
                 template_dirs: Sequence[Any] | None, check: Checker, *,
                 chunk: int | None = None) -> None:
        self.template_dirs = ([str(Path(d).resolve()) for d in template_dirs]
                              if template_dirs else None)
        self.check, self.chunk = check, max(chunk or CHUNK, 1)
        self._lock = threading.Lock()
        self._todo: deque[_Job] = deque()       # chunks no one has taken yet
        self._batches: deque[_Batch] = deque()
        self.workers: list[_Worker] = []
        self.chunks = 0                         # chunks submitted
        self.drafted_here = 0                   # ... of which this process drafted itself
        self.notes: list[str] = []              # what the caller should tell the user
        self._closing = False
        try:
            for _ in range(workers):
                self.workers.append(_Worker((catalog_titles, self.template_dirs), self))
        except BaseException:
            self.close()
            raise

    # -- bookkeeping shared with the reader threads --
    def _answered(self, worker: _Worker) -> _Job | None:
        """Reader thread: ``worker`` replied; the job it was for (the oldest it holds),
        and the worker gets its next chunk."""
        with self._lock:
            job = worker.outstanding.popleft() if worker.outstanding else None
            self._feed()
        return job

    def _died(self, worker: _Worker, code: int) -> None:
        """Reader thread: ``worker`` is gone; the chunks it held go back to the front of
        the queue (another worker or this process drafts them; nothing is lost)."""
        with self._lock:
            worker.alive = False
            lost, worker.outstanding = list(worker.outstanding), deque()
            self._todo.extendleft(reversed(lost))
            if not self._closing:
                self.notes.append(f"a drafting worker process stopped (exit code {code}); "
                                  "its drafts were made by the others")
            self._feed()

    def _feed(self) -> None:
        """Give every live worker up to two chunks (caller holds the lock)."""
        for worker in self.workers:
            while worker.alive and len(worker.outstanding) < 2 and self._todo:
                job = self._todo.popleft()
                worker.outstanding.append(job)
                worker.send(job)

    # -- the caller's side --
    @property
    def full(self) -> bool:
        return len(self._batches) > BATCHES_AHEAD * max(len(self.workers), 1)

    def submit(self, campaign_id: int, contexts: list[MessageContext],
               forbidden: dict[int, list[str]], tag: Any = None) -> None:
        """Queue one batch; ``tag`` comes back with its rows."""
        jobs = []
        for start in range(0, len(contexts), self.chunk):
            part = contexts[start:start + self.chunk]
            users = {c.recipient.user_id for c in part}
            jobs.append(_Job((campaign_id, part,
                              {u: v for u, v in forbidden.items() if u in users})))
        self._batches.append(_Batch(tag, jobs))
        self.chunks += len(jobs)
        with self._lock:
            self._todo.extend(jobs)
            self._feed()

    def next_done(self, wait: bool) -> tuple[list[dict[str, Any]], Any] | None:
        """(rows, tag) of the oldest batch once every chunk of it is drafted (``wait``:
        until then, drafting untaken chunks here meanwhile); None when nothing is pending
        or it is not done. Raises the batch's error."""
        while self._batches:
            batch = self._batches[0]
            open_job = batch.first_open()
            if open_job is None:
                self._batches.popleft()
                return batch.result()
            if not wait:
                return None
            with self._lock:
                job = self._todo.popleft() if self._todo else None
            if job is None:
                open_job.done.wait(0.2)         # short waits: Ctrl-C stays responsive
                continue
            campaign_id, contexts, forbidden = job.payload  # type: ignore[misc]
            try:
                job.finish(template_rows(campaign_id, contexts, self.check, forbidden,
                                         self.template_dirs))
            except PushgenError as exc:
                job.finish(None, exc)
            self.drafted_here += 1
        return None

    def close(self) -> None:
        """Stop the workers: at once when batches are still out (they are dropped; a rerun
        drafts them), else once their stdin closes."""
        kill = bool(self._batches)
        with self._lock:
            self._closing = True
            self._batches.clear()
            self._todo.clear()
        for worker in self.workers:
            worker.close(kill)

    def __enter__(self) -> "TemplatePool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
