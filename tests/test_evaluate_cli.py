"""`storyviz evaluate` end to end with the bundled sprites judge, on a small sprites build."""

import json

import pytest
import torch

from storyviz.cli.main import main
from storyviz.data.build import build
from storyviz.data.store import open_dataset
from storyviz.evaluation.samples import write_samples
from storyviz.image_tokenizers.vqgan import VQGAN, VQGANConfig
from tiny_models import tiny_storydalle


@pytest.fixture(scope="module")
def sprites(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    build("sprites", root / "data", count=4, size=64, seed=0)
    return root


def run_json(capsys, *argv):
    code = main(["--quiet", "evaluate", *argv, "--json", "--no-inception"])
    assert code == 0
    return json.loads(capsys.readouterr().out)


def test_real_frames_as_samples_score_like_the_real_row(sprites, capsys):
    data = open_dataset(sprites / "data")
    split = data.split("test")
    stories = [{**split[i], "story_index": i, "generated": [False, True, True, True, True]} for i in range(len(split))]
    write_samples(sprites / "copies", stories, "sprites", "test")
    report = run_json(capsys, "--samples", str(sprites / "copies"), "--data", str(sprites / "data"),
                      "--out", str(sprites / "report_copies"))  # fmt: skip
    assert set(report) == {"generated", "real", "shuffled"}
    for metric in ("char_f1", "frame_acc", "setting_acc", "appearance_consistency"):
        assert report["generated"][metric] == pytest.approx(report["real"][metric])
    assert report["real"]["char_f1"] > 0.9  # the bundled judge reads real sprites frames
    assert report["shuffled"]["setting_acc"] < report["real"]["setting_acc"]
    assert (sprites / "report_copies" / "report.md").is_file() and (sprites / "report_copies" / "grid.png").is_file()


def test_a_tokenizer_is_scored_on_its_reconstructions(sprites, capsys):
    config = VQGANConfig(resolution=64, ch=8, ch_mult=(1, 2, 2, 2), num_res_blocks=1, attn_resolutions=(),
                         z_channels=8, num_groups=4, n_embed=16, embed_dim=8)  # fmt: skip
    torch.manual_seed(0)
    VQGAN(config).save_pretrained(sprites / "vqgan")
    out = sprites / "report_vqgan"
    report = run_json(capsys, "--model", str(sprites / "vqgan"), "--data", str(sprites / "data"), "--stories", "3",
                      "--out", str(out))  # fmt: skip
    samples = json.loads((out / "samples" / "samples.json").read_text())
    assert len(samples["stories"]) == 3 and all(all(story["generated"]) for story in samples["stories"])
    assert len(list((out / "samples").glob("*.png"))) == 15
    # an untrained tokenizer draws noise: far below the real frames
    assert report["generated"]["char_f1"] < report["real"]["char_f1"]
    code = main(["evaluate", "--model", str(sprites / "vqgan"), "--int8", "--data", str(sprites / "data"),
                 "--out", str(sprites / "report_vqgan_int8")])  # fmt: skip
    assert code == 2 and "image tokenizer has no int8 form" in capsys.readouterr().err


def test_a_story_model_continues_the_split_with_its_sampling_defaults(sprites, capsys):
    model = tiny_storydalle(sprites / "tiny")  # 32 px frames, scored at the data's 64 px
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "sampling": {"top_k": 1, "guidance": 3.0}}))
    out = sprites / "report_storydalle"
    report = run_json(capsys, "--model", str(model), "--data", str(sprites / "data"), "--stories", "2",
                      "--guidance", "2", "--seed", "4", "--out", str(out))  # fmt: skip
    samples = json.loads((out / "samples" / "samples.json").read_text())
    assert [story["generated"] for story in samples["stories"]] == [[False, True, True, True, True]] * 2
    made_with = samples["made_with"]
    assert made_with["task"] == "continuation" and made_with["captions"] == "plain"
    assert (made_with["sampling"]["top_k"], made_with["sampling"]["guidance"], made_with["sampling"]["seed"]) == (
        1,
        2.0,
        4,
    )
    assert len(list((out / "samples").glob("*.png"))) == 8 and "char_f1" in report["generated"]
    # the bundle's own ceiling: the real frames through its (untrained) image tokenizer, read far below the real row
    reconstructed = report["reconstructed"]
    assert set(reconstructed) >= {"char_f1", "appearance_consistency", "judge_agreement"}
    assert reconstructed["char_f1"] < report["real"]["char_f1"] and reconstructed["judge_agreement"] < 0.5
    assert "| reconstructed |" in (out / "report.md").read_text()
    out = sprites / "report_storydalle_int8"
    report = run_json(capsys, "--model", str(model), "--data", str(sprites / "data"), "--stories", "2", "--int8",
                      "--out", str(out))  # fmt: skip
    assert json.loads((out / "samples" / "samples.json").read_text())["made_with"]["weights"] == "int8"
    assert 0 <= report["generated"]["char_f1"] <= 1


def test_bad_arguments_name_the_problem(sprites, capsys):
    code = main(["evaluate", "--model", "toy", "--samples", "x", "--data", str(sprites / "data"), "--out", "o"])
    assert code == 2 and "not both" in capsys.readouterr().err
    code = main(["evaluate", "--samples", str(sprites / "missing"), "--data", str(sprites / "data"), "--out", "o"])
    assert code == 2 and "missing" in capsys.readouterr().err
    code = main(["evaluate", "--samples", "x", "--int8", "--data", str(sprites / "data"), "--out", "o"])
    assert code == 2 and "--int8" in capsys.readouterr().err


def test_a_torchscript_judge_with_its_description(sprites, capsys):
    """Published data sets are judged by a user-supplied TorchScript classifier; here the bundled judge, exported."""
    from storyviz.evaluation.judges import load_judge

    judge = load_judge("judge-sprites").float().eval()

    class Exported(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.judge = judge

        def forward(self, images):
            features, logits = self.judge.outputs(images)
            return {"features": features, **logits}

    traced = torch.jit.trace(Exported(), torch.zeros(2, 3, 64, 64), strict=False)
    traced.save(str(sprites / "judge.pt"))
    heads = [head.to_dict() for head in judge.config.heads]
    description = {"image_size": 64, "heads": heads, "heldout_accuracy": {h["name"]: 0.9 for h in heads}}
    (sprites / "judge.json").write_text(json.dumps(description))
    argv = ["--samples", str(sprites / "copies"), "--data", str(sprites / "data"), "--judge", str(sprites / "judge.pt")]
    assert main(["--quiet", "evaluate", *argv, "--out", str(sprites / "report_ts"), "--no-inception"]) == 2
    assert "0.9000 on ?, below the required 0.98" in capsys.readouterr().err
    scripted = run_json(capsys, *argv, "--judge-min-accuracy", "0.85", "--out", str(sprites / "report_ts"))
    bundled = json.loads((sprites / "report_copies" / "report.json").read_text())
    for row in ("generated", "real"):
        for metric in ("char_f1", "frame_acc", "setting_acc", "appearance_consistency"):
            assert scripted[row][metric] == pytest.approx(bundled[row][metric])
