"""Flannel: net-conf.json checks, leases (kube and etcd), subnet.env, what flanneld installs on every node
after nodes join and leave (vxlan, host-gw, DirectRouting), its iptables rules, the flannel CNI plugin,
and pod-to-pod traffic on the same node and across nodes."""

from __future__ import annotations

import json

import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.vxlan import VXLAN
from scapy.utils import rdpcap

from emu.cni import CniError, Runtime
from emu.k8s.cluster import KUBE_FLANNEL_CNI_CONF, CniAdapter, Cluster
from emu.k8s.flannel import ETCD_PREFIX, FlannelError, parse_net_conf
from emu.net import Lab

# --- net-conf.json -------------------------------------------------------------------------------------


def test_net_conf_defaults() -> None:
    conf = parse_net_conf('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}')
    assert (conf.network_cidr, conf.subnet_len) == ("10.244.0.0/16", 24)
    assert (conf.subnet_min, conf.subnet_max) == (0x0AF40100, 0x0AF4FF00)  # 10.244.1.0 .. 10.244.255.0
    be = conf.backend
    assert (be.type, be.vni, be.port, be.dstport, be.direct_routing, be.learning, be.mtu) == (
        "vxlan", 1, 0, 8472, False, False, None)
    small = parse_net_conf('{"Network": "10.1.2.0/24", "Backend": {"Type": "host-gw"}}')
    assert small.subnet_len == 26 and small.backend.type == "host-gw"
    # Go's decoder: case-insensitive keys; ip.IP4Net drops host bits; unknown keys are ignored
    odd = parse_net_conf('{"network": "10.244.7.0/16", "EnableNFTables": false, "backend": {"type": "VXLAN", '
                         '"vni": 42, "port": 4789, "directrouting": true}}')
    assert (odd.network_cidr, odd.backend.vni, odd.backend.dstport, odd.backend.direct_routing) == (
        "10.244.0.0/16", 42, 4789, True)


