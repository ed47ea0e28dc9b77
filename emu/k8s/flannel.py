"""flanneld: one daemon per node giving each node a subnet of the cluster network and routes to the others.

What it does, in flanneld's order (cmd main.go of flannel v0.2x):

1. reads net-conf.json (kube mode: the kube-flannel ConfigMap mounted at
   /etc/kube-flannel/net-conf.json; etcd mode: the key /coreos.com/network/config) and checks it as
   subnet.ParseConfig / CheckNetworkConfig / the backend's RegisterNetwork do, with their messages;
2. picks the external interface (`--iface`, else the default route's device) and its address;
3. the backend registers the network: vxlan creates `flannel.<VNI>` (id VNI, local = node IP, dev
   uplink, dstport Port or the kernel's 8472, nolearning, MTU = uplink MTU - 50, a random
   locally administered MAC), then acquires a lease: kube mode takes the node's spec.podCIDR and
   annotates the node (`flannel.alpha.coreos.com/backend-type`, `backend-data`
   = {"VNI":1,"VtepMAC":"..."}, `public-ip`, `kube-subnet-manager`); etcd mode picks at random
   among the first 100 free subnets in [SubnetMin, SubnetMax] and creates
   /coreos.com/network/subnets/10.244.1.0-24 (TTL 24 h, renewed an hour before it ends); vxlan
   then gives flannel.1 the subnet's network address as a /32 and sets it up;
4. with --ip-masq the FLANNEL-POSTRTG nat rules, and the FLANNEL-FWD filter rules, applied the way
   flannel does it (create the chain, then `iptables-restore --noflush`);
5. writes /run/flannel/subnet.env (FLANNEL_NETWORK, FLANNEL_SUBNET = first address/len, FLANNEL_MTU,
   FLANNEL_IPMASQ);
6. watches the other nodes' leases: vxlan adds, per remote lease, the permanent neighbour entry
   (remote subnet .0 -> VtepMAC), the FDB entry (VtepMAC -> remote node IP) and the route
   `<subnet> via <subnet .0> dev flannel.1 onlink` (or, with DirectRouting and the remote node on a
   connected subnet, `<subnet> via <node IP>`); host-gw adds `<subnet> via <node IP> dev <uplink>`.
   A lease that goes away takes its entries with it.

Everything is done through the namespace API, as flanneld does through netlink and the iptables tools.
"""

from __future__ import annotations

import json
import time as _time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from emu.k8s.store import ApiError, Etcd, KeyValue, Node, Store
from emu.net.addr import int2ip, int2mac, ip2int, mask, network_of
from emu.net.errors import NetError
from emu.net.lab import EPOCH

if TYPE_CHECKING:
    from emu.net.namespace import Namespace

FLANNEL_VERSION = "v0.25.1"
ANNOTATION_PREFIX = "flannel.alpha.coreos.com"
ANN_BACKEND_DATA = f"{ANNOTATION_PREFIX}/backend-data"
ANN_BACKEND_TYPE = f"{ANNOTATION_PREFIX}/backend-type"
ANN_PUBLIC_IP = f"{ANNOTATION_PREFIX}/public-ip"
ANN_KUBE_MANAGED = f"{ANNOTATION_PREFIX}/kube-subnet-manager"
ETCD_PREFIX = "/coreos.com/network"
SUBNET_FILE = "/run/flannel/subnet.env"
NET_CONF_PATH = "/etc/kube-flannel/net-conf.json"
KUBE_PROXY_MARK = "0x4000/0x4000"
LEASE_TTL = 24 * 3600.0
RENEW_MARGIN = 60 * 60.0
ENCAP_OVERHEAD = 50
EMULATED_BACKENDS = ("vxlan", "host-gw")
KNOWN_BACKENDS = ("udp", "vxlan", "host-gw", "ipip", "ipsec", "wireguard", "alloc", "extension", "tencentvpc")


class FlannelError(Exception):
    """flanneld refused to start or to go on; the message is flanneld's (or says what the emulator lacks)."""


# --- net-conf.json -------------------------------------------------------------------------------

@dataclass(frozen=True)
class BackendConfig:
    """The Backend object of net-conf.json, with flanneld's defaults filled in."""

    type: str
    vni: int = 1
    port: int = 0  # 0: the kernel's default (8472 on Linux)
    mtu: int | None = None  # the uplink MTU the device MTU is derived from (default: the uplink's own)
    direct_routing: bool = False
    learning: bool = False
    gbp: bool = False

    @property
    def dstport(self) -> int:
        return self.port or 8472


@dataclass(frozen=True)
class NetConf:
    """A checked net-conf.json: Network, SubnetLen and the SubnetMin..SubnetMax range, the backend."""

    network: int
    prefixlen: int
    subnet_len: int
    subnet_min: int
    subnet_max: int
    backend: BackendConfig
    text: str = ""

    @property
    def network_cidr(self) -> str:
        return f"{int2ip(self.network)}/{self.prefixlen}"

    def contains(self, net: int, plen: int) -> bool:
        return plen >= self.prefixlen and network_of(net, self.prefixlen) == self.network


