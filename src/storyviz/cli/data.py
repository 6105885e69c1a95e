"""`storyviz data`: build, convert, inspect and tokenize data sets."""

from __future__ import annotations

import argparse
import json

from storyviz.progress import say

CONVERT_SOURCES = ("pororo", "flintstones", "didemo", "vist", "arldm-h5")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("data", help="Build, convert, inspect and tokenize data sets.", description=__doc__)
    commands = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    build = commands.add_parser("build", help="build the sprites story world or the digits images")
    build.add_argument("kind", choices=["sprites", "digits"])
    build.add_argument("--out", required=True, help="output folder (replaced when the build completes)")
    build.add_argument("--stories", type=int, default=10_000, help="training stories (images for digits)")
    build.add_argument("--size", type=int, default=64, help="image size in px (sprites: 32..256)")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument(
        "--guest-share",
        type=float,
        default=None,
        metavar="P",
        help="sprites: the share of stories with a guest, whose look must be carried over from frame 1 "
        "(default 0.35; test_unseen is not affected)",
    )
    build.set_defaults(handler=run_build)

    inspect = commands.add_parser("inspect", help="counts, characters, settings and caption examples")
    inspect.add_argument("path", help="a data set folder")
    inspect.add_argument("--json", action="store_true", help="print a machine-readable summary")
    inspect.add_argument("--sheet", metavar="FILE.png", help="also draw a contact sheet of a few stories")
    inspect.add_argument("--split", default=None, help="split for the contact sheet (default: the first)")
    inspect.add_argument("--stories", type=int, default=4, help="stories on the contact sheet")
    inspect.add_argument("--frame-px", type=int, default=128, help="frame size on the contact sheet")
    inspect.set_defaults(handler=run_inspect)

    convert = commands.add_parser("convert", help="convert a published data set to storyviz's format")
    convert.add_argument("source", choices=CONVERT_SOURCES)
    convert.add_argument("--src", required=True, help="the published data folder (or the .h5 file for arldm-h5)")
    convert.add_argument("--out", required=True, help="output folder")
    convert.add_argument("--size", type=int, default=128, help="frame size in px (default 128)")
    convert.add_argument("--seed", type=int, default=0, help="which sub-frame of a strip (random, seeded)")
    convert.add_argument(
        "--subframe",
        choices=["random", "first", "middle"],
        default="random",
        help="which sub-frame of a vertical strip / video to take",
    )
    convert.add_argument(
        "--swap-rb",
        action="store_true",
        help="arldm-h5: swap R and B (files written by the original ARLDM scripts, which encode RGB with OpenCV)",
    )
    convert.set_defaults(handler=run_convert)

    tokenize = commands.add_parser("tokenize", help="pre-compute image codes with a trained image tokenizer")
    tokenize.add_argument("--tokenizer", required=True, metavar="DIR")
    tokenize.add_argument("--data", required=True, metavar="PATH")
    tokenize.add_argument("--out", required=True, metavar="PATH")
    tokenize.add_argument("--batch-size", type=int, default=64, help="frames encoded at once")
    tokenize.add_argument("--device", default="cpu")
    tokenize.set_defaults(handler=run_tokenize)


def run_build(args: argparse.Namespace) -> int:
    from storyviz.data.build import build

    summary = build(args.kind, args.out, args.stories, size=args.size, seed=args.seed, guest_share=args.guest_share)
    splits = ", ".join(f"{name} {count}" for name, count in summary["splits"].items())
    print(
        f"built {args.kind} in {summary['path']}: {splits} stories; {summary['frames']} frames in "
        f"{summary['seconds']} s ({summary['frames_per_second']:.0f} frames/s)"
    )
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    from storyviz.data.inspect import contact_sheet, format_summary, summarize

    summary = summarize(args.path)
    if args.sheet:
        out = contact_sheet(args.path, args.sheet, split=args.split, stories=args.stories, frame_px=args.frame_px)
        say(f"contact sheet written to {out}")
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def run_tokenize(args: argparse.Namespace) -> int:
    from storyviz.data.codes import tokenize_dataset

    meta = tokenize_dataset(args.tokenizer, args.data, args.out, batch_size=args.batch_size, device=args.device)
    splits = ", ".join(f"{name} {count}" for name, count in meta["splits"].items())
    grid = "x".join(str(side) for side in meta["grid"])
    print(f"tokenized {args.data} to {args.out}: {splits} stories; {grid} codes of {meta['codebook_size']}")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from storyviz.data.formats import convert

    summary = convert(
        args.source, args.src, args.out, size=args.size, seed=args.seed, subframe=args.subframe, swap_rb=args.swap_rb
    )
    splits = ", ".join(f"{name} {count}" for name, count in summary["splits"].items())
    print(f"converted {args.source} from {args.src} to {summary['path']}: {splits} stories")
    return 0
