import numpy as np
import pytest
import torch

from hardnet_desc.fpr95 import fpr95, fpr_at_recall, pair_distances


def labels(n_pos, n_neg):
    return np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)]


def test_perfect_separation():
    d = np.r_[np.linspace(0, 1, 20), np.linspace(2, 3, 10)]
    assert fpr95(d, labels(20, 10)) == 0.0


def test_fully_inverted():
    d = np.r_[np.linspace(2, 3, 20), np.linspace(0, 1, 10)]
    assert fpr95(d, labels(20, 10)) == 1.0


def test_hand_example_three_tenths():
    # 20 positives at 0.1 .. 2.0; 95% recall needs ceil(0.95 * 20) = 19 of
    # them, so threshold = 1.9. Negatives at or below 1.9: 0.5, 1.0 and 1.9
    # (tie counts as accepted) -> 3 / 10.
    pos = np.arange(1, 21) / 10
    neg = np.array([0.5, 1.0, 1.9, 1.95, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0])
    d = np.r_[pos, neg]
    assert fpr95(d, labels(20, 10)) == pytest.approx(0.3)
    # same answer whatever the order and with 0/1 labels
    perm = np.random.default_rng(0).permutation(30)
    assert fpr95(d[perm], labels(20, 10)[perm].astype(int)) == pytest.approx(0.3)


def test_ties_between_positives():
    # All positives tie at 1.0: the threshold is 1.0 and negatives at 1.0 count.
    d = np.r_[np.ones(10), [0.5, 1.0, 1.0, 1.5]]
    assert fpr95(d, labels(10, 4)) == pytest.approx(0.75)


def test_recall_rounding_and_edges():
    pos = np.arange(1, 101, dtype=float)  # 1 .. 100
    neg = pos + 0.5  # 1.5 .. 100.5
    d, m = np.r_[pos, neg], labels(100, 100)
    # 0.55 * 100 = 55.00000000000001 in floating point: still threshold 55,
    # accepting negatives 1.5 .. 54.5
    assert fpr_at_recall(d, m, recall=0.55) == pytest.approx(0.54)
    assert fpr_at_recall(d, m, recall=1.0) == pytest.approx(0.99)  # threshold 100
    assert fpr_at_recall(d, m, recall=0.001) == pytest.approx(0.0)  # threshold 1


def test_errors():
    with pytest.raises(ValueError, match="no matching"):
        fpr95([1.0, 2.0], [False, False])
    with pytest.raises(ValueError, match="no non-matching"):
        fpr95([1.0, 2.0], [True, True])
    with pytest.raises(ValueError, match="NaN"):
        fpr95([1.0, np.nan], [True, False])
    with pytest.raises(ValueError, match="length"):
        fpr95([1.0, 2.0, 3.0], [True, False])
    with pytest.raises(ValueError, match="recall"):
        fpr_at_recall([1.0, 2.0], [True, False], recall=0.0)
    with pytest.raises(ValueError, match="0 and 1"):
        fpr95([1.0, 2.0], [2, 0])


def test_pair_distances():
    desc = np.array([[0, 0], [3, 4], [1, 0]], dtype=np.float32)
    d = pair_distances(desc, np.array([0, 1, 2]), np.array([1, 2, 2]))
    np.testing.assert_allclose(d, [5.0, np.sqrt(4 + 16), 0.0], rtol=1e-6)
    assert d.dtype == np.float32
    np.testing.assert_allclose(pair_distances(torch.from_numpy(desc), [0, 1, 2], [1, 2, 2], chunk=2), d)
    with pytest.raises(IndexError, match="idx2"):
        pair_distances(desc, [0], [3])