def _go_type(value: Any) -> str:
    """The JSON type names Go's encoding/json uses in "cannot unmarshal X into ..." messages."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _field(obj: dict[str, Any], name: str) -> tuple[bool, Any]:
    """encoding/json matches field names case-insensitively (an exact match wins)."""
    if name in obj:
        return True, obj[name]
    for key, value in obj.items():
        if key.lower() == name.lower():
            return True, value
    return False, None


def _want(obj: dict[str, Any], name: str, gotype: str, struct: str) -> tuple[bool, Any]:
    present, value = _field(obj, name)
    if not present or value is None:
        return False, None
    ok = {"uint": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
          "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
          "bool": lambda v: isinstance(v, bool),
          "string": lambda v: isinstance(v, str)}[gotype](value)
    if not ok:
        kind = _go_type(value)
        if kind == "number" and gotype in ("uint", "int"):
            kind = f"number {json.dumps(value)}"
        raise FlannelError(f"json: cannot unmarshal {kind} into Go struct field {struct}.{name} of type {gotype}")
    return True, value


def _parse_cidr(text: str, what: str) -> tuple[int, int]:
    """Go's net.ParseCIDR, then the network (host bits dropped, as ip.IP4Net's UnmarshalJSON does)."""
    addr, slash, plen_text = text.partition("/")
    try:
        ip = ip2int(addr)
        if not slash or not plen_text.isdigit() or int(plen_text) > 32:
            raise ValueError
    except ValueError:
        raise FlannelError(f"invalid CIDR address: {text} (in {what})") from None
    plen = int(plen_text)
    return network_of(ip, plen), plen


def _parse_ip(text: str, what: str) -> int:
    try:
        return ip2int(text)
    except ValueError:
        raise FlannelError(f"ParseIP(\"{text}\") failed (in {what})") from None


def parse_net_conf(text: str, *, uplink_mtu: int = 1500) -> NetConf:
    """Parses and checks net-conf.json as flanneld does; raises FlannelError with flanneld's message.

    The order of the checks is flanneld's: JSON decoding of the whole config (subnet.ParseConfig),
    the network checks (subnet.CheckNetworkConfig), the backend type (the backend manager), then
    the backend's own config (RegisterNetwork).
    """
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FlannelError(f"error parsing subnet config: invalid JSON: {exc.msg} at line {exc.lineno} "
                           f"column {exc.colno}") from None
    if not isinstance(raw, dict):
        raise FlannelError(f"error parsing subnet config: json: cannot unmarshal {_go_type(raw)} into Go value of "
                           "type subnet.Config")
    try:
        _, network_text = _want(raw, "Network", "string", "Config")
        _, subnet_len = _want(raw, "SubnetLen", "uint", "Config")
        _, min_text = _want(raw, "SubnetMin", "string", "Config")
        _, max_text = _want(raw, "SubnetMax", "string", "Config")
        _, enable4 = _want(raw, "EnableIPv4", "bool", "Config")
        _, enable6 = _want(raw, "EnableIPv6", "bool", "Config")
    except FlannelError as exc:
        raise FlannelError(f"error parsing subnet config: {exc}") from None
    if enable6:
        raise FlannelError("EnableIPv6: IPv6 networks are not emulated (emu carries IPv4 only)")
    if enable4 is False:
        raise FlannelError("EnableIPv4 is false: an IPv6-only flannel network is not emulated")
    has_backend, backend = _field(raw, "Backend")
    if not has_backend or backend is None:
        btype = "udp"
        backend = {}
    elif not isinstance(backend, dict):
        raise FlannelError("error parsing subnet config: error decoding Backend property of config: json: cannot "
                           f"unmarshal {_go_type(backend)} into Go value of type struct {{ Type string }}")
    else:
        try:
            _, btype = _want(backend, "Type", "string", "")
        except FlannelError as exc:
            raise FlannelError("error parsing subnet config: error decoding Backend property of config: "
                               f"{exc}") from None
        btype = btype or ""
    # subnet.CheckNetworkConfig
    if not network_text:
        raise FlannelError("please define a correct Network parameter in the flannel config")
    net, plen = _parse_cidr(network_text, "Network")
    if subnet_len:
        if subnet_len > 30:
            raise FlannelError("SubnetLen must be less than /31")
        if subnet_len < plen + 2:
            raise FlannelError("network must be able to accommodate at least four subnets")
    else:
        if plen > 28:
            raise FlannelError("network is too small. Minimum useful network prefix is /28")
        subnet_len = 24 if plen <= 22 else plen + 2
    size = 1 << (32 - subnet_len)
    end = net + (1 << (32 - plen))  # the next network (Network.Next())
    if min_text:
        smin = _parse_ip(min_text, "SubnetMin")
        if network_of(smin, plen) != net:
            raise FlannelError("SubnetMin is not in the range of the Network")
    else:
        smin = net + size  # skip the first subnet
    if max_text:
        smax = _parse_ip(max_text, "SubnetMax")
        if network_of(smax, plen) != net:
            raise FlannelError("SubnetMax is not in the range of the Network")
    else:
        smax = end - size
    if smin & mask(subnet_len) != smin:
        raise FlannelError(f"SubnetMin is not on a SubnetLen boundary: {int2ip(smin)}")
    if smax & mask(subnet_len) != smax:
        raise FlannelError(f"SubnetMax is not on a SubnetLen boundary: {int2ip(smax)}")

    btype = btype.lower()  # the backend manager, after the network checks
    if btype not in KNOWN_BACKENDS:
        raise FlannelError(f"error fetching backend: unknown backend type: {btype}")
    if btype not in EMULATED_BACKENDS:
        why = " (the default when net-conf.json has no Backend)" if not has_backend else ""
        raise FlannelError(f'backend type "{btype}"{why} is not emulated: use "vxlan" or "host-gw"')

    cfg = BackendConfig(type=btype)
    if btype == "vxlan":
        try:
            _, vni = _want(backend, "VNI", "int", "")
            _, port = _want(backend, "Port", "int", "")
            _, mtu = _want(backend, "MTU", "int", "")
            _, gbp = _want(backend, "GBP", "bool", "")
            _, learning = _want(backend, "Learning", "bool", "")
            _, direct = _want(backend, "DirectRouting", "bool", "")
        except FlannelError as exc:
            raise FlannelError(f"error decoding VXLAN backend config: {exc}") from None
        vni = 1 if vni is None else vni
        if not 0 <= vni < 1 << 24:
            raise FlannelError(f"failed to create VXLAN device flannel.{vni}: numerical result out of range "
                               "(a VNI is 24 bits: 0..16777215)")
        if port is not None and not 0 <= port <= 65535:
            raise FlannelError(f"failed to create VXLAN device flannel.{vni}: invalid argument (Port {port})")
        if mtu is not None and mtu - ENCAP_OVERHEAD < 68:
            raise FlannelError(f"failed to create VXLAN device flannel.{vni}: invalid argument (MTU {mtu} - 50 is "
                               "below the minimum of 68)")
        cfg = BackendConfig("vxlan", vni, port or 0, mtu or None, bool(direct), bool(learning), bool(gbp))
    return NetConf(net, plen, subnet_len, smin, smax, cfg, text)


def default_net_conf(network: str = "10.244.0.0/16", backend: str = "vxlan", **backend_opts: Any) -> str:
    """net-conf.json as kube-flannel.yml ships it (with the given Network and Backend)."""
    be: dict[str, Any] = {"Type": backend}
    be.update(backend_opts)
    conf = {"Network": network, "EnableNFTables": False, "Backend": be}
    return json.dumps(conf, indent=2) + "\n"


# --- leases ------------------------------------------------------------------------------------------

@dataclass
class Lease:
    """A node's subnet with what the others need to reach it."""

    subnet: str  # "10.244.1.0/24"
    public_ip: str
    backend_type: str
    backend_data: dict[str, Any] | None = None
    expiration: float | None = None

    @property
    def net(self) -> int:
        return ip2int(self.subnet.partition("/")[0])

    @property
    def plen(self) -> int:
        return int(self.subnet.partition("/")[2])

    def attrs_json(self) -> str:
        """The etcd value: LeaseAttrs marshalled by Go (PublicIPv6 has no omitempty, BackendData has)."""
        out = f'{{"PublicIP":"{self.public_ip}","PublicIPv6":null,"BackendType":"{self.backend_type}"'
        if self.backend_data is not None:
            out += f',"BackendData":{backend_data_json(self.backend_data)}'
        return out + "}"


