"""The 9 neural models (polar4d_lib.models.neural) on patterns of the session's smoke dataset: learning,
the label convention of every head, save/load, determinism, resuming, and no augmentation at evaluation."""

from __future__ import annotations

import inspect
import json
import pickle
import time

import numpy as np
import pytest
import torch

from polar4d_lib import acquisition, config, conventions, datasets, training
from polar4d_lib.augmentation import AugmentationConfig, Augmenter
from polar4d_lib.models import neural
from polar4d_lib.models.base import REGISTRY, load_model
from polar4d_lib.models.networks import build_network
from polar4d_lib.models.neural import NeuralModel
from polar4d_lib.preprocessing import Preprocessor

ALL_ON = AugmentationConfig(blur_p=1.0, jitter_p=1.0, noise_p=1.0, poisson_p=1.0, d4=True)


@pytest.fixture(autouse=True)
def _no_progress_bars():
    """No progress bars in the test output (restored afterwards)."""
    with config.set({"progress_bar": False}):
        yield


@pytest.fixture(scope="module")
def smoke(smoke_dataset):
    ds = datasets.open_dataset(smoke_dataset.path)
    return np.asarray(ds["patterns"]), np.asarray(ds["label"]).astype(np.int64), float(ds.attrs["q_sampling_mrad"])


#: Displacement (px) of the test patterns along their class direction: 3 mrad at 1.5 mrad/px.
SHIFT_PX = 2.0
#: Base patterns (at most) for training and for the held-out set; each gives 8 shifted patterns.
N_BASES = 16


@pytest.fixture(scope="module")
def shifted(smoke):
    """An 8-class set made of smoke patterns with an exaggerated, known class signal.

    Every smoke pattern is moved by SHIFT_PX along each class direction k·45° from +Qx towards +Qy
    (``acquisition.shift_center``, count-conserving, sub-pixel) and labelled k — a centre-of-mass
    deflection along the projected polarization, much stronger than a 1–4 nm specimen gives. The base
    patterns (a seeded choice of at most 2 × N_BASES) are split in halves: one for training, one held out.
    Patterns from one base that are shifted in different directions differ only by the direction, so a
    head whose targets or decoding disagreed with the label convention could not score above chance even
    on its training set.
    Returns (x_train, y_train), (x_held_out, y_held_out), sampling (mrad/px)."""
    patterns, _, sampling = smoke
    bases = np.random.default_rng(0).permutation(len(patterns))[:2 * N_BASES]
    half = len(bases) // 2

    def build(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        angles = np.radians(conventions.CLASS_ANGLES_DEG)
        x = np.concatenate([acquisition.shift_center(patterns[index], (SHIFT_PX * np.cos(a), SHIFT_PX * np.sin(a)))
                            for a in angles])
        return x, np.repeat(np.arange(8, dtype=np.int64), len(index))

    return build(bases[:half]), build(bases[half:]), sampling


@pytest.fixture(scope="module")
def trained(shifted):
    """cnn-{head} trained on the training half of ``shifted`` (cached per head): 8 epochs, batches of
    16, lr 2e-3 (the tiny test set needs a larger step than the paper's 2e-4 to learn in seconds), the
    validation set the seeded 10 % split."""
    (x, y), _, sampling = shifted
    cache: dict[str, NeuralModel] = {}

    def get(head: str) -> NeuralModel:
        if head not in cache:
            start = time.perf_counter()
            cache[head] = NeuralModel(f"cnn-{head}", max_epochs=8, batch_size=16, lr=2e-3, patience=8,
                                      seed=1).fit(x, y, sampling)
            print(f"cnn-{head}: trained on {len(y)} patterns in {time.perf_counter() - start:.1f} s")
        return cache[head]

    return get


def few(smoke, n: int = 8):
    """n patterns spread over the smoke dataset (several classes)."""
    patterns, labels, sampling = smoke
    index = np.linspace(0, len(labels) - 1, n).round().astype(int)
    return patterns[index], labels[index], sampling


class Payload:
    """Any pickled object other than tensors and plain containers."""


# --- learning and the label convention --------------------------------------------------------------

@pytest.mark.parametrize("head", ["cls", "reg", "proto"])
def test_every_head_learns_above_chance_and_decodes_to_the_labels(trained, shifted, head):
    (x, y), (x_out, y_out), sampling = shifted
    model = trained(head)
    predicted = model.predict(x, sampling)
    accuracy = float(np.mean(predicted == y))
    held_out = float(np.mean(model.predict(x_out, sampling) == y_out))
    history = model.metadata["history"]
    print(f"cnn-{head}: accuracy {accuracy:.3f} on the training patterns, {held_out:.3f} held out (chance 0.125); "
          f"val_acc per epoch {np.round(history['val_acc'], 2).tolist()}")
    assert accuracy >= 0.5  # held-out accuracy is printed, not asserted: 16 base patterns are too few to rely on it
    assert predicted.dtype == np.int8
    proba = model.predict_proba(x, sampling)
    assert proba.shape == (len(y), 8) and proba.dtype == np.float32
    assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-5) and np.all(proba >= 0)
    assert np.array_equal(np.argmax(proba, axis=1), predicted)  # probabilities agree with the decoded class
    assert float(np.mean(proba[np.arange(len(y)), y])) > 0.25  # and put weight on the label
    angle = model.predict_angle_deg(x, sampling)
    assert np.all((angle >= 0) & (angle < 360))
    assert np.mean(conventions.circular_distance(conventions.class_from_angle(angle), y) <= 1) >= 0.6


