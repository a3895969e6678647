"""The review web page: token and CSRF rules, actions through Flask's test client, and one
end-to-end run in headless Chromium against a real `pushgen review serve` process."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pushgen.cli import app
from pushgen.errors import PushgenError
from pushgen.web.server import create_app, cut_title

from _review_helpers import draft_id, draft_row, events, make_shop

TOKEN = "test-token-123"
LONG_SMS = ("Hi Ana, the Linen Shirt is now $34.00 (30% off) and it goes with everything you "
            "bought this spring, so have a look before your size is gone: "
            "https://shop.example/p/SKU-1\nReply STOP to opt out")

LONG_ZH_SMS = ("王芳，亚麻衬衫现价¥34.00，立省30%，春天穿上它清爽又舒适，和您之前买过的单品很好搭配，"
               "尺码有限，欲购从速：https://shop.example/p/SKU-1\n回复TD退订")


@pytest.fixture
def db(db_path):
    return make_shop(db_path, failing={"spring": [3]})


@pytest.fixture
def client(db, db_path):
    return create_app(db_path, TOKEN).test_client()


def _authed(client):
    r = client.get(f"/?token={TOKEN}")
    assert r.status_code == 302 and "token" not in r.headers["Location"]
    return client


def _page(client, **args) -> str:
    r = client.get("/", query_string=args)
    assert r.status_code == 200
    return r.get_data(as_text=True)


def test_reads_are_open_but_writes_need_the_token(client, db):
    did = draft_id(db, "spring", 1)
    html = _page(client, status="")
    assert "read-only" in html and 'id="approve-form"' not in html
    assert TOKEN not in html
    assert client.post(f"/drafts/{did}/approve", data={"version": "1"}).status_code == 403
    r = client.post(f"/drafts/{did}/approve", data={"version": "1", "token": "wrong"})
    assert r.status_code == 403 and "write token" in r.get_data(as_text=True)
    assert draft_row(db, did)["status"] == "draft" and events(db, did) == []


def test_token_link_sets_strict_httponly_cookie_and_cookie_alone_is_not_enough(client, db):
    r = client.get(f"/?token={TOKEN}&campaign=spring")
    assert r.status_code == 302 and r.headers["Location"] == "/?campaign=spring"
    cookie = r.headers["Set-Cookie"]
    assert f"pushgen_token={TOKEN}" in cookie and "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    html = _page(client, campaign="spring")
    assert f'name="token" value="{TOKEN}"' in html and 'id="approve-form"' in html
    # CSRF: the browser sends the cookie, but a forged form cannot know the token
    did = draft_id(db, "spring", 1)
    assert client.post(f"/drafts/{did}/approve", data={"version": "1"}).status_code == 403
    assert draft_row(db, did)["status"] == "draft"


def test_wrong_token_link_stays_read_only(client):
    r = client.get("/?token=nope")
    assert r.status_code == 302
    assert "pushgen_token" not in " ".join(r.headers.get_all("Set-Cookie"))
    assert "token is wrong" in _page(client)


def test_approve_via_form_and_header(client, db):
    a, b = draft_id(db, "spring", 1), draft_id(db, "spring", 2)
    r = client.post(f"/drafts/{a}/approve", data={"version": "1", "token": TOKEN,
                                                  "campaign": "spring", "status": "draft"})
    assert r.status_code == 302
    assert r.headers["Location"] == f"/?campaign=spring&status=draft&id={b}"  # next in queue
    assert draft_row(db, a)["status"] == "approved"
    r = client.post(f"/drafts/{b}/approve", data={"version": "1"},
                    headers={"X-Pushgen-Token": TOKEN, "X-Pushgen-Actor": "gina"})
    assert r.status_code == 302 and draft_row(db, b)["status"] == "approved"
    assert events(db, b)[0]["actor"] == "gina"


def test_failing_draft_cannot_be_approved_from_the_page(client, db):
    did = draft_id(db, "spring", 3)
    _authed(client)
    html = _page(client, id=did)
    assert re.search(r'id="approve-btn"\s+disabled', html)
    assert 'class="fail"' in html and "sms.opt_out" in html
    r = client.post(f"/drafts/{did}/approve", data={"version": "1", "token": TOKEN},
                    follow_redirects=True)
    assert "cannot approve draft" in r.get_data(as_text=True)
    assert draft_row(db, did)["status"] == "draft"


def test_edit_shows_new_failures_and_stale_edit_is_refused(client, db):
    did = draft_id(db, "spring", 1)
    _authed(client)
    r = client.post(f"/drafts/{did}/edit", data={"version": "1", "token": TOKEN,
                                                 "text": LONG_SMS.replace("\n", "\r\n")},
                    follow_redirects=True)
    html = r.get_data(as_text=True)
    assert "but it fails sms.segments: SMS is 2 segments" in html
    row = draft_row(db, did)
    assert row["content"]["text"] == LONG_SMS and row["passed"] == 0 and row["version"] == 2
    r = client.post(f"/drafts/{did}/edit", data={"version": "1", "token": TOKEN,
                                                 "text": "older tab"}, follow_redirects=True)
    assert "was changed by" in r.get_data(as_text=True)
    assert "you edited version 1); reload and try again" in r.get_data(as_text=True)
    assert draft_row(db, did)["content"]["text"] == LONG_SMS


def test_reject_and_reopen(client, db):
    did = draft_id(db, "spring", 2)
    r = client.post(f"/drafts/{did}/reject", data={"version": "1", "token": TOKEN,
                                                   "reason": ""}, follow_redirects=True)
    assert "needs a reason" in r.get_data(as_text=True)
    client.post(f"/drafts/{did}/reject", data={"version": "1", "token": TOKEN,
                                               "reason": "tone"})
    client.post(f"/drafts/{did}/reopen", data={"version": "2", "token": TOKEN})
    assert [e["action"] for e in events(db, did)] == ["reject", "reopen"]


def test_bulk_approve_all_passing(client, db):
    r = client.post("/approve-all", data={"token": TOKEN, "campaign": "spring",
                                          "status": "draft"}, follow_redirects=True)
    assert "Approved 2 draft(s) of spring" in r.get_data(as_text=True)
    assert draft_row(db, draft_id(db, "spring", 3))["status"] == "draft"


def test_channel_rendering(client, db):
    _authed(client)
    sms = _page(client, id=draft_id(db, "spring", 2))
    assert "UCS-2" in sms and "1 segment" in sms and 'class="bubble"' in sms
    email = _page(client, id=draft_id(db, "news", 2))
    assert '<iframe class="mail-body" sandbox=""' in email
    # the HTML body sits escaped inside srcdoc, so it cannot break out of the attribute
    assert 'srcdoc="&lt;html&gt;&lt;body&gt;' in email
    assert "王芳，春季精选为您准备好了" in email and "Acme Shop" in email
    assert re.findall(r"<script[^>]*>", email) == ['<script src="/static/review.js">']
    db.execute("UPDATE drafts SET content = json_set(content, '$.title', ?) WHERE id = ?",
               ["Ana, thirty percent off the Linen Shirt you looked at", draft_id(db, "app", 1)])
    push = _page(client, id=draft_id(db, "app", 1))
    assert f">{cut_title('Ana, thirty percent off the Linen Shirt you looked at')}<" in push
    assert cut_title("x" * 60) == "x" * 39 + "…"
    r = client.get("/")
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    assert r.headers["X-Frame-Options"] == "DENY"


def test_filters_and_counts(client, db):
    html = _page(client, failed_check="sms.opt_out")
    assert "1 draft<" in html and "u-bob" in html
    html = _page(client, locale="zh-CN", status="")
    assert "3 drafts" in html
    html = _page(client, campaign="nope")
    assert "no campaign named" in html


def test_host_header_is_checked_when_loopback(db, db_path):
    app = create_app(db_path, TOKEN, trusted_hosts=["127.0.0.1", "localhost"])
    c = app.test_client()
    assert c.get("/", headers={"Host": "localhost:8765"}).status_code == 200
    assert c.get("/", headers={"Host": "evil.example:8765"}).status_code == 400


def test_sms_info_api(client):
    r = client.get("/api/sms-info", query_string={"text": "你好"})
    assert r.get_json()["encoding"] == "UCS-2" and r.get_json()["segments"] == 1


# --- the real thing: a served page in headless Chromium --------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(db_path: Path, **env: str) -> Iterator[str]:
    """``pushgen review serve`` on a free port in a real process; yields the link it prints."""
    port = _free_port()
    cmd = [sys.executable, "-c", "from pushgen.cli import main; main()", "review", "serve",
           "--db", str(db_path), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env})
    url = None
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            m = re.search(r"Open: (http://\S+)", line)
            if m:
                url = m.group(1)
                break
        if url is None:
            proc.kill()
            pytest.fail(f"review serve did not start: {proc.stderr.read()}")
        assert f"127.0.0.1:{port}/?token=" in url
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()


def browser_api():
    """``playwright.sync_api`` with Chromium present; else skip (CI sets
    PUSHGEN_REQUIRE_BROWSER=1 so a missing browser fails instead of skipping)."""
    required = os.environ.get("PUSHGEN_REQUIRE_BROWSER") == "1"
    try:
        import playwright.sync_api as playwright
    except ImportError:
        if required:
            raise
        pytest.skip("playwright not installed: pip install '.[test]'")
    if not Path(CHROMIUM).exists():
        if required:
            pytest.fail(f"{CHROMIUM} missing: apt-get install -y chromium")
        pytest.skip(f"{CHROMIUM} missing: apt-get install -y chromium")
    return playwright


@pytest.fixture
def served(db, db_path):
    with serving(db_path, USER="browser-tester") as url:
        yield url


def test_browser_review_flow(served, db, tmp_path):
    playwright = browser_api()
    base = served.split("/?")[0]
    a, b = draft_id(db, "spring", 1), draft_id(db, "spring", 2)
    # an email whose preview holds a remote image (a tracking pixel on another local port)
    pixel = _PixelServer()
    mail = draft_id(db, "news", 1)
    db.execute("UPDATE drafts SET content = json_set(content, '$.html', ?) WHERE id = ?",
               [f'<p>Hi</p><img src="http://127.0.0.1:{pixel.port}/pixel.gif" width="1">', mail])
    db.conn.commit()
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(served)
            assert page.url == base + "/"                       # token moved to a cookie
            assert page.locator(".access.ok").is_visible()

            # filter the queue: campaign spring, then only drafts failing the opt-out check
            with page.expect_navigation():
                page.select_option("#filter-campaign", "spring")
            assert page.locator("#queue li").count() == 3
            with page.expect_navigation():
                page.select_option("#filter-failed_check", "sms.opt_out")
            assert page.locator("#queue li").count() == 1
            assert "Bob Stone" in page.locator("#queue").inner_text()
            assert page.locator("#approve-btn").is_disabled()
            with page.expect_navigation():
                page.select_option("#filter-failed_check", "")

            # approve the first draft with the keyboard
            assert page.locator("h1").inner_text() == f"Draft #{a}"
            with page.expect_navigation():
                page.keyboard.press("a")
            assert f"Approved draft {a}." in page.locator(".flash-success").inner_text()
            assert page.locator("h1").inner_text() == f"Draft #{b}"   # moved to the next

            # edit the next one so it grows to two SMS segments: the page shows the failure
            page.keyboard.press("e")
            assert page.locator("#edit-panel").is_visible()
            page.fill("#edit-text", LONG_ZH_SMS)
            page.fill("#edit-reason", "longer pitch")
            with page.expect_navigation():
                page.click("#save-edit")
            flash = page.locator(".flash-error").inner_text()
            assert "fails sms.segments" in flash and "cannot be approved" in flash
            failed = page.locator("#checks li.fail")
            assert failed.count() == 1 and "sms.segments" in failed.inner_text()
            assert page.locator("#approve-btn").is_disabled()
            assert "2 segments" in page.locator("#sms-counter").inner_text()
            page.screenshot(path="/tmp/review.png", full_page=True)
            assert errors == []

            # the email preview fires no remote image until the reviewer asks for it
            page.goto(f"{base}/?status=&id={mail}")
            page.wait_for_load_state("load")
            assert page.locator("#load-images").is_visible()
            time.sleep(0.3)
            assert pixel.hits == 0
            with page.expect_navigation():
                page.click("#load-images")
            page.wait_for_load_state("load")
            deadline = time.monotonic() + 5
            while pixel.hits == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert pixel.hits >= 1
        finally:
            browser.close()
            pixel.stop()

    # the database says the same
    assert draft_row(db, a)["status"] == "approved"
    assert events(db, a)[0]["actor"] == "browser-tester"
    row = draft_row(db, b)
    assert row["content"]["text"] == LONG_ZH_SMS and row["passed"] == 0
    assert row["status"] == "draft"
    assert [c["name"] for c in row["checks"] if not c["ok"]] == ["sms.segments"]
    ev = events(db, b)[0]
    assert (ev["action"], ev["reason"]) == ("edit", "longer pitch")


def test_bad_page_and_bad_version_are_handled(client, db):
    assert _page(client, page="abc") == _page(client, page="0")
    did = draft_id(db, "spring", 1)
    for action in ("approve", "edit"):
        r = client.post(f"/drafts/{did}/{action}", data={"version": "abc", "token": TOKEN,
                                                         "text": "x"})
        assert r.status_code == 400, action
        assert "version must be a whole number, not 'abc'" in r.get_data(as_text=True)
    row = draft_row(db, did)
    assert (row["status"], row["version"]) == ("draft", 1)


# --- issue 9, finding 10: the review server under hostile requests -------------------------------


def test_write_from_a_foreign_origin_is_refused_even_with_the_token(client, db):
    did = draft_id(db, "spring", 1)
    form = {"version": "1", "token": TOKEN}
    for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"},
                    {"Referer": "https://evil.example/page"},
                    {"Origin": "http://localhost:9999"}):
        r = client.post(f"/drafts/{did}/approve", data=form, headers=headers)
        assert r.status_code == 403, headers
        assert "not from this review page" in r.get_data(as_text=True)
    assert draft_row(db, did)["status"] == "draft" and events(db, did) == []
    ok = client.post(f"/drafts/{did}/approve", data=form,
                     headers={"Origin": "http://localhost", "Referer": "http://localhost/?x=1"})
    assert ok.status_code == 302 and draft_row(db, did)["status"] == "approved"


def test_write_through_an_https_proxy_to_this_host_is_accepted(client, db):
    """Behind the TLS proxy --allow-remote asks for, the page's origin is https://."""
    did = draft_id(db, "spring", 1)
    r = client.post(f"/drafts/{did}/approve", data={"version": "1", "token": TOKEN},
                    headers={"Origin": "https://localhost"})
    assert r.status_code == 302 and draft_row(db, did)["status"] == "approved"


