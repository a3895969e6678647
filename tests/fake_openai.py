"""A real HTTP server that speaks enough of the OpenAI API for the official openai client:
Chat Completions, and the Files + Batches API (upload, create, retrieve, list, download).

Scripted per test: ``enqueue`` behaviours (each answers one chat request, in order); when the
queue is empty the ``default`` behaviour answers (``echo``: valid channel copy built from the
item facts in the prompt, keeping ``{first_name}`` when the prompt asks for it). Every chat
request body is recorded in ``requests`` (headers in ``headers``); ``max_in_flight`` is the
largest number of requests the server handled at once.

    with FakeOpenAI(latency=0.2) as fake:
        fake.enqueue(rate_limited(retry_after="1"), echo())
        gen = LLMGenerator(db, model="fake-model", base_url=fake.url)

Hostile behaviours: ``not_json`` (a 200 that is not JSON), ``html_page`` (a text/html 200),
``drip`` (headers, then a byte every few seconds), ``huge`` (a 10 MB answer), ``hang``
(answer after N seconds) and ``silent`` (never answer).

Batches: uploaded files and created batches live in the server; ``finish_batches()`` runs
every pending batch's lines through the chat behaviours (``expire_after=n`` answers only the
first n lines and marks the batch expired; ``fail_validation`` fails it), writing output and
error files in the OpenAI batch format. ``auto_finish=True`` finishes a batch the first
time it is retrieved.

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
    """What the server sends back: a status, headers, a JSON body (or ``raw`` bytes with
    ``content_type``), after ``delay`` seconds; ``drip`` sends the body a byte every
    ``drip`` seconds; ``forever`` never answers."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    raw: bytes | None = None
    content_type: str = "application/json"
    drip: float = 0.0
    forever: bool = False


Behaviour = Callable[[dict[str, Any]], Reply]

_DATA_RE = re.compile(r"<catalog_data>\s*(.*?)\s*</catalog_data>", re.DOTALL)
_KEYS_RE = re.compile(r"exactly these keys: (\[.*?\])")
_LIMIT_RE = re.compile(r"[Aa]t most (\d+) characters")
_LOCALE_RE = re.compile(r"language of locale ([A-Za-z-]+)")
_CJK_RE = re.compile(r"[\u3400-\u9fff]")
PLACEHOLDER = "{first_name}"


# --- reading the prompt ---------------------------------------------------------------------


def user_text(request: dict[str, Any]) -> str:
    """The last user message of a request."""
    users = [m["content"] for m in request.get("messages", []) if m.get("role") == "user"]
    return users[-1] if users else ""


def all_text(request: dict[str, Any]) -> str:
    return "\n".join(m.get("content") or "" for m in request.get("messages", []))


def prompt_data(request: dict[str, Any]) -> dict[str, Any]:
    """The JSON data block (customer or segment + items) of the prompt, or {}."""
    m = _DATA_RE.search(user_text(request))
    return json.loads(m.group(1)) if m else {}


def prompt_keys(request: dict[str, Any]) -> list[str]:
    """The output keys the prompt asks for (which tells the channel and the block)."""
    m = _KEYS_RE.search(user_text(request))
    return json.loads(m.group(1)) if m else ["text"]


def echo_fields(request: dict[str, Any]) -> dict[str, str]:
    """Valid, channel-correct copy that states only the facts in the prompt's data block."""
    data = prompt_data(request)
    items = data.get("items") or [{"title": "our picks", "current_price_text": ""}]
    customer = data.get("customer") or {}
    text = user_text(request)
    first = items[0]
    loc = _LOCALE_RE.search(all_text(request))
    zh = (loc.group(1).startswith("zh") if loc else False) or \
        bool(_CJK_RE.search(first.get("title", "")))
    name = PLACEHOLDER if PLACEHOLDER in text else customer.get("first_name")
    price = first.get("current_price_text") or ""
    title = first.get("title", "")
    keys = prompt_keys(request)
    limit = _LIMIT_RE.search(text)
    budget = int(limit.group(1)) if limit else 160
    if zh:
        hello = f"{name}，" if name else ""
        room = max(budget - len(hello) - len(price) - 8, 6)
        short = title[:min(room, 16)]
        line = f"{short}现价{price}" if price else short
        return _by_keys(keys, items, zh=True, text=f"{hello}为您推荐：{line}",
                        title=f"{hello}为您推荐{short}"[:30], body=line,
                        subject=f"为您推荐：{short}"[:30],
                        preheader=f"我们根据您的喜好为您挑选了{len(items)}件好物，{line}，"
                                  "欢迎进店查看详情，挑选您喜欢的款式。",
                        opening=f"{hello}我们为您挑选了{len(items)}件好物。")
    hello = f"Hi {name}! " if name else "Hi! "
    deal = f" now {price}" if price else ""
    if first.get("discount_pct"):
        deal += f" ({first['discount_pct']}% off)"
    room = max(budget - len(hello) - len(deal) - 3, 12)
    short = title if len(title) <= min(room, 40) else title[:min(room, 40) - 3].rstrip() + "..."
    return _by_keys(keys, items, zh=False, text=f"{hello}{short}{deal}.",
                    title=f"{hello}{short}"[:45] if name else f"Picked for you: {short}"[:45],
                    body=f"{short}{deal}.", subject=f"Picked for you: {short}"[:48],
                    preheader=f"We chose {len(items)} items you may like, starting "
                              f"with {short}.",
                    opening=f"{hello}We picked these for you.")


