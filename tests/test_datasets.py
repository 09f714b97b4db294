"""Simulated datasets: layout, labels, round trip, determinism, caching, atomic writes and resuming
(polar4d_lib.datasets)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from conftest import SMOKE_OVERRIDES, cli_sets, smoke_spec
from polar4d_lib import cli, conventions, datasets, profiles

N_UNITS = len(SMOKE_OVERRIDES["variants"])
N_PER_UNIT = SMOKE_OVERRIDES["probe_settings"] * SMOKE_OVERRIDES["positions_per_setting"] * 2  # 2 thicknesses
A = 3.95


def _arrays(dataset: datasets.Dataset) -> dict[str, np.ndarray]:
    return {key: dataset[key] for key in dataset.keys()}


def _unit_files(cache: Path, spec: datasets.DatasetSpec) -> dict[str, Path]:
    """The finished unit files of ``spec`` in ``cache`` (by unit key)."""
    return {u.key(): cache / "units" / f"{u.key()}.npz" for u in spec.units()
            if (cache / "units" / f"{u.key()}.npz").exists()}


# --- layout and labels ---------------------------------------------------------------------------

def test_zarr_layout_and_attributes(smoke_dataset):
    ds = datasets.open_dataset(smoke_dataset.path)
    n = N_UNITS * N_PER_UNIT
    assert len(ds) == n
    assert set(ds.keys()) == set(datasets.ARRAYS)
    group = zarr.open_group(str(smoke_dataset.path), mode="r")
    for key, dtype in datasets.ARRAYS.items():
        assert group[key].dtype == np.dtype(dtype), key
        assert group[key].shape[0] == n, key
    assert group["patterns"].shape == (n, 64, 64)
    for key in ("position_A", "position_frac", "tilt_mrad"):
        assert group[key].shape == (n, 2), key
    assert group["polarization"].shape == (n, 3)
    for key in set(datasets.ARRAYS) - {"patterns", "position_A", "position_frac", "tilt_mrad", "polarization"}:
        assert group[key].shape == (n,), key

    attrs = ds.attrs
    assert attrs["q_sampling_mrad"] == 1.5 and attrs["energy_kev"] == 200.0 and attrs["semiangle_mrad"] == 24.0
    assert attrs["a_A"] == A and attrs["scan_rotation_deg"] == 0.0 and attrs["detector_shape"] == [64, 64]
    assert attrs["schema"] == datasets.SCHEMA and attrs["profile"] == "smoke"
    assert attrs["class_names"] == list(conventions.CLASS_NAMES)
    assert attrs["parameters"] == smoke_dataset.spec.as_dict()
    assert datasets.DatasetSpec.from_dict(attrs["parameters"]) == smoke_dataset.spec
    assert attrs["versions"] == datasets.versions()
    assert attrs["content_sha256"] == datasets.content_sha256(_arrays(ds))
    assert ds.verify()


def test_labels_positions_and_parameters(smoke_dataset):
    ds = datasets.open_dataset(smoke_dataset.path)
    a = _arrays(ds)
    spec = smoke_dataset.spec
    np.testing.assert_array_equal(a["label"], conventions.VARIANT_CLASSES[a["variant"]])
    assert sorted(set(a["variant"].tolist())) == sorted(SMOKE_OVERRIDES["variants"])
    p = conventions.VARIANTS[a["variant"]].astype(float)
    np.testing.assert_allclose(a["polarization"], p / np.linalg.norm(p, axis=1, keepdims=True), rtol=1e-6)
    # Units in grid order, each with its own variant.
    for unit in spec.units():
        rows = a["unit"] == unit.index
        assert rows.sum() == N_PER_UNIT and (a["variant"][rows] == unit.variant).all()
    # Thicknesses: the exit planes, 2 and 4 cells; half the rows each.
    np.testing.assert_allclose(np.unique(a["thickness_nm"]), [2 * A / 10, 4 * A / 10], rtol=1e-6)
    assert (a["thickness_nm"] == a["thickness_nm"].min()).sum() == len(ds) // 2
    # Positions inside the 2 × 2-cell supercell; fractional cell coordinates in [0, 1).
    extent = spec.lateral_cells * A
    assert (a["position_A"] >= 0).all() and (a["position_A"] < extent).all()
    assert (a["position_frac"] >= 0).all() and (a["position_frac"] < 1).all()
    np.testing.assert_allclose(a["position_frac"], np.mod(a["position_A"] / A, 1.0), atol=1e-5)
    # Each unit: its probe settings, each with its own positions, each position seen at both thicknesses.
    for unit in spec.units():
        rows = a["unit"] == unit.index
        draws = unit.probe_draws()
        assert len(draws) == SMOKE_OVERRIDES["probe_settings"]
        assert len(np.unique(a["position_A"][rows], axis=0)) == len(draws) * SMOKE_OVERRIDES["positions_per_setting"]
        for s, draw in enumerate(draws):
            sel = rows & (a["probe_setting"] == s)
            assert sel.sum() == 2 * SMOKE_OVERRIDES["positions_per_setting"]
            np.testing.assert_allclose(a["defocus_nm"][sel], draw.defocus_nm, rtol=1e-6)
            np.testing.assert_allclose(a["astigmatism_nm"][sel], draw.astigmatism_nm, rtol=1e-6)
            np.testing.assert_allclose(a["astigmatism_angle_deg"][sel], draw.astigmatism_angle_deg, rtol=1e-6)
        assert len(set(a["defocus_nm"][rows].tolist())) == len(draws)  # the settings differ
    lo, hi = spec.defocus_nm
    assert (a["defocus_nm"] >= lo).all() and (a["defocus_nm"] <= hi).all()
    assert (a["astigmatism_nm"] >= 0).all() and (a["astigmatism_nm"] <= spec.astigmatism_max_nm).all()
    assert (a["cs_um"] == 0).all() and (a["tilt_mrad"] == 0).all() and (a["defect"] == 0).all()
    assert (a["disorder_seed"] == 0).all()
    # Patterns: fractions of the incident beam per pixel; a thin specimen keeps nearly all of it on the
    # ±48 mrad detector.
    totals = a["patterns"].sum(axis=(1, 2))
    assert (a["patterns"] >= 0).all() and (totals > 0.9).all() and (totals < 1.0 + 1e-3).all()


# --- round trip, checksum -----------------------------------------------------------------------------

def test_round_trip_equals_what_the_units_produced(smoke_dataset):
    spec = smoke_dataset.spec
    files = _unit_files(smoke_dataset.cache_dir, spec)
    assert len(files) == N_UNITS
    parts = []
    for unit in spec.units():
        with np.load(files[unit.key()], allow_pickle=False) as data:
            assert set(data.files) == set(datasets.ARRAYS)
            parts.append({key: data[key] for key in data.files})
    ds = datasets.open_dataset(smoke_dataset.path)
    for key in datasets.ARRAYS:
        expected = np.concatenate([p[key] for p in parts])
        got = ds[key]
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected, err_msg=key)


@pytest.mark.parametrize("key, index, value", [("label", 0, 5), ("patterns", (3, 32, 32), 0.123), ("position_A", (1, 0), 0.5)])
def test_tampering_breaks_verify(smoke_dataset, tmp_path, key, index, value):
    copy = tmp_path / "copy.zarr"
    shutil.copytree(smoke_dataset.path, copy)
    assert datasets.open_dataset(copy).verify()
    group = zarr.open_group(str(copy), mode="r+")
    assert group[key][index] != value
    group[key][index] = value
    assert not datasets.open_dataset(copy).verify()


# --- determinism and caching ----------------------------------------------------------------------

def _cli_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "POLAR4D_CONFIG"}


def test_rebuild_in_another_process_with_a_separate_cache_is_identical(smoke_dataset, tmp_path):
    """Bit for bit, across processes: a checksum that changes from run to run is no checksum, and a
    resumed build mixes units from several processes."""
    out = tmp_path / "again.zarr"
    args = ["simulate", "--profile", "smoke", "--out", str(out), "--workers", "1",
            "--set", f"cache_dir={tmp_path / 'cache'}", *cli_sets(SMOKE_OVERRIDES)]
    result = subprocess.run([sys.executable, "-m", "polar4d_lib.cli", *args], cwd=tmp_path, env=_cli_env(),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    again, first = datasets.open_dataset(out), datasets.open_dataset(smoke_dataset.path)
    assert f"content_sha256 {again.attrs['content_sha256']}" in result.stdout
    for key in datasets.ARRAYS:
        np.testing.assert_array_equal(again[key], first[key], err_msg=key)
    assert again.attrs["content_sha256"] == first.attrs["content_sha256"]


def test_another_seed_gives_other_patterns(smoke_dataset, tmp_path):
    spec = smoke_spec(variants=[0], seed=889)
    assert spec.units()[0].key() != smoke_dataset.spec.units()[0].key()
    other = datasets.open_dataset(datasets.build(spec, tmp_path / "s.zarr", cache_dir=tmp_path / "cache", num_workers=1))
    first = datasets.open_dataset(smoke_dataset.path)
    rows = first["variant"] == 0
    assert other.attrs["content_sha256"] != first.attrs["content_sha256"]
    assert not np.allclose(other["position_A"], first["position_A"][rows])
    assert not np.allclose(other["defocus_nm"], first["defocus_nm"][rows])
    assert np.abs(other["patterns"] - first["patterns"][rows]).max() > 0.1 * first["patterns"].max()
    np.testing.assert_array_equal(other["label"], first["label"][rows])


def test_units_come_from_the_cache_and_do_not_depend_on_the_other_variants(smoke_dataset, tmp_path, monkeypatch):
    def no_simulation(unit):
        raise AssertionError(f"unit {unit.variant} was simulated although it is cached")

    monkeypatch.setattr(datasets, "_simulate_unit", no_simulation)
    spec = smoke_spec(variants=[4])
    path = datasets.build(spec, tmp_path / "v4.zarr", cache_dir=smoke_dataset.cache_dir, num_workers=1)
    subset, first = datasets.open_dataset(path), datasets.open_dataset(smoke_dataset.path)
    rows = first["variant"] == 4
    for key in set(datasets.ARRAYS) - {"unit"}:
        np.testing.assert_array_equal(subset[key], first[key][rows], err_msg=key)
    assert (subset["unit"] == 0).all()


def test_cache_keys():
    spec = smoke_spec()
    keys = [u.key() for u in spec.units()]
    assert len(set(keys)) == len(keys) == N_UNITS
    assert [u.key() for u in smoke_spec().units()] == keys  # stable
    assert smoke_spec(variants=[8, 0]).units()[1].key() == keys[0]  # independent of the grid around it
    for change in ({"seed": 1}, {"lateral_cells": 4}, {"simulation.q_sampling_mrad": 1.0}, {"thicknesses_nm": [0.8]},
                   {"displacements": {"nb_A": 0.2, "o_A": 0.08, "a_A": 0.02}}):
        assert smoke_spec(**change).units()[0].key() != keys[0], change


def test_cell_grid_positions_are_whole_cell_rasters_and_random_tilts_stay_in_their_disk():
    spec = smoke_spec(cell_grid=True, positions_per_setting=16, tilt_max_mrad=0.5, tilts_mrad=[[0.1, 0.0]])
    extent = SMOKE_OVERRIDES["lateral_cells"] * A
    for unit in spec.units():
        positions = unit.probe_positions()
        assert len(positions) == SMOKE_OVERRIDES["probe_settings"]
        for p in positions:
            assert p.shape == (16, 2) and np.all((p >= 0) & (p < extent))
            # a 4 × 4 raster at a/4: every fractional offset 0, 1/4, 2/4, 3/4 (from the origin) once per axis pair
            frac = np.mod((p - p[0]) / A, 1.0) * 4
            np.testing.assert_allclose(frac, np.round(frac), atol=1e-9)
            assert len({tuple(np.round(f).astype(int) % 4) for f in frac}) == 16
        # the specimen's tilt: its listed 0.1 mrad plus a random one within 0.5 mrad, fixed by its seed
        assert np.hypot(unit.tilt_mrad[0] - 0.1, unit.tilt_mrad[1]) <= 0.5 + 1e-3
    tilts = [u.tilt_mrad for u in spec.units()]
    assert len(set(tilts)) == len(tilts) and tilts == [u.tilt_mrad for u in spec.units()]
    assert [u.key() for u in spec.units()] != [u.key() for u in smoke_spec(cell_grid=True, positions_per_setting=16).units()]
    # random positions stay random (and their keys as before cell grids existed)
    p = smoke_spec().units()[0].probe_positions()[0]
    assert not np.allclose(np.mod(p[1] - p[0], A / 4) % (A / 4), 0)


# --- atomic writes ---------------------------------------------------------------------------------

def test_existing_dataset_is_replaced_only_by_a_complete_build(smoke_dataset, tmp_path, monkeypatch):
    out = tmp_path / "data.zarr"
    datasets.build(smoke_dataset.spec, out, cache_dir=smoke_dataset.cache_dir, num_workers=1)  # all cached
    checksum = datasets.open_dataset(out).attrs["content_sha256"]

    def crash(unit):
        raise RuntimeError("simulated crash")

    with monkeypatch.context() as m:
        m.setattr(datasets, "_simulate_unit", crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            datasets.build(smoke_spec(seed=4242), out, cache_dir=tmp_path / "cache", num_workers=1)
    old = datasets.open_dataset(out)
    assert old.attrs["content_sha256"] == checksum and old.verify()
    assert [p.name for p in tmp_path.iterdir() if p.name != "cache"] == ["data.zarr"]  # no temporary copies

    datasets.build(smoke_spec(variants=[8]), out, cache_dir=smoke_dataset.cache_dir, num_workers=1)
    new = datasets.open_dataset(out)
    assert len(new) == N_PER_UNIT and (new["variant"] == 8).all() and new.verify()
    assert new.attrs["content_sha256"] != checksum
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary or old copies


def _wait_for_a_unit(proc, cache: Path, spec, log: Path, timeout_s: float = 300.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = len(_unit_files(cache, spec))
        if done:
            return done
        if proc.poll() is not None:
            pytest.fail(f"simulate exited ({proc.returncode}) before finishing a unit: {log.read_text()[-2000:]}")
        time.sleep(0.005)
    pytest.fail("no unit finished in time")


def test_resume_after_sigkill_equals_an_uninterrupted_build(smoke_dataset, tmp_path, monkeypatch):
    out, cache, log = tmp_path / "resumed.zarr", tmp_path / "cache", tmp_path / "simulate.log"
    args = ["simulate", "--profile", "smoke", "--out", str(out), "--workers", "1",
            "--set", f"cache_dir={cache}", *cli_sets(SMOKE_OVERRIDES)]
    env = _cli_env()
    spec = smoke_dataset.spec
    with open(log, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "polar4d_lib.cli", *args], cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
        try:
            done = _wait_for_a_unit(proc, cache, spec, log)
            os.killpg(proc.pid, signal.SIGKILL)  # the process group this test started, nothing else
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done = len(_unit_files(cache, spec))
    assert 1 <= done < N_UNITS, "the kill came too late to interrupt the build"

    # Never half-written: no dataset, no temporary group beside it.
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    # Finished units are complete files named by their key; anything else (a partial write) is not a unit.
    keys = {u.key() for u in spec.units()}
    for path in (cache / "units").iterdir():
        if path.name.endswith(".npz") and path.stem in keys:
            with np.load(path) as data:
                assert set(data.files) == set(datasets.ARRAYS)
        else:
            assert path.name.endswith(".tmp.npz"), path.name

    # Resume: only the missing units are simulated, and the result is the uninterrupted build.
    simulated = []
    real = datasets._simulate_unit
    monkeypatch.setattr(datasets, "_simulate_unit", lambda unit: simulated.append(unit.variant) or real(unit))
    monkeypatch.chdir(tmp_path)
    assert cli.main(args) == 0
    assert len(simulated) == N_UNITS - done
    resumed = datasets.open_dataset(out)
    assert resumed.verify()
    assert resumed.attrs["content_sha256"] == datasets.open_dataset(smoke_dataset.path).attrs["content_sha256"]


# --- wrong inputs ----------------------------------------------------------------------------------

def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_open_dataset_refuses_what_is_not_a_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match="no dataset") as info:
        datasets.open_dataset(tmp_path / "missing.zarr")
    _one_line(info)
    text = tmp_path / "notes.zarr"
    text.write_text("not zarr")
    with pytest.raises(ValueError, match="not a zarr dataset") as info:
        datasets.open_dataset(text)
    _one_line(info)
    empty = tmp_path / "empty.zarr"
    empty.mkdir()
    with pytest.raises(ValueError) as info:
        datasets.open_dataset(empty)
    _one_line(info)
    foreign = tmp_path / "foreign.zarr"
    group = zarr.open_group(str(foreign), mode="w")
    group.create_array("something", data=np.zeros(3))
    with pytest.raises(ValueError, match="not a polar4d dataset") as info:
        datasets.open_dataset(foreign)
    assert "patterns" in _one_line(info)
    group.create_array("patterns", data=np.zeros((3, 4, 4), dtype=np.float32))
    group.create_array("label", data=np.zeros(3, dtype=np.int8))
    group.create_array("thickness_nm", data=np.zeros(3, dtype=np.float32))
    group.create_array("position_A", data=np.zeros((3, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="q_sampling_mrad") as info:  # no calibration: refused
        datasets.open_dataset(foreign)
    _one_line(info)


def test_missing_array_is_a_key_error(smoke_dataset):
    with pytest.raises(KeyError, match="no array 'nope'"):
        datasets.open_dataset(smoke_dataset.path)["nope"]


def test_build_refuses_a_path_without_zarr_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"\.zarr") as info:
        datasets.build(smoke_spec(), tmp_path / "out.h5", cache_dir=tmp_path / "cache", num_workers=1)
    _one_line(info)
    assert not (tmp_path / "out.h5").exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize(
    "overrides, error, match",
    [
        ({"variants": [12]}, ValueError, "variant 12"),
        ({"probe_settings": 0}, ValueError, "at least 1"),
        ({"defocus_nm": [2.0, -2.0]}, ValueError, "low"),
        ({"cell_grid": True, "positions_per_setting": 8}, ValueError, "square number"),
        ({"tilt_max_mrad": -0.1}, ValueError, "tilt_max_mrad"),
        ({"cell_grid": "yes"}, ValueError, "true or false"),
        ({"no_such_parameter": 1}, KeyError, "no_such_parameter"),
        ({"simulation.no_such": 1}, KeyError, "simulation.no_such"),
    ],
)
def test_spec_validation(overrides, error, match):
    with pytest.raises(error, match=match):
        smoke_spec(**overrides)


def test_spec_overrides_and_profiles():
    spec = smoke_spec(**{"simulation.q_sampling_mrad": 1.0, "seed": 3})
    assert spec.simulation.q_sampling_mrad == 1.0 and spec.seed == 3
    assert spec.variants == (0, 4, 8) and spec.thicknesses_nm == (0.8, 1.6)
    for profile in profiles.names():
        assert datasets.spec_for_profile(profile).units()
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        datasets.spec_for_profile("huge")


def test_a_local_cluster_build_leaves_the_environment_as_it_was(tmp_path, monkeypatch):
    """dask's LocalCluster sets OMP_NUM_THREADS=1 (and MKL/OPENBLAS) in the parent for its workers;
    left there, every process started later (the book's notebook kernels) trained torch on one core."""
    import os

    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    before = dict(os.environ)
    spec = smoke_spec(variants=[0, 4], thicknesses_nm=[0.8], positions_per_setting=2, probe_settings=1)
    datasets.build(spec, tmp_path / "two.zarr", cache_dir=tmp_path / "cache", num_workers=2)
    assert dict(os.environ) == before
