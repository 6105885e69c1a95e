"""A user-supplied judge exported as TorchScript, for the published data sets (PororoSV, FlintstonesSV, ...).

The published Inception-v3 character classifiers cannot be rebuilt here (no torchvision), so a user exports their
own classifier with `torch.jit.script` / `torch.jit.trace` and describes it in a JSON file beside it
(`judge.pt` + `judge.json`):

    {"image_size": 299,
     "heads": [{"name": "characters", "type": "multi", "classes": ["pororo", "loopy", ...]},
               {"name": "setting", "type": "single", "classes": [...]}],
     "heldout_accuracy": {"characters": 0.91, "setting": 0.95}, "heldout_split": "test"}

The scripted module takes images (B, 3, S, S) in [-1, 1] and returns a dict {head name: logits (B, C)}, plus
optionally "features": (B, D) for fid_judge (without it, fid_judge is computed on the concatenated logits).
Like every judge, it is refused when its stated held-out accuracy is below the bar on any head
(`storyviz evaluate --judge-min-accuracy` lowers the bar explicitly; the report records the value used).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from storyviz.models.judge import JudgeConfig, JudgeHead


class ScriptedJudge:
    """Wraps a TorchScript judge in the interface the evaluation uses (`config`, `head_names`, `outputs`)."""

    def __init__(self, module: torch.jit.ScriptModule, config: JudgeConfig, path: Path):
        self.module, self.config, self.path = module, config, path

    @property
    def head_names(self) -> list[str]:
        return [head.name for head in self.config.heads]

    def eval(self) -> ScriptedJudge:
        self.module.eval()
        return self

    @torch.no_grad()
    def outputs(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """images (B, 3, S, S) in [-1, 1] -> (features (B, D), {head: logits (B, C)})."""
        out = self.module(images)
        if not isinstance(out, dict):
            raise ValueError(f"{self.path}: the scripted judge must return a dict of head logits, got {type(out)}")
        missing = [name for name in self.head_names if name not in out]
        if missing:
            raise ValueError(f"{self.path}: the scripted judge returned no logits for heads {missing}")
        logits = {name: out[name].float() for name in self.head_names}
        features = out.get("features")
        if features is None:
            features = torch.cat([logits[name] for name in self.head_names], dim=1)
        return features.float(), logits


def read_description(path: Path) -> dict:
    """The JSON file beside a TorchScript judge (judge.pt -> judge.json), checked."""
    description = path.with_suffix(".json")
    if not description.is_file():
        raise FileNotFoundError(f"{description}: missing; a TorchScript judge needs a JSON description beside it")
    try:
        data = json.loads(description.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{description}: not valid JSON ({error})") from None
    for field in ("image_size", "heads", "heldout_accuracy"):
        if field not in data:
            raise ValueError(f"{description}: field {field!r} missing")
    return data


def load_scripted_judge(path: str | Path) -> tuple[ScriptedJudge, dict]:
    """Loads `judge.pt` and its `judge.json`; returns the judge and the description (for the accuracy check)."""
    path = Path(path)
    data = read_description(path)
    heads = tuple(
        JudgeHead(name=str(head["name"]), type=head["type"], classes=tuple(str(c) for c in head["classes"]))
        for head in data["heads"]
    )
    config = JudgeConfig(image_size=int(data["image_size"]), heads=heads)
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"{path}: not a loadable TorchScript file ({error})") from None
    return ScriptedJudge(module, config, path).eval(), data
