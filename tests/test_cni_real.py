"""The emulated CNI plugins against the real ones (containernetworking-plugins in /usr/lib/cni).

Each test builds the same world twice: real `emut-` namespaces where the real plugin binaries run
(`ip netns exec NODE /usr/lib/cni/bridge < config` with the CNI_* environment), and emulated
namespaces of the same names where emu.cni runs the same config bytes with the same environment.
Then it compares, after replacing what the kernel or the plugin picks at random (MAC addresses,
the 8 hex characters of host veth names, ifindex values):

* every ADD / CHECK / DEL output and exit code, error JSON included;
* the host-local files, byte for byte (names and contents, `last_reserved_ip.0`, `lock`);
* `ip -j link`, `ip -j addr`, `ip -j route` of the node and of every pod, and the node's nat table.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from emu.cni import Runtime
from tests.linux import (  # noqa: F401  (real_netns is a fixture)
    Normaliser,
    RealNetns,
    emu_lab,
    linux_available,
    real_netns,
)

pytestmark = pytest.mark.linux

PLUGIN_DIR = "/usr/lib/cni"
PLUGINS = ("bridge", "host-local", "loopback", "ptp", "portmap")
ENV_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
TIMEOUT = 30
DATA = Path(__file__).parent / "data" / "cni"

BRIDGE_LINK = "node: bridge -d link show"

Result = tuple[int, str]


def plugins_missing() -> str | None:
    reason = linux_available()
    if reason:
        return reason
    for name in PLUGINS:
        if not os.access(f"{PLUGIN_DIR}/{name}", os.X_OK):
            return f"the real CNI plugins are not installed ({PLUGIN_DIR}/{name} missing)"
    if shutil.which("iptables") is None or shutil.which("iptables-save") is None:
        return "iptables is not installed"
    return None


def load(name: str, **changes: Any) -> dict[str, Any]:
    """A config fixture from tests/data/cni, with top-level fields changed."""
    conf = json.loads((DATA / name).read_text())
    conf.update(changes)
    return conf


def with_ipam(conf: dict[str, Any], data_dir: str, **changes: Any) -> dict[str, Any]:
    conf = json.loads(json.dumps(conf))
    conf["ipam"]["dataDir"] = data_dir
    conf["ipam"].update(changes)
    return conf


_VETH = re.compile(r"\bveth[0-9a-f]{8}\b")


class Side:
    """One of the two worlds: its namespaces, how it runs a plugin, and its normaliser."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.norm = Normaliser()
        self.veths: dict[str, str] = {}

    def text(self, s: str) -> str:
        """Random veth names and MACs replaced by tokens in order of appearance."""
        def veth(m: re.Match[str]) -> str:
            return self.veths.setdefault(m.group(0), f"<veth{len(self.veths) + 1}>")

        return self.norm.text(_VETH.sub(veth, s))

    def json_text(self, s: str) -> str:
        return self.norm.json_text(_VETH.sub(lambda m: self.veths.setdefault(
            m.group(0), f"<veth{len(self.veths) + 1}>"), s))


