"""iptables rules: the command line, the tables and chains, iptables-save and iptables-restore.

Everything follows iptables 1.8.9 (nf_tables) byte for byte. The command line is parsed the way
xtables parses it: GNU getopt_long with options taken in order, unambiguous prefixes of long
options, and the options of an extension merged in when `-m`, `-j` or an implicit `-p` loads it.
The checks run in the order xtables runs them (while parsing, then the final checks of the
extensions, the addresses, the command/option table, then the cache and finally the kernel), with
its exact words, exit codes and blank lines. The canonical form is what iptables-save prints,
rewrites included: `-p tcp --dport 22` is saved as `-p tcp -m tcp --dport 22`, `--or-mark 0x4000`
as `--set-xmark 0x4000/0x4000`, probabilities with 11 decimals of the kernel's 31-bit fraction,
user chains sorted by name.

In nf_tables a table exists only once a command created something in it (listing does not), and
so does each built-in chain: both are modelled (`Table.present`, `Chain.present`) because
`iptables-save` prints only the tables that exist and `-Z`, `-D N` or `-R` on a built-in chain
that does not exist yet fail.
"""

from __future__ import annotations

import dataclasses
import re
import socket
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from emu.net.addr import int2ip

RELEASE = "v1.8.9 (nf_tables)"
VERSION = f"iptables {RELEASE}"
HINT = "Try `iptables -h' or 'iptables --help' for more information."

BUILTIN = {
    "filter": ["INPUT", "FORWARD", "OUTPUT"],
    "nat": ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
    "mangle": ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
    "raw": ["PREROUTING", "OUTPUT"],
    "security": ["INPUT", "FORWARD", "OUTPUT"],
}
TABLE_ORDER = ["mangle", "security", "raw", "filter", "nat"]  # the order iptables-save prints them in
NAME_MAX = 29  # XT_EXTENSION_MAXNAMELEN: chain and target names are shorter
VERDICTS = {"ACCEPT", "DROP", "RETURN", "QUEUE"}
# Every target extension iptables 1.8.9 can load here: `-N` refuses these names.
TARGET_LIBS = set("""AUDIT CHECKSUM CLASSIFY CLUSTERIP CONNMARK CONNSECMARK CT DNAT DSCP ECN HMARK IDLETIMER LED
    LOG MARK MASQUERADE NETMAP NFLOG NFQUEUE NOTRACK RATEEST REDIRECT REJECT SECMARK SET SNAT SYNPROXY TCPMSS
    TCPOPTSTRIP TEE TOS TPROXY TRACE TTL ULOG standard""".split()) | VERDICTS


# --- errors ----------------------------------------------------------------------------------
class IptError(Exception):
    """A refused command: what it printed on stderr (without the last newline), its exit code and
    whatever it had printed on stdout before failing."""

    def __init__(self, message: str, rc: int = 2, stdout: str = "") -> None:
        super().__init__(message)
        self.message, self.rc, self.stdout = message, rc, stdout


class Problem(Exception):
    """xtables_error(PARAMETER_PROBLEM, ...): worded once, formatted for the program and line.

    `bare` is the `Bad argument` family, printed without the version prefix; `hint=False` the
    OTHER/VERSION problems that print no `Try ...` line."""

    def __init__(self, msg: str, *, bare: bool = False, hint: bool = True, rc: int = 2) -> None:
        super().__init__(msg)
        self.msg, self.bare, self.hint, self.rc = msg, bare, hint, rc
        self.prefix = ""  # warnings printed before the error (set by parse_command)

    def text(self, prog: str, line: int | None) -> str:
        head = self.msg if self.bare else f"{prog} {RELEASE}: {self.msg}"
        if not self.hint:
            return head
        lines = [head] if head else []
        if line is not None:
            lines.append(f"Error occurred at line: {line}")
        return "\n".join(lines + [f"Try `{prog} -h' or '{prog} --help' for more information."])


class CmdError(Exception):
    """A command the cache refuses (nft_strerror): `iptables: MSG.`, `line N failed: MSG.`; rc 1."""

    def __init__(self, msg: str, line: int | None = None, *, einval: bool = False) -> None:
        super().__init__(msg)
        self.msg, self.line, self.einval = msg, line, einval

    def text(self, prog: str) -> str:
        if prog == "iptables-restore":
            return f"iptables-restore: line {self.line} failed" + (f": {self.msg}." if self.msg else "")
        return f"iptables: {self.msg}." + (" Run `dmesg' for more information." if self.einval else "")


class KernelError(Exception):
    """The kernel refused the batch: `OP failed (ERR): rule in chain C`; rc 4."""

    def __init__(self, op: str, err: str, what: str, line: int | None = None) -> None:
        super().__init__(op)
        self.op, self.err, self.what, self.line = op, err, what, line

    def text(self, prog: str) -> str:
        where = f"\nline {self.line}:" if prog == "iptables-restore" else ""
        return f"{prog} {RELEASE}: {where} {self.op} failed ({self.err}): {self.what}"


class Done(Exception):
    """The command ends early with success (`-V`, `-h`): rc and stdout."""

    def __init__(self, out: str, rc: int = 0) -> None:
        super().__init__(out)
        self.out, self.rc = out, rc


EINVAL, ELOOP, ENOTSUP, EBUSY = "Invalid argument", "Too many links", "Operation not supported", \
    "Device or resource busy"


# --- C number parsing -----------------------------------------------------------------------------
_SPACE = " \t\n\v\f\r"
_DIGITS = {8: "01234567", 10: "0123456789", 16: "0123456789abcdefABCDEF"}
U64 = 1 << 64


def c_strtoul(text: str) -> tuple[int | None, str] | None:
    """C strtoul(text, &end, 0): (value, the rest), None when no digit was read; the value is
    None on overflow (ERANGE) and wraps modulo 2**64 after a minus sign, as in C."""
    s = text.lstrip(_SPACE)
    neg = s[:1] == "-"
    if s[:1] in ("-", "+") and s:
        s = s[1:]
    if s[:2] in ("0x", "0X") and s[2:3] and s[2] in _DIGITS[16]:
        base, s = 16, s[2:]
    else:
        base = 8 if s[:1] == "0" else 10
    n = 0
    while n < len(s) and s[n] in _DIGITS[base]:
        n += 1
    if n == 0:
        return None
    value: int | None = int(s[:n], base)
    if value >= U64:  # type: ignore[operator]
        value = None
    elif neg:
        value = -value % U64  # type: ignore[operator]
    return value, s[n:]


def strtoui(text: str, lo: int, hi: int, *, whole: bool = True) -> tuple[int, str] | None:
    """xtables_strtoui: a number in [lo, hi], no minus sign; the whole text unless `whole` is off."""
    if text.lstrip(_SPACE)[:1] == "-":
        return None
    parsed = c_strtoul(text)
    if parsed is None or parsed[0] is None or not lo <= parsed[0] <= hi:
        return None
    if whole and parsed[1]:
        return None
    return parsed[0], parsed[1]


def uint(text: str, lo: int, hi: int) -> int | None:
    """The whole text as a number in [lo, hi], or None."""
    parsed = strtoui(text, lo, hi)
    return None if parsed is None else parsed[0]


def scan_llu(text: str) -> int | None:
    """sscanf("%llu"): leading blanks, a sign, decimal digits; trailing text is ignored."""
    m = re.match(r"[ \t\n\v\f\r]*([+-]?)([0-9]+)", text)
    if m is None:
        return None
    value = int(m.group(2)) % U64
    return -value % U64 if m.group(1) == "-" else value


_FLOAT = re.compile(r"[ \t\n\v\f\r]*[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf(?:inity)?|nan)",
                    re.IGNORECASE)


def strtod(text: str) -> float | None:
    """strtod over the whole text (xtopt's XTTYPE_DOUBLE), or None."""
    m = _FLOAT.fullmatch(text)
    return float(text) if m else None


# --- names from the system databases (Debian netbase, as on the reference machine) ----------------
_PROTOCOLS = """ip 0 IP|hopopt 0 HOPOPT|icmp 1 ICMP|igmp 2 IGMP|ggp 3 GGP|ipencap 4 IP-ENCAP|st 5 ST|tcp 6 TCP|
egp 8 EGP|igp 9 IGP|pup 12 PUP|udp 17 UDP|hmp 20 HMP|xns-idp 22 XNS-IDP|rdp 27 RDP|iso-tp4 29 ISO-TP4|dccp 33 DCCP|
xtp 36 XTP|ddp 37 DDP|idpr-cmtp 38 IDPR-CMTP|ipv6 41 IPv6|ipv6-route 43 IPv6-Route|ipv6-frag 44 IPv6-Frag|
idrp 45 IDRP|rsvp 46 RSVP|gre 47 GRE|esp 50 IPSEC-ESP|ah 51 IPSEC-AH|skip 57 SKIP|ipv6-icmp 58 IPv6-ICMP|
ipv6-nonxt 59 IPv6-NoNxt|ipv6-opts 60 IPv6-Opts|rspf 73 RSPF|vmtp 81 VMTP|eigrp 88 EIGRP|ospf 89 OSPFIGP|
ax.25 93 AX.25|ipip 94 IPIP|etherip 97 ETHERIP|encap 98 ENCAP|pim 103 PIM|ipcomp 108 IPCOMP|vrrp 112 VRRP|
l2tp 115 L2TP|isis 124 ISIS|sctp 132 SCTP|fc 133 FC|mobility-header 135 Mobility-Header|udplite 136 UDPLite|
mpls-in-ip 137 MPLS-in-IP|manet 138|hip 139 HIP|shim6 140 Shim6|wesp 141 WESP|rohc 142 ROHC|ethernet 143 Ethernet"""
PROTO_BY_NAME: dict[str, int] = {}
PROTO_NAMES: dict[int, str] = {}  # getprotobynumber: the first name of a number
for _entry in _PROTOCOLS.replace("\n", "").split("|"):
    _name, _num, *_aliases = _entry.split()
    PROTO_NAMES.setdefault(int(_num), _name)
    for _n in (_name, *_aliases):
        PROTO_BY_NAME.setdefault(_n, int(_num))
# xtables_chain_protos: the names iptables knows without the database (and prints with -n)
CHAIN_PROTOS = [("tcp", 6), ("sctp", 132), ("udp", 17), ("udplite", 136), ("icmp", 1), ("ipv6-icmp", 58),
                ("icmpv6", 58), ("esp", 50), ("ah", 51), ("ipv6-mh", 135), ("mh", 135), ("all", 0)]

_SERVICES = """tcpmux=1/t echo=7 discard,sink,null=9 systat,users=11/t daytime=13 netstat=15/t qotd,quote=17/t
chargen,ttytst,source=19 ftp-data=20/t ftp=21/t fsp,fspd=21/u ssh=22/t telnet=23/t smtp,mail=25/t time,timserver=37
whois,nicname=43/t tacacs=49 domain=53 bootps=67/u bootpc=68/u tftp=69/u gopher=70/t finger=79/t http,www=80/t
kerberos,kerberos5,krb5,kerberos-sec=88 iso-tsap,tsap=102/t acr-nema,dicom=104/t pop3,pop-3=110/t
sunrpc,portmapper=111 auth,authentication,tap,ident=113/t nntp,readnews,untp=119/t ntp=123/u epmap,loc-srv=135/t
netbios-ns=137/u netbios-dgm=138/u netbios-ssn=139/t imap2,imap=143/t snmp=161 snmp-trap,snmptrap=162 cmip-man=163
cmip-agent=164 mailq=174/t xdmcp=177/u bgp=179/t smux=199/t qmtp=209/t z3950,wais=210/t ipx=213/u ptp-event=319/u
ptp-general=320/u pawserv=345/t zserv=346/t rpc2portmap=369 codaauth2=370 clearcase,Clearcase=371/u ldap=389
svrloc=427 https=443 snpp=444/t microsoft-ds=445/t kpasswd=464 submissions,ssmtp,smtps,urd=465/t saft=487/t
isakmp=500/u rtsp=554 nqs=607/t asf-rmcp=623/u qmqp=628/t ipp=631/t ldp=646 exec=512/t biff,comsat=512/u
login=513/t who,whod=513/u shell,cmd,syslog=514/t syslog=514/u printer,spooler=515/t talk=517/u ntalk=518/u
route,router,routed=520/u gdomap=538 uucp,uucpd=540/t klogin=543/t kshell,krcmd=544/t dhcpv6-client=546/u
dhcpv6-server=547/u afpovertcp=548/t nntps,snntp=563/t submission=587/t ldaps=636 tinc=655 silc=706/t
kerberos-adm=749/t domain-s=853 rsync=873/t ftps-data=989/t ftps=990/t telnets=992/t imaps=993/t pop3s=995/t
socks=1080/t proofd=1093/t rootd=1094/t openvpn=1194 rmiregistry=1099/t lotusnote,lotusnotes=1352/t
ms-sql-s=1433/t ms-sql-m=1434/u ingreslock=1524/t datametrics,old-radius=1645 sa-msg-port,old-radacct=1646
kermit=1649/t groupwise=1677/t l2f,l2tp=1701/u radius=1812 radius-acct,radacct=1813 cisco-sccp=2000/t nfs=2049
gnunet=2086 rtcm-sc104=2101 gsigatekeeper=2119/t gris=2135/t cvspserver=2401/t venus=2430 venus-se=2431
codasrv=2432 codasrv-se=2433 mon=2583 dict=2628/t f5-globalsite=2792/t gsiftp=2811/t gpsd=2947/t
gds-db,gds_db=3050/t icpv2,icp=3130/u isns=3205 iscsi-target=3260/t mysql=3306/t ms-wbt-server=3389/t nut=3493
distcc=3632/t daap=3689/t svn,subversion=3690/t suucp=4031/t sysrqd=4094/t sieve=4190/t epmd=4369/t remctl=4373/t
f5-iquery=4353/t ntske=4460/t ipsec-nat-t=4500/u iax=4569/u mtn=4691/t radmin-port=4899/t sip=5060 sip-tls=5061
xmpp-client,jabber-client=5222/t xmpp-server,jabber-server=5269/t cfengine=5308/t mdns=5353/u
postgresql,postgres=5432/t freeciv,rptp=5556/t amqps=5671/t amqp=5672/t x11,x11-0=6000/t x11-1=6001/t x11-2=6002/t
x11-3=6003/t x11-4=6004/t x11-5=6005/t x11-6=6006/t x11-7=6007/t gnutella-svc=6346 gnutella-rtr=6347 redis=6379/t
sge-qmaster,sge_qmaster=6444/t sge-execd,sge_execd=6445/t mysql-proxy=6446/t babel=6696/u ircs-u=6697/t bbs=7000/t
afs3-fileserver=7000/u afs3-callback=7001/u afs3-prserver=7002/u afs3-vlserver=7003/u afs3-kaserver=7004/u
afs3-volser=7005/u afs3-bos=7007/u afs3-update=7008/u afs3-rmtsys=7009/u font-service,xfs=7100/t
http-alt,webcache=8080/t puppet=8140/t bacula-dir=9101/t bacula-fd=9102/t bacula-sd=9103/t xmms2=9667/t nbd=10809/t
zabbix-agent=10050/t zabbix-trapper=10051/t amanda=10080/t dicom=11112/t hkp=11371/t db-lsp=17500/t dcap=22125/t
gsidcap=22128/t wnn6=22273/t kerberos4,kerberos-iv,kdc=750 kerberos-master,kerberos_master=751/u
kerberos-master=751/t passwd-server,passwd_server=752/u krb-prop,krb_prop,krb5_prop,hprop=754/t zephyr-srv=2102/u
zephyr-clt=2103/u zephyr-hm=2104/u iprop=2121/t supfilesrv=871/t supfiledbg=1127/t poppassd=106/t
moira-db,moira_db=775/t moira-update,moira_update=777/t moira-ureg,moira_ureg=779/u spamd=783/t skkserv=1178/t
predict=1210/u rmtcfg=1236/t xtel=1313/t xtelw=1314/t zebrasrv=2600/t zebra=2601/t ripd=2602/t ripngd=2603/t
ospfd=2604/t bgpd=2605/t ospf6d=2606/t ospfapi=2607/t isisd=2608/t fax=4557/t hylafax=4559/t munin,lrrd=4949/t
rplay=5555/u nrpe=5666/t nsca=5667/t canna=5680/t syslog-tls=6514/t sane-port,sane,saned=6566/t ircd=6667/t
zope-ftp=8021/t tproxy=8081/t omniorb=8088/t clc-build-daemon=8990/t xinetd=9098/t git=9418/t zope=9673/t
webmin=10000/t kamanda=10081/t amandaidx=10082/t amidxtape=10083/t sgi-cmsd=17001/u sgi-crsd=17002/u
sgi-gcd=17003/u sgi-cad=17004/t binkp=24554/t asp=27374 csync2=30865/t dircproxy=57000/t tfido=60177/t
fido=60179/t"""
SERVICES: dict[str, dict[str, int]] = {"tcp": {}, "udp": {}}  # getservbyname, per protocol
SERVICE_NAMES: dict[str, dict[int, str]] = {"tcp": {}, "udp": {}}  # getservbyport
for _entry in _SERVICES.split():
    _names, _, _port = _entry.partition("=")
    _num, _, _only = _port.partition("/")
    for _proto in ("tcp", "udp"):
        if _only and _only != _proto[0]:
            continue
        SERVICE_NAMES[_proto].setdefault(int(_num), _names.split(",")[0])
        for _n in _names.split(","):
            SERVICES[_proto].setdefault(_n, int(_num))


