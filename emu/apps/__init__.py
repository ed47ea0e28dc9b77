"""Host applications: ping, traceroute, UDP and TCP endpoints. Importing this registers their shell commands."""

from emu.apps import ping, traceroute
from emu.net.shell import register

register("ping", ping.ping_command)
register("traceroute", traceroute.traceroute_command)