def backend_data_json(data: dict[str, Any] | None) -> str:
    """vxlanLeaseAttrs marshalled: `{"VNI":1,"VtepMAC":"0e:..."}`; `null` for none."""
    if data is None:
        return "null"
    return json.dumps(data, separators=(",", ":"))


def subnet_key(subnet: str) -> str:
    return subnet.replace("/", "-")


# --- subnet managers ------------------------------------------------------------------------------------

LeaseHandler = Callable[[str, Lease], None]  # ("added"|"removed", lease)


class KubeSubnetManager:
    """--kube-subnet-mgr: leases are the nodes' podCIDRs, their attributes the flannel node annotations."""

    name = "Kubernetes Subnet Manager"

    def __init__(self, daemon: FlannelDaemon, store: Store) -> None:
        self.d, self.store = daemon, store
        self._watch = None

    def network_config(self) -> str:
        try:
            return self.d.ns.read_file(self.d.net_conf_path)
        except FileNotFoundError:
            raise FlannelError(f"failed to read net conf: open {self.d.net_conf_path}: no such file or "
                               "directory") from None

    def acquire_lease(self, attrs: Lease, conf: NetConf) -> Lease:
        try:
            node = self.store.get("Node", self.d.node_name)
        except ApiError as exc:
            raise FlannelError(f"failed to acquire lease: {exc.message}") from None
        if not node.spec.pod_cidr:
            raise FlannelError(f'failed to acquire lease: node "{self.d.node_name}" pod cidr not assigned')
        net, plen = _parse_cidr(node.spec.pod_cidr, "spec.podCIDR")
        ann = node.metadata.annotations
        bd = backend_data_json(attrs.backend_data)
        if (ann.get(ANN_BACKEND_DATA) != bd or ann.get(ANN_BACKEND_TYPE) != attrs.backend_type
                or ann.get(ANN_PUBLIC_IP) != attrs.public_ip or ann.get(ANN_KUBE_MANAGED) != "true"):
            ann[ANN_BACKEND_TYPE] = attrs.backend_type
            ann[ANN_BACKEND_DATA] = bd
            ann[ANN_PUBLIC_IP] = attrs.public_ip
            ann[ANN_KUBE_MANAGED] = "true"
            self.store.update(node)
        if not conf.contains(net, plen):
            raise FlannelError(f'failed to acquire lease: subnet "{conf.network_cidr}" specified in the flannel net '
                               f'config doesn\'t contain "{int2ip(net)}/{plen}" PodCIDR of the "{self.d.node_name}" '
                               "node")
        return Lease(f"{int2ip(net)}/{plen}", attrs.public_ip, attrs.backend_type, attrs.backend_data,
                     self.d.clock.now + LEASE_TTL)

    def _node_lease(self, node: Node) -> Lease | None:
        ann = node.metadata.annotations
        try:
            net, plen = _parse_cidr(node.spec.pod_cidr, "spec.podCIDR")
            public_ip = int2ip(ip2int(ann[ANN_PUBLIC_IP]))
            data = json.loads(ann.get(ANN_BACKEND_DATA, "null"))
        except (KeyError, ValueError, FlannelError) as exc:
            self.d.log("I", "kube.go", f'Error turning node "{node.metadata.name}" to lease: {exc}')
            return None
        return Lease(f"{int2ip(net)}/{plen}", public_ip, ann.get(ANN_BACKEND_TYPE, ""), data)

    def watch_leases(self, handler: LeaseHandler) -> None:
        def managed(node: Node) -> bool:
            return node.metadata.annotations.get(ANN_KUBE_MANAGED) == "true"

        def on_add(node: Node) -> None:
            if managed(node) and (lease := self._node_lease(node)) is not None:
                handler("added", lease)

        def on_update(old: Node, new: Node) -> None:
            if not managed(new):
                return
            keys = (ANN_BACKEND_DATA, ANN_BACKEND_TYPE, ANN_PUBLIC_IP)
            if all(old.metadata.annotations.get(k) == new.metadata.annotations.get(k) for k in keys):
                return
            if (lease := self._node_lease(new)) is not None:
                handler("added", lease)

        def on_delete(node: Node) -> None:
            if managed(node) and (lease := self._node_lease(node)) is not None:
                handler("removed", lease)

        self._watch = self.store.watch("Node", on_add=on_add, on_update=on_update, on_delete=on_delete)

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.stop()


