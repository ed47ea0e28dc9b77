"""`emu bench`: selection, the JSON report, errors of a workload and of the command line."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from emu.bench import runner
from emu.bench.registry import WORKLOADS, Row
from emu.cli import main

OURS = ["lpm.10k", "lpm.500k", "lpm.hot", "fdb.4k", "fdb.64k", "ct.100k", "ct.1m", "scapy.edge", "pcap.write"]


def test_quick_fdb_as_json() -> None:
    res = CliRunner().invoke(main, ["bench", "--quick", "--only", "fdb.4k", "--json", "-"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["quick"] is True and doc["errors"] == 0
    assert set(doc["machine"]) >= {"python", "platform", "cpu_count", "extension_loaded"}
    assert [w["name"] for w in doc["workloads"]] == ["fdb.4k"]
    rows = doc["rows"]
    assert [r["workload"] for r in rows] == ["fdb.4k learn", "fdb.4k lookup scalar", "fdb.4k lookup batch-16k"]
    for r in rows:
        assert r["ours"] > 0 and r["base"] > 0 and r["ratio"] > 0, r
        assert r["baseline"].startswith("dict") and r["unit"].endswith("/s")
    assert "fdb.4k learn" in res.stderr  # the table goes to stderr when the JSON takes stdout


def test_list() -> None:
    res = CliRunner().invoke(main, ["bench", "--list"])
    assert res.exit_code == 0, res.output
    listed = [line.split()[0] for line in res.stdout.splitlines()]
    assert set(OURS) <= set(listed)
    res = CliRunner().invoke(main, ["bench", "--list", "--only", "lpm.*"])
    assert [line.split()[0] for line in res.stdout.splitlines()] == ["lpm.10k", "lpm.500k", "lpm.hot"]


def test_unknown_pattern_is_a_usage_error() -> None:
    res = CliRunner().invoke(main, ["bench", "--quick", "--only", "fdb.4k", "--only", "nope.*"])
    assert res.exit_code == 2
    assert "'nope.*' matches no workload" in res.stderr
    assert "fdb.4k learn" not in res.output  # nothing ran


def test_json_path_that_cannot_be_written(tmp_path) -> None:  # noqa: ANN001
    res = CliRunner().invoke(main, ["bench", "--only", "fdb.4k", "--json", str(tmp_path)])
    assert res.exit_code == 2 and "is a directory" in res.stderr


def _boom(quick: bool) -> Iterator[Row]:
    yield Row("test.boom first", 2.0, "nothing", 1.0)
    raise RuntimeError("the workload broke")


def _fine(quick: bool) -> Iterator[Row]:
    yield Row("test.fine", 3.0e6, "nothing", 1.5e6, note="ran after the broken one")


def test_a_failing_workload_is_an_error_row_and_exit_1(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # noqa: ANN001
    runner.load_workloads()
    monkeypatch.setitem(WORKLOADS, "test.boom", _boom)
    monkeypatch.setitem(WORKLOADS, "test.fine", _fine)
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(main, ["bench", "--quick", "--only", "test.*", "--json", str(out)])
    assert res.exit_code == 1, res.output
    assert "RuntimeError: the workload broke" in res.stdout and "3.00M/s" in res.stdout and "2.00x" in res.stdout
    doc = json.loads(out.read_text())
    assert doc["errors"] == 1
    assert [(r["workload"], r["error"]) for r in doc["rows"]] == [
        ("test.boom first", ""), ("test.boom", "RuntimeError: the workload broke"), ("test.fine", "")]
    assert "the workload broke" in doc["workloads"][0]["traceback"]


def test_formats() -> None:
    assert runner.format_value(1_234_567, "ops/s") == "1.23M/s"
    assert runner.format_value(456_000, "frames/s") == "456k/s"
    assert runner.format_value(12_345, "ops/s") == "12.3k/s"
    assert runner.format_value(950, "ops/s") == "950/s"
    assert runner.format_value(15.8e6, "bytes") == "15.1 MiB"
    assert runner.format_value(2048, "bytes") == "2.0 KiB"
    assert runner.format_value(0.296, "s") == "296 ms"
    assert runner.format_value(1.19, "s") == "1.19 s"
    assert runner.format_value(None, "s") == "—"
    assert runner.format_ratio(14.23) == "14.2x"
    assert runner.format_ratio(0.651) == "0.65x"
    assert runner.format_ratio(5618.4) == "5618x"
    assert runner.format_ratio(None) == "—"


def test_ratio_direction() -> None:
    assert Row("r", 10.0, "b", 5.0).ratio == 2.0
    assert Row("t", 0.5, "b", 1.0, unit="s", higher_is_better=False).ratio == 2.0
    assert Row("m", 1.0, "b", None).ratio is None