@pytest.mark.parametrize(("text", "message"), [
    ("{", "error parsing subnet config: invalid JSON: Expecting property name enclosed in double quotes at line 1 "
          "column 2"),
    ("[]", "error parsing subnet config: json: cannot unmarshal array into Go value of type subnet.Config"),
    ('{"Backend": {"Type": "vxlan"}}', "please define a correct Network parameter in the flannel config"),
    ('{"Network": "10.244.0.0/16", "SubnetLen": "24", "Backend": {"Type": "vxlan"}}',
     "error parsing subnet config: json: cannot unmarshal string into Go struct field Config.SubnetLen of type uint"),
    ('{"Network": 10, "Backend": {"Type": "vxlan"}}',
     "error parsing subnet config: json: cannot unmarshal number into Go struct field Config.Network of type string"),
    ('{"Network": "10.244.0.0/16", "SubnetLen": -1, "Backend": {"Type": "vxlan"}}',
     "error parsing subnet config: json: cannot unmarshal number -1 into Go struct field Config.SubnetLen of type "
     "uint"),
    ('{"Network": "10.244.0.0/33", "Backend": {"Type": "vxlan"}}', "invalid CIDR address: 10.244.0.0/33 (in Network)"),
    ('{"Network": "10.244.0.0/16", "SubnetLen": 31, "Backend": {"Type": "vxlan"}}', "SubnetLen must be less than /31"),
    ('{"Network": "10.244.0.0/16", "SubnetLen": 17, "Backend": {"Type": "vxlan"}}',
     "network must be able to accommodate at least four subnets"),
    ('{"Network": "10.244.0.0/29", "Backend": {"Type": "vxlan"}}',
     "network is too small. Minimum useful network prefix is /28"),
    ('{"Network": "10.244.0.0/16", "SubnetMin": "10.245.0.0", "Backend": {"Type": "vxlan"}}',
     "SubnetMin is not in the range of the Network"),
    ('{"Network": "10.244.0.0/16", "SubnetMax": "10.0.0.0", "Backend": {"Type": "vxlan"}}',
     "SubnetMax is not in the range of the Network"),
    ('{"Network": "10.244.0.0/16", "SubnetMin": "10.244.1.5", "Backend": {"Type": "vxlan"}}',
     "SubnetMin is not on a SubnetLen boundary: 10.244.1.5"),
    ('{"Network": "10.244.0.0/16"}',
     'backend type "udp" (the default when net-conf.json has no Backend) is not emulated: use "vxlan" or "host-gw"'),
    ('{"Network": "10.244.0.0/16", "Backend": {"Type": "wireguard"}}',
     'backend type "wireguard" is not emulated: use "vxlan" or "host-gw"'),
    ('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlam"}}', "error fetching backend: unknown backend type: vxlam"),
    ('{"Network": "10.244.0.0/16", "Backend": "vxlan"}',
     "error parsing subnet config: error decoding Backend property of config: json: cannot unmarshal string into Go "
     "value of type struct { Type string }"),
    ('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "VNI": "1"}}',
     "error decoding VXLAN backend config: json: cannot unmarshal string into Go struct field .VNI of type int"),
    ('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "DirectRouting": "yes"}}',
     "error decoding VXLAN backend config: json: cannot unmarshal string into Go struct field .DirectRouting of type "
     "bool"),
    ('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "VNI": 16777216}}',
     "failed to create VXLAN device flannel.16777216: numerical result out of range (a VNI is 24 bits: 0..16777215)"),
    ('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "MTU": 100}}',
     "failed to create VXLAN device flannel.1: invalid argument (MTU 100 - 50 is below the minimum of 68)"),
    ('{"Network": "10.244.0.0/16", "EnableIPv6": true, "Backend": {"Type": "vxlan"}}',
     "EnableIPv6: IPv6 networks are not emulated (emu carries IPv4 only)"),
])
def test_net_conf_errors_are_flanneld_s(text: str, message: str) -> None:
    with pytest.raises(FlannelError) as exc:
        parse_net_conf(text)
    assert str(exc.value) == message


def test_cluster_refuses_a_config_flanneld_refuses() -> None:
    with pytest.raises(FlannelError, match="please define a correct Network parameter"):
        Cluster(Lab(), nodes=1, net_conf="{}")


# --- leases ------------------------------------------------------------------------------------------------


def test_kube_mode_leases_are_podcidrs_and_node_annotations() -> None:
    c = Cluster(Lab(seed=4), nodes=3)
    for i, name in enumerate(("node1", "node2", "node3")):
        node = c.store.get("Node", name)
        mac = c.node_ns(name).link("flannel.1").mac_str
        assert node.spec.pod_cidr == f"10.244.{i}.0/24"
        assert {k: v for k, v in node.metadata.annotations.items() if k.startswith("flannel")} == {
            "flannel.alpha.coreos.com/backend-data": f'{{"VNI":1,"VtepMAC":"{mac}"}}',
            "flannel.alpha.coreos.com/backend-type": "vxlan",
            "flannel.alpha.coreos.com/kube-subnet-manager": "true",
            "flannel.alpha.coreos.com/public-ip": f"192.168.1.{i + 1}",
        }
        assert c.flannel(name).lease.subnet == f"10.244.{i}.0/24"
        assert int(mac.split(":")[0], 16) & 0b11 == 0b10, "a locally administered unicast MAC"
    hostgw = Cluster(Lab(seed=4), nodes=1, backend="host-gw")
    ann = hostgw.store.get("Node", "node1").metadata.annotations
    assert (ann["flannel.alpha.coreos.com/backend-type"], ann["flannel.alpha.coreos.com/backend-data"]) == (
        "host-gw", "null")


