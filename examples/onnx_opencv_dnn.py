"""HardNet with nothing but OpenCV and numpy: the exported ONNX model in cv2.dnn.

Export the model once (this needs hardnet-desc), then run this script anywhere OpenCV runs:

    hardnet-desc export-onnx hardnet.onnx        # the weights' patch_scale and min_kp_size go into the model
    python examples/onnx_opencv_dnn.py hardnet.onnx [image1 image2]

Patches are cut as docs/conventions.md says (the same steps in C++ use the same OpenCV calls):
a square of side ``patch_scale * max(kp.size, min_kp_size)`` centred on ``kp.pt``, its x axis along ``kp.angle``,
sampled on a 64x64 grid from the Gaussian pyramid level whose pixel is no larger than a grid step,
then averaged 2x2 to 32x32.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import cv2
import numpy as np

DATA = Path(__file__).resolve().parent / "data"
GRID = 64  # sampling grid; averaged 2x2 to the network's 32x32


def cut_patches(grey: np.ndarray, keypoints, patch_scale: float, min_kp_size: float) -> np.ndarray:
    """``(N, 1, 32, 32)`` float32 patches of a grey float32 image at OpenCV keypoints."""
    pyramid = [grey]
    patches = np.empty((len(keypoints), 1, GRID // 2, GRID // 2), np.float32)
    for i, kp in enumerate(keypoints):
        half = 0.5 * patch_scale * max(kp.size, min_kp_size)  # the patch covers centre + A @ [-1, 1]^2
        level = max(0, math.floor(math.log2(max(2 * half / GRID, 1.0))))
        while len(pyramid) <= level and min(pyramid[-1].shape) >= 8:
            pyramid.append(cv2.pyrDown(pyramid[-1]))
        level = min(level, len(pyramid) - 1)
        angle = 0.0 if kp.angle == -1 else math.radians(kp.angle)
        a = half / 2**level * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        centre = np.array(kp.pt) / 2**level  # level l pixel (i, j) lies on full-size pixel (2^l i, 2^l j)
        # grid cell (col, row) -> image point: centre + A @ (-1 + (2 col + 1) / GRID, -1 + (2 row + 1) / GRID)
        m = np.hstack([a * (2.0 / GRID), (centre + a @ np.full(2, 1.0 / GRID - 1.0))[:, None]])
        grid = cv2.warpAffine(pyramid[level], m, (GRID, GRID), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)
        patches[i, 0] = cv2.resize(grid, (GRID // 2, GRID // 2), interpolation=cv2.INTER_AREA)
    return patches


def model_settings(path: Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file (``patch_scale``, ``min_kp_size``, ...), read without the onnx
    package: a model is a protobuf message whose field 14 holds (key = field 1, value = field 2) entries."""

    def varint(data: bytes, i: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            value, shift, i = value | (data[i] & 0x7F) << shift, shift + 7, i + 1
            if data[i - 1] < 0x80:
                return value, i

    def fields(data: bytes):
        i = 0
        while i < len(data):
            key, i = varint(data, i)
            if key & 7 == 0:
                value, i = varint(data, i)
            elif key & 7 == 2:
                size, i = varint(data, i)
                value, i = data[i : i + size], i + size
            elif key & 7 in (1, 5):
                value, i = None, i + (8 if key & 7 == 1 else 4)
            else:
                raise ValueError(f"{path} is not an ONNX model")
            yield key >> 3, value

    props = {}
    for number, value in fields(Path(path).read_bytes()):
        if number == 14:
            entry = dict(fields(value))
            props[entry.get(1, b"").decode()] = entry.get(2, b"").decode()
    return props


def describe(net: cv2.dnn.Net, patches: np.ndarray, batch: int = 256) -> np.ndarray:
    """``(N, 128)`` float32 unit descriptors; standardisation and L2 norm are inside the model."""
    out = [np.zeros((0, 128), np.float32)]
    for start in range(0, len(patches), batch):
        net.setInput(patches[start : start + batch])
        out.append(net.forward())
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="the .onnx file from hardnet-desc export-onnx")
    parser.add_argument("image1", nargs="?", type=Path, default=DATA / "sacre_coeur_1.jpg")
    parser.add_argument("image2", nargs="?", type=Path, default=DATA / "sacre_coeur_2.jpg")
    parser.add_argument("--patch-scale", type=float, help="default: the model's (export-onnx records the weights')")
    parser.add_argument("--min-kp-size", type=float, help="default: the model's (export-onnx records the weights')")
    parser.add_argument("--max-keypoints", type=int, default=2048)
    args = parser.parse_args()

    settings = model_settings(args.model)
    for name in ("patch_scale", "min_kp_size"):
        if getattr(args, name) is None:
            if name not in settings:
                parser.error(f"{args.model} records no {name} (not from hardnet-desc export-onnx?): pass --{name.replace('_', '-')}")
            setattr(args, name, float(settings[name]))
    net = cv2.dnn.readNetFromONNX(str(args.model))
    sift = cv2.SIFT_create(nfeatures=args.max_keypoints)
    points, descriptors = [], []
    for path in (args.image1, args.image2):
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if image is None:
            parser.error(f"cannot read {path}")
        keypoints = sift.detect(image, None)
        descriptors.append(describe(net, cut_patches(image.astype(np.float32) / 255.0, keypoints, args.patch_scale, args.min_kp_size)))
        points.append(np.float32([kp.pt for kp in keypoints]))

    knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(descriptors[0], descriptors[1], k=2)
    good = [p[0] for p in knn if len(p) == 2 and p[0].distance < 0.8 * p[1].distance]
    inliers = 0
    if len(good) >= 8:
        p1 = points[0][[m.queryIdx for m in good]]
        p2 = points[1][[m.trainIdx for m in good]]
        _, mask = cv2.findFundamentalMat(p1, p2, cv2.USAC_MAGSAC, 1.0, 0.999, 10_000)
        inliers = 0 if mask is None else int(mask.sum())
    print(f"keypoints: {len(points[0])} + {len(points[1])}, matches: {len(good)}, inliers: {inliers}")


if __name__ == "__main__":
    main()
