"""Review state machine, audit trail, edit re-validation, optimistic locking and the CLI."""

from __future__ import annotations

import json

import pytest

from pushgen import review as rv
from pushgen.cli import app
from pushgen.errors import PushgenError
from pushgen.store import open_store

from _review_helpers import draft_id, draft_row, events, make_shop

LONG_SMS = ("Hi Ana, the Linen Shirt is now $34.00 (30% off) and it goes with everything you "
            "bought this spring, so have a look before your size is gone: "
            "https://shop.example/p/SKU-1\nReply STOP to opt out")


@pytest.fixture
def db(db_path):
    return make_shop(db_path, failing={"spring": [3]})


def _output(result) -> str:
    """CLI output plus the exception text (the app's one-line error handling may print
    either way)."""
    return result.output + (str(result.exception) if result.exception else "")


# --- transitions ------------------------------------------------------------------------


def test_approve_passing_draft_records_event(db):
    did = draft_id(db, "spring", 1)
    before = draft_row(db, did)
    view = rv.approve(db, did, actor="alice", expected_version=1)
    assert view.status == "approved" and view.version == 2
    (ev,) = events(db, did)
    assert (ev["actor"], ev["action"], ev["status_before"], ev["status_after"]) == \
        ("alice", "approve", "draft", "approved")
    assert ev["before"] == ev["after"] == before["content"]
    assert view.history[0].action == "approve"


def test_approve_failing_draft_is_refused_and_nothing_written(db):
    did = draft_id(db, "spring", 3)
    with pytest.raises(PushgenError, match=r"cannot approve draft \d+: it fails sms.opt_out"):
        rv.approve(db, did, actor="alice")
    row = draft_row(db, did)
    assert (row["status"], row["version"]) == ("draft", 1)
    assert events(db, did) == []


def test_reject_needs_reason_then_reopen_before_approve(db):
    did = draft_id(db, "spring", 1)
    with pytest.raises(PushgenError, match="needs a reason"):
        rv.reject(db, did, actor="bob", reason="  ")
    rv.reject(db, did, actor="bob", reason="wrong tone")
    with pytest.raises(PushgenError, match="it is rejected; reopen it first"):
        rv.approve(db, did, actor="bob")
    rv.reopen(db, did, actor="bob", reason="tone is fine after all")
    view = rv.approve(db, did, actor="bob")
    assert view.status == "approved" and view.version == 4
    trail = [(e["action"], e["status_before"], e["status_after"], e["reason"])
             for e in events(db, did)]
    assert trail == [("reject", "draft", "rejected", "wrong tone"),
                     ("reopen", "rejected", "draft", "tone is fine after all"),
                     ("approve", "draft", "approved", None)]


def test_approved_can_be_rejected_and_approving_twice_changes_nothing(db):
    did = draft_id(db, "spring", 1)
    first = rv.approve(db, did, actor="a")
    again = rv.approve(db, did, actor="a")
    assert (again.status, again.version) == ("approved", first.version)
    assert [e["action"] for e in events(db, did)] == ["approve"]     # one audit row
    assert rv.reject(db, did, actor="a", reason="price changed").status == "rejected"


def test_exported_draft_cannot_change(db):
    did = draft_id(db, "spring", 1)
    db.execute("UPDATE drafts SET status = 'exported' WHERE id = ?", [did])
    for call in (lambda: rv.approve(db, did), lambda: rv.reopen(db, did),
                 lambda: rv.edit(db, did, {"text": "x"}, expected_version=None)):
        with pytest.raises(PushgenError, match="exported"):
            call()


def test_unknown_draft_and_campaign(db):
    with pytest.raises(PushgenError, match="no draft with id 999"):
        rv.get_draft(db, 999)
    with pytest.raises(PushgenError, match="no campaign named 'nope'; known campaigns: app, "
                                           "news, spring"):
        rv.list_drafts(db, campaign="nope")


# --- edits ------------------------------------------------------------------------------


