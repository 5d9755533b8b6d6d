"""The command line's own output rules."""

from __future__ import annotations

import gc
import logging
import signal
import warnings

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


def test_an_interrupt_silences_the_coroutine_it_cut_off():
    """Ctrl-C raises KeyboardInterrupt wherever the main thread is; a coroutine created just
    before (an agent's next interval) is then collected unawaited, which must not add a
    RuntimeWarning to the command's one line."""

    async def step() -> None:
        return None

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        interrupts = cli._Interrupts()
        interrupts._saved[signal.SIGINT] = signal.SIG_DFL  # not callable: the handler raises
        try:
            interrupts._on_signal(signal.SIGINT, None)
        except KeyboardInterrupt:
            pass
        finally:
            logging.disable(logging.NOTSET)  # the handler turned logging off for the command
        coro = step()
        del coro
        gc.collect()
    assert not [w for w in seen if "never awaited" in str(w.message)]
    assert interrupts.exit_code == 130


def test_version_prints_the_package_version():
    from typer.testing import CliRunner

    from clustersim import __version__

    r = CliRunner().invoke(cli.app, ["--version"])
    assert r.exit_code == 0 and r.stdout.strip() == f"clustersim {__version__}"


def test_help_shows_flags_as_flags_and_fits_80_columns():
    """A boolean option reads ``--quick``, not ``--quick <bool>``; help lines fit a terminal."""
    from typer.testing import CliRunner

    for command in ("run", "reproduce", "sweep", "compare", "partition"):
        r = CliRunner().invoke(cli.app, [command, "--help"], terminal_width=80)
        assert r.exit_code == 0, r.output
        assert "<bool>" not in r.output and "bool" not in r.output, r.output
        assert max(len(line) for line in r.output.splitlines()) <= 80, r.output
    r = CliRunner().invoke(cli.app, ["reproduce", "--help"], terminal_width=80)
    assert any(line.split()[:1] == ["--quick"] for line in r.output.splitlines())


def test_listing_commands_do_not_load_the_simulation_stack():
    """``cases``, ``presets`` and ``scenarios`` answer from :mod:`clustersim.catalog`: a fresh
    interpreter that runs them has imported neither pandapower nor numpy (what made them take
    seconds)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from clustersim.cli import app\n"
        "for c in ('cases', 'presets', 'scenarios'):\n"
        "    r = CliRunner().invoke(app, [c])\n"
        "    assert r.exit_code == 0, r.output\n"
        "    assert 'ieee33' in r.output, r.output\n"
        "print(sorted(m for m in ('pandapower', 'numpy', 'pandas', 'scipy') if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_the_catalog_agrees_with_what_it_lists():
    """Case names and preset summaries of the catalog are those of the loaders and of the
    validated presets."""
    from clustersim import catalog
    from clustersim.sim.cases import CASES
    from clustersim.sim.resources import load_preset

    assert list(CASES) == list(catalog.CASE_DESCRIPTIONS)
    for name in catalog.preset_names():
        rs = load_preset(name)
        assert catalog.preset_summary(name) == (rs.case, rs.counts())
