"""Fact and policy guards applied to every draft (template or LLM) and every review edit.

``check_draft`` = the channel rules (``channels.check_message``) + checks that the copy only
states catalog facts of the recommended items (prices, discounts, products, links) and
respects the campaign's policies (banned phrases, emoji, personal data, prompt-injection
echoes). Build a ``Guard`` once per campaign with the catalog titles; it is reused for
every draft.
"""

from __future__ import annotations

import html as _html
import re
from html.parser import HTMLParser
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from ..channels import (
    Link,
    _lang,
    canonical_url,
    check_message,
    deep_link_for,
    fill_deep_link,
    find_links,
    gsm_normalize,
    parse_link,
    redact_token,
)
from ..messages import CampaignSettings, CheckResult, ItemFacts, Message, MessageContext, Recipient

__all__ = ["Guard", "check_draft", "mentioned_item", "strip_latin_brand", "store_guard",
           "prompt_fields", "INJECTION_PHRASES", "extract_amounts", "extract_discounts",
           "find_phone_numbers", "find_template_syntax", "neutralize_template_syntax",
           "inspect_email_html", "EmailHtml", "LAYOUT_TAGS"]

# Text that only shows up in copy when a model echoed its instructions or an injected
# instruction (from a product description, a user name...). Matched case-insensitively.
INJECTION_PHRASES: tuple[str, ...] = (
    "ignore previous instructions", "ignore all previous", "ignore the above",
    "ignore your instructions", "disregard previous", "disregard the above",
    "disregard all previous", "forget your instructions", "new instructions:",
    "system prompt", "system message", "developer message", "developer mode",
    "as an ai", "as a language model", "i am an ai", "i'm an ai", "i am a language model",
    "i cannot comply", "i can't comply", "jailbreak", "prompt injection",
    "<|im_start|>", "<|im_end|>", "<|system|>", "[inst]", "[/inst]",
    "忽略之前的指令", "忽略以上", "忽略上述", "系统提示", "作为一个ai", "作为ai",
    "作为人工智能", "作为语言模型", "我是人工智能",
)

# Profile fields that never go into a prompt, whatever the campaign lists.
FORBIDDEN_PROFILE_FIELDS = ("email", "phone", "mobile", "tel", "telephone", "address",
                            "password", "card")

PRICE_TOLERANCE = 0.005
DISCOUNT_TOLERANCE = 1

# --- money and percentages -----------------------------------------------------------------

_NUMBER_RE = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?")
_CUR_PREFIX_RE = re.compile(
    r"(?:US\$|CN¥|HK\$|CA\$|A\$|USD|CNY|RMB|HKD|CAD|AUD|EUR|GBP|JPY|[$€£¥￥])\s?$",
    re.IGNORECASE)
_CUR_SUFFIX_RE = re.compile(
    r"\s?(?:元|块钱|块|美元|欧元|英镑|日元|"
    r"USD|CNY|RMB|EUR|GBP|JPY|HKD|CAD|AUD|€|dollars?|bucks|yuan)(?![A-Za-z])",
    re.IGNORECASE)
_PREFIX_LAST_CHARS = frozenset("$€£¥￥DYBRPdybrp")  # last character of every currency prefix
_CN_DIGITS = {"一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8,
              "九": 9}
# '7折' / '7.5折' / '88折' / '七折' / '七五折': the share of the price paid, in tenths.
_ZHE_RE = re.compile(r"(?<![\d.])(\d(?:\.\d)?|\d{2})\s?折"
                     r"|([一二三四五六七八九])([一二三四五六七八九])?折")


def extract_amounts(text: str) -> list[tuple[str, float]]:
    """Money amounts in copy as (quoted text, value): '$1,234.50', '¥299', '49.99元', 'USD 12'.

    A number counts as money only next to a currency sign, code or word; model numbers,
    years and postcodes do not.
    """
    out = []
    for m in _NUMBER_RE.finditer(text):
        start, end = m.span()
        before = text[max(start - 5, 0):start]
        last = before.rstrip()[-1:]
        prefix = _CUR_PREFIX_RE.search(before) if last and last in _PREFIX_LAST_CHARS else None
        if prefix:
            lead = before[: prefix.start()]
            if prefix.group(0)[0].isalpha() and lead[-1:].isalpha():
                prefix = None  # 'XUSD 12' is not 'USD 12'
        if prefix:
            quoted = (prefix.group(0) + m.group(0))
        else:
            if before[-1:].isascii() and before[-1:].isalpha():
                continue  # glued to a word: 'SKU12'
            suffix = _CUR_SUFFIX_RE.match(text, end)
            if not suffix:
                continue
            quoted = m.group(0) + suffix.group(0)
        out.append((quoted.strip(), float(m.group(0).replace(",", ""))))
    return out


