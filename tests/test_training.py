"""The training loop in one process: schedule, EMA, sampler, run folder, resume, corruption, NaN, extras, CLI."""

import dataclasses
import json
import math
import os
import random
import re
import shutil
import signal

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from storyviz.cli.main import main
from storyviz.config import Config, ConfigError
from storyviz.models.toy import ToyConfig, ToyModel
from storyviz.registry import load_model
from storyviz.training.checkpoint import list_checkpoints, read_checkpoint, rng_state, set_rng_state
from storyviz.training.configure import resolve_run, split_overrides
from storyviz.training.distributed import ResumableBatchSampler
from storyviz.training.ema import EMA
from storyviz.training.loop import NonFiniteLoss, TrainingInterrupted, build_optimizer, export_checkpoint, train
from storyviz.training.monitor import read_metrics
from storyviz.training.schedule import lr_at
from storyviz.training.task import TrainConfig
from storyviz.training.tasks.toy import ToyTask

MODEL = ToyConfig(image_size=8, hidden=8)
FAST = TrainConfig(steps=10, batch_size=8, lr=1e-2, warmup_steps=2, log_every=1, checkpoint_every=5, keep_checkpoints=5)


class NoisyToyTask(ToyTask):
    """The toy task plus every source of randomness (torch, numpy, python) and a trained extra module."""

    def build_extras(self):
        return {"probe": nn.Linear(self.model_config.num_classes, 1)}

    def loss(self, model, batch, step, extras):
        images = batch["images"] + 0.1 * torch.randn_like(batch["images"])
        images = images * float(np.random.uniform(0.9, 1.1)) * random.uniform(0.9, 1.1)
        loss, numbers = super().loss(model, {**batch, "images": images}, step, extras)
        return loss + 0.01 * extras["probe"](model(images)).pow(2).mean(), numbers


class HeadOnlyTask(ToyTask):
    """Prompt-tuning style: the optimiser updates only the classifier head."""

    def trainable_parameters(self, model, extras):
        return list(model.head.parameters())


class CtrlCTask(ToyTask):
    """The toy task that sends this process a real SIGINT during step index 3 (the fourth step)."""

    def loss(self, model, batch, step, extras):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return super().loss(model, batch, step, extras)


def weights(folder):
    return load_file(str(folder / "model.safetensors"))


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def comparable(rows):
    return [{k: v for k, v in row.items() if not k.endswith("per_second")} for row in rows]


# ---- pure parts: hand-computed values ----


def test_schedule_warmup_then_cosine_hand_values():
    values = {step: lr_at(step, lr=1.0, warmup_steps=4, total_steps=14, min_lr_ratio=0.1) for step in range(20)}
    assert values[0] == pytest.approx(1 / 5) and values[3] == pytest.approx(4 / 5)
    assert values[4] == pytest.approx(1.0)  # cosine starts at the peak
    assert values[9] == pytest.approx(0.1 + 0.9 * 0.5)  # half way: cos(pi / 2) = 0
    assert values[6] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.2)))
    assert values[14] == pytest.approx(0.1) and values[19] == pytest.approx(0.1)  # clamped at the end
    assert lr_at(0, lr=2.0, warmup_steps=0, total_steps=10, min_lr_ratio=0.0) == pytest.approx(2.0)


def test_ema_hand_values():
    layer = nn.Linear(1, 1)
    with torch.no_grad():
        layer.weight.fill_(1.0)
        layer.bias.fill_(0.0)
    ema = EMA(layer, decay=0.9)
    with torch.no_grad():
        layer.weight.fill_(2.0)
    ema.update(layer)  # 0.9 * 1 + 0.1 * 2
    assert ema.shadow["weight"].item() == pytest.approx(1.1)
    with torch.no_grad():
        layer.weight.fill_(3.0)
        layer.bias.fill_(1.0)
    ema.update(layer)  # 0.9 * 1.1 + 0.1 * 3, bias 0.9 * 0 + 0.1 * 1
    assert ema.shadow["weight"].item() == pytest.approx(1.29)
    assert ema.shadow["bias"].item() == pytest.approx(0.1)
    target = nn.Linear(1, 1)
    ema.copy_to(target)
    assert target.weight.item() == pytest.approx(1.29) and target.bias.item() == pytest.approx(0.1)
    with pytest.raises(ValueError, match="ema_decay"):
        EMA(layer, decay=1.0)


