"""A physics baseline with no learned features: centre-of-mass shift and Friedel asymmetry.

For each pattern, preprocessed by default with the per-pattern bright-field disk centre
(``center='pattern'``: the centroid of the disk's pixels, which does not follow intensity moving inside
the disk, so a detector centre offset drops out) and unit total intensity (``normalize='total'``: the
features do not depend on dose or gain), two vectors are measured about that centre (pixel ``size // 2``):

(a) ``com``: the centre-of-mass shift (mrad), ``detector.center_of_mass_mrad``;
(b) ``friedel``: the Friedel asymmetry A = Σ_k (I(k) − I(−k)) k̂ over the annulus
    ``inner_mrad ≤ |k| ≤ outer_mrad`` (unit k̂; the dipole moment of the antisymmetric part of the
    pattern; a fraction of the total intensity with ``normalize='total'``).

The calibration (``fit`` on simulated patterns with labels) divides each feature by its median length
over the training set and fits the weights of v = w_com·ĉ + w_friedel·â (ĉ, â the scaled features) by
least squares of v onto the unit vectors of the true class angles: real weights for
``calibration='sign'`` (a sign and a scale per feature; the map commutes with every D4 operation, so the
baseline is symmetry-equivariant by construction), complex ones for ``'rotation'`` (each feature also
rotated, a 2 × 2 similarity map; equivariant only if the fitted angle is 0° or 180°).
``predict`` is ``class_from_angle(angle(v))``. ``predict_proba`` is von-Mises-like,
p_k ∝ exp(κ cos(θ_k − θ)), with κ = κ₀·|v| / median_train |v| (more confident for a stronger signal);
κ₀ is chosen on the training set as the value of a log-spaced grid (0.01–100) that minimises the negative
log-likelihood of the true classes (near 0, i.e. uniform, when the features carry no information).

What to expect: a single pattern's centre of mass and Friedel asymmetry are dominated by the field of
the atomic column next to the probe, which averages to zero over the unit cell; the polar signal is a
small position-averaged remainder (dynamical scattering). Measured on simulated smoke-profile patterns
(0.8–20 nm, random probe positions) the per-pattern accuracy is at chance (0.10–0.17) with every centre,
annulus and calibration tried, and the fitted κ₀ is small, so the probabilities say so.

Saved as ``.npz``: the weights, the feature scales, κ₀ and the median |v|, with the parameters and the
preprocessing in the header.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from polar4d_lib import conventions, detector
from polar4d_lib.models.base import PolarizationModel, angle_deg, register
from polar4d_lib.preprocessing import Preprocessor

FEATURES = ("com", "friedel")
CALIBRATIONS = ("sign", "rotation")
KAPPA_GRID = np.logspace(-2, 2, 81)


def default_preprocessor() -> Preprocessor:
    """The physics baseline's preprocessing: 1.5 mrad/px, 64 px, per-pattern disk centre, unit total."""
    return Preprocessor(sampling_mrad=1.5, size=64, center="pattern", normalize="total")


def com_vectors(x: np.ndarray, sampling_mrad: float) -> np.ndarray:
    """Centre of mass (θx, θy) (N, 2) in mrad of preprocessed patterns (N, n, n) about pixel n // 2;
    a pattern without positive intensity gets (0, 0)."""
    total = x.sum(axis=(-2, -1))
    safe = np.where(total[:, None, None] > 0, x, 1.0)
    c = detector.center_of_mass_mrad(safe, sampling_mrad)
    return np.where(total[:, None] > 0, c, 0.0)


