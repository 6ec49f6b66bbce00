"""The `recsys-platform` command line: `main.py` parses and dispatches, `demo.py` runs the platform end to end."""

from recsys_platform.cli.main import main

__all__ = ["main"]
