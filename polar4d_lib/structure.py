"""KNN specimens: pseudocubic (K,Na)NbO3 cells, the 12 <110> polarization variants, supercells seen
down [001]pc, domains and walls, oxygen vacancies — ase.Atoms plus ground-truth label maps.

Frame (CONVENTIONS.md): x ∥ [100]pc, y ∥ [010]pc, beam along z. Lengths in Å unless a name says nm.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import ase
import numpy as np

from polar4d_lib import conventions

#: Fractional sites of the perovskite cell: A (K/Na), B (Nb), O bonded along z, y and x.
_SITES = np.array(
    [[0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.5]]
)
_SITE_A, _SITE_B, _SITE_OZ, _SITE_OY, _SITE_OX = range(5)
_O_SITE_BY_AXIS = {"z": _SITE_OZ, "y": _SITE_OY, "x": _SITE_OX}

#: Room-temperature thermal vibration amplitudes (standard deviation per direction, Å), of the order of
#: the isotropic displacement parameters refined for orthorhombic KNbO3/KNN (U_iso ≈ 0.005–0.01 Å²).
THERMAL_SIGMAS_A: dict[str, float] = {"K": 0.10, "Na": 0.10, "Nb": 0.07, "O": 0.09}


@dataclass(frozen=True)
class Displacements:
    """Polar displacements (Å) along the unit polarization vector P̂.

    Nb and the A cation move along +P̂ by ``nb_A`` and ``a_A``, O along −P̂ by ``o_A``. The default
    Nb–O relative shift of 0.18 Å sits inside the 0.1–0.2 Å reported for orthorhombic KNbO3 and KNN
    (Hewat 1973, J. Phys. C 6, 2559; Shirane et al. 1954); A cations shift a little (0.02 Å).
    """

    nb_A: float = 0.10
    o_A: float = 0.08
    a_A: float = 0.02

    def scaled(self, factor: float) -> "Displacements":
        """The same pattern of displacements times ``factor`` (0 = paraelectric, centrosymmetric)."""
        return Displacements(self.nb_A * factor, self.o_A * factor, self.a_A * factor)

    def site_vectors(self, variant: int) -> np.ndarray:
        """Displacement (Å) of each of the 5 cell sites for polarization ``variant`` (5 × 3)."""
        p = conventions.VARIANTS[variant].astype(float)
        p /= np.linalg.norm(p)
        amplitude = np.array([self.a_A, self.nb_A, -self.o_A, -self.o_A, -self.o_A])
        return amplitude[:, None] * p[None, :]


@dataclass(frozen=True)
class OxygenVacancy:
    """An oxygen vacancy in cell ``cell`` (i, j, k) on the O site bonded along ``axis``; its two Nb
    neighbours (one at the entrance surface, k = 0 with axis 'z') relax away from the empty site by
    ``nb_relaxation_A`` (Å, negative = towards). Laterally the crystal is periodic, along z a slab."""

    cell: tuple[int, int, int]
    axis: str = "z"
    nb_relaxation_A: float = 0.10

    def __post_init__(self) -> None:
        if self.axis not in _O_SITE_BY_AXIS:
            raise ValueError(f"oxygen vacancy axis {self.axis!r} unknown; use 'x', 'y' or 'z'")


@dataclass
class Specimen:
    """A KNN supercell and its ground truth.

    ``variant_volume`` (nx, ny, nz) holds each cell's polarization variant (index into
    ``conventions.VARIANTS``); ``class_map`` (nx, ny) the projected class of each column (its
    majority along z) and ``pure_map`` whether the whole column has that class; ``defect_map``
    (nx, ny) the number of oxygen vacancies in each column. Per-atom labels travel in
    ``atoms.arrays``: ``variant``, ``cell_index`` (i, j, k) and ``defect`` (1 = vacancy neighbour).
    """

    atoms: ase.Atoms
    a_A: float
    variant_volume: np.ndarray
    defect_map: np.ndarray
    class_map: np.ndarray = field(init=False)
    pure_map: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        classes = conventions.VARIANT_CLASSES[self.variant_volume]
        counts = np.stack([(classes == k).sum(-1) for k in range(conventions.N_CLASSES)], -1)
        self.class_map = counts.argmax(-1).astype(np.int8)
        self.pure_map = counts.max(-1) == classes.shape[-1]

    @property
    def shape_cells(self) -> tuple[int, int, int]:
        return tuple(self.variant_volume.shape)  # type: ignore[return-value]

    @property
    def thickness_nm(self) -> float:
        return self.shape_cells[2] * self.a_A / 10.0

    def labels_at(self, positions_A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class and vacancy count of the column under each probe position (N × 2, Å)."""
        ij = np.floor(np.asarray(positions_A) / self.a_A).astype(int)
        i = ij[:, 0] % self.shape_cells[0]
        j = ij[:, 1] % self.shape_cells[1]
        return self.class_map[i, j], self.defect_map[i, j]


