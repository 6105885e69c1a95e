"""The judge model, its training task, the held-out accuracy bar, and scoring a samples folder (tiny, real data)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from storyviz.data import open_dataset
from storyviz.data.build import build
from storyviz.evaluation.evaluate import derangement, evaluate_samples, shuffled_stories
from storyviz.evaluation.judges import JudgeError, certify_judge, judge_frames, load_judge
from storyviz.evaluation.report import write_report
from storyviz.evaluation.samples import SamplesError, write_samples
from storyviz.models.judge import PRESETS, Judge, JudgeConfig, JudgeHead
from storyviz.registry import load_model
from storyviz.training.tasks.judge import JudgeTask, augment, judge_loss, train_judge, warp

HEADS = (
    JudgeHead(name="characters", type="multi", classes=("a", "b", "c")),
    JudgeHead(name="left.body", type="single", classes=("none", "round", "tall")),
)


@pytest.fixture(scope="module")
def sprites(tmp_path_factory):
    return build("sprites", tmp_path_factory.mktemp("data") / "sprites", count=20, size=64)["path"]


@pytest.fixture(scope="module")
def trained(sprites, tmp_path_factory):
    """A tiny judge trained for 20 steps with the training loop, then certified on val."""
    run = tmp_path_factory.mktemp("run") / "judge"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model on a shared 2-core machine: one thread is several times faster
    try:
        return train_judge(str(sprites), str(run), preset="tiny", steps=20)
    finally:
        torch.set_num_threads(threads)


def test_judge_shapes_and_predictions():
    torch.manual_seed(0)
    judge = Judge(PRESETS["tiny"].replace(heads=HEADS)).eval()
    images = torch.rand(5, 3, 32, 32) * 2 - 1
    logits = judge(images)
    assert {name: tuple(value.shape) for name, value in logits.items()} == {"characters": (5, 3), "left.body": (5, 3)}
    assert judge.features(images).shape == (5, PRESETS["tiny"].feature_dim)
    predictions = judge.predict(images)
    assert torch.equal(predictions["characters"], (torch.sigmoid(logits["characters"]) >= 0.5).to(torch.uint8))
    assert torch.equal(predictions["left.body"], logits["left.body"].argmax(-1))
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\)"):
        judge(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="heads is empty"):
        Judge(PRESETS["tiny"])
    with pytest.raises(ValueError, match="duplicate"):
        JudgeConfig(heads=HEADS + HEADS[:1])


def test_save_load_round_trip(tmp_path):
    judge = Judge(PRESETS["tiny"].replace(heads=HEADS)).eval()
    judge.save_pretrained(tmp_path / "judge")
    loaded = load_model(tmp_path / "judge").eval()  # the registry knows model_type "judge"
    assert loaded.config == judge.config  # a judge describes its heads and classes
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    for name, value in judge(images).items():
        assert torch.equal(value, loaded(images)[name])


def test_loss_ignores_unknown_labels_and_augment_keeps_shape():
    config = PRESETS["tiny"].replace(heads=HEADS)
    logits = {"characters": torch.zeros(2, 3), "left.body": torch.tensor([[5.0, 0, 0], [0, 0, 0]])}
    labels = {"characters": torch.tensor([[1.0, 0, 255], [0, 0, 1]]), "left.body": torch.tensor([0, -1])}
    loss, logs = judge_loss(logits, labels, config)
    expected_ce = -torch.log_softmax(torch.tensor([5.0, 0, 0]), 0)[0]
    assert logs["loss/left.body"] == pytest.approx(expected_ce.item(), rel=1e-5)
    assert logs["loss/characters"] == pytest.approx(np.log(2), rel=1e-5)  # 5 known entries, all logits 0
    assert loss.item() == pytest.approx(expected_ce.item() + np.log(2), rel=1e-5)
    torch.manual_seed(0)
    images = torch.rand(4, 3, 64, 64) * 2 - 1
    moved = augment(images)
    assert moved.shape == images.shape and moved.min() >= -1 and moved.max() <= 1
    # a shift of at most 2 px and faint noise: the image stays close to the original, never mirrored
    assert (moved - images).abs().mean() < (images.flip(-1) - images).abs().mean()
    # warp (data without screen positions) is the identity at zero strength and moves pixels otherwise
    assert torch.allclose(warp(images, degrees=0, scale=0, move=0), images, atol=1e-5)
    assert not torch.allclose(warp(images), images, atol=1e-2)


def test_task_takes_heads_from_the_data(sprites):
    task = JudgeTask(PRESETS["tiny"], str(sprites))
    meta = open_dataset(sprites).meta
    assert [head.name for head in task.model_config.heads] == list(meta["labels"])
    assert task.model_config.image_size == meta["image_size"]
    assert not task.position_free  # sprites heads label left / centre / right: no warp
    item = task.dataset("train")[7]
    assert item["image"].shape == (3, 64, 64) and item["labels"]["characters"].dtype == torch.float32


def test_trained_judge_is_certified_and_the_bar_is_enforced(trained, sprites, tmp_path):
    model_dir, accuracy = trained
    stored = json.loads((model_dir / "config.json").read_text())
    assert stored["heldout_accuracy"] == accuracy and stored["heldout_split"] == "val"
    assert set(accuracy) == set(open_dataset(sprites).meta["labels"])
    assert all(0.0 <= value <= 1.0 for value in accuracy.values())
    worst = next(name for name in accuracy if accuracy[name] < 0.98)  # heads are checked in config order
    with pytest.raises(JudgeError, match=rf"head {worst!r} has held-out accuracy {accuracy[worst]:.4f}"):
        load_judge(model_dir)  # 20 tiny steps are far from 98%
    judge = load_judge(model_dir, min_accuracy=0.0)
    # a judge without stored accuracy is refused
    judge.save_pretrained(tmp_path / "bare")
    with pytest.raises(JudgeError, match="no held-out accuracy stored"):
        load_judge(tmp_path / "bare", min_accuracy=0.0)
    # certify_judge stores the setting accuracy of what judge_frames predicts on the first 3 val stories
    data = open_dataset(sprites)
    accuracy = certify_judge(tmp_path / "bare", data, "val", limit=3)
    stories = [data.split("val")[i] for i in range(3)]
    predictions, _ = judge_frames(judge, np.concatenate([story["frames"] for story in stories]))
    truth = np.concatenate([story["labels"]["setting"] for story in stories])
    assert accuracy["setting"] == pytest.approx(np.mean(predictions["setting"] == truth))
    assert load_judge(tmp_path / "bare", min_accuracy=0.0).config == judge.config


def copy_as_samples(data, split, directory, count, frames=(1, 2, 3, 4)):
    stories = []
    for index in range(count):
        story = data.split(split)[index]
        generated = [frame in frames for frame in range(len(story["frames"]))]
        stories.append({**story, "story_index": index, "generated": generated})
    return write_samples(directory, stories, data.meta["name"], split)


def test_real_frames_as_samples_score_like_the_real_row(trained, sprites, tmp_path):
    model_dir, _ = trained
    judge = load_judge(model_dir, min_accuracy=0.0)
    data = open_dataset(sprites)
    samples = copy_as_samples(data, "test", tmp_path / "samples", count=8)
    assert sorted(path.name for path in samples.glob("00000_*.png")) == [f"00000_0{j}.png" for j in (1, 2, 3, 4)]
    evaluation = evaluate_samples(samples, data, judge=judge, inception=False, seed=3)
    generated, real, shuffled = (evaluation.rows[row] for row in ("generated", "real", "shuffled"))
    for name in ("char_f1", "frame_acc", "setting_acc", "appearance_consistency"):
        assert generated[name] == real[name]
    assert generated["fid_judge"] == pytest.approx(0.0, abs=1e-6)
    assert evaluation.info["shuffled_from"] == "other stories"  # 12 of the 20 test stories are not evaluated
    assert shuffled["fid_judge"] > 0 and "fid_judge" not in real
    assert set(evaluation.by_frame["generated"]) == {2, 3, 4, 5}
    # the generated row, recomputed by hand from the judge's predictions on the frames
    frames = np.concatenate([data.split("test")[i]["frames"][1:] for i in range(8)])
    predictions, _ = judge_frames(judge, frames)
    truth = np.concatenate([data.split("test")[i]["labels"]["setting"][1:] for i in range(8)])
    assert generated["setting_acc"] == pytest.approx(np.mean(predictions["setting"] == truth))

    out = write_report(evaluation, tmp_path / "report")
    report = json.loads((out / "report.json").read_text())
    assert set(report) >= {"generated", "real", "shuffled", "by_frame", "info"}
    assert report["generated"]["char_f1"] == generated["char_f1"]
    assert "| shuffled |" in (out / "report.md").read_text()
    with Image.open(out / "grid.png") as grid:
        assert grid.height == 4 * (2 * 64 + 12)


def test_digits_rows_and_a_random_judge(tmp_path):
    """The digits set: one frame per "story", digit/colour/background accuracies, no per-position table."""
    path = build("digits", tmp_path / "digits", count=20, size=32)["path"]
    data = open_dataset(path)
    torch.manual_seed(0)
    config = PRESETS["tiny"].replace(image_size=32, heads=JudgeConfig.heads_from_meta(data.meta["labels"]))
    Judge(config).save_pretrained(tmp_path / "judge")
    accuracy = certify_judge(tmp_path / "judge", data, "val")
    assert set(accuracy) == {"digit", "colour", "background"}
    judge = load_judge(tmp_path / "judge", min_accuracy=0.0)
    samples = copy_as_samples(data, "test", tmp_path / "samples", count=10, frames=(0,))
    evaluation = evaluate_samples(samples, data, judge=judge, inception=False)
    generated = evaluation.rows["generated"]
    assert set(generated) == {"digit_acc", "color_acc", "background_acc", "judge_agreement", "fid_judge"}
    assert generated["digit_acc"] == evaluation.rows["real"]["digit_acc"]
    assert generated["judge_agreement"] == 1.0  # the samples are the real frames
    assert evaluation.by_frame["generated"] == {} and "reconstructed" not in evaluation.rows
    # a "reconstruct" function adds the reconstructed row: a lossless one reads like the real frames
    lossless = evaluate_samples(
        samples, data, judge=judge, inception=False, reconstruct=lambda frames, firsts: frames.copy()
    )
    reconstructed = lossless.rows["reconstructed"]
    assert set(reconstructed) == {"digit_acc", "color_acc", "background_acc", "judge_agreement"}
    assert reconstructed["judge_agreement"] == 1.0 and lossless.rows["generated"] == generated
    assert {name: reconstructed[name] for name in evaluation.rows["real"]} == evaluation.rows["real"]
    with pytest.raises(ValueError, match="reconstruct returned"):
        evaluate_samples(samples, data, judge=judge, inception=False, reconstruct=lambda frames, firsts: frames[:1])


@pytest.mark.slow
def test_fid_inception_row(sprites, tmp_path):
    """Real frames as samples: fid_inception 0, the shuffled row's positive (minutes: 2048-d sqrtm)."""
    data = open_dataset(sprites)
    samples = copy_as_samples(data, "test", tmp_path / "samples", count=6)
    evaluation = evaluate_samples(samples, data, judge=None, inception=True)
    assert evaluation.rows["generated"]["fid_inception"] == pytest.approx(0.0, abs=1e-3)
    assert evaluation.rows["shuffled"]["fid_inception"] > 1.0
    assert evaluation.info["fid_inception"].startswith("fid_inception@64")
    assert "fid_inception@64" in (write_report(evaluation, tmp_path / "report") / "report.md").read_text()


def test_samples_must_match_the_data(sprites, tmp_path):
    data = open_dataset(sprites)
    samples = copy_as_samples(data, "test", tmp_path / "samples", count=2)
    with pytest.raises(SamplesError, match="another split or data set"):
        evaluate_samples(samples, data, split="val", inception=False)
    (samples / "00001_02.png").unlink()
    with pytest.raises(SamplesError, match="00001_02.png: missing"):
        evaluate_samples(samples, data, inception=False)


def test_derangement_has_no_fixed_point():
    for seed in range(20):
        order = derangement(7, seed)
        assert sorted(order) == list(range(7)) and not np.any(order == np.arange(7))
    with pytest.raises(ValueError, match="at least 2"):
        derangement(1, 0)
    evaluated = [3, 5, 7, 9]
    others, source = shuffled_stories(evaluated, total=10, seed=0)
    assert source == "other stories" and len(set(others)) == 4 and not set(others) & set(evaluated)
    evaluated = [1, 2, 3, 4]
    order, source = shuffled_stories(evaluated, total=6, seed=0)  # only 2 other stories: a derangement
    assert source == "derangement" and sorted(order) == evaluated
    assert all(a != b for a, b in zip(order, evaluated))
