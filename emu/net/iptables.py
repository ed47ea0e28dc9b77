"""iptables rules: parsing the command line, the tables and chains, and the canonical text of iptables-save.

The canonical form is what iptables 1.8 (nf_tables) prints, rewrites included: `-p tcp --dport 22`
is saved as `-p tcp -m tcp --dport 22`, `--or-mark 0x4000` as `--set-xmark 0x4000/0x4000`,
probabilities with 11 decimals of the kernel's 31-bit fraction, user chains sorted by name.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from emu.net.addr import int2ip, ip2int, mask

VERSION = "iptables v1.8.9 (nf_tables)"
HINT = "Try `iptables -h' or 'iptables --help' for more information."

BUILTIN = {
    "filter": ["INPUT", "FORWARD", "OUTPUT"],
    "nat": ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
}
TABLE_ORDER = ["filter", "nat"]  # the order iptables-save prints them in
PROTOS = {"tcp": 6, "udp": 17, "icmp": 1, "gre": 47, "ipip": 4, "esp": 50, "ah": 51, "sctp": 132, "udplite": 136}
PROTO_NAMES = {v: k for k, v in PROTOS.items()}
ICMP_TYPES = {
    "echo-reply": (0, None), "pong": (0, None), "destination-unreachable": (3, None),
    "network-unreachable": (3, 0), "host-unreachable": (3, 1), "protocol-unreachable": (3, 2),
    "port-unreachable": (3, 3), "fragmentation-needed": (3, 4), "communication-prohibited": (3, 13),
    "source-quench": (4, None), "redirect": (5, None), "echo-request": (8, None), "ping": (8, None),
    "time-exceeded": (11, None), "ttl-zero-during-transit": (11, 0), "parameter-problem": (12, None),
    "timestamp-request": (13, None), "timestamp-reply": (14, None),
}
CTSTATES = ["INVALID", "NEW", "RELATED", "ESTABLISHED", "UNTRACKED", "SNAT", "DNAT"]
ADDRTYPES = ["UNSPEC", "UNICAST", "LOCAL", "BROADCAST", "ANYCAST", "MULTICAST", "BLACKHOLE", "UNREACHABLE",
             "PROHIBIT", "THROW", "NAT", "XRESOLVE"]
REJECT_TYPES = {
    "icmp-net-unreachable": (3, 0), "net-unreach": (3, 0), "icmp-host-unreachable": (3, 1),
    "host-unreach": (3, 1), "icmp-proto-unreachable": (3, 2), "proto-unreach": (3, 2),
    "icmp-port-unreachable": (3, 3), "port-unreach": (3, 3), "icmp-net-prohibited": (3, 9),
    "net-prohib": (3, 9), "icmp-host-prohibited": (3, 10), "host-prohib": (3, 10),
    "icmp-admin-prohibited": (3, 13), "admin-prohib": (3, 13), "tcp-reset": (None, None),
    "tcp-rst": (None, None),
}
REJECT_CANON = {"net-unreach": "icmp-net-unreachable", "host-unreach": "icmp-host-unreachable",
                "proto-unreach": "icmp-proto-unreachable", "port-unreach": "icmp-port-unreachable",
                "net-prohib": "icmp-net-prohibited", "host-prohib": "icmp-host-prohibited",
                "admin-prohib": "icmp-admin-prohibited", "tcp-rst": "tcp-reset"}
STANDARD_TARGETS = {"ACCEPT", "DROP", "RETURN", "QUEUE"}
EXT_TARGETS = {"REJECT", "DNAT", "SNAT", "MASQUERADE", "REDIRECT", "MARK", "LOG"}
NAT_TARGETS = {"DNAT", "SNAT", "MASQUERADE", "REDIRECT"}


class IptError(Exception):
    """What iptables prints for a refused command, and its exit code."""

    def __init__(self, message: str, rc: int = 2) -> None:
        super().__init__(message)
        self.message, self.rc = message, rc


def bad(message: str, rc: int = 2) -> IptError:
    """An xtables_error(PARAMETER_PROBLEM, ...): versioned message plus the help hint."""
    return IptError(f"{VERSION}: {message}\n{HINT}", rc)


def save_string(value: str) -> str:
    """xtables_save_string: bare when only [A-Za-z0-9_-], else double-quoted with \\ escapes."""
    safe = value and all(c.isascii() and (c.isalnum() or c in "_-") for c in value)
    if safe:
        return value
    return '"' + "".join("\\" + c if c in "\"\\'" else c for c in value) + '"'


def parse_port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise bad(f"invalid port/service `{text}' specified")
    return int(text)


def parse_port_range(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition(":")
    a = parse_port(lo) if lo else 0
    b = parse_port(hi) if hi else (65535 if _ else a)
    return a, b


def port_range_str(r: tuple[int, int]) -> str:
    return str(r[0]) if r[0] == r[1] else f"{r[0]}:{r[1]}"


def parse_addr(text: str) -> tuple[int, int]:
    addr, _, plen = text.partition("/")
    try:
        ip = ip2int(addr)
    except ValueError:
        raise bad(f"host/network `{addr}' not found") from None
    if plen:
        if plen.isdigit() and int(plen) <= 32:
            p = int(plen)
        else:
            try:
                m = ip2int(plen)
            except ValueError:
                raise bad(f"invalid mask `{plen}' specified") from None
            p = bin(m).count("1")
    else:
        p = 32
    return ip & mask(p), p


def _k(n: int) -> str:
    """iptables' counter units: K, M, G above 99999 (xtables_print_num without -x)."""
    for unit in ("", "K", "M", "G", "T"):
        if n <= 99999:
            return f"{n}{unit}"
        n //= 1000
    return f"{n}P"


