"""Files the project writes: every file goes to a temporary name beside its target and is moved
into place with ``os.replace``, so a killed process leaves each file complete or absent; an
``OSError`` of a write names the file it was writing
(``[Errno 28] No space left on device: '<path>'``).

A folder being written is held with :func:`folder_lock` (an exclusive ``flock`` on
``<folder>/.lock``, which records the holder's pid and is removed on release), and a results
folder ends with :data:`COMPLETE_FILE`, written last (:func:`write_marker`,
:func:`incomplete_reason`; when and why it is written: :mod:`clustersim.runner`).

A leaf module (standard library and numpy only) that every folder may import.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "COMPLETE_FILE",
    "LOCK_FILE",
    "RUNNING",
    "FolderBusy",
    "atomic_write",
    "folder_lock",
    "incomplete_reason",
    "json_default",
    "lock_holder",
    "read_marker",
    "safe_label",
    "write_json",
    "write_marker",
    "write_text",
]

LOCK_FILE = ".lock"
"""the lock of a folder being written (:func:`folder_lock`): its holder's pid, removed on release"""
COMPLETE_FILE = "complete.json"
"""a results folder's completion marker: ``{"complete": false, "reason": ...}`` while the folder
is written and after a failure, ``{"complete": true, "files": [...]}`` as its last write"""
RUNNING = "running"
"""the marker's reason while its writer (``pid``) is still at work, or was killed"""


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc`` as an ``OSError`` naming ``path`` (a failed ``write()`` names no file)."""
    if exc.errno is None:
        return OSError(f"{exc}: {str(path)!r}")
    return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path))


@contextmanager
def atomic_write(
    path: Path, mode: str = "w", *, perm: int = 0o644, encoding: str | None = None
) -> Iterator[Any]:
    """Open a temporary file beside ``path`` (created readable by its owner only), yield it, then
    give it permissions ``perm`` and move it onto ``path``. On any exception the temporary file
    is removed and ``path`` is left as it was; an ``OSError`` that names no file, or only the
    temporary one (a full disk, a failed flush), is raised again naming ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    except OSError as exc:
        raise _naming(exc, path) from exc
    if encoding is None and "b" not in mode:
        encoding = "utf-8"
    try:
        with os.fdopen(fd, mode, encoding=encoding) as fh:
            yield fh
        os.chmod(tmp, perm)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename in (None, tmp):
            raise _naming(exc, path) from exc
        raise


def write_text(path: Path, text: str, *, perm: int = 0o644) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    with atomic_write(path, perm=perm) as fh:
        fh.write(text)
    return Path(path)


def json_default(v: Any) -> Any:
    """``json`` encoder fallback: numpy scalars as Python numbers, paths as POSIX strings."""
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, Path):
        return v.as_posix()
    raise TypeError(f"not JSON serializable: {type(v).__name__}")


def write_json(path: Path, doc: Any) -> Path:
    """Write ``doc`` as indented JSON (numpy scalars and paths allowed) to ``path`` atomically."""
    with atomic_write(path) as fh:
        json.dump(doc, fh, indent=2, default=json_default)
        fh.write("\n")
    return Path(path)


def safe_label(text: str, limit: int = 80) -> str:
    """``text`` as a folder name or MQTT topic level: runs of characters outside
    ``[A-Za-z0-9_.-]`` become ``-``, leading/trailing ``-``/``.`` are stripped (``run`` when
    nothing is left), at most ``limit`` characters."""
    out = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "run"
    return out[:limit]


# ------------------------------------------------------------------------------ folder lock


def _pid_in(fd: int) -> int | None:
    """The pid a lock file holds (``None``: not written yet, or not a number)."""
    try:
        return int(os.pread(fd, 32, 0).decode("ascii", "replace").strip())
    except (OSError, ValueError):
        return None


class FolderBusy(BlockingIOError):
    """Another process holds the folder's lock: ``folder`` and its ``pid`` (``None``: not
    recorded yet)."""

    def __init__(self, folder: Path, pid: int | None) -> None:
        who = f"process {pid}" if pid is not None else "another process"
        super().__init__(
            errno.EWOULDBLOCK, f"being written by {who} (it holds {LOCK_FILE})", str(folder)
        )
        self.folder = Path(folder)
        self.pid = pid


@contextmanager
def folder_lock(folder: Path) -> Iterator[Path]:
    """Hold ``folder`` (created if absent) for writing: an exclusive, non-blocking ``flock`` on
    ``folder/.lock``, which then holds this process's pid; yields ``folder``. The lock file is
    removed on release. Raises :class:`FolderBusy` (a ``BlockingIOError`` naming the folder and
    the holder's pid) when another process, or another open of the file, holds it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _pid_in(fd)
            os.close(fd)
            raise FolderBusy(folder, pid) from None
        except BaseException:
            os.close(fd)
            raise
        try:  # the file locked is still the one at the path (a releasing holder unlinks it)
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield folder
    finally:
        with suppress(OSError):
            path.unlink()
        os.close(fd)


def lock_holder(folder: Path) -> FolderBusy | None:
    """The :class:`FolderBusy` a writer of ``folder`` would get now (naming the holder's pid),
    ``None`` when nobody holds its lock. Creates nothing."""
    try:
        fd = os.open(Path(folder) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return FolderBusy(Path(folder), _pid_in(fd))
    except OSError:
        return None
    finally:
        os.close(fd)
    return None


# --------------------------------------------------------------------------- complete marker


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def read_marker(folder: Path) -> dict[str, Any] | None:
    """``folder``'s :data:`COMPLETE_FILE` (``None``: absent or unreadable)."""
    try:
        doc = json.loads((Path(folder) / COMPLETE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def write_marker(
    folder: Path, *, complete: bool, reason: str | None = None, files: list[str] | None = None
) -> Path:
    """Write ``folder``'s :data:`COMPLETE_FILE` atomically: ``complete``, ``reason`` (one line;
    only when incomplete), ``pid`` of the writer, ``started`` (kept from the marker it replaces),
    ``updated`` (UTC) and, when complete, ``files`` (the folder's files, relative)."""
    old = read_marker(folder) or {}
    doc: dict[str, Any] = {"complete": complete}
    if not complete:
        doc["reason"] = " ".join((reason or "unknown").split())[:500]
    doc.update(pid=os.getpid(), started=old.get("started") or _now(), updated=_now())
    if complete:
        doc["files"] = sorted(files or [])
    return write_json(Path(folder) / COMPLETE_FILE, doc)


def incomplete_reason(folder: Path) -> str | None:
    """``None`` when ``folder``'s marker says complete and every file it lists is there; else
    why not, in one line."""
    doc = read_marker(folder)
    if doc is None:
        if (Path(folder) / COMPLETE_FILE).exists():
            return f"{COMPLETE_FILE} is unreadable"
        return f"no {COMPLETE_FILE}: its writer was killed, or an older version wrote it"
    if doc.get("complete") is not True:
        reason = str(doc.get("reason") or "unknown")
        if reason == RUNNING:
            return (
                f"not finished: process {doc.get('pid', '?')} started writing it at "
                f"{doc.get('started', '?')} and is still at work or was killed"
            )
        return reason
    files = doc.get("files")
    listed = files if isinstance(files, list) else []
    missing = [str(f) for f in listed if not (Path(folder) / str(f)).is_file()]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        return f"{len(missing)} file(s) it was completed with are missing: " + (
            ", ".join(missing[:5]) + more
        )
    return None
