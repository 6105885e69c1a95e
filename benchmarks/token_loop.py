"""Token-loop benchmark: generating 256 image tokens from 64 text tokens with the "bench" DALL-E preset
(4 layers, width 256, 8 heads, 16384-entry text and image vocabularies) on one thread.

    python benchmarks/token_loop.py              # 7 interleaved rounds of every variant
    python benchmarks/token_loop.py --repeats 3

Variants, all top-k 256 at temperature 1, batch 1 unless stated:
    cached     storyviz.sampling.Engine with its preallocated KV cache
    cached_int8  the same with the blocks' Linears and the image head in int8 (storyviz.models.inference)
    cached_rowmajor  the same with the Linear weights stored row-major (nn.Linear's default layout)
    uncached   the same engine recomputing the whole sequence at every step
    mindalle   a re-implementation of minDALL-E's cached loop (a Python list of past keys/values, concatenated
               at every step; top-k by clone + masked fill and a softmax over the whole vocabulary), same weight
               values in nn.Linear's row-major layout, as minDALL-E holds them
    batch16    the cached engine at batch 16 (throughput in tokens/s); batch16_int8 the same in int8
The variants are timed in rounds, interleaved, in one process, in wall-clock and in CPU time (the machine is
shared: CPU time is what the loop costs while it has a core); tokens/s uses the median wall time. Peak memory is how
far the resident set size peaks above its level before one generation (Linux VmHWM after a reset), measured in a
fresh process per variant after a warm-up and malloc_trim: cache, activations and allocator slack.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from storyviz.models.dalle import PRESETS, Dalle
from storyviz.models.inference import quantize_int8_
from storyviz.sampling import Engine, SamplingConfig

VARIANTS = ("cached", "cached_int8", "cached_rowmajor", "uncached", "mindalle", "batch16", "batch16_int8")


def mindalle_loop(model: Dalle, text: torch.Tensor, top_k: int, generator: torch.Generator) -> torch.Tensor:
    """minDALL-E's sampling loop (models/stage2/transformer.py `sampling` + utils/sampling.py), re-implemented
    over our module's weights: past keys/values kept as a list of per-step tensors and concatenated every step."""
    config = model.config
    heads, head_dim = config.heads, config.width // config.heads
    past: list[torch.Tensor] = []
    code = None

    def attention(attn, x, layer_past):
        batch, length, width = x.shape
        key = attn.key(x).view(batch, length, heads, head_dim).transpose(1, 2)
        query = attn.query(x).view(batch, length, heads, head_dim).transpose(1, 2)
        value = attn.value(x).view(batch, length, heads, head_dim).transpose(1, 2)
        present = torch.stack([key, value])
        if layer_past is not None:
            key = torch.cat([layer_past[0], key], dim=-2)
            value = torch.cat([layer_past[1], value], dim=-2)
        key, query, value = (t.reshape(batch * heads, -1, head_dim) for t in (key, query, value))
        scores = torch.bmm(query, key.transpose(-2, -1)) * (1.0 / math.sqrt(head_dim))
        if layer_past is None:
            mask = torch.tril(torch.ones(length, length))
            scores = scores.masked_fill(mask == 0, float("-inf"))
        y = torch.bmm(F.softmax(scores, dim=-1), value)
        y = y.view(batch, heads, length, head_dim).transpose(1, 2).contiguous().view(batch, length, width)
        return attn.proj(y), present

    for step in range(config.image_len):
        if code is None:
            x = model.tok_emb_txt(text) + model.pos_emb_txt(torch.arange(text.shape[1])[None])
        else:
            position = torch.full((text.shape[0], 1), step - 1)
            x = model.tok_emb_img(code[:, step - 1 : step]) + model.pos_emb_img(position)
        stacked = torch.cat(past, dim=-2) if past else None
        presents = []
        for index, block in enumerate(model.blocks):
            out, present = attention(block.attn, block.ln1(x), None if stacked is None else stacked[index])
            x = x + out
            x = x + block.mlp(block.ln2(x))
            presents.append(present)
        logits = model.head_img(model.ln_f(x)[:, -1]).float()
        past.append(torch.stack(presents).clone())
        values, _ = torch.topk(logits, top_k)
        logits = logits.clone()
        logits[logits < values[:, [-1]]] = -float("Inf")
        probs = F.softmax(logits, dim=-1)
        index = torch.multinomial(probs, num_samples=1, generator=generator)
        code = index if code is None else torch.cat([code, index], dim=1)
    return code


