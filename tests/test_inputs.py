"""Input kinds (polar4d_lib.inputs): the registry, which kind a model reads, each kind's scan → inputs
(shapes, window, period) and back, and ``predict_scan`` asking the model's input kind once."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from polar4d_lib import conventions, inputs, models, pacbed
from polar4d_lib.io import Scan
from polar4d_lib.models.stack import default_preprocessor
from polar4d_lib.predict import predict_scan
from polar4d_lib.preprocessing import Preprocessor

SAMPLING = 1.5


def _cell_scan(rx: int = 12, ry: int = 12, step: float | None = 3.95 / 4, seed: int = 0) -> Scan:
    """A scan of a lattice of 4 positions per cell: a bright disk and a dark field that varies over the cell."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:32, :32]
    disk = ((xx - 16) ** 2 + (yy - 16) ** 2 < 36) * 100.0
    cell = disk + rng.uniform(1, 10, (4, 4, 1, 1)) * (1 + rng.random((4, 4, 32, 32)))
    data = np.tile(cell, (rx // 4 + 1, ry // 4 + 1, 1, 1))[:rx, :ry].astype(np.float32)
    return Scan(data, q_sampling_mrad=SAMPLING, scan_step_A=step)


class Recorder:
    """A stand-in model that records the inputs it is given and answers class 0 with certainty."""

    def __init__(self, kind: str = "pca-knn", preprocessor: Preprocessor | None = None, bins: int | None = None):
        self.kind, self.preprocessor, self.metadata, self.seen = kind, preprocessor or Preprocessor(), {}, []
        if bins is not None:
            self.bins = bins

    @property
    def input_kind(self) -> inputs.InputKind:
        return inputs.for_model(self)

    def predict_proba(self, x: np.ndarray, sampling_mrad: float) -> np.ndarray:
        self.seen.append((np.array(x), sampling_mrad))
        return np.eye(conventions.N_CLASSES, dtype=np.float32)[np.zeros(len(x), dtype=int)]

    def predict_maps(self, x: np.ndarray, sampling_mrad: float):
        proba = self.predict_proba(x, sampling_mrad)
        return proba, np.zeros(len(x), dtype=np.int8), np.zeros(len(x))


def test_the_registry_names_three_input_kinds_and_refuses_an_unknown_one():
    assert set(inputs.REGISTRY) == {"single-patterns", "window-means", "cell-stacks"}
    assert inputs.get("cell-stacks").folds_cell and not inputs.get("window-means").folds_cell
    with pytest.raises(ValueError, match="unknown input kind 'folded'; known: single-patterns, window-means, cell-stacks"):
        inputs.get("folded")
    with pytest.raises(ValueError, match="unknown model 'cnn-nothing'"):
        inputs.of_model_kind("cnn-nothing", None)


def test_a_models_input_kind_follows_its_class_and_its_window():
    physics = models.create("physics")
    assert physics.input_kind is inputs.get("single-patterns")
    physics.preprocessor.average_window_A = 3.95
    assert physics.input_kind is inputs.get("window-means")
    assert models.create("linear", preprocessor=Preprocessor(average_window_A=3.95)).input_kind.name == "window-means"
    stack = models.create("cnn-stack")
    assert stack.input_kind is inputs.get("cell-stacks")
    assert inputs.of_model_kind("cnn-stack", None) is inputs.get("cell-stacks")  # folds whatever its window
    assert inputs.get("cell-stacks").recipe_section == "stack_model"
    assert inputs.of_model_kind("cnn-cls", 3.95).recipe_section == "default_model"


def test_single_patterns_go_in_one_per_position():
    scan, model = _cell_scan(), Recorder()
    maps = inputs.get("single-patterns").map_scan(model, scan)
    (x, sampling), = model.seen
    assert x.shape == (144, 32, 32) and sampling == SAMPLING
    np.testing.assert_array_equal(x, scan.data.reshape(144, 32, 32))
    assert maps.probabilities.shape == (144, 8) and maps.window_px == 1 and maps.cell_period_px is None
    assert inputs.get("single-patterns").refusal(model, scan) is None
    assert inputs.get("single-patterns").coarse_step_warning(model, scan) is None


def test_window_means_go_in_as_the_mean_of_one_cell_around_each_position():
    scan, model = _cell_scan(), Recorder(preprocessor=Preprocessor(average_window_A=3.95))
    kind = inputs.get("window-means")
    maps = kind.map_scan(model, scan)
    (x, _), = model.seen
    assert maps.window_px == 4 and "3.95 Å at a 0.9875 Å step" in maps.averaging
    # 12 positions, a window of 4: windows start at 0 … 8 (the edges share theirs), each is asked once
    starts = np.arange(9)
    assert maps.decisions == (9, 9) and maps.decision_stride == 1
    np.testing.assert_array_equal(x, pacbed.window_means(scan.data, starts, starts, 4).reshape(81, 32, 32))
    np.testing.assert_array_equal(x.reshape(9, 9, 32, 32)[pacbed.window_starts(12, 4)][:, pacbed.window_starts(12, 4)],
                                  pacbed.average_scan(scan.data, 4))
    assert "is not below λ/(2α)" in kind.coarse_step_warning(model, scan)  # a/4 aliases a cell mean
    fine = Scan(scan.data, q_sampling_mrad=SAMPLING, scan_step_A=0.4)
    assert kind.coarse_step_warning(model, fine) is None
    assert kind.map_scan(model, scan, window_px=2).window_px == 2


def test_cell_stacks_go_in_once_per_distinct_window_and_come_back_to_every_position():
    scan = _cell_scan(rx=12, ry=10)
    model = Recorder("cnn-stack", default_preprocessor(), bins=4)
    kind = inputs.get("cell-stacks")
    maps = kind.map_scan(model, scan)
    (x, sampling), = model.seen
    # a window of 4 positions starts at 0 … 8 along x (9) and 0 … 6 along y (7): one stack each
    assert x.shape == (9 * 7, 16, 16, 16) and sampling == default_preprocessor().sampling_mrad
    assert maps.probabilities.shape == (120, 8) and maps.classes.shape == (120,)
    assert maps.window_px == 4 and maps.cell_period_px == pytest.approx(4.0) and "folded into 4 × 4 parts" in maps.averaging
    assert kind.coarse_step_warning(model, scan) is None  # the parts stay apart: nothing aliases
    coarse = Scan(scan.data, q_sampling_mrad=SAMPLING, scan_step_A=3.95 / 2)
    assert "scan at steps ≤ 0.99 Å" in kind.refusal(model, coarse)
    with pytest.raises(ValueError, match="needs at least 4"):
        kind.map_scan(model, coarse)


def test_predict_scan_asks_the_models_input_kind(monkeypatch):
    """predict_scan hands the scan to the model's input kind once and shapes what comes back."""
    asked = []

    class Spy(inputs.InputKind):
        name = "spy"

        def map_scan(self, model, scan, window_px=None, dose_e_per_pattern=None, **reading):
            asked.append((model, scan, window_px))
            n = scan.data.shape[0] * scan.data.shape[1]
            proba = np.full((n, 8), 1 / 8, dtype=np.float32)
            return inputs.ScanMaps(proba, np.full(n, 3), np.full(n, 135.0), 5, "as the spy says", 4.5)

        def coarse_step_warning(self, model, scan):
            return "spied"

    spy = Spy()
    monkeypatch.setattr(inputs, "for_model", lambda model: spy)
    model, scan = Recorder(), _cell_scan(rx=4, ry=6)
    prediction = predict_scan(model, scan, window_px=5)
    assert len(asked) == 1 and asked[0][0] is model and asked[0][2] == 5 and not model.seen
    assert prediction.class_map.shape == (4, 6) and np.all(prediction.class_map == 3)
    assert prediction.metadata["averaging"] == "as the spy says" and prediction.metadata["cell_period_px"] == 4.5
    assert prediction.metadata["average_window_px"] == 5 and prediction.metadata["coarse_step_warning"] == "spied"
    assert predict_scan(model, scan, abstain_below=0.5).class_map.min() == -1  # 1/8 < 0.5: abstained


def test_stack_options_need_the_recipes_cell_stacks_section():
    kind = inputs.get("cell-stacks")
    with pytest.raises(ValueError, match="cnn-stack trains on cell stacks"):
        kind.model_options("cnn-stack", SimpleNamespace(cell_stacks=None))
    assert kind.model_options("cnn-stack", SimpleNamespace(cell_stacks={"bins": 2})) == {"bins": 2, "half_cell": True}
    assert inputs.get("single-patterns").model_options("cnn-cls", SimpleNamespace(cell_stacks=None)) == {}
