"""Position averaging (PACBED windows): sliding means over scans, the lattice period of a scan, the
window a model asks for, training averages of simulated groups, and prediction through a window."""

from __future__ import annotations

import numpy as np
import pytest

from polar4d_lib import cli, evaluation, inputs, io, pacbed, recipes
from polar4d_lib.datasets import open_dataset
from polar4d_lib.models import load_model
from polar4d_lib.predict import predict_scan


def lattice_scan(rx: int, ry: int, period: float, noise: float = 0.0, seed: int = 0, origin: float = 0.0) -> np.ndarray:
    """A scan whose patterns are a bright disk and a dark ring; the ring's intensity is high on the
    'atomic columns' of a square lattice of ``period`` positions (any real number: a step need not divide
    the cell), the first at ``origin`` (rx, ry, 16, 16)."""
    q = np.arange(16) - 8
    r = np.hypot(q[:, None], q[None, :])
    disk, ring = (r <= 3).astype(float), ((r > 4) & (r <= 7)).astype(float)
    x, y = np.meshgrid(np.arange(rx) - origin, np.arange(ry) - origin, indexing="ij")
    dx, dy = (period * (np.mod(c / period + 0.5, 1.0) - 0.5) for c in (x, y))  # to the nearest column
    column = np.exp(-((dx ** 2 + dy ** 2) / 1.0))
    data = disk + 0.01 * ring * (1 + 4 * column)[:, :, None, None]
    if noise:
        data = data + noise * np.random.default_rng(seed).standard_normal(data.shape)
    return data.astype(np.float32)


def test_average_scan_is_the_window_mean_with_whole_windows_at_the_edges():
    data = np.zeros((5, 6, 2, 2), np.float32)
    data[2, 3] = 9.0
    out = pacbed.average_scan(data, 3)
    assert out.shape == data.shape and out.dtype == np.float32
    # the 3 × 3 windows that contain (2, 3): every row's (row 2 is in all of them), columns 2–5
    np.testing.assert_allclose(out[:, 2:], 1.0)
    assert out[:, :2].max() == 0.0
    ramp = np.broadcast_to(np.arange(5, dtype=np.float32)[:, None, None, None], (5, 6, 2, 2))
    edge = pacbed.average_scan(ramp, 3)
    # at the edge the window moves inwards and stays whole: rows 0–2 for row 0, rows 2–4 for row 4
    assert edge[0, 0, 0, 0] == pytest.approx(1.0) and edge[4, 5, 0, 0] == pytest.approx(3.0)
    assert edge[2, 0, 0, 0] == pytest.approx(2.0)
    even = pacbed.average_scan(ramp, 4)  # rows i − 2 … i + 1, clamped into 0–3 / 1–4
    np.testing.assert_allclose(even[:, 0, 0, 0], [1.5, 1.5, 1.5, 2.5, 2.5])
    whole = pacbed.average_scan(ramp, 9)  # longer than the scan: the whole scan
    np.testing.assert_allclose(whole[..., 0, 0], 2.0)
    np.testing.assert_array_equal(pacbed.average_scan(data, 1), data)
    # brute force on a random scan: every pattern is the mean of its clamped whole window
    rand = np.random.default_rng(0).random((7, 9, 3, 3)).astype(np.float32)
    got = pacbed.average_scan(rand, 4)
    for i in range(7):
        for j in range(9):
            si, sj = min(max(i - 2, 0), 7 - 4), min(max(j - 2, 0), 9 - 4)
            np.testing.assert_allclose(got[i, j], rand[si:si + 4, sj:sj + 4].mean(axis=(0, 1)), rtol=1e-5)


def test_average_scan_keeps_total_intensity_of_a_uniform_scan_and_refuses_bad_input():
    data = np.random.default_rng(1).random((1, 1, 4, 4)).astype(np.float32) * np.ones((6, 6, 1, 1), np.float32)
    np.testing.assert_allclose(pacbed.average_scan(data, 4), data, rtol=1e-6)
    with pytest.raises(ValueError, match="4D scan"):
        pacbed.average_scan(data[0], 2)
    with pytest.raises(ValueError, match="≥ 1"):
        pacbed.average_scan(data, 0)


