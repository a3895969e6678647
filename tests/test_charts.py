"""SVG charts: well-formed, numbers as text, labels escaped, nothing remote."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from pushgen.web.charts import funnel_svg, histogram_svg, intervals_svg

NS = "{http://www.w3.org/2000/svg}"


def texts(svg: str) -> list[str]:
    return [t.text or "" for t in ET.fromstring(svg).iter(f"{NS}text")]


def test_funnel_has_counts_and_shares_as_text():
    svg = funnel_svg([("sent", 1000), ("delivered", 950), ("opened", 300), ("converted", 21)])
    t = texts(svg)
    assert "sent" in t and "1,000" in t and "950 (95.0%)" in t and "21 (2.1%)" in t
    assert "http://" not in svg.replace("http://www.w3.org/2000/svg", "")


def test_intervals_escape_labels_and_show_bounds():
    svg = intervals_svg([("<script>x</script>", 0.12, 0.07, 0.2), ("variant 2", 0.05, 0.02, 0.1)],
                        "Conversion by variant")
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert "12.0% [7.0%, 20.0%]" in texts(svg)
    ET.fromstring(intervals_svg([("uplift", -0.01, -0.03, 0.02)], "Uplift", zero_line=True))


def test_histogram_has_24_bars():
    counts = [0] * 24
    counts[9], counts[19] = 40, 75
    svg = histogram_svg(counts)
    root = ET.fromstring(svg)
    bars = [r for r in root.iter(f"{NS}rect") if (r.get("fill") or "").startswith("url(#hatch")]
    assert len(bars) == 24 and "75" in texts(svg) and "09h" in texts(svg)
    # each chart's pattern id is its own (several charts share one page), and stable
    pattern = root.find(f"{NS}defs/{NS}pattern").get("id")
    assert bars[0].get("fill") == f"url(#{pattern})" and svg == histogram_svg(counts)
    assert pattern not in funnel_svg([("sent", 3)])
