"""Harness for tests that compare the emulator with the real Linux kernel.

Every real namespace is created here with a unique `emut-` name, IPv6 disabled, never
connected to the root namespace, and deleted at the end of the test (even on failure).
Tests using these fixtures are marked `@pytest.mark.linux` and skip when not root or when
iproute2 is missing.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterable, Iterator

import pytest

PREFIX = "emut-"
TIMEOUT = 20  # seconds, for any single command

Result = tuple[int, str, str]


def linux_available() -> str | None:
    """The reason the real-kernel tests cannot run here, or None when they can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "real-kernel tests need root (network namespaces)"
    if shutil.which("ip") is None:
        return "real-kernel tests need iproute2 (`ip` not found)"
    try:
        out = subprocess.run(["ip", "-V"], capture_output=True, text=True, timeout=TIMEOUT)
    except (OSError, subprocess.SubprocessError) as exc:  # pragma: no cover - broken install
        return f"`ip -V` failed: {exc}"
    if out.returncode != 0:
        return f"`ip -V` failed: {out.stderr.strip()}"
    return None


def _unique_name() -> str:
    existing = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                  timeout=TIMEOUT).stdout.split())
    while True:
        name = PREFIX + uuid.uuid4().hex[:10]
        if name not in existing:
            return name


class RealNetns:
    """A real, isolated network namespace named `emut-<random>`, with IPv6 disabled."""

    def __init__(self, label: str = "") -> None:
        self.label = label
        self.name = _unique_name()
        self.alive = False
        self._procs: list[subprocess.Popen] = []
        res = subprocess.run(["ip", "netns", "add", self.name], capture_output=True, text=True,
                             timeout=TIMEOUT)
        if res.returncode != 0:
            raise RuntimeError(f"ip netns add {self.name}: {res.stderr.strip()}")
        self.alive = True
        rc, _, err = self.run("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")
        if rc != 0:
            self.delete()
            raise RuntimeError(f"cannot disable IPv6 in {self.name}: {err.strip()}")

    def __repr__(self) -> str:
        return f"RealNetns({self.label!r}, {self.name!r})"

    def argv(self, cmdline: str | list[str]) -> list[str]:
        argv = shlex.split(cmdline) if isinstance(cmdline, str) else list(cmdline)
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, cmdline: str | list[str], *, timeout: float = TIMEOUT) -> Result:
        """Runs one command line (no shell) inside the namespace: (rc, stdout, stderr)."""
        assert self.alive, f"{self.name} was deleted"
        res = subprocess.run(self.argv(cmdline), capture_output=True, text=True, timeout=timeout)
        return res.returncode, res.stdout, res.stderr

    def run_many(self, cmdlines: Iterable[str], *, timeout: float = 300) -> list[Result]:
        """Runs many command lines in one `sh` inside the namespace, exactly separated.

        Each command is re-quoted with shlex (so no shell expansion happens) and followed by
        separator records on both stdout and stderr; the outputs are split back byte-exactly.
        It is the same as calling `run` per command, about twice as fast.
        """
        assert self.alive, f"{self.name} was deleted"
        cmdlines = list(cmdlines)
        lines = []
        for i, cmd in enumerate(cmdlines):
            lines.append(shlex.join(shlex.split(cmd)) + " </dev/null")
            lines.append(f"printf '\\036%s %s\\036' {i} \"$?\"")
            lines.append(f"printf '\\036%s\\036' {i} >&2")
        script = "\n".join(lines) + "\n"
        res = subprocess.run(["ip", "netns", "exec", self.name, "sh", "-s"], input=script,
                             capture_output=True, text=True, timeout=timeout)
        if res.returncode != 0:
            raise RuntimeError(f"batch shell failed in {self.name}: rc={res.returncode} {res.stderr[-500:]}")
        outs = re.split(r"\x1e(\d+) (\d+)\x1e", res.stdout)
        errs = re.split(r"\x1e(\d+)\x1e", res.stderr)
        # re.split with groups: [chunk0, idx0, rc0, chunk1, idx1, rc1, ..., tail]
        assert outs[-1] == "" and errs[-1] == "", "stray output after the last separator"
        n = len(cmdlines)
        assert len(outs) == 3 * n + 1 and len(errs) == 2 * n + 1, "separator count mismatch"
        results = []
        for i in range(n):
            assert int(outs[3 * i + 1]) == i and int(errs[2 * i + 1]) == i
            results.append((int(outs[3 * i + 2]), outs[3 * i], errs[2 * i]))
        return results

    def popen(self, cmdline: str | list[str], **kwargs) -> subprocess.Popen:
        """Starts a background process in the namespace; it is killed by `delete` at the latest."""
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        kwargs.setdefault("text", True)
        proc = subprocess.Popen(self.argv(cmdline), **kwargs)
        self._procs.append(proc)
        return proc

    def delete(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        self._procs.clear()
        if self.alive:
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True, text=True,
                           timeout=TIMEOUT)
            self.alive = False


