import math

import pytest
import torch

from wsigraph.nn.spatial_mil import LAMIL, NICMIL, _EdgeDot, local_knn_graph

F_IN = 6
MODELS = {
    "nic": lambda f, c=2: NICMIL(f, c, hidden=(8, 8), reduce_dim=8),
    "nic-noreduce": lambda f, c=2: NICMIL(f, c, hidden=(8,), reduce_dim=0, first_stride=1),
    "lamil": lambda f, c=2: LAMIL(f, c, dim=8, heads=2, layers=2, k=4),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(name, f=F_IN, c=2, seed=0):
    torch.manual_seed(seed)
    return MODELS[name](f, c).eval()


def _bags(sizes, f=F_IN, seed=0, side=6):
    """Bags of the given sizes at distinct random positions of a ``side x side`` lattice
    (shifted per bag), concatenated: x [N, f], grid [N, 2] (long), batch [N]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(sum(sizes), f, generator=g)
    grid = []
    for b, n in enumerate(sizes):
        pos = torch.randperm(side * side, generator=g)[:n]
        grid.append(torch.stack([pos // side + b, pos % side + 2 * b], -1))
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return x, torch.cat(grid), batch


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("n_classes", [2, 3])
def test_output_shape_and_repr(name, n_classes):
    model = _model(name, c=n_classes)
    x, grid, batch = _bags([3, 1, 7])
    out = model(x, grid, batch, 3)
    assert out.shape == (3, n_classes) and torch.isfinite(out).all()
    assert repr(model).startswith(f"{type(model).__name__}({F_IN}, n_classes={n_classes}")
    torch.testing.assert_close(model(x, grid.float(), batch, 3), out)  # float grid, same model


@pytest.mark.parametrize("name", MODELS)
def test_permutation_invariant(name):
    model = _model(name)
    x, grid, batch = _bags([5, 9, 2, 30], side=6)  # lattice positions: k-NN distance ties
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))  # bags interleave
    torch.testing.assert_close(
        model(x[perm], grid[perm], batch[perm], 4), model(x, grid, batch, 4), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("name", MODELS)
def test_batched_equals_each_bag_alone(name):
    model = _model(name)
    sizes = [1, 3, 7, 12, 2, 20]
    x, grid, batch = _bags(sizes)
    together = model(x, grid, batch, len(sizes))
    for b in range(len(sizes)):
        mask = batch == b
        alone = model(x[mask], grid[mask], torch.zeros(int(mask.sum()), dtype=torch.long), 1)
        torch.testing.assert_close(together[b : b + 1], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_bag_of_one_instance_and_empty_bag(name):
    model = _model(name)
    x, grid, batch = _bags([1])
    assert torch.isfinite(model(x, grid, batch, 1)).all()
    x, grid, batch = _bags([2, 0, 3])  # bag 1 is empty: finite, and the others are unaffected
    out = model(x, grid, batch, 3)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[[0, 2]], model(x, grid, torch.where(batch == 2, 1, batch), 2))


@pytest.mark.parametrize("cls", [NICMIL, LAMIL])
def test_bag_of_50000_instances_on_cpu(cls):
    torch.manual_seed(0)
    model = cls(64).eval()  # default sizes
    pos = torch.randperm(224 * 224)[:50_000]
    grid = torch.stack([pos // 224, pos % 224], -1)
    with torch.no_grad():
        out = model(torch.randn(50_000, 64), grid, torch.zeros(50_000, dtype=torch.long), 1)
    assert out.shape == (1, 2) and torch.isfinite(out).all()


def _spatial_bags(n_bags=8, f=4, seed=0):
    """Bag label = whether the two marked patches (feature 0 = 3) are adjacent; the other
    patches lie far from both, so only the arrangement tells the classes apart."""
    g = torch.Generator().manual_seed(seed)
    xs, grids, batch = [], [], []
    for b in range(n_bags):
        n_fill = int(torch.randint(2, 6, (1,), generator=g))
        fill = torch.randperm(16, generator=g)[:n_fill]
        marked = [[0, 0], [0, 1]] if b % 2 else [[0, 0], [5, 5]]
        grids.append(torch.cat([torch.tensor(marked), torch.stack([fill // 4, fill % 4], -1) + 9]))
        x = torch.randn(2 + n_fill, f, generator=g).clamp(-1.5, 1.5)
        x[:2, 0] = 3.0
        xs.append(x)
        batch += [b] * (2 + n_fill)
    return torch.cat(xs), torch.cat(grids), torch.tensor(batch), torch.arange(n_bags) % 2


def _loss(model, x, grid, batch, num_bags, y):
    return model.loss(model.outputs(x, grid, batch, num_bags), y)


@pytest.mark.parametrize("name", ["nic", "lamil"])
def test_overfits_a_tiny_labelled_set(name):
    x, grid, batch, y = _spatial_bags()
    torch.manual_seed(0)
    model = {
        "nic": NICMIL(4, hidden=(8, 8), reduce_dim=8),
        "lamil": LAMIL(4, dim=16, heads=2, layers=1, k=2),  # k = 2: itself and the closest
    }[name].train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        _loss(model, x, grid, batch, 8, y).backward()
        opt.step()
    model.eval()
    assert torch.equal(model(x, grid, batch, 8).argmax(-1), y)
    assert _loss(model, x, grid, batch, 8, y).item() < 0.1


@pytest.mark.parametrize("name", MODELS)
def test_every_parameter_gets_a_gradient(name):
    model = _model(name).train()
    x, grid, batch = _bags([4, 6])
    _loss(model, x, grid, batch, 2, torch.tensor([0, 1])).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


def test_nic_compressed_image_of_a_hand_made_slide():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])
    grid = torch.tensor([[10, 4], [12, 7], [11, 4], [0, 0]])  # slide 0: rows 10-12, cols 4-7
    batch = torch.tensor([0, 0, 0, 1])
    image, size = NICMIL.compress(x, grid, batch, 3)  # slide 2 is empty
    assert image.shape == (3, 2, 3, 4)
    assert size.tolist() == [[3, 4], [1, 1], [1, 1]]
    expected = torch.zeros(3, 3, 4, 2)
    expected[0, 0, 0], expected[0, 2, 3], expected[0, 1, 0] = x[0], x[1], x[2]
    expected[1, 0, 0] = x[3]
    torch.testing.assert_close(image, expected.permute(0, 3, 1, 2))


def _brute_force_knn(grid, batch, k):
    """Each node's k nearest same-slide nodes by (squared distance, row, col), in order."""
    out = []
    for i in range(len(grid)):
        same = [j for j in range(len(grid)) if batch[j] == batch[i]]
        key = [(int(((grid[j] - grid[i]) ** 2).sum()), *grid[j].tolist(), j) for j in same]
        out.append([t[-1] for t in sorted(key)[:k]])
    return out


@pytest.mark.parametrize("k", [1, 4, 9, 16])
def test_local_knn_graph_equals_brute_force(k):
    g = torch.Generator().manual_seed(3)
    pos = torch.randperm(64, generator=g)[:30]  # on an 8 x 8 lattice: many distance ties
    grid = torch.cat([torch.stack([pos // 8, pos % 8], -1), torch.tensor([[3, 3], [0, 7]])])
    batch = torch.cat([torch.randint(0, 2, (30,), generator=g), torch.tensor([3, 3])])
    edge_index = local_knn_graph(grid, batch, k)  # slide 2 empty, slide 3 has 2 < k patches
    src, dst = edge_index
    assert torch.equal(dst, dst.sort(stable=True).values)
    got = [src[dst == i].tolist() for i in range(len(grid))]
    assert got == _brute_force_knn(grid, batch, k)
    assert all(nbr[0] == i for i, nbr in enumerate(got))  # itself first
    assert local_knn_graph(grid[:0], batch[:0], k).shape == (2, 0)


def test_local_knn_graph_on_a_sparse_slide():
    """Far-apart patches, and a centre whose 2nd neighbour is a 4-way tie that the first tree
    query (2k = 4 candidates) cannot hold: the tree is queried again until every tie is in."""
    ring = [[60, 50], [50, 60], [50, 40], [40, 50]]  # the tie-break winners last
    grid = torch.tensor([[50, 50], *ring, [0, 0], [0, 100], [100, 0], [100, 100]])
    batch = torch.zeros(len(grid), dtype=torch.long)
    for k in (2, 3):
        src, dst = local_knn_graph(grid, batch, k)
        got = [src[dst == i].tolist() for i in range(len(grid))]
        assert got == _brute_force_knn(grid, batch, k)
    assert got[0] == [0, 4, 3]  # centre: itself, then (40, 50), (50, 40) of the tied ring


def test_edge_dot_gradients():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(5, 2, 3, dtype=torch.float64, generator=g, requires_grad=True)
    k = torch.randn(5, 2, 3, dtype=torch.float64, generator=g, requires_grad=True)
    dst = torch.tensor([0, 0, 1, 2, 2, 2, 4])
    src = torch.tensor([0, 3, 1, 2, 0, 4, 4])
    torch.testing.assert_close(_EdgeDot.apply(q, k, dst, src), (q[dst] * k[src]).sum(-1))
    assert torch.autograd.gradcheck(lambda q, k: _EdgeDot.apply(q, k, dst, src), (q, k))


def test_lamil_matches_dense_masked_attention():
    """The whole LA-MIL forward on one bag, with each block's attention written densely:
    [H, N, N] scores, -inf outside the k-NN mask, softmax over the neighbours (float64)."""
    torch.manual_seed(0)
    model = LAMIL(F_IN, 3, dim=8, heads=2, layers=2, k=4).double().eval()
    x, grid, batch = _bags([11])
    x = x.double()
    n, heads, c = len(x), 2, 4
    neighbours = _brute_force_knn(grid, batch, 4)
    mask = torch.zeros(n, n, dtype=torch.bool)
    for i, nbr in enumerate(neighbours):
        mask[i, nbr] = True
    h = model.embed(x)
    for block in model.blocks:
        att = block.attention
        hn = block.norm1(h)
        q, k, v = (
            lin(hn).view(n, heads, c).transpose(0, 1) for lin in (att.query, att.key, att.value)
        )
        score = (q @ k.transpose(1, 2) / math.sqrt(c)).masked_fill(~mask, float("-inf"))
        out = (torch.softmax(score, -1) @ v).transpose(0, 1).reshape(n, heads * c)
        h = h + att.proj(out)
        h = h + block.mlp(block.norm2(h))
    expected = model.classifier(model.norm(h).mean(0, keepdim=True))
    torch.testing.assert_close(model(x, grid, batch, 1), expected)