class EtcdSubnetManager:
    """The etcd subnet manager: config and leases under /coreos.com/network in etcd."""

    name = "Etcd Local Manager with Previous Subnet: None"

    def __init__(self, daemon: FlannelDaemon, etcd: Etcd, prefix: str = ETCD_PREFIX) -> None:
        self.d, self.etcd, self.prefix = daemon, etcd, prefix.rstrip("/")
        self._cancel: Callable[[], None] | None = None
        self._renew = None
        self.lease: Lease | None = None

    def network_config(self) -> str:
        kv = self.etcd.get(f"{self.prefix}/config")
        if kv is None:
            raise FlannelError(f"failed to retrieve network config: key {self.prefix}/config not found in etcd "
                               "(etcdctl put /coreos.com/network/config '{...}')")
        return kv.value

    def _leases(self) -> list[Lease]:
        out = []
        for kv in self.etcd.range(f"{self.prefix}/subnets/"):
            lease = self._kv_lease(kv)
            if lease is not None:
                out.append(lease)
        return out

    def _kv_lease(self, kv: KeyValue) -> Lease | None:
        name = kv.key.rsplit("/", 1)[-1]
        try:
            net_text, _, plen_text = name.partition("-")
            subnet = f"{int2ip(ip2int(net_text))}/{int(plen_text)}"
            attrs = json.loads(kv.value)
            return Lease(subnet, attrs["PublicIP"], attrs.get("BackendType", ""), attrs.get("BackendData"),
                         kv.expires)
        except (ValueError, KeyError, TypeError) as exc:
            self.d.log("E", "registry.go", f"error parsing subnet lease {kv.key}: {exc}")
            return None

    def acquire_lease(self, attrs: Lease, conf: NetConf) -> Lease:
        leases = self._leases()
        for lease in leases:  # reuse the lease of our public IP if it still fits the config
            if lease.public_ip == attrs.public_ip:
                if (conf.subnet_min <= lease.net <= conf.subnet_max) and lease.plen == conf.subnet_len:
                    self.d.log("I", "local_manager.go", f"Found lease (ip: {lease.subnet} ipv6: ::/0) for current IP "
                               f"({attrs.public_ip}), reusing")
                    return self._write(lease.subnet, attrs)
                self.d.log("I", "local_manager.go", f"Found lease ({lease.subnet}) for current IP ({attrs.public_ip}) "
                           "but not compatible with current config, deleting")
                self.etcd.delete(f"{self.prefix}/subnets/{subnet_key(lease.subnet)}")
                leases.remove(lease)
                break
        self.d.log("I", "local_manager.go", f"Picking subnet in range {int2ip(conf.subnet_min)} ... "
                   f"{int2ip(conf.subnet_max)}")
        size = 1 << (32 - conf.subnet_len)
        taken = [(lz.net, lz.plen) for lz in leases]
        free: list[int] = []
        sn = conf.subnet_min
        while sn <= conf.subnet_max and len(free) < 100:
            if not any(_overlaps(sn, conf.subnet_len, n, p) for n, p in taken):
                free.append(sn)
            sn += size
        if not free:
            raise FlannelError("failed to acquire lease: out of subnets")
        pick = free[self.d.clock.rng.randrange(len(free))]
        subnet = f"{int2ip(pick)}/{conf.subnet_len}"
        self.d.log("I", "local_manager.go", f"Allocated lease (ip: {subnet} ipv6: ::/0) to current node "
                   f"({attrs.public_ip})")
        return self._write(subnet, attrs, create=True)

    def _write(self, subnet: str, attrs: Lease, *, create: bool = False) -> Lease:
        lease = Lease(subnet, attrs.public_ip, attrs.backend_type, attrs.backend_data)
        key = f"{self.prefix}/subnets/{subnet_key(subnet)}"
        kv = (self.etcd.create if create else self.etcd.put)(key, lease.attrs_json(), ttl=LEASE_TTL)
        if kv is None:
            raise FlannelError(f"failed to acquire lease: {key} was taken meanwhile (etcd: key exists)")
        lease.expiration = kv.expires
        self.lease = lease
        self._schedule_renew()
        return lease

    def _schedule_renew(self) -> None:
        if self._renew is not None:
            self._renew.cancel()
        self._renew = self.d.clock.call_later(LEASE_TTL - RENEW_MARGIN, self._renew_lease)

    def _renew_lease(self) -> None:
        lease = self.lease
        if lease is None or not self.d.running:
            return
        kv = self.etcd.put(f"{self.prefix}/subnets/{subnet_key(lease.subnet)}", lease.attrs_json(), ttl=LEASE_TTL)
        lease.expiration = kv.expires
        self.d.log("I", "local_manager.go", "Lease renewed, new expiration: " + _klog_time(kv.expires or 0))
        self._schedule_renew()

    def watch_leases(self, handler: LeaseHandler) -> None:
        for lease in self._leases():  # the snapshot, then the changes
            handler("added", lease)

        def on_change(type_: str, key: str, kv: KeyValue | None, prev: KeyValue | None) -> None:
            if type_ == "PUT" and kv is not None:
                lease = self._kv_lease(kv)
                if lease is not None:
                    handler("added", lease)
            elif type_ == "DELETE" and prev is not None:
                lease = self._kv_lease(prev)
                if lease is not None:
                    handler("removed", lease)

        self._cancel = self.etcd.watch(f"{self.prefix}/subnets/", on_change)

    def stop(self) -> None:
        if self._cancel is not None:
            self._cancel()
        if self._renew is not None:
            self._renew.cancel()


