"""Post-simulation transforms: from ideal patterns to what a pixelated detector records.

Inputs are ideal patterns ``(..., Qx, Qy)`` whose intensities are fractions of the incident beam (a
pattern sums to ≈ 1), zero angle at index ``n // 2``. Every function is pure, vectorised over the
leading axes, returns float32, takes its randomness from ``np.random.default_rng(seed)``, and
rejects NaN/inf or a wrong ndim with a one-line ValueError. Units: mrad, px, electrons (counts).

``Acquisition`` chains them in physical order (see ``Acquisition.apply``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from polar4d_lib import detector
from polar4d_lib.detector import check_pair, validate_patterns

Seed = int | np.random.SeedSequence | None


def _nonnegative(value: float, name: str, unit: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number ({unit}), got {value!r}") from None
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number ≥ 0 ({unit}), got {value!r}")
    return v


def apply_dose(patterns: np.ndarray, dose_e_per_pattern: float, seed: Seed = 0) -> np.ndarray:
    """Poisson electron counting: ``counts = Poisson(pattern · dose)`` per pixel.

    The pattern is taken as already being a fraction of the incident beam, so it is scaled by the
    dose only (not by its own sum): a pattern summing to 0.97 records on average 0.97 · dose
    electrons, the rest having been scattered outside the detector. Patterns must be ≥ 0.
    Returns integer-valued float32 counts.
    """
    p = validate_patterns(patterns)
    dose = _nonnegative(dose_e_per_pattern, "dose_e_per_pattern", "electrons per pattern")
    if dose == 0:
        raise ValueError("dose_e_per_pattern must be > 0 electrons per pattern; use None in Acquisition for no noise")
    if np.any(p < 0):
        raise ValueError("patterns have negative intensities, which cannot be Poisson means; clip them at 0 first")
    rng = np.random.default_rng(seed)
    return rng.poisson(p.astype(np.float64) * dose).astype(np.float32)


def apply_psf(patterns: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian detector point-spread function of standard deviation ``sigma_px`` (px) on Qx and Qy.

    Uses ``scipy.ndimage.gaussian_filter`` with ``mode='reflect'``: signal that would spread past an
    edge is folded back in, so the total of every pattern is conserved to float precision whatever
    the pattern (and away from the edges the result is the plain Gaussian blur). ``sigma_px = 0``
    returns the input unchanged (as float32).
    """
    p = validate_patterns(patterns)
    sigma = _nonnegative(sigma_px, "sigma_px", "px")
    if sigma == 0:
        return p.astype(np.float32)
    out = ndimage.gaussian_filter(p.astype(np.float64), sigma=sigma, mode="reflect", axes=(-2, -1))
    return out.astype(np.float32)


def add_background(patterns: np.ndarray, background_counts: float, dark_noise_sigma: float,
                   seed: Seed = 0) -> np.ndarray:
    """Add a constant background ``background_counts`` (counts/px) and Gaussian dark noise of
    standard deviation ``dark_noise_sigma`` (counts), independent per pixel. The result may be
    negative where the noise is, as in a dark-subtracted frame."""
    p = validate_patterns(patterns)
    background = _nonnegative(background_counts, "background_counts", "counts per pixel")
    noise = _nonnegative(dark_noise_sigma, "dark_noise_sigma", "counts")
    out = p.astype(np.float64) + background
    if noise > 0:
        out += np.random.default_rng(seed).normal(0.0, noise, size=p.shape)
    return out.astype(np.float32)


