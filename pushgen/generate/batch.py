"""Batch endpoints: the OpenAI Batch API, or a JSONL file for vLLM's offline ``run-batch``.

A batch line is ``{"custom_id": <cache key>, "method": "POST", "url": "/v1/chat/completions",
"body": <the Chat Completions request>}``; a result line is ``{"id", "custom_id", "response":
{"status_code", "request_id", "body": <chat.completion>}, "error"}`` (the format of both
OpenAI's output/error files and vLLM's ``run-batch -o``). Answers go into the same cache as
live answers (keyed by endpoint + prompt hash), so drafting after a batch makes no call.

Every step is recorded before the next one starts (``store.llm_batches``): a batch row and
its requests, then the uploaded file id, then the provider's batch id. A process that
dies in between leaves a row the next run finishes: an uploaded file is not uploaded
again, and a batch created but not recorded is found again by the submission id in its
metadata, so nothing is submitted (or paid for) twice.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import openai
from sqlite_utils import Database
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from ..errors import InputError, PushgenError
from ..store import llm_batches as store
from ..store import llm_cache
from .llm import LLMGenerator, MissingRequests, parse_fields
from .llm_client import (BadResponse, ChatClient, InvalidOutput, LLMStop, describe,
                         parse_completion)

BATCH_URL = "/v1/chat/completions"
MAX_REQUESTS = 50_000             # OpenAI: requests per batch file
MAX_BYTES = 190 * 1024 * 1024     # OpenAI: 200 MB per batch file (with a margin)
MAX_LINE_BYTES = 4 * 1024 * 1024  # one result line; a longer one is refused
IMPORT_CHUNK = 5000               # result lines stored per transaction
TRIES = 2                         # a request that failed in this many batches is not resent
FILE_ENDPOINT = "batch-file"      # cache identity of answers imported without --base-url


@dataclass
class Collected:
    """What collecting or importing did."""

    answered: int = 0
    failed: int = 0
    already: int = 0              # answers imported before, or repeated in the file
    unknown: int = 0              # result lines that are not requests of this campaign
    tokens_prompt: int = 0
    tokens_completion: int = 0
    errors: list[str] = field(default_factory=list)


# --- lines ---------------------------------------------------------------------------------------


def request_line(custom_id: str, body: dict[str, Any]) -> str:
    """One line of a batch input file."""
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": BATCH_URL,
                       "body": body}, ensure_ascii=False)


def _chunks(missing: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Groups of requests that fit one batch file."""
    group: list[dict[str, Any]] = []
    size = 0
    for item in missing:
        n = len(request_line(item["custom_id"], item["body"]).encode()) + 1
        if group and (len(group) >= MAX_REQUESTS or size + n > MAX_BYTES):
            yield group
            group, size = [], 0
        group.append(item)
        size += n
    if group:
        yield group


def _jsonl(db: Database, row_id: int) -> bytes:
    return "".join(request_line(cid, req["body"]) + "\n"
                   for cid, _, _, req in store.requests_of(db, row_id)).encode("utf-8")


def _store_rows(group: list[dict[str, Any]]) -> Iterator[tuple[str, str | None, str, dict]]:
    for item in group:
        yield (item["custom_id"], item["block_key"], item["prompt_hash"],
               {"body": item["body"], "keys": item["keys"]})


# --- the provider API ----------------------------------------------------------------------------


