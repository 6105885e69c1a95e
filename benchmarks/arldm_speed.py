"""ARLDM sampling speed: seconds per generated frame at 25 and 50 DDIM steps (the "small" preset, 64 px).

    python benchmarks/arldm_speed.py                       # an untrained small model (speed does not depend on
                                                           # the weights), 1 thread
    python benchmarks/arldm_speed.py --model runs/arldm/model --threads 2 --guidance 1 7.5

Each setting generates `--batch` 5-frame stories (visualization, together) `--repeats` times after a warm-up;
the number printed is the median seconds per generated frame. Guidance > 1 runs the conditional and unconditional
predictions as one batch of 2, so it costs more than guidance 1 (the conditional prediction alone).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from storyviz.models.arldm import ARLDM, PRESETS
from storyviz.pipelines.arldm import ARLDMPipeline
from storyviz.pipelines.base import SamplingOptions, StoryRequest

CAPTIONS = [
    "Pip is running in the park. Pip is red and round with a hat.",
    "Pip goes to the beach and waves.",
    "Luna jumps next to Pip.",
    "Pip and Luna sit on the sand.",
    "Luna waves goodbye.",
]


def seconds_per_frame(pipeline: ARLDMPipeline, steps: int, guidance: float, repeats: int, batch: int) -> float:
    requests = [StoryRequest(captions=CAPTIONS[: pipeline.max_frames])] * batch
    options = SamplingOptions(seed=0, steps=steps, guidance=guidance)
    pipeline.generate(requests, options.replace(steps=2))  # warm-up (text cache, allocator)
    times = []
    for repeat in range(repeats):
        start = time.perf_counter()
        pipeline.generate(requests, options.replace(seed=repeat))
        times.append((time.perf_counter() - start) / (batch * len(requests[0].captions)))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="an arldm model folder (default: an untrained model of --preset)")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps", type=int, nargs="+", default=[25, 50])
    parser.add_argument("--guidance", type=float, nargs="+", default=[7.5])
    parser.add_argument("--sampler", default="ddim", choices=["ddim", "pndm"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1, help="stories generated together (throughput)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    if args.model:
        pipeline = ARLDMPipeline.from_pretrained(args.model, sampler=args.sampler, batch_size=args.batch)
    else:
        torch.manual_seed(0)
        pipeline = ARLDMPipeline(ARLDM(PRESETS[args.preset]), sampler=args.sampler, batch_size=args.batch)
    rows = []
    for guidance in args.guidance:
        for steps in args.steps:
            seconds = seconds_per_frame(pipeline, steps, guidance, args.repeats, args.batch)
            row = {"sampler": args.sampler, "steps": steps, "guidance": guidance, "threads": args.threads,
                   "batch": args.batch, "seconds_per_frame": round(seconds, 3)}  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"image size {pipeline.image_size} px, model {args.model or 'untrained ' + args.preset}")


if __name__ == "__main__":
    main()
