"""The chapters as papermill executed them for the smoke book (tests/conftest.py: smoke_book): one
`parameters` cell with `profile`, no error output, at least the figures each stage promises
(``Stage.min_figures``), papermill's injected cell hidden and no absolute path of the building machine; and
a reader can rerun one chapter alone with papermill and other parameters."""

from __future__ import annotations

import json
from pathlib import Path

import jupytext
import papermill
import pytest

from polar4d_lib import stages

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
STAGES = list(stages.STAGES)


def test_every_chapter_is_in_the_book():
    assert [p.stem for p in CHAPTERS] == [s.notebook for s in STAGES]
    toc = (ROOT / "_toc.yml").read_text()
    assert all(f"{s.executed}\n" in toc for s in STAGES)


def test_every_chapter_that_shows_figures_promises_some():
    """Chapters that draw figures on any profile declare how many (the performance page draws them only
    when there are benchmark files)."""
    assert all(s.min_figures >= 3 for s in STAGES if s.name != "performance")


@pytest.mark.parametrize("source", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_has_one_parameters_cell_with_profile(source):
    notebook = jupytext.read(source)
    tagged = [c for c in notebook.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "a chapter has exactly one cell tagged 'parameters'"
    assert "profile = " in tagged[0].source
    hidden = [c for c in notebook.cells if "hide-input" in c.get("metadata", {}).get("tags", [])]
    assert hidden, "figure-drawing code is folded (hide-input) so that readers see figures first"


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES, ids=[s.name for s in STAGES])
def test_chapter_executed_on_smoke_without_errors(smoke_book, stage):
    cells = json.loads((smoke_book / f"{stage.executed}.ipynb").read_text())["cells"]
    outputs = [o for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) >= stage.min_figures, f"only {len(figures)} figures, the stage promises {stage.min_figures}"
    injected = [c for c in cells if "injected-parameters" in c.get("metadata", {}).get("tags", [])]
    assert injected and "profile = \"smoke\"" in "".join(injected[0]["source"])
    assert "remove-cell" in injected[0]["metadata"]["tags"], "papermill's injected cell is shown"
    said = [c for c in cells if "executed-with" in c.get("metadata", {}).get("tags", [])]
    assert said and 'profile = "smoke"' in "".join(said[0]["source"]), "the page does not say its profile"
    # nothing the reader sees names the building machine's folders
    shown = json.dumps([{"source": c["source"], "outputs": c.get("outputs", [])} for c in cells])
    assert str(smoke_book) not in shown, "an absolute path of the building machine is on the page"


@pytest.mark.slow
def test_a_reader_reruns_one_chapter_alone_with_papermill(smoke_book, tmp_path):
    template = tmp_path / "07_results.ipynb"
    jupytext.write(jupytext.read(ROOT / "notebooks" / "07_results.py"), template)
    out = tmp_path / "out.ipynb"
    papermill.execute_notebook(str(template), str(out), cwd=str(tmp_path), kernel_name="python3", progress_bar=False,
                               parameters={"profile": "smoke", "results_dir": str(smoke_book / "results" / "smoke")})
    text = out.read_text()
    assert "best:" in text and '"output_type": "error"' not in text
    with pytest.raises(papermill.PapermillExecutionError, match="run chapters 02_training and 06_explorer"):
        papermill.execute_notebook(str(template), str(tmp_path / "bad.ipynb"), cwd=str(tmp_path), kernel_name="python3",
                                   progress_bar=False, parameters={"profile": "smoke", "results_dir": str(tmp_path)})
