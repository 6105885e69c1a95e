"""From `storyviz train` arguments to the configs of a run: preset, `--set` overrides, `--steps`, `--resume`."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from storyviz.config import Config, ConfigError, pick_preset
from storyviz.training.task import Task, TrainConfig, task_class


@dataclass(frozen=True)
class RunSpec:
    """Everything `train` needs, resolved."""

    task: type[Task]
    preset: str | None
    model_config: Config
    train_config: TrainConfig
    data: str


def split_overrides(overrides: list[str], model_config: Config, train_config: TrainConfig) -> tuple[list, list]:
    """Sorts `key=value` items into (model overrides, train overrides).

    `model.key=...` and `train.key=...` say where; an unprefixed key must name a field of exactly one of them.
    """
    model_fields = {field.name for field in dataclasses.fields(model_config)}
    train_fields = {field.name for field in dataclasses.fields(train_config)}
    model_items, train_items = [], []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.lr=1e-4 or model.hidden=64")
        key = item.split("=", 1)[0].strip()
        head, _, rest = key.partition(".")
        if head in ("model", "train") and rest:
            (model_items if head == "model" else train_items).append(item.strip()[len(head) + 1 :])
            continue
        in_model, in_train = head in model_fields, head in train_fields
        if in_model and in_train:
            raise ConfigError(
                f"--set {key}: both the model and the train config have {head!r}; write model.{key} or train.{key}"
            )
        if not (in_model or in_train):
            raise ConfigError(
                f"--set {key}: no such field; model fields: {sorted(model_fields)}; "
                f"train fields: {sorted(train_fields)}"
            )
        (model_items if in_model else train_items).append(item.strip())
    return model_items, train_items


def resolve_run(
    model: str,
    preset: str | None,
    data: str | None,
    run_dir: str | Path,
    overrides: list[str] | None = None,
    steps: int | None = None,
    resume: bool = False,
) -> RunSpec:
    """The configs of `storyviz train MODEL --preset NAME --data DIR --out RUN_DIR [--steps N] [--set k=v]`.

    A new run starts from `task.model_presets[preset]` and `task.train_presets[preset]`. A resumed run whose
    run.json exists starts from the configs recorded there (so `--preset` and `--data` may be left out);
    `--set` and `--steps` then apply on top (`--steps N` is the total number of optimizer steps).
    """
    cls = task_class(model)
    run_json = Path(run_dir) / "run.json"
    if resume and run_json.is_file():
        try:
            recorded = json.loads(run_json.read_text())
        except json.JSONDecodeError as error:
            raise ConfigError(f"{run_json}: not valid JSON ({error})") from None
        if recorded.get("task") != model:
            raise ConfigError(f"{run_json}: the run trains {recorded.get('task')!r}, not {model!r}")
        if preset is not None and recorded.get("preset") not in (None, preset):
            raise ConfigError(f"{run_json}: the run uses preset {recorded['preset']!r}, not {preset!r}")
        preset = recorded.get("preset")
        config_class = type(next(iter(cls.model_presets.values())))
        model_config = config_class.from_dict(recorded["model"], where=f"{run_json} model")
        train_config = TrainConfig.from_dict(recorded["train"], where=f"{run_json} train")
        data = data or recorded.get("data")
    else:
        if preset is None:
            raise ConfigError(f"--preset is required for a new run; {model} presets: {', '.join(cls.model_presets)}")
        model_config = pick_preset(cls.model_presets, preset, f"{model} model")
        train_config = pick_preset(cls.train_presets, preset, f"{model} train")
    if not data:
        raise ConfigError("--data is required: a data set folder (or 'synthetic' for the toy model)")
    model_items, train_items = split_overrides(overrides or [], model_config, train_config)
    model_config = model_config.with_overrides(model_items) if model_items else model_config
    train_config = train_config.with_overrides(train_items) if train_items else train_config
    if steps is not None:
        train_config = train_config.replace(steps=steps)
    return RunSpec(cls, preset, model_config, train_config, data)
