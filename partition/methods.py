"""Partition methods: one signature, one registry, one entry point.

Every method is a function

    fn(task: PartitionTask, **options) -> labels (n,) int

(:class:`~clustersim.partition.core.PartitionTask`: context, ``k``, the method's random
generator, size bounds)
that returns a cluster label per node and nothing else: :func:`run_partition` times it, then
computes pilot buses, every metric and the constraint checks the same way for all methods, so a
method that breaks a constraint is reported as such, never silently repaired.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from typing import Any

import networkx as nx
import numpy as np

from clustersim.errors import PartitionError
from clustersim.partition import metrics, pilot
from clustersim.partition.core import Partition, PartitionContext, PartitionTask, relabel

__all__ = ["METHODS", "method_names", "run_partition"]

# name -> (module, function, one-line description); a description's key names the method's
# source paper (REFERENCES.md)
METHODS: dict[str, tuple[str, str, str]] = {
    "hi": ("hi", "partition_hi", "[EVEC]: VMCS initial nodes, CCE-SAO expansion on tau"),
    "nsga3-cut": ("evolutionary", "nsga3_cut", "[NSGA3PART]: NSGA-III on branch cuts (f1-f3)"),
    "ga-rho": ("evolutionary", "ga_rho", "[CVC]: GA on the comprehensive index rho"),
    "ga-sa": ("evolutionary", "ga_sa", "[ZONAL]: hybrid GA with simulated-annealing acceptance"),
    "tc-som": ("som", "tc_som", "[TCSOM]: two-stage SOM (coupling, then ramp/correlation)"),
    "kmeans": ("baselines", "kmeans", "baseline: K-means on an electrical-distance embedding"),
    "kmedoids": ("baselines", "kmedoids", "baseline: K-medoids on the electrical-distance matrix"),
    "spectral": ("baselines", "spectral", "baseline: spectral clustering on electrical coupling"),
    "louvain": ("baselines", "louvain", "baseline: Louvain on electrical-distance weights"),
}


def method_names() -> list[str]:
    """Names of the registered partition methods, in registry order."""
    return list(METHODS)


def _resolve(method: str) -> Callable[..., np.ndarray]:
    if method not in METHODS:
        raise PartitionError(f"unknown partition method {method!r} (known: {', '.join(METHODS)})")
    module, func, _ = METHODS[method]
    mod = importlib.import_module(f"clustersim.partition.{module}")
    return getattr(mod, func)


def check_request(ctx: PartitionContext, k: int, min_size: int, max_size: int) -> None:
    """Refuse requests no method can satisfy, with one clear line."""
    n = ctx.n
    if k < 1:
        raise PartitionError(f"clusters must be at least 1, got {k}")
    if k > n:
        raise PartitionError(f"clusters = {k} is more than the {n} buses of case {ctx.name}")
    if min_size < 1 or min_size > max_size:
        raise PartitionError(f"size bounds [{min_size}, {max_size}] are not a valid range")
    if k * min_size > n or k * max_size < n:
        raise PartitionError(
            f"infeasible size bounds: {k} clusters of {min_size}..{max_size} buses cannot cover "
            f"the {n} buses of case {ctx.name}"
        )
    if not nx.is_connected(ctx.graph):
        raise PartitionError(f"the operating topology of case {ctx.name} is not connected")


def run_partition(
    ctx: PartitionContext,
    method: str,
    k: int,
    *,
    seed: int = 0,
    min_size: int = 1,
    max_size: int | None = None,
    **options: Any,
) -> Partition:
    """Run ``method`` for ``k`` clusters and evaluate the result uniformly."""

    max_size = ctx.n if max_size is None else max_size
    fn = _resolve(method)
    check_request(ctx, k, min_size, max_size)
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    t0 = time.perf_counter()
    task = PartitionTask(ctx, k, rng, min_size, max_size)
    labels = np.asarray(fn(task, **options))
    runtime = time.perf_counter() - t0
    if labels.shape != (ctx.n,) or labels.min() < 0:
        raise PartitionError(f"method {method} returned malformed labels")
    labels = relabel(labels.astype(int))
    return Partition(
        method=method,
        case=ctx.name,
        labels=labels,
        pilots=pilot.pilot_buses(ctx, labels),
        metrics=metrics.all_metrics(ctx, labels),
        constraints=metrics.check_constraints(ctx, labels, min_size=min_size, max_size=max_size),
        runtime_s=runtime,
        params={"k": k, "seed": seed, "min_size": min_size, "max_size": max_size, **options},
    )
