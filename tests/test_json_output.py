"""Every --json command prints one JSON document with the documented keys, nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pushgen.cli import app

from _shop import build_shop, copy_shop


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_shop(tmp_path_factory.mktemp("json"), seed=4, users=120, items=40, events=3000,
                      epochs=2, components=8)


@pytest.fixture
def db_path(trained: Path, tmp_path: Path) -> Path:
    return copy_shop(trained, tmp_path)


def run_json(runner, *args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)          # the whole of stdout is one document


def test_every_json_command_has_its_keys(runner, db_path: Path, tmp_path: Path) -> None:
    db = ["--db", str(db_path)]
    stats = run_json(runner, "stats", *db)
    assert {"database", "tables", "items", "consent", "locales", "events_by_kind",
            "events_from", "events_to"} <= set(stats) and stats["tables"]["users"] == 120

    ranked = run_json(runner, "rank", "--campaign", "r", "--examples", "2", *db)
    assert {"campaign", "users", "rows", "by_source", "repeat", "note"} <= set(ranked["summary"])
    assert ranked["examples"] and {"user", "rank", "sku", "reason"} <= set(ranked["examples"][0])

    evaluated = run_json(runner, "evaluate", "--epochs", "2", "--components", "8", *db)
    assert {"split", "k", "users", "rows", "seconds", "served_note"} <= set(evaluated)
    first = next(iter(evaluated["rows"].values()))
    assert {"model", "precision", "recall", "ndcg", "auc"} <= set(first[0])

    drafted = run_json(runner, "draft", "-c", "j", "--channel", "push", "--limit", "5", *db)
    assert {"campaign", "audience", "drafted", "passed", "failed"} <= set(drafted["report"])
    assert drafted["report"]["drafted"] == 5 and drafted["batch"] is None

    report = run_json(runner, "stats", "-c", "j", *db)
    assert report["drafts"] == 5 and {"by_status", "check_failures", "llm"} <= set(report)

    listed = run_json(runner, "review", "list", "-c", "j", *db)
    assert listed["total"] == 5 and {"id", "status", "item"} <= set(listed["drafts"][0])
    shown = run_json(runner, "review", "show", str(listed["drafts"][0]["id"]), *db)
    assert {"content", "items", "checks", "history"} <= set(shown)

    runner.invoke(app, ["review", "approve", "--all-passing", "-c", "j", *db])
    exported = run_json(runner, "export", "push", "-c", "j", "--out", str(tmp_path / "o"), *db)
    assert {"path", "exported", "draft_ids", "send_window", "skipped_no_consent"} <= set(exported)
    assert exported["exported"] >= 1 and Path(exported["path"]).is_file()


def test_import_and_train_print_their_report_as_json(runner, db_path: Path,
                                                    tmp_path: Path) -> None:
    db = ["--db", str(db_path)]
    users = tmp_path / "new-users.csv"
    users.write_text("external_id,name,locale,consent_email\nj-1,Ann,en-US,1\nj-2,Bo,en-US,0\n",
                     encoding="utf-8")
    imported = run_json(runner, "import", "users", str(users), *db)["report"]
    assert imported["kind"] == "users" and imported["inserted"] == 2
    assert {"rows", "updated", "unchanged", "rejected", "skipped", "seconds"} <= set(imported)

    bad = tmp_path / "bad-users.csv"
    bad.write_text("external_id,consent_sms\nj-3,maybe\n", encoding="utf-8")
    result = runner.invoke(app, ["import", "users", str(bad), "--skip-invalid", "--json", *db])
    assert result.exit_code == 1                # every row rejected: still an error
    assert json.loads(result.stdout)["report"]["rejected"] == 1   # and still one document

    model = run_json(runner, "train", "--epochs", "2", "--components", "8", *db)["model"]
    assert {"id", "path", "n_users", "n_items", "metrics", "validation", "blend"} <= set(model)
    assert Path(model["path"]).is_file() and model["n_users"] > 0


def test_review_actions_and_forget_print_json(runner, db_path: Path) -> None:
    db = ["--db", str(db_path)]
    run_json(runner, "draft", "-c", "acts", "--channel", "sms", "--limit", "4", *db)
    ids = [d["id"] for d in run_json(runner, "review", "list", "-c", "acts", *db)["drafts"]]

    first = run_json(runner, "review", "approve", str(ids[0]), *db)
    assert first["draft"]["status"] == "approved" and first["changed"] is True
    again = run_json(runner, "review", "approve", str(ids[0]), *db)
    assert again["changed"] is False and again["draft"]["version"] == first["draft"]["version"]
    reopened = run_json(runner, "review", "reopen", str(ids[0]), *db)
    assert reopened["draft"]["status"] == "draft"
    rejected = run_json(runner, "review", "reject", str(ids[1]), "--reason", "tone", *db)
    assert rejected["draft"]["status"] == "rejected"

    edited = run_json(runner, "review", "edit", str(ids[2]), "--set", "text=Hi", *db)
    assert edited["changed"] == ["text"] and edited["draft"]["passed"] is False
    assert "guard.mentions_item" in {c["name"] for c in edited["blocking_checks"]}
    assert "guard.mentions_item" in edited["new_failures"]

    bulk = run_json(runner, "review", "approve", "--all-passing", "-c", "acts", *db)
    assert bulk == {"campaign": "acts", "approved": 2, "waiting": 1}

    user = run_json(runner, "review", "show", str(ids[3]), *db)["user"]
    forgot = run_json(runner, "users", "forget", user, "--yes", *db)
    assert forgot["counts"] and user not in json.dumps(forgot)