def test_edit_sms_to_two_segments_fails_segments_check(db):
    did = draft_id(db, "spring", 1)
    old = draft_row(db, did)["content"]
    result = rv.edit(db, did, {"text": LONG_SMS}, actor="carol", expected_version=1,
                     reason="more persuasive")
    assert result.changed == ["text"]
    assert not result.passed
    assert [c.name for c in result.new_failures] == ["sms.segments"]
    assert "2 segments" in result.new_failures[0].message
    row = draft_row(db, did)
    assert row["passed"] == 0 and row["status"] == "draft" and row["version"] == 2
    assert row["content"] == {"text": LONG_SMS}
    failed = [c for c in row["checks"] if not c["ok"]]
    assert [c["name"] for c in failed] == ["sms.segments"]
    (ev,) = events(db, did)
    assert ev["action"] == "edit" and ev["actor"] == "carol" and ev["reason"] == "more persuasive"
    assert ev["before"] == old and ev["after"] == {"text": LONG_SMS}
    with pytest.raises(PushgenError, match="sms.segments"):
        rv.approve(db, did)


def test_edit_goes_through_fact_guards(db):
    """An edit that invents a price fails guard.price, not only the channel rules."""
    did = draft_id(db, "spring", 1)
    text = ("Hi Ana, the Linen Shirt is now $9.99: https://shop.example/p/SKU-1\n"
            "Reply STOP to opt out")
    result = rv.edit(db, did, {"text": text}, actor="c", expected_version=1)
    assert "guard.price" in [c.name for c in result.draft.blocking_checks]


def test_edit_fixing_a_failing_draft_makes_it_approvable(db):
    did = draft_id(db, "spring", 3)
    fixed = draft_row(db, did)["content"]["text"] + "\nReply STOP to opt out"
    result = rv.edit(db, did, {"text": fixed}, actor="c", expected_version=1)
    assert result.passed and result.draft.status == "draft"
    assert rv.approve(db, did, actor="c").status == "approved"


def test_edit_of_approved_draft_keeps_approval_only_if_still_passing(db):
    did = draft_id(db, "spring", 1)
    rv.approve(db, did, actor="a")
    ok_text = ("Hi Ana, the Linen Shirt is now $34.00: https://shop.example/p/SKU-1\n"
               "Reply STOP to opt out")
    r1 = rv.edit(db, did, {"text": ok_text}, actor="a", expected_version=2)
    assert r1.draft.status == "approved" and r1.status_before == "approved"
    r2 = rv.edit(db, did, {"text": LONG_SMS}, actor="a", expected_version=3)
    assert r2.draft.status == "draft" and not r2.passed
    assert [(e["status_before"], e["status_after"]) for e in events(db, did)] == \
        [("draft", "approved"), ("approved", "approved"), ("approved", "draft")]


def test_edit_unknown_field_and_noop(db):
    did = draft_id(db, "news", 1)
    with pytest.raises(PushgenError, match="unknown field\\(s\\) text2; its fields are subject, "
                                           "preheader, html, text"):
        rv.edit(db, did, {"text2": "x"}, expected_version=1)
    same = draft_row(db, did)["content"]["subject"]
    result = rv.edit(db, did, {"subject": same}, expected_version=1)
    assert result.changed == [] and draft_row(db, did)["version"] == 1
    assert events(db, did) == []


def test_stale_edit_is_refused_with_who_and_when(db):
    did = draft_id(db, "news", 1)
    rv.edit(db, did, {"subject": "Ana, fresh spring picks"}, actor="alice", expected_version=1)
    at = events(db, did)[0]["at"][11:16]
    with pytest.raises(PushgenError) as exc:
        rv.edit(db, did, {"subject": "Mine"}, actor="bob", expected_version=1)
    assert str(exc.value) == (f"draft {did} was changed by alice at {at} (version 2, you "
                              "edited version 1); reload and try again")
    assert draft_row(db, did)["content"]["subject"] == "Ana, fresh spring picks"
    with pytest.raises(PushgenError, match="reload and try again"):
        rv.approve(db, did, actor="bob", expected_version=1)


def test_concurrent_writer_between_read_and_write_is_caught(db, db_path):
    """Two connections: the second writer's UPDATE ... WHERE version=? matches nothing."""
    did = draft_id(db, "spring", 1)
    other = open_store(db_path)
    from pushgen.store import reviews as store

    row = store.fetch_draft(db, did)
    rv.approve(other, did, actor="alice")
    ok = store.update_draft(db, did, row["version"], {"status": "rejected"},
                            {"actor": "bob", "action": "reject", "at": "x"})
    assert ok is False
    assert draft_row(db, did)["status"] == "approved"
    assert [e["actor"] for e in events(db, did)] == ["alice"]


