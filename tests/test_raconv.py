import pytest
import torch
from torch import Tensor

from wsigraph.nn.raconv import HGATConv, RAConv, RAConvPlus

# A 5-node toy pyramid: 0 thumbnail, 1-2 mid (level 1), 3-4 bottom (level 2).
EDGES = torch.tensor([[0, 1, 0, 2, 1, 2, 1, 3, 1, 4, 3, 4], [1, 0, 2, 0, 2, 1, 3, 1, 4, 1, 4, 3]])
LEVEL = torch.tensor([0, 1, 1, 2, 2])


def _x(n=5, f=6, seed=0):
    return torch.randn(n, f, generator=torch.Generator().manual_seed(seed))


def _dense_raconv(conv: RAConv, x, edge_index, level):
    """RAConv by loops over nodes and resolutions (H2-MIL Eq. 2-5), single head."""
    n, R = x.size(0), conv.num_levels
    z = conv.lin(x)  # [N, C]
    ei = torch.cat([edge_index, torch.arange(n).repeat(2, 1)], 1)
    out = []
    for v in range(n):
        nbrs = ei[0][ei[1] == v]
        scores, per_res = [], []
        for r in range(R):
            nr = nbrs[level[nbrs] == r]
            if len(nr) == 0:
                continue
            proto = z[nr].mean(0)
            s = (z[v] * conv.resolution.att_self[r, 0]).sum() + (
                proto * conv.resolution.att_proto[r, 0]
            ).sum()
            scores.append(torch.nn.functional.leaky_relu(s, 0.2))
            e = torch.nn.functional.leaky_relu(
                (z[v] * conv.att_dst[0, 0]).sum() + (z[nr] * conv.att_src[0, 0]).sum(-1), 0.2
            )
            per_res.append((torch.softmax(e, 0).unsqueeze(-1) * z[nr]).sum(0))
        a = torch.softmax(torch.stack(scores), 0)
        out.append(sum(ai * hi for ai, hi in zip(a, per_res, strict=True)))
    return torch.stack(out) + conv.bias


