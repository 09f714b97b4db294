"""Training-time augmentation of preprocessed patterns, on ``torchvision.transforms.v2``.

For training batches only: the evaluation path never augments (the paper's scripts scored external
test sets through the augmenting training loader; polar4d does not). Applied to preprocessed
patterns (B, 1, H, W), float, about [0, 1] (minmax), with their labels (B,), in this order, each
step drawn per sample with its probability:

1. label-aware D4 (``d4``): mirror x → −x with probability ½, then rotate by k · 90° (x → y),
   k uniform in 0–3, about the zero-angle pixel ``n // 2`` exactly as
   ``conventions.mirror_x_pattern`` / ``rotate90_pattern`` do (``torch.flip``/``torch.rot90`` plus a
   one-pixel roll on even sizes, which keeps the centre pixel fixed); labels follow with
   ``conventions.mirror_x_class`` / ``rotate90_class``;
2. Gaussian blur (``blur_p``), σ uniform in ``blur_sigma_px`` (px) per image, kernel truncated at 4σ
   (as the paper's OpenCV blur), reflected edges — :func:`gaussian_blur`, the kernel of
   ``v2.functional.gaussian_blur`` applied batch-wise with one σ per image;
3. Poisson re-counting (``poisson_p``) at a dose (electrons per pattern) log-uniform in ``dose_range``:
   counts = Poisson(x / sum(x) · dose), then min–max re-normalised (blur before counting: a detector's
   point spread acts before its electrons are counted);
4. brightness and contrast jitter (``jitter_p``), factors uniform in [1 − jitter, 1 + jitter], applied
   in random order as ``v2.ColorJitter(brightness, contrast)`` does — ``v2.functional.adjust_brightness``
   / ``adjust_contrast`` (float images are clamped to [0, 1] there);
5. additive Gaussian noise (``noise_p``) of standard deviation ``noise_sigma``, clipped to [0, 1] like
   ``v2.GaussianNoise`` (default ``clip=True``).

Every random decision and parameter comes from the ``torch.Generator`` passed in: the v2 transform
classes (``v2.RandomApply``, ``v2.GaussianBlur``, ``v2.ColorJitter``, ``v2.GaussianNoise``) draw from
torch's global generator, so their parameters are drawn here and the functional API is called with
them; the same generator state gives the same batch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch

from polar4d_lib import config, conventions
from polar4d_lib._torchvision_compat import import_torchvision

import_torchvision()
from torchvision.transforms.v2 import functional as F  # noqa: E402


@dataclass
class AugmentationConfig:
    """Probabilities and ranges of the training augmentations (defaults: the paper's three; Poisson
    re-counting, D4 and detector field of view off). Sigmas in px, jitter as a relative factor, noise in
    normalised intensity, doses in electrons per pattern, ``fov_fraction`` the detector's half-width as a
    fraction of the crop's."""

    blur_p: float = 0.5
    blur_sigma_px: tuple[float, float] = (2.0, 5.0)
    jitter_p: float = 0.3
    jitter: float = 0.15
    noise_p: float = 0.2
    noise_sigma: float = 0.05
    poisson_p: float = 0.0
    dose_range: tuple[float, float] = (1e3, 1e5)
    d4: bool = False
    fov_p: float = 0.0
    fov_fraction: tuple[float, float] = (0.6, 1.0)

    def __post_init__(self) -> None:
        for name in ("blur_p", "jitter_p", "noise_p", "poisson_p", "fov_p"):
            value = float(getattr(self, name))
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a probability and must lie in [0, 1], got {getattr(self, name)!r}")
            setattr(self, name, value)
        self.blur_sigma_px = _range(self.blur_sigma_px, "blur_sigma_px", "px")
        self.dose_range = _range(self.dose_range, "dose_range", "electrons per pattern")
        self.fov_fraction = _range(self.fov_fraction, "fov_fraction", "fractions of the crop's half-width")
        if self.fov_fraction[1] > 1:
            raise ValueError(f"fov_fraction must lie in (0, 1], got {self.fov_fraction}")
        for name in ("jitter", "noise_sigma"):
            value = float(getattr(self, name))
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number ≥ 0, got {getattr(self, name)!r}")
            setattr(self, name, value)
        if self.jitter >= 1:
            raise ValueError(f"jitter must be < 1 (factors 1 ± jitter stay positive), got {self.jitter}")
        self.d4 = bool(self.d4)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able parameters (ranges as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AugmentationConfig":
        """The config of ``to_dict``; a one-line error on unknown keys."""
        config.check_known_keys(d, {f.name for f in fields(cls)}, "augmentation parameter")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _range(value: Any, name: str, unit: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (low, high) in {unit}, got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
        raise ValueError(f"{name} must be a pair 0 < low ≤ high in {unit}, got {value!r}")
    return lo, hi


# --- D4 on tensors (..., H, W), centre pixel n // 2 fixed ----------------------------------------

def mirror_x(x: torch.Tensor) -> torch.Tensor:
    """kx → −kx about pixel n // 2 of dim −2 (``conventions.mirror_x_pattern`` on tensors)."""
    n = x.shape[-2]
    return torch.roll(torch.flip(x, dims=(-2,)), shifts=1 - n % 2, dims=-2)


def rotate90(x: torch.Tensor, times: int = 1) -> torch.Tensor:
    """Rotation by ``times`` × (+90°), x → y, about pixel n // 2 (``conventions.rotate90_pattern``
    on tensors): ``torch.rot90`` (new[i, j] = old[j, n − 1 − i]) then a roll that moves the centre back."""
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"rotation needs square patterns, got {tuple(x.shape[-2:])}; crop them first")
    for _ in range(times % 4):
        x = torch.roll(torch.rot90(x, 1, dims=(-2, -1)), shifts=1 - x.shape[-2] % 2, dims=-2)
    return x


def blur_kernel_size(max_sigma_px: float, shape: tuple[int, int]) -> int:
    """Odd kernel size (px) truncating a Gaussian of σ = ``max_sigma_px`` at 4σ (the paper's OpenCV
    blur), at most ``2 · min(H, W) − 1`` (reflect padding needs kernel // 2 < size)."""
    return min(2 * math.ceil(4 * max_sigma_px) + 1, 2 * min(shape) - 1)


def gaussian_blur(x: torch.Tensor, sigmas_px: torch.Tensor) -> torch.Tensor:
    """Blur each image of ``x`` (B, 1, H, W) with its own σ (``sigmas_px``, (B,), px).

    Identical to ``v2.functional.gaussian_blur(x[i], [k, k], [σᵢ, σᵢ])`` for every image (the same
    sampled, normalised Gaussian kernel and reflected edges) with one kernel size
    k = :func:`blur_kernel_size` (max σ) for the batch, but in two grouped separable convolutions for
    the whole batch instead of one 2-D convolution per image: ``v2.GaussianBlur`` takes one σ per call
    and one call per image costs tens of ms on a CPU.
    """
    b, _, h, w = x.shape
    sigmas = torch.as_tensor(sigmas_px, dtype=torch.float64).reshape(-1)
    if len(sigmas) != b or not bool(torch.all(sigmas > 0)):
        raise ValueError(f"need one positive σ (px) per image, got {tuple(sigmas.shape)} for {b} images")
    k = blur_kernel_size(float(sigmas.max()), (h, w))
    half = (k - 1) / 2
    grid = torch.linspace(-half, half, k, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (grid[None, :] / sigmas[:, None]) ** 2)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).to(dtype=x.dtype, device=x.device)
    padded = torch.nn.functional.pad(x.reshape(1, b, h, w), (k // 2,) * 4, mode="reflect")
    rows = torch.nn.functional.conv2d(padded, kernel[:, None, :, None], groups=b)
    return torch.nn.functional.conv2d(rows, kernel[:, None, None, :], groups=b).reshape(b, 1, h, w)


# --- the augmenter --------------------------------------------------------------------------------

class Augmenter:
    """Random training augmentation of a batch: ``x_aug, y_aug = Augmenter(cfg)(x, y, generator)``.

    ``x`` (B, 1, H, W) float, ``y`` (B,) int64 class labels 0–7; returns new tensors (inputs are not
    modified), labels changed only by D4. Deterministic given the generator's state. Never use it at
    evaluation time.
    """

    def __init__(self, cfg: AugmentationConfig | None = None) -> None:
        self.cfg = cfg if cfg is not None else AugmentationConfig()

    def to_dict(self) -> dict[str, Any]:
        return self.cfg.to_dict()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Augmenter":
        return cls(AugmentationConfig.from_dict(d))

    def __repr__(self) -> str:
        return f"Augmenter({self.cfg})"

    def __call__(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = _check_batch(x, y, square=self.cfg.d4)
        if not isinstance(generator, torch.Generator):
            raise ValueError("generator must be a torch.Generator (e.g. torch.Generator().manual_seed(seed))")
        cfg = self.cfg
        if cfg.d4:
            x, y = self._d4(x, y, generator)
        x = self._fov(x, generator)
        x = self._blur(x, generator)
        x = self._poisson(x, generator)
        x = self._jitter(x, generator)
        x = self._noise(x, generator)
        return x, y

    # Each step draws its per-sample decisions and parameters for the whole batch (a fixed number of
    # draws, so one step's outcome does not shift the next step's random stream).
    @staticmethod
    def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64, device=g.device).cpu()

    def _chosen(self, n: int, p: float, g: torch.Generator) -> torch.Tensor:
        return self._uniform(n, 0.0, 1.0, g) < p

    def _d4(self, x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        b = len(x)
        mirror = self._chosen(b, 0.5, g)
        turns = torch.randint(0, 4, (b,), generator=g, device=g.device).cpu()
        labels = y.cpu().numpy()
        labels = np.where(mirror.numpy(), conventions.mirror_x_class(labels), labels)
        labels = conventions.rotate90_class(labels, turns.numpy())
        out = x.clone()
        for m in (False, True):
            for k in range(4):
                idx = torch.nonzero((mirror == m) & (turns == k)).flatten().to(x.device)
                if len(idx):
                    part = mirror_x(x[idx]) if m else x[idx]
                    out[idx] = rotate90(part, k)
        return out, torch.as_tensor(labels, dtype=y.dtype, device=y.device)

    def _fov(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """A smaller detector: zero outside a centred square whose half-width is a random fraction of
        the crop's (what the crop's zero padding gives for a detector that sees less than the model)."""
        cfg = self.cfg
        chosen = self._chosen(len(x), cfg.fov_p, g)
        fraction = self._uniform(len(x), *cfg.fov_fraction, g)
        if not chosen.any():
            return x
        h, w = x.shape[-2:]
        ix = (torch.arange(h, device=x.device) - h // 2).abs().view(-1, 1)
        iy = (torch.arange(w, device=x.device) - w // 2).abs().view(1, -1)
        out = x.clone()
        for i in torch.nonzero(chosen).flatten().tolist():
            half = float(fraction[i]) * (min(h, w) / 2)
            out[i] = x[i] * ((ix <= half) & (iy <= half)).to(x.dtype)
        return out

    def _blur(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        cfg = self.cfg
        chosen = self._chosen(len(x), cfg.blur_p, g)
        sigmas = self._uniform(len(x), *cfg.blur_sigma_px, g)
        if not chosen.any():
            return x
        idx = torch.nonzero(chosen).flatten().to(x.device)
        out = x.clone()
        out[idx] = gaussian_blur(x[idx], sigmas[chosen])
        return out

    def _poisson(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        cfg = self.cfg
        chosen = self._chosen(len(x), cfg.poisson_p, g)
        log_lo, log_hi = (math.log(d) for d in cfg.dose_range)
        doses = torch.exp(self._uniform(len(x), log_lo, log_hi, g))
        if not chosen.any():
            return x
        idx = torch.nonzero(chosen).flatten()
        part = x[idx.to(x.device)].clamp_min(0).to(torch.float64)
        total = part.sum(dim=(-3, -2, -1), keepdim=True)
        rates = torch.where(total > 0, part / total.clamp_min(1e-300), part) * doses[idx].view(-1, 1, 1, 1).to(x.device)
        counts = torch.poisson(rates.to(g.device), generator=g).to(x.device)
        lo = counts.amin(dim=(-3, -2, -1), keepdim=True)
        span = counts.amax(dim=(-3, -2, -1), keepdim=True) - lo
        renormed = torch.where(span > 0, (counts - lo) / span.clamp_min(1), torch.zeros_like(counts))
        out = x.clone()
        out[idx.to(x.device)] = renormed.to(x.dtype)
        return out

    def _jitter(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        cfg = self.cfg
        chosen = self._chosen(len(x), cfg.jitter_p, g)
        brightness = self._uniform(len(x), 1 - cfg.jitter, 1 + cfg.jitter, g)
        contrast = self._uniform(len(x), 1 - cfg.jitter, 1 + cfg.jitter, g)
        contrast_first = self._chosen(len(x), 0.5, g)
        if not chosen.any():
            return x
        out = x.clone()
        for i in torch.nonzero(chosen).flatten().tolist():
            steps = [(F.adjust_brightness, float(brightness[i])), (F.adjust_contrast, float(contrast[i]))]
            image = x[i]
            for fn, factor in (steps[::-1] if contrast_first[i] else steps):
                image = fn(image, factor)
            out[i] = image
        return out

    def _noise(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        cfg = self.cfg
        chosen = self._chosen(len(x), cfg.noise_p, g)
        if not chosen.any():
            return x
        idx = torch.nonzero(chosen).flatten()
        noise = torch.randn((len(idx),) + tuple(x.shape[1:]), generator=g, dtype=x.dtype, device=g.device)
        out = x.clone()
        out[idx.to(x.device)] = (x[idx.to(x.device)] + cfg.noise_sigma * noise.to(x.device)).clamp(0.0, 1.0)
        return out


def _check_batch(x: torch.Tensor, y: torch.Tensor, square: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 1:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a tensor (B, 1, H, W) of preprocessed patterns, got {shape}; add the channel axis with x[:, None]")
    if not x.is_floating_point():
        raise ValueError(f"x must be a float tensor, got {x.dtype}; convert with x.float()")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or inf; preprocess (and clean) the patterns first")
    if square and x.shape[-1] != x.shape[-2]:
        raise ValueError(f"D4 augmentation needs square patterns, got {tuple(x.shape[-2:])}; crop them first")
    if not isinstance(y, torch.Tensor) or y.shape != (x.shape[0],) or y.is_floating_point():
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"y must be an integer tensor (B,) = ({x.shape[0]},) of class labels, got {shape}")
    return x, y