# --- bulk, queries, report ------------------------------------------------------------


def test_approve_all_passing(db):
    n = rv.approve_all_passing(db, "spring", actor="lead")
    assert n == 2
    statuses = {r["user_id"]: r["status"] for r in db.query(
        "SELECT user_id, status FROM drafts WHERE campaign_id = "
        "(SELECT id FROM campaigns WHERE name = 'spring')")}
    assert statuses == {1: "approved", 2: "approved", 3: "draft"}
    ev = events(db, draft_id(db, "spring", 2))
    assert [(e["action"], e["actor"], e["reason"]) for e in ev] == \
        [("approve", "lead", "bulk: all checks passed")]
    assert ev[0]["before"]["text"].startswith("王芳")
    assert rv.approve_all_passing(db, "spring", actor="lead") == 0


def test_list_filters_and_counts(db):
    failing = rv.list_drafts(db, failed_check="sms.opt_out")
    assert [d.id for d in failing] == [draft_id(db, "spring", 3)]
    zh = rv.list_drafts(db, locale="zh-CN")
    assert {d.channel for d in zh} == {"sms", "email", "push"}
    assert all(d.user_external_id == "u-wang" for d in zh)
    assert len(rv.list_drafts(db, channel="email", status="draft")) == 3
    assert len(rv.list_drafts(db, limit=2, offset=8)) == 1
    counts = rv.queue_counts(db, "spring")
    assert counts.by_status == {"draft": 3, "approved": 0, "rejected": 0, "exported": 0}
    assert counts.by_failed_check == {"sms.opt_out": 1}
    with pytest.raises(PushgenError, match="unknown status"):
        rv.list_drafts(db, status="done")


def test_get_draft_view_has_segment_items_checks(db):
    d = rv.get_draft(db, draft_id(db, "spring", 2))
    assert d.segment == {"locale": "zh-CN", "age_band": "35-44", "gender": "f",
                         "region": "east", "tier": "silver"}
    assert [i.sku for i in d.items] == ["SKU-1", "SKU-2"]
    assert d.items[0].reason == "bought similar shirts" and d.items[0].score == 0.91
    assert d.passed and not d.failed_checks
    assert d.settings.sender_name == "Acme Shop"   # rebuilt from campaigns.config
    assert d.first_name == "王芳"


def test_campaign_report(db):
    rv.approve(db, draft_id(db, "spring", 1), actor="a")
    rv.reject(db, draft_id(db, "spring", 2), actor="a", reason="no")
    db.execute("UPDATE drafts SET generator = 'llm', tokens_prompt = 120, "
               "tokens_completion = 30 WHERE id = ?", [draft_id(db, "spring", 2)])
    rep = rv.campaign_report(db, "spring")
    assert rep["by_status"] == {"draft": 1, "approved": 1, "rejected": 1, "exported": 0}
    assert rep["approval_rate"] == 0.5 and rep["reviewed"] == 2
    assert rep["check_failures"] == {"sms.opt_out": 1}
    assert (rep["tokens_prompt"], rep["tokens_completion"]) == (120, 30)
    assert rep["by_generator"] == {
        "llm": {"drafts": 1, "tokens_prompt": 120, "tokens_completion": 30},
        "template": {"drafts": 2, "tokens_prompt": 0, "tokens_completion": 0}}


def test_default_actor(monkeypatch):
    monkeypatch.setenv("USER", "dana")
    assert rv.default_actor() == "dana"


# --- CLI --------------------------------------------------------------------------------


