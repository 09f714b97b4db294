"""Simulated datasets: a grid of specimen and probe parameters → a zarr group of patterns and labels.

The grid is (polarization variants × disorder seeds × mistilts) specimens, each simulated once as a
PRISM scattering matrix with a thickness series, from which ``probe_settings`` random probe settings
(defocus, twofold astigmatism, Cs) × ``positions_per_setting`` probe positions are drawn: random over the
supercell, or (``cell_grid``) a whole n × n raster of one unit cell at a/n steps from a random origin, so
that the mean of one probe setting's patterns is the position-averaged pattern (PACBED) of one cell as a
scan records it. With ``tilt_max_mrad`` > 0 each specimen's mistilt is its listed tilt plus a random one
uniform in a disk of that radius, drawn from the specimen's own seed. Each specimen
is a unit of work cached on disk under a key made of all its parameters and the library versions, so an
interrupted build resumes where it stopped; units run in parallel through dask (in-process for one
worker, a LocalCluster for several, or a given scheduler). The zarr group is written one unit at a time
(a dataset may be larger than the memory) to a temporary path and renamed, so a finished build is never
half-written.

Layout (``SCHEMA``): arrays ``patterns`` (float32, N × Qx × Qy), ``label`` (int8), ``variant`` (int8),
``polarization`` (N × 3, unit P), ``thickness_nm``, ``position_A`` and ``position_frac`` (N × 2),
``defocus_nm``, ``astigmatism_nm``, ``astigmatism_angle_deg``, ``cs_um``, ``tilt_mrad`` (N × 2),
``disorder_seed``, ``defect`` (oxygen vacancies in the column), ``unit`` and ``probe_setting``;
attributes ``q_sampling_mrad``, ``energy_kev``, ``semiangle_mrad``, ``a_A``, ``scan_rotation_deg``,
``class_names``, ``parameters`` (every parameter), ``versions`` and ``content_sha256``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import zarr
from tqdm.auto import tqdm

from polar4d_lib import cache, config, conventions, profiles
from polar4d_lib.simulation import (
    PrismSpecimen,
    ProbeSettings,
    SimulationSettings,
    cell_grid_positions,
    random_positions,
)
from polar4d_lib.structure import Displacements, knn_supercell

#: Rows per zarr chunk, and per read when a dataset is hashed.
ROWS_PER_CHUNK = 1024
SCHEMA = 3  # 2: deterministic FFT planning (FFTW_ESTIMATE); 3: potential grid in whole pixels per cell

# Per-pattern arrays and their dtypes (patterns first).
ARRAYS: dict[str, str] = {
    "patterns": "float32", "label": "int8", "variant": "int8", "polarization": "float32",
    "thickness_nm": "float32", "position_A": "float32", "position_frac": "float32",
    "defocus_nm": "float32", "astigmatism_nm": "float32", "astigmatism_angle_deg": "float32",
    "cs_um": "float32", "tilt_mrad": "float32", "disorder_seed": "int32", "defect": "int8",
    "unit": "int32", "probe_setting": "int32",
}


@dataclass(frozen=True)
class DatasetSpec:
    """Every parameter of a simulated dataset (lengths Å, thickness nm, angles mrad, energy keV)."""

    variants: tuple[int, ...] = tuple(range(12))
    thicknesses_nm: tuple[float, ...] = (10.0, 20.0, 30.0, 40.0)
    lateral_cells: int = 4
    a_A: float = conventions.A_A
    k_fraction: float = 0.5
    displacements: Displacements = Displacements()
    disorder_seeds: tuple[int, ...] = (0,)
    tilts_mrad: tuple[tuple[float, float], ...] = ((0.0, 0.0),)
    tilt_max_mrad: float = 0.0
    energy_kev: float = 200.0
    semiangle_mrad: float = 24.0
    probe_settings: int = 16
    positions_per_setting: int = 16
    cell_grid: bool = False
    defocus_nm: tuple[float, float] = (-5.0, 5.0)
    astigmatism_max_nm: float = 2.0
    cs_um: tuple[float, float] = (0.0, 0.0)
    simulation: SimulationSettings = SimulationSettings()
    seed: int = 888

    def __post_init__(self) -> None:
        for v in self.variants:
            if not 0 <= v < len(conventions.VARIANTS):
                raise ValueError(f"variant {v} unknown; variants are 0–11 (conventions.VARIANTS)")
        if self.probe_settings < 1 or self.positions_per_setting < 1:
            raise ValueError("probe_settings and positions_per_setting must be at least 1")
        if self.defocus_nm[0] > self.defocus_nm[1] or self.cs_um[0] > self.cs_um[1]:
            raise ValueError("ranges are (low, high) with low ≤ high")
        if self.cell_grid and math.isqrt(self.positions_per_setting) ** 2 != self.positions_per_setting:
            raise ValueError(
                f"cell_grid scans an n × n raster of one cell: positions_per_setting must be a square "
                f"number (16, 64, …), got {self.positions_per_setting}"
            )
        if not self.tilt_max_mrad >= 0:
            raise ValueError(f"tilt_max_mrad is a mistilt radius in mrad ≥ 0, got {self.tilt_max_mrad}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "DatasetSpec":
        """A spec from plain values (YAML/JSON), nested ``displacements`` and ``simulation`` included."""
        config.check_known_keys(values, {f.name for f in dataclasses.fields(cls)}, "dataset parameter", KeyError)
        values = dict(values)
        if "displacements" in values and isinstance(values["displacements"], dict):
            values["displacements"] = Displacements(**values["displacements"])
        if "simulation" in values and isinstance(values["simulation"], dict):
            sim = dict(values["simulation"])
            if "detector_shape" in sim:
                sim["detector_shape"] = tuple(sim["detector_shape"])
            values["simulation"] = SimulationSettings(**sim)
        for key in ("variants", "thicknesses_nm", "disorder_seeds", "defocus_nm", "cs_um"):
            if key in values:
                if not isinstance(values[key], (list, tuple)):
                    raise ValueError(f"dataset parameter {key} must be a list, got {values[key]!r}")
                values[key] = tuple(values[key])
        if "tilts_mrad" in values:
            values["tilts_mrad"] = tuple(tuple(float(x) for x in t) for t in values["tilts_mrad"])
        _check_types(values)
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    def with_overrides(self, overrides: dict[str, Any]) -> "DatasetSpec":
        """A copy with dotted keys replaced (``probe_settings=4``, ``simulation.q_sampling_mrad=1``)."""
        values = self.as_dict()
        for key, value in overrides.items():
            target, *rest = key.split(".")
            if rest:
                if target not in values or not isinstance(values[target], dict) or rest[0] not in values[target]:
                    raise KeyError(f"unknown dataset parameter {key!r}")
                values[target][rest[0]] = value
            else:
                if target not in values:
                    raise KeyError(f"unknown dataset parameter {key!r}; known: {sorted(values)}")
                values[target] = value
        return DatasetSpec.from_dict(values)

    def units(self) -> list["Unit"]:
        """The specimen units of the grid, in a fixed order."""
        grid = itertools.product(self.variants, self.disorder_seeds, enumerate(self.tilts_mrad))
        return [Unit(self, i, v, s, self._tilt(v, s, j, t)) for i, (v, s, (j, t)) in enumerate(grid)]

    def _tilt(self, variant: int, disorder_seed: int, j: int, tilt: tuple[float, float]) -> tuple[float, float]:
        """The listed tilt ``j`` plus, if ``tilt_max_mrad`` > 0, a random one uniform in that disk (mrad,
        rounded to 0.001 mrad), seeded by the dataset seed and the specimen."""
        if self.tilt_max_mrad == 0:
            return (float(tilt[0]), float(tilt[1]))
        rng = np.random.default_rng([int(self.seed), int(variant), int(disorder_seed), j, 3])
        radius, angle = self.tilt_max_mrad * math.sqrt(rng.random()), 2 * math.pi * rng.random()
        return (round(tilt[0] + radius * math.cos(angle), 3), round(tilt[1] + radius * math.sin(angle), 3))


def _check_types(values: dict[str, Any]) -> None:
    """One-line errors for values of the wrong type (e.g. ``--set probe_settings=abc``)."""
    ints = ("lateral_cells", "probe_settings", "positions_per_setting", "seed")
    floats = ("a_A", "k_fraction", "energy_kev", "semiangle_mrad", "astigmatism_max_nm", "tilt_max_mrad")
    if "cell_grid" in values and not isinstance(values["cell_grid"], bool):
        raise ValueError(f"dataset parameter cell_grid must be true or false, got {values['cell_grid']!r}")
    for key in ints:
        if key in values and (isinstance(values[key], bool) or not isinstance(values[key], (int, np.integer))):
            raise ValueError(f"dataset parameter {key} must be an integer, got {values[key]!r}")
    for key in floats:
        if key in values and (isinstance(values[key], bool) or not isinstance(values[key], (int, float, np.number))):
            raise ValueError(f"dataset parameter {key} must be a number, got {values[key]!r}")
    for key in ("variants", "thicknesses_nm", "disorder_seeds", "defocus_nm", "cs_um"):
        if key in values and not all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in values[key]):
            raise ValueError(f"dataset parameter {key} must be a list of numbers, got {list(values[key])!r}")
    for key in ("defocus_nm", "cs_um"):
        if key in values and len(values[key]) != 2:
            raise ValueError(f"dataset parameter {key} is a range [low, high], got {list(values[key])!r}")


def spec_for_profile(profile: str, overrides: dict[str, Any] | None = None) -> DatasetSpec:
    """The dataset spec of ``profile`` with optional dotted-key overrides."""
    values = profiles.section(profile, "simulate")
    values.setdefault("seed", config.get("seed"))
    return DatasetSpec.from_dict(values).with_overrides(overrides or {})


@dataclass(frozen=True)
class Unit:
    """One specimen of the grid: what is simulated (and cached) together."""

    spec: DatasetSpec
    index: int
    variant: int
    disorder_seed: int
    tilt_mrad: tuple[float, float]

    def key(self) -> str:
        """Cache key: every parameter that changes this unit's numbers, plus library versions."""
        spec = self.spec.as_dict()
        spec.pop("variants"), spec.pop("disorder_seeds"), spec.pop("tilts_mrad"), spec.pop("tilt_max_mrad")
        if not spec["cell_grid"]:  # keys of random-position units stay as they were before cell grids
            spec.pop("cell_grid")
        payload = {
            "schema": SCHEMA, "spec": spec, "variant": self.variant, "disorder_seed": self.disorder_seed,
            "tilt_mrad": list(self.tilt_mrad), "index_seed": self._seed_words(), "versions": versions(),
        }
        return cache.key(payload)

    def _seed_words(self) -> list[int]:
        # The unit's random draws depend on the dataset seed and on what the unit is, not on its
        # position in the grid, so adding variants to a spec leaves the other units' numbers alone.
        tilt = [int(round(t * 1000)) for t in self.tilt_mrad]
        return [int(self.spec.seed), self.variant, self.disorder_seed, tilt[0] & 0xFFFFFFFF, tilt[1] & 0xFFFFFFFF]

    def probe_draws(self) -> list[ProbeSettings]:
        """The unit's random probe settings (nominal ones if every range is zero)."""
        rng = np.random.default_rng(self._seed_words() + [1])
        spec = self.spec
        draws = []
        for _ in range(spec.probe_settings):
            draws.append(
                ProbeSettings(
                    energy_kev=spec.energy_kev, semiangle_mrad=spec.semiangle_mrad,
                    defocus_nm=float(rng.uniform(*spec.defocus_nm)),
                    astigmatism_nm=float(rng.uniform(0.0, spec.astigmatism_max_nm)),
                    astigmatism_angle_deg=float(rng.uniform(0.0, 180.0)),
                    cs_um=float(rng.uniform(*spec.cs_um)),
                )
            )
        return draws

    def probe_positions(self) -> list[np.ndarray]:
        """The probe positions (P × 2, Å) of each probe setting: random over the supercell, or with
        ``cell_grid`` an n × n raster of one cell at a/n steps from a random origin (wrapped into the
        periodic supercell)."""
        spec = self.spec
        rng = np.random.default_rng(self._seed_words() + [2])
        extent = np.full(2, spec.lateral_cells * spec.a_A)
        out = []
        for _ in range(spec.probe_settings):
            if spec.cell_grid:
                grid = cell_grid_positions(spec.a_A, math.isqrt(spec.positions_per_setting))
                out.append(np.mod(grid + rng.random(2) * extent, extent))
            else:
                out.append(random_positions(spec.positions_per_setting, extent, rng))
        return out

    def simulate(self) -> dict[str, np.ndarray]:
        """Simulate this unit: per-pattern arrays (see ``ARRAYS``), ordered thickness-major."""
        spec = self.spec
        specimen = knn_supercell(
            self.variant, spec.lateral_cells, max(spec.thicknesses_nm), spec.a_A, spec.k_fraction,
            spec.displacements, seed=self.disorder_seed,
        )
        prism = PrismSpecimen(
            specimen.atoms, spec.simulation, spec.a_A, list(spec.thicknesses_nm), spec.energy_kev,
            spec.semiangle_mrad, self.tilt_mrad, seed=self.disorder_seed,
        )
        rows: list[dict[str, np.ndarray]] = []
        for s, (probe, positions) in enumerate(zip(self.probe_draws(), self.probe_positions())):
            patterns = prism.patterns(probe, positions)  # (T, P, Qx, Qy)
            labels, defects = specimen.labels_at(positions)
            for t, thickness in enumerate(prism.thicknesses_nm):
                n = len(positions)
                rows.append({
                    "patterns": patterns[t], "label": labels, "defect": defects,
                    "thickness_nm": np.full(n, thickness), "position_A": positions,
                    "position_frac": np.mod(positions / spec.a_A, 1.0),
                    "defocus_nm": np.full(n, probe.defocus_nm), "astigmatism_nm": np.full(n, probe.astigmatism_nm),
                    "astigmatism_angle_deg": np.full(n, probe.astigmatism_angle_deg), "cs_um": np.full(n, probe.cs_um),
                    "probe_setting": np.full(n, s),
                })
        out = {key: np.concatenate([r[key] for r in rows]) for key in rows[0]}
        n = len(out["patterns"])
        p = conventions.VARIANTS[self.variant].astype(float)
        out.update(
            variant=np.full(n, self.variant), polarization=np.tile(p / np.linalg.norm(p), (n, 1)),
            tilt_mrad=np.tile(np.asarray(self.tilt_mrad, float), (n, 1)),
            disorder_seed=np.full(n, self.disorder_seed), unit=np.full(n, self.index),
        )
        order = np.lexsort((out["probe_setting"], out["thickness_nm"]))
        return {key: np.asarray(out[key][order], dtype=ARRAYS[key]) for key in ARRAYS}


