"""Mutation check: plant small, plausible bugs in lib/ one at a time and see the tests catch them.

Each :class:`Mutation` replaces one exact snippet of one file (it must occur exactly once) in a
private copy of the repository, runs only the tests that concern it, and counts as **caught**
when those tests fail (or time out), **survived** when they pass. Before any mutation, the same
tests run once on the unmodified copy and must pass, so that "caught" means something.

    .venv/bin/python scripts/mutations.py              # every mutation, 2 at a time
    .venv/bin/python scripts/mutations.py --list       # what is planted where
    .venv/bin/python scripts/mutations.py -k ihpool    # the mutations whose name contains "ihpool"

Exit status 0 when every mutation is caught, 1 otherwise. ``.ci/run`` runs it after the tests.

Adding a module? Add one or more mutations below: the smallest edit a tired person could make
that would silently break the science (a swapped split, a dropped term, a wrong axis), the
tests that should catch it, and run ``scripts/mutations.py -k <name>``. If it survives, the
module needs a better test, not a weaker mutation.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str  # short id: <area>-<what>
    path: str  # file, relative to the repository root
    old: str  # exact text; must occur exactly once in the file
    new: str  # what replaces it
    tests: tuple[str, ...]  # pytest files or node ids that must fail


M = Mutation
MUTATIONS: list[Mutation] = [
    # ---- sparse segment attention ----------------------------------------------------------
    M(
        "attention-softmax-no-max-shift-sign",
        "lib/wsigraph/nn/attention.py",
        "    torch.exp(score - smax.index_select(0, seg), out=out)",
        "    torch.exp(smax.index_select(0, seg) - score, out=out)",
        ("tests/test_attention.py",),
    ),
    M(
        "attention-softmax-not-normalised",
        "lib/wsigraph/nn/attention.py",
        '    out /= segment(out, ptr, reduce="sum").index_select(0, seg)',
        '    out /= segment(out, ptr, reduce="sum").index_select(0, seg).mean()',
        ("tests/test_attention.py",),
    ),
    M(
        "attention-backward-drops-delta",
        "lib/wsigraph/nn/attention.py",
        "                    g_p - delta.index_select(0, seg[a : a + step])",
        "                    g_p",
        ("tests/test_attention.py",),
    ),
    # ---- IHPool (H2-MIL Algorithm 1) -------------------------------------------------------
    M(
        "ihpool-distance-only",
        "lib/wsigraph/nn/ihpool.py",
        "        cost = (grid[nodes[pair_node]] - grid[nodes[cpos]]).norm(dim=-1) + (\n"
        "            f[pair_node] - f[cpos]\n"
        "        ).abs()",
        "        cost = (grid[nodes[pair_node]] - grid[nodes[cpos]]).norm(dim=-1) + 0 * (\n"
        "            f[pair_node] - f[cpos]\n"
        "        ).abs()",
        ("tests/test_ihpool.py",),
    ),
    M(
        "ihpool-top-fitness-centres",
        "lib/wsigraph/nn/ihpool.py",
        '            rank = torch.div(j * n_g, m_g, rounding_mode="floor")',
        "            rank = n_g - 1 - j",
        ("tests/test_ihpool.py",),
    ),
    M(
        "ihpool-grid-divided-by-range-not-max",
        "lib/wsigraph/nn/ihpool.py",
        "    unit = torch.where(peak > 0, p.grid / peak.clamp(min=1e-12), torch.zeros_like(p.grid))",
        "    unit = torch.where(peak > 0, p.grid / peak.clamp(min=1e-12) ** 2, torch.zeros_like(p.grid))",
        ("tests/test_ihpool.py",),
    ),
    M(
        "ihpool-ceil-becomes-floor",
        "lib/wsigraph/nn/ihpool.py",
        "        m = torch.ceil(self.ratio * size.float()).long().clamp(min=1, max=None)",
        "        m = torch.floor(self.ratio * size.float()).long().clamp(min=1, max=None)",
        ("tests/test_ihpool.py",),
    ),
    M(
        "ihpool-count-mode-fine-levels-like-coarse",
        "lib/wsigraph/nn/ihpool.py",
        "        spread = finest and (self.fine_count is not None or self.count is not None)",
        "        spread = finest and self.fine_count is not None",
        ("tests/test_ihpool.py",),
    ),
    M(
        "ihpool-groups-ignore-parent-cluster",
        "lib/wsigraph/nn/ihpool.py",
        "            group = cluster[p.parent[nodes]]",
        "            group = torch.zeros_like(cluster[p.parent[nodes]])",
        ("tests/test_ihpool.py",),
    ),
    # ---- RAConv / RAConv+ ------------------------------------------------------------------
    M(
        "raconv-resolution-of-destination",
        "lib/wsigraph/nn/raconv.py",
        "        group = dst * R + level[src]  # segment of each edge: (destination, source resolution)",
        "        group = dst * R + level[dst]  # segment of each edge: (destination, source resolution)",
        ("tests/test_raconv.py",),
    ),
    M(
        "raconv-drops-resolution-attention",
        "lib/wsigraph/nn/raconv.py",
        "        log_w = log_alpha.reshape(N * R, H)[group].clamp(min=-1e30) + score - lse[group]",
        "        log_w = score - lse[group]",
        ("tests/test_raconv.py",),
    ),
    M(
        "raconv-only-head-0-output",
        "lib/wsigraph/nn/raconv.py",
        "            out = segment_attention(log_w, z, src, dst, N, mean_heads=True)  # [N, C]",
        "            out = segment_attention(log_w, z[:, :1].expand(-1, H, -1).contiguous(), src, dst, N, mean_heads=True)",
        ("tests/test_raconv.py",),
    ),
    M(
        "raconv-precision-switch-ignored",
        "lib/wsigraph/nn/raconv.py",
        "    with torch.autocast(x.device.type, dtype=dtype):",
        "    with torch.autocast(x.device.type, dtype=dtype, enabled=False):",
        ("tests/test_raconv.py::test_projection_precision_switch_against_float32",),
    ),
    M(
        "train-checkpoint-rule-ignored",
        "lib/wsigraph/train/loop.py",
        "    best = BestCheckpoint(cfg.patience, cfg.select)",
        "    best = BestCheckpoint(cfg.patience)",
        ("tests/test_train.py::test_train_fold_passes_its_checkpoint_rule",),
    ),
    M(
        "attention-int64-fallback-ignored",
        "lib/wsigraph/nn/attention.py",
        "        self.index_dtype = torch.int32 if small else torch.long",
        "        self.index_dtype = torch.int32",
        ("tests/test_attention.py::test_sparse_layout_int32_indices_and_the_int64_fallback",),
    ),
    M(
        "raconv-concat-channel-major",
        "lib/wsigraph/nn/raconv.py",
        "                out = out * log_alpha.exp().sum(1).unsqueeze(-1)\n"
        "            out = out.reshape(N, H * C) if self.concat else out.mean(1)",
        "                out = out * log_alpha.exp().sum(1).unsqueeze(-1)\n"
        "            out = out.transpose(1, 2).reshape(N, H * C) if self.concat else out.mean(1)",
        ("tests/test_raconv.py",),
    ),
    M(
        "raconv-resolution-attention-of-head-0",
        "lib/wsigraph/nn/raconv.py",
        "log_w = log_alpha.reshape(N * R, H)[group].clamp(min=-1e30)",
        "log_w = log_alpha.reshape(N * R, H)[group][:, :1].clamp(min=-1e30)",
        ("tests/test_raconv.py",),
    ),
    M(
        "hgat-mean-heads-keeps-head-0",
        "lib/wsigraph/nn/raconv.py",
        "        out = segment_attention(score, z, src, dst, N)  # [N, H, C]\n"
        "        out = out.reshape(N, H * C) if self.concat else out.mean(1)",
        "        out = segment_attention(score, z, src, dst, N)  # [N, H, C]\n"
        "        out = out.reshape(N, H * C) if self.concat else out[:, 0]",
        ("tests/test_raconv.py",),
    ),
    M(
        "raconv-plus-mean-heads-keeps-head-0",
        "lib/wsigraph/nn/raconv.py",
        "        out = out * row_sum.unsqueeze(-1)\n"
        "        out = out.reshape(N, H * C) if self.concat else out.mean(1)",
        "        out = out * row_sum.unsqueeze(-1)\n"
        "        out = out.reshape(N, H * C) if self.concat else out[:, 0]",
        ("tests/test_raconv.py",),
    ),
    M(
        "attention-forward-weights-of-head-0",
        "lib/wsigraph/nn/attention.py",
        "value.index_select(0, src[a:b]) * p[a:b, :, None]",
        "value.index_select(0, src[a:b]) * p[a:b, :1, None]",
        ("tests/test_attention.py",),  # the reference; RAConv on the CPU runs the sparse path
    ),
    # ---- ablation switches: each must change the model ---------------------------------------
    M(
        "higt-fusion-ignored-in-forward",
        "lib/wsigraph/models/higt.py",
        "if self.fusion is not None:",
        "if False:",
        ("tests/test_ablations.py",),
    ),
    M(
        "higt-bidirectional-switch-ignored",
        "lib/wsigraph/models/higt.py",
        "bidirectional=c.bidirectional,",
        "bidirectional=True,",
        ("tests/test_ablations.py",),
    ),
    M(
        "higt-attention-switch-ignored",
        "lib/wsigraph/models/higt.py",
        "attention=c.attention,",
        'attention="ssa",',
        ("tests/test_ablations.py",),
    ),
    M(
        "h2mil-hgat-builds-raconv",
        "lib/wsigraph/models/h2mil.py",
        "        return HGATConv(in_dim, c.hidden, num_levels=num_levels, heads=c.heads, dropout=drop)",
        "        return RAConv(in_dim, c.hidden, num_levels=num_levels, heads=c.heads, dropout=drop)",
        ("tests/test_ablations.py",),
    ),
    M(
        "h2mil-levels-not-dropped",
        "lib/wsigraph/models/h2mil.py",
        "if self.config.levels != tuple(range(int(p.level.max()) + 1)):",
        "if False:",
        ("tests/test_ablations.py",),
    ),
    M(
        "mico-learned-anchors-get-slide-reducer",
        "lib/wsigraph/nn/mico.py",
        "ClusterReducer(dim, self.schedule[i], self.schedule[i + 1], anchors)",
        'ClusterReducer(dim, self.schedule[i], self.schedule[i + 1], "slide")',
        ("tests/test_ablations.py",),
    ),
    M(
        "abignet-learned-graph-unused",
        "lib/wsigraph/models/abignet.py",
        "        if self.learner is not None:\n            return self.learner(",
        "        if False:\n            return self.learner(",
        ("tests/test_ablations.py",),
    ),
    M(
        "nuclei-attention-variant-not-built",
        "lib/wsigraph/models/nuclei_gcn.py",
        'self.attention = NodeAttention(h) if cfg.variant == "attention" else None',
        "self.attention = None",
        ("tests/test_ablations.py",),
    ),
    # ---- checkpoint selection: the validation split chooses, the test fold is seen once -----
    M(
        "loop-selects-on-the-test-fold",
        "lib/wsigraph/train/loop.py",
        'val = evaluate(model, loaders["val"], device)',
        'val = evaluate(model, loaders["test"], device)',
        ("tests/test_selection.py",),
    ),
    M(
        "loop-keeps-the-last-epoch",
        "lib/wsigraph/train/loop.py",
        "    best.restore(model)",
        "    best.state",
        ("tests/test_selection.py",),
    ),
    M(
        "survival-selects-on-the-test-fold",
        "lib/wsigraph/train/survival.py",
        "v = evaluate_survival(model, val, device, alpha)",
        "v = evaluate_survival(model, test, device, alpha)",
        ("tests/test_selection.py",),
    ),
    M(
        "bilevel-selects-on-the-test-fold",
        "lib/wsigraph/train/bilevel.py",
        "val = evaluate(model, val_loader, device)",
        "val = evaluate(model, test_loader, device)",
        ("tests/test_selection.py",),
    ),
    M(
        "bilevel-outer-step-on-training-data",
        "lib/wsigraph/train/bilevel.py",
        "        loss = outer_loss(model, val_batch, sparsity)",
        "        loss = outer_loss(model, train_batch, sparsity)",
        ("tests/test_selection.py",),
    ),
    # ---- models learn -----------------------------------------------------------------------
    M(
        "loop-no-optimiser-step",
        "lib/wsigraph/train/loop.py",
        "        optimizer.step()",
        "        pass  # optimizer.step()",
        ("tests/test_learning.py::test_h2mil_and_higt_rank_held_out_slides",),
    ),
    # ---- HIViT (HIGT Eq. 4-7) --------------------------------------------------------------
    M(
        "hivit-ssa-softmax-across-slides",
        "lib/wsigraph/nn/vit.py",
        "        c = softmax(query.squeeze(-1), batch, num_nodes=num_segments)  # [N]",
        "        c = softmax(query.squeeze(-1), torch.zeros_like(batch), num_nodes=1)  # [N]",
        ("tests/test_vit.py",),
    ),
    M(
        "hivit-patches-get-their-slides-region",
        "lib/wsigraph/nn/vit.py",
        "        patch_next = patch_hat + region_gated[patch_region]  # [P, D], Eq. 5",
        "        patch_next = patch_hat + region_gated[region_batch[patch_region]]  # [P, D], Eq. 5",
        ("tests/test_vit.py",),
    ),
    M(
        "hivit-patch-to-region-sum-not-mean",
        "lib/wsigraph/nn/vit.py",
        '            patch_mean = scatter(patch_hat, patch_region, dim=0, dim_size=R, reduce="mean")',
        '            patch_mean = scatter(patch_hat, patch_region, dim=0, dim_size=R, reduce="sum")',
        ("tests/test_vit.py",),
    ),
    # ---- MiCo ------------------------------------------------------------------------------
    M(
        "mico-route-ignores-anchor-mask",
        "lib/wsigraph/nn/mico.py",
        "        a = torch.softmax(s.masked_fill(~mask[batch], -math.inf), dim=-1)  # [N, K], Eq. 1",
        "        a = torch.softmax(s, dim=-1)  # [N, K], Eq. 1",
        ("tests/test_mico.py",),
    ),
    M(
        "mico-route-drops-context",
        "lib/wsigraph/nn/mico.py",
        "        h = self.norm(h + context)  # Eq. 2",
        "        h = self.norm(h + 0 * context)  # Eq. 2",
        ("tests/test_mico.py",),
    ),
    M(
        "mico-similarity-sign",
        "lib/wsigraph/nn/mico.py",
        "            s = -sq.clamp(min=1e-12).sqrt()",
        "            s = sq.clamp(min=1e-12).sqrt()",
        ("tests/test_mico.py",),
    ),
    M(
        "mico-centroids-sum-not-mean",
        "lib/wsigraph/nn/mico.py",
        '    mean = scatter(x, segment, dim=0, dim_size=num_bags * k, reduce="mean")  # [B K, F]',
        '    mean = scatter(x, segment, dim=0, dim_size=num_bags * k, reduce="sum")  # [B K, F]',
        ("tests/test_mico.py",),
    ),
    M(
        "mico-reducer-softmax-over-outputs",
        "lib/wsigraph/nn/mico.py",
        "        alpha = torch.softmax(score.masked_fill(~alive[:, None, None], 0.0), dim=-1)",
        "        alpha = torch.softmax(score.masked_fill(~alive[:, None, None], 0.0), dim=1)",
        ("tests/test_mico.py",),
    ),
    # ---- RSF convolutions (nuclei-graph GCN Eq. 2) -----------------------------------------
    M(
        "rsf-aggregates-own-features",
        "lib/wsigraph/nn/rsf.py",
        "    msg = edge_attr.unsqueeze(-1) * x[src].unsqueeze(1)  # [E, L, F]",
        "    msg = edge_attr.unsqueeze(-1) * x[dst].unsqueeze(1)  # [E, L, F]",
        ("tests/test_rsf.py",),
    ),
    M(
        "rsf-drops-self-term",
        "lib/wsigraph/nn/rsf.py",
        "        out = x @ self.weight[0] + ax.reshape(*ax.shape[:-2], LF) @ w_edges",
        "        out = ax.reshape(*ax.shape[:-2], LF) @ w_edges",
        ("tests/test_rsf.py",),
    ),
    M(
        "rsf-dense-transposed-adjacency",
        "lib/wsigraph/nn/rsf.py",
        '        ax = torch.einsum("bikl,bkf->bilf", adj.to(x.dtype), x)  # [B, N, L, F]',
        '        ax = torch.einsum("bkil,bkf->bilf", adj.to(x.dtype), x)  # [B, N, L, F]',
        ("tests/test_rsf.py",),
    ),
    # ---- ABiG-Net graph generator ------------------------------------------------------------
    M(
        "abignet-generator-not-symmetrised",
        "lib/wsigraph/nn/graph_learner.py",
        "    both = torch.stack([torch.cat([src, dst]), torch.cat([dst, src])])  # [2, 2E], symmetrised",
        "    both = torch.stack([src, dst])  # [2, 2E], symmetrised",
        ("tests/test_abignet.py",),
    ),
    M(
        "abignet-generator-edges-across-images",
        "lib/wsigraph/nn/graph_learner.py",
        "        score = score.masked_fill(other | (rows[:, None] == cols[None, :]), -math.inf)",
        "        score = score.masked_fill(rows[:, None] == cols[None, :], -math.inf)",
        ("tests/test_abignet.py",),
    ),
    M(
        "abignet-generator-ignores-distance",
        "lib/wsigraph/nn/graph_learner.py",
        "            s = s - self._penalty((pos[src] - pos[dst]).norm(dim=-1).to(s.dtype))",
        "            s = s - 0 * self._penalty((pos[src] - pos[dst]).norm(dim=-1).to(s.dtype))",
        ("tests/test_abignet.py",),
    ),
    # ---- H2-MIL pyramid graph and the tiling that gives it its parents -----------------------
    M(
        "pyramid-4-adjacency",
        "lib/wsigraph/graphs/pyramid.py",
        "_OFFSETS = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)]",
        "_OFFSETS = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if abs(dr) + abs(dc) == 1]",
        ("tests/test_graphs.py::test_pyramid_edges_tiny",),
    ),
    M(
        "pyramid-spatial-edges-across-levels",
        "lib/wsigraph/graphs/pyramid.py",
        "    spatial = _grid_edges_unsorted(row, col, level)  # [2, E_s]",
        "    spatial = _grid_edges_unsorted(row, col, level > 0)  # [2, E_s]",
        ("tests/test_graphs.py::test_pyramid_edges_random_structure",),
    ),
    M(
        "pyramid-parent-may-skip-a-level",
        "lib/wsigraph/graphs/pyramid.py",
        "    bad = child[level[parent[child]] != level[child] - 1]",
        "    bad = child[level[parent[child]] >= level[child]]",
        ("tests/test_graphs.py::test_invalid_pyramid_raises",),
    ),
    M(
        "tiling-parent-looked-up-two-levels-up",
        "lib/wsigraph/data/tiling.py",
        "        want = ((lv - 1) * (int(row.max()) + 1) + row[child] // k) * big + col[child] // k",
        "        want = ((lv - 2) * (int(row.max()) + 1) + row[child] // k) * big + col[child] // k",
        ("tests/test_tiling.py::test_full_mask_gives_complete_nested_grids",),
    ),
    # ---- CV splits (repeated stratified k-fold + validation hold-out) ------------------------
    M(
        "cv-val-fraction-default",
        "lib/wsigraph/train/cv.py",
        "    val_fraction: float = 0.25,\n    seed: int = 0,\n) -> list[Split]:",
        "    val_fraction: float = 0.2,\n    seed: int = 0,\n) -> list[Split]:",
        ("tests/test_train.py::test_splits_protocol",),
    ),
    M(
        "cv-val-not-stratified",
        "lib/wsigraph/train/cv.py",
        "                train_val, test_size=val_fraction, stratify=y[train_val], random_state=s",
        "                train_val, test_size=val_fraction, stratify=None, random_state=s",
        ("tests/test_train.py::test_splits_protocol",),
    ),
    M(
        "cv-val-drawn-from-the-test-fold-too",
        "lib/wsigraph/train/cv.py",
        "                train_val, test_size=val_fraction, stratify=y[train_val], random_state=s",
        "                np.arange(len(y)), test_size=val_fraction, stratify=y, random_state=s",
        ("tests/test_train.py::test_splits_protocol",),
    ),
    M(
        "cv-repeats-reuse-the-first-shuffle",
        "lib/wsigraph/train/cv.py",
        "    for k, (train_val, test) in enumerate(rskf.split(np.zeros(len(y)), y)):",
        "    for k, (train_val, test) in enumerate(list(rskf.split(np.zeros(len(y)), y))[:folds] * repeats):",
        ("tests/test_train.py::test_splits_repeats_reshuffle",),
    ),
    # ---- classification metrics --------------------------------------------------------------
    M(
        "metrics-auc-of-class-0-column",
        "lib/wsigraph/train/metrics.py",
        "        auc = float(roc_auc_score(y, p[:, 1]))",
        "        auc = float(roc_auc_score(y, p[:, 0]))",
        ("tests/test_train.py::test_metrics_binary_by_hand",),
    ),
    M(
        "metrics-f1-micro",
        "lib/wsigraph/train/metrics.py",
        '        "f1": float(f1_score(y, pred, average="macro", zero_division=0)),',
        '        "f1": float(f1_score(y, pred, average="micro", zero_division=0)),',
        ("tests/test_train.py::test_metrics_multiclass_and_single_class",),
    ),
    M(
        "metrics-acc-from-a-threshold",
        "lib/wsigraph/train/metrics.py",
        "    pred = p.argmax(axis=1)",
        "    pred = (p[:, -1] > 0.5).astype(np.int64)",
        ("tests/test_train.py::test_metrics_multiclass_and_single_class",),
    ),
    M(
        "metrics-std-population",
        "lib/wsigraph/train/metrics.py",
        "    std = float(np.std(v, ddof=1)) if len(v) > 1 else math.nan",
        "    std = float(np.std(v)) if len(v) > 1 else math.nan",
        ("tests/test_train.py::test_summarise",),
    ),
    # ---- atomic writes: umask, full disk --------------------------------------------------------
    M(
        "io-umask-ignored",
        "lib/wsigraph/io.py",
        "            os.close(os.open(tmp, flags, 0o666))",
        "            os.close(os.open(tmp, flags, 0o644))",
        ("tests/test_io.py::test_files_honour_the_umask",),
    ),
    M(
        "io-disk-full-not-named",
        "lib/wsigraph/io.py",
        "        if full:\n",
        "        if full and False:\n",
        ("tests/test_io.py::test_disk_full_oserror_names_the_path",),
    ),
    # ---- GDC downloads: md5 / size verification ----------------------------------------------
    M(
        "gdc-md5-mismatch-only-warned",
        "lib/wsigraph/data/gdc.py",
        '            if md5 != job["md5"]:\n'
        "                return f\"md5 {md5}, expected {job['md5']}\"\n",
        '            if md5 != job["md5"]:\n'
        "                warnings.warn(f\"{job['name']}: md5 {md5}, expected {job['md5']}\")\n",
        ("tests/test_gdc.py::test_bad_md5_always_fails_that_file_only",),
    ),
    M(
        "gdc-part-suffix-accepted",
        "lib/wsigraph/data/gdc.py",
        "                if name.lower().endswith(PART_SUFFIX):",
        "                if name.endswith(PART_SUFFIX):",
        ("tests/test_gdc.py::test_a_name_ending_in_the_temporary_suffix_is_refused",),
    ),
    M(
        "gdc-rename-without-recheck",
        "lib/wsigraph/data/gdc.py",
        "            if unchanged and _identity(os.stat(part)) == seen:\n"
        "                os.replace(part, final)\n"
        "                if _identity(os.stat(final)) == seen:\n",
        "            if True:\n                os.replace(part, final)\n                if True:\n",
        ("tests/test_gdc.py::test_md5_is_checked_on_the_file_that_is_renamed",),
    ),
    M(
        "gdc-negative-page-count-accepted",
        "lib/wsigraph/data/gdc.py",
        "    if count is None or count < 0 or count != len(hits):",
        "    if count is None or count > len(hits):",
        (
            "tests/test_gdc.py::test_pagination_count_minus_one_is_refused_at_once",
            "tests/test_gdc.py::test_pagination_that_never_ends_is_capped",
        ),
    ),
    M(
        "gdc-corrupt-part-kept",
        "lib/wsigraph/data/gdc.py",
        "            self._discard(part, bar)\n        raise GDCError(",
        "            pass\n        raise GDCError(",
        ("tests/test_gdc.py::test_bad_md5_once_is_fetched_again",),
    ),
    M(
        "gdc-existing-file-size-not-checked",
        "lib/wsigraph/data/gdc.py",
        "                    and p.stat().st_size == size",
        "                    and p.stat().st_size >= 0",
        ("tests/test_gdc.py::test_truncated_final_file_is_fetched_again",),
    ),
    M(
        "gdc-verify-existing-ignored",
        "lib/wsigraph/data/gdc.py",
        "                    and (not verify_existing or _md5(p, self.md5_chunk_size) == md5)",
        "                    and (not verify_existing or _md5(p, self.md5_chunk_size) != '')",
        ("tests/test_gdc.py::test_complete_files_are_skipped",),
    ),
    # ---- saved models and CLAM bags -----------------------------------------------------------
    M(
        "checkpoint-normaliser-dropped",
        "lib/wsigraph/checkpoint.py",
        "        if self.feature_mean is not None:",
        "        if False:",
        (
            "tests/test_checkpoint.py::test_every_fold_saves_a_model_that_reproduces_its_test_predictions",
        ),
    ),
    M(
        "clam-fine-patch-under-the-thumbnail",
        "lib/wsigraph/data/clam.py",
        "        parent.append(1 + idx[inside])",
        "        parent.append(idx[inside])",
        ("tests/test_clam.py::test_two_clam_bags_make_the_pyramid_and_a_model_reads_it",),
    ),
    # ---- survival: NLL, risk, c-index, bins --------------------------------------------------
    M(
        "survival-nll-censoring-inverted",
        "lib/wsigraph/train/survival.py",
        "    c = c.view(b, 1).to(hazards.dtype)",
        "    c = 1 - c.view(b, 1).to(hazards.dtype)",
        ("tests/test_survival.py::test_nll_loss_per_case_by_hand",),
    ),
    M(
        "survival-risk-sign-flipped",
        "lib/wsigraph/train/survival.py",
        "    return -torch.cumprod(1 - torch.sigmoid(logits), dim=1).sum(dim=1)",
        "    return torch.cumprod(1 - torch.sigmoid(logits), dim=1).sum(dim=1)",
        ("tests/test_survival.py::test_risk_is_minus_the_sum_of_survival",),
    ),
    M(
        "survival-c-index-event-flag-inverted",
        "lib/wsigraph/train/survival.py",
        "        return float(concordance_index(t, -r, 1 - c))",
        "        return float(concordance_index(t, -r, c))",
        ("tests/test_survival.py::test_c_index_hand_computed",),
    ),
    M(
        "survival-bins-from-censored-cases",
        "lib/wsigraph/train/survival.py",
        "    events = t[c == 0]",
        "    events = t[c == 1]",
        ("tests/test_survival.py::test_bins_are_quantiles_of_the_uncensored_times",),
    ),
    # ---- cohort labels -----------------------------------------------------------------------
    M(
        "cohort-stage-ii-counted-late",
        "lib/wsigraph/data/cohort.py",
        '    return {"I": 0, "II": 0, "III": 1, "IV": 1}.get(roman)',
        '    return {"I": 0, "II": 1, "III": 1, "IV": 1}.get(roman)',
        ("tests/test_cohort.py::test_staging_label",),
    ),
    M(
        "cohort-kica-typing-swapped",
        "lib/wsigraph/data/cohort.py",
        '        return {"TCGA-KIRP": 0, "TCGA-KICH": 1}.get(project)',
        '        return {"TCGA-KIRP": 1, "TCGA-KICH": 0}.get(project)',
        ("tests/test_cohort.py::test_typing_label",),
    ),
    M(
        "cohort-unknown-diagnosis-as-class-0",
        "lib/wsigraph/data/cohort.py",
        "    return None\n\n\ndef staging_label(",
        "    return 0\n\n\ndef staging_label(",
        ("tests/test_cohort.py::test_typing_label",),
    ),
    M(
        "cohort-cdr-fill-overrides-labels",
        "lib/wsigraph/data/cohort.py",
        '            out[task] = out[task].fillna(fill).astype("Int64")',
        '            out[task] = fill.fillna(out[task]).astype("Int64")',
        ("tests/test_cohort.py::test_cdr_fills_only_the_labels_the_gdc_leaves_empty",),
    ),
    M(
        "cohort-either-label-enters",
        "lib/wsigraph/data/cohort.py",
        '        labelled = known["typing"] & known["staging"]',
        '        labelled = known["typing"] | known["staging"]',
        (
            "tests/test_cohort.py::test_tcga_manifest_keeps_only_cases_with_both_labels",
            "tests/test_cohort.py::test_cohort_rule_on_the_tcga_cdr_table",
        ),
    ),
    M(
        "cohort-rule-before-cdr-fill",
        "lib/wsigraph/data/cohort.py",
        "    if cdr is not None:\n        df = _fill_from_cdr(df, cdr)\n"
        "    return keep_labelled(df, require_both, name=dataset.upper())",
        "    df = keep_labelled(df, require_both, name=dataset.upper())\n"
        "    if cdr is not None:\n        df = _fill_from_cdr(df, cdr)\n    return df",
        ("tests/test_cohort.py::test_build_tcga_cohort_applies_the_rule_after_the_cdr_fill",),
    ),
    M(
        "cohort-esca-names-as-the-papers",
        "lib/wsigraph/data/cohort.py",
        'TYPING_CLASSES = {"esca": ("squamous", "adenocarcinoma"), "kica": ("KIRP", "KICH")}',
        'TYPING_CLASSES = {"esca": ("adenocarcinoma", "squamous"), "kica": ("KIRP", "KICH")}',
        ("tests/test_cohort.py",),
    ),
    M(
        "cohort-missing-label-trained-as-class-0",
        "lib/wsigraph/train/run.py",
        '    values = pd.to_numeric(sub[task], errors="coerce")',
        '    values = pd.to_numeric(sub[task], errors="coerce").fillna(0)',
        ("tests/test_train.py::test_load_graphs",),
    ),
    # ---- synthetic generators: the class signal ----------------------------------------------
    M(
        "nuclei-bach-same-layout-for-both-classes",
        "lib/wsigraph/data/synthetic_nuclei.py",
        '        "bach": (_ducts, _cords),',
        '        "bach": (_ducts, _ducts),',
        ("tests/test_synthetic_nuclei.py::test_class_signal_on_small_sets",),
    ),
    # ---- issue 20: verified caches, damaged fold / run files, huge slides, bad inputs ---------
    M(
        "io-digest-mismatch-ignored",
        "lib/wsigraph/io.py",
        "    if stored != actual:",
        "    if False:",
        ("tests/test_faults.py",),
    ),
    M(
        "graphs-digest-not-checked",
        "lib/wsigraph/graphs/pyramid.py",
        "    check_digest(payload, path, required=require_digest)",
        "    pass",
        ("tests/test_faults.py::test_bit_flipped_graph_file_is_caught",),
    ),
    M(
        "fold-cache-missing-metric-accepted",
        "lib/wsigraph/train/run.py",
        "    lacking = [m for m in METRICS if m not in metrics]",
        "    lacking = []",
        ("tests/test_faults.py::test_damaged_fold_cache_files_are_named_and_recomputed",),
    ),
    M(
        "load-graphs-labels-not-dropped-with-graphs",
        "lib/wsigraph/train/run.py",
        "        labels = labels[keep]",
        "        pass",
        ("tests/test_faults.py::test_a_truncated_slide_is_named_by_each_stage_and_left_out_of_cv",),
    ),
    M(
        "check-inputs-gaps-in-classes-accepted",
        "lib/wsigraph/train/run.py",
        "    if absent or classes[-1] >= len(expected):",
        "    if classes[-1] >= len(expected):",
        ("tests/test_faults.py::test_bad_inputs_are_refused_naming_the_slides",),
    ),
    M(
        "slides-no-small-level-not-named",
        "lib/wsigraph/data/slides.py",
        "        if not small:",
        "        if False:",
        ("tests/test_faults.py::test_single_level_huge_slide_is_named_and_the_stage_goes_on",),
    ),
    # ---- nuclei GCN: the RSF reference code's vertex-axis pooling, the radius in µm ---------
    M(
        "nucgcn-pool-softmax-over-clusters",
        "lib/wsigraph/nn/rsf.py",
        "            s = softmax(logits, batch, num_nodes=N, dim=0)  # over each graph's vertices",
        "            s = torch.softmax(logits, dim=-1)  # over each graph's vertices",
        ("tests/test_rsf.py",),
    ),
    M(
        "nucgcn-pool-padding-mask-dropped",
        "lib/wsigraph/nn/rsf.py",
        "                logits = logits.masked_fill(~mask.bool().unsqueeze(-1), low)",
        "                logits = logits + 0 * low",
        ("tests/test_rsf.py",),
    ),
    M(
        "nucgcn-no-norm-after-pooling",
        "lib/wsigraph/models/nuclei_gcn.py",
        "        x = self._after_pool(self.pool_norm1, x)",
        "        x = x",
        ("tests/test_nuclei_gcn.py",),
    ),
    M(
        "nucgcn-radius-um-conversion-inverted",
        "lib/wsigraph/graphs/nuclei.py",
        "    return radius_um / _check_mpp(mpp)",
        "    return radius_um * _check_mpp(mpp)",
        ("tests/test_nuclei_graph.py",),
    ),
    # ---- ABiG-Net, the official model and training -------------------------------------------
    M(
        "abignet-official-gcn-unnormalised",
        "lib/wsigraph/nn/dense_gcn.py",
        "        return normalise_adjacency(a) @ (x @ self.weight) + self.bias",
        "        return a @ (x @ self.weight) + self.bias",
        ("tests/test_abignet_official.py",),
    ),
    M(
        "abignet-official-adjacency-not-symmetrised",
        "lib/wsigraph/nn/dense_gcn.py",
        "    return (a + a.T) / 2 * (1 - eye) + eye",
        "    return a * (1 - eye) + eye",
        ("tests/test_abignet_official.py",),
    ),
    M(
        "abignet-given-graph-ignored",
        "lib/wsigraph/models/abignet.py",
        "    a[edge_index[0], edge_index[1]] = 1.0\n",
        "",
        ("tests/test_abignet_official.py::test_given_graph_reads_each_images_own_edges",),
    ),
    M(
        "abignet-oracle-joins-patches-of-different-groups",
        "lib/wsigraph/data/synthetic_rois.py",
        "    node_group = groups[pos[:, 1] * grid + pos[:, 0]]",
        "    node_group = groups[pos[:, 0] * grid + pos[:, 1]]",
        ("tests/test_synthetic_rois.py::test_lookalike_edges_join_exactly_the_true_look_alikes",),
    ),
    M(
        "abignet-official-l1-dropped",
        "lib/wsigraph/train/bilevel.py",
        "g.y.view(1)) + l1_penalty(a, l1)",
        "g.y.view(1)) + l1_penalty(a, 0.0)",
        ("tests/test_abignet_official.py",),
    ),
    M(
        "abignet-official-generator-on-training-images",
        "lib/wsigraph/train/bilevel.py",
        "official_upper_pass(model, [val[i] for i in order]",
        "official_upper_pass(model, [train[i] for i in order]",
        ("tests/test_selection.py::test_official_abignet_selects_on_validation_and_tests_once",),
    ),
    # ---- ABiG-Net patch features (graphs/abignet_features.py) -----------------------------
    M(
        "abignet-features-64-nuclei-kept",
        "lib/wsigraph/graphs/abignet_features.py",
        "        if n <= min_nuclei:",
        "        if n < min_nuclei:",
        ("tests/test_abignet_features.py::test_image_patch_features_keeps_more_than_64_nuclei",),
    ),
    M(
        "abignet-features-mst-mean-std-in-matlab-slots-swapped",
        "lib/wsigraph/graphs/abignet_features.py",
        "    f[23], f[22], f[24], f[25] = _stats(mst)",
        "    f[22], f[23], f[24], f[25] = _stats(mst)",
        ("tests/test_abignet_features.py::test_voronoi_unit_square_and_centre",),
    ),
    M(
        "abignet-features-eccentricity-infinite-when-disconnected",
        "lib/wsigraph/graphs/abignet_features.py",
        "    ecc = np.where(finite, dist, -np.inf).max(1)",
        "    ecc = dist.max(1)",
        ("tests/test_abignet_features.py::test_cell_graph_triangle_and_an_isolated_nucleus",),
    ),
    M(
        "abignet-features-population-std",
        "lib/wsigraph/graphs/abignet_features.py",
        "    s = float(x.std(ddof=1)) if x.size > 1 else 0.0",
        "    s = float(x.std()) if x.size > 1 else 0.0",
        ("tests/test_abignet_features.py::test_voronoi_unit_square_and_centre",),
    ),
    # ---- MiCo as its authors ran it (train/mico.py, train/optim.py) ------------------------
    M(
        "mico-anchor-kmeans-sees-every-slide",
        "lib/wsigraph/train/mico.py",
        "        ((sid, j, int(b)) for b in train for j, sid in enumerate(bags[int(b)].slide_ids)),",
        "        ((sid, j, b) for b in range(len(bags)) for j, sid in enumerate(bags[b].slide_ids)),",
        ("tests/test_mico_official.py::test_anchor_kmeans_never_sees_a_validation_or_test_slide",),
    ),
    M(
        "mico-threads-not-pinned",
        "lib/wsigraph/train/mico.py",
        # both pins: threadpoolctl's OpenMP limit alone also pins torch's threads on some builds
        "    torch.set_num_threads(threads)\n    torch.use_deterministic_algorithms(True, warn_only=True)\n"
        "    try:\n        with threadpool_limits(threads):\n",
        "    torch.use_deterministic_algorithms(True, warn_only=True)\n"
        "    try:\n        with threadpool_limits(None):\n",
        (
            "tests/test_mico_official.py::"
            "test_two_runs_give_identical_metrics_and_weights_whatever_the_thread_count",
        ),
    ),
    M(
        "lookahead-slow-weights-skipped",
        "lib/wsigraph/train/optim.py",
        "                slow.add_(p - slow, alpha=self.alpha)",
        "                slow.add_(p - slow, alpha=1.0)",
        (
            "tests/test_mico_official.py::"
            "test_lookahead_radam_matches_the_official_update_written_out",
        ),
    ),
    M(
        "mico-checkpoint-last-epoch",
        "lib/wsigraph/train/mico.py",
        "        if best_state is None or score > best_score:",
        "        if True:",
        ("tests/test_selection.py::test_mico_fold_selects_on_validation_and_tests_once",),
    ),
    # ---- nuclei segmentation that generalises (issue 16) --------------------------------------
    M(
        "nucseg-loo-trains-on-held-out-organ",
        "lib/wsigraph/data/nuclei_loo.py",
        "            train = {n: tiles[n] for n in names if organs[n] != organ}",
        "            train = {n: tiles[n] for n in names}",
        ("tests/test_nuclei_seg.py::test_leave_one_organ_out_never_trains_on_the_held_out_organ",),
    ),
    M(
        "nucseg-f1-iou-at-least-half",
        "lib/wsigraph/data/nuclei_seg.py",
        "    tp = int((inter / union > iou).sum())",
        "    tp = int((inter / union >= iou).sum())",
        ("tests/test_nuclei_seg.py::test_f1_and_count_error_hand_computed",),
    ),
    M(
        "nucseg-distance-target-rim-at-zero",
        "lib/wsigraph/data/nuclei_seg.py",
        "    edt = ndimage.distance_transform_edt(inside) + (instances > 0)",
        "    edt = ndimage.distance_transform_edt(inside)",
        ("tests/test_nuclei_seg.py::test_distance_target_on_a_tiny_square",),
    ),
    M(
        "nucseg-augment-flips-mask-other-axis",
        "lib/wsigraph/data/nuclei_seg.py",
        "        img, inst = img[:, ::-1], inst[:, ::-1]",
        "        img, inst = img[:, ::-1], inst[::-1, :]",
        ("tests/test_nuclei_seg.py::test_augmented_crop_keeps_image_and_mask_aligned",),
    ),
    # ---- controls and demo checks (issue 17) ----------------------------------------------
    M(
        "control-mean-of-all-levels",
        "lib/wsigraph/models/slide_mean.py",
        "            keep = batch.level == lv",
        "            keep = batch.level >= 0",
        ("tests/test_controls.py",),
    ),
    M(
        "control-bound-inverted",
        "lib/wsigraph/tables.py",
        '        line["control fails"] = max(values.values()) <= 100 * bound',
        '        line["control fails"] = min(values.values()) <= 100 * bound',
        ("tests/test_controls.py",),
    ),
    M(
        "ordering-sign-ignored",
        "lib/wsigraph/tables.py",
        "        agree = sum((a[1] - b[1]) * (a[2] - b[2]) > 0 for a, b in pairs)",
        "        agree = sum((a[1] - b[1]) * (a[2] - b[2]) != 0 for a, b in pairs)",
        ("tests/test_controls.py",),
    ),
    M(
        "run-set-ignored",
        "lib/wsigraph/pipeline.py",
        '    limit = None if all_rows or "row" in wanted else profile',
        "    limit = None",
        ("tests/test_controls.py",),
    ),
    M(
        "headline-ignores-the-cell",
        "lib/wsigraph/tables.py",
        "    return HEADLINE_CELLS.get(table_id, {}).get((dataset, task), HEADLINE[table_id])",
        "    return HEADLINE[table_id]",
        ("tests/test_controls.py",),
    ),
    # ---- figures (issue 18, item 5) -----------------------------------------------------------
    M(
        "scale-bar-length-inverted",
        "lib/wsigraph/viz/slides.py",
        "        length / um_per_px,",
        "        length * um_per_px,",
        ("tests/test_viz.py",),
    ),
    M(
        "ours-vs-paper-xlim-ignores-std",
        "lib/wsigraph/viz/tables.py",
        "            lo, hi = min(lo, mean - std - 2), max(hi, mean + std + 2)",
        "            lo, hi = min(lo, mean - 2), max(hi, mean + 2)",
        ("tests/test_viz.py",),
    ),
    M(
        "strip-noise-drops-real-warnings",
        "lib/wsigraph/pipeline.py",
        "                    if line.strip() and not any(p.search(line) for p in NOISE_LINES)",
        "                    if False",
        (
            "tests/test_pipeline.py::test_strip_noise_drops_progress_frames_and_known_chatter_but_keeps_real_warnings",
        ),
    ),
    M(
        "walkthrough-node-attention-not-divided",
        "lib/wsigraph/walkthrough.py",
        '            "alpha_node": (w / alpha_r).numpy(),',
        '            "alpha_node": w.numpy(),',
        ("tests/test_walkthrough.py",),
    ),
    M(
        "compact-cell-drops-the-paper",
        "lib/wsigraph/tables.py",
        '            value = df[col].astype(str) + " / " + df[f"{head} [paper]"].astype(str)',
        "            value = df[col].astype(str)",
        ("tests/test_tables.py",),
    ),
    M(
        "report-styles-stay-inline",
        "lib/wsigraph/report.py",
        "    if styles is not None:\n        body = _share_styles(body, output.parent, styles)\n",
        "",
        ("tests/test_report.py",),
    ),
    M(
        "numeric-csv-ours-is-the-paper",
        "lib/wsigraph/tables.py",
        '                    "ours_mean": ours_mean,',
        '                    "ours_mean": paper_mean,',
        ("tests/test_tables.py",),
    ),
    M(
        "km-without-at-risk-table",
        "lib/wsigraph/viz/survival.py",
        "    at_risk: bool = True,",
        "    at_risk: bool = False,",
        ("tests/test_survival.py::test_km_figure_separates_risk_groups",),
    ),
    # ---- bad values and bad inputs reach the user as errors (issue 20) ---------------------
    M(
        "faults-p-bool-counts-as-int",
        "lib/wsigraph/pipeline.py",
        "    if isinstance(value, bool) and expected is not bool:\n        return False\n",
        "",
        ("tests/test_pipeline.py::test_bad_values_are_refused_before_any_notebook_runs",),
    ),
    M(
        "faults-min-slide-side-at-finest-magnification",
        "lib/wsigraph/profiles.py",
        "self.patch_size * self.slide_base_mag / min(self.magnifications)",
        "self.patch_size * self.slide_base_mag / max(self.magnifications)",
        ("tests/test_faults.py::test_a_too_small_slide_size_says_the_minimum",),
    ),
    M(
        "mico-learned-anchors-hash-unread-clusters",
        "lib/wsigraph/train/mico.py",
        '    if cfg.model_config.get("anchors", "slide") == "learned":',
        "    if False:",
        ("tests/test_mico_official.py::test_only_rows_that_read_cached_clusters_hash_them",),
    ),
    M(
        "faults-mico-skips-input-checks",
        "lib/wsigraph/train/mico.py",
        "        y = check_inputs(graphs, labels)",
        "        y = np.asarray(labels).astype(np.int64)",
        ("tests/test_faults.py::test_nan_features_are_named_by_the_survival_and_mico_runners",),
    ),
    # ---- the command line and the report page (issue 18, items 8-9) -----------------------
    M(
        "cli-scoped-parameters-ignored",
        "lib/wsigraph/pipeline.py",
        "        values = given | {name: v for name, (v, _, _) in scoped.get(nb, {}).items()}\n"
        "        runs = expand",
        "        values = given\n        runs = expand",
        ("tests/test_pipeline.py::test_scoped_parameter_reaches_only_its_notebook",),
    ),
    M(
        "run-all-prunes-after-a-narrowed-run",
        "lib/wsigraph/pipeline.py",
        "    if not args.only and not args.parameter:",
        "    if True:",
        ("tests/test_pipeline.py::test_complete_run_prunes_run_records_it_no_longer_writes",),
    ),
    M(
        "cli-profile-contradiction-let-through",
        "lib/wsigraph/pipeline.py",
        "        if value != profile",
        "        if value is None",
        ("tests/test_pipeline.py::test_profile_parameter_contradicting_the_option_is_refused",),
    ),
    M(
        "report-links-the-notebook-not-its-page",
        "lib/wsigraph/report.py",
        "        pages.append((nb.stem, page.relative_to(results).as_posix()))",
        "        pages.append((nb.stem, nb.relative_to(results).as_posix()))",
        (
            "tests/test_report.py::test_index_renders_every_notebook_and_links_every_table_and_figure",
        ),
    ),
    # ---- MiCo demo cohort and control rows (issue 17) ---------------------------------------
    M(
        "mico-demo-label-one-type",
        "lib/wsigraph/data/synthetic_mico.py",
        """    label = int((x_type == "A'") ^ (y_type == "B'"))""",
        """    label = int(x_type == "A'")""",
        ("tests/test_synthetic_mico.py",),
    ),
    M(
        "mico-demo-second-type-never-placed",
        "lib/wsigraph/data/synthetic_mico.py",
        "        t = TYPES.index(x_type if j % 2 == 0 else y_type)",
        "        t = TYPES.index(x_type)",
        ("tests/test_synthetic_mico.py",),
    ),
    M(
        "mico-demo-hazard-ignores-pairing",
        "lib/wsigraph/data/synthetic_mico.py",
        '        signal = (2 * truth["pairing"] - 1) * truth["share"] / ((lo + hi) / 2)',
        '        signal = truth["share"] / ((lo + hi) / 2)',
        ("tests/test_synthetic_mico.py",),
    ),
    M(
        "mico-control-fits-on-test-cases",
        "lib/wsigraph/train/mico.py",
        "        fit = np.sort(np.concatenate([s.train, s.val])).astype(np.int64)",
        "        fit = np.sort(np.concatenate([s.train, s.val, s.test])).astype(np.int64)",
        ("tests/test_synthetic_mico.py",),
    ),
    # ---- issue 17: ABiG-Net demo generator, mean/std control, vectorised region properties ----
    M(
        "abignet-demo-normal-class-ungrouped",
        "lib/wsigraph/data/synthetic_rois.py",
        "    if label == 0:\n        return 1.0",
        "    if label == 0:\n        return 0.0",
        ("tests/test_synthetic_rois.py",),
    ),
    M(
        "abignet-demo-draws-not-latin",
        "lib/wsigraph/data/synthetic_rois.py",
        "(ranges[:, 1] - ranges[:, 0]) * _latin(rng, n_draws, len(ranges))",
        "(ranges[:, 1] - ranges[:, 0]) * rng.uniform(size=(n_draws, len(ranges)))",
        ("tests/test_synthetic_rois.py::test_groups_and_marginals",),
    ),
    M(
        "abignet-demo-nearest-patch-is-itself",
        "lib/wsigraph/data/synthetic_rois.py",
        "        np.fill_diagonal(d2, np.inf)\n",
        "",
        ("tests/test_synthetic_rois.py::test_nearest_patch_distance_matches_a_plain_write_out",),
    ),
    M(
        "abignet-meanstd-control-fits-on-test-fold",
        "lib/wsigraph/train/probe.py",
        "        fit = np.concatenate([s.train, s.val])",
        "        fit = np.concatenate([s.train, s.val, s.test])",
        ("tests/test_synthetic_rois.py::test_mean_std_lr_control_fits_on_train_and_val_only",),
    ),
    M(
        "abignet-features-voronoi-cell-not-closed",
        "lib/wsigraph/graphs/abignet_features.py",
        "    nxt = start[owner] + (pos + 1) % sizes[owner]",
        "    nxt = start[owner] + np.minimum(pos + 1, sizes[owner] - 1)",
        ("tests/test_abignet_features.py",),
    ),
    M(
        "label-props-glcm-not-symmetric",
        "lib/wsigraph/graphs/label_props.py",
        "    p = (p + p.transpose(0, 2, 1)).astype(np.float64)",
        "    p = (p + p).astype(np.float64)",
        ("tests/test_label_props.py",),
    ),
    # ---- synthetic demo slides (issue 17, 2a): the label only in the hierarchy ---------------
    M(
        "synthetic-more-textured-cells-in-typing-class-1",
        "lib/wsigraph/data/synthetic.py",
        "TYPING_TEXTURE_IN_MIXED[spec.typing], spec.texture_share",
        "TYPING_TEXTURE_IN_MIXED[spec.typing], spec.texture_share * (1 + spec.typing)",
        ("tests/test_synthetic.py::test_slide_means_carry_no_signal_and_the_hierarchy_does",),
    ),
    M(
        "synthetic-chromatin-texture-survives-at-5x",
        "lib/wsigraph/data/synthetic.py",
        "    rows, cols = (np.arange(c) // 2) % 2, (np.arange(c) // 2) % 2",
        "    rows, cols = (np.arange(c) // 4) % 2, (np.arange(c) // 4) % 2",
        (
            "tests/test_synthetic.py::test_fine_textures_are_visible_at_10x_and_cancel_at_5x",
            "tests/test_synthetic.py::test_slide_means_carry_no_signal_and_the_hierarchy_does",
        ),
    ),
    M(
        "synthetic-typing-texture-ignores-architecture",
        "lib/wsigraph/data/synthetic.py",
        "TYPING_TEXTURE_IN_MIXED = (True, False)",
        "TYPING_TEXTURE_IN_MIXED = (True, True)",
        ("tests/test_synthetic.py::test_slide_means_carry_no_signal_and_the_hierarchy_does",),
    ),
    M(
        "synthetic-nuclei-cross-cell-borders",
        "lib/wsigraph/data/synthetic.py",
        "    nuclei = _stamp(shape, cy, cx, lambda dy, dx: dy**2 + dx**2 <= r**2, 7, cell=c)",
        "    nuclei = _stamp(shape, cy, cx, lambda dy, dx: dy**2 + dx**2 <= r**2, 7)",
        ("tests/test_synthetic.py::test_nuclei_stay_inside_their_cells",),
    ),
    # ---- issue 17: the nuclei-graph demo task (class only in which nuclei neighbour which) ------
    M(
        "nuclei-demo-count-leaks-the-class",
        "lib/wsigraph/data/synthetic_nuclei.py",
        "        n = int(round(_count(seed, task, index, *NUCLEI_PER_TILE) * scale))",
        "        n = int(round(_count(seed, task, index, *NUCLEI_PER_TILE) * scale * (1 + 0.1 * label)))",
        ("tests/test_nuclei_demo_task.py::test_control_fails_on_the_drawn_nuclei",),
    ),
    M(
        "nuclei-demo-spacing-leaks-the-class",
        "lib/wsigraph/data/synthetic_nuclei.py",
        "        yx = _accept(rng, _uniform(rng, size, 8 * n), size, min_dist=MIN_DIST, n=n, margin=3.0)",
        "        yx = _accept(rng, _uniform(rng, size, 8 * n), size, min_dist=MIN_DIST + 3 * label, n=n, margin=3.0)",
        ("tests/test_nuclei_demo_task.py::test_control_fails_on_the_drawn_nuclei",),
    ),
    M(
        "nuclei-demo-same-kind-layout-for-both-classes",
        "lib/wsigraph/data/synthetic_nuclei.py",
        "        score = layouts[label](rng, yx, size)  # [m], higher = more tumour-like place",
        "        score = layouts[0](rng, yx, size)  # [m], higher = more tumour-like place",
        ("tests/test_nuclei_demo_task.py::test_oracle_separates_the_classes",),
    ),
    M(
        "nuclei-control-degree-counts-each-edge-once",
        "lib/wsigraph/data/nuclei_sets.py",
        "        rows.append((nodes, edges / nodes if nodes else 0.0, weight))",
        "        rows.append((nodes, edges / 2 / nodes if nodes else 0.0, weight))",
        ("tests/test_nuclei_demo_task.py::test_count_degree_weight_hand_computed",),
    ),
    # ---- issue 17: MiCo demo oracle and equal-difficulty subtyping columns --------------------
    M(
        "mico-oracle-reads-the-label-not-the-hazard",
        "lib/wsigraph/data/synthetic_mico.py",
        '    pooled = c_index(truth["time"], truth["signal"], truth["censorship"])',
        '    pooled = c_index(truth["time"], truth["pairing"], truth["censorship"])',
        ("tests/test_synthetic_mico.py::test_oracle_c_index_is_the_true_hazards_c_index",),
    ),
    M(
        "mico-oracle-fold-reads-the-last-slide-of-a-bag",
        "lib/wsigraph/data/synthetic_mico.py",
        '            idx = [rows[str(s).split(",")[0]] for s in fold]',
        '            idx = [rows[str(s).split(",")[-1]] for s in fold]',
        ("tests/test_synthetic_mico.py::test_oracle_c_index_is_the_true_hazards_c_index",),
    ),
    M(
        "mico-demo-brca-column-harder-again",
        "lib/wsigraph/data/synthetic_mico.py",
        '    "brca": MiCoDemoSpec("brca", "typing", seed=12),',
        '    "brca": MiCoDemoSpec("brca", "typing", seed=12, separation=5.0),',
        ("tests/test_synthetic_mico.py::test_subtyping_columns_differ_only_by_seed",),
    ),
    # ---- issues 18-19: figure findings, refit, your own label column ------------------------
    M(
        "signal-cells-swap-rows-and-columns",
        "lib/wsigraph/data/synthetic.py",
        "    i, j = (pos[:, 1] // spec.cell).astype(int), (pos[:, 0] // spec.cell).astype(int)",
        "    i, j = (pos[:, 0] // spec.cell).astype(int), (pos[:, 1] // spec.cell).astype(int)",
        ("tests/test_figure_findings.py",),
    ),
    M(
        "heat-share-of-the-other-patches",
        "lib/wsigraph/viz/interpret.py",
        '        "heat_share": float(heat[signal].sum() / total) if total > 0 else math.nan,',
        '        "heat_share": float(heat[~signal].sum() / total) if total > 0 else math.nan,',
        ("tests/test_figure_findings.py",),
    ),
    M(
        "refit-for-all-epochs-not-the-folds-median",
        "lib/wsigraph/train/run.py",
        "    epochs = max(1, int(np.round(np.median([r.best_epoch for r in fold_results]))))",
        "    epochs = cfg.epochs",
        (
            "tests/test_checkpoint.py::test_refit_trains_one_model_on_every_slide_for_the_folds_median_best_epoch",
        ),
    ),
    M(
        "refit-standardises-with-the-first-slides-only",
        "lib/wsigraph/train/loop.py",
        "        mean, std = feature_stats(graphs, every)",
        "        mean, std = feature_stats(graphs, every[: len(every) // 2])",
        (
            "tests/test_checkpoint.py::test_refit_trains_one_model_on_every_slide_for_the_folds_median_best_epoch",
        ),
    ),
    M(
        "own-label-must-be-binary",
        "lib/wsigraph/train/run.py",
        "    valid = values.isin([0, 1]) if task in TASKS else values.map(_class)",
        "    valid = values.isin([0, 1])",
        ("tests/test_train.py::test_load_graphs",),
    ),
    M(
        "table-csv-paper-value-is-ours",
        "lib/wsigraph/tables.py",
        "                values[(row.name, c_paper)] = (paper.mean, paper.std)",
        "                values[(row.name, c_paper)] = ours or (paper.mean, paper.std)",
        ("tests/test_tables.py::test_write_table",),
    ),
    # ---- slide stages over executors (stages.py, train/executor.py, io.py) -------------------
    M(
        "executor-dead-worker-not-retried",
        "lib/wsigraph/train/executor.py",
        "        attempts[i] = 1\n",
        "        attempts[i] = 2\n",
        (
            "tests/test_slide_stages.py::test_a_worker_that_dies_once_is_retried_alone_and_its_slide_finishes",
        ),
    ),
    M(
        "stages-dead-slide-tmp-kept",
        "lib/wsigraph/stages.py",
        "            remove_stale_tmp(stage.target(jobs[i]))\n",
        "            pass\n",
        (
            "tests/test_slide_stages.py::test_a_killed_worker_leaves_no_partial_file_and_the_rerun_completes",
        ),
    ),
    M(
        "io-torch-archive-named-after-tmp",
        "lib/wsigraph/io.py",
        "        torch.save(obj, f)\n",
        "        torch.save(obj, str(tmp))\n",
        (
            "tests/test_slide_stages.py::test_serial_local_and_dask_write_identical_files_and_name_the_bad_slide",
        ),
    ),
    M(
        "stages-cpu-workers-take-every-core",
        "lib/wsigraph/stages.py",
        '    setups = (WorkerSetup("cpu", threads=max(1, cores // n)),) * n',
        '    setups = (WorkerSetup("cpu", threads=cores),) * n',
        ("tests/test_slide_stages.py::test_cpu_workers_never_oversubscribe_the_cores",),
    ),
    M(
        "stages-device-index-off-by-one",
        "lib/wsigraph/stages.py",
        "    missing = [i for i in wanted if i >= n]",
        "    missing = [i for i in wanted if i > n]",
        ("tests/test_slide_stages.py::test_devices_are_checked_against_the_visible_ones",),
    ),
    # run_all's kept kernels (one per --jobs slot): each 04 run starts from a cleared namespace
    M(
        "warm-kernel-not-cleared",
        "lib/wsigraph/pipeline.py",
        "            self.wait_for_reply(self.kc.execute(_RESET, silent=True, store_history=False))\n",
        "            pass\n",
        ("tests/test_pipeline.py::test_concurrent_runs_reuse_a_cleared_kernel_per_slot",),
    ),
    # one pool of workers for many CV grids (07, 08, 09): each call must see its own data
    M(
        "fold-pool-stale-shared",
        "lib/wsigraph/train/executor.py",
        "    return fn(job, _SHARED_BY_FILE[shared_file])",
        "    return fn(job, next(iter(_SHARED_BY_FILE.values())))",
        ("tests/test_train.py::test_fold_pool_serves_several_calls_with_their_own_shared",),
    ),
    M(
        "fold-pool-failure-stops-the-pool",
        "lib/wsigraph/train/executor.py",
        "                    for other in futures:  # this call's jobs only: the pool serves other calls\n"
        "                        other.cancel()\n",
        "                    self._pool.shutdown(wait=False, cancel_futures=True)\n",
        ("tests/test_train.py::test_fold_pool_serves_several_calls_with_their_own_shared",),
    ),
    # local workers fork from a server started earlier: each takes on its parent's state now
    M(
        "forked-worker-keeps-the-servers-state",
        "lib/wsigraph/train/executor.py",
        "    os.environ.clear()\n    os.environ.update(environ)\n    os.chdir(cwd)\n"
        "    sys.path[:] = path\n",
        "    pass\n",
        ("tests/test_train.py::test_local_workers_see_the_parents_environment_folder_and_path",),
    ),
    # AJI / F1 through a lookup table of the labels: label 0 is the background, never a nucleus
    M(
        "nucseg-background-counted-as-a-nucleus",
        "lib/wsigraph/data/nuclei_seg.py",
        "        present[0] = False\n",
        "        pass\n",
        (
            "tests/test_nuclei_seg.py::test_dice_aji_hand_computed",
            "tests/test_nuclei_seg.py::test_scores_do_not_depend_on_how_the_nuclei_are_numbered",
        ),
    ),
]


def _copy_tree(dest: Path) -> None:
    """The working tree as git sees it (tracked + untracked, not ignored), minus results/."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for raw in files:
        rel = raw.decode()
        if not rel or rel.startswith("results/") or not (ROOT / rel).is_file():
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)


