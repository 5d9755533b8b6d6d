"""Command line: ``clustersim run | cases | case-info | presets | scenarios | partition |
partition-compare | broker | acl | plant | agent | compare | sweep | reproduce | report``.

Errors a user can cause (a bad scenario, an unknown case) end in one line on stderr and exit
code 2, never a traceback (:func:`command`, the one error rule of the command line). Ctrl-C
(SIGINT) and SIGTERM stop a command within about 2 s with one line, ``interrupted``, and exit
code 130 (SIGINT) or 143 (SIGTERM, 128 + 15 as shells report a process it ended); a run's
agents and embedded broker are stopped with it.

Each command imports what it runs inside its function: pandapower and simbench take 2–3 s to
import, which ``clustersim --help`` and the commands that do not need them should not pay.
"""

from __future__ import annotations

import functools
import json
import logging
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType, TracebackType
from typing import Annotated, Any, NoReturn, ParamSpec

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from clustersim.errors import ClusterSimError

app = typer.Typer(
    name="clustersim",
    help="Co-simulator for distributed cluster volt/var control of distribution networks.",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
    # plain (click) help: flags read as flags, and it fits 80 columns
    rich_markup_mode=None,
)
# piped output (files, CI logs) gets a wide console instead of rich's 80-column default
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)
P = ParamSpec("P")
DEFAULT_SCENARIO = "ieee33-ev-clustered"
"""the scenario ``run`` and ``check`` use without one (:data:`clustersim.scenario.DEFAULT_SCENARIO`)"""
_KeysOpt = Annotated[
    Path | None,
    typer.Option("--keys", help="keys.toml of `clustersim acl` (default: CLUSTERSIM_KEYS_FILE)"),
]
_QuietOpt = Annotated[
    bool,
    typer.Option(
        "--quiet", "-q", help="no progress bar and no tables: warnings and the results path only"
    ),
]
_OverwriteOpt = Annotated[
    bool,
    typer.Option(
        "--overwrite", help="replace the contents of --out when it is a non-empty results folder"
    ),
]