def parse_protocol(text: str) -> int:
    """xtables_parse_protocol on the lower-cased `-p` argument."""
    num = uint(text, 0, 255)
    if num is not None:
        return num
    if text == "all":
        return 0
    if text in PROTO_BY_NAME:
        return PROTO_BY_NAME[text]
    for name, value in CHAIN_PROTOS:
        if name == text:
            return value
    raise Problem(f'unknown protocol "{text}" specified')


def proto_name(num: int, *, nolookup: bool = False) -> str | None:
    """proto_to_name: the database name first (unless `nolookup`), then iptables' own list."""
    if num and not nolookup and num in PROTO_NAMES:
        return PROTO_NAMES[num]
    return next((name for name, value in CHAIN_PROTOS if value == num), None)


def parse_port(text: str, proto: str) -> int:
    """xtables_parse_port: a number (any C base) or a service name of `proto`."""
    num = uint(text, 0, 65535)
    if num is None:
        num = SERVICES.get(proto, {}).get(text)
    if num is None:
        raise Problem(f"invalid port/service `{text}' specified")
    return num


def port_str(port: int, proto: str, numeric: bool) -> str:
    """A port as iptables -L prints it: the service name unless numeric."""
    return str(port) if numeric else SERVICE_NAMES.get(proto, {}).get(port, str(port))


def save_string(value: str) -> str:
    """xtables_save_string: bare when only [A-Za-z0-9_-], else double-quoted with \\ escapes."""
    safe = value and all(c.isascii() and (c.isalnum() or c in "_-") for c in value)
    if safe:
        return value
    return '"' + "".join("\\" + c if c in "\"\\'" else c for c in value) + '"'


# --- addresses and interfaces ------------------------------------------------------------------
HOSTS = {"localhost": 0x7F000001}  # /etc/hosts
NETWORKS = {"default": 0, "loopback": 0x7F000000, "link-local": 0xA9FE0000}  # /etc/networks
HOST_NAMES = {0x7F000001: "localhost"}
NETWORK_NAMES = {v: k for k, v in NETWORKS.items()}


def numeric_to_ipaddr(text: str, *, is_mask: bool = False) -> int | None:
    """xtables' dotted parser: up to four parts in any C base; an address with fewer parts is
    completed with zeros (`10.1` is 10.1.0.0), a mask is not."""
    p = text[:19]
    value = 0
    for i in range(3):
        if "." not in p:
            if is_mask:
                return None
            byte = uint(p, 0, 255)
            if byte is None:
                return None
            return (value | byte << (24 - 8 * i)) & 0xFFFFFFFF
        part, _, p = p.partition(".")
        byte = uint(part, 0, 255)
        if byte is None:
            return None
        value |= byte << (24 - 8 * i)
    byte = uint(p, 0, 255)
    return None if byte is None else value | byte


def parse_mask(text: str | None) -> int:
    """parse_ipmask: none is /32, a dotted mask, or a prefix length in any C base."""
    if text is None:
        return 0xFFFFFFFF
    dotted = numeric_to_ipaddr(text, is_mask=True)
    if dotted is not None:
        return dotted
    bits = uint(text, 0, 32)
    if bits is None:
        raise Problem(f"invalid mask `{text}' specified")
    return (0xFFFFFFFF << (32 - bits)) & 0xFFFFFFFF if bits else 0


def parse_host(text: str) -> int:
    """ipparse_hostnetwork: a dotted address, a network name, a host name."""
    for found in (numeric_to_ipaddr(text), NETWORKS.get(text), HOSTS.get(text)):
        if found is not None:
            return found
    raise Problem(f"host/network `{text}' not found")


def parse_addresses(text: str) -> list[tuple[int, int]]:
    """xtables_ipparse_multiple: `A[/M][,B[/M]...]` to (address & mask, mask) pairs, in order."""
    if text == "0.0.0.0/0":
        return [(0, 0)]
    out = []
    for item in text.split(","):
        item = item.lstrip(_SPACE)[:255].rstrip(_SPACE)
        name, slash, m = item.rpartition("/")
        if not slash:
            name, m = item, None
        netmask = parse_mask(m)
        addr = parse_host("0.0.0.0" if netmask == 0 else name)
        out.append((addr & netmask, netmask))
    return out


def prefix_len(netmask: int) -> int | None:
    """The prefix length of a contiguous mask, else None."""
    bits = bin(netmask).count("1")
    return bits if netmask == (0xFFFFFFFF << (32 - bits)) & 0xFFFFFFFF else None


def mask_str(netmask: int) -> str:
    """mask_to_str of iptables-save: a prefix length when contiguous, else dotted."""
    bits = prefix_len(netmask)
    return str(bits) if bits is not None else int2ip(netmask)


def addr_text(addr: int, netmask: int, numeric: bool) -> str:
    """ipv4_addr_to_string of iptables -L: `anywhere`, a name, or numbers; /32 is left out."""
    if not netmask and not numeric:
        return "anywhere"
    name = int2ip(addr) if numeric else HOST_NAMES.get(addr) or NETWORK_NAMES.get(addr) or int2ip(addr)
    if netmask == 0xFFFFFFFF:
        return name
    return f"{name}/{mask_str(netmask)}"


def parse_interface(text: str, warnings: list[str]) -> str:
    """xtables_parse_interface: at most 15 characters; `/` and space only draw a warning."""
    if len(text) + 1 > 16:
        raise Problem(f"interface name `{text}' must be shorter than IFNAMSIZ (15)")
    if not text.endswith("+") and ("/" in text or " " in text):
        warnings.append(f"Warning: weird character in interface `{text}' ('/' and ' ' are not allowed by the "
                        "kernel).\n")
    return text


def _k(n: int) -> str:
    """xtables_print_num without -x: the count, then K/M/G/T (rounded) past 99999."""
    if n <= 99999:
        return str(n)
    for unit in ("K", "M", "G"):
        n = (n + 500) // 1000
        if n <= 9999:
            return f"{n}{unit}"
    return f"{(n + 500) // 1000}T"


# --- extensions: the option tables and the generic checks of libxtables ----------------------------
@dataclass(frozen=True)
class Opt:
    """One option of an extension (an xt_option_entry): its names (the first is the one messages
    use), whether it takes an argument, and its flags: I invertible, M repeatable, R mandatory."""

    names: tuple[str, ...]
    arg: bool = True
    flags: str = ""
    excl: tuple[str, ...] = ()
    also: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return self.names[0]


@dataclass
class Ext:
    """A match or target extension: its options, how it parses them, its final check, and how
    iptables-save (`save`) and iptables -L (`show`) print it."""

    name: str
    opts: list[Opt]
    parse: Callable[[Inst, str, str | None, bool], None]
    save: Callable[[dict[str, Any]], list[str]]
    show: Callable[[dict[str, Any], bool], str]
    init: Callable[[], dict[str, Any]] = dict
    check: Callable[[Inst], None] | None = None
    generic: bool = True  # new-style (xtables_option_parse) checks; tcp parses the old way


@dataclass
class Inst:
    """One loaded instance of an extension while a command line is parsed."""

    ext: Ext
    opts: dict[str, Any]
    seen: set[str] = field(default_factory=set)
    state: Parsed | None = None  # the command being parsed (protocol, next arguments)

    def option(self, key: str) -> Opt:
        return next(o for o in self.ext.opts if o.key == key)


def generic_parse(inst: Inst, key: str, invert: bool) -> None:
    """xtables_option_parse: once only unless repeatable, `!` only where allowed."""
    opt = inst.option(key)
    if key in inst.seen and "M" not in opt.flags:
        raise Problem(f'{inst.ext.name}: option "--{key}" can only be used once.\n')
    if invert and "I" not in opt.flags:
        raise Problem(f'{inst.ext.name}: option "--{key}" cannot be inverted.\n')


def final_check(inst: Inst) -> None:
    """xtables_option_mfcall/tfcall: the extension's own check, then mandatory, exclusive and
    co-required options in table order."""
    if inst.ext.check is not None:
        inst.ext.check(inst)
    if not inst.ext.generic:
        return
    done: set[str] = set()
    for opt in inst.ext.opts:
        if opt.key in done:
            continue
        done.add(opt.key)
        if "R" in opt.flags and opt.key not in inst.seen:
            raise Problem(f'{inst.ext.name}: option "--{opt.key}" must be specified\n')
        if opt.key not in inst.seen:
            continue
        for other in opt.excl:
            if other != opt.key and other in inst.seen:
                raise Problem(f'{inst.ext.name}: option "--{opt.key}" cannot be used together with "--{other}".\n')
        for other in opt.also:
            if other not in inst.seen:
                raise Problem(f'{inst.ext.name}: option "--{opt.key}" also requires "--{other}".\n')


def opt_uint(inst: Inst, key: str, arg: str, lo: int = 0, hi: int = 0xFFFFFFFF) -> int:
    """XTTYPE_UINT*: a number in range, or libxtables' out-of-range message."""
    num = uint(arg, lo, hi)
    if num is None:
        raise Problem(f'{inst.ext.name}: bad value for option "--{key}", or out of range ({lo}-{hi}).\n')
    return num


def opt_markmask(inst: Inst, key: str, arg: str) -> tuple[int, int | None]:
    """XTTYPE_MARKMASK32: `value[/mask]` (mask None when not given)."""
    err = Problem(f'{inst.ext.name}: bad integer value for option "--{key}", or out of range.\n')
    first = strtoui(arg, 0, 0xFFFFFFFF, whole=False)
    if first is None:
        raise err
    value, rest = first
    if not rest:
        return value, None
    if rest[0] != "/":
        raise err
    second = strtoui(rest[1:], 0, 0xFFFFFFFF)
    if second is None:
        raise err
    return value, second[0]


def _neg(flag: bool, text: str) -> str:
    return f"! {text}" if flag else text


# --- tcp and udp ------------------------------------------------------------------------------------
TCP_FLAGS = [("FIN", 0x01), ("SYN", 0x02), ("RST", 0x04), ("PSH", 0x08), ("ACK", 0x10), ("URG", 0x20),
             ("ALL", 0x3F), ("NONE", 0)]


def _flag_names(v: int) -> str:
    """print_tcpf: the flag names, first match in table order, or NONE."""
    names = []
    while v:
        name, bit = next((n, b) for n, b in TCP_FLAGS if v & b)
        names.append(name)
        v &= ~bit
    return ",".join(names) or "NONE"


def _parse_flags(text: str) -> int:
    """parse_tcp_flag: comma-separated names, any case; empty items are skipped."""
    v = 0
    for part in (p for p in text.split(",") if p):
        bit = next((b for n, b in TCP_FLAGS if n.lower() == part.lower()), None)
        if bit is None:
            raise Problem(f"Unknown TCP flag `{part}'")
        v |= bit
    return v


def _l4_init() -> dict[str, Any]:
    return {"sport": (0, 0xFFFF), "sport_neg": False, "dport": (0, 0xFFFF), "dport_neg": False}


def _tcp_ports(text: str) -> tuple[int, int]:
    """parse_tcp_ports: `P`, `P:Q`, `:Q`, `P:`; min > max is refused."""
    lo, colon, hi = text.partition(":")
    if not colon:
        port = parse_port(text, "tcp")
        return port, port
    a = parse_port(lo, "tcp") if lo else 0
    b = parse_port(hi, "tcp") if hi else 0xFFFF
    if a > b:
        raise Problem("invalid portrange (min > max)")
    return a, b


def _tcp_parse(inst: Inst, key: str, arg: str | None, invert: bool) -> None:
    """libxt_tcp (old-style parser): ports, --syn/--tcp-flags and --tcp-option, each once."""
    o, seen = inst.opts, inst.seen
    if key in ("source-port", "destination-port"):
        if key in seen:
            raise Problem(f"Only one `--{key}' allowed")
        side = "sport" if key == "source-port" else "dport"
        o[side], o[f"{side}_neg"] = _tcp_ports(arg or ""), invert
    elif key in ("syn", "tcp-flags"):
        if "flags" in seen:
            raise Problem("Only one of `--syn' or `--tcp-flags'  allowed")
        if key == "syn":
            o["flags"] = (0x17, 0x02)
        else:
            second = inst.state.getopt.peek() if inst.state else None
            if second is None or second[:1] in ("-", "!"):
                raise Problem("--tcp-flags requires two args.")
            inst.state.getopt.take()  # type: ignore[union-attr]
            o["flags"] = (_parse_flags(arg or ""), _parse_flags(second))
        o["flags_neg"] = invert
        seen.add("flags")
    elif key == "tcp-option":
        if key in seen:
            raise Problem("Only one `--tcp-option' allowed")
        num = uint(arg or "", 0, 255)
        if num is None:
            raise Problem(f'Bad TCP option "{arg}"')
        o["option"], o["option_neg"] = num, invert
    seen.add(key)


def _udp_ports(inst: Inst, key: str, text: str) -> tuple[int, int]:
    """XTTYPE_PORTRC: `P[:Q]` by getaddrinfo (decimal or any service name); no order check."""
    parts = text.split(":")
    if len(parts) > 2:
        raise Problem(f'{inst.ext.name}: Too many components for option "--{key}" (max: 2)\n')
    values = []
    for part in parts:
        if not part:
            values.append(None)
            continue
        num = int(part) if part.isascii() and part.isdigit() and int(part) <= 65535 else \
            SERVICES["tcp"].get(part, SERVICES["udp"].get(part))
        if num is None:
            raise Problem(f'Port "{part}" does not resolve to anything.\n')
        values.append(num)
    if len(values) == 1:
        return values[0], values[0]  # type: ignore[return-value]
    return (0 if values[0] is None else values[0]), (0xFFFF if values[1] is None else values[1])


def _udp_parse(inst: Inst, key: str, arg: str | None, invert: bool) -> None:
    generic_parse(inst, key, invert)
    side = "sport" if key == "source-port" else "dport"
    inst.opts[side], inst.opts[f"{side}_neg"] = _udp_ports(inst, key, arg or ""), invert
    inst.seen.add(key)


def l4_compat(name: str, o: dict[str, Any]) -> bool:
    """Whether iptables-nft keeps this tcp/udp match as an xtables match (all fields at their
    defaults, or a TCP option) rather than translating it to nf_tables payload matches."""
    inverted = o["sport_neg"] or o["dport_neg"] or o.get("flags_neg", False)
    untouched = o["sport"] == (0, 0xFFFF) and o["dport"] == (0, 0xFFFF) and o.get("flags", (0, 0)) == (0, 0)
    if name == "tcp" and (o.get("option") or o.get("option_neg")):
        return True
    return untouched and not inverted and not o.get("option_neg")


def _save_l4(o: dict[str, Any]) -> list[str]:
    out = []
    for side in ("sport", "dport"):
        lo, hi = o[side]
        if (lo, hi) != (0, 0xFFFF):
            out.append(_neg(o[f"{side}_neg"], f"--{side} {lo}" + (f":{hi}" if hi != lo else "")))
    if o.get("option") or o.get("option_neg"):
        out.append(_neg(o.get("option_neg", False), f"--tcp-option {o['option']}"))
    if "flags" in o and (o["flags"][0] or o.get("flags_neg")):
        m, c = o["flags"]
        out.append(_neg(o.get("flags_neg", False), f"--tcp-flags {_flag_names(m)} {_flag_names(c)}"))
    return out


def _show_l4(name: str, o: dict[str, Any], numeric: bool) -> str:
    parts = [name]
    for side, label in (("sport", "spt"), ("dport", "dpt")):
        lo, hi = o[side]
        bang = "!" if o[f"{side}_neg"] else ""
        if (lo, hi) != (0, 0xFFFF) or bang:
            if lo == hi:
                parts.append(f"{label}:{bang}{port_str(lo, name, numeric)}")
            else:
                parts.append(f"{label}s:{bang}{port_str(lo, name, numeric)}:{port_str(hi, name, numeric)}")
    if o.get("option") or o.get("option_neg"):
        parts.append(f"option={'!' if o.get('option_neg') else ''}{o['option']}")
    if "flags" in o and (o["flags"][0] or o.get("flags_neg")):
        m, c = o["flags"]
        bang = "!" if o.get("flags_neg") else ""
        shown = f"0x{m:02X}/0x{c:02X}" if numeric else f"{_flag_names(m)}/{_flag_names(c)}"
        parts.append(f"flags:{bang}{shown}")
    return " ".join(parts)


# --- icmp ---------------------------------------------------------------------------------------------
ICMP_CODES = [
    ("any", 0xFF, 0, 0xFF), ("echo-reply", 0, 0, 0xFF), ("pong", 0, 0, 0xFF),
    ("destination-unreachable", 3, 0, 0xFF), ("network-unreachable", 3, 0, 0), ("host-unreachable", 3, 1, 1),
    ("protocol-unreachable", 3, 2, 2), ("port-unreachable", 3, 3, 3), ("fragmentation-needed", 3, 4, 4),
    ("source-route-failed", 3, 5, 5), ("network-unknown", 3, 6, 6), ("host-unknown", 3, 7, 7),
    ("network-prohibited", 3, 9, 9), ("host-prohibited", 3, 10, 10), ("TOS-network-unreachable", 3, 11, 11),
    ("TOS-host-unreachable", 3, 12, 12), ("communication-prohibited", 3, 13, 13),
    ("host-precedence-violation", 3, 14, 14), ("precedence-cutoff", 3, 15, 15), ("source-quench", 4, 0, 0xFF),
    ("redirect", 5, 0, 0xFF), ("network-redirect", 5, 0, 0), ("host-redirect", 5, 1, 1),
    ("TOS-network-redirect", 5, 2, 2), ("TOS-host-redirect", 5, 3, 3), ("echo-request", 8, 0, 0xFF),
    ("ping", 8, 0, 0xFF), ("router-advertisement", 9, 0, 0xFF), ("router-solicitation", 10, 0, 0xFF),
    ("time-exceeded", 11, 0, 0xFF), ("ttl-exceeded", 11, 0, 0xFF), ("ttl-zero-during-transit", 11, 0, 0),
    ("ttl-zero-during-reassembly", 11, 1, 1), ("parameter-problem", 12, 0, 0xFF), ("ip-header-bad", 12, 0, 0),
    ("required-option-missing", 12, 1, 1), ("timestamp-request", 13, 0, 0xFF), ("timestamp-reply", 14, 0, 0xFF),
    ("address-mask-request", 17, 0, 0xFF), ("address-mask-reply", 18, 0, 0xFF),
]


