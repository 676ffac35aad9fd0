"""Device and numeric precision: one resolution used by inference, training and evaluation.

Precisions (``precision`` arguments and ``--precision`` options):

| name   | CPU                                                    | CUDA                 |
|--------|--------------------------------------------------------|----------------------|
| `fp32` | float32                                                | float32              |
| `bf16` | bfloat16 autocast                                      | bfloat16 autocast    |
| `fp16` | error (use `bf16`)                                     | float16 autocast     |
| `int8` | int8 convolutions (``hardnet_desc.core.quantize``)          | error                |
| `auto` | per CPU kind (``CPU_AUTO``): the fastest measured      | `fp16`               |
|        | precision that is as accurate as fp32 on real pairs    |                      |

`auto` on a CPU: the kind of CPU (``cpu_kind``: ``"amx"``, ``"avx512_bf16+vnni"``,
``"avx512_vnni"``, ``"avx2"`` or ``"other"``) names its precisions fastest first in ``CPU_AUTO``,
and the first that can run is taken: `int8` for inference with weights that ship int8
calibration (the bundled ones) where torch has the int8 kernels (``int8_available``), `bf16`
where the CPU computes bfloat16 natively, else `fp32`. Today that is int8 on every x86 kind with
AVX2 or more (1.7x-2.3x the next precision, and within noise of fp32 in accuracy on real pairs:
docs/benchmarks.md), bf16 for training or other weights on CPUs with AVX-512 BF16 or AMX, and
fp32 otherwise. This is the one place the choice is made (``choose_precision``).

`int8` is for inference only (``hardnet_desc.HardNetDescriptor``); training refuses it.
``default_batch_size`` gives the measured batch size of each device (and CPU kind) and precision.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch

#: Accepted precision names, see the module table.
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.int8}

#: CPU kind -> the precisions ``"auto"`` may run there, fastest first (``fp32`` when none can run).
#: Accuracy: int8 with the shipped calibration is within noise of fp32 on real pairs (280 held-out
#: pairs: 158.3 correct matches per pair vs 158.4; MMA@3 0.1 % below on 80 sequence pairs;
#: docs/benchmarks.md, "Real held-out scenes" and "Accuracy cost of bf16 and int8"), so the faster
#: one is taken. Speed, ``compute()`` patches/s of ``benchmarks/bench_descriptor.py``:
CPU_AUTO: dict[str, tuple[str, ...]] = {
    # Intel Xeon, AMX-INT8/BF16, 2 vCPUs (2026-11-25): int8 1,339 vs bf16 688 = 1.95x
    # (docs/benchmarks.md, "CPU: Intel Xeon with AMX-BF16/AMX-INT8").
    "amx": ("int8", "bf16"),
    # AMD EPYC Zen 4, AVX-512 BF16 + VNNI, 2 vCPUs: int8 1.72x bf16 in one run, nearest-neighbour
    # agreement with fp32 0.981 (issue 23).
    "avx512_bf16+vnni": ("int8", "bf16"),
    # Unmeasured: VNNI adds int8 dot products to what the avx2 row measured without them.
    "avx512_vnni": ("int8",),
    # AMD EPYC Zen 3, AVX2, 2 vCPUs (2026-12-02): int8 3,945 vs fp32 1,693 = 2.33x; bf16 is
    # emulated there, 10x slower than fp32 (docs/benchmarks.md, "CPU: AMD EPYC (Zen 3").
    "avx2": ("int8",),
    # Unmeasured (other architectures, x86 without AVX2): fp32.
    "other": (),
}

#: Patches per forward pass for each (device kind, precision): the fastest batch size measured with
#: ``python benchmarks/bench_descriptor.py --scan-batch``. Device kinds: ``"cpu:KIND"`` for a kind of
#: ``CPU_AUTO`` with its own measurement, else ``"cpu"``; ``"cuda"``. Small CPU batches keep the
#: activations in cache. Never changes results, only speed and memory.
BATCH_SIZES = {
    # Intel Xeon with AMX, 2 vCPUs, 1 thread (docs/benchmarks.md, "Batch size").
    ("cpu:amx", "fp32"): 64,
    ("cpu:amx", "bf16"): 128,
    ("cpu:amx", "int8"): 256,
    # Other CPU kinds: unmeasured, the AMX machine's values.
    ("cpu", "fp32"): 64,
    ("cpu", "bf16"): 128,
    ("cpu", "int8"): 256,
    # CUDA: NVIDIA H200, net alone (benchmarks/gpu_check.py, docs/benchmarks.md "GPU"): 8192 is within
    # 2 % of the fastest (16384) at half its activation memory (about 1.5 GiB in fp16).
    ("cuda", "fp32"): 8192,
    ("cuda", "bf16"): 8192,
    ("cuda", "fp16"): 8192,
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


def usable_cpus() -> int:
    """How many CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


