"""Integrity of a results folder, piece by piece: an atomic write that fails names its file, the
folder lock, the complete marker and what reads it, and the claim of a folder (refusal,
overwrite, failure, interruption) without running a scenario."""

from __future__ import annotations

import errno
import json
import os
from contextlib import contextmanager
from pathlib import Path

import pytest

from clustersim.errors import ClusterSimError
from clustersim.fileio import (
    COMPLETE_FILE,
    LOCK_FILE,
    FolderBusy,
    atomic_write,
    folder_lock,
    incomplete_reason,
    lock_holder,
    read_marker,
    write_marker,
    write_text,
)
from clustersim.results.report import completion_warning
from clustersim.runner import INTERRUPTED, mark_incomplete, results_folder

ENOSPC = f"[Errno 28] {os.strerror(errno.ENOSPC)}"


def _files(folder: Path) -> dict[str, int]:
    """Every entry under ``folder`` (hidden ones included) with its mtime in ns."""
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*")}


# ------------------------------------------------------------------------ atomic writes


def test_a_full_disk_names_the_file_being_written(tmp_path):
    target = tmp_path / "timeseries.parquet"
    with pytest.raises(OSError) as info, atomic_write(target, "wb") as fh:
        fh.write(b"PAR1")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # write(2) names no file
    assert str(info.value) == f"{ENOSPC}: '{target}'"
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert os.listdir(tmp_path) == []  # no target, no temporary file


def test_an_error_naming_another_file_is_kept(tmp_path):
    other = tmp_path / "elsewhere.txt"
    with pytest.raises(FileNotFoundError) as info, atomic_write(tmp_path / "a.txt") as fh:
        fh.write(other.read_text())
    assert info.value.filename == str(other)


# --------------------------------------------------------------------------------- lock


def test_a_held_lock_refuses_a_second_writer_naming_folder_and_pid(tmp_path):
    folder = tmp_path / "run"
    assert lock_holder(folder) is None
    with folder_lock(folder):
        assert (folder / LOCK_FILE).read_text().strip() == str(os.getpid())
        busy = lock_holder(folder)
        assert busy is not None and busy.pid == os.getpid()
        with pytest.raises(FolderBusy) as info, folder_lock(folder):
            pass
        assert info.value.pid == os.getpid() and str(folder) in str(info.value)
        assert f"process {os.getpid()}" in str(info.value)
    assert not (folder / LOCK_FILE).exists() and lock_holder(folder) is None
    with folder_lock(folder):  # free again
        pass


# ------------------------------------------------------------------------------- marker


def test_marker_states_and_their_one_line_reasons(tmp_path):
    assert "no complete.json" in str(incomplete_reason(tmp_path))
    write_marker(tmp_path, complete=False, reason="running")
    started = read_marker(tmp_path)["started"]  # type: ignore[index]
    assert "not finished" in str(incomplete_reason(tmp_path))
    assert str(os.getpid()) in str(incomplete_reason(tmp_path))
    write_marker(tmp_path, complete=False, reason="OSError: disk\nfull")
    assert incomplete_reason(tmp_path) == "OSError: disk full"
    write_text(tmp_path / "a.txt", "a")
    write_marker(tmp_path, complete=True, files=["a.txt"])
    doc = read_marker(tmp_path)
    assert doc is not None and doc["complete"] is True and doc["started"] == started
    assert incomplete_reason(tmp_path) is None
    (tmp_path / "a.txt").unlink()
    assert "missing: a.txt" in str(incomplete_reason(tmp_path))
    (tmp_path / COMPLETE_FILE).write_text("{")
    assert "unreadable" in str(incomplete_reason(tmp_path))


def test_report_warning_spares_only_the_writer_itself(tmp_path):
    write_marker(tmp_path, complete=False, reason="running")
    assert completion_warning(tmp_path) is None  # this process is writing it
    doc = json.loads((tmp_path / COMPLETE_FILE).read_text())
    (tmp_path / COMPLETE_FILE).write_text(json.dumps({**doc, "pid": os.getpid() + 1}))
    warning = completion_warning(tmp_path)
    assert warning is not None and warning.startswith("incomplete results folder: not finished")


# ------------------------------------------------------------------------ the claim


def test_complete_marker_is_the_first_and_the_last_write(tmp_path, monkeypatch):
    order: list[tuple[str, bool | None]] = []
    replace = os.replace

    def recording(src, dst, *args, **kwargs):
        replace(src, dst, *args, **kwargs)
        doc = read_marker(Path(dst).parent) if Path(dst).name == COMPLETE_FILE else None
        order.append((Path(dst).name, None if doc is None else doc["complete"]))

    monkeypatch.setattr(os, "replace", recording)
    out = tmp_path / "r"
    with results_folder(out, required=("a.txt", "report.html")):
        write_text(out / "a.txt", "a")
        write_text(out / "report.html", "<!DOCTYPE html>")
    assert order == [
        (COMPLETE_FILE, False),
        ("a.txt", None),
        ("report.html", None),
        (COMPLETE_FILE, True),
    ]
    assert read_marker(out)["files"] == ["a.txt"]  # type: ignore[index]
    assert not (out / LOCK_FILE).exists()


