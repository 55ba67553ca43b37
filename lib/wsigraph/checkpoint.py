"""Saved slide-level models: everything needed to score a new slide with a trained model.

A checkpoint (``.pt``, written by :func:`save_checkpoint`, one per fold by
:func:`wsigraph.train.run.run_experiment`) is a plain dictionary of tensors, numbers and
strings, so :func:`load_model` reads it with ``torch.load(weights_only=True)`` (no pickled code
runs). It holds:

* ``format`` (:data:`FORMAT`) and ``wsigraph_version``: a checkpoint of another format is refused
  with a message that names both versions;
* ``model`` (a registered name of :func:`wsigraph.models.build_model`), ``model_config`` (the
  fully resolved settings), ``in_dim`` and ``n_classes``;
* ``state_dict``: the chosen epoch's weights (the best validation checkpoint of the fold);
* ``feature_mean`` / ``feature_std``: the normaliser of the fold's training slides (``None``
  when the run trained on raw features);
* ``class_names``: one name per class index (``None`` when unknown);
* ``features``: how the slide's features must be made for the model to read them (encoder id,
  patch size, magnifications...), as the run knew it;
* ``meta``: the run's context (table, row, dataset, task, profile, repeat, fold, git commit).

:func:`load_model` returns a :class:`Checkpoint`, whose :meth:`Checkpoint.predict` standardises a
graph exactly as in training and returns class probabilities.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from wsigraph import __version__
from wsigraph.io import save_torch

#: The checkpoint layout this code writes and reads.
FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, of another format, or not matching the
    slide it is asked to score."""


@dataclass
class Checkpoint:
    """A loaded, ready model (eval mode) and what it needs to score a slide."""

    model: nn.Module
    model_name: str
    model_config: dict
    in_dim: int
    n_classes: int
    feature_mean: Tensor | None = None
    feature_std: Tensor | None = None
    class_names: list[str] | None = None
    features: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    wsigraph_version: str = ""
    path: Path | None = None

    def class_name(self, index: int) -> str:
        if self.class_names and 0 <= index < len(self.class_names):
            return str(self.class_names[index])
        return f"class {index}"

    def prepare(self, graph):
        """A shallow copy of ``graph`` with its features standardised as in training.

        Raises:
            CheckpointError: when the graph's feature size is not the model's (both named).
        """
        dim = int(graph.x.shape[-1])
        if dim != self.in_dim:
            name = getattr(graph, "slide_id", "the slide")
            raise CheckpointError(
                f"{name} has {dim} features per patch but the model {self.path or ''} was "
                f"trained on {self.in_dim} (encoder {self.features.get('encoder', 'unknown')}): "
                "extract the slide's features with the model's encoder"
            )
        out = copy.copy(graph)
        x = graph.x.float()
        if self.feature_mean is not None:
            x = (x - self.feature_mean) / self.feature_std
        out.x = x
        return out

    @torch.no_grad()
    def predict(self, graph) -> Tensor:
        """Class probabilities ``[n_classes]`` of one slide graph."""
        from torch_geometric.data import Batch

        self.model.eval()
        device = next(self.model.parameters()).device
        batch = Batch.from_data_list([self.prepare(graph)]).to(device)
        return self.model(batch).softmax(-1).reshape(-1).cpu()


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    model_name: str,
    model_config: dict,
    in_dim: int,
    n_classes: int,
    feature_mean: Tensor | None = None,
    feature_std: Tensor | None = None,
    class_names=None,
    features: dict | None = None,
    meta: dict | None = None,
) -> Path:
    """Write a checkpoint atomically (see the module docstring); returns its path."""
    state = {
        "format": FORMAT,
        "wsigraph_version": __version__,
        "model": str(model_name),
        "model_config": _plain(model_config),
        "in_dim": int(in_dim),
        "n_classes": int(n_classes),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "feature_mean": None if feature_mean is None else feature_mean.detach().cpu().float(),
        "feature_std": None if feature_std is None else feature_std.detach().cpu().float(),
        "class_names": None if class_names is None else [str(c) for c in class_names],
        "features": _plain(features or {}),
        "meta": _plain(meta or {}),
    }
    path = Path(path)
    save_torch(state, path)
    return path


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint written by :func:`save_checkpoint` into a ready model (eval mode).

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: not a wsigraph checkpoint, another format, or weights that do not fit
            the stored model settings.
    """
    from wsigraph.models import build_model

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a torch file, or pickled code (refused)
        raise CheckpointError(f"{path} is not a readable wsigraph checkpoint ({e})") from e
    if not isinstance(state, dict) or "format" not in state:
        raise CheckpointError(f"{path} is not a wsigraph checkpoint (no 'format' entry)")
    if state["format"] != FORMAT:
        raise CheckpointError(
            f"{path} has checkpoint format {state['format']} (wsigraph "
            f"{state.get('wsigraph_version', '?')}); this wsigraph {__version__} reads format "
            f"{FORMAT}: retrain with this version, or load it with the version that wrote it"
        )
    model = build_model(
        state["model"], state["in_dim"], state["n_classes"], **state["model_config"]
    )
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(
            f"{path}: its weights do not fit model {state['model']!r} ({e})"
        ) from e
    model.to(device).eval()
    return Checkpoint(
        model=model,
        model_name=state["model"],
        model_config=state["model_config"],
        in_dim=state["in_dim"],
        n_classes=state["n_classes"],
        feature_mean=state["feature_mean"],
        feature_std=state["feature_std"],
        class_names=state["class_names"],
        features=state["features"],
        meta=state["meta"],
        wsigraph_version=state["wsigraph_version"],
        path=path,
    )


def _plain(value):
    """``value`` with tuples as lists and anything else not a plain type as its string, so the
    checkpoint loads with ``weights_only=True``."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Tensor):
        return value.detach().cpu()
    return str(value)