def _by_keys(keys: list[str], items: list[dict[str, Any]], *, zh: bool,
             **values: str) -> dict[str, str]:
    lines = [f"{i.get('title', '')}: {i.get('current_price_text', '')}" for i in items]
    values["html"] = "<p>" + values["opening"] + "</p>\n<ul>\n" + "".join(
        f"<li>{line}</li>\n" for line in lines) + "</ul>"      # a whole-body email answer
    values["text"] = values.get("text") if "html" not in keys else \
        values["opening"] + "\n\n" + "\n".join(f"- {x}" for x in lines)
    out = {}
    for k in keys:
        if k == "pitch" or k.startswith("pitch_"):
            n = int(k.split("_")[1]) - 1 if "_" in k else 0
            it = items[min(n, len(items) - 1)]
            t = it.get("title", "")
            out[k] = (f"<strong>{t[:20]}</strong>，品质之选。" if zh
                      else f"<strong>{t}</strong> is a customer favourite.")
        else:
            out[k] = values[k]
    return out


# --- behaviours ------------------------------------------------------------------------------


def completion(request: dict[str, Any], content: str) -> dict[str, Any]:
    """A chat.completion object answering ``request`` with ``content``."""
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
        return Reply(200, completion(request, content))
    return behave


def echo() -> Behaviour:
    """Valid copy built from the prompt's item facts."""
    return answer(echo_fields)


def edit(change: Callable[[dict[str, str]], dict[str, str]]) -> Behaviour:
    """Echo copy changed by ``change`` (e.g. a dropped placeholder)."""
    return answer(lambda request: change(echo_fields(request)))


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


def schema_refused() -> Behaviour:
    """400 for a json_schema response format (an older server), echo otherwise."""
    def behave(request: dict[str, Any]) -> Reply:
        if (request.get("response_format") or {}).get("type") == "json_schema":
            return error(400, "response_format type 'json_schema' is not supported; use "
                              "'json_object'")(request)
        return echo()(request)
    return behave


def hang(seconds: float = 5.0) -> Behaviour:
    """Answer validly, but only after ``seconds`` (longer than the client timeout)."""
    def behave(request: dict[str, Any]) -> Reply:
        reply = echo()(request)
        reply.delay = seconds
        return reply
    return behave


def silent() -> Behaviour:
    """Accept the request and never answer (until the server stops)."""
    return lambda request: Reply(forever=True)


def not_json(text: str = "Hello! I am a friendly server and this is not JSON.") -> Behaviour:
    """A 200 with a JSON content type whose body is not JSON."""
    return lambda request: Reply(200, raw=text.encode())


def html_page() -> Behaviour:
    """A 200 text/html page (a web UI or a captive portal at the base URL)."""
    return lambda request: Reply(200, raw=b"<!DOCTYPE html><html><body><h1>Welcome to "
                                          b"nginx!</h1></body></html>",
                                 content_type="text/html")


def drip(every: float = 0.2) -> Behaviour:
    """A valid answer sent one byte every ``every`` seconds (minutes in total)."""
    def behave(request: dict[str, Any]) -> Reply:
        reply = echo()(request)
        reply.drip = every
        return reply
    return behave


