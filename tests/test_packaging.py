"""Install metadata: the package never pulls in an OpenCV distribution or caps torch."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _requirements() -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return [line.strip() for line in cfg["options"]["install_requires"].splitlines() if line.strip()]


def test_no_opencv_distribution_and_no_torch_cap_in_install_requires():
    """opencv-python, -headless and -contrib all install `cv2`: requiring one overwrites a user's other."""
    requirements = _requirements()
    assert not [r for r in requirements if r.lower().startswith("opencv")], requirements
    torch_req = next(r for r in requirements if r.startswith("torch"))
    assert ">=" in torch_req and "<" not in torch_req and "==" not in torch_req, torch_req


def test_opencv_extras_exist():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    extras = cfg["options.extras_require"]
    assert "opencv-python>=" in extras["opencv"] and "opencv-python-headless>=" in extras["headless"]
    assert "opencv" in extras["test"]


def test_missing_opencv_names_the_extra():
    code = "import sys; sys.modules['cv2'] = None; import hardnet_desc"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: hardnet-desc needs OpenCV's cv2 module"), last
    assert 'pip install "hardnet-desc[opencv]"' in last


def test_the_command_line_starts_without_torch_and_the_api_imports_on_use():
    """The package imported torch eagerly: 1.7 s before main() could answer Ctrl-C (a traceback) or --help."""
    code = ("import sys, hardnet_desc.cli; print('torch' in sys.modules); "
            "from hardnet_desc import HardNetDescriptor, match_descriptors; import hardnet_desc; "
            "print(HardNetDescriptor.__module__, hardnet_desc.HardNet.__name__, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.stdout.split() == ["False", "hardnet_desc.descriptor", "HardNet", "True"], result.stderr
    import hardnet_desc

    assert sorted(dir(hardnet_desc)) == sorted(hardnet_desc.__all__)
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        hardnet_desc.nothing  # noqa: B018
