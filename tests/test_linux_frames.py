"""Frames on the wire: a ping in real namespaces (captured with tcpdump) against the same
ping in the emulator (captured with lab.capture / lab.write_pcap).

MAC addresses are kernel-chosen, so frames are compared through who sent them and to
whom (MAC -> "ns/ifname"), never by raw MAC. Everything else that is deterministic is
compared: the ARP/IP sequence, ARP ops and addresses, IP protocol, ICMP type/code/seq,
TTL, DF, IP total length and frame length. Command outputs are compared exactly, with
ping's timings normalised.
"""

from __future__ import annotations

import json
import re
import select
import shutil
import subprocess
import time

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import ARP, Ether
from scapy.utils import rdpcap

from tests.linux import EmuSide, diff_report, emu_lab, real_netns  # noqa: F401  (real_netns is a fixture)

pytestmark = pytest.mark.linux

_PING_TIMES = [
    (re.compile(r"time=[0-9.]+ ms"), "time=<t> ms"),
    (re.compile(r"time \d+ms"), "time <t>ms"),
    (re.compile(r"= [0-9.]+/[0-9.]+/[0-9.]+/[0-9.]+ ms"), "= <rtt> ms"),
]

DIRECT = {
    "hosts": ["h1", "h2"],
    "setup": [
        ("h1", "ip link add eth0 type veth peer name eth0 netns {h2}"),
        ("h1", "ip addr add 10.0.0.1/24 dev eth0"),
        ("h2", "ip addr add 10.0.0.2/24 dev eth0"),
        ("h1", "ip link set eth0 up"),
        ("h2", "ip link set eth0 up"),
    ],
    "ping": ("h1", "ping -c 1 -W 1 10.0.0.2"),
    "capture": [("h1", "eth0")],
}

ROUTED = {
    "hosts": ["h1", "r", "h2"],
    "setup": [
        ("h1", "ip link add eth0 type veth peer name eth1 netns {r}"),
        ("h2", "ip link add eth0 type veth peer name eth2 netns {r}"),
        ("h1", "ip addr add 10.0.1.10/24 dev eth0"),
        ("r", "ip addr add 10.0.1.1/24 dev eth1"),
        ("r", "ip addr add 10.0.2.1/24 dev eth2"),
        ("h2", "ip addr add 10.0.2.10/24 dev eth0"),
        ("h1", "ip link set eth0 up"),
        ("r", "ip link set eth1 up"),
        ("r", "ip link set eth2 up"),
        ("h2", "ip link set eth0 up"),
        ("h1", "ip route add default via 10.0.1.1"),
        ("h2", "ip route add default via 10.0.2.1"),
        ("r", "sysctl -w net.ipv4.ip_forward=1"),
        ("h1", "ip route"),
        ("r", "ip route"),
    ],
    "ping": ("h1", "ping -c 1 -W 1 10.0.2.10"),
    "capture": [("h1", "eth0"), ("h2", "eth0")],
}


def _normalise_output(cmd: str, res):
    rc, out, err = res
    if cmd.startswith("ping"):
        for rx, rep in _PING_TIMES:
            out = rx.sub(rep, out)
    return rc, out, err


def mac_owners(sides: dict) -> dict[str, str]:
    """MAC -> "ns/ifname" from `ip -j addr` in every namespace."""
    owners = {}
    for host, side in sides.items():
        rc, out, err = side.run("ip -j addr")
        assert rc == 0, (host, err)
        for link in json.loads(out):
            if link.get("link_type") == "ether":
                owners[link["address"].lower()] = f"{host}/{link['ifname']}"
    return owners


def frame_summary(pkts, owners: dict[str, str]) -> list[tuple]:
    """The comparable features of each frame; IPv6 and multicast other than broadcast are ignored."""
    out = []
    for p in pkts:
        raw = bytes(p)
        if Ether not in p:
            out.append(("non-ethernet", len(raw)))
            continue
        eth = p[Ether]
        dst = eth.dst.lower()
        if eth.type == 0x86DD or (int(dst[:2], 16) & 1 and dst != "ff:ff:ff:ff:ff:ff"):
            continue
        if IP in p and p[IP].proto == 2:  # IGMP
            continue

        def who(mac: str) -> str:
            mac = mac.lower()
            if mac == "ff:ff:ff:ff:ff:ff":
                return "broadcast"
            if mac == "00:00:00:00:00:00":
                return "zero"
            return owners.get(mac, "unknown")

        f = {"len": len(raw), "src": who(eth.src), "dst": who(dst), "type": hex(eth.type)}
        if ARP in p:
            a = p[ARP]
            f.update(arp_op=a.op, hwsrc=who(a.hwsrc), psrc=a.psrc, hwdst=who(a.hwdst), pdst=a.pdst)
        elif IP in p:
            ip = p[IP]
            f.update(proto=ip.proto, ttl=ip.ttl, df=bool(int(ip.flags) & 0x2), ip_len=ip.len,
                     ip_src=ip.src, ip_dst=ip.dst, tos=ip.tos, ihl=ip.ihl, frag=ip.frag)
            if ICMP in p:
                ic = p[ICMP]
                f.update(icmp_type=ic.type, icmp_code=ic.code, icmp_seq=ic.seq,
                         icmp_payload=len(bytes(ic.payload)))
        out.append(tuple(sorted(f.items())))
    return out