def _icmp_parse(inst: Inst, key: str, arg: str | None, invert: bool) -> None:
    """parse_icmp: an unambiguous prefix of a name (any case), or TYPE[/CODE] numbers. Stored as
    netfilter reads it: `type` is ("any", None) or (type, code or None for every code)."""
    generic_parse(inst, key, invert)
    text = arg or ""
    found = None
    for entry in ICMP_CODES:
        if entry[0].lower().startswith(text.lower()):
            if found is not None:
                raise Problem(f"Ambiguous ICMP type `{text}': `{found[0]}' or `{entry[0]}'?")
            found = entry
    if found is not None:
        _name, t, lo, hi = found
    else:
        head, slash, tail = text.partition("/")
        num = uint(head, 0, 255)
        if num is None:
            raise Problem(f"Unknown ICMP type `{text}'")
        t, lo, hi = num, 0, 0xFF
        if slash:
            code = uint(tail, 0, 255)
            if code is None:
                raise Problem(f"Unknown ICMP code `{text}'")
            lo = hi = code
    inst.opts["type"] = ("any", None) if t == 0xFF else (t, None if (lo, hi) == (0, 0xFF) else lo)
    inst.opts["codes"], inst.opts["neg"] = (lo, hi), invert
    inst.seen.add(key)


def _icmp_fields(o: dict[str, Any]) -> tuple[int, int, int]:
    t, _c = o["type"]
    lo, hi = o.get("codes", (0, 0xFF))
    return (0xFF if t == "any" else t), lo, hi


def _save_icmp(o: dict[str, Any]) -> list[str]:
    t, lo, hi = _icmp_fields(o)
    text = "--icmp-type any" if t == 0xFF else f"--icmp-type {t}" + (f"/{lo}" if (lo, hi) != (0, 0xFF) else "")
    return [_neg(o["neg"], text)]


def _show_icmp(o: dict[str, Any], numeric: bool) -> str:
    t, lo, hi = _icmp_fields(o)
    bang = "!" if o["neg"] else ""
    if not numeric:
        name = next((n for n, tt, a, b in ICMP_CODES if (tt, a, b) == (t, lo, hi)), None)
        if name is not None:
            return f"icmp {bang}{name}"
    text = f"icmp {bang}type {t}" if bang else f"icmptype {t}"
    if lo == hi:
        text += f" code {lo}"
    elif (lo, hi) != (0, 0xFF):
        text += f" codes {lo}-{hi}"
    return text


# --- mark, statistic ----------------------------------------------------------------------------------
def _mark_parse(inst: Inst, key: str, arg: str | None, invert: bool) -> None:
    generic_parse(inst, key, invert)
    value, msk = opt_markmask(inst, key, arg or "")
    inst.opts["mark"], inst.opts["neg"] = (value, 0xFFFFFFFF if msk is None else msk), invert
    inst.seen.add(key)


def _save_mark(o: dict[str, Any]) -> list[str]:
    v, m = o["mark"]
    return [_neg(o["neg"], f"--mark 0x{v:x}" + (f"/0x{m:x}" if m != 0xFFFFFFFF else ""))]


def _show_mark(o: dict[str, Any], numeric: bool) -> str:
    v, m = o["mark"]
    return "mark match" + (" !" if o["neg"] else "") + f" 0x{v:x}" + (f"/0x{m:x}" if m != 0xFFFFFFFF else "")


def _statistic_parse(inst: Inst, key: str, arg: str | None, invert: bool) -> None:
    generic_parse(inst, key, invert)
    o, text = inst.opts, arg or ""
    if key == "mode":
        if text not in ("random", "nth"):
            raise Problem(f'Bad mode "{text}"')
        o["mode"] = text
    elif key == "probability":
        p = strtod(text)
        if p is None or not 0.0 <= p <= 1.0:
            raise Problem('statistic: bad value for option "--probability", or out of range (0-1).\n')
        o["p"] = int(p * 0x80000000 + 0.5)
    elif key == "every":
        o["every"] = opt_uint(inst, key, text, 1)
    else:
        o["packet"] = opt_uint(inst, key, text)
    if invert:
        o["neg"] = True
    inst.seen.add(key)


def _statistic_check(inst: Inst) -> None:
    o = inst.opts
    if o["mode"] == "random" and "probability" not in inst.seen:
        raise Problem("--probability must be specified when using random mode")
    if o["mode"] == "nth" and not {"every", "packet"} & inst.seen:
        raise Problem("--every and --packet must be specified when using nth mode")
    if o["packet"] > o["every"] - 1 & 0xFFFFFFFF:
        raise Problem("the --packet p must be 0 <= p <= n-1")


def _save_statistic(o: dict[str, Any]) -> list[str]:
    bang = " !" if o.get("neg") else ""
    if o["mode"] == "random":
        return [f"--mode random{bang}", f"--probability {o['p'] / 0x80000000:.11f}"]
    return [f"--mode nth{bang}", f"--every {o['every']}", f"--packet {o['packet']}"]


def _show_statistic(o: dict[str, Any], numeric: bool) -> str:
    bang = " !" if o.get("neg") else ""
    if o["mode"] == "random":
        return f"statistic mode random{bang} probability {o['p'] / 0x80000000:.11f}"
    return f"statistic mode nth{bang} every {o['every']}" + (f" packet {o['packet']}" if o["packet"] else "")


# --- conntrack, state, addrtype ---------------------------------------------------------------------------
CTSTATES = ["INVALID", "NEW", "RELATED", "ESTABLISHED", "UNTRACKED", "SNAT", "DNAT"]
STATES = ["INVALID", "NEW", "RELATED", "ESTABLISHED", "UNTRACKED"]
CTSTATUS = ["NONE", "EXPECTED", "SEEN_REPLY", "ASSURED", "CONFIRMED"]
ADDRTYPES = ["UNSPEC", "UNICAST", "LOCAL", "BROADCAST", "ANYCAST", "MULTICAST", "BLACKHOLE", "UNREACHABLE",
             "PROHIBIT", "THROW", "NAT", "XRESOLVE"]


def _name_list(text: str, names: list[str], bad: str, last_bad: str | None = None, empty: str | None = None
               ) -> list[str]:
    """A comma list of names (any case, no empty items), in the kernel's bit order. `bad` words
    the error with the unparsed rest of the list, as libxt_* do; `last_bad` the last item and
    `empty` a list ending in a comma, where they word it differently."""
    got, rest = set(), text
    while "," in rest:
        item, _, after = rest.partition(",")
        if item.upper() not in names:
            raise Problem(bad.format(rest))
        got.add(item.upper())
        rest = after
    if not rest and empty is not None:
        raise Problem(empty)
    if rest.upper() not in names:
        raise Problem((last_bad or bad).format(rest))
    got.add(rest.upper())
    return [n for n in names if n in got]


def _conntrack_parse(inst: Inst, key: str, arg: str | None, invert: bool) -> None:
    generic_parse(inst, key, invert)
    o = inst.opts
    if inst.ext.name == "state":
        o["ctstate"] = _name_list(arg or "", STATES, 'Bad state "{}"', empty="`--state' requires a list of states "
                                  "with no spaces, e.g. ESTABLISHED,RELATED")
        o["ctstate_neg"] = invert
    elif key == "ctstate":
        o["ctstate"], o["ctstate_neg"] = _name_list(arg or "", CTSTATES, 'Bad ctstate "{}"'), invert
    else:
        o["ctstatus"], o["ctstatus_neg"] = _name_list(arg or "", CTSTATUS, 'Bad ctstatus "{}"'), invert
    inst.seen.add(key)


def _conntrack_check(inst: Inst) -> None:
    if inst.ext.name == "conntrack" and not inst.seen:
        raise Problem("conntrack: At least one option is required")


def _save_conntrack(o: dict[str, Any]) -> list[str]:
    out = []
    if "ctstate" in o:
        out.append(_neg(o["ctstate_neg"], f"--ctstate {','.join(o['ctstate'])}"))
    if "ctstatus" in o:
        out.append(_neg(o["ctstatus_neg"], f"--ctstatus {','.join(o['ctstatus'])}"))
    return out


def _show_conntrack(o: dict[str, Any], numeric: bool) -> str:
    out = []
    if "ctstate" in o:
        out.append(_neg(o["ctstate_neg"], f"ctstate {','.join(o['ctstate'])}"))
    if "ctstatus" in o:
        out.append(_neg(o["ctstatus_neg"], f"ctstatus {','.join(o['ctstatus'])}"))
    return " ".join(out)


def _addrtype_parse(inst: Inst, key: str, arg: str | None, invert: bool) -> None:
    generic_parse(inst, key, invert)
    o = inst.opts
    if key in ("src-type", "dst-type"):
        side = key[:3]
        o[side] = _name_list(arg or "", ADDRTYPES, "addrtype: bad type `{}'", 'addrtype: bad type "{}"')
        o[f"{side}_neg"] = invert
    else:
        o["limit_in" if key == "limit-iface-in" else "limit_out"] = True
    inst.seen.add(key)


def _addrtype_check(inst: Inst) -> None:
    if not {"src-type", "dst-type"} & inst.seen:
        raise Problem("addrtype: you must specify --src-type or --dst-type")


def _save_addrtype(o: dict[str, Any]) -> list[str]:
    out = [_neg(o[f"{side}_neg"], f"--{side}-type {','.join(o[side])}") for side in ("src", "dst") if side in o]
    return out + ["--limit-iface-in"] * bool(o.get("limit_in")) + ["--limit-iface-out"] * bool(o.get("limit_out"))


def _show_addrtype(o: dict[str, Any], numeric: bool) -> str:
    parts = ["ADDRTYPE match"]
    for side in ("src", "dst"):
        if side in o:
            parts.append(f"{side}-type {'!' if o[f'{side}_neg'] else ''}{','.join(o[side])}")
    return " ".join(parts + ["limit-in"] * bool(o.get("limit_in")) + ["limit-out"] * bool(o.get("limit_out")))


# --- recent -------------------------------------------------------------------------------------------
RECENT_MODES = ("set", "rcheck", "update", "remove")


def _recent_parse(inst: Inst, key: str, arg: str | None, invert: bool) -> None:
    generic_parse(inst, key, invert)
    o, text = inst.opts, arg or ""
    if key in RECENT_MODES:
        o["mode"] = key
        if invert:
            o["neg"] = True
    elif key in ("seconds", "hitcount"):
        o[key] = opt_uint(inst, key, text, 1 if key == "seconds" else 0)
    elif key == "name":
        o["name"] = text[:199]
    elif key == "mask":
        try:
            o["mask"] = struct.unpack("!I", socket.inet_aton(text))[0]
        except OSError:
            raise Problem("getaddrinfo: Name or service not known\n") from None
    elif key in ("rsource", "rdest"):
        o["side"] = "source" if key == "rsource" else "dest"
    else:
        o[key] = True
    inst.seen.add(key)


def _recent_check(inst: Inst) -> None:
    if not set(RECENT_MODES) & inst.seen:
        raise Problem("recent: you must specify one of `--set', `--rcheck' `--update' or `--remove'")


def _save_recent(o: dict[str, Any]) -> list[str]:
    out = _neg(o.get("neg", False), f"--{o['mode']}").split(" ")
    if o.get("seconds"):
        out.append(f"--seconds {o['seconds']}")
    if o.get("reap"):
        out.append("--reap")
    if o.get("hitcount"):
        out.append(f"--hitcount {o['hitcount']}")
    if o.get("rttl"):
        out.append("--rttl")
    return out + [f"--name {o.get('name', 'DEFAULT')}", f"--mask {int2ip(o.get('mask', 0xFFFFFFFF))}",
                  "--rdest" if o.get("side") == "dest" else "--rsource"]


def _show_recent(o: dict[str, Any], numeric: bool) -> str:
    parts = ["!"] if o.get("neg") else []
    parts += ["recent:", {"set": "SET", "rcheck": "CHECK", "update": "UPDATE", "remove": "REMOVE"}[o["mode"]]]
    if o.get("seconds"):
        parts.append(f"seconds: {o['seconds']}")
    if o.get("reap"):
        parts.append("reap")
    if o.get("hitcount"):
        parts.append(f"hit_count: {o['hitcount']}")
    if o.get("rttl"):
        parts.append("TTL-Match")
    return " ".join(parts + [f"name: {o.get('name', 'DEFAULT')}", f"side: {o.get('side', 'source')}",
                             f"mask: {int2ip(o.get('mask', 0xFFFFFFFF))}"])


# --- multiport ------------------------------------------------------------------------------------------
MULTIPORT_PROTOS = {6: "tcp", 17: "udp", 136: "udplite", 132: "sctp", 33: "dccp"}


def _multiport_parse(inst: Inst, key: str, arg: str | None, invert: bool) -> None:
    """libxt_multiport (revision 1): up to 15 ports, a range counting for two."""
    generic_parse(inst, key, invert)
    state = inst.state
    proto, proto_neg = (state.proto, state.proto_neg) if state else (0, False)
    if proto_neg:
        raise Problem("multiport only works with TCP, UDP, UDPLITE, SCTP and DCCP")
    if proto not in MULTIPORT_PROTOS:
        raise Problem("multiport needs `-p tcp', `-p udp', `-p udplite', `-p sctp' or `-p dccp'" if not proto
                      else "multiport only works with TCP, UDP, UDPLITE, SCTP and DCCP")
    pname = MULTIPORT_PROTOS[proto]
    count, ports = 0, []
    for item in (arg or "").split(","):
        if count == 15:
            raise Problem("too many ports specified")
        lo, colon, hi = item.partition(":")
        if colon and count == 14:
            raise Problem("too many ports specified")
        a = parse_port(lo, pname)
        if colon:
            b = parse_port(hi, pname)
            if a >= b:
                raise Problem("invalid portrange specified")
            ports.append((a, b))
            count += 2
        else:
            ports.append((a, a))
            count += 1
    inst.opts["kind"] = {"source-ports": "sports", "destination-ports": "dports"}.get(key, key)
    inst.opts["ports"], inst.opts["neg"], inst.opts["proto"] = ports, invert, pname
    inst.seen.add(key)


def _multiport_check(inst: Inst) -> None:
    if not inst.seen:
        raise Problem("multiport expection an option")


def _ports_list(o: dict[str, Any], numeric: bool) -> str:
    proto = o.get("proto", "tcp")
    return ",".join(port_str(a, proto, numeric) + (f":{port_str(b, proto, numeric)}" if b != a else "")
                    for a, b in o["ports"])


def _save_multiport(o: dict[str, Any]) -> list[str]:
    return [_neg(o["neg"], f"--{o['kind']} {_ports_list(o, True)}")]


def _show_multiport(o: dict[str, Any], numeric: bool) -> str:
    return f"multiport {o['kind']} " + (" !" if o["neg"] else "") + _ports_list(o, numeric)


# --- comment, limit ---------------------------------------------------------------------------------------
def _comment_parse(inst: Inst, key: str, arg: str | None, invert: bool) -> None:
    generic_parse(inst, key, invert)
    inst.opts["comment"] = (arg or "").encode()[:255].decode(errors="ignore")
    inst.seen.add(key)


LIMIT_SCALE = 10000
RATE_UNITS = [("day", LIMIT_SCALE * 24 * 60 * 60), ("hour", LIMIT_SCALE * 60 * 60), ("min", LIMIT_SCALE * 60),
              ("sec", LIMIT_SCALE)]


