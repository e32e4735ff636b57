"""The notebook explorers run headless, draw their static figures and re-decode without re-predicting."""

from pathlib import Path

import numpy as np
import pandas as pd
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


# ----------------------------------------------------------------------------- several images, network backends
def _counting(seg):
    """Count an instance's network passes per image (independently of the explorer's own counter)."""
    calls, predict = [], seg.predict

    def wrapped(image, params):
        calls.append(image.name)
        return predict(image, params)

    seg.predict = wrapped
    return calls


@pytest.fixture(scope="module")
def two_images():
    names = ["nuclei_00", "nuclei_03"]
    images = [io.read_image(DEMO / "nuclei2d" / "images" / f"{n}.tif") for n in names]
    truths = {n: io.read_labels(DEMO / "nuclei2d" / "labels" / f"{n}.tif") for n in names}
    return images, truths


def test_parameter_explorer_on_several_images_caches_one_pass_each(two_images):
    images, truths = two_images
    seg = CountingClassical()
    ex = parameter_explorer(images, seg, {"h": 1.0}, sliders={"h": (0.0, 4.0, 0.5)}, truth=truths,
                            preprocess=lambda im: im, n_static=2)
    names = [im.name for im in images]
    assert ex.state["images"] == names and ex.state["image"] == names[0]
    dropdown, h_slider = ex.widget.children[:2]
    assert list(dropdown.options) == names and seg.n_predict == 1
    dropdown.value = names[1]  # the user picks the second image: its pass runs now, once
    assert seg.n_predict == 2 and ex.state["image"] == names[1]
    h_slider.value = 3.0
    dropdown.value = names[0]
    ex.update(h=0.5)
    ex.update(image=names[1], h=2.0)
    assert seg.n_predict == 2 and ex.state["n_predict"] == 2  # no re-prediction while dragging
    ref = ClassicalSegmenter().segment(images[1], {"h": 2.0})
    np.testing.assert_array_equal(ex.state["labels"], ref)
    assert ex.state["f1"] == pytest.approx(match(truths[names[1]], ref, threshold=0.5).f1)
    with pytest.raises(ConfigError, match="no image"):
        ex.update(image="nope")
    with pytest.raises(ConfigError, match="not an Image"):
        parameter_explorer({"a": np.zeros((8, 8))}, "classical")


NETWORK = [
    pytest.param("unet", {"model": "unet2d_demo"}, "prob_threshold", 0.7, id="unet"),
    pytest.param("stardist", {"model": "stardist2d_demo"}, "prob_thresh", 0.7, id="stardist",
                 marks=pytest.mark.slow),
    pytest.param("cellpose", {"model": "cellpose_demo"}, "cellprob_threshold", 2.0, id="cellpose",
                 marks=pytest.mark.slow),
]


def _quadrants(images):
    """Two 128 x 128 crops (of two demo images) as named Images: a network pass on CPU in seconds."""
    from dataclasses import replace

    return [replace(images[0], data=np.asarray(images[0].data)[:128, :128], name="crop_a"),
            replace(images[1], data=np.asarray(images[1].data)[128:, 128:], name="crop_b")]


@pytest.mark.parametrize("backend, params, name, value", NETWORK)
def test_threshold_explorer_of_a_network_backend(two_images, backend, params, name, value):
    """StarDist (prob/nms), Cellpose (cellprob/flow) and the U-Net (probability) on any image: one
    network pass per image, the decoded labels equal to the backend's one-call segmentation."""
    from opsef_core.segment import get_segmenter
    from opsef_core.widgets import DECODING_SLIDERS

    images, truths = two_images
    crops = _quadrants(images)
    crop_truth = {"crop_a": truths[images[0].name][:128, :128], "crop_b": truths[images[1].name][128:, 128:]}
    seg = type(get_segmenter(backend))()  # an instance of our own, counted
    calls = _counting(seg)
    sliders = DECODING_SLIDERS[backend]
    ex = parameter_explorer(crops, seg, params, sliders=sliders, truth=crop_truth, n_static=2)
    assert [c.description for c in ex.widget.children[1:1 + len(sliders)]] == list(sliders)
    assert calls == ["crop_a"]
    ex.update(image="crop_b")
    for v in (sliders[name][0], sliders[name][1], value):
        ex.update(**{name: v})
    for other, (lo, hi, _) in sliders.items():
        if other != name:
            ex.update(**{other: lo})
            ex.update(**{other: seg.params(params).model_dump()[other]})
    assert calls == ["crop_a", "crop_b"]  # two images, two passes, however many decodings
    ref = np.asarray(type(seg)().segment(crops[1], {**params, name: value}))
    np.testing.assert_array_equal(ex.state["labels"], ref)
    assert ex.state["n_objects"] == len(np.unique(ref)) - 1 >= 5  # a real segmentation (~10 nuclei per crop)
    assert ex.state["f1"] == pytest.approx(match(crop_truth["crop_b"], ref, threshold=0.5).f1)


