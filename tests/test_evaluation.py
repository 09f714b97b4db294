"""Evaluation: splits (random and blocked, ``make_split``), metrics against scikit-learn and by hand, aggregation over
seeds, the paper's table layout and the evaluation path (polar4d_lib.evaluation)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from polar4d_lib import conventions
from polar4d_lib import evaluation as ev


# --- splits --------------------------------------------------------------------------------------

def test_random_split_fractions_cover_every_index_once():
    train, val, test = ev.random_split(1000, (0.8, 0.1, 0.1), seed=888)
    assert (len(train), len(val), len(test)) == (800, 100, 100)
    assert np.array_equal(np.sort(np.concatenate([train, val, test])), np.arange(1000))
    again = ev.random_split(1000, seed=888)
    other = ev.random_split(1000, seed=1212)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again))
    assert not np.array_equal(test, other[2])
    assert [len(p) for p in ev.random_split(10, (0.5, 0.2, 0.3), seed=1)] == [5, 2, 3]


class _Patterns(dict):
    """A dataset's per-pattern arrays by name, as ``make_split`` reads them."""

    def __len__(self) -> int:
        return len(self["label"])


def _specimens(classes: int, units: int, settings: int, positions: int = 5) -> _Patterns:
    """``classes`` classes × ``units`` specimens each × ``settings`` probe settings × ``positions`` patterns."""
    k, u, s, _ = np.meshgrid(np.arange(classes), np.arange(units), np.arange(settings), np.arange(positions),
                             indexing="ij")
    return _Patterns(label=k.ravel(), unit=(10 * k + u).ravel(), probe_setting=s.ravel())


@pytest.mark.parametrize("seed", [888, 1212, 3000, 5000, 7000])
@pytest.mark.parametrize("units, settings", [(3, 2), (2, 2), (1, 4)])
def test_the_blocked_split_holds_out_whole_specimens_or_probe_settings(seed, units, settings):
    ds = _specimens(4, units, settings)
    split = ev.make_split(ds, "blocked", seed)
    parts = (split.train, split.val, split.test)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(ds)))
    assert split.kind == "held-out specimens / probe settings" and len(split.test) and len(split.val)
    for k in range(4):
        keys = [{(ds["unit"][i], ds["probe_setting"][i]) for i in p if ds["label"][i] == k} for p in parts]
        assert all(keys), f"class {k} is in every part"
        assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
        if units >= 2:  # a whole specimen is held out for test
            assert not {u for u, _ in keys[0]} & {u for u, _ in keys[2]}
    again = ev.specimen_split(ds, seed)
    assert all(np.array_equal(a, b) for a, b in zip(parts, (again.train, again.val, again.test)))


def test_the_blocked_split_refuses_a_class_it_cannot_hold_out():
    with pytest.raises(ValueError, match="too few specimens and probe settings"):
        ev.make_split(_specimens(2, 1, 1), "blocked", 888)


def test_make_split_gives_the_papers_random_split_and_refuses_unknown_kinds():
    ds = _specimens(2, 2, 2, positions=25)
    split = ev.make_split(ds, "random", 1212)
    assert all(np.array_equal(a, b) for a, b in zip((split.train, split.val, split.test), ev.random_split(200, seed=1212)))
    assert split.describe() == "random 80/10/10 over patterns (paper): 160 train / 20 val / 20 test patterns"
    with pytest.raises(ValueError, match="unknown split 'tiles'; use 'blocked' or 'random'"):
        ev.make_split(ds, "tiles", 888)
    with pytest.raises(ValueError, match="fractions"):
        ev.random_split(10, (0.5, 0.5, 0.5))


# --- metrics -------------------------------------------------------------------------------------

