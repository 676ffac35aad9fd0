"""Install metadata: the package never pulls in an OpenCV distribution or caps torch."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

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
