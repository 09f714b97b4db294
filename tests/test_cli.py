"""The ``polar4d`` command (polar4d_lib.cli): ``info`` and the errors of ``simulate``."""

from __future__ import annotations

import shutil
import subprocess
import sys
import traceback

import pytest
import zarr

from conftest import SMOKE_OVERRIDES, cli_sets
from polar4d_lib import cli, conventions, datasets


def run(args: list[str], capsys) -> tuple[int, str, str]:
    """``polar4d ARGS`` in this process: (exit status, stdout, stderr). An exception escaping ``main``
    counts as status 1 with its traceback on stderr, as it would from the console script."""
    try:
        code = cli.main(args)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except Exception:  # noqa: BLE001 - report what a user would see
        out, err = capsys.readouterr()
        return 1, out, err + traceback.format_exc()
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, command: str, match: str) -> None:
    assert code == 2, f"exit status {code}, stderr:\n{err}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    assert lines[0].startswith(f"polar4d {command}: error: "), lines[0]
    assert match in lines[0], lines[0]


# --- info ------------------------------------------------------------------------------------------

def test_info_prints_class_counts_and_checksum(smoke_dataset, capsys):
    code, out, err = run(["info", str(smoke_dataset.path)], capsys)
    assert code == 0, err
    ds = datasets.open_dataset(smoke_dataset.path)
    labels = ds["label"]
    counts = ", ".join(f"{name} {int((labels == k).sum())}" for k, name in enumerate(conventions.CLASS_NAMES))
    per_class = len(ds) // 3
    assert counts == f"RM {per_class}, RU {per_class}, MU {per_class}, LU 0, LM 0, LD 0, MD 0, RD 0"
    lines = out.splitlines()
    assert f"classes        {counts}" in lines
    assert f"content_sha256 {ds.attrs['content_sha256']}" in lines
    assert any(line.startswith(f"patterns       {len(ds)} × 64 × 64 float32 at 1.5 mrad/px") for line in lines)
    assert "checksum" not in out  # only with --verify


def test_info_verify(smoke_dataset, tmp_path, capsys):
    code, out, _ = run(["info", "--verify", str(smoke_dataset.path)], capsys)
    assert code == 0 and "checksum       ok" in out.splitlines()
    copy = tmp_path / "tampered.zarr"
    shutil.copytree(smoke_dataset.path, copy)
    group = zarr.open_group(str(copy), mode="r+")
    group["label"][0] = (group["label"][0] + 1) % 8
    code, out, _ = run(["info", "--verify", str(copy)], capsys)
    assert code == 1 and "MISMATCH" in out


def test_info_errors(tmp_path, capsys):
    code, _, err = run(["info", str(tmp_path / "missing.zarr")], capsys)
    assert_one_line_error(code, err, "info", "no dataset at")
    (tmp_path / "notes.zarr").write_text("hello")
    code, _, err = run(["info", str(tmp_path / "notes.zarr")], capsys)
    assert_one_line_error(code, err, "info", "not a zarr dataset")


# --- simulate: errors a user can fix ---------------------------------------------------------------

@pytest.mark.parametrize(
    "extra, match",
    [
        (["--out", "out.h5"], ".zarr"),  # not a zarr path
        (["--out", "out.zarr", "--set", "no_such_parameter=1"], "no_such_parameter"),  # unknown key
        (["--out", "out.zarr", "--set", "simulation.no_such=1"], "simulation.no_such"),  # unknown nested key
        (["--out", "out.zarr", "--set", "config.no_such=1"], "no_such"),  # unknown config key
        (["--out", "out.zarr", "--set", "probe_settings"], "not key=value"),  # malformed: no '='
        (["--out", "out.zarr", "--set", "=4"], "not key=value"),  # malformed: no key
        (["--out", "out.zarr", "--set", "variants=[0,"], "variants"),  # malformed: not YAML
        (["--out", "out.zarr", "--set", "probe_settings=abc"], "probe_settings"),  # wrong type
        (["--out", "out.zarr", "--set", "variants=[12]"], "variant 12"),  # out of range
    ],
    ids=["suffix", "unknown-key", "unknown-nested-key", "unknown-config-key", "no-equals", "no-key", "bad-yaml",
         "bad-type", "bad-variant"],
)
def test_simulate_errors_are_one_line_with_status_2(extra, match, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["simulate", "--profile", "smoke", "--workers", "1", "--set", f"cache_dir={tmp_path / 'cache'}",
                        *extra], capsys)
    assert_one_line_error(code, err, "simulate", match)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing simulated, nothing written


def test_simulate_unknown_profile_is_one_line_with_status_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["simulate", "--profile", "huge", "--out", "out.zarr"], capsys)
    assert_one_line_error(code, err, "simulate", "huge")


def test_simulate_errors_from_the_console(tmp_path):
    """The same through a real process: status 2, one line on stderr, no traceback."""
    args = ["simulate", "--profile", "smoke", "--out", "out.nc", *cli_sets(SMOKE_OVERRIDES)]
    result = subprocess.run([sys.executable, "-m", "polar4d_lib.cli", *args], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "polar4d simulate: error: dataset path out.nc should end in .zarr; e.g. --out data/smoke.zarr"
    ]
    assert result.stdout == "" and list(tmp_path.iterdir()) == []


def test_commands_are_required(capsys):
    code, _, err = run([], capsys)
    assert code == 2 and "command" in err
    args = cli.parser().parse_args(["info", "--verify", "x.zarr"])
    assert (args.command, args.path, args.verify) == ("info", "x.zarr", True)
    args = cli.parser().parse_args(["simulate", "--out", "x.zarr", "--set", "a=1", "--set", "b=2"])
    assert (args.profile, args.set, args.workers) == ("default", ["a=1", "b=2"], None)
