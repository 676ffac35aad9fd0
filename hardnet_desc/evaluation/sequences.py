"""Image-sequence matching benchmark (HPatches / Oxford style).

For every sequence and every pair ``(1, k)``: keypoints are detected once per image (OpenCV SIFT,
the ``max_keypoints`` strongest by response), every method describes the *same* keypoints, and
descriptors are matched by mutual nearest neighbour (plus the ratio test if ``ratio`` is given).
The metrics are defined in ``hardnet_desc.evaluation.metrics``.

Example::

    results = evaluate_sequences("hpatches-sequences-release", methods=["sift", "hardnet"])
    print(format_table(results))
    plot_mma(results, "mma.png")
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..detection import DEFAULT_MAX_KEYPOINTS, detect_sift
from ..core.device import resolve_device
from ..outputs import check_output, replacing, write_json
from ..viz import PICTURE_MARK, is_picture_ours
from ..core.image import read_image, to_uint8
from ..matching import check_ratio, match_descriptors
from ..core.model import HardNet
from .layouts import GROUPS, ImageSequence, find_sequences
from .methods import DescribeFn, build_methods
from .metrics import H_THRESHOLDS, MMA_THRESHOLDS, pair_metrics, summarize


class Results:
    """Base of the benchmarks' results (dataclasses of JSON-ready values)."""

    def to_dict(self) -> dict:
        """The fields as a dict in their order (the same objects, not copies): the JSON form, see ``save_json``."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class SequenceResults(Results):
    """What ``evaluate_sequences`` measured.

    Attributes:
        config: its arguments in words, skipped methods and sequences (name -> why), the definitions.
        thresholds: ``T`` pixel thresholds of the MMA curve.
        summary: method -> group (``"overall"``, ``"v"``, ``"i"``, ``"n"``, ``"other"``: those present) ->
            ``metrics.summarize``'s values and ``"sequences"``.
        timing: method -> seconds describing.
        sequences: per sequence ``{"name", "group", "layout", "pairs": [{"target": k, "keypoints": [n1, nk],
            "methods": {method: {"matches", "correct", "accuracy": [T], "h_error": px or None (failure)}}}]}``.
    """

    config: dict
    thresholds: list[float]
    summary: dict[str, dict]
    timing: dict[str, float]
    sequences: list[dict]


def describe_images(
    paths: Sequence[str | Path | np.ndarray],
    describe: Mapping[str, DescribeFn],
    max_keypoints: int = DEFAULT_MAX_KEYPOINTS,
    detector: Any = None,
    timing: dict[str, float] | None = None,
) -> list[tuple[np.ndarray, dict[str, np.ndarray], tuple[int, int]]]:
    """Detect the ``max_keypoints`` strongest keypoints of each image (a file, or one read already) once and
    describe them with every method.

    Returns:
        Per image: ``(xy (N, 2) float64, {method: (N, D)}, (height, width))``. Seconds spent in
        each method are added to ``timing`` when given.
    """
    features = []
    for path in paths:
        image = to_uint8(read_image(path) if isinstance(path, (str, Path)) else path)
        kps = detect_sift(image, max_keypoints, detector)  # strongest by response
        descs = {}
        for name, fn in describe.items():
            t0 = time.perf_counter()
            descs[name] = _checked(fn(image, kps), name, len(kps))
            if timing is not None:
                timing[name] = timing.get(name, 0.0) + time.perf_counter() - t0
        xy = np.array([k.pt for k in kps], dtype=np.float64).reshape(-1, 2)
        features.append((xy, descs, image.shape[:2]))
    return features


def _checked(desc: Any, method: str, n: int) -> np.ndarray:
    """A method's descriptors as an ``(n, D)`` array, or ``ValueError naming the method (a wrong row count stopped in
    an IndexError later; None was scored as no match)."""
    desc = np.asarray(desc.detach().cpu() if isinstance(desc, torch.Tensor) else desc)
    if desc.ndim != 2 or len(desc) != n or desc.dtype.kind not in "fiu":
        raise ValueError(f"method {method!r} must return ({n}, D) real descriptors for {n} keypoints, got "
                         f"{desc.dtype} {desc.shape}")
    return desc


def describe_sequence(
    seq: ImageSequence,
    describe: Mapping[str, DescribeFn],
    max_keypoints: int = 2000,
    detector: Any = None,
    timing: dict[str, float] | None = None,
) -> list[tuple[np.ndarray, dict[str, np.ndarray], tuple[int, int]]]:
    """``describe_images`` of the images of ``seq``."""
    return describe_images(seq.images, describe, max_keypoints, detector, timing)


def evaluate_sequences(
    root: str | Path | Sequence[ImageSequence],
    methods: Sequence[str] | Mapping[str, DescribeFn] = ("sift", "rootsift", "hardnet", "kornia"),
    *,
    weights: str | Path | HardNet | None = None,
    max_keypoints: int = DEFAULT_MAX_KEYPOINTS,
    ratio: float | None = None,
    device: str | torch.device = "auto",
    precision: str = "fp32",
    detector: Any = None,
    thresholds: Sequence[float] = MMA_THRESHOLDS,
    progress: bool = False,
    strict: bool = False,
    on_skip: Callable[[str, str], None] | None = None,
) -> SequenceResults:
    """Run the matching benchmark.

    Args:
        root: a folder of sequences, one sequence folder (HPatches or Oxford layout, see
            ``hardnet_desc.evaluation.layouts``), or already read sequences.
        methods: names from ``METHODS``, or a mapping
            name -> ``describe(grey_uint8, keypoints) -> (N, D)`` for custom methods.
        weights: HardNet weights for ``hardnet``/``kornia`` (path, bundled name or a
            ``HardNet`` module); None = the default weights.
        max_keypoints: keypoints per image, the strongest by detector response.
        ratio: Lowe's ratio threshold on top of mutual NN, or None for mutual NN only.
        device: for HardNet, kornia and the matcher (``'auto'`` = CUDA if present).
        precision: HardNet precision (``'fp32'``, ``'bf16'``, ``'fp16'``).
        detector: a ``cv2.Feature2D``; default OpenCV SIFT.
        thresholds: pixel thresholds of the MMA curve.
        progress: show a progress bar over sequences.
        strict: abort on an incomplete sequence (a reference image only, a missing homography or
            image, an image that cannot be read) instead of skipping it; skipped ones go to
            ``on_skip(name, reason)`` (default: a ``UserWarning``) and to ``config["skipped_sequences"]``.

    Returns:
        A ``SequenceResults``; ``to_dict()`` (or ``save_json``) gives its JSON form.
    """
    if max_keypoints < 1:
        raise ValueError(f"max_keypoints must be >= 1, got {max_keypoints}")
    check_ratio(ratio)
    skipped_sequences: dict[str, str] = {}

    def skip(name: str, reason: str) -> None:
        skipped_sequences[name] = reason
        if on_skip is None:
            warnings.warn(f"skipped sequence {name}: {reason}", stacklevel=3)
        else:
            on_skip(name, reason)

    if isinstance(root, (str, Path)):
        sequences = find_sequences(root, strict=strict, on_skip=skip)
    else:
        sequences = list(root)
    if isinstance(methods, Mapping):
        describe, skipped = dict(methods), {}
    else:
        describe, skipped = build_methods(methods, weights=weights, device=device, precision=precision)
    if not describe:
        raise ValueError(f"no method can run: {skipped}")
    match_device = resolve_device(device)
    thresholds = [float(t) for t in thresholds]

    timing = dict.fromkeys(describe, 0.0)
    per_sequence = []
    for seq in tqdm(sequences, desc="sequences", disable=not progress):
        try:  # each image is read once, here: an unreadable one skips its sequence
            images = [_read_grey(path) for path in seq.images]
        except (OSError, ValueError) as err:
            if strict:
                raise
            skip(seq.name, str(err))
            continue
        features = describe_images(images, describe, max_keypoints, detector, timing)
        pairs = _score_pairs(seq, features, list(describe), ratio, match_device, thresholds)
        per_sequence.append({"name": seq.name, "group": seq.group, "layout": seq.layout, "pairs": pairs})
    if sequences and not per_sequence:
        raise ValueError(f"none of the {len(skipped_sequences)} sequences can be read: "
                         + "; ".join(f"{name}: {why}" for name, why in skipped_sequences.items()))

    summary = {name: _summarize_groups(per_sequence, name, thresholds) for name in describe}
    for seq in per_sequence:  # JSON has no inf: a failed homography is null
        for pair in seq["pairs"]:
            for r in pair["methods"].values():
                r["h_error"] = r["h_error"] if math.isfinite(r["h_error"]) else None
    config = _config(root, describe, skipped, weights, max_keypoints, ratio, detector, device, precision)
    return SequenceResults({**config, "skipped_sequences": skipped_sequences}, thresholds, summary, timing,
                           per_sequence)


def _score_pairs(seq: ImageSequence, features: list, methods: list[str], ratio: float | None,
                 device: torch.device, thresholds: Sequence[float]) -> list[dict]:
    """Match image 1 with each image k of ``seq`` per method and score against ``H_1_k``."""
    xy1, desc1, shape1 = features[0]
    pairs = []
    for k, H in enumerate(seq.homographies, start=2):
        xyk, desck, _ = features[k - 1]
        pair: dict = {"target": k, "keypoints": [len(xy1), len(xyk)], "methods": {}}
        for name in methods:
            m = match_descriptors(desc1[name], desck[name], ratio=ratio, mutual=True, device=device)
            pair["methods"][name] = pair_metrics(xy1[m.query_idx], xyk[m.train_idx], H, shape1, thresholds)
        pairs.append(pair)
    return pairs


def _read_grey(path: Path) -> np.ndarray:
    """The image at ``path`` as grey uint8; an error that does not name the file is led by it."""
    try:
        return to_uint8(read_image(path))
    except ValueError as err:  # e.g. "image is too small: (1, 1)"
        if str(path) in str(err):
            raise
        raise ValueError(f"{path}: {err}") from None


def _config(root, describe, skipped, weights, max_keypoints, ratio, detector, device, precision) -> dict:
    """The ``config`` entry of ``evaluate_sequences``' result: its arguments, in words."""
    return {
        "root": str(root) if isinstance(root, (str, Path)) else None,
        "methods": list(describe),
        "skipped": skipped,
        "weights": "HardNet module" if isinstance(weights, HardNet) else (None if weights is None else str(weights)),
        "max_keypoints": max_keypoints,
        "ratio": ratio,
        "matching": "mutual nearest neighbour" + (f" + ratio < {ratio}" if ratio else ""),
        "detector": type(detector).__name__ if detector is not None else "SIFT",
        "device": str(device),
        "precision": precision,
        "mma": "mean over pairs of the per-pair fraction of matches with error <= t px (0 without matches)",
        "h_acc": "fraction of pairs with mean corner error <= t px (RANSAC 3 px; < 4 matches = failure)",
    }


