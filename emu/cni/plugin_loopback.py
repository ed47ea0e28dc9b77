"""The `loopback` plugin: brings `lo` up in the pod (ADD) or down (DEL), whatever CNI_IFNAME says.

Its result is built as a 1.0 result stamped with the config's cniVersion, so an 0.3.1 result has
no `"version"` fields (as the real plugin prints it); with a prevResult it passes that through.
"""

from __future__ import annotations

from emu.cni import gojson
from emu.cni.errors import fail
from emu.cni.result import SUPPORTED_VERSIONS, parse_result, result_text
from emu.cni.skel import CmdArgs, NetnsNotFound
from emu.net.addr import int2ip


def _parse(args: CmdArgs) -> dict:
    conf = args.conf()
    err = gojson.check_fields(conf, {"cniVersion": "string", "name": "string", "type": "string"}, "NetConf")
    if err:
        raise fail(f"failed to parse network config: {err}")
    return conf


class Loopback:
    """The `loopback` plugin."""

    name = "loopback"
    supported_versions = SUPPORTED_VERSIONS

    def cmd_add(self, args: CmdArgs) -> str:
        conf = _parse(args)
        version = str(conf.get("cniVersion") or "")
        prev = conf.get("prevResult")
        prev_result = parse_result(prev, version) if prev is not None else None
        pod = args.host.netns(args.netns)
        lo = pod.links.get("lo")
        if lo is None:
            raise fail("Link not found")
        pod.link_set("lo", up=True)
        args.host.note(self.name, pod, "lo", "lo up (127.0.0.1/8)")
        for a in lo.addrs:
            if not int2ip(a.local).startswith("127."):
                raise fail(f"loopback interface found with non-loopback address {gojson.quote(int2ip(a.local))}")
        if prev_result is not None:
            return result_text(prev_result, version)
        result = {"cniVersion": version, "interfaces": [{"name": "lo", "mac": "00:00:00:00:00:00",
                                                          "sandbox": args.netns}]}
        if lo.addrs:
            result["ips"] = [{"interface": 0, "address": f"{int2ip(lo.addrs[0].local)}/{lo.addrs[0].plen}"}]
        result["dns"] = {}
        return result_text(result, version or "0.1.0", layout="1.0.0")

    def cmd_del(self, args: CmdArgs) -> str:
        if not args.netns:
            return ""
        try:
            pod = args.host.netns(args.netns)
        except NetnsNotFound:
            return ""
        if "lo" not in pod.links:
            raise fail("Link not found")
        pod.link_set("lo", up=False)
        args.host.note(self.name, pod, "lo", "lo down")
        return ""

    def cmd_check(self, args: CmdArgs) -> str:
        pod = args.host.netns(args.netns)
        lo = pod.links.get("lo")
        if lo is None:
            raise fail("Link not found")
        if not lo.up:
            raise fail("loopback interface is down")
        return ""
