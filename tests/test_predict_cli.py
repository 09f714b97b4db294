"""`polar4d train` and `polar4d predict` end to end on smoke data: calibration from files and flags,
refusal without calibration, outputs in both formats, existing files untouched on error."""

from __future__ import annotations

import json

import numpy as np
import pytest

from polar4d_lib import cli, io
from polar4d_lib.datasets import open_dataset
from polar4d_lib.models import load_model


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(smoke_dataset, tmp_path_factory):
    """A PCA-kNN model trained by the CLI on the session smoke dataset, and a scan cut from it."""
    tmp = tmp_path_factory.mktemp("predict")
    model = tmp / "model.npz"
    assert cli.main(["train", "--data", str(smoke_dataset.path), "--model", "pca-knn", "--profile", "smoke",
                     "--out", str(model)]) == 0
    ds = open_dataset(smoke_dataset.path)
    patterns = ds["patterns"][:24]
    scan = io.Scan(patterns.reshape(4, 6, *patterns.shape[1:]), q_sampling_mrad=float(ds.attrs["q_sampling_mrad"]),
                   source="smoke")
    return tmp, model, scan, ds["label"][:24].reshape(4, 6)


def test_train_writes_a_loadable_model_with_its_metadata(trained):
    _, model_path, _, _ = trained
    model = load_model(model_path)
    assert model.kind == "pca-knn"
    assert model.metadata["profile"] == "smoke"
    assert "held-out" in model.metadata["split"]
    assert set(model.metadata["test_scores"]) >= {"accuracy", "macro_f1", "confusion"}


def test_predict_reads_calibration_from_a_py4dstem_file(trained, capsys):
    tmp, model, scan, _ = trained
    source = io.write_scan_h5(scan, tmp / "scan.h5")
    out = tmp / "pred.npz"
    code, stdout, _ = run(capsys, "predict", str(source), "--out", str(out), "--model", str(model))
    assert code == 0, stdout
    result = io.read_predictions(out)
    assert result["class_map"].dtype == np.int8 and result["class_map"].shape == (4, 6)
    assert result["probabilities"].dtype == np.float32 and result["probabilities"].shape == (4, 6, 8)
    np.testing.assert_allclose(result["probabilities"].sum(-1), 1.0, atol=1e-5)
    assert result["angle_deg"].shape == (4, 6)
    assert result["irregularity"].dtype == np.float32 and result["irregularity"].shape == (4, 6)
    assert result["metadata"]["q_sampling_mrad"] == pytest.approx(scan.q_sampling_mrad)
    assert (tmp / "pred.png").stat().st_size > 1000
    # The CLI gives what the model gives on the same patterns.
    expected = load_model(model).predict(scan.data.reshape(24, *scan.data.shape[2:]), scan.q_sampling_mrad)
    np.testing.assert_array_equal(result["class_map"].ravel(), expected)


def test_predict_on_npy_needs_the_sampling_flag(trained, capsys):
    tmp, model, scan, _ = trained
    source = tmp / "scan.npy"
    np.save(source, scan.data)
    out = tmp / "pred_npy.h5"
    out.write_bytes(b"keep me")
    code, _, err = run(capsys, "predict", str(source), "--out", str(out), "--model", str(model))
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "--q-pixel-size-mrad" in err
    assert out.read_bytes() == b"keep me", "a refused prediction must not touch the existing output"
    code, _, _ = run(capsys, "predict", str(source), "--out", str(out), "--model", str(model),
                     "--q-pixel-size-mrad", str(scan.q_sampling_mrad), "--abstain-below", "1.01")
    assert code == 2  # not a reliability in [0, 1]
    code, _, _ = run(capsys, "predict", str(source), "--out", str(out), "--model", str(model),
                     "--q-pixel-size-mrad", str(scan.q_sampling_mrad), "--abstain-below", "0.99")
    assert code == 0
    result = io.read_predictions(out)
    assert result["class_map"].shape == (4, 6)
    top2 = np.sort(result["probabilities"], axis=-1)[..., -2:]
    low = top2[..., 1] - top2[..., 0] < 0.99  # the default score: the margin between the top two classes
    assert np.array_equal(result["class_map"] == -1, low)
    assert result["metadata"]["abstain_score"] == "margin"
    assert json.dumps(result["metadata"])  # plain JSON


@pytest.mark.parametrize("units, size, step_A", [("A", 0.49375, 0.49375), ("nm", 0.099, 0.99), ("pm", 49.375, 0.49375),
                                                  ("furlong", 1.0, None)])
def test_the_scan_step_is_read_from_a_py4dstem_file_in_its_units(trained, units, size, step_A):
    import py4DSTEM

    tmp, _, scan, _ = trained
    datacube = py4DSTEM.DataCube(data=scan.data)
    datacube.calibration.set_Q_pixel_size(scan.q_sampling_mrad)
    datacube.calibration.set_Q_pixel_units("mrad")
    datacube.calibration.set_R_pixel_size(size)
    datacube.calibration.set_R_pixel_units(units)
    py4DSTEM.save(str(tmp / f"step_{units}.h5"), datacube, mode="o")
    read = io.read_scan(tmp / f"step_{units}.h5")
    if step_A is None:
        assert read.scan_step_A is None and any("unknown units 'furlong'" in note for note in read.notes)
    else:
        assert read.scan_step_A == pytest.approx(step_A)


def test_predict_refuses_a_py4dstem_file_without_calibration(trained, capsys):
    tmp, model, scan, _ = trained
    source = io.write_scan_h5(io.Scan(scan.data, source="uncalibrated"), tmp / "uncalibrated.h5")
    code, _, err = run(capsys, "predict", str(source), "--out", str(tmp / "x.npz"), "--model", str(model))
    assert code == 2 and "angular sampling" in err and len(err.strip().splitlines()) == 1
    assert not (tmp / "x.npz").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.npy", "--out", "o.npz", "--q-pixel-size-mrad", "1"], "no file"),
        (["scan.txt", "--out", "o.npz", "--q-pixel-size-mrad", "1"], "unknown file type"),
        (["bad3d.npy", "--out", "o.npz", "--q-pixel-size-mrad", "1"], "4D"),
        (["nan.npy", "--out", "o.npz", "--q-pixel-size-mrad", "1"], "NaN"),
        (["nan.npy", "--out", "o.csv", "--q-pixel-size-mrad", "1"], ".npz or .h5"),
    ],
)
def test_predict_bad_inputs_are_one_line_errors(trained, capsys, monkeypatch, args, message):
    tmp, model, scan, _ = trained
    monkeypatch.chdir(tmp)
    (tmp / "scan.txt").write_text("not a scan")
    np.save(tmp / "bad3d.npy", np.zeros((4, 8, 8), np.float32))
    bad = scan.data.copy()
    bad[0, 0, 0, 0] = np.nan
    np.save(tmp / "nan.npy", bad)
    code, _, err = run(capsys, "predict", *args, "--model", str(model))
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err


def test_predict_refuses_a_model_file_that_is_not_a_model(trained, capsys):
    tmp, _, scan, _ = trained
    np.save(tmp / "s.npy", scan.data)
    np.savez(tmp / "fake.npz", weights=np.zeros(3))
    code, _, err = run(capsys, "predict", str(tmp / "s.npy"), "--out", str(tmp / "o.npz"), "--model",
                       str(tmp / "fake.npz"), "--q-pixel-size-mrad", "1.5")
    assert code == 2 and "not a polar4d model" in err
