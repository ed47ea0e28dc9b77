"""Benchmarks at the edges of the emulator: making frames and writing them to pcapng.

* UDP frames: one template stamped with a fresh IP ID per copy (the tables' stamp_frames) vs building
  each frame with Scapy (Ether()/IP()/UDP()/payload, bytes()); the same 1,000 frames, the same
  bytes, for a 60-byte and a 1,500-byte frame.
* pcapng output: emu.pcap.write_pcapng vs the Scapy RawPcapNgWriter it replaced, writing the same
  5,000 capture records (8 interfaces, both directions, comments, a raw-IP tunnel) into
  byte-identical files.

Group names pair the two side by side; each "emu" benchmark also times its baseline and puts
`speedup_vs_scapy` in benchmark.extra_info.  There are no timed assertions.  With
--benchmark-disable (the normal test run) each body runs once and no ratios are computed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from benchutil import record_ratio

from emu.bench.tables import sample_records, scapy_frames, scapy_write_pcapng, templated_frames
from emu.pcap import write_pcapng

FRAMES = 1000
RECORDS = 5000
EPOCH = 1_705_147_200.0
PAYLOADS = [pytest.param(18, id="60B"), pytest.param(1458, id="1500B")]
LIBS = ["emu", "scapy"]


@pytest.mark.parametrize("payload_len", [18, 1458, 0, 1])
def test_stamped_frames_equal_scapy_frames(payload_len: int) -> None:
    """Not a timing: the templated frames are Scapy's bytes, across the IP ID wrap-around."""
    payload = bytes(i & 0xFF for i in range(payload_len))
    want = scapy_frames(40, 65520, payload)
    got = templated_frames(40, 65520, payload)
    size = len(want[0])
    assert len(got) == 40 * size
    assert [bytes(got[i * size:(i + 1) * size]) for i in range(40)] == want


@pytest.mark.parametrize("payload_len", PAYLOADS)
@pytest.mark.parametrize("lib", LIBS)
def test_udp_frames(benchmark, lib: str, payload_len: int) -> None:  # noqa: ANN001
    """1,000 UDP frames: stamped from one template vs built one by one with Scapy."""
    payload = bytes(payload_len)

    def baseline() -> object:
        return scapy_frames(FRAMES, 0, payload)

    def ours() -> object:
        return templated_frames(FRAMES, 0, payload)

    benchmark.group = f"edge-udp-{14 + 28 + payload_len}B-x{FRAMES}"
    benchmark.extra_info.update(lib=lib, frames=FRAMES)
    if lib == "emu":
        out = benchmark(ours)
        record_ratio(benchmark, baseline, "scapy")
    else:
        out = benchmark.pedantic(baseline, rounds=3, iterations=1, warmup_rounds=0)
    assert len(out) == (FRAMES if lib == "scapy" else FRAMES * (14 + 28 + payload_len))


@pytest.fixture(scope="module")
def records() -> list:
    return sample_records(RECORDS)


def test_pcapng_files_equal(records: list, tmp_path: Path) -> None:
    """Not a timing: both writers produce the same file."""
    ours, theirs = tmp_path / "ours.pcapng", tmp_path / "scapy.pcapng"
    assert write_pcapng(str(ours), records, EPOCH) == scapy_write_pcapng(str(theirs), records, EPOCH) == RECORDS
    assert ours.read_bytes() == theirs.read_bytes()


@pytest.mark.parametrize("lib", LIBS)
def test_pcapng_write(benchmark, records: list, tmp_path: Path, lib: str) -> None:  # noqa: ANN001
    """Writing 5,000 records to a pcapng file (atomic rename included) with each writer."""
    path = str(tmp_path / f"{lib}.pcapng")

    def baseline() -> int:
        return scapy_write_pcapng(path, records, EPOCH)

    def ours() -> int:
        return write_pcapng(path, records, EPOCH)

    benchmark.group = f"pcapng-write-x{RECORDS}"
    benchmark.extra_info.update(lib=lib, records=RECORDS, bytes=0)
    n = benchmark(ours if lib == "emu" else baseline)
    assert n == RECORDS
    benchmark.extra_info["bytes"] = Path(path).stat().st_size
    if lib == "emu":
        record_ratio(benchmark, baseline, "scapy")