@pytest.mark.parametrize("big", [2**63, 2**63 + 1, 10**40])
def test_huge_ids_are_404_not_500(client, db, big):
    _authed(client)
    r = client.post(f"/drafts/{big}/approve", data={"version": "1", "token": TOKEN})
    assert r.status_code == 404
    r = client.get("/", query_string={"id": str(big), "page": str(big)})
    assert r.status_code == 200 and f"no draft with id {big}" in r.get_data(as_text=True)


@pytest.mark.parametrize("actor", ["eve\tX: 1", "<img src=x>", "x" * 200])
def test_actor_header_is_validated(client, db, actor):
    did = draft_id(db, "spring", 1)
    r = client.post(f"/drafts/{did}/approve", data={"version": "1", "token": TOKEN},
                    headers={"X-Pushgen-Actor": actor})
    assert r.status_code == 400 and "actor name" in r.get_data(as_text=True)
    assert events(db, did) == []


def test_previews_load_no_remote_image_unless_asked(client, db):
    _authed(client)
    did = draft_id(db, "news", 1)
    r = client.get("/", query_string={"id": did})
    csp = r.headers["Content-Security-Policy"]
    assert "img-src 'self' data:;" in csp and "https:" not in csp and "http:" not in csp
    assert 'id="load-images"' in r.get_data(as_text=True)
    r = client.get("/", query_string={"id": did, "images": "1"})
    assert "img-src 'self' data: https: http:;" in r.headers["Content-Security-Policy"]
    assert r.headers["Referrer-Policy"] == "same-origin"


