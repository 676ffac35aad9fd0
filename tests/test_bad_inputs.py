"""Fuzz-style: every class of bad input to the public API and the CLI gets a clear error.

A clear error is a ``TypeError``, ``ValueError`` (``WeightsError`` is one) or ``FileNotFoundError``
whose message names the problem, never an ``AttributeError``/``IndexError``/``RuntimeError`` from
deep inside torch or OpenCV, and never a silent wrong answer. Each case is one parametrized test.
"""

from __future__ import annotations

import os
import re

import cv2
import numpy as np
import pytest
import torch

from hardnet_desc import HardNetDescriptor, WeightsError, load_weights, match_descriptors
from hardnet_desc.matching import DescriptorMatcher

from conftest import make_hardnet

KP = cv2.KeyPoint(30.0, 30.0, 5.0)
GOOD = np.zeros((64, 64), np.uint8)


@pytest.fixture(scope="module")
def desc() -> HardNetDescriptor:
    return HardNetDescriptor(make_hardnet(), device="cpu")


def _complex_image():
    return np.zeros((64, 64), np.complex64)


BAD_IMAGES = {
    "None": (None, TypeError, "image must be a numpy array or torch tensor, got NoneType"),
    "string path": ("a.jpg", TypeError, "image must be a numpy array or torch tensor, got str"),
    "nested list": ([[0, 1], [2, 3]], TypeError, "numpy array or torch tensor"),
    "complex": (_complex_image(), TypeError, "dtype must be uint8, uint16 or float, got complex64"),
    "int64": (np.zeros((64, 64), np.int64), TypeError, "got int64"),
    "bool": (np.zeros((64, 64), bool), TypeError, "got bool"),
    "object": (np.empty((64, 64), object), TypeError, "got object"),
    "NaN": (np.full((64, 64), np.nan, np.float32), ValueError, "NaN or inf"),
    "inf float64": (np.full((64, 64), np.inf), ValueError, "NaN or inf"),
    "empty": (np.zeros((0, 0), np.uint8), ValueError, r"image is empty \(0x0\)"),
    "empty BGR": (np.zeros((0, 0, 3), np.uint8), ValueError, r"image is empty \(0x0\)"),  # was cv2's !_src.empty()
    "empty torch": (torch.zeros(3, 0, 5), ValueError, r"image is empty \(0x5\)"),
    "one pixel": (np.zeros((1, 1), np.uint8), ValueError, "too small"),
    "4-D numpy": (np.zeros((1, 64, 64, 3), np.uint8), ValueError, r"must be \(H, W\) grey"),
    "5 channels": (np.zeros((64, 64, 5), np.uint8), ValueError, r"must be \(H, W\) grey"),
    "torch batch": (torch.zeros(2, 3, 64, 64), ValueError, "one image at a time"),
    "torch 2 channels": (torch.zeros(2, 64, 64), ValueError, "1 or 3 channels"),
}


@pytest.mark.parametrize("case", BAD_IMAGES, ids=list(BAD_IMAGES))
def test_bad_images(desc, case):
    image, error, match = BAD_IMAGES[case]
    with pytest.raises(error, match=match):
        desc.compute(image, [KP])
    with pytest.raises(error, match=match):
        desc.detect(image)


BAD_KEYPOINTS = {
    "int": (5, TypeError, "keypoints must be a sequence of cv2.KeyPoint"),
    "string": ("kps", TypeError, "keypoints must be a sequence of cv2.KeyPoint"),
    "one KeyPoint": (KP, TypeError, "got KeyPoint"),
    "dict": ({"x": 1}, TypeError, "got a sequence holding str"),
    "mixed": ([KP, (30.0, 30.0, 5.0, 0.0)], TypeError, "got a sequence holding tuple"),
    "mixed with None": ([KP, None], TypeError, "got a sequence holding NoneType"),
    "complex array": (np.ones((2, 4), complex), TypeError, "numeric"),
    "object array": (np.array([[KP, 1, 2, 3]], dtype=object), TypeError, "numeric"),
    "bool array": (np.ones((2, 4), bool), TypeError, "numeric"),
    "(N, 3) array": (np.ones((2, 3)), ValueError, r"shape \(N, 4\)"),
    "1-D array": (np.ones(4), ValueError, r"shape \(N, 4\)"),
    "NaN": (np.array([[30.0, np.nan, 5.0, 0.0]]), ValueError, "NaN or inf"),
    "inf size": ([cv2.KeyPoint(30.0, 30.0, float("inf"))], ValueError, "NaN or inf"),
    # 1e38 is described (test_huge_keypoint_...); a patch side beyond float32 is refused, naming the size
    "size 3e38": ([KP, cv2.KeyPoint(30.0, 30.0, 3e38)], ValueError, r"too large to describe \(first: index 1, "
                  r"size 3e\+38\)"),
    "size 1e300 array": (np.array([[30.0, 30.0, 1e300, 0.0]]), ValueError, r"size 1e\+300"),
    "complex frames": (np.ones((2, 2, 3), complex), TypeError, "real numbers"),
    "NaN frames": (np.full((1, 2, 3), np.nan), ValueError, "NaN or inf"),
}


@pytest.mark.parametrize("case", BAD_KEYPOINTS, ids=list(BAD_KEYPOINTS))
def test_bad_keypoints(desc, case):
    keypoints, error, match = BAD_KEYPOINTS[case]
    with pytest.raises(error, match=match):
        desc.compute(GOOD, keypoints)