def parse_int(text: str, what: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise bad(f"Bad {what} value \"{text}\"") from None


# --- matches -------------------------------------------------------------------------------
@dataclass
class Match:
    """One `-m NAME ...` match: its saved options and its test on a packet context."""

    name: str
    opts: dict[str, Any] = field(default_factory=dict)

    def save(self) -> str:
        return f"-m {self.name}" + "".join(" " + part for part in SAVERS[self.name](self.opts))


def _neg(flag: bool, text: str) -> str:
    return f"! {text}" if flag else text


def _save_l4(o: dict[str, Any]) -> list[str]:
    out = []
    if "sport" in o:
        out.append(_neg(o["sport_neg"], f"--sport {port_range_str(o['sport'])}"))
    if "dport" in o:
        out.append(_neg(o["dport_neg"], f"--dport {port_range_str(o['dport'])}"))
    if "flags" in o:
        m, c = o["flags"]
        out.append(_neg(o.get("flags_neg", False), f"--tcp-flags {_flag_names(m)} {_flag_names(c)}"))
    return out


TCP_FLAGS = [("FIN", 0x01), ("SYN", 0x02), ("RST", 0x04), ("PSH", 0x08), ("ACK", 0x10), ("URG", 0x20)]


def _flag_names(v: int) -> str:
    if v == 0:
        return "NONE"
    if v == 0x3F:
        return "FIN,SYN,RST,PSH,ACK,URG"
    return ",".join(n for n, b in TCP_FLAGS if v & b)


def _parse_flags(text: str) -> int:
    if text == "ALL":
        return 0x3F
    if text == "NONE":
        return 0
    v = 0
    for part in text.split(","):
        names = dict(TCP_FLAGS)
        if part not in names:
            raise bad(f"Unknown TCP flag `{part}'")
        v |= names[part]
    return v


def _save_icmp(o: dict[str, Any]) -> list[str]:
    t, c = o["type"]
    return [_neg(o["neg"], f"--icmp-type {t}" + (f"/{c}" if c is not None else ""))]


def _save_mark(o: dict[str, Any]) -> list[str]:
    v, m = o["mark"]
    return [_neg(o["neg"], f"--mark 0x{v:x}" + (f"/0x{m:x}" if m != 0xFFFFFFFF else ""))]


def _save_statistic(o: dict[str, Any]) -> list[str]:
    if o["mode"] == "random":
        return ["--mode random", _neg(o.get("neg", False), f"--probability {o['p'] / 0x80000000:.11f}")]
    return ["--mode nth", f"--every {o['every']}", f"--packet {o['packet']}"]


def _save_addrtype(o: dict[str, Any]) -> list[str]:
    out = []
    for key in ("src", "dst"):
        if key in o:
            out.append(_neg(o[f"{key}_neg"], f"--{key}-type {','.join(o[key])}"))
    if o.get("limit_in"):
        out.append("--limit-iface-in")
    if o.get("limit_out"):
        out.append("--limit-iface-out")
    return out


def _save_conntrack(o: dict[str, Any]) -> list[str]:
    out = []
    if "ctstate" in o:
        out.append(_neg(o["ctstate_neg"], f"--ctstate {','.join(o['ctstate'])}"))
    if "ctstatus" in o:
        out.append(_neg(o["ctstatus_neg"], f"--ctstatus {','.join(o['ctstatus'])}"))
    return out


def _save_recent(o: dict[str, Any]) -> list[str]:
    out = [f"--{o['mode']}"]
    if "seconds" in o:
        out.append(f"--seconds {o['seconds']}")
    if o.get("reap"):
        out.append("--reap")
    if "hitcount" in o:
        out.append(f"--hitcount {o['hitcount']}")
    if o.get("rttl"):
        out.append("--rttl")
    out += [f"--name {o.get('name', 'DEFAULT')}", f"--mask {int2ip(o.get('mask', 0xFFFFFFFF))}",
            "--rdest" if o.get("side") == "dest" else "--rsource"]
    return out


def _save_multiport(o: dict[str, Any]) -> list[str]:
    return [_neg(o["neg"], f"--{o['kind']} {','.join(port_range_str(r) for r in o['ports'])}")]


SAVERS: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "tcp": _save_l4, "udp": _save_l4, "icmp": _save_icmp, "mark": _save_mark, "statistic": _save_statistic,
    "addrtype": _save_addrtype, "conntrack": _save_conntrack, "recent": _save_recent,
    "multiport": _save_multiport, "comment": lambda o: [f"--comment {save_string(o['comment'])}"],
    "state": lambda o: [_neg(o["ctstate_neg"], f"--state {','.join(o['ctstate'])}")],
}
def _ports_print(name: str, r: tuple[int, int], neg: bool) -> str:
    bang = "!" if neg else ""
    return f"{name}:{bang}{r[0]}" if r[0] == r[1] else f"{name}s:{bang}{r[0]}:{r[1]}"


def _print_l4(name: str, o: dict[str, Any]) -> str:
    parts = [name]
    if "sport" in o:
        parts.append(_ports_print("spt", o["sport"], o["sport_neg"]))
    if "dport" in o:
        parts.append(_ports_print("dpt", o["dport"], o["dport_neg"]))
    if "flags" in o:
        m, c = o["flags"]
        parts.append(f"flags:{'!' if o.get('flags_neg') else ''}0x{m:02X}/0x{c:02X}")
    return " ".join(parts)


def _print_recent(o: dict[str, Any]) -> str:
    parts = ["recent:", {"set": "SET", "rcheck": "CHECK", "update": "UPDATE", "remove": "REMOVE"}[o["mode"]]]
    if "seconds" in o:
        parts.append(f"seconds: {o['seconds']}")
    if o.get("reap"):
        parts.append("reap")
    if "hitcount" in o:
        parts.append(f"hit_count: {o['hitcount']}")
    if o.get("rttl"):
        parts.append("TTL-Match")
    parts += [f"name: {o.get('name', 'DEFAULT')}", f"side: {o.get('side', 'source')}",
              f"mask: {int2ip(o.get('mask', 0xFFFFFFFF))}"]
    return " ".join(parts)


def _print_icmp(o: dict[str, Any]) -> str:
    t, c = o["type"]
    if t == "any":
        return "icmp any"
    return f"{'!' if o['neg'] else ''}icmptype {t}" + (f" code {c}" if c is not None else "")


