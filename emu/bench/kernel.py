"""The Linux kernel baseline of the forwarding benchmarks: the same topologies in real namespaces.

Each topology is built with iproute2 in fresh, isolated network namespaces named `emub-<pid>-<tag>-<role>`
(IPv6 off, never connected to the root namespace, deleted at the end even on errors or Ctrl-C), mirroring
what the emulator builds:

* `veth`: pod A --veth-- pod B in one /24.
* `bridge`: pods A and B on `cni0` (10.244.1.1/24) in a node namespace.
* `routed`: pod A -- router (ip_forward=1) -- pod B, two /24s, default routes via the router.
* `flannel`: pod a -> node1 (cni0, flannel.1: vxlan id 1 dstport 8472 nolearning, permanent neighbour,
  FDB entry and onlink route for the other node's subnet, as flanneld leaves them) -> node1 eth0 --veth--
  node2 eth0 (192.168.50.0/24) -> node2 (flannel.1, cni0) -> pod b; MTU 1450 on the pods.
* `dnat`: a client sends to the ClusterIP-like 10.96.0.10:53/udp; the node's iptables nat PREROUTING
  DNATs it to the backend pod 10.244.1.3:5353 on cni0. When br_netfilter is there (the node namespace reads
  net.bridge.bridge-nf-call-iptables = 1) the client pod sits on cni0 as well, as in Kubernetes (its frames
  reach the node's IP layer through the bridge, addressed to the gateway); otherwise the client has its own
  routed veth to the node (10.244.0.2/24 via 10.244.0.1) so the DNAT happens in the plain routed path. The
  note says which.

Measurement: ONE sender process pinned with os.sched_setaffinity to one CPU in the sending pod floods 60-byte
UDP frames (14 + 20 + 8 + 18 bytes of payload), at most `packets` of them and for at most `seconds`, round
robin over `flows` source ports. The sender is a tiny C program (sendmmsg in batches of 64 on a raw IPv4
socket) compiled with the system C compiler at run time into a temporary directory, or a Python sendto loop
when no compiler is found (said in the note). The receiving pod has a UDP socket bound on the destination
port; the frames delivered there are the deltas of its namespace's Udp InDatagrams + NoPorts + RcvbufErrors
(/proc/<pid>/net/snmp of the receiver, the socket drained before each reading). pps = delivered / the
sender's wall time while sending. The flood goes out in up to five rounds (the bounds hold for their sum) so the
note can show the spread of the per-round rates: on a shared virtual machine it is often +-30%.

veth transmission hands the frame to the peer's per-CPU backlog and the softirq runs it on the same CPU when
the sender's transmit path re-enables bottom halves, so bridging, routing, netfilter and VXLAN encapsulation
and decapsulation all run on the sender's CPU: with the sender pinned, the rate is packets per second per
core. The cost of the sender alone (the same loop towards a blackhole: a veth in the sending pod whose peer
is down, where the frame is dropped right after routing) is measured once per process and reported in the
note, so one can see how much of the per-core budget the sender itself takes.

With `pcap=True` tcpdump writes the receiving pod's host-side interface (pod B's own eth0 in `veth`, which has
no host side) to a temporary pcap file during the run, or, without tcpdump, a Python AF_PACKET reader does.
The capture process runs on another CPU; the kernel's copy into its ring runs in the sender's softirq.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from emu import fastpath

TOPOLOGIES = ("veth", "bridge", "routed", "flannel", "dnat")

PREFIX = "emub-"
TIMEOUT = 20.0  # seconds, for any single setup command
BATCH = 64  # sendmmsg batch of the C sender
PAYLOAD = 18  # bytes: 14 + 20 + 8 + 18 = 60-byte Ethernet frames before the FCS
SPORT_BASE = 10000
MAX_FLOWS = 50000
CALIBRATION_SECONDS = 0.3
ROUNDS = 5  # the flood is sent in this many rounds, to show the spread of the rate

_NAME_RE = re.compile(r"^emub-(\d+)-[0-9a-f]{6}-[a-z0-9]+$")


@dataclass
class KernelResult:
    """One kernel run: delivered packets per second per sender core, or None when skipped or failed."""

    pps: float | None  # packets/s delivered at the receiving pod per sender core; None when skipped
    note: str  # e.g. "skipped: needs root" / "skipped: ip not found" / details of the run
    details: dict[str, float] = field(default_factory=dict)  # sent, delivered, elapsed_s, underlay_rx, ...


def available() -> str | None:
    """None when kernel runs are possible here, else the reason."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root"
    if not sys.platform.startswith("linux") or not os.path.exists("/proc/self/ns/net"):
        return "needs Linux network namespaces"
    if shutil.which("ip") is None:
        return "iproute2 missing (ip not found)"
    try:
        res = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=TIMEOUT)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"ip netns list failed: {exc}"
    if res.returncode != 0:
        return f"ip netns list failed: {res.stderr.strip()}"
    return None