@pytest.mark.parametrize(
    "keypoints, kept",
    [
        (None, 0),  # cv2: no keypoints
        ([], 0),
        ((k for k in [KP, KP]), 2),  # a generator
        ([KP, cv2.KeyPoint(-100.0, 5.0, 5.0), cv2.KeyPoint(5.0, 5.0, 0.0)], 1),  # outside / size 0: removed
        (np.array([[30, 30, 5, 0], [30, 30, -1, 0]], np.int32), 1),  # integer array
        ([cv2.KeyPoint(30.0, 30.0, 1e38)], 1),  # a patch far larger than the image: described, as by SIFT
    ],
)
def test_unusual_but_valid_keypoints(desc, keypoints, kept):
    kps, d = desc.compute(GOOD, keypoints)
    assert len(kps) == len(d) == kept and d.shape == (kept, 128) and np.isfinite(d).all()


def test_huge_keypoint_is_described_like_any_patch_far_larger_than_the_image(desc):
    image = cv2.imread(IMG, cv2.IMREAD_GRAYSCALE)[:200, :300]
    _, d = desc.compute(image, [cv2.KeyPoint(100.0, 80.0, s) for s in (1e38, 1e7, 20.0)])
    assert np.isfinite(d).all() and d[0] @ d[1] > 0.999 and d[0] @ d[2] < 0.99  # the coarsest level, not the patch


BAD_DETECT = {
    "negative": (-3, ValueError, r"max_keypoints must be >= 0"),  # was: drops the 3 weakest
    "float": (2.5, TypeError, "max_keypoints must be an integer or None, got float"),
    "string": ("100", TypeError, "max_keypoints must be an integer or None, got str"),
    "bool": (True, TypeError, "max_keypoints must be an integer or None, got bool"),
}


@pytest.mark.parametrize("case", BAD_DETECT, ids=list(BAD_DETECT))
def test_bad_max_keypoints(desc, case):
    from hardnet_desc.pipeline import match_pair

    value, error, match = BAD_DETECT[case]
    with pytest.raises(error, match=match):
        desc.detect(GOOD, max_keypoints=value)
    with pytest.raises(error, match=match):
        match_pair(GOOD, GOOD, desc, max_keypoints=value)


BAD_MASKS = {
    "wrong shape": (np.ones((10, 10), np.uint8), ValueError, "mask has shape"),
    "transposed": (np.ones((64, 32), np.uint8), ValueError, "mask has shape"),
    "float": (np.ones((32, 64), np.float32), TypeError, "uint8 or bool"),
    "list": ([[1]], TypeError, "mask must be None or a uint8"),
    "string": ("all", TypeError, "mask must be None or a uint8"),
}


@pytest.mark.parametrize("case", BAD_MASKS, ids=list(BAD_MASKS))
def test_bad_masks(desc, case):
    mask, error, match = BAD_MASKS[case]
    image = np.zeros((32, 64), np.uint8)
    with pytest.raises(error, match=match):
        desc.detect(image, mask)
    with pytest.raises(error, match=match):
        desc.detectAndCompute(image, mask)


BAD_SETTINGS = {
    "precision": ({"precision": "int4"}, ValueError, "precision must be one of"),
    # int8 (issue 16) needs activation scales calibrated for the weights: only the bundled ones have them
    "int8 uncalibrated": ({"device": "cpu", "precision": "int8"}, ValueError, "int8.*needs activation scales"),
    "precision None": ({"precision": None}, ValueError, "precision must be one of"),
    "batch_size 0": ({"batch_size": 0}, ValueError, "batch_size must be >= 1"),
    "batch_size float": ({"batch_size": 2.5}, TypeError, "batch_size must be an integer"),
    # batch_size=None is the measured default (issue 16); anything else must be an integer >= 1
    "batch_size str": ({"batch_size": "256"}, TypeError, "batch_size must be an integer"),
    "patch_scale 0": ({"patch_scale": 0.0}, ValueError, "patch_scale must be a positive"),
    "patch_scale inf": ({"patch_scale": float("inf")}, ValueError, "patch_scale must be a positive"),
    "patch_scale str": ({"patch_scale": "6"}, TypeError, "patch_scale must be a number"),
    "device unknown": ({"device": "tpu9"}, ValueError, "unknown device 'tpu9'"),
    "device int": ({"device": 1}, TypeError, "device must be a string"),
    "fp16 on cpu": ({"device": "cpu", "precision": "fp16"}, ValueError, "needs a CUDA device"),
    "detector": ({"detector": object()}, TypeError, "detector must have a detect"),
}
BAD_DEVICES = {"meta": "device 'meta' is not supported"}  # holds no data: descriptors would be garbage
if not torch.backends.mps.is_available():
    BAD_DEVICES["mps"] = "device='mps' was requested but this torch build or machine has no MPS device"
if not (hasattr(torch, "xpu") and torch.xpu.is_available()):
    BAD_DEVICES["xpu"] = "device='xpu' was requested but this torch build or machine has no XPU device"
if not torch.cuda.is_available():
    BAD_DEVICES["cuda"] = "CUDA is not available"
BAD_SETTINGS.update({f"device {name}": ({"device": name}, ValueError, match) for name, match in BAD_DEVICES.items()})


