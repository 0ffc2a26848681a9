"""The package's imports point one way: each module imports only from its own layer or the
layers below, and no set of modules imports itself in a circle. The order of the layers is
written here and in the README's layout table."""

import ast
from pathlib import Path
from typing import Dict, List, Set

import pytest

from helpers import REPO

# Bottom first. A module belongs to the first entry that is it or one of its packages.
LAYERS = [
    ("files and errors", ["stabn.version", "stabn.errors", "stabn.fileio", "stabn.checkpoint"]),
    (
        "models, data and config",
        ["stabn.data", "stabn.models", "stabn.metrics", "stabn.fastpath", "stabn.optim", "stabn.config"],
    ),
    ("engine and explain", ["stabn.engine", "stabn.explain", "stabn.inference"]),
    ("commands", ["stabn.cli", "stabn.check", "stabn.bench", "stabn.demo", "stabn"]),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> Dict[str, Path]:
    return {module_name(p): p for p in sorted((REPO / "stabn").rglob("*.py"))}


def imports_of(name: str, path: Path, modules: Set[str]) -> Set[str]:
    """The package's modules that `name` imports, at the top or inside functions alike."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import sub` imports the submodule where there is one.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `stabn.data.transforms.x` -> its module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def layer_of(name: str) -> int:
    best, depth = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and prefix.count(".") > depth:
                best, depth = index, prefix.count(".")
    if best is None:
        raise AssertionError(f"{name} is in no layer: add it to LAYERS (and the README)")
    return best


@pytest.fixture(scope="module")
def graph() -> Dict[str, Set[str]]:
    modules = package_modules()
    return {name: imports_of(name, path, set(modules)) for name, path in modules.items()}


def test_every_import_goes_to_the_same_layer_or_below(graph):
    wrong = [
        f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
        for a, targets in sorted(graph.items())
        for b in sorted(targets)
        if layer_of(b) > layer_of(a)
    ]
    assert not wrong, "\n".join(wrong)


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """One import circle as [a, b, ..., a], or [] when there is none."""
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    path: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return []


def test_no_import_circles(graph):
    # A package's __init__ importing its own submodules is how packages work, not a circle.
    edges = {a: {b for b in targets if not (a.startswith(b + ".") and b in graph)} for a, targets in graph.items()}
    cycle = find_cycle(edges)
    assert not cycle, " -> ".join(cycle)


def test_the_checks_find_what_they_look_for():
    """The two checks catch a circle and an upward import when there is one."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []
    assert layer_of("stabn.config") > layer_of("stabn.checkpoint")
    assert layer_of("stabn.engine.trainer") > layer_of("stabn.config")
    assert layer_of("stabn") == len(LAYERS) - 1 and layer_of("stabn.data.synthetic") == 1


def test_the_readme_lists_the_layers_in_this_order():
    readme = (REPO / "README.md").read_text()
    positions = [readme.find(f"**{title}**") for title, _ in LAYERS]
    assert -1 not in positions and positions == sorted(positions), positions
