"""Our weights in kornia: ``kornia.feature.LAFDescriptor`` running this package's HardNet.

kornia describes local affine frames (LAFs) ``[A | c]`` of shape ``(B, N, 2, 3)``; the patch
covers ``c + A @ [-1, 1]^2``, which is this package's frame convention (docs/conventions.md), so
frames pass between the two unchanged. What differs is the *scale* each set of weights expects:

* kornia's LAF scale is ``s = sqrt(|det A|)``, half the patch side.
* These weights see a patch of side ``patch_scale * kp.size`` (``PatchSpec.scale``), so ``s = patch_scale * kp.size / 2``
  (``3 * kp.size`` for the bundled weights, ``patch_scale = 6``): a 6-sigma DoG frame as
  ``kornia.feature.SIFTFeatureScaleSpace`` returns it. Weights that record a ``min_kp_size``
  see ``kp.size`` raised to at least that many pixels: ``s >= patch_scale * min_kp_size / 2``.
* kornia's pretrained ``HardNet`` and ``DoGHardNet`` use ``s = 6 * kp.size`` (12 sigma). Before
  describing such LAFs with our weights, shrink them: ``kornia.feature.scale_laf(lafs, patch_scale / 12)``.
* Orientation: ``kornia.feature.laf_from_center_scale_ori(xy, s, ori)`` takes ``ori = -kp.angle``
  (kornia turns positive angles counter-clockwise on screen, OpenCV clockwise).

kornia is imported only when these functions are called (``pip install "hardnet-desc[kornia]"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..core.device import resolve_device
from ..core.model import PATCH_SIZE, HardNet
from ..core.patches import KeypointsLike, PatchSpec, keypoints_to_frames
from ..core.weights import DEFAULT_WEIGHTS, Weights, load_weights

if TYPE_CHECKING:
    import kornia.feature


def laf_descriptor(
    weights: str | Path | HardNet | Weights = DEFAULT_WEIGHTS, *, device: str | torch.device = "cpu"
) -> kornia.feature.LAFDescriptor:
    """kornia's ``LAFDescriptor`` with a ``kornia.feature.HardNet`` holding these weights.

    Args:
        weights: a bundled name, a weight file, ``hf://...``, a ``HardNet``
            or loaded ``Weights``.
        device: where the module lives (``"cpu"``, ``"cuda"``, ``"auto"``...; see
            ``hardnet_desc.core.device.resolve_device``).

    Raises:
        WeightsError: weights that cannot be loaded or do not fit HardNet (as ``load_weights``).
        ValueError: an unknown device, or one this machine does not have.

    Returns:
        The module, in eval mode, called as ``module(image (B, 1, H, W), lafs (B, N, 2, 3)) -> (B, N, 128)``.
        Its ``patch_spec`` attribute is the weights' own (``Weights.patch_spec``; also as
        ``patch_scale`` and ``min_kp_size``): build LAFs with ``keypoints_to_lafs(kps, module.patch_spec)``.
    """
    import kornia.feature as KF

    device = resolve_device(device)  # before any work: unknown or absent devices fail here
    weights = load_weights(weights)  # the one check of keys, shapes, dtypes and values (a HardNet is copied)
    net = KF.HardNet(pretrained=False)
    net.load_state_dict(weights.state_dict, strict=True)  # the authors' layer layout, as ours
    module = KF.LAFDescriptor(net.eval(), patch_size=PATCH_SIZE, grayscale_descriptor=True).to(device).eval()
    module.patch_spec = weights.patch_spec
    module.patch_scale, module.min_kp_size = module.patch_spec.scale, module.patch_spec.min_kp_size
    return module


def keypoints_to_lafs(keypoints: KeypointsLike, spec: PatchSpec = PatchSpec()) -> torch.Tensor:
    """OpenCV keypoints (or ``(N, 4)`` ``(x, y, size, angle_deg)``) as kornia LAFs ``(1, N, 2, 3)``.

    The LAFs cover the patches ``HardNetDescriptor`` describes with ``spec`` (its ``patch_spec``,
    or ``laf_descriptor(...).patch_spec``): scale ``spec.scale * max(size, spec.min_kp_size) / 2``,
    orientation ``-angle`` in kornia's convention. LAFs ``(B, N, 2, 3)`` are returned as they are.
    """
    frames = keypoints_to_frames(keypoints, spec)
    return frames if frames.dim() == 4 else frames[None]