def test_regression_decodes_by_atan2_into_the_convention_sectors(trained, shifted):
    (x, _), _, sampling = shifted
    model = trained("reg")
    # the trained model: the class is the ±22.5° sector of the decoded angle
    assert np.array_equal(model.predict(x, sampling), conventions.class_from_angle(model.predict_angle_deg(x, sampling)))
    # a regressor whose output is a chosen vector r·(cos θ, sin θ) (zero last-layer weights, bias = atanh)
    probe = NeuralModel("cnn-reg", seed=0)
    probe.network = build_network("cnn", None, "reg")
    linear = probe.network.head[0]
    one = x[:1]

    def decode(theta_deg: float, r: float = 0.8) -> tuple[int, float, np.ndarray]:
        with torch.no_grad():
            linear.weight.zero_()
            linear.bias.copy_(torch.atanh(torch.tensor([np.cos(np.radians(theta_deg)), np.sin(np.radians(theta_deg))]) * r))
        return (int(probe.predict(one, sampling)[0]), float(probe.predict_angle_deg(one, sampling)[0]),
                probe.predict_proba(one, sampling)[0])

    for k in range(8):  # (cos θ_k, sin θ_k) decodes to class k exactly, at angle k·45°
        cls, angle, proba = decode(45.0 * k)
        assert cls == k and angle == pytest.approx(45.0 * k, abs=1e-3) and int(np.argmax(proba)) == k
    sweep = {decode(theta)[0] for theta in np.arange(7.5, 360.0, 15.0)}
    assert sweep == set(range(8))
    for k in range(8):  # sector edges at 22.5° + k·45°
        edge = 22.5 + 45.0 * k
        assert (decode(edge - 0.5)[0], decode(edge + 0.5)[0]) == (k, (k + 1) % 8)
    # the von-Mises-like spread: p_k ∝ exp(κ_max · r · cos(θ_k − θ̂)), broader for a shorter output
    probe.kappa_max = 4.0
    _, _, sharp = decode(10.0, r=0.9)
    _, _, broad = decode(10.0, r=0.1)
    expected = np.exp(4.0 * 0.9 * np.cos(np.radians(conventions.CLASS_ANGLES_DEG - 10.0)))
    assert np.allclose(sharp, expected / expected.sum(), atol=1e-4)
    assert sharp.max() > broad.max() > 1 / 8


def test_prototype_model_predicts_the_cosine_nearest_class_mean(trained, shifted):
    (x, _), _, sampling = shifted
    model = trained("proto")
    assert model.class_means.shape == (8, 128) and bool(model.class_present.all())
    embeddings = training.forward_batches(model.network, model._inputs(x, sampling)).numpy()
    means = model.class_means.numpy()
    cosine = (embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)) @ (means / np.linalg.norm(means, axis=1, keepdims=True)).T
    assert np.array_equal(model.predict(x, sampling), np.argmax(cosine, axis=1))
    assert model.temperature > 0 and model.metadata["temperature"] == model.temperature


# --- save / load -------------------------------------------------------------------------------------

