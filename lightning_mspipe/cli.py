"""The ``mspipe`` command."""

from __future__ import annotations

import sys

from lightning_mspipe import __version__


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``mspipe`` console script."""
    args = sys.argv[1:] if argv is None else argv
    print(f"lightning-mspipe {__version__}")
    if args and args[0] not in ("--version", "-V"):
        print(f"`mspipe {args[0]}` is not available yet in this version.")
