"""The training loop across processes: torchrun data parallelism, SIGKILL + resume, SIGTERM.

Each test launches `python -m storyviz train toy ...` (or torchrun) as a subprocess on the synthetic set.
"""

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from storyviz.models.toy import ToyConfig, ToyModel
from storyviz.training.checkpoint import list_checkpoints, read_checkpoint
from storyviz.training.loop import train
from storyviz.training.monitor import read_metrics
from storyviz.training.tasks.toy import ToyTask

pytestmark = pytest.mark.multiprocess

MODEL_SETS = ["--set", "model.image_size=8", "--set", "model.hidden=8"]
MODEL = ToyConfig(image_size=8, hidden=8)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def tiny(**changes):
    """The "tiny" train preset that the subprocesses use, with changes."""
    return ToyTask.train_presets["tiny"].replace(**changes)


def command(run_dir, *extra):
    base = [sys.executable, "-m", "storyviz", "--quiet", "train", "toy", "--preset", "tiny", "--data", "synthetic"]
    return base + ["--out", str(run_dir), *MODEL_SETS, *extra]


def weights(folder):
    return load_file(str(folder / "model.safetensors"))


def wait_for_step(process, run_dir, step, timeout=60.0):
    """Polls metrics.jsonl (log_every=1) until it reaches `step`; fails if the process ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = read_metrics(run_dir)
        if rows and rows[-1]["step"] >= step:
            return rows[-1]["step"]
        assert process.poll() is None, f"training ended (exit {process.returncode}) before step {step}"
        time.sleep(0.01)
    raise AssertionError(f"step {step} not reached in {timeout} s")


def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    sets = ["--steps", "12", "--set", "train.batch_size=8", "--set", "train.grad_accum=2", "--set", "log_every=1"]
    # --standalone: torchrun picks a free rendezvous port itself (no race with a port chosen here)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    two = command(tmp_path / "two", *sets)
    result = subprocess.run(launcher + ["-m"] + two[2:], env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == str(tmp_path / "two" / "model")  # rank 0 alone prints
    train("toy", MODEL, tiny(steps=12, batch_size=8, grad_accum=2, log_every=1), "synthetic", tmp_path / "one")
    one, two_weights = weights(tmp_path / "one" / "model"), weights(tmp_path / "two" / "model")
    for key in one:
        torch.testing.assert_close(two_weights[key], one[key], atol=1e-5, rtol=0)
    assert read_checkpoint(list_checkpoints(tmp_path / "two")[-1][1]).state["world_size"] == 2
    steps = [row["step"] for row in read_metrics(tmp_path / "two")]
    assert steps == list(range(1, 13))


def test_sigkill_at_a_random_step_then_resume_matches_an_uninterrupted_run(tmp_path):
    sets = ["--steps", "100", "--set", "log_every=1", "--set", "checkpoint_every=7", "--set", "keep_checkpoints=2"]
    kill_at = random.Random().randint(10, 70)
    run = tmp_path / "killed"
    process = subprocess.Popen(command(run, *sets), env=ENV, stderr=subprocess.PIPE)
    reached = wait_for_step(process, run, kill_at)
    process.kill()
    process.wait()
    assert process.returncode == -signal.SIGKILL and not (run / "model").exists(), f"kill at {reached}"
    resumed = subprocess.run(command(run, *sets, "--resume"), env=ENV, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    reference = tmp_path / "reference"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as OMP_NUM_THREADS=1 in the subprocesses: the same float reductions
    try:
        train(
            "toy", MODEL, tiny(steps=100, log_every=1, checkpoint_every=7, keep_checkpoints=2), "synthetic", reference
        )
    finally:
        torch.set_num_threads(threads)
    expected, found = weights(reference / "model"), weights(run / "model")
    for key in expected:
        assert torch.equal(expected[key], found[key]), f"{key} differs after a kill at step {reached}"
    rows = read_metrics(run)
    assert [row["step"] for row in rows] == list(range(1, 101)), f"kill at step {reached}"
    assert [row["loss"] for row in rows] == [row["loss"] for row in read_metrics(reference)]


def test_sigterm_saves_a_loadable_checkpoint_and_exits_143(tmp_path):
    run = tmp_path / "run"
    sets = ["--steps", "5000", "--set", "log_every=1", "--set", "checkpoint_every=0"]
    process = subprocess.Popen(command(run, *sets), env=ENV, stderr=subprocess.PIPE, text=True)
    wait_for_step(process, run, 5)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "SIGTERM" in err and "--resume" in err
    (step, folder), *_ = list_checkpoints(run)
    assert 5 <= step < 5000 and read_checkpoint(folder).state["step"] == step
    model = ToyModel.from_pretrained(folder)
    assert model(torch.zeros(1, 3, 8, 8)).shape == (1, 4)
    assert read_metrics(run)[-1]["step"] == step
