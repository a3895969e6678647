"""HTML written by a model, cut down to what an email paragraph needs (nh3 / ammonia).

An LLM's HTML is never trusted: before it reaches a draft it keeps only paragraphs,
emphasis, lists, line breaks and links whose target the caller allows (the campaign's own
hosts). Scripts, styles, forms, frames, images, event attributes, ``javascript:`` /
``data:`` / protocol-relative links and comments are removed. Images come only from the
catalog, through the channel's layout template, never from the model.
"""

from __future__ import annotations

from collections.abc import Callable

import nh3

from ..channels import parse_link

# Tags a model may use inside an email block; everything else is unwrapped (text kept).
MODEL_TAGS: frozenset[str] = frozenset(
    {"p", "br", "strong", "em", "b", "i", "u", "ul", "ol", "li", "a", "span", "small"})
# Tags whose content is dropped with them (never shown as text either).
DROPPED_WITH_CONTENT: frozenset[str] = frozenset(
    {"script", "style", "title", "textarea", "select", "option", "noscript", "template",
     "iframe", "object", "embed", "svg", "math", "head"})


def _absolute_http(url: str) -> str | None:
    """The canonical spelling of an absolute http(s) link with a host, read as a browser
    reads it (the one link reader, ``channels.parse_link``); None for anything else,
    including a 'user@' hiding the real host."""
    link = parse_link(url)
    if link.kind == "url" and link.scheme in ("http", "https") and link.host \
            and not link.userinfo:
        return link.url
    return None


def sanitize_model_html(fragment: str, allow_link: Callable[[str], bool]) -> str:
    """``fragment`` with only MODEL_TAGS kept; an ``<a href>`` survives only when it is an
    absolute http(s) URL and ``allow_link(url)`` is true (otherwise the link text stays,
    unlinked). ``allow_link`` and the result see the link's canonical spelling, so
    'https:\\\\evil.example' is judged (and written) as 'https://evil.example'. The guards
    (``guards.Guard``) check the result again like any copy."""

    def attribute_filter(tag: str, attr: str, value: str) -> str | None:
        if tag == "a" and attr == "href":
            url = _absolute_http(value)
            return url if url is not None and allow_link(url) else None
        return None

    return nh3.clean(fragment, tags=set(MODEL_TAGS),
                     clean_content_tags=set(DROPPED_WITH_CONTENT),
                     attributes={"a": {"href"}}, attribute_filter=attribute_filter,
                     url_schemes={"http", "https"}, url_relative="deny",
                     link_rel=None, strip_comments=True)


__all__ = ["MODEL_TAGS", "DROPPED_WITH_CONTENT", "sanitize_model_html"]
