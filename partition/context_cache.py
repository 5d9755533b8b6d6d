"""Where built partition contexts are kept: in the process, and on disk for large networks.

:func:`clustersim.partition.context.build_context` looks a context up by its key (a SHA-256 of
everything the build reads, :func:`clustersim.partition.context.context_key`) before building it:

- **In the process**: the most recently used contexts, up to :data:`MEMORY_MAX_BYTES` of arrays
  (at least the last one). A hit returns the same (read-only) object, as ``context_for_case``
  always did.
- **On disk**, for contexts of at least :data:`DISK_MIN_NODES` nodes (below that a build takes
  about a second, the file would save nothing): one ``<key>.npz`` per context in
  ``$CLUSTERSIM_CACHE_DIR/partition-context`` (default ``$XDG_CACHE_HOME/clustersim``, else
  ``~/.cache/clustersim``; ``CLUSTERSIM_CACHE_DIR=off`` turns the disk cache off). A spawned
  worker of ``clustersim compare``/``sweep`` or a second test session then reads the file
  instead of rebuilding (case1197: about 1 s against about 20 s). The file holds numpy arrays
  and one JSON document, read with ``allow_pickle=False`` (no code runs on load); the [EVEC] edge
  weights ``e_t`` are not stored but recomputed from ``d_t`` (the same computation, so the same
  values). Files are written through :func:`clustersim.fileio.atomic_write` (a killed writer
  leaves no partial file); a file that cannot be read back (zip CRC error, truncation, another
  key or format inside) counts as a miss and is removed. After each write the oldest files
  (least recently used: a hit touches its file) are removed until the folder holds at most
  :data:`DISK_MAX_BYTES`. A failed write leaves the cache as it was and the build's result is
  used as is.
"""

from __future__ import annotations

import contextlib
import graphlib
import itertools
import json
import os
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, cast

import networkx as nx
import numpy as np

from clustersim.fileio import atomic_write
from clustersim.partition import distance
from clustersim.partition.core import CommParams, PartitionContext

__all__ = [
    "CACHE_DIR_ENV",
    "DISK_MAX_BYTES",
    "DISK_MIN_NODES",
    "FORMAT",
    "MEMORY_MAX_BYTES",
    "cache_dir",
    "clear",
    "count_build",
    "discard",
    "get",
    "info",
    "put",
]

FORMAT = 1
"""version of the context's content and of the file layout; part of every key"""
CACHE_DIR_ENV = "CLUSTERSIM_CACHE_DIR"
"""environment variable naming the cache folder (``off``: no disk cache)"""
DISK_MIN_NODES = 256
"""contexts of fewer nodes are kept in the process only"""
DISK_MAX_BYTES = 4 << 30
"""the disk cache folder is pruned to this size after each write (4 GiB)"""
MEMORY_MAX_BYTES = 2 << 30
"""arrays kept in the process at most (2 GiB; the last context is always kept)"""

_ARRAYS = (
    "topo_dist",
    "length_dist_km",
    "s_qv",
    "s_pv",
    "a_s2",
    "d_s1",
    "d_t",
    "p_load_mw",
    "q_load_mvar",
    "p_gen_mw",
    "q_comp_mvar",
    "p_flex_mw",
    "n_users",
    "n_resources",
)
"""array fields of PartitionContext stored on disk (``e_t`` is recomputed from ``d_t``)"""

_memory: OrderedDict[str, PartitionContext] = OrderedDict()
_stats = {"builds": 0, "memory_hits": 0, "disk_hits": 0, "disk_writes": 0, "disk_errors": 0}


def info() -> dict[str, int]:
    """Counters since the process started: ``builds`` (contexts built), ``memory_hits``,
    ``disk_hits``, ``disk_writes``, ``disk_errors`` (unreadable files removed, failed writes),
    and ``entries`` (contexts held in the process)."""
    return {**_stats, "entries": len(_memory)}


def clear(*, disk: bool = False) -> None:
    """Forget the contexts held in the process (and, with ``disk``, remove the cache files)."""
    _memory.clear()
    folder = cache_dir()
    if disk and folder is not None and folder.is_dir():
        for path in folder.glob("*.npz"):
            path.unlink(missing_ok=True)


def discard(key: str) -> None:
    """Forget the context of ``key`` in the process (its file, if any, stays)."""
    _memory.pop(key, None)


