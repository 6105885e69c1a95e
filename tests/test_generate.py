"""`storyviz generate` end to end with a tiny DALL-E bundle trained here, the DALL-E pipeline, and story output."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from storyviz.cli.main import main
from storyviz.data.build import build
from storyviz.data.codes import tokenize_dataset
from storyviz.image_tokenizers.vqgan import PRESETS as VQGAN_PRESETS
from storyviz.image_tokenizers.vqgan import VQGAN
from storyviz.output import StoryFileError, read_captions_file, read_source_frame, story_strip
from storyviz.pipelines.base import SamplingOptions, StoryRequest, load_pipeline
from storyviz.pipelines.dalle import DallePipeline, GenerationError
from storyviz.sampling import Engine, SamplingConfig
from storyviz.training.loop import train
from storyviz.training.tasks.dalle import DalleTask

CAPTIONS = ["generate image of 3 in red", "generate image of 7 in blue"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("generate")
    build("digits", root / "digits", 16, size=16, seed=0)
    torch.manual_seed(0)
    VQGAN(VQGAN_PRESETS["tiny"]).save_pretrained(root / "vqgan")
    tokenize_dataset(root / "vqgan", root / "digits", root / "codes")
    model_config = DalleTask.model_presets["tiny"].replace(codes=str(root / "codes"))
    model_config = model_config.replace(model=model_config.model.replace(text_len=12))
    train_config = DalleTask.train_presets["tiny"].replace(steps=3)
    return train("dalle", model_config, train_config, str(root / "digits"), root / "run")


def generate(capsys, *args: str) -> tuple[int, str]:
    code = main(["--quiet", "generate", *args])
    return code, capsys.readouterr().err


def test_story_files_and_reproducibility(bundle, tmp_path, capsys):
    captions_file = tmp_path / "story.txt"
    captions_file.write_text(CAPTIONS[1] + "\n\n")
    out = tmp_path / "story"
    args = ["--model", str(bundle), "--caption", CAPTIONS[0], "--captions", str(captions_file), "--seed", "5"]
    code, err = generate(capsys, *args, "--out", str(out))
    assert code == 0, err
    assert sorted(path.name for path in out.iterdir()) == [
        "frame_01.png", "frame_02.png", "story.gif", "story.json", "story.png"]  # fmt: skip
    record = json.loads((out / "story.json").read_text())
    assert record["captions"] == CAPTIONS and record["seed"] == 5 and record["model"]["model_type"] == "dalle-bundle"
    assert record["sampling"]["top_k"] == 0 and record["command"]["options"]["caption"] == CAPTIONS[:1]
    assert [frame["caption"] for frame in record["frames"]] == CAPTIONS
    assert all(len(frame["codes"]) == 64 and min(frame["codes"]) >= 0 for frame in record["frames"])
    assert np.asarray(Image.open(out / "frame_01.png")).shape == (16, 16, 3)
    with Image.open(out / "story.gif") as gif:
        assert gif.n_frames == 2
    assert Image.open(out / "story.png").size[0] == 2 * 256 + 3 * 8

    # the same seed gives the same story; another seed another one
    code, _ = generate(capsys, *args, "--out", str(tmp_path / "again"))
    again = json.loads((tmp_path / "again" / "story.json").read_text())
    assert [f["codes"] for f in again["frames"]] == [f["codes"] for f in record["frames"]]
    for name in ("frame_01.png", "frame_02.png"):
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
    code, _ = generate(capsys, *args[:-1], "6", "--out", str(tmp_path / "other"))
    other = json.loads((tmp_path / "other" / "story.json").read_text())
    assert [f["codes"] for f in other["frames"]] != [f["codes"] for f in record["frames"]]

    # int8 weights: a story in the same layout, recorded as int8, the same again under the same seed
    for name in ("int8", "int8-again"):
        code, err = generate(capsys, *args, "--int8", "--out", str(tmp_path / name))
        assert code == 0, err
    int8, int8_again = (json.loads((tmp_path / name / "story.json").read_text()) for name in ("int8", "int8-again"))
    assert int8["model"]["weights"] == "int8" and "weights" not in record["model"]
    assert [f["codes"] for f in int8["frames"]] == [f["codes"] for f in int8_again["frames"]]
    assert all(len(frame["codes"]) == 64 for frame in int8["frames"])


def test_top_k_1_is_greedy_and_captions_files_in_every_format(bundle, tmp_path, capsys):
    story = {"captions": CAPTIONS, "source_caption": None}
    (tmp_path / "story.json").write_text(json.dumps(story))
    (tmp_path / "story.yaml").write_text("captions:\n  - " + CAPTIONS[0] + "\n  - " + CAPTIONS[1] + "\n")
    (tmp_path / "list.json").write_text(json.dumps(CAPTIONS))
    for name in ("story.json", "story.yaml", "list.json"):
        assert read_captions_file(tmp_path / name) == (CAPTIONS, None)
    code, err = generate(capsys, "--model", str(bundle), "--captions", str(tmp_path / "story.yaml"), "--top-k", "1",
                         "--seed", "1", "--out", str(tmp_path / "out"))  # fmt: skip
    assert code == 0, err
    pipeline = load_pipeline(bundle)
    greedy = Engine(pipeline.transformer).generate(pipeline.tokenizer.encode(CAPTIONS).ids, SamplingConfig(top_k=1))
    record = json.loads((tmp_path / "out" / "story.json").read_text())
    assert [frame["codes"] for frame in record["frames"]] == greedy.tokens[:, 0].tolist()


def test_user_errors_have_clear_messages(bundle, tmp_path, capsys):
    out = str(tmp_path / "out")
    code, err = generate(capsys, "--model", str(bundle), "--out", out)
    assert code == 2 and "no captions" in err
    code, err = generate(capsys, "--model", str(bundle), *["--caption", "a digit"] * 17, "--out", out)
    assert code == 2 and "17 captions" in err and "at most 16 frames" in err
    code, err = generate(capsys, "--model", str(tmp_path / "missing"), "--caption", "x", "--out", out)
    assert code == 2 and "missing" in err and "not found" in err
    old = tmp_path / "old-model"
    shutil.copytree(bundle, old)
    config = json.loads((old / "config.json").read_text())
    (old / "config.json").write_text(json.dumps({**config, "format_version": 99}))
    code, err = generate(capsys, "--model", str(old), "--caption", "x", "--out", out)
    assert code == 2 and "format_version 99" in err
    (tmp_path / "notes.png").write_text("not an image")
    model = ["--model", str(bundle), "--caption", "x", "--out", out]
    code, err = generate(capsys, *model, "--source-frame", str(tmp_path / "notes.png"))
    assert code == 2 and "notes.png: not an image" in err
    Image.new("RGB", (40, 24), "red").save(tmp_path / "source.jpg")
    code, err = generate(capsys, *model, "--source-frame", str(tmp_path / "source.jpg"))
    assert code == 2 and "takes no source frame" in err
    (tmp_path / "bad.yaml").write_text("captions: [1, 2]\n")
    code, err = generate(capsys, "--model", str(bundle), "--captions", str(tmp_path / "bad.yaml"), "--out", out)
    assert code == 2 and "bad.yaml: captions must be a list of strings" in err
    assert not (tmp_path / "out").exists()

    long = " ".join(["generate image of 3 in red and a texture background of stones"] * 3)
    code, err = generate(capsys, "--model", str(bundle), "--caption", long, "--caption", "x", "--out", out)
    assert code == 0 and err.count("warning: caption longer than the model's 12 text tokens, truncated") == 1
    assert json.loads((tmp_path / "out" / "story.json").read_text())["info"]["truncated"] == [long]


def test_candidates_scorer_and_source_reading(bundle, tmp_path):
    seen = []

    def brightest(captions, images, earlier):  # a frame scorer: prefers bright candidates
        seen.append((list(captions), earlier))
        return images.mean(dim=(2, 3, 4))

    pipeline = DallePipeline.from_pretrained(bundle, scorer=brightest)
    options = SamplingOptions(seed=2, candidates=3)
    steps = []
    (result,) = pipeline.generate(
        [StoryRequest(CAPTIONS[:1])], options, progress=lambda done, total: steps.append(done)
    )
    assert steps == list(range(1, 65)) and seen == [(CAPTIONS[:1], [[]])]
    candidates = result.info["candidates"][0]
    grid = pipeline.grid
    brightness = [float(pipeline.image_tokenizer.decode(torch.tensor([c]).view(1, *grid)).mean()) for c in candidates]
    assert len(candidates) == 3 and result.codes[0] == candidates[0]
    assert brightness == sorted(brightness, reverse=True) and brightness[0] > brightness[-1]
    assert result.info["scores"][0] == sorted(result.info["scores"][0], reverse=True)
    with pytest.raises(GenerationError, match="cannot continue a story from a source frame"):
        pipeline.generate([StoryRequest(["x"], source_frame=np.zeros((16, 16, 3), np.uint8))], options)

    Image.new("RGBA", (40, 24), (10, 200, 30, 128)).save(tmp_path / "odd.png")
    frame = read_source_frame(tmp_path / "odd.png")
    assert frame.shape == (24, 40, 3) and frame.dtype == np.uint8
    with pytest.raises(StoryFileError, match="source frame not found"):
        read_source_frame(tmp_path / "none.png")
    strip = np.asarray(story_strip(result.frames, result.captions, source_frame=frame, frame_px=64))
    assert strip.shape[1] == 2 * 64 + 3 * 8
    assert tuple(strip[6, 6]) == (200, 40, 40)  # the source frame's red border
    digest = hashlib.sha256((tmp_path / "odd.png").read_bytes()).hexdigest()
    assert len(digest) == 64


def test_model_sampling_defaults_and_command_line_changes(bundle, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(bundle, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "sampling": {"top_k": 1, "guidance": 2.0}}))
    assert load_pipeline(model).sampling == SamplingOptions(top_k=1, guidance=2.0)
    code, err = generate(capsys, "--model", str(model), "--caption", CAPTIONS[0], "--out", str(tmp_path / "a"))
    assert code == 0, err
    record = json.loads((tmp_path / "a" / "story.json").read_text())
    assert record["sampling"]["top_k"] == 1 and record["sampling"]["guidance"] == 2.0
    code, err = generate(
        capsys, "--model", str(model), "--caption", CAPTIONS[0], "--top-k", "5", "--out", str(tmp_path / "b")
    )
    record = json.loads((tmp_path / "b" / "story.json").read_text())
    assert code == 0 and record["sampling"]["top_k"] == 5 and record["sampling"]["guidance"] == 2.0

    (model / "config.json").write_text(json.dumps({**config, "sampling": {"top_kk": 1}}))
    code, err = generate(capsys, "--model", str(model), "--caption", CAPTIONS[0], "--out", str(tmp_path / "c"))
    assert code == 2 and "config.json: sampling" in err and "top_kk" in err
