"""The built smoke book in a real browser: headless Chromium opens the index and the explorer page from
file:// with every network request refused, waits for the widgets and for MathJax, and saves screenshots
(test artifacts, under ``$POLAR4D_ARTIFACTS`` or ``test-artifacts/``).

Needs the Debian package ``chromium`` (tools/install.sh --test installs it where it can) and the Python
package playwright, pointed at that binary: Playwright's own browser download does not work here.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is missing: apt-get install -y chromium "
                                                "(tools/install.sh --test does it as root)"),
]


def _artifacts() -> Path:
    path = Path(os.environ.get("POLAR4D_ARTIFACTS", ROOT / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield browser
        browser.close()


def _open(browser, page_path: Path):
    """A page opened offline; returns (page, list of refused requests to other hosts)."""
    context = browser.new_context(offline=True, viewport={"width": 1400, "height": 1000})
    refused: list[str] = []

    def route(r):
        if r.request.url.startswith("file://"):
            return r.continue_()
        refused.append(r.request.url)
        return r.abort()

    context.route("**/*", route)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(page_path.as_uri(), wait_until="load")
    return page, refused, errors


def test_index_and_math_render_offline(smoke_book, browser):
    html = smoke_book / "_build" / "html"
    page, refused, errors = _open(browser, html / "book" / "methods.html")
    page.wait_for_selector("mjx-container", timeout=30_000)  # MathJax (served from the book) typeset the math
    assert page.locator("mjx-container").count() >= 3
    page.screenshot(path=str(_artifacts() / "methods.png"), full_page=True)
    index, refused_index, _ = _open(browser, html / "index.html")
    index.wait_for_url("**/book/intro.html", timeout=30_000)  # Jupyter Book's index forwards to the first page
    assert "polar4d" in index.title()
    assert index.locator("nav a", has_text="Exploring a scan").count() >= 1, "the explorer chapter is not in the navigation"
    index.screenshot(path=str(_artifacts() / "index.png"))
    assert not refused and not refused_index, f"pages requested other hosts: {(refused + refused_index)[:3]}"
    assert not errors, f"JavaScript errors on the methods page: {errors[:3]}"


def test_explorer_widgets_render_offline(smoke_book, browser):
    page, refused, errors = _open(browser, smoke_book / "_build" / "html" / "book" / "executed" / "03_explorer.html")
    page.wait_for_selector(".jupyter-widgets img, .widget-image", timeout=60_000)
    assert page.locator(".widget-dropdown").count() >= 3, "the explorer's dropdowns (scan, model, dose) are missing"
    assert page.locator(".widget-slider, .widget-hslider").count() >= 2, "the position sliders are missing"
    images = page.locator(".widget-image")
    assert images.count() >= 2
    assert all(images.nth(i).evaluate("e => e.naturalWidth") > 100 for i in range(images.count())), \
        "a widget image did not load"
    page.screenshot(path=str(_artifacts() / "explorer.png"), full_page=True)
    assert not refused, f"the explorer page requested other hosts: {refused[:3]}"
    assert not errors, f"JavaScript errors on the explorer page: {errors[:3]}"
