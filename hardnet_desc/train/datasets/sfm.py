"""Real correspondences from structure from motion, written in the PhotoTour layout.

Every 3D point of a COLMAP reconstruction whose track has at least ``min_track`` observations
gives one patch per observation, cut around that observation's own SIFT keypoint (position,
scale and orientation from the COLMAP database) with ``hardnet_desc.core.patches.extract_patches``,
the code ``HardNetDescriptor.compute`` uses, at 64x64 with ``supersample=1`` (the trainer's 2x2
mean then equals the 32x32 inference patch). The label is the 3D point, unique across scenes;
the second column of ``info.txt`` is the scene's index, so the trainer's ``--photos-per-batch``
draws negatives from one scene. Whole scenes are held out for validation.

A scene folder (as ``pycolmap`` / ``hardnet-desc sfm`` write it) holds ``database.db``,
``sparse/<k>/`` (COLMAP models) and ``summary.json`` with the photo folder as ``image_dir``
(read by ``hardnet_desc.integrations.colmap.scene``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree

from ...core.image import read_image, to_grey_tensor
from ...core.patches import PatchSpec, check_integer, check_number, extract_patches
from ...integrations.colmap import (
    SUMMARY,
    ColmapScene,
    colmap_like_sift,
    existing_run,
    keypoints_from_colmap,
    load_model,
    open_database,
    photo_names,
    read_scene_folder,
    reconstruct as colmap_reconstruct,
)
from ...outputs import FORCE, check_writable
from ...data.phototour import STORED_SIZE, check_count, check_dataset_folder, make_pairs
from .writer import Part, StagedDataset, check_outside, default_patch_spec, spec_record, write_split

#: Scenes held out for validation (the same scenes ``eval-pairs`` reports on).
DEFAULT_VAL_SCENES = (
    "bundler-et", "vggsfm-british-museum", "mast3r-nle-tower", "opensfm-lund", "vggsfm-kitchen", "bm-mentuemhat",
)
#: Bin edges of the track-length histogram in the record (last bin: this and longer).
TRACK_BINS = (2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50)
#: How photo folders are reconstructed (``reconstruct``'s options, as ``summary.json`` records them). A
#: reconstruction of ours in the work folder made with these options, of the photos as they are, is reused.
SFM_OPTIONS = {"features": "sift", "matcher": "exhaustive", "max_image_size": 1600, "max_keypoints": 8192,
               "camera_model": "SIMPLE_RADIAL", "camera_params": None}



def read_scene(folder: str | Path, image_dir: str | Path | None = None) -> ColmapScene:
    """A scene folder with ``database.db``, ``sparse/<k>/`` and ``summary.json`` (whose ``image_dir``
    names the photo folder unless ``image_dir`` is given; default ``folder/images``).

    A finished reconstruction that found no model (``summary.json`` but no ``sparse/<k>/``) gives a
    scene with no models; a folder with neither is an error (e.g. a reconstruction still running).
    """
    scene = read_scene_folder(folder, image_dir)
    if (scene.summary or {}).get("finished") is False:
        raise FileNotFoundError(f"{folder}: an unfinished reconstruction (its summary.json says finished: false): "
                                "it is still running, or was stopped; reconstruct it again")
    if scene.database is None or not (scene.models or scene.summary is not None):
        raise FileNotFoundError(f"{folder}: not a reconstructed scene (needs database.db and sparse/<k>/points3D.bin, "
                                "or summary.json if no model was found)")
    if scene.image_dir is None:
        scene = replace(scene, image_dir=scene.folder / "images")
    if not scene.image_dir.is_dir():
        raise FileNotFoundError(f"{folder}: photo folder {scene.image_dir} not found (summary.json's image_dir)")
    return scene


def find_scenes(
    scenes: str | Path | Sequence[str | Path],
    *,
    reconstruct: bool = False,
    work_dir: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
) -> list[ColmapScene]:
    """Scenes of a folder of scene folders (or of a list of them), sorted by name.

    A folder without ``database.db`` and ``sparse/`` is taken as a folder of photos: with
    ``reconstruct`` it is reconstructed with COLMAP's SIFT (``SFM_OPTIONS``,
    ``hardnet_desc.integrations.colmap.reconstruct``) into ``work_dir/<name>``
    (default ``<its parent>/_sfm/<name>``); without, it is an error. Every folder is checked before
    any is reconstructed (``_plan_scenes``). A reconstruction of ours already there is reused if it was
    made with ``SFM_OPTIONS`` from the photos as they are, else redone; one hardnet-desc did not write
    is replaced only with ``force``.
    """
    return _open_scenes(_plan_scenes(scenes, reconstruct=reconstruct, work_dir=work_dir, force=force), progress)


@dataclass(frozen=True)
class _PlannedScene:
    """A scene folder, read (``scene``), or a photo folder to reconstruct into ``work`` (``scene`` is ``None``;
    ``state``: what ``work`` holds, ``hardnet_desc.integrations.colmap.existing_run``)."""

    name: str
    folder: Path
    scene: ColmapScene | None = None
    work: Path | None = None
    state: str = "none"


def _plan_scenes(
    scenes: str | Path | Sequence[str | Path],
    *,
    reconstruct: bool = False,
    work_dir: str | Path | None = None,
    force: bool = False,
) -> list[_PlannedScene]:
    """The scenes ``find_scenes`` would give, checked and named, with nothing reconstructed yet.

    Raises:
        ValueError: a bad ``summary.json``, a photo folder without ``reconstruct``, or two folders of one scene name.
        FileNotFoundError: no scene folders, a missing photo folder, or a photo folder of fewer than two photos.
        FileExistsError: a photo folder's work folder holds a reconstruction hardnet-desc did not write (and
            ``force`` is off).
        NotADirectoryError, PermissionError: a work folder cannot be written.
    """
    if not isinstance(reconstruct, bool):
        raise TypeError(f"reconstruct must be True or False (photo folders are reconstructed with COLMAP's SIFT), "
                        f"got {type(reconstruct).__name__}")
    if isinstance(scenes, (str, Path)):
        root = Path(scenes)
        if not root.is_dir():
            raise FileNotFoundError(f"scenes folder not found: {root}")
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
    else:
        folders = [Path(p) for p in scenes]
    planned: dict[str, _PlannedScene] = {}
    for folder in folders:
        if read_scene_folder(folder).reconstructed:
            scene = read_scene(folder)
            entry = _PlannedScene(scene.name, folder, scene)
        elif not reconstruct:
            raise ValueError(f"{folder} has no COLMAP model (database.db, sparse/<k>/): reconstruct it first "
                             "(hardnet-desc sfm, pycolmap, or reconstruct=True)")
        else:
            photo_names(folder)  # at least two photos
            work = Path(work_dir or folder.parent / "_sfm") / folder.name
            check_writable(work / SUMMARY)
            state = existing_run(work, folder, **SFM_OPTIONS)
            if state == "foreign" and not force:
                what = ("a summary.json hardnet-desc did not write" if (work / SUMMARY).exists() else
                        "a reconstruction without hardnet-desc's summary.json: an unfinished run, or another program's")
                raise FileExistsError(f"{work} holds {what}; pass {FORCE} to replace it")
            entry = _PlannedScene(folder.name, folder, None, work, state)
        if entry.name in planned:
            raise ValueError(f"{planned[entry.name].folder} and {folder} are both the scene {entry.name!r} "
                             "(summary.json's scene, else the folder's name): give each scene its own name")
        planned[entry.name] = entry
    if not planned:
        raise FileNotFoundError(f"no scene folders in {scenes}")
    return sorted(planned.values(), key=lambda p: p.name)


def _open_scenes(planned: Sequence[_PlannedScene], progress: bool = True) -> list[ColmapScene]:
    """The scenes of ``_plan_scenes``, photo folders reconstructed (or their earlier reconstruction reused)."""
    found = []
    for entry in planned:
        if entry.scene is not None:
            found.append(entry.scene)
            continue
        if entry.state != "same":
            colmap_reconstruct(entry.folder, entry.work, **SFM_OPTIONS, overwrite=entry.state != "none",
                               progress=progress)
        found.append(read_scene(entry.work, image_dir=entry.folder))
    return found


def largest_model(scene: ColmapScene):
    """The scene's model with the most registered images (then 3D points), and its folder."""
    best = None
    for path in scene.models:
        rec = load_model(path)
        key = (rec.num_reg_images(), rec.num_points3D())
        if best is None or key > best[0]:
            best = (key, rec, path)
    return best[1], best[2]


