"""Time and peak memory to generate a 4-frame story with a trained model, after start-up.

    python benchmarks/story_speed.py                          # the bundled default model
    python benchmarks/story_speed.py --model runs/storydalle/model --threads 2 --repeats 5
    python benchmarks/story_speed.py --int8 --threads 1        # int8 weights in the transformer

Prints one JSON line per phase: `import` (seconds to import storyviz and torch), `load` (model folder ->
pipeline), then per task (`continuation`: the first frame of a sprites test story as the source, its next 4
captions generated; `visualization`: 4 captions, no source) the median seconds per 4-frame story over
`--repeats` runs after one warm-up, and how far the process's peak RSS rose during those runs (MB).
The end-to-end first command of the README on a fresh machine is timed by benchmarks/first_command.sh.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

START = time.perf_counter()
import torch  # noqa: E402

from storyviz.data.sprites.stories import story_record  # noqa: E402
from storyviz.pipelines.base import SamplingOptions, StoryRequest, load_pipeline  # noqa: E402

IMPORT_SECONDS = time.perf_counter() - START


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_task(pipeline, request: StoryRequest, options: SamplingOptions, repeats: int) -> dict:
    pipeline.generate([request], options)  # warm-up
    before = peak_rss_mb()
    times = []
    for repeat in range(repeats):
        start = time.perf_counter()
        pipeline.generate([request], options.replace(seed=repeat))
        times.append(time.perf_counter() - start)
    return {
        "median_s": round(statistics.median(times), 3),
        "min_s": round(min(times), 3),
        "peak_rss_rise_mb": round(peak_rss_mb() - before, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder or bundled name (default: the bundled default model)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--top-k", type=int, help="default: the model's own sampling settings")
    parser.add_argument("--guidance", type=float, help="default: the model's own sampling settings")
    parser.add_argument("--int8", action="store_true", help="int8 weights in the token transformer")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(json.dumps({"phase": "import", "seconds": round(IMPORT_SECONDS, 3)}))

    start = time.perf_counter()
    pipeline = load_pipeline(args.model, int8=args.int8)
    print(json.dumps({"phase": "load", "seconds": round(time.perf_counter() - start, 3), **pipeline.describe()}))

    story = story_record(0, "test", 0, size=pipeline.image_size)
    frames = min(4, pipeline.max_frames)
    changes = {"top_k": args.top_k, "guidance": args.guidance}
    options = pipeline.sampling.replace(**{key: value for key, value in changes.items() if value is not None})
    tasks = {"visualization": StoryRequest(captions=story["captions"][:frames])}
    if pipeline.supports_continuation:
        captions, first = story["captions"], story["frames"][0]
        tasks["continuation"] = StoryRequest(captions[1 : 1 + frames], source_frame=first, source_caption=captions[0])
    for task, request in tasks.items():
        result = time_task(pipeline, request, options, args.repeats)
        settings = {"top_k": options.top_k, "guidance": options.guidance}
        print(json.dumps({"phase": task, "frames": frames, "threads": args.threads, **settings, **result}))


if __name__ == "__main__":
    main()