def kernel_pps(topo: str, flows: int = 1, *, pcap: bool = False, packets: int = 200_000,
               seconds: float = 2.0) -> KernelResult:
    """Floods `topo` in real namespaces from one sender pinned to one CPU; pps delivered at the receiving pod.

    The kernel forwards veth, bridge, routed and VXLAN traffic in the sender's softirq on the sender's CPU, so
    the rate is per core. `flows` source ports are used round robin; the bounds (`packets`, `seconds`) hold for
    the measured flood (a warm-up of max(64, flows) frames per try comes before it).
    """
    return _kernel_pps(topo, flows, pcap=pcap, packets=packets, seconds=seconds)


# --- the topologies -----------------------------------------------------------------------------------


@dataclass
class _Plan:
    """What to build and where to send: setup commands in order, sender, receiver, capture point."""

    steps: list[tuple[str, str, list[str]]]  # (role, tool: ip | bridge | iptables-restore | sysctl, lines)
    sender: str
    src: str
    dst: str
    dport: int
    receiver: str
    port: int
    capture: tuple[str, str]  # (role, ifname): the receiving pod's host-side interface
    underlay: tuple[str, str] | None = None  # (role, ifname) whose rx counter proves VXLAN was used
    text: str = ""


Steps = list[tuple[str, str, list[str]]]
_FWD_SYSCTL = ["net.ipv4.ip_forward=1"]
_ROLES = {"veth": ("a", "b"), "bridge": ("node", "a", "b"), "routed": ("router", "a", "b"),
          "flannel": ("node1", "node2", "a", "b"), "dnat": ("node", "client", "backend")}
_TOOLS = {"flannel": ("bridge",), "dnat": ("iptables-restore",)}
_COMMON_TOOLS = ("sysctl",)


def _bridge_node(node: str, i: int = 1, mtu: int = 1500) -> Steps:
    """A node with ip_forward and the bridge plugin's cni0 holding the gateway 10.244.<i>.1/24."""
    return [(node, "sysctl", _FWD_SYSCTL),
            (node, "ip", ["link set lo up", f"link add cni0 mtu {mtu} type bridge",
                          f"addr add 10.244.{i}.1/24 dev cni0", "link set cni0 up"])]


def _pod_on_bridge(ns: dict[str, str], node: str, pod: str, veth: str, ip: str, mtu: int = 1500) -> Steps:
    """The bridge plugin's work: a veth to the pod, its end on cni0, the pod's address and default route."""
    gw = ip.rsplit(".", 1)[0] + ".1"
    return [
        (node, "ip", [f"link add {veth} mtu {mtu} type veth peer name eth0 netns {ns[pod]}",
                      f"link set {veth} master cni0", f"link set {veth} up"]),
        (pod, "ip", [f"addr add {ip}/24 dev eth0", "link set eth0 up", "link set lo up",
                     f"route add default via {gw} dev eth0"]),
    ]


def _plan_veth(ns: dict[str, str]) -> _Plan:
    steps = [
        ("a", "ip", [f"link add eth0 type veth peer name eth0 netns {ns['b']}", "addr add 10.244.1.2/24 dev eth0",
                     "link set eth0 up", "link set lo up"]),
        ("b", "ip", ["addr add 10.244.1.3/24 dev eth0", "link set eth0 up", "link set lo up"]),
    ]
    return _Plan(steps, "a", "10.244.1.2", "10.244.1.3", 5001, "b", 5001, ("b", "eth0"), text="pod a --veth-- pod b")


def _plan_bridge(ns: dict[str, str]) -> _Plan:
    steps = (_bridge_node("node") + _pod_on_bridge(ns, "node", "a", "vetha", "10.244.1.2")
             + _pod_on_bridge(ns, "node", "b", "vethb", "10.244.1.3"))
    return _Plan(steps, "a", "10.244.1.2", "10.244.1.3", 5001, "b", 5001, ("node", "vethb"),
                 text="pod a -> cni0 (node) -> pod b")


