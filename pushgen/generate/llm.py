"""Drafts written by an LLM behind any OpenAI-compatible Chat Completions endpoint.

One retry policy (tenacity; the openai client's own retries are off), a SQLite cache keyed
by the prompt hash so a rerun costs nothing, bounded concurrency, and strict parsing: the
model returns JSON with exactly the channel's copy fields. Links, the SMS opt-out line and
the email unsubscribe/postal footer are added by ``finish_message``, never left to the model.

Catalog text reaches the model only inside a JSON data block (``<catalog_data>``), with
``<`` and ``>`` escaped so an item description cannot close the block and pose as
instructions. Thread-safety: HTTP calls run in worker threads; every database read and
write happens on the thread that called ``generate_many``.
"""

from __future__ import annotations

import email.utils
import hashlib
import html as _html
import ipaddress
import json
import os
import re
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

import jinja2
import openai
from sqlite_utils import Database
from tenacity import (RetryCallState, Retrying, retry_if_exception, stop_after_attempt,
                      wait_exponential_jitter)

from ..channels import (GSM7, deep_link_for, gsm_normalize, opt_out_line, sms_capacity,
                        sms_encoding)
from ..errors import PushgenError
from ..messages import CHANNEL_FIELDS, ItemFacts, Message, MessageContext
from ..store import dumps
from ..store import llm_cache
from .guards import prompt_fields
from .templates import format_money, localized_title

# The fields the model writes; the rest of CHANNEL_FIELDS is added by finish_message.
MODEL_FIELDS: dict[str, tuple[str, ...]] = {
    "sms": ("text",),
    "push": ("title", "body"),
    "email": ("subject", "preheader", "html", "text"),
}
DATA_OPEN, DATA_CLOSE = "<catalog_data>", "</catalog_data>"
DESCRIPTION_MAX = 200        # characters of an item description shown to the model
FEEDBACK_MAX = 300           # characters per repair-feedback line
RETRY_AFTER_CAP = 30.0       # seconds: never sleep longer than this on a Retry-After
LOCAL_KEY = "sk-local"       # local servers ignore the key but the client wants one
_LOCAL_HOSTS = {"localhost", "host.docker.internal"}


class InvalidOutput(Exception):
    """The model answered, but not with the JSON object the channel needs."""


class _Fatal(Exception):
    """A request error no retry can fix (bad key, unknown model): stop the whole run."""


@dataclass
class LLMResult:
    """One draft's outcome. ``message`` is None (and ``error`` says why) when every attempt
    failed; tokens sum all attempts of this run (0 for a cache hit)."""

    message: Message | None
    error: str | None
    model: str
    prompt_hash: str
    tokens_prompt: int = 0
    tokens_completion: int = 0
    cached: bool = False
    calls: int = 0


@dataclass
class _Answer:
    fields: dict[str, str]
    content: str
    tokens_prompt: int
    tokens_completion: int
    calls: int


# --- prompts ---------------------------------------------------------------------------------


class _PromptLoader(jinja2.BaseLoader):
    """User prompt folders first, then the prompts bundled in the wheel."""

    def __init__(self, dirs: Sequence[Path]) -> None:
        self.dirs = list(dirs)

    def get_source(self, environment: jinja2.Environment, template: str
                   ) -> tuple[str, str, Callable[[], bool]]:
        for d in self.dirs:
            p = d / template
            if p.is_file():
                mtime = p.stat().st_mtime
                return (p.read_text(encoding="utf-8"), str(p),
                        lambda: p.exists() and p.stat().st_mtime == mtime)
        try:
            res = resources.files("pushgen.bundled_prompts") / template
            if res.is_file():
                return res.read_text(encoding="utf-8"), str(res), lambda: True
        except ModuleNotFoundError:  # running from a source tree that is not installed
            p = Path(__file__).resolve().parents[2] / "prompts" / template
            if p.is_file():
                return p.read_text(encoding="utf-8"), str(p), lambda: True
        raise jinja2.TemplateNotFound(template)


def _environment(prompt_dirs: Sequence[str | os.PathLike[str]] | None) -> jinja2.Environment:
    dirs = [Path(d) for d in (prompt_dirs or [])]
    for d in dirs:
        if not d.is_dir():
            raise PushgenError(f"{d}: prompt folder does not exist")
    return jinja2.Environment(loader=_PromptLoader(dirs), undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False,
                              autoescape=False)


