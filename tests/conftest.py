"""Fixtures every test file may use. Add file-specific fixtures in your own test module."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test touches a real database, endpoint or key from the developer's environment."""
    for var in ("PUSHGEN_DB", "PUSHGEN_SECRET", "OPENAI_API_KEY", "OPENAI_BASE_URL", "EDITOR", "VISUAL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "pushgen.db"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()