def _plan_routed(ns: dict[str, str]) -> _Plan:
    steps = [
        ("router", "sysctl", _FWD_SYSCTL),
        ("router", "ip", [f"link add eth1 type veth peer name eth0 netns {ns['a']}",
                          f"link add eth2 type veth peer name eth0 netns {ns['b']}",
                          "addr add 10.244.1.1/24 dev eth1", "addr add 10.244.2.1/24 dev eth2",
                          "link set eth1 up", "link set eth2 up", "link set lo up"]),
        ("a", "ip", ["addr add 10.244.1.2/24 dev eth0", "link set eth0 up", "link set lo up",
                     "route add default via 10.244.1.1 dev eth0"]),
        ("b", "ip", ["addr add 10.244.2.2/24 dev eth0", "link set eth0 up", "link set lo up",
                     "route add default via 10.244.2.1 dev eth0"]),
    ]
    return _Plan(steps, "a", "10.244.1.2", "10.244.2.2", 5001, "b", 5001, ("router", "eth2"),
                 text="pod a -> router (ip_forward) -> pod b")


_VTEP = {1: "0e:65:6d:75:00:01", 2: "0e:65:6d:75:00:02"}


def _flannel_node(ns: dict[str, str], i: int) -> Steps:
    """Node i as flanneld and the bridge plugin leave it (the commands of tests/test_flannel_real.py)."""
    o = 3 - i
    node, pod = f"node{i}", "a" if i == 1 else "b"
    ip, oip = f"192.168.50.{i}", f"192.168.50.{o}"
    lines = [f"link add eth0 type veth peer name eth0 netns {ns['node2']}"] if i == 1 else []
    lines += [
        f"addr add {ip}/24 dev eth0", "link set eth0 up",
        f"link add flannel.1 address {_VTEP[i]} mtu 1450 type vxlan id 1 local {ip} dev eth0 dstport 8472 nolearning",
        f"addr add 10.244.{i}.0/32 dev flannel.1", "link set flannel.1 up",
        f"neigh replace 10.244.{o}.0 lladdr {_VTEP[o]} dev flannel.1 nud permanent",
        f"route replace 10.244.{o}.0/24 via 10.244.{o}.0 dev flannel.1 onlink",
    ]
    steps = _bridge_node(node, i, 1450) + [
        (node, "ip", lines), (node, "bridge", [f"fdb replace {_VTEP[o]} dev flannel.1 dst {oip} self permanent"])]
    steps += _pod_on_bridge(ns, node, pod, f"veth{pod}", f"10.244.{i}.2", 1450)
    steps.append((pod, "ip", [f"route add 10.244.0.0/16 via 10.244.{i}.1 dev eth0"]))
    return steps


def _plan_flannel(ns: dict[str, str]) -> _Plan:
    return _Plan(_flannel_node(ns, 1) + _flannel_node(ns, 2), "a", "10.244.1.2", "10.244.2.2", 5001, "b", 5001,
                 ("node2", "vethb"), underlay=("node2", "eth0"),
                 text="pod a -> node1 cni0 -> flannel.1 (VXLAN 8472) -> eth0 --veth-- eth0 -> node2 flannel.1 -> "
                      "cni0 -> pod b")


def _plan_dnat(ns: dict[str, str], bridged: bool) -> _Plan:
    """Client -> ClusterIP DNAT -> backend: client on cni0 when `bridged` (br_netfilter), else on a routed veth."""
    steps = _bridge_node("node") + _pod_on_bridge(ns, "node", "backend", "vethbk", "10.244.1.3")
    if bridged:
        steps += _pod_on_bridge(ns, "node", "client", "vethcl", "10.244.1.2")
        src, how = "10.244.1.2", "client on cni0, DNAT through br_netfilter (bridge-nf-call-iptables=1)"
    else:
        steps += [
            ("node", "ip", [f"link add vethcl type veth peer name eth0 netns {ns['client']}",
                            "addr add 10.244.0.1/24 dev vethcl", "link set vethcl up"]),
            ("client", "ip", ["addr add 10.244.0.2/24 dev eth0", "link set eth0 up", "link set lo up",
                              "route add default via 10.244.0.1 dev eth0"]),
        ]
        src, how = "10.244.0.2", "client on its own routed veth (no br_netfilter), DNAT in the routed path"
    rules = ["*nat", "-A PREROUTING -d 10.96.0.10/32 -p udp -m udp --dport 53 -j DNAT --to-destination "
             "10.244.1.3:5353", "COMMIT"]
    steps.append(("node", "iptables-restore", rules))
    return _Plan(steps, "client", src, "10.96.0.10", 53, "backend", 5353, ("node", "vethbk"),
                 text=f"client -> 10.96.0.10:53 DNAT to 10.244.1.3:5353 ({how})")


