import math
import time

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from wsigraph.nn.vit import (
    Fusion,
    HIViT,
    HIViTBlock,
    MultiHeadSelfAttention,
    SeparableSelfAttention,
    SqueezeExcitation,
    TokenBlock,
)

pytestmark = pytest.mark.usefixtures("one_thread")

D = 16
REGIONS = [1, 2, 8, 11, 14]  # regions per slide
PATCH_COUNTS = [0, 1, 3, 4, 7]  # patches per region, dealt in turn
ATTENTION = ["ssa", "mhsa"]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _tokens(sizes, d=D, seed=0, dtype=torch.float64):
    """Tokens of segments with ``sizes`` tokens, interleaved (rows of a segment not contiguous)."""
    batch = torch.cat([torch.full((n,), s) for s, n in enumerate(sizes)]).long()
    batch = batch[torch.randperm(batch.numel(), generator=_gen(seed + 1))]
    return torch.randn(batch.numel(), d, generator=_gen(seed), dtype=dtype), batch


def _attention(kind, d=D, seed=0):
    torch.manual_seed(seed)
    module = SeparableSelfAttention(d) if kind == "ssa" else MultiHeadSelfAttention(d, heads=2)
    return module.double().eval()


# ---------------------------------------------------------------- dense references


def _ssa_dense(m: SeparableSelfAttention, x: Tensor) -> Tensor:
    """One segment, written out."""
    w, b = m.qkv.weight, m.qkv.bias
    q = x @ w[0] + b[0]  # [n]
    k = x @ w[1 : 1 + D].T + b[1 : 1 + D]
    v = x @ w[1 + D :].T + b[1 + D :]
    c = torch.exp(q - q.max()) / torch.exp(q - q.max()).sum()
    cv = (c[:, None] * k).sum(0)
    return (torch.relu(v) * cv) @ m.out.weight.T + m.out.bias


def _mhsa_dense(m: MultiHeadSelfAttention, x: Tensor) -> Tensor:
    n, h = x.size(0), m.heads
    q, k, v = (x @ m.qkv.weight.T + m.qkv.bias).split(D, -1)
    q, k, v = (t.view(n, h, -1).transpose(0, 1) for t in (q, k, v))  # [H, n, D/H]
    a = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(D // h), -1) @ v  # [H, n, D/H]
    return a.transpose(0, 1).reshape(n, D) @ m.out.weight.T + m.out.bias


DENSE = {"ssa": _ssa_dense, "mhsa": _mhsa_dense}


@pytest.mark.parametrize("kind", ATTENTION)
def test_attention_matches_dense_per_slide(kind):
    sizes = [5, 1, 0, 9, 3]  # a 1-token slide and an empty slide among others
    x, batch = _tokens(sizes)
    m = _attention(kind)
    out = m(x, batch, len(sizes))
    assert out.shape == x.shape and torch.isfinite(out).all()
    for s in range(len(sizes)):
        rows = batch == s
        if rows.any():
            torch.testing.assert_close(out[rows], DENSE[kind](m, x[rows]))
            torch.testing.assert_close(m(x[rows], batch[rows] * 0, 1), out[rows])  # alone


@pytest.mark.parametrize("kind", ATTENTION)
def test_attention_gradients_match_dense(kind):
    x, batch = _tokens([4, 6])
    m = _attention(kind)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    w = torch.randn(x.shape, generator=_gen(3), dtype=x.dtype)
    (m(x1, batch, 2) * w).sum().backward()
    dense = torch.empty_like(x)
    for s in range(2):
        dense[batch == s] = DENSE[kind](m, x2[batch == s])
    (dense * w).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad)


@pytest.mark.parametrize("kind", ATTENTION)
def test_attention_permutation_equivariant_and_edge_cases(kind):
    x, batch = _tokens([6, 2, 7])
    m = _attention(kind)
    perm = torch.randperm(x.size(0), generator=_gen(5))
    torch.testing.assert_close(m(x[perm], batch[perm], 3), m(x, batch, 3)[perm])
    one = m(x[:1], batch[:1] * 0, 1)  # one token: attends to itself only
    torch.testing.assert_close(one, DENSE[kind](m, x[:1]))
    empty = m(x[:0], batch[:0], 2)
    assert empty.shape == (0, D)
    assert repr(m).startswith(type(m).__name__ + "(16")


