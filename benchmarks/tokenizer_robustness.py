"""How well an image tokenizer draws from codes that are a little off, as a stage 2's sampled codes are.

    python benchmarks/tokenizer_robustness.py TOKENIZER --data DATA [--split test] [--stories 50]
        [--rates 0 0.05 0.1 0.2] [--judge judge-sprites] [--unquantized] [--self-reference]

TOKENIZER is an image tokenizer folder (VQGAN or dVAE). Every frame of the first STORIES stories is encoded; then
a share RATE of its codes is replaced, each by the code at the same grid position of another frame of the set
("swap": a plausible code in the wrong place, like a stage-2 error), decoded, and read by the judge. Printed per
rate: the judge metrics against the frames' true labels (char_f1, frame_acc, setting_acc, appearance). Rate 0 is
the tokenizer's plain reconstruction. A tokenizer whose scores fall fast with the rate reproduces real frames but
draws badly from a stage 2's samples. `--unquantized` (VQGAN) adds a row "unquantized": the encoder's latents
decoded without the codebook, which tells what the codebook loses from what the encoder and decoder lose.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from storyviz.data import open_dataset
from storyviz.evaluation.judges import judge_frames, load_judge, split_frames
from storyviz.evaluation.metrics import judge_metrics
from storyviz.pipelines.storydalle import to_uint8
from storyviz.registry import load_model
from storyviz.training.tasks.tokenizers import images_from_uint8


def swap_codes(codes: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
    """codes (N, H, W): a share `rate` of positions takes the code of the same position in another random frame."""
    count = codes.shape[0]
    chosen = torch.rand(codes.shape, generator=generator) < rate
    donors = (torch.arange(count)[:, None, None] + torch.randint(1, count, codes.shape, generator=generator)) % count
    rows = torch.arange(codes.shape[1])[None, :, None].expand_as(codes)
    cols = torch.arange(codes.shape[2])[None, None, :].expand_as(codes)
    return torch.where(chosen, codes[donors, rows, cols], codes)


@torch.inference_mode()
def frame_codes(tokenizer, frames: np.ndarray, batch: int = 64) -> torch.Tensor:
    """frames (N, H, W, 3) uint8 -> their codes (N, h, w)."""
    images = images_from_uint8(torch.from_numpy(np.ascontiguousarray(frames)))
    return torch.cat([tokenizer.encode(images[start : start + batch]) for start in range(0, len(images), batch)])


@torch.inference_mode()
def decoded_frames(tokenizer, codes: torch.Tensor, rate: float, seed: int, batch: int = 64) -> np.ndarray:
    codes = swap_codes(codes, rate, torch.Generator().manual_seed(seed))
    decoded = [tokenizer.decode(codes[start : start + batch]) for start in range(0, len(codes), batch)]
    return to_uint8(torch.cat(decoded))


@torch.inference_mode()
def self_reference_frames(tokenizer, codes: torch.Tensor, batch: int = 64) -> np.ndarray:
    """The codes decoded twice: plainly, then with the plain decoding as each frame's reference."""
    decoded = []
    for start in range(0, len(codes), batch):
        rows = codes[start : start + batch]
        decoded.append(tokenizer.decode(rows, reference=tokenizer.decode(rows)))
    return to_uint8(torch.cat(decoded))


@torch.inference_mode()
def unquantized_frames(tokenizer, frames: np.ndarray, batch: int = 64) -> np.ndarray:
    """The frames through a VQGAN's encoder and decoder, the codebook skipped."""
    images = images_from_uint8(torch.from_numpy(np.ascontiguousarray(frames)))
    decoded = []
    for start in range(0, len(images), batch):
        latents = tokenizer.quant_conv(tokenizer.encoder(images[start : start + batch]))
        decoded.append(tokenizer.decode_latents(latents).clamp(-1.0, 1.0))
    return to_uint8(torch.cat(decoded))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tokenizer", help="an image tokenizer folder")
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--stories", type=int, default=50)
    parser.add_argument("--rates", type=float, nargs="+", default=[0.0, 0.05, 0.1, 0.2])
    parser.add_argument("--judge", default=None, help="default: the bundled judge-<data set name>")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--unquantized", action="store_true", help="also decode the latents without the codebook")
    parser.add_argument(
        "--self-reference", action="store_true", help="also decode each frame with its plain decoding as reference"
    )
    args = parser.parse_args()
    data = open_dataset(args.data)
    frames, labels = split_frames(data, args.split, limit=args.stories)
    judge = load_judge(args.judge or f"judge-{data.meta['name']}")
    tokenizer = load_model(args.tokenizer).eval()
    codes = frame_codes(tokenizer, frames)
    decoded = {str(rate): lambda rate=rate: decoded_frames(tokenizer, codes, rate, args.seed) for rate in args.rates}
    if args.unquantized:
        decoded["unquantized"] = lambda: unquantized_frames(tokenizer, frames)
    if args.self_reference:
        if not getattr(tokenizer, "reads_reference", False):
            parser.error(f"--self-reference: {args.tokenizer} has a decoder that reads no reference frame")
        decoded["self_reference"] = lambda: self_reference_frames(tokenizer, codes)
    rows = {}
    for name, decode in decoded.items():
        predicted, _ = judge_frames(judge, decode())
        rows[name] = {metric: round(value, 4) for metric, value in judge_metrics(predicted, labels).items()}
    report = {"tokenizer": args.tokenizer, "split": args.split, "frames": len(frames), "rates": rows}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