@dataclass
class Tracks:
    """Chosen observations of a model, one row per observation.

    Attributes:
        point3D_ids: (P,) int64 COLMAP ids of the chosen 3D points; ``point`` indexes them.
        point: (M,) int64 index into ``point3D_ids``.
        image_id: (M,) int64 COLMAP image id of the observation.
        point2D_idx: (M,) int64 index of the observation's keypoint in that image.
        track_length: (P,) int64 track length of each chosen point in the model (photos seeing it).
        eligible: points with a long enough track; ``distinct``: of those, points left after
            dropping near-copies (before the ``max_points`` cap).
    """

    point3D_ids: np.ndarray
    point: np.ndarray
    image_id: np.ndarray
    point2D_idx: np.ndarray
    track_length: np.ndarray
    eligible: int = 0
    distinct: int = 0


def check_selection(min_track: int, max_points: int | None, max_patches_per_point: int | None,
                    min_point_distance: float, seed: int) -> None:
    """Raise ``ValueError``/``TypeError`` naming the first of ``select_tracks``' settings no selection can use."""
    check_integer(min_track, "min_track", 2)  # a track of one observation has no match
    check_integer(max_points, "max_points", 1, "None: all")
    check_integer(max_patches_per_point, "max_patches_per_point", 2, "None: all")
    check_number(min_point_distance, "min_point_distance", strict=False)
    check_integer(seed, "seed", 0)


