"""Segment attention: reference vs a dense masked softmax, kernel (interpreter/CUDA) vs reference."""

from __future__ import annotations

import pytest
import torch

from wsigraph.nn import attention
from wsigraph.nn.attention import (
    segment_attention,
    segment_attention_reference,
    segment_attention_sparse,
    segment_attention_triton,
    segment_softmax,
)

Graph = tuple[torch.Tensor, torch.Tensor, int, int]  # src [E], seg [E] sorted, N, S

# name -> (N source nodes, S segments, E edges); see make_graph for what each case adds.
CASES = {
    "random": (23, 17, 60),
    "sparse": (40, 31, 12),  # most segments empty, most sources isolated
    "duplicates": (7, 9, 30),  # every edge appears twice
    "hub": (19, 6, 45),  # segment 1 holds 35 edges: 3 blocks of BLOCK_E
    "single_edge": (8, 5, 1),
    "no_edges": (8, 5, 0),
}
HC = [(1, 1), (1, 5), (3, 1), (3, 5), (3, 16), (1, 16)]


def make_graph(case: str, seed: int = 0) -> Graph:
    n, s, e = CASES[case]
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(0, n, (e,), generator=gen)
    seg = torch.randint(0, s, (e,), generator=gen)
    if case == "duplicates":
        src, seg = src[: e // 2].repeat(2), seg[: e // 2].repeat(2)
    if case == "hub":
        seg[: 2 * attention.BLOCK_E + 3] = 1
    if case == "single_edge":
        seg[:] = s - 1  # the last segment; all others empty
    order = torch.argsort(seg * n + src)
    return src[order], seg[order], n, s


def make_inputs(graph: Graph, heads: int, channels: int, dtype=torch.float64, scale=3.0):
    src, seg, n, _ = graph
    gen = torch.Generator().manual_seed(1)
    score = scale * torch.randn(len(src), heads, generator=gen, dtype=dtype)
    value = torch.randn(n, heads, channels, generator=gen, dtype=dtype)
    return score.requires_grad_(), value.requires_grad_()


def dense_attention(score, value, src, seg, num_segments):
    """Dense masked softmax over [S, N] logits per head; duplicate edges merged by logsumexp."""
    n, heads, _ = value.shape
    size = (num_segments, n, heads)
    shift = score.new_full((num_segments, heads), float("-inf"))
    index = seg[:, None].expand(-1, heads)
    shift = shift.scatter_reduce(0, index, score.detach(), "amax")  # cancels in row softmax
    weight = score.new_zeros(size).index_put((seg, src), (score - shift[seg]).exp(), True)
    edge = torch.zeros(size, dtype=torch.bool).index_put((seg, src), torch.tensor(True))
    logits = torch.where(edge, weight.clamp_min(1e-300).log(), float("-inf"))  # [S, N, H]
    has_edge = edge.any(1, keepdim=True)  # [S, 1, H]
    alpha = torch.where(has_edge, torch.where(has_edge, logits, 0.0).softmax(1), 0.0)
    return torch.einsum("snh,nhc->shc", alpha, value)


def outputs_and_grads(fn, score, value, src, seg, num_segments):
    out = fn(score, value, src, seg, num_segments)
    # Built in float64: a float16 linspace overflows its index past 65,504 elements on CUDA.
    grad = torch.linspace(-1, 1, out.numel(), dtype=torch.float64, device=out.device)
    grad = grad.to(out.dtype).view_as(out)
    grads = torch.autograd.grad(out, (score, value), grad, allow_unused=True)
    grads = [
        torch.zeros_like(t) if g is None else g for g, t in zip(grads, (score, value), strict=True)
    ]
    return [out, *grads]


def assert_all_close(actual, expected, atol, rtol):
    for name, a, b in zip(("out", "grad_score", "grad_value"), actual, expected, strict=True):
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol, msg=lambda m, n=name: f"{n}: {m}")


# --- reference ------------------------------------------------------------------------------


