"""Relative-pose benchmark on image pairs with known cameras (``hardnet-desc eval-pairs``).

For every pair (from a COLMAP model or a pairs file, see
``hardnet_desc.evaluation.pair_sources``): keypoints are detected once per image (OpenCV SIFT,
the ``max_keypoints`` strongest), every method describes the *same* keypoints, and descriptors are
matched by mutual nearest neighbour (plus the ratio test if ``ratio`` is given). Then, per method:

* the matched keypoints are undistorted with the known cameras and normalized by ``K``;
* the essential matrix is estimated on the normalized points with OpenCV's ``USAC_MAGSAC``:
  threshold ``ransac_px`` = 0.5 pixels divided by the mean focal length of the pair and confidence
  0.99999, as in LoFTR's evaluation (SuperGlue's uses 1 px), at most 10,000 iterations (OpenCV's
  USAC is seeded, so results repeat); ``cv2.recoverPose`` then picks ``(R, t)``;
* **pose error** = ``max(rotation error, translation direction error)`` in degrees (``inf`` when
  no pose is found); **AUC@5/10/20** = area under its cumulative curve
  (``hardnet_desc.geometry.pose_auc``, SuperGlue's and LoFTR's definition);
* **inliers**: the essential matrix's RANSAC inliers; **correct**: matches whose Sampson error
  under the ground-truth ``F = K2^-T [t]x R K1^-1`` is below ``correct_px`` (1 px).

Pairs are also grouped by baseline: the ground-truth rotation angle's terciles over all pairs of
the run (``narrow``, ``medium``, ``wide``).

Ground truth from a SIFT reconstruction was found with SIFT matches, so it favours SIFT slightly.

Example::

    results = evaluate_pairs("/data/sfm/sift", scenes=["bundler-et"], methods=["rootsift", "hardnet"])
    print(format_pose_table(results))
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..core.device import resolve_device
from ..core.patches import check_number
from ..matching import check_ratio, match_descriptors
from ..core.model import HardNet
from ..geometry import (
    AUC_THRESHOLDS,
    estimate_relative_pose,
    fundamental_from_pose,
    pose_auc,
    rotation_angle_deg,
    rotation_error_deg,
    sampson_error_px,
    transfer_error,
    translation_error_deg,
    undistort_points,
)
from .methods import DescribeFn, build_methods
from ..data.camera_pairs import CameraPair
from .pair_sources import Scene, find_sources, load_scene, scene_name
from .sequences import Results, describe_images

#: Baseline groups: terciles of the ground-truth rotation angle.
BASELINES = ("narrow", "medium", "wide")


@dataclass
class PoseResults(Results):
    """What ``evaluate_pairs`` measured (definitions in the module docstring).

    Attributes:
        config: its arguments and the definitions, in words; skipped methods (name -> why).
        thresholds: the AUC thresholds in degrees (``AUC_THRESHOLDS``).
        baseline_edges: the two rotation terciles (degrees) between narrow, medium and wide; [] without pairs.
        summary: method -> ``"overall"`` | ``"narrow"`` | ``"medium"`` | ``"wide"`` -> ``summarize_poses``, and
            ``"scenes"`` -> {scene name: ``summarize_poses``}: ``pairs``, ``auc@5/10/20``, ``matches``, ``inliers``,
            ``correct`` (means per pair) and ``failures``.
        reference: the method the others are compared with (RootSIFT, else the first of several), or None.
        differences: method -> ``"overall"`` | ``"wide"`` -> ``auc_difference`` against ``reference``.
        timing: seconds describing per method, and ``"matching+pose"``.
        scenes: per scene ``{"name", "source", "image_dir", "pairs": [{"image1", "image2", "rotation",
            "covisible", "methods": {method: pair_pose_metrics}}]}``; infinite errors stay ``inf``
            (``save_json`` writes null).
    """

    config: dict
    thresholds: list[float]
    baseline_edges: list[float]
    summary: dict[str, dict]
    reference: str | None
    differences: dict[str, dict]
    timing: dict[str, float]
    scenes: list[dict]


def pair_pose_metrics(
    points1: np.ndarray, points2: np.ndarray, pair: CameraPair, ransac_px: float = 0.5, correct_px: float = 1.0
) -> dict:
    """Pose estimate and match counts of one pair from its matched keypoints.

    Args:
        points1: ``(M, 2)`` matched keypoints in image 1, raw (distorted) OpenCV pixels.
        points2: ``(M, 2)`` their matches in image 2.
        pair: the known cameras.
        ransac_px: essential-matrix RANSAC threshold in pixels.
        correct_px: Sampson-error threshold (pixels) of a correct match.

    Returns:
        ``{'matches', 'inliers', 'correct', 'R_error', 't_error', 'pose_error'}``; errors in degrees,
        ``inf`` when no pose was found. Without a baseline (``t = 0``, a camera turned in place) a match is
        correct within ``correct_px`` of the homography ``K2 R K1^-1`` (the epipolar geometry is undefined).
    """
    check_number(ransac_px, "ransac_px")
    check_number(correct_px, "correct_px")
    n1 = undistort_points(points1, pair.K1, pair.radial1)
    n2 = undistort_points(points2, pair.K2, pair.radial2)
    ideal1 = n1 @ pair.K1[:2, :2].T + pair.K1[:2, 2]  # undistorted pixels
    ideal2 = n2 @ pair.K2[:2, :2].T + pair.K2[:2, 2]
    if np.any(pair.t):
        sampson = sampson_error_px(ideal1, ideal2, fundamental_from_pose(pair.K1, pair.K2, pair.R, pair.t))
    else:  # F = 0: every Sampson error was inf, no match correct
        sampson = transfer_error(pair.K2 @ pair.R @ np.linalg.inv(pair.K1), ideal1, ideal2)
    focal = np.mean([pair.K1[0, 0], pair.K1[1, 1], pair.K2[0, 0], pair.K2[1, 1]])
    estimate = estimate_relative_pose(n1, n2, ransac_px / focal)
    out = {"matches": int(len(n1)), "inliers": 0, "correct": int(np.count_nonzero(sampson < correct_px))}
    if estimate is None:
        return {**out, "R_error": float("inf"), "t_error": float("inf"), "pose_error": float("inf")}
    R, t, inliers = estimate
    r_err, t_err = rotation_error_deg(R, pair.R), translation_error_deg(t, pair.t)
    return {**out, "inliers": int(inliers.sum()), "R_error": r_err, "t_error": t_err, "pose_error": max(r_err, t_err)}


def load_scenes(
    sources: str | Path | Sequence[str | Path], *, images: str | Path | None = None,
    scenes: Sequence[str] | None = None, min_covisible: int = 50, max_pairs: int | None = 100, seed: int = 0,
) -> list[Scene]:
    """Scenes of every source (``hardnet_desc.evaluation.pair_sources.find_sources``).

    ``images`` is the image folder of a single scene; with several scenes, the folder holding one
    image folder per scene (``images/<scene>/``). Scene names must differ (they name the results and
    the ``--write-pairs`` files): ``ValueError`` naming both sources otherwise.
    """
    sources = [sources] if isinstance(sources, (str, Path)) else list(sources)
    paths = [p for s in sources for p in find_sources(s, scenes)]
    if not paths:  # --scenes naming none of the sources was ignored for a single scene
        raise ValueError("no scenes to evaluate" + (f": none of {', '.join(scenes)} is among the sources"
                                                    if scenes else ""))
    out = []
    for p in paths:
        image_dir = None if images is None else (Path(images) if len(paths) == 1 else Path(images) / scene_name(p))
        out.append(load_scene(p, images=image_dir, min_covisible=min_covisible, max_pairs=max_pairs, seed=seed))
    check_scene_names(out)
    return out


def check_scene_names(scenes: Sequence[Scene]) -> None:
    """Raise ``ValueError`` if two scenes share a name (their results and pairs files would collide)."""
    sources: dict[str, str] = {}
    for scene in scenes:
        if scene.name in sources:
            raise ValueError(f"two scenes are named {scene.name!r}: {sources[scene.name]} and {scene.source}; "
                             "rename one")
        sources[scene.name] = scene.source


def _scene_images(scene: Scene) -> dict[str, tuple[int, int] | None]:
    """Image name -> its camera's ``(width, height)`` (or None) for every image of the scene's pairs.

    Raises:
        FileNotFoundError: an image is not in ``scene.image_dir``.
    """
    sizes = {}
    for pair in scene.pairs:
        sizes.setdefault(pair.image1, pair.size1)
        sizes.setdefault(pair.image2, pair.size2)
    missing = [str(scene.image_dir / n) for n in sorted(sizes) if not (scene.image_dir / n).is_file()]
    if missing:
        raise FileNotFoundError(f"scene {scene.name}: {len(missing)} image(s) not found, e.g. {missing[0]}")
    return sizes


def _describe_scene(scene: Scene, sizes: dict, describe: Mapping[str, DescribeFn], max_keypoints: int,
                    timing: dict) -> dict:
    """Image name -> ``(xy, {method: desc})`` for every image of ``sizes`` (``_scene_images``); sizes checked."""
    names = sorted(sizes)
    paths = [scene.image_dir / n for n in names]
    features = {}
    for name, (xy, descs, (h, w)) in zip(names, describe_images(paths, describe, max_keypoints, timing=timing)):
        if sizes[name] is not None and tuple(sizes[name]) != (w, h):
            cw, ch = sizes[name]
            raise ValueError(f"scene {scene.name}: {name} is {w}x{h} but its camera is {cw}x{ch}")
        features[name] = (xy, descs)
    return features


def _evaluate_pair(pair: CameraPair, features: dict, ratio: float | None, device: torch.device, ransac_px: float,
                   correct_px: float, bar: tqdm) -> dict:
    """Match one pair with every method and score the poses (see ``pair_pose_metrics``)."""
    (xy1, d1), (xy2, d2) = features[pair.image1], features[pair.image2]
    result = {}
    for name in d1:
        m = match_descriptors(d1[name], d2[name], ratio=ratio, mutual=True, device=device)
        result[name] = pair_pose_metrics(xy1[m.query_idx], xy2[m.train_idx], pair, ransac_px, correct_px)
    bar.update()
    return {"image1": pair.image1, "image2": pair.image2, "rotation": rotation_angle_deg(pair.R),
            "covisible": pair.covisible, "methods": result}


def evaluate_pairs(
    sources: str | Path | Sequence[str | Path] | Sequence[Scene],
    methods: Sequence[str] | Mapping[str, DescribeFn] = ("sift", "rootsift", "hardnet"),
    *,
    images: str | Path | None = None,
    scenes: Sequence[str] | None = None,
    weights: str | Path | HardNet | None = None,
    max_keypoints: int = 2000,
    ratio: float | None = None,
    max_pairs: int | None = 100,
    min_covisible: int = 50,
    seed: int = 0,
    ransac_px: float = 0.5,
    correct_px: float = 1.0,
    device: str | torch.device = "auto",
    precision: str = "fp32",
    progress: bool = False,
) -> PoseResults:
    """Run the relative-pose benchmark (definitions in the module docstring).

    Args:
        sources: pairs files, COLMAP models, scene folders or folders of scenes (see
            ``hardnet_desc.evaluation.pair_sources``), or already loaded scenes.
        methods: names from ``hardnet_desc.evaluation.methods.METHODS``, or name -> describe function.
        images: image folder (see ``load_scenes``). scenes: keep only these scene names.
        weights: HardNet weights for ``hardnet``/``kornia``; None = the default weights.
        max_keypoints: SIFT keypoints per image, the strongest by response.
        ratio: Lowe's ratio threshold on top of mutual NN, or None for mutual NN only.
        max_pairs, min_covisible, seed: pair selection per scene.
        ransac_px: essential-matrix RANSAC threshold in pixels. correct_px: Sampson threshold (both finite, > 0).
        device, precision: for HardNet and the matcher.
        progress: progress bar over pairs.

    Returns:
        A ``PoseResults``; ``to_dict()`` (or ``save_json``) gives its JSON form.

    Raises (before any image is described): ``ValueError`` for a setting out of range, two scenes of one
    name or no pair at all; ``FileNotFoundError`` for a missing image of any scene.
    """
    if max_keypoints < 1:
        raise ValueError(f"max_keypoints must be >= 1, got {max_keypoints}")
    check_ratio(ratio)
    check_number(ransac_px, "ransac_px")
    check_number(correct_px, "correct_px")
    if sources and isinstance(sources, Sequence) and not isinstance(sources, str) and isinstance(sources[0], Scene):
        loaded = list(sources)
        check_scene_names(loaded)
    else:
        loaded = load_scenes(sources, images=images, scenes=scenes, min_covisible=min_covisible,
                             max_pairs=max_pairs, seed=seed)
    if not any(scene.pairs for scene in loaded):
        raise ValueError(f"no pairs to evaluate in {', '.join(scene.source for scene in loaded)}")
    images = [_scene_images(scene) for scene in loaded]  # every scene's photos before any work
    if isinstance(methods, Mapping):
        describe, skipped = dict(methods), {}
    else:
        describe, skipped = build_methods(methods, weights=weights, device=device, precision=precision)
    match_device = resolve_device(device)
    timing = {**dict.fromkeys(describe, 0.0), "matching+pose": 0.0}
    per_scene = []
    with tqdm(total=sum(len(s.pairs) for s in loaded), desc="pairs", disable=not progress) as bar:
        for scene, sizes in zip(loaded, images):
            features = _describe_scene(scene, sizes, describe, max_keypoints, timing)
            t0 = time.perf_counter()
            records = [_evaluate_pair(pair, features, ratio, match_device, ransac_px, correct_px, bar)
                       for pair in scene.pairs]
            timing["matching+pose"] += time.perf_counter() - t0
            per_scene.append({"name": scene.name, "source": scene.source, "image_dir": str(scene.image_dir),
                              "pairs": records})
    edges = _baseline_edges(per_scene)
    reference = _reference(list(describe))
    return PoseResults(
        config={
            "sources": [s.source for s in loaded], "methods": list(describe), "skipped": skipped,
            "weights":
                "HardNet module" if isinstance(weights, HardNet) else (None if weights is None else str(weights)),
            "max_keypoints": max_keypoints, "ratio": ratio, "max_pairs": max_pairs, "min_covisible": min_covisible,
            "seed": seed, "ransac_px": ransac_px, "correct_px": correct_px, "device": str(device),
            "precision": precision,
            "matching": "mutual nearest neighbour" + (f" + ratio < {ratio}" if ratio else ""),
            "pose": f"essential matrix, cv2.USAC_MAGSAC, {ransac_px:g} px / mean focal, confidence 0.99999, "
                    "10,000 iterations; recoverPose",
            "correct": f"Sampson error under the ground-truth F < {correct_px:g} px",
        },
        thresholds=list(AUC_THRESHOLDS),
        baseline_edges=edges,
        summary={name: _summaries(per_scene, name, edges) for name in describe},
        reference=reference,
        differences=_differences(per_scene, list(describe), reference, edges),
        timing=timing,
        scenes=per_scene,
    )


def _baseline_edges(per_scene: list[dict]) -> list[float]:
    rotations = [p["rotation"] for s in per_scene for p in s["pairs"]]
    return [float(x) for x in np.quantile(rotations, [1 / 3, 2 / 3])] if rotations else []


def _baseline(rotation: float, edges: list[float]) -> str:
    return BASELINES[int(np.searchsorted(edges, rotation, side="left"))]


def summarize_poses(records: Sequence[dict], thresholds: Sequence[float] = AUC_THRESHOLDS) -> dict:
    """Pose AUC and mean counts over ``pair_pose_metrics`` results (each pair weighs the same)."""
    n, nan = len(records), float("nan")
    out: dict = {"pairs": n}
    for t, auc in zip(thresholds, pose_auc([r["pose_error"] for r in records], thresholds)):
        out[f"auc@{t:g}"] = auc
    for key in ("matches", "inliers", "correct"):
        out[key] = float(np.mean([r[key] for r in records])) if n else nan
    out["failures"] = int(sum(not np.isfinite(r["pose_error"]) for r in records))
    return out


def auc_difference(
    errors_a: Sequence[float], errors_b: Sequence[float], thresholds: Sequence[float] = AUC_THRESHOLDS,
    n_boot: int = 1000, seed: int = 0,
) -> dict:
    """AUC of method a minus method b on the same pairs, with a 95 % paired bootstrap interval.

    Pairs are resampled with replacement (the same draw for both methods), ``n_boot`` times.

    Returns:
        ``{"auc@t": [difference, low, high]}`` for each threshold; NaN without pairs.
    """
    a, b = np.asarray(errors_a, np.float64), np.asarray(errors_b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"the two methods have different pairs: {a.shape} vs {b.shape}")
    diff = np.array(pose_auc(a, thresholds)) - np.array(pose_auc(b, thresholds))
    if not a.size:
        return {f"auc@{t:g}": [float("nan")] * 3 for t in thresholds}
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, a.size, size=(n_boot, a.size))
    boot = np.array([np.array(pose_auc(a[i], thresholds)) - np.array(pose_auc(b[i], thresholds)) for i in draws])
    low, high = np.percentile(boot, [2.5, 97.5], axis=0)
    return {f"auc@{t:g}": [float(d), float(lo), float(hi)] for t, d, lo, hi in zip(thresholds, diff, low, high)}


def _differences(per_scene: list[dict], methods: Sequence[str], reference: str | None, edges: list[float]) -> dict:
    """method -> group ("overall", "wide") -> ``auc_difference`` against ``reference``."""
    if reference is None:
        return {}
    pairs = [p for s in per_scene for p in s["pairs"]]
    out = {}
    for name in methods:
        if name == reference:
            continue
        out[name] = {}
        for group in ("overall", "wide"):
            chosen = [p for p in pairs if group == "overall" or _baseline(p["rotation"], edges) == group]
            out[name][group] = auc_difference([p["methods"][name]["pose_error"] for p in chosen],
                                              [p["methods"][reference]["pose_error"] for p in chosen])
    return out


def _reference(methods: Sequence[str]) -> str | None:
    """The method others are compared with: RootSIFT, else the first of several."""
    return "rootsift" if "rootsift" in methods else (methods[0] if len(methods) > 1 else None)


def _summaries(per_scene: list[dict], method: str, edges: list[float]) -> dict:
    pairs = [p for s in per_scene for p in s["pairs"]]
    out = {"overall": summarize_poses([p["methods"][method] for p in pairs])}
    for group in BASELINES:
        out[group] = summarize_poses([p["methods"][method] for p in pairs if _baseline(p["rotation"], edges) == group])
    out["scenes"] = {s["name"]: summarize_poses([p["methods"][method] for p in s["pairs"]]) for s in per_scene}
    return out


_COLUMNS = (("AUC@5", "auc@5", "{:.3f}"), ("AUC@10", "auc@10", "{:.3f}"), ("AUC@20", "auc@20", "{:.3f}"),
            ("matches", "matches", "{:.1f}"), ("inliers", "inliers", "{:.1f}"), ("correct", "correct", "{:.1f}"))
_RATIOS = ("auc@5", "auc@10", "auc@20", "inliers", "correct")


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 and np.isfinite(a) and np.isfinite(b) else "-"


def _group_table(summary: dict, group: str, title: str, reference: str | None) -> list[str]:
    methods = list(summary)
    width = max(len("method"), *map(len, methods))
    rows = [f"{title} ({summary[methods[0]][group]['pairs']} pairs)",
            f"{'method':<{width}}" + "".join(f"{c:>9}" for c, _, _ in _COLUMNS)
            + (f"   vs {reference}: " + " ".join(f"{k.upper():>7}" for k in _RATIOS) if reference else "")]
    for name in methods:
        s = summary[name][group]
        line = f"{name:<{width}}" + "".join(f"{fmt.format(s[key]):>9}" for _, key, fmt in _COLUMNS)
        if reference:
            ref = summary[reference][group]
            line += " " * (len(reference) + 7) + " ".join(f"{_ratio(s[k], ref[k]):>7}" for k in _RATIOS)
        rows.append(line)
    return rows


def _difference_lines(differences: dict, group: str, reference: str | None) -> list[str]:
    lines = []
    for name, groups in differences.items():
        cells = ", ".join(f"{key.upper()} {d:+.3f} [{lo:+.3f}, {hi:+.3f}]" for key, (d, lo, hi) in groups[group].items())
        lines.append(f"{name} - {reference}: {cells}")
    return lines + (["(differences with 95% paired-bootstrap intervals over pairs)"] if lines else []) + [""]


def format_pose_table(results: PoseResults) -> str:
    """Plain-text tables: all pairs, the widest-baseline third, and AUC@10 per scene; methods side by
    side with ratios against RootSIFT (or the first method when RootSIFT was not run)."""
    summary, config, edges = results.summary, results.config, results.baseline_edges
    methods = list(summary)
    reference, differences = results.reference, results.differences
    n_scenes = len(results.scenes)
    lines = [f"{n_scenes} scene(s); {config['max_keypoints']} SIFT keypoints per image; {config['matching']}; "
             f"{config['pose']}; correct = {config['correct']}",
             "note: ground-truth poses from a SIFT reconstruction favour SIFT slightly", ""]
    lines += _group_table(summary, "overall", "all pairs", reference)
    lines += _difference_lines(differences, "overall", reference)
    if len(edges) == 2:
        lines += _group_table(summary, "wide", f"widest baselines: rotation > {edges[1]:.1f} deg", reference)
        lines += _difference_lines(differences, "wide", reference)
        lines += _group_table(summary, "narrow", f"narrowest baselines: rotation <= {edges[0]:.1f} deg", reference)
        lines.append("")
    width = max(len("scene"), *(len(s["name"]) for s in results.scenes))
    lines.append("AUC@10 per scene")
    lines.append(f"{'scene':<{width}}{'pairs':>7}" + "".join(f"{m:>10}" for m in methods))
    for scene in results.scenes:
        cells = "".join(f"{summary[m]['scenes'][scene['name']]['auc@10']:>10.3f}" for m in methods)
        lines.append(f"{scene['name']:<{width}}{len(scene['pairs']):>7}" + cells)
    lines += [f"skipped {name}: {why}" for name, why in (config.get("skipped") or {}).items()]
    return "\n".join(lines).rstrip() + "\n"


__all__ = ["BASELINES", "PoseResults", "auc_difference", "check_scene_names", "evaluate_pairs", "format_pose_table",
           "load_scenes", "pair_pose_metrics", "summarize_poses"]