def select_tracks(
    rec,
    *,
    min_track: int = 2,
    max_points: int | None = None,
    max_patches_per_point: int | None = None,
    min_point_distance: float = 3.0,
    seed: int = 0,
) -> Tracks:
    """Choose the 3D points and observations of a ``pycolmap.Reconstruction`` that become patches.

    Points with fewer than ``min_track`` observations are skipped. Of two points whose keypoints lie
    within ``min_point_distance`` px in some photo (SIFT repeats a keypoint per orientation, and
    neighbours look alike), only the one with the longer track is kept: as in-batch negatives such
    near-copies would teach the net to separate what matching counts as the same. Then at most
    ``max_points`` points (a seeded random choice) and, per point, ``max_patches_per_point``
    observations (also random) are kept. A point seen twice in one photo gives one patch there.
    """
    check_selection(min_track, max_points, max_patches_per_point, min_point_distance, seed)
    rng = np.random.default_rng(seed)
    pids, lengths, elements = [], [], []
    for pid, p in rec.points3D.items():
        if p.track.length() < min_track:
            continue
        pairs = np.array([(e.image_id, e.point2D_idx) for e in p.track.elements], np.int64)
        # a merged track can see one photo twice (one SIFT position, two orientations): keep one
        pairs = pairs[np.sort(np.unique(pairs[:, 0], return_index=True)[1])]
        if len(pairs) >= min_track:
            pids.append(pid)
            lengths.append(len(pairs))
            elements.append(pairs)
    pids, lengths = np.array(pids, np.int64), np.array(lengths, np.int64)
    keep = (_drop_near_copies(rec, elements, lengths, min_point_distance) if min_point_distance > 0
            else np.arange(len(pids)))
    distinct = len(keep)
    if max_points is not None and len(keep) > max_points:
        keep = np.sort(rng.choice(keep, size=max_points, replace=False))
    point, image_id, idx2d = [], [], []
    for new, old in enumerate(keep):
        els = elements[old]
        if max_patches_per_point is not None and len(els) > max_patches_per_point:
            els = els[np.sort(rng.choice(len(els), size=max_patches_per_point, replace=False))]
        point.append(np.full(len(els), new, np.int64))
        image_id.append(els[:, 0])
        idx2d.append(els[:, 1])
    cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.int64))
    return Tracks(pids[keep], cat(point), cat(image_id), cat(idx2d), lengths[keep], len(pids), distinct)


def _drop_near_copies(rec, elements: list[np.ndarray], lengths: np.ndarray, min_distance: float) -> np.ndarray:
    """Indices of the points kept greedily, longest track first, none near a kept one in any photo."""
    owner = np.repeat(np.arange(len(elements)), [len(e) for e in elements])
    els = np.concatenate(elements) if elements else np.zeros((0, 2), np.int64)
    neighbours: list[list[int]] = [[] for _ in elements]
    for image_id in np.unique(els[:, 0]):
        rows = np.flatnonzero(els[:, 0] == image_id)
        points2d = rec.images[int(image_id)].points2D
        xy = np.array([points2d[int(i)].xy for i in els[rows, 1]], np.float64).reshape(-1, 2)
        for a, b in cKDTree(xy).query_pairs(min_distance, output_type="ndarray"):
            pa, pb = owner[rows[a]], owner[rows[b]]
            if pa != pb:
                neighbours[pa].append(pb)
                neighbours[pb].append(pa)
    kept = np.zeros(len(elements), bool)
    for i in np.argsort(-lengths, kind="stable"):
        if not any(kept[j] for j in neighbours[i]):
            kept[i] = True
    return np.flatnonzero(kept)