def test_raconv_matches_the_equations():
    torch.manual_seed(0)
    conv = RAConv(6, 4, num_levels=3)
    torch.nn.init.normal_(conv.bias)
    x = _x()
    torch.testing.assert_close(
        conv(x, EDGES, LEVEL), _dense_raconv(conv, x, EDGES, LEVEL), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("cls", [RAConv, HGATConv, RAConvPlus])
def test_shapes_heads_and_repr(cls):
    conv = cls(6, 4, num_levels=3, heads=3, concat=True)
    assert conv(_x(), EDGES, LEVEL).shape == (5, 12)
    conv = cls(6, 4, num_levels=3, heads=3, concat=False)
    assert conv(_x(), EDGES, LEVEL).shape == (5, 4)
    assert repr(conv).startswith(f"{cls.__name__}(6, 4, heads=3")


def test_attention_weights_sum_to_one_per_node_and_split_by_resolution():
    conv = RAConv(6, 4, num_levels=3, heads=2)
    _, (ei, w) = conv(_x(), EDGES, LEVEL, return_attention_weights=True)
    assert w.shape == (ei.size(1), 2) and (w >= 0).all() and (w <= 1).all()
    total = torch.zeros(5, 2).index_add_(0, ei[1], w)
    torch.testing.assert_close(total, torch.ones(5, 2))


@pytest.mark.parametrize("cls", [RAConv, HGATConv, RAConvPlus])
def test_permutation_equivariance(cls):
    conv = cls(6, 4, num_levels=3, heads=2)
    x = _x()
    perm = torch.tensor([3, 0, 4, 1, 2])
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(5)
    out = conv(x, EDGES, LEVEL)
    out_p = conv(x[perm], inv[EDGES], LEVEL[perm])
    torch.testing.assert_close(out_p, out[perm], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", [RAConv, HGATConv])
def test_isolated_nodes_and_empty_graph(cls):
    conv = cls(6, 4, num_levels=3)
    x = _x(7)
    level = torch.tensor([0, 1, 1, 2, 2, 2, 1])  # nodes 5 and 6 have no edges
    out = conv(x, EDGES, level)
    assert torch.isfinite(out).all()
    # with its self loop only, an isolated node's output is its own transformed feature
    torch.testing.assert_close(out[5], conv.lin(x[5]) + conv.bias)
    no_loops = cls(6, 4, num_levels=3, add_self_loops=False)
    torch.testing.assert_close(no_loops(x, EDGES, level)[5], no_loops.bias)  # nothing to attend to
    empty = conv(
        torch.zeros(0, 6), torch.zeros(2, 0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    )
    assert empty.shape == (0, 4)


@pytest.mark.parametrize("cls", [RAConv, HGATConv, RAConvPlus])
def test_gradients_reach_every_parameter(cls):
    conv = cls(6, 4, num_levels=3, heads=2)
    x = _x().requires_grad_()
    conv(x, EDGES, LEVEL).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in conv.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_raconv_balances_resolutions_where_hgat_does_not():
    """A node with 1 thumbnail neighbour and 8 fine neighbours (plus itself), zero attention
    parameters: RAConv gives the thumbnail 1/3 (uniform over 3 resolutions), HGAT 1/10."""
    src = torch.tensor([0] + list(range(2, 10)))
    edge_index = torch.stack([src, torch.ones_like(src)])
    level = torch.tensor([0, 1] + [2] * 8)
    ra = RAConv(3, 2, num_levels=3)
    with torch.no_grad():
        for p in (ra.att_src, ra.att_dst, ra.resolution.att_self, ra.resolution.att_proto):
            p.zero_()
    _, (ei, w) = ra(torch.randn(10, 3), edge_index, level, return_attention_weights=True)
    thumb = (ei[0] == 0) & (ei[1] == 1)
    assert w[thumb].item() == pytest.approx(1 / 3)
    hg = HGATConv(3, 2, num_levels=3)
    with torch.no_grad():
        for p in (hg.att_src, hg.att_dst, hg.types.att_self, hg.types.att_proto):
            p.zero_()
        hg.lin.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 0, 0]]))
        hg.bias.zero_()
    x = torch.zeros(10, 3)
    x[0, 0] = 10.0  # only the thumbnail carries signal: its weight is readable from the output
    assert hg(x, edge_index, level)[1, 0].item() == pytest.approx(10 / 10)


@pytest.mark.parametrize("cls", [RAConv, HGATConv, RAConvPlus])
def test_attention_dropout_keeps_gradients_finite(cls):
    """High attention dropout drops whole resolutions (weights become exactly 0): no NaN."""
    torch.manual_seed(0)
    conv = cls(6, 4, num_levels=3, heads=2, dropout=0.9).train()
    for _ in range(20):
        x = _x().requires_grad_()
        conv(x, EDGES, LEVEL).square().sum().backward()
        assert torch.isfinite(x.grad).all()
        assert all(torch.isfinite(p.grad).all() for p in conv.parameters() if p.grad is not None)


# RAConv+ (HIGT) ------------------------------------------------------------------------------

# A 12-node pyramid: 0 thumbnail (level 0); 1-3 mid (level 1, a row); 4-11 bottom (level 2,
# two rows of four), with 8-adjacency within levels and scaling edges across levels.
_PYRAMID_UNDIRECTED = [
    (0, 1), (0, 2), (0, 3),  # thumbnail - mid
    (1, 2), (2, 3),  # mid spatial
    (1, 4), (1, 8), (2, 5), (2, 6), (2, 9), (2, 10), (3, 7), (3, 11),  # mid - bottom
    (4, 5), (5, 6), (6, 7), (8, 9), (9, 10), (10, 11),  # bottom rows
    (4, 8), (5, 9), (6, 10), (7, 11), (4, 9), (5, 8), (5, 10), (6, 9), (6, 11), (7, 10),
]  # fmt: skip
PYRAMID = torch.tensor(_PYRAMID_UNDIRECTED).T
PYRAMID = torch.cat([PYRAMID, PYRAMID.flip(0)], 1)
PYRAMID_LEVEL = torch.tensor([0, 1, 1, 1] + [2] * 8)


