"""A Kubernetes cluster with Flannel, on one lab: nodes on an underlay, the control plane, kubelets, flanneld.

    lab = Lab(seed=1)
    cluster = Cluster(lab, nodes=3)                       # vxlan, 10.244.0.0/16, nodes on 192.168.1.0/24
    a = cluster.create_pod("a", node="node1", wait=True)
    b = cluster.create_pod("b", node="node2", wait=True)
    cluster.pod_ns("a").run(f"ping -c 1 {b.status.pod_ip}")   # ttl=62: node1 -> flannel.1 -> node2
    print(cluster.kubectl("get pods -o wide"))

Each node is a namespace (`node1`, ...) with `lo` and an uplink NIC `eth0` on the underlay segment,
`net.ipv4.ip_forward=1` (kubeadm's preflight insists), a kubelet, and the kube-flannel DaemonSet pod:
its install-cni init container copies the ConfigMap's cni-conf.json to
/etc/cni/net.d/10-flannel.conflist (the node turns Ready), its kube-flannel container runs
flanneld. kube-controller-manager allocates podCIDRs in order (node1 10.244.0.0/24, node2
10.244.1.0/24, ...) in kube mode; in etcd mode flanneld leases subnets from etcd itself. A pod's
sandbox namespace is named after the pod (`<namespace>.<pod>` outside `default`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from emu.k8s import kubectl as _kubectl
from emu.k8s.controllers import NodeIpamController, PodGC, Scheduler
from emu.k8s.flannel import (
    ETCD_PREFIX,
    NET_CONF_PATH,
    FlannelDaemon,
    FlannelError,
    FlannelOptions,
    parse_net_conf,
)
from emu.k8s.kubelet import Kubelet, delete_netns
from emu.k8s.store import (
    ApiError,
    ConfigMap,
    Container,
    ContainerPort,
    Etcd,
    ObjectMeta,
    Pod,
    PodSpec,
    Store,
    Toleration,
)
from emu.net.addr import int2ip, ip2int, network_of

if TYPE_CHECKING:
    from emu.net.lab import Lab
    from emu.net.namespace import Namespace

FLANNEL_IMAGE = "docker.io/flannel/flannel:v0.25.1"
FLANNEL_CNI_PLUGIN_IMAGE = "docker.io/flannel/flannel-cni-plugin:v1.4.0-flannel1"
FLANNEL_NAMESPACE = "kube-flannel"
FLANNEL_CONFIGMAP = "kube-flannel-cfg"
CNI_CONFLIST_PATH = "/etc/cni/net.d/10-flannel.conflist"

# cni-conf.json of kube-flannel.yml, byte for byte.
KUBE_FLANNEL_CNI_CONF = """{
  "name": "cbr0",
  "cniVersion": "0.3.1",
  "plugins": [
    {
      "type": "flannel",
      "delegate": {
        "hairpinMode": true,
        "isDefaultGateway": true
      }
    },
    {
      "type": "portmap",
      "capabilities": {
        "portMappings": true
      }
    }
  ]
}
"""

LOOPBACK_CONF = {"cniVersion": "1.0.0", "name": "cni-loopback", "plugins": [{"type": "loopback"}]}

DEFAULT_TOLERATIONS = [
    Toleration("node.kubernetes.io/not-ready", "Exists", "", "NoExecute", 300),
    Toleration("node.kubernetes.io/unreachable", "Exists", "", "NoExecute", 300),
]
DAEMONSET_TOLERATIONS = [
    Toleration("", "Exists", "", "NoSchedule"),
    Toleration("node.kubernetes.io/disk-pressure", "Exists", "", "NoSchedule"),
    Toleration("node.kubernetes.io/memory-pressure", "Exists", "", "NoSchedule"),
    Toleration("node.kubernetes.io/network-unavailable", "Exists", "", "NoSchedule"),
    Toleration("node.kubernetes.io/not-ready", "Exists", "", "NoExecute"),
    Toleration("node.kubernetes.io/pid-pressure", "Exists", "", "NoSchedule"),
    Toleration("node.kubernetes.io/unreachable", "Exists", "", "NoExecute"),
    Toleration("node.kubernetes.io/unschedulable", "Exists", "", "NoSchedule"),
]
_SUFFIX_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apimachinery/pkg/util/rand's alphabet


class ClusterError(Exception):
    """A cluster operation the emulated API refuses (names the object)."""


class CniAdapter:
    """How the kubelet's container runtime reaches emu.cni: one Runtime per node namespace."""

    def __init__(self, lab: Lab) -> None:
        from emu.cni import Runtime

        self.lab = lab
        self._runtime_cls = Runtime
        self._runtimes: dict[str, Any] = {}

    @staticmethod
    def registry() -> dict[str, Any]:
        """The node's CNI_PATH: the standard plugins plus flannel (as kube-flannel's install-cni-plugin adds it)."""
        from emu.cni.plugin_flannel import FlannelPlugin
        from emu.cni.registry import default_registry

        reg = default_registry()
        reg.setdefault("flannel", FlannelPlugin())
        return reg

    def runtime(self, node: Namespace) -> Any:
        rt = self._runtimes.get(node.name)
        if rt is None or rt.node is not node:
            rt = self._runtimes[node.name] = self._runtime_cls(self.lab, node, registry=self.registry())
        return rt

    def loopback(self, node: Namespace, sandbox: Namespace, cid: str) -> None:
        self.runtime(node).add(LOOPBACK_CONF, cid, sandbox, ifname="lo")

    def add(self, node: Namespace, conflist: dict[str, Any], cid: str, sandbox: Namespace, ifname: str, args: str,
            capabilities: dict[str, Any]) -> dict[str, Any]:
        return self.runtime(node).add(conflist, cid, sandbox, ifname=ifname, args=args,
                                      capability_args=capabilities or None)

    def delete(self, node: Namespace, conflist: dict[str, Any], cid: str, sandbox: Namespace | None, ifname: str,
               args: str, capabilities: dict[str, Any]) -> None:
        self.runtime(node).delete(conflist, cid, sandbox, ifname=ifname, args=args,
                                  capability_args=capabilities or None)


