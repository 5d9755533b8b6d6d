"""Partition results for people: JSON document, figure, tables (CLI ``partition`` commands)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from clustersim.fileio import write_text
from clustersim.partition.core import Partition, PartitionContext
from clustersim.results.figures import pyplot, save_figure

__all__ = ["draw_partition", "partition_doc", "tree_layout", "write_partition"]

HEADLINE_METRICS = ("tau", "modularity", "alpha", "beta", "gamma", "rho")


def _num(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, dict):
        return {k: _num(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_num(x) for x in v]
    return v


def partition_doc(p: Partition, ctx: PartitionContext) -> dict[str, Any]:
    """The ``partition.json`` / ``--json`` document (bus labels, not node numbers)."""
    per = p.constraints.get("per_cluster", [])
    clusters = []
    for c, nodes in enumerate(p.clusters()):
        info = per[c] if c < len(per) else {}
        clusters.append(
            {
                "id": c,
                "name": f"C{c + 1}",
                "buses": [ctx.bus_labels[i] for i in nodes],
                "pilot_bus": ctx.bus_labels[p.pilots[c]],
                "size": len(nodes),
                "connected": bool(
                    info.get("connected", nx.is_connected(ctx.graph.subgraph(nodes)))
                ),
                "n_resources": int(ctx.n_resources[nodes].sum()),
            }
        )
    return _num(
        {
            "method": p.method,
            "case": p.case,
            "k": p.k,
            "clusters": clusters,
            "metrics": {k: float(v) for k, v in p.metrics.items()},
            "constraints": {
                k: bool(p.constraints[k])
                for k in ("connected", "size_ok", "resources_ok", "k_ok")
                if k in p.constraints
            },
            "runtime_s": round(p.runtime_s, 4),
            "params": p.params,
        }
    )


COMPARE_COLUMNS = {
    "method": "method",
    "tau": "tau",
    "modularity": "modularity",
    "alpha": "alpha",
    "beta": "beta",
    "gamma": "gamma",
    "rho": "rho",
    "k": "k",
    "connected": "connected",
    "size_ok": "size",
    "resources_ok": "resources",
    "balance_min": "Q comp − load min Mvar",
    "runtime_s": "runtime s",
}
"""columns of the partition-compare table (machine name → header)"""


def compare_frame(docs: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per method of ``partition-compare``: the headline metrics, k, the constraint
    checks, the smallest reactive balance of a cluster and the runtime (machine names)."""
    rows = []
    for d in docs:
        m, c = d["metrics"], d["constraints"]
        rows.append(
            {
                "method": d["method"],
                **{k: m.get(k, float("nan")) for k in ("tau", "modularity", "alpha", "beta")},
                **{k: m.get(k, float("nan")) for k in ("gamma", "rho")},
                "k": d["k"],
                **{k: bool(c.get(k, False)) for k in ("connected", "size_ok", "resources_ok")},
                "balance_min": d["balance_min"],
                "runtime_s": d["runtime_s"],
            }
        )
    return pd.DataFrame(rows, columns=list(COMPARE_COLUMNS))


def tree_layout(g: nx.Graph, root: int) -> dict[int, tuple[float, float]]:
    """Layered drawing of a radial feeder: x = hops from the root, y = leaf order (DFS)."""
    pos: dict[int, tuple[float, float]] = {}
    tree = nx.bfs_tree(g, root)
    next_y = [0.0]

    def place(node: int, depth: int) -> float:
        kids = sorted(tree.successors(node))
        if not kids:
            y = next_y[0]
            next_y[0] += 1.0
        else:
            y = float(np.mean([place(c, depth + 1) for c in kids]))
        pos[node] = (float(depth), -y)
        return y

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * g.number_of_nodes() + 100))
    try:
        place(root, 0)
    finally:
        sys.setrecursionlimit(limit)
    for n in g.nodes:  # nodes off the tree (should not happen on a connected feeder)
        pos.setdefault(n, (0.0, next_y[0]))
    return pos