class Pair:
    """The same CNI world, real and emulated."""

    def __init__(self, make_real: Callable[[str], RealNetns], tmp_path: Path, pure_python: bool) -> None:
        self.make_real = make_real
        self.node = make_real("node")
        self.lab = emu_lab(pure_python)
        self.emu_node = self.lab.netns(self.node.name)
        self.rt = Runtime(self.lab, self.emu_node, cni_path=PLUGIN_DIR)
        self.data_dir = str(tmp_path / "cni-data")
        self.pods: dict[str, RealNetns] = {}
        self.real, self.emu = Side("kernel"), Side("emulator")

    def pod(self, label: str) -> str:
        """A pod namespace in both worlds, with the same name (so CNI_NETNS and results match)."""
        ns = self.make_real(label)
        self.pods[label] = ns
        self.lab.netns(ns.name)
        return ns.name

    # --- running plugins ---------------------------------------------------------------------
    def env(self, command: str, cid: str, pod: str | None, ifname: str, args: str) -> dict[str, str]:
        return {"CNI_COMMAND": command, "CNI_CONTAINERID": cid,
                "CNI_NETNS": f"/var/run/netns/{pod}" if pod else "", "CNI_IFNAME": ifname,
                "CNI_PATH": PLUGIN_DIR, "CNI_ARGS": args}

    def run_real(self, plugin: str, env: dict[str, str], stdin: str) -> Result:
        res = subprocess.run(["ip", "netns", "exec", self.node.name, f"{PLUGIN_DIR}/{plugin}"], input=stdin,
                             env={**env, "PATH": ENV_PATH}, capture_output=True, text=True, timeout=TIMEOUT)
        return res.returncode, res.stdout

    def run_emu(self, plugin: str, env: dict[str, str], stdin: str) -> Result:
        rc, out, _err = self.rt.exec(plugin, env, stdin)
        return rc, out

    def call(self, plugin: str, command: str, conf: dict[str, Any] | tuple[dict[str, Any], dict[str, Any]],
             cid: str, pod: str | None, *, ifname: str = "eth0", args: str = "") -> tuple[Result, Result]:
        """Runs the plugin in both worlds; `conf` may be a (real, emulated) pair (CHECK's prevResult)."""
        real_conf, emu_conf = conf if isinstance(conf, tuple) else (conf, conf)
        env = self.env(command, cid, pod, ifname, args)
        return (self.run_real(plugin, env, json.dumps(real_conf)),
                self.run_emu(plugin, env, json.dumps(emu_conf)))

    def same(self, plugin: str, command: str, conf: Any, cid: str, pod: str | None, *,
             ifname: str = "eth0", args: str = "", rc: int | None = 0) -> tuple[str, str]:
        """`call`, asserting equal exit codes and equal normalised stdout; returns both raw outputs."""
        (rrc, rout), (erc, eout) = self.call(plugin, command, conf, cid, pod, ifname=ifname, args=args)
        what = f"{plugin} {command} {cid}"
        assert (erc, self.emu.text(eout)) == (rrc, self.real.text(rout)), (
            f"{what}: kernel rc={rrc}\n{rout}\n--- emulator rc={erc}\n{eout}")
        if rc is not None:
            assert rrc == rc, f"{what}: the real plugin exited {rrc}: {rout}"
        return rout, eout

    # --- state -------------------------------------------------------------------------------
    def files(self) -> tuple[dict[str, bytes], dict[str, bytes]]:
        """host-local's files: (real, emulated), by path under dataDir."""
        real = {}
        root = Path(self.data_dir)
        if root.exists():
            for p in sorted(root.rglob("*")):
                if p.is_file():
                    real[str(p.relative_to(root))] = p.read_bytes()
        prefix = self.data_dir + "/"
        emu = {k[len(prefix):]: v.encode() for k, v in sorted(self.emu_node.files.items()) if k.startswith(prefix)}
        return real, emu

    def assert_files(self) -> None:
        real, emu = self.files()
        assert emu == real

    def settle(self) -> None:
        """Waits for the kernel's linkwatch: a device's operstate follows its carrier up to a second
        later, and meanwhile `ip link` shows it LOWER_UP but NO-CARRIER. The emulator has no lag."""
        deadline = time.monotonic() + 3
        spaces = [self.node, *self.pods.values()]
        while time.monotonic() < deadline:
            if not any(_stale(o) for ns in spaces
                       for o in re.split(r'(?<=\}),(?=\{"ifindex")', ns.run("ip -j link show")[1])):
                return
            time.sleep(0.1)

    def state(self, *, nat: bool = False) -> tuple[dict[str, str], dict[str, str]]:
        """`ip -j link/addr/route` of the node and each pod (and the nat table), normalised."""
        self.settle()
        cmds = ["ip -j link show", "ip -j addr show", "ip -j route show"]
        real, emu = {}, {}
        spaces = [("node", self.node, self.emu_node)] + [
            (label, ns, self.lab.namespaces[ns.name]) for label, ns in self.pods.items()]
        for label, rns, ens in spaces:
            for cmd in cmds:
                key = f"{label}: {cmd}"
                rrc, rout, rerr = rns.run(cmd)
                res = ens.run(cmd)
                real[key] = f"{rrc} {self.real.json_text(rout)}{rerr}"
                emu[key] = f"{res.rc} {self.emu.json_text(res.stdout)}{res.stderr}"
        rrc, rout, rerr = self.node.run("bridge -d link show")
        res = self.emu_node.run("bridge -d link show")
        real[BRIDGE_LINK] = f"{rrc} {self.real.text(rout)}{rerr}"
        emu[BRIDGE_LINK] = f"{res.rc} {self.emu.text(res.stdout)}{res.stderr}"
        if nat:
            rrc, rout, _ = self.node.run("iptables-save -t nat")
            real["node: iptables-save -t nat"] = _strip_comments(rout)
            emu["node: iptables-save -t nat"] = _strip_comments(self.emu_node.run("iptables-save -t nat").stdout)
        return real, emu

    def assert_state(self, *, nat: bool = False) -> None:
        real, emu = self.state(nat=nat)
        bad = [k for k in real if real[k] != emu.get(k)]
        assert not bad, "\n".join(f"{k}:\n  kernel   {real[k]}\n  emulator {emu.get(k)}" for k in bad)