class BatchAPI:
    """The Files and Batches endpoints of one OpenAI-compatible server (with the same
    deadline, size cap and key handling as chat requests, and three tries per call)."""

    def __init__(self, *, model: str, base_url: str | None, api_key: str | None,
                 timeout: float = 300.0) -> None:
        self.client = ChatClient(model=model, base_url=base_url, api_key=api_key,
                                 timeout=max(timeout, 300.0), max_attempts=3,
                                 max_response_bytes=1024 * 1024 * 1024, connections=2)
        self.openai = self.client.openai
        self.endpoint = self.client.endpoint

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        def transient(exc: BaseException) -> bool:
            if isinstance(exc, openai.APIStatusError):
                return exc.status_code in (408, 409, 429) or exc.status_code >= 500
            return isinstance(exc, openai.APIConnectionError)

        try:
            for attempt in Retrying(stop=stop_after_attempt(3), reraise=True,
                                    wait=wait_exponential_jitter(initial=1, max=10),
                                    retry=retry_if_exception(transient)):
                with attempt:
                    return fn(*args, **kwargs)
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise LLMStop(f"{self.endpoint} refused the API key ({describe(exc)}): check "
                          "--api-key / OPENAI_API_KEY") from None
        except openai.NotFoundError as exc:
            raise PushgenError(f"{what} at {self.endpoint}: not found ({describe(exc)}); does "
                               "this server have the OpenAI Batch API (/v1/files, /v1/batches)?"
                               " For vLLM use --batch-file and `vllm run-batch`") from None
        except (openai.OpenAIError, BadResponse) as exc:
            raise PushgenError(f"{what} at {self.endpoint} failed: {describe(exc)}") from None

    def upload(self, data: bytes) -> str:
        f = self._call("uploading the batch file", self.openai.files.create,
                       file=("pushgen-batch.jsonl", data, "application/jsonl"), purpose="batch")
        return str(f.id)

    def create(self, file_id: str, submission: str, campaign: str) -> Any:
        return self._call("creating the batch", self.openai.batches.create,
                          input_file_id=file_id, endpoint=BATCH_URL, completion_window="24h",
                          metadata={"pushgen_submission": submission,
                                    "pushgen_campaign": campaign[:500]})

    def find(self, submission: str) -> Any | None:
        """A batch created for ``submission`` (by a run that died before recording it)."""
        page = self._call("listing batches", self.openai.batches.list, limit=100)
        for b in getattr(page, "data", None) or []:
            if (b.metadata or {}).get("pushgen_submission") == submission:
                return b
        return None

    def retrieve(self, batch_id: str) -> Any:
        return self._call(f"reading batch {batch_id}", self.openai.batches.retrieve, batch_id)

    def download(self, file_id: str) -> IO[bytes]:
        """The file's content in a temporary file, to be read line by line (the output file
        of a million requests is about a gigabyte)."""
        def fetch() -> IO[bytes]:
            out = tempfile.TemporaryFile()
            try:
                with self.openai.files.with_streaming_response.content(file_id) as res:
                    for chunk in res.iter_bytes(1 << 16):
                        out.write(chunk)
            except BaseException:
                out.close()
                raise
            out.seek(0)
            return out

        return self._call(f"downloading file {file_id}", fetch)

    def close(self) -> None:
        self.client.close()


# --- submitting ----------------------------------------------------------------------------------


def submit(db: Database, api: BatchAPI, gen: LLMGenerator, campaign_id: int, campaign: str,
           missing: MissingRequests, *, mode: str, settings: dict[str, Any]
           ) -> list[store.BatchRow]:
    """Send every missing request in batches (as many as the size limits need)."""
    rows = []
    for group in _chunks(missing):
        row_id = store.create(db, campaign_id, kind="api", submission=uuid.uuid4().hex,
                              endpoint=gen.endpoint, model=gen.model, mode=mode,
                              settings=settings, requests=_store_rows(group))
        rows.append(send(db, api, store.get(db, row_id), campaign))
    return rows


def send(db: Database, api: BatchAPI, row: store.BatchRow, campaign: str) -> store.BatchRow:
    """Finish a submission from wherever it stopped: upload, then create (or find) the batch.

    A row that was already uploaded by an earlier process may have its batch created but
    not recorded (the process died in between): look for it before creating another."""
    resumed = bool(row.input_file_id)
    if not resumed:
        file_id = api.upload(_jsonl(db, row.id))
        store.update(db, row.id, input_file_id=file_id, status="uploaded")
        row = store.get(db, row.id)
    batch = api.find(row.submission) if resumed else None
    if batch is None:
        batch = api.create(str(row.input_file_id), row.submission, campaign)
    store.update(db, row.id, batch_id=str(batch.id), status=str(batch.status))
    return store.get(db, row.id)


def write_file(db: Database, gen: LLMGenerator, campaign_id: int, missing: MissingRequests,
               path: str | os.PathLike[str], *, mode: str, settings: dict[str, Any]
               ) -> store.BatchRow:
    """Write every missing request to ``path`` (atomically) for ``vllm run-batch`` or any
    OpenAI-format batch runner, and record it; an older file not yet imported is replaced."""
    target = Path(path)
    if not target.parent.is_dir():
        raise PushgenError(f"{target}: folder {target.parent} does not exist")
    store.replace_open_files(db, campaign_id)
    items = list(_store_rows(list(missing)))
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for cid, _, _, req in items:
                fh.write(request_line(cid, req["body"]) + "\n")
        row_id = store.create(db, campaign_id, kind="file", submission=uuid.uuid4().hex,
                              endpoint=gen.endpoint, model=gen.model, mode=mode,
                              settings=settings, requests=items, path=str(target),
                              status="written")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return store.get(db, row_id)


