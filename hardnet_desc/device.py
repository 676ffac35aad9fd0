"""Device and numeric precision: one resolution used by inference, training and evaluation.

Precisions (``precision`` arguments and ``--precision`` options):

| name   | CPU                        | CUDA                       |
|--------|----------------------------|----------------------------|
| `fp32` | float32                    | float32                    |
| `bf16` | bfloat16 autocast          | bfloat16 autocast          |
| `fp16` | error (use `bf16`)         | float16 autocast           |
| `auto` | bfloat16 autocast          | float16 autocast           |
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

#: Accepted precision names, see the module table.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str | torch.device) -> torch.device:
    """The ``torch.device`` for a user's ``device`` argument.

    Args:
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``,
            another torch device string, or a ``torch.device``.

    Raises:
        TypeError: ``device`` is neither a string nor a ``torch.device``.
        ValueError: an unknown device string, or a CUDA device that this machine does not have.
    """
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a string such as 'auto', 'cpu' or 'cuda', got {type(device).__name__}")
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={str(device)!r} was requested but CUDA is not available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device={str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The compute dtype of ``precision`` on ``device`` (table in the module docstring).

    Raises:
        ValueError: an unknown name, or ``'fp16'`` on a device other than CUDA.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.bfloat16
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision='fp16' needs a CUDA device; use 'bf16' on CPU")
    return _DTYPES[precision]


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """The autocast context of ``precision`` on ``device`` (a no-op for float32)."""
    dtype = resolve_precision(precision, device)
    return nullcontext() if dtype == torch.float32 else torch.autocast(device_type=device.type, dtype=dtype)