def count_build() -> None:
    """Record one context build (called by ``build_context``)."""
    _stats["builds"] += 1


def cache_dir() -> Path | None:
    """The disk cache folder, or None when ``CLUSTERSIM_CACHE_DIR=off``."""
    root = os.environ.get(CACHE_DIR_ENV)
    if root is not None and root.strip().lower() == "off":
        return None
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = str(Path(xdg) / "clustersim") if xdg else str(Path.home() / ".cache" / "clustersim")
    return Path(root) / "partition-context"


def _nbytes(ctx: PartitionContext) -> int:
    return sum(int(np.asarray(getattr(ctx, f)).nbytes) for f in (*_ARRAYS, "e_t"))


def get(key: str) -> PartitionContext | None:
    """The context of ``key`` from the process, else from disk (then kept in the process)."""
    ctx = _memory.get(key)
    if ctx is not None:
        _memory.move_to_end(key)
        _stats["memory_hits"] += 1
        return ctx
    folder = cache_dir()
    path = folder / f"{key}.npz" if folder is not None else None
    if path is None or not path.is_file():
        return None
    try:
        ctx = _read(path, key)
    except (OSError, ValueError, KeyError, TypeError, IndexError, EOFError, zipfile.BadZipFile):
        _stats["disk_errors"] += 1
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
        return None
    with contextlib.suppress(OSError):
        os.utime(path)
    _stats["disk_hits"] += 1
    _remember(key, ctx)
    return ctx


def put(key: str, ctx: PartitionContext) -> None:
    """Keep ``ctx`` in the process, and on disk when it has at least DISK_MIN_NODES nodes."""
    _remember(key, ctx)
    folder = cache_dir()
    if folder is None or ctx.n < DISK_MIN_NODES:
        return
    path = folder / f"{key}.npz"
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        with atomic_write(path, "wb", perm=0o600) as fh:
            _write(fh, key, ctx)
    except (OSError, TypeError, ValueError):  # the cache never fails a build
        _stats["disk_errors"] += 1
        return
    _stats["disk_writes"] += 1
    _prune(folder, keep=path)


def _remember(key: str, ctx: PartitionContext) -> None:
    _memory[key] = ctx
    _memory.move_to_end(key)
    total = sum(_nbytes(c) for c in _memory.values())
    while len(_memory) > 1 and total > MEMORY_MAX_BYTES:
        _, old = _memory.popitem(last=False)
        total -= _nbytes(old)


def _prune(folder: Path, keep: Path) -> None:
    """Remove the least recently used files until the folder holds at most DISK_MAX_BYTES."""
    files = []
    for path in folder.glob("*.npz"):
        with contextlib.suppress(OSError):
            st = path.stat()
            files.append((st.st_mtime, st.st_size, path))
    total = sum(size for _, size, _ in files)
    for _, size, path in sorted(files):
        if total <= DISK_MAX_BYTES:
            break
        if path != keep:
            with contextlib.suppress(OSError):
                path.unlink()
            total -= size


# --------------------------------------------------------------------------------------------
# the file: arrays plus one JSON document (no pickle)
# --------------------------------------------------------------------------------------------


def _write(fh: Any, key: str, ctx: PartitionContext) -> None:
    arrays: dict[str, np.ndarray] = {f"ctx.{f}": np.asarray(getattr(ctx, f)) for f in _ARRAYS}
    arrays["comm.rtt_ms"] = np.asarray(ctx.comm.rtt_ms)
    arrays["comm.loss"] = np.asarray(ctx.comm.loss)
    if ctx.coords is not None:
        arrays["coords"] = np.asarray(ctx.coords)
    extra: dict[str, Any] = {}
    for name, value in ctx.extra.items():
        extra[name] = _encode(name, value, arrays)
    g = ctx.graph
    meta = {
        "key": key,
        "format": FORMAT,
        "name": ctx.name,
        "buses": [int(b) for b in ctx.buses],
        "bus_labels": list(ctx.bus_labels),
        "slack": int(ctx.slack),
        "comm": [float(ctx.comm.rtt_max_ms), float(ctx.comm.loss_max)],
        "adjacency": [[int(v) for v in g.adj[u]] for u in range(ctx.n)],
        "edges": [
            [int(u), int(v), d["length_km"], d["branches"]] for u, v, d in g.edges(data=True)
        ],
        "extra": extra,
    }
    if list(g.nodes) != list(range(ctx.n)) or g.graph:
        raise ValueError("the context graph is not on nodes 0..n-1 in order")
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(fh, **cast(dict[str, Any], arrays))  # numeric arrays only: nothing is pickled


