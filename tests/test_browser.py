"""The built smoke book in a real browser: headless Chromium opens the index and the explorer page from
file:// with every network request refused, waits for the widgets and for MathJax, and saves screenshots
(test artifacts, under ``$POLAR4D_ARTIFACTS`` or ``test-artifacts/``).

Needs the Debian package ``chromium`` (tools/install.sh --test installs it where it can) and the Python
package playwright, pointed at that binary: Playwright's own browser download does not work here. Where
either is missing the tests skip — except in CI (``CI=true``), where they fail: a CI run must not pass
without having looked at the book.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from polar4d_lib import stages

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run"]

pytestmark = pytest.mark.slow


def _missing(what: str) -> None:
    """Skip for want of ``what`` — or fail, in CI (``CI=true``)."""
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"{what} (CI=true: the browser tests must run in CI)", pytrace=False)
    pytest.skip(what)


def _artifacts() -> Path:
    path = Path(os.environ.get("POLAR4D_ARTIFACTS", ROOT / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        _missing("headless Chromium is missing: apt-get install -y chromium (tools/install.sh --test does it as root)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the Python package playwright is missing: pip install playwright")

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
    page, refused, errors = _open(browser, smoke_book / "_build" / "html" / "book" / "executed" / "06_explorer.html")
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


def test_ci_fails_instead_of_skipping_without_chromium(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        _missing("headless Chromium is missing")
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        _missing("headless Chromium is missing")


def test_results_and_performance_pages_fit_the_text_column(smoke_book, browser):
    """The results page's tables and heatmaps stay inside the text column (nothing runs under the margin),
    its heatmaps load, and the performance page renders (it says how to make benchmarks when there are none)."""
    html = smoke_book / "_build" / "html" / "book" / "executed"
    page, refused, errors = _open(browser, html / "07_results.html")
    overflowing = _overflowing(page)
    assert not overflowing, f"wider than the text column: {overflowing[:3]}"
    images = page.locator("article img")
    assert images.count() >= stages.by_name("results").min_figures and all(images.nth(i).evaluate("e => e.naturalWidth") > 100 for i in range(images.count()))
    assert page.locator("text=± 0.0").count() == 0, "a spread of one seed is printed"
    page.screenshot(path=str(_artifacts() / "results.png"), full_page=True)
    performance, refused_performance, errors_performance = _open(browser, html / "08_performance.html")
    assert performance.locator("article h1", has_text="Performance").count() == 1
    assert performance.locator("article", has_text="polar4d benchmark --profile smoke").count() == 1, \
        "with no benchmark files the page does not say how to make them"
    performance.screenshot(path=str(_artifacts() / "performance.png"), full_page=True)
    assert not refused and not refused_performance
    assert not errors and not errors_performance


def _overflowing(page) -> list[str]:
    """Tables and images of the page's article that reach past its text column."""
    return page.evaluate("""() => {
        const column = document.querySelector('article').getBoundingClientRect();
        return [...document.querySelectorAll('article table, article img')]
            .filter(e => e.getBoundingClientRect().right > column.right + 1)
            .map(e => e.tagName + ': ' + e.textContent.slice(0, 40));
    }""")


@pytest.mark.parametrize("stage", ["domain_gap", "periodicity", "defects"])
def test_chapter_page_fits_the_text_column(smoke_book, browser, stage):
    """The domain-gap, error-periodicity and defect chapters stay inside the text column and their figures load."""
    notebook = stages.by_name(stage).notebook
    page, refused, errors = _open(browser, smoke_book / "_build" / "html" / "book" / "executed" / f"{notebook}.html")
    overflowing = _overflowing(page)
    assert not overflowing, f"wider than the text column: {overflowing[:3]}"
    images = page.locator("article img")
    assert images.count() >= stages.by_name(stage).min_figures
    assert all(images.nth(i).evaluate("e => e.naturalWidth") > 100 for i in range(images.count()))
    page.screenshot(path=str(_artifacts() / f"{stage}.png"), full_page=True)
    assert not refused and not errors
