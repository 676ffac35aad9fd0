"""Draw the pictures of docs/wide-baseline.md from the bundled photos.

    python docs/scripts/make_wide_baseline_figure.py    # writes docs/img/wide_baseline_*.png (needs the weights)

Each picture: a bundled photo against a view of it (or of the other photo) from about 80 degrees off
its axis, matched with ``match_pair(..., wide_baseline=True)``; the inlier matches are drawn.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from hardnet_desc import HardNetDescriptor
from hardnet_desc.data.warps import viewpoint_homography
from hardnet_desc.core.image import read_image
from hardnet_desc.pipeline import match_pair
from hardnet_desc.viz import draw_matches

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = ROOT / "examples" / "data"
OUT = ROOT / "docs" / "img"
#: (name, photo 1, photo 2, tilt, axis, rotation, zoom): photo 2 is warped.
FIGURES = [
    ("wide_baseline_tilt6.png", "sacre_coeur_1.jpg", "sacre_coeur_1.jpg", 6.0, 30.0, 60.0, 1.0),
    ("wide_baseline_pair_tilt4.png", "sacre_coeur_1.jpg", "sacre_coeur_2.jpg", 4.0, 100.0, -30.0, 1.3),
]


def main() -> None:
    hardnet = HardNetDescriptor(device="cpu")
    for name, first, second, tilt, axis, rotation, zoom in FIGURES:
        image1, image2 = read_image(PHOTOS / first), read_image(PHOTOS / second)
        h, w = image2.shape[:2]
        truth = viewpoint_homography((h, w), tilt, axis, rotation, zoom)
        image2 = cv2.warpPerspective(image2, truth, (w, h), flags=cv2.INTER_AREA)
        geometry = "homography" if first == second else "fundamental"
        plain = match_pair(image1, image2, hardnet, geometry=geometry)
        wide = match_pair(image1, image2, hardnet, geometry=geometry, wide_baseline=True)
        angle = np.degrees(np.arccos(1 / tilt))
        text = [f"{second} seen {angle:.0f} deg off axis; plain match_pair: {int(plain.inliers.sum())} inliers"
                f"{'' if plain.model is not None else ' (no model)'}",
                f"wide_baseline=True: step {wide.step}, {wide.views[0]} + {wide.views[1]} views, "
                f"{int(wide.inliers.sum())} inliers ({wide.geometry})"]
        picture = draw_matches(image1, image2, wide.points1[wide.inliers], wide.points2[wide.inliers], text,
                               height=260, max_lines=150)
        rgb = Image.fromarray(cv2.cvtColor(picture, cv2.COLOR_BGR2RGB))
        rgb.quantize(colors=96, method=Image.Quantize.MEDIANCUT).save(OUT / name, optimize=True)  # small PNGs
        print(f"{OUT / name}: {(OUT / name).stat().st_size // 1024} kB; " + " / ".join(text))


if __name__ == "__main__":
    main()