def test_metrics_by_hand_and_against_sklearn():
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 4, 7])
    y_pred = np.array([0, 0, 1, 1, 1, 2, 6, 2, 0, 7])
    m = ev.metrics(y_true, y_pred)
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert m["confusion"].shape == (8, 8) and m["confusion"].sum() == 10
    assert m["confusion"][0, 1] == 1 and m["confusion"][2, 6] == 1 and m["confusion"][4, 0] == 1
    assert np.trace(m["confusion"]) == 7
    # errors: 45° (0→1), 180° (2→6), 180° (4→0); mean over 10 patterns
    assert m["mean_angular_error_deg"] == pytest.approx((45 + 180 + 180) / 10)
    assert m["share_correct"] == m["accuracy"] and m["n"] == 10
    assert m["majority_class"] == 0 and m["majority_correct"] is True  # 0 and 1 predicted 3× each: the first wins


def test_angular_error_neighbour_opposite_and_wraparound():
    assert ev.angular_error_deg(np.array([0]), np.array([45.0]))[0] == pytest.approx(45.0)
    assert ev.angular_error_deg(np.array([2]), np.array([270.0]))[0] == pytest.approx(180.0)
    assert ev.angular_error_deg(np.array([0]), np.array([315.0]))[0] == pytest.approx(45.0)  # across 0°
    assert ev.angular_error_deg(np.array([7]), np.array([10.0]))[0] == pytest.approx(55.0)
    for k in range(8):
        m = ev.metrics(np.full(3, k), np.full(3, (k + 1) % 8))
        assert m["mean_angular_error_deg"] == pytest.approx(45.0) and m["accuracy"] == 0.0
        m = ev.metrics(np.full(3, k), np.full(3, (k + 4) % 8))
        assert m["mean_angular_error_deg"] == pytest.approx(180.0)


def test_share_of_the_dataset_label_and_majority():
    pred = np.array([0] * 6 + [7] * 3 + [4])
    truth = np.zeros(10, dtype=int)
    m = ev.metrics(truth, pred, dataset_label="RM")
    assert m["share_correct"] == pytest.approx(0.6) and m["majority_class"] == 0 and m["majority_correct"]
    either = ev.metrics(truth, pred, dataset_label=("RM", "RD"))  # a scan labelled "RM or RD"
    assert either["share_correct"] == pytest.approx(0.9)
    wrong = ev.metrics(truth, pred, dataset_label="LM")
    assert wrong["share_correct"] == pytest.approx(0.1) and not wrong["majority_correct"]
    with pytest.raises(ValueError, match="classes"):
        ev.metrics(np.array([0, 8]), np.array([0, 1]))


def test_aggregate_mean_and_std_over_seeds():
    runs = [ev.metrics(np.zeros(4, int), np.array(p)) for p in ([0, 0, 0, 0], [0, 0, 1, 1], [0, 1, 1, 1])]
    agg = ev.aggregate(runs)
    assert agg["accuracy"]["mean"] == pytest.approx(np.mean([1.0, 0.5, 0.25]))
    assert agg["accuracy"]["std"] == pytest.approx(np.std([1.0, 0.5, 0.25], ddof=1))
    assert agg["accuracy"]["n_seeds"] == 3
    assert agg["confusion"].sum() == 12 and agg["majority_class"] == [0, 0, 1]
    assert ev.aggregate(runs[:1])["accuracy"]["std"] == 0.0


# --- the paper's table ---------------------------------------------------------------------------

def test_paper_table_layout():
    def seeds(share):
        return [{"share_correct": s} for s in share]

    results = {
        ("synthetic holdout", "cnn-cls"): seeds([0.95, 0.97]),
        ("synthetic holdout", "pca-knn"): seeds([0.951, 0.951]),
        ("synthetic holdout", "physics"): seeds([0.2]),
        ("1S", "resnet50-proto"): seeds([0.5, 0.7]),
        ("1S", "VGG-Reg"): ev.aggregate(seeds([0.3, 0.5])),
    }
    table = ev.paper_table(results)
    assert list(table.index) == ["synthetic holdout", "1S"]
    assert list(table.columns) == [
        "Conv-Reg", "Conv-Cls", "Conv-Proto", "VGG-Reg", "VGG-Cls", "VGG-Proto",
        "ResNet-Reg", "ResNet-Cls", "ResNet-Proto", "PCA", "Physics",
    ]
    assert table.loc["synthetic holdout", "Conv-Cls"] == f"96.0 ± {100 * np.std([0.95, 0.97], ddof=1):.1f}"
    assert table.loc["synthetic holdout", "PCA"] == "95.1 ± 0.0"
    assert table.loc["synthetic holdout", "Physics"] == "20.0 ± 0.0"
    assert table.loc["1S", "ResNet-Proto"] == "60.0 ± 14.1"
    assert table.loc["1S", "VGG-Reg"] == "40.0 ± 14.1"
    assert table.loc["1S", "Conv-Cls"] == "–"
    with pytest.raises(ValueError, match="column"):
        ev.paper_table({("1S", "mlp-cls"): seeds([0.5])})


