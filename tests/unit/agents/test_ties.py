"""Tie branches between clusters (clustersim.agents.node.find_ties) on hand-checked ieee33
partitions."""

from __future__ import annotations

import copy

import pytest

from clustersim.agents.node import find_ties
from clustersim.sim.cases import load_case


def _idx(*labels: int | range) -> list[int]:
    """pandapower bus indices of ieee33 bus labels (label n is row n - 1)."""
    out: list[int] = []
    for lab in labels:
        out.extend(x - 1 for x in (lab if isinstance(lab, range) else [lab]))
    return out


# three clusters along the feeder, given by the paper's bus labels:
# S: the substation and the laterals at buses 2 and 3; M: the main feeder from bus 6;
# L: the lateral 26-33, which hangs off bus 6 and so off M, not off S
CHAIN = {
    "S": _idx(range(1, 6), range(19, 26)),
    "M": _idx(range(6, 19)),
    "L": _idx(range(26, 34)),
}
# by hand from the ieee33 branch list (case33bw): in service, 5-6 joins S and M and 6-26 joins M
# and L; the parent end is the one nearer bus 1. The normally-open lines 21-8, 9-15, 12-22,
# 18-33 and 25-29 also join different clusters but are out of service, so no tie.
CHAIN_TIES = {("5", "6"): ("S", "M"), ("6", "26"): ("M", "L")}

# the HI partition of ieee33 (5 clusters) used by the control tests, as labels
HI = {
    "C1": _idx(range(1, 6), range(19, 23)),
    "C2": _idx(6, range(26, 34)),
    "C3": _idx(range(7, 13)),
    "C4": _idx(range(13, 19)),
    "C5": _idx(range(23, 26)),
}
HI_TIES = {
    ("5", "6"): ("C1", "C2"),
    ("6", "7"): ("C2", "C3"),
    ("12", "13"): ("C3", "C4"),
    ("3", "23"): ("C1", "C5"),
}


@pytest.fixture(scope="module")
def net33():
    return load_case("ieee33")


def _line_row(net, a: str, b: str) -> int:
    """Row of the line between the buses labelled ``a`` and ``b`` (either direction)."""
    ia, ib = int(a) - 1, int(b) - 1
    rows = [
        int(r)
        for r, f, t in zip(net.line.index, net.line.from_bus, net.line.to_bus, strict=True)
        if {int(f), int(t)} == {ia, ib}
    ]
    assert len(rows) == 1, (a, b, rows)
    return rows[0]


def _crossing_lines(net, clusters) -> set[int]:
    """In-service lines whose two end buses are in different clusters."""
    owner = {b: name for name, buses in clusters.items() for b in buses}
    ls = net.line
    return {
        int(r)
        for r, f, t, on in zip(ls.index, ls.from_bus, ls.to_bus, ls.in_service, strict=True)
        if on and owner[int(f)] != owner[int(t)]
    }


def _expected(net, hand):
    return {
        (parent, child, "line", _line_row(net, a, b), int(a) - 1, a)
        for (a, b), (parent, child) in hand.items()
    }


def _got(ties):
    return {(t.parent, t.child, t.table, t.row, t.bus, t.bus_label) for t in ties}


@pytest.mark.parametrize(("clusters", "hand"), [(CHAIN, CHAIN_TIES), (HI, HI_TIES)])
def test_ties_are_the_in_service_lines_between_clusters(net33, clusters, hand):
    """find_ties returns exactly the in-service lines joining two clusters, each oriented with
    the parent cluster and boundary bus at the end nearer the substation."""
    assert sorted(b for buses in clusters.values() for b in buses) == list(range(33))
    expected = _expected(net33, hand)
    # the hand-written list agrees with the branch table
    assert {row for _, _, _, row, _, _ in expected} == _crossing_lines(net33, clusters)
    ties = find_ties(net33, clusters)
    assert len(ties) == len(expected)
    assert _got(ties) == expected


def test_tie_orientation_does_not_follow_the_line_direction(net33):
    """A tie line entered to-from (downstream bus as from_bus) keeps its parent on the
    substation side."""
    net = copy.deepcopy(net33)
    row = _line_row(net, "6", "26")
    f, t = int(net.line.at[row, "from_bus"]), int(net.line.at[row, "to_bus"])
    net.line.at[row, "from_bus"], net.line.at[row, "to_bus"] = t, f
    assert _got(find_ties(net, CHAIN)) == _expected(net33, CHAIN_TIES)


def test_single_cluster_has_no_ties(net33):
    """A partition with one cluster holding every bus has no tie."""
    assert find_ties(net33, {"all": list(range(33))}) == []
