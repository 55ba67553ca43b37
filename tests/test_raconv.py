import pytest
import torch

from wsigraph.nn.raconv import HGATConv, RAConv

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


@pytest.mark.parametrize("cls", [RAConv, HGATConv])
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


@pytest.mark.parametrize("cls", [RAConv, HGATConv])
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


@pytest.mark.parametrize("cls", [RAConv, HGATConv])
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


@pytest.mark.parametrize("cls", [RAConv, HGATConv])
def test_attention_dropout_keeps_gradients_finite(cls):
    """High attention dropout drops whole resolutions (weights become exactly 0): no NaN."""
    torch.manual_seed(0)
    conv = cls(6, 4, num_levels=3, heads=2, dropout=0.9).train()
    for _ in range(20):
        x = _x().requires_grad_()
        conv(x, EDGES, LEVEL).square().sum().backward()
        assert torch.isfinite(x.grad).all()
        assert all(torch.isfinite(p.grad).all() for p in conv.parameters() if p.grad is not None)
