"""Shop exports as they come (issue 12, points 1 and 2): options, encodings, Parquet, xlsx,
repeated lines merged into quantities, returns, and the grocery purchases file."""

from __future__ import annotations

import collections
import csv
import datetime as dt
import importlib
import json
import random
from pathlib import Path

import pytest

from pushgen.cli import app
from pushgen.errors import InputError
from pushgen.ingest import ImportOptions, import_file, import_rows
from pushgen.store import catalog, open_store

GROCERIES = Path(__file__).resolve().parents[2] / "shared" / "data" / "groceries" / "Groceries_dataset.csv"
if not GROCERIES.exists():
    GROCERIES = Path("/work/shared/data/groceries/Groceries_dataset.csv")


@pytest.fixture
def db(tmp_path: Path):
    return open_store(tmp_path / "t.db")


@pytest.fixture
def shop(db):
    import_rows(db, "users", [{"external_id": f"u{i}"} for i in range(1, 4)])
    import_rows(db, "items", [{"sku": s, "title": s.title()} for s in ("tea", "mug", "cup")])
    return db


def _write(path: Path, text: str, encoding: str = "utf-8", newline: str = "\n") -> Path:
    path.write_bytes(text.replace("\n", newline).encode(encoding))
    return path


def _events(db) -> list[tuple]:
    return db.execute("SELECT u.external_id, i.sku, e.kind, e.ts, e.quantity, e.value FROM events e "
                      "JOIN users u ON u.id = e.user_id JOIN items i ON i.id = e.item_id "
                      "ORDER BY e.ts, u.external_id, i.sku, e.kind").fetchall()


# --- --set, --date-format ----------------------------------------------------------------------

def test_constant_column_and_date_formats_tried_in_order(shop, tmp_path):
    path = _write(tmp_path / "e.csv", "customer,product,when\n"
                  "u1,tea,27-04-2015\nu2,mug,03.04.2015 14:30\n")
    report = import_file(shop, "events", path, mapping={"user": "customer", "item": "product",
                                                       "ts": "when"},
                         constants={"kind": "purchase"},
                         date_formats=("%d-%m-%Y", "%d.%m.%Y %H:%M"))
    assert report.inserted == 2
    assert _events(shop) == [("u2", "mug", "purchase", "2015-04-03T14:30:00+00:00", 1.0, 1.0),
                             ("u1", "tea", "purchase", "2015-04-27T00:00:00+00:00", 1.0, 1.0)]


def test_timezone_option_reads_local_times_of_every_row(shop, tmp_path, runner):
    """--timezone: an export in the shop's local time (no offsets) is stored as UTC."""
    path = _write(tmp_path / "e.csv", "user,item,kind,ts\nu1,tea,purchase,2026-03-01 09:30\n"
                  "u2,mug,purchase,2026-03-01T09:30:00+00:00\n")
    db_path = tmp_path / "tz.db"
    shop_db = open_store(db_path)
    import_rows(shop_db, "users", [{"external_id": "u1"}, {"external_id": "u2"}])
    import_rows(shop_db, "items", [{"sku": "tea", "title": "Tea"}, {"sku": "mug", "title": "Mug"}])
    bad = runner.invoke(app, ["import", "events", str(path), "--timezone", "Shanghai",
                              "--db", str(db_path)])
    assert bad.exit_code == 1 and "unknown timezone 'Shanghai'" in bad.output
    assert not bad.exception or isinstance(bad.exception, SystemExit)
    res = runner.invoke(app, ["import", "events", str(path), "--timezone", "Asia/Shanghai",
                              "--db", str(db_path)])
    assert res.exit_code == 0, res.output
    assert sorted(r[3] for r in _events(shop_db)) == ["2026-03-01T01:30:00+00:00",
                                                      "2026-03-01T09:30:00+00:00"]


