"""Shared fixtures: every lab test runs on the compiled tables and on the pure-Python twin."""

from __future__ import annotations

import os

import pytest

from emu import fastpath
from emu.net import Lab

IMPLS = ["cython", "python"]


@pytest.fixture(params=IMPLS)
def impl(request: pytest.FixtureRequest) -> str:
    if request.param == "cython" and not fastpath.EXTENSION_LOADED:
        if os.environ.get("EMU_NO_EXTENSIONS") == "1":
            pytest.skip("EMU_NO_EXTENSIONS=1: the compiled tables are off on purpose")
        pytest.fail("the compiled extension emu._fastpath did not load")
    return request.param


@pytest.fixture
def make_lab(impl: str):  # noqa: ANN201
    """A factory of labs on the parametrized tables."""

    def make(seed: int = 1, **kw: object) -> Lab:
        return Lab(seed=seed, pure_python=impl == "python", **kw)  # type: ignore[arg-type]

    return make
