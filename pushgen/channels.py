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
from functools import lru_cache
from typing import Any
from urllib.parse import quote, unquote, urlsplit

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


@dataclass(frozen=True)
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
    if len(text) <= _SMS_INFO_CACHED_CHARS:
        return _sms_info_cached(text)
    return _sms_info(text)


# Drafting asks about the same text twice (the renderer fits it, the channel rule checks
# it): the last answers are kept, for texts of up to ten segments.
_SMS_INFO_CACHED_CHARS = 1600


@lru_cache(maxsize=512)
def _sms_info_cached(text: str) -> SmsInfo:
    return _sms_info(text)


def _sms_info(text: str) -> SmsInfo:
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


# --- text hygiene ------------------------------------------------------------------------------

# Characters no copy needs and hostile input uses: C0/C1 controls (CR and LF end a mail
# header), Unicode line/paragraph separators, zero-width and byte-order marks that hide text,
# and bidirectional overrides that make a reader see other text than is there. ZWJ/ZWNJ stay
# (emoji sequences and some scripts need them).
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\u200b\u200e\u200f\u2028\u2029"
                         "\u202a-\u202e\u2060\u2066-\u2069\ufeff]")
# Fields that may span lines, and the layout characters each may use.
MULTILINE_FIELDS: dict[str, str] = {"sms.text": "\n", "email.text": "\n\t",
                                    "email.html": "\n\r\t"}
_CHAR_NAMES = {"\r": "CR", "\n": "LF (line break)", "\t": "TAB", "\x00": "NUL",
               "\x1b": "ESC", "\u2028": "LINE SEPARATOR", "\u2029": "PARAGRAPH SEPARATOR"}


def describe_char(ch: str) -> str:
    """'CR', 'U+202E RIGHT-TO-LEFT OVERRIDE': a control character as a reviewer reads it."""
    import unicodedata

    name = _CHAR_NAMES.get(ch) or unicodedata.name(ch, "")
    return f"U+{ord(ch):04X}" + (f" {name}" if name else "")


def control_chars(text: str, allowed: str = "") -> list[str]:
    """The control characters of ``text`` other than ``allowed`` (each once, in order)."""
    if text.isascii() and text.isprintable():
        return []
    found = [c for c in _CONTROL_RE.findall(text) if c not in allowed]
    return list(dict.fromkeys(found))


def one_line(text: str) -> str:
    """``text`` safe for a single line (a mail header, a CSV cell a platform reads as one
    line): control characters become spaces and runs of whitespace one space."""
    return " ".join(_CONTROL_RE.sub(" ", text).split())


def clean_value(text: str) -> str:
    """A data value (a name, a catalog title) made safe to place in copy: CR LF and CR
    become LF, other control characters and hidden marks are removed."""
    if text.isascii() and text.isprintable():
        return text
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL_RE.sub(lambda m: m.group(0) if m.group(0) in "\n\t" else "", text)


# --- links: one reader for every check ----------------------------------------------------
#
# Every link in copy is read here, the way a browser or a mail client would read it, and
# built here (``canonical_url``, ``deep_link_for``), so the renderer, the guards, review
# edits and the export agree on what a link is and where it goes.

# A URL ends at whitespace, quotes, angle brackets or Chinese text/punctuation.
_URL_BODY = r"[^\s<>\"'\u3000-\u303f\u3400-\u9fff\uff00-\uffef]+"
_URL_RE = re.compile(r"(?:\b[a-z][a-z0-9+.-]*://|\bwww\.)" + _URL_BODY, re.IGNORECASE)
_URL_TRAILING_PUNCT = ".,;:!?)]}'\""
_URL_BODY_RE = re.compile(_URL_BODY)
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")

# Schemes that do something when clicked even without '//' (run code, dial, open a file).
SCRIPT_LIKE_SCHEMES = ("javascript", "vbscript", "livescript", "data", "file", "blob",
                       "filesystem", "mailto", "tel", "sms", "smsto", "callto", "intent",
                       "about", "view-source", "jar", "mhtml", "ms-its")