@pytest.mark.parametrize("period", [3, 4, 4.39, 5.27, 6.58, 7, 9.88])
def test_lattice_period_is_found_in_a_noisy_scan_to_a_fraction_of_a_position(period):
    # steps of 0.9, 0.75, 0.6 and 0.4 Å give cells of 4.39, 5.27, 6.58 and 9.88 positions
    found = pacbed.lattice_period_px(lattice_scan(32, 28, period, noise=0.002, origin=0.37))
    assert found == pytest.approx(period, abs=0.1)
    assert abs(found - period) < abs(round(period) - period) or round(period) == period  # better than whole lags


def test_no_lattice_in_noise_or_a_flat_scan():
    flat = lattice_scan(24, 24, 1000)
    assert pacbed.lattice_period_px(flat) is None
    noise = flat + 0.01 * np.random.default_rng(3).standard_normal(flat.shape).astype(np.float32)
    assert pacbed.lattice_period_px(noise) is None


def test_window_from_step_then_lattice_then_single_patterns():
    assert pacbed.window_px(3.95, 0.4)[0] == 10
    # a window folded into the cell covers it whole: 0.9 Å steps give 4.39 positions per cell, so 5, not 4
    assert pacbed.window_px(3.95, 0.9)[0] == 4 and pacbed.window_px(3.95, 0.9, whole_cell=True)[0] == 5
    assert pacbed.window_px(3.95, 0.49375, whole_cell=True)[0] == 8  # a step that divides the cell: unchanged
    assert pacbed.window_px(3.95, 5.0)[0] == 1
    n, how = pacbed.window_px(3.95, None, lattice_scan(32, 32, 5))
    assert n == 5 and "lattice" in how
    n, how = pacbed.window_px(3.95, None, lattice_scan(24, 24, 1000))
    assert n == 1 and "--scan-step-A" in how
    with pytest.raises(ValueError, match="scan step"):
        pacbed.window_px(3.95, -1.0)


def test_a_fold_does_not_change_with_a_period_read_a_little_off():
    """Positions are folded at the middle of their step, so at 4 and 8 positions per cell none lies near a
    part's edge: a lattice period read as 4.06 or 7.95 (about what the scan gives) folds like the exact one
    (predict takes a period read just below the parts as the parts, which cell_stack needs at least)."""
    rng = np.random.default_rng(11)
    for n, periods in ((4, (4.0, 4.03, 4.06)), (8, (8.0, 7.95, 8.05))):
        window = rng.random((n, n, 5, 5)).astype(np.float32)
        folds = [pacbed.cell_stack(window, p, 4) for p in periods]
        for fold in folds[1:]:
            np.testing.assert_array_equal(fold, folds[0])


def test_a_resampled_raster_is_the_scan_at_another_step():
    rng = np.random.default_rng(7)
    cell = rng.random((8, 8, 3, 3)).astype(np.float32)  # one cell at a/8
    np.testing.assert_array_equal(pacbed.resampled_raster(cell, 8.0, (0.0, 0.0), 8), cell)
    # a/4 from the second position: every other position, the sub-raster a scan at twice the step records
    np.testing.assert_array_equal(pacbed.resampled_raster(cell, 4.0, (1 / 8, 0.0), 4), cell[1::2, 0::2])
    # two cells wrap around the periodic raster
    np.testing.assert_array_equal(pacbed.resampled_raster(cell, 4.0, (0.0, 0.0), 8), np.tile(cell[::2, ::2], (2, 2, 1, 1)))
    # 0.75 Å: 5.27 positions per cell; position i at (0.3 + i / 5.27) of the cell, nearest of 8
    out = pacbed.resampled_raster(cell, 3.95 / 0.75, (0.3, 0.6), 6)
    nearest = lambda o: np.mod(np.rint(8 * (o + np.arange(6) * 0.75 / 3.95)), 8).astype(int)  # noqa: E731
    assert out.shape == (6, 6, 3, 3)
    np.testing.assert_array_equal(out, cell[nearest(0.3)][:, nearest(0.6)])
    # the window predict takes (the fewest positions that cover a cell) reaches every part of it
    for period in rng.uniform(4.0, 10.0, 20):
        window = int(np.ceil(period))
        assert pacbed.cell_stack(pacbed.resampled_raster(cell, period, rng.uniform(0, 1, 2), window), period, 4).shape == (16, 3, 3)
    with pytest.raises(ValueError, match="a cell raster is"):
        pacbed.resampled_raster(cell[:, :4], 5.0, (0, 0), 5)
    with pytest.raises(ValueError, match="period"):
        pacbed.resampled_raster(cell, 0.0, (0, 0), 5)


