"""The shipped default model: `polar4d default-model` retrains it end to end on the smoke profile (train the
candidates, score them on realistic scans, keep the most robust, write the model card), `polar4d predict`
uses the result, and the shipped model in data/ is what its card says."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from polar4d_lib import cli, io, pacbed, realistic
from polar4d_lib.datasets import open_dataset
from polar4d_lib.models import load_model

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def retrained(smoke_dataset, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("default_model")
    out = tmp / "default_model.pt"
    code = cli.main(["default-model", "--data", str(smoke_dataset.path), "--profile", "smoke", "--out", str(out)])
    assert code == 0
    return tmp, json.loads((tmp / "MODEL_CARD.json").read_text())


def test_retraining_on_smoke_writes_the_most_robust_candidate_and_its_card(retrained):
    tmp, numbers = retrained
    kinds = [c["kind"] for c in numbers["candidates"]]
    assert kinds == ["linear", "cnn-cls", "pca-knn", "physics"]
    best = max(numbers["candidates"], key=lambda c: c["realistic"]["mean_share_correct"])
    assert numbers["chosen"] == best["kind"]
    model = load_model(numbers["model"])
    assert model.kind == numbers["chosen"]
    assert model.preprocessor.average_window_A == pytest.approx(3.95)
    # the electrons per window come from the profile's grid, chosen on the realistic scans
    assert model.preprocessor.average_min_electrons == best["min_electrons"] and best["min_electrons"] in (1e6, 4e6)
    assert model.metadata["realistic"] == best["realistic"]
    assert numbers["train_settings"]["d4_average"] is True  # the smoke recipe's networks average over D4, as the robust one's
    assert not list(tmp.glob("*.checkpoint"))
    card = (tmp / "MODEL_CARD.md").read_text()
    assert f"# polar4d default model: {numbers['chosen']}" in card
    assert "polar4d default-model --data" in card and "--profile smoke" in card
    assert numbers["dataset_sha256"] in card
    assert numbers["dataset_parameters"]["patterns"] == len(open_dataset(numbers["data"]))
    assert '"phonon_configs": 0' in card
    assert "not met" in card  # a smoke model is nowhere near the 95 % aim, and the card says so
    chosen = next(c for c in numbers["candidates"] if c["kind"] == numbers["chosen"])
    assert f"By scan step: 1.98 Å (4 scans): {100 * chosen['realistic']['mean_share_correct']:.1f} % of patterns right" in card
    assert "Steps below λ/(2α) = 0.52 Å (200 keV, 24 mrad) average a cell the same wherever the raster sits" in card
    for c in numbers["candidates"]:
        share = c["realistic"]["mean_share_correct"]
        assert f"| {c['kind']} | " in card and f"{100 * share:.1f} %" in card
        assert len(c["scans"]) == c["realistic"]["scans"] == 4  # 2 classes × 2 thicknesses
        assert c["realistic"]["mean_share_correct"] == pytest.approx(np.mean([r["share_correct"] for r in c["scans"]]))


def test_each_candidate_asks_for_the_electrons_per_window_that_score_best_on_the_choosing_scans(retrained):
    tmp, numbers = retrained
    for c in numbers["candidates"]:  # every smoke candidate averages positions (physics included)
        grid = c["window_choice"]
        assert list(grid) == ["1e+06", "4e+06"]
        shares = {float(e): s["mean_share_correct"] for e, s in grid.items()}
        top = max(shares.values())
        assert c["min_electrons"] == min(e for e, share in shares.items() if share == top)  # a tie: the finer map
        assert c["realistic"] == grid[f"{c['min_electrons']:g}"]
        assert all(r["window_px"] >= 1 for r in c["scans"])
    chosen = next(c for c in numbers["candidates"] if c["kind"] == numbers["chosen"])
    card = (tmp / "MODEL_CARD.md").read_text()
    assert ("Electrons per window, chosen on the realistic scans below" in card
            and f"1e+06 e: {100 * chosen['window_choice']['1e+06']['mean_share_correct']:.1f} %" in card)


def test_a_window_grows_with_the_electrons_it_must_hold():
    # the smoke scans at a/4: the shipped stack model folds a cell into 4 × 4 parts, a/2 is refused
    scans = realistic.realistic_scans(realistic.RealisticRanges.for_profile("smoke", {"step_A": 0.9875}))
    model = load_model(cli.default_model_path())
    windows = {}
    for electrons in (1e6, 1e8):
        model.preprocessor.average_min_electrons = electrons
        windows[electrons] = [r["window_px"] for r in realistic.score_scans(model, scans)]
    assert all(b >= a for a, b in zip(windows[1e6], windows[1e8])) and windows[1e8] != windows[1e6]


def test_the_card_scores_the_chosen_model_on_independent_test_scans(retrained):
    tmp, numbers = retrained
    chosen = next(c for c in numbers["candidates"] if c["kind"] == numbers["chosen"])
    test = numbers["test"]
    assert test["realistic_ranges"]["seed"] == 2027 and test["realistic_ranges"]["disorder_seeds"] == [103]
    assert len(test["scans"]) == test["realistic"]["scans"] == 4  # 2 classes × 2 thicknesses, like the choosing set
    assert test["realistic"]["mean_share_correct"] == pytest.approx(np.mean([r["share_correct"] for r in test["scans"]]))
    assert {r["disorder_seed"] for r in test["scans"]} == {103}
    assert {r["disorder_seed"] for r in chosen["scans"]}.isdisjoint({103})
    # another draw: its detectors differ from the choosing set's scan for scan
    assert [r["dose_e_per_pattern"] for r in test["scans"]] != [r["dose_e_per_pattern"] for r in chosen["scans"]]
    assert load_model(numbers["model"]).metadata["realistic_test"] == test["realistic"]
    card = (tmp / "MODEL_CARD.md").read_text()
    assert "## Independent test scans (nothing is chosen on these)" in card
    t = test["realistic"]
    assert (f"Test summary: {100 * t['mean_share_correct']:.1f} % of patterns right on average (worst scan "
            f"{100 * t['min_share_correct']:.1f} %)") in card
    assert "judged on the independent test scans: **not met**" in card


def test_retest_scores_a_built_model_on_a_new_test_draw_and_changes_nothing_else(retrained, tmp_path, monkeypatch, capsys):
    tmp, numbers = retrained
    built = Path(numbers["model"])  # .pt or .npz, whichever candidate won
    for path in (built, tmp / "MODEL_CARD.json", tmp / "MODEL_CARD.md"):
        shutil.copy(path, tmp_path / path.name)
    out = tmp_path / built.name
    drawn = realistic.test_ranges

    def other_draw(profile):
        return replace(drawn(profile), seed=2030, disorder_seeds=(104,))
    monkeypatch.setattr(realistic, "test_ranges", other_draw)
    assert cli.main(["default-model", "--profile", "smoke", "--out", str(out), "--retest"]) == 0
    assert "scored" in capsys.readouterr().out
    again = json.loads((tmp_path / "MODEL_CARD.json").read_text())
    test = again.pop("test")
    assert again == {k: v for k, v in numbers.items() if k != "test"}  # nothing but the test section changes
    assert test["realistic_ranges"]["seed"] == 2030 and {r["disorder_seed"] for r in test["scans"]} == {104}
    assert test["command"].endswith("--retest") and f"Scored by `{test['command']}`" in (tmp_path / "MODEL_CARD.md").read_text()
    before, after = load_model(built), load_model(out)
    assert after.metadata["realistic_test"] == test["realistic"] != before.metadata["realistic_test"]
    for key, value in before._state().items():  # the same weights
        np.testing.assert_array_equal(after._state()[key], value)
    # a card named by its .json (which the Markdown would overwrite) is refused without touching it
    card_numbers = (tmp_path / "MODEL_CARD.json").read_bytes()
    assert cli.main(["default-model", "--profile", "smoke", "--out", str(out), "--card", str(tmp_path / "MODEL_CARD.json"),
                     "--retest"]) == 2
    assert "pass the Markdown card" in capsys.readouterr().err
    assert (tmp_path / "MODEL_CARD.json").read_bytes() == card_numbers
    # a card of another profile, and a model with no card, are refused without touching anything
    assert cli.main(["default-model", "--profile", "robust", "--out", str(out), "--retest"]) == 2
    assert "is for a" in capsys.readouterr().err and load_model(out).metadata == after.metadata
    (tmp_path / "MODEL_CARD.json").unlink()
    assert cli.main(["default-model", "--profile", "smoke", "--out", str(out), "--retest"]) == 2
    assert "build it first" in capsys.readouterr().err
    assert cli.main(["default-model", "--profile", "smoke", "--out", str(out)]) == 2
    assert "needs --data" in capsys.readouterr().err


def test_add_trains_only_the_named_candidates_and_chooses_among_all(retrained, smoke_dataset, tmp_path, capsys):
    tmp, numbers = retrained
    built = Path(numbers["model"])
    for path in (built, tmp / "MODEL_CARD.json", tmp / "MODEL_CARD.md"):
        shutil.copy(path, tmp_path / path.name)
    out = tmp_path / built.name
    args = ["default-model", "--data", str(smoke_dataset.path), "--profile", "smoke", "--out", str(out)]
    assert cli.main(args + ["--add", "--candidates", "physics"]) == 0
    again = json.loads((tmp_path / "MODEL_CARD.json").read_text())
    kept = [c for c in numbers["candidates"] if c["kind"] != "physics"]
    assert [c["kind"] for c in again["candidates"]] == [c["kind"] for c in kept] + ["physics"]
    assert again["candidates"][:-1] == kept  # the earlier rows are kept as they were, not retrained
    best = max(again["candidates"], key=lambda c: c["realistic"]["mean_share_correct"])
    assert again["chosen"] == best["kind"] and load_model(again["model"]).kind == best["kind"]
    assert again["command"] == numbers["command"] and again["added_by"].endswith("--add --candidates physics")
    assert f"candidates added by `{again['added_by']}`" in (tmp_path / "MODEL_CARD.md").read_text()
    # only candidates trained alike are compared; a card is needed
    assert cli.main(args + ["--add", "--candidates", "physics", "--seed", "1"]) == 2
    assert "trained alike" in capsys.readouterr().err
    (tmp_path / "MODEL_CARD.json").unlink()
    assert cli.main(args + ["--add", "--candidates", "physics"]) == 2
    assert "build it first (without --add)" in capsys.readouterr().err


def test_the_profiles_say_which_candidates_compete():
    from polar4d_lib.default_model import DEFAULT_CANDIDATES, candidates_for, training_stage

    assert candidates_for("smoke") == DEFAULT_CANDIDATES  # the smoke dataset has no cell rasters to fold
    assert candidates_for("robust") == DEFAULT_CANDIDATES + ("cnn-stack",)
    assert training_stage("cnn-stack") == "stack_model" and training_stage("cnn-cls") == "default_model"


@pytest.mark.parametrize("profile", ["smoke", "robust"])
def test_the_test_scans_share_no_disorder_seed_with_training_or_the_choosing_scans(profile):
    from polar4d_lib.datasets import spec_for_profile

    test, choosing = realistic.test_ranges(profile), realistic.RealisticRanges.for_profile(profile)
    assert test.seed != choosing.seed
    assert set(test.disorder_seeds).isdisjoint(choosing.disorder_seeds)
    assert set(test.disorder_seeds).isdisjoint(spec_for_profile(profile).disorder_seeds)
    # everything but the draw (including where each raster starts) and its size is the same, so the two
    # sets measure the same thing; a random start only removes the choosing scans' one fixed origin
    draw = ("seed", "disorder_seeds", "specimens_per_class", "random_origin")
    assert {k: v for k, v in vars(test).items() if k not in draw} == {k: v for k, v in vars(choosing).items() if k not in draw}


def test_the_retrained_model_predicts_a_realistic_scan_through_the_cli(retrained, capsys):
    tmp, numbers = retrained
    item = realistic.realistic_scans(realistic.RealisticRanges.for_profile("smoke"))[1]
    assert item.scan.scan_step_A is None  # every other scan has no step: the window comes from the lattice
    np.save(tmp / "scan.npy", item.scan.data)
    code = cli.main(["predict", str(tmp / "scan.npy"), "--out", str(tmp / "pred.npz"), "--model", numbers["model"],
                     "--q-pixel-size-mrad", str(item.scan.q_sampling_mrad)])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    # the smoke scans step a/2 = 1.98 Å: coarser than λ/(2α) = 0.52 Å, which predict says on one line
    # (the period is read to a fraction of a position, so the step to about ±0.02 Å)
    step = re.search(r"warning: scan step ([0-9.]+) Å \(one cell of 3\.95 Å over the lattice period", err)
    assert step is not None, err
    assert float(step.group(1)) == pytest.approx(3.95 / 2, abs=0.02)
    # a 4 × 4-position scan cannot hold the electrons the model asks of a window, which predict says too
    lines = err.splitlines()
    assert len(lines) == 2 and "fewer than the" in lines[1] and "every position gets the one mean of the whole scan" in lines[1]
    assert "λ/(2α) = 0.52 Å at 200 keV, 24 mrad (assumed" in err
    result = io.read_predictions(tmp / "pred.npz")
    assert result["metadata"]["coarse_step_warning"] in err and result["metadata"]["low_dose_warning"] in err
    assert result["class_map"].shape == item.scan.data.shape[:2]
    row = next(r for c in numbers["candidates"] if c["kind"] == numbers["chosen"] for r in c["scans"] if r["scan"] == item.name)
    assert result["metadata"]["average_window_px"] == row["window_px"]
    assert np.mean(result["class_map"] == item.label) == pytest.approx(row["share_correct"])


def test_default_model_refuses_unknown_candidates_before_training(smoke_dataset, tmp_path, capsys):
    code = cli.main(["default-model", "--data", str(smoke_dataset.path), "--profile", "smoke", "--candidates", "cnn-foo",
                     "--out", str(tmp_path / "m.pt")])
    assert code == 2 and "cnn-foo" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()


def test_the_shipped_model_is_what_its_card_says():
    card_path = ROOT / "data" / "MODEL_CARD.json"
    numbers = json.loads(card_path.read_text())
    path = cli.default_model_path()
    assert path.exists() and path.stat().st_size < 10e6  # a few MB at most
    model = load_model(path)
    assert model.kind == numbers["chosen"]
    assert model.preprocessor.to_dict() == numbers["preprocessor"]
    chosen = next(c for c in numbers["candidates"] if c["kind"] == numbers["chosen"])
    assert model.metadata["realistic"] == chosen["realistic"]
    assert model.metadata["dataset_sha256"] == numbers["dataset_sha256"]
    assert chosen["realistic"]["mean_share_correct"] == max(c["realistic"]["mean_share_correct"] for c in numbers["candidates"])
    card = (ROOT / "data" / "MODEL_CARD.md").read_text()
    assert numbers["command"] in card and f"# polar4d default model: {numbers['chosen']}" in card


def test_the_shipped_card_regenerates_from_its_numbers_byte_for_byte():
    from polar4d_lib import model_card

    card = ROOT / "data" / "MODEL_CARD.md"
    assert model_card.markdown(model_card.read(card)).encode("utf-8") == card.read_bytes()


def test_the_card_reports_every_off_grid_step_and_where_the_aim_is_missed():
    from polar4d_lib import model_card

    numbers = model_card.read(ROOT / "data" / "MODEL_CARD.md")
    steps = [{"step_A": 0.4, "scans": 16, "mean_share_correct": 0.981, "min_share_correct": 0.729, "majority_correct": 1.0},
             {"step_A": 0.75, "scans": 16, "mean_share_correct": 0.838, "min_share_correct": 0.0, "majority_correct": 0.9375}]
    numbers["off_grid"] = {"steps": steps, "thicknesses_nm": [20.0, 40.0], "seed": 2031,
                           "measured_by": "`python benchmarks/off_grid_scans.py`", "commit": "abc1234"}
    card = model_card.markdown(numbers)
    assert "| 0.4 Å | 9.9 | 16 | 98.1 % | 72.9 % | 100.0 % |" in card
    assert "| 0.75 Å | 5.3 | 16 | 83.8 % | 0.0 % | 93.8 % |" in card
    assert "not met at 0.75 Å." in card and "at commit abc1234" in card
    assert "fewer than 4 positions per cell (steps coarser than a/4, 0.99 Å) are refused" in card
    numbers["off_grid"]["steps"] = steps[:1]
    assert "95.0 % of patterns and every scan's majority at every step: met." in model_card.markdown(numbers)
    numbers["off_grid"]["steps"] = [{**steps[0], "majority_correct": 0.9375}]  # every pattern share met, a majority not
    assert "not met at 0.4 Å." in model_card.markdown(numbers)


def _smoke_scans_at_a4() -> list:
    """The smoke realistic scans at a/4 (2 × 2 cells, 8 × 8 positions): the shipped stack model folds a cell
    into 4 × 4 parts and refuses coarser steps."""
    return realistic.realistic_scans(realistic.RealisticRanges.for_profile("smoke", {"step_A": 0.9875}))


def test_predict_without_model_uses_the_shipped_model(tmp_path, capsys):
    item = _smoke_scans_at_a4()[0]
    np.save(tmp_path / "scan.npy", item.scan.data)
    code = cli.main(["predict", str(tmp_path / "scan.npy"), "--out", str(tmp_path / "pred.npz"),
                     "--q-pixel-size-mrad", str(item.scan.q_sampling_mrad), "--scan-step-A", "0.9875"])
    out, err = capsys.readouterr()
    assert code == 0, err
    shipped = load_model(cli.default_model_path())
    # one cell of 3.95 Å: 4 positions at 0.9875 Å, times whole cells until the window holds the electrons
    # the model asks for at this scan's dose (at most the scan), folded at a period of 4 positions
    n, _ = pacbed.window_px(3.95, 0.9875, item.scan.data, shipped.preprocessor.average_min_electrons,
                            whole_cell=shipped.input_kind.folds_cell)
    assert n % 4 == 0 and f"{n} × {n} positions" in out
    metadata = io.read_predictions(tmp_path / "pred.npz")["metadata"]
    assert metadata["model_kind"] == shipped.kind
    assert metadata["average_window_px"] == n
    if shipped.input_kind.folds_cell:  # keeps the cell's parts apart: nothing aliases, nothing to warn about
        assert metadata["cell_period_px"] == pytest.approx(4.0) and metadata["coarse_step_warning"] is None
        # a step of a/2 leaves 2 positions per cell side: refused, naming the step that works
        code = cli.main(["predict", str(tmp_path / "scan.npy"), "--out", str(tmp_path / "coarse.npz"),
                         "--q-pixel-size-mrad", str(item.scan.q_sampling_mrad), "--scan-step-A", "1.975"])
        assert code == 2 and "scan at steps ≤ 0.99 Å" in capsys.readouterr().err
        assert not (tmp_path / "coarse.npz").exists()
    else:  # a model of means warns that the a/4 mean depends on where the raster sits
        assert "warning: scan step 0.99 Å is not below λ/(2α) = 0.52 Å" in err
        assert metadata["coarse_step_warning"] in err


def test_predict_warns_when_the_whole_scan_holds_fewer_electrons_than_a_window_needs():
    from polar4d_lib.predict import predict_scan

    model = load_model(cli.default_model_path())
    item = min(_smoke_scans_at_a4(), key=lambda s: pacbed.dose_per_pattern(s.scan.data))
    rx, ry = item.scan.data.shape[:2]
    dose = pacbed.dose_per_pattern(item.scan.data)
    assert dose * rx * ry < model.preprocessor.average_min_electrons  # the smoke scan is small and dim
    warning = predict_scan(model, item.scan).metadata["low_dose_warning"]
    assert warning.startswith(f"the scan ({rx} × {ry} positions at {dose:.3g} e/pattern) holds {dose * rx * ry:.2g} electrons")
    # the same scan counted 10^4 times longer holds enough: the window fits in the scan, no warning
    brighter = io.Scan(item.scan.data * 1e4, item.scan.q_sampling_mrad, scan_step_A=item.scan.scan_step_A)
    assert predict_scan(model, brighter).metadata["low_dose_warning"] is None
    # a window given by hand is the user's choice: nothing to warn about
    assert predict_scan(model, item.scan, window_px=4).metadata["low_dose_warning"] is None