def test_cli_list_show_approve_reject(db, db_path, runner, monkeypatch):
    monkeypatch.setenv("USER", "erin")
    monkeypatch.setenv("COLUMNS", "140")
    ok, bad = draft_id(db, "spring", 1), draft_id(db, "spring", 3)
    r = runner.invoke(app, ["review", "list", "--db", str(db_path), "--campaign", "spring",
                            "--failed-check", "sms.opt_out"])
    assert r.exit_code == 0, r.output
    assert "1 of 1 drafts" in r.output and "u-bob" in r.output and "u-ana" not in r.output
    assert "SKU-1 Linen Shirt" in r.output            # the item, not the greeting
    r = runner.invoke(app, ["review", "list", "--db", str(db_path), "--json"])
    listed = json.loads(r.stdout)
    assert listed["total"] == 9 and len(listed["drafts"]) == 9
    assert {d["item"]["sku"] for d in listed["drafts"]} == {"SKU-1"}
    assert set(listed["drafts"][0]) >= {"id", "campaign", "channel", "user", "status",
                                        "version", "failed_checks", "item"}
    r = runner.invoke(app, ["review", "show", str(ok), "--json", "--db", str(db_path)])
    shown = json.loads(r.stdout)
    assert shown["id"] == ok and shown["content"]["text"].startswith("Hi Ana")
    assert "ana@example.com" not in r.stdout and "+15550000001" not in r.stdout

    r = runner.invoke(app, ["review", "show", str(bad), "--db", str(db_path)])
    assert r.exit_code == 0, r.output
    assert "GSM-7 · 1 segment" in r.output and "✗ sms.opt_out" in r.output
    assert "✓ sms.segments" in r.output and "bought similar shirts" in r.output
    assert "tier bronze" in r.output

    r = runner.invoke(app, ["review", "approve", str(bad), "--db", str(db_path)])
    assert r.exit_code == 1 and "cannot approve draft" in _output(r)
    r = runner.invoke(app, ["review", "approve", str(ok), "--db", str(db_path)])
    assert r.exit_code == 0 and f"approved draft {ok}" in r.output
    r = runner.invoke(app, ["review", "approve", str(ok), "--db", str(db_path)])
    assert r.exit_code == 0 and r.output.count("already approved") == 1
    r = runner.invoke(app, ["review", "reject", str(bad), "--db", str(db_path),
                            "--reason", "no opt-out"])
    assert r.exit_code == 0 and "rejected draft" in r.output
    assert [e["actor"] for e in events(db, ok)] == ["erin"]
    assert draft_row(db, bad)["status"] == "rejected"


def test_cli_approve_all_passing_and_stats(db, db_path, runner):
    r = runner.invoke(app, ["review", "approve", "--all-passing", "--campaign", "news",
                            "--db", str(db_path)])
    assert r.exit_code == 0 and "approved 3 draft(s) of campaign news" in r.output
    r = runner.invoke(app, ["review", "stats", "--campaign", "news", "--db", str(db_path)])
    assert r.exit_code == 0 and "approval rate" in r.output and "100.0% of 3" in r.output
    r = runner.invoke(app, ["review", "approve", "--all-passing", "--db", str(db_path)])
    assert r.exit_code == 1 and "--all-passing needs --campaign" in _output(r)


def test_cli_edit_with_set_reports_failure(db, db_path, runner):
    did = draft_id(db, "spring", 1)
    r = runner.invoke(app, ["review", "edit", str(did), "--set", f"text={LONG_SMS}",
                            "--db", str(db_path)])
    assert r.exit_code == 0, _output(r)
    assert "edited draft" in r.output and "sms.segments (new)" in r.output
    assert "cannot be approved" in r.output
    r = runner.invoke(app, ["review", "edit", str(did), "--set", "subject=x", "--db",
                            str(db_path)])
    assert r.exit_code == 1 and "unknown field(s) subject" in _output(r)
    r = runner.invoke(app, ["review", "edit", str(did), "--set", "text=y", "--version", "1",
                            "--db", str(db_path)])
    assert r.exit_code == 1 and "reload and try again" in _output(r)


def test_cli_edit_in_editor(db, db_path, runner, monkeypatch):
    did = draft_id(db, "news", 2)
    seen = {}

    def fake_edit(text, **kw):
        seen["form"] = text
        return text.replace("王芳，春季精选为您准备好了", "王芳，春季新品到啦")

    monkeypatch.setattr("pushgen.cli.reviewing.click.edit", fake_edit)
    r = runner.invoke(app, ["review", "edit", str(did), "--db", str(db_path)])
    assert r.exit_code == 0, _output(r)
    assert "--- subject ---\n王芳，春季精选为您准备好了\n--- preheader ---" in seen["form"]
    row = draft_row(db, did)
    assert row["content"]["subject"] == "王芳，春季新品到啦"
    # other fields round-trip through the form unchanged (multi-line HTML included)
    assert row["content"]["html"] == events(db, did)[0]["before"]["html"]
    assert row["passed"] == 1