def _overlaps(a: int, alen: int, b: int, blen: int) -> bool:
    plen = min(alen, blen)
    return network_of(a, plen) == network_of(b, plen)


def _klog_time(t: float) -> str:
    when = EPOCH + t
    return _time.strftime("%Y-%m-%d %H:%M:%S", _time.gmtime(when)) + f".{int(round((when % 1) * 1e6)):06d} +0000 UTC"


# --- backends ---------------------------------------------------------------------------------------------

class VxlanBackend:
    """flannel.<VNI> and, per remote lease, its neighbour, FDB and route entries (or a direct route)."""

    def __init__(self, d: FlannelDaemon, cfg: BackendConfig) -> None:
        self.d, self.cfg = d, cfg
        self.dev = f"flannel.{cfg.vni}"
        self.mtu_base = cfg.mtu or d.ext_mtu
        self.mac = ""

    @property
    def mtu(self) -> int:
        return self.mtu_base - ENCAP_OVERHEAD

    def register(self, conf: NetConf) -> Lease:
        d = self.d
        d.log("I", "vxlan.go", f"VXLAN config: VNI={self.cfg.vni} Port={self.cfg.port} GBP={str(self.cfg.gbp).lower()} "
              f"Learning={str(self.cfg.learning).lower()} DirectRouting={str(self.cfg.direct_routing).lower()}")
        ns = d.ns
        existing = ns.links.get(self.dev)
        if existing is not None and (getattr(existing, "vni", None) != self.cfg.vni or existing.kind != "vxlan"):
            d.log("W", "device.go", f'"{self.dev}" already exists with incompatible configuration; recreating device')
            ns.link_del(self.dev)
            existing = None
        if existing is None:
            mac = int2mac(d.clock.rng.getrandbits(48) & ~(1 << 40) | (1 << 41))  # mac.NewHardwareAddr
            ns.link_add(self.dev, "vxlan", mac=mac, mtu=self.mtu, vni=self.cfg.vni, local=d.ext_ip,
                        dev=d.ext_iface, dstport=self.cfg.dstport, learning=self.cfg.learning)
        self.mac = ns.link(self.dev).mac_str
        attrs = Lease("", d.ext_ip, "vxlan", {"VNI": self.cfg.vni, "VtepMAC": self.mac})
        lease = d.subnet_mgr.acquire_lease(attrs, conf)
        # A /32 so that no broadcast routes are made; the source for host-to-pod traffic.
        addr = f"{int2ip(lease.net)}/32"
        if not any(f"{int2ip(a.local)}/{a.plen}" == addr for a in ns.link(self.dev).addrs):
            for a in list(ns.link(self.dev).addrs):  # ip.EnsureV4AddressOnLink drops stale addresses
                ns.addr_del(self.dev, f"{int2ip(a.local)}/{a.plen}")
            ns.addr_add(self.dev, addr)
        ns.link_set(self.dev, up=True)
        return lease

    def _direct(self, public_ip: str) -> bool:
        """ip.DirectRouting: the node is on a connected subnet (its route has no gateway)."""
        try:
            r, _src = self.d.ns.route_get(ip2int(public_ip))
        except NetError:
            return False
        return r.gateway is None and r.type == "unicast"

    def handle(self, kind: str, lease: Lease) -> None:
        d, ns = self.d, self.d.ns
        if lease.backend_type != "vxlan":
            d.log("W", "vxlan_network.go", f"ignoring non-vxlan v4Subnet({lease.subnet}) v6Subnet(::/0): "
                  f"type={lease.backend_type}")
            return
        data = lease.backend_data or {}
        vtep = data.get("VtepMAC")
        if not isinstance(vtep, str):
            d.log("E", "vxlan_network.go", "error decoding subnet lease JSON: no VtepMAC")
            return
        gw = int2ip(lease.net)
        direct = self.cfg.direct_routing and self._direct(lease.public_ip)
        if kind == "added":
            if direct:
                d.log("I", "vxlan_network.go", f"Adding direct route to subnet: {lease.subnet} PublicIP: "
                      f"{lease.public_ip}")
                d.try_(lambda: ns.route_add(lease.subnet, via=lease.public_ip, replace=True),
                       f"Error adding route to {lease.subnet} via {lease.public_ip}")
                return
            d.log("I", "vxlan_network.go", f"adding subnet: {lease.subnet} PublicIP: {lease.public_ip} VtepMAC: {vtep}")
            if not d.try_(lambda: ns.neigh_add(gw, dev=self.dev, lladdr=vtep, state="permanent", replace=True),
                          "AddARP failed"):
                return
            if not d.try_(lambda: ns.fdb_add(vtep, dev=self.dev, dst=lease.public_ip, replace=True), "AddFDB failed"):
                d.try_(lambda: ns.neigh_del(gw, dev=self.dev), "DelARP failed")
                return
            if not d.try_(lambda: ns.route_add(lease.subnet, via=gw, dev=self.dev, onlink=True, replace=True),
                          f"failed to add vxlanRoute ({lease.subnet} -> {gw})"):
                d.try_(lambda: ns.neigh_del(gw, dev=self.dev), "DelARP failed")
                d.try_(lambda: ns.fdb_del(vtep, dev=self.dev, dst=lease.public_ip), "DelFDB failed")
        else:
            if direct:
                d.log("I", "vxlan_network.go", f"Removing direct route to subnet: {lease.subnet} PublicIP: "
                      f"{lease.public_ip}")
                d.try_(lambda: ns.route_del(lease.subnet, via=lease.public_ip),
                       f"Error deleting route to {lease.subnet} via {lease.public_ip}")
                return
            d.log("I", "vxlan_network.go", f"removing subnet: {lease.subnet} PublicIP: {lease.public_ip} VtepMAC: "
                  f"{vtep}")
            d.try_(lambda: ns.neigh_del(gw, dev=self.dev), "DelARP failed")
            d.try_(lambda: ns.fdb_del(vtep, dev=self.dev, dst=lease.public_ip), "DelFDB failed")
            d.try_(lambda: ns.route_del(lease.subnet, via=gw, dev=self.dev),
                   f"failed to delete vxlanRoute ({lease.subnet} -> {gw})")


