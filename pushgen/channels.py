"""Channel rules for SMS, app push and email, defined once (stdlib only).

Every generator (templates, LLM), every review edit and the export call ``check_message``;
the SMS arithmetic (``sms_encoding`` / ``sms_length`` / ``sms_segments``) and the
truncation helper ``fit_sms`` live here so the UI, the renderer and the checks agree.
"""

from __future__ import annotations

import html as _html
import json
import re
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from .messages import CHANNEL_FIELDS, CampaignSettings, CheckResult, Message

# --- SMS ---------------------------------------------------------------------------------

# GSM 03.38 basic character set (3GPP TS 23.038 §6.2.1), row by row; 0x1B (ESC) is left out
# because it only introduces the extension table below.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
# Extension table: each is sent as ESC + char, so it costs two septets.
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")
GSM7_ALL = GSM7_BASIC | GSM7_EXTENSION

GSM7, UCS2 = "GSM-7", "UCS-2"
# (single message, per part of a concatenated message): the user data header of a
# concatenated SMS takes 6 octets, leaving 153 septets or 67 UTF-16 units.
SMS_LIMITS = {GSM7: (160, 153), UCS2: (70, 67)}

# Typographic characters that silently switch an English SMS to UCS-2 (70 instead of 160),
# with their GSM-7 replacement. ``gsm_normalize`` applies them.
GSM7_REPLACEMENTS = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2032": "'", "\u2033": '"',
    "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u2010": "-", "\u2011": "-",
    "\u00a0": " ", "\u2009": " ", "\u202f": " ", "\u2026": "...", "\u00b4": "'", "`": "'",
}

OPT_OUT_LINES = {"en": "Reply STOP to opt out", "zh": "回复TD退订"}


_NON_GSM7_RE = re.compile("[^" + re.escape("".join(sorted(GSM7_ALL))) + "]")


def sms_encoding(text: str) -> str:
    """'GSM-7' when every character is in the GSM 03.38 basic or extension table, else 'UCS-2'."""
    if text.isascii() and text.isprintable() and "`" not in text:
        return GSM7  # printable ASCII is all GSM-7 except the backtick
    return UCS2 if _NON_GSM7_RE.search(text) else GSM7


def _units(text: str, encoding: str) -> int:
    if encoding == GSM7:
        chars = set(text)
        return len(text) + sum(text.count(c) for c in chars & GSM7_EXTENSION)
    if text.isascii():
        return len(text)
    return len(text.encode("utf-16-le")) // 2


def sms_length(text: str) -> int:
    """Length as the network counts it: GSM-7 septets (extension chars 2) or UTF-16 units."""
    return _units(text, sms_encoding(text))


def _packed_parts(text: str, encoding: str, per_part: int) -> int:
    """Parts of a concatenated SMS: an escape pair or a surrogate pair is never split."""
    parts, used = 1, 0
    for ch in text:
        if encoding == GSM7:
            cost = 2 if ch in GSM7_EXTENSION else 1
        else:
            cost = 2 if ord(ch) > 0xFFFF else 1
        if used + cost > per_part:
            parts, used = parts + 1, 0
        used += cost
    return parts


def sms_segments(text: str) -> int:
    """Number of SMS parts the text is sent as (0 for an empty text)."""
    encoding = sms_encoding(text)
    return _segments(text, encoding, _units(text, encoding))


