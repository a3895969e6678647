"""`pushgen import outcomes`: the sending platform's report comes back.

Real pieces: the review tests' shop (three customers with drafts), the real review and
export (so outcomes belong to messages that really went out), the real import framework,
and for the training test a real LightFM fit on the ranker tests' planted shop.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

import pytest

from pushgen import export as ex
from pushgen import review as rv
from pushgen.cli import app
from pushgen.errors import InputError
from pushgen.ingest import import_file, import_rows
from pushgen.store import dumps, now_iso

from _review_helpers import USERS, draft_id, make_shop

ANA, WANG, BOB = USERS
DAY = (dt.datetime.now(dt.timezone.utc).date() + dt.timedelta(days=2)).isoformat()


def at(hour: int, minute: int = 0) -> str:
    return f"{DAY}T{hour:02d}:{minute:02d}:00Z"


@pytest.fixture
def db(db_path, tmp_path):
    """The shop with its email (news) and SMS (spring) campaigns approved and exported; the
    push campaign (app) approved but not exported."""
    db = make_shop(db_path)
    for campaign in ("news", "spring", "app"):
        rv.approve_all_passing(db, campaign, actor="lead")
    ex.export_campaign(db, "news", "email", fmt="csv", out_dir=tmp_path / "out",
                       send_window=DAY)
    ex.export_campaign(db, "spring", "sms", fmt="csv", out_dir=tmp_path / "out",
                       send_window=DAY)
    return db


def _csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def snapshot(db) -> dict[str, list]:
    return {t: db.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall()
            for t in ("outcomes", "events", "consent_events", "users")}


def consent(db, user_id: int) -> dict[str, int]:
    row = db.execute("SELECT consent_email, consent_sms, consent_push FROM users WHERE id = ?",
                     [user_id]).fetchone()
    return dict(zip(("email", "sms", "push"), row))


def test_happy_path_events_consent_and_idempotent_reimport(db, tmp_path):
    ana, wang, bob = (draft_id(db, "news", u[0]) for u in USERS)
    bob_sms = draft_id(db, "spring", BOB[0])
    path = _csv(tmp_path / "esp.csv", ["draft_id", "campaign", "user", "event", "ts", "value",
                                       "item", "bounce"], [
        [ana, "", "", "delivered", at(9), "", "", ""],
        [ana, "", "", "open", at(10), "", "", ""],              # platform spelling
        [ana, "", "", "opened", at(11), "", "", ""],            # a second open
        [ana, "", "", "click", at(11, 5), "", "SKU-1", ""],
        [ana, "", "", "converted", at(12), "34.00", "SKU-1", ""],
        ["", "news", "u-wang", "delivered", at(9), "", "", ""],  # campaign + user
        ["", "news", "u-wang", "unsubscribed", at(13), "", "", ""],
        [bob, "", "", "bounced", at(9), "", "", ""],            # unknown kind: soft
        [bob_sms, "", "", "hard_bounce", at(9), "", "", ""],    # hard: SMS consent off
    ])
    report = import_file(db, "outcomes", path)
    assert (report.rows, report.inserted, report.unchanged, report.rejected) == (9, 9, 0, 0)
    assert (report.events_created, report.opt_outs) == (2, 2)
    got = db.execute("SELECT draft_id, event, ts, detail, value, source FROM outcomes "
                     "ORDER BY id").fetchall()
    assert got[1] == (ana, "opened", f"{DAY}T10:00:00+00:00", None, None, "esp.csv:3")
    assert got[4][1:5] == ("converted", f"{DAY}T12:00:00+00:00", None, 34.0)
    assert got[7][1:4] == ("bounced", f"{DAY}T09:00:00+00:00", "soft")
    assert got[8][3] == "hard"
    # clicks and conversions with an item are events for the next `train`
    assert db.execute("SELECT kind, ts FROM events WHERE user_id = ? ORDER BY ts",
                      [ANA[0]]).fetchall() == [("click", f"{DAY}T11:05:00+00:00"),
                                               ("purchase", f"{DAY}T12:00:00+00:00")]
    # unsubscribe stops email for Wang; the soft bounce changes nothing for Bob's email;
    # the hard SMS bounce stops Bob's SMS
    assert consent(db, WANG[0]) == {"email": 0, "sms": 1, "push": 1}
    assert consent(db, BOB[0]) == {"email": 1, "sms": 0, "push": 1}
    assert db.execute("SELECT user_id, channel, consent, source, reason FROM consent_events "
                      "ORDER BY id").fetchall() == [
        (WANG[0], "email", 0, "esp.csv:8", "unsubscribed"),
        (BOB[0], "sms", 0, "esp.csv:10", "hard bounce")]

    before = snapshot(db)
    again = import_file(db, "outcomes", path)
    assert (again.inserted, again.unchanged, again.events_created, again.opt_outs) == (0, 9, 0, 0)
    assert snapshot(db) == before


def test_opted_out_customers_are_never_exported_again_and_reviewers_see_why(
        db, db_path, runner, tmp_path):
    wang = draft_id(db, "news", WANG[0])
    import_rows(db, "outcomes", [{"draft_id": wang, "event": "complained", "ts": at(14)}],
                source="spam-reports.jsonl")
    rep = ex.export_campaign(db, "news", "email", fmt="csv", out_dir=tmp_path / "again",
                             again=True, send_window=DAY)
    with open(rep.path, encoding="utf-8", newline="") as fh:
        sent = {r["email"] for r in csv.DictReader(fh)}
    assert sent == {ANA[3], BOB[3]} and rep.skipped_no_consent == 1
    # the review CLI and page say why the consent is off
    r = runner.invoke(app, ["review", "show", str(wang), "--db", str(db_path)])
    assert r.exit_code == 0, r.output
    assert "no email consent now: complained (marked as spam) (spam-reports.jsonl:1" in \
        " ".join(r.output.split())
    from pushgen.web.server import create_app

    html = create_app(db_path, "t" * 20).test_client().get(
        "/", query_string={"id": wang, "status": ""}).get_data(as_text=True)
    assert "complained (marked as spam) (spam-reports.jsonl:1" in html


@pytest.mark.parametrize("row, field, message", [
    ({"draft_id": "APP", "event": "delivered", "ts": at(9)}, "draft_id",
     "was never exported (it is approved)"),
    ({"draft_id": 999, "event": "delivered", "ts": at(9)}, "draft_id", "no draft 999"),
    ({"draft_id": "ANA", "event": "read", "ts": at(9)}, "event", "unknown event 'read'"),
    ({"draft_id": "ANA", "event": "opened", "ts": "yesterday"}, "ts", "bad date"),
    ({"draft_id": "ANA", "event": "opened", "ts": at(9), "value": "5"}, "value",
     "belongs to a converted row"),
    ({"draft_id": "ANA", "event": "converted", "ts": at(9), "value": "-5"}, "value", ""),
    ({"draft_id": "ANA", "event": "clicked", "ts": at(9), "item": "SKU-404"}, "item",
     "unknown item 'SKU-404'"),
    ({"campaign": "news", "user": "u-nobody", "event": "opened", "ts": at(9)}, "user",
     "exported no message to customer 'u-nobody'"),
    ({"campaign": "nope", "user": "u-ana", "event": "opened", "ts": at(9)}, "campaign",
     "no campaign named 'nope'"),
    ({"campaign": "news", "event": "opened", "ts": at(9)}, "user", "required with campaign"),
    ({"draft_id": "ANA", "campaign": "spring", "event": "opened", "ts": at(9)}, "campaign",
     "belongs to campaign 'news'"),
    ({"draft_id": "ANA", "user": "u-bob", "event": "opened", "ts": at(9)}, "user",
     "was for another customer"),
])
def test_every_bad_row_names_file_line_and_field_and_writes_nothing(db, tmp_path, row, field,
                                                                     message):
    ids = {"ANA": draft_id(db, "news", ANA[0]), "APP": draft_id(db, "app", ANA[0])}
    row = {k: ids.get(v, v) if k == "draft_id" else v for k, v in row.items()}
    good = {"draft_id": ids["ANA"], "event": "delivered", "ts": at(8)}
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n", encoding="utf-8")
    before = snapshot(db)
    with pytest.raises(InputError) as err:
        import_file(db, "outcomes", path)
    text = str(err.value)
    assert text.startswith(f"{path}:2") and f"column '{field}'" in text and message in text
    assert snapshot(db) == before


def test_header_errors_and_skip_invalid_rejects(db, tmp_path, runner, db_path):
    no_event = _csv(tmp_path / "a.csv", ["draft_id", "ts"], [[1, at(9)]])
    with pytest.raises(InputError, match="column 'event': required column missing"):
        import_file(db, "outcomes", no_event)
    nobody = _csv(tmp_path / "b.csv", ["event", "ts"], [["opened", at(9)]])
    with pytest.raises(InputError, match="one of draft_id, campaign is needed"):
        import_file(db, "outcomes", nobody)
    ana, app_draft = draft_id(db, "news", ANA[0]), draft_id(db, "app", ANA[0])
    mixed = _csv(tmp_path / "mixed.csv", ["draft_id", "event", "ts"],
                 [[ana, "opened", at(9)], [app_draft, "opened", at(9)], [ana, "clicked", at(10)]])
    r = runner.invoke(app, ["import", "outcomes", str(mixed), "--db", str(db_path)])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert f"mixed.csv:3: column 'draft_id': draft {app_draft} was never exported" in r.output
    assert db.execute("SELECT count(*) FROM outcomes").fetchone()[0] == 0
    r = runner.invoke(app, ["import", "outcomes", str(mixed), "--skip-invalid",
                            "--db", str(db_path)])
    assert r.exit_code == 0, r.output
    assert "2 outcomes recorded" in r.output
    with open(tmp_path / "mixed.rejects.csv", encoding="utf-8", newline="") as fh:
        (reject,) = list(csv.DictReader(fh))
    assert reject["draft_id"] == str(app_draft) and "never exported" in reject["_reason"]


def test_erased_customers_outcomes_are_skipped(db, tmp_path):
    from pushgen.privacy import forget_customer

    ana = draft_id(db, "news", ANA[0])
    import_rows(db, "outcomes", [{"draft_id": ana, "event": "delivered", "ts": at(8)}])
    assert db.execute("SELECT count(*) FROM send_times WHERE user_id = ?", [ANA[0]]).fetchone()[0]
    forget_customer(db, "u-ana", reason="request")
    # erasure removes what the platform reported about her and her planned send times
    for table in ("outcomes", "send_times"):
        assert db.execute(f"SELECT count(*) FROM {table} WHERE user_id = ?",
                          [ANA[0]]).fetchone()[0] == 0
    report = import_rows(db, "outcomes", [
        {"draft_id": ana, "event": "opened", "ts": at(9)},
        {"campaign": "news", "user": "u-ana", "event": "opened", "ts": at(9)}])
    assert report.inserted == 0 and sum(report.skipped.values()) == 2
    assert db.execute("SELECT count(*) FROM outcomes").fetchone()[0] == 0


def test_conversions_become_training_data(tmp_path):
    """A customer without any history is cold for the ranker; after their conversion is
    imported, the next training run knows them (the model scores them itself)."""
    from _ranker_helpers import PROFILES, add_user, make_shop as planted_shop
    from pushgen.ranking import TrainParams, rank_campaign, train

    db = planted_shop(tmp_path / "p.db")
    add_user(db, 61, PROFILES["alpha"])
    train(db, TrainParams(epochs=3, components=8))
    before = rank_campaign(db, "probe", k=3, user_ids=[61]).by_source
    assert "model" not in before
    now = now_iso()
    cid = db["campaigns"].insert({"name": "won", "channel": "push", "created_at": now,
                                  "updated_at": now}).last_pk
    did = db["drafts"].insert({
        "campaign_id": cid, "user_id": 61, "channel": "push", "variant": 1,
        "locale": "en-US", "content": dumps({}), "items": "[]", "generator": "template",
        "status": "exported", "created_at": now, "updated_at": now,
        "exported_at": now}).last_pk
    report = import_rows(db, "outcomes", [
        {"draft_id": did, "event": "clicked", "ts": "2026-01-20T10:00:00Z", "item": "AL-1"},
        {"draft_id": did, "event": "converted", "ts": "2026-01-20T10:05:00Z",
         "item": "AL-1", "value": 20}])
    assert report.events_created == 2
    train(db, TrainParams(epochs=3, components=8))
    assert rank_campaign(db, "probe", k=3, user_ids=[61]).by_source == {"model": 1}


def test_a_click_alone_teaches_the_next_model(tmp_path: Path) -> None:
    """Clicks weigh 2 by default: a customer whose only history is a campaign click is
    ranked by the model after the next train."""
    from _ranker_helpers import PROFILES, add_user, make_shop as planted_shop
    from pushgen.ranking import TrainParams, rank_campaign, train

    db = planted_shop(tmp_path / "p.db")
    add_user(db, 62, PROFILES["alpha"])
    train(db, TrainParams(epochs=3, components=8))
    assert "model" not in rank_campaign(db, "probe", k=3, user_ids=[62]).by_source
    now = now_iso()
    cid = db["campaigns"].insert({"name": "clicks", "channel": "push", "created_at": now,
                                  "updated_at": now}).last_pk
    did = db["drafts"].insert({
        "campaign_id": cid, "user_id": 62, "channel": "push", "variant": 1,
        "locale": "en-US", "content": dumps({}), "items": "[]", "generator": "template",
        "status": "exported", "created_at": now, "updated_at": now,
        "exported_at": now}).last_pk
    report = import_rows(db, "outcomes", [
        {"draft_id": did, "event": "clicked", "ts": "2026-01-20T10:00:00Z", "item": "AL-1"}])
    assert report.events_created == 1
    train(db, TrainParams(epochs=3, components=8))
    assert rank_campaign(db, "probe", k=3, user_ids=[62]).by_source == {"model": 1}