def test_etcd_mode_leases() -> None:
    lab = Lab(seed=9)
    c = Cluster(lab, nodes=3, subnet_mgr="etcd")
    assert c.store.get("Node", "node1").spec.pod_cidr == "", "no podCIDR allocation in etcd mode"
    assert json.loads(c.etcd.get(f"{ETCD_PREFIX}/config").value)["Network"] == "10.244.0.0/16"
    kvs = c.etcd.range(f"{ETCD_PREFIX}/subnets/")
    assert len(kvs) == 3
    by_ip = {}
    for kv in kvs:
        value = json.loads(kv.value)
        subnet = kv.key.rsplit("/", 1)[1].replace("-", "/")
        by_ip[value["PublicIP"]] = subnet
        node = f"node{value['PublicIP'].rsplit('.', 1)[1]}"
        mac = c.node_ns(node).link("flannel.1").mac_str
        assert kv.value == (f'{{"PublicIP":"{value["PublicIP"]}","PublicIPv6":null,"BackendType":"vxlan",'
                            f'"BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}')
        assert kv.ttl == 24 * 3600
        assert c.flannel(node).lease.subnet == subnet
        third = int(subnet.split(".")[2])
        assert 1 <= third <= 100 and subnet.endswith(".0/24"), "among the first 100 free subnets from SubnetMin"
    assert len(set(by_ip.values())) == 3
    again = Cluster(Lab(seed=9), nodes=3, subnet_mgr="etcd")
    assert [kv.key for kv in again.etcd.range(f"{ETCD_PREFIX}/subnets/")] == [kv.key for kv in kvs], "seeded"

    # flanneld restarts: the lease of its public IP is found and reused
    d = c.flannel("node2")
    d.stop()
    d.start()
    assert d.lease.subnet == by_ip["192.168.1.2"]
    assert any("Found lease" in line and "reusing" in line for line in d.logs)

    # renewals keep the leases of running nodes; a node that left loses its lease after the TTL
    c.remove_node("node3")
    gone = by_ip["192.168.1.3"]
    assert f"{gone} via" in c.node_ns("node1").run("ip route").stdout, "still there: etcd has the lease for 24 h"
    c.run(25 * 3600)
    keys = [kv.key.rsplit("/", 1)[1].replace("-", "/") for kv in c.etcd.range(f"{ETCD_PREFIX}/subnets/")]
    assert sorted(keys) == sorted([by_ip["192.168.1.1"], by_ip["192.168.1.2"]])
    assert f"{gone} via" not in c.node_ns("node1").run("ip route").stdout
    assert f"{by_ip['192.168.1.2']} via" in c.node_ns("node1").run("ip route").stdout


def test_etcd_mode_runs_out_of_subnets() -> None:
    c = Cluster(Lab(seed=1), nodes=2, subnet_mgr="etcd", network="10.10.0.0/24", subnet_len=26)
    assert len(c.etcd.range(f"{ETCD_PREFIX}/subnets/")) == 2
    c.add_node("node3")
    c.add_node("node4")  # SubnetMin skips 10.10.0.0/26: three subnets for four nodes
    fl = [p for p in c.pods("kube-flannel") if p.spec.node_name == "node4"][0]
    assert c.kubectl("get pods -A").count("CrashLoopBackOff") == 1
    assert "failed to acquire lease: out of subnets" in c.kubectl(f"logs -n kube-flannel {fl.metadata.name}")


# --- subnet.env -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "env"), [
    ({}, "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"),
    ({"backend": "host-gw"},
     "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=true\n"),
    ({"ip_masq": False, "mtu": 9000},
     "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=8950\nFLANNEL_IPMASQ=false\n"),
    ({"backend_mtu": 1400},
     "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1350\nFLANNEL_IPMASQ=true\n"),
    ({"network": "10.42.0.0/16", "subnet_len": 25},
     "FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.0.129/25\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"),
])
def test_subnet_env(kwargs: dict, env: str) -> None:
    c = Cluster(Lab(seed=1), nodes=2, **kwargs)
    res = c.node_ns("node2").run("cat /run/flannel/subnet.env")
    assert (res.rc, res.stdout) == (0, env)
    link = c.node_ns("node2").links.get("flannel.1")
    if link is not None:
        assert link.mtu == int(env.split("FLANNEL_MTU=")[1].split("\n")[0])


