"""`storyviz generate`: Generate story frames from captions (and a source frame)."""

from __future__ import annotations

from storyviz.cli.main import not_ready


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="Generate story frames from captions (and a source frame).",
        description="Generate story frames from captions (and a source frame).",
    )
    parser.set_defaults(handler=not_ready("generate", "product"))