def _stale(entry: str) -> bool:
    """An `ip -j link` entry whose operstate has not caught up with its carrier yet: carrier on but
    not running (LOWER_UP with NO-CARRIER), or up and running without carrier."""
    flags = re.search(r'"flags":\[([^]]*)\]', entry)
    words = set(re.findall(r'"([A-Z_-]+)"', flags.group(1))) if flags else set()
    if "UP" not in words or "LOOPBACK" in words:
        return False
    return ("LOWER_UP" in words) == ("NO-CARRIER" in words)


def _strip_comments(text: str) -> str:
    return "".join(line + "\n" for line in text.splitlines() if not line.startswith("#"))


@pytest.fixture
def pair(real_netns: Callable[[str], RealNetns], tmp_path: Path, impl: str) -> Pair:  # noqa: F811
    reason = plugins_missing()
    if reason:
        pytest.skip(reason)
    return Pair(real_netns, tmp_path, impl == "python")


def prev(conf: dict[str, Any], result_text: str) -> dict[str, Any]:
    """The config with a result as prevResult (what a runtime sends for CHECK and DEL)."""
    return {**conf, "prevResult": json.loads(result_text)}


# --- the flannel-style bridge ---------------------------------------------------------------------
@pytest.mark.parametrize("version", ["0.2.0", "0.3.1", "0.4.0", "1.0.0"])
def test_flannel_bridge_add_del_round_robin(pair: Pair, version: str) -> None:
    conf = with_ipam(load("10-flannel-bridge.conf", cniVersion=version), pair.data_dir)
    p1, p2, p3 = pair.pod("pod1"), pair.pod("pod2"), pair.pod("pod3")
    r1, e1 = pair.same("bridge", "ADD", conf, "ctr1", p1)
    first = json.loads(r1)
    assert (first["ip4"]["ip"] if version == "0.2.0" else first["ips"][0]["address"]) == "10.244.1.2/24"
    pair.assert_files()
    pair.assert_state()
    pair.same("bridge", "ADD", conf, "ctr2", p2)
    pair.assert_files()
    # 0.3.1 has no CHECK; with 1.0.0 the real v1.1.1 plugin fails its own result: the IPAM route
    # 10.244.0.0/16 has no gw in the result but was installed via the gateway (ValidateExpectedRoute
    # filters on the nil gateway). The emulated plugin fails the same way.
    out, _ = pair.same("bridge", "CHECK", (prev(conf, r1), prev(conf, e1)), "ctr1", p1, rc=1)
    assert json.loads(out)["msg"] == ("config version does not allow CHECK" if version < "0.4.0" else
                                      "Expected Route {Dst:{IP:10.244.0.0 Mask:ffff0000} GW:<nil>} not found in "
                                      "routing table")
    pair.assert_state()
    out, _ = pair.same("bridge", "DEL", conf, "ctr1", p1)
    assert out == ""
    pair.assert_files()
    out, _ = pair.same("bridge", "DEL", conf, "ctr1", p1)  # a second DEL succeeds, prints nothing
    assert out == ""
    r3, _ = pair.same("bridge", "ADD", conf, "ctr3", p3)  # round robin: after .3 comes .4, not .2
    assert "10.244.1.4/24" in r3
    pair.assert_files()
    pair.assert_state()