def _print_mark(o: dict[str, Any]) -> str:
    v, m = o["mark"]
    return "mark match" + (" !" if o["neg"] else "") + f" 0x{v:x}" + (f"/0x{m:x}" if m != 0xFFFFFFFF else "")


def _print_statistic(o: dict[str, Any]) -> str:
    if o["mode"] == "random":
        return f"statistic mode random{' !' if o.get('neg') else ''} probability {o['p'] / 0x80000000:.11f}"
    return f"statistic mode nth every {o['every']}" + (f" packet {o['packet']}" if o["packet"] else "")


def _print_addrtype(o: dict[str, Any]) -> str:
    parts = ["ADDRTYPE match"]
    for key in ("src", "dst"):
        if key in o:
            parts.append(f"{key}-type {'!' if o[f'{key}_neg'] else ''}{','.join(o[key])}")
    return " ".join(parts)


PRINTERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "tcp": lambda o: _print_l4("tcp", o), "udp": lambda o: _print_l4("udp", o), "icmp": _print_icmp,
    "comment": lambda o: f"/* {o['comment']} */", "mark": _print_mark, "statistic": _print_statistic,
    "addrtype": _print_addrtype, "recent": _print_recent,
    "conntrack": lambda o: " ".join(
        [f"{'! ' if o['ctstate_neg'] else ''}ctstate {','.join(o['ctstate'])}"] if "ctstate" in o else []
        + ([f"{'! ' if o['ctstatus_neg'] else ''}ctstatus {','.join(o['ctstatus'])}"] if "ctstatus" in o else [])),
    "state": lambda o: f"{'! ' if o['ctstate_neg'] else ''}state {','.join(o['ctstate'])}",
    "multiport": lambda o: f"multiport {o['kind']} {'!' if o['neg'] else ''}"
                           + ",".join(port_range_str(r) for r in o["ports"]),
}


def print_target(t: Target) -> str:
    """What `iptables -L` shows after a rule's matches for its target."""
    o, n = t.opts, t.name
    if n == "REJECT":
        return f"reject-with {o['with']}"
    if n in ("DNAT", "SNAT"):
        return f"to:{o['to']}" + "".join(f" {f}" for f in ("random", "random-fully", "persistent") if o.get(f))
    if n == "MASQUERADE":
        parts = []
        if "ports" in o:
            lo, hi = o["ports"]
            parts.append(f"masq ports: {lo}" + (f"-{hi}" if hi != lo else ""))
        parts += [f for f in ("random", "random-fully") if o.get(f)]
        return " ".join(parts)
    if n == "REDIRECT":
        if "ports" not in o:
            return ""
        lo, hi = o["ports"]
        return f"redir ports {lo}" + (f"-{hi}" if hi != lo else "")
    if n == "MARK":
        shown = o.get("shown", "xset")
        if shown == "xset":
            return f"MARK xset 0x{o['value']:x}/0x{o['mask']:x}"
        return f"MARK {shown} 0x{o.get('given', o['value']):x}"
    if n == "LOG":
        return f"LOG flags 0 level {o.get('level', '4')}" + (f' prefix "{o["prefix"]}"' if "prefix" in o else "")
    return ""


MATCH_OPTIONS = {
    "tcp": {"--sport", "--source-port", "--dport", "--destination-port", "--tcp-flags", "--syn"},
    "udp": {"--sport", "--source-port", "--dport", "--destination-port"},
    "icmp": {"--icmp-type"},
    "mark": {"--mark"},
    "statistic": {"--mode", "--probability", "--every", "--packet"},
    "addrtype": {"--src-type", "--dst-type", "--limit-iface-in", "--limit-iface-out"},
    "conntrack": {"--ctstate", "--ctstatus"},
    "state": {"--state"},
    "recent": {"--set", "--rcheck", "--update", "--remove", "--seconds", "--reap", "--hitcount", "--rttl",
               "--name", "--mask", "--rsource", "--rdest"},
    "multiport": {"--sports", "--source-ports", "--dports", "--destination-ports", "--ports"},
    "comment": {"--comment"},
}


def _states(text: str, allowed: list[str], what: str) -> list[str]:
    got = []
    for part in text.split(","):
        if part.upper() not in allowed:
            raise bad(f"Bad {what} \"{part}\"")
        got.append(part.upper())
    return [s for s in allowed if s in got]