def _set_option(help_: str) -> Any:
    """A repeatable ``--set TABLE.KEY=VALUE`` scenario override."""
    return typer.Option("--set", metavar="TABLE.KEY=VALUE", help=help_)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        console.print(f"clustersim {version('clustersim')}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    """Co-simulator for distributed cluster volt/var control of distribution networks."""


def _fail(exc: Exception) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def command(name: str | None = None) -> Callable[[Callable[P, None]], Callable[P, None]]:
    """Register a CLI command with the one error rule of the command line: a user's error
    (:class:`~clustersim.errors.ClusterSimError`; ``OSError``: a folder not writable, a disk
    full, a missing file, each naming its path) ends in one line on stderr (the message as
    text, never read as markup) and exit code 2; Ctrl-C ends in one line (naming the folder of
    the finished runs, for experiments) and exit code 130, SIGTERM the same way
    (:class:`_Interrupts`) with exit code 143."""

    def register(fn: Callable[P, None]) -> Callable[P, None]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
            term = _Interrupts()
            try:
                with term:
                    fn(*args, **kwargs)
            except (ClusterSimError, OSError) as exc:
                _fail(exc)
            except _Interrupted as exc:
                err_console.print(
                    f"[bold red]interrupted[/]{term.by}: the finished runs are in {exc.out}"
                )
                raise typer.Exit(code=term.exit_code) from None
            except KeyboardInterrupt:
                err_console.print(f"[bold red]interrupted[/]{term.by}")
                raise typer.Exit(code=term.exit_code) from None

        app.command(name)(wrapper)
        return wrapper

    return register


class _Interrupts:
    """While active (in the main thread; elsewhere nothing changes): Ctrl-C (SIGINT) and
    SIGTERM raise ``KeyboardInterrupt`` where the main thread is, through the SIGINT handler in
    force (Python's), or directly for SIGTERM when SIGINT is ignored (a process started in the
    background; SIGINT then stays ignored). From the first of them on, logging is off until the
    command ends: the command's one line says what happened, and the connections, processes and
    broker it stops on purpose are no warnings; nor is a coroutine the interrupt cut off before
    its first step. :attr:`exit_code` and :attr:`by` tell the two signals apart."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._saved: dict[int, Any] = {}
        self._logging: int | None = None

    @property
    def exit_code(self) -> int:
        """130 after Ctrl-C (128 + SIGINT), 143 after SIGTERM (128 + SIGTERM)."""
        return 128 + (self.signum or signal.SIGINT)

    @property
    def by(self) -> str:
        """What follows "interrupted" on its line: which signal, when it was SIGTERM."""
        return " (SIGTERM)" if self.signum == signal.SIGTERM else ""

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
            self._logging = logging.root.manager.disable
            logging.disable(logging.CRITICAL)
            # KeyboardInterrupt lands wherever the main thread is, possibly between creating an
            # agent's coroutine and its first step; that coroutine is collected unawaited, when
            # the loop's tasks are, possibly after the command returns: not restored
            warnings.filterwarnings(
                "ignore", message=r"coroutine .* was never awaited", category=RuntimeWarning
            )
        handler = self._saved.get(signal.SIGINT, signal.getsignal(signal.SIGINT))
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                old = signal.getsignal(sig)
                if sig == signal.SIGINT and not callable(old):
                    continue  # ignored (or not Python's): left as it is
                self._saved[sig] = old
                signal.signal(sig, self._on_signal)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for sig, old in self._saved.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
        self._saved.clear()
        if self._logging is not None:
            logging.disable(self._logging)
            self._logging = None


@command()
def run(
    scenario: Annotated[
        str, typer.Argument(help="scenario TOML path or built-in name")
    ] = DEFAULT_SCENARIO,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="results folder")] = None,
    seed: Annotated[int | None, typer.Option(help="seed (overrides run.seed)")] = None,
    set_: Annotated[
        list[str] | None,
        _set_option("override a scenario key (repeatable)"),
    ] = None,
    quiet: _QuietOpt = False,
    broker: Annotated[
        str | None,
        typer.Option(help="mqtt://[user:pass@]host:port (default: the scenario's, else embedded)"),
    ] = None,
    overwrite: _OverwriteOpt = False,
) -> None:
    """Run a scenario and write its results folder."""
    _run(
        scenario,
        out,
        seed,
        [*(set_ or []), *([f"comm.broker={broker}"] if broker else [])],
        quiet,
        overwrite=overwrite,
    )


def _run(
    scenario: str,
    out: Path | None,
    seed: int | None,
    overrides: list[str],
    quiet: bool,
    *,
    overwrite: bool = False,
) -> None:
    from clustersim.runner import run_scenario
    from clustersim.scenario import load_scenario

    sc = load_scenario(scenario, overrides=overrides, seed=seed)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("plant steps"),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        console=err_console,
        disable=quiet,
        transient=False,
    ) as bar:
        task = bar.add_task(sc.name or "run", total=None)
        result = run_scenario(
            sc,
            out,
            overwrite=overwrite,
            on_start=lambda n: bar.update(task, total=n),
            progress=lambda k: bar.update(task, completed=k),
            on_warning=lambda w: bar.console.print(
                f"[bold yellow]warning:[/] {escape(w)}", highlight=False
            ),
        )
    _print_summary(result.summary, quiet)
    console.print(f"results: [bold]{result.out_dir}[/]")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, dict):
        return ", ".join(f"{k} {_fmt(x)}" for k, x in v.items())
    return str(v)


KEY_KPIS = (
    "scenario",
    "mode",
    "coordination",
    "duration_h",
    "voltage_violation_bus_hours",
    "max_abs_voltage_deviation_pu",
    "mean_abs_voltage_deviation_pu",
    "min_vm_pu",
    "max_vm_pu",
    "energy_losses_mwh",
    "energy_cost",
    "switching_operations",
    "messages_sent",
    "messages_lost",
    "wall_time_s",
)
"""the summary.json keys the run's KPI table shows (the rest: summary.json)"""


def _print_summary(summary: dict[str, Any], quiet: bool = False) -> None:
    """The run's key KPIs (one narrow table, unless ``quiet``), then its faults (always)."""
    from clustersim.results.tables import HEADLINE_KPIS

    if not quiet:
        table = Table(title="KPIs (all: summary.json)", show_header=False)
        table.add_column("kpi")
        table.add_column("value", justify="right", max_width=40)
        for k in KEY_KPIS:
            if k in summary:
                table.add_row(HEADLINE_KPIS.get(k, k.replace("_", " ")), _fmt(summary[k]))
        console.print(table)
    _print_faults(summary.get("faults") or [])