@pytest.mark.parametrize("value,hint", [
    ("27-04-2015", "day first? add --date-format '%d-%m-%Y'"),
    ("04/27/2015 10:00", "month first? add --date-format '%m/%d/%Y %H:%M'"),
    ("03-04-2015", "ambiguous: day-month or month-day? add --date-format '%d-%m-%Y' or '%m-%d-%Y'"),
])
def test_non_iso_dates_without_a_format_are_refused_with_the_format_to_give(shop, tmp_path, value, hint):
    path = _write(tmp_path / "e.csv", f"user,item,kind,ts\nu1,tea,view,{value}\n")
    with pytest.raises(InputError) as err:
        import_file(shop, "events", path)
    assert (err.value.line, err.value.field) == (2, "ts") and hint in str(err.value)
    with pytest.raises(InputError, match="expected '%Y/%m/%d'"):
        import_file(shop, "events", path, date_formats=("%Y/%m/%d",))
    with pytest.raises(InputError, match="no strptime code"):
        ImportOptions(date_formats=("dd-mm-yyyy",))


def test_set_conflicting_with_a_file_column_is_refused(shop, tmp_path):
    path = _write(tmp_path / "e.csv", "user,item,kind,ts\nu1,tea,view,2026-01-01\n")
    with pytest.raises(InputError, match="column 'kind' is both in the file and set with --set"):
        import_file(shop, "events", path, constants={"kind": "purchase"})


# --- delimiters, decimal commas, nulls, returns ------------------------------------------------

def test_semicolon_file_with_decimal_commas_na_customers_and_negative_quantities(db, tmp_path):
    """A European shop export: ; separated, 12,50 prices, NA for guests, returns as -1."""
    path = _write(tmp_path / "verkauf.csv",
                  "kunde;artikel;bezeichnung;datum;menge;preis\n"
                  "K1;A-1;Tee grün;2026-03-01 10:00;2;1.234,50\n"
                  "NA;A-1;Tee grün;2026-03-01 11:00;1;12,50\n"
                  "K2;B-2;Becher;2026-03-02 09:00;-1;7,25\n"
                  "K1;A-1;Tee grün;2026-03-01 10:00;1;1.234,50\n", newline="\r\n")
    report = import_file(db, "events", path, mapping={
        "user": "kunde", "item": "artikel", "item.title": "bezeichnung", "ts": "datum",
        "quantity": "menge", "item.price": "preis"}, constants={"kind": "purchase"},
        decimal_comma=True, nulls=("NA",), create_missing=True)
    assert (report.rows, report.inserted, report.merged, report.returns) == (4, 2, 1, 1)
    assert report.skipped == {"no customer (the user column is empty: a guest or anonymous purchase)": 1}
    assert (report.users_created, report.items_created) == (2, 2)
    assert _events(db) == [("K1", "A-1", "purchase", "2026-03-01T10:00:00+00:00", 3.0, 1.0),
                           ("K2", "B-2", "return", "2026-03-02T09:00:00+00:00", 1.0, 1.0)]
    prices = {i["sku"]: (i["title"], i["price"]) for i in catalog.iter_items(db)}
    assert prices == {"A-1": ("Tee grün", 1234.5), "B-2": ("Becher", 7.25)}


@pytest.mark.parametrize("delimiter", ["\t", "|", ";", ","])
def test_delimiter_is_sniffed(shop, tmp_path, delimiter):
    rows = ["user", "item", "kind", "ts"], ["u1", "tea", "view", "2026-01-01"], \
        ["u2", "cup", "cart", "2026-01-02"]
    path = _write(tmp_path / "e.txt", "".join(delimiter.join(r) + "\n" for r in rows))
    assert import_file(shop, "events", path).inserted == 2


def test_explicit_delimiter_and_bad_one(shop, tmp_path):
    path = _write(tmp_path / "e.csv", "user|item|kind|ts\nu1|tea|view|2026-01-01\n")
    assert import_file(shop, "events", path, delimiter="pipe").inserted == 1
    with pytest.raises(InputError, match="--delimiter ':'"):
        import_file(shop, "events", path, delimiter=":")


def test_decimal_comma_is_refused_without_the_option_and_quantities_are_checked(shop, tmp_path):
    path = _write(tmp_path / "i.csv", "sku,title,price\nX1,Pot,\"12,5\"\n")
    with pytest.raises(InputError, match="a decimal comma\\? add --decimal-comma"):
        import_file(shop, "items", path)
    for quantity, words in (("-2", "negative quantity -2 on a 'view' event"), ("0", "quantity 0")):
        bad = _write(tmp_path / "e.csv", f"user,item,kind,ts,quantity\nu1,tea,view,2026-01-01,{quantity}\n")
        with pytest.raises(InputError, match=words):
            import_file(shop, "events", bad)