def _dense_raconv_plus(conv: RAConvPlus, x, edge_index, level, a1, b1):
    """HIGT Eq. 2-3 written out: loops over nodes, heads and resolutions, with the full
    a = [a1 || a2], b = [b1 || b2] (a1, b1 cancel in the softmaxes). Returns (H', A [N, N, H])."""
    n, R, H, C = x.size(0), conv.num_levels, conv.heads, conv.out_channels
    lrelu = torch.nn.functional.leaky_relu
    U = conv.lin_u.weight.view(H, C, -1)
    V = conv.lin_v.weight.view(H, C, -1)
    W = conv.lin.weight.view(H, C, -1)
    if conv.add_self_loops:
        edge_index = torch.cat([edge_index, torch.arange(n).repeat(2, 1)], 1)
    A = torch.zeros(n, n, H, dtype=x.dtype)
    for j in range(n):
        nbrs = edge_index[0][edge_index[1] == j]
        for h in range(H):
            a, b = torch.cat([a1[h], conv.att_a[0, h]]), torch.cat([b1[h], conv.att_b[0, h]])
            ks = [k for k in range(R) if (level[nbrs] == k).any()]
            s_k = []
            for k in ks:
                h_k = x[nbrs[level[nbrs] == k]].mean(0)
                s_k.append(a @ lrelu(torch.cat([U[h] @ x[j], U[h] @ h_k]), 0.2))
            alpha_k = torch.softmax(torch.stack(s_k), 0) if ks else []
            for k, ak in zip(ks, alpha_k, strict=True):
                nk = nbrs[level[nbrs] == k]
                s_n = torch.stack(
                    [b @ lrelu(torch.cat([V[h] @ x[j], V[h] @ x[i]]), 0.2) for i in nk]
                )
                for i, an in zip(nk, torch.softmax(s_n, 0), strict=True):
                    A[j, i, h] = ak + an  # Eq. 2
    out = torch.stack([A[:, :, h] @ x @ W[h].T for h in range(H)], 1)  # Eq. 3, [N, H, C]
    out = out.reshape(n, H * C) if conv.concat else out.mean(1)
    return out + conv.bias, A


@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("concat", [False, True])
@pytest.mark.parametrize("loops", [True, False])
def test_raconv_plus_matches_the_equations(heads, concat, loops):
    torch.manual_seed(0)
    conv = RAConvPlus(6, 4, num_levels=3, heads=heads, concat=concat, add_self_loops=loops)
    conv = conv.double()
    torch.nn.init.normal_(conv.bias)
    x = _x(12).double()
    a1, b1 = torch.randn(heads, 4, dtype=torch.float64), torch.randn(heads, 4, dtype=torch.float64)
    out, (ei, w) = conv(x, PYRAMID, PYRAMID_LEVEL, return_attention_weights=True)
    dense_out, A = _dense_raconv_plus(conv, x, PYRAMID, PYRAMID_LEVEL, a1, b1)
    torch.testing.assert_close(out, dense_out)
    assert ei.size(1) == PYRAMID.size(1) + (12 if loops else 0)
    torch.testing.assert_close(w, A[ei[1], ei[0]])  # A[j, j'] = alpha_k + alpha_j' per edge
    torch.testing.assert_close(conv(x, PYRAMID, PYRAMID_LEVEL), out)


def test_raconv_plus_rows_are_not_normalised():
    """Zero attention vectors: alpha_k = 1/3 over 3 resolutions, alpha_j' = 1 / |N_k|. A node
    with 1 thumbnail, 8 fine neighbours and itself: A = 1/3 + 1, 1/3 + 1/8, 1/3 + 1 (sum 19/3)."""
    src = torch.tensor([0] + list(range(2, 10)))
    edge_index = torch.stack([src, torch.ones_like(src)])
    level = torch.tensor([0, 1] + [2] * 8)
    conv = RAConvPlus(3, 2, num_levels=3, heads=2)
    with torch.no_grad():
        conv.att_a.zero_()
        conv.att_b.zero_()
    _, (ei, w) = conv(torch.randn(10, 3), edge_index, level, return_attention_weights=True)
    into_1 = ei[1] == 1
    expected = torch.where(ei[0][into_1] >= 2, 1 / 3 + 1 / 8, 4 / 3)
    torch.testing.assert_close(w[into_1], expected.unsqueeze(-1).expand(-1, 2))
    assert w[into_1, 0].sum().item() == pytest.approx(19 / 3)