def test_sampler_splits_one_stream_and_resumes_without_reading():
    def take(sampler, n):
        iterator = iter(sampler)
        return [next(iterator) for _ in range(n)]

    single = take(ResumableBatchSampler(10, micro_batch=4, seed=3), 6)  # 24 items: crosses two epochs
    stream = [i for batch in single for i in batch]
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))
    assert stream[:10] != stream[10:20]  # a new permutation each epoch
    rank0 = take(ResumableBatchSampler(10, micro_batch=2, rank=0, world_size=2, seed=3), 6)
    rank1 = take(ResumableBatchSampler(10, micro_batch=2, rank=1, world_size=2, seed=3), 6)
    assert [i for a, b in zip(rank0, rank1) for i in a + b] == stream
    resumed = take(ResumableBatchSampler(10, micro_batch=4, seed=3, start=8), 4)
    assert [i for batch in resumed for i in batch] == stream[8:24]
    assert take(ResumableBatchSampler(10, micro_batch=4, seed=4), 1) != single[:1]


def test_rng_state_round_trip_survives_weights_only_save(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    torch.save(rng_state(), tmp_path / "rng.pt")
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_weight_decay_only_on_matrices():
    model = ToyModel(MODEL)
    optimizer = build_optimizer(list(model.parameters()), FAST)
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == FAST.weight_decay and plain["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decayed["params"]) and all(p.ndim < 2 for p in plain["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))


# ---- configuration ----


def test_overrides_are_sorted_into_model_and_train():
    model_items, train_items = split_overrides(["model.hidden=4", "lr=0.5", "num_classes=3"], MODEL, FAST)
    assert model_items == ["hidden=4", "num_classes=3"] and train_items == ["lr=0.5"]

    @dataclasses.dataclass(frozen=True)
    class Seeded(Config):
        seed: int = 0

    with pytest.raises(ConfigError, match="model.seed or train.seed"):
        split_overrides(["seed=1"], Seeded(), FAST)
    with pytest.raises(ConfigError, match="no such field"):
        split_overrides(["colour=1"], MODEL, FAST)


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="divide by"):
        train("toy", MODEL, FAST.replace(batch_size=6, grad_accum=4), "synthetic", tmp_path / "a")
    with pytest.raises(ConfigError, match="synthetic"):
        train("toy", MODEL, FAST, "somewhere/else", tmp_path / "b")
    with pytest.raises(ConfigError, match="--preset is required"):
        resolve_run("toy", None, "synthetic", tmp_path / "c")
    with pytest.raises(ConfigError, match="unknown toy model preset"):
        resolve_run("toy", "huge", "synthetic", tmp_path / "c")


# ---- whole runs ----


def test_run_folder_layout(tmp_path):
    run = tmp_path / "run"
    config = FAST.replace(steps=12, log_every=5, checkpoint_every=4, keep_checkpoints=2, ema_decay=0.5, sample_every=6)
    out = train("toy", MODEL, config, "synthetic", run, preset="tiny")
    assert out == run / "model"
    info = json.loads((run / "run.json").read_text())
    assert info["task"] == "toy" and info["preset"] == "tiny" and info["world_size"] == 1
    assert TrainConfig.from_dict(info["train"]) == config and ToyConfig.from_dict(info["model"]) == MODEL
    rows = read_metrics(run)
    assert [row["step"] for row in rows] == [5, 10, 12]  # the last line is the final step
    assert all(math.isfinite(row["loss"]) and row["lr"] > 0 and row["items_per_second"] > 0 for row in rows)
    assert [step for step, _ in list_checkpoints(run)] == [8, 12]  # keep_checkpoints=2
    checkpoint = read_checkpoint(run / "checkpoints" / "step-0000012")  # weights_only=True inside
    assert checkpoint.state["data_position"] == 12 * config.batch_size
    exported = load_model(out)
    assert isinstance(exported, ToyModel)
    # the export holds the EMA weights, the checkpoint the raw ones
    assert_same_weights(weights(out), {k: v.float() for k, v in checkpoint.state["ema"].items()})
    assert not torch.equal(weights(out)["head.weight"], checkpoint.model_state["head.weight"])
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert {"train/loss", "train/lr", "throughput/items_per_second"} <= set(events.Tags()["scalars"])
    assert [event.step for event in events.Scalars("train/loss")] == [5, 10, 12]
    assert [event.step for event in events.Images("samples")] == [6, 12]
    with pytest.raises(ConfigError, match="--resume"):
        train("toy", MODEL, config, "synthetic", run)


