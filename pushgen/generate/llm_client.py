"""The HTTP side of the LLM path: one chat completion, failing fast and cleanly.

``ChatClient.complete`` sends one Chat Completions request through the official ``openai``
client (its own retries off) and returns the assistant's text, or raises one readable error:

- **One deadline per request, not per read.** ``timeout=`` in httpx limits each socket read,
  so a server that drips a byte a second never times out. Every read and write of a request
  here gets the time left until the request's deadline (and at most a short slice, so a run
  that is being stopped is noticed), in a network backend wrapped around httpcore's.
- **A size cap.** The body is read inside the transport and refused past ``max_response_bytes``
  (uncompressed: ``Accept-Encoding: identity``), so a 10 MB answer is neither kept in memory
  nor cached.
- **Every bad body is one error**: a 200 that is not JSON, an HTML page, JSON without
  ``choices``: ``BadResponse`` with what came back, never a ``JSONDecodeError`` traceback.
- **A circuit breaker**: after ``max_failures`` consecutive failed requests (timeouts,
  connection errors, HTTP errors, bad bodies) every request of the run stops at once, the
  ones in flight included, with one line saying why.
- **One retry policy** (tenacity): 408/409/429/5xx, timeouts, connection errors and answers
  that are not the JSON the prompt asked for are retried with exponential backoff and
  jitter, honouring ``Retry-After``; a bad key or unknown model stops the run at once.
- **Structured output**: ``response_format={"type": "json_schema", ...}`` first; an endpoint
  that refuses it (HTTP 400/422 naming the response format) is asked with ``json_object``
  from then on, and ``format_used`` says which one answered.

Thread-safety: ``complete`` runs in worker threads; it touches no database.
"""

from __future__ import annotations

import email.utils
import ipaddress
import json
import os
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, TypeVar
from urllib.parse import urlsplit

import httpcore2
import httpx2
import openai
from tenacity import (RetryCallState, Retrying, retry_if_exception, stop_after_attempt,
                      wait_exponential_jitter)

from ..errors import PushgenError

RETRY_AFTER_CAP = 30.0          # seconds: never sleep longer than this on a Retry-After
MAX_RESPONSE_BYTES = 1_000_000  # a chat completion of marketing copy is a few KB
SPOOL_IN_MEMORY = 8 * 1024 * 1024   # a response body beyond this waits in a temporary file
LOCAL_KEY = "sk-local"          # local servers ignore the key but the client wants one
DEFAULT_ENDPOINT = "https://api.openai.com/v1"
READ_SLICE = 0.25               # seconds: longest blocking read before checking for a stop
FORMATS = ("json_schema", "json_object")
_LOCAL_HOSTS = {"localhost", "host.docker.internal"}

T = TypeVar("T")


class InvalidOutput(Exception):
    """The model answered, but not with the JSON object the prompt asked for (retryable,
    and a model can fix it: a repair may ask again with the reason)."""


class BadResponse(Exception):
    """The endpoint answered 200 with something that is not a chat completion."""


class ResponseTooLarge(Exception):
    """The body grew past the size cap; it was dropped unread."""


class LLMStop(PushgenError):
    """Stop the whole run: bad key, unknown model, or the circuit breaker opened."""


class RequestFailed(Exception):
    """One request failed for good (after its retries). ``kind`` is ``output`` when the
    model answered but never with valid JSON (a repair may help), ``http`` otherwise."""

    def __init__(self, error: str, kind: str, calls: int, tokens_prompt: int,
                 tokens_completion: int) -> None:
        super().__init__(error)
        self.error, self.kind, self.calls = error, kind, calls
        self.tokens_prompt, self.tokens_completion = tokens_prompt, tokens_completion


@dataclass
class Completion:
    """A valid answer: the assistant's text and what it cost (all attempts)."""

    content: str
    tokens_prompt: int
    tokens_completion: int
    calls: int
    response_format: str


# --- endpoints ----------------------------------------------------------------------------------


