"""The `emu` command: run, exec, shell and trace scenarios; bench the data plane."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.markup import escape

from emu import __version__
from emu.fileio import write_text
from emu.net.errors import NetError
from emu.scenario.loader import Scenario, ScenarioError, load
from emu.scenario.runner import Run, StepResult

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[bold red]emu: error:[/] {escape(message)}")
    sys.exit(code)


@contextmanager
def bad_input() -> Iterator[None]:
    """Turns user mistakes into one message and exit code 2, never a traceback."""
    try:
        yield
    except ScenarioError as exc:
        fail(str(exc))
    except NetError as exc:
        fail(str(exc))


def _load(path: str) -> Scenario:
    with bad_input():
        return load(path)


def output_problem(path: str) -> str | None:
    """Why `path` cannot be written as an output file (checked before any work is done), or None."""
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if os.path.isdir(path):
        return f"{path} is a directory"
    if not os.path.isdir(parent):
        return f"{path}: {parent} is a file, not a directory"
    if not os.access(parent, os.W_OK):
        return f"{path}: cannot write in {parent}"
    return None


NO_FASTPATH = click.option("--no-fastpath", is_flag=True,
                           help="Carry every frame on the slow path (no compiled flow programs).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="emu")
def main() -> None:
    """emu: a packet-level emulator of Kubernetes container networking.

    Shell completion: eval "$(_EMU_COMPLETE=bash_source emu)" (zsh_source, fish_source).
    """


def _print_step(r: StepResult, verbose: bool) -> None:
    mark = "[green]✔[/]" if r.ok else "[bold red]✘[/]"
    label = f"{r.step.index + 1:>3} {r.step.kind:<10}"
    name = f" [cyan]{escape(r.step.name)}[/]:" if r.step.name else ""
    out.print(f"{mark} {label}{name} {escape(r.summary)}")
    if r.output and (verbose or r.step.kind in ("exec", "traceroute") or not r.ok):
        for line in r.output.rstrip("\n").splitlines():
            out.print(f"      {escape(line)}")
    for f in r.failures:
        out.print(f"      [red]{escape(f)}[/]")


@main.command()
@click.argument("scenario")
@click.option("--pcap", "pcap_path", metavar="PATH", help="Write the captured frames here (pcapng).")
@click.option("--seed", type=int, help="Override the scenario's seed.")
@click.option("--json", "json_path", metavar="REPORT", help="Write a JSON report here.")
@click.option("-v", "--verbose", is_flag=True, help="Print every step's output.")
@NO_FASTPATH
def run(scenario: str, pcap_path: str | None, seed: int | None, json_path: str | None, verbose: bool,
        no_fastpath: bool) -> None:
    """Run a scenario's steps, check its expectations, write its pcapng."""
    try:
        _run(scenario, pcap_path, seed, json_path, verbose, not no_fastpath)
    except KeyboardInterrupt:
        err.print("emu: interrupted before the steps started; nothing was written")
        sys.exit(130)


