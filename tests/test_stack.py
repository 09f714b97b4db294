"""The cell-stack model (``cnn-stack``): the symmetry it is trained and predicts with, its training from
cell rasters, save/load, and ``polar4d predict`` folding each window of a scan at the lattice period."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polar4d_lib import conventions, evaluation, experiments, inputs, models, pacbed, recipes
from polar4d_lib.datasets import open_dataset
from polar4d_lib.io import Scan
from polar4d_lib.models.networks import build_network
from polar4d_lib.models.stack import (StackD4, default_preprocessor, move_classes, move_stacks, part_operations,
                                     stack_operations)
from polar4d_lib.predict import predict_scan

#: The robust profile's stack recipe at test size: whole 4 × 4 rasters (a/4), 3 epochs.
SMALL = {"max_epochs": 3, "batch_size": 16,
         "cell_stacks": {"bins": 4, "strides": [1], "electrons": [1e7, 1e8], "window_A": 3.95, "min_electrons": 2e6}}


@pytest.fixture(scope="module")
def grid_dataset(tmp_path_factory):
    """Two classes (RU and an inclined variant), 12 probe settings × a 4 × 4 raster of one cell (a/4) each."""
    from polar4d_lib import datasets
    from tests.conftest import smoke_spec

    tmp = tmp_path_factory.mktemp("stack")
    spec = smoke_spec(variants=[0, 4], probe_settings=12, thicknesses_nm=[0.8, 1.6], cell_grid=True,
                      positions_per_setting=16)
    return datasets.build(spec, tmp / "grid.zarr", profile="smoke", cache_dir=tmp / "cache", num_workers=1)


@pytest.fixture(scope="module")
def trained(grid_dataset):
    return experiments.train_and_evaluate("cnn-stack", grid_dataset, "robust", 888, "blocked", overrides=SMALL,
                                          stage="stack_model")


def _rasters(path) -> tuple[np.ndarray, np.ndarray]:
    """Every probe setting's 4 × 4 raster (G, 4, 4, Qx, Qy) in raster order and its class."""
    ds = open_dataset(path)
    groups = inputs.position_groups(ds)
    raster = pacbed.raster_index(ds["position_frac"], groups, 4)
    out, labels = [], []
    for g in np.unique(groups):
        m = np.flatnonzero(groups == g)
        m = m[np.lexsort((raster[m, 1], raster[m, 0]))]
        out.append(ds["patterns"][m].reshape(4, 4, *ds["patterns"].shape[1:]))
        labels.append(ds["label"][m[0]])
    return np.stack(out), np.asarray(labels)


def test_each_symmetry_of_a_stack_is_the_stack_of_the_moved_scan():
    """g acting on a scan (its patterns and its grid of positions) and then folded gives the fold moved by
    part_operations' g: the stack network's D4 is the scan's, not a guess."""
    rng = np.random.default_rng(3)
    scan = rng.random((4, 4, 9, 9)).astype(np.float32)
    stack = pacbed.cell_stack(scan, 4)
    ops = conventions.d4_operations()
    assert len(part_operations(4)) == len(ops) == 8
    for (mirror, k, perm), (on_pattern, on_class) in zip(part_operations(4), ops):
        moved_scan = np.moveaxis(on_pattern(np.moveaxis(on_pattern(scan), (0, 1), (-2, -1))), (-2, -1), (0, 1))
        expected = pacbed.cell_stack(np.ascontiguousarray(moved_scan), 4)
        got = move_stacks(torch.from_numpy(stack[None]), mirror, k, perm)[0].numpy()
        np.testing.assert_allclose(got, expected, atol=1e-6)
        assert sorted(perm) == list(range(16)) and perm[0] == 0  # a permutation keeping the first part first
        np.testing.assert_array_equal(move_classes(np.arange(8), mirror, k), on_class(np.arange(8)))


def test_stack_d4_gives_each_stack_one_of_its_images_with_the_class_moved_alike():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((40, 16, 8, 8)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 8, 40))
    out, labels = StackD4(4)(x, y, torch.Generator().manual_seed(1))
    seen = set()
    for i in range(len(x)):
        hits = [o for o, (m, k, p) in enumerate(part_operations(4))
                if torch.equal(out[i], move_stacks(x[i:i + 1], m, k, p)[0])
                and labels[i].item() == move_classes(np.array([y[i].item()]), m, k)[0]]
        assert hits, f"stack {i} is not one of its 8 images with its class moved alike"
        seen.add(hits[0])
    assert len(seen) > 4  # drawn among the 8