def test_mhsa_matches_torch_multihead_attention():
    x, batch = _tokens([5, 3])
    m = _attention("mhsa")
    ref = torch.nn.MultiheadAttention(D, 2, batch_first=True).double()
    with torch.no_grad():
        ref.in_proj_weight.copy_(m.qkv.weight), ref.in_proj_bias.copy_(m.qkv.bias)
        ref.out_proj.weight.copy_(m.out.weight), ref.out_proj.bias.copy_(m.out.bias)
    out = m(x, batch, 2)
    for s in range(2):
        xs = x[batch == s][None]
        torch.testing.assert_close(out[batch == s], ref(xs, xs, xs, need_weights=False)[0][0])
    with pytest.raises(ValueError, match="multiple of heads"):
        MultiHeadSelfAttention(6, heads=4)


def test_ssa_linear_memory_on_200k_tokens():
    torch.manual_seed(0)
    m = SeparableSelfAttention(64).eval()
    n = 200_000
    x = torch.randn(n, 64)
    batch = torch.arange(n) * 3 // n  # three slides
    start = time.perf_counter()
    with torch.no_grad():
        out = m(x, batch, 3)
    assert out.shape == (n, 64) and torch.isfinite(out).all()
    assert time.perf_counter() - start < 5.0  # a dense [n, n] score matrix would be 160 GB


# ---------------------------------------------------------------- squeeze-excitation


def test_squeeze_excitation_gates_per_segment():
    torch.manual_seed(0)
    se = SqueezeExcitation(D, reduction=4).double()
    sizes = [1, 50, 3, 0, 200]
    x, seg = _tokens(sizes)
    g = se(x, seg, len(sizes))
    assert g.shape == x.shape and ((g > 0) & (g < 1)).all()
    for s, n in enumerate(sizes):
        if n:
            rows = seg == s
            torch.testing.assert_close(g[rows], g[rows][:1].expand(n, -1))  # one gate per segment
            ref = torch.sigmoid(se.fc2(F.relu(se.fc1(x[rows].mean(0)))))
            torch.testing.assert_close(g[rows][0], ref)
    # the squeeze is a mean: duplicating every token of a segment leaves its gates unchanged
    rows = seg == 2
    twice = se(torch.cat([x[rows], x[rows]]), seg.new_zeros(6), 1)
    torch.testing.assert_close(twice, g[rows][:1].expand(6, -1))
    assert repr(se) == "SqueezeExcitation(16, reduction=4)"


# ---------------------------------------------------------------- HIViT and Fusion


def _slide(n_regions, seed):
    """Region tokens and patch tokens of one slide, patch counts dealt from PATCH_COUNTS."""
    counts = [PATCH_COUNTS[(i + seed) % len(PATCH_COUNTS)] for i in range(n_regions)]
    region = torch.randn(n_regions, D, generator=_gen(seed), dtype=torch.float64)
    patch_region = torch.repeat_interleave(torch.arange(n_regions), torch.tensor(counts))
    patch = torch.randn(patch_region.numel(), D, generator=_gen(seed + 100), dtype=torch.float64)
    return region, patch, patch_region


def _batched(slides):
    """Concatenate slides; returns the inputs and, per slide, its region and patch rows."""
    region = torch.cat([s[0] for s in slides])
    patch = torch.cat([s[1] for s in slides])
    r_off = torch.tensor([0] + [s[0].size(0) for s in slides]).cumsum(0)
    p_off = torch.tensor([0] + [s[1].size(0) for s in slides]).cumsum(0)
    region_batch = torch.repeat_interleave(
        torch.arange(len(slides)), torch.tensor([s[0].size(0) for s in slides])
    )
    patch_region = torch.cat([s[2] + r_off[i] for i, s in enumerate(slides)])
    rows = [
        (slice(r_off[i], r_off[i + 1]), slice(p_off[i], p_off[i + 1])) for i in range(len(slides))
    ]
    return (region, region_batch, patch, patch_region, len(slides)), rows


def _hivit(kind, depth=None, seed=0, **kw):
    torch.manual_seed(seed)
    if depth is None:
        return HIViTBlock(D, attention=kind, heads=2, **kw).double().eval()
    return HIViT(D, depth=depth, attention=kind, heads=2, **kw).double().eval()


SLIDES = [_slide(n, seed) for seed, n in enumerate(REGIONS)]


