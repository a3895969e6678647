"""Issue 10: LLM drafting with copy blocks, end to end on a real small shop and a real local
HTTP fake: private prompts, reused blocks, complete and checked drafts, cost in the summary."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

import fake_openai as fake
from _shop import build_shop, config, copy_shop, drafts, rows
from fake_openai import PLACEHOLDER, FakeOpenAI, all_text
from pushgen.campaign import LLMOptions, draft_campaign
from pushgen.channels import deep_link_for, opt_out_line
from pushgen.cli import app
from pushgen.generate.blocks import Assembler, Slot, placeholder_problems
from pushgen.generate.llm import LLMRequest
from pushgen.generate.templates import greeting_name
from pushgen.messages import CampaignSettings, ItemFacts, MessageContext, Recipient
from pushgen.store import open_store


WIDE = {"COLUMNS": "200"}     # tables on one line each, for the assertions


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_shop(tmp_path_factory.mktemp("llmshop"))


@pytest.fixture
def shop(trained: Path, tmp_path: Path) -> Path:
    return copy_shop(trained, tmp_path)


def _opts(server: FakeOpenAI, **kw) -> LLMOptions:
    kw.setdefault("concurrency", 4)
    return LLMOptions(model="m", base_url=server.url, **kw)


def _chat_requests(server: FakeOpenAI) -> list[dict]:
    return [r for r, p in zip(server.requests, server.paths)]


@pytest.mark.parametrize("channel", ["sms", "push", "email"])
def test_blocks_prompts_carry_no_personal_data(shop: Path, channel: str) -> None:
    db = open_store(shop)
    # The campaign allows the first name and even (wrongly) contact fields: blocks mode
    # still sends none of them, and no name, to the endpoint.
    cfg = config("p", channel, limit=60,
                 allowed_profile_fields=["first_name", "name", "locale", "tier", "email",
                                         "phone"])
    with FakeOpenAI() as server:
        report = draft_campaign(db, "p", cfg, generator="llm", llm=_opts(server))
        prompts = [all_text(r) for r in server.requests]
    assert report.drafted == 60 and report.llm_drafts == 60 and prompts
    catalog = " ".join(t for (t,) in rows(shop, "SELECT title || ' ' || coalesce(description, "
                                                "'') || ' ' || attributes FROM items"))
    people = rows(shop, "SELECT name, email, phone, external_id FROM users")
    words = {w for name, *_ in people for w in (name or "").split()
             if len(w) >= 2 and w not in catalog}
    latin = re.compile(r"(?<!\w)(" + "|".join(re.escape(w) for w in words if w.isascii())
                       + r")(?!\w)")
    cjk = [w for w in words if not w.isascii()]      # Chinese names: no word boundaries
    contacts = [v for _, *values in people for v in values if v]
    leaks = []
    for text in prompts:
        leaks += latin.findall(text) + [w for w in cjk if w in text]
        leaks += [v for v in contacts if v in text]
    assert leaks == []
    # ... while the drafts greet every customer by name (pushgen fills the placeholder)
    for d in drafts(shop, "p"):
        copy = " ".join(d["content"].values())
        assert greeting_name(Recipient(0, "", d["name"], d["locale"]), d["locale"]) in copy
        assert PLACEHOLDER not in copy


def test_blocks_are_reused_across_customers(shop: Path) -> None:
    db = open_store(shop)
    cfg = config("reuse", "sms", allowed_profile_fields=["first_name", "locale", "tier"])
    with FakeOpenAI() as server:
        report = draft_campaign(db, "reuse", cfg, generator="llm", llm=_opts(server))
        calls = server.calls
    made = drafts(shop, "reuse")
    tiers = dict(rows(shop, "SELECT id, json_extract(attributes, '$.tier') FROM users"))
    keys = {(d["items"][0]["sku"], d["locale"], tiers[d["user_id"]]) for d in made}
    # one call per distinct (lead item, locale, segment): not one per customer
    assert calls == len(keys) == report.llm_requests
    assert len(made) == report.drafted > 3 * calls
    assert report.llm_saved_by_blocks == report.drafted - calls
    # a customer's block keys are in the draft's provenance
    meta = made[0]["meta"]
    assert meta["mode"] == "blocks" and meta["blocks"][0]["role"] == "lead"
    assert meta["blocks"][0]["key"].startswith(f"sms.lead|{made[0]['items'][0]['sku']}|")


def test_every_llm_draft_is_complete_and_checked(shop: Path) -> None:
    db = open_store(shop)
    with FakeOpenAI() as server:
        for channel in ("sms", "push", "email"):
            draft_campaign(db, channel, config(channel, channel, limit=40), generator="llm",
                           llm=_opts(server))
    for d in drafts(shop, "sms"):
        assert d["generator"] == "llm" and d["passed"]
        text = d["content"]["text"]
        assert d["items"][0]["url"] in text
        assert text.endswith(opt_out_line(d["locale"]))
        assert d["template_name"].startswith("sms/blocks.")
    settings = CampaignSettings(name="push", channel="push")
    for d in drafts(shop, "push"):
        assert d["generator"] == "llm" and d["passed"]
        assert d["content"]["deep_link"] == deep_link_for(settings, d["items"][0]["sku"])
    email = drafts(shop, "email")
    address = CampaignSettings(name="email").postal_address
    for d in email:
        assert d["generator"] == "llm" and d["passed"], d["checks"]
        html, text = d["content"]["html"], d["content"]["text"]
        assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
        unsub = re.search(r"https://shop\.example/unsubscribe\?t=[\w-]+", text).group(0)
        for part in (html, text):
            assert unsub in part and address in part
            for item in d["items"]:
                assert item["url"] in part
        names = {c["name"]: c for c in d["checks"]}
        assert names["llm.placeholders"]["ok"] and names["email.unsubscribe"]["ok"]


def test_model_html_is_sanitised_into_the_layout(shop: Path) -> None:
    hostile = ('<p>Hi {first_name}! <strong>New picks</strong></p><script>alert(1)</script>'
               '<img src="//evil.example/pixel.gif"><a href="javascript:steal()">more</a>'
               '<form action="//evil.example/"><input name="card"></form>'
               '<a href="https://evil.example/x">deal</a><p onclick="x()">ok</p>')

    def build(request):
        fields = fake.echo_fields(request)
        if "opening" in fields:
            fields["opening"] = hostile
        return fields

    db = open_store(shop)
    with FakeOpenAI(default=fake.answer(build)) as server:
        draft_campaign(db, "html", config("html", "email", limit=10), generator="llm",
                       llm=_opts(server))
    for d in drafts(shop, "html"):
        html = d["content"]["html"]
        for bad in ("<script", "alert(1)", "<img src=\"//evil", "javascript:", "<form",
                    "evil.example", "onclick"):
            assert bad not in html
        assert "<strong>New picks</strong>" in html and f"Hi {PLACEHOLDER}" not in html
        assert d["passed"], [c for c in d["checks"] if not c["ok"]]


@pytest.mark.parametrize("change", [
    lambda t: t.replace(PLACEHOLDER, "there"),          # dropped
    lambda t: t.replace(PLACEHOLDER, "{firstname}"),    # mangled
    lambda t: t.replace(PLACEHOLDER, "{{first_name}}"),  # mangled
    lambda t: t.replace(PLACEHOLDER, "[first_name]"),   # mangled
], ids=["dropped", "no-underscore", "double-braces", "brackets"])
def test_a_dropped_or_mangled_placeholder_fails_the_check(shop: Path, change) -> None:
    def build(request):
        fields = fake.echo_fields(request)
        return {k: change(v) for k, v in fields.items()}

    db = open_store(shop)
    with FakeOpenAI(default=fake.answer(build)) as server:
        report = draft_campaign(db, "ph", config("ph", "push", limit=6), generator="llm",
                                llm=_opts(server))
        repairs = [all_text(r) for r in server.requests if "failed these checks" in all_text(r)]
    made = drafts(shop, "ph")
    # every first draft failed llm.placeholders; one repair each; still wrong: template used
    assert report.fallbacks == len(made) == 6 and report.llm_drafts == 0
    assert repairs and all("llm.placeholders" in r for r in repairs)
    assert all(d["generator"] == "llm_fallback_template" and "llm.placeholders" in d["flag"]
               for d in made)


def test_placeholder_rules_directly() -> None:
    rules = {"title": "required"}
    assert placeholder_problems({"title": "Hi {first_name}!", "body": "x"}, rules, "b") == []
    assert "dropped" in placeholder_problems({"title": "Hi!"}, rules, "b")[0]
    assert "written wrong" in placeholder_problems({"title": "Hi { first_name }"}, rules, "b")[0]
    assert "not allowed" in placeholder_problems({"body": "{first_name}"}, rules, "b")[0]
    assert placeholder_problems({"text": "Hi Ann"}, {}, "user") == []
    # an assembled draft carries the verdict as its llm.placeholders check
    settings = CampaignSettings(name="c", channel="push")
    ctx = MessageContext(Recipient(1, "u1", "Ann Lee"),
                         [ItemFacts("S-1", "Wool Scarf", 20.0)], settings)
    slot = Slot("lead", "S-1", LLMRequest("push.lead|S-1", "t", [], ("title", "body"), rules))
    good = Assembler().assemble(ctx, [(slot, "k1", {"title": "Hi {first_name}!",
                                                    "body": "Wool Scarf $20.00."})])
    bad = Assembler().assemble(ctx, [(slot, "k2", {"title": "Hi {firstname}!",
                                                   "body": "Wool Scarf $20.00."})])
    assert good.placeholders.ok and good.rendered.message.get("title") == "Hi Ann!"
    assert not bad.placeholders.ok and "{firstname}" in bad.placeholders.message


def test_fully_cached_run_shows_its_llm_rows(shop: Path, runner, tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('[llm.prices]\n"m" = { input = 2.0, output = 8.0 }\n', encoding="utf-8")
    with FakeOpenAI() as server:
        args = ["draft", "-c", "cached", "--channel", "push", "--generator", "llm", "--model",
                "m", "--base-url", server.url, "--limit", "40", "--config", str(toml),
                "--db", str(shop)]
        first = runner.invoke(app, args, env=WIDE)
        again = runner.invoke(app, args + ["--regenerate"], env=WIDE)
        calls = server.calls
    assert first.exit_code == 0 and again.exit_code == 0, first.output + again.output
    out1, out2 = (" ".join(r.output.split()) for r in (first, again))
    assert f"LLM requests sent (retries included) │ {calls}" in out1
    assert f"prompts needed / answered from cache │ {calls} / 0" in out1
    assert "LLM requests sent (retries included) │ 0" in out2
    assert f"prompts needed / answered from cache │ {calls} / {calls}" in out2
    assert "estimated cost │ 0.0000 (at 2 / 8 per 1M tokens in / out)" in out2
    assert "json_schema" in out2
    stats = runner.invoke(app, ["stats", "--campaign", "cached", "--db", str(shop)], env=WIDE)
    out = " ".join(stats.output.split())
    tp, tc = rows(shop, "SELECT sum(tokens_prompt), sum(tokens_completion) FROM llm_runs")[0]
    cost = (tp * 2.0 + tc * 8.0) / 1e6
    assert "LLM runs │ 2 (blocks; m)" in out
    assert f"prompts needed / answered from cache │ {2 * calls} / {calls}" in out
    assert f"LLM tokens prompt / completion │ {tp:,} / {tc:,}" in out and tp > 0
    assert f"estimated cost │ {cost:,.4f}" in out


def test_unknown_model_price_shows_tokens_only(shop: Path, runner) -> None:
    with FakeOpenAI() as server:
        res = runner.invoke(app, ["draft", "-c", "x", "--channel", "sms", "--generator", "llm",
                                  "--model", "m", "--base-url", server.url, "--limit", "5",
                                  "--db", str(shop)], env=WIDE)
    out = " ".join(res.output.split())
    assert res.exit_code == 0, res.output
    assert "estimated cost │ unknown: no price for m" in out and "(tokens only)" in out


def test_json_schema_fallback_is_recorded_on_drafts(shop: Path) -> None:
    db = open_store(shop)
    with FakeOpenAI(default=fake.schema_refused()) as server:
        report = draft_campaign(db, "fmt", config("fmt", "push", limit=10), generator="llm",
                                llm=_opts(server, concurrency=1))
        kinds = Counter(r["response_format"]["type"] for r in server.requests)
    assert kinds["json_schema"] == 1 and kinds["json_object"] == report.llm_requests
    assert report.llm_formats == {"json_object": report.llm_requests}
    assert {tuple(d["meta"]["response_format"]) for d in drafts(shop, "fmt")} == {
        ("json_object",)}
    assert rows(shop, "SELECT response_format FROM llm_endpoints") == [("json_object",)]


def test_per_user_mode_keeps_one_prompt_per_customer(shop: Path) -> None:
    db = open_store(shop)
    with FakeOpenAI() as server:
        report = draft_campaign(db, "pu", config("pu", "email", limit=8), generator="llm",
                                llm=_opts(server, mode="per-user"))
        names = [json.loads(re.search(r"<catalog_data>\s*(.*?)\s*</catalog_data>",
                                      r["messages"][1]["content"], re.S).group(1))["customer"]
                 for r in server.requests]
    made = drafts(shop, "pu")
    assert server.calls == report.drafted == 8 and all(d["passed"] for d in made)
    # the campaign allows the first name (the default), so per-user prompts carry it
    assert all(n.get("first_name") for n in names)
    assert all(d["content"]["html"].startswith("<!DOCTYPE html>") for d in made)
    assert {d["meta"]["mode"] for d in made} == {"per-user"}


def test_repair_feedback_in_blocks_mode_carries_no_personal_data(tmp_path: Path) -> None:
    from pushgen.generate.llm import LLMGenerator
    from pushgen.generate.llm_drafts import LLMDrafter
    from pushgen.messages import CheckResult

    gen = LLMGenerator(open_store(tmp_path / "x.db"), model="m", offline=True)
    drafter = LLMDrafter(gen, "blocks")
    settings = CampaignSettings(name="c", channel="push")
    for name, first in (("Grace Smith", "Grace"), ("何丽", "何丽")):
        ctx = MessageContext(Recipient(7, "u7", name), [ItemFacts("S-1", "Wool Scarf", 20.0)],
                             settings)
        slot = Slot("lead", "S-1", LLMRequest("push.lead|S-1", "t", [], ("title",), {}))
        answer = type("A", (), {"fields": {"title": f"Hi {first}!"}})()
        failed = [CheckResult("guard.x", False, f"copy 'Hi {first}!' mentions "
                                                "grace@example.com and +1 415 555 0199")]
        lines = drafter._feedback(ctx, [(slot, answer)], failed,
                                  {7: ["grace@example.com", "+1 415 555 0199"]})[0]
        text = " ".join(lines)
        assert first not in text and "grace@example.com" not in text and "555" not in text
        assert "{first_name}" in text