def test_trim_makes_trailing_spaces_one_product_and_no_trim_keeps_them_apart(db, tmp_path):
    path = _write(tmp_path / "e.csv", "user,item,ts\n1, cream cheese ,2026-01-01\n1,cream cheese,2026-01-01\n")
    report = import_file(db, "events", path, constants={"kind": "purchase"}, create_missing=True)
    assert (report.items_created, report.inserted, report.merged) == (1, 1, 1)
    assert [i["sku"] for i in catalog.iter_items(db)] == ["cream cheese"]
    other = open_store(tmp_path / "no-trim.db")
    report = import_file(other, "events", path, constants={"kind": "purchase"},
                         create_missing=True, trim=False)
    assert sorted(i["sku"] for i in catalog.iter_items(other)) == [" cream cheese ", "cream cheese"]


def test_created_customers_take_later_cells_and_identical_repeats_write_nothing(
        db, tmp_path, monkeypatch):
    """--create-missing: later rows win and empty cells change nothing, across batches; a
    row repeating the cells last merged for the same customer costs no write."""
    from pushgen.ingest import importer

    monkeypatch.setattr(importer, "BATCH_SIZE", 1)          # every row its own batch
    written: list[str] = []
    upsert = catalog.upsert_users

    def counting(db_, rows):
        written.extend(r["external_id"] for r in rows)
        return upsert(db_, rows)

    monkeypatch.setattr(catalog, "upsert_users", counting)
    path = _write(tmp_path / "e.csv", "user,item,ts,user.name,user.locale\n"
                  "n1,tea,2026-01-01,Ana,\n"         # creates n1
                  "n1,tea,2026-01-02,Ana,\n"         # the same cells: nothing to write
                  "n1,tea,2026-01-03,,zh-CN\n"       # an empty name keeps Ana
                  "n1,tea,2026-01-04,Ana,\n"         # Ana again after other cells
                  "n1,tea,2026-01-05,Bea,\n"         # a later name wins
                  "n1,tea,2026-01-06,Bea,\n")
    report = import_file(db, "events", path, constants={"kind": "purchase"},
                         create_missing=True)
    assert report.users_created == 1 and report.inserted == 6
    user = next(u for u in catalog.iter_users(db) if u["external_id"] == "n1")
    assert (user["name"], user["locale"]) == ("Bea", "zh-CN")
    assert written == ["n1"] * 4


def test_classic_mac_line_ends_are_read_and_errors_name_the_right_line(db, tmp_path):
    """A CR-only file (old Mac exports) gave Python's 'new-line character seen in unquoted
    field'; it is read like any other."""
    path = _write(tmp_path / "u.csv", 'external_id,name,email\nc1,Ana,a@x.example\n'
                  'c2,"Bo, B.",b@x.example\nc3,Cy,c@x.example\n', newline="\r")
    assert b"\n" not in path.read_bytes()
    report = import_file(db, "users", path)
    assert report.inserted == 3
    names = {u["external_id"]: u["name"] for u in catalog.iter_users(db)}
    assert (names["c1"], names["c2"], names["c3"]) == ("Ana", "Bo, B.", "Cy")
    bad = _write(tmp_path / "bad.csv", "external_id,name,email\nc4,Di,d@x.example\n"
                 "c5,Ed\n", newline="\r")
    with pytest.raises(InputError, match=r"bad\.csv:3: 2 values but the header has 3") as err:
        import_file(db, "users", bad)
    assert "new-line character" not in str(err.value)


# --- encodings ----------------------------------------------------------------------------------

@pytest.mark.parametrize("encoding,title", [("gb18030", "西湖龙井绿茶"), ("big5", "凍頂烏龍茶"),
                                            ("cp1252", "Crème brûlée – 20 €")])