def friedel_vectors(x: np.ndarray, sampling_mrad: float, inner_mrad: float = 0.0,
                    outer_mrad: float | None = None) -> np.ndarray:
    """Friedel asymmetry (N, 2): Σ_k (I(k) − I(−k)) k̂ over ``inner_mrad ≤ |k| ≤ outer_mrad`` (None: the
    whole pattern) about pixel n // 2 of preprocessed patterns (N, n, n). I(−k) is the pattern point
    reflected about n // 2 (``conventions`` mirrors); the first row and column, whose mirror image lies off
    the grid for even n, are left out."""
    n = x.shape[-1]
    k = (np.arange(n) - n // 2) * float(sampling_mrad)
    kx, ky = np.meshgrid(k, k, indexing="ij")
    r = np.hypot(kx, ky)
    mask = (r >= inner_mrad) & (r <= (np.inf if outer_mrad is None else outer_mrad)) & (r > 0)
    mask[0, :] = mask[:, 0] = False
    ux, uy = np.where(mask, kx / np.where(r > 0, r, 1), 0), np.where(mask, ky / np.where(r > 0, r, 1), 0)
    diff = conventions.friedel_difference(x)
    return np.stack([np.einsum("nij,ij->n", diff, ux), np.einsum("nij,ij->n", diff, uy)], axis=-1)


def _complex(v: np.ndarray) -> np.ndarray:
    return v[..., 0] + 1j * v[..., 1]


def _von_mises(theta: np.ndarray, kappa: np.ndarray) -> np.ndarray:
    """p_k ∝ exp(κ cos(θ_k − θ)) (N, 8) for angles θ (rad) and concentrations κ (N,)."""
    angles = np.radians(conventions.CLASS_ANGLES_DEG)
    logits = kappa[:, None] * np.cos(angles[None, :] - theta[:, None])
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


@register
class PhysicsBaseline(PolarizationModel):
    """Centre-of-mass + Friedel-asymmetry direction → nearest class, sign and scale calibrated on
    simulated data (see the module docstring). ``features`` picks the vectors used; ``inner_mrad`` and
    ``outer_mrad`` bound the Friedel annulus (None: to the edge of the crop)."""

    kinds = ("physics",)
    suffix = ".npz"

    def __init__(self, preprocessor: Preprocessor | None = None, *, features: tuple[str, ...] | list[str] = FEATURES,
                 inner_mrad: float = 0.0, outer_mrad: float | None = None, calibration: str = "sign",
                 kind: str = "physics", metadata: dict[str, Any] | None = None) -> None:
        super().__init__(kind, preprocessor if preprocessor is not None else default_preprocessor(), metadata)
        features = tuple(features)
        if not features or any(f not in FEATURES for f in features) or len(set(features)) != len(features):
            raise ValueError(f"features must be a non-empty subset of {FEATURES}, got {features!r}")
        if calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {calibration!r}")
        if not (0 <= inner_mrad and (outer_mrad is None or outer_mrad > inner_mrad)):
            raise ValueError(f"need 0 ≤ inner_mrad < outer_mrad, got {inner_mrad!r} and {outer_mrad!r}")
        self.features, self.calibration = features, calibration
        self.inner_mrad, self.outer_mrad = float(inner_mrad), None if outer_mrad is None else float(outer_mrad)
        self.weights: np.ndarray | None = None  # complex (n_features,)
        self.scales: np.ndarray | None = None  # median feature lengths (n_features,)
        self.kappa0 = 1.0
        self.median_length = 1.0

    def params(self) -> dict[str, Any]:
        """The constructor parameters (saved with the model)."""
        return {"features": list(self.features), "inner_mrad": self.inner_mrad, "outer_mrad": self.outer_mrad,
                "calibration": self.calibration}

    # --- features ----------------------------------------------------------------------------------
    def raw_features(self, patterns: np.ndarray, sampling_mrad: float) -> dict[str, np.ndarray]:
        """The measured vectors (N, 2) of raw patterns: ``com`` (mrad) and ``friedel`` (intensity units
        of the normalisation) about the preprocessed centre."""
        x = self.preprocessor.transform(patterns, sampling_mrad).astype(np.float64)
        s = self.preprocessor.sampling_mrad
        out = {}
        if "com" in self.features:
            out["com"] = com_vectors(x, s)
        if "friedel" in self.features:
            out["friedel"] = friedel_vectors(x, s, self.inner_mrad, self.outer_mrad)
        return out

    def _design(self, patterns: np.ndarray, sampling_mrad: float) -> np.ndarray:
        """Scaled features as complex numbers (N, n_features)."""
        raw = self.raw_features(patterns, sampling_mrad)
        z = np.stack([_complex(raw[f]) for f in self.features], axis=1)
        if self.scales is not None:
            z = z / self.scales[None, :]
        return z

    def vectors(self, patterns: np.ndarray, sampling_mrad: float) -> np.ndarray:
        """The calibrated vector v (N, 2) = Σ w_f·f̂ of each pattern; its angle is the predicted angle."""
        if self.weights is None:
            raise ValueError("the physics baseline is not calibrated; call fit(patterns, labels, sampling_mrad) "
                             "or load one")
        v = self._design(patterns, sampling_mrad) @ self.weights
        return np.stack([v.real, v.imag], axis=-1)

    # --- estimator interface -------------------------------------------------------------------------
    def fit(self, patterns: np.ndarray, labels: np.ndarray, sampling_mrad: float, **kwargs: Any) -> "PhysicsBaseline":
        """Calibrate on labelled (simulated) patterns: feature scales, weights (least squares onto the class
        unit vectors) and κ₀ (training negative log-likelihood). Keyword arguments go to the metadata."""
        self.scales = None
        z = self._design(patterns, sampling_mrad)
        y = np.asarray(labels)
        if y.shape != (len(z),) or not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() > 7:
            raise ValueError(f"labels must be {len(z)} integer classes 0–7 (one per pattern), got {y.dtype} {y.shape}")
        scales = np.median(np.abs(z), axis=0)
        if np.any(scales <= 0):
            raise ValueError("a feature is zero for most training patterns; check the patterns or the annulus")
        self.scales = scales
        z = z / scales[None, :]
        target = np.exp(1j * np.radians(conventions.CLASS_ANGLES_DEG[y]))
        if self.calibration == "sign":  # real weights: stack real and imaginary parts
            a = np.concatenate([z.real, z.imag])
            b = np.concatenate([target.real, target.imag])
            self.weights = np.linalg.lstsq(a, b, rcond=None)[0].astype(np.complex128)
        else:
            self.weights = np.linalg.lstsq(z, target, rcond=None)[0]
        v = z @ self.weights
        self.median_length = float(np.median(np.abs(v))) or 1.0
        theta, rel = np.angle(v), np.abs(v) / self.median_length
        nll = [-np.mean(np.log(_von_mises(theta, k0 * rel)[np.arange(len(y)), y] + 1e-12)) for k0 in KAPPA_GRID]
        self.kappa0 = float(KAPPA_GRID[int(np.argmin(nll))])
        pred = conventions.class_from_angle(np.degrees(theta))
        self.metadata.update({
            "n_train": int(len(y)), "train_sampling_mrad": float(sampling_mrad),
            "train_accuracy": float(np.mean(pred == y)), "kappa0": self.kappa0,
            "weights": {f: [float(w.real), float(w.imag)] for f, w in zip(self.features, self.weights)},
            **{k: v for k, v in kwargs.items() if isinstance(v, (str, int, float, bool, list, dict, type(None)))},
        })
        return self

    def predict_angle_deg(self, patterns: np.ndarray, sampling_mrad: float) -> np.ndarray:
        """Angle of v (degrees from +x towards +y, 0–360)."""
        v = self.vectors(patterns, sampling_mrad)
        return angle_deg(v)

    def predict(self, patterns: np.ndarray, sampling_mrad: float) -> np.ndarray:
        """``class_from_angle`` of the angle of v (int8)."""
        return conventions.class_from_angle(self.predict_angle_deg(patterns, sampling_mrad))

    def predict_proba(self, patterns: np.ndarray, sampling_mrad: float) -> np.ndarray:
        """Von-Mises-like probabilities (N, 8) float32 around the angle of v, κ = κ₀·|v|/median_train|v|."""
        return self._proba(self.vectors(patterns, sampling_mrad))

    def _proba(self, v: np.ndarray) -> np.ndarray:
        kappa = self.kappa0 * np.hypot(v[:, 0], v[:, 1]) / self.median_length
        return _von_mises(np.arctan2(v[:, 1], v[:, 0]), kappa).astype(np.float32)

    def predict_maps(self, patterns: np.ndarray, sampling_mrad: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Probabilities, classes and angles from one pass of the features (the class is the angle's sector)."""
        v = self.vectors(patterns, sampling_mrad)
        angle = angle_deg(v)
        return self._proba(v), conventions.class_from_angle(angle), angle

    # --- persistence ---------------------------------------------------------------------------------
    def header(self) -> dict[str, Any]:
        return {**super().header(), "params": self.params()}

    def _state(self) -> dict[str, np.ndarray]:
        if self.weights is None:
            raise ValueError("the physics baseline is not calibrated; call fit before save")
        return {"weights": np.stack([self.weights.real, self.weights.imag], axis=-1), "scales": self.scales,
                "kappa0": np.array(self.kappa0), "median_length": np.array(self.median_length)}

    @classmethod
    def _from_state(cls, header: dict[str, Any], state: dict[str, Any]) -> "PhysicsBaseline":
        model = cls(Preprocessor.from_dict(header["preprocessor"]), **header["params"], kind=header["kind"],
                    metadata=header.get("metadata"))
        w = np.asarray(state["weights"], dtype=np.float64)
        model.weights = w[:, 0] + 1j * w[:, 1]
        model.scales = np.asarray(state["scales"], dtype=np.float64)
        model.kappa0, model.median_length = float(state["kappa0"]), float(state["median_length"])
        return model
