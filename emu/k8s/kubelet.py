"""The kubelet of one node, with its container runtime (containerd's CRI and CNI parts) folded in.

* Registers the Node (InternalIP, Hostname, node info) NotReady with the not-ready taint, and turns
  it Ready once a CNI network config is in /etc/cni/net.d ("cni plugin not initialized" before).
* Runs the pods bound to it. A pod on the host network shares the node's namespace (the flannel
  DaemonSet pod is one: its `program` runs flanneld). Any other pod gets a sandbox: a new network
  namespace with lo up (containerd runs the loopback plugin), then CNI ADD of the first network
  config in /etc/cni/net.d (lexical order, as containerd picks it) with CNI_IFNAME eth0 and the
  K8S_POD_* CNI_ARGS; the result's first address becomes status.podIP. A failed ADD is a
  FailedCreatePodSandBox event with containerd's message, and a retry after kubelet's 10 s backoff.
* Deleting a pod runs CNI DEL (StopPodSandbox), removes the sandbox namespace, then the pod object.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from emu.k8s.store import (
    ApiError,
    Condition,
    ContainerStatus,
    Node,
    NodeAddress,
    NodeSpec,
    NodeStatus,
    ObjectMeta,
    Pod,
    Store,
    Taint,
)

if TYPE_CHECKING:
    from emu.net.lab import Lab
    from emu.net.namespace import Namespace

CNI_CONF_DIR = "/etc/cni/net.d/"
BACKOFF = 10.0  # kubelet's pod worker backoff after a sync error
CRASH_BACKOFF = (10.0, 20.0, 40.0, 80.0, 160.0, 300.0)
NOT_READY = "node.kubernetes.io/not-ready"
NETWORK_NOT_READY = ("container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady "
                     "message:Network plugin returns error: cni plugin not initialized")


class Program(Protocol):
    """What a host-network container runs (flanneld): `start()` raises on a crash, `stop()`."""

    def start(self) -> Any: ...

    def stop(self) -> None: ...


ProgramFactory = Callable[["Kubelet", Pod], Program]


@dataclass
class Sandbox:
    """A pod sandbox: its network namespace and what CNI ADD answered."""

    container_id: str
    netns: str
    conflist: dict[str, Any]
    result: dict[str, Any] = field(default_factory=dict)


def hexid(rng: Any, bits: int = 256) -> str:
    return f"{rng.getrandbits(bits):0{bits // 4}x}"


def delete_netns(lab: Lab, name: str) -> None:
    """The runtime removes a sandbox: `ip netns del NAME` (nothing to do when it is gone already)."""
    if name in lab.namespaces:
        lab.delete_netns(name)


class Kubelet:
    """One node's kubelet and container runtime."""

    def __init__(self, *, lab: Lab, store: Store, ns: Namespace, node_name: str, cni: Any,
                 programs: dict[str, ProgramFactory] | None = None, node_ip: str = "",
                 labels: dict[str, str] | None = None, taints: list[Taint] | None = None,
                 sandbox_name: Callable[[Pod], str] | None = None) -> None:
        self.lab, self.store, self.ns, self.node_name = lab, store, ns, node_name
        self.clock = lab.clock
        self.cni = cni  # the CNI runtime adapter (emu.k8s.cluster.CniAdapter)
        self.programs = programs or {}
        self.node_ip = node_ip
        self.labels = labels or {}
        self.taints = taints or []
        self.sandbox_name = sandbox_name or (lambda p: p.metadata.name if p.metadata.namespace == "default"
                                             else f"{p.metadata.namespace}.{p.metadata.name}")
        self.sandboxes: dict[str, Sandbox] = {}  # pod uid -> sandbox
        self.running: dict[str, Program] = {}  # pod uid -> host-network program
        self.restarts: dict[str, int] = {}
        self.retry: dict[str, Any] = {}  # pod uid -> Timer
        self.waiting: set[tuple[str, str]] = set()  # pods held back by a network that is not ready
        self.network_ready = False
        self.stopped = False
        self._watch = None

    # --- the node ----------------------------------------------------------------------------------
    def register(self) -> None:
        """Creates the Node object, NotReady until the network plugin is ready."""
        labels = {"beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
                  "kubernetes.io/arch": "amd64", "kubernetes.io/hostname": self.node_name, "kubernetes.io/os": "linux"}
        labels.update(self.labels)
        now = self.clock.now
        node = Node(ObjectMeta(name=self.node_name, labels=labels,
                               annotations={"node.alpha.kubernetes.io/ttl": "0",
                                            "volumes.kubernetes.io/controller-managed-attach-detach": "true"}),
                    NodeSpec(taints=[*self.taints, Taint(NOT_READY, "NoSchedule")]),
                    NodeStatus(addresses=[NodeAddress("InternalIP", self.node_ip),
                                          NodeAddress("Hostname", self.node_name)],
                               conditions=[Condition("Ready", "False", "KubeletNotReady", NETWORK_NOT_READY, now)]))
        self.store.create(node)
        self._watch = self.store.watch("Pod", key=("spec.nodeName", self.node_name), on_add=self._pod_added,
                                       on_update=self._pod_updated, on_delete=self._pod_deleted)
        self.sync_node_status()

    def cni_config(self) -> tuple[str, dict[str, Any]] | None:
        """The network config containerd uses: the first .conf/.conflist/.json in /etc/cni/net.d."""
        names = sorted(p for p in self.ns.files if p.startswith(CNI_CONF_DIR)
                       and p.rsplit(".", 1)[-1] in ("conf", "conflist", "json"))
        for path in names:
            try:
                conf = json.loads(self.ns.files[path])
            except ValueError:
                continue
            if isinstance(conf, dict):
                if "plugins" not in conf:  # a single .conf is a list of one
                    conf = {"cniVersion": conf.get("cniVersion", ""), "name": conf.get("name", ""), "plugins": [conf]}
                return path, conf
        return None

    def sync_node_status(self) -> None:
        """The runtime's network status decides the Ready condition (and the not-ready taint)."""
        if self.stopped:
            return
        ready = self.cni_config() is not None
        node = self.store.find("Node", self.node_name)
        if node is None:
            return
        changed = ready != self.network_ready or not node.status.conditions
        self.network_ready = ready
        if not changed:
            return
        now = self.clock.now
        node.status.conditions = [Condition("Ready", "True", "KubeletReady", "kubelet is posting ready status", now)
                                  if ready else Condition("Ready", "False", "KubeletNotReady", NETWORK_NOT_READY, now)]
        node.spec.taints = [t for t in node.spec.taints if t.key != NOT_READY]
        if not ready:
            node.spec.taints.append(Taint(NOT_READY, "NoSchedule"))
        self.store.update(node)
        if ready:
            self.store.record_event(node, "Normal", "NodeReady",
                                    f"Node {self.node_name} status is now: NodeReady", "kubelet")
            for key in sorted(self.waiting):  # pods that waited for the network
                name, namespace = key
                pod = self.store.find("Pod", name, namespace)
                if pod is not None and pod.metadata.uid not in self.sandboxes:
                    timer = self.retry.pop(pod.metadata.uid, None)
                    if timer is not None:
                        timer.cancel()
                    self._sync(pod)
            self.waiting.clear()

    def stop(self) -> None:
        """The machine goes away: no more syncs; host-network programs end."""
        self.stopped = True
        if self._watch is not None:
            self._watch.stop()
        for t in self.retry.values():
            t.cancel()
        self.retry.clear()
        for prog in self.running.values():
            prog.stop()
        self.running.clear()

    # --- pods ------------------------------------------------------------------------------------------
    def _pod_added(self, pod: Pod) -> None:
        if pod.metadata.deletion_timestamp is not None:
            self._teardown(pod)
        else:
            self._sync(pod)

    def _pod_updated(self, old: Pod, new: Pod) -> None:
        if new.metadata.deletion_timestamp is not None and old.metadata.deletion_timestamp is None:
            self._teardown(new)

    def _pod_deleted(self, pod: Pod) -> None:
        uid = pod.metadata.uid
        if uid in self.sandboxes or uid in self.running or uid in self.retry:
            self._teardown(pod, delete_object=False)

    def _later(self, pod: Pod, delay: float) -> None:
        uid = pod.metadata.uid
        old = self.retry.pop(uid, None)
        if old is not None:
            old.cancel()

        def again() -> None:
            self.retry.pop(uid, None)
            current = self.store.find("Pod", pod.metadata.name, pod.metadata.namespace)
            if current is not None and current.metadata.uid == uid and current.metadata.deletion_timestamp is None:
                self._sync(current)

        self.retry[uid] = self.clock.call_later(delay, again)

    def _sync(self, pod: Pod) -> None:
        if self.stopped:
            return
        uid = pod.metadata.uid
        if uid in self.sandboxes or uid in self.running:
            return
        if pod.spec.host_network:
            self._run_host_pod(pod)
            return
        if not self.network_ready:
            self.store.record_event(pod, "Warning", "NetworkNotReady", f"network is not ready: {NETWORK_NOT_READY}",
                                    "kubelet")
            self._set_waiting(pod, "ContainerCreating")
            self.waiting.add((pod.metadata.name, pod.metadata.namespace))
            self.retry[uid] = self.retry.get(uid) or self.clock.call_later(BACKOFF, lambda: self._retry_sync(pod))
            return
        self._create_sandbox(pod)

    def _retry_sync(self, pod: Pod) -> None:
        self.retry.pop(pod.metadata.uid, None)
        current = self.store.find("Pod", pod.metadata.name, pod.metadata.namespace)
        if current is not None and current.metadata.uid == pod.metadata.uid and \
                current.metadata.deletion_timestamp is None:
            self._sync(current)

    def _create_sandbox(self, pod: Pod) -> None:
        conf = self.cni_config()
        assert conf is not None
        _path, conflist = conf
        cid = hexid(self.clock.rng)
        name = self.sandbox_name(pod)
        if name in self.lab.namespaces:
            self._fail_sandbox(pod, cid, f"failed to create network namespace for sandbox \"{cid}\": netns {name} "
                                         "already exists")
            return
        sandbox_ns = self.lab.netns(name)
        try:
            self.cni.loopback(self.ns, sandbox_ns, cid)
            result = self.cni.add(self.ns, conflist, cid, sandbox_ns, "eth0", self._cni_args(pod, cid),
                                  self._capabilities(pod))
        except Exception as exc:  # noqa: BLE001 - a CNI error of any plugin
            if not is_cni_error(exc):
                raise
            try:
                self.cni.delete(self.ns, conflist, cid, sandbox_ns, "eth0", self._cni_args(pod, cid),
                                self._capabilities(pod))
            except Exception as exc2:  # noqa: BLE001
                if not is_cni_error(exc2):
                    raise
            delete_netns(self.lab, name)
            self._fail_sandbox(pod, cid, f"failed to setup network for sandbox \"{cid}\": {cni_text(exc, conflist)}")
            return
        self.sandboxes[pod.metadata.uid] = Sandbox(cid, name, conflist, result)
        ips = [ip["address"].partition("/")[0] for ip in result.get("ips", []) if "address" in ip]
        self._set_running(pod, ips, cid)

    def _fail_sandbox(self, pod: Pod, cid: str, why: str) -> None:
        self.store.record_event(pod, "Warning", "FailedCreatePodSandBox",
                                f"Failed to create pod sandbox: rpc error: code = Unknown desc = {why}", "kubelet")
        self._set_waiting(pod, "ContainerCreating")
        self._later(pod, BACKOFF)

    def _cni_args(self, pod: Pod, cid: str) -> str:
        m = pod.metadata
        return (f"IgnoreUnknown=1;K8S_POD_NAMESPACE={m.namespace};K8S_POD_NAME={m.name};"
                f"K8S_POD_INFRA_CONTAINER_ID={cid};K8S_POD_UID={m.uid}")

    @staticmethod
    def _capabilities(pod: Pod) -> dict[str, Any]:
        maps = [{"hostPort": p.host_port, "containerPort": p.container_port, "protocol": p.protocol.lower()}
                for c in pod.spec.containers for p in c.ports if p.host_port]
        return {"portMappings": maps} if maps else {}

    def _run_host_pod(self, pod: Pod) -> None:
        uid = pod.metadata.uid
        image = pod.spec.containers[0].image if pod.spec.containers else ""
        factory = self.programs.get(image)
        cid = hexid(self.clock.rng)
        if factory is None:
            self._set_running(pod, [self.node_ip], cid)
            self.running[uid] = _Idle()
            return
        prog = factory(self, pod)
        try:
            prog.start()
        except Exception as exc:  # noqa: BLE001 - the program crashed: CrashLoopBackOff
            n = self.restarts.get(uid, 0)
            self.restarts[uid] = n + 1
            self._set_crashed(pod, str(exc), n)
            self.store.record_event(pod, "Warning", "BackOff", "Back-off restarting failed container "
                                    f"{pod.spec.containers[0].name} in pod {pod.metadata.name}_"
                                    f"{pod.metadata.namespace}({uid})", "kubelet")
            self._later(pod, CRASH_BACKOFF[min(n, len(CRASH_BACKOFF) - 1)])
            return
        self.running[uid] = prog
        self._set_running(pod, [self.node_ip], cid)

    def _teardown(self, pod: Pod, *, delete_object: bool = True) -> None:
        uid = pod.metadata.uid
        timer = self.retry.pop(uid, None)
        if timer is not None:
            timer.cancel()
        prog = self.running.pop(uid, None)
        if prog is not None:
            prog.stop()
        sb = self.sandboxes.pop(uid, None)
        if sb is not None:
            sandbox_ns = self.lab.namespaces.get(sb.netns)
            try:
                self.cni.delete(self.ns, sb.conflist, sb.container_id, sandbox_ns, "eth0",
                                self._cni_args(pod, sb.container_id), self._capabilities(pod))
            except Exception as exc:  # noqa: BLE001
                if not is_cni_error(exc):
                    raise
                self.store.record_event(
                    pod, "Warning", "FailedKillPod",
                    f"error killing pod: failed to \"KillPodSandbox\" for \"{uid}\" with KillPodSandboxError: "
                    f"\"rpc error: code = Unknown desc = failed to destroy network for sandbox "
                    f"\\\"{sb.container_id}\\\": {cni_message(exc)}\"", "kubelet")
            delete_netns(self.lab, sb.netns)
        if delete_object:
            try:
                self.store.delete("Pod", pod.metadata.name, pod.metadata.namespace)
            except ApiError:
                pass

    # --- statuses ---------------------------------------------------------------------------------------
    def _conditions(self, pod: Pod, ready: bool, sandbox: bool) -> list[Condition]:
        now = self.clock.now
        old = {c.type: c for c in pod.status.conditions}

        def cond(t: str, ok: bool) -> Condition:
            st = "True" if ok else "False"
            c = old.get(t)
            if c is not None and c.status == st:
                return c
            return Condition(t, st, "" if ok else ("ContainersNotReady" if t in ("Ready", "ContainersReady") else ""),
                             "", now)

        return [cond("PodReadyToStartContainers", sandbox), cond("Initialized", True), cond("Ready", ready),
                cond("ContainersReady", ready), cond("PodScheduled", True)]

    def _statuses(self, pod: Pod, state: str, reason: str = "", cid: str = "", restarts: int = 0,
                  message: str = "") -> list[ContainerStatus]:
        now = self.clock.now
        out = []
        for c in pod.spec.containers:
            digest = _digest(c.image)
            out.append(ContainerStatus(c.name, _image_ref(c.image), f"{_image_repo(c.image)}@sha256:{digest}",
                                       f"containerd://{cid}" if cid else "",
                                       state == "running", restarts, state, reason,
                                       now if state == "running" else None, message))
        return out

    def _update_pod(self, pod: Pod, mutate: Callable[[Pod], None]) -> Pod | None:
        current = self.store.find("Pod", pod.metadata.name, pod.metadata.namespace)
        if current is None or current.metadata.uid != pod.metadata.uid:
            return None
        mutate(current)
        return self.store.update(current)

    def _set_waiting(self, pod: Pod, reason: str) -> None:
        def mutate(p: Pod) -> None:
            p.status.host_ip = self.node_ip
            if p.status.start_time is None:
                p.status.start_time = self.clock.now
            p.status.conditions = self._conditions(p, False, False)
            p.status.container_statuses = self._statuses(p, "waiting", reason)

        self._update_pod(pod, mutate)

    def _set_crashed(self, pod: Pod, message: str, restarts: int) -> None:
        def mutate(p: Pod) -> None:
            p.status.phase = "Running"
            p.status.host_ip = self.node_ip
            p.status.pod_ip = self.node_ip
            p.status.pod_ips = [self.node_ip]
            if p.status.start_time is None:
                p.status.start_time = self.clock.now
            p.status.conditions = self._conditions(p, False, True)
            p.status.container_statuses = self._statuses(p, "waiting", "CrashLoopBackOff", cid=hexid(self.clock.rng),
                                                         restarts=restarts, message=message)
            for cs in p.status.container_statuses:
                cs.last_finished = self.clock.now

        self._update_pod(pod, mutate)

    def _set_running(self, pod: Pod, ips: list[str], cid: str) -> None:
        restarts = self.restarts.get(pod.metadata.uid, 0)

        def mutate(p: Pod) -> None:
            p.status.phase = "Running"
            p.status.host_ip = self.node_ip
            p.status.pod_ip = ips[0] if ips else ""
            p.status.pod_ips = list(ips)
            if p.status.start_time is None:
                p.status.start_time = self.clock.now
            p.status.conditions = self._conditions(p, True, True)
            p.status.container_statuses = self._statuses(p, "running", cid=hexid(self.clock.rng), restarts=restarts)

        updated = self._update_pod(pod, mutate)
        if updated is None:
            return
        for c in pod.spec.containers:
            if restarts == 0:
                self.store.record_event(updated, "Normal", "Pulled",
                                        f"Container image \"{c.image}\" already present on machine", "kubelet")
            self.store.record_event(updated, "Normal", "Created", f"Created container {c.name}", "kubelet")
            self.store.record_event(updated, "Normal", "Started", f"Started container {c.name}", "kubelet")


