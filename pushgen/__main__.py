"""`python -m pushgen` runs the CLI."""

from .cli import main

main()
