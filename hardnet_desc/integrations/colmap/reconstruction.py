"""Structure from motion with COLMAP (pycolmap): reconstruct a photo folder with HardNet or SIFT.

``reconstruct(image_dir, out_dir)`` runs, each stage timed and with a progress bar:

1. **import**: one COLMAP camera per image size (``SIMPLE_RADIAL``, focal length guessed as
   COLMAP does, 1.2 x the longer side, refined by bundle adjustment), or known intrinsics for
   every image;
2. **extract**: ``"hardnet"``: OpenCV SIFT keypoints (the strongest ``max_keypoints``) described
   by ``hardnet_desc.HardNetDescriptor``; ``"sift"``: COLMAP's own SIFT. Images whose
   longer side exceeds ``max_image_size`` are downscaled for extraction and the keypoints scaled
   back to full-resolution pixels;
3. **match**: image pairs from COLMAP's pair generators (exhaustive, or sequential for videos);
   ``"hardnet"``: mutual nearest neighbours + ratio test (``hardnet_desc.matching.match_descriptors``);
   ``"sift"``: COLMAP's matcher (which verifies each pair in the same pass);
4. **verify**: COLMAP's geometric verification (two-view geometries);
5. **map**: COLMAP's incremental mapper.

Everything goes through a real COLMAP database, so the output opens in COLMAP's GUI
(``colmap gui --database_path OUT/database.db --image_path IMAGES``, then *File > Import model*
``OUT/sparse/0``). ``OUT`` becomes a scene folder (``hardnet_desc.integrations.colmap.scene``)::

    OUT/database.db      cameras, images, keypoints (affine frames), matches, two-view geometries
    OUT/sparse/<k>/      model k in COLMAP's binary format (cameras.bin, images.bin, points3D.bin, ...)
    OUT/summary.json     what ``reconstruct`` returns (``ReconstructionSummary.to_dict``)

Keypoints are stored as COLMAP affine frames, so their scale and orientation survive
(conversion: ``hardnet_desc.integrations.colmap.keypoints.keypoints_to_colmap``, docs/conventions.md).
pycolmap is an optional dependency: ``pip install "hardnet-desc[sfm]"``.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from ...core.image import imread_quiet, read_image
from ...core.patches import keypoints_to_array
from ...data.images import list_images
from ...matching import check_ratio, match_descriptors
from ...outputs import check_output, json_is_ours, write_json
from .guard import import_pycolmap
from .keypoints import keypoints_to_colmap
from .scene import DATABASE, SPARSE, SUMMARY, model_folders, open_database, read_summary

if TYPE_CHECKING:
    from ...descriptor import HardNetDescriptor

__all__ = [
    "FEATURES", "MATCHERS", "OVERWRITE", "ModelSummary", "ReconstructionSummary", "colmap_like_sift", "existing_run",
    "format_summary", "photo_names", "reconstruct", "resize_for_extraction",
]

FEATURES = ("hardnet", "sift")
MATCHERS = ("exhaustive", "sequential")
#: How ``reconstruct`` and ``hardnet-desc sfm`` are told to replace what is in the output folder (error messages).
OVERWRITE = "--overwrite (overwrite=True)"


def colmap_like_sift() -> cv2.Feature2D:
    """OpenCV SIFT with COLMAP's detection threshold.

    COLMAP's SIFT keeps extrema above ``peak_threshold = 0.02 / octave_resolution`` (3 levels per
    octave); OpenCV's above ``contrastThreshold / nOctaveLayers`` (3), so ``contrastThreshold=0.02``
    (OpenCV's default is 0.04) finds about as many keypoints as COLMAP (2,168 vs 2,460 on a
    640x480 photo of the test set). Both upsample the image for the first octave and use an edge
    threshold of 10.
    """
    return cv2.SIFT_create(contrastThreshold=0.02)


def resize_for_extraction(image: np.ndarray, max_image_size: int | None) -> tuple[np.ndarray, float]:
    """Downscale ``image`` so its longer side is at most ``max_image_size`` (area interpolation).

    Returns:
        ``(image, factor)`` with ``factor = new side / old side`` (1.0 when no resize is needed).
        A point ``(x, y)`` of the small image (pixel-centre convention) is
        ``((x + 0.5) / factor - 0.5, (y + 0.5) / factor - 0.5)`` in the full image; sizes divide
        by ``factor``.
    """
    longer = max(image.shape[:2])
    if not max_image_size or longer <= max_image_size:
        return image, 1.0
    factor = max_image_size / longer
    size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return small, small.shape[1] / image.shape[1]


@dataclass
class ModelSummary:
    """One model ``sparse/<index>/`` of a reconstruction (``path`` relative to the output folder)."""

    index: int
    path: str
    registered_images: int
    num_points3D: int
    mean_track_length: float
    mean_reprojection_error: float | None  # px; None for a model without points


@dataclass
class ReconstructionSummary:
    """What ``reconstruct`` did and found; ``to_dict()`` is the content of ``OUT/summary.json``.

    The numbers of the largest model (most registered images, then most points) come first
    (0 / ``None`` when nothing reconstructs), then every model, the counts of the stages,
    ``seconds`` per stage (``import``, ``extract``, ``match``, ``verify``, ``map``, ``total``)
    and the options used. ``image_dir`` and ``out_dir`` are absolute, so readers of
    ``summary.json`` find the photos from anywhere.
    """

    num_images: int
    registered_images: int
    num_points3D: int
    mean_track_length: float
    mean_reprojection_error: float | None
    num_models: int
    models: list[ModelSummary]
    keypoints_per_image: float
    image_pairs: int  # matched
    verified_pairs: int  # with geometric inliers
    seconds: dict[str, float]
    image_dir: str
    out_dir: str
    features: str
    matcher: str
    max_image_size: int
    max_keypoints: int
    ratio: float | None  # None for COLMAP's SIFT
    camera_model: str
    camera_params: list[float] | None
    weights: str | None  # HardNet's weights; None for COLMAP's SIFT
    precision: str | None

    def to_dict(self) -> dict[str, Any]:
        """The summary as a JSON-able dict, keys in field order (``summary.json``, ``--json``)."""
        return asdict(self)


def reconstruct(
    image_dir: str | Path,
    out_dir: str | Path,
    *,
    features: str = "hardnet",
    matcher: str = "exhaustive",
    max_image_size: int = 1600,
    max_keypoints: int = 8192,
    descriptor: HardNetDescriptor | None = None,
    ratio: float = 0.8,
    overlap: int = 10,
    camera_model: str = "SIMPLE_RADIAL",
    camera_params: Sequence[float] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    colmap_log: bool = False,
) -> ReconstructionSummary:
    """Reconstruct the photos below ``image_dir`` into ``out_dir`` (layout in the module docstring).

    Args:
        image_dir: folder of photos, searched recursively; COLMAP names images by their path
            relative to it.
        out_dir: output folder; must not hold a ``database.db`` unless ``overwrite``.
        features: ``"hardnet"`` (OpenCV SIFT keypoints, HardNet descriptors, our matcher) or
            ``"sift"`` (COLMAP's SIFT extraction and matching).
        matcher: ``"exhaustive"`` (all pairs) or ``"sequential"`` (each image with the next
            ``overlap`` in name order, plus COLMAP's quadratic overlap; for videos and drives).
        max_image_size: longer side used for extraction; larger images are downscaled and their
            keypoints scaled back to full resolution. ``0`` keeps every image as it is.
        max_keypoints: keypoints per image at most (strongest SIFT responses for HardNet,
            ``max_num_features`` for COLMAP's SIFT).
        descriptor: the ``hardnet_desc.HardNetDescriptor`` to use; its detector
            (``hardnet_desc.HardNetDescriptor.detect``) finds the keypoints. Default: the
            bundled weights with ``colmap_like_sift``.
        ratio: ratio-test threshold of the HardNet matcher (COLMAP's SIFT matcher uses 0.8 too).
        overlap: neighbours per image for ``matcher="sequential"``.
        camera_model: COLMAP camera model of the cameras created.
        camera_params: known intrinsics at full resolution in ``camera_model``'s order (e.g.
            ``PINHOLE``: ``fx, fy, cx, cy``); every image then shares them and bundle adjustment
            keeps them fixed. ``None``: one camera per image size, intrinsics estimated.
        overwrite: replace an existing database and models in ``out_dir``. A run that fails or is
            interrupted removes the database and models it wrote, so a rerun needs no ``overwrite``.
        progress: show a progress bar per stage.
        colmap_log: let COLMAP log its INFO lines (to stderr); by default only its warnings.

    Returns:
        The summary (``ReconstructionSummary``), also written to ``out_dir/summary.json``:
        registered images, points, mean track length and reprojection error (px) of the largest
        model, every model, seconds per stage and the options used.

    Raises:
        ImportError: pycolmap is not installed (the message says what to install).
        ValueError: unknown ``features``/``matcher``, bad numbers, or ``camera_params`` that do
            not fit ``camera_model``.
        FileNotFoundError: ``image_dir`` is missing or holds fewer than two images.
        FileExistsError: ``out_dir`` already holds a database and ``overwrite`` is off.
    """
    pycolmap = import_pycolmap()
    _check_options(features, matcher, max_image_size, max_keypoints, ratio, overlap)
    image_dir, out_dir = Path(image_dir), Path(out_dir)
    names = photo_names(image_dir)
    new_dir = not out_dir.exists()
    database = _prepare_out_dir(out_dir, overwrite)
    # The run marked as ours and unfinished until the summary replaces it (a killed run: existing_run); a
    # summary.json of another program's is replaced only with overwrite, and is not removed on failure below.
    write_json(out_dir / SUMMARY, {"finished": False, "image_dir": str(image_dir.resolve())}, force=overwrite,
               option=OVERWRITE)
    level = pycolmap.logging.minloglevel
    pycolmap.logging.minloglevel = level if colmap_log else max(level, 1)  # 1: WARNING
    try:
        job = _Job(image_dir, out_dir, database, names, features, matcher, max_image_size, max_keypoints, ratio,
                   overlap, camera_model, None if camera_params is None else [float(v) for v in camera_params],
                   progress)
        summary = _run(job, descriptor)
    except BaseException:  # an error or Ctrl-C: leave no half-made reconstruction that a rerun would refuse
        _remove_run(out_dir, new_dir)
        raise
    finally:
        pycolmap.logging.minloglevel = level
    write_json(out_dir / SUMMARY, summary.to_dict(), force=True)  # marked: a rerun replaces it
    return summary


def photo_names(image_dir: str | Path) -> list[str]:
    """The photos below ``image_dir`` as COLMAP names them (paths relative to it, sorted).

    Raises:
        FileNotFoundError: ``image_dir`` is missing or holds fewer than two photos (all ``reconstruct`` needs).
    """
    image_dir = Path(image_dir)
    names = [p.relative_to(image_dir).as_posix() for p in list_images(image_dir)]
    if len(names) < 2:
        raise FileNotFoundError(f"structure from motion needs at least 2 images, found {len(names)} in {image_dir}")
    return names


def existing_run(out_dir: str | Path, image_dir: str | Path, **options: Any) -> str:
    """What ``out_dir`` holds, for a ``reconstruct(image_dir, out_dir, **options)`` about to run.

    Args:
        options: ``reconstruct``'s options as ``summary.json`` records them (e.g. ``features="sift"``).

    Returns:
        ``"none"``: no reconstruction; ``"same"``: that run, finished, on the photos as they are now (its
        ``summary.json`` is ours and names ``image_dir`` and ``options``, its database the same photo names, its
        models are there, and no photo was written or replaced after it: modification times, which chmod, chown
        and copies do not move), so it can be reused;
        ``"ours"``: another run of ours (or one of ours that was killed: its ``summary.json`` is the mark
        ``reconstruct`` writes first), which ``overwrite`` replaces; ``"foreign"``: a reconstruction without
        hardnet-desc's ``summary.json`` (another program's, or one of ours from before that mark), or a
        ``summary.json`` hardnet-desc did not write.
    """
    out_dir, image_dir = Path(out_dir), Path(image_dir)
    summary_path = out_dir / SUMMARY
    if not summary_path.exists():
        made = (out_dir / DATABASE).exists() or (out_dir / SPARSE).exists()
        return "foreign" if made else "none"
    try:
        summary = read_summary(summary_path) if json_is_ours(summary_path) else None
    except (OSError, ValueError):
        summary = None
    if summary is None:
        return "foreign"
    if summary.get("finished") is False:
        return "ours"
    same = (summary.get("image_dir") == str(image_dir.resolve()) and (out_dir / DATABASE).is_file()
            and all(summary.get(k) == v for k, v in options.items())
            and len(model_folders(out_dir)) == summary.get("num_models"))
    if same:
        photos = list_images(image_dir)
        written = summary_path.stat().st_mtime_ns
        same = all(p.stat().st_mtime_ns < written for p in photos)
        same = same and _database_names(out_dir / DATABASE) == {p.relative_to(image_dir).as_posix() for p in photos}
    return "same" if same else "ours"


def _database_names(database: Path) -> set[str] | None:
    """The photo names in a COLMAP database; ``None`` if it cannot be read."""
    try:
        with open_database(database) as db:
            return {image.name for image in db.read_all_images()}
    except (OSError, ValueError, RuntimeError):
        return None


@dataclass(frozen=True)
class _Job:
    """What ``reconstruct`` was asked to do, checked."""

    image_dir: Path
    out_dir: Path
    database: Path
    names: list[str]
    features: str
    matcher: str
    max_image_size: int
    max_keypoints: int
    ratio: float
    overlap: int
    camera_model: str
    camera_params: list[float] | None
    progress: bool


def _run(job: _Job, descriptor: HardNetDescriptor | None) -> ReconstructionSummary:
    """The stages of ``reconstruct``, timed; returns the summary."""
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    db, progress = job.database, job.progress
    _import_images(db, job.image_dir, job.names, job.camera_model, job.camera_params)
    seconds["import"], clock = _lap(clock)
    if job.features == "hardnet":
        if descriptor is None:
            from ...descriptor import HardNetDescriptor

            descriptor = HardNetDescriptor(detector=colmap_like_sift())
        descs = _extract_hardnet(db, job.image_dir, descriptor, job.max_image_size, job.max_keypoints,
                                 progress)
        seconds["extract"], clock = _lap(clock)
        pairs = _image_pairs(db, job.matcher, job.overlap)
        _match_hardnet(db, descs, pairs, job.ratio, descriptor.device, progress)
        del descs
        seconds["match"], clock = _lap(clock)
        _verify(db, progress)
        seconds["verify"], clock = _lap(clock)
    else:
        _extract_sift(db, job.image_dir, job.names, job.max_image_size, job.max_keypoints, progress)
        seconds["extract"], clock = _lap(clock)
        pairs = _image_pairs(db, job.matcher, job.overlap)
        _match_sift(db, pairs, job.out_dir, progress)  # COLMAP verifies while matching
        seconds["match"], clock = _lap(clock)
        seconds["verify"] = 0.0
    models = _map(db, job.image_dir, job.out_dir / SPARSE, len(job.names),
                  job.camera_params is not None, progress)
    seconds["map"], clock = _lap(clock)
    seconds["total"] = sum(seconds.values())

    hardnet = job.features == "hardnet"
    return ReconstructionSummary(
        **_summarise(db, models, len(job.names), len(pairs), seconds),
        # absolute: readers (eval-pairs, make-dataset --from-sfm) find the photos from anywhere
        image_dir=str(job.image_dir.resolve()), out_dir=str(job.out_dir.resolve()), features=job.features,
        matcher=job.matcher,
        max_image_size=job.max_image_size, max_keypoints=job.max_keypoints, ratio=job.ratio if hardnet else None,
        camera_model=job.camera_model, camera_params=job.camera_params,
        weights=str(descriptor.weights.source) if hardnet else None,
        precision=descriptor.precision if hardnet else None,
    )


def _check_options(features: str, matcher: str, max_image_size: int, max_keypoints: int, ratio: float,
                   overlap: int) -> None:
    if features not in FEATURES:
        raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
    if matcher not in MATCHERS:
        raise ValueError(f"matcher must be one of {MATCHERS}, got {matcher!r}")
    if max_image_size is None or max_image_size < 0:
        raise ValueError(f"max_image_size must be >= 0 (0: no resize), got {max_image_size}")
    if max_keypoints is None or max_keypoints < 1:
        raise ValueError(f"max_keypoints must be >= 1, got {max_keypoints}")
    if ratio is None:
        raise ValueError("ratio must be a number in (0, 1], got None")
    check_ratio(ratio)
    if overlap < 1:
        raise ValueError(f"overlap must be >= 1, got {overlap}")


def _lap(start: float) -> tuple[float, float]:
    now = time.perf_counter()
    return now - start, now


def _bar(total: int, desc: str, unit: str, progress: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=f"{desc:<7}", unit=unit, disable=not progress, dynamic_ncols=True)


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> Path:
    check_output(out_dir / SUMMARY, json_is_ours, force=overwrite, option=OVERWRITE)  # one we did not write stays
    database = out_dir / DATABASE
    if database.exists() or (out_dir / SPARSE).exists():
        if not overwrite:
            raise FileExistsError(f"{out_dir} already holds a reconstruction; pass overwrite=True (--overwrite) "
                                  "or choose another output folder")
        _remove_run(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return database


def _remove_run(out_dir: Path, new_dir: bool = False) -> None:
    """Remove a run's database, models and summary (a failed run's, or an earlier one's that ``overwrite``
    replaces) and, if the run made it (``new_dir``), the folder left empty."""
    (out_dir / DATABASE).unlink(missing_ok=True)
    shutil.rmtree(out_dir / SPARSE, ignore_errors=True)
    (out_dir / SUMMARY).unlink(missing_ok=True)
    if new_dir and not any(out_dir.iterdir()):
        out_dir.rmdir()


def _import_images(database: Path, image_dir: Path, names: list[str], camera_model: str,
                   camera_params: Sequence[float] | None) -> None:
    """Cameras and images (with COLMAP's trivial rigs and frames): one camera per image size,
    or one camera with ``camera_params`` for all."""
    pycolmap = import_pycolmap()
    open_database(database).close()  # import_images needs the file
    options = pycolmap.ImageReaderOptions()
    options.camera_model = camera_model
    if camera_params is not None:
        options.camera_params = ",".join(f"{float(v)!r}" for v in camera_params)
        groups = {None: names}
    else:
        groups: dict[Any, list[str]] = {}
        for name in names:
            groups.setdefault(_image_size(image_dir / name), []).append(name)
    try:
        for group in groups.values():
            pycolmap.import_images(database, image_dir, pycolmap.CameraMode.SINGLE, group, options)
    except ValueError as err:  # COLMAP's check failures, e.g. parameters that do not fit the model
        raise ValueError(f"cannot create cameras ({camera_model}, params {camera_params}): {err}") from None


def _image_size(path: Path) -> tuple[int, int]:
    image = imread_quiet(path, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"cannot decode image file: {path}")
    return image.shape[1], image.shape[0]


def _extract_hardnet(database: Path, image_dir: Path, descriptor: HardNetDescriptor,
                     max_image_size: int, max_keypoints: int, progress: bool) -> dict[int, np.ndarray]:
    """SIFT keypoints + HardNet descriptors per image; keypoints go to the database as COLMAP
    affine frames at full resolution. Returns ``{image_id: (N, 128) float32}``."""
    descs = {}
    with open_database(database) as db:
        images = sorted(db.read_all_images(), key=lambda im: im.image_id)
        with _bar(len(images), "extract", "img", progress) as bar:
            for im in images:
                full = read_image(image_dir / im.name)
                small, factor = resize_for_extraction(full, max_image_size)
                kps = descriptor.detect(small, max_keypoints=max_keypoints)
                descs[im.image_id] = descriptor.compute(small, kps)[1]
                db.write_keypoints(im.image_id, keypoints_to_colmap(_scale_keypoints(kps, factor)))
                bar.update()
    return descs


def _scale_keypoints(keypoints: Sequence[cv2.KeyPoint], factor: float) -> np.ndarray:
    """``(N, 4)`` keypoints of an image downscaled by ``factor``, in full-resolution pixels."""
    kps = keypoints_to_array(keypoints).copy()
    if factor != 1.0:
        kps[:, :2] = (kps[:, :2] + 0.5) / factor - 0.5
        kps[:, 2] /= factor
    return kps


def _extract_sift(database: Path, image_dir: Path, names: list[str], max_image_size: int,
                  max_keypoints: int, progress: bool, chunk: int = 8) -> None:
    """COLMAP's SIFT on the images already in the database (chunks of ``chunk`` for the bar)."""
    pycolmap = import_pycolmap()
    options = pycolmap.FeatureExtractionOptions()
    options.max_image_size = max_image_size or 1_000_000  # COLMAP rescales keypoints to full resolution
    options.sift.max_num_features = max_keypoints
    with _bar(len(names), "extract", "img", progress) as bar:
        for start in range(0, len(names), chunk):
            batch = names[start : start + chunk]
            pycolmap.extract_features(database, image_dir, image_names=batch, extraction_options=options)
            bar.update(len(batch))


def _image_pairs(database: Path, matcher: str, overlap: int) -> list[tuple[int, int]]:
    """Image-id pairs from COLMAP's own pair generators."""
    pycolmap = import_pycolmap()
    with open_database(database) as db:
        if matcher == "sequential":
            options = pycolmap.SequentialPairingOptions()
            options.overlap = overlap
            generator = pycolmap.SequentialPairGenerator(options, db)
        else:
            generator = pycolmap.ExhaustivePairGenerator(pycolmap.ExhaustivePairingOptions(), db)
        return [(int(a), int(b)) for a, b in generator.all_pairs()]


def _match_hardnet(database: Path, descs: dict[int, np.ndarray], pairs: list[tuple[int, int]],
                   ratio: float, device: Any, progress: bool) -> None:
    with open_database(database) as db, _bar(len(pairs), "match", "pair", progress) as bar:
        for a, b in pairs:
            matches = match_descriptors(descs[a], descs[b], ratio=ratio, mutual=True, device=device)
            db.write_matches(a, b, matches.pairs.astype(np.uint32))
            bar.update()


def _match_sift(database: Path, pairs: list[tuple[int, int]], out_dir: Path, progress: bool,
                chunk: int = 64) -> None:
    """COLMAP's SIFT matcher + verification on ``pairs`` (through a pair list file, in chunks)."""
    with open_database(database) as db:
        name = {im.image_id: im.name for im in db.read_all_images()}
    pair_file = out_dir / "pairs.txt"
    pycolmap = import_pycolmap()
    options = pycolmap.ImportedPairingOptions()
    options.match_list_path = str(pair_file)
    try:
        with _bar(len(pairs), "match", "pair", progress) as bar:
            for start in range(0, len(pairs), chunk):
                batch = pairs[start : start + chunk]
                pair_file.write_text("".join(f"{name[a]} {name[b]}\n" for a, b in batch))
                pycolmap.match_image_pairs(database, pairing_options=options)
                bar.update(len(batch))
    finally:
        pair_file.unlink(missing_ok=True)


def _verify(database: Path, progress: bool) -> None:
    with _bar(1, "verify", "run", progress) as bar:
        import_pycolmap().geometric_verification(database)
        bar.update()


def _map(database: Path, image_dir: Path, sparse_dir: Path, num_images: int,
         fixed_intrinsics: bool, progress: bool) -> dict[int, Any]:
    """COLMAP's incremental mapper; writes ``sparse_dir/<k>/``. The bar counts registrations."""
    pycolmap = import_pycolmap()
    sparse_dir.mkdir(parents=True, exist_ok=True)
    options = pycolmap.IncrementalPipelineOptions()
    if fixed_intrinsics:
        options.ba_refine_focal_length = False
        options.ba_refine_principal_point = False
        options.ba_refine_extra_params = False
    with _bar(num_images, "map", "img", progress) as bar:
        models = pycolmap.incremental_mapping(
            database, image_dir, sparse_dir, options,
            initial_image_pair_callback=lambda: bar.update(2), next_image_callback=lambda: bar.update(1),
        )
    return dict(models)


def _summarise(database: Path, models: dict[int, Any], num_images: int, num_pairs: int,
               seconds: dict[str, float]) -> dict[str, Any]:
    """The fields of ``ReconstructionSummary`` that the models and the database give."""
    per_model = [ModelSummary(
        index=k, path=f"{SPARSE}/{k}", registered_images=model.num_reg_images(), num_points3D=model.num_points3D(),
        mean_track_length=model.compute_mean_track_length() if model.num_points3D() else 0.0,
        mean_reprojection_error=model.compute_mean_reprojection_error() if model.num_points3D() else None,
    ) for k, model in sorted(models.items())]
    best = max(per_model, key=lambda m: (m.registered_images, m.num_points3D), default=None)
    with open_database(database) as db:
        keypoints = db.num_keypoints() / max(1, db.num_images())
        verified = sum(n > 0 for n in db.read_two_view_geometry_num_inliers()[1])  # pairs with inliers
    return dict(
        num_images=num_images,
        registered_images=best.registered_images if best else 0,
        num_points3D=best.num_points3D if best else 0,
        mean_track_length=best.mean_track_length if best else 0.0,
        mean_reprojection_error=best.mean_reprojection_error if best else None,
        num_models=len(per_model), models=per_model, keypoints_per_image=keypoints,
        image_pairs=num_pairs, verified_pairs=verified, seconds=seconds,
    )


def format_summary(summary: ReconstructionSummary) -> str:
    """The closing lines of ``hardnet-desc sfm``: registrations, points, tracks, errors, stage times."""
    error = summary.mean_reprojection_error
    lines = [
        f"images registered: {summary.registered_images} / {summary.num_images}"
        + (f" (largest of {summary.num_models} models)" if summary.num_models > 1 else ""),
        f"3D points:         {summary.num_points3D}",
        f"mean track length: {summary.mean_track_length:.2f}",
        "mean reproj. err.: " + (f"{error:.3f} px" if error is not None else "-"),
        f"keypoints / image: {summary.keypoints_per_image:.0f}; verified pairs {summary.verified_pairs} "
        f"of {summary.image_pairs}",
        "seconds:           " + ", ".join(f"{k} {v:.1f}" for k, v in summary.seconds.items()),
    ]
    lines += [f"model {m.path}: {m.registered_images} images, {m.num_points3D} points" for m in summary.models]
    return "\n".join(lines) + "\n"