@pytest.mark.parametrize("depth", [None, 2])
@pytest.mark.parametrize("kind", ATTENTION)
def test_hivit_shapes_batching_and_permutation(kind, depth):
    model = _hivit(kind, depth)
    inputs, rows = _batched(SLIDES)
    region, region_batch, patch, patch_region, B = inputs
    r_out, p_out = model(*inputs)
    assert r_out.shape == region.shape and p_out.shape == patch.shape
    assert torch.isfinite(r_out).all() and torch.isfinite(p_out).all()
    for (r, p), slide in zip(rows, SLIDES, strict=True):  # batched == alone
        r_alone, p_alone = model(slide[0], slide[0].new_zeros(len(slide[0])).long(), *slide[1:], 1)
        torch.testing.assert_close(r_out[r], r_alone)
        torch.testing.assert_close(p_out[p], p_alone)
    # permute regions and patches (slides interleaved), remapping the patch -> region rows
    pr = torch.randperm(region.size(0), generator=_gen(7))
    pp = torch.randperm(patch.size(0), generator=_gen(8))
    new_row = torch.empty_like(pr).scatter_(0, pr, torch.arange(pr.numel()))  # old -> new
    r_perm, p_perm = model(region[pr], region_batch[pr], patch[pp], new_row[patch_region[pp]], B)
    torch.testing.assert_close(r_perm, r_out[pr])
    torch.testing.assert_close(p_perm, p_out[pp])
    assert repr(model).startswith(type(model).__name__ + "(16")


def test_hivit_block_equations():
    """Eq. 4-7 written out for one slide with SSA blocks."""
    model = _hivit("ssa")
    region, patch, patch_region = SLIDES[3]  # 11 regions, some without patches
    zeros = lambda n: torch.zeros(n, dtype=torch.long)  # noqa: E731
    R, P = region.size(0), patch.size(0)
    r_out, p_out = model(region, zeros(R), patch, patch_region, 1)
    p_hat = model.pl(patch, zeros(P), 1)  # Eq. 4
    gate_r = torch.sigmoid(model.se_region.fc2(F.relu(model.se_region.fc1(region.mean(0)))))
    torch.testing.assert_close(p_out, p_hat + (gate_r * region)[patch_region])  # Eq. 5
    has = torch.tensor([(patch_region == i).any() for i in range(R)])
    p_bar = torch.stack([p_hat[patch_region == i].mean(0) for i in range(R) if has[i]])
    se = model.se_patch
    gate_p = torch.sigmoid(se.fc2(F.relu(se.fc1(p_bar.mean(0)))))
    r_hat = region.clone()
    r_hat[has] += gate_p * p_bar  # Eq. 6; regions without patches keep r_i
    torch.testing.assert_close(r_out, model.rl(r_hat, zeros(R), 1))  # Eq. 7


@pytest.mark.parametrize("kind", ATTENTION)
def test_unidirectional_regions_ignore_patches(kind):
    inputs, _ = _batched(SLIDES)
    region, region_batch, patch, patch_region, B = inputs
    other = torch.randn(patch.shape, generator=_gen(9), dtype=patch.dtype)
    for bidirectional in (False, True):
        model = _hivit(kind, depth=2, bidirectional=bidirectional)
        r1, p1 = model(*inputs)
        r2, p2 = model(region, region_batch, other, patch_region, B)
        assert torch.equal(r1, r2) != bidirectional
        assert not torch.allclose(p1, p2)
    assert model.blocks[0].se_patch is not None
    assert _hivit(kind, bidirectional=False).se_patch is None


@pytest.mark.parametrize("kind", ATTENTION)
@pytest.mark.parametrize("bidirectional", [True, False])
def test_gradients_reach_every_parameter(kind, bidirectional):
    model = _hivit(kind, depth=2, bidirectional=bidirectional).train()
    fusion = Fusion(D).double()
    inputs, _ = _batched(SLIDES)
    region, region_batch, patch, patch_region, B = inputs
    thumb = torch.randn(B, D, generator=_gen(11), dtype=torch.float64)
    r_out, p_out = model(*inputs)
    fused = fusion(thumb, patch, p_out, region_batch[patch_region])
    w = torch.randn(fused.shape, generator=_gen(12), dtype=fused.dtype)
    ((fused * w).sum() + (r_out * r_out).sum()).backward()
    for module in (model, fusion):
        for name, p in module.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, name


