"""The architecture, checked on the source tree: imports run one way between the layers
(README, "Architecture"), no module imports itself through a cycle, and a function-level import
says why it is not at the top of its module."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[3]
FOLDERS = {  # repository folder -> import name
    "clustersim": "clustersim",
    "sim": "clustersim.sim",
    "partition": "clustersim.partition",
    "agents": "clustersim.agents",
    "broker": "clustersim.broker",
}
LEAVES = {"clustersim.catalog", "clustersim.errors", "clustersim.fileio"}
"""modules every layer may import (they import nothing of ours)"""
LAYERS = [
    "clustersim.broker",
    "clustersim.sim",
    "clustersim.partition",
    "clustersim.agents",
    "clustersim.scenario",
    "clustersim.assemble",
    "clustersim.results",
    "clustersim.cosim",
    "clustersim.runner",
    "clustersim.studies",
    "clustersim.cli",
]
"""bottom to top: a layer imports only the layers below it (and the leaves)"""
SIDEWAYS_FORBIDDEN = {("clustersim.partition", "clustersim.agents")}
ALLOWED_BELOW = {
    # the lower folders import only what the design table allows, not every lower layer
    "clustersim.broker": set(),
    "clustersim.sim": {"clustersim.broker"},
    "clustersim.partition": {"clustersim.sim"},
    "clustersim.agents": {"clustersim.sim", "clustersim.broker"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for folder, name in FOLDERS.items():
        for py in (ROOT / folder).rglob("*.py"):
            rel = py.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if folder == "clustersim" and parts and parts[0] in {"sim", "agents"}:
                continue
            out[".".join([name, *parts])] = py
    return out


MODULES = _modules()


def _imports(path: Path, module: str) -> list[tuple[str, int, bool]]:
    """(imported module, line, at function level) of every ``clustersim`` import."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    nested: set[int] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            nested.update(id(n) for n in ast.walk(fn) if isinstance(n, ast.Import | ast.ImportFrom))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            names = [f"{base}.{a.name}" for a in node.names]
            targets = [n if n in MODULES else base for n in names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        for t in dict.fromkeys(targets):
            if t.split(".")[0] == "clustersim":
                out.append((t, node.lineno, id(node) in nested))
    return out


def _layer(module: str) -> str | None:
    if module in LEAVES:
        return None
    for layer in LAYERS:
        if module == layer or module.startswith(layer + "."):
            return layer
    return module


def test_every_module_has_a_layer():
    """Each module of the package belongs to one layer or is a leaf."""
    unknown = [m for m in MODULES if m != "clustersim" and _layer(m) not in [*LAYERS, None]]
    assert not unknown, f"modules outside the layer list: {unknown}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "clustersim"))
def test_imports_run_downward(module):
    """A module imports only leaves, its own layer, and the layers below it that it may use."""
    layer = _layer(module)
    if layer is None:
        bad = [t for t, _, _ in _imports(MODULES[module], module) if t.startswith("clustersim.")]
        assert not bad, f"leaf {module} imports {bad}"
        return
    rank = LAYERS.index(layer)
    bad = []
    for target, line, _ in _imports(MODULES[module], module):
        t_layer = _layer(target)
        if t_layer is None or t_layer == layer:
            continue
        if t_layer not in LAYERS:
            bad.append(f"line {line}: {target} (unknown layer)")
            continue
        if LAYERS.index(t_layer) > rank or (layer, t_layer) in SIDEWAYS_FORBIDDEN:
            bad.append(f"line {line}: imports {target} (layer {t_layer} is above {layer})")
        elif layer in ALLOWED_BELOW and t_layer not in ALLOWED_BELOW[layer]:
            bad.append(f"line {line}: imports {target} ({layer} may not use {t_layer})")
    assert not bad, f"{module}: {bad}"


def test_no_import_cycles():
    """The module import graph (function-level imports included) has no cycle."""
    g = nx.DiGraph()
    for module, path in MODULES.items():
        g.add_node(module)
        for target, _, _ in _imports(path, module):
            while target not in MODULES and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in MODULES and target != module and not module.startswith(target + "."):
                if not (target == "clustersim" or MODULES[target].name == "__init__.py"):
                    g.add_edge(module, target)
    cycles = list(nx.simple_cycles(g))
    assert not cycles, f"import cycles: {cycles[:5]}"


def test_top_layer_imports_at_module_level():
    """In the top package only the CLI defers its imports (start-up time of the listing
    commands); every other module imports ours at its top."""
    bad = []
    for module, path in MODULES.items():
        if _layer(module) in ALLOWED_BELOW or module == "clustersim.cli":
            continue
        bad += [f"{module}:{line} {t}" for t, line, nested in _imports(path, module) if nested]
    assert not bad, bad


MAX_LINES = 80
LENGTH_NOTE = "# length:"


def _long_functions() -> list[str]:
    out = []
    for module, path in MODULES.items():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if node.end_lineno - node.lineno + 1 <= MAX_LINES:
                continue
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            above = lines[first - 2].strip() if first >= 2 else ""
            if not above.startswith(LENGTH_NOTE):
                out.append(f"{module}.{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    return out


def test_long_functions_say_why():
    """A function over 80 lines carries a ``# length: <reason>`` comment above its ``def``."""
    assert not _long_functions(), _long_functions()


def test_function_level_imports_say_why():
    """An import inside a function (outside the CLI, whose module docstring gives the reason
    for all of its own) has a comment on its line or the line above saying why it is there."""
    bad = []
    for module, path in MODULES.items():
        if module == "clustersim.cli":
            continue
        lines = path.read_text().splitlines()
        for fn in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    here, above = lines[node.lineno - 1], lines[node.lineno - 2].strip()
                    if "#" not in here and not above.startswith("#"):
                        bad.append(f"{module}:{node.lineno} {here.strip()}")
    assert not bad, bad
