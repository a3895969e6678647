"""Render channel copy from Jinja templates a marketer can read and edit.

Templates live in the repository's ``templates/`` folder (installed as the package
``pushgen.bundled_templates``) as ``<channel>/<name>.<locale>.j2``; a user folder passed as
``template_dirs`` overrides them file by file. One file holds every field of a message as
Jinja blocks (see templates/README.md). Rendering runs in a sandbox with StrictUndefined,
and the output is fitted to the channel's limits before it is returned.
"""

from __future__ import annotations

import hashlib
import os
import re
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from jinja2 import BaseLoader, StrictUndefined, Template, TemplateNotFound, pass_context
from jinja2.exceptions import SecurityError, TemplateError, TemplateSyntaxError
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup

from ..channels import (
    _lang,
    clean_value,
    deep_link_for,
    item_url,
    gsm_normalize,
    opt_out_line,
    shrink_sms,
    sms_capacity,
    sms_info,
    split_opt_out,
    truncate_chars,
)
from ..errors import PushgenError
from .guards import mentioned_item, neutralize_template_syntax, strip_latin_brand
from ..messages import CHANNEL_FIELDS, ItemFacts, Message, MessageContext, Recipient

__all__ = [
    "RenderedMessage", "TemplateInfo", "render", "list_templates", "format_money",
    "localized_title", "locale_candidates", "Renderer",
]

BUNDLED_PACKAGE = "pushgen.bundled_templates"
FALLBACK_LOCALE = "en-US"
# A space between two Chinese characters/punctuation (from joining template lines) is dropped.
_CJK_SPACE_RE = re.compile(r"(?<=[\u3000-\u303f\u3400-\u9fff\uff00-\uffef]) "
                           r"(?=[\u3000-\u303f\u3400-\u9fff\uff00-\uffef])")
_CJK_CHAR_RE = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
ONE_LINE_FIELDS = {"subject", "preheader", "title", "body", "deep_link"}

# --- formatting helpers (also usable by the LLM prompt builder) ------------------------------

CURRENCY_SYMBOLS = {"USD": "$", "CNY": "¥", "RMB": "¥", "EUR": "€", "GBP": "£", "JPY": "¥",
                    "HKD": "HK$", "CAD": "CA$", "AUD": "A$"}
ZERO_DECIMAL_CURRENCIES = {"JPY", "KRW"}
# (grouping, decimal separator) per language; en-US and zh-CN both write 1,234.50.
NUMBER_SEPARATORS = {"en": (",", "."), "zh": (",", ".")}
GREETING_FALLBACK = {"en": "there", "zh": "亲爱的顾客"}
DISCOUNT_PHRASE = {"en": "{pct}% off", "zh": "立省{pct}%"}


def format_money(amount: float | None, currency: str | None = "USD",
                 locale: str | None = "en-US") -> str:
    """'$1,234.50', '¥1,234.50', '€9.99', 'CHF 12.00' ('' for a missing amount)."""
    if amount is None:
        return ""
    code = (currency or "USD").upper()
    decimals = 0 if code in ZERO_DECIMAL_CURRENCIES else 2
    group, point = NUMBER_SEPARATORS.get(_lang(locale), NUMBER_SEPARATORS["en"])
    number = f"{float(amount):,.{decimals}f}"
    if (group, point) != (",", "."):
        number = number.replace(",", "\0").replace(".", point).replace("\0", group)
    symbol = CURRENCY_SYMBOLS.get(code)
    return f"{symbol}{number}" if symbol else f"{code} {number}"


def localized_title(item: ItemFacts, locale: str | None) -> str:
    """The item's title in the recipient's language (``attributes['title_zh']`` for Chinese)."""
    if _lang(locale) == "zh":
        zh = (item.attributes or {}).get("title_zh")
        if isinstance(zh, str) and zh.strip():
            return zh.strip()
    return item.title


def greeting_name(recipient: Recipient, locale: str | None = None) -> str:
    """First name, or 'there' / '亲爱的顾客' when the name is unknown."""
    lang = _lang(locale or recipient.locale)
    return recipient.first_name or GREETING_FALLBACK.get(lang, GREETING_FALLBACK["en"])


def discount_phrase(item: ItemFacts | int | None, locale: str | None = "en-US") -> str:
    """'30% off' / '立省30%' for an item on sale (or a whole percent), '' otherwise."""
    pct = item.discount_pct if isinstance(item, ItemFacts) else int(item or 0)
    if pct <= 0:
        return ""
    return DISCOUNT_PHRASE.get(_lang(locale), DISCOUNT_PHRASE["en"]).format(pct=pct)


