"""Presets (issue 12 point 3): a shop's order export imports with one command and fills
customers, products and events. Each test file uses the export's published columns."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import pytest

from pushgen.cli import app
from pushgen.errors import InputError
from pushgen.ingest import PRESETS, import_file
from pushgen.store import catalog, open_store

SHOPIFY_HEADER = (
    "Name,Email,Financial Status,Paid at,Fulfillment Status,Fulfilled at,Accepts Marketing,Currency,"
    "Subtotal,Shipping,Taxes,Total,Discount Code,Discount Amount,Shipping Method,Created at,"
    "Lineitem quantity,Lineitem name,Lineitem price,Lineitem compare at price,Lineitem sku,"
    "Lineitem requires shipping,Lineitem taxable,Lineitem fulfillment status,Billing Name,"
    "Billing Street,Billing Address1,Billing Address2,Billing Company,Billing City,Billing Zip,"
    "Billing Province,Billing Country,Billing Phone,Shipping Name,Shipping Street,"
    "Shipping Address1,Shipping Address2,Shipping Company,Shipping City,Shipping Zip,"
    "Shipping Province,Shipping Country,Shipping Phone,Notes,Note Attributes,Cancelled at,"
    "Payment Method,Payment Reference,Refunded Amount,Vendor,Outstanding Balance,Employee,Location,"
    "Device ID,Id,Tags,Risk Level,Source,Lineitem discount,Tax 1 Name,Tax 1 Value,Tax 2 Name,"
    "Tax 2 Value,Tax 3 Name,Tax 3 Value,Tax 4 Name,Tax 4 Value,Tax 5 Name,Tax 5 Value,Phone,"
    "Receipt Number,Duties,Billing Province Name,Shipping Province Name,Payment ID,"
    "Payment Terms Name,Next Payment Due At,Payment References"
).split(",")

WOO_HEADER = (
    "order_id,order_number,date,status,shipping_total,shipping_tax_total,fee_total,fee_tax_total,"
    "tax_total,discount_total,order_total,refunded_total,order_currency,payment_method,"
    "shipping_method,customer_id,billing_first_name,billing_last_name,billing_company,"
    "billing_email,billing_phone,billing_address_1,billing_address_2,billing_postcode,billing_city,"
    "billing_state,billing_country,shipping_first_name,shipping_last_name,shipping_address_1,"
    "shipping_address_2,shipping_postcode,shipping_city,shipping_state,shipping_country,"
    "shipping_company,customer_note,item_id,item_product_id,item_name,item_sku,item_quantity,"
    "item_subtotal,item_subtotal_tax,item_total,item_total_tax,item_refunded,item_refunded_qty,"
    "item_meta,shipping_items,fee_items,tax_items,coupon_items,order_notes,"
    "download_permissions_granted"
).split(",")

RETAIL_HEADER = ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice",
                 "CustomerID", "Country"]
RETAIL_ROWS = [
    ["536365", "85123A", "WHITE HANGING HEART T-LIGHT HOLDER", 6, "12/1/2010 8:26", 2.55, "17850.0", "United Kingdom"],
    ["536365", "71053", "WHITE METAL LANTERN", 6, "12/1/2010 8:26", 3.39, "17850.0", "United Kingdom"],
    ["536366", "22633", "HAND WARMER UNION JACK", 6, "12/1/2010 8:28", 1.85, "17850.0", "United Kingdom"],
    ["536366", "POST", "POSTAGE", 1, "12/1/2010 8:28", 18.0, "17850.0", "United Kingdom"],
    ["536414", "22139", "", 56, "12/1/2010 11:52", 0.0, "", "United Kingdom"],
    ["C536379", "85123A", "WHITE HANGING HEART T-LIGHT HOLDER", -1, "12/1/2010 9:41", 2.55, "17850.0", "United Kingdom"],
    ["536367", "84879", "ASSORTED COLOUR BIRD ORNAMENT", 32, "12/1/2010 8:34", 1.69, "13047.0", "United Kingdom"],
    ["536367", "84879", "ASSORTED COLOUR BIRD ORNAMENT", 8, "12/1/2010 8:34", 1.69, "13047.0", "United Kingdom"],
]


def _csv(path: Path, header: list[str], rows: list[dict | list]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for row in rows:
            writer.writerow([row.get(h, "") for h in header] if isinstance(row, dict) else row)
    return path


def _events(db) -> list[tuple]:
    return db.execute("SELECT u.external_id, i.sku, e.kind, e.ts, e.quantity FROM events e "
                      "JOIN users u ON u.id = e.user_id JOIN items i ON i.id = e.item_id "
                      "ORDER BY e.ts, i.sku, e.kind").fetchall()


@pytest.fixture
def db(tmp_path):
    return open_store(tmp_path / "shop.db")


def test_shopify_orders(db, tmp_path, runner):
    rows = [
        {"Name": "#1001", "Email": "Ana@Example.com", "Financial Status": "paid",
         "Accepts Marketing": "yes", "Currency": "USD", "Created at": "2026-09-03 10:14:00 -0400",
         "Lineitem quantity": "2", "Lineitem name": "Botanical Fern Print", "Lineitem price": "16.00",
         "Lineitem sku": "FERN-1", "Billing Name": "Ana Lima", "Billing Country": "US",
         "Vendor": "Paper Co", "Phone": "+15550000001"},
        # the order's second line: Shopify leaves the order's own columns empty
        {"Name": "#1001", "Lineitem quantity": "1", "Lineitem name": "Canvas Tote Bag",
         "Lineitem price": "20.00", "Lineitem sku": "TOTE-1", "Vendor": "Bags Ltd"},
        {"Name": "#1002", "Email": "bo@example.com", "Financial Status": "refunded",
         "Accepts Marketing": "no", "Currency": "USD", "Created at": "2026-09-10 09:00:00 -0400",
         "Lineitem quantity": "1", "Lineitem name": "Speckled Mug", "Lineitem price": "25.00",
         "Lineitem sku": "MUG-1", "Billing Name": "Bo Chen"},
        {"Name": "#1003", "Email": "cy@example.com", "Financial Status": "voided",
         "Created at": "2026-09-11 09:00:00 -0400", "Lineitem quantity": "1",
         "Lineitem name": "Speckled Mug", "Lineitem sku": "MUG-1"},
        {"Name": "#1004", "Email": "cy@example.com", "Financial Status": "pending",
         "Created at": "2026-09-12 09:00:00 -0400", "Cancelled at": "2026-09-12 10:00:00 -0400",
         "Lineitem quantity": "1", "Lineitem name": "Speckled Mug", "Lineitem sku": "MUG-1"},
        {"Name": "#1005", "Financial Status": "paid", "Created at": "2026-09-13 12:00:00 -0400",
         "Lineitem quantity": "1", "Lineitem name": "Speckled Mug", "Lineitem sku": "MUG-1"},
        {"Name": "#1006", "Email": "ana@example.com", "Financial Status": "paid",
         "Created at": "2026-09-14 08:00:00 +0200", "Lineitem quantity": "3",
         "Lineitem name": "Gift Card", "Lineitem price": "10.00", "Lineitem sku": ""},
    ]
    path = _csv(tmp_path / "orders_export_1.csv", SHOPIFY_HEADER, rows)
    result = runner.invoke(app, ["import", "events", str(path), "--preset", "shopify-orders",
                                 "--db", str(tmp_path / "shop.db")])
    assert result.exit_code == 0, result.output
    assert _events(db) == [
        ("ana@example.com", "FERN-1", "purchase", "2026-09-03T14:14:00+00:00", 2.0),
        ("ana@example.com", "TOTE-1", "purchase", "2026-09-03T14:14:00+00:00", 1.0),
        ("bo@example.com", "MUG-1", "return", "2026-09-10T13:00:00+00:00", 1.0),
        ("ana@example.com", "Gift Card", "purchase", "2026-09-14T06:00:00+00:00", 3.0),
    ]
    users = {u["external_id"]: u for u in catalog.iter_users(db)}
    assert set(users) == {"ana@example.com", "bo@example.com"}
    ana = users["ana@example.com"]
    assert (ana["email"], ana["name"], ana["phone"], ana["consent_email"]) == (
        "ana@example.com", "Ana Lima", "+15550000001", True)
    assert ana["attributes"] == {"country": "US"} and users["bo@example.com"]["consent_email"] is False
    items = {i["sku"]: i for i in catalog.iter_items(db)}
    assert (items["TOTE-1"]["title"], items["TOTE-1"]["price"], items["TOTE-1"]["brand"],
            items["TOTE-1"]["currency"]) == ("Canvas Tote Bag", 20.0, "Bags Ltd", "USD")
    for words in ("skipped 1 rows: order voided (never paid)",
                  "skipped 1 rows: order cancelled before payment",
                  "skipped 1 rows: no customer"):
        assert words in result.output
    again = import_file(db, "events", path, preset="shopify-orders")
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 4)
    assert (again.users_created, again.items_created) == (0, 0)


def test_woocommerce_orders(db, tmp_path):
    def line(order, status, email, first, last, name, sku, qty, subtotal, refunded="0", date="2026-05-02 13:47:10"):
        return {"order_id": order, "order_number": order, "date": date, "status": status,
                "order_currency": "EUR", "customer_id": "0", "billing_first_name": first,
                "billing_last_name": last, "billing_email": email, "billing_phone": "+3112345678",
                "billing_country": "NL", "item_name": name, "item_sku": sku, "item_quantity": qty,
                "item_subtotal": subtotal, "item_refunded_qty": refunded}
    rows = [
        line("101", "completed", "koper@example.com", "Koper", "Een", "Matcha 100 g", "MAT-100", "2", "62.90"),
        line("101", "completed", "koper@example.com", "Koper", "Een", "Matcha 50 g", "MAT-50", "2", "37.90", "-1"),
        line("102", "refunded", "twee@example.com", "Twee", "", "Matcha 50 g", "MAT-50", "1", "18.95"),
        line("103", "cancelled", "drie@example.com", "Drie", "", "Matcha 50 g", "MAT-50", "1", "18.95"),
        line("104", "processing", "koper@example.com", "Koper", "Een", "Whisk", "", "1", "9.50",
             date="2026-05-03 08:00:00"),
    ]
    path = _csv(tmp_path / "orders.csv", WOO_HEADER, rows)
    report = import_file(db, "events", path, preset="woocommerce-orders")
    assert report.skipped == {"order cancelled (not paid)": 1}
    assert _events(db) == [
        ("koper@example.com", "MAT-100", "purchase", "2026-05-02T13:47:10+00:00", 2.0),
        ("koper@example.com", "MAT-50", "purchase", "2026-05-02T13:47:10+00:00", 2.0),
        ("koper@example.com", "MAT-50", "return", "2026-05-02T13:47:10+00:00", 1.0),
        ("twee@example.com", "MAT-50", "return", "2026-05-02T13:47:10+00:00", 1.0),
        ("koper@example.com", "Whisk", "purchase", "2026-05-03T08:00:00+00:00", 1.0),
    ]
    users = {u["external_id"]: u for u in catalog.iter_users(db)}
    assert users["koper@example.com"]["name"] == "Koper Een"
    assert users["twee@example.com"]["name"] == "Twee"
    items = {i["sku"]: i for i in catalog.iter_items(db)}
    assert (items["MAT-100"]["title"], items["MAT-100"]["price"], items["MAT-100"]["currency"]) == (
        "Matcha 100 g", 31.45, "EUR")


def _check_online_retail(db, report) -> None:
    assert report.skipped == {
        "not a product (postage, fees, discounts, adjustments)": 1,
        "no customer (the user column is empty: a guest or anonymous purchase)": 1}
    assert (report.inserted, report.merged, report.returns) == (5, 1, 1)
    assert _events(db) == [
        ("17850", "71053", "purchase", "2010-12-01T08:26:00+00:00", 6.0),
        ("17850", "85123A", "purchase", "2010-12-01T08:26:00+00:00", 6.0),
        ("17850", "22633", "purchase", "2010-12-01T08:28:00+00:00", 6.0),
        ("13047", "84879", "purchase", "2010-12-01T08:34:00+00:00", 40.0),
        ("17850", "85123A", "return", "2010-12-01T09:41:00+00:00", 1.0),
    ]
    items = {i["sku"]: i for i in catalog.iter_items(db)}
    assert set(items) == {"85123A", "71053", "22633", "84879"}
    assert (items["85123A"]["title"], items["85123A"]["price"], items["85123A"]["currency"]) == (
        "WHITE HANGING HEART T-LIGHT HOLDER", 2.55, "GBP")
    assert {u["external_id"]: u["attributes"] for u in catalog.iter_users(db)} == {
        "17850": {"country": "United Kingdom"}, "13047": {"country": "United Kingdom"}}


def test_online_retail_csv(db, tmp_path):
    path = _csv(tmp_path / "Online Retail.csv", RETAIL_HEADER, RETAIL_ROWS)
    _check_online_retail(db, import_file(db, "events", path, preset="online-retail"))
    again = import_file(db, "events", path, preset="online-retail")
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 5)


def test_online_retail_ii_xlsx_as_published(db, tmp_path, runner):
    """The UCI file is an .xlsx with real dates and numeric customer ids; Online Retail II
    renamed three columns."""
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Year 2009-2010"
    sheet.append(["Invoice", "StockCode", "Description", "Quantity", "InvoiceDate", "Price",
                  "Customer ID", "Country"])
    for row in RETAIL_ROWS:
        month, day, rest = row[4].split("/")
        year, clock = rest.split(" ")
        hour, minute = clock.split(":")
        when = dt.datetime(int(year), int(month), int(day), int(hour), int(minute))
        customer = float(row[6]) if row[6] else None
        sheet.append([row[0], row[1], row[2] or None, row[3], when, row[5], customer, row[7]])
    path = tmp_path / "online_retail_II.xlsx"
    book.save(path)
    result = runner.invoke(app, ["import", "events", str(path), "--preset", "online-retail",
                                 "--db", str(tmp_path / "shop.db")])
    assert result.exit_code == 0, result.output
    report = import_file(open_store(tmp_path / "other.db"), "events", path, preset="online-retail")
    _check_online_retail(open_store(tmp_path / "other.db"), report)
    assert catalog.catalog_counts(db)["events"] == 5


def test_preset_errors(db, tmp_path):
    path = _csv(tmp_path / "o.csv", [h for h in RETAIL_HEADER if h != "Quantity"], [])
    with pytest.raises(InputError) as err:
        import_file(db, "events", path, preset="online-retail")
    assert err.value.field == "Quantity" and "not a UCI Online Retail file" in str(err.value)
    full = _csv(tmp_path / "f.csv", RETAIL_HEADER, RETAIL_ROWS[:1])
    with pytest.raises(InputError, match="cannot be combined with --map or --set"):
        import_file(db, "events", full, preset="online-retail", mapping={"user": "Country"})
    with pytest.raises(InputError, match="use it with `import events`"):
        import_file(db, "users", full, preset="online-retail")
    with pytest.raises(InputError, match="unknown preset 'magento'"):
        import_file(db, "events", full, preset="magento")


def test_help_lists_presets_with_their_columns(runner):
    result = runner.invoke(app, ["import", "--help"], terminal_width=200)
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for preset in PRESETS.values():
        assert f"{preset.name} ({preset.title}): {', '.join(preset.published_columns())}" in text
    assert ("online-retail (UCI Online Retail): InvoiceNo, StockCode, Description, Quantity, "
            "InvoiceDate, UnitPrice, CustomerID, Country") in text
    assert "pip install 'pushgen[formats]'" in text