def test_half_cell_operations_are_the_stack_registered_at_the_other_column_site():
    """The 8 further elements of stack_operations(half_cell=True) are D4 after rolling the parts by half a
    cell (the fold as if the part half a cell away were the brightest); the 16 form a group (D4 × Z2)."""
    rng = np.random.default_rng(4)
    stack = pacbed.cell_stack(rng.random((4, 4, 9, 9)).astype(np.float32), 4)
    other_site = np.roll(stack.reshape(4, 4, 9, 9), (-2, -2), axis=(0, 1)).reshape(16, 9, 9)
    ops = stack_operations(4, True)
    assert len(ops) == 16 and [tuple(p) for _, _, p in ops[:8]] == [tuple(p) for _, _, p in part_operations(4)]
    for (mirror, k, perm), (m2, k2, perm2) in zip(ops[:8], ops[8:]):
        assert (mirror, k) == (m2, k2)
        expected = move_stacks(torch.from_numpy(other_site[None]), mirror, k, perm)[0].numpy()
        np.testing.assert_array_equal(move_stacks(torch.from_numpy(stack[None]), m2, k2, perm2)[0].numpy(), expected)
    images = {move_stacks(move_stacks(torch.from_numpy(stack[None]), *a), *b)[0].numpy().tobytes()
              for a in ops for b in ops}
    assert len(images) == 16  # closed: composing any two gives one of the 16
    with pytest.raises(ValueError, match="needs an even number of bins, got 3"):
        stack_operations(3, True)


def test_stack_d4_with_half_cell_draws_among_16_images():
    rng = np.random.default_rng(5)
    x = torch.from_numpy(rng.random((200, 16, 4, 4)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 8, 200))
    out, labels = StackD4(4, half_cell=True)(x, y, torch.Generator().manual_seed(2))
    ops = stack_operations(4, True)
    seen = set()
    for i in range(len(x)):
        hits = [o for o, (m, k, p) in enumerate(ops) if torch.equal(out[i], move_stacks(x[i:i + 1], m, k, p)[0])
                and labels[i].item() == move_classes(np.array([y[i].item()]), m, k)[0]]
        assert len(hits) == 1, f"stack {i} is not exactly one of its 16 images with its class moved alike"
        seen.add(hits[0])
    assert seen == set(range(16))


def test_off_grid_training_stacks_are_added_per_training_raster_with_their_class(grid_dataset):
    ds = open_dataset(grid_dataset)
    split = evaluation.make_split(ds, "blocked", 888)
    plain = recipes.TrainSettings.for_profile("robust", SMALL, stage="stack_model")
    extra = {**SMALL, "cell_stacks": {**SMALL["cell_stacks"], "off_grid_per_raster": 3, "off_grid_periods": [4.0, 6.5]}}
    settings = recipes.TrainSettings.for_profile("robust", extra, stage="stack_model")
    (x0, y0), _, (t0, u0) = inputs.cell_stack_parts(ds, split, plain, "robust", 888)
    (x1, y1), _, (t1, u1) = inputs.cell_stack_parts(ds, split, settings, "robust", 888)
    groups = inputs.position_groups(ds)
    rasters = {g: int(ds["label"][np.flatnonzero(groups == g)[0]]) for g in np.unique(groups[split.train])}
    per_class = np.bincount(list(rasters.values()), minlength=conventions.N_CLASSES)
    assert x1.shape[1:] == x0.shape[1:] and len(x1) == len(x0) + 3 * len(rasters)
    np.testing.assert_array_equal(np.bincount(y1, minlength=8), np.bincount(y0, minlength=8) + 3 * per_class)
    np.testing.assert_array_equal(t1, t0)  # the holdout stays the exact rasters' folds
    np.testing.assert_array_equal(u1, u0)
    again = inputs.cell_stack_parts(ds, split, settings, "robust", 888)[0][0]
    np.testing.assert_array_equal(again, x1)  # seeded
    bad = {**SMALL, "cell_stacks": {**SMALL["cell_stacks"], "off_grid_per_raster": 1, "off_grid_periods": [3.0, 6.0]}}
    with pytest.raises(ValueError, match="off_grid_periods"):
        inputs.cell_stack_parts(ds, split, recipes.TrainSettings.for_profile("robust", bad, stage="stack_model"), "robust", 888)