def locale_candidates(locale: str | None) -> list[str]:
    """Template locales to try, best first: zh-CN -> zh -> en-US."""
    loc = (locale or FALLBACK_LOCALE).replace("_", "-")
    out = [loc, loc.split("-")[0], FALLBACK_LOCALE]
    return list(dict.fromkeys(x for x in out if x))


# --- Jinja filters (read the locale and settings from the render context) -------------------


def _ctx_locale(ctx: Context) -> str:
    return ctx.get("locale") or FALLBACK_LOCALE


@pass_context
def _money_filter(ctx: Context, amount: float | None, currency: str | None = None,
                  locale: str | None = None) -> str:
    return format_money(amount, currency or "USD", locale or _ctx_locale(ctx))


@pass_context
def _first_name_filter(ctx: Context, recipient: Recipient, fallback: str | None = None) -> str:
    if fallback is not None:
        return recipient.first_name or fallback
    return greeting_name(recipient, _ctx_locale(ctx))


@pass_context
def _discount_filter(ctx: Context, item: ItemFacts | int | None) -> str:
    return discount_phrase(item, _ctx_locale(ctx))


@pass_context
def _item_title_filter(ctx: Context, item: ItemFacts) -> str:
    locale = _ctx_locale(ctx)
    title = localized_title(item, locale)
    limit = ctx.get("title_max")  # set by the renderer only when a message must shrink
    if not limit:
        return title
    if len(title) > limit and _lang(locale) == "zh":
        # 'West Lake Garden 龙井绿茶' cut to 'West Lake…' says nothing to a Chinese reader:
        # drop the Latin brand before cutting the Chinese words.
        title = strip_latin_brand(title) or title
    return truncate_chars(title, limit)


@pass_context
def _link_filter(ctx: Context, item: ItemFacts) -> str:
    # Percent-encoded: a space or a Chinese character in a catalog URL would end the link
    # where a phone or a guard reads it.
    return item_url(item.url) or item_url(ctx["settings"].site_url)


@pass_context
def _deep_link_filter(ctx: Context, item: ItemFacts) -> str:
    return deep_link_for(ctx["settings"], item.sku)


def _truncate_to(text: Any, n: int | None, ellipsis: str = "…") -> str:
    return truncate_chars(str(text), int(n), ellipsis) if n else str(text)


def safe_output(value: Any) -> Any:
    """Every ``{{ ... }}`` value a template prints (names, titles, settings): control
    characters removed (a name with CR LF cannot reach a subject or a header) and template
    delimiters split ('{{ 7*7 }}' -> '{ { 7*7 } }'), so text from data never becomes live
    syntax for a sending platform that renders Liquid or Jinja. The template's own text is
    left alone."""
    if isinstance(value, str):
        cleaned = neutralize_template_syntax(clean_value(value))
        if cleaned is value or cleaned == value:
            return value
        return Markup(cleaned) if isinstance(value, Markup) else cleaned
    return value


FILTERS: dict[str, Callable[..., Any]] = {
    "money": _money_filter,
    "first_name": _first_name_filter,
    "discount": _discount_filter,
    "item_title": _item_title_filter,
    "truncate_to": _truncate_to,
    "link": _link_filter,
    "deep_link": _deep_link_filter,
}

# --- loading ----------------------------------------------------------------------------------


