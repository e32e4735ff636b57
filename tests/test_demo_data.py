"""The bundled demo data: files, metadata, label consistency and a deterministic generator."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo_data"


@pytest.fixture(scope="module")
def gen():
    spec = importlib.util.spec_from_file_location("make_demo_data", DEMO / "make_demo_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _read(path):
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        data = series.asarray()
        ij = tif.imagej_metadata or {}
        xres = tif.pages[0].tags["XResolution"].value
        yres = tif.pages[0].tags["YResolution"].value
    return data, series.axes, ij, xres[1] / xres[0], yres[1] / yres[0]


# (folder, names, axes, shape, dtype, pixel size, z spacing)
IMAGE_SETS = [
    ("nuclei2d/images", [f"nuclei_{i:02d}.tif" for i in range(8)], "YX", (256, 256), np.uint16, 0.5, None),
    ("spheroid_clearing/cleared/images", ["spheroid_00.tif", "spheroid_01.tif"], "ZYX", (32, 128, 128),
     np.uint16, 0.5, 2.0),
    ("spheroid_clearing/noncleared/images", ["spheroid_00.tif", "spheroid_01.tif"], "ZYX", (32, 128, 128),
     np.uint16, 0.5, 2.0),
    ("fucci3d/images", ["fucci_00.tif"], "ZCYX", (24, 3, 96, 96), np.uint16, 0.5, 1.0),
    ("hcs_channels/images", [f"hcs_{i:02d}.tif" for i in range(4)], "CYX", (4, 256, 256), np.uint16,
     0.5, None),
    ("debris_brightfield/images", [f"bf_t{i:02d}.tif" for i in range(6)], "YX", (256, 256), np.uint8,
     2.0, None),
]

LABEL_SETS = [  # (image folder, label folder, spatial axes to drop from the image shape)
    ("nuclei2d/images", "nuclei2d/labels", None),
    ("spheroid_clearing/cleared/images", "spheroid_clearing/cleared/labels", None),
    ("spheroid_clearing/noncleared/images", "spheroid_clearing/noncleared/labels", None),
    ("fucci3d/images", "fucci3d/labels", 1),
    ("hcs_channels/images", "hcs_channels/labels/nuclei", 0),
    ("hcs_channels/images", "hcs_channels/labels/cells", 0),
    ("debris_brightfield/images", "debris_brightfield/labels", None),
]


@pytest.mark.parametrize("folder,names,axes,shape,dtype,px,dz", IMAGE_SETS, ids=[s[0] for s in IMAGE_SETS])
def test_images_read_back_with_documented_metadata(folder, names, axes, shape, dtype, px, dz):
    files = sorted(p.name for p in (DEMO / folder).glob("*.tif"))
    assert files == names
    for name in names:
        data, file_axes, ij, pys, pxs = _read(DEMO / folder / name)
        assert file_axes == axes and data.shape == shape and data.dtype == dtype
        assert pys == pytest.approx(px) and pxs == pytest.approx(px)
        assert ij.get("unit") == "um"
        if dz is not None:
            assert ij["spacing"] == pytest.approx(dz)
        # real signal, not a constant image
        assert data.std() > 5


def test_channel_names_in_metadata():
    _, _, ij, _, _ = _read(DEMO / "fucci3d/images/fucci_00.tif")
    assert ij["channel_names"].split(",") == ["hoechst", "cdt1_red", "geminin_green"]
    assert ij["Labels"][:3] == ["hoechst", "cdt1_red", "geminin_green"]
    _, _, ij, _, _ = _read(DEMO / "hcs_channels/images/hcs_00.tif")
    assert ij["channel_names"].split(",") == ["nuclei_cyto", "cytoplasm", "mito", "membrane"]


@pytest.mark.parametrize("img_dir,lab_dir,c_axis", LABEL_SETS, ids=[s[1] for s in LABEL_SETS])
def test_labels_match_images(img_dir, lab_dir, c_axis):
    for img_path in sorted((DEMO / img_dir).glob("*.tif")):
        img = tifffile.imread(img_path)
        lab = tifffile.imread(DEMO / lab_dir / img_path.name)
        spatial = img.shape if c_axis is None else tuple(s for i, s in enumerate(img.shape) if i != c_axis)
        assert lab.shape == spatial and lab.dtype == np.uint16
        ids = np.unique(lab)
        n = int(lab.max())
        assert n >= 1
        np.testing.assert_array_equal(ids, np.arange(n + 1))  # sequential, every label non-empty


def test_objects_are_brighter_than_background():
    for name in ("nuclei_00.tif", "nuclei_05.tif"):
        img = tifffile.imread(DEMO / "nuclei2d/images" / name).astype(float)
        lab = tifffile.imread(DEMO / "nuclei2d/labels" / name)
        assert img[lab > 0].mean() > img[lab == 0].mean() + 50
        assert 25 <= lab.max() <= 60
    bf = tifffile.imread(DEMO / "debris_brightfield/images/bf_t00.tif").astype(float)
    sph = tifffile.imread(DEMO / "debris_brightfield/labels/bf_t00.tif")
    assert set(np.unique(sph)) == {0, 1}
    assert bf[sph == 1].mean() < bf[sph == 0].mean() - 50  # dark spheroid on a bright field


def test_spheroid_grows_and_noncleared_attenuates_more():
    areas = [int((tifffile.imread(DEMO / f"debris_brightfield/labels/bf_t{t:02d}.tif") == 1).sum())
             for t in range(6)]
    assert all(b > a for a, b in zip(areas, areas[1:]))

    def depth_ratio(cond):
        img = tifffile.imread(DEMO / f"spheroid_clearing/{cond}/images/spheroid_00.tif").astype(float)
        lab = tifffile.imread(DEMO / f"spheroid_clearing/{cond}/labels/spheroid_00.tif")
        bg = np.median(img[lab == 0])
        sig = [img[z][lab[z] > 0].mean() - bg for z in (8, 24)]
        return sig[1] / sig[0]

    assert depth_ratio("noncleared") < depth_ratio("cleared") - 0.2


def test_fucci_phase_table_matches_labels_and_intensities():
    lab = tifffile.imread(DEMO / "fucci3d/labels/fucci_00.tif")
    img = tifffile.imread(DEMO / "fucci3d/images/fucci_00.tif")  # ZCYX
    phases = pd.read_csv(DEMO / "fucci3d/phases/fucci_00.csv")
    assert list(phases.columns) == ["label", "phase"]
    assert sorted(phases["label"]) == list(range(1, int(lab.max()) + 1))
    assert set(phases["phase"]) == {"G1", "S/G2/M", "G1/S", "unlabeled"}
    from scipy import ndimage as ndi

    idx = phases["label"].to_numpy()
    red = np.asarray(ndi.median(img[:, 1], lab, idx))
    green = np.asarray(ndi.median(img[:, 2], lab, idx))
    ph = phases["phase"].to_numpy()
    assert red[ph == "G1"].min() > red[ph == "S/G2/M"].max()
    assert green[ph == "S/G2/M"].min() > green[ph == "G1"].max()
    assert red[ph == "unlabeled"].max() < red[ph == "G1/S"].min()


def test_hcs_cells_contain_their_nuclei():
    nuc = tifffile.imread(DEMO / "hcs_channels/labels/nuclei/hcs_00.tif")
    cells = tifffile.imread(DEMO / "hcs_channels/labels/cells/hcs_00.tif")
    assert np.all(cells[nuc > 0] == nuc[nuc > 0])
    assert (cells > 0).sum() > 2 * (nuc > 0).sum()


def test_total_size_is_small():
    total = sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file())
    assert total < 12 * 1024 * 1024


def test_generator_is_deterministic(gen):
    def tiny(seed):
        rng = np.random.default_rng(seed)
        return (gen.make_nuclei2d(rng, shape=(64, 64), n_nuclei=6),
                gen.make_spheroid(rng, shape=(8, 32, 32)),
                gen.make_fucci3d(rng, shape=(8, 32, 32), n_nuclei=5),
                gen.make_hcs(rng, shape=(64, 64), n_cells=4),
                gen.make_debris_brightfield(rng, t=1, shape=(64, 64), radius0=10, n_particles=20))

    def flat(res):
        out = []
        for item in res:
            for a in item:
                out.append(a.to_numpy().ravel().astype(str) if isinstance(a, pd.DataFrame) else a)
        return out

    a, b, c = flat(tiny(1)), flat(tiny(1)), flat(tiny(2))
    assert len(a) == 12
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[2], c[2])
    # the tiny versions still hold objects
    assert a[1].max() >= 1 and a[5].max() >= 1


def test_generate_only_writes_one_dataset(gen, tmp_path):
    gen.generate(tmp_path, only=["debris_brightfield"])
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.tif"))
    assert len(written) == 12 and all(p.startswith("debris_brightfield/") for p in written)
    committed = tifffile.imread(DEMO / "debris_brightfield/images/bf_t03.tif")
    fresh = tifffile.imread(tmp_path / "debris_brightfield/images/bf_t03.tif")
    np.testing.assert_array_equal(fresh, committed)
    with pytest.raises(ValueError, match="unknown data set"):
        gen.generate(tmp_path, only=["nope"])
