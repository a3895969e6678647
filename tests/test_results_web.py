"""The Results tab: numbers from the database, the page's security rules, and a real run
in headless Chromium against `pushgen review serve` with a screenshot."""

from __future__ import annotations

import re

import pytest

from pushgen.results.page import interval
from pushgen.results.report import campaign_results
from pushgen.web.server import create_app

from test_results_report import planted  # noqa: F401  (the planted campaign fixture)
from test_web import CHROMIUM, CHROMIUM_ARGS, browser_api, serving

TOKEN = "results-token-0123456789"


def test_results_tab_shows_the_databases_numbers(planted, db_path):  # noqa: F811
    c = create_app(db_path, TOKEN).test_client()
    r = c.get("/results", query_string={"campaign": "xmas"})
    assert r.status_code == 200
    html = r.get_data(as_text=True)
    res = campaign_results(planted, "xmas")
    v1 = res.groups["variant"][0]
    assert interval(v1.rates["converted"]) in html               # 13.2% [..., ...]
    assert "variant 2 (random pick): <b>40</b> customers" in html
    assert "hold-out: <b>20</b> customers" in html
    assert html.count("<svg") == 5 and 'id="tab-results"' in html
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/static/review.js">']
    # the first campaign is shown without asking; an unknown one is a message, not a 500
    assert "Results of xmas" in c.get("/results").get_data(as_text=True)
    r = c.get("/results", query_string={"campaign": "nope"})
    assert r.status_code == 200 and "no campaign named" in r.get_data(as_text=True)
    # the review queue of the campaign shows its split
    queue = c.get("/", query_string={"campaign": "xmas", "status": ""}).get_data(as_text=True)
    split = re.search(r'id="ab-split">(.*?)<div class="side-title queue-title">', queue, re.S)
    assert split and re.sub(r"<[^>]+>|\s+", " ", split.group(1)).split() == [
        "A/B", "split", "of", "xmas", "hold-out", "(no", "message)", "20", "variant", "1",
        "40", "variant", "2", "40"]


def test_results_tab_escapes_labels_and_needs_the_token_when_remote(planted, db_path):  # noqa: F811
    planted.execute("UPDATE drafts SET template_name = '<img src=x onerror=alert(1)>' "
                    "WHERE user_id = 50")
    planted.conn.commit()
    html = create_app(db_path, TOKEN).test_client().get(
        "/results?campaign=xmas").get_data(as_text=True)
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    remote = create_app(db_path, TOKEN, remote=True).test_client()
    assert remote.get("/results").status_code == 403
    assert remote.get(f"/results?token={TOKEN}").status_code == 302
    assert remote.get("/results").status_code == 200


@pytest.fixture
def served(planted, db_path):  # noqa: F811
    with serving(db_path) as url:
        yield url


def test_results_tab_in_chromium(served, planted, tmp_path):  # noqa: F811
    playwright = browser_api()
    base = served.split("/?")[0]
    res = campaign_results(planted, "xmas")
    v1, v2 = res.groups["variant"]
    overall = res.uplift[0]
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            errors: list[str] = []
            requests: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("request", lambda r: requests.append(r.url))
            page.goto(served)
            with page.expect_navigation():
                page.click("#tab-results")
            assert page.url.startswith(base + "/results")
            assert page.locator("#results-title").inner_text().startswith("Results of xmas")
            row1 = page.locator('#table-variant tr[data-group="variant 1"]').inner_text()
            row2 = page.locator(
                '#table-variant tr[data-group="variant 2 (random pick)"]').inner_text()
            assert "38" in row1 and interval(v1.rates["converted"]) in row1
            assert interval(v2.rates["converted"]) in row2
            uplift = page.locator('#uplift-table tr[data-group="all variants"]').inner_text()
            assert interval(overall.treated) in uplift and "80" in uplift
            hold = page.locator('#uplift-table tr[data-group="hold-out"]').inner_text()
            assert interval(overall.holdout) in hold
            funnel = page.locator('#funnel-table tr[data-stage="converted"]').inner_text()
            assert "6" in funnel and "7.7%" in funnel                # 6 of 78 recipients
            assert page.locator("svg[role=img]").count() == 5
            assert page.locator("text=not significant (could be chance)").count() >= 1
            shot = tmp_path / "results.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            assert errors == []
            assert all(u.startswith(base) for u in requests), requests   # nothing remote
        finally:
            browser.close()
