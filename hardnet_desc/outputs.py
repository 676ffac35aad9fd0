"""Writing output files: the one rule every command and library function that writes follows.

* **Never replace a file hardnet-desc did not write** (unless ``force``): ``check_output`` raises
  ``FileExistsError`` naming the file and ``--force``. Whether a file is ours is read from the
  file itself by an ``ours(path)`` test of its format: a mark in a picture's metadata
  (``viz.PICTURE_MARK``), ``producer_name`` of an ONNX model, ``WRITTEN_BY`` in a JSON object
  (``json_is_ours``), the header of a training log.
* **Replace atomically**: ``replacing(path)`` yields a temporary name in the same folder and
  ``os.replace``s it onto ``path`` once written, so an interrupted run leaves the old file or the
  new one, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: The key and value that mark a JSON object (and an HDF5 shard) as written by hardnet-desc.
WRITTEN_BY_KEY, WRITTEN_BY = "written_by", "hardnet-desc"
#: How the usual commands and functions are told to replace a file they did not write (named in the refusal).
FORCE = "--force (force=True)"


def check_distinct(**outputs: str | Path | None) -> None:
    """Before any work: raise ``ValueError`` if two of a command's outputs (``out=..., json=...``; None for
    one not asked for) are one file, which the second write would replace with no word."""
    seen: dict[Path, str] = {}
    for option, path in outputs.items():
        if path is None:
            continue
        where = Path(path).resolve()
        if where in seen:
            raise ValueError(f"--{seen[where]} and --{option} name the same file {path}")
        seen[where] = option


def check_output(path: str | Path, ours: Callable[[Path], bool], *, force: bool = False,
                 option: str = FORCE) -> Path:
    """``path`` as a ``Path``, if this program may write it: it does not exist, ``ours(path)`` says
    hardnet-desc wrote it, or ``force`` (``option`` names it in the error).

    Raises:
        ValueError: ``path`` is a folder.
        FileExistsError: ``path`` exists, is not ours and ``force`` is off.
        NotADirectoryError, PermissionError: its folder cannot be made or written (``check_writable``).
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give a file name")
    if path.exists() and not force and not _is_ours(ours, path):
        raise FileExistsError(f"{path} exists and was not written by hardnet-desc; pass {option} to overwrite it")
    check_writable(path)
    return path


def check_writable(path: str | Path) -> None:
    """Before any work: raise unless a file can be written at ``path``. Its folder, or the nearest part of it
    that exists (``replacing`` makes the rest), must be a folder this process can write in; nothing is made.

    Raises:
        NotADirectoryError: a part of the folder is a file.
        PermissionError: the folder cannot be written (read-only, or a system folder such as /proc).
    """
    folder = Path(path).absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise NotADirectoryError(f"cannot write {path}: {folder} is a file, not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=folder):  # the real test: root ignores permission bits
            pass
    except OSError as err:
        raise PermissionError(f"cannot write {path}: {(err.strerror or str(err)).lower()} ({folder})") from None


def _is_ours(ours: Callable[[Path], bool], path: Path) -> bool:
    try:
        return bool(ours(path))
    except Exception:  # noqa: BLE001 (a file a format test cannot even read is not ours)
        return False


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder (same suffix) to write; on success it replaces ``path``
    (``os.replace``, atomic), on an error it is removed and ``path`` is left as it was. Creates the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Re-raise an ``OSError`` of the block as ``cannot write PATH: REASON`` (a full disk's error names no file)."""
    try:
        yield
    except OSError as err:
        error = type(err)(f"cannot write {path}: {err.strerror or err}")  # PermissionError stays one
        error.errno = err.errno
        raise error from None


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see ``replacing``)."""
    with replacing(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def read_json_object(path: str | Path) -> dict[str, Any]:
    """The JSON object in ``path`` (a record such as make-dataset's ``meta.json``).

    Raises:
        ValueError: naming the file, if it is not UTF-8 JSON or holds another value than an object.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        raise ValueError(f"{path}: not a JSON file ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: holds a JSON {type(data).__name__}, not the JSON object expected")
    return data


def json_is_ours(path: str | Path) -> bool:
    """True if ``path`` holds a JSON object that ``write_json`` wrote."""
    data = json.loads(Path(path).read_text())
    return isinstance(data, dict) and data.get(WRITTEN_BY_KEY) == WRITTEN_BY


def write_json(path: str | Path, data: dict[str, Any], *, force: bool = False,
               option: str = FORCE, **dumps: Any) -> Path:
    """Write the object ``data`` as JSON, marked ``{"written_by": "hardnet-desc", ...}``, atomically;
    refuses (``check_output``, naming ``option``) to replace a file it did not write unless ``force``. ``dumps``: for
    ``json.dumps``."""
    path = check_output(path, json_is_ours, force=force, option=option)
    text = json.dumps({WRITTEN_BY_KEY: WRITTEN_BY, **data}, **{"indent": 1, **dumps})
    return write_bytes(path, text.encode())
