"""`--json` for commands a script calls: one JSON document on stdout, nothing else there.

Human output (tables, progress bars, notes) goes to stderr while ``--json`` is on, so
``pushgen stats --json | jq .`` always reads valid JSON.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

JsonOption = Annotated[bool, typer.Option(
    "--json", help="Print one JSON document on standard output (for scripts) instead of "
                   "tables; notes and progress go to standard error.")]


def _default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        to_dict = getattr(obj, "to_dict", None)
        return to_dict() if callable(to_dict) else dataclasses.asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (_dt.datetime, _dt.date)):
        return obj.isoformat()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if hasattr(obj, "item"):          # numpy scalars
        return obj.item()
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def print_json(data: Any) -> None:
    """Write ``data`` as one JSON document (UTF-8 kept readable) and a newline to stdout."""
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=_default) + "\n")
    sys.stdout.flush()


__all__ = ["JsonOption", "print_json"]