def _print_faults(faults: Sequence[dict[str, Any]], most: int = 20) -> None:
    """A warning block on stderr: every fault of the run (the first ``most``), one per line."""
    if not faults:
        return
    err_console.print(f"[bold yellow]warning:[/] {len(faults)} fault(s) during the run:")
    for f in faults[:most]:
        step = f" (control step {f['step']})" if f.get("step") is not None else ""
        err_console.print(
            f"  {f.get('node')}: {f.get('kind')}: {f.get('detail')}{step}",
            highlight=False,
            soft_wrap=True,
        )
    if len(faults) > most:
        err_console.print(f"  ... and {len(faults) - most} more (summary.json, faults)")


def _print_list(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    table = Table(show_header=True)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    console.print(table)


@command()
def check(
    scenario: Annotated[
        str, typer.Argument(help="scenario TOML path or built-in name")
    ] = DEFAULT_SCENARIO,
    seed: Annotated[int | None, typer.Option(help="seed (overrides run.seed)")] = None,
    set_: Annotated[list[str] | None, _set_option("override a scenario key (repeatable)")] = None,
    toml: Annotated[bool, typer.Option("--toml", help="also print the resolved scenario")] = False,
) -> None:
    """Validate a scenario without running it: its settings, devices, partition and the devices
    of each cluster; warnings for a mode without devices to move. Exit 2 when a run would be
    refused."""
    from clustersim.agents.control import CLUSTER_MODES
    from clustersim.assemble.check import check_scenario
    from clustersim.scenario import load_scenario, resolved_dict

    sc = load_scenario(scenario, overrides=set_ or [], seed=seed)
    report = check_scenario(sc)
    if toml:
        import tomli_w

        console.print(tomli_w.dumps(resolved_dict(sc)), markup=False, highlight=False)
    run, ctl, comm = sc.run, sc.control, sc.comm
    coordination = f" ({ctl.coordination})" if ctl.mode in CLUSTER_MODES else ""
    broker = comm.broker or ("embedded broker" if comm.transport == "mqtt" else "")
    lines = [
        f"scenario {sc.name}: case {sc.case.name}, mode {ctl.mode}{coordination}",
        f"time: from {run.start_h:g} h for {run.duration_h:g} h, plant step {run.plant_step_s:g} "
        f"s, control interval {ctl.interval_s:g} s, seed {run.seed}",
        f"agents: {run.agents} over {comm.transport}" + (f" ({broker})" if broker else ""),
        f"devices: {_fmt(report.devices) or 'none'}",
        f"partition: {_fmt(report.partition)}",
    ]
    for line in lines:
        console.print(line, highlight=False, markup=False)
    if report.clusters:
        rows = [(n, str(b), _fmt(d) or "none") for n, (b, d) in report.clusters.items()]
        _print_list(("cluster", "buses", "devices"), rows)
    for w in report.warnings:
        err_console.print(f"[bold yellow]warning:[/] {escape(w)}", highlight=False)
    console.print("ok: a run of this scenario would start", highlight=False)


@command()
def init(
    path: Annotated[Path, typer.Argument(help="scenario file to write")] = Path("scenario.toml"),
    case: Annotated[str, typer.Option(help="grid case (its preset's devices if it has one)")] = (
        "ieee33"
    ),
    mode: Annotated[str, typer.Option(help="control mode")] = "clustered",
    force: Annotated[bool, typer.Option("--force", help="replace an existing file")] = False,
) -> None:
    """Write a commented starting scenario (the keys most often changed, with their defaults)."""
    from clustersim.catalog import preset_names, preset_summary
    from clustersim.fileio import atomic_write
    from clustersim.scenario import load_scenario, starter_toml

    if path.exists() and not force:
        raise ClusterSimError(f"{path}: exists (--force replaces it)")
    preset = next((p for p in preset_names() if preset_summary(p)[0] == case), "")
    values = {"case.name": case, "resources.preset": preset, "control.mode": mode}
    text = starter_toml(path.stem, values)
    with atomic_write(path) as fh:
        fh.write(text)
    try:
        load_scenario(str(path))
    except ClusterSimError:
        path.unlink()  # a case or mode that does not exist: no file left behind
        raise
    console.print(f"wrote {path} (case {case}, preset {preset or 'none'}, mode {mode})")


@command()
def cases() -> None:
    """List the built-in grid cases."""
    from clustersim.catalog import CASE_DESCRIPTIONS

    _print_list(("name", "description"), list(CASE_DESCRIPTIONS.items()))


@command("case-info")
def case_info(
    name: Annotated[str, typer.Argument(help="built-in case name or pandapower JSON path")],
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON object")] = False,
) -> None:
    """Describe a grid case at its base operating point."""
    from clustersim.sim.cases import describe_case

    info = describe_case(name)
    if as_json:
        sys.stdout.write(json.dumps(info) + "\n")
        return
    table = Table(title=name, show_header=False)
    for k, v in info.items():
        table.add_row(k, _fmt(v))
    console.print(table)


def _partition_context(case: str, seed: int):
    from clustersim.partition.context import context_for_case

    return context_for_case(case, profiles_seed=seed)


@command()
def partition(
    case: Annotated[
        str | None, typer.Argument(help="built-in case name or pandapower JSON path")
    ] = None,
    scenario: Annotated[
        str | None,
        typer.Option(
            "--scenario",
            "-s",
            help="instead of CASE: the partition a run of this scenario starts with (its "
            "[partition] table, seed, profiles and channel model)",
        ),
    ] = None,
    set_: Annotated[list[str] | None, _set_option("with --scenario: override a key")] = None,
    method: Annotated[str | None, typer.Option("--method", "-m", help="partition method")] = None,
    clusters: Annotated[
        int | None, typer.Option("--clusters", "-k", help="number of clusters [default: 5]")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="seed [default: 0; the scenario's]")] = None,
    min_size: Annotated[
        int | None, typer.Option("--min-size", help="minimum buses per cluster [default: 1]")
    ] = None,
    max_size: Annotated[
        int | None, typer.Option("--max-size", help="maximum buses per cluster")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON object")] = False,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="write partition.json and a figure here")
    ] = None,
) -> None:
    """Partition a case into clusters C1..Ck and pick their pilot buses."""
    from clustersim.results.partition import partition_doc, write_partition

    options = {
        "CASE": case,
        "--method": method,
        "--clusters": clusters,
        "--min-size": min_size,
        "--max-size": max_size,
    }
    if scenario is not None:
        given = [k for k, v in options.items() if v is not None]
        if given:
            raise ClusterSimError(
                f"--scenario takes its partition from the scenario: instead of {', '.join(given)} "
                "use --set partition.<key>=value"
            )
        p, ctx, title = _scenario_partition(scenario, set_ or [], seed)
    elif case is None:
        raise ClusterSimError("give a CASE or --scenario")
    else:
        from clustersim.partition.methods import run_partition

        ctx = _partition_context(case, seed or 0)
        p = run_partition(
            ctx,
            method or "hi",
            5 if clusters is None else clusters,
            seed=seed or 0,
            min_size=1 if min_size is None else min_size,
            max_size=max_size,
        )
        title = f"{case}: {p.method}, {p.k} clusters"
    doc = partition_doc(p, ctx)
    if out is not None:
        write_partition(p, ctx, out)
    if as_json:
        sys.stdout.write(json.dumps(doc) + "\n")
        return
    _print_partition(doc, title)
    if out is not None:
        console.print(f"written: [bold]{out}[/]")


