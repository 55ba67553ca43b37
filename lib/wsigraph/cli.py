"""The ``wsigraph`` command: features, graphs, predictions and heatmaps for your own slides.

::

    wsigraph features SLIDE... [--profile demo | --model CKPT] [--work DIR]
    wsigraph graph    SLIDE... [--profile demo | --model CKPT] [--work DIR]
    wsigraph predict  SLIDE... --model CKPT [--out predictions.csv]
    wsigraph heatmap  SLIDE    --model CKPT --out DIR

A checkpoint (``CKPT``) is a fold model that ``./run_all.sh`` saved (a ``.pt`` file under
``work/<profile>/cv/``, :mod:`wsigraph.checkpoint`), or the run record that lists them
(``results/<profile>/runs/<run>.json``: its fold-0 model, ``--fold`` another, ``--fold refit``
the model refit on every labelled slide when the run made one); it knows how
its slides' features were made (encoder, magnifications, patch size, tissue thresholds), and every
subcommand given ``--model`` makes a new slide's features the same way. Features and graphs are
cached in ``--work`` (default ``wsigraph-work``) by slide file name, so ``predict`` and
``heatmap`` reuse what ``features`` and ``graph`` made.

A slide without magnification metadata: pass ``--objective-power`` (the magnification of its
level 0, e.g. 40) or ``--mpp`` (µm per level-0 pixel; the magnification is then taken as
10 / mpp, so 0.25 µm/px is 40x and 0.5 is 20x, and the command says so).

Every error is one line, ``wsigraph: error: ...``, naming the file and what to do; exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

EPILOG = """examples:
  wsigraph features slides/*.svs --model results/demo/runs/h2mil_table1__h2-mil__esca__typing.json
  wsigraph predict slides/*.svs --model CKPT --out predictions.csv
  wsigraph heatmap slides/TCGA-XX.svs --model CKPT --out heatmaps/
  wsigraph features slide.tif --profile demo --objective-power 20
"""


class CLIError(Exception):
    """A user-facing error: printed as one line."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="wsigraph",
        description="Features, graphs, predictions and heatmaps for your own whole-slide images.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp, model_required=False):
        sp.add_argument("slides", nargs="+", type=Path, metavar="SLIDE", help="slide files")
        sp.add_argument(
            "--model", type=Path, required=model_required, metavar="CKPT",
            help="a saved fold model (.pt), or a run record (results/<profile>/runs/<run>.json) "
            "whose fold --fold model is used; its feature settings are used",
        )  # fmt: skip
        sp.add_argument(
            "--fold", type=_fold, default=0, metavar="N|refit",
            help="with a run record: the fold whose model is used (0), or 'refit' for the model "
            "refit on every labelled slide (04_train -p refit true)",
        )  # fmt: skip
        sp.add_argument(
            "--profile", default="demo",
            help="feature settings when no --model is given (default: demo)",
        )  # fmt: skip
        sp.add_argument("--encoder", help="override the encoder (e.g. kimianet)")
        sp.add_argument("--weights", type=Path, help="the encoder's weights file")
        sp.add_argument(
            "--work", type=Path, default=Path("wsigraph-work"),
            help="cache of features and graphs (default: ./wsigraph-work)",
        )  # fmt: skip
        sp.add_argument(
            "--objective-power", type=float,
            help="magnification of level 0, for slides whose metadata lacks it",
        )  # fmt: skip
        sp.add_argument("--mpp", type=float, help="µm per level-0 pixel (gives 10 / mpp x)")
        sp.add_argument("--device", default="auto", help="auto, cpu or cuda")
        return sp

    common(sub.add_parser("features", help="tissue, tiles and patch features"))
    common(sub.add_parser("graph", help="the pyramid graph of each slide"))
    pr = common(sub.add_parser("predict", help="class probabilities, one CSV line per slide"), True)
    pr.add_argument("--out", type=Path, default=Path("predictions.csv"), help="the CSV to write")
    hm = common(sub.add_parser("heatmap", help="patch importance: PNG overlay + GeoJSON"), True)
    hm.add_argument("--out", type=Path, required=True, help="folder for the PNG and GeoJSON")
    return p


def main(argv: list[str] | None = None) -> int:
    import warnings

    # a deprecation notice of a library import, not a message for whoever runs the command
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated")
    args = _parser().parse_args(argv)
    try:
        return {"features": _features, "graph": _graph, "predict": _predict, "heatmap": _heatmap}[
            args.command
        ](args)
    except Exception as e:  # one line for the user; the type for a bug report
        from wsigraph.checkpoint import CheckpointError
        from wsigraph.data.slides import SlideError

        known = (CLIError, CheckpointError, SlideError, FileNotFoundError, ValueError, OSError)
        if not isinstance(e, known):
            raise
        print(f"wsigraph: error: {e}", file=sys.stderr)
        return 2


# Settings ----------------------------------------------------------------------------------------
def _settings(args):
    """``(TilingSettings, encoder name, checkpoint or None)`` from ``--model`` or ``--profile``."""
    from wsigraph.data.features import TilingSettings

    ckpt = None
    if args.model is not None:
        from wsigraph.checkpoint import load_model

        ckpt = load_model(model_path(args.model, args.fold), _device(args.device))
        feats = ckpt.features
        if not feats.get("encoder"):
            raise CLIError(f"{args.model} does not say how its features were made (no encoder)")
        fields = TilingSettings.__dataclass_fields__
        given = {k: feats[k] for k in fields if k in feats}
        if "magnifications" in given:
            given["magnifications"] = tuple(given["magnifications"])
        settings = TilingSettings(**given)
        encoder = feats["encoder"]
    else:
        from wsigraph.profiles import get_profile

        profile = get_profile(args.profile)
        settings, encoder = TilingSettings.from_profile(profile), profile.encoder
    return settings, args.encoder or encoder, ckpt


def _fold(text: str) -> int | str:
    if text == "refit":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a fold number or 'refit', not {text!r}") from None


def model_path(model: Path, fold: int | str = 0) -> Path:
    """The checkpoint a ``--model`` names: a ``.pt`` file as it is, or a run record
    (``results/<profile>/runs/<run>.json``) whose repeat-0 fold ``fold`` model it lists (under
    the profile's work folder ``cv/``), or with ``fold="refit"`` its model refit on every
    labelled slide."""
    if model.suffix != ".json":
        return model
    from wsigraph.profiles import get_profile

    if not model.is_file():
        raise FileNotFoundError(f"no run record at {model}")
    record = json.loads(model.read_text())
    profile = get_profile(record.get("meta", {}).get("profile") or "demo")
    if fold == "refit":
        if not record.get("refit"):
            raise CLIError(
                f"{model} has no refit model; rerun its run with 04_train's -p refit true, or "
                "pass --fold N for a fold model"
            )
        return profile.work_dir / "cv" / record["refit"]["path"]
    listed = record.get("checkpoints") or []
    hit = [c for c in listed if c.get("repeat") == 0 and c.get("fold") == fold]
    if not hit:
        raise CLIError(
            f"{model} lists no saved model for fold {fold} (folds: "
            f"{sorted(c.get('fold') for c in listed) or 'none'}); rerun its 04_train run"
        )
    return profile.work_dir / "cv" / hit[0]["path"]


def _device(device: str) -> str:
    from wsigraph.train.loop import resolve_device

    return str(resolve_device(device))


def _manifest(args) -> pd.DataFrame:
    """One row per slide: ``slide_id`` (file stem), ``path``, ``objective_power``."""
    rows, seen = [], {}
    for path in args.slides:
        if not path.is_file():
            raise CLIError(f"{path}: no such slide file")
        sid = path.stem
        if sid in seen:
            raise CLIError(f"{path} and {seen[sid]} share the name {sid!r}: rename one")
        seen[sid] = path
        rows.append({"slide_id": sid, "path": str(path.resolve())})
    df = pd.DataFrame(rows)
    power = args.objective_power
    if power is None and args.mpp is not None:
        if args.mpp <= 0:
            raise CLIError(f"--mpp must be > 0, got {args.mpp}")
        power = 10.0 / args.mpp
        print(f"wsigraph: {args.mpp} µm/px taken as {power:g}x (10 / mpp)", file=sys.stderr)
    if power is not None:
        if power <= 0:
            raise CLIError(f"--objective-power must be > 0, got {power}")
        df["objective_power"] = float(power)
    return df


# Stages ------------------------------------------------------------------------------------------
def _features(args, settings=None, encoder=None, manifest=None) -> pd.DataFrame:
    from wsigraph.data.features import extract_features

    if settings is None:
        settings, encoder, _ = _settings(args)
    manifest = _manifest(args) if manifest is None else manifest
    summary = extract_features(
        manifest, args.work / "features", settings, encoder, args.weights,
        device=args.device, num_workers=0,
    )  # fmt: skip
    failed = summary[summary["status"] == "failed"]
    for _, row in failed.iterrows():
        print(f"wsigraph: {row['slide_id']}: {row.get('error', 'failed')}", file=sys.stderr)
    if isinstance(args.command, str) and args.command == "features":
        print(f"features of {len(summary) - len(failed)} slide(s) in {args.work / 'features'}")
        return 1 if len(failed) else 0
    return summary


def _graph(args) -> int | dict:
    from wsigraph.graphs.build import build_graphs, graph_path
    from wsigraph.graphs.pyramid import load_graph

    settings, encoder, ckpt = _settings(args)
    manifest = _manifest(args)  # once: its --mpp note is printed once
    _features(args, settings, encoder, manifest)
    summary = build_graphs(manifest, args.work / "features", args.work / "graphs")
    bad = summary[~summary["status"].isin(["done", "skipped"])]
    if args.command == "graph":
        print(f"graphs of {len(summary) - len(bad)} slide(s) in {args.work / 'graphs'}")
        return 1 if len(bad) else 0
    graphs = {}
    for sid in manifest["slide_id"]:
        path = graph_path(args.work / "graphs", sid)
        if path.exists():
            graphs[sid] = load_graph(path)
    return {"graphs": graphs, "manifest": manifest, "checkpoint": ckpt, "failed": bad}


def _predict(args) -> int:
    from wsigraph.io import atomic_path
    from wsigraph.progress import progress_bar

    made = _graph(args)
    ckpt = made["checkpoint"]
    rows = []
    for sid, g in progress_bar(list(made["graphs"].items()), desc="predict", unit="slide"):
        p = ckpt.predict(g).numpy()
        path = made["manifest"].set_index("slide_id").loc[sid, "path"]
        row = {"slide_id": sid, "path": path}
        row |= {f"p_{ckpt.class_name(c)}": float(p[c]) for c in range(ckpt.n_classes)}
        rows.append(row | {"predicted": ckpt.class_name(int(np.argmax(p)))})
    _writable(args.out.parent if args.out.parent != Path("") else Path("."), "--out")
    with atomic_path(args.out) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    print(f"{len(rows)} prediction(s) -> {args.out}")
    return 1 if len(made["failed"]) else 0


def _heatmap(args) -> int:
    if len(args.slides) != 1:
        raise CLIError("heatmap draws one slide at a time: pass a single SLIDE")
    _writable(args.out, "--out")
    made = _graph(args)
    if not made["graphs"]:
        raise CLIError(f"{args.slides[0]}: no graph was made (see the lines above)")
    sid, graph = next(iter(made["graphs"].items()))
    ckpt = made["checkpoint"]
    heat, cluster, centre_fitness, probs = patch_importance(ckpt, graph)
    power = made["manifest"].get("objective_power", pd.Series([None])).iloc[0]
    png, geojson = write_heatmap(
        args.slides[0], graph, (heat, cluster, centre_fitness), probs, ckpt, args.out, sid,
        power, args.mpp,
    )  # fmt: skip
    print(f"heatmap -> {png}\nGeoJSON (QuPath: File > Import objects) -> {geojson}")
    return 0


def _writable(folder: Path, option: str) -> None:
    """Create ``folder`` if needed and check that a file can be written there."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".wsigraph-write-check"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise CLIError(
            f"cannot write to {folder} ({e.strerror}): pass {option} a writable folder"
        ) from None


# Importance --------------------------------------------------------------------------------------
def patch_importance(ckpt, graph) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per node of ``graph``: the model's patch importance on a 0-1 scale (IHPool fitness,
    the product of the min-max-normalised fitness of every pooling layer) and its last-layer
    structure; the fitness of each structure's centre; the class probabilities.

    Raises:
        CLIError: for a model without IHPool layers (H2-MIL and HIGT have them).
    """
    import torch
    from torch_geometric.data import Batch

    from wsigraph.viz.interpret import fitness_map

    model = ckpt.model.eval()
    batch = Batch.from_data_list([ckpt.prepare(graph)])
    try:
        with torch.no_grad():
            logits, infos = model(batch, return_info=True)
        heat, cluster, centre_fitness = fitness_map(infos)
    except (TypeError, ValueError) as e:
        raise CLIError(
            f"model {ckpt.model_name!r} has no patch importance to draw ({e}); heatmap needs "
            "a model with IHPool layers (H2-MIL, HIGT)"
        ) from None
    return heat, cluster, centre_fitness, logits.softmax(-1).reshape(-1).numpy()


def patch_polygons(graph, level: int) -> tuple[np.ndarray, float]:
    """The node indices of ``level`` and the side (level-0 px) of its patches, from the spacing
    of the patch centres."""
    from wsigraph.viz.interpret import _side

    sel = np.flatnonzero(graph.level.numpy() == level)
    return sel, _side(graph.pos.numpy()[sel])


def write_geojson(path: Path, graph, heat: np.ndarray, level: int, slide_id: str) -> Path:
    """A GeoJSON FeatureCollection of the ``level`` patches of ``graph``: one square polygon
    per patch in level-0 pixel coordinates, with its importance as a measurement (QuPath reads
    ``objectType`` and ``measurements``)."""
    from wsigraph.io import atomic_path

    sel, side = patch_polygons(graph, level)
    pos = graph.pos.numpy()
    features = []
    for i in sel:
        x, y = (float(v) for v in pos[i])
        x0, y0, x1, y1 = x - side / 2, y - side / 2, x + side / 2, y + side / 2
        features.append(
            {
                "type": "Feature",
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]],
                },
                "properties": {
                    "objectType": "detection",
                    "name": f"{slide_id} patch {int(i)}",
                    "measurements": {"importance": float(heat[i])},
                },
            }
        )
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"type": "FeatureCollection", "features": features}) + "\n")
    return path


def write_heatmap(slide_path, graph, maps, probs, ckpt, out_dir, slide_id, power=None, mpp=None):
    """The PNG (the slide beside its importance map with the top 3 structures outlined, µm
    scale bars) and the GeoJSON; ``maps`` is :func:`patch_importance`'s first three."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from wsigraph.data.slides import Slide
    from wsigraph.io import atomic_path
    from wsigraph.viz.interpret import FITNESS_LABEL, draw_fitness
    from wsigraph.viz.slides import scale_bar

    level = int(graph.level.max())
    out_dir = Path(out_dir)
    with Slide(slide_path, objective_power=power, mpp=mpp) as s:
        thumb = s.thumbnail(1024)
        size, um = s.dimensions, s.mpp
    heat, cluster, centre_fitness = maps
    fig, axes = plt.subplots(1, 2, figsize=(12, 6), layout="constrained")
    axes[0].imshow(thumb)
    scale_bar(axes[0], None if um is None else um * size[0] / thumb.shape[1], thumb.shape[1])
    axes[0].axis("off")
    axes[0].set_title(f"{slide_id}", fontsize=10)
    scalar = draw_fitness(
        axes[1], thumb, graph, heat, cluster, centre_fitness, size, level, mpp=um, colorbar=False,
    )  # fmt: skip
    best = int(np.argmax(probs))
    axes[1].set_title(
        f"patch importance (IHPool fitness); P({ckpt.class_name(best)}) = {probs[best]:.2f}",
        fontsize=10,
    )
    fig.colorbar(scalar, ax=axes[1], shrink=0.8, label=FITNESS_LABEL)
    png = out_dir / f"{slide_id}_heatmap.png"
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    geojson = write_geojson(out_dir / f"{slide_id}_patches.geojson", graph, heat, level, slide_id)
    return png, geojson


if __name__ == "__main__":
    sys.exit(main())
