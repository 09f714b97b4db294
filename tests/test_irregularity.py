"""Irregularity scores of polarization maps (polar4d_lib.irregularity) and the map `predict` writes."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from polar4d_lib import conventions, inputs, irregularity
from polar4d_lib.predict import predict_scan
from polar4d_lib.preprocessing import Preprocessor
from polar4d_lib.models.stack import default_preprocessor
from tests.test_inputs import Recorder, _cell_scan


def onehot(classes: np.ndarray, certainty: float = 0.9) -> np.ndarray:
    p = np.full(classes.shape + (conventions.N_CLASSES,), (1 - certainty) / (conventions.N_CLASSES - 1))
    np.put_along_axis(p, classes[..., None], certainty, axis=-1)
    return p


def planted(shape=(20, 24), at=(7, 11)):
    classes = np.full(shape, 2)
    classes[at] = 6
    truth = np.zeros(shape, dtype=bool)
    truth[at] = True
    return onehot(classes), truth


@pytest.mark.parametrize("name", [n for n in irregularity.SCORES if not n.startswith("entropy")])
def test_a_planted_inconsistency_is_found_with_auc_1(name):
    p, truth = planted()
    s = irregularity.score(p, None, name)
    assert s.shape == truth.shape and s.dtype == np.float32
    assert roc_auc_score(truth.ravel(), s.ravel()) == 1.0


@pytest.mark.parametrize("name", list(irregularity.SCORES))
def test_a_map_without_an_inconsistency_scores_one_half(name):
    p, truth = planted()
    uniform = onehot(np.full(truth.shape, 2))
    assert roc_auc_score(truth.ravel(), irregularity.score(uniform, 4.0, name).ravel()) == 0.5


def test_entropy_finds_a_planted_uncertain_decision():
    p, truth = planted()
    p = onehot(np.full(truth.shape, 2))
    p[truth] = 1 / conventions.N_CLASSES
    assert roc_auc_score(truth.ravel(), irregularity.score(p, None, "entropy").ravel()) == 1.0
    assert irregularity.score(p, None, "entropy")[truth] == pytest.approx(1.0)


def test_removing_the_periodic_part_silences_errors_that_repeat_with_the_lattice():
    rx, ry, period = 24, 24, 4
    classes = np.full((rx, ry), 2)
    classes[::period, ::period] = 5  # a wrong decision at the same place of every cell
    classes[13, 9] = 6  # and one defect
    raw = irregularity.score(onehot(classes), period, "neighbour disagreement")
    removed = irregularity.score(onehot(classes), period, "neighbour disagreement, periodic part removed")
    truth = np.zeros((rx, ry), dtype=bool)
    truth[13, 9] = True
    assert roc_auc_score(truth.ravel(), raw.ravel()) < 1.0  # the periodic errors score as high
    assert roc_auc_score(truth.ravel(), removed.ravel()) == 1.0
    assert np.allclose(irregularity.periodic_part_removed(np.tile(np.arange(4.0), (24, 6)), 4), 0)
    assert np.array_equal(irregularity.periodic_part_removed(raw, None), raw)  # no period known: unchanged


def test_bad_maps_and_names_are_refused():
    with pytest.raises(ValueError, match=r"must be \(Rx, Ry, 8\)"):
        irregularity.score(np.zeros((4, 8)))
    with pytest.raises(ValueError, match="NaN"):
        irregularity.score(np.full((2, 2, 8), np.nan))
    with pytest.raises(KeyError, match="no irregularity score 'luck'"):
        irregularity.score(onehot(np.zeros((2, 2), dtype=int)), None, "luck")
    assert irregularity.DEFAULT in irregularity.SCORES


@pytest.mark.parametrize("model", [Recorder(), Recorder(preprocessor=Preprocessor(average_window_A=3.95)),
                                   Recorder("cnn-stack", default_preprocessor(), bins=4)],
                         ids=["single-patterns", "window-means", "cell-stacks"])
def test_predict_writes_irregularity_with_the_scans_shape_for_every_input_kind(model):
    scan = _cell_scan(rx=12, ry=10)
    prediction = predict_scan(model, scan)
    assert prediction.irregularity.shape == (12, 10) and prediction.irregularity.dtype == np.float32
    assert prediction.metadata["irregularity"] == irregularity.DEFAULT
    assert prediction.metadata["irregularity_period_px"] == pytest.approx(4.0)
    assert model.input_kind.name in inputs.REGISTRY
    np.testing.assert_array_equal(prediction.irregularity, 0)  # the stand-in answers class 0 everywhere
