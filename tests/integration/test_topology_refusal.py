"""`clustersim run` on a case with an island or a loop: exit 2, one line naming the problem,
and no results folder (absent, or left empty)."""

from __future__ import annotations

import os
import subprocess
import sys

import pandapower as pp
import pytest

from clustersim.sim.cases import load_case

CLI = [sys.executable, "-m", "clustersim.cli"]
# ieee33 (case33bw): line 24 feeds buses "26".."33"; line 32 is the open tie "21"-"8"
ISLAND = ("island", 24, False, "8 of 33 in-service buses are islanded")
MESH = ("mesh", 32, True, "the operating topology is meshed")


@pytest.mark.parametrize(
    ("stem", "line", "in_service", "problem"), [ISLAND, MESH], ids=["island", "mesh"]
)
def test_run_refuses_before_writing(tmp_path, stem, line, in_service, problem):
    net = load_case("ieee33")
    net.line.loc[line, "in_service"] = in_service
    case = tmp_path / f"{stem}.json"
    pp.to_json(net, str(case))
    scenario = tmp_path / f"{stem}.toml"
    scenario.write_text(f'[case]\nname = "{case}"\n[run]\nduration_h = 1\n')
    out = tmp_path / "out"
    r = subprocess.run(
        [*CLI, "run", str(scenario), "--out", str(out), "--quiet"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "120"},
        timeout=120,
    )
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"error: case.name: case {case}: {problem}")
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert not out.exists() or not any(out.iterdir())
