"""Finding and loading HardNet weights. Everything goes through ``load_weights``.

Sources:

* a bundled name (``"default"`` or a key of ``BUNDLED``), checked against a pinned sha256;
* a local ``.safetensors`` file;
* a local ``.pth`` / ``.pt`` file: the authors' ``{'epoch', 'state_dict'}`` checkpoint or a
  bare state dict (e.g. kornia's), always read with ``torch.load(weights_only=True)``;
* ``hf://owner/repo/path/file`` (optionally ``@revision``) from the Hugging Face Hub, cached by
  ``huggingface_hub`` and honouring ``HF_HUB_OFFLINE``; without network it fails within seconds;
* a ``torch.nn.Module`` with HardNet's layout (e.g. ``kornia.feature.HardNet``).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch

from .model import HardNet
from .patches import PatchSpec

#: Bundled weight files: name -> (file name, sha256). The first entry is the default.
BUNDLED: dict[str, tuple[str, str]] = {
    "hardnet-desc-v4": ("hardnet-desc-v4.safetensors", "5a4962b978f480690c319b40f92e4e5ad67a50600cf990c860a749d092699307"),
    "hardnet-desc-v3": ("hardnet-desc-v3.safetensors", "92613e231a66c26241dd36064953f4355b41ca5b6c85caa5c7cd28a5f1894949"),
}
DEFAULT_WEIGHTS = "default"
_REPO_WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"


class WeightsError(ValueError):
    """A weight source that cannot be found, read, or does not fit HardNet."""


@dataclass
class Weights:
    """A HardNet state dict plus where it came from and what its file says about itself."""

    state_dict: dict[str, torch.Tensor]
    source: str
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def patch_spec(self) -> PatchSpec:
        """How the weights' patches are cut, as their file records it (``PatchSpec`` defaults for what it does not).

        Raises:
            WeightsError: the file records a value that is not valid (the message names the file and the key).
        """
        try:
            return PatchSpec.from_metadata(self.metadata, source=self.source)
        except ValueError as err:
            raise WeightsError(str(err)) from None

    @property
    def patch_scale(self) -> float | None:
        """The patch scale the weights were trained with, if the file records it (``patch_spec``)."""
        return self.patch_spec.scale if PatchSpec.records(self.metadata, "scale") else None

    @property
    def min_kp_size(self) -> float:
        """The least ``kp.size`` (pixels) the weights were trained to cut patches for; 0 if the file records none."""
        return self.patch_spec.min_kp_size

    @property
    def fingerprint(self) -> str:
        """``fingerprint`` of the state dict: recorded by feature files, ONNX models and int8 calibration."""
        return fingerprint(self.state_dict)


def fingerprint(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 of a state dict's tensors (names, sorted, and values as stored), to tell weight sets apart.

    The one fingerprint of weights: ``hardnet-desc extract``'s HDF5 files, ONNX metadata and the int8
    calibration table (``hardnet_desc.core.quantize``) record it.
    """
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        digest.update(key.encode())
        # the bytes as stored (any dtype: numpy has no bfloat16)
        digest.update(state_dict[key].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def bundled_path(name: str) -> Path:
    """Path of a bundled weight file, installed in the wheel or in a source checkout."""
    return bundled_file(BUNDLED[name][0])


def bundled_file(filename: str) -> Path:
    """Path of a file shipped with the weights (``hardnet_desc.weight_files``, or ``weights/`` in a checkout)."""
    try:
        candidate = Path(str(resources.files("hardnet_desc.weight_files") / filename))
        if candidate.is_file():
            return candidate
    except ModuleNotFoundError:
        pass
    return _REPO_WEIGHTS_DIR / filename


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_file(source: str) -> Path | None:
    """The local file the weights name ``source`` stands for (``~`` expanded), or ``None`` for a bundled name or an
    ``hf://`` address (how ``load_weights`` reads a name)."""
    if source == DEFAULT_WEIGHTS or source in BUNDLED or source.startswith("hf://"):
        return None
    return Path(source).expanduser()


def load_weights(source: str | Path | torch.nn.Module | Weights = DEFAULT_WEIGHTS) -> Weights:
    """Load a HardNet state dict from any supported source (see module docstring).

    ``source`` may also be a ``torch.nn.Module`` with HardNet's layout (e.g. ``kornia.feature.HardNet``),
    whose state dict is copied, or ``Weights`` (checked and returned).

    Raises:
        WeightsError: unknown name, missing/corrupt/truncated file, checksum mismatch, a state dict
            that is not HardNet's (the message names the file and the mismatch), or a recorded
            ``patch_scale``/``min_kp_size`` that is not a valid number.
    """
    if isinstance(source, Weights):
        return _checked(source)
    if isinstance(source, torch.nn.Module):
        # any module with HardNet's layout, e.g. kornia.feature.HardNet; copied, never changed
        state = {k: v.detach().cpu().clone() for k, v in source.state_dict().items()}
        return _checked(Weights(state, f"{type(source).__name__} module"))
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            "weights must be a bundled name, a file path, 'hf://owner/repo/file' or a HardNet-layout "
            f"torch.nn.Module, got {type(source).__name__}"
        )
    text = str(source)
    if text == DEFAULT_WEIGHTS:
        if not BUNDLED:
            raise WeightsError(
                "no bundled weights are installed in this build of hardnet-desc; "
                "pass weights=<path to .safetensors/.pth> or weights='hf://owner/repo/file'"
            )
        text = next(iter(BUNDLED))
    if text in BUNDLED:
        path = bundled_path(text)
        if not path.is_file():
            raise WeightsError(f"bundled weights {text!r} are missing: {path} does not exist (broken install?)")
        expected = BUNDLED[text][1]
        actual = sha256_of(path)
        if actual != expected:
            raise WeightsError(f"{path}: sha256 {actual} does not match the pinned {expected} (corrupt file?)")
        weights = _read_file(path)
        weights.source = text
    elif text.startswith("hf://"):
        weights = _read_file(_download_from_hub(text))
        weights.source = text
    else:
        path = weights_file(text)
        if not path.is_file():
            names = ", ".join(["default", *BUNDLED]) if BUNDLED else "none installed"
            raise WeightsError(f"weights {text!r}: no such file, and not a bundled name (bundled: {names})")
        weights = _read_file(path)
    return _checked(weights)


