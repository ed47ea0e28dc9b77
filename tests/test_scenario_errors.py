"""Bad input to the `emu` command: one clear message, exit code 2, no traceback, no output file.

Every file in tests/scenarios/invalid/ holds one mistake; CASES says what `emu run` must print for it.
Files under invalid/parts/ are what those scenarios include or replay.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
INVALID_REL = "tests/scenarios/invalid"  # as given to the CLI, which runs in REPO
VALID_REL = "tests/scenarios/valid"
INVALID = REPO / INVALID_REL
TWO_HOSTS = f"{VALID_REL}/two_hosts.yaml"
PREFIX = "emu: error: "


def emu_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    env.update(NO_COLOR="1", PYTHONUNBUFFERED="1", COLUMNS="10000")
    return env


def emu(*args: str, cwd: Path = REPO, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "emu.cli", *args], cwd=cwd, env=emu_env(), capture_output=True,
                          text=True, timeout=timeout)


def assert_clean(res: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in res.stdout + res.stderr, res.stderr
    assert res.returncode == 2, f"exit {res.returncode}\nstdout: {res.stdout}\nstderr: {res.stderr}"


def leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.part"))


# --- the table ------------------------------------------------------------------------------------------------

class Re(str):
    """An expected message given as a regular expression (matched in full, after the placeholders)."""


@dataclass(frozen=True)
class Case:
    file: str
    message: str  # the stderr line after "emu: error: "; {f} = the scenario path as given, {d} = its folder
    contains: tuple[str, ...] = ()  # substrings of stderr checked with the exit code
    pcap_arg: bool = True  # pass --pcap OUT (it overrides capture.file)

    @property
    def path(self) -> str:
        return f"{INVALID_REL}/{self.file}"

    def expected(self) -> re.Pattern[str]:
        if isinstance(self.message, Re):
            text = self.message.replace("{f}", re.escape(self.path)).replace("{d}", re.escape(INVALID_REL))
        else:
            text = re.escape(self.message.replace("{f}", self.path).replace("{d}", INVALID_REL))
        return re.compile(re.escape(PREFIX) + text)


REASONS = ("NO_ROUTE, BLACKHOLE, UNREACHABLE, PROHIBIT, TTL_EXPIRED, NO_NEIGH, FILTERED, NO_LISTENER, MALFORMED, "
           "BAD_CHECKSUM, IFACE_DOWN, NOT_FOR_US, FORWARDING_OFF, FRAG_NEEDED, RP_FILTER, MARTIAN, UNSUPPORTED, "
           "NO_CARRIER, REASM_TIMEOUT, HAIRPIN, ARP_IGNORED, QUEUE_FULL")
STEP_KEYS = "cni, exec, expect, include, kubectl, link, listen, name, node, ping, pod, replay, tcp, traceroute, udp, wait"
LINKTYPES = r" \(emu replays Ethernet \(1\) and raw IPv4 \(101\)\)"

CASES: list[Case] = [
    # YAML syntax
    Case("yaml_bad_indent.yaml",
         "{f}:3:2: YAML syntax error: expected <block end>, but found '<block mapping start>'"),
    Case("yaml_unclosed_bracket.yaml", "{f}:3:6: YAML syntax error: expected ',' or ']', but got ':'"),
    Case("yaml_tab_indent.yaml", "{f}:2:1: YAML syntax error: found character '\\t' that cannot start any token"),
    Case("yaml_duplicate_key.yaml", "{f}:6:5: YAML syntax error: duplicate key 'name'"),
    Case("yaml_complex_key.yaml", Re(r"{f}:\d+:\d+: .+")),
    Case("yaml_recursive_alias.yaml", Re(r"{f}:\d+:\d+: .+")),
    Case("non_utf8.yaml", "{f}: not UTF-8 text (invalid continuation byte at byte 9)"),
    # the shape of the document
    Case("empty.yaml", "{f}:1:1: a scenario is a mapping with topology and steps, got null"),
    Case("top_level_list.yaml", "{f}:1:1: a scenario is a mapping with topology and steps, got list"),
    Case("top_level_scalar.yaml", "{f}:1:1: a scenario is a mapping with topology and steps, got string"),
    Case("missing_topology.yaml", "{f}:1:1: missing required key 'topology'"),
    Case("unknown_top_key.yaml",
         "{f}:4:1: unknown key 'stpes' (expected one of: capture, cluster, description, name, seed, steps, topology)",
         contains=("unknown key 'stpes' (expected one of: capture, cluster, description, name, seed, steps, topology)",)),
    Case("unknown_step_key.yaml",
         Re(r"{f}:7:5: steps\[1\](\.timeout)?: unknown key 'timeout' \(expected one of: " + STEP_KEYS + r"\)"),
         contains=(f"steps[1]: unknown key 'timeout' (expected one of: {STEP_KEYS})",)),
    Case("ping_unknown_key.yaml",
         Re(r"{f}:7:7: steps\[0\]\.ping(\.tos)?: unknown key 'tos' "
            r"\(expected one of: count, expect, from, interval, size, to, ttl\)"),
         contains=("steps[0].ping: unknown key 'tos' "
                   "(expected one of: count, expect, from, interval, size, to, ttl)",)),
    Case("unknown_keys_mixed_types.yaml", Re(r"{f}:\d+:\d+: steps\[0\](\.\w+)?: unknown key .+")),
    Case("step_no_kind.yaml", "{f}:5:5: steps[1]: a step needs one of: exec, ping, traceroute, listen, udp, tcp, "
                              "wait, link, replay, expect, include, kubectl, pod, node, cni"),
    Case("step_two_kinds.yaml", "{f}:4:5: steps[0]: a step has several kinds (exec, wait); give one per step"),
    # types, formats, ranges, enums
    Case("count_string.yaml", "{f}:7:7: steps[0].ping.count: expected an integer, got string 'three'"),
    Case("seed_list.yaml", "{f}:1:1: seed: expected an integer, got list [1, 2]"),
    Case("cmd_number.yaml", "{f}:4:19: steps[0].exec.cmd: expected a string, got integer 42"),
    Case("ping_bad_ipv4.yaml", "{f}:7:21: steps[3].ping.to: invalid IPv4 address '10.0.0.300'"),
    Case("traceroute_bad_ipv4.yaml", "{f}:6:7: steps[0].traceroute.to: invalid IPv4 address '10.0.0.300'"),
    Case("hops_bad_ipv4.yaml", "{f}:4:69: steps[0].traceroute.expect.hops[1]: invalid IPv4 address '10.0.0.256'"),
    Case("port_out_of_range.yaml", "{f}:5:34: steps[1].udp.port: 65536 is above the maximum 65535"),
    Case("listen_port_zero.yaml", "{f}:4:33: steps[0].listen.port: 0 is below the minimum 1"),
    Case("ping_count_too_big.yaml", "{f}:4:35: steps[0].ping.count: 100000 is above the maximum 10000"),
    Case("wait_negative.yaml", "{f}:4:5: steps[0].wait: -1 is below the minimum 0"),
    Case("wait_nan.yaml", Re(r"{f}:4:5: steps\[0\]\.wait: .+")),
    Case("link_bad_state.yaml", "{f}:6:32: steps[0].link.state: expected one of up, down, got 'sideways'"),
    Case("outcome_bad.yaml", f"{{f}}:7:26: steps[0].ping.expect.outcome.dropped: expected one of {REASONS}, "
                             "got 'LOST'"),
    Case("drops_unknown_reason.yaml", f"{{f}}:7:9: steps[0].expect.drops: expected one of {REASONS}, "
                                      "got 'LOST_IN_SPACE'",
         contains=(f"steps[0].expect.drops: expected one of {REASONS}, got 'LOST_IN_SPACE'",)),
    Case("frame_unknown_field.yaml", "{f}:11:11: steps[0].expect.frame.match: unknown frame field 'ipv6.src' "
                                     "(use eth.*, arp.*, ip.*, icmp.*, udp.*, tcp.* or vxlan.*)",
         contains=("steps[0].expect.frame.match: unknown frame field 'ipv6.src' "
                   "(use eth.*, arp.*, ip.*, icmp.*, udp.*, tcp.* or vxlan.*)",)),
    Case("capture_point_format.yaml", "{f}:4:12: capture.points[0]: expected NAMESPACE/IFNAME, got 'pc1-eth0'"),
    Case("namespaces_empty.yaml", "{f}:2:3: topology.namespaces: must not be empty"),
    Case("namespaces_duplicate.yaml", "{f}:2:3: topology.namespaces: has duplicate entries: a"),
    Case("namespace_bad_name.yaml",
         "{f}:2:19: topology.namespaces[1]: invalid name 'b c' (letters, digits, '.', '_' or '-', at most 64)"),
    Case("setup_two_namespaces.yaml", "{f}:4:7: topology.setup[0]: give one namespace per setup entry"),
    # names that must be declared
    Case("setup_unknown_ns.yaml",
         "{f}:5:7: topology.setup[1].pc3: unknown namespace 'pc3' (topology.namespaces has: pc1, pc2)"),
    Case("step_unknown_ns.yaml",
         "{f}:5:12: steps[1].ping.from: unknown namespace 'pc9' (topology.namespaces has: pc1, pc2)"),
    Case("capture_unknown_ns.yaml",
         "{f}:6:7: capture.points[1]: unknown namespace 'pc3' (topology.namespaces has: pc1, pc2)"),
    Case("frame_at_unknown_ns.yaml",
         "{f}:7:15: steps[0].expect.frame.at: unknown namespace 'r1' (topology.namespaces has: pc1, pc2)"),
    Case("nic_unknown_segment.yaml",
         "{f}:6:27: topology.nics[1].segment: unknown segment 'wan' (declare it under topology.segments)"),
    # includes
    Case("include_missing.yaml", "{f}:5:5: steps[1].include: cannot include 'parts/no_such_steps.yaml': no such file"),
    Case("include_self.yaml", "{f}:4:5: steps[0].include: include 'include_self.yaml' would include itself"),
    Case("include_loop.yaml", "{d}/parts/loop_b.yaml:2:3: [1].include: include 'loop_a.yaml' would include itself"),
    Case("include_error.yaml", "{d}/parts/bad_steps.yaml:6:5: [2].ping.to: invalid IPv4 address '10.0.0.300'"),
    Case("include_nested_error.yaml",
         "{d}/parts/inner_steps.yaml:2:10: [1].exec.ns: unknown namespace 'c' (topology.namespaces has: a, b)"),
    Case("include_empty.yaml", Re(r"{f}:4:5: steps\[0\]\.include: cannot include 'parts/empty_steps\.yaml': .+"),
         contains=("parts/empty_steps.yaml",)),
    Case("include_not_steps.yaml", Re(r"{d}/parts/not_steps\.yaml:1:1: .*got string 'just a sentence, not steps'")),
    # replay
    Case("replay_missing.yaml",
         Re(r"{f}:6:14: steps\[0\]\.replay\.file: no such file: ({d}/)?parts/no_such_capture\.pcap"),
         contains=("steps[0].replay.file: no such file: ", "parts/no_such_capture.pcap")),
    Case("replay_linktype.yaml",
         Re(r"{f}:7:7: steps\[0\]\.replay\.file: ({d}/)?parts/wifi\.pcap: unsupported link type 105" + LINKTYPES),
         contains=("parts/wifi.pcap: unsupported link type 105 (emu replays Ethernet (1) and raw IPv4 (101))",)),
    Case("replay_linktype_pcapng.yaml",
         Re(r"{f}:7:7: steps\[0\]\.replay\.file: ({d}/)?parts/cooked\.pcapng: unsupported link type 113" + LINKTYPES),
         contains=("parts/cooked.pcapng: unsupported link type 113 (emu replays Ethernet (1) and raw IPv4 (101))",)),
    Case("replay_not_a_capture.yaml",
         Re(r"{f}:6:14: steps\[0\]\.replay\.file: ({d}/)?parts/bad_steps\.yaml: not a pcap or pcapng file"),
         contains=("parts/bad_steps.yaml: not a pcap or pcapng file",)),
    Case("replay_corrupt.yaml", Re(r"{f}:6:14: steps\[0\]\.replay\.file: ({d}/)?parts/corrupt\.pcap: .+"),
         contains=("steps[0].replay.file: ", "parts/corrupt.pcap: ")),
    Case("replay_truncated.yaml",
         Re(r"{f}:6:14: steps\[0\]\.replay\.file: ({d}/)?parts/truncated\.pcap: truncated or corrupt capture.*")),
    # found while building the lab
    Case("setup_command_fails.yaml", "{f}:8:11: topology.setup[0].r1[3]: r1: `ip route add 10.9.0.0/16 via "
                                     "10.99.99.1` failed: Error: Nexthop has invalid gateway."),
    Case("capture_missing_iface.yaml", "{f}:6:22: capture.points[1]: no interface 'eth1' in namespace 'pc2'"),
    Case("capture_file_is_directory.yaml", Re(r"{f}:5:\d+: capture\.file: .+"), pcap_arg=False),
    # found while running the steps
    Case("link_missing_dev.yaml", "{f}:7:21: steps[1].link.dev: no interface 'eth1' in namespace 'pc2'"),
    Case("link_dev_with_slash.yaml", Re(r"{f}:6:\d+: steps\[0\]\.link\.dev: .+")),
    Case("counters_missing_iface.yaml",
         "{f}:7:18: steps[0].expect.counters.at: no interface 'eth7' in namespace 'pc1'"),
    Case("frame_not_captured.yaml",
         "{f}:12:15: steps[1].expect.frame.at: pc2/eth0 is not a capture point (add it under capture.points)"),
]
BY_FILE = {c.file: c for c in CASES}


def params(aspect: str) -> list[object]:
    return [pytest.param(c, id=c.file) for c in CASES]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[subprocess.CompletedProcess[str], Path]]:
    """Runs `emu run FILE --pcap OUT/out.pcapng --json OUT/report.json` once per case, a few at a time."""
    root = tmp_path_factory.mktemp("invalid-runs")

    def one(c: Case) -> tuple[subprocess.CompletedProcess[str], Path]:
        out = root / c.file.replace(".", "_")
        out.mkdir()
        args = ["run", c.path, *(["--pcap", str(out / "out.pcapng")] if c.pcap_arg else []),
                "--json", str(out / "report.json")]
        return emu(*args), out

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1)) as pool:
        return dict(zip(BY_FILE, pool.map(one, CASES), strict=True))


# --- the scenario files ------------------------------------------------------------------------------------------

def test_table_covers_every_invalid_file() -> None:
    files = sorted(p.name for p in INVALID.iterdir() if p.is_file())
    assert len(files) >= 25
    assert len(CASES) == len(BY_FILE), "a file is listed twice"
    assert sorted(BY_FILE) == files, "every file in tests/scenarios/invalid/ needs an entry in CASES (and back)"


def test_every_part_is_used() -> None:
    """invalid/parts/ holds only what the scenarios include or replay."""
    texts = "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in INVALID.rglob("*.yaml"))
    for part in (INVALID / "parts").iterdir():
        assert part.name in texts, f"parts/{part.name} is not used by any scenario"


@pytest.mark.parametrize("case", params("rejected"))
def test_rejected(case: Case, results: dict[str, tuple[subprocess.CompletedProcess[str], Path]]) -> None:
    """Exit code 2, no traceback, the message says what is wrong, and no output file (nor a .part) is left."""
    res, out = results[case.file]
    assert_clean(res)
    assert res.stderr.rstrip("\n").splitlines()[-1].startswith(PREFIX), res.stderr
    for text in case.contains:
        assert text in res.stderr
    assert sorted(p.name for p in out.iterdir()) == [], "an output file was written for a bad scenario"
    assert leftovers(INVALID) == []


@pytest.mark.parametrize("case", params("one_line"))
def test_one_line(case: Case, results: dict[str, tuple[subprocess.CompletedProcess[str], Path]]) -> None:
    res, _ = results[case.file]
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


@pytest.mark.parametrize("case", params("message"))
def test_message(case: Case, results: dict[str, tuple[subprocess.CompletedProcess[str], Path]]) -> None:
    """The exact line: FILE:LINE:COL: FIELD.PATH: message."""
    got, want = results[case.file][0].stderr.strip(), case.expected()
    assert want.fullmatch(got), f"\n got: {got}\nwant: {want.pattern}"


def test_no_absolute_paths_in_messages(results: dict[str, tuple[subprocess.CompletedProcess[str], Path]]) -> None:
    """Messages name files as they were given (relative here), except the replay ones (a known bug)."""
    here = str(REPO)
    bad = [c.file for c in CASES if not c.file.startswith("replay_")
           and any(here in line for line in results[c.file][0].stderr.splitlines() if line.startswith(PREFIX))]
    assert bad == []



# --- the command line -------------------------------------------------------------------------------------------

def test_valid_helper_runs() -> None:
    """The scenario the command-line tests below use is fine, so their errors come from the arguments."""
    res = emu("run", TWO_HOSTS)
    assert res.returncode == 0, res.stdout + res.stderr


def test_scenario_missing() -> None:
    res = emu("run", f"{INVALID_REL}/no_such_scenario.yaml")
    assert_clean(res)
    assert res.stderr.strip() == f"{PREFIX}{INVALID_REL}/no_such_scenario.yaml: no such file"


def test_scenario_is_a_directory() -> None:
    res = emu("run", INVALID_REL)
    assert_clean(res)
    assert "is a directory" in res.stderr


def test_scenario_is_a_directory_message() -> None:
    res = emu("run", INVALID_REL)
    assert res.stderr.strip() == f"{PREFIX}{INVALID_REL}: is a directory, not a scenario file"


@pytest.mark.parametrize("args, message", [
    (["exec", TWO_HOSTS, "h3", "--", "ip", "route"], f"{TWO_HOSTS}: unknown namespace 'h3' (namespaces: h1, h2)"),
    (["exec", TWO_HOSTS, "h1", "--at", "no such step", "--", "ip", "route"],
     f"{TWO_HOSTS}: no step 'no such step' (steps: reach h2)"),
    (["exec", f"{INVALID_REL}/step_unknown_ns.yaml", "pc1", "--", "ip", "route"],
     f"{INVALID_REL}/step_unknown_ns.yaml:5:12: steps[1].ping.from: unknown namespace 'pc9' "
     "(topology.namespaces has: pc1, pc2)"),
    (["trace", TWO_HOSTS, "--from", "h1", "--to", "10.0.0.300"], "--to: invalid IPv4 address '10.0.0.300'"),
    (["trace", TWO_HOSTS, "--from", "h1", "--to", "10.0.0.1:99999"], "--to: invalid port '99999' (1-65535)"),
    (["trace", TWO_HOSTS, "--from", "h1", "--to", "10.0.0.1:0"], "--to: invalid port '0' (1-65535)"),
    (["trace", TWO_HOSTS, "--from", "h1", "--to", "10.0.0.2", "--proto", "tcp"], "--to: tcp needs a port: ADDR:PORT"),
    (["trace", TWO_HOSTS, "--from", "h3", "--to", "10.0.0.2"], "--from: unknown namespace 'h3' (namespaces: h1, h2)"),
    (["trace", TWO_HOSTS, "--from", "h1", "--to", "10.0.0.2", "--at", "nosuch"],
     f"{TWO_HOSTS}: no step 'nosuch' (steps: reach h2)"),
], ids=["exec-namespace", "exec-at", "exec-bad-scenario", "trace-address", "trace-port", "trace-port-0",
        "trace-tcp-no-port", "trace-from", "trace-at"])
def test_exec_and_trace_arguments(args: list[str], message: str) -> None:
    res = emu(*args)
    assert_clean(res)
    assert res.stderr.strip() == PREFIX + message


def test_exec_and_trace_work() -> None:
    res = emu("exec", TWO_HOSTS, "h1", "--", "ip", "route")
    assert res.returncode == 0 and "10.0.0.0/24 dev eth0" in res.stdout, res.stdout + res.stderr
    res = emu("trace", TWO_HOSTS, "--from", "h1", "--to", "10.0.0.2")
    assert res.returncode == 0 and res.stdout.startswith("Flow: icmp echo request 10.0.0.1 -> 10.0.0.2"), res.stdout


def test_pcap_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    res = emu("run", TWO_HOSTS, "--pcap", str(tmp_path / "dir"), "--json", str(tmp_path / "report.json"))
    assert_clean(res)
    assert res.stderr.startswith(PREFIX) and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir"] and not any((tmp_path / "dir").iterdir())


def test_json_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    res = emu("run", TWO_HOSTS, "--pcap", str(tmp_path / "out.pcapng"), "--json", str(tmp_path / "dir"))
    assert_clean(res)
    assert res.stderr.startswith(PREFIX) and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir"] and not any((tmp_path / "dir").iterdir())


# --- Ctrl-C -------------------------------------------------------------------------------------------------------

LONG_RUN = """\
name: long
topology:
  namespaces: [a, b]
  setup:
    - a: ip link add eth0 type veth peer name eth0 netns b
    - a: [ip addr add 10.0.0.1/24 dev eth0, ip link set eth0 up]
    - b: [ip addr add 10.0.0.2/24 dev eth0, ip link set eth0 up]
