"""Importing users, items and events: validation, atomicity, idempotence, streaming."""

from __future__ import annotations

import csv
import json
import random
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from pushgen.ingest import importer
from pushgen.errors import InputError
from pushgen.ingest import ImportOptions, import_file, import_rows, parse_timestamp
from pushgen.store import catalog, open_store

USERS_CSV = (
    "external_id,name,email,phone,locale,timezone,consent_email,consent_sms,consent_push,age_band,gender,tier\n"
    "u1,王芳,wang.fang@example.com,+8613800000001,zh-CN,Asia/Shanghai,yes,no,1,25-34,female,gold\n"
    "u2,John Smith,john@example.com,+12125550101,,America/New_York,true,FALSE,0,45-54,male,bronze\n"
)
ITEMS_JSONL = [
    {"sku": "A1", "title": "Green Tea", "price": "12.50", "category": "tea",
     "tags": "tea|green, organic", "title_zh": "龙井绿茶", "url": "https://shop.example/p/A1"},
    {"sku": "A2", "title": "Trail Shoes", "price": 80, "sale_price": 60, "stock": "0",
     "active": "no", "currency": "eur", "tags": ["shoes", "trail"]},
]
EVENTS_CSV = (
    "user,item,kind,ts,value\n"
    "u1,A1,view,2026-03-01,\n"
    "u1,A1,purchase,2026-03-01T10:00:00+08:00,2\n"
    "u2,A2,VIEW,2026-03-02 09:30:00,1\n"
)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def snapshot(db) -> dict[str, list[tuple]]:
    """Full content of the catalog tables, for 'nothing changed' assertions."""
    return {t: db.execute(f"SELECT * FROM {t} ORDER BY id").fetchall()
            for t in ("users", "items", "events")}


@pytest.fixture
def db(tmp_path: Path):
    return open_store(tmp_path / "t.db")


@pytest.fixture
def loaded(db, tmp_path: Path):
    """A database with two users, two items and three events."""
    import_file(db, "users", write(tmp_path / "users.csv", USERS_CSV))
    import_file(db, "items", write_jsonl(tmp_path / "items.jsonl", ITEMS_JSONL))
    import_file(db, "events", write(tmp_path / "events.csv", EVENTS_CSV))
    return db


def test_import_users_csv(db, tmp_path):
    report = import_file(db, "users", write(tmp_path / "users.csv", USERS_CSV))
    assert (report.rows, report.inserted, report.updated, report.unchanged, report.rejected) == (2, 2, 0, 0, 0)
    u1, u2 = list(catalog.iter_users(db))
    assert u1["name"] == "王芳" and u1["locale"] == "zh-CN" and u1["phone"] == "+8613800000001"
    assert (u1["consent_email"], u1["consent_sms"], u1["consent_push"]) == (True, False, True)
    assert u1["attributes"] == {"age_band": "25-34", "gender": "female", "tier": "gold"}
    assert u2["locale"] == "en-US"  # empty -> default
    assert (u2["consent_email"], u2["consent_sms"], u2["consent_push"]) == (True, False, False)
    assert catalog.get_user(db, u2["id"])["email"] == "john@example.com"
    assert catalog.get_user(db, 999) is None


def test_import_items_jsonl(db, tmp_path):
    report = import_file(db, "items", write_jsonl(tmp_path / "items.jsonl", ITEMS_JSONL))
    assert report.inserted == 2
    ids = catalog.item_ids_by_sku(db)
    a2, a1 = catalog.get_items(db, [ids["A2"], 12345, ids["A1"]])  # order kept, unknown dropped
    assert a1["price"] == 12.5 and a1["currency"] == "USD" and a1["active"] is True
    assert a1["attributes"] == {"tags": ["tea", "green", "organic"], "title_zh": "龙井绿茶"}
    assert a1["url"] == "https://shop.example/p/A1"
    assert (a2["price"], a2["sale_price"], a2["stock"], a2["active"], a2["currency"]) == (80.0, 60.0, 0, False, "EUR")
    assert a2["attributes"]["tags"] == ["shoes", "trail"]


