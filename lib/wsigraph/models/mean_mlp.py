"""The simplest slide-level baseline: mean of the node features, then an MLP.

Used as a sanity baseline (and by the training-harness tests): it ignores graph structure and
pyramid levels entirely, so any graph model should at least match it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch_geometric.nn import global_mean_pool

from wsigraph.models import register


@dataclass
class MeanMLPConfig:
    hidden: int = 64
    dropout: float = 0.1
    levels: tuple[int, ...] | None = None  # keep only nodes of these pyramid levels (None: all)


@register("mean-mlp")
class MeanMLP(nn.Module):
    def __init__(self, in_dim: int, n_classes: int, **config):
        super().__init__()
        self.config = MeanMLPConfig(**config)
        c = self.config
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, c.hidden),
            nn.ReLU(),
            nn.Dropout(c.dropout),
            nn.Linear(c.hidden, n_classes),
        )

    def forward(self, batch) -> torch.Tensor:
        x, index = batch.x, batch.batch
        if self.config.levels is not None:
            keep = torch.isin(batch.level, torch.tensor(self.config.levels, device=x.device))
            x, index = x[keep], index[keep]
        return self.mlp(global_mean_pool(x, index, size=batch.num_graphs))  # [B, C]
