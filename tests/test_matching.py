"""Tests for hardnet_desc.matching, checked against cv2.BFMatcher(NORM_L2)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from hardnet_desc.matching import DescriptorMatcher, Matches, match_descriptors

DATA_DIR = Path(__file__).resolve().parents[1] / "examples" / "data"


def _synthetic_pair() -> tuple[np.ndarray, np.ndarray]:
    """A deterministic textured image and a rotated, scaled, shifted copy."""
    rng = np.random.default_rng(0)
    h, w = 480, 640
    img = np.full((h, w), 128, np.uint8)
    for _ in range(300):
        color = int(rng.integers(0, 256))
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        kind = rng.integers(3)
        if kind == 0:
            cv2.circle(img, (x, y), int(rng.integers(3, 40)), color, int(rng.choice([-1, 2])))
        elif kind == 1:
            cv2.rectangle(img, (x, y), (x + int(rng.integers(5, 60)), y + int(rng.integers(5, 60))), color, -1)
        else:
            cv2.line(img, (x, y), (int(rng.integers(0, w)), int(rng.integers(0, h))), color, 2)
    noise = cv2.GaussianBlur(rng.normal(0, 25, (h, w)).astype(np.float32), (0, 0), 2)
    img = cv2.GaussianBlur(np.clip(img + noise, 0, 255).astype(np.uint8), (0, 0), 1.0)
    warp = cv2.getRotationMatrix2D((w / 2, h / 2), 20, 0.85)
    warp[:, 2] += (15, -10)
    return img, cv2.warpAffine(img, warp, (w, h), borderMode=cv2.BORDER_REFLECT)


def _load_pair() -> tuple[np.ndarray, np.ndarray]:
    """The bundled photo pair if present (examples/data/*.jpg), else synthetic."""
    paths = sorted(DATA_DIR.glob("*.jpg"))[:2]
    if len(paths) < 2:
        return _synthetic_pair()
    imgs = []
    for p in paths:
        img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        scale = 640 / max(img.shape)  # keep SIFT and the tests fast
        imgs.append(cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else img)
    return imgs[0], imgs[1]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # ~1000 descriptors: threads add only sync overhead, which is large on a
    # busy machine. Restored afterwards for the other test modules.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def sift_pair():
    img1, img2 = _load_pair()
    sift = cv2.SIFT_create(nfeatures=1000)
    kp1, desc1 = sift.detectAndCompute(img1, None)
    kp2, desc2 = sift.detectAndCompute(img2, None)
    assert len(kp1) > 300 and len(kp2) > 300
    return img1, kp1, desc1, img2, kp2, desc2


@pytest.fixture(scope="module", params=["raw", "l2"])
def descs(request, sift_pair):
    """Raw SIFT (integer-valued float32) and L2-normalised SIFT."""
    _, _, desc1, _, _, desc2 = sift_pair
    if request.param == "l2":
        desc1 = desc1 / np.linalg.norm(desc1, axis=1, keepdims=True)
        desc2 = desc2 / np.linalg.norm(desc2, axis=1, keepdims=True)
    return desc1, desc2


def _cv2_ratio(desc1, desc2, ratio=0.8):
    """The usual OpenCV recipe: [(query, train, distance)] passing the ratio test."""
    knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(desc1, desc2, k=2)
    pairs = (p for p in knn if len(p) == 2)  # OpenCV returns one neighbour when N2 == 1
    return [(m.queryIdx, m.trainIdx, m.distance) for m, n in pairs if m.distance < ratio * n.distance]


def _dists(knn):
    return [[m.distance for m in row] for row in knn]


def _assert_same(matches: Matches, ref: list[tuple[int, int, float]]):
    ref_arr = np.array(ref, dtype=np.float64).reshape(-1, 3)
    assert len(matches) == len(ref)
    np.testing.assert_array_equal(matches.pairs, ref_arr[:, :2].astype(np.int64))
    np.testing.assert_allclose(matches.distances, ref_arr[:, 2], rtol=0, atol=1e-4)


def test_ratio_test_matches_opencv(descs):
    desc1, desc2 = descs
    ref = _cv2_ratio(desc1, desc2)
    assert len(ref) > 100  # the pair must actually match
    m = match_descriptors(desc1, desc2, ratio=0.8, mutual=False)
    _assert_same(m, ref)
    assert m.query_idx.dtype == np.int64 and m.train_idx.dtype == np.int64
    assert m.distances.dtype == np.float32 and m.ratios.dtype == np.float32
    assert np.all(m.ratios < 0.8) and np.all(m.ratios > 0)


def test_mutual_matches_opencv_cross_check(descs):
    desc1, desc2 = descs
    # Reverse nearest neighbour of every train row, from OpenCV.
    rev = {m.queryIdx: m.trainIdx for m in cv2.BFMatcher(cv2.NORM_L2).match(desc2, desc1)}
    ref = [(q, t, d) for q, t, d in _cv2_ratio(desc1, desc2) if rev[t] == q]
    assert 0 < len(ref) <= len(_cv2_ratio(desc1, desc2))
    _assert_same(match_descriptors(desc1, desc2, ratio=0.8, mutual=True), ref)


def test_matcher_cross_check_equals_bfmatcher(descs):
    desc1, desc2 = descs
    ref = cv2.BFMatcher(cv2.NORM_L2, crossCheck=True).match(desc1, desc2)
    ours = DescriptorMatcher(mutual=True).match(desc1, desc2)
    assert 0 < len(ours) < len(desc1)
    assert [(m.queryIdx, m.trainIdx) for m in ours] == [(m.queryIdx, m.trainIdx) for m in ref]
    np.testing.assert_allclose([m.distance for m in ours], [m.distance for m in ref], atol=1e-4)


def test_matcher_match_and_knn_equal_bfmatcher(descs):
    desc1, desc2 = descs
    bf, ours = cv2.BFMatcher(cv2.NORM_L2), DescriptorMatcher()
    ref, got = bf.match(desc1, desc2), ours.match(desc1, desc2)
    assert [(m.queryIdx, m.trainIdx) for m in got] == [(m.queryIdx, m.trainIdx) for m in ref]

    knn_ref, knn = bf.knnMatch(desc1, desc2, k=2), ours.knnMatch(desc1, desc2, k=2)
    assert len(knn) == len(desc1) and all(len(row) == 2 for row in knn)
    assert [[(m.queryIdx, m.trainIdx) for m in row] for row in knn] == [
        [(m.queryIdx, m.trainIdx) for m in row] for row in knn_ref
    ]
    np.testing.assert_allclose(_dists(knn), _dists(knn_ref), atol=1e-4)

    # k > 2 takes the topk path: same sorted distances as OpenCV.
    knn5, knn5_ref = ours.knnMatch(desc1, desc2, k=5), bf.knnMatch(desc1, desc2, k=5)
    assert all(len(row) == 5 for row in knn5)
    np.testing.assert_allclose(_dists(knn5), _dists(knn5_ref), atol=1e-4)
    assert [row[0].trainIdx for row in knn5] == [row[0].trainIdx for row in knn_ref]

    # The knnMatch output feeds the usual ratio-test loop.
    good = [(m.queryIdx, m.trainIdx, m.distance) for m, n in knn if m.distance < 0.8 * n.distance]
    _assert_same(match_descriptors(desc1, desc2, ratio=0.8, mutual=False), good)


@pytest.mark.parametrize("seed", [0, 1])
def test_cross_check_on_ties_equals_bfmatcher(seed):
    # Binary-like descriptors: only 32 distinct rows, so most rows of each side have exact duplicates.
    # Of several query rows equally near a train row, BFMatcher(crossCheck=True) keeps one match per
    # train row (its first reverse neighbour): 32 matches here, not one per query row.
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2, (200, 5)).astype(np.float32)
    b = rng.integers(0, 2, (300, 5)).astype(np.float32)
    ref = cv2.BFMatcher(cv2.NORM_L2, crossCheck=True).match(a, b)
    ours = DescriptorMatcher(mutual=True).match(a, b)
    assert len(ref) == 32
    assert [(m.queryIdx, m.trainIdx) for m in ours] == [(m.queryIdx, m.trainIdx) for m in ref]
    assert len({m.trainIdx for m in ours}) == len(ours)
    got = match_descriptors(a, b, ratio=None, mutual=True)
    assert list(zip(got.query_idx, got.train_idx)) == [(m.queryIdx, m.trainIdx) for m in ref]


def test_ties_ordered_like_opencv():
    # Binary descriptors: many exactly equal distances, spread over several
    # column blocks of the top-2 search. OpenCV orders ties by train index.
    rng = np.random.default_rng(3)
    a = rng.integers(0, 2, (200, 5)).astype(np.float32)
    b = rng.integers(0, 2, (300, 5)).astype(np.float32)
    bf = cv2.BFMatcher(cv2.NORM_L2)
    ours, ref = DescriptorMatcher().knnMatch(a, b, k=2), bf.knnMatch(a, b, k=2)
    assert [[m.trainIdx for m in row] for row in ours] == [[m.trainIdx for m in row] for row in ref]
    assert [m.trainIdx for m in DescriptorMatcher().match(a, b)] == [m.trainIdx for m in bf.match(a, b)]
    assert len(match_descriptors(a, b, ratio=1.0, mutual=False)) == len(_cv2_ratio(a, b, ratio=1.0))


def test_chunking_does_not_change_result(descs):
    desc1, desc2 = descs
    for kwargs in ({"ratio": 0.8, "mutual": True}, {"ratio": None, "mutual": False}):
        big = match_descriptors(desc1, desc2, chunk_size=100_000, **kwargs)
        tiny = match_descriptors(desc1, desc2, chunk_size=61, **kwargs)
        for field in ("query_idx", "train_idx", "distances", "ratios"):
            np.testing.assert_array_equal(getattr(tiny, field), getattr(big, field))
    assert len(match_descriptors(desc1, desc2, ratio=None, mutual=False)) == len(desc1)


def test_dmatches_draw(sift_pair):
    img1, kp1, desc1, img2, kp2, desc2 = sift_pair
    m = match_descriptors(desc1, desc2)
    dms = m.to_dmatches()
    assert len(dms) == len(m) > 0 and all(isinstance(d, cv2.DMatch) for d in dms)
    assert [(d.queryIdx, d.trainIdx, d.imgIdx) for d in dms] == [(q, t, 0) for q, t in m.pairs.tolist()]
    np.testing.assert_allclose([d.distance for d in dms], m.distances, rtol=1e-6)
    canvas = cv2.drawMatches(img1, kp1, img2, kp2, dms, None)
    assert canvas.shape[:2] == (max(img1.shape[0], img2.shape[0]), img1.shape[1] + img2.shape[1])
    knn = DescriptorMatcher().knnMatch(desc1, desc2, k=2)
    assert cv2.drawMatchesKnn(img1, kp1, img2, kp2, knn[:50], None) is not None
    assert m.pairs.shape == (len(m), 2) and m.pairs.dtype == np.int64


def test_input_types_and_dtypes(sift_pair):
    # SIFT values are integers <= 255: exact in float16 and bfloat16 too.
    _, _, desc1, _, _, desc2 = sift_pair
    ref = match_descriptors(desc1, desc2)
    for conv in (
        lambda x: x.astype(np.float64),
        lambda x: x.astype(np.float16),
        lambda x: torch.from_numpy(x),
        lambda x: torch.from_numpy(x).to(torch.bfloat16),
        lambda x: x.astype(">f4"),  # big-endian: torch stopped at the byte order
        lambda x: torch.from_numpy(x).requires_grad_(),  # a descriptor net's output: autograd stopped the product
    ):
        m = match_descriptors(conv(desc1), conv(desc2))
        np.testing.assert_array_equal(m.pairs, ref.pairs)
        np.testing.assert_array_equal(m.distances, ref.distances)


def test_near_identical_vectors_distance_precision():
    # |a|^2 + |b|^2 - 2ab loses ~1e-3 here; distances must still match OpenCV.
    rng = np.random.default_rng(1)
    a = rng.standard_normal((300, 128)).astype(np.float32)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b = a + rng.normal(0, 1e-6, a.shape).astype(np.float32)
    m = match_descriptors(a, b, ratio=0.8)
    _assert_same(m, _cv2_ratio(a, b))
    assert len(m) == 300 and m.distances.max() < 1e-4
    exact = match_descriptors(a, a, ratio=None)
    assert np.all(exact.distances == 0) and np.array_equal(exact.query_idx, exact.train_idx)


def test_max_distance(descs):
    desc1, desc2 = descs
    full = match_descriptors(desc1, desc2, ratio=None, mutual=False)
    limit = float(np.median(full.distances))
    m = match_descriptors(desc1, desc2, ratio=None, mutual=False, max_distance=limit)
    keep = full.distances <= limit
    np.testing.assert_array_equal(m.pairs, full.pairs[keep])
    assert 0 < len(m) < len(full)


@pytest.mark.parametrize("n1, n2", [(0, 5), (5, 0), (0, 0)])
def test_empty_inputs(n1, n2):
    a, b = np.zeros((n1, 8), np.float32), np.ones((n2, 8), np.float32)
    m = match_descriptors(a, b)
    assert len(m) == 0 and m.pairs.shape == (0, 2) and m.to_dmatches() == []
    assert DescriptorMatcher().match(a, b) == []
    assert DescriptorMatcher().knnMatch(a, b, k=2) == [[] for _ in range(n1)]
    # cv2's detectAndCompute returns None when it finds no keypoints.
    assert len(match_descriptors(None, b)) == 0 and len(match_descriptors(a, None)) == 0


def test_single_train_descriptor():
    rng = np.random.default_rng(2)
    a, b = rng.random((6, 16), dtype=np.float32), rng.random((1, 16), dtype=np.float32)
    # No second neighbour: the ratio test cannot pass (as in the knnMatch loop).
    assert len(match_descriptors(a, b, ratio=0.8, mutual=False)) == 0
    assert len(_cv2_ratio(a, b)) == 0
    m = match_descriptors(a, b, ratio=None, mutual=False)
    assert len(m) == 6 and np.all(m.train_idx == 0) and np.all(np.isnan(m.ratios))
    m = match_descriptors(a, b, ratio=None, mutual=True)
    assert m.query_idx.tolist() == [int(np.argmin(np.linalg.norm(a - b, axis=1)))]
    knn = DescriptorMatcher().knnMatch(a, b, k=2)
    assert [len(row) for row in knn] == [1] * 6  # like OpenCV
    assert [len(row) for row in cv2.BFMatcher(cv2.NORM_L2).knnMatch(a, b, k=2)] == [1] * 6


def test_errors():
    a = np.zeros((5, 128), np.float32)
    with pytest.raises(ValueError, match=r"\(5, 128\).*\(4, 64\)"):
        match_descriptors(a, np.zeros((4, 64), np.float32))
    with pytest.raises(ValueError, match=r"\(0, 128\).*\(0, 64\)"):
        match_descriptors(a[:0], np.zeros((0, 64), np.float32))
    for bad in (np.nan, np.inf, -np.inf):
        b = np.ones((4, 128), np.float32)
        b[2, 7] = bad
        with pytest.raises(ValueError, match="NaN or inf"):
            match_descriptors(a, b)
        with pytest.raises(ValueError, match="NaN or inf"):
            match_descriptors(torch.from_numpy(b), a)
    with pytest.raises(ValueError, match="shape"):
        match_descriptors(a[0], a)
    with pytest.raises(ValueError, match="shape"):
        match_descriptors(a, a[None])
    for ratio in (0.0, -0.5, 1.01, float("nan")):
        with pytest.raises(ValueError, match="ratio"):
            match_descriptors(a, a, ratio=ratio)
    with pytest.raises(ValueError, match="ratio"):
        DescriptorMatcher(ratio=2.0)
    assert len(match_descriptors(a[:2] + np.eye(2, 128, dtype=np.float32), a[:2], ratio=1.0, mutual=False)) == 0
    with pytest.raises(ValueError, match="chunk_size"):
        match_descriptors(a, a, chunk_size=0)
    with pytest.raises(ValueError, match="crossCheck"):
        DescriptorMatcher(mutual=True).knnMatch(a, a, k=2)
    with pytest.raises(TypeError):
        match_descriptors([[1.0, 2.0]], [[1.0, 2.0]])


def test_matcher_ratio_is_applied(descs):
    """DescriptorMatcher(ratio=...).match equals the OpenCV ratio-test loop, and differs from no ratio."""
    desc1, desc2 = descs
    got = [(m.queryIdx, m.trainIdx) for m in DescriptorMatcher(ratio=0.8).match(desc1, desc2)]
    assert got == [(q, t) for q, t, _ in _cv2_ratio(desc1, desc2)]
    assert len(got) < len(DescriptorMatcher().match(desc1, desc2))


def test_matcher_knn_mutual_rows(descs):
    """knnMatch(k=1) with crossCheck: row i holds query i's mutual match or nothing, like BFMatcher."""
    desc1, desc2 = descs
    ours = DescriptorMatcher(mutual=True).knnMatch(desc1, desc2, k=1)
    ref = cv2.BFMatcher(cv2.NORM_L2, crossCheck=True).knnMatch(desc1, desc2, k=1)
    assert len(ours) == len(ref) == len(desc1)
    assert [[(m.queryIdx, m.trainIdx) for m in row] for row in ours] == [
        [(m.queryIdx, m.trainIdx) for m in row] for row in ref
    ]
    assert 0 < sum(map(len, ours)) < len(desc1)  # some rows are empty, so a shift would show


@pytest.mark.parametrize("scale", [2e19, 1e20, 1e30])
def test_huge_norms_match_like_opencv(scale):
    """|a|^2 overflows float32 above ~1.8e19; OpenCV sums squared differences and does not overflow."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((200, 128)).astype(np.float32)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b = a[rng.permutation(200)] + 0.01 * rng.standard_normal((200, 128)).astype(np.float32)
    a, b = a * np.float32(scale), b * np.float32(scale)
    ref, ref_scale = cv2.BFMatcher(cv2.NORM_L2, crossCheck=True).match(a, b), scale
    if not ref:  # OpenCV itself overflows (1e30): ours still finds the matches of the unscaled sets
        ref, ref_scale = cv2.BFMatcher(cv2.NORM_L2, crossCheck=True).match(a / scale, b / scale), 1.0
    m = match_descriptors(a, b, ratio=None, mutual=True)
    assert len(ref) == 200
    np.testing.assert_array_equal(m.pairs, [(r.queryIdx, r.trainIdx) for r in ref])
    np.testing.assert_allclose(m.distances / scale, [r.distance / ref_scale for r in ref], rtol=1e-5)
    knn = DescriptorMatcher().knnMatch(a, b, k=2)
    assert [row[0].trainIdx for row in knn] == [r.trainIdx for r in ref]
    assert np.isfinite(_dists(knn)).all()


def test_unavailable_device_is_the_descriptor_error():
    from hardnet_desc.core.device import resolve_device

    a = np.zeros((5, 8), np.float32)
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError) as expected:
        resolve_device("cuda")
    with pytest.raises(ValueError) as got:
        match_descriptors(a, a, device="cuda")
    assert str(got.value) == str(expected.value) == "device='cuda' was requested but CUDA is not available"
    with pytest.raises(ValueError, match="CUDA is not available"):
        DescriptorMatcher(device="cuda").match(a, a)
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        match_descriptors(a, a, device="gpu")


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _assert_identical(got: Matches, ref: Matches):
    for field in ("query_idx", "train_idx", "distances", "ratios"):
        np.testing.assert_array_equal(getattr(got, field), getattr(ref, field), err_msg=field)


def _ambiguous_sets(n: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Unit descriptors whose true match is about as near as the nearest of n - 1 others: many near-ties."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 128)).astype(np.float32)
    y = x[rng.permutation(n)] + 3.0 * rng.standard_normal((n, 128)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), y / np.linalg.norm(y, axis=1, keepdims=True)


def _binary_sets(seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Binary-like descriptors: 32 distinct rows, so most rows have exact duplicates (exactly tied distances)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2, (200, 5)).astype(np.float32), rng.integers(0, 2, (300, 5)).astype(np.float32)


def _round_the_product_differently(monkeypatch, seed: int) -> None:
    """Make the matrix product's values round as another device's might (a GPU sums in another order):
    each value times (1 + 1e-5 u), u uniform in [-1, 1]. That is ten times the typical float32 error of
    the product, within the bound the matcher assumes (_product_slack)."""
    from hardnet_desc import matching

    product, gen = matching.sq_dist_chunks, torch.Generator().manual_seed(seed)

    def noisy(*args, **kwargs):
        for start, d in product(*args, **kwargs):
            d.mul_(1 + 1e-5 * (2 * torch.rand(d.shape, generator=gen) - 1))
            yield start, d

    monkeypatch.setattr(matching, "sq_dist_chunks", noisy)


@pytest.mark.parametrize("seed", [0, 1])
def test_results_do_not_depend_on_the_products_rounding(monkeypatch, seed):
    """Near-ties (4k x 4k ambiguous unit descriptors) and exact ties (binary ones) are decided by exact
    distances: a product that rounds differently, as on a GPU, gives the same matches, distances, ratios
    and knnMatch lists, whatever the chunks."""
    x, y = _ambiguous_sets(4000)
    a, b = _binary_sets()
    cases = [(x, y, {"ratio": None, "mutual": True}), (x, y, {"ratio": None, "mutual": False}),
             (a, b, {"ratio": None, "mutual": True}), (a, b, {"ratio": None, "mutual": False})]
    refs = [match_descriptors(d1, d2, **kwargs) for d1, d2, kwargs in cases]
    assert len(refs[0]) > 1000 and len(refs[2]) == 32
    knn_refs = [DescriptorMatcher().knnMatch(d1, d2, k=2) for d1, d2 in ((x[:1000], y), (a, b))]
    _round_the_product_differently(monkeypatch, seed)
    for (d1, d2, kwargs), ref in zip(cases, refs, strict=True):
        _assert_identical(match_descriptors(d1, d2, chunk_size=1500, **kwargs), ref)
    for (d1, d2), ref in zip(((x[:1000], y), (a, b)), knn_refs, strict=True):
        got = DescriptorMatcher().knnMatch(d1, d2, k=2)
        assert [[(m.trainIdx, m.distance) for m in row] for row in got] == \
            [[(m.trainIdx, m.distance) for m in row] for row in ref]
    # Exact ties keep OpenCV's cross-check rule (lowest query, lowest train index).
    cross = cv2.BFMatcher(cv2.NORM_L2, crossCheck=True).match(a, b)
    assert [(m.queryIdx, m.trainIdx) for m in DescriptorMatcher(mutual=True).match(a, b)] == \
        [(m.queryIdx, m.trainIdx) for m in cross]


def test_tf32_matmuls_give_the_same_results(monkeypatch):
    """With TF32 allowed (torch.set_float32_matmul_precision("high"), as on a GPU), the product's error
    grows to ~2^-10 of its terms; the matcher widens its bound and the results stay the same (without
    the widening, errors of 3 * 2^-10 of each value change them)."""
    from hardnet_desc import matching

    x, y = _ambiguous_sets(1000)
    refs = [match_descriptors(x, y, ratio=None, mutual=mutual) for mutual in (True, False)]
    product, gen = matching.sq_dist_chunks, torch.Generator().manual_seed(0)

    def tf32_like(*args, **kwargs):
        for start, d in product(*args, **kwargs):
            d.mul_(1 + 3 * 2.0**-10 * (2 * torch.rand(d.shape, generator=gen) - 1))
            yield start, d

    monkeypatch.setattr(matching, "sq_dist_chunks", tf32_like)
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        for mutual, ref in zip((True, False), refs, strict=True):
            _assert_identical(match_descriptors(x, y, ratio=None, mutual=mutual), ref)
    finally:
        torch.set_float32_matmul_precision(precision)


@pytest.mark.parametrize("chunk_size", [None, 37])
def test_matches_are_the_exact_nearest_neighbours(chunk_size):
    """Against a brute-force float64 search: nearest, second nearest (via ratios) and the cross-check's
    reverse nearest, lowest index first on ties, on near-ties (ambiguous sets) and on exact ties
    (ternary descriptors, many duplicates), whatever the chunks."""
    rng = np.random.default_rng(5)
    x, y = _ambiguous_sets(1000, seed=5)
    a, b = rng.integers(0, 3, (700, 6)).astype(np.float32), rng.integers(0, 3, (900, 6)).astype(np.float32)
    for d1, d2 in ((x, y), (a, b)):
        sq = np.stack([((d2 - row.astype(np.float64)) ** 2).sum(axis=1) for row in d1])  # (N1, N2)
        order = np.argsort(sq, axis=1, kind="stable")[:, :2]
        dist = np.sqrt(np.take_along_axis(sq, order, axis=1)).astype(np.float32)
        rows = np.arange(len(d1))
        for mutual in (False, True):
            q = rows[sq.argmin(axis=0)[order[:, 0]] == rows] if mutual else rows
            m = match_descriptors(d1, d2, ratio=None, mutual=mutual, chunk_size=chunk_size)
            np.testing.assert_array_equal(m.query_idx, q)
            np.testing.assert_array_equal(m.train_idx, order[q, 0])
            np.testing.assert_allclose(m.distances, dist[q, 0], rtol=1e-6)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratios = np.where(dist[q, 0] == dist[q, 1], 1, dist[q, 0] / dist[q, 1])
            np.testing.assert_allclose(m.ratios, ratios, rtol=1e-6)
        assert 0 < len(q) < len(d1)


def test_small_train_sets_and_all_duplicates():
    """One to three train rows (fewer than the candidates), and every row the same (all distances tied)."""
    a, b = _binary_sets()
    for n2 in (1, 2, 3):
        for mutual in (True, False):
            m = match_descriptors(a, b[:n2], ratio=None, mutual=mutual)
            d = np.linalg.norm(a[:, None] - b[None, :n2], axis=2)
            nearest = d.argmin(axis=1)  # lowest index on ties
            if mutual:
                q = np.arange(len(a))[d.argmin(axis=0)[nearest] == np.arange(len(a))]
            else:
                q = np.arange(len(a))
            np.testing.assert_array_equal(m.query_idx, q)
            np.testing.assert_array_equal(m.train_idx, nearest[q])
    same = np.ones((300, 16), np.float32)
    m = match_descriptors(same, same[:250], ratio=None, mutual=True)
    assert m.query_idx.tolist() == [0] and m.train_idx.tolist() == [0]
    m = match_descriptors(same, same[:250], ratio=None, mutual=False)
    assert np.all(m.train_idx == 0) and np.all(m.ratios == 1) and len(m) == 300


def test_exact_distances_are_float64_sums():
    """Match distances: float64 sums of the squared differences, rounded once (the same bits on every device)."""
    from hardnet_desc.matching import _exact_distances

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((50, 128)).astype(np.float32), rng.standard_normal((50, 128)).astype(np.float32)
    ref = np.sqrt(((a.astype(np.float64) - b) ** 2).sum(1)).astype(np.float32)
    got = _exact_distances(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    assert got.dtype == np.float32 and np.abs(got.view(np.int32) - ref.view(np.int32)).max() <= 1  # ulps
    assert _exact_distances(torch.zeros(3, 0), torch.zeros(3, 0)).tolist() == [0.0, 0.0, 0.0]


SETTINGS = [{"ratio": 0.8, "mutual": True}, {"ratio": None, "mutual": False}, {"ratio": 0.9, "mutual": False}]


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("kwargs", SETTINGS)
def test_cuda_matcher_equals_the_cpu_matcher(descs, kwargs):
    """CUDA tensors are matched on the GPU, with the CPU's results; numpy with device="cuda" too."""
    desc1, desc2 = descs
    ref = match_descriptors(desc1, desc2, **kwargs)
    a, b = torch.from_numpy(desc1).cuda(), torch.from_numpy(desc2).cuda()
    _assert_identical(match_descriptors(a, b, **kwargs), ref)
    _assert_identical(match_descriptors(a, b, chunk_size=61, **kwargs), ref)
    _assert_identical(match_descriptors(desc1, desc2, device="cuda", **kwargs), ref)
    matcher = DescriptorMatcher(mutual=kwargs["mutual"], device="cuda")
    cpu = DescriptorMatcher(mutual=kwargs["mutual"])
    assert [(m.queryIdx, m.trainIdx, m.distance) for m in matcher.match(a, b)] == \
        [(m.queryIdx, m.trainIdx, m.distance) for m in cpu.match(desc1, desc2)]


@cuda
@pytest.mark.cuda
def test_cuda_matcher_ties_and_large_sets():
    """Tied binary descriptors, and 20k x 20k real-valued ones in several chunks: the CPU's results."""
    rng = np.random.default_rng(3)
    a = rng.integers(0, 2, (200, 5)).astype(np.float32)
    b = rng.integers(0, 2, (300, 5)).astype(np.float32)
    for mutual in (True, False):
        ref = match_descriptors(a, b, ratio=None, mutual=mutual)
        _assert_identical(match_descriptors(torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda(), ratio=None,
                                            mutual=mutual), ref)
    x = rng.standard_normal((20_000, 128)).astype(np.float32)
    y = x[rng.permutation(20_000)] + 3.0 * rng.standard_normal((20_000, 128)).astype(np.float32)  # many ambiguous
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    for kwargs in ({"ratio": None, "mutual": True}, {"ratio": None, "mutual": False}):
        ref = match_descriptors(x, y, **kwargs)
        assert len(ref) > 5000
        got = match_descriptors(torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda(), chunk_size=3000, **kwargs)
        _assert_identical(got, ref)
