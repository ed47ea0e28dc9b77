"""The kernel baseline of `emu bench`: small bounded floods through real namespaces, and what must hold.

The real runs (`linux` mark) build each topology in `emub-` namespaces, send at most 2,000 frames for at most
a second, and check a positive rate, that every frame sent was delivered, that the flannel run crossed the
underlay as VXLAN, and that no `emub-` namespace is left behind. The others need no root.
"""

from __future__ import annotations

import socket
import struct
import subprocess

import pytest

from emu import fastpath
from emu.bench import kernel
from emu.bench.kernel import TOPOLOGIES, KernelResult, available, kernel_pps, udp_packet

REASON = available()
real = pytest.mark.skipif(REASON is not None, reason=f"kernel baseline: {REASON}")


def _emub_namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=20).stdout
    return {line.split()[0] for line in out.splitlines() if line.startswith("emub-")}


@pytest.fixture
def no_leftovers():
    """Fails the test when it leaves an `emub-` namespace that was not there before."""
    before = _emub_namespaces()
    yield
    left = _emub_namespaces() - before
    assert not left, f"namespaces left behind: {sorted(left)}"


def _check(res: KernelResult, packets: int) -> None:
    assert res.pps is not None and res.pps > 0, res.note
    assert res.details["sent"] == packets, res.note
    assert res.details["delivered"] >= 0.9 * res.details["sent"], res.note  # a loaded machine may drop a few
    assert res.details["elapsed_s"] > 0


@pytest.mark.linux
@real
@pytest.mark.parametrize("topo", TOPOLOGIES)
def test_each_topology_delivers(topo, no_leftovers):
    res = kernel_pps(topo, 1, packets=2000, seconds=1)
    _check(res, 2000)
    if topo == "flannel":
        # Every frame crossed node1 eth0 -> node2 eth0 (the only path), so node2's underlay interface saw at least
        # as many frames as the pod got; they were VXLAN, or node2's flannel.1 could not have delivered them.
        assert res.details["underlay_rx"] >= res.details["delivered"], res.note
        assert "VXLAN" in res.note
    if topo == "dnat":
        assert "DNAT" in res.note


@pytest.mark.linux
@real
def test_capture_and_many_flows(no_leftovers):
    res = kernel_pps("flannel", 64, pcap=True, packets=2000, seconds=1)
    _check(res, 2000)
    assert res.details["capture_received"] >= 2000, res.note
    assert res.details["flows"] == 64


@pytest.mark.linux
@real
def test_python_fallbacks(no_leftovers):
    res = kernel._kernel_pps("bridge", 3, pcap=True, packets=2000, seconds=1, python_sender=True, python_capture=True)
    _check(res, 2000)
    assert "Python sendto loop" in res.note and "Python AF_PACKET reader" in res.note
    assert res.details["capture_received"] >= 2000, res.note


def test_frames_are_60_bytes_with_a_valid_udp_checksum():
    pkt = udp_packet("10.244.1.2", "10.244.2.2", 10007, 5001)
    assert 14 + len(pkt) == 60
    assert pkt[9] == 17 and struct.unpack("!H", pkt[2:4])[0] == 46
    assert struct.unpack("!HH", pkt[20:24]) == (10007, 5001)
    pseudo = socket.inet_aton("10.244.1.2") + socket.inet_aton("10.244.2.2") + struct.pack("!BBH", 0, 17, 26)
    assert fastpath.load().inet_checksum(pseudo + pkt[20:]) == 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown topology"):
        kernel_pps("ipip")
    with pytest.raises(ValueError, match="flows"):
        kernel_pps("veth", 0)


def test_skipped_without_root(monkeypatch):
    monkeypatch.setattr(kernel.os, "geteuid", lambda: 1000)
    assert available() == "needs root"
    res = kernel_pps("bridge")
    assert res.pps is None and res.note == "skipped: needs root"