def test_raconv_plus_node_without_neighbours_and_empty_graph():
    conv = RAConvPlus(6, 4, num_levels=3, heads=2)
    x = _x(14)
    level = torch.cat([PYRAMID_LEVEL, torch.tensor([2, 0])])  # nodes 12 and 13 have no edges
    out = conv(x, PYRAMID, level)
    assert torch.isfinite(out).all()
    # its own loop only: alpha_k = alpha_j' = 1, so A = 2
    torch.testing.assert_close(out[12], 2 * conv.lin(x[12]).view(2, 4).mean(0) + conv.bias)
    no_loops = RAConvPlus(6, 4, num_levels=3, heads=2, add_self_loops=False)
    out = no_loops(x, PYRAMID, level)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[12], no_loops.bias)  # nothing to attend to
    x.requires_grad_()
    no_loops(x, PYRAMID, level).sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad[12:] == 0).all()
    empty = conv(
        torch.zeros(0, 6), torch.zeros(2, 0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    )
    assert empty.shape == (0, 4)


def _pyramid_graph(side: int) -> tuple[Tensor, Tensor]:
    """A thumbnail, a (side/2)^2 mid grid and a side^2 bottom grid, 8-adjacency within levels,
    scaling edges to the parent; both directions."""
    edges, offset = [], [0, 1, 1 + (side // 2) ** 2]
    for lv, s in ((1, side // 2), (2, side)):
        idx = torch.arange(s * s).view(s, s) + offset[lv]
        for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
            a = idx[max(0, -dr) : s - max(0, dr), max(0, -dc) : s - max(0, dc)]
            b = idx[max(0, dr) : s + min(0, dr) or None, max(0, dc) : s + min(0, dc) or None]
            edges.append(torch.stack([a.reshape(-1), b.reshape(-1)]))
    mid = torch.arange((side // 2) ** 2) + 1
    edges.append(torch.stack([torch.zeros_like(mid), mid]))
    fine = torch.arange(side * side)
    parent = (fine // side // 2) * (side // 2) + (fine % side) // 2 + 1
    edges.append(torch.stack([parent, fine + offset[2]]))
    edge_index = torch.cat(edges, 1)
    level = torch.tensor([0] + [1] * (side // 2) ** 2 + [2] * side * side)
    return torch.cat([edge_index, edge_index.flip(0)], 1), level


def test_raconv_plus_runs_on_a_50k_node_graph():
    """~50,000 nodes, ~0.55 M edges with loops: forward and backward in O(E) memory (an
    E x N matrix would be ~37 G entries)."""
    edge_index, level = _pyramid_graph(200)
    n = level.numel()
    assert n == 1 + 100 * 100 + 200 * 200
    conv = RAConvPlus(16, 16, num_levels=3, heads=2)
    x = torch.randn(n, 16, generator=torch.Generator().manual_seed(0), requires_grad=True)
    out = conv(x, edge_index, level)
    out.square().mean().backward()
    assert out.shape == (n, 16) and torch.isfinite(out).all() and torch.isfinite(x.grad).all()


# Multi-head write-outs (float64): every head with its own W, attention vectors and softmaxes,
# heads concatenated (head-major) or averaged. Outputs, attention weights and gradients. ------

_lrelu = torch.nn.functional.leaky_relu


def _loops(conv, edge_index, n):
    if conv.add_self_loops:
        return torch.cat([edge_index, torch.arange(n).repeat(2, 1)], 1)
    return edge_index


def _combine_heads(conv, per_head):
    """``[N, C]`` per head -> ``[N, H * C]`` (head h in columns h*C:(h+1)*C) or the mean."""
    out = torch.cat(per_head, 1) if conv.concat else torch.stack(per_head).mean(0)
    return out + conv.bias


def _resolution_weights(conv, z, nbrs, v, h, level):
    """H2-MIL Eq. 2 for node v and head h: {r: alpha_r} over the resolutions present among
    v's neighbours, with U_r = [att_self[r, h] || att_proto[r, h]] and h_r the mean of z."""
    res = conv.resolution
    present = [r for r in range(conv.num_levels) if (level[nbrs] == r).any()]
    s = [
        torch.cat([res.att_self[r, h], res.att_proto[r, h]])
        @ torch.cat([z[v], z[nbrs[level[nbrs] == r]].mean(0)])
        for r in present
    ]
    return (
        dict(zip(present, torch.softmax(_lrelu(torch.stack(s), 0.2), 0), strict=True)) if s else {}
    )


def _dense_raconv_heads(conv: RAConv, x, edge_index, level):
    """RAConv (H2-MIL Eq. 2-5) by loops over heads, nodes and resolutions: alpha_vv' =
    alpha_r * softmax_{N_r(v)}(LReLU(V^T [z_v || z_v'])). Returns (out, A [N, N, H])."""
    n, H, C = x.size(0), conv.heads, conv.out_channels
    W = conv.lin.weight.view(H, C, -1)
    ei = _loops(conv, edge_index, n)
    A = torch.zeros(n, n, H, dtype=x.dtype)
    per_head = []
    for h in range(H):
        z = x @ W[h].T  # [N, C]
        V = torch.cat([conv.att_dst[0, h], conv.att_src[0, h]])
        rows = []
        for v in range(n):
            nbrs = ei[0][ei[1] == v]
            row = x.new_zeros(C)
            for r, a_r in _resolution_weights(conv, z, nbrs, v, h, level).items():
                nr = nbrs[level[nbrs] == r]
                e = _lrelu(torch.stack([V @ torch.cat([z[v], z[i]]) for i in nr]), 0.2)
                a_n = torch.softmax(e, 0)  # Eq. 3, within resolution r
                for i, a in zip(nr, a_n, strict=True):
                    A[v, i, h] = a_r * a  # Eq. 4
                    row = row + a_r * a * z[i]  # Eq. 5
            rows.append(row)
        per_head.append(torch.stack(rows))
    return _combine_heads(conv, per_head), A


def _dense_hgat_heads(conv: HGATConv, x, edge_index, level):
    """HGAT by loops: beta_vv' = softmax over all of v's neighbours of
    LReLU(alpha_{tau(v')} * nu^T [z_v || z_v']), alpha_tau as RAConv's Eq. 2."""
    n, H, C = x.size(0), conv.heads, conv.out_channels
    W = conv.lin.weight.view(H, C, -1)
    ei = _loops(conv, edge_index, n)
    per_head = []
    for h in range(H):
        z = x @ W[h].T
        nu = torch.cat([conv.att_dst[0, h], conv.att_src[0, h]])
        rows = []
        for v in range(n):
            nbrs = ei[0][ei[1] == v]
            if len(nbrs) == 0:
                rows.append(x.new_zeros(C))
                continue
            a_t = _resolution_weights(conv, z, nbrs, v, h, level)
            e = torch.stack(
                [_lrelu(a_t[int(level[i])] * (nu @ torch.cat([z[v], z[i]])), 0.2) for i in nbrs]
            )
            rows.append(torch.softmax(e, 0) @ z[nbrs])
        per_head.append(torch.stack(rows))
    return _combine_heads(conv, per_head)


def _check_against_dense(conv, dense, x, edge_index, level):
    """Output and gradients (w.r.t. x and every parameter, for one random upstream gradient)
    of ``conv`` equal those of the write-out ``dense(conv, x, ...) -> out``."""
    x = x.clone().requires_grad_()
    out = conv(x, edge_index, level)
    ref = dense(conv, x, edge_index, level)
    torch.testing.assert_close(out, ref)
    g = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(1))
    inputs = [x, *conv.parameters()]
    grads = torch.autograd.grad((out * g).sum(), inputs)
    grads_ref = torch.autograd.grad((ref * g).sum(), inputs)
    for name, a, b in zip(["x"] + [n for n, _ in conv.named_parameters()], grads, grads_ref,
                          strict=True):  # fmt: skip
        torch.testing.assert_close(a, b, msg=lambda m, name=name: f"grad of {name}: {m}")


def _heads_differ(conv, x, edge_index, level):
    """Guard (with ``concat``): the heads compute different things, so a head mix-up shows."""
    if conv.concat:
        per_head = conv(x, edge_index, level).view(x.size(0), conv.heads, -1)
        for h in range(1, conv.heads):
            assert not torch.allclose(per_head[:, 0], per_head[:, h])


@pytest.mark.parametrize("heads", [1, 2, 4])
@pytest.mark.parametrize("concat", [False, True])
@pytest.mark.parametrize("loops", [True, False])
def test_raconv_multihead_matches_the_equations(heads, concat, loops):
    torch.manual_seed(0)
    conv = RAConv(6, 3, num_levels=3, heads=heads, concat=concat, add_self_loops=loops).double()
    torch.nn.init.normal_(conv.bias)
    x = _x(12).double()
    assert conv(x, PYRAMID, PYRAMID_LEVEL).shape == (12, 3 * heads if concat else 3)
    _heads_differ(conv, x, PYRAMID, PYRAMID_LEVEL)
    _check_against_dense(conv, lambda *a: _dense_raconv_heads(*a)[0], x, PYRAMID, PYRAMID_LEVEL)
    # the per-edge attention weights, head by head: alpha_vv' = alpha_r * alpha_v'
    _, (ei, w) = conv(x, PYRAMID, PYRAMID_LEVEL, return_attention_weights=True)
    _, A = _dense_raconv_heads(conv, x, PYRAMID, PYRAMID_LEVEL)
    assert w.shape == (PYRAMID.size(1) + (12 if loops else 0), heads)
    torch.testing.assert_close(w, A[ei[1], ei[0]])


@pytest.mark.parametrize("heads", [1, 2, 4])
@pytest.mark.parametrize("concat", [False, True])
def test_hgat_multihead_matches_the_equations(heads, concat):
    torch.manual_seed(0)
    conv = HGATConv(6, 3, num_levels=3, heads=heads, concat=concat).double()
    torch.nn.init.normal_(conv.bias)
    x = _x(12).double()
    _heads_differ(conv, x, PYRAMID, PYRAMID_LEVEL)
    _check_against_dense(conv, _dense_hgat_heads, x, PYRAMID, PYRAMID_LEVEL)


@pytest.mark.parametrize("heads", [2, 4])
@pytest.mark.parametrize("concat", [False, True])
def test_raconv_plus_multihead_outputs_and_gradients_match_the_equations(heads, concat):
    torch.manual_seed(0)
    conv = RAConvPlus(6, 3, num_levels=3, heads=heads, concat=concat).double()
    torch.nn.init.normal_(conv.bias)
    x = _x(12).double()
    a1 = torch.randn(heads, 3, dtype=torch.float64)
    b1 = torch.randn(heads, 3, dtype=torch.float64)
    _heads_differ(conv, x, PYRAMID, PYRAMID_LEVEL)
    dense = lambda c, x_, ei, lv: _dense_raconv_plus(c, x_, ei, lv, a1, b1)[0]  # noqa: E731
    _check_against_dense(conv, dense, x, PYRAMID, PYRAMID_LEVEL)
    _, (ei, w) = conv(x, PYRAMID, PYRAMID_LEVEL, return_attention_weights=True)
    _, A = _dense_raconv_plus(conv, x, PYRAMID, PYRAMID_LEVEL, a1, b1)
    torch.testing.assert_close(w, A[ei[1], ei[0]])


@pytest.mark.parametrize("cls", [RAConv, HGATConv, RAConvPlus])
def test_concat_false_is_the_mean_of_the_concatenated_heads(cls):
    """Same weights, concat True vs False: the mean over heads of the [N, H, C] view of the
    concatenation (bias aside), and each head of the concatenation equals a 1-head layer
    built from that head's slice of the weights."""
    torch.manual_seed(0)
    H, C = 4, 3
    cat = cls(6, C, num_levels=3, heads=H, concat=True).double()
    avg = cls(6, C, num_levels=3, heads=H, concat=False).double()
    state = {k: v for k, v in cat.state_dict().items() if k != "bias"}
    avg.load_state_dict(state, strict=False)
    x = _x(12).double()
    out_cat = (cat(x, PYRAMID, PYRAMID_LEVEL) - cat.bias).view(12, H, C)
    torch.testing.assert_close(avg(x, PYRAMID, PYRAMID_LEVEL) - avg.bias, out_cat.mean(1))
    for h in range(H):
        one = cls(6, C, num_levels=3, heads=1).double()
        with torch.no_grad():
            for name, p in one.named_parameters():
                if name == "bias":
                    p.zero_()
                    continue
                full = dict(cat.named_parameters())[name]
                if name.startswith("lin"):  # [H * C, F]: rows of head h
                    p.copy_(full.view(H, C, -1)[h])
                else:  # attention vectors [R or 1, H, C]: head h
                    p.copy_(full[:, h : h + 1])
        torch.testing.assert_close(one(x, PYRAMID, PYRAMID_LEVEL), out_cat[:, h])


@pytest.mark.parametrize("cls", [RAConv, HGATConv, RAConvPlus])
def test_projection_precision_switch_against_float32(cls):
    """Issue 21: the projections may run in bf16 under autocast (or TF32 on CUDA) behind a
    switch; float32 stays the default and is unchanged, bf16 stays close to it (outputs and
    gradients, in float32), and the weights keep float32."""
    from wsigraph.nn.raconv import PRECISIONS, set_projection_precision

    torch.manual_seed(0)
    n, f = 300, 64
    x = torch.randn(n, f)
    level = torch.randint(0, 3, (n,))
    edges = torch.randint(0, n, (2, 2000))
    conv = cls(f, 16, num_levels=3, heads=2).eval()
    assert conv.precision == "float32"

    def run(precision):
        conv.zero_grad()
        conv.precision = precision
        xi = x.clone().requires_grad_()
        out = conv(xi, edges, level)
        out.square().mean().backward()
        grads = {k: p.grad.clone() for k, p in conv.named_parameters()}
        return out.detach(), xi.grad, grads

    ref, ref_x, ref_w = run("float32")
    for precision in ("tf32", "bfloat16"):  # tf32 is float32 on the CPU
        out, gx, gw = run(precision)
        assert out.dtype == gx.dtype == torch.float32
        assert all(p.dtype == torch.float32 for p in conv.parameters())
        if precision == "tf32" and not torch.cuda.is_available():
            torch.testing.assert_close(out, ref, rtol=0, atol=0)
            continue
        assert not torch.equal(out, ref)  # the products did run in bf16
        torch.testing.assert_close(out, ref, rtol=0.05, atol=0.02 * ref.abs().max().item())
        torch.testing.assert_close(gx, ref_x, rtol=0.1, atol=0.05 * ref_x.abs().max().item())
        for k, g in gw.items():
            cos = torch.nn.functional.cosine_similarity(g.flatten(), ref_w[k].flatten(), dim=0)
            assert cos > 0.99, (precision, k, float(cos))
    model = torch.nn.Sequential(cls(f, 16, num_levels=3), torch.nn.Linear(16, 2))
    assert set_projection_precision(model, "bfloat16") == 1 and model[0].precision == "bfloat16"
    assert set_projection_precision(torch.nn.Linear(2, 2), "float32") == 0
    assert PRECISIONS[0] == "float32"
    with pytest.raises(ValueError, match="precision must be one of float32, tf32"):
        cls(f, 16, precision="fp8")
    with pytest.raises(ValueError, match="precision must be one of"):
        set_projection_precision(model, "half")