def test_cli_next_interactive(db, db_path, runner, monkeypatch):
    monkeypatch.setenv("USER", "frank")
    # draft 1 (passing): a; draft 2: r + reason; draft 3 (failing): a is refused, then q
    r = runner.invoke(app, ["review", "next", "--campaign", "spring", "--db", str(db_path)],
                      input="ar\ntoo pushy\naq")
    assert r.exit_code == 0, _output(r)
    assert "approved draft" in r.output and "rejected draft" in r.output
    assert "cannot approve draft" in r.output
    assert "approved 1, rejected 1, edited 0, skipped 0" in r.output
    statuses = [draft_row(db, draft_id(db, "spring", u))["status"] for u in (1, 2, 3)]
    assert statuses == ["approved", "rejected", "draft"]
    assert events(db, draft_id(db, "spring", 2))[0]["reason"] == "too pushy"


def test_cli_missing_database(runner, tmp_path):
    r = runner.invoke(app, ["review", "list", "--db", str(tmp_path / "none.db")])
    assert r.exit_code == 1 and "no such database" in _output(r)


def test_cli_edit_editor_failure_is_one_line(db, db_path, runner, monkeypatch):
    import click

    def broken(text, **kw):
        raise click.ClickException("Editing failed: [Errno 2] No such file or directory: 'vi'")

    monkeypatch.setattr("pushgen.cli.reviewing.click.edit", broken)
    did = draft_id(db, "news", 1)
    r = runner.invoke(app, ["review", "edit", str(did), "--db", str(db_path)])
    assert r.exit_code == 1 and not isinstance(r.exception, click.ClickException)
    out = _output(r)
    assert "could not open an editor" in out and f"review edit {did} --set" in out
    assert draft_row(db, did)["version"] == 1


def test_cli_next_without_terminal_reads_keys_from_stdin(db, db_path, runner, monkeypatch):
    def no_tty(*a, **kw):
        raise OSError(6, "No such device or address", "/dev/tty")

    monkeypatch.setattr("pushgen.cli.reviewing.typer.getchar", no_tty)
    r = runner.invoke(app, ["review", "next", "-c", "spring", "--db", str(db_path)],
                      input="a\n")  # end of input after one key means quit
    assert r.exit_code == 0, _output(r)
    assert "approved 1, rejected 0, edited 0, skipped 0" in r.output
    assert draft_row(db, draft_id(db, "spring", 1))["status"] == "approved"
    assert draft_row(db, draft_id(db, "spring", 2))["status"] == "draft"


def test_cli_list_refuses_negative_or_zero_paging(db, db_path, runner):
    for args in (["--limit", "-1"], ["--limit", "0"], ["--offset", "-2"]):
        r = runner.invoke(app, ["review", "list", *args, "--db", str(db_path)])
        assert r.exit_code == 2, args
    r = runner.invoke(app, ["review", "list", "--limit", "2", "--db", str(db_path)])
    assert r.exit_code == 0 and "use --offset 2" in r.output


def test_approval_rate_never_rounds_up_to_100():
    from pushgen.cli.reviewing import _rate

    assert _rate(round(1703 / 1704, 4)) == "99.9%"
    assert _rate(1.0) == "100.0%" and _rate(0.5) == "50.0%" and _rate(0.00001) == "0.1%"


# --- hostile edits and names (issue 9, findings 4 and 10) --------------------------------------


def test_edit_adding_a_header_to_the_subject_is_refused_approval(db, runner, db_path):
    did = draft_id(db, "news", 1)
    subject = draft_row(db, did)["content"]["subject"]
    r = runner.invoke(app, ["review", "edit", str(did), "--set",
                            f"subject={subject}\r\nX-Evil: 1", "--db", str(db_path)])
    assert r.exit_code == 0 and "message.control_chars" in r.output
    row = draft_row(db, did)
    assert row["passed"] == 0
    with pytest.raises(PushgenError, match="message.control_chars"):
        rv.approve(db, did, actor="eve")
    assert rv.approve_all_passing(db, "news", actor="eve") == 2  # the other two only
    assert draft_row(db, did)["status"] == "draft"


