"""Experiments on a Dask cluster (``--scheduler``): a ``distributed.LocalCluster`` of two
single-threaded worker processes gives the same sweep as ``--jobs 2``, with the run folders
shipped back to the client."""

from __future__ import annotations

import pandas as pd
import pytest

from clustersim.results.tables import WALL_CLOCK_KEYS
from clustersim.studies.jobs import Hooks
from clustersim.studies.sweep import plan_sweep, run_sweep

distributed = pytest.importorskip("distributed")

SETS = ["run.duration_h=0.5", "run.plant_step_s=300", "control.pop_size=8", "control.generations=3"]


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as c:
        yield c


def _table(folder) -> pd.DataFrame:
    frame = pd.read_parquet(folder / "sweep.parquet")
    return frame[[c for c in frame.columns if c not in WALL_CLOCK_KEYS]]


def test_a_sweep_on_a_dask_cluster_equals_the_local_pool(tmp_path, cluster):
    """Same table as ``--jobs 2`` (wall-clock columns aside), every run folder complete on the
    client, agents as OS processes included (a worker process is daemonic: the runs start in a
    child interpreter), the progress hook counting finished points."""
    grid = ["run.agents=tasks,processes"]
    plan = plan_sweep("ieee33-ev-clustered", grid, overrides=SETS)
    local = run_sweep(plan, tmp_path / "local", n_jobs=2)
    done: list[int] = []
    remote = run_sweep(
        plan,
        tmp_path / "dask",
        hooks=Hooks(on_done=lambda o, n, t: done.append(n)),
        scheduler=cluster.scheduler_address,
    )
    assert remote.failed == [] and local.failed == []
    pd.testing.assert_frame_equal(_table(tmp_path / "dask"), _table(tmp_path / "local"))
    assert done == [1, 2]
    for o in remote.outcomes:
        assert (o.job.out_dir / "complete.json").is_file()
        assert (o.job.out_dir / "timeseries.parquet").is_file()
        assert pd.read_parquet(o.job.out_dir / "timeseries.parquet").equals(
            pd.read_parquet(tmp_path / "local" / "runs" / o.job.label / "timeseries.parquet")
        )


def test_a_failed_point_on_dask_is_recorded(tmp_path, cluster):
    """A run that fails on a worker is recorded in its row as a local one is: mode none records
    a partition it cannot make, clustered needs it, so that point fails; the other completes."""
    sets = [*SETS, "partition.method=nosuch"]
    plan = plan_sweep("ieee33-ev-none", ["control.mode=none,clustered"], overrides=sets)
    res = run_sweep(plan, tmp_path / "sw", scheduler=cluster.scheduler_address)
    frame = pd.read_parquet(tmp_path / "sw" / "sweep.parquet")
    ok, bad = frame.iloc[0], frame.iloc[1]
    assert ok["error"] is None and (tmp_path / "sw" / ok["run_dir"] / "summary.json").is_file()
    assert "partition" in bad["error"] and "nosuch" in bad["error"]
    assert [o.job.label for o in res.failed] == [bad["label"]]


def test_a_worker_killed_mid_sweep_costs_at_most_its_point(tmp_path):
    """SIGKILL one worker while runs are on it: Dask runs its task again elsewhere (or the
    point is recorded as failed); every other point completes, the table has every row."""
    import os
    import signal
    import threading
    import time

    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as c,
        distributed.Client(c) as client,
    ):
        plan = plan_sweep("ieee33-ev-clustered", ["comm.loss.p=0,0.1,0.2,0.3"], overrides=SETS)
        got: dict = {}
        t = threading.Thread(
            target=lambda: got.update(
                res=run_sweep(plan, tmp_path / "sw", scheduler=c.scheduler_address)
            )
        )
        t.start()
        pids = client.run(os.getpid)  # worker address -> its process id
        deadline = time.monotonic() + 120
        victim = None
        while victim is None and time.monotonic() < deadline:
            busy = [w for w, tasks in client.processing().items() if tasks]
            if busy:
                victim = pids[busy[0]]
            time.sleep(0.2)
        assert victim is not None, "no task started"
        time.sleep(2.0)  # mid-run
        os.kill(victim, signal.SIGKILL)
        t.join(timeout=600)
        assert not t.is_alive()
    res = got["res"]
    frame = pd.read_parquet(tmp_path / "sw" / "sweep.parquet")
    assert len(frame) == 4 and len(res.failed) <= 1
    for o in res.outcomes:
        if o.ok:
            assert (o.job.out_dir / "complete.json").is_file()
        else:
            assert "Dask task failed" in o.error or "KilledWorker" in o.error