@pytest.mark.parametrize("head", ["cls", "reg", "proto"])
def test_save_load_round_trip_is_bitwise(trained, shifted, smoke, head, tmp_path):
    (x, _), _, sampling = shifted
    model = trained(head)
    path = model.save(tmp_path / f"cnn-{head}.pt")
    again = load_model(path)
    assert isinstance(again, NeuralModel) and again.kind == f"cnn-{head}"
    for patterns in (x, smoke[0]):
        assert np.array_equal(model.predict_proba(patterns, sampling), again.predict_proba(patterns, sampling))
        assert np.array_equal(model.predict(patterns, sampling), again.predict(patterns, sampling))
        # The one-pass maps a scan uses are exactly the three separate predictions.
        proba, classes, angle = again.predict_maps(patterns, sampling)
        assert np.array_equal(proba, model.predict_proba(patterns, sampling))
        assert np.array_equal(classes, model.predict(patterns, sampling))
        assert np.array_equal(angle, model.predict_angle_deg(patterns, sampling))
    assert again.preprocessor == model.preprocessor
    assert (again.kappa_max, again.temperature) == (model.kappa_max, model.temperature)
    meta = again.metadata
    assert meta["n_train"] + meta["n_val"] == len(x) and meta["n_val"] == round(0.1 * len(x))
    assert meta["sampling_mrad"] == sampling and meta["seed"] == 1
    assert meta["epochs"] == 8 and len(meta["history"]["val_loss"]) == 8 and "torch" in meta["versions"]
    header = json.loads(torch.load(path, weights_only=True)["header"])
    assert header["preprocessor"] == Preprocessor().to_dict() and header["metadata"]["params"]["lr"] == 2e-3


@pytest.mark.parametrize("head", ["cls", "reg"])
def test_d4_average_predicts_exactly_equivariantly_and_survives_save_load(trained, shifted, head, tmp_path):
    # Inputs already preprocessed (centred, at the model's sampling and size) and a nominal centre: the
    # preprocessing is then the identity and commutes with the square's symmetries, so any difference
    # comes from the network.
    _, (x_held, _), sampling_raw = shifted
    model = load_model(trained(head).save(tmp_path / f"cnn-{head}.pt"))  # a copy: the cached model stays as it is
    x = model.preprocessor.transform(x_held[::5][:12], sampling_raw)
    sampling = model.preprocessor.sampling_mrad
    model.preprocessor = Preprocessor(sampling_mrad=sampling, size=model.preprocessor.size, center="nominal")
    np.testing.assert_array_equal(model.preprocessor.transform(x, sampling), x)
    classes = np.arange(conventions.N_CLASSES)
    plain = [model.predict_proba(f(x), sampling)[:, g(classes)] for f, g in conventions.d4_operations()]
    assert max(np.abs(p - plain[0]).max() for p in plain) > 1e-3  # the network alone is not equivariant
    model.d4_average = True
    reference = model.predict_proba(x, sampling)
    top = np.sort(reference, axis=1)
    clear = top[:, -1] - top[:, -2] > 1e-4  # no near-tie between the two likeliest classes
    assert clear.sum() >= 3
    for f, g in conventions.d4_operations():  # p(g·x)[g·k] = p(x)[k] for every operation g
        np.testing.assert_allclose(model.predict_proba(f(x), sampling)[:, g(classes)], reference, atol=1e-6)
        np.testing.assert_array_equal(model.predict(f(x), sampling)[clear], g(model.predict(x, sampling))[clear])
    proba, predicted, angle = model.predict_maps(x, sampling)
    assert np.array_equal(proba, reference) and np.array_equal(predicted, np.argmax(reference, axis=1))
    np.testing.assert_allclose(angle, model.predict_angle_deg(x, sampling))
    np.testing.assert_allclose(reference, np.mean(plain, axis=0), atol=1e-6)  # the mean of the 8 images
    again = load_model(model.save(tmp_path / f"d4-{head}.pt"))
    assert again.d4_average and np.array_equal(again.predict_proba(x, sampling), reference)


@pytest.mark.parametrize("kind", ["resnet-cls", "resnet-reg", "resnet-proto", "vgg-cls", "vgg-reg", "vgg-proto"])
def test_resnet_and_vgg_train_save_and_load(smoke, kind, tmp_path):
    patterns, labels, sampling = few(smoke)
    model = NeuralModel(kind, max_epochs=1, batch_size=8, seed=2)
    assert model.depth == (18 if kind.startswith("resnet") else 11)
    initial = {k: v.clone() for k, v in model._new_network().state_dict().items()}
    model.fit(patterns, labels, sampling, validation=(patterns, labels))
    changed = [k for k, v in model.network.state_dict().items() if v.is_floating_point() and not torch.equal(v, initial[k])]
    assert any("encoder.0" in k for k in changed) and any(k.startswith("head") for k in changed)  # gradients reached both ends
    proba = model.predict_proba(patterns, sampling)
    assert proba.shape == (8, 8) and np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    again = load_model(model.save(tmp_path / f"{kind}.pt"))
    assert np.array_equal(again.predict_proba(patterns, sampling), proba)


