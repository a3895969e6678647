"""`pushgen import unsubscribes`: a sending platform's opt-out list becomes consent changes.

Real pieces: the shop of the review tests (three customers, drafts with signed unsubscribe
links), the real signing secret, the real export. An opted-out customer is never exported
again; a forged link is a rejected row; the same list imported twice changes nothing; a
later users file cannot quietly switch consent back on.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from pushgen import export as ex
from pushgen import review as rv
from pushgen.cli import app
from pushgen.errors import InputError
from pushgen.ingest import import_file
from pushgen.store import catalog

from _review_helpers import USERS, make_shop, unsub_url

ANA, WANG, BOB = USERS


@pytest.fixture
def db(db_path):
    return make_shop(db_path)


def _csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def consent(db, user_id: int) -> dict[str, int]:
    row = db.execute("SELECT consent_email, consent_sms, consent_push FROM users WHERE id = ?",
                     [user_id]).fetchone()
    return dict(zip(("email", "sms", "push"), row))


def events(db) -> list[tuple]:
    return db.execute("SELECT user_id, channel, consent, source, reason, at FROM consent_events "
                      "ORDER BY id").fetchall()


def test_unsubscribe_link_stops_export_and_reimport_changes_nothing(db, tmp_path):
    rv.approve_all_passing(db, "news", actor="lead")
    link = unsub_url(db, "news", ANA)
    optouts = _csv(tmp_path / "esp-optouts.csv", ["unsubscribe_url", "ts", "reason"],
                   [[link, "2026-11-30T10:00:00Z", "unsubscribed"]])
    report = import_file(db, "unsubscribes", optouts)
    assert (report.inserted, report.updated, report.unchanged, report.rejected) == (1, 1, 0, 0)
    # the link was made for an email campaign: only email stops
    assert consent(db, ANA[0]) == {"email": 0, "sms": 1, "push": 1}
    assert events(db) == [(ANA[0], "email", 0, "esp-optouts.csv:2", "unsubscribed",
                           "2026-11-30T10:00:00+00:00")]
    before = (events(db), db.execute("SELECT * FROM users ORDER BY id").fetchall())
    again = import_file(db, "unsubscribes", optouts)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 1)
    assert (events(db), db.execute("SELECT * FROM users ORDER BY id").fetchall()) == before

    out = ex.export_campaign(db, "news", "email", fmt="csv", out_dir=tmp_path / "out", actor="ops")
    with open(out.path, encoding="utf-8", newline="") as fh:
        exported = {r["email"] for r in csv.DictReader(fh)}
    assert ANA[3] not in exported and exported == {WANG[3], BOB[3]}
    assert out.skipped_no_consent == 1


def test_identified_by_email_phone_and_external_id_with_channel_defaults(db, tmp_path):
    path = _csv(tmp_path / "list.csv", ["email", "phone", "external_id", "channel"], [
        ["ANA@Example.com", "", "", ""],            # email, any case -> email channel
        ["", "+86 138 0013 8000", "", ""],          # phone, other spacing -> sms
        ["", "", "u-bob", ""],                      # an id alone -> every channel
        ["", "", "u-ana", "push"],                  # an explicit channel
    ])
    report = import_file(db, "unsubscribes", path)
    assert report.rejected == 0 and report.inserted == 1 + 1 + 3 + 1
    assert consent(db, ANA[0]) == {"email": 0, "sms": 1, "push": 0}
    assert consent(db, WANG[0]) == {"email": 1, "sms": 0, "push": 1}
    assert consent(db, BOB[0]) == {"email": 0, "sms": 0, "push": 0}
    assert {(u, c) for u, c, *_ in events(db)} == {
        (ANA[0], "email"), (WANG[0], "sms"), (BOB[0], "email"), (BOB[0], "sms"),
        (BOB[0], "push"), (ANA[0], "push")}


def test_forged_link_and_unknown_customers_are_rejected_rows(db, tmp_path):
    link = unsub_url(db, "news", WANG)
    forged = link[:-6] + ("000000" if not link.endswith("000000") else "111111")
    path = _csv(tmp_path / "list.csv", ["url", "email"], [
        [link, ""], [forged, ""], ["", "nobody@example.com"]])
    with pytest.raises(InputError) as err:
        import_file(db, "unsubscribes", path)
    assert err.value.line == 3 and err.value.field == "url" and "forged" in str(err.value)
    assert events(db) == [] and consent(db, WANG[0])["email"] == 1   # nothing written

    rejects = tmp_path / "list.rejects.csv"
    report = import_file(db, "unsubscribes", path, skip_invalid=True, reject_path=rejects)
    assert (report.inserted, report.rejected) == (1, 2)
    with open(rejects, encoding="utf-8", newline="") as fh:
        reasons = [r["_reason"] for r in csv.DictReader(fh)]
    assert reasons[0].startswith("line 3, column url: token") and "forged" in reasons[0]
    assert reasons[1] == "line 4, column email: no customer with email 'nobody@example.com'"


def test_users_file_cannot_switch_consent_back_on_without_a_later_consent(db, tmp_path):
    import_file(db, "unsubscribes", _csv(tmp_path / "o.csv", ["email", "ts"],
                                         [[ANA[3], "2026-11-01T00:00:00Z"]]))
    assert consent(db, ANA[0])["email"] == 0
    crm = _csv(tmp_path / "crm.csv", ["external_id", "consent_email", "consent_sms"],
               [["u-ana", "yes", "yes"], ["u-bob", "yes", "no"]])
    report = import_file(db, "users", crm)
    assert report.consent_kept == 1
    assert consent(db, ANA[0]) == {"email": 0, "sms": 1, "push": 1}   # opt-out kept
    assert consent(db, BOB[0])["sms"] == 0                            # ordinary change

    stale = _csv(tmp_path / "crm2.csv", ["external_id", "consent_email", "consent_email_at"],
                 [["u-ana", "1", "2026-10-15"]])                       # before the opt-out
    assert import_file(db, "users", stale).consent_kept == 1
    assert consent(db, ANA[0])["email"] == 0

    fresh = _csv(tmp_path / "crm3.csv", ["external_id", "consent_email", "consent_email_at"],
                 [["u-ana", "1", "2026-11-20T08:00:00Z"]])             # consented again later
    report = import_file(db, "users", fresh)
    assert report.consent_kept == 0 and consent(db, ANA[0])["email"] == 1
    assert events(db)[-1] == (ANA[0], "email", 1, "crm3.csv:2", "consent given again",
                              "2026-11-20T08:00:00+00:00")
    # an old opt-out list imported after that does not undo the newer consent
    again = import_file(db, "unsubscribes", tmp_path / "o.csv")
    assert again.unchanged == 1 and consent(db, ANA[0])["email"] == 1


def test_push_token_column_in_users_file(db, tmp_path):
    token = "f" * 64
    path = _csv(tmp_path / "u.csv", ["external_id", "push_token"], [["u-ana", token], ["u-new", ""]])
    assert import_file(db, "users", path).inserted == 1
    tokens = dict(db.execute("SELECT external_id, push_token FROM users").fetchall())
    assert tokens["u-ana"] == token and tokens["u-new"] is None
    bad = _csv(tmp_path / "b.csv", ["external_id", "push_token"], [["u-bob", "has space"]])
    with pytest.raises(InputError, match=r"b\.csv:2: column 'push_token': bad push token"):
        import_file(db, "users", bad)


def test_cli_unsubscribes_with_mapping_and_all_rejected_exit(runner, db, db_path, tmp_path):
    path = _csv(tmp_path / "mailchimp.csv", ["Email Address", "UNSUB_TIME", "UNSUB_REASON"],
                [[BOB[3], "2026-11-30 10:00:00", "No longer interested"]])
    result = runner.invoke(app, ["import", "unsubscribes", str(path), "--map", "email=Email Address",
                                 "--map", "ts=UNSUB_TIME", "--map", "reason=UNSUB_REASON",
                                 "--db", str(db_path)])
    assert result.exit_code == 0, result.output
    assert "1 opt-outs recorded (1 consents switched off), 0 already on record" in result.output
    assert events(db)[-1][4] == "No longer interested"

    nobody = _csv(tmp_path / "nobody.csv", ["email"], [["x@example.com"], ["y@example.com"]])
    result = runner.invoke(app, ["import", "unsubscribes", str(nobody), "--skip-invalid",
                                 "--db", str(db_path)])
    assert result.exit_code == 1
    assert ("all 2 rows were rejected; most common reason (2 rows): column 'email': no customer "
            "with email") in result.output
    missing = _csv(tmp_path / "cols.csv", ["customer"], [["1"]])
    result = runner.invoke(app, ["import", "unsubscribes", str(missing), "--db", str(db_path)])
    assert result.exit_code == 1 and "no column naming the customer" in result.output
    assert catalog.has_consent_events(db)


def test_a_customer_erased_on_request_is_not_imported_again(db, tmp_path):
    """The shop's exports still name an erased customer: the import skips those rows."""
    from pushgen.privacy import forget_customer

    forget_customer(db, "u-bob", reason="request by email")
    users = _csv(tmp_path / "crm.csv", ["external_id", "name", "email"],
                 [["u-bob", BOB[2], BOB[3]], ["u-new", "New Person", "new@example.com"]])
    report = import_file(db, "users", users)
    assert report.inserted == 1 and report.skipped == {
        "customer erased on request (never imported again)": 1}
    names = [n for (n,) in db.execute("SELECT name FROM users")]
    assert BOB[2] not in names and BOB[3] not in {e for (e,) in db.execute("SELECT email FROM users")}
    events = _csv(tmp_path / "events.csv", ["user", "item", "kind", "ts"],
                  [["u-bob", "SKU-1", "purchase", "2026-11-01"], ["u-ana", "SKU-1", "view", "2026-11-01"]])
    report = import_file(db, "events", events, create_missing=True)
    assert (report.inserted, report.users_created) == (1, 0) and sum(report.skipped.values()) == 1
    optout = _csv(tmp_path / "o.csv", ["external_id"], [["u-bob"]])
    report = import_file(db, "unsubscribes", optout)
    assert report.rejected == 0 and report.skipped and report.failure().startswith("no row imported")
