"""`storyviz import`: convert published checkpoints (minDALL-E, StoryDALL-E) into storyviz model folders."""

from __future__ import annotations

import argparse

from storyviz.cli.main import not_ready
from storyviz.progress import say


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "import", help="Convert a published checkpoint into a storyviz model folder.", description=__doc__
    )
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    sub = kinds.add_parser(
        "mindalle",
        help="import the released minDALL-E folder (config.yaml, stage1_last.ckpt, stage2_last.ckpt, tokenizer/)",
    )
    sub.add_argument("src", help="the released folder (e.g. 1.3B/)")
    sub.add_argument("--out", required=True, help="DALL-E bundle folder to write")
    sub.set_defaults(handler=import_mindalle)
    sub = kinds.add_parser("storydalle", help="import a released storydalle checkpoint")
    sub.add_argument("src", help="the released folder or checkpoint file")
    sub.add_argument("--out", required=True, help="storyviz model folder to write")
    sub.set_defaults(handler=not_ready("import storydalle", "StoryDALL-E"))


def import_mindalle(args: argparse.Namespace) -> int:
    from storyviz.convert.mindalle import import_mindalle

    out = import_mindalle(args.src, args.out)
    say(f"wrote {out}")
    print(out)
    return 0
