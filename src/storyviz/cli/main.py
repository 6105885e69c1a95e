"""`storyviz` command line: parses arguments, then makes one call into the library per sub-command."""

from __future__ import annotations

import argparse
import importlib
import sys

from storyviz import __version__
from storyviz.progress import set_quiet

# sub-command -> module in storyviz.cli that defines `add_parser(subparsers)`
COMMANDS = {
    "data": "data",
    "train": "train",
    "export": "export",
    "generate": "generate",
    "evaluate": "evaluate",
    "demo": "demo",
    "import": "import_weights",
}


class UserError(Exception):
    """An error caused by the user's input; printed as one line without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="storyviz",
        description="Story visualization and continuation: captions (and a source frame) in, frames out.",
    )
    parser.add_argument("--version", action="version", version=f"storyviz {__version__}")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or status lines")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMANDS.values():
        importlib.import_module(f"storyviz.cli.{module_name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    set_quiet(args.quiet)
    try:
        return args.handler(args) or 0
    except KeyboardInterrupt:
        print("storyviz: interrupted", file=sys.stderr)
        return 130
    except (UserError, ValueError, FileNotFoundError) as error:
        # storyviz raises ValueError subclasses (ConfigError, WeightsError, DataError, ...) for bad input
        print(f"storyviz {args.command}: error: {error}", file=sys.stderr)
        return 2


def not_ready(command: str, issue: str):
    """A handler for a sub-command whose issue is not done yet: says so plainly and exits non-zero."""

    def handler(args: argparse.Namespace) -> int:
        print(
            f"storyviz {command}: not available yet in storyviz {__version__}; it arrives with the '{issue}' issue.",
            file=sys.stderr,
        )
        return 3

    return handler
