"""Shared fixtures: the repository's real files in data/, optional extras under
WSIGRAPH_SHARED_DATA (tests that need one skip without it) and small synthetic slides."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch  # noqa: E402  (does not import triton)

# Without a GPU, Triton kernels are tested in Triton's interpreter, which must be chosen before
# any kernel module is imported. With a GPU they compile for it (set TRITON_INTERPRET=1 to
# force the interpreter there too).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

from wsigraph.data.synthetic import SlideSpec, render_slide, write_pyramid_tiff  # noqa: E402
from wsigraph.profiles import DATA_DIR, data_file, real_fixture_slide, shared_data_dir  # noqa: E402


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for tests of tiny models: a second only adds contention (seconds on
    a busy 2-core CPU). Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The repository's own real fixtures (``data/``; origins and licences in its README)."""
    assert DATA_DIR.is_dir(), DATA_DIR
    return DATA_DIR


@pytest.fixture(scope="session")
def shared_extra():
    """``shared_extra(relpath)``: an optional larger extra (e.g. ``"nuclei/monuseg_more"``, or
    ``"../papers/<name>.txt"`` for the paper texts beside the data folder), found by
    :func:`wsigraph.profiles.data_file`; the calling test skips when it is absent."""

    def find(relpath: str) -> Path:
        try:
            return data_file(relpath)
        except FileNotFoundError:
            pytest.skip(
                f"optional extra {relpath} not found under {shared_data_dir()}; "
                "set WSIGRAPH_SHARED_DATA to a folder that holds it"
            )

    return find


@pytest.fixture(scope="session")
def real_slide(real_data) -> Path:
    return real_fixture_slide()


def toy_pyramid(n_mid: int, seed: int = 0, children: int = 4, f: int = 6, signal: float = 0.0):
    """A tiny pyramid graph: thumbnail + ``n_mid`` 5x patches on a row + up to ``children`` 10x
    patches in each (the 2 x 2 cells inside their parent); features N(0, 1) plus ``signal`` on
    feature 0."""
    import numpy as np

    from wsigraph.graphs.pyramid import pyramid_graph

    g = torch.Generator().manual_seed(seed)
    level, row, col, parent = [0], [0], [0], [-1]
    for i in range(n_mid):
        level.append(1), row.append(0), col.append(i), parent.append(0)
    for i in range(n_mid):
        for k in range(children):
            level.append(2), row.append(k // 2), col.append(2 * i + k % 2), parent.append(1 + i)
    x = torch.randn(len(level), f, generator=g)
    x[:, 0] += signal
    return pyramid_graph(x, np.array(level), np.array(row), np.array(col), np.array(parent))


def small_spec(**kw) -> SlideSpec:
    """A 768 x 512 px synthetic slide (20x, 0.5 um/px) -- fast to render."""
    base = dict(slide_id="t", dataset="esca", typing=0, staging=0, seed=7, width=768, height=512)
    return SlideSpec(**(base | kw))


@pytest.fixture(scope="session")
def synthetic_slide(tmp_path_factory) -> Path:
    spec = small_spec()
    path = tmp_path_factory.mktemp("slides") / "synthetic.tif"
    return write_pyramid_tiff(path, render_slide(spec), spec.base_mag, spec.mpp, min_side=128)
