"""The Kubernetes side of the emulator: the object store and etcd, the controllers, the kubelet's pod
lifecycle (CNI ADD and DEL through the flannel plugin), node join and leave, kubectl's views, and a
100-node, 3,000-pod cluster."""

from __future__ import annotations

import json
import time

import pytest

from emu.clock import Clock
from emu.k8s.cluster import Cluster, ClusterError
from emu.k8s.controllers import NodeIpamController
from emu.k8s.kubectl import human_duration, jsonpath, kubectl
from emu.k8s.store import ApiError, ConfigMap, Etcd, Node, NodeSpec, ObjectMeta, Pod, PodSpec, Store
from emu.k8s.tabwriter import TabWriter, tabulate
from emu.net import Lab

# --- the object store ---------------------------------------------------------------------------------


def test_store_create_get_update_delete_and_api_messages() -> None:
    store = Store(Clock())
    store.create(ConfigMap(ObjectMeta(name="cfg", namespace="kube-flannel"), {"a": "1"}))
    with pytest.raises(ApiError) as exc:
        store.create(ConfigMap(ObjectMeta(name="cfg", namespace="kube-flannel")))
    assert (exc.value.reason, exc.value.message) == ("AlreadyExists", 'configmaps "cfg" already exists')
    with pytest.raises(ApiError) as exc:
        store.get("Pod", "web")
    assert exc.value.message == 'pods "web" not found'
    cm = store.get("ConfigMap", "cfg", "kube-flannel")
    cm.data["a"] = "2"
    assert store.get("ConfigMap", "cfg", "kube-flannel").data == {"a": "1"}, "get must hand out a copy"
    rv = cm.metadata.resource_version
    store.update(cm)
    got = store.get("ConfigMap", "cfg", "kube-flannel")
    assert got.data == {"a": "2"} and got.metadata.resource_version > rv and got.metadata.uid == cm.metadata.uid
    store.delete("ConfigMap", "cfg", "kube-flannel")
    assert store.find("ConfigMap", "cfg", "kube-flannel") is None
    with pytest.raises(ApiError):
        store.delete("ConfigMap", "cfg", "kube-flannel")


def test_store_watches_run_on_the_virtual_clock_in_order() -> None:
    clock = Clock()
    store = Store(clock, delay=0.5)
    store.create(Node(ObjectMeta(name="n0")))
    seen: list[tuple] = []
    store.watch("Node", on_add=lambda n: seen.append(("add", n.metadata.name, clock.now)),
                on_update=lambda o, n: seen.append(("update", n.spec.pod_cidr, clock.now)),
                on_delete=lambda n: seen.append(("delete", n.metadata.name, clock.now)))
    assert seen == [], "nothing is delivered before the clock runs"
    store.create(Node(ObjectMeta(name="n1")))
    node = store.get("Node", "n1")
    node.spec.pod_cidr = "10.244.1.0/24"
    store.update(node)
    store.delete("Node", "n0")
    clock.run_for(1)
    assert seen == [("add", "n0", 0.5), ("add", "n1", 0.5), ("update", "10.244.1.0/24", 0.5), ("delete", "n0", 0.5)]


def test_keyed_pod_watch_sees_binding_as_add_and_unbinding_as_delete() -> None:
    clock = Clock()
    store = Store(clock)
    got: list[str] = []
    store.watch("Pod", key=("spec.nodeName", "node1"), on_add=lambda p: got.append(f"+{p.metadata.name}"),
                on_update=lambda o, p: got.append(f"~{p.metadata.name}"),
                on_delete=lambda p: got.append(f"-{p.metadata.name}"))
    store.create(Pod(ObjectMeta(name="a"), PodSpec()))
    store.create(Pod(ObjectMeta(name="b"), PodSpec(node_name="node2")))
    pod = store.get("Pod", "a")
    pod.spec.node_name = "node1"
    store.update(pod)
    pod.status.phase = "Running"
    store.update(pod)
    store.delete("Pod", "a")
    clock.run_for(1)
    assert got == ["+a", "~a", "-a"]
    with pytest.raises(ValueError):
        store.watch("Pod", key=("spec.hostname", "x"))