def reprojection_errors(rec, tracks: Tracks) -> np.ndarray:
    """Distance in pixels between each chosen observation and its 3D point projected into the photo: (M,)."""
    errors = np.full(len(tracks.point), np.nan)
    xyz = np.array([rec.points3D[int(p)].xyz for p in tracks.point3D_ids], np.float64).reshape(-1, 3)
    for image_id in np.unique(tracks.image_id):
        rows = np.flatnonzero(tracks.image_id == image_id)
        image = rec.images[int(image_id)]
        pose = image.cam_from_world().matrix()
        cam = xyz[tracks.point[rows]] @ pose[:, :3].T + pose[:, 3]
        uv = image.camera.img_from_cam(cam, check_cheirality=False)
        xy = np.array([image.points2D[int(i)].xy for i in tracks.point2D_idx[rows]], np.float64)
        errors[rows] = np.linalg.norm(uv - xy, axis=1)
    return errors


def observation_keypoints(rec, database: str | Path, tracks: Tracks, model: str | Path | None = None) -> np.ndarray:
    """OpenCV keypoints ``(M, 4)`` ``(x, y, size, angle_deg)`` of the chosen observations, from the database.

    Raises ``ValueError``, naming ``database`` and ``model`` (the model's folder, for the message), if the database
    is not the model's: a photo of the model missing, or keypoints other than the model's.
    """
    not_its = f"{database} is not the database of the model{f' {model}' if model else ''}"
    out = np.zeros((len(tracks.point), 4))
    with open_database(database) as db:
        for image_id in np.unique(tracks.image_id):
            rows = np.flatnonzero(tracks.image_id == image_id)
            image = rec.images[int(image_id)]
            entry = db.read_image_with_name(image.name)
            if entry is None:
                raise ValueError(f"{not_its}: it has no photo {image.name}")
            raw = db.read_keypoints(entry.image_id)
            idx = tracks.point2D_idx[rows]
            xy = np.array([image.points2D[int(i)].xy for i in idx], np.float64)
            if (raw.shape[1] != 6 or len(raw) != len(image.points2D)
                    or np.abs(raw[idx, :2] - xy).max(initial=0.0) > 1e-2):
                raise ValueError(f"{not_its}: its keypoints of {image.name} are not the model's")
            out[rows] = keypoints_from_colmap(raw[idx])
    return out


#: ``check_photo``: keypoints tried per photo, fewest a photo is checked with, and the share that must be found.
CHECK_KEYPOINTS, CHECK_LEAST, CHECK_FOUND = 32, 16, 0.25


def check_photo(grey: torch.Tensor, keypoints: np.ndarray, path: str | Path) -> None:
    """Raise ``ValueError`` unless ``grey`` (``(1, 1, H, W)``, in [0, 1]) is the photo whose SIFT keypoints
    ``keypoints`` (``(k, 4)`` OpenCV, as the database stores them) are.

    OpenCV's SIFT (``colmap_like_sift``) runs on a window reaching 4 keypoint sizes (at least 16 px) around
    each of ``CHECK_KEYPOINTS`` of them (spread over the list) and must find a keypoint within 1 px (or a
    tenth of its size) and a quarter of its size at ``CHECK_FOUND`` of them. On the committed test scene
    69-97 % are found in the photos reconstructed (COLMAP's SIFT or hardnet-desc sfm's; 50 % or more after
    re-saving them as JPEG of quality 50; photos downscaled for extraction alike), 0-6 % in other or flipped
    photos of the same size. A few milliseconds per photo; a photo with fewer than ``CHECK_LEAST`` keypoints
    among those cut is not checked.
    """
    if len(keypoints) < CHECK_LEAST:
        return
    picked = keypoints[np.linspace(0, len(keypoints) - 1, min(CHECK_KEYPOINTS, len(keypoints))).round().astype(int)]
    sift, found = colmap_like_sift(), 0
    for x, y, size, _ in picked:
        half = int(np.ceil(max(16.0, 4.0 * size)))
        x0, y0 = max(0, int(round(x)) - half), max(0, int(round(y)) - half)
        window = (grey[0, 0, y0 : int(round(y)) + half + 1, x0 : int(round(x)) + half + 1] * 255).round().clamp(0, 255)
        near = np.array([(k.pt[0] + x0 - x, k.pt[1] + y0 - y, k.size)
                         for k in sift.detect(window.to(torch.uint8).numpy(), None)]).reshape(-1, 3)
        found += bool(((np.hypot(near[:, 0], near[:, 1]) < max(1.0, 0.1 * size))
                       & (np.abs(np.log(near[:, 2] / size)) < 0.25)).any())
    if found < CHECK_FOUND * len(picked):
        raise ValueError(f"{path}: SIFT finds only {found} of {len(picked)} of the database's keypoints again in it: "
                         "not the photo that was reconstructed (replaced since?)")