def topology(topo: str, ns: dict[str, str], *, bridged: bool = True) -> _Plan:
    """The commands that build `topo` (namespace names by role in `ns`): the same for the kernel and emu."""
    if topo == "dnat":
        return _plan_dnat(ns, bridged)
    return {"veth": _plan_veth, "bridge": _plan_bridge, "routed": _plan_routed, "flannel": _plan_flannel}[topo](ns)


def roles(topo: str) -> tuple[str, ...]:
    """The namespaces `topo` needs, by role."""
    return _ROLES[topo]


# --- namespaces and processes -------------------------------------------------------------------------


def _netns_list() -> set[str]:
    res = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=TIMEOUT)
    return {line.split()[0] for line in res.stdout.splitlines() if line.strip()}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_stale() -> None:
    """Deletes `emub-<pid>-...` namespaces left by a process of this module that no longer exists."""
    for name in _netns_list():
        m = _NAME_RE.match(name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=TIMEOUT)


class _Lab:
    """The namespaces and processes of one run; `close` removes them all (SIGINT held off meanwhile)."""

    def __init__(self, roles: tuple[str, ...]) -> None:
        tag = uuid.uuid4().hex[:6]
        self.ns = {role: f"{PREFIX}{os.getpid()}-{tag}-{role}" for role in roles}
        self.created: list[str] = []
        self.procs: list[subprocess.Popen] = []

    def open(self) -> None:
        """Creates the namespaces, IPv6 off in each (call inside try/finally with `close`)."""
        for name in self.ns.values():
            res = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, timeout=TIMEOUT)
            if res.returncode != 0:
                raise RuntimeError(f"ip netns add {name}: {res.stderr.strip()}")
            self.created.append(name)
            self.sysctl(name, ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"])

    def sysctl(self, name: str, settings: list[str]) -> None:
        """`sysctl -w` inside namespace `name` (never the root namespace)."""
        assert name in self.created
        self.check(["ip", "netns", "exec", name, "sysctl", "-qw", *settings], f"netns {name}: sysctl")

    def check(self, argv: list[str], what: str, stdin: str | None = None) -> str:
        res = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=TIMEOUT)
        if res.returncode != 0:
            raise RuntimeError(f"{what}: {(res.stderr or res.stdout).strip()}")
        return res.stdout

    def step(self, role: str, tool: str, lines: list[str]) -> None:
        name = self.ns[role]
        if tool == "sysctl":
            self.sysctl(name, lines)
        elif tool in ("ip", "bridge"):
            self.check([tool, "-n", name, "-batch", "-"], f"netns {name}: {tool} {lines}", "\n".join(lines) + "\n")
        elif tool == "iptables-restore":
            self.check(["ip", "netns", "exec", name, "iptables-restore", "--noflush"], f"netns {name}: iptables",
                       "\n".join(lines) + "\n")
        else:  # pragma: no cover - programming error
            raise ValueError(tool)

    def read(self, role: str, path: str) -> str | None:
        """A file as seen from inside the namespace (e.g. a /proc/sys entry), None when it does not exist."""
        res = subprocess.run(["ip", "netns", "exec", self.ns[role], "cat", path], capture_output=True, text=True,
                             timeout=TIMEOUT)
        return res.stdout.strip() if res.returncode == 0 else None

    def rx_packets(self, role: str, ifname: str) -> int:
        out = self.check(["ip", "-n", self.ns[role], "-s", "-j", "link", "show", "dev", ifname],
                         f"netns {self.ns[role]}: ip -s link show {ifname}")
        return int(json.loads(out)[0]["stats64"]["rx"]["packets"])

    def popen(self, role: str, argv: list[str], cpu: int | None = None, **kw: object) -> subprocess.Popen:
        """Starts `argv` inside the namespace of `role`, pinned to `cpu` when given; killed by `close`."""
        pre = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns[role], *argv], preexec_fn=pre, **kw)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        with _sigint_held():
            for proc in self.procs:
                if proc.poll() is None:
                    proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
                for f in (proc.stdin, proc.stdout, proc.stderr):
                    if f is not None:
                        with contextlib.suppress(OSError):
                            f.close()
            self.procs.clear()
            for name in reversed(self.ns.values()):  # all of them: an interrupted `open` may leave one unrecorded
                subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=TIMEOUT)
            self.created.clear()