_BARE_SCHEME_RE = re.compile(r"(?<![\w.+-])(?:" + "|".join(SCRIPT_LIKE_SCHEMES)
                             + r"):(?=[^\s<>\"'])", re.IGNORECASE)
# WHATWG "special" schemes: a browser reads 'https:evil.example' and 'https:\\\\evil.example'
# as the host evil.example.
_SPECIAL_SCHEMES = frozenset({"http", "https", "ftp", "ws", "wss"})
_PROTOCOL_RELATIVE_RE = re.compile(r"(?<![\w:/\\])[/\\]{2}(?=[^\W_])")
# A bare domain: labels (any script) and a Latin TLD or punycode TLD, not part of an email
# address, a longer word or a path.
_LABEL = r"[^\W_](?:[\w-]{0,61}[^\W_])?"
_BARE_DOMAIN_RE = re.compile(
    rf"(?<![\w@.\-/:])((?:{_LABEL}\.)+([a-z]{{2,24}}|xn--[a-z0-9-]{{1,59}}))(?![\w-])"
    rf"((?::\d{{1,5}})?(?:[/?#]{_URL_BODY[:-1]}*)?)", re.IGNORECASE)
# Top-level domains that count as a link even without a path ('evil.example', 'deals.shop');
# with a path ('x.y/deal') or a port any TLD does. Every two-letter ccTLD is included.
_CCTLDS = (
    "ac ad ae af ag ai al am ao aq ar as at au aw ax az ba bb bd be bf bg bh bi bj bm bn bo "
    "br bs bt bw by bz ca cc cd cf cg ch ci ck cl cm cn co cr cu cv cw cx cy cz de dj dk dm "
    "do dz ec ee eg er es et eu fi fj fk fm fo fr ga gb gd ge gf gg gh gi gl gm gn gp gq gr "
    "gs gt gu gw gy hk hm hn hr ht hu id ie il im in io iq ir is it je jm jo jp ke kg kh ki "
    "km kn kp kr kw ky kz la lb lc li lk lr ls lt lu lv ly ma mc md me mg mh mk ml mm mn mo "
    "mp mq mr ms mt mu mv mw mx my mz na nc ne nf ng ni nl no np nr nu nz om pa pe pf pg ph "
    "pk pl pm pn pr ps pt pw py qa re ro rs ru rw sa sb sc sd se sg sh si sk sl sm sn so sr "
    "ss st su sv sx sy sz tc td tf tg th tj tk tl tm tn to tr tt tv tw tz ua ug uk us uy uz "
    "va vc ve vg vi vn vu wf ws ye yt za zm zw")
_GTLDS = (
    "com net org info biz name pro mobi asia tel xxx edu gov mil int app dev page shop store "
    "online site website xyz top club vip live life world today link click email news blog "
    "tech cloud digital space fun icu cyou sbs cfd bond rest monster lat quest cam mom beauty "
    "hair skin makeup fashion clothing shoes jewelry boutique sale deals discount coupons "
    "promo gift gifts market shopping luxury buzz win bid loan work party review men date "
    "trade stream download racing science support help money cash bet casino poker game "
    "games porn sex adult example test invalid localhost onion local arpa")
COMMON_TLDS: frozenset[str] = frozenset((_CCTLDS + " " + _GTLDS).split())
_SCRIPT_LIKE = frozenset(SCRIPT_LIKE_SCHEMES)
# Candidates for a bare domain: a run of word characters, dots and hyphens holding a dot
# followed by a letter (a cheap scan; _BARE_DOMAIN_RE then decides at each start).
_DOTTED_RE = re.compile(r"(?<![\w@.\-/:])[\w-]+(?:\.[\w-]+)*\.[A-Za-z]")


