"""docs/sfm.md's per-scene table and model picture, from the summaries of ``hardnet-desc sfm`` runs.

    python docs/scripts/sfm_report.py table /work/data/sfm            # markdown table to stdout
    python docs/scripts/sfm_report.py picture /work/data/sfm/hardnet/SCENE/sparse/0 docs/img/sfm_SCENE.png

``table`` reads ``ROOT/hardnet/<scene>/summary.json`` (written by ``hardnet-desc sfm``) and
``ROOT/sift/<scene>/summary.json`` (``hardnet-desc sfm --features sift``, or a plain pycolmap run
with a ``models`` list); the SIFT columns take the largest model as hardnet-desc does.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def _largest(summary: dict) -> dict:
    models = summary.get("models") or []
    if not models:
        return dict(registered_images=0, num_points3D=0, mean_track_length=float("nan"),
                    mean_reprojection_error=float("nan"))
    return max(models, key=lambda m: (m["registered_images"], m["num_points3D"]))


def _cells(summary: dict | None, started: bool = False) -> list[str]:
    if summary is None:
        return ["unfinished" if started else "not run"] + [""] * 3
    m, n = _largest(summary), summary["num_images"]
    if not m["registered_images"]:
        return [f"0 / {n}", "0", "", ""]
    return [f"{m['registered_images']} / {n}", f"{m['num_points3D']:,}", f"{m['mean_track_length']:.2f}",
            f"{m['mean_reprojection_error']:.2f}"]


def table(root: Path) -> str:
    scenes = sorted({p.parent.name for kind in ("hardnet", "sift") for p in (root / kind).glob("*/summary.json")})
    head = ("| scene | HardNet registered | points | track | reproj. px | SIFT registered | points | track "
            "| reproj. px | HardNet s |")
    lines = [head, "|" + "---|" * 10]
    for scene in scenes:
        runs, cells = {}, []
        for kind in ("hardnet", "sift"):
            path = root / kind / scene / "summary.json"
            runs[kind] = json.loads(path.read_text()) if path.exists() else None
            cells += _cells(runs[kind], started=path.parent.is_dir())
        secs = f"{runs['hardnet']['seconds']['total']:.0f}" if runs["hardnet"] else ""
        lines.append(f"| {scene} | " + " | ".join(cells + [secs]) + " |")
    return "\n".join(lines) + "\n"


def picture(model_dir: Path, out: Path, title: str | None = None) -> None:
    """Top-down scatter of the 3D points (grey) and camera centres (red).

    "Up" is the mean of the cameras' up directions (minus their image y axes in the world), so
    the view looks down on the scene as the photographer stood; the axes in that plane are the
    points' principal directions. The frame spans the cameras and 2-98 % of the points.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pycolmap

    model = pycolmap.Reconstruction(model_dir)
    xyz = np.array([p.xyz for p in model.points3D.values()])
    posed = [im for im in model.images.values() if im.has_pose]
    cams = np.array([im.projection_center() for im in posed])
    up = -np.mean([im.cam_from_world().rotation.matrix()[1] for im in posed], axis=0)
    up /= np.linalg.norm(up)
    centre = np.median(xyz, axis=0)
    flat = (xyz - centre) - np.outer((xyz - centre) @ up, up)
    _, _, vt = np.linalg.svd(flat, full_matrices=False)
    axes = vt[:2] - np.outer(vt[:2] @ up, up)
    p2, c2 = (xyz - centre) @ axes.T, (cams - centre) @ axes.T
    lo = np.minimum(np.percentile(p2, 2, axis=0), c2.min(axis=0))
    hi = np.maximum(np.percentile(p2, 98, axis=0), c2.max(axis=0))
    pad = 0.05 * (hi - lo)
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    ax.scatter(p2[:, 0], p2[:, 1], s=1.5, c="0.25", alpha=0.6, linewidths=0)
    ax.scatter(c2[:, 0], c2[:, 1], s=14, c="tab:red", marker="^", label=f"{len(cams)} cameras")
    ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
    ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title or f"{len(xyz):,} points, {len(cams)} cameras (top-down)", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    print(f"picture: {out}")


if __name__ == "__main__":
    if sys.argv[1] == "table":
        print(table(Path(sys.argv[2])), end="")
    else:
        picture(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None)
