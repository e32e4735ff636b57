"""``opsef models``: cards beside the weights, listing every place models live, and the leaderboard of
``opsef models evaluate`` (built on the run engine) on the demo nuclei."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from opsef_core.cli import main
from opsef_core.models import file_checksum, project_models_dir, resolve_model
from opsef_core.zoo.cards import card_is_current, model_folders, object_diameter, write_cards
from opsef_core.zoo.listing import find_models, format_models

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
NUCLEI = REPO / "demo_data" / "nuclei2d"


def _median_equivalent_diameter(label_files) -> float:
    """Independent reference: scikit-image's equivalent diameter, median over every object."""
    from skimage.measure import regionprops

    d = [r.equivalent_diameter_area for f in label_files for r in regionprops(tifffile.imread(f))]
    return float(np.median(d))


# ----------------------------------------------------------------------------- cards
def test_bundled_cards_are_current():
    """Every model folder in models/ (those added later too) has a card equal to what the builder gives.

    Regenerate with ``opsef models cards``.
    """
    folders = model_folders(MODELS)
    assert {"stardist2d_demo", "cellpose_demo", "unet2d_demo"} <= {f.name for f in folders}
    stale = [f.name for f in folders if not card_is_current(f)]
    assert not stale, f"stale or missing card.json in {stale}: run 'opsef models cards'"


@pytest.mark.parametrize("name", ["stardist2d_demo", "unet2d_demo", "cellpose_demo", "stardist3d_demo"])
def test_card_fields_come_from_the_model_files(name):
    folder = MODELS / name
    card = json.loads((folder / "card.json").read_text())
    training = json.loads((folder / "training.json").read_text())
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    backend = {"stardist2d_demo": "stardist", "stardist3d_demo": "stardist", "unet2d_demo": "unet",
               "cellpose_demo": "cellpose"}[name]
    assert card["backend"] == backend and card["name"] == name
    assert card["sha256"] == resolve_model(backend, name).checksum  # what run records hold
    assert card["dims"] == config.get("n_dim", config.get("dims", 2))
    train = training.get("train_names") or training.get("train")
    assert card["training_data"]["train"] == train
    dims = card["dims"]
    if dims == 2:
        labels = [NUCLEI / "labels" / f"{n}.tif" for n in train + card["training_data"]["validation"]]
        ps = tifffile.TiffFile(NUCLEI / "images" / f"{train[0]}.tif").pages[0].tags["XResolution"].value
        assert card["expects"]["pixel_size"]["X"] == pytest.approx(ps[1] / ps[0])
        if backend == "cellpose":  # the network's own size convention
            assert card["expects"]["object_diameter_px"] == pytest.approx(training["diam_mean"], abs=0.01)
        else:
            assert card["expects"]["object_diameter_px"] == pytest.approx(_median_equivalent_diameter(labels),
                                                                          abs=0.01)
    if backend == "stardist":
        thr = json.loads((folder / "thresholds.json").read_text())
        assert card["recommended"]["prob_thresh"] == pytest.approx(thr["prob"], abs=1e-4)
        assert card["validation"]["validation_f1@0.5"] == training["validation_f1@0.5"]
    assert card["training"]["options"] == training["params"]
    assert card["training"]["seed"] == training.get("seed", training["params"].get("seed"))
    # scores on data never trained on, with their targets, when the trainer recorded them
    assert card["test"] == {k: training[k] for k in ("heldout", "unseen_test", "targets") if k in training}


def test_listing_shows_the_test_score_before_the_validation_score():
    cards = {c["name"]: c for c in find_models(caches=False)}
    table = {line.split()[0]: line for line in format_models(list(cards.values())).splitlines()[1:]}
    for name, card in cards.items():
        held, unseen = card["test"].get("heldout"), card["test"].get("unseen_test")
        if held:
            assert f"held-out F1@0.5 {held['f1@0.5']:.3f}" in table[name]
        elif unseen:
            assert f"unseen JCD {unseen['jcd_mean']:.3f}" in table[name]
        elif "validation_f1@0.5" in card["validation"]:
            assert f"val F1@0.5 {card['validation']['validation_f1@0.5']:.3f}" in table[name]
    assert any(c["test"].get("heldout") for c in cards.values())  # the 3D demo models record one


