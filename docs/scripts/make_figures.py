"""Draw the figures of docs/conventions.md from a bundled photo.

    python docs/scripts/make_figures.py        # writes docs/img/keypoint_patches.jpg and docs/img/patch_grid.png

Needs no weights: it shows where HardNet's patches come from, not what it makes of them.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from hardnet_desc.core.image import read_image, to_grey_tensor
from hardnet_desc.core.patches import DEFAULT_PATCH_SCALE, extract_patches, keypoints_to_frames

ROOT = Path(__file__).resolve().parents[2]
PHOTO = ROOT / "examples" / "data" / "sacre_coeur_1.jpg"
OUT = ROOT / "docs" / "img"


def pick_keypoints(image: np.ndarray, n: int = 12) -> list[cv2.KeyPoint]:
    """Strong, mid-sized SIFT keypoints whose patches do not overlap much."""
    kps = sorted(cv2.SIFT_create().detect(image, None), key=lambda k: -k.response)
    h, w = image.shape[:2]
    chosen: list[cv2.KeyPoint] = []
    for k in kps:
        half = 0.5 * DEFAULT_PATCH_SCALE * k.size * 1.42  # half-diagonal of the patch
        x, y = k.pt
        # the facade only (x < 0.7 w): the trees on the right make dull patches
        if not 4 <= k.size <= 14 or not (half < x < 0.7 * w - half and half < y < h - half):
            continue
        if all(np.hypot(x - c.pt[0], y - c.pt[1]) > 0.6 * DEFAULT_PATCH_SCALE * (k.size + c.size) for c in chosen):
            chosen.append(k)
        if len(chosen) == n:
            break
    return chosen


def draw_patches(image: np.ndarray, kps: list[cv2.KeyPoint], scale: int = 2) -> np.ndarray:
    """The photo, upscaled, with each keypoint's patch square, its x axis and its number."""
    canvas = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    canvas = (canvas * 0.8).astype(np.uint8)
    frames = keypoints_to_frames(kps).numpy().astype(np.float64)
    corners_unit = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64)  # patch (col, row) corners
    to_px = lambda p: np.round(((p + 0.5) * scale - 0.5) * 16).astype(np.int32)  # noqa: E731 (1/16 px, cv2 shift=4)
    for i, (A, k) in enumerate(zip(frames, kps)):
        c = A[:, 2]
        corners = c + corners_unit @ A[:, :2].T
        cv2.polylines(canvas, [to_px(corners)], True, (0, 230, 255), 2, cv2.LINE_AA, 4)
        cv2.line(canvas, tuple(to_px(c)), tuple(to_px(c + A[:, 0])), (40, 40, 255), 2, cv2.LINE_AA, 4)  # patch x axis
        cv2.circle(canvas, tuple(to_px(c)), 3 << 4, (40, 40, 255), -1, cv2.LINE_AA, 4)
        label = (corners.min(0) + 0.5) * scale - 0.5 + np.array([0.0, -6.0])  # above the square's bounding box
        cv2.putText(canvas, str(i + 1), tuple(np.round(label).astype(int)), cv2.FONT_HERSHEY_SIMPLEX, 0.9,
                    (255, 255, 255), 2, cv2.LINE_AA)
    return canvas


def patch_grid(image: np.ndarray, kps: list[cv2.KeyPoint], zoom: int = 4) -> np.ndarray:
    """The 32x32 patches HardNet sees for ``kps``, zoomed, numbered, in one row."""
    patches = extract_patches(to_grey_tensor(image), kps, patch_scale=DEFAULT_PATCH_SCALE)[:, 0].numpy()
    tiles = []
    for i, p in enumerate(patches):
        tile = cv2.resize((p * 255).clip(0, 255).astype(np.uint8), None, fx=zoom, fy=zoom,
                          interpolation=cv2.INTER_NEAREST)
        tile = cv2.copyMakeBorder(cv2.cvtColor(tile, cv2.COLOR_GRAY2BGR), 30, 6, 6, 6, cv2.BORDER_CONSTANT,
                                  value=(255, 255, 255))
        cv2.putText(tile, str(i + 1), (8, 23), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 2, cv2.LINE_AA)
        tiles.append(tile)
    cols = 6
    rows = [np.hstack(tiles[r : r + cols]) for r in range(0, len(tiles), cols)]
    rows[-1] = cv2.copyMakeBorder(rows[-1], 0, 0, 0, rows[0].shape[1] - rows[-1].shape[1], cv2.BORDER_CONSTANT,
                                  value=(255, 255, 255))
    return np.vstack(rows)


def main() -> None:
    image = read_image(PHOTO)
    kps = pick_keypoints(image)
    OUT.mkdir(parents=True, exist_ok=True)
    # Crop to the facade: the figure is about the squares, not the sky.
    xs = [k.pt[0] for k in kps]
    ys = [k.pt[1] for k in kps]
    overview = draw_patches(image, kps)
    x0, x1 = max(0, int(min(xs)) - 80) * 2, min(image.shape[1], int(max(xs)) + 80) * 2
    y0, y1 = max(0, int(min(ys)) - 80) * 2, min(image.shape[0], int(max(ys)) + 80) * 2
    overview = overview[y0:y1, x0:x1]
    if overview.shape[1] > 1400:
        overview = cv2.resize(overview, None, fx=1400 / overview.shape[1], fy=1400 / overview.shape[1],
                              interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(OUT / "keypoint_patches.jpg"), overview, [cv2.IMWRITE_JPEG_QUALITY, 85])
    cv2.imwrite(str(OUT / "patch_grid.png"), patch_grid(image, kps))
    print(f"wrote {OUT / 'keypoint_patches.jpg'} and {OUT / 'patch_grid.png'} ({len(kps)} keypoints)")


if __name__ == "__main__":
    main()