def test_import_events_normalises_time_and_kind(loaded):
    events = list(catalog.iter_events(loaded))
    assert [(e["kind"], e["value"], e["ts"]) for e in events] == [
        ("view", 1.0, "2026-03-01T00:00:00+00:00"),
        ("purchase", 2.0, "2026-03-01T02:00:00+00:00"),
        ("view", 1.0, "2026-03-02T09:30:00+00:00"),
    ]
    assert catalog.event_kind_counts(loaded) == {"view": (2, 2), "purchase": (1, 1)}
    assert [e["kind"] for e in catalog.iter_events(loaded, kinds=["purchase"])] == ["purchase"]


def test_csv_with_bom_and_chinese_round_trip(db, tmp_path):
    path = tmp_path / "items.csv"
    path.write_bytes(b"\xef\xbb\xbf" + "sku,title,description,brand\nT1,西湖龙井,明前特级,\"茶,叶\"\n".encode())
    import_file(db, "items", path)
    (item,) = catalog.iter_items(db)
    assert (item["sku"], item["title"], item["description"], item["brand"]) == ("T1", "西湖龙井", "明前特级", "茶,叶")
    # and out again: JSON attributes keep the characters readable, not \u escapes
    import_rows(db, "items", [{"sku": "T1", "title": "西湖龙井", "title_zh": "龙井"}])
    raw = db.execute("SELECT attributes FROM items").fetchone()[0]
    assert "龙井" in raw


def test_reimport_changes_nothing(loaded, tmp_path):
    old = "2000-01-01T00:00:00+00:00"
    loaded.execute("UPDATE users SET updated_at = ?", [old])
    loaded.execute("UPDATE items SET updated_at = ?", [old])
    before = snapshot(loaded)
    for kind, name in (("users", "users.csv"), ("items", "items.jsonl"), ("events", "events.csv")):
        report = import_file(loaded, kind, tmp_path / name)
        assert (report.inserted, report.updated, report.unchanged) == (0, 0, report.rows), kind
    assert snapshot(loaded) == before


def test_changed_row_is_updated_and_only_that_row(loaded, tmp_path):
    old = "2000-01-01T00:00:00+00:00"
    loaded.execute("UPDATE users SET updated_at = ?", [old])
    report = import_file(loaded, "users", write(tmp_path / "u2.csv", USERS_CSV.replace("John Smith", "John Smyth")))
    assert (report.inserted, report.updated, report.unchanged) == (0, 1, 1)
    u1, u2 = list(catalog.iter_users(loaded))
    assert u2["name"] == "John Smyth" and u2["updated_at"] != old
    assert u1["updated_at"] == old


def test_partial_file_keeps_other_columns_and_merges_attributes(loaded, tmp_path):
    import_file(loaded, "users", write(tmp_path / "p.csv", "external_id,email,region,tier\nu1,new@example.com,east,\n"))
    u1 = next(catalog.iter_users(loaded))
    assert u1["name"] == "王芳" and u1["email"] == "new@example.com"
    assert u1["consent_push"] is True  # column absent from the file: kept
    # region added, tier cleared by its empty cell, the rest kept
    assert u1["attributes"] == {"age_band": "25-34", "gender": "female", "region": "east"}