def _run(scenario: str, pcap_path: str | None, seed: int | None, json_path: str | None, verbose: bool,
         fastpath: bool) -> None:
    sc = _load(scenario)
    pcap = pcap_path or (os.path.relpath(sc.resolve(sc.capture_file)) if sc.capture_file else None)
    problem = output_problem(pcap) if pcap else None
    if problem:
        if pcap_path:
            fail(f"--pcap: {problem}")
        fail(str(sc.source.error(("capture", "file"), problem)))
    problem = output_problem(json_path) if json_path else None
    if problem:
        fail(f"--json: {problem}")
    runner = Run(sc, seed=seed, capture_all=bool(pcap_path) and not sc.capture_points, fastpath=fastpath)
    with bad_input():
        runner.build()
    out.print(f"[bold]{escape(sc.name)}[/] ({escape(sc.file)}, seed {runner.seed}, {runner.tables} tables)"
              + (f": {escape(sc.description.strip().splitlines()[0])}" if sc.description.strip() else ""))
    lab = runner.lab
    assert lab is not None
    try:
        with bad_input():
            _run_with_progress(runner, lambda r: _print_step(r, verbose))
    except KeyboardInterrupt:
        done = len(runner.results)
        if pcap:
            n = lab.write_pcap(pcap)
            err.print(f"emu: interrupted after {done} steps: wrote the {n} frames captured so far to {pcap}")
        else:
            err.print(f"emu: interrupted after {done} steps")
        sys.exit(130)
    frames = lab.write_pcap(pcap) if pcap else None
    color = "green" if not runner.failed else "red"
    out.print(f"\n[{color}]{runner.passed} passed, {runner.failed} failed[/] ({len(sc.steps)} steps, "
              f"{lab.clock.now:.3f} s virtual)")
    if lab.flows is not None:
        st = lab.flows.stats()
        out.print(f"fast path: {st['hits']} frames ran compiled programs ({st['programs']} flows), "
                  f"{st['misses']} took the slow path")
    if pcap:
        out.print(f"wrote {frames} frames from {len(lab.captures)} capture points to {escape(pcap)}")
    if json_path:
        write_text(json_path, json.dumps(runner.report(pcap, frames), indent=2) + "\n")
    sys.exit(1 if runner.failed else 0)


def _run_with_progress(runner: Run, on_step: Callable[[StepResult], None]) -> None:
    if out.is_terminal and len(runner.sc.steps) > 20:
        from rich.progress import Progress

        with Progress(console=out, transient=True) as progress:
            task = progress.add_task("steps", total=len(runner.sc.steps))

            def tick(r: StepResult) -> None:
                on_step(r)
                progress.advance(task)

            runner.run(on_step=tick)
    else:
        runner.run(on_step=on_step)


def _world(scenario: str, at: str | None, seed: int | None, fastpath: bool = True) -> Run:
    """Builds the scenario's lab and runs its steps (all, or up to `at`), quietly."""
    sc = _load(scenario)
    runner = Run(sc, seed=seed, fastpath=fastpath)
    with bad_input():
        if at not in (None, "0"):
            runner.find_step(at)
        runner.build()
        if sc.steps and at != "0":
            runner.run(until=at)
    return runner


@main.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("scenario")
@click.argument("namespace")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--at", metavar="STEP", help="Stop after this step (name or number; 0 = before any).")
@click.option("--seed", type=int, help="Override the scenario's seed.")
@NO_FASTPATH
def exec_(scenario: str, namespace: str, command: tuple[str, ...], at: str | None, seed: int | None,
          no_fastpath: bool) -> None:
    """Build the scenario's world, run its steps, then run COMMAND in NAMESPACE.

    Example: emu exec lab.yaml r1 -- ip route
    """
    import shlex

    runner = _world(scenario, at, seed, not no_fastpath)
    assert runner.lab is not None
    if namespace not in runner.lab.namespaces:
        fail(f"{scenario}: unknown namespace {namespace!r} (namespaces: {', '.join(runner.lab.namespaces)})")
    res = runner.lab[namespace].run(shlex.join(command))
    sys.stdout.write(res.stdout)
    sys.stderr.write(res.stderr)
    sys.exit(res.rc)


@main.command()
@click.argument("scenario")
@click.option("--at", metavar="STEP", help="Stop after this step (name or number; 0 = before any).")
@click.option("--seed", type=int, help="Override the scenario's seed.")
@NO_FASTPATH
def shell(scenario: str, at: str | None, seed: int | None, no_fastpath: bool) -> None:
    """An interactive prompt in the scenario's world: `h1 ping -c 2 10.0.0.2`, `r1 ip route`, `trace h1 10.0.2.10`."""
    from emu.shell import EmuShell

    runner = _world(scenario, at, seed, not no_fastpath)
    EmuShell(runner).cmdloop()


