"""End-to-end runs of ``hardnet-desc make-sequences``, ``eval-sequences`` and ``eval-fpr95``."""

from __future__ import annotations

import json

import cv2
import pytest

from hardnet_desc.cli import main
from hardnet_desc.evaluation import methods as methods_module
from hardnet_desc.core.weights import save_weights

from conftest import make_hardnet
from test_evaluation import small_photo, write_pair_fixture


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    return save_weights(make_hardnet(), tmp_path_factory.mktemp("w") / "random.safetensors")


@pytest.fixture(scope="module")
def sequences(tmp_path_factory):
    """One photo -> v_photo and i_photo, 6 images each, written by the CLI."""
    root = tmp_path_factory.mktemp("cli")
    (root / "photos").mkdir()
    cv2.imwrite(str(root / "photos" / "photo.png"), small_photo(1))
    assert main(["make-sequences", str(root / "photos"), str(root / "seqs"), "--n-images", "1", "--seed", "1"]) == 0
    return root / "seqs"


def test_eval_sequences_end_to_end(sequences, weights_file, tmp_path, capsys):
    out_json, out_png = tmp_path / "r.json", tmp_path / "mma.png"
    argv = ["eval-sequences", str(sequences), "--methods", "sift,rootsift,hardnet", "--weights", str(weights_file),
            "--max-keypoints", "100", "--ratio", "0.9", "--device", "cpu", "--quiet",
            "--json", str(out_json), "--plot", str(out_png)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "overall: 2 sequences, 10 pairs" in out and "illumination (i_)" in out
    assert all(f"\n{m} " in out for m in ("sift", "rootsift", "hardnet"))
    results = json.loads(out_json.read_text())
    assert list(results["summary"]) == ["sift", "rootsift", "hardnet"]
    assert len(results["summary"]["hardnet"]["v"]["mma"]) == 10
    assert {s["name"] for s in results["sequences"]} == {"v_photo", "i_photo"}
    assert results["config"]["ratio"] == 0.9
    assert cv2.imread(str(out_png)) is not None
    _check_by_level(results, out_json, capsys)


def _check_by_level(results, path, capsys):
    """benchmarks/by_level.py prints the docs' per-level table; its levels average to the group summary."""
    import runpy
    import sys
    from pathlib import Path

    by_level = runpy.run_path(str(Path(__file__).resolve().parents[1] / "benchmarks" / "by_level.py"))["by_level"]
    rows = by_level(results, ["rootsift", "hardnet"])
    assert [(r[0], r[1]) for r in rows] == [(g, k) for g in ("v", "i") for k in range(1, 6)]
    for group in ("v", "i"):
        mma = [float(r[3]) for r in rows if r[0] == group]  # hardnet's MMA@3, one pair per level
        assert abs(sum(mma) / 5 - results["summary"]["hardnet"][group]["mma@3"]) < 1e-3
    argv = sys.argv
    try:
        sys.argv = ["by_level.py", str(path)]
        runpy.run_path(str(Path(__file__).resolve().parents[1] / "benchmarks" / "by_level.py"), run_name="__main__")
    finally:
        sys.argv = argv
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| group | level | MMA@3 rootsift | MMA@3 hardnet |") and len(table) == 12


def test_eval_sequences_skips_missing_kornia(sequences, weights_file, monkeypatch, capsys):
    monkeypatch.setattr(methods_module, "kornia_available", lambda: False)
    assert main(["eval-sequences", str(sequences / "i_photo"), "--methods", "sift,kornia", "--weights",
                 str(weights_file), "--max-keypoints", "50", "--quiet"]) == 0
    assert "skipped kornia: kornia is not installed" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [(["eval-sequences", "/no/such/folder", "--quiet"], "no such folder"),
     (["eval-sequences", "{tmp}", "--quiet"], "neither an image sequence"),
     (["eval-fpr95", "/no/such/folder"], "not found"),
     (["make-sequences", "/no/such/folder", "out"], "no such image folder")],
)
def test_bad_paths_exit_2_with_one_line(argv, message, tmp_path, capsys):
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith(f"hardnet-desc {argv[0]}: error:")


def test_eval_sequences_bad_method(sequences, capsys):
    assert main(["eval-sequences", str(sequences), "--methods", "sift,orb", "--quiet"]) == 2
    assert "unknown method(s) ['orb']" in capsys.readouterr().err


def test_eval_fpr95_end_to_end(tmp_path, weights_file, capsys):
    write_pair_fixture(tmp_path)
    assert main(["eval-fpr95", str(tmp_path), "--weights", str(weights_file), "--device", "cpu"]) == 0
    assert "m50_100_100_0.txt: FPR95 = 0.00%" in capsys.readouterr().out
    assert main(["eval-fpr95", str(tmp_path), "--weights", str(weights_file), "--pairs", "m50_9_9_0.txt"]) == 2


def test_eval_fpr95_sift_methods(tmp_path, weights_file, capsys):
    write_pair_fixture(tmp_path)
    argv = ["eval-fpr95", str(tmp_path), "--weights", str(weights_file), "--device", "cpu"]
    assert main([*argv, "--methods", "hardnet,sift,rootsift"]) == 0
    out = capsys.readouterr().out
    for method in ("hardnet", "sift", "rootsift"):  # identical patches per point: every method separates them
        assert f"{method}: m50_100_100_0.txt: FPR95 = 0.00%" in out
    assert main([*argv, "--methods", "sift,orb"]) == 2
    assert "unknown method(s) ['orb']" in capsys.readouterr().err
