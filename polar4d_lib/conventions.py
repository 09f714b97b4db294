"""The frame, the 8 projected polarization classes and their D4 symmetry — the one source.

See ``shared/CONVENTIONS.md``. Class ``k`` is the in-plane projected polarization direction at
``k * 45°`` from +x towards +y; the beam runs along z, specimen x ∥ [100]pc, y ∥ [010]pc.
4D-STEM arrays are ``(Rx, Ry, Qx, Qy)``; a diffraction pattern is ``(Qx, Qy)`` with zero angle at
index ``n // 2`` along each axis.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

#: The pseudocubic lattice constant of KNN (Å): the one place it is written.
A_A = 3.95

N_CLASSES = 8
CLASS_NAMES: tuple[str, ...] = ("RM", "RU", "MU", "LU", "LM", "LD", "MD", "RD")
CLASS_ANGLES_DEG: np.ndarray = np.arange(N_CLASSES) * 45.0

# The 12 pseudocubic <110> polarization variants of orthorhombic (Amm2) KNN, as integer vectors.
# Order: the 4 in-plane diagonals first, then the 8 inclined ones.
VARIANTS: np.ndarray = np.array(
    [
        [1, 1, 0], [-1, 1, 0], [-1, -1, 0], [1, -1, 0],
        [1, 0, 1], [1, 0, -1], [-1, 0, 1], [-1, 0, -1],
        [0, 1, 1], [0, 1, -1], [0, -1, 1], [0, -1, -1],
    ],
    dtype=np.int8,
)


def class_from_angle(angle_deg: np.ndarray | float) -> np.ndarray:
    """Class index of the ±22.5° sector containing each in-plane angle (degrees from +x to +y)."""
    return (np.round(np.asarray(angle_deg, dtype=float) / 45.0).astype(int) % N_CLASSES).astype(np.int8)


def class_from_vector(p: np.ndarray) -> np.ndarray:
    """Projected class of polarization vector(s) ``p`` (..., 3) or (..., 2); raises for P ∥ z."""
    p = np.asarray(p, dtype=float)
    if np.any(np.hypot(p[..., 0], p[..., 1]) < 1e-9):
        raise ValueError("polarization has no in-plane component; it has no projected class")
    return class_from_angle(np.degrees(np.arctan2(p[..., 1], p[..., 0])))


VARIANT_CLASSES: np.ndarray = class_from_vector(VARIANTS)


def class_name(k: int) -> str:
    """Name (RM, RU, …) of class ``k``."""
    return CLASS_NAMES[int(k) % N_CLASSES]


def first_variants(classes: Sequence[int] | None = None) -> list[int]:
    """The first of the 12 variants projecting onto each of ``classes`` (default: all 8), in that order."""
    classes = range(N_CLASSES) if classes is None else classes
    return [int(np.flatnonzero(VARIANT_CLASSES == int(k))[0]) for k in classes]


def class_index(name_or_index: str | int) -> int:
    """Class index from a name ('RM', …) or an index; raises a one-line error for anything else."""
    if isinstance(name_or_index, (int, np.integer)) and 0 <= int(name_or_index) < N_CLASSES:
        return int(name_or_index)
    if isinstance(name_or_index, str) and name_or_index.upper() in CLASS_NAMES:
        return CLASS_NAMES.index(name_or_index.upper())
    raise ValueError(f"unknown class {name_or_index!r}; use 0–7 or one of {', '.join(CLASS_NAMES)}")


def circular_distance(i: np.ndarray | int, j: np.ndarray | int) -> np.ndarray:
    """Circular class distance d(i, j) = min(|i − j|, 8 − |i − j|)."""
    d = np.abs(np.asarray(i) - np.asarray(j)) % N_CLASSES
    return np.minimum(d, N_CLASSES - d)


# --- D4 maps on labels -------------------------------------------------------------------------

def rotate90_class(k: np.ndarray | int, times: int = 1) -> np.ndarray:
    """Class after rotating the pattern by ``times`` × (+90°) (x → y)."""
    return (np.asarray(k) + 2 * times) % N_CLASSES


def mirror_x_class(k: np.ndarray | int) -> np.ndarray:
    """Class after mirroring x → −x."""
    return (4 - np.asarray(k)) % N_CLASSES


def mirror_y_class(k: np.ndarray | int) -> np.ndarray:
    """Class after mirroring y → −y."""
    return (8 - np.asarray(k)) % N_CLASSES


# --- D4 maps on centred patterns (..., Qx, Qy) -------------------------------------------------
# Mirrors are taken about the zero-angle pixel n//2, so the centre stays where it is: index i maps
# to (2 * (n // 2) - i) mod n. For even n the first row (the Nyquist row) maps onto itself.

def _mirror_axis(patterns: np.ndarray, axis: int) -> np.ndarray:
    n = patterns.shape[axis]
    index = (2 * (n // 2) - np.arange(n)) % n
    return np.take(patterns, index, axis=axis)


def mirror_x_pattern(patterns: np.ndarray) -> np.ndarray:
    """Mirror centred pattern(s) (..., Qx, Qy) under kx → −kx."""
    return _mirror_axis(np.asarray(patterns), -2)


def mirror_y_pattern(patterns: np.ndarray) -> np.ndarray:
    """Mirror centred pattern(s) (..., Qx, Qy) under ky → −ky."""
    return _mirror_axis(np.asarray(patterns), -1)


def friedel_difference(patterns: np.ndarray) -> np.ndarray:
    """I(θ) − I(−θ) of centred pattern(s) (..., Qx, Qy): each minus its 180° rotation about the zero angle
    (both mirrors). Zero where Friedel's law holds; a polar crystal's dynamical scattering breaks it."""
    p = np.asarray(patterns)
    return p - mirror_x_pattern(mirror_y_pattern(p))


def rotate90_pattern(patterns: np.ndarray, times: int = 1) -> np.ndarray:
    """Rotate centred square pattern(s) (..., Qx, Qy) by ``times`` × (+90°), x → y.

    The new pattern at (kx, ky) is the old one at (ky, −kx): a transpose of the last two axes
    followed by a mirror kx → −kx, which keeps the centre pixel n//2 fixed.
    """
    p = np.asarray(patterns)
    if p.shape[-1] != p.shape[-2]:
        raise ValueError(f"rotation needs square patterns, got {p.shape[-2:]}; crop them first")
    for _ in range(times % 4):
        p = mirror_x_pattern(np.swapaxes(p, -1, -2))
    return p


def d4_operations() -> list[tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]]:
    """The 8 symmetry operations of the square as (pattern map, class map) pairs, on centred square
    patterns (..., n, n) and on classes alike: mirror kx → −kx or not, then rotate by k · 90°
    (identity first)."""
    def op(mirror: bool, k: int):
        return (lambda p: rotate90_pattern(mirror_x_pattern(p) if mirror else p, k),
                lambda c: rotate90_class(mirror_x_class(c) if mirror else c, k))
    return [op(mirror, k) for mirror in (False, True) for k in range(4)]