def extract_discounts(text: str) -> list[tuple[str, float]]:
    """Discounts in copy as (quoted text, percent off).

    '30%' -> 30, '7折' / '七折' -> 30, '88折' -> 12.
    """
    out = []
    for sign in ("%", "％"):
        pos = text.find(sign)
        while pos != -1:
            # Walk back over '30' / '12.5' / '30 ' before the sign (a str.find loop is much
            # cheaper than a regex scan of the whole copy).
            end = pos
            if end and text[end - 1] == " ":
                end -= 1
            start = end
            while start > 0 and (text[start - 1].isdigit() or text[start - 1] == "."):
                start -= 1
            number = text[start:end].rstrip(".")
            if number.startswith("."):
                number = "0" + number
            if number and number.replace(".", "", 1).isdigit() and number.count(".") <= 1 \
                    and len(number.split(".")[0]) <= 3:
                out.append((text[start:pos + 1], float(number)))
            pos = text.find(sign, pos + 1)
    if "折" in text:
        for m in _ZHE_RE.finditer(text):
            if m.group(1):
                paid = float(m.group(1)) * (1 if len(m.group(1)) == 2 else 10)
            else:
                paid = _CN_DIGITS[m.group(2)] * 10 + (_CN_DIGITS[m.group(3)] if m.group(3) else 0)
            out.append((m.group(0), 100.0 - paid))
    return out


# --- catalog mentions ---------------------------------------------------------------------------

_CJK = "\u3400-\u9fff\uf900-\ufaff"
# '…', '...' and currency signs are tokens too, so a mention never runs across a cut title
# or into a price ('Alpine Tee… $168' is not the product 'Alpine Tee 168').
_BREAKS = r"…|\.\.\.|[$¥€£￥]"
_TOKEN_RE = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+|{_BREAKS}")
_ELLIPSES = ("…", "...")
_PAREN_RE = re.compile(r"\s*[(（\[][^)）\]]*[)）\]]\s*")


_WORD_RE = re.compile(rf"[^\W_]+|{_BREAKS}")
_HAS_CJK_RE = re.compile(rf"[{_CJK}]")


def _tokens(text: str) -> list[str]:
    """Lower-case words; each Chinese character is a token of its own."""
    folded = text.casefold()
    if folded.isascii() or not _HAS_CJK_RE.search(folded):
        return _WORD_RE.findall(folded)
    return _TOKEN_RE.findall(folded)


def _specific_enough(tokens: Sequence[str]) -> bool:
    """Skip generic titles ('Socks', '跑鞋'): a mention of those proves nothing."""
    weight = sum(2 if re.match(rf"[{_CJK}]", t) else len(t) for t in tokens)
    return weight >= 8 if len(tokens) == 1 else weight >= 6


class _CatalogIndex:
    """Token trie over catalog titles and SKUs: one pass over the copy finds every mention."""

    def __init__(self, catalog_titles: Mapping[str, str | Sequence[str]]) -> None:
        self.trie: dict[str, Any] = {}
        self.size = 0
        for sku, titles in catalog_titles.items():
            variants = [titles] if isinstance(titles, str) else list(titles)
            names = set()
            for title in variants:
                if not title:
                    continue
                names.add(title)
                names.add(_PAREN_RE.sub(" ", title).strip())  # 'Toy Story (1995)' -> 'Toy Story'
            for name in names:
                toks = _tokens(name)
                if toks and _specific_enough(toks):
                    self._add(toks, sku, name)
            if len(sku) >= 5 and not sku.isdigit():
                self._add(_tokens(sku), sku, sku)
        self.size = len(catalog_titles)

    def _add(self, toks: list[str], sku: str, name: str) -> None:
        node = self.trie
        for tok in toks:
            node = node.setdefault(tok, {})
        node.setdefault(None, []).append((sku, name, tuple(toks)))

    def mentions(self, toks: list[str]) -> list[tuple[int, list[tuple[str, str, tuple[str, ...]]]]]:
        """(end token index, [(sku, title, title tokens)]) for every title found in ``toks``."""
        found = []
        trie = self.trie
        for i, tok in enumerate(toks):
            node = trie.get(tok)
            j = i + 1
            while node is not None:
                hits = node.get(None)
                if hits:
                    found.append((j, hits))
                if j >= len(toks):
                    break
                node = node.get(toks[j])
                j += 1
        return found


def _contains(seq: Sequence[str], sub: Sequence[str], *, last_is_prefix: bool = False) -> bool:
    """``sub`` occurs in ``seq``; with ``last_is_prefix`` its last token may be cut short."""
    n = len(sub)
    head, last = tuple(sub[:-1]), sub[-1]
    for i in range(len(seq) - n + 1):
        if tuple(seq[i:i + n - 1]) == head and (
                seq[i + n - 1] == last or (last_is_prefix and seq[i + n - 1].startswith(last))):
            return True
    return False


# --- does the copy name a recommended item at all? ----------------------------------------

# A Latin-script brand in front of Chinese words: 'West Lake Garden 龙井绿茶' -> '龙井绿茶'.
_LATIN_BRAND_RE = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9&'’.+\- ]*\s+(?=[{_CJK}])")
MENTION_MIN_WEIGHT = 12      # any piece of a title this long (a Chinese character weighs 2)
CUT_MENTION_MIN_WEIGHT = 6   # a title's start followed by '…' / '...' (a renderer cut)


def strip_latin_brand(title: str) -> str:
    """The Chinese part of a title that starts with a Latin brand ('' if there is none)."""
    m = _LATIN_BRAND_RE.match(title)
    return title[m.end():].strip() if m else ""


def _fold_mention(text: str) -> str:
    """Casefolded, single-spaced, GSM look-alikes ('…' -> '...', curly quotes straightened)."""
    return " ".join(gsm_normalize(text).casefold().split())


def _char_weight(c: str) -> int:
    return 2 if _HAS_CJK_RE.match(c) else (0 if c.isspace() else 1)


def _weight(text: str) -> int:
    return sum(map(_char_weight, text))