def test_a_missing_required_file_is_no_complete_folder(tmp_path):
    out = tmp_path / "r"
    with pytest.raises(ClusterSimError, match=r"summary\.json missing"):
        with results_folder(out, required=("a.txt", "summary.json")):
            write_text(out / "a.txt", "a")
    assert "summary.json missing" in str(incomplete_reason(out))


def test_a_failure_records_its_first_line_and_ctrl_c_is_interrupted(tmp_path):
    out = tmp_path / "r"
    with pytest.raises(RuntimeError), results_folder(out):
        write_text(out / "a.txt", "a")
        raise RuntimeError("solver broke\ntraceback lines")
    assert incomplete_reason(out) == "RuntimeError: solver broke"
    with pytest.raises(KeyboardInterrupt), results_folder(out, overwrite=True):
        write_text(out / "a.txt", "a")
        raise KeyboardInterrupt
    assert incomplete_reason(out) == INTERRUPTED


def test_a_failure_before_any_result_leaves_no_folder(tmp_path):
    out = tmp_path / "r"
    with pytest.raises(ValueError), results_folder(out):
        raise ValueError("bad scenario")
    assert not out.exists()
    out.mkdir()
    with pytest.raises(ValueError), results_folder(out):
        raise ValueError("bad scenario")
    assert out.is_dir() and os.listdir(out) == []  # as found: empty


def test_mark_incomplete_api(tmp_path):
    out = tmp_path / "r"
    assert mark_incomplete(out) is False and not out.exists()  # creates nothing
    with results_folder(out):
        write_text(out / "a.txt", "a")
        assert mark_incomplete(out, "interrupted") is True
        assert incomplete_reason(out) == "interrupted"
    assert incomplete_reason(out) is None
    assert mark_incomplete(out) is False and incomplete_reason(out) is None  # complete stays


def test_non_empty_folder_refused_without_writing(tmp_path):
    out = tmp_path / "r"
    with results_folder(out):
        write_text(out / "a.txt", "a")
    before = _files(out)
    with pytest.raises(ClusterSimError, match=r"not empty.*complete results folder.*--overwrite"):
        with results_folder(out):
            pytest.fail("the block must not run")
    assert _files(out) == before
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("x")
    with pytest.raises(ClusterSimError, match=r"thesis\.tex"), results_folder(foreign):
        pytest.fail("the block must not run")
    with pytest.raises(ClusterSimError, match="not a results folder"):
        with results_folder(foreign, overwrite=True):
            pytest.fail("the block must not run")
    assert os.listdir(foreign) == ["thesis.tex"]


def test_held_folder_refused_with_the_holder_pid(tmp_path):
    out = tmp_path / "r"
    with folder_lock(out):
        for overwrite in (False, True):
            with pytest.raises(ClusterSimError, match=f"process {os.getpid()} is writing it"):
                with results_folder(out, overwrite=overwrite):
                    pytest.fail("the block must not run")
        assert os.listdir(out) == [LOCK_FILE]
        (out / "summary.json").write_text("{}")  # non-empty and held: still named as held
        with pytest.raises(ClusterSimError, match=f"process {os.getpid()}"):
            with results_folder(out):
                pytest.fail("the block must not run")


def test_overwrite_removes_every_marker_first(tmp_path, monkeypatch):
    """A replacement that fails half-way leaves no marker saying complete."""
    out = tmp_path / "exp"
    with results_folder(out):
        with results_folder(out / "runs" / "a"):
            write_text(out / "runs" / "a" / "summary.json", "{}")
        write_text(out / "compare.json", "{}")
    assert incomplete_reason(out) is None and incomplete_reason(out / "runs" / "a") is None
    import clustersim.runner as runner

    def broken(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(runner.shutil, "rmtree", broken)
    with pytest.raises(PermissionError), results_folder(out, overwrite=True):
        pytest.fail("the block must not run")
    assert not list(out.rglob(COMPLETE_FILE))
    assert incomplete_reason(out) is not None and incomplete_reason(out / "runs" / "a") is not None
    monkeypatch.undo()
    with results_folder(out, overwrite=True):
        write_text(out / "b.txt", "b")
    assert sorted(os.listdir(out)) == ["b.txt", COMPLETE_FILE]
    assert read_marker(out)["files"] == ["b.txt"]  # type: ignore[index]


def test_a_writer_that_came_in_between_is_seen_under_the_lock(tmp_path, monkeypatch):
    """The emptiness check is made again once the lock is held, and then names no holder."""
    import clustersim.runner as runner

    real = runner.folder_lock

    @contextmanager
    def late_writer(folder):
        with real(folder):
            write_text(folder / "summary.json", "{}")  # another run got there first
            yield folder

    monkeypatch.setattr(runner, "folder_lock", late_writer)
    out = tmp_path / "r"
    with pytest.raises(ClusterSimError, match="not empty") as info, results_folder(out):
        pytest.fail("the block must not run")
    assert "is writing it" not in str(info.value)
    assert os.listdir(out) == ["summary.json"]


def test_report_of_a_folder_that_failed_before_its_summary_says_why(tmp_path):
    from clustersim.results.report import detect_kind

    write_text(tmp_path / "partition.json", "{}")
    write_marker(tmp_path, complete=False, reason="PowerFlowError: step 3: diverged")
    with pytest.raises(ClusterSimError, match=r"incomplete results folder.*step 3: diverged"):
        detect_kind(tmp_path)
