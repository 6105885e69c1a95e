"""`storyviz train`: train any registered model with the one training loop.

Single process:  storyviz train toy --preset tiny --data synthetic --out runs/toy
Data-parallel:   torchrun --nproc_per_node=2 -m storyviz train toy --preset tiny --data synthetic --out runs/toy
Resume:          storyviz train toy --out runs/toy --resume [--steps 400]

Exit status: 0 done (prints the exported model folder), 1 NaN/inf loss (the step is named), 2 bad arguments or
config, 130 / 143 stopped by SIGINT / SIGTERM after saving a checkpoint.
"""

from __future__ import annotations

import argparse
import os
import sys

from storyviz.training.task import TASKS


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="Train a model.", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", help=f"what to train: {', '.join(sorted(TASKS))}")
    parser.add_argument("--preset", help="named model + train preset (required for a new run)")
    parser.add_argument("--data", help="data set folder ('synthetic' for the toy model); a resume reuses run.json's")
    parser.add_argument("--out", required=True, help="run folder (checkpoints, logs, exported model)")
    parser.add_argument("--steps", type=int, help="total optimizer steps of the run (a resumed run continues to N)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field: model.hidden=64, train.lr=1e-4 (an unprefixed key must be unambiguous)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from storyviz.training.configure import resolve_run
    from storyviz.training.loop import NonFiniteLoss, TrainingInterrupted, train

    main_process = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 speaks for all
    spec = resolve_run(args.model, args.preset, args.data, args.out, args.overrides, args.steps, args.resume)
    try:
        out = train(spec.task, spec.model_config, spec.train_config, spec.data, args.out, args.resume, spec.preset)
    except TrainingInterrupted as stop:
        if main_process:
            print(f"storyviz train: {stop}", file=sys.stderr)
        return 128 + stop.signal_number
    except NonFiniteLoss as error:
        if main_process:
            print(f"storyviz train: error: {error}", file=sys.stderr)
        return 1
    if main_process:
        print(out)
    return 0
