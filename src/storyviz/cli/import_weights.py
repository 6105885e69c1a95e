"""`storyviz import`: convert published checkpoints (minDALL-E, StoryDALL-E) into storyviz model folders."""

from __future__ import annotations

from storyviz.cli.main import not_ready


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "import", help="Convert a published checkpoint into a storyviz model folder.", description=__doc__
    )
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    for kind, issue in (("mindalle", "DALL-E"), ("storydalle", "StoryDALL-E")):
        sub = kinds.add_parser(kind, help=f"import a released {kind} checkpoint")
        sub.add_argument("src", help="the released folder or checkpoint file")
        sub.add_argument("--out", required=True, help="storyviz model folder to write")
        sub.set_defaults(handler=not_ready(f"import {kind}", issue))
