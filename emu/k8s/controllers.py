"""The kube-controller-manager and kube-scheduler parts pod networking depends on.

* NodeIpamController: `--allocate-node-cidrs --cluster-cidr=10.244.0.0/16 --node-cidr-mask-size=24`
  gives each new node the next free podCIDR (cidrset.AllocateNext: a rotating cursor, so node 0 gets
  10.244.0.0/24, node 1 10.244.1.0/24, ..., and a released CIDR is handed out again only after the
  cursor wraps), releases it when the node goes, and records CIDRNotAvailable when the range is full.
* Scheduler: binds each pod without a node to a schedulable node (Ready, not cordoned, taints
  tolerated, nodeSelector matched), the one with the fewest pods (ties by name), and records
  "Successfully assigned ns/pod to node".
* PodGC: force-deletes pods bound to a node that no longer exists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emu.k8s.store import ApiError, Node, Pod, Store, Toleration
from emu.net.addr import int2ip, ip2int, network_of

if TYPE_CHECKING:
    from emu.clock import Clock


class NodeIpamController:
    """The range allocator of kube-controller-manager's nodeipam controller."""

    def __init__(self, store: Store, cluster_cidr: str, mask_size: int = 24) -> None:
        net_text, _, plen_text = cluster_cidr.partition("/")
        self.plen = int(plen_text)
        self.net = network_of(ip2int(net_text), self.plen)
        if mask_size < self.plen:
            raise ValueError(f"--node-cidr-mask-size={mask_size} is shorter than the cluster CIDR /{self.plen}")
        self.mask_size = mask_size
        self.size = 1 << (mask_size - self.plen)
        self.used: set[int] = set()
        self.next = 0
        self.store = store
        store.watch("Node", on_add=self._on_node, on_update=lambda old, new: self._on_node(new),
                    on_delete=self._on_delete)

    def cidr(self, index: int) -> str:
        return f"{int2ip(self.net + (index << (32 - self.mask_size)))}/{self.mask_size}"

    def _index(self, cidr: str) -> int | None:
        net_text, _, plen_text = cidr.partition("/")
        try:
            net = ip2int(net_text)
        except ValueError:
            return None
        if int(plen_text or 0) != self.mask_size or network_of(net, self.plen) != self.net:
            return None
        return (net - self.net) >> (32 - self.mask_size)

    def allocate_next(self) -> str | None:
        for i in range(self.size):
            cand = (self.next + i) % self.size
            if cand not in self.used:
                self.used.add(cand)
                self.next = (cand + 1) % self.size
                return self.cidr(cand)
        return None

    def _on_node(self, node: Node) -> None:
        if node.spec.pod_cidr:
            idx = self._index(node.spec.pod_cidr)
            if idx is not None:
                self.used.add(idx)
            return
        current = self.store.find("Node", node.metadata.name)
        if current is None or current.spec.pod_cidr:
            return
        cidr = self.allocate_next()
        if cidr is None:
            self.store.record_event(current, "Normal", "CIDRNotAvailable",
                                    f"Node {node.metadata.name} status is now: CIDRNotAvailable", "cidrAllocator")
            return
        current.spec.pod_cidr = cidr
        current.spec.pod_cidrs = [cidr]
        self.store.update(current)

    def _on_delete(self, node: Node) -> None:
        if node.spec.pod_cidr:
            idx = self._index(node.spec.pod_cidr)
            if idx is not None:
                self.used.discard(idx)


def tolerates(tolerations: list[Toleration], key: str, effect: str, value: str = "") -> bool:
    for t in tolerations:
        if t.effect and t.effect != effect:
            continue
        if t.operator == "Exists" and (not t.key or t.key == key):
            return True
        if t.operator == "Equal" and t.key == key and t.value == value:
            return True
    return False