@dataclass(frozen=True)
class Link:
    """One link as a browser would follow it.

    ``kind``: 'url' (scheme://...), 'www' ('www.x'), 'bare' ('x.example/deal'),
    'protocol-relative' ('//x'), 'scheme' ('javascript:...', 'mailto:...', 'shop:item'),
    or 'relative' ('/sale', 'sale.html': nowhere outside a web page).
    """

    raw: str
    kind: str
    scheme: str          # lower-case; 'https' for www., bare and '//' links
    host: str            # lower-case, punycode, no trailing dot ('' when none)
    port: int | None
    userinfo: bool       # 'https://shop.example@evil.example' (the host is evil.example)
    url: str             # canonical spelling: what the link is compared by

    @property
    def origin(self) -> tuple[str, str, int | None]:
        """(scheme family, host, port) with default ports folded in."""
        port = self.port
        if port is not None and (self.scheme, port) in (("http", 80), ("https", 443)):
            port = None
        scheme = "http" if self.scheme in ("http", "https") else self.scheme
        return scheme, self.host, port


_PCT_STRAY_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_PCT_LOWER_RE = re.compile(r"%[0-9a-f][0-9A-Fa-f]|%[0-9A-F][0-9a-f]")
_PATH_SAFE = "/:@!$&'()*+,;=%-._~"
_QUERY_SAFE = _PATH_SAFE + "?"
_WHATWG_STRIP = "".join(chr(c) for c in range(0x21))  # C0 controls and space


def _quote_part(part: str, safe: str) -> str:
    """Percent-encode what a URL cannot hold (spaces, non-ASCII as UTF-8), keeping valid
    %XX escapes as they are, so encoding twice changes nothing."""
    if part.isascii() and not any(c in part for c in ' "<>\\^`{|}%') and part.isprintable():
        return part
    part = _PCT_STRAY_RE.sub("%25", part)
    part = quote(part, safe=safe)
    return _PCT_LOWER_RE.sub(lambda m: m.group(0).upper(), part)


def canonical_host(host: str) -> str:
    """Lower-case, percent-decoded, punycode (IDNA) host without a trailing dot: the one
    spelling hosts are compared by ('SHOP.example.' == 'shop.example', 'bücher.example'
    == 'xn--bcher-kva.example')."""
    host = unquote(host).strip().lower().rstrip(".")
    if host.startswith("[") or host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return quote(host, safe=".-")


def _preprocess(raw: str) -> str:
    """What a browser does first: strip C0 controls and spaces at both ends and drop every
    tab and line break inside ('jav\\tascript:' is 'javascript:')."""
    text = raw.strip(_WHATWG_STRIP)
    if "\t" in text or "\n" in text or "\r" in text:
        text = text.replace("\t", "").replace("\n", "").replace("\r", "")
    return text


def _build(raw: str, kind: str, scheme: str, rest: str) -> Link:
    """A Link from '<scheme>:<rest>' where ``rest`` is '//authority/path...' or opaque."""
    if not rest.startswith("//"):
        return Link(raw, kind, scheme, "", None, False,
                    f"{scheme}:{_quote_part(rest, _QUERY_SAFE + '#')}")
    parts = urlsplit(f"{scheme}:{rest}")
    netloc = parts.netloc
    userinfo = "@" in netloc
    hostport = netloc.rpartition("@")[2]
    host, port = hostport, None
    if hostport.startswith("["):
        end = hostport.find("]")
        host, tail = hostport[: end + 1], hostport[end + 1:]
    else:
        host, _, tail = hostport.partition(":")
        tail = ":" + tail if tail else ""
    if tail.startswith(":") and tail[1:].isdigit():
        port = int(tail[1:])
    elif tail not in ("", ":"):
        host = hostport  # not a port: keep everything as the (unmatchable) host
    host = canonical_host(host)
    authority = host + (f":{port}" if port is not None else "")
    url = f"{scheme}://{authority}{_quote_part(parts.path, _PATH_SAFE)}"
    if parts.query or rest.endswith("?"):
        url += "?" + _quote_part(parts.query, _QUERY_SAFE)
    if parts.fragment:
        url += "#" + _quote_part(parts.fragment, _QUERY_SAFE)
    return Link(raw, kind, scheme, host, port, userinfo, url)


