"""The re-ranking scorer: the network, its word-level tokenizer, a short training run, and re-ranking in the
StoryDALL-E pipeline and on the command line."""

from __future__ import annotations

import json
import math

import pytest
import torch

from storyviz.cli.main import main
from storyviz.config import ConfigError
from storyviz.data.store import open_dataset
from storyviz.models.scorer import PRESETS, Scorer, cast_agreement, story_context
from storyviz.pipelines import SamplingOptions, StoryRequest, load_pipeline
from storyviz.pipelines.rerank import Reranker, best_candidates
from storyviz.registry import load_model
from storyviz.text import TextTokenizer
from storyviz.training.loop import train
from storyviz.training.tasks.scorer import (
    ScorerTask,
    cast_losses,
    contrastive_loss,
    proper_nouns,
    soften,
    swap_names,
)
from tiny_models import tiny_storydalle


def tiny_scorer(**changes) -> Scorer:
    torch.manual_seed(0)
    return Scorer(PRESETS["tiny"].replace(**changes)).eval()


def clip_loss(model, ids, images, negatives=()):
    return contrastive_loss(model, model.text_features(ids), model.image_features(images), negatives)


def test_scores_are_the_diagonal_of_the_similarities_and_padding_is_not_read():
    model = tiny_scorer()
    ids = torch.randint(2, 64, (3, 12))
    ids[:, 7:] = 0  # [PAD]
    images = torch.rand(3, 3, 16, 16) * 2 - 1
    similarity = model.similarity(model.embed_text(ids), model.embed_images(images))
    torch.testing.assert_close(model(ids, images), similarity.diagonal())
    other_padding = ids.clone()
    other_padding[:, 7:] = 0
    with torch.no_grad():
        model.tok_emb.weight[0] += 5.0  # what [PAD] embeds to must not matter
    torch.testing.assert_close(model.embed_text(ids), model.embed_text(other_padding))
    assert torch.isfinite(model.embed_text(torch.zeros(1, 12, dtype=torch.long))).all()  # an empty caption
    with pytest.raises(ValueError, match=r"images \(B, 3, 16, 16\)"):
        model.embed_images(torch.zeros(1, 3, 32, 32))


def test_contrastive_loss_prefers_matching_pairs_and_blur_keeps_flat_images():
    model = tiny_scorer()
    ids = torch.randint(2, 64, (4, 12))
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    loss, similarity = clip_loss(model, ids, images)
    assert similarity.shape == (4, 4) and loss > 0
    flat = torch.full((2, 3, 16, 16), 0.3)
    torch.testing.assert_close(soften(flat, 1.0), flat)


def test_name_negatives_swap_one_name_for_one_the_caption_lacks():
    assert proper_nouns(["Pip waves, Mimi sits and Kiki stands.", "One day, Bo runs. Then Rex sits!"]) == [
        "bo", "kiki", "mimi", "rex"
    ]  # fmt: skip
    torch.manual_seed(0)
    names = torch.tensor([10, 11, 12, 13, 14, 15])
    ids = torch.tensor([[2, 10, 3, 11, 0], [2, 3, 4, 0, 0], [12, 5, 13, 14, 15]])
    swapped, valid = swap_names(ids, names)
    assert valid[0] and not valid[1]  # row 1 has no name to swap
    for row in torch.nonzero(valid)[:, 0]:
        changed = torch.nonzero(swapped[row] != ids[row])[:, 0]
        assert len(changed) == 1 and int(ids[row, changed[0]]) in names.tolist()
        assert (
            int(swapped[row, changed[0]]) in names.tolist() and int(swapped[row, changed[0]]) not in ids[row].tolist()
        )


def test_a_wrong_caption_adds_to_the_loss_only_where_valid():
    model = tiny_scorer()
    ids, images = torch.randint(2, 64, (3, 12)), torch.rand(3, 3, 16, 16) * 2 - 1
    plain, _ = clip_loss(model, ids, images)
    wrong = torch.randint(2, 64, (3, 12))
    none_valid, _ = clip_loss(model, ids, images, [(wrong, torch.zeros(3, dtype=torch.bool))])
    some_valid, _ = clip_loss(model, ids, images, [(wrong, torch.tensor([True, False, True]))])
    two, _ = clip_loss(model, ids, images, [(wrong, torch.tensor([True, False, True]))] * 2)
    torch.testing.assert_close(none_valid, plain)
    assert two > some_valid > plain


