"""The shell front end: iproute2, net-tools, sysctl and cat command lines, plus registered apps.

Each command line parses into the namespace API and returns what the real tool would:
exit code, stdout and stderr. Host applications (ping, traceroute) live a layer up in
`emu.apps` and register their commands here, so this module never imports them; the first
unknown command loads that package once, the way a plugin entry point would.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from emu.net import show
from emu.net.addr import ip2int, parse_prefix
from emu.net.errors import NetError
from emu.net.route import ROUTE_TYPES

if TYPE_CHECKING:
    from emu.net.namespace import Namespace


@dataclass(frozen=True)
class Result:
    """What a command printed and returned."""

    rc: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.rc == 0


class Usage(Exception):
    """A command line the real tool rejects while parsing."""

    def __init__(self, message: str, rc: int = 1) -> None:
        super().__init__(message)
        self.message, self.rc = message, rc


IP_OBJECTS = ("link", "address", "route", "neighbour", "neighbor", "netns")
APP_PACKAGES = ("emu.apps",)

AppCommand = Callable[["Namespace", list[str]], Result]
APPS: dict[str, AppCommand] = {}
_apps_loaded = False


def register(name: str, command: AppCommand) -> None:
    """Makes `name ARGS...` run `command(ns, args)` in every namespace's shell."""
    APPS[name] = command


def _load_apps() -> None:
    global _apps_loaded
    if not _apps_loaded:
        import importlib

        _apps_loaded = True
        for pkg in APP_PACKAGES:
            importlib.import_module(pkg)


def _match(word: str, options: tuple[str, ...]) -> str | None:
    """iproute2's `matches()`: any non-empty prefix of an option selects it (first wins)."""
    for opt in options:
        if word and opt.startswith(word):
            return opt
    return None


