"""The command line's own output rules."""

from __future__ import annotations

from clustersim import cli


def test_faults_are_printed_as_a_warning_block(capsys):
    """The run's faults reach the console as one warning line each, not only as a table row."""
    faults = [
        {"node": "plant", "kind": "watchdog", "detail": "no setpoint from C3", "step": 4},
        {"node": "plant", "kind": "fallback_on", "detail": "C3 silent", "step": 5},
    ]
    cli._print_summary({"scenario": "x", "faults": faults})
    err = capsys.readouterr().err
    assert "2 fault(s)" in err
    assert "plant: watchdog: no setpoint from C3 (control step 4)" in err
    assert "plant: fallback_on: C3 silent (control step 5)" in err
