"""The chapters as papermill executed them for the smoke book (tests/conftest.py: smoke_book): one
`parameters` cell with `profile`, no error output, figures; and a reader can rerun one chapter alone with
papermill and other parameters."""

from __future__ import annotations

import json
from pathlib import Path

import jupytext
import papermill
import pytest

from polar4d_lib import book

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
MIN_FIGURES = {"01_simulation": 5, "02_training": 5, "03_explorer": 3, "04_results": 0}


def test_every_chapter_is_in_the_book():
    assert [p.stem for p in CHAPTERS] == list(book.CHAPTERS)
    toc = (ROOT / "_toc.yml").read_text()
    assert all(f"book/executed/{name}" in toc for name in book.CHAPTERS)


@pytest.mark.parametrize("source", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_has_one_parameters_cell_with_profile(source):
    notebook = jupytext.read(source)
    tagged = [c for c in notebook.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "a chapter has exactly one cell tagged 'parameters'"
    assert "profile = " in tagged[0].source
    hidden = [c for c in notebook.cells if "hide-input" in c.get("metadata", {}).get("tags", [])]
    assert hidden, "figure-drawing code is folded (hide-input) so that readers see figures first"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(book.CHAPTERS))
def test_chapter_executed_on_smoke_without_errors(smoke_book, name):
    cells = json.loads((smoke_book / "book" / "executed" / f"{name}.ipynb").read_text())["cells"]
    outputs = [o for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) >= MIN_FIGURES[name], f"only {len(figures)} figures"
    injected = [c for c in cells if "injected-parameters" in c.get("metadata", {}).get("tags", [])]
    assert injected and "profile = \"smoke\"" in "".join(injected[0]["source"])


@pytest.mark.slow
def test_a_reader_reruns_one_chapter_alone_with_papermill(smoke_book, tmp_path):
    template = tmp_path / "04_results.ipynb"
    jupytext.write(jupytext.read(ROOT / "notebooks" / "04_results.py"), template)
    out = tmp_path / "out.ipynb"
    papermill.execute_notebook(str(template), str(out), cwd=str(tmp_path), kernel_name="python3", progress_bar=False,
                               parameters={"profile": "smoke", "results_dir": str(smoke_book / "results" / "smoke")})
    text = out.read_text()
    assert "best:" in text and '"output_type": "error"' not in text
    with pytest.raises(papermill.PapermillExecutionError, match="run chapters 02_training and 03_explorer"):
        papermill.execute_notebook(str(template), str(tmp_path / "bad.ipynb"), cwd=str(tmp_path), kernel_name="python3",
                                   progress_bar=False, parameters={"profile": "smoke", "results_dir": str(tmp_path)})
