"""Jinja templates: bundled defaults per channel x locale, user overrides, sandbox, limits."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from pushgen.channels import sms_encoding, sms_info
from pushgen.errors import PushgenError
from _signing_helpers import OWN_SENDER, unsub_for
from pushgen.generate.guards import Guard, check_draft
from pushgen.generate.templates import (
    format_money,
    get_renderer,
    list_templates,
    locale_candidates,
    render,
)
from pushgen.messages import (
    CHANNEL_FIELDS,
    CampaignSettings,
    ItemFacts,
    MessageContext,
    Recipient,
    checks_pass,
)


def make_items(currency: str = "USD") -> list[ItemFacts]:
    return [
        ItemFacts("SKU-1", "Trail Runner X", 69.99, currency, 48.99, category="shoes",
                  url="https://shop.example/p/SKU-1",
                  image_url="https://cdn.shop.example/SKU-1.jpg",
                  attributes={"title_zh": "越野跑鞋X"}, score=0.9, reason="bought running gear"),
        ItemFacts("SKU-2", "Merino Wool Socks", 12.0, currency,
                  url="https://shop.example/p/SKU-2", score=0.7),
        ItemFacts("SKU-3", "Alpine Down Jacket", 1299.5, currency, 999.0,
                  url="https://shop.example/p/SKU-3", attributes={"title_zh": "高山羽绒服"}),
    ]


CATALOG = {"SKU-1": ["Trail Runner X", "越野跑鞋X"], "SKU-2": "Merino Wool Socks",
           "SKU-3": ["Alpine Down Jacket", "高山羽绒服"], "SKU-4": "Canvas Weekender Bag"}
NAMES = {"en-US": "Alice Smith", "zh-CN": "王小明"}


def context(channel: str, locale: str = "en-US", name: str | None = "default",
            currency: str = "USD", **settings) -> MessageContext:
    who = NAMES[locale] if name == "default" else name
    cs = CampaignSettings(name="spring", channel=channel, **{**OWN_SENDER, **settings})
    return MessageContext(Recipient(1, "u1", who, locale), make_items(currency), cs,
                          unsubscribe_url=unsub_for(cs, 1, "u1"))


@pytest.mark.parametrize("locale", ["en-US", "zh-CN"])
@pytest.mark.parametrize("channel", ["sms", "push", "email"])
def test_defaults_render_and_pass_every_check(channel, locale):
    ctx = context(channel, locale, currency="CNY" if locale == "zh-CN" else "USD")
    rendered = render(ctx)
    assert rendered.template_name == f"{channel}/default.{locale}"
    assert len(rendered.template_version) == 12
    msg = rendered.message
    assert msg.channel == channel and set(msg.fields) == set(CHANNEL_FIELDS[channel])
    assert all(msg.fields[f].strip() for f in CHANNEL_FIELDS[channel])
    checks = check_draft(msg, ctx, catalog_titles=CATALOG)
    failed = [c for c in checks if not c.ok]
    assert failed == [], failed
    assert checks_pass(checks)


def test_version_is_the_source_hash():
    source = Path(__file__).parents[1].joinpath("templates/sms/default.en-US.j2").read_bytes()
    assert render(context("sms")).template_version == hashlib.sha256(source).hexdigest()[:12]


def test_chinese_templates_use_chinese_titles_and_yuan():
    sms = render(context("sms", "zh-CN", currency="CNY")).message.get("text")
    assert "王小明" in sms and "越野跑鞋X" in sms and "¥48.99" in sms and "立省30%" in sms
    assert sms.endswith("\n回复TD退订")
    email = render(context("email", "zh-CN", currency="CNY")).message
    assert "越野跑鞋X" in email.get("subject")
    assert "高山羽绒服" in email.get("html") and "¥1,299.50" in email.get("text")
    assert "退订" in email.get("text")


def test_english_sms_content():
    text = render(context("sms")).message.get("text")
    assert text.startswith("Trail Co Outdoors: Hi Alice, picked for you:")
    assert "Trail Runner X $48.99 (30% off) https://shop.example/p/SKU-1" in text
    assert text.endswith("\nReply STOP to opt out")
    assert sms_info(text).segments == 1


def test_email_content_has_items_unsubscribe_and_address():
    ctx = context("email")
    msg = render(ctx).message
    unsub = ctx.unsubscribe_url
    html, text = msg.get("html"), msg.get("text")
    for part in (html, text):
        assert unsub in part and ctx.settings.postal_address in part
        assert "Merino Wool Socks" in part and "$1,299.50" in part
    assert '<img src="https://cdn.shop.example/SKU-1.jpg"' in html
    assert "<s" in html and "$69.99" in html  # original price struck through
    assert len(msg.get("subject")) <= 50


def test_greeting_fallback_without_a_name():
    assert "Hi there," in render(context("sms", name=None)).message.get("text")
    assert "亲爱的顾客" in render(context("sms", "zh-CN", name=None)).message.get("text")


def test_push_deep_link_and_limits():
    ctx = context("push", push_title_max=20, push_body_max=30)
    msg = render(ctx).message
    assert msg.get("deep_link") == "shop://item/SKU-1"
    assert len(msg.get("title")) <= 20 and msg.get("title").endswith("…")
    assert len(msg.get("body")) <= 30


def test_sms_shrinks_to_max_segments_keeping_link_and_opt_out():
    ctx = context("sms", sms_max_segments=1)
    for it in ctx.items:
        it.title = "Ultralight Waterproof Trail Runner With Extra Cushioning " + it.sku
    text = render(ctx).message.get("text")
    assert sms_info(text).segments == 1
    assert text.endswith("\nReply STOP to opt out")
    assert "https://shop.example/p/SKU-1" in text  # the link survives the cut
    assert sms_encoding(text) == "GSM-7"
    assert all(c.ok for c in check_draft(render(ctx).message, ctx) if c.severity == "error")


def test_sms_two_segments_show_two_items():
    text = render(context("sms", sms_max_segments=2)).message.get("text")
    assert "SKU-1" in text and "SKU-2" in text and sms_info(text).segments <= 2


def test_chinese_sms_shrinks_to_one_segment():
    ctx = context("sms", "zh-CN", sms_max_segments=1)
    ctx.items[0].attributes["title_zh"] = "超轻防水透气越野跑鞋男款加厚缓震大底四季通用款式"
    text = render(ctx).message.get("text")
    info = sms_info(text)
    assert info.encoding == "UCS-2" and info.segments == 1
    assert text.endswith("\n回复TD退订") and "https://shop.example/p/SKU-1" in text


def test_curly_apostrophe_in_title_keeps_english_sms_gsm7():
    ctx = context("sms")
    ctx.items[0].title = "Levi’s 501 Jeans"
    text = render(ctx).message.get("text")
    assert "Levi's 501 Jeans" in text and sms_encoding(text) == "GSM-7"


def test_html_autoescape_only_in_the_html_part():
    ctx = context("email")
    ctx.items[0].title = "Tom & Jerry <Deluxe>"
    msg = render(ctx).message
    assert "Tom &amp; Jerry &lt;Deluxe&gt;" in msg.get("html")
    assert "Tom & Jerry <Deluxe>" in msg.get("text")
    assert "Tom & Jerry <Deluxe>" in msg.get("subject")


def test_money_filter():
    assert format_money(1234.5, "USD", "en-US") == "$1,234.50"
    assert format_money(1234.5, "CNY", "zh-CN") == "¥1,234.50"
    assert format_money(9.99, "EUR", "en-US") == "€9.99"
    assert format_money(1500, "JPY", "en-US") == "¥1,500"
    assert format_money(12, "CHF", "en-US") == "CHF 12.00"
    assert format_money(None, "USD") == ""


def test_locale_candidates():
    assert locale_candidates("zh-CN") == ["zh-CN", "zh", "en-US"]
    assert locale_candidates("zh_TW") == ["zh-TW", "zh", "en-US"]
    assert locale_candidates("en-US") == ["en-US", "en"]


# --- user templates ----------------------------------------------------------------------------


def write(folder: Path, rel: str, text: str) -> Path:
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_user_folder_overrides_by_name_and_falls_back_by_locale(tmp_path):
    write(tmp_path, "sms/default.en-US.j2", "Yo {{ recipient|first_name }}!\n{{ opt_out }}")
    write(tmp_path, "sms/promo.zh.j2", "{{ item|item_title }} {{ item.current_price|money"
                                       "(item.currency) }}\n{{ opt_out }}")
    out = render(context("sms"), template_dirs=[tmp_path])
    assert out.message.get("text") == "Yo Alice!\nReply STOP to opt out"
    # zh-CN has no user file named default: the bundled zh-CN one is used.
    assert render(context("sms", "zh-CN"), template_dirs=[tmp_path]).template_name == \
        "sms/default.zh-CN"
    promo = render(context("sms", "zh-CN"), template="promo", template_dirs=[tmp_path])
    assert promo.template_name == "sms/promo.zh"
    assert promo.message.get("text") == "越野跑鞋X $48.99\n回复TD退订"
    fr = render(context("sms", "fr-FR", name="Zoé"), template_dirs=[tmp_path])
    assert fr.template_name == "sms/default.en-US"
    names = {t.name: t for t in list_templates([tmp_path])}
    assert names["sms/default.en-US"].origin == str(tmp_path)
    assert names["sms/promo.zh"].locale == "zh"
    assert names["email/default.zh-CN"].origin == "bundled"


def test_list_bundled_templates():
    names = {t.name for t in list_templates()}
    assert {f"{c}/default.{loc}" for c in ("sms", "push", "email")
            for loc in ("en-US", "zh-CN")} <= names


def test_typo_in_user_template_names_file_and_line(tmp_path):
    path = write(tmp_path, "sms/typo.en-US.j2", "Hi {{ recipient|first_name }}\n"
                                                "{{ itme.title }}\n{{ opt_out }}")
    with pytest.raises(PushgenError) as err:
        render(context("sms"), template="typo", template_dirs=[tmp_path])
    message = str(err.value)
    assert f"{path}:2" in message and "'itme' is undefined" in message


def test_sandbox_blocks_internals(tmp_path):
    write(tmp_path, "sms/evil.en-US.j2", "{{ ''.__class__.__mro__ }}\n{{ opt_out }}")
    write(tmp_path, "sms/evil2.en-US.j2", "{{ item.to_dict.__globals__ }}")
    write(tmp_path, "sms/evil3.en-US.j2", "{{ item.title }} {{ item.to_dict.__code__ }}")
    for _ in range(2):       # the second time the sandbox answers from its remembered verdicts
        for name in ("evil", "evil2", "evil3"):
            with pytest.raises(PushgenError, match="unsafe"):
                render(context("sms"), template=name, template_dirs=[tmp_path])


def test_syntax_error_and_missing_template(tmp_path):
    write(tmp_path, "sms/broken.en-US.j2", "Hi\n{% if %}\n")
    with pytest.raises(PushgenError, match=r"broken\.en-US\.j2:2: template syntax error"):
        render(context("sms"), template="broken", template_dirs=[tmp_path])
    with pytest.raises(PushgenError, match=r"no template 'sms/nope'.*sms/nope\.en-US\.j2"):
        render(context("sms"), template="nope")
    with pytest.raises(PushgenError, match="does not exist"):
        render(context("sms"), template_dirs=[tmp_path / "missing"])


def test_no_items_is_a_clear_error():
    ctx = context("sms")
    ctx.items = []
    with pytest.raises(PushgenError, match="u1: no recommended items"):
        render(ctx)


def test_templates_compile_once():
    renderer = get_renderer()
    assert get_renderer() is renderer
    first = renderer.resolve("sms", "default", "en-US")
    render(context("sms"))
    assert renderer.resolve("sms", "default", "en-US") is first


def test_render_and_check_are_fast():
    """Budget: 100,000 drafts at >= 2,000/s; render + check_draft must be far below 500 us."""
    guard = Guard(CATALOG)
    contexts = [context("sms") for _ in range(300)]
    render(contexts[0])
    start = time.process_time()
    for ctx in contexts:
        guard.check(render(ctx).message, ctx)
    per_draft = (time.process_time() - start) / len(contexts)
    assert per_draft < 0.002, f"{per_draft * 1e6:.0f} us per SMS draft"


def _mention_check(msg, ctx):
    return {c.name: c for c in Guard().check(msg, ctx)}["guard.mentions_item"]


@pytest.mark.parametrize("locale", ["en-US", "zh-CN"])
@pytest.mark.parametrize("url", ["https://shop.example/p/SKU-1", None])
def test_sms_shrinking_never_drops_the_only_item(locale, url):
    # A non-GSM sender name makes even the English SMS UCS-2 (70 characters): greeting,
    # item line and opt-out cannot all fit, so the greeting goes, never the item.
    ctx = context("sms", locale, name="Łukasz Bartholomew-Maximilian", sms_max_segments=1,
                  sender_name="Łódź Very Long Sender Name Emporium Incorporated")
    ctx.items[0].title = "West Lake Garden Organic Premium Jasmine Pearl Green Tea Gift Box"
    ctx.items[0].attributes["title_zh"] = "西湖龙井有机手工茉莉龙珠绿茶礼盒装豪华版特级精选"
    ctx.items[0].url = url
    msg = render(ctx).message
    text = msg.get("text")
    assert sms_info(text).segments == 1
    assert text.endswith("\nReply STOP to opt out" if locale == "en-US" else "\n回复TD退订")
    assert ("West Lake" if locale == "en-US" else "西湖龙井") in text
    if url:
        assert url in text
    assert _mention_check(msg, ctx).ok
    assert all(c.ok for c in check_draft(msg, ctx, catalog_titles=CATALOG)
               if c.severity == "error")


def test_long_titles_in_every_default_template_still_name_the_item():
    for locale in ("en-US", "zh-CN"):
        for channel in ("sms", "push", "email"):
            for segments in (1, 2):
                ctx = context(channel, locale, sms_max_segments=segments, push_title_max=20,
                              push_body_max=30)
                for it in ctx.items:
                    it.title = "Ultralight Waterproof Trail Runner With Extra Cushioning " + it.sku
                    it.attributes = {"title_zh": "Trail Co 超轻防水透气越野跑鞋男款加厚缓震大底"}
                msg = render(ctx).message
                failed = [c for c in check_draft(msg, ctx) if not c.ok and c.severity == "error"]
                assert failed == [], (locale, channel, segments, msg.fields, failed)


def test_chinese_sms_cuts_the_latin_brand_not_the_chinese_words():
    ctx = context("sms", "zh-CN", sms_max_segments=1)
    ctx.items[0].attributes["title_zh"] = "West Lake Garden 有机手工茉莉龙珠绿茶礼盒装豪华版特级精选"
    text = render(ctx).message.get("text")
    assert "有机手工" in text and "West Lake" not in text
    assert sms_info(text).segments == 1 and "https://shop.example/p/SKU-1" in text
    assert _mention_check(render(ctx).message, ctx).ok


# --- hostile data in templates (issue 9, findings 4, 7, 11) ------------------------------------


def _failed(ctx, rendered, catalog=None):
    checks = check_draft(rendered.message, ctx, catalog_titles=catalog or CATALOG)
    return [c for c in checks if not c.ok and c.severity == "error"]


@pytest.mark.parametrize("channel", ["sms", "push", "email"])
def test_template_syntax_from_the_catalog_is_neutralised(channel):
    ctx = context(channel)
    ctx.items[0].title = "{{ 7*7 }} Trail {% for x in y %}Runner *|FNAME|*"
    rendered = render(ctx)
    fields = rendered.message.fields
    joined = "\n".join(fields.values())
    for live in ("{{", "{%", "*|", "|*", "%}", "}}"):
        assert live not in joined, (live, joined)
    assert "{ { 7*7 } } Trail" in joined
    catalog = {**CATALOG, "SKU-1": ctx.items[0].title}
    assert _failed(ctx, rendered, catalog) == []


@pytest.mark.parametrize("channel", ["sms", "push", "email"])
def test_line_breaks_in_a_customer_name_never_reach_one_line_fields(channel):
    ctx = context(channel, name="Eve\r\nX-Evil: 2\u202e")
    rendered = render(ctx)
    for field, value in rendered.message.fields.items():
        if field in ("subject", "preheader", "title", "body", "deep_link"):
            assert "\r" not in value and "\n" not in value and "\u202e" not in value
    assert _failed(ctx, rendered) == []


@pytest.mark.parametrize("sku, encoded", [("brown bread", "brown%20bread"),
                                          ("绿茶 500g", "%E7%BB%BF%E8%8C%B6%20500g")])
@pytest.mark.parametrize("channel", ["sms", "push", "email"])
def test_skus_and_urls_with_spaces_or_chinese_pass_every_check(channel, sku, encoded):
    ctx = context(channel)
    ctx.items[0].sku = sku
    ctx.items[0].url = f"https://shop.example/p/{sku}"
    rendered = render(ctx)
    joined = "\n".join(rendered.message.fields.values())
    if channel == "push":
        assert rendered.message.fields["deep_link"] == f"shop://item/{encoded}"
    else:
        assert f"https://shop.example/p/{encoded}" in joined
    catalog = {**CATALOG, sku: CATALOG["SKU-1"]}
    catalog.pop("SKU-1")
    assert _failed(ctx, rendered, catalog) == []