def versions() -> dict[str, str]:
    """Versions of the libraries that determine the simulated numbers."""
    import abtem
    import ase

    import polar4d_lib
    from polar4d_lib.simulation import FFT_PLANNING

    return {"polar4d": polar4d_lib.__version__, "abtem": abtem.__version__, "numpy": np.__version__,
            "ase": ase.__version__, "fft": FFT_PLANNING}


# --- cache -----------------------------------------------------------------------------------------

def _cache_path(unit: Unit, cache_dir: Path) -> Path:
    return cache.path("units", unit.key(), cache_dir)


def _simulate_unit(unit: Unit) -> dict[str, np.ndarray]:
    import dask

    # One unit runs on one core; units run side by side (workers), which keeps numbers deterministic.
    with dask.config.set(scheduler="synchronous"):
        return unit.simulate()


def run_units(
    todo: list[Any], save: Callable[[Any, dict[str, np.ndarray]], None], num_workers: int, scheduler: str | None,
    desc: str = "simulating specimens",
) -> None:
    """Simulate ``todo`` units (anything with a ``simulate()`` that returns arrays: a dataset's
    :class:`Unit`, a test suite's specimen) — in this process, on a LocalCluster, or on a given dask
    scheduler — saving each as soon as it arrives, with a progress bar."""
    bar = tqdm(total=len(todo), desc=desc, unit="specimen", disable=not config.get("progress_bar"))
    if not todo:
        bar.close()
        return
    if scheduler is None and (num_workers <= 1 or len(todo) == 1):
        for unit in todo:
            save(unit, _simulate_unit(unit))
            bar.update()
        bar.close()
        return
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    # dask's LocalCluster sets OMP/MKL/OPENBLAS_NUM_THREADS=1 in this process's environment for its
    # workers and leaves them there: every process started afterwards (e.g. the book's notebook kernels,
    # whose torch training then ran on one core) would inherit them. Restore the environment afterwards.
    environ = dict(os.environ)
    if scheduler is None:
        cluster = LocalCluster(n_workers=min(num_workers, len(todo)), threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(scheduler or cluster)
    try:
        futures = {client.submit(_simulate_unit, unit, pure=False): unit for unit in todo}
        for future in as_completed(futures):
            save(futures[future], future.result())
            bar.update()
    finally:
        bar.close()
        client.close()
        if cluster is not None:
            cluster.close()
        os.environ.clear()
        os.environ.update(environ)


def build(
    spec: DatasetSpec,
    out: str | os.PathLike,
    profile: str = "custom",
    num_workers: int | None = None,
    scheduler: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Build (or resume) the dataset of ``spec`` and write it as a zarr group at ``out``.

    Finished units come from the cache; the rest are simulated. The group is assembled in a temporary
    directory beside ``out`` and renamed into place, replacing an older ``out`` only once complete.
    """
    out = Path(out)
    if out.suffix != ".zarr":
        raise ValueError(f"dataset path {out} should end in .zarr; e.g. --out data/{profile}.zarr")
    num_workers = int(config.resolve("num_workers", num_workers) or os.cpu_count() or 1)
    scheduler = config.resolve("scheduler", scheduler)
    units = spec.units()
    todo = [u for u in units if not _cache_path(u, cache_dir).exists()]
    run_units(todo, lambda unit, arrays: cache.save(_cache_path(unit, cache_dir), arrays), num_workers, scheduler)
    paths = [_cache_path(u, cache_dir) for u in units]
    attrs = {
        "schema": SCHEMA,
        "profile": profile,
        "q_sampling_mrad": spec.simulation.q_sampling_mrad,
        "energy_kev": spec.energy_kev,
        "semiangle_mrad": spec.semiangle_mrad,
        "a_A": spec.a_A,
        "scan_rotation_deg": 0.0,
        "detector_shape": list(spec.simulation.detector_shape),
        "class_names": list(conventions.CLASS_NAMES),
        "parameters": spec.as_dict(),
        "versions": versions(),
    }
    # a cached unit may come from another grid: renumber it
    write_zarr([(path, {"unit": unit.index}) for unit, path in zip(units, paths)], attrs, out)
    return out


def content_sha256(arrays: Mapping[str, Any]) -> str:
    """SHA-256 of the arrays' names, dtypes, shapes and bytes (independent of zarr's chunk files). Reads
    ``ROWS_PER_CHUNK`` rows at a time, so zarr arrays larger than memory hash as their loaded copies do."""
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = arrays[key]
        h.update(f"{key}:{np.dtype(a.dtype).str}:{tuple(a.shape)}".encode())
        if len(a.shape) == 0:
            h.update(np.asarray(a).tobytes())
            continue
        for start in range(0, a.shape[0], ROWS_PER_CHUNK):
            h.update(np.ascontiguousarray(a[start:start + ROWS_PER_CHUNK]).tobytes())
    return h.hexdigest()


def write_zarr(units: Sequence[tuple[Path, dict[str, int]]], attrs: dict[str, Any], out: Path) -> None:
    """Write the cached units (each a unit file and the per-pattern values to set on its patterns, e.g.
    ``{"unit": 3}``) one after another as a zarr group at ``out``, with ``attrs`` and their
    ``content_sha256``, atomically. One unit is in memory at a time, so a dataset may exceed the memory."""
    out.parent.mkdir(parents=True, exist_ok=True)
    lengths = [len(cache.load(path, ["label"])["label"]) for path, _ in units]  # the labels alone
    total = sum(lengths)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        group = zarr.open_group(str(tmp), mode="w")
        arrays = None
        start = 0
        for (path, values), n in zip(units, lengths):
            part = cache.load(path, ARRAYS)
            for key, value in values.items():
                part[key] = np.full(n, value, dtype=ARRAYS[key])
            if arrays is None:
                arrays = {key: group.create_array(key, shape=(total,) + v.shape[1:], dtype=v.dtype,
                                                  chunks=(max(1, min(total, ROWS_PER_CHUNK)),) + v.shape[1:])
                          for key, v in part.items()}
            for key, array in arrays.items():
                array[start:start + n] = part[key]
            start += n
        group.attrs.update({**attrs, "content_sha256": content_sha256(arrays or {})})
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


@dataclass
class Dataset:
    """A simulated dataset opened from zarr: arrays (lazily by name) and attributes."""

    path: Path
    group: Any = field(repr=False)

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self.group.attrs)

    def __len__(self) -> int:
        return int(self.group["label"].shape[0])

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self.group:
            raise KeyError(f"dataset {self.path} has no array {key!r}; it has {sorted(self.group.array_keys())}")
        return self.group[key][...]

    def keys(self) -> Iterator[str]:
        return iter(sorted(self.group.array_keys()))

    def verify(self) -> bool:
        """Whether the arrays still match the checksum written with them."""
        return content_sha256({k: self.group[k] for k in self.keys()}) == self.attrs.get("content_sha256")


def open_dataset(path: str | os.PathLike) -> Dataset:
    """Open a dataset written by :func:`build`; a one-line error if it is not one."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no dataset at {path}; build one with `polar4d simulate --profile smoke --out {path}`")
    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception as error:  # zarr raises several types for non-zarr paths
        raise ValueError(f"{path} is not a zarr dataset ({type(error).__name__}); pass a .zarr built by polar4d simulate") from None
    missing = [k for k in ("patterns", "label", "thickness_nm", "position_A") if k not in group]
    if missing or "q_sampling_mrad" not in group.attrs:
        raise ValueError(f"{path} is not a polar4d dataset (missing {missing or ['q_sampling_mrad']}); rebuild it with polar4d simulate")
    return Dataset(path, group)