@pytest.mark.parametrize("heads,channels", HC)
@pytest.mark.parametrize("case", list(CASES))
def test_reference_matches_dense(case, heads, channels):
    src, seg, n, s = graph = make_graph(case)
    score, value = make_inputs(graph, heads, channels)
    actual = outputs_and_grads(segment_attention_reference, score, value, src, seg, s)
    expected = outputs_and_grads(dense_attention, score, value, src, seg, s)
    assert actual[0].shape == (s, heads, channels)
    assert_all_close(actual, expected, atol=1e-10, rtol=1e-9)
    empty = torch.bincount(seg, minlength=s) == 0
    assert (actual[0][empty] == 0).all()
    assert torch.isfinite(actual[0]).all()


def test_reference_gradcheck():
    src, seg, _, s = graph = make_graph("hub")
    score, value = make_inputs(graph, heads=2, channels=3)
    assert torch.autograd.gradcheck(
        lambda a, v: segment_attention_reference(a, v, src, seg, s), (score, value)
    )


@pytest.mark.parametrize("case", ["random", "hub", "sparse", "duplicates"])
def test_reference_chunks_edges(case, monkeypatch):
    src, seg, _, s = graph = make_graph(case)
    score, value = make_inputs(graph, heads=3, channels=5)
    expected = outputs_and_grads(segment_attention_reference, score, value, src, seg, s)
    monkeypatch.setattr(attention, "CHUNK_ELEMENTS", 7 * 3 * 5)  # 7 edges per chunk
    actual = outputs_and_grads(segment_attention_reference, score, value, src, seg, s)
    assert_all_close(actual, expected, atol=1e-12, rtol=1e-12)


def test_reference_large_scores_and_single_precision():
    src, seg, _, s = graph = make_graph("hub")
    score, value = make_inputs(graph, heads=3, channels=5, dtype=torch.float32, scale=200.0)
    actual = outputs_and_grads(segment_attention_reference, score, value, src, seg, s)
    expected = outputs_and_grads(
        dense_attention, score.double(), value.double(), src, seg, s
    )  # grads w.r.t. the float32 leaves, computed in float64
    assert all(torch.isfinite(t).all() for t in actual)
    assert_all_close(actual, [t.float() for t in expected], atol=1e-5, rtol=1e-4)


def test_segment_softmax():
    src, seg, _, s = make_graph("duplicates")
    score = torch.randn(len(src), 3, dtype=torch.float64, requires_grad=True)
    alpha = segment_softmax(score, seg, s)
    assert alpha.shape == score.shape
    assert ((alpha >= 0) & (alpha <= 1)).all()
    sums = torch.zeros(s, 3, dtype=alpha.dtype).index_add(0, seg, alpha)
    nonempty = torch.bincount(seg, minlength=s) > 0
    torch.testing.assert_close(sums[nonempty], torch.ones_like(sums[nonempty]))
    shuffled = torch.randperm(len(seg))  # seg need not be sorted here
    torch.testing.assert_close(segment_softmax(score[shuffled], seg[shuffled], s), alpha[shuffled])
    assert torch.autograd.gradcheck(lambda a: segment_softmax(a, seg, s), (score,))


# --- Triton kernel under the interpreter ----------------------------------------------------


def needs_interpreter():
    if not attention.HAS_TRITON:
        pytest.skip("triton does not import")
    if not attention._interpreted():
        pytest.skip(
            "kernels were compiled for a GPU: TRITON_INTERPRET=1 was not set before "
            "wsigraph.nn.attention was imported (tests/conftest.py sets it)"
        )


