"""The control of the slide-level tables: logistic regression on slide-mean patch features.

Issue 17's control row for H2-MIL and HIGT: every slide becomes the mean of its patch features
at one pyramid level (or the means of several levels side by side), and one linear layer maps
that vector to class logits. Trained by the project's loop (standardised features, Adam,
cross-entropy, weight decay as an L2 penalty), it *is* a logistic regression, fitted on the
same folds as the graph models. It ignores the graph, the hierarchy and every patch's place, so
on the demo cohort -- whose labels live only in the relation across scales -- it must fail
(demo bound: AUC <= 0.65); on real slides it shows how much a slide's average appearance
already tells.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch_geometric.nn import global_mean_pool

from wsigraph.models import register


@dataclass
class SlideMeanLRConfig:
    levels: tuple[int, ...] = (0, 1, 2)  # pyramid levels whose means are concatenated

    def __post_init__(self):
        self.levels = tuple(int(v) for v in self.levels)
        if not self.levels or len(set(self.levels)) != len(self.levels):
            raise ValueError(f"levels must be distinct pyramid levels, got {self.levels}")


@register("slide-mean-lr")
class SlideMeanLR(nn.Module):
    """Logits ``[B, C]`` of a linear layer on ``[mean of level l features for l in levels]``.

    A slide with no node at a level contributes zeros for it (after standardisation: the
    training mean), so one missing level does not stop the row.
    """

    def __init__(self, in_dim: int, n_classes: int, **config):
        super().__init__()
        self.config = SlideMeanLRConfig(**config)
        self.linear = nn.Linear(in_dim * len(self.config.levels), n_classes)

    def slide_vectors(self, batch) -> torch.Tensor:
        """``[B, len(levels) * F]``: each level's mean node feature, side by side."""
        parts = []
        for lv in self.config.levels:
            keep = batch.level == lv
            parts.append(global_mean_pool(batch.x[keep], batch.batch[keep], size=batch.num_graphs))
        return torch.cat(parts, dim=1)

    def forward(self, batch) -> torch.Tensor:
        return self.linear(self.slide_vectors(batch))