def test_remote_mode_needs_the_token_for_reads(db, db_path):
    c = create_app(db_path, TOKEN, remote=True).test_client()
    r = c.get("/")
    assert r.status_code == 403 and "--allow-remote" in r.get_data(as_text=True)
    assert c.get("/api/sms-info", query_string={"text": "x"}).status_code == 403
    assert c.get("/static/review.css").status_code == 200
    assert c.get(f"/?token={TOKEN}").status_code == 302
    assert c.get("/").status_code == 200


def test_bind_rules():
    from pushgen.web.server import check_bind

    assert check_bind("127.0.0.1", 8765) and check_bind("::1", 1) and check_bind("localhost", 65535)
    for host in ("0.0.0.0", "192.168.1.5", "::", "example.com"):
        with pytest.raises(PushgenError, match="--allow-remote"):
            check_bind(host, 8765)
        assert check_bind(host, 8765, allow_remote=True) is False
    for port in (0, 65536, 99999, -1):
        with pytest.raises(PushgenError, match=f"--port {port} is not a port"):
            check_bind("127.0.0.1", port)


def test_cli_serve_refuses_unsafe_options_in_one_line(db, db_path, runner, tmp_path):
    base = ["review", "serve", "--db", str(db_path)]
    r = runner.invoke(app, base + ["--port", "99999"])
    assert r.exit_code == 1 and "--port 99999 is not a port: use 1-65535" in r.output
    r = runner.invoke(app, base + ["--host", "0.0.0.0"])
    assert r.exit_code == 1 and "--allow-remote" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, base + ["--token", "s3cret-s3cret-s3cret"])
    assert r.exit_code == 1 and "PUSHGEN_TOKEN" in r.output and "ps" in r.output
    r = runner.invoke(app, base + ["--token-file", str(tmp_path / "missing")])
    assert r.exit_code == 1 and "cannot read the token file" in r.output
    short = tmp_path / "short"
    short.write_text("abc\n")
    r = runner.invoke(app, base + ["--token-file", str(short)])
    assert r.exit_code == 1 and "at least 16 characters" in r.output


