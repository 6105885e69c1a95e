"""The Gradio page of `storyviz demo`: captions, a source frame (uploaded or a character picked from the gallery, or
none), sampling controls -> the story as a gallery and story.png to download. Request handling is in story.py.

    demo = build_app("sprites")          # loads the model once
    launch(demo, port=7860)              # queued, one request at a time by default
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import gradio as gr
from PIL import Image

from storyviz.demo.story import (
    MAX_CAPTION_BOXES,
    DemoInputError,
    build_request,
    character_gallery,
    run_story,
    sampling_from_form,
)
from storyviz.pipelines.base import load_pipeline
from storyviz.registry import resolve_model_dir

DEFAULT_CAPTIONS = ("Pip waves in the park.", "Pip jumps with a ball.", "", "")
DEFAULT_FRAMES = 2
GALLERY_COLUMNS = 3
# small frames (32 or 64 px) are shown scaled up with sharp pixels
CSS = """
#source img, #story img, #characters img { image-rendering: pixelated; }
#source img { width: 100%; height: 100%; object-fit: contain; }
"""


def build_app(model: str | None = None, device: str = "cpu", workdir: str | Path | None = None) -> gr.Blocks:
    """The demo page for one model (a folder or bundled name; None: the bundled default). Stories are written
    into fresh folders under `workdir` (default: a new temporary folder)."""
    model_dir = resolve_model_dir(model)
    pipeline = load_pipeline(model_dir, device=device)
    workdir = Path(workdir or tempfile.mkdtemp(prefix="storyviz-demo-"))
    (workdir / "characters").mkdir(parents=True, exist_ok=True)
    characters = character_gallery(pipeline.image_size)
    character_files = []
    for character in characters:
        path = workdir / "characters" / f"{character.name.lower()}.png"
        Image.fromarray(character.frame).save(path)
        character_files.append(str(path))
    defaults = pipeline.sampling

    def show_boxes(count: int):
        return [gr.Textbox(visible=index < int(count)) for index in range(MAX_CAPTION_BOXES)]

    def pick(event: gr.SelectData):
        character = characters[event.index]
        return character_files[event.index], character.caption, f"Source: {character.name} (from the gallery)."

    def generate(count, *values):
        captions, (source, source_caption, seed, top_k, top_p, temperature, guidance, candidates) = (
            list(values[: int(count)]),
            values[MAX_CAPTION_BOXES:],
        )
        try:
            request = build_request(
                captions, source, source_caption, pipeline.max_frames, pipeline.image_size,
                pipeline.supports_continuation,
            )  # fmt: skip
            options = sampling_from_form(seed, top_k, top_p, temperature, guidance, candidates)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                out = Path(tempfile.mkdtemp(prefix="story-", dir=workdir))
                items, strip, seconds = run_story(pipeline, request, options, out, model=str(model_dir))
            for warning in caught:
                if issubclass(warning.category, UserWarning):
                    gr.Warning(str(warning.message))
        except ValueError as error:  # bad input: DemoInputError, or a request the pipeline refuses
            gr.Warning(str(error))
            return [], None, f"Error: {error}"
        task = "continuation" if request.source_frame is not None else "visualization"
        return items, str(strip), f"Generated {len(items)} frames (story {task}) in {seconds:.1f} s."

    with gr.Blocks(title="storyviz demo", analytics_enabled=False) as demo:
        gr.Markdown(
            f"# storyviz: story visualization\nWrite a story one caption per frame; optionally give a source frame "
            f"that shows the characters and the setting. Model: `{model_dir.name}` ({pipeline.model_type}, "
            f"{pipeline.image_size} px, at most {pipeline.max_frames} frames with the source)."
        )
        with gr.Row():
            with gr.Column(scale=3):
                count = gr.Slider(1, MAX_CAPTION_BOXES, value=DEFAULT_FRAMES, step=1, label="Frames", elem_id="count")
                boxes = [
                    gr.Textbox(
                        value=DEFAULT_CAPTIONS[index] if index < len(DEFAULT_CAPTIONS) else "",
                        label=f"Caption {index + 1}",
                        visible=index < DEFAULT_FRAMES,
                        elem_id=f"caption-{index + 1}",
                        max_lines=2,
                    )
                    for index in range(MAX_CAPTION_BOXES)
                ]
                gallery = gr.Gallery(
                    [(path, character.name) for path, character in zip(character_files, characters)],
                    label="Pick a source frame: the world's characters",
                    columns=GALLERY_COLUMNS,
                    height=330,
                    allow_preview=False,
                    elem_id="characters",
                )
                with gr.Row():
                    source = gr.Image(
                        type="filepath", sources=["upload"], label="Source frame (upload or pick)", height=160,
                        elem_id="source",
                    )  # fmt: skip
                    with gr.Column():
                        source_caption = gr.Textbox(label="Source caption (optional)", elem_id="source-caption")
                        clear = gr.Button("No source (story visualization)", size="sm")
                with gr.Accordion("Sampling", open=False):
                    with gr.Row():
                        seed = gr.Number(defaults.seed, label="Seed", precision=0, minimum=0)
                        top_k = gr.Number(defaults.top_k, label="Top-k (0: off)", precision=0, minimum=0)
                        candidates = gr.Number(defaults.candidates, label="Candidates", precision=0, minimum=1)
                    with gr.Row():
                        top_p = gr.Slider(0.05, 1.0, value=defaults.top_p, step=0.05, label="Top-p")
                        temperature = gr.Slider(0.1, 2.0, value=defaults.temperature, step=0.05, label="Temperature")
                        guidance = gr.Slider(0.0, 10.0, value=defaults.guidance, step=0.5, label="Guidance")
                run = gr.Button("Generate story", variant="primary", elem_id="generate")
            with gr.Column(scale=4):
                status = gr.Textbox(label="Status", interactive=False, elem_id="status")
                story = gr.Gallery(label="Story", columns=4, object_fit="contain", height=360, elem_id="story")
                download = gr.File(label="story.png", height=90, elem_id="download")

        count.change(show_boxes, count, boxes)
        gallery.select(pick, None, [source, source_caption, status])
        clear.click(lambda: (None, "", "No source: story visualization."), None, [source, source_caption, status])
        run.click(
            generate,
            [count, *boxes, source, source_caption, seed, top_k, top_p, temperature, guidance, candidates],
            [story, download, status],
        )
    return demo


def launch(
    demo: gr.Blocks,
    host: str = "127.0.0.1",
    port: int = 7860,
    concurrency: int = 1,
    prevent_thread_lock: bool = False,
    quiet: bool = False,
):
    """Queues requests (at most `concurrency` generate at once) and serves the page; never makes a share link."""
    if concurrency < 1:
        raise DemoInputError(f"--concurrency must be 1 or more, got {concurrency}")
    demo.queue(default_concurrency_limit=concurrency)
    return demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        ssr_mode=False,
        prevent_thread_lock=prevent_thread_lock,
        quiet=quiet,
        footer_links=[],
        css=CSS,
    )