@lru_cache(maxsize=8192)
def parse_link(raw: str) -> Link:
    """Read one link (an href, a deep link, a URL) as a browser would: a scheme, '//host',
    or else relative to the page (cached: item links repeat in every draft)."""
    text = _preprocess(raw)
    m = re.match(r"([A-Za-z][A-Za-z0-9+.-]*):", text)
    if m:
        scheme, rest = m.group(1).lower(), text[m.end():]
        if scheme in _SPECIAL_SCHEMES:
            rest = "//" + rest.replace("\\", "/").lstrip("/")
            return _build(raw, "url", scheme, rest)
        return _build(raw, "url" if rest.startswith("//") else "scheme", scheme, rest)
    if text[:2] in ("//", "\\\\", "/\\", "\\/"):
        return _build(raw, "protocol-relative", "https",
                      "//" + text.replace("\\", "/").lstrip("/"))
    # 'www.x', 'x.example/p', 'sale.html': a browser resolves them against the page, so in
    # an email they go nowhere (find_links reads such words in prose as links).
    return Link(raw, "relative", "", "", None, False, _quote_part(text, _QUERY_SAFE + "#"))


def canonical_url(url: str) -> str:
    """The one spelling of a link pushgen writes and compares: spaces and non-ASCII
    percent-encoded as UTF-8 ('/p/brown bread' -> '/p/brown%20bread'), existing escapes
    kept, scheme and host lower-case, an internationalised host in punycode."""
    if not url:
        return url
    return parse_link(url).url


def _strip_trailing(url: str) -> str:
    return url.rstrip(_URL_TRAILING_PUNCT)


def find_links(text: str) -> list[Link]:
    """Every link a reader could follow in ``text``: scheme URLs ('https://', 'shop://'),
    'javascript:' / 'data:' / 'mailto:' / 'tel:' forms, protocol-relative '//host',
    'www.' and bare domains ('evil-shop.example/deal'), in order of appearance, sentence
    punctuation cut off. A bare domain without a path counts when its TLD is a common one
    (``COMMON_TLDS``), so 'Node.js' is not a link and 'deals.shop' is."""
    spans: list[tuple[int, int, str]] = []
    pos = text.find("://")
    while pos != -1:
        start = pos
        while start > 0 and text[start - 1] in _SCHEME_CHARS:
            start -= 1
        while start < pos and not text[start].isalpha():
            start += 1  # a scheme starts with a letter
        m = _URL_BODY_RE.match(text, pos + 3)
        if start < pos and m:
            spans.append((start, m.end(), "url"))
            pos = text.find("://", m.end())
        else:
            pos = text.find("://", pos + 3)

    def free(s: int, e: int) -> bool:
        return not any(a < e and s < b for a, b, _ in spans)

    pos = text.find(":")
    while pos != -1:  # 'javascript:...': look at the word before each colon
        start = pos
        while start > 0 and text[start - 1] in _SCHEME_CHARS:
            start -= 1
        if start < pos and text[start:pos].lower() in _SCRIPT_LIKE:
            m = _BARE_SCHEME_RE.match(text, start)
            if m:
                body = _URL_BODY_RE.match(text, m.end())
                end = body.end() if body else m.end()
                if free(m.start(), end):
                    spans.append((m.start(), end, "scheme"))
        pos = text.find(":", pos + 1)
    if "//" in text or "\\\\" in text:
        for m in _PROTOCOL_RELATIVE_RE.finditer(text):
            body = _URL_BODY_RE.match(text, m.end())
            if body and free(m.start(), body.end()):
                spans.append((m.start(), body.end(), "protocol-relative"))
    lower = text.lower()
    pos = lower.find("www.")
    while pos != -1:
        m = _URL_BODY_RE.match(text, pos)
        if m and (pos == 0 or not text[pos - 1].isalnum()) and free(pos, m.end()):
            spans.append((pos, m.end(), "www"))
        pos = lower.find("www.", pos + 4)
    for cand in (_DOTTED_RE.finditer(text) if "." in text else ()):
        m = _BARE_DOMAIN_RE.match(text, cand.start())
        if m:
            tail = _strip_trailing(m.group(3))
            if not tail and m.group(2).lower() not in COMMON_TLDS \
                    and not m.group(2).lower().startswith("xn--"):
                continue
            if free(m.start(), m.end()):
                spans.append((m.start(), m.end(), "bare"))
    spans.sort()
    out = []
    for s, e, kind in spans:
        raw = _strip_trailing(text[s:e])
        if not raw:
            continue
        if kind == "www":
            link = _build(raw, "www", "https", "//" + _preprocess(raw))
        elif kind == "bare":
            link = _build(raw, "bare", "https", "//" + _preprocess(raw))
        else:
            link = parse_link(raw)
        out.append(link)
    return out


