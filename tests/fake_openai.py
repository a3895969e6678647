"""A real HTTP server that speaks enough Chat Completions for the official openai client.

Scripted per test: ``enqueue`` behaviours (each answers one request, in order); when the
queue is empty the ``default`` behaviour answers (``echo``: valid channel copy built from the
item facts in the prompt). Every request body is recorded in ``requests``; ``max_in_flight``
is the largest number of requests the server handled at once.

    with FakeOpenAI(latency=0.2) as fake:
        fake.enqueue(rate_limited(retry_after="1"), echo())
        gen = LLMGenerator(db, model="fake-model", base_url=fake.url)

Other test files (and bench/) can ``from fake_openai import FakeOpenAI, fake_openai`` (the
latter is a pytest fixture) when tests/ is on sys.path, as it is under pytest.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

import pytest


@dataclass
class Reply:
    """What the server sends back: a status, headers, a JSON body, after ``delay`` seconds."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


Behaviour = Callable[[dict[str, Any]], Reply]

_DATA_RE = re.compile(r"<catalog_data>\s*(.*?)\s*</catalog_data>", re.DOTALL)
_KEYS_RE = re.compile(r"exactly these keys: (\[.*?\])")
_CJK_RE = re.compile(r"[\u3400-\u9fff]")


# --- reading the prompt ---------------------------------------------------------------------


def user_text(request: dict[str, Any]) -> str:
    """The last user message of a request."""
    users = [m["content"] for m in request.get("messages", []) if m.get("role") == "user"]
    return users[-1] if users else ""


def prompt_data(request: dict[str, Any]) -> dict[str, Any]:
    """The JSON data block (customer + items) of the prompt, or {} when there is none."""
    m = _DATA_RE.search(user_text(request))
    return json.loads(m.group(1)) if m else {}


def prompt_keys(request: dict[str, Any]) -> list[str]:
    """The output keys the prompt asks for (which tells the channel)."""
    m = _KEYS_RE.search(user_text(request))
    return json.loads(m.group(1)) if m else ["text"]


def echo_fields(request: dict[str, Any]) -> dict[str, str]:
    """Valid, channel-correct copy that states only the facts in the prompt's data block."""
    data = prompt_data(request)
    items = data.get("items") or [{"title": "our picks", "current_price_text": ""}]
    customer = data.get("customer") or {}
    first = items[0]
    zh = bool(_CJK_RE.search(first.get("title", ""))) or \
        str(customer.get("locale", "")).startswith("zh")
    name = customer.get("first_name")
    price = first.get("current_price_text") or ""
    title = first.get("title", "")
    keys = prompt_keys(request)
    if zh:
        short = title[:16]
        line = f"{short}现价{price}" if price else short
        hello = f"{name}，" if name else ""
        return _by_keys(keys, text=f"{hello}为您推荐：{line}", title=f"为您推荐{short}"[:30],
                        body=line, subject=f"为您推荐：{short}"[:30],
                        preheader=f"{hello}我们根据您的喜好为您挑选了{len(items)}件好物，{line}，"
                                  "欢迎进店查看详情，挑选您喜欢的款式。",
                        lines=[f"{i.get('title', '')[:30]} {i.get('current_price_text', '')}"
                               for i in items])
    short = title if len(title) <= 40 else title[:37].rstrip() + "..."
    hello = f"Hi {name}! " if name else "Hi! "
    deal = f" now {price}" if price else ""
    if first.get("discount_pct"):
        deal += f" ({first['discount_pct']}% off)"
    return _by_keys(keys, text=f"{hello}{short}{deal}. Take a look today.",
                    title=f"Picked for you: {short}"[:45], body=f"{short}{deal}.",
                    subject=f"Picked for you: {short}"[:48],
                    preheader=f"{hello}We chose {len(items)} items you may like, starting "
                              f"with {short}.",
                    lines=[f"{i.get('title', '')}: {i.get('current_price_text', '')}"
                           for i in items])


def _by_keys(keys: list[str], *, lines: list[str], **values: str) -> dict[str, str]:
    if "html" in keys:
        values["html"] = "<p>" + values["preheader"] + "</p>\n<ul>\n" + "".join(
            f"<li>{line}</li>\n" for line in lines) + "</ul>"
        values["text"] = values["preheader"] + "\n\n" + "\n".join(f"- {x}" for x in lines)
    return {k: values[k] for k in keys}


# --- behaviours ------------------------------------------------------------------------------


