import numpy as np
import pytest
import torch
import torch.nn.functional as F

from labelgen.chain import Chains, Neighbours, Patches, back_match, chain, compose, cycle_hop, match_pair


def grid_pos(h, w):
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], 1).float()


def one_tuple(feats, pos):
    """Patches, neighbours of the adjacent pairs and the tuple (0, 1, ..., K-1) of these images."""
    patches = Patches.cat(feats, pos)
    k = len(feats)
    return patches, Neighbours(patches, [(h, h + 1) for h in range(k - 1)]), torch.arange(k)[None]


def hop(feats, pos, seeds, radius, groups=None):
    """One cycle hop 0 -> 1 of `seeds` (patches of image 0), back among the seeds of each group."""
    patches, nn, _ = one_tuple(feats, pos)
    groups = torch.zeros_like(seeds) if groups is None else groups
    tgt, err, keep = cycle_hop(nn, torch.zeros_like(seeds), torch.ones_like(seeds), seeds, groups, patches, radius)
    return tgt - len(feats[0]), err, keep


def test_cycle_hop_constructed_case():
    # A: 4 patches on a row at x = 0, 1, 5, 6. B: 3 patches.
    # a0 -> b0 -> back to a0 (err 0); a1 -> b0 -> back to a0 (err 1, kept at r=2);
    # a2 -> b1 -> back to a3 (err 1); a3 -> b1 -> a3 (err 0); nothing maps to b2.
    fa = F.normalize(torch.tensor([[1.0, 0, 0], [0.9, 0.3, 0], [0, 0.8, 0.2], [0, 1.0, 0]]), dim=1)
    fb = F.normalize(torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]), dim=1)
    pos = [torch.tensor([[0.0, 0], [1, 0], [5, 0], [6, 0]]), torch.zeros(3, 2)]
    tgt, err, keep = hop([fa, fb], pos, torch.arange(4), radius=2.0)
    assert tgt.tolist() == [0, 0, 1, 1]
    assert err.tolist() == [0.0, 1.0, 1.0, 0.0]
    assert keep.all()
    # a tighter radius rejects the two that came back one patch off
    _, _, keep = hop([fa, fb], pos, torch.arange(4), radius=0.5)
    assert keep.tolist() == [True, False, False, True]
    # back-matching only among the seeds {a1, a2}: a1 -> b0 -> a1, a2 -> b1 -> a2
    _, err, _ = hop([fa, fb], pos, torch.tensor([1, 2]), radius=0.5)
    assert err.tolist() == [0.0, 0.0]


def test_far_back_match_is_rejected():
    # a0 and a1 both match b0, but b0 matches back to a1, which is 10 patches from a0
    fa = F.normalize(torch.tensor([[1.0, 0.5], [1.0, 0.05]]), dim=1)
    fb = F.normalize(torch.tensor([[1.0, 0.0]]), dim=1)
    _, err, keep = hop([fa, fb], [torch.tensor([[0.0, 0], [10, 0]]), torch.zeros(1, 2)], torch.arange(2), radius=2.0)
    assert err.tolist() == pytest.approx([10.0, 0.0])
    assert keep.tolist() == [False, True]


@pytest.mark.parametrize("topk", [1, 3, 64])
def test_back_match_is_the_masked_argmax_within_each_group(topk):
    """Several tuples share a pair, each with its own seeds: the back match of a target is
    its most similar seed of the same tuple (first among top-k, exact fallback beyond)."""
    g = torch.Generator().manual_seed(0)
    fa = F.normalize(torch.randn(50, 8, generator=g), dim=1)
    fb = F.normalize(torch.randn(40, 8, generator=g), dim=1)
    patches = Patches.cat([fa, fb], [torch.zeros(50, 2), torch.zeros(40, 2)])
    nn = Neighbours(patches, [(0, 1)], topk)
    sim = fa @ fb.T
    allowed = torch.rand(5, 50, generator=g) < torch.linspace(0.1, 0.9, 5)[:, None]
    allowed[:, 0] = True
    groups, seeds = allowed.nonzero(as_tuple=True)  # sorted by group, then patch
    targets = nn(torch.zeros_like(seeds), torch.ones_like(seeds), seeds)[:, 0]
    cand = nn(torch.ones_like(seeds), torch.zeros_like(seeds), targets)
    ok = allowed[groups[:, None], cand]
    got = back_match(cand, ok, targets, groups, seeds, patches.feats)
    expect = sim.T[targets - 50].masked_fill(~allowed[groups], -2).argmax(dim=1)
    assert torch.equal(got, expect)
    assert torch.equal(targets - 50, sim.argmax(dim=1)[seeds])  # the forward match: plain nearest
    # both directions come from the same matmul
    assert torch.equal(
        nn(torch.ones(40, dtype=torch.long), torch.zeros(40, dtype=torch.long), torch.arange(50, 90))[:, 0],
        sim.argmax(dim=0),
    )


