"""Command line: a thin shell over the library. Each module registers its commands on ``app``."""

from __future__ import annotations

from . import data, drafting, ranking, report, reviewing, unsubscribe, users  # noqa: F401  (register)
from .app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
