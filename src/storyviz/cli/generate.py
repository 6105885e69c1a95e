"""`storyviz generate`: Generate story frames from captions (and a source frame).

    storyviz generate --caption "pororo is in the forest" --caption "crong joins him" --out story/
    storyviz generate --captions story.yaml --source-frame me.png --seed 3 --out story/
    storyviz generate --model digits --caption "generate image of 6 in pink and a texture background of stones" --out d/

Writes story.png (the strip with captions), frame_01.png ..., story.gif and story.json (everything needed to
reproduce the story) into --out. Exit status 2 with a one-line message on bad input.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from storyviz.cli.sampling_args import add_sampling_arguments, sampling_changes


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="Generate story frames from captions (and a source frame).",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--caption", action="append", default=[], help="a frame's caption (repeat for a story)")
    parser.add_argument("--captions", metavar="FILE", help="captions file: .txt (one per line), .json or .yaml")
    parser.add_argument("--source-frame", metavar="IMAGE", help="an image showing the characters and setting")
    parser.add_argument("--source-caption", help="the caption of the source frame")
    parser.add_argument("--model", default=None, help="model folder or bundled model name (default: the bundled one)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_sampling_arguments(parser)
    parser.add_argument("--frame-px", type=int, default=256, help="frame size in story.png and story.gif")
    parser.add_argument("--device", default="cpu")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from storyviz.output import generate_story

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        paths = generate_story(
            args.out,
            captions=args.caption,
            captions_file=args.captions,
            source_frame=args.source_frame,
            source_caption=args.source_caption,
            model=args.model,
            sampling=sampling_changes(args),
            device=args.device,
            int8=args.int8,
            scorer=args.scorer,
            frame_px=args.frame_px,
            command={
                "argv": ["storyviz", *sys.argv[1:]],
                "options": {key: value for key, value in vars(args).items() if key != "handler"},
            },
        )
    for warning in caught:
        if issubclass(warning.category, UserWarning):
            print(f"storyviz generate: warning: {warning.message}", file=sys.stderr)
    print(paths["story.png"].parent)
    return 0