# --- what flanneld installs -----------------------------------------------------------------------------------


def _expected_vxlan(c: Cluster, me: str) -> tuple[str, str, str]:
    """`ip route`, `ip neigh show dev flannel.1`, `bridge fdb show dev flannel.1` of node `me` as flanneld
    leaves them: one entry of each per other node."""
    mine = c.nodes[me]
    routes, neigh, fdb = [], [], []
    for name, node in c.nodes.items():
        subnet = c.store.get("Node", name).spec.pod_cidr
        net = subnet.split("/")[0]
        mac = node.ns.link("flannel.1").mac_str
        if name == me:
            continue
        routes.append((subnet, f"{subnet} via {net} dev flannel.1 onlink \n"))
        neigh.append((net, f"{net} lladdr {mac} PERMANENT \n"))  # `dev` is not printed when filtered by it
        fdb.append((mac, f"{mac} dst {node.ip} self permanent\n"))
    key = lambda t: tuple(int(x, 16) if ":" in t[0] else int(x) for x in t[0].replace("/", ".").replace(":", ".").split("."))  # noqa: E731
    route_text = "".join(r for _, r in sorted(routes, key=key)) + f"192.168.1.0/24 dev eth0 proto kernel scope link " \
        f"src {mine.ip} \n"
    return route_text, "".join(n for _, n in sorted(neigh, key=key)), "".join(f for _, f in sorted(fdb))


def _check_all_nodes(c: Cluster) -> None:
    for name, node in c.nodes.items():
        routes, neigh, fdb = _expected_vxlan(c, name)
        got_routes = "".join(ln for ln in node.ns.run("ip route").stdout.splitlines(keepends=True)
                             if "cni0" not in ln)
        assert got_routes == routes, name
        assert node.ns.run("ip neigh show dev flannel.1").stdout == neigh, name
        assert "".join(sorted(node.ns.run("bridge fdb show dev flannel.1").stdout.splitlines(keepends=True))) == fdb


def test_vxlan_entries_on_every_node_after_join_and_leave() -> None:
    c = Cluster(Lab(seed=6), nodes=3)
    assert c.node_ns("node1").run("ip route").stdout == (
        "10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink \n"
        "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink \n"
        "192.168.1.0/24 dev eth0 proto kernel scope link src 192.168.1.1 \n")
    _check_all_nodes(c)
    ns = c.node_ns("node1")
    assert ns.run("ip addr show dev flannel.1").stdout.split("\n", 2)[2] == (
        "    inet 10.244.0.0/32 scope global flannel.1\n       valid_lft forever preferred_lft forever\n")
    assert " mtu 1450 " in ns.run("ip link show flannel.1").stdout
    vx = ns.link("flannel.1")
    assert (vx.vni, vx.dstport, vx.learning, vx.underlay, vx.local) == (1, 8472, False, "eth0", 0xC0A80101)
    c.add_node()
    c.add_node()
    _check_all_nodes(c)
    c.remove_node("node2")
    c.remove_node("node4")
    _check_all_nodes(c)
    assert sorted(c.nodes) == ["node1", "node3", "node5"]
    assert c.node_ns("node1").run("ip neigh show dev flannel.1").stdout.count("PERMANENT") == 2