#: The CPU features that tell the kinds of ``CPU_AUTO`` apart: torch's cpuinfo probe of each (any
#: OS), and the Linux kernel's flag for torch builds without the probes.
_CPU_PROBES = {
    "amx": ("_is_amx_tile_supported", "amx_tile"),
    "avx512_bf16": ("_is_avx512_bf16_supported", "avx512_bf16"),
    "avx512_vnni": ("_is_vnni_supported", "avx512_vnni"),
    "avx2": ("_is_avx2_supported", "avx2"),
}


def cpu_features() -> frozenset[str]:
    """Which of ``"amx"``, ``"avx512_bf16"``, ``"avx512_vnni"`` and ``"avx2"`` this CPU has."""
    if all(hasattr(torch.cpu, probe) for probe, _ in _CPU_PROBES.values()):
        return frozenset(name for name, (probe, _) in _CPU_PROBES.items() if getattr(torch.cpu, probe)())
    try:  # older torch: the kernel's flags (Linux)
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return frozenset()
    return frozenset(name for name, (_, flag) in _CPU_PROBES.items() if flag in flags)


def cpu_kind() -> str:
    """This CPU's kind, a key of ``CPU_AUTO``: the first of ``"amx"``, ``"avx512_bf16+vnni"``,
    ``"avx512_vnni"``, ``"avx2"`` whose features it has, else ``"other"``."""
    features = cpu_features()
    if "amx" in features:
        return "amx"
    if {"avx512_bf16", "avx512_vnni"} <= features:
        return "avx512_bf16+vnni"
    for kind in ("avx512_vnni", "avx2"):
        if kind in features:
            return kind
    return "other"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX-512 BF16 or AMX), so ``bf16`` is fast on it.

    Without it, bfloat16 is emulated and slower than float32.
    """
    return bool({"amx", "avx512_bf16"} & cpu_features())


#: torch's quantized engine of the int8 network (``hardnet_desc.core.quantize``).
INT8_ENGINE = "onednn"


def int8_available() -> bool:
    """Whether this torch build has the quantized CPU kernels that ``int8`` runs on (oneDNN engine)."""
    try:
        import torch.ao.nn.intrinsic.quantized  # noqa: F401
    except ImportError:
        return False
    return INT8_ENGINE in torch.backends.quantized.supported_engines


def choose_precision(
    precision: str, device: torch.device, *, inference: bool = False, int8_calibrated: bool = False
) -> str:
    """The precision name that runs: ``precision`` checked, and ``'auto'`` replaced per the module table.

    Args:
        precision: a name of ``PRECISIONS``.
        device: where the network runs.
        inference: allow ``'int8'`` (``hardnet_desc.HardNetDescriptor``, not training).
        int8_calibrated: the weights have int8 activation scales (the bundled ones ship them), so
            ``'auto'`` may take int8 for inference where ``CPU_AUTO`` lists it first.

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
        native_bf16 = cpu_has_native_bf16()
        for name in CPU_AUTO[cpu_kind()]:
            if name == "int8" and inference and int8_calibrated and int8_available():
                return name
            if name == "bf16" and native_bf16:
                return name
        return "fp32"
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
    """The measured fastest batch size of a chosen precision (``BATCH_SIZES``): this CPU kind's row
    where it has one, else the device type's."""
    if device.type == "cpu" and (f"cpu:{cpu_kind()}", precision) in BATCH_SIZES:
        return BATCH_SIZES[(f"cpu:{cpu_kind()}", precision)]
    return BATCH_SIZES.get((device.type, precision), _FALLBACK_BATCH_SIZE)


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """The autocast context of ``precision`` on ``device`` (a no-op for float32, and for int8 nets,
    which quantize themselves)."""
    dtype = resolve_precision(precision, device, inference=True)
    if dtype in (torch.float32, torch.int8):
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