def huge(size: int = 10_000_000) -> Behaviour:
    """A 200 chat completion of ``size`` bytes (the content is valid JSON copy padded)."""
    def behave(request: dict[str, Any]) -> Reply:
        fields = echo_fields(request)
        key = next(iter(fields))
        fields[key] = fields[key] + " " + "x" * size
        return Reply(200, completion(request, json.dumps(fields)))
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
        key = next(k for k in ("text", "body", "subject", "pitch", "opening") if k in fields)
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


def _multipart_file(content_type: str, raw: bytes) -> tuple[bytes, dict[str, str]]:
    """(the uploaded file's bytes, the other form fields) of a multipart/form-data body."""
    boundary = content_type.split("boundary=", 1)[1].strip().strip('"').encode()
    data, fields = b"", {}
    for part in raw.split(b"--" + boundary):
        if b"\r\n\r\n" not in part:
            continue
        head, body = part.split(b"\r\n\r\n", 1)
        body = body[:-2] if body.endswith(b"\r\n") else body
        name = re.search(rb'name="([^"]+)"', head)
        if b"filename=" in head:
            data = body
        elif name:
            fields[name.group(1).decode()] = body.decode()
    return data, fields


class FakeOpenAI:
    """The server; ``url`` is the base_url to give the client (ends with /v1)."""

    def __init__(self, *, latency: float = 0.0, default: Behaviour | None = None,
                 auto_finish: bool = False) -> None:
        self.latency = latency
        self.default = default or echo()
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.paths: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.bytes_sent: list[int] = []     # body bytes written per finished chat answer
        self.drip_sent = 0                  # bytes a dripping answer has sent so far...
        self.drip_total = 0                 # ... of this many
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.auto_finish = auto_finish
        self.batch_calls: list[str] = []    # "POST /v1/files", "GET /v1/batches/b1", ...
        self._queue: deque[Behaviour] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._ids = 0

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
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                fake._handle(self, "POST")

            def do_GET(self) -> None:  # noqa: N802
                fake._handle(self, "GET")

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

    # chat
    def _next_behaviour(self) -> Behaviour:
        with self._lock:
            return self._queue.popleft() if self._queue else self.default

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            length = int(h.headers.get("Content-Length") or 0)
            raw = h.rfile.read(length) if length else b""
            path = h.path.split("?")[0].rstrip("/")
            if path == "/v1/chat/completions" and method == "POST":
                self._chat(h, raw)
            else:
                with self._lock:
                    self.batch_calls.append(f"{method} {path}")
                status, body, ctype = self._files_and_batches(method, path, raw,
                                                              h.headers.get("Content-Type", ""))
                self._send(h, Reply(status, body, raw=body if isinstance(body, bytes) else None,
                                    content_type=ctype))
        finally:
            with self._lock:
                self.in_flight -= 1

    def _chat(self, h: BaseHTTPRequestHandler, raw: bytes) -> None:
        try:
            request = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            request = {"_raw": raw.decode("utf-8", "replace")}
        with self._lock:
            self.requests.append(request)
            self.headers.append({k.lower(): v for k, v in h.headers.items()})
            self.paths.append(h.path)
        reply = self._next_behaviour()(request)
        if reply.forever:
            self._stopping.wait()
            return
        wait_for = self.latency + reply.delay
        if wait_for > 0 and self._stopping.wait(wait_for):
            return
        self._send(h, reply)

    def _send(self, h: BaseHTTPRequestHandler, reply: Reply) -> None:
        payload = reply.raw if reply.raw is not None else \
            json.dumps(reply.body, ensure_ascii=False).encode("utf-8")
        sent = 0
        try:
            h.send_response(reply.status)
            h.send_header("Content-Type", reply.content_type)
            h.send_header("Content-Length", str(len(payload)))
            for k, v in reply.headers.items():
                h.send_header(k, v)
            h.end_headers()
            if reply.drip:
                self.drip_total = len(payload)
                for i in range(len(payload)):
                    self.drip_sent = i
                    h.wfile.write(payload[i:i + 1])
                    h.wfile.flush()
                    sent += 1
                    if self._stopping.wait(reply.drip):
                        break
            else:
                for start in range(0, len(payload), 65536):
                    h.wfile.write(payload[start:start + 65536])
                    sent += len(payload[start:start + 65536])
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up and left
        finally:
            with self._lock:
                self.bytes_sent.append(sent)

    # files and batches
    def _new_id(self, prefix: str) -> str:
        with self._lock:
            self._ids += 1
            return f"{prefix}-{self._ids}"

    def _files_and_batches(self, method: str, path: str, raw: bytes, content_type: str
                           ) -> tuple[int, Any, str]:
        parts = path.split("/")[2:]     # after /v1
        if parts == ["files"] and method == "POST":
            data, form = _multipart_file(content_type, raw)
            fid = self._new_id("file")
            self.files[fid] = {"id": fid, "object": "file", "bytes": len(data),
                               "created_at": int(time.time()), "filename": "batch.jsonl",
                               "purpose": form.get("purpose", "batch"), "status": "processed",
                               "_data": data}
            return 200, {k: v for k, v in self.files[fid].items() if k != "_data"}, \
                "application/json"
        if len(parts) == 3 and parts[0] == "files" and parts[2] == "content":
            f = self.files.get(parts[1])
            if f is None:
                return 404, {"error": {"message": "no such file", "type": "invalid_request"}}, \
                    "application/json"
            return 200, f["_data"], "application/octet-stream"
        if parts == ["batches"] and method == "POST":
            body = json.loads(raw or b"{}")
            if body.get("input_file_id") not in self.files:
                return 400, {"error": {"message": "input file not found"}}, "application/json"
            bid = self._new_id("batch")
            now = int(time.time())
            self.batches[bid] = {
                "id": bid, "object": "batch", "endpoint": body["endpoint"],
                "input_file_id": body["input_file_id"],
                "completion_window": body["completion_window"], "status": "validating",
                "created_at": now, "expires_at": now + 86400, "metadata": body.get("metadata"),
                "output_file_id": None, "error_file_id": None, "errors": None,
                "request_counts": {"total": 0, "completed": 0, "failed": 0}}
            return 200, self.batches[bid], "application/json"
        if parts == ["batches"] and method == "GET":
            data = list(reversed(self.batches.values()))
            return 200, {"object": "list", "data": data, "has_more": False,
                         "first_id": data[0]["id"] if data else None,
                         "last_id": data[-1]["id"] if data else None}, "application/json"
        if len(parts) == 2 and parts[0] == "batches" and method == "GET":
            b = self.batches.get(parts[1])
            if b is None:
                return 404, {"error": {"message": "no such batch"}}, "application/json"
            if self.auto_finish and b["status"] in ("validating", "in_progress"):
                self._finish(b)
            elif b["status"] == "validating":
                b["status"] = "in_progress"
            return 200, b, "application/json"
        return 404, {"error": {"message": f"no route {method} {path}"}}, "application/json"

    def finish_batches(self, *, expire_after: int | None = None,
                       fail_validation: str | None = None) -> None:
        """Run every unfinished batch (see the module docstring)."""
        for b in list(self.batches.values()):
            if b["status"] in ("validating", "in_progress"):
                self._finish(b, expire_after=expire_after, fail_validation=fail_validation)

    def _finish(self, b: dict[str, Any], *, expire_after: int | None = None,
                fail_validation: str | None = None) -> None:
        if fail_validation:
            b.update(status="failed", errors={"object": "list", "data": [
                {"code": "invalid_request", "line": 1, "message": fail_validation,
                 "param": None}]})
            return
        lines = [json.loads(x) for x in self.files[b["input_file_id"]]["_data"].splitlines()
                 if x.strip()]
        out, err = [], []
        for n, line in enumerate(lines):
            rid = f"batch_req_{b['id']}_{n}"
            if expire_after is not None and n >= expire_after:
                err.append({"id": rid, "custom_id": line["custom_id"], "response": None,
                            "error": {"code": "batch_expired", "message": "This request "
                                      "could not be executed before the completion window "
                                      "expired."}})
                continue
            reply = self._next_behaviour()(line["body"])
            with self._lock:
                self.requests.append(line["body"])
            record = {"id": rid, "custom_id": line["custom_id"],
                      "response": {"status_code": reply.status, "request_id": f"req_{n}",
                                   "body": reply.body}, "error": None}
            (out if reply.status == 200 else err).append(record)
        for kind, records in (("output_file_id", out), ("error_file_id", err)):
            if records:
                fid = self._new_id("file")
                data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
                self.files[fid] = {"id": fid, "_data": data.encode(), "purpose": "batch_output"}
                b[kind] = fid
        b["status"] = "expired" if expire_after is not None and expire_after < len(lines) \
            else "completed"
        b["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(err)}


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A started FakeOpenAI (echo default, no latency), stopped after the test."""
    with FakeOpenAI() as fake:
        yield fake