class Scheduler:
    """default-scheduler, reduced to the filters and the score that decide where pods of this emulator go."""

    name = "default-scheduler"

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store, self.clock = store, clock
        self.nodes: dict[str, Node] = {}
        self.pods_on: dict[str, int] = {}
        self.assigned: dict[tuple[str, str], str] = {}  # the scheduler cache: pods it knows are on a node
        self.pending: dict[tuple[str, str], Pod] = {}
        store.watch("Node", on_add=self._node, on_update=lambda o, n: self._node(n), on_delete=self._node_gone)
        store.watch("Pod", on_add=self._pod_add, on_update=self._pod_update, on_delete=self._pod_delete)

    def _node(self, node: Node) -> None:
        self.nodes[node.metadata.name] = node
        self.pods_on.setdefault(node.metadata.name, 0)
        if self.pending and self.schedulable(node, None):
            for key in sorted(self.pending):
                pod = self.pending.pop(key)
                self._schedule(pod)

    def _node_gone(self, node: Node) -> None:
        self.nodes.pop(node.metadata.name, None)
        self.pods_on.pop(node.metadata.name, None)

    def _assume(self, pod: Pod, node_name: str) -> None:
        key = (pod.metadata.namespace, pod.metadata.name)
        if key not in self.assigned:
            self.assigned[key] = node_name
            self.pods_on[node_name] = self.pods_on.get(node_name, 0) + 1

    def _pod_add(self, pod: Pod) -> None:
        if pod.spec.node_name:
            self._assume(pod, pod.spec.node_name)
        else:
            self._schedule(pod)

    def _pod_update(self, old: Pod, new: Pod) -> None:
        if new.spec.node_name:
            self._assume(new, new.spec.node_name)

    def _pod_delete(self, pod: Pod) -> None:
        key = (pod.metadata.namespace, pod.metadata.name)
        self.pending.pop(key, None)
        node = self.assigned.pop(key, None)
        if node is not None and node in self.pods_on:
            self.pods_on[node] -= 1

    def schedulable(self, node: Node, pod: Pod | None) -> bool:
        if node.metadata.deletion_timestamp is not None:
            return False
        tolerations = pod.spec.tolerations if pod is not None else []
        if node.spec.unschedulable and not tolerates(tolerations, "node.kubernetes.io/unschedulable", "NoSchedule"):
            return False
        for t in node.spec.taints:
            if t.effect in ("NoSchedule", "NoExecute") and not tolerates(tolerations, t.key, t.effect, t.value):
                return False
        if pod is not None:
            labels = node.metadata.labels
            if any(labels.get(k) != v for k, v in pod.spec.node_selector.items()):
                return False
        return pod is not None or node.ready()

    def _schedule(self, pod: Pod) -> None:
        current = self.store.find("Pod", pod.metadata.name, pod.metadata.namespace)
        if current is None or current.spec.node_name or current.metadata.deletion_timestamp is not None:
            return
        fits = [n for n in self.nodes.values() if self.schedulable(n, current)]
        if not fits:
            total = len(self.nodes)
            msg = f"0/{total} nodes are available: {total} node(s) had untolerated taint or were not ready." if total \
                else "no nodes available to schedule pods"
            self.store.record_event(current, "Warning", "FailedScheduling", msg, self.name)
            self.pending[(current.metadata.namespace, current.metadata.name)] = current
            return
        best = min(fits, key=lambda n: (self.pods_on.get(n.metadata.name, 0), n.metadata.name))
        self.bind(current, best.metadata.name)

    def bind(self, pod: Pod, node_name: str) -> None:
        pod.spec.node_name = node_name
        cond = next((c for c in pod.status.conditions if c.type == "PodScheduled"), None)
        if cond is None:
            from emu.k8s.store import Condition

            pod.status.conditions.append(Condition("PodScheduled", "True", last_transition=self.clock.now))
        try:
            self.store.update(pod)
        except ApiError:
            return
        self._assume(pod, node_name)
        self.store.record_event(pod, "Normal", "Scheduled",
                                f"Successfully assigned {pod.metadata.namespace}/{pod.metadata.name} to {node_name}",
                                self.name)


class PodGC:
    """Deletes the pods of nodes that are gone (kube-controller-manager's podgc, orphaned pods)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        store.watch("Node", on_delete=self._node_gone, replay=False)

    def _node_gone(self, node: Node) -> None:
        for pod in self.store.list("Pod"):
            if pod.spec.node_name == node.metadata.name:
                try:
                    self.store.delete("Pod", pod.metadata.name, pod.metadata.namespace)
                except ApiError:
                    pass
