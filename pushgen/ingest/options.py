"""How to read a file (``ImportOptions``) and turning each raw record into target columns.

``--map target=source`` renames, ``--set column=value`` adds a constant, ``--null NA``
reads a marker as missing, ``--trim`` (on by default) strips keys and text, and every
text value is checked once here (length limit, control characters) before any kind's
validation sees it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from .values import (CONTROL_MULTI, CONTROL_SINGLE, MAX_VALUE_CHARS, RowError,
                     check_date_format, check_text, check_timezone)

# Target columns whose text may span lines (free text); every other value is one line.
MULTILINE = frozenset({"description", "item.description"})


@dataclass
class ImportOptions:
    """How to read a file. Every field has the default a plain UTF-8 CSV needs."""

    mapping: dict[str, str] = field(default_factory=dict)     # target -> source column
    constants: dict[str, str] = field(default_factory=dict)   # target -> value (--set)
    preset: str | None = None                 # a known export layout (events only)
    date_formats: tuple[str, ...] = ()        # strptime patterns tried in order ('iso' too)
    delimiter: str | None = None              # None: sniffed among , ; tab |
    decimal_comma: bool = False               # 12,5 means 12.5 (and 1.234,5 means 1234.5)
    nulls: tuple[str, ...] = ()               # values read as missing, e.g. ("NA", "NULL")
    encoding: str = "utf-8"
    trim: bool = True                         # strip spaces around keys and text
    create_missing: bool = False              # events: create unknown customers and products
    sheet: str | None = None                  # xlsx: sheet name (default: the first)
    timezone: str | None = None               # IANA zone of times without an offset (UTC)

    def __post_init__(self) -> None:
        try:
            self.date_formats = tuple(check_date_format(f) for f in self.date_formats)
            if self.timezone is not None:
                self.timezone = check_timezone(self.timezone)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        self.nulls = tuple(self.nulls)
        if self.delimiter is not None:
            self.delimiter = parse_delimiter(self.delimiter)
        for target, source in self.mapping.items():
            if not str(target).strip() or not str(source).strip():
                raise InputError(f"bad column mapping {target!r}={source!r} (use target=source)")
        for target in self.constants:
            if not str(target).strip():
                raise InputError("--set needs a column name (e.g. --set kind=purchase)")


_DELIMITER_NAMES = {",": ",", "comma": ",", ";": ";", "semicolon": ";", "\t": "\t",
                    "\\t": "\t", "tab": "\t", "|": "|", "pipe": "|"}


def parse_delimiter(value: str) -> str:
    """',' ';' '|' or tab (also spelled 'tab', '\\t', 'comma', 'semicolon', 'pipe')."""
    found = _DELIMITER_NAMES.get(value) or _DELIMITER_NAMES.get(value.strip().lower())
    if found is None:
        raise InputError(f"--delimiter {value!r}: use one of , ; | or tab")
    return found


class Shaper:
    """Raw record (file column names) -> dict of target names, values cleaned and checked.

    ``renames`` maps a file column to its target name; ``constants`` are added to every
    row; ``display(target)`` gives back the file's column name for error messages.
    """

    def __init__(self, renames: dict[str, str], constants: dict[str, Any],
                 nulls: Iterable[str], trim: bool) -> None:
        self.renames = renames
        self.nulls = frozenset(nulls)
        self.trim = trim
        self.constants = {}
        for target, value in constants.items():
            try:
                self.constants[target] = self._clean(value, target, target)
            except RowError as exc:
                raise InputError(f"--set {target}: {exc.message}") from None
        self._source = {target: source for source, target in renames.items()}
        self._shadowed = set(renames.values()) - set(renames)
        self._names: tuple[str, ...] = ()
        self._current: list[tuple[str, str, Any]] = []

    def display(self, target: str | None) -> str | None:
        """The file's name for a target column (``Date`` for ``ts`` under --map ts=Date)."""
        if target is None:
            return None
        return self._source.get(target, target)

    def _clean(self, value: Any, target: str, name: str) -> Any:
        if isinstance(value, str):
            if self.trim:
                value = value.strip()
            if not value or value in self.nulls or not value.strip():
                return None
            return check_text(value, name, multiline=target in MULTILINE)
        if isinstance(value, list):
            return [self._clean(v, target, name) for v in value]
        if isinstance(value, dict):
            return {check_text(str(k), name): self._clean(v, target, name)
                    for k, v in value.items()}
        if isinstance(value, (bytes, bytearray, memoryview)):
            raise RowError(name, "binary value (expected text or a number)")
        return value

    def _plan(self, names: Iterable[str]) -> list[tuple[str, str, Any]]:
        """(file column, target, control-character pattern) for each kept column."""
        plan = []
        for name in names:
            if name not in self.renames and name in self._shadowed:
                continue  # a column whose name another column was mapped onto
            target = self.renames.get(name, name)
            plan.append((name, target, CONTROL_MULTI if target in MULTILINE else CONTROL_SINGLE))
        return plan

    def __call__(self, raw: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        names = tuple(raw)
        if names != self._names:   # the same columns row after row, except JSON Lines
            self._names, self._current = names, self._plan(names)
        trim, nulls, limit = self.trim, self.nulls, MAX_VALUE_CHARS
        for name, target, control in self._current:
            value = raw[name]
            if type(value) is str:
                if trim:
                    value = value.strip()
                if not value or value in nulls or (not trim and not value.strip()):
                    value = None
                elif len(value) > limit or control.search(value) is not None:
                    check_text(value, name, multiline=target in MULTILINE)
            elif value is not None:
                value = self._clean(value, target, name)
            out[target] = value
        for target, value in self.constants.items():
            if out.get(target) is not None:
                raise RowError(target, f"column {target!r} is both in the file and set with "
                                       "--set (drop one)")
            out[target] = value
        return out


def mapping_renames(mapping: dict[str, str] | None) -> dict[str, str]:
    """``{target: source}`` -> ``{source: target}``; a source mapped twice is refused."""
    renames: dict[str, str] = {}
    for target, source in (mapping or {}).items():
        target, source = str(target).strip(), str(source).strip()
        if not target or not source:
            raise InputError(f"bad column mapping {target!r}={source!r} (use target=source)")
        if source in renames:
            raise InputError(f"column {source!r} is mapped twice")
        renames[source] = target
    return renames


def check_header(header: list[str], renames: dict[str, str], constants: dict[str, Any],
                 required: tuple[str, ...], source: str, *, any_of: tuple[str, ...] = ()
                 ) -> None:
    """Mapped columns exist, no target comes from two places, required targets are there."""
    for src in renames:
        if src not in header:
            raise InputError(f"mapped column not found (columns: {', '.join(header)})",
                             file=source, line=1, field=src)
    for src, target in renames.items():
        if target in header and target not in renames:
            raise InputError(f"both column {target!r} and mapped column {src!r} are present "
                             "(drop one, or map it elsewhere)", file=source, line=1, field=target)
    mapped = {renames.get(h, h) for h in header}
    for target in constants:
        if target in mapped:
            raise InputError(f"column {target!r} is both in the file and set with --set "
                             "(drop one)", file=source, line=1, field=target)
    present = mapped | set(constants)
    for name in required:
        if name not in present:
            raise InputError(f"required column missing (columns: {', '.join(header)}; "
                             f"rename one with --map {name}=<column> or give a constant "
                             f"with --set {name}=<value>)", file=source, line=1, field=name)
    if any_of and not present & set(any_of):
        raise InputError(f"no column naming the customer: one of {', '.join(any_of)} is needed "
                         f"(columns: {', '.join(header)}; rename one with --map)",
                         file=source, line=1)


__all__ = ["ImportOptions", "Shaper", "MULTILINE", "parse_delimiter", "mapping_renames",
           "check_header"]
