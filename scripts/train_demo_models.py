#!/usr/bin/env python
"""Train every demo model shipped in ``models/`` from the bundled ``demo_data/``.

Models (names as the segmenters find them under ``models/``):

- ``stardist2d_demo`` — StarDist 2D on ``demo_data/nuclei2d``;
- ``stardist3d_demo`` — StarDist 3D on ``demo_data/spheroid_clearing``;
- ``cellpose_demo``   — a Cellpose CPnet from no weights on ``demo_data/nuclei2d``;
- ``unet2d_demo``     — opsef's 3-class U-Net on ``demo_data/nuclei2d``;
- ``unet3d_demo``     — opsef's 3-class 3D U-Net on ``demo_data/spheroid_clearing``.

The bundled 3D models come from ``scripts/train_3d_models.py`` (the same trainers on 24 more
generated stacks, scored on a held-out stack; ``make models`` runs it); the ``stardist3d`` and
``unet3d`` choices here keep the older recipes on the demo stacks alone.

Each is trained by its trainer's ``train_demo_*`` function (the recipes live there,
in :mod:`opsef_core.train.stardist`, :mod:`opsef_core.train.cellpose` and
:mod:`opsef_core.train.unet`).  At the end the F1 at IoU 0.5 (pooled over the 8
images) of each 2D model on ``demo_data/nuclei2d`` is printed (the 2D models were
trained on those images: this checks that training worked, it is not a held-out
score; the 3D model reports its validation F1 from ``training.json``).

Usage::

    python scripts/train_demo_models.py                      # all, into models/ (about 8 min on 2 cores)
    python scripts/train_demo_models.py --only unet --out /tmp/models
    python scripts/train_demo_models.py --only stardist2d --only cellpose

With ``--out DIR`` the models are written to ``DIR/<name>`` instead of ``models/<name>``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))

logger = logging.getLogger("train_demo_models")

#: choice -> (model folder names, backend used to evaluate the 2D ones)
MODELS = {
    "stardist2d": ("stardist2d_demo", "stardist"),
    "stardist3d": ("stardist3d_demo", None),
    "cellpose": ("cellpose_demo", "cellpose"),
    "unet": ("unet2d_demo", "unet"),
    "unet3d": ("unet3d_demo", None),
}
ORDER = tuple(MODELS)
ALIASES = {"stardist": ("stardist2d", "stardist3d"), "all": ORDER}


def build_parser() -> argparse.ArgumentParser:
    """The script's argument parser."""
    p = argparse.ArgumentParser(
        prog="train_demo_models.py",
        description="Train the demo models (StarDist 2D/3D, Cellpose, U-Net) from demo_data/ and print "
                    "F1@0.5 of each 2D model on demo_data/nuclei2d.")
    p.add_argument("--only", action="append", metavar="NAME", default=None,
                   help=f"train only this model (repeatable; one of {', '.join(ORDER)}, 'stardist' for "
                        "both StarDist models, 'all')")
    p.add_argument("--out", type=Path, metavar="DIR", default=None,
                   help="folder to write the model folders into (default: the repository's models/)")
    p.add_argument("--demo-data", type=Path, metavar="DIR", default=REPO / "demo_data",
                   help="the demo data folder (default: the repository's demo_data/)")
    p.add_argument("--no-eval", action="store_true", help="skip the F1 evaluation at the end")
    p.add_argument("-v", "--verbose", action="store_true", help="log training progress")
    return p


def selected(only: list[str] | None) -> list[str]:
    """The model choices to train, in a fixed order, from the ``--only`` values.

    Raises
    ------
    opsef_core.errors.ConfigError
        An unknown name.
    """
    from opsef_core.errors import ConfigError

    if not only:
        return list(ORDER)
    chosen: set[str] = set()
    for item in only:
        for name in (n.strip().lower() for n in item.split(",") if n.strip()):
            if name in ALIASES:
                chosen.update(ALIASES[name])
            elif name in MODELS:
                chosen.add(name)
            elif name.removesuffix("_demo").replace("unet2d", "unet") in MODELS:
                chosen.add(name.removesuffix("_demo").replace("unet2d", "unet"))
            else:
                raise ConfigError(f"--only: unknown model {name!r}; choose from {', '.join(ORDER)}, "
                                  "stardist, all")
    return [n for n in ORDER if n in chosen]


