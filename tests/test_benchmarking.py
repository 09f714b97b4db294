"""Benchmark records (polar4d_lib.benchmarking) and ``polar4d benchmark``: the JSON schema the book's
Performance page reads, the atomic write, the smoke run and its one-line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from polar4d_lib import benchmarking, cli
from polar4d_lib.benchmarking import figure, record

TOP_KEYS = {"name": str, "title": str, "machine": dict, "date": str, "profile": str, "parameters": dict, "figures": list}
MACHINE_TYPES = {"platform": str, "processor": str, "cores": int, "memory_gib": float, "python": str, "torch": str}
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}Z)?$")


def check_schema(data: dict) -> None:
    """The schema of results/benchmarks/<name>.json (polar4d_lib.benchmarking's docstring)."""
    assert set(data) == set(TOP_KEYS) | {"commit"}
    for key, kind in TOP_KEYS.items():
        assert isinstance(data[key], kind), key
    assert data["commit"] is None or re.fullmatch(r"[0-9a-f]{7,40}", data["commit"])
    assert ISO_UTC.match(data["date"]), data["date"]
    past = "recorded_from" in data["parameters"]  # a past measurement may lack what its source did not state
    assert set(data["machine"]) == set(MACHINE_TYPES)
    for key, kind in MACHINE_TYPES.items():
        value = data["machine"][key]
        assert isinstance(value, kind) or (kind is float and isinstance(value, int)) or (past and value is None), key
    assert data["figures"]
    for f in data["figures"]:
        assert set(f) <= {"quantity", "value", "unit", "note"} and {"quantity", "value", "unit"} <= set(f)
        assert isinstance(f["quantity"], str) and f["quantity"]
        assert isinstance(f["value"], float)
        assert isinstance(f["unit"], str) and f["unit"]


def test_record_writes_the_schema(tmp_path):
    path = record("speed", [figure("time per pattern", 7.1, "ms", "one core"), {"quantity": "n", "value": 3, "unit": "patterns"}],
                  "smoke", {"cells": 1}, title="Speed", results_dir=tmp_path)
    assert path == tmp_path / "speed.json"
    data = json.loads(path.read_text())
    check_schema(data)
    assert data["name"] == "speed" and data["title"] == "Speed" and data["profile"] == "smoke"
    assert data["parameters"] == {"cells": 1}
    assert data["figures"][0] == {"quantity": "time per pattern", "value": 7.1, "unit": "ms", "note": "one core"}
    assert data["figures"][1]["value"] == 3.0 and "note" not in data["figures"][1]
    assert data["machine"]["cores"] >= 1 and data["machine"]["memory_gib"] > 0


def test_record_names_paths_inside_the_repository_relative_to_it(tmp_path):
    from polar4d_lib.benchmarking import ROOT

    path = record("paths", [figure("n", 1, "patterns")], "smoke",
                  {"model": str(ROOT / "data" / "default_model.pt"), "repo": str(ROOT), "scratch": str(tmp_path),
                   "models": [str(ROOT / "results" / "m.npz"), "data/x.pt"], "n": 2}, results_dir=tmp_path)
    assert json.loads(path.read_text())["parameters"] == {
        "model": "data/default_model.pt", "repo": ".", "scratch": str(tmp_path), "models": ["results/m.npz", "data/x.pt"],
        "n": 2}


def test_record_of_a_past_measurement_keeps_its_date_commit_and_machine(tmp_path):
    path = record("old", [figure("main job", 2828, "s")], "default", {"recorded_from": "README at commit 13b0d65"},
                  results_dir=tmp_path, date="2026-12-07", commit_hash="834075d",
                  machine_info={"platform": "2-core CI machine (as recorded)", "cores": 2})
    data = json.loads(path.read_text())
    check_schema(data)
    assert (data["date"], data["commit"]) == ("2026-12-07", "834075d")
    assert data["machine"]["platform"] == "2-core CI machine (as recorded)" and data["machine"]["memory_gib"] is None


@pytest.mark.parametrize("bad, match", [
    ({"quantity": "t", "value": 1.0}, "unit"),
    ({"quantity": "t", "value": 1.0, "unit": ""}, "unit"),
    ({"quantity": "", "value": 1.0, "unit": "s"}, "quantity"),
    ({"quantity": "t", "value": float("nan"), "unit": "s"}, "finite"),
    ({"quantity": "t", "value": "fast", "unit": "s"}, "number"),
    ({"quantity": "t", "value": 1.0, "unit": "s", "units": "s"}, "unknown key 'units'"),
])
def test_record_refuses_a_figure_without_unit_or_number(bad, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        record("x", [bad], "smoke", {}, results_dir=tmp_path)
    with pytest.raises(ValueError, match="at least one figure"):
        record("x", [], "smoke", {}, results_dir=tmp_path)
    assert not list(tmp_path.iterdir())


def test_record_is_atomic(tmp_path, monkeypatch):
    path = record("speed", [figure("t", 1.0, "s")], "smoke", {}, results_dir=tmp_path)
    before = path.read_text()

    def half_then_fail(self, text, *args, **kwargs):
        with open(self, "w") as out:
            out.write(text[: len(text) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        record("speed", [figure("t", 2.0, "s")], "smoke", {}, results_dir=tmp_path)
    monkeypatch.undo()
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["speed.json"]  # no temporary file left


def test_plan_runs_robust_benchmarks_only_when_named_and_present(tmp_path):
    skipped = dict((b.name, reason) for b, reason in benchmarking.plan("smoke", root=tmp_path))
    assert skipped["simulation_speed"] is None and skipped["tilt_vs_polarization"] is None
    assert skipped["predict_throughput"] is None
    for name in ("coarse_rasters", "cell_stacks", "default_model_seeds", "off_grid_scans", "readme_commands",
                 "symmetry_images"):
        assert "name it to run it" in skipped[name]
    (named,) = benchmarking.plan("smoke", ["coarse_rasters"], root=tmp_path)
    assert named[1] == "needs data/robust.zarr, which does not exist"
    (tmp_path / "data" / "robust.zarr").mkdir(parents=True)
    assert benchmarking.plan("smoke", ["coarse_rasters"], root=tmp_path)[0][1] is None
    assert set(benchmarking.profiles()) == {"smoke", "default"}
    assert all(b.script.exists() for b in benchmarking.BENCHMARKS.values())


def test_unknown_benchmark_is_one_line_naming_the_known_ones(capsys, tmp_path):
    assert cli.main(["benchmark", "--results-dir", str(tmp_path), "simulation_sped"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "unknown benchmark 'simulation_sped'" in err
    assert all(name in err for name in benchmarking.BENCHMARKS)
    assert not list(tmp_path.iterdir())


def test_benchmark_smoke_writes_the_files_it_says(tmp_path, capfd):
    """``polar4d benchmark --profile smoke`` (about 50 s on 2 cores): every file it says it wrote exists and
    holds the schema; the benchmarks it skips say why."""
    out = tmp_path / "benchmarks"
    assert cli.main(["benchmark", "--profile", "smoke", "--results-dir", str(out)]) == 0
    printed = capfd.readouterr().out
    wrote = [Path(p) for p in re.findall(r"^wrote (.+\.json)$", printed, flags=re.M)]
    assert {p.name for p in wrote} == {"simulation_speed.json", "tilt_vs_polarization.json", "predict_throughput.json"}
    assert sorted(wrote) == sorted(out.glob("*.json"))
    for path in wrote:
        data = json.loads(path.read_text())
        check_schema(data)
        assert data["name"] == path.stem and data["profile"] == "smoke"
    assert len(re.findall(r"^skipped \w+: .+", printed, flags=re.M)) == len(benchmarking.BENCHMARKS) - 3


@pytest.mark.parametrize("path", sorted((benchmarking.ROOT / "results" / "benchmarks").glob("*.json")), ids=lambda p: p.name)
def test_committed_records_hold_the_schema(path):
    data = json.loads(path.read_text())
    check_schema(data)
    assert data["name"] == path.stem


def test_readme_commands_are_the_readmes():
    """benchmarks/readme_commands.py times exactly the README's two set-up commands (and CI runs the second)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("readme_commands", benchmarking.ROOT / "benchmarks" / "readme_commands.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = (benchmarking.ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    assert [cmd for _, cmd in module.COMMANDS] == blocks[:2]
    assert module.COMMANDS[1][1] in (benchmarking.ROOT / ".ci" / "run").read_text()
    assert module.pytest_counts("x\n512 passed, 3 skipped in 539.21s (0:08:59)\n") == {"passed": 512, "skipped": 3}
