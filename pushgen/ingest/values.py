"""Reading one value faithfully: text, numbers, booleans, dates, keys, with hard limits.

Every parser raises ``RowError(field, message)`` for a value it cannot read exactly as the
file means it; the import turns that into a located ``InputError`` (file, line, column) or
a rejected row. Nothing here guesses: an ambiguous date, a number out of range, a control
character or an over-long value is refused, never stored half-right.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import functools
import math
import re
from typing import Any

# One limit for every format (CSV, JSON Lines, Parquet, xlsx): a value longer than this is
# refused. 128 Ki characters is far above any real title or description.
MAX_VALUE_CHARS = 131_072
# Numbers: more digits than a double holds exactly is not a quantity or a price anyone
# means; magnitude capped where a float still counts in whole units.
MAX_NUMBER_CHARS = 40
MAX_NUMBER = 1e15

_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f"}
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_GROUPED_COMMA = re.compile(r"[+-]?\d{1,3}(\.\d{3})+(,\d*)?")   # 1.234.567,89
# C0 and C1 control characters and the Unicode line/paragraph separators. Free text
# (descriptions) may hold tab and line breaks; every other value is one line.
CONTROL_SINGLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
CONTROL_MULTI = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_NAMES = {0: "NUL", 9: "tab", 10: "line feed", 13: "carriage return", 27: "ESC",
                  0x7f: "DEL", 0x2028: "line separator", 0x2029: "paragraph separator"}
_DMY = re.compile(r"(\d{1,2})([-/.])(\d{1,2})\2(\d{2}|\d{4})([ T].*)?")
ISO = "iso"  # a --date-format entry meaning "ISO 8601" (what is read without any format)


class RowError(Exception):
    """A bad value in one row; becomes an InputError once file and line are known."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


def check_text(value: str, name: str | None, *, multiline: bool = False) -> str:
    """``value`` unchanged, or RowError for over-long values and control characters."""
    if len(value) > MAX_VALUE_CHARS:
        raise RowError(name, f"value of {len(value):,} characters is longer than the limit of "
                             f"{MAX_VALUE_CHARS:,}")
    bad = (CONTROL_MULTI if multiline else CONTROL_SINGLE).search(value)
    if bad is not None:
        code = ord(bad.group())
        label = _CONTROL_NAMES.get(code, "control character")
        if code in (10, 13):
            lines = value.count("\n") + 1
            raise RowError(name, f"line break inside a one-line value (it runs over {lines} "
                                 "lines: an unclosed quote?)")
        raise RowError(name, f"{label} (U+{code:04X}) at character {bad.start() + 1}: "
                             "control characters are refused")
    return value


def text(value: Any) -> str | None:
    """Text of a value, or None when missing/empty. Strings arrive cleaned (trimmed unless
    --no-trim, never blank); lists and dicts become JSON."""
    if value is None:
        return None
    if type(value) is str:
        return value if value.strip() else None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if isinstance(value, (dict, list)):
        import json
        return json.dumps(value, ensure_ascii=False)
    return str(value).strip() or None


def key(value: Any, name: str) -> str | None:
    """An id (external_id, sku): text; a whole number from a spreadsheet or Parquet cell
    (17850 or 17850.0) reads as ``17850``."""
    if type(value) is str:
        return value if value.strip() else None
    if isinstance(value, bool):
        raise RowError(name, f"bad id {value!r} (expected text or a whole number)")
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise RowError(name, f"bad id {value!r} (expected text or a whole number)")
        return str(int(value))
    if isinstance(value, decimal.Decimal):
        if value != value.to_integral_value():
            raise RowError(name, f"bad id {value} (expected text or a whole number)")
        return str(int(value))
    return text(value)


def required(rec: dict[str, Any], name: str) -> str:
    value = key(rec.get(name), name)
    if value is None:
        raise RowError(name, "required value is empty")
    return value


def boolean(value: Any, name: str, default: int) -> int:
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return int(value)
    lowered = str(value).strip().lower()
    if lowered in _TRUE:
        return 1
    if lowered in _FALSE:
        return 0
    raise RowError(name, f"bad boolean {value!r} (use 1/0, true/false or yes/no)")


