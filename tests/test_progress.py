"""Progress bars go where the person running the work looks (wsigraph.progress)."""

import io
import json

import pytest
from tqdm.auto import tqdm as auto_tqdm

from wsigraph import pipeline, progress
from wsigraph.progress import ENV, progress_bar


def test_modes(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert progress.mode() == "auto"
    bar = progress_bar(range(2), disable=True)
    assert isinstance(bar, auto_tqdm)
    monkeypatch.setenv(ENV, " Terminal ")
    assert progress.mode() == "terminal"
    monkeypatch.setenv(ENV, "loud")
    with pytest.raises(
        ValueError, match="WSIGRAPH_PROGRESS='loud': use one of auto, terminal, off"
    ):
        progress_bar(range(2))


def test_terminal_bars_draw_on_their_stream_and_off_draws_nothing(monkeypatch):
    monkeypatch.setenv(ENV, "terminal")
    out = io.StringIO()
    assert sum(progress_bar(range(5), desc="tiles", file=out, mininterval=0)) == 10
    assert "tiles: 100%" in out.getvalue()
    monkeypatch.setenv(ENV, "off")
    out = io.StringIO()
    assert list(progress_bar(range(3), desc="tiles", file=out)) == [0, 1, 2]
    assert out.getvalue() == ""
    bar = progress_bar(total=3, desc="x", file=out)  # a bar updated by hand
    bar.update(3)
    bar.close()
    assert out.getvalue() == ""


def test_a_pipeline_kernel_draws_its_bars_on_the_terminal_not_in_the_notebook(tmp_path, capfd):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "wsigraph",
        "display_name": "wsigraph",
        "language": "python",
    }
    body = (
        "from wsigraph.progress import progress_bar\n"
        "total = sum(progress_bar(range(4), desc='bar-check', mininterval=0))\n"
        "print('total', total)"
    )
    params = new_code_cell("x = 1")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, new_code_cell(body)]
    nbformat.write(nb, tmp_path / "in.ipynb")
    out = tmp_path / "out.ipynb"
    assert (
        pipeline._papermill(str(tmp_path / "in.ipynb"), str(out), {}, progress="terminal") is None
    )
    outputs = json.dumps(json.loads(out.read_text())["cells"][1]["outputs"])
    assert "total 6" in outputs and "bar-check" not in outputs
    assert "bar-check: 100%" in capfd.readouterr().err


def test_a_kernels_environment_does_not_leak_into_the_pipeline(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    # a notebook that cannot even be read still restores the environment
    assert pipeline._papermill(
        str(tmp_path / "absent.ipynb"), str(tmp_path / "o.ipynb"), {}, 1, "off"
    )
    import os

    assert ENV not in os.environ and os.environ["OMP_NUM_THREADS"] == "7"
