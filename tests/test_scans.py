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
