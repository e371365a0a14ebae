"""`instraug-plugin` command line: a thin layer over the library; user errors print as one line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from instraug_plugin.core.errors import InstrAugError

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)


def main() -> None:
    """Entry point: run the Typer app, turning InstrAugError into `error: ...` and exit code 2."""
    try:
        app(standalone_mode=False)
    except InstrAugError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except typer.Abort:
        raise SystemExit(1) from None
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            raise SystemExit(exc.exit_code) from None
        raise
