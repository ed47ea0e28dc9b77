"""`emu trace`, `emu exec`, `emu shell` and replays, checked against what the data plane did."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

from emu.scenario.loader import load
from emu.scenario.probe import send_probe
from emu.scenario.runner import Run
from emu.shell import NS_COMMANDS, EmuShell
from tests.test_chapter1 import CHAPTER1, ROOT


def emu(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "emu.cli", *args], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)


def test_trace_json_is_the_data_planes_own_decisions() -> None:
    res = emu("trace", CHAPTER1, "--from", "pc1", "--to", "10.0.2.10", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    # The same world in this process: the same decisions, recorded by the same code paths.
    runner = Run(load(CHAPTER1))
    runner.run()
    pid, flow = send_probe(runner.lab["pc1"], 0x0A00020A, None, "icmp")
    mine = [{"time": d.time, "netns": d.netns, "ifname": d.ifname, "point": d.point, "detail": d.detail,
             "drop": None} for d in runner.lab.decisions(pid)]
    assert doc["decisions"] == mine and doc["flow"] == flow and doc["outcome"] == "delivered"
    # Every hop the trace names is a place where that very frame was captured.
    seen = {(r.ifname.split("/")[0]) for r in runner.lab.records() if r.pid == pid}
    assert {d["netns"] for d in doc["decisions"]} <= seen


def test_trace_text_shows_hops_and_the_end() -> None:
    res = emu("trace", CHAPTER1, "--from", "pc1", "--to", "10.0.2.10:53", "--at", "0")
    assert res.returncode == 0, res.stderr
    text = res.stdout
    assert text.startswith("Flow: udp 10.0.1.10:")
    order = [ln.split()[0] for ln in text.splitlines() if ln and not ln.startswith((" ", "Flow", "Final"))]
    assert order == ["pc1", "sw1", "r1", "sw2", "pc3"]
    assert "forward: ttl 64 -> 63" in text and "arp: queued until 10.0.1.1 resolves" in text
    assert text.rstrip().endswith("Final: dropped at pc3/eth0: NO_LISTENER (udp: nothing listens on port 53)")


def test_exec_runs_the_command_after_the_steps() -> None:
    res = emu("exec", CHAPTER1, "pc1", "--", "arp", "-n")
    assert res.returncode == 0 and "10.0.1.11 " in res.stdout  # learned during the steps
    early = emu("exec", CHAPTER1, "pc1", "--at", "0", "--", "arp", "-n")
    assert early.returncode == 0 and "10.0.1.11" not in early.stdout
    bad = emu("exec", CHAPTER1, "pc1", "--", "ip", "route", "get", "10.0.0.300")
    assert bad.returncode == 1 and bad.stderr == 'Error: any valid prefix is expected rather than "10.0.0.300".\n'


def make_shell() -> tuple[EmuShell, io.StringIO]:
    runner = Run(load(CHAPTER1))
    runner.build()
    out = io.StringIO()
    return EmuShell(runner, stdin=io.StringIO(), stdout=out), out


def test_shell_runs_commands_and_names_stand_for_addresses() -> None:
    sh, out = make_shell()
    sh.onecmd("pc1 ping -c 2 pc3")
    assert "2 packets transmitted, 2 received" in out.getvalue() and "ttl=63" in out.getvalue()
    sh.onecmd("r1 ip route")
    assert "10.0.2.0/24 dev eth1 proto kernel scope link src 10.0.2.1" in out.getvalue()
    sh.onecmd("nosuch ip route")
    assert "*** unknown namespace or command: 'nosuch'" in out.getvalue()
    sh.onecmd("trace pc1 pc3")
    assert "Final: delivered in pc3" in out.getvalue()
    assert sh.onecmd("exit") is True


def test_shell_scripted_through_stdin() -> None:
    runner = Run(load(CHAPTER1))
    runner.build()
    out = io.StringIO()
    EmuShell(runner, stdin=io.StringIO("pc2 ping -c 1 10.0.1.10\nnodes\nexit\n"), stdout=out).cmdloop()
    text = out.getvalue()
    assert "1 received" in text and "sw1: br0, pc1, pc2, r1" in text


def test_shell_completion() -> None:
    sh, _ = make_shell()
    assert sh.completenames("pc") == ["pc1", "pc2", "pc3"]
    assert "trace" in sh.completenames("tr") and "nodes" in sh.completenames("no")
    assert sh.completedefault("", "pc1 ", 4, 4) == NS_COMMANDS
    assert sh.completedefault("ro", "pc1 ip ro", 7, 9) == ["route"]
    assert sh.completedefault("g", "pc1 ip route g", 13, 14) == ["get"]
    assert sh.completedefault("s", "r1 ping s", 8, 9) == ["sw1", "sw2"]
    assert sh.completedefault("e", "r1 ip link show e", 16, 17) == ["eth0", "eth1"]
    assert sh.complete_trace("u", "trace pc1 10.0.2.10 u", 20, 21) == ["udp"]


def test_replaying_a_capture_reproduces_the_forwarding_decisions(tmp_path: Path) -> None:
    first = Run(load(CHAPTER1))
    first.run()
    pcap = tmp_path / "run1.pcapng"
    first.lab.write_pcap(str(pcap))
    sent = [r.pid for r in first.lab.records({"pc1/eth0"}) if r.direction == "out"]
    text = Path(CHAPTER1).read_text()
    head = text[: text.index("\ncapture:")]
    replay = tmp_path / "replay.yaml"
    replay.write_text(head.replace("name: chapter1", "name: replay") + textwrap.dedent(f"""
        capture:
          points: all
        steps:
          - replay: {{file: {pcap.name}, into: pc1/eth0, direction: out,
                      select: {{interface: pc1/eth0, direction: out}}}}
        """))
    second = Run(load(str(replay)))
    second.run()
    replayed = second.results[0].pids
    assert len(replayed) == len(sent) > 10

    def hops(lab, pid):  # what every other namespace did with the frame
        return [(d.netns, d.ifname, d.point, d.detail, d.drop) for d in lab.decisions(pid) if d.netns != "pc1"]

    for a, b in zip(sent, replayed, strict=True):
        assert hops(second.lab, b) == hops(first.lab, a)


def test_version_help_and_completion() -> None:
    import os

    from emu import __version__

    assert emu("--version").stdout.strip() == f"emu, version {__version__}"
    for sub in ("run", "exec", "shell", "trace"):
        res = emu(sub, "--help")
        assert res.returncode == 0 and "Usage: " in res.stdout
    entry = [sys.executable, "-c", "from emu.cli import main; main(prog_name='emu')"]
    script = subprocess.run(entry, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "_EMU_COMPLETE": "bash_source"})
    assert "complete" in script.stdout and "_EMU_COMPLETE" in script.stdout
    words = subprocess.run(entry, capture_output=True, text=True, timeout=60,
                           env={**os.environ, "_EMU_COMPLETE": "bash_complete", "COMP_WORDS": "emu tr",
                                "COMP_CWORD": "1"})
    assert "trace" in words.stdout


def test_no_fastpath_switch_gives_the_same_pcap_and_says_so(tmp_path: Path) -> None:
    """`emu run --no-fastpath` carries every frame on the slow path: the same frames, no fast-path line."""
    outs = {}
    for flag in ([], ["--no-fastpath"]):
        pcap = tmp_path / f"{len(flag)}.pcapng"
        res = emu("run", CHAPTER1, "--pcap", str(pcap), *flag)
        assert res.returncode == 0, res.stderr
        outs[bool(flag)] = (res.stdout, pcap.read_bytes())
    assert "fast path: " in outs[False][0] and "fast path: " not in outs[True][0]
    assert outs[False][1] == outs[True][1]
    res = emu("exec", CHAPTER1, "r1", "--no-fastpath", "--", "ip", "route")
    assert res.returncode == 0 and "10.0.2.0/24 dev eth1" in res.stdout