def test_only_the_custom_cnn_takes_several_channels():
    net = build_network("cnn", None, "cls", size=16, channels=16)
    assert net(torch.zeros(2, 16, 16, 16)).shape == (2, 8)
    with pytest.raises(ValueError, match="only the custom CNN takes 16 input channels"):
        build_network("resnet", 18, "cls", size=32, channels=16)


def test_stack_model_trains_on_cell_rasters_and_round_trips(trained, tmp_path):
    model, holdout = trained
    assert model.kind == "cnn-stack" and model.bins == 4 and model.d4_average
    assert model.preprocessor.sampling_mrad == 4.5 and model.preprocessor.size == 16
    assert model.preprocessor.average_window_A == pytest.approx(3.95)
    assert holdout["test_inputs"] == "noise-free cell stacks of whole groups"
    assert holdout["n"] == 4 and len(holdout["confusion"]) == 8  # the 2 × 2 held-out probe settings' rasters
    assert model.metadata["n_train"] + model.metadata["n_val"] > 0
    stacks = np.random.default_rng(1).random((5, 16, 40, 40)).astype(np.float32)
    proba = model.predict_proba(stacks, 2.0)
    assert proba.shape == (5, 8) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    path = model.save(tmp_path / "stack.pt")
    loaded = models.load_model(path)  # torch.load(weights_only=True) inside
    assert loaded.kind == "cnn-stack" and loaded.bins == 4
    np.testing.assert_array_equal(loaded.predict_proba(stacks, 2.0), proba)
    with pytest.raises(ValueError, match=r"classifies cell stacks \(N, 16, Qx, Qy\)"):
        model.predict_proba(stacks[:, :4], 2.0)


def test_a_stack_model_saved_before_half_cell_loads_reading_one_site(trained, tmp_path):
    import json

    model, _ = trained
    assert model.half_cell  # the default, and the profile's
    saved = torch.load(model.save(tmp_path / "new.pt"), weights_only=True)
    header = json.loads(saved["header"])
    del header["metadata"]["params"]["half_cell"]
    torch.save({**saved, "header": json.dumps(header)}, tmp_path / "old.pt")
    old = models.load_model(tmp_path / "old.pt")
    assert not old.half_cell and models.load_model(tmp_path / "new.pt").half_cell
    stacks = np.random.default_rng(6).random((3, 16, 20, 20)).astype(np.float32)
    one_site = model.__class__(preprocessor=model.preprocessor, half_cell=False)
    one_site.__dict__.update({k: v for k, v in model.__dict__.items() if k != "half_cell"})
    np.testing.assert_allclose(old.predict_proba(stacks, 2.0), one_site.predict_proba(stacks, 2.0), atol=1e-6)


def test_stack_model_is_exactly_d4_equivariant_and_blind_to_the_registered_site(trained):
    model, _ = trained
    stack = pacbed.cell_stack(np.random.default_rng(2).random((4, 4, 17, 17)).astype(np.float32), 4)
    base = model.predict_proba(stack[None], 1.5)[0]
    for mirror, k, perm in stack_operations(4, True):
        moved = move_stacks(torch.from_numpy(stack[None]), mirror, k, perm).numpy()
        proba = model.predict_proba(moved, 1.5)[0]
        # the moved stack's class g(c) is the original's class c
        np.testing.assert_allclose(proba[move_classes(np.arange(8), mirror, k)], base, atol=1e-5)


def test_predict_folds_each_window_of_a_scan_at_the_lattice_period(trained, grid_dataset):
    model, _ = trained
    rasters, labels = _rasters(grid_dataset)
    cell = rasters[0]
    periodic = np.tile(cell, (3, 3, 1, 1))  # 3 × 3 cells at a/4: every window holds the same cell
    sampling = float(open_dataset(grid_dataset).attrs["q_sampling_mrad"])
    for step in (3.95 / 4, None):  # the step given, or the lattice period read from the scan
        prediction = predict_scan(model, Scan(periodic * 1e6, q_sampling_mrad=sampling, scan_step_A=step))
        assert prediction.class_map.shape == (12, 12) and prediction.probabilities.shape == (12, 12, 8)
        assert prediction.metadata["cell_period_px"] == pytest.approx(4.0, abs=0.1)  # read to ±0.1 without a step
        assert prediction.metadata["coarse_step_warning"] is None
        expected = model.predict_proba(pacbed.cell_stack(cell, 4)[None], sampling)[0]
        np.testing.assert_allclose(prediction.probabilities.reshape(-1, 8), np.broadcast_to(expected, (144, 8)),
                                   atol=1e-5)