def _wait_listening(proc, deadline: float) -> None:
    """tcpdump prints 'listening on ...' to stderr once the capture is armed."""
    buf = ""
    while time.monotonic() < deadline:
        r, _, _ = select.select([proc.stderr], [], [], 0.1)
        if r:
            line = proc.stderr.readline()
            buf += line
            if "listening on" in line:
                return
            if not line and proc.poll() is not None:
                break
    raise RuntimeError(f"tcpdump did not start: {buf!r}")


def run_real(scenario, real_netns, tmp_path):
    if shutil.which("tcpdump") is None:
        pytest.skip("tcpdump not found")
    sides = {h: real_netns(h) for h in scenario["hosts"]}
    names = {h: ns.name for h, ns in sides.items()}
    outputs = []
    for who, template in scenario["setup"]:
        cmd = template.format(**names)
        outputs.append((f"[{who}] {template}", sides[who].run(cmd)))
    procs = {}
    for host, ifname in scenario["capture"]:
        path = tmp_path / f"real-{host}-{ifname}.pcap"
        # -Z root: keep privileges so the file can be written in pytest's root-only tmp dir
        procs[(host, ifname)] = (sides[host].popen(
            ["tcpdump", "-i", ifname, "-w", str(path), "-U", "--immediate-mode", "-n", "-Z", "root", "-c", "50"],
            stdout=subprocess.DEVNULL), path)
    for proc, _ in procs.values():
        _wait_listening(proc, time.monotonic() + 10)
    who, cmd = scenario["ping"]
    outputs.append((f"[{who}] {cmd}", _normalise_output(cmd, sides[who].run(cmd))))
    time.sleep(0.3)  # let -U flush the last frames
    for proc, _ in procs.values():
        proc.terminate()
        proc.wait(timeout=10)
    owners = mac_owners(sides)
    frames = {key: frame_summary(rdpcap(str(path)), owners) for key, (_, path) in procs.items()}
    return outputs, frames


def run_emu(scenario, tmp_path, pure_python: bool):
    lab = emu_lab(pure_python)
    sides = {h: EmuSide(lab.netns(h)) for h in scenario["hosts"]}
    names = {h: h for h in sides}
    outputs = []
    for who, template in scenario["setup"]:
        cmd = template.format(**names)
        outputs.append((f"[{who}] {template}", sides[who].run(cmd)))
    for host, ifname in scenario["capture"]:
        lab.capture(host, ifname)
    who, cmd = scenario["ping"]
    outputs.append((f"[{who}] {cmd}", _normalise_output(cmd, sides[who].run(cmd))))
    owners = mac_owners(sides)
    frames = {}
    for host, ifname in scenario["capture"]:
        path = tmp_path / f"emu-{host}-{ifname}.pcapng"
        lab.write_pcap(str(path), names={f"{host}/{ifname}"})
        frames[(host, ifname)] = frame_summary(rdpcap(str(path)), owners)
    return outputs, frames


def _fmt(frames) -> str:
    return "\n".join("    " + ", ".join(f"{k}={v}" for k, v in f) for f in frames)


@pytest.mark.parametrize("pure_python", [False, True], ids=["cython", "pure"])
@pytest.mark.parametrize("scenario", [DIRECT, ROUTED], ids=["direct", "routed"])
def test_ping_frames(real_netns, tmp_path, scenario, pure_python):
    k_out, k_frames = run_real(scenario, real_netns, tmp_path)
    # The real run itself must be what we expect: ping succeeded, ARP then ICMP.
    assert k_out[-1][1][0] == 0, k_out[-1]
    for key, frames in k_frames.items():
        kinds = [(dict(f).get("arp_op"), dict(f).get("icmp_type")) for f in frames]
        assert kinds == [(1, None), (2, None), (None, 8), (None, 0)], (key, kinds)
        assert dict(frames[0])["dst"] == "broadcast" and dict(frames[1])["dst"] != "broadcast"

    e_out, e_frames = run_emu(scenario, tmp_path, pure_python)
    bad = [(c, k, e) for (c, k), (_, e) in zip(k_out, e_out, strict=True) if k != e]
    problems = [diff_report("commands", bad)] if bad else []
    for key in k_frames:
        if k_frames[key] != e_frames.get(key):
            problems.append(f"frames on {key[0]}/{key[1]} differ:\n  kernel:\n{_fmt(k_frames[key])}\n"
                            f"  emulator:\n{_fmt(e_frames.get(key, []))}")
    assert not problems, "\n".join(problems)