def test_fusion_shapes_batching_and_permutation():
    torch.manual_seed(0)
    fusion = Fusion(D).double().eval()
    inputs, rows = _batched(SLIDES)
    region, region_batch, patch, patch_region, B = inputs
    patch_batch = region_batch[patch_region]
    thumb = torch.randn(B, D, generator=_gen(13), dtype=torch.float64)
    vit = torch.randn(patch.shape, generator=_gen(14), dtype=torch.float64)
    out = fusion(thumb, patch, vit, patch_batch)
    assert out.shape == patch.shape and torch.isfinite(out).all() and (out >= 0).all()
    local = F.layer_norm(patch + thumb[patch_batch], (D,), fusion.norm_local.weight, None)
    fused = torch.cat([local, vit], -1) @ fusion.conv.weight.T
    torch.testing.assert_close(out, torch.relu(F.layer_norm(fused, (D,))))  # fresh LN: affine 1, 0
    for b, (_, p) in enumerate(rows):  # batched == alone
        alone = fusion(thumb[b : b + 1], patch[p], vit[p], patch_batch[p] * 0)
        torch.testing.assert_close(out[p], alone)
    pp = torch.randperm(patch.size(0), generator=_gen(15))
    torch.testing.assert_close(fusion(thumb, patch[pp], vit[pp], patch_batch[pp]), out[pp])
    assert repr(fusion) == "Fusion(16)"


def test_token_block_and_dropout_modes():
    x, batch = _tokens([4, 1, 6], seed=2)
    for kind in ATTENTION:
        torch.manual_seed(0)
        block = TokenBlock(D, attention=kind, heads=2, dropout=0.5).double()
        eval_out = block.eval()(x, batch, 3)
        perm = torch.randperm(x.size(0), generator=_gen(16))
        torch.testing.assert_close(block(x[perm], batch[perm], 3), eval_out[perm])
        train_out = block.train()(x, batch, 3)
        assert train_out.shape == x.shape and torch.isfinite(train_out).all()
    with pytest.raises(ValueError, match="attention"):
        TokenBlock(D, attention="linear")


@pytest.mark.parametrize("kind", ATTENTION)
def test_hivit_empty_slide_and_no_patches(kind):
    model = _hivit(kind, depth=2)
    inputs, _ = _batched(SLIDES)
    region, region_batch, patch, patch_region, B = inputs
    r_out, p_out = model(*inputs)
    # slide 0 renumbered to B: slide 0 has no tokens, nothing changes
    shifted = torch.where(region_batch == 0, B, region_batch)
    r_more, p_more = model(region, shifted, patch, patch_region, B + 1)
    torch.testing.assert_close(r_more, r_out)
    torch.testing.assert_close(p_more, p_out)
    # no patch at all: Eq. 6 adds nothing, the regions only go through RL
    r_none, p_none = model(region, region_batch, patch[:0], patch_region[:0], B)
    assert p_none.shape == (0, D) and torch.isfinite(r_none).all()
    r_ref = region
    for block in model.blocks:
        r_ref = block.rl(r_ref, region_batch, B)
    torch.testing.assert_close(r_none, r_ref)


def test_hivit_without_the_last_region_update_has_no_unused_parameters():
    torch.manual_seed(0)
    full = HIViT(16, depth=2)
    patch_only = HIViT(16, depth=2, return_regions=False)
    patch_only.load_state_dict(full.state_dict(), strict=False)
    assert patch_only.blocks[-1].rl is None and patch_only.blocks[-1].se_patch is None
    region, patch = torch.randn(3, 16), torch.randn(5, 16)
    region_batch, patch_region = torch.tensor([0, 0, 1]), torch.tensor([0, 0, 1, 2, 2])
    r_full, p_full = full(region, region_batch, patch, patch_region, 2)
    r_mid, p_only = patch_only(region, region_batch, patch, patch_region, 2)
    torch.testing.assert_close(p_only, p_full)  # the patch tokens do not need Eq. 6-7 at the end
    r_first, _ = full.blocks[0](region, region_batch, patch, patch_region, 2)
    torch.testing.assert_close(r_mid, r_first)
    p_only.sum().backward()
    assert all(p.grad is not None for p in patch_only.parameters())
