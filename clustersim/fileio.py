"""Files the project writes: every file goes to a temporary name beside its target and is moved
into place with ``os.replace``, so a killed process leaves each file complete or absent.

A leaf module (standard library and numpy only) that every folder may import.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["atomic_write", "json_default", "safe_label", "write_json", "write_text"]


@contextmanager
def atomic_write(
    path: Path, mode: str = "w", *, perm: int = 0o644, encoding: str | None = None
) -> Iterator[Any]:
    """Open a temporary file beside ``path`` (created readable by its owner only), yield it, then
    give it permissions ``perm`` and move it onto ``path``. On any exception the temporary file
    is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    if encoding is None and "b" not in mode:
        encoding = "utf-8"
    try:
        with os.fdopen(fd, mode, encoding=encoding) as fh:
            yield fh
        os.chmod(tmp, perm)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
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
