"""The emulated Linux kernel: namespaces, links, routes, neighbours, bridges, tunnels."""

from emu.net.errors import NetError
from emu.net.lab import Lab
from emu.net.namespace import Namespace

__all__ = ["Lab", "Namespace", "NetError"]
