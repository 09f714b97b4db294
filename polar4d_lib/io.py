"""Measured scans in, predictions out.

Reading: anything ``py4DSTEM.read`` (EMD 1.0 HDF5) or ``py4DSTEM.import_file`` (dm3/dm4, mib, raw, …)
opens, or a plain 4D ``.npy`` (Rx, Ry, Qx, Qy). The angular sampling (mrad/px) comes from the file's
calibration when it is in mrad, or in Å⁻¹ together with the beam energy; flags override or supply it.
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
from polar4d_lib.simulation import wavelength_A

_PY4DSTEM_IMPORT_SUFFIXES = {".dm3", ".dm4", ".mib", ".raw", ".gtg", ".arina", ".h5", ".hdf5", ".emd"}


@dataclass
class Scan:
    """A 4D-STEM scan (Rx, Ry, Qx, Qy) and what is known of its calibration (None = unknown)."""

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
        if not np.isfinite(self.data).all():
            raise ValueError(f"{self.source or 'scan'} contains NaN or inf; mask or replace bad pixels first")

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


def _from_datacube(datacube: Any, source: str, energy_kev: float | None) -> Scan:
    cal = datacube.calibration
    sampling, notes = None, []
    size, units = cal.get_Q_pixel_size(), str(cal.get_Q_pixel_units())
    if units == "mrad":
        sampling = float(size)
    elif units in ("A^-1", "Å^-1", "1/A"):
        if energy_kev is not None:
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
    return Scan(
        data=np.asarray(datacube.data, dtype=np.float32), q_sampling_mrad=sampling, energy_kev=energy_kev,
        semiangle_mrad=semiangle, scan_step_A=float(r_step) if r_step else None,
        scan_rotation_deg=float(rotation or 0.0), source=source, notes=notes,
    )


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


def read_scan(
    path: str | os.PathLike,
    q_sampling_mrad: float | None = None,
    energy_kev: float | None = None,
    semiangle_mrad: float | None = None,
    scan_rotation_deg: float | None = None,
    scan_step_A: float | None = None,
) -> Scan:
    """Read a scan; flags (not None) override the file's calibration (scan step in Å)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no file at {path}; check the path")
    if path.suffix == ".npy":
        data = np.load(path, allow_pickle=False, mmap_mode="r")
        scan = Scan(data=np.asarray(data, dtype=np.float32), source=str(path))
    elif path.suffix.lower() in _PY4DSTEM_IMPORT_SUFFIXES:
        scan = _read_py4dstem(path, energy_kev)
    else:
        raise ValueError(
            f"{path.name}: unknown file type {path.suffix!r}; give a 4D .npy or a file py4DSTEM opens "
            f"({', '.join(sorted(_PY4DSTEM_IMPORT_SUFFIXES))})"
        )
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


def _read_py4dstem(path: Path, energy_kev: float | None) -> Scan:
    import py4DSTEM

    errors = []
    readers = (py4DSTEM.read, py4DSTEM.import_file) if path.suffix.lower() in {".h5", ".hdf5", ".emd"} else (
        py4DSTEM.import_file,
    )
    for reader in readers:
        try:
            obj = reader(str(path))
        except Exception as error:  # py4DSTEM raises many types for foreign files
            errors.append(f"{reader.__name__}: {type(error).__name__}")
            continue
        datacube = _find_datacube(obj)
        if datacube is not None:
            return _from_datacube(datacube, str(path), energy_kev)
        errors.append(f"{reader.__name__}: no DataCube inside")
    raise ValueError(f"{path.name} could not be read as a 4D-STEM scan ({'; '.join(errors)}); export it as EMD or .npy")


def write_scan_h5(scan: Scan, path: str | os.PathLike) -> Path:
    """Save a scan with its calibration as a py4DSTEM DataCube (EMD 1.0 HDF5), atomically."""
    import py4DSTEM

    datacube = py4DSTEM.DataCube(data=scan.data)
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
