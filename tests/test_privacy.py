"""Erase a customer on request and export what is held about them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pushgen import export as ex
from pushgen import review as rv
from pushgen.cli import app
from pushgen.errors import PushgenError
from pushgen.privacy import customer_data, forget_customer, was_erased
from pushgen.store import llm_cache, now_iso

from _review_helpers import USERS, draft_id, make_shop

WANG = USERS[1]        # (2, "u-wang", "王芳", "wangfang@example.cn", "+8613800138000", ...)
SECRETS = [WANG[2], WANG[3], WANG[4], "8613800138000", WANG[1]]


def shop(tmp_path: Path):
    db = make_shop(tmp_path / "shop.db", campaigns={"news": "email", "spring": "sms"})
    now = now_iso()
    item = db.execute("SELECT id FROM items LIMIT 1").fetchone()[0]
    db["events"].insert_all([{"user_id": uid, "item_id": item, "kind": "purchase",
                              "value": 1, "ts": now} for uid in (1, 2)])
    db["consent_events"].insert({"user_id": 2, "channel": "sms", "consent": 0,
                                 "source": "test", "reason": "unsubscribed", "at": now})
    llm_cache.put(db, "k-wang", model="m", request={"messages": [{"content": "Hi 王芳"}]},
                  content='{"text": "王芳, hello"}')
    llm_cache.put(db, "k-other", model="m", request={"messages": [{"content": "Hi Ana"}]},
                  content='{"text": "Ana, hello"}')
    did = draft_id(db, "news", 2)
    d = rv.get_draft(db, did)
    rv.edit(db, did, {"subject": "王芳，春季精选 wangfang@example.cn"}, actor="ana",
            expected_version=d.version)
    rv.approve_all_passing(db, "spring", actor="ana")
    rv.approve_all_passing(db, "news", actor="ana")
    return db


def test_export_data_has_everything_about_one_customer(tmp_path):
    db = shop(tmp_path)
    data = customer_data(db, "u-wang")
    assert data["customer"]["email"] == WANG[3] and data["customer"]["attributes"]["tier"]
    assert len(data["events"]) == 1 and len(data["consent_events"]) == 1
    assert {d["campaign"] for d in data["drafts"]} == {"news", "spring"}
    assert any(e["action"] == "edit" for e in data["review_events"])
    assert [c["key"] for c in data["llm_cache"]] == ["k-wang"]
    json.dumps(data, ensure_ascii=False, default=str)          # serialisable as it is
    with pytest.raises(PushgenError, match="no customer"):
        customer_data(db, "nobody")


def test_forget_leaves_nothing_in_the_file_wal_or_later_exports(tmp_path):
    db = shop(tmp_path)
    files = [tmp_path / "shop.db", tmp_path / "shop.db-wal"]
    held = b"".join(p.read_bytes() for p in files if p.exists())
    assert all(v.encode() in held for v in SECRETS)          # the test can fail
    drafts_before = db.execute("SELECT count(*) FROM drafts").fetchone()[0]
    report = forget_customer(db, "u-wang", reason="request #12")
    assert report.wal_clean and report.counts["events"] == 1 and report.counts["drafts"] == 2
    assert report.counts["llm_cache"] == 1 and llm_cache.get(db, "k-other") is not None
    # Counts of past campaigns stay right; nothing of theirs can be exported.
    assert db.execute("SELECT count(*) FROM drafts").fetchone()[0] == drafts_before
    out = tmp_path / "out"
    for campaign, channel in (("news", "email"), ("spring", "sms")):
        for fmt in ("csv", "jsonl"):
            rep = ex.export_campaign(db, campaign, channel, fmt=fmt, out_dir=out,
                                     again=True, actor="ops")
            assert 2 not in [db.execute("SELECT user_id FROM drafts WHERE id = ?",
                                        [i]).fetchone()[0] for i in rep.draft_ids]
    blobs = {p: p.read_bytes() for p in [tmp_path / "shop.db", tmp_path / "shop.db-wal",
                                         *out.rglob("*")] if p.is_file()}
    assert blobs and any(p.parent == out for p in blobs)
    for path, blob in blobs.items():
        for value in SECRETS:
            assert value.encode() not in blob, (path.name, value)
    assert was_erased(db, "u-wang") and not was_erased(db, "u-ana")
    row = db.execute("SELECT reason, counts FROM erasures").fetchone()
    assert row[0] == "request #12" and "u-wang" not in row[1]
    with pytest.raises(PushgenError, match="no customer"):
        forget_customer(db, "u-wang")


def test_cli_forget_and_export_data(tmp_path, runner):
    shop(tmp_path)
    path = str(tmp_path / "shop.db")
    out = runner.invoke(app, ["users", "export-data", "u-ana", "--db", path])
    assert out.exit_code == 0 and json.loads(out.stdout)["customer"]["external_id"] == "u-ana"
    refused = runner.invoke(app, ["users", "forget", "u-ana", "--db", path])
    assert refused.exit_code == 1 and "--yes" in refused.output       # no terminal: must confirm
    done = runner.invoke(app, ["users", "forget", "u-ana", "--yes", "--db", path])
    assert done.exit_code == 0 and "erased customer" in done.output
    again = runner.invoke(app, ["users", "forget", "u-ana", "--yes", "--db", path])
    assert again.exit_code == 1 and "no customer" in again.output
    assert "Traceback" not in again.output


def test_only_whole_words_name_a_customer_and_access_needs_more_than_a_first_name(tmp_path):
    db = shop(tmp_path)
    put = lambda key, text: llm_cache.put(db, key, model="m",  # noqa: E731
                                          request={"messages": [{"content": text}]},
                                          content='{"text": "hello"}')
    put("k-full", "Write to Ana Lima")
    put("k-someone", "Hi Anastasia Limaville (u-ana2), anastasia@example.com.au")
    # an access request gets what names this customer, not every 'Ana' nor 'Anastasia'
    assert sorted(c["key"] for c in customer_data(db, "u-ana")["llm_cache"]) == ["k-full"]
    report = forget_customer(db, "u-ana")
    # erasure also drops answers written for any 'Ana' (the first name is all a prompt has)
    assert report.counts["llm_cache"] == 2 and llm_cache.get(db, "k-other") is None
    assert llm_cache.get(db, "k-full") is None
    assert llm_cache.get(db, "k-someone") is not None      # another customer's stays