def _number_text(raw: str, name: str, decimal_comma: bool) -> float:
    textual = raw.strip()
    if len(textual) > MAX_NUMBER_CHARS:
        raise RowError(name, f"bad number of {len(textual)} characters (at most "
                             f"{MAX_NUMBER_CHARS} digits)")
    if decimal_comma:
        textual = textual.replace("\u00a0", "").replace("\u202f", "").replace(" ", "")
        if _GROUPED_COMMA.fullmatch(textual):
            textual = textual.replace(".", "")
        elif "." in textual:
            raise RowError(name, f"bad number {raw!r} (with --decimal-comma the decimal mark "
                                 "is ',' and '.' only groups thousands, e.g. 1.234,5)")
        textual = textual.replace(",", ".", 1) if textual.count(",") == 1 else textual
    elif "," in textual and _NUMBER.fullmatch(textual.replace(",", ".", 1)):
        raise RowError(name, f"bad number {raw!r} (a decimal comma? add --decimal-comma)")
    if not _NUMBER.fullmatch(textual):
        raise RowError(name, f"bad number {raw!r}")
    return float(textual)


def number(value: Any, name: str, *, minimum: float | None = 0.0,
           decimal_comma: bool = False) -> float | None:
    """A finite number within ±1e15 (and >= ``minimum``), or None when empty."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise RowError(name, f"bad number {value!r}")
    if isinstance(value, int):
        if abs(value) > MAX_NUMBER:
            raise RowError(name, f"number {value} is out of range (at most {MAX_NUMBER:.0e})")
        result = float(value)
    elif isinstance(value, (float, decimal.Decimal)):
        result = float(value)
    elif isinstance(value, str):
        result = _number_text(value, name, decimal_comma)
    else:
        raise RowError(name, f"bad number {value!r}")
    if not math.isfinite(result):
        raise RowError(name, f"bad number {value!r}")
    if abs(result) > MAX_NUMBER:
        raise RowError(name, f"number {value} is out of range (at most {MAX_NUMBER:.0e})")
    if minimum is not None and result < minimum:
        raise RowError(name, f"bad number {value!r} (must be >= {minimum:g})")
    return result


def integer(value: Any, name: str, *, decimal_comma: bool = False) -> int | None:
    result = number(value, name, minimum=None, decimal_comma=decimal_comma)
    if result is None:
        return None
    if not result.is_integer():
        raise RowError(name, f"bad number {value!r} (expected a whole number)")
    return int(result)


def url(value: Any, name: str) -> str | None:
    result = text(value)
    if result is not None and not result.lower().startswith(("http://", "https://")):
        raise RowError(name, f"bad URL {result!r} (must start with http:// or https://)")
    return result


def tags(value: Any) -> list[str] | None:
    if value is None:
        return None
    parts = [str(t) for t in value] if isinstance(value, list) else re.split(r"[|,]", str(value))
    cleaned = [t.strip() for t in parts if t.strip()]
    return cleaned or None


def attribute(value: Any) -> Any:
    """Free-form profile / catalog attribute: empty means 'remove'; dates become ISO text."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    return value


# --- dates ---------------------------------------------------------------------------------

_UTC = _dt.timezone.utc
_ZERO = _dt.timedelta(0)
_fromisoformat = _dt.datetime.fromisoformat


@functools.lru_cache(maxsize=64)
def _zone(name: str) -> _dt.tzinfo | None:
    from ..sendtime import zone

    return zone(name)


def check_timezone(name: str) -> str:
    """An IANA timezone name (``Europe/Berlin``), refused with a ValueError otherwise."""
    if _zone(name) is None:
        raise ValueError(f"unknown timezone {name!r} (an IANA name such as Europe/Berlin, "
                         "Asia/Shanghai or America/New_York)")
    return name


def _utc(moment: _dt.datetime, zone: str | None = None) -> str:
    offset = moment.utcoffset()
    if offset is None:
        if zone is not None:   # a time without an offset is the file's local time
            return moment.replace(tzinfo=_zone(zone)).astimezone(_UTC).isoformat()
        return moment.isoformat() + "+00:00"  # a time without an offset is UTC
    if offset == _ZERO:
        return moment.replace(tzinfo=_UTC).isoformat()
    return moment.astimezone(_UTC).isoformat()


def _iso(textual: str) -> _dt.datetime | None:
    try:
        if len(textual) <= 10:
            day = _dt.date.fromisoformat(textual)
            return _dt.datetime(day.year, day.month, day.day)
        return _fromisoformat(textual)
    except ValueError:
        return None