def test_event_value_change_is_an_update_and_file_repeats_are_merged(loaded, tmp_path):
    path = write(tmp_path / "e2.csv", "user,item,kind,ts,value\n"
                 "u1,A1,purchase,2026-03-01T02:00:00Z,3\n"
                 "u2,A1,view,2026-03-05,1\n"
                 "u2,A1,view,2026-03-05T00:00:00,1\n")
    report = import_file(loaded, "events", path)
    # The two u2 views are one event seen twice: merged into quantity 2, never "unchanged".
    assert (report.inserted, report.updated, report.unchanged, report.rejected) == (1, 1, 0, 0)
    assert (report.merged, report.quantity) == (1, 3.0)
    events = {(e["kind"], e["ts"]): (e["value"], e["quantity"]) for e in catalog.iter_events(loaded)}
    assert events[("purchase", "2026-03-01T02:00:00+00:00")] == (3.0, 1.0)
    assert events[("view", "2026-03-05T00:00:00+00:00")] == (1.0, 2.0)
    assert catalog.catalog_counts(loaded)["events"] == 4
    again = import_file(loaded, "events", path)
    assert (again.inserted, again.updated, again.unchanged, again.merged) == (0, 0, 2, 1)


def test_column_mapping(db, tmp_path):
    path = write(tmp_path / "p.csv", "product_id,product_name,cost\nP1,Mug,9.5\n")
    report = import_file(db, "items", path, mapping={"sku": "product_id", "title": "product_name", "price": "cost"})
    assert report.inserted == 1
    (item,) = catalog.iter_items(db)
    assert (item["sku"], item["title"], item["price"], item["attributes"]) == ("P1", "Mug", 9.5, {})


def test_mapping_errors(db, tmp_path):
    path = write(tmp_path / "p.csv", "sku,title,product_name\nP1,Mug,Big Mug\n")
    with pytest.raises(InputError) as err:
        import_file(db, "items", path, mapping={"title": "name"})
    assert (err.value.line, err.value.field) == (1, "name") and "mapped column not found" in str(err.value)
    with pytest.raises(InputError) as err:
        import_file(db, "items", path, mapping={"title": "product_name"})
    assert err.value.field == "title" and "both column" in str(err.value)
    assert snapshot(db) == {"users": [], "items": [], "events": []}


# Each case: kind, file name, content, expected (line, field), words in the message.
BAD_INPUTS = [
    ("users", "u.csv", "name,email\nAnn,ann@example.com\n", (1, "external_id"), "required column missing"),
    ("items", "i.csv", "sku,title,price\nA1,Changed title,10\nB9,Cup,12;5\n", (3, "price"), "bad number"),
    ("items", "i.csv", "sku,title,price\nA1,Cup,-3\n", (2, "price"), "bad number"),
    ("items", "i.csv", "sku,title,stock\nA1,Cup,3.5\n", (2, "stock"), "whole number"),
    ("items", "i.csv", "sku,title,price,sale_price\nA1,Cup,10,10\nS5,SaleHigher,10,20\n", (3, "sale_price"), "sale price 20 is above the price 10"),
    ("items", "i.jsonl", '{"sku": "S5", "title": "Cup", "price": 9.5, "sale_price": 9.99}\n', (1, "sale_price"), "sale price 9.99 is above the price 9.5"),
    ("users", "u.csv", "external_id,consent_sms\nu1,0\nu3,maybe\n", (3, "consent_sms"), "bad boolean"),
    ("events", "e.csv", "user,item,kind,ts\nu1,A1,view,2026-04-01\nnobody,A1,view,2026-04-01\n", (3, "user"), "unknown user"),
    ("events", "e.csv", "user,item,kind,ts\nu1,NOPE,view,2026-04-01\n", (2, "item"), "unknown item"),
    ("events", "e.csv", "user,item,kind,ts\nu1,A1,view,2026-13-01\n", (2, "ts"), "bad date"),
    ("events", "e.csv", "user,item,kind,ts\nu1,A1,view,yesterday\n", (2, "ts"), "bad date"),
    ("events", "e.csv", "user,item,kind,ts,value\nu1,A1,view,2026-04-01,abc\n", (2, "value"), "bad number"),
    ("users", "u.csv", "external_id,name\nu7,A\nu8,B\nu7,C\n", (4, "external_id"), "duplicate external_id 'u7' (first on line 2)"),
    ("items", "i.csv", "sku,title\nA1,Cup\nB2,  \n", (3, "title"), "required value is empty"),
    ("users", "u.csv", "external_id,email\nu1,not-an-email\n", (2, "email"), "bad email"),
    ("items", "i.csv", "sku,title,url\nA1,Cup,shop.example/p/A1\n", (2, "url"), "bad URL"),
    ("items", "i.jsonl", '{"sku": "A1", "title": "Cup"}\n{"title": "No sku"}\n', (2, "sku"), "required column missing"),
    ("items", "i.jsonl", '{"sku": "A1", "title": "Cup"}\n{"sku": "B1", "title": \n', (2, None), "bad JSON"),
    ("events", "e.jsonl", '{"user": "u1", "item": "A1", "kind": "view", "ts": "2026-02-30"}\n', (1, "ts"), "bad date"),
]


