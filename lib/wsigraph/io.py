"""Atomic file writes: every stage writes a temp file beside the target, then renames it.

An interrupted run therefore never leaves a half-written slide, feature file, graph, manifest
or record under its final name, and a resumed run can trust any file it finds.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; on success move it over ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was.

    Example::

        with atomic_path(out / "table.csv") as tmp:
            df.to_csv(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600 files
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def array_digest(a) -> str:
    """A short content hash (16 hex) of an array or tensor: its shape, dtype and bytes. Keys the
    per-item caches (nuclei graphs, ROI features, slide clusters) to the data they came from."""
    import hashlib

    import numpy as np

    if hasattr(a, "detach"):  # a torch tensor
        a = a.detach().cpu().numpy()
    a = np.ascontiguousarray(a)
    head = f"{a.shape}{a.dtype.str}".encode()
    return hashlib.blake2b(head + a.tobytes(), digest_size=8).hexdigest()