def _scenario_partition(scenario: str, overrides: list[str], seed: int | None) -> Any:
    """The partition a run of ``scenario`` starts with, its context and a title."""
    from clustersim.assemble.build import scenario_partition
    from clustersim.scenario import load_scenario

    sc = load_scenario(scenario, overrides=overrides, seed=seed)
    p, ctx = scenario_partition(sc)
    return p, ctx, f"{sc.name} ({sc.case.name}): {p.method}, {p.k} clusters, as its runs start"


def _print_partition(doc: dict[str, Any], title: str) -> None:
    """The clusters of a partition document and its metrics and constraint checks."""
    from clustersim.results.partition import HEADLINE_METRICS

    table = Table(title=title, show_header=True)
    for col in ("cluster", "buses", "pilot", "size", "connected", "resources"):
        table.add_column(col)
    for c in doc["clusters"]:
        table.add_row(
            c["name"],
            " ".join(c["buses"]),
            c["pilot_bus"],
            str(c["size"]),
            "✓" if c["connected"] else "×",
            str(c["n_resources"]),
        )
    console.print(table)
    mt = Table(title="metrics", show_header=False)
    for k in HEADLINE_METRICS:
        if k in doc["metrics"]:
            mt.add_row(k, _fmt(doc["metrics"][k]))
    for k, v in doc["constraints"].items():
        mt.add_row(k, "✓" if v else "×")
    mt.add_row("runtime_s", _fmt(doc["runtime_s"]))
    console.print(mt)