def test_dose_is_the_mean_count_and_none_for_fractions_of_the_beam():
    counts = np.random.default_rng(0).poisson(50.0, (4, 4, 8, 8)).astype(np.float32)
    assert pacbed.dose_per_pattern(counts) == pytest.approx(counts.sum(axis=(-2, -1)).mean())
    assert pacbed.dose_per_pattern(np.full((4, 4, 8, 8), 1 / 64, np.float32)) is None


def test_alias_free_step_is_lambda_over_twice_the_semiangle():
    # λ(200 keV) = 0.02508 Å: 0.02508 / (2 × 0.024) = 0.5225 Å, between a/8 and a/4 of KNN (a = 3.95 Å)
    assert pacbed.alias_free_step_A(200.0, 24.0) == pytest.approx(0.5225, abs=1e-4)
    assert 3.95 / 8 < pacbed.alias_free_step_A(200.0, 24.0) < 3.95 / 4
    assert pacbed.alias_free_step_A(200.0, 12.0) == pytest.approx(2 * pacbed.alias_free_step_A(200.0, 24.0))
    assert pacbed.alias_free_step_A(300.0, 24.0) < pacbed.alias_free_step_A(200.0, 24.0)  # shorter wavelength
    for energy, alpha in ((200.0, 0.0), (float("nan"), 24.0), (-1.0, 24.0)):
        with pytest.raises(ValueError, match="--energy-kev and --semiangle-mrad"):
            pacbed.alias_free_step_A(energy, alpha)


def test_window_grows_by_whole_cells_until_it_holds_the_electrons():
    # 8 positions per cell: one cell collects 64 × dose
    assert pacbed.window_px(3.95, 0.49375, min_electrons=5e5, dose_e_per_pattern=1e5)[0] == 8
    n, how = pacbed.window_px(3.95, 0.49375, min_electrons=5e5, dose_e_per_pattern=1e3)
    assert n == 24 and "3 × 3 cells" in how  # 64 000 e per cell, ≥ 5e5 needs 9 cells
    assert pacbed.window_px(3.95, 0.49375, min_electrons=5e5, dose_e_per_pattern=7812.5)[0] == 8  # exactly 5e5
    # the dose comes from the counts of the scan; a noise-free simulation keeps one cell
    scan = np.full((8, 8, 16, 16), 4e3 / 256, np.float32)
    assert pacbed.window_px(3.95, 0.49375, scan, min_electrons=5e5)[0] == 16
    ideal = scan / 4e3
    n, how = pacbed.window_px(3.95, 0.49375, ideal, min_electrons=5e5)
    assert n == 8 and "noise-free" in how
    with pytest.raises(ValueError, match="--dose-e-per-pattern"):
        pacbed.window_px(3.95, 0.49375, min_electrons=5e5, dose_e_per_pattern=-1.0)
    # whole cells of a step that does not divide the cell: 3 cells of 4.39 positions are 13.2, so 14
    n, how = pacbed.window_px(3.95, 0.9, min_electrons=5e5, dose_e_per_pattern=4e3, whole_cell=True)
    assert n == 14 and "3 × 3 cells" in how  # one cell of 5 × 5 positions collects 1e5 e: 4e5 in 2 × 2 < 5e5
    assert pacbed.window_px(3.95, 0.9, min_electrons=5e5, dose_e_per_pattern=4e3)[0] == 12  # 3 × round(4.39)