def test_host_gw_routes() -> None:
    c = Cluster(Lab(seed=6), nodes=3, backend="host-gw")
    for i in (1, 2, 3):
        others = "".join(f"10.244.{j - 1}.0/24 via 192.168.1.{j} dev eth0 \n" for j in (1, 2, 3) if j != i)
        assert c.node_ns(f"node{i}").run("ip route").stdout == (
            others + f"192.168.1.0/24 dev eth0 proto kernel scope link src 192.168.1.{i} \n")
        assert "flannel.1" not in c.node_ns(f"node{i}").links
    c.remove_node("node3")
    assert "10.244.2.0" not in c.node_ns("node1").run("ip route").stdout
    a = c.create_pod("a", node="node1", wait=True)
    b = c.create_pod("b", node="node2", wait=True)
    lab = c.lab
    lab.capture("node1", "eth0")
    res = c.pod_ns("a").run(f"ping -c 1 {b.status.pod_ip}")
    assert res.rc == 0 and "ttl=62" in res.stdout
    ips = [r for r in lab.captures[("node1", "eth0")].records if r.frame[12:14] == b"\x08\x00"]
    assert ips and all(r.frame[23] == 1 for r in ips), "plain ICMP on the underlay: no encapsulation"
    assert a.status.pod_ip == "10.244.0.2"


def test_direct_routing_uses_the_underlay_on_the_same_subnet() -> None:
    c = Cluster(Lab(seed=6), nodes=2, direct_routing=True)
    assert c.node_ns("node1").run("ip route").stdout == (
        "10.244.1.0/24 via 192.168.1.2 dev eth0 \n"
        "192.168.1.0/24 dev eth0 proto kernel scope link src 192.168.1.1 \n")
    assert c.node_ns("node1").run("ip neigh show dev flannel.1").stdout == ""
    c.remove_node("node2")
    assert "10.244.1.0" not in c.node_ns("node1").run("ip route").stdout


def test_vni_and_port_from_the_config(tmp_path) -> None:
    c = Cluster(Lab(seed=6), nodes=2, vni=42, port=4789)
    ns = c.node_ns("node1")
    assert "flannel.42" in ns.links and ns.link("flannel.42").dstport == 4789
    assert "10.244.1.0/24 via 10.244.1.0 dev flannel.42 onlink" in ns.run("ip route").stdout
    a = c.create_pod("a", node="node1", wait=True)
    b = c.create_pod("b", node="node2", wait=True)
    c.lab.capture("node1", "eth0")
    assert c.pod_ns("a").run(f"ping -c 1 {b.status.pod_ip}").rc == 0
    c.lab.write_pcap(str(tmp_path / "vni.pcapng"))
    udp = [p for p in rdpcap(str(tmp_path / "vni.pcapng")) if UDP in p]
    assert udp and all(p[UDP].dport == 4789 for p in udp)
    assert {VXLAN(bytes(p[UDP].payload)).vni for p in udp} == {42}
    assert a.status.pod_ip != b.status.pod_ip


# --- iptables ----------------------------------------------------------------------------------------------------


def test_ip_masq_rules() -> None:
    c = Cluster(Lab(seed=1), nodes=2)
    out = c.node_ns("node2").run("iptables-save").stdout
    body = "".join(ln for ln in out.splitlines(keepends=True) if not ln.startswith("#"))
    assert body == """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:FLANNEL-FWD - [0:0]
-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
-A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
-A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:FLANNEL-POSTRTG - [0:0]
-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.244.1.0/24 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
COMMIT
"""
    # flanneld restarting applies the same rules again without duplicating them
    c.flannel("node2").stop()
    c.flannel("node2").start()
    assert c.node_ns("node2").run("iptables-save").stdout.count("-j FLANNEL-POSTRTG") == 1
    assert c.node_ns("node2").run("iptables -t nat -S FLANNEL-POSTRTG").stdout.count("\n") == 7
    off = Cluster(Lab(seed=1), nodes=1, ip_masq=False)
    assert "FLANNEL-POSTRTG" not in off.node_ns("node1").run("iptables-save").stdout
    assert "FLANNEL-FWD" in off.node_ns("node1").run("iptables-save").stdout


