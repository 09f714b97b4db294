"""The configuration object (polar4d_lib.config)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from polar4d_lib import config


def test_defaults_are_loaded():
    values = config.as_dict()
    assert {"data_root", "cache_dir", "seed", "device", "num_workers", "scheduler", "progress_bar"} <= set(values)
    assert config.get("seed") == 888
    assert config.get("scheduler") is None
    assert config.get("scheduler", "tcp://x:1") == "tcp://x:1"  # the default stands in for None
    assert config.resolve("seed", 5) == 5 and config.resolve("seed", None) == 888
    values["seed"] = -1
    assert config.get("seed") == 888  # as_dict is a copy


def test_set_as_context_restores():
    before = config.as_dict()
    with config.set({"seed": 1, "device": "cuda"}, num_workers=3) as ctx:
        assert isinstance(ctx, config.set)
        assert (config.get("seed"), config.get("device"), config.get("num_workers")) == (1, "cuda", 3)
        with config.set(seed=2):
            assert config.get("seed") == 2
        assert config.get("seed") == 1
    assert config.as_dict() == before


def test_set_restores_after_an_exception():
    before = config.as_dict()
    with pytest.raises(RuntimeError):
        with config.set(seed=11):
            raise RuntimeError("boom")
    assert config.as_dict() == before


def test_set_without_context_persists_until_undone():
    before = config.get("data_root")
    setter = config.set(data_root="/elsewhere")
    try:
        assert config.get("data_root") == "/elsewhere"
    finally:
        setter.__exit__(None, None, None)
    assert config.get("data_root") == before


def test_unknown_keys_raise_key_error():
    before = config.as_dict()
    with pytest.raises(KeyError, match="no_such_key"):
        config.get("no_such_key")
    with pytest.raises(KeyError, match="no_such_key"):
        config.set({"seed": 3, "no_such_key": 1})
    assert config.as_dict() == before  # nothing of a rejected set is applied
    with pytest.raises(KeyError, match="no_such_key"):
        config.resolve("no_such_key", None)


def _import_with_config_file(tmp_path, text: str | None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    path = tmp_path / "polar4d.yaml"
    if text is not None:
        path.write_text(text)
    env["POLAR4D_CONFIG"] = str(path)
    code = "from polar4d_lib import config; print(config.get('seed'), config.get('device'))"
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)


def test_config_file_overrides_defaults(tmp_path):
    result = _import_with_config_file(tmp_path, "seed: 5\ndevice: cuda\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["5", "cuda"]


def test_config_file_with_unknown_key_or_missing_is_refused(tmp_path):
    result = _import_with_config_file(tmp_path, "sede: 5\n")
    assert result.returncode != 0 and "KeyError" in result.stderr and "sede" in result.stderr
    missing = tmp_path / "missing"
    missing.mkdir()
    result = _import_with_config_file(missing, None)
    assert result.returncode != 0 and "FileNotFoundError" in result.stderr and "POLAR4D_CONFIG" in result.stderr