def test_resume_continues_exactly_with_every_rng_and_extras(tmp_path):
    config = FAST.replace(ema_decay=0.8)
    full = tmp_path / "full"
    train(NoisyToyTask, MODEL, config, "synthetic", full)
    broken = tmp_path / "broken"
    shutil.copytree(full, broken)
    shutil.rmtree(broken / "checkpoints" / "step-0000010")
    shutil.rmtree(broken / "model")
    torch.manual_seed(999), np.random.seed(999), random.seed(999)  # the resumed process's own RNG state
    train(NoisyToyTask, MODEL, config, "synthetic", broken, resume=True)
    assert_same_weights(weights(full / "model"), weights(broken / "model"))
    a, b = (read_checkpoint(run / "checkpoints" / "step-0000010").state for run in (full, broken))
    assert_same_weights(a["extras"]["probe"], b["extras"]["probe"])
    assert "probe.weight" not in weights(full / "model")  # extras are not exported
    assert comparable(read_metrics(full)) == comparable(read_metrics(broken))  # lines past step 5 were replaced


def test_steps_on_resume(tmp_path):
    run = tmp_path / "run"
    train("toy", MODEL, FAST.replace(steps=6), "synthetic", run)
    spec = resolve_run("toy", None, None, run, ["train.log_every=2"], steps=9, resume=True)
    assert spec.train_config.steps == 9 and spec.data == "synthetic" and spec.preset is None
    train(spec.task, spec.model_config, spec.train_config, spec.data, run, resume=True)
    assert [row["step"] for row in read_metrics(run)] == [1, 2, 3, 4, 5, 6, 8, 9]
    assert list_checkpoints(run)[-1][0] == 9
    assert json.loads((run / "run.json").read_text())["train"]["steps"] == 9
    with pytest.raises(ConfigError, match="past the requested steps=4"):
        train("toy", MODEL, FAST.replace(steps=4), "synthetic", run, resume=True)


def test_init_from_starts_a_new_run_from_trained_weights(tmp_path):
    first = tmp_path / "first"
    train("toy", MODEL, FAST.replace(steps=5), "synthetic", first)
    trained = weights(first / "model")
    # at lr 0 the new run's exported model is exactly the weights it started from
    second = tmp_path / "second"
    train("toy", MODEL, FAST.replace(steps=1, lr=0.0, init_from=str(first / "model")), "synthetic", second)
    assert_same_weights(trained, weights(second / "model"))
    # a fresh run of the same seed starts elsewhere, so the weights above came from init_from
    fresh = tmp_path / "fresh"
    train("toy", MODEL, FAST.replace(steps=1, lr=0.0), "synthetic", fresh)
    assert any(not torch.equal(trained[k], v) for k, v in weights(fresh / "model").items())
    with pytest.raises(ConfigError, match=r"init_from .*fields \['hidden'\]"):
        train("toy", MODEL.replace(hidden=4), FAST.replace(init_from=str(first / "model")), "synthetic", tmp_path / "x")


def test_export_checkpoint_equals_the_runs_own_export(tmp_path, capsys):
    run = tmp_path / "run"
    train("toy", MODEL, FAST.replace(ema_decay=0.8), "synthetic", run)  # checkpoints at 5 and 10; EMA exported
    assert main(["export", str(run), "--out", str(tmp_path / "newest")]) == 0
    assert_same_weights(weights(run / "model"), weights(tmp_path / "newest"))
    earlier = export_checkpoint(run, tmp_path / "five", "step-0000005")
    assert json.loads((earlier / "config.json").read_text())["training_step"] == 5
    assert any(not torch.equal(v, weights(run / "model")[k]) for k, v in weights(earlier).items())
    capsys.readouterr()
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "no run.json" in capsys.readouterr().err