class HostGwBackend:
    """host-gw: a plain route to each remote subnet via the remote node's address on the shared L2."""

    def __init__(self, d: FlannelDaemon, cfg: BackendConfig) -> None:
        self.d, self.cfg = d, cfg

    @property
    def mtu(self) -> int:
        return self.d.ext_mtu

    def register(self, conf: NetConf) -> Lease:
        attrs = Lease("", self.d.ext_ip, "host-gw", None)
        return self.d.subnet_mgr.acquire_lease(attrs, conf)

    def handle(self, kind: str, lease: Lease) -> None:
        d, ns = self.d, self.d.ns
        if lease.backend_type != "host-gw":
            d.log("W", "route_network.go", f"Ignoring non-host-gw subnet: type={lease.backend_type}")
            return
        if kind == "added":
            d.log("I", "route_network.go", f"Subnet added: {lease.subnet} via {lease.public_ip}")
            d.try_(lambda: ns.route_add(lease.subnet, via=lease.public_ip, dev=d.ext_iface, replace=True),
                   f"Error adding route to {lease.subnet}")
        else:
            d.log("I", "route_network.go", f"Subnet removed: {lease.subnet}")
            d.try_(lambda: ns.route_del(lease.subnet, via=lease.public_ip, dev=d.ext_iface),
                   f"Error deleting route to {lease.subnet}")


# --- the daemon -----------------------------------------------------------------------------------------------

@dataclass
class FlannelOptions:
    """flanneld's command line as the kube-flannel DaemonSet passes it (`--ip-masq --kube-subnet-mgr`)."""

    ip_masq: bool = True
    iface: str | None = None
    iptables_forward_rules: bool = True
    subnet_file: str = SUBNET_FILE
    net_conf_path: str = NET_CONF_PATH
    etcd_prefix: str = ETCD_PREFIX
    random_fully: bool = True  # iptables >= 1.6.2 supports --random-fully; flannel then uses it

    def args(self, kube: bool) -> list[str]:
        out = ["--ip-masq"] if self.ip_masq else []
        if kube:
            out.append("--kube-subnet-mgr")
        else:
            out.append(f"--etcd-prefix={self.etcd_prefix}")
        if self.iface:
            out.append(f"--iface={self.iface}")
        return out


