"""Print the import graph between clustersim's layers: one line per layer with the layers it
imports (function-level imports included) and how many import statements make each edge.

    python tools/import_graph.py

The rules themselves are enforced by tests/unit/clustersim/test_layout.py.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = [
    "cli",
    "studies",
    "runner",
    "cosim",
    "results",
    "assemble",
    "scenario",
    "agents",
    "partition",
    "sim",
    "broker",
    "errors",
    "fileio",
]


def layer_of(dotted: str) -> str | None:
    """The layer of a ``clustersim.<layer>...`` module name."""
    parts = dotted.split(".")
    return parts[1] if parts[0] == "clustersim" and len(parts) > 1 else None


def main() -> None:
    """Walk every source file once and count the cross-layer imports."""
    edges: Counter[tuple[str, str]] = Counter()
    for folder in ("clustersim", "sim", "partition", "agents", "broker"):
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT)
            if folder == "clustersim" and rel.parts[1] in {"sim", "partition", "agents", "broker"}:
                continue
            src = folder if folder != "clustersim" else rel.parts[1].removesuffix(".py")
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module:
                    dst = layer_of(node.module)
                    if dst and dst != src:
                        edges[(src, dst)] += 1
    for src in LAYERS:
        out = sorted(((d, n) for (s, d), n in edges.items() if s == src), key=lambda e: e[0])
        down = ", ".join(f"{d} ({n})" for d, n in out) or "-"
        upward = [d for d, _ in out if LAYERS.index(d) < LAYERS.index(src)]
        print(f"{src:>9} -> {down}{'   UPWARD: ' + ', '.join(upward) if upward else ''}")


if __name__ == "__main__":
    main()
