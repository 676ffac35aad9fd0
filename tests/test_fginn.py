"""FGINN matching across views, the growing distance tables, duplicate removal."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hardnet_desc.fginn import Neighbours, fginn_match, remove_duplicates


def test_fginn_skips_the_same_point_from_another_view_as_second_neighbour():
    # Query 0's two nearest are one point seen in two views (1 px apart): Lowe's ratio (~1) would reject it;
    # FGINN compares with the nearest one far away instead. Query 1's runner-up is far away: a plain ratio
    # test, which it fails (0.89).
    desc1 = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    desc2 = np.array([[0.98, 0.1, 0], [0.97, 0.12, 0], [0.3, 0.9, 0.2], [0.35, 0.88, 0.2]])
    c1 = np.array([[10.0, 10], [50, 50]])
    c2 = np.array([[20.0, 20], [21, 20], [60, 60], [90, 60]])
    m = fginn_match(desc1, desc2, c1, c2, ratio=0.8, radius=10)
    assert m.query_idx.tolist() == [0] and m.train_idx.tolist() == [0]
    d1, d2 = np.linalg.norm(desc1[0] - desc2[0]), np.linalg.norm(desc1[0] - desc2[3])  # 3: nearest far one
    assert m.ratios[0] == pytest.approx(d1 / d2, rel=1e-5)
    # With the duplicate moved 30 px away it is a competitor, and the ratio test rejects query 0.
    c2[1] = [50, 20]
    assert len(fginn_match(desc1, desc2, c1, c2, ratio=0.8, radius=10)) == 0


def test_fginn_mutual_check_accepts_the_same_point_from_another_view():
    # Both queries are one point of image 1 (two views, 2 px apart); train 0's nearest is query 1, yet query 0's
    # match is kept (its reverse neighbour is the same point). A query elsewhere is refused.
    desc1 = np.array([[1.0, 0.05, 0], [1.0, 0.0, 0], [0.9, 0, 0.3]])
    desc2 = np.array([[1.0, 0.0, 0], [0, 1.0, 0]])
    c1 = np.array([[10.0, 10], [12, 10], [80, 80]])
    c2 = np.array([[5.0, 5], [70, 70]])
    m = fginn_match(desc1, desc2, c1, c2, ratio=None, radius=5)
    assert m.query_idx.tolist() == [0, 1] and m.train_idx.tolist() == [0, 0]
    assert fginn_match(desc1, desc2, c1, c2, ratio=None, radius=1).query_idx.tolist() == [1]


def test_neighbours_grown_in_steps_match_as_all_at_once():
    # Sets grown in three steps (rows of both, then of set 2 only, then of set 1 only) give the tables and the
    # matches of one call on the whole sets; a small first step (k < candidates) is widened as set 2 grows.
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    d1, d2 = torch.randn(700, 128, generator=gen), torch.randn(900, 128, generator=gen)
    d2[::3] = d1[:300] + 0.1 * torch.randn(300, 128, generator=gen)  # a third of set 2 has a near copy in set 1
    c1, c2 = rng.uniform(0, 500, (700, 2)), rng.uniform(0, 500, (900, 2))
    table = Neighbours(candidates=16, chunk=64)
    for n1, n2 in ((5, 10), (300, 10), (300, 600), (700, 900)):
        table.update(d1[:n1], d2[:n2])
        whole = Neighbours(candidates=16).update(d1[:n1], d2[:n2])
        assert torch.equal(table.idx, whole.idx) and torch.equal(table.col_arg, whole.col_arg)
        assert torch.allclose(table.dist, whole.dist, atol=1e-4)
    exact = torch.cdist(d1.double(), d2.double())  # the tables hold the true nearest rows and their distances
    assert torch.equal(table.idx, exact.topk(16, dim=1, largest=False).indices)
    assert torch.allclose(table.dist.double(), exact.topk(16, dim=1, largest=False).values, atol=1e-4)
    assert torch.equal(table.col_arg, exact.argmin(dim=0))
    assert torch.allclose(table.col_min.double(), exact.min(dim=0).values, atol=1e-4)
    grown, once = table.fginn(c1, c2, ratio=0.9), fginn_match(d1, d2, c1, c2, ratio=0.9)
    assert len(once) >= 250 and np.array_equal(grown.query_idx, once.query_idx)
    assert np.array_equal(grown.train_idx, once.train_idx)
    with pytest.raises(ValueError, match="grown"):
        table.update(d1[:10], d2)
    with pytest.raises(ValueError, match="centres"):
        table.fginn(c1[:10], c2)


@pytest.mark.parametrize("empty", [1, 2])
def test_neighbours_of_a_set_that_starts_empty_match_as_all_at_once(empty):
    # An image without keypoints at step 0 (a flat one) leaves its set empty; the tables must grow from there.
    gen = torch.Generator().manual_seed(1)
    d1, d2 = torch.randn(300, 128, generator=gen), torch.randn(200, 128, generator=gen)
    first = (d1[:0], d2) if empty == 1 else (d1, d2[:0])
    table = Neighbours(candidates=8, chunk=64)
    for _ in range(2):  # the second time with no new rows
        table.update(*first)
        assert len(table.fginn(np.zeros((len(first[0]), 2)), np.zeros((len(first[1]), 2)))) == 0
    table.update(d1, d2)
    whole = Neighbours(candidates=8).update(d1, d2)
    assert torch.equal(table.idx, whole.idx) and torch.equal(table.col_arg, whole.col_arg)
    assert torch.allclose(table.dist, whole.dist, atol=1e-4)


def test_remove_duplicates_keeps_the_best_of_each_group():
    p1 = np.array([[10.0, 10], [11, 10.5], [10.5, 9], [10, 10], [40, 40]])
    p2 = np.array([[50.0, 50], [51, 51], [50.5, 50], [80, 80], [70, 70]])
    # 0, 1, 2 are one correspondence (within 2 px on both sides); 3 shares only image 1's point; 4 is alone.
    keep = remove_duplicates(p1, p2, order=np.array([1, 0, 2, 3, 4]), radius=2)
    assert keep.tolist() == [False, True, False, True, True]
    assert remove_duplicates(p1, p2, radius=2).tolist() == [True, False, False, True, True]


def test_descriptors_from_a_net_and_bad_settings():
    """A net's output (requires grad) stopped in torch's mm(out=...); NaN descriptors gave 0 matches without a
    word; ratio 2 passed; candidates 0 / -1 and chunk 0 stopped in an IndexError, topk or range()."""
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (50, 2))
    d = torch.randn(50, 128, generator=torch.Generator().manual_seed(0))
    plain = fginn_match(d, d, xy, xy)
    graded = fginn_match(d.clone().requires_grad_(), d, xy, xy)
    assert len(plain) == 50 and np.array_equal(graded.train_idx, plain.train_idx)
    for kwargs, match in ((dict(ratio=2.0), r"ratio must be in \(0, 1\]"), (dict(candidates=0), "candidates must be"),
                          (dict(candidates=-1), "candidates must be"), (dict(chunk=0), "chunk must be >= 1"),
                          (dict(radius=-1.0), "radius must be a finite number >= 0")):
        with pytest.raises(ValueError, match=match):
            fginn_match(d, d, xy, xy, **kwargs)
    with pytest.raises(ValueError, match="desc1 contains NaN or inf"):
        fginn_match(d * float("nan"), d, xy, xy)


def test_remove_duplicates_names_bad_arguments():
    """radius 0, NaN points and a float order stopped in 'cannot convert float NaN to integer' or an IndexError."""
    p = np.zeros((3, 2))
    with pytest.raises(ValueError, match="radius must be a finite number > 0, got 0"):
        remove_duplicates(p, p, radius=0)
    with pytest.raises(ValueError, match="must be finite pixel positions"):
        remove_duplicates(np.full((3, 2), np.nan), p)
    with pytest.raises(ValueError, match=r"order must be a permutation of range\(3\)"):
        remove_duplicates(p, p, order=np.arange(3.0))