@contextlib.contextmanager
def _sigint_held() -> Iterator[None]:
    """Blocks SIGINT in this thread while cleaning up; a Ctrl-C pressed meanwhile is raised afterwards."""
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    except (AttributeError, ValueError, OSError):  # pragma: no cover - no signals here
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _readline(stream: object, deadline: float) -> str:
    """One line from a child's pipe, or '' when the deadline passes or the pipe closes."""
    while time.monotonic() < deadline:
        r, _, _ = select.select([stream], [], [], 0.05)
        if r:
            return stream.readline()  # type: ignore[attr-defined]
    return ""


def _capture_stats(out: str) -> dict[str, int]:
    """The closing counts of tcpdump (or of the Python reader, which prints the same words)."""
    stats = {}
    for key, rx in (("written", r"(\d+) packets? captured"), ("received", r"(\d+) packets? received by filter"),
                    ("dropped", r"(\d+) packets? dropped by kernel")):
        m = re.search(rx, out)
        if m:
            stats[key] = int(m.group(1))
    return stats


def _udp_counters(pid: int) -> dict[str, int]:
    """The Udp line of /proc/<pid>/net/snmp: the counters of the namespace `pid` lives in."""
    lines = [line.split() for line in Path(f"/proc/{pid}/net/snmp").read_text().splitlines()
             if line.startswith("Udp:")]
    return dict(zip(lines[0][1:], map(int, lines[1][1:]), strict=True))


# --- frames and senders -------------------------------------------------------------------------------


def udp_packet(src: str, dst: str, sport: int, dport: int, payload: bytes = b"\0" * PAYLOAD) -> bytes:
    """An IPv4+UDP packet (DF set, TTL 64, the id and IP checksum left for the kernel to fill in)."""
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    ulen = 8 + len(payload)
    udp = struct.pack("!HHHH", sport, dport, ulen, 0) + payload
    csum = fastpath.load().udp_checksum(int.from_bytes(s, "big"), int.from_bytes(d, "big"), udp)
    udp = udp[:6] + struct.pack("!H", csum) + udp[8:]
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, 0, 0x4000, 64, 17, 0, s, d) + udp


_C_SENDER = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#define PKT 46
#define BATCH 64
static unsigned long long now_ns(void) {
    struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
    return (unsigned long long)t.tv_sec * 1000000000ULL + t.tv_nsec;
}
int main(int argc, char **argv) {
    /* templates flows dst count seconds: packets (PKT bytes each, one per flow) from the templates file */
    if (argc != 6) { fprintf(stderr, "usage: sender TEMPLATES FLOWS DST COUNT SECONDS\n"); return 2; }
    long flows = atol(argv[2]); unsigned long long count = strtoull(argv[4], 0, 10);
    unsigned long long limit = (unsigned long long)(atof(argv[5]) * 1e9);
    unsigned char *tpl = malloc(PKT * flows);
    FILE *f = fopen(argv[1], "rb");
    if (!f || fread(tpl, PKT, flows, f) != (size_t)flows) { perror("templates"); return 2; }
    fclose(f);
    int fd = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
    if (fd < 0) { perror("socket"); return 2; }
    struct sockaddr_in dst; memset(&dst, 0, sizeof dst);
    dst.sin_family = AF_INET; inet_pton(AF_INET, argv[3], &dst.sin_addr);
    struct mmsghdr msgs[BATCH]; struct iovec iov[BATCH];
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_len = PKT;
        msgs[i].msg_hdr.msg_iov = &iov[i]; msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &dst; msgs[i].msg_hdr.msg_namelen = sizeof dst;
    }
    unsigned long long sent = 0, errors = 0, attempted = 0, calls = 0; long flow = 0;
    unsigned long long t0 = now_ns(), t1 = t0;
    while (attempted < count) {
        unsigned n = count - attempted < BATCH ? (unsigned)(count - attempted) : BATCH;
        long fl = flow;
        for (unsigned i = 0; i < n; i++) { iov[i].iov_base = tpl + PKT * fl; if (++fl == flows) fl = 0; }
        int r = sendmmsg(fd, msgs, n, 0);
        if (r <= 0) { errors++; r = 1; } else { sent += r; }
        attempted += r; flow = (flow + r) % flows;
        if ((++calls & 7) == 0) { t1 = now_ns(); if (t1 - t0 >= limit) break; }
    }
    t1 = now_ns();
    printf("%llu %llu %llu\n", sent, errors, t1 - t0);
    return 0;
}
"""

_PY_SENDER = r"""
import socket, sys, time
tpl, flows, dst, count, limit = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
data = open(tpl, "rb").read()
pkts = [data[46 * i:46 * i + 46] for i in range(flows)]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
send, addr, now = s.sendto, (dst, 0), time.monotonic
sent = errors = i = 0
t0 = now()
while i < count:
    try:
        send(pkts[i % flows], addr)
        sent += 1
    except OSError:
        errors += 1
    i += 1
    if not i & 255 and now() - t0 >= limit:
        break