@main.command()
@click.argument("scenario")
@click.option("--from", "src", required=True, metavar="NS", help="The namespace that sends the packet.")
@click.option("--to", "dst", required=True, metavar="ADDR[:PORT]", help="Destination address (and port).")
@click.option("--proto", type=click.Choice(["icmp", "udp", "tcp"]), default=None,
              help="icmp (default without a port), udp (default with one) or tcp.")
@click.option("--at", metavar="STEP", help="Send after this step (name or number; 0 = before any).")
@click.option("--seed", type=int, help="Override the scenario's seed.")
@click.option("--json", "as_json", is_flag=True, help="Print the decisions as JSON.")
@NO_FASTPATH
def trace(scenario: str, src: str, dst: str, proto: str | None, at: str | None, seed: int | None,
          as_json: bool, no_fastpath: bool) -> None:
    """Send one packet and print its journey hop by hop: tables consulted, entries matched, where it ended."""
    from emu.scenario.probe import parse_target, send_probe
    from emu.trace import render_journey

    with bad_input():
        addr, port = parse_target(dst)
    runner = _world(scenario, at, seed, not no_fastpath)
    lab = runner.lab
    assert lab is not None
    if src not in lab.namespaces:
        fail(f"--from: unknown namespace {src!r} (namespaces: {', '.join(lab.namespaces)})")
    proto = proto or ("udp" if port else "icmp")
    with bad_input():
        pid, flow = send_probe(lab[src], addr, port, proto)
    decisions = lab.decisions(pid)
    if as_json:
        doc: dict[str, Any] = {"flow": flow, "outcome": runner.outcome(pid), "decisions": [
            {"time": d.time, "netns": d.netns, "ifname": d.ifname, "point": d.point, "detail": d.detail,
             "drop": d.drop.value if d.drop else None} for d in decisions]}
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo(f"Flow: {flow}\n")
        click.echo(render_journey(decisions), nl=False)


@main.command()
@click.option("--quick", is_flag=True, help="Small sizes and short timings: the whole run in well under two minutes.")
@click.option("--json", "json_path", metavar="PATH", help="Also write the rows and machine info as JSON ('-': stdout).")
@click.option("--only", "patterns", metavar="PATTERN", multiple=True,
              help="Run only the workloads matching this glob, e.g. 'lpm.*' (repeatable).")
@click.option("--list", "list_only", is_flag=True, help="List the workloads and exit.")
def bench(quick: bool, json_path: str | None, patterns: tuple[str, ...], list_only: bool) -> None:
    """Measure the tables, frame edges and forwarding against baselines run alongside (pytricia, dict, Scapy).

    Prints one row per measurement with the ratio to its baseline; exit 1 when a workload failed.
    """
    from emu.bench import runner as bench_runner

    try:
        names = bench_runner.select(patterns)
    except bench_runner.UnknownWorkload as exc:
        fail(str(exc))
    if list_only:
        for name in names:
            out.print(f"{name:<14} {escape(bench_runner.describe(name))}")
        return
    if json_path and json_path != "-":
        problem = output_problem(json_path)
        if problem:
            fail(f"--json: {problem}")

    def progress(o: bench_runner.Outcome) -> None:
        state = f"[bold red]error[/] {escape(o.error)}" if o.error else f"{len(o.rows)} row{'s' * (len(o.rows) != 1)}"
        err.print(f"[dim]{o.name:<14} {o.seconds:6.1f} s[/]  {state}")

    outcomes = bench_runner.run(names, quick, progress)
    bench_runner.print_table(err if json_path == "-" else out, outcomes, quick)
    for o in outcomes:
        if o.error:
            err.print(f"[red]{escape(o.traceback.rstrip())}[/]")
    if json_path:
        text = json.dumps(bench_runner.report(outcomes, quick), indent=2) + "\n"
        if json_path == "-":
            click.echo(text, nl=False)
        else:
            write_text(json_path, text)
    if any(o.error for o in outcomes):
        sys.exit(1)


if __name__ == "__main__":
    main()