@dataclass
class ClusterNode:
    """One node: its namespace, address, kubelet and flanneld."""

    name: str
    ns: Namespace
    ip: str
    kubelet: Kubelet
    flannel: FlannelDaemon | None = None


class FlannelProgram:
    """The kube-flannel DaemonSet pod on one node: install-cni, then flanneld."""

    def __init__(self, cluster: Cluster, kubelet: Kubelet, pod: Pod) -> None:
        self.cluster, self.kubelet, self.pod = cluster, kubelet, pod

    def start(self) -> Any:
        c, kl = self.cluster, self.kubelet
        ns = kl.ns
        cm = c.store.get("ConfigMap", FLANNEL_CONFIGMAP, FLANNEL_NAMESPACE)
        # init containers: install-cni-plugin copies the flannel binary, install-cni the network config
        ns.write_file("/opt/cni/bin/flannel", "flannel CNI plugin v1.4.0-flannel1 (emulated: emu.cni.plugin_flannel)\n")
        ns.write_file(CNI_CONFLIST_PATH, cm.data["cni-conf.json"])
        kl.sync_node_status()
        # the ConfigMap volume of the kube-flannel container
        ns.write_file(NET_CONF_PATH, cm.data["net-conf.json"])
        node = c.nodes[kl.node_name]
        if node.flannel is None:
            node.flannel = FlannelDaemon(ns, kl.node_name, store=c.store if c.subnet_mgr == "kube" else None,
                                         etcd=c.etcd if c.subnet_mgr == "etcd" else None, options=c.flannel_options)
        return node.flannel.start()

    def stop(self) -> None:
        node = self.cluster.nodes.get(self.kubelet.node_name)
        if node is not None and node.flannel is not None:
            node.flannel.stop()


