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
