"""The package's imports point one way: each module imports only from its own layer or the
layers below, and no set of modules imports itself in a circle. The order of the layers is
written here and in the README's layout table."""

import ast
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

import pytest

from helpers import REPO

# Bottom first. A module belongs to the first entry that is it or one of its packages.
LAYERS = [
    (
        "files and errors",
        ["stabn.version", "stabn.errors", "stabn.fileio", "stabn.download", "stabn.checkpoint", "stabn.torch_compat"],
    ),
    ("models, data and config", ["stabn.data", "stabn.models", "stabn.optim", "stabn.config"]),
    (
        "engine and explain",
        [
            "stabn.engine",
            "stabn.interpret",
            "stabn.inference",
            "stabn.display",
            "stabn.exporter",
            "stabn.perf",
            "stabn.video_report",
        ],
    ),
    ("commands", ["stabn.commands", "stabn"]),
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
    assert layer_of("stabn.engine.loop") > layer_of("stabn.config")
    assert layer_of("stabn") == len(LAYERS) - 1 and layer_of("stabn.data.synthetic") == 1


def test_the_readme_lists_the_layers_in_this_order():
    readme = (REPO / "README.md").read_text()
    positions = [readme.find(f"**{title}**") for title, _ in LAYERS]
    assert -1 not in positions and positions == sorted(positions), positions


def test_every_module_imports_by_its_dotted_name():
    """`import stabn.<package>.<module> as m` works for every module: no name in a package
    (such as the notebook call `stabn.explain`) hides one of its modules."""
    names = sorted(n for n in package_modules() if not n.endswith("__main__"))
    script = "\n".join(f"import {name} as m" for name in names) + "\nprint('imported', len(%r))" % names
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["imported", str(len(names))]


def test_reading_a_config_imports_no_model_data_or_engine_code():
    script = (
        "import sys\nimport stabn.config\n"
        "stabn.config.load_config('configs/synthetic.yaml', ['model.name=abn_resnet18'])\n"
        "print(sorted(m for m in sys.modules if m.startswith('stabn')))"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    loaded = ast.literal_eval(proc.stdout.strip())
    assert all(m == "stabn" or layer_of(m) == 0 or m.startswith("stabn.config") for m in loaded), loaded
    assert "stabn.models" not in loaded and "stabn.data" not in loaded


def test_the_schema_names_the_registry_s_models():
    from stabn.config.schema import MODEL_DEPTHS, MODEL_NAMES
    from stabn.models.blocks import DEPTHS
    from stabn.models.registry import MODEL_REGISTRY

    assert tuple(MODEL_REGISTRY) == MODEL_NAMES
    assert tuple(DEPTHS) == MODEL_DEPTHS


def test_the_readme_s_clip_path_names_real_files_and_functions():
    """Each step of the README's "how a training clip flows" leads to a file of the package and
    to a function or class defined in it."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("How a training clip flows") :]
    steps = [line for line in section.splitlines()[1:12] if line[:1].isdigit()]
    assert len(steps) == 7, steps
    for step in steps:
        for path, name in re.findall(r"`([\w/]+\.py)` `([\w.]+)`", step):
            source = (REPO / "stabn" / path).read_text()
            cls, _, method = name.partition(".")
            assert re.search(rf"^(class|def) {cls}\b", source, re.M), f"{path} defines no {cls}"
            if method:
                assert re.search(rf"^    def {method}\b", source, re.M), f"{path}: {cls} has no {method}"


def test_no_two_modules_share_a_name():
    """No module has the name of another module or of a package: each name says one job."""
    modules = package_modules()
    packages = {name.rpartition(".")[2] for name, path in modules.items() if path.name == "__init__.py"}
    by_name: Dict[str, List[str]] = {}
    for name, path in modules.items():
        if path.name not in ("__init__.py", "__main__.py"):
            by_name.setdefault(name.rpartition(".")[2], []).append(name)
    shared = {leaf: names for leaf, names in by_name.items() if len(names) > 1 or leaf in packages}
    assert not shared, shared
