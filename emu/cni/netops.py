"""The helpers the real plugins share (containernetworking/plugins' pkg/ip, pkg/ipam, pkg/utils),
acting on emulated namespaces through the netlink-like Namespace API.

Every change is also a traced `Step` (see skel.Host.note), tagged with the study notes' five
steps of a pod ADD where it is one of them.
"""

from __future__ import annotations

import hashlib
import ipaddress
from typing import TYPE_CHECKING, Any

from emu.cni import gojson
from emu.cni.errors import CniError, fail
from emu.net.errors import NetError
from emu.net.iptables import IptError

if TYPE_CHECKING:
    from emu.cni.skel import Host
    from emu.net.link import Link
    from emu.net.namespace import Namespace

POD_END, HOST_END, POD_ROUTES, HOST_ROUTES, ATTACH = 1, 2, 3, 4, 5
MAX_CHAIN_LENGTH = 28
IPTABLES = "/usr/sbin/iptables"


# --- names ------------------------------------------------------------------------------------------
def random_veth_name(host: Host) -> str:
    """ip.RandomVethName: `veth` + 4 random bytes in hex, from the lab's seeded generator."""
    return f"veth{host.lab.clock.rng.getrandbits(32):08x}"


def format_chain_name(name: str, container_id: str, prefix: str = "") -> str:
    """utils.MustFormatChainNameWithPrefix: `CNI-` + prefix + sha512(name + id) in hex, cut to 28."""
    digest = hashlib.sha512((name + container_id).encode()).hexdigest()
    return ("CNI-" + prefix + digest)[:MAX_CHAIN_LENGTH]


def format_comment(name: str, container_id: str) -> str:
    """utils.FormatComment."""
    return f"name: {gojson.quote(name)} id: {gojson.quote(container_id)}"


# --- sysctl -------------------------------------------------------------------------------------------
def sysctl(ns: Namespace, key: str, value: str) -> None:
    """Writes /proc/sys/KEY, as the plugins do with ip.EnableIP4Forward and sysctl.Sysctl."""
    ns.sysctl_set(key, value)


# --- links ---------------------------------------------------------------------------------------------
def link_by_name(ns: Namespace, ifname: str) -> Link | None:
    return ns.links.get(ifname)


def setup_veth(host: Host, plugin: str, pod: Namespace, ifname: str, mtu: int, mac: str = "") -> tuple[
        dict[str, Any], dict[str, Any]]:
    """ip.SetupVeth: the pair is made from inside the pod with its peer in the node (so the pod end
    keeps its name and the host end gets `veth` + 8 hex chars); the host end is brought up.

    Returns the host and container interfaces of the result."""
    node = host.node
    for _ in range(10):
        peer = random_veth_name(host)
        if ifname in pod.links:
            raise fail(f"container veth name provided ({ifname}) already exists")
        if peer in node.links:
            continue  # the random peer name exists: try another
        try:
            # netlink.Veth with TxQLen 0, as ip.SetupVethWithName makes it: `ip link` shows no qlen.
            cont = pod.link_add(ifname, "veth", peer=peer, peer_ns=node, mtu=mtu or None, mac=mac or None, txqlen=0)
        except NetError as exc:
            raise fail(f"failed to make veth pair: {exc.message}") from None
        break
    else:
        raise fail("failed to find a unique veth name")
    assert cont.peer is not None  # type: ignore[attr-defined]
    host_link = cont.peer  # type: ignore[attr-defined]
    host.note(plugin, pod, ifname, f"pod end: veth {ifname} (mtu {cont.mtu}) created in {pod.name}, its peer "
              f"{peer} in {node.name}", POD_END)
    host.note(plugin, node, peer, f"host end: {peer} (peer of {pod.name}/{ifname}) set up", HOST_END)
    node.link_set(peer, up=True)
    host_iface = {"name": peer, "mac": host_link.mac_str}
    cont_iface = {"name": ifname, "mac": cont.mac_str}
    return host_iface, cont_iface


