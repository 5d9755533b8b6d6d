"""The one-way import rule of DESIGN.md, checked on the source tree."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# folder -> the clustersim subpackages it may import (clustersim.errors is a leaf open to all)
ALLOWED = {
    "broker": set(),
    "sim": {"broker"},
    "partition": {"sim"},
    "agents": {"sim", "broker"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_import_direction(folder):
    bad = []
    for py in (ROOT / folder).rglob("*.py"):
        for mod in _imports(py):
            parts = mod.split(".")
            if parts[0] != "clustersim" or len(parts) < 2 or parts[1] == "errors":
                continue
            target = parts[1]
            if target != folder and target not in ALLOWED[folder]:
                bad.append(f"{py.relative_to(ROOT)} imports {mod}")
    assert not bad, bad
