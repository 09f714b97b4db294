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


ROOT = Path(__file__).resolve().parent.parent


def book_settings(root: Path) -> dict:
    """Config for a book built in ``root``: its own data and cache, one worker, no bars."""
    return {"data_root": str(root / "data"), "cache_dir": str(root / "cache"), "num_workers": 1, "progress_bar": False}


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory) -> Path:
    """The smoke-profile book built once from a clean copy of the sources (notebooks, prose pages,
    _config.yml, _toc.yml) in a temporary folder; returns that folder (``_build/html`` inside)."""
    import os
    import shutil

    from polar4d_lib import book, config

    root = tmp_path_factory.mktemp("book_root")
    (root / "book").mkdir()
    shutil.copytree(ROOT / "notebooks", root / "notebooks", ignore=shutil.ignore_patterns("__pycache__"))
    for page in (ROOT / "book").iterdir():
        if page.is_file():
            shutil.copy(page, root / "book" / page.name)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(ROOT / name, root / name)
    here = Path.cwd()
    os.chdir(root)
    try:
        with config.set(book_settings(root)):
            index = book.run("smoke", root=root)
    finally:
        os.chdir(here)
    assert index == root / "_build" / "html" / "index.html"
    return root
