"""Scan file formats: the one registry :func:`polar4d_lib.io.read_scan` reads through (:data:`FORMATS`).

Each :class:`Format` has a name, the file suffixes it claims and a ``read(path, energy_kev) -> Scan``; a new
format is added here, with :func:`register`, and nowhere else. A suffix claimed by several formats is tried
in registration order (``.emd``: py4DSTEM's EMD 1.0, then RosettaSciIO's NCEM/Prismatic/Velox reader;
``.h5``: EMD 1.0, then an arina master file), and the last resort for what py4DSTEM used to open is
``py4DSTEM.import_file``.

Readers: a plain 4D ``.npy`` (read a block at a time, :class:`NpyRows`), py4DSTEM/EMD 1.0 HDF5 (the DataCube's HDF5 dataset wrapped
lazily in dask, its calibration read by py4DSTEM), and through RosettaSciIO with ``lazy=True`` (dask arrays)
Quantum Detectors Merlin ``.mib`` (+ ``.hdr``), NanoMegas blockfile ``.blo``, NCEM/Prismatic/Velox ``.emd``,
Gatan DM3/DM4, EMPAD ``.xml`` (+ ``.raw``), TVIPS ``.tvips`` and Dectris arina ``*_master.h5`` (RosettaSciIO
reads arina into memory only).

Orientation: a scan's arrays keep the array order their reader gives, which is py4DSTEM's: the two
navigation (probe position) axes first, then the two detector axes, each pair in array order. So Rx is
the first scan axis of the file (py4DSTEM's Rx; in a raster recorded line by line it is the slow axis, the
line index, and Ry runs along each line), and Qx, Qy are the detector's rows and columns as the reader
gives them (RosettaSciIO flips Merlin frames up-down: its reader's choice, kept). Nothing is transposed
or flipped here: the scan and detector frames keep their relation in the file, so a scan rotation (or
flip) measured in py4DSTEM on the same file applies unchanged.

Calibration (RosettaSciIO's signal dictionaries, :func:`scan_from_signal`):

- angular sampling (mrad/px) from the two detector axes: ``mrad``, ``rad``, ``µrad`` or ``deg`` directly;
  a reciprocal length (1/nm, 1/Å, nm⁻¹, Å⁻¹ …, no 2π) q as θ = q·λ with λ from the beam energy (the
  ``--energy-kev`` flag where given, else the file's); anything else (no units, pixels, a length on the
  screen) leaves it unknown with a note naming ``--q-pixel-size-mrad``;
- scan step (Å) from the two navigation axes in Å, nm, pm, µm (…); else a note naming ``--scan-step-A``;
- beam energy (keV) from ``Acquisition_instrument.TEM.beam_energy``, convergence semi-angle (mrad) from
  ``Acquisition_instrument.TEM.convergence_angle`` (after the reader's own metadata mapping; for Prismatic
  files the simulation's ``E0`` and ``probeSemiangle``);
- a scan rotation the file records for its scan coils (blockfile) is reported in a note, not applied: it
  is not the scan–detector rotation polar4d needs (``--scan-rotation-deg``). py4DSTEM files give theirs
  (``QR_rotation``) and it is applied.
"""

from __future__ import annotations

import importlib
import math
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from polar4d_lib.io import Scan, _read_emd1_lazy, _read_py4dstem

Reader = Callable[[Path, "float | None"], Scan]


@dataclass(frozen=True)
class Format:
    """A scan file format: its ``name`` (in messages), the lower-case ``suffixes`` it claims, ``read(path,
    energy_kev)`` (beam energy in keV, the flag's, for converting a reciprocal-length calibration; None
    where not given) and whether its data stay in the file (``lazy``)."""

    name: str
    suffixes: tuple[str, ...]
    read: Reader
    lazy: bool = True


#: name → format, in the order formats are tried for a shared suffix; filled by :func:`register`.
FORMATS: dict[str, Format] = {}


def register(name: str, suffixes: tuple[str, ...], lazy: bool = True) -> Callable[[Reader], Reader]:
    """Decorator: make ``read(path, energy_kev) -> Scan`` the reader of format ``name`` for ``suffixes``."""

    def decorate(read: Reader) -> Reader:
        if name in FORMATS:
            raise ValueError(f"scan format {name!r} is registered twice")
        FORMATS[name] = Format(name, tuple(s.lower() for s in suffixes), read, lazy)
        return read

    return decorate


