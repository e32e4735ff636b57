"""``opsef train``: help lists the backends, bad folders exit 2 naming the path, a tiny U-Net
trained through the CLI is loaded and run by the ``unet`` segmenter."""

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from skimage.draw import ellipse

from opsef_core.cli import main
from opsef_core.errors import ConfigError
from opsef_core.train.cli import parse_augment


def _write_pairs(root: Path, n: int = 2, shape=(64, 64), seed: int = 0) -> tuple[Path, Path, list]:
    """Blurred bright ellipses on a noisy background, with their instance labels, as TIFF pairs."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    img_dir, lab_dir = root / "images", root / "labels"
    img_dir.mkdir(parents=True)
    lab_dir.mkdir(parents=True)
    counts = []
    for i in range(n):
        lab = np.zeros(shape, np.uint16)
        k = 0
        for cy in range(10, shape[0] - 8, 16):
            for cx in range(10, shape[1] - 8, 16):
                rr, cc = ellipse(cy + rng.integers(-2, 3), cx + rng.integers(-2, 3), rng.uniform(4, 6),
                                 rng.uniform(4, 6), shape=shape, rotation=rng.uniform(0, np.pi))
                free = lab[rr, cc] == 0
                k += 1
                lab[rr[free], cc[free]] = k
        img = gaussian_filter((lab > 0) * 400.0, 1.0) + 100 + rng.normal(0, 8, shape)
        tifffile.imwrite(img_dir / f"img_{i}.tif", img.astype(np.uint16))
        tifffile.imwrite(lab_dir / f"img_{i}.tif", lab)
        counts.append(k)
    return img_dir, lab_dir, counts


def test_help_lists_backends(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for backend in ("stardist", "cellpose", "unet"):
        assert backend in out
    for opt in ("--images", "--labels", "--out", "--epochs", "--val-fraction", "--augment", "--pretrained",
                "--init", "--learning-rate", "--patch-size", "--steps-per-epoch", "--batch-size", "--patience",
                "--seed"):
        assert opt in out


def test_one_vocabulary_maps_to_every_trainer():
    """Each shared CLI option is a keyword of all three trainers (cellpose refuses ``patience`` itself)."""
    import inspect

    from opsef_core.train.cellpose import train_cellpose
    from opsef_core.train.data import OPTION_NAMES
    from opsef_core.train.stardist import train_stardist
    from opsef_core.train.unet import train_unet

    for trainer in (train_stardist, train_cellpose, train_unet):
        params = inspect.signature(trainer).parameters
        missing = [name for name in OPTION_NAMES if name not in params]
        assert not missing, (trainer.__name__, missing)


def test_top_level_help_lists_train(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "train" in capsys.readouterr().out


def test_missing_folder_exits_2_naming_it(tmp_path, capsys):
    missing = tmp_path / "no_such_images"
    labels = tmp_path / "labels"
    labels.mkdir()
    rc = main(["train", "unet", "--images", str(missing), "--labels", str(labels), "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and str(missing) in err[0] and "does not exist" in err[0]
    assert not (tmp_path / "m").exists()


def test_empty_folder_and_unmatched_labels_exit_2(tmp_path, capsys):
    img_dir, lab_dir, _ = _write_pairs(tmp_path / "d", n=1, shape=(32, 32))
    empty = tmp_path / "empty"
    empty.mkdir()
    rc = main(["train", "unet", "--images", str(img_dir), "--labels", str(empty), "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and str(empty) in err and "empty" in err
    other = tmp_path / "other"
    other.mkdir()
    tifffile.imwrite(other / "unrelated.tif", np.zeros((32, 32), np.uint16))
    rc = main(["train", "unet", "--images", str(img_dir), "--labels", str(other), "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and str(img_dir) in err


def test_bad_options_exit_2(tmp_path, capsys):
    img_dir, lab_dir, _ = _write_pairs(tmp_path / "d", n=1, shape=(32, 32))
    base = ["--images", str(img_dir), "--labels", str(lab_dir), "--out", str(tmp_path / "m")]
    assert main(["train", "unet", *base, "--pretrained", "nuclei"]) == 2
    assert "--pretrained" in capsys.readouterr().err
    assert main(["train", "cellpose", *base, "--dims", "3"]) == 2
    assert "2D" in capsys.readouterr().err
    assert main(["train", "unet", *base, "--augment", "flips,twirl"]) == 2
    assert "twirl" in capsys.readouterr().err
    assert main(["train", "unet", *base, "--dims", "3"]) == 2  # 2D images with --dims 3
    assert "img_0" in capsys.readouterr().err
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "weights.pt").write_bytes(b"x")
    assert main(["train", "unet", *base[:4], "--out", str(existing)]) == 2
    err = capsys.readouterr().err
    assert str(existing) in err and "--overwrite" in err
    assert (existing / "weights.pt").read_bytes() == b"x"


def test_parse_augment():
    a = parse_augment("flips,noise")
    assert a.flips and not a.rotations90 and a.intensity_scale is None and a.gaussian_noise > 0
    n = parse_augment("none")
    assert not (n.flips or n.rotations90 or n.intensity_scale or n.gaussian_noise)
    assert parse_augment(None) is None
    g = parse_augment("gaussian,poisson")
    assert g.gaussian_noise > 0 and g.poisson_noise and not g.flips
    assert parse_augment("flips").poisson_noise is False
    with pytest.raises(ConfigError, match="rotate"):
        parse_augment("rotate")


@pytest.mark.slow
def test_tiny_unet_through_cli_is_loadable(tmp_path, capsys):
    from opsef_core.image import Image
    from opsef_core.segment import get_segmenter

    img_dir, lab_dir, counts = _write_pairs(tmp_path / "data", n=2, shape=(64, 64))
    out = tmp_path / "models" / "tiny_unet"
    rc = main(["train", "unet", "--images", str(img_dir), "--labels", str(lab_dir), "--out", str(out),
               "--epochs", "1", "--val-fraction", "0.5", "--seed", "3", "--augment", "flips,rot90"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert Path(lines[-1]) == out
    training = json.loads((out / "training.json").read_text())
    assert len(training["history"]) == 1
    assert training["params"]["seed"] == 3 and training["params"]["augmentation"]["rotations90"] is True
    assert len(training["train_names"]) == 1 and len(training["val_names"]) == 1
    img = tifffile.imread(img_dir / "img_0.tif")
    labels = get_segmenter("unet").segment(Image.from_array(img, "YX", pixel_size={"Y": 0.5, "X": 0.5}),
                                          {"model": str(out), "device": "cpu"})
    assert labels.shape == img.shape and np.issubdtype(labels.dtype, np.integer)
    # the same folder again without --overwrite is refused
    assert main(["train", "unet", "--images", str(img_dir), "--labels", str(lab_dir), "--out", str(out),
                 "--epochs", "1"]) == 2
    # the demo script's evaluation runs the model over a nuclei2d-like folder and pools F1@0.5
    demo = tmp_path / "demo"
    (demo / "nuclei2d").mkdir(parents=True)
    for sub in ("images", "labels"):
        (demo / "nuclei2d" / sub).symlink_to(tmp_path / "data" / sub)
    f1 = _script().f1_on_nuclei2d("unet", out, demo)
    assert 0.0 <= f1 <= 1.0


# ----------------------------------------------------------------------------- scripts/train_demo_models.py
def _script():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "train_demo_models.py"
    spec = importlib.util.spec_from_file_location("train_demo_models", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_script_selection_and_bad_arguments(tmp_path, capsys):
    script = _script()
    assert script.selected(None) == ["stardist2d", "stardist3d", "cellpose", "unet", "unet3d"]
    assert script.selected(["unet3d_demo"]) == ["unet3d"]
    assert script.selected(["unet", "stardist2d"]) == ["stardist2d", "unet"]
    assert script.selected(["stardist"]) == ["stardist2d", "stardist3d"]
    assert script.selected(["cellpose_demo,unet2d_demo"]) == ["cellpose", "unet"]
    args = script.build_parser().parse_args(["--only", "unet", "--out", str(tmp_path), "--no-eval"])
    assert args.only == ["unet"] and args.out == tmp_path and args.no_eval
    assert script.main(["--only", "resnet"]) == 2
    assert "resnet" in capsys.readouterr().err
    assert script.main(["--only", "unet", "--demo-data", str(tmp_path / "nothing")]) == 2
    assert str(tmp_path / "nothing") in capsys.readouterr().err


def test_demo_script_out_writes_models_there(tmp_path, monkeypatch, capsys):
    """--out DIR: the trainer sees a root whose models/ is DIR and whose demo_data/ is the real one."""
    import opsef_core.train.unet as unet_trainer

    seen = {}

    def fake_train_demo_unet(root):
        root = Path(root)
        seen["images"] = sorted(p.name for p in (root / "demo_data" / "nuclei2d" / "images").glob("*.tif"))
        folder = root / "models" / "unet2d_demo"
        folder.mkdir(parents=True)
        (folder / "weights.pt").write_bytes(b"w")
        return folder

    monkeypatch.setattr(unet_trainer, "train_demo_unet", fake_train_demo_unet)
    out = tmp_path / "models_out"
    assert _script().main(["--only", "unet", "--out", str(out), "--no-eval"]) == 0
    assert (out / "unet2d_demo" / "weights.pt").read_bytes() == b"w"
    assert len(seen["images"]) == 8
    assert str(out / "unet2d_demo") in capsys.readouterr().out


def test_demo_script_dispatches_the_3d_unet(tmp_path, monkeypatch):
    import opsef_core.train.unet as unet_trainer

    called = []
    monkeypatch.setattr(unet_trainer, "train_demo_unet3d", lambda root: called.append(Path(root)) or
                        Path(root) / "models" / "unet3d_demo")
    assert _script().train("unet3d", tmp_path) == tmp_path / "models" / "unet3d_demo"
    assert called == [tmp_path]