def test_cast_heads_add_their_agreement_to_the_score():
    ids, images = torch.randint(2, 64, (2, 12)), torch.rand(2, 3, 3, 16, 16) * 2 - 1
    plain = tiny_scorer()
    cast = tiny_scorer(names=5, name_weight=2.0)
    expected = plain.score(ids, images) + 2.0 * cast_agreement(
        cast.text_names(cast.text_features(ids))[:, None],
        cast.image_names(cast.image_features(images.flatten(0, 1))).view(2, 3, 5),
    )
    torch.testing.assert_close(cast.score(ids, images), expected)  # same seed: the same contrastive part
    torch.testing.assert_close(cast(ids, images[:, 0]), cast.score(ids, images)[:, 0])
    # agreement: near 0 where both sides are sure and agree, very negative where they are sure and disagree
    sure = torch.tensor([[20.0, -20.0]])
    assert cast_agreement(sure, sure).item() > -1e-3
    assert cast_agreement(sure, -sure).item() < -10
    assert abs(cast_agreement(torch.zeros(1, 2), sure).item()) < 1e-6  # a caption that leaves both names open
    leaning = torch.tensor([[-1.5, 20.0]])  # p = 0.18: counts, but less than a sure name
    drawn, absent = torch.tensor([[20.0, 20.0]]), torch.tensor([[-20.0, 20.0]])
    assert cast_agreement(leaning, drawn) < cast_agreement(leaning, absent) < 0
    assert cast_agreement(leaning, drawn) > cast_agreement(torch.tensor([[-20.0, 20.0]]), drawn)


def test_cast_losses_teach_the_image_head_the_names_and_the_text_head_the_image_head():
    model = tiny_scorer(names=3)
    ids, images = torch.randint(2, 64, (4, 12)), torch.rand(4, 3, 16, 16) * 2 - 1
    named = torch.tensor([[1.0, 0, 0], [0, 1, 1], [1, 1, 0], [0, 0, 0]])
    words, features = model.text_features(ids), model.image_features(images)
    image_loss, text_loss = cast_losses(model, words, features, named)
    image_loss.backward(retain_graph=True)
    assert model.image_names.weight.grad.abs().sum() > 0 and model.text_names.weight.grad is None
    model.zero_grad()
    text_loss.backward()
    assert model.text_names.weight.grad.abs().sum() > 0 and model.image_names.weight.grad is None  # teacher detached
    with torch.no_grad():  # both heads unsure (logits 0): the text head's loss is the teacher's entropy, log 2
        for head in (model.image_names, model.text_names):
            head.weight.zero_()
            head.bias.zero_()
    _, unsure = cast_losses(model, words, features, named)
    assert abs(unsure.item() - math.log(2)) < 1e-5


def test_story_context_holds_the_earlier_captions_latest_first():
    ids = torch.tensor([[[1, 1], [2, 2], [3, 3]]])  # one story of 3 captions of 2 tokens
    context = story_context(ids, 2, pad_id=0)
    assert context.shape == (1, 3, 2, 2)
    assert context[0, :, :, 0].tolist() == [[0, 0], [1, 0], [2, 1]]


def test_a_caption_reads_its_context_and_pools_only_its_own_tokens():
    model = tiny_scorer(context=2)
    ids = torch.randint(2, 64, (3, 12))
    empty = torch.zeros(3, 2, 12, dtype=torch.long)
    torch.testing.assert_close(model.text_features(ids, empty), model.text_features(ids))
    context = empty.clone()
    context[:, 0, :5] = torch.randint(2, 64, (3, 5))
    assert not torch.allclose(model.text_features(ids, context), model.text_features(ids))
    longer = context.clone()
    longer[:, 1, :3] = 7  # a second caption back: read as well, at its own place
    assert not torch.allclose(model.text_features(ids, longer), model.text_features(ids, context))
    swapped = longer.flip(1)  # the same captions at other places back
    assert not torch.allclose(model.text_features(ids, longer), model.text_features(ids, swapped))
    with pytest.raises(ValueError, match=r"context ids \(3, 2, 12\)"):
        model.text_features(ids, context[:, :1])