def test_corrupt_newest_checkpoint_falls_back_with_a_warning(tmp_path, capsys):
    run = tmp_path / "run"
    train("toy", MODEL, FAST.replace(steps=8, checkpoint_every=4), "synthetic", run)  # checkpoints at 4 and 8
    finished = weights(run / "model")
    state = run / "checkpoints" / "step-0000008" / "training_state.pt"
    state.write_bytes(state.read_bytes()[:100])  # a torn write
    capsys.readouterr()
    train("toy", MODEL, FAST.replace(steps=8, checkpoint_every=4), "synthetic", run, resume=True)
    err = capsys.readouterr().err
    assert "warning" in err and "step-0000008" in err and "unusable" in err
    assert_same_weights(finished, weights(run / "model"))  # resumed from step 4 and redid steps 5-8


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    run = tmp_path / "run"
    config = FAST.replace(steps=20, lr=1e30, grad_clip=0.0, warmup_steps=0, checkpoint_every=1)
    with pytest.raises(NonFiniteLoss, match=r"at step (\d+)") as info:
        train("toy", MODEL, config, "synthetic", run)
    bad_step = int(re.search(r"at step (\d+)", str(info.value)).group(1))
    assert 1 < bad_step < 20
    assert max(row["step"] for row in read_metrics(run)) == bad_step - 1
    last_step, last = list_checkpoints(run)[-1]
    assert last_step == bad_step - 1 and f"step-{last_step:07d}" in str(info.value)
    assert all(torch.isfinite(tensor).all() for tensor in read_checkpoint(last).model_state.values())
    assert not (run / "model").exists()


def test_sigint_finishes_the_step_saves_and_resume_completes_the_same_run(tmp_path):
    reference, run = tmp_path / "reference", tmp_path / "run"
    train("toy", MODEL, FAST, "synthetic", reference)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted, match="SIGINT received: stopped after step 4") as info:
        train(CtrlCTask, MODEL, FAST, "synthetic", run)
    assert info.value.signal_number == signal.SIGINT and info.value.checkpoint.name == "step-0000004"
    assert signal.getsignal(signal.SIGINT) is handler  # the loop's handlers are removed again
    assert [step for step, _ in list_checkpoints(run)] == [4] and read_metrics(run)[-1]["step"] == 4
    train("toy", MODEL, FAST, "synthetic", run, resume=True)
    assert_same_weights(weights(reference / "model"), weights(run / "model"))


def test_trainable_parameters_narrow_the_update(tmp_path):
    run = tmp_path / "run"
    train(HeadOnlyTask, MODEL, FAST.replace(steps=3), "synthetic", run)
    torch.manual_seed(FAST.seed)
    initial = ToyModel(MODEL).state_dict()  # the loop seeds with train.seed before building the model
    trained = weights(run / "model")
    assert torch.equal(trained["conv.weight"], initial["conv.weight"])
    assert not torch.equal(trained["head.weight"], initial["head.weight"])


def test_bf16_gradient_accumulation_and_data_workers(tmp_path):
    config = FAST.replace(steps=3, precision="bf16", grad_accum=2, num_workers=1)
    train("toy", MODEL, config, "synthetic", tmp_path / "run")
    rows = read_metrics(tmp_path / "run")
    assert [row["step"] for row in rows] == [1, 2, 3] and all(math.isfinite(row["loss"]) for row in rows)
    assert all(tensor.dtype == torch.float32 for tensor in weights(tmp_path / "run" / "model").values())


def test_cli_train_and_resume(tmp_path, capsys):
    out = str(tmp_path / "run")
    args = ["--quiet", "train", "toy", "--preset", "tiny", "--data", "synthetic", "--out", out, "--steps", "4"]
    assert main(args + ["--set", "model.image_size=8", "--set", "log_every=2"]) == 0
    assert capsys.readouterr().out.strip().endswith("model")
    assert main(["--quiet", "train", "toy", "--out", out, "--resume", "--steps", "6"]) == 0
    assert [row["step"] for row in read_metrics(out)] == [2, 4, 6]
    assert load_model(tmp_path / "run" / "model").config.image_size == 8
    assert main(["--quiet", "train", "toy", "--out", out, "--resume", "--preset", "small"]) == 2
    assert "preset 'tiny'" in capsys.readouterr().err