def test_group_averages_mix_only_one_group():
    groups = np.repeat([10, 20, 30], 5)
    patterns = np.repeat(groups[:, None, None], 3, axis=1).repeat(3, axis=2).astype(np.float32)
    patterns += np.tile(np.arange(5), 3)[:, None, None] * 0.1  # members differ within a group
    labels = np.repeat([0, 3, 6], 5)
    x, first = pacbed.group_averages(patterns, groups, (2, 4), 50, seed=1, labels=labels)
    assert x.shape == (50, 3, 3) and x.dtype == np.float32
    group_of_average = np.round(x[:, 0, 0] / 10) * 10
    np.testing.assert_array_equal(group_of_average, groups[first])
    assert np.all((x[:, 0, 0] - groups[first] >= 0.05 - 1e-6) & (x[:, 0, 0] - groups[first] <= 0.35 + 1e-6))
    again, _ = pacbed.group_averages(patterns, groups, (2, 4), 50, seed=1)
    np.testing.assert_array_equal(x, again)
    full, first = pacbed.full_group_averages(patterns, groups)
    np.testing.assert_allclose(full[:, 0, 0], [10.2, 20.2, 30.2], rtol=1e-6)
    np.testing.assert_array_equal(labels[first], [0, 3, 6])
    with pytest.raises(ValueError, match="mixes classes"):
        pacbed.group_averages(patterns, groups, (1, 2), 5, seed=0, labels=np.arange(15) % 8)
    with pytest.raises(ValueError, match="low ≤ high"):
        pacbed.group_averages(patterns, groups, (3, 2), 5, seed=0)


def test_raster_strides_average_every_other_position_of_a_cell_raster():
    # two groups, each an 4 × 4 raster of one cell from its own origin (wrapped), patterns = raster index
    n, groups, frac, index = 4, [], [], []
    for g, origin in enumerate([(0.3, 0.9), (0.55, 0.05)]):
        i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        frac.append(np.mod(np.stack([i.ravel(), j.ravel()], 1) / n + origin, 1.0))
        index.append(np.stack([i.ravel(), j.ravel()], 1))
        groups.append(np.full(n * n, g))
    frac, index, groups = np.concatenate(frac), np.concatenate(index), np.concatenate(groups)
    raster = pacbed.raster_index(frac, groups, n)
    np.testing.assert_array_equal(raster, index)
    patterns = (index[:, 0] * n + index[:, 1] + 100 * groups).astype(np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32)
    x, first = pacbed.group_averages(patterns, groups, (16, 16), 200, seed=3, raster=raster, strides=(2,))
    means = {(g, ox, oy): patterns[(groups == g) & (index[:, 0] % 2 == ox) & (index[:, 1] % 2 == oy)].mean()
             for g in (0, 1) for ox in (0, 1) for oy in (0, 1)}
    for value, member in zip(x[:, 0, 0], first):
        matches = [k for k, v in means.items() if abs(v - value) < 1e-4]
        assert len(matches) == 1 and matches[0][0] == groups[member]  # one whole sub-raster of its group
    seen = {k for value in x[:, 0, 0] for k, v in means.items() if abs(v - value) < 1e-4}
    assert seen == set(means)  # every origin of every group is drawn
    mixed, _ = pacbed.group_averages(patterns, groups, (16, 16), 400, seed=3, raster=raster, strides=(1, 2))
    full = {g: patterns[groups == g].mean() for g in (0, 1)}
    is_full = np.isin(np.round(mixed[:, 0, 0], 4), np.round(list(full.values()), 4))
    assert 0.35 < is_full.mean() < 0.65  # strides drawn uniformly
    only_one, _ = pacbed.group_averages(patterns, groups, (2, 4), 50, seed=1)
    again, _ = pacbed.group_averages(patterns, groups, (2, 4), 50, seed=1, raster=raster, strides=(1,))
    np.testing.assert_array_equal(only_one, again)  # stride 1 alone draws exactly as without strides
    with pytest.raises(ValueError, match="raster index"):
        pacbed.group_averages(patterns, groups, (1, 2), 5, seed=0, strides=(1, 2))
    with pytest.raises(ValueError, match="cell_grid"):
        pacbed.raster_index(np.random.default_rng(0).random((32, 2)), groups, n)