def _checked(weights: Weights) -> Weights:
    """``weights`` after ``check_state_dict`` and a check of its recorded ``patch_scale`` and ``min_kp_size``."""
    check_state_dict(weights.state_dict, weights.source)
    weights.patch_spec  # noqa: B018 (a bad metadata value fails here, naming the file)
    return weights


def _read_file(path: Path) -> Weights:
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = dict(f.metadata() or {})
                state = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as err:
            raise WeightsError(f"{path}: not a readable safetensors file ({err})") from err
        return Weights(state, str(path), metadata)
    if suffix in (".pth", ".pt", ".ckpt", ".bin"):
        obj = read_checkpoint(path)
        if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict):
            raise WeightsError(f"{path}: expected a state dict or {{'state_dict': ...}}, got {type(obj).__name__}")
        if not all(isinstance(k, str) for k in obj):
            raise WeightsError(f"{path}: not a state dict (its keys are not all parameter names)")
        # DataParallel checkpoints prefix every key with "module."
        state = {k.removeprefix("module."): v for k, v in obj.items()}
        return Weights(state, str(path))
    raise WeightsError(f"{path}: unknown weight file type {suffix!r} (use .safetensors, .pth or .pt)")


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> object:
    """``torch.load(path, weights_only=True)`` with one-line ``WeightsError`` for every failure.

    Empty, truncated or non-torch files and pickles the safe loader refuses (the message names the
    refused global, e.g. ``posix.system``) all raise ``WeightsError``; nothing in the file is executed.
    """
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise WeightsError(f"{path}: empty file (0 bytes), not a torch checkpoint")
    if path.is_file() and not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            if f.read(1) != b"\x80":  # neither torch's zip format nor a (legacy) binary pickle
                raise WeightsError(f"{path}: not a readable torch checkpoint (neither a zip archive nor a pickle)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise WeightsError(
            f"{path}: refused by the safe loader ({_refusal_reason(err)}); pickles that would run code on load "
            "are never loaded"
        ) from err
    except Exception as err:  # zip/format errors of corrupt, truncated or non-torch files
        first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise WeightsError(f"{path}: not a readable torch checkpoint ({first.strip()})") from err


def _refusal_reason(err: Exception) -> str:
    """What ``torch.load(weights_only=True)`` refused, without its advice to load unsafely."""
    text = str(err)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return f"it needs the global {found.group(1)}"
    keep = [p for p in text.split("\n\n") if p.strip() and not re.search(r"weights_only|Re-running|Please", p)]
    return " ".join(" ".join(keep).split()) or type(err).__name__