@pytest.fixture
def real_netns() -> Iterator[Callable[[str], RealNetns]]:
    """Factory fixture: `real_netns("h1")` creates a fresh real namespace, deleted at teardown."""
    reason = linux_available()
    if reason is not None:
        pytest.skip(reason)
    created: list[RealNetns] = []

    def make(label: str = "") -> RealNetns:
        ns = RealNetns(label)
        created.append(ns)
        return ns

    try:
        yield make
    finally:
        for ns in reversed(created):
            ns.delete()


# --- comparison helpers -------------------------------------------------------------------

def emu_lab(pure_python: bool, seed: int = 1):
    """A Lab on the compiled tables (failing when they did not load) or on the pure-Python ones."""
    from emu import fastpath
    from emu.net import Lab

    if not pure_python and not fastpath.EXTENSION_LOADED:
        if os.environ.get("EMU_NO_EXTENSIONS") == "1":
            pytest.skip("EMU_NO_EXTENSIONS=1: the compiled tables are off on purpose")
        pytest.fail("the compiled extension emu._fastpath did not load")
    return Lab(seed=seed, pure_python=pure_python)


class EmuSide:
    """The emulator counterpart of RealNetns: `run` returns (rc, stdout, stderr)."""

    def __init__(self, ns) -> None:
        self.ns = ns
        self.name = ns.name

    def run(self, cmdline: str) -> Result:
        res = self.ns.run(cmdline)
        return res.rc, res.stdout, res.stderr

    def run_many(self, cmdlines: Iterable[str]) -> list[Result]:
        return [self.run(c) for c in cmdlines]


_MAC_TEXT = re.compile(r"(?<![0-9A-Fa-f:])[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}(?![0-9A-Fa-f:])")
FIXED_MACS = {"00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff"}


class Normaliser:
    """Replaces kernel-chosen values by stable tokens, by order of first appearance.

    Only values the kernel picks at random or by allocation order are touched: MAC
    addresses (other than all-zero, broadcast and the ones a test chose itself), ifindex
    and link_index values, link_netnsid. Equal inputs map to equal tokens, so relations
    (which interface is which) are kept. The substitution is textual, so every other byte
    of the output (JSON spacing, trailing spaces) is still compared exactly.
    """

    def __init__(self, keep_macs: Iterable[str] = ()) -> None:
        self.keep = set(FIXED_MACS) | {m.lower() for m in keep_macs}
        self.macs: dict[str, str] = {}
        self.ifindex: dict[int, str] = {}

    def mac(self, value: str) -> str:
        key = value.lower()
        if key in self.keep:
            return value
        if key not in self.macs:
            self.macs[key] = f"<mac{len(self.macs) + 1}>"
        return self.macs[key]

    def index(self, value: int) -> str:
        if value not in self.ifindex:
            self.ifindex[value] = f"<if{len(self.ifindex) + 1}>"
        return self.ifindex[value]

    def text(self, s: str) -> str:
        """MAC addresses anywhere in the text."""
        return _MAC_TEXT.sub(lambda m: self.mac(m.group(0)), s)

    def json_text(self, s: str) -> str:
        """`ip -j` output: MACs, and the numbers of "ifindex", "link_index", "link_netnsid"."""
        s = re.sub(r'"(ifindex|link_index)":(\d+)',
                   lambda m: f'"{m.group(1)}":"{self.index(int(m.group(2)))}"', s)
        s = re.sub(r'"link_netnsid":\d+', '"link_netnsid":"<netnsid>"', s)
        return self.text(s)


def normalise_json_result(res: Result, norm: Normaliser | None = None) -> Result:
    """(rc, stdout, stderr) of an `ip -j` command with kernel-chosen values replaced."""
    rc, out, err = res
    norm = norm or Normaliser()
    return rc, norm.json_text(out), err


def _lines(text: str) -> list[str]:
    """Lines to diff; one-line JSON arrays are split between their objects."""
    if text.startswith("[{") and "\n" not in text.rstrip("\n"):
        text = text.replace("},{", "},\n{")
    return text.splitlines()


def diff_report(title: str, pairs: list[tuple[str, Result, Result]], limit: int = 25) -> str:
    """A readable list of (command, kernel, emulator) disagreements; long outputs as a diff."""
    lines = [f"{title}: {len(pairs)} command(s) differ between the kernel and the emulator"]
    for cmd, k, e in pairs[:limit]:
        lines.append(f"$ {cmd}")
        for tag, idx in (("rc", 0), ("stdout", 1), ("stderr", 2)):
            if k[idx] == e[idx]:
                continue
            if idx and max(len(k[idx]), len(e[idx])) > 300:
                lines.append(f"  {tag} (- kernel, + emulator):")
                diff = difflib.unified_diff(_lines(k[idx]), _lines(e[idx]), lineterm="", n=1)
                lines.extend("    " + d for d in list(diff)[2:60])
            else:
                lines.append(f"  {tag}: kernel   {k[idx]!r}")
                lines.append(f"  {tag}: emulator {e[idx]!r}")
    if len(pairs) > limit:
        lines.append(f"... and {len(pairs) - limit} more")
    return "\n".join(lines)
