"""Shared fixtures: the bundled Sacré-Cœur photo pair, SIFT keypoints on it, and untrained HardNets.

None of these depend on shipped weights; tests of the shipped weights can reuse ``example_pair``.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from hardnet_desc.core.image import to_grey_tensor
from hardnet_desc.core.model import HardNet
from hardnet_desc.core.patches import extract_patches

DATA_DIR = Path(__file__).resolve().parents[1] / "examples" / "data"
EXAMPLE_FILES = (DATA_DIR / "sacre_coeur_1.jpg", DATA_DIR / "sacre_coeur_2.jpg")


# Processes the tests start (extract's workers, forkserver, Ray) import this checkout, not an installed copy,
# whatever folder a test runs in (each runs in its own, see _cwd_is_scratch).
_ROOT = str(Path(__file__).resolve().parents[1])
os.environ["PYTHONPATH"] = os.pathsep.join([_ROOT, *filter(None, [os.environ.get("PYTHONPATH")])])

# The tests are small; one thread avoids OpenMP spin contention with other jobs on small machines.
torch.set_num_threads(1)


@functools.lru_cache(maxsize=None)
def _calibrated_state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    net = HardNet().train()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration batches
    image = cv2.imread(str(EXAMPLE_FILES[1]), cv2.IMREAD_COLOR)
    patches = extract_patches(to_grey_tensor(image), sift_keypoints(image, 512))
    with torch.no_grad():
        for batch in patches.split(128):
            net(batch)
    return {k: v.clone() for k, v in net.state_dict().items()}


def make_hardnet(seed: int = 0) -> HardNet:
    """An untrained HardNet in eval mode with BatchNorm statistics measured on real patches.

    Such statistics (non-zero means, variances far from 1) make every BN layer matter, so a
    test that drops or mis-fuses one fails, and the descriptors stay as spread out as a
    real network's rather than collapsing onto one direction.
    """
    net = HardNet()
    net.load_state_dict(_calibrated_state(seed))
    return net.eval()


def sift_keypoints(image: np.ndarray, n: int) -> list[cv2.KeyPoint]:
    """The ``n`` strongest SIFT keypoints, in OpenCV's (deterministic) order."""
    return list(cv2.SIFT_create(nfeatures=n).detect(image, None))[:n]


@pytest.fixture(scope="session")
def example_files() -> tuple[Path, Path]:
    """Paths of the two bundled photos (JPEG)."""
    return EXAMPLE_FILES


@pytest.fixture(scope="session")
def example_pair() -> tuple[np.ndarray, np.ndarray]:
    """The two bundled photos as OpenCV BGR uint8 arrays ``(H, W, 3)``."""
    images = tuple(cv2.imread(str(p), cv2.IMREAD_COLOR) for p in EXAMPLE_FILES)
    assert all(im is not None for im in images), f"cannot read {EXAMPLE_FILES}"
    return images


@pytest.fixture(scope="session")
def example_image(example_pair) -> np.ndarray:
    """The first bundled photo, BGR uint8 ``(520, 800, 3)``."""
    return example_pair[0]


@pytest.fixture(scope="session")
def example_grey(example_image) -> torch.Tensor:
    """The first photo as a grey float32 ``(1, 1, H, W)`` tensor in 0..1."""
    return to_grey_tensor(example_image)


@pytest.fixture(scope="session")
def example_keypoints(example_image) -> list[cv2.KeyPoint]:
    """300 SIFT keypoints of the first photo."""
    return sift_keypoints(example_image, 300)


@pytest.fixture(scope="session")
def example_patches(example_grey, example_keypoints) -> torch.Tensor:
    """``(300, 1, 32, 32)`` patches at ``example_keypoints``, values in 0..1."""
    return extract_patches(example_grey, example_keypoints)


@pytest.fixture
def hardnet() -> HardNet:
    """A fresh untrained HardNet (eval, seeded, non-trivial BN statistics)."""
    return make_hardnet()


@pytest.fixture
def make_net():
    """:func:`make_hardnet`, for tests that need several different nets."""
    return make_hardnet


@pytest.fixture(autouse=True)
def _cwd_is_scratch(tmp_path, monkeypatch):
    """Every test runs in its own empty folder: a test that writes a default output (``matches.png``,
    ``features.h5``) or reads a relative path never touches, or depends on, the checkout or the caller's
    working directory (``python examples/match_pair.py`` leaves ``matches.png`` in the checkout)."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def photo_crops(tmp_path_factory) -> Path:
    """Four 260 x 260 crops of the bundled photos: make-dataset runs on them in about a second."""
    root = tmp_path_factory.mktemp("crops")
    for k, path in enumerate(EXAMPLE_FILES):
        img = cv2.imread(str(path))
        for j, x in enumerate((0, 400)):
            cv2.imwrite(str(root / f"p{k}{j}.jpg"), img[:260, x : x + 260])
    return root