_default_env: jinja2.Environment | None = None


def _data_json(obj: Any) -> str:
    # '<' and '>' only occur inside JSON strings, so \u003c / \u003e keep the JSON identical
    # in meaning while making a forged </catalog_data> impossible.
    text = json.dumps(obj, ensure_ascii=False, indent=2)
    return text.replace("<", "\\u003c").replace(">", "\\u003e")


def _item_data(item: ItemFacts, locale: str) -> dict[str, Any]:
    desc = (item.description or "").strip()
    if len(desc) > DESCRIPTION_MAX:
        desc = desc[:DESCRIPTION_MAX].rstrip() + "…"
    data: dict[str, Any] = {
        "sku": item.sku, "title": localized_title(item, locale),
        "price": item.price, "sale_price": item.sale_price, "currency": item.currency,
        "current_price_text": format_money(item.current_price, item.currency, locale),
        "discount_pct": item.discount_pct,
        "category": item.category, "brand": item.brand, "description": desc or None,
        "url": item.url,
    }
    if item.discount_pct:
        data["was_price_text"] = format_money(item.price, item.currency, locale)
    return {k: v for k, v in data.items() if v is not None}


def _limits(ctx: MessageContext) -> dict[str, Any]:
    s, locale = ctx.settings, ctx.recipient.locale
    opt_out = opt_out_line(locale)
    sample = opt_out + "".join(localized_title(i, locale) for i in ctx.items)
    gsm = sms_encoding(sample) == GSM7
    cap = sms_capacity(GSM7 if gsm else "UCS-2", max(s.sms_max_segments, 1))
    return {"sms_chars": max(cap - len(opt_out) - 1, 20), "sms_gsm": gsm,
            "push_title_max": s.push_title_max, "push_body_max": s.push_body_max,
            "subject_max": 50, "preheader_min": 40, "preheader_max": 130}


def build_messages(ctx: MessageContext, *, feedback: list[str] | None = None,
                   env: jinja2.Environment | None = None) -> list[dict[str, str]]:
    """System + user chat messages for one draft; ``feedback`` = failed checks to repair."""
    global _default_env
    if env is None:
        env = _default_env = _default_env or _environment(None)
    channel = ctx.settings.channel
    if channel not in MODEL_FIELDS:
        raise PushgenError(f"unknown channel {channel!r}: use sms, push or email")
    locale = ctx.recipient.locale or "en-US"
    data = {"customer": prompt_fields(ctx.recipient, ctx.settings),
            "items": [_item_data(i, locale) for i in ctx.items]}
    values = {
        "settings": ctx.settings, "channel": channel, "locale": locale,
        "channel_label": {"sms": "SMS", "push": "app push", "email": "email"}[channel],
        "limits": _limits(ctx), "output_keys": list(MODEL_FIELDS[channel]),
        "variant": ctx.variant, "data_json": _data_json(data),
        "feedback": [" ".join(f.split())[:FEEDBACK_MAX] for f in (feedback or [])],
    }
    try:
        system = env.get_template("system.j2").render(values)
        user = env.get_template(f"{channel}.j2").render(values)
    except jinja2.TemplateError as exc:
        where = getattr(exc, "filename", None) or getattr(exc, "name", None) or "prompt"
        line = getattr(exc, "lineno", None)
        raise PushgenError(f"{where}{f':{line}' if line else ''}: {exc}") from None
    return [{"role": "system", "content": system.strip()},
            {"role": "user", "content": user.strip()}]


def prompt_hash(messages: list[dict[str, str]], model: str, params: dict[str, Any]) -> str:
    """sha256 of model + messages + parameters: the cache key and the draft's provenance."""
    blob = dumps({"model": model, "messages": messages, "params": params})
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def estimate_tokens(messages: list[dict[str, str]]) -> int:
    """Rough prompt size (~4 characters a token), for dry runs."""
    return sum(len(m["content"]) for m in messages) // 4 + 4 * len(messages)


# --- answers ---------------------------------------------------------------------------------

_FENCE_RE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def parse_fields(content: str | None, channel: str) -> dict[str, str]:
    """The model's JSON answer as {field: text}; InvalidOutput unless it has exactly the
    channel's fields, all non-empty strings. A ```json fence around it is tolerated."""
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
    want = MODEL_FIELDS[channel]
    missing = [k for k in want if k not in obj]
    extra = sorted(set(obj) - set(want))
    if missing or extra:
        raise InvalidOutput(f"answer keys wrong (missing: {', '.join(missing) or '-'}; "
                            f"unexpected: {', '.join(extra) or '-'})")
    bad = [k for k in want if not isinstance(obj[k], str) or not obj[k].strip()]
    if bad:
        raise InvalidOutput(f"answer fields not non-empty text: {', '.join(bad)}")
    return {k: obj[k].strip() for k in want}