def test_older_encodings(db, tmp_path, encoding, title):
    path = _write(tmp_path / "items.csv", f"sku,title\nT1,{title}\n", encoding=encoding)
    with pytest.raises(InputError) as err:
        import_file(db, "items", path)
    assert err.value.line == 2 and "--encoding" in str(err.value)
    assert import_file(db, "items", path, encoding=encoding).inserted == 1
    assert next(catalog.iter_items(db))["title"] == title
    with pytest.raises(InputError, match="unknown encoding 'klingon'"):
        import_file(db, "items", path, encoding="klingon")


def test_utf16_is_named_not_misread(db, tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("sku\ttitle\nT1\tTea\n".encode("utf-16"))
    with pytest.raises(InputError, match="UTF-16"):
        import_file(db, "items", path)
    with pytest.raises(InputError, match="not supported"):
        import_file(db, "items", path, encoding="utf-16")


# --- Parquet and xlsx -----------------------------------------------------------------------

def test_parquet_streams_batches_with_the_same_validation(db, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    n = 9000  # more than one record batch of the reader
    users = pa.table({"external_id": [f"c{i}" for i in range(50)],
                      "consent_email": [i % 2 == 0 for i in range(50)],
                      "age_band": ["25-34"] * 50})
    pq.write_table(users, tmp_path / "users.parquet")
    items = pa.table({"sku": ["p1", "p2"], "title": ["西湖龙井", "Mug"],
                      "price": pa.array([12.5, None]), "stock": pa.array([3, 0], pa.int64())})
    pq.write_table(items, tmp_path / "items.parquet")
    base = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)
    events = pa.table({
        "customer": [f"c{i % 50}" for i in range(n)],
        "sku": ["p1" if i % 3 else "p2" for i in range(n)],
        "kind": ["view"] * n,
        "ts": pa.array([base + dt.timedelta(minutes=i) for i in range(n)], pa.timestamp("s", tz="UTC")),
        "quantity": pa.array([1.0] * n),
    })
    pq.write_table(events, tmp_path / "events.parquet", row_group_size=4000)
    assert import_file(db, "users", tmp_path / "users.parquet").inserted == 50
    assert import_file(db, "items", tmp_path / "items.parquet").inserted == 2
    report = import_file(db, "events", tmp_path / "events.parquet", mapping={"user": "customer",
                                                                           "item": "sku"})
    assert (report.rows, report.inserted) == (n, n)
    first = _events(db)[0]
    assert first == ("c0", "p2", "view", "2026-03-01T00:00:00+00:00", 1.0, 1.0)
    p1 = next(i for i in catalog.iter_items(db) if i["sku"] == "p1")
    assert (p1["title"], p1["price"], p1["stock"]) == ("西湖龙井", 12.5, 3)
    assert sum(u["consent_email"] for u in catalog.iter_users(db)) == 25

    bad = pa.table({"sku": ["ok", "bad"], "title": ["Fine", "Big"],
                    "stock": pa.array([1, 2**62], pa.int64())})
    pq.write_table(bad, tmp_path / "bad.parquet")
    with pytest.raises(InputError) as err:
        import_file(db, "items", tmp_path / "bad.parquet")
    assert (err.value.line, err.value.field) == (2, "stock") and "out of range" in str(err.value)
    assert catalog.catalog_counts(db)["items"] == 2
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match="not a readable Parquet file"):
        import_file(db, "items", tmp_path / "junk.parquet")


