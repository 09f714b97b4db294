"""The domain-gap chapter's results on the smoke book: the table, the sweeps, the gap and the adaptation as
results/<profile>/domain_gap.json records them."""

from __future__ import annotations

import json

import pytest

from polar4d_lib import adaptation, suites

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def result(smoke_book):
    return json.loads((smoke_book / "results" / "smoke" / "domain_gap.json").read_text())


def test_the_table_has_every_column_and_row(result):
    settings = suites.GapSettings.for_profile("smoke")
    assert result["columns"][-1] == "cnn-stack (shipped)"
    assert {"Conv-Cls", "ResNet-Proto", "VGG-Reg", "PCA", "Physics"} <= set(result["columns"])
    rows = result["rows"]
    assert [r for r in rows if r.startswith("holdout: ")], "the training chapter's holdouts are rows"
    synthetic = [r for r in rows if r.startswith("S ")]
    assert len(synthetic) == len(settings.synthetic_cells) * len(settings.synthetic_thicknesses_nm)
    assert [r for r in rows if r.startswith("R ")]
    scored = {(c["row"], c["column"]) for c in result["cells"]}
    for row in rows:
        if not row.startswith("holdout"):
            assert {(row, column) for column in result["columns"]} <= scored, row
    for cell in result["cells"]:
        assert set(cell) >= {"row", "column", "accuracy_mean", "accuracy_std", "n_seeds", "majority_correct"}
        if cell["accuracy_mean"] is not None:
            assert 0.0 <= cell["accuracy_mean"] <= 1.0


def test_the_stack_model_is_blank_where_it_refuses_the_step(result):
    # smoke's realistic scans are at a/2: the cnn-stack folds a cell into 4 × 4 parts and refuses them
    stack = [c for c in result["cells"] if c["column"] == "cnn-stack (shipped)" and c["row"].startswith("R ")]
    assert stack and all(c["accuracy_mean"] is None for c in stack)


def test_every_sweep_has_a_curve_per_column(result):
    settings = suites.GapSettings.for_profile("smoke")
    assert list(result["sweeps"]) == list(settings.sweeps)
    for factor, sweep in result["sweeps"].items():
        assert sweep["values"] == [float(v) for v in settings.sweeps[factor]]
        assert sweep["unit"] == suites.FACTORS[factor].unit
        for column in result["sweep_columns"]:
            assert len(sweep[column]) == len(sweep["values"])
    assert result["sweep_columns"] == ["Conv-Cls", "PCA", "Physics", "cnn-stack (shipped)"]  # smoke's sweep_kinds


def test_gap_and_adaptation_records(result):
    assert {g["column"] for g in result["gap"]} == {"PCA", "Conv-Cls"}
    for g in result["gap"]:
        assert g["mmd2"] is not None and g["frechet"] >= 0.0
    methods = {a["method"] for a in result["adaptation"]}
    assert methods <= set(adaptation.METHODS) and "none" in methods and "prototypes" in methods
    assert result["seconds"]["chapter"] > 0
