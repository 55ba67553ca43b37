"""Atomic file writes: every stage writes a temp file beside the target, then renames it.

An interrupted run therefore never leaves a half-written slide, feature file, graph, manifest
or record under its final name, and a resumed run can trust any file it finds. Files get the
mode a plain ``open(path, "w")`` would give them (``0o666`` less the umask), and a full disk
is reported as ``no space left on device`` with the file's path.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

# torch.save to a path writes through its own C++ stream, and a failed write surfaces as
# "[enforce fail at inline_container.cc:...] . unexpected pos 1792 vs 1686" (or "file write
# failed"), without errno. When the folder then has less than this free, it was a full disk.
_TORCH_WRITE_FAILED = ("unexpected pos", "file write failed")
_FULL = 1 << 20


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; on success move it over ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was. The file is
    created with mode ``0o666`` less the umask, as ``open(path, "w")`` would create it. A full
    disk (``ENOSPC``, or torch's ``unexpected pos`` with the disk full) is re-raised as an
    :class:`OSError` (``errno.ENOSPC``) whose one-line message names ``path``.

    Example::

        with atomic_path(out / "table.csv") as tmp:
            df.to_csv(tmp)
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _new_tmp(path)
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        full = _disk_full(e, path.parent)  # before the temporary file frees its blocks
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if full:
            raise OSError(
                errno.ENOSPC,
                f"no space left on device while writing {path}; free space on that disk (or "
                "write the outputs elsewhere) and rerun",
            ) from e
        raise


def save_torch(obj, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (:func:`atomic_path`), with the same bytes for
    the same ``obj`` wherever and by whichever process it is written.

    ``torch.save`` to a *path* names the records inside its zip archive after the file, here
    the random temporary name; written through a file object, they are always ``archive/...``.
    """
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        import torch

        torch.save(obj, f)
    return path


def _new_tmp(path: Path) -> Path:
    """Create an empty, unused ``.<name>.<random>.tmp`` beside ``path`` with the default mode.

    Unlike :func:`tempfile.mkstemp` (mode ``0o600``), ``os.open(..., 0o666)`` lets the kernel
    apply the umask (and any default ACL), with no process-wide ``os.umask`` call that would
    race with other threads."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, flags, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(errno.EEXIST, f"no unused temporary name beside {path}")


def _disk_full(e: BaseException, folder: Path) -> bool:
    """Whether ``e`` (or an exception it was raised from or during) is a full disk. Ctrl-C and
    other non-:class:`Exception` exits are never turned into a disk error."""
    if not isinstance(e, Exception):
        return False
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True
        if isinstance(e, RuntimeError) and any(m in str(e) for m in _TORCH_WRITE_FAILED):
            try:
                return shutil.disk_usage(folder).free < _FULL
            except OSError:
                return False
        e = e.__cause__ or e.__context__
    return False


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
        t = a.detach().cpu()
        try:
            a = t.numpy()
        except TypeError:  # no numpy dtype (bfloat16...): hash its raw bytes
            raw = t.contiguous().view(-1).view(torch_uint8()).numpy()
            head = f"{tuple(t.shape)}{t.dtype}".encode()
            return hashlib.blake2b(head + raw.tobytes(), digest_size=8).hexdigest()
    a = np.ascontiguousarray(a)
    head = f"{a.shape}{a.dtype.str}".encode()
    return hashlib.blake2b(head + a.tobytes(), digest_size=8).hexdigest()


def torch_uint8():
    import torch

    return torch.uint8


def content_digest(obj) -> str:
    """A short content hash (16 hex) of a cached record: every tensor / array (by
    :func:`array_digest`), string and number in it, dict keys in sorted order; a top-level
    ``"digest"`` key is left out, so the digest can be stored in the record it covers.

    The per-slide feature and graph files store it and check it on load, so a file whose
    tensor bytes were flipped on disk (it still unpickles) is caught instead of feeding
    garbage downstream."""
    import hashlib

    h = hashlib.blake2b(digest_size=8)

    def walk(value) -> None:
        if isinstance(value, dict):
            h.update(b"{")
            for k in sorted(value, key=str):
                h.update(repr(str(k)).encode())
                walk(value[k])
            h.update(b"}")
        elif isinstance(value, list | tuple):
            h.update(b"[")
            for v in value:
                walk(v)
            h.update(b"]")
        elif hasattr(value, "detach") or hasattr(value, "__array_interface__"):
            h.update(b"a" + array_digest(value).encode())
        else:
            h.update(f"{type(value).__name__}:{value!r}".encode())

    walk({k: v for k, v in obj.items() if k != "digest"} if isinstance(obj, dict) else obj)
    return h.hexdigest()


class DigestMismatchError(ValueError):
    """A cached file loads but its content digest differs from the one stored in it."""


def check_digest(record: dict, path, required: bool = True) -> None:
    """Raise :class:`DigestMismatchError` naming ``path`` when ``record["digest"]`` differs
    from :func:`content_digest` of the record, or is missing and ``required``."""
    stored = record.get("digest") if isinstance(record, dict) else None
    if stored is None:
        if required:
            raise DigestMismatchError(
                f"{path}: no content digest (written by an older version); it cannot be verified"
            )
        return
    actual = content_digest(record)
    if stored != actual:
        raise DigestMismatchError(
            f"{path}: content digest mismatch (stored {stored}, computed {actual}); "
            "the file is damaged"
        )