@pytest.mark.parametrize("kind,name,content,where,words", BAD_INPUTS,
                         ids=[f"{c[0]}-{c[4].split()[0]}-{c[3][1]}-{i}" for i, c in enumerate(BAD_INPUTS)])
def test_bad_input_names_place_and_writes_nothing(loaded, tmp_path, monkeypatch, kind, name, content,
                                                  where, words):
    # Batches of one: good rows before the bad one are already written when it is met,
    # so "nothing changed" proves the rollback, not just a late flush.
    monkeypatch.setattr(importer, "BATCH_SIZE", 1)
    before = snapshot(loaded)
    path = write(tmp_path / name, content)
    with pytest.raises(InputError) as err:
        import_file(loaded, kind, path)
    message = str(err.value)
    assert (err.value.file, err.value.line, err.value.field) == (str(path), *where)
    assert message.startswith(f"{path}:{where[0]}: ")
    if where[1]:
        assert f"column '{where[1]}'" in message
    assert words in message
    assert "\n" not in message
    assert snapshot(loaded) == before


def test_sale_price_equal_to_price_is_allowed(db, tmp_path):
    path = write(tmp_path / "i.csv", "sku,title,price,sale_price\nS6,Same,10,10\nS7,Cheaper,10,8\n")
    report = import_file(db, "items", path)
    assert report.inserted == 2
    rows = {r["sku"]: (r["price"], r["sale_price"]) for r in db["items"].rows}
    assert rows == {"S6": (10.0, 10.0), "S7": (10.0, 8.0)}


def test_not_utf8_and_wrong_format(db, tmp_path):
    path = tmp_path / "gbk.csv"
    path.write_bytes("sku,title\nA1,".encode() + "绿茶".encode("gbk") + b"\n")
    with pytest.raises(InputError, match=r"gbk\.csv:2: not valid UTF-8"):
        import_file(db, "items", path)
    with pytest.raises(InputError, match="unknown file type '.docx'"):
        import_file(db, "items", write(tmp_path / "x.docx", "x"))
    with pytest.raises(InputError, match="not a readable .xlsx file"):
        import_file(db, "items", write(tmp_path / "x.xlsx", "x"))
    with pytest.raises(InputError, match="save the sheet as .xlsx or CSV"):
        import_file(db, "items", write(tmp_path / "x.xls", "x"))
    with pytest.raises(InputError, match="not a JSON array"):
        import_file(db, "items", write(tmp_path / "a.json", '[{"sku": "A1"}]'))
    with pytest.raises(InputError, match="no such file"):
        import_file(db, "items", tmp_path / "missing.csv")
    with pytest.raises(InputError, match="empty"):
        import_file(db, "items", write(tmp_path / "empty.csv", ""))
    assert snapshot(db) == {"users": [], "items": [], "events": []}