def test_loading_refuses_files_that_are_not_safe_polar4d_models(tmp_path, trained):
    no_header = tmp_path / "weights.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, no_header)
    with pytest.raises(ValueError, match="no header") as info:
        load_model(no_header)
    assert "\n" not in str(info.value)

    model = trained("cls")
    evil = tmp_path / "evil.pt"
    torch.save({"header": json.dumps(model.header()), **model._state(), "payload": Payload()}, evil)
    with pytest.raises(pickle.UnpicklingError):
        load_model(evil)
    with pytest.raises(ValueError, match=r"\.pt"):
        model.save(tmp_path / "model.npz")
    with pytest.raises(ValueError, match="not fitted"):
        NeuralModel("cnn-cls").save(tmp_path / "unfitted.pt")
    assert "weights_only=True" in inspect.getsource(load_model)


# --- determinism, resuming, augmentation ----------------------------------------------------------------

def test_same_seed_same_weights_on_cpu(smoke):
    patterns, labels, sampling = few(smoke)
    fits = [NeuralModel("cnn-proto", max_epochs=2, batch_size=4, seed=s, augmentation=AugmentationConfig())
            .fit(patterns, labels, sampling) for s in (3, 3, 4)]
    a, b, c = (m.network.state_dict() for m in fits)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert fits[0].metadata["n_val"] == 1 and fits[0].metadata["n_train"] == 7  # the seeded 10 % split
    assert np.array_equal(fits[0].predict_proba(patterns, sampling), fits[1].predict_proba(patterns, sampling))


def test_interrupted_and_resumed_fit_equals_an_uninterrupted_one(smoke, tmp_path):
    patterns, labels, sampling = few(smoke)
    settings = dict(batch_size=4, lr=1e-3, seed=5, augmentation=AugmentationConfig(d4=True, poisson_p=0.5), dropout=0.1)
    straight = NeuralModel("cnn-reg", max_epochs=4, **settings).fit(patterns, labels, sampling)
    ckpt = tmp_path / "ckpt.pt"
    NeuralModel("cnn-reg", max_epochs=2, **settings).fit(patterns, labels, sampling, checkpoint_path=ckpt)
    assert training.load_checkpoint(ckpt)["epoch"] == 2
    resumed = NeuralModel("cnn-reg", max_epochs=4, **settings).fit(patterns, labels, sampling, checkpoint_path=ckpt)
    s, r = straight.network.state_dict(), resumed.network.state_dict()
    assert all(torch.equal(s[k], r[k]) for k in s)
    assert resumed.metadata["history"] == straight.metadata["history"]
    assert resumed.kappa_max == straight.kappa_max


