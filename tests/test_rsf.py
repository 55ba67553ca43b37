import math

import pytest
import torch
from torch import Tensor

from wsigraph.nn.rsf import (
    DenseRSFConv,
    DenseRSFEdgeConv,
    DenseSoftmaxAssignmentPool,
    NodeAttention,
    RSFConv,
    RSFEdgeConv,
    SoftmaxAssignmentPool,
)

pytestmark = pytest.mark.usefixtures("one_thread")

F_IN = 6


def _undirected(pairs: list[tuple[int, int]], offset: int = 0) -> Tensor:
    e = torch.tensor(pairs, dtype=torch.long).t() + offset
    return torch.cat([e, e.flip(0)], dim=1)


def _graph(pairs, n, L=1, seed=0, offset=0, dtype=torch.float32):
    """Node features, both directions of the edges, and symmetric edge features."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, F_IN, generator=g, dtype=dtype)
    ei = _undirected(pairs, offset) if pairs else torch.empty(2, 0, dtype=torch.long)
    w = torch.rand(len(pairs), L, generator=g, dtype=dtype)  # e.g. Eq. 1's 1 - d / 100
    return x, ei, torch.cat([w, w]) if pairs else torch.empty(0, L, dtype=dtype)


# Graph 0: 5 nodes, a triangle with a tail. Graph 1: 4 nodes, node 3 isolated.
PAIRS0, N0 = [(0, 1), (1, 2), (0, 2), (2, 3), (3, 4)], 5
PAIRS1, N1 = [(0, 1), (1, 2)], 4


def _batch(L=1, dtype=torch.float32):
    x0, e0, a0 = _graph(PAIRS0, N0, L, seed=0, dtype=dtype)
    x1, e1, a1 = _graph(PAIRS1, N1, L, seed=1, offset=N0, dtype=dtype)
    batch = torch.tensor([0] * N0 + [1] * N1)
    return torch.cat([x0, x1]), torch.cat([e0, e1], 1), torch.cat([a0, a1]), batch


def _dense_adj(edge_index, edge_attr, n):
    """``A[dst, src, l] = edge_attr[e, l]``, ``[n, n, L]``."""
    A = torch.zeros(n, n, edge_attr.size(1), dtype=edge_attr.dtype)
    A[edge_index[1], edge_index[0]] = edge_attr
    return A


def _dense_eq2(conv: RSFConv, x, A):
    """Eq. 2 written out: one filter per output feature f, H_i = h_i0 I + sum_j h_ij A_j."""
    n, L = x.size(0), A.size(-1)
    eye = torch.eye(n, dtype=x.dtype)
    cols = []
    for f in range(conv.out_channels):
        v = torch.zeros(n, dtype=x.dtype)
        for i in range(x.size(1)):
            H = conv.weight[0, i, f] * eye
            for j in range(L):
                H = H + conv.weight[j + 1, i, f] * A[:, :, j]
            v = v + H @ x[:, i]
        cols.append(v + conv.bias[f])
    return torch.stack(cols, dim=1)


def _perm(n, seed=3):
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(n)
    return perm, inv


def _layers(L=1):
    torch.manual_seed(0)
    return {
        "conv": RSFConv(F_IN, 4, edge_dim=L),
        "edge": RSFEdgeConv(F_IN, L, 3, act=torch.tanh),
        "att": NodeAttention(F_IN),
        "pool": SoftmaxAssignmentPool(F_IN, 3, edge_dim=L),
    }


def _run(name, layer, x, ei, ea, batch, B=None):
    """Every output of a sparse layer as a tuple."""
    if name in ("conv", "edge"):
        return (layer(x, ei, ea),)
    if name == "att":
        return layer(x, batch)
    return layer(x, ei, ea, batch, B)


@pytest.mark.parametrize("L", [1, 3])
def test_rsfconv_matches_dense_eq2(L):
    torch.manual_seed(0)
    conv = RSFConv(F_IN, 4, edge_dim=L).double()
    torch.nn.init.normal_(conv.bias)
    x, ei, ea = _graph(PAIRS0, N0, L, dtype=torch.float64)
    ei = torch.cat([ei, torch.tensor([[0], [4]])], 1)  # one directed edge 0 -> 4 too
    ea = torch.cat([ea, torch.rand(1, L, dtype=torch.float64)])
    expected = _dense_eq2(conv, x, _dense_adj(ei, ea, N0))
    torch.testing.assert_close(conv(x, ei, ea), expected, rtol=1e-12, atol=1e-12)


def test_shapes_and_repr():
    x, ei, ea, batch = _batch(L=2)
    assert RSFConv(F_IN, 4, edge_dim=2)(x, ei, ea).shape == (9, 4)
    assert RSFEdgeConv(F_IN, 2, 5)(x, ei, ea).shape == (ei.size(1), 5)
    out, score = NodeAttention(F_IN)(x, batch)
    assert out.shape == x.shape and score.shape == (9,)
    xp, adj, s = SoftmaxAssignmentPool(F_IN, 3, edge_dim=2)(x, ei, ea, batch)
    assert xp.shape == (2, 3, F_IN) and adj.shape == (2, 3, 3, 2) and s.shape == (9, 3)
    assert DenseRSFConv(F_IN, 4, edge_dim=2)(xp, adj).shape == (2, 3, 4)
    xq, adj_q, s_q = DenseSoftmaxAssignmentPool(F_IN, 2, edge_dim=2)(xp, adj)
    assert xq.shape == (2, 2, F_IN) and adj_q.shape == (2, 2, 2, 2) and s_q.shape == (2, 3, 2)

    assert repr(RSFConv(6, 4)) == "RSFConv(6, 4, edge_dim=1)"
    assert repr(DenseRSFConv(6, 4, edge_dim=3)) == "DenseRSFConv(6, 4, edge_dim=3)"
    assert repr(RSFEdgeConv(6, 1, 8)) == "RSFEdgeConv(6, 1, 8, act=relu)"
    assert repr(NodeAttention(6)) == "NodeAttention(6, rescale=True)"
    assert repr(SoftmaxAssignmentPool(6, 10)) == (
        "SoftmaxAssignmentPool(6, clusters=10, edge_dim=1, axis='vertices')"
    )
    assert repr(DenseSoftmaxAssignmentPool(6, 2)).startswith("DenseSoftmaxAssignmentPool(6, ")


def test_edge_attr_defaults_and_checks():
    conv = RSFConv(F_IN, 4)
    x, ei, ea = _graph(PAIRS0, N0)
    torch.testing.assert_close(conv(x, ei), conv(x, ei, torch.ones(ei.size(1), 1)))
    torch.testing.assert_close(conv(x, ei, ea[:, 0]), conv(x, ei, ea))  # [E] is [E, 1]
    with pytest.raises(ValueError, match="expected 1"):
        conv(x, ei, torch.ones(ei.size(1), 2))
    with pytest.raises(ValueError, match="required"):
        RSFConv(F_IN, 4, edge_dim=2)(x, ei)


@pytest.mark.parametrize("name", ["conv", "edge", "att", "pool"])
def test_permutation(name):
    layer = _layers(L=2)[name]
    x, ei, ea, batch = _batch(L=2)
    n = x.size(0)
    # Permute within each graph so the batch vector is unchanged.
    perm = torch.cat([_perm(N0)[0], _perm(N1, seed=4)[0] + N0])
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(n)
    eperm = torch.randperm(ei.size(1), generator=torch.Generator().manual_seed(5))
    out = _run(name, layer, x, ei, ea, batch)
    out_p = _run(name, layer, x[perm], inv[ei][:, eperm], ea[eperm], batch[perm])
    if name == "edge":  # equivariant in the edges
        torch.testing.assert_close(out_p[0], out[0][eperm])
    elif name == "pool":  # pooled graph invariant, assignment rows permuted
        torch.testing.assert_close(out_p[0], out[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out_p[1], out[1], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out_p[2], out[2][perm])
    else:  # node outputs (and attention scores) permuted
        for o_p, o in zip(out_p, out, strict=True):
            torch.testing.assert_close(o_p, o[perm], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["conv", "edge", "att", "pool"])
def test_batched_equals_each_graph_alone(name):
    layer = _layers(L=2)[name]
    x, ei, ea, batch = _batch(L=2)
    out = _run(name, layer, x, ei, ea, batch)
    n_edges0 = 2 * len(PAIRS0)
    for b, (lo, hi, elo, ehi) in enumerate([(0, N0, 0, n_edges0), (N0, N0 + N1, n_edges0, None)]):
        xs, es, eas = x[lo:hi], ei[:, elo:ehi] - lo, ea[elo:ehi]
        alone = _run(name, layer, xs, es, eas, torch.zeros(hi - lo, dtype=torch.long))
        if name == "edge":
            torch.testing.assert_close(alone[0], out[0][elo:ehi])
        elif name == "pool":
            torch.testing.assert_close(alone[0][0], out[0][b], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(alone[1][0], out[1][b], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(alone[2], out[2][lo:hi])
        else:
            for a, o in zip(alone, out, strict=True):
                torch.testing.assert_close(a, o[lo:hi])


@pytest.mark.parametrize("name", ["conv", "edge", "att", "pool"])
def test_isolated_nodes_and_edgeless_batch(name):
    layer = _layers(L=1)[name]
    x = torch.randn(7, F_IN, generator=torch.Generator().manual_seed(2))
    batch = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    ei, ea = torch.empty(2, 0, dtype=torch.long), torch.empty(0, 1)
    out = _run(name, layer, x, ei, ea, batch)
    assert all(torch.isfinite(o).all() for o in out)
    if name == "conv":  # no neighbours: only the h_i0 I term and the bias
        torch.testing.assert_close(out[0], x @ layer.weight[0] + layer.bias)
    elif name == "edge":
        assert out[0].shape == (0, 3)
    elif name == "att":
        torch.testing.assert_close(torch.zeros(2).index_add_(0, batch, out[1]), torch.ones(2))
    else:
        assert out[1].abs().sum() == 0  # no edges, no pooled edges
        # vertex softmax (default): each graph's columns sum to 1
        col_sums = torch.zeros(2, 3).index_add_(0, batch, out[2])
        torch.testing.assert_close(col_sums, torch.ones(2, 3))
    # An isolated node inside a graph with edges: its conv output ignores the others.
    if name == "conv":
        x1, e1, a1 = _graph(PAIRS1, N1, seed=1)
        torch.testing.assert_close(layer(x1, e1, a1)[3], x1[3] @ layer.weight[0] + layer.bias)


def test_empty_graph():
    x, ei = torch.empty(0, F_IN), torch.empty(2, 0, dtype=torch.long)
    assert RSFConv(F_IN, 4)(x, ei).shape == (0, 4)
    assert RSFEdgeConv(F_IN, 1, 3)(x, ei, torch.empty(0, 1)).shape == (0, 3)
    out, score = NodeAttention(F_IN)(x, torch.empty(0, dtype=torch.long))
    assert out.shape == (0, F_IN) and score.shape == (0,)
    xp, adj, s = SoftmaxAssignmentPool(F_IN, 3)(x, ei, batch_size=2)
    assert xp.shape == (2, 3, F_IN) and adj.shape == (2, 3, 3, 1) and s.shape == (0, 3)


@pytest.mark.parametrize("name", ["conv", "edge", "att", "pool"])
def test_gradients_reach_every_parameter(name):
    layer = _layers(L=2)[name]
    x, ei, ea, batch = _batch(L=2)
    x.requires_grad_(True)
    out = _run(name, layer, x, ei, ea, batch)
    target = [torch.randn_like(o) for o in out]
    sum((o * t).sum() for o, t in zip(out, target, strict=True)).backward()
    for pname, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("axis", ["vertices", "clusters"])
def test_pool_matches_dense_eq3(axis):
    torch.manual_seed(0)
    L = 2
    pool = SoftmaxAssignmentPool(F_IN, 3, edge_dim=L, axis=axis).double()
    x, ei, ea, batch = _batch(L, dtype=torch.float64)
    ei = torch.cat([ei, torch.tensor([[0], [4]])], 1)  # a directed edge too
    ea = torch.cat([ea, torch.rand(1, L, dtype=torch.float64)])
    xp, adj, s = pool(x, ei, ea, batch)
    assert (s >= 0).all()
    A = _dense_adj(ei, ea, 9)
    Z = _dense_eq2(pool.conv, x, A)
    if axis == "clusters":
        torch.testing.assert_close(s.sum(-1), torch.ones(9, dtype=torch.float64))
        torch.testing.assert_close(s, torch.softmax(Z, -1))
    for b, (lo, hi) in enumerate([(0, N0), (N0, N0 + N1)]):
        S, Ab = s[lo:hi], A[lo:hi, lo:hi]
        if axis == "vertices":  # a softmax over this graph's vertices only
            torch.testing.assert_close(S, torch.softmax(Z[lo:hi], 0))
        torch.testing.assert_close(xp[b], S.t() @ x[lo:hi])
        for j in range(L):
            torch.testing.assert_close(adj[b, :, :, j], S.t() @ Ab[:, :, j] @ S)


def test_edge_conv_keeps_symmetric_edges_symmetric():
    torch.manual_seed(0)
    conv = RSFEdgeConv(F_IN, 2, 4)
    x, ei, ea = _graph(PAIRS0, N0, L=2)
    out = conv(x, ei, ea)
    A = _dense_adj(ei, out, N0)
    torch.testing.assert_close(A, A.transpose(0, 1))
    assert (out >= 0).all()  # default act: ReLU
    # Eq. 4 written out for one edge (i <- k): phi(W [x_i + x_k, |x_i - x_k|, a_ik] + b).
    k, i = ei[:, 0]
    feat = torch.cat([x[i] + x[k], (x[i] - x[k]).abs(), ea[0]])
    torch.testing.assert_close(out[0], torch.relu(conv.lin.weight @ feat + conv.lin.bias))


def test_node_attention_scores():
    att = NodeAttention(F_IN)
    x, _, _, batch = _batch()
    out, score = att(x, batch)
    assert (score > 0).all()
    torch.testing.assert_close(torch.zeros(2).index_add_(0, batch, score), torch.ones(2))
    counts = torch.tensor([N0] * N0 + [N1] * N1, dtype=torch.float32)
    torch.testing.assert_close(out, x * (score * counts).unsqueeze(-1))
    att_plain = NodeAttention(F_IN, rescale=False)
    att_plain.load_state_dict(att.state_dict())
    torch.testing.assert_close(att_plain(x, batch)[0], x * score.unsqueeze(-1))
    torch.nn.init.zeros_(att.att.weight)  # uniform attention leaves x unchanged
    torch.testing.assert_close(att(x, batch)[0], x)


def test_dense_layers_equal_sparse_ones():
    torch.manual_seed(0)
    L = 2
    x, ei, ea, batch = _batch(L, dtype=torch.float64)
    conv, pool = RSFConv(F_IN, 4, L).double(), SoftmaxAssignmentPool(F_IN, 3, L).double()
    dconv, dpool = DenseRSFConv(F_IN, 4, L).double(), DenseSoftmaxAssignmentPool(F_IN, 3, L)
    dconv.load_state_dict(conv.state_dict())
    dpool.double().load_state_dict(pool.state_dict())
    # Dense batch with padding: graph 1 has 4 of 5 slots.
    xd = torch.zeros(2, N0, F_IN, dtype=torch.float64)
    mask = torch.zeros(2, N0, dtype=torch.bool)
    adj = torch.zeros(2, N0, N0, L, dtype=torch.float64)
    for b, (lo, hi) in enumerate([(0, N0), (N0, N0 + N1)]):
        xd[b, : hi - lo], mask[b, : hi - lo] = x[lo:hi], True
        sel = (ei[1] >= lo) & (ei[1] < hi)
        adj[b, : hi - lo, : hi - lo] = _dense_adj(ei[:, sel] - lo, ea[sel], hi - lo)
    torch.testing.assert_close(dconv(xd, adj, mask)[mask], conv(x, ei, ea))
    assert (dconv(xd, adj, mask)[~mask] == 0).all()
    xp, adjp, s = pool(x, ei, ea, batch)
    xq, adjq, sq = dpool(xd, adj, mask)
    torch.testing.assert_close(xq, xp)
    torch.testing.assert_close(adjq, adjp)
    torch.testing.assert_close(sq[mask], s)
    assert (sq[~mask] == 0).all()


def test_stack_conv_pool_dense_conv_dense_pool_readout():
    torch.manual_seed(0)
    x, ei, ea, batch = _batch()
    att, conv1 = NodeAttention(F_IN), RSFConv(F_IN, 8)
    pool1, conv2, pool2 = (
        SoftmaxAssignmentPool(8, 4),
        DenseRSFConv(8, 8),
        DenseSoftmaxAssignmentPool(8, 2),
    )
    h, score = att(x, batch)
    h = torch.relu(conv1(h, ei, ea))
    h, adj, _ = pool1(h, ei, ea, batch)  # [B, 4, 8], [B, 4, 4, 1]
    h = torch.relu(conv2(h, adj))
    h, adj, _ = pool2(h, adj)  # [B, 2, 8]
    logits = h.mean(1)  # [B, 8]
    assert logits.shape == (2, 8)
    logits.sum().backward()
    for m in (att, conv1, pool1, conv2, pool2):
        assert all(p.grad is not None for p in m.parameters())


def test_dense_edge_conv_equals_sparse_on_present_edges():
    torch.manual_seed(0)
    L = 2
    x, ei, ea, _ = _batch(L, dtype=torch.float64)
    sparse = RSFEdgeConv(F_IN, L, 3).double()
    dense = DenseRSFEdgeConv(F_IN, L, 3).double()
    dense.load_state_dict(sparse.state_dict())
    n = N0 + N1  # the two graphs as one block-diagonal dense graph
    adj = _dense_adj(ei, ea, n).unsqueeze(0)  # [1, n, n, L]
    out = dense(x.unsqueeze(0), adj)[0]  # [n, n, 3]
    torch.testing.assert_close(out[ei[1], ei[0]], sparse(x, ei, ea))
    absent = (adj[0] == 0).all(-1)
    assert (out[absent] == 0).all() and absent.any()
    torch.testing.assert_close(out, out.transpose(0, 1))  # symmetric in, symmetric out
    mask = torch.ones(1, n, dtype=torch.bool)
    mask[0, -1] = False
    masked = dense(x.unsqueeze(0), adj, mask)[0]
    assert (masked[-1] == 0).all() and (masked[:, -1] == 0).all()
    with pytest.raises(ValueError, match="expected 2"):
        dense(x.unsqueeze(0), adj[..., :1])


def test_dense_conv_equals_sparse_on_a_directed_graph():
    # A[dst, src] holds edge src -> dst: on a directed graph a transposed adjacency differs.
    torch.manual_seed(0)
    n, L = 5, 2
    x = torch.randn(n, F_IN, dtype=torch.float64)
    ei = torch.tensor([[0, 1, 2, 3, 4, 0], [1, 2, 3, 4, 0, 2]])  # a directed cycle + one chord
    ea = torch.rand(ei.size(1), L, dtype=torch.float64)
    conv = RSFConv(F_IN, 3, L).double()
    dconv = DenseRSFConv(F_IN, 3, L).double()
    dconv.load_state_dict(conv.state_dict())
    adj = _dense_adj(ei, ea, n).unsqueeze(0)  # [1, N, N, L]
    torch.testing.assert_close(dconv(x.unsqueeze(0), adj)[0], conv(x, ei, ea))
    # and by hand: node 2 receives from 1 and 0 only
    w, b = conv.weight.detach(), conv.bias.detach()
    expected = x[2] @ w[0] + b
    for src, e in ((1, 1), (0, 5)):
        for j in range(L):
            expected = expected + ea[e, j] * x[src] @ w[1 + j]
    torch.testing.assert_close(conv(x, ei, ea)[2].detach(), expected)


# --------------------------------------------------------------------------------------------
# Vertex-axis pooling (the RSF reference code, fps7806/Graph-CNN layers.make_graph_embed_pooling)


def _vertex_pool_by_hand(Z, x, A, n):
    """Eq. 3 with a softmax over the ``n`` vertices, written with loops: for cluster c,
    w_ic = exp(Z_ic) / sum_k exp(Z_kc); x_out[c] = sum_i w_ic x_i;
    A_out[c, d, l] = sum_i sum_k w_ic A[i, k, l] w_kd."""
    C, L = Z.size(1), A.size(-1)
    w = torch.zeros(Z.size(0), C, dtype=Z.dtype)
    for c in range(C):
        m = max(float(Z[i, c]) for i in range(n))
        den = sum(math.exp(float(Z[k, c]) - m) for k in range(n))
        for i in range(n):
            w[i, c] = math.exp(float(Z[i, c]) - m) / den
    x_out = torch.zeros(C, x.size(1), dtype=x.dtype)
    a_out = torch.zeros(C, C, L, dtype=x.dtype)
    for c in range(C):
        for i in range(n):
            x_out[c] += w[i, c] * x[i]
        for d in range(C):
            for i in range(n):
                for k in range(n):
                    a_out[c, d] += w[i, c] * A[i, k] * w[k, d]
    return w, x_out, a_out


def _padded(L=2, seed=0):
    """Graphs 0 and 1 of ``_batch`` as a dense batch ``[2, N0, ...]`` whose padding slot (graph
    1, row 4) holds *random* features and edges: a correct mask makes them irrelevant."""
    x, ei, ea, _ = _batch(L, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    xd = torch.randn(2, N0, F_IN, generator=g, dtype=torch.float64)
    adj = torch.rand(2, N0, N0, L, generator=g, dtype=torch.float64)
    mask = torch.zeros(2, N0, dtype=torch.bool)
    for b, (lo, hi) in enumerate([(0, N0), (N0, N0 + N1)]):
        n = hi - lo
        xd[b, :n], mask[b, :n] = x[lo:hi], True
        sel = (ei[1] >= lo) & (ei[1] < hi)
        adj[b, :n, :n] = _dense_adj(ei[:, sel] - lo, ea[sel], n)
    return xd, adj, mask


def test_vertex_pool_matches_a_plain_write_out():
    torch.manual_seed(0)
    L = 2
    sparse = SoftmaxAssignmentPool(F_IN, 3, L, axis="vertices").double()
    dense = DenseSoftmaxAssignmentPool(F_IN, 3, L, axis="vertices").double()
    dense.load_state_dict(sparse.state_dict())
    x, ei, ea, batch = _batch(L, dtype=torch.float64)
    xd, adj, mask = _padded(L)
    xp, ap, s = sparse(x, ei, ea, batch)
    xq, aq, sq = dense(xd, adj, mask)
    for b, (lo, hi) in enumerate([(0, N0), (N0, N0 + N1)]):
        n = hi - lo
        xb, ab = xd[b, :n], adj[b, :n, :n]  # graph b without its padding
        Z = _dense_eq2(dense.conv, xb, ab)  # Eq. 2 logits
        w, x_out, a_out = _vertex_pool_by_hand(Z.detach(), xb, ab, n)
        for out_x, out_a, out_s in ((xp[b], ap[b], s[lo:hi]), (xq[b], aq[b], sq[b, :n])):
            torch.testing.assert_close(out_s, w[:n])
            torch.testing.assert_close(out_x, x_out)
            torch.testing.assert_close(out_a, a_out)
        # each pooled node is a weighted mean: weights >= 0 summing to 1 over the graph
        torch.testing.assert_close(sq[b].sum(0), torch.ones(3, dtype=torch.float64))
    assert (sq[~mask] == 0).all()  # the padded row has zero weight


def test_vertex_pool_padded_rows_get_zero_weight_and_change_nothing():
    torch.manual_seed(0)
    pool = DenseSoftmaxAssignmentPool(F_IN, 3, 2, axis="vertices").double()
    xd, adj, mask = _padded(2, seed=0)
    xe, adje, _ = _padded(2, seed=1)  # other random padding
    out, other = pool(xd, adj, mask), pool(xe, adje, mask)
    for a, b in zip(out, other, strict=True):
        torch.testing.assert_close(a, b)
    assert (out[2][1, N1:] == 0).all()
    # graph 1 alone, unpadded, pools to the same
    alone = pool(xd[1:, :N1], adj[1:, :N1, :N1])
    torch.testing.assert_close(alone[0][0], out[0][1])
    torch.testing.assert_close(alone[1][0], out[1][1])
    # a graph without any vertex: zero weights, no NaN
    empty = torch.zeros_like(mask)
    x0, a0, s0 = pool(xd, adj, empty)
    assert (s0 == 0).all() and (x0 == 0).all() and torch.isfinite(a0).all()


def test_vertex_pool_permutation_invariant_and_gradients():
    torch.manual_seed(0)
    pool = DenseSoftmaxAssignmentPool(F_IN, 3, 2, axis="vertices").double()
    xd, adj, mask = _padded(2)
    perm = torch.tensor([2, 4, 0, 3, 1])  # moves graph 1's padding slot to the middle
    xq, aq, sq = pool(xd[:, perm], adj[:, perm][:, :, perm], mask[:, perm])
    xp, ap, s = pool(xd, adj, mask)
    torch.testing.assert_close(xq, xp)
    torch.testing.assert_close(aq, ap)
    torch.testing.assert_close(sq, s[:, perm])
    xd.requires_grad_(True)
    out = pool(xd, adj, mask)
    (out[0].square().sum() + out[1].sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in pool.parameters())
    assert (xd.grad[~mask] == 0).all() and (xd.grad[mask].abs().sum(-1) > 0).all()


def test_pool_axis_is_checked():
    with pytest.raises(ValueError, match="axis must be one of"):
        SoftmaxAssignmentPool(F_IN, 3, axis="nodes")
    assert "axis='vertices'" in repr(DenseSoftmaxAssignmentPool(F_IN, 3))
