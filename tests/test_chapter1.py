"""The bundled chapter-1 scenario end to end: the tables the notes talk about, the frames, the pcapng."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from emu import fastpath
from emu.frames import ICMP, IP, Ether
from emu.scenario.loader import load
from emu.scenario.runner import Run

ROOT = Path(__file__).resolve().parent.parent
CHAPTER1 = str(ROOT / "scenarios" / "chapter1.yaml")


def run_chapter1(impl: str | None = None, seed: int | None = None) -> Run:
    runner = Run(load(CHAPTER1), seed=seed, pure_python=impl == "python" if impl else None)
    runner.run()
    return runner


def test_extension_loaded_in_a_normal_install() -> None:
    """A normal install must not fall back silently to the pure-Python tables."""
    if os.environ.get("EMU_NO_EXTENSIONS") == "1":
        pytest.skip("EMU_NO_EXTENSIONS=1 asks for the pure-Python tables")
    assert fastpath.EXTENSION_LOADED, "emu._fastpath did not load: the build step is missing"
    assert fastpath.name(fastpath.load()) == "cython"


def test_chapter1_expectations_hold_and_tables_fill(impl: str) -> None:
    runner = run_chapter1(impl)
    assert runner.failed == 0, [f for r in runner.results for f in r.failures]
    lab = runner.lab
    fdb = lab["sw1"].run("bridge fdb show").stdout
    for host, port in (("pc1", "pc1"), ("pc2", "pc2"), ("r1", "r1")):
        assert f"{lab[host].link('eth0').mac_str} dev {port} master br0 \n" in fdb
    # The frame pc1 sent across the router arrives at pc3 with the router's MAC and TTL 63.
    into_pc3 = [Ether(r.frame) for r in lab.records({"pc3/eth0"}) if r.direction == "in"]
    echo = [p for p in into_pc3 if p.haslayer(ICMP) and p[ICMP].type == 8 and p[IP].src == "10.0.1.10"]
    assert echo and echo[0].src == lab["r1"].link("eth1").mac_str and echo[0][IP].ttl == 63


def test_same_seed_same_bytes_on_both_tables(tmp_path) -> None:
    blobs = []
    for i, impl in enumerate(("cython", "cython", "python")):
        runner = run_chapter1(impl if fastpath.EXTENSION_LOADED or impl == "python" else "python", seed=7)
        assert all(r.comments for r in runner.lab.records()), "a frame without a comment"
        p = tmp_path / f"run{i}.pcapng"
        runner.lab.write_pcap(str(p))
        blobs.append(p.read_bytes())
    assert blobs[0] == blobs[1], "same seed, different pcap bytes"
    assert blobs[0] == blobs[2], "the pure-Python tables wrote different bytes"
    other = run_chapter1(seed=8)
    other.lab.write_pcap(str(tmp_path / "seed8.pcapng"))
    assert (tmp_path / "seed8.pcapng").read_bytes() != blobs[0]


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed (.ci/run installs it)")
def test_pcapng_decodes_cleanly_in_tshark(tmp_path) -> None:
    lab = run_chapter1().lab
    path = tmp_path / "ch1.pcapng"
    n = lab.write_pcap(str(path))
    res = subprocess.run(["tshark", "-r", str(path), "-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE",
                          "-o", "tcp.check_checksum:TRUE", "-T", "fields", "-e", "frame.number",
                          "-e", "frame.interface_name", "-e", "frame.comment", "-e", "_ws.expert.severity",
                          "-e", "_ws.malformed"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    rows = [ln.split("\t") for ln in res.stdout.splitlines()]
    assert len(rows) == n
    for row in rows:
        assert row[1] and "/" in row[1], row
        assert row[2], f"frame {row[0]} has no comment"
        assert not row[4], f"frame {row[0]} is malformed"
        assert "warn" not in row[3].lower() and "error" not in row[3].lower(), row


def test_the_readme_main_command_runs_the_scenario(tmp_path) -> None:
    out = tmp_path / "sub" / "chapter1.pcapng"
    report = tmp_path / "report.json"
    res = subprocess.run([sys.executable, "-m", "emu.cli", "run", CHAPTER1, "--pcap", str(out), "--json",
                          str(report)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "12 passed, 0 failed" in res.stdout and "pc1$ route -n" in res.stdout
    assert out.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".part")]
    import json

    doc = json.loads(report.read_text())
    assert doc["passed"] == 12 and doc["failed"] == 0 and doc["frames"] > 100
    assert [s["kind"] for s in doc["steps"]][:3] == ["exec", "exec", "ping"]
