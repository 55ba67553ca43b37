"""Slide-level models, one file per paper model, each with a dataclass config.

Every model maps a PyG ``Batch`` of slide graphs to logits ``[B, n_classes]`` and is built by
name through :func:`build_model`, so that training code, worker processes and Dask tasks only
pass plain data (a name and a config dict) around.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str) -> Callable:
    """Class decorator: make a model buildable as ``build_model(name, ...)``."""

    def wrap(cls):
        if name in MODELS:
            raise ValueError(f"model {name!r} registered twice")
        MODELS[name] = cls
        return cls

    return wrap


def build_model(name: str, in_dim: int, n_classes: int, **config) -> nn.Module:
    """Build a registered model. Unknown names or settings raise a clear ``ValueError``."""
    _import_all()
    try:
        cls = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}") from None
    try:
        return cls(in_dim=in_dim, n_classes=n_classes, **config)
    except TypeError as e:
        raise ValueError(f"bad settings for model {name!r}: {e}") from None


def _import_all() -> None:
    # Importing the model modules registers them.
    from wsigraph.models import (  # noqa: F401
        abignet,
        baselines,
        higt,
        mean_mlp,
        mico,
        nuclei_gcn,
        slide_mean,
    )

    try:
        from wsigraph.models import h2mil  # noqa: F401
    except ImportError as e:  # pragma: no cover - only while a model module is being written
        if "h2mil" not in str(e):
            raise