def _summarize_groups(per_sequence: list[dict], method: str, thresholds: Sequence[float]) -> dict:
    groups: dict[str, dict] = {}
    for group in ("overall", *GROUPS):
        seqs = [s for s in per_sequence if group == "overall" or s["group"] == group]
        if not seqs:
            continue
        pairs = [p["methods"][method] for s in seqs for p in s["pairs"]]
        groups[group] = {"sequences": len(seqs), **summarize(pairs, thresholds, H_THRESHOLDS)}
    return groups


_TITLES = {"overall": "overall", "v": "viewpoint (v_)", "i": "illumination (i_)", "n": "sensor noise (n_)",
           "other": "other"}


def format_table(results: SequenceResults) -> str:
    """A plain-text table per group: one row per method.

    Columns: MMA at 1/3/5 px, matches and correct (@3 px) matches per pair, homography accuracy at
    1/3/5 px.
    """
    columns = [("MMA@1", "mma@1", "{:.3f}"), ("MMA@3", "mma@3", "{:.3f}"), ("MMA@5", "mma@5", "{:.3f}"),
               ("matches", "matches", "{:.1f}"), ("correct", "correct", "{:.1f}"),
               ("H@1", "h_acc@1", "{:.3f}"), ("H@3", "h_acc@3", "{:.3f}"), ("H@5", "h_acc@5", "{:.3f}")]
    summary = results.summary
    methods = list(summary)
    width = max([len("method"), *map(len, methods)])
    lines = []
    for group in ("overall", *GROUPS):
        rows = [(m, summary[m][group]) for m in methods if group in summary[m]]
        if not rows:
            continue
        first = rows[0][1]
        lines.append(f"{_TITLES[group]}: {first['sequences']} sequences, {first['pairs']} pairs")
        lines.append(f"{'method':<{width}}" + "".join(f"{c:>9}" for c, _, _ in columns))
        for name, s in rows:
            cells = "".join(f"{fmt.format(s[key]) if key in s else '-':>9}" for _, key, fmt in columns)
            lines.append(f"{name:<{width}}{cells}")
        lines.append("")
    skipped = results.config.get("skipped") or {}
    lines += [f"skipped {name}: {why}" for name, why in skipped.items()]
    return "\n".join(lines).rstrip() + "\n"


