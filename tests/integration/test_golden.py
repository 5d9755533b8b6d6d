"""Golden results: every built-in scenario, one hour from midnight, gives exactly the recorded
``summary.json``, ``timeseries.parquet`` and ``control.parquet`` (wall-clock keys and columns
aside).

A change that alters behaviour on purpose re-records them with
``pytest tests/integration/test_golden.py --record-goldens`` and says in its commit message
what changed and why. Runs use the in-memory transport (results are transport-independent,
which the co-simulation tests check).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from clustersim.scenario import builtin_scenarios, load_scenario

GOLDEN = Path(__file__).resolve().parent / "golden"
HOURS = 1


def _summary(run_dir: Path) -> dict:
    doc = json.loads((run_dir / "summary.json").read_text())
    for key in doc.get("wall_clock_keys", []):
        doc.pop(key, None)
    return doc


def _table(path: Path) -> pd.DataFrame | None:
    """The table without its wall-clock columns (as the run's summary lists them)."""
    if not path.exists():
        return None
    frame = pd.read_parquet(path)
    wall = json.loads((path.parent / "summary.json").read_text()).get("wall_clock_columns", {})
    return frame.drop(columns=[c for c in wall.get(path.name, ()) if c in frame.columns])


def _run(name: str, out: Path, transport: str = "memory") -> Path:
    from clustersim.runner import run_scenario

    scenario = load_scenario(
        name, overrides=[f"run.duration_h={HOURS}", f"comm.transport={transport}"]
    )
    return run_scenario(scenario, out).out_dir


def _assert_golden(run_dir: Path, want_dir: Path) -> None:
    """The run's summary and tables equal the recorded ones (wall-clock keys aside)."""
    assert want_dir.is_dir(), f"no golden for {want_dir.name}: record with --record-goldens"
    want = json.loads((want_dir / "summary.json").read_text())
    got = json.loads(json.dumps(_summary(run_dir), sort_keys=True))
    assert got == want
    for table in ("timeseries", "control"):
        got_t = _table(run_dir / f"{table}.parquet")
        want_t = _table(want_dir / f"{table}.parquet")
        assert (got_t is None) == (want_t is None), table
        if got_t is not None:
            pd.testing.assert_frame_equal(got_t, want_t, check_exact=True)


# a run on the 1,197-bus case takes minutes (its 30-cluster partition alone about one): slow
EVERY_BUILTIN = [
    pytest.param(name, marks=pytest.mark.slow)
    if load_scenario(name).case.name == "case1197"
    else name
    for name in builtin_scenarios()
]


@pytest.mark.parametrize("name", EVERY_BUILTIN)
def test_golden(name, tmp_path, request):
    run_dir = _run(name, tmp_path / name)
    want_dir = GOLDEN / name
    if request.config.getoption("--record-goldens"):
        want_dir.mkdir(parents=True, exist_ok=True)
        (want_dir / "summary.json").write_text(
            json.dumps(_summary(run_dir), indent=2, sort_keys=True) + "\n"
        )
        for table in ("timeseries", "control"):
            frame = _table(run_dir / f"{table}.parquet")
            target = want_dir / f"{table}.parquet"
            if frame is None:
                target.unlink(missing_ok=True)
            else:
                frame.to_parquet(target, index=False)
        pytest.skip(f"recorded {want_dir}")
    _assert_golden(run_dir, want_dir)


@pytest.mark.slow
def test_case1197_clustered_over_the_embedded_broker_equals_its_golden(tmp_path):
    """Determinism across transports at scale: case1197-pv-clustered (30 agents) over the run's
    own embedded MQTT broker gives exactly the golden recorded over the in-memory transport
    (the partition context is built once per process and cached for the golden run's twin)."""
    name = "case1197-pv-clustered"
    _assert_golden(_run(name, tmp_path / name, transport="mqtt"), GOLDEN / name)