def test_word_tokenizer_is_the_same_for_the_same_captions(tmp_path):
    captions = ["Bo runs. Mimi sits!", "bo and Zed run", "Mimi waves."]
    first, second = TextTokenizer.words(captions, length=8), TextTokenizer.words(list(reversed(captions)), length=8)
    assert first.tokenizer.get_vocab() == second.tokenizer.get_vocab()
    ids = first.encode(["Bo runs and Quill sits."]).ids
    assert ids.shape == (1, 8) and int(ids[0, 3]) == 1  # "quill" is unknown: [UNK]
    first.save_pretrained(tmp_path / "words")
    assert torch.equal(
        TextTokenizer.from_pretrained(tmp_path / "words").encode("Mimi waves.").ids, first.encode("Mimi waves.").ids
    )
    assert first.decode(first.encode("Mimi waves.").ids) == ["mimi waves ."]


def test_best_candidates_keep_sampling_order_on_ties():
    assert best_candidates(torch.tensor([[1.0, 3.0, 3.0, 0.0]])).tolist() == [[1, 2, 0, 3]]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("scorer")
    story_model = tiny_storydalle(root)  # builds root / "data": sprites at 32 px
    config = ScorerTask.model_presets["tiny"]
    config = config.replace(model=config.model.replace(image_size=32))
    scorer = train("scorer", config, ScorerTask.train_presets["tiny"].replace(steps=6), str(root / "data"), root / "s")
    return root, story_model, scorer


def test_training_writes_a_scorer_bundle_that_knows_its_data(trained):
    root, _, scorer_dir = trained
    info = json.loads((scorer_dir / "config.json").read_text())
    assert info["model_type"] == "scorer-bundle" and info["heldout_split"] == "val"
    assert 0.0 <= info["retrieval"] <= 1.0 and info["retrieval_group"] == "story"
    scorer = load_model(scorer_dir / "scorer")
    assert scorer.config.image_size == 32 and scorer.config.text_vocab_size > 20
    reranker = Reranker.from_pretrained(scorer_dir)
    story = open_dataset(root / "data").split("val")[0]
    images = torch.from_numpy(story["frames"]).permute(0, 3, 1, 2).float() / 127.5 - 1
    scores = reranker(story["captions"][:2], torch.stack([images[:3], images[2:]]))
    assert scores.shape == (2, 3) and torch.isfinite(scores).all()
    with pytest.raises(ValueError, match="candidate images"):
        reranker(story["captions"][:1], images)


def test_training_with_name_negatives(trained, tmp_path):
    root = trained[0]
    config = ScorerTask.model_presets["tiny"].replace(name_negatives=2)
    config = config.replace(model=config.model.replace(image_size=32))
    out = train("scorer", config, ScorerTask.train_presets["tiny"], str(root / "data"), tmp_path / "run")
    assert json.loads((out / "config.json").read_text())["model_type"] == "scorer-bundle"
    assert json.loads((tmp_path / "run" / "run.json").read_text())["model"]["name_negatives"] == 2


def test_training_with_cast_heads_keeps_the_names_and_scores_with_them(trained, tmp_path):
    root = trained[0]
    config = ScorerTask.model_presets["tiny"].replace(cast_weight=1.0)
    config = config.replace(model=config.model.replace(image_size=32))
    out = train("scorer", config, ScorerTask.train_presets["tiny"], str(root / "data"), tmp_path / "run")
    info = json.loads((out / "config.json").read_text())
    scorer = load_model(out / "scorer")
    assert scorer.config.names == len(info["names"]) >= 2 and all(name.islower() for name in info["names"])
    story = open_dataset(root / "data").split("val")[0]
    images = torch.from_numpy(story["frames"]).permute(0, 3, 1, 2).float() / 127.5 - 1
    reranker = Reranker.from_pretrained(out)
    scores = reranker(story["captions"][:1], images[None, :3])
    ids = reranker.tokenizer.encode(story["captions"][:1]).ids
    torch.testing.assert_close(scores, scorer.score(ids, images[None, :3]))
    with pytest.raises(ConfigError, match="plain captions"):
        ScorerTask(ScorerTask.model_presets["tiny"].replace(cast_weight=1.0, captions="pronoun"), str(root / "data"))


