"""The package's import graph follows the layers of docs/architecture.md.

Every ``import`` of a ``hardnet_desc`` module (at the top of a file or inside a function) is read
with ``ast``; an import must go to a lower layer, or stay inside its own sub-package. No cycle
between modules, and ``argparse`` only in ``cli.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hardnet_desc"

#: Layer of each module or sub-package, lowest first (docs/architecture.md draws the same).
LAYERS = {
    # 0: leaves
    "model": 0, "image": 0, "device": 0, "fpr95": 0, "epipolar": 0, "outputs": 0,
    # 1: pieces of the describe path, and matching (which resolves devices like the descriptor); pictures
    "patches": 1, "detection": 1, "weights": 1, "quantize": 1, "matching": 1, "viz": 1,
    # 2: the descriptor, and the network for other runtimes (ONNX export, kornia's LAFDescriptor)
    "descriptor": 2, "export": 2, "kornia": 2,
    # 3: the neutral data layer (formats, warps, image listing)
    "data": 3, "wide_baseline": 3,
    # 4: applications of the descriptor
    "features_io": 4, "pipeline": 4, "skimage": 4, "sfm": 4,
    # 5: training and evaluation, side by side (neither imports the other)
    "train": 5, "evaluation": 5, "parallel": 5,
    # 6: the command line; 7: ``python -m hardnet_desc``
    "cli": 6, "__main__": 7,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit(module: str) -> str:
    """The layer unit of ``hardnet_desc.x.y``: ``x`` (a top-level module or a sub-package)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def package_imports() -> dict[str, set[str]]:
    """Module -> the ``hardnet_desc`` modules it imports (``from . import x`` counts as ``pkg.x``)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("hardnet_desc")}
            elif isinstance(node, ast.ImportFrom):
                base = resolve(node, module, path.name == "__init__.py")
                if not base.startswith("hardnet_desc"):
                    continue
                for alias in node.names:  # "from .data import images" imports the module data.images
                    targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        graph[module] = {t for t in targets if t != module}
    return graph


GRAPH = package_imports()


def test_every_module_has_a_layer():
    units = {unit(m) for m in GRAPH} - {""}
    assert units <= set(LAYERS), f"add {sorted(units - set(LAYERS))} to LAYERS and docs/architecture.md"


def test_imports_only_go_down():
    upward = []
    for module, targets in GRAPH.items():
        if unit(module) == "":  # hardnet_desc/__init__.py: the public names, re-exported
            continue
        for target in targets:
            a, b = unit(module), unit(target)
            if b == "" or (a != b and LAYERS[b] >= LAYERS[a]):
                upward.append(f"{module} (layer {LAYERS[a]}) -> {target} (layer {LAYERS.get(b, '?')})")
    assert not upward, "imports that do not go down:\n" + "\n".join(sorted(upward))


def test_train_and_evaluation_do_not_know_each_other_or_the_cli():
    for module, targets in GRAPH.items():
        if unit(module) in ("train", "evaluation"):
            other = {"train": "evaluation", "evaluation": "train"}[unit(module)]
            assert not {unit(t) for t in targets} & {other, "cli"}, f"{module} imports {sorted(targets)}"


def test_no_import_cycle():
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(GRAPH.get(module, ())):
            if state.get(target) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(target):] + [target]))
            if target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])


def test_argparse_only_in_cli():
    users = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) else [])
            if "argparse" in names and path.name != "cli.py":
                users.append(str(path.relative_to(PACKAGE)))
    assert not users, f"argparse outside cli.py: {users}"


def test_the_graph_is_read():
    # A known edge of each kind is present, so the checks above look at real imports.
    assert "hardnet_desc.descriptor" in GRAPH["hardnet_desc.pipeline"]
    assert "hardnet_desc.data.phototour" in GRAPH["hardnet_desc.train.trainer"]
    assert "hardnet_desc.data.phototour" in GRAPH["hardnet_desc.data.hpatches"]  # relative, inside data
    assert "hardnet_desc.train.trainer" in GRAPH["hardnet_desc.cli"]  # inside a function
