"""Measured scans in, predictions out.

Reading: :func:`read_scan` dispatches on the file's suffix through the one registry of scan formats,
:data:`polar4d_lib.formats.FORMATS` (plain 4D ``.npy``, py4DSTEM/EMD 1.0 HDF5, and through RosettaSciIO
Merlin ``.mib``, blockfile ``.blo``, NCEM/Prismatic/Velox ``.emd``, DM3/DM4, EMPAD, TVIPS, arina), lazily
where the reader allows: :attr:`Scan.data` is then a ``np.memmap`` or a dask array and :meth:`Scan.rows`
reads it a block of scan rows at a time. The angular sampling (mrad/px) comes from the file's calibration
when it is an angle, or a reciprocal length together with the beam energy; flags override or supply it.
Writing: predictions as ``.npz`` or ``.h5`` (py4DSTEM/emdfile), always to a temporary path then renamed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from polar4d_lib.atomic import atomic_write


def in_memory(data: Any) -> bool:
    """Whether ``data`` is a numpy array held in memory (not a memmap, not a dask array)."""
    return isinstance(data, np.ndarray) and not isinstance(data, np.memmap)


@dataclass
class Scan:
    """A 4D-STEM scan (Rx, Ry, Qx, Qy) and what is known of its calibration (None = unknown).

    ``data`` is a numpy array, a ``np.memmap`` or a dask array (the last two: :attr:`lazy`, read block by
    block with :meth:`rows`). NaN/inf are refused at once for in-memory arrays, by :meth:`rows` for lazy
    ones (checking them here would read the whole file)."""

    data: np.ndarray
    q_sampling_mrad: float | None = None
    energy_kev: float | None = None
    semiangle_mrad: float | None = None
    scan_step_A: float | None = None
    scan_rotation_deg: float = 0.0
    source: str = ""
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.data.ndim != 4:
            raise ValueError(
                f"{self.source or 'scan'} has shape {self.data.shape}; a 4D-STEM scan is 4D (Rx, Ry, Qx, Qy)"
            )
        if in_memory(self.data) and not np.isfinite(self.data).all():
            raise ValueError(f"{self.source or 'scan'} contains NaN or inf; mask or replace bad pixels first")

    @property
    def lazy(self) -> bool:
        """Whether the patterns stay in the file until read (a ``np.memmap`` or a dask array)."""
        if isinstance(self.data, np.memmap):
            return True
        try:
            import dask.array as da
        except ImportError:  # pragma: no cover - dask is a dependency
            return False
        return isinstance(self.data, da.Array)

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of the first scan axis, (stop − start, Ry, Qx, Qy), as an in-memory float32
        array (a lazy scan reads only that block); a one-line error if the block holds NaN or inf."""
        n = self.data.shape[0]
        if not (isinstance(start, (int, np.integer)) and isinstance(stop, (int, np.integer))
                and 0 <= start <= stop <= n):
            raise ValueError(f"rows {start}:{stop} are not a block of the {n} rows of {self.source or 'the scan'}")
        block = self.data[start:stop]
        if hasattr(block, "compute"):  # dask: a new array already, converted only where it is not float32
            block = np.asarray(block.compute()).astype(np.float32, copy=False)
        else:
            block = np.array(block, dtype=np.float32, copy=True)
        if not np.isfinite(block).all():
            raise ValueError(f"{self.source or 'scan'} contains NaN or inf (scan rows {start}–{stop - 1}); "
                             "mask or replace bad pixels first")
        return block

    def require_sampling(self) -> float:
        """The angular sampling, or a one-line error saying how to supply it."""
        if self.q_sampling_mrad is None or not self.q_sampling_mrad > 0:
            raise ValueError(
                f"angular sampling of {self.source or 'the scan'} is unknown: pass --q-pixel-size-mrad "
                "(mrad per detector pixel), or calibrate the file in py4DSTEM"
            )
        return float(self.q_sampling_mrad)


#: py4DSTEM real-space pixel units and their length in Å.
R_UNITS_IN_A: dict[str, float] = {"A": 1.0, "Å": 1.0, "nm": 10.0, "pm": 0.01}