def test_skip_invalid_writes_good_rows_and_rejects_csv(loaded, tmp_path):
    path = write(tmp_path / "u.csv", "external_id,name,consent_sms\n"
                 "u10,李娜,yes\nu11,Bad,perhaps\n,No id,1\nu12,Good,no\nu10,Again,no\n")
    rejects = tmp_path / "u.rejects.csv"
    report = import_file(loaded, "users", path, skip_invalid=True, reject_path=rejects)
    assert (report.rows, report.inserted, report.rejected) == (5, 2, 3)
    assert report.reject_path == str(rejects)
    assert {u["external_id"] for u in catalog.iter_users(loaded)} == {"u1", "u2", "u10", "u12"}
    with open(rejects, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["external_id"] for r in rows] == ["u11", "", "u10"]
    assert rows[0]["name"] == "Bad" and rows[0]["consent_sms"] == "perhaps"
    assert rows[0]["_reason"].startswith("line 3, column consent_sms: bad boolean")
    assert rows[1]["_reason"] == "line 4, column external_id: required value is empty"
    assert "duplicate external_id 'u10' (first on line 2)" in rows[2]["_reason"]
    assert not (tmp_path / "u.rejects.csv.partial").exists()


def test_skip_invalid_jsonl_rejects_and_no_file_without_rejects(loaded, tmp_path):
    path = write(tmp_path / "e.jsonl", '{"user": "u1", "item": "A2", "kind": "cart", "ts": "2026-03-03"}\n'
                 '{"user": "u1", "item": "ZZ", "kind": "cart", "ts": "2026-03-03"}\nnot json\n')
    rejects = tmp_path / "e.rejects.jsonl"
    report = import_file(loaded, "events", path, skip_invalid=True, reject_path=rejects)
    assert (report.inserted, report.rejected) == (1, 2)
    lines = [json.loads(line) for line in rejects.read_text(encoding="utf-8").splitlines()]
    assert lines[0]["item"] == "ZZ" and lines[0]["_reason"].startswith("line 2, column item: unknown item")
    assert lines[1] == {"_raw": "not json", "_reason": lines[1]["_reason"]}
    assert lines[1]["_reason"].startswith("line 3: bad JSON")
    clean = tmp_path / "clean.rejects.csv"
    report = import_file(loaded, "users", tmp_path / "users.csv", skip_invalid=True, reject_path=clean)
    assert report.rejected == 0 and report.reject_path is None and not clean.exists()
    with pytest.raises(InputError, match="does not exist"):
        import_file(loaded, "users", tmp_path / "users.csv", skip_invalid=True,
                    reject_path=tmp_path / "no" / "such" / "r.csv")


def test_import_rows_same_validation(db):
    with pytest.raises(InputError) as err:
        import_rows(db, "users", [{"external_id": "a"}, {"external_id": "b", "consent_email": "sure"}])
    assert str(err.value) == "<rows>:2: column 'consent_email': bad boolean 'sure' (use 1/0, true/false or yes/no)"
    assert snapshot(db)["users"] == []
    report = import_rows(db, "users", [{"external_id": "a", "consent_email": True}])
    assert report.inserted == 1 and next(catalog.iter_users(db))["consent_email"] is True


@pytest.mark.parametrize("text,expected", [
    ("2026-03-01", "2026-03-01T00:00:00+00:00"),
    ("2026-03-01T23:30:00Z", "2026-03-01T23:30:00+00:00"),
    ("2026-03-01T08:00:00+08:00", "2026-03-01T00:00:00+00:00"),
    ("2026-03-01 08:00", "2026-03-01T08:00:00+00:00"),
])
def test_parse_timestamp(text, expected):
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize("text,formats,expected", [
    ("2026-03-01 10:00", (), "2026-03-01T02:00:00+00:00"),            # Shanghai is +08:00
    ("2026-03-01T10:00:00", (), "2026-03-01T02:00:00+00:00"),
    ("2026-03-01", (), "2026-02-28T16:00:00+00:00"),                  # local midnight
    ("2026-03-01T10:00:00+01:00", (), "2026-03-01T09:00:00+00:00"),   # an offset keeps it
    ("2026-03-01T10:00:00Z", (), "2026-03-01T10:00:00+00:00"),
    ("01.03.2026 10:00", ("%d.%m.%Y %H:%M",), "2026-03-01T02:00:00+00:00"),
])
def test_times_without_an_offset_are_read_in_the_given_timezone(text, formats, expected):
    assert parse_timestamp(text, "ts", formats, "Asia/Shanghai") == expected


