"""Codebook usage of an image tokenizer over a whole data set, from its pre-computed codes folder.

    python benchmarks/codebook_usage.py CODES_DIR [--split test]

Prints per split: frames, codes per frame, the share of codebook entries used at least once, and the perplexity
exp(H) of the code frequencies (the effective number of entries; at most the codebook size).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from storyviz.data.codes import open_codes


def usage(codes: np.ndarray, codebook_size: int) -> dict[str, float]:
    counts = np.bincount(codes.reshape(-1).astype(np.int64), minlength=codebook_size)
    p = counts[counts > 0] / counts.sum()
    return {
        "used_share": round(float(np.mean(counts > 0)), 4),
        "perplexity": round(float(np.exp(-(p * np.log(p)).sum())), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("codes", help="a codes folder from `storyviz data tokenize`")
    parser.add_argument("--split", action="append", help="split(s) to measure (default: all)")
    args = parser.parse_args()
    codes = open_codes(args.codes)
    for split in args.split or list(codes.meta["splits"]):
        array = codes.split(split).array()
        frames = array.shape[0] * array.shape[1]
        row = {"split": split, "frames": frames, "codes_per_frame": array.shape[2], "codebook": codes.codebook_size}
        print(json.dumps({**row, **usage(array, codes.codebook_size)}))


if __name__ == "__main__":
    main()
