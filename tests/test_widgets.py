"""The scan explorer (polar4d_lib.widgets) and the wall scan it is shown on (polar4d_lib.wall_scan)."""

from __future__ import annotations

import numpy as np
import pytest

from polar4d_lib import conventions, datasets, models, wall_scan, widgets
from polar4d_lib.io import Scan
from polar4d_lib.simulation import ProbeSettings, SimulationSettings


@pytest.fixture(scope="module")
def scan_and_model(smoke_dataset):
    ds = datasets.open_dataset(smoke_dataset.path)
    patterns, labels = np.asarray(ds["patterns"]), np.asarray(ds["label"])
    sampling = float(ds.attrs["q_sampling_mrad"])
    model = models.create("pca-knn", seed=0).fit(patterns, labels, sampling)
    scan = Scan(patterns[:12].reshape(4, 3, *patterns.shape[1:]), sampling, 200.0, 24.0, 0.5, source="test scan")
    return scan, model, labels[:12].reshape(4, 3)


def test_virtual_images_split_every_count_between_bright_and_dark_field(scan_and_model):
    scan, _, _ = scan_and_model
    bf, adf = widgets.virtual_images(scan)
    assert bf.shape == adf.shape == (4, 3)
    np.testing.assert_allclose(bf + adf, scan.data.sum(axis=(-2, -1)), rtol=1e-5)
    assert np.all(bf > adf), "at 24 mrad most of the beam stays in the bright-field disk"
    with pytest.raises(ValueError, match="semi-angle"):
        widgets.virtual_images(Scan(scan.data, scan.q_sampling_mrad))


def test_explorer_builds_its_widgets_and_follows_the_chosen_view(scan_and_model):
    scan, model, truth = scan_and_model
    explorer = widgets.ScanExplorer({"a": scan}, {"pca": model, "pca again": model}, true_class={"a": truth},
                                    doses=[None, 1e4], seed=3)
    box = explorer.widget
    dropdowns = [w for w in explorer.controls.values() if w.__class__.__name__ == "Dropdown"]
    assert len(dropdowns) == 3 and explorer.controls["x"].max == 3 and explorer.controls["y"].max == 2
    assert explorer.maps_image.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert explorer.position_image.value[:8] == b"\x89PNG\r\n\x1a\n"
    before = explorer.position_image.value
    explorer.controls["x"].value = 0  # a slider moves the probe: the pattern panel is redrawn
    assert explorer.view.position[0] == 0 and explorer.position_image.value != before
    explorer.select(dose=1e4, position=(2, 1), map_kind="confidence")
    assert explorer.controls["dose"].value == "1e+04 e/pattern" and explorer.controls["x"].value == 2
    explorer.controls["dose"].value = "as recorded"  # every dropdown shows a choice (None would show none)
    assert explorer.view.dose is None and explorer.controls["dose"].options == ("as recorded", "1e+04 e/pattern")
    recounted = explorer.scan("a", 1e4).data
    np.testing.assert_array_equal(recounted, np.round(recounted))  # counted electrons
    assert abs(recounted.sum(axis=(-2, -1)).mean() / 1e4 - 1) < 0.05
    prediction = explorer.prediction("a", "pca", None)
    assert prediction.class_map.shape == (4, 3) and prediction.probabilities.shape == (4, 3, conventions.N_CLASSES)
    assert "majority class" in explorer.status.value
    bf, adf, com = explorer.images("a", None)
    assert com.shape == (4, 3, 2) and explorer.images("a", None)[2] is com  # computed once per scan and dose
    np.testing.assert_allclose(bf, widgets.virtual_images(scan)[0])
    fig = explorer.figure()
    assert len(fig.subfigs) == 2 and len(fig.subfigs[0].axes) >= 4


def test_explorer_refuses_what_it_cannot_show(scan_and_model):
    scan, model, truth = scan_and_model
    with pytest.raises(ValueError, match="true_class"):
        widgets.ScanExplorer({"a": scan}, model, true_class={"a": np.zeros((2, 2))})
    with pytest.raises(ValueError, match="not among"):
        widgets.ScanExplorer({"a": scan}, model, true_class={"b": truth})
    explorer = widgets.ScanExplorer(scan, model)
    with pytest.raises(ValueError, match="outside the 4 × 3 scan"):
        explorer.select(position=(4, 0))
    with pytest.raises(ValueError, match="dose"):
        explorer.select(dose=1e3)
    with pytest.raises(ValueError, match="unknown view setting"):
        explorer.select(zoom=2)
    with pytest.raises(ValueError, match="positive"):
        widgets.ScanExplorer(scan, model, doses=[0.0])


def test_wall_scan_has_two_domains_and_is_cached(tmp_path):
    spec = wall_scan.WallScanSpec(variant_a=0, variant_b=3, cells=2, thicknesses_nm=(0.395, 0.79), step_A=1.975,
                              probe=ProbeSettings(semiangle_mrad=24.0),
                              simulation=SimulationSettings(detector_shape=(32, 32)))
    scan_set, truth = wall_scan.simulate_wall_scan(spec, tmp_path)
    assert list(scan_set) == ["0.395 nm", "0.79 nm"]
    first = scan_set["0.395 nm"]
    assert first.data.shape == (4, 4, 32, 32) and first.scan_step_A == 1.975
    ru, rd = conventions.class_index("RU"), conventions.class_index("RD")
    np.testing.assert_array_equal(truth["0.79 nm"], np.repeat([[ru], [ru], [rd], [rd]], 4, axis=1))
    assert not np.allclose(scan_set["0.395 nm"].data, scan_set["0.79 nm"].data)
    cached = list((tmp_path / "scans").glob("wall-*.npz"))
    assert len(cached) == 1
    again, _ = wall_scan.simulate_wall_scan(spec, tmp_path)
    np.testing.assert_array_equal(again["0.79 nm"].data, scan_set["0.79 nm"].data)
    with pytest.raises(KeyError, match="wall-scan setting"):
        wall_scan.wall_scan_spec("smoke", {"wall_thickness": 2})
    assert wall_scan.wall_scan_spec("smoke").cells == 4