def test_check_passes_and_catches_changes(pair: Pair) -> None:
    conf = load("10-flannel-bridge.conf", cniVersion="1.0.0")
    conf = with_ipam(conf, pair.data_dir, routes=[{"dst": "10.244.0.0/16", "gw": "10.244.1.1"}])
    p1 = pair.pod("pod1")
    r1, e1 = pair.same("bridge", "ADD", conf, "ctr1", p1)
    pair.same("bridge", "CHECK", (prev(conf, r1), prev(conf, e1)), "ctr1", p1)
    # CHECK of another container: host-local finds no lease for it
    out, _ = pair.same("bridge", "CHECK", (prev(conf, r1), prev(conf, e1)), "ctr9", p1, rc=1)
    assert json.loads(out)["msg"] == "host-local: Failed to find address added by container ctr9"
    # an address the result claims but the pod does not have
    bad_r, bad_e = prev(conf, r1), prev(conf, e1)
    for c in (bad_r, bad_e):
        c["prevResult"]["ips"][0]["address"] = "10.244.1.77/24"
    out, _ = pair.same("bridge", "CHECK", (bad_r, bad_e), "ctr1", p1, rc=1)
    assert json.loads(out)["msg"] == "Failed to match addr 10.244.1.77/24 on interface eth0"
    # no prevResult at all
    pair.same("bridge", "CHECK", conf, "ctr1", p1, rc=1)
    # the pod's default route removed behind the plugin's back
    assert pair.pods["pod1"].run("ip route del default")[0] == 0
    pair.lab.namespaces[p1].route_del("0.0.0.0/0")
    pair.same("bridge", "CHECK", (prev(conf, r1), prev(conf, e1)), "ctr1", p1, rc=1)


def test_bridge_address_conflict_and_force_address(pair: Pair) -> None:
    conf = with_ipam(load("10-flannel-bridge.conf", cniVersion="1.0.0"), pair.data_dir)
    other = with_ipam(conf, pair.data_dir, ranges=[[{"subnet": "10.244.2.0/24"}]])
    p1, p2, p3 = pair.pod("pod1"), pair.pod("pod2"), pair.pod("pod3")
    pair.same("bridge", "ADD", conf, "ctr1", p1)
    out, _ = pair.same("bridge", "ADD", other, "ctr2", p2, rc=1)
    assert json.loads(out)["msg"] == 'failed to set bridge addr: "cni0" already has an IP address different from ' \
                                     "10.244.2.1/24"
    pair.assert_files()  # the lease was given back
    pair.assert_state()  # the pod end was configured before the bridge refused: it stays
    pair.same("bridge", "ADD", {**other, "forceAddress": True}, "ctr3", p3)
    pair.assert_files()
    pair.assert_state()


def test_promisc_mode_and_check(pair: Pair) -> None:
    conf = with_ipam(load("10-flannel-bridge.conf", cniVersion="1.0.0", hairpinMode=False, promiscMode=True),
                     pair.data_dir, routes=[{"dst": "10.244.0.0/16", "gw": "10.244.1.1"}])
    p1 = pair.pod("pod1")
    r1, e1 = pair.same("bridge", "ADD", conf, "ctr1", p1)
    pair.same("bridge", "CHECK", (prev(conf, r1), prev(conf, e1)), "ctr1", p1)
    plain = {**conf, "promiscMode": False}
    out, _ = pair.same("bridge", "CHECK", (prev(plain, r1), prev(plain, e1)), "ctr1", p1, rc=1)
    assert "configured Promisc Mode false doesn't match current state: true" in json.loads(out)["msg"]
    out, _ = pair.same("bridge", "ADD", {**conf, "hairpinMode": True}, "ctr2", p1, rc=1)
    assert json.loads(out)["msg"].startswith("cannot set hairpin mode and promiscuous mode at the same time")
    pair.assert_state()


