"""HardNet for kornia users: torch images and LAFs in, torch descriptors out.

    python examples/kornia_lafs.py [image]

1. ``HardNetDescriptor.compute`` with kornia's calling convention: an RGB ``(B, 3, H, W)`` float
   image and LAFs ``(B, N, 2, 3)`` give a ``(B, N, 128)`` tensor.
2. kornia's own ``LAFDescriptor`` running these weights (``hardnet_desc.integrations.kornia.laf_descriptor``).
3. LAFs from a kornia detector: ``SIFTFeatureScaleSpace`` returns 6-sigma frames, whose scale is
   ``3 * kp.size``, the scale these weights were trained at (``patch_scale * kp.size / 2``). Frames are
   described as given, so frames smaller than the weights' ``min_kp_size`` (3.5 px for the default
   weights) are raised to it here, as ``compute`` does for keypoints.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import kornia.feature as KF
import torch

from hardnet_desc import HardNetDescriptor
from hardnet_desc.integrations.kornia import keypoints_to_lafs, laf_descriptor

path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "data" / "sacre_coeur_1.jpg"
bgr = cv2.imread(str(path))
image = torch.from_numpy(bgr[:, :, ::-1].copy()).permute(2, 0, 1)[None].float() / 255.0  # (1, 3, H, W) RGB

hardnet = HardNetDescriptor(device="cpu")
keypoints = cv2.SIFT_create(nfeatures=500).detect(bgr, None)
lafs = keypoints_to_lafs(keypoints, hardnet.patch_spec)  # (1, N, 2, 3)
_, desc = hardnet.compute(image, lafs)  # (1, N, 128) tensor
print(f"HardNetDescriptor: {tuple(desc.shape)} {type(desc).__name__}")

kornia_hardnet = laf_descriptor(device="cpu")  # kornia.feature.LAFDescriptor with our weights
with torch.inference_mode():
    desc_kornia = kornia_hardnet(image, lafs)
cosine = (desc * desc_kornia).sum(-1)
print(f"kornia LAFDescriptor: {tuple(desc_kornia.shape)}, cosine to ours: mean {cosine.mean():.4f}")

grey = image.mean(1, keepdim=True)
with torch.inference_mode():
    kornia_lafs, _, _ = KF.SIFTFeatureScaleSpace(num_features=500)(grey)  # 6-sigma frames: s = 3 * kp.size
dog_lafs = KF.scale_laf(kornia_lafs, hardnet.patch_scale / 6.0)
smallest = hardnet.patch_scale * hardnet.min_kp_size / 2  # the LAF scale of a keypoint of min_kp_size
dog_lafs = KF.scale_laf(dog_lafs, (smallest / KF.get_laf_scale(dog_lafs)).clamp(min=1.0))
_, desc_dog = hardnet.compute(image, dog_lafs)
print(f"kornia DoG frames: {tuple(desc_dog.shape)}")