def cut_patches(
    image_path: str | Path, keypoints: np.ndarray, patch_scale: float, size: tuple[int, int], min_kp_size: float = 0.0,
    check: bool = False,
) -> np.ndarray:
    """``(k, 64, 64)`` uint8 patches of one photo, cut as ``HardNetDescriptor.compute`` cuts them (at 64x64).

    Args:
        image_path: the photo.
        keypoints: ``(k, 4)`` OpenCV keypoints, centres inside the photo.
        patch_scale: patch side in units of ``kp.size``.
        size: ``(width, height)`` the model's camera gives the photo; another size is an error.
        min_kp_size: least ``kp.size`` in pixels a patch is cut for (``hardnet_desc.core.patches``).
        check: ``keypoints`` are the database's SIFT keypoints of the photo: make sure it is the photo they
            were found in (``check_photo``).
    """
    image = read_image(image_path)
    if image.shape[1::-1] != tuple(size):
        raise ValueError(f"{image_path} is {image.shape[1]}x{image.shape[0]}, but the model's camera is "
                         f"{size[0]}x{size[1]}: not the photo that was reconstructed")
    grey = to_grey_tensor(image)
    if check:
        check_photo(grey, keypoints, image_path)
    with torch.inference_mode():
        p = extract_patches(grey, keypoints, patch_size=STORED_SIZE, supersample=1,
                            patch_scale=patch_scale, min_kp_size=min_kp_size)
    return (p[:, 0] * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()


@dataclass
class ScenePatches:
    """Patches ``(N, 64, 64)`` uint8 of one scene (or model), grouped by point.

    Attributes:
        patches: (N, 64, 64) uint8.
        labels: (N,) int64 local point labels 0..P-1.
        record: the numbers of the scene (or model).
        photo: (N,) int64 COLMAP image id of each patch's photo.
        xy: (N, 2) float64 keypoint position of each patch in its photo (OpenCV pixels).
    """

    patches: np.ndarray
    labels: np.ndarray
    record: dict
    photo: np.ndarray
    xy: np.ndarray


def model_patches(
    scene: ColmapScene, rec, *, patch_scale: float, min_kp_size: float = 0.0, seed: int = 0,
    model: str | Path | None = None, **select
) -> ScenePatches:
    """Patches of one model of ``scene`` (``model``: its folder, for messages; ``select``: ``select_tracks``
    options). Each photo is checked to be the one reconstructed (its size, and ``check_photo``)."""
    tracks = select_tracks(rec, seed=seed, **select)
    errors = reprojection_errors(rec, tracks)
    keypoints = observation_keypoints(rec, scene.database, tracks, model)
    patches = np.zeros((len(keypoints), STORED_SIZE, STORED_SIZE), np.uint8)
    ok = np.zeros(len(keypoints), bool)
    for image_id in np.unique(tracks.image_id):
        rows = np.flatnonzero(tracks.image_id == image_id)
        image = rec.images[int(image_id)]
        w, h = image.camera.width, image.camera.height
        kp = keypoints[rows]
        inside = (kp[:, 0] >= -0.5) & (kp[:, 0] <= w - 0.5) & (kp[:, 1] >= -0.5) & (kp[:, 1] <= h - 0.5)
        if inside.any():
            patches[rows[inside]] = cut_patches(
                scene.image_dir / image.name, kp[inside], patch_scale, (w, h), min_kp_size, check=True
            )
        ok[rows] = inside
    counts = np.bincount(tracks.point[ok], minlength=len(tracks.point3D_ids))
    ok &= counts[tracks.point] >= 2  # a point left with one patch has no positive
    _, labels = np.unique(tracks.point[ok], return_inverse=True)
    used = np.unique(tracks.point[ok])
    numbers = {
        "registered": rec.num_reg_images(), "points3D": rec.num_points3D(),
        "points_eligible": tracks.eligible, "points_distinct": tracks.distinct, "points": len(used),
        "patches": int(ok.sum()), "dropped_outside": int((~ok).sum()),
        "model_mean_reprojection_error": rec.compute_mean_reprojection_error(),
        "reprojection_error": _stats(errors[ok]),
        "track_lengths": tracks.track_length[used].tolist(),
    }
    order = np.flatnonzero(ok)[np.argsort(labels, kind="stable")]  # patches of one point together
    return ScenePatches(patches[order], np.sort(labels, kind="stable").astype(np.int64), numbers,
                        tracks.image_id[order], keypoints[order, :2])


def _stats(x: np.ndarray) -> dict:
    if not len(x):
        return {"mean": None, "median": None, "p95": None, "max": None}
    return {"mean": float(x.mean()), "median": float(np.median(x)), "p95": float(np.percentile(x, 95)),
            "max": float(x.max())}


def scene_patches(scene: ColmapScene, *, all_models: bool = False, **options) -> ScenePatches:
    """Patches of a scene's largest model (or of all its models, labels kept apart); see ``model_patches``."""
    if all_models:
        models = [(load_model(p), p) for p in scene.models]
    else:
        models = [largest_model(scene)]
    parts, records, offset, registered = [], [], 0, set()
    for rec, path in models:
        registered |= {rec.images[i].name for i in rec.reg_image_ids()}
        part = model_patches(scene, rec, model=path, **options)
        part.labels += offset
        offset = int(part.labels.max()) + 1 if len(part.labels) else offset
        parts.append(part)
        records.append({"model": str(path), **part.record})
    record = {"name": scene.name, "image_dir": str(scene.image_dir), "images": scene.num_images or _count_images(scene)}
    for key in ("points3D", "points_eligible", "points_distinct", "points", "patches", "dropped_outside"):
        record[key] = sum(r[key] for r in records)
    record["registered"] = len(registered)  # photos in any model (one photo may be in several)
    record["models"] = records
    return ScenePatches(*(np.concatenate([getattr(x, k) for x in parts]) for k in ("patches", "labels")), record,
                        *(np.concatenate([getattr(x, k) for x in parts]) for k in ("photo", "xy")))


def _count_images(scene: ColmapScene) -> int:
    from ...data.images import list_images

    return len(list_images(scene.image_dir))


def make_sfm_dataset(
    scenes: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    min_track: int = 2,
    max_points_per_scene: int | None = 20_000,
    max_patches_per_point: int | None = 10,
    min_point_distance: float = 3.0,
    val_scenes: Sequence[str] = DEFAULT_VAL_SCENES,
    val_pairs: int = 50_000,
    patch_scale: float | None = None,
    min_kp_size: float | None = None,
    all_models: bool = False,
    seed: int = 0,
    reconstruct: bool = False,
    progress: bool = True,
    force: bool = False,
) -> dict:
    """Build ``out/train`` and ``out/val`` (PhotoTour layout) from SfM reconstructions, split by scene.

    Args:
        scenes: a folder of scene folders, or a list of scene folders (see ``find_scenes``).
        out: output folder, outside the scene folders (else ``ValueError`` before any work); gets ``train/``,
            ``val/`` (with an ``m50_*.txt`` pair file), ``record.json`` (scenes, numbers, track-length histogram,
            label check, settings) and ``meta.json`` (patch scale and minimum keypoint size, which the trainer
            writes into the weight file).
        min_track: fewest observations of a 3D point that make it a training point.
        max_points_per_scene: at most this many 3D points per scene (random choice), so one big
            scene cannot dominate; ``None`` for all.
        max_patches_per_point: at most this many observations per point (random choice); ``None`` for all.
        min_point_distance: of two points within this many pixels in a photo, keep one (0 = off).
        val_scenes: names of the scenes held out in ``out/val``; names not present are listed in the record.
        val_pairs: pairs in the validation pair file, >= 1 (half matches; negatives as ``hard_pairs`` draws them).
        patch_scale: patch side in units of ``kp.size``; default: the bundled weights' value.
        min_kp_size: least ``kp.size`` in pixels a patch is cut for; default: the bundled weights' value.
        all_models: use every model of a scene, not just the largest.
        seed: seeds the choice of points and observations and the validation pairs.
        reconstruct: reconstruct photo folders without a model (COLMAP's SIFT, into ``out/sfm/<name>``; a
            reconstruction there from an earlier run is reused if it is of the same photos, else redone:
            ``find_scenes``).
        progress: show a progress bar over scenes.
        force: write into ``out`` even if its ``meta.json``, ``record.json``, ``train/``, ``val/`` or
            ``sfm/<name>`` were written by another program (else ``FileExistsError`` before any work; a dataset
            of ours is replaced).

    Returns:
        The record written to ``out/record.json``.
    """
    check_count(val_pairs, "val_pairs")
    check_selection(min_track, max_points_per_scene, max_patches_per_point, min_point_distance, seed)
    spec = default_patch_spec(patch_scale, min_kp_size)
    out = Path(out)
    single = isinstance(scenes, (str, Path))
    scenes = scenes if single else list(scenes)
    for folder in [scenes] if single else scenes:  # OUT in a scene: a later run would take it for input
        check_outside(folder, out, "scenes folder" if single else "scene folder")
    check_dataset_folder(out, ("meta.json", "record.json"), force)
    planned = _plan_scenes(scenes, reconstruct=reconstruct, work_dir=out / "sfm", force=force)
    _val_names([p.name for p in planned], val_scenes)  # before any reconstruction
    found = _open_scenes(planned, progress)
    no_model = [s.name for s in found if not s.models]
    found = [s for s in found if s.models]
    names = [s.name for s in found]
    val_names = _val_names(names, val_scenes)
    select = {"min_track": min_track, "max_points": max_points_per_scene,
              "max_patches_per_point": max_patches_per_point, "min_point_distance": min_point_distance}
    settings = {"min_track": min_track, "max_points_per_scene": max_points_per_scene,
                "max_patches_per_point": max_patches_per_point, "min_point_distance": min_point_distance,
                **spec_record(spec), "patch_size": STORED_SIZE, "all_models": all_models, "seed": seed,
                "val_pairs": val_pairs, "val_scenes": list(val_scenes)}
    start = time.time()
    splits = {"train": [s for s in found if s.name not in val_names], "val": [s for s in found if s.name in val_names]}
    scene_records, totals, first_label = [], {}, 0
    with StagedDataset(out) as stage:  # built beside the old splits: an error or Ctrl-C leaves those as they were
        for split, chosen in splits.items():
            if not chosen:
                continue
            records, ids = _write_split(chosen, stage.folder(split), [names.index(s.name) for s in chosen],
                                        first_label, select, spec, all_models, seed, progress,
                                        val_pairs if split == "val" else 0, split=out / split)
            first_label = int(ids.max()) + 1
            scene_records += [{"split": split, **r} for r in records]
            totals[split] = {"scenes": len(chosen), "points": len(np.unique(ids)), "patches": len(ids),
                             "images": sum(r["registered"] for r in records)}
    scene_records.sort(key=lambda r: r["index"])
    record = _record(scene_records, totals, settings, sorted(set(val_scenes) - set(names)), time.time() - start)
    record["scenes_without_model"] = no_model
    meta = {"source": "sfm", **spec_record(spec), "record": "record.json",
            **{split: {"photos": t["images"], "points": t["points"], "patches": t["patches"]} for split, t in totals.items()}}
    stage.commit({"meta.json": meta, "record.json": record})  # record.json last: its presence marks a full build
    return record


def _val_names(names: list[str], val_scenes: Sequence[str]) -> list[str]:
    """The validation scenes among the scenes ``names``; ``ValueError`` if none, or if no scene is left to train on."""
    val_names = [n for n in names if n in set(val_scenes)]
    if val_scenes and not val_names:
        raise ValueError(f"none of the validation scenes {list(val_scenes)} is among the scenes found: {names}")
    if len(val_names) == len(names):
        raise ValueError(f"every scene found is a validation scene ({names}): nothing left to train on")
    return val_names


def hard_pairs(
    labels: np.ndarray, scene: np.ndarray, photo: np.ndarray, xy: np.ndarray, n_pairs: int, seed: int,
    near_fraction: float = 0.5, neighbours: int = 4,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validation pairs whose negatives are hard: from one scene, and many from one photo, side by side.

    Per scene (``n_pairs`` shared in proportion to its patches): half the pairs are matches (two
    patches of one point, as ``make_pairs`` draws them); of the non-matches, ``near_fraction``
    pair a patch with one of the ``neighbours`` nearest keypoints of other points in the same photo,
    the rest two random patches of different points of the scene. Uniform negatives across scenes
    are so easy that FPR95 is ~0 for any decent descriptor; these are what matching in one photo faces.

    Args:
        labels, scene, photo: (N,) int point label, scene index and photo id of each patch.
        xy: (N, 2) keypoint positions in their photos.

    Returns:
        idx1 (M,) int64, idx2 (M,) int64, is_match (M,) bool, shuffled.
    """
    rng = np.random.default_rng(seed)
    scenes, counts = np.unique(scene, return_counts=True)
    share = np.floor(n_pairs * counts / counts.sum()).astype(int)
    share[np.argmax(counts)] += n_pairs - share.sum()
    out = []
    for s, n in zip(scenes, share):
        idx = np.flatnonzero(scene == s)
        i1, i2, match = make_pairs(labels[idx], int(n), int(rng.integers(1 << 31)))
        i1, i2 = idx[i1], idx[i2]
        near = _near_pairs(labels[idx], photo[idx], xy[idx], neighbours)
        replace = np.flatnonzero(~match)[: int(near_fraction * (~match).sum())]
        if len(near) and len(replace):
            pick = idx[near[rng.integers(len(near), size=len(replace))]]
            i1[replace], i2[replace] = pick[:, 0], pick[:, 1]
        out.append((i1, i2))
    i1, i2 = (np.concatenate(x) for x in zip(*out))
    perm = rng.permutation(len(i1))
    return i1[perm], i2[perm], labels[i1[perm]] == labels[i2[perm]]


def _near_pairs(labels: np.ndarray, photo: np.ndarray, xy: np.ndarray, k: int) -> np.ndarray:
    """(M, 2) index pairs: each patch and its ``k`` nearest patches of other points in the same photo."""
    pairs = []
    for image in np.unique(photo):
        rows = np.flatnonzero(photo == image)
        if len(rows) < 2:
            continue
        _, nn = cKDTree(xy[rows]).query(xy[rows], k=min(k + 1, len(rows)))
        a = np.repeat(rows, nn.shape[1] - 1)
        b = rows[nn[:, 1:].reshape(-1)]
        pairs.append(np.stack([a, b], 1)[labels[a] != labels[b]])
    return np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)


def _write_split(
    scenes: list[ColmapScene], root: Path, indices: list[int], first_label: int, select: dict, spec: PatchSpec,
    all_models: bool, seed: int, progress: bool, val_pairs: int, split: Path | None = None,
) -> tuple[list[dict], np.ndarray]:
    """Write the patches of ``scenes`` to the PhotoTour folder ``root`` (which becomes the split folder ``split``,
    named in messages); their records and all labels (N,).

    Labels run on from ``first_label``; ``info.txt``'s second column is the scene's index. With
    ``val_pairs > 0`` an ``m50_*.txt`` pair file is written too.
    """
    records: list[dict] = []
    where: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # scene, photo, xy of every patch

    def parts() -> Iterator[Part]:
        next_label = first_label
        for index, scene in zip(indices, scenes):
            part = scene_patches(scene, all_models=all_models, patch_scale=spec.scale, min_kp_size=spec.min_kp_size,
                                 seed=seed + index, **select)
            where.append((np.full(len(part.labels), index), part.photo, part.xy))
            records.append({"index": index, "first_label": next_label, **part.record})
            next_label += int(part.labels.max()) + 1 if len(part.labels) else 0
            yield part.patches, part.labels, index

    def pair_files(ids: np.ndarray) -> dict | None:
        if not len(ids):
            raise ValueError(f"{split or root}: the scenes {[s.name for s in scenes]} gave no patches (no track long "
                             "enough?)")
        n = min(val_pairs, len(ids))
        if not n:
            return None
        scene, photo, xy = (np.concatenate(x) for x in zip(*where))
        return {f"m50_{n}_{n}_0.txt": hard_pairs(ids, scene, photo, xy, n, seed)}

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small per-photo tensors: one thread is several times faster on a busy CPU
    try:
        ids = write_split(root, parts(), first_label=first_label, pair_files=pair_files, total=len(scenes),
                          unit="scenes", progress=progress, name=(split or root).name)
    finally:
        torch.set_num_threads(threads)
    return records, ids


def _record(scenes: list[dict], totals: dict, settings: dict, val_missing: list[str], seconds: float) -> dict:
    """The build record: per-scene numbers, totals, track-length histograms and the label check."""
    record = {"scenes": scenes, "totals": totals, "val_scenes_missing": val_missing, "settings": settings,
              "seconds": round(seconds, 1)}
    edges = list(TRACK_BINS) + [np.inf]
    for split in totals:
        lengths = np.array([n for s in scenes if s["split"] == split for m in s["models"] for n in m["track_lengths"]])
        hist, _ = np.histogram(lengths, edges)
        record[f"track_length_histogram_{split}"] = {
            (f"{lo}-{hi - 1}" if hi - 1 > lo else f"{lo}") if np.isfinite(hi) else f"{lo}+": int(c)
            for lo, hi, c in zip(edges[:-1], edges[1:], hist)}
    errors = [(m["reprojection_error"]["max"], s["name"]) for s in scenes for m in s["models"]
              if m["reprojection_error"]["max"] is not None]
    record["label_check"] = {
        "max_reprojection_error": max(errors)[0] if errors else None,
        "worst_scene": max(errors)[1] if errors else None,
        "note": "pixel distance between every used observation and its 3D point projected with the model's camera",
    }
    for s in scenes:  # the per-point lengths were for the histogram; keep the record small
        for m in s["models"]:
            m["mean_track_length"] = float(np.mean(m.pop("track_lengths"))) if m["points"] else None
    return record
