"""`storyviz train`: train any registered model with the one training loop."""

from __future__ import annotations

from storyviz.cli.main import not_ready


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("train", help="Train a model.", description=__doc__)
    parser.set_defaults(handler=not_ready("train", "training infrastructure"))
