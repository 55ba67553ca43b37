"""The `wsigraph` command end to end on the repository's real Aperio slide: features -> graph ->
a model trained here -> predict -> heatmap PNG + GeoJSON (README "Your own slides")."""

import json
import shutil

import pandas as pd
import pytest
import torch
from conftest import toy_pyramid
from shapely.geometry import box, shape

from wsigraph import cli
from wsigraph.data.features import feature_path, feature_settings, load_features
from wsigraph.data.slides import Slide
from wsigraph.graphs.pyramid import load_graph
from wsigraph.profiles import get_profile
from wsigraph.train.loop import TrainConfig
from wsigraph.train.run import checkpoint_path, run_experiment

H2MIL = {"hidden": 16, "layers": 1}


@pytest.fixture(scope="module")
def made(real_slide, tmp_path_factory):
    """The real slide's demo features, and an H2-MIL trained on toy pyramids of that width."""
    root = tmp_path_factory.mktemp("cli")
    work = root / "work"
    assert cli.main(["features", str(real_slide), "--work", str(work)]) == 0
    dim = load_features(feature_path(work / "features", real_slide.stem))["features"].shape[1]
    graphs = [toy_pyramid(3 + i % 3, seed=i, f=dim, signal=1.5 * (i % 2)) for i in range(12)]
    for i, g in enumerate(graphs):
        g.slide_id = f"toy-{i}"
    cfg = TrainConfig("h2mil", H2MIL, lr=1e-2, epochs=2, batch_size=4)
    run_experiment(
        "toy", graphs, [i % 2 for i in range(12)], cfg, root / "cv", folds=2, repeats=1,
        executor="serial", progress=False, class_names=["KIRP", "KICH"],
        features=feature_settings(get_profile("demo")),
    )  # fmt: skip
    return {
        "root": root,
        "work": work,
        "ckpt": checkpoint_path(root / "cv", "toy", 0, 0),
        "dim": dim,
    }


def test_predict_writes_one_line_of_probabilities_per_slide(made, real_slide, capsys):
    out = made["root"] / "predictions.csv"
    args = ["predict", str(real_slide), "--model", str(made["ckpt"]), "--work", str(made["work"])]
    assert cli.main([*args, "--out", str(out)]) == 0
    df = pd.read_csv(out)
    assert list(df.columns) == ["slide_id", "path", "p_KIRP", "p_KICH", "predicted"]
    assert df.loc[0, "slide_id"] == real_slide.stem
    assert df.loc[0, "p_KIRP"] + df.loc[0, "p_KICH"] == pytest.approx(1.0)
    assert df.loc[0, "predicted"] in ("KIRP", "KICH")
    assert (made["work"] / "graphs" / f"{real_slide.stem}.pt").exists()


def test_heatmap_writes_a_png_and_a_geojson_of_patches_inside_the_slide(made, real_slide):
    out = made["root"] / "heatmaps"
    args = ["heatmap", str(real_slide), "--model", str(made["ckpt"]), "--work", str(made["work"])]
    assert cli.main([*args, "--out", str(out)]) == 0
    png = out / f"{real_slide.stem}_heatmap.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    collection = json.loads((out / f"{real_slide.stem}_patches.geojson").read_text())
    with Slide(real_slide) as s:
        w, h = s.dimensions
    polygons = [shape(f["geometry"]) for f in collection["features"]]
    level = load_graph(made["work"] / "graphs" / f"{real_slide.stem}.pt").level
    assert len(polygons) == int((level == level.max()).sum()) > 10
    slide = box(0, 0, w, h)
    assert all(p.is_valid and p.area > 0 and slide.covers(p) for p in polygons)
    scores = [f["properties"]["measurements"]["importance"] for f in collection["features"]]
    assert min(scores) >= 0 and max(scores) <= 1 and max(scores) > min(scores)
    assert collection["features"][0]["properties"]["objectType"] == "detection"


def test_bad_input_gets_one_line_naming_the_file_and_the_fix(made, real_slide, tmp_path, capsys):
    ckpt, work = str(made["ckpt"]), str(made["work"])
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    code = cli.main(
        ["heatmap", str(real_slide), "--model", ckpt, "--work", work, "--out", str(blocked)]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("wsigraph: error: cannot write to") and "--out" in err
    assert len(err.splitlines()) == 1
    assert cli.main(["predict", str(tmp_path / "absent.svs"), "--model", ckpt]) == 2
    assert "absent.svs: no such slide file" in capsys.readouterr().err
    # a model trained on features of another width: both sizes named
    other = tmp_path / "other.pt"
    state = torch.load(made["ckpt"], weights_only=True)
    torch.save(state | {"in_dim": made["dim"] + 3}, other)
    code = cli.main(
        [
            "predict",
            str(real_slide),
            "--model",
            str(other),
            "--work",
            work,
            "--out",
            str(tmp_path / "p.csv"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "weights do not fit" in err or f"{made['dim']} features per patch" in err


def test_a_slide_without_magnification_needs_and_takes_objective_power(
    real_slide, tmp_path, capsys
):
    # the same slide with its objective power given by hand (the metadata is read otherwise)
    copy = tmp_path / "copy.svs"
    shutil.copy(real_slide, copy)
    args = ["features", str(copy), "--work", str(tmp_path / "w"), "--mpp", "0.5"]
    assert cli.main(args) == 0
    assert "0.5 µm/px taken as 20x (10 / mpp)" in capsys.readouterr().err
    args[0] = "graph"  # features, then graphs: the slides are listed, and the note printed, once
    assert cli.main(args) == 0
    assert capsys.readouterr().err.count("0.5 µm/px taken as 20x (10 / mpp)") == 1
    assert cli.main(["features", str(copy), "--objective-power", "-3"]) == 2
    assert "--objective-power must be > 0" in capsys.readouterr().err


def test_model_takes_a_run_record_and_names_a_missing_fold(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("WSIGRAPH_WORK", str(tmp_path / "work"))
    record = tmp_path / "run.json"
    record.write_text(json.dumps({"meta": {"profile": "demo"}, "checkpoints": [
        {"repeat": 0, "fold": 0, "path": "abc/fold_r0_f0.pt"},
        {"repeat": 0, "fold": 1, "path": "abc/fold_r0_f1.pt"}]}))  # fmt: skip
    assert cli.model_path(record, 1) == tmp_path / "work" / "demo" / "cv" / "abc" / "fold_r0_f1.pt"
    assert cli.model_path(tmp_path / "m.pt") == tmp_path / "m.pt"
    with pytest.raises(cli.CLIError, match=r"lists no saved model for fold 4 \(folds: \[0, 1\]\)"):
        cli.model_path(record, 4)
    with pytest.raises(
        cli.CLIError, match="has no refit model; rerun its run with 04_train's -p refit true"
    ):
        cli.model_path(record, "refit")
    data = json.loads(record.read_text()) | {"refit": {"path": "abc/refit.pt", "epochs": 7}}
    record.write_text(json.dumps(data))
    assert cli.model_path(record, "refit") == tmp_path / "work" / "demo" / "cv" / "abc" / "refit.pt"
    assert cli._fold("refit") == "refit" and cli._fold("2") == 2
    with pytest.raises(Exception, match="a fold number or 'refit'"):
        cli._fold("last")