@pytest.mark.parametrize("heads,channels", [(1, 1), (3, 5), (2, 16)])
@pytest.mark.parametrize("case", list(CASES))
def test_triton_interpreter_matches_reference(case, heads, channels):
    needs_interpreter()
    src, seg, _, s = graph = make_graph(case)
    score, value = make_inputs(graph, heads, channels, dtype=torch.float32)
    actual = outputs_and_grads(segment_attention_triton, score, value, src, seg, s)
    expected = outputs_and_grads(segment_attention_reference, score, value, src, seg, s)
    assert actual[0].dtype == torch.float32
    assert_all_close(actual, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("split", [8, 20])
@pytest.mark.parametrize("case", ["hub", "random", "duplicates"])
def test_triton_interpreter_split_segments(case, split, monkeypatch):
    needs_interpreter()
    monkeypatch.setattr(attention, "SPLIT", split)  # long segments run as several pieces
    src, seg, _, s = graph = make_graph(case)
    score, value = make_inputs(graph, heads=2, channels=5, dtype=torch.float32, scale=10.0)
    actual = outputs_and_grads(segment_attention_triton, score, value, src, seg, s)
    expected = outputs_and_grads(segment_attention_reference, score, value, src, seg, s)
    assert_all_close(actual, expected, atol=1e-5, rtol=1e-4)


def test_triton_interpreter_float64_against_dense():
    needs_interpreter()
    src, seg, _, s = graph = make_graph("hub")
    score, value = make_inputs(graph, heads=3, channels=5, scale=30.0)
    actual = outputs_and_grads(segment_attention_triton, score, value, src, seg, s)
    expected = outputs_and_grads(dense_attention, score, value, src, seg, s)
    assert_all_close(actual, expected, atol=1e-10, rtol=1e-9)


def test_triton_interpreter_one_input_needs_grad():
    needs_interpreter()
    src, seg, _, s = graph = make_graph("random")
    score, value = make_inputs(graph, heads=2, channels=4, dtype=torch.float32)
    for grad_of in (score, value):
        expected = torch.autograd.grad(
            segment_attention_reference(score, value, src, seg, s).sum(), grad_of
        )
        out = segment_attention_triton(score.detach(), value.detach(), src, seg, s)
        assert not out.requires_grad
        a, v = (t if t is grad_of else t.detach() for t in (score, value))
        actual = torch.autograd.grad(segment_attention_triton(a, v, src, seg, s).sum(), grad_of)
        torch.testing.assert_close(actual[0], expected[0], atol=1e-5, rtol=1e-4)


# --- sparse CSR path (CPU) -------------------------------------------------------------------


@pytest.mark.parametrize("heads,channels", HC)
@pytest.mark.parametrize("case", list(CASES))
def test_sparse_matches_dense(case, heads, channels):
    src, seg, n, s = graph = make_graph(case)
    score, value = make_inputs(graph, heads, channels)
    actual = outputs_and_grads(segment_attention_sparse, score, value, src, seg, s)
    expected = outputs_and_grads(dense_attention, score, value, src, seg, s)
    assert actual[0].shape == (s, heads, channels)
    assert_all_close(actual, expected, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("heads,channels", [(1, 5), (3, 5), (3, 1)])
@pytest.mark.parametrize("case", ["random", "sparse", "hub", "no_edges"])
def test_mean_heads_is_the_mean_of_the_heads(case, heads, channels):
    src, seg, n, s = graph = make_graph(case)
    score, value = make_inputs(graph, heads, channels)

    def averaged(*args):
        return dense_attention(*args).mean(1)

    expected = outputs_and_grads(averaged, score, value, src, seg, s)
    for op in (segment_attention_sparse, segment_attention):
        actual = outputs_and_grads(
            lambda *a, op=op: op(*a, mean_heads=True), score, value, src, seg, s
        )
        assert actual[0].shape == (s, channels)
        assert_all_close(actual, expected, atol=1e-10, rtol=1e-9)
    if case == "hub":
        assert torch.autograd.gradcheck(
            lambda a, v: segment_attention_sparse(a, v, src, seg, s, mean_heads=True),
            (score, value),
        )


def test_sparse_gradcheck_layout_reuse_and_single_precision():
    src, seg, n, s = graph = make_graph("hub")
    score, value = make_inputs(graph, heads=2, channels=3)
    assert torch.autograd.gradcheck(
        lambda a, v: segment_attention_sparse(a, v, src, seg, s), (score, value)
    )
    ptr = attention._ptr_from_seg(seg, s)
    layout = attention.SparseLayout(src, seg, ptr, n, 2)
    for _ in range(2):  # one layout, several calls (its transpose is built once)
        again = outputs_and_grads(
            lambda a, v, *_: segment_attention_sparse(a, v, src, seg, s, ptr, layout=layout),
            score, value, src, seg, s,
        )  # fmt: skip
        assert_all_close(
            again, outputs_and_grads(segment_attention_reference, score, value, src, seg, s),
            atol=1e-12, rtol=1e-10,
        )  # fmt: skip
    with pytest.raises(ValueError, match="does not fit"):
        one_head = make_inputs(graph, heads=1, channels=3)
        segment_attention_sparse(*one_head, src, seg, s, layout=layout)
    score32, value32 = make_inputs(graph, heads=3, channels=5, dtype=torch.float32, scale=200.0)
    actual = outputs_and_grads(segment_attention_sparse, score32, value32, src, seg, s)
    expected = outputs_and_grads(dense_attention, score32.double(), value32.double(), src, seg, s)
    assert all(torch.isfinite(t).all() for t in actual)
    assert_all_close(actual, [t.float() for t in expected], atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="float32/float64 CPU"):
        segment_attention_sparse(score32.half(), value32.half(), src, seg, s)


@pytest.mark.parametrize("mean_heads", [False, True])
def test_sparse_layout_int32_indices_and_the_int64_fallback(monkeypatch, mean_heads):
    """The layout's index arrays are int32 (what the CPU sparse kernels take) and switch to
    int64 above ``INT32_INDEX_LIMIT``; both give the dense result and its gradients."""
    src, seg, n, s = graph = make_graph("hub")
    score, value = make_inputs(graph, heads=3, channels=4)
    ptr = attention._ptr_from_seg(seg, s)
    expected = outputs_and_grads(dense_attention, score, value, src, seg, s)
    if mean_heads:
        expected = outputs_and_grads(
            lambda *a: dense_attention(*a).mean(1), score, value, src, seg, s
        )
    for limit, dtype in ((attention.INT32_INDEX_LIMIT, torch.int32), (10, torch.long)):
        monkeypatch.setattr(attention, "INT32_INDEX_LIMIT", limit)
        layout = attention.SparseLayout(src, seg, ptr, n, 3, mean_heads=mean_heads)
        actual = outputs_and_grads(
            lambda a, v, *_, layout=layout: segment_attention_sparse(
                a, v, src, seg, s, ptr, layout=layout, mean_heads=mean_heads
            ),
            score, value, src, seg, s,
        )  # fmt: skip
        assert layout.cols.dtype == layout.crow.dtype == dtype
        assert all(t.dtype == dtype for t in layout._transpose)  # built by the backward
        assert_all_close(actual, expected, atol=1e-10, rtol=1e-9)


# --- dispatch -------------------------------------------------------------------------------


def test_dispatch(monkeypatch):
    src, seg, _, s = graph = make_graph("random")
    score, value = make_inputs(graph, heads=2, channels=3, dtype=torch.float32)
    calls = []
    for name in (
        "segment_attention_reference",
        "segment_attention_sparse",
        "segment_attention_triton",
    ):
        original = getattr(attention, name)

        def spy(*args, name=name, original=original, **kw):
            calls.append(name)
            return original(*args, **kw)

        monkeypatch.setattr(attention, name, spy)

    monkeypatch.delenv(attention.ENV_VAR, raising=False)
    segment_attention(score, value, src, seg, s)  # float32 on the CPU: the sparse path
    assert attention._backend(value) == "sparse"
    assert attention._backend(value.half()) == "reference"  # no CPU sparse product for it
    monkeypatch.setenv(attention.ENV_VAR, "reference")
    segment_attention(score, value, src, seg, s)
    assert calls == ["segment_attention_sparse", "segment_attention_reference"]
    monkeypatch.setenv(attention.ENV_VAR, "sparse")
    assert attention._backend(value) == "sparse" and attention._backend(value.half()) == "reference"
    if attention.HAS_TRITON and torch.cuda.is_available():
        monkeypatch.delenv(attention.ENV_VAR)
        assert attention._backend(value.cuda()) == "triton"
        monkeypatch.setenv(attention.ENV_VAR, "reference")
        assert attention._backend(value.cuda()) == "reference"
    monkeypatch.setenv(attention.ENV_VAR, "triton")
    assert attention._backend(value) == "triton"
    if attention.HAS_TRITON and attention._interpreted():
        forced = segment_attention(score, value, src, seg, s)
        assert calls[-1] == "segment_attention_triton"
        expected = segment_attention_reference(score, value, src, seg, s)
        torch.testing.assert_close(forced, expected, atol=1e-5, rtol=1e-4)
    monkeypatch.setenv(attention.ENV_VAR, "fast")
    with pytest.raises(ValueError, match="WSIGRAPH_ATTENTION"):
        segment_attention(score, value, src, seg, s)


# --- validation -----------------------------------------------------------------------------


def test_validation_errors():
    src, seg, n, s = graph = make_graph("random")
    score, value = make_inputs(graph, heads=2, channels=3)
    ptr = torch.searchsorted(seg, torch.arange(s + 1))
    op = segment_attention
    torch.testing.assert_close(op(score, value, src, seg, s, ptr), op(score, value, src, seg, s))
    bad = [
        ((score, value, src, seg.flip(0), s), "sorted ascending"),
        ((score[:-1], value, src, seg, s), r"src must be \[E\]"),
        ((score, value[:, :1], src, seg, s), "heads"),
        ((score[:, 0], value, src, seg, s), r"score must be \[E, H\]"),
        ((score, value[0], src, seg, s), r"value must be \[N, H, C\]"),
        ((score, value.float(), src, seg, s), "dtype"),
        ((score, value, src.int(), seg, s), "torch.long"),
        ((score, value, src, seg, int(seg.max())), "num_segments"),
        ((score, value, src - 1, seg, s), "src has negative"),
        ((score, value, src, seg, s, ptr[:-1]), "ptr must be"),
        ((score, value, src, seg, s, ptr.roll(1)), "ptr does not match"),
    ]
    for args, match in bad:
        with pytest.raises(ValueError, match=match):
            op(*args)
    # The fast path skips only the data checks; the sparse path still checks the CSR arrays
    # it builds, as its kernels would crash on bad ones.
    segment_attention_reference(score, value, src, seg.flip(0), s, assume_sorted=True)
    with pytest.raises(ValueError, match="not sorted ascending or does not match ptr"):
        segment_attention(score, value, src, seg.flip(0), s, assume_sorted=True)
    with pytest.raises(ValueError, match="src is out of range"):
        segment_attention(score, value, src + n, seg, s, assume_sorted=True)
    with pytest.raises(ValueError, match="heads"):
        segment_attention(score, value[:, :1], src, seg, s, assume_sorted=True)


# --- CUDA -----------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(
    "dtype,atol,rtol",
    [(torch.float32, 1e-5, 1e-4), (torch.float16, 2e-2, 2e-2), (torch.bfloat16, 5e-2, 5e-2)],
)
def test_triton_cuda_matches_reference(dtype, atol, rtol):
    if attention._interpreted():
        pytest.skip("TRITON_INTERPRET=1 is set: kernels run in the interpreter, not on the GPU")
    gen = torch.Generator().manual_seed(0)
    n, heads, channels, e = 5_000, 4, 64, 20_000
    seg = torch.randint(0, n, (e,), generator=gen)
    seg[:2_000] = 7  # a hub split into several pieces of SPLIT edges
    seg = seg.sort().values.cuda()
    src = torch.randint(0, n, (e,), generator=gen).cuda()
    score = (3 * torch.randn(e, heads, generator=gen)).cuda().to(dtype).requires_grad_()
    value = torch.randn(n, heads, channels, generator=gen).cuda().to(dtype).requires_grad_()
    assert attention._backend(value) == "triton"
    actual = outputs_and_grads(segment_attention, score, value, src, seg, n)
    expected = outputs_and_grads(
        segment_attention_reference, score.float(), value.float(), src, seg, n
    )
    assert actual[0].dtype == dtype and actual[0].is_cuda
    assert_all_close([t.float() for t in actual], expected, atol=atol, rtol=rtol)
