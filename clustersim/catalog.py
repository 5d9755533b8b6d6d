"""What clustersim has built in, read without the simulation stack: the grid cases' names and
descriptions, the device kinds, the shipped resource presets and the built-in scenario files.

It imports nothing of ours and nothing heavy, so that the listing commands (``clustersim cases``,
``presets``, ``scenarios``) answer without loading pandapower; :mod:`clustersim.sim.cases`,
:mod:`clustersim.sim.resources` and :mod:`clustersim.scenario` build on these lists.
"""

from __future__ import annotations

import importlib.resources
import tomllib
from pathlib import Path
from typing import Any

__all__ = [
    "CASE_DESCRIPTIONS",
    "DEVICE_KINDS",
    "builtin_scenarios",
    "preset_names",
    "preset_summary",
    "presets_dir",
    "scenario_description",
    "scenarios_dir",
]

CASE_DESCRIPTIONS: dict[str, str] = {
    "ieee33": "IEEE 33-bus (Baran & Wu), pandapower case33bw, 12.66 kV",
    "ieee51": "51-bus radial (Gampa & Das 2015), MATPOWER case51ga, 11 kV",
    "ieee69": "IEEE 69-bus (Baran & Wu 1989), MATPOWER case69, 12.66 kV",
    "ieee123": "IEEE 123-node feeder, balanced single-phase equivalent, 4.16 kV, regulators as taps",
    "case1197": "1,197-bus feeder (Moses et al.): 23 kV, 22 LV networks behind 100 kVA "
    "transformers, MATPOWER case1197",
    "simbench-mv-rural": "SimBench 1-MV-rural--0-sw, 20 kV, open ring switches honoured",
    "simbench-mv-semiurb": "SimBench 1-MV-semiurb--0-sw, 20 kV, open ring switches honoured",
}
"""the built-in grid cases, in listing order (their loaders: :data:`clustersim.sim.cases.CASES`)"""

DEVICE_KINDS = (
    "pv",
    "wind",
    "dg",
    "ev",
    "exchange",
    "ess",
    "svc",
    "capacitor",
    "oltc",
    "regulator",
)
"""the device kinds of a resource set, each an array of tables (``[[pv]]`` …) in a preset"""


def presets_dir() -> Path:
    """The folder of the shipped resource presets."""
    return Path(str(importlib.resources.files("clustersim.sim.data").joinpath("presets")))


def preset_names() -> list[str]:
    """Names of the shipped resource presets."""
    return sorted(p.stem for p in presets_dir().glob("*.toml"))


def preset_summary(name: str) -> tuple[str, dict[str, int]]:
    """A shipped preset's case and its number of devices per kind (kinds it has, in
    :data:`DEVICE_KINDS` order), read from the file without validating it."""
    data: dict[str, Any] = tomllib.loads((presets_dir() / f"{name}.toml").read_text())
    counts = {k: len(data[k]) for k in DEVICE_KINDS if isinstance(data.get(k), list) and data[k]}
    return str(data.get("case", "")), counts


def scenarios_dir() -> Path:
    """The folder of the built-in scenario files."""
    return Path(str(importlib.resources.files("clustersim.scenarios")))


def builtin_scenarios() -> list[str]:
    """Names of the built-in scenarios."""
    return sorted(p.stem for p in scenarios_dir().glob("*.toml"))


def scenario_description(name: str) -> str:
    """The ``description`` of a built-in scenario file ("" without one)."""
    data = tomllib.loads((scenarios_dir() / f"{name}.toml").read_text())
    return str(data.get("description", ""))
