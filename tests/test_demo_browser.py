"""End to end: `storyviz demo` on a tiny real StoryDALL-E bundle, driven in headless Chromium with Playwright.

Fills two captions, picks a source character from the gallery, clicks generate and waits for the frames; saves a
screenshot (into the test's temporary folder, or to STORYVIZ_DEMO_SCREENSHOT=FILE). Needs /usr/bin/chromium
(scripts/install_browser.sh); STORYVIZ_SKIP_BROWSER=1 skips. STORYVIZ_DEMO_MODEL=DIR drives that model instead of
the tiny one: the README's screenshot is `STORYVIZ_DEMO_MODEL=... STORYVIZ_DEMO_SCREENSHOT=docs/demo.png`.
"""

import io
import os
import re
import socket
import time
from pathlib import Path

import pytest
from PIL import Image

from storyviz.files import atomic_file
from tiny_models import tiny_storydalle

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_demo_generates_a_story_in_chromium(tmp_path):
    if os.environ.get("STORYVIZ_SKIP_BROWSER") == "1":
        pytest.skip("STORYVIZ_SKIP_BROWSER=1")
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install_browser.sh (or set STORYVIZ_SKIP_BROWSER=1)")
    from playwright.sync_api import expect, sync_playwright

    from storyviz.demo.app import build_app, launch

    started = time.perf_counter()
    model_dir = os.environ.get("STORYVIZ_DEMO_MODEL") or tiny_storydalle(tmp_path / "model")  # a real one: README
    demo = build_app(str(model_dir), workdir=tmp_path / "demo")
    _, url, _ = launch(demo, host="127.0.0.1", port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        assert url.startswith("http://127.0.0.1:")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                outside = []  # no fonts, scripts or analytics from elsewhere
                page.on(
                    "request", lambda r: None if r.url.startswith((url, "data:", "blob:")) else outside.append(r.url)
                )
                page.goto(url)
                for box in ("#caption-1 textarea", "#caption-2 textarea"):
                    page.locator(box).fill("")
                page.locator("#generate").click()  # bad input is answered on the page
                expect(page.locator("#status textarea")).to_have_value(re.compile("^Error: No captions"))
                expect(page.get_by_text("No captions: write at least one caption.")).to_be_visible()  # the warning
                page.locator(".toast-close").first.click()
                expect(page.locator(".toast-body")).to_have_count(0)
                page.locator("#caption-1 textarea").fill("Luna waves in the park.")
                page.locator("#caption-2 textarea").fill("Luna jumps with a ball.")
                page.locator("#characters button.thumbnail-item").nth(1).click()  # Luna
                expect(page.locator("#source-caption textarea")).to_have_value("Luna is standing at the beach.")
                expect(page.locator("#source img")).to_have_count(1)
                page.locator("#generate").click()
                status = page.locator("#status textarea")
                expect(status).to_have_value(re.compile(r"^Generated 2 frames \(story continuation\)"), timeout=30_000)
                frames = page.locator("#story button.thumbnail-item img")
                expect(frames).to_have_count(2, timeout=10_000)
                assert [frames.nth(index).get_attribute("alt") for index in range(2)] == [
                    "Luna waves in the park.",
                    "Luna jumps with a ball.",
                ]
                link = page.locator("#download a[download='story.png']")
                expect(link).to_have_count(1)
                strip = Image.open(io.BytesIO(page.request.get(link.get_attribute("href")).body()))
                assert strip.width == 3 * 256 + 4 * 8  # the source frame and the two frames, side by side
                page.wait_for_function("[...document.querySelectorAll('#story img')].every(i => i.complete)")
                png = page.screenshot(full_page=True)
                assert outside == []
            finally:
                browser.close()
    finally:
        demo.close()
    screenshot = Image.open(io.BytesIO(png)).convert("RGB")
    screenshot = screenshot.resize((screenshot.width * 3 // 4, screenshot.height * 3 // 4), Image.Resampling.LANCZOS)
    target = Path(os.environ.get("STORYVIZ_DEMO_SCREENSHOT") or tmp_path / "demo.png")
    target.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    screenshot.quantize(colors=128).save(buffer, format="PNG", optimize=True)
    with atomic_file(target) as handle:
        handle.write(buffer.getvalue())
    assert target.stat().st_size < 300_000
    print(f"browser test: {time.perf_counter() - started:.1f} s; screenshot {target}")