def _hint(textual: str) -> str:
    """Why a non-ISO date was refused, and the --date-format that reads it."""
    m = _DMY.fullmatch(textual)
    if m is None:
        return "use ISO 8601, e.g. 2026-03-01 or 2026-03-01T14:30:00Z, or give its format " \
               "with --date-format (strptime codes, e.g. '%d.%m.%Y %H:%M')"
    first, sep, second, year, rest = m.groups()
    y = "%Y" if len(year) == 4 else "%y"
    clock = " %H:%M:%S" if rest and rest.count(":") == 2 else " %H:%M" if rest else ""
    dmy, mdy = f"%d{sep}%m{sep}{y}{clock}", f"%m{sep}%d{sep}{y}{clock}"
    if int(first) > 12:
        return f"day first? add --date-format '{dmy}'"
    if int(second) > 12:
        return f"month first? add --date-format '{mdy}'"
    return f"ambiguous: day-month or month-day? add --date-format '{dmy}' or '{mdy}'"


@functools.lru_cache(maxsize=1024)
def _parse_with_formats(textual: str, formats: tuple[str, ...], zone: str | None) -> str | None:
    """UTC ISO string, or None when no format reads ``textual``. Cached: strptime is slow
    and exports repeat the same day or minute many times."""
    for fmt in formats:
        if fmt == ISO:
            moment = _iso(textual)
            if moment is not None:
                return _utc(moment, zone)
            continue
        try:
            return _utc(_dt.datetime.strptime(textual, fmt), zone)
        except ValueError:
            continue
    return None


def parse_timestamp(value: Any, name: str = "ts", formats: tuple[str, ...] = (),
                    zone: str | None = None) -> str:
    """A date or datetime -> UTC ISO string (``2026-03-01T14:30:00+00:00``).

    Text is read with ``formats`` (strptime patterns tried in order; ``"iso"`` means ISO
    8601), or as ISO 8601 when none are given. A date means midnight; a time without an
    offset is in ``zone`` (an IANA name: the shop's local time), else UTC; one with an
    offset keeps it. Date and datetime objects (spreadsheet and Parquet cells) are read the
    same way. A local time that falls in a daylight-saving gap or overlap is read as the
    clock showed it before the change (``fold=0``).
    """
    if type(value) is str and not formats and zone is None:
        # The common case first: 2026-03-01T14:30:00 with Z, +00:00 or no offset, already
        # UTC; checked by fromisoformat, written out without building the string again.
        n = len(value)
        if ((n == 19 or (n == 20 and value[19] == "Z") or (n == 25 and value[19:] == "+00:00"))
                and value[4] == "-" and value[7] == "-" and value[10] in "T "
                and value[13] == ":" and value[16] == ":"):
            try:
                _fromisoformat(value[:19])
                return f"{value[:10]}T{value[11:19]}+00:00"
            except ValueError:
                pass
    if isinstance(value, _dt.datetime):
        return _utc(value, zone)
    if isinstance(value, _dt.date):
        return _utc(_dt.datetime(value.year, value.month, value.day), zone)
    textual = text(value)
    if textual is None:
        raise RowError(name, "required value is empty")
    if len(textual) > 64:
        raise RowError(name, f"bad date of {len(textual)} characters")
    if formats:
        result = _parse_with_formats(textual, tuple(formats), zone)
    else:
        moment = _iso(textual)
        result = None if moment is None else _utc(moment, zone)
    if result is None:
        if formats:
            listed = " or ".join(f"'{f}'" for f in formats)
            raise RowError(name, f"bad date {textual!r} (expected {listed})")
        raise RowError(name, f"bad date {textual!r} ({_hint(textual)})")
    return result


def check_date_format(fmt: str) -> str:
    """A strptime pattern (or 'iso'), refused when it has no date directive at all."""
    if fmt.lower() in (ISO, "iso8601", "iso-8601"):
        return ISO
    if not re.search(r"%[dmyYbBjUWGVuaAzHMScxXp]", fmt):
        raise ValueError(f"--date-format {fmt!r} has no strptime code (e.g. '%d-%m-%Y')")
    return fmt


__all__ = ["RowError", "MAX_VALUE_CHARS", "check_text", "text", "key", "required", "boolean",
           "number", "integer", "url", "tags", "attribute", "parse_timestamp",
           "check_date_format", "check_timezone", "ISO"]
