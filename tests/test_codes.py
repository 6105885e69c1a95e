"""Pre-computed image codes: `storyviz data tokenize`, the lazy reader, and the data-set match check."""

from __future__ import annotations

import json
import pickle

import h5py
import numpy as np
import pytest
import torch

from storyviz.cli.main import main
from storyviz.data import open_dataset
from storyviz.data.build import build
from storyviz.data.codes import CodesError, check_codes_match, open_codes, tokenize_dataset
from storyviz.image_tokenizers.vqgan import PRESETS as VQGAN_PRESETS
from storyviz.image_tokenizers.vqgan import VQGAN


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("codes")
    build("digits", root / "digits", 12, size=16, seed=0)
    torch.manual_seed(0)
    VQGAN(VQGAN_PRESETS["tiny"]).save_pretrained(root / "vqgan")
    return root


def test_cli_writes_the_codes_the_tokenizer_gives(parts, capsys):
    out = parts / "codes-cli"
    assert main(["--quiet", "data", "tokenize", "--tokenizer", str(parts / "vqgan"), "--data", str(parts / "digits"),
                 "--out", str(out), "--batch-size", "5"]) == 0  # fmt: skip
    assert "8x8 codes of 32" in capsys.readouterr().out
    codes = open_codes(out)
    data = open_dataset(parts / "digits")
    meta = codes.meta
    assert meta["grid"] == [8, 8] and meta["codebook_size"] == 32 and meta["image_size"] == 16
    assert meta["tokenizer"]["model_type"] == "vqgan" and meta["data_name"] == "digits"
    assert meta["splits"] == data.meta["splits"]
    with h5py.File(out / "train.h5") as handle:
        assert handle["codes"].dtype == np.int16
    tokenizer = VQGAN.from_pretrained(parts / "vqgan").eval()
    for split in data.splits:
        stories, story_codes = data.split(split), codes.split(split)
        assert len(story_codes) == len(stories)
        frames = torch.from_numpy(np.stack([stories[i]["frames"][0] for i in range(len(stories))]))
        expected = tokenizer.encode(frames.permute(0, 3, 1, 2).float() / 127.5 - 1).reshape(len(stories), 1, 64)
        assert story_codes[0].dtype == np.int64 and story_codes[0].shape == (1, 64)
        np.testing.assert_array_equal(story_codes.array(), expected.numpy())
        np.testing.assert_array_equal(story_codes[-1], expected[-1].numpy())
    check_codes_match(codes, data)


def test_reader_is_lazy_and_picklable(parts):
    out = tokenize_dataset(parts / "vqgan", parts / "digits", parts / "codes-api")
    split = open_codes(parts / "codes-api").split("val")
    first = split[0]
    copy = pickle.loads(pickle.dumps(split))  # a DataLoader worker gets its own handle
    assert copy._handle is None
    np.testing.assert_array_equal(copy[0], first)
    with pytest.raises(IndexError, match="out of range"):
        split[len(split)]
    assert out["grid"] == [8, 8]


def test_mismatched_data_and_bad_folders_are_refused(parts, tmp_path):
    tokenize_dataset(parts / "vqgan", parts / "digits", tmp_path / "codes")
    build("digits", tmp_path / "other", 6, size=16, seed=1)
    with pytest.raises(CodesError, match="do not belong to the data set .*splits"):
        check_codes_match(open_codes(tmp_path / "codes"), open_dataset(tmp_path / "other"))
    build("digits", tmp_path / "big", 12, size=32, seed=0)
    with pytest.raises(CodesError, match="frames are 32 px but the image tokenizer .* 16 px"):
        tokenize_dataset(parts / "vqgan", tmp_path / "big", tmp_path / "codes-big")
    assert not (tmp_path / "codes-big").exists()
    with pytest.raises(CodesError, match="meta.json: missing"):
        open_codes(tmp_path / "other-nothing")
    (tmp_path / "not-codes").mkdir()
    (tmp_path / "not-codes" / "meta.json").write_text(json.dumps({"format_version": 1, "name": "digits"}))
    with pytest.raises(CodesError, match="not a codes folder"):
        open_codes(tmp_path / "not-codes")
    with pytest.raises(CodesError, match="no split 'test_unseen'"):
        open_codes(tmp_path / "codes").split("test_unseen")