@dataclass
class FlannelDaemon:
    """flanneld on one node (namespace `ns`), with the kube subnet manager (`store`) or etcd (`etcd`)."""

    ns: Namespace
    node_name: str
    store: Store | None = None
    etcd: Etcd | None = None
    options: FlannelOptions = field(default_factory=FlannelOptions)
    logs: list[str] = field(default_factory=list)
    running: bool = False
    error: str = ""
    conf: NetConf | None = None
    lease: Lease | None = None
    leases: dict[str, Lease] = field(default_factory=dict)  # the other nodes', by subnet

    def __post_init__(self) -> None:
        self.clock = self.ns.lab.clock
        if (self.store is None) == (self.etcd is None):
            raise ValueError("FlannelDaemon needs exactly one of store (kube mode) or etcd")
        self.subnet_mgr: KubeSubnetManager | EtcdSubnetManager = (
            KubeSubnetManager(self, self.store) if self.store is not None
            else EtcdSubnetManager(self, self.etcd, self.options.etcd_prefix))  # type: ignore[arg-type]
        self.backend: VxlanBackend | HostGwBackend | None = None
        self.ext_iface = ""
        self.ext_ip = ""
        self.ext_mtu = 1500

    @property
    def net_conf_path(self) -> str:
        return self.options.net_conf_path

    # --- logging ---------------------------------------------------------------------------------------
    def log(self, level: str, source: str, message: str) -> None:
        """A klog line: `I0113 12:00:00.001000       1 main.go] message`."""
        when = EPOCH + self.clock.now
        stamp = _time.strftime("%m%d %H:%M:%S", _time.gmtime(when)) + f".{int(round((when % 1) * 1e6)) % 1000000:06d}"
        self.logs.append(f"{level}{stamp}       1 {source}] {message}")

    def try_(self, fn: Callable[[], object], what: str) -> bool:
        """Runs one netlink-like call; a refusal is logged as flanneld logs it, and the daemon goes on."""
        try:
            fn()
        except NetError as exc:
            self.log("E", "vxlan_network.go" if self.backend and isinstance(self.backend, VxlanBackend)
                     else "route_network.go", f"{what}: {exc.message}")
            return False
        return True

    # --- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> Lease:
        """Runs flanneld's startup; raises FlannelError (and records it) when flanneld would exit."""
        try:
            return self._start()
        except FlannelError as exc:
            self.error = str(exc)
            self.running = False
            self.log("E", "main.go", str(exc))
            raise

    def _start(self) -> Lease:
        kube = self.store is not None
        self.error = ""
        self.leases = {}
        self.log("I", "main.go", f"CLI flags config: {' '.join(self.options.args(kube))}")
        self.log("I", "main.go", f"Flannel version {FLANNEL_VERSION}")
        if kube:
            self.log("I", "kube.go", "Creating the node informer... using the kube subnet manager")
        text = self.subnet_mgr.network_config()
        self._pick_interface()
        self.conf = conf = parse_net_conf(text, uplink_mtu=self.ext_mtu)
        self.log("I", "main.go", f"Installing signal handlers; network config: {conf.network_cidr}, backend "
                 f"{conf.backend.type}")
        self.backend = VxlanBackend(self, conf.backend) if conf.backend.type == "vxlan" else HostGwBackend(
            self, conf.backend)
        self.lease = lease = self.backend.register(conf)
        self.log("I", "main.go", f"Acquired lease {lease.subnet} for {self.node_name}")
        if self.options.ip_masq:
            self.log("I", "iptables.go", "Setting up masking rules")
            self._iptables("nat", "FLANNEL-POSTRTG", self.masq_rules())
        if self.options.iptables_forward_rules:
            self.log("I", "iptables.go", "Changing default FORWARD chain policy to ACCEPT")
            self._iptables("filter", "FLANNEL-FWD", self.forward_rules())
        self.ns.write_file(self.options.subnet_file, self.subnet_env())
        self.log("I", "main.go", f"Wrote subnet file to {self.options.subnet_file}")
        self.log("I", "main.go", "Running backend.")
        self.running = True
        self.subnet_mgr.watch_leases(self._on_lease)
        return lease

    def stop(self) -> None:
        """SIGTERM: the watches end; the device, routes and rules stay (flanneld leaves them)."""
        self.running = False
        self.subnet_mgr.stop()

    def _pick_interface(self) -> None:
        ns = self.ns
        name = self.options.iface
        if name is None:
            self.log("I", "main.go", "Determining IP address of default interface")
            r = ns.route_lookup(0)
            if r is None or r.dev is None or r.plen != 0:
                raise FlannelError("Failed to find any valid interface to use: failed to get default interface: "
                                   "Unable to find default route")
            name = r.dev
        link = ns.links.get(name)
        if link is None:
            raise FlannelError(f"Failed to find interface to use that matches the interfaces and/or regexes "
                               f"provided: error looking up interface {name}: route ip+net: no such network "
                               "interface")
        addrs = [a for a in link.addrs if not a.secondary]
        if not addrs:
            raise FlannelError(f"Failed to find any valid interface to use: failed to find IPv4 address for interface "
                               f"{name}")
        self.ext_iface, self.ext_ip, self.ext_mtu = name, int2ip(addrs[0].local), link.mtu
        self.log("I", "main.go", f"Using interface with name {name} and address {self.ext_ip}")
        self.log("I", "main.go", f"Defaulting external address to interface address ({self.ext_ip})")

    def _on_lease(self, kind: str, lease: Lease) -> None:
        """The LeaseWatcher: own subnet ignored, one lease per subnet, then the backend's handler."""
        if not self.running or self.lease is None or lease.subnet == self.lease.subnet:
            return
        if kind == "added":
            self.leases[lease.subnet] = lease
        else:
            known = self.leases.pop(lease.subnet, None)
            if known is None:
                self.log("E", "lease.go", f"Removed subnet ({lease.subnet}) and ipv6 subnet (::/0) were not found")
            else:
                lease = known
        assert self.backend is not None
        self.backend.handle(kind, lease)

    # --- subnet.env and iptables ------------------------------------------------------------------------------
    def subnet_env(self) -> str:
        """WriteSubnetFile: the first usable address of the subnet, with the subnet's length."""
        assert self.conf is not None and self.lease is not None and self.backend is not None
        first = f"{int2ip(self.lease.net + 1)}/{self.lease.plen}"
        return (f"FLANNEL_NETWORK={self.conf.network_cidr}\nFLANNEL_SUBNET={first}\n"
                f"FLANNEL_MTU={self.backend.mtu}\nFLANNEL_IPMASQ={str(self.options.ip_masq).lower()}\n")

    def masq_rules(self) -> list[tuple[str, str, list[str]]]:
        """trafficmngr/iptables masqRules (flannel v0.22+): (table, chain, rulespec), in order."""
        assert self.conf is not None and self.lease is not None
        cluster, pod = self.conf.network_cidr, self.lease.subnet
        c = ["-m", "comment", "--comment", "flanneld masq"]
        masq = ["-j", "MASQUERADE"] + (["--random-fully"] if self.options.random_fully else [])
        return [
            ("nat", "POSTROUTING", c + ["-j", "FLANNEL-POSTRTG"]),
            ("nat", "FLANNEL-POSTRTG", ["-m", "mark", "--mark", KUBE_PROXY_MARK] + c + ["-j", "RETURN"]),
            ("nat", "FLANNEL-POSTRTG", ["-s", pod, "-d", cluster] + c + ["-j", "RETURN"]),
            ("nat", "FLANNEL-POSTRTG", ["-s", cluster, "-d", pod] + c + ["-j", "RETURN"]),
            ("nat", "FLANNEL-POSTRTG", ["!", "-s", cluster, "-d", pod] + c + ["-j", "RETURN"]),
            ("nat", "FLANNEL-POSTRTG", ["-s", cluster, "!", "-d", "224.0.0.0/4"] + c + masq),
            ("nat", "FLANNEL-POSTRTG", ["!", "-s", cluster, "-d", cluster] + c + masq),
        ]

    def forward_rules(self) -> list[tuple[str, str, list[str]]]:
        assert self.conf is not None
        net = self.conf.network_cidr
        c = ["-m", "comment", "--comment", "flanneld forward"]
        return [
            ("filter", "FORWARD", c + ["-j", "FLANNEL-FWD"]),
            ("filter", "FLANNEL-FWD", ["-s", net] + c + ["-j", "ACCEPT"]),
            ("filter", "FLANNEL-FWD", ["-d", net] + c + ["-j", "ACCEPT"]),
        ]

    def _iptables(self, table: str, chain: str, rules: list[tuple[str, str, list[str]]]) -> None:
        """CreateIP4Chain (iptables -N, or -F when it exists), then ipTablesBootstrap: one
        `iptables-restore --noflush` deleting rules that exist already and appending all, in order."""
        ns = self.ns
        if ns.run(f"iptables -t {table} -N {chain}").rc != 0:
            ns.run(f"iptables -t {table} -F {chain}")
        existing = [(ch, spec) for tbl, ch, spec in rules
                    if ns.run(f"iptables -t {tbl} -C {ch} {rule_text(spec)}").rc == 0]
        res = ns.run("iptables-restore --noflush", stdin=restore_payload(table, rules, existing))
        if res.rc != 0:
            self.log("E", "iptables.go", f"Failed to bootstrap IPTables: failed to apply partial iptables-restore "
                     f"{res.stderr.strip()}")
        else:
            self.log("I", "iptables.go", "bootstrap done")


def rule_text(spec: list[str]) -> str:
    """A rulespec as one iptables command-line string (the comment quoted)."""
    return " ".join(f'"{a}"' if " " in a else a for a in spec)


def restore_payload(table: str, rules: list[tuple[str, str, list[str]]],
                    existing: list[tuple[str, list[str]]] = ()) -> str:  # type: ignore[assignment]
    """What flannel feeds `iptables-restore --noflush` (IPTablesRestore.ApplyWithoutFlush): per rule a
    `-D` first when it exists already, then the `-A`, so the rules end up together and in order."""
    lines = [f"*{table}"]
    for _tbl, ch, spec in rules:
        if (ch, spec) in existing:
            lines.append(f"-D {ch} {rule_text(spec)}")
        lines.append(f"-A {ch} {rule_text(spec)}")
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"