def normalize_endpoint(base_url: str | None) -> str:
    """The endpoint as part of a cache key: scheme and host lower-case, no trailing slash."""
    if not base_url:
        return DEFAULT_ENDPOINT
    parts = urlsplit(base_url.strip())
    path = parts.path.rstrip("/")
    netloc = parts.netloc.lower()
    return f"{parts.scheme.lower()}://{netloc}{path}" if parts.scheme else base_url.strip()


def is_local(base_url: str | None) -> bool:
    """A server on this machine or the private network (no API key needed)."""
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


def resolve_api_key(base_url: str | None, api_key: str | None) -> str:
    """The key to send: the given one, OPENAI_API_KEY, or a dummy for a local server."""
    key = api_key or os.environ.get("OPENAI_API_KEY") or None
    if key:
        return key
    if not base_url:
        raise PushgenError("no LLM endpoint configured: pass --api-key (or set OPENAI_API_KEY) "
                           "for api.openai.com, or --base-url / OPENAI_BASE_URL for an "
                           "OpenAI-compatible server (e.g. http://localhost:11434/v1)")
    if not is_local(base_url):
        raise PushgenError(f"no API key for {base_url}: pass --api-key or set OPENAI_API_KEY "
                           "(only local servers work without one)")
    return LOCAL_KEY


# --- one deadline per request -------------------------------------------------------------------


class _Budget:
    """The deadline of the request running on this thread, and the run's stop flag."""

    def __init__(self, deadline: float, stop: threading.Event, seconds: float) -> None:
        self.deadline, self.stop, self.seconds = deadline, stop, seconds

    def slice(self, timeout: float | None, exc: type[Exception]) -> float:
        if self.stop.is_set():
            raise httpcore2.ReadError("stopped: the run is being stopped")
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise exc(f"no complete answer within {self.seconds:g} s (the deadline covers "
                      "the whole request, not each read)")
        return min(left, READ_SLICE, timeout if timeout is not None else left)


_local = threading.local()


