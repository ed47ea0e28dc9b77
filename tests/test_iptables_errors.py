"""Malformed iptables command lines and iptables-restore inputs: an error, and nothing changed.

Every case starts from the same rule set (BASE). The emulator must answer with a non-zero exit
code, a message on stderr and nothing on stdout, and `ns.netfilter.rules.snapshot()` (every
table, chain, rule, policy and counter) must be the same before and after. These run on both
table implementations and need nothing from the machine.

The kernel check (marked `linux`) runs every case once in one real `emut-` namespace holding the
same BASE and asserts that the emulator's exit code and stderr are byte-identical to what
iptables 1.8.9 (nf_tables) prints, and that the kernel's rules did not change either (which
proves the case is malformed for the real tool too). Only plain `iptables`/`iptables-restore`
invocations run there; nothing is sent on any network.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess

import pytest

from tests.linux import TIMEOUT, RealNetns, Result, diff_report, emu_lab, linux_available

BASE = """\
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:USERCHAIN - [0:0]
:EMPTY - [0:0]
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p tcp -m tcp --dport 22 -j USERCHAIN
-A USERCHAIN -s 10.0.0.0/8 -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
-A PREROUTING -j KUBE-SERVICES
-A POSTROUTING -o eth1 -j MASQUERADE
COMMIT
"""

BAD_COMMANDS = [
    # commands, chains and tables
    "iptables",
    "iptables -A",
    "iptables -A NOSUCHCHAIN -j ACCEPT",
    "iptables -A INPUT -j NOSUCHCHAIN",
    "iptables -t mangle2 -A INPUT -j ACCEPT",
    "iptables -t nat -A FORWARD -j ACCEPT",
    "iptables -A INPUT -D INPUT -j ACCEPT",
    "iptables -E NOSUCH NEWNAME",
    "iptables --version-bogus",
    "iptables -N USERCHAIN",
    "iptables -N ACCEPT",
    "iptables -N AVERYLONGCHAINNAMETHATISMORETHAN28CHARS",
    'iptables -N ""',
    "iptables -X NOSUCHCHAIN",
    "iptables -X USERCHAIN",
    "iptables -X INPUT",
    "iptables -X EMPTY EXTRA",
    "iptables -F NOSUCHCHAIN",
    "iptables -Z NOSUCHCHAIN",
    "iptables -L NOSUCHCHAIN",
    "iptables -S NOSUCHCHAIN",
    "iptables -P INPUT REJECT",
    "iptables -P USERCHAIN DROP",
    "iptables -P INPUT",
    "iptables -P FORWARD",
    # rule positions and rules that do not exist
    "iptables -D INPUT -s 1.2.3.4 -j ACCEPT",
    "iptables -D INPUT 9",
    "iptables -D INPUT 0",
    "iptables -I INPUT 9 -j ACCEPT",
    "iptables -I INPUT 0 -j ACCEPT",
    "iptables -R INPUT 5 -j ACCEPT",
    "iptables -C INPUT -s 1.2.3.4 -j ACCEPT",
    # addresses, protocols, ports, interfaces
    "iptables -A INPUT -s 10.0.0.300 -j ACCEPT",
    "iptables -A INPUT -s 10.0.0.0/33 -j ACCEPT",
    "iptables -A INPUT -s",
    "iptables -A INPUT !-s 1.2.3.4 -j ACCEPT",
    "iptables -A INPUT -s 1.2.3.4 -s 5.6.7.8 -j ACCEPT",
    "iptables -A INPUT -p tcpx -j ACCEPT",
    "iptables -A INPUT -p tcp --dport 70000 -j ACCEPT",
    "iptables -A INPUT -p tcp --dport http2x -j ACCEPT",
    "iptables -A INPUT -p tcp --dport 10:5:3 -j ACCEPT",
    "iptables -A INPUT -p tcp --dport 80:70 -j ACCEPT",
    "iptables -A INPUT -p tcp -m tcp --dport 22 --dport 23 -j ACCEPT",
    "iptables -A INPUT --dport 80 -j ACCEPT",
    "iptables -A INPUT -p tcp --sport -j ACCEPT",
    "iptables -A INPUT -p udp --syn -j ACCEPT",
    "iptables -A INPUT -p tcp --tcp-flags SYN,BOGUS SYN -j ACCEPT",
    "iptables -A INPUT -p tcp --tcp-flags SYN -j ACCEPT",
    "iptables -A INPUT -p icmp --icmp-type nonsense -j ACCEPT",
    "iptables -A INPUT -i -j ACCEPT",
    "iptables -A INPUT -i aaaaaaaaaaaaaaaaaaaaaaa -j ACCEPT",
    "iptables -A INPUT -o eth0 -j ACCEPT",
    "iptables -A OUTPUT -i eth0 -j ACCEPT",
    "iptables -t nat -A PREROUTING -o eth0 -j ACCEPT",
    "iptables -t nat -A POSTROUTING -i eth0 -j ACCEPT",
    "iptables -A INPUT --bogus-option -j ACCEPT",
    "iptables -A INPUT -j ACCEPT extra",
    "iptables -A INPUT -j ACCEPT -j DROP",
    # matches
    "iptables -A INPUT -m nosuchmatch -j ACCEPT",
    "iptables -A INPUT -m comment -j ACCEPT",
    "iptables -A INPUT -m mark -j ACCEPT",
    "iptables -A INPUT -m mark --mark zz -j ACCEPT",
    "iptables -A INPUT -m statistic --probability 0.5 -j ACCEPT",
    "iptables -A INPUT -m statistic --mode random --probability 1.5 -j ACCEPT",
    "iptables -A INPUT -m statistic --mode sometimes -j ACCEPT",
    "iptables -A INPUT -m statistic --mode nth -j ACCEPT",
    "iptables -A INPUT -m conntrack --ctstate BOGUS -j ACCEPT",
    "iptables -A INPUT -m conntrack --ctstatus BOGUS -j ACCEPT",
    "iptables -A INPUT -m conntrack -j ACCEPT",
    "iptables -A INPUT -m state --state NEW,WHATEVER -j ACCEPT",
    "iptables -A INPUT -m addrtype --dst-type NOTATYPE -j ACCEPT",
    "iptables -A INPUT -m recent --name x -j ACCEPT",
    "iptables -A INPUT -m recent --set --rcheck -j ACCEPT",
    "iptables -A INPUT -m recent --rcheck --reap -j ACCEPT",
    "iptables -A INPUT -m multiport --dports 80,443 -j ACCEPT",
    "iptables -A INPUT -p tcp -m multiport -j ACCEPT",
    "iptables -A INPUT -m multiport -p tcp --dports 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16 -j ACCEPT",
    # targets
    "iptables -A INPUT -j REJECT --reject-with icmp-nonsense",
    "iptables -A INPUT -p udp -j REJECT --reject-with tcp-reset",
    "iptables -A INPUT -j MARK",
    "iptables -A INPUT -j MARK --set-mark nope",
    "iptables -A INPUT -j LOG --log-level 9",
    "iptables -A INPUT -j LOG --log-level bogus",
    "iptables -A INPUT -j DNAT --to-destination 10.0.0.1",
    "iptables -A INPUT -o eth0 -j DNAT --to-destination 1.2.3.4",
    "iptables -A INPUT -j MASQUERADE",
    "iptables -t nat -A PREROUTING -j DNAT",
    "iptables -t nat -A PREROUTING -j DNAT --to-destination 10.0.0.999",
    "iptables -t nat -A PREROUTING -j DNAT --to-destination 10.0.0.1:80",
    "iptables -t nat -A PREROUTING -p tcp -j DNAT --to-destination 10.0.0.1:70000",
    "iptables -t nat -A POSTROUTING -j SNAT",
    "iptables -t nat -A POSTROUTING -j SNAT --to-source 1.2.3.4:80",
    "iptables -t nat -A POSTROUTING -j MASQUERADE --to-ports 1000",
    "iptables -t nat -A POSTROUTING -j MASQUERADE --to-ports 1000-",
    "iptables -t nat -A PREROUTING -p tcp -j REDIRECT --to-ports 99999",
    "iptables -t nat -A PREROUTING -j DROP",
    "iptables -t nat -A PREROUTING -p tcp -j REJECT",
]

# (iptables-restore arguments, input)
BAD_RESTORES = [
    ("iptables-restore", "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j ACCEPT\n"),  # no COMMIT
    ("iptables-restore", "*nat\n-A NOSUCH -j ACCEPT\nCOMMIT\n"),
    ("iptables-restore", "*nat\n:X - [0:0]\n-A X -j NOSUCHTARGET\nCOMMIT\n"),
    ("iptables-restore", "*mangle2\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n"),
    ("iptables-restore", "-A INPUT -j ACCEPT\n"),
    ("iptables-restore", ":INPUT ACCEPT [0:0]\nCOMMIT\n"),
    ("iptables-restore", "*filter\n:INPUT REJECT [0:0]\nCOMMIT\n"),
    ("iptables-restore", "*filter\n:INPUT\nCOMMIT\n"),
    ("iptables-restore", "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -s 10.0.0.300 -j ACCEPT\nCOMMIT\n"),
    ("iptables-restore", "*filter\n-A INPUT -p tcp --dport 99999 -j ACCEPT\nCOMMIT\n"),
    ("iptables-restore", "*filter\nbogus line here\nCOMMIT\n"),
    ("iptables-restore", "*filter\n*nat\nCOMMIT\n"),
    ("iptables-restore", "*filter\n[1:2 -A INPUT -j ACCEPT\nCOMMIT\n"),
    ("iptables-restore", "*filter\n-A INPUT -m statistic --mode random --probability 2 -j ACCEPT\nCOMMIT\n"),
    ("iptables-restore", "*filter\n-A INPUT -p udp -j REJECT --reject-with tcp-reset\nCOMMIT\n"),
    ("iptables-restore", "*filter\n-D INPUT -s 9.9.9.9 -j ACCEPT\nCOMMIT\n"),
    ("iptables-restore", "*filter\n-X USERCHAIN\nCOMMIT\n"),
    ("iptables-restore", "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j DROP\nCOMMIT\n"),
    ("iptables-restore --noflush", "*filter\n-A INPUT -j ACCEPT\n-A INPUT -j NOSUCH\nCOMMIT\n"),
    ("iptables-restore --bogus", "*filter\nCOMMIT\n"),
]

COMMAND_IDS = [c.removeprefix("iptables").strip() or "(no arguments)" for c in BAD_COMMANDS]
RESTORE_IDS = [f"{a} {t!r}" for a, t in BAD_RESTORES]


def test_enough_cases():
    assert len(BAD_COMMANDS) >= 30 and len(BAD_RESTORES) >= 5
    assert len(set(BAD_COMMANDS)) == len(BAD_COMMANDS)


def _gateway(make_lab):  # noqa: ANN001, ANN202
    ns = make_lab().netns("gw")
    res = ns.run("iptables-restore", stdin=BASE)
    assert res.rc == 0, res.stderr
    return ns


def _assert_refused(ns, cmdline: str, stdin: str = "") -> None:  # noqa: ANN001
    before = ns.netfilter.rules.snapshot()
    res = ns.run(cmdline, stdin=stdin)
    after = ns.netfilter.rules.snapshot()
    what = f"$ {cmdline}" + (f" <<< {stdin!r}" if stdin else "")
    assert res.rc != 0, f"{what}: accepted (rc 0, stdout {res.stdout!r})"
    assert res.stderr.strip(), f"{what}: rc {res.rc} without a message on stderr"
    assert res.stdout == "", f"{what}: printed {res.stdout!r} on stdout"
    assert before == after, f"{what}: the rules changed although it failed (rc {res.rc}, {res.stderr!r})"


@pytest.mark.parametrize("cmdline", BAD_COMMANDS, ids=COMMAND_IDS)
def test_bad_command_changes_nothing(make_lab, cmdline):
    _assert_refused(_gateway(make_lab), cmdline)


@pytest.mark.parametrize(("args", "text"), BAD_RESTORES, ids=RESTORE_IDS)
def test_bad_restore_changes_nothing(make_lab, args, text):
    _assert_refused(_gateway(make_lab), args, text)


def test_bad_restore_leaves_noflush_state_alone(make_lab):
    """A failing --noflush restore keeps the rules of the tables it touched as they were."""
    ns = _gateway(make_lab)
    _assert_refused(ns, "iptables-restore --noflush",
                    "*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -j RETURN\n-A KUBE-SERVICES -j NOSUCHCHAIN\nCOMMIT\n")


def test_bad_commands_in_sequence_change_nothing(make_lab):
    """All the bad lines one after the other in one namespace: still exactly BASE."""
    ns = _gateway(make_lab)
    start = ns.netfilter.rules.snapshot()
    for cmdline in BAD_COMMANDS:
        try:
            ns.run(cmdline)
        except Exception as exc:  # noqa: BLE001 - reported below with the line
            pytest.fail(f"$ {cmdline}: the emulator raised {exc!r}")
    for args, text in BAD_RESTORES:
        try:
            ns.run(args, stdin=text)
        except Exception as exc:  # noqa: BLE001
            pytest.fail(f"$ {args} <<< {text!r}: the emulator raised {exc!r}")
    assert ns.netfilter.rules.snapshot() == start


# --- the real iptables --------------------------------------------------------------------------

def _kernel(ns: RealNetns, cmdline: str, stdin: str = "") -> Result:
    res = subprocess.run(ns.argv(shlex.split(cmdline)), input=stdin, capture_output=True, text=True,
                         timeout=TIMEOUT)
    return res.returncode, res.stdout, res.stderr


def _strip(text: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True) if not line.startswith("# "))


@pytest.fixture(scope="module")
def kernel_answers():  # noqa: ANN201
    """Every case run once by the real iptables on BASE: {case: (rc, stdout, stderr)}, plus the
    cases after which the kernel's rules were not BASE any more (the rules are put back)."""
    reason = linux_available()
    if reason is not None:
        pytest.skip(reason)
    for tool in ("iptables", "iptables-restore", "iptables-save"):
        if shutil.which(tool) is None:
            pytest.skip(f"`{tool}` not found")
    ns = RealNetns("iptables-errors")
    try:
        rc, _, err = _kernel(ns, "iptables-restore", BASE)
        assert rc == 0, err
        base = _strip(_kernel(ns, "iptables-save -c")[1])
        answers: dict[tuple[str, str], Result] = {}
        changed: list[str] = []
        for cmdline, stdin in [(c, "") for c in BAD_COMMANDS] + BAD_RESTORES:
            answers[(cmdline, stdin)] = _kernel(ns, cmdline, stdin)
            if _strip(_kernel(ns, "iptables-save -c")[1]) != base:
                changed.append(cmdline)
                _kernel(ns, "iptables-restore", BASE)
        yield answers, changed
    finally:
        ns.delete()


@pytest.mark.linux
def test_cases_are_errors_for_the_kernel_too(kernel_answers):
    answers, changed = kernel_answers
    accepted = [c for c, r in answers.items() if r[0] == 0]
    assert not accepted, f"the real iptables accepts: {accepted}"
    assert not changed, f"the real rules changed after: {changed}"


@pytest.mark.linux
@pytest.mark.parametrize("pure_python", [False, True], ids=["cython", "pure"])
def test_error_messages_match_kernel(kernel_answers, pure_python):
    answers, _ = kernel_answers
    bad = []
    for (cmdline, stdin), k in answers.items():
        ns = emu_lab(pure_python).netns("gw")
        assert ns.run("iptables-restore", stdin=BASE).rc == 0
        try:
            res = ns.run(cmdline, stdin=stdin)
            e: Result = (res.rc, res.stdout, res.stderr)
        except Exception as exc:  # noqa: BLE001 - a crash is a difference too
            e = (-1, "", f"raised {exc!r}")
        if e != k:
            bad.append((cmdline + (f" <<< {stdin!r}" if stdin else ""), k, e))
    assert not bad, diff_report("malformed iptables input", bad, limit=200)