def cells_for_thickness(thickness_nm: float, a_A: float = conventions.A_A) -> int:
    """Number of pseudocubic cells along z closest to ``thickness_nm`` (at least 1)."""
    if not thickness_nm > 0:
        raise ValueError(f"thickness must be positive, got {thickness_nm} nm")
    return max(1, int(round(thickness_nm * 10.0 / a_A)))


def domain_volume(
    shape_cells: tuple[int, int, int],
    background_variant: int,
    regions: list[tuple[np.ndarray | tuple[tuple[int, int], ...], int]] = (),
) -> np.ndarray:
    """A (nx, ny, nz) variant volume: ``background_variant`` everywhere, then each region set to its
    variant. A region is a boolean mask of the volume's shape or a box ((x0, x1), (y0, y1)[, (z0, z1)])
    in cells (half-open; a box without z spans the whole thickness)."""
    volume = np.full(shape_cells, _check_variant(background_variant), dtype=np.int8)
    for region, variant in regions:
        if isinstance(region, np.ndarray) and region.dtype == bool:
            if region.shape != volume.shape:
                raise ValueError(f"domain mask has shape {region.shape}, expected {volume.shape}")
            volume[region] = _check_variant(variant)
        else:
            box = tuple(slice(lo, hi) for lo, hi in region)
            volume[box] = _check_variant(variant)
    return volume


def wall_volume(
    shape_cells: tuple[int, int, int], variant_a: int, variant_b: int, normal: str = "x",
    position_cells: int | None = None,
) -> np.ndarray:
    """Two domains separated by a flat wall normal to ``normal`` ('x' or 'y') at ``position_cells``
    (default: the middle): ``variant_a`` below, ``variant_b`` above. The wall is 90° or 180° by the
    angle between the two variants' polarizations (see :func:`wall_angle_deg`)."""
    axis = {"x": 0, "y": 1}.get(normal)
    if axis is None:
        raise ValueError(f"wall normal {normal!r} unknown; use 'x' or 'y'")
    position = shape_cells[axis] // 2 if position_cells is None else position_cells
    mask = np.zeros(shape_cells, dtype=bool)
    mask[(slice(None),) * axis + (slice(position, None),)] = True
    return domain_volume(shape_cells, variant_a, [(mask, variant_b)])


def wall_angle_deg(variant_a: int, variant_b: int) -> float:
    """Angle (degrees) between the polarizations of two variants: 60, 90, 120 or 180 for <110>."""
    p, q = (conventions.VARIANTS[v].astype(float) for v in (variant_a, variant_b))
    return float(np.degrees(np.arccos(np.clip(p @ q / (p @ p), -1, 1))))