def test_pod_traffic_to_the_underlay_is_masqueraded_pod_to_pod_is_not() -> None:
    c = Cluster(Lab(seed=1), nodes=2)
    a = c.create_pod("a", node="node1", wait=True)
    b = c.create_pod("b", node="node2", wait=True)
    c.lab.capture("node2", "eth0")
    c.lab.capture("node2", "flannel.1")
    assert c.pod_ns("a").run("ping -c 1 192.168.1.2").rc == 0
    assert c.pod_ns("a").run(f"ping -c 1 {b.status.pod_ip}").rc == 0
    underlay = [r.frame for r in c.lab.captures[("node2", "eth0")].records if r.direction == "in"]
    icmp_to_node = [f for f in underlay if f[12:14] == b"\x08\x00" and f[23] == 1]
    assert icmp_to_node and {bytes(f[26:30]) for f in icmp_to_node} == {bytes([192, 168, 1, 1])}
    inner = [IP(r.frame[14:]) for r in c.lab.captures[("node2", "flannel.1")].records if r.direction == "in"]
    assert [(p.src, p.dst) for p in inner] == [(a.status.pod_ip, b.status.pod_ip)]
    conn = c.node_ns("node1").run("conntrack -L").stdout
    assert "src=10.244.0.2 dst=192.168.1.2" in conn and "dst=192.168.1.1" in conn, conn


# --- the flannel CNI plugin --------------------------------------------------------------------------------------


def _node(subnet_env: str | None) -> tuple[Lab, object, Runtime]:
    lab = Lab(seed=1)
    node = lab.netns("node1")
    node.link_set("lo", up=True)
    if subnet_env is not None:
        node.write_file("/run/flannel/subnet.env", subnet_env)
    return lab, node, Runtime(lab, node, registry=CniAdapter.registry())


ENV = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"


def test_flannel_plugin_delegates_to_bridge_with_host_local() -> None:
    lab, node, rt = _node(ENV)
    pod = lab.netns("pod")
    conf = json.loads(KUBE_FLANNEL_CNI_CONF)
    res = rt.add(conf, "c1", pod, args="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod")
    assert [i["name"] for i in res["interfaces"]][::2] == ["cni0", "eth0"]
    assert res["ips"] == [{"version": "4", "interface": 2, "address": "10.244.1.2/24", "gateway": "10.244.1.1"}]
    assert res["routes"] == [{"dst": "10.244.0.0/16"}, {"dst": "0.0.0.0/0", "gw": "10.244.1.1"}]
    assert node.files["/var/lib/cni/flannel/c1"] == (
        '{"cniVersion":"0.3.1","hairpinMode":true,"ipMasq":false,"ipam":{"ranges":[[{"subnet":"10.244.1.0/24"}]],'
        '"routes":[{"dst":"10.244.0.0/16"}],"type":"host-local"},"isDefaultGateway":true,"isGateway":true,'
        '"mtu":1450,"name":"cbr0","type":"bridge"}')
    assert node.sysctl_get("net.ipv4.ip_forward") == "1", "isGateway turns on forwarding"
    veth = next(lk for lk in node.sorted_links() if lk.ifname.startswith("veth"))
    assert veth.hairpin and veth.master is node.link("cni0") and veth.mtu == 1450
    assert "10.244.1.1/24" in node.addresses_text()
    rt.delete(conf, "c1", pod)
    assert "/var/lib/cni/flannel/c1" not in node.files
    assert not [lk for lk in node.sorted_links() if lk.ifname.startswith("veth")]
    rt.delete(conf, "c1", pod)  # a second DEL finds nothing and succeeds


def test_flannel_plugin_ipmasq_false_makes_the_bridge_masquerade() -> None:
    lab, node, rt = _node(ENV.replace("FLANNEL_IPMASQ=true", "FLANNEL_IPMASQ=false"))
    rt.add(json.loads(KUBE_FLANNEL_CNI_CONF), "c1", lab.netns("pod"))
    assert json.loads(node.files["/var/lib/cni/flannel/c1"])["ipMasq"] is True
    assert "-j MASQUERADE" in node.run("iptables-save -t nat").stdout