def describe(dataset: Dataset) -> str:
    """A short human-readable summary (what ``polar4d info`` prints)."""
    attrs = dataset.attrs
    labels = dataset["label"]
    thickness = dataset["thickness_nm"]
    shape = dataset.group["patterns"].shape
    counts = ", ".join(f"{conventions.CLASS_NAMES[k]} {int((labels == k).sum())}" for k in range(conventions.N_CLASSES))
    lines = [
        f"dataset        {dataset.path}",
        f"profile        {attrs.get('profile')}",
        f"patterns       {shape[0]} × {shape[1]} × {shape[2]} float32 at {attrs['q_sampling_mrad']} mrad/px "
        f"(±{attrs['q_sampling_mrad'] * shape[1] / 2:.1f} mrad)",
        f"probe          {attrs['energy_kev']} keV, {attrs['semiangle_mrad']} mrad semi-angle",
        f"classes        {counts}",
        f"thickness_nm   {', '.join(f'{t:.1f}' for t in np.unique(thickness))}",
        f"arrays         {', '.join(dataset.keys())}",
        f"versions       {', '.join(f'{k} {v}' for k, v in attrs.get('versions', {}).items())}",
        f"content_sha256 {attrs.get('content_sha256')}",
    ]
    return "\n".join(lines)
