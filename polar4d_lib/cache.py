"""Arrays cached on disk under a key of everything that made them: the one key → ``.npz`` cache.

Simulations are slow and deterministic, so each unit of work (a dataset's specimen, a wall scan, a
realistic scan) is stored once as an ``.npz`` named by :func:`key` of its parameters and the library
versions, written atomically (:func:`polar4d_lib.atomic.atomic_write`) and read back without pickles.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from polar4d_lib import config
from polar4d_lib.atomic import atomic_write


def key(payload: Any) -> str:
    """A 24-hex-digit SHA-256 of ``payload`` as sorted JSON (tuples and other sequences as lists)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=list).encode()).hexdigest()[:24]


def path(folder: str, name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the entry ``name`` (``<name>.npz``) of ``folder`` lives under ``cache_dir`` (default: the
    config's ``cache_dir``)."""
    return Path(config.resolve("cache_dir", cache_dir)) / folder / f"{name}.npz"


def save(file: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` to ``file`` atomically."""
    return atomic_write(file, lambda tmp: np.savez(tmp, **arrays))


def load(file: str | os.PathLike, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """The arrays ``names`` (default: all) of a cached ``file``, read into memory without pickles."""
    with np.load(file, allow_pickle=False) as data:
        return {name: data[name] for name in (data.files if names is None else names)}


def cached(file: str | os.PathLike, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays cached at ``file``, or ``compute()``'s, saved there first."""
    if Path(file).exists():
        return load(file)
    arrays = compute()
    save(file, arrays)
    return arrays
