"""`storyviz demo`: Start the web demo."""

from __future__ import annotations

from storyviz.cli.main import not_ready


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="Start the web demo.", description="Start the web demo.")
    parser.set_defaults(handler=not_ready("demo", "product"))
