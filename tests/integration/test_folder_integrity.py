"""Integrity of a run folder end to end, through ``run_scenario`` and the command line: a full
disk mid-run, the complete marker written last, ``clustersim report`` on an incomplete folder,
a non-empty ``--out`` (refused, then ``--overwrite``), a folder held by another writer, and an
experiment folder. Runs are 6 minutes of mode ``none`` (about a second each)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from clustersim.cli import app
from clustersim.errors import ClusterSimError
from clustersim.fileio import COMPLETE_FILE, LOCK_FILE, folder_lock, incomplete_reason, read_marker
from clustersim.runner import INTERRUPTED, run_scenario
from clustersim.scenario import load_scenario

SHORT = ["--set", "run.duration_h=0.1", "-q"]


def _cli(*args: str):
    return CliRunner().invoke(app, [*args])


def _one_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1, text
    return lines[0]


def _snapshot(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*")}


def _scenario(**kw):
    return load_scenario("ieee33-ev-none", overrides=["run.duration_h=0.1"], **kw)


@pytest.fixture
def disk_full_at(monkeypatch):
    """Make the parquet table ``name`` fail as a full disk does: some bytes written, then
    ``write()`` raising ENOSPC (which names no file)."""
    real = pd.DataFrame.to_parquet

    def arm(name: str) -> None:
        def to_parquet(self, path, *args, **kwargs):
            fd = getattr(path, "fileno", None)  # atomic_write's file: its temporary name
            where = os.readlink(f"/proc/self/fd/{fd()}") if fd is not None else str(path)
            if Path(where).name.startswith(f".{name}."):
                path.write(b"PAR1")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(self, path, *args, **kwargs)

        monkeypatch.setattr(pd.DataFrame, "to_parquet", to_parquet)

    return arm


def test_disk_full_mid_run_is_one_line_and_an_incomplete_folder(tmp_path, disk_full_at):
    out = tmp_path / "r"
    disk_full_at("timeseries.parquet")
    r = _cli("run", "ieee33-ev-none", "--out", str(out), *SHORT)
    assert r.exit_code == 2, r.output
    line = _one_line(r.stderr)
    target = out / "timeseries.parquet"
    assert line == f"error: [Errno 28] {os.strerror(errno.ENOSPC)}: '{target}'"
    assert "Traceback" not in r.output
    # summary.json was written before the table; the folder says it is not complete, and why
    assert (out / "summary.json").is_file() and not target.exists()
    assert not list(out.rglob("*.part")) and not (out / LOCK_FILE).exists()
    marker = read_marker(out)
    assert marker is not None and marker["complete"] is False
    assert marker["reason"] == f"OSError: [Errno 28] {os.strerror(errno.ENOSPC)}: '{target}'"
    # `clustersim report` says so on stderr (one line) and in the page
    r = _cli("report", str(out))
    assert r.exit_code == 0, r.output
    warning = _one_line(r.stderr)
    assert warning.startswith("warning:") and str(out) in warning
    assert "incomplete results folder" in warning and "No space left" in warning
    page = (out / "report.html").read_text()
    assert "incomplete results folder" in page and "No space left on device" in page


def test_disk_full_raises_from_run_scenario(tmp_path, disk_full_at):
    disk_full_at("timeseries.parquet")
    with pytest.raises(OSError) as info:
        run_scenario(_scenario(), tmp_path / "r")
    assert info.value.errno == errno.ENOSPC
    assert info.value.filename == str(tmp_path / "r" / "timeseries.parquet")
    assert "No space left" in str(incomplete_reason(tmp_path / "r"))


def test_complete_marker_is_the_last_write_of_a_run(tmp_path, monkeypatch):
    written: list[str] = []
    replace = os.replace

    def recording(src, dst, *args, **kwargs):
        replace(src, dst, *args, **kwargs)
        written.append(Path(dst).relative_to(out).as_posix())

    out = tmp_path / "r"
    monkeypatch.setattr(os, "replace", recording)
    run_scenario(_scenario(), out)
    assert written[0] == written[-1] == COMPLETE_FILE
    assert COMPLETE_FILE not in written[1:-1]
    body = written[1:-1]
    assert body.index("report.html") == len(body) - 1  # the report, then the marker
    assert {"scenario.toml", "summary.json", "timeseries.parquet"} <= set(body)
    assert any(w.startswith("figures/") for w in body)
    marker = read_marker(out)
    assert marker is not None and marker["complete"] is True
    assert set(marker["files"]) == set(body) - {"report.html"}
    assert incomplete_reason(out) is None
    r = _cli("report", str(out))
    assert r.exit_code == 0 and not r.stderr.strip(), r.output
    assert "incomplete results folder" not in (out / "report.html").read_text()


def test_interrupted_run_says_so(tmp_path, monkeypatch):
    import clustersim.runner as runner

    def ctrl_c(out_dir):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "draw_run_figures", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        run_scenario(_scenario(), tmp_path / "r")
    assert incomplete_reason(tmp_path / "r") == INTERRUPTED
    assert not (tmp_path / "r" / LOCK_FILE).exists()


def test_non_empty_out_refused_without_overwrite_and_replaced_with_it(tmp_path):
    out = tmp_path / "r"
    r = _cli("run", "ieee33-ev-none", "--out", str(out), *SHORT)
    assert r.exit_code == 0, r.output
    (out / "notes.txt").write_text("from an earlier run")
    before = _snapshot(out)
    r = _cli("run", "ieee33-ev-none", "--out", str(out), "--seed", "2", *SHORT)
    assert r.exit_code == 2
    line = _one_line(r.stderr)
    assert str(out) in line and "not empty" in line and "--overwrite" in line
    assert _snapshot(out) == before  # nothing written
    r = _cli("run", "ieee33-ev-none", "--out", str(out), "--seed", "2", "--overwrite", *SHORT)
    assert r.exit_code == 0, r.output
    assert not (out / "notes.txt").exists()
    assert json.loads((out / "summary.json").read_text())["seed"] == 2
    assert incomplete_reason(out) is None


def test_held_out_refuses_a_concurrent_writer(tmp_path):
    out = tmp_path / "r"
    with folder_lock(out):
        for extra in ([], ["--overwrite"]):
            r = _cli("run", "ieee33-ev-none", "--out", str(out), *SHORT, *extra)
            assert r.exit_code == 2
            line = _one_line(r.stderr)
            assert str(out) in line and f"process {os.getpid()}" in line
            assert os.listdir(out) == [LOCK_FILE]  # nothing written
        with pytest.raises(ClusterSimError, match=f"process {os.getpid()} is writing it"):
            run_scenario(_scenario(), out)
    assert os.listdir(out) == []


def test_a_run_refused_by_its_scenario_leaves_no_folder(tmp_path):
    sc = load_scenario("ieee33-ev-none", overrides=["run.duration_h=0.001"])
    with pytest.raises(ClusterSimError, match="shorter than one plant step"):
        run_scenario(sc, tmp_path / "x")
    assert not (tmp_path / "x").exists()  # the same command can be given again


def test_compare_folder_is_claimed_and_marked(tmp_path):
    out = tmp_path / "cmp"
    args = ["compare", "ieee33-ev-none", "ieee33-ev-local", "--out", str(out), *SHORT]
    r = _cli(*args)
    assert r.exit_code == 0, r.output
    assert incomplete_reason(out) is None
    for label in ("ieee33-ev-none", "ieee33-ev-local"):
        assert incomplete_reason(out / "runs" / label) is None
    marker = read_marker(out)
    assert marker is not None and not any(f.startswith("runs/") for f in marker["files"])
    before = _snapshot(out)
    r = _cli(*args)
    assert r.exit_code == 2 and "--overwrite" in _one_line(r.stderr)
    assert _snapshot(out) == before
