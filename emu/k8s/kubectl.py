"""kubectl's views of the emulated cluster, in kubectl's own formats.

* `get_nodes(cluster, wide=True)`: `kubectl get nodes [-o wide]`
* `get_pods(cluster, namespace="default", all_namespaces=False, wide=True)`: `kubectl get pods [-o wide] [-A]`
* `describe_pod(cluster, name, namespace)`: `kubectl describe pod NAME` (describe.go's describePod)
* `kubectl(cluster, "get pods -o wide")`: (rc, stdout, stderr) for a command line; also `-o json`,
  `-o jsonpath=...` (the subset tutorials use: `{.spec.podCIDR}`, `{.items[*].metadata.name}`),
  `get configmap`, `logs` (flanneld's log), `describe node`-less.

Tables go through Go's tabwriter with kubectl get's settings (minwidth 6, padding 3); describe through
describe's (minwidth 0, padding 2), flushed before the Events table as DescribeEvents does. Ages are
apimachinery's HumanDuration of the virtual clock.

`attach(lab, cluster)` makes `kubectl ...` a command in every namespace's shell of that lab.
"""

from __future__ import annotations

import json
import shlex
import time as _time
import weakref
from typing import TYPE_CHECKING, Any

from emu.k8s.store import ApiError, Node, Pod
from emu.k8s.tabwriter import TabWriter, tabulate
from emu.net.lab import EPOCH

if TYPE_CHECKING:
    from emu.k8s.cluster import Cluster
    from emu.net.lab import Lab
    from emu.net.namespace import Namespace

_CLUSTERS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def attach(lab: Lab, cluster: Cluster) -> None:
    """Registers `kubectl` in the shell of every namespace of `lab` (talking to `cluster`)."""
    from emu.net.shell import register

    _CLUSTERS[lab] = cluster
    register("kubectl", _shell_command)


def _shell_command(ns: Namespace, args: list[str]):  # noqa: ANN202 - emu.net.shell.Result
    from emu.net.shell import Result

    cluster = _CLUSTERS.get(ns.lab)
    if cluster is None:
        return Result(1, "", "The connection to the server localhost:8080 was refused - did you specify the right "
                             "host or port?\n")
    rc, out, err = kubectl(cluster, args)
    return Result(rc, out, err)


# --- formatting helpers ------------------------------------------------------------------------------

