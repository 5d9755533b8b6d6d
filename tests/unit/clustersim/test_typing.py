"""The type checker sees across the folders: a cross-folder import resolves to the real class,
never to ``Any`` (the folders are symlinked into the package, so no import hook hides them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PROBE = """\
from clustersim.agents.control import Controller
from clustersim.broker.envelope import MeasMsg
from clustersim.partition.core import Partition
from clustersim.runner import run_scenario
from clustersim.sim.plant import Plant

reveal_type(Plant)
reveal_type(Controller)
reveal_type(MeasMsg)
reveal_type(Partition)
reveal_type(run_scenario)
"""


def test_cross_folder_imports_are_typed(tmp_path):
    """mypy, under the project's own settings, reveals each imported class, not ``Any``."""
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(tmp_path / "cache"),
            str(probe),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    revealed = [line for line in out.stdout.splitlines() if "Revealed type" in line]
    assert len(revealed) == 5, out.stdout + out.stderr
    for line, name in zip(
        revealed,
        [
            "clustersim.sim.plant.Plant",
            "clustersim.agents.control.Controller",
            "clustersim.broker.envelope.MeasMsg",
            "clustersim.partition.core.Partition",
            "clustersim.runner.RunResult",
        ],
        strict=True,
    ):
        assert name in line, line
        assert '"Any"' not in line, line
