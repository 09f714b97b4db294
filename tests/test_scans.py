"""Raster scans over a region of a supercell (for defects and domains)."""

from __future__ import annotations

import numpy as np
import pytest

from polar4d_lib import simulation as sim
from polar4d_lib.structure import OxygenVacancy, knn_supercell


def test_region_grid_is_x_major_with_the_stated_shape():
    positions, shape = sim.region_grid_positions((1.0, 2.0), (3.0, 2.0), 1.0)
    assert shape == (3, 2)
    np.testing.assert_allclose(positions, [[1, 2], [1, 3], [2, 2], [2, 3], [3, 2], [3, 3]])
    with pytest.raises(ValueError, match="step"):
        sim.region_grid_positions((0, 0), (1, 1), 0.0)


def test_scan_4d_is_the_same_by_prism_and_multislice_and_sees_a_vacancy():
    a = 3.95
    clean = knn_supercell(0, 2, 1.6, k_fraction=1.0)
    defect = knn_supercell(0, 2, 1.6, k_fraction=1.0, vacancies=[OxygenVacancy((0, 0, 1), "z")])
    positions, shape = sim.region_grid_positions((0.0, 0.0), (a, a), a / 2)
    probe, settings = sim.ProbeSettings(defocus_nm=1.0), sim.SimulationSettings()
    prism = sim.scan_4d(defect.atoms, probe, positions, shape, settings, a, [0.8, 1.6], engine="prism")
    multi = sim.scan_4d(defect.atoms, probe, positions, shape, settings, a, [0.8, 1.6], engine="multislice")
    assert prism.shape == (2, 2, 2, 64, 64)
    assert np.abs(prism - multi).max() < 1e-4 * multi.max()
    perfect = sim.scan_4d(clean.atoms, probe, positions, shape, settings, a, [0.8, 1.6])
    # The vacancy (above the Nb column at (a/2, a/2)) changes the pattern there, clearly more than round-off.
    change = np.abs(multi - perfect).sum(axis=(-2, -1)) / perfect.sum(axis=(-2, -1))
    assert change[-1, 1, 1] > 1e-3
    with pytest.raises(ValueError, match="engine"):
        sim.scan_4d(clean.atoms, probe, positions, shape, settings, a, [1.6], engine="bloch")


def test_prism_builds_an_s_matrix_larger_than_one_dask_chunk():
    """abTEM 1.0.11 cannot join a multi-plane S-matrix that spans several dask chunks (128 MB by default);
    PrismSpecimen builds it as one chunk. 5 × 5 cells, 3 exit planes: about 185 MB."""
    import abtem

    specimen = knn_supercell(0, 5, 1.6)
    with abtem.config.set({"dask.chunk-size": "128 MB"}):
        prism = sim.PrismSpecimen(specimen.atoms, sim.SimulationSettings(), 3.95, [0.79, 1.58])
    assert prism.nbytes > 128e6
    patterns = prism.patterns(sim.ProbeSettings(), np.array([[1.0, 1.0]]))
    assert patterns.shape == (2, 1, 64, 64) and np.isfinite(patterns).all()
