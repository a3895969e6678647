"""Command line: a thin shell over the library. Each module registers its commands on ``app``."""

from __future__ import annotations

from . import (data, drafting, exporting, ranking, report, reviewing,  # noqa: F401  (register)
               unsubscribe, users)
from .app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
