"""The defect chapter's specimens and their ground truth (polar4d_lib.defects)."""

from __future__ import annotations

import numpy as np
import pytest

from polar4d_lib import config, conventions, defects, profiles

A = conventions.A_A


def settings(**changes):
    return defects.DefectSettings.for_profile("smoke", changes)


def test_vacancies_go_where_asked_and_the_truth_counts_them():
    s = settings(cells=3, vacancy_counts=(1, 3), columns_per_count=2)
    specimen = s.specimens()[0]
    asked = np.zeros((3, 3), dtype=int)
    for i, j, count in specimen.vacancies:
        asked[i, j] = count
    assert sorted(asked.ravel().tolist()) == [0] * 5 + [1, 1, 3, 3]
    built = specimen.structure()
    np.testing.assert_array_equal(built.defect_map, asked)
    perfect = 5 * 3 * 3 * (s.o_sites_per_column() // 3)  # 5 atoms per cell
    assert len(built.atoms) == perfect - asked.sum()  # one O fewer per vacancy
    centres = (np.stack(np.meshgrid(np.arange(3), np.arange(3), indexing="ij"), -1).reshape(-1, 2) + 0.5) * A
    truth = specimen.truth(centres)
    np.testing.assert_array_equal(truth["vacancies"].reshape(3, 3), asked)
    assert np.isinf(truth["wall_distance_cells"]).all()


def test_a_cluster_is_a_block_of_neighbouring_columns():
    s = settings(cells=4, cluster_columns=2, cluster_count=3)
    (cluster,) = [x for x in s.specimens() if x.kind == "cluster"]
    columns = {(i, j) for i, j, _ in cluster.vacancies}
    assert len(columns) == 4 and {c for _, _, c in cluster.vacancies} == {3}
    blocks = [{((i0 + di) % 4, (j0 + dj) % 4) for di in (0, 1) for dj in (0, 1)} for i0 in range(4) for j0 in range(4)]
    assert columns in blocks  # 2 × 2 neighbouring columns (periodic)
    np.testing.assert_array_equal(np.sort(cluster.structure().defect_map.ravel())[-4:], [3, 3, 3, 3])
    with pytest.raises(ValueError, match="leaves no perfect column"):
        settings(cells=2, cluster_columns=2).specimens()


def test_too_many_vacancies_for_a_column_are_refused():
    s = settings(vacancy_counts=(99,), columns_per_count=1)
    with pytest.raises(ValueError, match="99 vacancies do not fit a column of 5 cells"):
        s.specimens()[0].structure()


def test_the_wall_truth_is_the_distance_to_the_nearest_plane():
    s = settings(cells=4, walls=((0, 3, "x"),))
    wall = s.specimens()[-1]
    assert wall.name == "90° neutral wall RU | RD (normal x)"
    assert defects.wall_is_neutral(0, 3, "x") and not defects.wall_is_neutral(0, 2, "x")
    x = np.array([0.25, 1.0, 1.9, 2.0, 2.5, 3.75]) * A
    truth = wall.truth(np.stack([x, np.full_like(x, 1.3)], -1))
    np.testing.assert_allclose(truth["wall_distance_cells"], [0.25, 1.0, 0.1, 0.0, 0.5, 0.25])
    np.testing.assert_array_equal(truth["class"], [1, 1, 1, 7, 7, 7])  # RU below the wall at 2 cells, RD above


def test_locate_wall_finds_a_clean_step_and_wall_planes_lists_the_crossed_ones():
    x = 0.3 + np.arange(32) / 8  # a raster from 0.3 cells at a/8 over 4 cells
    classes = np.where(x[:, None] < 2.0, 1, 7) * np.ones((1, 5), dtype=int)
    found, agree = defects.locate_wall(classes, x, 2.0, 1, 7, 1.0)
    assert agree == 1.0 and abs(found - 2.0) <= 1 / 16
    s = settings(cells=4, walls=((0, 3, "x"),))
    planes = defects.wall_planes(s.specimens()[-1], x)
    assert planes == [(2.0, 1, 7)]  # the plane at 4 cells lies within half a cell of the raster's end
    assert defects.wall_planes(s.specimens()[-1], x - 0.3 + 0.8) == [(2.0, 1, 7), (4.0, 7, 1)]


def test_settings_of_every_profile_load():
    for profile in profiles.names():
        if profiles.section(profile, "defects"):
            s = defects.DefectSettings.for_profile(profile)
            kinds = [specimen.kind for specimen in s.specimens()]
            assert kinds == ["vacancies"] + ["cluster"] * bool(s.cluster_columns) + ["wall"] * len(s.walls)
    with pytest.raises(KeyError, match="bogus"):
        defects.DefectSettings.for_profile("smoke", {"bogus": 1})


@pytest.mark.slow
def test_smoke_scans_carry_truth_of_their_shape(smoke_book):
    s = settings()
    with config.set({"progress_bar": False}):  # the smoke book's chapter simulated them into its cache
        scans = defects.build(s, cache_dir=smoke_book / "cache")
    assert len(scans) == (2 + len(s.walls)) * len(s.steps_per_cell) * len(s.doses)
    for item in scans:
        shape = item.scan.data.shape[:2]
        per_side = int(round(s.cells * item.positions_per_cell))
        assert shape == (per_side, per_side)
        assert {k: v.shape for k, v in item.truth.items()} == {k: shape for k in ("class", "vacancies", "wall_distance_cells")}
        if item.specimen == "vacancies":
            assert item.truth["vacancies"].max() == max(s.vacancy_counts)
        if item.specimen.startswith("vacancy cluster"):
            assert set(np.unique(item.truth["vacancies"])) == {0, s.cluster_count}


@pytest.fixture(scope="module")
def chapter(smoke_book):
    import json

    return json.loads((smoke_book / "results" / "smoke" / "defects.json").read_text())


@pytest.mark.slow
def test_the_chapter_records_the_issue_keys_for_every_score_and_model(chapter):
    from polar4d_lib import irregularity

    s = settings()
    assert {"roc_auc", "auc_vs_vacancies", "wall_localisation_cells", "detection_limit"} <= set(chapter)
    assert chapter["scores"] == list(irregularity.SCORES) + ["kNN distance"]
    assert chapter["predict_score"] == irregularity.DEFAULT
    assert chapter["targets"] == ["vacancies", "clustered vacancies", "walls"]
    models = chapter["models"]
    assert len(models) >= 4 and models[-1] == "cnn-stack (shipped)"
    for score in chapter["scores"]:
        assert set(chapter["roc_auc"][score]) == set(models)
        for per_target in chapter["roc_auc"][score].values():
            assert set(per_target) == set(chapter["targets"])
            assert all(v is None or 0.0 <= v <= 1.0 for v in per_target.values())
    assert set(chapter["auc_vs_vacancies"]) == {f"{d:g}" for d in s.doses}
    for per_model in chapter["auc_vs_vacancies"].values():
        assert all(set(curve) == {str(c) for c in s.vacancy_counts} for curve in per_model.values())
    walls = chapter["wall_localisation_cells"]
    assert walls, "the smoke wall scans cross a wall plane"
    for column, per_window in walls.items():
        assert column in models and set(per_window) == {"own", "1 cell(s)", "2 cell(s)"}
        assert all(0.0 <= v <= s.cells / 4 for v in per_window.values())
    assert chapter["refused"]["cnn-stack (shipped)"].startswith("the scan has 2.00 probe positions per unit cell")
