"""`iptables -L/-S` views equal the real iptables 1.8 (nf_tables) ones for the same restored rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from emu.net import Lab
from tests.linux import real_netns  # noqa: F401

DATA = Path(__file__).resolve().parent / "data"
VIEWS = ["iptables -t nat -L -n", "iptables -L -n -v", "iptables -t nat -L -n --line-numbers",
         "iptables -t nat -L -n -v", "iptables -t nat -S", "iptables -S", "iptables -t nat -L X -n"]


@pytest.mark.linux
@pytest.mark.parametrize("rules", ["iptables-variety.rules", "iptables-kube.rules"])
def test_list_views_equal_the_kernel(real_netns, rules: str) -> None:  # noqa: F811
    text = (DATA / rules).read_text()
    real = real_netns("ipt")
    rc, _, err = real.run(["iptables-restore", str(DATA / rules)])
    assert rc == 0, err
    ns = Lab(seed=1).netns("gw")
    assert ns.run("iptables-restore", stdin=text).rc == 0
    for view in VIEWS:
        e = ns.run(view)
        assert (e.rc, e.stdout, e.stderr) == real.run(view), view


@pytest.mark.linux
def test_ip_d_link_of_flannel_devices_equals_the_kernel(real_netns) -> None:  # noqa: F811
    """`ip -d link show flannel.1`, and of a veth, as the real iproute2 prints them (MACs aside)."""
    import re

    lines = ["ip link add veth-a type veth peer name veth-b", "ip link set veth-a up", "ip link set veth-b up",
             "ip addr add 10.0.0.1/24 dev veth-a",
             "ip link add flannel.1 type vxlan id 1 local 10.0.0.1 dev veth-a dstport 8472 nolearning"]
    real = real_netns("vx")
    ns = Lab(seed=1).netns("node")
    for line in lines:
        assert real.run(line)[0] == 0 and ns.run(line).rc == 0, line
    mac = re.compile(r"([0-9a-f]{2}:){5}[0-9a-f]{2}")
    for view in ("ip -d link show flannel.1", "ip -d link show veth-a"):
        k, e = real.run(view), ns.run(view)
        assert mac.sub("MAC", e.stdout) == mac.sub("MAC", k[1]) and e.rc == k[0], view
