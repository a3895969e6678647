"""Issue 9, finding 6: a hostile or broken LLM endpoint ends in one clear line, fast.

Every test drives ``pushgen draft`` (or ``draft_campaign``) against the scripted fake server
on 127.0.0.1, as a user would meet the fault."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import fake_openai as fake
from fake_openai import FakeOpenAI
from pushgen.campaign import LLMOptions, draft_campaign
from pushgen.cli import app
from pushgen.config import load_campaign_config
from pushgen.store import open_store

from _shop import build_shop, copy_shop


@pytest.fixture(scope="module")
def small_shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_shop(tmp_path_factory.mktemp("faults"), seed=7, users=80, items=40, events=2000,
                      epochs=3, components=8)


@pytest.fixture
def shop(small_shop: Path, tmp_path: Path) -> Path:
    return copy_shop(small_shop, tmp_path)


def _count(db_path: Path, sql: str) -> int:
    con = sqlite3.connect(db_path)
    try:
        return con.execute(sql).fetchone()[0]
    finally:
        con.close()


def _draft(runner, shop: Path, url: str, *extra: str):
    return runner.invoke(app, ["draft", "-c", "faults", "--channel", "push", "--generator",
                               "llm", "--model", "m", "--base-url", url, "--limit", "3",
                               "--db", str(shop), *extra])


def _one_clean_error(res, needle: str) -> None:
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output and isinstance(res.exception, SystemExit)
    errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and needle in res.output.replace("\n", " "), res.output


@pytest.mark.parametrize("behaviour,needle", [
    (fake.not_json(), "not JSON"),
    (fake.html_page(), "text/html, not JSON"),
], ids=["non-json-200", "html-200"])
def test_a_200_that_is_not_a_completion_is_one_clean_error(shop, runner, behaviour, needle):
    with FakeOpenAI(default=behaviour) as server:
        res = _draft(runner, shop, server.url)
    _one_clean_error(res, needle)
    assert _count(shop, "SELECT count(*) FROM drafts") == 0


def test_slow_drip_stops_at_the_request_deadline(shop, runner):
    # A byte every 0.2 s: every read succeeds, so only a deadline on the whole request ends it.
    with FakeOpenAI(default=fake.drip(every=0.2)) as server:
        res = _draft(runner, shop, server.url, "--timeout", "1", "--max-failures", "2")
        assert server.drip_sent < server.drip_total / 4
    _one_clean_error(res, "no complete answer within 1 s")


def test_silent_endpoint_stops_the_run_after_n_consecutive_failures(shop, runner):
    with FakeOpenAI(default=fake.silent()) as server:
        res = runner.invoke(app, ["draft", "-c", "faults", "--channel", "sms", "--generator",
                                  "llm", "--model", "m", "--base-url", server.url, "--timeout",
                                  "0.3", "--max-failures", "2", "--concurrency", "2",
                                  "--llm-mode", "per-user", "--limit", "30", "--db", str(shop)])
        calls = server.calls
    _one_clean_error(res, "stopped after 2 consecutive failed LLM requests")
    assert calls <= 4     # not 30 drafts x 4 attempts
    assert _count(shop, "SELECT count(*) FROM drafts") == 0


def test_a_10_mb_answer_is_refused_and_not_cached(shop, runner):
    with FakeOpenAI(default=fake.huge(10_000_000)) as server:
        res = _draft(runner, shop, server.url, "--max-failures", "2")
    _one_clean_error(res, "over 1,000,000 bytes; refused")
    assert _count(shop, "SELECT count(*) FROM llm_cache") == 0
    assert _count(shop, "SELECT coalesce(max(length(response)), 0) FROM llm_cache") == 0


def test_the_cache_key_includes_the_endpoint(shop):
    db = open_store(shop)
    cfg = load_campaign_config(None, name="a", channel="push")
    cfg.audience.limit = 3
    with FakeOpenAI() as one, FakeOpenAI() as two:
        draft_campaign(db, "a", cfg, generator="llm", llm=LLMOptions(model="m", base_url=one.url))
        cfg_b = load_campaign_config(None, name="a", channel="push")
        cfg_b.audience.limit = 3
        draft_campaign(db, "a", cfg_b, generator="llm", regenerate=True,
                       llm=LLMOptions(model="m", base_url=two.url))
        assert one.calls > 0 and two.calls == one.calls   # same prompts, other server: asked


def test_api_key_option_is_sent_and_named_in_errors(shop, runner):
    with FakeOpenAI() as server:
        res = _draft(runner, shop, server.url, "--api-key", "sk-test-123")
        assert res.exit_code == 0, res.output
        assert {h["authorization"] for h in server.headers} == {"Bearer sk-test-123"}
    with FakeOpenAI(default=fake.error(401, "Incorrect API key provided")) as server:
        res = _draft(runner, shop, server.url, "--api-key", "sk-wrong", "--regenerate")
    _one_clean_error(res, "--api-key")


def test_dry_run_needs_no_endpoint(shop, runner):
    res = runner.invoke(app, ["draft", "-c", "dry", "--channel", "push", "--generator", "llm",
                              "--model", "gpt-4o-mini", "--dry-run", "--db", str(shop)])
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert "catalog_data" in out and "Nothing was called" in out
    assert _count(shop, "SELECT count(*) FROM drafts") == 0


def _repairs(server: FakeOpenAI) -> int:
    return sum("failed these checks" in m["content"] for r in server.requests
               for m in r["messages"])


def test_no_repair_for_an_http_error(shop):
    db = open_store(shop)
    cfg = load_campaign_config(None, name="h", channel="push")
    cfg.audience.limit = 4
    with FakeOpenAI() as server:
        # one prompt's request fails for good; the others are answered
        server.enqueue(fake.server_error(500))
        draft_campaign(db, "h", cfg, generator="llm",
                       llm=LLMOptions(model="m", base_url=server.url, max_attempts=1,
                                      concurrency=1))
        assert _repairs(server) == 0
    flags = [r[0] for r in sqlite3.connect(shop).execute(
        "SELECT flag FROM drafts WHERE generator = 'llm_fallback_template'")]
    assert flags and all("HTTP 500" in f for f in flags)


def test_no_repair_for_what_pushgen_adds(shop):
    """A failure in the part pushgen writes (here: no postal address configured) is not the
    model's to fix: no repair request, the draft keeps its failing check, flagged."""
    db = open_store(shop)
    cfg = load_campaign_config(None, name="p", channel="email")
    cfg.settings.postal_address = ""
    cfg.audience.limit = 3
    with FakeOpenAI() as server:
        report = draft_campaign(db, "p", cfg, generator="llm",
                                llm=LLMOptions(model="m", base_url=server.url))
        assert _repairs(server) == 0
    assert report.repaired == 0 and report.failed == report.drafted > 0
    flags = [r[0] for r in sqlite3.connect(shop).execute("SELECT flag FROM drafts")]
    assert all("email.postal_address" in f for f in flags)


def test_repair_for_what_the_model_wrote(shop):
    db = open_store(shop)
    cfg = load_campaign_config(None, name="r", channel="push")
    cfg.audience.limit = 3
    with FakeOpenAI() as server:
        server.enqueue(fake.wrong_price())     # the first answer invents a price
        report = draft_campaign(db, "r", cfg, generator="llm",
                                llm=LLMOptions(model="m", base_url=server.url, concurrency=1))
        assert _repairs(server) == 1
    assert report.repaired >= 1 and report.fallbacks == 0