def test_training_with_context_reads_the_earlier_captions_when_re_ranking(trained, tmp_path):
    root = trained[0]
    config = ScorerTask.model_presets["tiny"]
    config = config.replace(model=config.model.replace(image_size=32, context=2))
    out = train("scorer", config, ScorerTask.train_presets["tiny"], str(root / "data"), tmp_path / "run")
    reranker = Reranker.from_pretrained(out)
    assert reranker.scorer.config.context == 2
    story = open_dataset(root / "data").split("val")[0]
    images = torch.from_numpy(story["frames"]).permute(0, 3, 1, 2).float() / 127.5 - 1
    captions, candidates = story["captions"][2:4], torch.stack([images[:3], images[1:4]])
    earlier = [story["captions"][:2], story["captions"][:3]]
    ids, tokens = reranker.tokenizer.encode(captions).ids, reranker.tokenizer.encode(story["captions"][:3]).ids
    context = torch.stack([tokens[[1, 0]], tokens[[2, 1]]])  # the two latest earlier captions, latest first
    expected = reranker.scorer.score(ids, candidates, context)
    torch.testing.assert_close(reranker(captions, candidates, earlier=earlier), expected)
    assert not torch.allclose(reranker(captions, candidates), expected)
    assert not torch.allclose(reranker(captions, candidates, earlier=[[], []]), expected)
    with pytest.raises(ValueError, match="1 lists of earlier captions for 2 captions"):
        reranker(captions, candidates, earlier=earlier[:1])


def test_story_pipeline_keeps_the_candidate_its_scorer_prefers(trained):
    _, story_model, scorer_dir = trained
    pipeline = load_pipeline(story_model)
    seen, candidates = [], []

    def darkest(captions, images, earlier):
        seen.append((list(captions), earlier))
        candidates.append(images)
        return -images.mean(dim=(2, 3, 4))

    pipeline.use_scorer(darkest)
    captions = ["Bo waves in the town.", "Bo jumps."]
    options = SamplingOptions(seed=1, top_k=8, candidates=4)
    (result,) = pipeline.generate([StoryRequest(captions)], options)
    assert seen == [(captions[:1], [[]]), (captions[1:], [captions[:1]])]  # frame 1, then the frames after it
    for frame, images in zip(result.frames, candidates):
        means = images[0].mean(dim=(1, 2, 3))
        assert means.max() > means.min()  # the candidates differ
        drawn = torch.from_numpy(frame).float().mean() / 127.5 - 1
        assert abs(float(drawn - means.min())) < 0.01  # the darkest one was kept

    with_bundle_scorer = load_pipeline(story_model, scorer=scorer_dir)
    assert with_bundle_scorer.describe()["scorer"] == str(scorer_dir)
    again = with_bundle_scorer.generate([StoryRequest(captions)], options)
    assert again[0].codes == with_bundle_scorer.generate([StoryRequest(captions)], options)[0].codes


def test_scorer_on_the_command_line(trained, tmp_path, capsys):
    _, story_model, scorer_dir = trained
    out = tmp_path / "story"
    argv = ["generate", "--model", str(story_model), "--caption", "Bo waves.", "--candidates", "2"]
    assert main([*argv, "--scorer", str(scorer_dir), "--out", str(out)]) == 0
    record = json.loads((out / "story.json").read_text())
    assert record["model"]["scorer"] == str(scorer_dir)
    assert main([*argv, "--scorer", str(tmp_path / "none"), "--out", str(tmp_path / "x")]) == 2
    assert "not found" in capsys.readouterr().err


def test_a_scorer_of_single_frames_is_measured_among_groups_of_frames(tmp_path):
    from storyviz.data.build import build

    build("digits", tmp_path / "digits", count=24, size=16, seed=0)
    config = ScorerTask.model_presets["tiny"]
    train_config = ScorerTask.train_presets["tiny"].replace(batch_size=8)
    out = train("scorer", config, train_config, str(tmp_path / "digits"), tmp_path / "run")
    info = json.loads((out / "config.json").read_text())
    assert info["retrieval_group"] == 32 and 0.0 <= info["retrieval"] <= 1.0
    with pytest.raises(ConfigError, match="name_negatives needs at least 2 names"):  # digits captions name no one
        ScorerTask(config.replace(name_negatives=1), str(tmp_path / "digits"))
