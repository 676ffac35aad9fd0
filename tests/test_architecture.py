"""The package's import graph: one way, without cycles, as docs/architecture.md draws it.

Every ``import`` of a ``hardnet_desc`` module (at the top of a file or inside a function) is read
with ``ast``. Modules fall in groups (the torch core, the library on it, the bridges to outside
systems, training, evaluation, the command line); a group imports only the groups ``ALLOWED``
lists for it. No cycle between modules, and ``argparse`` only in the command line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hardnet_desc"

#: What each group may import (besides itself); docs/architecture.md draws the same.
ALLOWED = {
    "core": {"core"},  # the torch core: nothing above it
    "library": {"core", "library"},  # descriptor, matching, geometry, pipeline, data/, ...
    "integrations": {"core", "library", "integrations"},  # kornia, skimage, onnx, hloc, parallel, colmap
    "train": {"core", "library", "integrations", "train"},
    "evaluation": {"core", "library", "integrations", "evaluation"},  # train and evaluation: not each other
    "cli": {"core", "library", "integrations", "train", "evaluation", "cli"},  # the only one that knows argparse
    "main": {"cli"},  # python -m hardnet_desc
    "init": {"core", "library", "integrations"},  # hardnet_desc/__init__.py: the public names
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def group(module: str) -> str:
    """The group of ``hardnet_desc.x...``: ``core``, ``integrations``, ``train``, ``evaluation``, ``cli``,
    ``main`` (``__main__``), ``init`` (the package itself) or ``library`` (every other module and ``data/``)."""
    parts = module.split(".")
    if len(parts) == 1:
        return "init"
    if parts[1] == "__main__":
        return "main"
    return parts[1] if parts[1] in ALLOWED else "library"


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


def test_imports_go_one_way():
    wrong = []
    for module, targets in GRAPH.items():
        for target in targets:
            if group(target) not in ALLOWED[group(module)]:
                wrong.append(f"{module} ({group(module)}) -> {target} ({group(target)})")
    assert not wrong, "imports against ALLOWED:\n" + "\n".join(sorted(wrong))


def test_groups_are_what_the_docs_say():
    # The core holds the network, weights, patches, images and devices; bridges sit in integrations.
    assert {m for m in GRAPH if group(m) == "core"} >= {f"hardnet_desc.core.{m}" for m in
                                                        ("model", "weights", "patches", "describe", "image", "device", "quantize")}
    assert group("hardnet_desc.descriptor") == group("hardnet_desc.data.phototour") == "library"
    assert group("hardnet_desc.integrations.colmap") == "integrations"


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
            if "argparse" in names and group(module_name(path)) != "cli":
                users.append(str(path.relative_to(PACKAGE)))
    assert not users, f"argparse outside the command line: {users}"


def test_the_graph_is_read():
    # A known edge of each kind is present, so the checks above look at real imports.
    assert "hardnet_desc.descriptor" in GRAPH["hardnet_desc.pipeline"]
    assert "hardnet_desc.data.phototour" in GRAPH["hardnet_desc.train.trainer"]
    assert "hardnet_desc.data.phototour" in GRAPH["hardnet_desc.data.hpatches"]  # relative, inside data
    assert "hardnet_desc.train.trainer" in GRAPH["hardnet_desc.cli.train"]  # inside a function