def parse_match_option(m: Match, opt: str, neg: bool, args: list[str], proto: int | None) -> None:
    """Consumes one option (and its values) of match `m` from `args`."""
    o = m.opts

    def value() -> str:
        if not args:
            raise bad(f"option \"{opt}\" requires an argument")
        return args.pop(0)

    if m.name in ("tcp", "udp"):
        if opt in ("--sport", "--source-port"):
            o["sport"], o["sport_neg"] = parse_port_range(value()), neg
        elif opt in ("--dport", "--destination-port"):
            o["dport"], o["dport_neg"] = parse_port_range(value()), neg
        elif opt == "--tcp-flags":
            o["flags"] = (_parse_flags(value()), _parse_flags(value()))
            o["flags_neg"] = neg
        elif opt == "--syn":
            o["flags"], o["flags_neg"] = (0x17, 0x02), neg
    elif m.name == "icmp":
        v = value()
        if v in ICMP_TYPES:
            o["type"] = ICMP_TYPES[v]
        else:
            t, _, c = v.partition("/")
            if not t.isdigit() or (c and not c.isdigit()) or int(t) > 255:
                raise bad(f"Invalid ICMP type `{v}'")
            o["type"] = (int(t), int(c) if c else None)
        o["neg"] = neg
    elif m.name == "mark":
        v, _, mk = value().partition("/")
        o["mark"] = (parse_int(v, "mark") & 0xFFFFFFFF, parse_int(mk, "mask") if mk else 0xFFFFFFFF)
        o["neg"] = neg
    elif m.name == "statistic":
        if opt == "--mode":
            mode = value()
            if mode not in ("random", "nth"):
                raise bad(f"statistic: Bad mode \"{mode}\"")
            o["mode"] = mode
        elif opt == "--probability":
            try:
                p = float(value())
            except ValueError:
                p = -1.0
            if not 0.0 <= p <= 1.0:
                raise IptError(f"{VERSION}: statistic: bad value for option \"--probability\", or out of range "
                               f"(0-1).\n\n{HINT}", 2)
            o["p"], o["neg"] = int(p * 0x80000000 + 0.5), neg
        elif opt == "--every":
            o["every"] = parse_int(value(), "every")
        elif opt == "--packet":
            o["packet"] = parse_int(value(), "packet")
    elif m.name == "addrtype":
        if opt in ("--src-type", "--dst-type"):
            key = opt[2:5]
            o[key], o[f"{key}_neg"] = _states(value(), ADDRTYPES, "addrtype"), neg
        elif opt == "--limit-iface-in":
            o["limit_in"] = True
        else:
            o["limit_out"] = True
    elif m.name in ("conntrack", "state"):
        if opt in ("--ctstate", "--state"):
            o["ctstate"], o["ctstate_neg"] = _states(value(), CTSTATES, "ctstate"), neg
        else:
            o["ctstatus"], o["ctstatus_neg"] = _states(
                value(), ["NONE", "EXPECTED", "SEEN_REPLY", "ASSURED", "CONFIRMED"], "ctstatus"), neg
    elif m.name == "recent":
        if opt in ("--set", "--rcheck", "--update", "--remove"):
            if "mode" in o:
                raise bad("recent: only one of `--set', `--rcheck' `--update' or `--remove' may be set")
            o["mode"] = opt[2:]
        elif opt == "--seconds":
            o["seconds"] = parse_int(value(), "seconds")
        elif opt == "--hitcount":
            o["hitcount"] = parse_int(value(), "hitcount")
        elif opt == "--name":
            o["name"] = value()
        elif opt == "--mask":
            o["mask"] = parse_addr(value())[0]
        elif opt in ("--rsource", "--rdest"):
            o["side"] = "source" if opt == "--rsource" else "dest"
        else:
            o[opt[2:]] = True
    elif m.name == "multiport":
        if proto not in (6, 17, 132, 136, 33):
            raise bad("multiport only works with TCP, UDP, UDPLITE, SCTP and DCCP")
        kind = {"--source-ports": "sports", "--destination-ports": "dports"}.get(opt, opt[2:])
        o["kind"], o["neg"] = kind, neg
        o["ports"] = [parse_port_range(p) for p in value().split(",")]
    elif m.name == "comment":
        o["comment"] = value()


def finish_match(m: Match) -> None:
    """Checks that a match has what it needs (libxt's final_check)."""
    if m.name == "statistic":
        if "mode" not in m.opts:
            raise bad("statistic: no mode specified")
        if m.opts["mode"] == "random" and "p" not in m.opts:
            m.opts["p"] = 0
        if m.opts["mode"] == "nth":
            if "every" not in m.opts:
                raise bad("statistic: --every must be set for mode nth")
            m.opts.setdefault("packet", 0)
    if m.name == "recent":
        if "mode" not in m.opts:
            raise bad("recent: you must specify one of `--set', `--rcheck' `--update' or `--remove'")
        if m.opts.get("reap") and "seconds" not in m.opts:
            raise bad("recent: `--reap' requires `--seconds'")
    if m.name == "comment" and "comment" not in m.opts:
        raise bad("comment: option \"--comment\" must be specified")
    if m.name == "mark" and "mark" not in m.opts:
        raise bad("mark: option \"--mark\" must be specified")
    if m.name in ("conntrack", "state") and not m.opts:
        raise bad("conntrack: At least one option is required")
    if m.name == "multiport" and "ports" not in m.opts:
        raise bad("multiport expects an option")
    if m.name == "icmp" and "type" not in m.opts:
        m.opts["type"], m.opts["neg"] = ("any", None), False


# --- targets --------------------------------------------------------------------------------
@dataclass
class Target:
    """The `-j`/`-g` part: a verdict, an extension with options, or a user chain."""

    name: str
    opts: dict[str, Any] = field(default_factory=dict)
    goto: bool = False

    def save(self) -> str:
        flag = "-g" if self.goto else "-j"
        o = self.opts
        n = self.name
        if n == "REJECT":
            return f"{flag} REJECT --reject-with {o['with']}"
        if n in ("DNAT", "SNAT"):
            key = "--to-destination" if n == "DNAT" else "--to-source"
            extra = "".join(f" --{f}" for f in ("random", "random-fully", "persistent") if o.get(f))
            return f"{flag} {n} {key} {o['to']}{extra}"
        if n in ("MASQUERADE", "REDIRECT"):
            ports = f" --to-ports {o['ports'][0]}" + (f"-{o['ports'][1]}" if o["ports"][1] != o["ports"][0] else "") \
                if "ports" in o else ""
            extra = "".join(f" --{f}" for f in ("random", "random-fully") if o.get(f))
            return f"{flag} {n}{ports}{extra}"
        if n == "MARK":
            return f"{flag} MARK --set-xmark 0x{o['value']:x}/0x{o['mask']:x}"
        if n == "LOG":
            parts = []
            if "level" in o:
                parts.append(f"--log-level {o['level']}")
            if "prefix" in o:
                parts.append(f"--log-prefix {save_string(o['prefix'])}")
            return f"{flag} LOG" + "".join(" " + p for p in parts)
        return f"{flag} {n}"


def _nat_range(text: str, rule: Rule, dnat: bool) -> dict[str, Any]:
    """`IP[-IP][:PORT[-PORT]]` of DNAT/SNAT."""
    addr, _, ports = text.partition(":")
    lo, _, hi = addr.partition("-")
    try:
        a = ip2int(lo) if lo else None
        b = ip2int(hi) if hi else a
    except ValueError:
        raise bad(f"Bad IP address \"{addr}\"") from None
    out: dict[str, Any] = {"to": text, "addr": (a, b)}
    if ports:
        if rule.proto not in (6, 17, 132, 33):
            raise bad("Need TCP, UDP, SCTP or DCCP with port specification")
        p1, _, p2 = ports.partition("-")
        out["ports"] = (parse_port(p1), parse_port(p2) if p2 else parse_port(p1))
    return out


