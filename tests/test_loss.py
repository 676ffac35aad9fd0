import math

import pytest
import torch

from hardnet_desc.train.loss import distance_matrix, hardest_in_batch_loss

# Hand example, 3 pairs in 2D:
#   a0=(0,0) p0=(1,0)   d00 = 1
#   a1=(0,4) p1=(0,3)   d11 = 1
#   a2=(4,0) p2=(4,3)   d22 = 3
# off-diagonal d(a_i, p_j):
#   d01 = 3,      d02 = 5
#   d10 = sqrt17, d12 = sqrt17
#   d20 = 3,      d21 = 5
A = torch.tensor([[0.0, 0.0], [0.0, 4.0], [4.0, 0.0]])
P = torch.tensor([[1.0, 0.0], [0.0, 3.0], [4.0, 3.0]])
S17 = math.sqrt(17)


def loss(a, p, **kw):
    return hardest_in_batch_loss(a, p, **kw).item()


def test_distance_matrix():
    expected = torch.tensor([[1, 3, 5], [S17, 1, S17], [3, 5, 3]], dtype=torch.float32)
    torch.testing.assert_close(distance_matrix(A, P), expected, atol=1e-5, rtol=0)


def test_hand_example_without_swap():
    # margin 3, row minima over j != i: 3, sqrt17, 3
    # hinges: 3+1-3 = 1, 3+1-sqrt17 < 0 -> 0, 3+3-3 = 3  => loss 4/3
    assert loss(A, P, margin=3.0, anchor_swap=False) == pytest.approx(4 / 3, abs=1e-5)


def test_anchor_swap_takes_column_minimum():
    # column minima (p_i vs a_j, j != i): col0 min(sqrt17, 3) = 3,
    # col1 min(3, 5) = 3, col2 min(5, sqrt17) = sqrt17.
    # Row 1 now gets min(sqrt17, 3) = 3: hinge 3+1-3 = 1 => (1+1+3)/3 = 5/3
    assert loss(A, P, margin=3.0, anchor_swap=True) == pytest.approx(5 / 3, abs=1e-5)


def test_hardest_negative_is_picked():
    # Move p1 to (0,2): d11 = 2, d01 = 2, d21 = sqrt20; column 1 unchanged otherwise.
    # no swap, margin 3: row0 min(2, 5) = 2 -> 3+1-2 = 2
    #                    row1 min(sqrt17, sqrt17) -> 3+2-sqrt17
    #                    row2 min(3, sqrt20) = 3 -> 3+3-3 = 3
    p = P.clone()
    p[1] = torch.tensor([0.0, 2.0])
    expected = (2 + (5 - S17) + 3) / 3
    assert loss(A, p, margin=3.0, anchor_swap=False) == pytest.approx(expected, abs=1e-5)


def test_diagonal_is_excluded():
    # a=(0,0),(3,0); p=(0,1),(3,1): d00 = d11 = 1, off-diagonal sqrt10.
    # If the diagonal counted, the negative would be 1 and the loss 4.
    a = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    p = torch.tensor([[0.0, 1.0], [3.0, 1.0]])
    assert loss(a, p, margin=4.0) == pytest.approx(4 + 1 - math.sqrt(10), abs=1e-5)


def test_near_duplicates_are_excluded():
    # a0=(0,0) p0=(0,1); a1=(5,0) p1=(0,0) == a0: d01 = 0 (duplicate, skipped).
    # no swap: row0 has no valid negative -> 0; row1: 1+5-sqrt26.
    a = torch.tensor([[0.0, 0.0], [5.0, 0.0]])
    p = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    expected = (1 + 5 - math.sqrt(26)) / 2
    assert loss(a, p, anchor_swap=False) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("offset, excluded", [(0.007, True), (0.009, False)])
def test_near_duplicate_threshold(offset, excluded):
    # d01 = offset; the other negative d10 = sqrt(2^2 + 1) is far.
    a = torch.tensor([[0.0, 0.0], [2.0, 1.0]])
    p = torch.tensor([[0.0, 1.0], [offset, 0.0]])
    d = distance_matrix(a, p)
    row0 = 0.0 if excluded else 1 + 1 - d[0, 1].item()
    row1 = max(0.0, 1 + d[1, 1].item() - d[1, 0].item())
    assert loss(a, p, anchor_swap=False) == pytest.approx((row0 + row1) / 2, abs=1e-5)


