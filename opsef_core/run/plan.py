"""Planning a run: combinations (pipelines × segmenter settings) and items (file × series × time point).

Nothing here reads pixels: :func:`plan` expands the config's grid, :func:`plan_items` lists the
run items from the files' metadata and pairs each with its ground truth and class mask.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..config import RunConfig, expand_sweep, segmenter_defaults
from ..errors import ConfigError, InputFileError, OpsefError
from ..io.naming import file_stem, find_partner, safe_name

__all__ = ["Combination", "Item", "MAX_COMBINATIONS", "count_combinations", "plan", "plan_items",
           "plan_table", "slug"]

#: a run of more combinations needs ``allow_large`` (``--allow-large``): a typo in a sweep
#: (a range of 1000 values instead of 10) must not start days of compute and a huge run.json
MAX_COMBINATIONS = 10_000

logger = logging.getLogger(__name__)

_SAFE = re.compile(r"[^A-Za-z0-9.+-]+")


def slug(text: Any) -> str:
    """A file-name-safe version of ``text`` (letters, digits, ``.``, ``+``, ``-``)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        number = f"{text:g}" if isinstance(text, float) else str(text)
        return ("-" if number.startswith("-") else "") + slug(number.lstrip("-"))  # keep the sign: -1 != 1
    if isinstance(text, (list, tuple)):  # "+" cannot come from an element: ["ax", "b"] != ["a", "xb"]
        return "+".join(slug(t) for t in text) or "x"
    return _SAFE.sub("-", str(text)).strip("-") or "x"


def _short_names(keys: list[str]) -> dict[str, str]:
    """Short names for swept parameters: the first word unless two keys share it."""
    first = {k: k.split("_")[0] or k for k in keys}
    counts = {v: list(first.values()).count(v) for v in first.values()}
    return {k: (first[k] if counts[first[k]] == 1 else k.replace("_", "")) for k in keys}


@dataclass(frozen=True)
class Combination:
    """One (pipeline, segmenter setting) pair of a run.

    Attributes
    ----------
    id : str
        Stable, file-name-safe id, e.g. ``p1-median__s2-classical_h2``.
    pipeline : str
        Pipeline name; ``pipeline_index`` is its 1-based position.
    pipeline_spec : dict
        The pipeline as in the config (``{"name", "steps"}``).
    setting_id : str
        The segmenter-setting part of the id (``s2-classical_h2``), the montage column.
    segmenter, backend : str
        The segmenter entry's name and its backend.
    params : dict
        Validated backend parameters (defaults filled in, JSON types).
    sweep : dict
        The swept values of this setting (empty without a sweep).
    network_key : str
        Settings with the same key share one network pass per image and pipeline.
    slices : bool
        Segment a 3D image plane by plane (``SegmenterConfig.slices``).
    """

    id: str
    pipeline_index: int
    pipeline: str
    pipeline_spec: dict
    setting_index: int
    setting_id: str
    segmenter: str
    backend: str
    params: dict
    sweep: dict
    network_key: str
    slices: bool = False

    @property
    def title(self) -> str:
        """Human-readable setting: segmenter name and swept values."""
        vals = ", ".join(f"{k}={v}" for k, v in self.sweep.items())
        return f"{self.segmenter}" + (f" ({vals})" if vals else "")

    def as_dict(self) -> dict:
        """JSON-serialisable description (recorded in run.json)."""
        return asdict(self)

    def columns(self) -> dict:
        """The columns that name this combination in every table (``params``: its parameters as JSON)."""
        return {"combination": self.id, "pipeline": self.pipeline, "segmenter": self.segmenter,
                "backend": self.backend, "setting": self.setting_id,
                "params": json.dumps(self.params, sort_keys=True, separators=(",", ":")),
                **{f"param_{k}": v if isinstance(v, (str, int, float, bool)) or v is None
                   else json.dumps(v) for k, v in self.sweep.items()}}


def count_combinations(config: RunConfig) -> int:
    """Pipelines × segmenter settings, counted without expanding the sweeps."""
    n = 0
    for s in config.segmenters:
        k = 1
        for vals in s.sweep.values():
            k *= len(vals)
        n += k
    return n * len(config.pipelines)


