"""`storyviz evaluate`: generate samples to disk with any model, then score the files.

    evaluate_model(model, data, split, out, ...)   generates `out/samples` (storyviz.evaluation.samples), then
                                                    scores them and writes report.json, report.md and grid.png
    evaluate_folder(samples, data, split, out)     scores frames written by any other program

Which frames are generated:
- story models that can continue a story (StoryDALL-E, ARLDM): frame 1 is the given source frame and frames
  2..L are generated (`task="continuation"`), or every frame from captions alone (`task="visualization"`);
- single-image models (DALL-E): every caption of the story (for digits, the one caption);
- image tokenizers (VQGAN, dVAE, ARLDM's VAE): reconstructions of every frame, so the same judges read them.
A model folder with an image tokenizer part (DALL-E and StoryDALL-E bundles) also gets the "reconstructed" row:
the real frames through that tokenizer, the most its frames can score.
The judge is the bundled `judge-<data set name>` unless one is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from storyviz.convert.bundle import read_bundle_config
from storyviz.data import open_dataset
from storyviz.evaluation.evaluate import Evaluation, evaluate_samples
from storyviz.evaluation.judges import MIN_ACCURACY, load_judge
from storyviz.evaluation.report import write_report
from storyviz.evaluation.samples import write_samples
from storyviz.image_tokenizers.vqgan import decode_each
from storyviz.pipelines import StoryRequest, load_pipeline
from storyviz.progress import progress
from storyviz.registry import DEFAULT_MODEL, load_model, resolve_model_dir
from storyviz.weights import read_weights_config

TOKENIZER_TYPES = ("vqgan", "dvae", "arldm-vae")


def pick_stories(count: int, stories: int | None, seed: int) -> list[int]:
    """The first `stories` indices of a seeded permutation of the split (all of them when None)."""
    order = np.random.default_rng(seed).permutation(count)
    return sorted(order[: stories or count].tolist())


def generate_samples(
    model: str | Path | None,
    data_path: str | Path,
    split: str,
    out: Path,
    indices: list[int],
    sampling: dict[str, Any] | None = None,
    captions: Literal["plain", "pronoun"] = "plain",
    task: Literal["continuation", "visualization"] = "continuation",
    batch_stories: int = 8,
    int8: bool = False,
    scorer: str | Path | None = None,
) -> Path:
    """Generates the frames of the chosen stories with `model` and writes them as a samples folder; `sampling`
    changes the model's sampling defaults (`StoryPipeline.sampling`); `int8` loads a token model with int8 weights;
    `scorer` re-ranks a token model's candidates (`load_pipeline`)."""
    data = open_dataset(data_path)
    stories = data.split(split)
    model_type = read_weights_config(resolve_model_dir(model))["model_type"]
    records = []
    if model_type in TOKENIZER_TYPES:
        if int8 or scorer is not None:
            raise ValueError(f"{model}: an image tokenizer has no int8 form and no candidates to re-rank")
        tokenizer = load_model(model).eval()
        for index in progress(indices, desc="reconstruct", unit="story"):
            story = stories[index]
            records.append(_record(story, index, captions, _reconstruct(tokenizer, story["frames"])))
        return write_samples(out, records, data.meta["name"], split)
    pipeline = load_pipeline(model, int8=int8, scorer=scorer)
    options = pipeline.sampling.replace(**(sampling or {}))
    continuation = task == "continuation" and pipeline.supports_continuation and data.meta["frames_per_story"] > 1
    bar = progress(total=len(indices), desc="generate", unit="story")
    for start in range(0, len(indices), batch_stories):
        batch = [stories[index] for index in indices[start : start + batch_stories]]
        requests = []
        for story in batch:
            text = _captions(story, captions)
            if continuation:
                requests.append(StoryRequest(text[1:], source_frame=story["frames"][0], source_caption=text[0]))
            else:
                requests.append(StoryRequest(text))
        results = pipeline.generate(requests, options.replace(seed=options.seed + start))
        for story, index, result in zip(batch, indices[start : start + batch_stories], results):
            frames = np.stack([_resize(frame, story["frames"].shape[1]) for frame in result.frames])
            if continuation:
                frames = np.concatenate([story["frames"][:1], frames])
            records.append(_record(story, index, captions, frames, skip_first=continuation))
        bar.update(len(batch))
    bar.close()
    made_with = {"model": str(model or DEFAULT_MODEL), "task": "continuation" if continuation else "visualization"}
    made_with |= {"captions": captions, "sampling": options.to_dict()} | ({"weights": "int8"} if int8 else {})
    if "scorer" in (described := pipeline.describe()):
        made_with["scorer"] = described["scorer"]
    return write_samples(out, records, data.meta["name"], split, made_with)


