"""The one key → .npz cache: stable keys, computed once, atomic, read back without pickles."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from polar4d_lib import cache, config
from polar4d_lib.realistic import RealisticScanSpec
from polar4d_lib.wall_scan import WallScanSpec


def test_key_is_the_sha256_of_sorted_json_so_existing_caches_stay_valid():
    payload = {"b": (1, 2), "a": {"y": 1.5, "x": [0]}}
    expected = hashlib.sha256(json.dumps(payload, sort_keys=True, default=list).encode()).hexdigest()[:24]
    assert cache.key(payload) == expected and len(expected) == 24
    assert cache.key({"a": {"x": [0], "y": 1.5}, "b": [1, 2]}) == expected  # order and tuple/list alike
    assert cache.key({**payload, "c": 0}) != expected


def test_cached_computes_once_and_reads_back(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"patterns": np.arange(6, dtype=np.float32).reshape(2, 3), "labels": np.array([3, 4], np.int8)}

    file = cache.path("scans", "wall-abc", tmp_path)
    assert file == tmp_path / "scans" / "wall-abc.npz"
    first = cache.cached(file, compute)
    second = cache.cached(file, compute)
    assert len(calls) == 1 and file.exists()
    for name in ("patterns", "labels"):
        np.testing.assert_array_equal(first[name], second[name])
        assert first[name].dtype == second[name].dtype
    assert list(cache.load(file, ["labels"])) == ["labels"]
    assert not list(file.parent.glob("*.tmp*"))  # written atomically


def test_a_failed_computation_leaves_no_file(tmp_path):
    file = cache.path("units", "k", tmp_path)

    def fail():
        raise RuntimeError("simulation failed")

    with pytest.raises(RuntimeError, match="simulation failed"):
        cache.cached(file, fail)
    assert not file.exists()


def test_the_default_folder_is_the_configured_cache_dir(tmp_path):
    with config.set({"cache_dir": str(tmp_path / "c")}):
        assert cache.path("units", "x") == tmp_path / "c" / "units" / "x.npz"


def test_scan_specs_key_through_the_cache():
    wall, scan = WallScanSpec(), RealisticScanSpec(variant=0, thicknesses_nm=(15.8,))
    assert len(wall.key()) == 24 and wall.key() == WallScanSpec().key()
    assert scan.key() != RealisticScanSpec(variant=1, thicknesses_nm=(15.8,)).key()
