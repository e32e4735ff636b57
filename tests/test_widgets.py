"""The notebook explorers run headless, draw their static figures and re-decode without re-predicting."""

from pathlib import Path

import numpy as np
import pytest

from opsef_core import io
from opsef_core.errors import AxesError, ConfigError, RunFolderError
from opsef_core.evaluate import match
from opsef_core.segment.classical import ClassicalSegmenter
from opsef_core.widgets import grid_browser, object_filter, parameter_explorer, slice_browser

DEMO = Path(__file__).resolve().parents[1] / "demo_data"


class CountingClassical(ClassicalSegmenter):
    """The classical backend, counting its network passes and decodings."""

    def __init__(self):
        super().__init__()
        self.n_predict = 0
        self.n_decode = 0

    def predict(self, image, params):
        self.n_predict += 1
        return super().predict(image, params)

    def decode(self, prediction, image, params):
        self.n_decode += 1
        return super().decode(prediction, image, params)


@pytest.fixture(scope="module")
def nuclei():
    image = io.read_image(DEMO / "nuclei2d" / "images" / "nuclei_00.tif")
    truth = io.read_labels(DEMO / "nuclei2d" / "labels" / "nuclei_00.tif")
    return image, truth


def test_parameter_explorer_decodes_without_repredicting(nuclei):
    image, truth = nuclei
    seg = CountingClassical()
    ex = parameter_explorer(image, seg, {"h": 1.0}, sliders={"h": (0.0, 4.0, 0.5), "min_size": (0, 50, 5)},
                            truth=truth, n_static=3)
    assert len(ex.figure.axes) == 2 + 3
    assert seg.n_predict == 1 and ex.state["n_predict"] == 1
    decodes = seg.n_decode
    assert decodes == 1 + 3  # current + the static sweep
    # moving the sliders (through the widget, as a user does) only re-decodes
    h_slider = ex.widget.children[0]
    h_slider.value = 0.0
    labels_h0 = ex.state["labels"]
    ex.update(h=3.0)
    assert seg.n_predict == 1 and seg.n_decode == decodes + 2
    # the decoded result equals the backend's one-call segmentation with the same parameters
    ref = ClassicalSegmenter().segment(image, {"h": 3.0})
    np.testing.assert_array_equal(ex.state["labels"], ref)
    assert not np.array_equal(labels_h0, ref)  # h changes the splitting of touching nuclei
    # a realistic result on demo nuclei (README: classical reaches F1@0.5 ~ 0.85)
    f1 = match(truth, ex.state["labels"], threshold=0.5).f1
    assert 0.5 < f1 <= 1.0
    assert ex.state["n_objects"] == len(np.unique(ref)) - 1


def test_parameter_explorer_refuses_network_parameters(nuclei):
    image, _ = nuclei
    with pytest.raises(ConfigError, match="network pass"):
        parameter_explorer(image, "classical", sliders={"sigma": (0.5, 3.0, 0.5)})
    with pytest.raises(ConfigError, match="no parameter"):
        parameter_explorer(image, "classical", sliders={"nope": (0, 1, 1)})


def test_parameter_explorer_headless_without_sliders(nuclei):
    image, _ = nuclei
    ex = parameter_explorer(image, "classical", interactive=False)
    assert ex.widget is None and len(ex.figure.axes) == 2
    assert ex.state["labels"].shape == image.shape


def test_grid_browser_montage_dict_and_run_folder(nuclei, tmp_path):
    image, truth = nuclei
    plane = np.asarray(image.data)
    rows = {"raw": (plane, {"h1": truth, "h2": None}), "smooth": (plane, {"h1": truth, "h2": truth})}
    ex = grid_browser(rows)
    assert len(ex.figure.axes) == 2 * 3  # two pipelines x (input + two settings)
    lab = ex.update(pipeline="smooth", setting="h2")
    np.testing.assert_array_equal(lab, truth)
    # a run folder: montage PNGs written by viz.montage
    from opsef_core.viz import montage

    (tmp_path / "montage").mkdir()
    for name in ("a", "b", "c"):
        montage(rows, path=tmp_path / "montage" / f"{name}.png")
    ex2 = grid_browser(tmp_path, max_static=2)
    assert len(ex2.figure.axes) == 2
    assert ex2.state["items"] == ["montage/a.png", "montage/b.png", "montage/c.png"]
    assert ex2.update("montage/c.png") == tmp_path / "montage" / "c.png"
    with pytest.raises(RunFolderError):
        grid_browser(tmp_path / "missing")


def test_slice_browser_3d():
    image = io.read_image(DEMO / "fucci3d" / "images" / "fucci_00.tif")
    labels = io.read_labels(DEMO / "fucci3d" / "labels" / "fucci_00.tif")
    ex = slice_browser(image, labels, channel="hoechst", n_static=4)
    assert len(ex.figure.axes) == 4
    nz = image.size("Z")
    assert ex.state["n_slices"] == nz
    rgb = ex.update(z=nz - 1)
    assert rgb.shape == labels.shape[1:] + (3,) and ex.state["z"] == nz - 1
    with pytest.raises(AxesError):
        slice_browser(np.zeros((32, 32)))
    with pytest.raises(AxesError):
        slice_browser(image, labels[:-1], channel=0)


def test_object_filter_matches_filter_objects(nuclei):
    from opsef_core.measure import measure_objects
    from opsef_core.postprocess import filter_objects

    image, truth = nuclei
    table = measure_objects(truth, image)
    med = float(table["area"].median())
    ex = object_filter(table, truth, image, "area", "circularity", ranges={"area": (med, None)})
    assert len(ex.figure.axes) == 2
    n_big = int((table["area"] >= med).sum())
    assert ex.state["n_kept"] == n_big
    assert len(np.unique(ex.state["labels"])) - 1 == n_big
    out = ex.update(area=(0.0, med), circularity=(0.0, 2.0))
    ref, kept = filter_objects(truth, {"area": (0.0, med), "circularity": (0.0, 2.0)}, table=table)
    np.testing.assert_array_equal(out, ref)
    assert ex.state["n_kept"] == len(kept) == int((table["area"] <= med).sum())
    with pytest.raises(ConfigError):
        object_filter(table, truth, image, "area", "nope")
