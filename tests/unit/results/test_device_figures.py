"""The device-trajectory figure's panels, from a timeseries table and the scenario's devices."""

from __future__ import annotations

import numpy as np
import pandas as pd

from clustersim.results.figures import _device_panels, device_trajectories, voltage_envelope


def _timeseries() -> pd.DataFrame:
    t = np.arange(4) * 900.0
    return pd.DataFrame(
        {
            "time_s": t,
            "vm_pu.1": [1.0, 0.99, 0.97, 0.96],
            "vm_pu.2": [1.0, 1.01, 0.95, 0.94],
            "OLTC.tap_pos": [0, 1, 1, 2],
            "CB1.step": [0, 0, 1, 1],
            "SVC1.q_mvar": [0.0, 0.1, 0.2, 0.2],
            "SVC1.p_mw": [0.0] * 4,
            "ESS1.p_mw": [0.1, 0.0, -0.1, -0.1],
            "ESS1.energy_mwh": [0.5, 0.6, 0.5, 0.4],
            "EV1.p_mw": [0.2, 0.3, 0.3, 0.1],
            "EC1.p_mw": [0.1, 0.1, 0.2, 0.2],
            "EC1:battery.p_mw": [0.0, 0.05, 0.0, -0.05],
            "EC1:battery.energy_mwh": [0.2, 0.25, 0.25, 0.2],
        }
    )


def test_panels_group_devices_by_quantity():
    kinds = {"OLTC": "oltc", "CB1": "capacitor", "SVC1": "svc", "ESS1": "ess", "EV1": "ev"}
    kinds["EC1"] = "exchange"
    panels = dict(_device_panels(_timeseries(), kinds, {"ESS1": 1.0, "EC1:battery": 0.5}))
    assert list(panels) == [
        "tap position",
        "capacitor steps",
        "reactive power Mvar",
        "state of charge %",
        "storage power MW (charging > 0)",
        "EV / exchange demand MW",
    ]
    assert list(panels["state of charge %"]["ESS1"]) == [50.0, 60.0, 50.0, 40.0]
    assert list(panels["state of charge %"]["EC1:battery"]) == [40.0, 50.0, 50.0, 40.0]
    assert list(panels["storage power MW (charging > 0)"].columns) == ["ESS1", "EC1:battery"]
    assert list(panels["EV / exchange demand MW"].columns) == ["EV1", "EC1"]  # not the battery
    # without the capacities (a scenario that cannot be read back) the stored energy is shown
    assert "energy MWh" in dict(_device_panels(_timeseries(), kinds, {}))


def test_figures_are_written(tmp_path):
    ts = _timeseries()
    assert voltage_envelope(tmp_path / "env.png", ts).read_bytes()[:4] == b"\x89PNG"
    got = device_trajectories(tmp_path / "dev.png", ts, kinds={"EV1": "ev"})
    assert got is not None and got.read_bytes()[:4] == b"\x89PNG"
    bare = ts[["time_s", "vm_pu.1"]]
    assert device_trajectories(tmp_path / "none.png", bare) is None  # no devices, no figure