def _from_calibration(cal: Any, data: Any, source: str, energy_kev: float | None) -> Scan:
    """A scan of ``data`` with what a py4DSTEM ``Calibration`` knows: Q pixel size in mrad, or in Å⁻¹ with
    ``energy_kev``; R pixel size in Å, nm or pm; convergence semi-angle; QR rotation (degrees)."""
    sampling, notes = None, []
    size, units = cal.get_Q_pixel_size(), str(cal.get_Q_pixel_units())
    if units == "mrad":
        sampling = float(size)
    elif units in ("A^-1", "Å^-1", "1/A"):
        if energy_kev is not None:
            from polar4d_lib.simulation import wavelength_A  # abTEM: imported only when asked
            sampling = float(size) * wavelength_A(energy_kev) * 1e3
            notes.append(f"Q calibration {size} Å⁻¹/px converted at {energy_kev} keV")
        else:
            notes.append("Q calibration in Å⁻¹ needs the beam energy (--energy-kev) to become mrad")
    r_units = str(cal.get_R_pixel_units())
    r_step = float(cal.get_R_pixel_size()) * R_UNITS_IN_A[r_units] if r_units in R_UNITS_IN_A else None
    if r_step is None and r_units not in ("pixels", "None"):
        notes.append(f"scan step in unknown units {r_units!r} ignored; pass --scan-step-A")
    semiangle = None
    try:
        semiangle = cal.get_convergence_semiangle_mrad()
    except Exception:  # py4DSTEM raises when the key is absent
        semiangle = None
    rotation = cal.get_QR_rotation_degrees() if hasattr(cal, "get_QR_rotation_degrees") else None
    try:
        flipped = bool(cal.get_QR_flip())
    except Exception:  # absent from older files
        flipped = False
    if flipped:
        notes.append("the file's calibration flips the detector frame against the scan frame (QR_flip); "
                     "polar4d does not apply flips: transpose the patterns (Qx ↔ Qy) before predicting")
    return Scan(
        data=data, q_sampling_mrad=sampling, energy_kev=energy_kev,
        semiangle_mrad=semiangle, scan_step_A=float(r_step) if r_step else None,
        scan_rotation_deg=float(rotation or 0.0), source=source, notes=notes,
    )


def _from_datacube(datacube: Any, source: str, energy_kev: float | None) -> Scan:
    """A scan of a py4DSTEM DataCube read into memory (float32), with its calibration."""
    return _from_calibration(datacube.calibration, np.asarray(datacube.data, dtype=np.float32), source, energy_kev)


def _find_datacube(obj: Any) -> Any:
    import py4DSTEM

    if isinstance(obj, py4DSTEM.DataCube):
        return obj
    # A py4DSTEM tree (Root/Node): look for the first DataCube inside.
    tree = getattr(obj, "tree", None)
    if callable(tree):
        for child in (tree(name) for name in getattr(obj, "_branch", {}) or {}):
            found = _find_datacube(child)
            if found is not None:
                return found
    return None


def _read_emd1_lazy(path: Path, energy_kev: float | None) -> Scan | None:
    """The first py4DSTEM DataCube of an EMD 1.0 file as a dask array over its HDF5 dataset (the file stays
    open while the array lives), with the calibration ``py4DSTEM.read`` finds in the file's root; None
    where the file holds no such DataCube or no calibration (then read it with :func:`_read_py4dstem`)."""
    import dask.array as da
    import h5py
    import py4DSTEM

    found: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if (not found and isinstance(obj, h5py.Group) and obj.attrs.get("python_class") == "DataCube"
                and isinstance(obj.get("data"), h5py.Dataset) and obj["data"].ndim == 4):
            found.append(name)

    handle = h5py.File(path, "r")
    try:
        handle.visititems(visit)
        calibration = None
        if found:
            root = py4DSTEM.read(str(path), datapath=found[0].split("/")[0], tree=False)
            metadata = getattr(root, "metadata", {}) or {}
            calibration = metadata["calibration"] if "calibration" in metadata.keys() else None
        if calibration is None:
            handle.close()
            return None
        data = da.from_array(handle[found[0]]["data"], chunks=("auto", -1, -1, -1), lock=True)
    except Exception:
        handle.close()
        raise
    return _from_calibration(calibration, data, str(path), energy_kev)


def read_scan(
    path: str | os.PathLike,
    q_sampling_mrad: float | None = None,
    energy_kev: float | None = None,
    semiangle_mrad: float | None = None,
    scan_rotation_deg: float | None = None,
    scan_step_A: float | None = None,
) -> Scan:
    """Read a scan through the format registry (:mod:`polar4d_lib.formats`), lazily where the format
    allows; flags (not None) override the file's calibration (sampling in mrad/px, energy in keV,
    semi-angle in mrad, rotation in degrees, scan step in Å). One-line errors for a missing file, an
    unknown suffix, a file that holds no 4D scan and a file no reader opens."""
    from polar4d_lib import formats

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no file at {path}; check the path")
    scan = formats.read(path, energy_kev)
    if q_sampling_mrad is not None:
        scan.q_sampling_mrad = float(q_sampling_mrad)
    if energy_kev is not None:
        scan.energy_kev = float(energy_kev)
    if semiangle_mrad is not None:
        scan.semiangle_mrad = float(semiangle_mrad)
    if scan_rotation_deg is not None:
        scan.scan_rotation_deg = float(scan_rotation_deg)
    if scan_step_A is not None:
        if not scan_step_A > 0:
            raise ValueError(f"--scan-step-A must be a length in Å > 0, got {scan_step_A}")
        scan.scan_step_A = float(scan_step_A)
    return scan