def _completion(request: dict[str, Any], content: str) -> dict[str, Any]:
    prompt_chars = sum(len(m.get("content") or "") for m in request.get("messages", []))
    pt, ct = max(prompt_chars // 4, 1), max(len(content) // 4, 1)
    return {
        "id": f"chatcmpl-fake-{time.monotonic_ns()}", "object": "chat.completion",
        "created": int(time.time()), "model": request.get("model", "fake"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
    }


def answer(build: Callable[[dict[str, Any]], dict[str, Any] | str]) -> Behaviour:
    """A normal 200 answer whose content is ``build(request)`` (a dict is sent as JSON)."""
    def behave(request: dict[str, Any]) -> Reply:
        content = build(request)
        if not isinstance(content, str):
            content = json.dumps(content, ensure_ascii=False)
        return Reply(200, _completion(request, content))
    return behave


def echo() -> Behaviour:
    """Valid copy built from the prompt's item facts."""
    return answer(echo_fields)


def content(text: str) -> Behaviour:
    """A 200 answer with this exact assistant content (e.g. malformed JSON)."""
    return answer(lambda request: text)


def malformed() -> Behaviour:
    return content('{"text": "Hi there, unfinished')


def error(status: int, message: str = "error", headers: dict[str, str] | None = None,
          code: str | None = None) -> Behaviour:
    """An OpenAI-style error response."""
    def behave(request: dict[str, Any]) -> Reply:
        return Reply(status, {"error": {"message": message, "type": "fake_error",
                                        "param": None, "code": code}}, dict(headers or {}))
    return behave


def rate_limited(retry_after: str | None = "1") -> Behaviour:
    """429 with a Retry-After header (seconds or an HTTP date), or none."""
    return error(429, "Rate limit reached", {"Retry-After": retry_after} if retry_after else {})


def server_error(status: int = 500) -> Behaviour:
    return error(status, "The server had an error while processing your request")


def hang(seconds: float = 5.0) -> Behaviour:
    """Answer validly, but only after ``seconds`` (longer than the client timeout)."""
    def behave(request: dict[str, Any]) -> Reply:
        reply = echo()(request)
        reply.delay = seconds
        return reply
    return behave


def long_sms(chars: int = 400) -> Behaviour:
    """JSON-valid copy far over the channel's length limit: the SMS text (several segments),
    the push title or the email subject."""
    def build(request: dict[str, Any]) -> dict[str, str]:
        fields = echo_fields(request)
        key = "subject" if "subject" in fields else ("title" if "title" in fields else "text")
        fields[key] = (fields[key] + " Big news!" * (chars // 10 + 1))[:chars]
        return fields
    return answer(build)


def wrong_price(price: str = "$1.99") -> Behaviour:
    """Valid JSON copy stating a price that is not in the catalog."""
    def build(request: dict[str, Any]) -> dict[str, str]:
        fields = echo_fields(request)
        key = "text" if "text" in fields and "html" not in fields else (
            "body" if "body" in fields else "subject")
        fields[key] = fields[key].rstrip(".") + f", only {price}!"
        return fields
    return answer(build)


def echo_injection() -> Behaviour:
    """Copy that repeats the first item's description verbatim (a followed injection)."""
    def build(request: dict[str, Any]) -> dict[str, str]:
        fields = echo_fields(request)
        items = prompt_data(request).get("items") or [{}]
        desc = items[0].get("description", "")
        for k in fields:
            fields[k] = f"{fields[k]} {desc}".strip()
        return fields
    return answer(build)


# --- the server ------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # listen backlog: bursts of 32+ concurrent connections

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and hung up is expected here


class FakeOpenAI:
    """The server; ``url`` is the base_url to give the client (ends with /v1)."""

    def __init__(self, *, latency: float = 0.0, default: Behaviour | None = None) -> None:
        self.latency = latency
        self.default = default or echo()
        self.requests: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._queue: deque[Behaviour] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # scripting
    def enqueue(self, *behaviours: Behaviour) -> FakeOpenAI:
        with self._lock:
            self._queue.extend(behaviours)
        return self

    @property
    def calls(self) -> int:
        return len(self.requests)

    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    # lifecycle
    def start(self) -> FakeOpenAI:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt: str, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                fake._handle(self)

        server = _Server(("127.0.0.1", 0), Handler)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # releases hanging handlers
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # serving
    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            length = int(h.headers.get("Content-Length") or 0)
            raw = h.rfile.read(length) if length else b""
            try:
                request = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                request = {"_raw": raw.decode("utf-8", "replace")}
            with self._lock:
                self.requests.append(request)
                self.paths.append(h.path)
                behave = self._queue.popleft() if self._queue else self.default
            if h.path.rstrip("/") != "/v1/chat/completions":
                reply = error(404, f"no route {h.path}")(request)
            else:
                reply = behave(request)
            wait_for = self.latency + reply.delay
            if wait_for > 0 and self._stopping.wait(wait_for):
                return
            payload = json.dumps(reply.body).encode("utf-8")
            try:
                h.send_response(reply.status)
                h.send_header("Content-Type", "application/json")
                h.send_header("Content-Length", str(len(payload)))
                for k, v in reply.headers.items():
                    h.send_header(k, v)
                h.end_headers()
                h.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client timed out and left
        finally:
            with self._lock:
                self.in_flight -= 1


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A started FakeOpenAI (echo default, no latency), stopped after the test."""
    with FakeOpenAI() as fake:
        yield fake
