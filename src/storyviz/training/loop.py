"""The one training loop: every storyviz model trains through `train(task, model_config, train_config, ...)`.

Single process as it is; data-parallel (torch DDP) under `torchrun --nproc_per_node=N -m storyviz train ...`.
One optimizer step consumes the global `batch_size` items: each process runs `grad_accum` micro-steps of
`batch_size / (world_size * grad_accum)` items (gradients are synchronised on the last one only). AdamW (weight
decay on >= 2-D weights only), linear warm-up then cosine decay, gradient clipping, bf16 autocast on request,
an optional EMA of the weights, every RNG seeded.

Run folder (rank 0 writes everything):
    run.json                         task, preset, data, model and train configs, storyviz version, world size
    metrics.jsonl                    one JSON object per logged step ({"step": ..., "loss": ..., "lr": ...});
                                     the last line is the final step; a resume drops lines past its step
    tensorboard/                     event files: train/loss, train/lr, throughput/*, samples (when the task has some)
    checkpoints/step-XXXXXXX/        every `checkpoint_every` steps, at the end and on SIGINT/SIGTERM; last
        config.json                  `keep_checkpoints` kept; written to a temporary folder, then renamed
        model.safetensors            the model being trained (not the EMA), loadable with from_pretrained
        training_state.pt            step, data position, optimizer, EMA, extras, RNG states of every rank
                                     (plain tensors: torch.load(weights_only=True) reads it)
    model/                           the exported final model (the EMA weights when ema_decay > 0)

Stopping: SIGINT/SIGTERM finish the current step, save a checkpoint and raise `TrainingInterrupted` (the CLI
exits with 128 + the signal number: 130 or 143). A NaN/inf loss (or gradient norm, or weights) raises
`NonFiniteLoss` naming the step; that step is never applied or saved, the last good checkpoint stays.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from storyviz import __version__
from storyviz.config import Config, ConfigError
from storyviz.files import write_text_atomic
from storyviz.training.checkpoint import (
    Checkpoint,
    load_model_state,
    newest_checkpoint,
    prune_checkpoints,
    read_checkpoint,
    remove_partial_checkpoints,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
    warn,
)
from storyviz.training.distributed import Distributed, ResumableBatchSampler, init_distributed, shutdown_distributed
from storyviz.training.ema import EMA
from storyviz.training.monitor import Monitor
from storyviz.training.schedule import lr_at
from storyviz.training.task import Task, TrainConfig, task_class
from storyviz.weights import WEIGHTS_NAME, load_state_dict_strict, read_safetensors, read_weights_config


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM stopped the run after `step`; a checkpoint of that step was saved."""

    def __init__(self, step: int, signal_number: int, checkpoint: Path):
        name = signal.Signals(signal_number).name
        super().__init__(f"{name} received: stopped after step {step}; checkpoint {checkpoint}; continue with --resume")
        self.step, self.signal_number, self.checkpoint = step, signal_number, checkpoint


class NonFiniteLoss(RuntimeError):
    """The loss (or gradient norm, or weights) became NaN/inf; the message names the step."""


