"""libcni's result cache: one file per attachment (network, container ID, interface) on the node.

`<cacheDir>/results/<network>-<containerID>-<ifname>` holds, as libcni writes it, `{"kind":
"cniCacheV1", "containerId", "config" (the list's bytes, base64), "ifName", "networkName",
"netns", "cniArgs", "capabilityArgs", "result"}`. DEL and CHECK read the result back as the
plugins' prevResult; GC walks the files to find attachments that are no longer valid.
"""

from __future__ import annotations

import base64
import json
import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from emu.cni import gojson

if TYPE_CHECKING:
    from emu.net.namespace import Namespace

CACHE_DIR = "/var/lib/cni"
KIND = "cniCacheV1"


@dataclass
class Attachment:
    """One cached attachment."""

    network: str
    container_id: str
    ifname: str
    netns: str
    cni_args: list[tuple[str, str]]
    capability_args: dict[str, Any]
    result: dict[str, Any] | None
    config: bytes
    path: str


class ResultCache:
    """The cache files in the node namespace's `files`."""

    def __init__(self, node: Namespace, cache_dir: str = CACHE_DIR) -> None:
        self.node = node
        self.dir = posixpath.join(cache_dir, "results")

    def path(self, network: str, container_id: str, ifname: str) -> str:
        return posixpath.join(self.dir, f"{network}-{container_id}-{ifname}")

    def add(self, network: str, container_id: str, ifname: str, netns: str, cni_args: list[tuple[str, str]],
            capability_args: dict[str, Any], config: bytes, result: dict[str, Any]) -> str:
        info: dict[str, Any] = {"kind": KIND, "containerId": container_id,
                                "config": base64.b64encode(config).decode(), "ifName": ifname,
                                "networkName": network}
        if netns:
            info["netns"] = netns
        if cni_args:
            info["cniArgs"] = [list(p) for p in cni_args]
        if capability_args:
            info["capabilityArgs"] = capability_args
        info["result"] = result
        path = self.path(network, container_id, ifname)
        self.node.files[path] = gojson.marshal(info)
        return path

    def get(self, network: str, container_id: str, ifname: str) -> Attachment | None:
        return self._read(self.path(network, container_id, ifname))

    def delete(self, network: str, container_id: str, ifname: str) -> None:
        self.node.files.pop(self.path(network, container_id, ifname), None)

    def _read(self, path: str) -> Attachment | None:
        text = self.node.files.get(path)
        if text is None:
            return None
        try:
            info = json.loads(text)
        except ValueError:
            return None
        if not isinstance(info, dict) or info.get("kind") != KIND:
            return None
        return Attachment(str(info.get("networkName", "")), str(info.get("containerId", "")),
                          str(info.get("ifName", "")), str(info.get("netns", "")),
                          [(str(k), str(v)) for k, v in info.get("cniArgs") or []],
                          dict(info.get("capabilityArgs") or {}), info.get("result"),
                          base64.b64decode(info.get("config") or ""), path)

    def attachments(self, network: str | None = None) -> list[Attachment]:
        """libcni's GetCachedAttachments: every readable cache file (of one network)."""
        prefix = self.dir + "/"
        out = []
        for path in sorted(p for p in self.node.files if p.startswith(prefix)):
            att = self._read(path)
            if att is not None and (network is None or att.network == network):
                out.append(att)
        return out
