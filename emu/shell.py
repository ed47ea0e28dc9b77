"""`emu shell`: a Mininet-style prompt over a scenario's world (`h1 ping -c 2 h2`, `r1 ip route`)."""

from __future__ import annotations

import cmd
import shlex
import sys
from typing import IO

from emu.net.addr import int2ip
from emu.net.route import SCOPE_UNIVERSE
from emu.scenario.loader import ScenarioError
from emu.scenario.runner import Run

NS_COMMANDS = ["ip", "bridge", "route", "arp", "sysctl", "cat", "ping", "traceroute", "echo"]
IP_OBJECTS = ["link", "address", "route", "neigh", "netns"]
IP_VERBS = {"link": ["show", "set", "add", "del"], "address": ["show", "add", "del", "flush"],
            "route": ["show", "get", "add", "del", "replace", "append", "flush"],
            "neigh": ["show", "add", "del", "flush"], "netns": ["list", "add", "exec"]}


class EmuShell(cmd.Cmd):
    """Lines are `NAMESPACE COMMAND...`, or a shell command: nodes, trace, time, help, exit."""

    intro = "emu shell: NAMESPACE COMMAND (e.g. `pc1 ping -c 2 pc3`), `nodes`, `trace NS ADDR`, `exit`."
    prompt = "emu> "

    def __init__(self, runner: Run, stdin: IO[str] | None = None, stdout: IO[str] | None = None) -> None:
        super().__init__(stdin=stdin, stdout=stdout or sys.stdout)
        if stdin is not None:
            self.use_rawinput = False
        self.runner = runner
        assert runner.lab is not None
        self.lab = runner.lab

    # --- helpers -----------------------------------------------------------------
    def _print(self, text: str) -> None:
        if text:
            self.stdout.write(text if text.endswith("\n") else text + "\n")

    def _address_of(self, name: str) -> str | None:
        """Mininet's convenience: a namespace name stands for its first global address."""
        ns = self.lab.namespaces.get(name)
        if ns is None:
            return None
        for link in ns.sorted_links():
            for a in link.addrs:
                if a.scope == SCOPE_UNIVERSE:
                    return int2ip(a.local)
        return None

    def emptyline(self) -> bool:
        return False

    def default(self, line: str) -> bool:
        try:
            words = shlex.split(line)
        except ValueError as exc:
            self._print(f"*** {exc}")
            return False
        if words and words[0] in ("EOF",):
            return True
        if not words or words[0] not in self.lab.namespaces:
            self._print(f"*** unknown namespace or command: {words[0] if words else line!r} "
                        f"(namespaces: {', '.join(self.lab.namespaces)}; try `help`)")
            return False
        ns, rest = words[0], words[1:]
        if rest and rest[0] in ("ping", "traceroute"):
            rest = [rest[0]] + [self._address_of(w) or w for w in rest[1:]]
        res = self.lab[ns].run(shlex.join(rest))
        self._print(res.stdout + res.stderr)
        return False

    # --- commands ---------------------------------------------------------------------
    def do_nodes(self, arg: str) -> bool:
        """nodes: list the namespaces and their interfaces."""
        for name, ns in self.lab.namespaces.items():
            links = ", ".join(lk.ifname for lk in ns.sorted_links() if lk.ifname != "lo")
            self._print(f"{name}: {links}")
        return False

    def do_time(self, arg: str) -> bool:
        """time: the virtual clock."""
        self._print(f"{self.lab.clock.now:.6f} s")
        return False

    def do_trace(self, arg: str) -> bool:
        """trace NS ADDR[:PORT] [icmp|udp|tcp]: send one packet and print its journey hop by hop."""
        from emu.scenario.probe import parse_target, send_probe
        from emu.trace import render_journey

        words = arg.split()
        if len(words) < 2 or words[0] not in self.lab.namespaces:
            self._print("usage: trace NS ADDR[:PORT] [icmp|udp|tcp]")
            return False
        target = self._address_of(words[1]) or words[1]
        try:
            addr, port = parse_target(target)
            proto = words[2] if len(words) > 2 else ("udp" if port else "icmp")
            if proto not in ("icmp", "udp", "tcp"):
                raise ScenarioError("trace", f"unknown protocol {proto!r} (icmp, udp or tcp)")
            pid, flow = send_probe(self.lab[words[0]], addr, port, proto)
        except ScenarioError as exc:
            self._print(f"*** {exc}")
            return False
        self._print(f"Flow: {flow}\n\n" + render_journey(self.lab.decisions(pid)))
        return False

    def do_exit(self, arg: str) -> bool:
        """exit: leave the shell (also quit, Ctrl-D)."""
        return True

    do_quit = do_exit
    do_EOF = do_exit

    # --- completion ------------------------------------------------------------------------
    def completenames(self, text: str, *ignored: object) -> list[str]:
        names = [n for n in self.lab.namespaces if n.startswith(text)]
        return names + super().completenames(text, *ignored)

    def completedefault(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        words = line[:begidx].split()
        if not words or words[0] not in self.lab.namespaces:
            return []
        if len(words) == 1:
            return [c for c in NS_COMMANDS if c.startswith(text)]
        if words[1] == "ip":
            if len(words) == 2:
                return [o for o in IP_OBJECTS if o.startswith(text)]
            if len(words) == 3:
                obj = next((o for o in IP_OBJECTS if o.startswith(words[2])), "")
                return [v for v in IP_VERBS.get(obj, []) if v.startswith(text)]
        if words[1] in ("ping", "traceroute"):
            return [n for n in self.lab.namespaces if n.startswith(text)]
        ns = self.lab.namespaces[words[0]]
        return [lk for lk in ns.links if lk.startswith(text)]

    def complete_trace(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        words = line[:begidx].split()
        if len(words) <= 2:
            return [n for n in self.lab.namespaces if n.startswith(text)]
        return [p for p in ("icmp", "udp", "tcp") if p.startswith(text)]