def test_events_aggregate_like_the_event_recorder() -> None:
    clock = Clock()
    store = Store(clock)
    pod = store.create(Pod(ObjectMeta(name="a")))
    store.record_event(pod, "Warning", "BackOff", "Back-off", "kubelet")
    clock.run_for(10)
    store.record_event(pod, "Warning", "BackOff", "Back-off", "kubelet")
    store.record_event(pod, "Normal", "Pulled", "image present", "kubelet")
    evs = store.events_for(pod)
    assert [(e.reason, e.count, e.first_timestamp, e.last_timestamp) for e in evs] == [
        ("BackOff", 2, 0.0, 10.0), ("Pulled", 1, 10.0, 10.0)]


def test_etcd_revisions_ttl_and_prefix_watch() -> None:
    clock = Clock()
    etcd = Etcd(clock)
    seen: list[tuple] = []
    etcd.watch("/coreos.com/network/subnets/", lambda t, k, kv, prev: seen.append((t, k, kv and kv.value,
                                                                                    prev and prev.value)))
    kv = etcd.put("/coreos.com/network/subnets/10.244.1.0-24", "a", ttl=30)
    assert etcd.create("/coreos.com/network/subnets/10.244.1.0-24", "b") is None
    etcd.put("/coreos.com/network/config", "{}")
    assert kv.create_revision == kv.mod_revision and kv.expires == 30
    clock.run_for(29)
    etcd.put("/coreos.com/network/subnets/10.244.1.0-24", "a2", ttl=30)  # renewed: expires at 59 now
    clock.run_for(20)
    assert etcd.get("/coreos.com/network/subnets/10.244.1.0-24").value == "a2"
    clock.run_for(20)
    assert etcd.get("/coreos.com/network/subnets/10.244.1.0-24") is None
    assert [s[0] for s in seen] == ["PUT", "PUT", "DELETE"] and seen[-1][3] == "a2"
    assert [kv.key for kv in etcd.range("/coreos.com/")] == ["/coreos.com/network/config"]


# --- kube-controller-manager --------------------------------------------------------------------------


def test_podcidr_allocator_goes_in_order_rotates_and_runs_out() -> None:
    clock = Clock()
    store = Store(clock)
    ipam = NodeIpamController(store, "10.244.0.0/22", 24)
    for i in range(3):
        store.create(Node(ObjectMeta(name=f"n{i}")))
    clock.run_for(1)
    assert [store.get("Node", f"n{i}").spec.pod_cidr for i in range(3)] == [
        "10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"]
    store.delete("Node", "n0")
    store.create(Node(ObjectMeta(name="n3")))
    store.create(Node(ObjectMeta(name="n4")))
    store.create(Node(ObjectMeta(name="n5")))
    clock.run_for(1)
    # cidrset's cursor moves on: 10.244.3.0 first, then the released 10.244.0.0, then nothing is left
    assert [store.get("Node", n).spec.pod_cidr for n in ("n3", "n4", "n5")] == ["10.244.3.0/24", "10.244.0.0/24", ""]
    assert [e.reason for e in store.events_for(store.get("Node", "n5"))] == ["CIDRNotAvailable"]
    assert ipam.used == {0, 1, 2, 3}
    store.create(Node(ObjectMeta(name="n6"), NodeSpec(pod_cidr="10.244.9.0/24")))  # given by hand: left alone
    clock.run_for(1)
    assert store.get("Node", "n6").spec.pod_cidr == "10.244.9.0/24"


# --- tabwriter and kubectl formats -------------------------------------------------------------------------


def test_tabwriter_is_gos() -> None:
    # kubectl get: minwidth 6, padding 3; the last cell of a line is in no column
    assert tabulate([["NAME", "READY", "AGE"], ["nginx", "1/1", "10s"]]) == (
        "NAME    READY   AGE\n"
        "nginx   1/1     10s\n")
    # describe: minwidth 0, padding 2; a line with no tab ends every column block
    w = TabWriter(0, 2)
    w.write("Name:\tweb\nService Account:\tdefault\nIPs:\n  IP:\t10.0.0.1\nControlled By:\tx\n")
    assert w.getvalue() == ("Name:             web\nService Account:  default\nIPs:\n  IP:           10.0.0.1\n"
                            "Controlled By:  x\n")
    w = TabWriter(0, 2)
    w.write("a:\t1\n")
    w.flush()
    w.write("bbbbbb:\t2\n")
    assert w.getvalue() == "a:  1\nbbbbbb:  2\n", "flush ends the block"


