"""The book builds with the smoke profile from a clean output folder: every chapter page exists, has
figures, shows no traceback, and loads nothing from a CDN or another host (it must work offline)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from polar4d_lib import book, config

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_smoke_book_builds_offline(tmp_path, monkeypatch):
    root = tmp_path / "book_root"
    (root / "book").mkdir(parents=True)
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    for page in (ROOT / "book").glob("*.md"):
        shutil.copy(page, root / "book" / page.name)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(ROOT / name, root / name)
    monkeypatch.chdir(root)
    with config.set({"data_root": str(root / "data"), "cache_dir": str(root / "cache"), "num_workers": 1,
                     "progress_bar": False}):
        index = book.run("smoke", root=root)
    assert index == root / "_build" / "html" / "index.html" and index.exists()
    for name in book.CHAPTERS:
        page = root / "_build" / "html" / "book" / "executed" / f"{name}.html"
        html = page.read_text()
        assert len(re.findall(r"<img ", html)) >= 5, f"{name}: too few figures"
        assert "Traceback" not in html and 'class="output traceback' not in html, f"{name}: error output"
    for page in (root / "_build" / "html").rglob("*.html"):
        loaded = re.findall(r'<(?:script|link)[^>]+(?:src|href)="(https?://[^"]*)"', page.read_text())
        assert not loaded, f"{page.name} loads {loaded[:3]} from another host"
    assert (root / "_build" / "html" / "_static" / "requirejs" / "require.js").exists()
    # A second run finds everything up to date and does not execute again.
    stamp = (root / "book" / "executed" / f"{book.CHAPTERS[0]}.ipynb").stat().st_mtime
    with config.set({"data_root": str(root / "data"), "cache_dir": str(root / "cache"), "num_workers": 1,
                     "progress_bar": False}):
        book.run("smoke", root=root, build_html=False)
    assert (root / "book" / "executed" / f"{book.CHAPTERS[0]}.ipynb").stat().st_mtime == stamp