def test_ipmasq_and_mtu(pair: Pair) -> None:
    conf = with_ipam(load("10-flannel-bridge.conf", cniVersion="1.0.0", ipMasq=True, mtu=1450), pair.data_dir)
    p1, p2 = pair.pod("pod1"), pair.pod("pod2")
    pair.same("bridge", "ADD", conf, "ctr1", p1)
    pair.same("bridge", "ADD", conf, "ctr2", p2)
    pair.assert_state(nat=True)
    pair.same("bridge", "DEL", conf, "ctr1", p1)
    pair.same("bridge", "DEL", conf, "ctr1", p1)
    pair.assert_state(nat=True)
    pair.assert_files()


def test_range_start_end_exhaustion_and_wrap(pair: Pair) -> None:
    conf = load("10-flannel-bridge.conf", cniVersion="1.0.0")
    conf = with_ipam(conf, pair.data_dir, ranges=[[{"subnet": "10.244.1.0/24", "rangeStart": "10.244.1.10",
                                                     "rangeEnd": "10.244.1.11"}]])
    p1, p2, p3 = pair.pod("pod1"), pair.pod("pod2"), pair.pod("pod3")
    pair.same("bridge", "ADD", conf, "ctr1", p1)
    pair.same("bridge", "ADD", conf, "ctr2", p2)
    out, _ = pair.same("bridge", "ADD", conf, "ctr3", p3, rc=1)
    assert json.loads(out) == {"code": 999, "msg": "failed to allocate for range 0: no IP addresses available in "
                                                   "range set: 10.244.1.10-10.244.1.11"}
    pair.assert_files()
    pair.assert_state()  # the real plugin leaves the third pod's veth behind; so does the emulated one
    pair.same("bridge", "DEL", conf, "ctr3", p3)
    pair.same("bridge", "DEL", conf, "ctr1", p1)
    r4, _ = pair.same("bridge", "ADD", conf, "ctr4", p3)  # wraps to .10
    assert json.loads(r4)["ips"][0]["address"] == "10.244.1.10/24"
    pair.assert_files()
    pair.assert_state()


def test_layer2_bridge_takes_the_port_mac(pair: Pair) -> None:
    conf = load("10-flannel-bridge.conf", cniVersion="1.0.0", isGateway=False, isDefaultGateway=False, ipam={})
    p1 = pair.pod("pod1")
    r, e = pair.same("bridge", "ADD", conf, "ctr1", p1)
    for out in (r, e):
        ifaces = json.loads(out)["interfaces"]
        assert ifaces[0]["mac"] == ifaces[1]["mac"]  # no address, no pinned MAC: the bridge takes its port's
    pair.assert_state()


def test_loopback(pair: Pair) -> None:
    p1 = pair.pod("pod1")
    for version in ("0.3.1", "1.0.0"):
        conf = load("99-loopback.conf", cniVersion=version)
        pair.same("loopback", "ADD", conf, "ctr1", p1, ifname="lo")
    pair.same("loopback", "CHECK", load("99-loopback.conf", cniVersion="1.0.0"), "ctr1", p1, ifname="lo")
    pair.assert_state()
    pair.same("loopback", "DEL", load("99-loopback.conf"), "ctr1", p1, ifname="lo")
    pair.same("loopback", "CHECK", load("99-loopback.conf", cniVersion="1.0.0"), "ctr1", p1, ifname="lo", rc=1)
    pair.assert_state()
    pair.same("loopback", "DEL", load("99-loopback.conf"), "ctr1", "emut-gone", ifname="lo")
    pair.same("loopback", "ADD", load("99-loopback.conf"), "ctr1", "emut-gone", ifname="lo", rc=1)