@pytest.mark.parametrize(("seconds", "text"), [
    (-5, "<invalid>"), (-1, "0s"), (0, "0s"), (119, "119s"), (120, "2m"), (125, "2m5s"), (600, "10m"),
    (10799, "179m"), (3 * 3600, "3h"), (3 * 3600 + 60 * 5, "3h5m"), (8 * 3600, "8h"), (47 * 3600, "47h"),
    (48 * 3600, "2d"), (50 * 3600, "2d2h"), (8 * 86400, "8d"), (730 * 86400, "2y"), (800 * 86400, "2y70d"),
    (3000 * 86400, "8y")])
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


@pytest.fixture(scope="module")
def small_cluster() -> Cluster:
    lab = Lab(seed=7)
    c = Cluster(lab, nodes=2)
    c.run(300)
    c.create_pod("web-0", node="node1", wait=True, labels={"app": "web"}, ports=[80])
    c.create_pod("web-1", wait=True, labels={"app": "web"})
    c.run(65)
    return c


def test_kubectl_get_nodes(small_cluster: Cluster) -> None:
    assert small_cluster.kubectl("get nodes -o wide") == (
        "NAME    STATUS   ROLES    AGE    VERSION   INTERNAL-IP   EXTERNAL-IP   OS-IMAGE             KERNEL-VERSION"
        "      CONTAINER-RUNTIME\n"
        "node1   Ready    <none>   6m5s   v1.29.0   192.168.1.1   <none>        Ubuntu 22.04.3 LTS   5.15.0-91-generic"
        "   containerd://1.7.2\n"
        "node2   Ready    <none>   6m5s   v1.29.0   192.168.1.2   <none>        Ubuntu 22.04.3 LTS   5.15.0-91-generic"
        "   containerd://1.7.2\n")
    assert small_cluster.kubectl("get nodes") == (
        "NAME    STATUS   ROLES    AGE    VERSION\n"
        "node1   Ready    <none>   6m5s   v1.29.0\n"
        "node2   Ready    <none>   6m5s   v1.29.0\n")
    assert small_cluster.kubectl("get node node2") == (
        "NAME    STATUS   ROLES    AGE    VERSION\n"
        "node2   Ready    <none>   6m5s   v1.29.0\n")


def test_kubectl_get_pods(small_cluster: Cluster) -> None:
    assert small_cluster.kubectl("get pods -o wide") == (
        "NAME    READY   STATUS    RESTARTS   AGE   IP           NODE    NOMINATED NODE   READINESS GATES\n"
        "web-0   1/1     Running   0          65s   10.244.0.2   node1   <none>           <none>\n"
        "web-1   1/1     Running   0          65s   10.244.1.2   node2   <none>           <none>\n")
    assert small_cluster.kubectl("get pods -A -o wide") == (
        "NAMESPACE      NAME                    READY   STATUS    RESTARTS   AGE    IP            NODE    "
        "NOMINATED NODE   READINESS GATES\n"
        "default        web-0                   1/1     Running   0          65s    10.244.0.2    node1   "
        "<none>           <none>\n"
        "default        web-1                   1/1     Running   0          65s    10.244.1.2    node2   "
        "<none>           <none>\n"
        "kube-flannel   kube-flannel-ds-cd9wf   1/1     Running   0          6m5s   192.168.1.1   node1   "
        "<none>           <none>\n"
        "kube-flannel   kube-flannel-ds-vjcdr   1/1     Running   0          6m5s   192.168.1.2   node2   "
        "<none>           <none>\n")
    assert small_cluster.kubectl("get pods") == (
        "NAME    READY   STATUS    RESTARTS   AGE\n"
        "web-0   1/1     Running   0          65s\n"
        "web-1   1/1     Running   0          65s\n")
    assert kubectl(small_cluster, "get pods -n kube-system") == (0, "", "No resources found in kube-system namespace.\n")
    assert kubectl(small_cluster, "get pod nope") == (1, "", 'Error from server (NotFound): pods "nope" not found\n')


