"""The results page: the same HTML for the review server's Results tab and for the
self-contained file ``pushgen report --html FILE`` writes (styles inline, charts as inline
SVG, no script, nothing remote), so a shared file shows exactly what the tab shows."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from ..web import charts
from .report import FUNNEL, CampaignResults
from .stats import Rate

WEB = Path(__file__).resolve().parent.parent / "web"
TEMPLATES = WEB / "templates"
STYLESHEET = WEB / "static" / "results.css"


def pct(value: float, digits: int = 1) -> str:
    return f"{value * 100:.{digits}f}%"


def interval(rate: Rate) -> str:
    """``12.0% [9.1%, 15.6%]``."""
    return f"{pct(rate.rate)} [{pct(rate.low)}, {pct(rate.high)}]"


def points(value: float) -> str:
    return f"{value * 100:+.2f} pts"


def reported_stages(results: CampaignResults) -> list[str]:
    """Funnel stages the platform reported at least once (an SMS platform reports no opens:
    its opened row would read 0%, which is not what happened)."""
    return [s for s in FUNNEL if results.funnel.get(s)]


def chart_svgs(results: CampaignResults) -> dict[str, Markup]:
    """The page's charts; labels are escaped by ``web.charts``."""
    stages = [("recipients", results.recipients)] + [
        (s, results.funnel[s]) for s in reported_stages(results)]
    out = {"funnel": charts.funnel_svg(stages, f"Funnel of {results.campaign}"),
           "hours": charts.histogram_svg(results.send_hours,
                                         "Planned send times (customer's local hour)")}
    for dim, title in (("variant", "Conversion by variant"),
                       ("generator", "Conversion by generator")):
        groups = results.groups.get(dim) or []
        if groups:
            out[dim] = charts.intervals_svg(
                [(g.label, g.rates["converted"].rate, g.rates["converted"].low,
                  g.rates["converted"].high) for g in groups], title)
    if results.uplift:
        out["uplift"] = charts.intervals_svg(
            [(u.label, u.diff.diff, u.diff.low, u.diff.high) for u in results.uplift],
            "Uplift over the hold-out (purchase rate difference)", zero_line=True)
    return {k: Markup(v) for k, v in out.items()}


def context(results: CampaignResults) -> dict[str, Any]:
    """Everything ``_results.html`` needs."""
    return {"r": results, "charts": chart_svgs(results), "stages": reported_stages(results),
            "pct": pct, "interval": interval, "points": points}


def _env() -> Environment:
    return Environment(loader=FileSystemLoader(str(TEMPLATES)),
                       autoescape=select_autoescape(["html"]), trim_blocks=False)


def render_standalone(results: CampaignResults) -> str:
    """One HTML document with everything inline: a file to mail or attach to a ticket."""
    css = STYLESHEET.read_text(encoding="utf-8")
    return _env().get_template("results_file.html").render(css=Markup(css), **context(results))


def write_html(results: CampaignResults, path: str | os.PathLike[str]) -> Path:
    """Write the standalone page to ``path`` atomically (a complete file or none)."""
    from ..errors import PushgenError
    from ..export import write_text_atomic

    target = Path(path)
    if target.is_dir():
        raise PushgenError(f"{target}: is a folder; give a file name, e.g. results.html")
    if not target.parent.is_dir():
        raise PushgenError(f"{target}: folder {target.parent} does not exist")
    html = render_standalone(results)
    try:
        write_text_atomic(target, lambda fh: fh.write(html))
    except OSError as exc:
        raise PushgenError(f"cannot write {target}: {exc.strerror or exc}") from None
    return target


__all__ = ["render_standalone", "write_html", "context", "chart_svgs", "pct", "interval"]