def find_urls(text: str) -> list[str]:
    """The links of ``find_links`` as written (sentence punctuation cut off)."""
    return [link.raw for link in find_links(text)]


_CJK_RE = re.compile(r"[\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef\u3000-\u303f]")
_TRAILING_JUNK = " \t\n,;:-–—(（，、：；"
_TRAILING_URL_RE = re.compile(r"\s+((?:[a-z][a-z0-9+.-]*://|www\.)" + _URL_BODY + r")\s*$",
                              re.IGNORECASE)


def _cut_points(body: str) -> list[int]:
    """Positions where the body may be cut: before whitespace, or next to CJK characters,
    never inside a URL (a cut URL is a broken link)."""
    url_spans = [m.span() for m in _URL_RE.finditer(body)] if "." in body or ":" in body \
        else []
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


# --- links of items -------------------------------------------------------------------------


def deep_link_for(settings: CampaignSettings, sku: str) -> str:
    """The app deep link of an item: ``settings.deep_link`` with {sku} filled in
    percent-encoded ('brown bread' -> 'shop://item/brown%20bread', '绿茶' as UTF-8)."""
    return fill_deep_link(settings.deep_link, sku)


@lru_cache(maxsize=8192)
def fill_deep_link(pattern: str, sku: str) -> str:
    """``pattern`` ('shop://item/{sku}') with the percent-encoded SKU (cached)."""
    return pattern.replace("{sku}", quote(str(sku), safe=""))


def item_url(url: str | None) -> str:
    """An item's web link as copy carries it (``canonical_url``); '' when there is none."""
    return canonical_url(url) if url else ""


def is_http_url(url: str) -> bool:
    """A well-formed absolute http(s) URL with a host and no whitespace or braces."""
    if not url or any(c.isspace() for c in url) or "{" in url or "}" in url:
        return False
    link = parse_link(url)
    return link.kind == "url" and link.scheme in ("http", "https") and bool(link.host) \
        and not link.userinfo


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
    elif any(c.isspace() for c in link) or not link.isprintable():
        checks.append(_fail("push.deep_link", f"deep link {link!r} has a space or a control "
                                              "character; links are percent-encoded "
                                              "(a space is %20)"))
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


_TOKEN_MAC_RE = re.compile(r"([0-9a-f]{8})[0-9a-f]{56}")


def redact_token(text: str) -> str:
    """``text`` with every unsubscribe token's signature cut to 8 hex digits: check
    messages are shown to reviewers and fed back to a model, and a full token would let
    its reader unsubscribe that customer."""
    return _TOKEN_MAC_RE.sub(r"\1…", text) if len(text) >= 64 else text


def _check_unsubscribe(settings: CampaignSettings, html_body: str, text_body: str,
                       expected: str | None) -> CheckResult:
    result = _unsubscribe_result(settings, html_body, text_body, expected)
    result.message = redact_token(result.message)
    return result