def knn_supercell(
    variant: int | np.ndarray,
    lateral_cells: int | tuple[int, int] = 4,
    thickness_nm: float = 10.0,
    a_A: float = conventions.A_A,
    k_fraction: float = 0.5,
    displacements: Displacements = Displacements(),
    vacancies: list[OxygenVacancy] = (),
    seed: int | None = 0,
) -> Specimen:
    """A (K,Na)NbO3 supercell seen down [001]pc.

    ``variant`` is one polarization variant (0–11, see ``conventions.VARIANTS``) for the whole
    crystal, or a (nx, ny, nz) variant volume (from :func:`domain_volume` / :func:`wall_volume`), in
    which case it fixes the size. A sites are K with probability ``k_fraction`` and Na otherwise,
    drawn with ``seed`` (K/Na disorder). Atoms sit a quarter cell above each slice boundary so that
    the planes z = 0 and z = a/2 fall inside slices of thickness a/2.
    """
    if not 0.0 <= k_fraction <= 1.0:
        raise ValueError(f"k_fraction must lie in [0, 1], got {k_fraction}")
    if isinstance(variant, np.ndarray) and variant.ndim == 3:
        volume = variant.astype(np.int8)
        for v in np.unique(volume):
            _check_variant(int(v))
    else:
        nx, ny = (lateral_cells, lateral_cells) if np.isscalar(lateral_cells) else lateral_cells
        nz = cells_for_thickness(thickness_nm, a_A)
        volume = np.full((int(nx), int(ny), nz), _check_variant(int(variant)), dtype=np.int8)
    nx, ny, nz = volume.shape

    cell_index = np.stack(np.meshgrid(np.arange(nx), np.arange(ny), np.arange(nz), indexing="ij"), -1)
    cell_index = cell_index.reshape(-1, 1, 3)  # (cells, 1, 3)
    site_shift = np.stack([displacements.site_vectors(v) for v in range(len(conventions.VARIANTS))])
    shifts = site_shift[volume.reshape(-1)]  # (cells, 5, 3)
    positions = (cell_index + _SITES[None]) * a_A + shifts
    positions[..., 2] += a_A / 4.0

    rng = np.random.default_rng(seed)
    n_cells = nx * ny * nz
    numbers = np.empty((n_cells, 5), dtype=int)
    numbers[:, _SITE_A] = np.where(rng.random(n_cells) < k_fraction, 19, 11)  # K or Na
    numbers[:, _SITE_B] = 41  # Nb
    numbers[:, 2:] = 8  # O
    keep = np.ones((n_cells, 5), dtype=bool)
    defect = np.zeros((n_cells, 5), dtype=np.int8)
    defect_map = np.zeros((nx, ny), dtype=np.int8)

    flat = lambda i, j, k: (i % nx) * ny * nz + (j % ny) * nz + (k % nz)  # noqa: E731
    for vacancy in vacancies:
        i, j, k = vacancy.cell
        if not (0 <= i < nx and 0 <= j < ny and 0 <= k < nz):
            raise ValueError(f"vacancy cell {vacancy.cell} lies outside the {nx}×{ny}×{nz} supercell")
        site = _O_SITE_BY_AXIS[vacancy.axis]
        keep[flat(i, j, k), site] = False
        defect_map[i, j] += 1
        # The two Nb neighbours: this cell's and the one across the vacancy, one cell down `axis`.
        step = np.array({"x": (-1, 0, 0), "y": (0, -1, 0), "z": (0, 0, -1)}[vacancy.axis])
        empty = positions[flat(i, j, k), site]
        neighbours = [flat(i, j, k)]
        if not (vacancy.axis == "z" and k == 0):  # a slab: the entrance surface has no Nb below it
            neighbours.append(flat(*(np.array(vacancy.cell) + step)))
        for neighbour in neighbours:
            bond = positions[neighbour, _SITE_B] - empty
            bond -= np.round(bond / (np.array([nx, ny, nz]) * a_A)) * np.array([nx, ny, nz]) * a_A
            positions[neighbour, _SITE_B] += vacancy.nb_relaxation_A * bond / np.linalg.norm(bond)
            defect[neighbour, _SITE_B] = 1

    atoms = ase.Atoms(
        numbers=numbers[keep],
        positions=positions[keep],
        cell=[nx * a_A, ny * a_A, nz * a_A],
        pbc=True,
    )
    atoms.arrays["variant"] = np.repeat(volume.reshape(-1), 5).reshape(n_cells, 5)[keep].astype(np.int8)
    atoms.arrays["cell_index"] = np.broadcast_to(cell_index, (n_cells, 5, 3))[keep].astype(np.int16)
    atoms.arrays["defect"] = defect[keep]
    return Specimen(atoms=atoms, a_A=a_A, variant_volume=volume, defect_map=defect_map)


def tilt_specimen(atoms: ase.Atoms, tilt_mrad: tuple[float, float]) -> ase.Atoms:
    """The specimen mistilted by (θx, θy) mrad about the beam: each atom moves laterally by
    z·tan θ (a shear, exact for the small angles of a mistilt; the cell stays periodic slice by slice,
    which is how multislice sees a tilted crystal). Returns a copy."""
    tilted = atoms.copy()
    if np.any(np.asarray(tilt_mrad) != 0):
        z = tilted.positions[:, 2:3]
        tilted.positions[:, :2] += z * np.tan(np.asarray(tilt_mrad, dtype=float) * 1e-3)[None, :]
    return tilted


def _check_variant(variant: int) -> int:
    if not 0 <= int(variant) < len(conventions.VARIANTS):
        raise ValueError(f"polarization variant {variant} unknown; use 0–11 (conventions.VARIANTS)")
    return int(variant)
