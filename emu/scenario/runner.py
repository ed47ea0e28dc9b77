"""Running a scenario: build the lab from its topology, run the steps on the virtual clock, check expectations."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from emu import fastpath
from emu.apps.ping import ping
from emu.apps.sockets import tcp_request, tcp_serve, udp_echo, udp_request
from emu.apps.traceroute import traceroute
from emu.net import Lab
from emu.net.addr import ip2int
from emu.net.errors import NetError
from emu.net.link import Link
from emu.scenario.loader import Scenario, ScenarioError, Step
from emu.scenario.replay import read_frames


@dataclass
class StepResult:
    """What one step did and whether its expectations held (`ok` is True when it had none)."""

    step: Step
    ok: bool
    summary: str
    output: str = ""
    failures: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    time: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        s = self.step
        return {"index": s.index, "name": s.name, "kind": s.kind, "where": f"{s.source.file}: {s.where}",
                "ok": self.ok, "summary": self.summary, "failures": self.failures, "output": self.output,
                "time": round(self.time, 6)}


def _lines_match(text: str, expected: list[str]) -> str | None:
    """Each expected line (exact, or /regex/) must appear, in order; None when they all do."""
    lines = [ln.rstrip() for ln in text.splitlines()]
    pos = 0
    for want in expected:
        regex = want.startswith("/") and want.endswith("/") and len(want) > 1
        for i in range(pos, len(lines)):
            if (re.search(want[1:-1], lines[i]) if regex else lines[i] == want.rstrip()):
                pos = i + 1
                break
        else:
            return f"expected a line {'matching ' if regex else ''}{want!r} (in order), not found"
    return None


FIELD_MAP = {"ip.df": ("IP", "flags.DF"), "tcp.flags": ("TCP", "flags")}


def _field(pkt: Any, name: str) -> Any:
    from emu import frames

    layer_name, attr = name.split(".")
    layer, attr = FIELD_MAP.get(name, ({"eth": "Ether", "arp": "ARP", "ip": "IP", "icmp": "ICMP", "udp": "UDP",
                                        "tcp": "TCP", "vxlan": "VXLAN"}[layer_name], attr))
    cls = getattr(frames, layer)
    if not pkt.haslayer(cls):
        return None
    value = pkt[cls]
    for part in attr.split("."):
        if not hasattr(value, part):
            return None
        value = getattr(value, part)
    return str(value) if layer == "TCP" and attr == "flags" else value


def _equal(value: Any, want: Any) -> bool:
    if isinstance(want, bool):
        return bool(value) == want
    if isinstance(want, int):
        try:
            return int(value) == want
        except (TypeError, ValueError):
            return False
    return str(value) == str(want)


class Run:
    """One execution of a scenario on a fresh lab."""

    def __init__(self, sc: Scenario, *, seed: int | None = None, pure_python: bool | None = None,
                 capture_all: bool = False, fastpath: bool = True) -> None:
        self.sc = sc
        self.fastpath = fastpath
        self.seed = sc.seed if seed is None else seed
        self.pure_python = pure_python
        self.capture_all = capture_all
        self.lab: Lab | None = None
        self.cluster: Any = None  # emu.k8s.cluster.Cluster when the scenario has one
        self.results: list[StepResult] = []
        self.last_pids: list[int] = []

    # --- building ------------------------------------------------------------------
    def build(self) -> Lab:
        sc = self.sc
        lab = Lab(seed=self.seed, pure_python=self.pure_python, fastpath=self.fastpath)
        self.lab = lab
        if sc.cluster is not None:
            self._build_cluster(lab, sc.cluster)
        for name in sc.namespaces:
            if name not in lab.namespaces:
                lab.netns(name)
        for i, nic in enumerate(sc.nics):
            try:
                lab[nic["ns"]].link_add(nic["dev"], "nic", segment=nic["segment"])
            except NetError as exc:
                raise sc.source.error(("topology", "nics", i), exc.message) from None
        if sc.loopback == "up":
            for name in sc.namespaces:
                if name in lab.namespaces:
                    lab[name].link_set("lo", up=True)
        for path, ns, cmd in sc.setup:
            res = lab[ns].run(cmd)
            if res.rc:
                msg = (res.stderr or res.stdout).strip().splitlines()
                raise sc.source.error(path, f"{ns}: `{cmd}` failed: {msg[0] if msg else f'exit {res.rc}'}")
        points = sc.capture_points
        if points == "all" or self.capture_all:
            lab.capture_all()
        else:
            for i, p in enumerate(points):
                ns, dev = p.split("/")
                if dev not in lab[ns].links:
                    raise sc.source.error(("capture", "points", i), f"no interface {dev!r} in namespace {ns!r}")
                lab.capture(ns, dev)
        self.lab = lab
        return lab

    def _build_cluster(self, lab: Lab, c: dict[str, Any]) -> None:
        """A Kubernetes cluster with Flannel, then its pods (each waited for until it has an IP)."""
        from emu.k8s.cluster import Cluster, ClusterError
        from emu.k8s.flannel import FlannelError

        keys = ("network", "underlay", "subnets", "backend", "subnet_mgr", "ip_masq", "net_conf")
        try:
            self.cluster = Cluster(lab, c.get("nodes", 2), **{k: c[k] for k in keys if k in c})
        except (ClusterError, FlannelError, ValueError) as exc:
            raise self.sc.source.error(("cluster",), str(exc)) from None
        for i, pod in enumerate(c.get("pods", [])):
            try:
                self.cluster.create_pod(pod["name"], node=pod.get("node"), ports=pod.get("ports"), wait=True)
            except ClusterError as exc:
                raise self.sc.source.error(("cluster", "pods", i), str(exc)) from None

    @property
    def tables(self) -> str:
        assert self.lab is not None
        return fastpath.name(self.lab.tables)

    # --- running ---------------------------------------------------------------------
    def run(self, *, until: str | None = None, on_step: Callable[[StepResult], None] | None = None,
            ) -> list[StepResult]:
        """Runs the steps in order (up to and including step `until`, a name or an index)."""
        if self.lab is None:
            self.build()
        stop = self.find_step(until) if until is not None and until != "0" else None
        for st in self.sc.steps:
            result = self.step(st)
            self.results.append(result)
            if on_step:
                on_step(result)
            if stop is not None and st.index == stop:
                break
        return self.results

    def find_step(self, ref: str) -> int:
        for st in self.sc.steps:
            if st.name == ref or str(st.index) == ref or str(st.index + 1) == ref and not st.name:
                return st.index
        names = ", ".join(s.name or str(s.index) for s in self.sc.steps)
        raise ScenarioError(self.sc.file, f"no step {ref!r} (steps: {names})")

    def _link(self, st: Step, point: str, *sub: Any) -> Link:
        assert self.lab is not None
        ns, _, dev = point.partition("/")
        link = self.lab[ns].links.get(dev)
        if link is None:
            raise st.error(f"no interface {dev!r} in namespace {ns!r}", *sub)
        return link

    def step(self, st: Step) -> StepResult:
        lab = self.lab
        assert lab is not None
        handler = getattr(self, f"_do_{st.kind}")
        result: StepResult = handler(st, st.args)
        result.time = lab.clock.now
        result.ok = not result.failures
        return result

    # --- step kinds -------------------------------------------------------------------
    def _do_exec(self, st: Step, a: dict[str, Any]) -> StepResult:
        res = self.lab[a["ns"]].run(a["cmd"])  # type: ignore[index]
        r = StepResult(st, True, f"{a['ns']}$ {a['cmd']} (exit {res.rc})", res.stdout + res.stderr)
        exp = a.get("expect", {})
        if "rc" in exp and res.rc != exp["rc"]:
            r.failures.append(f"expected exit code {exp['rc']}, got {res.rc}")
        for key, text in (("stdout", res.stdout), ("stderr", res.stderr)):
            if key in exp:
                miss = _lines_match(text, exp[key])
                if miss:
                    r.failures.append(f"{key}: {miss}")
        out = res.stdout + res.stderr
        r.failures += [f"expected output to contain {s!r}" for s in exp.get("contains", []) if s not in out]
        r.failures += [f"expected output not to contain {s!r}" for s in exp.get("not_contains", []) if s in out]
        return r

    def _do_ping(self, st: Step, a: dict[str, Any]) -> StepResult:
        ns = self.lab[a["from"]]  # type: ignore[index]
        try:
            rc, res, summary = ping(ns, a["to"], count=a.get("count", 1), interval=a.get("interval", 1.0),
                                    size=a.get("size", 56), ttl=a.get("ttl"))
        except NetError as exc:
            r = StepResult(st, True, f"{a['from']} ping {a['to']}: connect: {exc.message}", "")
            if "error" not in a.get("expect", {}) or a["expect"]["error"] not in exc.message:
                r.failures.append(f"ping could not send: {exc.message}") if a.get("expect") else None
            return r
        self.last_pids = res.pids
        ttls = sorted({int(m) for m in re.findall(r" ttl=(\d+) ", " ".join(res.lines) + " ")})
        text = "\n".join(res.lines) + summary
        r = StepResult(st, True, f"{a['from']} ping {a['to']}: {res.received}/{res.sent} received"
                       + (f", ttl {','.join(map(str, ttls))}" if ttls else "")
                       + (f", {res.errors} errors" if res.errors else ""), text, pids=list(res.pids))
        exp = a.get("expect", {})
        if "received" in exp and res.received != exp["received"]:
            r.failures.append(f"expected {exp['received']} replies, got {res.received}")
        if "ttl" in exp and ttls != [exp["ttl"]]:
            r.failures.append(f"expected replies with ttl {exp['ttl']}, got {ttls or 'none'}")
        if "error" in exp and not any(exp["error"] in ln for ln in res.lines):
            r.failures.append(f"expected an error {exp['error']!r}, got {res.lines or 'no error'}")
        self._outcome(r, exp)
        return r

    def _do_traceroute(self, st: Step, a: dict[str, Any]) -> StepResult:
        try:
            lines = traceroute(self.lab[a["from"]], ip2int(a["to"]), max_hops=a.get("max_hops", 30))  # type: ignore[index]
        except NetError as exc:
            r = StepResult(st, True, f"{a['from']} traceroute {a['to']}: connect: {exc.message}")
            if "hops" in a.get("expect", {}):
                r.failures.append(f"expected hops {a['expect']['hops']}, traceroute could not send: {exc.message}")
            return r
        hops = [ln.split()[1] if len(ln.split()) > 1 and ln.split()[1] != "*" else "*" for ln in lines]
        r = StepResult(st, True, f"{a['from']} traceroute {a['to']}: {' '.join(hops)}", "\n".join(lines))
        exp = a.get("expect", {})
        if "hops" in exp and hops != exp["hops"]:
            r.failures.append(f"expected hops {exp['hops']}, got {hops}")
        return r

    def _do_listen(self, st: Step, a: dict[str, Any]) -> StepResult:
        ns = self.lab[a["ns"]]  # type: ignore[index]
        reply = a.get("reply")
        try:
            if a["proto"] == "udp":
                udp_echo(ns, a["port"], (lambda _b: reply.encode()) if reply is not None else (lambda b: b))
            else:
                tcp_serve(ns, a["port"], (lambda _b: reply.encode()) if reply is not None else (lambda b: b))
        except NetError as exc:
            raise st.error(exc.message, "port") from None
        return StepResult(st, True, f"{a['ns']} listens on {a['proto']} port {a['port']}")

    def _do_udp(self, st: Step, a: dict[str, Any]) -> StepResult:
        ns = self.lab[a["from"]]  # type: ignore[index]
        pid_before = self.lab._pid  # type: ignore[union-attr]
        try:
            got = udp_request(ns, a["to"], a["port"], a.get("data", "ping").encode(), timeout=a.get("timeout", 2.0),
                              sport=a.get("sport"))
        except NetError as exc:
            r = StepResult(st, True, f"{a['from']} udp {a['to']}:{a['port']}: sendto: {exc.message}")
            if "reply" in a.get("expect", {}) and a["expect"]["reply"] is not None:
                r.failures.append(f"expected reply {a['expect']['reply']!r}, could not send: {exc.message}")
            self.last_pids = []
            return r
        self.last_pids = [pid_before + 1]
        text = got.decode(errors="replace") if got is not None else None
        r = StepResult(st, True, f"{a['from']} udp {a['to']}:{a['port']}: "
                       + (f"reply {text!r}" if text is not None else "no reply"), text or "")
        exp = a.get("expect", {})
        if "reply" in exp and text != exp["reply"]:
            r.failures.append(f"expected reply {exp['reply']!r}, got {text!r}")
        self._outcome(r, exp)
        return r

    def _do_tcp(self, st: Step, a: dict[str, Any]) -> StepResult:
        ns = self.lab[a["from"]]  # type: ignore[index]
        try:
            data, err = tcp_request(ns, a["to"], a["port"], a.get("data", "GET /").encode(),
                                    timeout=a.get("timeout", 5.0))
        except NetError as exc:
            data, err = b"", exc.message
        text = data.decode(errors="replace")
        r = StepResult(st, True, f"{a['from']} tcp {a['to']}:{a['port']}: "
                       + (f"error {err}" if err else f"reply {text!r}"), text)
        exp = a.get("expect", {})
        if "reply" in exp and text != exp["reply"]:
            r.failures.append(f"expected reply {exp['reply']!r}, got {text!r}")
        if "error" in exp and err != exp["error"]:
            r.failures.append(f"expected error {exp['error']!r}, got {err!r}")
        return r

    def _do_wait(self, st: Step, a: float) -> StepResult:
        self.lab.run(float(a))  # type: ignore[union-attr]
        return StepResult(st, True, f"wait {a} s")

    def _do_link(self, st: Step, a: dict[str, Any]) -> StepResult:
        link = self._link(st, f"{a['ns']}/{a['dev']}", "dev")
        self.lab[a["ns"]].link_set(link.ifname, up=a["state"] == "up")  # type: ignore[index]
        return StepResult(st, True, f"{a['ns']}: link {a['dev']} {a['state']}")

    def _do_replay(self, st: Step, a: dict[str, Any]) -> StepResult:
        lab = self.lab
        assert lab is not None
        link = self._link(st, a["into"], "into")
        try:
            frames = read_frames(a["file"])
        except ValueError as exc:
            raise st.error(str(exc), "file") from None
        sel = a.get("select", {})
        frames = [f for f in frames if (not sel.get("interface") or f.interface == sel["interface"])
                  and (not sel.get("direction") or f.direction == sel["direction"])]
        direction = a.get("direction", "in")
        start = lab.clock.now
        pids = []
        for f in frames:
            pid = lab.new_pid()
            pids.append(pid)
            send = (lambda f=f, pid=pid: link.rx(f.data, pid)) if direction == "in" else (
                lambda f=f, pid=pid: link.xmit(f.data, pid))
            if a.get("timing", "keep") == "keep":
                lab.clock.call_at(start + f.time, send)
            else:
                send()
        end = start + (frames[-1].time if frames and a.get("timing", "keep") == "keep" else 0.0)
        lab.clock.run_until(end)
        lab.run(0.5)  # let the last frames and their answers cross the lab
        self.last_pids = pids
        return StepResult(st, True, f"replayed {len(frames)} frames {direction} {a['into']}", pids=pids)

    def _need_cluster(self, st: Step) -> Any:
        if self.cluster is None:
            raise st.error("this step needs a `cluster:` section")
        return self.cluster

    def _do_kubectl(self, st: Step, a: dict[str, Any]) -> StepResult:
        node = next(iter(self._need_cluster(st).nodes))  # kubectl runs the same on every node
        return self._do_exec(st, {"ns": node, "cmd": f"kubectl {a['cmd']}", "expect": a.get("expect", {})})

    def _do_pod(self, st: Step, a: dict[str, Any]) -> StepResult:
        from emu.k8s.cluster import ClusterError

        cluster = self._need_cluster(st)
        try:
            if "create" in a:
                p = a["create"]
                pod = cluster.create_pod(p["name"], node=p.get("node"), ports=p.get("ports"), wait=True)
                return StepResult(st, True, f"pod {p['name']} on {pod.spec.node_name}: {pod.status.pod_ip}")
            cluster.delete_pod(a["delete"])
            return StepResult(st, True, f"pod {a['delete']} deleted")
        except ClusterError as exc:
            raise st.error(str(exc)) from None

    def _do_node(self, st: Step, a: dict[str, Any]) -> StepResult:
        from emu.k8s.cluster import ClusterError

        cluster = self._need_cluster(st)
        try:
            if "join" in a:
                cluster.add_node(a["join"])
                return StepResult(st, True, f"node {a['join']} joined")
            cluster.remove_node(a["leave"])
            return StepResult(st, True, f"node {a['leave']} left")
        except ClusterError as exc:
            raise st.error(str(exc)) from None

    def _do_cni(self, st: Step, a: dict[str, Any]) -> StepResult:
        """One CNI call by hand (what a container runtime does), its result JSON as the output."""
        import json

        from emu.cni import CniError, Runtime

        lab = self.lab
        assert lab is not None
        rt = Runtime(lab, lab[a["node"]])
        sandbox = lab.netns(a["netns"])
        call = {"ADD": rt.add, "DEL": rt.delete, "CHECK": rt.check}[a["command"]]
        try:
            res = call(a["config"], a["container"], sandbox, ifname=a.get("ifname", "eth0"))
            rc, text = 0, json.dumps(res, indent=4) + "\n" if res else ""
        except CniError as exc:
            rc, text = 1, json.dumps(exc.to_json(), indent=4) + "\n"
        r = StepResult(st, True, f"CNI {a['command']} {a['container']} in {a['netns']} on {a['node']} (exit {rc})",
                       text)
        exp = a.get("expect", {})
        if "rc" in exp and rc != exp["rc"]:
            r.failures.append(f"expected exit code {exp['rc']}, got {rc}")
        if "stdout" in exp:
            miss = _lines_match(text, exp["stdout"])
            if miss:
                r.failures.append(f"stdout: {miss}")
        r.failures += [f"expected output to contain {s!r}" for s in exp.get("contains", []) if s not in text]
        r.failures += [f"expected output not to contain {s!r}" for s in exp.get("not_contains", []) if s in text]
        return r

    def _do_expect(self, st: Step, a: dict[str, Any]) -> StepResult:
        lab = self.lab
        assert lab is not None
        r = StepResult(st, True, "expectations")
        what = []
        for reason, n in a.get("drops", {}).items():
            got = lab.trace.drops.get(reason, 0)
            what.append(f"{reason}={got}")
            if got != n:
                r.failures.append(f"expected {n} {reason} drops, got {got}")
        if "counters" in a:
            c = a["counters"]
            link = self._link(st, c["at"], "counters", "at")
            for key in ("rx_packets", "tx_packets", "rx_dropped", "tx_dropped"):
                if key in c:
                    got = getattr(link.counters, key)
                    what.append(f"{c['at']} {key}={got}")
                    if got != c[key]:
                        r.failures.append(f"{c['at']}: expected {key} {c[key]}, got {got}")
        if "table" in a:
            t = a["table"]
            res = lab[t["ns"]].run(t["cmd"])
            what.append(f"{t['ns']}$ {t['cmd']}")
            r.output += res.stdout + res.stderr
            r.failures += [f"{t['ns']}$ {t['cmd']}: expected {s!r}" for s in t.get("contains", [])
                           if s not in res.stdout]
            r.failures += [f"{t['ns']}$ {t['cmd']}: did not expect {s!r}" for s in t.get("not_contains", [])
                           if s in res.stdout]
        if "frame" in a:
            self._expect_frame(st, a["frame"], r, what)
        self._outcome(r, a)
        r.summary = "expect " + ("; ".join(what) if what else "outcome")
        return r

    def _expect_frame(self, st: Step, f: dict[str, Any], r: StepResult, what: list[str]) -> None:
        from emu.frames import decode

        lab = self.lab
        assert lab is not None
        link = self._link(st, f["at"], "frame", "at")
        if (link.ns.name, link.ifname) not in lab.captures:
            raise st.error(f"{f['at']} is not a capture point (add it under capture.points)", "frame", "at")
        recs = [x for x in lab.captures[(link.ns.name, link.ifname)].records
                if "direction" not in f or x.direction == f["direction"]]
        hits = 0
        for rec in recs:
            pkt = decode(rec.frame, l3=link.l3)
            if all(_equal(_field(pkt, k), v) for k, v in f["match"].items()):
                hits += 1
        want = f.get("count")
        what.append(f"{hits} frames at {f['at']} match {f['match']}")
        if (want is None and hits == 0) or (want is not None and hits != want):
            r.failures.append(f"{f['at']}: expected {'a' if want is None else want} frame(s) matching "
                              f"{f['match']}, found {hits} among {len(recs)}")

    def _outcome(self, r: StepResult, exp: dict[str, Any]) -> None:
        want = exp.get("outcome")
        if want is None:
            return
        got = self.outcome(self.last_pids[0]) if self.last_pids else "no frame sent"
        expected = want if isinstance(want, str) else f"dropped {want['dropped']}"
        if got != expected:
            r.failures.append(f"expected the frame to be {expected}, it was {got}")

    def outcome(self, pid: int) -> str:
        """`delivered`, `dropped REASON`, or `lost` for one frame, from its recorded decisions."""
        assert self.lab is not None
        decisions = self.lab.decisions(pid)
        drops = [d for d in decisions if d.drop is not None]
        if drops:
            return f"dropped {drops[-1].drop.value}"  # type: ignore[union-attr]
        return "delivered" if any(d.point == "deliver" for d in decisions) else "lost"

    # --- summary -------------------------------------------------------------------------
    @property
    def passed(self) -> int:
        return sum(1 for r in self.results if r.ok)

    @property
    def failed(self) -> int:
        return len(self.results) - self.passed

    def report(self, pcap: str | None, frames: int | None) -> dict[str, Any]:
        return {"scenario": self.sc.name, "file": self.sc.file, "seed": self.seed, "tables": self.tables,
                "steps": [r.as_dict() for r in self.results], "passed": self.passed, "failed": self.failed,
                "pcap": pcap, "frames": frames, "drops": dict(sorted(self.lab.trace.drops.items()))
                if self.lab else {}}