def test_kubectl_describe_pod(small_cluster: Cluster) -> None:
    text = small_cluster.kubectl("describe pod web-1")
    cid = small_cluster.pod("web-1").status.container_statuses[0].container_id
    sp = " "  # kubectl prints the condition rows with a trailing space
    assert text == f"""Name:             web-1
Namespace:        default
Priority:         0
Service Account:  default
Node:             node2/192.168.1.2
Start Time:       Sat, 13 Jan 2024 12:05:00 +0000
Labels:           app=web
Annotations:      <none>
Status:           Running
IP:               10.244.1.2
IPs:
  IP:  10.244.1.2
Containers:
  web-1:
    Container ID:   {cid}
    Image:          docker.io/library/nginx:1.25
    Image ID:       docker.io/library/nginx@sha256:b07c1fa29c8dc936d6db6891b04d7647d88ecb270969a682be1b6e033134f8b3
    Port:           <none>
    Host Port:      <none>
    State:          Running
      Started:      Sat, 13 Jan 2024 12:05:00 +0000
    Ready:          True
    Restart Count:  0
    Environment:    <none>
    Mounts:         <none>
Conditions:
  Type                        Status
  PodReadyToStartContainers   True{sp}
  Initialized                 True{sp}
  Ready                       True{sp}
  ContainersReady             True{sp}
  PodScheduled                True{sp}
Volumes:                      <none>
QoS Class:                    BestEffort
Node-Selectors:               <none>
Tolerations:                  node.kubernetes.io/not-ready:NoExecute op=Exists for 300s
                              node.kubernetes.io/unreachable:NoExecute op=Exists for 300s
Events:
  Type    Reason     Age   From               Message
  ----    ------     ----  ----               -------
  Normal  Scheduled  65s   default-scheduler  Successfully assigned default/web-1 to node2
  Normal  Pulled     65s   kubelet            Container image "docker.io/library/nginx:1.25" already present on machine
  Normal  Created    65s   kubelet            Created container web-1
  Normal  Started    65s   kubelet            Started container web-1
"""
    assert cid.startswith("containerd://") and len(cid) == len("containerd://") + 64
    assert "    Port:           80/TCP\n" in small_cluster.kubectl("describe pod web-0")


def test_kubectl_json_jsonpath_and_the_shell_command(small_cluster: Cluster) -> None:
    c = small_cluster
    assert c.kubectl("get node node2 -o jsonpath={.spec.podCIDR}") == "10.244.1.0/24"
    assert c.kubectl("get nodes -o 'jsonpath={.items[*].spec.podCIDR}'") == "10.244.0.0/24 10.244.1.0/24"
    ip = c.kubectl(r"get node node1 -o 'jsonpath={.metadata.annotations.flannel\.alpha\.coreos\.com/public-ip}'")
    assert ip == "192.168.1.1"
    doc = json.loads(c.kubectl("get pod web-0 -o json"))
    assert doc["status"]["podIP"] == "10.244.0.2" and doc["spec"]["nodeName"] == "node1"
    assert jsonpath({"a": [{"b": 1}, {"b": 2}]}, "x={.a[1].b}") == "x=2"
    res = c.node_ns("node1").run("kubectl get pods -o wide")
    assert res.rc == 0 and res.stdout == c.kubectl("get pods -o wide")
    cm = json.loads(c.kubectl("get cm kube-flannel-cfg -n kube-flannel -o json"))
    assert json.loads(cm["data"]["net-conf.json"])["Backend"] == {"Type": "vxlan"}
    flannel_pod = [p for p in c.pods("kube-flannel") if p.spec.node_name == "node1"][0].metadata.name
    logs = c.kubectl(f"logs -n kube-flannel {flannel_pod}")
    assert "Using interface with name eth0 and address 192.168.1.1" in logs
    assert "adding subnet: 10.244.1.0/24 PublicIP: 192.168.1.2" in logs


# --- the pod lifecycle ---------------------------------------------------------------------------------------


def test_pod_add_and_delete_through_cni(make_lab) -> None:
    lab = make_lab(seed=3)
    c = Cluster(lab, nodes=2)
    pod = c.create_pod("a", node="node1", wait=True)
    node = c.node_ns("node1")
    sb = c.nodes["node1"].kubelet.sandboxes[pod.metadata.uid]
    assert pod.status.pod_ip == "10.244.0.2" and pod.status.host_ip == "192.168.1.1"
    assert sb.netns == "a" and "a" in lab.namespaces
    assert node.files["/var/lib/cni/networks/cbr0/10.244.0.2"] == f"{sb.container_id}\r\neth0"
    saved = node.files[f"/var/lib/cni/flannel/{sb.container_id}"]
    host_veths = [lk.ifname for lk in node.sorted_links() if lk.ifname.startswith("veth")]
    assert len(host_veths) == 1
    assert c.pod_ns("a").run("ip route").stdout == (
        "default via 10.244.0.1 dev eth0 \n"
        "10.244.0.0/24 dev eth0 proto kernel scope link src 10.244.0.2 \n"
        "10.244.0.0/16 via 10.244.0.1 dev eth0 \n")
    assert " mtu 1450 " in c.pod_ns("a").run("ip link show eth0").stdout
    assert json.loads(saved)["ipam"]["ranges"] == [[{"subnet": "10.244.0.0/24"}]]

    c.delete_pod("a")
    assert c.store.find("Pod", "a") is None and "a" not in lab.namespaces
    assert "/var/lib/cni/networks/cbr0/10.244.0.2" not in node.files
    assert f"/var/lib/cni/flannel/{sb.container_id}" not in node.files
    assert not [lk for lk in node.sorted_links() if lk.ifname.startswith("veth")]
    assert "cni0" in node.links, "the bridge stays, as with the real bridge plugin"
    again = c.create_pod("a", node="node1", wait=True)
    assert again.status.pod_ip == "10.244.0.3", "host-local goes on after the last reserved address"
    with pytest.raises(ClusterError, match='pods "nope" not found'):
        c.delete_pod("nope")