def _check_size(config: RunConfig, allow_large: bool) -> int:
    n = count_combinations(config)
    if n > MAX_COMBINATIONS and not allow_large:
        raise ConfigError(f"the config expands to {n:,} combinations, more than the limit of "
                          f"{MAX_COMBINATIONS:,}; narrow the sweeps, or pass --allow-large (allow_large=True)",
                          config.source)
    return n


def plan(config: RunConfig, *, allow_large: bool = False) -> list[Combination]:
    """Expand a config into its combinations: pipelines × segmenter settings.

    Parameters
    ----------
    config : RunConfig
        A validated config.
    allow_large : bool
        Expand more than :data:`MAX_COMBINATIONS` combinations.

    Returns
    -------
    list of Combination
        Pipelines in config order, then settings in config order (sweeps
        expanded as Cartesian products in key order).

    Raises
    ------
    ConfigError
        When a backend or a parameter is unknown, or the grid exceeds :data:`MAX_COMBINATIONS`
        without ``allow_large``.
    """
    from ..segment import get_segmenter

    _check_size(config, allow_large)
    settings = []
    index = 0
    for s in config.segmenters:
        seg = get_segmenter(s.backend)
        short = _short_names(list(s.sweep))
        for values in expand_sweep(s.sweep):
            index += 1
            params = seg.params({**segmenter_defaults(config, seg), **s.params, **values}).model_dump(mode="json")
            suffix = "".join(f"_{short[k]}{slug(v)}" for k, v in values.items())
            setting_id = f"s{index}-{slug(s.name)}{suffix}"
            settings.append((index, setting_id, s, params, values, seg.network_key(params)))
    combos = []
    for pi, p in enumerate(config.pipelines, start=1):
        pid = f"p{pi}-{slug(p.name)}"
        for index, setting_id, s, params, values, key in settings:
            combos.append(Combination(
                id=f"{pid}__{setting_id}", pipeline_index=pi, pipeline=p.name,
                pipeline_spec=p.model_dump(mode="json"), setting_index=index, setting_id=setting_id,
                segmenter=s.name, backend=s.backend, params=params, sweep=dict(values), network_key=key,
                slices=s.slices))
    return combos


@dataclass(frozen=True)
class Item:
    """One run item: one time point of one series of one file — the unit of work, resumption
    and distribution.

    Attributes
    ----------
    id : str
        File-name-safe, unique within the run: the file's stem, then ``__<series>`` for files
        with several series, ``__m<tile>`` for mosaic tiles and ``__t<time point>`` for
        time-lapse series (``plate__wellA__t002``).
    path : str
        Absolute path of the image file.
    ground_truth : str, optional
        Absolute path of its ground-truth label image (None: none found/configured).
    scene : int, optional
        Series index in the file (None: the file's only series).
    series : str, optional
        Series name as the file names it (None for single-series files).
    t : int, optional
        Time point (None: the series has no T axis).
    tile : int, optional
        Mosaic tile of a .lif mosaic series (tiles are separate items, not stitched).
    class_mask : str, optional
        This item's class mask when ``postprocess.class_mask.folder`` is configured.
    """

    id: str
    path: str
    ground_truth: str | None = None
    scene: int | None = None
    series: str | None = None
    t: int | None = None
    tile: int | None = None
    class_mask: str | None = None

    def columns(self) -> dict:
        """The columns that name this item in every table (``image``, ``file``, ``series``, ``t``)."""
        return {"image": self.id, "file": Path(self.path).name, "series": self.series, "t": self.t}


def _select_scenes(scenes: list[dict], selectors: list | None, path: Path) -> list[dict]:
    """The series a selector list picks, in file order; an entry that matches nothing is an error."""
    if selectors is None:
        return scenes
    picked: set[int] = set()
    n = len(scenes)
    for sel in selectors:
        if isinstance(sel, int) or (isinstance(sel, str) and sel.lstrip("-").isdigit()):
            i = int(sel)
            if not -n <= i < n:
                raise ConfigError(f"inputs.scenes: series {i} out of range, the file has {n} series", path)
            picked.add(i % n)
            continue
        hits = {s["index"] for s in scenes if s["name"] == sel or fnmatch.fnmatchcase(str(s["name"]), sel)}
        if not hits:
            raise ConfigError(f"inputs.scenes: no series named {sel!r}; the file has "
                              f"{[s['name'] for s in scenes]}", path)
        picked |= hits
    return [s for s in scenes if s["index"] in picked]


