"""The static report page: every executed notebook rendered, every table and figure linked."""

import base64
import os
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from wsigraph.report import write_index

# A 1x1 PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8DwHwAFAAH/iZk9HQAAAABJRU5ErkJggg=="
)


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("href", "src"):
            if attrs.get(key):
                self.links.append((tag, attrs[key]))


def _links(page: Path) -> list[tuple[str, str]]:
    parser = _Links()
    parser.feed(page.read_text())
    return parser.links


def _executed_notebook(path: Path) -> None:
    nb = new_notebook()
    cell = new_code_cell("print('hello')", execution_count=1)
    cell.outputs = [
        new_output("stream", name="stdout", text="hello from the kernel\n"),
        new_output("display_data", data={"image/png": base64.b64encode(PNG).decode()}),
    ]
    nb.cells = [new_markdown_cell("# A tiny notebook"), cell]
    nbformat.write(nb, path)


@pytest.fixture
def results(tmp_path):
    out = tmp_path / "results" / "demo"
    for sub in ("notebooks", "runs", "tables", "figures"):
        (out / sub).mkdir(parents=True)
    _executed_notebook(out / "notebooks" / "01_a.ipynb")
    _executed_notebook(out / "runs" / "h2mil_table1__H2-MIL + x__esca__typing.ipynb")
    (out / "tables" / "h2mil_table1.md").write_text("| a |\n|---|\n| 1 |\n")
    (out / "tables" / "h2mil_table1.csv").write_text("a\n1\n")
    (out / "figures" / "roc curve.png").write_bytes(PNG)
    return out


def test_index_renders_every_notebook_and_links_every_table_and_figure(results):
    index = write_index(results)
    assert index == results / "index.html"
    text = index.read_text()
    links = _links(index)
    targets = {unquote(href) for _, href in links}
    assert {
        "html/notebooks/01_a.html",
        "html/runs/h2mil_table1__H2-MIL + x__esca__typing.html",
        "tables/h2mil_table1.md",
        "tables/h2mil_table1.csv",
        "figures/roc curve.png",
    } <= targets
    assert ("img", "figures/roc%20curve.png") in links  # a thumbnail, not only a link
    for _, href in links:
        assert "://" not in href and not href.startswith("/"), f"{href} is not relative"
        assert (results / unquote(href)).is_file(), f"{href} does not resolve"
    assert "1 notebooks, 1 training runs, 1 tables, 1 figures" in text
    rendered = (results / "html" / "notebooks" / "01_a.html").read_text()
    assert "hello from the kernel" in rendered and "A tiny notebook" in rendered
    assert "data:image/png;base64," in rendered  # the figure travels inside the page
    assert not list(results.rglob("*.tmp"))  # atomic writes leave no temporary files


def test_index_rerenders_only_changed_notebooks_and_handles_empty_folders(results, tmp_path):
    write_index(results)
    page = results / "html" / "notebooks" / "01_a.html"
    page.write_text("kept")
    write_index(results)
    assert page.read_text() == "kept"  # newer than its notebook: not rendered again
    nb = results / "notebooks" / "01_a.ipynb"
    os.utime(nb, (page.stat().st_mtime + 10, page.stat().st_mtime + 10))
    write_index(results)
    assert "hello from the kernel" in page.read_text()
    light = write_index(results, runs=False).read_text()
    assert "html/runs/" not in light  # not rendered, but linked and counted
    assert "1 training runs" in light and 'href="runs/' in light and "not rendered here" in light
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "none yet" in write_index(empty).read_text()
    with pytest.raises(FileNotFoundError, match="no results folder"):
        write_index(tmp_path / "missing")


def test_pages_share_one_stylesheet_instead_of_inlining_it(results):
    write_index(results)
    pages = [results / "html" / "notebooks" / "01_a.html"]
    pages.append(results / "html" / "runs" / "h2mil_table1__H2-MIL + x__esca__typing.html")
    sheets = []
    for page in pages:
        text = page.read_text()
        big = [s for s in text.split("<style")[1:] if len(s.split("</style>")[0]) >= 2000]
        assert not big, "a large style block is still inline"
        linked = set()
        for tag, href in _links(page):
            if tag == "link" and href.endswith(".css"):
                assert (page.parent / unquote(href)).is_file(), f"{href} does not resolve"
                linked.add((page.parent / unquote(href)).resolve())
        sheets.append(linked)
    assert sheets[0] and sheets[0] == sheets[1]  # both pages link the same files
    assert sum(p.stat().st_size for p in sheets[0]) > 50_000  # nbconvert's CSS, written once