def known_suffixes() -> list[str]:
    """Every suffix some format claims, sorted."""
    return sorted({s for fmt in FORMATS.values() for s in fmt.suffixes})


def formats_for(path: str | Path) -> list[Format]:
    """The formats that claim ``path``'s suffix, in the order they are tried."""
    suffix = Path(path).suffix.lower()
    return [fmt for fmt in FORMATS.values() if suffix in fmt.suffixes]


class NotA4DScan(ValueError):
    """The file was read but holds no 4D dataset (Rx, Ry, Qx, Qy)."""


def read(path: str | Path, energy_kev: float | None = None) -> Scan:
    """Read ``path`` with the first format claiming its suffix that succeeds. One-line errors: an unknown
    suffix (listing the known ones), a file that holds no 4D dataset (its shapes), or a file no reader
    could open (each reader tried and why)."""
    path = Path(path)
    candidates = formats_for(path)
    if not candidates:
        raise ValueError(f"{path.name}: unknown file type {path.suffix!r}; polar4d reads "
                         f"{', '.join(known_suffixes())} (give a 4D .npy with calibration flags otherwise)")
    errors: list[str] = []
    not_4d: NotA4DScan | None = None
    for fmt in candidates:
        try:
            return fmt.read(path, energy_kev)
        except NotA4DScan as error:  # read, but no 4D scan inside: said as such, whatever else failed
            not_4d = not_4d or error
        except Exception as error:  # readers raise many types for files that are not theirs
            errors.append(f"{fmt.name}: {_one_line(error)}")
    if not_4d is not None:
        raise not_4d
    raise ValueError(f"{path.name} could not be read as a 4D-STEM scan ({'; '.join(errors)}); check that the "
                     "file is whole, or export it as EMD 1.0 (py4DSTEM) or as a 4D .npy with calibration flags")


