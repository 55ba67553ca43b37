"""Per-slide k-means for MiCo's semantic anchors, cached per slide (resumable, atomic).

MiCo (MICCAI 2025) "begins by clustering instances ... with cluster centroids serving as
semantic anchors". This module clusters the instance features of every slide once and keeps
the result in ``<cache_dir>/<slide_id>.pt``, so training never re-runs k-means:

* :func:`kmeans`: k-means of one slide's ``[N, F]`` features into ``min(K, N)`` clusters;
  scikit-learn on CPU (``backend="sklearn"``) or our batched torch k-means on the GPU
  (``backend="torch"``, :func:`wsigraph.nn.mil.bag_kmeans`); ``"auto"`` picks torch when CUDA
  is available.
* :func:`cache_clusters`: clusters many slides and writes one cache file each; a file whose
  settings and feature digest match is reused, anything else is recomputed.
* :func:`attach_clusters`: our pyramid graphs with the per-node cluster labels
  (``mico_cluster``, the instance level only) that :class:`wsigraph.models.mico.MiCo` reads.
* :func:`read_clam_features` / :func:`cluster_clam_dir`: the same for a directory of CLAM
  ``.pt`` feature files (one ``[N, D]`` tensor per slide), as the official
  ``run_clustering.py`` reads them.
* :func:`dataset_centroids`: what the official ``run_clustering.py`` actually computes -- one
  k-means over the pooled features of the first ``n_files`` slides (sorted by name), used to
  initialise MiCo's *learned* anchors (``anchors="learned"``, ``anchor_init``).

Cache file: a dict ``labels [N] int64, centroids [K', F] float32, n_clusters (requested),
k (= K'), level, seed, backend, digest`` (``digest``: blake2b of the float32 feature bytes).

Choices: scikit-learn ``KMeans`` with k-means++ init, ``n_init=1``, ``max_iter=20`` (the
official Faiss k-means runs 20 iterations from one random init), ``random_state=seed`` and one
OpenMP thread (deterministic whatever the machine's thread count); a
slide with fewer instances than clusters gets one cluster per instance (``K' = N``); a slide
whose instances are not all distinct may end with fewer *distinct* clusters (scikit-learn's
warning about it is silenced; labels stay in ``0 .. K'-1``). The two backends give different
(both valid) partitions; the cache records which one made each file.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data
from tqdm.auto import tqdm

from wsigraph.io import array_digest, save_torch

CLUSTER_KEY = "mico_cluster"
BACKENDS = ("auto", "sklearn", "torch")


def _backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "torch" if torch.cuda.is_available() else "sklearn"
    return backend


def _check_features(x, what: str) -> Tensor:
    x = torch.as_tensor(x)
    if x.ndim != 2:
        raise ValueError(f"{what}: expected features [N, D], got shape {tuple(x.shape)}")
    if x.size(0) == 0:
        raise ValueError(f"{what}: no instances to cluster")
    if not torch.isfinite(x).all():
        raise ValueError(f"{what}: non-finite (NaN/inf) features")
    return x.float()


def kmeans(
    x: Tensor,
    n_clusters: int = 64,
    seed: int = 0,
    backend: str = "auto",
    max_iter: int = 20,
) -> tuple[Tensor, Tensor]:
    """k-means of one slide's instances.

    Args:
        x: features ``[N, F]`` (N >= 1, finite).
        n_clusters: clusters :math:`K` (default ``64``, MiCo's); the slide gets
            ``K' = min(K, N)``.
        seed: seeds scikit-learn's k-means++ (the torch backend is deterministic).
        backend: ``"auto"``, ``"sklearn"`` (CPU) or ``"torch"`` (on ``x``'s device; move ``x``
            to CUDA to use the GPU).
        max_iter: Lloyd iterations (default ``20``).

    Returns:
        ``(centroids [K', F] float32 on CPU, labels [N] int64 on CPU)``, labels in ``0..K'-1``.
    """
    if n_clusters < 1:
        raise ValueError(f"n_clusters must be >= 1, got {n_clusters}")
    x = _check_features(x, "kmeans")
    k = min(n_clusters, x.size(0))
    if _backend(backend) == "torch":
        from wsigraph.nn.mil import bag_kmeans

        dev = x.device if backend == "torch" else torch.device("cuda")
        xd = x.to(dev)
        labels = bag_kmeans(xd, torch.zeros(len(xd), dtype=torch.long, device=dev), 1, k, max_iter)
        labels = labels.cpu()
    else:
        from sklearn.cluster import KMeans
        from threadpoolctl import threadpool_limits

        # one OpenMP thread: scikit-learn merges its threads' partial sums in the order they
        # finish, so more threads can give other centroids (and labels) from run to run
        with warnings.catch_warnings(), threadpool_limits(1):
            warnings.filterwarnings("ignore", message="Number of distinct clusters")
            km = KMeans(n_clusters=k, n_init=1, max_iter=max_iter, random_state=seed)
            labels = torch.from_numpy(km.fit_predict(x.cpu().double().numpy()).astype(np.int64))
    x = x.cpu()
    sums = torch.zeros(k, x.size(1)).index_add_(0, labels, x)
    counts = torch.bincount(labels, minlength=k).clamp(min=1).unsqueeze(-1)
    return (sums / counts).float(), labels


def read_clam_features(path: str | Path) -> Tensor:
    """The ``[N, D]`` feature tensor of a CLAM ``.pt`` file (``torch.save(features)``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file does not hold a finite 2-D tensor with at least one row.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no CLAM feature file {path}")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "features" in obj:  # some pipelines wrap it
        obj = obj["features"]
    if not isinstance(obj, Tensor):
        raise ValueError(f"{path}: expected a tensor [N, D], got {type(obj).__name__}")
    return _check_features(obj, str(path))


def instances(graph: Data, level: int = 2) -> Tensor:
    """The features ``[N_l, F]`` of the nodes of ``level`` of one pyramid graph."""
    if getattr(graph, "level", None) is None:
        raise ValueError("graph has no per-node 'level'; build it with wsigraph.graphs.pyramid")
    x = graph.x[graph.level == level]
    if x.size(0) == 0:
        sid = getattr(graph, "slide_id", "?")
        raise ValueError(f"slide {sid} has no node of level {level}")
    return x


def _valid_cache(path: Path, expect: dict) -> dict | None:
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # unreadable / partial / other format: recompute
        return None
    if not isinstance(stored, dict) or any(stored.get(k) != v for k, v in expect.items()):
        return None
    return stored


def cluster_slide(
    slide_id: str,
    x: Tensor,
    cache_dir: str | Path,
    n_clusters: int = 64,
    seed: int = 0,
    backend: str = "auto",
    level: int = 2,
) -> dict:
    """Cluster one slide (or reuse its valid cache file); returns the cache dict."""
    if not slide_id or Path(slide_id).name != slide_id:
        raise ValueError(f"slide_id must be a plain file name, got {slide_id!r}")
    x = _check_features(x, slide_id)
    backend = _backend(backend)
    expect = dict(
        n_clusters=int(n_clusters), seed=int(seed), backend=backend, level=int(level),
        digest=array_digest(x.float()),
    )  # fmt: skip
    path = Path(cache_dir) / f"{slide_id}.pt"
    stored = _valid_cache(path, expect) if path.exists() else None
    if stored is not None:
        return stored
    centroids, labels = kmeans(x, n_clusters, seed, backend)
    record = expect | dict(labels=labels, centroids=centroids, k=int(centroids.size(0)))
    save_torch(record, path)
    return record


def cache_clusters(
    slides: Mapping[str, Tensor | Callable[[], Tensor]] | Iterable[tuple[str, Tensor]],
    cache_dir: str | Path,
    n_clusters: int = 64,
    seed: int = 0,
    backend: str = "auto",
    level: int = 2,
    progress: bool = False,
) -> dict[str, dict]:
    """Cluster every slide of ``slides`` (``slide_id -> features`` or a loader of them)."""
    items = slides.items() if isinstance(slides, Mapping) else slides
    out = {}
    for sid, x in tqdm(list(items), desc="k-means", unit="slide", disable=not progress):
        x = x() if callable(x) else x
        out[sid] = cluster_slide(sid, x, cache_dir, n_clusters, seed, backend, level)
    return out


def attach_clusters(
    graphs: Sequence[Data],
    cache_dir: str | Path,
    n_clusters: int = 64,
    seed: int = 0,
    backend: str = "auto",
    level: int = 2,
    progress: bool = False,
) -> list[Data]:
    """Shallow copies of ``graphs`` with ``mico_cluster [num_nodes]``: the slide's k-means
    label for nodes of ``level``, -1 elsewhere. Slides are clustered (or read from
    ``cache_dir``) by :func:`cluster_slide`; each graph needs a ``slide_id``."""
    out = []
    for g in tqdm(graphs, desc="k-means", unit="slide", disable=not progress):
        sid = getattr(g, "slide_id", None)
        if sid is None:
            raise ValueError("every graph needs a slide_id to key its cluster cache")
        rec = cluster_slide(
            str(sid), instances(g, level), cache_dir, n_clusters, seed, backend, level
        )
        cluster = torch.full((g.num_nodes,), -1, dtype=torch.long)
        cluster[g.level == level] = rec["labels"]
        h = copy.copy(g)  # the graph itself is not modified
        h[CLUSTER_KEY] = cluster
        out.append(h)
    return out


def cluster_clam_dir(
    input_dir: str | Path,
    output_dir: str | Path,
    n_clusters: int = 64,
    seed: int = 0,
    backend: str = "auto",
    progress: bool = True,
) -> dict[str, dict]:
    """Cluster every CLAM ``.pt`` feature file of ``input_dir`` (sorted) into ``output_dir``."""
    files = sorted(Path(input_dir).glob("*.pt"))
    if not files:
        raise FileNotFoundError(f"no .pt feature files in {input_dir}")
    loaders = {f.stem: (lambda f=f: read_clam_features(f)) for f in files}
    return cache_clusters(
        loaders, output_dir, n_clusters, seed, backend, level=0, progress=progress
    )


def dataset_centroids(
    features: Sequence[Tensor],
    n_clusters: int = 64,
    n_files: int = 20,
    seed: int = 0,
    backend: str = "auto",
) -> Tensor:
    """The official ``run_clustering.py``: k-means over the pooled instances of the first
    ``n_files`` slides, ``[min(K, N), F]`` centres (MiCo's ``cluster_init_path``).

    Pass the slides in the order the official script would take them (it sorts file names),
    and preferably training slides only (the official script takes the first files of the whole
    dataset)."""
    if not features:
        raise ValueError("no slides to cluster")
    pooled = torch.cat([_check_features(x, "dataset_centroids") for x in features[:n_files]])
    return kmeans(pooled, n_clusters, seed, backend)[0]