@pytest.mark.parametrize(("env", "delegate", "message"), [
    (None, None, "loadFlannelSubnetEnv failed: open /run/flannel/subnet.env: no such file or directory"),
    ("FLANNEL_NETWORK=10.244.0.0/16\n", None, "loadFlannelSubnetEnv failed: /run/flannel/subnet.env is missing "
     "FLANNEL_SUBNET, FLANNEL_IPV6_SUBNET, FLANNEL_MTU, FLANNEL_IPMASQ"),
    (ENV.replace("1450", "x"), None, 'loadFlannelSubnetEnv failed: strconv.ParseUint: parsing "x": invalid syntax'),
    (ENV, {"ipam": {"type": "host-local"}}, "'delegate' dictionary must not have 'ipam' field, it'll be set by flannel"),
    (ENV, {"name": "x"}, "'delegate' dictionary must not have 'name' field, it'll be set by flannel"),
    (ENV, {"type": 7}, "'delegate' dictionary, if present, must have (string) 'type' field"),
    (ENV, {"type": "macvlan"}, 'failed to delegate add: failed to find plugin "macvlan" in path [/opt/cni/bin]'),
])
def test_flannel_plugin_errors(env: str | None, delegate: dict | None, message: str) -> None:
    lab, node, rt = _node(env)
    conf = {"cniVersion": "0.3.1", "name": "cbr0", "plugins": [{"type": "flannel"}]}
    if delegate is not None:
        conf["plugins"][0]["delegate"] = delegate
    with pytest.raises(CniError) as exc:
        rt.add(conf, "c1", lab.netns("pod"))
    assert exc.value.msg == message
    assert exc.value.context == 'plugin type="flannel" failed (add)'


# --- pod to pod ------------------------------------------------------------------------------------------------


def test_pod_to_pod_ttls_and_no_arp_on_flannel_1(make_lab) -> None:
    lab = make_lab(seed=2)
    c = Cluster(lab, nodes=2)
    a = c.create_pod("a", node="node1", wait=True)
    a2 = c.create_pod("a2", node="node1", wait=True)
    b = c.create_pod("b", node="node2", wait=True)
    lab.capture("node1", "flannel.1")
    lab.capture("node1", "cni0")
    same = c.pod_ns("a").run(f"ping -c 2 {a2.status.pod_ip}")
    assert same.rc == 0 and same.stdout.count("ttl=64") == 2, "bridged on cni0: no hop"
    cross = c.pod_ns("a").run(f"ping -c 2 {b.status.pod_ip}")
    assert cross.rc == 0 and cross.stdout.count("ttl=62") == 2, "routed by node1 and node2"
    back = c.pod_ns("b").run(f"ping -c 1 {a.status.pod_ip}")
    assert back.rc == 0 and "ttl=62" in back.stdout
    tunnel = lab.captures[("node1", "flannel.1")].records
    assert tunnel and not [r for r in tunnel if r.frame[12:14] == b"\x08\x06"], "no ARP crosses flannel.1"
    vx = c.node_ns("node1").link("flannel.1")
    peer = c.node_ns("node2").link("flannel.1")
    outs = [r.frame for r in tunnel if r.direction == "out"]
    assert outs and all(f[0:6] == peer.mac.to_bytes(6, "big") and f[6:12] == vx.mac.to_bytes(6, "big") for f in outs)
    pkt = IP(outs[0][14:])
    assert (pkt.src, pkt.dst, pkt.ttl, ICMP in pkt) == (a.status.pod_ip, b.status.pod_ip, 63, True)
    assert c.node_ns("node1").run("ip neigh show 192.168.1.2").stdout.startswith("192.168.1.2 dev eth0 lladdr ")