def test_object_filter_spans_every_image(two_images):
    from opsef_core.measure import measure_objects
    from opsef_core.postprocess import filter_objects

    images, truths = two_images
    imgs = {im.name: im for im in images}
    table = pd.concat([measure_objects(truths[n], imgs[n]).assign(image=n) for n in imgs], ignore_index=True)
    ranges = {"area": (15.0, 200.0), "solidity": (0.85, 1.0)}
    ex = object_filter(table, truths, imgs, "area", "solidity", ranges=ranges)
    inside = table["area"].between(15, 200) & table["solidity"].between(0.85, 1.0)
    assert ex.state["n_kept"] == int(inside.sum()) and ex.state["n_objects"] == len(table)
    assert ex.state["kept_by_image"] == {n: int(inside[table["image"] == n].sum()) for n in imgs}
    dropdown, area, solidity, info, row = ex.widget.children
    # the sliders show the given ranges exactly: their limits include them
    assert tuple(area.value) == ranges["area"] and area.min <= 15.0 and area.max >= 200.0
    assert tuple(solidity.value) == ranges["solidity"]
    overlay_png, scatter_png = row.children[0].value, row.children[1].value
    med = float(table["area"].median())
    area.value = (med, 200.0)  # the user drags the lower end: scatter, overlay and counts follow
    assert row.children[1].value != scatter_png and row.children[0].value != overlay_png
    inside = table["area"].between(med, 200) & table["solidity"].between(0.85, 1.0)
    assert ex.state["n_kept"] == int(inside.sum()) and f"kept {int(inside.sum())} of {len(table)}" in info.value
    assert ex.state["ranges"]["area"] == (med, 200.0)
    dropdown.value = images[1].name
    ref, _ = filter_objects(truths[images[1].name], ex.state["ranges"],
                            table=table[table["image"] == images[1].name].reset_index(drop=True))
    np.testing.assert_array_equal(ex.state["labels"], ref)
    with pytest.raises(ConfigError, match="'image' column"):
        object_filter(table.drop(columns="image"), truths, imgs, "area", "solidity")
    with pytest.raises(ConfigError, match="without labels"):
        object_filter(table, {images[0].name: truths[images[0].name]}, imgs, "area", "solidity")
    with pytest.raises(ConfigError, match="min"):
        ex.update(area=(5.0, 1.0))


# ----------------------------------------------------------------------------- FUCCI, clearing, HCS
@pytest.fixture(scope="module")
def fucci():
    from opsef_core.workflows import fucci3d as wf

    data = wf.load_fucci(DEMO / "fucci3d")
    phases = wf.phase_table(labels=data["labels"], image=data["image"], red_channel="cdt1_red",
                            green_channel="geminin_green")
    return data, phases


def test_phase_explorer_thresholds_update_counts_scatter_and_colours(fucci):
    from opsef_core.science.fucci import PHASES, phase_fractions
    from opsef_core.widgets import phase_explorer

    data, phases = fucci
    labels, raw = data["labels"], data["image"]
    ex = phase_explorer(labels, raw, phases, nuclear_channel="hoechst")
    assert len(ex.figure.axes) == 2
    # starts at the Otsu thresholds of the table: the same calls as phase_table's
    assert ex.state["thresholds"] == pytest.approx(phases.attrs["thresholds"])
    want = phases["phase"].astype(str).value_counts()
    assert ex.state["counts"] == {ph: int(want.get(ph, 0)) for ph in PHASES}
    z_slider, red, green, info, row = ex.widget.children
    slice_png, scatter_png = row.children[0].value, row.children[1].value
    red.value = 0.9  # a stricter red threshold: fewer G1 / G1/S nuclei, recomputed by hand below
    r, g = phases["red"].to_numpy(), phases["green"].to_numpy()
    tg = phases.attrs["thresholds"]["green"]
    assert ex.state["counts"]["G1"] == int(((r > 0.9) & ~(g > tg)).sum())
    assert ex.state["counts"]["G1/S"] == int(((r > 0.9) & (g > tg)).sum())
    assert ex.state["counts"]["unlabeled"] == int((~(r > 0.9) & ~(g > tg)).sum())
    assert sum(ex.state["counts"].values()) == len(phases) == 26
    assert row.children[1].value != scatter_png and row.children[0].value != slice_png
    assert f"G1 {ex.state['counts']['G1']}" in info.value
    pd.testing.assert_frame_equal(ex.state["fractions"], phase_fractions(ex.state["phases"]))
    # the slider browses the slices
    before = row.children[0].value
    z_slider.value = 3
    assert ex.state["z"] == 3 and row.children[0].value != before
    red.value, green.value = 0.0, 0.0  # (nearly) every nucleus above both thresholds: G1/S
    assert ex.state["counts"]["G1/S"] == int(((r > 0) & (g > 0)).sum()) > 20
    assert ex.update(green=tg)["G1/S"] == int(((r > 0) & (g > tg)).sum())
    with pytest.raises(AxesError):
        ex.update(z=999)
    with pytest.raises(ConfigError, match="'red'"):
        phase_explorer(labels, raw, phases.drop(columns="red"))