def test_averaged_parts_with_strides_need_and_use_cell_rasters(tmp_path, smoke_dataset):
    from polar4d_lib import datasets
    from tests.conftest import smoke_spec

    spec = smoke_spec(variants=[0], probe_settings=1, thicknesses_nm=[0.8], cell_grid=True, positions_per_setting=16)
    path = datasets.build(spec, tmp_path / "grid.zarr", profile="smoke", cache_dir=tmp_path / "cache", num_workers=1)
    ds = open_dataset(path)
    split = evaluation.Split(train=np.arange(len(ds)), val=np.arange(0), test=np.arange(len(ds)), kind="all")
    settings = recipes.TrainSettings.for_profile("smoke", {"averages": {"sizes": [16, 16], "n": 30, "strides": [2]}})
    (x, _), _, _ = inputs.averaged_parts(ds, split, split.train, settings, 888)
    raster = pacbed.raster_index(ds["position_frac"], inputs.position_groups(ds), 4)
    subs = [ds["patterns"][np.all(raster % 2 == o, axis=1)].mean(axis=0) for o in ([0, 0], [0, 1], [1, 0], [1, 1])]
    for average in x:  # each average is the mean of one stride-2 sub-raster (a scan at a/2)
        assert min(np.abs(average - s).max() for s in subs) < 1e-6
    with pytest.raises(ValueError, match="divide the 4 × 4"):
        settings = recipes.TrainSettings.for_profile("smoke", {"averages": {"n": 3, "strides": [3]}})
        inputs.averaged_parts(ds, split, split.train, settings, 888)
    plain = open_dataset(smoke_dataset.path)
    split = evaluation.make_split(plain, "blocked", 888)
    with pytest.raises(ValueError, match="cell_grid: true"):
        settings = recipes.TrainSettings.for_profile("smoke", {"averages": {"n": 3, "strides": [1, 2]}})
        inputs.averaged_parts(plain, split, split.train, settings, 888)


