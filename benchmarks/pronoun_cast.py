"""Does a re-ranking scorer know whom "he", "she" or "they" stand for? Its text cast head (storyviz.models.scorer)
on the captions whose pronoun version differs from the plain one, against what it says for the plain caption.

    python benchmarks/pronoun_cast.py --data DATA [--scorer DIR] [--split val] [--stories 300]

Printed for the pronoun captions read with the story's earlier (pronoun) captions, as re-ranking reads them,
and read alone: the share whose cast (names with p > 0.5) is the plain caption's, and the mean summed |p -
p_plain| over the names. Needs a data set with pronoun captions and a scorer with cast heads.
"""

from __future__ import annotations

import argparse

import torch

from storyviz.data.store import open_dataset
from storyviz.pipelines.dalle import bundled_scorer
from storyviz.pipelines.rerank import Reranker
from storyviz.registry import resolve_model_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--scorer", default=None, help="a scorer bundle; default: the default model's scorer part")
    parser.add_argument("--split", default="val")
    parser.add_argument("--stories", type=int, default=300)
    args = parser.parse_args()
    reranker = (
        Reranker.from_pretrained(resolve_model_dir(args.scorer))
        if args.scorer
        else bundled_scorer(resolve_model_dir(None))
    )
    model = reranker.scorer
    if not model.config.names:
        raise SystemExit("the scorer has no cast heads")
    stories = open_dataset(args.data).split(args.split)
    if not stories.has_pronouns:
        raise SystemExit(f"{args.data}: split {args.split!r} has no pronoun captions")
    plain, pronoun = stories.caption_table(), stories.caption_table(pronoun=True)
    rows = [
        (story, frame)
        for story in range(min(args.stories, len(plain)))
        for frame in range(len(plain[story]))
        if plain[story][frame] != pronoun[story][frame]
    ]

    @torch.no_grad()
    def cast(table, with_context: bool) -> torch.Tensor:
        captions = [table[story][frame] for story, frame in rows]
        context = reranker.context([table[s][:f] for s, f in rows], len(rows)) if with_context else None
        words = model.text_features(reranker.tokenizer.encode(captions).ids, context)
        return torch.sigmoid(model.text_names(words))

    truth = cast(plain, with_context=True)
    print(f"{len(rows)} pronoun captions of {args.split} (scorer context: {model.config.context} captions)")
    for name, with_context in (("with the earlier captions", True), ("alone", False)):
        read = cast(pronoun, with_context)
        same = ((read > 0.5) == (truth > 0.5)).all(1).float().mean()
        distance = (read - truth).abs().sum(1).mean()
        print(f"{name:26s} same cast as plain {same:.3f}; mean summed |p - p_plain| {distance:.3f}")


if __name__ == "__main__":
    main()
