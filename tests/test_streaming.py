"""Maps of scans larger than memory (polar4d_lib.streaming): where decisions are made, how chunks of scan
rows are planned within a memory limit, and that a chunked map of a lazily read file equals the whole-scan
map of the same scan in memory, exactly, with the shipped model."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from polar4d_lib import conventions, inputs, pacbed, streaming
from polar4d_lib.io import Scan, read_scan
from polar4d_lib.models.base import load_model
from polar4d_lib.predict import predict_scan

SHIPPED = Path(__file__).resolve().parent.parent / "data" / "default_model.pt"


def test_decisions_at_stride_one_are_every_distinct_window():
    starts, index = streaming.decision_grid(12, 4)
    np.testing.assert_array_equal(starts, np.arange(9))
    np.testing.assert_array_equal(starts[index], pacbed.window_starts(12, 4))


def test_decisions_at_a_stride_sit_that_far_apart_and_near_each_positions_own_window():
    size, window, stride = 37, 8, 2
    starts, index = streaming.decision_grid(size, window, stride)
    own = pacbed.window_starts(size, window)
    assert np.all(np.diff(starts) >= 1) and np.all(np.diff(starts) <= stride)
    assert starts.min() == 0 and starts.max() == size - window  # windows stay inside the scan
    assert np.abs(starts[index] - own).max() <= stride / 2
    assert len(starts) == 16  # 0, 2, …, 28 and the last whole window at 29
    with pytest.raises(ValueError, match="decision stride is a whole number"):
        streaming.decision_grid(size, window, 0)


def test_chunks_are_whole_row_groups_within_the_budget_and_say_how_much_is_missing():
    starts, _ = streaming.decision_grid(40, 8, 2)  # 17 decision rows
    row = 1000
    plan = streaming.chunks(starts, 8, 40, row, 3, budget_bytes=20 * row * streaming.WORKING_COPIES, memory_limit_gb=2)
    assert plan[0][0] == 0 and plan[-1][1] == len(starts)
    assert all(a % 3 == 0 for a, _ in plan) and all(b == plan[i + 1][0] for i, (_, b) in enumerate(plan[:-1]))
    for first, stop in plan:
        lo, hi = streaming.rows_spanned(starts, 8, 40, first, stop)
        assert (hi - lo) <= 20
    assert len(plan) > 1
    with pytest.raises(ValueError, match=r"--memory-limit 2 GB leaves 0.00 GB for the scan, but one row of decisions "
                                         r"needs 0.00 GB; raise --memory-limit to at least 2.1 GB"):
        streaming.chunks(starts, 8, 40, row, 3, budget_bytes=row, memory_limit_gb=2)


def test_a_memory_limit_below_what_the_process_holds_is_refused():
    with pytest.raises(ValueError, match=r"--memory-limit 0.001 GB is below what polar4d already holds .*; raise it"):
        streaming.available_bytes(0.001)
    with pytest.raises(ValueError, match="--memory-limit is a size in GB > 0"):
        streaming.available_bytes(-1.0)
    assert streaming.available_bytes(1000.0) > 0
    assert streaming.available_bytes(None) == streaming.DEFAULT_WORKING_BYTES  # a library call: whatever the process holds


def _periodic_scan(rx: int, ry: int, seed: int = 3) -> np.ndarray:
    """Counts of a lattice of 8 positions per cell on a 48 px detector: a bright disk whose dark field
    changes over the cell."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:48, :48]
    disk = ((xx - 24) ** 2 + (yy - 24) ** 2 < 64) * 60.0
    cell = disk + rng.uniform(1, 6, (8, 8, 1, 1)) * (1 + rng.random((8, 8, 48, 48)))
    data = np.tile(cell, (rx // 8 + 1, ry // 8 + 1, 1, 1))[:rx, :ry]
    return rng.poisson(data).astype(np.float32)


def test_a_chunked_map_of_a_lazily_read_file_equals_the_whole_scan_map_exactly(tmp_path, monkeypatch):
    model = load_model(SHIPPED)
    data = _periodic_scan(37, 21)
    step = conventions.A_A / 8
    monkeypatch.setattr(streaming, "GROUP_DECISIONS", 32)  # row groups of 4 decision rows: several in this scan
    whole = predict_scan(model, Scan(data, q_sampling_mrad=1.5, scan_step_A=step))
    np.save(tmp_path / "scan.npy", data)
    lazy = read_scan(tmp_path / "scan.npy", q_sampling_mrad=1.5, scan_step_A=step)
    assert lazy.lazy
    reads = []
    rows = Scan.rows

    def spy(self, start, stop):
        reads.append((start, stop))
        return rows(self, start, stop)

    monkeypatch.setattr(Scan, "rows", spy)
    # room for one row group at a time: 4 decision rows 2 positions apart, windows of 8 positions (14 rows)
    monkeypatch.setattr(streaming, "available_bytes", lambda limit: 16 * 21 * 48 * 48 * 4 * streaming.WORKING_COPIES)
    chunked = predict_scan(model, lazy)
    assert len(reads) == 4 and max(b - a for a, b in reads) <= 16
    assert chunked.metadata["decision_stride_px"] == 2 and chunked.metadata["decisions"] == [16, 8]
    for name in ("class_map", "probabilities", "angle_deg", "irregularity"):
        np.testing.assert_array_equal(getattr(chunked, name), getattr(whole, name), err_msg=name)


def test_a_scan_that_leaves_no_room_for_one_row_of_decisions_is_refused_with_the_limit_it_needs(monkeypatch):
    model = load_model(SHIPPED)
    scan = Scan(_periodic_scan(16, 16), q_sampling_mrad=1.5, scan_step_A=conventions.A_A / 8)
    whole = predict_scan(model, scan)
    monkeypatch.setattr(streaming, "resident_bytes", lambda: 2 * 10**9 - 1000)
    with pytest.raises(ValueError, match=r"--memory-limit 2 GB leaves 0.00 GB for the scan, .* raise --memory-limit to at least"):
        predict_scan(model, scan, memory_limit_gb=2.0)
    # without a limit the working memory is a target, not a refusal: a library call on a scan of large
    # patterns maps it a row group at a time, with the same maps
    monkeypatch.setattr(streaming, "DEFAULT_WORKING_BYTES", 1000)
    small = predict_scan(model, scan)
    np.testing.assert_array_equal(small.probabilities, whole.probabilities)
    np.testing.assert_array_equal(small.class_map, whole.class_map)


def test_nan_in_a_lazily_read_block_is_named_with_its_rows(tmp_path):
    model = load_model(SHIPPED)
    data = _periodic_scan(16, 16)
    data[9, 3, 0, 0] = np.nan
    np.save(tmp_path / "bad.npy", data)
    scan = read_scan(tmp_path / "bad.npy", q_sampling_mrad=1.5, scan_step_A=conventions.A_A / 8)
    with pytest.raises(ValueError, match=r"contains NaN or inf \(rows"):
        predict_scan(model, scan)


def test_the_cell_stack_kind_decides_a_part_of_a_cell_apart():
    kind = inputs.get("cell-stacks")
    model = load_model(SHIPPED)
    assert kind.decision_stride(model, 8, 8.0) == 2  # a/8: 4 × 4 parts of 2 positions
    assert kind.decision_stride(model, 4, 4.0) == 1  # a/4: every position
    assert kind.decision_stride(model, 6, 5.3) == 1  # an off-grid step: parts of 1.3 positions
    assert inputs.get("single-patterns").decision_stride(model, 1, None) == 1


def test_a_map_on_a_dask_cluster_equals_the_local_map(tmp_path):
    """Workers read their chunks from the scan's file themselves (a one-worker in-process cluster here)."""
    from dask.distributed import LocalCluster

    model = load_model(SHIPPED)
    np.save(tmp_path / "scan.npy", _periodic_scan(20, 18))
    scan = read_scan(tmp_path / "scan.npy", q_sampling_mrad=1.5, scan_step_A=conventions.A_A / 8)
    local = predict_scan(model, scan)
    environ = dict(os.environ)
    try:
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
            remote = predict_scan(model, scan, scheduler=cluster.scheduler_address)
    finally:
        os.environ.clear()
        os.environ.update(environ)
    assert remote.metadata["scheduler"] == cluster.scheduler_address
    for name in ("class_map", "probabilities", "angle_deg", "irregularity"):
        np.testing.assert_array_equal(getattr(remote, name), getattr(local, name), err_msg=name)
    with pytest.raises(ValueError, match="mapping on a cluster reads the scan from its file"):
        streaming.file_rows(Scan(_periodic_scan(8, 8), q_sampling_mrad=1.5))