class _Idle:
    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


def _image_repo(image: str) -> str:
    name = image.split("@")[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":")[0]
    if "/" not in name:
        name = f"docker.io/library/{name}"
    elif "." not in name.split("/")[0]:
        name = f"docker.io/{name}"
    return name


def _image_ref(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    tagged = image if ":" in last else f"{image}:latest"
    return _image_repo(tagged) + ":" + tagged.rsplit(":", 1)[1]


def _digest(image: str) -> str:
    import hashlib

    return hashlib.sha256(image.encode()).hexdigest()


def is_cni_error(exc: BaseException) -> bool:
    return type(exc).__name__ == "CniError" or exc.__class__.__module__.startswith("emu.cni")


def cni_message(exc: BaseException) -> str:
    msg = getattr(exc, "msg", None)
    details = getattr(exc, "details", "")
    text = str(msg) if msg is not None else str(exc)
    return f"{text}; {details}" if details else text


def cni_text(exc: BaseException, conflist: dict[str, Any]) -> str:
    """libcni's error as containerd reports it: `plugin type="flannel" failed (add): MSG`."""
    if getattr(exc, "context", ""):
        return str(exc)
    plugins = conflist.get("plugins") or [{}]
    return f'plugin type="{plugins[0].get("type", "")}" failed (add): {cni_message(exc)}'
