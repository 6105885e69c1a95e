"""Pipelines: trained models behind one generation interface (see base.py)."""

from storyviz.pipelines.base import (
    PIPELINES,
    SamplingOptions,
    StoryPipeline,
    StoryRequest,
    StoryResult,
    load_pipeline,
)

__all__ = ["PIPELINES", "SamplingOptions", "StoryPipeline", "StoryRequest", "StoryResult", "load_pipeline"]