def _segments(text: str, encoding: str, length: int) -> int:
    if not text:
        return 0
    single, per_part = SMS_LIMITS[encoding]
    if length <= single:
        return 1
    if length == len(text):  # no escape or surrogate pairs: plain division
        return -(-length // per_part)
    return _packed_parts(text, encoding, per_part)


@dataclass
class SmsInfo:
    """What the UI shows next to an SMS: encoding, length, parts and room left."""

    encoding: str
    length: int
    segments: int
    limit: int          # capacity of `segments` parts (160, 306, 70, 134, ...)
    remaining: int      # units left before one more part is needed
    non_gsm: str        # the characters that force UCS-2 ('' for GSM-7)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sms_capacity(encoding: str, segments: int) -> int:
    """Units that fit into ``segments`` parts of the given encoding."""
    single, per_part = SMS_LIMITS[encoding]
    return single if segments <= 1 else per_part * segments


def sms_info(text: str) -> SmsInfo:
    """Encoding, length, segments and remaining room of ``text`` for a live counter."""
    encoding = sms_encoding(text)
    length = _units(text, encoding)
    segments = _segments(text, encoding, length)
    limit = sms_capacity(encoding, max(segments, 1))
    non_gsm = "" if encoding == GSM7 else "".join(sorted(set(text) - GSM7_ALL))
    return SmsInfo(encoding, length, segments, limit, max(limit - length, 0), non_gsm)


def gsm_normalize(text: str) -> str:
    """Replace curly quotes, dashes, NBSP and '…' by GSM-7 look-alikes (keeps 160 chars/part)."""
    if text.isascii() and "`" not in text:
        return text
    return "".join(GSM7_REPLACEMENTS.get(ch, ch) for ch in text)


_LANGS: dict[str | None, str] = {}


def _lang(locale: str | None) -> str:
    """'zh-CN' / 'zh_CN' / 'zh' -> 'zh' (cached: called for every draft)."""
    lang = _LANGS.get(locale)
    if lang is None:
        lang = _LANGS[locale] = (locale or "en-US").replace("_", "-").split("-")[0].lower()
    return lang


def opt_out_line(locale: str | None = "en-US") -> str:
    """The opt-out line marketing SMS must end with, in the recipient's language."""
    return OPT_OUT_LINES.get(_lang(locale), OPT_OUT_LINES["en"])


def split_opt_out(text: str, locale: str | None = "en-US") -> tuple[str, str]:
    """Split an SMS into (body, opt-out line); the line is '' when the text does not end with it."""
    line = opt_out_line(locale)
    stripped = text.rstrip()
    if stripped.endswith(line):
        return stripped[: -len(line)].rstrip(), line
    return text, ""


# A URL ends at whitespace, quotes, angle brackets or Chinese text/punctuation.
_URL_BODY = r"[^\s<>\"'\u3000-\u303f\u3400-\u9fff\uff00-\uffef]+"
_URL_RE = re.compile(r"(?:\b[a-z][a-z0-9+.-]*://|\bwww\.)" + _URL_BODY, re.IGNORECASE)
_URL_TRAILING_PUNCT = ".,;:!?)]}'\""


_URL_BODY_RE = re.compile(_URL_BODY)
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")


def find_urls(text: str) -> list[str]:
    """URLs (http(s), app schemes like shop://, bare www.) in text, sentence punctuation cut off."""
    found: list[tuple[int, str]] = []
    # Anchor on '://' and 'www.' with str.find: much faster than a regex scan of long HTML.
    pos = text.find("://")
    while pos != -1:
        start = pos
        while start > 0 and text[start - 1] in _SCHEME_CHARS:
            start -= 1
        while start < pos and not text[start].isalpha():
            start += 1  # a scheme starts with a letter
        m = _URL_BODY_RE.match(text, pos + 3)
        if start < pos and m:
            found.append((start, text[start:m.end()]))
            pos = text.find("://", m.end())
        else:
            pos = text.find("://", pos + 3)
    lower = text.lower() if "www." in text.lower() else ""
    pos = lower.find("www.") if lower else -1
    while pos != -1:
        inside = any(s <= pos < s + len(u) for s, u in found)
        m = _URL_BODY_RE.match(text, pos)
        if not inside and m and (pos == 0 or not text[pos - 1].isalnum()):
            found.append((pos, m.group(0)))
        pos = lower.find("www.", pos + 4)
    found.sort()
    return [u.rstrip(_URL_TRAILING_PUNCT) for _, u in found]


_CJK_RE = re.compile(r"[\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef\u3000-\u303f]")
_TRAILING_JUNK = " \t\n,;:-–—(（，、：；"
_TRAILING_URL_RE = re.compile(r"\s+((?:[a-z][a-z0-9+.-]*://|www\.)" + _URL_BODY + r")\s*$",
                              re.IGNORECASE)


def _cut_points(body: str) -> list[int]:
    """Positions where the body may be cut: before whitespace, or next to CJK characters,
    never inside a URL (a cut URL is a broken link)."""
    url_spans = [m.span() for m in _URL_RE.finditer(body)]
    points = []
    for i in range(1, len(body)):
        if any(s < i < e for s, e in url_spans):
            continue
        # Between two Chinese characters, before whitespace or before a Chinese bracket or
        # punctuation mark; never between '立省' and '30%' or inside a word.
        if body[i].isspace() or (_CJK_RE.match(body[i]) and (
                _CJK_RE.match(body[i - 1]) or not body[i].isalnum())):
            points.append(i)
    return points


def _assemble(body: str, opt_out: str, sep: str) -> str:
    return f"{body}{sep}{opt_out}" if opt_out else body


def fit_sms(body: str, opt_out: str, max_segments: int, *, sep: str = "\n") -> str:
    """``body + sep + opt_out`` cut to at most ``max_segments`` parts, keeping the opt-out line.

    The shortest change that fits: the body is cut at the last word boundary (or between
    Chinese characters) that fits and ends with an ellipsis — '...' while the message is
    GSM-7, because '…' would switch it to UCS-2 and cost more than half the room.
    """
    full = _assemble(body, opt_out, sep)
    if sms_segments(full) <= max_segments:
        return full
    # A link at the very end of the body is the point of the SMS: keep it with the opt-out
    # and cut the words before it instead (unless the link alone is too long).
    link = _TRAILING_URL_RE.search(body)
    if link and sms_segments(_assemble(link.group(1), opt_out, sep)) <= max_segments:
        kept = link.group(0)
        body = body[: link.start()]
    else:
        kept = ""

    def candidate(prefix: str) -> str:
        prefix = prefix.rstrip(_TRAILING_JUNK)
        if not prefix:
            return _assemble(kept.strip(), opt_out, sep) if kept else opt_out
        if prefix.endswith(("…", "...")):
            tail = ""  # already cut ('West Lake…'): no second ellipsis
        else:
            tail = "..." if sms_encoding(prefix + kept + opt_out) == GSM7 else "…"
        return _assemble(prefix + tail + kept, opt_out, sep)

    def fits(i: int) -> bool:
        return sms_segments(candidate(body[:i])) <= max_segments

    # A longer prefix never needs fewer parts, so binary search the cut points.
    points = _cut_points(body) or list(range(1, len(body)))
    lo, hi, best = 0, len(points) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        if fits(points[mid]):
            best, lo = points[mid], mid + 1
        else:
            hi = mid - 1
    if best is None:
        # No word boundary fits (one very long word): cut characters instead.
        lo, hi = 1, len(body) - 1
        while lo <= hi:
            mid = (lo + hi) // 2
            if fits(mid):
                best, lo = mid, mid + 1
            else:
                hi = mid - 1
    return candidate(body[:best]) if best else opt_out


def shrink_sms(text: str, locale: str | None, max_segments: int) -> str:
    """``fit_sms`` for a whole SMS: keeps its trailing opt-out line (if any) intact."""
    body, line = split_opt_out(text, locale)
    if not line:
        return fit_sms(text, "", max_segments)
    sep = text.rstrip()[len(body): -len(line)] or "\n"
    return fit_sms(body, line, max_segments, sep=sep)


# --- links -----------------------------------------------------------------------------------


def deep_link_for(settings: CampaignSettings, sku: str) -> str:
    """The app deep link of an item (``settings.deep_link`` with {sku} filled)."""
    return settings.deep_link.format(sku=sku)


def is_http_url(url: str) -> bool:
    """A well-formed absolute http(s) URL with a host and no whitespace or braces."""
    if not url or any(c.isspace() for c in url) or "{" in url or "}" in url:
        return False
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


# --- push -------------------------------------------------------------------------------------

PUSH_PAYLOAD_MAX = 4096  # bytes: APNs and FCM both cap the notification payload at 4 KB


def push_payload(message: Message) -> dict[str, Any]:
    """The APNs-style payload the size limit is measured on."""
    return {"aps": {"alert": {"title": message.get("title"), "body": message.get("body")}},
            "deep_link": message.get("deep_link")}


def push_payload_bytes(message: Message) -> int:
    """UTF-8 size of the compact JSON payload."""
    return len(json.dumps(push_payload(message), ensure_ascii=False,
                          separators=(",", ":")).encode("utf-8"))


def truncate_chars(text: str, limit: int, ellipsis: str = "…") -> str:
    """Cut ``text`` to ``limit`` code points at a word boundary, ending with ``ellipsis``."""
    if len(text) <= limit:
        return text
    room = max(limit - len(ellipsis), 0)
    cut = text[:room]
    inside_word = not text[room].isspace() and not _CJK_RE.match(text[room])
    if inside_word and not _CJK_RE.match(cut[-1:] or " "):
        space = cut.rfind(" ")
        if space >= room * 0.6:  # don't throw away more than 40% to find a word boundary
            cut = cut[:space]
    return cut.rstrip(_TRAILING_JUNK) + ellipsis


# --- checks -----------------------------------------------------------------------------------

EMAIL_SUBJECT_WARN, EMAIL_SUBJECT_MAX = 50, 100
EMAIL_PREHEADER_RANGE = (40, 130)


def _ok(name: str, message: str, severity: str = "error") -> CheckResult:
    return CheckResult(name, True, message, severity)  # type: ignore[arg-type]


def _fail(name: str, message: str, severity: str = "error") -> CheckResult:
    return CheckResult(name, False, message, severity)  # type: ignore[arg-type]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _check_sms(message: Message, settings: CampaignSettings, locale: str) -> list[CheckResult]:
    text = message.get("text")
    if not text.strip():
        return [_fail("sms.text", "SMS text is empty")]
    info = sms_info(text)
    allowed = max(settings.sms_max_segments, 1)
    detail = f"{info.encoding}, {info.length} of {sms_capacity(info.encoding, allowed)} characters"
    seg_msg = (f"SMS is {_plural(info.segments, 'segment')} ({detail}); "
               f"the campaign allows {allowed}")
    checks = [_ok("sms.text", "SMS text present")]
    checks.append(_ok("sms.segments", seg_msg) if info.segments <= allowed
                  else _fail("sms.segments", seg_msg))

    if info.encoding == UCS2 and _lang(locale) != "zh":
        fixable = set(info.non_gsm) <= set(GSM7_REPLACEMENTS)
        chars = " ".join(repr(c) for c in info.non_gsm)
        if fixable:
            checks.append(_fail("sms.encoding", f"SMS is UCS-2 (70 characters per part) only "
                                f"because of {chars}; plain quotes/dashes keep it GSM-7 (160)",
                                "warning"))
        else:
            checks.append(_ok("sms.encoding", f"SMS is UCS-2 because of {chars}", "warning"))
    else:
        checks.append(_ok("sms.encoding", f"SMS is {info.encoding}", "warning"))

    line = opt_out_line(locale)
    if split_opt_out(text, locale)[1]:
        checks.append(_ok("sms.opt_out", f"SMS ends with the opt-out line '{line}'"))
    elif line in text:
        checks.append(_fail("sms.opt_out", f"the opt-out line '{line}' must be the last line"))
    else:
        checks.append(_fail("sms.opt_out", f"SMS must end with the opt-out line '{line}'"))
    return checks


def _check_push(message: Message, settings: CampaignSettings) -> list[CheckResult]:
    checks = []
    for fld, limit in (("title", settings.push_title_max), ("body", settings.push_body_max)):
        value = message.get(fld)
        name = f"push.{fld}_length"
        if not value.strip():
            checks.append(_fail(name, f"push {fld} is empty"))
        elif len(value) > limit:
            checks.append(_fail(name, f"push {fld} is {len(value)} characters; "
                                      f"the campaign allows {limit}"))
        else:
            checks.append(_ok(name, f"push {fld} is {len(value)} of {limit} characters"))
    size = push_payload_bytes(message)
    payload_msg = f"push payload is {size} bytes (limit {PUSH_PAYLOAD_MAX})"
    checks.append(_ok("push.payload_size", payload_msg) if size <= PUSH_PAYLOAD_MAX
                  else _fail("push.payload_size", payload_msg))
    link = message.get("deep_link").strip()
    prefix = settings.deep_link.split("{sku}")[0]
    if not link:
        checks.append(_fail("push.deep_link", "push has no deep link to the item"))
    elif prefix and not link.startswith(prefix) and not is_http_url(link):
        checks.append(_fail("push.deep_link", f"deep link '{link}' does not follow the "
                                              f"campaign's pattern '{settings.deep_link}'"))
    else:
        checks.append(_ok("push.deep_link", f"deep link {link}"))
    return checks


def _in_html(value: str, html_text: str) -> bool:
    return value in html_text or _html.escape(value, quote=True) in html_text \
        or _html.escape(value, quote=False) in html_text


def _check_email(message: Message, settings: CampaignSettings,
                 unsubscribe_url: str | None) -> list[CheckResult]:
    checks = []
    subject = message.get("subject").strip()
    n = len(subject)
    if not subject:
        checks.append(_fail("email.subject", "email subject is empty"))
    elif n > EMAIL_SUBJECT_MAX:
        checks.append(_fail("email.subject", f"subject is {n} characters; the maximum is "
                                             f"{EMAIL_SUBJECT_MAX}"))
    elif n > EMAIL_SUBJECT_WARN:
        checks.append(_fail("email.subject", f"subject is {n} characters; inboxes cut it "
                                             f"after about {EMAIL_SUBJECT_WARN}", "warning"))
    else:
        checks.append(_ok("email.subject", f"subject is {n} characters"))

    pre = message.get("preheader").strip()
    lo, hi = EMAIL_PREHEADER_RANGE
    if not pre:
        checks.append(_fail("email.preheader", "email preheader is empty"))
    elif not lo <= len(pre) <= hi:
        checks.append(_fail("email.preheader", f"preheader is {len(pre)} characters; "
                                               f"{lo}-{hi} reads best", "warning"))
    else:
        checks.append(_ok("email.preheader", f"preheader is {len(pre)} characters"))

    html_body, text_body = message.get("html"), message.get("text")
    for fld, value in (("html", html_body), ("text", text_body)):
        checks.append(_ok(f"email.{fld}", f"{fld.upper()} part present") if value.strip()
                      else _fail(f"email.{fld}", f"email has no {fld.upper()} part "
                                 "(send both HTML and plain text)"))

    checks.append(_check_unsubscribe(settings, html_body, text_body, unsubscribe_url))

    address = settings.postal_address.strip()
    missing = [p for p, ok in (("HTML", address and _in_html(address, html_body)),
                               ("text", address and address in text_body)) if not ok]
    if not address:
        checks.append(_fail("email.postal_address", "the campaign has no postal_address"))
    elif missing:
        parts = " and ".join(missing)
        checks.append(_fail("email.postal_address", f"sender's postal address '{address}' "
                                                    f"missing from the {parts} part"))
    else:
        checks.append(_ok("email.postal_address", "postal address in HTML and text"))
    return checks


def _unsubscribe_pattern(template: str) -> re.Pattern[str]:
    head, _, tail = template.partition("{token}")
    return re.compile(re.escape(head) + r"[A-Za-z0-9_\-]{6,}" + re.escape(tail))


def _check_unsubscribe(settings: CampaignSettings, html_body: str, text_body: str,
                       expected: str | None) -> CheckResult:
    name = "email.unsubscribe"
    if "{token}" not in settings.unsubscribe_url:
        return _fail(name, f"campaign unsubscribe_url '{settings.unsubscribe_url}' has no "
                           "{token} placeholder")
    if expected is not None:
        if not is_http_url(expected):
            return _fail(name, f"unsubscribe link '{expected}' is not a valid http(s) URL")
        missing = [p for p, ok in (("HTML", _in_html(expected, html_body)),
                                   ("text", expected in text_body)) if not ok]
        if missing:
            return _fail(name, f"unsubscribe link {expected} missing from the "
                               f"{' and '.join(missing)} part")
        return _ok(name, f"unsubscribe link {expected} in HTML and text")
    # No recipient known (e.g. a bare check): any well-formed link of the campaign's pattern.
    pattern = _unsubscribe_pattern(settings.unsubscribe_url)
    found = {}
    for part, body in (("HTML", _html.unescape(html_body)), ("text", text_body)):
        m = pattern.search(body)
        found[part] = m.group(0) if m else None
    missing = [p for p, url in found.items() if not url]
    if missing:
        return _fail(name, f"unsubscribe link ({settings.unsubscribe_url} with the token "
                           f"filled) missing from the {' and '.join(missing)} part")
    bad = [u for u in found.values() if u and not is_http_url(u)]
    if bad:
        return _fail(name, f"unsubscribe link '{bad[0]}' is not a valid http(s) URL")
    return _ok(name, f"unsubscribe link {found['text']} in HTML and text")


def check_message(message: Message, settings: CampaignSettings, *, locale: str = "en-US",
                  unsubscribe_url: str | None = None) -> list[CheckResult]:
    """Every channel rule as a named check, passing ones included (ok=True).

    ``unsubscribe_url`` is the exact link this recipient's email must carry; without it any
    link matching the campaign's pattern with a token is accepted.
    """
    channel = message.channel
    if channel not in CHANNEL_FIELDS:
        return [_fail("message.channel", f"unknown channel '{channel}' "
                                         f"(expected one of {', '.join(CHANNEL_FIELDS)})")]
    unknown = sorted(set(message.fields) - set(CHANNEL_FIELDS[channel]))
    checks = [_ok("message.fields", f"{channel} fields: {', '.join(CHANNEL_FIELDS[channel])}")
              if not unknown else
              _fail("message.fields", f"unexpected {channel} field(s): {', '.join(unknown)}")]
    if channel == "sms":
        checks += _check_sms(message, settings, locale)
    elif channel == "push":
        checks += _check_push(message, settings)
    else:
        checks += _check_email(message, settings, unsubscribe_url)
    return checks
