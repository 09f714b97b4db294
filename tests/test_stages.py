"""The study's stages (polar4d_lib.stages) as the book driver uses them: the list is consistent with itself,
with the notebooks and with _toc.yml; parameters name no absolute path of the machine; a stage's stamp
follows what it reads; the performance page renders benchmark files."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml

from conftest import book_settings
from polar4d_lib import benchmarking, book, config, profiles, stages
from polar4d_lib.stages import Stage

ROOT = Path(__file__).resolve().parent.parent
STAGES = list(stages.STAGES)
IDS = [s.name for s in STAGES]


def _tagged(notebook, tag: str) -> list:
    return [c for c in notebook.cells if tag in c.get("metadata", {}).get("tags", [])]


def test_the_list_is_consistent():
    stages.check()
    assert len({s.name for s in STAGES}) == len(STAGES)
    assert len({s.notebook for s in STAGES}) == len(STAGES)
    # the notebooks are numbered in the order of the list
    assert [s.notebook for s in STAGES] == sorted(s.notebook for s in STAGES)
    # every notebook of the book is a stage
    assert sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.py")) == [s.notebook for s in STAGES]
    assert all(dataclasses.is_dataclass(s) and s.__dataclass_params__.frozen for s in STAGES)


def test_check_refuses_duplicates_and_reads_nobody_writes():
    a = Stage("a", "01_a", "A", writes=("a.json",))
    with pytest.raises(ValueError, match="share the name 'a'"):
        stages.check((a, Stage("a", "02_b", "B")))
    with pytest.raises(ValueError, match="stage b reads 'c.json'"):
        stages.check((a, Stage("b", "02_b", "B", reads=("a.json", "c.json"))))
    with pytest.raises(ValueError, match="stage a reads 'b.json'"):  # reads must come from an *earlier* stage
        stages.check((Stage("a", "01_a", "A", reads=("b.json",)), Stage("b", "02_b", "B", writes=("b.json",))))
    assert stages.by_name("training") is stages.by_name("02_training")
    with pytest.raises(KeyError, match="no stage 'nope'"):
        stages.by_name("nope")


@pytest.mark.parametrize("stage", STAGES, ids=IDS)
def test_notebook_matches_its_stage(stage):
    source = ROOT / "notebooks" / f"{stage.notebook}.py"
    assert source.exists(), f"{source} is missing"
    notebook = jupytext.read(source)
    tagged = _tagged(notebook, "parameters")
    assert len(tagged) == 1, "a chapter has exactly one cell tagged 'parameters'"
    names = {line.split("=")[0].strip() for line in tagged[0].source.splitlines() if "=" in line and not line.startswith(" ")}
    assert "profile" in names
    # it declares every parameter the driver passes it
    assert set(book.stage_parameters(stage, "smoke")) <= names
    heading = next(c.source for c in notebook.cells if c.cell_type == "markdown").splitlines()[0]
    assert heading == f"# {stage.title}", "the stage's title is the notebook's first heading"


def test_toc_lists_every_stage_in_order():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [entry["file"] for entry in toc["chapters"]]
    executed = [f for f in files if f.startswith("book/executed/")]
    assert executed == [s.executed for s in STAGES]


def test_parameters_are_relative_to_the_project(tmp_path):
    with config.set(book_settings(tmp_path)):
        for stage in STAGES:
            parameters = book.stage_parameters(stage, "smoke", root=tmp_path)
            for key, value in parameters.items():
                assert not str(value).startswith("/"), f"{stage.name}: {key} = {value}"
        assert book.stage_parameters(stages.by_name("training"), "smoke", root=tmp_path) == {
            "profile": "smoke", "dataset_path": "data/smoke.zarr", "results_dir": "results/smoke"}
        assert book.stage_parameters(stages.by_name("performance"), "smoke", root=tmp_path) == {
            "profile": "smoke", "benchmarks_dir": "results/benchmarks"}


def _benchmark(name: str = "speed", figures: list | None = None) -> dict:
    return {"name": name, "title": f"A test benchmark ({name})",
            "machine": {"platform": "Linux-test", "processor": "x86_64", "cores": 2, "memory_gib": 24.0,
                        "python": "3.11.0", "torch": "2.13.0"},
            "date": "2026-12-07T12:00:00+00:00", "commit": "abc1234", "profile": "smoke", "parameters": {"cells": 4},
            "figures": figures if figures is not None else [
                {"quantity": "potential build", "value": 2.0, "unit": "s"},
                {"quantity": "one pattern", "value": 0.65, "unit": "s", "note": "multislice"},
                {"quantity": "agreement", "value": 2e-6, "unit": "relative"}]}


def test_stamp_follows_what_a_stage_reads(tmp_path):
    performance = stages.by_name("performance")
    folder = book.benchmarks_dir(tmp_path)
    source = ROOT / "notebooks" / f"{performance.notebook}.py"

    def stamp():
        return book._stamp(source, book.stage_parameters(performance, "smoke", tmp_path),
                           book.stage_inputs(performance, "smoke", tmp_path))

    empty = stamp()
    folder.mkdir(parents=True)
    (folder / "speed.json").write_text(json.dumps(_benchmark()))
    one = stamp()
    assert one != empty and stamp() == one
    (folder / "speed.json").write_text(json.dumps(_benchmark(figures=[])))
    assert stamp() != one
    (folder / "speed.json").write_text(json.dumps(_benchmark()))
    assert stamp() == one
    (folder / "other.json").write_text(json.dumps(_benchmark("other")))
    assert stamp() != one
    # the explorer's stamp follows the models the training stage saved
    explorer = stages.by_name("explorer")
    with config.set(book_settings(tmp_path)):
        inputs = book.stage_inputs(explorer, "smoke", tmp_path)
        assert tmp_path / "results" / "smoke" / "models" in inputs
        before = book._stamp(source, {}, inputs)
        (tmp_path / "results" / "smoke" / "models").mkdir(parents=True)
        (tmp_path / "results" / "smoke" / "models" / "cnn-cls.pt").write_bytes(b"weights")
        assert book._stamp(source, {}, inputs) != before


def test_read_benchmarks_names_a_missing_key(tmp_path):
    (tmp_path / "b.json").write_text(json.dumps(_benchmark("b")))
    (tmp_path / "a.json").write_text(json.dumps(_benchmark("a")))
    assert [b["name"] for b in benchmarking.read_all(tmp_path)] == ["a", "b"]
    broken = _benchmark("c")
    del broken["figures"][0]["unit"]
    (tmp_path / "c.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match=r"c.json lacks 'figures\[0\].unit'"):
        benchmarking.read_all(tmp_path)
    assert benchmarking.read_all(tmp_path / "nothing") == []


@pytest.mark.slow
def test_performance_page_renders_every_benchmark_or_says_how_to_make_them(tmp_path, monkeypatch):
    root = tmp_path / "root"
    (root / "notebooks").mkdir(parents=True)
    shutil.copy(ROOT / "notebooks" / "08_performance.py", root / "notebooks")
    stage = stages.by_name("performance")
    monkeypatch.chdir(root)
    with config.set({**book_settings(root), "progress_bar": False}):
        empty = nbformat.read(book.execute_stage(stage, "smoke", root=root), as_version=4)
        text = json.dumps(empty.cells)
        assert "polar4d benchmark --profile smoke" in text
        folder = book.benchmarks_dir(root)
        folder.mkdir(parents=True)
        (folder / "speed.json").write_text(json.dumps(_benchmark()))
        page = nbformat.read(book.execute_stage(stage, "smoke", root=root), as_version=4)
    outputs = [o for c in page.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    for text in ("potential build", "0.65", "multislice", "relative"):
        assert text in html, f"{text!r} missing from the table"
    markdown = "".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    assert "A test benchmark (speed)" in markdown and "abc1234" in markdown and "2 cores" in markdown
    # the two figures in seconds compare: one bar plot
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 1
    # the page states its parameters in prose and hides papermill's injected cell
    injected = _tagged(page, "injected-parameters")
    assert injected and "remove-cell" in injected[0].metadata["tags"]
    assert "results/benchmarks" in "".join(c.source for c in _tagged(page, "executed-with"))


def test_stamp_follows_the_profiles_sizes(monkeypatch, tmp_path):
    """A change to a profile's sections (profiles.yaml) re-executes that profile's chapters."""
    training = stages.by_name("training")
    source = ROOT / "notebooks" / f"{training.notebook}.py"
    parameters = book.stage_parameters(training, "smoke", tmp_path)
    before = book._stamp(source, parameters, [])
    real = profiles.settings_of

    def changed(profile):
        values = real(profile)
        values["train"]["max_epochs"] = 99
        return values

    monkeypatch.setattr(profiles, "settings_of", changed)
    assert book._stamp(source, parameters, []) != before


def test_a_dataset_simulated_with_other_parameters_is_simulated_again(monkeypatch, tmp_path):
    from polar4d_lib import datasets

    built = []
    monkeypatch.setattr(datasets, "build", lambda spec, path, profile: built.append(spec))
    with config.set({"data_root": str(tmp_path)}):
        path = book.ensure_dataset("smoke")  # missing: simulated
        assert len(built) == 1
        path.mkdir()
        monkeypatch.setattr(datasets, "open_dataset", lambda p: type("D", (), {"attrs": {"parameters": {"old": 1}}})())
        book.ensure_dataset("smoke")  # other parameters: simulated again
        assert len(built) == 2
        current = datasets.spec_for_profile("smoke").as_dict()
        monkeypatch.setattr(datasets, "open_dataset", lambda p: type("D", (), {"attrs": {"parameters": current}})())
        book.ensure_dataset("smoke")  # the same: kept
        assert len(built) == 2