# --- collecting ----------------------------------------------------------------------------------


def collect(db: Database, api: BatchAPI, gen: LLMGenerator, campaign_id: int, campaign: str
            ) -> tuple[list[store.BatchRow], Collected]:
    """Poll the campaign's open API batches once; download and cache the results of every
    finished one (completed, expired, cancelled: their partial results count). Returns the
    batches still running and what was collected. A batch that failed validation raises
    PushgenError with its errors once it is recorded (its requests go into the next batch)."""
    done = Collected()
    running = []
    failures = []
    for row in store.rows(db, campaign_id, open_only=True, kind="api"):
        if not row.batch_id:
            running.append(send(db, api, row, campaign))
            continue
        b = api.retrieve(row.batch_id)
        if b.status not in store.TERMINAL:
            store.update(db, row.id, status=str(b.status))
            running.append(store.get(db, row.id))
            continue
        error = None
        if b.status == "failed":
            errs = (getattr(b.errors, "data", None) or []) if b.errors else []
            error = "; ".join(f"line {e.line}: {e.message}" if e.line else str(e.message)
                              for e in errs[:3]) or "the batch failed"
            failures.append(f"batch {b.id} failed: {error}")
        for fid in (b.output_file_id, b.error_file_id):
            if fid:
                with api.download(fid) as fh:
                    got = import_lines(db, gen, campaign_id, _numbered(fh),
                                       origin=f"batch {b.id} file {fid}", strict=False)
                _add(done, got)
        store.close(db, row.id, status=str(b.status), error=error)
    if failures:
        raise PushgenError("; ".join(failures) + " (fix the cause and rerun: the requests are "
                           "sent again in a new batch)")
    return running, done


def import_file(db: Database, gen: LLMGenerator, campaign_id: int,
                path: str | os.PathLike[str]) -> Collected:
    """Read a results file (vLLM ``run-batch -o`` or an OpenAI output file) into the cache.

    A broken line (not JSON, no custom_id) refuses the whole file with its line number before
    anything is stored (the file is read twice, line by line, never whole). Lines that are
    not requests of this campaign are counted and skipped."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            for n, raw in _numbered(fh):
                _result(n, raw, str(p), True, Collected())
            fh.seek(0)
            got = import_lines(db, gen, campaign_id, _numbered(fh), origin=str(p), strict=True)
    except OSError as exc:
        raise InputError(f"cannot read ({exc.strerror or exc})", file=str(p)) from None
    if got.answered + got.failed + got.already == 0:
        raise InputError(f"none of its {got.unknown} result line(s) answers a request of this "
                         "campaign (written with --batch-file for the same campaign, model "
                         "and --base-url?)", file=str(p))
    for row in store.rows(db, campaign_id, open_only=True, kind="file"):
        if store.pending_count(db, row.id) == 0:
            store.close(db, row.id, status="completed")
    return got


def _numbered(fh: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of the non-blank lines; a line over MAX_LINE_BYTES comes
    cut at MAX_LINE_BYTES + 1 bytes (for the reader to refuse), its rest skipped."""
    n = 0
    while raw := fh.readline(MAX_LINE_BYTES + 1):
        n += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while (rest := fh.readline(1 << 20)) and not rest.endswith(b"\n"):
                pass
        if raw.strip():
            yield n, raw


def _add(total: Collected, part: Collected) -> None:
    total.answered += part.answered
    total.failed += part.failed
    total.unknown += part.unknown
    total.already += part.already
    total.tokens_prompt += part.tokens_prompt
    total.tokens_completion += part.tokens_completion
    total.errors += part.errors


def _error_text(obj: dict[str, Any]) -> str:
    err = obj.get("error")
    if isinstance(err, dict):
        return f"{err.get('code') or 'error'}: {err.get('message') or ''}".strip()[:300]
    resp = obj.get("response") if isinstance(obj.get("response"), dict) else {}
    body = resp.get("body") if isinstance(resp.get("body"), dict) else {}
    inner = body.get("error") if isinstance(body.get("error"), dict) else {}
    return f"HTTP {resp.get('status_code')}: {inner.get('message') or 'error'}"[:300]


