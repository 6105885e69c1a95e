"""`storyviz data`: build, convert, inspect and tokenize data sets."""

from __future__ import annotations

from storyviz.cli.main import not_ready


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("data", help="Build, convert, inspect and tokenize data sets.", description=__doc__)
    parser.set_defaults(handler=not_ready("data", "story data"))