def _limit_init() -> dict[str, Any]:
    o: dict[str, Any] = {"avg": LIMIT_SCALE * 3600 // 3, "burst": 5}
    _limit_bucket(o)
    return o


def _rate_unit(avg: int) -> tuple[int, int]:
    """The unit print_rate and add_nft_limit choose for an average: (index, multiplier)."""
    i = 1
    while i < len(RATE_UNITS):
        mult = RATE_UNITS[i][1]
        if avg > mult or mult // avg < mult % avg:
            break
        i += 1
    return i - 1, RATE_UNITS[i - 1][1]


def _limit_bucket(o: dict[str, Any]) -> None:
    """The nf_tables limit the rule becomes (rate per unit), the average iptables reads back, and
    the token bucket netfilter runs: `cost` ns per packet, at most `burst` packets of credit."""
    _i, mult = _rate_unit(o["avg"])
    rate, unit = mult // o["avg"], mult // LIMIT_SCALE
    o["avg"] = LIMIT_SCALE * unit // rate
    o["rate"], o["unit"] = rate, unit
    burst = o["burst"] or 5  # the kernel's NFT_LIMIT_PKT_BURST_DEFAULT
    o["burst"] = burst
    o["cost"] = unit * 1_000_000_000 // rate
    o["tokens_max"] = o["cost"] * burst
    o["tokens"], o["last"] = o["tokens_max"], None


def _parse_rate(text: str) -> int:
    """libxt_limit parse_rate: N[/second|minute|hour|day] (any prefix, any case) to the average
    interval in 1/10000 s."""
    mult = 1
    head, slash, unit = text.partition("/")
    if slash:
        if not unit:
            raise Problem(f"bad rate \"{text}\"'")
        for word, seconds in (("second", 1), ("minute", 60), ("hour", 3600), ("day", 86400)):
            if word.startswith(unit.lower()):
                mult = seconds
                break
        else:
            raise Problem(f"bad rate \"{text}\"'")
    m = re.match(r"[ \t\n\v\f\r]*([+-]?[0-9]+)", head)
    r = int(m.group(1)) % (1 << 32) if m else 0  # atoi, stored in a uint32_t
    if r == 0:
        raise Problem(f"bad rate \"{text}\"'")
    avg = LIMIT_SCALE * mult // r
    if avg == 0:
        raise Problem(f'Rate too fast "{text}"')
    return avg


def _limit_parse(inst: Inst, key: str, arg: str | None, invert: bool) -> None:
    generic_parse(inst, key, invert)
    if key == "limit":
        inst.opts["avg"] = _parse_rate(arg or "")
    else:
        inst.opts["burst"] = opt_uint(inst, key, arg or "", 0, 10000)
    _limit_bucket(inst.opts)
    inst.seen.add(key)


def _rate_str(avg: int) -> str:
    i, mult = _rate_unit(avg)
    return f"{mult // avg}/{RATE_UNITS[i][0]}"


def _save_limit(o: dict[str, Any]) -> list[str]:
    return [f"--limit {_rate_str(o['avg'])}"] + ([f"--limit-burst {o['burst']}"] if o["burst"] != 5 else [])


MATCHES: dict[str, Ext] = {
    "tcp": Ext("tcp", [Opt(("source-port", "sport"), flags="I"), Opt(("destination-port", "dport"), flags="I"),
                       Opt(("syn",), arg=False, flags="I"), Opt(("tcp-flags",), flags="I"),
                       Opt(("tcp-option",), flags="I")],
               _tcp_parse, _save_l4, lambda o, n: _show_l4("tcp", o, n), _l4_init, generic=False),
    "udp": Ext("udp", [Opt(("source-port", "sport"), flags="I"), Opt(("destination-port", "dport"), flags="I")],
               _udp_parse, _save_l4, lambda o, n: _show_l4("udp", o, n), _l4_init),
    "icmp": Ext("icmp", [Opt(("icmp-type",), flags="IR")], _icmp_parse, _save_icmp, _show_icmp),
    "mark": Ext("mark", [Opt(("mark",), flags="IR")], _mark_parse, _save_mark, _show_mark),
    "statistic": Ext("statistic", [Opt(("mode",), flags="R"),
                                   Opt(("probability",), flags="I", excl=("every", "packet")),
                                   Opt(("every",), flags="I", also=("packet",)), Opt(("packet",), also=("every",))],
                     _statistic_parse, _save_statistic, _show_statistic,
                     lambda: {"mode": "random", "every": 1, "packet": 0}, _statistic_check),
    "conntrack": Ext("conntrack", [Opt(("ctstate",), flags="I"), Opt(("ctstatus",), flags="I")],
                     _conntrack_parse, _save_conntrack, _show_conntrack, check=_conntrack_check),
    "state": Ext("state", [Opt(("state",), flags="IR")], _conntrack_parse,
                 lambda o: [_neg(o["ctstate_neg"], f"--state {','.join(o['ctstate'])}")],
                 lambda o, n: _neg(o["ctstate_neg"], f"state {','.join(o['ctstate'])}")),
    "addrtype": Ext("addrtype", [Opt(("src-type",), flags="I"), Opt(("dst-type",), flags="I"),
                                 Opt(("limit-iface-in",), arg=False, excl=("limit-iface-out",)),
                                 Opt(("limit-iface-out",), arg=False, excl=("limit-iface-in",))],
                    _addrtype_parse, _save_addrtype, _show_addrtype, check=_addrtype_check),
    "recent": Ext("recent", [Opt((m,), arg=False, flags="I", excl=tuple(x for x in RECENT_MODES if x != m))
                             for m in RECENT_MODES]
                  + [Opt(("seconds",)), Opt(("reap",), arg=False, also=("seconds",)), Opt(("hitcount",)),
                     Opt(("rttl",), arg=False), Opt(("name",)), Opt(("rsource",), arg=False),
                     Opt(("rdest",), arg=False), Opt(("mask",))],
                  _recent_parse, _save_recent, _show_recent, check=_recent_check),
    "multiport": Ext("multiport", [Opt(("source-ports", "sports"), flags="I",
                                       excl=("destination-ports", "ports")),
                                   Opt(("destination-ports", "dports"), flags="I", excl=("source-ports", "ports")),
                                   Opt(("ports",), flags="I", excl=("source-ports", "destination-ports"))],
                     _multiport_parse, _save_multiport, _show_multiport, check=_multiport_check),
    "comment": Ext("comment", [Opt(("comment",), flags="R")], _comment_parse,
                   lambda o: [f"--comment {save_string(o['comment'])}"], lambda o, n: f"/* {o['comment']} */"),
    "limit": Ext("limit", [Opt(("limit",)), Opt(("limit-burst",))], _limit_parse, _save_limit,
                 lambda o, n: f"limit: avg {_rate_str(o['avg'])} burst {o['burst']}", _limit_init),
}


# --- targets ------------------------------------------------------------------------------------------
REJECT_TABLE = [("icmp-net-unreachable", "net-unreach", (3, 0)), ("icmp-host-unreachable", "host-unreach", (3, 1)),
                ("icmp-proto-unreachable", "proto-unreach", (3, 2)), ("icmp-port-unreachable", "port-unreach", (3, 3)),
                ("icmp-net-prohibited", "net-prohib", (3, 9)), ("icmp-host-prohibited", "host-prohib", (3, 10)),
                ("tcp-reset", "tcp-rst", (None, None)), ("icmp-admin-prohibited", "admin-prohib", (3, 13))]
REJECT_TYPES: dict[str, tuple[int | None, int | None]] = {}
for _name, _alias, _what in REJECT_TABLE:
    REJECT_TYPES[_name] = REJECT_TYPES[_alias] = _what
NAT_PORT_PROTOS = {6, 17, 132, 33, 1}


def _reject_parse(inst: Inst, key: str, arg: str | None, invert: bool) -> None:
    """libipt_REJECT: the first name or alias the argument is a prefix of (any case)."""
    generic_parse(inst, key, invert)
    text = arg or ""
    for name, alias, _what in REJECT_TABLE:
        if name.lower().startswith(text.lower()) or alias.lower().startswith(text.lower()):
            inst.opts["with"] = name
            inst.seen.add(key)
            return
    if "echo-reply".startswith(text.lower()) or "echoreply".startswith(text.lower()):
        if inst.state is not None:
            inst.state.warnings.append("--reject-with echo-reply no longer supported\n")
    raise Problem(f'unknown reject type "{text}"')


def _inet_pton(text: str) -> int | None:
    """inet_pton(AF_INET): exactly four decimal parts, no leading zeros."""
    parts = text.split(".")
    if len(parts) != 4 or any(not p.isascii() or not p.isdigit() or (len(p) > 1 and p[0] == "0") or int(p) > 255
                              for p in parts):
        return None
    return struct.unpack("!I", bytes(int(p) for p in parts))[0]


def _nat_ports(text: str, portok: bool) -> tuple[int, int, int | None]:
    """parse_ports of libxt_NAT: `P`, `P-Q` or `P-Q/BASE`, any C base."""
    if not portok:
        raise Problem("Need TCP, UDP, SCTP or DCCP with port specification")
    first = strtoui(text, 0, 65535, whole=False)
    if first is None:
        raise Problem(f"Port `{text}' not valid")
    port, rest = first
    if not rest:
        return port, port, None
    if rest[0] == ":":
        raise Problem("Invalid port:port syntax - use dash")
    if rest[0] != "-":
        raise Problem(f"Garbage after port value: `{rest}'")
    after_dash = rest[1:]
    second = strtoui(after_dash, 0, 65535, whole=False)
    if second is None:
        raise Problem(f"Port `{after_dash}' not valid")
    maxport, rest = second
    if maxport < port:
        raise Problem(f"Port range `{after_dash}' funky")
    if not rest:
        return port, maxport, None
    if rest[0] != "/":
        raise Problem(f"Garbage after port range: `{rest}'")
    base = uint(rest[1:], 0, 65535)
    if base is None:
        raise Problem(f"Port `{rest[1:]}' not valid")
    return port, maxport, base


def _nat_range(text: str, portok: bool) -> dict[str, Any]:
    """parse_to of DNAT/SNAT: `[IP[-IP]][:PORT[-PORT[/BASE]]]`, stored canonically."""
    out: dict[str, Any] = {"addr": (None, None)}  # (None, None): no address given, only ports
    addr_part, colon, ports = text.partition(":")
    if colon:
        lo, hi, base = _nat_ports(ports, portok)
        out["ports"] = (lo, hi)
        if base is not None:
            out["base"] = base
    if not colon or addr_part:
        first, dash, second = addr_part.partition("-")
        a = _inet_pton(first)
        if a is None:
            raise Problem(f'Bad IP address "{first}"')
        b = _inet_pton(second) if dash else a
        if b is None:
            raise Problem(f'Bad IP address "{second}"')
        out["addr"] = (a, b)
    out["to"] = _range_str(out)
    return out


def _range_str(o: dict[str, Any]) -> str:
    """print_range: the address range, then `:PORT[-PORT][/BASE]`."""
    text = ""
    a, b = o.get("addr", (None, None))
    if a is not None:
        text = int2ip(a) + (f"-{int2ip(b)}" if b != a else "")
    if "ports" in o:
        lo, hi = o["ports"]
        text += f":{lo}" + (f"-{hi}" if hi != lo else "") + (f"/{o['base']}" if "base" in o else "")
    return text


def _nat_parse(inst: Inst, key: str, arg: str | None, invert: bool) -> None:
    generic_parse(inst, key, invert)
    state = inst.state
    portok = state is not None and state.proto in NAT_PORT_PROTOS
    if key in ("to-destination", "to-source"):
        inst.opts.update(_nat_range(arg or "", portok))
    elif key == "to-ports":
        lo, hi, _base = _nat_ports(arg or "", portok and state is not None and state.proto != 1)
        inst.opts["ports"] = (lo, hi)
    else:
        inst.opts[key] = True
    inst.seen.add(key)


def _nat_flags(o: dict[str, Any], dashes: str) -> list[str]:
    return [f"{dashes}{f}" for f in ("random", "random-fully", "persistent") if o.get(f)]


def _ports_text(o: dict[str, Any], sep: str) -> str:
    lo, hi = o["ports"]
    return f"{sep}{lo}" + (f"-{hi}" if hi != lo else "")


def _mark_target_parse(inst: Inst, key: str, arg: str | None, invert: bool) -> None:
    """libxt_MARK revision 2: every flavour becomes a value and a mask (--set-xmark)."""
    generic_parse(inst, key, invert)
    o, text = inst.opts, arg or ""
    if key in ("set-xmark", "set-mark"):
        value, msk = opt_markmask(inst, key, text)
        if msk is None:
            msk = 0xFFFFFFFF
        elif key == "set-mark":
            msk |= value
        o["value"], o["mask"] = value, msk
    else:
        v = opt_uint(inst, key, text)
        o["value"], o["mask"] = {"and-mark": (0, ~v & 0xFFFFFFFF), "or-mark": (v, v), "xor-mark": (v, 0)}[key]
    inst.seen.add(key)


def _mark_target_check(inst: Inst) -> None:
    if not inst.seen:
        raise Problem("MARK: One of the --set-xmark, --{and,or,xor,set}-mark options is required")


def _show_mark_target(o: dict[str, Any], numeric: bool) -> str:
    """mark_tg_print: the flavour the value and mask read as."""
    v, m = o["value"], o["mask"]
    if v == 0:
        return f"MARK and 0x{~m & 0xFFFFFFFF:x}"
    if v == m:
        return f"MARK or 0x{v:x}"
    if m == 0:
        return f"MARK xor 0x{v:x}"
    if m == 0xFFFFFFFF:
        return f"MARK set 0x{v:x}"
    return f"MARK xset 0x{v:x}/0x{m:x}"


LOG_LEVELS = {"alert": 1, "crit": 2, "debug": 7, "emerg": 0, "error": 3, "info": 6, "notice": 5, "panic": 0,
              "warning": 4}
LOG_LEVEL_NAMES = ["emerg", "alert", "crit", "err", "warn", "notice", "info", "debug"]
LOG_FLAGS = [("log-tcp-sequence", 0x01, "tcp-sequence"), ("log-tcp-options", 0x02, "tcp-options"),
             ("log-ip-options", 0x04, "ip-options"), ("log-uid", 0x08, "uid"), ("log-macdecode", 0x20, "macdecode")]


def _log_parse(inst: Inst, key: str, arg: str | None, invert: bool) -> None:
    generic_parse(inst, key, invert)
    o, text = inst.opts, arg or ""
    if key == "log-level":
        level = uint(text, 0, 7)
        if level is None:
            level = LOG_LEVELS.get(text)
        if level is None:
            raise Problem(f'log level "{text}" unknown\n')
        o["level"] = str(level)
    elif key == "log-prefix":
        if not text:
            raise Problem("Argument must have a minimum length of 1 characters\n")
        if "\n" in text:
            raise Problem("Newlines not allowed in --log-prefix")
        o["prefix"] = text.encode()[:29].decode(errors="ignore")
    else:
        o["flags"] = o.get("flags", 0) | next(bit for name, bit, _ in LOG_FLAGS if name == key)
    inst.seen.add(key)


def _save_log(o: dict[str, Any]) -> list[str]:
    out = [f"--log-prefix {save_string(o['prefix'])}"] if o.get("prefix") else []
    if o.get("level", "4") != "4":
        out.append(f"--log-level {o['level']}")
    return out + [f"--{name}" for name, bit, _ in LOG_FLAGS if o.get("flags", 0) & bit]


def _show_log(o: dict[str, Any], numeric: bool) -> str:
    level = int(o.get("level", "4"))
    if numeric:
        text = f"LOG flags {o.get('flags', 0)} level {level}"
    else:
        text = f"LOG level {LOG_LEVEL_NAMES[level]}" + "".join(f" {word}" for _, bit, word in LOG_FLAGS
                                                                if o.get("flags", 0) & bit)
    return text + (f' prefix "{o["prefix"]}"' if o.get("prefix") else "")


def _target_parse_generic(inst: Inst, key: str, arg: str | None, invert: bool) -> None:
    generic_parse(inst, key, invert)
    inst.seen.add(key)


TARGETS: dict[str, Ext] = {
    "REJECT": Ext("REJECT", [Opt(("reject-with",))], _reject_parse, lambda o: [f"--reject-with {o['with']}"],
                  lambda o, n: f"reject-with {o['with']}", lambda: {"with": "icmp-port-unreachable"}),
    "DNAT": Ext("DNAT", [Opt(("to-destination",), flags="R"), Opt(("random",), arg=False),
                         Opt(("persistent",), arg=False)], _nat_parse,
                lambda o: [f"--to-destination {o['to']}"] + _nat_flags(o, "--"),
                lambda o, n: " ".join([f"to:{o['to']}"] + _nat_flags(o, ""))),
    "SNAT": Ext("SNAT", [Opt(("to-source",), flags="R"), Opt(("random",), arg=False),
                         Opt(("random-fully",), arg=False), Opt(("persistent",), arg=False)], _nat_parse,
                lambda o: [f"--to-source {o['to']}"] + _nat_flags(o, "--"),
                lambda o, n: " ".join([f"to:{o['to']}"] + _nat_flags(o, ""))),
    "MASQUERADE": Ext("MASQUERADE", [Opt(("to-ports",)), Opt(("random",), arg=False),
                                     Opt(("random-fully",), arg=False)], _nat_parse,
                      lambda o: ([_ports_text(o, "--to-ports ")] if "ports" in o else []) + _nat_flags(o, "--"),
                      lambda o, n: " ".join(([_ports_text(o, "masq ports: ")] if "ports" in o else [])
                                            + _nat_flags(o, ""))),
    "REDIRECT": Ext("REDIRECT", [Opt(("to-ports",)), Opt(("random",), arg=False)], _nat_parse,
                    lambda o: ([_ports_text(o, "--to-ports ")] if "ports" in o else []) + _nat_flags(o, "--"),
                    lambda o, n: " ".join(([_ports_text(o, "redir ports ")] if "ports" in o else [])
                                          + _nat_flags(o, ""))),
    "MARK": Ext("MARK", [Opt((name,), excl=tuple(x for x in ("set-xmark", "set-mark", "and-mark", "or-mark",
                                                                 "xor-mark") if x != name))
                         for name in ("set-xmark", "set-mark", "and-mark", "or-mark", "xor-mark")],
                _mark_target_parse, lambda o: [f"--set-xmark 0x{o['value']:x}/0x{o['mask']:x}"], _show_mark_target,
                check=_mark_target_check),
    "LOG": Ext("LOG", [Opt(("log-level",)), Opt(("log-prefix",))]
               + [Opt((name,), arg=False) for name, _, _ in LOG_FLAGS], _log_parse, _save_log, _show_log),
    "TRACE": Ext("TRACE", [], _target_parse_generic, lambda o: [], lambda o, n: ""),
}
# Where the kernel lets a target run: its table, and the hooks of the base chains reaching it.
TARGET_PLACES: dict[str, tuple[str | None, set[str]]] = {
    "DNAT": ("nat", {"PREROUTING", "OUTPUT"}), "REDIRECT": ("nat", {"PREROUTING", "OUTPUT"}),
    "SNAT": ("nat", {"POSTROUTING", "INPUT"}), "MASQUERADE": ("nat", {"POSTROUTING"}),
    "REJECT": ("filter", {"INPUT", "FORWARD", "OUTPUT"}),
}


# --- rules, chains, tables ---------------------------------------------------------------------------
@dataclass
class Match:
    """One `-m NAME ...` match: its options, as iptables-save prints them and netfilter reads them."""

    name: str
    opts: dict[str, Any] = field(default_factory=dict)

    def save(self) -> str:
        return f"-m {self.name}" + "".join(" " + part for part in MATCHES[self.name].save(self.opts))

    def show(self, numeric: bool = True) -> str:
        return MATCHES[self.name].show(self.opts, numeric)


@dataclass
class Target:
    """The `-j`/`-g` part: a verdict, an extension with options, or a user chain."""

    name: str
    opts: dict[str, Any] = field(default_factory=dict)
    goto: bool = False

    def save(self) -> str:
        flag = "-g" if self.goto else "-j"
        if self.name in TARGETS:
            return f"{flag} {self.name}" + "".join(" " + p for p in TARGETS[self.name].save(self.opts))
        return f"{flag} {self.name}"

    def show(self, numeric: bool = True) -> str:
        return TARGETS[self.name].show(self.opts, numeric) if self.name in TARGETS else ""


@dataclass
class Rule:
    """One rule in canonical form, with its counters. `src`/`dst` are (address, prefix length);
    a mask that is not a prefix is kept whole in `src_mask`/`dst_mask` (None otherwise)."""

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
    src_mask: int | None = None
    dst_mask: int | None = None

    def netmask(self, side: str) -> int:
        """The whole mask of the source or destination address (0 when there is none)."""
        pair, whole = (self.src, self.src_mask) if side == "src" else (self.dst, self.dst_mask)
        if pair is None:
            return 0
        if whole is not None:
            return whole
        return (0xFFFFFFFF << (32 - pair[1])) & 0xFFFFFFFF if pair[1] else 0

    def spec(self, counters: tuple[int, int] | None = None) -> str:
        """The rule as iptables-save prints it after `-A CHAIN` (`-c P B` before the target with -S -v)."""
        parts = []
        for side, flag in (("src", "-s"), ("dst", "-d")):
            pair = getattr(self, side)
            if pair is not None:
                netmask = self.netmask(side)
                parts.append(_neg(getattr(self, f"{side}_neg"), f"{flag} {int2ip(pair[0])}/{mask_str(netmask)}"))
        if self.iif is not None:
            parts.append(_neg(self.iif_neg, f"-i {self.iif}"))
        if self.oif is not None:
            parts.append(_neg(self.oif_neg, f"-o {self.oif}"))
        if self.proto:
            parts.append(_neg(self.proto_neg, f"-p {proto_name(self.proto) or self.proto}"))
        if self.frag is not None:
            parts.append("-f" if self.frag else "! -f")
        parts += [m.save() for m in self.matches]
        if counters is not None:
            parts.append(f"-c {counters[0]} {counters[1]}")
        if self.target is not None:
            parts.append(self.target.save())
        return " ".join(parts)

    def key(self) -> str:
        """What makes two rules the same for `-D` and `-C`: everything but the counters."""
        return self.spec()


@dataclass
class Chain:
    """A chain: built-in ones have a policy (and exist in the kernel only once `present`)."""

    name: str
    policy: str | None = None  # None for a user chain
    rules: list[Rule] = field(default_factory=list)
    pkts: int = 0
    bytes: int = 0
    present: bool = True


class Table:
    """One table: its chains (built-in ones always listed), and whether nf_tables has it yet."""

    def __init__(self, name: str, *, present: bool = True) -> None:
        self.name = name
        self.present = present
        self.chains: dict[str, Chain] = {c: Chain(c, "ACCEPT", present=present) for c in BUILTIN[name]}

    def clone(self) -> Table:
        """A copy to change in a transaction: new chains and rule lists, the rules themselves shared
        (a transaction replaces a rule rather than changing it, so the original stays intact)."""
        other = Table.__new__(Table)
        other.name, other.present = self.name, self.present
        other.chains = {name: Chain(c.name, c.policy, list(c.rules), c.pkts, c.bytes, c.present)
                        for name, c in self.chains.items()}
        return other

    def ordered(self) -> list[Chain]:
        """Built-in chains in kernel order, then user chains by name (iptables-save's order)."""
        builtin = [self.chains[c] for c in BUILTIN[self.name]]
        return builtin + sorted((c for c in self.chains.values() if c.policy is None), key=lambda c: c.name)

    def user_chains(self) -> list[Chain]:
        return [c for c in self.ordered() if c.policy is None]

    def references(self, name: str) -> int:
        return sum(1 for c in self.chains.values() for r in c.rules if r.target and r.target.name == name)

    def touch(self, chain: str | None = None) -> None:
        """Something was created: the table exists now, and so does a built-in `chain`."""
        self.present = True
        if chain is not None and chain in self.chains:
            self.chains[chain].present = True


# --- the command line: getopt_long as xtables drives it ----------------------------------------------
# optstring "-:A:C:D:E:F::I:L::M:N:P:VX::Z::c:d:i:j:o:p:s:t:vR:S::W::46fg:h::m:nw::x": 0 none, 1 required, 2 optional
SHORT_OPTS = {"A": 1, "C": 1, "D": 1, "E": 1, "F": 2, "I": 1, "L": 2, "M": 1, "N": 1, "P": 1, "V": 0, "X": 2,
              "Z": 2, "c": 1, "d": 1, "i": 1, "j": 1, "o": 1, "p": 1, "s": 1, "t": 1, "v": 0, "R": 1, "S": 2,
              "W": 2, "4": 0, "6": 0, "f": 0, "g": 1, "h": 2, "m": 1, "n": 0, "w": 2, "x": 0}
LONG_OPTS: list[tuple[str, int, Any]] = [
    ("append", 1, "A"), ("delete", 1, "D"), ("check", 1, "C"), ("insert", 1, "I"), ("replace", 1, "R"),
    ("list", 2, "L"), ("list-rules", 2, "S"), ("flush", 2, "F"), ("zero", 2, "Z"), ("new-chain", 1, "N"),
    ("delete-chain", 2, "X"), ("rename-chain", 1, "E"), ("policy", 1, "P"), ("source", 1, "s"),
    ("destination", 1, "d"), ("src", 1, "s"), ("dst", 1, "d"), ("protocol", 1, "p"), ("in-interface", 1, "i"),
    ("jump", 1, "j"), ("table", 1, "t"), ("match", 1, "m"), ("numeric", 0, "n"), ("out-interface", 1, "o"),
    ("verbose", 0, "v"), ("wait", 2, "w"), ("wait-interval", 2, "W"), ("exact", 0, "x"), ("fragments", 0, "f"),
    ("version", 0, "V"), ("help", 2, "h"), ("line-numbers", 0, "0"), ("modprobe", 1, "M"),
    ("set-counters", 1, "c"), ("goto", 1, "g"), ("ipv4", 0, "4"), ("ipv6", 0, "6"),
]


class GetOpt:
    """GNU getopt_long in RETURN_IN_ORDER mode with `:` for a missing argument, as xtables calls
    it: `next` returns (key, argument), key 1 for a word that is no option, '?' for an unknown or
    ambiguous option, ':' for a missing argument, or None at the end."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.optind = 0
        self.rest = ""  # what is left of a cluster of short options
        self.text = ""  # the word the last option came from
        self.optopt = ""
        self._mark = (0, "")

    def peek(self) -> str | None:
        return self.argv[self.optind] if self.optind < len(self.argv) else None

    def take(self) -> str:
        self.optind += 1
        return self.argv[self.optind - 1]

    def has_arg(self) -> bool:
        """xs_has_arg: a next word that starts with neither `-` nor `!`."""
        word = self.peek()
        return word is not None and word[:1] not in ("-", "!")

    def retry(self) -> None:
        """Reads the last option again (after an extension brought new options)."""
        self.optind, self.rest = self._mark

    def next(self, longopts: list[tuple[str, int, Any]]) -> tuple[Any, str | None] | None:
        self._mark = (self.optind, self.rest)
        if self.rest:
            return self._short()
        word = self.peek()
        if word is None:
            return None
        if word == "--":
            self.optind += 1
            return None
        self.optind += 1
        self.text = word
        if word.startswith("--"):
            return self._long(word[2:], longopts)
        if word.startswith("-") and word != "-":
            self.rest = word[1:]
            return self._short()
        return 1, word

    def _long(self, body: str, longopts: list[tuple[str, int, Any]]) -> tuple[Any, str | None]:
        name, eq, value = body.partition("=")
        found = [o for o in longopts if o[0] == name][:1] or [o for o in longopts if o[0].startswith(name)]
        if not found or any((o[1], o[2]) != (found[0][1], found[0][2]) for o in found[1:]):
            self.optopt = ""
            return "?", None
        _name, has, key = found[0]
        if eq:
            return (key, value) if has else ("?", None)
        if has == 1:
            if self.optind < len(self.argv):
                return key, self.take()
            return ":", None
        return key, None

    def _short(self) -> tuple[Any, str | None]:
        c, self.rest = self.rest[0], self.rest[1:]
        self.optopt = c
        has = SHORT_OPTS.get(c)
        if has is None:
            return "?", None
        if not has:
            return c, None
        if self.rest:
            value, self.rest = self.rest, ""
            return c, value
        if has == 2:
            return c, None
        if self.optind < len(self.argv):
            return c, self.take()
        return ":", None


# command bits (CMD_*) and options (OPT_*), in the order of xtables' tables
CMD_BITS = {"I": 0x1, "D": 0x2, "DN": 0x4, "R": 0x8, "A": 0x10, "L": 0x20, "F": 0x40, "Z": 0x80, "N": 0x100,
            "X": 0x200, "P": 0x400, "E": 0x800, "S": 0x1000, "ZN": 0x2000, "C": 0x4000}
CMD_CHARS = "IDDRALFZNXPESZC"
OPT_CHARS = "nsdpjvxio0cf"
INVERTIBLE = set("sdpiof")
# commands_v_options: per command (bit order), per option (OPT_CHARS order), x = illegal
LEGAL = ["x     x  x  ", "x     x  xx ", "xxxxx xxxxxx", "x     x  x  ", "x     x  x  ", " xxxx  xx xx",
         "xxxxx xxxxxx", "xxxxx xxxxxx", "xxxxx xxxxxx", "xxxxx xxxxxx", "xxxxx xxxx x", "xxxxx xxxxxx",
         "xxxxx xxxxxx", "xxxxx xxxxxx", "x     x  xx "]
RULE_CMDS = CMD_BITS["A"] | CMD_BITS["I"] | CMD_BITS["R"] | CMD_BITS["D"] | CMD_BITS["C"]


def cmd_char(bits: int) -> str:
    """cmd2char: the letter of the highest command bit."""
    return CMD_CHARS[bits.bit_length() - 1]


@dataclass
class Parsed:
    """Everything do_parse gathers from one command line."""

    getopt: GetOpt
    restore: bool = False
    table: str = "filter"
    table_set: bool = False
    command: int = 0
    chain: str | None = None
    rulenum: int = 0
    newname: str | None = None
    policy: str | None = None
    options: int = 0
    inv: set[str] = field(default_factory=set)
    proto: int = 0
    proto_neg: bool = False
    protocol: str | None = None
    proto_used: bool = False
    shost: str | None = None
    dhost: str | None = None
    iif: str | None = None
    oif: str | None = None
    matches: list[Inst] = field(default_factory=list)
    target: Inst | None = None
    jumpto: str = ""
    goto: bool = False
    counters: tuple[int, int] = (0, 0)
    verbose: int = 0
    wait: int = 0
    wait_interval: bool = False
    warnings: list[str] = field(default_factory=list)
    loaded: list[Inst] = field(default_factory=list)  # extensions in load order (for their options)
    saddrs: list[tuple[int, int]] = field(default_factory=list)
    daddrs: list[tuple[int, int]] = field(default_factory=list)
    ignore: bool = False  # iptables-restore skips the line (-6)

    def has(self, ch: str) -> bool:
        return bool(self.options & (1 << OPT_CHARS.index(ch)))

    def longopts(self) -> list[tuple[str, int, Any]]:
        """The base options, then the options of the extensions, the latest loaded first."""
        if not self.loaded:
            return LONG_OPTS
        out = list(LONG_OPTS)
        for inst in reversed(self.loaded):
            out += [(name, int(o.arg), (id(inst), o.key)) for o in inst.ext.opts for name in o.names]
        return out

    def set_option(self, ch: str, invert: bool) -> None:
        """set_option: each option once, `!` only before the invertible ones."""
        bit = 1 << OPT_CHARS.index(ch)
        if self.options & bit:
            raise Problem(f"multiple -{ch} flags not allowed")
        self.options |= bit
        if invert:
            if ch not in INVERTIBLE:
                raise Problem(f"cannot have ! before -{ch}")
            self.inv.add(ch)

    def add_command(self, letter: str, others: int, invert: bool) -> None:
        if invert:
            raise Problem("unexpected '!' flag")
        new = CMD_BITS[letter]
        if self.command & ~others:
            raise Problem(f"Cannot use -{cmd_char(new)} with -{cmd_char(self.command & ~others)}")
        self.command |= new

    def load(self, ext: Ext) -> Inst:
        inst = Inst(ext, ext.init(), state=self)
        self.loaded.append(inst)
        return inst


def parse_chain_name(name: str) -> None:
    """parse_chain (`-N`): short enough, no leading -/!, no target's name, no blanks."""
    if len(name) >= NAME_MAX:
        raise Problem(f"chain name `{name}' too long (must be under {NAME_MAX} chars)")
    if name[:1] in ("-", "!"):
        raise Problem(f"chain name not allowed to start with `{name[0]}'")
    if name in TARGET_LIBS or name == "":
        raise Problem("chain name may not clash with target name")
    if any(c in _SPACE for c in name):
        raise Problem(f"Invalid chain name `{name}'")


def parse_target_name(name: str) -> str:
    """xt_parse_target: 1 to 28 characters, no blanks."""
    if not name:
        raise Problem("Invalid target name (too short)")
    if len(name) >= NAME_MAX:
        raise Problem(f"Invalid target name `{name}' ({NAME_MAX - 1} chars max)")
    if any(c in _SPACE for c in name):
        raise Problem(f"Invalid target name `{name}'")
    return name


def rulenumber(text: str) -> int:
    num = uint(text, 1, 0x7FFFFFFF)
    if num is None:
        raise Problem(f"Invalid rule number `{text}'")
    return num


def parse_command(argv: list[str], *, restore: bool = False) -> Parsed:
    """do_parse of xtables 1.8.9, error for error in the same order."""
    p = Parsed(GetOpt(argv), restore=restore)
    try:
        _parse_options(p)
    except Problem as exc:
        exc.prefix = "".join(p.warnings)
        raise
    return p


def _parse_options(p: Parsed) -> None:
    invert = False
    while True:
        got = p.getopt.next(p.longopts())
        if got is None:
            break
        key, arg = got
        if key == 1:
            if arg == "!":
                if invert:
                    raise Problem("multiple consecutive ! not allowed")
                invert = True
                continue
            raise Problem(f"Bad argument `{arg}'", bare=True)
        if isinstance(key, tuple):
            inst = next(i for i in p.loaded if id(i) == key[0])
            inst.ext.parse(inst, key[1], arg, invert)
        elif isinstance(key, str) and len(key) == 1 and key not in "?:":
            if _parse_base(p, key, arg, invert):
                return
        else:
            if _load_proto(p):
                p.getopt.retry()
                continue
            if key == ":":
                raise Problem(f'option "{p.getopt.text}" requires an argument')
            word = p.getopt.text if p.getopt.text.startswith("--") else f"-{p.getopt.optopt}"
            raise Problem(f'unknown option "{word}"')
        invert = False
    _finish_parse(p, invert)


def _load_proto(p: Parsed) -> bool:
    """load_proto: an unknown option may belong to the `-p` protocol's match; load it once."""
    if p.protocol is None or p.proto_used:
        return False
    num = uint(p.protocol, 0, 255)
    name = (proto_name(num, nolookup=p.has("n")) if num is not None else p.protocol)
    if name not in MATCHES:
        return False
    p.proto_used = True
    p.matches.append(p.load(MATCHES[name]))
    return True


def _parse_base(p: Parsed, key: str, arg: str | None, invert: bool) -> bool:
    """One base option of do_parse; True when iptables-restore is to skip the line (-6)."""
    if key in "ACIRDEPNLSFZX":
        _parse_command_letter(p, key, arg, invert)
    elif key in "psdjgiofnx0vm":
        _parse_rule_option(p, key, arg, invert)
    else:
        return _parse_other(p, key, arg, invert)
    return False


def _parse_command_letter(p: Parsed, key: str, arg: str | None, invert: bool) -> None:
    """-A -C -I -R -D -E -P -N take a chain (and more words); -L -S -F -Z -X an optional one."""
    g = p.getopt
    if key in "LSFZX":
        others = {"L": CMD_BITS["Z"] | CMD_BITS["ZN"], "S": CMD_BITS["Z"] | CMD_BITS["ZN"],
                  "Z": CMD_BITS["L"] | CMD_BITS["S"]}.get(key, 0)
        p.add_command(key, others, invert)
        if arg is not None:
            p.chain = arg
        elif g.has_arg():
            p.chain = g.take()
        if key in "LSZ" and g.has_arg():
            p.rulenum = rulenumber(g.take())
            if key == "Z":
                p.command = CMD_BITS["ZN"]
        return
    if key == "N":
        parse_chain_name(arg or "")
    p.add_command(key, 0, invert)
    p.chain = arg
    if key == "D" and g.has_arg():
        p.rulenum = rulenumber(g.take())
        p.command = CMD_BITS["DN"]
    elif key in "RI":
        if g.has_arg():
            p.rulenum = rulenumber(g.take())
        elif key == "R":
            raise Problem("-R requires a rule number")
        else:
            p.rulenum = 1
    elif key == "E":
        if not g.has_arg():
            raise Problem("-E requires old-chain-name and new-chain-name")
        p.newname = g.take()
    elif key == "P":
        if not g.has_arg():
            raise Problem("-P requires a chain and a policy")
        p.policy = g.take()


def _parse_rule_option(p: Parsed, key: str, arg: str | None, invert: bool) -> None:
    """-p -s -d -j -g -i -o -f, the listing flags -n -x --line-numbers -v, and -m."""
    if key == "p":
        p.set_option("p", invert)
        p.protocol = (arg or "").lower()
        p.proto, p.proto_neg = parse_protocol(p.protocol), invert
        if p.proto == 0 and invert:
            raise Problem("rule would never match protocol")
    elif key in "sd":
        p.set_option(key, invert)
        setattr(p, f"{key}host", arg)
    elif key in "jg":
        p.set_option("j", invert)
        p.jumpto = parse_target_name(arg or "")
        p.goto = key == "g"
        if key == "j" and p.jumpto in TARGETS:
            p.target = p.load(TARGETS[p.jumpto])
    elif key in "io":
        if not arg:
            raise Problem("Empty interface is likely to be undesired")
        p.set_option(key, invert)
        setattr(p, f"{key}if", parse_interface(arg, p.warnings))
    elif key == "v":
        if not p.verbose:
            p.set_option("v", invert)
        p.verbose += 1
    elif key == "m":
        if invert:
            raise Problem("unexpected ! flag before --match")
        if arg not in MATCHES:
            raise Problem(f"Couldn't load match `{arg}':No such file or directory\n")
        p.matches.append(p.load(MATCHES[arg]))
    else:
        p.set_option(key, invert)


def _parse_other(p: Parsed, key: str, arg: str | None, invert: bool) -> bool:
    """-t, -w/-W, -c, -h, -V and -4/-6 (-M is accepted and ignored)."""
    if key == "t":
        if invert:
            raise Problem("unexpected ! flag before --table")
        if p.restore and p.table_set:
            raise Problem("The -t option cannot be used in iptables-restore.\n")
        p.table, p.table_set = arg or "", True
    elif key in "wW":
        _parse_wait(p, key, arg)
    elif key == "c":
        _parse_counters(p, arg or "", invert)
    elif key == "h":
        raise Done(HELP)
    elif key == "V":
        raise Done(f"Not {RELEASE[1:]} ;-)\n" if invert else f"{VERSION}\n")
    elif key == "6":
        if p.restore:
            p.ignore = True
            return True
        raise Problem("", bare=True)
    return False


def _parse_wait(p: Parsed, key: str, arg: str | None) -> None:
    """-w [seconds] and the deprecated -W [usecs]; iptables-restore refuses both."""
    if p.restore:
        raise Problem(f"You cannot use `-{key}' from iptables-restore")
    text = arg if arg is not None else (p.getopt.take() if p.getopt.has_arg() else None)
    if key == "w":
        p.wait = -1
        if text is not None:
            value = c_strtoul(text) if re.match(r"[ \t\n\v\f\r]*[+-]?[0-9]", text) else None
            if value is None:
                raise Problem("wait seconds not numeric")
            p.wait = 1 if value[0] is None else value[0]
        return
    if text is None:
        raise Problem("wait interval value required")
    usec = scan_llu(text)
    if usec is None or text.lstrip(_SPACE)[:1] == "-":
        raise Problem("wait interval not numeric")
    if usec > 999999:
        raise Problem(f"too long usec wait {usec} > 999999 usec")
    p.warnings.append("Ignoring deprecated --wait-interval option.\n")
    p.wait_interval = True


def _parse_counters(p: Parsed, pcnt: str, invert: bool) -> None:
    """-c PKTS BYTES or -c PKTS,BYTES (sscanf %llu each)."""
    p.set_option("c", invert)
    comma = pcnt.find(",", 1)
    bcnt = pcnt[comma + 1:] if comma >= 0 else None
    if bcnt is None and p.getopt.has_arg():
        bcnt = p.getopt.take()
    if bcnt is None:
        raise Problem("-c requires packet and byte counter")
    packets, nbytes = scan_llu(pcnt), scan_llu(bcnt)
    if packets is None:
        raise Problem("-c packet counter not numeric")
    if nbytes is None:
        raise Problem("-c byte counter not numeric")
    p.counters = (packets, nbytes)


def _finish_parse(p: Parsed, invert: bool) -> None:
    """The checks after the options, in do_parse's order."""
    if p.table == "nat" and (p.policy == "DROP" or p.jumpto == "DROP"):
        raise Problem('\nThe "nat" table is not intended for filtering, the use of DROP is therefore inhibited.\n\n')
    if not p.wait and p.wait_interval:
        raise Problem("--wait-interval only makes sense with --wait\n")
    for inst in p.matches + ([p.target] if p.target else []):
        final_check(inst)
    if p.getopt.optind < len(p.getopt.argv):
        raise Problem("unknown arguments found on commandline")
    if not p.command:
        raise Problem("no command specified")
    if invert:
        raise Problem("nothing appropriate following !")
    if p.command & RULE_CMDS:
        p.shost = p.shost if p.has("s") else "0.0.0.0/0"
        p.dhost = p.dhost if p.has("d") else "0.0.0.0/0"
    p.saddrs = parse_addresses(p.shost) if p.shost is not None else []
    p.daddrs = parse_addresses(p.dhost) if p.dhost is not None else []
    if (len(p.saddrs) > 1 or len(p.daddrs) > 1) and {"s", "d"} & p.inv:
        raise Problem("! not allowed with multiple source or destination IP addresses")
    if p.command == CMD_BITS["R"] and (len(p.saddrs) != 1 or len(p.daddrs) != 1):
        raise Problem("Replacement rule does not specify a unique address")
    _check_options(p)
    if p.chain is not None and len(p.chain) >= NAME_MAX:
        raise Problem(f"chain name `{p.chain}' too long (must be under {NAME_MAX} chars)")
    if p.command in (CMD_BITS["A"], CMD_BITS["D"], CMD_BITS["DN"], CMD_BITS["C"], CMD_BITS["I"], CMD_BITS["R"]):
        if p.chain in ("PREROUTING", "INPUT") and p.has("o"):
            raise Problem(f"Can't use -o with {p.chain}\n")
        if p.chain in ("POSTROUTING", "OUTPUT") and p.has("i"):
            raise Problem(f"Can't use -i with {p.chain}\n")


def _check_options(p: Parsed) -> None:
    """generic_opt_check: an option is legal if any of the commands given allows it."""
    for i, ch in enumerate(OPT_CHARS):
        if not p.has(ch):
            continue
        verdicts = [LEGAL[j][i] != "x" for j in range(len(LEGAL)) if p.command & (1 << j)]
        if verdicts and not any(verdicts):
            raise Problem(f"Illegal option `-{ch}' with this command")


def build_rules(p: Parsed) -> list[Rule]:
    """One rule per source and destination address (nft_rule_new): the matches as iptables-nft
    stores them, tcp and udp turned into payload matches and read back merged."""
    matches = _store_matches(p)
    target = None
    if p.jumpto:
        target = Target(p.jumpto, dict(p.target.opts) if p.target else {}, goto=p.goto)
    out = []
    for saddr, smask in p.saddrs:
        for daddr, dmask in p.daddrs:
            rule = Rule(proto=p.proto or None, proto_neg=p.proto_neg,
                        matches=[Match(m.name, dict(m.opts)) for m in matches],
                        target=dataclasses.replace(target, opts=dict(target.opts)) if target else None)
            if p.has("f"):
                rule.frag = "f" not in p.inv
            _set_addr(rule, "src", saddr, smask, "s" in p.inv)
            _set_addr(rule, "dst", daddr, dmask, "d" in p.inv)
            for side in ("i", "o"):
                name = getattr(p, f"{side}if")
                if name is not None and name != "+":
                    setattr(rule, f"{side}if", name)
                    setattr(rule, f"{side}if_neg", side in p.inv)
            rule.pkts, rule.bytes = p.counters
            out.append(rule)
    return out


def _set_addr(rule: Rule, side: str, addr: int, netmask: int, neg: bool) -> None:
    if not netmask and not addr and not neg:
        return
    bits = prefix_len(netmask)
    setattr(rule, side, (addr, bits if bits is not None else bin(netmask).count("1")))
    setattr(rule, f"{side}_neg", neg)
    if bits is None:
        setattr(rule, f"{side}_mask", netmask)


def _store_matches(p: Parsed) -> list[Match]:
    """The matches of the rule as they come back from nf_tables: native tcp/udp matches need
    their protocol, fold into the first one of their kind, and vanish when they test nothing."""
    out: list[Match] = []
    native: dict[str, Match] = {}
    for inst in p.matches:
        name, o = inst.ext.name, inst.opts
        if name not in ("tcp", "udp") or l4_compat(name, o):
            out.append(Match(name, dict(o)))
            continue
        if p.proto != (6 if name == "tcp" else 17):
            raise Problem(f"{name.upper()} match requires '-p {name}'")
        fields = {}
        for side in ("sport", "dport"):
            if o[side] != (0, 0xFFFF):
                fields[side], fields[f"{side}_neg"] = o[side], o[f"{side}_neg"]
        if o.get("flags", (0, 0))[0]:
            fields["flags"], fields["flags_neg"] = o["flags"], o.get("flags_neg", False)
        if not fields:
            continue
        if name in native:
            native[name].opts.update(fields)
        else:
            native[name] = Match(name, {**_l4_init(), **fields})
            out.append(native[name])
    return out


# --- the kernel's view: where targets may run, loops ----------------------------------------------------
def _match_error(rule: Rule, m: Match, hooks: set[str] | None) -> str | None:
    """What the kernel's checkentry says to a match (`hooks` only for a base chain)."""
    o = m.opts
    if m.name in ("tcp", "udp", "icmp"):  # kept as xtables matches (icmp always): the protocol must be theirs
        want = {"tcp": 6, "udp": 17, "icmp": 1}[m.name]
        if (m.name == "icmp" or l4_compat(m.name, o)) and (rule.proto != want or rule.proto_neg):
            return EINVAL
    if m.name == "recent":
        if o["mode"] in ("set", "remove") and (o.get("seconds") or o.get("hitcount") or o.get("reap")
                                               or o.get("rttl")):
            return EINVAL
        if not o.get("name", "DEFAULT") or o.get("hitcount", 0) >= 256:
            return EINVAL
    if m.name == "addrtype" and hooks:
        if o.get("limit_in") and hooks & {"POSTROUTING", "OUTPUT"}:
            return EINVAL
        if o.get("limit_out") and hooks & {"PREROUTING", "INPUT"}:
            return EINVAL
    return None


def _target_error(table: str, rule: Rule, hooks: set[str]) -> str | None:
    """Whether a target may run in this table and at these hooks."""
    t = rule.target
    if t is None or t.name not in TARGET_PLACES:
        return None
    where, allowed = TARGET_PLACES[t.name]
    if where != table or hooks - allowed:
        return EINVAL
    if t.name == "REJECT" and t.opts["with"] == "tcp-reset" and (rule.proto != 6 or rule.proto_neg):
        return EINVAL
    return None


class Batch:
    """One transaction on one table, checked as nf_tables checks it: each command against the
    cache as the earlier ones left it (its errors stop everything at once), then the kernel's
    checks, whose first failure is reported once every command went through."""

    def __init__(self, table: Table, *, prog: str = "iptables", verbose: bool = False,
                 out: list[str] | None = None) -> None:
        self.t = table
        self.prog = prog
        self.verbose = verbose
        self.out = out if out is not None else []
        self.known = {c.name for c in table.user_chains()}  # the user chains the cache knows of
        self.renamed: dict[str, str] = {}
        self.kernel: KernelError | None = None
        self._callers: dict[str, dict[str, int]] | None = None

    # --- the cache's checks -----------------------------------------------------------------------
    def _jump(self, rule: Rule) -> None:
        """A jump to a chain that the cache does not know is refused while preparing."""
        t = rule.target
        if t is None or (not t.goto and (t.name in VERDICTS or t.name in TARGETS)):
            return
        if t.name in self.renamed:
            t.name = self.renamed[t.name]
        elif t.name not in self.known and t.name not in BUILTIN[self.t.name]:
            raise Problem(f"Chain '{t.name}' does not exist")

    def _chain(self, name: str, line: int | None, *, builtin_ok: bool = True, msg: str = "") -> Chain | None:
        """The chain a command works on: None for a built-in one not created yet (when allowed)."""
        c = self.t.chains.get(name)
        if c is not None and (c.policy is None or c.present):
            return c
        if c is not None and builtin_ok:
            return None
        raise CmdError(msg or "No chain/target/match by that name", line)

    def _print(self, rule: Rule) -> None:
        if self.verbose:
            self.out.append(format_rule(rule, notable=True) + "\n")

    def _find(self, chain: str, rule: Rule) -> int | None:
        c = self.t.chains.get(chain)
        if c is None or (c.policy is not None and not c.present):
            return None
        key = rule.key()
        return next((i for i, r in enumerate(c.rules) if r.key() == key), None)

    # --- the commands ---------------------------------------------------------------------------------
    def append(self, chain: str, rules: list[Rule], line: int | None = None, op: str = "RULE_APPEND") -> None:
        for rule in rules:
            self._jump(rule)
            self._chain(chain, line)
            self._print(rule)
            self.t.touch(chain)
            self.t.chains[chain].rules.append(rule)
            self._added(chain, rule, op, line)

    def insert(self, chain: str, rules: list[Rule], num: int, line: int | None = None) -> None:
        for rule in rules:
            self._jump(rule)
            c = self._chain(chain, line)
            if num - 1 > (len(c.rules) if c else 0):
                raise CmdError("Index of insertion too big", line)
            self._print(rule)
            self.t.touch(chain)
            self.t.chains[chain].rules.insert(num - 1, rule)
            self._added(chain, rule, "RULE_INSERT", line)

    def replace(self, chain: str, rule: Rule, num: int, line: int | None = None) -> None:
        self._jump(rule)
        c = self._chain(chain, line, builtin_ok=False)
        assert c is not None
        if num > len(c.rules):
            raise CmdError("Index of replacement too big", line)
        self._print(rule)
        old = c.rules[num - 1]
        c.rules[num - 1] = rule
        self._dirty(old)
        self._added(chain, rule, "RULE_REPLACE", line)

    def delete(self, chain: str, rules: list[Rule], line: int | None = None, *, check: bool = False) -> None:
        for rule in rules:
            self._jump(rule)
            at = self._find(chain, rule)
            if at is None:
                raise CmdError("Bad rule (does a matching rule exist in that chain?)", line)
            self._print(rule)
            if not check:
                self._dirty(self.t.chains[chain].rules.pop(at))

    def delete_num(self, chain: str, num: int, line: int | None = None) -> None:
        c = self._chain(chain, line, builtin_ok=False)
        assert c is not None
        if num > len(c.rules):
            raise CmdError("Index of deletion too big", line)
        self._dirty(c.rules.pop(num - 1))

    def flush(self, chain: str | None, line: int | None = None) -> None:
        if chain is None:
            for c in self.t.ordered():
                if self.verbose:
                    self.out.append(f"Flushing chain `{c.name}'\n")
                c.rules.clear()
            self._callers = None
            return
        self._chain(chain, line)
        if self.verbose:
            self.out.append(f"Flushing chain `{chain}'\n")
        self.t.touch(chain)
        self.t.chains[chain].rules.clear()
        self._callers = None

    def zero(self, chain: str | None, line: int | None = None) -> None:
        chains = [c for c in self.t.ordered() if c.present] if chain is None else \
            [self._chain(chain, line, builtin_ok=False)]
        for c in chains:
            assert c is not None
            if self.verbose:
                self.out.append(f"Zeroing chain `{c.name}'\n")
            c.pkts = c.bytes = 0
            c.rules = [dataclasses.replace(r, pkts=0, bytes=0) for r in c.rules]

    def zero_num(self, chain: str, num: int, line: int | None = None) -> None:
        c = self._chain(chain, line, builtin_ok=False, msg="Incompatible with this kernel")
        assert c is not None
        if num <= len(c.rules):
            c.rules[num - 1] = dataclasses.replace(c.rules[num - 1], pkts=0, bytes=0)

    def new_chain(self, name: str, line: int | None = None) -> None:
        if name in self.known or name in BUILTIN[self.t.name]:
            raise CmdError("Chain already exists", line)
        self.t.chains[name] = Chain(name)
        self.t.touch()
        self.known.add(name)

    def restore_chain(self, name: str, line: int | None = None) -> None:
        """A `:NAME - [0:0]` line of iptables-restore: create the chain, or flush it if it exists."""
        if name in self.t.chains and self.t.chains[name].policy is None:
            self.t.chains[name].rules.clear()
            self._callers = None
        else:
            self.t.chains[name] = Chain(name)
        self.t.touch()
        self.known.add(name)

    def delete_chain(self, name: str | None, line: int | None = None) -> None:
        names = [c.name for c in self.t.user_chains()] if name is None else [name]
        for n in names:
            c = self.t.chains.get(n)
            if c is None or n not in self.known and c.policy is None:
                raise CmdError("No chain/target/match by that name", line)
            if self.verbose:
                self.out.append(f"Deleting chain `{n}'\n")
            if c.policy is not None or c.rules or self.t.references(n):
                self._fail("CHAIN_DEL", EBUSY, f"chain {n}", line)
            if c.policy is None:
                del self.t.chains[n]
                self.known.discard(n)
                self._callers = None

    def rename(self, old: str, new: str, line: int | None = None) -> None:
        if new in self.t.chains:
            raise CmdError("File exists", line)
        c = self.t.chains.get(old)
        if c is None or c.policy is not None:
            raise CmdError("No chain/target/match by that name", line)
        chains = {(new if k == old else k): v for k, v in self.t.chains.items()}
        c.name = new
        self.t.chains = chains
        for ch in chains.values():
            ch.rules = [dataclasses.replace(r, target=dataclasses.replace(r.target, name=new))
                        if r.target is not None and r.target.name == old and old not in TARGETS else r
                        for r in ch.rules]
        self.renamed[old] = new
        self._callers = None

    def policy(self, chain: str, policy: str, counters: tuple[int, int] = (0, 0), line: int | None = None) -> None:
        if policy not in ("ACCEPT", "DROP", "-"):
            raise CmdError("Bad policy name", line, einval=True)
        c = self.t.chains.get(chain)
        if c is None or c.policy is None:
            raise CmdError("Bad built-in chain name", line)
        self.t.touch(chain)
        if policy != "-":
            c.policy = policy
        c.pkts, c.bytes = counters

    def flush_table(self) -> None:
        """iptables-restore without --noflush deletes the table and builds it again; with -v it goes
        chain by chain instead: user chains deleted, built-in ones emptied, and those still at
        policy ACCEPT deleted too (their counters with them), while the table stays."""
        if self.verbose:
            self.out += [f"Flushing chain `{c.name}'\n" for c in self.t.ordered()]
            self.out += [f"Deleting chain `{c.name}'\n" for c in self.t.user_chains()]
            for c in self.t.user_chains():
                del self.t.chains[c.name]
            for c in self.t.ordered():
                c.rules.clear()
                if c.policy == "ACCEPT":
                    c.present, c.pkts, c.bytes = False, 0, 0
            self.t.present = True
        else:
            fresh = Table(self.t.name, present=False)
            self.t.chains, self.t.present = fresh.chains, False
        self.known.clear()
        self._callers = None

    def finish(self) -> None:
        if self.kernel is not None:
            raise self.kernel

    # --- the kernel's checks ------------------------------------------------------------------------------
    def _fail(self, op: str, err: str, what: str, line: int | None) -> None:
        if self.kernel is None:
            self.kernel = KernelError(op, err, what, line)

    def _dirty(self, rule: Rule) -> None:
        if rule.target is not None and rule.target.name in self.t.chains:
            self._callers = None

    def _callers_map(self) -> dict[str, dict[str, int]]:
        if self._callers is None:
            self._callers = {}
            for c in self.t.chains.values():
                for r in c.rules:
                    self._note(c.name, r)
        return self._callers

    def _note(self, chain: str, rule: Rule) -> None:
        t = rule.target
        if self._callers is not None and t is not None and t.name in self.t.chains:
            calls = self._callers.setdefault(t.name, {})
            calls[chain] = calls.get(chain, 0) + 1

    def hooks(self, chain: str) -> set[str]:
        """The base chains from which `chain` can be reached."""
        callers = self._callers_map()
        seen, todo, out = {chain}, [chain], set()
        while todo:
            name = todo.pop()
            if name in BUILTIN[self.t.name]:
                out.add(name)
            for caller in callers.get(name, {}):
                if caller not in seen:
                    seen.add(caller)
                    todo.append(caller)
        return out

    def _below(self, chain: str) -> Iterable[tuple[str, Rule]]:
        """Every rule of `chain` and of the chains it jumps to, each chain once."""
        seen, todo = {chain}, [chain]
        while todo:
            c = self.t.chains.get(todo.pop())
            if c is None:
                continue
            for r in c.rules:
                yield c.name, r
                t = r.target
                if t is not None and t.name in self.t.chains and t.name not in seen:
                    seen.add(t.name)
                    todo.append(t.name)

    def _added(self, chain: str, rule: Rule, op: str, line: int | None) -> None:
        """nf_tables' checks of a new rule: targets and matches where it runs, no loops."""
        self._note(chain, rule)
        t = rule.target
        err = None
        if t is not None and t.name in BUILTIN[self.t.name] and t.name not in TARGETS:
            err = ENOTSUP
        elif any(getattr(rule, f"{side}_neg") and not rule.netmask(side) for side in ("src", "dst")):
            err = EINVAL  # `! -s 0/0`: nf_tables refuses a comparison under a zero mask
        hooks = self.hooks(chain) if t is not None and t.name in TARGET_PLACES else set()
        own = {chain} if chain in BUILTIN[self.t.name] else None
        err = err or next((e for m in rule.matches if (e := _match_error(rule, m, own))), None)
        err = err or _target_error(self.t.name, rule, hooks)
        if err is None and t is not None and t.name in self.t.chains and t.name not in BUILTIN[self.t.name]:
            err = self._jump_error(chain, t.name)
        if err is not None:
            self._fail(op, err, f"rule in chain {chain}", line)

    def _jump_error(self, chain: str, to: str) -> str | None:
        """A jump is validated from the base chains only: below a chain they reach there may be
        no loop, and every target must suit their hooks."""
        hooks = self.hooks(chain)
        if not hooks:
            return None
        if self._loops(chain, to):
            return ELOOP
        below = [r for _c, r in self._below(to) if r.target is not None and r.target.name in TARGET_PLACES]
        return next((e for r in below if (e := _target_error(self.t.name, r, hooks))), None)

    def _loops(self, chain: str, to: str) -> bool:
        """Whether the chains reachable from `to` (with the new edge chain -> to) hold a cycle."""
        state: dict[str, int] = {chain: 1}  # 1 on the current path, 2 done
        stack = [(to, iter(self._targets(to)))]
        state[to] = 1
        if to == chain:
            return True
        while stack:
            name, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[name] = 2
                stack.pop()
                continue
            if state.get(nxt) == 1:
                return True
            if nxt not in state:
                state[nxt] = 1
                stack.append((nxt, iter(self._targets(nxt))))
        return False

    def _targets(self, name: str) -> list[str]:
        c = self.t.chains.get(name)
        return [] if c is None else [r.target.name for r in c.rules if r.target is not None
                                     and r.target.name in self.t.chains and r.target.name not in BUILTIN[self.t.name]]


# --- printing rules -------------------------------------------------------------------------------------
def _count(n: int, exact: bool, notable: bool) -> str:
    text = str(n) if exact else _k(n)
    if notable:
        return f"{text} "
    return f"{text:>8} " if exact else f"{text:>5} "


def format_rule(rule: Rule, *, num: int = 0, numeric: bool = True, counts: bool = False, exact: bool = False,
                via: bool = True, linenumbers: bool = False, notable: bool = False) -> str:
    """A rule as iptables -L prints it (a table row), or as `-v` echoes a command (`notable`)."""
    out = [f"{num:<4} "] if linenumbers else []
    if counts:
        out += [_count(rule.pkts, exact, notable), _count(rule.bytes, exact, notable)]
    target = rule.target.name if rule.target else ""
    out.append(f"{target} " if notable else f"{target:<9} ")
    out.append("!" if rule.proto_neg else " ")
    proto = rule.proto or 0
    pname = proto_name(proto, nolookup=numeric)
    shown = str(proto) if pname is None or (numeric and not notable) else pname
    out.append(f"{shown} " if notable else f"{shown:<4} ")
    frag = "--" if rule.frag is None else ("-f" if rule.frag else "!f")
    out.append(f"opt {frag} " if notable else f"{frag} ")
    if via:
        anyname = "*" if numeric else "any"
        iif = ("!" if rule.iif_neg else "") + (rule.iif or anyname)
        oif = ("!" if rule.oif_neg else "") + (rule.oif or anyname)
        out.append(f"in {iif} out {oif} " if notable else f" {iif:<6} {oif:<6} ")
    for side in ("src", "dst"):
        pair = getattr(rule, side)
        text = addr_text(pair[0] if pair else 0, rule.netmask(side), numeric)
        bang = "!" if getattr(rule, f"{side}_neg") else " "
        arrow = "-> " if side == "dst" and notable else ""
        out.append(f"{bang}{arrow}{text}" + (" " if notable and side == "src" else "") if notable
                   else f"{bang}{text:<19} ")
    if notable:
        out.append("  ")
    if rule.target is not None and rule.target.goto:
        out.append("[goto] ")
    extras = [m.show(numeric) for m in rule.matches] + ([rule.target.show(numeric)] if rule.target else [])
    return "".join(out) + "".join(f" {e}" for e in extras if e)


def chain_header(t: Table, c: Chain, *, counts: bool, exact: bool) -> str:
    """The `Chain NAME (...)` line of iptables -L."""
    if c.policy is None:
        return f"Chain {c.name} ({t.references(c.name)} references)"
    if not counts:
        return f"Chain {c.name} (policy {c.policy})"
    pkts, nbytes = _count(c.pkts, exact, True), _count(c.bytes, exact, True)
    return f"Chain {c.name} (policy {c.policy} {pkts}packets, {nbytes}bytes)"


def column_header(*, counts: bool, exact: bool, via: bool, linenumbers: bool) -> str:
    out = "num  " if linenumbers else ""
    if counts:
        out += f"{'pkts':>8} {'bytes':>10} " if exact else " pkts bytes "
    out += "target     prot opt"
    if via:
        out += " in     out    "
    return out + " source               destination         "


# --- iptables-restore's line handling -----------------------------------------------------------------------
def _strtok(text: str, delims: str, start: int = 0) -> tuple[int, int] | None:
    """C strtok from `start`: the token's (begin, end) in `text` (end is where the NUL goes)."""
    i = start
    while i < len(text) and text[i] in delims:
        i += 1
    if i >= len(text):
        return None
    j = i
    while j < len(text) and text[j] not in delims:
        j += 1
    return i, j


def _token(text: str, delims: str) -> tuple[str | None, str]:
    """The first token of `text` and what follows its delimiter."""
    found = _strtok(text, delims)
    return (None, "") if found is None else (text[found[0]:found[1]], text[found[1] + 1:])


def split_counters(line: str, lineno: int) -> tuple[tuple[str, str] | None, str]:
    """tokenize_rule_counters: a leading `[P:B]`; the command starts after the first `]` and ends
    at the first NUL strtok wrote past it."""
    if not line.startswith("["):
        return None, line
    if "]" not in line:
        raise Problem(f"Bad line {lineno}: need ]")
    end = line.index("]")
    first = _strtok(line, ":", 1)
    if first is None:
        raise Problem(f"Bad line {lineno}: need :")
    second = _strtok(line, "]", first[1] + 1)
    if second is None:
        raise Problem(f"Bad line {lineno}: need ]")
    cuts = [pos for pos in (first[1], second[1]) if end < pos < len(line)]
    command = line[end + 1:min(cuts)] if cuts else line[end + 1:]
    return (line[first[0]:first[1]], line[second[0]:second[1]]), command


def split_words(line: str) -> list[str]:
    """add_param_to_argv: blanks separate words, `"..."` quotes (with `\\` escapes inside)."""
    words, word, quoting, escaped, have = [], [], False, False, False
    for c in line:
        if quoting:
            if escaped:
                word.append(c)
                escaped = False
                continue
            if c == "\\":
                escaped = True
                continue
            if c != '"':
                word.append(c)
                continue
            quoting = False
        elif c == '"':
            quoting = have = True
            continue
        if c == '"' or c in " \t\n":
            if c != '"' and not word and not have:
                continue
            words.append("".join(word))
            word, have = [], False
            continue
        word.append(c)
    if word:
        words.append("".join(word))
    return words


# --- the tables of one namespace --------------------------------------------------------------------------------
class Tables:
    """The tables of a namespace and the iptables, iptables-save and iptables-restore commands.

    `run_iptables`, `run_save` and `run_restore` take the whole argument list and return (exit
    code, stdout, stderr) exactly as the real tools; `iptables`, `save` and `restore` are the older
    entry points (stdout, or IptError)."""

    def __init__(self) -> None:
        self.tables = {name: Table(name, present=False) for name in TABLE_ORDER}

    def table(self, name: str) -> Table:
        if name not in self.tables:
            raise IptError(f"{VERSION}: table '{name}' does not exist\nPerhaps iptables or your kernel needs to "
                           "be upgraded.", 3)
        return self.tables[name]

    def snapshot(self) -> str:
        """A text that changes whenever any rule, chain, policy, counter or existence does."""
        return "".join(f"{name} present={self.tables[name].present} "
                       + " ".join(c.name for c in self.tables[name].ordered() if c.present) + "\n"
                       + self._save_table(self.tables[name], counters=True) for name in TABLE_ORDER)

    # --- iptables ----------------------------------------------------------------------------------------
    def run_iptables(self, argv: list[str]) -> tuple[int, str, str]:
        """`iptables ARGS`: (exit code, stdout, stderr), byte for byte as iptables 1.8.9 (nf_tables)."""
        out: list[str] = []
        warnings = ""
        try:
            p = parse_command(list(argv))
            warnings = "".join(p.warnings)
            return 0, self._execute(p, out), warnings
        except Done as done:
            return done.rc, done.out, ""
        except Problem as exc:
            return exc.rc, "", (exc.prefix or warnings) + exc.text("iptables", None) + "\n"
        except CmdError as exc:
            return 1, "".join(out), warnings + exc.text("iptables") + "\n"
        except KernelError as exc:
            return 4, "".join(out), warnings + exc.text("iptables") + "\n"
        except IptError as exc:
            return exc.rc, "".join(out), warnings + exc.message + "\n"

    def iptables(self, argv: list[str]) -> str:
        """Runs one iptables command line; returns stdout or raises IptError."""
        rc, out, err = self.run_iptables(argv)
        if rc:
            raise IptError(err.removesuffix("\n"), rc, out)
        return out

    def _execute(self, p: Parsed, out: list[str]) -> str:
        """Runs a parsed command on its table; returns what it prints on stdout."""
        if p.table not in self.tables:
            raise IptError(f"{VERSION}: table '{p.table}' does not exist\nPerhaps iptables or your kernel needs "
                           "to be upgraded.", 3)
        t = self.tables[p.table]
        cmd = p.command
        if cmd & (CMD_BITS["L"] | CMD_BITS["S"]):
            out.append(self._list(t, p))
            if cmd & (CMD_BITS["Z"] | CMD_BITS["ZN"]):
                self._transaction(t, p, out)
            return "".join(out)
        self._transaction(t, p, out)
        return "".join(out)

    def _transaction(self, t: Table, p: Parsed, out: list[str]) -> None:
        """The command as one nf_tables batch on a copy of the table, committed when it all went well."""
        rules = build_rules(p) if p.command & RULE_CMDS else []
        work = t.clone()
        batch = Batch(work, verbose=bool(p.verbose), out=out)
        run_command(batch, p, rules, None)
        batch.finish()
        if p.command != CMD_BITS["C"]:
            self.tables[t.name] = work

    @staticmethod
    def _list(t: Table, p: Parsed) -> str:
        if p.chain is not None and (p.chain not in t.chains):
            raise IptError(f"{VERSION}: chain `{p.chain}' in table `{t.name}' is incompatible, use 'nft' tool.", 1)
        if p.command & CMD_BITS["S"]:
            return Tables.list_rules(t, p.chain, bool(p.verbose), p.rulenum)
        return Tables.list_table(t, p.chain, bool(p.verbose), p.has("0"), numeric=p.has("n"), exact=p.has("x"),
                                 rulenum=p.rulenum)

    @staticmethod
    def list_rules(t: Table, chain: str | None, counters: bool, rulenum: int = 0) -> str:
        """`iptables -S [CHAIN [N]] [-v]`."""
        out = []
        chains = [t.chains[chain]] if chain else t.ordered()
        if not rulenum:
            for c in chains:
                if c.policy is not None:
                    out.append(f"-P {c.name} {c.policy}" + (f" -c {c.pkts} {c.bytes}" if counters else ""))
                else:
                    out.append(f"-N {c.name}")
        for c in chains:
            for i, r in enumerate(c.rules, 1):
                if not rulenum or i == rulenum:
                    out.append(f"-A {c.name} {r.spec((r.pkts, r.bytes) if counters else None)}".rstrip())
        return "".join(line + "\n" for line in out)

    @staticmethod
    def list_table(t: Table, chain: str | None, verbose: bool, line_numbers: bool, *, numeric: bool = True,
                   exact: bool = False, rulenum: int = 0) -> str:
        """`iptables -L [CHAIN [N]] [-n] [-v] [-x] [--line-numbers]`: one block per chain."""
        blocks = []
        for c in [t.chains[chain]] if chain else t.ordered():
            rows = [] if rulenum else [chain_header(t, c, counts=verbose, exact=exact),
                                       column_header(counts=verbose, exact=exact, via=verbose,
                                                     linenumbers=line_numbers)]
            for i, r in enumerate(c.rules, 1):
                if not rulenum or i == rulenum:
                    rows.append(format_rule(r, num=i, numeric=numeric, counts=verbose, exact=exact, via=verbose,
                                            linenumbers=line_numbers))
            if rows:
                blocks.append("".join(row + "\n" for row in rows))
        return "\n".join(blocks)

    # --- iptables-save ---------------------------------------------------------------------------------
    def _save_table(self, t: Table, *, counters: bool) -> str:
        out = [f"*{t.name}"]
        for c in t.ordered():
            out.append(f":{c.name} {c.policy} [{c.pkts}:{c.bytes}]" if c.policy is not None else f":{c.name} - [0:0]")
        for c in t.ordered():
            for r in c.rules:
                prefix = f"[{r.pkts}:{r.bytes}] " if counters else ""
                out.append(f"{prefix}-A {c.name} {r.spec()}".rstrip())
        out.append("COMMIT")
        return "".join(line + "\n" for line in out)

    def save(self, table: str | None = None, *, counters: bool = False, header: bool = True, when: str = "") -> str:
        """iptables-save: the table named, or every table that exists, in iptables' order."""
        if table is not None and table not in self.tables:
            raise IptError(f"Table `{table}' does not exist", 1)
        names = [table] if table else [n for n in TABLE_ORDER if self.tables[n].present]
        out = []
        for name in names:
            body = self._save_table(self.tables[name], counters=counters)
            if header:
                body = f"# Generated by iptables-save {RELEASE} on {when}\n{body}# Completed on {when}\n"
            out.append(body)
        return "".join(out)

    def run_save(self, argv: list[str], when: str = "") -> tuple[int, str, str]:
        """`iptables-save ARGS`: (exit code, stdout, stderr)."""
        try:
            opts, operands = cli_getopt(argv, "bcdt:M:f:46V", {"counters": 0, "version": 0, "dump": 0, "table": 1,
                                                                "modprobe": 1, "file": 1}, "iptables-save")
        except IptError as exc:
            return 1, "", exc.message + "Look at manual page `iptables-save.8' for more information.\n"
        table, counters = None, False
        for key, value in opts:
            if key in ("c", "counters"):
                counters = True
            elif key in ("t", "table"):
                table = value
            elif key in ("V", "version"):
                return 0, f"iptables-save {RELEASE}\n", ""
        if operands:
            return 1, "", "Unknown arguments found on commandline\n"
        try:
            return 0, self.save(table, counters=counters, when=when), ""
        except IptError as exc:
            return exc.rc, "", exc.message + "\n"

    # --- iptables-restore --------------------------------------------------------------------------------------
    def restore(self, text: str, *, noflush: bool = False, only: str | None = None, counters: bool = False,
                verbose: bool = False, test: bool = False) -> str:
        """iptables-restore: each table is committed at its COMMIT (errors name the line); returns stdout."""
        state = _Restore(self, noflush=noflush, only=only, counters=counters, verbose=verbose, test=test)
        try:
            state.run(text)
        except Problem as exc:
            message = exc.prefix + exc.text("iptables-restore", state.lineno)
            raise IptError(message, exc.rc, "".join(state.out)) from None
        except CmdError as exc:
            raise IptError(exc.text("iptables-restore"), 1, "".join(state.out)) from None
        except KernelError as exc:
            raise IptError(exc.text("iptables-restore"), 4, "".join(state.out)) from None
        except IptError as exc:
            raise IptError(exc.message, exc.rc, "".join(state.out)) from None
        return "".join(state.out)

    def run_restore(self, argv: list[str], stdin: str = "", read_file: Callable[[str], str] | None = None
                    ) -> tuple[int, str, str]:
        """`iptables-restore ARGS` reading FILE (by `read_file`) or `stdin`: (exit code, stdout, stderr)."""
        try:
            opts, operands = cli_getopt(argv, "bcvVthnM:T:wW", {
                "counters": 0, "verbose": 0, "version": 0, "test": 0, "help": 0, "noflush": 0, "modprobe": 1,
                "table": 1, "ipv4": 0, "ipv6": 0, "wait": 2, "wait-interval": 2}, "iptables-restore", xs_arg="wW")
        except IptError as exc:
            return 1, "", exc.message + "Try `iptables-restore -h' for more information.\n"
        flags = {"counters": False, "verbose": False, "test": False, "noflush": False}
        only = None
        for key, value in opts:
            long = {"c": "counters", "v": "verbose", "t": "test", "n": "noflush", "V": "version", "h": "help",
                    "T": "table"}.get(key, key)
            if long in flags:
                flags[long] = True
            elif long == "table":
                only = value
            elif long == "version":
                return 0, f"iptables-restore {RELEASE}\n", ""
            elif long == "help":
                return 0, "", RESTORE_USAGE
        if len(operands) > 1:
            return 1, "", "Unknown arguments found on commandline\n"
        text = stdin
        if operands:
            try:
                text = read_file(operands[0]) if read_file is not None else ""
            except (FileNotFoundError, OSError):
                return 1, "", f"Can't open {operands[0]}: No such file or directory\n"
        try:
            return 0, self.restore(text, noflush=flags["noflush"], only=only, counters=flags["counters"],
                                   verbose=flags["verbose"], test=flags["test"]), ""
        except IptError as exc:
            return exc.rc, exc.stdout, exc.message + "\n"


RESTORE_USAGE = ("Usage: iptables-restore [-c] [-v] [-V] [-t] [-h] [-n] [-T table] [-M command] [-4] [-6] [file]\n"
                 "\t   [ --counters ]\n\t   [ --verbose ]\n\t   [ --version]\n\t   [ --test ]\n\t   [ --help ]\n"
                 "\t   [ --noflush ]\n\t   [ --table=<TABLE> ]\n\t   [ --modprobe=<command> ]\n\t   [ --ipv4 ]\n"
                 "\t   [ --ipv6 ]\n")


def cli_getopt(argv: list[str], short: str, longs: dict[str, int], prog: str, xs_arg: str = ""
               ) -> tuple[list[tuple[str, str | None]], list[str]]:
    """glibc getopt_long with its own error messages (iptables-save/-restore): options, operands.
    An option in `xs_arg` given no value takes the next word when it looks like one."""
    spec: dict[str, int] = {}
    for i, c in enumerate(short):
        if c != ":":
            spec[c] = 2 if short[i + 1:i + 3] == "::" else 1 if short[i + 1:i + 2] == ":" else 0
    opts: list[tuple[str, str | None]] = []
    operands: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        i += 1
        if word == "--":
            operands += argv[i:]
            break
        if word.startswith("--"):
            key, value, i = _cli_long(argv, i, word, longs, prog)
        elif word.startswith("-") and word != "-":
            key, value, i = _cli_short(argv, i, word[1:], spec, prog, opts)
        else:
            operands.append(word)
            continue
        if value is None and key[:1] in xs_arg and i < len(argv) and argv[i][:1] not in ("-", "!"):
            i += 1
        opts.append((key, value))
    return opts, operands


def _cli_long(argv: list[str], i: int, word: str, longs: dict[str, int], prog: str) -> tuple[str, str | None, int]:
    name, eq, value = word[2:].partition("=")
    found = [n for n in longs if n == name] or [n for n in longs if n.startswith(name)]
    if not found:
        raise IptError(f"{prog}: unrecognized option '{word}'\n")
    if len(found) > 1:
        raise IptError(f"{prog}: option '{word}' is ambiguous; possibilities:" + "".join(f" '--{n}'" for n in found)
                       + "\n")
    has = longs[found[0]]
    if eq and not has:
        raise IptError(f"{prog}: option '--{found[0]}' doesn't allow an argument\n")
    if not eq and has == 1:
        if i >= len(argv):
            raise IptError(f"{prog}: option '--{found[0]}' requires an argument\n")
        return found[0], argv[i], i + 1
    return found[0], (value if eq else None), i


def _cli_short(argv: list[str], i: int, cluster: str, spec: dict[str, int], prog: str,
               opts: list[tuple[str, str | None]]) -> tuple[str, str | None, int]:
    """A cluster of short options: all but the last go to `opts`, the last is returned."""
    while True:
        c, cluster = cluster[0], cluster[1:]
        if c not in spec:
            raise IptError(f"{prog}: invalid option -- '{c}'\n")
        if spec[c] and cluster:
            return c, cluster, i
        if spec[c] == 1:
            if i >= len(argv):
                raise IptError(f"{prog}: option requires an argument -- '{c}'\n")
            return c, argv[i], i + 1
        if not cluster:
            return c, None, i
        opts.append((c, None))


class _Restore:
    """iptables-restore reading its input line by line, one table block after the other."""

    def __init__(self, tables: Tables, *, noflush: bool, only: str | None, counters: bool, verbose: bool,
                 test: bool) -> None:
        self.tables, self.noflush, self.only = tables, noflush, only
        self.counters, self.verbose, self.test = counters, verbose, test
        self.out: list[str] = []
        self.lineno = 0
        self.in_table = False
        self.current: str | None = None
        self.ops: list[tuple[int, Callable[[Batch], None]]] = []

    def run(self, text: str) -> None:
        lines = text.split("\n")
        chunks = [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
        for line in chunks:
            self.lineno += 1
            self.line(line)
        if self.in_table:
            raise IptError(f"iptables-restore: COMMIT expected at line {self.lineno + 1}", 1)

    def line(self, line: str) -> None:
        """xtables_restore_parse_line."""
        if line.startswith("\n"):
            return
        if line.startswith("#"):
            if self.verbose:
                self.out.append(line)
            return
        ok = True
        if self.in_table and line.startswith("COMMIT") and line[6:] in ("", "\n"):
            self.commit()
        elif line.startswith("*") and not self.in_table:
            name, _ = _token(line[1:], " \t\n")
            if name is None:
                raise Problem(f"iptables-restore: line {self.lineno} table name invalid")
            if name not in BUILTIN:
                raise Problem(f"iptables-restore: line {self.lineno} table name '{name}' invalid")
            self.current = name
            if self.only is not None and self.only != name:
                return
            self.in_table, self.ops = True, []
            if not self.noflush:
                self.ops.append((self.lineno, lambda b: b.flush_table()))
        elif line.startswith(":") and self.in_table:
            self.chain_line(line)
        elif self.in_table:
            self.command_line(line)
        else:
            ok = False
        if self.only is not None and self.current is not None and self.current != self.only:
            return
        if not ok:
            raise CmdError("", self.lineno)

    def chain_line(self, line: str) -> None:
        n = self.lineno
        chain, rest = _token(line[1:], " \t\n")
        if chain is None:
            raise Problem(f"iptables-restore: line {n} chain name invalid")
        if len(chain) >= NAME_MAX:
            raise Problem(f"chain name `{chain}' too long (must be under {NAME_MAX} chars)")
        if chain in VERDICTS:
            raise Problem("chain name may not clash with target name")
        policy, rest = _token(rest, " \t\n")
        if policy is None:
            raise Problem(f"iptables-restore: line {n} policy invalid")
        assert self.current is not None
        if chain in BUILTIN[self.current]:
            counts = (0, 0)
            if self.counters:
                ctrs, _ = _token(rest, " \t\n")
                m = re.match(r"\[[ \t\n\v\f\r]*([+-]?[0-9]+):[ \t\n\v\f\r]*([+-]?[0-9]+)\]", ctrs or "")
                if m is None:
                    raise Problem(f"invalid policy counters for chain '{chain}'")
                counts = (int(m.group(1)) % U64, int(m.group(2)) % U64)
            self.ops.append((n, lambda b: b.policy(chain, policy, counts, n)))
        else:
            self.ops.append((n, lambda b: b.restore_chain(chain, n)))

    def command_line(self, line: str) -> None:
        n = self.lineno
        assert self.current is not None
        counts, rest = split_counters(line, n)
        argv = ["-t", self.current]
        if self.counters and counts is not None:
            argv += ["--set-counters", *counts]
        p = parse_command(argv + split_words(rest), restore=True)
        if p.ignore:
            return
        rules = build_rules(p) if p.command & RULE_CMDS else []
        self.ops.append((n, lambda b: run_command(b, p, rules, n)))

    def commit(self) -> None:
        """COMMIT: the block's commands as one batch; the table is replaced when it all went well."""
        assert self.current is not None
        name = self.current
        work = self.tables.tables[name].clone()
        batch = Batch(work, prog="iptables-restore", verbose=self.verbose and not self.noflush, out=self.out)
        for _n, op in self.ops:
            op(batch)
        batch.finish()
        self.in_table, self.ops = False, []
        if not self.test:
            self.tables.tables[name] = work


def run_command(b: Batch, p: Parsed, rules: list[Rule], line: int | None) -> None:
    """One parsed command as operations of the batch (`-v` on the command line echoes its rules)."""
    verbose = b.verbose
    b.verbose = verbose or bool(p.verbose)
    try:
        _run_command(b, p, rules, line)
    finally:
        b.verbose = verbose


def _run_command(b: Batch, p: Parsed, rules: list[Rule], line: int | None) -> None:
    cmd, chain = p.command, p.chain or ""
    if cmd == CMD_BITS["A"]:
        b.append(chain, rules, line)
    elif cmd == CMD_BITS["I"]:
        b.insert(chain, rules, p.rulenum, line)
    elif cmd == CMD_BITS["R"]:
        b.replace(chain, rules[0], p.rulenum, line)
    elif cmd in (CMD_BITS["D"], CMD_BITS["C"]):
        b.delete(chain, rules, line, check=cmd == CMD_BITS["C"])
    elif cmd == CMD_BITS["DN"]:
        b.delete_num(chain, p.rulenum, line)
    elif cmd == CMD_BITS["F"]:
        b.flush(p.chain, line)
    elif cmd & CMD_BITS["ZN"]:
        b.zero_num(chain, p.rulenum, line)
    elif cmd & CMD_BITS["Z"]:
        b.zero(p.chain, line)
    elif cmd == CMD_BITS["N"]:
        b.new_chain(chain, line)
    elif cmd == CMD_BITS["X"]:
        b.delete_chain(p.chain, line)
    elif cmd == CMD_BITS["E"]:
        b.rename(chain, p.newname or "", line)
    elif cmd == CMD_BITS["P"]:
        b.policy(chain, p.policy or "", (0, 0), line)
    elif cmd & (CMD_BITS["L"] | CMD_BITS["S"]) and b.prog == "iptables-restore":
        b.out.append(Tables._list(b.t, p))  # iptables-restore lists the table as the batch left it


HELP = (f"{VERSION}\n\n"
        'Usage: iptables -[ACD] chain rule-specification [options]\n'
        '       iptables -I chain [rulenum] rule-specification [options]\n'
        '       iptables -R chain rulenum rule-specification [options]\n'
        '       iptables -D chain rulenum [options]\n'
        '       iptables -[LS] [chain [rulenum]] [options]\n'
        '       iptables -[FZ] [chain] [options]\n'
        '       iptables -[NX] chain\n'
        '       iptables -E old-chain-name new-chain-name\n'
        '       iptables -P chain target [options]\n'
        '       iptables -h (print this help information)\n'
        '\n'
        'Commands:\n'
        'Either long or short options are allowed.\n'
        '  --append  -A chain\t\tAppend to chain\n'
        '  --check   -C chain\t\tCheck for the existence of a rule\n'
        '  --delete  -D chain\t\tDelete matching rule from chain\n'
        '  --delete  -D chain rulenum\n'
        '\t\t\t\tDelete rule rulenum (1 = first) from chain\n'
        '  --insert  -I chain [rulenum]\n'
        '\t\t\t\tInsert in chain as rulenum (default 1=first)\n'
        '  --replace -R chain rulenum\n'
        '\t\t\t\tReplace rule rulenum (1 = first) in chain\n'
        '  --list    -L [chain [rulenum]]\n'
        '\t\t\t\tList the rules in a chain or all chains\n'
        '  --list-rules -S [chain [rulenum]]\n'
        '\t\t\t\tPrint the rules in a chain or all chains\n'
        '  --flush   -F [chain]\t\tDelete all rules in  chain or all chains\n'
        '  --zero    -Z [chain [rulenum]]\n'
        '\t\t\t\tZero counters in chain or all chains\n'
        '  --new     -N chain\t\tCreate a new user-defined chain\n'
        '  --delete-chain\n'
        '            -X [chain]\t\tDelete a user-defined chain\n'
        '  --policy  -P chain target\n'
        '\t\t\t\tChange policy on chain to target\n'
        '  --rename-chain\n'
        '            -E old-chain new-chain\n'
        '\t\t\t\tChange chain name, (moving any references)\n'
        '\n'
        'Options:\n'
        '    --ipv4\t-4\t\tNothing (line is ignored by ip6tables-restore)\n'
        '    --ipv6\t-6\t\tError (line is ignored by iptables-restore)\n'
        "[!] --protocol\t-p proto\tprotocol: by number or name, eg. `tcp'\n"
        '[!] --source\t-s address[/mask][...]\n'
        '\t\t\t\tsource specification\n'
        '[!] --destination -d address[/mask][...]\n'
        '\t\t\t\tdestination specification\n'
        '[!] --in-interface -i input name[+]\n'
        '\t\t\t\tnetwork interface name ([+] for wildcard)\n'
        ' --jump\t-j target\n'
        '\t\t\t\ttarget for rule (may load target extension)\n'
        '  --goto      -g chain\n'
        '\t\t\t       jump to chain with no return\n'
        '  --match\t-m match\n'
        '\t\t\t\textended match (may load extension)\n'
        '  --numeric\t-n\t\tnumeric output of addresses and ports\n'
        '[!] --out-interface -o output name[+]\n'
        '\t\t\t\tnetwork interface name ([+] for wildcard)\n'
        "  --table\t-t table\ttable to manipulate (default: `filter')\n"
        '  --verbose\t-v\t\tverbose mode\n'
        '  --wait\t-w [seconds]\tmaximum wait to acquire xtables lock before give up\n'
        '  --line-numbers\t\tprint line numbers when listing\n'
        '  --exact\t-x\t\texpand numbers (display exact values)\n'
        '[!] --fragment\t-f\t\tmatch second or further fragments only\n'
        '  --modprobe=<command>\t\ttry to insert modules using this command\n'
        '  --set-counters -c PKTS BYTES\tset the counter during insert/append\n'
        '[!] --version\t-V\t\tprint package version.\n'
)