def test_xlsx_rows_are_sheet_rows_and_cells_keep_their_types(db, tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Notes"
    sheet.append(["nothing here"])
    data = book.create_sheet("Orders")
    data.append(["CustomerID", "StockCode", "When", "Qty", None])
    data.append([17850, "85123A", dt.datetime(2010, 12, 1, 8, 26), 6])
    data.append([17850.0, "71053", dt.datetime(2010, 12, 1, 8, 26), 6])
    data.append([None, None, None, None])                  # an empty row is skipped
    data.append([13047, "84406B", dt.datetime(2010, 12, 1, 8, 34), "eight"])
    book.save(tmp_path / "orders.xlsx")
    options = dict(mapping={"user": "CustomerID", "item": "StockCode", "ts": "When",
                            "quantity": "Qty"}, constants={"kind": "purchase"},
                   create_missing=True, sheet="Orders")
    with pytest.raises(InputError) as err:
        import_file(db, "events", tmp_path / "orders.xlsx", **options)
    assert (err.value.line, err.value.field) == (5, "Qty") and "bad number 'eight'" in str(err.value)
    assert catalog.catalog_counts(db)["events"] == 0
    report = import_file(db, "events", tmp_path / "orders.xlsx", skip_invalid=True,
                         reject_path=tmp_path / "orders.rejects.csv", **options)
    assert (report.inserted, report.rejected, report.users_created) == (2, 1, 1)
    assert {e[0] for e in _events(db)} == {"17850"}     # 17850 and 17850.0 are one customer
    assert _events(db)[0][3] == "2010-12-01T08:26:00+00:00"
    with pytest.raises(InputError, match="no sheet 'Sales' \\(sheets: Notes, Orders\\)"):
        import_file(db, "events", tmp_path / "orders.xlsx", **{**options, "sheet": "Sales"})


def test_missing_optional_library_is_one_line_naming_the_extra(db, tmp_path, monkeypatch, runner,
                                                               db_path):
    real = importlib.import_module

    def no_formats(name, *args, **kwargs):
        if name.split(".")[0] in ("pyarrow", "openpyxl"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", no_formats)
    for name in ("x.parquet", "x.xlsx"):
        (tmp_path / name).write_bytes(b"")
        result = runner.invoke(app, ["import", "items", str(tmp_path / name), "--db", str(db_path)])
        assert result.exit_code == 1
        assert "pip install 'pushgen[formats]'" in result.output
        assert len([line for line in result.output.splitlines() if line.strip()]) == 1


# --- the grocery purchases file (Member_number,Date,itemDescription) ---------------------------

GROCERY_ARGS = ["--set", "kind=purchase", "--date-format", "%d-%m-%Y", "--map", "user=Member_number",
                "--map", "item=itemDescription", "--map", "ts=Date", "--create-missing"]


def _hand_count(path: Path) -> dict[str, object]:
    """Counted without pushgen: csv module, stripped names, Counter."""
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    keys = collections.Counter((m.strip(), d.strip(), i.strip()) for m, d, i in rows)
    return {"rows": len(rows), "distinct_lines": len(set(map(tuple, rows))),
            "events": len(keys), "merged": len(rows) - len(keys), "units": sum(keys.values()),
            "quantities": collections.Counter(keys.values()),
            "members": len({k[0] for k in keys}), "products": len({k[2] for k in keys})}


def _grocery_import(runner, path: Path, db_path: Path) -> dict[str, object]:
    result = runner.invoke(app, ["import", "events", str(path), *GROCERY_ARGS, "--db", str(db_path)])
    assert result.exit_code == 0, result.output
    db = open_store(db_path)
    quantities = collections.Counter(q for (q,) in db.execute("SELECT quantity FROM events"))
    return {"output": result.output, "db": db, "quantities": quantities,
            "units": db.execute("SELECT sum(quantity) FROM events").fetchone()[0]}


def test_grocery_shaped_file_imports_with_one_command(runner, tmp_path, db_path):
    """Same shape as the real file: CRLF, DD-MM-YYYY, most lines three times, far apart,
    some names with a trailing space."""
    rng = random.Random(4)
    names = ["whole milk", "cream cheese ", "cream cheese", "rolls/buns", "yogurt"]
    lines = []
    for _ in range(300):
        day = dt.date(2015, 1, 1) + dt.timedelta(days=rng.randrange(365))
        line = f"{rng.randrange(1000, 1040)},{day:%d-%m-%Y},{rng.choice(names)}"
        lines += [line] * rng.choice((1, 3, 3, 3))
    rng.shuffle(lines)
    path = _write(tmp_path / "groceries.csv", "Member_number,Date,itemDescription\n"
                  + "\n".join(lines) + "\n", newline="\r\n")
    expected = _hand_count(path)
    got = _grocery_import(runner, path, db_path)
    counts = catalog.catalog_counts(got["db"])
    assert counts["events"] == expected["events"]
    assert (counts["users"], counts["items"]) == (expected["members"], expected["products"]) == (
        expected["members"], 4)
    assert got["quantities"] == expected["quantities"] and got["units"] == expected["rows"]
    assert f"{expected['merged']:,} repeated lines merged" in got["output"]
    again = runner.invoke(app, ["import", "events", str(path), *GROCERY_ARGS, "--db", str(db_path)])
    row = next(line for line in again.output.splitlines() if line.count("│") >= 7)
    assert [c.strip() for c in row.split("│")[1:-1]] == [
        f"{expected['rows']:,}", "0", "0", f"{expected['events']:,}", f"{expected['merged']:,}", "0", "0"]


@pytest.mark.skipif(not GROCERIES.exists(), reason=f"the grocery data set is not at {GROCERIES}")
def test_real_grocery_file_matches_a_hand_count(runner, db_path):
    expected = _hand_count(GROCERIES)
    # The counts the data set's README states, then pushgen against the hand count.
    assert (expected["rows"], expected["distinct_lines"]) == (116_295, 38_442)
    assert (expected["events"], expected["merged"], expected["members"], expected["products"]) == (
        38_006, 78_289, 3_898, 167)
    got = _grocery_import(runner, GROCERIES, db_path)
    counts = catalog.catalog_counts(got["db"])
    assert (counts["events"], counts["users"], counts["items"]) == (38_006, 3_898, 167)
    assert got["quantities"] == expected["quantities"] == {3: 37_274, 6: 706, 9: 25, 12: 1}
    assert got["units"] == 116_295
    assert "38,006 events from 116,295 rows: 78,289 repeated lines merged" in got["output"]
    assert "created 3,898 customers and 167 products" in got["output"]


def test_all_rows_rejected_exits_non_zero_with_the_most_common_reason(runner, shop, tmp_path, db_path):
    path = _write(tmp_path / "e.csv", "user,item,kind,ts\nu1,tea,view,27-04-2015\n"
                  "u2,tea,view,28-04-2015\nu9,tea,view,2026-01-01\n")
    shop_path = tmp_path / "t.db"
    result = runner.invoke(app, ["import", "events", str(path), "--skip-invalid", "--db", str(shop_path)])
    assert result.exit_code == 1
    error = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error) == 1
    assert ("all 3 rows were rejected; most common reason (2 rows): column 'ts': bad date; first: "
            f"{path}:2: column 'ts': bad date '27-04-2015'") in error[0]
    assert "rejected rows are in" in error[0]
    partly = _write(tmp_path / "p.csv", "user,item,kind,ts\nu1,tea,view,2026-01-01\nu9,tea,view,2026-01-01\n")
    result = runner.invoke(app, ["import", "events", str(partly), "--skip-invalid", "--db", str(shop_path)])
    assert result.exit_code == 0, result.output


def test_jsonl_events_without_customer_and_report_as_json(db, tmp_path):
    import_rows(db, "items", [{"sku": "s1", "title": "S"}])
    path = _write(tmp_path / "e.jsonl", '{"item": "s1", "kind": "view", "ts": "2026-01-01"}\n')
    report = import_file(db, "events", path)
    assert report.imported == 0 and sum(report.skipped.values()) == 1
    assert report.failure().startswith("no row imported: all 1 rows skipped, most for no customer")
    as_json = json.loads(json.dumps(report.to_dict()))
    assert as_json["kind"] == "events" and as_json["skipped"] and as_json["rows"] == 1


def test_stray_empty_last_column_and_short_rows(shop, tmp_path):
    path = _write(tmp_path / "e.csv", "user,item,kind,ts,\nu1,tea,view,2026-01-01,\n")
    assert import_file(shop, "events", path).inserted == 1
    short = _write(tmp_path / "s.csv", "user,item,kind,ts\nu1,tea,view\n")
    with pytest.raises(InputError, match=r"s\.csv:2: 3 values but the header has 4 columns"):
        import_file(shop, "events", short)
    filled = _write(tmp_path / "f.csv", "user,item,kind,ts,\nu1,tea,view,2026-01-02,oops\n")
    with pytest.raises(InputError, match="5 values but the header has 4 columns"):
        import_file(shop, "events", filled)