def _one_line(error: BaseException, limit: int = 160) -> str:
    if getattr(error, "reasons", None):  # py4DSTEM's readers, each with its failure
        return str(error.reasons)
    text = " ".join(str(error).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _not_4d(path: Path, shapes: list[tuple[int, ...]], what: str = "") -> NotA4DScan:
    held = ", ".join(str(tuple(int(n) for n in s)) for s in shapes)
    held = what or (f"an array of shape {held}" if len(shapes) == 1 else f"arrays of shapes {held}" if shapes
                    else "no arrays")
    return NotA4DScan(f"{path.name} holds {held}, not a 4D-STEM scan (Rx, Ry, Qx, Qy); save the 4D scan from the "
                      "acquisition software, or reshape it to 4D and save it as .npy (calibration as flags)")


# --- units -------------------------------------------------------------------------------------------------

#: length units (lower case, NFKC, µ as "u") and their length in Å.
LENGTH_IN_A: dict[str, float] = {
    "å": 1.0, "a": 1.0, "angstrom": 1.0, "ang": 1.0, "nm": 10.0, "pm": 0.01, "um": 1e4, "mm": 1e7,
    "cm": 1e8, "m": 1e10,
}
#: angle units and their size in mrad.
ANGLE_IN_MRAD: dict[str, float] = {
    "mrad": 1.0, "rad": 1e3, "urad": 1e-3, "deg": math.pi / 180 * 1e3, "°": math.pi / 180 * 1e3,
}
_NO_UNITS = {"", "none", "<undefined>", "undefined", "1", "px", "pixel", "pixels", "a.u.", "au"}


def _units_key(units: Any) -> str:
    """``units`` as a lookup key: NFKC, no spaces, lower case, µ/μ as "u", superscript minus as "-"."""
    if units is None:
        return ""
    text = unicodedata.normalize("NFKC", str(units)).replace("μ", "u").replace("−", "-")
    return "".join(text.split()).lower()


def _reciprocal_base(key: str) -> str | None:
    """The length unit of a reciprocal length (``1/nm``, ``nm^-1``, ``nm-1``, ``nm**-1``), or None."""
    if key.startswith("1/"):
        return key[2:]
    for tail in ("^-1", "**-1", "-1"):
        if key.endswith(tail) and len(key) > len(tail):
            return key[: -len(tail)]
    return None


def angle_mrad(scale: float, units: Any, energy_kev: float | None) -> tuple[float | None, str]:
    """One detector axis's pixel size ``scale`` in ``units`` as mrad (None where it cannot be) and, where
    None, why, or where converted from a reciprocal length, how."""
    key = _units_key(units)
    if not (isinstance(scale, (int, float, np.number)) and math.isfinite(float(scale)) and float(scale) > 0):
        return None, f"the detector pixel size {scale!r} {units or ''} is not a positive number"
    scale = float(scale)
    if key in ANGLE_IN_MRAD:
        return scale * ANGLE_IN_MRAD[key], ""
    base = _reciprocal_base(key)
    if base is not None and base in LENGTH_IN_A:
        per_A = scale / LENGTH_IN_A[base]
        if energy_kev is None or not energy_kev > 0:
            return None, (f"the detector calibration {scale:g} {units} per pixel needs the beam energy "
                          "(--energy-kev) to become mrad")
        from polar4d_lib.simulation import wavelength_A  # abTEM: imported only when asked
        mrad = per_A * wavelength_A(energy_kev) * 1e3
        return mrad, (f"detector calibration {scale:g} {units} per pixel converted to {mrad:.4g} mrad/px at "
                      f"{energy_kev:g} keV")
    if key in _NO_UNITS:
        return None, f"the detector axes carry no angular calibration (units {str(units or '')!r})"
    if key in LENGTH_IN_A:
        return None, (f"the detector axes are calibrated as a length on the screen ({scale:g} {units} per pixel), "
                      "not an angle")
    return None, f"the detector calibration is in units {str(units)!r} that polar4d cannot convert"


def length_A(scale: float, units: Any) -> tuple[float | None, str]:
    """One scan axis's step ``scale`` in ``units`` as Å (None where it cannot be) and, where None, why."""
    key = _units_key(units)
    if not (isinstance(scale, (int, float, np.number)) and math.isfinite(float(scale)) and float(scale) > 0):
        return None, f"the scan step {scale!r} {units or ''} is not a positive number"
    if key in LENGTH_IN_A:
        return float(scale) * LENGTH_IN_A[key], ""
    if key in _NO_UNITS:
        return None, f"the scan axes carry no length calibration (units {str(units or '')!r})"
    return None, f"the scan step is in units {str(units)!r} that polar4d cannot convert"


def _same(values: list[float], rtol: float = 1e-3) -> bool:
    return max(values) - min(values) <= rtol * max(values)


# --- RosettaSciIO signal dictionaries -> Scan ----------------------------------------------------------------

def _get(tree: Any, dotted: str) -> Any:
    node = tree
    for key in dotted.split("."):
        if not hasattr(node, "get"):
            return None
        node = node.get(key)
        if node is None:
            return None
    return node


def _metadata(signal: dict[str, Any]) -> dict[str, Any]:
    """The signal's metadata with the reader's own ``mapping`` (original_metadata path → metadata path,
    function) applied, as HyperSpy would apply it on loading."""
    metadata = _plain(signal.get("metadata") or {})
    original = signal.get("original_metadata") or {}
    for source, target in (signal.get("mapping") or {}).items():
        value = _get(original, source)
        if value is None or not isinstance(target, tuple):
            continue
        path, convert = target
        try:
            value = convert(value) if convert is not None else value
        except Exception:  # a value the mapping cannot convert is left out
            continue
        node = metadata
        *parents, last = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):  # the path is taken by a value: keep the file's metadata
                break
        else:
            node.setdefault(last, value)
    return metadata


def _plain(tree: Any) -> Any:
    if hasattr(tree, "items"):
        return {key: _plain(value) for key, value in tree.items()}
    return tree