def parse_target_options(t: Target, args: list[str], rule: Rule, table: str) -> None:
    o = t.opts
    while args:
        opt = args[0]
        if not opt.startswith("--"):
            break
        args.pop(0)

        def value(opt: str = opt) -> str:
            if not args:
                raise bad(f"option \"{opt}\" requires an argument")
            return args.pop(0)

        if t.name == "REJECT" and opt == "--reject-with":
            v = value()
            if v not in REJECT_TYPES:
                raise bad(f"unknown reject type \"{v}\"")
            o["with"] = REJECT_CANON.get(v, v)
        elif t.name in ("DNAT", "SNAT") and opt in ("--to-destination", "--to-source", "--to"):
            o.update(_nat_range(value(), rule, t.name == "DNAT"))
        elif t.name in ("DNAT", "SNAT", "MASQUERADE", "REDIRECT") and opt in ("--random", "--random-fully",
                                                                               "--persistent"):
            o[opt[2:]] = True
        elif t.name in ("MASQUERADE", "REDIRECT") and opt == "--to-ports":
            if rule.proto not in (6, 17, 132, 33):
                raise bad("Need TCP, UDP, SCTP or DCCP with port specification")
            p1, _, p2 = value().partition("-")
            o["ports"] = (parse_port(p1), parse_port(p2) if p2 else parse_port(p1))
        elif t.name == "MARK" and opt in ("--set-xmark", "--set-mark", "--or-mark", "--and-mark", "--xor-mark"):
            v, _, m = value().partition("/")
            val = parse_int(v, "mark") & 0xFFFFFFFF
            msk = parse_int(m, "mask") & 0xFFFFFFFF if m else None
            # `iptables -L` shows the flavour given; iptables-save the --set-xmark it becomes.
            if opt == "--set-xmark" or (opt == "--set-mark" and msk is not None):
                o["value"], o["mask"], o["shown"] = val, 0xFFFFFFFF if msk is None else msk, "xset"
            elif opt == "--set-mark":
                o["value"], o["mask"], o["shown"] = val, 0xFFFFFFFF, "set"
            elif opt == "--or-mark":
                o["value"], o["mask"], o["shown"] = val, val, "or"
            elif opt == "--and-mark":
                o["value"], o["mask"], o["shown"] = 0, ~val & 0xFFFFFFFF, "and"
            else:
                o["value"], o["mask"], o["shown"] = val, 0, "xor"
            o["given"] = val
        elif t.name == "LOG" and opt in ("--log-prefix", "--log-level"):
            o["prefix" if opt == "--log-prefix" else "level"] = value()
        else:
            args.insert(0, opt)
            break
    if t.name == "REJECT":
        o.setdefault("with", "icmp-port-unreachable")
        if o["with"] == "tcp-reset" and rule.proto != 6:
            raise bad("TCP RST can only be used with TCP protocol")
    if t.name in ("DNAT", "SNAT") and "to" not in o:
        raise bad(f"{t.name}: option \"--to-{'destination' if t.name == 'DNAT' else 'source'}\" must be specified")
    if t.name == "MARK" and "value" not in o:
        raise bad("MARK: One of the --set-xmark, --{and,or,xor,set}-mark options is required")
    if table == "nat" and t.name in ("DROP", "REJECT"):
        raise IptError(f"{VERSION}: \nThe \"nat\" table is not intended for filtering, the use of {t.name} is "
                       f"therefore inhibited.\n\n{HINT}", 2)
    if table != "nat" and t.name in NAT_TARGETS:
        raise IptError(f"{VERSION}:  RULE_APPEND failed (Invalid argument): rule in chain", 4)


# --- rules, chains, tables ---------------------------------------------------------------------
@dataclass
class Rule:
    """One rule in canonical form, with its counters."""

    proto: int | None = None
    proto_neg: bool = False
    src: tuple[int, int] | None = None
    src_neg: bool = False
    dst: tuple[int, int] | None = None
    dst_neg: bool = False
    iif: str | None = None
    iif_neg: bool = False
    oif: str | None = None
    oif_neg: bool = False
    frag: bool | None = None
    matches: list[Match] = field(default_factory=list)
    target: Target | None = None
    pkts: int = 0
    bytes: int = 0

    def spec(self) -> str:
        parts = []
        if self.src is not None:
            parts.append(_neg(self.src_neg, f"-s {int2ip(self.src[0])}/{self.src[1]}"))
        if self.dst is not None:
            parts.append(_neg(self.dst_neg, f"-d {int2ip(self.dst[0])}/{self.dst[1]}"))
        if self.iif is not None:
            parts.append(_neg(self.iif_neg, f"-i {self.iif}"))
        if self.oif is not None:
            parts.append(_neg(self.oif_neg, f"-o {self.oif}"))
        if self.proto is not None:
            parts.append(_neg(self.proto_neg, f"-p {PROTO_NAMES.get(self.proto, self.proto)}"))
        if self.frag is not None:
            parts.append("-f" if self.frag else "! -f")
        parts += [m.save() for m in self.matches]
        if self.target is not None:
            parts.append(self.target.save())
        return " ".join(parts)

    def key(self) -> str:
        """What makes two rules the same for `-D` and `-C`: everything but the counters."""
        return self.spec()


@dataclass
class Chain:
    name: str
    policy: str | None = None  # None for a user chain
    rules: list[Rule] = field(default_factory=list)
    pkts: int = 0
    bytes: int = 0


class Table:
    def __init__(self, name: str) -> None:
        self.name = name
        self.chains: dict[str, Chain] = {c: Chain(c, "ACCEPT") for c in BUILTIN[name]}

    def ordered(self) -> list[Chain]:
        """Built-in chains in kernel order, then user chains by name (iptables-save's order)."""
        builtin = [self.chains[c] for c in BUILTIN[self.name]]
        return builtin + sorted((c for c in self.chains.values() if c.policy is None), key=lambda c: c.name)

    def references(self, name: str) -> int:
        return sum(1 for c in self.chains.values() for r in c.rules if r.target and r.target.name == name)