def test_writing_a_card_keeps_the_model_checksum(tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(MODELS / "unet2d_demo", folder, ignore=shutil.ignore_patterns("card.json"))
    before = file_checksum(folder)
    write_cards(tmp_path)
    assert (folder / "card.json").is_file() and card_is_current(folder)
    assert file_checksum(folder) == before == json.loads((folder / "card.json").read_text())["sha256"]
    # changing the weights makes the card stale
    w = folder / "weights.pt"
    data = w.read_bytes()
    st = w.stat()
    w.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    os.utime(w, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000))  # coarse file-system clocks
    assert not card_is_current(folder)


def test_object_diameter_2d_and_3d():
    lab = np.zeros((40, 40), np.int32)
    lab[:10, :10] = 1  # 100 px
    lab[20:30, 20:30] = 2
    assert object_diameter([lab]) == pytest.approx(2 * np.sqrt(100 / np.pi), abs=0.01)
    vol = np.zeros((10, 10, 10), np.int32)
    vol[:4, :4, :4] = 3  # 64 voxels
    assert object_diameter([vol]) == pytest.approx((6 * 64 / np.pi) ** (1 / 3), abs=0.01)
    assert object_diameter([np.zeros((4, 4), int)]) is None


# ----------------------------------------------------------------------------- listing
@pytest.fixture
def places(tmp_path, monkeypatch):
    """A project models/ with two models, a Cellpose cache with one file, a Keras cache with one StarDist."""
    project = tmp_path / "project_models"
    project.mkdir()
    (project / "unet2d_demo").symlink_to(MODELS / "unet2d_demo")
    (project / "new_unet").symlink_to(MODELS / "unet2d_demo")  # a folder appearing under models/
    cp_cache = tmp_path / "cellpose_cache"
    cp_cache.mkdir()
    shutil.copy(MODELS / "cellpose_demo" / "weights.pth", cp_cache / "mynucleitorch_0")
    (cp_cache / "size_mynucleitorch_0.npy").write_bytes(b"x")
    keras = tmp_path / "keras"
    sd = keras / "models" / "StarDist2D" / "my_versatile" / "my_versatile"
    sd.parent.mkdir(parents=True)
    sd.symlink_to(MODELS / "stardist2d_demo")
    monkeypatch.setenv("OPSEF_MODELS_DIR", str(project))
    monkeypatch.setenv("CELLPOSE_LOCAL_MODELS_PATH", str(cp_cache))
    monkeypatch.setenv("KERAS_HOME", str(keras))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return {"project": project, "cellpose": cp_cache, "keras": keras}


def test_listing_finds_project_caches_and_paths(places, tmp_path):
    extra = tmp_path / "elsewhere"
    extra.mkdir()
    (extra / "sd3d").symlink_to(MODELS / "stardist3d_demo")
    found = {c["name"]: c for c in find_models([extra])}
    assert set(found) == {"unet2d_demo", "new_unet", "mynucleitorch_0", "my_versatile", "sd3d"}
    assert found["unet2d_demo"]["source"] == "project" and found["unet2d_demo"]["card_file"] == "card.json"
    assert found["new_unet"]["card_file"] == "built"  # no card yet: built on the spot
    assert found["new_unet"]["sha256"] == found["unet2d_demo"]["sha256"]
    assert found["mynucleitorch_0"]["backend"] == "cellpose" and found["mynucleitorch_0"]["source"] == "cache"
    assert found["mynucleitorch_0"]["sha256"] == file_checksum(places["cellpose"] / "mynucleitorch_0")
    assert found["my_versatile"]["backend"] == "stardist" and found["my_versatile"]["source"] == "cache"
    assert found["sd3d"]["dims"] == 3 and found["sd3d"]["source"] == "path"
    assert len(find_models(caches=False)) == 2
    assert project_models_dir() == places["project"]