def test_chain_of_permutations_recovers_composition():
    # image k+1 holds image k's patches shuffled: every chain survives and
    # follows the composed permutation.
    g = torch.Generator().manual_seed(1)
    f0 = F.normalize(torch.randn(36, 16, generator=g), dim=1)
    perms = [torch.randperm(36, generator=g) for _ in range(3)]
    feats, pos = [f0], [grid_pos(6, 6)]
    for p in perms:
        feats.append(feats[-1][p])
        pos.append(grid_pos(6, 6))
    patches, nn, tuples = one_tuple(feats, pos)
    ch = chain(tuples, patches, nn, radius=0.5)
    assert ch.survivors == [36, 36, 36, 36]
    # patch i of image k+1 is patch perm[i] of image k, so patch j of image k is at perm^-1[j]
    expect = torch.arange(36)
    for k, p in enumerate(perms):
        expect = torch.argsort(p)[expect]
        assert torch.equal(ch.idx[:, k + 1] - 36 * (k + 1), expect)
    labels = compose(ch, len(patches.feats), torch.ones(36, 3))
    assert len(labels.src) == 6 * 36  # 6 pairs of positions, one label per chain each
    assert torch.equal((patches.image[labels.tgt] - patches.image[labels.src]).abs(), labels.hops)
    assert (labels.support == 1).all() and (labels.cycle_error == 0).all()


def test_compose_counts_tuples_and_keeps_the_best_cycle_error():
    # three tuples over two images of patches {0, 1} and {2, 3}: chains (0 -> 2) twice in
    # tuple 0 (errors 3, 1), once in tuple 1 (error 2); (1 -> 3) once in tuple 1 (error 5);
    # tuple 2 sweeps the other way and proposes (2 -> 0), which is (0 -> 2) turned around
    ch = Chains(
        torch.tensor([0, 0, 1, 1, 2]),
        torch.tensor([[0, 2], [0, 2], [0, 2], [1, 3], [2, 0]]),
        torch.tensor([[3.0], [1.0], [2.0], [5.0], [4.0]]),
        [5, 5],
    )
    labels = compose(ch, 4, torch.ones(5, 1))
    rows = sorted(
        zip(
            labels.src.tolist(),
            labels.tgt.tolist(),
            labels.hops.tolist(),
            labels.cycle_error.tolist(),
            labels.support.tolist(),
        )
    )
    assert rows == [(0, 2, 1, 1.0, 3), (1, 3, 1, 5.0, 1)]


def test_match_pair_is_the_direct_nearest_neighbour_with_checks():
    g = torch.Generator().manual_seed(2)
    fa = F.normalize(torch.randn(30, 8, generator=g), dim=1)
    fb = F.normalize(torch.randn(20, 8, generator=g), dim=1)
    pos = grid_pos(5, 6)
    tgt, keep, mutual = match_pair(fa, fb, pos, radius=1.0)
    sim = fa @ fb.T
    back = sim.argmax(dim=0)[tgt]
    assert torch.equal(tgt, sim.argmax(dim=1))
    assert torch.equal(mutual, back == torch.arange(30))
    assert torch.equal(keep, (pos[back] - pos).norm(dim=1) <= 1.0)


def test_chain_on_a_known_warp_with_the_offline_backbone(offline_backbone):
    """Three views of a photo 15 deg apart: the chain's end-to-end matches land
    within one patch (8 px at 320 px) of the truth for most foreground patches."""
    from labelgen.demo import load_photo, render_view
    from labelgen.features import ImageFeatures, preprocess
    from labelgen.geometry import plane_homography, transfer
    from labelgen.labels import Foreground

    photo = load_photo("chelsea")
    homs, fgs = [], []
    for az in (0, 15, 30):
        hom = plane_homography(photo.size, az, 0, 384.0, (160, 160))
        view, mask = render_view(photo, hom, 320, 114)
        b = offline_backbone
        x, fg, scale = preprocess(view, mask, 320, b.stride, b.mean, b.std)
        with torch.no_grad():
            feats = b(x[None])[0].permute(1, 2, 0)
        fgs.append(Foreground.of(ImageFeatures(feats, fg, scale, b.stride, 320, 320)))
        homs.append(hom)
    patches, nn, tuples = one_tuple([f.feats for f in fgs], [f.grid for f in fgs])
    ch = chain(tuples, patches, nn, radius=2.0)
    pixels = torch.cat([f.pixels for f in fgs])
    src, tgt = pixels[ch.idx[:, 0]].numpy(), pixels[ch.idx[:, 2]].numpy()
    err = np.linalg.norm(transfer(homs[0], homs[2], src) - tgt, axis=1)
    within_one_patch = (err <= fgs[2].cell_px).sum() / len(fgs[0].feats)
    # measured: 0.885 of all foreground patches of the first view (0.896 of the chains,
    # 0.996 of the chains within two patches)
    assert within_one_patch > 0.8
    assert (err <= 2 * fgs[2].cell_px).mean() > 0.95