def finish_message(fields: dict[str, str], ctx: MessageContext) -> Message:
    """Add what the model must not write: the SMS opt-out line, the push deep link, the email
    unsubscribe link and postal address (each only when missing)."""
    s, channel, out = ctx.settings, ctx.settings.channel, dict(fields)
    if channel == "sms":
        line = opt_out_line(ctx.recipient.locale)
        text = gsm_normalize(out["text"]).rstrip()
        if not text.rstrip(" .!。！").endswith(line):
            text = f"{text}\n{line}"
        out["text"] = text
    elif channel == "push":
        out["deep_link"] = deep_link_for(s, ctx.items[0].sku) if ctx.items else ""
    else:
        unsub = ctx.unsubscribe_url
        address = f"{s.sender_name}, {s.postal_address}"
        html_body, text_body = out["html"], out["text"]
        footer = []
        if unsub not in _html.unescape(html_body):
            footer.append(f'<p><a href="{_html.escape(unsub)}">Unsubscribe</a></p>')
        if s.postal_address not in _html.unescape(html_body):
            footer.append(f"<p>{_html.escape(address)}</p>")
        if footer:
            block = "\n" + "\n".join(footer) + "\n"
            at = html_body.lower().rfind("</body>")
            html_body = (html_body[:at] + block + html_body[at:] if at >= 0
                         else html_body + block)
        tail = []
        if unsub not in text_body:
            tail.append(f"Unsubscribe: {unsub}")
        if s.postal_address not in text_body:
            tail.append(address)
        if tail:
            text_body = text_body.rstrip() + "\n\n--\n" + "\n".join(tail)
        out["html"], out["text"] = html_body, text_body
    return Message(channel, {k: out[k] for k in CHANNEL_FIELDS[channel]})


# --- retries ---------------------------------------------------------------------------------


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, (InvalidOutput, openai.APIConnectionError)):  # includes timeouts
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    return False


def retry_after_seconds(headers: Any, *, cap: float = RETRY_AFTER_CAP) -> float | None:
    """Seconds a response asks us to wait (Retry-After in seconds or as an HTTP date, or
    retry-after-ms), capped; None when it says nothing usable."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return min(max(float(ms) / 1000, 0.0), cap)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), cap)


class _WaitRetryAfter:
    """Tenacity wait: the server's Retry-After when it sent one, else exponential + jitter."""

    def __init__(self, base: float, cap: float) -> None:
        self.cap = cap
        cap_s = max(base * 16, base)
        try:  # tenacity >= 9.1 calls the base 'multiplier'; older releases call it 'initial'
            self.fallback = wait_exponential_jitter(multiplier=base, max=cap_s, jitter=base)
        except TypeError:
            self.fallback = wait_exponential_jitter(initial=base, max=cap_s, jitter=base)

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, openai.APIStatusError):
            seconds = retry_after_seconds(exc.response.headers, cap=self.cap)
            if seconds is not None:
                return seconds
        return self.fallback(state)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, openai.APITimeoutError):
        return "request timed out"
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {exc.message}"[:300]
    if isinstance(exc, openai.APIConnectionError):
        return f"connection failed: {exc.__cause__ or exc}"[:300]
    return str(exc)[:300]


