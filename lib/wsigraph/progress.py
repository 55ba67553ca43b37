"""Progress bars for long work, drawn where the person running it looks.

In a notebook opened by hand a bar is tqdm's usual ``tqdm.auto`` bar, in the notebook. When
``./run_all.sh`` executes the notebooks (papermill), a bar inside the notebook reaches nobody: the
person watches the terminal, and the executed copy would only keep the bar's frames. The pipeline
therefore sets :data:`ENV` for its kernels:

``WSIGRAPH_PROGRESS=terminal``
    bars draw on the terminal only: the kernel's original stderr, which ipykernel hands out as
    ``sys.stderr.fileno()`` (writing there does not reach the notebook);
``WSIGRAPH_PROGRESS=off``
    no bars (the concurrent ``04_train`` runs, whose bars would interleave; the pipeline prints
    one line per finished run instead);
unset or ``auto``
    ``tqdm.auto``, as anywhere else.

Every long loop of the library makes its bar with :func:`progress_bar`; its ``disable`` argument
still switches a bar off (``progress=False`` in worker processes).
"""

from __future__ import annotations

import atexit
import io
import os
import sys

from tqdm import tqdm as _std_tqdm
from tqdm.auto import tqdm as _auto_tqdm

ENV = "WSIGRAPH_PROGRESS"
MODES = ("auto", "terminal", "off")
_terminal = None


def mode() -> str:
    """Where bars go now: ``"auto"``, ``"terminal"`` or ``"off"`` (from :data:`ENV`).

    Raises:
        ValueError: for another value of :data:`ENV` (the message lists the valid ones).
    """
    value = os.environ.get(ENV, "").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(f"{ENV}={value!r}: use one of {', '.join(MODES)}")
    return value


def terminal_stream():
    """A text stream to the terminal that started this process, never into a notebook: a copy of
    the file descriptor behind ``sys.stderr`` (in an ipykernel, the kernel's original stderr),
    else ``sys.__stderr__``."""
    global _terminal
    if _terminal is None:
        try:
            fd = os.dup(sys.stderr.fileno())
            _terminal = os.fdopen(fd, "w", buffering=1, encoding="utf-8", errors="replace")
            atexit.register(_terminal.close)
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            _terminal = sys.__stderr__
    return _terminal


def progress_bar(iterable=None, **kwargs):
    """A tqdm bar over ``iterable`` (or with ``total=``), drawn as :func:`mode` says; every
    keyword is tqdm's."""
    where = mode()
    if where == "auto":
        return _auto_tqdm(iterable, **kwargs)
    if where == "off":
        kwargs["disable"] = True
    kwargs.setdefault("file", terminal_stream())
    return _std_tqdm(iterable, **kwargs)


def to_terminal(text: str) -> bool:
    """Write ``text`` (and a newline) on the terminal when the pipeline runs this kernel
    (:func:`mode` ``"terminal"``), for what its runner must see without opening a notebook, such
    as the GDC dry-run listing; otherwise do nothing (the notebook shows it). Returns whether it
    wrote."""
    if mode() != "terminal":
        return False
    stream = terminal_stream()
    stream.write(text.rstrip("\n") + "\n")
    stream.flush()
    return True
