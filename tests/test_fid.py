"""FID against a float64 reference written here, and the packaged Inception pool3 network on a few 64-px images."""

import numpy as np
import pytest
import torch

from storyviz.evaluation.fid import (
    FIDError,
    InceptionFeatures,
    _bilinear_299,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    prepare_for_inception,
)


def reference_fid(features1: np.ndarray, features2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr S1 + tr S2 - 2 tr sqrt(S1^1/2 S2 S1^1/2), via symmetric eigendecompositions."""
    mu1, mu2 = features1.mean(0), features2.mean(0)
    s1 = (features1 - mu1).T @ (features1 - mu1) / (len(features1) - 1)
    s2 = (features2 - mu2).T @ (features2 - mu2) / (len(features2) - 1)
    values, vectors = np.linalg.eigh(s1)
    root1 = vectors @ np.diag(np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = np.linalg.eigvalsh(root1 @ s2 @ root1)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(middle, 0, None)).sum())


@pytest.mark.parametrize("count,dim", [(200, 16), (50, 8), (20, 32)])  # the last: singular covariances (N < D)
def test_frechet_distance_matches_reference(count, dim):
    rng = np.random.default_rng(count + dim)
    mixing = rng.normal(size=(dim, dim))
    first = rng.normal(size=(count, dim)) @ mixing
    second = rng.normal(size=(count + 7, dim)) @ mixing * 1.3 + 0.5
    expected = reference_fid(first, second)
    scale = np.trace(np.cov(first, rowvar=False))  # sqrtm of a singular product is accurate to ~1e-8 of this
    assert fid_from_features(first, second) == pytest.approx(expected, rel=1e-6, abs=1e-7 * scale)
    assert fid_from_features(first, first) == pytest.approx(0.0, abs=1e-7 * scale)


def test_frechet_distance_of_known_gaussians():
    # 1-D: (m1 - m2)^2 + s1 + s2 - 2 sqrt(s1 s2)
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4 + 4 + 9 - 12)
    with pytest.raises(FIDError, match="mismatched"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(FIDError, match="N >= 2"):
        feature_statistics(np.zeros((1, 4)))


def test_resize_to_299_keeps_constant_images_and_range():
    frames = np.full((2, 64, 64, 3), 255, np.uint8)
    frames[1] = 0
    images = prepare_for_inception(frames)
    assert images.shape == (2, 3, 299, 299)
    assert torch.allclose(images[0], torch.full_like(images[0], 255 / 128 - 1))
    assert torch.allclose(images[1], torch.full_like(images[1], -1.0))
    # the bilinear resize maps a horizontal ramp to a monotone ramp
    ramp = torch.linspace(0, 1, 64).expand(1, 3, 64, 64)
    row = _bilinear_299(ramp)[0, 0, 0]
    assert torch.all(row[1:] >= row[:-1]) and row[0] == 0 and row[-1] == pytest.approx(1.0)


def test_frames_of_other_sizes_go_through_64_px():
    rng = np.random.default_rng(1)
    large = rng.integers(0, 256, size=(2, 128, 128, 3)).astype(np.uint8)
    small = torch.nn.functional.interpolate(
        torch.from_numpy(large).permute(0, 3, 1, 2).float(), size=(64, 64), mode="bilinear", antialias=True
    )
    small = small.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert torch.equal(prepare_for_inception(large), prepare_for_inception(small))
    assert not torch.equal(prepare_for_inception(large, resolution=128), prepare_for_inception(small))


def test_inception_features_on_a_few_images():
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, size=(4, 8, 8, 3)), np.ones((1, 8, 8, 1))).astype(np.uint8)
    extractor = InceptionFeatures(resolution=64, batch_size=4)
    assert extractor.label == "fid_inception@64"
    features = extractor(smooth)
    assert features.shape == (4, 2048) and features.dtype == np.float64
    assert np.isfinite(features).all() and (features >= 0).all()  # pool3 follows a ReLU
    # batch independence: one image alone gives the same features
    assert np.allclose(extractor(smooth[:1]), features[:1], atol=1e-4)
    # white noise looks nothing like smooth blocks (no FID here: sqrtm at 2048-d takes ~30-80 s on a busy CPU)
    noise = extractor(rng.integers(0, 256, size=(4, 64, 64, 3)).astype(np.uint8))
    assert np.linalg.norm(noise.mean(0) - features.mean(0)) > 0.2 * np.linalg.norm(features.mean(0))
