"""The chapters execute with papermill on the smoke profile, as a reader would rerun them."""

from __future__ import annotations

import json
from pathlib import Path

import jupytext
import papermill
import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))


@pytest.mark.slow
@pytest.mark.parametrize("source", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_executes_on_smoke(source, tmp_path):
    notebook = jupytext.read(source)
    tagged = [c for c in notebook.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "a chapter has exactly one cell tagged 'parameters'"
    assert "profile" in tagged[0].source
    template = tmp_path / f"{source.stem}.ipynb"
    jupytext.write(notebook, template)
    executed = tmp_path / f"{source.stem}.out.ipynb"
    papermill.execute_notebook(
        str(template), str(executed), parameters={"profile": "smoke", "dataset_path": str(tmp_path / "smoke.zarr")},
        cwd=str(tmp_path), kernel_name="python3", progress_bar=False,
    )
    cells = json.loads(executed.read_text())["cells"]
    outputs = [o for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) >= 5, f"only {len(figures)} figures"
