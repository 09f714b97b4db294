"""Training augmentation (polar4d_lib.augmentation): label-aware D4 checked against the simulation,
determinism, identities and the individual transforms."""

import json

import numpy as np
import pytest
import torch

from polar4d_lib import conventions, simulation
from polar4d_lib import preprocessing as pp
from polar4d_lib._torchvision_compat import import_torchvision
from polar4d_lib.augmentation import AugmentationConfig, Augmenter, gaussian_blur, mirror_x, rotate90
from polar4d_lib.structure import knn_supercell

import_torchvision()
from torchvision.transforms.v2 import functional as F  # noqa: E402

MARGIN = 5e-5  # Pearson r of the best minus the second best class
OFF = dict(blur_p=0.0, jitter_p=0.0, noise_p=0.0, poisson_p=0.0, d4=False)


@pytest.fixture(scope="module")
def simulated_classes() -> np.ndarray:
    """Position-averaged patterns (8, 64, 64) of KNbO3 (no K/Na disorder, so the crystal has the full
    D4 symmetry of the projected cell), one specimen per class (the first variant of that class in
    ``conventions.VARIANTS``; the inclined ones all point up, +z), 3 × 3 cells, 4 nm, averaged over a
    4 × 4 grid of probe positions covering one cell; minmax-normalised like the models' input.

    Multislice rather than ``PrismSpecimen``: for 16 positions it is ~8× faster here and the two
    engines agree to 3e-6 of the pattern maximum on exactly these specimens."""
    a = 3.95
    positions = simulation.cell_grid_positions(a, 4)
    patterns = []
    for k in range(conventions.N_CLASSES):
        variant = int(np.flatnonzero(conventions.VARIANT_CLASSES == k)[0])
        atoms = knn_supercell(variant, lateral_cells=3, thickness_nm=4.0, a_A=a, k_fraction=1.0).atoms
        p = simulation.multislice_patterns(atoms, simulation.ProbeSettings(), positions,
                                           simulation.SimulationSettings(), a)
        patterns.append(p[0].mean(axis=0))
    return pp.Preprocessor(sampling_mrad=1.5, size=64, center="nominal").transform(np.stack(patterns), 1.5)


