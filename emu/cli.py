"""The `emu` command."""

from __future__ import annotations

import sys

import click

from emu import __version__, fastpath


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="emu")
def main() -> None:
    """emu: a packet-level emulator of Kubernetes container networking."""


@main.command()
@click.argument("name", type=click.Choice(["chapter1"]))
@click.option("--pcap", "pcap_path", default=None, metavar="PATH", help="Write every captured frame here (pcapng).")
@click.option("--seed", default=0, show_default=True, help="Seed of the lab's random generator.")
def example(name: str, pcap_path: str | None, seed: int) -> None:
    """Run a bundled example and print what each command shows."""
    from emu.examples import EXAMPLES

    mod = EXAMPLES[name]
    lab = mod.build(seed)
    click.echo(f"emu {__version__}: example {name} (seed {seed}, {fastpath.name(lab.tables)} tables)\n")
    ok = mod.run(lab, click.echo)
    if pcap_path:
        try:
            n = lab.write_pcap(pcap_path)
        except OSError as exc:
            click.echo(f"emu: cannot write {pcap_path}: {exc.strerror}", err=True)
            sys.exit(2)
        click.echo(f"wrote {n} frames from {len(lab.captures)} capture points to {pcap_path}")
        click.echo(f"  open it with: wireshark {pcap_path}   (or: tshark -r {pcap_path} -V)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
