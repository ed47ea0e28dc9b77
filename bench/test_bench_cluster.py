"""Benchmark: building a 100-node, 3,000-pod Flannel (VXLAN) cluster, then a cross-node ping.

Built once (pedantic, rounds=1): the nodes with their kubelets and flanneld (each node learns the 99
others' leases), then 3,000 pods through the scheduler, the kubelets and CNI (flannel -> bridge ->
host-local). extra_info reports the node and pod counts, the phases' seconds and tracemalloc's peak
(tracemalloc slows the build about four times over, so with benchmarks disabled, as in the default
test run, this skips: tests/test_k8s.py builds the same cluster untraced every run). There are no
timed assertions.

Run as a script to print the figures:  PYTHONPATH=. python bench/test_bench_cluster.py [NODES PODS]
"""

from __future__ import annotations

import sys
import time
import tracemalloc

import pytest

NODES, PODS = 100, 3000


def build(nodes: int = NODES, pods: int = PODS, *, trace_memory: bool = True) -> dict:
    from emu.k8s.cluster import Cluster
    from emu.net import Lab

    if trace_memory:
        tracemalloc.start()
    try:
        t0 = time.perf_counter()
        lab = Lab(seed=100)
        cluster = Cluster(lab, nodes=nodes, underlay="192.168.0.0/16")
        t1 = time.perf_counter()
        for i in range(pods):
            cluster.create_pod(f"p{i:04d}")
        cluster.settle()
        t2 = time.perf_counter()
        peak = tracemalloc.get_traced_memory()[1] if trace_memory else 0
    finally:
        if trace_memory:
            tracemalloc.stop()
    running = [p for p in cluster.pods() if p.status.pod_ip]
    a, b = running[0], running[-1]
    res = cluster.pod_ns(a.metadata.name).run(f"ping -c 1 {b.status.pod_ip}")
    return {"nodes": len(cluster.nodes), "pods": len(running), "nodes_seconds": round(t1 - t0, 2),
            "pods_seconds": round(t2 - t1, 2), "build_seconds": round(t2 - t0, 2),
            "tracemalloc_peak_mib": round(peak / 2**20, 1), "ping_rc": res.rc,
            "ping_ttl62": "ttl=62" in res.stdout}


def test_build_100_nodes_3000_pods(benchmark) -> None:
    if benchmark.disabled:
        pytest.skip("benchmarks are disabled (--benchmark-disable): the traced build takes over a minute; "
                    "tests/test_k8s.py builds the same cluster untraced in every run")
    info = benchmark.pedantic(build, rounds=1, iterations=1)
    benchmark.extra_info.update(info)
    assert info["nodes"] == NODES and info["pods"] == PODS
    assert info["ping_rc"] == 0 and info["ping_ttl62"]


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    print(build(*args))