def tokenize(line: str) -> list[str]:
    try:
        return shlex.split(line, posix=True)
    except ValueError as exc:
        raise bad(f"Bad argument: {exc}") from None


def parse_rule(args: list[str], table: Table, *, check_target: bool = True) -> Rule:
    """A rule specification (everything after `-A CHAIN`) to its canonical Rule."""
    rule = Rule()
    args = list(args)
    current: Match | None = None
    neg = False
    seen: set[str] = set()
    while args:
        tok = args.pop(0)
        if tok == "!":
            neg = True
            continue
        if tok.startswith("!") and len(tok) > 1:
            raise bad(f"Bad argument `{tok}'")

        def value(tok: str = tok) -> str:
            if not args or args[0] == "!":
                raise bad(f"option \"{tok}\" requires an argument")
            return args.pop(0)

        if tok in ("-s", "--source", "--src"):
            rule.src, rule.src_neg = parse_addr(value()), neg
        elif tok in ("-d", "--destination", "--dst"):
            rule.dst, rule.dst_neg = parse_addr(value()), neg
        elif tok in ("-i", "--in-interface"):
            rule.iif, rule.iif_neg = value(), neg
        elif tok in ("-o", "--out-interface"):
            rule.oif, rule.oif_neg = value(), neg
        elif tok in ("-p", "--protocol"):
            p = value().lower()
            if p in ("all", "0"):
                rule.proto = None
            elif p in PROTOS:
                rule.proto = PROTOS[p]
            elif p.isdigit() and int(p) <= 255:
                rule.proto = int(p)
            else:
                raise bad(f"unknown protocol \"{p}\" specified")
            rule.proto_neg = neg
        elif tok in ("-f", "--fragment"):
            rule.frag = not neg
        elif tok in ("-m", "--match"):
            name = value()
            if name not in MATCH_OPTIONS:
                raise IptError(f"{VERSION}: Couldn't load match `{name}':No such file or directory\n\n{HINT}", 2)
            if name in ("tcp", "udp", "icmp") and PROTOS[name] != rule.proto:
                pass  # iptables accepts it; the protocol check happens at match time
            current = next((m for m in rule.matches if m.name == name and name in ("tcp", "udp", "icmp")), None)
            if current is None:
                current = Match(name)
                rule.matches.append(current)
        elif tok in ("-j", "--jump", "-g", "--goto"):
            name = value()
            rule.target = Target(name, goto=tok in ("-g", "--goto"))
            if name in EXT_TARGETS:
                parse_target_options(rule.target, args, rule, table.name)
            elif check_target and name not in STANDARD_TARGETS and name not in table.chains:
                raise bad(f"Chain '{name}' does not exist")
        elif tok.startswith("--"):
            owner = current if current is not None and tok in MATCH_OPTIONS[current.name] else None
            if owner is None:
                owner = next((m for m in reversed(rule.matches) if tok in MATCH_OPTIONS[m.name]), None)
            if owner is None and rule.proto in (6, 17, 1):
                implicit = PROTO_NAMES[rule.proto]
                if tok in MATCH_OPTIONS[implicit]:
                    owner = Match(implicit)
                    rule.matches.append(owner)
            if owner is None:
                raise bad(f"unknown option \"{tok}\"")
            parse_match_option(owner, tok, neg, args, rule.proto)
            seen.add(tok)
        else:
            raise bad(f"Bad argument `{tok}'")
        neg = False
    for m in rule.matches:
        finish_match(m)
    return rule