def _pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each pattern of ``a`` (N, H, W) with each of ``b`` (M, H, W): (N, M)."""
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    a = (a - a.mean(1, keepdims=True)) / np.linalg.norm(a - a.mean(1, keepdims=True), axis=1, keepdims=True)
    b = (b - b.mean(1, keepdims=True)) / np.linalg.norm(b - b.mean(1, keepdims=True), axis=1, keepdims=True)
    return a @ b.T


def test_d4_labels_follow_the_simulated_patterns(simulated_classes):
    sims = simulated_classes
    repeats = 32
    x = torch.from_numpy(np.repeat(sims, repeats, axis=0))[:, None]
    y = torch.arange(8, dtype=torch.int64).repeat_interleave(repeats)
    x_aug, y_aug = Augmenter(AugmentationConfig(**{**OFF, "d4": True}))(x, y, torch.Generator().manual_seed(5))
    best = _pearson(x_aug[:, 0].numpy(), sims).argmax(axis=1)
    # a rotated/mirrored pattern of class k looks most like the simulated pattern of the mapped class
    np.testing.assert_array_equal(best, y_aug.numpy())
    # every class visited its whole D4 orbit (4 labels: rotations by 0, 90, 180 and 270°)
    for k in range(8):
        assert set(y_aug[y == k].tolist()) == {int(conventions.rotate90_class(k, t)) for t in range(4)}
    # the decision is clear-cut: the mapped class beats every other by far more than numerical noise
    corr = np.sort(_pearson(x_aug[:, 0].numpy(), sims), axis=1)
    assert np.all(corr[:, -1] - corr[:, -2] > MARGIN)
    # and it can fail: a turn the wrong way (−90°) or a mirror about the wrong axis (y) would give RD
    # (class 7) where RU (class 1) turned by +90° or mirrored x → −x gives LU (class 3)
    ru = sims[1]
    for image in (conventions.rotate90_pattern(ru), conventions.mirror_x_pattern(ru)):
        r = _pearson(image[None], sims)[0]
        assert r.argmax() == 3 and r[3] - r[7] > MARGIN
    assert _pearson(conventions.rotate90_pattern(ru, 3)[None], sims)[0].argmax() == 7


@pytest.mark.parametrize("n", [7, 8])
def test_d4_on_tensors_is_the_conventions_map(n):
    rng = np.random.default_rng(n)
    p = rng.random((2, n, n))
    for times in range(5):
        np.testing.assert_array_equal(rotate90(torch.from_numpy(p), times).numpy(), conventions.rotate90_pattern(p, times))
    np.testing.assert_array_equal(mirror_x(torch.from_numpy(p)).numpy(), conventions.mirror_x_pattern(p))
    # each augmented pattern is one of the 8 D4 images of its input, with that image's class
    x = torch.from_numpy(np.repeat(p[:1], 40, axis=0))[:, None]
    y = torch.full((40,), 1, dtype=torch.int64)
    x_aug, y_aug = Augmenter(AugmentationConfig(**{**OFF, "d4": True}))(x, y, torch.Generator().manual_seed(0))
    images = {(m, t): conventions.rotate90_pattern(conventions.mirror_x_pattern(p[0]) if m else p[0], t)
              for m in (0, 1) for t in range(4)}
    seen = set()
    for pattern, label in zip(x_aug[:, 0].numpy(), y_aug.tolist()):
        (m, t), = [key for key, image in images.items() if np.array_equal(image, pattern)]
        assert label == conventions.rotate90_class(conventions.mirror_x_class(1) if m else 1, t)
        seen.add((m, t))
    assert len(seen) == 8


def _batch(b: int = 16, n: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((b, 1, n, n), generator=g), torch.randint(0, 8, (b,), generator=g)


def test_same_generator_seed_gives_identical_output_and_inputs_are_untouched():
    x, y = _batch()
    x0, y0 = x.clone(), y.clone()
    aug = Augmenter(AugmentationConfig(blur_p=0.5, jitter_p=0.5, noise_p=0.5, poisson_p=0.5, d4=True))
    a = aug(x, y, torch.Generator().manual_seed(11))
    b = aug(x, y, torch.Generator().manual_seed(11))
    c = aug(x, y, torch.Generator().manual_seed(12))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert torch.equal(x, x0) and torch.equal(y, y0)


def test_zero_probabilities_are_the_identity():
    x, y = _batch()
    x_aug, y_aug = Augmenter(AugmentationConfig(**OFF))(x, y, torch.Generator().manual_seed(0))
    assert torch.equal(x_aug, x) and torch.equal(y_aug, y)


def test_everything_on_keeps_shape_and_gives_finite_values_in_range():
    x, y = _batch(24, 40)
    aug = Augmenter(AugmentationConfig(blur_p=1, jitter_p=1, noise_p=1, poisson_p=1, d4=True))
    x_aug, y_aug = aug(x, y, torch.Generator().manual_seed(3))
    assert x_aug.shape == x.shape and x_aug.dtype == x.dtype and y_aug.shape == y.shape and y_aug.dtype == y.dtype
    assert torch.isfinite(x_aug).all() and x_aug.min() >= 0 and x_aug.max() <= 1
    assert set(y_aug.tolist()) <= set(range(8))


def test_blur_is_torchvisions_gaussian_blur_with_one_sigma_per_image():
    x, _ = _batch(5, 48)
    sigmas = torch.tensor([2.0, 2.7, 3.1, 4.4, 5.0])
    out = gaussian_blur(x, sigmas)
    k = 41  # 2 · ceil(4 · 5) + 1: the kernel size of the largest σ, used for the whole batch
    for i in range(5):
        ref = F.gaussian_blur(x[i], kernel_size=[k, k], sigma=[float(sigmas[i])] * 2)
        assert torch.allclose(out[i], ref, atol=1e-5)
    # applied with probability blur_p per sample, σ within the range: a blurred image is smoother
    x, y = _batch(200, 24)
    x_aug, _ = Augmenter(AugmentationConfig(**{**OFF, "blur_p": 0.5}))(x, y, torch.Generator().manual_seed(1))
    changed = (x_aug != x).flatten(1).any(1)
    assert 0.4 < changed.float().mean() < 0.6
    assert torch.all(x_aug[changed].flatten(1).std(1) < 0.5 * x[changed].flatten(1).std(1))


def test_jitter_scales_brightness_and_contrast_within_the_range():
    x, y = _batch(64, 16)
    x = 0.2 + 0.5 * x  # within [0.2, 0.7]: no clamping at 1 for factors ≤ 1.15
    x_aug, _ = Augmenter(AugmentationConfig(**{**OFF, "jitter_p": 1.0}))(x, y, torch.Generator().manual_seed(2))
    mean_ratio = x_aug.mean(dim=(1, 2, 3)) / x.mean(dim=(1, 2, 3))  # contrast keeps the mean; brightness scales
    std_ratio = x_aug.std(dim=(1, 2, 3)) / x.std(dim=(1, 2, 3))
    assert torch.all((mean_ratio > 0.85 - 1e-4) & (mean_ratio < 1.15 + 1e-4))
    assert torch.all((std_ratio > 0.85**2 - 1e-4) & (std_ratio < 1.15**2 + 1e-4))
    assert mean_ratio.std() > 0.03 and std_ratio.std() > 0.03  # factors really vary per sample


def test_noise_has_the_configured_sigma():
    x = torch.full((8, 1, 64, 64), 0.5)
    y = torch.zeros(8, dtype=torch.int64)
    x_aug, _ = Augmenter(AugmentationConfig(**{**OFF, "noise_p": 1.0}))(x, y, torch.Generator().manual_seed(4))
    assert abs(float((x_aug - x).std()) - 0.05) < 0.003 and abs(float((x_aug - x).mean())) < 0.003


def test_poisson_recounting_depends_on_dose():
    x, y = _batch(8, 32)
    x = x * torch.linspace(0.1, 1.0, 32)[None, None, :, None]  # a gradient, so counts differ across the image
    def recount(dose: float) -> torch.Tensor:
        cfg = AugmentationConfig(**{**OFF, "poisson_p": 1.0, "dose_range": (dose, dose)})
        return Augmenter(cfg)(x, y, torch.Generator().manual_seed(6))[0]
    high, low = recount(1e8), recount(300.0)
    for out in (high, low):
        assert torch.allclose(out.amin(dim=(1, 2, 3)), torch.zeros(8)) and torch.allclose(out.amax(dim=(1, 2, 3)), torch.ones(8))
    reference = pp.normalize(x[:, 0].numpy().astype(np.float64), "minmax")
    corr_high = np.diag(_pearson(high[:, 0].numpy(), reference))
    corr_low = np.diag(_pearson(low[:, 0].numpy(), reference))
    assert np.all(corr_high > 0.999) and np.all(corr_low < 0.9)
    # at 300 electrons over 1024 pixels a pixel holds a few counts: few distinct levels
    assert all(len(torch.unique(p)) <= 12 for p in low)


def test_config_round_trip_and_validation():
    cfg = AugmentationConfig(blur_p=0.1, blur_sigma_px=(1.0, 3.0), poisson_p=0.4, dose_range=(1e2, 1e4), d4=True)
    again = AugmentationConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and Augmenter.from_dict(Augmenter(cfg).to_dict()).cfg == cfg
    for bad, message in [({"blur_p": 1.5}, "probability"), ({"blur_sigma_px": (3.0, 1.0)}, "low ≤ high"),
                         ({"dose_range": (0, 10)}, "0 < low"), ({"jitter": 1.2}, "jitter"),
                         ({"noise_sigma": -1}, "noise_sigma")]:
        with pytest.raises(ValueError, match=message):
            AugmentationConfig(**bad)
    with pytest.raises(ValueError, match="unknown augmentation parameter"):
        AugmentationConfig.from_dict({"rotate_p": 0.5})


def test_bad_batches_are_rejected():
    aug = Augmenter(AugmentationConfig(d4=True))
    x, y = _batch(4, 8)
    g = torch.Generator().manual_seed(0)
    for args, message in [((x[:, 0], y), r"\(B, 1, H, W\)"), ((x.double().long(), y), "float"),
                          ((x[..., :6], y), "square"), ((x, y.float()), "integer tensor"),
                          ((x, y[:2]), "integer tensor"), ((x * float("nan"), y), "NaN")]:
        with pytest.raises(ValueError, match=message):
            aug(*args, g)


def test_field_of_view_zeroes_outside_a_centred_square_and_keeps_labels():
    x = torch.ones(6, 1, 32, 32)
    y = torch.arange(6)
    cfg = AugmentationConfig(**{**OFF, "fov_p": 1.0, "fov_fraction": (0.5, 0.5)})
    out, labels = Augmenter(cfg)(x, y, torch.Generator().manual_seed(0))
    torch.testing.assert_close(labels, y)
    inside = torch.zeros(32, 32)
    inside[8:25, 8:25] = 1.0  # |i − 16| ≤ 8
    for image in out[:, 0]:
        torch.testing.assert_close(image, inside)
    untouched, _ = Augmenter(AugmentationConfig(**{**OFF, "fov_p": 0.0}))(x, y, torch.Generator().manual_seed(0))
    torch.testing.assert_close(untouched, x)
    with pytest.raises(ValueError, match="fov_fraction"):
        AugmentationConfig(fov_fraction=(0.5, 1.5))
