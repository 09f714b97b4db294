"""Scan file formats (polar4d_lib.formats): each written small here (no downloads), read lazily through
``io.read_scan`` with its calibration; the orientation pinned by patterns whose content says where they are.

Orientation: a scan keeps its reader's array order (py4DSTEM's): Rx = the first scan axis of the file
(the line index of a line raster), Ry along each line, Qx, Qy = the detector's rows and columns as the
reader gives them. The test cube below has, at scan position (i, j), a bright pixel at detector (i + 1,
j + 2) of value 100 + 10 i + j on a background that varies along both detector axes, so that any transpose
or flip of either pair of axes changes it.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from polar4d_lib import formats, io
from polar4d_lib.simulation import wavelength_A

ENERGY = 200.0
LAMBDA_A = wavelength_A(ENERGY)
RX, RY, QX, QY = 6, 5, 16, 16


def cube(rx: int = RX, ry: int = RY, qx: int = QX, qy: int = QY, dtype=np.uint16) -> np.ndarray:
    """(rx, ry, qx, qy): background (a + 3 b) % 7 at detector pixel (a, b); at scan position (i, j) a bright
    pixel at (i + 1, j + 2) worth 100 + 10 i + j. Fits uint8."""
    a, b = np.meshgrid(np.arange(qx), np.arange(qy), indexing="ij")
    out = np.broadcast_to((a + 3 * b) % 7, (rx, ry, qx, qy)).astype(dtype).copy()
    for i in range(rx):
        for j in range(ry):
            out[i, j, i + 1, j + 2] = 100 + 10 * i + j
    return out


def assert_scan(scan: io.Scan, expected: np.ndarray, lazy: bool = True) -> None:
    """Shape, laziness, every value, and rows() as slices of the same."""
    assert scan.data.shape == expected.shape
    assert scan.lazy is lazy
    assert isinstance(scan.data, np.ndarray) is (not lazy or isinstance(scan.data, np.memmap))
    np.testing.assert_array_equal(np.asarray(scan.data), expected)
    i, j = expected.shape[0] - 2, expected.shape[1] - 1  # one pattern: its bright pixel says where it is
    assert np.unravel_index(np.argmax(np.asarray(scan.data[i, j])), expected.shape[2:]) == (i + 1, j + 2)
    block = scan.rows(1, 3)
    assert isinstance(block, np.ndarray) and not isinstance(block, np.memmap) and block.dtype == np.float32
    np.testing.assert_array_equal(block, expected[1:3].astype(np.float32))


def mrad(q_per_A: float) -> float:
    return q_per_A * LAMBDA_A * 1e3


# --- the formats -------------------------------------------------------------------------------------------

def test_npy_is_read_a_block_at_a_time(tmp_path, monkeypatch):
    expected = cube(dtype=np.float32)
    np.save(tmp_path / "s.npy", expected)
    monkeypatch.setattr(formats, "NPY_CHUNK_BYTES", 2 * expected[0].nbytes)  # two rows per read
    scan = io.read_scan(tmp_path / "s.npy", q_sampling_mrad=1.5, scan_step_A=0.8)
    assert isinstance(scan.data.compute(), np.ndarray) and scan.data.chunks[0][0] == 2
    assert_scan(scan, expected)
    assert (scan.q_sampling_mrad, scan.scan_step_A) == (1.5, 0.8)


def test_npy_rows_read_whole_rows_directly_and_any_other_slice_through_a_map(tmp_path):
    expected = cube(dtype=np.float32)
    np.save(tmp_path / "s.npy", expected)
    rows = formats.NpyRows(tmp_path / "s.npy")
    full = tuple(slice(0, n) for n in expected.shape[1:])
    assert rows._whole_rows((slice(1, 3),) + full) == (1, 3)
    for key in [(slice(1, 3),) + full, slice(1, 3), (slice(0, 99),), (slice(1, 4, 2),), (slice(0, 2), slice(1, 3)), 2]:
        np.testing.assert_array_equal(rows[key], expected[key])
    assert rows._whole_rows((slice(1, 4, 2),)) is None and rows._whole_rows((slice(0, 2), slice(1, 3))) is None
    np.save(tmp_path / "f.npy", np.asfortranarray(expected))  # Fortran order: every read goes through the map
    np.testing.assert_array_equal(formats.NpyRows(tmp_path / "f.npy")[1:3], expected[1:3])
    data = (tmp_path / "s.npy").read_bytes()
    (tmp_path / "s.npy").write_bytes(data[:-10])  # cut short after it was opened (its header says the full shape)
    with pytest.raises(ValueError, match="truncated"):
        rows[expected.shape[0] - 1:]


def test_py4dstem_emd1_is_read_lazily_with_its_calibration(tmp_path):
    import py4DSTEM

    expected = cube(dtype=np.float32)
    datacube = py4DSTEM.DataCube(data=expected.copy())
    datacube.calibration.set_Q_pixel_size(0.02)
    datacube.calibration.set_Q_pixel_units("A^-1")
    datacube.calibration.set_R_pixel_size(0.04)
    datacube.calibration.set_R_pixel_units("nm")
    datacube.calibration.set_QR_rotation_degrees(12.0)
    py4DSTEM.save(str(tmp_path / "s.h5"), datacube, mode="o")
    scan = io.read_scan(tmp_path / "s.h5", energy_kev=ENERGY)
    assert_scan(scan, expected)
    assert scan.q_sampling_mrad == pytest.approx(mrad(0.02))
    assert scan.scan_step_A == pytest.approx(0.4)
    assert scan.scan_rotation_deg == pytest.approx(12.0)
    # What polar4d writes itself comes back the same way.
    written = io.write_scan_h5(io.Scan(expected, q_sampling_mrad=1.25, scan_step_A=0.5), tmp_path / "w.emd")
    again = io.read_scan(written)
    assert_scan(again, expected)
    assert (again.q_sampling_mrad, again.scan_step_A) == (pytest.approx(1.25), pytest.approx(0.5))


def write_mib(path, frames: np.ndarray, frames_per_line: int) -> None:
    """A Merlin ``.mib`` (single chip, 12-bit counter as U16, big-endian) and its ``.hdr``."""
    rows, cols = frames.shape[-2:]
    with open(path, "wb") as f:
        for n, frame in enumerate(frames.reshape(-1, rows, cols)):
            fields = ["MQ1", f"{n + 1:06d}", "00384", "01", f"{cols:04d}", f"{rows:04d}", "U16", "   1x1", "01",
                      "2024-01-01 00:00:00.000000", "0.001000", "0", "0", "0", "1.200000E+2",
                      f"2024-01-01T00:00:{n // 100:02d}.{n % 100:02d}0000000Z", "1000000ns", "12", ""]
            f.write(",".join(fields).encode().ljust(384, b" "))
            f.write(frame.astype(">u2").tobytes())
    path.with_suffix(".hdr").write_text(
        "HDR,\t\nChip ID:\tW0\n"
        f"Frames in Acquisition (Number):\t{frames.shape[0] * frames.shape[1]}\n"
        f"Frames per Trigger (Number):\t{frames_per_line}\nEnd\t\n")


def test_merlin_mib_is_read_lazily_and_notes_its_missing_calibration(tmp_path):
    recorded = cube()  # frame n = line n // RY, position n % RY, written row by row
    write_mib(tmp_path / "s.mib", recorded, frames_per_line=RY)
    scan = io.read_scan(tmp_path / "s.mib")
    # RosettaSciIO flips Merlin frames up-down (the detector rows): its reader's choice, kept.
    expected = recorded[:, :, ::-1, :]
    assert scan.data.shape == (RX, RY, QX, QY)
    np.testing.assert_array_equal(np.asarray(scan.data[2, 3]), recorded[2, 3, ::-1])
    assert scan.lazy and scan.rows(0, RX).shape == (RX, RY, QX, QY)
    np.testing.assert_array_equal(np.asarray(scan.data), expected)
    np.testing.assert_array_equal(scan.rows(1, 3), expected[1:3])
    assert scan.q_sampling_mrad is None and scan.scan_step_A is None and scan.energy_kev is None
    assert any("--q-pixel-size-mrad" in note for note in scan.notes)
    assert any("--scan-step-A" in note for note in scan.notes)
    flagged = io.read_scan(tmp_path / "s.mib", q_sampling_mrad=0.9, scan_step_A=0.5, energy_kev=ENERGY)
    assert (flagged.q_sampling_mrad, flagged.scan_step_A, flagged.energy_kev) == (0.9, 0.5, ENERGY)


def signal_dict(data: np.ndarray, units: tuple[str, str], scales: tuple[float, float],
                original_metadata: dict | None = None) -> dict:
    """A RosettaSciIO signal dictionary of a 4D scan (navigation axes first), for its writers."""
    nav_units, sig_units = units
    nav_scale, sig_scale = scales
    names = ("y", "x", "dy", "dx")
    axes = [{"name": names[i], "size": data.shape[i], "index_in_array": i, "scale": nav_scale if i < 2 else sig_scale,
             "offset": 0.0, "units": nav_units if i < 2 else sig_units, "navigate": i < 2} for i in range(4)]
    return {"data": data, "axes": axes, "metadata": {"General": {"title": "scan", "date": "2024-01-01",
                                                                  "time": "00:00:00", "time_zone": "UTC"},
                                                      "Signal": {"signal_type": "electron_diffraction"},
                                                      "Acquisition_instrument": {"TEM": {"beam_energy": ENERGY}}},
            "original_metadata": original_metadata or {}, "attributes": {"_lazy": False}}


def test_blockfile_is_read_lazily_with_its_scan_step_and_energy(tmp_path):
    from rsciio.blockfile import file_writer

    expected = cube(dtype=np.uint8)
    header = {"Beam_energy": 200000, "Scan_rotation": 1500, "Note": ""}
    file_writer(str(tmp_path / "s.blo"), signal_dict(expected, ("nm", "cm"), (0.05, 0.01),
                                                     {"blockfile_header": header}), show_progressbar=False)
    scan = io.read_scan(tmp_path / "s.blo")
    assert_scan(scan, expected)
    assert scan.scan_step_A == pytest.approx(0.5)
    assert scan.energy_kev == pytest.approx(ENERGY)
    # A blockfile's detector scale is a length on the screen (cm), not an angle.
    assert scan.q_sampling_mrad is None
    assert any("length on the screen" in note and "--q-pixel-size-mrad" in note for note in scan.notes)
    assert any("15°" in note and "--scan-rotation-deg" in note for note in scan.notes)
    assert scan.scan_rotation_deg == 0.0


def test_ncem_emd_is_read_lazily_and_converts_reciprocal_nm_at_the_beam_energy(tmp_path):
    from rsciio.emd import file_writer

    expected = cube(dtype=np.float32)
    file_writer(str(tmp_path / "s.emd"), signal_dict(expected, ("nm", "1/nm"), (0.04, 0.2)))
    scan = io.read_scan(tmp_path / "s.emd")  # no beam energy in an NCEM file: the flag supplies it
    assert_scan(scan, expected)
    assert scan.scan_step_A == pytest.approx(0.4)
    assert scan.q_sampling_mrad is None and any("--energy-kev" in note for note in scan.notes)
    scan = io.read_scan(tmp_path / "s.emd", energy_kev=ENERGY)
    assert scan.q_sampling_mrad == pytest.approx(mrad(0.02))
    assert any("converted" in note for note in scan.notes)


def write_prismatic(path, data: np.ndarray, step_A: float, q_per_A: float) -> None:
    """Prismatic 2's 4D output: ``4DSTEM_simulation/data/datacubes/CBED_array_depth0000/datacube`` (R_x, R_y,
    Q_x, Q_y), its ``dim1``..``dim4`` (Å, Å⁻¹) and the simulation's parameters (E in keV, sa in mrad)."""
    with h5py.File(path, "w") as f:
        top = f.create_group("4DSTEM_simulation")
        top.attrs["version_major"], top.attrs["version_minor"] = 0, 7
        group = top.create_group("data/datacubes/CBED_array_depth0000")
        group.attrs["emd_group_type"] = 1
        group.create_dataset("datacube", data=data, chunks=(1, 1) + data.shape[2:])
        for k, (name, units, step) in enumerate([("R_x", "[Å]", step_A), ("R_y", "[Å]", step_A),
                                                  ("Q_x", "[Å^-1]", q_per_A), ("Q_y", "[Å^-1]", q_per_A)]):
            n = data.shape[k]
            dim = group.create_dataset(f"dim{k + 1}", data=(np.arange(n) - (n // 2 if k > 1 else 0)) * step)
            dim.attrs["name"], dim.attrs["units"] = name, units
        parameters = top.create_group("metadata/metadata_0/original/simulation_parameters")
        parameters.attrs.update({"E": ENERGY, "sa": 24.0, "rx": step_A, "ry": step_A, "a": "m"})


def test_prismatic_emd_is_read_lazily_with_energy_and_semiangle(tmp_path):
    expected = cube(dtype=np.float32)
    write_prismatic(tmp_path / "sim.emd", expected, step_A=0.3, q_per_A=0.03)
    scan = io.read_scan(tmp_path / "sim.emd")
    assert_scan(scan, expected)  # Prismatic's R_x, R_y, Q_x, Q_y are already py4DSTEM's order
    assert scan.energy_kev == pytest.approx(ENERGY) and scan.semiangle_mrad == pytest.approx(24.0)
    assert scan.q_sampling_mrad == pytest.approx(mrad(0.03))
    assert scan.scan_step_A == pytest.approx(0.3)


def write_empad(directory, data: np.ndarray, fov_m: tuple[float, float], q_per_m: float) -> None:
    """EMPAD: an ``.xml`` naming its ``.raw`` of float32 frames 128 × 130 (two footer rows per frame)."""
    ny, nx = data.shape[:2]
    raw = np.full((ny, nx, 130, 128), -7.0, np.float32)
    raw[:, :, :128] = data
    name = f"scan_x{nx}_y{ny}.raw"
    raw.tofile(directory / name)
    (directory / "acquisition.xml").write_text(
        f'<root><raw_file filename="{name}"/><pix_x>{nx}</pix_x><pix_y>{ny}</pix_y>'
        f"<iom_measurements><optics><get_full_scan_field_of_view>({fov_m[0]}, {fov_m[1]})"
        f"</get_full_scan_field_of_view></optics><calibrated_pixelsize>{q_per_m}</calibrated_pixelsize>"
        "</iom_measurements></root>")


def test_empad_is_read_lazily_from_its_xml_or_its_raw(tmp_path):
    expected = cube(3, 4, 128, 128, dtype=np.float32)
    # 3 lines of 4 positions at 0.5 nm; 0.05 Å⁻¹ = 0.5 nm⁻¹ per detector pixel (the xml stores 1/m · 1e-9)
    write_empad(tmp_path, expected, fov_m=(1.5e-9, 2.0e-9), q_per_m=0.5e-9)
    for given in ("acquisition.xml", "scan_x4_y3.raw"):
        scan = io.read_scan(tmp_path / given, energy_kev=ENERGY)
        assert_scan(scan, expected)
        assert scan.scan_step_A == pytest.approx(5.0)
        assert scan.q_sampling_mrad == pytest.approx(mrad(0.05))


def test_tvips_is_read_lazily_and_notes_that_it_records_no_scan_step(tmp_path):
    from rsciio.tvips import file_writer

    expected = cube(5, 5, dtype=np.uint16)
    signal = signal_dict(expected, ("nm", "1/nm"), (1.0, 1.0))  # TVIPS stores the pixel size as whole 1/nm
    file_writer(str(tmp_path / "s.tvips"), signal, mode=2, show_progressbar=False)
    scan = io.read_scan(tmp_path / "s_000.tvips")
    assert_scan(scan, expected)
    assert scan.energy_kev == pytest.approx(ENERGY)
    assert scan.q_sampling_mrad == pytest.approx(mrad(0.1))
    assert scan.scan_step_A is None and any("TVIPS records no scan step" in n and "--scan-step-A" in n
                                            for n in scan.notes)


def test_arina_master_file_is_read_with_its_scan_step(tmp_path):
    expected = cube(5, 5, dtype=np.uint16)
    frames = expected.reshape(-1, QX, QY)
    for k, part in enumerate((frames[:13], frames[13:]), start=1):
        with h5py.File(tmp_path / f"scan_data_{k:06d}.h5", "w") as f:
            f.create_dataset("entry/data/data", data=part)
    with h5py.File(tmp_path / "scan_master.h5", "w") as f:
        for k in (1, 2):
            f[f"entry/data/data_{k:06d}"] = h5py.ExternalLink(f"scan_data_{k:06d}.h5", "entry/data/data")
    with h5py.File(tmp_path / "scan.h5", "w") as f:
        f.create_group("STEM Metadata").attrs["Pixel Size"] = [0.07]  # nm
    scan = io.read_scan(tmp_path / "scan_master.h5")
    assert_scan(scan, expected, lazy=False)  # RosettaSciIO reads arina into memory only
    assert scan.scan_step_A == pytest.approx(0.7)
    assert scan.q_sampling_mrad is None and any("--q-pixel-size-mrad" in n for n in scan.notes)


# --- errors and lazy data ----------------------------------------------------------------------------------

def test_an_unknown_suffix_is_a_one_line_error_listing_the_known_ones(tmp_path):
    (tmp_path / "scan.tif").write_bytes(b"II*\0")
    with pytest.raises(ValueError) as info:
        io.read_scan(tmp_path / "scan.tif")
    message = str(info.value)
    assert "\n" not in message and "unknown file type '.tif'" in message
    for suffix in formats.known_suffixes():
        assert suffix in message
    assert {".mib", ".blo", ".emd", ".dm4", ".xml", ".tvips", ".h5", ".npy"} <= set(formats.known_suffixes())


@pytest.mark.parametrize("name", ["stack.npy", "stack.emd"])
def test_a_file_without_a_4d_dataset_names_its_shape(tmp_path, name):
    stack = np.zeros((7, 16, 16), np.float32)
    if name.endswith(".npy"):
        np.save(tmp_path / name, stack)
    else:
        from rsciio.emd import file_writer

        axes = [{"name": n, "size": s, "index_in_array": i, "scale": 1.0, "offset": 0.0, "units": "",
                 "navigate": i == 0} for i, (n, s) in enumerate(zip(("t", "dy", "dx"), stack.shape))]
        file_writer(str(tmp_path / name), {"data": stack, "axes": axes, "original_metadata": {},
                                           "metadata": {"General": {"title": "stack"}, "Signal": {}}})
    with pytest.raises(ValueError) as info:
        io.read_scan(tmp_path / name)
    message = str(info.value)
    assert "\n" not in message and "(7, 16, 16)" in message and "4D" in message and ".npy" in message


def test_an_unreadable_file_names_each_reader_tried(tmp_path):
    (tmp_path / "broken.mib").write_bytes(b"not a merlin file")
    with pytest.raises(ValueError) as info:
        io.read_scan(tmp_path / "broken.mib")
    message = str(info.value)
    assert "\n" not in message and "could not be read" in message
    assert "RosettaSciIO Merlin" in message and "py4DSTEM import_file" in message and "export" in message


def test_nan_in_a_lazy_scan_is_reported_by_the_block_that_holds_it(tmp_path):
    data = cube(dtype=np.float32)
    data[3, 2, 5, 5] = np.nan
    np.save(tmp_path / "nan.npy", data)
    scan = io.read_scan(tmp_path / "nan.npy")  # nothing is read yet
    assert scan.lazy
    np.testing.assert_array_equal(scan.rows(0, 3), data[:3])
    with pytest.raises(ValueError, match=r"NaN or inf \(scan rows 2–3\)") as info:
        scan.rows(2, 4)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="NaN or inf"):
        io.Scan(data)  # in memory: refused at once, as before
    with pytest.raises(ValueError, match="not a block"):
        scan.rows(4, RX + 1)


def test_an_in_memory_scan_is_not_lazy():
    scan = io.Scan(cube(dtype=np.float32))
    assert not scan.lazy
    np.testing.assert_array_equal(scan.rows(2, 4), cube(dtype=np.float32)[2:4])


@pytest.mark.parametrize("scale, units, energy, expected", [
    (0.5, "mrad", None, 0.5), (5e-4, "rad", None, 0.5), (500.0, "µrad", None, 0.5), (500.0, "μrad", None, 0.5),
    (0.02, "1/Å", ENERGY, mrad(0.02)), (0.02, "Å^-1", ENERGY, mrad(0.02)), (0.02, "A^-1", ENERGY, mrad(0.02)),
    (0.2, "1 / nm", ENERGY, mrad(0.02)), (0.2, "nm⁻¹", ENERGY, mrad(0.02)), (0.2, "nm-1", ENERGY, mrad(0.02)),
    (0.02, "Å⁻¹", ENERGY, mrad(0.02)), (0.2, "1/nm", None, None), (1.0, "", ENERGY, None),
    (1.0, "<undefined>", ENERGY, None), (0.01, "cm", ENERGY, None), (1.0, "px", ENERGY, None),
])
def test_detector_units_to_mrad(scale, units, energy, expected):
    value, why = formats.angle_mrad(scale, units, energy)
    assert value == (pytest.approx(expected) if expected is not None else None)
    if expected is None:
        assert why


@pytest.mark.parametrize("scale, units, expected", [
    (0.5, "nm", 5.0), (0.5, "Å", 0.5), (0.5, "A", 0.5), (50.0, "pm", 0.5), (0.002, "µm", 20.0), (0.002, "um", 20.0),
    (1.0, "", None), (1.0, "1", None), (1.0, "furlong", None),
])
def test_scan_units_to_angstrom(scale, units, expected):
    value, _ = formats.length_A(scale, units)
    assert value == (pytest.approx(expected) if expected is not None else None)


def test_every_format_is_registered_once_with_its_suffixes():
    names = list(formats.FORMATS)
    assert len(names) == len(set(names))
    for fmt in formats.FORMATS.values():
        assert fmt.suffixes and all(s.startswith(".") and s == s.lower() for s in fmt.suffixes)
    emd = [fmt.name for fmt in formats.formats_for("x.EMD")]
    assert emd[0] == "py4DSTEM EMD 1.0" and "RosettaSciIO EMD (NCEM/Prismatic/Velox)" in emd
    assert [fmt.name for fmt in formats.formats_for("x_master.h5")][:2] == ["py4DSTEM EMD 1.0", "RosettaSciIO arina"]
    json.dumps(formats.known_suffixes())


def test_a_tvips_stack_without_a_square_scan_is_a_one_line_error(tmp_path):
    from rsciio.tvips import file_writer

    stack = cube(2, 3, dtype=np.uint16)  # 6 frames: no square scan
    file_writer(str(tmp_path / "s.tvips"), signal_dict(stack, ("nm", "1/nm"), (1.0, 1.0)), mode=2,
                show_progressbar=False)
    with pytest.raises(ValueError) as info:
        io.read_scan(tmp_path / "s_000.tvips")
    message = str(info.value)
    assert "\n" not in message and "a stack of 6 frames of 16 × 16 px" in message and "4D" in message


def test_a_signal_with_its_scan_axes_last_is_put_scan_first_and_its_metadata_mapping_applied():
    """What RosettaSciIO's DM reader gives (navigate flags, a mapping from the original metadata), here with
    the detector axes first in the array: the scan axes come first, each pair in array order."""
    expected = cube(dtype=np.float32)
    stored = expected.transpose(2, 3, 0, 1)  # (Qx, Qy, Rx, Ry)
    axes = [{"index_in_array": 0, "scale": 5e-4, "units": "rad", "navigate": False},
            {"index_in_array": 1, "scale": 0.5, "units": "mrad", "navigate": False},
            {"index_in_array": 2, "scale": 0.03, "units": "µm", "navigate": True},
            {"index_in_array": 3, "scale": 30.0, "units": "nm", "navigate": True}]
    original = {"Microscope Info": {"Voltage": 300000.0, "Convergence": 21.5}}
    mapping = {"Microscope Info.Voltage": ("Acquisition_instrument.TEM.beam_energy", lambda v: v / 1e3),
               "Microscope Info.Convergence": ("Acquisition_instrument.TEM.convergence_angle", None)}
    signal = {"data": stored, "axes": axes, "metadata": {}, "original_metadata": original, "mapping": mapping}
    scan = formats.scan_from_signal(signal, "dm-like", None)
    np.testing.assert_array_equal(scan.data, expected)
    assert (scan.q_sampling_mrad, scan.scan_step_A) == (pytest.approx(0.5), pytest.approx(300.0))
    assert (scan.energy_kev, scan.semiangle_mrad) == (pytest.approx(300.0), pytest.approx(21.5))
    axes[0]["scale"] = 6e-4  # pixels not square: no single sampling
    assert formats.scan_from_signal(signal, "dm-like", None).q_sampling_mrad is None