def _select_times(n_t: int | None, selectors: list[int] | None, path: Path, series: str) -> list[int | None]:
    """The time points a selector list picks (``[None]`` for a series without T)."""
    if n_t is None:
        if selectors is None or all(t in (0, -1) for t in selectors):
            return [None]
        raise ConfigError(f"inputs.time_points {selectors} given, but series {series!r} has no time axis", path)
    if selectors is None:
        return list(range(n_t))
    bad = [t for t in selectors if not -n_t <= t < n_t]
    if bad:
        raise ConfigError(f"inputs.time_points {bad} out of range: series {series!r} has {n_t} time points", path)
    return sorted({t % n_t for t in selectors})


def _n_time_points(config: RunConfig, path: Path, scene: dict) -> int | None:
    """Number of time points of a series (None without a T axis), from metadata only."""
    axes, shape = scene.get("axes"), scene.get("shape")
    if config.inputs.axes is not None:  # the config overrides the file's axes: ask the reader
        from .. import io

        img = io.read_image(path, scene=scene["index"], axes=config.inputs.axes, lazy=True,
                            tile=0 if scene.get("n_tiles", 1) > 1 else None)
        return img.size("T") if "T" in img.axes else None
    if not axes or "T" not in axes or not shape:
        return None
    return int(shape[axes.index("T")])


def _file_items(config: RunConfig, path: Path) -> list[dict]:
    """The (scene, series, tile, t) of one file's items, and whether the file yields one item only."""
    from .. import io

    try:
        scenes = io.list_scenes(path)
    except OpsefError as exc:  # an unreadable file is still an item: it fails, recorded, when run
        logger.warning("%s: %s", path, exc)
        return [{"scene": None, "series": None, "tile": None, "t": None, "parts": []}]
    multi = len(scenes) > 1
    out = []
    for sc in _select_scenes(scenes, config.inputs.scenes, path):
        series = str(sc["name"]) if multi else None
        n_tiles = int(sc.get("n_tiles", 1) or 1)
        n_t = None if sc.get("problem") else _n_time_points(config, path, sc)
        # a series with a problem fails when read, with the problem as its error
        times = [None] if sc.get("problem") else _select_times(n_t, config.inputs.time_points, path,
                                                               str(sc["name"]))
        width = max(3, len(str((n_t or 1) - 1)))
        for tile in range(n_tiles):
            for t in times:
                parts = ([safe_name(series, "series")] if multi else []) \
                    + ([f"m{tile:03d}"] if n_tiles > 1 else []) \
                    + ([f"t{t:0{width}d}"] if t is not None and (n_t or 0) > 1 else [])
                out.append({"scene": sc["index"] if multi else None, "series": series,
                            "tile": tile if n_tiles > 1 else None, "t": t, "parts": parts})
    return out