# --- the tables of one namespace ---------------------------------------------------------------
class Tables:
    """The filter and nat tables of a namespace, and the iptables/iptables-save/-restore commands."""

    def __init__(self) -> None:
        self.tables = {name: Table(name) for name in TABLE_ORDER}

    def table(self, name: str) -> Table:
        if name not in self.tables:
            raise IptError(f"{VERSION}: table '{name}' does not exist\nPerhaps iptables or your kernel needs to "
                           "be upgraded.", 3)
        return self.tables[name]

    def snapshot(self) -> str:
        """A text that changes whenever any rule, chain or policy does (for before/after comparisons)."""
        return self.save(counters=True, header=False)

    # --- iptables ------------------------------------------------------------------------
    def iptables(self, argv: list[str]) -> str:
        """Runs one iptables command line; returns stdout or raises IptError."""
        args = list(argv)
        table_name = "filter"
        cmd: str | None = None
        chain: str | None = None
        extra: list[str] = []
        numeric = verbose = line_numbers = False
        rest: list[str] = []
        while args:
            tok = args.pop(0)
            if tok in ("-t", "--table"):
                if not args:
                    raise bad("option \"-t\" requires an argument")
                table_name = args.pop(0)
            elif tok in ("-A", "--append", "-I", "--insert", "-D", "--delete", "-N", "--new-chain", "-X",
                         "--delete-chain", "-F", "--flush", "-P", "--policy", "-L", "--list", "-S",
                         "--list-rules", "-C", "--check", "-Z", "--zero", "-R", "--replace"):
                if cmd is not None:
                    raise bad("Can't use -" + tok.lstrip("-")[0] + " with -" + cmd)
                cmd = {"--append": "A", "--insert": "I", "--delete": "D", "--new-chain": "N",
                       "--delete-chain": "X", "--flush": "F", "--policy": "P", "--list": "L", "--list-rules": "S",
                       "--check": "C", "--zero": "Z", "--replace": "R"}.get(tok, tok[1:])
                if args and not args[0].startswith("-") and args[0] != "!":
                    chain = args.pop(0)
                    if cmd in ("I", "D", "R", "P", "L", "S") and args and not args[0].startswith("-"):
                        extra.append(args.pop(0))
            elif tok in ("-n", "--numeric"):
                numeric = True
            elif tok in ("-v", "--verbose"):
                verbose = True
            elif tok == "--line-numbers":
                line_numbers = True
            elif tok in ("-w", "--wait"):
                if args and args[0].isdigit():
                    args.pop(0)
            else:
                rest.append(tok)
                rest += args
                break
        del numeric
        t = self.table(table_name)
        if cmd is None:
            raise bad("no command specified")
        if cmd in ("A", "I", "D", "C", "R") and chain is None:
            raise bad(f"option \"-{cmd}\" requires an argument")
        if cmd in ("A", "I", "D", "C", "R", "P") and chain not in t.chains:
            if cmd == "P":
                raise IptError("iptables: Bad built-in chain name.", 1)
            raise IptError("iptables: No chain/target/match by that name.", 1)
        if cmd == "A":
            t.chains[chain].rules.append(parse_rule(rest, t))  # type: ignore[index]
        elif cmd == "I":
            pos = int(extra[0]) if extra else 1
            rules = t.chains[chain].rules  # type: ignore[index]
            if pos < 1 or pos > len(rules) + 1:
                raise IptError("iptables: Index of insertion too big.", 1)
            rules.insert(pos - 1, parse_rule(rest, t))
        elif cmd == "R":
            rules = t.chains[chain].rules  # type: ignore[index]
            pos = int(extra[0]) if extra else 0
            if not 1 <= pos <= len(rules):
                raise IptError("iptables: Index of replacement too big.", 1)
            rules[pos - 1] = parse_rule(rest, t)
        elif cmd in ("D", "C"):
            rules = t.chains[chain].rules  # type: ignore[index]
            if cmd == "D" and extra and not rest:
                pos = int(extra[0])
                if not 1 <= pos <= len(rules):
                    raise IptError("iptables: Index of deletion too big.", 1)
                del rules[pos - 1]
            else:
                key = parse_rule(rest, t).key()
                for i, r in enumerate(rules):
                    if r.key() == key:
                        if cmd == "D":
                            del rules[i]
                        return ""
                raise IptError("iptables: Bad rule (does a matching rule exist in that chain?).", 1)
        elif cmd == "N":
            if chain is None:
                raise bad("option \"-N\" requires an argument")
            if chain in t.chains:
                raise IptError("iptables: Chain already exists.", 1)
            if chain in STANDARD_TARGETS or chain in EXT_TARGETS or chain.startswith("-") or len(chain) > 28:
                raise bad(f"Invalid chain name `{chain}'")
            t.chains[chain] = Chain(chain)
        elif cmd == "X":
            for name in [chain] if chain else [c.name for c in t.chains.values() if c.policy is None]:
                c = t.chains.get(name)
                if c is None:
                    raise IptError("iptables: No chain/target/match by that name.", 1)
                if c.policy is not None:
                    raise IptError(f"{VERSION}:  CHAIN_DEL failed (Device or resource busy): chain {name}", 4)
                if t.references(name):
                    raise IptError(f"{VERSION}:  CHAIN_DEL failed (Device or resource busy): chain {name}", 4)
                if c.rules:
                    raise IptError(f"{VERSION}:  CHAIN_DEL failed (Device or resource busy): chain {name}", 4)
                del t.chains[name]
        elif cmd == "F":
            if chain is not None and chain not in t.chains:
                raise IptError("iptables: No chain/target/match by that name.", 1)
            for c in [t.chains[chain]] if chain else t.chains.values():
                c.rules.clear()
        elif cmd == "Z":
            for c in [t.chains[chain]] if chain else t.chains.values():
                c.pkts = c.bytes = 0
                for r in c.rules:
                    r.pkts = r.bytes = 0
        elif cmd == "P":
            c = t.chains[chain]  # type: ignore[index]
            if not extra or extra[0] not in ("ACCEPT", "DROP"):
                raise bad("Bad policy name. Run `iptables -h' for help." if extra else "-P requires a chain and a "
                          "policy")
            if c.policy is None:
                raise bad(f"Bad built-in chain name `{chain}'")
            c.policy = extra[0]
        elif cmd in ("S", "L"):
            if chain is not None and chain not in t.chains:
                # What iptables-nft says when it cannot find the chain it was asked to list.
                raise IptError(f"{VERSION}: chain `{chain}' in table `{t.name}' is incompatible, use 'nft' tool.", 1)
            if cmd == "S":
                return self.list_rules(t, chain, verbose)
            return self.list_table(t, chain, verbose, line_numbers)
        return ""

    def list_rules(self, t: Table, chain: str | None, counters: bool) -> str:
        out = []
        chains = [t.chains[chain]] if chain else t.ordered()
        for c in chains:
            if c.policy is not None:
                out.append(f"-P {c.name} {c.policy}" + (f" -c {c.pkts} {c.bytes}" if counters else ""))
            else:
                out.append(f"-N {c.name}")
        for c in chains:
            for r in c.rules:
                out.append(f"-A {c.name} {r.spec()}".rstrip() + (f" -c {r.pkts} {r.bytes}" if counters else ""))
        return "\n".join(out) + "\n"

    def list_table(self, t: Table, chain: str | None, verbose: bool, line_numbers: bool) -> str:
        """`iptables -L -n [-v] [--line-numbers]`: one block per chain, iptables 1.8's columns."""
        blocks = []
        for c in [t.chains[chain]] if chain else t.ordered():
            if c.policy is not None:
                head = f"Chain {c.name} (policy {c.policy}" + (
                    f" {c.pkts} packets, {c.bytes} bytes)" if verbose else ")")
            else:
                head = f"Chain {c.name} ({t.references(c.name)} references)"
            cols = ("num  " if line_numbers else "") + (" pkts bytes " if verbose else "") + \
                "target     prot opt " + ("in     out     " if verbose else "") + \
                "source               destination         "
            rows = [head, cols]
            for i, r in enumerate(c.rules, 1):
                target = r.target.name if r.target else ""
                src = f"{int2ip(r.src[0])}/{r.src[1]}" if r.src else "0.0.0.0/0"
                dst = f"{int2ip(r.dst[0])}/{r.dst[1]}" if r.dst else "0.0.0.0/0"
                if r.src and r.src[1] == 32:
                    src = int2ip(r.src[0])
                if r.dst and r.dst[1] == 32:
                    dst = int2ip(r.dst[0])
                prot = ("!" if r.proto_neg else "") + str(r.proto or 0)
                opt = "-f" if r.frag else "!f" if r.frag is False else "--"
                row = (f"{i:<4} " if line_numbers else "") + (f"{_k(r.pkts):>5} {_k(r.bytes):>5} " if verbose else "")
                row += f"{target:<9}  {prot:<4} {opt} "
                if verbose:
                    row += f"{'!' if r.iif_neg else ' '}{r.iif or '*':<5} {'!' if r.oif_neg else ' '}{r.oif or '*':<6} "
                row += f"{'!' if r.src_neg else ' '}{src:<19} {'!' if r.dst_neg else ' '}{dst:<19} "
                extras = [PRINTERS[m.name](m.opts) for m in r.matches]
                if r.target is not None and r.target.name in EXT_TARGETS:
                    extras.append(print_target(r.target))
                row += "".join(f" {e}" for e in extras if e)
                if r.target is not None and r.target.goto:
                    row += "[goto] "
                rows.append(row)
            blocks.append("\n".join(rows) + "\n")
        return "\n".join(blocks)

    # --- iptables-save / iptables-restore ---------------------------------------------------
    def save(self, table: str | None = None, *, counters: bool = False, header: bool = True, when: str = "") -> str:
        out = []
        names = [table] if table else TABLE_ORDER
        for name in names:
            t = self.table(name)
            if header:
                out.append(f"# Generated by iptables-save v1.8.9 (nf_tables) on {when}")
            out.append(f"*{name}")
            for c in t.ordered():
                pol = c.policy if c.policy is not None else "-"
                out.append(f":{c.name} {pol} [{c.pkts if counters else 0}:{c.bytes if counters else 0}]")
            for c in t.ordered():
                for r in c.rules:
                    prefix = f"[{r.pkts}:{r.bytes}] " if counters else ""
                    out.append(f"{prefix}-A {c.name} {r.spec()}".rstrip())
            out.append("COMMIT")
            if header:
                out.append(f"# Completed on {when}")
        return "\n".join(out) + "\n"

    def restore(self, text: str, *, noflush: bool = False, only: str | None = None) -> None:
        """iptables-restore: all tables in the input change, or none (errors name the line)."""
        staged: dict[str, Table] = {}
        current: Table | None = None
        start_line = 0
        lines = text.splitlines()
        for lineno, raw in enumerate(lines, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("*"):
                if current is not None:
                    raise IptError(f"iptables-restore: COMMIT expected at line {lineno}", 1)
                name = line[1:].strip()
                if name not in BUILTIN:
                    raise IptError(f"iptables-restore v1.8.9 (nf_tables): iptables-restore: line {lineno} table "
                                   f"name '{name}' invalid\nError occurred at line: {lineno}\n"
                                   "Try `iptables-restore -h' or 'iptables-restore --help' for more information.", 2)
                current = staged.get(name) or self._copy(name, flush=not noflush)
                start_line = lineno
                continue
            if current is None:
                raise IptError(f"iptables-restore: no command specified at line {lineno}"
                               if not line.startswith(":") else
                               f"iptables-restore v1.8.9 (nf_tables): no table specified\nError occurred at line: "
                               f"{lineno}\nTry `iptables-restore -h' or 'iptables-restore --help' for more "
                               "information.", 2)
            if line == "COMMIT":
                staged[current.name] = current
                current = None
                continue
            try:
                if line.startswith(":"):
                    parts = line[1:].split()
                    if len(parts) < 2:
                        raise bad(f"Bad chain line `{line}'")
                    cname, pol = parts[0], parts[1]
                    if cname in BUILTIN[current.name]:
                        if pol not in ("ACCEPT", "DROP"):
                            raise bad(f"Bad policy name `{pol}'")
                        current.chains[cname].policy = pol
                    elif pol != "-":
                        raise bad(f"Can't set policy `{pol}' on `{cname}' line {lineno}: Bad built-in chain name")
                    elif cname not in current.chains:
                        current.chains[cname] = Chain(cname)
                    elif not noflush:
                        current.chains[cname].rules.clear()
                    continue
                counters = None
                if line.startswith("["):
                    head, _, line = line.partition("]")
                    p, _, b = head[1:].partition(":")
                    counters = (int(p), int(b))
                    line = line.strip()
                argv = tokenize(line)
                if not argv or argv[0] not in ("-A", "-I", "-N", "-X", "-F", "-P", "-D", "-R"):
                    raise bad(f"Bad argument `{argv[0] if argv else line}'")
                self._restore_command(current, argv, counters)
            except IptError as exc:
                msg = exc.message.replace(VERSION, "iptables-restore v1.8.9 (nf_tables)").replace(
                    HINT, "").rstrip("\n")
                raise IptError(f"{msg}\nError occurred at line: {lineno}\n"
                               "Try `iptables-restore -h' or 'iptables-restore --help' for more information.",
                               2) from None
        if current is not None:
            raise IptError(f"iptables-restore: COMMIT expected at line {len(lines) + 1}", 1)
        del start_line
        for name, t in staged.items():
            if only is None or only == name:
                self.tables[name] = t

    def _copy(self, name: str, *, flush: bool) -> Table:
        import copy

        if flush:
            return Table(name)
        return copy.deepcopy(self.tables[name])

    def _restore_command(self, t: Table, argv: list[str], counters: tuple[int, int] | None) -> None:
        cmd, args = argv[0], argv[1:]
        if cmd == "-A":
            if not args or args[0] not in t.chains:
                # restore resolves chains declared anywhere in the table block; jumps are checked now
                raise bad(f"Chain '{args[0] if args else ''}' does not exist")
            rule = parse_rule(args[1:], t)
            if counters:
                rule.pkts, rule.bytes = counters
            t.chains[args[0]].rules.append(rule)
            return
        saved = self.tables[t.name]
        self.tables[t.name] = t
        try:
            self.iptables(["-t", t.name, cmd, *args])
        finally:
            self.tables[t.name] = saved
