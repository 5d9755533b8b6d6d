"""Golden results: every built-in scenario, one hour from midnight, gives the recorded
``summary.json``, ``timeseries.parquet`` and ``control.parquet`` (wall-clock keys and columns
aside).

A change that alters behaviour on purpose re-records them with
``pytest tests/integration/test_golden.py --record-goldens`` and says in its commit message
what changed and why. Runs use the in-memory transport (results are transport-independent,
which the co-simulation tests check).

Numbers, also those inside the tables' JSON cells (setpoints, predicted boundary voltages), are
compared to a relative ``RTOL`` = 1e-6: the same decisions on another CPU (an Intel against the
AMD the goldens were recorded on) give power flows that differ within the Newton solver's
tolerance (up to 1e-7 relative on ieee123's lightly loaded lines, 1e-11 elsewhere), while a
decision that changes moves setpoints and KPIs by far more. Two runs on one machine, over two
transports, are compared exactly (the determinism tests, and the case1197 one below).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from clustersim.scenario import builtin_scenarios, load_scenario

GOLDEN = Path(__file__).resolve().parent / "golden"
HOURS = 1
RTOL = 1e-6
ATOL = 1e-9


def _diff(got: Any, want: Any, where: str = "") -> list[str]:
    """Where ``got`` and ``want`` (JSON values) differ: numbers beyond ``RTOL``/``ATOL``,
    anything else by equality."""
    if isinstance(want, dict) and isinstance(got, dict):
        out = [f"{where}.{k}: missing or extra" for k in sorted(set(got) ^ set(want))]
        for k in sorted(set(got) & set(want)):
            out += _diff(got[k], want[k], f"{where}.{k}")
        return out
    if isinstance(want, list) and isinstance(got, list) and len(got) == len(want):
        return [
            d
            for i, (g, w) in enumerate(zip(got, want, strict=False))
            for d in _diff(g, w, f"{where}[{i}]")
        ]
    number = (int, float)
    if (
        isinstance(want, number)
        and isinstance(got, number)
        and not isinstance(got, bool)
        and not isinstance(want, bool)
    ):
        ok = math.isclose(got, want, rel_tol=RTOL, abs_tol=ATOL) or (
            math.isnan(got) and math.isnan(want)
        )
        return [] if ok else [f"{where}: {got!r} != {want!r}"]
    return [] if got == want else [f"{where}: {got!r} != {want!r}"]


def _json_cell(x: Any) -> Any:
    """A table cell that holds JSON (a string starting with ``{`` or ``[``) as its value."""
    if isinstance(x, str) and x[:1] in "{[":
        try:
            return json.loads(x)
        except ValueError:
            return x
    return x


def _assert_frames(got: pd.DataFrame, want: pd.DataFrame, name: str, exact: bool) -> None:
    if exact:
        pd.testing.assert_frame_equal(got, want, check_exact=True)
        return
    assert list(got.columns) == list(want.columns), name
    text = [c for c in want.columns if want[c].dtype == object]
    pd.testing.assert_frame_equal(
        got.drop(columns=text), want.drop(columns=text), check_exact=False, rtol=RTOL, atol=ATOL
    )
    for c in text:
        diff = _diff([_json_cell(x) for x in got[c]], [_json_cell(x) for x in want[c]], c)
        assert not diff, f"{name}: " + "\n".join(diff[:20])


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


def _assert_golden(run_dir: Path, want_dir: Path, *, exact: bool = False) -> None:
    """The run's summary and tables equal the recorded ones, or another run's (wall-clock keys
    aside): to ``RTOL``, or ``exact``."""
    assert want_dir.is_dir(), f"no golden for {want_dir.name}: record with --record-goldens"
    want = json.loads(json.dumps(_summary(want_dir), sort_keys=True))
    got = json.loads(json.dumps(_summary(run_dir), sort_keys=True))
    if exact:
        assert got == want
    else:
        assert not (diff := _diff(got, want)), "\n".join(diff)
    for table in ("timeseries", "control"):
        got_t = _table(run_dir / f"{table}.parquet")
        want_t = _table(want_dir / f"{table}.parquet")
        assert (got_t is None) == (want_t is None), table
        if got_t is not None and want_t is not None:
            _assert_frames(got_t, want_t, table, exact)


# a run on the 1,197-bus case takes minutes (its 30-cluster partition alone about one): slow
EVERY_BUILTIN = [
    pytest.param(name, marks=pytest.mark.slow)
    if load_scenario(name).case.name == "case1197"
    else name
    for name in builtin_scenarios()
]


@pytest.fixture(scope="module")
def memory_runs() -> dict[str, Path]:
    """The in-memory runs of this module's golden tests, by scenario name, for the transport
    test to compare against without running them again."""
    return {}


@pytest.mark.parametrize("name", EVERY_BUILTIN)
def test_golden(name, tmp_path, request, memory_runs):
    run_dir = _run(name, tmp_path / name)
    memory_runs[name] = run_dir
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
def test_case1197_clustered_over_the_embedded_broker_equals_the_memory_run(tmp_path, memory_runs):
    """Determinism across transports at scale: case1197-pv-clustered (30 agents) over the run's
    own embedded MQTT broker gives exactly what the in-memory transport gives on this machine
    (the golden test's run when it ran first; the partition context is cached in-process), and
    its golden."""
    name = "case1197-pv-clustered"
    memory = memory_runs.get(name) or _run(name, tmp_path / "memory" / name)
    mqtt = _run(name, tmp_path / "mqtt" / name, transport="mqtt")
    _assert_golden(mqtt, memory, exact=True)
    _assert_golden(mqtt, GOLDEN / name)


def test_summary_kpis_are_the_numeric_keys_of_the_summaries():
    """``SUMMARY_KPIS`` (what ``sweep --kpi`` accepts) lists every numeric key of every built-in
    scenario's summary and nothing else (the wall-clock keys, which the goldens leave out,
    aside)."""
    from clustersim.results.tables import SUMMARY_KPIS, WALL_CLOCK_KEYS

    numeric: set[str] = set()
    for path in GOLDEN.glob("*/summary.json"):
        summary = json.loads(path.read_text())
        numeric |= {
            k
            for k, v in summary.items()
            if v is None or (isinstance(v, int | float) and not isinstance(v, bool))
        }
    assert numeric and numeric <= set(SUMMARY_KPIS)
    assert set(SUMMARY_KPIS) - numeric <= set(WALL_CLOCK_KEYS)
