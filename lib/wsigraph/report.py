"""A browsable, static report of one profile's results: ``results/<profile>/index.html``.

:func:`write_index` renders every executed notebook (``notebooks/*.ipynb`` and the training runs
``runs/*.ipynb``) to HTML with nbconvert (images embedded, so each page stands alone) into
``html/``, and writes ``index.html`` linking each rendered notebook, every table
(``tables/*.md`` / ``*.csv``) and every figure (``figures/*.png``, shown as thumbnails). All links
are relative, so the folder can be opened from disk, copied or served by any static server.
``./run_all.sh`` writes it at the end of a successful run.
"""

from __future__ import annotations

import hashlib
import html
import os
import re
from pathlib import Path
from urllib.parse import quote

from wsigraph.io import write_text

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 70rem; margin: 2rem auto; padding: 0 1rem;
       color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; } .meta { color: #666; margin-top: 0; }
ul.list { columns: 2; } ul.list li { margin: 0.15rem 0; break-inside: avoid; }
table { border-collapse: collapse; } td, th { padding: 0.2rem 0.8rem; text-align: left; }
tr:nth-child(even) { background: #f5f5f5; }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(15rem, 1fr));
           gap: 1rem; }
.figures figure { margin: 0; border: 1px solid #ddd; padding: 0.5rem; background: #fff; }
.figures img { width: 100%; height: 11rem; object-fit: contain; }
.figures figcaption { font-size: 0.85rem; word-break: break-all; }
"""


def _href(path: str) -> str:
    return html.escape(quote(path), quote=True)


_STYLE_BLOCK = re.compile(r"<style[^>]*>(.*?)</style>", re.DOTALL)
_MIN_SHARED = 2000  # characters: smaller style blocks stay in the page


def render_notebook(
    notebook: Path, output: Path, exporter=None, styles: Path | None = None
) -> Path:
    """Render one executed notebook to an HTML file (images embedded), atomically.

    With ``styles`` (a folder), nbconvert's large inline ``<style>`` blocks (the same ~250 KB of
    JupyterLab CSS in every page) are written once there, as ``<sha256>.css``, and the page links
    to them; without it the page is standalone.
    """
    import nbformat
    from nbconvert import HTMLExporter

    exporter = exporter or HTMLExporter(embed_images=True)
    body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4))
    if styles is not None:
        body = _share_styles(body, output.parent, styles)
    return write_text(output, body)


def _share_styles(page: str, page_dir: Path, styles: Path) -> str:
    """``page`` with each large ``<style>`` block replaced by a link to ``styles/<sha>.css``
    (written atomically when new)."""

    def link(match: re.Match) -> str:
        css = match.group(1)
        if len(css) < _MIN_SHARED:
            return match.group(0)
        path = styles / f"{hashlib.sha256(css.encode()).hexdigest()[:16]}.css"
        if not path.exists():
            write_text(path, css)
        href = os.path.relpath(path, page_dir).replace(os.sep, "/")
        return f'<link rel="stylesheet" href="{_href(href)}">'

    return _STYLE_BLOCK.sub(link, page)


def _render_all(results: Path, folder: str) -> list[tuple[str, str]]:
    """``(name, relative html path)`` of the notebooks in ``results/folder``, rendered into
    ``results/html/folder``; an HTML page newer than its notebook is kept as it is."""
    from nbconvert import HTMLExporter

    exporter = None
    pages = []
    for nb in sorted((results / folder).glob("*.ipynb")):
        page = results / "html" / folder / f"{nb.stem}.html"
        if not page.exists() or page.stat().st_mtime < nb.stat().st_mtime:
            exporter = exporter or HTMLExporter(embed_images=True)
            render_notebook(nb, page, exporter, styles=results / "html" / "styles")
        pages.append((nb.stem, page.relative_to(results).as_posix()))
    return pages


def _section(title: str, body: str, note: str = "") -> str:
    note = f"<p>{html.escape(note)}</p>" if note else ""
    return f"<h2>{html.escape(title)}</h2>\n{note}\n{body}\n"


def _links(pages: list[tuple[str, str]]) -> str:
    items = "".join(f'<li><a href="{_href(p)}">{html.escape(n)}</a></li>\n' for n, p in pages)
    return f'<ul class="list">\n{items}</ul>'


def write_index(results_dir: str | os.PathLike, runs: bool = True) -> Path:
    """Render the executed notebooks of ``results_dir`` to HTML and write ``index.html``.

    Args:
        results_dir: one profile's results folder (``results/<profile>``), holding
            ``notebooks/``, ``runs/``, ``tables/`` and ``figures/`` (any may be missing).
        runs: also render and link the training runs (``runs/*.ipynb``; on the demo about
            100 pages of ~0.4 MB each, nbconvert's CSS included in every page).

    Returns:
        The path of ``index.html``.
    """
    results = Path(results_dir)
    if not results.is_dir():
        raise FileNotFoundError(f"no results folder {results}; run ./run_all.sh first")
    notebooks = _render_all(results, "notebooks")
    rendered = runs
    if runs:
        runs = _render_all(results, "runs")
    else:  # not rendered: linked as the executed notebooks and run records they are
        runs = [
            (p.stem, p.relative_to(results).as_posix())
            for p in sorted((results / "runs").glob("*.ipynb"))
        ]

    tables: dict[str, list[str]] = {}
    for path in sorted((results / "tables").glob("*")):
        if path.suffix in (".md", ".csv") and path.is_file():
            tables.setdefault(path.stem, []).append(path.relative_to(results).as_posix())
    rows = "".join(
        f"<tr><td>{html.escape(stem)}</td><td>"
        + " · ".join(f'<a href="{_href(p)}">{html.escape(Path(p).suffix[1:])}</a>' for p in paths)
        + "</td></tr>\n"
        for stem, paths in tables.items()
    )
    figures = [
        p.relative_to(results).as_posix() for p in sorted((results / "figures").glob("*.png"))
    ]
    cards = "".join(
        f'<figure><a href="{_href(p)}"><img src="{_href(p)}" alt="{html.escape(Path(p).stem)}" '
        f'loading="lazy"></a><figcaption>{html.escape(Path(p).name)}</figcaption></figure>\n'
        for p in figures
    )

    parts = [
        _section("Notebooks", _links(notebooks) if notebooks else "<p>none yet</p>",
                 "The executed notebooks, in order, rendered with their outputs."),
        _section("Tables", f"<table>\n{rows}</table>" if rows else "<p>none yet</p>"),
        _section("Figures", f'<div class="figures">\n{cards}</div>' if cards else "<p>none yet</p>"),
    ]  # fmt: skip
    if runs:
        parts.append(
            _section(
                "Training runs",
                _links(runs),
                "04_train executed once per table run (one row, dataset and task)"
                + (
                    "."
                    if rendered
                    else ": the executed notebooks (not rendered here, to keep the page light; "
                    "GitHub and Jupyter show them) beside their run records (runs/*.json)."
                ),
            )
        )
    name = html.escape(results.name)
    page = (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>wsigraph results: {name}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<h1>wsigraph results: profile {name}</h1>\n"
        f'<p class="meta">{len(notebooks)} notebooks, {len(runs)} training runs, '
        f"{len(tables)} tables, {len(figures)} figures. "
        "A static page: open it from disk, no server needed.</p>\n"
        + "".join(parts)
        + "</body>\n</html>\n"
    )
    return write_text(results / "index.html", page)