def draw_partition(p: Partition, ctx: PartitionContext, path: Path) -> None:
    """The feeder coloured by cluster (legend C1..Ck), pilot buses as stars, ties between
    clusters dashed. A radial feeder is drawn as a single-line diagram (:func:`tree_layout`,
    which keeps its shape); a meshed one at its bus coordinates, else a spring layout. Bus
    labels sit beside their markers (up to 70 buses)."""
    plt = pyplot()
    g = ctx.graph
    if nx.is_tree(g):
        pos = tree_layout(g, ctx.slack)
    elif ctx.coords is not None:
        pos = {i: (float(ctx.coords[i, 0]), float(ctx.coords[i, 1])) for i in range(ctx.n)}
    else:
        pos = nx.spring_layout(g, seed=0)
    cmap = plt.get_cmap("tab20" if p.k > 10 else "tab10")
    colors = [cmap(int(c) % cmap.N) for c in p.labels]
    xs, ys = np.array([v[0] for v in pos.values()]), np.array([v[1] for v in pos.values()])
    span_x, span_y = float(np.ptp(xs)) or 1.0, float(np.ptp(ys)) or 1.0
    fig, ax = plt.subplots(
        figsize=(min(16.0, max(6.0, 0.45 * span_x + 2)), min(12.0, max(3.5, 0.55 * span_y + 2)))
    )
    inside = [(u, v) for u, v in g.edges if p.labels[u] == p.labels[v]]
    ties = [(u, v) for u, v in g.edges if p.labels[u] != p.labels[v]]
    nx.draw_networkx_edges(g, pos, edgelist=inside, ax=ax, edge_color="0.55", width=1.2)
    nx.draw_networkx_edges(g, pos, edgelist=ties, ax=ax, edge_color="0.3", width=1.2, style="--")
    others = [i for i in range(ctx.n) if i not in set(p.pilots)]
    nx.draw_networkx_nodes(
        g, pos, nodelist=others, ax=ax, node_color=[colors[i] for i in others], node_size=70
    )
    nx.draw_networkx_nodes(
        g,
        pos,
        nodelist=p.pilots,
        ax=ax,
        node_color=[colors[i] for i in p.pilots],
        node_size=260,
        node_shape="*",
        edgecolors="k",
        linewidths=0.6,
    )
    if ctx.n <= 70:
        offset = 0.06 * span_y
        label_pos = {i: (x, y + offset) for i, (x, y) in pos.items()}
        nx.draw_networkx_labels(
            g, label_pos, labels=dict(enumerate(ctx.bus_labels)), ax=ax, font_size=7
        )
    handles = [
        Line2D([], [], marker="o", ls="", color=cmap(c % cmap.N), label=f"C{c + 1}")
        for c in range(p.k)
    ]
    handles += [
        Line2D([], [], marker="*", ls="", color="0.5", mec="k", ms=11, label="pilot bus"),
        Line2D([], [], color="0.3", ls="--", label="tie between clusters"),
    ]
    ax.legend(handles=handles, fontsize=8, loc="best", ncol=1 if p.k <= 10 else 2)
    ok = (
        "all constraints met"
        if all(p.constraints.get(k, True) for k in ("connected", "size_ok", "resources_ok"))
        else "constraint violated: "
        + ", ".join(
            k for k in ("connected", "size_ok", "resources_ok") if not p.constraints.get(k, True)
        )
    )
    ax.set_title(f"{ctx.name}: {p.method}, {p.k} clusters; {ok}")
    ax.set_axis_off()
    save_figure(fig, path, 110)


def write_partition(p: Partition, ctx: PartitionContext, out_dir: Path) -> None:
    """``partition.json`` and ``figures/partition.png`` in ``out_dir`` (each written atomically)."""
    write_text(out_dir / "partition.json", json.dumps(partition_doc(p, ctx), indent=2) + "\n")
    draw_partition(p, ctx, out_dir / "figures" / "partition.png")
