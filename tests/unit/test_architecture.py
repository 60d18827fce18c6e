"""The import rules of docs/architecture.rst, checked over the source tree.

- ``undercloud_appliance`` (the shared contracts) imports nothing above it;
- ``builders``, ``publish`` and ``importer`` never import each other;
- only ``undercloud_appliance_cli`` (the composition root) imports them all;
- no module imports another module's ``_private`` names;
- the module import graph has no cycle (function-local imports included:
  they hide a cycle, they do not remove it).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTRACTS = "undercloud_appliance"
PACKAGES = ("builders", "publish", "importer")
COMPOSITION_ROOT = "undercloud_appliance_cli"
ALL_PACKAGES = (CONTRACTS, *PACKAGES, COMPOSITION_ROOT)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in ALL_PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            modules[module_name(path)] = path
    return modules


MODULES = project_modules()


def imported_names(
    source: str, this_module: str, is_package: bool = False
) -> Iterator[tuple[str, str | None, int]]:
    """(module, imported name or None, line) for every import in ``source``, at any depth."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = this_module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                yield base, alias.name, node.lineno


def imports_of(path: Path) -> Iterator[tuple[str, str | None, int]]:
    return imported_names(
        path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py"
    )


def project_module_of(name: str) -> str | None:
    """The longest project module that ``name`` is or lies in."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def import_edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for module, imported, _ in imports_of(path):
            target = None
            if imported is not None:
                target = project_module_of(f"{module}.{imported}")
            target = target or project_module_of(module)
            if target is not None and target != name:
                edges[name].add(target)
    return edges


def top_package(module: str) -> str:
    return module.split(".")[0]


def upward_imports(edges: dict[str, set[str]], package: str) -> list[str]:
    allowed = {
        CONTRACTS: {CONTRACTS},
        COMPOSITION_ROOT: set(ALL_PACKAGES),
    }.get(package, {package, CONTRACTS})
    return sorted(
        f"{source} imports {target}"
        for source, targets in edges.items()
        if top_package(source) == package
        for target in targets
        if top_package(target) not in allowed
    )


def find_cycles(edges: dict[str, set[str]]) -> list[str]:
    state: dict[str, str] = {}
    stack: list[str] = []
    cycles: list[str] = []

    def visit(module: str) -> None:
        state[module] = "open"
        stack.append(module)
        for target in sorted(edges.get(module, ())):
            if state.get(target) == "open":
                cycles.append(" -> ".join([*stack[stack.index(target) :], target]))
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module)
    return cycles


def test_the_tree_is_found() -> None:
    assert "undercloud_appliance.manifest" in MODULES
    assert any(name.startswith("importer.") for name in MODULES)


@pytest.mark.parametrize("package", ALL_PACKAGES)
def test_packages_import_only_downwards(package: str) -> None:
    wrong = upward_imports(import_edges(), package)
    assert not wrong, "\n".join(wrong)


def test_no_module_imports_another_modules_private_names() -> None:
    wrong = []
    for name, path in MODULES.items():
        for module, imported, line in imports_of(path):
            if imported is None or not imported.startswith("_") or imported.startswith("__"):
                continue
            owner = project_module_of(f"{module}.{imported}") or project_module_of(module)
            if owner is not None and owner != name:
                wrong.append(f"{path.relative_to(REPO_ROOT)}:{line}: {imported} from {module}")
    assert not wrong, "\n".join(wrong)


def test_the_import_graph_has_no_cycle() -> None:
    cycles = find_cycles(import_edges())
    assert not cycles, "\n".join(cycles)


def test_the_checks_can_fail() -> None:
    """Fed a bad little graph, the checks above report it."""
    source = "import os\n\ndef f():\n    from importer.x import y\n    from . import z\n"
    found = list(imported_names(source, "undercloud_appliance.a"))
    assert ("importer.x", "y", 4) in found
    assert ("undercloud_appliance", "z", 5) in found
    edges = {
        "undercloud_appliance.a": {"importer.x"},
        "importer.x": {"importer.y"},
        "importer.y": {"importer.x"},
    }
    assert upward_imports(edges, CONTRACTS) == ["undercloud_appliance.a imports importer.x"]
    assert find_cycles(edges) == ["importer.x -> importer.y -> importer.x"]