@command("partition-compare")
def partition_compare(
    case: Annotated[str, typer.Argument(help="built-in case name or pandapower JSON path")],
    clusters: Annotated[int, typer.Option("--clusters", "-k", help="number of clusters")] = 5,
    seed: Annotated[int, typer.Option(help="seed")] = 0,
    min_size: Annotated[int, typer.Option("--min-size")] = 1,
    max_size: Annotated[int | None, typer.Option("--max-size")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON list")] = False,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="write partition-compare.csv, .md and .json here"),
    ] = None,
) -> None:
    """Run every partition method and print the side-by-side table ([EVEC] Tables 1-2)."""
    from clustersim.fileio import write_text
    from clustersim.partition.methods import method_names, run_partition
    from clustersim.results.partition import COMPARE_COLUMNS, compare_frame, partition_doc
    from clustersim.results.tables import write_table

    ctx = _partition_context(case, seed)
    docs = []
    for m in method_names():
        p = run_partition(ctx, m, clusters, seed=seed, min_size=min_size, max_size=max_size)
        doc = partition_doc(p, ctx)
        doc["balance_min"] = min(
            (c.get("balance", float("nan")) for c in p.constraints.get("per_cluster", [])),
            default=float("nan"),
        )
        docs.append(doc)
    title = f"{case}: {clusters} clusters, seed {seed}"
    frame = compare_frame(docs)
    shown = frame.rename(columns=COMPARE_COLUMNS)
    for col in ("connected", "size", "resources"):
        shown[col] = shown[col].map({True: "✓", False: "×"})
    if out is not None:
        write_table(out, "partition-compare", frame, shown, title=title)
        write_text(out / "partition-compare.json", json.dumps(docs, indent=1) + "\n")
    if as_json:
        sys.stdout.write(json.dumps(docs) + "\n")
        return
    _print_frame(shown, title)
    if out is not None:
        console.print(f"written: [bold]{out}[/]")


@command()
def presets() -> None:
    """List the built-in resource presets."""
    from clustersim.catalog import preset_names, preset_summary

    rows = []
    for name in preset_names():
        case, counts = preset_summary(name)
        rows.append((name, case, _fmt(counts)))
    _print_list(("name", "case", "devices"), rows)


@command()
def scenarios() -> None:
    """List the built-in scenarios."""
    from clustersim.catalog import builtin_scenarios, scenario_description

    rows = [(name, scenario_description(name)) for name in builtin_scenarios()]
    _print_list(("name", "description"), rows)


@command()
def broker(
    port: Annotated[int, typer.Option(help="TCP port to listen on")] = 1883,
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
) -> None:
    """Run the embedded MQTT broker (amqtt) in the foreground until Ctrl-C."""
    from clustersim.broker.embedded import serve

    def ready() -> None:
        console.print(f"embedded broker on mqtt://{host}:{port} (Ctrl-C stops it)")

    serve(host, port, on_ready=ready)


@command()
def acl(
    scenario: Annotated[str, typer.Argument(help="scenario TOML path or built-in name")],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for the files")],
    set_: Annotated[list[str] | None, _set_option("override a scenario key (repeatable)")] = None,
) -> None:
    """Write Mosquitto password and ACL files (each agent may publish only its own topics and
    only the plant may publish measurements) and the nodes' message keys (keys.toml)."""
    from clustersim.assemble.build import agent_names
    from clustersim.broker.acl import write_acl_files
    from clustersim.scenario import load_scenario

    sc = load_scenario(scenario, overrides=set_ or [])
    names = agent_names(sc)
    try:
        files = write_acl_files(names, out)
    except ValueError as exc:  # a node name that cannot be a broker user name
        raise ClusterSimError(str(exc)) from None
    console.print(f"nodes: plant, {', '.join(names) or '(no agents)'}")
    for p in (files.passwd_path, files.acl_path, files.credentials_path, files.keys_path):
        console.print(f"wrote {p}")