def _is_local(base_url: str | None) -> bool:
    if not base_url:
        return False
    host = (urlsplit(base_url).hostname or "").lower()
    if host in _LOCAL_HOSTS or host.endswith(".local"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_unspecified


# --- the generator ---------------------------------------------------------------------------


class LLMGenerator:
    """Writes drafts with an LLM; see the module docstring for the guarantees.

    Not thread-safe itself: call it from one thread (it owns the db connection's thread).
    """

    def __init__(self, db: Database, *, model: str, base_url: str | None = None,
                 api_key: str | None = None, timeout: float = 30.0, concurrency: int = 8,
                 max_attempts: int = 4, temperature: float = 0.7,
                 prompt_dirs: Sequence[str | os.PathLike[str]] | None = None,
                 backoff_base: float = 1.0, retry_after_cap: float = RETRY_AFTER_CAP) -> None:
        if not model or not model.strip():
            raise PushgenError("no LLM model given: pass --model (e.g. gpt-4o-mini, llama3.1)")
        base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        api_key = api_key or os.environ.get("OPENAI_API_KEY") or None
        if not api_key:
            if not base_url:
                raise PushgenError("no LLM endpoint configured: set OPENAI_API_KEY for "
                                   "api.openai.com, or --base-url / OPENAI_BASE_URL for an "
                                   "OpenAI-compatible server (e.g. http://localhost:11434/v1)")
            if not _is_local(base_url):
                raise PushgenError(f"no API key for {base_url}: set OPENAI_API_KEY "
                                   "(only local servers work without one)")
            api_key = LOCAL_KEY
        if concurrency < 1 or max_attempts < 1 or timeout <= 0:
            raise PushgenError("concurrency and max_attempts must be >= 1 and timeout > 0")
        self.db, self.model, self.base_url = db, model.strip(), base_url
        self.timeout, self.concurrency, self.max_attempts = timeout, concurrency, max_attempts
        self.temperature = temperature
        self.backoff_base, self.retry_after_cap = backoff_base, retry_after_cap
        self.env = _environment(prompt_dirs)
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0,
                                    timeout=timeout)
        self.calls = 0                  # real HTTP requests made, over this object's life
        self.tokens_prompt = 0          # ... and the tokens they used
        self.tokens_completion = 0
        self._lock = threading.Lock()

    @property
    def params(self) -> dict[str, Any]:
        """Request parameters besides model and messages (part of the cache key)."""
        return {"temperature": self.temperature, "response_format": {"type": "json_object"}}

    def build(self, ctx: MessageContext, feedback: list[str] | None = None
              ) -> list[dict[str, str]]:
        return build_messages(ctx, feedback=feedback, env=self.env)

    def dry_run(self, contexts: list[MessageContext]) -> list[list[dict[str, str]]]:
        """The chat messages each context would send; calls nothing."""
        return [self.build(ctx) for ctx in contexts]

    def estimate(self, contexts: list[MessageContext]) -> dict[str, int]:
        """Requests, cache hits and estimated prompt tokens of a run; calls nothing."""
        hits, tokens = 0, 0
        for ctx in contexts:
            messages = self.build(ctx)
            if llm_cache.get(self.db, prompt_hash(messages, self.model, self.params)):
                hits += 1
            else:
                tokens += estimate_tokens(messages)
        return {"requests": len(contexts), "cached": hits, "prompt_tokens": tokens}

    def generate_many(self, contexts: list[MessageContext], *,
                      feedback: dict[int, list[str]] | None = None,
                      progress: Callable[[int, int], None] | None = None) -> list[LLMResult]:
        """One LLMResult per context, in input order.

        ``feedback[i]`` lists the failed checks of context i's previous draft (one repair
        attempt; it changes the prompt, hence the cache key). A request that keeps failing
        yields ``LLMResult(message=None, error=...)``; a bad key or unknown model raises
        PushgenError at once. ``progress(done, total)`` is called as drafts finish.
        """
        feedback = feedback or {}
        total = len(contexts)
        results: list[LLMResult | None] = [None] * total
        pending: dict[str, list[int]] = {}       # prompt hash -> contexts that need it
        requests: dict[str, tuple[list[dict[str, str]], str]] = {}
        done = 0

        def finished(i: int, result: LLMResult) -> None:
            nonlocal done
            results[i] = result
            done += 1
            if progress:
                progress(done, total)

        for i, ctx in enumerate(contexts):
            messages = self.build(ctx, feedback.get(i))
            key = prompt_hash(messages, self.model, self.params)
            hit = llm_cache.get(self.db, key)
            if hit is not None:
                try:
                    fields = parse_fields(hit.content, ctx.settings.channel)
                    finished(i, LLMResult(finish_message(fields, ctx), None, self.model, key,
                                          cached=True))
                    continue
                except InvalidOutput:
                    pass  # a stale entry from an older parser: ask again
            pending.setdefault(key, []).append(i)
            requests[key] = (messages, ctx.settings.channel)

        if pending:
            pool = ThreadPoolExecutor(max_workers=self.concurrency,
                                      thread_name_prefix="pushgen-llm")
            try:
                futures: dict[Future[_Answer], str] = {
                    pool.submit(self._request, *requests[key]): key for key in pending}
                remaining = set(futures)
                while remaining:
                    ready, remaining = wait(remaining, return_when=FIRST_COMPLETED)
                    for fut in ready:
                        key = futures[fut]
                        self._collect(fut, key, requests[key][0], contexts, pending[key],
                                      finished)
            except _Fatal as exc:
                # Requests still in flight finish in the background; they touch no database.
                pool.shutdown(wait=False, cancel_futures=True)
                raise PushgenError(str(exc)) from None
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
            pool.shutdown(wait=True)
        return [r for r in results if r is not None]

    def _collect(self, fut: Future[_Answer], key: str, messages: list[dict[str, str]],
                 contexts: list[MessageContext], indexes: list[int],
                 finished: Callable[[int, LLMResult], None]) -> None:
        """Main thread: cache a finished request and hand its result to every context."""
        try:
            ans = fut.result()
        except _Fatal:
            raise
        except _Failed as exc:
            for i in indexes:
                finished(i, LLMResult(None, exc.error, self.model, key, exc.tokens_prompt,
                                      exc.tokens_completion, calls=exc.calls))
            return
        llm_cache.put(self.db, key, model=self.model,
                      request={"messages": messages, "params": self.params},
                      content=ans.content, tokens_prompt=ans.tokens_prompt,
                      tokens_completion=ans.tokens_completion)
        for n, i in enumerate(indexes):
            # Identical prompts share one call; the first context carries its cost.
            first = n == 0
            finished(i, LLMResult(finish_message(ans.fields, contexts[i]), None, self.model,
                                  key, ans.tokens_prompt if first else 0,
                                  ans.tokens_completion if first else 0, cached=not first,
                                  calls=ans.calls if first else 0))

    def _request(self, messages: list[dict[str, str]], channel: str) -> _Answer:
        """Worker thread: call the endpoint with retries until a valid answer (no db here)."""
        used = {"calls": 0, "prompt": 0, "completion": 0}

        def attempt() -> _Answer:
            with self._lock:
                self.calls += 1
            used["calls"] += 1
            resp = self.client.chat.completions.create(
                model=self.model, messages=messages,  # type: ignore[arg-type]
                temperature=self.temperature, response_format={"type": "json_object"})
            usage = resp.usage
            tp = int(getattr(usage, "prompt_tokens", 0) or 0)
            tc = int(getattr(usage, "completion_tokens", 0) or 0)
            used["prompt"] += tp
            used["completion"] += tc
            with self._lock:
                self.tokens_prompt += tp
                self.tokens_completion += tc
            if not resp.choices:
                raise InvalidOutput("answer has no choices")
            content = resp.choices[0].message.content
            fields = parse_fields(content, channel)
            return _Answer(fields, content or "", used["prompt"], used["completion"],
                           used["calls"])

        retrying = Retrying(stop=stop_after_attempt(self.max_attempts),
                            wait=_WaitRetryAfter(self.backoff_base, self.retry_after_cap),
                            retry=retry_if_exception(_retryable), reraise=True)
        try:
            return retrying(attempt)
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise _Fatal(f"the LLM endpoint refused the API key ({_describe(exc)}): check "
                         f"OPENAI_API_KEY / --api-key for {self.base_url or 'api.openai.com'}"
                         ) from None
        except openai.NotFoundError as exc:
            raise _Fatal(f"model {self.model!r} not found at "
                         f"{self.base_url or 'api.openai.com'} ({_describe(exc)}): check "
                         "--model and --base-url") from None
        except (openai.OpenAIError, InvalidOutput) as exc:  # this draft's failure only
            raise _Failed(f"LLM failed after {used['calls']} attempt(s): {_describe(exc)}",
                          used["calls"], used["prompt"], used["completion"]) from None


class _Failed(Exception):
    """A request that failed for good; carries what it cost."""

    def __init__(self, error: str, calls: int, tokens_prompt: int, tokens_completion: int
                 ) -> None:
        super().__init__(error)
        self.error, self.calls = error, calls
        self.tokens_prompt, self.tokens_completion = tokens_prompt, tokens_completion


__all__ = ["LLMGenerator", "LLMResult", "InvalidOutput", "build_messages", "prompt_hash",
           "parse_fields", "finish_message", "estimate_tokens", "retry_after_seconds",
           "MODEL_FIELDS", "DATA_OPEN", "DATA_CLOSE"]