def test_evaluation_never_augments(trained, shifted, smoke, monkeypatch):
    (x, _), _, sampling = shifted
    model = trained("cls")
    first = model.predict_proba(x, sampling)
    assert np.array_equal(model.predict_proba(x, sampling), first)
    calls = []
    original = Augmenter.__call__

    def spy(self, *args, **kwargs):
        calls.append(len(args[1]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Augmenter, "__call__", spy)
    model.augmentation = ALL_ON  # every augmentation certain: it would change every prediction if it ran
    try:
        assert np.array_equal(model.predict_proba(x, sampling), first)
        assert np.array_equal(model.predict(x, sampling), np.argmax(first, axis=1))
        model.predict_angle_deg(x, sampling)
    finally:
        model.augmentation = None
    assert calls == []
    # ...while training with it calls the augmenter on training batches only (7 of 8 patterns here)
    patterns, labels, _ = few(smoke)
    NeuralModel("cnn-cls", max_epochs=2, batch_size=4, augmentation=ALL_ON, seed=0).fit(patterns, labels, sampling)
    assert calls == [4, 3, 4, 3]
    assert "aug" not in "".join(inspect.signature(training.evaluate).parameters)


# --- interface ------------------------------------------------------------------------------------------

def test_the_nine_kinds_are_registered_with_their_defaults():
    assert set(neural.KINDS) == {f"{e}-{h}" for e in ("cnn", "resnet", "vgg") for h in ("cls", "reg", "proto")}
    assert all(REGISTRY[k] is NeuralModel for k in neural.KINDS) and NeuralModel.suffix == ".pt"
    m = NeuralModel("vgg-reg")
    c = m.train_config
    assert (c.lr, c.weight_decay, c.batch_size, c.max_epochs, c.patience) == (2e-4, 1e-4, 128, 20, 5)
    assert m.depth == 11 and NeuralModel("resnet-cls").depth == 18 and NeuralModel("cnn-cls").depth is None
    assert NeuralModel("resnet-cls", depth=50).depth == 50


def test_bad_inputs_fail_with_one_line_errors(smoke):
    patterns, labels, sampling = few(smoke)
    for call, match in [
        (lambda: NeuralModel("cnn-knn"), "unknown"),
        (lambda: NeuralModel("cnn-cls", depth=18), "fixed depth"),
        (lambda: NeuralModel("resnet-cls", depth=20), "depth 20"),
        (lambda: NeuralModel("vgg-cls", depth=18), "depth 18"),
        (lambda: NeuralModel("cnn-cls").fit(patterns, labels[:-1], sampling), "shape"),
        (lambda: NeuralModel("cnn-cls").fit(patterns, labels + 8, sampling), "0–7"),
        (lambda: NeuralModel("cnn-cls").predict(patterns, sampling), "not fitted"),
        (lambda: NeuralModel("cnn-cls").fit(patterns[:1], labels[:1], sampling), "cannot be split"),
    ]:
        with pytest.raises(ValueError, match=match) as info:
            call()
        assert "\n" not in str(info.value)


def test_input_statistics_are_d4_symmetric_and_floored():
    """The per-pixel standardisation: mean and spread of the training inputs, identical under every D4
    operation (the class set is D4-closed), near-constant pixels floored so they are not blown up."""
    from polar4d_lib.augmentation import mirror_x, rotate90

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(40, 1, 9, 9, generator=gen)
    x[:, :, 0, :] = 0.5  # constant rows and columns: zero spread before the floor
    x[:, :, :, 0] = 0.5
    mean, std = neural.input_statistics(x)
    assert mean.shape == (9, 9) and std.shape == (9, 9)
    for image in (mirror_x(mean), rotate90(mean), rotate90(mean, 3), mirror_x(rotate90(mean))):
        torch.testing.assert_close(image, mean, rtol=0, atol=1e-6)
    torch.testing.assert_close(rotate90(std), std, rtol=0, atol=1e-6)
    assert float(std.min()) >= 0.01 * float(std.median()) - 1e-9
    # symmetrised moments of one D4 orbit: the mean of an image and its 8 transforms
    single = torch.zeros(1, 1, 9, 9)
    single[0, 0, 6, 4] = 8.0  # (kx, ky) = (+2, 0): its orbit is the 4 points at distance 2 along the axes
    m, _ = neural.input_statistics(single)
    assert float(m[6, 4]) == float(m[2, 4]) == float(m[4, 6]) == float(m[4, 2]) == pytest.approx(2.0)


def test_networks_standardise_with_training_statistics_and_keep_them_on_save(smoke, tmp_path):
    patterns, labels, sampling = smoke
    model = NeuralModel("cnn-cls", max_epochs=1, batch_size=32, seed=1).fit(patterns, labels, sampling)
    mean, std = model.network.input_mean, model.network.input_std
    assert float(std.min()) > 0 and not torch.all(mean == 0), "statistics were not set from the training inputs"
    loaded = load_model(model.save(tmp_path / "m.pt"))
    torch.testing.assert_close(loaded.network.input_mean, mean, rtol=0, atol=0)
    plain = NeuralModel("cnn-cls", max_epochs=1, batch_size=32, seed=1, standardize=False).fit(patterns, labels, sampling)
    assert torch.all(plain.network.input_mean == 0) and torch.all(plain.network.input_std == 1)
    assert load_model(plain.save(tmp_path / "p.pt")).standardize is False


def test_custom_cnn_takes_a_stack_of_patterns_as_channels():
    """The paper's CNN on 16 patterns per input (one per probe position of a cell, benchmarks/cell_stacks.py):
    features for the documented size, and the stack's order matters to it (it is not a mean)."""
    from polar4d_lib.models.networks import custom_cnn

    torch.manual_seed(0)
    encoder, n = custom_cnn(16, channels=16)
    x = torch.rand(3, 16, 16, 16)
    assert n == 64 * 2 * 2 and encoder(x).shape == (3, n)
    assert not torch.allclose(encoder(x), encoder(x.flip(1)))
    assert custom_cnn(64)[1] == 64 * 14 * 14
    with pytest.raises(ValueError, match="input channels"):
        custom_cnn(16, channels=0)
