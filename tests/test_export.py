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

from _review_helpers import USERS, draft_id, draft_row, events, make_shop, unsub_url


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


def _day(offset: int = 2) -> str:
    import datetime as dt
    return (dt.datetime.now(dt.timezone.utc).date() + dt.timedelta(days=offset)).isoformat()


def test_email_csv_round_trip(db, tmp_path):
    out = tmp_path / "out"
    day = _day()
    rep = ex.export_campaign(db, "news", "email", fmt="csv", out_dir=out,
                             send_window=day, timezone="Asia/Shanghai", actor="ops")
    assert rep.exported == 3 and rep.skipped == 0 and rep.path.parent == out
    raw = rep.path.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")  # plain UTF-8, no BOM
    with open(rep.path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["email", "first_name", "subject", "preheader", "html",
                                     "text", "campaign", "draft_id", "variant", "send_at",
                                     "from", "unsubscribe_url", "send_time_reason"]
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
    # no customer has a timezone or any history: the shop's (Asia/Shanghai), at midday
    assert {r["send_at"] for r in rows} == {f"{day}T04:00:00Z"}
    assert {r["send_time_reason"] for r in rows} == {
        "shop-wide history: usually active 12:00-13:00 local"}
    assert rep.shop_timezone == "Asia/Shanghai" and rep.shop_timezone_customers == 3
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
    # in the file itself, one plain line a mail client reads (no RFC 2047 encoded words)
    assert f"\r\nList-Unsubscribe: <{unsub}>, <mailto:".encode() in raw
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
    assert list(rows[0]) == ["phone", "external_id", "text", "campaign", "draft_id", "variant",
                             "send_at", "send_time_reason"]
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


def test_send_at_is_replaced_by_send_windows():
    assert ex.parse_send_at(None) is None
    with pytest.raises(PushgenError, match="--send-window"):
        ex.parse_send_at("2026-12-01T09:00Z")
    with pytest.raises(PushgenError, match="already ended"):
        ex.send_options("sms", send_window="2020-01-01")
    with pytest.raises(PushgenError, match="unknown timezone"):
        ex.send_options("sms", timezone="Mars/Olympus")


def test_cli_export(db, db_path, runner, tmp_path):
    out = tmp_path / "exports"
    r = runner.invoke(app, ["export", "email", "--campaign", "news", "--format", "eml",
                            "--out", str(out), "--db", str(db_path)])
    assert r.exit_code == 0, r.output
    assert "wrote 3 email message(s) to" in r.output
    (folder,) = out.iterdir()
    assert len(list(folder.glob("*.eml"))) == 3
    # The same approved drafts in a second format need no --again: a draft is exported
    # once per format, and the report says these messages went out before.
    r = runner.invoke(app, ["export", "email", "--campaign", "news", "--out", str(out),
                            "--db", str(db_path)])
    assert r.exit_code == 0 and "wrote 3 email message(s)" in r.output
    assert "exported before in another format" in r.output
    assert len(list(out.glob("news-email-*.csv"))) == 1
    r = runner.invoke(app, ["export", "email", "--campaign", "news", "--out", str(out),
                            "--db", str(db_path)])
    assert r.exit_code == 0 and "Nothing to export" in r.output and "--again" in r.output
    assert "already exported as csv" in r.output
    r = runner.invoke(app, ["export", "email", "--campaign", "news", "--format", "jsonl",
                            "--out", str(out), "--json", "--db", str(db_path)])
    rep = json.loads(r.stdout)
    assert rep["exported"] == 3 and rep["other_format"] == 3 and rep["fmt"] == "jsonl"
    assert rep["path"].endswith(".jsonl") and rep["already_exported"] == 0
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
    later = ex.export_campaign(db, "spring", "sms", fmt="jsonl", out_dir=tmp_path / "o")
    assert (later.exported, later.skipped_extra_variant, later.path) == (0, 1, None)
    # in another format the same three messages are written again, never variant 2
    as_csv = ex.export_campaign(db, "spring", "sms", fmt="csv", out_dir=tmp_path / "o")
    assert (as_csv.exported, as_csv.other_format, as_csv.skipped_extra_variant) == (3, 3, 1)
    assert extra not in as_csv.draft_ids


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


# --- issue 9: safe cells, safe headers, exactly once -------------------------------------------

import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402


def _set_user(db, user_id: int, **values) -> None:
    db["users"].update(user_id, values)
    db.conn.commit()


@pytest.mark.parametrize("value", ["=1+2", "@SUM(1+1)", "+cmd|' /C calc'!A0", "-2+3",
                                   "\t=1+2", "\r=1+2", " =HYPERLINK(\"https://evil.example\")"])
def test_formula_injection_is_neutralised_in_parsed_csv(db, tmp_path, value):
    _set_user(db, 1, name=value + " Lima")
    db.execute("UPDATE drafts SET content = json_set(content, '$.subject', ?) WHERE id = ?",
               [value + " picks", draft_id(db, "news", 1)])
    db.conn.commit()
    # the subject edit happened behind the review's back: export re-checks it
    rep = ex.export_campaign(db, "news", "email", fmt="csv", out_dir=tmp_path / "o")
    with open(rep.path, encoding="utf-8", newline="") as fh:
        rows = {r["email"]: r for r in csv.DictReader(fh)}
    if draft_id(db, "news", 1) in rep.draft_ids:
        ana = rows["ana@example.com"]
        assert ana["subject"] == "'" + value + " picks"
        if value.split()[0]:
            assert ana["first_name"].startswith("'")
        assert any("prefixed with '" in n for n in rep.notes)
    for r in rows.values():
        for cell in r.values():
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell


def test_phone_numbers_keep_their_plus_and_formula_phones_are_refused(db, tmp_path):
    _set_user(db, 2, phone="=1+2")
    rep = ex.export_campaign(db, "spring", "sms", fmt="csv", out_dir=tmp_path / "o")
    with open(rep.path, encoding="utf-8", newline="") as fh:
        phones = [r["phone"] for r in csv.DictReader(fh)]
    assert phones == ["+15550000001", "+15550000003"]
    assert rep.skipped_bad_contact == 1
    assert ex.csv_safe("+1 (415) 555-0199", phone=True) == ("+1 (415) 555-0199", False)
    assert ex.csv_safe("+1+cmd", phone=True) == ("'+1+cmd", True)
    assert ex.csv_safe(42) == (42, False)


def test_names_with_template_syntax_or_line_breaks_are_safe_merge_fields(db, tmp_path):
    _set_user(db, 1, name="{{ 7*7 }} Ana")
    _set_user(db, 3, name="Bob\r\nStone")
    rep = ex.export_campaign(db, "news", "email", fmt="csv", out_dir=tmp_path / "o")
    with open(rep.path, encoding="utf-8", newline="") as fh:
        first = {r["email"]: r["first_name"] for r in csv.DictReader(fh)}
    assert first["ana@example.com"] == "{ {"
    rep = ex.export_campaign(db, "news", "email", fmt="jsonl", out_dir=tmp_path / "j",
                             again=True)
    names = {json.loads(x)["email"]: json.loads(x)["name"]
             for x in rep.path.read_text(encoding="utf-8").splitlines()}
    assert names["ana@example.com"] == "{ { 7*7 } } Ana"
    assert names["bob@example.com"] == "Bob Stone"


def test_crlf_name_exports_as_one_encoded_header(db, tmp_path):
    _set_user(db, 1, name="Eve Smith\r\nX-Evil: 2")
    _set_user(db, 2, email="wang@example.cn\r\nBcc: all@evil.example")
    rep = ex.export_campaign(db, "news", "email", fmt="eml", out_dir=tmp_path / "o")
    assert rep.exported == 2 and rep.skipped_bad_contact == 1
    raw = (rep.path / f"{draft_id(db, 'news', 1)}.eml").read_bytes()
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    assert msg["X-Evil"] is None and msg["Bcc"] is None
    assert msg["To"].addresses[0].display_name == "Eve Smith X-Evil: 2"
    assert msg["To"].addresses[0].addr_spec == "ana@example.com"
    assert b"\r\nX-Evil" not in raw and b"\nX-Evil" not in raw


def test_exports_carry_from_unsubscribe_and_push_token_columns(db, tmp_path):
    _set_user(db, 1, push_token="apns-token-1")
    rep = ex.export_campaign(db, "app", "push", fmt="csv", out_dir=tmp_path / "o")
    with open(rep.path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames[-2:] == ["push_token", "send_time_reason"]
        tokens = {r["external_id"]: r["push_token"] for r in reader}
    assert tokens == {"u-ana": "apns-token-1", "u-wang": "", "u-bob": ""}
    rep = ex.export_campaign(db, "news", "email", fmt="jsonl", out_dir=tmp_path / "o")
    line = json.loads(rep.path.read_text(encoding="utf-8").splitlines()[0])
    assert line["from"] == "Acme Shop <news@acme.example>"
    assert line["unsubscribe_url"].startswith("https://acme.example/unsubscribe?t=")


def test_unsubscribe_tokens_appear_only_where_they_belong(db, tmp_path):
    """Finding 1 closed: the signed token is in the email's own link and column only."""
    tokens = [unsub_url(db, "news", u).rpartition("=")[2] for u in USERS]
    for channel, campaign in (("sms", "spring"), ("push", "app")):
        rep = ex.export_campaign(db, campaign, channel, fmt="csv", out_dir=tmp_path / channel)
        text = rep.path.read_text(encoding="utf-8")
        assert not any(t in text or t[-64:] in text for t in tokens)
    rep = ex.export_campaign(db, "news", "email", fmt="csv", out_dir=tmp_path / "email")
    with open(rep.path, encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            holders = {k for k, v in row.items() if any(t[-64:] in v for t in tokens)}
            assert holders == {"html", "text", "unsubscribe_url"}
    # stored check messages (shown to reviewers, fed back to a model) hold no full token
    for (checks,) in db.execute("SELECT checks FROM drafts"):
        assert not any(t[-64:] in checks for t in tokens)
    # and the shop's secret is in no export at all
    from pushgen.signing import shop_secret

    secret = shop_secret(db).decode()
    for f in tmp_path.rglob("*.*"):
        if f.is_file() and f.suffix in (".csv", ".jsonl", ".eml"):
            assert secret not in f.read_text(encoding="utf-8")


def test_old_forgeable_token_in_an_approved_draft_is_stopped_at_export(db, tmp_path):
    """A draft approved before the secret existed carries hmac('pushgen', ...)[:20]: the
    export re-checks it against the signed link and sends it back to review."""
    import hashlib
    import hmac

    did = draft_id(db, "news", 1)
    old = hmac.new(b"pushgen", b"news\x1fu-ana", hashlib.sha256).hexdigest()[:20]
    new = unsub_url(db, "news", USERS[0])
    db.execute("UPDATE drafts SET content = replace(content, ?, ?) WHERE id = ?",
               [new, new.rpartition("=")[0] + "=" + old, did])
    db.conn.commit()
    rep = ex.export_campaign(db, "news", "email", fmt="csv", out_dir=tmp_path / "o")
    assert did not in rep.draft_ids and rep.skipped_failing == 1
    assert "email.unsubscribe" in rep.failing_reasons[0]
    row = draft_row(db, did)
    assert row["status"] == "draft" and row["passed"] == 0
    assert "fails a check now" in events(db, did)[-1]["reason"]


def test_demo_sender_is_refused_without_the_flag(db_path, tmp_path, runner):
    db = make_shop(db_path)
    rv.approve_all_passing(db, "news", actor="lead")
    demo = json.dumps({"name": "news", "channel": "email"})
    db.execute("UPDATE campaigns SET config = ? WHERE name = 'news'", [demo])
    db.conn.commit()
    args = ["export", "email", "-c", "news", "--out", str(tmp_path / "o"), "--db", str(db_path)]
    r = runner.invoke(app, args)
    assert r.exit_code == 1 and "demo sender_name, sender_email, postal_address" in r.output
    assert "--allow-demo-sender" in r.output and not (tmp_path / "o").exists()
    r = runner.invoke(app, args + ["--allow-demo-sender"])
    assert r.exit_code == 0, r.output
    # (the drafts were written for another sender, so the re-check sends them back)
    assert "failing a check now" in r.output


def test_stale_temporary_exports_are_cleaned_up_with_a_note(db, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / ".news-email-20260101T000000Z.csv.x1y2z3.tmp").write_text("half")
    folder = out / ".news-email-20260101T000001Z.pushgen-tmp"
    folder.mkdir()
    (folder / "1.eml").write_text("half")
    (out / ".keep-me.tmp").write_text("a user's file")
    ours = ex.database_tag(db)
    (out / f".news-email-20260101T000002Z.csv.{ours}.pushgen-tmp").write_text("half")
    # another shop exporting into the same folder: its file may be its export running now
    theirs = ".news-email-20260101T000003Z.csv.0123456789ab.pushgen-tmp"
    (out / theirs).write_text("another database's export in progress")
    rep = ex.export_campaign(db, "news", "email", fmt="csv", out_dir=out)
    assert _files(out) == sorted([".keep-me.tmp", theirs, rep.path.name])
    assert any("removed 3 unfinished temporary export(s)" in n for n in rep.notes)
    # a name another database is writing under is taken (its file would be renamed over)
    for _ in range(3):                      # (the clock may turn a second in between)
        stamp = ex._dt.datetime.now(ex._dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        (out / f".news-email-{stamp}.csv.0123456789ab.pushgen-tmp").write_text("busy")
        name = ex._target(out, "news", "email", "csv").name
        if stamp in name:
            break
    assert name == f"news-email-{stamp}-2.csv"


def test_a_second_export_at_the_same_time_is_refused(db, db_path, tmp_path):
    import fcntl

    with open(str(db_path) + ".export-lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        with pytest.raises(PushgenError, match="another export of this database is running"):
            ex.export_campaign(db, "news", "email", fmt="csv", out_dir=tmp_path / "o")
    assert ex.export_campaign(db, "news", "email", fmt="csv", out_dir=tmp_path / "o").exported == 3


_KILLED_EXPORT = """
import sys
from pushgen.export import export_campaign
from pushgen.store import open_store
export_campaign(open_store(sys.argv[1]), "news", "email", fmt=sys.argv[2], out_dir=sys.argv[3],
                actor="ops")
"""


def _messages(out: Path) -> list[int]:
    """Draft ids of every message in every finished export of ``out``."""
    ids = []
    for entry in sorted(out.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            ids += [int(p.stem) for p in entry.glob("*.eml")]
        else:
            with open(entry, encoding="utf-8", newline="") as fh:
                ids += [int(r["draft_id"]) for r in csv.DictReader(fh)]
    return ids


@pytest.mark.parametrize("fmt, point", [("eml", "journal"), ("eml", "file:2"),
                                        ("eml", "written"), ("eml", "renamed"),
                                        ("csv", "file:1")])
def test_export_killed_at_any_point_loses_and_duplicates_nothing(db, db_path, tmp_path,
                                                                 fmt, point):
    out = tmp_path / "out"
    env = {**os.environ, ex.KILL_ENV: point}
    proc = subprocess.run([sys.executable, "-c", _KILLED_EXPORT, str(db_path), fmt, str(out)],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9, proc.stderr          # SIGKILL, like kill -9
    approved = sorted(draft_id(db, "news", u) for u in (1, 2, 3))
    exported_by_kill = sorted(_messages(out))
    assert exported_by_kill in ([], approved)           # never a partial file
    # the next export reconciles: the messages go out exactly once in all
    rep = ex.export_campaign(db, "news", "email", fmt=fmt, out_dir=out, actor="ops")
    assert sorted(_messages(out)) == approved
    assert len(_messages(out)) == 3
    assert {draft_row(db, i)["status"] for i in approved} == {"exported"}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]   # no temp left
    assert any("interrupted" in n for n in rep.notes)
    states = [r["state"] for r in db.query("SELECT state FROM exports ORDER BY id")]
    if point == "renamed":
        assert (rep.exported, states) == (0, ["done"])   # the file stood: nothing again
    else:
        assert (rep.exported, states) == (3, ["undone", "done"])
        assert "export_undone" in [e["action"] for e in events(db, approved[0])]
    # and a third run has nothing left to do
    again = ex.export_campaign(db, "news", "email", fmt=fmt, out_dir=out)
    assert again.exported == 0 and again.notes == []


def test_cli_export_killed_after_rename_is_not_written_twice(db, db_path, tmp_path, runner):
    """The issue's probe: kill -9 as the folder appears, then export again."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pushgen", "export", "email", "-c", "news", "--format", "eml",
           "--out", str(out), "--db", str(db_path)]
    proc = subprocess.run(cmd, env={**os.environ, ex.KILL_ENV: "renamed"},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9
    r = runner.invoke(app, cmd[3:])
    assert r.exit_code == 0, r.output
    assert "interrupted after its file was complete: it stands" in r.output
    assert "Nothing to export" in r.output
    assert len(_messages(out)) == 3
