"""CNI: the runtime (libcni's job) and emulated plugins (bridge, host-local, loopback, ptp, portmap).

The plugins change emulated namespaces through the Namespace API as the real ones do through
netlink and iptables, and speak the real protocol: CNI_* environment, config on stdin, result or
error JSON on stdout, byte for byte as containernetworking-plugins v1.1.1 prints them.
"""

from emu.cni.config import NetworkList, load_default_network, parse_conf, parse_conflist, parse_network
from emu.cni.errors import CniError
from emu.cni.registry import default_registry
from emu.cni.runtime import Runtime, RuntimeConf
from emu.cni.skel import Call, Step, netns_path

__all__ = [
    "Call", "CniError", "NetworkList", "Runtime", "RuntimeConf", "Step", "default_registry",
    "load_default_network", "netns_path", "parse_conf", "parse_conflist", "parse_network",
]