def test_scheduler_spreads_pods_and_waits_for_ready_nodes() -> None:
    lab = Lab(seed=5)
    c = Cluster(lab, nodes=3)
    for i in range(9):
        c.create_pod(f"p{i}")
    c.settle()
    per_node: dict[str, int] = {}
    for p in c.pods():
        per_node[p.spec.node_name] = per_node.get(p.spec.node_name, 0) + 1
        assert p.status.phase == "Running" and p.status.pod_ip
    assert per_node == {"node1": 3, "node2": 3, "node3": 3}


def test_pod_before_any_node_is_pending_then_scheduled() -> None:
    lab = Lab(seed=5)
    c = Cluster(lab, nodes=0)
    c.create_pod("early")
    c.settle()
    assert c.kubectl("get pods") == ("NAME    READY   STATUS    RESTARTS   AGE\n"
                                     "early   0/1     Pending   0          0s\n")
    assert [e.reason for e in c.store.events_for(c.pod("early"))] == ["FailedScheduling"]
    c.add_node()
    assert c.pod("early").spec.node_name == "node1" and c.pod("early").status.pod_ip == "10.244.0.2"


def test_broken_flannel_config_crashloops_and_pods_fail_then_recover() -> None:
    from emu.k8s.cluster import FLANNEL_CONFIGMAP, FLANNEL_NAMESPACE

    lab = Lab(seed=1)
    c = Cluster(lab, nodes=1)
    cm = c.store.get("ConfigMap", FLANNEL_CONFIGMAP, FLANNEL_NAMESPACE)
    good = cm.data["net-conf.json"]
    cm.data["net-conf.json"] = '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "VNI": "one"}}'
    c.store.update(cm)
    c.add_node("node2")
    c.create_pod("web", node="node2")
    c.run(25)
    rows = {ln.split()[1]: ln.split()[3] for ln in c.kubectl("get pods -A").splitlines()[1:]}
    flannel2 = [p.metadata.name for p in c.pods("kube-flannel") if p.spec.node_name == "node2"][0]
    assert rows["web"] == "ContainerCreating" and rows[flannel2] == "CrashLoopBackOff"
    assert "error decoding VXLAN backend config: json: cannot unmarshal string into Go struct field .VNI of type int" \
        in c.kubectl(f"logs -n kube-flannel {flannel2}")
    events = c.kubectl("describe pod web").split("Events:\n", 1)[1]
    assert "Warning  FailedCreatePodSandBox" in events
    assert ('plugin type="flannel" failed (add): loadFlannelSubnetEnv failed: open /run/flannel/subnet.env: no such '
            "file or directory") in events
    cm = c.store.get("ConfigMap", FLANNEL_CONFIGMAP, FLANNEL_NAMESPACE)
    cm.data["net-conf.json"] = good
    c.store.update(cm)
    assert c.wait(lambda: bool(c.pod("web").status.pod_ip), 120)
    assert c.pod("web").status.pod_ip == "10.244.1.2"
    assert c.kubectl("get pods -o wide").splitlines()[1].split()[2] == "Running"
    assert c.node_ns("node1").run("ip route").stdout.count("via 10.244.1.0 dev flannel.1 onlink") == 1


# --- nodes joining and leaving --------------------------------------------------------------------------------