def _read_py4dstem(path: Path, energy_kev: float | None,
                   readers: tuple[str, ...] | None = None) -> Scan:
    """The first DataCube ``py4DSTEM.read`` or ``py4DSTEM.import_file`` (``readers``, by name; default: both
    for HDF5 files, ``import_file`` otherwise) finds, read into memory."""
    import py4DSTEM

    errors = []
    if readers is None:
        readers = ("read", "import_file") if path.suffix.lower() in {".h5", ".hdf5", ".emd"} else ("import_file",)
    for name in readers:
        reader = getattr(py4DSTEM, name)
        try:
            obj = reader(str(path))
        except Exception as error:  # py4DSTEM raises many types for foreign files
            errors.append(f"{name}: {type(error).__name__}")
            continue
        datacube = _find_datacube(obj)
        if datacube is not None:
            return _from_datacube(datacube, str(path), energy_kev)
        errors.append(f"{name}: no DataCube inside")
    reasons = errors[0].split(": ", 1)[1] if len(errors) == 1 else "; ".join(errors)
    raise _Unreadable(f"{path.name} could not be read as a 4D-STEM scan ({'; '.join(errors)}); export it as EMD "
                      "or .npy", reasons)


class _Unreadable(ValueError):
    """No py4DSTEM reader found a DataCube; ``reasons``: each reader's failure, for a caller's own message."""

    def __init__(self, message: str, reasons: str) -> None:
        super().__init__(message)
        self.reasons = reasons


def write_scan_h5(scan: Scan, path: str | os.PathLike) -> Path:
    """Save a scan with its calibration as a py4DSTEM DataCube (EMD 1.0 HDF5), atomically."""
    import py4DSTEM

    datacube = py4DSTEM.DataCube(data=np.asarray(scan.data) if scan.lazy else scan.data)
    if scan.q_sampling_mrad is not None:
        datacube.calibration.set_Q_pixel_size(scan.q_sampling_mrad)
        datacube.calibration.set_Q_pixel_units("mrad")
    if scan.scan_step_A is not None:
        datacube.calibration.set_R_pixel_size(scan.scan_step_A)
        datacube.calibration.set_R_pixel_units("A")
    return atomic_write(Path(path), lambda tmp: py4DSTEM.save(tmp, datacube, mode="o"))


#: The arrays of a prediction file (``irregularity`` absent from files written before it existed).
PREDICTION_ARRAYS = ("class_map", "probabilities", "angle_deg", "irregularity")


def write_predictions(
    path: str | os.PathLike, class_map: np.ndarray, probabilities: np.ndarray, angle_deg: np.ndarray,
    metadata: dict[str, Any], irregularity: np.ndarray | None = None,
) -> Path:
    """Write a prediction: ``class_map`` (int8 Rx×Ry, −1 abstained), ``probabilities`` (float32 Rx×Ry×8),
    ``angle_deg`` (Rx×Ry), ``irregularity`` (float32 Rx×Ry, where given) and metadata, as ``.npz`` or
    ``.h5`` (py4DSTEM/emdfile)."""
    path = Path(path)
    arrays = {
        "class_map": np.asarray(class_map, dtype=np.int8),
        "probabilities": np.asarray(probabilities, dtype=np.float32),
        "angle_deg": np.asarray(angle_deg, dtype=np.float32),
    }
    if irregularity is not None:
        arrays["irregularity"] = np.asarray(irregularity, dtype=np.float32)
    if path.suffix == ".npz":
        return atomic_write(path, lambda tmp: np.savez(tmp, metadata=np.array(json.dumps(metadata)), **arrays))
    if path.suffix in (".h5", ".hdf5"):
        import emdfile

        def write(tmp: str) -> None:
            root = emdfile.Root(name="polar4d_prediction")
            for name, value in arrays.items():
                root.add_to_tree(emdfile.Array(data=value, name=name))
            root.metadata = emdfile.Metadata(name="polar4d", data={"json": json.dumps(metadata)})
            emdfile.save(tmp, root, mode="o")

        return atomic_write(path, write)
    raise ValueError(f"prediction output {path.name} must end in .npz or .h5")


def read_predictions(path: str | os.PathLike) -> dict[str, Any]:
    """Read a prediction written by :func:`write_predictions` (``.npz`` or ``.h5``)."""
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            out: dict[str, Any] = {k: data[k] for k in PREDICTION_ARRAYS if k in data}
            out["metadata"] = json.loads(str(data["metadata"]))
        return out
    import emdfile

    root = emdfile.read(str(path))
    held = set(root.treekeys)
    out = {name: np.asarray(root.tree(name).data) for name in PREDICTION_ARRAYS if name in held}
    out["metadata"] = json.loads(root.metadata["polar4d"]["json"])
    return out
