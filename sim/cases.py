"""Grid case library.

Every built-in case is a pandapower net whose ``net.bus["name"]`` holds the bus label the source
paper uses (a string: "1".."33" for ieee33, the OpenDSS bus names for ieee123, ...). Resource
presets and scenario files refer to buses by that label, never by pandapower's row index.

Sources
- ``ieee33``: pandapower ``case33bw`` (Baran & Wu 1989 [IEEE33], 12.66 kV, 33 buses).
- ``ieee51``: MATPOWER ``case51ga`` (Gampa & Das 2015 [GD51], 11 kV), converted by
  ``clustersim.sim.data.convert_matpower`` into ``data/cases/ieee51.json``.
- ``ieee69``: MATPOWER ``case69`` (Baran & Wu 1989 [IEEE69], 12.66 kV), same converter.
- ``case1197``: MATPOWER ``case1197`` ([CASE1197]: a 23 kV feeder with 22 copies of a 53-node
  415 V residential network behind 100 kVA transformers, 1,197 buses), same converter; its 23
  cross-voltage branches are transformers, the substation one with an on-load tap changer
  (``convert_matpower.OLTC_TAPS``).
- ``ieee123``: balanced single-phase equivalent of the IEEE 123-node feeder [IEEE123], converted
  from the OpenDSS files by ``clustersim.sim.data.convert_ieee123`` into
  ``data/cases/ieee123.json``.
- ``simbench-mv-rural`` / ``simbench-mv-semiurb``: SimBench [SIMBENCH] ``1-MV-rural--0-sw`` and
  ``1-MV-semiurb--0-sw`` from the ``simbench`` package, open ring switches honoured (their
  operating topology is radial once the parallel HV/MV transformers are taken as one branch).
- any path to a pandapower JSON file.

A plant runs a fed radial feeder only: :func:`check_topology` refuses a net with in-service buses
cut off from the ext_grid (islands) or with a loop among its energized branches (meshed).
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
import pandapower as pp
import pandapower.networks as pn
import pandapower.topology as top
import simbench as sb

from clustersim.catalog import CASE_DESCRIPTIONS
from clustersim.errors import CaseError, PowerFlowError

__all__ = [
    "CASES",
    "CaseSpec",
    "case_names",
    "check_topology",
    "describe_case",
    "is_radial",
    "islanded_buses",
    "load_case",
    "operating_graph",
]


def _data_path(filename: str) -> Path:
    return Path(str(importlib.resources.files("clustersim.sim.data").joinpath("cases", filename)))


def _load_json_case(filename: str) -> pp.pandapowerNet:
    path = _data_path(filename)
    if not path.exists():
        raise CaseError(
            f"case data file {path} is missing; regenerate it with the converter named in "
            "clustersim.sim.cases"
        )
    return pp.from_json(str(path))


def _load_ieee33() -> pp.pandapowerNet:
    net = pn.case33bw()
    net.bus["name"] = [str(i + 1) for i in net.bus.index]
    # case33bw carries no ratings (max_i_ka 99999); use 0.4 kA as the MATPOWER conversions do so
    # line loadings mean something (ours; the feeder head carries ~0.18 kA at peak)
    net.line["max_i_ka"] = 0.4
    net.name = "ieee33"
    return net


def _load_simbench(code: str) -> pp.pandapowerNet:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = sb.get_simbench_net(code)
    net.bus["name"] = net.bus["name"].astype(str)
    # SimBench leaves tap_changer_type empty, and pandapower then ignores tap_pos: make the
    # HV/MV transformers' tap changers real ratio devices (tap_pos 0 = neutral: base case unchanged)
    taps = net.trafo.tap_pos.notna() & (net.trafo.tap_step_percent.fillna(0) > 0)
    net.trafo.loc[taps, "tap_changer_type"] = "Ratio"
    return net


@dataclass(frozen=True)
class CaseSpec:
    """A built-in grid case: its name, what it is and how to build it."""

    name: str
    description: str
    loader: Callable[[], pp.pandapowerNet]


_LOADERS: dict[str, Callable[[], pp.pandapowerNet]] = {
    "ieee33": _load_ieee33,
    "ieee51": lambda: _load_json_case("ieee51.json"),
    "ieee69": lambda: _load_json_case("ieee69.json"),
    "ieee123": lambda: _load_json_case("ieee123.json"),
    "case1197": lambda: _load_json_case("case1197.json"),
    "simbench-mv-rural": lambda: _load_simbench("1-MV-rural--0-sw"),
    "simbench-mv-semiurb": lambda: _load_simbench("1-MV-semiurb--0-sw"),
}
CASES: dict[str, CaseSpec] = {
    name: CaseSpec(name, description, _LOADERS[name])
    for name, description in CASE_DESCRIPTIONS.items()
}
"""the built-in cases (names and descriptions: :data:`clustersim.catalog.CASE_DESCRIPTIONS`)"""


def case_names() -> list[str]:
    """Names of the built-in cases, in a stable order."""
    return list(CASES)


@functools.lru_cache(maxsize=16)
def _cached(name: str) -> pp.pandapowerNet:
    if name in CASES:
        net = CASES[name].loader()
    else:
        path = Path(name)
        if not path.is_file():
            raise CaseError(
                f"unknown case {name!r}: not a built-in ({', '.join(CASES)}) nor a pandapower "
                "JSON file"
            )
        try:
            net = pp.from_json(str(path))
        except Exception as exc:  # pandapower raises many types on a bad file
            raise CaseError(f"{path}: not a readable pandapower JSON network ({exc})") from exc
    if not net.name or name in CASES:
        net.name = name if name in CASES else Path(name).stem
    return net


def load_case(name: str) -> pp.pandapowerNet:
    """Return a fresh (deep-copied) pandapower net for a built-in case name or a JSON path."""
    return copy.deepcopy(_cached(name))


def operating_graph(net: pp.pandapowerNet) -> nx.MultiGraph:
    """Graph of the energized operating topology.

    Buses joined by closed bus-bus switches are fused into one node (the lowest bus index),
    open switches and out-of-service branches are left out. Parallel branches between the same
    pair of nodes remain as parallel edges of the multigraph.
    """
    g = top.create_nxgraph(net, respect_switches=True, include_out_of_service=False)
    bb = net.switch[(net.switch.et == "b") & net.switch.closed]
    if len(bb):
        fuse = nx.Graph()
        fuse.add_edges_from(zip(bb.bus, bb.element, strict=True))
        mapping = {}
        for comp in nx.connected_components(fuse):
            rep = min(comp)
            mapping.update({b: rep for b in comp})
        g = nx.relabel_nodes(g, mapping, copy=True)
        g.remove_edges_from([(u, v, k) for u, v, k in g.edges(keys=True) if u == v])
    # keep only the part connected to a slack bus
    slack = {mapping.get(b, b) if len(bb) else b for b in net.ext_grid.bus[net.ext_grid.in_service]}
    keep: set[int] = set()
    for s in slack:
        keep |= nx.node_connected_component(g, s)
    return nx.MultiGraph(g.subgraph(keep))


def is_radial(net: pp.pandapowerNet) -> bool:
    """True when the operating topology is a tree once parallel branches count as one."""
    g = nx.Graph(operating_graph(net))  # collapses parallel edges
    return nx.is_tree(g)


def islanded_buses(net: pp.pandapowerNet) -> list[int]:
    """In-service buses (``net.bus`` index, ascending) with no path to the bus of an in-service
    ext_grid through in-service branches and closed switches: pandapower leaves them out of the
    power flow (NaN voltages)."""
    slacks = set(net.ext_grid.bus[net.ext_grid.in_service].tolist())
    return sorted(int(b) for b in top.unsupplied_buses(net, slacks=slacks, respect_switches=True))


def _bus_list(net: pp.pandapowerNet, buses: list[int], shown: int) -> str:
    """``label (#index)`` of the first ``shown`` buses, and how many more."""
    names = net.bus["name"]
    out = [
        f"{names.at[b]} (#{b})" if str(names.at[b]) not in ("", "None", "nan") else f"#{b}"
        for b in buses[:shown]
    ]
    more = f" and {len(buses) - shown} more" if len(buses) > shown else ""
    return ", ".join(out) + more


def check_topology(net: pp.pandapowerNet, name: str | None = None) -> None:
    """Refuse a net the plant cannot run as a fed radial feeder.

    Raises :class:`CaseError` (one line naming the case: ``name``, else ``net.name``) when no
    in-service ext_grid sits on an in-service bus, when in-service buses are islanded
    (:func:`islanded_buses`) or when the operating topology is not one radial feeder
    (:func:`is_radial` false): separate parts each with its own ext_grid, or meshed.
    """
    where = f"case {name or net.name or '(unnamed)'}"
    eg = net.ext_grid[net.ext_grid.in_service]
    if not len(eg) or not eg.bus.isin(net.bus.index[net.bus.in_service]).all():
        raise CaseError(f"{where}: no in-service ext_grid (slack), or one on an out-of-service bus")
    islanded = islanded_buses(net)
    if islanded:
        raise CaseError(
            f"{where}: {len(islanded)} of {int(net.bus.in_service.sum())} in-service buses are "
            "islanded (no path to the ext_grid through in-service branches and closed "
            f"switches): {_bus_list(net, islanded, 6)}; reconnect them or set them out of service"
        )
    if not is_radial(net):
        graph = nx.Graph(operating_graph(net))
        if not nx.is_connected(graph):
            raise CaseError(
                f"{where}: the network is not connected: {nx.number_connected_components(graph)} "
                "separate parts, each fed by its own ext_grid; the plant needs one radial feeder"
            )
        loops: list[list[int]] = nx.cycle_basis(graph)
        shortest: list[int] = min(loops, key=len, default=[])
        through = f"; one through buses {_bus_list(net, sorted(shortest), 12)}" if shortest else ""
        raise CaseError(
            f"{where}: the operating topology is meshed ({len(loops)} independent loop(s)"
            f"{through}); the plant needs a radial feeder: open a switch or set a branch out of "
            "service"
        )


def _resource_counts(net: pp.pandapowerNet) -> dict[str, int]:
    counts: dict[str, int] = {}

    def add(kind: str, n: int) -> None:
        if n:
            counts[kind] = counts.get(kind, 0) + int(n)

    for _, sg in net.sgen[net.sgen.in_service].iterrows():
        kind = str(sg.get("type") or "sgen").lower()
        kind = {"pv": "pv", "wp": "wind", "wind": "wind"}.get(kind, kind)
        add(kind, 1)
    add("ess", int(net.storage.in_service.sum()))
    add("capacitor", int(net.shunt.in_service.sum()))
    trafo = net.trafo[net.trafo.in_service]
    if len(trafo):
        regs = trafo["name"].astype(str).str.lower().str.startswith("reg")
        add("regulator", int(regs.sum()))
        mv_lv = trafo.vn_lv_kv < 1.0  # distribution transformers (to a LV network)
        add("oltc", int((~regs & ~mv_lv & trafo.tap_pos.notna()).sum()))
        add("transformer", int((~regs & mv_lv).sum()))
    return counts


def describe_case(name: str) -> dict[str, Any]:
    """Summary of a case at its base operating point (pandapower power flow).

    Keys: name, n_buses, n_lines, radial, total_load_mw, base_losses_kw, min_vm_pu, resources.
    """
    net = load_case(name)
    try:
        pp.runpp(net, numba=False, lightsim2grid=False)
    except pp.LoadflowNotConverged as exc:
        raise PowerFlowError(f"case {name}: base power flow does not converge") from exc
    losses_kw = 1e3 * (net.res_line.pl_mw.sum() + net.res_trafo.pl_mw.sum())
    energized = net.res_bus.vm_pu.notna()
    return {
        "name": name,
        "n_buses": len(net.bus),
        "n_lines": int(net.line.in_service.sum()),
        "radial": bool(is_radial(net)),
        "total_load_mw": round(
            float((net.load.p_mw * net.load.scaling)[net.load.in_service].sum()), 6
        ),
        "base_losses_kw": round(float(losses_kw), 4),
        "min_vm_pu": round(float(net.res_bus.vm_pu[energized].min()), 6),
        "resources": _resource_counts(net),
    }