def shift_center(patterns: np.ndarray, shift_px: tuple[float, float]) -> np.ndarray:
    """Move the zero angle from ``n // 2`` to ``n // 2 + shift_px`` (px along Qx, Qy; sub-pixel allowed).

    Done by ``detector.resample`` at the same sampling and shape with a shifted output centre, so
    counts are conserved (except what moves off the detector) and the centre of mass moves by
    exactly ``shift_px``.
    """
    p = validate_patterns(patterns)
    dx, dy = check_pair(shift_px, "shift_px")
    nx, ny = p.shape[-2:]
    out = detector.resample(p.astype(np.float64), 1.0, 1.0, (nx, ny),
                            center_out_px=(nx // 2 + dx, ny // 2 + dy))
    return out.astype(np.float32)


def resample_detector(patterns: np.ndarray, sampling_in_mrad: float, sampling_out_mrad: float,
                      shape_out: tuple[int, int],
                      center_offset_px: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Rebin patterns to a detector of ``sampling_out_mrad`` (mrad/px) and ``shape_out`` (px),
    count-conserving; the zero angle lands at ``shape_out // 2 + center_offset_px`` (px).
    Thin wrapper over ``detector.resample``; float32 out."""
    p = validate_patterns(patterns)
    shape = detector.check_shape(shape_out, "shape_out")
    dx, dy = check_pair(center_offset_px, "center_offset_px")
    out = detector.resample(p.astype(np.float64), sampling_in_mrad, sampling_out_mrad, shape,
                            center_out_px=(shape[0] // 2 + dx, shape[1] // 2 + dy))
    return out.astype(np.float32)


def rotate_scan(patterns: np.ndarray, rotation_deg: float) -> np.ndarray:
    """Rotate each pattern by ``rotation_deg`` (degrees, positive turns +x towards +y) about its
    zero-angle pixel ``(nQx // 2, nQy // 2)``: scan rotation between scan and detector frames.

    Bilinear (``scipy.ndimage.affine_transform``, order=1, ``mode='grid-constant'``: zero
    beyond the detector, interpolated towards it at the edge pixels), then each pattern is
    rescaled to its original total (so signal rotated off the detector is redistributed over the
    rest). A +90° turn equals ``conventions.rotate90_pattern`` whenever nothing leaves the detector,
    i.e. always for odd sizes and, for even sizes, when the Nyquist row/column (index 0) that turns
    past the edge is empty: that function wraps it round, this one lets it fall off and rescales.
    """
    p = validate_patterns(patterns)
    try:
        angle = float(rotation_deg)
    except (TypeError, ValueError):
        raise ValueError(f"rotation_deg must be a number of degrees, got {rotation_deg!r}") from None
    if not math.isfinite(angle):
        raise ValueError(f"rotation_deg must be finite, got {rotation_deg!r}")
    p64 = p.astype(np.float64)
    if angle % 360.0 == 0.0:
        return p64.astype(np.float32)
    nx, ny = p.shape[-2:]
    stack = p64.reshape(-1, nx, ny)
    t = math.radians(angle)
    c, s = math.cos(t), math.sin(t)
    # output pixel k (relative to the centre) takes the input at R(−θ)·k
    rot = np.array([[c, s], [-s, c]])
    centre = np.array([nx // 2, ny // 2], dtype=float)
    matrix = np.eye(3)
    matrix[1:, 1:] = rot
    offset = np.concatenate([[0.0], centre - rot @ centre])
    out = ndimage.affine_transform(stack, matrix, offset=offset, order=1, mode="grid-constant", cval=0.0)
    before = stack.sum(axis=(-2, -1))
    after = out.sum(axis=(-2, -1))
    scale = np.divide(before, after, out=np.ones_like(before), where=after != 0)
    out *= scale[:, None, None]
    return out.reshape(p.shape).astype(np.float32)


@dataclass
class Acquisition:
    """All parameters of the detector model; ``apply`` runs them in physical order.

    dose_e_per_pattern: electrons per pattern, None = no shot noise (ideal intensities kept).
    psf_sigma_px: detector PSF (px of the output detector). background_counts, dark_noise_sigma:
    counts per pixel. center_offset_px: zero angle at ``shape_out // 2 + offset`` (px).
    sampling_out_mrad, shape_out: the detector's calibration (mrad/px) and size (px), None = keep
    the input's. scan_rotation_deg: degrees, +x towards +y. seed: one seed for all random steps.
    """

    dose_e_per_pattern: float | None = None
    psf_sigma_px: float = 0.0
    background_counts: float = 0.0
    dark_noise_sigma: float = 0.0
    center_offset_px: tuple[float, float] = (0.0, 0.0)
    sampling_out_mrad: float | None = None
    shape_out: tuple[int, int] | None = None
    scan_rotation_deg: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dose_e_per_pattern is not None and not _nonnegative(
                self.dose_e_per_pattern, "dose_e_per_pattern", "electrons per pattern") > 0:
            raise ValueError("dose_e_per_pattern must be > 0 electrons per pattern, or None for no shot noise")
        _nonnegative(self.psf_sigma_px, "psf_sigma_px", "px")
        _nonnegative(self.background_counts, "background_counts", "counts per pixel")
        _nonnegative(self.dark_noise_sigma, "dark_noise_sigma", "counts")
        self.center_offset_px = check_pair(self.center_offset_px, "center_offset_px")
        if self.sampling_out_mrad is not None:
            detector.check_sampling(self.sampling_out_mrad, "sampling_out_mrad")
        if self.shape_out is not None:
            self.shape_out = detector.check_shape(self.shape_out, "shape_out")

    def apply(self, patterns: np.ndarray, sampling_mrad: float) -> tuple[np.ndarray, float]:
        """Turn ideal patterns (..., Qx, Qy) at ``sampling_mrad`` (mrad/px) into recorded ones.

        Order, following the electrons: (1) scan rotation — a fixed rotation of the diffraction
        frame relative to the scan, acting on the ideal intensity; (2) projection onto the detector
        — rebinning to its sampling and shape with its off-centre zero angle (the optics' own
        blur is already in the simulation); (3) dose — electrons arrive and are counted (Poisson),
        so the noise is that of the pixels they land in; (4) PSF — the detector spreads each
        counted electron's signal, which correlates the shot noise between neighbours as in real
        detectors; (5) background and dark noise — added at readout, independent of the beam.
        Returns ``(patterns float32, sampling_out_mrad)``.
        """
        p = validate_patterns(patterns)
        s_in = detector.check_sampling(sampling_mrad, "sampling_mrad")
        s_out = s_in if self.sampling_out_mrad is None else float(self.sampling_out_mrad)
        shape_out = tuple(p.shape[-2:]) if self.shape_out is None else tuple(self.shape_out)
        seed_dose, seed_noise = np.random.SeedSequence(self.seed).spawn(2)

        out = p.astype(np.float32)
        if self.scan_rotation_deg % 360.0 != 0.0:
            out = rotate_scan(out, self.scan_rotation_deg)
        if s_out != s_in or shape_out != tuple(out.shape[-2:]) or self.center_offset_px != (0.0, 0.0):
            out = resample_detector(out, s_in, s_out, shape_out, self.center_offset_px)
        if self.dose_e_per_pattern is not None:
            out = apply_dose(np.clip(out, 0.0, None), self.dose_e_per_pattern, seed_dose)
        if self.psf_sigma_px > 0:
            out = apply_psf(out, self.psf_sigma_px)
        if self.background_counts > 0 or self.dark_noise_sigma > 0:
            out = add_background(out, self.background_counts, self.dark_noise_sigma, seed_noise)
        return out.astype(np.float32), s_out