def _names_title(folded: str, title: str) -> bool:
    """``folded`` copy contains ``title``, a cut of its start ('West Lake…') or a long piece."""
    t = _fold_mention(title)
    if not t:
        return False
    if t in folded:
        return True
    # The renderer's cut: the title's start, trailing junk stripped, then an ellipsis.
    pos = folded.find("...")
    while pos != -1:
        before = folded[:pos]
        for k in range(min(len(t) - 1, len(before)), 0, -1):
            if before.endswith(t[:k]):
                if _weight(t[:k]) >= CUT_MENTION_MIN_WEIGHT:
                    return True
                break
        pos = folded.find("...", pos + 3)
    # Any long enough piece: the shortest window from each start is enough (sliding).
    weights = [_char_weight(c) for c in t]
    if sum(weights) < MENTION_MIN_WEIGHT:
        return False
    j = w = 0
    for i in range(len(t)):
        while j < len(t) and w < MENTION_MIN_WEIGHT:
            w += weights[j]
            j += 1
        if w < MENTION_MIN_WEIGHT:
            break
        if t[i:j] in folded:
            return True
        w -= weights[i]
    return False


def mentioned_item(copy: str, items: Sequence[ItemFacts], *, links: str = "",
                   settings: CampaignSettings | None = None,
                   titles_only: bool = False) -> str | None:
    """SKU of the first recommended item the copy names, or None.

    An item counts as named by its title or Chinese title (``attributes['title_zh']``, also
    without a leading Latin brand), a cut of a title's start ending in an ellipsis, a piece
    of a title of 12+ characters (6+ Chinese), its URL or its deep link (in ``links``:
    every field as written, or the copy when not given); ``titles_only``: not by links.
    """
    if not titles_only:
        # Links first: cheap, and nearly every draft carries its item's URL or deep link.
        sku = _linked_item(links or copy, items, settings)
        if sku is not None:
            return sku
    folded = _fold_mention(copy)
    for it in items:
        titles = [it.title]
        zh = (it.attributes or {}).get("title_zh")
        if isinstance(zh, str) and zh.strip():
            titles += [zh, strip_latin_brand(zh)]
        if any(t and _names_title(folded, t) for t in titles):
            return it.sku
    return None


def _linked_item(links: str | set[str], items: Sequence[ItemFacts],
                 settings: CampaignSettings | None) -> str | None:
    """SKU of the first item whose URL or deep link is among ``links`` (text to read, or a
    set of canonical URLs already read)."""
    urls = links if isinstance(links, set) else {lk.url for lk in find_links(links)}
    if not urls:
        return None
    for it in items:
        if it.url and canonical_url(it.url) in urls:
            return it.sku
        if settings is not None and canonical_url(deep_link_for(settings, it.sku)) in urls:
            return it.sku
    return None


# --- policy regexes (compiled once per phrase list) -------------------------------------------


class _PhraseMatcher:
    """Case-insensitive phrase search: a substring test first, the word-boundary regex only
    on a hit (most copy contains none of the phrases)."""

    def __init__(self, phrases: Iterable[str]) -> None:
        self.phrases = [" ".join(p.split()).casefold() for p in phrases if p and p.strip()]
        parts = []
        for p in self.phrases:
            pat = re.escape(p).replace(r"\ ", r"\s+")
            if re.match(r"\w", p):
                pat = r"(?<!\w)" + pat
            if re.search(r"\w$", p):
                pat += r"(?!\w)"
            parts.append(pat)
        self.regex = re.compile("|".join(parts)) if parts else None

    def find(self, folded: str) -> list[str]:
        """Matches in ``folded`` (already casefolded, single-spaced)."""
        if self.regex is None or not any(p in folded for p in self.phrases):
            return []
        return [m.group(0) for m in self.regex.finditer(folded)]


@lru_cache(maxsize=64)
def _phrase_matcher(phrases: tuple[str, ...]) -> _PhraseMatcher:
    return _PhraseMatcher(phrases)


_INJECTION = _PhraseMatcher(INJECTION_PHRASES)
_EMOJI_RE = re.compile(
    "[\U0001F000-\U0001FAFF\U0001F1E6-\U0001F1FF\u2600-\u27BF\u2B00-\u2BFF\u2300-\u23FF"
    "\uFE0F\u200D\u3030\u303D\u3297\u3299]")
_EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u00a0": " "})

# --- email HTML, read with a real parser -------------------------------------------------------

# The markup an email layout needs (tables, text, links, catalog images). Anything else in a
# draft's HTML (script, style, form, iframe, object, embed, svg, base, link, media...) fails.
LAYOUT_TAGS: frozenset[str] = frozenset(
    "html head meta title body div span p br hr a img table thead tbody tfoot tr td th "
    "caption colgroup col h1 h2 h3 h4 h5 h6 strong b em i u s strike del ins small big sub "
    "sup ul ol li dl dt dd blockquote center font pre code abbr address section article "
    "header footer main figure figcaption wbr".split())
LAYOUT_ATTRIBUTES: frozenset[str] = frozenset(
    "style class id dir lang title align valign width height bgcolor border role color face "
    "size colspan rowspan nowrap cellpadding cellspacing summary alt name target rel charset "
    "content http-equiv href src background hspace vspace scope headers start type reversed "
    "span abbr frame rules clear noshade compact datetime translate xmlns".split())
