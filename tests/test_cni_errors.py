"""Every CNI error path returns the spec's JSON and code.

Plugin-level errors (what a plugin prints on stdout, with exit code 1) are compared with the real
plugins where that is cheap: the same config bytes and environment go to /usr/lib/cni/<plugin>
in a real `emut-` namespace and to the emulated plugin. Runtime-level errors (bad configs,
unknown containers) are CniErrors whose `to_json()` is the spec 1.1 error object.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from emu.cni import CniError, Runtime
from emu.cni import errors as codes
from emu.cni.gojson import syntax_error
from tests.linux import real_netns  # noqa: F401  (a fixture)
from tests.test_cni_real import DATA, Pair, load, pair, with_ipam  # noqa: F401  (pair is a fixture)

ERROR_SCHEMA = {
    "type": "object",
    "required": ["cniVersion", "code", "msg", "details"],
    "additionalProperties": False,
    "properties": {"cniVersion": {"type": "string"}, "code": {"type": "integer", "minimum": 1},
                   "msg": {"type": "string"}, "details": {"type": "string"}},
}
BRIDGE = {"cniVersion": "1.0.0", "name": "cbr0", "type": "bridge", "ipam": {}}


def error_of(out: str) -> dict[str, Any]:
    obj = json.loads(out)
    assert set(obj) <= {"code", "msg", "details"} and isinstance(obj["code"], int)
    return obj


# --- against the real plugins ---------------------------------------------------------------------
def spec11(out: str) -> str:
    """A real plugin's output as the emulated one prints it: the emulated plugins also support
    spec 1.1.0, so the list of supported versions in an "incompatible CNI versions" error has it."""
    return out.replace('\\"1.0.0\\"]', '\\"1.0.0\\" \\"1.1.0\\"]')


def raw(pair: Pair, plugin: str, stdin: str, env: dict[str, str]) -> tuple[tuple[int, str], tuple[int, str]]:  # noqa: F811
    (rrc, rout) = pair.run_real(plugin, env, stdin)
    return (rrc, spec11(rout)), pair.run_emu(plugin, env, stdin)


BAD_CONFIGS = [
    ("{bad", 6, "error unmarshall network config: invalid character 'b' looking for beginning of object key string"),
    ('{"cniVersion":"1.0.0","name":"x","type":"bridge"} x', 6,
     "error unmarshall network config: invalid character 'x' after top-level value"),
    ("", 6, "error unmarshall network config: unexpected end of JSON input"),
    ('{"name": tru}', 6, "error unmarshall network config: invalid character '}' in literal true (expecting 'e')"),
    ('{"name": "x",}', 6, "error unmarshall network config: invalid character '}' looking for beginning of object "
                          "key string"),
    ('{"cniVersion":"0.3.1","type":"bridge"}', 7, "missing network name"),
    ('{"cniVersion":"1.0.0","name":5,"type":"bridge"}', 6,
     "error unmarshall network config: json: cannot unmarshal number into Go struct field .name of type string"),
    ('{"cniVersion":1,"name":"x","type":"bridge"}', 6,
     "decoding version from network config: json: cannot unmarshal number into Go struct field .cniVersion of type "
     "string"),
    ('{"cniVersion":"9.9.9","name":"x","type":"bridge"}', 1, "incompatible CNI versions"),
    ('{"cniVersion":"1.0.0","name":"x","type":"bridge","mtu":"x","ipam":{}}', 999,
     "failed to load netconf: json: cannot unmarshal string into Go struct field NetConf.mtu of type int"),
    ('{"cniVersion":"1.0.0","name":"x","type":"bridge","hairpinMode":true,"promiscMode":true,"ipam":{}}', 999,
     None),
    ("[1]", 6, None),
    ('{"cniVersion":"1.0.0","name":"x","type":"bridge","ipam":"host-local"}', 999, None),
    ('{"cniVersion":"1.0.0","name":"x","type":"bridge","isGateway":"yes","ipam":{}}', 999, None),
    ('{"cniVersion":"1.0.0","name":"x","type":"bridge","mtu":1450.5,"ipam":{}}', 999, None),
    ('{"cniVersion":"1.0.0","name":"x","type":"bridge","vlan":5000,"ipam":{}}', 999, None),
]


@pytest.mark.linux
@pytest.mark.parametrize("stdin,code,msg", BAD_CONFIGS, ids=range(len(BAD_CONFIGS)))
def test_bad_configs_like_the_real_bridge(pair: Pair, stdin: str, code: int, msg: str | None) -> None:  # noqa: F811
    p1 = pair.pod("pod1")
    env = pair.env("ADD", "ctr1", p1, "eth0", "")
    (rrc, rout), (erc, eout) = raw(pair, "bridge", stdin, env)
    assert (erc, eout) == (rrc, rout)
    assert rrc == 1 and error_of(rout)["code"] == code
    if msg is not None:
        assert error_of(rout)["msg"] == msg
    if code == 1:
        assert error_of(rout)["details"].startswith('config is "9.9.9", plugin supports ["0.1.0" "0.2.0"')


ENV_CASES = [
    ({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": ""}, "required env variables [CNI_CONTAINERID] missing"),
    ({"CNI_COMMAND": "ADD", "CNI_NETNS": ""}, "required env variables [CNI_NETNS] missing"),
    ({"CNI_COMMAND": "CHECK", "CNI_IFNAME": "", "CNI_PATH": ""}, "required env variables [CNI_IFNAME,CNI_PATH] missing"),
    ({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "", "CNI_NETNS": "", "CNI_IFNAME": "", "CNI_PATH": ""},
     "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH] missing"),
    ({"CNI_COMMAND": "FOO"}, "unknown CNI_COMMAND: FOO"),
    ({"CNI_CONTAINERID": "a b"}, "invalid characters in containerID"),
    ({"CNI_CONTAINERID": "-x"}, "invalid characters in containerID"),
    ({"CNI_IFNAME": "eth0/x"}, "interface name contains / or : or whitespace characters"),
    ({"CNI_IFNAME": "a234567890123456"}, "interface name is too long"),
    ({"CNI_IFNAME": ".."}, "interface name is . or .."),
]


@pytest.mark.linux
def test_invalid_environment_like_the_real_plugins(pair: Pair) -> None:  # noqa: F811
    p1 = pair.pod("pod1")
    for change, msg in ENV_CASES:
        env = {**pair.env("ADD", "ctr1", p1, "eth0", ""), **change}
        for plugin in ("bridge", "host-local", "loopback"):
            (rrc, rout), (erc, eout) = raw(pair, plugin, json.dumps(BRIDGE), env)
            assert (erc, eout) == (rrc, rout), (change, plugin)
            err = error_of(rout)
            assert (err["code"], err["msg"]) == (codes.INVALID_ENVIRONMENT_VARIABLES, msg)
    # DEL needs no CNI_NETNS; VERSION needs nothing but the command; no command prints the about text
    (rrc, rout), (erc, eout) = raw(pair, "host-local", json.dumps(BRIDGE), {**pair.env("DEL", "c", None, "eth0", "")})
    assert (rrc, erc) == (1, 1)  # host-local: no ranges, but the environment was fine
    assert error_of(rout) == error_of(eout) == {"code": 999, "msg": "no IP ranges specified"}
    (rrc, rout), (erc, eout) = raw(pair, "bridge", "", {"CNI_COMMAND": ""})
    assert (rrc, rout) == (erc, eout) == (0, "")


@pytest.mark.linux
def test_version_gates_like_the_real_plugins(pair: Pair) -> None:  # noqa: F811
    p1 = pair.pod("pod1")
    cases = [("CHECK", "0.3.1", 1, "config version does not allow CHECK"),
             ("CHECK", "abc", 6, 'failed to convert major version part "abc": strconv.Atoi: parsing "abc": invalid '
                                 'syntax'),
             ("CHECK", "1.2.3.4", 6, 'invalid version "1.2.3.4": too many parts'),
             ("ADD", "0.4.0.x", 1, "incompatible CNI versions")]
    for command, version, code, msg in cases:
        conf = {**BRIDGE, "cniVersion": version}
        (rrc, rout), (erc, eout) = pair.call("bridge", command, conf, "ctr1", p1)
        assert (erc, eout) == (rrc, spec11(rout))
        assert (error_of(rout)["code"], error_of(rout)["msg"]) == (code, msg)


@pytest.mark.linux
def test_netns_and_plugin_errors_like_the_real_plugins(pair: Pair) -> None:  # noqa: F811
    p1 = pair.pod("pod1")
    gone = "emut-doesnotexist"
    conf = {**BRIDGE, "bridge": "br7"}
    out, _ = pair.same("bridge", "ADD", conf, "ctr1", gone, rc=1)
    assert error_of(out)["msg"] == (f'failed to open netns "/var/run/netns/{gone}": failed to Statfs '
                                    f'"/var/run/netns/{gone}": no such file or directory')
    out, _ = pair.same("loopback", "ADD", load("99-loopback.conf"), "ctr1", gone, ifname="lo", rc=1)
    assert error_of(out)["msg"] == f'failed to Statfs "/var/run/netns/{gone}": no such file or directory'
    # an IPAM plugin that is not in CNI_PATH: the real plugin has made the veth by then, and leaves it
    out, _ = pair.same("bridge", "ADD", {**conf, "ipam": {"type": "nosuch"}}, "ctr1", p1, rc=1)
    assert error_of(out) == {"code": 999, "msg": 'failed to find plugin "nosuch" in path [/usr/lib/cni]'}
    pair.assert_state()
    # the pod's eth0 is taken now
    out, _ = pair.same("bridge", "ADD", conf, "ctr2", p1, rc=1)
    assert error_of(out)["msg"] == "container veth name provided (eth0) already exists"
    # DEL of a container that was never added, and DEL without a netns, succeed silently
    pair.same("bridge", "DEL", with_ipam(load("10-flannel-bridge.conf"), pair.data_dir), "nobody", p1, ifname="eth5")
    pair.same("bridge", "DEL", with_ipam(load("10-flannel-bridge.conf"), pair.data_dir), "nobody", None)
    pair.same("bridge", "DEL", with_ipam(load("10-flannel-bridge.conf"), pair.data_dir), "nobody", gone)
    pair.assert_files()


@pytest.mark.linux
def test_host_local_errors_like_the_real_plugin(pair: Pair) -> None:  # noqa: F811
    p1 = pair.pod("pod1")
    small = with_ipam(load("10-flannel-bridge.conf", cniVersion="1.0.0"), pair.data_dir,
                      ranges=[[{"subnet": "10.9.0.0/30"}]])
    out, _ = pair.same("host-local", "ADD", small, "c1", p1)
    assert json.loads(out)["ips"][0]["address"] == "10.9.0.2/30"
    out, _ = pair.same("host-local", "ADD", small, "c1", p1, rc=1)
    assert error_of(out)["msg"] == ("failed to allocate for range 0: 10.9.0.2 has been allocated to c1, duplicate "
                                    "allocation is not allowed")
    out, _ = pair.same("host-local", "ADD", small, "c2", p1, rc=1)
    assert error_of(out) == {"code": 999, "msg": "failed to allocate for range 0: no IP addresses available in range "
                                                 "set: 10.9.0.1-10.9.0.2"}
    out, _ = pair.same("host-local", "CHECK", small, "c9", p1, rc=1)
    assert error_of(out)["msg"] == "host-local: Failed to find address added by container c9"
    pair.same("host-local", "CHECK", small, "c1", p1)
    pair.same("host-local", "DEL", small, "c9", p1)  # unknown container: fine
    pair.same("host-local", "DEL", small, "c1", p1)
    pair.same("host-local", "DEL", small, "c1", p1)
    pair.assert_files()
    wide = with_ipam(small, pair.data_dir, ranges=[[{"subnet": "10.9.1.0/24"}]])
    k8s = "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web"
    out, _ = pair.same("host-local", "ADD", wide, "c3", p1, args=k8s, rc=1)
    assert error_of(out)["msg"] == 'ARGS: unknown args ["K8S_POD_NAMESPACE=default" "K8S_POD_NAME=web"]'
    pair.same("host-local", "ADD", wide, "c3", p1, args="IgnoreUnknown=1;" + k8s)
    out, _ = pair.same("host-local", "ADD", wide, "c4", p1, args="IgnoreUnknown=1;IP=10.9.1.77")
    assert json.loads(out)["ips"][0]["address"] == "10.9.1.77/24"
    out, _ = pair.same("host-local", "ADD", wide, "c5", p1, args="IP=10.9.1.77", rc=1)
    assert "requested IP address 10.9.1.77 is not available" in error_of(out)["msg"]
    pair.same("host-local", "ADD", wide, "c6", p1, args="IP=10.9.1.1", rc=1)  # the gateway
    pair.same("host-local", "ADD", wide, "c6", p1, args="IP=10.9.2.1", rc=1)  # outside the range set
    pair.same("host-local", "ADD", wide, "c6", p1, args="IgnoreUnknown=maybe", rc=1)
    pair.same("host-local", "ADD", wide, "c6", p1, args="novalue", rc=1)
    pair.assert_files()
    for ranges in ([[{"subnet": "10.9.2.1/24"}]], [[{"subnet": "10.9.2.0/31"}]], [[{"subnet": "10.9.2.0/33"}]],
                   [[{"subnet": "10.9.2.0/24", "rangeStart": "10.9.3.1"}]], [[]],
                   [[{"subnet": "10.9.2.0/24"}], [{"subnet": "10.9.2.0/25"}]]):
        out, _ = pair.same("host-local", "ADD", with_ipam(wide, pair.data_dir, ranges=ranges), "c7", p1, rc=1)
        assert error_of(out)["code"] == 999


# --- the runtime's own errors: spec 1.1 JSON ----------------------------------------------------------
@pytest.fixture
def world(make_lab):  # noqa: ANN001, ANN201
    lab = make_lab()
    node = lab.netns("node1")
    return lab, node, Runtime(lab, node)


def spec_error(exc: CniError, code: int) -> dict[str, Any]:
    obj = exc.to_json()
    jsonschema.validate(obj, ERROR_SCHEMA)
    assert obj["code"] == code, obj
    return obj


CONFLIST = json.loads((DATA / "10-flannel.conflist").read_text())


@pytest.mark.parametrize("conf,code", [
    ("{bad", codes.DECODING_FAILURE),
    ("[1, 2]", codes.DECODING_FAILURE),
    ({"cniVersion": "1.0.0", "plugins": [{"type": "bridge"}]}, codes.INVALID_NETWORK_CONFIG),  # no name
    ({"cniVersion": "1.0.0", "name": "n"}, codes.INVALID_NETWORK_CONFIG),  # no type, no plugins
    ({"cniVersion": "1.0.0", "name": "n", "plugins": []}, codes.INVALID_NETWORK_CONFIG),
    ({"cniVersion": "1.0.0", "name": "n", "plugins": {}}, codes.INVALID_NETWORK_CONFIG),
    ({"cniVersion": "1.0.0", "name": "n", "plugins": [{"name": "x"}]}, codes.INVALID_NETWORK_CONFIG),
    ({"cniVersion": "1.0.0", "name": "bad name", "type": "bridge"}, codes.INVALID_NETWORK_CONFIG),
    ({"cniVersion": "1.0.0", "name": 7, "plugins": [{"type": "bridge"}]}, codes.INVALID_NETWORK_CONFIG),
    ({"cniVersion": "9.9.9", "name": "n", "type": "bridge"}, codes.INCOMPATIBLE_CNI_VERSION),
    ({"cniVersions": ["7.0.0"], "name": "n", "plugins": [{"type": "bridge"}]}, codes.INCOMPATIBLE_CNI_VERSION),
    ({"cniVersion": "1.0.0", "name": "n", "type": "bridge", "mtu": "x", "ipam": {}}, codes.INTERNAL),
])
def test_runtime_config_errors(world, conf: Any, code: int) -> None:  # noqa: ANN001
    lab, _node, rt = world
    pod = lab.netns("pod1")
    with pytest.raises(CniError) as info:
        rt.add(conf, "ctr1", pod)
    spec_error(info.value, code)


def test_runtime_env_errors(world) -> None:  # noqa: ANN001
    lab, _node, rt = world
    pod = lab.netns("pod1")
    for cid, ifname, code in (("", "eth0", codes.UNKNOWN_CONTAINER), ("a b", "eth0", codes.INVALID_ENVIRONMENT_VARIABLES),
                              ("c1", "eth0/1", codes.INVALID_ENVIRONMENT_VARIABLES),
                              ("c1", "", codes.INVALID_ENVIRONMENT_VARIABLES)):
        with pytest.raises(CniError) as info:
            rt.add(CONFLIST, cid, pod, ifname)
        spec_error(info.value, code)
    with pytest.raises(CniError) as info:
        rt.add(CONFLIST, "c1", "nosuchpod")
    obj = spec_error(info.value, codes.INTERNAL)
    assert obj["msg"].startswith('failed to open netns "/var/run/netns/nosuchpod"')
    assert 'plugin type="bridge" failed (add)' in str(info.value)


def test_exhaustion_through_the_runtime(world) -> None:  # noqa: ANN001
    lab, node, rt = world
    conf = json.loads(json.dumps(CONFLIST))
    conf["plugins"][0]["ipam"]["ranges"] = [[{"subnet": "10.244.1.0/24", "rangeStart": "10.244.1.2",
                                               "rangeEnd": "10.244.1.3"}]]
    rt.add(conf, "c1", lab.netns("p1"))
    rt.add(conf, "c2", lab.netns("p2"))
    with pytest.raises(CniError) as info:
        rt.add(conf, "c3", lab.netns("p3"))
    obj = spec_error(info.value, codes.INTERNAL)
    assert obj == {"cniVersion": "1.0.0", "code": 999, "details": "",
                   "msg": "failed to allocate for range 0: no IP addresses available in range set: "
                          "10.244.1.2-10.244.1.3"}
    assert "/var/lib/cni/results/cbr0-c3-eth0" not in node.files  # a failed ADD is not cached
    rt.delete(conf, "c3", lab.namespaces["p3"])  # the runtime cleans up after the failed ADD
    assert "eth0" not in lab.namespaces["p3"].links


def test_check_and_delete_of_unknown_containers(world) -> None:  # noqa: ANN001
    lab, node, rt = world
    pod = lab.netns("pod1")
    with pytest.raises(CniError) as info:
        rt.check(CONFLIST, "ghost", pod)
    obj = spec_error(info.value, codes.UNKNOWN_CONTAINER)
    assert "no cached result" in obj["details"]
    rt.delete(CONFLIST, "ghost", pod)  # DEL of an unknown container succeeds
    rt.delete(CONFLIST, "ghost", None)
    old = {**CONFLIST, "cniVersion": "0.3.1"}
    with pytest.raises(CniError) as info:
        rt.check(old, "ghost", pod)
    spec_error(info.value, codes.INCOMPATIBLE_CNI_VERSION)
    assert not [p for p in node.files if "/results/" in p]


def test_unknown_plugin_type(world) -> None:  # noqa: ANN001
    lab, _node, rt = world
    with pytest.raises(CniError) as info:
        rt.add({"cniVersion": "1.0.0", "name": "n", "type": "calico"}, "c1", lab.netns("p1"))
    assert info.value.msg == 'failed to find plugin "calico" in path [/opt/cni/bin]'
    rc, out, _ = rt.invoke("nosuch", "VERSION", "")
    assert rc == 1 and json.loads(out)["code"] == 999


def test_no_network_on_the_node(world) -> None:  # noqa: ANN001
    _lab, node, rt = world
    with pytest.raises(CniError) as info:
        rt.network()
    spec_error(info.value, codes.INVALID_NETWORK_CONFIG)
    node.write_file("/etc/cni/net.d/00-broken.conflist", "{nope")
    node.write_file("/etc/cni/net.d/05-notes.txt", "not a config")
    with pytest.raises(CniError) as info:
        rt.network()
    assert "00-broken.conflist" in info.value.details


def test_go_scanner_messages() -> None:
    assert syntax_error('{"a":1}') is None
    assert syntax_error("[1,]") == "invalid character ']' looking for beginning of value"
    assert syntax_error('{"a" 1}') == "invalid character '1' after object key"
    assert syntax_error('{"a":1 "b"}') == "invalid character '\"' after object key:value pair"
    assert syntax_error("[1 2]") == "invalid character '2' after array element"
    assert syntax_error('"a\\x"') == "invalid character 'x' in string escape code"
    assert syntax_error("-x") == "invalid character 'x' in numeric literal"
    assert syntax_error("1.e") == "invalid character 'e' after decimal point in numeric literal"
    assert syntax_error("1e+") == "unexpected end of JSON input"
    assert syntax_error('"\x01"') == "invalid character '\\x01' in string literal"
    assert syntax_error("NaN") == "invalid character 'N' looking for beginning of value"
