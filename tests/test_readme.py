"""The README's scenario example is a real, passing scenario (docs that match behaviour)."""

from __future__ import annotations

import re
from pathlib import Path

from emu.scenario.loader import load
from emu.scenario.runner import Run

ROOT = Path(__file__).resolve().parent.parent


def readme_scenario() -> str:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    return next(b for b in blocks if "name: two-hosts" in b)


def test_readme_scenario_runs_and_passes(tmp_path: Path) -> None:
    doc = readme_scenario()
    # The files it names: a capture to replay (from a first run without the replay) and an include.
    first = tmp_path / "first.yaml"
    first.write_text(doc.split("  - wait:")[0])
    run1 = Run(load(str(first)))
    run1.run()
    run1.lab.write_pcap(str(tmp_path / "old.pcapng"))
    (tmp_path / "more-steps.yaml").write_text("- exec: {ns: a, cmd: ip route, expect: {rc: 0}}\n")
    path = tmp_path / "two-hosts.yaml"
    path.write_text(doc)
    runner = Run(load(str(path)))
    runner.run()
    failures = [f"{r.step.where}: {f}" for r in runner.results for f in r.failures]
    assert not failures, failures
    assert [r.step.kind for r in runner.results] == ["ping", "exec", "listen", "udp", "tcp", "traceroute", "wait",
                                                      "replay", "expect", "link", "ping", "exec"]


def test_readme_cni_example_runs(capsys) -> None:
    text = (ROOT / "README.md").read_text()
    code = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "from emu.cni import Runtime" in b)
    exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - the README's own example
    out = capsys.readouterr().out
    assert out.startswith("10.244.1.2/24\n") and "[step 1]" in out and "[step 5]" in out


def test_readme_fast_path_example_runs(capsys) -> None:  # noqa: ANN001
    text = (ROOT / "README.md").read_text()
    code = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "from emu.bench.topo import build" in b)
    exec(compile(code, "README.md", "exec"), {})  # noqa: S102
    out = capsys.readouterr().out
    assert out.startswith("100000 {") and "'hits'" in out
