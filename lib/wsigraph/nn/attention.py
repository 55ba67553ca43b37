r"""Segment attention: softmax of edge scores per segment, then a weighted sum of source values.

One operation with three implementations behind one switch (``DESIGN.md``, "Sparse attention"):

* :func:`segment_attention_sparse` -- the CPU path: the softmax weights of each head become the
  values of one block-diagonal sparse CSR matrix (rows: segment x head, columns: source x
  head), so the forward pass is one sparse x dense product, the value gradient one product with
  its transpose and the score gradient one sampled dense x dense product
  (``torch.sparse.sampled_addmm``): PyTorch's sparse kernels (MKL on x86), with no
  ``[E, H, C]`` message tensor at all;
* :func:`segment_attention_reference` -- plain PyTorch: an ``autograd.Function`` that keeps
  the [E, H] softmax weights, never builds an :math:`E \times N` or :math:`N \times N` tensor,
  and sums the [E, H, C] messages chunk by chunk with segment reductions over the sorted edges
  (by segment in forward, by source in backward, where messages are rebuilt); float64-testable;
* :func:`segment_attention_triton` -- a fused Triton kernel over the CSR-sorted edges: one
  program per (segment, head) with an online softmax in forward (segments longer than
  ``SPLIT`` edges are cut into pieces whose partial results a second small kernel merges), and
  recomputed weights with atomic value gradients in backward.

:func:`segment_attention` picks the kernel for CUDA tensors (when Triton imports), the sparse
path for float32 / float64 CPU tensors and the reference elsewhere;
``WSIGRAPH_ATTENTION=reference``, ``=sparse`` or ``=triton`` forces one (``triton`` on CPU needs
``TRITON_INTERPRET=1`` set before this module is imported, as ``tests/conftest.py`` does).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch_geometric.utils import segment

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # pragma: no cover - triton ships with CUDA builds of torch
    HAS_TRITON = False

__all__ = [
    "SparseLayout",
    "segment_attention",
    "segment_attention_reference",
    "segment_attention_sparse",
    "segment_attention_triton",
    "segment_softmax",
]

ENV_VAR = "WSIGRAPH_ATTENTION"
# The reference gathers messages for at most this many elements (edges x heads x channels) at
# a time: 4 Mi elements, 16 MiB in float32, i.e. 16,384 edges for H = 4, C = 64.
CHUNK_ELEMENTS = 1 << 22
# Kernel tile: BLOCK_E edges x BLOCK_C channels (BLOCK_C = next power of two >= C). Segments of
# pyramid graphs hold ~9 edges, so 16 covers most in one step; longer ones loop.
BLOCK_E = 16
# The kernel splits segments longer than SPLIT edges into pieces handled by separate programs
# (merged afterwards), so that one hub node (the thumbnail of a pyramid has thousands of
# in-edges) does not serialise the whole launch.
SPLIT = 16 * BLOCK_E


# --------------------------------------------------------------------------------------------
# Validation and small helpers
# --------------------------------------------------------------------------------------------


def _ptr_from_seg(seg: Tensor, num_segments: int) -> Tensor:
    """CSR offsets [S + 1] of a sorted ``seg`` (bincount + cumsum, without a device sync)."""
    bounds = torch.arange(num_segments + 1, device=seg.device, dtype=seg.dtype)
    return torch.searchsorted(seg.contiguous(), bounds)


def _check(
    score: Tensor,
    value: Tensor,
    src: Tensor,
    seg: Tensor,
    num_segments: int,
    ptr: Tensor | None,
    assume_sorted: bool,
) -> None:
    """Raises ``ValueError`` on bad shapes, dtypes or devices and, unless ``assume_sorted``,
    on unsorted ``seg``, out-of-range indices or a ``ptr`` that does not match ``seg``."""
    if score.dim() != 2:
        raise ValueError(f"score must be [E, H], got shape {tuple(score.shape)}")
    if value.dim() != 3:
        raise ValueError(f"value must be [N, H, C], got shape {tuple(value.shape)}")
    num_edges, heads = score.shape
    if value.size(1) != heads:
        raise ValueError(f"score has {heads} heads but value has {value.size(1)} (dim 1)")
    for name, index in (("src", src), ("seg", seg)):
        if index.shape != (num_edges,):
            raise ValueError(f"{name} must be [E] = [{num_edges}], got {tuple(index.shape)}")
        if index.dtype != torch.long:
            raise ValueError(f"{name} must be torch.long, got {index.dtype}")
    if not score.is_floating_point() or score.dtype != value.dtype:
        raise ValueError(
            f"score and value must share one floating dtype, got {score.dtype} and {value.dtype}"
        )
    if num_segments < 0:
        raise ValueError(f"num_segments must be >= 0, got {num_segments}")
    tensors = [score, value, src, seg] + ([] if ptr is None else [ptr])
    if len({t.device for t in tensors}) > 1:
        raise ValueError(
            f"all inputs must be on one device, got {[str(t.device) for t in tensors]}"
        )
    if ptr is not None and (ptr.shape != (num_segments + 1,) or ptr.dtype != torch.long):
        raise ValueError(
            f"ptr must be torch.long [S + 1] = [{num_segments + 1}], "
            f"got {ptr.dtype} {tuple(ptr.shape)}"
        )
    if assume_sorted or num_edges == 0:
        if ptr is not None and num_edges == 0 and not assume_sorted and ptr.any():
            raise ValueError("ptr must be all zeros when there are no edges")
        return
    # One device sync for all data checks.
    checks = torch.stack(
        [
            (seg[1:] >= seg[:-1]).all(),
            seg[0] >= 0,
            seg[-1] < num_segments,
            src.min() >= 0,
            src.max() < value.size(0),
        ]
    ).tolist()
    messages = [
        "seg must be sorted ascending (CSR order); sort edges by segment first",
        "seg has negative entries",
        f"seg has entries >= num_segments ({num_segments})",
        "src has negative entries",
        f"src has entries >= value.size(0) ({value.size(0)})",
    ]
    for ok, message in zip(checks, messages, strict=True):
        if not ok:
            raise ValueError(message)
    if ptr is not None and not torch.equal(ptr, _ptr_from_seg(seg, num_segments)):
        raise ValueError("ptr does not match seg (expected the CSR offsets of seg)")


def segment_softmax(score: Tensor, seg: Tensor, num_segments: int) -> Tensor:
    r"""Softmax of ``score`` over the edges of each segment (plain, differentiable PyTorch).

    .. math::
        \alpha_{e,h} = \frac{\exp(s_{e,h})}{\sum_{e' : \mathrm{seg}(e') = \mathrm{seg}(e)}
        \exp(s_{e',h})}

    ``seg`` need not be sorted. Meant for visualising attention and for tests; the fused
    operation is :func:`segment_attention`.

    Args:
        score (torch.Tensor): Edge scores :math:`[E, *]`, e.g. :math:`[E, H]`.
        seg (torch.Tensor): Segment of each edge :math:`[E]`, in ``[0, num_segments)``.
        num_segments (int): Number of segments :math:`S`.

    Shapes:
        - **input:** score :math:`(E, *)`, seg :math:`(E)`
        - **output:** weights :math:`(E, *)`, summing to one over each non-empty segment
    """
    index = seg.view(-1, *([1] * (score.dim() - 1))).expand_as(score)
    size = (num_segments, *score.shape[1:])
    smax = score.new_full(size, float("-inf"))
    smax = smax.scatter_reduce(0, index, score.detach(), reduce="amax", include_self=True)
    exp = (score - smax.index_select(0, seg)).exp()
    total = score.new_zeros(size).index_add(0, seg, exp)
    return exp / total.index_select(0, seg)


# --------------------------------------------------------------------------------------------
# Reference: plain PyTorch, chunked over edges
# --------------------------------------------------------------------------------------------


def _sorted_softmax(score: Tensor, seg: Tensor, ptr: Tensor, out: Tensor) -> Tensor:
    """Softmax of ``score`` [E, H] within the segments of sorted ``seg`` (CSR ``ptr``), written
    into ``out``: the weights both CPU paths keep for backward."""
    smax = segment(score, ptr, reduce="max")  # [S, H]
    torch.exp(score - smax.index_select(0, seg), out=out)
    out /= segment(out, ptr, reduce="sum").index_select(0, seg)
    return out


def _chunked_segment_sum(message, ptr: np.ndarray, out: Tensor) -> None:
    """Adds into ``out[t]`` the sum of ``message(a, b)`` [b - a, H, C] over the edges of each
    segment ``t``, for CSR offsets ``ptr`` (on the host), ``CHUNK_ELEMENTS`` at a time."""
    num_edges, heads, channels = int(ptr[-1]), *out.shape[1:]
    step = max(1, CHUNK_ELEMENTS // max(1, heads * channels))
    for a in range(0, num_edges, step):
        b = min(a + step, num_edges)
        lo = int(np.searchsorted(ptr, a, "right")) - 1  # segment of edge a
        hi = int(np.searchsorted(ptr, b - 1, "right"))  # one past the segment of edge b - 1
        offsets = torch.from_numpy(np.clip(ptr[lo : hi + 1], a, b) - a).to(out.device)
        out[lo:hi] += segment(message(a, b), offsets, reduce="sum")


class _SegmentAttentionReference(torch.autograd.Function):
    # Sums run over sorted edges with segment reductions: on CPU, PyTorch's scatter/index_add
    # kernels are several times slower than segment_reduce for [E, H, C] messages.
    @staticmethod
    def forward(ctx, score, value, src, seg, ptr):
        num_segments, (heads, channels) = ptr.numel() - 1, value.shape[1:]
        out = value.new_zeros(num_segments, heads, channels)  # [S, H, C]
        p = torch.empty_like(score)  # [E, H], softmax weights
        if score.numel() > 0:
            _sorted_softmax(score.detach(), seg, ptr, out=p)
            _chunked_segment_sum(
                lambda a, b: value.index_select(0, src[a:b]) * p[a:b, :, None],
                ptr.cpu().numpy(),
                out,
            )
        ctx.save_for_backward(p, value, src, seg, out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        p, value, src, seg, out = ctx.saved_tensors
        need_score, need_value = ctx.needs_input_grad[:2]
        grad_score = torch.zeros_like(p) if need_score else None
        grad_value = torch.zeros_like(value) if need_value else None
        if p.numel() == 0:
            return grad_score, grad_value, None, None, None
        if need_score:
            delta = (grad_out * out).sum(-1)  # [S, H]
            step = max(1, CHUNK_ELEMENTS // value[0].numel())
            for a in range(0, p.size(0), step):
                g = grad_out.index_select(0, seg[a : a + step])  # [chunk, H, C]
                g_p = (g * value.index_select(0, src[a : a + step])).sum(-1)  # [chunk, H]
                grad_score[a : a + step] = p[a : a + step] * (
                    g_p - delta.index_select(0, seg[a : a + step])
                )
        if need_value:  # a segment sum over the edges sorted by source
            src_sorted, perm = torch.sort(src, stable=True)
            ptr_src = _ptr_from_seg(src_sorted, value.size(0))
            _chunked_segment_sum(
                lambda a, b: grad_out.index_select(0, seg[perm[a:b]]) * p[perm[a:b], :, None],
                ptr_src.cpu().numpy(),
                grad_value,
            )
        return grad_score, grad_value, None, None, None


def segment_attention_reference(
    score: Tensor,
    value: Tensor,
    src: Tensor,
    seg: Tensor,
    num_segments: int,
    ptr: Tensor | None = None,
    *,
    assume_sorted: bool = False,
) -> Tensor:
    """Plain-PyTorch :func:`segment_attention` (same signature, shapes and result).

    Peak memory is :math:`O(E H + (N + S) H C)` plus one chunk of ``CHUNK_ELEMENTS``
    messages: softmax weights are kept, messages are rebuilt chunk by chunk in backward.
    """
    _check(score, value, src, seg, num_segments, ptr, assume_sorted)
    if ptr is None:
        ptr = _ptr_from_seg(seg, num_segments)
    return _SegmentAttentionReference.apply(score, value, src, seg, ptr)


# --------------------------------------------------------------------------------------------
# Sparse CSR path (CPU)
# --------------------------------------------------------------------------------------------

# PyTorch warns once per process that sparse CSR support is "in beta"; the products used here
# are tested against the dense and reference results (tests/test_attention.py), so the notice
# would only be noise in every executed notebook.
warnings.filterwarnings(
    "ignore", message="Sparse CSR tensor support is in beta", category=UserWarning
)

#: dtypes PyTorch's CPU sparse CSR products support; others fall back to the reference.
SPARSE_DTYPES = (torch.float32, torch.float64)
INT32_INDEX_LIMIT = 2**31 - 1  # SparseLayout's index arrays are int32 up to this size


def _csr(crow: Tensor, cols: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    """A CSR matrix from arrays built correct by construction (no invariant check, no warning)."""
    return torch.sparse_csr_tensor(crow, cols, values, shape, check_invariants=False)


def _spmm(matrix: Tensor, dense: Tensor) -> Tensor:
    """``matrix @ dense`` for a CSR ``matrix``, written straight into one new tensor
    (``matrix @ dense`` itself allocates the result twice on the CPU)."""
    out = dense.new_empty(matrix.size(0), dense.size(1))
    return torch.addmm(out, matrix, dense, beta=0.0, out=out)  # beta=0: out's contents unread


class SparseLayout:
    """The index arrays of :func:`segment_attention_sparse` for one edge structure and head
    count: they depend on ``src``, ``ptr`` and ``heads`` only, so one layout serves every call
    on the same graph (pass it as ``layout=``).

    The matrix is block-diagonal over heads: row ``t * H + h`` (segment ``t``, head ``h``)
    holds, at column ``src[e] * H + h``, the weight of each edge ``e`` of segment ``t``; with
    ``value`` viewed as ``[N * H, C]``, ``A @ value`` is the attention output viewed as
    ``[S * H, C]``. Row ``t * H + h`` starts at ``ptr[t] * H + h * deg(t)``, so edge ``e`` of
    head ``h`` sits at position ``pos[e, h] = ptr[t] * H + h * deg(t) + (e - ptr[t])``: no sort.
    The transpose (for the value gradient) sorts the columns once, when first needed.
    Index arrays are int32 whenever the sizes allow it (as the CPU sparse kernels use them,
    so they need no int64 -> int32 copy per product, and half the memory).

    With ``mean_heads`` the heads are averaged inside the product: row ``t`` holds, at column
    ``src[e] * H + h``, the weight of edge ``e`` and head ``h`` divided by ``H``, so
    ``A @ value`` is the head-averaged output ``[S, C]`` and no ``[S, H, C]`` tensor exists.
    Its entries are the ``[E, H]`` weights in their own order (``pos`` is ``None``, the
    identity).
    """

    def __init__(
        self,
        src: Tensor,
        seg: Tensor,
        ptr: Tensor,
        num_nodes: int,
        heads: int,
        mean_heads: bool = False,
    ):
        num_edges, num_segments = src.numel(), ptr.numel() - 1
        small = max(num_edges, num_nodes, num_segments) * heads <= INT32_INDEX_LIMIT
        self.index_dtype = torch.int32 if small else torch.long
        src, seg, ptr = (t.to(self.index_dtype) for t in (src, seg, ptr))
        h = torch.arange(heads, device=src.device, dtype=self.index_dtype)
        self.heads, self.mean_heads = heads, mean_heads
        self.scale = 1.0 / heads if mean_heads else 1.0  # folded into the matrix's values
        if mean_heads:
            self.pos = None  # the identity
            self.cols = (src[:, None] * heads + h).reshape(-1)
            self.crow = ptr * heads
            self.shape = (num_segments, num_nodes * heads)
        else:
            deg = ptr[1:] - ptr[:-1]  # [S]
            start = ptr.index_select(0, seg)  # [E], first edge of each edge's segment
            offset = torch.arange(num_edges, device=src.device, dtype=self.index_dtype) - start
            self.pos = (
                (start * heads + offset)[:, None] + h * deg.index_select(0, seg)[:, None]
            ).reshape(-1)  # [E * H], position of (edge, head) in the CSR arrays
            # -1 marks a slot no edge fills (only with bad input): _check then refuses it
            self.cols = torch.full(
                (num_edges * heads,), -1, dtype=self.index_dtype, device=src.device
            )
            self.cols[self.pos] = (src[:, None] * heads + h).reshape(-1)
            self.crow = torch.cat([(ptr[:-1, None] * heads + h * deg[:, None]).reshape(-1),
                                   ptr[-1:] * heads])  # fmt: skip
            self.shape = (num_segments * heads, num_nodes * heads)
        self._transpose: tuple[Tensor, Tensor, Tensor] | None = None
        self._check(num_edges * heads)

    def _check(self, nnz: int) -> None:
        """The CSR arrays are trusted by the sparse kernels, which do not check them (a bad
        one crashes the process), so they are checked here even under ``assume_sorted``: an
        O(E) pass on the CPU, where it costs no device synchronisation."""
        bad = (
            self.crow[0] != 0
            or self.crow[-1] != nnz
            or bool((self.crow.diff() < 0).any())
            or (nnz > 0 and bool((self.cols < 0).any() | (self.cols >= self.shape[1]).any()))
        )
        if bad:
            raise ValueError(
                "segment_attention_sparse: seg is not sorted ascending or does not match ptr, "
                "or src is out of range (assume_sorted=True skips the data checks, not this one)"
            )

    def matrix(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        """The CSR matrix of per-edge, per-head ``weight`` ``[E, H]`` (divided by ``H`` with
        ``mean_heads``), and its value array."""
        if self.pos is None:
            values = weight.reshape(-1) * self.scale
        else:
            values = weight.new_empty(weight.numel())
            values[self.pos] = weight.reshape(-1) * self.scale
        return _csr(self.crow, self.cols, values, self.shape), values

    def transpose(self, values: Tensor) -> Tensor:
        """The transpose of the matrix with CSR ``values``, as a CSR matrix."""
        if self._transpose is None:
            dtype, device = self.index_dtype, self.cols.device
            perm = torch.argsort(self.cols, stable=True).to(dtype)
            rows = torch.repeat_interleave(
                torch.arange(self.shape[0], device=device, dtype=dtype), self.crow.diff()
            )
            crow = torch.zeros(self.shape[1] + 1, dtype=dtype, device=device)
            crow[1:] = torch.bincount(self.cols, minlength=self.shape[1]).cumsum(0)
            self._transpose = (perm, crow, rows.index_select(0, perm))
        perm, crow, rows = self._transpose
        return _csr(crow, rows, values[perm], self.shape[::-1])


class _SegmentAttentionSparse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, score, value, seg, ptr, layout):
        num_segments, (num_nodes, heads, channels) = ptr.numel() - 1, value.shape
        p = torch.empty_like(score)  # [E, H], softmax weights
        if score.numel() == 0:
            out = value.new_zeros(num_segments, *(() if layout.mean_heads else (heads,)), channels)
            values = p.reshape(-1)
        else:
            _sorted_softmax(score.detach(), seg, ptr, out=p)
            matrix, values = layout.matrix(p)
            flat = value.detach().reshape(num_nodes * heads, channels)
            out = _spmm(matrix, flat).view(num_segments, *(() if layout.mean_heads else (heads,)),
                                           channels)  # fmt: skip
        ctx.layout = layout
        ctx.save_for_backward(p, value, seg, ptr, values)  # not out: see backward
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        p, value, seg, ptr, values = ctx.saved_tensors
        layout = ctx.layout
        need_score, need_value = ctx.needs_input_grad[:2]
        num_nodes, heads, channels = value.shape
        if p.numel() == 0:
            return (
                torch.zeros_like(p) if need_score else None,
                torch.zeros_like(value) if need_value else None,
                None, None, None,
            )  # fmt: skip
        grad_score = grad_value = None
        g = grad_out.contiguous().reshape(-1, channels)  # [S * H, C], or [S, C] (mean_heads)
        if need_score:  # d out / d p at the edges: <grad_out[seg], value[src]>, sampled
            matrix = _csr(layout.crow, layout.cols, values, layout.shape)
            flat = value.reshape(num_nodes * heads, channels)
            g_p = torch.sparse.sampled_addmm(
                matrix, g, flat.T, beta=0.0, alpha=layout.scale
            ).values()  # with mean_heads, d out / d p is value / H
            if layout.pos is not None:
                g_p = g_p.index_select(0, layout.pos)
            g_p = g_p.view_as(p)  # [E, H]
            # <grad_out[t], out[t]> = sum over t's edges of p * g_p: no [S, H, C] product, and
            # the output need not be kept for backward
            delta = segment(p * g_p, ptr, reduce="sum")  # [S, H]
            grad_score = p * (g_p - delta.index_select(0, seg))
            # g_p views the sampled product, whose own index copy it keeps alive: free both
            # before the value gradient, the backward's largest allocation
            del matrix, g_p, delta
        if need_value:
            grad_value = _spmm(layout.transpose(values), g).view(num_nodes, heads, channels)
        return grad_score, grad_value, None, None, None


def segment_attention_sparse(
    score: Tensor,
    value: Tensor,
    src: Tensor,
    seg: Tensor,
    num_segments: int,
    ptr: Tensor | None = None,
    *,
    assume_sorted: bool = False,
    layout: SparseLayout | None = None,
    mean_heads: bool = False,
) -> Tensor:
    """Sparse-CSR :func:`segment_attention` (same signature, shapes and result) for float32
    and float64 CPU tensors: one sparse x dense product forward, one with the transpose and one
    sampled product backward (:class:`SparseLayout`). Peak memory is :math:`O(E H)` indices and
    weights plus the :math:`(N + S) H C` inputs and outputs; no message tensor is built.

    Args:
        layout: the :class:`SparseLayout` of ``(src, seg, ptr, heads, mean_heads)`` from an
            earlier call on the same edges, to skip rebuilding it (default: built here).
        mean_heads: as :func:`segment_attention`: the mean over heads, ``[S, C]``, computed in
            the product.
    """
    _check(score, value, src, seg, num_segments, ptr, assume_sorted)
    if value.dtype not in SPARSE_DTYPES or value.is_cuda:
        raise ValueError(
            f"segment_attention_sparse takes float32/float64 CPU tensors, got {value.dtype} on "
            f"{value.device}; use segment_attention, which picks a path for them"
        )
    if ptr is None:
        ptr = _ptr_from_seg(seg, num_segments)
    heads = value.size(1)
    if layout is None:
        layout = SparseLayout(src, seg, ptr, value.size(0), heads, mean_heads)
    elif layout.mean_heads != mean_heads or layout.shape != (
        num_segments * (1 if mean_heads else heads),
        value.size(0) * heads,
    ):
        raise ValueError(
            f"layout of shape {layout.shape} (mean_heads={layout.mean_heads}) does not fit "
            f"{num_segments} segments, {value.size(0)} nodes and {heads} heads "
            f"(mean_heads={mean_heads})"
        )
    return _SegmentAttentionSparse.apply(score, value, seg, ptr, layout)


# --------------------------------------------------------------------------------------------
# Triton kernel
# --------------------------------------------------------------------------------------------

if HAS_TRITON:

    @triton.jit
    def _segment_attention_fwd(
        score_ptr,  # [E, H]
        value_ptr,  # [N, H, C]
        src_ptr,  # [E]
        csr_ptr,  # [S + 1] edge offsets of the segments
        piece_seg_ptr,  # [Q] segment of each piece (S past the last piece)
        piece_ptr,  # [S + 1] piece offsets of the segments
        slot_ptr,  # [S + 1] offsets of the partial-result slots of split segments
        out_ptr,  # [S, H, C], accumulation dtype, zero-initialised
        lse_ptr,  # [S, H], accumulation dtype
        part_acc_ptr,  # [P, H, C] partial results of split segments
        part_m_ptr,  # [P, H]
        part_l_ptr,  # [P, H]
        num_segments,
        H,
        C,
        SPLIT: tl.constexpr,
        BLOCK_E: tl.constexpr,
        BLOCK_C: tl.constexpr,
    ):
        pid = tl.program_id(0).to(tl.int64)  # = q * H + h: the heads of a piece are adjacent
        q = pid // H
        h = pid % H
        s = tl.load(piece_seg_ptr + q)
        if s < num_segments:
            acc_ty = out_ptr.dtype.element_ty
            first = tl.load(piece_ptr + s)
            k = q - first  # this piece's rank within its segment
            start = tl.load(csr_ptr + s) + k * SPLIT
            end = tl.minimum(start + SPLIT, tl.load(csr_ptr + s + 1))
            offs_c = tl.arange(0, BLOCK_C)
            mask_c = offs_c < C
            m = tl.full([], float("-inf"), acc_ty)  # running max
            l = tl.zeros([], acc_ty)  # running sum of exp(score - m)  # noqa: E741
            acc = tl.zeros([BLOCK_C], acc_ty)  # running sum of exp(score - m) * value
            for e0 in range(start, end, BLOCK_E):
                offs_e = e0 + tl.arange(0, BLOCK_E)
                mask_e = offs_e < end
                sc = tl.load(score_ptr + offs_e * H + h, mask=mask_e, other=float("-inf"))
                sc = sc.to(acc_ty)
                j = tl.load(src_ptr + offs_e, mask=mask_e, other=0)
                rows = (j * H + h) * C
                v = tl.load(
                    value_ptr + rows[:, None] + offs_c[None, :],
                    mask=mask_e[:, None] & mask_c[None, :],
                    other=0.0,
                ).to(acc_ty)
                # Every block holds an edge, so m_new is finite and alpha is 0 at first.
                m_new = tl.maximum(m, tl.max(sc, axis=0))
                alpha = tl.exp(m - m_new)
                p = tl.exp(sc - m_new)
                l = l * alpha + tl.sum(p, axis=0)  # noqa: E741
                acc = acc * alpha + tl.sum(p[:, None] * v, axis=0)
                m = m_new
            if tl.load(piece_ptr + s + 1) - first == 1:  # whole segment: final result
                tl.store(out_ptr + (s * H + h) * C + offs_c, acc / l, mask=mask_c)
                tl.store(lse_ptr + s * H + h, m + tl.log(l))
            else:  # one piece of a long segment: merged by _segment_attention_combine
                slot = tl.load(slot_ptr + s) + k
                tl.store(part_acc_ptr + (slot * H + h) * C + offs_c, acc, mask=mask_c)
                tl.store(part_m_ptr + slot * H + h, m)
                tl.store(part_l_ptr + slot * H + h, l)

    @triton.jit
    def _segment_attention_combine(
        slot_seg_ptr,  # [P] segment of each slot (S past the last slot)
        slot_ptr,  # [S + 1]
        out_ptr,  # [S, H, C]
        lse_ptr,  # [S, H]
        part_acc_ptr,  # [P, H, C]
        part_m_ptr,  # [P, H]
        part_l_ptr,  # [P, H]
        num_segments,
        H,
        C,
        BLOCK_C: tl.constexpr,
    ):
        pid = tl.program_id(0).to(tl.int64)
        t = pid // H
        h = pid % H
        s = tl.load(slot_seg_ptr + t)
        if s < num_segments:
            first = tl.load(slot_ptr + s)
            if t == first:  # one program per split segment merges all its slots
                acc_ty = out_ptr.dtype.element_ty
                offs_c = tl.arange(0, BLOCK_C)
                mask_c = offs_c < C
                m = tl.full([], float("-inf"), acc_ty)
                l = tl.zeros([], acc_ty)  # noqa: E741
                acc = tl.zeros([BLOCK_C], acc_ty)
                for slot in range(first, tl.load(slot_ptr + s + 1)):
                    m_k = tl.load(part_m_ptr + slot * H + h)
                    m_new = tl.maximum(m, m_k)
                    alpha = tl.exp(m - m_new)
                    beta = tl.exp(m_k - m_new)
                    l = l * alpha + tl.load(part_l_ptr + slot * H + h) * beta  # noqa: E741
                    part = tl.load(part_acc_ptr + (slot * H + h) * C + offs_c, mask=mask_c)
                    acc = acc * alpha + part * beta
                    m = m_new
                tl.store(out_ptr + (s * H + h) * C + offs_c, acc / l, mask=mask_c)
                tl.store(lse_ptr + s * H + h, m + tl.log(l))

    @triton.jit
    def _segment_attention_bwd(
        score_ptr,  # [E, H]
        value_ptr,  # [N, H, C]
        src_ptr,  # [E]
        csr_ptr,  # [S + 1]
        piece_seg_ptr,  # [Q]
        piece_ptr,  # [S + 1]
        lse_ptr,  # [S, H]
        grad_out_ptr,  # [S, H, C]
        delta_ptr,  # [S, H] = sum_c grad_out * out
        grad_score_ptr,  # [E, H], accumulation dtype
        grad_value_ptr,  # [N, H, C], accumulation dtype, zero-initialised
        num_segments,
        H,
        C,
        NEED_SCORE: tl.constexpr,
        NEED_VALUE: tl.constexpr,
        SPLIT: tl.constexpr,
        BLOCK_E: tl.constexpr,
        BLOCK_C: tl.constexpr,
    ):
        pid = tl.program_id(0).to(tl.int64)
        q = pid // H
        h = pid % H
        s = tl.load(piece_seg_ptr + q)
        if s < num_segments:
            acc_ty = lse_ptr.dtype.element_ty
            start = tl.load(csr_ptr + s) + (q - tl.load(piece_ptr + s)) * SPLIT
            end = tl.minimum(start + SPLIT, tl.load(csr_ptr + s + 1))
            offs_c = tl.arange(0, BLOCK_C)
            mask_c = offs_c < C
            lse = tl.load(lse_ptr + s * H + h)
            delta = tl.load(delta_ptr + s * H + h)
            go = tl.load(grad_out_ptr + (s * H + h) * C + offs_c, mask=mask_c, other=0.0)
            go = go.to(acc_ty)
            for e0 in range(start, end, BLOCK_E):
                offs_e = e0 + tl.arange(0, BLOCK_E)
                mask_e = offs_e < end
                mask_ec = mask_e[:, None] & mask_c[None, :]
                sc = tl.load(score_ptr + offs_e * H + h, mask=mask_e, other=float("-inf"))
                p = tl.exp(sc.to(acc_ty) - lse)  # recomputed softmax weights, 0 off the piece
                j = tl.load(src_ptr + offs_e, mask=mask_e, other=0)
                ptrs = (j * H + h)[:, None] * C + offs_c[None, :]
                if NEED_SCORE:
                    v = tl.load(value_ptr + ptrs, mask=mask_ec, other=0.0).to(acc_ty)
                    g_p = tl.sum(v * go[None, :], axis=1)
                    tl.store(grad_score_ptr + offs_e * H + h, p * (g_p - delta), mask=mask_e)
                if NEED_VALUE:
                    tl.atomic_add(grad_value_ptr + ptrs, p[:, None] * go[None, :], mask=mask_ec)


def _launch_config(channels: int) -> tuple[int, int]:
    """Returns ``(BLOCK_C, num_warps)``: one warp per 512 tile elements, 1 to 8 warps."""
    block_c = triton.next_power_of_2(max(channels, 1))
    return block_c, max(1, min(8, BLOCK_E * block_c // 512))


def _interpreted() -> bool:
    return HAS_TRITON and not isinstance(_segment_attention_fwd, triton.runtime.JITFunction)


def _pieces(ptr: Tensor, num_edges: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Splits the segments into pieces of at most ``SPLIT`` edges, without a device sync.

    Returns ``piece_seg`` [Q] (the segment of each piece, ``S`` for the spare entries of the
    bound Q = S + ceil(E / SPLIT)), ``piece_ptr`` [S + 1] (piece offsets of the segments),
    ``slot_seg`` [P] and ``slot_ptr`` [S + 1]: the same for the partial-result slots, one per
    piece of the segments split into several (at most P = 2 ceil(E / SPLIT) of them).
    """
    num_segments = ptr.numel() - 1
    n_pieces = (ptr[1:] - ptr[:-1] + SPLIT - 1) // SPLIT  # [S], 0 for empty segments
    zero = ptr.new_zeros(1)
    piece_ptr = torch.cat([zero, n_pieces.cumsum(0)])
    slot_ptr = torch.cat([zero, torch.where(n_pieces > 1, n_pieces, 0).cumsum(0)])
    bound = triton.cdiv(num_edges, SPLIT)
    arange = torch.arange(num_segments + 2 * bound, device=ptr.device)
    piece_seg = torch.searchsorted(piece_ptr, arange[: num_segments + bound], right=True)
    slot_seg = torch.searchsorted(slot_ptr, arange[: 2 * bound], right=True)
    return piece_seg - 1, piece_ptr, slot_seg - 1, slot_ptr


class _SegmentAttentionTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, score, value, src, ptr):
        num_segments, (heads, channels) = ptr.numel() - 1, value.shape[1:]
        acc_dtype = torch.float64 if value.dtype == torch.float64 else torch.float32
        score, value, src, ptr = (t.contiguous() for t in (score, value, src, ptr))
        out = value.new_zeros(num_segments, heads, channels, dtype=acc_dtype)  # [S, H, C]
        lse = value.new_zeros(num_segments, heads, dtype=acc_dtype)  # [S, H]
        piece_seg, piece_ptr, slot_seg, slot_ptr = _pieces(ptr, score.size(0))
        block_c, num_warps = _launch_config(channels)
        if score.numel() > 0 and out.numel() > 0:
            part_acc = value.new_empty(slot_seg.numel(), heads, channels, dtype=acc_dtype)
            part_m = value.new_empty(slot_seg.numel(), heads, dtype=acc_dtype)
            part_l = torch.empty_like(part_m)
            _segment_attention_fwd[(piece_seg.numel() * heads,)](
                score, value, src, ptr, piece_seg, piece_ptr, slot_ptr, out, lse,
                part_acc, part_m, part_l, num_segments, heads, channels,
                SPLIT=SPLIT, BLOCK_E=BLOCK_E, BLOCK_C=block_c, num_warps=num_warps,
            )  # fmt: skip
            _segment_attention_combine[(slot_seg.numel() * heads,)](
                slot_seg, slot_ptr, out, lse, part_acc, part_m, part_l,
                num_segments, heads, channels, BLOCK_C=block_c, num_warps=1,
            )  # fmt: skip
        ctx.save_for_backward(score, value, src, ptr, piece_seg, piece_ptr, out, lse)
        return out.to(value.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        score, value, src, ptr, piece_seg, piece_ptr, out, lse = ctx.saved_tensors
        need_score, need_value = ctx.needs_input_grad[:2]
        num_segments, (heads, channels) = ptr.numel() - 1, value.shape[1:]
        grad_out = grad_out.to(out.dtype).contiguous()
        delta = (grad_out * out).sum(-1)  # [S, H]
        grad_score = torch.zeros_like(score, dtype=out.dtype)
        grad_value = torch.zeros_like(value, dtype=out.dtype)
        block_c, num_warps = _launch_config(channels)
        if score.numel() > 0 and out.numel() > 0:
            _segment_attention_bwd[(piece_seg.numel() * heads,)](
                score, value, src, ptr, piece_seg, piece_ptr, lse, grad_out, delta,
                grad_score, grad_value, num_segments, heads, channels,
                NEED_SCORE=need_score, NEED_VALUE=need_value, SPLIT=SPLIT,
                BLOCK_E=BLOCK_E, BLOCK_C=block_c, num_warps=num_warps,
            )  # fmt: skip
        return (
            grad_score.to(score.dtype) if need_score else None,
            grad_value.to(value.dtype) if need_value else None,
            None,
            None,
        )


def segment_attention_triton(
    score: Tensor,
    value: Tensor,
    src: Tensor,
    seg: Tensor,
    num_segments: int,
    ptr: Tensor | None = None,
    *,
    assume_sorted: bool = False,
) -> Tensor:
    """Triton-kernel :func:`segment_attention` (same signature, shapes and result).

    Needs CUDA tensors, or CPU tensors with ``TRITON_INTERPRET=1`` set before this module was
    imported. Accumulates in float32 (float64 for float64 inputs); float16/bfloat16 inputs are
    read as they are and the result and gradients are cast back to their dtype. Value gradients
    are summed with float32 atomics, so they are not bitwise deterministic on GPU.
    """
    if not HAS_TRITON:
        raise RuntimeError("segment_attention_triton needs triton, which failed to import")
    _check(score, value, src, seg, num_segments, ptr, assume_sorted)
    if not value.is_cuda and not _interpreted():
        raise RuntimeError(
            f"the Triton kernel needs CUDA tensors (got {value.device}); on CPU set "
            "TRITON_INTERPRET=1 before importing wsigraph.nn.attention, or use the reference"
        )
    if ptr is None:
        ptr = _ptr_from_seg(seg, num_segments)
    if not value.is_cuda:
        return _SegmentAttentionTriton.apply(score, value, src, ptr)
    with torch.cuda.device(value.device):
        return _SegmentAttentionTriton.apply(score, value, src, ptr)


# --------------------------------------------------------------------------------------------
# Public operation
# --------------------------------------------------------------------------------------------


def _backend(value: Tensor) -> str:
    """Returns ``"triton"``, ``"sparse"`` or ``"reference"`` for inputs like ``value`` (honours
    ENV_VAR; ``sparse`` asked for on inputs it does not take falls back to the reference)."""
    choice = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if choice not in ("auto", "reference", "sparse", "triton"):
        raise ValueError(
            f"{ENV_VAR} must be 'auto', 'reference', 'sparse' or 'triton', got {choice!r}"
        )
    sparse_ok = not value.is_cuda and value.dtype in SPARSE_DTYPES
    if choice == "sparse":
        return "sparse" if sparse_ok else "reference"
    if choice != "auto":
        return choice
    if HAS_TRITON and value.is_cuda:
        return "triton"
    return "sparse" if sparse_ok else "reference"


def segment_attention(
    score: Tensor,
    value: Tensor,
    src: Tensor,
    seg: Tensor,
    num_segments: int,
    ptr: Tensor | None = None,
    *,
    assume_sorted: bool = False,
    mean_heads: bool = False,
) -> Tensor:
    r"""Multi-head attention over segments of CSR-sorted edges: a softmax of the edge scores
    within each segment, then the weighted sum of source values

    .. math::
        \alpha_{e,h} = \frac{\exp(s_{e,h})}{\sum_{e' : \mathrm{seg}(e') = \mathrm{seg}(e)}
        \exp(s_{e',h})}, \qquad
        \mathbf{o}_{t,h} = \sum_{e : \mathrm{seg}(e) = t} \alpha_{e,h}\,
        \mathbf{v}_{\mathrm{src}(e),h}

    where a segment :math:`t` is usually a destination node (GAT). For H2-MIL's RAConv the
    segments are ``(destination, resolution)`` pairs: :math:`\alpha` is then the node-level
    attention of H2-MIL Eq. 3 and :math:`\mathbf{o}` the per-resolution sum that Eq. 4-5 weight
    by the resolution-level attention of Eq. 2. Segments without edges give :math:`\mathbf{0}`. Differentiable in
    ``score`` and ``value``; no :math:`E \times N` or :math:`N \times N` tensor is ever built.

    CUDA tensors use the fused Triton kernel (:func:`segment_attention_triton`), float32 and
    float64 CPU tensors PyTorch's sparse CSR products (:func:`segment_attention_sparse`), others
    the PyTorch reference (:func:`segment_attention_reference`); the environment variable
    ``WSIGRAPH_ATTENTION=reference`` (or ``=sparse``, ``=triton``) forces one.

    Args:
        score (torch.Tensor): Activated attention logits per edge and head (e.g. LeakyReLU'd),
            finite.
        value (torch.Tensor): Values of the source nodes, per head.
        src (torch.Tensor): Source node of each edge (row of ``value``), ``torch.long``.
        seg (torch.Tensor): Segment of each edge, ``torch.long``, sorted ascending.
        num_segments (int): Number of segments :math:`S` (output rows).
        ptr (torch.Tensor, optional): CSR offsets of ``seg``; computed when not given.
            (default: :obj:`None`)
        assume_sorted (bool, optional): Skip the data checks (``seg`` sorted, indices in range,
            ``ptr`` matching ``seg``), which synchronise a GPU; shapes are still checked.
            (default: :obj:`False`)
        mean_heads (bool, optional): Return the mean over the heads, :math:`(S, C)`. The
            sparse CPU path computes it inside its product (no :math:`(S, H, C)` tensor, a
            quarter of the memory for 4 heads); the others average their output.
            (default: :obj:`False`)

    Shapes:
        - **input:** score :math:`(E, H)`, value :math:`(N, H, C)`, src :math:`(E)`,
          seg :math:`(E)`, ptr :math:`(S + 1)`
        - **output:** :math:`(S, H, C)`, or :math:`(S, C)` with ``mean_heads``
    """
    backend = _backend(value)
    if backend == "sparse":
        return segment_attention_sparse(
            score, value, src, seg, num_segments, ptr, assume_sorted=assume_sorted,
            mean_heads=mean_heads,
        )  # fmt: skip
    op = segment_attention_triton if backend == "triton" else segment_attention_reference
    out = op(score, value, src, seg, num_segments, ptr, assume_sorted=assume_sorted)
    return out.mean(1) if mean_heads else out