class Cluster:
    """A Flannel cluster: `nodes` nodes (a count or names) on one underlay segment, the control plane, pods."""

    def __init__(
        self,
        lab: Lab,
        nodes: int | Iterable[str] = 2,
        *,
        network: str = "10.244.0.0/16",
        backend: str = "vxlan",
        underlay: str = "192.168.1.0/24",
        subnet_mgr: str = "kube",
        subnet_len: int | None = None,
        subnet_min: str | None = None,
        subnet_max: str | None = None,
        vni: int | None = None,
        port: int | None = None,
        direct_routing: bool | None = None,
        backend_mtu: int | None = None,
        net_conf: str | dict[str, Any] | None = None,
        ip_masq: bool = True,
        iface: str | None = "eth0",
        mtu: int = 1500,
        segment: str = "underlay",
        node_prefix: str = "node",
        node_cidr_mask_size: int | None = None,
        subnets: list[str] | None = None,
        settle: bool = True,
    ) -> None:
        if subnet_mgr not in ("kube", "etcd"):
            raise ClusterError(f'subnet_mgr must be "kube" or "etcd", not {subnet_mgr!r}')
        self.lab = lab
        self.clock = lab.clock
        self.store = Store(lab.clock)
        self.etcd = Etcd(lab.clock) if subnet_mgr == "etcd" else None
        self.subnet_mgr = subnet_mgr
        self.network = network
        self.segment = segment
        self.mtu = mtu
        self.node_prefix = node_prefix
        self.nodes: dict[str, ClusterNode] = {}
        self.flannel_options = FlannelOptions(ip_masq=ip_masq, iface=iface)
        self.cni = CniAdapter(lab)
        self._node_seq = 0
        # The underlay: one L2 segment, or several subnets (one segment each) joined by a router.
        self.subnets: list[tuple[int, int]] = []
        for cidr in subnets or [underlay]:
            unet, _, uplen = cidr.partition("/")
            self.subnets.append((network_of(ip2int(unet), int(uplen or 24)), int(uplen or 24)))
        self._used: list[set[int]] = [set() for _ in self.subnets]
        self.underlay_net, self.underlay_plen = self.subnets[0]
        self.router: Namespace | None = None
        if len(self.subnets) > 1:
            self.router = lab.netns("underlay-router")
            self.router.link_set("lo", up=True)
            self.router.sysctl_set("net.ipv4.ip_forward", "1")
            for i, (_net, plen) in enumerate(self.subnets):
                self.router.link_add(f"eth{i}", "nic", segment=self._segment(i), mtu=mtu)
                self.router.addr_add(f"eth{i}", f"{int2ip(self._gateway(i))}/{plen}")
                self.router.link_set(f"eth{i}", up=True)

        if net_conf is None:
            be: dict[str, Any] = {"Type": backend}
            for key, value in (("VNI", vni), ("Port", port), ("DirectRouting", direct_routing), ("MTU", backend_mtu)):
                if value is not None:
                    be[key] = value
            conf: dict[str, Any] = {"Network": network}
            if subnet_len is not None:
                conf["SubnetLen"] = subnet_len
            if subnet_min is not None:
                conf["SubnetMin"] = subnet_min
            if subnet_max is not None:
                conf["SubnetMax"] = subnet_max
            conf["EnableNFTables"] = False
            conf["Backend"] = be
            text = json.dumps(conf, indent=2) + "\n"
        else:
            text = net_conf if isinstance(net_conf, str) else json.dumps(net_conf, indent=2) + "\n"
        self.net_conf_text = text
        self.net_conf = parse_net_conf(text)  # refuse a config flanneld would refuse, with its message
        self.network = self.net_conf.network_cidr

        # the control plane
        if subnet_mgr == "kube":
            self.ipam: NodeIpamController | None = NodeIpamController(
                self.store, self.network, node_cidr_mask_size or self.net_conf.subnet_len)
        else:
            self.ipam = None
            assert self.etcd is not None
            self.etcd.put(f"{ETCD_PREFIX}/config", text)
        self.scheduler = Scheduler(self.store, lab.clock)
        self.podgc = PodGC(self.store)
        self.store.create(ConfigMap(ObjectMeta(name=FLANNEL_CONFIGMAP, namespace=FLANNEL_NAMESPACE,
                                               labels={"app": "flannel", "k8s-app": "flannel", "tier": "node"}),
                                    {"cni-conf.json": KUBE_FLANNEL_CNI_CONF, "net-conf.json": text}))
        self.programs: dict[str, Callable[[Kubelet, Pod], Any]] = {
            FLANNEL_IMAGE: lambda kl, pod: FlannelProgram(self, kl, pod)}
        _kubectl.attach(lab, self)

        names = [f"{node_prefix}{i + 1}" for i in range(nodes)] if isinstance(nodes, int) else list(nodes)
        for name in names:
            self.add_node(name, settle=False)
        if settle:
            self.settle()

    # --- time ------------------------------------------------------------------------------------------
    def settle(self, limit: float = 5.0) -> None:
        """Runs the clock until nothing is due within `limit` virtual seconds of the last event."""
        clock = self.clock
        while True:
            nxt = clock.next_time()
            if nxt is None or nxt > clock.now + limit:
                return
            clock.step()

    def run(self, seconds: float) -> None:
        self.lab.run(seconds)

    def wait(self, done: Callable[[], bool], timeout: float = 60.0) -> bool:
        """Runs the clock until `done()` or `timeout` virtual seconds; returns `done()`."""
        self.clock.run_while(lambda: not done(), timeout)
        return done()

    # --- nodes -------------------------------------------------------------------------------------------
    def _segment(self, i: int) -> str:
        return self.segment if len(self.subnets) == 1 else f"{self.segment}{i + 1}"

    def _gateway(self, i: int) -> int:
        """The router's address on subnet i: its last usable host."""
        net, plen = self.subnets[i]
        return net + (1 << (32 - plen)) - 2

    def _next_ip(self, i: int = 0) -> str:
        net, plen = self.subnets[i]
        size = 1 << (32 - plen)
        for host in range(1, size - 1):
            if host not in self._used[i] and (self.router is None or net + host != self._gateway(i)):
                self._used[i].add(host)
                return int2ip(net + host)
        raise ClusterError(f"underlay {int2ip(net)}/{plen} is full")

    def _subnet_of(self, ip: str) -> int:
        for i, (net, plen) in enumerate(self.subnets):
            if network_of(ip2int(ip), plen) == net:
                return i
        raise ClusterError(f"node address {ip} is in none of the underlay subnets")

    def add_node(self, name: str | None = None, *, ip: str | None = None, segment: str | None = None,
                 labels: dict[str, str] | None = None, settle: bool = True) -> ClusterNode:
        """A machine joins: its namespace and uplink, `kubeadm join` (the kubelet registers the Node), the
        flannel DaemonSet pod. With `settle` the clock runs until the node and its routes are in place."""
        if name is None:
            while True:
                self._node_seq += 1
                name = f"{self.node_prefix}{self._node_seq}"
                if name not in self.nodes and name not in self.lab.namespaces:
                    break
        if name in self.nodes:
            raise ClusterError(f'nodes "{name}" already exists')
        if name in self.lab.namespaces:
            raise ClusterError(f"node {name}: a namespace of that name already exists in the lab")
        if ip is None:
            idx = len(self.nodes) % len(self.subnets)  # round robin over the subnets
            ip = self._next_ip(idx)
        else:
            idx = self._subnet_of(ip)
            self._used[idx].add(ip2int(ip) - self.subnets[idx][0])
        ns = self.lab.netns(name)
        ns.link_set("lo", up=True)
        ns.link_add("eth0", "nic", segment=segment or self._segment(idx), mtu=self.mtu)
        ns.addr_add("eth0", f"{ip}/{self.subnets[idx][1]}")
        ns.link_set("eth0", up=True)
        if self.router is not None:
            ns.route_add("default", via=int2ip(self._gateway(idx)))
        ns.sysctl_set("net.ipv4.ip_forward", "1")
        kubelet = Kubelet(lab=self.lab, store=self.store, ns=ns, node_name=name, cni=self.cni,
                          programs=self.programs, node_ip=ip, labels=labels)
        node = ClusterNode(name, ns, ip, kubelet)
        self.nodes[name] = node
        kubelet.register()
        self._create_flannel_pod(name)
        if settle:
            self.settle()
        return node

    def remove_node(self, name: str, *, settle: bool = True) -> None:
        """A machine leaves: its pods are deleted (CNI DEL), `kubectl delete node`, the machine goes off the
        underlay. In kube mode the other flanneld drop its routes at once; in etcd mode its lease stays
        until the TTL (24 h) runs out, as with a real flanneld that stops."""
        node = self.nodes.get(name)
        if node is None:
            raise ClusterError(f'nodes "{name}" not found')
        for pod in self.store.list("Pod"):
            if pod.spec.node_name == name and not pod.spec.host_network:
                self.delete_pod(pod.metadata.name, pod.metadata.namespace, settle=False)
        self.settle()
        node.kubelet.stop()
        try:
            self.store.delete("Node", name)
        except ApiError:
            pass
        delete_netns(self.lab, name)
        idx = self._subnet_of(node.ip)
        self._used[idx].discard(ip2int(node.ip) - self.subnets[idx][0])
        del self.nodes[name]
        if settle:
            self.settle()

    def node_ns(self, name: str) -> Namespace:
        try:
            return self.nodes[name].ns
        except KeyError:
            raise ClusterError(f'nodes "{name}" not found') from None

    def _create_flannel_pod(self, node_name: str) -> Pod:
        suffix = "".join(self.clock.rng.choice(_SUFFIX_CHARS) for _ in range(5))
        args = ["--ip-masq", "--kube-subnet-mgr"] if self.subnet_mgr == "kube" else ["--ip-masq"]
        if self.flannel_options.iface:
            args.append(f"--iface={self.flannel_options.iface}")
        pod = Pod(ObjectMeta(name=f"kube-flannel-ds-{suffix}", namespace=FLANNEL_NAMESPACE,
                             labels={"app": "flannel", "controller-revision-hash": "7b9d7b6c4f", "k8s-app": "flannel",
                                     "pod-template-generation": "1", "tier": "node"},
                             owner="DaemonSet/kube-flannel-ds"),
                  PodSpec(containers=[Container("kube-flannel", FLANNEL_IMAGE, args=args,
                                              command=["/opt/bin/flanneld"])],
                          init_containers=[
                              Container("install-cni-plugin", FLANNEL_CNI_PLUGIN_IMAGE, command=["cp"],
                                        args=["-f", "/flannel", "/opt/cni/bin/flannel"]),
                              Container("install-cni", FLANNEL_IMAGE, command=["cp"],
                                        args=["-f", "/etc/kube-flannel/cni-conf.json",
                                              "/etc/cni/net.d/10-flannel.conflist"])],
                          node_name=node_name, host_network=True, service_account_name="flannel",
                          priority=2000001000, priority_class_name="system-node-critical",
                          tolerations=list(DAEMONSET_TOLERATIONS)))
        created = self.store.create(pod)
        self.store.record_event(created, "Normal", "Scheduled",
                                f"Successfully assigned {FLANNEL_NAMESPACE}/{created.metadata.name} to {node_name}",
                                "default-scheduler")
        return created

    def flannel(self, node: str) -> FlannelDaemon:
        """The flanneld of `node` (raises if it has not started)."""
        d = self.nodes[node].flannel
        if d is None:
            raise ClusterError(f"flanneld has not started on {node}")
        return d

    # --- pods ---------------------------------------------------------------------------------------------
    def create_pod(self, name: str, namespace: str = "default", *, node: str | None = None,
                   image: str = "docker.io/library/nginx:1.25", labels: dict[str, str] | None = None,
                   ports: list[int | tuple[int, int] | ContainerPort] | None = None, container: str | None = None,
                   wait: bool = False, timeout: float = 60.0) -> Pod:
        """`kubectl run NAME --image IMAGE` (with `node` as spec.nodeName, else the scheduler picks).

        `ports` are container ports, or (containerPort, hostPort) pairs for the portmap plugin. With
        `wait` the clock runs until the pod has an IP (or `timeout`); the returned Pod is current.
        """
        if namespace == "default" and name in self.lab.namespaces:
            raise ClusterError(f'pod "{name}": its sandbox would be named {name}, which the lab already has')
        cports = []
        for p in ports or []:
            if isinstance(p, ContainerPort):
                cports.append(p)
            elif isinstance(p, tuple):
                cports.append(ContainerPort(p[0], host_port=p[1]))
            else:
                cports.append(ContainerPort(int(p)))
        pod = Pod(ObjectMeta(name=name, namespace=namespace, labels=dict(labels or {"run": name})),
                  PodSpec(containers=[Container(container or name, image, cports)], node_name=node or "",
                          tolerations=[Toleration(t.key, t.operator, t.value, t.effect, t.toleration_seconds)
                                       for t in DEFAULT_TOLERATIONS]))
        try:
            created = self.store.create(pod)
        except ApiError as exc:
            raise ClusterError(f"Error from server ({exc.reason}): {exc.message}") from None
        if not wait:
            return created
        self.wait(lambda: bool(self._pod_ip(name, namespace)), timeout)
        return self.pod(name, namespace)

    def _pod_ip(self, name: str, namespace: str) -> str:
        p = self.store.find("Pod", name, namespace)
        return p.status.pod_ip if p is not None else ""

    def delete_pod(self, name: str, namespace: str = "default", *, settle: bool = True) -> None:
        """`kubectl delete pod`: the kubelet tears the sandbox down (CNI DEL), then the object goes."""
        pod = self.store.find("Pod", name, namespace)
        if pod is None:
            raise ClusterError(f'Error from server (NotFound): pods "{name}" not found')
        if pod.metadata.deletion_timestamp is None:
            pod.metadata.deletion_timestamp = self.clock.now
            self.store.update(pod)
        if not pod.spec.node_name:  # never scheduled: nothing to tear down
            self.store.delete("Pod", name, namespace)
        if settle:
            self.settle()

    def pod(self, name: str, namespace: str = "default") -> Pod:
        try:
            return self.store.get("Pod", name, namespace)
        except ApiError as exc:
            raise ClusterError(f"Error from server (NotFound): {exc.message}") from None

    def pods(self, namespace: str | None = "default") -> list[Pod]:
        return self.store.list("Pod", namespace)

    def pod_ns(self, name: str, namespace: str = "default") -> Namespace:
        """The sandbox namespace of a running pod (where `ping`, `ip addr`, ... run as in the pod)."""
        pod = self.pod(name, namespace)
        node = self.nodes.get(pod.spec.node_name)
        if node is None:
            raise ClusterError(f"pod {namespace}/{name} is not on a node")
        if pod.spec.host_network:
            return node.ns
        sb = node.kubelet.sandboxes.get(pod.metadata.uid)
        if sb is None:
            raise ClusterError(f"pod {namespace}/{name} has no sandbox yet (status "
                               f"{_kubectl.pod_status_text(pod)})")
        return self.lab[sb.netns]

    # --- views -----------------------------------------------------------------------------------------------
    def kubectl(self, command: str) -> str:
        """`kubectl ...` as text (stdout, or the error kubectl prints)."""
        rc, out, err = _kubectl.kubectl(self, command)
        return out if rc == 0 else err


__all__ = ["Cluster", "ClusterError", "ClusterNode", "FlannelError", "KUBE_FLANNEL_CNI_CONF"]