def _result(n: int, raw: bytes, origin: str, strict: bool, got: Collected
            ) -> dict[str, Any] | None:
    """Result line ``n`` as an object with a custom_id; None (counted as unknown) for a
    broken line, which ``strict`` refuses instead."""
    if len(raw.rstrip(b"\r\n")) > MAX_LINE_BYTES:
        if strict:
            raise InputError(f"result line over {MAX_LINE_BYTES:,} bytes", file=origin, line=n)
        got.unknown += 1
        return None
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        if strict:
            raise InputError(f"not a JSON object ({exc})", file=origin, line=n) from None
        got.unknown += 1
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("custom_id"), str):
        if strict:
            raise InputError("not a batch result (no custom_id)", file=origin, line=n,
                             field="custom_id")
        got.unknown += 1
        return None
    return obj


def import_lines(db: Database, gen: LLMGenerator, campaign_id: int,
                 lines: Iterable[tuple[int, bytes]], *, origin: str, strict: bool
                 ) -> Collected:
    """Cache the valid answers among result ``lines`` and mark every matched request,
    IMPORT_CHUNK lines per transaction (memory stays flat however long the file is)."""
    got = Collected()
    parsed: list[tuple[int, dict[str, Any]]] = []
    for n, raw in lines:
        obj = _result(n, raw, origin, strict, got)
        if obj is not None:
            parsed.append((n, obj))
        if len(parsed) >= IMPORT_CHUNK:
            _import_parsed(db, gen, campaign_id, parsed, got, strict)
            parsed = []
    if parsed:
        _import_parsed(db, gen, campaign_id, parsed, got, strict)
    return got


def _import_parsed(db: Database, gen: LLMGenerator, campaign_id: int,
                   parsed: list[tuple[int, dict[str, Any]]], total: Collected,
                   from_file: bool) -> None:
    """Store one chunk of parsed result lines (one transaction), counting into ``total``
    (``from_file``: read from a results file, else downloaded from a batch)."""
    got = Collected()
    known = store.lookup(db, campaign_id, [obj["custom_id"] for _, obj in parsed])
    answers, marks = [], []
    seen: set[str] = set()        # a request repeated in the chunk counts once (the first)
    for n, obj in parsed:
        cid = obj["custom_id"]
        if cid not in known:
            got.unknown += 1
            continue
        row_id, block_key, phash, req, status = known[cid]
        if status == "answered" or cid in seen:
            got.already += 1
            continue
        seen.add(cid)
        resp = obj.get("response")
        body = resp.get("body") if isinstance(resp, dict) else None
        if not (isinstance(resp, dict) and resp.get("status_code") == 200
                and isinstance(body, dict)):
            marks.append((row_id, cid, "failed", _error_text(obj)))
            got.failed += 1
            continue
        try:
            content, tp, tc = parse_completion(body)
            parse_fields(content, req.get("keys") or [])
            if len(content) > llm_cache.MAX_CACHED_CHARS:
                raise BadResponse(f"answer over {llm_cache.MAX_CACHED_CHARS:,} characters")
        except InvalidOutput as exc:
            marks.append((row_id, cid, "invalid", f"invalid answer: {exc}"[:300]))
            got.failed += 1
            continue
        except BadResponse as exc:
            marks.append((row_id, cid, "failed", str(exc)[:300]))
            got.failed += 1
            continue
        sent = req.get("body") or {}
        fmt = (sent.get("response_format") or {}).get("type")
        answers.append(llm_cache.NewAnswer(
            key=cid, model=gen.model, endpoint=gen.endpoint, prompt_hash=phash,
            request={"messages": sent.get("messages"),
                     "params": {"temperature": sent.get("temperature")}},
            content=content, tokens_prompt=tp, tokens_completion=tc, block_key=block_key,
            response_format=fmt, source="import" if from_file else "batch"))
        marks.append((row_id, cid, "answered", None))
        got.answered += 1
        got.tokens_prompt += tp
        got.tokens_completion += tc
    store.record_results(db, answers, marks)
    gen.imported(got.answered + got.failed, got.tokens_prompt, got.tokens_completion)
    _add(total, got)


__all__ = ["BatchAPI", "Collected", "submit", "send", "write_file", "collect", "import_file",
           "import_lines", "request_line", "TRIES", "FILE_ENDPOINT", "MAX_REQUESTS"]
