"""Interactive explorers for the notebooks, each with a static matplotlib figure.

Every explorer returns an :class:`Explorer` holding an ipywidgets widget (``None`` when
ipywidgets is not installed) **and** a static matplotlib figure drawn at creation, so a
headless run (papermill, CI) still shows and saves something meaningful
(``run.show(explorer.figure, ...)``).  ``explorer.update(**values)`` does from Python what
moving the controls does.  No explorer re-runs a network while its controls move:

- :func:`parameter_explorer` — decoding parameters on sliders with a live overlay, on one
  image or any of several (an image selector); each image's network pass
  (:meth:`Segmenter.predict`) runs once, on its first selection, and is cached; a slider
  change only re-decodes (:meth:`Segmenter.decode`).  :data:`DECODING_SLIDERS` holds the
  sliders of StarDist (prob/nms), Cellpose (cellprob/flow), the U-Net (probability) and the
  classical backend;
- :func:`grid_browser` — browse the montages (rows = pipelines, columns =
  segmenter settings) of a run folder, or a montage dict as taken by
  :func:`opsef_core.viz.montage`;
- :func:`slice_browser` — a z slider through a 3D stack with optional label contours;
- :func:`object_filter` — range sliders on measured properties over every image of a run,
  a scatter plot that follows them and the filtered overlay (kept green, removed red);
  ``state["ranges"]`` is what an export takes;
- :func:`phase_explorer` — FUCCI: a z-slice browser with contours in phase colours and
  red/green thresholds re-calling the phases live (counts, scatter);
- :func:`depth_explorer` — clearing: a depth slider showing SNR/CNR at that depth and the
  run's segmentation of that slice;
- :func:`fusion_explorer` — HCS: channel subsets and fusion methods, single-channel masks
  next to the fused one, decoded from one Cellpose pass per channel.

ipywidgets is imported lazily; figures are made on matplotlib's Agg canvas
(no display needed) and are not registered with pyplot, so they never pile up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .errors import AxesError, ConfigError, RunFolderError
from .image import Image
from .viz import new_figure

__all__ = ["Explorer", "DECODING_SLIDERS", "PHASE_COLOURS", "parameter_explorer", "grid_browser", "slice_browser",
           "object_filter", "phase_explorer", "depth_explorer", "fusion_explorer"]

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- helpers
@dataclass
class Explorer:
    """What every explorer returns.

    Attributes
    ----------
    figure : matplotlib.figure.Figure
        Static figure drawn at creation (savable with ``run.save_figure``).
    widget : ipywidgets.Widget or None
        The interactive widget (None without ipywidgets or with ``interactive=False``).
    state : dict
        The current values (parameters, labels, counts, ...) kept up to date by ``update``.
    update : callable
        ``update(**values)`` applies new slider values programmatically (as moving the
        sliders does) and returns the new result.
    """

    figure: Any
    widget: Any = None
    state: dict = field(default_factory=dict)
    update: Callable[..., Any] | None = None

    def _ipython_display_(self):  # pragma: no cover - only in a live notebook
        from IPython.display import display

        from .viz import display_png

        if self.widget is not None:
            display(self.widget)
        else:  # the static figure as an image (a bare Figure would print as "<Figure size ...>")
            display_png(self.figure)


def _ipywidgets(interactive: bool):
    """The ipywidgets module, or None (not installed, or ``interactive=False``)."""
    if not interactive:
        return None
    try:
        import ipywidgets
    except ImportError:  # pragma: no cover - ipywidgets is pinned
        logger.warning("ipywidgets is not installed: showing static figures only")
        return None
    return ipywidgets


def _png(rgb: np.ndarray) -> bytes:
    from .viz import png_bytes

    return png_bytes(rgb)


def _n_objects(labels: np.ndarray) -> int:
    return int(np.unique(labels[labels > 0]).size)


def _display_plane(image: Image | np.ndarray, channel: int | str | None = None) -> np.ndarray:
    """A spatial (``YX``/``ZYX``) array to show: one channel of an Image at t = 0."""
    if isinstance(image, Image):
        img = image.sel(t=0) if "T" in image.axes else image
        if "C" in img.axes:
            img = img.sel(c=0 if channel is None else channel)
        return np.asarray(img.data)
    arr = np.asarray(image)
    if arr.ndim not in (2, 3):
        raise AxesError(f"expected a YX or ZYX array (or an Image), got shape {arr.shape}")
    return arr


def _limits(plane: np.ndarray) -> tuple[float, float]:
    finite = np.asarray(plane, np.float32)
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return (0.0, 1.0)
    lo, hi = np.percentile(finite, (1.0, 99.8))
    return (float(lo), float(hi) if hi > lo else float(lo) + 1.0)


def _fmt(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _show(ax, rgb, title: str) -> None:
    ax.imshow(rgb)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


# ----------------------------------------------------------------------------- parameter explorer
#: default decoding sliders per backend: ``{parameter: (min, max, step)}`` (decoding parameters only)
DECODING_SLIDERS: dict[str, dict[str, tuple[float, float, float]]] = {
    "stardist": {"prob_thresh": (0.05, 0.95, 0.05), "nms_thresh": (0.05, 0.9, 0.05)},
    "cellpose": {"cellprob_threshold": (-6.0, 6.0, 0.5), "flow_threshold": (0.0, 2.0, 0.1)},
    "unet": {"prob_threshold": (0.05, 0.95, 0.05)},
    "classical": {"h": (0.0, 4.0, 0.5), "min_size": (0, 100, 5)},
}


def _named_images(image) -> dict[str, Image]:
    """``{name: Image}`` from one Image, a sequence of Images or a mapping (names made unique)."""
    if isinstance(image, Image):
        return {image.name: image}
    if isinstance(image, Mapping):
        items = list(image.items())
    elif isinstance(image, Sequence) and not isinstance(image, (str, bytes)):
        items = [(getattr(im, "name", f"image_{i}"), im) for i, im in enumerate(image)]
    else:
        raise ConfigError(f"expected an Image, a list of Images or {{name: Image}}, got {type(image).__name__}")
    out: dict[str, Image] = {}
    for name, im in items:
        if not isinstance(im, Image):
            raise ConfigError(f"image {name!r} is a {type(im).__name__}, not an Image (read it with opsef_core.io)")
        key, k = str(name), 1
        while key in out:
            k += 1
            key = f"{name}_{k}"
        out[key] = im
    if not out:
        raise ConfigError("no image to explore")
    return out


def parameter_explorer(
    image: Image | Sequence[Image] | Mapping[str, Image],
    segmenter,
    params: Mapping[str, Any] | None = None,
    sliders: Mapping[str, tuple[float, float, float]] | None = None,
    *,
    prediction: Mapping[str, np.ndarray] | None = None,
    truth: np.ndarray | Mapping[str, np.ndarray] | None = None,
    preprocess: Callable[[Image], Image] | None = None,
    n_static: int = 3,
    panel_size: float = 3.0,
    interactive: bool = True,
) -> Explorer:
    """Decoding parameters on sliders with a live contour overlay (one network pass per image).

    The segmenter's network pass (:meth:`Segmenter.predict`) runs once per image, when the
    image is first shown (or not at all for the first image when ``prediction`` is given),
    and is kept; every slider change only calls :meth:`Segmenter.decode` on the cached
    pass.  Sliders on parameters that change the network pass (the backend's
    ``network_fields``) are refused.

    Parameters
    ----------
    image : Image, list of Image or dict
        Input image(s) (no T axis, or a single time point); 3D images are shown by their
        middle z slice.  Several images (a list, or ``{name: Image}``) add an image
        selector; the first is shown first.
    segmenter : str or Segmenter
        Backend name (``"classical"``, ``"stardist"``, ``"cellpose"``, ``"unet"``) or instance.
    params : dict, optional
        Base parameters (network and decoding).
    sliders : dict, optional
        ``{decoding parameter: (min, max, step)}``; integer triples give integer sliders.
        A slider starts at the base value, or at its minimum when the base value is not a
        number (e.g. ``threshold="otsu"``).  :data:`DECODING_SLIDERS` has defaults per backend.
    prediction : dict, optional
        A cached network pass of the first image with ``params`` (skips its ``predict``).
    truth : ndarray or dict, optional
        Truth labels (one array for one image, or ``{name: labels}``): titles then show F1
        at IoU 0.5.
    preprocess : callable, optional
        Applied to each image before the network pass (e.g. a
        :class:`~opsef_core.preprocess.Pipeline`'s ``apply``); the processed image is shown.
    n_static : int
        Number of values of the first slider drawn in the static figure (min to max).
    panel_size : float
        Inches per figure panel.
    interactive : bool
        Build the ipywidgets widget (False: static figure only).

    Returns
    -------
    Explorer
        ``figure`` (of the first image) with ``2 + n_static`` axes (input, current
        parameters, the sweep of the first slider; 2 axes without sliders); ``state`` holds
        ``image`` (the current name), ``images`` (all names), ``params``, ``labels``,
        ``n_objects`` (and ``f1`` with truth), ``n_predict`` (network passes so far) and
        ``n_decode``; ``update(image=None, **values)`` switches image and/or re-decodes and
        returns the labels.

    Raises
    ------
    ConfigError
        A slider names an unknown parameter or a network parameter, or has min > max; an
        unknown image name.
    """
    from .segment import get_segmenter
    from .viz import overlay

    seg = get_segmenter(segmenter) if isinstance(segmenter, str) else segmenter
    base = seg.params(dict(params or {})).model_dump()
    sliders = dict(sliders or {})
    for name, spec in sliders.items():
        if name not in base:
            raise ConfigError(f"parameter_explorer: {seg.name!r} has no parameter {name!r}; "
                              f"parameters are {sorted(base)}")
        if name in seg.network_fields:
            raise ConfigError(f"parameter_explorer: {name!r} changes the network pass of {seg.name!r}; "
                              "sliders take decoding parameters only (make one explorer per network setting)")
        try:
            lo, hi, step = spec
        except (TypeError, ValueError):
            raise ConfigError(f"parameter_explorer: slider {name!r} must be (min, max, step), got {spec!r}")
        if lo > hi or step <= 0:
            raise ConfigError(f"parameter_explorer: slider {name!r} needs min <= max and step > 0, got {spec!r}")
    images = _named_images(image)
    names = list(images)
    if truth is None or isinstance(truth, Mapping):
        truths = dict(truth or {})
    else:
        truths = {names[0]: truth}
    state: dict = {"n_predict": 0, "n_decode": 0, "images": names, "image": names[0]}
    cache: dict[str, dict] = {}  # name -> {"input", "prediction", "plane", "limits"}
    if prediction is not None:
        cache[names[0]] = {"prediction": prediction}

    def entry(name: str) -> dict:
        """The cached network pass of an image (computed on its first selection)."""
        if name not in images:
            raise ConfigError(f"parameter_explorer: no image {name!r}; images are {names}")
        e = cache.setdefault(name, {})
        if "input" not in e:
            e["input"] = preprocess(images[name]) if preprocess is not None else images[name]
            plane = _display_plane(e["input"], base.get("channel"))
            e["plane"] = plane
            e["limits"] = _limits(plane if plane.ndim == 2 else plane[plane.shape[0] // 2])
        if "prediction" not in e:
            e["prediction"] = seg.predict(e["input"], seg.params(base))
            state["n_predict"] += 1
        return e

    def decode(name: str, values: Mapping[str, Any]) -> np.ndarray:
        p = seg.params({**base, **values})
        labels = np.asarray(seg.decode(entry(name)["prediction"], entry(name)["input"], p))
        state["n_decode"] += 1
        return labels

    def f1(name: str, labels: np.ndarray) -> float | None:
        if name not in truths:
            return None
        from .evaluate import match

        return float(match(truths[name], labels, threshold=0.5).f1)

    def title(name: str, values: Mapping[str, Any], labels: np.ndarray) -> str:
        head = _fmt(values) or "defaults"
        text = f"{head}\nn={_n_objects(labels)}"
        score = f1(name, labels)
        if score is not None:
            text += f", F1@0.5={score:.3f}"
        return text

    def record(name: str, labels: np.ndarray) -> None:
        state.update(image=name, params={**base, **current}, labels=labels, n_objects=_n_objects(labels))
        score = f1(name, labels)
        if score is not None:
            state["f1"] = score
        else:
            state.pop("f1", None)

    # a non-numeric base value (e.g. threshold="otsu") starts the slider at its minimum
    current = {k: (base[k] if isinstance(base[k], (int, float)) and not isinstance(base[k], bool)
                   else sliders[k][0]) for k in sliders}
    first = names[0]
    labels = decode(first, current)
    record(first, labels)
    e0 = entry(first)

    # static figure (first image): input, current parameters, sweep of the first slider
    sweep: list = []
    if sliders:
        s0 = next(iter(sliders))
        lo, hi, _ = sliders[s0]
        vals = np.linspace(lo, hi, max(int(n_static), 1))
        is_int = all(isinstance(v, int) for v in sliders[s0])
        sweep = [(s0, int(round(v)) if is_int else float(v)) for v in vals]
    ncols = 2 + len(sweep)
    fig = new_figure((panel_size * ncols, panel_size + 0.6))
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    _show(axes[0], overlay(e0["plane"], None, limits=e0["limits"]), f"{first}: input")
    _show(axes[1], overlay(e0["plane"], labels, limits=e0["limits"]), title(first, current, labels))
    for ax, (name, v) in zip(axes[2:], sweep):
        lab = decode(first, {**current, name: v})
        _show(ax, overlay(e0["plane"], lab, limits=e0["limits"]), title(first, {name: v}, lab))
    fig.suptitle(f"{seg.name}: decoding parameters (one network pass)", fontsize=9)
    fig.tight_layout()

    widgets = _ipywidgets(interactive)
    view = info = None

    def render(name: str, lab: np.ndarray) -> bytes:
        e = entry(name)
        return _png(overlay(e["plane"], lab, limits=e["limits"]))

    def caption(name: str, lab: np.ndarray) -> str:
        text = title(name, current, lab).replace("\n", " — ")
        return f"{name}: {text}" if len(names) > 1 else text

    def update(image: str | None = None, **values):
        unknown = [k for k in values if k not in sliders]
        if unknown:
            raise ConfigError(f"parameter_explorer: no slider for {unknown}; sliders are {list(sliders)}")
        name = state["image"] if image is None else str(image)
        if name not in images:
            raise ConfigError(f"parameter_explorer: no image {name!r}; images are {names}")
        current.update(values)
        lab = decode(name, current)
        record(name, lab)
        if view is not None:
            view.value = render(name, lab)
            info.value = caption(name, lab)
        return lab

    widget = None
    if widgets is not None:
        controls = []
        if len(names) > 1:
            dd = widgets.Dropdown(options=names, value=first, description="image")
            dd.observe(lambda ch: update(image=ch["new"]), names="value")
            controls.append(dd)
        for name, (lo, hi, step) in sliders.items():
            is_int = all(isinstance(v, int) for v in (lo, hi, step))
            cls = widgets.IntSlider if is_int else widgets.FloatSlider
            s = cls(value=current[name], min=lo, max=hi, step=step, description=name,
                    continuous_update=False, style={"description_width": "initial"})
            s.observe(lambda ch, n=name: update(**{n: ch["new"]}), names="value")
            controls.append(s)
        view = widgets.Image(value=render(first, labels), format="png", layout=widgets.Layout(max_width="600px"))
        info = widgets.HTML(caption(first, labels))
        widget = widgets.VBox([*controls, info, view])
    return Explorer(figure=fig, widget=widget, state=state, update=update)


# ----------------------------------------------------------------------------- grid browser
def _read_png(path: Path) -> np.ndarray:
    import matplotlib.image as mimage

    return mimage.imread(path)


def _run_folder_pngs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise RunFolderError("grid_browser: not a run folder", folder)
    for sub in ("montage", "overlays"):
        pngs = sorted((folder / sub).glob("*.png"))
        if pngs:
            return pngs
    pngs = sorted(folder.glob("*.png"))
    if pngs:
        return pngs
    raise RunFolderError("grid_browser: no montage/*.png or overlays/*.png in the run folder", folder)


def grid_browser(
    source: str | Path | Mapping[str, tuple[np.ndarray, Mapping[str, np.ndarray | None]]],
    *,
    titles: Mapping[str, str] | None = None,
    max_static: int = 4,
    panel_size: float = 2.6,
    interactive: bool = True,
) -> Explorer:
    """Browse the preprocessing × segmenter grid of a run folder or of a montage dict.

    Parameters
    ----------
    source : path or dict
        A run folder (its ``montage/*.png``, else ``overlays/*.png``), or
        ``{pipeline: (display image, {setting: labels or None})}`` as taken by
        :func:`opsef_core.viz.montage`.
    titles : dict, optional
        Column titles for a montage dict (``{setting: title}``).
    max_static : int
        Run folder: number of montage images drawn in the static figure.
    panel_size : float
        Inches per panel.
    interactive : bool
        Build the ipywidgets widget.

    Returns
    -------
    Explorer
        For a dict, ``figure`` is the montage (rows × (settings + 1 input column) axes) and
        the widget picks one pipeline and one setting at a time; for a run folder,
        ``figure`` shows the first ``max_static`` montage images (one axes each) and the
        widget a dropdown over all of them.  ``state["items"]`` lists what can be browsed.

    Raises
    ------
    RunFolderError
        The folder does not exist or holds no montage/overlay images.
    ConfigError
        An empty montage dict.
    """
    from .viz import montage, overlay

    widgets = _ipywidgets(interactive)
    if isinstance(source, (str, Path)):
        folder = Path(source)
        pngs = _run_folder_pngs(folder)
        shown = pngs[: max(int(max_static), 1)]
        fig = new_figure((panel_size * 2.5, panel_size * 1.6 * len(shown)))
        axes = fig.subplots(len(shown), 1, squeeze=False)[:, 0]
        for ax, p in zip(axes, shown):
            _show(ax, _read_png(p), p.stem)
        fig.suptitle(f"{folder.name}: {len(pngs)} image(s)" + (f", first {len(shown)} shown" if len(shown) < len(pngs) else ""),
                     fontsize=9)
        fig.tight_layout()
        state = {"items": [str(p.relative_to(folder)) for p in pngs], "current": str(shown[0].relative_to(folder))}
        view = None

        def update(item: str | None = None):
            rel = item if item is not None else state["current"]
            if rel not in state["items"]:
                raise ConfigError(f"grid_browser: {rel!r} is not among {state['items']}")
            state["current"] = rel
            if view is not None:
                view.value = (folder / rel).read_bytes()
            return folder / rel

        widget = None
        if widgets is not None:
            dd = widgets.Dropdown(options=state["items"], value=state["current"], description="image")
            view = widgets.Image(value=(folder / state["current"]).read_bytes(), format="png")
            dd.observe(lambda ch: update(item=ch["new"]), names="value")
            widget = widgets.VBox([dd, view])
        return Explorer(figure=fig, widget=widget, state=state, update=update)

    rows = dict(source)
    if not rows:
        raise ConfigError("grid_browser: the montage dict is empty")
    fig = montage(rows, titles=titles, panel_size=panel_size)
    pipelines = list(rows)
    settings: list[str] = []
    for _, by_setting in rows.values():
        settings += [s for s in by_setting if s not in settings]
    state = {"items": [(p, s) for p in pipelines for s in settings], "current": (pipelines[0], settings[0] if settings else None)}
    view = info = None

    def render(pipeline: str, setting: str | None):
        image, by_setting = rows[pipeline]
        plane = _display_plane(image)
        lab = by_setting.get(setting) if setting is not None else None
        return overlay(plane, lab, limits=_limits(plane if plane.ndim == 2 else plane[plane.shape[0] // 2])), lab

    def update(pipeline: str | None = None, setting: str | None = None):
        p = pipeline if pipeline is not None else state["current"][0]
        s = setting if setting is not None else state["current"][1]
        if p not in rows:
            raise ConfigError(f"grid_browser: unknown pipeline {p!r}; pipelines are {pipelines}")
        state["current"] = (p, s)
        rgb, lab = render(p, s)
        if view is not None:
            view.value = _png(rgb)
            info.value = (f"{p} / {titles.get(s, s) if titles else s}: "
                          + ("failed" if lab is None else f"n={_n_objects(np.asarray(lab))}"))
        return lab

    widget = None
    if widgets is not None:
        dp = widgets.Dropdown(options=pipelines, value=pipelines[0], description="pipeline")
        ds = widgets.Dropdown(options=settings, value=settings[0] if settings else None, description="setting")
        view = widgets.Image(value=_png(render(*state["current"])[0]), format="png",
                             layout=widgets.Layout(max_width="600px"))
        info = widgets.HTML("")
        dp.observe(lambda ch: update(pipeline=ch["new"]), names="value")
        ds.observe(lambda ch: update(setting=ch["new"]), names="value")
        widget = widgets.VBox([widgets.HBox([dp, ds]), info, view])
        update()
    return Explorer(figure=fig, widget=widget, state=state, update=update)


# ----------------------------------------------------------------------------- slice browser
def slice_browser(
    stack: Image | np.ndarray,
    labels: np.ndarray | None = None,
    *,
    channel: int | str | None = None,
    n_static: int = 4,
    panel_size: float = 2.8,
    interactive: bool = True,
) -> Explorer:
    """Browse the z slices of a 3D stack, with label contours.

    Parameters
    ----------
    stack : Image or ndarray
        A 3D ``Image`` (one channel is shown: ``channel``, default 0) or a ``ZYX`` array.
    labels : ndarray, optional
        ``ZYX`` labels with the stack's spatial shape.
    channel : int or str, optional
        Channel of a multichannel ``Image``.
    n_static : int
        Number of evenly spaced slices in the static figure (at most the number of slices).
    panel_size : float
        Inches per panel.
    interactive : bool
        Build the ipywidgets widget.

    Returns
    -------
    Explorer
        ``figure`` with ``min(n_static, Z)`` axes; ``state["z"]`` the current slice;
        ``update(z=...)`` shows another slice and returns its RGB overlay.

    Raises
    ------
    AxesError
        The stack is not 3D, or labels have another shape.
    """
    from .viz import overlay

    vol = _display_plane(stack, channel)
    if vol.ndim != 3:
        raise AxesError(f"slice_browser needs a ZYX stack, got spatial shape {vol.shape}",
                        getattr(stack, "source", None))
    lab = None if labels is None else np.asarray(labels)
    if lab is not None and lab.shape != vol.shape:
        raise AxesError(f"labels of shape {lab.shape} do not fit the stack {vol.shape}",
                        getattr(stack, "source", None))
    nz = vol.shape[0]
    limits = _limits(vol)  # one display scaling for all slices

    def render(z: int) -> np.ndarray:
        return overlay(vol[z], None if lab is None else lab[z], limits=limits)

    zs = sorted(set(np.linspace(0, nz - 1, min(max(int(n_static), 1), nz) + 2).round().astype(int)[1:-1].tolist())) \
        if nz > 2 else list(range(nz))
    zs = zs or [nz // 2]
    fig = new_figure((panel_size * len(zs), panel_size + 0.4))
    axes = fig.subplots(1, len(zs), squeeze=False)[0]
    for ax, z in zip(axes, zs):
        n = "" if lab is None else f", n={_n_objects(lab[z])}"
        _show(ax, render(z), f"z={z}{n}")
    name = getattr(stack, "name", "stack")
    fig.suptitle(f"{name}: {nz} slices", fontsize=9)
    fig.tight_layout()
    state = {"z": nz // 2, "n_slices": nz}
    widgets = _ipywidgets(interactive)
    view = None

    def update(z: int | None = None) -> np.ndarray:
        z = state["z"] if z is None else int(z)
        if not 0 <= z < nz:
            raise AxesError(f"slice {z} out of range 0..{nz - 1}")
        state["z"] = z
        rgb = render(z)
        if view is not None:
            view.value = _png(rgb)
        return rgb

    widget = None
    if widgets is not None:
        s = widgets.IntSlider(value=nz // 2, min=0, max=nz - 1, description="z", continuous_update=True)
        view = widgets.Image(value=_png(render(nz // 2)), format="png", layout=widgets.Layout(max_width="600px"))
        s.observe(lambda ch: update(z=ch["new"]), names="value")
        widget = widgets.VBox([s, view])
    return Explorer(figure=fig, widget=widget, state=state, update=update)


# ----------------------------------------------------------------------------- object filter
def _keep_mask(table, ranges: Mapping[str, tuple[float | None, float | None]]) -> np.ndarray:
    """Rows of ``table`` inside every range: the rule of :func:`opsef_core.postprocess.filter_objects`."""
    import pandas as pd

    mask = np.ones(len(table), bool)
    for col, (lo, hi) in ranges.items():
        v = pd.to_numeric(table[col], errors="coerce").to_numpy(float)
        if lo is not None:
            mask &= v >= lo
        if hi is not None:
            mask &= v <= hi
    return mask


def object_filter(
    table,
    labels: np.ndarray | Mapping[str, np.ndarray],
    image: Image | np.ndarray | Mapping[str, Image | np.ndarray],
    x: str,
    y: str,
    *,
    properties: Sequence[str] | None = None,
    ranges: Mapping[str, tuple[float | None, float | None]] | None = None,
    channel: int | str | None = None,
    image_column: str = "image",
    panel_size: float = 4.0,
    interactive: bool = True,
) -> Explorer:
    """Filter objects by measured properties: range sliders, scatter plot, filtered overlay.

    Filtering uses :func:`opsef_core.postprocess.filter_objects` on the given table (no
    re-measuring, no re-segmentation).  With several images (``labels`` and ``image`` as
    ``{image id: ...}``, the table's ``image_column`` naming each row's image) the ranges,
    the counts and the scatter span every image; an image selector picks the overlay shown.

    Parameters
    ----------
    table : DataFrame
        One row per object with a ``label`` column (as from
        :func:`opsef_core.measure.measure_objects`, or a run's ``measurements.csv``).
    labels : ndarray or dict
        The labels the table describes (``YX`` or ``ZYX``; 3D shown by the middle slice),
        or ``{image id: labels}``.
    image : Image, ndarray or dict
        Image(s) to draw the contours on (spatial shape of the labels), keyed like ``labels``.
    x, y : str
        Columns on the scatter plot's axes.
    properties : list of str, optional
        Columns with range sliders (default ``[x, y]``).
    ranges : dict, optional
        Initial ``{column: (min, max)}`` (None = open side); default the full range.  The
        slider limits span both the data and these ranges, so the initial ranges are kept
        exactly (e.g. a notebook's ``filter_ranges``).
    channel : int or str, optional
        Channel of a multichannel ``Image`` to show.
    image_column : str
        Column of ``table`` naming each object's image (several images only).
    panel_size : float
        Inches per panel.
    interactive : bool
        Build the ipywidgets widget.

    Returns
    -------
    Explorer
        ``figure`` with 2 axes (scatter of every object: kept blue, removed grey; overlay of
        the first image: kept green, removed red); ``state`` holds ``ranges`` (``{column:
        (min, max)}``, what :func:`opsef_core.workflows.quickstart.filter_and_export` takes),
        ``image`` (shown), ``labels`` (its filtered labels), ``kept`` (table of the kept
        objects of every image), ``n_kept``, ``n_objects`` and ``kept_by_image``;
        ``update(image=None, **{column: (min, max)})`` applies new ranges.  The widget
        re-draws the scatter and the overlay on every change.

    Raises
    ------
    ConfigError
        A named column is missing from the table, the table has no ``label`` column, or
        several images without ``image_column`` / with images the table does not name.
    AxesError
        Labels and image differ in shape.
    """
    from .postprocess import filter_objects
    from .viz import figure_png, overlay

    if "label" not in table.columns:
        raise ConfigError("object_filter: the table needs a 'label' column (as from measure_objects)")
    props = list(properties or [x, y])
    for col in {x, y, *props, *dict(ranges or {})}:
        if col not in table.columns:
            raise ConfigError(f"object_filter: no column {col!r}; columns are {sorted(map(str, table.columns))}")
    multi = isinstance(labels, Mapping)
    if multi:
        if not isinstance(image, Mapping):
            raise ConfigError("object_filter: labels given per image need the images per image too ({id: image})")
        if image_column not in table.columns:
            raise ConfigError(f"object_filter: labels of several images need a {image_column!r} column in the table")
        ids = [str(k) for k in labels]
        missing = [k for k in ids if k not in {str(i) for i in image}]
        if missing or not ids:
            raise ConfigError(f"object_filter: no image for {missing}" if missing else "object_filter: no images")
        labs = {str(k): np.asarray(v) for k, v in labels.items()}
        imgs = {str(k): v for k, v in image.items()}
        row_image = table[image_column].astype(str).to_numpy()
        unknown = sorted(set(row_image) - set(ids))
        if unknown:
            raise ConfigError(f"object_filter: the table has objects of images {unknown[:5]} without labels")
    else:
        ids = ["image"]
        labs, imgs = {"image": np.asarray(labels)}, {"image": image}
        row_image = np.full(len(table), "image", dtype=object)
    views: dict[str, dict] = {}

    def view_of(name: str) -> dict:
        if name not in views:
            lab = labs[name]
            plane = _display_plane(imgs[name], channel)
            if plane.shape != lab.shape:
                raise AxesError(f"object_filter: labels of shape {lab.shape} do not fit the image {plane.shape}"
                                + (f" ({name})" if multi else ""), getattr(imgs[name], "source", None))
            img2 = plane if plane.ndim == 2 else plane[plane.shape[0] // 2]
            views[name] = {"lab": lab, "lab2": lab if lab.ndim == 2 else lab[lab.shape[0] // 2], "img2": img2,
                           "limits": _limits(img2), "rows": np.flatnonzero(row_image == name)}
        return views[name]

    for name in ids:  # shapes checked up front: one clear error, not at the first selection
        view_of(name)
    for col, r in dict(ranges or {}).items():
        if col not in props:
            props.append(col)
    bounds, current = {}, {}
    for col in props:
        v = np.asarray(table[col], float)
        v = v[np.isfinite(v)]
        lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 1.0)
        r = dict(ranges or {}).get(col)
        cur = (lo, hi)
        if r is not None:
            try:
                rlo, rhi = r
            except (TypeError, ValueError):
                raise ConfigError(f"object_filter: range for {col!r} must be (min, max), got {r!r}")
            cur = (lo if rlo is None else float(rlo), hi if rhi is None else float(rhi))
            if cur[0] > cur[1]:
                raise ConfigError(f"object_filter: range for {col!r} has min {cur[0]} > max {cur[1]}")
        bounds[col] = (min(lo, cur[0]), max(hi, cur[1]))  # the slider can show the given range exactly
        current[col] = cur
    state: dict = {"image": ids[0], "images": list(ids) if multi else []}

    def apply() -> None:
        keep = _keep_mask(table, current)
        kept = table[keep].reset_index(drop=True)
        state.update(ranges={k: tuple(v) for k, v in current.items()}, kept=kept, n_kept=int(keep.sum()),
                     n_objects=len(table), keep=keep,
                     kept_by_image={n: int(keep[view_of(n)["rows"]].sum()) for n in ids})

    def filtered_labels(name: str) -> np.ndarray:
        v = view_of(name)
        sub = table.iloc[v["rows"]].reset_index(drop=True)
        filtered, _ = filter_objects(v["lab"], dict(current), table=sub)
        return filtered

    def draw_overlay(name: str, filtered: np.ndarray) -> np.ndarray:
        v = view_of(name)
        f2 = filtered if filtered.ndim == 2 else filtered[filtered.shape[0] // 2]
        removed = np.where(f2 > 0, 0, v["lab2"])
        rgb = overlay(v["img2"], removed, color="red", limits=v["limits"])
        kept_rgb = overlay(v["img2"], f2, color="lime", limits=v["limits"])
        mask = np.any(kept_rgb != overlay(v["img2"], None, limits=v["limits"]), axis=-1)
        rgb[mask] = kept_rgb[mask]
        return rgb

    def draw_scatter(ax) -> None:
        keep = state["keep"]
        ax.scatter(table[x][~keep], table[y][~keep], s=12, c="0.7", label="removed")
        ax.scatter(table[x][keep], table[y][keep], s=12, c="tab:blue", label="kept")
        for col, axis in ((x, "x"), (y, "y")):
            if col in current:
                lo, hi = current[col]
                (ax.axvspan if axis == "x" else ax.axhspan)(lo, hi, color="tab:blue", alpha=0.08)
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.legend(fontsize=7, loc="best")
        where = f" in {len(ids)} images" if multi else ""
        ax.set_title(f"kept {state['n_kept']} of {len(table)}{where}", fontsize=8)

    def scatter_png() -> bytes:
        f = new_figure((panel_size, panel_size))
        draw_scatter(f.subplots())
        f.tight_layout()
        return figure_png(f, dpi=80)

    def text() -> str:
        out = f"kept {state['n_kept']} of {len(table)} objects"
        if multi:
            name = state["image"]
            n_here = len(view_of(name)["rows"])
            out += f" in {len(ids)} images; {name}: kept {state['kept_by_image'][name]} of {n_here}"
        return out

    apply()
    filtered = filtered_labels(ids[0])
    state["labels"] = filtered
    fig = new_figure((panel_size * 2, panel_size))
    ax_sc, ax_im = fig.subplots(1, 2)
    draw_scatter(ax_sc)
    head = f"{ids[0]}: " if multi else ""
    _show(ax_im, draw_overlay(ids[0], filtered), f"{head}kept (green) / removed (red)\n{_fmt(dict(current))}")
    fig.tight_layout()

    widgets = _ipywidgets(interactive)
    view = info = scatter = None

    def update(image: str | None = None, **new_ranges):
        for col, r in new_ranges.items():
            if col not in current:
                raise ConfigError(f"object_filter: no slider for {col!r}; sliders are {list(current)}")
            lo, hi = float(r[0]), float(r[1])
            if lo > hi:
                raise ConfigError(f"object_filter: range for {col!r} has min {lo} > max {hi}")
            current[col] = (lo, hi)
        name = state["image"] if image is None else str(image)
        if name not in ids:
            raise ConfigError(f"object_filter: no image {name!r}; images are {ids}")
        state["image"] = name
        apply()
        out = filtered_labels(name)
        state["labels"] = out
        if view is not None:
            if new_ranges:
                scatter.value = scatter_png()
            view.value = _png(draw_overlay(name, out))
            info.value = text()
        return out

    widget = None
    if widgets is not None:
        controls = []
        if multi and len(ids) > 1:
            dd = widgets.Dropdown(options=ids, value=ids[0], description="image")
            dd.observe(lambda ch: update(image=ch["new"]), names="value")
            controls.append(dd)
        for col in current:
            lo, hi = bounds[col]
            step = (hi - lo) / 200 if hi > lo else 1.0
            s = widgets.FloatRangeSlider(value=current[col], min=lo, max=hi if hi > lo else lo + 1, step=step,
                                         description=col, continuous_update=False, readout_format=".3g",
                                         style={"description_width": "initial"})
            s.observe(lambda ch, c=col: update(**{c: ch["new"]}), names="value")
            controls.append(s)
        info = widgets.HTML(text())
        view = widgets.Image(value=_png(draw_overlay(ids[0], filtered)), format="png",
                             layout=widgets.Layout(max_width="480px"))
        scatter = widgets.Image(value=scatter_png(), format="png", layout=widgets.Layout(max_width="400px"))
        widget = widgets.VBox([*controls, info, widgets.HBox([view, scatter])])
    return Explorer(figure=fig, widget=widget, state=state, update=update)


# ----------------------------------------------------------------------------- FUCCI phases
#: colours of the FUCCI phases (figures and explorers)
PHASE_COLOURS = {"G1": "tab:red", "S/G2/M": "tab:green", "G1/S": "gold", "unlabeled": "0.5"}


def _phase_overlay(plane: np.ndarray, lab2: np.ndarray, phase_of: Mapping[int, str], limits,
                   colours: Mapping[str, str]) -> np.ndarray:
    """A grey slice with each nucleus's contour in its phase's colour."""
    import matplotlib.colors as mcolors
    from skimage.segmentation import find_boundaries

    from .viz import overlay

    rgb = overlay(plane, None, limits=limits)
    lab2 = np.asarray(lab2).astype(np.int64, copy=False)
    if not lab2.any():
        return rgb
    lut = np.zeros((int(lab2.max()) + 1, 3), np.uint8)
    for lab_id, ph in phase_of.items():
        if 0 < lab_id < lut.shape[0]:
            lut[lab_id] = (np.asarray(mcolors.to_rgb(colours.get(str(ph), "w"))) * 255).round()
    edges = find_boundaries(lab2, mode="inner") & (lab2 > 0)
    rgb[edges] = lut[lab2[edges]]
    return rgb


def phase_explorer(
    labels: np.ndarray,
    image: Image,
    table,
    *,
    nuclear_channel: int | str = 0,
    red_threshold: float | str = "otsu",
    green_threshold: float | str = "otsu",
    z: int | None = None,
    threshold_max: float | None = None,
    colours: Mapping[str, str] | None = None,
    panel_size: float = 3.6,
    interactive: bool = True,
) -> Explorer:
    """FUCCI phases: a z-slice browser coloured by phase and live red/green thresholds.

    The nuclei are not re-segmented and their intensities not re-measured: the phases are
    re-called from ``table``'s normalised ``red`` / ``green`` columns with
    :func:`opsef_core.science.fucci.call_phases` on every threshold change (counts,
    scatter and contour colours follow).

    Parameters
    ----------
    labels : ndarray
        ``ZYX`` nuclei (the labels the table describes).
    image : Image
        ``CZYX`` image; ``nuclear_channel`` is shown.
    table : DataFrame
        Per-nucleus ``label``, ``red``, ``green`` (as from
        :func:`opsef_core.workflows.fucci3d.phase_table` or
        :func:`opsef_core.science.fucci.nucleus_intensities`).
    nuclear_channel : int or str
        Channel drawn under the contours.
    red_threshold, green_threshold : float or "otsu"
        Starting thresholds (``"otsu"``: the exact Otsu value of the table's values).
    z : int, optional
        Starting slice (default: the slice with most nuclei).
    threshold_max : float, optional
        Upper end of the threshold sliders (default: 1.2 × the largest red/green value).
    colours : dict, optional
        ``{phase: matplotlib colour}`` (default :data:`PHASE_COLOURS`).
    panel_size : float
        Inches per panel.
    interactive : bool
        Build the ipywidgets widget.

    Returns
    -------
    Explorer
        ``figure`` with 2 axes (the slice with phase-coloured contours; red vs green scatter
        with the thresholds); ``state`` holds ``z``, ``thresholds`` (``{"red", "green"}``),
        ``phases`` (the table with ``phase``), ``counts`` (``{phase: n}``) and
        ``fractions`` (:func:`~opsef_core.science.fucci.phase_fractions`);
        ``update(z=None, red=None, green=None)`` applies new values.

    Raises
    ------
    ConfigError
        The table lacks ``label`` / ``red`` / ``green`` or names nuclei absent from the labels.
    AxesError
        The labels are not 3D or do not fit the image.
    """
    from .science.fucci import PHASES, call_phases, phase_fractions
    from .viz import figure_png

    for col in ("label", "red", "green"):
        if col not in table.columns:
            raise ConfigError(f"phase_explorer: the table needs a {col!r} column (as from fucci3d.phase_table); "
                              f"columns are {list(table.columns)}")
    lab = np.asarray(labels)
    vol = _display_plane(image, nuclear_channel)
    if lab.ndim != 3 or vol.shape != lab.shape:
        raise AxesError(f"phase_explorer: ZYX labels {lab.shape} must fit the image's {vol.shape}",
                        getattr(image, "source", None))
    present = set(np.unique(lab[lab > 0]).tolist())
    absent = sorted(set(table["label"].astype(int)) - present)
    if absent:
        raise ConfigError(f"phase_explorer: the table names nuclei {absent[:5]} that are not in the labels")
    colours = dict(PHASE_COLOURS if colours is None else colours)
    nz = lab.shape[0]
    if z is None:
        z = int(np.argmax([np.unique(lab[k][lab[k] > 0]).size for k in range(nz)]))
    limits = _limits(vol)
    base = table[[c for c in table.columns if c != "phase"]]
    called = call_phases(base, red_threshold, green_threshold)
    th = called.attrs["thresholds"]
    top = threshold_max or 1.2 * float(np.nanmax([base["red"].max(), base["green"].max(), th["red"], th["green"], 1.0]))
    state: dict = {"z": int(z), "n_slices": nz}

    def call(red: float, green: float) -> None:
        df = call_phases(base, float(red), float(green))
        counts = df["phase"].astype(str).value_counts()
        state.update(thresholds={"red": float(red), "green": float(green)}, phases=df,
                     counts={ph: int(counts.get(ph, 0)) for ph in PHASES}, fractions=phase_fractions(df),
                     phase_of=dict(zip(df["label"].astype(int), df["phase"].astype(str))))

    def render_slice(k: int) -> np.ndarray:
        return _phase_overlay(vol[k], lab[k], state["phase_of"], limits, colours)

    def draw_scatter(ax) -> None:
        df = state["phases"]
        for ph in PHASES:
            sub = df[df["phase"].astype(str) == ph]
            ax.scatter(sub["red"], sub["green"], c=colours.get(ph, "k"), s=20, edgecolors="k", linewidths=0.3,
                       label=f"{ph} ({len(sub)})")
        t = state["thresholds"]
        ax.axvline(t["red"], color="tab:red", ls="--", lw=1)
        ax.axhline(t["green"], color="tab:green", ls="--", lw=1)
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_xlabel("red (Cdt1), normalised")
        ax.set_ylabel("green (Geminin), normalised")
        ax.set_title(f"red > {t['red']:.2f}, green > {t['green']:.2f}", fontsize=8)
        ax.legend(fontsize=6, loc="upper right")

    def scatter_png() -> bytes:
        f = new_figure((panel_size, panel_size))
        draw_scatter(f.subplots())
        f.tight_layout()
        return figure_png(f, dpi=80)

    def text() -> str:
        k = state["z"]
        here = set(np.unique(lab[k][lab[k] > 0]).tolist())
        counts = ", ".join(f"{ph} {n}" for ph, n in state["counts"].items())
        return (f"{len(base)} nuclei: {counts} — z={k}: {len(here)} nuclei in this slice")

    call(th["red"], th["green"])
    fig = new_figure((panel_size * 2, panel_size + 0.3))
    ax_im, ax_sc = fig.subplots(1, 2)
    _show(ax_im, render_slice(state["z"]), f"z={state['z']}: contours by phase")
    draw_scatter(ax_sc)
    fig.suptitle(getattr(image, "name", "FUCCI") + ": phases from thresholds (no re-segmentation)", fontsize=9)
    fig.tight_layout()

    widgets = _ipywidgets(interactive)
    view = info = scatter = None

    def update(z: int | None = None, red: float | None = None, green: float | None = None):
        if z is not None:
            if not 0 <= int(z) < nz:
                raise AxesError(f"slice {z} out of range 0..{nz - 1}")
            state["z"] = int(z)
        t = state["thresholds"]
        changed = red is not None or green is not None
        if changed:
            call(t["red"] if red is None else red, t["green"] if green is None else green)
        rgb = render_slice(state["z"])
        if view is not None:
            view.value = _png(rgb)
            if changed:
                scatter.value = scatter_png()
            info.value = text()
        return state["counts"]

    widget = None
    if widgets is not None:
        step = round(top / 100, 3) or 0.01
        sz = widgets.IntSlider(value=state["z"], min=0, max=nz - 1, description="z", continuous_update=True)
        sr = widgets.FloatSlider(value=th["red"], min=0.0, max=top, step=step, description="red threshold",
                                 continuous_update=False, readout_format=".2f", style={"description_width": "initial"})
        sg = widgets.FloatSlider(value=th["green"], min=0.0, max=top, step=step, description="green threshold",
                                 continuous_update=False, readout_format=".2f",
                                 style={"description_width": "initial"})
        sz.observe(lambda ch: update(z=ch["new"]), names="value")
        sr.observe(lambda ch: update(red=ch["new"]), names="value")
        sg.observe(lambda ch: update(green=ch["new"]), names="value")
        info = widgets.HTML(text())
        view = widgets.Image(value=_png(render_slice(state["z"])), format="png",
                             layout=widgets.Layout(max_width="420px"))
        scatter = widgets.Image(value=scatter_png(), format="png", layout=widgets.Layout(max_width="380px"))
        widget = widgets.VBox([sz, sr, sg, info, widgets.HBox([view, scatter])])
    return Explorer(figure=fig, widget=widget, state=state, update=update)


# ----------------------------------------------------------------------------- clearing: depth
def depth_explorer(
    stack: Image | np.ndarray,
    labels: Mapping[str, np.ndarray],
    profile,
    *,
    truth: np.ndarray | None = None,
    scores=None,
    metrics: Sequence[str] = ("snr", "cnr_bc", "cnr_fr"),
    model: str | None = None,
    z: int | None = None,
    panel_size: float = 3.6,
    interactive: bool = True,
) -> Explorer:
    """Clearing along depth: a z slider showing SNR/CNR there and the segmentation of that slice.

    Nothing is segmented again: ``labels`` are a run's label stacks, ``profile`` the stack's
    rows of :func:`opsef_core.workflows.clearing.clearing_profiles`.

    Parameters
    ----------
    stack : Image or ndarray
        The ``ZYX`` stack.
    labels : dict
        ``{model: ZYX labels}`` (e.g. :func:`opsef_core.workflows.clearing.run_stack_labels`).
    profile : DataFrame
        One row per slice with ``z``, ``depth_pct`` (or ``percent_max_diameter``) and the
        ``metrics`` columns.
    truth : ndarray, optional
        ``ZYX`` truth nuclei (drawn in white, counted per slice).
    scores : DataFrame, optional
        Per-slice scores (``model``, ``z``, ``pixel_f1``, ``aji``, ``n_pred``) of this stack,
        from :func:`opsef_core.workflows.clearing.segmentation_along_depth`.
    metrics : list of str
        Profile columns plotted and reported.
    model : str, optional
        Model shown first (default: the first of ``labels``).
    z : int, optional
        Starting slice (default: the centre slice, 100 % depth).
    panel_size : float
        Inches per panel.
    interactive : bool
        Build the ipywidgets widget.

    Returns
    -------
    Explorer
        ``figure`` with 2 axes (the slice with contours; the metrics along z with the
        current slice marked); ``state`` holds ``z``, ``model``, ``depth_pct``, ``values``
        (``{metric: value at z}``), ``n_pred`` (and ``n_true``, ``pixel_f1``, ``aji`` when
        known); ``update(z=None, model=None)`` moves.

    Raises
    ------
    ConfigError
        No labels, an unknown model, or the profile lacks ``z`` or a metric.
    AxesError
        Labels that do not fit the stack.
    """
    from .viz import figure_png, overlay

    vol = _display_plane(stack)
    if vol.ndim != 3:
        raise AxesError(f"depth_explorer needs a ZYX stack, got {vol.shape}", getattr(stack, "source", None))
    labs = {str(k): np.asarray(v) for k, v in dict(labels).items()}
    if not labs:
        raise ConfigError("depth_explorer: no label stack to show")
    for name, v in labs.items():
        if v.shape != vol.shape:
            raise AxesError(f"depth_explorer: labels of {name!r} {v.shape} do not fit the stack {vol.shape}")
    if truth is not None and np.asarray(truth).shape != vol.shape:
        raise AxesError(f"depth_explorer: truth {np.asarray(truth).shape} does not fit the stack {vol.shape}")
    metrics = list(metrics)
    for col in ["z", *metrics]:
        if col not in profile.columns:
            raise ConfigError(f"depth_explorer: the profile has no {col!r} column; columns are {list(profile.columns)}")
    prof = profile.set_index("z").sort_index()
    depth_col = "depth_pct" if "depth_pct" in prof.columns else (
        "percent_max_diameter" if "percent_max_diameter" in prof.columns else None)
    nz = vol.shape[0]
    names = list(labs)
    model = names[0] if model is None else str(model)
    if model not in labs:
        raise ConfigError(f"depth_explorer: no labels of model {model!r}; models are {names}")
    if z is None:
        z = int(prof["centre_slice"].iloc[0]) if "centre_slice" in prof.columns else nz // 2
    limits = _limits(vol)
    sc = None
    if scores is not None and len(scores):
        sc = scores.set_index(["model", "z"])
    state: dict = {"n_slices": nz, "models": names}

    def values_at(k: int, name: str) -> None:
        row = prof.loc[k] if k in prof.index else None
        vals = {m: (float(row[m]) if row is not None else float("nan")) for m in metrics}
        state.update(z=k, model=name, values=vals,
                     depth_pct=float(row[depth_col]) if row is not None and depth_col else float("nan"),
                     n_pred=_n_objects(labs[name][k]))
        for key in ("n_true", "pixel_f1", "aji"):
            state.pop(key, None)
        if truth is not None:
            state["n_true"] = _n_objects(np.asarray(truth)[k])
        if sc is not None and (name, k) in sc.index:
            r = sc.loc[(name, k)]
            for key in ("pixel_f1", "aji"):
                if key in r:
                    state[key] = float(r[key])

    def render(k: int, name: str) -> np.ndarray:
        rgb = overlay(vol[k], labs[name][k], color="yellow", limits=limits)
        if truth is not None:
            t_rgb = overlay(vol[k], np.asarray(truth)[k], color="white", limits=limits)
            pred_edges = np.any(rgb != overlay(vol[k], None, limits=limits), axis=-1)
            t_edges = np.any(t_rgb != overlay(vol[k], None, limits=limits), axis=-1) & ~pred_edges
            rgb[t_edges] = t_rgb[t_edges]
        return rgb

    def draw_profile(ax) -> None:
        zs = prof.index.to_numpy()
        for m in metrics:
            ax.plot(zs, prof[m].to_numpy(float), label=m)
        ax.axvline(state["z"], color="k", lw=1, ls="--")
        ax.set_xlabel("z (slice)")
        ax.set_ylabel("value")
        ax.legend(fontsize=7)
        d = state["depth_pct"]
        ax.set_title(f"z={state['z']}" + ("" if np.isnan(d) else f" ({d:.0f} % depth)"), fontsize=8)

    def profile_png() -> bytes:
        f = new_figure((panel_size * 1.2, panel_size))
        draw_profile(f.subplots())
        f.tight_layout()
        return figure_png(f, dpi=80)

    def text() -> str:
        d = state["depth_pct"]
        parts = [f"z={state['z']}" + ("" if np.isnan(d) else f" ({d:.0f} % of the max. diameter depth)")]
        parts.append(", ".join(f"{m} {v:.3g}" for m, v in state["values"].items()))
        seg = f"{state['model']}: {state['n_pred']} nuclei"
        if "n_true" in state:
            seg += f" (truth {state['n_true']})"
        if "pixel_f1" in state:
            seg += f", pixel F1 {state['pixel_f1']:.3f}"
        if "aji" in state:
            seg += f", AJI {state['aji']:.3f}"
        return " — ".join(parts + [seg])

    values_at(int(z), model)
    fig = new_figure((panel_size * 2.2, panel_size + 0.3))
    ax_im, ax_pr = fig.subplots(1, 2, width_ratios=[1, 1.2])
    _show(ax_im, render(state["z"], model), f"{model} (yellow)" + (", truth (white)" if truth is not None else ""))
    draw_profile(ax_pr)
    fig.suptitle(f"{getattr(stack, 'name', 'stack')}: quality and segmentation along depth", fontsize=9)
    fig.tight_layout()

    widgets = _ipywidgets(interactive)
    view = info = plot = None

    def update(z: int | None = None, model: str | None = None):
        k = state["z"] if z is None else int(z)
        if not 0 <= k < nz:
            raise AxesError(f"slice {k} out of range 0..{nz - 1}")
        name = state["model"] if model is None else str(model)
        if name not in labs:
            raise ConfigError(f"depth_explorer: no labels of model {name!r}; models are {names}")
        moved = k != state["z"]
        values_at(k, name)
        rgb = render(k, name)
        if view is not None:
            view.value = _png(rgb)
            if moved:
                plot.value = profile_png()
            info.value = text()
        return state["values"]

    widget = None
    if widgets is not None:
        sz = widgets.IntSlider(value=state["z"], min=0, max=nz - 1, description="z", continuous_update=False)
        sz.observe(lambda ch: update(z=ch["new"]), names="value")
        controls = [sz]
        if len(names) > 1:
            dm = widgets.Dropdown(options=names, value=model, description="model")
            dm.observe(lambda ch: update(model=ch["new"]), names="value")
            controls.append(dm)
        info = widgets.HTML(text())
        view = widgets.Image(value=_png(render(state["z"], model)), format="png",
                             layout=widgets.Layout(max_width="420px"))
        plot = widgets.Image(value=profile_png(), format="png", layout=widgets.Layout(max_width="440px"))
        widget = widgets.VBox([*controls, info, widgets.HBox([view, plot])])
    return Explorer(figure=fig, widget=widget, state=state, update=update)


# ----------------------------------------------------------------------------- HCS: channel fusion
def fusion_explorer(
    image: Image,
    params: Mapping[str, Any] | None = None,
    *,
    channels: Sequence[int | str] | None = None,
    method: str = "flow_average",
    truth: np.ndarray | None = None,
    prediction: Mapping[str, np.ndarray] | None = None,
    segmenter=None,
    panel_size: float = 2.6,
    interactive: bool = True,
) -> Explorer:
    """Channel subsets: single-channel masks next to their fusion, from one network pass per channel.

    The ``fusion`` backend's network pass (one Cellpose pass per channel of
    ``network_channels``) runs once; choosing a subset or a method only decodes
    (:meth:`FusionSegmenter.decode`, i.e. :func:`opsef_core.fusion.fuse`), the
    single-channel masks too (the subset of one channel, flow averaging).

    Parameters
    ----------
    image : Image
        A multichannel 2D image (``CYX``).
    params : dict, optional
        ``fusion`` backend parameters (Cellpose model, diameter, thresholds,
        ``network_channels``); ``channels`` and ``method`` are the explorer's controls.
    channels : list of int or str, optional
        The subset shown first (default: every network channel).
    method : str
        The fusion method shown first (``flow_average``, ``pixel_vote``,
        ``majority_vote``, ``staple``).
    truth : ndarray, optional
        Truth labels: titles show F1 at IoU 0.5.
    prediction : dict, optional
        A cached network pass of ``image`` with ``params`` (skips ``predict``).
    segmenter : Segmenter, optional
        A ``fusion`` backend instance (default: the registry's).
    panel_size : float
        Inches per panel.
    interactive : bool
        Build the ipywidgets widget.

    Returns
    -------
    Explorer
        ``figure`` with one axes per channel of the subset plus the fused result (and the
        truth when given); ``state`` holds ``channels`` (names), ``method``, ``labels``
        (fused), ``single`` (``{channel: labels}``), ``n_objects``, ``f1`` (``{panel:
        F1@0.5}`` with truth), ``n_predict`` and ``n_decode``;
        ``update(channels=None, method=None)`` re-decodes and returns the fused labels.

    Raises
    ------
    ConfigError
        An empty subset, an unknown method or channel.
    """
    from .fusion import FUSION_METHODS
    from .segment import get_segmenter
    from .viz import figure_png, overlay

    seg = segmenter if segmenter is not None else get_segmenter("fusion")
    base = {k: v for k, v in dict(params or {}).items() if k not in ("channels", "method")}
    p0 = seg.params(base)
    if "C" not in image.axes:
        raise AxesError("fusion_explorer: the image has no C axis", image.source)
    pool = [image.channel_names[i] for i in seg.network_channel_indices(image, p0)]
    state: dict = {"n_predict": 0, "n_decode": 0, "pool": pool}
    if prediction is None:
        prediction = seg.predict(image, p0)
        state["n_predict"] = 1
    truth = None if truth is None else np.asarray(truth)
    plane_cache: dict[str, tuple] = {}

    def names_of(chans) -> list[str]:
        out = []
        for c in chans:
            try:
                name = image.channel_names[image.channel_index(c)]
            except AxesError as exc:
                raise ConfigError(f"fusion_explorer: {exc.message}") from None
            if name not in pool:
                raise ConfigError(f"fusion_explorer: channel {name!r} has no network pass; channels are {pool}")
            out.append(name)
        if not out:
            raise ConfigError("fusion_explorer: choose at least one channel")
        return out

    def decode(chans: list[str], m: str) -> np.ndarray:
        lab = np.asarray(seg.decode(prediction, image, seg.params({**base, "channels": chans, "method": m})))
        state["n_decode"] += 1
        return lab

    def f1(lab) -> float | None:
        if truth is None:
            return None
        from .evaluate import match

        return float(match(truth, lab, threshold=0.5).f1)

    def plane(name: str):
        if name not in plane_cache:
            pl = np.asarray(image.sel(c=name).data) if "T" not in image.axes else np.asarray(
                image.sel(t=0).sel(c=name).data)
            plane_cache[name] = (pl, _limits(pl))
        return plane_cache[name]

    single: dict[str, np.ndarray] = {}

    def apply(chans: list[str], m: str) -> None:
        if m not in FUSION_METHODS:
            raise ConfigError(f"fusion_explorer: unknown method {m!r}; use {list(FUSION_METHODS)}")
        for c in chans:
            if c not in single:  # single-channel masks: decoded once, reused across subsets
                single[c] = decode([c], "flow_average")
        fused = decode(chans, m) if (len(chans) > 1 or m != "flow_average") else single[chans[0]]
        scores = {}
        if truth is not None:
            scores = {c: f1(single[c]) for c in chans}
            scores["fused"] = f1(fused)
        state.update(channels=list(chans), method=m, labels=fused, n_objects=_n_objects(fused),
                     single={c: single[c] for c in chans}, f1=scores)

    def draw(fig) -> None:
        chans = state["channels"]
        n = len(chans) + 1 + (truth is not None)
        axes = fig.subplots(1, n, squeeze=False)[0]
        for ax, c in zip(axes, chans):
            pl, lim = plane(c)
            score = f", F1 {state['f1'][c]:.2f}" if state["f1"] else ""
            _show(ax, overlay(pl, single[c], limits=lim), f"{c} alone\nn={_n_objects(single[c])}{score}")
        pl, lim = plane(chans[0])
        score = f", F1 {state['f1']['fused']:.2f}" if state["f1"] else ""
        _show(axes[len(chans)], overlay(pl, state["labels"], limits=lim),
              f"fused: {state['method']}\nn={state['n_objects']}{score}")
        if truth is not None:
            _show(axes[-1], overlay(pl, truth, limits=lim), f"truth\nn={_n_objects(truth)}")
        fig.tight_layout()

    def figure() -> Any:
        n = len(state["channels"]) + 1 + (truth is not None)
        f = new_figure((panel_size * n, panel_size + 0.5))
        draw(f)
        return f

    def text() -> str:
        out = f"{' + '.join(state['channels'])} fused by {state['method']}: {state['n_objects']} objects"
        if state["f1"]:
            out += f", F1@0.5 {state['f1']['fused']:.3f}"
        return out + f" (network passes: {state['n_predict']}, decodings: {state['n_decode']})"

    first = names_of(channels if channels is not None else pool)
    apply(first, method)
    fig = figure()
    widgets = _ipywidgets(interactive)
    view = info = None

    def update(channels: Sequence[int | str] | None = None, method: str | None = None):
        chans = names_of(channels) if channels is not None else state["channels"]
        apply(chans, state["method"] if method is None else method)
        if view is not None:
            view.value = figure_png(figure(), dpi=80)
            info.value = text()
        return state["labels"]

    widget = None
    if widgets is not None:
        boxes = [widgets.Checkbox(value=c in first, description=c, indent=False,
                                  layout=widgets.Layout(width="auto")) for c in pool]
        dm = widgets.Dropdown(options=list(FUSION_METHODS), value=method, description="method")

        def on_box(_):
            chosen = [b.description for b in boxes if b.value]
            if chosen:
                update(channels=chosen)
            else:  # an empty subset is refused: keep the last one
                info.value = "choose at least one channel — " + text()

        for b in boxes:
            b.observe(on_box, names="value")
        dm.observe(lambda ch: update(method=ch["new"]), names="value")
        info = widgets.HTML(text())
        view = widgets.Image(value=figure_png(fig, dpi=80), format="png", layout=widgets.Layout(max_width="900px"))
        widget = widgets.VBox([widgets.HBox(boxes), dm, info, view])
    return Explorer(figure=fig, widget=widget, state=state, update=update)
