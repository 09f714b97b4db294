"""The models a chapter maps with (polar4d_lib.experiments.chapter_models)."""

from __future__ import annotations

import numpy as np
import pytest

from polar4d_lib import experiments, models


def test_chapter_models_loads_the_kinds_asked_then_the_shipped_model(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    with pytest.raises(FileNotFoundError, match="no trained pca-knn"):
        experiments.chapter_models(tmp_path, "smoke", ["pca-knn"])
    rng = np.random.default_rng(0)
    patterns = rng.random((64, 32, 32)).astype(np.float32)
    models.create("physics").fit(patterns, np.arange(64) % 8, 1.5).save(folder / "physics.npz")
    fitted = experiments.chapter_models(tmp_path, "smoke", ["physics"])
    assert list(fitted) == ["Physics", experiments.SHIPPED]
    assert fitted[experiments.SHIPPED].kind == "cnn-stack"
    assert list(experiments.chapter_models(tmp_path, "smoke", None, shipped=False)) == ["Physics"]


def test_chapter_models_says_which_chapter_to_run_first(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"run chapter 02_training with profile='smoke' first"):
        experiments.chapter_models(tmp_path / "nowhere", "smoke")
