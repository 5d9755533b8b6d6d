"""`clustersim partition` / `partition-compare`: output, files, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "clustersim.cli"]


def _cli(*args):
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=600)


def test_partition_json_document(tmp_path):
    r = _cli(
        "partition",
        "ieee33",
        "--method",
        "kmedoids",
        "--clusters",
        "4",
        "--seed",
        "1",
        "--json",
        "--out",
        str(tmp_path / "p"),
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert {"method", "case", "clusters", "metrics", "constraints", "runtime_s"} <= set(doc)
    assert doc["method"] == "kmedoids" and doc["case"] == "ieee33"
    assert {"tau", "modularity", "alpha", "beta", "gamma", "rho"} <= set(doc["metrics"])
    assert {"connected", "size_ok", "resources_ok"} <= set(doc["constraints"])
    buses = [b for c in doc["clusters"] for b in c["buses"]]
    assert sorted(buses, key=int) == [str(i) for i in range(1, 34)]  # every bus exactly once
    for c in doc["clusters"]:
        assert {"id", "buses", "pilot_bus", "connected", "n_resources"} <= set(c)
        assert c["pilot_bus"] in c["buses"]
    written = json.loads((tmp_path / "p" / "partition.json").read_text())
    assert written["clusters"] == doc["clusters"]
    png = (tmp_path / "p" / "figures" / "partition.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_partition_table_output():
    r = _cli(
        "partition",
        "ieee33",
        "--method",
        "hi",
        "--clusters",
        "4",
        "--min-size",
        "3",
        "--max-size",
        "12",
    )
    assert r.returncode == 0, r.stderr
    for word in ("cluster", "pilot", "connected", "resources", "tau", "modularity"):
        assert word in r.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--clusters", "40"], "more than the 33 buses"),
        (["--clusters", "3", "--min-size", "12", "--max-size", "20"], "infeasible size bounds"),
        (["--clusters", "3", "--min-size", "5", "--max-size", "8"], "infeasible size bounds"),
        (["--method", "magic"], "unknown partition method"),
    ],
)
def test_partition_bad_input_one_line_exit_2(args, needle):
    r = _cli("partition", "ieee33", *args)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_partition_disconnected_network_is_refused(tmp_path):
    import pandapower as pp

    from clustersim.sim.cases import load_case

    net = load_case("ieee33")
    net.line.loc[net.line.index[5], "in_service"] = False  # islands the feeder's tail
    pp.create_ext_grid(net, bus=int(net.line.at[net.line.index[5], "to_bus"]), vm_pu=1.0)
    path = tmp_path / "split.json"
    pp.to_json(net, str(path))
    r = _cli("partition", str(path), "--clusters", "3")
    assert r.returncode == 2 and "not connected" in r.stderr, r.stderr


def test_partition_compare_prints_every_method(tmp_path):
    out = tmp_path / "pc"
    args = ["partition-compare", "ieee33", "--clusters", "4", "--seed", "0", "--out", str(out)]
    r = _cli(*args, "--json")
    assert r.returncode == 0, r.stderr
    docs = json.loads(r.stdout)
    from clustersim.partition.methods import method_names

    assert [d["method"] for d in docs] == method_names()
    for d in docs:
        assert {"tau", "modularity", "rho"} <= set(d["metrics"])
    # --out: the table as CSV (machine names), Markdown (the printed headers) and the documents
    import pandas as pd

    table = pd.read_csv(out / "partition-compare.csv")
    assert list(table["method"]) == method_names()
    assert table["tau"].tolist() == pytest.approx([d["metrics"]["tau"] for d in docs])
    assert "Q comp − load min Mvar" in (out / "partition-compare.md").read_text()
    assert json.loads((out / "partition-compare.json").read_text()) == docs
    printed = _cli(*args[:-2])
    assert (
        printed.returncode == 0 and "modularity" in printed.stdout and "spectral" in printed.stdout
    )


def test_partition_of_a_scenario_is_the_one_its_runs_use(tmp_path):
    """``partition --scenario S`` gives the clusters C1..Ck a run of S writes to partition.json
    (its seed, size bounds, profiles and channel model), not the command's own defaults."""
    r = _cli("partition", "--scenario", "ieee33-ev-clustered", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    run = _cli(
        "run",
        "ieee33-ev-clustered",
        "--set",
        "run.duration_h=0.25",
        "--set",
        "comm.transport=memory",
        "-q",
        "--out",
        str(tmp_path / "run"),
    )
    assert run.returncode == 0, run.stderr
    used = json.loads((tmp_path / "run" / "partition.json").read_text())
    assert doc["clusters"] == used["clusters"] and doc["metrics"] == used["metrics"]
    assert [c["name"] for c in doc["clusters"]] == ["C1", "C2", "C3", "C4", "C5"]
    plain = json.loads(_cli("partition", "ieee33", "--json").stdout)
    assert plain["clusters"] != doc["clusters"]  # the command's defaults differ (sizes 1..33)
    clash = _cli("partition", "ieee33", "--scenario", "ieee33-ev-clustered")
    assert clash.returncode == 2 and "--set partition.<key>=value" in clash.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "case", ["ieee33", "ieee51", "ieee69", "ieee123", "simbench-mv-rural", "simbench-mv-semiurb"]
)
def test_every_method_runs_on_every_builtin_case(case):
    r = _cli("partition-compare", case, "--clusters", "4", "--seed", "2", "--json")
    assert r.returncode == 0, r.stderr
    docs = json.loads(r.stdout)
    assert len(docs) == 9
    for d in docs:
        buses = [b for c in d["clusters"] for b in c["buses"]]
        assert len(buses) == len(set(buses))  # every bus in exactly one cluster
        if d["method"] in ("hi", "nsga3-cut", "ga-rho", "ga-sa"):
            assert d["constraints"]["connected"] and d["k"] == 4, d["method"]
