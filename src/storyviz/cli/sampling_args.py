"""The sampling options shared by `storyviz generate` and `storyviz evaluate`."""

from __future__ import annotations

import argparse


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="random seed (the same seed gives the same frames)")
    parser.add_argument("--candidates", type=int, default=1, help="samples per frame (the best is kept)")
    parser.add_argument("--top-k", type=int, default=0, help="0: off; 1: greedy decoding")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale (1: off)")
    parser.add_argument("--steps", type=int, default=50, help="diffusion sampling steps (diffusion models)")


def sampling_options(args: argparse.Namespace):
    """The SamplingOptions of parsed arguments."""
    from storyviz.pipelines.base import SamplingOptions

    return SamplingOptions(
        seed=args.seed,
        candidates=args.candidates,
        top_k=args.top_k,
        top_p=args.top_p,
        temperature=args.temperature,
        guidance=args.guidance,
        steps=args.steps,
    )