def build_loop(variant: str):
    """The model and a zero-argument function that runs one generation of `variant`."""
    torch.manual_seed(0)
    model = Dalle(PRESETS["bench"]).eval()
    if variant in ("mindalle", "cached_rowmajor"):
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight = torch.nn.Parameter(module.weight.detach().contiguous())
    if variant.endswith("int8"):
        quantize_int8_(model)
    batch = 16 if variant.startswith("batch16") else 1
    text = torch.randint(1, model.config.text_vocab_size, (batch, model.config.text_len))
    if variant == "mindalle":

        def loop():
            with torch.no_grad():  # minDALL-E decorates its sampling with @torch.no_grad()
                return mindalle_loop(model, text, 256, torch.Generator().manual_seed(0))

        return loop
    engine = Engine(model, use_cache=variant != "uncached")
    config = SamplingConfig(top_k=256, seed=0)
    return lambda: engine.generate(text, config).tokens


def peak_memory(variant: str) -> float:
    """MB by which the resident set size peaks above its level before one generation (in a fresh process).

    Linux: the peak (VmHWM) is reset through /proc/self/clear_refs first, so model building does not count."""
    loop = build_loop(variant)
    loop()  # warm-up: one-time library initialisation is not the loop's memory
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap memory back, so reusing it shows up again
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    before = _status_kb("VmRSS")
    loop()
    return (_status_kb("VmHWM") - before) / 1024


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (uncached: 1)")
    parser.add_argument("--memory-of", choices=VARIANTS, help=argparse.SUPPRESS)  # internal: one fresh process
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.memory_of:
        print(json.dumps(peak_memory(args.memory_of)))
        return
    loops = {variant: build_loop(variant) for variant in VARIANTS}
    wall: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    cpu: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    for variant, loop in loops.items():
        if variant != "uncached":
            loop()  # warm-up
    for round_ in range(args.repeats):  # interleaved, so that a busy moment of the machine hits every variant
        for variant, loop in loops.items():
            if variant == "uncached" and round_:
                continue
            start, start_cpu = time.perf_counter(), time.process_time()
            loop()
            wall[variant].append(time.perf_counter() - start)
            cpu[variant].append(time.process_time() - start_cpu)
    print(f"torch {torch.__version__}, 1 thread, bench preset, 64 text tokens -> 256 image tokens, top-k 256")
    print(f"load average before/after: {LOAD_BEFORE} / {os.getloadavg()[0]:.2f}")
    print("wall = elapsed seconds; cpu = CPU seconds of this process (what the loop costs when it has a core)")
    header = f"{'variant':<16} {'batch':>5} {'wall min':>9} {'wall med':>9} {'cpu min':>8} {'cpu med':>8}"
    print(header + f" {'tokens/s':>9} {'peak RSS +MB':>13}")
    for variant in VARIANTS:
        command = [sys.executable, __file__, "--memory-of", variant]
        memory = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        batch = 16 if variant.startswith("batch16") else 1
        w, c = wall[variant], cpu[variant]
        row = f"{variant:<16} {batch:>5} {min(w):>9.3f} {statistics.median(w):>9.3f} {min(c):>8.3f}"
        print(row + f" {statistics.median(c):>8.3f} {batch * 256 / statistics.median(w):>9.0f} {memory:>13.1f}")
    for other in ("uncached", "mindalle", "cached_rowmajor"):
        for base in ("cached", "cached_int8"):
            ratios = [b / a for a, b in zip(wall[base], wall[other])]
            cpu_ratios = [b / a for a, b in zip(cpu[base], cpu[other])]
            print(
                f"{base} vs {other}: {statistics.median(ratios):.2f}x faster in wall time, "
                f"{statistics.median(cpu_ratios):.2f}x in CPU time (medians of paired rounds)"
            )


LOAD_BEFORE = f"{os.getloadavg()[0]:.2f}"

if __name__ == "__main__":
    main()
