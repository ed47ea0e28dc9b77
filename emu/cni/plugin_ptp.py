"""The `ptp` plugin (containernetworking-plugins v1.1.1): a veth pair per pod and routes, no bridge.

ADD: IPAM first, ip_forward on, then in the pod: the veth pair, the IPAM addresses and routes on the
pod end, the kernel's connected route replaced by `GW/32 dev eth0 scope link src IP` and
`SUBNET via GW dev eth0 src IP` (so everything, the subnet included, goes through the host); on the
node: the gateway as a /32 on the host end and a host-scope route to the pod's IP through it.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from emu.cni import gojson
from emu.cni.errors import CniError, fail
from emu.cni.netops import (
    HOST_END,
    HOST_ROUTES,
    POD_ROUTES,
    addr_add,
    configure_iface,
    del_link_by_name_addr,
    enable_ip_forward,
    format_chain_name,
    format_comment,
    netns_or_error,
    setup_ip_masq,
    setup_veth,
    teardown_ip_masq,
)
from emu.cni.plugin_bridge import check_interface_ips, check_routes, ipam_passthrough
from emu.cni.result import SUPPORTED_VERSIONS, parse_result, result_text
from emu.cni.skel import CmdArgs, NetnsNotFound
from emu.net.errors import NetError

FIELDS = {"ipMasq": "bool", "mtu": "int", "name": "string", "type": "string", "cniVersion": "string",
          "ipam": "struct:types.IPAM", "dns": "struct:types.DNS"}


def _conf(args: CmdArgs) -> dict[str, Any]:
    conf = args.conf()
    err = gojson.check_fields(conf, FIELDS, "NetConf")
    if err:
        raise fail(f"failed to load netconf: {err}")
    return conf


class Ptp:
    """The `ptp` plugin."""

    name = "ptp"
    supported_versions = SUPPORTED_VERSIONS

    def cmd_add(self, args: CmdArgs) -> str:
        conf = _conf(args)
        host = args.host
        ipam_type = str((conf.get("ipam") or {}).get("type", ""))
        result = host.delegate(ipam_type, "ADD", args)
        assert result is not None
        try:
            out = self._add(args, conf, result)
        except CniError:
            try:
                host.delegate(ipam_type, "DEL", args)
            except CniError:
                pass
            raise
        return out

    def _add(self, args: CmdArgs, conf: dict[str, Any], result: dict[str, Any]) -> str:
        host = args.host
        node = host.node
        if not result.get("ips"):
            raise fail("IPAM plugin returned missing IP config")
        enable_ip_forward(host, self.name)
        pod = netns_or_error(host, args.netns)
        mtu = int(conf.get("mtu") or 0)
        host_iface, cont_iface = setup_veth(host, self.name, pod, args.ifname, mtu)
        cont_iface["sandbox"] = args.netns
        for ipc in result["ips"]:
            ipc["interface"] = 1
        result["interfaces"] = [host_iface, cont_iface]
        configure_iface(host, self.name, pod, args.ifname, result)
        for ipc in result["ips"]:
            iface = ipaddress.ip_interface(ipc["address"])
            net = iface.network
            try:
                pod.route_del(str(net), dev=args.ifname)
                pod.route_add(f"{ipc['gateway']}/32", dev=args.ifname, scope="link", src=str(iface.ip))
                pod.route_add(str(net), via=ipc["gateway"], dev=args.ifname, src=str(iface.ip))
            except NetError as exc:
                raise fail(f"failed to add route {net}: {exc.message}") from None
            host.note(self.name, pod, args.ifname, f"pod routes: {net} now via {ipc['gateway']}; "
                      f"{ipc['gateway']} dev {args.ifname} scope link", POD_ROUTES)
        veth = host_iface["name"]
        for ipc in result["ips"]:
            ip = ipc["address"].split("/")[0]
            try:
                addr_add(node, veth, f"{ipc['gateway']}/32")
            except NetError as exc:
                raise fail(f"failed to add IP addr ({ipc['gateway']}/32) to veth: {exc.message}") from None
            host.note(self.name, node, veth, f"host end: gateway {ipc['gateway']}/32 on {veth}", HOST_END)
            try:
                node.route_add(f"{ip}/32", dev=veth, scope="host")
            except NetError as exc:
                if "exists" not in exc.message:
                    raise fail(f"failed to add route on host: {exc.message}") from None
            host.note(self.name, node, veth, f"host route: {ip} dev {veth} scope host", HOST_ROUTES)
        if conf.get("ipMasq"):
            chain = format_chain_name(str(conf.get("name", "")), args.container_id)
            comment = format_comment(str(conf.get("name", "")), args.container_id)
            for ipc in result["ips"]:
                setup_ip_masq(host, self.name, ipc["address"], chain, comment)
        dns = conf.get("dns") or {}
        if any(dns.get(k) for k in ("nameservers", "domain", "search", "options")):
            result["dns"] = dns
        return result_text(result, str(conf.get("cniVersion") or "0.1.0"))

    def cmd_del(self, args: CmdArgs) -> str:
        conf = _conf(args)
        host = args.host
        host.delegate(str((conf.get("ipam") or {}).get("type", "")), "DEL", args)
        if not args.netns:
            return ""
        try:
            pod = host.netns(args.netns)
        except NetnsNotFound:
            return ""
        ipnets = del_link_by_name_addr(pod, args.ifname)
        if ipnets is not None:
            host.note(self.name, pod, args.ifname, f"deleted {args.ifname} and its veth peer")
        if ipnets and conf.get("ipMasq"):
            chain = format_chain_name(str(conf.get("name", "")), args.container_id)
            comment = format_comment(str(conf.get("name", "")), args.container_id)
            for cidr in ipnets:
                teardown_ip_masq(host, self.name, cidr, chain, comment)
        return ""

    def cmd_gc(self, args: CmdArgs) -> str:
        return ipam_passthrough(args, "GC")

    def cmd_status(self, args: CmdArgs) -> str:
        return ipam_passthrough(args, "STATUS")

    def cmd_check(self, args: CmdArgs) -> str:
        conf = _conf(args)
        host = args.host
        pod = netns_or_error(host, args.netns)
        host.delegate(str((conf.get("ipam") or {}).get("type", "")), "CHECK", args)
        if conf.get("prevResult") is None:
            raise fail("Required prevResult missing")
        result = parse_result(conf["prevResult"], str(conf.get("cniVersion") or ""))
        cont = next((i for i in result.get("interfaces", []) if i["name"] == args.ifname), None)
        if cont is None or cont.get("sandbox") != args.netns:
            raise fail(f"Sandbox in prevResult {cont.get('sandbox', '') if cont else ''} doesn't match configured "
                       f"netns: {args.netns}")
        link = pod.links.get(args.ifname)
        if link is None:
            raise fail(f"Interface name {args.ifname} not found")
        check_interface_ips(pod, args.ifname, result.get("ips", []))
        check_routes(pod, result.get("routes", []))
        return ""