def test_edit_starting_the_subject_like_a_formula_is_flagged_for_the_reviewer(db, runner,
                                                                             db_path):
    """'-20% ...' would reach customers as "'-20% ..." through a CSV export: the edit says
    so (a warning: the draft still passes and can be approved)."""
    did = draft_id(db, "news", 1)
    r = runner.invoke(app, ["review", "edit", str(did), "--set", "subject=@ana: new picks for you",
                            "--db", str(db_path)])
    assert r.exit_code == 0 and "message.formula_start" in r.output
    row = draft_row(db, did)
    assert row["passed"] == 1
    assert [c["name"] for c in row["checks"] if not c["ok"] and c["name"].startswith("message")
            ] == ["message.formula_start"]


def test_edit_with_an_encoded_deep_link_passes(db):
    """A SKU with a space: the percent-encoded link is the one that passes (finding 7)."""
    db.execute("UPDATE items SET sku = 'brown bread' WHERE sku = 'SKU-2'")
    db.execute("UPDATE drafts SET items = replace(items, '\"SKU-2\"', '\"brown bread\"')")
    db.conn.commit()
    did = draft_id(db, "app", 1)
    content = draft_row(db, did)["content"]
    good = rv.edit(db, did, {"deep_link": "shop://item/brown%20bread"}, actor="a",
                   expected_version=1)
    assert good.passed, [c for c in good.draft.blocking_checks]
    bad = rv.edit(db, did, {"deep_link": "shop://item/brown bread"}, actor="a",
                  expected_version=2)
    assert [c.name for c in bad.draft.blocking_checks] == ["push.deep_link"]
    assert content["deep_link"] == "shop://item/SKU-1"


@pytest.mark.parametrize("actor", ["eve\r\nX-Evil: 1", "<script>", "a" * 65, "  ", "\u202emallory",
                                   "root; DROP TABLE"])
def test_actor_names_are_validated_before_anything_is_written(db, actor):
    did = draft_id(db, "spring", 1)
    if not actor.strip():
        rv.approve(db, did, actor=actor)  # blank: the default actor
        assert events(db, did)[-1]["actor"] == rv.default_actor()
        return
    with pytest.raises(PushgenError, match="actor name"):
        rv.approve(db, did, actor=actor)
    with pytest.raises(PushgenError, match="actor name"):
        rv.edit(db, did, {"text": "x"}, actor=actor, expected_version=1)
    with pytest.raises(PushgenError, match="actor name"):
        rv.approve_all_passing(db, "spring", actor=actor)
    assert events(db, did) == [] and draft_row(db, did)["version"] == 1


def test_real_names_are_fine_as_actors(db):
    did = draft_id(db, "spring", 1)
    rv.approve(db, did, actor="王芳 (lead)".replace("(", "").replace(")", ""))
    rv.reject(db, draft_id(db, "spring", 2), actor="ana.lima@shop.example", reason="tone")
    assert [e["actor"] for e in events(db, did)] == ["王芳 lead"]


@pytest.mark.parametrize("big", [2**63, 2**63 + 5, 10**30, 0, -1])
def test_out_of_range_ids_are_not_found(db, big):
    with pytest.raises(PushgenError, match=f"no draft with id {big}"):
        rv.get_draft(db, big)
    with pytest.raises(PushgenError, match=f"no draft with id {big}"):
        rv.approve(db, big, actor="a")


def test_approval_uses_todays_rules_not_the_stored_result(db):
    """A draft checked by an older pushgen (stored 'passed') that breaks today's rules, e.g.
    a phone number in the copy, is not approved, one by one or in bulk."""
    a, b = draft_id(db, "spring", 1), draft_id(db, "spring", 2)
    for did in (a, b):
        db.execute("UPDATE drafts SET content = json_set(content, '$.text', replace("
                   "json_extract(content, '$.text'), 'https://', 'Call 020 7946 0958 https://'))"
                   " WHERE id = ?", [did])
    db.conn.commit()
    assert draft_row(db, a)["passed"] == 1
    with pytest.raises(PushgenError, match="guard.personal_data"):
        rv.approve(db, a, actor="ana")
    row = draft_row(db, a)
    assert (row["passed"], row["status"], row["version"]) == (0, "draft", 1)
    assert rv.approve_all_passing(db, "spring", actor="ana") == 0  # b fails too; 3 failed before
    assert draft_row(db, b)["passed"] == 0
