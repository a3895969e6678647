"""`pushgen import`, `pushgen demo` and `pushgen stats` through the real command line."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from pushgen import __version__
from pushgen.cli import app
from pushgen.cli.data import run_demo
from pushgen.store import catalog, open_store

USERS = "external_id,name,email,consent_email,age_band\nu1,王芳,wang@example.com,yes,25-34\nu2,Ann Lee,ann@example.com,no,55+\n"
ITEMS = "product_id,product_name,price\nA1,Green Tea,12.5\nA2,Mug,8\n"
EVENTS = "user,item,kind,ts\nu1,A1,view,2026-03-01\nu2,A2,purchase,2026-03-02T10:00:00Z\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_import_commands_and_stats(runner, tmp_path, db_path):
    users, items, events = (write(tmp_path / "users.csv", USERS), write(tmp_path / "items.csv", ITEMS),
                            write(tmp_path / "events.csv", EVENTS))
    result = runner.invoke(app, ["import", "users", str(users), "--db", str(db_path)])
    assert result.exit_code == 0, result.output
    assert "Imported users" in result.output and "inserted" in result.output
    result = runner.invoke(app, ["import", "items", str(items), "--map", "sku=product_id",
                                 "--map", "title=product_name", "--db", str(db_path)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["import", "events", str(events), "--db", str(db_path)])
    assert result.exit_code == 0, result.output
    db = open_store(db_path)
    assert [i["title"] for i in catalog.iter_items(db)] == ["Green Tea", "Mug"]
    assert catalog.catalog_counts(db)["events"] == 2

    again = runner.invoke(app, ["import", "users", str(users), "--db", str(db_path)])
    assert again.exit_code == 0
    row = next(line for line in again.output.splitlines() if line.count("│") >= 6)
    assert [c.strip() for c in row.split("│")[1:-1]][:5] == ["2", "0", "0", "2", "0"]

    stats = runner.invoke(app, ["stats", "--db", str(db_path)])
    assert stats.exit_code == 0, stats.output
    out = stats.output
    assert "Consent" in out and "Events by kind" in out
    email_row = next(line for line in out.splitlines() if "│ email" in line)
    assert "1" in email_row and "50.0%" in email_row
    assert any("purchase" in line and "1" in line for line in out.splitlines())


def test_env_var_selects_database(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("PUSHGEN_DB", str(tmp_path / "env.db"))
    result = runner.invoke(app, ["import", "users", str(write(tmp_path / "u.csv", USERS))])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "env.db").exists()


def test_bad_file_exits_non_zero_with_one_line(runner, tmp_path, db_path):
    bad = write(tmp_path / "users.csv", "external_id,consent_sms\nu1,yes\nu2,maybe\n")
    result = runner.invoke(app, ["import", "users", str(bad), "--db", str(db_path)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert f"{bad}:3: column 'consent_sms': bad boolean" in result.output
    assert catalog.catalog_counts(open_store(db_path))["users"] == 0


def test_real_entry_point_prints_one_line_no_traceback(tmp_path):
    """The installed command, not CliRunner: what a user really sees on stderr."""
    bad = write(tmp_path / "items.csv", "sku,name\nA1,Cup\n")
    proc = subprocess.run([sys.executable, "-m", "pushgen", "import", "items", str(bad),
                           "--db", str(tmp_path / "x.db")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"{bad}:1: column 'title': required column missing" in lines[0]


def test_skip_invalid_default_reject_file(runner, tmp_path, db_path):
    path = write(tmp_path / "users.csv", "external_id,consent_sms\nu1,yes\nu2,maybe\nu3,no\n")
    result = runner.invoke(app, ["import", "users", str(path), "--skip-invalid", "--db", str(db_path)])
    assert result.exit_code == 0, result.output
    rejects = tmp_path / "users.rejects.csv"
    assert "users.rejects.csv" in result.output.replace("\n", "")
    with open(rejects, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["external_id"], r["consent_sms"]) for r in rows] == [("u2", "maybe")]
    assert rows[0]["_reason"].startswith("line 3, column consent_sms: bad boolean")
    assert catalog.catalog_counts(open_store(db_path))["users"] == 2

    custom = tmp_path / "out" / "bad.jsonl"
    custom.parent.mkdir()
    result = runner.invoke(app, ["import", "users", str(path), "--skip-invalid", "--rejects", str(custom),
                                 "--db", str(db_path)])
    assert result.exit_code == 0 and '"_reason"' in custom.read_text(encoding="utf-8")


def test_bad_map_option(runner, tmp_path, db_path):
    path = write(tmp_path / "items.csv", ITEMS)
    result = runner.invoke(app, ["import", "items", str(path), "--map", "title", "--db", str(db_path)])
    assert result.exit_code == 1
    assert "--map expects TARGET=SOURCE" in result.output
    for option, value, words in (("--set", "kind", "--set expects COLUMN=VALUE"),
                                 ("--delimiter", ":", "--delimiter ':': use one of"),
                                 ("--date-format", "dd/mm", "has no strptime code"),
                                 ("--encoding", "nope", "unknown encoding 'nope'")):
        result = runner.invoke(app, ["import", "items", str(path), option, value, "--db", str(db_path)])
        assert result.exit_code == 1 and words in result.output, result.output


def test_reading_options_reach_the_import(runner, tmp_path, db_path):
    """A semicolon, decimal-comma, cp1252 file with NA markers, through the command line."""
    path = tmp_path / "artikel.csv"
    path.write_bytes("nr;name;preis;lager\nA1;Crème;12,50;NA\nA2;Brûlée;1.234,00;3\n".encode("cp1252"))
    result = runner.invoke(app, ["import", "items", str(path), "--map", "sku=nr", "--map", "title=name",
                                 "--map", "price=preis", "--map", "stock=lager", "--decimal-comma",
                                 "--null", "NA", "--encoding", "cp1252", "--db", str(db_path)])
    assert result.exit_code == 0, result.output
    items = {i["sku"]: (i["title"], i["price"], i["stock"]) for i in catalog.iter_items(open_store(db_path))}
    assert items == {"A1": ("Crème", 12.5, None), "A2": ("Brûlée", 1234.0, 3)}


def test_stats_without_database_is_an_error_and_creates_nothing(runner, tmp_path):
    result = runner.invoke(app, ["stats", "--db", str(tmp_path / "none.db")])
    assert result.exit_code == 1
    assert "no such database" in result.output
    assert not (tmp_path / "none.db").exists()


def test_demo_command(runner, tmp_path):
    db_path = tmp_path / "demo.db"
    result = runner.invoke(app, ["demo", "--users", "60", "--items", "24", "--seed", "5", "--db", str(db_path)])
    assert result.exit_code == 0, result.output
    assert "Demo shop" in result.output and "events:" in result.output
    counts = catalog.catalog_counts(open_store(db_path))
    assert (counts["users"], counts["items"]) == (60, 24) and counts["events"] > 600
    again = runner.invoke(app, ["demo", "--users", "60", "--items", "24", "--seed", "5", "--db", str(db_path)])
    assert again.exit_code == 0 and "nothing changed" in again.output


def test_run_demo_is_callable(tmp_path):
    out = io.StringIO()
    summary = run_demo(tmp_path / "d.db", 9, 40, 16, Console(file=out, width=100))
    assert (summary.users, summary.items) == (40, 16) and summary.events > 400
    assert "Demo shop" in out.getvalue()


@pytest.mark.parametrize("args", [[], ["import"], ["import", "users"], ["import", "items"],
                                  ["import", "events"], ["import", "unsubscribes"], ["demo"],
                                  ["stats"]])
def test_help(runner, args):
    result = runner.invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    if args[-1:] and args[-1] != "import":
        assert "Example" in result.output


def test_version(runner):
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"pushgen {__version__}"


def test_db_before_the_command(tmp_path, runner, monkeypatch):
    """`pushgen --db FILE CMD` works like `pushgen CMD --db FILE`; a later --db wins."""
    from pushgen.store import open_store

    a, b = tmp_path / "a.db", tmp_path / "b.db"
    open_store(a)["users"].insert({"external_id": "only-in-a", "created_at": "x",
                                   "updated_at": "x"})
    open_store(b)
    monkeypatch.setenv("PUSHGEN_DB", str(b))
    def shown(result) -> str:     # rich wraps the long path of the table title
        assert result.exit_code == 0, result.output
        return result.output.replace("\n", "").replace(" ", "")

    assert str(a) in shown(runner.invoke(app, ["--db", str(a), "stats"]))
    later = shown(runner.invoke(app, ["--db", str(a), "stats", "--db", str(b)]))
    assert str(b) in later and str(a) not in later
    import os
    assert os.environ["PUSHGEN_DB"] == str(b)     # restored after the command
