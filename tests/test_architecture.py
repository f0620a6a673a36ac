"""The package's shape: stages in their own folders, dependencies one way, no import circles, small modules.

Read from the source with ``ast`` (function-level imports included), so a lazy import cannot hide a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "medgspo"

# A module may import modules of its own package or of a lower layer, never of its own layer's other packages.
LAYERS = {
    "errors": 0,
    "utils": 1,
    "data": 2,
    "modeling": 3,
    "judge": 3,
    "rewards": 4,
    "train": 5,
    "eval": 5,
    "serve": 5,
    "pipeline": 6,
    "publish": 6,
    "plan": 6,
    "cli": 7,
    "__init__": 0,
}
STAGES = ("data", "train", "rewards", "judge", "eval", "serve", "publish", "plan")

# Inside a stage the same rule, one level down. The judge: its rubric and the provider facts (names, prices) at the
# bottom, the flags above them, the API client, then the offline judge, the backend choice, calibration and the CLI.
SUBLAYERS = {
    "judge": {
        "rubric": 0,
        "pricing": 0,
        "deepseek": 1,
        "config": 2,
        "api": 3,
        "reference": 4,
        "backends": 5,
        "calibration": 6,
        "cli": 7,
        "__init__": 8,
    },
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path) -> set[str]:
    """Every ``medgspo`` module ``path`` imports, anywhere in the file, resolved to a module of the package."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("medgspo"):
            for alias in node.names:  # `from medgspo.x import y`: y may be a module of the package
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("medgspo")}
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; use absolute `medgspo.` imports")
    return found


GRAPH = {name: imports_of(path) - {name} for name, path in MODULES.items()}


def group(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_dependencies_run_one_way(module):
    mine = group(module)
    for target in GRAPH[module]:
        theirs = group(target)
        if theirs == mine:
            continue
        assert LAYERS[theirs] < LAYERS[mine], f"{module} imports {target}: {mine} may not depend on {theirs}"


def subgroup(module: str) -> str:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 else "__init__"


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if group(m) in SUBLAYERS))
def test_dependencies_run_one_way_inside_a_stage(module):
    layers, mine = SUBLAYERS[group(module)], subgroup(module)
    for target in GRAPH[module]:
        theirs = subgroup(target)
        if group(target) != group(module) or theirs == mine:
            continue
        assert layers[theirs] < layers[mine], f"{module} imports {target}: {mine} may not depend on {theirs}"


def test_every_sub_package_has_a_layer():
    for stage, layers in SUBLAYERS.items():
        present = {
            p.stem if p.is_file() else p.name for p in (PACKAGE / stage).iterdir() if p.suffix == ".py" or p.is_dir()
        }
        present.discard("__pycache__")
        assert present <= set(layers), f"{stage}: no layer for {sorted(present - set(layers))}"


def test_no_import_circles():
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(GRAPH.get(node, ())):
            if nxt not in GRAPH:
                continue
            assert state.get(nxt) != 1, "import circle: " + " -> ".join([*stack, node, nxt])
            if nxt not in state:
                visit(nxt, [*stack, node])
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [])


def test_stages_are_folders_and_the_top_stays_small():
    loose = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(loose) <= 6, f"loose modules at the package top: {loose}"
    for stage in STAGES:
        init = PACKAGE / stage / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and len(doc.split("\n\n")[0].splitlines()) <= 2, f"{init}: needs a two-line docstring"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_are_small_and_say_what_they_are(module):
    path = MODULES[module]
    lines = path.read_text(encoding="utf-8").count("\n")
    assert lines <= 400, f"{path} has {lines} lines (split it by concept)"
    assert ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))), f"{path} has no module docstring"


def test_no_formatter_escapes():
    offenders = [str(p) for p in PACKAGE.rglob("*.py") if "fmt: skip" in p.read_text(encoding="utf-8")]
    assert not offenders, offenders