@command()
def plant(
    scenario: Annotated[str, typer.Option("--scenario", "-s", help="scenario path or name")],
    broker: Annotated[str, typer.Option(help="mqtt://[user:pass@]host:port")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="results folder")] = None,
    seed: Annotated[int | None, typer.Option(help="seed (overrides run.seed)")] = None,
    set_: Annotated[list[str] | None, _set_option("override a scenario key (repeatable)")] = None,
    quiet: _QuietOpt = False,
    keys: _KeysOpt = None,
    overwrite: _OverwriteOpt = False,
) -> None:
    """Run the plant of a scenario; its agents are started elsewhere with `clustersim agent`."""
    _run(
        scenario,
        out,
        seed,
        [
            *(set_ or []),
            f"comm.broker={broker}",
            "comm.transport=mqtt",
            "run.agents=external",
            *([f"comm.keys={keys}"] if keys else []),
        ],
        quiet,
        overwrite=overwrite,
    )


@command()
def agent(
    scenario: Annotated[str, typer.Option("--scenario", "-s", help="scenario path or name")],
    cluster: Annotated[str, typer.Option("--cluster", "-k", help="agent name: C1.., central")],
    broker: Annotated[str, typer.Option(help="mqtt://[user:pass@]host:port")],
    seed: Annotated[int | None, typer.Option(help="seed (overrides run.seed)")] = None,
    set_: Annotated[list[str] | None, _set_option("override a scenario key (repeatable)")] = None,
    keys: _KeysOpt = None,
    run_id: Annotated[
        str | None,
        typer.Option("--run-id", help="the run to join (default: the plant's, from its start)"),
    ] = None,
) -> None:
    """Run one agent of a scenario against a broker until the plant ends the run (exit 0), the
    plant's scenario differs from this one, or the plant goes silent (exit 2, one line)."""
    from clustersim.broker.transport import without_password
    from clustersim.cosim.run import run_interruptible, serve_agent
    from clustersim.scenario import load_scenario

    sc = load_scenario(scenario, overrides=set_ or [], seed=seed)
    console.print(f"agent {cluster} of {sc.name or scenario} on {without_password(broker)}")
    run_interruptible(  # Ctrl-C and SIGTERM stop it within about 2 s, even mid-solve
        serve_agent(sc, cluster, broker, run_id=run_id, keys_file=str(keys) if keys else None)
    )
    console.print(f"agent {cluster}: run over")


# ------------------------------------------------------------------------------ experiments

_SetOpt = Annotated[
    list[str] | None,
    _set_option("override a scenario key of every run (repeatable)"),
]
_SchedulerOpt = Annotated[
    str | None,
    typer.Option(
        "--scheduler",
        envvar="CLUSTERSIM_SCHEDULER",
        metavar="ADDRESS",
        help="run on this Dask scheduler (tcp://host:8786) instead of local processes",
    ),
]
_JobsOpt = Annotated[
    int, typer.Option("--jobs", "-j", min=1, help="runs at a time, each in its own process")
]


@contextmanager
def _experiment_bar(quiet: bool, serial: bool) -> Iterator[Any]:
    """A rich progress bar over the runs (and, for serial runs, the current run's plant steps);
    yields the experiment's :class:`~clustersim.studies.jobs.Hooks`. The bar appears when the
    runs start, so an error found while planning stays one line."""
    from clustersim.studies.jobs import Hooks

    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        console=err_console,
        disable=quiet,
        transient=False,
    )
    runs = bar.add_task("runs", total=None)
    steps = bar.add_task("plant steps", total=None, visible=False)
    started = False

    def on_plan(n: int) -> None:
        nonlocal started
        if not started:
            bar.start()
            started = True
        bar.reset(runs, total=n, description="runs")

    def on_done(o: Any, done: int, total: int) -> None:
        bar.update(runs, completed=done, description=f"runs (last: {o.job.label})")
        if not o.ok:
            bar.console.print(f"[yellow]run {o.job.label} failed:[/] {o.error}", highlight=False)

    def on_run_start(job: Any, n: int) -> None:
        bar.reset(steps, total=n, description=f"  {job.label}", visible=True)

    def on_step(k: int) -> None:
        bar.update(steps, completed=k)

    try:
        yield Hooks(
            on_plan=on_plan,
            on_done=on_done,
            on_run_start=on_run_start if serial else None,
            on_step=on_step if serial else None,
        )
    finally:
        if started:
            bar.stop()


