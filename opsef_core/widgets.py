"""Interactive explorers for the notebooks, each with a static matplotlib figure.

Four explorers, each returning an :class:`Explorer` holding an ipywidgets widget
(``None`` when ipywidgets is not installed) **and** a static matplotlib figure
drawn at creation, so a headless run (papermill, CI) still shows and saves
something meaningful (``run.save_figure(explorer.figure, ...)``):

- :func:`parameter_explorer` — decoding parameters on sliders with a live
  overlay; the network runs **once** (:meth:`Segmenter.predict`), a slider
  change only re-decodes (:meth:`Segmenter.decode`);
- :func:`grid_browser` — browse the montages (rows = pipelines, columns =
  segmenter settings) of a run folder, or a montage dict as taken by
  :func:`opsef_core.viz.montage`;
- :func:`slice_browser` — a z slider through a 3D stack with optional label contours;
- :func:`object_filter` — range sliders on measured properties, a scatter plot
  of two of them and the filtered overlay (kept objects green, removed red).

ipywidgets is imported lazily; figures are made on matplotlib's Agg canvas
(no display needed) and are not registered with pyplot, so they never pile up.
"""

from __future__ import annotations

import io as _io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .errors import AxesError, ConfigError, RunFolderError
from .image import Image
from .viz import new_figure