def plan_items(config: RunConfig) -> list[Item]:
    """The run items of a config: every (file, series, time point), with ground truth and masks.

    Every series and every time point of every file is an item unless ``inputs.scenes`` /
    ``inputs.time_points`` narrow them; mosaic tiles of a .lif are separate items.  Ground
    truth is ``<item id><label_suffix>.tif`` in the ground-truth folder, or, for files that
    give one item only, ``<file stem><label_suffix>.tif`` (or the image's own file name).

    Raises
    ------
    InputFileError
        When ``inputs.path`` does not exist.
    EmptyFolderError
        When a folder has no file matching the patterns.
    ConfigError
        When the ground-truth or class-mask folder does not exist, or a selector matches
        nothing in a file.
    """
    from .. import io

    inp = config.inputs
    src = config.resolve(inp.path)
    if not src.exists():
        raise InputFileError("input path does not exist (inputs.path in the config)", src)
    if src.is_dir():
        files = io.discover(src, include=tuple(inp.include), exclude=tuple(inp.exclude))
    else:
        files = [src]
    if inp.limit:
        files = files[: inp.limit]
    gt_dir = config.resolve(inp.ground_truth)
    if gt_dir is not None and not gt_dir.is_dir():
        raise ConfigError("ground-truth folder does not exist (inputs.ground_truth)", gt_dir)
    cm = (config.postprocess or {}).get("class_mask") or {}
    mask_dir = config.resolve(cm["folder"]) if cm.get("folder") else None
    if mask_dir is not None and not mask_dir.is_dir():
        raise ConfigError("class-mask folder does not exist (postprocess.class_mask.folder)", mask_dir)
    items, seen = [], set()
    for f in files:
        f = Path(f)
        stem = file_stem(f)
        entries = _file_items(config, f)
        single = len(entries) == 1 and not entries[0]["parts"]
        for e in entries:
            base = "__".join([safe_name(stem)] + e["parts"])
            iid, n = base, 2
            while iid in seen:
                iid, n = f"{base}-{n}", n + 1
            seen.add(iid)
            names = [iid] + ([stem] if single else [])
            gt = find_partner(gt_dir, names, inp.label_suffix, exact=f.name if single else None) \
                if gt_dir else None
            if gt_dir is not None and gt is None:
                logger.warning("no ground truth for %s in %s (looked for %s%s.tif)", iid, gt_dir, iid,
                               inp.label_suffix)
            mask = find_partner(mask_dir, names, cm.get("suffix", "")) if mask_dir else None
            items.append(Item(id=iid, path=str(f.resolve()), ground_truth=str(gt) if gt else None,
                              scene=e["scene"], series=e["series"], t=e["t"], tile=e["tile"],
                              class_mask=str(mask) if mask else None))
    return items


def plan_table(config: RunConfig, *, allow_large: bool = False) -> str:
    """The text ``opsef plan`` prints: the items, the combinations and their product.

    Past :data:`MAX_COMBINATIONS` (without ``allow_large``) it answers at once with the count
    and the refusal, without expanding the grid.
    """
    n = count_combinations(config)
    if n > MAX_COMBINATIONS and not allow_large:
        return "\n".join([f"config: {config.source or '(in memory)'}",
                          f"{len(config.pipelines)} pipelines x {n // len(config.pipelines):,} segmenter settings "
                          f"= {n:,} combinations: more than the limit of {MAX_COMBINATIONS:,}.",
                          "opsef run refuses this grid without --allow-large; narrow the sweeps "
                          "(opsef plan --allow-large lists them)."])
    combos = plan(config, allow_large=allow_large)
    try:
        items = plan_items(config)
        n_img = str(len(items))
    except OpsefError as exc:
        items, n_img = [], f"? ({exc})"
    lines = [f"config: {config.source or '(in memory)'}",
             f"inputs: {config.resolve(config.inputs.path)}"]
    if items:
        wi = max(len("item"), *(len(it.id) for it in items))
        lines.append(f"{'#':>3}  {'item':<{wi}}  {'series':<12}  {'t':>4}  ground truth")
        for i, it in enumerate(items, start=1):
            t = "-" if it.t is None else str(it.t)
            gt = Path(it.ground_truth).name if it.ground_truth else "-"
            lines.append(f"{i:>3}  {it.id:<{wi}}  {str(it.series or '-'):<12}  {t:>4}  {gt}")
    w = max(len(c.id) for c in combos)
    wp = max(len("pipeline"), *(len(c.pipeline) for c in combos))
    wb = max(len("backend"), *(len(c.backend) for c in combos))
    lines.append(f"{'#':>3}  {'combination':<{w}}  {'pipeline':<{wp}}  {'backend':<{wb}}  swept parameters")
    for i, c in enumerate(combos, start=1):
        sweep = ", ".join(f"{k}={v}" for k, v in c.sweep.items()) or "-"
        lines.append(f"{i:>3}  {c.id:<{w}}  {c.pipeline:<{wp}}  {c.backend:<{wb}}  {sweep}")
    n_keys = len({(c.pipeline, c.network_key) for c in combos})
    lines.append(f"{len(config.pipelines)} pipelines x {len(combos) // len(config.pipelines)} segmenter "
                 f"settings = {len(combos)} combinations ({n_keys} network passes per item)")
    n_files = len({it.path for it in items})
    total = len(items) * len(combos) if items else "?"
    lines.append(f"{n_img} items ({n_files} files x series x time points) x {len(combos)} combinations "
                 f"= {total} segmentations")
    return "\n".join(lines)