class _Interrupted(Exception):
    """Ctrl-C during an experiment whose finished runs are in ``out``."""

    def __init__(self, out: Path) -> None:
        super().__init__(str(out))
        self.out = out


@contextmanager
def _results_in(out: Path) -> Iterator[None]:
    """Turn Ctrl-C into :class:`_Interrupted` naming the folder of the finished runs."""
    try:
        yield
    except KeyboardInterrupt:
        raise _Interrupted(out) from None


def _print_frame(frame: Any, title: str, quiet: bool = False) -> None:
    from clustersim.results.tables import fmt_cell

    if quiet:
        return
    table = Table(title=title, show_header=True)
    for col in frame.columns:
        numeric = frame[col].dtype.kind in "iuf"
        table.add_column(str(col), justify="right" if numeric else "left", no_wrap=not numeric)
    for row in frame.itertuples(index=False):
        table.add_row(*(fmt_cell(v) for v in row))
    console.print(table)


def _end_experiment(out: Path, outcomes: Sequence[Any]) -> None:
    failed = [o for o in outcomes if not o.ok]
    console.print(f"results: [bold]{out}[/]")
    if failed and len(failed) == len(outcomes):
        err_console.print("[bold red]error:[/] every run failed (see the error column)")
        raise typer.Exit(code=1)
    if failed:
        err_console.print(f"[yellow]{len(failed)} of {len(outcomes)} runs failed[/] (error column)")


@command()
def compare(
    scenarios: Annotated[
        list[str], typer.Argument(help="scenario TOML paths or built-in names (one or more)")
    ],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="output folder")] = None,
    seed: Annotated[
        int | None, typer.Option(help="seed of every run (default: the first scenario's)")
    ] = None,
    set_: _SetOpt = None,
    jobs: _JobsOpt = 1,
    scheduler: _SchedulerOpt = None,
    quiet: _QuietOpt = False,
    overwrite: _OverwriteOpt = False,
) -> None:
    """Run scenarios on identical plant, profiles and seed; write and print the KPI table
    (compare.csv, compare.md) and the overlay figures."""
    from clustersim.studies.compare import compare as run_compare
    from clustersim.studies.jobs import default_out

    out = out or default_out("compare")
    with _experiment_bar(quiet, jobs == 1 and not scheduler) as hooks:
        res = run_compare(
            scenarios,
            out,
            overrides=set_ or [],
            seed=seed,
            n_jobs=jobs,
            hooks=hooks,
            overwrite=overwrite,
            scheduler=scheduler,
        )
    _print_frame(res.shown, "compare", quiet)
    _end_experiment(out, res.outcomes)