__all__ = ["Explorer", "parameter_explorer", "grid_browser", "slice_browser", "object_filter"]

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
    import matplotlib.image as mimage

    buf = _io.BytesIO()
    mimage.imsave(buf, np.asarray(rgb), format="png")
    return buf.getvalue()


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
def parameter_explorer(
    image: Image,
    segmenter,
    params: Mapping[str, Any] | None = None,
    sliders: Mapping[str, tuple[float, float, float]] | None = None,
    *,
    prediction: Mapping[str, np.ndarray] | None = None,
    truth: np.ndarray | None = None,
    n_static: int = 3,
    panel_size: float = 3.0,
    interactive: bool = True,
) -> Explorer:
    """Decoding parameters on sliders with a live contour overlay (one network pass).

    The segmenter's network pass (:meth:`Segmenter.predict`) runs once (or not at all
    when ``prediction`` is given); every slider change only calls :meth:`Segmenter.decode`.
    Sliders on parameters that change the network pass (the backend's
    ``network_fields``) are refused.

    Parameters
    ----------
    image : Image
        Input image (no T axis, or a single time point); 3D images are shown by their
        middle z slice.
    segmenter : str or Segmenter
        Backend name (``"classical"``, ``"stardist"``, ``"cellpose"``, ``"unet"``) or instance.
    params : dict, optional
        Base parameters (network and decoding).
    sliders : dict, optional
        ``{decoding parameter: (min, max, step)}``; integer triples give integer sliders.
        A slider starts at the base value, or at its minimum when the base value is not a
        number (e.g. ``threshold="otsu"``).
    prediction : dict, optional
        A cached network pass of ``image`` with ``params`` (skips ``predict``).
    truth : ndarray, optional
        Truth labels: panel titles then show F1 at IoU 0.5.
    n_static : int
        Number of values of the first slider drawn in the static figure (min to max).
    panel_size : float
        Inches per figure panel.
    interactive : bool
        Build the ipywidgets widget (False: static figure only).

    Returns
    -------
    Explorer
        ``figure`` with ``2 + n_static`` axes (input, current parameters, the sweep of the
        first slider; 2 axes without sliders); ``state`` holds ``params``, ``labels``,
        ``n_objects`` (and ``f1`` with truth), ``n_predict`` and ``n_decode``;
        ``update(**values)`` re-decodes and returns the labels.

    Raises
    ------
    ConfigError
        A slider names an unknown parameter or a network parameter, or has min > max.
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
    state: dict = {"n_predict": 0, "n_decode": 0}
    if prediction is None:
        prediction = seg.predict(image, seg.params(base))
        state["n_predict"] = 1
    plane = _display_plane(image, base.get("channel"))
    limits = _limits(plane if plane.ndim == 2 else plane[plane.shape[0] // 2])

    def decode(values: Mapping[str, Any]) -> np.ndarray:
        p = seg.params({**base, **values})
        labels = np.asarray(seg.decode(prediction, image, p))
        state["n_decode"] += 1
        return labels

    def title(values: Mapping[str, Any], labels: np.ndarray) -> str:
        head = _fmt(values) or "defaults"
        text = f"{head}\nn={_n_objects(labels)}"
        if truth is not None:
            from .evaluate import match

            text += f", F1@0.5={match(truth, labels, threshold=0.5).f1:.3f}"
        return text

    # a non-numeric base value (e.g. threshold="otsu") starts the slider at its minimum
    current = {k: (base[k] if isinstance(base[k], (int, float)) and not isinstance(base[k], bool)
                   else sliders[k][0]) for k in sliders}
    labels = decode(current)
    state.update(params={**base}, labels=labels, n_objects=_n_objects(labels))

    # static figure: input, current parameters, sweep of the first slider
    sweep: list = []
    if sliders:
        first = next(iter(sliders))
        lo, hi, _ = sliders[first]
        vals = np.linspace(lo, hi, max(int(n_static), 1))
        is_int = all(isinstance(v, int) for v in sliders[first])
        sweep = [(first, int(round(v)) if is_int else float(v)) for v in vals]
    ncols = 2 + len(sweep)
    fig = new_figure((panel_size * ncols, panel_size + 0.6))
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    _show(axes[0], overlay(plane, None, limits=limits), f"{image.name}: input")
    _show(axes[1], overlay(plane, labels, limits=limits), title(current, labels))
    for ax, (name, v) in zip(axes[2:], sweep):
        lab = decode({**current, name: v})
        _show(ax, overlay(plane, lab, limits=limits), title({name: v}, lab))
    fig.suptitle(f"{seg.name}: decoding parameters (one network pass)", fontsize=9)
    fig.tight_layout()

    widgets = _ipywidgets(interactive)
    view = info = None

    def update(**values):
        unknown = [k for k in values if k not in sliders]
        if unknown:
            raise ConfigError(f"parameter_explorer: no slider for {unknown}; sliders are {list(sliders)}")
        current.update(values)
        lab = decode(current)
        state.update(params={**base, **current}, labels=lab, n_objects=_n_objects(lab))
        if view is not None:
            view.value = _png(overlay(plane, lab, limits=limits))
            info.value = title(current, lab).replace("\n", " — ")
        return lab

    widget = None
    if widgets is not None:
        controls = []
        for name, (lo, hi, step) in sliders.items():
            is_int = all(isinstance(v, int) for v in (lo, hi, step))
            cls = widgets.IntSlider if is_int else widgets.FloatSlider
            s = cls(value=current[name], min=lo, max=hi, step=step, description=name,
                    continuous_update=False, style={"description_width": "initial"})
            s.observe(lambda ch, n=name: update(**{n: ch["new"]}), names="value")
            controls.append(s)
        view = widgets.Image(value=_png(overlay(plane, labels, limits=limits)), format="png",
                             layout=widgets.Layout(max_width="600px"))
        info = widgets.HTML(title(current, labels).replace("\n", " — "))
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
def object_filter(
    table,
    labels: np.ndarray,
    image: Image | np.ndarray,
    x: str,
    y: str,
    *,
    properties: Sequence[str] | None = None,
    ranges: Mapping[str, tuple[float | None, float | None]] | None = None,
    channel: int | str | None = None,
    panel_size: float = 4.0,
    interactive: bool = True,
) -> Explorer:
    """Filter objects by measured properties: range sliders, scatter plot, filtered overlay.

    Filtering uses :func:`opsef_core.postprocess.filter_objects` on the given table (no
    re-measuring, no re-segmentation).

    Parameters
    ----------
    table : DataFrame
        One row per object with a ``label`` column (as from
        :func:`opsef_core.measure.measure_objects`).
    labels : ndarray
        The labels the table describes (``YX`` or ``ZYX``; 3D shown by the middle slice).
    image : Image or ndarray
        Image to draw the contours on (spatial shape of ``labels``).
    x, y : str
        Columns on the scatter plot's axes.
    properties : list of str, optional
        Columns with range sliders (default ``[x, y]``).
    ranges : dict, optional
        Initial ``{column: (min, max)}`` (None = open side); default the full range.
    channel : int or str, optional
        Channel of a multichannel ``Image`` to show.
    panel_size : float
        Inches per panel.
    interactive : bool
        Build the ipywidgets widget.

    Returns
    -------
    Explorer
        ``figure`` with 2 axes (scatter: kept blue, removed grey; overlay: kept green,
        removed red); ``state`` holds ``ranges``, ``labels`` (filtered), ``kept`` (table)
        and ``n_kept``; ``update(**{column: (min, max)})`` applies new ranges.

    Raises
    ------
    ConfigError
        A named column is missing from the table, or the table has no ``label`` column.
    AxesError
        Labels and image differ in shape.
    """
    from .postprocess import filter_objects
    from .viz import overlay

    if "label" not in table.columns:
        raise ConfigError("object_filter: the table needs a 'label' column (as from measure_objects)")
    props = list(properties or [x, y])
    for col in {x, y, *props}:
        if col not in table.columns:
            raise ConfigError(f"object_filter: no column {col!r}; columns are {sorted(map(str, table.columns))}")
    lab = np.asarray(labels)
    plane = _display_plane(image, channel)
    if plane.shape != lab.shape:
        raise AxesError(f"object_filter: labels of shape {lab.shape} do not fit the image {plane.shape}",
                        getattr(image, "source", None))
    lab2 = lab if lab.ndim == 2 else lab[lab.shape[0] // 2]
    img2 = plane if plane.ndim == 2 else plane[plane.shape[0] // 2]
    limits = _limits(img2)
    bounds = {}
    for col in props:
        v = np.asarray(table[col], float)
        v = v[np.isfinite(v)]
        bounds[col] = (float(v.min()), float(v.max())) if v.size else (0.0, 1.0)
    current = {col: tuple(bounds[col]) for col in props}
    for col, r in dict(ranges or {}).items():
        if col not in props:
            props.append(col)
            v = np.asarray(table[col], float)
            bounds[col] = (float(np.nanmin(v)), float(np.nanmax(v)))
        current[col] = (bounds[col][0] if r[0] is None else float(r[0]), bounds[col][1] if r[1] is None else float(r[1]))
    state: dict = {}

    def apply() -> np.ndarray:
        filtered, kept = filter_objects(lab, dict(current), table=table)
        state.update(ranges=dict(current), labels=filtered, kept=kept, n_kept=len(kept))
        return filtered

    def draw_overlay(filtered: np.ndarray) -> np.ndarray:
        f2 = filtered if filtered.ndim == 2 else filtered[filtered.shape[0] // 2]
        removed = np.where(f2 > 0, 0, lab2)
        rgb = overlay(img2, removed, color="red", limits=limits)
        kept_rgb = overlay(img2, f2, color="lime", limits=limits)
        mask = np.any(kept_rgb != overlay(img2, None, limits=limits), axis=-1)
        rgb[mask] = kept_rgb[mask]
        return rgb

    def draw_scatter(ax) -> None:
        keep = table["label"].isin(state["kept"]["label"]).to_numpy()
        ax.scatter(table[x][~keep], table[y][~keep], s=12, c="0.7", label="removed")
        ax.scatter(table[x][keep], table[y][keep], s=12, c="tab:blue", label="kept")
        for col, axis in ((x, "x"), (y, "y")):
            if col in current:
                lo, hi = current[col]
                (ax.axvspan if axis == "x" else ax.axhspan)(lo, hi, color="tab:blue", alpha=0.06)
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.legend(fontsize=7, loc="best")
        ax.set_title(f"kept {state['n_kept']} of {len(table)}", fontsize=8)

    filtered = apply()
    fig = new_figure((panel_size * 2, panel_size))
    ax_sc, ax_im = fig.subplots(1, 2)
    draw_scatter(ax_sc)
    _show(ax_im, draw_overlay(filtered), f"kept (green) / removed (red)\n{_fmt({k: v for k, v in current.items()})}")
    fig.tight_layout()

    widgets = _ipywidgets(interactive)
    view = info = None

    def update(**new_ranges):
        for col, r in new_ranges.items():
            if col not in current:
                raise ConfigError(f"object_filter: no slider for {col!r}; sliders are {list(current)}")
            current[col] = (float(r[0]), float(r[1]))
        out = apply()
        if view is not None:
            view.value = _png(draw_overlay(out))
            info.value = f"kept {state['n_kept']} of {len(table)} objects"
        return out

    widget = None
    if widgets is not None:
        controls = []
        for col in current:
            lo, hi = bounds[col]
            step = (hi - lo) / 200 if hi > lo else 1.0
            s = widgets.FloatRangeSlider(value=current[col], min=lo, max=hi if hi > lo else lo + 1, step=step,
                                         description=col, continuous_update=False,
                                         style={"description_width": "initial"})
            s.observe(lambda ch, c=col: update(**{c: ch["new"]}), names="value")
            controls.append(s)
        info = widgets.HTML(f"kept {state['n_kept']} of {len(table)} objects")
        view = widgets.Image(value=_png(draw_overlay(filtered)), format="png",
                             layout=widgets.Layout(max_width="600px"))
        widget = widgets.VBox([*controls, info, view])
    return Explorer(figure=fig, widget=widget, state=state, update=update)