t1 = now()
print(sent, errors, int((t1 - t0) * 1e9))
"""

_RECEIVER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
while sys.stdin.readline().strip() == "drain":
    s.setblocking(False)
    n = 0
    try:
        while True:
            s.recv(2048)
            n += 1
    except BlockingIOError:
        pass
    print(n, flush=True)
"""

_PY_CAPTURE = r"""
import signal, socket, struct, sys, time
ifname, path = sys.argv[1], sys.argv[2]
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
s.bind((ifname, 0))
s.settimeout(0.05)
out = open(path, "wb", buffering=1 << 20)
out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
print("listening on", ifname, flush=True)
n = 0
while not stop:
    try:
        frame = s.recv(65535)
    except (socket.timeout, InterruptedError):
        continue
    t = time.time()
    out.write(struct.pack("<IIII", int(t), int(t % 1 * 1e6), len(frame), len(frame)) + frame)
    n += 1
out.close()
received, dropped = struct.unpack("II", s.getsockopt(263, 6, 8))  # SOL_PACKET, PACKET_STATISTICS
print(n, "packets captured;", received, "packets received by filter;", dropped, "packets dropped by kernel")
"""

_state: dict[str, object] = {}


def _tmpdir() -> Path:
    """One private temporary directory per process, removed at exit."""
    if "tmp" not in _state:
        path = tempfile.mkdtemp(prefix="emub-")
        atexit.register(shutil.rmtree, path, True)
        _state["tmp"] = path
    return Path(str(_state["tmp"]))


def _c_sender() -> tuple[str | None, str]:
    """The compiled C sender's path (built once per process), or None and why not."""
    if "csender" not in _state:
        cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
        if cc is None:
            _state["csender"] = (None, "no C compiler (cc) found")
        else:
            src = _tmpdir() / "sender.c"
            exe = _tmpdir() / "sender"
            src.write_text(_C_SENDER)
            res = subprocess.run([cc, "-O2", "-o", str(exe), str(src)], capture_output=True, text=True, timeout=60)
            ok = res.returncode == 0 and exe.exists()
            _state["csender"] = (str(exe), "") if ok else (None, f"cc failed: {res.stderr.strip()[:200]}")
    return _state["csender"]  # type: ignore[return-value]


def _cpus() -> tuple[int, int | None]:
    """The sender's CPU (the first allowed one) and another CPU for helpers, when there is one."""
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[0], (cpus[-1] if len(cpus) > 1 else None)


