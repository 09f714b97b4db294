"""The book builds with the smoke profile from a clean output folder: every stage's page exists, has the
figures its stage promises, shows no traceback and no absolute path of the building machine, and loads
nothing from a CDN or another host (it must work offline)."""

from __future__ import annotations

import json
import re

import pytest

from conftest import book_settings
from polar4d_lib import book, config, stages


@pytest.mark.slow
def test_smoke_book_builds_offline(smoke_book, monkeypatch):
    root = smoke_book
    html = root / "_build" / "html"
    assert (html / "index.html").exists()
    for stage in stages.STAGES:
        page = html / f"{stage.executed}.html"
        text = page.read_text()
        assert "Traceback" not in text and 'class="output traceback' not in text, f"{stage.name}: error output"
        assert len(re.findall(r"<img ", text)) >= stage.min_figures, f"{stage.name}: too few figures"
        assert str(root) not in text, f"{stage.name}: the page shows an absolute path of the building machine"
        assert "injected-parameters" not in text, f"{stage.name}: papermill's injected cell is shown"
    # with no benchmark files the performance page says how to make them
    assert "polar4d benchmark --profile smoke" in (html / "book" / "executed" / "08_performance.html").read_text()
    for name in ("methods", "reproduce", "limitations", "references"):
        assert (html / "book" / f"{name}.html").exists(), f"prose page {name} was not built"
    assert "martinc2026" in (html / "book" / "references.html").read_text().replace("Martinc", "martinc2026"), \
        "the bibliography is empty"
    for page in html.rglob("*.html"):
        # nothing loaded from a CDN, and no address of another host at all (links and inline scripts included)
        other_hosts = re.findall(r'(?:https?:)?//[a-zA-Z0-9.-]+\.[a-z]{2,}[^"\s<]*', page.read_text())
        assert not other_hosts, f"{page.relative_to(html)} names {other_hosts[:3]}"
    assert (html / "_static" / "requirejs" / "require.js").exists()
    # The results page shows numbers read from the chapters' JSON, not typed ones.
    training = json.loads((root / "results" / "smoke" / "training.json").read_text())
    results_page = (html / "book" / "executed" / "07_results.html").read_text()
    best = max(training["aggregate"]["blocked"].items(), key=lambda kv: kv[1]["accuracy"]["mean"])
    assert f"{100 * best[1]['accuracy']['mean']:.1f}" in results_page
    # The explorer page carries the saved widget state (it renders without a kernel).
    assert "application/vnd.jupyter.widget-state+json" in (html / "book" / "executed" / "06_explorer.html").read_text()
    # A second run finds everything up to date and does not execute again.
    stamps = {s.name: (root / f"{s.executed}.ipynb").stat().st_mtime for s in stages.STAGES}
    monkeypatch.chdir(root)
    with config.set(book_settings(root)):
        book.run("smoke", root=root, build_html=False)
    assert {s.name: (root / f"{s.executed}.ipynb").stat().st_mtime for s in stages.STAGES} == stamps
