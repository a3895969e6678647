"""Command line: a thin shell over the library. Each module registers its commands on ``app``."""

from __future__ import annotations

from .app import app

# Importing a module registers its commands; a module that is not written yet is skipped
# so the CLI stays usable while pieces land.
import importlib as _importlib

for _name in ("data", "ranking", "drafting", "reviewing"):
    try:
        _importlib.import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as _exc:  # pragma: no cover - only while building
        if _exc.name != f"{__name__}.{_name}":
            raise


def main() -> None:
    app()


__all__ = ["app", "main"]