def save_json(results: dict | Results, path: str | Path, *, force: bool = False) -> Path:
    """Write ``results`` (a dict, or a benchmark's results as ``to_dict()``) as JSON (NaN becomes null),
    atomically; an existing ``path`` is replaced only if hardnet-desc wrote it, or with ``force``
    (``outputs.write_json``: else ``FileExistsError``)."""

    def clean(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    return write_json(path, clean(results.to_dict() if isinstance(results, Results) else results), force=force)


#: The plot's formats, each with the metadata field that carries ``PICTURE_MARK`` (a rerun may replace it).
PLOT_FORMATS = {".png": "Software", ".pdf": "Creator", ".svg": "Creator"}


def check_plot_path(path: str | Path, *, force: bool = False) -> Path:
    """Check, before any work, that ``plot_mma`` may write ``path``.

    Raises:
        ValueError: a suffix other than .png, .pdf or .svg.
        FileExistsError: ``path`` exists and is not a plot written by hardnet-desc (unless ``force``).
    """
    path = Path(path)
    if path.suffix.lower() not in PLOT_FORMATS:
        raise ValueError(f"{path}: the plot must be a {', '.join(PLOT_FORMATS)} file")
    return check_output(path, is_picture_ours, force=force)


def plot_mma(results: SequenceResults, path: str | Path, *, force: bool = False) -> Path:
    """Save an MMA-vs-threshold plot (.png, .pdf or .svg): one line per method, one panel per group
    (overall, v, i, other). Atomically; an existing ``path`` is replaced only if hardnet-desc wrote it, or
    with ``force``."""
    path = check_plot_path(path, force=force)
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    summary, t = results.summary, results.thresholds
    groups = [g for g in ("overall", *GROUPS) if any(g in s for s in summary.values())]
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.8), sharey=True, squeeze=False)
    for ax, group in zip(axes[0], groups):
        for name, s in summary.items():
            if group in s:
                ax.plot(t, s[group]["mma"], marker="o", markersize=3, label=name)
        n = next(s[group] for s in summary.values() if group in s)
        ax.set_title(f"{_TITLES[group]} ({n['sequences']} seq, {n['pairs']} pairs)")
        ax.set_xlabel("threshold [px]")
        ax.set_xlim(min(t), max(t))
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("MMA")
    axes[0][-1].legend(loc="lower right")
    fig.tight_layout()
    with replacing(path) as tmp:
        fig.savefig(tmp, format=path.suffix[1:].lower(), dpi=120,
                    metadata={PLOT_FORMATS[path.suffix.lower()]: PICTURE_MARK.decode()})
    plt.close(fig)
    return path


__all__ = ["Results", "SequenceResults", "check_plot_path", "evaluate_sequences", "format_table", "plot_mma",
           "save_json"]