def test_ptp(pair: Pair) -> None:
    conf = with_ipam(load("20-ptp.conf"), pair.data_dir)
    p1, p2 = pair.pod("pod1"), pair.pod("pod2")
    r1, e1 = pair.same("ptp", "ADD", conf, "ctr1", p1)
    pair.same("ptp", "ADD", conf, "ctr2", p2)
    pair.assert_files()
    pair.assert_state(nat=True)
    pair.same("ptp", "CHECK", (prev(conf, r1), prev(conf, e1)), "ctr1", p1)
    pair.same("ptp", "DEL", conf, "ctr1", p1)
    pair.same("ptp", "DEL", conf, "ctr1", p1)
    pair.assert_files()
    pair.assert_state(nat=True)


def test_portmap_chained_after_bridge(pair: Pair) -> None:
    conf = with_ipam(load("10-flannel-bridge.conf", cniVersion="1.0.0"), pair.data_dir)
    p1 = pair.pod("pod1")
    r1, e1 = pair.same("bridge", "ADD", conf, "ctr1", p1)
    maps = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                             {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "192.0.2.5"}]}
    pm = {"cniVersion": "1.0.0", "name": "cbr0", "type": "portmap", "capabilities": {"portMappings": True},
          "runtimeConfig": maps}
    pair.same("portmap", "ADD", (prev(pm, r1), prev(pm, e1)), "ctr1", p1)
    pair.assert_state(nat=True)
    assert pair.emu_node.sysctl_get("net.ipv4.conf.cni0.route_localnet") == "1"
    pair.same("portmap", "DEL", (prev(pm, r1), prev(pm, e1)), "ctr1", p1)
    pair.same("portmap", "DEL", (prev(pm, r1), prev(pm, e1)), "ctr1", p1)
    pair.assert_state(nat=True)


def test_version(pair: Pair) -> None:
    for plugin in ("bridge", "host-local", "loopback", "ptp", "portmap"):
        (rrc, rout), (erc, eout) = pair.call(plugin, "VERSION", {}, "", None)
        real, emu = json.loads(rout), json.loads(eout)
        # The emulated plugins also speak spec 1.1 (GC, STATUS); otherwise they claim what 1.1.1 does.
        assert (erc, emu["supportedVersions"][:-1]) == (rrc, real["supportedVersions"])
        assert emu["supportedVersions"][-1] == "1.1.0" and emu["cniVersion"] == "1.1.0"


def test_kernel_detail_veth_txqlen(pair: Pair) -> None:
    conf = with_ipam(load("10-flannel-bridge.conf", cniVersion="1.0.0"), pair.data_dir)
    p1 = pair.pod("pod1")
    pair.same("bridge", "ADD", conf, "ctr1", p1)
    real, emu = pair.state()
    assert emu == real


def test_kernel_detail_bridge_link_peer(pair: Pair) -> None:
    conf = with_ipam(load("10-flannel-bridge.conf", cniVersion="1.0.0"), pair.data_dir)
    p1 = pair.pod("pod1")
    pair.same("bridge", "ADD", conf, "ctr1", p1)
    real, emu = pair.state()
    assert emu[BRIDGE_LINK] == real[BRIDGE_LINK]


def test_kernel_detail_promisc(pair: Pair) -> None:
    conf = with_ipam(load("10-flannel-bridge.conf", cniVersion="1.0.0", hairpinMode=False, promiscMode=True),
                     pair.data_dir)
    pair.same("bridge", "ADD", conf, "ctr1", pair.pod("pod1"))
    real, emu = pair.state()
    key = "node: ip -j link show"
    assert re.sub(r',"txqlen":\d+', "", emu[key]) == re.sub(r',"txqlen":\d+', "", real[key])


def test_kernel_detail_veth_operstate(pair: Pair) -> None:
    conf = with_ipam(load("10-flannel-bridge.conf", cniVersion="1.0.0"), pair.data_dir)
    p1 = pair.pod("pod1")
    pair.same("bridge", "ADD", conf, "ctr1", p1)
    assert pair.pods["pod1"].run("ip link set eth0 down")[0] == 0
    pair.lab.namespaces[p1].link_set("eth0", up=False)
    real, emu = pair.state()
    key = "node: ip -j link show"
    assert re.sub(r',"txqlen":\d+', "", emu[key]) == re.sub(r',"txqlen":\d+', "", real[key])