def bundle_image_tokenizer(model: str | Path | None) -> Path | None:
    """The image tokenizer folder of a bundle (its "image_tokenizer" part), or None for other models."""
    directory = resolve_model_dir(model)
    if not read_weights_config(directory)["model_type"].endswith("-bundle"):
        return None
    part = read_bundle_config(directory)["config"]["parts"].get("image_tokenizer")
    return None if part is None else directory / part


def reconstructions(tokenizer_dir: str | Path, batch: int = 64):
    """A function: (real frames uint8 (N, H, W, 3), their reference frames (H, W, 3) or None) -> the tokenizer's
    reconstructions of them, in batches (references are read only by a decoder that reads them)."""
    tokenizer = load_model(tokenizer_dir).eval()

    def reconstruct(frames: np.ndarray, references: list) -> np.ndarray:
        parts = [
            _reconstruct(tokenizer, frames[start : start + batch], references[start : start + batch])
            for start in range(0, len(frames), batch)
        ]
        return np.concatenate(parts)

    return reconstruct


def _captions(story: dict[str, Any], version: str) -> list[str]:
    return story["captions_pronoun"] if version == "pronoun" and story["captions_pronoun"] else story["captions"]


def _record(story, index, version, frames, skip_first=False) -> dict[str, Any]:
    generated = [not (skip_first and frame == 0) for frame in range(len(frames))]
    return {
        "story_index": index,
        "story_id": story["story_id"],
        "captions": _captions(story, version),
        "generated": generated,
        "frames": frames,
    }


def _resize(frame: np.ndarray, size: int) -> np.ndarray:
    if frame.shape[0] == size and frame.shape[1] == size:
        return frame
    from PIL import Image

    return np.asarray(Image.fromarray(frame).resize((size, size), Image.Resampling.BICUBIC))


def _images(frames) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.stack(frames))).permute(0, 3, 1, 2).float().div(127.5).sub(1)


@torch.inference_mode()
def _reconstruct(tokenizer: torch.nn.Module, frames: np.ndarray, references: list | None = None) -> np.ndarray:
    """frames uint8 (N, H, W, 3) -> decode(encode(frames)); a decoder that reads a reference frame reads frame 0
    of each story (`_record` order) or, when given, `references` (each (H, W, 3) or None)."""
    references = [None, *[frames[0]] * (len(frames) - 1)] if references is None else references
    codes = tokenizer.encode(_images(frames))  # every first stage has encode / decode
    images = {id(r): _images([r])[0] for r in references if r is not None}  # a shared frame converted once
    decoded = decode_each(tokenizer, codes, [None if r is None else images[id(r)] for r in references])
    return ((decoded.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def evaluate_folder(
    samples: str | Path,
    data_path: str | Path,
    split: str | None,
    out: str | Path,
    judge: str | Path | None = None,
    inception: bool = True,
    seed: int = 0,
    judge_min_accuracy: float = MIN_ACCURACY,
    image_tokenizer: str | Path | None = None,
) -> Evaluation:
    """Scores a samples folder and writes the report into `out`; with `image_tokenizer` (a tokenizer folder), also
    the "reconstructed" row."""
    data = open_dataset(data_path)
    judge = judge or f"judge-{data.meta['name']}"
    loaded = load_judge(judge, min_accuracy=judge_min_accuracy)
    reconstruct = None if image_tokenizer is None else reconstructions(image_tokenizer)
    evaluation = evaluate_samples(
        samples, data, split, judge=loaded, inception=inception, seed=seed, reconstruct=reconstruct
    )
    evaluation.info["judge_source"] = str(judge)
    evaluation.info["judge_min_accuracy"] = judge_min_accuracy
    write_report(evaluation, out)
    return evaluation


def evaluate_model(
    model: str | Path | None,
    data_path: str | Path,
    split: str,
    out: str | Path,
    stories: int | None = None,
    seed: int = 0,
    sampling: dict[str, Any] | None = None,
    captions: Literal["plain", "pronoun"] = "plain",
    task: Literal["continuation", "visualization"] = "continuation",
    judge: str | Path | None = None,
    inception: bool = True,
    judge_min_accuracy: float = MIN_ACCURACY,
    int8: bool = False,
    scorer: str | Path | None = None,
) -> Evaluation:
    """Generates samples of `stories` stories of the split (seeded choice), then scores them (see module doc).
    `seed` picks the stories and seeds the sampling; `sampling` changes the model's other sampling defaults;
    `int8` loads a token model with int8 weights; `scorer` re-ranks its candidates."""
    out = Path(out)
    data = open_dataset(data_path)
    indices = pick_stories(len(data.split(split)), stories, seed)
    sampling = {**(sampling or {}), "seed": seed}
    samples = generate_samples(
        model, data_path, split, out / "samples", indices, sampling, captions, task, int8=int8, scorer=scorer
    )
    return evaluate_folder(
        samples, data_path, split, out, judge, inception, seed, judge_min_accuracy, bundle_image_tokenizer(model)
    )