def _finite(value: Any) -> float | None:
    try:
        number = float(np.asarray(value).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        return None
    return number if math.isfinite(number) else None


def _number(value: Any) -> float | None:
    number = _finite(value)
    return number if number is not None and number > 0 else None


def _ordered_axes(signal: dict[str, Any]) -> tuple[list[int], list[dict[str, Any]], list[dict[str, Any]]]:
    """The permutation that puts the navigation axes first (each group in array order), and the
    navigation and detector axes' dictionaries in that order. Without two axes flagged ``navigate``,
    the first two array axes are the scan's (RosettaSciIO's layout)."""
    axes = list(signal.get("axes") or [])
    ndim = signal["data"].ndim
    if len(axes) != ndim:
        axes = [{} for _ in range(ndim)]
    by_index = sorted(range(ndim), key=lambda i: axes[i].get("index_in_array", i))
    ordered = [axes[i] for i in by_index]
    flags = [bool(axis.get("navigate", False)) for axis in ordered]
    if sum(flags) == 2:
        nav = [i for i, f in enumerate(flags) if f]
        sig = [i for i, f in enumerate(flags) if not f]
    else:
        nav, sig = [0, 1], [2, 3]
    order = nav + sig
    return order, [ordered[i] for i in nav], [ordered[i] for i in sig]


def _one_value(per_axis: list[tuple[float | None, str]], unequal: str, unit: str, flag: str, notes: list[str],
               keep_reasons: bool = True) -> float | None:
    """The one calibration of two axes ((value, reason) each, :func:`angle_mrad` or :func:`length_A`), or None
    with a note naming ``flag`` where an axis has none or the two differ (``unequal``, in ``unit``)."""
    if any(value is None for value, _ in per_axis):
        notes.append(f"{next(reason for value, reason in per_axis if value is None)}; pass {flag}")
        return None
    if not _same([value for value, _ in per_axis]):
        notes.append(f"{unequal} ({' × '.join(f'{value:.4g}' for value, _ in per_axis)} {unit}); pass {flag}")
        return None
    if keep_reasons:
        notes.extend(dict.fromkeys(reason for _, reason in per_axis if reason))
    return float(np.mean([value for value, _ in per_axis]))


def scan_from_signal(signal: dict[str, Any], source: str, energy_kev: float | None,
                     scan_step_recorded: bool = True, format_name: str = "") -> Scan:
    """A :class:`Scan` from one 4D RosettaSciIO signal dictionary (``data``, ``axes``, ``metadata``,
    ``original_metadata``, ``mapping``), lazy data kept lazy. ``energy_kev`` (the flag's) converts a
    reciprocal-length detector calibration ahead of the file's beam energy; ``scan_step_recorded`` False
    where the format stores no real scan step (its navigation scale is a placeholder)."""
    data = signal["data"]
    order, nav, sig = _ordered_axes(signal)
    if order != list(range(4)):
        data = data.transpose(order)
    notes: list[str] = []
    metadata = _metadata(signal)
    original = signal.get("original_metadata") or {}
    file_energy = _number(_get(metadata, "Acquisition_instrument.TEM.beam_energy"))
    semiangle = _number(_get(metadata, "Acquisition_instrument.TEM.convergence_angle"))
    simulation = _get(original, "simulation_parameters")  # Prismatic: E0 in keV, probeSemiangle in mrad
    if simulation is not None:
        file_energy = file_energy or _number(_get(simulation, "E0"))
        semiangle = semiangle or _number(_get(simulation, "probeSemiangle"))
    energy = energy_kev if energy_kev is not None else file_energy

    sampling = _one_value([angle_mrad(axis.get("scale", 1.0), axis.get("units"), energy) for axis in sig],
                          "the detector pixels are not square", "mrad", "--q-pixel-size-mrad", notes)
    step = None
    if not scan_step_recorded:
        notes.append(f"{format_name or 'this format'} records no scan step; pass --scan-step-A")
    else:
        step = _one_value([length_A(axis.get("scale", 1.0), axis.get("units")) for axis in nav],
                          "the scan steps differ along the two scan axes", "Å", "--scan-step-A", notes, keep_reasons=False)

    rotation = _finite(_get(metadata, "Acquisition_instrument.TEM.rotation"))
    if rotation:
        notes.append(f"the file records a scan rotation of {rotation:g}° (the scan coils'); it is not "
                     "applied: pass --scan-rotation-deg with the scan–detector rotation")
    return Scan(data=data, q_sampling_mrad=sampling, energy_kev=file_energy, semiangle_mrad=semiangle,
                scan_step_A=step, source=source, notes=notes)


def _read_rsciio(module: str, path: Path, energy_kev: float | None, lazy: bool = True,
                 scan_step_recorded: bool = True, format_name: str = "", **options: Any) -> Scan:
    """The first 4D signal RosettaSciIO's ``rsciio.<module>.file_reader`` finds in ``path``."""
    reader = importlib.import_module(f"rsciio.{module}").file_reader
    signals = reader(str(path), lazy=lazy, **options) if lazy else reader(str(path), **options)
    for signal in signals:
        if signal["data"].ndim == 4:
            return scan_from_signal(signal, str(path), energy_kev, scan_step_recorded, format_name)
    raise _not_4d(path, [signal["data"].shape for signal in signals])


# --- the formats -------------------------------------------------------------------------------------------

class NpyRows:
    """A 4D ``.npy`` read a block at a time: each read maps the file, copies the block and unmaps it, so the
    process keeps only the blocks it holds (a memory map kept open would count every page it ever read
    towards the process's resident memory). Has ``shape``, ``dtype``, ``ndim`` and slicing, for
    ``dask.array.from_array``; pickles as its path (a dask worker opens the file itself)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        header = np.load(self.path, mmap_mode="r", allow_pickle=False)
        self.shape, self.dtype, self.ndim = header.shape, header.dtype, header.ndim
        # where the data start, for reading whole rows with one read() (C order only)
        self._offset = header.offset if header.flags.c_contiguous else None
        del header

    def __getitem__(self, key: Any) -> np.ndarray:
        rows = self._whole_rows(key)
        if rows is not None:
            return self._read_rows(*rows)
        mapped = np.load(self.path, mmap_mode="r", allow_pickle=False)
        try:
            return np.array(mapped[key])
        finally:
            del mapped

    def _whole_rows(self, key: Any) -> tuple[int, int] | None:
        """(first, stop) where ``key`` asks for whole rows first:stop of a C-ordered file, else None."""
        key = key if isinstance(key, tuple) else (key,)
        if self._offset is None or len(key) > self.ndim or not all(isinstance(k, slice) for k in key):
            return None
        first, stop, step = key[0].indices(self.shape[0])
        full = all(k.indices(n) == (0, n, 1) for k, n in zip(key[1:], self.shape[1:]))
        return (first, max(first, stop)) if step == 1 and full else None

    def _read_rows(self, first: int, stop: int) -> np.ndarray:
        """Rows first:stop read straight into a new array (one copy, no page faults of a memory map)."""
        out = np.empty((stop - first,) + tuple(self.shape[1:]), dtype=self.dtype)
        row_bytes = out[:1].nbytes if len(out) else 0
        view = memoryview(out.reshape(-1).view(np.uint8))
        with open(self.path, "rb") as f:
            f.seek(self._offset + first * row_bytes)
            done = 0
            while done < len(view):
                n = f.readinto(view[done:])
                if not n:
                    raise ValueError(f"{self.path} ends before row {stop}: the file is truncated; write it again")
                done += n
        return out


#: Rows of a ``.npy`` per dask chunk: each chunk is one read (:class:`NpyRows`).
NPY_CHUNK_BYTES = 2**26


@register("numpy .npy", (".npy",))
def _read_npy(path: Path, energy_kev: float | None) -> Scan:
    """A 4D array (Rx, Ry, Qx, Qy) read lazily (:class:`NpyRows` as a dask array, a few rows per chunk); no
    calibration (flags supply it)."""
    import dask.array as da

    rows = NpyRows(path)
    if rows.ndim != 4:
        raise _not_4d(path, [rows.shape])
    per_row = max(1, int(np.prod(rows.shape[1:], dtype=np.int64)) * rows.dtype.itemsize)
    chunk = (max(1, min(rows.shape[0], NPY_CHUNK_BYTES // per_row)),) + rows.shape[1:]
    return Scan(data=da.from_array(rows, chunks=chunk, asarray=False, lock=False, name=f"npy-{path}"), source=str(path))


@register("py4DSTEM EMD 1.0", (".h5", ".hdf5", ".emd"))
def _read_emd1(path: Path, energy_kev: float | None) -> Scan:
    """py4DSTEM's EMD 1.0 file (what :func:`polar4d_lib.io.write_scan_h5` writes): its first DataCube, lazily
    where it is a plain 4D HDF5 dataset, else through ``py4DSTEM.read`` (legacy py4DSTEM files too)."""
    scan = _read_emd1_lazy(path, energy_kev)
    return scan if scan is not None else _read_py4dstem(path, energy_kev, readers=("read",))


@register("RosettaSciIO Merlin", (".mib",))
def _read_mib(path: Path, energy_kev: float | None) -> Scan:
    """Quantum Detectors Merlin ``.mib``, its scan shape from the ``.hdr`` beside it (or the frames' times)."""
    return _read_rsciio("quantumdetector", path, energy_kev)


@register("RosettaSciIO blockfile", (".blo",))
def _read_blo(path: Path, energy_kev: float | None) -> Scan:
    """NanoMegas/ASTAR blockfile."""
    return _read_rsciio("blockfile", path, energy_kev)


@register("RosettaSciIO EMD (NCEM/Prismatic/Velox)", (".emd",))
def _read_emd(path: Path, energy_kev: float | None) -> Scan:
    """Berkeley NCEM EMD (Prismatic's output included) and Thermo Fisher Velox EMD."""
    return _read_rsciio("emd", path, energy_kev)


@register("RosettaSciIO Digital Micrograph", (".dm3", ".dm4"))
def _read_dm(path: Path, energy_kev: float | None) -> Scan:
    """Gatan DM3/DM4."""
    return _read_rsciio("digitalmicrograph", path, energy_kev)


@register("RosettaSciIO EMPAD", (".xml", ".raw"))
def _read_empad(path: Path, energy_kev: float | None) -> Scan:
    """EMPAD: the ``.xml`` that names its ``.raw`` (given the ``.raw``, the ``.xml`` beside it that names it)."""
    return _read_rsciio("empad", _empad_xml(path), energy_kev)


def _empad_xml(path: Path) -> Path:
    if path.suffix.lower() == ".xml":
        return path
    import xml.etree.ElementTree as ET

    for candidate in sorted(path.parent.glob("*.xml")):
        try:
            raw = ET.parse(candidate).getroot().find("raw_file")
        except ET.ParseError:
            continue
        if raw is not None and raw.get("filename") == path.name:
            return candidate
    raise FileNotFoundError(f"no EMPAD .xml beside {path.name} names it; give the .xml")


@register("RosettaSciIO TVIPS", (".tvips",))
def _read_tvips(path: Path, energy_kev: float | None) -> Scan:
    """TVIPS stream (``*_000.tvips``): the scan shape recovered from the frame headers (square scans only;
    TVIPS records neither the shape nor the scan step)."""
    try:
        return _read_rsciio("tvips", path, energy_kev, scan_step_recorded=False, format_name="TVIPS",
                            scan_shape="auto")
    except ValueError as error:
        if "scan" not in str(error).lower():
            raise
        from rsciio.tvips import file_reader

        frames = file_reader(str(path), lazy=True)[0]["data"].shape
        raise _not_4d(path, [], f"a stack of {frames[0]} frames of {frames[1]} × {frames[2]} px whose scan shape "
                      "TVIPS does not record and the frame headers do not give (square scans only)") from error


@register("RosettaSciIO arina", (".h5",), lazy=False)
def _read_arina(path: Path, energy_kev: float | None) -> Scan:
    """Dectris arina master file (``*_master.h5``, its data files beside it; a square scan). RosettaSciIO
    reads arina into memory only."""
    return _read_rsciio("arina", path, energy_kev, lazy=False)


@register("py4DSTEM import_file", (".dm3", ".dm4", ".mib", ".raw", ".gtg", ".arina", ".h5", ".hdf5", ".emd"),
          lazy=False)
def _read_py4dstem_import(path: Path, energy_kev: float | None) -> Scan:
    """Last resort for what py4DSTEM's ``import_file`` opens (K2 ``.gtg``, EMPAD ``.raw`` …), in memory."""
    return _read_py4dstem(path, energy_kev, readers=("import_file",))