def test_average_mode():
    # no swap, margin 3, hinge per negative then mean per row:
    # row0: (3+1-3, 3+1-5 -> 0) -> 0.5; row1: both 3+1-sqrt17 < 0 -> 0;
    # row2: (3+3-3, 3+3-5) = (3, 1) -> 2.  Mean = 2.5 / 3
    assert loss(A, P, margin=3.0, anchor_swap=False, reduction_mode="average") == pytest.approx(
        2.5 / 3, abs=1e-5
    )


def test_random_mode():
    g = torch.Generator().manual_seed(0)
    a, p = torch.randn(16, 8), torch.randn(16, 8)
    hardest = loss(a, p)
    rand = loss(a, p, reduction_mode="random", generator=g)
    assert 0 <= rand <= hardest  # any negative is at most as hard as the hardest
    # seeded -> reproducible
    r1 = loss(a, p, reduction_mode="random", generator=torch.Generator().manual_seed(3))
    r2 = loss(a, p, reduction_mode="random", generator=torch.Generator().manual_seed(3))
    assert r1 == r2
    # with 2 pairs the only valid negative is the off-diagonal one: same as 'min'
    a2 = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    p2 = torch.tensor([[0.0, 1.0], [3.0, 1.0]])
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        assert loss(a2, p2, margin=4.0, reduction_mode="random", generator=g) == pytest.approx(
            loss(a2, p2, margin=4.0), abs=1e-6
        )


def test_matches_loop_reference():
    torch.manual_seed(0)
    a, p = torch.randn(10, 4), torch.randn(10, 4)
    d = torch.cdist(a.double(), p.double())
    total = 0.0
    for i in range(10):
        negs = [d[i, j] for j in range(10) if j != i] + [d[j, i] for j in range(10) if j != i]
        total += max(0.0, 1.0 + d[i, i].item() - min(negs).item())
    assert loss(a, p) == pytest.approx(total / 10, abs=1e-5)


@pytest.mark.parametrize("mode", ["min", "average", "random"])
def test_gradients_finite(mode):
    a = torch.nn.functional.normalize(torch.randn(8, 16), dim=1).requires_grad_()
    p = torch.nn.functional.normalize(torch.randn(8, 16), dim=1).requires_grad_()
    hardest_in_batch_loss(a, p, reduction_mode=mode).backward()
    assert a.grad is not None and torch.isfinite(a.grad).all() and torch.isfinite(p.grad).all()


def test_gradients_finite_when_identical():
    # d(a_i, p_i) = 0: a plain sqrt would give an infinite/NaN gradient.
    x = torch.nn.functional.normalize(torch.randn(6, 16), dim=1)
    a, p = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = hardest_in_batch_loss(a, p, margin=5.0)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(a.grad).all() and torch.isfinite(p.grad).all()
    assert a.grad.abs().sum() > 0


def test_bf16_autocast():
    a, p = torch.randn(32, 128), torch.randn(32, 128)
    ref = hardest_in_batch_loss(a, p)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = hardest_in_batch_loss(a.bfloat16(), p.bfloat16())
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(ref.item(), rel=2e-2)


def test_bad_input():
    with pytest.raises(ValueError, match="anchor and positive"):
        hardest_in_batch_loss(torch.zeros(4, 8), torch.zeros(4, 7))
    with pytest.raises(ValueError, match="at least 2"):
        hardest_in_batch_loss(torch.zeros(1, 8), torch.zeros(1, 8))
    with pytest.raises(ValueError, match="reduction_mode"):
        hardest_in_batch_loss(A, P, reduction_mode="max")


def test_anchor_swap_keeps_an_entry_excluded_one_way_only():
    # a0=(0,0) p0=(0,1); a1=(5,0) p1=(0,0) == a0: d01 = 0 is a near-duplicate, d10 = sqrt26 is not.
    # With the swap, entry (0, 1) takes min(d01 excluded, d10) = sqrt26 and stays valid (excluded only
    # if both directions are); so does (1, 0). 'average', margin 6: row0 6+1-sqrt26, row1 6+5-sqrt26.
    a = torch.tensor([[0.0, 0.0], [5.0, 0.0]])
    p = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    s26 = math.sqrt(26)
    expected = ((6 + 1 - s26) + (6 + 5 - s26)) / 2
    assert loss(a, p, margin=6.0, anchor_swap=True, reduction_mode="average") == pytest.approx(expected, abs=1e-5)