def _download_from_hub(uri: str) -> Path:
    """Download (or find in the cache) the file of an ``hf://`` URI.

    Without network the Hub client retries for half a minute; a 3 s connection probe first makes
    that case fail fast, reading the local cache only (as with ``HF_HUB_OFFLINE=1``).
    """
    from huggingface_hub import constants, hf_hub_download

    spec, _, revision = uri.removeprefix("hf://").partition("@")
    parts = spec.split("/")
    if len(parts) < 3 or not all(parts):
        raise WeightsError(f"{uri!r}: expected hf://owner/repo/path/to/file[@revision]")
    offline = constants.HF_HUB_OFFLINE or not _reachable(constants.ENDPOINT)
    try:
        path = hf_hub_download(
            "/".join(parts[:2]), "/".join(parts[2:]), revision=revision or None, local_files_only=offline
        )
    except Exception as err:  # network, offline-cache miss, 404, auth: all end here
        if offline:
            why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else f"{constants.ENDPOINT} cannot be reached"
            raise WeightsError(f"{uri}: {why} and the file is not in the local Hugging Face cache") from err
        first = next((line for line in str(err).splitlines() if line.strip()), "")
        raise WeightsError(f"{uri}: cannot fetch from the Hugging Face Hub ({type(err).__name__}: {first})") from err
    return Path(path)


def _reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``url``'s host opens within ``timeout`` seconds (True behind a proxy)."""
    import socket
    from urllib.parse import urlsplit

    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # the client goes through the proxy; a direct probe says nothing
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def check_state_dict(state: dict[str, torch.Tensor], source: str) -> None:
    """Raise ``WeightsError`` unless ``state`` has HardNet's keys and shapes, floating-point finite values
    and BatchNorm variances >= 0 (a negative ``running_var`` would make every descriptor NaN)."""
    with torch.device("meta"):  # shapes only: no memory, no random init
        reference = {k: v.shape for k, v in HardNet().state_dict().items() if not k.endswith("num_batches_tracked")}
    given = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    missing = sorted(set(reference) - set(given))
    unexpected = sorted(set(given) - set(reference))
    if missing or unexpected:
        raise WeightsError(
            f"{source}: not a HardNet state dict (missing keys: {missing[:5]}{'...' if len(missing) > 5 else ''}; "
            f"unexpected keys: {unexpected[:5]}{'...' if len(unexpected) > 5 else ''})"
        )
    for key, value in state.items():
        if key.endswith("num_batches_tracked") and not (isinstance(value, torch.Tensor) and value.shape == ()
                                                        and not value.is_floating_point()):
            got = f"shape {tuple(value.shape)}, dtype {value.dtype}" if isinstance(value, torch.Tensor) else \
                type(value).__name__
            raise WeightsError(f"{source}: {key} is {got}, BatchNorm's counter is one integer")
        if isinstance(value, torch.Tensor) and value.layout != torch.strided:
            raise WeightsError(f"{source}: {key} is a {value.layout} tensor, HardNet expects dense ones")
    for key, shape in reference.items():
        value = given[key]
        if not isinstance(value, torch.Tensor) or value.shape != shape:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise WeightsError(f"{source}: {key} has shape {got}, HardNet expects {tuple(shape)}")
        if not value.is_floating_point():
            raise WeightsError(f"{source}: {key} has dtype {value.dtype}, HardNet expects floating point")
        if not torch.isfinite(value).all():
            raise WeightsError(f"{source}: {key} contains NaN or inf")
        if key.endswith("running_var") and bool((value < 0).any()):
            raise WeightsError(f"{source}: {key} has negative values (min {float(value.min()):g}): "
                               "a variance is >= 0")


def load_hardnet(source: str | Path | torch.nn.Module | Weights = DEFAULT_WEIGHTS) -> tuple[HardNet, Weights]:
    """A ``HardNet`` in eval mode with the given weights loaded (strict), in float32 whatever dtype they were
    stored in (the descriptor's ``precision`` decides how it computes)."""
    weights = load_weights(source)
    with torch.device("meta"):  # the random init would be overwritten: skip it (a third of the load time)
        net = HardNet()
    state = {k: v.float() if v.is_floating_point() else v for k, v in weights.state_dict.items()}
    net.load_state_dict(state, strict=True, assign=True)
    return net.eval(), weights


def save_weights(net: HardNet, path: str | Path, metadata: dict | None = None) -> Path:
    """Write ``net``'s weights as safetensors; metadata values are stored as strings (JSON for non-str)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    save_file(state, str(path), metadata=meta)
    # safetensors writes through a private temporary file (mode 0600); give it a normal file's mode
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)
    return path
