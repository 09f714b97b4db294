"""One configuration object, like abTEM's ``config``: defaults from ``defaults.yaml``, overridable
with a YAML file (``POLAR4D_CONFIG``), per call, and as a context::

    from polar4d_lib import config
    config.get("seed")
    with config.set({"num_workers": 2}):
        ...
"""

from __future__ import annotations

import builtins
import os
from pathlib import Path
from typing import Any

import yaml

_DEFAULTS_FILE = Path(__file__).with_name("defaults.yaml")


def _load_defaults() -> dict[str, Any]:
    values = yaml.safe_load(_DEFAULTS_FILE.read_text())
    user_file = os.environ.get("POLAR4D_CONFIG")
    if user_file:
        path = Path(user_file)
        if not path.is_file():
            raise FileNotFoundError(f"POLAR4D_CONFIG points to {path}, which does not exist; unset it or fix the path")
        user = yaml.safe_load(path.read_text()) or {}
        _check_keys(user, values)
        values.update(user)
    return values


def check_known_keys(new: Any, known: Any, what: str, error: type[Exception] = ValueError) -> None:
    """Raise ``error`` naming the keys of ``new`` that are not in ``known`` (one line, with the known ones)."""
    unknown = sorted(builtins.set(new) - builtins.set(known))
    if unknown:
        raise error(f"unknown {what}(s) {unknown}; known: {sorted(known)}")


def _check_keys(new: dict[str, Any], known: dict[str, Any]) -> None:
    check_known_keys(new, known, "config key", KeyError)


_config: dict[str, Any] = _load_defaults()


def get(key: str, default: Any = None) -> Any:
    """The current value of ``key`` (``default`` if it is None)."""
    if key not in _config:
        raise KeyError(f"unknown config key {key!r}; known keys are {sorted(_config)}")
    value = _config[key]
    return default if value is None else value


def resolve(key: str, value: Any) -> Any:
    """``value`` if given, else the configured value of ``key`` (for function defaults)."""
    return get(key) if value is None else value


def as_dict() -> dict[str, Any]:
    """A copy of the current configuration."""
    return dict(_config)


class set:  # noqa: A001 - mirrors abtem.config.set / dask.config.set
    """Set configuration values; as a context manager the old values come back on exit."""

    def __init__(self, values: dict[str, Any] | None = None, **kwargs: Any) -> None:
        values = {**(values or {}), **kwargs}
        _check_keys(values, _config)
        self._old = {key: _config[key] for key in values}
        _config.update(values)

    def __enter__(self) -> "set":
        return self

    def __exit__(self, *exc: object) -> None:
        _config.update(self._old)