def test_predict_folds_a_scan_whose_step_does_not_divide_the_cell(trained, grid_dataset):
    """At 0.9 Å a cell is 4.39 positions: a window of round(4.39) = 4 positions misses the cell's last
    part, so the stack model's window is the 5 positions that cover it, at every dose."""
    model, _ = trained
    cell = _rasters(grid_dataset)[0][0]
    sampling = float(open_dataset(grid_dataset).attrs["q_sampling_mrad"])
    scan = Scan(np.tile(cell, (3, 3, 1, 1)), q_sampling_mrad=sampling, scan_step_A=0.9)
    # the model asks 2e6 e of a window: at 1e4 e/pattern a cell of 5 × 5 positions holds 2.5e5, so 3 × 3
    # cells of 4.39 positions, which 14 cover
    for dose, window in ((1e6, 5), (1e4, 14)):
        prediction = predict_scan(model, scan, dose_e_per_pattern=dose)
        assert prediction.metadata["average_window_px"] == window
        assert prediction.metadata["cell_period_px"] == pytest.approx(3.95 / 0.9)
        assert prediction.probabilities.shape == (12, 12, 8) and np.all(np.isfinite(prediction.probabilities))


def test_predict_with_a_stack_model_refuses_scans_it_cannot_fold(trained, grid_dataset):
    model, _ = trained
    cell = _rasters(grid_dataset)[0][0] * 1e6
    with pytest.raises(ValueError, match="needs at least 4: scan at steps ≤ 0.99 Å"):
        predict_scan(model, Scan(np.tile(cell, (3, 3, 1, 1)), q_sampling_mrad=1.5, scan_step_A=1.975))
    with pytest.raises(ValueError, match="smaller than one unit cell"):
        predict_scan(model, Scan(cell[:3], q_sampling_mrad=1.5, scan_step_A=3.95 / 4))
    noise = np.random.default_rng(0).poisson(5.0, (12, 12, 16, 16)).astype(np.float32)
    with pytest.raises(ValueError, match="no lattice shows in the scan; pass --scan-step-A"):
        predict_scan(model, Scan(noise, q_sampling_mrad=1.5))


def test_a_lattice_period_read_just_below_the_parts_is_taken_as_them(trained, grid_dataset, monkeypatch):
    """The period read from a scan is known to about ±0.1 position: an a/4 scan read as 3.9 is folded at 4;
    one read as 3.7 (a coarser step) is refused like a given step of that size."""

    model, _ = trained
    scan = Scan(np.tile(_rasters(grid_dataset)[0][0] * 1e6, (3, 3, 1, 1)), q_sampling_mrad=1.5)
    monkeypatch.setattr(pacbed, "lattice_period_px", lambda data: 3.9)
    period, how = model.input_kind.cell_period_px(model, scan)
    assert period == 4.0 and "3.90 positions taken as 4" in how
    assert predict_scan(model, scan).metadata["cell_period_px"] == 4.0
    monkeypatch.setattr(pacbed, "lattice_period_px", lambda data: 3.7)
    with pytest.raises(ValueError, match="3.70 probe positions per unit cell .* needs at least 4"):
        model.input_kind.cell_period_px(model, scan)


def test_stack_training_needs_its_recipe_and_cell_rasters(grid_dataset, smoke_dataset):
    with pytest.raises(ValueError, match="cnn-stack trains on cell stacks"):
        experiments.train_and_evaluate("cnn-stack", grid_dataset, "smoke", 888, "blocked", stage="default_model")
    with pytest.raises(ValueError, match="cell_grid: true"):
        experiments.train_and_evaluate("cnn-stack", smoke_dataset.path, "robust", 888, "blocked", overrides=SMALL,
                                       stage="stack_model")
    too_coarse = {**SMALL, "cell_stacks": {**SMALL["cell_stacks"], "strides": [2]}}
    with pytest.raises(ValueError, match="fewer than bins = 4 positions per side"):
        experiments.train_and_evaluate("cnn-stack", grid_dataset, "robust", 888, "blocked", overrides=too_coarse,
                                       stage="stack_model")
    with pytest.raises(ValueError, match="preprocessor keeps counts around the nominal centre"):
        models.create("cnn-stack", preprocessor=default_preprocessor().__class__(center="pattern", normalize="none"))
