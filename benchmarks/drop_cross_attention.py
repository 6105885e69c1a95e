"""A StoryDALL-E bundle without its cross-attention: the ablation's starting point when the chain that made the
bundle cannot be trained again without it.

    python benchmarks/drop_cross_attention.py BUNDLE OUT

Writes OUT, a StoryDALL-E bundle whose transformer is BUNDLE's with every cross-attention sub-layer removed
(cross_attention_every=0; story_to_image and copy_gate, which live in those sub-layers, off), the other weights
as they were, and BUNDLE's text and image tokenizers (no scorer). Train it on with `storyviz train storydalle
--set model.pretrained=OUT --set model.model.cross_attention_every=0 ...` so that it learns to do without the
source frame; the ablation is that run against the same training of BUNDLE (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from storyviz.convert.bundle import read_bundle_config, write_bundle
from storyviz.models.storydalle import StoryDalle
from storyviz.pipelines.storydalle import STORYDALLE_BUNDLE
from storyviz.registry import load_model


def without_cross_attention(model: StoryDalle) -> StoryDalle:
    config = model.config.replace(cross_attention_every=0, story_to_image=False, copy_gate=False, copy_source=False)
    out = StoryDalle(config)
    kept = {key: value for key, value in model.state_dict().items() if ".cross." not in key}
    out.load_state_dict(kept, strict=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    parts = read_bundle_config(args.bundle, STORYDALLE_BUNDLE)["config"]["parts"]
    transformer = without_cross_attention(load_model(args.bundle / parts["transformer"]).float())
    write_bundle(
        args.out,
        STORYDALLE_BUNDLE,
        {
            "transformer": transformer,
            "tokenizer": args.bundle / parts["tokenizer"],
            "image_tokenizer": args.bundle / parts["image_tokenizer"],
        },
        {"source": f"{args.bundle} without cross-attention"},
    )
    print(f"wrote {args.out}: {sum(p.numel() for p in transformer.parameters())} parameters")


if __name__ == "__main__":
    main()