capture:
  points: all
  file: out/long.pcapng
steps:
  - name: first
    ping: {from: a, to: 10.0.0.2, count: 1}
""" + "  - ping: {from: a, to: 10.0.0.2, count: 10000, interval: 0.001}\n" * 40  # ~1 s of real time each


def start(cwd: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "emu.cli", *args], cwd=cwd, env=emu_env(),
                            stdout=open(cwd / "stdout.txt", "wb"), stderr=open(cwd / "stderr.txt", "wb"))


def finish(proc: subprocess.Popen[bytes], limit: float = 60) -> int:
    try:
        return proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"emu did not end within {limit} s of Ctrl-C")


def test_ctrl_c_writes_a_complete_pcap(tmp_path: Path) -> None:
    (tmp_path / "long.yaml").write_text(LONG_RUN)
    proc = start(tmp_path, "run", "long.yaml")
    try:
        deadline = time.monotonic() + 60
        while "first:" not in (tmp_path / "stdout.txt").read_text(errors="replace"):
            assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()
            assert time.monotonic() < deadline, "the run did not start within 60 s"
            time.sleep(0.05)
        time.sleep(1.0)  # inside the long pings
        assert proc.poll() is None, "the run ended before Ctrl-C"
        proc.send_signal(signal.SIGINT)
        rc = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stdout, stderr = ((tmp_path / n).read_text(errors="replace") for n in ("stdout.txt", "stderr.txt"))
    assert "Traceback" not in stdout + stderr, stderr
    assert rc == 130, stderr
    m = re.search(r"emu: interrupted after (\d+) steps: wrote the (\d+) frames captured so far to (\S+)", stderr)
    assert m, stderr
    assert int(m[1]) >= 1 and m[3] == "out/long.pcapng"
    pcap = tmp_path / "out" / "long.pcapng"
    assert pcap.is_file()
    from scapy.utils import RawPcapNgReader

    reader = RawPcapNgReader(str(pcap))
    try:
        n = sum(1 for _ in reader)
    finally:
        reader.close()
    assert n == int(m[2]) > 0
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["long.pcapng"]
    tshark = shutil.which("tshark")
    if tshark:
        res = subprocess.run([tshark, "-r", str(pcap), "-q"], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        assert "cut short" not in res.stderr and "isn't supported" not in res.stderr, res.stderr


def test_ctrl_c_while_building(tmp_path: Path) -> None:
    addrs = "".join(f"        - ip addr add 10.{i // 250}.{i % 250}.1/32 dev dummy0\n" for i in range(8000))
    (tmp_path / "big.yaml").write_text("topology:\n  namespaces: [a]\n  setup:\n"
                                       "    - a: ip link add dummy0 type dummy\n    - a:\n" + addrs
                                       + "capture: {points: all, file: out/big.pcapng}\nsteps:\n  - wait: 1\n")
    proc = start(tmp_path, "run", "big.yaml")
    try:
        time.sleep(3.0)  # past the imports, into the load or the ~10 s setup
        assert proc.poll() is None, "the build ended before Ctrl-C"
        proc.send_signal(signal.SIGINT)
        rc = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = (tmp_path / "stderr.txt").read_text(errors="replace")
    assert "Traceback" not in stderr
    assert rc == 130 and "interrupted" in stderr, f"exit {rc}: {stderr}"
    assert leftovers(tmp_path) == []
