"""The plugins the emulated nodes have, by `type` (what CNI_PATH holds on a real node)."""

from __future__ import annotations

from emu.cni.ipam_host_local import HostLocal
from emu.cni.plugin_bridge import BridgePlugin
from emu.cni.plugin_flannel import FlannelPlugin
from emu.cni.plugin_loopback import Loopback
from emu.cni.plugin_portmap import Portmap
from emu.cni.plugin_ptp import Ptp
from emu.cni.skel import Plugin


def default_registry() -> dict[str, Plugin]:
    """A fresh mapping of plugin type to implementation."""
    return {
        "bridge": BridgePlugin(),
        "flannel": FlannelPlugin(),
        "host-local": HostLocal(),
        "loopback": Loopback(),
        "portmap": Portmap(),
        "ptp": Ptp(),
    }


PLUGIN_TYPES = tuple(default_registry())
