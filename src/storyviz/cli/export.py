"""`storyviz export`: a checkpoint of a training run as a usable model folder, before the run ends.

    storyviz export runs/dalle-digits --out exports/dalle-digits-600                  # the newest checkpoint
    storyviz export runs/dalle-digits --checkpoint step-0000600 --out exports/600

The folder is what the run would export at its end (a DALL-E or StoryDALL-E bundle with its tokenizers, the EMA
weights when the run keeps an EMA), so `storyviz generate --model` and `storyviz evaluate --model` read it.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="Export a training checkpoint as a model folder.",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run", help="run folder of `storyviz train`")
    parser.add_argument("--checkpoint", help="checkpoint folder or name (step-XXXXXXX); default: the newest")
    parser.add_argument("--out", required=True, help="model folder to write")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from storyviz.training.loop import export_checkpoint

    print(export_checkpoint(args.run, args.out, args.checkpoint))
    return 0
