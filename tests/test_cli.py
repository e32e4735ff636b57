"""The ``opsef`` command: run, plan, info, evaluate, demo, help and error handling."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from opsef_core.cli import main


def _dataset(root: Path, n=2):
    rng = np.random.default_rng(1)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    yy, xx = np.mgrid[:48, :48]
    for k in range(n):
        lab = np.zeros((48, 48), np.uint16)
        for i, (cy, cx) in enumerate([(12, 12), (12, 34), (34, 20 + 4 * k)], start=1):
            lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= 25] = i
        img = (100 + 900 * (lab > 0) + rng.normal(0, 15, lab.shape)).astype(np.uint16)
        tifffile.imwrite(root / "images" / f"im{k}.tif", img, imagej=True, resolution=(2.0, 2.0),
                         metadata={"unit": "um", "axes": "YX"})
        tifffile.imwrite(root / "labels" / f"im{k}.tif", lab)


@pytest.fixture
def cfg(tmp_path):
    _dataset(tmp_path / "data")
    path = tmp_path / "c.json"
    path.write_text(json.dumps({
        "inputs": {"path": "data/images", "ground_truth": "data/labels"},
        "pipelines": [{"name": "raw", "steps": []}],
        "segmenters": [{"name": "classical", "backend": "classical", "sweep": {"h": [1.0, 2.0]}}],
        "outputs": {"overlays": False, "montage": False},
    }))
    return path


def test_plan_prints_the_table(cfg, capsys):
    assert main(["plan", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "p1-raw__s1-classical_h1" in out and "p1-raw__s2-classical_h2" in out
    assert out.strip().splitlines()[-1] == "2 items (2 files x series x time points) x 2 combinations = 4 segmentations"
    assert "\n  1  im0 " in out and "\n  2  im1 " in out  # the items are listed


@pytest.mark.slow
def test_run_prints_run_folder_last_and_rerun_from_record(cfg, tmp_path, capsys):
    assert main(["run", str(cfg), "--out", str(tmp_path / "runs"), "--limit", "1", "--workers", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    run = Path(lines[-1])
    assert run.parent == tmp_path / "runs" and (run / "summary.csv").is_file()
    # with ground truth, the best combinations and their F1@0.5 are printed before the folder
    import pandas as pd

    ranking = pd.read_csv(run / "ranking.csv")
    assert lines[0] == "best 2 of 2 combinations by mean f1@0.5 over 1 image:"
    best = ranking.iloc[0]
    assert lines[1].split() == ["1.", f"f1@0.5={best['f1@0.5_mean']:.3f}", best["pipeline"], "|", best["setting"]]
    assert len(lines) == 4
    assert sorted(p.name for p in (run / "labels").iterdir()) == [
        "im0__p1-raw__s1-classical_h1.tif", "im0__p1-raw__s2-classical_h2.tif"]
    rec = json.loads((run / "run.json").read_text())
    assert rec["command_line"][:2] == ["opsef", "run"] and rec["config"]["inputs"]["limit"] == 1
    assert {k: rec["execution"][k] for k in ("workers", "scheduler")} == {"workers": 2, "scheduler": None}
    assert rec["execution"]["device"]["cpu_count"] >= 1  # the machine it ran on
    # repeating the recorded run writes a new folder with identical labels
    assert main(["run", str(run / "run.json"), "--out", str(tmp_path / "runs")]) == 0
    run2 = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert run2 != run
    for f in (run / "labels").iterdir():
        np.testing.assert_array_equal(tifffile.imread(f), tifffile.imread(run2 / "labels" / f.name))


def test_typo_in_config_exits_2_with_one_line(cfg, capsys):
    data = json.loads(cfg.read_text())
    data["segmenters"][0]["sweep"] = {"hh": [1]}
    cfg.write_text(json.dumps(data))
    assert main(["run", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert str(cfg) in err[0] and "segmenters[0].sweep.hh" in err[0] and "did you mean 'h'?" in err[0]


def test_console_script_errors_are_one_line(tmp_path):
    exe = Path(sys.executable).with_name("opsef")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "opsef_core.cli"]
    res = subprocess.run(cmd + ["plan", str(tmp_path / "missing.json")], capture_output=True, text=True)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip().splitlines() == [f"opsef: error: {tmp_path / 'missing.json'}: config file not found"]


def test_info_and_evaluate(cfg, tmp_path, capsys):
    img = tmp_path / "data" / "images" / "im0.tif"
    assert main(["info", str(img)]) == 0
    out = capsys.readouterr().out
    assert "48" in out and "uint16" in out and "Y=0.5, X=0.5" in out  # ImageJ calibration 2 px/µm
    # a multichannel OME-TIFF: axes, shape, pixel sizes and channel names
    from opsef_core.image import Image
    from opsef_core.io import write_ome_tiff

    ome = tmp_path / "two.ome.tif"
    data = np.zeros((2, 3, 16, 20), np.uint16)
    write_ome_tiff(ome, Image.from_array(data, "CZYX", pixel_size={"Z": 2.0, "Y": 0.25, "X": 0.25},
                                         channel_names=["dapi", "gfp"]))
    assert main(["info", str(ome)]) == 0
    out = capsys.readouterr().out
    assert "CZYX" in out and "(2, 3, 16, 20)" in out and "Z=2" in out and "X=0.25" in out
    assert "dapi, gfp" in out
    gt = tmp_path / "data" / "labels"
    assert main(["evaluate", "--pred", str(gt), "--gt", str(gt), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["per_image"]) == 2 and all(r["f1@0.5"] == 1.0 for r in data["per_image"])
    assert main(["evaluate", "--pred", str(tmp_path / "nope"), "--gt", str(gt)]) == 2
    assert "nope" in capsys.readouterr().err


def test_demo_uses_env_config_and_help(cfg, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPSEF_DEMO_CONFIG", str(cfg))
    assert main(["demo", "--out", str(tmp_path / "d")]) == 0
    run = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert run.parent == tmp_path / "d" and (run / "metrics.csv").is_file()
    monkeypatch.setenv("OPSEF_DEMO_CONFIG", str(tmp_path / "none.json"))
    assert main(["demo"]) == 2
    capsys.readouterr()
    with pytest.raises(SystemExit) as ex:
        main(["--help"])
    assert ex.value.code == 0
    out = capsys.readouterr().out
    assert all(c in out for c in ("run", "plan", "info", "evaluate", "demo"))
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    assert "--resume" in out and "--workers" in out and "--scheduler" in out and "--limit" in out


@pytest.mark.slow
def test_demo_compares_every_backend_and_prints_each_ones_best_f1(tmp_path, capsys):
    """`opsef demo` (what `make demo` runs) on one demo image: all four backends scored and classed."""
    import pandas as pd

    assert main(["demo", "--out", str(tmp_path / "runs"), "--limit", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    run = Path(lines[-1])
    assert lines[0] == "best combination of each segmenter by mean f1@0.5 over 1 image:"
    block = lines[1:lines.index(next(ln for ln in lines if ln.startswith("best 5 of 32")))]
    ranking = pd.read_csv(run / "ranking.csv")
    metrics = pd.read_csv(run / "metrics.csv")
    assert len(block) == 4 and len(metrics) == 32
    for backend in ("classical", "stardist", "cellpose", "unet"):
        best = metrics.loc[metrics["segmenter"] == backend, "f1@0.5"].max()
        shown = [ln for ln in block if f"-{backend}" in ln]
        assert len(shown) == 1 and f"f1@0.5={best:.3f}" in shown[0]
        assert best >= 0.8, (backend, best)  # each backend finds most of the demo nuclei
    assert ranking["rank"].min() == 1 and (run / "ranking.png").stat().st_size > 0
    assert len(list((run / "montage").glob("*.png"))) == 1
    meas = pd.read_csv(run / "measurements.csv")
    assert set(meas["class"]) == {"dim", "bright"} and set(meas["segmenter"]) == set(metrics["segmenter"])
    # the sign of a swept negative threshold survives in the setting id
    assert {"s6-cellpose_cellprob-1", "s7-cellpose_cellprob0"} <= set(metrics["setting"])


def test_ranking_summary_lists_each_segmenter_once_and_the_overall_best(tmp_path):
    import pandas as pd

    from opsef_core.cli import ranking_summary

    rows = [("raw", "stardist", "s1-stardist_prob0.3", 0.95), ("raw", "classical", "s3-classical_h1", 0.80),
            ("raw", "stardist", "s2-stardist_prob0.5", 0.90)]
    table = pd.DataFrame([{"pipeline": p, "segmenter": s, "setting": st, "f1@0.5_mean": f, "f1@0.5_std": 0.01,
                           "n_images": 3, "rank": i + 1} for i, (p, s, st, f) in
                          enumerate(sorted(rows, key=lambda r: -r[3]))])
    table.to_csv(tmp_path / "ranking.csv", index=False)
    lines = ranking_summary(tmp_path).splitlines()
    assert lines[0] == "best combination of each segmenter by mean f1@0.5 over 3 images:"
    assert [ln.split()[-1] for ln in lines[1:3]] == ["s1-stardist_prob0.3", "s3-classical_h1"]
    assert lines[3] == "best 3 of 3 combinations by mean f1@0.5 over 3 images:" and len(lines) == 7
    # one combination per segmenter: the per-segmenter list alone
    table[table["setting"] != "s2-stardist_prob0.5"].to_csv(tmp_path / "ranking.csv", index=False)
    assert len(ranking_summary(tmp_path).splitlines()) == 3
    (tmp_path / "ranking.csv").unlink()
    assert ranking_summary(tmp_path) == ""
