"""Shared fixtures: one tiny simulated dataset per test session, built in a temporary directory.

Everything a test writes (datasets, simulation caches) lies under pytest's temporary directories,
never in the repository.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from polar4d_lib import datasets

# A smoke-profile dataset, smaller still: 3 variants (classes RU, RM, MU), 2 × 2 cells wide, thin (0.8 and
# 1.6 nm: 2 and 4 cells), with the smoke profile's 2 probe settings × 8 positions: 32 patterns per class,
# about 0.4 s per unit once abTEM is warm. tests/test_neural.py picks patterns of classes RM and RU from it
# by their centre-of-mass shift; fewer positions leave it too few. The CLI tests pass the same values
# with --set.
SMOKE_OVERRIDES: dict = {
    "variants": [0, 4, 8],
    "lateral_cells": 2,
    "probe_settings": 2,
    "positions_per_setting": 8,
    "thicknesses_nm": [0.8, 1.6],
}


def smoke_spec(**extra) -> datasets.DatasetSpec:
    """The session dataset's spec, with optional further overrides."""
    return datasets.spec_for_profile("smoke", {**SMOKE_OVERRIDES, **extra})


def cli_sets(overrides: dict) -> list[str]:
    """``--set key=value`` arguments for ``polar4d simulate`` (values written as YAML flow)."""
    args = []
    for key, value in overrides.items():
        args += ["--set", f"{key}={value}"]
    return args


@dataclass(frozen=True)
class BuiltDataset:
    path: Path
    spec: datasets.DatasetSpec
    cache_dir: Path


@pytest.fixture(scope="session")
def smoke_dataset(tmp_path_factory) -> BuiltDataset:
    """The session's dataset (``SMOKE_OVERRIDES``), its spec and its unit cache. Read-only: tests
    that change a dataset copy it first."""
    root = tmp_path_factory.mktemp("smoke_dataset")
    spec = smoke_spec()
    cache = root / "cache"
    path = datasets.build(spec, root / "smoke.zarr", profile="smoke", cache_dir=cache, num_workers=1)
    return BuiltDataset(path=path, spec=spec, cache_dir=cache)


def rel_l1(p: np.ndarray, q: np.ndarray) -> float:
    """Relative L1 difference ||p − q||₁ / ||p||₁ (in float64)."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    return float(np.abs(p - q).sum() / np.abs(p).sum())
