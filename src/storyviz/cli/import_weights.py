"""`storyviz import`: convert published checkpoints (minDALL-E, StoryDALL-E) into storyviz model folders."""

from __future__ import annotations

import argparse

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
    sub = kinds.add_parser(
        "storydalle",
        help="import a released StoryDALL-E checkpoint (model_state_dict with stage1.*, stage2.*, story_*)",
    )
    sub.add_argument("src", help="the released checkpoint file")
    sub.add_argument("--mindalle", required=True, help="the minDALL-E release folder it was fine-tuned from")
    sub.add_argument("--out", required=True, help="StoryDALL-E bundle folder to write")
    sub.set_defaults(handler=import_storydalle)


def import_mindalle(args: argparse.Namespace) -> int:
    from storyviz.convert.mindalle import import_mindalle

    out = import_mindalle(args.src, args.out)
    say(f"wrote {out}")
    print(out)
    return 0


def import_storydalle(args: argparse.Namespace) -> int:
    from storyviz.convert.storydalle import import_storydalle

    out = import_storydalle(args.src, args.mindalle, args.out)
    say(f"wrote {out}")
    print(out)
    return 0