# --- the evaluation path -------------------------------------------------------------------------

class _Recorder:
    """A stand-in model that predicts the class of the brightest quadrant and records the calls."""

    def __init__(self):
        self.calls = []

    def predict(self, patterns, sampling_mrad):
        self.calls.append(("predict", patterns.shape, sampling_mrad))
        return np.argmax(patterns.reshape(len(patterns), -1)[:, :8], axis=1).astype(np.int8)

    def fit(self, *args, **kwargs):  # must never be called by evaluate
        raise AssertionError("evaluate called fit")


def test_evaluate_is_deterministic_and_only_predicts():
    rng = np.random.default_rng(0)
    patterns = rng.random((40, 8, 8)).astype(np.float32)
    labels = rng.integers(0, 8, 40)
    before = patterns.copy()
    model = _Recorder()
    first = ev.evaluate(model, patterns, labels, 1.5)
    second = ev.evaluate(model, patterns, labels, 1.5)
    assert np.array_equal(patterns, before), "evaluate must not change the patterns"
    assert all(call == ("predict", (40, 8, 8), 1.5) for call in model.calls) and len(model.calls) == 2
    expected = np.argmax(patterns.reshape(40, -1)[:, :8], axis=1)
    assert first["accuracy"] == pytest.approx(np.mean(expected == labels))
    for key, value in first.items():
        assert np.array_equal(value, second[key]), key
    assert set(first) >= {"accuracy", "macro_f1", "confusion", "mean_angular_error_deg", "share_correct",
                          "majority_class"}
    with pytest.raises(ValueError, match="label"):
        ev.evaluate(model, patterns, labels[:-1], 1.5)
    assert conventions.N_CLASSES == first["confusion"].shape[0]


def test_evaluate_a_fitted_model_twice_gives_the_same_numbers():
    from polar4d_lib.models.pca_knn import PCAKNNModel
    from polar4d_lib.preprocessing import Preprocessor
    from test_physics_baseline import SAMPLING, dipole_patterns

    rng = np.random.default_rng(5)
    labels = rng.integers(0, 8, 120)
    patterns = dipole_patterns(labels * 45.0, 0.1, 0.05, rng)
    model = PCAKNNModel(Preprocessor(center="nominal"), n_components=10).fit(patterns[:80], labels[:80], SAMPLING)
    first = ev.evaluate(model, patterns[80:], labels[80:], SAMPLING, dataset_label=None)
    second = ev.evaluate(model, patterns[80:], labels[80:], SAMPLING)
    assert all(np.array_equal(first[k], second[k]) for k in first)
    assert first["accuracy"] == pytest.approx(np.mean(model.predict(patterns[80:], SAMPLING) == labels[80:]))


def test_angles_are_wrapped_into_0_to_360_even_for_tiny_negative_angles():
    from polar4d_lib.models.base import angle_deg, circular_mean_deg

    tiny = np.array([[1.0, -1e-20], [1.0, 0.0], [0.0, -1.0], [-1.0, -1e-300]])
    np.testing.assert_allclose(angle_deg(tiny), [0.0, 0.0, 270.0, 180.0])
    proba = np.zeros((1, 8))
    proba[0, [0, 7]] = [1.0, 1e-30]  # pulls the mean a hair below 0°
    angle = circular_mean_deg(proba)
    assert 0.0 <= angle[0] < 360.0
