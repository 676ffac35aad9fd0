"""Device and numeric precision: one resolution used by inference, training and evaluation.

Precisions (``precision`` arguments and ``--precision`` options):

| name   | CPU                                              | CUDA                       |
|--------|--------------------------------------------------|----------------------------|
| `fp32` | float32                                          | float32                    |
| `bf16` | bfloat16 autocast                                | bfloat16 autocast          |
| `fp16` | error (use `bf16`)                               | float16 autocast           |
| `int8` | int8 convolutions (``hardnet_desc.quantize``) | error                      |
| `auto` | `bf16` where the CPU has native bfloat16         | `fp16`                     |
|        | (AVX-512 BF16 or AMX); else, for inference with  |                            |
|        | calibrated (bundled) weights, `int8`; else `fp32`|                            |

`int8` is for inference only (``hardnet_desc.HardNetDescriptor``); training refuses it. Without
native bfloat16 `auto` takes `int8` over `fp32` for the weights that ship int8 calibration: about
2x the speed at a measured accuracy cost within noise (docs/benchmarks.md, "CPU: AMD EPYC").
``choose_precision`` names what `auto` becomes, ``default_batch_size`` the measured
batch size of each device and precision.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch

#: Accepted precision names, see the module table.
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.int8}

#: Patches per forward pass for each (device type, precision): the fastest batch size measured with
#: ``python benchmarks/bench_descriptor.py --scan-batch`` (CPU: 2-core Xeon with AMX, see
#: docs/benchmarks.md). Small CPU batches keep the activations in cache. CUDA: unmeasured, a
#: batch large enough to fill the card. Never changes results, only speed and memory.
BATCH_SIZES = {
    ("cpu", "fp32"): 64,
    ("cpu", "bf16"): 128,
    ("cpu", "int8"): 256,
    ("cuda", "fp32"): 2048,
    ("cuda", "bf16"): 2048,
    ("cuda", "fp16"): 2048,
}
_FALLBACK_BATCH_SIZE = 256


def resolve_device(device: str | torch.device) -> torch.device:
    """The ``torch.device`` for a user's ``device`` argument.

    Args:
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``,
            ``"mps"`` or ``"xpu"`` where torch and the machine have them, or a ``torch.device``.

    Raises:
        TypeError: ``device`` is neither a string nor a ``torch.device``.
        ValueError: an unknown or unsupported device (e.g. ``"meta"``, which holds no data), or a
            CUDA, MPS or XPU device that this machine does not have.
    """
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a string such as 'auto', 'cpu' or 'cuda', got {type(device).__name__}")
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if device.type not in ("cpu", "cuda", "mps", "xpu"):  # e.g. "meta" (no data), "hpu", "privateuseone"
        raise ValueError(f"device {str(device)!r} is not supported: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if device.type in ("mps", "xpu"):
        backend = torch.backends.mps if device.type == "mps" else getattr(torch, "xpu", None)
        if backend is None or not backend.is_available():
            raise ValueError(f"device={str(device)!r} was requested but this torch build or machine has no "
                             f"{device.type.upper()} device; use 'auto', 'cpu' or 'cuda'")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={str(device)!r} was requested but CUDA is not available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device={str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX-512 BF16 or AMX), so ``bf16`` is fast on it.

    Without it, bfloat16 is emulated and slower than float32.
    """
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch's cpuinfo, any OS
    if all(hasattr(torch.cpu, name) for name in probes):
        return any(getattr(torch.cpu, name)() for name in probes)
    try:  # older torch: the kernel's flags (Linux)
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def choose_precision(
    precision: str, device: torch.device, *, inference: bool = False, int8_ready: Callable[[], bool] | None = None
) -> str:
    """The precision name that runs: ``precision`` checked, and ``'auto'`` replaced per the module table.

    Args:
        precision: a name of ``PRECISIONS``.
        device: where the network runs.
        inference: allow ``'int8'`` (``hardnet_desc.HardNetDescriptor``, not training).
        int8_ready: for inference, whether int8 can run these weights (kernels and calibration);
            asked only when ``'auto'`` would otherwise fall back to ``'fp32'`` on a CPU.

    Raises:
        ValueError: an unknown name, ``'fp16'`` off CUDA, or ``'int8'`` off CPU or in training.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        if device.type == "cuda":
            return "fp16"
        if device.type != "cpu":
            return "fp32"
        if cpu_has_native_bf16():
            return "bf16"
        return "int8" if inference and int8_ready is not None and int8_ready() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision='fp16' needs a CUDA device; use 'bf16' on CPU")
    if precision == "int8" and not inference:
        raise ValueError("precision='int8' is for inference (HardNetDescriptor); train with fp32, bf16 or auto")
    if precision == "int8" and device.type != "cpu":
        raise ValueError(f"precision='int8' runs on the CPU only, not on {device.type!r}; use 'fp16' or 'bf16'")
    return precision


def resolve_precision(precision: str, device: torch.device, *, inference: bool = False) -> torch.dtype:
    """The compute dtype of ``precision`` on ``device`` (see ``choose_precision``)."""
    return _DTYPES[choose_precision(precision, device, inference=inference)]


def default_batch_size(device: torch.device, precision: str) -> int:
    """The measured fastest batch size of a chosen precision (``BATCH_SIZES``)."""
    return BATCH_SIZES.get((device.type, precision), _FALLBACK_BATCH_SIZE)


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """The autocast context of ``precision`` on ``device`` (a no-op for float32, and for int8 nets,
    which quantize themselves)."""
    dtype = resolve_precision(precision, device, inference=True)
    if dtype in (torch.float32, torch.int8):
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
