"""Prompts and answers of the LLM path: what is asked, how answers are parsed and cached.

A ``LLMRequest`` is one prompt whose answer is a JSON object with fixed keys: a per-user
draft, or a reusable copy block (``generate.blocks`` decides which prompts a draft needs).
``LLMGenerator.answer_many`` answers a set of requests: from this run's memory, the SQLite
cache (keyed by endpoint + prompt hash) or the endpoint, with bounded concurrency through
``llm_client.ChatClient`` (deadline per request, circuit breaker, structured output). In
offline mode (batch drafting) it never calls: requests without an answer are collected in
``missing`` for a batch file.

Catalog text reaches the model only inside a JSON data block (``<catalog_data>``), with
``<`` and ``>`` escaped so an item description cannot close the block and pose as
instructions. Thread-safety: HTTP calls run in worker threads; every database read and
write happens on the thread that called ``answer_many``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from collections import Counter, OrderedDict
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import jinja2
from sqlite_utils import Database

from ..channels import control_chars
from ..errors import PushgenError
from ..messages import ItemFacts
from ..store import dumps
from ..store import llm_cache
from .llm_client import (MAX_RESPONSE_BYTES, RETRY_AFTER_CAP, ChatClient, InvalidOutput,
                         LLMStop, RequestFailed, normalize_endpoint, retry_after_seconds)
from .templates import format_money, localized_title

DATA_OPEN, DATA_CLOSE = "<catalog_data>", "</catalog_data>"
DESCRIPTION_MAX = 200        # characters of an item description shown to the model
FEEDBACK_MAX = 300           # characters per repair-feedback line
FEEDBACK_LINES = 6
MEMO_SIZE = 50_000           # answers kept in memory per run (blocks repeat across batches)


# --- prompts ---------------------------------------------------------------------------------


class _PromptLoader(jinja2.BaseLoader):
    """User prompt folders first, then the prompts bundled in the wheel."""

    def __init__(self, dirs: Sequence[Path]) -> None:
        self.dirs = list(dirs)

    def get_source(self, environment: jinja2.Environment, template: str
                   ) -> tuple[str, str, Callable[[], bool]]:
        parts = template.split("/")
        for d in self.dirs:
            p = d.joinpath(*parts)
            if p.is_file():
                mtime = p.stat().st_mtime
                return (p.read_text(encoding="utf-8"), str(p),
                        lambda: p.exists() and p.stat().st_mtime == mtime)
        try:
            res = resources.files("pushgen.bundled_prompts").joinpath(*parts)
            if res.is_file():
                return res.read_text(encoding="utf-8"), str(res), lambda: True
        except ModuleNotFoundError:  # running from a source tree that is not installed
            p = Path(__file__).resolve().parents[2].joinpath("prompts", *parts)
            if p.is_file():
                return p.read_text(encoding="utf-8"), str(p), lambda: True
        raise jinja2.TemplateNotFound(template)


class Prompts:
    """The prompt templates (user folders override bundled files by name)."""

    def __init__(self, prompt_dirs: Sequence[str | os.PathLike[str]] | None = None) -> None:
        dirs = [Path(d) for d in (prompt_dirs or [])]
        for d in dirs:
            if not d.is_dir():
                raise PushgenError(f"{d}: prompt folder does not exist")
        self.env = jinja2.Environment(loader=_PromptLoader(dirs),
                                      undefined=jinja2.StrictUndefined, trim_blocks=True,
                                      lstrip_blocks=True, keep_trailing_newline=False,
                                      autoescape=False)

    def messages(self, task: str, values: dict[str, Any]) -> list[dict[str, str]]:
        """System + user chat messages: ``system.j2`` and ``<task>.j2`` rendered."""
        try:
            system = self.env.get_template("system.j2").render(values)
            user = self.env.get_template(f"{task}.j2").render(values)
        except jinja2.TemplateError as exc:
            where = getattr(exc, "filename", None) or getattr(exc, "name", None) or "prompt"
            line = getattr(exc, "lineno", None)
            raise PushgenError(f"{where}{f':{line}' if line else ''}: {exc}") from None
        return [{"role": "system", "content": system.strip()},
                {"role": "user", "content": user.strip()}]


def data_json(obj: Any) -> str:
    """JSON for the data block. '<' and '>' only occur inside JSON strings, so \\u003c /
    \\u003e keep the JSON identical in meaning while making a forged </catalog_data>
    impossible."""
    text = json.dumps(obj, ensure_ascii=False, indent=2)
    return text.replace("<", "\\u003c").replace(">", "\\u003e")


def item_data(item: ItemFacts, locale: str) -> dict[str, Any]:
    """The catalog facts of one item as the model sees them (no links: pushgen adds those)."""
    desc = (item.description or "").strip()
    if len(desc) > DESCRIPTION_MAX:
        desc = desc[:DESCRIPTION_MAX].rstrip() + "…"
    data: dict[str, Any] = {
        "sku": item.sku, "title": localized_title(item, locale),
        "price": item.price, "sale_price": item.sale_price, "currency": item.currency,
        "current_price_text": format_money(item.current_price, item.currency, locale),
        "discount_pct": item.discount_pct,
        "category": item.category, "brand": item.brand, "description": desc or None,
    }
    if item.discount_pct:
        data["was_price_text"] = format_money(item.price, item.currency, locale)
    return {k: v for k, v in data.items() if v is not None}


def feedback_lines(lines: Iterable[str]) -> list[str]:
    """Repair feedback as the prompt shows it: one line each, cut, at most FEEDBACK_LINES."""
    out = list(dict.fromkeys(" ".join(x.split())[:FEEDBACK_MAX] for x in lines if x.strip()))
    return out[:FEEDBACK_LINES]


def prompt_hash(messages: list[dict[str, str]], model: str, params: dict[str, Any]) -> str:
    """sha256 of model + messages + parameters: the draft's provenance (and, with the
    endpoint, the cache key)."""
    blob = dumps({"model": model, "messages": messages, "params": params})
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def estimate_tokens(messages: list[dict[str, str]]) -> int:
    """Rough prompt size (~4 characters a token), for dry runs."""
    return sum(len(m["content"]) for m in messages) // 4 + 4 * len(messages)


# --- answers ---------------------------------------------------------------------------------

_FENCE_RE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


# Answer keys that become single-line fields (mail headers, notification titles).
ONE_LINE_KEYS = frozenset({"subject", "preheader", "title", "body"})


def parse_fields(content: str | None, keys: Sequence[str]) -> dict[str, str]:
    """The model's JSON answer as {key: text}; InvalidOutput unless it has exactly ``keys``,
    all non-empty strings. A ```json fence around it is tolerated."""
    text = (content or "").strip()
    fence = _FENCE_RE.match(text)
    if fence:
        text = fence.group(1)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidOutput(f"answer is not JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(obj, dict):
        raise InvalidOutput(f"answer is JSON {type(obj).__name__}, not an object")
    missing = [k for k in keys if k not in obj]
    extra = sorted(set(obj) - set(keys))
    if missing or extra:
        raise InvalidOutput(f"answer keys wrong (missing: {', '.join(missing) or '-'}; "
                            f"unexpected: {', '.join(extra) or '-'})")
    bad = [k for k in keys if not isinstance(obj[k], str) or not obj[k].strip()]
    if bad:
        raise InvalidOutput(f"answer fields not non-empty text: {', '.join(bad)}")
    for k in keys:
        # A line break in a subject or title is refused, never silently joined: it is how a
        # header is injected. Other control characters are refused everywhere.
        found = control_chars(obj[k].strip(), "" if k in ONE_LINE_KEYS else "\n\t")
        if found:
            shown = ", ".join(repr(c) for c in found[:3])
            raise InvalidOutput(f"answer field {k} contains control characters ({shown}); "
                                f"{'write it on one line' if k in ONE_LINE_KEYS else 'remove them'}")
    return {k: obj[k].strip() for k in keys}


@dataclass
class LLMRequest:
    """One prompt whose answer is a JSON object with exactly ``keys``.

    ``block_key`` says what the answer is for, readable (``sms.lead|SK-1|en-US|-|v1``,
    ``user:42|v1``); ``placeholders`` maps a key to ``required`` or ``optional`` for
    ``{first_name}`` (keys not listed must not contain one)."""

    block_key: str
    task: str
    messages: list[dict[str, str]]
    keys: tuple[str, ...]
    placeholders: dict[str, str] = field(default_factory=dict)
    hash: str | None = field(default=None, compare=False)   # set by LLMGenerator.prompt_hash

    def schema(self) -> dict[str, Any]:
        """The ``json_schema`` response format for this request's keys."""
        name = re.sub(r"[^A-Za-z0-9_-]", "_", f"pushgen_{self.task}")[:64]
        return {"name": name, "strict": True,
                "schema": {"type": "object",
                           "properties": {k: {"type": "string"} for k in self.keys},
                           "required": list(self.keys), "additionalProperties": False}}


@dataclass
class Answer:
    """What ``answer_many`` found for one request. ``kind``: ``ok``; ``output`` (the model
    never answered valid JSON: a repair may help); ``http`` (the endpoint failed: no repair);
    ``missing`` (offline: no answer yet)."""

    key: str
    prompt_hash: str
    block_key: str
    fields: dict[str, str] | None
    error: str | None = None
    kind: str = "ok"
    cached: bool = False
    tokens_prompt: int = 0
    tokens_completion: int = 0
    calls: int = 0
    response_format: str | None = None


class MissingRequests:
    """Requests an offline run found no answer for, spooled to a temporary file (a per-user
    batch of a million customers does not sit in memory); only the keys stay in memory."""

    def __init__(self) -> None:
        self.keys: set[str] = set()
        self._file = tempfile.TemporaryFile("w+", encoding="utf-8")

    def add(self, key: str, request: LLMRequest, body: dict[str, Any], phash: str) -> None:
        if key in self.keys:
            return
        self.keys.add(key)
        self._file.write(json.dumps({"custom_id": key, "block_key": request.block_key,
                                     "prompt_hash": phash, "keys": list(request.keys),
                                     "body": body}, ensure_ascii=False) + "\n")

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self) -> Any:
        """Each missing request as {custom_id, block_key, prompt_hash, keys, body}."""
        self._file.flush()
        self._file.seek(0)
        for line in self._file:
            yield json.loads(line)
        self._file.seek(0, os.SEEK_END)

    def close(self) -> None:
        self._file.close()


# --- the generator ---------------------------------------------------------------------------


class LLMGenerator:
    """Answers LLMRequests for one model at one endpoint; see the module docstring.

    Not thread-safe itself: call it from one thread (it owns the db connection's thread).
    ``offline=True`` never calls and needs no endpoint or key (dry runs, batch files).
    """

    def __init__(self, db: Database, *, model: str, base_url: str | None = None,
                 api_key: str | None = None, timeout: float = 30.0, concurrency: int = 8,
                 max_attempts: int = 4, temperature: float = 0.7,
                 prompt_dirs: Sequence[str | os.PathLike[str]] | None = None,
                 backoff_base: float = 1.0, retry_after_cap: float = RETRY_AFTER_CAP,
                 max_failures: int = 10, max_response_bytes: int = MAX_RESPONSE_BYTES,
                 offline: bool = False, endpoint: str | None = None) -> None:
        if not model or not model.strip():
            raise PushgenError("no LLM model given: pass --model (e.g. gpt-4o-mini, llama3.1)")
        if concurrency < 1:
            raise PushgenError("concurrency must be at least 1")
        base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        self.db, self.model, self.base_url = db, model.strip(), base_url
        self.endpoint = endpoint or normalize_endpoint(base_url)
        self.concurrency, self.temperature, self.offline = concurrency, temperature, offline
        self.prompts = Prompts(prompt_dirs)
        self.client: ChatClient | None = None
        self._known_format = llm_cache.endpoint_format(db, self.endpoint, self.model)
        if not offline:
            self.client = ChatClient(
                model=self.model, base_url=base_url, api_key=api_key, timeout=timeout,
                max_attempts=max_attempts, temperature=temperature, backoff_base=backoff_base,
                retry_after_cap=retry_after_cap, max_failures=max_failures,
                max_response_bytes=max_response_bytes, connections=concurrency,
                response_format=self._known_format)
        self._memo: OrderedDict[str, Answer] = OrderedDict()
        # run totals
        self.requests = 0           # distinct prompts resolved
        self.cache_hits = 0         # ... of which the cache answered
        self.formats: Counter[str] = Counter()
        self.live_seconds = 0.0     # wall time spent waiting on live requests
        self.imported_counts = (0, 0, 0)   # batch results: requests, prompt/completion tokens
        # offline (batch) state
        self.missing = MissingRequests()
        self.failed_elsewhere: dict[str, tuple[str, str]] = {}   # key -> (kind, error)

    # -- identities --

    @property
    def params(self) -> dict[str, Any]:
        """Request parameters besides model and messages that change the answer (part of
        the prompt hash). The response format is not: it is recorded, not keyed."""
        return {"temperature": self.temperature}

    def prompt_hash(self, request: LLMRequest) -> str:
        """The request's prompt hash (computed once per request object)."""
        if request.hash is None:
            request.hash = prompt_hash(request.messages, self.model, self.params)
        return request.hash

    def key(self, request: LLMRequest) -> str:
        return llm_cache.cache_key(self.endpoint, self.prompt_hash(request))

    @property
    def live_calls(self) -> int:
        """HTTP requests sent by this generator (retries included)."""
        return self.client.calls if self.client else 0

    @property
    def live_tokens(self) -> tuple[int, int]:
        """Tokens of those requests (prompt, completion)."""
        return ((self.client.tokens_prompt, self.client.tokens_completion)
                if self.client else (0, 0))

    @property
    def calls(self) -> int:
        """Requests this generator had the model run: live ones and imported batch results."""
        return self.live_calls + self.imported_counts[0]

    @property
    def tokens(self) -> tuple[int, int]:
        live = self.live_tokens
        return live[0] + self.imported_counts[1], live[1] + self.imported_counts[2]

    def imported(self, requests: int, tokens_prompt: int, tokens_completion: int) -> None:
        """Count batch results brought into the cache by this process as this run's cost."""
        r, tp, tc = self.imported_counts
        self.imported_counts = (r + requests, tp + tokens_prompt, tc + tokens_completion)

    @property
    def response_format(self) -> str:
        """The structured-output kind requests are sent with now."""
        if self.client is not None:
            return self.client.format
        return self._known_format or "json_schema"

    def body(self, request: LLMRequest) -> dict[str, Any]:
        """The Chat Completions request body (also the batch file's ``body``)."""
        fmt = self.response_format
        return {"model": self.model, "messages": request.messages,
                "temperature": self.temperature,
                "response_format": ({"type": "json_schema", "json_schema": request.schema()}
                                    if fmt == "json_schema" else {"type": "json_object"})}

    # -- answering --

    def _remember(self, answer: Answer) -> None:
        self._memo[answer.key] = answer
        self._memo.move_to_end(answer.key)
        while len(self._memo) > MEMO_SIZE:
            self._memo.popitem(last=False)

    def answer_many(self, requests: Iterable[LLMRequest], *,
                    progress: Callable[[int, int], None] | None = None) -> dict[str, Answer]:
        """An Answer per distinct request, by cache key. Raises LLMStop (a PushgenError) when
        the run must stop: bad key, unknown model, circuit breaker open."""
        wanted: dict[str, LLMRequest] = {}
        for r in requests:
            wanted.setdefault(self.key(r), r)
        out: dict[str, Answer] = {}
        fresh = [k for k in wanted if k not in self._memo]
        for k in wanted:
            if k in self._memo:
                # Answered earlier in this run: its cost was counted then.
                out[k] = replace(self._memo[k], tokens_prompt=0, tokens_completion=0, calls=0)
                self._memo.move_to_end(k)
        hits = llm_cache.get_many(self.db, fresh) if fresh else {}
        todo: list[str] = []
        for k in fresh:
            req = wanted[k]
            hit = hits.get(k)
            if hit is not None:
                try:
                    fields = parse_fields(hit.content, req.keys)
                except InvalidOutput:
                    fields = None   # a stale entry from an older parser: ask again
                if fields is not None:
                    ans = Answer(k, self.prompt_hash(req), req.block_key, fields, cached=True,
                                 response_format=hit.response_format)
                    self.requests += 1
                    self.cache_hits += 1
                    self.formats[hit.response_format or "unknown"] += 1
                    self._remember(ans)
                    out[k] = ans
                    continue
            if self.offline:
                failed = self.failed_elsewhere.get(k)
                if failed is not None:
                    ans = Answer(k, self.prompt_hash(req), req.block_key, None,
                                 error=failed[1], kind=failed[0])
                    self.requests += 1
                    self._remember(ans)
                else:
                    ans = Answer(k, self.prompt_hash(req), req.block_key, None,
                                 error="no answer yet (waiting for a batch)", kind="missing")
                    self.missing.add(k, req, self.body(req), self.prompt_hash(req))
                out[k] = ans
                continue
            todo.append(k)
        if todo:
            out.update(self._live({k: wanted[k] for k in todo}, progress))
        return out

    def _live(self, todo: dict[str, LLMRequest], progress: Callable[[int, int], None] | None
              ) -> dict[str, Answer]:
        """Ask the endpoint for every request in ``todo`` (worker threads), caching answers
        on this thread as they arrive."""
        assert self.client is not None
        client = self.client
        out: dict[str, Answer] = {}
        total, done = len(todo), 0
        started = time.perf_counter()
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="pushgen-llm")
        try:
            futures: dict[Future[Any], str] = {
                pool.submit(client.complete, r.messages, r.schema(),
                            lambda content, keys=r.keys: parse_fields(content, keys)): k
                for k, r in todo.items()}
            remaining = set(futures)
            while remaining:
                ready, remaining = wait(remaining, return_when=FIRST_COMPLETED)
                for fut in ready:
                    k = futures[fut]
                    out[k] = self._collect(fut, k, todo[k])
                    done += 1
                    if progress:
                        progress(done, total)
        except BaseException:
            client.breaker.open.set()     # in-flight requests stop at their next read
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            self.live_seconds += time.perf_counter() - started
        pool.shutdown(wait=True)
        if client.format != self._known_format:
            llm_cache.remember_format(self.db, self.endpoint, self.model, client.format)
            self._known_format = client.format
        return out

    def _collect(self, fut: Future[Any], key: str, req: LLMRequest) -> Answer:
        """Main thread: cache a finished request's answer."""
        phash = self.prompt_hash(req)
        self.requests += 1
        try:
            fields, done = fut.result()
        except LLMStop:
            raise
        except RequestFailed as exc:
            ans = Answer(key, phash, req.block_key, None, error=exc.error, kind=exc.kind,
                         tokens_prompt=exc.tokens_prompt,
                         tokens_completion=exc.tokens_completion, calls=exc.calls)
            self._remember(ans)
            return ans
        llm_cache.put_many(self.db, [llm_cache.NewAnswer(
            key=key, model=self.model, endpoint=self.endpoint, prompt_hash=phash,
            request={"messages": req.messages, "params": self.params},
            content=done.content, tokens_prompt=done.tokens_prompt,
            tokens_completion=done.tokens_completion, block_key=req.block_key,
            response_format=done.response_format, source="live")])
        self.formats[done.response_format] += 1
        ans = Answer(key, phash, req.block_key, fields, tokens_prompt=done.tokens_prompt,
                     tokens_completion=done.tokens_completion, calls=done.calls,
                     response_format=done.response_format)
        self._remember(ans)
        return ans

    def close(self) -> None:
        self.missing.close()
        if self.client is not None:
            self.client.close()


__all__ = ["LLMGenerator", "LLMRequest", "Answer", "MissingRequests", "Prompts", "InvalidOutput",
           "parse_fields", "prompt_hash", "estimate_tokens", "retry_after_seconds",
           "item_data", "data_json", "feedback_lines", "DATA_OPEN", "DATA_CLOSE"]
