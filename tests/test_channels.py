"""Channel rules: SMS encodings and segments, push limits, email required parts."""

from __future__ import annotations

import pytest

from pushgen.channels import (
    GSM7_BASIC,
    canonical_url,
    check_message,
    clean_value,
    control_chars,
    deep_link_for,
    find_links,
    find_urls,
    one_line,
    parse_link,
    redact_token,
    fit_sms,
    gsm_normalize,
    opt_out_line,
    push_payload_bytes,
    shrink_sms,
    sms_encoding,
    sms_info,
    sms_length,
    sms_segments,
    truncate_chars,
)
from pushgen.messages import CampaignSettings, Message, checks_pass
from pushgen.signing import unsubscribe_url
from _signing_helpers import OWN_SENDER

STOP = "Reply STOP to opt out"


def by_name(checks):
    names = [c.name for c in checks]
    assert len(names) == len(set(names)), names
    return {c.name: c for c in checks}


# --- SMS arithmetic ---------------------------------------------------------------------------


def test_gsm_basic_table_is_exact():
    basic = ("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
             "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
    assert set(basic) == GSM7_BASIC and len(GSM7_BASIC) == 127  # 128 minus ESC
    assert sms_encoding(basic) == "GSM-7"
    assert sms_length(basic) == len(basic)
    for ch in "`áíóúÁç\t":  # look GSM-ish but are not in the table
        assert sms_encoding("a" + ch) == "UCS-2", ch


@pytest.mark.parametrize("ch", list("^{}\\[~]|€\f"))
def test_extension_characters_count_two(ch):
    assert sms_encoding(ch) == "GSM-7"
    assert sms_length(ch) == 2
    assert sms_length("ab" + ch * 3) == 8


def test_extension_char_pushes_over_a_segment():
    text = "a" * 159 + "€"
    assert sms_length(text) == 161
    assert sms_segments(text) == 2
    assert sms_segments("a" * 158 + "€") == 1


def test_gsm_boundaries():
    assert sms_segments("a" * 160) == 1
    assert sms_segments("a" * 161) == 2
    assert sms_segments("a" * 153 * 2) == 2
    assert sms_segments("a" * (153 * 2 + 1)) == 3
    assert sms_segments("") == 0


def test_escape_pair_is_not_split_across_parts():
    # 152 septets + '{' (2) would straddle the 153 boundary, so '{' moves to part 2 and
    # 306 septets need 3 parts, not 2.
    text = "a" * 152 + "{" + "a" * 152
    assert sms_length(text) == 306
    assert sms_segments(text) == 3
    assert sms_segments("a" * 151 + "{" + "a" * 153) == 2  # '{' fits at the end of part 1


def test_ucs2_boundaries_and_emoji():
    assert sms_encoding("Hi 😀") == "UCS-2"
    assert sms_length("😀") == 2
    assert sms_length("Hi 😀") == 5
    assert sms_segments("好" * 70) == 1
    assert sms_segments("好" * 71) == 2
    assert sms_segments("好" * 67 * 2) == 2
    assert sms_segments("好" * (67 * 2 + 1)) == 3
    # 66 units + a surrogate pair cannot share part 1: it moves on.
    assert sms_segments("好" * 66 + "😀" + "好" * 66) == 3  # 134 units, yet 3 parts


def test_chinese_is_ucs2_and_one_unit_per_character():
    info = sms_info("你好，世界")
    assert (info.encoding, info.length, info.segments, info.limit, info.remaining) == \
        ("UCS-2", 5, 1, 70, 65)
    assert "你" in info.non_gsm


def test_sms_info_for_the_ui():
    info = sms_info("a" * 200)
    assert info.to_dict() == {"encoding": "GSM-7", "length": 200, "segments": 2,
                              "limit": 306, "remaining": 106, "non_gsm": ""}


def test_gsm_normalize_keeps_english_copy_in_gsm7():
    text = "Levi’s “classic” – now…"
    assert sms_encoding(text) == "UCS-2"
    assert gsm_normalize(text) == "Levi's \"classic\" - now..."
    assert sms_encoding(gsm_normalize(text)) == "GSM-7"


def test_opt_out_line_by_locale():
    assert opt_out_line("en-US") == STOP
    assert opt_out_line("en-GB") == STOP
    assert opt_out_line("zh-CN") == "回复TD退订"
    assert opt_out_line("zh_TW") == "回复TD退订"
    assert opt_out_line(None) == STOP


# --- SMS truncation ---------------------------------------------------------------------------


def test_fit_sms_keeps_opt_out_and_meets_max_segments():
    body = "Hi Alice, " + " ".join(["wonderful"] * 40)
    for max_segments in (1, 2):
        text = fit_sms(body, STOP, max_segments)
        assert sms_segments(text) == max_segments
        assert text.endswith("\n" + STOP)
        assert text.split("\n")[0].endswith("wonderful...")  # whole words, GSM-7 ellipsis
        assert sms_encoding(text) == "GSM-7"


def test_fit_sms_is_a_no_op_when_it_fits():
    assert fit_sms("Hi Alice", STOP, 1) == "Hi Alice\n" + STOP


def test_fit_sms_keeps_a_trailing_link():
    link = "https://shop.example/p/SKU-1"
    body = "Hi Alice, " + "these lovely boots are back in stock " * 5 + link
    text = fit_sms(body, STOP, 1)
    assert sms_segments(text) == 1
    assert text.endswith(f"... {link}\n{STOP}")


def test_fit_sms_chinese_uses_ucs2_ellipsis():
    body = "王小明，您好！" + "这款越野跑鞋轻盈透气" * 10
    text = fit_sms(body, "回复TD退订", 1)
    assert sms_segments(text) == 1
    assert sms_length(text) <= 70
    assert text.endswith("…\n回复TD退订")


def test_shrink_sms_splits_off_the_opt_out_line():
    text = "Hello " + "x " * 200 + "\n" + STOP
    out = shrink_sms(text, "en-US", 1)
    assert sms_segments(out) == 1 and out.endswith("\n" + STOP)


def test_truncate_chars_word_boundary():
    assert truncate_chars("Ultralight Trail Runner X2000 Pro", 20) == "Ultralight Trail…"
    assert truncate_chars("short", 20) == "short"
    assert len(truncate_chars("x" * 100, 50)) == 50


# --- SMS checks --------------------------------------------------------------------------------


def test_sms_check_messages_a_reviewer_understands():
    settings = CampaignSettings(name="c", channel="sms", sms_max_segments=1)
    text = "好" * 68 + "\n" + "回复TD退订"  # 75 UCS-2 units
    checks = by_name(check_message(Message("sms", {"text": text}), settings, locale="zh-CN"))
    assert checks["sms.segments"].ok is False
    assert checks["sms.segments"].message == \
        "SMS is 2 segments (UCS-2, 75 of 70 characters); the campaign allows 1"
    assert checks["sms.opt_out"].ok is True


def test_sms_passing_checks_are_returned_too():
    settings = CampaignSettings(name="c", channel="sms", sender_name="Trail Co")
    checks = check_message(Message("sms", {"text": "Hi!\n" + STOP}), settings)
    assert checks_pass(checks)
    assert {"sms.text", "sms.segments", "sms.opt_out", "sms.encoding"} <= set(by_name(checks))
    assert all(c.ok for c in checks)


def test_sms_opt_out_missing_or_not_last():
    settings = CampaignSettings(name="c", channel="sms")
    missing = by_name(check_message(Message("sms", {"text": "Hi there"}), settings))
    assert not missing["sms.opt_out"].ok and STOP in missing["sms.opt_out"].message
    not_last = by_name(check_message(Message("sms", {"text": f"{STOP}\nHi"}), settings))
    assert not not_last["sms.opt_out"].ok and "last line" in not_last["sms.opt_out"].message
    zh = by_name(check_message(Message("sms", {"text": "你好\n" + STOP}), settings,
                               locale="zh-CN"))
    assert not zh["sms.opt_out"].ok and "回复TD退订" in zh["sms.opt_out"].message


def test_sms_curly_quote_warns_but_does_not_block():
    settings = CampaignSettings(name="c", channel="sms")
    checks = check_message(Message("sms", {"text": "Levi’s jeans\n" + STOP}), settings)
    enc = by_name(checks)["sms.encoding"]
    assert not enc.ok and enc.severity == "warning" and "’" in enc.message
    assert checks_pass(checks)


def test_empty_sms_and_unknown_fields_fail():
    settings = CampaignSettings(name="c", channel="sms")
    checks = by_name(check_message(Message("sms", {"text": " ", "title": "x"}), settings))
    assert not checks["sms.text"].ok
    assert not checks["message.fields"].ok and "title" in checks["message.fields"].message
    unknown = check_message(Message("fax", {}), settings)
    assert unknown[0].name == "message.channel" and not unknown[0].ok


# --- push ----------------------------------------------------------------------------------------


def push(title="Alice, picked for you", body="Trail Runner X is $48.99.",
         link="shop://item/SKU-1"):
    return Message("push", {"title": title, "body": body, "deep_link": link})


def test_push_limits_in_characters():
    settings = CampaignSettings(name="c", channel="push")
    ok = by_name(check_message(push(title="好" * 50, body="b" * 150), settings))
    assert ok["push.title_length"].ok and ok["push.body_length"].ok
    bad = by_name(check_message(push(title="t" * 51, body="b" * 151), settings))
    assert not bad["push.title_length"].ok and "51 characters" in bad["push.title_length"].message
    assert not bad["push.body_length"].ok and "allows 150" in bad["push.body_length"].message


def test_push_payload_4kb():
    settings = CampaignSettings(name="c", channel="push", push_body_max=10_000)
    small = push(body="é" * 1000)
    assert push_payload_bytes(small) < 4096
    assert by_name(check_message(small, settings))["push.payload_size"].ok
    big = push(body="好" * 1400)  # 3 bytes each in UTF-8
    assert push_payload_bytes(big) > 4096
    check = by_name(check_message(big, settings))["push.payload_size"]
    assert not check.ok and "4096" in check.message


def test_push_deep_link_required():
    settings = CampaignSettings(name="c", channel="push")
    assert not by_name(check_message(push(link=""), settings))["push.deep_link"].ok
    assert not by_name(check_message(push(link="other://x"), settings))["push.deep_link"].ok
    assert by_name(check_message(push(), settings))["push.deep_link"].ok
    assert deep_link_for(settings, "SKU-9") == "shop://item/SKU-9"


# --- email ---------------------------------------------------------------------------------------

SETTINGS = CampaignSettings(name="spring", channel="email", **OWN_SENDER)
TOKEN = "1-1-" + "ab" * 32
UNSUB = unsubscribe_url(SETTINGS, TOKEN)
ADDRESS = SETTINGS.postal_address


def email(subject="Alice, picked for you", preheader="Three picks chosen for you this week, "
          "starting with Trail Runner X.", html=None, text=None):
    html = html if html is not None else (
        f'<p>Hi</p><a href="{UNSUB}">Unsubscribe</a><p>{ADDRESS}</p>')
    text = text if text is not None else f"Hi\nUnsubscribe: {UNSUB}\n{ADDRESS}"
    return Message("email", {"subject": subject, "preheader": preheader, "html": html,
                             "text": text})


def test_email_complete_passes():
    checks = check_message(email(), SETTINGS, unsubscribe_url=UNSUB)
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
    # Without the exact link, any link of the campaign's pattern with a token passes.
    assert all(c.ok for c in check_message(email(), SETTINGS))


def test_email_subject_length_levels():
    def subject_check(n):
        return by_name(check_message(email(subject="s" * n), SETTINGS))["email.subject"]
    assert subject_check(50).ok
    warn = subject_check(51)
    assert not warn.ok and warn.severity == "warning"
    assert subject_check(100).severity == "warning"
    err = subject_check(101)
    assert not err.ok and err.severity == "error"
    empty = by_name(check_message(email(subject=""), SETTINGS))["email.subject"]
    assert not empty.ok and empty.severity == "error"


def test_email_preheader():
    short = by_name(check_message(email(preheader="Hi"), SETTINGS))["email.preheader"]
    assert not short.ok and short.severity == "warning"
    empty = by_name(check_message(email(preheader=""), SETTINGS))["email.preheader"]
    assert not empty.ok and empty.severity == "error"


def test_email_missing_unsubscribe_in_text():
    msg = email(text=f"Hi\n{ADDRESS}")
    check = by_name(check_message(msg, SETTINGS, unsubscribe_url=UNSUB))["email.unsubscribe"]
    assert not check.ok and "text part" in check.message
    check = by_name(check_message(msg, SETTINGS))["email.unsubscribe"]
    assert not check.ok and "text part" in check.message


def test_email_unfilled_or_malformed_unsubscribe():
    raw = SETTINGS.unsubscribe_url  # '{token}' never filled in
    msg = email(html=f'<a href="{raw}">u</a> {ADDRESS}', text=f"{raw}\n{ADDRESS}")
    assert not by_name(check_message(msg, SETTINGS))["email.unsubscribe"].ok
    bad_cfg = CampaignSettings(name="c", unsubscribe_url="shop.example/unsub?t={token}")
    url = unsubscribe_url(bad_cfg, TOKEN)
    msg = email(html=f"{url} {ADDRESS}", text=f"{url}\n{ADDRESS}")
    check = by_name(check_message(msg, bad_cfg, unsubscribe_url=url))["email.unsubscribe"]
    assert not check.ok and "http" in check.message


def test_email_unsubscribe_html_escaped_ampersand():
    settings = CampaignSettings(name="c", unsubscribe_url="https://shop.example/u?x=1&t={token}")
    url = unsubscribe_url(settings, TOKEN)
    html = f'<a href="{url.replace("&", "&amp;")}">u</a> {ADDRESS}'
    msg = email(html=html, text=f"{url}\n{ADDRESS}")
    assert by_name(check_message(msg, settings, unsubscribe_url=url))["email.unsubscribe"].ok


def test_email_missing_postal_address_and_parts():
    msg = email(html=f'<a href="{UNSUB}">u</a>')
    check = by_name(check_message(msg, SETTINGS))["email.postal_address"]
    assert not check.ok and "HTML part" in check.message
    no_text = by_name(check_message(email(text=""), SETTINGS))
    assert not no_text["email.text"].ok


def test_find_urls():
    text = "见 https://shop.example/p/1，快来 or shop://item/SKU-1. Visit www.shop.example!"
    assert find_urls(text) == ["https://shop.example/p/1", "shop://item/SKU-1",
                               "www.shop.example"]


def test_fit_sms_adds_no_second_ellipsis_after_a_cut_title():
    # The price goes; the cut lands right after the renderer's 'West…'.
    body = "Bartholomew-Maximilian，为您精选：\nWest… $38.99 https://shop.example/p/S1"
    text = fit_sms(body, "回复TD退订", 1)
    assert text == "Bartholomew-Maximilian，为您精选：\nWest… https://shop.example/p/S1\n回复TD退订"


# --- control characters (issue 9, finding 4) ------------------------------------------------


@pytest.mark.parametrize("field, value", [
    ("subject", "Hi\r\nX-Evil: 1"), ("subject", "Hi\nBcc: x@evil.example"),
    ("preheader", "picks\rfor you"), ("subject", "Hi\x00there"),
    ("subject", "Sale \u202egnp.exe"), ("subject", "Hi\u2028there"),
])
def test_line_breaks_and_controls_in_one_line_email_fields_fail(field, value):
    msg = email(**{field: value})
    check = by_name(check_message(msg, SETTINGS))["message.control_chars"]
    assert not check.ok and check.severity == "error" and field in check.message
    assert not checks_pass(check_message(msg, SETTINGS))


def test_push_title_and_deep_link_with_line_breaks_fail():
    settings = CampaignSettings(name="c", channel="push")
    for msg in (push(title="Hi\r\nthere"), push(body="a\tb"),
                push(link="shop://item/SKU-1\r\nX: y")):
        assert not by_name(check_message(msg, settings))["message.control_chars"].ok
    assert by_name(check_message(push(), settings))["message.control_chars"].ok


def test_multiline_fields_keep_their_line_breaks_but_no_other_controls():
    settings = CampaignSettings(name="c", channel="sms", sender_name="Trail Co")
    ok = check_message(Message("sms", {"text": "Hi\nthere\n" + STOP}), settings)
    assert by_name(ok)["message.control_chars"].ok
    bad = check_message(Message("sms", {"text": "Hi\x1b[2Jthere\n" + STOP}), settings)
    assert "ESC" in by_name(bad)["message.control_chars"].message
    html = email(html=f'<p>a\r\n\tb</p><a href="{UNSUB}">u</a><p>{ADDRESS}</p>')
    assert by_name(check_message(html, SETTINGS))["message.control_chars"].ok


def test_control_char_helpers():
    assert control_chars("plain text") == []
    assert control_chars("a\r\nb", "\n") == ["\r"]
    assert one_line("Eve Smith\r\nX-Evil: 2") == "Eve Smith X-Evil: 2"
    assert clean_value("Eve\r\nSmith\u202e\x00") == "Eve\nSmith"
    assert clean_value("Emoji 👩\u200d💻 stays") == "Emoji 👩\u200d💻 stays"


@pytest.mark.parametrize("channel,fields,bad", [
    ("sms", {"text": f"Deal now <script>alert(1)</script>\n{STOP}"}, "text"),
    ("push", {"title": "Hi", "body": "Sale <img src=x onerror=alert(1)>", "deep_link": "x"},
     "body"),
    ("push", {"title": "<!-- hidden --> Hi", "body": "Sale", "deep_link": "x"}, "title"),
    ("email", {"subject": "</b>Sale", "preheader": "", "text": "t", "html": "<p>ok</p>"},
     "subject"),
])
def test_markup_in_plain_text_fields_fails(channel, fields, bad):
    checks = by_name(check_message(Message(channel, fields),
                                   CampaignSettings(name="c", channel=channel)))
    assert not checks["message.markup"].ok and f"{bad} has" in checks["message.markup"].message


def test_plain_text_with_angle_brackets_and_email_html_pass():
    sms = by_name(check_message(Message("sms", {"text": f"We <3 you, 2<5 days left\n{STOP}"}),
                                CampaignSettings(name="c", channel="sms")))
    assert sms["message.markup"].ok
    email = by_name(check_message(Message("email", {"subject": "Hi", "preheader": "",
                                                    "text": "t", "html": "<p>ok</p>"}),
                                  CampaignSettings(name="c", channel="email")))
    assert email["message.markup"].ok


@pytest.mark.parametrize("channel,fields,bad", [
    ("sms", {"text": f"-20% on trail shoes today\n{STOP}"}, "text starts with '-'"),
    ("push", {"title": "@Lee, new picks", "body": "b", "deep_link": "shop://item/1"},
     "title starts with '@'"),
    ("email", {"subject": " =HYPERLINK(1)", "preheader": "", "text": "t", "html": "<p>x</p>"},
     "subject starts with '='"),
    ("email", {"subject": "Hi", "preheader": "+1 new arrival", "text": "t", "html": "<p>x</p>"},
     "preheader starts with '+'"),
])
def test_copy_starting_like_a_spreadsheet_formula_fails(channel, fields, bad):
    """A CSV export would prefix the cell with ' and the platform would send it."""
    checks = by_name(check_message(Message(channel, fields),
                                   CampaignSettings(name="c", channel=channel)))
    rule = checks["message.formula_start"]
    assert not rule.ok and rule.severity == "warning" and bad in rule.message


def test_formula_characters_inside_copy_pass():
    sms = by_name(check_message(Message("sms", {"text": f"Save 20% - today only @ Lima\n{STOP}"}),
                                CampaignSettings(name="c", channel="sms")))
    assert sms["message.formula_start"].ok


# --- links: one reader, one way to build them (findings 2 and 7) ------------------------------


def test_deep_links_and_urls_are_built_percent_encoded():
    settings = CampaignSettings(name="c", channel="push")
    assert deep_link_for(settings, "brown bread") == "shop://item/brown%20bread"
    assert deep_link_for(settings, "绿茶/1") == "shop://item/%E7%BB%BF%E8%8C%B6%2F1"
    assert canonical_url("https://Shop.example/p/brown bread") == \
        "https://shop.example/p/brown%20bread"
    # encoding twice changes nothing; an existing escape is kept, a stray % is escaped
    once = canonical_url("https://shop.example/p/绿茶 50%?q=a b&x=%20")
    assert once == canonical_url(once) == \
        "https://shop.example/p/%E7%BB%BF%E8%8C%B6%2050%25?q=a%20b&x=%20"


def test_encoded_deep_link_is_read_whole():
    link = deep_link_for(CampaignSettings(name="c"), "brown bread")
    assert find_urls(f"Tap {link} now") == [link]
    assert by_name(check_message(push(link=link), CampaignSettings(name="c", channel="push")))[
        "push.deep_link"].ok
    spaced = by_name(check_message(push(link="shop://item/brown bread"),
                                   CampaignSettings(name="c", channel="push")))["push.deep_link"]
    assert not spaced.ok and "%20" in spaced.message


@pytest.mark.parametrize("text, kind, host", [
    ("More at evil-shop.example/deal now.", "bare", "evil-shop.example"),
    ("see deals.shop today", "bare", "deals.shop"),
    ("go to //evil.example/x", "protocol-relative", "evil.example"),
    ("click javascript:alert(1)", "scheme", ""),
    ("data:text/html;base64,PHNjcmlwdD4=", "scheme", ""),
    ("mail me: mailto:x@evil.example", "scheme", ""),
    ("Visit www.evil.example!", "www", "www.evil.example"),
    ("https://shop.example@evil.example/x", "url", "evil.example"),
    ("xn--shp-ted.example/x", "bare", "xn--shp-ted.example"),
    ("shоp.example/x", "bare", "xn--shp-ted.example"),          # Cyrillic о
    ("见 https://shop.example/p/1，快来", "url", "shop.example"),
])
def test_find_links_reads_every_form_a_reader_could_follow(text, kind, host):
    (link,) = find_links(text)
    assert (link.kind, link.host) == (kind, host)


def test_find_links_skips_words_that_only_look_like_domains():
    assert find_links("Node.js handbook, e.g. U.S.A. sizes, v2.0, 3.5mm, Dr.Jart+, "
                      "a@b.example, 12.99") == []


@pytest.mark.parametrize("raw, scheme, host", [
    ("jav\tascript:alert(1)", "javascript", ""),        # browsers drop tabs and newlines
    ("  JAVASCRIPT:alert(1)", "javascript", ""),
    ("https:\\\\evil.example/x", "https", "evil.example"),
    ("https:evil.example", "https", "evil.example"),
    ("/\\evil.example", "https", "evil.example"),
    ("HTTPS://SHOP.EXAMPLE./p", "https", "shop.example"),
    ("https://%73hop.example/", "https", "shop.example"),
])
def test_parse_link_reads_links_as_a_browser_does(raw, scheme, host):
    link = parse_link(raw)
    assert (link.scheme, link.host) == (scheme, host)


def test_redact_token_keeps_only_a_prefix_of_the_signature():
    url = unsubscribe_url(SETTINGS, "3-17-" + "ab" * 32)
    assert redact_token(f"link {url} missing") == \
        f"link {url[:-64]}abababab… missing"


def test_unsubscribe_check_message_never_carries_the_full_token():
    msg = email(text=f"Hi\n{ADDRESS}")
    check = by_name(check_message(msg, SETTINGS, unsubscribe_url=UNSUB))["email.unsubscribe"]
    assert not check.ok and TOKEN[4:] not in check.message and TOKEN[4:12] in check.message


# --- the demo sender (finding 12) --------------------------------------------------------------


def test_demo_sender_is_a_warning_on_every_email_and_sms_draft():
    demo = CampaignSettings(name="c", channel="email")
    check = by_name(check_message(email(), demo))["campaign.sender"]
    assert not check.ok and check.severity == "warning"
    assert "--allow-demo-sender" in check.message and "postal address" in check.message
    assert by_name(check_message(email(), SETTINGS))["campaign.sender"].ok
    sms_demo = by_name(check_message(Message("sms", {"text": "Hi\n" + STOP}),
                                     CampaignSettings(name="c", channel="sms")))
    assert not sms_demo["campaign.sender"].ok
