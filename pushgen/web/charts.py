"""Small server-side SVG charts for the results page and the shareable HTML report.

No JavaScript, no CDN, no colour needed to read them: every bar and interval carries its
number as text, bars use a hatch pattern as well as a fill, and each chart has a ``<title>``
and ``role="img"`` with an ``aria-label`` for screen readers. All labels are escaped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from html import escape

FONT = "font-family:system-ui,sans-serif;font-size:12px"
_PATTERN = ('<defs><pattern id="{id}" width="6" height="6" patternUnits="userSpaceOnUse" '
            'patternTransform="rotate(45)"><rect width="6" height="6" fill="#9db4d0"/>'
            '<line x1="0" y1="0" x2="0" y2="6" stroke="#35557a" stroke-width="2"/>'
            '</pattern></defs>')


def _svg(width: int, height: int, title: str, body: str) -> str:
    """The chart with its own hatch pattern id (several charts share one HTML page, and
    ids must be unique in it), derived from its content so output stays reproducible."""
    t = escape(title)
    pid = "hatch-" + hashlib.sha1(f"{title}\x1f{body}".encode()).hexdigest()[:10]
    body = body.replace("url(#hatch)", f"url(#{pid})")
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{t}" style="{FONT}">'
            f"<title>{t}</title>{_PATTERN.format(id=pid)}{body}</svg>")


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def funnel_svg(stages: Sequence[tuple[str, int]], title: str = "Funnel") -> str:
    """Horizontal bars, one per stage (sent, delivered, opened...), with count and share of
    the first stage."""
    width, label_w, bar_w, row = 620, 110, 360, 28
    top = max((n for _, n in stages), default=0) or 1
    first = stages[0][1] if stages else 0
    parts = []
    for i, (label, n) in enumerate(stages):
        y = 10 + i * row
        w = int(bar_w * n / top)
        share = f" ({_pct(n / first)})" if first and i else ""
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end">{escape(label)}</text>'
            f'<rect x="{label_w}" y="{y}" width="{max(w, 1)}" height="20" fill="url(#hatch)" '
            f'stroke="#35557a"/>'
            f'<text x="{label_w + w + 6}" y="{y + 15}">{n:,}{share}</text>')
    return _svg(width, 20 + row * len(stages), title, "".join(parts))


def intervals_svg(rows: Sequence[tuple[str, float, float, float]], title: str,
                  zero_line: bool = False) -> str:
    """One row per group: a dot at the rate and a bar from low to high, numbers as text.
    ``zero_line`` draws 0 (for differences such as uplift, which can be negative)."""
    width, label_w, plot_w, row = 620, 150, 300, 30
    lo = min([r[2] for r in rows] + [0.0])
    hi = max([r[3] for r in rows] + [0.0001])
    span = (hi - lo) or 1.0

    def x(v: float) -> float:
        return label_w + plot_w * (v - lo) / span

    parts = []
    if zero_line:
        parts.append(f'<line x1="{x(0):.1f}" y1="4" x2="{x(0):.1f}" '
                     f'y2="{12 + row * len(rows)}" stroke="#000" stroke-dasharray="3,3"/>'
                     f'<text x="{x(0):.1f}" y="{22 + row * len(rows)}" '
                     f'text-anchor="middle">0</text>')
    for i, (label, rate, low, high) in enumerate(rows):
        y = 20 + i * row
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 4}" text-anchor="end">{escape(label)}</text>'
            f'<line x1="{x(low):.1f}" y1="{y}" x2="{x(high):.1f}" y2="{y}" stroke="#000" '
            f'stroke-width="2"/>'
            f'<line x1="{x(low):.1f}" y1="{y - 5}" x2="{x(low):.1f}" y2="{y + 5}" stroke="#000"/>'
            f'<line x1="{x(high):.1f}" y1="{y - 5}" x2="{x(high):.1f}" y2="{y + 5}" '
            f'stroke="#000"/>'
            f'<circle cx="{x(rate):.1f}" cy="{y}" r="4" fill="#000"/>'
            f'<text x="{label_w + plot_w + 10}" y="{y + 4}">{_pct(rate)} '
            f'[{_pct(low)}, {_pct(high)}]</text>')
    return _svg(width, 34 + row * len(rows), title, "".join(parts))


def histogram_svg(counts: Sequence[int], title: str = "Send times (local hour)") -> str:
    """24 vertical bars, one per local hour, with the count above each non-empty bar."""
    width, height, left, bottom = 620, 180, 30, 30
    bar = (width - left - 10) / 24
    top = max(counts, default=0) or 1
    plot_h = height - bottom - 20
    parts = []
    for h, n in enumerate(counts):
        bh = plot_h * n / top
        x0 = left + h * bar
        y0 = height - bottom - bh
        parts.append(f'<rect x="{x0 + 1:.1f}" y="{y0:.1f}" width="{bar - 2:.1f}" '
                     f'height="{bh:.1f}" fill="url(#hatch)" stroke="#35557a"/>')
        if n:
            parts.append(f'<text x="{x0 + bar / 2:.1f}" y="{y0 - 3:.1f}" text-anchor="middle" '
                         f'style="font-size:9px">{n:,}</text>')
        if h % 3 == 0:
            parts.append(f'<text x="{x0 + bar / 2:.1f}" y="{height - bottom + 14}" '
                         f'text-anchor="middle">{h:02d}h</text>')
    parts.append(f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" '
                 f'y2="{height - bottom}" stroke="#000"/>')
    return _svg(width, height, title, "".join(parts))


__all__ = ["funnel_svg", "intervals_svg", "histogram_svg"]
