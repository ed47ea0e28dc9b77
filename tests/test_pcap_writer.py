"""emu.pcap's struct-based pcapng writer writes exactly the bytes Scapy's RawPcapNgWriter wrote."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emu.bench.tables import sample_records, scapy_write_pcapng
from emu.pcap import LINKTYPE_ETHERNET, LINKTYPE_RAW, Record, write_pcapng

EPOCH = 1_705_147_200.0


def both(tmp: Path, records: list[Record], epoch: float = EPOCH) -> tuple[bytes, bytes]:
    ours, theirs = tmp / "ours.pcapng", tmp / "scapy.pcapng"
    n = write_pcapng(str(ours), records, epoch)
    m = scapy_write_pcapng(str(theirs), records, epoch)
    assert n == m == len(records)
    return ours.read_bytes(), theirs.read_bytes()


def frame(n: int, seed: int = 0) -> bytes:
    return bytes((i * 7 + seed) & 0xFF for i in range(n))


def test_varied_records(tmp_path: Path) -> None:
    """Several interfaces, both link types, comments (none, one, several, non-ASCII), both directions,
    frame and comment lengths of every remainder mod 4, and timestamps from zero to sub-microsecond."""
    names = ["pc1/eth0", "r1/eth1", "node1/tunl0", "sw1/br0", "a/b", "x" * 13, "ns/é"]
    records = []
    for i in range(120):
        name = names[i % len(names)]
        raw = name.endswith("tunl0")
        comments = [[], ["fdb learned"], ["route 10.0.2.0/24 dev eth1", "neigh 10.0.2.10 lladdr 02:00:00:00:00:03"],
                    ["dropped: NO_ROUTE ✘"]][i % 4]
        t = [0.0, 1e-7, 0.5, 1.000_000_4, 3 * i + 0.123_456_7][i % 5]
        records.append(Record(t, name, frame(20 + i % 9 + (i % 3) * 40, i), ["in", "out"][i % 2], list(comments),
                              LINKTYPE_RAW if raw else LINKTYPE_ETHERNET, i))
    ours, theirs = both(tmp_path, records)
    assert ours == theirs
    assert ours[:4] == b"\x0a\x0d\x0d\x0a" and len(ours) % 4 == 0


def test_epoch_zero_and_tiny_times(tmp_path: Path) -> None:
    """Time 0 is written as 0 and times are kept to the microsecond exactly as Scapy truncates them."""
    records = [Record(t, "a/eth0", frame(60), "out", []) for t in (0.0, 1e-6, 2.5e-6, 0.1, 0.3, 1 / 3, 4.35)]
    ours, theirs = both(tmp_path, records, epoch=0.0)
    assert ours == theirs


def test_no_records(tmp_path: Path) -> None:
    ours, theirs = both(tmp_path, [])
    assert ours == theirs and len(ours) == 28  # the section header block alone


def test_interface_keeps_the_link_type_of_its_first_record(tmp_path: Path) -> None:
    records = [Record(0.1, "t/tun0", frame(40), "in", [], LINKTYPE_RAW),
               Record(0.2, "t/tun0", frame(54), "out", ["x"], LINKTYPE_ETHERNET),
               Record(0.3, "t/eth0", frame(61), "in", ["y"], LINKTYPE_ETHERNET)]
    ours, theirs = both(tmp_path, records)
    assert ours == theirs


def test_sample_records(tmp_path: Path) -> None:
    """The records `emu bench pcap.write` times."""
    ours, theirs = both(tmp_path, sample_records(500))
    assert ours == theirs


def test_atomic_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    write_pcapng(str(tmp_path / "c.pcapng"), [Record(0.0, "a/eth0", frame(60), "in", [])], EPOCH)
    assert os.listdir(tmp_path) == ["c.pcapng"]
    with pytest.raises(KeyError):  # an unknown direction: nothing is left behind
        write_pcapng(str(tmp_path / "d.pcapng"), [Record(0.0, "a/eth0", frame(60), "sideways", [])], EPOCH)
    assert os.listdir(tmp_path) == ["c.pcapng"]


def test_scapy_reads_it_back(tmp_path: Path) -> None:
    from scapy.utils import PcapNgReader

    records = sample_records(50)
    path = tmp_path / "r.pcapng"
    write_pcapng(str(path), records, EPOCH)
    with PcapNgReader(str(path)) as reader:
        pkts = list(reader)
    assert [bytes(p) for p in pkts] == [r.frame for r in records]
    assert [p.direction for p in pkts] == [1 if r.direction == "in" else 2 for r in records]
    assert [p.comments[0].decode() for p in pkts] == ["; ".join(r.comments) or f"{r.direction} {r.ifname}"
                                                      for r in records]


_record = st.builds(
    Record,
    time=st.floats(min_value=0, max_value=1e6, allow_nan=False),
    ifname=st.sampled_from(["a/eth0", "b/veth1", "node/flannel.1", "n/tunl0", "é/ü"]),
    frame=st.binary(max_size=90),
    direction=st.sampled_from(["in", "out"]),
    comments=st.lists(st.text(max_size=12), max_size=3),
    linktype=st.sampled_from([LINKTYPE_ETHERNET, LINKTYPE_RAW]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(_record, max_size=12), epoch=st.sampled_from([0.0, EPOCH]))
def test_any_records(tmp_path: Path, records: list[Record], epoch: float) -> None:
    ours, theirs = both(tmp_path, records, epoch)
    assert ours == theirs