_URL_ATTRIBUTES = {"href", "src", "background"}
_SAFE_HTTP_EQUIV = {"content-type", "x-ua-compatible", "content-language"}
_CSS_URL_RE = re.compile(r"url\(\s*(['\"]?)(.*?)\1\s*\)", re.IGNORECASE | re.DOTALL)
_CSS_BAD_RE = re.compile(r"expression\s*\(|@import|javascript:|vbscript:|behavior\s*:|"
                         r"-moz-binding|image-set\s*\(|\\", re.IGNORECASE)


class EmailHtml(HTMLParser):
    """One read of an email's HTML: the text a reader sees, every link and image it holds,
    and every piece of markup outside the layout allowlist (``problems``)."""

    def __init__(self, html_text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.text_parts: list[str] = []
        self.links: list[tuple[str, str]] = []    # (where, url as written)
        self.images: list[tuple[str, str]] = []   # (where, url as written)
        self.problems: list[str] = []
        self._skip = 0  # inside <script>/<style>: not visible text
        self.feed(html_text)
        self.close()

    def updatepos(self, i: int, j: int) -> int:
        return j  # line numbers are never asked for: skip counting them (a third faster)

    def _problem(self, text: str) -> None:
        if text not in self.problems:
            self.problems.append(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in LAYOUT_TAGS:
            self._problem(f"<{tag}> is not allowed in an email")
            if tag in ("script", "style"):
                self._skip += 1
        for name, value in attrs:
            value = value or ""
            if name.startswith("on"):
                self._problem(f"event attribute {name} on <{tag}>")
            elif name.startswith(("data-", "aria-", "xmlns:")):
                continue
            elif name not in LAYOUT_ATTRIBUTES:
                self._problem(f"attribute {name} on <{tag}> is not allowed in an email")
            elif name == "http-equiv" and value.strip().lower() not in _SAFE_HTTP_EQUIV:
                self._problem(f'<meta http-equiv="{value}"> is not allowed in an email')
            elif name == "style":
                self._style(tag, value)
            elif name in _URL_ATTRIBUTES:
                if name == "href" and tag == "a":
                    self.links.append(("<a href>", value))
                elif name == "src" and tag == "img" or name == "background":
                    self.images.append((f"<{tag} {name}>", value))
                else:
                    self._problem(f"attribute {name} on <{tag}> is not allowed in an email")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag in ("script", "style"):
            self._skip -= 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def _style(self, tag: str, css: str) -> None:
        if _CSS_BAD_RE.search(css):
            self._problem(f"style on <{tag}> uses script, imports or escapes")
        for m in _CSS_URL_RE.finditer(css):
            self.images.append((f"<{tag} style url()>", m.group(2)))

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.text_parts.append(data)

    def handle_comment(self, data: str) -> None:
        if "<" in data or "[if" in data.lower():
            self._problem("markup inside an HTML comment (Outlook renders conditional "
                          "comments)")

    def handle_pi(self, data: str) -> None:
        self._problem(f"processing instruction <?{data[:20]}>")

    def unknown_decl(self, data: str) -> None:
        self._problem(f"declaration <![{data[:20]}]>")

    @property
    def text(self) -> str:
        return " ".join(self.text_parts)


def inspect_email_html(html_text: str) -> EmailHtml:
    """Parse an email's HTML once (text, links, images, problems)."""
    return EmailHtml(html_text)


# --- phone numbers -------------------------------------------------------------------------------

# Digit groups joined by the separators phone numbers are written with; a leading '+'.
_PHONE_RE = re.compile(
    r"(?<![A-Za-z0-9_+$¥€£￥#.,/-])(\+[ \u00a0]?)?\(?\d(?:[ \u00a0().\-/]{0,3}\d){6,18}"
    r"(?![A-Za-z0-9])")
_DATE_RE = re.compile(r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}"
                      r"|(?:19|20)\d\d\s?[-/]\s?(?:19|20)\d\d")
PHONE_DIGITS = (7, 15)   # E.164 allows at most 15 digits; fewer than 7 is no phone number


def find_phone_numbers(text: str) -> list[str]:
    """Phone-number-like runs in ``text`` ('+1 (415) 555-0199', '020 7946 0958',
    '13800138000'): 7-15 digits in groups, not dates ('2026-12-01'), year ranges or lists
    of small numbers ('36 37 38 39 40' unless it starts with 0 or +)."""
    found = []
    for m in _PHONE_RE.finditer(text):
        raw = m.group(0).strip(" \u00a0(.-/")
        digits = re.sub(r"\D", "", raw)
        if not PHONE_DIGITS[0] <= len(digits) <= PHONE_DIGITS[1]:
            continue
        if _DATE_RE.fullmatch(raw.strip("()")) or _DATE_RE.search(raw) and len(digits) <= 8:
            continue
        groups = re.findall(r"\d+", raw)
        if sum(len(g) <= 2 for g in groups) > 2 and not raw.startswith(("+", "0", "(")):
            continue
        found.append(raw)
    return found


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


# --- template syntax from data --------------------------------------------------------------

# Delimiters of the template languages sending platforms render (Liquid and Jinja '{{ }}'
# '{% %}' '{# #}', Handlebars, Mailchimp '*|X|*', Salesforce '%%X%%', FreeMarker '${x}',
# ERB/ASP '<% %>'). A catalog title '{{ 7*7 }}' would be evaluated by the platform.
_TEMPLATE_SYNTAX_RE = re.compile(r"\{\{|\}\}|\{%|%\}|\{#|#\}|\*\||\|\*|%%|\$\{|<%|%>")
_TEMPLATE_FIRST_RE = re.compile(r"\{(?=[{%#])|\}(?=\})|%(?=[}%>])|#(?=\})|\*(?=\|)|"
                                r"\|(?=\*)|\$(?=\{)|<(?=%)")


def find_template_syntax(text: str) -> list[str]:
    """Template delimiters in ``text`` ('{{', '{%', '*|', '%%', '${', ...)."""
    return _TEMPLATE_SYNTAX_RE.findall(text) if text else []


def neutralize_template_syntax(text: str) -> str:
    """``text`` with every template delimiter broken by a space ('{{ 7*7 }}' ->
    '{ { 7*7 } }'): it reads the same and no sending platform evaluates it."""
    if not text or not _TEMPLATE_SYNTAX_RE.search(text):
        return text
    return _TEMPLATE_FIRST_RE.sub(lambda m: m.group(0) + " ", text)


# --- one read of a message ---------------------------------------------------------------------


class _Reading:
    """A message read once for every guard: what a reader sees and every link it holds."""

    __slots__ = ("prose", "links", "images", "html")

    def __init__(self, message: Message) -> None:
        f = message.fields
        self.html: EmailHtml | None = None
        self.images: list[tuple[str, str]] = []
        if message.channel == "email":
            self.html = EmailHtml(f.get("html", "") or "")
            parts = [f.get("subject", ""), f.get("preheader", ""), self.html.text,
                     f.get("text", "")]
            self.images = self.html.images
        elif message.channel == "push":
            parts = [f.get("title", ""), f.get("body", "")]
        else:
            parts = [f.get("text", "")]
        self.prose = "\n".join(p for p in parts if p)
        # (where, link): links read from the prose, then every link-holding field/attribute.
        self.links: list[tuple[str, Link]] = [("copy", lk) for lk in find_links(self.prose)]
        if message.channel == "push" and f.get("deep_link"):
            self.links.append(("deep link", parse_link(f["deep_link"])))
        if self.html is not None:
            self.links += [(where, parse_link(url)) for where, url in self.html.links]

    def link_urls(self) -> set[str]:
        return {lk.url for _, lk in self.links}


def _host_key(host: str) -> str:
    return host[4:] if host.startswith("www.") else host


def _ok(name: str, message: str) -> CheckResult:
    return CheckResult(name, True, message, "error")


def _fail(name: str, message: str) -> CheckResult:
    return CheckResult(name, False, message, "error")


def _quote(values: Iterable[str], limit: int = 3) -> str:
    values = list(dict.fromkeys(values))
    shown = ", ".join(f"'{v}'" for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


Origin = tuple[str, str, "int | None"]


def _origin(url: str | None) -> Origin | None:
    """(scheme, host key, port) of an http(s) link, else None."""
    if url:
        lk = parse_link(url)
        if lk.kind == "url" and lk.scheme in ("http", "https") and lk.host:
            scheme, host, port = lk.origin
            return scheme, _host_key(host), port
    return None


@lru_cache(maxsize=256)
def _campaign_links(site_url: str, unsubscribe_url: str
                    ) -> tuple[frozenset[Origin], str]:
    """The campaign's allowed origins (its site, its unsubscribe host) and the canonical
    head of every unsubscribe link of the campaign."""
    origins = {o for o in (_origin(site_url), _origin(unsubscribe_url.replace("{token}", "t")))
               if o is not None}
    return frozenset(origins), canonical_url(unsubscribe_url.split("{token}")[0])


@lru_cache(maxsize=65536)
def _item_links(deep_link: str, sku: str, url: str | None
                ) -> tuple[tuple[str, ...], Origin | None]:
    """One item's canonical links (its deep link, its page) and its page's origin (cached
    per item: a whole campaign's combinations of items would not fit a cache)."""
    exact = [canonical_url(fill_deep_link(deep_link, sku))]
    if url:
        exact.append(canonical_url(url))
    return tuple(exact), _origin(url)


class Guard:
    """Fact and policy guards for one campaign; build once (indexes the catalog), call often."""

    def __init__(self, catalog_titles: Mapping[str, str | Sequence[str]] | None = None
                 ) -> None:
        """``catalog_titles``: sku -> title (or several titles, e.g. [title, title_zh])."""
        self.catalog = _CatalogIndex(catalog_titles) if catalog_titles else None

    def check(self, message: Message, ctx: MessageContext, *,
              forbidden_values: Sequence[str] | None = None) -> list[CheckResult]:
        """Channel rules + every guard, passing checks included."""
        unsub = self.unsubscribe_url(ctx) if message.channel == "email" else None
        checks = check_message(message, ctx.settings, locale=ctx.recipient.locale or "en-US",
                               unsubscribe_url=unsub)
        return checks + self.guards(message, ctx, forbidden_values=forbidden_values,
                                    unsubscribe_url=unsub)

    @staticmethod
    def unsubscribe_url(ctx: MessageContext) -> str | None:
        """The exact unsubscribe link this recipient's copy may (email: must) carry; None
        when the context has none (then only the campaign's pattern is checked)."""
        return ctx.unsubscribe_url or None

    def guards(self, message: Message, ctx: MessageContext, *,
               forbidden_values: Sequence[str] | None = None,
               unsubscribe_url: str | None = None) -> list[CheckResult]:
        """Only the fact/policy guards (no channel rules)."""
        settings = ctx.settings
        read = _Reading(message)
        copy = read.prose
        prose = copy
        for _, link in sorted(read.links, key=lambda x: len(x[1].raw), reverse=True):
            prose = prose.replace(link.raw, " ")  # numbers inside links are not prices
        raw_all = "\n".join(v for v in message.fields.values() if v)
        folded_copy = " ".join(copy.casefold().split())
        folded_all = " ".join(_html.unescape(raw_all).casefold().split())
        if "’" in folded_all or "‘" in folded_all:
            folded_all = folded_all.translate(_APOSTROPHES)
        checks = [
            self._prices(prose, ctx.items),
            self._discounts(prose, ctx.items),
            self._products(copy, ctx.items),
            self._links(read, ctx, unsubscribe_url or self.unsubscribe_url(ctx)),
        ]
        if message.channel == "push":
            checks.append(self._deep_link(message.get("deep_link"), ctx))
        if read.html is not None:
            checks.append(self._email_html(read, ctx))
        checks.append(self._mentions_item(copy, read.link_urls(), ctx))
        checks += [
            self._banned(folded_copy, settings),
            self._emoji(copy, settings),
            self._personal(prose, read, ctx, forbidden_values),
            self._template_syntax(message),
            self._injection(folded_all),
        ]
        return checks

    # -- facts --

    @staticmethod
    def _prices(prose: str, items: Sequence[ItemFacts]) -> CheckResult:
        allowed: set[float] = set()
        for it in items:
            for value in (it.price, it.sale_price, it.current_price):
                if value is not None:
                    allowed.add(round(float(value), 4))
            if it.discount_pct and it.price is not None and it.sale_price is not None:
                allowed.add(round(it.price - it.sale_price, 4))  # "save $15"
        amounts = extract_amounts(prose)
        bad = [q for q, v in amounts if not any(abs(v - a) <= PRICE_TOLERANCE for a in allowed)]
        if bad:
            facts = ", ".join(f"{a:g}" for a in sorted(allowed)) or "none"
            return _fail("guard.price", f"price {_quote(bad)} is not a catalog price of a "
                                        f"recommended item (catalog: {facts})")
        return _ok("guard.price", f"{len(amounts)} price(s) match the catalog")

    @staticmethod
    def _discounts(prose: str, items: Sequence[ItemFacts]) -> CheckResult:
        allowed = [float(it.discount_pct) for it in items if it.discount_pct]
        found = extract_discounts(prose)
        bad = [(q, v) for q, v in found
               if not any(abs(v - a) <= DISCOUNT_TOLERANCE for a in allowed)]
        if bad:
            # Percentages the catalog itself states ('100% cotton' in a title/description).
            stated = {v for it in items for _, v in extract_discounts(
                f"{it.title} {it.description or ''}")}
            bad = [(q, v) for q, v in bad if v not in stated]
        bad = [q for q, _ in bad]
        if bad:
            real = ", ".join(f"{a:g}%" for a in allowed) or "no recommended item is on sale"
            return _fail("guard.discount", f"discount {_quote(bad)} is not a real discount of "
                                           f"a recommended item ({real})")
        return _ok("guard.discount", f"{len(found)} discount(s) match the catalog")

    def _products(self, copy: str, items: Sequence[ItemFacts]) -> CheckResult:
        if self.catalog is None:
            return CheckResult("guard.products", True,
                               "skipped: no catalog titles given to the guard", "warning")
        recommended = {it.sku for it in items}
        toks = _tokens(copy)
        bad = []
        rec_titles = None
        for end, hits in self.catalog.mentions(toks):
            cut = end < len(toks) and toks[end] in _ELLIPSES  # 'Trail Socks 12…'
            for sku, name, name_toks in hits:
                if sku in recommended:
                    continue
                if rec_titles is None:
                    rec_titles = [_tokens(t) for it in items
                                  for t in (it.title, (it.attributes or {}).get("title_zh"), it.sku)
                                  if isinstance(t, str) and t]
                if any(_contains(rt, name_toks, last_is_prefix=cut) for rt in rec_titles):
                    continue  # inside (or a cut of) a recommended title
                if any(s in recommended for s, _, t in self._same_name(name_toks)):
                    continue  # another SKU with the same title was recommended
                bad.append(f"{name} ({sku})")
        if bad:
            return _fail("guard.products", f"copy mentions {_quote(bad)}, which was not "
                                           "recommended to this customer")
        return _ok("guard.products", f"no unrecommended product mentioned "
                                     f"({self.catalog.size} catalog items checked)")

    def _same_name(self, name_toks: tuple[str, ...]) -> list[tuple[str, str, tuple[str, ...]]]:
        node: Any = self.catalog.trie if self.catalog else {}
        for tok in name_toks:
            node = node.get(tok, {})
        return node.get(None, [])

    @staticmethod
    def _allowed(ctx: MessageContext
                 ) -> tuple[frozenset[str], frozenset[tuple[str, str, int | None]], str]:
        """(the recommended items' canonical links: deep links and pages; the allowed
        (scheme, host, port) origins; the canonical head of every unsubscribe link of the
        campaign)."""
        s = ctx.settings
        origins, unsub_head = _campaign_links(s.site_url, s.unsubscribe_url)
        exact: set[str] = set()
        extra: set[Origin] = set()
        for it in ctx.items:
            links, origin = _item_links(s.deep_link, it.sku, it.url)
            exact.update(links)
            if origin is not None:
                extra.add(origin)
        return frozenset(exact), origins | extra, unsub_head

    def _links(self, read: _Reading, ctx: MessageContext, unsubscribe_url: str | None
               ) -> CheckResult:
        """Only the campaign's site, the recommended items' links and the recipient's own
        unsubscribe link; never a script, a mail/phone link, another host or a look-alike."""
        if not read.links:
            return _ok("guard.links", "no links")
        exact, origins, unsub_head = self._allowed(ctx)
        own_unsub = None    # the recipient's own link, read only when a link is not an item's
        named = None
        bad: list[str] = []
        for where, link in read.links:
            why = None
            if link.url in exact:
                continue
            if unsubscribe_url and own_unsub is None:
                own_unsub = canonical_url(unsubscribe_url)
            if link.url == own_unsub:
                continue
            in_html = where.startswith("<")
            if link.kind == "relative":
                if in_html and link.raw.strip().startswith("#") or not link.raw.strip():
                    continue  # a jump inside the email
                why = "relative (write a full https:// link)"
            elif link.kind == "scheme":
                why = f"a {link.scheme}: link"
            elif link.userinfo:
                why = "hides its host behind user@"
            elif link.kind == "protocol-relative":
                why = "protocol-relative: mail clients open it nowhere, write https://"
            elif link.scheme not in ("http", "https"):
                why = f"an app link ({link.scheme}:) to no recommended item"
            elif unsub_head and link.url.startswith(unsub_head):
                why = "someone else's unsubscribe link"
            else:
                scheme, host, port = link.origin
                if (scheme, _host_key(host), port) in origins:
                    continue
                if link.kind == "bare" and link.url == f"https://{link.host}":
                    if named is None:  # a domain-like word the catalog itself states
                        named = " ".join(
                            str(t).casefold() for it in ctx.items
                            for t in (it.title, it.brand, (it.attributes or {}).get("title_zh"))
                            if t)
                    if link.raw.casefold() in named:
                        continue
                why = "another host" if not host.startswith("xn--") and ".xn--" not in host \
                    else "a look-alike (punycode) host"
            bad.append(f"'{link.raw.strip()[:80]}' ({why})")
        if bad:
            shown = "; ".join(dict.fromkeys(bad[:3])) + (
                f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            return _fail("guard.links", redact_token(
                f"link {shown}: only the campaign's site, the items' links and the "
                "unsubscribe link are allowed"))
        return _ok("guard.links", f"{len(read.links)} link(s) allowed")

    @staticmethod
    def _email_html(read: _Reading, ctx: MessageContext) -> CheckResult:
        """The HTML holds only layout markup, and images only from the catalog (the
        recommended items' images) or the shop's own site: no scripts, forms, frames,
        event attributes or tracking pixels."""
        assert read.html is not None
        problems = list(read.html.problems)
        allowed = {canonical_url(it.image_url) for it in ctx.items if it.image_url}
        site = parse_link(ctx.settings.site_url) if ctx.settings.site_url else None
        site_host = _host_key(site.host) if site and site.host else None
        for where, url in read.images:
            lk = parse_link(url)
            if lk.url in allowed:
                continue
            if (lk.kind == "url" and lk.scheme == "https" and not lk.userinfo
                    and site_host and _host_key(lk.host) == site_host):
                continue
            problems.append(f"{where} {url.strip()[:60]!r} is not a recommended item's image")
        if problems:
            return _fail("guard.html", "email HTML: " + "; ".join(problems[:4])
                         + (f"; and {len(problems) - 4} more" if len(problems) > 4 else ""))
        return _ok("guard.html", f"layout markup only, {len(read.images)} catalog image(s)")

    @staticmethod
    def _mentions_item(copy: str, links: set[str], ctx: MessageContext) -> CheckResult:
        sku = _linked_item(links, ctx.items, ctx.settings) if links else None
        if sku is None:
            sku = mentioned_item(copy, ctx.items, titles_only=True)
        if sku is not None:
            return _ok("guard.mentions_item", f"copy mentions recommended item {sku}")
        skus = ", ".join(it.sku for it in ctx.items) or "none"
        return _fail("guard.mentions_item", "copy names none of the recommended items "
                                            f"({skus}) by title or link")

    @staticmethod
    def _deep_link(link: str, ctx: MessageContext) -> CheckResult:
        targets = {}
        for it in ctx.items:
            targets[canonical_url(deep_link_for(ctx.settings, it.sku))] = it.sku
            if it.url:
                targets[canonical_url(it.url)] = it.sku
        sku = targets.get(canonical_url(link.strip())) if link.strip() else None
        if sku is not None:
            return _ok("guard.deep_link", f"deep link opens recommended item {sku}")
        return _fail("guard.deep_link", f"deep link '{link}' does not open a recommended item")

    # -- policies --

    @staticmethod
    def _banned(copy: str, settings: CampaignSettings) -> CheckResult:
        """``copy`` is casefolded and single-spaced."""
        found = _phrase_matcher(tuple(settings.banned_phrases)).find(copy)
        if found:
            return _fail("guard.banned_phrases", f"copy uses banned phrase {_quote(found)}")
        return _ok("guard.banned_phrases",
                   f"none of the {len(settings.banned_phrases)} banned phrases used")

    @staticmethod
    def _emoji(copy: str, settings: CampaignSettings) -> CheckResult:
        if settings.emoji_policy != "none":
            return _ok("guard.emoji", "emoji allowed by the campaign")
        found = [c for c in _EMOJI_RE.findall(copy) if c not in "\uFE0F\u200D"]
        if found:
            return _fail("guard.emoji", f"campaign allows no emoji; copy has {_quote(found)}")
        return _ok("guard.emoji", "no emoji")

    @staticmethod
    def _personal(prose: str, read: _Reading, ctx: MessageContext,
                  forbidden_values: Sequence[str] | None) -> CheckResult:
        """No email address and no phone number but the shop's own configured contact
        (``sender_email``, ``contact_email``, ``contact_phone``), and never the recipient's
        own (``forbidden_values``)."""
        settings = ctx.settings
        found = []
        text = read.prose + "\n" + "\n".join(lk.raw for _, lk in read.links)
        folded = text.casefold()
        digits = None
        for value in forbidden_values or ():
            value = (value or "").strip()
            if len(value) < 5:
                continue
            if "@" in value:
                if value.casefold() in folded:
                    found.append(value)
                continue
            value_digits = _digits(value)
            if len(value_digits) >= 7:
                if digits is None:  # copy digits with phone separators removed
                    digits = re.sub(r"(?<=\d)[\s\-.()/]+(?=\d)", "", text)
                if value_digits[-8:] in digits:
                    found.append(value)
            elif value.casefold() in folded:
                found.append(value)
        shop_emails = {e.casefold() for e in (settings.sender_email, settings.contact_email)
                       if e}
        if "@" in text:
            found += [e for e in _EMAIL_RE.findall(text) if e.casefold() not in shop_emails
                      and e not in found]
        # Phone numbers: in what a reader sees, links and the sender's postal address left out.
        scan = prose
        for fixed in (settings.postal_address, settings.sender_name):
            if fixed:
                scan = scan.replace(fixed, " ")
        phones = find_phone_numbers(scan)
        if phones:
            shop_phone = _digits(settings.contact_phone)[-9:]
            stated = " ".join(f"{it.title} {it.sku}" for it in ctx.items)
            found += [p for p in phones if not (shop_phone and _digits(p).endswith(shop_phone))
                      and p not in stated and p not in found]
        if found:
            return _fail("guard.personal_data", f"copy contains {_quote(found)}: no email "
                                                "address or phone number but the shop's own "
                                                "configured contact")
        return _ok("guard.personal_data", "no email address or phone number in copy")

    @staticmethod
    def _template_syntax(message: Message) -> CheckResult:
        """Template delimiters from data ('{{ 7*7 }}' in a catalog title or a model's
        answer) would be evaluated by a sending platform that renders Liquid/Jinja."""
        found = [d for v in message.fields.values() for d in find_template_syntax(v or "")]
        if found:
            return _fail("guard.template_syntax", f"copy contains template syntax "
                         f"{_quote(found)}; a sending platform would evaluate it (pushgen "
                         "writes final copy: remove it, or split it as '{ {')")
        return _ok("guard.template_syntax", "no template syntax")

    @staticmethod
    def _injection(text: str) -> CheckResult:
        """``text`` is casefolded and single-spaced, curly apostrophes straightened."""
        found = _INJECTION.find(text)
        if found:
            return _fail("guard.injection", f"copy contains instruction text {_quote(found)}; "
                                            "it may echo a prompt injection")
        return _ok("guard.injection", "no instruction or prompt text in copy")


_guards: dict[int, tuple[Any, Guard]] = {}


def check_draft(message: Message, ctx: MessageContext, *,
                catalog_titles: Mapping[str, str | Sequence[str]] | None = None,
                forbidden_values: Sequence[str] | None = None,
                guard: Guard | None = None) -> list[CheckResult]:
    """Channel rules + fact/policy guards for one draft, passing checks included.

    Pass a campaign-wide ``guard`` (fastest), or ``catalog_titles`` (the index is built once
    per mapping object and cached; do not mutate the mapping afterwards).
    ``forbidden_values``: the recipient's email, phone... that must not appear in copy.
    """
    if guard is None:
        key = id(catalog_titles)
        cached = _guards.get(key)
        if cached is None or cached[0] is not catalog_titles:
            if len(_guards) >= 8:
                _guards.clear()
            cached = _guards[key] = (catalog_titles, Guard(catalog_titles))
        guard = cached[1]
    return guard.check(message, ctx, forbidden_values=forbidden_values)


def store_guard(db: Any) -> Guard:
    """A Guard over every catalog item in the database (titles and Chinese titles)."""
    from ..store.catalog import catalog_titles

    return Guard(catalog_titles(db))


def prompt_fields(recipient: Recipient, settings: CampaignSettings) -> dict[str, Any]:
    """The profile fields a prompt may mention: only those the campaign allows, never
    contact data (email, phone, address...) even if listed."""
    out: dict[str, Any] = {}
    for name in settings.allowed_profile_fields:
        key = name.strip()
        if not key or set(re.split(r"[\W_]+", key.lower())) & set(FORBIDDEN_PROFILE_FIELDS):
            continue
        if key == "first_name":
            value: Any = recipient.first_name
        elif key == "name":
            value = recipient.name
        elif key == "locale":
            value = recipient.locale
        elif key == "language":
            value = _lang(recipient.locale)
        else:
            value = (recipient.attributes or {}).get(key)
        if value is None or value == "" or value == [] or value == {}:
            continue
        if isinstance(value, str) and (_EMAIL_RE.search(value)
                                       or len(re.sub(r"\D", "", value)) >= 7):
            continue  # looks like contact data whatever the field is called
        out[key] = value
    return out