@command()
def sweep(
    scenario: Annotated[
        str | None, typer.Argument(help="scenario TOML path or built-in name")
    ] = None,
    grid: Annotated[
        list[str] | None,
        typer.Option(
            "--grid",
            "-g",
            metavar="TABLE.KEY=V1,V2,...",
            help="grid axis (repeatable; values parsed like --set values)",
        ),
    ] = None,
    repeats: Annotated[
        int | None, typer.Option("--repeats", "-r", min=1, help="runs per point [default: 1]")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="output folder")] = None,
    seed: Annotated[int | None, typer.Option(help="base seed (default: run.seed)")] = None,
    set_: _SetOpt = None,
    kpi: Annotated[
        list[str] | None,
        typer.Option(
            "--kpi", metavar="KPI", help="summary.json KPI to draw (repeatable; default: headline)"
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            metavar="FOLDER",
            help="finish the sweep in FOLDER: run only its missing or failed points",
        ),
    ] = None,
    jobs: _JobsOpt = 1,
    scheduler: _SchedulerOpt = None,
    quiet: _QuietOpt = False,
    overwrite: _OverwriteOpt = False,
) -> None:
    """Run a scenario over a parameter grid (with repeats, in processes); write sweep.parquet,
    sweep.csv and KPI-vs-parameter figures."""
    from clustersim.studies.jobs import default_out
    from clustersim.studies.sweep import plan_sweep, resume_sweep, run_sweep

    if resume is not None:
        given: dict[str, Any] = {"SCENARIO": scenario, "--grid": grid, "--repeats": repeats}
        given |= {"--seed": seed, "--set": set_, "--out": out, "--overwrite": overwrite}
        clash = [k for k, v in given.items() if v not in (None, False, [])]
        if clash:
            raise ClusterSimError(
                f"--resume takes the sweep's plan from its folder: drop {', '.join(clash)}"
            )
        with _results_in(resume):
            with _experiment_bar(quiet, jobs == 1 and not scheduler) as hooks:
                res = resume_sweep(resume, n_jobs=jobs, kpis=kpi, hooks=hooks, scheduler=scheduler)
    elif scenario is None or not grid:
        raise ClusterSimError("give a SCENARIO and at least one --grid (or --resume FOLDER)")
    else:
        plan = plan_sweep(
            scenario, grid, repeats=repeats or 1, overrides=set_ or [], seed=seed, kpis=kpi or ()
        )
        out = out or default_out("sweep", plan.name)
        with _results_in(out):
            with _experiment_bar(quiet, jobs == 1 and not scheduler) as hooks:
                res = run_sweep(
                    plan,
                    out,
                    n_jobs=jobs,
                    kpis=kpi,
                    hooks=hooks,
                    overwrite=overwrite,
                    scheduler=scheduler,
                )
    for w in res.warnings:
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False)
    _print_frame(res.shown, f"sweep of {res.plan.name}", quiet)
    _end_experiment(res.out_dir, res.outcomes)


@command()
def reproduce(
    name: Annotated[
        str, typer.Argument(help="study: cluster-voltage-control | ev-ec-hi | delay-sweep")
    ],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="output folder")] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="2 h, light optimizer budget, smaller grids")
    ] = False,
    seed: Annotated[int | None, typer.Option(help="seed of every run (default: run.seed)")] = None,
    set_: _SetOpt = None,
    jobs: _JobsOpt = 1,
    scheduler: _SchedulerOpt = None,
    quiet: _QuietOpt = False,
    overwrite: _OverwriteOpt = False,
) -> None:
    """Reproduce a study of the source papers: its table (CSV, Markdown, printed) and figures."""
    from clustersim.studies.jobs import default_out
    from clustersim.studies.reproduce import STUDIES
    from clustersim.studies.reproduce import reproduce as run_study

    if name not in STUDIES:
        raise ClusterSimError(f"{name}: unknown study (studies: {', '.join(STUDIES)})")
    out = out or default_out("reproduce", name)
    with _results_in(out):
        with _experiment_bar(quiet, jobs == 1 and not scheduler) as hooks:
            res = run_study(
                name,
                out,
                quick=quick,
                overrides=set_ or [],
                seed=seed,
                n_jobs=jobs,
                hooks=hooks,
                overwrite=overwrite,
                scheduler=scheduler,
            )
    _print_frame(res.shown, f"{name}{' (quick)' if quick else ''}", quiet)
    _end_experiment(out, res.outcomes)


@command()
def report(
    folder: Annotated[Path, typer.Argument(help="a run, compare, sweep or reproduce folder")],
) -> None:
    """(Re)write FOLDER/report.html from the tables and figures in the folder; warn (one line on
    stderr, and in the page) when the folder is not marked complete."""
    from clustersim.results.report import completion_warning, detect_kind, write_report

    path = write_report(folder, detect_kind(folder))
    warning = completion_warning(folder)
    if warning is not None:
        err_console.print(
            f"[bold yellow]warning:[/] {escape(f'{folder}: {warning}')}",
            highlight=False,
            soft_wrap=True,
        )
    console.print(f"report: [bold]{path}[/]")


if __name__ == "__main__":  # pragma: no cover
    app()