def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 60 * 2:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        sec = s % 60
        return f"{minutes}m" if sec == 0 else f"{minutes}m{sec}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if dy == 0 else f"{hours // 24 // 365}y{dy}d"
    return f"{hours // 24 // 365}y"


def _age(cluster: Cluster, t: float | None) -> str:
    if t is None:
        return "<unknown>"
    return human_duration(cluster.clock.now - t)


def _rfc1123z(t: float) -> str:
    return _time.strftime("%a, %d %b %Y %H:%M:%S +0000", _time.gmtime(EPOCH + t))


def _rfc3339(t: float) -> str:
    return _time.strftime("%Y-%m-%dT%H:%M:%SZ", _time.gmtime(EPOCH + t))


def pod_status_text(pod: Pod) -> str:
    """The STATUS column (printPod): phase, else a container's waiting reason; Terminating when deleting."""
    reason = pod.status.reason or pod.status.phase
    for cs in pod.status.container_statuses:
        if cs.state == "waiting" and cs.reason:
            reason = cs.reason
    if pod.metadata.deletion_timestamp is not None:
        reason = "Terminating"
    return reason


def _ready(pod: Pod) -> str:
    ready = sum(1 for cs in pod.status.container_statuses if cs.ready)
    return f"{ready}/{len(pod.spec.containers)}"


def _restarts(pod: Pod, cluster: Cluster) -> str:
    """RESTARTS: the count, and how long ago the last run ended (`3 (5s ago)`), as printPod does."""
    n = sum(cs.restart_count for cs in pod.status.container_statuses)
    last = max((cs.last_finished for cs in pod.status.container_statuses if cs.last_finished is not None),
               default=None)
    return f"{n} ({_age(cluster, last)} ago)" if n and last is not None else str(n)


# --- get ----------------------------------------------------------------------------------------------

def node_roles(node: Node) -> str:
    roles = sorted(k.split("/", 1)[1] for k in node.metadata.labels if k.startswith("node-role.kubernetes.io/"))
    roles += sorted(v for k, v in node.metadata.labels.items() if k == "kubernetes.io/role")
    return ",".join(roles) if roles else "<none>"


def get_nodes(cluster: Cluster, *, wide: bool = True, name: str | None = None) -> str:
    """`kubectl get nodes [-o wide]`."""
    nodes = [n for n in cluster.store.list("Node") if name is None or n.metadata.name == name]
    if not nodes:
        return ""
    head = ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    if wide:
        head += ["INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION", "CONTAINER-RUNTIME"]
    rows = [head]
    for n in nodes:
        status = "Ready" if n.ready() else "NotReady"
        if n.spec.unschedulable:
            status += ",SchedulingDisabled"
        row = [n.metadata.name, status, node_roles(n), _age(cluster, n.metadata.creation_timestamp),
               n.status.node_info.kubelet_version]
        if wide:
            ext = next((a.address for a in n.status.addresses if a.type == "ExternalIP"), "<none>")
            row += [n.internal_ip() or "<none>", ext, n.status.node_info.os_image, n.status.node_info.kernel_version,
                    n.status.node_info.container_runtime_version]
        rows.append(row)
    return tabulate(rows)


def get_pods(cluster: Cluster, namespace: str = "default", *, all_namespaces: bool = False, wide: bool = True,
             name: str | None = None) -> str:
    """`kubectl get pods [-o wide] [-A | -n NAMESPACE]`."""
    pods = cluster.store.list("Pod", None if all_namespaces else namespace)
    if name is not None:
        pods = [p for p in pods if p.metadata.name == name]
    if not pods:
        return ""
    head = (["NAMESPACE"] if all_namespaces else []) + ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    if wide:
        head += ["IP", "NODE", "NOMINATED NODE", "READINESS GATES"]
    rows = [head]
    for p in pods:
        row = ([p.metadata.namespace] if all_namespaces else []) + [
            p.metadata.name, _ready(p), pod_status_text(p), _restarts(p, cluster),
            _age(cluster, p.metadata.creation_timestamp)]
        if wide:
            row += [p.status.pod_ip or "<none>", p.spec.node_name or "<none>",
                    p.status.nominated_node_name or "<none>", "<none>"]
        rows.append(row)
    return tabulate(rows)


# --- describe -------------------------------------------------------------------------------------------

class _PrefixWriter:
    """describe.go's PrefixWriter: two spaces per level, over a TabWriter."""

    def __init__(self) -> None:
        self.tw = TabWriter(0, 2)

    def write(self, level: int, text: str) -> None:
        self.tw.write("  " * level + text)

    def line(self, text: str = "") -> None:
        self.tw.write(text + "\n")

    def flush(self) -> None:
        self.tw.flush()


def _labels(w: _PrefixWriter, title: str, labels: dict[str, str]) -> None:
    w.write(0, f"{title}:\t")
    if not labels:
        w.line("<none>")
        return
    for i, key in enumerate(sorted(labels)):
        if i:
            w.write(0, "\t")
        w.write(0, f"{key}={labels[key]}\n")


def _annotations(w: _PrefixWriter, title: str, annotations: dict[str, str]) -> None:
    w.write(0, f"{title}:\t")
    keys = sorted(k for k in annotations if k != "kubectl.kubernetes.io/last-applied-configuration")
    if not keys:
        w.line("<none>")
        return
    for i, key in enumerate(keys):
        if i:
            w.write(0, "\t")
        value = annotations[key].removesuffix("\n")
        if len(value) + len(key) + 2 > 140 or "\n" in value:
            w.write(0, f"{key}:\n")
            for s in value.split("\n"):
                w.write(0, f"\t  {s[:138] + '...' if len(s) > 138 else s}\n")
        else:
            w.write(0, f"{key}: {value}\n")


def _tolerations(w: _PrefixWriter, title: str, tolerations: list[Any]) -> None:
    w.write(0, f"{title}:\t")
    if not tolerations:
        w.line("<none>")
        return
    for i, t in enumerate(sorted(tolerations, key=lambda t: t.key)):
        if i:
            w.write(0, "\t")
        text = t.key
        if t.value:
            text += f"={t.value}"
        if t.effect:
            text += f":{t.effect}"
        if t.operator == "Exists" and not t.value:
            text += " op=Exists" if (t.key or t.effect) else "op=Exists"
        if t.toleration_seconds is not None:
            text += f" for {t.toleration_seconds}s"
        w.write(0, text + "\n")


def _containers(w: _PrefixWriter, label: str, containers: list[Any], statuses: list[Any]) -> None:
    by_name = {s.name: s for s in statuses}
    w.write(0, f"{label}:{'' if containers else ' <none>'}\n")
    for c in containers:
        st = by_name.get(c.name)
        w.write(1, f"{c.name}:\n")
        if st is not None:
            w.write(2, f"Container ID:\t{st.container_id}\n")
        w.write(2, f"Image:\t{c.image}\n")
        if st is not None:
            w.write(2, f"Image ID:\t{st.image_id}\n")
        ports = ", ".join(f"{p.container_port}/{p.protocol}" for p in c.ports)
        hports = ", ".join(f"{p.host_port}/{p.protocol}" for p in c.ports)
        w.write(2, f"Ports:\t{ports}\n" if "," in ports else f"Port:\t{ports or '<none>'}\n")
        w.write(2, f"Host Ports:\t{hports}\n" if "," in hports else f"Host Port:\t{hports or '<none>'}\n")
        if c.command:
            w.write(2, "Command:\n")
            for part in c.command:
                w.write(3, f"{part}\n")
        if c.args:
            w.write(2, "Args:\n")
            for part in c.args:
                w.write(3, f"{part}\n")
        if st is not None:
            if st.state == "running":
                w.write(2, "State:\tRunning\n")
                w.write(3, f"Started:\t{_rfc1123z(st.started_at or 0.0)}\n")
            else:
                w.write(2, "State:\tWaiting\n")
                if st.reason:
                    w.write(3, f"Reason:\t{st.reason}\n")
            if st.last_finished is not None:
                w.write(2, "Last State:\tTerminated\n")
                w.write(3, "Reason:\tError\n")
                w.write(3, "Exit Code:\t1\n")
                w.write(3, f"Started:\t{_rfc1123z(st.last_finished)}\n")
                w.write(3, f"Finished:\t{_rfc1123z(st.last_finished)}\n")
            w.write(2, f"Ready:\t{'True' if st.ready else 'False'}\n")
            w.write(2, f"Restart Count:\t{st.restart_count}\n")
        w.write(2, "Environment:\t<none>\n")
        w.write(2, "Mounts:\t<none>\n")


def describe_pod(cluster: Cluster, name: str, namespace: str = "default") -> str:
    """`kubectl describe pod NAME [-n NAMESPACE]`."""
    pod = cluster.store.get("Pod", name, namespace)
    w = _PrefixWriter()
    m, spec, st = pod.metadata, pod.spec, pod.status
    w.write(0, f"Name:\t{m.name}\n")
    w.write(0, f"Namespace:\t{m.namespace}\n")
    w.write(0, f"Priority:\t{spec.priority}\n")
    if spec.priority_class_name:
        w.write(0, f"Priority Class Name:\t{spec.priority_class_name}\n")
    if spec.service_account_name:
        w.write(0, f"Service Account:\t{spec.service_account_name}\n")
    w.write(0, "Node:\t<none>\n" if not spec.node_name else f"Node:\t{spec.node_name}/{st.host_ip}\n")
    if st.start_time is not None:
        w.write(0, f"Start Time:\t{_rfc1123z(st.start_time)}\n")
    _labels(w, "Labels", m.labels)
    _annotations(w, "Annotations", m.annotations)
    if m.deletion_timestamp is not None:
        w.write(0, f"Status:\tTerminating (lasts {_age(cluster, m.deletion_timestamp)})\n")
        w.write(0, "Termination Grace Period:\t30s\n")
    else:
        w.write(0, f"Status:\t{st.phase}\n")
    if st.reason:
        w.write(0, f"Reason:\t{st.reason}\n")
    if st.message:
        w.write(0, f"Message:\t{st.message}\n")
    w.write(0, f"IP:\t{st.pod_ip}\n")
    if not st.pod_ips:
        w.write(0, "IPs:\t<none>\n")
    else:
        w.write(0, "IPs:\n")
        for ip in st.pod_ips:
            w.write(1, f"IP:\t{ip}\n")
    if m.owner:
        w.write(0, f"Controlled By:\t{m.owner}\n")
    if st.nominated_node_name:
        w.write(0, f"NominatedNodeName:\t{st.nominated_node_name}\n")
    if spec.init_containers:
        _containers(w, "Init Containers", spec.init_containers, st.init_container_statuses)
    _containers(w, "Containers", spec.containers, st.container_statuses)
    if st.conditions:
        w.write(0, "Conditions:\n  Type\tStatus\n")
        for c in st.conditions:
            w.write(1, f"{c.type} \t{c.status} \n")
    w.write(0, "Volumes:\t<none>\n")
    w.write(0, "QoS Class:\tBestEffort\n")
    _labels(w, "Node-Selectors", spec.node_selector)
    _tolerations(w, "Tolerations", spec.tolerations)
    events = cluster.store.events_for(pod)
    if not events:
        w.write(0, "Events:\t<none>\n")
    else:
        w.flush()
        w.write(0, "Events:\n  Type\tReason\tAge\tFrom\tMessage\n")
        w.write(1, "----\t------\t----\t----\t-------\n")
        for e in events:
            if e.count > 1:
                age = f"{_age(cluster, e.last_timestamp)} (x{e.count} over {_age(cluster, e.first_timestamp)})"
            else:
                age = _age(cluster, e.first_timestamp)
            w.write(1, f"{e.type}\t{e.reason}\t{age}\t{e.source}\t{e.message.strip()}\n")
    return w.tw.getvalue()


# --- JSON and jsonpath ------------------------------------------------------------------------------------

def _meta_json(m: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if m.annotations:
        out["annotations"] = dict(m.annotations)
    out["creationTimestamp"] = _rfc3339(m.creation_timestamp)
    if m.deletion_timestamp is not None:
        out["deletionTimestamp"] = _rfc3339(m.deletion_timestamp)
    if m.labels:
        out["labels"] = dict(m.labels)
    out["name"] = m.name
    if m.namespace:
        out["namespace"] = m.namespace
    if m.owner:
        kind, _, oname = m.owner.partition("/")
        out["ownerReferences"] = [{"apiVersion": "apps/v1", "blockOwnerDeletion": True, "controller": True,
                                   "kind": kind, "name": oname}]
    out["resourceVersion"] = str(m.resource_version)
    out["uid"] = m.uid
    return out


def to_json(obj: Any) -> dict[str, Any]:
    """An object as the API server returns it (the fields the emulator models)."""
    if obj.kind == "Node":
        spec: dict[str, Any] = {}
        if obj.spec.pod_cidr:
            spec["podCIDR"] = obj.spec.pod_cidr
            spec["podCIDRs"] = list(obj.spec.pod_cidrs)
        if obj.spec.taints:
            spec["taints"] = [{"effect": t.effect, "key": t.key, **({"value": t.value} if t.value else {})}
                              for t in obj.spec.taints]
        if obj.spec.unschedulable:
            spec["unschedulable"] = True
        ni = obj.status.node_info
        return {"apiVersion": "v1", "kind": "Node", "metadata": _meta_json(obj.metadata), "spec": spec,
                "status": {"addresses": [{"address": a.address, "type": a.type} for a in obj.status.addresses],
                           "conditions": [{"lastTransitionTime": _rfc3339(c.last_transition), "message": c.message,
                                           "reason": c.reason, "status": c.status, "type": c.type}
                                          for c in obj.status.conditions],
                           "nodeInfo": {"architecture": "amd64",
                                        "containerRuntimeVersion": ni.container_runtime_version,
                                        "kernelVersion": ni.kernel_version, "kubeProxyVersion": ni.kubelet_version,
                                        "kubeletVersion": ni.kubelet_version, "operatingSystem": "linux",
                                        "osImage": ni.os_image}}}
    if obj.kind == "Pod":
        s, st = obj.spec, obj.status

        def container(c: Any) -> dict[str, Any]:
            out: dict[str, Any] = {}
            if c.args:
                out["args"] = list(c.args)
            if c.command:
                out["command"] = list(c.command)
            out["image"] = c.image
            out["name"] = c.name
            if c.ports:
                out["ports"] = [{"containerPort": p.container_port, **({"hostPort": p.host_port} if p.host_port
                                                                        else {}), "protocol": p.protocol}
                                for p in c.ports]
            return out

        spec = {"containers": [container(c) for c in s.containers]}
        if s.host_network:
            spec["hostNetwork"] = True
        if s.init_containers:
            spec["initContainers"] = [container(c) for c in s.init_containers]
        if s.node_name:
            spec["nodeName"] = s.node_name
        spec["priority"] = s.priority
        if s.priority_class_name:
            spec["priorityClassName"] = s.priority_class_name
        spec["serviceAccountName"] = s.service_account_name
        spec["tolerations"] = [{k: v for k, v in (("effect", t.effect), ("key", t.key), ("operator", t.operator),
                                                   ("tolerationSeconds", t.toleration_seconds), ("value", t.value))
                                if v not in ("", None)} for t in s.tolerations]
        status: dict[str, Any] = {
            "conditions": [{"lastTransitionTime": _rfc3339(c.last_transition), "status": c.status, "type": c.type}
                           for c in st.conditions]}
        if st.container_statuses:
            status["containerStatuses"] = [
                {"containerID": cs.container_id, "image": cs.image, "imageID": cs.image_id, "name": cs.name,
                 "ready": cs.ready, "restartCount": cs.restart_count,
                 "state": ({"running": {"startedAt": _rfc3339(cs.started_at or 0.0)}} if cs.state == "running"
                           else {"waiting": {"reason": cs.reason}})} for cs in st.container_statuses]
        if st.host_ip:
            status["hostIP"] = st.host_ip
        status["phase"] = st.phase
        if st.pod_ip:
            status["podIP"] = st.pod_ip
            status["podIPs"] = [{"ip": ip} for ip in st.pod_ips]
        if st.start_time is not None:
            status["startTime"] = _rfc3339(st.start_time)
        return {"apiVersion": "v1", "kind": "Pod", "metadata": _meta_json(obj.metadata), "spec": spec,
                "status": status}
    if obj.kind == "ConfigMap":
        return {"apiVersion": "v1", "data": dict(obj.data), "kind": "ConfigMap", "metadata": _meta_json(obj.metadata)}
    raise ValueError(f"no JSON form for {obj.kind}")


def _jsonpath_values(data: Any, path: str) -> list[Any]:
    """Evaluates `.a.b[*].c` / `.a[0]` / `.metadata.annotations.flannel\\.alpha\\.coreos\\.com/public-ip`."""
    parts: list[str] = []
    buf = ""
    i = 0
    path = path.lstrip(".")
    while i < len(path):
        ch = path[i]
        if ch == "\\" and i + 1 < len(path):
            buf += path[i + 1]
            i += 2
            continue
        if ch == ".":
            parts.append(buf)
            buf = ""
        elif ch == "[":
            if buf:
                parts.append(buf)
            end = path.index("]", i)
            parts.append(path[i:end + 1])
            buf = ""
            i = end + 1
            if i < len(path) and path[i] == ".":
                i += 1
            continue
        else:
            buf += ch
        i += 1
    if buf:
        parts.append(buf)
    values = [data]
    for part in parts:
        nxt: list[Any] = []
        for v in values:
            if part == "[*]":
                if isinstance(v, list):
                    nxt.extend(v)
                elif isinstance(v, dict):
                    nxt.extend(v.values())
            elif part.startswith("[") and part[1:-1].lstrip("-").isdigit():
                if isinstance(v, list) and -len(v) <= int(part[1:-1]) < len(v):
                    nxt.append(v[int(part[1:-1])])
            elif isinstance(v, dict) and part in v:
                nxt.append(v[part])
        values = nxt
    return values


def jsonpath(data: Any, template: str) -> str:
    """kubectl's -o jsonpath for templates made of literal text and `{.field.path}` expressions."""
    out = []
    i = 0
    while i < len(template):
        if template[i] == "{":
            end = template.index("}", i)
            expr = template[i + 1:end].strip()
            if expr.startswith("\"") and expr.endswith("\""):
                out.append(json.loads(expr))
            else:
                vals = _jsonpath_values(data, expr)
                out.append(" ".join(v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
                                    for v in vals))
            i = end + 1
        else:
            out.append(template[i])
            i += 1
    return "".join(out)


# --- the command line ----------------------------------------------------------------------------------------

RESOURCES = {"pod": "Pod", "pods": "Pod", "po": "Pod", "node": "Node", "nodes": "Node", "no": "Node",
             "configmap": "ConfigMap", "configmaps": "ConfigMap", "cm": "ConfigMap"}


def kubectl(cluster: Cluster, command: str | list[str]) -> tuple[int, str, str]:
    """Runs a kubectl command line against the cluster: (rc, stdout, stderr)."""
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    if argv and argv[0] == "kubectl":
        argv = argv[1:]
    namespace, all_ns, output = "default", False, ""
    rest: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-n", "--namespace") and i + 1 < len(argv):
            namespace = argv[i + 1]
            i += 2
            continue
        if a.startswith("--namespace="):
            namespace = a.split("=", 1)[1]
        elif a in ("-A", "--all-namespaces"):
            all_ns = True
        elif a in ("-o", "--output") and i + 1 < len(argv):
            output = argv[i + 1]
            i += 2
            continue
        elif a.startswith("-o") and len(a) > 2:
            output = a[2:].lstrip("=")
        elif a.startswith("--output="):
            output = a.split("=", 1)[1]
        else:
            rest.append(a)
        i += 1
    if not rest:
        return 1, "", "error: You must specify the type of resource to get.\n"
    verb, args = rest[0], rest[1:]
    try:
        if verb == "get":
            return _get(cluster, args, namespace, all_ns, output)
        if verb == "describe":
            if len(args) < 2 or RESOURCES.get(args[0]) != "Pod":
                return 1, "", "error: the emulated kubectl describes pods: kubectl describe pod NAME\n"
            return 0, describe_pod(cluster, args[1], namespace), ""
        if verb == "logs":
            if not args:
                return 1, "", "error: expected 'logs [-f] [-p] (POD | TYPE/NAME) [-c CONTAINER]'.\n"
            return _logs(cluster, args[0].removeprefix("pod/"), namespace)
    except ApiError as exc:
        return 1, "", f"Error from server ({exc.reason}): {exc.message}\n"
    return 1, "", f'error: unknown command "{verb}" for "kubectl"\n'


def _get(cluster: Cluster, args: list[str], namespace: str, all_ns: bool, output: str) -> tuple[int, str, str]:
    if not args:
        return 1, "", "error: You must specify the type of resource to get.\n"
    kind_text, _, inline_name = args[0].partition("/")
    kind = RESOURCES.get(kind_text.lower())
    if kind is None:
        return 1, "", f'error: the server doesn\'t have a resource type "{kind_text}"\n'
    name = inline_name or (args[1] if len(args) > 1 else None)
    ns = None if all_ns else namespace
    if kind == "Node":
        ns = None
    if name is not None:
        objs = [cluster.store.get(kind, name, namespace if kind != "Node" else "")]
    else:
        objs = cluster.store.list(kind, ns)
    if output.startswith("jsonpath"):
        template = output.split("=", 1)[1] if "=" in output else ""
        data = to_json(objs[0]) if name is not None else {"apiVersion": "v1", "items": [to_json(o) for o in objs],
                                                            "kind": "List", "metadata": {"resourceVersion": ""}}
        return 0, jsonpath(data, template), ""
    if output == "json":
        data = to_json(objs[0]) if name is not None else {"apiVersion": "v1", "items": [to_json(o) for o in objs],
                                                            "kind": "List", "metadata": {"resourceVersion": ""}}
        return 0, json.dumps(data, indent=4) + "\n", ""
    if output not in ("", "wide"):
        return 1, "", f'error: unable to match a printer suitable for the output format "{output}", allowed formats '\
                      "are: json,jsonpath,wide\n"
    wide = output == "wide"
    if not objs:
        where = "" if all_ns or kind == "Node" else f" in {namespace} namespace"
        return 0, "", f"No resources found{where}.\n"
    if kind == "Node":
        return 0, get_nodes(cluster, wide=wide, name=name), ""
    if kind == "Pod":
        return 0, get_pods(cluster, namespace, all_namespaces=all_ns, wide=wide, name=name), ""
    rows = ([["NAMESPACE"]] if all_ns else [[]])
    rows[0] += ["NAME", "DATA", "AGE"]
    for o in objs:
        rows.append(([o.metadata.namespace] if all_ns else []) + [o.metadata.name, str(len(o.data)),
                                                                  _age(cluster, o.metadata.creation_timestamp)])
    return 0, tabulate(rows), ""


def _logs(cluster: Cluster, pod_name: str, namespace: str) -> tuple[int, str, str]:
    pod = cluster.store.get("Pod", pod_name, namespace)
    node = cluster.nodes.get(pod.spec.node_name)
    if node is not None and node.flannel is not None and pod.metadata.owner == "DaemonSet/kube-flannel-ds":
        return 0, "".join(line + "\n" for line in node.flannel.logs), ""
    return 0, "", ""
