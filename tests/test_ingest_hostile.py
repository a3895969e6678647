"""Import refuses what it cannot read faithfully (issue 9, finding 9).

Each case was accepted silently or crashed with a traceback before: an unclosed CSV quote
swallowed the next lines into one title, NUL and escape characters were stored, a
duplicated JSON key kept its last value, a 10 MB JSON field passed while CSV stopped at
128 KB, and a 20-digit stock, a 5,000-digit JSON number and JSON nested 5,000 deep raised
OverflowError / ValueError / RecursionError. Now each is refused with file, line and
column, and nothing is written.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pushgen.errors import InputError
from pushgen.ingest import MAX_VALUE_CHARS, import_file
from pushgen.ingest import importer
from pushgen.store import catalog, open_store


def snapshot(db) -> dict[str, list[tuple]]:
    return {t: db.execute(f"SELECT * FROM {t} ORDER BY id").fetchall()
            for t in ("users", "items", "events")}


@pytest.fixture
def db(tmp_path: Path):
    store = open_store(tmp_path / "t.db")
    import_file(store, "items", _write(tmp_path / "seed.csv", "sku,title\nS0,Seed\n"))
    return store


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


LONG = "x" * (MAX_VALUE_CHARS + 1)
GOOD = '{"sku": "G1", "title": "Good"}\n'   # a good row first: it must not be kept either

# name, content, (line, column), words in the message
HOSTILE = [
    ("unclosed-quote-to-eof.csv", 'sku,title,price\nG1,Good,1\nA2,"Mug,4\nA3,Plate,5\n',
     (3, None), "ends inside a quoted value (an unclosed quote on line 3?)"),
    ("unclosed-quote-swallows.csv", 'sku,title,price\nG1,Good,1\nA1,"Cup,3\nA2,Mug",4\n'
     'A3,Plate,5\n', (3, "title"),
     "line break inside a one-line value (it runs over 2 lines: an unclosed quote?)"),
    ("stray-quote.csv", 'sku,title,price\nG1,Good,1\nA1,"Cup" large,3\n', (3, None), "bad CSV"),
    ("nul.csv", "sku,title\nG1,Good\nA1,Cu\x00p\n", (3, "title"), "NUL (U+0000) at character 3"),
    ("escape.jsonl", GOOD + json.dumps({"sku": "A1", "title": "Cup\u001b[31m"}) + "\n",
     (2, "title"), "ESC (U+001B) at character 4"),
    ("line-separator.csv", "sku,title\nG1,Good\nA1,Cup\u2028Subject: x\n", (3, "title"),
     "line separator (U+2028)"),
    ("c1-control.csv", "sku,title\nG1,Good\nA1,Cu\u0085p\n", (3, "title"),
     "control character (U+0085)"),
    ("duplicate-key.jsonl", GOOD + '{"sku": "A1", "title": "Cup", "title": "Mug"}\n',
     (2, "title"), "key appears twice"),
    ("long-field.csv", f"sku,title,description\nG1,Good,\nA1,Cup,{LONG}\n", (3, "description"),
     f"longer than the limit of {MAX_VALUE_CHARS:,}"),
    ("long-field.jsonl", GOOD + json.dumps({"sku": "A1", "title": "Cup", "description": LONG})
     + "\n", (2, "description"), f"longer than the limit of {MAX_VALUE_CHARS:,}"),
    ("stock-20-digits.csv", "sku,title,stock\nG1,Good,1\nA1,Cup,12345678901234567890\n",
     (3, "stock"), "out of range"),
    ("stock-20-digits.jsonl", GOOD + '{"sku": "A1", "title": "Cup", "stock": '
     '12345678901234567890}\n', (2, "stock"), "out of range"),
    ("price-5000-digits.jsonl", GOOD + '{"sku": "A1", "title": "Cup", "price": ' + "9" * 5000
     + "}\n", (2, "price"), "number of 5,000 digits"),
    ("price-5000-digits.csv", "sku,title,price\nG1,Good,1\nA1,Cup," + "9" * 5000 + "\n",
     (3, "price"), "bad number of 5000 characters"),
    ("nested-5000.jsonl", GOOD + '{"sku": "A1", "title": "Cup", "x": ' + "[" * 5000
     + "]" * 5000 + "}\n", (2, None), "JSON nested deeper than 32 levels (at column"),
    ("nan.jsonl", GOOD + '{"sku": "A1", "title": "Cup", "price": NaN}\n', (2, None),
     "NaN is not a number"),
]


@pytest.mark.parametrize("name,content,where,words", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_input_is_refused_with_place_and_nothing_written(db, tmp_path, monkeypatch,
                                                                 name, content, where, words):
    # Batches of one: the good row before the bad one is already written when it is met,
    # so "nothing changed" proves the rollback.
    monkeypatch.setattr(importer, "BATCH_SIZE", 1)
    path = _write(tmp_path / name, content)
    before = snapshot(db)
    with pytest.raises(InputError) as err:
        import_file(db, "items", path)
    message = str(err.value)
    line, column = where
    assert (err.value.file, err.value.line, err.value.field) == (str(path), line, column)
    assert message.startswith(f"{path}:{line}: "), message
    if column:
        assert f"column '{column}'" in message
    assert words in message, message
    assert "\n" not in message
    assert snapshot(db) == before


def test_one_value_limit_for_csv_and_jsonl(db, tmp_path):
    """The longest allowed value imports from both formats; one more character fails both."""
    exact = "y" * MAX_VALUE_CHARS
    csv_ok = _write(tmp_path / "ok.csv", f"sku,title,description\nL1,Long,{exact}\n")
    jsonl_ok = _write(tmp_path / "ok.jsonl", json.dumps({"sku": "L2", "title": "Long",
                                                          "description": exact}) + "\n")
    assert import_file(db, "items", csv_ok).inserted == 1
    assert import_file(db, "items", jsonl_ok).inserted == 1
    lengths = {len(i["description"] or "") for i in catalog.iter_items(db) if i["sku"] in ("L1", "L2")}
    assert lengths == {MAX_VALUE_CHARS}


def test_multiline_description_is_kept_but_control_characters_are_not(db, tmp_path):
    path = _write(tmp_path / "d.csv", 'sku,title,description\nD1,Pot,"Line one\r\nLine two\tend"\n')
    assert import_file(db, "items", path).inserted == 1
    item = next(i for i in catalog.iter_items(db) if i["sku"] == "D1")
    assert item["description"] == "Line one\r\nLine two\tend"
    bad = _write(tmp_path / "d2.csv", 'sku,title,description\nD2,Pot,"bell\x07"\n')
    with pytest.raises(InputError, match=r"d2\.csv:2: column 'description': control character"):
        import_file(db, "items", bad)


def test_skip_invalid_rejects_hostile_rows_and_keeps_reading(db, tmp_path):
    path = _write(tmp_path / "mixed.jsonl",
                  '{"sku": "K1", "title": "Kept"}\n'
                  '{"sku": "K2", "title": "Dup", "title": "Dup2"}\n'
                  '{"sku": "K3", "title": "Deep", "x": ' + "[" * 100 + "]" * 100 + "}\n"
                  '{"sku": "K4", "title": "Nul\\u0000"}\n'
                  '{"sku": "K5", "title": "Also kept"}\n')
    rejects = tmp_path / "mixed.rejects.jsonl"
    report = import_file(db, "items", path, skip_invalid=True, reject_path=rejects)
    assert (report.inserted, report.rejected) == (2, 3)
    reasons = [json.loads(line)["_reason"] for line in rejects.read_text().splitlines()]
    assert reasons[0].startswith("line 2, column title: bad JSON: key appears twice")
    assert reasons[1].startswith("line 3: JSON nested deeper than 32 levels")
    assert reasons[2].startswith("line 4, column title: NUL")


def test_real_command_prints_one_line_for_hostile_json(tmp_path):
    """The installed entry point, not CliRunner: no traceback reaches the user."""
    deep = _write(tmp_path / "deep.jsonl", '{"sku": "A1", "title": "x", "y": '
                  + "[" * 5000 + "]" * 5000 + "}\n")
    big = _write(tmp_path / "big.csv", "sku,title,stock\nA1,Cup,12345678901234567890\n")
    for path, expected in ((deep, f"{deep}:1: JSON nested deeper than 32 levels"),
                           (big, f"{big}:2: column 'stock': number 12345678901234567890 is out of range")):
        proc = subprocess.run([sys.executable, "-m", "pushgen", "import", "items", str(path),
                               "--db", str(tmp_path / "x.db")], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 1
        assert "Traceback" not in proc.stderr + proc.stdout
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and expected in lines[0], proc.stderr