def _send(lab: _Lab, plan: _Plan, sender: list[str], templates: Path, flows: int, dst: str, count: int,
          seconds: float, cpu: int) -> tuple[int, int, float]:
    """Runs one bounded flood in the sending pod: (sent, errors, elapsed seconds while sending)."""
    proc = lab.popen(plan.sender, [*sender, str(templates), str(flows), dst, str(count), f"{seconds:.3f}"], cpu=cpu,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=seconds + 10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise RuntimeError("the sender did not stop in time") from None
    if proc.returncode != 0:
        raise RuntimeError(f"sender failed in {lab.ns[plan.sender]}: {err.strip()}")
    sent, errors, ns = (int(x) for x in out.split())
    return sent, errors, ns / 1e9


def _calibrate(lab: _Lab, plan: _Plan, sender: list[str], kind: str, templates: Path, cpu: int) -> float | None:
    """Packets/s of the sender alone, towards a blackhole in its own pod (once per process and sender kind)."""
    key = f"alone-{kind}"
    if key not in _state:
        lab.step(plan.sender, "ip", ["link add emubh0 type veth peer name emubh1",
                                     "addr add 10.255.255.1/24 dev emubh0", "link set emubh0 up",
                                     "neigh replace 10.255.255.2 lladdr 02:00:00:00:00:02 dev emubh0 nud permanent"])
        sent, _errors, elapsed = _send(lab, plan, sender, templates, 1, "10.255.255.2", 10_000_000,
                                       CALIBRATION_SECONDS, cpu)
        _state[key] = sent / elapsed if elapsed > 0 and sent else None
    return _state[key]  # type: ignore[return-value]


# --- the run ------------------------------------------------------------------------------------------


def _kernel_pps(topo: str, flows: int = 1, *, pcap: bool = False, packets: int = 200_000, seconds: float = 2.0,
                python_sender: bool = False, python_capture: bool = False) -> KernelResult:
    """kernel_pps with the fallbacks selectable (for tests): the Python sender and the Python capture."""
    if topo not in TOPOLOGIES:
        raise ValueError(f"unknown topology {topo!r}: expected one of {', '.join(TOPOLOGIES)}")
    if not 1 <= flows <= MAX_FLOWS:
        raise ValueError(f"flows must be in 1..{MAX_FLOWS}, got {flows}")
    if packets < 1 or seconds <= 0:
        raise ValueError("packets and seconds must be positive")
    reason = available()
    if reason is not None:
        return KernelResult(None, f"skipped: {reason}")
    for tool in _COMMON_TOOLS + _TOOLS.get(topo, ()):
        if shutil.which(tool) is None:
            return KernelResult(None, f"skipped: {tool} not found")
    notes: list[str] = []
    use_tcpdump = pcap and not python_capture and shutil.which("tcpdump") is not None
    if pcap and not use_tcpdump:
        notes.append("capture: Python AF_PACKET reader" + ("" if python_capture else " (tcpdump not found)"))
    exe, why = (None, "Python sender requested") if python_sender else _c_sender()
    if exe is None:
        sender, kind = [sys.executable, "-c", _PY_SENDER], "python"
        notes.append(f"sender: Python sendto loop ({why})")
    else:
        sender, kind = [exe], "c"
        notes.append(f"sender: C sendmmsg x{BATCH}")

    _sweep_stale()
    lab = _Lab(_ROLES[topo])
    try:
        lab.open()
        return _run(lab, topo, flows, pcap, use_tcpdump, packets, seconds, sender, kind, notes)
    except (RuntimeError, OSError, subprocess.SubprocessError, ValueError, KeyError) as exc:
        return KernelResult(None, f"failed: {exc}")
    finally:
        lab.close()


def _run(lab: _Lab, topo: str, flows: int, pcap: bool, use_tcpdump: bool, packets: int, seconds: float,
         sender: list[str], kind: str, notes: list[str]) -> KernelResult:
    ns = {role: lab.ns[role] for role in lab.ns}
    bridged = topo == "dnat" and lab.read("node", "/proc/sys/net/bridge/bridge-nf-call-iptables") == "1"
    plan = topology(topo, ns, bridged=bridged)
    for role, tool, lines in plan.steps:
        lab.step(role, tool, lines)
    cpu, helper_cpu = _cpus()
    templates = _tmpdir() / f"flows-{lab.ns[plan.sender]}.bin"
    templates.write_bytes(b"".join(udp_packet(plan.src, plan.dst, SPORT_BASE + i, plan.dport) for i in range(flows)))
    try:
        alone = _calibrate(lab, plan, sender, kind, templates, cpu)

        rx = lab.popen(plan.receiver, [sys.executable, "-c", _RECEIVER, str(plan.port)], cpu=helper_cpu,
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        if _readline(rx.stdout, time.monotonic() + TIMEOUT).strip() != "ready":
            raise RuntimeError(f"the receiver in {lab.ns[plan.receiver]} did not start")

        def delivered_total() -> int:
            rx.stdin.write("drain\n")
            rx.stdin.flush()
            if not _readline(rx.stdout, time.monotonic() + TIMEOUT).strip().isdigit():
                raise RuntimeError("the receiver did not answer")
            c = _udp_counters(rx.pid)
            return c["InDatagrams"] + c["NoPorts"] + c["RcvbufErrors"]

        # Warm up: ARP along the path, conntrack entries of every flow; then check the path delivers.
        for _ in range(3):
            _send(lab, plan, sender, templates, flows, plan.dst, max(64, flows), 1.0, cpu)
            time.sleep(0.05)
            if delivered_total() > 0:
                break
        else:
            raise RuntimeError(f"{topo}: nothing reached {lab.ns[plan.receiver]} while warming up")

        cap = None
        capfile = _tmpdir() / f"capture-{lab.ns[plan.sender]}.pcap"
        if pcap:
            role, ifname = plan.capture
            if use_tcpdump:
                argv = ["tcpdump", "-i", ifname, "-w", str(capfile), "-n", "-s", "0", "-B", "16384", "-Z", "root"]
            else:
                argv = [sys.executable, "-c", _PY_CAPTURE, ifname, str(capfile)]
            cap = lab.popen(role, argv, cpu=helper_cpu, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            deadline, seen = time.monotonic() + TIMEOUT, ""
            while "listening on" not in seen:
                line = _readline(cap.stdout, deadline)
                if not line:
                    raise RuntimeError(f"the capture on {lab.ns[role]}/{ifname} did not start: {seen.strip()!r}")
                seen += line

        under0 = lab.rx_packets(*plan.underlay) if plan.underlay else 0
        sent = errors = delivered = 0
        elapsed, rates = 0.0, []
        rounds = max(1, min(ROUNDS, packets // 1000))
        count = -(-packets // rounds)
        for _ in range(rounds):
            left_s = seconds - elapsed
            if sent + errors >= packets or left_s <= 0.001:
                break
            before = delivered_total()
            n = min(count, packets - sent - errors)
            s_r, e_r, t_r = _send(lab, plan, sender, templates, flows, plan.dst, n, min(left_s, seconds / rounds), cpu)
            time.sleep(0.01)
            d_r = delivered_total() - before
            sent, errors, delivered, elapsed = sent + s_r, errors + e_r, delivered + d_r, elapsed + t_r
            if t_r > 0:
                rates.append(d_r / t_r)
        details = {"sent": float(sent), "delivered": float(delivered), "elapsed_s": elapsed, "errors": float(errors),
                   "flows": float(flows), "rounds": float(len(rates))}
        if rates:
            details.update(round_min_pps=min(rates), round_max_pps=max(rates))
        if plan.underlay:
            details["underlay_rx"] = float(lab.rx_packets(*plan.underlay) - under0)
        if cap is not None:
            time.sleep(0.3)  # let the capture process read what is still in its ring
            cap.send_signal(signal.SIGTERM)
            out, _ = cap.communicate(timeout=TIMEOUT)
            stats = _capture_stats(out)
            details.update({f"capture_{k}": float(v) for k, v in stats.items()})
            size = capfile.stat().st_size if capfile.exists() else 0
            notes.append(f"capture on {plan.capture[0]}/{plan.capture[1]}: " + ", ".join(
                f"{v} {k.replace('_', ' ')}" for k, v in stats.items()) + f", {size} bytes written")
        if elapsed <= 0:
            raise RuntimeError("the sender reported no elapsed time")
        pps = delivered / elapsed
        if alone:
            details["sender_alone_pps"] = alone
            notes.append(f"sender alone (blackhole) {alone:,.0f} pps")
        if plan.underlay:
            notes.append(f"underlay {plan.underlay[0]}/{plan.underlay[1]} rx +{int(details['underlay_rx'])}")
        if errors:
            notes.append(f"{errors} send errors")
        if helper_cpu is None:
            notes.append("one CPU only: the receiver and the capture share the sender's CPU")
        head = f"{plan.text}; {flows} flow(s), {sent} sent, {delivered} delivered in {elapsed:.3f} s on CPU {cpu}"
        if len(rates) > 1:
            head += f" ({len(rates)} rounds, {min(rates):,.0f}..{max(rates):,.0f} pps)"
        return KernelResult(pps, "; ".join([head, *notes]), details)
    finally:
        templates.unlink(missing_ok=True)
        (_tmpdir() / f"capture-{lab.ns[plan.sender]}.pcap").unlink(missing_ok=True)
