"""Options shared by several commands, each declared once here, and what they build.

An option two commands share (same flag, same meaning) is added by one ``add_*`` function, so its
help reads the same in every ``hardnet-desc COMMAND --help``.
"""

from __future__ import annotations

import argparse
import ctypes
import sys
from pathlib import Path


def add_weights(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", default="default", help="HardNet weights: a bundled name, a .safetensors/.pth file "
                   "or hf://owner/repo/file (default: %(default)s)")


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (default: %(default)s)")


def add_precision(p: argparse.ArgumentParser, default: str, int8: bool = False, training: bool = False) -> None:
    from ..core.device import PRECISIONS

    choices = [name for name in PRECISIONS if int8 or name != "int8"]
    int8_first = "" if training else "int8 for the bundled weights on x86 CPUs with AVX2 or more, else "
    p.add_argument("--precision", choices=choices, default=default,
                   help=f"{', '.join(choices[1:])} or auto (fp16 on CUDA; {int8_first}bf16 on CPUs with native "
                   "bf16, else fp32) (default: %(default)s)")


def add_verbose(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true",
                   help="print the descriptor's settings (device, chosen precision, batch size) to stderr")


def add_max_keypoints(p: argparse.ArgumentParser, default: int | None = None, zero_keeps_all: bool = True) -> None:
    """``--max-keypoints``; ``default`` None = the shared budget ``DEFAULT_MAX_KEYPOINTS``."""
    from ..detection import DEFAULT_MAX_KEYPOINTS

    all_ = ", 0 for all" if zero_keeps_all else ""
    p.add_argument("--max-keypoints", type=int, default=default or DEFAULT_MAX_KEYPOINTS, metavar="N",
                   help=f"strongest SIFT keypoints per image{all_} (default: %(default)s)")


def add_methods(p: argparse.ArgumentParser, default: str, choices: str = "sift, rootsift, hardnet, kornia") -> None:
    p.add_argument("--methods", default=default, help=f"comma-separated, from {choices} (default: %(default)s)")


def add_mutual_ratio(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ratio", type=float, default=None, metavar="R",
                   help="add Lowe's ratio test to mutual nearest neighbours (default: off)")


def add_json(p: argparse.ArgumentParser, per: str) -> None:
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help=f"write all numbers, per {per} too")


def add_force(p: argparse.ArgumentParser, what: str, own: str = "replaced") -> None:
    """``--force``: replace ``what`` even if another program wrote it; ``own`` says what becomes of a file of
    hardnet-desc's without it (``extract`` extends its own)."""
    p.add_argument("--force", action="store_true", help=f"replace {what} even if another program wrote it (by "
                   f"default an existing file is {own} only if hardnet-desc wrote it)")


def add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def numbers(kind: type, single: bool = False):
    """An argparse type: comma-separated numbers of ``kind`` as a list (one bare number as itself if ``single``)."""

    def parse(text: str):
        try:
            values = [kind(x) for x in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, got {text!r}") from None
        return values[0] if single and len(values) == 1 else values

    return parse


def split_list(text: str) -> list[str]:
    """A comma-separated option (``--methods``, ``--scenes``, ...) as its non-empty, stripped items."""
    return [s.strip() for s in text.split(",") if s.strip()]


def descriptor(args: argparse.Namespace):
    """The HardNetDescriptor of ``--weights/--device/--precision``; ``--verbose`` prints what it runs."""
    from ..descriptor import HardNetDescriptor

    hardnet = HardNetDescriptor(args.weights, device=args.device, precision=args.precision)
    if args.verbose:
        print(f"descriptor: {hardnet!r}", file=sys.stderr)
    return hardnet


#: glibc's ``mallopt`` options and the values ``keep_freed_memory`` sets: blocks up to 256 MiB come from the heap,
#: and up to 512 MiB of freed memory stays there for reuse.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEEP_FREED = ((M_MMAP_THRESHOLD, 256 << 20), (M_TRIM_THRESHOLD, 512 << 20))


def keep_freed_memory() -> bool:
    """Let this process reuse the memory it frees instead of giving it back to the system (Linux with glibc; elsewhere
    nothing changes). Returns whether the C library took the settings.

    torch frees tensors of a few MiB to some hundred MiB as each operation ends, and glibc by default hands blocks
    above 128 KiB (a threshold it raises, up to 32 MiB, as such blocks are freed) back to the system, which clears
    every page again at the next use. For the costliest wide pair of docs/wide-baseline-log.md (round 10) that was
    2.1-2.9 s of system time of ``hardnet-desc match --wide-baseline``, and 0.7-0.8 s with these settings; ``extract``
    of 40 photos took 7.6-8.3 s instead of 8.4-9.6 s. The peak memory of both stayed the same. ``match`` and
    ``extract`` call it.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's C library
    except (OSError, AttributeError):
        return False
    return all([mallopt(option, value) == 1 for option, value in KEEP_FREED])