def test_models_cli_lists_and_prints_json(places, capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("unet2d_demo", "new_unet", "mynucleitorch_0", "my_versatile"):
        assert name in out
    assert main(["models", "list", "--json", "--no-caches"]) == 0
    cards = json.loads(capsys.readouterr().out)
    assert sorted(c["name"] for c in cards) == ["new_unet", "unet2d_demo"]
    assert all(c["expects"]["object_diameter_px"] > 5 for c in cards)


def test_models_cli_bad_path_exits_2(places, tmp_path, capsys):
    missing = tmp_path / "nope"
    assert main(["models", "list", str(missing)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(missing) in err[0]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["models", "list", str(empty)]) == 2
    assert "not a model" in capsys.readouterr().err


def test_cards_check_names_a_stale_card(tmp_path, capsys):
    shutil.copytree(MODELS / "unet2d_demo", tmp_path / "m", ignore=shutil.ignore_patterns("card.json"))
    assert main(["models", "cards", "--check", str(tmp_path)]) == 2
    assert str(tmp_path / "m" / "card.json") in capsys.readouterr().err
    assert main(["models", "cards", str(tmp_path)]) == 0
    assert main(["models", "cards", "--check", str(tmp_path)]) == 0


# ----------------------------------------------------------------------------- evaluate
def test_evaluate_refuses_unknown_model_and_wrong_dims(tmp_path, capsys):
    base = ["models", "evaluate", "--images", str(NUCLEI / "images"), "--labels", str(NUCLEI / "labels"),
            "--out", str(tmp_path)]
    assert main([*base, "--models", "no_such_model"]) == 2
    assert "no_such_model" in capsys.readouterr().err
    assert main([*base, "--models", "stardist3d_demo"]) == 2
    assert "3D model" in capsys.readouterr().err
    assert main([*base[:3], str(tmp_path / "none"), *base[4:]]) == 2
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_evaluate_writes_a_leaderboard_from_the_run(tmp_path, capsys):
    from stardist.matching import matching

    models = ["stardist2d_demo", "unet2d_demo", "cellpose_demo"]
    rc = main(["models", "evaluate", "--images", str(NUCLEI / "images"), "--labels", str(NUCLEI / "labels"),
               "--models", *models, "--limit", "2", "--out", str(tmp_path), "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    run = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert run.parent == tmp_path and (run / "run.json").is_file()
    board = pd.read_csv(run / "leaderboard.csv")
    assert list(board["model"]) != [] and sorted(board["model"]) == sorted(models)
    assert list(board["rank"]) == sorted(board["rank"])
    assert (board["n_images"] == 2).all() and (run / "leaderboard.png").stat().st_size > 5000
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "completed"
    assert {m["segmenter"] for m in record["models"]} == set(models)
    for m in record["models"]:
        assert m["checksum"] == board.set_index("model").loc[m["segmenter"], "sha256"]
    # the leaderboard's F1 is the run's: recompute it from the run's label images with stardist.matching
    gt = {p.stem: tifffile.imread(p) for p in sorted((NUCLEI / "labels").glob("*.tif"))[:2]}
    for _, row in board.iterrows():
        f1 = [matching(lab, tifffile.imread(next((run / "labels").glob(f"{stem}__*{row['setting']}.tif"))),
                       thresh=0.5).f1 for stem, lab in gt.items()]
        assert row["f1@0.5_mean"] == pytest.approx(np.mean(f1), abs=1e-9)
    assert board.iloc[0]["f1@0.5_mean"] > 0.8  # the demo models were trained on these nuclei
    # the scale follows the cards: StarDist at expected/measured object size, Cellpose at the measured diameter
    sd = board.set_index("model").loc["stardist2d_demo"]
    card = json.loads((MODELS / "stardist2d_demo" / "card.json").read_text())
    assert sd["scale"] == pytest.approx(card["expects"]["object_diameter_px"] / sd["data_object_diameter_px"],
                                        abs=1e-3)
    assert board.set_index("model").loc["cellpose_demo", "diameter"] == pytest.approx(sd["data_object_diameter_px"])


@pytest.mark.slow
def test_evaluate_grid_tries_every_threshold(tmp_path, capsys):
    from opsef_core.zoo.evaluate import GRID

    rc = main(["models", "evaluate", "--images", str(NUCLEI / "images"), "--labels", str(NUCLEI / "labels"),
               "--models", "unet2d_demo", "--grid", "--limit", "1", "--out", str(tmp_path), "--device", "cpu"])
    assert rc == 0
    run = Path(capsys.readouterr().out.strip().splitlines()[-1])
    ranking = pd.read_csv(run / "ranking.csv")
    assert len(ranking) == len(GRID["unet"]["prob_threshold"])
    board = pd.read_csv(run / "leaderboard.csv")
    assert board.loc[0, "settings_tried"] == len(ranking)
    assert board.loc[0, "f1@0.5_mean"] == pytest.approx(ranking["f1@0.5_mean"].max())
