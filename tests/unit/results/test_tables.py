"""Results tables and the one atomic writer."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from clustersim.fileio import atomic_write, safe_label, write_json
from clustersim.results.tables import fmt_cell, markdown_table


def test_markdown_table_aligns_and_escapes():
    """Numeric columns are right-aligned, pipes escaped, NaN shown as an en dash."""
    frame = pd.DataFrame({"name": ["a|b", "c"], "value": [1.23456, math.nan]})
    lines = markdown_table(frame).splitlines()
    assert lines[0] == "| name | value |"
    assert lines[1] == "|---|---:|"
    assert lines[2] == "| a\\|b | 1.235 |"
    assert lines[3] == "| c | – |"


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "–"), (True, "yes"), (0.000123456, "0.0001235"), (12, "12"), ("x\ny", "x y")],
)
def test_fmt_cell(value, text):
    """A cell is formatted for people: 4 significant digits, yes/no, one line."""
    assert fmt_cell(value) == text


def test_atomic_write_leaves_old_file_on_error(tmp_path):
    """An exception while writing leaves the previous file and no temporary file behind."""
    path = tmp_path / "out.json"
    write_json(path, {"a": 1})
    with pytest.raises(RuntimeError), atomic_write(path) as fh:
        fh.write("half")
        raise RuntimeError("killed")
    assert path.read_text() == '{\n  "a": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


def test_safe_label():
    """Labels keep [A-Za-z0-9_.-], collapse the rest to '-', and are never empty."""
    assert safe_label("ieee33 ev/clustered") == "ieee33-ev-clustered"
    assert safe_label("///") == "run"
    assert len(safe_label("x" * 200, limit=64)) == 64
