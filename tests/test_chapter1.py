"""The chapter-1 example end to end: the tables the notes talk about, the frames, the pcapng."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from emu import fastpath
from emu.examples import chapter1
from emu.frames import ICMP, IP, Ether


def test_extension_loaded_in_a_normal_install() -> None:
    """A normal install must not fall back silently to the pure-Python tables."""
    if os.environ.get("EMU_NO_EXTENSIONS") == "1":
        pytest.skip("EMU_NO_EXTENSIONS=1 asks for the pure-Python tables")
    assert fastpath.EXTENSION_LOADED, "emu._fastpath did not load: the build step is missing"
    assert fastpath.name(fastpath.load()) == "cython"


def test_chapter1_tables_and_ttls(impl: str) -> None:
    lab = chapter1.build(seed=0, pure_python=impl == "python")
    out: list[str] = []
    assert chapter1.run(lab, out.append)
    text = "\n".join(out)
    assert "0.0.0.0         10.0.1.1        0.0.0.0         UG    0      0        0 eth0" in text
    same = lab["pc1"].run("ping -c 1 10.0.1.11").stdout
    across = lab["pc1"].run("ping -c 1 10.0.2.10").stdout
    assert "ttl=64" in same and "ttl=63" in across
    arp = lab["pc1"].run("arp -n").stdout
    assert "10.0.1.1 " in arp and "10.0.1.11 " in arp and "10.0.2.10" not in arp
    fdb = lab["sw1"].run("bridge fdb show").stdout
    for host, port in (("pc1", "pc1"), ("pc2", "pc2"), ("r1", "r1")):
        mac = lab[host].link("eth0").mac_str
        assert f"{mac} dev {port} master br0 \n" in fdb
    # The frame pc1 sent across the router arrives at pc3 with the router's MAC and TTL 63.
    into_pc3 = [Ether(r.frame) for r in lab.records({"pc3/eth0"}) if r.direction == "in"]
    echo = [p for p in into_pc3 if p.haslayer(ICMP) and p[ICMP].type == 8 and p[IP].src == "10.0.1.10"]
    assert echo and echo[0].src == lab["r1"].link("eth1").mac_str and echo[0][IP].ttl == 63


def test_every_frame_has_a_comment_and_same_seed_same_bytes(tmp_path) -> None:
    paths = []
    for i, pure in enumerate((False, False, True)):
        lab = chapter1.build(seed=7, pure_python=pure or None)
        chapter1.run(lab, lambda s: None)
        assert all(r.comments for r in lab.records()), "a frame without a comment"
        p = tmp_path / f"run{i}.pcapng"
        lab.write_pcap(str(p))
        paths.append(p.read_bytes())
    assert paths[0] == paths[1], "same seed, different pcap bytes"
    assert paths[0] == paths[2], "the pure-Python tables wrote different bytes"
    other = chapter1.build(seed=8)
    chapter1.run(other, lambda s: None)
    other.write_pcap(str(tmp_path / "seed8.pcapng"))
    assert (tmp_path / "seed8.pcapng").read_bytes() != paths[0]


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed (.ci/run installs it)")
def test_pcapng_decodes_cleanly_in_tshark(tmp_path) -> None:
    lab = chapter1.build(seed=0)
    chapter1.run(lab, lambda s: None)
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


def test_cli_example_writes_the_pcap(tmp_path) -> None:
    out = tmp_path / "sub" / "chapter1.pcapng"
    res = subprocess.run([sys.executable, "-m", "emu.cli", "example", "chapter1", "--pcap", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "pc1$ route -n" in res.stdout and f"to {out}" in res.stdout
    assert out.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".part")]
