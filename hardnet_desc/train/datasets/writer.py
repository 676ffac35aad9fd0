"""What both training-set builders share: the split writer, the staged swap of a dataset's folders
(``StagedDataset``) and the default ``PatchSpec``.

A split is a PhotoTour folder (``hardnet_desc.data.phototour``) written from parts, one per photo
(synthetic builder) or per scene (SfM builder): each part's patches with its own point labels
``0..P-1``, which run on across the parts, and the part's index as the second column of
``info.txt`` (``--photos-per-batch`` draws a batch's negatives from one part).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType

import numpy as np

from ...data.phototour import PairArrays, PhotoTourWriter
from ...core.patches import PatchSpec
from ...outputs import write_json
from ...workers import sigint_ignored

#: One part of a split: patches (k, 64, 64) uint8, their point labels (k,) counted from 0 within the
#: part, and the part's index (``info.txt``'s second column).
Part = tuple[np.ndarray, np.ndarray, int]


#: The split folders of a dataset.
SPLITS = ("train", "val")
#: What a build keeps beside the dataset until it ends (``OUT/.train.partial``, ``OUT/.meta.json.partial``, and
#: during the swap ``OUT/.val.old``, ``OUT/.meta.json.old``); ours by name: the next build clears what a killed
#: one left.
_TEMPORARY = re.compile(r"\.(train|val)\.(partial|old)|\.\w+\.json\.(partial|old)")


class StagedDataset:
    """A dataset in ``out`` built beside the old one and put in place whole, so that a failed or interrupted
    build leaves the old dataset (or the new one), never a mix of both.

    Each split is written to ``folder(split)`` (``out/.train.partial``) inside the ``with`` block, which on
    an error or Ctrl-C removes the new folders. ``commit`` then writes the JSON records beside
    (``out/.meta.json.partial``) and, with Ctrl-C held off, swaps each split folder and then each record: the
    old one renamed aside (``out/.train.old``), the new one into its place (an old split that was not rebuilt
    is removed). A swap that fails half-way is undone; one a killed process left is undone by the next build
    (while a record is still ``.partial`` the swap had not finished: what was set aside comes back), or
    finished if only the clean-up was missing. Check ``out`` first (``check_dataset_folder``): its splits are
    replaced whole. A build that fails leaves no ``out`` it created.
    """

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self._made = not self.out.exists()
        self.out.mkdir(parents=True, exist_ok=True)
        self._recover()

    def folder(self, split: str) -> Path:
        """The temporary folder to build ``split`` in."""
        return self.out / f".{split}.partial"

    def commit(self, records: Mapping[str, dict]) -> None:
        """Put the built splits in place, then the ``records`` (``{"meta.json": {...}}``, in this order)."""
        with self:  # a full disk stops here, before anything is replaced
            for name, data in records.items():
                write_json(self.out / f".{name}.partial", data)
        swaps = [(self.folder(split), self.out / split) for split in SPLITS]
        swaps += [(self.out / f".{name}.partial", self.out / name) for name in records]
        with sigint_ignored(), self:  # renames only; undone on an error
            for new, final in swaps:
                if final.exists() or final.is_symlink():
                    final.rename(_aside(final))
                if new.exists():
                    new.rename(final)
        self._cleanup()

    def _recover(self) -> None:
        """Undo a swap that did not finish (a record still ``.partial``), then clear the temporary files."""
        if any(p.name.endswith(".json.partial") for p in self.out.iterdir()):
            for final in [self.out / split for split in SPLITS] + [p.with_name(p.name[1:-4]) for p in
                                                                   self.out.glob(".*.json.old")]:
                if _aside(final).exists() or _aside(final).is_symlink():
                    _remove(final)
                    _aside(final).rename(final)
        self._cleanup()

    def _cleanup(self) -> None:
        for path in list(self.out.iterdir()):
            if _TEMPORARY.fullmatch(path.name):
                _remove(path)

    def __enter__(self) -> StagedDataset:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            self._recover()
            if self._made and not any(self.out.iterdir()):
                self.out.rmdir()


def _aside(path: Path) -> Path:
    """Where a swap keeps the old ``path`` until the new one is in place: ``.NAME.old`` beside it."""
    return path.with_name(f".{path.name}.old")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def check_outside(source: str | Path, out: str | Path, what: str = "photo folder") -> None:
    """Before any work: raise ``ValueError`` if the output folder ``out`` is the input folder ``source`` (a
    ``what``) or lies inside it, where a later run would take the patch files for input, or if ``source``
    lies in one of ``out``'s split folders, which the build replaces."""
    src, dst = Path(source).resolve(), Path(out).resolve()
    if src == dst or src in dst.parents:
        raise ValueError(f"the output folder {out} {'is' if src == dst else 'lies in'} the {what} {source}: a later "
                         "run would take its patch files for input; choose an output folder outside it")
    if any(dst / split in (src, *src.parents) for split in SPLITS):
        raise ValueError(f"the {what} {source} lies in a split folder of {out}, which the build replaces")


def write_split(
    folder: Path,
    parts: Iterable[Part],
    *,
    first_label: int = 0,
    pair_files: Callable[[np.ndarray], Mapping[str, PairArrays] | None] | None = None,
    total: int | None = None,
    unit: str = "photos",
    progress: bool = True,
    name: str | None = None,
) -> np.ndarray:
    """Write the ``parts`` to the PhotoTour folder ``folder``; returns every patch's label (N,) int64.

    Args:
        folder: the split's folder (``StagedDataset.folder(split)``, or any folder).
        parts: ``(patches, labels, index)`` per photo or scene, in order; labels run on from
            ``first_label``, each part's after the previous part's largest.
        pair_files: called with all labels once every part is written; the pair files it returns
            (``{"m50_*.txt": (idx1, idx2, is_match)}``) are written beside the patches.
        total, unit, progress, name: the progress bar over the parts (``"{name} {unit}"``; name: ``folder.name``).
    """
    from tqdm import tqdm

    writer = PhotoTourWriter(folder)
    labels: list[np.ndarray] = []
    next_label = first_label
    for patches, local, index in tqdm(parts, total=total, desc=f"{name or folder.name} {unit}", disable=not progress):
        labels.append(local + next_label)
        writer.add(patches, labels[-1], index)
        next_label += int(local.max()) + 1 if len(local) else 0
    ids = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    writer.close(pair_files(ids) if pair_files else None)
    return ids


def default_patch_spec(patch_scale: float | None = None, min_kp_size: float | None = None) -> PatchSpec:
    """The ``PatchSpec`` a training set is cut with: ``patch_scale`` and ``min_kp_size`` as given, else the
    bundled weights' (a set cut as they describe; ``PatchSpec``'s defaults for what they do not record).

    Raises:
        ValueError, TypeError: a value that is not a valid number for its field.
    """
    if patch_scale is None or min_kp_size is None:
        from ...core.weights import load_weights

        return load_weights().patch_spec.replace(scale=patch_scale, min_kp_size=min_kp_size)
    return PatchSpec(scale=patch_scale, min_kp_size=min_kp_size)


def spec_record(spec: PatchSpec) -> dict[str, float]:
    """The spec as a dataset's ``meta.json`` records it, in numbers: ``{"patch_scale": 6.0, "min_kp_size": 3.5}``
    (the keys of ``PatchSpec.to_metadata``, which the trainer reads back and writes into the weights)."""
    return {key: float(value) for key, value in spec.to_metadata().items()}