def _encode(name: str, value: Any, arrays: dict[str, np.ndarray]) -> Any:
    """``extra[name]`` as JSON, its arrays moved into ``arrays`` (tagged lists)."""
    if isinstance(value, np.ndarray):
        arrays[f"extra.{name}"] = value
        return ["array"]
    if isinstance(value, dict) and value and all(isinstance(v, np.ndarray) for v in value.values()):
        for sub, v in value.items():
            arrays[f"extra.{name}.{sub}"] = v
        return ["arrays", list(value)]
    if isinstance(value, dict) and all(isinstance(k, int) for k in value):
        return ["int-keys", [[k, v] for k, v in value.items()]]
    json.dumps(value)  # TypeError: a value the file cannot hold
    return ["json", value]


def _decode(name: str, tagged: list[Any], z: Any) -> Any:
    tag = tagged[0]
    if tag == "array":
        return z[f"extra.{name}"]
    if tag == "arrays":
        return {sub: z[f"extra.{name}.{sub}"] for sub in tagged[1]}
    if tag == "int-keys":
        return {int(k): v for k, v in tagged[1]}
    if tag == "json":
        return tagged[1]
    raise ValueError(f"unknown extra tag {tag!r}")


def _graph(n: int, adjacency: list[list[int]], edges: list[list[Any]]) -> nx.Graph:
    """The operating graph with every node's neighbours in their stored order: networkx keeps
    the order in which edges were added, so the edges are added in an order in which each node
    meets its edges as listed (a topological order of those constraints)."""
    data = {
        (min(u, v), max(u, v)): {
            "length_km": float(w),
            "branches": [(str(t), int(i)) for t, i in b],
        }
        for u, v, w, b in edges
    }
    order: graphlib.TopologicalSorter[tuple[int, int]] = graphlib.TopologicalSorter()
    for u, nbrs in enumerate(adjacency):
        keys = [(min(u, v), max(u, v)) for v in nbrs]
        for key in keys:
            order.add(key)
        for before, after in itertools.pairwise(keys):
            order.add(after, before)
    g = nx.Graph()
    g.add_nodes_from(range(n))
    for u, v in order.static_order():
        g.add_edge(u, v, **data[(u, v)])
    if [list(g.adj[u]) for u in range(n)] != adjacency:
        raise ValueError("stored adjacency cannot be rebuilt")
    return g


def _read(path: Path, key: str) -> PartitionContext:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(z["meta"].tobytes().decode())
        if meta.get("key") != key or meta.get("format") != FORMAT:
            raise ValueError(f"{path.name}: another key or format")
        arrays = {f: z[f"ctx.{f}"] for f in _ARRAYS}
        comm = CommParams(
            rtt_ms=z["comm.rtt_ms"],
            loss=z["comm.loss"],
            rtt_max_ms=float(meta["comm"][0]),
            loss_max=float(meta["comm"][1]),
        )
        coords = z["coords"] if "coords" in z.files else None
        extra = {name: _decode(name, tagged, z) for name, tagged in meta["extra"].items()}
    n = len(meta["buses"])
    arrays["e_t"] = distance.edge_weights(arrays["d_t"])
    ctx = PartitionContext(
        name=str(meta["name"]),
        buses=[int(b) for b in meta["buses"]],
        bus_labels=[str(b) for b in meta["bus_labels"]],
        graph=nx.freeze(_graph(n, meta["adjacency"], meta["edges"])),
        slack=int(meta["slack"]),
        comm=comm,
        coords=coords,
        extra=extra,
        **arrays,
    )
    if any(np.shape(arrays[f])[-1:] != (n,) for f in _ARRAYS):
        raise ValueError(f"{path.name}: arrays do not match {n} nodes")
    for value in (*arrays.values(), comm.rtt_ms, comm.loss, coords, *_extra_arrays(extra)):
        if isinstance(value, np.ndarray):
            value.flags.writeable = False
    return ctx


def _extra_arrays(extra: dict[str, Any]) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    for value in extra.values():
        if isinstance(value, np.ndarray):
            out.append(value)
        elif isinstance(value, dict):
            out.extend(v for v in value.values() if isinstance(v, np.ndarray))
    return out
