"""Every bundled scenario passes, is deterministic on both tables, and its committed sample pcap is current."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from emu import fastpath
from emu.scenario.loader import load
from emu.scenario.runner import Run

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))
# Scenarios none of whose frames can run a program, and why (the equality still holds and is checked).
NO_PROGRAMS = {"vxlan-overlay": "its pings enter node2 VXLAN-encapsulated by a host's own stack, and a program never "
                                "decapsulates the frame it came in as (the key does not cover the inner packet)"}


def test_there_are_bundled_scenarios() -> None:
    assert {p.stem for p in SCENARIOS} >= {"chapter1", "vxlan-overlay", "nat-gateway", "cni-by-hand", "flannel-vxlan",
                                            "flannel-host-gw"}


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_bundled_scenario(path: Path, tmp_path: Path) -> None:
    blobs = []
    impls = (False, True) if fastpath.EXTENSION_LOADED else (True, True)
    for i, pure in enumerate(impls):
        runner = Run(load(str(path)), pure_python=pure)
        runner.run()
        assert runner.failed == 0, [f"{r.step.where}: {f}" for r in runner.results for f in r.failures]
        out = tmp_path / f"{i}.pcapng"
        runner.lab.write_pcap(str(out))
        blobs.append(out.read_bytes())
    assert blobs[0] == blobs[1], "the compiled and pure-Python tables wrote different pcaps"
    sc = load(str(path))
    if sc.capture_file:
        sample = Path(sc.resolve(sc.capture_file))
        assert sample.exists(), f"commit the sample pcap {sample.name} (run `emu run {path.name}`)"
        assert sample.read_bytes() == blobs[0], f"{sample.name} is stale: re-run `emu run scenarios/{path.name}`"


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed (.ci/run installs it)")
@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_sample_pcap_decodes_cleanly(path: Path) -> None:
    sc = load(str(path))
    sample = Path(sc.resolve(sc.capture_file))
    res = subprocess.run(["tshark", "-r", str(sample), "-d", "udp.port==8472,vxlan", "-o", "ip.check_checksum:TRUE",
                          "-o", "udp.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE", "-T", "fields",
                          "-e", "frame.comment", "-e", "_ws.expert.severity", "-e", "_ws.malformed"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    for row in (ln.split("\t") for ln in res.stdout.splitlines()):
        assert row[0], "a frame without a comment"
        assert not row[2] and "warn" not in row[1].lower() and "error" not in row[1].lower(), row


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_fast_path_changes_nothing(path: Path, tmp_path: Path) -> None:
    """With the flow cache on or off: the same step outcomes, pcap bytes, tables and counters."""
    from tests.randlab import first_difference, snapshot

    seen = []
    for fast in (False, True):
        runner = Run(load(str(path)), fastpath=fast)
        runner.run()
        out = tmp_path / f"{fast}.pcapng"
        runner.lab.write_pcap(str(out))
        steps = [r.as_dict() for r in runner.results]
        seen.append((steps, out.read_bytes(), snapshot(runner.lab), runner.lab))
    (steps0, pcap0, snap0, _), (steps1, pcap1, snap1, fast_lab) = seen
    assert steps0 == steps1
    assert pcap0 == pcap1, "the fast path changed the captured frames"
    diff = first_difference(snap0, snap1)
    assert diff is None, diff
    if path.stem in NO_PROGRAMS:
        assert fast_lab.flows.hits == 0 and fast_lab.flows.rejected, NO_PROGRAMS[path.stem]
    else:
        assert fast_lab.flows.hits > 0, "no frame of this scenario ran a compiled program"