def _unsubscribe_result(settings: CampaignSettings, html_body: str, text_body: str,
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


# (channel, sender settings) -> the check: the same for every draft of a campaign.
_SENDER_CHECKS: dict[tuple[Any, ...], CheckResult] = {}


def _check_demo_sender(settings: CampaignSettings, channel: str) -> CheckResult:
    """A warning on every draft whose campaign still uses the demo sender (no [sender] in
    its config): the export refuses such a campaign without --allow-demo-sender."""
    from .config import SENDER_FIELDS, demo_sender_fields

    key = (channel, *(getattr(settings, f) for f in SENDER_FIELDS.get(channel, ())))
    found = _SENDER_CHECKS.get(key)
    if found is not None:
        return found

    demo = demo_sender_fields(settings, channel)
    if demo:
        names = ", ".join(f.replace("_", " ") for f in demo)
        found = _fail("campaign.sender", f"the campaign uses pushgen's demo {names} (no "
                      "[sender] in its config); export refuses it unless --allow-demo-sender",
                      "warning")
    else:
        found = _ok("campaign.sender", "the campaign has its own sender", "warning")
    if len(_SENDER_CHECKS) > 256:
        _SENDER_CHECKS.clear()
    _SENDER_CHECKS[key] = found
    return found


def _check_control_chars(message: Message) -> CheckResult:
    """Line breaks and other control characters are refused in one-line fields (a subject
    with CR LF would add a header to the email) and everything but layout whitespace is
    refused in multi-line ones."""
    problems = []
    for fld, value in message.fields.items():
        allowed = MULTILINE_FIELDS.get(f"{message.channel}.{fld}", "")
        bad = control_chars(value or "", allowed)
        if bad:
            problems.append(f"{fld} has {', '.join(describe_char(c) for c in bad[:3])}")
    if problems:
        return _fail("message.control_chars", "; ".join(problems) + ": one-line fields "
                     "(subject, preheader, title, body, deep link) cannot hold line breaks, "
                     "and no field may hold control or hidden characters")
    return _ok("message.control_chars", "no line breaks in one-line fields, no control "
                                        "characters")


# A tag, a closing tag, a comment or a processing instruction: '<b>', '</p>', '<!--', '<?'.
_MARKUP_RE = re.compile(r"<\s*[A-Za-z/!?]")


def _check_markup(message: Message) -> CheckResult:
    """Plain-text fields (everything but an email's ``html``) hold no markup: an SMS or a push
    shows '<script>' to the customer as it is, and some apps render it."""
    problems = []
    for fld, value in message.fields.items():
        if message.channel == "email" and fld == "html":
            continue
        m = _MARKUP_RE.search(value or "")
        if m:
            problems.append(f"{fld} has {value[m.start():m.start() + 24]!r}")
    if problems:
        return _fail("message.markup", "; ".join(problems[:3]) + ": plain-text fields cannot "
                     "hold HTML or other markup")
    return _ok("message.markup", "no markup in plain-text fields")


# What a spreadsheet reads as the start of a formula. A CSV export prefixes such a cell
# with ' (OWASP's advice, ``export.csv_safe``), and a sending platform would then send that
# apostrophe, so the reviewer is told. A warning, not an error: a customer's name or a
# product title ('+J Collection Coat') may start a template's field, and JSONL and .eml
# exports keep the text as it is.
FORMULA_STARTS = ("=", "+", "-", "@")


def _check_formula_start(message: Message) -> CheckResult:
    """Flags a field that starts like a spreadsheet formula ('-20% today', '@Lee')."""
    problems = [f"{fld} starts with {value.lstrip(' ')[0]!r}"
                for fld, value in message.fields.items()
                if value and value.lstrip(" ").startswith(FORMULA_STARTS)]
    if problems:
        return _fail("message.formula_start", "; ".join(problems[:3]) + ": a CSV export puts "
                     "an apostrophe before it (spreadsheet formula guard) and customers would "
                     "see it; start with a word or a number, or export JSONL or .eml",
                     "warning")
    return _ok("message.formula_start", "no field starts like a spreadsheet formula", "warning")


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
    checks += [_check_control_chars(message), _check_markup(message),
               _check_formula_start(message)]
    if channel in ("sms", "email"):
        checks.append(_check_demo_sender(settings, channel))
    if channel == "sms":
        checks += _check_sms(message, settings, locale)
    elif channel == "push":
        checks += _check_push(message, settings)
    else:
        checks += _check_email(message, settings, unsubscribe_url)
    return checks