class _GuardedStream(httpcore2.NetworkStream):
    """A socket stream whose reads and writes never outlive the request's deadline."""

    def __init__(self, inner: httpcore2.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        budget: _Budget | None = getattr(_local, "budget", None)
        if budget is None:
            return self._inner.read(max_bytes, timeout)
        waited = 0.0
        while True:
            piece = budget.slice(timeout, httpcore2.ReadTimeout)
            try:
                return self._inner.read(max_bytes, piece)
            except httpcore2.ReadTimeout:
                waited += piece   # a short slice ran out: check the deadline and go on
                if timeout is not None and waited >= timeout:
                    raise

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        budget: _Budget | None = getattr(_local, "budget", None)
        if budget is not None:
            left = budget.deadline - time.monotonic()
            if left <= 0:
                raise httpcore2.WriteTimeout(f"no complete answer within {budget.seconds:g} s")
            timeout = min(timeout, left) if timeout is not None else left
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore2.NetworkStream:
        return _GuardedStream(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _GuardedBackend(httpcore2.NetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore2.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None, socket_options: Any = None
                    ) -> httpcore2.NetworkStream:
        budget: _Budget | None = getattr(_local, "budget", None)
        if budget is not None:
            left = budget.deadline - time.monotonic()
            if left <= 0:
                raise httpcore2.ConnectTimeout(f"no connection within {budget.seconds:g} s")
            timeout = min(timeout, left) if timeout is not None else left
        return _GuardedStream(self._inner.connect_tcp(host, port, timeout, local_address,
                                                      socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Any = None) -> httpcore2.NetworkStream:
        return _GuardedStream(self._inner.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _proxy_for(url: str) -> str | None:
    """The proxy the environment (HTTPS_PROXY, NO_PROXY...) names for ``url``."""
    host = urlsplit(url).hostname or ""
    if urllib.request.proxy_bypass(host):
        return None
    return urllib.request.getproxies().get(urlsplit(url).scheme)


class _SpooledBody(httpx2.SyncByteStream):
    """A body read to its end, kept in memory up to SPOOL_IN_MEMORY bytes and in a
    temporary file beyond (a batch output file can be a gigabyte)."""

    def __init__(self, spool: Any) -> None:
        self._spool = spool

    def __iter__(self) -> Any:
        self._spool.seek(0)
        while chunk := self._spool.read(1 << 16):
            yield chunk

    def close(self) -> None:
        self._spool.close()


class GuardedTransport(httpx2.HTTPTransport):
    """httpx transport with a total deadline per request and a cap on the body size.

    The body is read here, inside the deadline, so the openai client gets a response whose
    content is already complete (or an exception). It is spooled: past SPOOL_IN_MEMORY
    bytes it goes to a temporary file, so a caller that streams it (a batch file download)
    holds only a slice in memory."""

    def __init__(self, *, seconds: float, max_bytes: int, stop: threading.Event,
                 connections: int, base_url: str) -> None:
        super().__init__()
        self.seconds, self.max_bytes, self.stop = seconds, max_bytes, stop
        common = dict(ssl_context=httpx2.create_ssl_context(), max_connections=connections,
                      max_keepalive_connections=connections, keepalive_expiry=5.0,
                      network_backend=_GuardedBackend())
        proxy = _proxy_for(base_url)
        if proxy and proxy.startswith(("http://", "https://")):
            self._pool = httpcore2.HTTPProxy(proxy_url=proxy, **common)  # type: ignore[arg-type]
        else:
            self._pool = httpcore2.ConnectionPool(**common)  # type: ignore[arg-type]

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        _local.budget = _Budget(time.monotonic() + self.seconds, self.stop, self.seconds)
        try:
            request.headers["Accept-Encoding"] = "identity"  # the cap counts real bytes
            response = super().handle_request(request)
            spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)
            size = 0
            try:
                try:
                    for chunk in response.stream:
                        size += len(chunk)
                        if size > self.max_bytes:
                            raise ResponseTooLarge(
                                f"the endpoint's answer is over {self.max_bytes:,} bytes; "
                                "refused (raise max_response_bytes if your answers are "
                                "really this long)")
                        spool.write(chunk)
                finally:
                    response.stream.close()
            except BaseException:
                spool.close()
                raise
            return httpx2.Response(response.status_code, headers=response.headers,
                                   stream=_SpooledBody(spool), extensions=response.extensions)
        finally:
            _local.budget = None


# --- the circuit breaker ------------------------------------------------------------------------


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failed requests (any thread); a success resets."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.failures = 0
        self.last_error = ""
        self.open = threading.Event()
        self._lock = threading.Lock()

    def success(self) -> None:
        with self._lock:
            self.failures = 0

    def failure(self, error: str) -> None:
        with self._lock:
            self.failures += 1
            self.last_error = error
            if self.failures >= self.threshold:
                self.open.set()


# --- retries ------------------------------------------------------------------------------------


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


class _FormatRefused(Exception):
    """The endpoint refused json_schema: ask again at once with json_object."""


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, (InvalidOutput, openai.APIConnectionError)):
        return True  # APIConnectionError includes timeouts
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    return False


def describe(exc: BaseException) -> str:
    """One readable line for a request error."""
    if isinstance(exc, openai.APITimeoutError):
        cause = exc.__cause__
        detail = str(cause) if cause is not None and str(cause) else "request timed out"
        return f"timed out: {detail}"[:300]
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {exc.message}"[:300]
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        return f"connection failed: {cause or exc}"[:300]
    return str(exc)[:300]


def _format_refusal(exc: openai.APIStatusError) -> bool:
    if exc.status_code not in (400, 422):
        return False
    text = f"{exc.message} {getattr(exc, 'body', '')}".lower()
    return any(w in text for w in ("response_format", "json_schema", "schema", "structured"))


def _snippet(body: bytes) -> str:
    text = body[:120].decode("utf-8", "replace")
    return " ".join(text.split())


def parse_completion(data: Any) -> tuple[str, int, int]:
    """(content, prompt tokens, completion tokens) of a chat.completion object; BadResponse
    when it is not one."""
    if not isinstance(data, dict):
        raise BadResponse(f"the endpoint answered JSON {type(data).__name__}, not a chat "
                          "completion object")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise BadResponse("the endpoint's answer has no choices")
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if content is not None and not isinstance(content, str):
        raise BadResponse("the endpoint's answer content is not text")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}

    def count(name: str) -> int:
        value = usage.get(name)
        return int(value) if isinstance(value, (int, float)) and value >= 0 else 0

    return content or "", count("prompt_tokens"), count("completion_tokens")


def _body_json(response: httpx2.Response) -> Any:
    """The JSON body of a 200, whatever its content type says (some servers mislabel it);
    BadResponse naming the content type when it is not JSON."""
    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
    body = response.content
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        pass
    if kind and "json" not in kind:
        hint = " (is --base-url the API root, e.g. http://host:8000/v1?)" \
            if kind == "text/html" else ""
        raise BadResponse(f"the endpoint answered HTTP {response.status_code} with {kind}, "
                          f"not JSON{hint}: '{_snippet(body)}'")
    raise BadResponse(f"the endpoint answered HTTP {response.status_code} with a body that is "
                      f"not JSON: '{_snippet(body)}'")


# --- the client ---------------------------------------------------------------------------------


class ChatClient:
    """One endpoint and model; see the module docstring for what it guarantees."""

    def __init__(self, *, model: str, base_url: str | None = None, api_key: str | None = None,
                 timeout: float = 30.0, max_attempts: int = 4, temperature: float = 0.7,
                 backoff_base: float = 1.0, retry_after_cap: float = RETRY_AFTER_CAP,
                 max_failures: int = 10, max_response_bytes: int = MAX_RESPONSE_BYTES,
                 connections: int = 8, response_format: str | None = None) -> None:
        if timeout <= 0 or max_attempts < 1 or max_failures < 1 or max_response_bytes < 1:
            raise PushgenError("timeout must be > 0; max_attempts, max_failures and "
                               "max_response_bytes at least 1")
        self.model, self.base_url = model, base_url
        self.endpoint = normalize_endpoint(base_url)
        self.timeout, self.max_attempts, self.temperature = timeout, max_attempts, temperature
        self.backoff_base, self.retry_after_cap = backoff_base, retry_after_cap
        self.max_response_bytes = max_response_bytes
        self.format = response_format if response_format in FORMATS else FORMATS[0]
        self.breaker = CircuitBreaker(max_failures)
        transport = GuardedTransport(seconds=timeout, max_bytes=max_response_bytes,
                                     stop=self.breaker.open, connections=max(connections, 1) + 2,
                                     base_url=base_url or DEFAULT_ENDPOINT)
        http = httpx2.Client(transport=transport, trust_env=False,
                             timeout=httpx2.Timeout(timeout, connect=min(timeout, 10.0)))
        self.openai = openai.OpenAI(base_url=base_url, api_key=resolve_api_key(base_url, api_key),
                                    max_retries=0, timeout=httpx2.Timeout(timeout),
                                    http_client=http)
        self.calls = 0                  # HTTP requests sent, over this object's life
        self.tokens_prompt = 0
        self.tokens_completion = 0
        self._lock = threading.Lock()

    def _stop_error(self) -> LLMStop:
        b = self.breaker
        return LLMStop(f"stopped after {b.failures} consecutive failed LLM requests to "
                       f"{self.endpoint} (last: {b.last_error}); drafts finished so far are "
                       "saved, rerun the same command to resume")

    def complete(self, messages: list[dict[str, str]], schema: dict[str, Any],
                 validate: Callable[[str], T]) -> tuple[T, Completion]:
        """Ask until ``validate(content)`` accepts an answer; worker-thread safe, no db.

        Raises LLMStop (stop the run) or RequestFailed (this request only)."""
        used = {"calls": 0, "prompt": 0, "completion": 0}

        def attempt() -> tuple[T, Completion]:
            if self.breaker.open.is_set():
                raise self._stop_error()
            try:
                content, fmt = self._send(messages, schema, used)
            except _FormatRefused:
                content, fmt = self._send(messages, schema, used)  # now as json_object
            return validate(content), Completion(content, used["prompt"], used["completion"],
                                                 used["calls"], fmt)

        retrying = Retrying(stop=stop_after_attempt(self.max_attempts),
                            wait=_WaitRetryAfter(self.backoff_base, self.retry_after_cap),
                            retry=retry_if_exception(_retryable), reraise=True,
                            sleep=self.breaker.open.wait)   # a stopping run does not sleep on
        try:
            return retrying(attempt)
        except LLMStop:
            raise
        except InvalidOutput as exc:
            raise RequestFailed(f"LLM answer invalid after {used['calls']} attempt(s): {exc}",
                                "output", used["calls"], used["prompt"], used["completion"]
                                ) from None
        except (openai.OpenAIError, BadResponse, ResponseTooLarge, _FormatRefused) as exc:
            if self.breaker.open.is_set():
                raise self._stop_error() from None
            raise RequestFailed(f"LLM request failed after {used['calls']} attempt(s): "
                                f"{describe(exc)}", "http", used["calls"], used["prompt"],
                                used["completion"]) from None

    def _send(self, messages: list[dict[str, str]], schema: dict[str, Any],
              used: dict[str, int]) -> tuple[str, str]:
        """One HTTP request: (assistant content, response format used)."""
        fmt = self.format
        with self._lock:
            self.calls += 1
        used["calls"] += 1
        response_format: dict[str, Any] = (
            {"type": "json_schema", "json_schema": schema} if fmt == "json_schema"
            else {"type": "json_object"})
        try:
            raw = self.openai.chat.completions.with_raw_response.create(
                model=self.model, messages=messages,  # type: ignore[arg-type]
                temperature=self.temperature,
                response_format=response_format)  # type: ignore[arg-type]
            content, tp, tc = parse_completion(_body_json(raw.http_response))
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise LLMStop(f"the LLM endpoint refused the API key ({describe(exc)}): check "
                          f"--api-key / OPENAI_API_KEY for {self.endpoint}") from None
        except openai.NotFoundError as exc:
            raise LLMStop(f"model {self.model!r} not found at {self.endpoint} "
                          f"({describe(exc)}): check --model and --base-url") from None
        except openai.APIStatusError as exc:
            if fmt == "json_schema" and _format_refusal(exc):
                self.format = "json_object"   # remembered for this endpoint
                raise _FormatRefused(describe(exc)) from None
            self.breaker.failure(describe(exc))
            raise
        except (openai.APIConnectionError, BadResponse, ResponseTooLarge) as exc:
            if self.breaker.open.is_set():
                raise self._stop_error() from None
            self.breaker.failure(describe(exc))
            raise
        self.breaker.success()
        used["prompt"] += tp
        used["completion"] += tc
        with self._lock:
            self.tokens_prompt += tp
            self.tokens_completion += tc
        return content, fmt

    def close(self) -> None:
        """Stop requests still in flight (at their next read slice) and close connections."""
        self.breaker.open.set()
        self.openai.close()


__all__ = ["ChatClient", "Completion", "RequestFailed", "LLMStop", "InvalidOutput",
           "BadResponse", "ResponseTooLarge", "CircuitBreaker", "GuardedTransport",
           "retry_after_seconds", "normalize_endpoint", "is_local", "resolve_api_key",
           "describe", "parse_completion", "MAX_RESPONSE_BYTES", "DEFAULT_ENDPOINT",
           "FORMATS", "LOCAL_KEY"]