class _Sandbox(SandboxedEnvironment):
    """Jinja's sandbox with its attribute verdicts remembered: they depend only on the
    object's type and the attribute's name (``jinja2.sandbox.is_internal_attribute``), and
    asking costs a template draft about a tenth of its render."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._verdicts: dict[tuple[type, str], bool] = {}

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        key = (type(obj), attr)
        safe = self._verdicts.get(key)
        if safe is None:
            safe = super().is_safe_attribute(obj, attr, value)
            if len(self._verdicts) < 4096:
                self._verdicts[key] = safe
        return safe


class _Loader(BaseLoader):
    """User folders first (override by file name), then the bundled templates."""

    def __init__(self, dirs: Sequence[Path]) -> None:
        self.dirs = list(dirs)
        self.bundled = resources.files(BUNDLED_PACKAGE)

    def get_source(self, environment: Any, template: str) -> tuple[str, str, Callable[[], bool]]:
        for folder in self.dirs:
            path = folder / template
            if path.is_file():
                return path.read_text(encoding="utf-8"), str(path), lambda: True
        res = self.bundled.joinpath(*template.split("/"))
        if res.is_file():
            return res.read_text(encoding="utf-8"), str(res), lambda: True
        raise TemplateNotFound(template)

    def origin(self, template: str) -> str:
        for folder in self.dirs:
            if (folder / template).is_file():
                return str(folder)
        return "bundled"


class _TrackedItems(list):  # type: ignore[type-arg]
    """The ``items`` list a template sees; records how many items it actually used, so the
    SMS shrinker does not re-render with item counts the template never showed."""

    used: int = 0

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice):
            idx = range(*key.indices(list.__len__(self)))
            if idx:
                self.used = max(self.used, max(idx) + 1)
        else:
            self.used = max(self.used, key + 1 if key >= 0 else list.__len__(self))
        return super().__getitem__(key)

    def __iter__(self) -> Any:
        self.used = list.__len__(self)
        return super().__iter__()

    def __len__(self) -> int:
        self.used = super().__len__()
        return self.used


@dataclass
class RenderedMessage:
    """A rendered message plus the provenance a draft records."""

    message: Message
    template_name: str      # e.g. 'sms/default.zh-CN'
    template_version: str   # sha256[:12] of the template source


@dataclass
class TemplateInfo:
    """One template file as ``list_templates`` reports it."""

    name: str               # 'sms/default.en-US'
    channel: str
    template: str           # 'default'
    locale: str
    origin: str             # 'bundled' or the user folder it comes from
    version: str
    path: str


@dataclass
class _Compiled:
    name: str
    version: str
    plain: Template
    escaped: Template | None  # email: the same source compiled with HTML autoescape


class Renderer:
    """Compiled templates for one set of user folders; build once, render many times."""

    def __init__(self, template_dirs: Sequence[str | os.PathLike[str]] | None = None) -> None:
        dirs = [Path(d) for d in (template_dirs or [])]
        for d in dirs:
            if not d.is_dir():
                raise PushgenError(f"{d}: template folder does not exist")
        self.loader = _Loader(dirs)
        self.env = self._environment(autoescape=False)
        self.html_env = self._environment(autoescape=True)
        self._cache: dict[tuple[str, str, str], _Compiled] = {}

    def _environment(self, *, autoescape: bool) -> SandboxedEnvironment:
        env = _Sandbox(loader=self.loader, undefined=StrictUndefined, autoescape=autoescape,
                       trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False,
                       auto_reload=False, cache_size=-1, finalize=safe_output)
        env.filters.update(FILTERS)
        return env

    # -- lookup --

    def resolve(self, channel: str, name: str, locale: str | None) -> _Compiled:
        """The compiled template for (channel, name), falling back by locale."""
        key = (channel, name, locale or "")
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        tried = []
        for loc in locale_candidates(locale):
            file = f"{channel}/{name}.{loc}.j2"
            tried.append(file)
            try:
                source, filename, _ = self.loader.get_source(self.env, file)
            except TemplateNotFound:
                continue
            try:
                plain = self.env.get_template(file)
                escaped = self.html_env.get_template(file) if channel == "email" else None
            except TemplateSyntaxError as exc:
                raise PushgenError(f"{exc.filename or filename}:{exc.lineno}: template "
                                   f"syntax error: {exc.message}") from None
            compiled = _Compiled(f"{channel}/{name}.{loc}",
                                 hashlib.sha256(source.encode("utf-8")).hexdigest()[:12],
                                 plain, escaped)
            self._cache[key] = compiled
            return compiled
        where = ", ".join([str(d) for d in self.loader.dirs] + ["bundled templates"])
        raise PushgenError(f"no template '{channel}/{name}' for locale {locale} "
                           f"(looked for {', '.join(tried)} in {where})")

    # -- rendering --

    def render(self, ctx: MessageContext, *, template: str | None = None,
               extra: dict[str, Any] | None = None) -> RenderedMessage:
        """Render ``ctx`` with the named template (default: the campaign's) and fit limits.

        ``extra``: more variables for the template (the LLM path passes the model's copy
        blocks as ``llm``)."""
        settings = ctx.settings
        channel = settings.channel
        if channel not in CHANNEL_FIELDS:
            raise PushgenError(f"unknown channel '{channel}' (expected one of "
                               f"{', '.join(CHANNEL_FIELDS)})")
        name = template or settings.template or "default"
        if "/" in name:  # 'sms/promo' is accepted too
            prefix, name = name.split("/", 1)
            if prefix != channel:
                raise PushgenError(f"template '{prefix}/{name}' is for {prefix}, but the "
                                   f"campaign's channel is {channel}")
        locale = ctx.recipient.locale or FALLBACK_LOCALE
        compiled = self.resolve(channel, name, locale)
        items = list(ctx.items[: max(settings.items_per_message, 1)])
        if not items:
            raise PushgenError(f"user {ctx.recipient.external_id}: no recommended items, "
                               "nothing to write about (rank the campaign first)")
        base = {
            "recipient": ctx.recipient, "settings": settings, "campaign": settings,
            "locale": locale, "lang": _lang(locale), "channel": channel,
            "variant": ctx.variant, "greeting_name": greeting_name(ctx.recipient, locale),
            "opt_out": opt_out_line(locale), "site_url": settings.site_url,
            "unsubscribe_url": ctx.unsubscribe_url,
            "title_max": None,
            **(extra or {}),
        }
        if channel == "sms":
            fields = self._render_sms(compiled, base, items, settings.sms_max_segments, locale)
        else:
            fields = self._render_fields(compiled, base, items)
            if channel == "push":
                fields["title"] = truncate_chars(fields["title"], settings.push_title_max)
                fields["body"] = truncate_chars(fields["body"], settings.push_body_max)
                if not fields.get("deep_link") and items:
                    fields["deep_link"] = deep_link_for(settings, items[0].sku)
        return RenderedMessage(Message(channel, fields), compiled.name, compiled.version)

    def _render_fields(self, compiled: _Compiled, base: dict[str, Any],
                       items: list[ItemFacts]) -> dict[str, str]:
        channel = compiled.name.split("/", 1)[0]
        first = list.__getitem__(items, 0) if list.__len__(items) else None  # untracked
        variables = dict(base, items=items, item=first)
        if isinstance(items, _TrackedItems) and first is not None:
            items.used = max(items.used, 1)  # `item` is the first one
        fields: dict[str, str] = {}
        plain = compiled.plain
        try:
            try:
                ctx = plain.new_context(variables)
                html_ctx = compiled.escaped.new_context(variables) if compiled.escaped else None
                for fld in CHANNEL_FIELDS[channel]:
                    if fld == "html" and compiled.escaped is not None:
                        block = compiled.escaped.blocks.get(fld)
                        text = "".join(block(html_ctx)) if block else ""
                    elif fld in plain.blocks:
                        text = "".join(plain.blocks[fld](ctx))
                    elif channel == "sms" and fld == "text":
                        text = "".join(plain.root_render_func(ctx))
                    else:
                        text = ""
                    fields[fld] = _tidy(text, fld)
            except Exception:
                plain.environment.handle_exception()  # re-raises with template line numbers
        except (TemplateError, TypeError, ValueError, ArithmeticError, LookupError,
                AttributeError) as exc:
            # A mistake in a template (typo, bad filter argument...), never a traceback.
            raise _template_error(exc, compiled) from None
        return fields

    def _render_sms(self, compiled: _Compiled, base: dict[str, Any], items: list[ItemFacts],
                    max_segments: int, locale: str) -> dict[str, str]:
        """Render, then shrink: fewer items, then shorter titles, then cut the body."""
        max_segments = max(max_segments, 1)
        zh = _lang(locale) == "zh"

        used = len(items)

        def attempt(n_items: int, title_max: int | None) -> str:
            nonlocal used
            shown = _TrackedItems(items[:n_items])
            text = self._render_fields(compiled, dict(base, title_max=title_max), shown)["text"]
            used = min(used, shown.used)
            return text if zh else gsm_normalize(text)

        text = attempt(len(items), None)
        if sms_info(text).segments <= max_segments:
            return {"text": text}
        for n in range(used - 1, 0, -1):
            shorter = attempt(n, None)
            if sms_info(shorter).segments <= max_segments:
                return {"text": shorter}
            text = shorter
        if items:
            # Shortest readable title: a Chinese character carries about a word (a Latin
            # title in a Chinese SMS keeps the Latin floor).
            title = localized_title(items[0], locale)
            if zh and len(title) > 6:
                title = strip_latin_brand(title) or title  # what the title filter cuts
            floor = 6 if _CJK_CHAR_RE.search(title) else 12
            title_max = len(title)
            for _ in range(3):
                info = sms_info(text)
                over = info.length - sms_capacity(info.encoding, max_segments)
                if over <= 0 or title_max <= floor:
                    break
                title_max = max(title_max - over - 1, floor)
                text = attempt(1, title_max)
        if sms_info(text).segments <= max_segments:
            return {"text": text}
        return {"text": self._cut_sms(text, items, base["settings"], locale, max_segments)}

    @staticmethod
    def _cut_sms(text: str, items: list[ItemFacts], settings: Any, locale: str,
                 max_segments: int) -> str:
        """Cut the text to fit; if that cut away every item, drop the lines above the first
        item (greeting) instead, so the SMS keeps a (shortened) title and the item's link."""
        def named(copy: str) -> bool:
            return mentioned_item(copy, items, settings=settings, titles_only=True) is not None

        fitted = shrink_sms(text, locale, max_segments)
        if named(fitted) or not named(text):
            return fitted
        body, opt_out = split_opt_out(text, locale)
        lines = body.split("\n")
        for i in range(1, len(lines)):
            rest = "\n".join(lines[i:]).strip()
            if not named(rest):
                break
            cut = shrink_sms(f"{rest}\n{opt_out}" if opt_out else rest, locale, max_segments)
            if named(cut):
                return cut
        return fitted

    def list(self) -> list[TemplateInfo]:
        """Every template file visible to this renderer (user files hide bundled ones)."""
        seen: dict[str, TemplateInfo] = {}
        sources: list[tuple[str, Any]] = [(str(d), d) for d in self.loader.dirs]
        sources.append(("bundled", self.loader.bundled))
        for origin, root in sources:
            for channel in CHANNEL_FIELDS:
                folder = root / channel if isinstance(root, Path) else root.joinpath(channel)
                if not folder.is_dir():
                    continue
                for entry in sorted(folder.iterdir(), key=lambda e: e.name):
                    m = re.fullmatch(r"([^._][^.]*)\.([A-Za-z]{2,3}(?:-[A-Za-z0-9]+)*)\.j2",
                                     entry.name)
                    if not m or not entry.is_file():
                        continue
                    name = f"{channel}/{m.group(1)}.{m.group(2)}"
                    if name in seen:
                        continue
                    source = entry.read_text(encoding="utf-8")
                    seen[name] = TemplateInfo(
                        name, channel, m.group(1), m.group(2), origin,
                        hashlib.sha256(source.encode("utf-8")).hexdigest()[:12], str(entry))
        return sorted(seen.values(), key=lambda t: t.name)


def _tidy(text: str, fld: str) -> str:
    """One-line fields collapse whitespace; text bodies lose trailing spaces and extra blanks."""
    if fld in ONE_LINE_FIELDS:
        return _CJK_SPACE_RE.sub("", " ".join(text.split()))
    if fld == "html":
        return text.strip()
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines))


