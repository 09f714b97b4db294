"""``cnn-stack``: the paper's CNN on a unit cell's patterns kept apart, for scans at any step up to a/4.

A scan coarser than λ/(2α) (0.52 Å at 200 keV, 24 mrad; a/4 = 0.99 Å is) has a cell mean that depends on
where the raster sits, and a model of means misreads it. This model reads instead the cell stack of
:func:`polar4d_lib.pacbed.cell_stack`: the patterns of a window of the scan folded into ``bins`` × ``bins``
parts of the unit cell, one channel each, the part with the most dark-field intensity first. At a/4 each
part is one probe position, at a/8 the mean of 2 × 2, at low dose (a window of several cells) more.

- Input: stacks (N, bins², Qx, Qy) at any angular sampling; the model rebins every pattern to its own
  grid (``Preprocessor``: its sampling and size around the nominal centre, no normalisation), divides
  each stack by its mean pattern total (a scan's dose is unknown) and takes the square root; the network
  standardises per channel and pixel with statistics that are symmetric under D4 (below).
- D4: a symmetry g of the square acts on a stack's patterns *and* on its bins × bins grid of parts. On a
  registered stack (brightest part first) g moves the first part to a corner that the registration rolls
  back, so g is the pattern map plus a fixed permutation of the channels (:func:`part_operations`).
  Training batches see a random g of each stack (:class:`StackD4`, the class mapped as CONVENTIONS.md
  says); ``d4_average`` predicts the mean over the 8 images, as for the other networks.
- Two column sites (``half_cell``, on by default): in the [001] projection of a perovskite the A columns
  (K/Na) and the B–O columns (Nb) lie half a cell apart along both axes, and which of them is brightest in
  dark field depends on thickness and channelling; where they are about equally bright the registration
  picks either, so a stack can come rolled by half a cell (measured: a 47 nm a/4 scan whose windows split
  between confident and near-uniform outputs). With ``half_cell`` the network sees every stack also rolled
  by (bins/2, bins/2) parts, in training (a random one of the 16 elements of D4 × {0, half}) and at
  prediction (the mean over all 16), so its answer does not depend on which site was brightest.
- Everything else is :class:`~polar4d_lib.models.neural.NeuralModel`'s: the custom CNN with ``bins²``
  input channels, the 512-unit layer and 8 logits, ``training.fit`` (early stopping, resumable), saving
  as a ``.pt`` state dict read with ``weights_only=True``.

``polar4d predict`` folds each window of a scan with the scan's lattice period (cell over step, else
:func:`polar4d_lib.pacbed.lattice_period_px`): the model's input kind, :class:`polar4d_lib.inputs.CellStacks`. Training stacks come from a
``cell_grid`` dataset's rasters (:func:`polar4d_lib.inputs.cell_stack_parts`).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterator

import numpy as np
import torch

from polar4d_lib import conventions
from polar4d_lib.augmentation import AugmentationConfig, mirror_x, rotate90
from polar4d_lib.models.base import register
from polar4d_lib.models.neural import NeuralModel
from polar4d_lib.models.networks import PolarNet, build_network
from polar4d_lib.preprocessing import Preprocessor

KIND = "cnn-stack"


def default_preprocessor() -> Preprocessor:
    """The cell-stack model's own grid: 16 px at 4.5 mrad/px (±36 mrad) around the nominal centre, counts
    kept (no normalisation), windows of one KNN cell (``conventions.A_A``)."""
    return Preprocessor(sampling_mrad=4.5, size=16, center="nominal", normalize="none", average_window_A=conventions.A_A)


def part_operations(bins: int) -> list[tuple[bool, int, np.ndarray]]:
    """The 8 symmetries of the square (mirror kx → −kx or not, then ``k`` × 90°; the order of
    :func:`conventions.d4_operations`) as they act on a registered stack: (mirror, k, perm), where image
    channel c holds the moved pattern of part ``perm[c]``. ``perm`` is the map on the ``bins`` × ``bins``
    grid of parts, rolled so that the first part stays first."""
    grid = np.arange(bins * bins).reshape(bins, bins)
    out = []
    for mirror in (False, True):
        for k in range(4):
            moved = conventions.rotate90_pattern(conventions.mirror_x_pattern(grid) if mirror else grid, k)
            a, b = np.argwhere(moved == 0)[0]
            out.append((mirror, k, np.roll(moved, (-a, -b), axis=(0, 1)).ravel()))
    return out


def stack_operations(bins: int, half_cell: bool) -> list[tuple[bool, int, np.ndarray]]:
    """:func:`part_operations`, and with ``half_cell`` each of them also after rolling the stack by half a
    cell (bins/2 parts along both axes: the other column site first): the 8 or 16 elements of the group
    that a stack model's training and prediction average over. (mirror, k, perm) as there."""
    operations = part_operations(bins)
    if not half_cell:
        return operations
    if bins % 2:
        raise ValueError(f"half_cell rolls a stack by half a cell, which needs an even number of bins, got {bins}")
    half = np.roll(np.arange(bins * bins).reshape(bins, bins), (-(bins // 2), -(bins // 2)), axis=(0, 1)).ravel()
    return operations + [(mirror, k, half[perm]) for mirror, k, perm in operations]


def move_stacks(x: torch.Tensor, mirror: bool, k: int, perm: np.ndarray) -> torch.Tensor:
    """Stacks x (N, bins², n, n) under one symmetry of :func:`part_operations`."""
    x = x[:, torch.as_tensor(perm)]
    return rotate90(mirror_x(x) if mirror else x, k)


def move_classes(classes: np.ndarray, mirror: bool, k: int) -> np.ndarray:
    """Classes under the symmetry (mirror, k) (CONVENTIONS.md)."""
    return conventions.rotate90_class(conventions.mirror_x_class(classes) if mirror else classes, k)


class StackD4:
    """Training-batch augmentation of cell stacks: each stack replaced by a random one of its 8 images
    (pattern map and part permutation together, :func:`part_operations`; 16 with ``half_cell``,
    :func:`stack_operations`), its class mapped alike (a half-cell roll keeps the class)."""

    def __init__(self, bins: int, half_cell: bool = False) -> None:
        self.operations = stack_operations(bins, half_cell)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        choice = torch.randint(0, len(self.operations), (len(x),), generator=generator).numpy()
        out, labels = x.clone(), y.cpu().numpy().copy()
        for o, (mirror, k, perm) in enumerate(self.operations):
            idx = np.flatnonzero(choice == o)
            if len(idx):
                out[idx] = move_stacks(x[idx], mirror, k, perm)
                labels[idx] = move_classes(labels[idx], mirror, k)
        return out, torch.as_tensor(labels, dtype=y.dtype, device=y.device)


def check_bins(bins: Any) -> int:
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 2:
        raise ValueError(f"bins is a whole number ≥ 2 of parts per cell side, got {bins!r}")
    return int(bins)


@register
class CellStackModel(NeuralModel):
    """The custom CNN on cell stacks (N, bins², Qx, Qy) (module docstring); classes 0–7."""

    kinds = (KIND,)
    reads = "cell-stacks"

    def __init__(self, kind: str = KIND, preprocessor: Preprocessor | None = None, bins: int = 4,
                 augmentation: AugmentationConfig | None = None, d4_average: bool = True, half_cell: bool = True,
                 **kwargs: Any) -> None:
        if augmentation is not None:
            raise ValueError("a cnn-stack model is always trained with D4 acting on its stacks (StackD4); "
                             "pass augmentation=None")
        self.bins = check_bins(bins)
        self.half_cell = bool(half_cell)
        stack_operations(self.bins, self.half_cell)  # an odd bins with half_cell fails here
        super().__init__(kind, default_preprocessor() if preprocessor is None else preprocessor,
                         d4_average=d4_average, **kwargs)
        self.head = "cls"
        if self.preprocessor.normalize != "none" or self.preprocessor.center != "nominal":
            raise ValueError("a cnn-stack model's preprocessor keeps counts around the nominal centre "
                             "(normalize: none, center: nominal): the parts of a stack must stay comparable")

    @property
    def channels(self) -> int:
        return self.bins * self.bins

    def params(self) -> dict[str, Any]:
        return {**super().params(), "bins": self.bins, "half_cell": self.half_cell}

    @classmethod
    def _from_state(cls, header: dict[str, Any], state: dict[str, Any]) -> "CellStackModel":
        params = header.get("metadata", {}).get("params", {})
        if params and "half_cell" not in params:  # saved before half_cell existed: it read one site only
            header = {**header, "metadata": {**header["metadata"], "params": {**params, "half_cell": False}}}
        return super()._from_state(header, state)

    def _new_network(self) -> PolarNet:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return build_network("cnn", None, "cls", size=self.preprocessor.size, dropout=self.dropout,
                                 channels=self.channels)

    def _inputs(self, stacks: np.ndarray, sampling_mrad: float) -> torch.Tensor:
        """Stacks (N, bins², Qx, Qy) → (N, bins², size, size) float32: each pattern on the model's grid,
        each stack over its mean pattern total, square-rooted."""
        stacks = np.asarray(stacks)
        if stacks.ndim != 4 or stacks.shape[1] != self.channels:
            raise ValueError(f"a {self.kind} model classifies cell stacks (N, {self.channels}, Qx, Qy) "
                             f"(pacbed.cell_stack with bins={self.bins}), got shape {stacks.shape}; "
                             "run polar4d predict on the whole scan")
        n = len(stacks)
        x = self.preprocessor.transform(stacks.reshape(n * self.channels, *stacks.shape[2:]), sampling_mrad)
        x = np.asarray(x, dtype=np.float64).reshape(n, self.channels, *x.shape[1:])
        if not np.all(np.isfinite(x)):
            raise ValueError("cell stacks contain NaN or inf; check the input patterns")
        total = x.sum(axis=(1, 2, 3), keepdims=True) / self.channels
        x = np.sqrt(np.clip(x / np.maximum(total, 1e-12), 0.0, None))
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    def _input_statistics(self, x_train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per channel and pixel mean and spread of the training stacks, averaged over their 8 images
        under the group of :func:`stack_operations` (so that standardising commutes with :class:`StackD4`),
        the spread floored at 1 % of its median."""
        x = x_train.double()
        moments = torch.stack([x.mean(dim=0), x.pow(2).mean(dim=0)], dim=0)  # (2, C, n, n)
        operations = stack_operations(self.bins, self.half_cell)
        symmetric = sum(move_stacks(moments, m, k, p) for m, k, p in operations) / len(operations)
        mean = symmetric[0]
        std = (symmetric[1] - mean.pow(2)).clamp_min(0).sqrt()
        std = std.clamp_min(1e-2 * float(std.median()) + 1e-12)
        return mean.float(), std.float()

    def _augmenter(self) -> StackD4:
        return StackD4(self.bins, self.half_cell)

    def _symmetric_images(self, x: torch.Tensor) -> Iterator[tuple[torch.Tensor, Callable[[np.ndarray], np.ndarray]]]:
        """The images of stacks x (N, bins², n, n) under :func:`stack_operations`, each one gather of x's
        values (:func:`image_indices`), with its class map."""
        flat = x.reshape(len(x), -1)
        for (mirror, k, _), index in zip(stack_operations(self.bins, self.half_cell),
                                         image_indices(self.bins, self.half_cell, x.shape[-1])):
            # index_select: the same values as flat[:, index], about 3.5 times faster on the CPU
            yield torch.index_select(flat, 1, index).reshape(x.shape), (lambda c, m=mirror, t=k: move_classes(c, m, t))


@functools.lru_cache(maxsize=8)
def image_indices(bins: int, half_cell: bool, size: int) -> tuple[torch.Tensor, ...]:
    """For each element of :func:`stack_operations`, where in a flattened stack (bins², size, size) each
    value of its image comes from: :func:`move_stacks` of the indices themselves."""
    index = torch.arange(bins * bins * size * size).reshape(1, bins * bins, size, size)
    return tuple(move_stacks(index, mirror, k, perm).reshape(-1) for mirror, k, perm in stack_operations(bins, half_cell))