def test_served_token_comes_from_a_file_and_never_reaches_the_log(db, db_path, tmp_path):
    import urllib.request

    secret = "file-token-0123456789abcdef"
    token_file = tmp_path / "token"
    token_file.write_text(secret + "\n")
    port = _free_port()
    cmd = [sys.executable, "-m", "pushgen", "review", "serve", "--db", str(db_path), "--port",
           str(port), "--token-file", str(token_file)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        deadline = time.monotonic() + 20
        while "Open:" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()
        assert f"/?token={secret}" in line
        opener = urllib.request.build_opener(_NoRedirect)
        r = opener.open(f"http://127.0.0.1:{port}/?token={secret}&campaign=spring")
        assert r.status == 302 and secret not in r.headers["Location"]
        assert secret in r.headers["Set-Cookie"]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert "GET /?token=[redacted]&campaign=spring" in err
    assert secret not in err
    assert secret not in " ".join(cmd)   # nothing on the command line for `ps` to show


import urllib.request as _urlreq  # noqa: E402


class _NoRedirect(_urlreq.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None

    def http_error_302(self, req, fp, code, msg, headers):
        fp.status = code
        return fp


class _PixelServer:
    """A local image server that counts requests (a stand-in for a tracking pixel)."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        outer = self
        self.hits = 0

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.hits += 1
                body = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"
                self.send_response(200)
                self.send_header("Content-Type", "image/gif")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