def _pytest(copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[str, float, str]:
    """Runs ``tests`` in ``copy``; returns ("passed" | "failed" | "timeout", seconds, tail)."""
    env = os.environ | {
        "PYTHONPATH": str(copy / "lib"),
        "PYTHONDONTWRITEBYTECODE": "1",  # no stale bytecode between a mutation and its undo
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": "1",
    }
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    start = time.perf_counter()
    try:
        run = subprocess.run(
            cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - start, ""
    tail = (run.stdout + run.stderr).strip().splitlines()[-3:]
    return (
        ("passed" if run.returncode == 0 else "failed"),
        time.perf_counter() - start,
        "\n".join(tail),
    )


def _apply(copy: Path, m: Mutation) -> str:
    """Plants ``m`` in ``copy``; returns the original text of the file."""
    path = copy / m.path
    text = path.read_text()
    if text.count(m.old) != 1:
        raise ValueError(f"{m.name}: the snippet occurs {text.count(m.old)} times in {m.path}")
    mutated = text.replace(m.old, m.new)
    if m.path.endswith(".py"):
        compile(mutated, m.path, "exec")  # a mutation must be valid Python, not a syntax error
    path.write_text(mutated)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "-k",
        dest="pattern",
        default="",
        help="only mutations whose name contains this (several: a,b)",
    )
    ap.add_argument("--list", action="store_true", help="list the mutations and exit")
    ap.add_argument("--jobs", type=int, default=2, help="mutations run side by side (default 2)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per test run (default 300)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)

    patterns = args.pattern.split(",")
    chosen = [m for m in MUTATIONS if any(p in m.name for p in patterns)]
    if args.list:
        for m in chosen:
            print(f"{m.name:45s} {m.path}  <- {' '.join(m.tests)}")
        return 0
    if not chosen:
        print(f"no mutation matches {args.pattern!r}", file=sys.stderr)
        return 2
    names = [m.name for m in MUTATIONS]
    if len(set(names)) != len(names):
        raise SystemExit("duplicate mutation names")

    jobs = max(1, min(args.jobs, len(chosen)))
    with tempfile.TemporaryDirectory(prefix="wsigraph-mutations-") as tmp:
        copies = [Path(tmp) / f"copy{i}" for i in range(jobs)]
        for c in copies:
            _copy_tree(c)
        for m in chosen:  # every snippet must be found before anything runs
            _apply(copies[0], m)
            (copies[0] / m.path).write_text((ROOT / m.path).read_text())

        if not args.no_baseline:
            tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
            status, secs, tail = _pytest(copies[0], tests, args.timeout * 2)
            print(f"baseline (unmutated, {len(tests)} test targets): {status} in {secs:.0f} s")
            if status != "passed":
                print(tail)
                return 1

        free = list(copies)
        results: list[dict] = []

        def run_one(m: Mutation) -> dict:
            copy = free.pop()
            try:
                original = _apply(copy, m)
                try:
                    status, secs, tail = _pytest(copy, m.tests, args.timeout)
                finally:
                    (copy / m.path).write_text(original)
            finally:
                free.append(copy)
            verdict = "survived" if status == "passed" else "caught"
            print(f"{verdict:9s} {m.name:45s} {secs:5.0f} s  ({status})", flush=True)
            return {"name": m.name, "path": m.path, "verdict": verdict, "seconds": round(secs, 1)}

        start = time.perf_counter()
        with ThreadPoolExecutor(jobs) as pool:
            results = list(pool.map(run_one, chosen))
    survived = [r["name"] for r in results if r["verdict"] == "survived"]
    total = time.perf_counter() - start
    print(f"{len(results) - len(survived)} of {len(results)} mutations caught in {total:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    if survived:
        print("survived (the tests do not notice these bugs): " + ", ".join(survived))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
