"""The wheel ships every package: a subpackage missing from pyproject's list imports fine
from a source checkout and breaks every installed copy."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_python_package_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(config["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for p in (ROOT / "pushgen").rglob("__init__.py")}
    assert found, "no packages found"
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
    data_dirs = {"pushgen.bundled_templates", "pushgen.bundled_prompts"}
    for name in listed - found - data_dirs:
        parts = name.split(".")
        folder = ROOT.joinpath(*parts) if parts[1] not in ("bundled_templates", "bundled_prompts") \
            else ROOT / ("templates" if parts[1] == "bundled_templates" else "prompts") / Path(*parts[2:])
        assert folder.is_dir(), f"{name} is listed but {folder} does not exist"


def test_the_cli_starts_without_importing_scipy_stats():
    """scipy.stats costs every command (even --help) half a second: only the commands that
    compute statistics import it."""
    import subprocess
    import sys

    code = "import sys, pushgen.cli; print('scipy.stats' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
