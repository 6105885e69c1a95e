"""The web demo (`storyviz demo`): request handling in story.py (plain functions), the Gradio page in app.py.

Import `storyviz.demo.app` only when serving: it imports gradio."""

from storyviz.demo.story import (
    DemoInputError,
    GalleryCharacter,
    build_request,
    character_gallery,
    clean_captions,
    run_story,
    sampling_from_form,
)

__all__ = [
    "DemoInputError",
    "GalleryCharacter",
    "build_request",
    "character_gallery",
    "clean_captions",
    "run_story",
    "sampling_from_form",
]
