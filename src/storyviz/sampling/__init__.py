"""Sampling, kept apart from the networks: the KV-cached token engine and pure logit filters."""

from storyviz.sampling.engine import Engine, Generation, SamplingConfig, sample_next
from storyviz.sampling.filters import (
    apply_temperature,
    filtered_distribution,
    guidance,
    top_k_filter,
    top_k_values,
    top_p_filter,
    two_scale_guidance,
)

__all__ = [
    "Engine",
    "Generation",
    "SamplingConfig",
    "apply_temperature",
    "filtered_distribution",
    "guidance",
    "sample_next",
    "top_k_filter",
    "top_k_values",
    "top_p_filter",
    "two_scale_guidance",
]
