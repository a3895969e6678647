"""Exceptions for mistakes a user can fix; the CLI prints them as one line, no traceback."""

from __future__ import annotations


class PushgenError(Exception):
    """Base class: the message is complete and meant for the user."""


class InputError(PushgenError):
    """Bad input data, located by file, line and field where known."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        self.file, self.line, self.field, self.reason = file, line, field, message
        where = ":".join(str(p) for p in (file, line) if p is not None)
        prefix = f"{where}: " if where else ""
        col = f"column '{field}': " if field else ""
        super().__init__(f"{prefix}{col}{message}")