class TrainingModule(nn.Module):
    """The model and the task's extras in one module whose forward is the task's loss, so DDP sees it."""

    def __init__(self, task: Task, model: nn.Module, extras: dict[str, nn.Module]):
        super().__init__()
        self.task = task
        self.model = model
        self.extras = nn.ModuleDict(extras)

    def forward(self, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        return self.task.loss(self.model, batch, step, self.extras)


def build_optimizer(parameters: list[nn.Parameter], config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on weights of two or more dimensions only (not on biases, norms, embeddings' 1-D)."""
    decay = [p for p in parameters if p.ndim >= 2]
    no_decay = [p for p in parameters if p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.betas))


def train(
    task: str | type[Task],
    model_config: Config,
    train_config: TrainConfig,
    data: str,
    run_dir: str | Path,
    resume: bool = False,
    preset: str | None = None,
) -> Path:
    """Trains `task` (a name in TASKS or a Task subclass) into `run_dir`; returns the exported model folder.

    With `resume`, continues from the newest loadable checkpoint of `run_dir` (or starts when there is none)
    up to `train_config.steps`; without it, `run_dir` must not hold a run yet.
    """
    task_cls = task_class(task) if isinstance(task, str) else task
    dist_info = init_distributed()
    try:
        return _Run(task_cls, model_config, train_config, data, Path(run_dir), resume, preset, dist_info).run()
    finally:
        shutdown_distributed(dist_info)


def export_checkpoint(run_dir: str | Path, out: str | Path, checkpoint: str | Path | None = None) -> Path:
    """Exports a checkpoint of a run as the task would export its final model (a bundle for DALL-E and
    StoryDALL-E, with the EMA weights when the run keeps them), so that `storyviz generate` and `storyviz
    evaluate` can use a run before it ends. `checkpoint`: a checkpoint folder or its name (default: the newest)."""
    from storyviz.training.configure import resolve_run

    run_dir = Path(run_dir)
    recorded = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else None
    if recorded is None:
        raise ConfigError(f"{run_dir}: no run.json; is this a run folder of `storyviz train`?")
    if checkpoint is None:
        found = newest_checkpoint(run_dir)
        if found is None:
            raise ConfigError(f"{run_dir}: no readable checkpoint")
    else:
        path = Path(checkpoint)
        found = read_checkpoint(path if path.is_dir() else run_dir / "checkpoints" / path)
    spec = resolve_run(recorded["task"], None, None, run_dir, resume=True)
    task = spec.task(spec.model_config, spec.data)
    model = task.build_model()
    load_model_state(model, found)
    ema = found.state.get("ema")
    if ema is not None:
        tracker = EMA(model, 0.0)
        tracker.load_state_dict(ema)
        tracker.copy_to(model)
    out = Path(out)
    task.export(model, out, {"training_step": found.step, "ema": ema is not None, "checkpoint": str(found.path)})
    return out


class _Run:
    """One call of `train`: set-up, the loop, checkpoints; split in methods to keep each short."""

    def __init__(self, task_cls, model_config, config, data, run_dir, resume, preset, dist_info: Distributed):
        self.config: TrainConfig = config
        self.run_dir = run_dir
        self.dist = dist_info
        self.signal_number: int | None = None
        _check_config(config, dist_info.world_size)
        if not resume and ((run_dir / "run.json").exists() or (run_dir / "checkpoints").exists()):
            raise ConfigError(f"{run_dir}: already holds a run; pass --resume to continue it or choose another --out")
        self.micro_batch = config.batch_size // (dist_info.world_size * config.grad_accum)
        self.task = task_cls(model_config, data)
        self.task_name = getattr(task_cls, "name", task_cls.__name__)
        self.model_config, self.data, self.preset = model_config, data, preset

        seed_everything(config.seed)  # identical initial weights on every process
        self.model = self.task.build_model()
        if not hasattr(self.model, "save_pretrained"):
            raise ConfigError(f"task {self.task_name!r}: build_model must return a Pretrained module")
        self.module = TrainingModule(self.task, self.model, self.task.build_extras()).to(dist_info.device)
        self.parameters = list(self.task.trainable_parameters(self.model, self.module.extras))
        trainable = {id(p) for p in self.parameters}
        for parameter in self.module.parameters():
            parameter.requires_grad_(id(parameter) in trainable)  # DDP and backward skip the rest
        self.optimizer = build_optimizer(self.parameters, config)
        self.ema = EMA(self.model, config.ema_decay) if config.ema_decay > 0 else None

        self.step, self.position, self.last_checkpoint = 0, 0, None
        checkpoint = self._find_checkpoint() if resume else None
        if checkpoint is not None:
            self._restore(checkpoint)
        else:
            if config.init_from:
                self._initialise(Path(config.init_from))
            seed_everything(config.seed + dist_info.rank)  # per-process randomness (dropout, noise)
        if self.step > config.steps:
            raise ConfigError(f"{run_dir}: the run is at step {self.step}, past the requested steps={config.steps}")

        self.wrapped: nn.Module = self.module
        if dist_info.enabled:
            device_ids = [dist_info.device] if dist_info.device.type == "cuda" else None
            # extras (a discriminator switched on at some step) may leave parameters unused in a step
            self.wrapped = DistributedDataParallel(
                self.module, device_ids=device_ids, find_unused_parameters=bool(self.module.extras)
            )

    # ---- resume ----

    def _find_checkpoint(self) -> Checkpoint | None:
        path = None
        if self.dist.is_main:
            remove_partial_checkpoints(self.run_dir)
            found = newest_checkpoint(self.run_dir)
            path = str(found.path) if found else None
        path = self.dist.broadcast(path)
        return read_checkpoint(path) if path else None

    def _changed_fields(self, recorded: dict[str, Any]) -> list[str]:
        """Fields of the model's own config (a task config may extend it with loss settings that are not
        exported) whose value differs in `recorded`, a config read from a weights folder."""
        expected = json.loads(json.dumps(self.model.config.to_dict()))
        return sorted(key for key in expected.keys() | recorded.keys() if expected.get(key) != recorded.get(key))

    def _initialise(self, source: Path) -> None:
        """Loads the model weights of a model folder or checkpoint (train.init_from) into the new run; for a
        bundle (a trained model with its tokenizers), the part of this run's model type."""
        found = read_weights_config(source)
        for folder in found["config"].get("parts", {}).values():  # a bundle: its folders of weights
            part = source / folder
            if not (part / WEIGHTS_NAME).is_file():
                continue  # a text tokenizer
            config = read_weights_config(part)
            if config["model_type"] == self.model.model_type:
                source, found = part, config
                break
        changed = self._changed_fields(found["config"])
        # fields that only add modules (e.g. a VQGAN's reference decoder): the new modules keep their own start
        added = set(getattr(self.model, "added_by_fields", {})) & set(changed)
        if found["model_type"] != self.model.model_type or set(changed) - added:
            raise ConfigError(
                f"train.init_from {source}: a {found['model_type']!r} model whose config differs from this run's "
                f"{self.model.model_type!r} model (fields {changed or 'model_type'})"
            )
        state = read_safetensors(source / WEIGHTS_NAME)
        if added:
            new = {key: value for key, value in self.model.state_dict().items() if key not in state}
            if not all(any(part in key.split(".") for part in self.model.added_by_fields.values()) for key in new):
                raise ConfigError(f"train.init_from {source}: weights missing beyond the modules of {sorted(added)}")
            if hasattr(self.model, "start_added"):  # e.g. a copy of a trained part
                new = self.model.start_added(new, state)
            state = {**new, **state}
        load_state_dict_strict(self.model, state, str(source / WEIGHTS_NAME))
        if self.ema is not None:
            self.ema = EMA(self.model, self.config.ema_decay)
        if self.dist.is_main:
            print(f"initialised {self.task_name} from {source}", flush=True)

    def _restore(self, checkpoint: Checkpoint) -> None:
        changed = self._changed_fields(checkpoint.model_config)
        if changed:
            raise ConfigError(f"{checkpoint.path}: model config differs from the one asked for in fields {changed}")
        state = checkpoint.state
        load_model_state(self.model, checkpoint)
        for name, extra in self.module.extras.items():
            if name not in state["extras"]:
                raise ConfigError(f"{checkpoint.path}: has no state for the task extra {name!r} (the task changed?)")
            load_state_dict_strict(extra, state["extras"][name], f"{checkpoint.path} extras[{name!r}]")
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            if state.get("ema") is not None:
                self.ema.load_state_dict(state["ema"])
            else:
                warn(f"{checkpoint.path} has no EMA weights; the EMA starts from the current weights")
        rngs = state["rng"]
        if self.dist.rank < len(rngs):
            set_rng_state(rngs[self.dist.rank])
        else:
            warn(f"{checkpoint.path} has no RNG state for rank {self.dist.rank}; seeding it afresh")
            seed_everything(self.config.seed + self.dist.rank)
        self.step, self.position, self.last_checkpoint = checkpoint.step, int(state["data_position"]), checkpoint.path
        if self.dist.is_main:
            print(f"resuming {self.run_dir} from step {self.step} ({checkpoint.path.name})", flush=True)

    # ---- the loop ----

    def _batches(self) -> Iterator[Any]:
        dataset = self.task.dataset("train")
        sampler = ResumableBatchSampler(
            len(dataset), self.micro_batch, self.dist.rank, self.dist.world_size, self.config.seed, self.position
        )
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + self.dist.rank * 7919 + self.position)
        loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=self.task.collate,
            num_workers=self.config.num_workers,
            generator=generator,
            pin_memory=self.dist.device.type == "cuda",
        )
        for batch in loader:
            yield _to_device(batch, self.dist.device)

    def run(self) -> Path:
        config = self.config
        self.dist.barrier()  # every process has checked the run folder before rank 0 writes into it
        if self.dist.is_main:
            self._write_run_json()
        previous = self._install_signal_handlers()
        monitor = Monitor(self.run_dir, self.step, config.steps, enabled=self.dist.is_main)
        batches = self._batches()
        try:
            while self.step < config.steps:
                loss, numbers, batch = self._train_step(batches)
                monitor.step(self.step, loss)
                final = self.step == config.steps
                if (config.log_every > 0 and self.step % config.log_every == 0) or final:
                    monitor.log(self.step, self.dist.mean({"loss": loss, **numbers}), config.batch_size)
                if config.sample_every > 0 and self.step % config.sample_every == 0 and self.dist.is_main:
                    monitor.images(self.step, self._sample_images(batch))
                if (
                    self.signal_number is not None
                    or final
                    or (config.checkpoint_every > 0 and self.step % config.checkpoint_every == 0)
                ):
                    self._save_checkpoint()
                if self.signal_number is not None:
                    raise TrainingInterrupted(self.step, self.signal_number, self.last_checkpoint)
            return self._export()
        finally:
            batches.close()  # stops DataLoader workers
            monitor.close()
            for number, handler in previous.items():
                signal.signal(number, handler)

    def _train_step(self, batches: Iterator[Any]) -> tuple[float, dict[str, float], Any]:
        """One optimizer step over `grad_accum` micro-batches; returns the mean loss, logged numbers, last batch."""
        config, step = self.config, self.step
        lr = lr_at(step, config.lr, config.warmup_steps, config.steps, config.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        total, sums, bad = 0.0, {}, None
        autocast = torch.autocast(self.dist.device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16")
        for micro in range(config.grad_accum):
            batch = next(batches)
            last = micro == config.grad_accum - 1
            sync = contextlib.nullcontext() if last or not self.dist.enabled else self.wrapped.no_sync()
            with sync:
                with autocast:
                    loss, numbers = self.wrapped(batch, step)
                value = loss.detach().float().item()
                if bad is None and not math.isfinite(value):
                    bad = f"loss is {value} (micro-step {micro + 1}, rank {self.dist.rank})"
                (loss / config.grad_accum).backward()  # always, so that every process joins the gradient all-reduce
            total += value / config.grad_accum
            for key, number in numbers.items():
                sums[key] = sums.get(key, 0.0) + float(number) / config.grad_accum
        bad_anywhere, stop = self.dist.any(bad is not None, self.signal_number is not None)
        if bad_anywhere:
            self._fail(step + 1, bad or "loss is not finite on another process")
        if stop and self.signal_number is None:
            self.signal_number = signal.SIGTERM  # another process was signalled
        if config.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.parameters, config.grad_clip)
            if not torch.isfinite(norm):
                self._fail(step + 1, f"gradient norm is {norm.item()}")
            sums["grad_norm"] = norm.item()
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        self.position += config.batch_size
        sums["lr"] = lr
        return total, sums, batch

    def _fail(self, step: int, what: str) -> None:
        kept = f"the last good checkpoint is {self.last_checkpoint}" if self.last_checkpoint else "no checkpoint yet"
        raise NonFiniteLoss(
            f"{what} at step {step}; the run stopped without applying step {step} ({kept}). "
            "Lower train.lr, enable train.grad_clip or use precision=fp32, then --resume."
        )

    @torch.no_grad()
    def _sample_images(self, batch: Any) -> torch.Tensor | None:
        was_training = self.model.training
        self.model.eval()
        try:
            return self.task.sample_images(self.model, batch)
        finally:
            self.model.train(was_training)

    # ---- files ----

    def _save_checkpoint(self) -> None:
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            self._fail(self.step, "the weights are not finite")
        rngs = self.dist.gather(rng_state())
        path = None
        if self.dist.is_main:
            state = {
                "step": self.step,
                "data_position": self.position,
                "optimizer": self.optimizer.state_dict(),
                "extras": {name: extra.state_dict() for name, extra in self.module.extras.items()},
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "rng": rngs,
                "world_size": self.dist.world_size,
                "batch_size": self.config.batch_size,
            }
            path = save_checkpoint(self.run_dir, self.step, self.model, state)
            prune_checkpoints(self.run_dir, self.config.keep_checkpoints)
        self.last_checkpoint = Path(self.dist.broadcast(str(path) if path else None))

    def _export(self) -> Path:
        out = self.run_dir / "model"
        if self.dist.is_main:
            model = self.model
            if self.ema is not None:
                model = copy.deepcopy(self.model)
                self.ema.copy_to(model)
            self.task.export(model, out, {"training_step": self.step, "ema": self.ema is not None})
        self.dist.barrier()
        return out

    def _write_run_json(self) -> None:
        info = {
            "task": self.task_name,
            "preset": self.preset,
            "data": self.data,
            "model": self.model_config.to_dict(),
            "train": self.config.to_dict(),
            "storyviz_version": __version__,
            "world_size": self.dist.world_size,
            "started_at_step": self.step,
        }
        write_text_atomic(self.run_dir / "run.json", json.dumps(info, indent=2) + "\n")

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(number: int, frame: Any) -> None:
            if self.signal_number is not None:
                raise KeyboardInterrupt  # a second signal: stop now, without a checkpoint
            self.signal_number = number
            if self.dist.is_main:
                warn(f"{signal.Signals(number).name}: stopping after this step and saving a checkpoint")

        return {number: signal.signal(number, handler) for number in (signal.SIGINT, signal.SIGTERM)}


def _check_config(config: TrainConfig, world_size: int) -> None:
    if config.steps < 1:
        raise ConfigError(f"train.steps={config.steps}: expected at least 1")
    if config.grad_accum < 1:
        raise ConfigError(f"train.grad_accum={config.grad_accum}: expected at least 1")
    share = world_size * config.grad_accum
    if config.batch_size < share or config.batch_size % share:
        raise ConfigError(
            f"train.batch_size={config.batch_size} must divide by world_size * grad_accum = "
            f"{world_size} * {config.grad_accum} = {share}"
        )


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {key: _to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(_to_device(value, device) for value in batch)
    return batch
