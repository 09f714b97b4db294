"""The training loop (polar4d_lib.training) on tiny synthetic images: losses, decoding, early stopping,
determinism, resuming and the separation of the training (augmented) and evaluation paths."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch

from polar4d_lib import config, conventions, training
from polar4d_lib.models.networks import build_network

SIZE = 16


@pytest.fixture(autouse=True)
def _no_progress_bars():
    """No progress bars in the test output (restored afterwards)."""
    with config.set({"progress_bar": False}):
        yield


def spots(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n images (n, 1, 16, 16): a Gaussian spot 4 px from the centre at the class angle k·45° (x = first
    image axis, y = second), plus noise. Labels (n,) int64."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 8, n)
    qx, qy = np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing="ij")
    angle = np.radians(y * 45.0)
    cx, cy = SIZE // 2 + 4 * np.cos(angle), SIZE // 2 + 4 * np.sin(angle)
    img = np.exp(-((qx - cx[:, None, None]) ** 2 + (qy - cy[:, None, None]) ** 2) / (2 * 1.5**2))
    img = img + 0.05 * rng.standard_normal(img.shape)
    return torch.tensor(img[:, None], dtype=torch.float32), torch.tensor(y, dtype=torch.int64)


def net(head: str = "cls", seed: int = 0, dropout: float = 0.0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network("cnn", None, head, size=SIZE, dropout=dropout)


@pytest.fixture(scope="module")
def data():
    x, y = spots(160, seed=1)
    return x[:128], y[:128], x[128:], y[128:]


class NoiseAugmenter:
    """A stand-in augmenter with the Augmenter call signature that draws from the generator and counts
    its calls (and whether the model was in training mode)."""

    def __init__(self, model: torch.nn.Module | None = None) -> None:
        self.calls, self.sizes, self.model, self.modes = 0, [], model, []

    def __call__(self, x, y, generator):
        self.calls += 1
        self.sizes.append(len(y))
        if self.model is not None:
            self.modes.append(self.model.training)
        return x + 0.05 * torch.randn(x.shape, generator=generator), y


# --- targets, losses and decoding --------------------------------------------------------------------

def test_class_vectors_decode_to_their_class():
    k = torch.arange(8)
    v = training.class_vectors(k)
    assert torch.allclose(v[2], torch.tensor([0.0, 1.0]), atol=1e-6)  # 90° is +y
    assert np.array_equal(training.decode_reg(v.numpy()), np.arange(8))
    assert training.decode_reg(v.numpy()).dtype == np.int8


def test_atan2_decode_covers_all_sectors_with_edges_at_22_5_deg():
    angles = np.arange(0.0, 360.0, 0.25)
    vec = np.stack([np.cos(np.radians(angles)), np.sin(np.radians(angles))], axis=1) * 0.3  # any length
    decoded = training.decode_reg(vec)
    assert set(decoded.tolist()) == set(range(8))
    expected = (np.floor((angles + 22.5) / 45.0) % 8).astype(int)
    off_edge = np.abs((angles - 22.5) % 45.0) > 1e-9
    assert np.array_equal(decoded[off_edge], expected[off_edge])
    for k in range(8):  # just either side of each edge 22.5° + k·45°
        edge = np.radians(22.5 + 45.0 * k)
        below = training.decode_reg(np.array([[np.cos(edge - 1e-4), np.sin(edge - 1e-4)]]))
        above = training.decode_reg(np.array([[np.cos(edge + 1e-4), np.sin(edge + 1e-4)]]))
        assert (below[0], above[0]) == (k, (k + 1) % 8)


def test_soft_labels_are_circular_gaussians_with_sigma_1_25():
    t = training.soft_labels(torch.tensor([0, 3]), torch.arange(8))
    d = np.array([0, 1, 2, 3, 4, 3, 2, 1])
    w = np.exp(-(d**2) / (2 * 1.25**2))
    assert np.allclose(t[0].numpy(), w / w.sum(), atol=1e-6)
    assert np.allclose(t[1].numpy(), np.roll(w / w.sum(), 3), atol=1e-6)
    assert np.allclose(t.sum(dim=1).numpy(), 1.0)


def test_prototype_loss_matches_a_hand_computation():
    e = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 1.0]], requires_grad=True)
    y = torch.tensor([0, 0, 2])
    logits, classes = training.prototype_logits(e, y)
    assert classes.tolist() == [0, 2]  # only the classes present; no zero prototypes for the others
    # prototypes (1, 0) and (0, 1); logits = −squared distances
    assert torch.allclose(logits, -torch.tensor([[1.0, 1.0], [1.0, 5.0], [2.0, 0.0]]))
    lp = logits.detach().numpy() - np.log(np.exp(logits.detach().numpy()).sum(axis=1, keepdims=True))
    w_far = math.exp(-4 / (2 * 1.25**2))  # classes 0 and 2 are 2 apart
    t = np.array([[1, w_far], [1, w_far], [w_far, 1]]) / (1 + w_far)
    expected = float((t * (np.log(t) - lp)).sum() / 3)
    loss = training.prototype_loss(e, y)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert torch.all(torch.isfinite(e.grad))
    assert training.prototype_loss(torch.randn(4, 3), torch.tensor([5, 5, 5, 5])).item() == pytest.approx(0.0, abs=1e-7)


def test_losses_per_head():
    y = torch.tensor([0, 2, 7])
    assert training.loss_fn("reg", training.class_vectors(y), y).item() == pytest.approx(0.0, abs=1e-12)
    logits = torch.full((3, 8), -20.0)
    logits[torch.arange(3), y] = 20.0
    assert training.loss_fn("cls", logits, y).item() < 1e-10
    with pytest.raises(ValueError, match="unknown head"):
        training.loss_fn("knn", logits, y)


# --- the loop --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("head", ["cls", "reg", "proto"])
def test_every_head_learns_the_synthetic_task(data, head):
    model = net(head)
    cfg = training.TrainConfig(lr=2e-3, batch_size=32, max_epochs=8, patience=8, seed=3)
    history = training.fit(model, head, *data, cfg=cfg)
    print(f"{head}: val_acc per epoch {np.round(history.val_acc, 3).tolist()}")
    assert history.epochs == 8 and len(history.val_loss) == 8 and history.best_epoch >= 1
    assert max(history.val_acc) >= 0.6  # chance is 1/8
    assert min(history.val_loss) < history.val_loss[0]


def test_fit_is_deterministic_and_leaves_global_state_alone(data):
    cfg = training.TrainConfig(lr=1e-3, batch_size=32, max_epochs=2, seed=5)
    rng_before, det_before, threads_before = torch.get_rng_state(), torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    a, b, c = net(dropout=0.3), net(dropout=0.3), net(dropout=0.3)
    rng_before = torch.get_rng_state()
    ha = training.fit(a, "cls", *data, cfg=cfg, augmenter=NoiseAugmenter())
    hb = training.fit(b, "cls", *data, cfg=cfg, augmenter=NoiseAugmenter())
    training.fit(c, "cls", *data, cfg=training.TrainConfig(lr=1e-3, batch_size=32, max_epochs=2, seed=6),
                 augmenter=NoiseAugmenter())
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert ha.to_dict() == hb.to_dict()
    assert any(not torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())  # the seed matters
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert torch.are_deterministic_algorithms_enabled() == det_before
    assert torch.get_num_threads() == threads_before


def test_resumed_run_equals_an_uninterrupted_one(data, tmp_path):
    cfg4 = training.TrainConfig(lr=1e-3, batch_size=32, max_epochs=4, patience=5, seed=7)
    cfg2 = training.TrainConfig(lr=1e-3, batch_size=32, max_epochs=2, patience=5, seed=7)
    straight = net(dropout=0.2)
    h_straight = training.fit(straight, "cls", *data, cfg=cfg4, augmenter=NoiseAugmenter())

    ckpt = tmp_path / "run" / "checkpoint.pt"
    first = net(dropout=0.2)
    training.fit(first, "cls", *data, cfg=cfg2, augmenter=NoiseAugmenter(), checkpoint_path=ckpt)  # "interrupted"
    assert training.load_checkpoint(ckpt)["epoch"] == 2
    assert [p.name for p in ckpt.parent.iterdir()] == ["checkpoint.pt"]  # no temporary files left
    resumed = net(seed=99, dropout=0.2)  # initial weights are replaced by the checkpoint's
    augmenter = NoiseAugmenter()
    h_resumed = training.fit(resumed, "cls", *data, cfg=cfg4, augmenter=augmenter, checkpoint_path=ckpt)
    assert augmenter.calls == 2 * 4  # only epochs 3 and 4 ran (4 batches of 32 each)
    assert h_resumed.to_dict() == h_straight.to_dict()
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    assert training.load_checkpoint(ckpt)["epoch"] == 4

    with pytest.raises(ValueError, match="another run"):
        training.fit(net(), "cls", *data, cfg=training.TrainConfig(lr=5e-4, batch_size=32, max_epochs=4, seed=7),
                     checkpoint_path=ckpt)
    bogus = tmp_path / "bogus.pt"
    torch.save({"weights": torch.zeros(2)}, bogus)
    with pytest.raises(ValueError, match="not a polar4d training checkpoint"):
        training.fit(net(), "cls", *data, cfg=cfg4, checkpoint_path=bogus)


def test_early_stopping_stops_after_patience_and_restores_the_best_epoch(data):
    # A learning rate far below float32 resolution: the weights never move, so the validation loss never
    # improves after epoch 1 and the run stops after 1 + patience epochs.
    frozen = net()
    h = training.fit(frozen, "cls", *data, cfg=training.TrainConfig(lr=1e-30, batch_size=64, max_epochs=20, patience=2))
    assert (h.epochs, h.best_epoch, h.stopped_early) == (3, 1, True)

    # Validation labels that contradict the training ones: the validation loss rises as training goes on;
    # the weights kept are those of the best validation epoch, not the last.
    x_tr, y_tr, x_va, y_va = data
    model = net()
    h = training.fit(model, "cls", x_tr, y_tr, x_va, (y_va + 4) % 8,
                     cfg=training.TrainConfig(lr=2e-3, batch_size=32, max_epochs=6, patience=3))
    assert h.best_epoch < h.epochs
    final_loss, _ = training.evaluate(model, "cls", x_va, (y_va + 4) % 8, batch_size=32)
    assert final_loss == pytest.approx(min(h.val_loss), rel=1e-6)
    assert final_loss < h.val_loss[-1]


def test_augmentation_reaches_only_the_training_step(data):
    for fn in (training.evaluate, training.forward_batches):
        assert not any("aug" in name for name in inspect.signature(fn).parameters)
    model = net()
    spy = NoiseAugmenter(model)
    x_tr, y_tr, x_va, y_va = data
    training.fit(model, "cls", x_tr, y_tr, x_va, y_va, cfg=training.TrainConfig(batch_size=48, max_epochs=2), augmenter=spy)
    assert spy.calls == 2 * 3 and sum(spy.sizes) == 2 * len(y_tr)  # training batches only, never validation
    assert all(spy.modes)  # always called with the model in training mode
    out1 = training.forward_batches(model, x_va, batch_size=7)
    out2 = training.forward_batches(model, x_va, batch_size=32)
    assert spy.calls == 6  # the evaluation path never calls it
    assert torch.allclose(out1, out2, atol=1e-6)  # eval mode: outputs independent of the batching


def test_bad_inputs_fail_with_one_line_errors(data):
    x_tr, y_tr, x_va, y_va = data
    with pytest.raises(ValueError, match="matching"):
        training.fit(net(), "cls", x_tr, y_tr[:-1], x_va, y_va)
    with pytest.raises(ValueError, match="batch_size"):
        training.TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="lr"):
        training.TrainConfig(lr=0.0)


def test_progress_bar_follows_the_config(data, capsys):
    x_tr, y_tr, x_va, y_va = data
    cfg = training.TrainConfig(batch_size=64, max_epochs=1)
    with config.set({"progress_bar": True}):
        training.fit(net(), "cls", x_tr[:64], y_tr[:64], x_va, y_va, cfg=cfg)
    assert "training (cls)" in capsys.readouterr().err
    with config.set({"progress_bar": False}):
        training.fit(net(), "cls", x_tr[:64], y_tr[:64], x_va, y_va, cfg=cfg)
    assert "training" not in capsys.readouterr().err


def test_labels_follow_the_class_angle_convention():
    # class k's regression target points at k·45° from +x towards +y
    v = training.class_vectors(torch.arange(8)).numpy()
    assert np.allclose(np.degrees(np.arctan2(v[:, 1], v[:, 0])) % 360, conventions.CLASS_ANGLES_DEG, atol=1e-4)
