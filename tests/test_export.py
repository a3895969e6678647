"""Export of approved drafts: content parsed back, consent re-check, idempotence, atomicity."""

from __future__ import annotations

import csv
import json
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest

from pushgen import export as ex
from pushgen import review as rv
from pushgen.cli import app
from pushgen.errors import PushgenError

from _review_helpers import USERS, draft_id, draft_row, events, make_shop, settings, unsub_url


@pytest.fixture
def db(db_path):
    db = make_shop(db_path)
    for campaign in ("news", "spring", "app"):
        rv.approve_all_passing(db, campaign, actor="lead")
    return db


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _body(part) -> str:
    # set_content stores CRLF line ends (RFC 5322) and ends the part with one line break.
    text = part.get_content().replace("\r\n", "\n")
    assert text.endswith("\n")
    return text[:-1]


def test_email_csv_round_trip(db, tmp_path):
    out = tmp_path / "out"
    rep = ex.export_campaign(db, "news", "email", fmt="csv", out_dir=out,
                             send_at="2026-12-01T09:00:00+08:00", actor="ops")
    assert rep.exported == 3 and rep.skipped == 0 and rep.path.parent == out
    raw = rep.path.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")  # plain UTF-8, no BOM
    with open(rep.path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["email", "first_name", "subject", "preheader", "html",
                                     "text", "campaign", "draft_id", "variant", "send_at",
                                     "from", "unsubscribe_url"]
        rows = list(reader)
    by_email = {r["email"]: r for r in rows}
    wang = by_email["wangfang@example.cn"]
    stored = draft_row(db, int(wang["draft_id"]))["content"]
    assert wang["subject"] == "王芳，春季精选为您准备好了" == stored["subject"]
    assert wang["html"] == stored["html"]            # commas, quotes, newlines, &amp;
    assert '"new" &amp; light' in wang["html"] and "\n" in wang["html"]
    assert wang["text"] == stored["text"] and wang["preheader"] == stored["preheader"]
    assert wang["first_name"] == "王芳" and by_email["ana@example.com"]["first_name"] == "Ana"
    assert {r["campaign"] for r in rows} == {"news"}
    assert {r["send_at"] for r in rows} == {"2026-12-01T09:00:00+08:00"}
    assert {r["from"] for r in rows} == {"Acme Shop <news@acme.example>"}
    assert by_email["wangfang@example.cn"]["unsubscribe_url"] == unsub_url(db, "news", USERS[1])
    assert by_email["wangfang@example.cn"]["unsubscribe_url"] in wang["text"]
    for r in rows:
        d = draft_row(db, int(r["draft_id"]))
        assert d["status"] == "exported" and d["exported_at"]
        ev = events(db, d["id"])[-1]
        assert (ev["action"], ev["actor"], ev["status_before"], ev["status_after"]) == \
            ("export", "ops", "approved", "exported")
        assert rep.path.name in ev["reason"]


def test_eml_is_multipart_alternative_with_one_click_unsubscribe(db, tmp_path):
    rep = ex.export_campaign(db, "news", "email", fmt="eml", out_dir=tmp_path / "out", actor="ops")
    assert rep.path.is_dir() and rep.exported == 3
    did = draft_id(db, "news", 2)
    assert _files(rep.path) == sorted(f"{i}.eml" for i in rep.draft_ids)
    raw = (rep.path / f"{did}.eml").read_bytes()
    assert max(raw) < 128  # 7-bit clean: headers encoded, bodies quoted-printable
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    stored = draft_row(db, did)["content"]
    assert msg.get_content_type() == "multipart/alternative"
    assert str(msg["Subject"]) == "王芳，春季精选为您准备好了"
    assert str(msg["From"]) == "Acme Shop <news@acme.example>"
    assert msg["To"].addresses[0].addr_spec == "wangfang@example.cn"
    assert msg["To"].addresses[0].display_name == "王芳"
    assert msg["Date"] is not None and msg["Message-ID"].endswith("@acme.example>")
    unsub = unsub_url(db, "news", USERS[1])
    assert msg["List-Unsubscribe"] == (f"<{unsub}>, "
                                       "<mailto:news@acme.example?subject=unsubscribe%20u-wang>")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    plain, html = list(msg.iter_parts())
    assert plain.get_content_type() == "text/plain" and html.get_content_type() == "text/html"
    assert plain.get_content_charset() == html.get_content_charset() == "utf-8"
    assert _body(plain) == stored["text"] and _body(html) == stored["html"]
    assert unsub in _body(plain)


def test_jsonl_round_trip_and_sms_push_csv(db, tmp_path):
    rep = ex.export_campaign(db, "news", "email", fmt="jsonl", out_dir=tmp_path / "out")
    lines = [json.loads(line) for line in rep.path.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 3
    wang = next(x for x in lines if x["external_id"] == "u-wang")
    stored = draft_row(db, wang["draft_id"])["content"]
    assert {k: wang[k] for k in stored} == stored
    assert (wang["email"], wang["locale"], wang["channel"], wang["variant"]) == \
        ("wangfang@example.cn", "zh-CN", "email", 1)

    sms = ex.export_campaign(db, "spring", "sms", fmt="csv", out_dir=tmp_path / "out")
    with open(sms.path, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["phone", "external_id", "text", "campaign", "draft_id", "variant", "send_at"]
    wang_sms = next(r for r in rows if r["external_id"] == "u-wang")
    assert wang_sms["phone"] == "+8613800138000"
    assert wang_sms["text"] == draft_row(db, int(wang_sms["draft_id"]))["content"]["text"]

    push = ex.export_campaign(db, "app", "push", fmt="jsonl", out_dir=tmp_path / "out")
    first = json.loads(push.path.read_text(encoding="utf-8").splitlines()[0])
    assert first["deep_link"] == "shop://item/SKU-1" and first["title"].startswith("Ana")
    with pytest.raises(PushgenError, match="sms exports as csv or jsonl, not 'eml'"):
        ex.export_campaign(db, "spring", "sms", fmt="eml", out_dir=tmp_path / "out")


def test_consent_rechecked_at_export(db, tmp_path):
    db.execute("UPDATE users SET consent_email = 0 WHERE external_id = 'u-bob'")
    db.execute("UPDATE users SET email = '' WHERE external_id = 'u-ana'")
    rep = ex.export_campaign(db, "news", "email", fmt="csv", out_dir=tmp_path / "out")
    assert (rep.exported, rep.skipped_no_consent, rep.skipped_no_contact) == (1, 1, 1)
    with open(rep.path, encoding="utf-8", newline="") as fh:
        assert [r["email"] for r in csv.DictReader(fh)] == ["wangfang@example.cn"]
    # skipped drafts stay approved (not exported), so a later export can still pick them up
    assert draft_row(db, draft_id(db, "news", 3))["status"] == "approved"
    assert draft_row(db, draft_id(db, "news", 2))["status"] == "exported"


def test_reexport_is_idempotent_and_again_writes_a_new_file(db, tmp_path):
    first = ex.export_campaign(db, "news", "email", fmt="csv", out_dir=tmp_path / "out")
    content = first.path.read_bytes()
    second = ex.export_campaign(db, "news", "email", fmt="csv", out_dir=tmp_path / "out")
    assert second.exported == 0 and second.path is None
    assert _files(tmp_path / "out") == [first.path.name] and first.path.read_bytes() == content
    again = ex.export_campaign(db, "news", "email", fmt="csv", out_dir=tmp_path / "out", again=True)
    assert again.exported == 3 and again.path != first.path
    assert first.path.read_bytes() == content
    assert sorted(_files(tmp_path / "out")) == sorted([first.path.name, again.path.name])
    ev = events(db, draft_id(db, "news", 1))
    assert [(e["action"], e["status_before"]) for e in ev][-2:] == \
        [("export", "approved"), ("export", "exported")]


def test_only_approved_drafts_leave(db_path, tmp_path):
    db = make_shop(db_path, failing={"news": [3]})
    rep = ex.export_campaign(db, "news", "email", fmt="csv", out_dir=tmp_path / "o")
    assert rep.exported == 0 and rep.path is None and rep.not_approved == 3
    assert not (tmp_path / "o").exists()
    rv.approve(db, draft_id(db, "news", 1), actor="a")
    rv.reject(db, draft_id(db, "news", 2), actor="a", reason="off brand")
    rep = ex.export_campaign(db, "news", "email", fmt="csv", out_dir=tmp_path / "o")
    assert rep.draft_ids == [draft_id(db, "news", 1)] and rep.not_approved == 2


def test_crash_mid_csv_write_leaves_nothing(db, tmp_path, monkeypatch):
    def broken(fh, channel, records, neutralised):
        fh.write("email,first_name\nhalf,written\n")
        raise OSError("disk full")

    monkeypatch.setattr(ex, "_write_csv", broken)
    with pytest.raises(PushgenError, match="cannot write the export into folder .*disk full"):
        ex.export_campaign(db, "news", "email", fmt="csv", out_dir=tmp_path / "out")
    assert _files(tmp_path / "out") == []   # no partial file, no temp file
    rows = [draft_row(db, draft_id(db, "news", u)) for u in (1, 2, 3)]
    assert {r["status"] for r in rows} == {"approved"}
    assert all(r["exported_at"] is None for r in rows)
    # the audit trail says what happened: marked for export, then undone
    assert all([e["action"] for e in events(db, r["id"])][-2:] == ["export", "export_undone"]
               for r in rows)
    assert [r["state"] for r in db.query("SELECT state FROM exports")] == ["undone"]


def test_crash_mid_eml_write_leaves_no_folder(db, tmp_path, monkeypatch):
    real = ex.build_eml
    calls = []

    def flaky(msg, s, *, date):
        calls.append(msg.draft_id)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return real(msg, s, date=date)

    monkeypatch.setattr(ex, "build_eml", flaky)
    with pytest.raises(RuntimeError):
        ex.export_campaign(db, "news", "email", fmt="eml", out_dir=tmp_path / "out")
    assert _files(tmp_path / "out") == []
    assert {draft_row(db, draft_id(db, "news", u))["status"] for u in (1, 2, 3)} == {"approved"}


def test_failure_marking_drafts_removes_the_file(db, tmp_path, monkeypatch):
    from pushgen.store import reviews as store

    def fail(*a, **kw):
        raise RuntimeError("database went away")

    monkeypatch.setattr(store, "set_status_many", fail)
    with pytest.raises(RuntimeError):
        ex.export_campaign(db, "news", "email", fmt="csv", out_dir=tmp_path / "out")
    assert _files(tmp_path / "out") == []


def test_send_at_validation():
    assert ex.parse_send_at("2026-12-01T09:00Z") == "2026-12-01T09:00:00+00:00"
    with pytest.raises(PushgenError, match="has no time zone"):
        ex.parse_send_at("2026-12-01T09:00")
    with pytest.raises(PushgenError, match="not an ISO 8601 time"):
        ex.parse_send_at("tomorrow")


def test_cli_export(db, db_path, runner, tmp_path):
    out = tmp_path / "exports"
    r = runner.invoke(app, ["export", "email", "--campaign", "news", "--format", "eml",
                            "--out", str(out), "--db", str(db_path)])
    assert r.exit_code == 0, r.output
    assert "wrote 3 email message(s) to" in r.output
    (folder,) = out.iterdir()
    assert len(list(folder.glob("*.eml"))) == 3
    r = runner.invoke(app, ["export", "email", "--campaign", "news", "--out", str(out),
                            "--db", str(db_path)])
    assert r.exit_code == 0 and "Nothing to export" in r.output and "--again" in r.output
    r = runner.invoke(app, ["export", "sms", "--campaign", "spring", "--format", "eml",
                            "--out", str(out), "--db", str(db_path)])
    assert r.exit_code == 1
    r = runner.invoke(app, ["export", "push", "--campaign", "app", "--out", str(out),
                            "--send-at", "2026-12-01T09:00", "--db", str(db_path)])
    assert r.exit_code == 1
    assert draft_row(db, draft_id(db, "app", 1))["status"] == "approved"


def test_catalog_change_since_approval_reopens_the_draft(db, db_path, runner, tmp_path):
    db.execute("UPDATE items SET sale_price = 39.0 WHERE sku = 'SKU-1'")
    db.execute("UPDATE items SET stock = 0 WHERE sku = 'SKU-2'")
    db.conn.commit()
    r = runner.invoke(app, ["export", "sms", "-c", "spring", "--out", str(tmp_path / "o"),
                            "--db", str(db_path)])
    assert r.exit_code == 0, r.output
    assert "skipped 3: catalog changed since approval" in r.output
    assert "SKU-1 sale_price 34.00 -> 39.00" in r.output
    assert not (tmp_path / "o").exists()
    d = draft_row(db, draft_id(db, "spring", 1))
    assert d["status"] == "draft"
    ev = events(db, d["id"])[-1]
    assert (ev["action"], ev["status_before"], ev["status_after"]) == \
        ("reopen", "approved", "draft")
    assert ev["reason"] == ("catalog changed since approval: SKU-1 sale_price 34.00 -> 39.00; "
                            "SKU-2 out of stock")
    # inactive and currency changes count too; an unchanged catalog exports normally
    db.execute("UPDATE items SET sale_price = CASE sku WHEN 'SKU-1' THEN 34.0 END, "
               "stock = NULL, active = 0")
    db.conn.commit()
    rv.approve_all_passing(db, "app", actor="lead")
    rep = ex.export_campaign(db, "app", "push", fmt="csv", out_dir=tmp_path / "o")
    assert (rep.exported, rep.skipped_stale) == (0, 3)
    assert "SKU-1 inactive" in rep.stale_reasons[0]
    db.execute("UPDATE items SET active = 1")
    db.conn.commit()
    rv.approve_all_passing(db, "app", actor="lead")
    rep = ex.export_campaign(db, "app", "push", fmt="csv", out_dir=tmp_path / "o")
    assert (rep.exported, rep.skipped_stale) == (3, 0)


def test_catalog_changes_compares_every_fact():
    items = [{"sku": "A", "price": 19.99, "sale_price": None, "currency": "USD"},
             {"sku": "B", "price": 5.0, "currency": "USD"}]
    same = {"A": {"price": 19.99, "sale_price": None, "currency": "USD", "active": 1,
                  "stock": 3},
            "B": {"price": 5.0, "sale_price": None, "currency": "USD", "active": 1,
                  "stock": None}}
    assert ex.catalog_changes(items, same) == []
    moved = {"A": {**same["A"], "price": 24.99, "currency": "EUR"}}
    assert ex.catalog_changes(items, moved) == ["A price 19.99 -> 24.99", "A currency USD -> EUR",
                                                "B no longer in the catalog"]


def _add_variant(db, campaign: str, user_id: int, variant: int) -> int:
    row = draft_row(db, draft_id(db, campaign, user_id))
    row = {**row, "variant": variant, "status": "draft", "version": 1}
    del row["id"]
    for key in ("content", "checks", "items"):
        row[key] = json.dumps(row[key], ensure_ascii=False)
    return db["drafts"].insert(row).last_pk


def test_one_message_per_user_lowest_variant(db, tmp_path):
    extra = _add_variant(db, "spring", 1, 2)
    rv.approve(db, extra, actor="lead")
    rep = ex.export_campaign(db, "spring", "sms", fmt="jsonl", out_dir=tmp_path / "o")
    lines = [json.loads(x) for x in rep.path.read_text(encoding="utf-8").splitlines()]
    assert sorted((x["external_id"], x["variant"]) for x in lines) == \
        [("u-ana", 1), ("u-bob", 1), ("u-wang", 1)]
    assert (rep.exported, rep.skipped_extra_variant) == (3, 1)
    assert draft_row(db, extra)["status"] == "approved"
    # a later export must not send variant 2 to a customer who already got variant 1
    later = ex.export_campaign(db, "spring", "sms", fmt="csv", out_dir=tmp_path / "o")
    assert (later.exported, later.skipped_extra_variant, later.path) == (0, 1, None)


def test_export_errors_are_one_line(db, db_path, runner, tmp_path):
    r = runner.invoke(app, ["export", "email", "-c", "news", "--out", "/proc/nope",
                            "--db", str(db_path)])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "cannot write the export into folder /proc/nope" in r.output
    assert draft_row(db, draft_id(db, "news", 1))["status"] == "approved"
    r = runner.invoke(app, ["export", "email", "-c", "app", "--out", str(tmp_path / "o"),
                            "--db", str(db_path)])
    assert r.exit_code == 1 and "campaign app has push drafts, not email" in r.output


def test_nothing_to_export_says_why(db_path, runner, tmp_path):
    make_shop(db_path)
    args = ["export", "sms", "-c", "spring", "--out", str(tmp_path / "o"), "--db", str(db_path)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0 and "nothing approved yet" in r.output and "--again" not in r.output