def test_a_model_trained_on_averages_records_its_window_and_predict_uses_it(smoke_dataset, tmp_path, capsys):
    model_path = tmp_path / "avg.npz"
    code = cli.main(["train", "--data", str(smoke_dataset.path), "--model", "pca-knn", "--profile", "smoke",
                     "--set", "averages={window_A: 3.95, sizes: [2, 4], n: 300}", "--out", str(model_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    model = load_model(model_path)
    assert model.preprocessor.average_window_A == pytest.approx(3.95)
    assert model.metadata["train_settings"]["averages"]["n"] == 300
    ds = open_dataset(smoke_dataset.path)
    patterns = ds["patterns"][:36].reshape(6, 6, *ds["patterns"].shape[1:])
    scan = io.Scan(patterns, float(ds.attrs["q_sampling_mrad"]), scan_step_A=1.975, source="smoke")
    prediction = predict_scan(model, scan)
    assert prediction.metadata["average_window_px"] == 2
    # each distinct window (starts 0 … 4 along both axes) is asked once and its class goes to its positions
    starts = pacbed.window_starts(6, 2)
    distinct = pacbed.window_means(patterns, np.arange(5), np.arange(5), 2).reshape(25, *patterns.shape[2:])
    expected = model.predict(distinct, scan.q_sampling_mrad).reshape(5, 5)[starts][:, starts]
    np.testing.assert_array_equal(prediction.class_map, expected)
    single = predict_scan(model, scan, window_px=1)
    assert single.metadata["average_window_px"] == 1
    np.testing.assert_array_equal(single.class_map.ravel(), model.predict(patterns.reshape(36, *patterns.shape[2:]),
                                                                          scan.q_sampling_mrad))
    np.save(tmp_path / "scan.npy", patterns)
    code = cli.main(["predict", str(tmp_path / "scan.npy"), "--out", str(tmp_path / "p.npz"), "--model",
                     str(model_path), "--q-pixel-size-mrad", str(scan.q_sampling_mrad), "--scan-step-A", "0.9875"])
    out = capsys.readouterr().out
    assert code == 0 and "4 × 4 positions" in out
    assert io.read_predictions(tmp_path / "p.npz")["metadata"]["average_window_px"] == 4


def test_averaged_test_parts_are_whole_groups(smoke_dataset):
    ds = open_dataset(smoke_dataset.path)
    settings = recipes.TrainSettings.for_profile("smoke", {"averages": {"sizes": [1, 3], "n": 40}})
    split = evaluation.make_split(ds, "blocked", 888)
    (x, y), val, (xt, yt) = inputs.averaged_parts(ds, split, split.train, settings, 888)
    groups = inputs.position_groups(ds)
    assert x.shape == (40,) + ds["patterns"].shape[1:] and len(y) == 40
    assert len(xt) == len(np.unique(groups[split.test]))
    for g, label in zip(np.unique(groups[split.test]), yt):
        members = split.test[groups[split.test] == g]
        assert set(ds["label"][members]) == {label}


def _signed_lattice(rx: int, ry: int, period: int) -> np.ndarray:
    """lattice_scan whose bright-field disk also says where in the cell each position is (a value per
    position of the cell), so that every part of a folded cell can be recognised."""
    data = lattice_scan(rx, ry, period).astype(np.float64)
    x, y = np.meshgrid(np.arange(rx), np.arange(ry), indexing="ij")
    data[:, :, 8, 8] += (x % period) * period + (y % period)
    return data


def test_cell_stack_folds_each_part_of_the_cell_and_starts_at_the_brightest_dark_field():
    window = _signed_lattice(8, 8, 4)  # 2 × 2 cells at a/4: every part of the cell seen four times
    stack = pacbed.cell_stack(window, 4)
    assert stack.shape == (16, 16, 16) and stack.dtype == np.float32
    # the column (bright dark field) sits at position (0, 0) of the cell: it comes first, then x-major;
    # the disk centre holds 1 + the position's signature 4·(x mod 4) + (y mod 4)
    np.testing.assert_allclose(stack[:, 8, 8], 1 + np.arange(16), rtol=1e-6)
    np.testing.assert_allclose(stack.mean(axis=0), window.mean(axis=(0, 1)), rtol=1e-6)


@pytest.mark.parametrize("shift", [(1, 0), (2, 3), (3, 1)])
def test_cell_stack_is_the_same_wherever_the_raster_starts(shift):
    scan = _signed_lattice(16, 16, 4)
    reference = pacbed.cell_stack(scan[:8, :8], 4)
    moved = pacbed.cell_stack(scan[shift[0]:shift[0] + 8, shift[1]:shift[1] + 8], 4)
    np.testing.assert_allclose(moved, reference, rtol=1e-6)


def test_cell_stack_of_a_fine_scan_averages_its_positions_in_each_part():
    window = _signed_lattice(8, 8, 8)  # one cell at a/8: each of the 4 × 4 parts holds 2 × 2 positions
    stack = pacbed.cell_stack(window, 8)
    x, y = np.meshgrid(np.arange(2), np.arange(2), indexing="ij")
    first = window[x, y].mean(axis=(0, 1))  # the column's part: positions (0–1, 0–1)
    np.testing.assert_allclose(stack[0], first, rtol=1e-6)
    np.testing.assert_allclose(stack.mean(axis=0), window.mean(axis=(0, 1)), rtol=1e-6)


def test_cell_stack_refuses_what_it_cannot_fold():
    with pytest.raises(ValueError, match="at least 4 positions"):
        pacbed.cell_stack(lattice_scan(8, 8, 2), 2)
    with pytest.raises(ValueError, match="does not reach every part"):
        pacbed.cell_stack(lattice_scan(2, 8, 4), 4)
    with pytest.raises(ValueError, match="4D scan window"):
        pacbed.cell_stack(lattice_scan(8, 8, 4)[0], 4)


def test_a_lazily_read_scan_is_read_once_for_each_scan_wide_statistic(tmp_path, monkeypatch):
    from polar4d_lib import formats

    data = lattice_scan(24, 24, 5) * 1000
    np.save(tmp_path / "s.npy", data.astype(np.float32))
    reads = []
    original = formats.NpyRows.__getitem__
    monkeypatch.setattr(formats.NpyRows, "__getitem__", lambda self, key: reads.append(key) or original(self, key))
    scan = io.read_scan(tmp_path / "s.npy", q_sampling_mrad=1.0)
    period, dose = pacbed.lattice_period_px(scan.data), pacbed.dose_per_pattern(scan.data)
    first = len(reads)
    assert first > 0 and period == pytest.approx(5, abs=0.1) and dose == pytest.approx(data.sum((2, 3)).mean(), rel=1e-6)
    assert (pacbed.lattice_period_px(scan.data), pacbed.dose_per_pattern(scan.data)) == (period, dose)
    assert len(reads) == first  # remembered: the file is not read again
    again = io.read_scan(tmp_path / "s.npy", q_sampling_mrad=1.0)  # another scan object: read anew
    assert pacbed.lattice_period_px(again.data) == period and len(reads) > first
    assert pacbed.lattice_period_px(data) == period and not any(v[0] is data for v in pacbed._LAZY_STATISTICS.values())