def test_phase_overlay_colours_contours_by_phase():
    from opsef_core.widgets import _phase_overlay

    lab = np.zeros((20, 20), int)
    lab[2:8, 2:8] = 1
    lab[10:18, 10:18] = 2
    rgb = _phase_overlay(np.zeros((20, 20)), lab, {1: "G1", 2: "S/G2/M"}, (0.0, 1.0),
                         {"G1": "red", "S/G2/M": "lime"})
    assert tuple(rgb[2, 2]) == (255, 0, 0) and tuple(rgb[10, 10]) == (0, 255, 0)
    assert tuple(rgb[5, 5]) == (0, 0, 0)  # inside: the image


def test_depth_explorer_reports_the_profile_and_the_slice():
    from opsef_core.widgets import depth_explorer
    from opsef_core.workflows import clearing as wc

    data = wc.load_conditions(DEMO / "spheroid_clearing", ["cleared"], max_images=1)
    entry = data["cleared"][0]
    profile = wc.clearing_profiles(data)
    truth = entry["labels"]
    eroded = np.where(np.roll(truth, 1, axis=2) == truth, truth, 0)  # a second "model"
    ex = depth_explorer(entry["image"], {"truth": truth, "eroded": eroded}, profile, truth=truth)
    centre = int(profile["centre_slice"].iloc[0])
    assert ex.state["z"] == centre and ex.state["depth_pct"] == pytest.approx(100.0)
    z_slider, model, info, row = ex.widget.children
    plot_png = row.children[1].value
    z_slider.value = 4
    want = profile.set_index("z").loc[4]
    assert ex.state["values"] == pytest.approx({m: want[m] for m in ("snr", "cnr_bc", "cnr_fr")})
    assert ex.state["depth_pct"] == pytest.approx(want["depth_pct"])
    assert ex.state["n_pred"] == ex.state["n_true"] == len(np.unique(truth[4])) - 1
    assert row.children[1].value != plot_png and f"snr {want['snr']:.3g}" in info.value
    model.value = "eroded"
    assert ex.state["model"] == "eroded" and ex.state["n_pred"] == len(np.unique(eroded[4][eroded[4] > 0]))
    with pytest.raises(ConfigError, match="no labels of model"):
        ex.update(model="nope")
    with pytest.raises(AxesError):
        depth_explorer(entry["image"], {"x": truth[:-1]}, profile)


@pytest.mark.slow
def test_fusion_explorer_decodes_every_subset_from_one_pass():
    from opsef_core.segment import get_segmenter
    from opsef_core.widgets import fusion_explorer
    from opsef_core.workflows import hcs

    (field,) = hcs.load_fields(DEMO / "hcs_channels", targets=["nuclei"], max_images=1, crop=[48, 144, 48, 144])
    image, truth = field["image"], field["truth"]["nuclei"]
    params = {"model": "cellpose_demo", "diameter": 17.0, "network_channels": ["nuclei_cyto", "cytoplasm"]}
    seg = type(get_segmenter("fusion"))()  # an instance of our own, counted
    calls = _counting(seg)
    ex = fusion_explorer(image, params, channels=["nuclei_cyto"], truth=truth, segmenter=seg)
    assert len(ex.figure.axes) == 3  # the channel, the fused result, the truth
    boxes, method, info, _ = ex.widget.children
    assert [b.description for b in boxes.children] == ["nuclei_cyto", "cytoplasm"]
    boxes.children[1].value = True  # tick the second channel
    assert ex.state["channels"] == ["nuclei_cyto", "cytoplasm"] and set(ex.state["single"]) == set(ex.state["channels"])
    for m in ("pixel_vote", "staple", "majority_vote", "flow_average"):
        method.value = m
        assert ex.state["method"] == m and ex.state["labels"].shape == truth.shape
    # the last two against the backend's one-call segmentation (a fresh network pass)
    ref = type(seg)().segment(image, {**params, "channels": ex.state["channels"], "method": "flow_average"})
    np.testing.assert_array_equal(ex.state["labels"], ref)
    method.value = "majority_vote"
    ref = type(seg)().segment(image, {**params, "channels": ex.state["channels"], "method": "majority_vote"})
    np.testing.assert_array_equal(ex.state["labels"], ref)
    single = type(seg)().segment(image, {**params, "network_channels": ["cytoplasm"]})
    np.testing.assert_array_equal(ex.state["single"]["cytoplasm"], single)
    assert len(calls) == 1 and ex.state["n_predict"] == 1  # one pass (a Cellpose pass per channel), only decodings after
    assert ex.state["f1"]["nuclei_cyto"] == pytest.approx(match(truth, ex.state["single"]["nuclei_cyto"], threshold=0.5).f1)
    assert ex.state["f1"]["nuclei_cyto"] > 0.5
    boxes.children[0].value = boxes.children[1].value = False  # an empty subset is refused, the last one kept
    assert ex.state["channels"] == ["cytoplasm"] and "at least one channel" in info.value
    with pytest.raises(ConfigError, match="no network pass"):
        ex.update(channels=["mito"])
    with pytest.raises(ConfigError, match="unknown method"):
        ex.update(method="nope")
