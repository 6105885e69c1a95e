"""`storyviz demo`: Start the web demo (a Gradio page on http://HOST:PORT).

    storyviz demo                              the bundled default model on http://127.0.0.1:7860
    storyviz demo --model runs/storydalle/final --port 8000 --concurrency 2

Requests are queued; --concurrency of them generate at once. No share links, no analytics.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="Start the web demo.",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default=None, help="model folder or bundled model name (default: the bundled one)")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--concurrency", type=int, default=1, help="requests generated at once (others wait)")
    parser.add_argument("--device", default="cpu")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from storyviz.demo.app import build_app, launch
    from storyviz.demo.story import DemoInputError

    if args.concurrency < 1:
        raise DemoInputError(f"--concurrency must be 1 or more, got {args.concurrency}")
    launch(build_app(args.model, device=args.device), args.host, args.port, args.concurrency)
    return 0
