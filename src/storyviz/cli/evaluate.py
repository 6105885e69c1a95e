"""`storyviz evaluate`: score a model (or a folder of samples from any program) with the field's metrics."""

from __future__ import annotations

import argparse
import json

from storyviz.cli.main import UserError
from storyviz.cli.sampling_args import add_sampling_arguments, sampling_changes


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="Score a model or a folder of samples with the field's metrics.",
        description=__doc__ + " Samples are generated to OUT/samples first; metrics are computed from the files "
        "and written to OUT/report.json, report.md and grid.png, with the real frames (ceiling) and shuffled "
        "stories (floor) as reference rows.",
    )
    parser.add_argument("--model", help="model folder or bundled name (default: the bundled default model)")
    parser.add_argument("--samples", help="score this samples folder instead of generating (see evaluation/samples.py)")
    parser.add_argument("--data", required=True, help="data set folder (storyviz format)")
    parser.add_argument("--split", default="test", help="split to evaluate (default: test)")
    parser.add_argument("--stories", type=int, help="number of stories (a seeded choice; default: all)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--captions", choices=["plain", "pronoun"], default="plain", help="caption version")
    parser.add_argument("--task", choices=["continuation", "visualization"], default="continuation")
    parser.add_argument(
        "--judge",
        help="judge folder, bundled name, or a TorchScript file with a JSON description beside it "
        "(for published data sets; see evaluation/scripted_judge.py); default: judge-<data set name>",
    )
    parser.add_argument(
        "--judge-min-accuracy",
        type=float,
        default=0.98,
        help="refuse a judge whose stored held-out accuracy is below this on any head (default 0.98)",
    )
    parser.add_argument("--no-inception", action="store_true", help="skip fid_inception (the slowest metric)")
    add_sampling_arguments(parser)  # --seed also picks the stories and the shuffled row
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from storyviz.evaluation.report import report_dict
    from storyviz.evaluation.run import evaluate_folder, evaluate_model

    if args.samples and args.model:
        raise UserError("give --model (generate, then score) or --samples (score only), not both")
    if args.samples and (args.int8 or args.scorer):
        raise UserError("--int8 and --scorer apply when generating (--model), not to a --samples folder")
    if args.stories is not None and args.stories < 1:
        raise UserError(f"--stories {args.stories}: expected a positive number")
    inception = not args.no_inception
    seed = args.seed if args.seed is not None else 0
    if args.samples:
        evaluation = evaluate_folder(
            args.samples, args.data, args.split, args.out, args.judge, inception, seed, args.judge_min_accuracy
        )
    else:
        evaluation = evaluate_model(
            args.model, args.data, args.split, args.out, args.stories, seed, sampling_changes(args), args.captions,
            args.task, args.judge, inception, args.judge_min_accuracy, int8=args.int8, scorer=args.scorer,
        )  # fmt: skip
    report = report_dict(evaluation)
    if args.json:
        print(json.dumps({row: values for row, values in report.items() if row not in ("by_frame", "info")}, indent=2))
    else:
        print(f"report written to {args.out}/report.md")
    return 0
