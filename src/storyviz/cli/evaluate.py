"""`storyviz evaluate`: Score a model or a folder of samples with the field's metrics."""

from __future__ import annotations

from storyviz.cli.main import not_ready


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="Score a model or a folder of samples with the field's metrics.",
        description="Score a model or a folder of samples with the field's metrics.",
    )
    parser.set_defaults(handler=not_ready("evaluate", "evaluation"))
