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
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any, Callable

from ..channels import (
    _lang,
    check_message,
    deep_link_for,
    find_urls,
    gsm_normalize,
)
from ..messages import CampaignSettings, CheckResult, ItemFacts, Message, MessageContext, Recipient

__all__ = ["Guard", "check_draft", "mentioned_item", "strip_latin_brand", "store_guard", "prompt_fields", "INJECTION_PHRASES", "extract_amounts",
           "extract_discounts"]

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


def _linked_item(links: str, items: Sequence[ItemFacts],
                 settings: CampaignSettings | None) -> str | None:
    """SKU of the first item whose URL or deep link appears in ``links``."""
    urls = {_norm_url(u) for u in find_urls(links)}
    if urls:
        for it in items:
            targets = [it.url] + ([deep_link_for(settings, it.sku)] if settings else [])
            if any(u and _norm_url(u) in urls for u in targets):
                return it.sku
    if settings is not None:
        for it in items:  # a deep link with a non-URL scheme find_urls may not report
            if deep_link_for(settings, it.sku) in links.split():
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
_TAG_RE = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]+>", re.IGNORECASE | re.DOTALL)
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u00a0": " "})


def _visible_html(html_text: str) -> str:
    return _html.unescape(_TAG_RE.sub(" ", html_text))


def _copy_text(message: Message) -> str:
    """What a reader sees: every prose field (HTML without tags), one string."""
    f = message.fields
    if message.channel == "email":
        parts = [f.get("subject", ""), f.get("preheader", ""), _visible_html(f.get("html", "")),
                 f.get("text", "")]
    elif message.channel == "push":
        parts = [f.get("title", ""), f.get("body", "")]
    else:
        parts = [f.get("text", "")]
    return "\n".join(p for p in parts if p)


def _link_text(message: Message) -> str:
    """Every field as written (HTML entity-decoded so href values compare as URLs)."""
    return "\n".join(_html.unescape(v) if k == "html" else v
                     for k, v in message.fields.items() if v)


def _norm_url(url: str) -> str:
    """Compare links without http(s)://, 'www.' or a trailing slash."""
    url = url.strip()
    for scheme in ("https://", "http://"):
        if url[:len(scheme)].lower() == scheme:
            url = url[len(scheme):]
            break
    if url[:4].lower() == "www.":
        url = url[4:]
    return url.rstrip("/")


def _ok(name: str, message: str) -> CheckResult:
    return CheckResult(name, True, message, "error")


def _fail(name: str, message: str) -> CheckResult:
    return CheckResult(name, False, message, "error")


def _quote(values: Iterable[str], limit: int = 3) -> str:
    values = list(dict.fromkeys(values))
    shown = ", ".join(f"'{v}'" for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


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
        copy = _copy_text(message)
        links = _link_text(message)
        urls = find_urls(links)
        copy_urls = urls if links == copy else find_urls(copy)
        prose = copy
        for url in sorted(set(copy_urls), key=len, reverse=True):
            prose = prose.replace(url, " ")  # numbers inside links are not prices
        folded_copy = " ".join(copy.casefold().split())
        folded_all = folded_copy if links == copy else " ".join(links.casefold().split())
        if "’" in folded_all or "‘" in folded_all:
            folded_all = folded_all.translate(_APOSTROPHES)
        checks = [
            self._prices(prose, ctx.items),
            self._discounts(prose, ctx.items),
            self._products(copy, ctx.items),
            self._urls(urls, ctx, unsubscribe_url or self.unsubscribe_url(ctx)),
        ]
        if message.channel == "push":
            checks.append(self._deep_link(message.get("deep_link"), ctx))
        checks.append(self._mentions_item(copy, links, ctx))
        checks += [
            self._banned(folded_copy, settings),
            self._emoji(copy, settings),
            self._personal(links, settings, forbidden_values),
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
    def _urls(urls: list[str], ctx: MessageContext, unsubscribe_url: str | None) -> CheckResult:
        settings = ctx.settings
        raw: set[str | None] = set()
        for it in ctx.items:
            raw.add(deep_link_for(settings, it.sku))
            raw.add(it.url)
            raw.add(it.image_url)
        pending = [u for u in urls if u not in raw]  # the usual case: every link is exact
        bad = []
        if pending:
            unsub = unsubscribe_url
            unsub_head = _norm_url(settings.unsubscribe_url.split("{token}")[0])
            raw.add(unsub)
            pending = [u for u in pending if u not in raw]
            # Someone else's unsubscribe link (same pattern, other token) is never allowed.
            bad = [u for u in pending if unsub_head and _norm_url(u).startswith(unsub_head)]
            pending = [u for u in pending if u not in bad]
        exact = {_norm_url(u) for u in raw if u} if pending else set()
        site = _norm_url(settings.site_url) if settings.site_url and pending else ""
        for url in pending:
            n = _norm_url(url)
            if n in exact:
                continue
            if site and (n == site or n.startswith((site + "/", site + "?", site + "#"))):
                continue
            bad.append(url)
        if bad:
            return _fail("guard.links", f"link {_quote(bad)} is not the campaign's site, an "
                                        "item's link or the unsubscribe link")
        return _ok("guard.links", f"{len(urls)} link(s) allowed")

    @staticmethod
    def _mentions_item(copy: str, links: str, ctx: MessageContext) -> CheckResult:
        sku = mentioned_item(copy, ctx.items, links=links, settings=ctx.settings)
        if sku is not None:
            return _ok("guard.mentions_item", f"copy mentions recommended item {sku}")
        skus = ", ".join(it.sku for it in ctx.items) or "none"
        return _fail("guard.mentions_item", "copy names none of the recommended items "
                                            f"({skus}) by title or link")

    @staticmethod
    def _deep_link(link: str, ctx: MessageContext) -> CheckResult:
        targets = {}
        for it in ctx.items:
            targets[deep_link_for(ctx.settings, it.sku)] = it.sku
            if it.url:
                targets[it.url] = it.sku
        if link.strip() in targets:
            sku = targets[link.strip()]
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
    def _personal(text: str, settings: CampaignSettings,
                  forbidden_values: Sequence[str] | None) -> CheckResult:
        found = []
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
            value_digits = re.sub(r"\D", "", value)
            if len(value_digits) >= 7:
                if digits is None:  # copy digits with phone separators removed
                    digits = re.sub(r"(?<=\d)[\s\-.()/]+(?=\d)", "", text)
                if value_digits[-8:] in digits:
                    found.append(value)
            elif value.casefold() in folded:
                found.append(value)
        sender = settings.sender_email.casefold()
        if "@" in text:
            found += [e for e in _EMAIL_RE.findall(text) if e.casefold() != sender
                      and e not in found]
        if found:
            return _fail("guard.personal_data", f"copy contains personal data {_quote(found)} "
                                                "(email addresses and phone numbers never go "
                                                "into copy)")
        return _ok("guard.personal_data", "no email address or phone number in copy")

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