def _template_error(exc: Exception, compiled: _Compiled) -> PushgenError:
    """One line naming the template file and line: 'sms/x.en-US.j2:3: 'itme' is undefined'."""
    filename = compiled.plain.filename or compiled.name
    line = getattr(exc, "lineno", None)
    if line is None:
        frames = [f for f in traceback.extract_tb(exc.__traceback__)
                  if f.filename == filename or f.filename.endswith(".j2")]
        if frames:
            filename, line = frames[-1].filename, frames[-1].lineno
    where = f"{filename}:{line}" if line else filename
    kind = "not allowed in templates" if isinstance(exc, SecurityError) else "template error"
    return PushgenError(f"{where}: {kind}: {exc}")


_renderers: dict[tuple[str, ...], Renderer] = {}


def get_renderer(template_dirs: Sequence[str | os.PathLike[str]] | None = None) -> Renderer:
    """The cached Renderer for these user folders (templates compile once per process)."""
    key = tuple(str(Path(d).resolve()) for d in (template_dirs or []))
    renderer = _renderers.get(key)
    if renderer is None:
        renderer = _renderers[key] = Renderer(template_dirs)
    return renderer


def render(ctx: MessageContext, *, template: str | None = None,
           template_dirs: Sequence[str | os.PathLike[str]] | None = None,
           extra: dict[str, Any] | None = None) -> RenderedMessage:
    """Render one message for ``ctx`` (template default: ``ctx.settings.template``).

    Raises PushgenError naming the file and line for a template mistake.
    """
    return get_renderer(template_dirs).render(ctx, template=template, extra=extra)


def list_templates(template_dirs: Sequence[str | os.PathLike[str]] | None = None
                   ) -> list[TemplateInfo]:
    """All templates by name ('sms/default.en-US'), user folders first."""
    return get_renderer(template_dirs).list()


def clear_cache() -> None:
    """Forget compiled templates (after editing a template file in a long-running process)."""
    _renderers.clear()