def test_timezone_daylight_saving_and_unknown_zones():
    berlin = "Europe/Berlin"
    assert parse_timestamp("2026-07-01 12:00", "ts", (), berlin) == "2026-07-01T10:00:00+00:00"
    assert parse_timestamp("2026-01-01 12:00", "ts", (), berlin) == "2026-01-01T11:00:00+00:00"
    # 02:30 on 29 March does not exist in Berlin: read with the offset before the change
    assert parse_timestamp("2026-03-29 02:30", "ts", (), berlin) == "2026-03-29T01:30:00+00:00"
    with pytest.raises(InputError, match="unknown timezone 'Mars/Base'"):
        ImportOptions(timezone="Mars/Base")


def test_progress_callback_reports_bytes(loaded, tmp_path):
    calls: list[tuple[int, int]] = []
    path = tmp_path / "events.csv"
    import_file(loaded, "events", path, progress=lambda done, total: calls.append((done, total)))
    size = path.stat().st_size
    assert calls and calls[-1] == (size, size)


def test_large_events_file_streams_in_bounded_memory(db, tmp_path):
    import_rows(db, "users", [{"external_id": f"u{i}"} for i in range(2000)])
    import_rows(db, "items", [{"sku": f"s{i}", "title": f"Item {i}"} for i in range(300)])
    n = 120_000
    rng = random.Random(3)
    path = tmp_path / "big.csv"
    with open(path, "w", encoding="utf-8") as f:
        f.write("user,item,kind,ts\n")
        for i in range(n):
            f.write(f"u{rng.randrange(2000)},s{rng.randrange(300)},view,"
                    f"2026-01-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:{(i // 60) % 60:02d}Z\n")
    size = path.stat().st_size
    tracemalloc.start()
    try:
        report = import_file(db, "events", path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.rows == n and report.inserted + report.merged == n and report.rejected == 0
    assert catalog.catalog_counts(db)["events"] == report.inserted
    # Streaming keeps one batch of 5,000 parsed rows (~1.5 MB) plus the id maps; holding
    # all 120k parsed rows would take ~20 MB, and the file itself is ~4.3 MB.
    print(f"events file {size / 1e6:.1f} MB, peak traced memory {peak / 1e6:.1f} MB")
    assert peak < 3_000_000 and peak < size, (peak, size)


def test_repeated_events_sum_quantities_and_keep_the_last_value(loaded, tmp_path, monkeypatch):
    """Repeats far apart in one file (different batches) are still one event."""
    lines = ["user,item,kind,ts,value,quantity"]
    lines.append("u1,A2,rating,2026-04-01T10:00:00Z,2,")
    lines += [f"u2,A1,view,2026-04-0{1 + i % 2},,1" for i in range(10)]
    lines.append("u1,A2,rating,2026-04-01T10:00:00Z,5,2")
    path = write(tmp_path / "r.csv", "\n".join(lines) + "\n")
    monkeypatch.setattr(importer, "BATCH_SIZE", 3)
    report = import_file(loaded, "events", path)
    assert (report.rows, report.inserted, report.merged, report.quantity) == (12, 3, 9, 13.0)
    rows = {(e["kind"], e["ts"][:10]): (e["value"], e["quantity"]) for e in catalog.iter_events(loaded)
            if e["kind"] in ("rating", "view") and e["ts"].startswith("2026-04")}
    assert rows == {("rating", "2026-04-01"): (5.0, 3.0), ("view", "2026-04-01"): (1.0, 5.0),
                    ("view", "2026-04-02"): (1.0, 5.0)}