def test_node_join_and_leave_at_run_time() -> None:
    lab = Lab(seed=2)
    c = Cluster(lab, nodes=3)
    c.create_pod("x", node="node2", wait=True)
    n4 = c.add_node()
    assert (n4.name, n4.ip) == ("node4", "192.168.1.4")
    assert c.store.get("Node", "node4").spec.pod_cidr == "10.244.3.0/24"
    assert "10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink" in c.node_ns("node1").run("ip route").stdout
    c.remove_node("node2")
    assert "node2" not in lab.namespaces and "x" not in lab.namespaces
    assert c.store.find("Pod", "x") is None and c.store.find("Node", "node2") is None
    assert not [p for p in c.pods("kube-flannel") if p.spec.node_name == "node2"], "podgc removes the DS pod"
    for n in ("node1", "node3", "node4"):
        assert "10.244.1.0" not in c.node_ns(n).run("ip route").stdout
        assert "10.244.1.0" not in c.node_ns(n).run("ip neigh").stdout
    n5 = c.add_node()
    assert (n5.name, n5.ip, c.store.get("Node", "node5").spec.pod_cidr) == ("node5", "192.168.1.2", "10.244.4.0/24")
    with pytest.raises(ClusterError, match='nodes "node1" already exists'):
        c.add_node("node1")
    with pytest.raises(ClusterError, match='nodes "nodeX" not found'):
        c.remove_node("nodeX")


def test_same_seed_same_cluster() -> None:
    def build(seed: int) -> tuple[str, ...]:
        lab = Lab(seed=seed)
        c = Cluster(lab, nodes=3)
        c.create_pod("a", wait=True)
        c.create_pod("b", wait=True)
        ns = c.node_ns("node2")
        return (c.kubectl("get pods -A -o wide"), ns.run("ip neigh").stdout, ns.run("bridge fdb show").stdout,
                ns.run("ip link").stdout, c.pod_ns("a").run("ip link").stdout)

    assert build(11) == build(11)
    assert build(11)[1] != build(12)[1], "the VTEP MACs come from the seeded generator"


# --- scale -------------------------------------------------------------------------------------------------------


def test_a_100_node_3000_pod_cluster_builds_and_pings_across() -> None:
    """Build time and memory are measured in bench/test_bench_cluster.py; here only that it works."""
    started = time.perf_counter()
    lab = Lab(seed=100)
    c = Cluster(lab, nodes=100, underlay="192.168.0.0/16")
    for i in range(3000):
        c.create_pod(f"p{i:04d}")
    c.settle()
    elapsed = time.perf_counter() - started
    pods = c.pods()
    assert len(pods) == 3000 and all(p.status.pod_ip for p in pods)
    per_node = {}
    for p in pods:
        per_node[p.spec.node_name] = per_node.get(p.spec.node_name, 0) + 1
    assert set(per_node.values()) == {30}
    assert c.node_ns("node57").run("ip route").stdout.count("dev flannel.1 onlink") == 99
    a, b = pods[0], pods[-1]
    assert a.spec.node_name != b.spec.node_name
    res = c.pod_ns(a.metadata.name).run(f"ping -c 1 {b.status.pod_ip}")
    assert res.rc == 0 and "ttl=62" in res.stdout, res.stdout
    print(f"\n100 nodes, 3000 pods: built in {elapsed:.1f} s")


def test_nodes_on_several_subnets_joined_by_a_router() -> None:
    """VXLAN crosses an L3 underlay: nodes on two subnets, a router between them."""
    from emu.k8s.cluster import Cluster
    from emu.net import Lab

    lab = Lab(seed=9)
    cluster = Cluster(lab, 2, subnets=["192.168.1.0/24", "192.168.2.0/24"])
    assert [n.ip for n in cluster.nodes.values()] == ["192.168.1.1", "192.168.2.1"]
    assert "default via 192.168.1.254 dev eth0" in lab["node1"].run("ip route").stdout
    a = cluster.create_pod("a", node="node1", wait=True)
    b = cluster.create_pod("b", node="node2", wait=True)
    assert a.status.pod_ip and b.status.pod_ip
    lab.capture("underlay-router", "eth1")
    out = cluster.pod_ns("a").run(f"ping -c 1 {b.status.pod_ip}").stdout
    assert "1 received" in out and "ttl=62" in out  # the router is invisible inside the overlay
    from emu.frames import IP, UDP, Ether

    outer = [Ether(r.frame) for r in lab.records({"underlay-router/eth1"}) if Ether(r.frame).haslayer(UDP)]
    assert outer and outer[0][UDP].dport == 8472 and outer[0][IP].ttl == 63  # the outer packet was routed