def del_link_by_name_addr(pod: Namespace, ifname: str) -> list[str] | None:
    """ip.DelLinkByNameAddr: deletes the link (its veth peer goes too); returns its global unicast
    addresses as CIDRs, or None when there is no such link."""
    link = pod.links.get(ifname)
    if link is None:
        return None
    addrs = []
    for a in link.addrs:
        ip = ipaddress.ip_address(a.local)
        if not (ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified or
                ip == ipaddress.ip_address("255.255.255.255")):
            addrs.append(f"{ip}/{a.plen}")
    pod.link_del(ifname)
    return addrs


def addr_add(ns: Namespace, ifname: str, cidr: str) -> None:
    """netlink.AddrAdd of an IPv4 address: the broadcast is computed for prefixes shorter than /31."""
    ns.addr_add(ifname, cidr, broadcast="+")


def configure_iface(host: Host, plugin: str, pod: Namespace, ifname: str, result: dict[str, Any]) -> None:
    """ipam.ConfigureIface: the result's addresses on the interface, the interface up, the routes
    (a route without a gateway goes via the first gateway of its family)."""
    if not result.get("interfaces"):
        raise fail("no interfaces to configure")
    link = pod.links.get(ifname)
    if link is None:
        raise fail(f"failed to lookup {gojson.quote(ifname)}: Link not found")
    v4gw = None
    for ipc in result.get("ips", []):
        idx = ipc.get("interface")
        if idx is None:
            continue
        if not 0 <= idx < len(result["interfaces"]) or result["interfaces"][idx]["name"] != ifname:
            raise fail(f"failed to add IP addr {_ipc_str(ipc)} to {gojson.quote(ifname)}: invalid interface index")
        try:
            addr_add(pod, ifname, ipc["address"])
        except NetError as exc:
            raise fail(f"failed to add IP addr {_ipc_str(ipc)} to {gojson.quote(ifname)}: {_errno(exc)}") from None
        host.note(plugin, pod, ifname, f"pod end: address {ipc['address']} on {ifname}", POD_END)
        if ipc.get("gateway") and v4gw is None and ":" not in ipc["gateway"]:
            v4gw = ipc["gateway"]
    pod.link_set(ifname, up=True)
    host.note(plugin, pod, ifname, f"pod end: {ifname} up; the kernel adds the connected route", POD_END)
    for r in result.get("routes", []):
        gw = r.get("gw") or v4gw
        try:
            pod.route_add(r["dst"], via=gw, dev=ifname)
        except NetError as exc:
            raise fail(f"failed to add route '{r['dst']} via {gw or '<nil>'} dev {ifname}': {_errno(exc)}") from None
        host.note(plugin, pod, ifname, f"pod route: {r['dst']} via {gw} dev {ifname}", POD_ROUTES)


def _ipc_str(ipc: dict[str, Any]) -> str:
    return f"{{Interface:{ipc.get('interface')} Address:{ipc['address']} Gateway:{ipc.get('gateway', '<nil>')}}}"


def _errno(exc: NetError) -> str:
    """The errno text a netlink call gets, from iproute2's message."""
    text = exc.message
    for prefix in ("RTNETLINK answers: ", "Error: "):
        if text.startswith(prefix):
            text = text[len(prefix):]
    return text.rstrip(".").lower() if text.startswith(("File exists", "No such", "Network is")) else text


