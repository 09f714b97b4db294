"""4D-STEM simulation of KNN specimens with abTEM: probe, potential, thickness series, frozen phonons,
multislice and PRISM (S-matrix) scans, recorded on a pixelated detector.

Two engines give the same patterns (within ~1e-5 of the pattern maximum):
- :func:`multislice_patterns` runs a multislice per probe position (any specimen, any probe);
- :class:`PrismSpecimen` builds the specimen's scattering matrix once (per phonon configuration) and
  then yields patterns for any probe positions and aberrations (defocus, astigmatism, Cs) at about a
  millisecond each — the cheap way to randomise probe-side nuisances.
Mistilt is a property of the specimen here (:func:`structure.tilt_specimen` shears the crystal so that
its zone axis leans by (θx, θy) from the beam): the S-matrix cannot take a beam tilt in abTEM 1.0.11, so
each tilt is its own specimen. Checked against abTEM's multislice with a beam tilt of −θ (the same relative
geometry): 0.5 mrad on 8 nm KNN changes the cell-averaged pattern by 4.4 % (L1) and the two ways agree
to 1.6 % (the shear moves atoms continuously, the tilted propagator slice by slice).

Angles in mrad, lengths in Å, energies in keV, thicknesses in nm.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable

import ase
import numpy as np

from polar4d_lib import detector as detector_module
from polar4d_lib.structure import THERMAL_SIGMAS_A, tilt_specimen

if TYPE_CHECKING:
    import abtem

# FFTW_MEASURE (abTEM's default) times candidate FFT plans at run time and may pick a different one each
# run, which changes the last bits of every pattern; FFTW_ESTIMATE plans deterministically, at the same
# speed here, so the same seed gives the same patterns bit for bit.
FFT_PLANNING = "FFTW_ESTIMATE"


@functools.cache
def _abtem():
    """abTEM, configured (no bars, deterministic FFT plans): imported on first use (about 3 s), so that
    modules which only read these settings (the command line, a chapter reading results) start quickly."""
    import abtem

    abtem.config.set({"diagnostics.progress_bar": False, "fftw.planning_effort": FFT_PLANNING})
    return abtem


def wavelength_A(energy_kev: float) -> float:
    """Relativistic electron wavelength (Å) at ``energy_kev``."""
    return float(_abtem().core.energy.energy2wavelength(energy_kev * 1e3))


@dataclass(frozen=True)
class ProbeSettings:
    """A focused probe. Defocus follows the microscopist's sign (positive = overfocus, C10 = −Δf);
    twofold astigmatism is |C12| with its azimuth; Cs is C30."""

    energy_kev: float = 200.0
    semiangle_mrad: float = 24.0
    defocus_nm: float = 0.0
    astigmatism_nm: float = 0.0
    astigmatism_angle_deg: float = 0.0
    cs_um: float = 0.0

    def __post_init__(self) -> None:
        if not self.energy_kev > 0 or not self.semiangle_mrad > 0:
            raise ValueError(
                f"probe needs a positive energy and semi-angle, got {self.energy_kev} keV, {self.semiangle_mrad} mrad"
            )

    def aberrations(self) -> dict[str, float]:
        """abTEM aberration coefficients (Å, rad)."""
        return {
            "C10": -10.0 * self.defocus_nm,
            "C12": 10.0 * self.astigmatism_nm,
            "phi12": math.radians(self.astigmatism_angle_deg),
            "C30": 1e4 * self.cs_um,
        }

    def ctf(self) -> abtem.CTF:
        return _abtem().CTF(
            semiangle_cutoff=self.semiangle_mrad, energy=self.energy_kev * 1e3,
            aberration_coefficients=self.aberrations(),
        )

    def probe(self) -> abtem.Probe:
        return _abtem().Probe(
            energy=self.energy_kev * 1e3, semiangle_cutoff=self.semiangle_mrad, aberrations=self.aberrations()
        )


@dataclass(frozen=True)
class SimulationSettings:
    """Numerical settings of the potential and the detector.

    ``max_angle_mrad`` sets the potential sampling: the antialiased pattern reaches at least this angle
    (default 2× the convergence semi-angle of 24 mrad plus a margin). Patterns are recorded on an ideal
    pixelated detector of ``detector_shape`` pixels at ``q_sampling_mrad`` per pixel, zero angle at
    n//2, intensities as the fraction of the incident beam in each pixel.
    """

    max_angle_mrad: float = 50.0
    slices_per_cell: int = 2
    parametrization: str = "lobato"
    q_sampling_mrad: float = 1.5
    detector_shape: tuple[int, int] = (64, 64)
    phonon_configs: int = 0
    phonon_sigmas_A: dict[str, float] = field(default_factory=lambda: dict(THERMAL_SIGMAS_A))

    def detector(self) -> detector_module.DetectorGeometry:
        return detector_module.DetectorGeometry(tuple(self.detector_shape), self.q_sampling_mrad)

    def as_dict(self) -> dict:
        return asdict(self)


def potential_sampling_A(a_A: float, energy_kev: float, max_angle_mrad: float) -> float:
    """Real-space sampling (Å) commensurate with the cell (a/n) whose antialiased pattern reaches
    ``max_angle_mrad``: the 2/3 antialias aperture gives θ_max = λ / (3 Δx)."""
    dx_max = wavelength_A(energy_kev) / (3.0 * max_angle_mrad * 1e-3)
    return a_A / math.ceil(a_A / dx_max)


def exit_planes_for(
    thicknesses_nm: list[float], a_A: float, slices_per_cell: int, max_planes: int = 24
) -> tuple[int, list[int], list[float]]:
    """Exit planes for a thickness series from one multislice run.

    Each thickness is rounded to whole cells; exit planes are written every g cells, g the greatest
    common divisor of the cell counts, so every thickness is exact to a cell. If that needs more than
    ``max_planes`` planes (each plane is a full copy of the S-matrix), the thicknesses are instead rounded
    to multiples of the thinnest one, with a warning. Returns (slices between exit planes, index of each
    thickness among the planes — 0 is the entrance surface — and the thicknesses in nm, ascending).
    The specimen must be the thickest one.
    """
    if len(thicknesses_nm) == 0 or min(thicknesses_nm) <= 0:
        raise ValueError(f"thicknesses must be positive and at least one, got {list(thicknesses_nm)} nm")
    cells = sorted({max(1, int(round(t * 10.0 / a_A))) for t in thicknesses_nm})
    step = math.gcd(*cells)
    if cells[-1] // step > max_planes:
        step = cells[0]
        snapped = [max(1, int(round(c / step))) * step for c in cells]
        if max(abs(s - c) for s, c in zip(snapped, cells)) > 1:  # more than rounding a thickness allows
            warnings.warn(
                f"thicknesses {list(thicknesses_nm)} nm need more than {max_planes} exit planes; rounded to multiples "
                f"of {step * a_A / 10:.2f} nm: {[round(c * a_A / 10, 2) for c in sorted(set(snapped))]} nm. "
                "Give an even series to avoid this.",
                stacklevel=2,
            )
        cells = sorted(set(snapped))
    if len(cells) < len({round(t, 6) for t in thicknesses_nm}):
        warnings.warn(f"thicknesses {list(thicknesses_nm)} nm fall on fewer whole cells: {cells} cells", stacklevel=2)
    return step * slices_per_cell, [c // step for c in cells], [c * a_A / 10.0 for c in cells]


def build_potential(
    atoms: ase.Atoms, settings: SimulationSettings, energy_kev: float, a_A: float, exit_step_slices: int | None = None
) -> abtem.Potential:
    """The electrostatic potential of ``atoms``, sliced a/slices_per_cell thick, with exit planes every
    ``exit_step_slices`` slices. The grid is given in whole pixels per cell (:func:`potential_sampling_A`),
    never as a sampling: abTEM rounds extent/sampling up, and a float error of 1e-15 would add a pixel
    and break the symmetry of the sampled crystal. Slices likewise are given one by one."""
    per_cell = int(round(a_A / potential_sampling_A(a_A, energy_kev, settings.max_angle_mrad)))
    cells = np.round(np.asarray(atoms.cell.lengths()) / a_A).astype(int)
    n_slices = int(cells[2] * settings.slices_per_cell)
    return _abtem().Potential(
        atoms,
        gpts=(int(cells[0] * per_cell), int(cells[1] * per_cell)),
        # Explicit slices: dividing the depth by a float thickness can leave a sliver of a slice.
        slice_thickness=(float(atoms.cell.lengths()[2]) / n_slices,) * n_slices,
        parametrization=settings.parametrization,
        projection="infinite",
        exit_planes=exit_step_slices,
    )


def phonon_configurations(atoms: ase.Atoms, settings: SimulationSettings, seed: int) -> list[ase.Atoms]:
    """Frozen-phonon snapshots of ``atoms`` (abTEM's FrozenPhonons, σ per element per direction);
    the static structure when ``phonon_configs`` is 0."""
    if settings.phonon_configs <= 0:
        return [atoms]
    seeds = np.random.SeedSequence(seed).generate_state(settings.phonon_configs)
    return [
        _abtem().FrozenPhonons(atoms, 1, sigmas=settings.phonon_sigmas_A, seed=int(s)).randomize(atoms) for s in seeds
    ]


def _record(measurement: abtem.array.ArrayObject, geometry: detector_module.DetectorGeometry) -> np.ndarray:
    """abTEM diffraction patterns (..., kx, ky), centred at n//2, resampled onto ``geometry``."""
    sampling_in = np.asarray(measurement.angular_sampling, dtype=float)
    if not np.isclose(sampling_in[0], sampling_in[1], rtol=1e-6):
        raise ValueError(f"non-square angular sampling {sampling_in} mrad; use a square supercell")
    array = np.asarray(measurement.array, dtype=np.float32)
    return detector_module.resample(array, float(sampling_in[0]), geometry.sampling_mrad, geometry.shape)


def _detector(settings: SimulationSettings, probe: ProbeSettings) -> abtem.PixelatedDetector:
    field_mrad = settings.q_sampling_mrad * max(settings.detector_shape) / 2.0
    return _abtem().PixelatedDetector(max_angle=min(field_mrad + 2 * settings.q_sampling_mrad, settings.max_angle_mrad))


def multislice_patterns(
    atoms: ase.Atoms,
    probe: ProbeSettings,
    positions_A: np.ndarray,
    settings: SimulationSettings,
    a_A: float,
    thicknesses_nm: list[float] | None = None,
    tilt_mrad: tuple[float, float] = (0.0, 0.0),
    seed: int = 0,
) -> np.ndarray:
    """Patterns (T, N, Qx, Qy) by multislice for probe positions (N × 2, Å) at each thickness of
    the series (T = 1 for the full specimen), averaged over frozen-phonon configurations."""
    step, planes = None, [0]
    if thicknesses_nm is not None:
        step, planes, _ = exit_planes_for(thicknesses_nm, a_A, settings.slices_per_cell)
    specimen = tilt_specimen(atoms, tilt_mrad)
    scan = _abtem().CustomScan(np.asarray(positions_A, dtype=float))
    total = None
    configs = phonon_configurations(specimen, settings, seed)
    for config in configs:
        potential = build_potential(config, settings, probe.energy_kev, a_A, step)
        measurement = probe.probe().scan(potential, scan=scan, detectors=_detector(settings, probe))
        patterns = _record(measurement.compute(), settings.detector())
        patterns = patterns.reshape((-1, len(positions_A)) + patterns.shape[-2:])
        if len(potential.exit_planes) > 1:  # a single plane (the exit surface) has no plane axis
            patterns = patterns[planes]
        total = patterns if total is None else total + patterns
    return total / len(configs)


#: dask chunk size for building an S-matrix: larger than any S-matrix that fits in memory.
SMATRIX_CHUNK = "64 GB"


class PrismSpecimen:
    """One specimen's scattering matrices (one per frozen-phonon configuration, each with a thickness
    series), from which patterns are drawn for any probe positions and aberrations.

    The S-matrix holds every plane wave inside ``semiangle_mrad + cutoff_margin_mrad``; a probe of up
    to that semi-angle is a weighted sum of them (PRISM with interpolation 1, i.e. exact for the
    periodic supercell)."""

    def __init__(
        self,
        atoms: ase.Atoms,
        settings: SimulationSettings,
        a_A: float,
        thicknesses_nm: list[float],
        energy_kev: float = 200.0,
        semiangle_mrad: float = 24.0,
        tilt_mrad: tuple[float, float] = (0.0, 0.0),
        seed: int = 0,
        cutoff_margin_mrad: float = 1.0,
    ) -> None:
        step, self._planes, self.thicknesses_nm = exit_planes_for(thicknesses_nm, a_A, settings.slices_per_cell)
        self.settings, self.energy_kev, self.semiangle_mrad = settings, energy_kev, semiangle_mrad
        self._smatrices = []
        for config in phonon_configurations(tilt_specimen(atoms, tilt_mrad), settings, seed):
            potential = build_potential(config, settings, energy_kev, a_A, step)
            smatrix = _abtem().SMatrix(
                potential=potential, energy=energy_kev * 1e3,
                semiangle_cutoff=semiangle_mrad + cutoff_margin_mrad, interpolation=1, downsample=False,
            )
            # One dask chunk for the whole S-matrix (it is computed into memory anyway): abTEM 1.0.11 fails
            # to join an S-matrix with several exit planes that spans more than one chunk ("could not
            # broadcast (planes, waves, nx, ny) into (planes, waves, nx)"), e.g. 6 × 6 cells, 3 planes.
            with _abtem().config.set({"dask.chunk-size": SMATRIX_CHUNK}):
                self._smatrices.append(smatrix.build().compute())

    @property
    def nbytes(self) -> int:
        return sum(s.array.nbytes for s in self._smatrices)

    def patterns(self, probe: ProbeSettings, positions_A: np.ndarray) -> np.ndarray:
        """Patterns (T, N, Qx, Qy) for one probe setting at positions (N × 2, Å), averaged over
        the phonon configurations."""
        if probe.semiangle_mrad > self.semiangle_mrad or probe.energy_kev != self.energy_kev:
            raise ValueError(
                f"probe ({probe.energy_kev} keV, {probe.semiangle_mrad} mrad) does not fit this S-matrix "
                f"({self.energy_kev} keV, ≤ {self.semiangle_mrad} mrad); build one for that probe"
            )
        positions_A = np.asarray(positions_A, dtype=float).reshape(-1, 2)
        scan = _abtem().CustomScan(positions_A)
        detector = _detector(self.settings, probe)
        total = None
        for smatrix in self._smatrices:
            planes = []
            for plane in self._planes:
                # With one exit plane abTEM keeps no plane axis: the S-matrix is the exit surface.
                plane_matrix = smatrix[plane] if smatrix.ensemble_shape else smatrix
                measurement = plane_matrix.reduce(scan=scan, detectors=detector, ctf=probe.ctf())
                planes.append(_record(measurement.compute(), self.settings.detector()))
            stack = np.stack(planes).reshape((len(planes), len(positions_A)) + planes[0].shape[-2:])
            total = stack if total is None else total + stack
        return total / len(self._smatrices)


def cell_grid_positions(a_A: float, n: int, origin_cell: tuple[int, int] = (0, 0)) -> np.ndarray:
    """An n × n grid of probe positions (Å) covering one unit cell (fractional 0, 1/n, …), flattened
    x-major to (n², 2). For a perfect crystal this scan holds every distinct pattern."""
    frac = np.arange(n) / n
    fx, fy = np.meshgrid(frac, frac, indexing="ij")
    return (np.stack([fx.ravel(), fy.ravel()], -1) + np.asarray(origin_cell)) * a_A


def raster_origin_dependence(
    patterns: Callable[[np.ndarray], np.ndarray], a_A: float, n: int, shift_frac: tuple[float, float] = (0.37, 0.21),
    cells: int = 1,
) -> np.ndarray:
    """How much the mean of a raster of step a/n over ``cells`` × ``cells`` unit cells depends on where the
    raster sits: Σ|M₁ − M₀| / Σ M₀ per thickness, M₀ the mean of the raster from the origin and M₁ that of
    the same raster moved by ``shift_frac`` of a step. ``patterns`` maps positions (N × 2, Å) to patterns
    (T, N, Qx, Qy), e.g. ``lambda r: prism.patterns(probe, r)``. Take ``cells`` = the supercell's width for
    a specimen that repeats only with the supercell (K/Na disorder), so that only the sampling is compared.

    A probe inside a semi-angle α holds plane waves up to α/λ; the intensity they give varies with the probe
    position r at spatial frequencies up to 2α/λ only (differences of two of those waves). A raster's mean
    over whole periods equals the mean over every position when no non-zero multiple of 1/step falls in that
    band, i.e. for steps below λ/(2α) (:func:`polar4d_lib.pacbed.alias_free_step_A`); coarser rasters alias
    the position dependence into their mean, and that changes with the raster's origin."""
    if not (isinstance(n, (int, np.integer)) and n >= 1 and isinstance(cells, (int, np.integer)) and cells >= 1):
        raise ValueError(f"the raster has n × n positions per cell over cells × cells cells, n, cells ≥ 1; got {n!r}, {cells!r}")
    frac = np.arange(int(n) * int(cells)) / n
    fx, fy = np.meshgrid(frac, frac, indexing="ij")
    grid = np.stack([fx.ravel(), fy.ravel()], -1) * a_A
    shifted = grid + np.asarray(shift_frac, dtype=float) * a_A / n
    m0 = np.asarray(patterns(grid), dtype=np.float64).mean(axis=1)
    m1 = np.asarray(patterns(shifted), dtype=np.float64).mean(axis=1)
    return np.abs(m1 - m0).sum(axis=(-2, -1)) / m0.sum(axis=(-2, -1))


def random_positions(n: int, extent_A: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """n probe positions (Å) drawn uniformly over the supercell."""
    return rng.random((n, 2)) * np.asarray(extent_A)[None, :]


def region_grid_positions(origin_A: tuple[float, float], size_A: tuple[float, float], step_A: float) -> tuple[np.ndarray, tuple[int, int]]:
    """A raster over a rectangular region of a supercell (for defects and domains): positions
    (Rx·Ry, 2) in Å, x-major (Rx runs along x), and the scan shape (Rx, Ry)."""
    if not step_A > 0:
        raise ValueError(f"scan step must be positive, got {step_A} Å")
    nx, ny = (max(1, int(round(s / step_A))) for s in size_A)
    gx, gy = np.meshgrid(origin_A[0] + np.arange(nx) * step_A, origin_A[1] + np.arange(ny) * step_A, indexing="ij")
    return np.stack([gx.ravel(), gy.ravel()], -1), (nx, ny)


def scan_4d(
    atoms: ase.Atoms,
    probe: ProbeSettings,
    positions_A: np.ndarray,
    scan_shape: tuple[int, int],
    settings: SimulationSettings,
    a_A: float,
    thicknesses_nm: list[float],
    engine: str = "multislice",
    tilt_mrad: tuple[float, float] = (0.0, 0.0),
    seed: int = 0,
) -> np.ndarray:
    """A 4D-STEM scan (T, Rx, Ry, Qx, Qy) of ``atoms`` over raster positions (from
    :func:`region_grid_positions`) — multislice for large specimens scanned at few positions, or PRISM
    (``engine="prism"``) when positions outnumber the plane waves of the S-matrix."""
    if engine == "prism":
        patterns = PrismSpecimen(atoms, settings, a_A, thicknesses_nm, probe.energy_kev, probe.semiangle_mrad,
                                 tilt_mrad, seed).patterns(probe, positions_A)
    elif engine == "multislice":
        patterns = multislice_patterns(atoms, probe, positions_A, settings, a_A, thicknesses_nm, tilt_mrad, seed)
    else:
        raise ValueError(f"engine {engine!r} unknown; use 'multislice' or 'prism'")
    return patterns.reshape((patterns.shape[0],) + tuple(scan_shape) + patterns.shape[-2:])
