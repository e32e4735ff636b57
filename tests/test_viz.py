"""Overlays, the grid montage and depth profiles."""

import matplotlib.image as mimage
import numpy as np
import pandas as pd
import pytest
from skimage.segmentation import find_boundaries

from opsef_core.viz import depth_profile_plot, montage, overlay, to_plane


def _scene():
    img = np.full((40, 50), 100.0)
    labels = np.zeros((40, 50), np.int32)
    labels[5:15, 5:15] = 1
    labels[5:15, 15:25] = 2  # touching object 1
    labels[25:35, 30:45] = 3
    img[labels > 0] = 1000.0
    return img, labels


def test_overlay_draws_inner_contours_only():
    img, labels = _scene()
    rgb = overlay(img, labels, color="red", limits=(0, 1000))
    assert rgb.shape == (40, 50, 3) and rgb.dtype == np.uint8
    edges = find_boundaries(labels, mode="inner")
    assert (rgb[edges] == [255, 0, 0]).all()
    # everything else is the grey image: 100 -> 0.1 * 255, 1000 -> 255
    grey = rgb[~edges]
    assert (grey[:, 0] == grey[:, 1]).all() and (grey[:, 1] == grey[:, 2]).all()
    assert set(np.unique(grey[:, 0])) == {26, 255}
    # touching objects keep two lines between them
    assert edges[10, 14] and edges[10, 15]


def test_overlay_colours_per_object_thickness_and_3d():
    img, labels = _scene()
    rgb = overlay(img, labels)
    edges = find_boundaries(labels, mode="inner")
    colours = {tuple(rgb[labels == k][edges[labels == k]][0]) for k in (1, 2, 3)}
    assert len(colours) == 3  # one colour per object
    thick = overlay(img, labels, color=(0, 1, 0), thickness=2)
    assert (thick == [0, 255, 0]).all(axis=2).sum() > edges.sum()
    vol = np.stack([np.zeros_like(img), img, np.zeros_like(img)])
    lab3 = np.stack([np.zeros_like(labels), labels, np.zeros_like(labels)])
    np.testing.assert_array_equal(overlay(vol, lab3, limits=(0, 1000)), overlay(img, labels, limits=(0, 1000)))
    assert to_plane(vol, "max").shape == img.shape
    with pytest.raises(ValueError, match="differs"):
        overlay(img, labels[:10])


def test_montage_grid_titles_failed_panel_and_png(tmp_path):
    img, labels = _scene()
    split = labels.copy()
    split[split == 3] = 0
    rows = {"raw": (img, {"s1": labels, "s2": split}),
            "smooth": (img * 3, {"s1": labels, "s2": None})}
    path = tmp_path / "m" / "montage.png"
    fig = montage(rows, titles={"s1": "classical (h=1)", "s2": "classical (h=4)"}, path=path, suptitle="img")
    axes = np.array(fig.axes).reshape(2, 3)
    assert axes[0, 1].get_title() == "classical (h=1)\nn=3"
    assert axes[0, 2].get_title().endswith("n=2")
    assert "failed" in axes[1, 2].get_title()
    assert axes[1, 0].get_ylabel() == "smooth"
    # same display limits across a row: the input and the overlay panels show the same grey levels
    png = mimage.imread(path)
    assert png.ndim == 3 and png.shape[0] > 100 and png.shape[1] > png.shape[0]
    a0 = axes[0, 0].get_images()[0].get_array()
    a1 = axes[0, 1].get_images()[0].get_array()
    far = find_boundaries(labels, mode="inner") == 0
    np.testing.assert_array_equal(np.asarray(a0)[far], np.asarray(a1)[far])


def test_depth_profile_plot(tmp_path):
    z = np.linspace(0, 100, 11)
    df = pd.DataFrame({"depth_percent": np.r_[z, z], "snr": np.r_[z / 10, z / 20],
                       "cnr_bc": np.r_[z / 100, z / 200], "condition": ["cleared"] * 11 + ["noncleared"] * 11})
    fig = depth_profile_plot(df, y=["snr", "cnr_bc"], path=tmp_path / "d.png")
    assert len(fig.axes) == 2 and len(fig.axes[0].get_lines()) == 2
    assert (tmp_path / "d.png").stat().st_size > 0
    with pytest.raises(ValueError, match="not in the table"):
        depth_profile_plot(df, y="nope")


def test_new_figure_is_the_one_figure_factory(tmp_path):
    import re
    from pathlib import Path

    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from opsef_core import analysis, viz, widgets
    from opsef_core.evaluate import ranking

    before = plt.get_fignums()
    fig = viz.new_figure((3, 2), layout="constrained")
    assert isinstance(fig.canvas, FigureCanvasAgg) and tuple(fig.get_size_inches()) == (3, 2)
    assert fig.get_layout_engine() is not None and viz.new_figure((3, 2)).get_layout_engine() is None
    assert plt.get_fignums() == before  # never registered with pyplot
    fig.add_subplot().plot([0, 1])
    assert viz.save_figure(fig, tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    # the figure-making functions of other modules go through it
    df = pd.DataFrame({"a": np.arange(5.0), "b": np.arange(5.0) ** 2})
    assert isinstance(analysis.scatter(df, "a", "b").canvas, FigureCanvasAgg)
    rk = pd.DataFrame({"pipeline": ["p", "q"], "f1@0.5_mean": [0.9, 0.8], "f1@0.5_std": [0.0, 0.1],
                       "n_images": [1, 1], "rank": [1, 2]})
    assert isinstance(ranking.plot_ranking(rk).canvas, FigureCanvasAgg)
    # no private copy left: only viz builds Figure objects
    pkg = Path(viz.__file__).parent
    offenders = [str(p.relative_to(pkg)) for p in sorted(pkg.rglob("*.py"))
                 if p.name != "viz.py"
                 and re.search(r"\bFigure\(|FigureCanvasAgg\(|def _new_figure", p.read_text())]
    assert offenders == []
    assert not hasattr(viz, "_new_figure") and not hasattr(widgets, "_new_figure")


def test_pngs_are_lossless_at_opsefs_compression_level(tmp_path):
    """Overlays go through save_png/png_bytes at PNG_COMPRESS_LEVEL: same pixels, a real PNG file."""
    import io as _io

    from PIL import Image as _PIL

    from opsef_core.viz import PNG_COMPRESS_LEVEL, overlay, png_bytes, save_png

    rng = np.random.default_rng(0)
    img = rng.normal(100, 10, (64, 80)).astype(np.float32)
    lab = np.zeros((64, 80), np.int32)
    lab[10:30, 10:30], lab[35:60, 40:70] = 1, 2
    rgb = overlay(img, lab)
    (tmp_path / "sub").mkdir()
    out = save_png(rgb, tmp_path / "sub" / "o.png")
    assert out.read_bytes() == png_bytes(rgb) and not list((tmp_path / "sub").glob("*.tmp*"))
    back = _PIL.open(_io.BytesIO(out.read_bytes()))
    assert back.format == "PNG" and np.array_equal(np.asarray(back), rgb)
    assert 0 <= PNG_COMPRESS_LEVEL <= 9
    with pytest.raises(ValueError, match="uint8"):
        png_bytes(img)