class Shell:
    """Runs command lines in one namespace."""

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns
        self.commands: dict[str, Callable[[list[str]], Result]] = {
            "ip": self.ip, "bridge": self.bridge, "route": self.route, "arp": self.arp, "sysctl": self.sysctl,
            "cat": self.cat, "echo": self.echo, "iptables": self.iptables, "iptables-save": self.iptables_save,
            "iptables-restore": self.iptables_restore, "conntrack": self.conntrack,
        }
        self.stdin = ""

    def run(self, line: str, stdin: str = "") -> Result:
        self.stdin = stdin
        try:
            argv = shlex.split(line, comments=True)
        except ValueError as exc:
            return Result(2, "", f"sh: syntax error: {exc}\n")
        if not argv:
            return Result(0)
        cmd = self.commands.get(argv[0])
        if cmd is None:
            _load_apps()
            app = APPS.get(argv[0])
            if app is None:
                return Result(127, "", f"sh: 1: {argv[0]}: not found\n")
            cmd = lambda args: app(self.ns, args)  # noqa: E731
        try:
            return cmd(argv[1:])
        except Usage as exc:
            return Result(exc.rc, "", exc.message + "\n")
        except NetError as exc:
            return Result(exc.rc, "", exc.message + "\n")

    # --- ip ------------------------------------------------------------------------
    def ip(self, args: list[str]) -> Result:
        as_json = stats = details = False
        ns = self.ns
        while args and args[0].startswith("-"):
            opt = args.pop(0)
            if opt in ("-j", "-json"):
                as_json = True
            elif opt in ("-s", "-stats", "-statistics"):
                stats = True
            elif opt in ("-d", "-details"):
                details = True
            elif opt in ("-4", "-p", "-pretty"):
                continue
            elif opt in ("-n", "-netns"):
                if not args:
                    raise Usage('Option "-n" requires an argument', 255)
                ns = ns.lab[args.pop(0)]
            else:
                raise Usage(f'Option "{opt}" is unknown, try "ip -help".', 255)
        if not args:
            raise Usage("Usage: ip [ OPTIONS ] OBJECT { COMMAND | help }", 255)
        obj = _match(args[0], IP_OBJECTS)
        if obj is None:
            raise Usage(f'Object "{args[0]}" is unknown, try "ip help".', 1)
        rest = args[1:]
        sub = Shell(ns) if ns is not self.ns else self
        if obj == "link":
            return sub._ip_link(rest, as_json, stats, details)
        if obj == "address":
            return sub._ip_addr(rest, as_json)
        if obj == "route":
            return sub._ip_route(rest, as_json)
        if obj == "netns":
            return sub._ip_netns(rest)
        return sub._ip_neigh(rest, as_json)

    def _ip_link(self, args: list[str], as_json: bool, stats: bool = False, details: bool = False) -> Result:
        cmd = args[0] if args else "show"
        a = args[1:]
        if _match(cmd, ("show", "list")) or cmd == "lst":
            dev = self._dev_arg(a)
            return Result(0, show.ip_link(self.ns, dev, as_json=as_json, stats=stats, details=details))
        if cmd == "add":
            return self._link_add(a)
        if _match(cmd, ("delete",)):
            dev = self._dev_arg(a)
            if dev is None:
                raise Usage('Not enough information: "dev" argument is required.', 255)
            self.ns.link_del(dev)
            return Result(0)
        if cmd == "set":
            return self._link_set(a)
        raise Usage(f'Command "{cmd}" is unknown, try "ip link help".', 255)

    @staticmethod
    def _dev_arg(a: list[str]) -> str | None:
        if not a:
            return None
        if a[0] == "dev":
            if len(a) < 2:
                raise Usage('Command line is not complete. Try option "help"', 255)
            return a[1]
        return a[0]

    def _link_add(self, a: list[str]) -> Result:
        name = None
        kind = None
        opts: dict[str, object] = {}
        mtu = mac = None
        peer = None
        peer_ns = None
        i = 0
        while i < len(a):
            w = a[i]
            if w == "name" or (name is None and w not in ("type", "mtu", "address", "link", "txqueuelen", "txqlen",
                                                            "qlen")):
                if w == "name":
                    i += 1
                name = a[i]
            elif w == "mtu":
                i += 1
                mtu = int(a[i])
            elif w == "address":
                i += 1
                mac = a[i]
            elif w in ("txqueuelen", "txqlen", "qlen"):
                i += 1
                opts["txqlen"] = int(a[i])
            elif w == "type":
                i += 1
                kind = a[i]
                i += 1
                rest = a[i:]
                if kind == "veth":
                    j = 0
                    while j < len(rest):
                        if rest[j] == "peer":
                            j += 1
                            continue
                        if rest[j] == "name":
                            peer = rest[j + 1]
                            j += 2
                        elif rest[j] == "netns":
                            peer_ns = self.ns.lab[rest[j + 1]]
                            j += 2
                        else:
                            raise Usage(f'Error: argument "{rest[j]}" is wrong: unknown veth option', 1)
                elif kind == "vxlan":
                    j = 0
                    while j < len(rest):
                        k = rest[j]
                        if k in ("id", "vni", "local", "dev", "dstport", "remote", "ttl", "group"):
                            opts["vni" if k == "id" else k] = rest[j + 1]
                            j += 2
                        elif k in ("nolearning", "learning"):
                            opts["learning"] = k == "learning"
                            j += 1
                        else:
                            raise Usage(f'vxlan: unknown command "{k}"?', 255)
                    for bad in ("remote", "ttl", "group"):
                        opts.pop(bad, None)
                elif kind == "ipip":
                    j = 0
                    while j < len(rest):
                        if rest[j] in ("local", "remote"):
                            opts[rest[j]] = rest[j + 1]
                            j += 2
                        else:
                            j += 1
                elif rest:
                    raise Usage(f'Garbage instead of arguments "{" ".join(rest)} ...". Try "ip link help".', 255)
                break
            else:
                raise Usage(f'Error: argument "{w}" is wrong', 1)
            i += 1
        if name is None:
            raise Usage('Not enough information: "dev" argument is required.', 255)
        if kind is None:
            raise Usage('Not enough information: "type" argument is required', 255)
        txqlen = opts.pop("txqlen", None)
        self.ns.link_add(name, kind, peer=peer, peer_ns=peer_ns, mtu=mtu, mac=mac,
                         txqlen=txqlen, **opts)  # type: ignore[arg-type]
        return Result(0)

    def _link_set(self, a: list[str]) -> Result:
        if not a:
            raise Usage('Not enough information: "dev" argument is required.', 255)
        dev = a[1] if a[0] == "dev" else a[0]
        a = a[2:] if a[0] == "dev" else a[1:]
        kw: dict[str, object] = {}
        i = 0
        while i < len(a):
            w = a[i]
            if w in ("up", "down"):
                kw["up"] = w == "up"
            elif w == "mtu":
                i += 1
                kw["mtu"] = int(a[i])
            elif w == "address":
                i += 1
                kw["mac"] = a[i]
            elif w == "master":
                i += 1
                kw["master"] = a[i]
            elif w == "nomaster":
                kw["nomaster"] = True
            elif w == "promisc":
                i += 1
                kw["promisc"] = a[i] == "on"
            elif w in ("txqueuelen", "txqlen", "qlen"):
                i += 1
                kw["txqlen"] = int(a[i])
            elif w == "netns":
                i += 1
                kw["netns"] = self.ns.lab[a[i]]
            elif w == "name":
                i += 1
                kw["name"] = a[i]
            elif w == "type" and a[i + 1:i + 2] == ["bridge_slave"]:
                i += 2
                while i < len(a):
                    if a[i] == "hairpin":
                        kw["hairpin"] = a[i + 1] == "on"
                        i += 1
                    i += 1
                break
            else:
                raise Usage(f'Error: argument "{w}" is wrong: Invalid "link set" argument', 1)
            i += 1
        self.ns.link_set(dev, **kw)  # type: ignore[arg-type]
        return Result(0)

    def _ip_addr(self, args: list[str], as_json: bool) -> Result:
        cmd = args[0] if args else "show"
        a = args[1:]
        if _match(cmd, ("show", "list")) or cmd == "lst":
            return Result(0, show.ip_addr(self.ns, self._dev_arg(a), as_json=as_json))
        if cmd in ("add", "del", "delete", "replace"):
            if not a:
                raise Usage('Not enough information: "dev" argument is required.', 255)
            cidr, dev, scope, label, brd = a[0], None, "global", None, None
            i = 1
            while i < len(a):
                if a[i] == "dev":
                    dev = a[i + 1]
                elif a[i] == "scope":
                    scope = a[i + 1]
                elif a[i] == "label":
                    label = a[i + 1]
                elif a[i] in ("brd", "broadcast"):
                    brd = a[i + 1]
                else:
                    raise Usage(f'Error: either "local" is duplicate, or "{a[i]}" is a garbage.', 1)
                i += 2
            if dev is None:
                raise Usage('Not enough information: "dev" argument is required.', 1)
            if cmd == "add" or (cmd == "replace"):
                if cmd == "replace":
                    try:
                        self.ns.addr_del(dev, cidr)
                    except NetError:
                        pass
                self.ns.addr_add(dev, cidr, scope=scope, label=label, broadcast=brd)
            else:
                self.ns.addr_del(dev, cidr)
            return Result(0)
        if cmd == "flush":
            dev = self._dev_arg(a)
            for link in [self.ns.link(dev)] if dev else self.ns.sorted_links():
                for addr in list(link.addrs):
                    if addr in link.addrs:
                        self.ns._addr_del(link, addr)
            return Result(0)
        raise Usage(f'Command "{cmd}" is unknown, try "ip address help".', 255)

    def _route_args(self, a: list[str]) -> dict[str, object]:
        kw: dict[str, object] = {}
        i = 0
        while i < len(a):
            w = a[i]
            nxt = a[i + 1] if i + 1 < len(a) else None
            if w in ROUTE_TYPES and "dst" not in kw:
                kw["type"] = w
                i += 1
                continue
            if w in ("via", "dev", "src", "proto", "scope", "table", "metric", "priority", "preference"):
                if nxt is None:
                    raise Usage('Command line is not complete. Try option "help"', 255)
                if w == "via":
                    if nxt == "inet":
                        i += 1
                        nxt = a[i + 1]
                    kw["via"] = nxt
                elif w in ("metric", "priority", "preference"):
                    if not nxt.isdigit():
                        raise Usage(f'Error: argument "{nxt}" is wrong: "metric" value is invalid\n', 1)
                    kw["metric"] = int(nxt)
                elif w == "table":
                    if nxt not in ("main", "local") and not nxt.isdigit():
                        raise Usage(f'Error: argument "{nxt}" is wrong: "table" value is invalid', 1)
                    kw["table"] = {"main": 254, "local": 255}.get(nxt) or int(nxt)
                else:
                    kw[w] = nxt
                i += 2
                continue
            if w == "onlink":
                kw["onlink"] = True
                i += 1
                continue
            if w == "to":
                i += 1
                continue
            if "dst" in kw:
                raise Usage(f'Error: either "to" is duplicate, or "{w}" is a garbage.', 255)
            kw["dst"] = w
            i += 1
        return kw

    def _ip_route(self, args: list[str], as_json: bool) -> Result:
        cmd = args[0] if args else "show"
        a = args[1:]
        if _match(cmd, ("show", "list")) or cmd == "lst":
            return Result(0, show.ip_route(self.ns, as_json=as_json, filt=self._route_filter(a)))
        if cmd == "get":
            fibmatch = False
            while a and a[0] in ("fibmatch", "to"):
                fibmatch = fibmatch or a[0] == "fibmatch"
                a = a[1:]
            if not a:
                raise Usage('need at least a destination address', 1)
            try:
                addr, plen = parse_prefix(a[0], strict=False)
            except ValueError:
                raise Usage(f'Error: any valid prefix is expected rather than "{a[0]}".', 1) from None
            return Result(0, show.route_get(self.ns, addr, fibmatch=fibmatch, as_json=as_json))
        if cmd in ("add", "replace", "append", "change", "prepend"):
            kw = self._route_args(a)
            if "dst" not in kw:
                raise Usage('Error: either "to" is duplicate, or "" is a garbage.', 255)
            dst = str(kw.pop("dst"))
            self._check_prefix(dst)
            self.ns.route_add(dst, replace=cmd in ("replace", "change"), append=cmd == "append", **kw)  # type: ignore[arg-type]
            return Result(0)
        if _match(cmd, ("delete",)):
            kw = self._route_args(a)
            if "dst" not in kw:
                raise Usage('Error: either "to" is duplicate, or "" is a garbage.', 255)
            dst = str(kw.pop("dst"))
            self._check_prefix(dst)
            kw.pop("src", None)
            kw.pop("proto", None)
            kw.pop("scope", None)
            kw.pop("onlink", None)
            self.ns.route_del(dst, **kw)  # type: ignore[arg-type]
            return Result(0)
        if cmd == "flush":
            kw = self._route_args(a)
            for r in list(self.ns.fib[254].routes()):
                if "dev" in kw and r.dev != kw["dev"]:
                    continue
                self.ns.fib[254].remove(r)
            self.ns.lab.bump()
            return Result(0)
        raise Usage(f'Command "{cmd}" is unknown, try "ip route help".', 255)

    def _route_filter(self, a: list[str]) -> show.RouteFilter:
        """The selectors of `ip route show`: table, dev, proto, scope, via, type, root, match, exact, PREFIX."""
        f = show.RouteFilter()
        i = 0
        while i < len(a):
            w = a[i]
            if w in ROUTE_TYPES:
                f.types = (f.types or set()) | {w}
                i += 1
                continue
            if i + 1 >= len(a):
                if w in ("table", "dev", "proto", "scope", "via", "type", "root", "match", "exact", "to"):
                    raise Usage('Command line is not complete. Try option "help"', 255)
            nxt = a[i + 1] if i + 1 < len(a) else ""
            if w == "table":
                if nxt not in ("all", "main", "local") and not nxt.isdigit():
                    raise Usage(f'Error: argument "{nxt}" is wrong: table id value is invalid', 1)
                f.table = nxt
            elif w == "dev":
                self.ns.link(nxt)
                f.dev = nxt
            elif w == "proto":
                from emu.net.route import proto_name

                name = proto_name(nxt)
                if name is None:
                    raise Usage(f'Error: argument "{nxt}" is wrong: "protocol" value is invalid\n', 255)
                f.proto = name
            elif w == "scope":
                from emu.net.route import SCOPE_BY_NAME

                if nxt not in SCOPE_BY_NAME and not nxt.isdigit():
                    raise Usage(f'Error: argument "{nxt}" is wrong: invalid "scope" value', 1)
                f.scope = SCOPE_BY_NAME.get(nxt, int(nxt) if nxt.isdigit() else 0)
            elif w == "via":
                f.via = self._addr(nxt)
            elif w == "type":
                if nxt not in ROUTE_TYPES:
                    raise Usage(f'Error: argument "{nxt}" is wrong: "type" value is invalid', 1)
                f.types = (f.types or set()) | {nxt}
            elif w in ("root", "match", "exact", "to"):
                pfx = self._prefix(nxt)
                if w in ("root", "exact", "to"):
                    f.root = pfx
                if w in ("match", "exact", "to"):
                    f.match = pfx
            else:
                pfx = self._prefix(w)
                f.root = f.match = pfx
                i += 1
                continue
            i += 2
        return f

    @staticmethod
    def _prefix(text: str) -> tuple[int, int]:
        try:
            return parse_prefix(text, strict=False)
        except ValueError:
            raise Usage(f'Error: any valid prefix is expected rather than "{text}".', 1) from None

    @staticmethod
    def _addr(text: str) -> int:
        try:
            return ip2int(text)
        except ValueError:
            raise Usage(f'Error: inet address is expected rather than "{text}".', 1) from None

    @staticmethod
    def _check_prefix(dst: str) -> None:
        try:
            parse_prefix(dst, strict=False)
        except ValueError:
            raise Usage(f'Error: any valid prefix is expected rather than "{dst}".', 1) from None

    def _ip_neigh(self, args: list[str], as_json: bool) -> Result:
        cmd = args[0] if args else "show"
        a = args[1:]
        if _match(cmd, ("show", "list")) or cmd == "lst":
            dev, prefix = None, None
            i = 0
            while i < len(a):
                if a[i] == "dev" and i + 1 < len(a):
                    dev = self.ns.link(a[i + 1]).ifname
                    i += 2
                    continue
                if a[i] in ("nud", "proxy"):
                    i += 2 if a[i] == "nud" else 1
                    continue
                prefix = self._prefix(a[i] if a[i] != "to" else a[i + 1])
                i += 2 if a[i] == "to" else 1
            return Result(0, show.ip_neigh(self.ns, as_json=as_json, dev=dev, prefix=prefix))
        if cmd in ("add", "del", "delete", "replace", "change"):
            if not a:
                raise Usage("Device and destination are required arguments.", 255)
            ip, dev, lladdr, state = a[0], None, None, "permanent"
            i = 1
            while i < len(a):
                if a[i] == "dev":
                    dev = a[i + 1]
                elif a[i] == "lladdr":
                    lladdr = a[i + 1]
                elif a[i] == "nud":
                    state = a[i + 1]
                i += 2
            if dev is None:
                raise Usage("Device and destination are required arguments.", 255)
            try:
                ip2int(ip)
            except ValueError:
                raise Usage(f'Error: inet address is expected rather than "{ip}".', 1) from None
            if cmd.startswith("del"):
                self.ns.neigh_del(ip, dev=dev)
            else:
                self.ns.neigh_add(ip, dev=dev, lladdr=lladdr, state=state, replace=cmd != "add")
            return Result(0)
        if cmd == "flush":
            dev = self._dev_arg(a)
            for link in [self.ns.link(dev)] if dev else self.ns.sorted_links():
                for ipv, _m, _s in self.ns.neigh.entries(link):
                    self.ns.neigh.delete(link, ipv)
            return Result(0)
        raise Usage(f'Command "{cmd}" is unknown, try "ip neigh help".', 255)

    def _ip_netns(self, args: list[str]) -> Result:
        cmd = args[0] if args else "list"
        if cmd in ("list", "show"):
            return Result(0, "".join(f"{n}\n" for n in sorted(self.ns.lab.namespaces, reverse=True)))
        if cmd == "add" and len(args) > 1:
            if args[1] in self.ns.lab.namespaces:
                raise Usage(f'Cannot create namespace file "/var/run/netns/{args[1]}": File exists', 1)
            self.ns.lab.netns(args[1])
            return Result(0)
        if cmd in ("del", "delete") and len(args) > 1:
            if args[1] not in self.ns.lab.namespaces:
                raise Usage(f'Cannot remove namespace file "/var/run/netns/{args[1]}": No such file or directory', 1)
            self.ns.lab.delete_netns(args[1])
            return Result(0)
        if cmd == "exec" and len(args) > 2:
            return self.ns.lab[args[1]].run(shlex.join(args[2:]))
        raise Usage(f'Command "{cmd}" is unknown, try "ip netns help".', 255)

    # --- bridge ------------------------------------------------------------------------
    def bridge(self, args: list[str]) -> Result:
        as_json = details = False
        while args and args[0].startswith("-"):
            opt = args.pop(0)
            as_json = as_json or opt in ("-j", "-json")
            details = details or opt in ("-d", "-details")
        if not args:
            raise Usage("Usage: bridge [ OPTIONS ] OBJECT { COMMAND | help }", 255)
        obj, rest = args[0], args[1:]
        if _match(obj, ("fdb",)):
            cmd = rest[0] if rest else "show"
            a = rest[1:]
            if _match(cmd, ("show", "list")):
                br = a[a.index("br") + 1] if "br" in a and a.index("br") + 1 < len(a) else None
                dev = a[a.index("dev") + 1] if "dev" in a and a.index("dev") + 1 < len(a) else None
                for name in (br, dev):
                    if name is not None:
                        self.ns.link(name)
                return Result(0, show.bridge_fdb(self.ns, as_json=as_json, br=br, dev=dev))
            if cmd in ("add", "append", "replace", "del", "delete"):
                if not a:
                    raise Usage("Error: lladdr is required", 255)
                mac = a[0]
                dev = a[a.index("dev") + 1] if "dev" in a else None
                dst = a[a.index("dst") + 1] if "dst" in a else None
                if dev is None:
                    raise Usage("Device and address are required arguments.", 255)
                try:
                    from emu.net.addr import mac2int

                    mac2int(mac)
                except ValueError:
                    raise Usage(f'Invalid mac address {mac}', 255) from None
                if cmd.startswith("del"):
                    self.ns.fdb_del(mac, dev=dev, dst=dst)
                else:
                    self.ns.fdb_add(mac, dev=dev, dst=dst, replace=cmd == "replace")
                return Result(0)
            raise Usage(f'Command "{cmd}" is unknown, try "bridge fdb help".', 255)
        if _match(obj, ("link",)):
            cmd = rest[0] if rest else "show"
            if cmd == "set":
                a = rest[1:]
                dev = a[a.index("dev") + 1] if "dev" in a and a.index("dev") + 1 < len(a) else None
                if dev is None:
                    raise Usage("Device is a required argument.", 255)
                link = self.ns.link(dev)
                if "hairpin" in a:
                    value = a[a.index("hairpin") + 1] if a.index("hairpin") + 1 < len(a) else ""
                    if value not in ("on", "off"):
                        raise Usage(f'Error: argument of "hairpin" must be "on" or "off", not "{value}"', 255)
                    if link.master is None:
                        raise Usage("RTNETLINK answers: Operation not supported", 255)
                    self.ns.link_set(dev, hairpin=value == "on")
                return Result(0)
            return Result(0, show.bridge_link(self.ns, details=details))
        raise Usage(f'Object "{obj}" is unknown, try "bridge help".', 255)

    # --- net-tools, sysctl, files -------------------------------------------------------
    def route(self, args: list[str]) -> Result:
        if args and args[0] in ("add", "del"):
            return self._route_nettools(args)
        return Result(0, show.route_n(self.ns))

    def _route_nettools(self, args: list[str]) -> Result:
        """`route add|del [-net|-host] DST [netmask M] [gw G] [dev D] [metric N]` and `default gw G`."""
        cmd, a = args[0], args[1:]
        dst, gw, dev, metric, netmask = None, None, None, 0, None
        i = 0
        while i < len(a):
            w = a[i]
            if w in ("-net", "-host"):
                pass
            elif w == "default":
                dst = "0.0.0.0/0"
            elif w == "gw":
                i += 1
                gw = a[i]
            elif w == "dev":
                i += 1
                dev = a[i]
            elif w == "metric":
                i += 1
                metric = int(a[i])
            elif w == "netmask":
                i += 1
                netmask = a[i]
            elif dst is None:
                dst = w
            else:
                dev = w
            i += 1
        if dst is None:
            raise Usage("Usage: route [-nNvee] [-FC] [<AF>]           List kernel routing tables", 4)
        if netmask is not None:
            m = ip2int(netmask)
            dst = f"{dst}/{bin(m).count('1')}"
        if cmd == "add":
            try:
                self.ns.route_add(dst, via=gw, dev=dev, metric=metric)
            except NetError as exc:
                return Result(7, "", "SIOCADDRT: " + exc.message.split(": ")[-1].rstrip(".") + "\n")
        else:
            try:
                self.ns.route_del(dst, via=gw, dev=dev, metric=metric or None)
            except NetError:
                return Result(7, "", "SIOCDELRT: No such process\n")
        return Result(0)

    def arp(self, args: list[str]) -> Result:
        return Result(0, show.arp_n(self.ns))

    def sysctl(self, args: list[str]) -> Result:
        out = []
        value_only = quiet = False
        for arg in args:
            if arg.startswith("-"):
                value_only |= "n" in arg
                quiet |= "q" in arg
                continue
            if "=" in arg:
                key, _, value = arg.partition("=")
                self.ns.sysctl_set(key.strip(), value.strip())
                if not quiet:
                    out.append(f"{key.strip()} = {value.strip()}\n")
            else:
                value = self.ns.sysctl_get(arg)
                out.append(f"{value}\n" if value_only else f"{arg} = {value}\n")
        return Result(0, "".join(out))

    def cat(self, args: list[str]) -> Result:
        out, err, rc = [], [], 0
        for path in args:
            if path.startswith("/proc/sys/"):
                try:
                    out.append(self.ns.sysctl_get(path[len("/proc/sys/"):]) + "\n")
                    continue
                except NetError:
                    pass
            try:
                out.append(self.ns.read_file(path))
            except FileNotFoundError:
                err.append(f"cat: {path}: No such file or directory\n")
                rc = 1
        return Result(rc, "".join(out), "".join(err))

    def echo(self, args: list[str]) -> Result:
        return Result(0, " ".join(args) + "\n")

    # --- netfilter ---------------------------------------------------------------------------
    def iptables(self, args: list[str]) -> Result:
        """`iptables [-t TABLE] -A|-I|-D|-C|-R|-N|-X|-F|-Z|-P|-L|-S ...`."""
        nf = self.ns.netfilter
        rc, out, err = nf.rules.run_iptables(args)
        if rc == 0:
            nf.changed()
        return Result(rc, out, err)

    def iptables_save(self, args: list[str]) -> Result:
        """`iptables-save [-t TABLE] [-c]`, stamped with the virtual clock's date."""
        import time

        from emu.net.lab import EPOCH

        when = time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(EPOCH + self.ns.lab.clock.now))
        return Result(*self.ns.netfilter.rules.run_save(args, when))

    def iptables_restore(self, args: list[str]) -> Result:
        """`iptables-restore [--noflush] [-T TABLE] [-c] [FILE]` (FILE from the namespace, else stdin)."""
        nf = self.ns.netfilter
        rc, out, err = nf.rules.run_restore(args, self.stdin, self.ns.read_file)
        nf.changed()  # also on failure: the tables committed before the error stay
        return Result(rc, out, err)

    def conntrack(self, args: list[str]) -> Result:
        """`conntrack -L [-o extended] [-p PROTO]`, `conntrack -F`, `conntrack -C`."""
        nf = self.ns.netfilter
        if not args or args[0] in ("-L", "--dump"):
            extended = "-o" in args and args[args.index("-o") + 1:args.index("-o") + 2] == ["extended"]
            proto = args[args.index("-p") + 1] if "-p" in args and args.index("-p") + 1 < len(args) else None
            lines = nf.conntrack_lines(extended)
            if proto is not None:
                lines = [ln for ln in lines if ln.split()[2 if extended else 0] == proto]
            text = "".join(ln + "\n" for ln in lines)
            return Result(0, text, f"conntrack v1.4.7 (conntrack-tools): {len(lines)} flow entries have been "
                                   "shown.\n")
        if args[0] in ("-C", "--count"):
            return Result(0, f"{len(nf.conntrack_lines())}\n")
        if args[0] in ("-F", "--flush"):
            for cid in nf.ct.table.ids():
                nf.ct.table.delete(cid)
            self.ns.lab.bump()
            return Result(0, "", "conntrack v1.4.7 (conntrack-tools): connection tracking table has been "
                                 "emptied.\n")
        return Result(2, "", f"conntrack v1.4.7 (conntrack-tools): Unknown option `{args[0]}'\n")