def _work_root(demo_data: Path, out: Path | None) -> tuple[Path, tempfile.TemporaryDirectory | None]:
    """A root holding ``demo_data/`` and ``models/`` as the ``train_demo_*`` functions expect.

    Without ``--out`` that is the repository; with it, a temporary folder whose ``demo_data``
    and ``models`` are symbolic links to the demo data and to ``out``.
    """
    if out is None and demo_data.resolve() == (REPO / "demo_data").resolve():
        return REPO, None
    tmp = tempfile.TemporaryDirectory(prefix="opsef-demo-train-")
    root = Path(tmp.name)
    models = Path(out) if out is not None else REPO / "models"
    models.mkdir(parents=True, exist_ok=True)
    os.symlink(demo_data.resolve(), root / "demo_data")
    os.symlink(models.resolve(), root / "models")
    return root, tmp


def train(choice: str, root: Path) -> Path:
    """Train one demo model under ``root/models`` and return its folder."""
    if choice in ("stardist2d", "stardist3d"):
        from opsef_core.train.stardist import train_demo_stardist

        which = "2d" if choice == "stardist2d" else "3d"
        return Path(train_demo_stardist(root, which=(which,))[which])
    if choice == "cellpose":
        from opsef_core.train.cellpose import train_demo_cellpose

        return Path(train_demo_cellpose(root))
    if choice == "unet3d":
        from opsef_core.train.unet import train_demo_unet3d

        return Path(train_demo_unet3d(root))
    from opsef_core.train.unet import train_demo_unet

    return Path(train_demo_unet(root))


def f1_on_nuclei2d(backend: str, model: Path, demo_data: Path) -> float:
    """Pooled F1 at IoU 0.5 of a 2D model on every image of ``demo_data/nuclei2d``."""
    from opsef_core import evaluate, io
    from opsef_core.segment import get_segmenter

    seg = get_segmenter(backend)
    folder = demo_data / "nuclei2d"
    matchings = []
    for path in io.discover(folder / "images", include=("*.tif",)):
        image = io.read_image(path)
        labels = seg.segment(image, {"model": str(model)})
        matchings.append(evaluate.match(io.read_labels(folder / "labels" / path.name), labels, 0.5))
    return float(evaluate.pool(matchings)["f1"])


def main(argv: list[str] | None = None) -> int:
    """Train the selected demo models, then print their F1@0.5; returns the exit status."""
    from opsef_core.errors import OpsefError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        choices = selected(args.only)
        demo_data = Path(args.demo_data)
        if not (demo_data / "nuclei2d" / "images").is_dir():
            raise OpsefError("not a demo data folder (no nuclei2d/images inside)", demo_data)
        root, tmp = _work_root(demo_data, args.out)
        results = []
        try:
            for choice in choices:
                t0 = time.perf_counter()
                folder = train(choice, root)
                final = (Path(args.out) if args.out else REPO / "models") / folder.name
                results.append((choice, final, time.perf_counter() - t0))
                print(f"trained {folder.name} in {time.perf_counter() - t0:.0f} s: {final}", flush=True)
        finally:
            if tmp is not None:
                tmp.cleanup()
        if not args.no_eval:
            print("F1@0.5 on demo_data/nuclei2d (pooled over images; training data, not held out):")
            for choice, folder, _ in results:
                name, backend = MODELS[choice]
                if backend is None:
                    rec = json.loads((folder / "training.json").read_text()) if (folder / "training.json").is_file() else {}
                    val = rec.get("validation_f1@0.5")
                    shown = f"n/a (3D; validation F1@0.5 {val:.3f})" if isinstance(val, (int, float)) else "n/a (3D)"
                    print(f"  {name:<16} {shown}")
                else:
                    print(f"  {name:<16} {f1_on_nuclei2d(backend, folder, demo_data):.3f}")
    except OpsefError as exc:
        print(f"train_demo_models: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