# --- iptables ----------------------------------------------------------------------------------------
class Iptables:
    """go-iptables over the emulated netfilter tables of one namespace."""

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns

    def run(self, argv: list[str]) -> str:
        nf = self.ns.netfilter
        try:
            out = nf.rules.iptables(list(argv))
        except IptError as exc:
            raise fail(f"running [{IPTABLES} {' '.join(argv)} --wait]: exit status {exc.rc}: "
                       f"{exc.message}") from None
        nf.changed()
        return out

    def chain_exists(self, table: str, chain: str) -> bool:
        return chain in self.ns.netfilter.rules.table(table).chains

    def exists(self, table: str, chain: str, rule: list[str]) -> bool:
        try:
            self.ns.netfilter.rules.iptables(["-t", table, "-C", chain, *rule])
        except IptError:
            return False
        return True

    def ensure_chain(self, table: str, chain: str) -> None:
        if not self.chain_exists(table, chain):
            self.run(["-t", table, "-N", chain])

    def insert_unique(self, table: str, chain: str, prepend: bool, rule: list[str]) -> None:
        if self.exists(table, chain, rule):
            return
        self.run(["-t", table, "-I" if prepend else "-A", chain, *(["1"] if prepend else []), *rule])

    def append_unique(self, table: str, chain: str, rule: list[str]) -> None:
        self.insert_unique(table, chain, False, rule)

    def delete_rule(self, table: str, chain: str, rule: list[str]) -> None:
        if self.exists(table, chain, rule):
            self.run(["-t", table, "-D", chain, *rule])

    def clear_chain(self, table: str, chain: str) -> None:
        """ClearChain: flushes the chain, creating it when it is missing."""
        if self.chain_exists(table, chain):
            self.run(["-t", table, "-F", chain])
        else:
            self.run(["-t", table, "-N", chain])

    def delete_chain(self, table: str, chain: str) -> None:
        if self.chain_exists(table, chain):
            self.run(["-t", table, "-X", chain])

    def list_rules(self, table: str, chain: str) -> list[str]:
        """`iptables -t TABLE -S CHAIN` lines (the first is `-N`/`-P`)."""
        return self.run(["-t", table, "-S", chain]).splitlines()


def setup_ip_masq(host: Host, plugin: str, cidr: str, chain: str, comment: str) -> None:
    """ip.SetupIPMasq: a per-container chain in nat POSTROUTING that accepts the pod's own subnet
    and masquerades everything else but multicast."""
    ipt = Iptables(host.node)
    ipt.ensure_chain("nat", chain)
    ipt.append_unique("nat", chain, ["-d", cidr, "-j", "ACCEPT", "-m", "comment", "--comment", comment])
    ipt.append_unique("nat", chain, ["!", "-d", "224.0.0.0/4", "-j", "MASQUERADE", "-m", "comment",
                                     "--comment", comment])
    src = cidr.split("/")[0]
    ipt.append_unique("nat", "POSTROUTING", ["-s", src, "-j", chain, "-m", "comment", "--comment", comment])
    host.note(plugin, host.node, "", f"ipMasq: nat POSTROUTING -s {src} -> {chain} (ACCEPT -d {cidr}, "
              "MASQUERADE ! -d 224.0.0.0/4)")


def teardown_ip_masq(host: Host, plugin: str, cidr: str, chain: str, comment: str) -> None:
    """ip.TeardownIPMasq: the POSTROUTING jump (either form), then the chain."""
    ipt = Iptables(host.node)
    ip = cidr.split("/")[0]
    ipt.delete_rule("nat", "POSTROUTING", ["-s", ip, "-j", chain, "-m", "comment", "--comment", comment])
    ipt.delete_rule("nat", "POSTROUTING", ["-s", cidr, "-j", chain, "-m", "comment", "--comment", comment])
    ipt.clear_chain("nat", chain)
    ipt.delete_chain("nat", chain)
    host.note(plugin, host.node, "", f"ipMasq: removed {chain} for {ip}")


def enable_ip_forward(host: Host, plugin: str) -> None:
    """ip.EnableIP4Forward."""
    if host.node.sysctl_get("net.ipv4.ip_forward") != "1":
        host.note(plugin, host.node, "", "net.ipv4.ip_forward=1")
    sysctl(host.node, "net.ipv4.ip_forward", "1")


def netns_or_error(host: Host, path: str) -> Namespace:
    """ns.GetNS as the plugins call it: `failed to open netns "PATH": ...` when it is missing."""
    try:
        return host.netns(path)
    except CniError as exc:
        raise fail(f"failed to open netns {gojson.quote(path)}: {exc.msg}") from None
