"""emu.cni on its own: the runtime, the plugins' effects on emulated namespaces, traffic afterwards.

Every test runs on the compiled tables and on the pure-Python twin (the `make_lab` fixture).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from emu.apps.sockets import tcp_request, tcp_serve, udp_echo, udp_request
from emu.cni import CniError, Runtime, netns_path, parse_network
from emu.cni.result import parse_result, result_text, to_version
from emu.net.addr import int2mac

DATA = Path(__file__).parent / "data" / "cni"
CONFLIST = json.loads((DATA / "10-flannel.conflist").read_text())
BRIDGE = json.loads((DATA / "10-flannel-bridge.conf").read_text())
PTP = json.loads((DATA / "20-ptp.conf").read_text())
K8S_ARGS = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=ctr1"
LEASES = "/var/lib/cni/networks/cbr0/"


def conflist(version: str = "1.0.0", **bridge: Any) -> dict[str, Any]:
    conf = json.loads(json.dumps(CONFLIST))
    conf["cniVersion"] = version
    conf["plugins"][0].update(bridge)
    return conf


@pytest.fixture
def node(make_lab):  # noqa: ANN001, ANN201
    lab = make_lab()
    return lab.netns("node1")


def pods(lab, n: int) -> list:  # noqa: ANN001
    return [lab.netns(f"pod{i}") for i in range(1, n + 1)]


# --- the five steps --------------------------------------------------------------------------------
def test_add_shows_the_five_steps_in_the_trace(node) -> None:  # noqa: ANN001
    lab = node.lab
    (p1,) = pods(lab, 1)
    rt = Runtime(lab, node)
    res = rt.add(conflist(), "ctr1", p1, args=K8S_ARGS)
    call = rt.last_call
    assert call is not None and call.command == "ADD"
    tagged = [s for s in call.steps if s.step]
    assert {s.step for s in tagged} == {1, 2, 3, 4, 5}
    first = {}
    for s in tagged:
        first.setdefault(s.step, s)
    assert (first[1].netns, first[1].ifname) == ("pod1", "eth0")  # pod end, in the pod
    assert first[2].netns == "node1" and first[2].ifname == res["interfaces"][1]["name"]  # host end
    assert first[3].netns == "pod1" and "via 10.244.1.1" in first[3].detail  # pod routes
    assert first[4].netns == "node1" and first[4].ifname == "cni0"  # host routes: cni0's connected route
    assert first[5].ifname == res["interfaces"][1]["name"] and "master cni0" in first[5].detail  # attach
    addr = [s for s in tagged if s.step == 1 and "10.244.1.2/24" in s.detail]
    assert addr, "the pod end's address is one of step 1's notes"
    # the same notes are in the lab's trace, under the call's pid
    notes = [d for d in lab.decisions(call.pid) if d.point == "cni"]
    assert len(notes) == len(call.steps)
    text = lab.trace_text(call.pid)
    for n in range(1, 6):
        assert f"[step {n}]" in text
    assert "host-local" in text and "portmap" not in text  # no port mappings: portmap changes nothing


def test_add_result_and_state(node) -> None:  # noqa: ANN001
    lab = node.lab
    p1, p2 = pods(lab, 2)
    rt = Runtime(lab, node)
    r1 = rt.add(conflist(), "ctr1", p1)
    assert [i["name"] for i in r1["interfaces"]][::2] == ["cni0", "eth0"]
    assert r1["interfaces"][1]["name"].startswith("veth") and len(r1["interfaces"][1]["name"]) == 12
    assert r1["interfaces"][2]["sandbox"] == netns_path("pod1") == "/var/run/netns/pod1"
    assert r1["ips"] == [{"interface": 2, "address": "10.244.1.2/24", "gateway": "10.244.1.1"}]
    assert r1["routes"] == [{"dst": "10.244.0.0/16"}, {"dst": "0.0.0.0/0", "gw": "10.244.1.1"}]
    assert r1["dns"] == {}
    r2 = rt.add(conflist(), "ctr2", p2)
    assert r2["ips"][0]["address"] == "10.244.1.3/24"
    assert r2["interfaces"][0] == r1["interfaces"][0]  # one bridge, its MAC pinned by the first ADD
    cni0 = node.links["cni0"]
    assert cni0.mac_str == r1["interfaces"][0]["mac"] and node.sysctl_get("net.ipv4.ip_forward") == "1"
    assert node.run("ip -4 addr show cni0").stdout.count("inet 10.244.1.1/24 brd 10.244.1.255") == 1
    assert p1.run("ip route").stdout == ("default via 10.244.1.1 dev eth0 \n"
                                         "10.244.0.0/16 via 10.244.1.1 dev eth0 \n"
                                         "10.244.1.0/24 dev eth0 proto kernel scope link src 10.244.1.2 \n")
    assert p1.links["eth0"].peer.ifname == r1["interfaces"][1]["name"]
    assert p1.links["eth0"].peer.master is cni0 and p1.links["eth0"].peer.hairpin
    assert node.files[LEASES + "10.244.1.2"] == "ctr1\r\neth0"
    assert node.files[LEASES + "last_reserved_ip.0"] == "10.244.1.3"
    assert node.files[LEASES + "lock"] == ""


def test_same_seed_same_names_and_macs(make_lab) -> None:  # noqa: ANN001
    results = []
    for _ in range(2):
        lab = make_lab(seed=7)
        node = lab.netns("node1")
        results.append(Runtime(lab, node).add(conflist(), "ctr1", lab.netns("pod1")))
    assert results[0] == results[1]


# --- traffic ---------------------------------------------------------------------------------------
def test_pods_on_one_bridge_ping_each_other_and_the_gateway(node) -> None:  # noqa: ANN001
    lab = node.lab
    p1, p2 = pods(lab, 2)
    rt = Runtime(lab, node)
    rt.add(conflist(), "ctr1", p1)
    rt.add(conflist(), "ctr2", p2)
    out = p1.run("ping -c 1 10.244.1.3")
    assert out.rc == 0 and "1 received" in out.stdout and "ttl=64" in out.stdout
    assert p2.run("ping -c 1 10.244.1.2").rc == 0
    assert p1.run("ping -c 1 10.244.1.1").rc == 0  # cni0 is the gateway
    assert node.run("ping -c 1 10.244.1.3").rc == 0
    mac2 = p2.links["eth0"].mac_str
    assert mac2 in p1.run("ip neigh").stdout


def test_pods_on_ptp_are_routed_through_the_node(node) -> None:  # noqa: ANN001
    lab = node.lab
    p1, p2 = pods(lab, 2)
    rt = Runtime(lab, node)
    r1 = rt.add(PTP, "ctr1", p1)
    rt.add(PTP, "ctr2", p2)
    assert r1["interfaces"][1]["sandbox"] == netns_path("pod1") and r1["ips"][0]["interface"] == 1
    assert p1.run("ip route").stdout == ("default via 10.1.1.1 dev eth0 \n"
                                         "10.1.1.0/24 via 10.1.1.1 dev eth0 src 10.1.1.2 \n"
                                         "10.1.1.1 dev eth0 scope link src 10.1.1.2 \n")
    out = p1.run("ping -c 1 10.1.1.3")
    assert out.rc == 0 and "ttl=63" in out.stdout  # one routed hop: the node
    rt.delete(PTP, "ctr1", p1)
    assert "eth0" not in p1.links and not [r for r in node.run("ip route").stdout.splitlines() if "10.1.1.2" in r]


def _own_broadcasts_back(lab, pod) -> int:  # noqa: ANN001
    cap = lab.capture(pod.name, "eth0")
    pod.run("ping -c 1 -W 1 10.244.1.99")
    mine = pod.links["eth0"].mac
    return sum(1 for r in cap.records if r.direction == "in" and int.from_bytes(r.frame[6:12], "big") == mine
               and r.frame[12:14] == b"\x08\x06")


@pytest.mark.parametrize("hairpin", [True, False])
def test_hairpin_mode_sends_a_pods_broadcasts_back_to_it(node, hairpin: bool) -> None:  # noqa: ANN001
    lab = node.lab
    (p1,) = pods(lab, 1)
    Runtime(lab, node).add(conflist(hairpinMode=hairpin), "ctr1", p1)
    back = _own_broadcasts_back(lab, p1)
    assert (back > 0) == hairpin, f"own ARP requests seen coming back: {back}"


# --- chaining, prevResult, cache ------------------------------------------------------------------
PORTS = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                          {"hostPort": 5353, "containerPort": 53, "protocol": "udp"}]}


def _uplink(lab, node):  # noqa: ANN001, ANN202
    """A client host on a link to the node (192.168.0.0/24)."""
    client = lab.netns("client")
    node.link_add("eth0", "veth", peer="eth0", peer_ns=client)
    node.addr_add("eth0", "192.168.0.10/24")
    client.addr_add("eth0", "192.168.0.20/24")
    node.link_set("eth0", up=True)
    client.link_set("eth0", up=True)
    client.route_add("10.244.0.0/16", via="192.168.0.10")
    return client


def test_conflist_chains_prev_result_into_portmap(node) -> None:  # noqa: ANN001
    lab = node.lab
    (p1,) = pods(lab, 1)
    client = _uplink(lab, node)
    rt = Runtime(lab, node)
    res = rt.add(CONFLIST, "ctr1", p1, capability_args=PORTS)
    assert [t for t, cmd, _ in rt.last_call.invocations] == ["bridge", "host-local", "portmap"]
    assert res["ips"][0]["address"] == "10.244.1.2/24"  # portmap passed bridge's result through
    nat = node.run("iptables-save -t nat").stdout
    assert "-A CNI-DN-" in nat and "--to-destination 10.244.1.2:80" in nat and "--to-destination 10.244.1.2:53" in nat
    assert "-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT" in nat
    # hostPort traffic reaches the pod
    tcp_serve(p1, 80, lambda req: b"pod says " + req)
    assert tcp_request(client, "192.168.0.10", 8080, b"hi") == (b"pod says hi", None)
    udp_echo(p1, 53)
    assert udp_request(client, "192.168.0.10", 5353, b"q") == b"q"
    # DEL runs the chain in reverse, with the cached result as prevResult
    rt.delete(CONFLIST, "ctr1", p1)
    assert [t for t, cmd, _ in rt.last_call.invocations] == ["portmap", "bridge", "host-local"]
    nat = node.run("iptables-save -t nat").stdout
    assert "CNI-DN-" not in nat and "10.244.1.2" not in nat


def test_runtime_config_only_for_declared_capabilities(node) -> None:  # noqa: ANN001
    lab = node.lab
    (p1,) = pods(lab, 1)
    conf = json.loads(json.dumps(CONFLIST))
    conf["plugins"][1]["capabilities"] = {"portMappings": False}
    Runtime(lab, node).add(conf, "ctr1", p1, capability_args=PORTS)
    assert "CNI-DN-" not in node.run("iptables-save -t nat").stdout


def test_result_cache_like_libcni(node) -> None:  # noqa: ANN001
    lab = node.lab
    (p1,) = pods(lab, 1)
    rt = Runtime(lab, node)
    conf = conflist()
    conf["plugins"][0]["ipam"]["routes"] = [{"dst": "10.244.0.0/16", "gw": "10.244.1.1"}]
    res = rt.add(conf, "ctr1", p1, args=K8S_ARGS, capability_args=PORTS)
    path = "/var/lib/cni/results/cbr0-ctr1-eth0"
    cached = json.loads(node.files[path])
    assert cached["kind"] == "cniCacheV1" and cached["containerId"] == "ctr1" and cached["ifName"] == "eth0"
    assert cached["networkName"] == "cbr0" and cached["netns"] == "/var/run/netns/pod1"
    assert json.loads(base64.b64decode(cached["config"])) == conf
    assert cached["result"] == res and cached["capabilityArgs"] == PORTS
    assert ["K8S_POD_NAME", "web"] in cached["cniArgs"]
    assert rt.cache.get("cbr0", "ctr1", "eth0").result == res
    rt.check(conf, "ctr1", p1)  # the cached result matches what is there
    cached["result"]["ips"][0]["address"] = "10.244.1.77/24"
    node.files[path] = json.dumps(cached)
    with pytest.raises(CniError) as info:
        rt.check(conf, "ctr1", p1)
    assert info.value.msg == "Failed to match addr 10.244.1.77/24 on interface eth0"
    rt.delete(conf, "ctr1", p1)
    assert path not in node.files
    rt.delete(conf, "ctr1", p1)  # idempotent


def test_check_detects_a_deleted_host_veth(node) -> None:  # noqa: ANN001
    lab = node.lab
    (p1,) = pods(lab, 1)
    rt = Runtime(lab, node)
    conf = conflist()
    conf["plugins"][0]["ipam"]["routes"] = [{"dst": "10.244.0.0/16", "gw": "10.244.1.1"}]
    res = rt.add(conf, "ctr1", p1)
    rt.check(conf, "ctr1", p1)
    node.link_set(res["interfaces"][1]["name"], nomaster=True)
    with pytest.raises(CniError) as info:
        rt.check(conf, "ctr1", p1)
    assert info.value.msg == "CNI veth created for bridge cni0 was not found"
    assert 'plugin type="bridge" failed (check)' in str(info.value)


def test_delete_round_robin_and_files(node) -> None:  # noqa: ANN001
    lab = node.lab
    p1, p2, p3 = pods(lab, 3)
    rt = Runtime(lab, node)
    rt.add(BRIDGE, "c1", p1)
    rt.add(BRIDGE, "c2", p2)
    rt.delete(BRIDGE, "c1", p1)
    assert LEASES + "10.244.1.2" not in node.files
    assert "cni0" in node.links and node.links["cni0"].addrs  # the bridge and its address stay
    r3 = rt.add(BRIDGE, "c3", p3)
    assert r3["ips"][0]["address"] == "10.244.1.4/24"
    assert r3["ips"][0] == {"version": "4", "interface": 2, "address": "10.244.1.4/24", "gateway": "10.244.1.1"}
    assert sorted(p[len(LEASES):] for p in node.files if p.startswith(LEASES)) == [
        "10.244.1.3", "10.244.1.4", "last_reserved_ip.0", "lock"]


def test_gc_deletes_stale_attachments_and_leaked_leases(node) -> None:  # noqa: ANN001
    lab = node.lab
    p1, p2, p3 = pods(lab, 3)
    rt = Runtime(lab, node)
    conf = conflist("1.1.0")
    for i, p in enumerate((p1, p2, p3), 1):
        rt.add(conf, f"ctr{i}", p)
    # a lease that no runtime knows about (a crashed ADD): host-local alone, outside the cache
    rc, out, _ = rt.invoke("host-local", "ADD", {**conf["plugins"][0], "name": "cbr0", "cniVersion": "1.1.0"},
                           container_id="leak", netns=p3, ifname="eth9")
    assert rc == 0 and json.loads(out)["ips"][0]["address"] == "10.244.1.5/24"
    removed = rt.gc(conf, [("ctr1", "eth0"), {"containerID": "ctr3", "ifname": "eth0"}])
    assert removed == [("ctr2", "eth0")]
    assert "eth0" not in p2.links and "eth0" in p1.links and "eth0" in p3.links
    leases = sorted(p[len(LEASES):] for p in node.files if p.startswith(LEASES + "10."))
    assert leases == ["10.244.1.2", "10.244.1.4"]  # ctr2's via DEL, the leak via host-local's GC
    assert [c for c in rt.calls if c.command == "GC"]
    # a 1.0.0 list: stale attachments are deleted, but plugins get no GC
    old = conflist("1.0.0")
    rt.add(old, "ctr5", p2)
    rt.invoke("host-local", "ADD", {**old["plugins"][0], "name": "cbr0", "cniVersion": "1.0.0"},
              container_id="leak2", netns=p2, ifname="eth9")
    assert rt.gc(old, [("ctr1", "eth0"), ("ctr3", "eth0")]) == [("ctr5", "eth0")]
    assert any(v == "leak2\r\neth9" for v in node.files.values())


def test_status_and_version(node) -> None:  # noqa: ANN001
    lab = node.lab
    rt = Runtime(lab, node)
    rt.status(conflist("1.1.0"))
    rt.status(conflist("1.0.0"))
    broken = conflist("1.1.0")
    broken["plugins"][0]["ipam"]["ranges"] = []
    with pytest.raises(CniError) as info:
        rt.status(broken)
    assert info.value.msg == "no IP ranges specified" and info.value.code == 999
    assert broken["plugins"][0]["ipam"]["type"] == "host-local"
    vers = rt.version(CONFLIST)
    assert set(vers) == {"bridge", "portmap"}
    assert vers["bridge"]["supportedVersions"][-2:] == ["1.0.0", "1.1.0"]
    assert rt.version("loopback")["cniVersion"] == "1.1.0"


def test_loopback_and_default_network_from_the_node_files(node) -> None:  # noqa: ANN001
    lab = node.lab
    (p1,) = pods(lab, 1)
    node.write_file("/etc/cni/net.d/99-loopback.conf", (DATA / "99-loopback.conf").read_text())
    node.write_file("/etc/cni/net.d/10-flannel.conflist", (DATA / "10-flannel.conflist").read_text())
    node.write_file("/etc/cni/net.d/05-broken.conf", '{"name": "x"}')  # no type: skipped
    node.write_file("/etc/cni/net.d/01-readme.txt", "not a config")
    rt = Runtime(lab, node)
    net = rt.network()
    assert (net.name, net.source, net.types) == ("cbr0", "/etc/cni/net.d/10-flannel.conflist", ["bridge", "portmap"])
    lo = parse_network(node.files["/etc/cni/net.d/99-loopback.conf"])
    res = rt.add(lo, "ctr1", p1, ifname="lo")
    assert res["ips"] == [{"interface": 0, "address": "127.0.0.1/8"}] and "version" not in res["ips"][0]
    assert p1.links["lo"].up and p1.run("ping -c 1 127.0.0.1").rc == 0
    rt.add(net, "ctr1", p1)
    rt.delete(lo, "ctr1", p1, ifname="lo")
    assert not p1.links["lo"].up


def test_results_in_every_version() -> None:
    cur = parse_result({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:01",
                                                               "sandbox": "/var/run/netns/p"}],
                        "ips": [{"interface": 0, "address": "10.0.0.2/24", "gateway": "10.0.0.1"}],
                        "routes": [{"dst": "0.0.0.0/0"}], "dns": {"nameservers": ["10.96.0.10"]}})
    assert to_version(cur, "0.2.0") == {"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.2/24", "gateway": "10.0.0.1",
                                                                       "routes": [{"dst": "0.0.0.0/0"}]},
                                        "dns": {"nameservers": ["10.96.0.10"]}}
    assert to_version(cur, "0.4.0")["ips"][0] == {"version": "4", "interface": 0, "address": "10.0.0.2/24",
                                                  "gateway": "10.0.0.1"}
    assert to_version(parse_result(to_version(cur, "0.2.0")), "1.0.0")["ips"] == [
        {"address": "10.0.0.2/24", "gateway": "10.0.0.1"}]
    text = result_text(cur, "1.0.0")
    assert text.startswith('{\n    "cniVersion": "1.0.0",\n    "interfaces": [\n        {\n')
    assert not text.endswith("\n")


def test_macs_are_the_links(node) -> None:  # noqa: ANN001
    lab = node.lab
    (p1,) = pods(lab, 1)
    res = Runtime(lab, node).add(conflist(), "ctr1", p1)
    eth0 = p1.links["eth0"]
    assert res["interfaces"][2]["mac"] == int2mac(eth0.mac)
    assert res["interfaces"][1]["mac"] == eth0.peer.mac_str