@pytest.mark.parametrize("case", BAD_SETTINGS, ids=list(BAD_SETTINGS))
def test_bad_settings(case):
    kwargs, error, match = BAD_SETTINGS[case]
    with pytest.raises(error, match=match):
        HardNetDescriptor(make_hardnet(), **kwargs)


@pytest.mark.parametrize("device", BAD_DEVICES, ids=list(BAD_DEVICES))
def test_bad_devices_in_the_kornia_bridge(device):
    from hardnet_desc.integrations.kornia import laf_descriptor

    with pytest.raises(ValueError, match=BAD_DEVICES[device]):
        laf_descriptor(make_hardnet(), device=device)


def _write(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    return path


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def _state(change):
    return {k: change(k, v) for k, v in make_hardnet().state_dict().items()}


def _with_metadata(tmp_path, name, **metadata):
    from hardnet_desc.core.weights import save_weights

    return save_weights(make_hardnet(), tmp_path / name, metadata)


BAD_WEIGHTS = {
    "int": (lambda tmp: 42, TypeError, "weights must be a bundled name"),
    "None": (lambda tmp: None, TypeError, "weights must be a bundled name"),
    "missing file": (lambda tmp: str(tmp / "nope.pth"), WeightsError, "no such file"),
    "folder": (lambda tmp: str(tmp), WeightsError, "no such file"),
    "empty .pth": (lambda tmp: _write(tmp, "e.pth", b""), WeightsError, "empty file"),
    "text .pth": (lambda tmp: _write(tmp, "t.pth", b"not weights\n"), WeightsError, "not a readable torch"),
    "empty dict": (lambda tmp: _write(tmp, "d.pth", {}), WeightsError, "not a HardNet state dict"),
    "list": (lambda tmp: _write(tmp, "l.pth", [1, 2]), WeightsError, "expected a state dict"),
    "wrong shapes": (lambda tmp: _write(tmp, "s.pth", {k: v[..., :1] if v.dim() else v for k, v in
                                                       make_hardnet().state_dict().items()}),
                     WeightsError, "has shape"),
    "pickled code": (lambda tmp: _write(tmp, "p.pth", {"x": _Payload()}), WeightsError, "refused by the safe loader"),
    # a negative variance loaded silently and made every descriptor NaN
    "negative running_var": (lambda tmp: _write(tmp, "v.pth", _state(lambda k, v: -v if k == "features.4.running_var"
                                                                      else v)),
                             WeightsError, r"v\.pth: features\.4\.running_var has negative values"),
    "int64 tensors": (lambda tmp: _write(tmp, "i.pth", _state(lambda k, v: (v * 100).long())),
                      WeightsError, r"i\.pth: features\.0\.weight has dtype torch\.int64"),
    # metadata patch_scale "0" was replaced by 6.0 without a word; "abc" named neither file nor field
    "patch_scale 0": (lambda tmp: _with_metadata(tmp, "z.safetensors", patch_scale="0"),
                      WeightsError, r"z\.safetensors: metadata patch_scale '0' is not a positive number"),
    "patch_scale abc": (lambda tmp: _with_metadata(tmp, "a.safetensors", patch_scale="abc"),
                        WeightsError, r"a\.safetensors: metadata patch_scale 'abc' is not a positive number"),
    "patch_scale nan": (lambda tmp: _with_metadata(tmp, "n.safetensors", patch_scale="nan"),
                        WeightsError, r"n\.safetensors: metadata patch_scale 'nan'"),
    "empty .safetensors": (lambda tmp: _write(tmp, "e.safetensors", b""), WeightsError, "not a readable safetensors"),
    "unknown suffix": (lambda tmp: _write(tmp, "w.onnx", b"x"), WeightsError, "unknown weight file type"),
    "foreign module": (lambda tmp: torch.nn.Conv2d(1, 1, 3), WeightsError, "Conv2d module: not a HardNet"),
    "bad hf uri": (lambda tmp: "hf://only-owner", WeightsError, "expected hf://owner/repo"),
}


@pytest.mark.parametrize("case", BAD_WEIGHTS, ids=list(BAD_WEIGHTS))
def test_bad_weights(case, tmp_path):
    make, error, match = BAD_WEIGHTS[case]
    source = make(tmp_path)
    with pytest.raises(error, match=match) as err:
        load_weights(source)
    assert "\n" not in str(err.value)  # one line
    with pytest.raises(error, match=match):
        HardNetDescriptor(source, device="cpu")
    from hardnet_desc.integrations.kornia import laf_descriptor

    with pytest.raises(error, match=match):  # the kornia bridge loads through the same door
        laf_descriptor(source)


A = np.ones((5, 8), np.float32)
BAD_MATCH = {
    "list": (([[1.0, 2.0]], A), {}, TypeError, "numpy array or torch tensor"),
    "string": (("desc", A), {}, TypeError, "numpy array or torch tensor"),
    "complex": ((A.astype(complex), A), {}, TypeError, "real numbers"),
    "bool tensor": ((torch.ones(5, 8, dtype=torch.bool), A), {}, TypeError, "real numbers"),
    "object": ((A.astype(object), A), {}, TypeError, "real numbers"),
    "1-D": ((A[0], A), {}, ValueError, r"shape \(N, D\)"),
    "3-D": ((A[None], A), {}, ValueError, r"shape \(N, D\)"),
    "dims differ": ((A, A[:, :4]), {}, ValueError, "descriptor dimensions differ"),
    "NaN": ((np.full((2, 8), np.nan, np.float32), A), {}, ValueError, "NaN or inf"),
    "inf": ((A, np.full((2, 8), np.inf, np.float32)), {}, ValueError, "NaN or inf"),
    "ratio 0": ((A, A), {"ratio": 0.0}, ValueError, "ratio must be in"),
    "ratio 2": ((A, A), {"ratio": 2.0}, ValueError, "ratio must be in"),
    "ratio str": ((A, A), {"ratio": "0.8"}, TypeError, "ratio must be a number in .* got str"),
    "ratio nan": ((A, A), {"ratio": float("nan")}, ValueError, "ratio must be in"),
    # finite float64 values beyond float32 were reported as "NaN or inf"
    "beyond float32": ((A.astype(np.float64) * 1e300, A), {}, ValueError, "desc1 holds values up to 1e.300, beyond "
                       "float32's range"),
    # tiny float64 values were cast to float32 before the rescaling: 2 % of the matches right, distances 0
    "below float32": ((A.astype(np.float64) * 1e-300, A), {}, ValueError, "desc1 holds values up to 1e.300, below "
                      "float32's range .* scale them up"),
    "max_distance": ((A, A), {"max_distance": -1.0}, ValueError, "max_distance"),
    "max_distance str": ((A, A), {"max_distance": "1"}, TypeError, "max_distance must be a number, got str"),
    "chunk_size": ((A, A), {"chunk_size": 0}, ValueError, "chunk_size"),
    "chunk_size 2.5": ((A, A), {"chunk_size": 2.5}, TypeError, "chunk_size must be an integer or None"),
    "device": ((A, A), {"device": "gpu"}, ValueError, "unknown device"),
}


@pytest.mark.parametrize("case", BAD_MATCH, ids=list(BAD_MATCH))
def test_bad_match_inputs(case):
    args, kwargs, error, match = BAD_MATCH[case]
    with pytest.raises(error, match=match):
        match_descriptors(*args, **kwargs)


@pytest.mark.parametrize("scale", [1e-35, 1e20, 1e36])
def test_extreme_descriptor_scales_match_like_unit_scale(scale):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((50, 16)).astype(np.float32)
    b = a + 0.05 * rng.standard_normal((50, 16)).astype(np.float32)
    ref = match_descriptors(a, b, ratio=0.8)
    got = match_descriptors(a * np.float32(scale), b * np.float32(scale), ratio=0.8)
    np.testing.assert_array_equal(got.pairs, ref.pairs)
    assert len(ref) > 40 and np.isfinite(got.distances).all()


def test_bad_matcher_arguments():
    with pytest.raises(ValueError, match="k must be >= 1"):
        DescriptorMatcher().knnMatch(A, A, k=0)
    with pytest.raises(ValueError, match="crossCheck"):
        DescriptorMatcher(mutual=True).knnMatch(A, A, k=2)
    with pytest.raises(TypeError, match="k must be an integer, got str"):
        DescriptorMatcher().knnMatch(A, A, k="2")
    with pytest.raises(TypeError, match="k must be an integer, got float"):
        DescriptorMatcher().knnMatch(A, A, k=2.0)
    with pytest.raises(TypeError, match="ratio must be a number"):
        DescriptorMatcher(ratio="0.8")


BAD_GEOMETRY = {
    "threshold -1": ({"threshold": -1.0}, ValueError, "threshold must be a positive number of pixels"),
    "threshold 0": ({"threshold": 0.0}, ValueError, "threshold must be a positive number of pixels"),
    "threshold nan": ({"threshold": float("nan")}, ValueError, "threshold must be a positive number of pixels"),
    "threshold inf": ({"threshold": float("inf")}, ValueError, "threshold must be a positive number of pixels"),
    "threshold str": ({"threshold": "3"}, TypeError, "threshold must be a number of pixels"),
    "geometry": ({"geometry": "affine"}, ValueError, "geometry must be one of"),
}


@pytest.mark.parametrize("case", BAD_GEOMETRY, ids=list(BAD_GEOMETRY))
def test_bad_geometry_settings(desc, case):
    from hardnet_desc.pipeline import fit_geometry, match_pair

    kwargs, error, match = BAD_GEOMETRY[case]
    with pytest.raises(error, match=match):  # was: ran, and reported inliers
        match_pair(GOOD, GOOD, desc, **kwargs)
    points = np.random.default_rng(0).uniform(0, 100, (20, 2))
    with pytest.raises(error, match=match):
        fit_geometry(points, points, **{"geometry": "homography", **kwargs})


def _correspondence_functions():
    """Every public function that takes correspondences ``(points1, points2)``, called with them."""
    from hardnet_desc import geometry, verification
    from hardnet_desc.fginn import remove_duplicates

    h = np.eye(3)
    return {
        "fit_geometry H": lambda p1, p2: geometry.fit_geometry(p1, p2, "homography"),
        "fit_geometry F": lambda p1, p2: geometry.fit_geometry(p1, p2, "fundamental"),
        "fit_homography": lambda p1, p2: geometry.fit_homography(p1, p2),
        "estimate_relative_pose": lambda p1, p2: geometry.estimate_relative_pose(p1, p2, 0.01),
        "transfer_error": lambda p1, p2: geometry.transfer_error(h, p1, p2),
        "sampson_error_px": lambda p1, p2: geometry.sampson_error_px(p1, p2, h),
        "refine_homography": lambda p1, p2: geometry.refine_homography(h, p1, p2),
        "verify": lambda p1, p2: verification.verify(p1, p2),
        "verify_prior": lambda p1, p2: verification.verify_prior(h, p1, p2),
        "scattered": lambda p1, p2: verification.scattered(p1, p2, np.ones(len(p1), bool), (100, 100)),
        "remove_duplicates": lambda p1, p2: remove_duplicates(p1, p2),
    }


_PTS = np.random.default_rng(0).uniform(0, 100, (20, 2))
BAD_CORRESPONDENCES = {  # each was: an OpenCV assertion, a numpy broadcast error, or a silent reshape to (30, 2)
    "fewer in image 2": ((_PTS, _PTS[:19]), "one row per correspondence, got 20 and 19 rows"),
    "three columns": ((np.c_[_PTS, _PTS[:, :1]],) * 2, r"must be an \(M, 2\) array of pixel positions, got shape \(20, 3\)"),
    "flat": ((_PTS.ravel(), _PTS.ravel()), r"must be an \(M, 2\) array of pixel positions, got shape \(40,\)"),
}


@pytest.mark.parametrize("function", list(_correspondence_functions()))
@pytest.mark.parametrize("case", BAD_CORRESPONDENCES, ids=list(BAD_CORRESPONDENCES))
def test_bad_correspondences(function, case):
    points, match = BAD_CORRESPONDENCES[case]
    call = _correspondence_functions()[function]
    with pytest.raises(ValueError, match=match):
        call(*points)
    call(_PTS[:, None], _PTS[:, None] + 1.0)  # OpenCV's (M, 1, 2) is taken as (M, 2)


BAD_FRAMES = {
    "frames1 (M, 2, 2)": ((np.zeros((20, 2, 2)), np.zeros((20, 2, 3))), r"frames1 must be an \(M, 2, 3\) array"),
    "fewer frames2": ((np.zeros((20, 2, 3)), np.zeros((19, 2, 3))), "frames1 and frames2 must have one row per"),
    "fewer than points": ((np.zeros((19, 2, 3)), np.zeros((19, 2, 3))), r"one row per correspondence \(20\), got 19"),
}


@pytest.mark.parametrize("case", BAD_FRAMES, ids=list(BAD_FRAMES))
def test_bad_frames_of_correspondences(case):
    from hardnet_desc.verification import coherent, frames_agree, verify

    (f1, f2), match = BAD_FRAMES[case]
    for call in (lambda: verify(_PTS, _PTS, frames1=f1, frames2=f2), lambda: coherent(_PTS, _PTS, f1, f2)):
        with pytest.raises(ValueError, match=match):
            call()
    if len(f1) == len(f2) == 20:  # frames_agree takes no points: only the frames' own shapes
        with pytest.raises(ValueError, match=match):
            frames_agree(np.eye(3), f1, f2)


def test_bad_duplicate_order_and_fginn_sets():
    from hardnet_desc.fginn import fginn_match, remove_duplicates

    with pytest.raises(ValueError, match=r"order must be a permutation of range\(20\)"):
        remove_duplicates(_PTS, _PTS, order=np.zeros(20, int))
    with pytest.raises(ValueError, match=r"desc1 and desc2 must be \(N, D\) arrays of the same D"):
        fginn_match(np.ones((20, 8)), np.ones((20, 7)), _PTS, _PTS)
    # FGINN takes two sets, not correspondences: each set's centres must fit its descriptors
    with pytest.raises(ValueError, match=r"centres2 must be an \(M, 2\) array of pixel positions"):
        fginn_match(np.eye(20, 8), np.eye(19, 8), _PTS, np.c_[_PTS[:19], _PTS[:19, :1]])
    with pytest.raises(ValueError, match="centres of 20 and 18 points for 20 and 19 rows"):
        fginn_match(np.eye(20, 8), np.eye(19, 8), _PTS, _PTS[:18])


BAD_PATCHES = {
    "4 channels": (np.zeros((2, 4, 32, 32), np.float32), ValueError, r"patches must be \(N, H, W\)"),
    "2-D": (np.zeros((32, 32), np.float32), ValueError, r"patches must be \(N, H, W\)"),
    "NaN": (np.full((2, 32, 32), np.nan, np.float32), ValueError, "NaN or inf"),
    "complex": (np.zeros((2, 32, 32), complex), TypeError, "real numbers"),
    "object": (np.zeros((2, 32, 32), object), TypeError, "real numbers"),
    "list of str": ([["a"]], TypeError, "real numbers"),
    # stopped in torch ("Expected reduction dim 2 to have non-zero size", "sizes should be greater than 0")
    "side 0": (np.zeros((3, 0, 0), np.float32), ValueError, r"with H, W >= 1, got \(3, 0, 0\)"),
    "width 0": (np.zeros((3, 32, 0), np.uint8), ValueError, r"with H, W >= 1, got \(3, 32, 0\)"),
}


@pytest.mark.parametrize("case", BAD_PATCHES, ids=list(BAD_PATCHES))
def test_bad_patches(desc, case):
    patches, error, match = BAD_PATCHES[case]
    with pytest.raises(error, match=match):
        desc.describe_patches(patches)


@pytest.mark.parametrize(
    "scale, dtype", [(1e-30, np.float32), (1e-41, np.float32), (1e-300, np.float64), (1e300, np.float64)]
)
def test_float_images_and_patches_far_from_a_normal_range_describe_alike(desc, scale, dtype):
    """``image * 1e-30`` gave other descriptors than ``image`` (min cosine -0.22): the same ones now; so do
    float32 patches whose peak needs a scale beyond 2^127 (1e-41: two factors, not one)."""
    image = cv2.imread(IMG, cv2.IMREAD_GRAYSCALE)[:240, :320].astype(dtype)
    keypoints = desc.detect(image.astype(np.uint8), max_keypoints=60)
    _, ref = desc.compute(image, keypoints)
    _, got = desc.compute(image * dtype(scale), keypoints)
    assert len(ref) > 30 and (ref * got).sum(1).min() > 0.99
    patches = desc.cut_patches(image, keypoints)[:, 0].numpy().astype(dtype)
    ref, got = desc.describe_patches(patches), desc.describe_patches(patches * dtype(scale))
    assert (ref * got).sum(1).min() > 0.99


def _frames():
    return np.array([[30.0, 30.0, 5.0, 0.0]])


BAD_EXTRACT = {
    "numpy image": ({"image": np.zeros((64, 64), np.float32)}, TypeError,
                    "image must be a float torch tensor.*got ndarray"),
    "uint8 tensor": ({"image": torch.zeros(64, 64, dtype=torch.uint8)}, TypeError, "got a torch.uint8 tensor"),
    "patch_size 0": ({"patch_size": 0}, ValueError, "patch_size must be an integer >= 1, got 0"),
    "patch_size float": ({"patch_size": 32.0}, ValueError, "patch_size must be an integer >= 1"),
    "supersample 0": ({"supersample": 0}, ValueError, "supersample must be an integer >= 1, got 0"),
    # accepted, then 409 GB asked for at the first patch
    "supersample 10**4": ({"supersample": 10**4}, ValueError, "at most 1024 sampling cells per side, got 32 x 10000"),
}


@pytest.mark.parametrize("case", BAD_EXTRACT, ids=list(BAD_EXTRACT))
def test_bad_extract_patches_arguments(case):
    from hardnet_desc.core.patches import extract_patches

    kwargs, error, match = BAD_EXTRACT[case]
    kwargs = {"image": torch.zeros(64, 64), **kwargs}
    with pytest.raises(error, match=match):
        extract_patches(kwargs.pop("image"), _frames(), **kwargs)


BAD_FEATURES = {
    "5 keypoints, 3 descriptors": (5, np.zeros((3, 128), np.float32)),
    "(3, 64) descriptors": (3, np.zeros((3, 64), np.float32)),
    "transposed": (3, np.zeros((128, 3), np.float32)),
    "1-D": (1, np.zeros(128, np.float32)),
}


@pytest.mark.parametrize("case", BAD_FEATURES, ids=list(BAD_FEATURES))
def test_bad_feature_shapes_are_not_written(tmp_path, case):
    import h5py

    from hardnet_desc.integrations.hloc import write_features

    n, descriptors = BAD_FEATURES[case]
    keypoints = [cv2.KeyPoint(float(i), 1.0, 2.0) for i in range(n)]
    with h5py.File(tmp_path / "f.h5", "w") as h5:
        shape = re.escape(str(descriptors.shape))
        with pytest.raises(ValueError, match=rf"img\.jpg: descriptors have shape {shape}, expected \(N, 128\) "
                                             rf"with N = {n} keypoints"):
            write_features(h5, "img.jpg", keypoints, descriptors, (64, 64))
        assert "img.jpg" not in h5


def test_bad_bridge_and_export_arguments(tmp_path):
    from hardnet_desc.integrations.onnx import export_onnx
    from hardnet_desc.integrations.skimage import HardNetExtractor
    from hardnet_desc.viz import draw_matches

    desc = HardNetDescriptor(make_hardnet(), device="cpu")
    with pytest.raises(TypeError, match="sigma must be a number"):
        HardNetExtractor(desc, sigma=None)
    with pytest.raises(ValueError, match=r"sigma must be > 0 \(a finite number of pixels\), got nan"):
        HardNetExtractor(desc, sigma=float("nan"))
    with pytest.raises(TypeError, match="image must be a numpy array .* got NoneType"):
        HardNetExtractor(desc).extract(None, np.zeros((1, 2)))
    with pytest.raises(TypeError, match=r"opset must be an integer in 13\.\.21, got NoneType"):
        export_onnx(tmp_path / "x.onnx", make_hardnet(), opset=None)
    assert not (tmp_path / "x.onnx").exists()
    ok = np.ones((2, 2))
    for bad in ([[np.nan, 1.0], [1.0, 1.0]], [[1.0, 1.0], [np.inf, 1.0]]):
        with pytest.raises(ValueError, match="points1 contain NaN or inf"):
            draw_matches(GOOD, GOOD, np.array(bad), ok)
        with pytest.raises(ValueError, match="points2 contain NaN or inf"):
            draw_matches(GOOD, GOOD, ok, np.array(bad))


# --- the command line: every bad input is one "hardnet-desc CMD: error: ..." line and exit code 2 ---
IMG = str(__import__("pathlib").Path(__file__).resolve().parents[1] / "examples" / "data" / "sacre_coeur_1.jpg")


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    from hardnet_desc.core.weights import save_weights

    root = tmp_path_factory.mktemp("cli_bad")
    weights = save_weights(make_hardnet(), root / "w.safetensors")
    (root / "corrupt.jpg").write_bytes(b"not an image")
    (root / "empty").mkdir()
    (root / "text.pth").write_bytes(b"hello\n")
    (root / "binary.txt").write_bytes(bytes(range(256)) * 4)
    _phototour(root / "pt", "0 0 0 1 0 0\n2 1 0 99 1 0\n")  # pair indices beyond its 10 patches
    _phototour(root / "pt_bmp", "0 0 0 1 0 0\n2 1 0 3 1 0\n")
    bmp = root / "pt_bmp" / "patches0000.bmp"
    bmp.write_bytes(bmp.read_bytes()[:300])  # a truncated patch file
    return {"root": root, "weights": str(weights)}


def _phototour(folder, pairs):
    from hardnet_desc.data.phototour import write_phototour

    patches = np.random.default_rng(0).integers(0, 256, (10, 64, 64), dtype=np.uint8)
    write_phototour(folder, patches, np.repeat(np.arange(5), 2))
    (folder / "m50_4_4_0.txt").write_text(pairs)


BAD_CLI = {
    "match: missing image": (["match", "{root}/none.jpg", IMG, "--weights", "{weights}"], "none.jpg"),
    "match: corrupt image": (["match", "{root}/corrupt.jpg", IMG, "--weights", "{weights}"], "cannot decode"),
    "match: text weights": (["match", IMG, IMG, "--weights", "{root}/text.pth"], "not a readable torch"),
    "match: int weights": (["match", IMG, IMG, "--weights", "42"], "no such file"),
    "match: negative budget": (["match", IMG, IMG, "--max-keypoints", "-1"], "--max-keypoints must be >= 0"),
    "match: ratio 2": (["match", IMG, IMG, "--weights", "{weights}", "--max-keypoints", "50", "--ratio", "2",
                        "--out", "{tmp}/m.png"], "ratio must be in (0, 1]"),
    "match: unknown device": (["match", IMG, IMG, "--weights", "{weights}", "--device", "gpu", "--out", "{tmp}/m.png"],
                              "unknown device 'gpu'"),
    "match: txt picture": (["match", IMG, IMG, "--out", "{tmp}/m.txt"], ".png, .jpg, .jpeg"),
    "match: out is a folder": (["match", IMG, IMG, "--out", "{tmp}"], "is a folder"),
    "extract: missing folder": (["extract", "{root}/none", "--out", "{tmp}/f.h5"], "no such image folder"),
    "extract: no images": (["extract", "{root}/empty", "--out", "{tmp}/f.h5"], "no image files"),
    "extract: batch 0": (["extract", "{root}", "--batch-images", "0"], "--batch-images must be >= 1, got 0"),
    "extract: negative budget": (["extract", "{root}", "--max-keypoints", "-1"], "--max-keypoints must be >= 0 (0 or None: all), got -1"),
    "extract: workers -1": (["extract", "{root}", "--workers", "-1"], "--workers must be >= 0 (none given: as --backend says), got -1"),
    "train: missing data": (["train", "{root}/none", "{tmp}/run", "--quiet"], "none"),
    "train: epochs 0": (["train", "{root}/none", "{tmp}/run", "--epochs", "0"], "epochs must be >= 1"),
    "eval-sequences: missing": (["eval-sequences", "{root}/none", "--quiet"], "no such folder"),
    "eval-sequences: not sequences": (["eval-sequences", "{root}/empty", "--quiet"], "neither an image sequence"),
    "eval-sequences: --json is --plot": (["eval-sequences", "{root}/empty", "--json", "{tmp}/r.png", "--plot",
                                          "{tmp}/r.png"], "--json and --plot name the same file"),
    "eval-sequences: ratio 0": (["eval-sequences", "{root}/empty", "--ratio", "0", "--quiet"], "ratio must be in"),
    "eval-fpr95: missing": (["eval-fpr95", "{root}/none"], "not found"),
    "make-dataset: missing": (["make-dataset", "{root}/none", "{tmp}/out"], "none"),
    "make-sequences: missing": (["make-sequences", "{root}/none", "{tmp}/out"], "no such image folder"),
    # were run, reporting inliers
    # accepted as "all" by match, while extract failed after making its file ("Object dtype ... no HDF5 equivalent")
    "match: budget 1e20": (["match", IMG, IMG, "--weights", "{weights}", "--max-keypoints", "99999999999999999999",
                            "--out", "{tmp}/m.png"], "--max-keypoints must be at most 2147483647 (0 or None: all)"),
    "match: --out is --json": (["match", IMG, IMG, "--weights", "{weights}", "--out", "{tmp}/m.png", "--json",
                                "{tmp}/./m.png"], "--out and --json name the same file"),
    "match: threshold -1": (["match", IMG, IMG, "--weights", "{weights}", "--max-keypoints", "50", "--threshold", "-1",
                             "--out", "{tmp}/m.png"], "threshold must be a positive number of pixels"),
    "match: threshold nan": (["match", IMG, IMG, "--weights", "{weights}", "--max-keypoints", "50", "--threshold",
                              "nan", "--out", "{tmp}/m.png"], "threshold must be a positive number of pixels"),
    # exited 0 with empty or odd datasets
    "make-dataset: views -1": (["make-dataset", "{root}", "{tmp}/ds", "--views", "-1"], "views must be a positive"),
    "make-dataset: points -1": (["make-dataset", "{root}", "{tmp}/ds", "--points", "-1"], "points must be a positive"),
    "make-dataset: val-fraction 1.5": (["make-dataset", "{root}", "{tmp}/ds", "--val-fraction", "1.5"],
                                       "val_fraction must be a number between 0 and 1"),
    "make-dataset: val-fraction nan": (["make-dataset", "{root}", "{tmp}/ds", "--val-fraction", "nan"],
                                       "val_fraction must be a number between 0 and 1"),
    "make-dataset: val-pairs -5": (["make-dataset", "{root}", "{tmp}/ds", "--val-pairs", "-5"],
                                   "val_pairs must be a positive integer, got -5"),
    "make-dataset: sfm val-pairs -5": (["make-dataset", "{root}", "{tmp}/ds", "--from-sfm", "--val-pairs", "-5"],
                                       "val_pairs must be a positive integer, got -5"),
    # numbers that crashed deep inside, or failed after work had begun
    "make-dataset: match-angle -5": (["make-dataset", "{root}", "{tmp}/ds", "--match-angle", "-5"],
                                     "max_angle_deg (--match-angle) must be a finite number > 0, got -5.0"),
    "make-dataset: match-scale 0.5": (["make-dataset", "{root}", "{tmp}/ds", "--match-scale", "0.5"],
                                      "max_scale_ratio (--match-scale) must be a finite number >= 1, got 0.5"),
    "make-dataset: seed -1": (["make-dataset", "{root}", "{tmp}/ds", "--seed", "-1"], "seed must be >= 0, got -1"),
    "make-dataset: sfm min-track 1": (["make-dataset", "{root}", "{tmp}/ds", "--from-sfm", "--min-track", "1"],
                                      "min_track must be >= 2, got 1"),
    "make-dataset: sfm seed -1": (["make-dataset", "{root}", "{tmp}/ds", "--from-sfm", "--seed", "-1"],
                                  "seed must be >= 0, got -1"),
    "make-sequences: max-side 0": (["make-sequences", "{root}", "{tmp}/ds", "--max-side", "0"],
                                   "max_side must be >= 64, got 0"),
    "make-sequences: seed -1": (["make-sequences", "{root}", "{tmp}/ds", "--seed", "-1"], "seed must be >= 0, got -1"),
    "eval-fpr95: patch-scale 0": (["eval-fpr95", "{root}/pt", "--methods", "sift", "--patch-scale", "0"],
                                  "patch_scale must be a positive finite number, got 0.0"),
    "eval-fpr95: patch-scale nan": (["eval-fpr95", "{root}/pt", "--methods", "sift", "--patch-scale", "nan"],
                                    "patch_scale must be a positive finite number, got nan"),
    "eval-pairs: binary pairs file": (["eval-pairs", "{root}/binary.txt", "--quiet"],
                                      "binary.txt: not a text pairs file"),
    "sfm: camera-params a,b": (["sfm", "{root}", "{tmp}/sfm", "--camera-params", "a,b", "--quiet"],
                               "--camera-params must be comma-separated numbers"),
    "eval-fpr95: pair index out of range": (["eval-fpr95", "{root}/pt", "--methods", "sift"],
                                            "m50_4_4_0.txt: 1 patch indices outside [0, 10)"),
    "train: val pair index out of range": (["train", "{root}/pt", "{tmp}/tr", "--val", "{root}/pt"],  # before training
                                           "m50_4_4_0.txt: 1 patch indices outside [0, 10)"),
    "eval-fpr95: corrupt bmp": (["eval-fpr95", "{root}/pt_bmp", "--methods", "sift"],  # without OpenCV's log line
                                "cannot decode image: "),
}


@pytest.mark.parametrize("case", BAD_CLI, ids=list(BAD_CLI))
def test_bad_cli_inputs(cli_files, tmp_path, capfd, case):
    from hardnet_desc.cli import main

    argv, match = BAD_CLI[case]
    argv = [a.format(root=cli_files["root"], weights=cli_files["weights"], tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]  # also what C++ code prints
    assert len(err) == 1 and err[0].startswith(f"hardnet-desc {argv[0]}: error: "), err
    assert match in err[0], err[0]
    assert not (tmp_path / "ds").exists()  # make-dataset refuses before it writes anything


@pytest.mark.parametrize("ratio, error", [("0.8", TypeError), (True, TypeError), (1.5, ValueError)])
def test_evaluations_check_ratio_first(tmp_path, ratio, error):
    """The evaluations refuse a bad ``ratio`` with the matcher's message before reading any image (a string used to
    fail deep in a comparison, ``True`` passed as a ratio of 1)."""
    from hardnet_desc.evaluation.poses import evaluate_pairs
    from hardnet_desc.evaluation.sequences import evaluate_sequences

    with pytest.raises(error, match="ratio must be"):
        evaluate_sequences(tmp_path / "missing", ["sift"], ratio=ratio)
    with pytest.raises(error, match="ratio must be"):
        evaluate_pairs([], ["sift"], ratio=ratio)
