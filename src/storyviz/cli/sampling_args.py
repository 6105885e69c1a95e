"""The sampling options shared by `storyviz generate` and `storyviz evaluate` (and their --int8 and --scorer).

Options not given on the command line take the model's own defaults (`StoryPipeline.sampling`, from the
"sampling" object of its config.json; the bundled models carry the settings their measured results used).
"""

from __future__ import annotations

import argparse
from typing import Any

FLAGS = (
    "seed",
    "candidates",
    "top_k",
    "top_p",
    "temperature",
    "guidance",
    "guidance_start",
    "source_guidance",
    "steps",
)


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("sampling (default: the model's own settings)")
    group.add_argument("--seed", type=int, help="random seed (the same seed gives the same frames; default 0)")
    group.add_argument("--candidates", type=int, help="samples per frame (the best is kept)")
    group.add_argument("--top-k", type=int, help="0: off; 1: greedy decoding")
    group.add_argument("--top-p", type=float)
    group.add_argument("--temperature", type=float)
    group.add_argument("--guidance", type=float, help="classifier-free guidance scale (1: off)")
    group.add_argument(
        "--guidance-start",
        type=int,
        help="token models: the image tokens before this index are sampled without guidance (e.g. 64: the first "
        "4 rows of a 16x16 grid, where a frame's background is decided)",
    )
    group.add_argument(
        "--source-guidance",
        type=float,
        help="StoryDALL-E: guide the source frame with this scale and the caption with --guidance, apart (a third "
        "branch: the caption dropped, the source frame kept; 0: both with --guidance)",
    )
    group.add_argument("--steps", type=int, help="diffusion sampling steps (diffusion models)")
    parser.add_argument(
        "--int8",
        action="store_true",
        help="int8 weights for the token transformer (CPU; faster sampling, slightly different frames)",
    )
    parser.add_argument(
        "--scorer",
        metavar="DIR",
        help="token models: re-rank the --candidates of each frame with this scorer (`storyviz train scorer`'s "
        "model folder) instead of the model's own",
    )


def sampling_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The sampling options given on the command line: changes to the model's defaults."""
    return {name: getattr(args, name) for name in FLAGS if getattr(args, name) is not None}
